/*
 * check_save.c - the save path end to end, without a mount: archives it
 * writes must read back identically through core's own index and through
 * libzip, an independent reader; transcripts are cut at their last line;
 * compressed formats are stored; unchanged files are copied from the
 * parent; a refused save leaves nothing behind; a store keeps a replaced
 * checkpoint's instance while it is pinned.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zip.h>

#include "internal.h"

static char dir[64], run[128], store[128];
static int sfd;
static struct ckpt_limits lim;

static void put(const char *rel, const void *data, size_t len)
{
	char path[512], *slash;
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", run, rel);
	for (slash = strchr(path + strlen(run) + 1, '/'); slash;
	     slash = strchr(slash + 1, '/')) {
		*slash = '\0';
		mkdir(path, 0755);
		*slash = '/';
	}
	f = fopen(path, "wb");
	ck_assert_ptr_nonnull(f);
	ck_assert_uint_eq(fwrite(data, 1, len, f), len);
	fclose(f);
}

static void setup(void)
{
	strcpy(dir, "/tmp/check_save.XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(run, sizeof(run), "%s/run", dir);
	snprintf(store, sizeof(store), "%s/store", dir);
	mkdir(run, 0755);
	mkdir(store, 0755);
	sfd = open(store, O_RDONLY | O_DIRECTORY);
	ckpt_limits_default(&lim);
}

static void teardown(void)
{
	char cmd[128];

	close(sfd);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	ck_assert_int_eq(system(cmd), 0);
}

static void opts(struct ckpt_save_opts *o, char tiers[3][160])
{
	static const char *const names[] = {"world", "workspace", "session"};

	memset(o, 0, sizeof(*o));
	o->name = "t";
	o->origin = "user";
	for (int t = 0; t < 3; t++) {
		struct stat st;
		snprintf(tiers[t], 160, "%s/%s", run, names[t]);
		if (stat(tiers[t], &st) == 0)
			o->tier_dir[t] = tiers[t];
	}
}

static uint32_t walk(const struct ckpt_archive *a, const char *path)
{
	uint32_t node = CKPT_NODE_ROOT;
	char buf[256], *save, *c;

	snprintf(buf, sizeof(buf), "%s", path);
	for (c = strtok_r(buf, "/", &save); c; c = strtok_r(NULL, "/", &save))
		if (ckpt_archive_lookup(a, node, c, strlen(c), &node) < 0)
			return UINT32_MAX;
	return node;
}

/* The content of path in the archive, through core's reader. */
static size_t read_core(struct ckpt_archive *a, const char *path, char *buf,
			size_t size)
{
	struct ckpt_reader *r;
	uint32_t node = walk(a, path);
	size_t done = 0;
	ssize_t n;

	ck_assert_msg(node != UINT32_MAX, "%s not in archive", path);
	ck_assert_int_eq(ckpt_reader_open(a, node, &r, NULL), 0);
	while ((n = ckpt_reader_pread(r, buf + done, size - done, done, NULL)) >
	       0)
		done += (size_t)n;
	ck_assert_int_eq(n, 0);
	ckpt_reader_close(r);
	return done;
}

/* ... and through libzip, which knows nothing of ckptfs. */
static size_t read_libzip(const char *file, const char *path, char *buf,
			  size_t size)
{
	int zerr;
	zip_t *z = zip_open(file, ZIP_RDONLY | ZIP_CHECKCONS, &zerr);
	zip_file_t *f;
	zip_int64_t n;

	ck_assert_msg(z != NULL, "libzip cannot open %s: %d", file, zerr);
	f = zip_fopen(z, path, 0);
	ck_assert_msg(f != NULL, "libzip: %s: %s", path, zip_strerror(z));
	n = zip_fread(f, buf, size);
	ck_assert_int_ge(n, 0);
	zip_fclose(f);
	zip_close(z);
	return (size_t)n;
}

