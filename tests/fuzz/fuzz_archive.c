/*
 * fuzz_archive.c - libFuzzer target: an untrusted .ckpt, opened and read
 * through every public entry point a mount uses.
 *
 * The input is written to a file in a private directory and opened with
 * the default limits.  When it opens, every node is walked from the root
 * and checked against what the index promises (a tree, children in name
 * order, names that pass the policy, no bits that are never shown), and
 * every file is read whole in odd-sized chunks and then at a few offsets
 * taken from the input; bytes read twice must agree.  The manifest as
 * served must describe only what is served.  Any violation is an abort();
 * memory and descriptors must all be returned.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fuzz.h"
#include "internal.h"

#define FILE_NAME  "f.ckpt"
#define PATH_BYTES 8192
#define KEEP	   (1u << 20)	/* content kept per file, to compare */
#define BUDGET	   (64u << 20)	/* bytes read per input, all files */
#define NEAR	   (8ull << 20) /* random offsets fall below this */
#define MAX_DEPTH  4096

static char dir[64];
static int dirfd_ = -1;
static uint8_t *chunk_buf; /* one read, up to the largest chunk */
static uint8_t *kept;	   /* the first KEEP bytes of the current file */

static const size_t chunks[] = {1, 7, 509, 4093, 65537, 131071, 300007};
#define NCHUNK	  (sizeof(chunks) / sizeof(chunks[0]))
#define MAX_CHUNK 300007

struct run {
	struct ckpt_archive *a;
	uint32_t manifest; /* node of manifest.json */
	uint64_t rng;	   /* derived from the input */
	uint64_t budget;   /* bytes still allowed to be read */
	uint8_t *seen;	   /* per node: reached by the walk */
	uint32_t nnodes;
	char path[PATH_BYTES];
};

static void cleanup(void)
{
	if (dirfd_ >= 0) {
		unlinkat(dirfd_, FILE_NAME, 0);
		close(dirfd_);
	}
	if (dir[0])
		rmdir(dir);
	free(chunk_buf);
	free(kept);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fuzz_tempdir(dir, sizeof(dir));
	dirfd_ = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	chunk_buf = malloc(MAX_CHUNK);
	kept = malloc(KEEP);
	if (dirfd_ < 0 || !chunk_buf || !kept)
		abort();
	atexit(cleanup);
	return 0;
}

