/*
 * check_index.c - archives indexed and read through core: layout, lookup,
 * listing, metadata, the archive-level refusals, and reads that must fail
 * (bad CRC, lying sizes, lying local headers) or must not inflate twice.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "internal.h"
#include "zipgen.h"

#define MF                                                                     \
	"{\"format\":\"ckpt\",\"version\":1,\"created\":"                      \
	"\"2025-11-22T09:00:00.5Z\",\"origin\":\"user\",\"parent\":null}"

static char dir[64];
static int dirfd_;
static struct ckpt_limits lim;

static void setup(void)
{
	strcpy(dir, "/tmp/check_index.XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(dir));
	dirfd_ = open(dir, O_RDONLY | O_DIRECTORY);
	ckpt_limits_default(&lim);
}

static void teardown(void)
{
	char cmd[128];

	close(dirfd_);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	ck_assert_int_eq(system(cmd), 0);
}

static int open_ckpt(const char *manifest, const struct zg_entry *e, size_t n,
		     struct ckpt_archive **a, struct ckpt_err *err)
{
	char path[128];

	snprintf(path, sizeof(path), "%s/t.ckpt", dir);
	unlink(path);
	ck_assert_int_eq(zg_write(path, manifest, e, n), 0);
	return ckpt_archive_open(dirfd_, "t.ckpt", &lim, 0, a, err);
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

static ssize_t read_all(struct ckpt_archive *a, uint32_t node, char *buf,
			size_t size, struct ckpt_err *err)
{
	struct ckpt_reader *r;
	size_t done = 0;
	ssize_t n = 0;
	int rc = ckpt_reader_open(a, node, &r, err);

	if (rc < 0)
		return rc;
	while (done < size &&
	       (n = ckpt_reader_pread(r, buf + done, 7000, done, err)) > 0)
		done += (size_t)n;
	ckpt_reader_close(r);
	return n < 0 ? n : (ssize_t)done;
}

START_TEST(layout_and_lookup)
{
	static const char body[] = "hello\n";
	struct zg_entry e[] = {
		{.name = "workspace/src/b.c",
		 .data = body,
		 .len = 6,
		 .deflate = 1,
		 .mode = S_IFREG | 0644},
		{.name = "workspace/src/a.c",
		 .data = body,
		 .len = 6,
		 .mode = S_IFREG | 04755},
		{.name = "workspace/bin/run",
		 .data = "../src/a.c",
		 .len = 10,
		 .mode = S_IFLNK | 0777},
		{.name = "workspace/empty/",
		 .data = "",
		 .len = 0,
		 .mode = S_IFDIR | 0755},
		{.name = "world/snap.json", .data = "{}", .len = 2},
		{.name = "session/t.jsonl", .data = "{}\n", .len = 3},
	};
	struct ckpt_archive *a;
	struct ckpt_stat st;
	struct ckpt_err err = {0};
	const char *name;
	size_t len;
	uint32_t n, c;
	char buf[64];

	ck_assert_int_eq(open_ckpt(MF, e, 6, &a, &err), 0);
	ck_assert(ckpt_archive_created_ns(a) == 1763802000500000000LL);
	ck_assert_str_eq(ckpt_archive_origin(a), "user");
	ck_assert_ptr_null(ckpt_archive_parent(a));
	/* root: manifest.json, session, workspace, world, in byte order */
	ck_assert_int_eq(ckpt_archive_stat(a, CKPT_NODE_ROOT, &st), 0);
	ck_assert_uint_eq(st.nchild, 4);
	ck_assert_uint_eq(st.nlink, 5);
	ck_assert_int_eq(ckpt_archive_child(a, 0, 0, &c, &name, &len), 0);
	ck_assert(len == 13 && memcmp(name, "manifest.json", 13) == 0);
	ck_assert_int_eq(ckpt_archive_child(a, 0, 3, &c, &name, &len), 0);
	ck_assert(len == 5 && memcmp(name, "world", 5) == 0);
	ck_assert_int_eq(ckpt_archive_child(a, 0, 4, &c, &name, &len), -ENOENT);

	n = walk(a, "workspace/src/a.c");
	ck_assert_uint_ne(n, UINT32_MAX);
	ck_assert_int_eq(ckpt_archive_stat(a, n, &st), 0);
	ck_assert_int_eq(st.type, CKPT_FILE);
	ck_assert_uint_eq(st.mode, 0555); /* setuid and write bits gone */
	ck_assert_uint_eq(st.nlink, 1);
	ck_assert_int_eq(read_all(a, n, buf, sizeof(buf), &err), 6);
	ck_assert_int_eq(read_all(a, walk(a, "workspace/src/b.c"), buf,
				  sizeof(buf), &err),
			 6);
	ck_assert(memcmp(buf, body, 6) == 0);

	n = walk(a, "workspace/bin/run");
	ck_assert_int_eq(ckpt_archive_readlink(a, n, buf, sizeof(buf)), 10);
	ck_assert_str_eq(buf, "../src/a.c");
	n = walk(a, "workspace/empty");
	ck_assert_int_eq(ckpt_archive_stat(a, n, &st), 0);
	ck_assert_int_eq(st.type, CKPT_DIR);
	ck_assert_uint_eq(st.nchild, 0);
	/* implied directories carry the creation time */
	ck_assert_int_eq(ckpt_archive_stat(a, walk(a, "workspace/src"), &st),
			 0);
	ck_assert(st.mtime_ns == 1763802000500000000LL);
	ck_assert_uint_eq(walk(a, "workspace/nope"), UINT32_MAX);
	ck_assert_int_eq(ckpt_archive_lookup(a, walk(a, "workspace/src/a.c"),
					     "x", 1, &n),
			 -ENOTDIR);
	ckpt_archive_unref(a);
}
END_TEST