START_TEST(round_trip)
{
	static char big[700000], got[800000];
	static const char png[] = "\x89PNG\r\n\x1a\n"
				  "0000000000000000";
	struct ckpt_save_opts o;
	struct ckpt_save_result res;
	struct ckpt_archive *a;
	struct ckpt_stat st;
	struct ckpt_err err = {0};
	char tiers[3][160], file[256];
	size_t n;

	for (size_t i = 0; i < sizeof(big); i++)
		big[i] = "abcdefgh\n"[i % 9];
	put("world/snap.json", "{\"w\":1}", 7);
	put("workspace/src/big.txt", big, sizeof(big));
	put("workspace/img.png", png, sizeof(png) - 1);
	/* incompressible without a known magic: deflate does not gain */
	{
		static char noise[300000];
		uint32_t x = 12345;
		for (size_t i = 0; i < sizeof(noise); i++) {
			x = x * 1103515245 + 12345;
			noise[i] = (char)(x >> 24);
		}
		put("workspace/noise.bin", noise, sizeof(noise));
	}
	put("workspace/.env", "KEY=x\n", 6);
	put("session/projects/p/t.jsonl", "{\"a\":1}\n{\"b\":2}\n{\"c\":", 20);
	/* a transcript without one complete line is stored empty */
	put("session/projects/p/u.jsonl", "{\"partial", 10);
	opts(&o, tiers);
	ck_assert_int_eq(ckpt_save(sfd, "t.ckpt", &o, &res, &err), 0);
	ck_assert_uint_eq(res.copied, 0);
	ck_assert_int_eq(ckpt_archive_open(sfd, "t.ckpt", &lim, 0, &a, &err),
			 0);
	snprintf(file, sizeof(file), "%s/t.ckpt", store);

	n = read_core(a, "workspace/src/big.txt", got, sizeof(got));
	ck_assert_uint_eq(n, sizeof(big));
	ck_assert(memcmp(got, big, n) == 0);
	n = read_libzip(file, "workspace/src/big.txt", got, sizeof(got));
	ck_assert_uint_eq(n, sizeof(big));
	ck_assert(memcmp(got, big, n) == 0);
	ck_assert_int_eq(a->nodes[walk(a, "workspace/src/big.txt")].z.method,
			 ZIP_METHOD_DEFLATE);
	/* compressed formats are stored as they are */
	ck_assert_int_eq(a->nodes[walk(a, "workspace/img.png")].z.method,
			 ZIP_METHOD_STORE);
	ck_assert_int_eq(a->nodes[walk(a, "workspace/noise.bin")].z.method,
			 ZIP_METHOD_STORE);
	ck_assert_uint_eq(
		read_libzip(file, "workspace/noise.bin", got, sizeof(got)),
		300000);
	/* transcripts end at their last complete line */
	n = read_core(a, "session/projects/p/t.jsonl", got, sizeof(got));
	ck_assert_uint_eq(n, 16);
	ck_assert(memcmp(got, "{\"a\":1}\n{\"b\":2}\n", 16) == 0);
	ck_assert_uint_eq(
		read_core(a, "session/projects/p/u.jsonl", got, sizeof(got)),
		0);
	/* credentials never go in */
	ck_assert_uint_eq(walk(a, "workspace/.env"), UINT32_MAX);
	/* the manifest is read back by libzip too, and has hashes */
	n = read_libzip(file, "manifest.json", got, sizeof(got));
	got[n] = '\0';
	ck_assert(strstr(got, "\"xxh3_128\"") != NULL);
	ck_assert(strstr(got, "\"scan_rules\"") != NULL);
	ck_assert_int_eq(
		ckpt_archive_stat(a, walk(a, "workspace/src/big.txt"), &st), 0);
	ck_assert_uint_eq(st.size, sizeof(big));
	ckpt_archive_unref(a);
}
END_TEST