static uint64_t next_rand(struct run *r)
{
	/* splitmix64: the offsets depend only on the input. */
	uint64_t z = (r->rng += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static int lowest_free_fd(void)
{
	int fd = dup(0);

	if (fd >= 0)
		close(fd);
	return fd;
}

static void write_input(const uint8_t *data, size_t size)
{
	int fd = openat(dirfd_, FILE_NAME,
			O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	size_t done = 0;

	CHECK(fd >= 0);
	while (done < size) {
		ssize_t n = write(fd, data + done, size - done);
		CHECK(n > 0);
		done += (size_t)n;
	}
	CHECK(close(fd) == 0);
}

/* One pread that must either fail or return exactly what is left. */
static ssize_t read_at(struct ckpt_reader *rd, uint64_t fsize, uint8_t *buf,
		       size_t want, uint64_t off)
{
	struct ckpt_err err = {0};
	ssize_t n = ckpt_reader_pread(rd, buf, want, off, &err);
	uint64_t left = off < fsize ? fsize - off : 0;
	size_t expect = want < left ? want : (size_t)left;

	if (n < 0) {
		CHECK(n == -EIO || n == -ENOMEM);
		CHECK(err.code == (int)n);
		CHECK(memchr(err.msg, '\0', sizeof(err.msg)) != NULL);
		CHECK(memchr(err.path, '\0', sizeof(err.path)) != NULL);
		return n;
	}
	/* A short read is end of file to FUSE: it must never happen early,
	 * and nothing past the declared size is ever returned. */
	CHECK((size_t)n == expect);
	return n;
}

static void random_reads(struct run *r, struct ckpt_reader *rd, uint64_t fsize,
			 size_t nkept, int count)
{
	uint64_t span = (fsize < NEAR ? fsize : NEAR) + 64;

	for (int i = 0; i < count; i++) {
		uint64_t off = next_rand(r) % span;
		size_t want = 1 + (size_t)(next_rand(r) % MAX_CHUNK);
		ssize_t n = read_at(rd, fsize, chunk_buf, want, off);

		if (n <= 0)
			continue;
		/* The same bytes as the sequential read, where it got. */
		if (off < nkept) {
			size_t c = (size_t)n < nkept - off
					   ? (size_t)n
					   : nkept - (size_t)off;
			CHECK(memcmp(chunk_buf, kept + off, c) == 0);
		}
	}
}

/* Finds an archive path in the served tree. */
static bool served(struct run *r, const char *path, size_t len)
{
	uint32_t node = CKPT_NODE_ROOT;

	for (size_t i = 0; i <= len;) {
		const char *c = path + i, *slash = memchr(c, '/', len - i);
		size_t n = slash ? (size_t)(slash - c) : len - i;

		if (ckpt_archive_lookup(r->a, node, c, n, &node) < 0)
			return false;
		i += n + 1;
	}
	return true;
}

/* manifest.json as served parses, and each of its records names an entry
 * that is served: a hidden entry is never described. */
static void check_manifest(struct run *r, size_t len)
{
	struct manifest m;
	struct ckpt_err err = {0};

	if (manifest_parse((const char *)kept, len, &m, &err) < 0) {
		fprintf(stderr, "served manifest does not parse: %s\n",
			err.msg);
		abort();
	}
	for (size_t i = 0; i < m.nentries; i++) {
		const struct mentry *e = &m.entries[i];
		if (!served(r, e->path, e->len)) {
			char esc[256];
			ckpt_escape(e->path, e->len, esc, sizeof(esc));
			fprintf(stderr,
				"served manifest describes '%s', "
				"which is not served\n",
				esc);
			abort();
		}
	}
	manifest_free(&m);
}

static void read_file(struct run *r, uint32_t node, uint64_t fsize)
{
	struct ckpt_reader *seq = NULL, *rnd = NULL;
	struct ckpt_err err = {0};
	uint64_t off = 0;
	size_t nkept = 0, ci = (size_t)(next_rand(r) % NCHUNK);
	int rc;

	rc = ckpt_reader_open(r->a, node, &seq, &err);
	if (rc < 0) {
		/* A lying local header, or no memory. */
		CHECK(rc == -EIO || rc == -ENOMEM || rc == -EINVAL);
		CHECK(seq == NULL);
		return;
	}
	/* A second reader first reads out of order, before anything of the
	 * entry is verified. */
	if (ckpt_reader_open(r->a, node, &rnd, &err) < 0)
		rnd = NULL;
	if (rnd)
		random_reads(r, rnd, fsize, 0, 2);

	while (r->budget > 0) {
		size_t want = chunks[ci++ % NCHUNK];
		ssize_t n;

		if (want > r->budget)
			want = (size_t)r->budget;
		n = read_at(seq, fsize, chunk_buf, want, off);
		if (n <= 0)
			break;
		r->budget -= (uint64_t)n;
		if (off < KEEP) {
			size_t c = (size_t)n < KEEP - off ? (size_t)n
							  : KEEP - (size_t)off;
			memcpy(kept + off, chunk_buf, c);
			nkept = (size_t)off + c;
		}
		off += (uint64_t)n;
	}
	CHECK(off <= fsize);
	if (node == r->manifest && off == fsize && fsize <= KEEP)
		check_manifest(r, nkept);

	random_reads(r, seq, fsize, nkept, 3);
	if (rnd)
		random_reads(r, rnd, fsize, nkept, 3);
	ckpt_reader_close(rnd);
	ckpt_reader_close(seq);
}

static void check_node(struct run *r, uint32_t node, size_t plen, int depth);

static void walk_dir(struct run *r, uint32_t dnode, size_t plen, int depth,
		     const struct ckpt_stat *dst)
{
	const char *prev = NULL;
	size_t prev_len = 0;
	uint32_t i, nsub = 0;

	for (i = 0;; i++) {
		uint32_t child, found;
		const char *name;
		size_t len;
		struct ckpt_stat st;

		if (ckpt_archive_child(r->a, dnode, i, &child, &name, &len) < 0)
			break;
		CHECK(child != CKPT_NODE_ROOT && child < r->nnodes);
		CHECK(ckpt_archive_parent_of(r->a, child) == dnode);
		CHECK(len > 0 && len <= 255);
		CHECK(!memchr(name, '/', len) && !memchr(name, '\0', len));
		if (prev) {
			size_t m = prev_len < len ? prev_len : len;
			int c = memcmp(prev, name, m);
			CHECK(c < 0 || (c == 0 && prev_len < len));
		}
		prev = name;
		prev_len = len;
		CHECK(ckpt_archive_lookup(r->a, dnode, name, len, &found) ==
			      0 &&
		      found == child);
		CHECK(ckpt_archive_stat(r->a, child, &st) == 0);
		nsub += st.type == CKPT_DIR;

		CHECK(plen + 1 + len < sizeof(r->path));
		size_t cl = plen;
		if (plen)
			r->path[cl++] = '/';
		memcpy(r->path + cl, name, len);
		cl += len;
		r->path[cl] = '\0';
		check_node(r, child, cl, depth + 1);
		r->path[plen] = '\0';
	}
	CHECK(i == dst->nchild);
	CHECK(dst->nlink == 2 + nsub);
}

static void check_node(struct run *r, uint32_t node, size_t plen, int depth)
{
	/* static: the walk recurses once per directory level. */
	static char target[4097];
	struct ckpt_stat st;
	char hex[33];
	ssize_t tl;

	CHECK(depth < MAX_DEPTH);
	CHECK(node < r->nnodes && !r->seen[node]);
	r->seen[node] = 1;
	CHECK(ckpt_archive_stat(r->a, node, &st) == 0);
	CHECK(st.type == CKPT_FILE || st.type == CKPT_DIR ||
	      st.type == CKPT_SYMLINK);
	CHECK((st.mode & ~0555u) == 0 || st.type == CKPT_SYMLINK);

	if (node != CKPT_NODE_ROOT && st.type != CKPT_SYMLINK) {
		/* What is served passes the policy, as itself. */
		struct ckpt_policy_entry pe = {r->path, plen, st.type, NULL, 0};
		struct ckpt_err err = {0};
		int rc = ckpt_policy_check(0, &pe, NULL, &err);
		if (rc < 0)
			fprintf(stderr, "served but refused: %s: %s\n",
				err.rule, err.msg);
		CHECK(rc == 0);
	}

	tl = ckpt_archive_readlink(r->a, node, target, sizeof(target));
	if (st.type == CKPT_SYMLINK) {
		CHECK(tl > 0 && (uint64_t)tl == st.size);
		CHECK(tl < (ssize_t)sizeof(target));
		CHECK(strlen(target) == (size_t)tl);
		CHECK(target[0] != '/' && !strchr(target, '\\'));
	} else {
		CHECK(tl == -EINVAL);
	}

	if (ckpt_archive_xxh128(r->a, node, hex) == 0) {
		CHECK(st.type == CKPT_FILE);
		CHECK(strlen(hex) == 32 &&
		      strspn(hex, "0123456789abcdef") == 32);
	}

	if (st.type == CKPT_DIR)
		walk_dir(r, node, plen, depth, &st);
	else if (st.type == CKPT_FILE)
		read_file(r, node, st.size);
}

static void check_archive(struct run *r, const uint8_t *data, size_t size)
{
	struct ckpt_hidden hidden[32];
	struct ckpt_stat st;
	uint32_t mf;
	size_t nh;
	const char *s;

	r->nnodes = ckpt_archive_node_count(r->a);
	CHECK(r->nnodes >= 2); /* the root and manifest.json */
	r->seen = calloc(r->nnodes, 1);
	CHECK(r->seen);
	r->budget = BUDGET;
	r->rng = 0xcbf29ce484222325ull;
	for (size_t i = 0; i < size; i++)
		r->rng = (r->rng ^ data[i]) * 0x100000001b3ull;

	CHECK(ckpt_archive_lookup(r->a, CKPT_NODE_ROOT, "manifest.json", 13,
				  &mf) == 0);
	r->manifest = mf;
	CHECK(ckpt_archive_stat(r->a, mf, &st) == 0 && st.type == CKPT_FILE);
	CHECK(ckpt_archive_parent_of(r->a, CKPT_NODE_ROOT) == CKPT_NODE_ROOT);
	CHECK(ckpt_archive_stat(r->a, r->nnodes, &st) == -ENOENT);

	s = ckpt_archive_origin(r->a);
	if (s)
		CHECK(strlen(s) <= 1024);
	s = ckpt_archive_parent(r->a);
	if (s)
		CHECK(strlen(s) <= 1024);
	(void)ckpt_archive_created_ns(r->a);
	nh = ckpt_archive_hidden(r->a, hidden, 32);
	CHECK(nh <= 32);
	for (size_t i = 0; i < nh; i++) {
		CHECK(hidden[i].count > 0);
		CHECK(memchr(hidden[i].rule, '\0', sizeof(hidden[i].rule)));
		CHECK(memchr(hidden[i].sample, '\0', sizeof(hidden[i].sample)));
	}

	r->path[0] = '\0';
	check_node(r, CKPT_NODE_ROOT, 0, 0);
	/* Node numbers are dense: the walk reached every one. */
	for (uint32_t i = 0; i < r->nnodes; i++)
		CHECK(r->seen[i]);
	free(r->seen);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ckpt_limits lim;
	struct ckpt_err err = {0};
	struct run r = {0};
	int fd_before = lowest_free_fd();
	int rc;

	write_input(data, size);
	ckpt_limits_default(&lim);
	rc = ckpt_archive_open(dirfd_, FILE_NAME, &lim, 0, &r.a, &err);
	if (rc < 0) {
		CHECK(err.code == rc);
		CHECK(memchr(err.msg, '\0', sizeof(err.msg)) != NULL);
		CHECK(memchr(err.rule, '\0', sizeof(err.rule)) != NULL);
	} else {
		check_archive(&r, data, size);
		ckpt_archive_unref(r.a);
	}
	/* Every descriptor the archive or a reader opened is closed. */
	CHECK(lowest_free_fd() == fd_before);
	return 0;
}