START_TEST(hidden_entries)
{
	struct zg_entry e[] = {
		{.name = "workspace/ok", .data = "x", .len = 1},
		{.name = "workspace/../x", .data = "x", .len = 1},
		{.name = "/abs", .data = "x", .len = 1},
		{.name = "workspace/.credentials.json", .data = "x", .len = 1},
		{.name = "session/.Claude.JSON", .data = "x", .len = 1},
		{.name = "elsewhere/x", .data = "x", .len = 1},
		{.name = "workspace/esc",
		 .data = "../../etc",
		 .len = 9,
		 .mode = S_IFLNK | 0777},
		{.name = "workspace/fifo",
		 .data = "",
		 .len = 0,
		 .mode = S_IFIFO | 0644},
	};
	struct ckpt_archive *a;
	struct ckpt_hidden h[16];
	size_t n, total = 0;

	ck_assert_int_eq(open_ckpt(MF, e, 8, &a, NULL), 0);
	ck_assert_uint_ne(walk(a, "workspace/ok"), UINT32_MAX);
	ck_assert_uint_eq(walk(a, "workspace/.credentials.json"), UINT32_MAX);
	ck_assert_uint_eq(walk(a, "session/.Claude.JSON"), UINT32_MAX);
	ck_assert_uint_eq(walk(a, "workspace/esc"), UINT32_MAX);
	ck_assert_uint_eq(walk(a, "workspace/fifo"), UINT32_MAX);
	ck_assert_uint_eq(walk(a, "elsewhere"), UINT32_MAX);
	n = ckpt_archive_hidden(a, h, 16);
	for (size_t i = 0; i < n; i++)
		total += h[i].count;
	ck_assert_uint_eq(total, 7);
	ckpt_archive_unref(a);
}
END_TEST