START_TEST(incremental)
{
	struct ckpt_save_opts o;
	struct ckpt_save_result res;
	struct ckpt_archive *a, *b;
	char tiers[3][160], name[64], got[64];

	for (int i = 0; i < 50; i++) {
		snprintf(name, sizeof(name), "workspace/f%02d.txt", i);
		put(name, name, strlen(name));
	}
	opts(&o, tiers);
	ck_assert_int_eq(ckpt_save(sfd, "a.ckpt", &o, &res, NULL), 0);
	ck_assert_int_eq(ckpt_archive_open(sfd, "a.ckpt", &lim, 0, &a, NULL),
			 0);
	/* change 3 files (a new size, so the change is visible even within
	 * one mtime tick) */
	put("workspace/f07.txt", "changed seven", 13);
	put("workspace/f08.txt", "changed eight", 13);
	put("workspace/f09.txt", "changed nine!", 13);
	o.parent = a;
	o.parent_name = "a";
	ck_assert_int_eq(ckpt_save(sfd, "b.ckpt", &o, &res, NULL), 0);
	ck_assert_uint_eq(res.files, 50);
	ck_assert_uint_eq(res.copied, 47);
	ck_assert_int_eq(ckpt_archive_open(sfd, "b.ckpt", &lim, 0, &b, NULL),
			 0);
	ck_assert_str_eq(ckpt_archive_parent(b), "a");
	ck_assert_uint_eq(read_core(b, "workspace/f08.txt", got, sizeof(got)),
			  13);
	ck_assert(memcmp(got, "changed eight", 13) == 0);
	ck_assert_uint_eq(read_core(b, "workspace/f42.txt", got, sizeof(got)),
			  17);
	ck_assert(memcmp(got, "workspace/f42.txt", 17) == 0);
	ckpt_archive_unref(a);
	ckpt_archive_unref(b);
}
END_TEST

/* Source-like text: words from a small list, seeded. */
static void words(char *p, size_t n, uint32_t seed)
{
	static const char *const w[] = {"static ", "int ",  "return ", "0;\n",
					"struct ", "node ", "(void) ", "{\n",
					"}\n",	   "if ",   "else ",   "for "};
	size_t i = 0;

	while (i < n) {
		seed = seed * 1103515245 + 12345;
		for (const char *s = w[(seed >> 16) % 12]; *s && i < n; s++)
			p[i++] = *s;
	}
}

static const struct chunktab *chunks_of(const struct ckpt_archive *a,
					const char *path)
{
	uint32_t node = walk(a, path);

	ck_assert_uint_ne(node, UINT32_MAX);
	if (a->nodes[node].u.file.chunks == NO_CHUNKS)
		return NULL;
	return &a->chunks[a->nodes[node].u.file.chunks];
}

/* Random preads through one reader must match the source. */
static void random_reads(struct ckpt_archive *a, const char *path,
			 const char *want, size_t size)
{
	static char got[300000];
	struct ckpt_reader *r;
	uint32_t x = 7;

	ck_assert_int_eq(ckpt_reader_open(a, walk(a, path), &r, NULL), 0);
	for (int i = 0; i < 300; i++) {
		size_t off, len;
		ssize_t n;

		x = x * 1103515245 + 12345;
		off = (x >> 4) % size;
		x = x * 1103515245 + 12345;
		len = (x >> 4) % sizeof(got);
		n = ckpt_reader_pread(r, got, len, off, NULL);
		if (len > size - off)
			len = size - off;
		ck_assert_int_eq(n, (ssize_t)len);
		ck_assert_msg(memcmp(got, want + off, len) == 0,
			      "%s: bytes %zu+%zu differ", path, off, len);
	}
	ckpt_reader_close(r);
}

/* What the chunk hook saw: each chunk it was given must be the source's
 * bytes at that offset. */
static struct {
	const char *want;
	unsigned calls, bad;
	uint64_t seen; /* bit per chunk */
} hook;

static void on_chunk(void *ctx, uint64_t off, const void *p, size_t len)
{
	(void)ctx;
	hook.calls++;
	if (off % CKPT_CHUNK || memcmp(p, hook.want + off, len) != 0)
		hook.bad++;
	hook.seen |= 1ull << (off / CKPT_CHUNK);
}

