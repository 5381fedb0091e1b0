/*
 * check_manifest.c - the manifest parser and the JSON reader under it:
 * valid manifests, every refusal ckpt(5) names, and malformed, truncated,
 * deep and huge inputs.
 */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define HDR "{\"format\":\"ckpt\",\"version\":1,"

static int parse(const char *text, struct manifest *m, struct ckpt_err *err)
{
	return manifest_parse(text, strlen(text), m, err);
}

START_TEST(valid_full)
{
	const char *t =
		HDR "\"name\":\"gen3\",\"created\":\"2025-11-22T09:00:00."
		    "123456789Z\",\"origin\":\"agent\",\"parent\":\"gen2\","
		    "\"run\":{\"id\":\"r\",\"step\":1,\"x\":[1,{\"y\":null}]},"
		    "\"future\":[true,false,-1.5e3],"
		    "\"entries\":["
		    "{\"path\":\"workspace/b\",\"type\":\"file\",\"mode\":493,"
		    "\"size\":12,\"mtime_ns\":1763802000123456789,"
		    "\"xxh3_128\":\"000102030405060708090a0b0c0d0e0f\"},"
		    "{\"path\":\"workspace/a\",\"type\":\"symlink\","
		    "\"target\":\"b\",\"mtime_ns\":-5},"
		    "{\"path\":\"workspace/d\",\"type\":\"dir\",\"mode\":493,"
		    "\"mtime_ns\":0},"
		    "{\"path\":\"workspace/h\",\"type\":\"hardlink\"}"
		    "]}";
	struct manifest m;
	struct ckpt_err err = {0};
	const struct mentry *e;

	ck_assert_int_eq(parse(t, &m, &err), 0);
	ck_assert_str_eq(m.name, "gen3");
	ck_assert_str_eq(m.origin, "agent");
	ck_assert_str_eq(m.parent, "gen2");
	ck_assert(m.created_ns == 1763802000123456789LL);
	/* the unknown type is ignored, the rest sorted */
	ck_assert_uint_eq(m.nentries, 3);
	ck_assert_str_eq(m.entries[0].path, "workspace/a");
	e = manifest_find(&m, "workspace/b", 11);
	ck_assert_ptr_nonnull(e);
	ck_assert(e->mtime_ns ==
		  1763802000123456789LL); /* exact, not a double */
	ck_assert_uint_eq(e->size, 12);
	ck_assert_uint_eq(e->mode, 493);
	ck_assert_uint_eq(e->hash[15], 0x0f);
	e = manifest_find(&m, "workspace/a", 11);
	ck_assert_int_eq(e->type, CKPT_SYMLINK);
	ck_assert_int_eq((int)e->target_len, 1);
	ck_assert(e->mtime_ns == -5);
	ck_assert_ptr_null(manifest_find(&m, "workspace/h", 11));
	manifest_free(&m);
}
END_TEST

START_TEST(chunk_table)
{
	struct manifest m;
	const struct mentry *e;
	uint64_t v;

	ck_assert_int_eq(parse(HDR
			       "\"entries\":[{\"path\":\"a\",\"type\":\"file\","
			       "\"chunks\":{\"size\":262144,\"later\":[1],"
			       "\"offsets\":[0,77],\"xxh3_64\":"
			       "\"00000000000000ffFFFFFFFFFFFFFFFF\"}}]}",
			       &m, NULL),
			 0);
	e = manifest_find(&m, "a", 1);
	ck_assert_ptr_nonnull(e);
	ck_assert_uint_eq(e->nchunks, 2);
	ck_assert_uint_eq(e->chunk_size, 262144);
	memcpy(&v, e->chunks + 16, 8);
	ck_assert_uint_eq(v, 77);
	memcpy(&v, e->chunks + 8, 8);
	ck_assert_uint_eq(v, 255);
	memcpy(&v, e->chunks + 24, 8);
	ck_assert_uint_eq(v, UINT64_MAX);
	manifest_free(&m);
}
END_TEST

START_TEST(no_entries_key)
{
	struct manifest m;

	ck_assert_int_eq(parse(HDR "\"parent\":null}", &m, NULL), 0);
	ck_assert(!m.has_entries);
	ck_assert_ptr_null(m.parent);
	ck_assert_ptr_null(manifest_find(&m, "workspace/x", 11));
	manifest_free(&m);
}
END_TEST