START_TEST(manifest_disagreements)
{
	const char *mf =
		"{\"format\":\"ckpt\",\"version\":1,\"entries\":["
		"{\"path\":\"workspace/good\",\"type\":\"file\",\"size\":4,"
		"\"mode\":493,\"mtime_ns\":1763802000123456789},"
		"{\"path\":\"workspace/size\",\"type\":\"file\",\"size\":99},"
		"{\"path\":\"workspace/type\",\"type\":\"dir\"},"
		"{\"path\":\"workspace/hash\",\"type\":\"file\",\"size\":4,"
		"\"xxh3_128\":\"00000000000000000000000000000000\"}]}";
	struct zg_entry e[] = {
		{.name = "workspace/good", .data = "good", .len = 4},
		{.name = "workspace/size", .data = "size", .len = 4},
		{.name = "workspace/type", .data = "type", .len = 4},
		{.name = "workspace/hash", .data = "hash", .len = 4},
		{.name = "workspace/unlisted", .data = "x", .len = 1},
	};
	struct ckpt_archive *a;
	struct ckpt_stat st;
	struct ckpt_err err = {0};
	char buf[16];
	uint32_t n;

	ck_assert_int_eq(open_ckpt(mf, e, 5, &a, NULL), 0);
	n = walk(a, "workspace/good");
	ck_assert_int_eq(ckpt_archive_stat(a, n, &st), 0);
	ck_assert(st.mtime_ns == 1763802000123456789LL); /* to the ns */
	ck_assert_uint_eq(st.mode, 0555);
	ck_assert_uint_eq(walk(a, "workspace/size"), UINT32_MAX);
	ck_assert_uint_eq(walk(a, "workspace/type"), UINT32_MAX);
	ck_assert_uint_eq(walk(a, "workspace/unlisted"), UINT32_MAX);
	/* the manifest as served lists only what is shown, and parses */
	{
		char text[2048];
		struct manifest m;
		ssize_t len = read_all(a, walk(a, "manifest.json"), text,
				       sizeof(text), &err);
		ck_assert_int_gt(len, 0);
		ck_assert_int_eq(
			ckpt_archive_stat(a, walk(a, "manifest.json"), &st), 0);
		ck_assert_int_eq((ssize_t)st.size, len);
		ck_assert_int_eq(manifest_parse(text, (size_t)len, &m, NULL),
				 0);
		ck_assert_uint_eq(m.nentries, 2); /* good and hash */
		ck_assert_ptr_nonnull(manifest_find(&m, "workspace/good", 14));
		ck_assert_ptr_null(manifest_find(&m, "workspace/size", 14));
		manifest_free(&m);
	}
	/* a wrong hash is only seen by reading: EIO before the last byte */
	n = walk(a, "workspace/hash");
	ck_assert_int_eq(read_all(a, n, buf, sizeof(buf), &err), -EIO);
	ck_assert(strstr(err.path, "workspace/hash") != NULL);
	ckpt_archive_unref(a);
}
END_TEST

/* A chunk table must fit its entry; one that does not hides the entry, and
 * a chunk that fails its hash is never returned. */
