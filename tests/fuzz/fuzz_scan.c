/*
 * fuzz_scan.c - libFuzzer target: the secret scanner must not depend on
 * how a file is cut into reads.
 *
 * Input: one byte N, then N bytes that give the chunk sizes (cycled), then
 * the file.  The file is scanned in those chunks, then by the same scanner
 * after a reset in one call, then by a fresh scanner; all three must give
 * the same finding (rule, line, fingerprint) or none.  When there is one,
 * its fingerprint is allowed and the file scanned again both ways: the
 * allowed finding must not come back, and the two must still agree.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuzz.h"
#include "scan.h"

static char dir[64], allow_path[96];

static void cleanup(void)
{
	if (allow_path[0])
		unlink(allow_path);
	if (dir[0])
		rmdir(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fuzz_tempdir(dir, sizeof(dir));
	snprintf(allow_path, sizeof(allow_path), "%s/allow", dir);
	atexit(cleanup);
	return 0;
}

struct result {
	int found;
	struct ckpt_finding f;
};

static bool same(const struct result *a, const struct result *b)
{
	return a->found == b->found &&
	       (!a->found ||
		(strcmp(a->f.rule, b->f.rule) == 0 && a->f.line == b->f.line &&
		 strcmp(a->f.fingerprint, b->f.fingerprint) == 0));
}

static void show(const char *what, const struct result *r)
{
	if (r->found)
		fprintf(stderr, "%s: %s line %u fingerprint %s\n", what,
			r->f.rule, r->f.line, r->f.fingerprint);
	else
		fprintf(stderr, "%s: no finding\n", what);
}

static void check_finding(const struct result *r)
{
	const struct ckpt_scan_rule_info *rules;
	size_t n = ckpt_scan_rules(&rules);
	bool known = false;

	if (!r->found)
		return;
	CHECK(r->f.line >= 1);
	CHECK(strlen(r->f.fingerprint) == 16 &&
	      strspn(r->f.fingerprint, "0123456789abcdef") == 16);
	for (size_t i = 0; i < n; i++)
		known |= strcmp(rules[i].id, r->f.rule) == 0;
	CHECK(known);
}

/* Scans text in chunks of the given sizes (nsizes 0: in one call). */
static struct result scan(struct ckpt_scan *s, const uint8_t *text, size_t len,
			  const uint8_t *sizes, size_t nsizes)
{
	struct result r = {0};
	struct ckpt_finding extra;
	size_t off = 0, k = 0;

	while (off < len && !r.found) {
		size_t n = len - off;

		if (nsizes) {
			uint8_t b = sizes[k++ % nsizes];
			/* 1..128, or a few KiB: many short reads and some
			 * that cross the 2 KiB lookahead. */
			size_t want = b < 128 ? (size_t)b + 1
					      : (size_t)(b - 127) * 97;
			if (want < n)
				n = want;
		}
		r.found = ckpt_scan_feed(s, text + off, n, &r.f);
		CHECK(r.found == 0 || r.found == 1);
		off += n;
	}
	if (r.found) {
		/* After a finding the rest of the file is not scanned. */
		if (off < len)
			CHECK(ckpt_scan_feed(s, text + off, len - off,
					     &extra) == 0);
		CHECK(ckpt_scan_finish(s, &extra) == 0);
	} else {
		r.found = ckpt_scan_finish(s, &r.f);
		CHECK(r.found == 0 || r.found == 1);
		CHECK(ckpt_scan_finish(s, &extra) == 0);
	}
	check_finding(&r);
	return r;
}

static void compare(const char *what, const struct result *a,
		    const struct result *b)
{
	if (same(a, b))
		return;
	fprintf(stderr, "scanner depends on read boundaries (%s)\n", what);
	show("chunked", a);
	show("one call", b);
	abort();
}

static struct ckpt_scan_allow *allow_one(const char *fp)
{
	struct ckpt_scan_allow *allow = NULL;
	struct ckpt_err err = {0};
	FILE *f = fopen(allow_path, "w");

	CHECK(f);
	fprintf(f, "# reviewed\n%s  # fuzz\n", fp);
	CHECK(fclose(f) == 0);
	CHECK(ckpt_scan_allow_load(allow_path, &allow, &err) == 0);
	return allow;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ckpt_scan *s = NULL, *fresh = NULL;
	struct result chunked, whole, again;
	const uint8_t *sizes, *text;
	size_t nsizes, len;

	if (size < 1)
		return 0;
	nsizes = data[0] % 16;
	if (nsizes + 1 > size)
		nsizes = size - 1;
	sizes = data + 1;
	text = data + 1 + nsizes;
	len = size - 1 - nsizes;
	if (nsizes == 0) { /* still cut it: one byte at a time */
		static const uint8_t one = 0;
		sizes = &one;
		nsizes = 1;
	}

	CHECK(ckpt_scan_new(NULL, &s) == 0);
	CHECK(ckpt_scan_new(NULL, &fresh) == 0);
	chunked = scan(s, text, len, sizes, nsizes);
	ckpt_scan_reset(s);
	whole = scan(s, text, len, NULL, 0);
	compare("reset scanner", &chunked, &whole);
	again = scan(fresh, text, len, NULL, 0);
	compare("fresh scanner", &chunked, &again);
	ckpt_scan_free(fresh);
	ckpt_scan_free(s);

	if (chunked.found) {
		struct ckpt_scan_allow *allow =
			allow_one(chunked.f.fingerprint);
		struct result ac, aw;

		CHECK(ckpt_scan_new(allow, &s) == 0);
		ac = scan(s, text, len, sizes, nsizes);
		ckpt_scan_reset(s);
		aw = scan(s, text, len, NULL, 0);
		compare("with an allowed fingerprint", &ac, &aw);
		CHECK(!ac.found ||
		      strcmp(ac.f.fingerprint, chunked.f.fingerprint) != 0);
		ckpt_scan_free(s);
		ckpt_scan_allow_free(allow);
	}
	return 0;
}