START_TEST(chunks)
{
	static char text[1000000], exact[2 * CKPT_CHUNK], got[1100000];
	struct ckpt_save_opts o;
	struct ckpt_save_result res;
	struct ckpt_archive *a, *b;
	const struct chunktab *t;
	char tiers[3][160], file[256], bad[256], cmd[600];
	struct ckpt_reader *r;
	int64_t data;
	uint32_t node;
	int fd;

	words(text, sizeof(text), 1);
	words(exact, sizeof(exact), 2);
	put("workspace/text.txt", text, sizeof(text));
	/* a whole number of chunks: the stream ends after the last one */
	put("workspace/two.txt", exact, sizeof(exact));
	put("workspace/one.txt", exact, CKPT_CHUNK);
	opts(&o, tiers);
	ck_assert_int_eq(ckpt_save(sfd, "a.ckpt", &o, &res, NULL), 0);
	ck_assert_int_eq(ckpt_archive_open(sfd, "a.ckpt", &lim, 0, &a, NULL),
			 0);
	snprintf(file, sizeof(file), "%s/a.ckpt", store);

	t = chunks_of(a, "workspace/text.txt");
	ck_assert_ptr_nonnull(t);
	ck_assert_uint_eq(t->size, CKPT_CHUNK);
	ck_assert_uint_eq(t->n, 4);
	t = chunks_of(a, "workspace/two.txt");
	ck_assert_ptr_nonnull(t);
	ck_assert_uint_eq(t->n, 2);
	ck_assert_ptr_null(chunks_of(a, "workspace/one.txt"));
	/* one deflate stream that any unzip reads */
	ck_assert_uint_eq(
		read_libzip(file, "workspace/text.txt", got, sizeof(got)),
		sizeof(text));
	ck_assert(memcmp(got, text, sizeof(text)) == 0);
	ck_assert_uint_eq(
		read_libzip(file, "workspace/two.txt", got, sizeof(got)),
		sizeof(exact));
	ck_assert(memcmp(got, exact, sizeof(exact)) == 0);
	ck_assert_uint_eq(
		read_libzip(file, "workspace/one.txt", got, sizeof(got)),
		CKPT_CHUNK);
	ck_assert_uint_eq(read_core(a, "workspace/text.txt", got, sizeof(got)),
			  sizeof(text));
	ck_assert(memcmp(got, text, sizeof(text)) == 0);
	ck_assert_uint_eq(read_core(a, "workspace/two.txt", got, sizeof(got)),
			  sizeof(exact));
	ck_assert(memcmp(got, exact, sizeof(exact)) == 0);
	ck_assert_uint_eq(read_core(a, "workspace/one.txt", got, sizeof(got)),
			  CKPT_CHUNK);
	ck_assert(memcmp(got, exact, CKPT_CHUNK) == 0);
	random_reads(a, "workspace/text.txt", text, sizeof(text));
	random_reads(a, "workspace/two.txt", exact, sizeof(exact));
	random_reads(a, "workspace/one.txt", exact, CKPT_CHUNK);

	/* A forward reader gets the chunks ahead of it inflated, and each
	 * inflated chunk is offered to the hook, checked. */
	hook.want = text;
	/* another open of the archive: nothing of it is cached */
	ck_assert_int_eq(ckpt_archive_open(sfd, "a.ckpt", &lim, 0, &b, NULL),
			 0);
	ck_assert_int_eq(
		ckpt_reader_open(b, walk(b, "workspace/text.txt"), &r, NULL),
		0);
	ckpt_reader_on_chunk(r, on_chunk, NULL);
	ck_assert_int_eq(ckpt_reader_pread(r, got, 4096, 0, NULL), 4096);
	ck_assert_int_eq(ckpt_reader_ahead(r), 0);
	ck_assert_int_eq(ckpt_reader_ahead(r), 0);
	ck_assert_int_eq(ckpt_reader_ahead(r), 0);
	ck_assert_uint_eq(hook.seen, 0x7); /* chunk 0, then 1 and 2 ahead */
	ck_assert_int_eq(ckpt_reader_pread(r, got, 4096, 900000, NULL), 4096);
	ck_assert_int_eq(ckpt_reader_ahead(r), 0); /* near: forward */
	ck_assert_uint_eq(hook.seen, 0xf);
	ck_assert_uint_eq(hook.bad, 0);
	ck_assert(memcmp(got, text + 900000, 4096) == 0);
	ckpt_reader_close(r);
	ckpt_archive_unref(b);

	/* A parent's chunk table goes with the bytes it copies. */
	o.parent = a;
	o.parent_name = "a";
	ck_assert_int_eq(ckpt_save(sfd, "b.ckpt", &o, &res, NULL), 0);
	ck_assert_uint_eq(res.copied, 3);
	ck_assert_int_eq(ckpt_archive_open(sfd, "b.ckpt", &lim, 0, &b, NULL),
			 0);
	t = chunks_of(b, "workspace/text.txt");
	ck_assert_ptr_nonnull(t);
	ck_assert_uint_eq(t->n, 4);
	random_reads(b, "workspace/text.txt", text, sizeof(text));
	ckpt_archive_unref(b);

	/* One damaged chunk: the others still read, it never does. */
	node = walk(a, "workspace/text.txt");
	t = chunks_of(a, "workspace/text.txt");
	data = zip_data_offset(a->fd, &a->nodes[node].z, "workspace/text.txt",
			       18, NULL);
	ck_assert_int_gt(data, 0);
	snprintf(bad, sizeof(bad), "%s/bad.ckpt", store);
	snprintf(cmd, sizeof(cmd), "cp %s %s", file, bad);
	ck_assert_int_eq(system(cmd), 0);
	fd = open(bad, O_WRONLY);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(pwrite(fd, "\xff\xff\xff\xff", 4,
				data + (off_t)t->off[2] + 100),
			 4);
	close(fd);
	ckpt_archive_unref(a);
	ck_assert_int_eq(ckpt_archive_open(sfd, "bad.ckpt", &lim, 0, &b, NULL),
			 0);
	ck_assert_int_eq(
		ckpt_reader_open(b, walk(b, "workspace/text.txt"), &r, NULL),
		0);
	ck_assert_int_eq(ckpt_reader_pread(r, got, 1000, 3 * CKPT_CHUNK, NULL),
			 1000);
	ck_assert(memcmp(got, text + 3 * CKPT_CHUNK, 1000) == 0);
	ck_assert_int_eq(
		ckpt_reader_pread(r, got, 1000, 2 * CKPT_CHUNK + 5, NULL),
		-EIO);
	ck_assert_int_eq(ckpt_reader_pread(r, got, sizeof(got), 0, NULL), -EIO);
	ck_assert_int_eq(ckpt_reader_pread(r, got, 1000, 10, NULL), 1000);
	ckpt_reader_close(r);
	ckpt_archive_unref(b);
}
END_TEST

