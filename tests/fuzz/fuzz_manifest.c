/*
 * fuzz_manifest.c - libFuzzer target: manifest.json text from an untrusted
 * archive, parsed, looked up and filtered the way the index serves it.
 *
 * When the text parses, every record must be found by its path, the
 * filter must keep the text byte for byte when it keeps everything, and a
 * text filtered down to every other record must parse again with exactly
 * the records that were kept: the served manifest is built that way, and
 * a record the filter judged by another path than the parser's would
 * describe an entry the policy hid.  Any violation is an abort().
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "internal.h"

struct seen {
	char *path;
	size_t len;
	bool kept;
};

/* What the filter asked keep() about, in order. */
struct keeper {
	int mode; /* 0: every other, 1: all, 2: none */
	size_t calls;
	struct seen *v;
	size_t n, cap;
};

static bool keep(void *ctx, const char *path, size_t len)
{
	struct keeper *k = ctx;
	bool yes = k->mode == 1 || (k->mode == 0 && k->calls % 2 == 0);

	k->calls++;
	if (k->n == k->cap) {
		k->cap = k->cap ? 2 * k->cap : 64;
		k->v = realloc(k->v, k->cap * sizeof(*k->v));
		CHECK(k->v);
	}
	k->v[k->n].path = malloc(len ? len : 1);
	CHECK(k->v[k->n].path);
	memcpy(k->v[k->n].path, path, len);
	k->v[k->n].len = len;
	k->v[k->n].kept = yes;
	k->n++;
	return yes;
}

static void keeper_free(struct keeper *k)
{
	for (size_t i = 0; i < k->n; i++)
		free(k->v[i].path);
	free(k->v);
	memset(k, 0, sizeof(*k));
}

/* Was path passed to keep(), and with which answers? */
static void asked(const struct keeper *k, const char *path, size_t len,
		  bool *kept, bool *dropped)
{
	*kept = *dropped = false;
	for (size_t i = 0; i < k->n; i++)
		if (k->v[i].len == len && memcmp(k->v[i].path, path, len) == 0)
			*(k->v[i].kept ? kept : dropped) = true;
}

/* Filters twice, measuring then writing; both passes must agree. */
static char *filter(const uint8_t *data, size_t size, struct keeper *k,
		    size_t *out_len)
{
	struct keeper first = {.mode = k->mode};
	ssize_t m, w;
	char *out;

	m = manifest_filter((const char *)data, size, keep, &first, NULL);
	/* It parsed once, so the filter must understand it too. */
	CHECK(m >= 0);
	out = malloc(m ? (size_t)m : 1);
	CHECK(out);
	w = manifest_filter((const char *)data, size, keep, k, out);
	CHECK(w == m);
	CHECK(first.n == k->n);
	for (size_t i = 0; i < k->n; i++)
		CHECK(first.v[i].len == k->v[i].len &&
		      memcmp(first.v[i].path, k->v[i].path, k->v[i].len) == 0);
	keeper_free(&first);
	*out_len = (size_t)m;
	return out;
}

static bool same_str(const char *a, const char *b)
{
	return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

static void check_entries(const struct manifest *m)
{
	for (size_t i = 0; i < m->nentries; i++) {
		const struct mentry *e = &m->entries[i];
		const struct mentry *f = manifest_find(m, e->path, e->len);

		CHECK(e->path[e->len] == '\0');
		CHECK(e->type == CKPT_FILE || e->type == CKPT_DIR ||
		      e->type == CKPT_SYMLINK);
		CHECK(f == e);
		if (i > 0) {
			const struct mentry *p = &m->entries[i - 1];
			size_t n = p->len < e->len ? p->len : e->len;
			int c = memcmp(p->path, e->path, n);
			CHECK(c < 0 || (c == 0 && p->len < e->len));
		}
		if (e->target)
			CHECK(e->target[e->target_len] == '\0');
		CHECK(!e->has_mode || e->mode <= 07777);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct manifest m, fm;
	struct ckpt_err err = {0};
	struct keeper k = {0};
	char *out;
	size_t olen;
	int rc;

	rc = manifest_parse((const char *)data, size, &m, &err);
	if (rc < 0) {
		CHECK(err.code == rc);
		CHECK(memchr(err.msg, '\0', sizeof(err.msg)) != NULL);
		return 0;
	}
	CHECK(m.version == 1);
	check_entries(&m);
	if (m.has_entries) {
		/* Lookups never return a record of another path. */
		CHECK(manifest_find(&m, "", 0) == NULL ||
		      manifest_find(&m, "", 0)->len == 0);
	} else {
		CHECK(m.nentries == 0);
	}

	/* Keeping everything keeps the text as it was. */
	k.mode = 1;
	out = filter(data, size, &k, &olen);
	CHECK(olen == size && memcmp(out, data, size) == 0);
	free(out);
	keeper_free(&k);

	/* Every other record, then the text must parse again. */
	k.mode = 0;
	out = filter(data, size, &k, &olen);
	memset(&err, 0, sizeof(err));
	rc = manifest_parse(out, olen, &fm, &err);
	if (rc < 0) {
		fprintf(stderr, "filtered manifest does not parse: %s\n",
			err.msg);
		fwrite(out, 1, olen, stderr);
		fputc('\n', stderr);
		abort();
	}
	check_entries(&fm);
	CHECK(fm.version == m.version && fm.created_ns == m.created_ns);
	CHECK(same_str(fm.name, m.name) && same_str(fm.origin, m.origin) &&
	      same_str(fm.parent, m.parent) &&
	      same_str(fm.scan_rules, m.scan_rules));
	CHECK(fm.has_entries == m.has_entries);
	for (size_t i = 0; i < m.nentries; i++) {
		const struct mentry *e = &m.entries[i];
		bool kept, dropped;

		asked(&k, e->path, e->len, &kept, &dropped);
		/* The filter decided this record under the path the parser
		 * gives it, or it decided about a different file. */
		if (!kept && !dropped) {
			char esc[256];
			ckpt_escape(e->path, e->len, esc, sizeof(esc));
			fprintf(stderr,
				"record '%s' was never judged by that path\n",
				esc);
			abort();
		}
		if (kept && !dropped)
			CHECK(manifest_find(&fm, e->path, e->len) != NULL);
		if (dropped && !kept)
			CHECK(manifest_find(&fm, e->path, e->len) == NULL);
	}
	/* Nothing appears that was not there. */
	for (size_t i = 0; i < fm.nentries; i++)
		CHECK(manifest_find(&m, fm.entries[i].path,
				    fm.entries[i].len) != NULL);
	manifest_free(&fm);
	free(out);
	keeper_free(&k);

	/* Dropping every record still parses. */
	k.mode = 2;
	out = filter(data, size, &k, &olen);
	rc = manifest_parse(out, olen, &fm, &err);
	CHECK(rc == 0);
	CHECK(fm.nentries == 0);
	manifest_free(&fm);
	free(out);
	keeper_free(&k);

	manifest_free(&m);
	return 0;
}