/* Each of these must be refused, with a reason. */
static const struct {
	const char *text;
	const char *rule;
} bad[] = {
	{"", "manifest"},
	{"garbage", "manifest"},
	{"[]", "manifest"},
	{"{\"format\":\"ckpt\"}", "manifest-version"},
	{"{\"format\":\"zip\",\"version\":1}", "manifest"},
	{"{\"version\":1}", "manifest"},
	{"{\"format\":\"ckpt\",\"version\":2}", "manifest-version"},
	{"{\"format\":\"ckpt\",\"version\":99}", "manifest-version"},
	{"{\"format\":\"ckpt\",\"version\":\"1\"}", "manifest"},
	{"{\"format\":\"ckpt\",\"version\":1.5}", "manifest"},
	{HDR "\"entries\":{}}", "manifest"},
	{HDR "\"entries\":[1]}", "manifest"},
	{HDR "\"entries\":[{\"type\":\"file\"}]}", "manifest"},
	{HDR "\"entries\":[{\"path\":5}]}", "manifest"},
	{HDR "\"entries\":[{\"path\":\"a\",\"size\":-1}]}", "manifest"},
	{HDR "\"entries\":[{\"path\":\"a\",\"mode\":65536}]}", "manifest"},
	{HDR "\"entries\":[{\"path\":\"a\",\"mtime_ns\":1.5}]}", "manifest"},
	{HDR "\"entries\":[{\"path\":\"a\",\"mtime_ns\":"
	     "99999999999999999999}]}",
	 "manifest"},
	{HDR "\"entries\":[{\"path\":\"a\",\"xxh3_128\":\"zz\"}]}", "manifest"},
	{HDR "\"entries\":[{\"path\":\"a\",\"type\":\"file\"},"
	     "{\"path\":\"a\",\"type\":\"file\"}]}",
	 "duplicate"},
	{HDR "\"entries\":[],\"entries\":[]}", "manifest"},
	{HDR "\"name\":\"x\"} trailing", "manifest"},
	{HDR "\"name\":\"x\",}", "manifest"},
	{HDR "\"name\":\"\\ud800\"}", "manifest"}, /* lone surrogate */
	{HDR "\"name\":\"\xff\"}", "manifest"},	   /* invalid UTF-8 */
	{HDR "\"name\":\"a\x01\"}", "manifest"},   /* raw control */
	{HDR "\"name\":\"\\x\"}", "manifest"},	   /* bad escape */
	{HDR "\"name\":tru}", "manifest"},
	{HDR "\"name\":01}", "manifest"},
	/* found by fuzzing: a record naming two paths */
	{HDR "\"entries\":[{\"path\":\"a\",\"path\":\"b\"}]}", "manifest"},
	{HDR "\"entries\":[{\"path\":\"a\",\"size\":1,\"size\":2}]}",
	 "manifest"},
/* chunk tables: shape */
#define CH(x) HDR "\"entries\":[{\"path\":\"a\",\"chunks\":" x "}]}"
#define H16   "0123456789abcdef"
	{CH("[]"), "manifest"},
	{CH("{\"size\":4096,\"offsets\":[0]}"), "manifest"},
	{CH("{\"size\":4096,\"xxh3_64\":\"" H16 "\"}"), "manifest"},
	{CH("{\"offsets\":[0],\"xxh3_64\":\"" H16 "\"}"), "manifest"},
	{CH("{\"size\":100,\"offsets\":[0],\"xxh3_64\":\"" H16 "\"}"),
	 "manifest"},
	{CH("{\"size\":99999999,\"offsets\":[0],\"xxh3_64\":\"" H16 "\"}"),
	 "manifest"},
	{CH("{\"size\":4096,\"offsets\":[1],\"xxh3_64\":\"" H16 "\"}"),
	 "manifest"},
	{CH("{\"size\":4096,\"offsets\":[0,5,5],\"xxh3_64\":\"" H16 H16 H16
	    "\"}"),
	 "manifest"},
	{CH("{\"size\":4096,\"offsets\":[0,5],\"xxh3_64\":\"" H16 "\"}"),
	 "manifest"},
	{CH("{\"size\":4096,\"offsets\":[0],\"xxh3_64\":\"" H16 "0\"}"),
	 "manifest"},
	{CH("{\"size\":4096,\"offsets\":[0],\"xxh3_64\":\"0123456789abcdeg\"}"),
	 "manifest"},
	{CH("{\"size\":4096,\"size\":4096,\"offsets\":[0],\"xxh3_64\":\"" H16
	    "\"}"),
	 "manifest"},
	{CH("{\"size\":4096,\"offsets\":[0,-1],\"xxh3_64\":\"" H16 H16 "\"}"),
	 "manifest"},
	{CH("{\"size\":4096,\"offsets\":[0,\"1\"],\"xxh3_64\":\"" H16 H16
	    "\"}"),
	 "manifest"},
};