START_TEST(refusals_leave_nothing)
{
	struct ckpt_save_opts o;
	struct ckpt_err err = {0};
	char tiers[3][160], key[64];
	int count = 0;
	DIR *d;

	/* Built from parts, so no key-shaped literal is in the source. */
	snprintf(key, sizeof(key), "AK%s%s", "IA", "QWERTYUIOPASDFGH");
	put("workspace/config.py", key, strlen(key));
	opts(&o, tiers);
	ck_assert_int_eq(ckpt_save(sfd, "s.ckpt", &o, NULL, &err), -EPERM);
	ck_assert_str_eq(err.rule, "aws-access-key-id");
	ck_assert_str_eq(err.path, "workspace/config.py");
	ck_assert_uint_eq(err.line, 1);
	ck_assert(strstr(err.msg, key) == NULL);
	ck_assert_uint_eq(strlen(err.fingerprint), 16);
	d = opendir(store);
	for (struct dirent *de; (de = readdir(d));)
		count += de->d_name[0] != '.' || strlen(de->d_name) > 2;
	closedir(d);
	ck_assert_int_eq(count, 0);
	/* a secret in run.json names run.json, not the manifest */
	put("workspace/config.py", "ok", 2);
	{
		char run_json[300];
		FILE *f;
		snprintf(run_json, sizeof(run_json), "%s/run.json", run);
		f = fopen(run_json, "w");
		fprintf(f, "{\n\"id\": \"r\",\n\"note\": \"%s\"\n}\n", key);
		fclose(f);
		o.run_json = run_json;
		ck_assert_int_eq(ckpt_save(sfd, "s.ckpt", &o, NULL, &err),
				 -EPERM);
		ck_assert_str_eq(err.path, "run.json");
		ck_assert_uint_eq(err.line, 3);
		unlink(run_json);
		o.run_json = NULL;
	}
	/* a taken name */
	put("workspace/config.py", "ok", 2);
	ck_assert_int_eq(ckpt_save(sfd, "s.ckpt", &o, NULL, &err), 0);
	ck_assert_int_eq(ckpt_save(sfd, "s.ckpt", &o, NULL, &err), -EEXIST);
}
END_TEST