START_TEST(chunk_tables)
{
	static char data[5000];
	const char *mf =
		"{\"format\":\"ckpt\",\"version\":1,\"entries\":["
		"{\"path\":\"workspace/count\",\"type\":\"file\",\"chunks\":"
		"{\"size\":4096,\"offsets\":[0],\"xxh3_64\":\"0000000000000000\"}},"
		"{\"path\":\"workspace/hash\",\"type\":\"file\",\"chunks\":"
		"{\"size\":8192,\"offsets\":[0],\"xxh3_64\":\"0000000000000000\"}},"
		"{\"path\":\"workspace/past\",\"type\":\"file\",\"chunks\":"
		"{\"size\":4096,\"offsets\":[0,999999],\"xxh3_64\":"
		"\"00000000000000000000000000000000\"}},"
		"{\"path\":\"workspace/plain\",\"type\":\"file\"},"
		"{\"path\":\"workspace/stored\",\"type\":\"file\",\"chunks\":"
		"{\"size\":4096,\"offsets\":[0,10],\"xxh3_64\":"
		"\"00000000000000000000000000000000\"}}]}";
	struct zg_entry e[] = {
		{.name = "workspace/count",
		 .data = data,
		 .len = 5000,
		 .deflate = 1},
		{.name = "workspace/hash",
		 .data = data,
		 .len = 5000,
		 .deflate = 1},
		{.name = "workspace/past",
		 .data = data,
		 .len = 5000,
		 .deflate = 1},
		{.name = "workspace/plain",
		 .data = data,
		 .len = 5000,
		 .deflate = 1},
		{.name = "workspace/stored", .data = data, .len = 5000},
	};
	struct ckpt_archive *a;
	struct ckpt_err err = {0};
	char buf[6000];

	for (size_t i = 0; i < sizeof(data); i++)
		data[i] = "chunk\n"[i % 6];
	ck_assert_int_eq(open_ckpt(mf, e, 5, &a, NULL), 0);
	ck_assert_uint_eq(walk(a, "workspace/count"), UINT32_MAX);
	ck_assert_uint_eq(walk(a, "workspace/past"), UINT32_MAX);
	ck_assert_uint_eq(walk(a, "workspace/stored"), UINT32_MAX);
	ck_assert_int_eq(
		read_all(a, walk(a, "workspace/plain"), buf, sizeof(buf), NULL),
		5000);
	ck_assert(memcmp(buf, data, 5000) == 0);
	ck_assert_int_eq(
		read_all(a, walk(a, "workspace/hash"), buf, sizeof(buf), &err),
		-EIO);
	ck_assert(strstr(err.msg, "chunk hash") != NULL);
	ckpt_archive_unref(a);
}
END_TEST

START_TEST(refusals)
{
	struct zg_entry dup[] = {
		{.name = "workspace/a", .data = "1", .len = 1},
		{.name = "workspace/a", .data = "2", .len = 1},
	};
	struct zg_entry dirdup[] = {
		{.name = "workspace/a", .data = "1", .len = 1},
		{.name = "workspace/a/",
		 .data = "",
		 .len = 0,
		 .mode = S_IFDIR | 0755},
	};
	struct zg_entry filedir[] = {
		{.name = "workspace/a", .data = "1", .len = 1},
		{.name = "workspace/a/b", .data = "2", .len = 1},
	};
	struct zg_entry overlap[] = {
		{.name = "workspace/a", .data = "aaaa", .len = 4},
		{.name = "workspace/b", .data = "bbbb", .len = 4, .lho_of = 2},
	};
	struct ckpt_archive *a;
	struct ckpt_err err = {0};

	ck_assert_int_lt(open_ckpt(MF, dup, 2, &a, &err), 0);
	ck_assert_str_eq(err.rule, "duplicate");
	ck_assert_int_lt(open_ckpt(MF, dirdup, 2, &a, &err), 0);
	ck_assert_str_eq(err.rule, "duplicate");
	ck_assert_int_lt(open_ckpt(MF, filedir, 2, &a, &err), 0);
	ck_assert_str_eq(err.rule, "duplicate");
	ck_assert_int_lt(open_ckpt(MF, overlap, 2, &a, &err), 0);
	ck_assert_str_eq(err.rule, "overlap");
	ck_assert_int_lt(open_ckpt(NULL, dup, 1, &a, &err), 0);
	ck_assert_str_eq(err.rule, "manifest");
	ck_assert_int_lt(open_ckpt("{\"format\":\"ckpt\",\"version\":7}", dup,
				   1, &a, &err),
			 0);
	ck_assert_str_eq(err.rule, "manifest-version");
}
END_TEST