START_TEST(refused)
{
	struct manifest m;
	struct ckpt_err err = {0};

	ck_assert_int_lt(parse(bad[_i].text, &m, &err), 0);
	ck_assert_msg(strcmp(err.rule, bad[_i].rule) == 0,
		      "case %d: rule %s, want %s", _i, err.rule, bad[_i].rule);
	ck_assert(err.msg[0] != '\0');
}
END_TEST

START_TEST(truncated_everywhere)
{
	const char *t = HDR "\"name\":\"n\",\"entries\":[{\"path\":"
			    "\"workspace/a\",\"type\":\"file\",\"size\":1}]}";
	size_t len = strlen(t);

	/* Every proper prefix is malformed and must be refused cleanly. */
	for (size_t n = 0; n < len; n++) {
		struct manifest m;
		ck_assert_int_lt(manifest_parse(t, n, &m, NULL), 0);
	}
}
END_TEST

START_TEST(deep_nesting)
{
	size_t depth = 100000;
	char *t = malloc(2 * depth + 64);
	size_t o;
	struct manifest m;
	struct ckpt_err err = {0};

	o = (size_t)sprintf(t, HDR "\"run\":");
	memset(t + o, '[', depth);
	memset(t + o + depth, ']', depth);
	strcpy(t + o + 2 * depth, "}");
	ck_assert_int_lt(parse(t, &m, &err), 0);
	ck_assert(strstr(err.msg, "deep") != NULL);
	free(t);
}
END_TEST

START_TEST(huge_manifest)
{
	size_t n = 200000, o = 0;
	char *t = malloc(n * 80 + 64);
	struct manifest m;

	o += (size_t)sprintf(t, HDR "\"entries\":[");
	for (size_t i = 0; i < n; i++)
		o += (size_t)sprintf(t + o,
				     "%s{\"path\":\"workspace/f%07zu\","
				     "\"type\":\"file\",\"size\":%zu}",
				     i ? "," : "", n - i, i);
	strcpy(t + o, "]}");
	ck_assert_int_eq(parse(t, &m, NULL), 0);
	ck_assert_uint_eq(m.nentries, n);
	ck_assert_ptr_nonnull(manifest_find(&m, "workspace/f0000001", 18));
	ck_assert_uint_eq(manifest_find(&m, "workspace/f0000001", 18)->size,
			  n - 1);
	manifest_free(&m);
	free(t);
}
END_TEST

START_TEST(times)
{
	int64_t ns;

	ck_assert_int_eq(parse_rfc3339("1970-01-01T00:00:00Z", 20, &ns), 0);
	ck_assert(ns == 0);
	ck_assert_int_eq(parse_rfc3339("2025-11-22T09:00:00.5+01:00", 27, &ns),
			 0);
	ck_assert(ns == 1763798400500000000LL);
	ck_assert_int_lt(parse_rfc3339("2026-13-22T09:00:00Z", 20, &ns), 0);
	ck_assert_int_lt(parse_rfc3339("2026-11-22 09:00:00Z", 20, &ns), 0);
	ck_assert_int_lt(parse_rfc3339("2025-11-22T09:00:00", 19, &ns), 0);
	/* found by fuzzing: nanoseconds past 2262 overflow int64 */
	ck_assert_int_lt(parse_rfc3339("9651-01-01T00:00:00Z", 20, &ns), 0);
	ck_assert_int_lt(parse_rfc3339("0000-01-01T00:00:00Z", 20, &ns), 0);
	ck_assert_int_eq(parse_rfc3339("2261-12-31T00:00:00Z", 20, &ns), 0);

	char out[40];
	ckpt_format_time(1763802000123456789LL, out);
	ck_assert_str_eq(out, "2025-11-22T09:00:00.123456789Z");
	ck_assert_int_eq(parse_rfc3339(out, strlen(out), &ns), 0);
	ck_assert(ns == 1763802000123456789LL);
}
END_TEST