/* Count what a failed save left in the store: nothing, ever. */
static int store_entries(void)
{
	DIR *d = opendir(store);
	int n = 0;

	for (struct dirent *de; (de = readdir(d));)
		n += strcmp(de->d_name, ".") && strcmp(de->d_name, "..");
	closedir(d);
	return n;
}

START_TEST(faults)
{
	static char big[2 << 20];
	struct ckpt_save_opts o;
	struct ckpt_err err = {0};
	char tiers[3][160];

	uint32_t x = 7;

	/* Incompressible: stored, so the archive takes several writes and
	 * the second one is in the middle of it. */
	for (size_t i = 0; i < sizeof(big); i++) {
		x = x * 1103515245 + 12345;
		big[i] = (char)(x >> 24);
	}
	put("workspace/big.txt", big, sizeof(big));
	opts(&o, tiers);
	/* EIO on a write in the middle of the archive */
	ckpt_faults =
		(struct ckpt_faults){.write_fail_at = 2, .write_errno = EIO};
	ck_assert_int_eq(ckpt_save(sfd, "f.ckpt", &o, NULL, &err), -EIO);
	ck_assert_int_eq(store_entries(), 0);
	/* a short write, then ENOSPC */
	ckpt_faults = (struct ckpt_faults){
		.write_fail_at = 2, .write_errno = ENOSPC, .short_write = true};
	ck_assert_int_eq(ckpt_save(sfd, "f.ckpt", &o, NULL, &err), -ENOSPC);
	ck_assert_int_eq(store_entries(), 0);
	/* fsync fails: the data may not be durable, so nothing is published */
	ckpt_faults = (struct ckpt_faults){.fsync_errno = EIO};
	ck_assert_int_eq(ckpt_save(sfd, "f.ckpt", &o, NULL, &err), -EIO);
	ck_assert_int_eq(store_entries(), 0);
	ckpt_faults = (struct ckpt_faults){0};
	ck_assert_int_eq(ckpt_save(sfd, "f.ckpt", &o, NULL, &err), 0);
	ck_assert_int_eq(store_entries(), 1);
}
END_TEST

/* The kernel's pins keep a replaced checkpoint's instance reachable by id
 * until the last is released; the store's change clock moves with it. */