START_TEST(not_archives)
{
	char path[128];
	struct ckpt_archive *a;
	struct ckpt_err err = {0};
	FILE *f;

	snprintf(path, sizeof(path), "%s/junk.ckpt", dir);
	f = fopen(path, "w");
	for (int i = 0; i < 5000; i++)
		fputc(i * 7919 % 251, f);
	fclose(f);
	ck_assert_int_lt(
		ckpt_archive_open(dirfd_, "junk.ckpt", &lim, 0, &a, &err), 0);
	ck_assert_str_eq(err.rule, "not-zip");
	snprintf(path, sizeof(path), "%s/fifo.ckpt", dir);
	ck_assert_int_eq(mkfifo(path, 0644), 0);
	/* must not block on the FIFO */
	ck_assert_int_lt(
		ckpt_archive_open(dirfd_, "fifo.ckpt", &lim, 0, &a, &err), 0);
	snprintf(path, sizeof(path), "%s/link.ckpt", dir);
	ck_assert_int_eq(symlink("/dev/zero", path), 0);
	ck_assert_int_lt(
		ckpt_archive_open(dirfd_, "link.ckpt", &lim, 0, &a, &err), 0);
}
END_TEST

START_TEST(bad_content)
{
	static char big[300000];
	struct zg_entry e[] = {
		{.name = "workspace/crc",
		 .data = "abcdef",
		 .len = 6,
		 .crc_xor = 1},
		{.name = "workspace/liar",
		 .data = big,
		 .len = sizeof(big),
		 .deflate = 1,
		 .size_delta = -(int64_t)sizeof(big) + 100},
		{.name = "workspace/short",
		 .data = "abc",
		 .len = 3,
		 .deflate = 1,
		 .size_delta = 5},
		{.name = "workspace/mismatch",
		 .data = "abc",
		 .len = 3,
		 .local_name = "workspace/mismatcX"},
		{.name = "workspace/fine",
		 .data = big,
		 .len = sizeof(big),
		 .deflate = 1},
	};
	struct ckpt_archive *a;
	struct ckpt_err err = {0};
	char *buf = malloc(sizeof(big) + 10);
	ssize_t n;

	memset(big, 'z', sizeof(big));
	ck_assert_int_eq(open_ckpt(MF, e, 5, &a, &err), 0);
	ck_assert_int_eq(read_all(a, walk(a, "workspace/crc"), buf, 100, &err),
			 -EIO);
	/* a CRC failure is remembered: the next open fails at once */
	ck_assert_int_eq(read_all(a, walk(a, "workspace/crc"), buf, 100, &err),
			 -EIO);
	/* the liar declares 100 bytes: never more, and EIO at the end */
	n = read_all(a, walk(a, "workspace/liar"), buf, sizeof(big), &err);
	ck_assert_int_eq(n, -EIO);
	n = read_all(a, walk(a, "workspace/short"), buf, sizeof(big), &err);
	ck_assert_int_eq(n, -EIO);
	n = read_all(a, walk(a, "workspace/fine"), buf, sizeof(big) + 10, &err);
	ck_assert_int_eq(n, sizeof(big));
	ck_assert(memcmp(buf, big, sizeof(big)) == 0);
	/* a lying local header poisons the whole archive */
	n = read_all(a, walk(a, "workspace/mismatch"), buf, 10, &err);
	ck_assert_int_eq(n, -EIO);
	ck_assert_str_eq(err.rule, "header-mismatch");
	ck_assert_int_eq(atomic_load(&a->poisoned), 1);
	ckpt_archive_unref(a);
	free(buf);
}
END_TEST

/* Reads at random and backwards: the deflated entry (no chunk table, as
 * another tool writes it) resumes at restart points a span apart. */