START_TEST(json_escapes)
{
	struct json j;
	const char *t = "[\"a\\u00e9\\ud83d\\ude00\\n\\\"\",-0,123456789012]";
	int64_t v;

	json_init(&j, t, strlen(t));
	ck_assert_int_eq(json_next(&j), JSON_ARR_BEGIN);
	ck_assert_int_eq(json_next(&j), JSON_STRING);
	ck_assert_str_eq(j.str, "a\xc3\xa9\xf0\x9f\x98\x80\n\"");
	ck_assert_int_eq(json_next(&j), JSON_NUMBER);
	ck_assert_int_eq(json_int64(&j, &v), 0);
	ck_assert(v == 0);
	ck_assert_int_eq(json_next(&j), JSON_NUMBER);
	ck_assert_int_eq(json_int64(&j, &v), 0);
	ck_assert(v == 123456789012LL);
	ck_assert_int_eq(json_next(&j), JSON_ARR_END);
	ck_assert_int_eq(json_next(&j), JSON_END);
	json_fini(&j);
}
END_TEST

static bool keep_odd(void *ctx, const char *path, size_t len)
{
	(void)ctx;
	return (path[len - 1] - '0') % 2 == 1;
}

START_TEST(filter)
{
	const char *t = "{\"format\": \"ckpt\", \"version\": 1,\n"
			"  \"entries\": [\n"
			"    {\"path\": \"w/0\", \"type\": \"file\"},\n"
			"    {\"path\": \"w/1\", \"type\": \"file\"},\n"
			"    {\"type\": \"dir\", \"path\": \"w/2\"},\n"
			"    {\"path\": \"w/3\", \"type\": \"file\"},\n"
			"    {\"path\": \"w/4\", \"type\": \"file\"}\n"
			"  ],\n  \"run\": {\"id\": \"r-1\"}\n}\n";
	const char *want = "{\"format\": \"ckpt\", \"version\": 1,\n"
			   "  \"entries\": [\n"
			   "    {\"path\": \"w/1\", \"type\": \"file\"},\n"
			   "    {\"path\": \"w/3\", \"type\": \"file\"}\n"
			   "  ],\n  \"run\": {\"id\": \"r-1\"}\n}\n";
	char out[1024];
	ssize_t n = manifest_filter(t, strlen(t), keep_odd, NULL, NULL);

	ck_assert_int_eq(n, (ssize_t)strlen(want));
	ck_assert_int_eq(manifest_filter(t, strlen(t), keep_odd, NULL, out), n);
	out[n] = '\0';
	ck_assert_str_eq(out, want);
	/* nothing kept still gives valid JSON */
	const char *t2 = "{\"format\":\"ckpt\",\"version\":1,\"entries\":"
			 "[{\"path\":\"w/0\"}]}";
	struct manifest m;
	n = manifest_filter(t2, strlen(t2), keep_odd, NULL, out);
	ck_assert_int_eq(manifest_parse(out, (size_t)n, &m, NULL), 0);
	ck_assert_uint_eq(m.nentries, 0);
	manifest_free(&m);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("manifest");
	TCase *tc = tcase_create("core");
	SRunner *sr;
	int failed;

	tcase_add_test(tc, valid_full);
	tcase_add_test(tc, no_entries_key);
	tcase_add_test(tc, chunk_table);
	tcase_add_loop_test(tc, refused, 0, sizeof(bad) / sizeof(bad[0]));
	tcase_add_test(tc, truncated_everywhere);
	tcase_add_test(tc, deep_nesting);
	tcase_add_test(tc, huge_manifest);
	tcase_add_test(tc, times);
	tcase_add_test(tc, json_escapes);
	tcase_add_test(tc, filter);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