START_TEST(pins)
{
	struct ckpt_store_opts so = {0};
	struct ckpt_save_opts o;
	struct ckpt_store *s;
	struct ckpt_archive *a, *old;
	char tiers[3][160], from[256], to[256], got[64];
	uint32_t id1, id2;
	int64_t t0;

	put("workspace/f.txt", "first", 5);
	opts(&o, tiers);
	ck_assert_int_eq(ckpt_save(sfd, "a.ckpt", &o, NULL, NULL), 0);
	ckpt_limits_default(&so.limits);
	ck_assert_int_eq(ckpt_store_open(store, &so, &s, NULL), 0);
	ck_assert_int_eq(ckpt_store_get(s, "a", &a, NULL), 0);
	id1 = ckpt_archive_id(a);
	ck_assert_int_eq(ckpt_store_pin(s, a, 2), 0);
	ckpt_archive_unref(a);

	/* replaced by a rename, as rsync does */
	put("workspace/f.txt", "second", 6);
	ck_assert_int_eq(ckpt_save(sfd, "b.ckpt", &o, NULL, NULL), 0);
	snprintf(from, sizeof(from), "%s/b.ckpt", store);
	snprintf(to, sizeof(to), "%s/a.ckpt", store);
	t0 = ckpt_store_changed_ns(s);
	ck_assert_int_eq(rename(from, to), 0);
	ck_assert_int_eq(ckpt_store_refresh(s, NULL, NULL), 0);
	ck_assert(ckpt_store_changed_ns(s) > t0);
	ck_assert_int_eq(ckpt_store_get(s, "a", &a, NULL), 0);
	id2 = ckpt_archive_id(a);
	ck_assert_uint_ne(id1, id2);
	ck_assert_uint_eq(read_core(a, "workspace/f.txt", got, sizeof(got)), 6);
	ckpt_archive_unref(a);

	/* the old instance serves its old content while pinned */
	ck_assert_int_eq(ckpt_store_get_id(s, id1, &old), 0);
	ck_assert_uint_eq(read_core(old, "workspace/f.txt", got, sizeof(got)),
			  5);
	ck_assert(memcmp(got, "first", 5) == 0);
	ckpt_archive_unref(old);
	ckpt_store_unpin(s, id1, 1);
	ck_assert_int_eq(ckpt_store_get_id(s, id1, &old), 0);
	ckpt_archive_unref(old);
	/* more released than pinned never goes below zero */
	ckpt_store_unpin(s, id1, 5);
	ck_assert_int_eq(ckpt_store_get_id(s, id1, &old), -ESTALE);

	/* an unpinned instance goes with its checkpoint */
	ck_assert_int_eq(unlink(to), 0);
	t0 = ckpt_store_changed_ns(s);
	ck_assert_int_eq(ckpt_store_refresh(s, NULL, NULL), 0);
	ck_assert(ckpt_store_changed_ns(s) > t0);
	ck_assert_int_eq(ckpt_store_get_id(s, id2, &old), -ESTALE);

	/* pinned ones are kept eight at most: the oldest goes first */
	uint32_t ids[10];
	for (int i = 0; i < 10; i++) {
		char body[16];
		int len = snprintf(body, sizeof(body), "version %d", i);
		put("workspace/f.txt", body, (size_t)len);
		ck_assert_int_eq(ckpt_save(sfd, "b.ckpt", &o, NULL, NULL), 0);
		ck_assert_int_eq(rename(from, to), 0);
		ck_assert_int_eq(ckpt_store_refresh(s, NULL, NULL), 0);
		ck_assert_int_eq(ckpt_store_get(s, "a", &a, NULL), 0);
		ids[i] = ckpt_archive_id(a);
		ck_assert_int_eq(ckpt_store_pin(s, a, 1), 0);
		ckpt_archive_unref(a);
	}
	unlink(to);
	ck_assert_int_eq(ckpt_store_refresh(s, NULL, NULL), 0);
	for (int i = 0; i < 10; i++) {
		int rc = ckpt_store_get_id(s, ids[i], &old);
		ck_assert_int_eq(rc, i < 2 ? -ESTALE : 0);
		if (rc == 0) {
			char want[16];
			int len = snprintf(want, sizeof(want), "version %d", i);
			ck_assert_uint_eq(read_core(old, "workspace/f.txt", got,
						    sizeof(got)),
					  (size_t)len);
			ck_assert(memcmp(got, want, (size_t)len) == 0);
			ckpt_archive_unref(old);
		}
	}
	ckpt_store_close(s);
}
END_TEST

START_TEST(cleanup)
{
	char path[256];
	int fd;

	/* a leftover of a writer that is gone (pid 1 is alive: kept) */
	snprintf(path, sizeof(path), "%s/.x.ckpt.tmp-999999999-0", store);
	fd = open(path, O_CREAT | O_WRONLY, 0644);
	close(fd);
	snprintf(path, sizeof(path), "%s/.y.ckpt.tmp-1-0", store);
	fd = open(path, O_CREAT | O_WRONLY, 0644);
	close(fd);
	ck_assert_int_eq(ckpt_save_cleanup(sfd), 1);
	ck_assert_int_eq(access(path, F_OK), 0);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("save");
	TCase *tc = tcase_create("core");
	SRunner *sr;
	int failed;

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, round_trip);
	tcase_add_test(tc, incremental);
	tcase_add_test(tc, chunks);
	tcase_add_test(tc, refusals_leave_nothing);
	tcase_add_test(tc, cleanup);
	tcase_add_test(tc, pins);
	tcase_add_test(tc, faults);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