START_TEST(random_reads)
{
	size_t size = 6 << 20;
	unsigned char *data = malloc(size), *buf = malloc(size);
	struct zg_entry e[] = {
		{.name = "workspace/d",
		 .data = data,
		 .len = size,
		 .deflate = 1},
		{.name = "workspace/s", .data = data, .len = size},
	};
	struct ckpt_archive *a;
	struct ckpt_reader *r;
	uint32_t seed = 1;

	for (size_t i = 0; i < size; i++)
		data[i] = (unsigned char)((i * 31) ^ (i >> 9));
	ck_assert_int_eq(open_ckpt(MF, e, 2, &a, NULL), 0);
	for (int f = 0; f < 2; f++) {
		uint32_t node = walk(a, f ? "workspace/s" : "workspace/d");
		ck_assert_int_eq(ckpt_reader_open(a, node, &r, NULL), 0);
		for (int i = 0; i < 300; i++) {
			size_t off, len;
			seed = seed * 1103515245 + 12345;
			off = seed % size;
			len = 1 + (seed >> 8) % 131072;
			ssize_t n = ckpt_reader_pread(r, buf, len, off, NULL);
			ck_assert_int_eq(n,
					 off + len > size ? size - off : len);
			ck_assert(memcmp(buf, data + off, (size_t)n) == 0);
		}
		/* reading backwards in 128 KiB steps covers everything,
		 * including the tail that triggers verification */
		for (size_t off = size; off > 0;) {
			size_t len = off < 131072 ? off : 131072;
			off -= len;
			ck_assert_int_eq(
				ckpt_reader_pread(r, buf, len, off, NULL), len);
			ck_assert(memcmp(buf, data + off, len) == 0);
		}
		ckpt_reader_close(r);
	}
	ckpt_archive_unref(a);
	free(data);
	free(buf);
}
END_TEST

/* A manifest well past the first 64 KiB of the read buffer. */
START_TEST(large_manifest)
{
	size_t n = 3000, o = 0;
	char *mf = malloc(n * 120 + 256);
	struct zg_entry *e = calloc(n, sizeof(*e));
	char(*names)[32] = malloc(n * sizeof(*names));
	struct ckpt_archive *a;
	struct ckpt_err err = {0};

	o += (size_t)sprintf(mf, "{\"format\":\"ckpt\",\"version\":1,"
				 "\"entries\":[");
	for (size_t i = 0; i < n; i++) {
		snprintf(names[i], sizeof(names[i]), "workspace/f%05zu", i);
		e[i].name = names[i];
		e[i].data = "x";
		e[i].len = 1;
		o += (size_t)sprintf(mf + o,
				     "%s{\"path\":\"%s\",\"type\":\"file\","
				     "\"size\":1,\"mtime_ns\":%zu}",
				     i ? "," : "", names[i], i);
	}
	strcpy(mf + o, "]}");
	ck_assert_int_eq(open_ckpt(mf, e, n, &a, &err), 0);
	ck_assert_uint_ne(walk(a, "workspace/f02999"), UINT32_MAX);
	ckpt_archive_unref(a);
	free(mf);
	free(e);
	free(names);
}
END_TEST

START_TEST(many_entries_small)
{
	size_t n = 20000;
	struct zg_entry *e = calloc(n, sizeof(*e));
	char(*names)[48] = malloc(n * sizeof(*names));
	struct ckpt_archive *a;
	size_t bytes;

	for (size_t i = 0; i < n; i++) {
		snprintf(names[i], sizeof(names[i]),
			 "workspace/d%03zu/sub%zu/file%zu.c", i % 1000, i % 7,
			 i);
		e[i].name = names[i];
		e[i].data = "int x;\n";
		e[i].len = 7;
	}
	ck_assert_int_eq(open_ckpt(MF, e, n, &a, NULL), 0);
	ck_assert_uint_ne(walk(a, "workspace/d123/sub3/file1123.c"),
			  UINT32_MAX);
	/* the index stays small: well under 10 MiB for 20k entries */
	bytes = (size_t)ckpt_archive_node_count(a) * sizeof(struct node);
	ck_assert_uint_lt(bytes, 4u << 20);
	ckpt_archive_unref(a);
	free(e);
	free(names);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("index");
	TCase *tc = tcase_create("core");
	SRunner *sr;
	int failed;

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, layout_and_lookup);
	tcase_add_test(tc, hidden_entries);
	tcase_add_test(tc, manifest_disagreements);
	tcase_add_test(tc, chunk_tables);
	tcase_add_test(tc, refusals);
	tcase_add_test(tc, not_archives);
	tcase_add_test(tc, bad_content);
	tcase_add_test(tc, random_reads);
	tcase_add_test(tc, many_entries_small);
	tcase_add_test(tc, large_manifest);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
