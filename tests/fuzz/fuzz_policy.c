/*
 * fuzz_policy.c - libFuzzer target: the one policy decision, on names and
 * link targets an archive or a run directory can hold.
 *
 * Input: a flags byte, a type byte, then the path, a 0xff byte and the
 * link target (no 0xff: no target).  The entry is judged with a resolver
 * over a small fixed tree (which also holds the entry itself, as the
 * index's does) and lexically; ckpt_name_check and ckpt_escape get the
 * same bytes.  What is accepted is checked against invariants written
 * here independently of policy.c; a violation is an abort().
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <unicase.h>
#include <unistr.h>
#include <unictype.h>
#include <uninorm.h>

#include "fuzz.h"
#include "ckpt.h"

/* ---- the fake tree ------------------------------------------------------ */

struct fake {
	const char *path;
	int type;
	const char *target;
};

static const struct fake tree[] = {
	{"world", CKPT_DIR, NULL},
	{"world/w", CKPT_SYMLINK, "../workspace/a"},
	{"world/doc.md", CKPT_FILE, NULL},
	{"workspace", CKPT_DIR, NULL},
	{"workspace/a", CKPT_DIR, NULL},
	{"workspace/a/f", CKPT_FILE, NULL},
	{"workspace/a/b", CKPT_SYMLINK, "."},
	{"workspace/a/up", CKPT_SYMLINK, ".."},
	{"workspace/a/sub", CKPT_DIR, NULL},
	{"workspace/a/sub/deep", CKPT_SYMLINK, "../../a/sub"},
	{"workspace/l1", CKPT_SYMLINK, "a"},
	{"workspace/l2", CKPT_SYMLINK, "a/f"},
	{"workspace/esc", CKPT_SYMLINK, "../.."},
	{"workspace/loop", CKPT_SYMLINK, "loop"},
	{"workspace/pa", CKPT_SYMLINK, "pb"},
	{"workspace/pb", CKPT_SYMLINK, "pa"},
	{"workspace/abs", CKPT_SYMLINK, "/etc/passwd"},
	{"workspace/cross", CKPT_SYMLINK, "../session/s"},
	{"workspace/bs", CKPT_SYMLINK, "a\\f"},
	{"workspace/ctl", CKPT_SYMLINK, "a\x1b[2J"},
	{"workspace/bad", -EIO, NULL},
	{"session", CKPT_DIR, NULL},
	{"session/s", CKPT_FILE, NULL},
	{"session/t", CKPT_SYMLINK, "s"},
};
#define NTREE (sizeof(tree) / sizeof(tree[0]))

struct input {
	const char *path, *target;
	size_t len, tlen;
	int type;
};

static int put_target(const char *t, size_t n, char *target, size_t size,
		      size_t *tlen)
{
	if (n >= size)
		return -ENAMETOOLONG;
	memcpy(target, t, n);
	target[n] = '\0';
	*tlen = n;
	return CKPT_SYMLINK;
}

static int lookup(void *ctx, const char *path, size_t len, char *target,
		  size_t size, size_t *tlen)
{
	const struct input *in = ctx;

	/* The policy only asks about paths it built: checked bytes. */
	CHECK(len > 0 && path[len] == '\0' && strlen(path) == len);
	CHECK(path[0] != '/' && path[len - 1] != '/');
	if (in->type == CKPT_SYMLINK && len == in->len &&
	    memcmp(path, in->path, len) == 0)
		return put_target(in->target, in->tlen, target, size, tlen);
	for (size_t i = 0; i < NTREE; i++) {
		if (strlen(tree[i].path) != len ||
		    memcmp(tree[i].path, path, len) != 0)
			continue;
		if (tree[i].type == CKPT_SYMLINK)
			return put_target(tree[i].target,
					  strlen(tree[i].target), target, size,
					  tlen);
		return tree[i].type;
	}
	return -ENOENT;
}

/* ---- independent oracles ------------------------------------------------ */

static bool forbidden_cp(ucs4_t c)
{
	return c < 0x20 || c == 0x7f || (c >= 0x80 && c <= 0x9f) ||
	       c == 0x061c || c == 0x200e || c == 0x200f ||
	       (c >= 0x202a && c <= 0x202e) || (c >= 0x2066 && c <= 0x2069);
}

/* Valid UTF-8 (no overlong forms, no surrogates) free of C0, DEL, C1 and
 * bidi controls. */
static bool valid_utf8_text(const uint8_t *s, size_t n)
{
	if (u8_check(s, n) != NULL)
		return false;
	for (size_t i = 0; i < n;) {
		ucs4_t cp;
		int l = u8_mbtouc(&cp, s + i, n - i);

		if (forbidden_cp(cp))
			return false;
		i += (size_t)l;
	}
	return true;
}

/* The names that are hidden in every directory, normalised. */
static const char *const anywhere[] = {
	".credentials.json",
	".claude.json",
	".netrc",
	"_netrc",
	".git-credentials",
	".pgpass",
	".npmrc",
	".pypirc",
	".htpasswd",
	".env",
	".envrc",
	"id_rsa",
	"id_dsa",
	"id_ecdsa",
	"id_ed25519",
	"id_ecdsa_sk",
	"id_ed25519_sk",
	"application_default_credentials.json",
};

/* Removes default-ignorable code points and maps what the NTFS upcase
 * table merges with 'i'.  In place; returns the new length. */
static size_t scrub(uint8_t *s, size_t n)
{
	size_t i = 0, w = 0;

	while (i < n) {
		ucs4_t cp;
		int l = u8_mbtouc(&cp, s + i, n - i);

		if (l <= 0)
			l = 1;
		if (cp == 0x131) {
			s[w++] = 'i';
		} else if (cp == 0x307 && w > 0 && s[w - 1] == 'i') {
			/* dropped */
		} else if (!uc_is_property_default_ignorable_code_point(cp)) {
			memmove(s + w, s + i, (size_t)l);
			w += (size_t)l;
		}
		i += (size_t)l;
	}
	return w;
}

/*
 * A component as a normalising, case-insensitive filesystem could see it:
 * NFKC, case fold, NFKC again (Unicode's NFKC_Casefold closure), until
 * nothing changes.  Written apart from policy.c's on purpose.  Returns a
 * malloc'd string, or NULL when libunistring fails.
 */
static uint8_t *fold(const uint8_t *c, size_t n, size_t *out_len)
{
	uint8_t *s = malloc(n ? n : 1);
	size_t len = n;

	if (!s)
		return NULL;
	memcpy(s, c, n);
	for (int round = 0; round < 4; round++) {
		size_t l1 = 0, l2 = 0, l3 = 0;
		uint8_t *a, *b, *d;

		len = scrub(s, len);
		a = u8_normalize(UNINORM_NFKC, s, len, NULL, &l1);
		b = a ? u8_casefold(a, l1, NULL, NULL, NULL, &l2) : NULL;
		d = b ? u8_normalize(UNINORM_NFKC, b, l2, NULL, &l3) : NULL;
		free(a);
		free(b);
		if (!d) {
			free(s);
			return NULL;
		}
		l3 = scrub(d, l3);
		if (l3 == len && memcmp(d, s, len) == 0) {
			free(d);
			break;
		}
		free(s);
		s = d;
		len = l3;
	}
	*out_len = len;
	return s;
}

static size_t strip(const uint8_t *s, size_t n)
{
	for (;;) {
		if (n >= 7 && memcmp(s + n - 7, "::$data", 7) == 0)
			n -= 7;
		else if (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '.'))
			n--;
		else
			return n;
	}
}

/* The credential names a component may never fold to, whatever its
 * directory. */
static void check_not_credential(const char *c, size_t n, const char *path,
				 size_t plen)
{
	size_t fl, sl;
	uint8_t *f = fold((const uint8_t *)c, n, &fl);

	if (!f)
		return; /* no memory: nothing to say */
	sl = strip(f, fl);
	for (size_t i = 0; i < sizeof(anywhere) / sizeof(anywhere[0]); i++) {
		size_t al = strlen(anywhere[i]);
		if (sl == al && memcmp(f, anywhere[i], al) == 0) {
			char esc[256];
			ckpt_escape(path, plen, esc, sizeof(esc));
			fprintf(stderr,
				"accepted '%s': a component folds to %s\n", esc,
				anywhere[i]);
			abort();
		}
	}
	CHECK(!(sl > 5 && memcmp(f, ".env.", 5) == 0));
	CHECK(!(sl >= 4 && memcmp(f + sl - 4, ".ppk", 4) == 0));
	free(f);
}

/* What every accepted name must be, by the design's rules. */
static void check_accepted(unsigned flags, const struct input *in)
{
	const char *p = in->path;
	size_t len = in->len, start = 0;
	const char *slash = memchr(p, '/', len);
	size_t first_len = slash ? (size_t)(slash - p) : len;

	CHECK(in->type != CKPT_SPECIAL);
	CHECK(len > 0 && len <= 4095);
	CHECK(p[0] != '/');
	CHECK(p[len - 1] != '/');
	CHECK(!memchr(p, '\\', len));
	CHECK(!memchr(p, '\0', len));
	CHECK(!memmem(p, len, "//", 2));
	CHECK(valid_utf8_text((const uint8_t *)p, len));

	if (first_len == len && len == 13 &&
	    memcmp(p, "manifest.json", 13) == 0)
		CHECK(in->type == CKPT_FILE);
	else
		CHECK((first_len == 5 && memcmp(p, "world", 5) == 0) ||
		      (first_len == 9 && memcmp(p, "workspace", 9) == 0) ||
		      (first_len == 7 && memcmp(p, "session", 7) == 0));
	if (first_len == len && !(len == 13 && p[0] == 'm'))
		CHECK(in->type == CKPT_DIR); /* a tier root */
	if (flags & CKPT_POLICY_WORKSPACE_ONLY)
		CHECK(!(first_len == 7 && memcmp(p, "session", 7) == 0));

	for (size_t i = 0; i <= len; i++) {
		size_t n = i - start;

		if (i < len && p[i] != '/')
			continue;
		CHECK(n > 0 && n <= 255);
		/* "a..b" is a fine name; ".." as a component never is. */
		CHECK(!(n == 1 && p[start] == '.'));
		CHECK(!(n == 2 && p[start] == '.' && p[start + 1] == '.'));
		check_not_credential(p + start, n, p, len);
		start = i + 1;
	}

	if (in->type == CKPT_SYMLINK) {
		CHECK(in->tlen > 0 && in->tlen <= 4095);
		CHECK(in->target[0] != '/');
		CHECK(!memchr(in->target, '\\', in->tlen));
		CHECK(!memchr(in->target, '\0', in->tlen));
		CHECK(valid_utf8_text((const uint8_t *)in->target, in->tlen));
	}
}

static void check_err(int rc, const struct ckpt_err *err)
{
	static const char *const rules[] = {
		"traversal",	  "bad-name",	    "outside-tier",
		"credential",	  "symlink-escape", "special-file",
		"workspace-only", "no-memory",
	};
	bool known = false;

	CHECK(rc == -ENOENT || rc == -ENOMEM);
	CHECK(err->code == rc);
	CHECK(memchr(err->rule, '\0', sizeof(err->rule)));
	CHECK(memchr(err->msg, '\0', sizeof(err->msg)));
	CHECK(memchr(err->path, '\0', sizeof(err->path)));
	for (size_t i = 0; i < sizeof(rules) / sizeof(rules[0]); i++)
		known |= strcmp(err->rule, rules[i]) == 0;
	CHECK(known);
}

/* ---- names and escaping ------------------------------------------------- */

static bool name_oracle(const char *s, size_t n)
{
	if (n == 0 || n > 200 || s[0] == '.' || s[0] == '-')
		return false;
	for (size_t i = 0; i < n; i++)
		if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
			    "0123456789._+@-",
			    s[i]) ||
		    s[i] == '\0')
			return false;
	return true;
}

static void check_escape(const char *s, size_t n, size_t outsz)
{
	char *out = malloc(outsz + 1);
	size_t ol;

	CHECK(out);
	out[outsz] = 'Z'; /* never written */
	ckpt_escape(s, n, out, outsz);
	CHECK(out[outsz] == 'Z');
	ol = strnlen(out, outsz);
	CHECK(ol < outsz);
	CHECK(u8_check((const uint8_t *)out, ol) == NULL);
	for (size_t i = 0; i < ol;) {
		const uint8_t *u = (const uint8_t *)out + i;
		ucs4_t cp;
		int l;

		if (*u == '\\') {
			/* \xNN or \uNNNN, or cut by the truncation. */
			if (i + 1 < ol && u[1] == 'x' && i + 3 < ol) {
				CHECK(strspn((const char *)u + 2,
					     "0123456789abcdef") >= 2);
				i += 4;
				continue;
			}
			if (i + 1 < ol && u[1] == 'u' && i + 5 < ol) {
				CHECK(strspn((const char *)u + 2,
					     "0123456789abcdef") >= 4);
				i += 6;
				continue;
			}
			CHECK(false);
		}
		CHECK(*u >= 0x20 && *u != 0x7f);
		l = u8_mbtouc(&cp, u, ol - i);
		CHECK(l > 0);
		/* Nothing that reorders or hides part of a log line. */
		CHECK(!(cp >= 0x80 && cp <= 0x9f));
		CHECK(!(cp >= 0x200b && cp <= 0x200f));
		CHECK(!(cp >= 0x202a && cp <= 0x202e));
		CHECK(!(cp >= 0x2066 && cp <= 0x2069));
		CHECK(cp != 0xfeff && cp != 0x061c);
		i += (size_t)l;
	}
	free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ckpt_err e1, e2;
	struct ckpt_policy_entry pe;
	struct ckpt_resolver res;
	struct input in;
	const uint8_t *sep;
	unsigned flags, byte0;
	char *path, *target;
	int rc1, rc2;

	if (size < 2)
		return 0;
	byte0 = data[0];
	flags = byte0 & 0x3;
	in.type = data[1] % 4;
	data += 2;
	size -= 2;
	sep = memchr(data, 0xff, size);
	in.len = sep ? (size_t)(sep - data) : size;
	in.tlen = sep ? size - in.len - 1 : 0;
	/* Exact-size copies, so that reading past either end is caught. */
	path = malloc(in.len ? in.len : 1);
	target = malloc(in.tlen ? in.tlen : 1);
	CHECK(path && target);
	memcpy(path, data, in.len);
	if (in.tlen)
		memcpy(target, sep + 1, in.tlen);
	in.path = path;
	in.target = target;

	pe = (struct ckpt_policy_entry){path, in.len, (enum ckpt_type)in.type,
					in.type == CKPT_SYMLINK ? target : NULL,
					in.type == CKPT_SYMLINK ? in.tlen : 0};
	res = (struct ckpt_resolver){lookup, &in};
	if (in.type != CKPT_SYMLINK)
		in.tlen = 0;
	rc1 = ckpt_policy_check(flags, &pe, &res, &e1);
	rc2 = ckpt_policy_check(flags, &pe, NULL, &e2);
	if (rc1 < 0)
		check_err(rc1, &e1);
	else
		check_accepted(flags, &in);
	if (rc2 < 0)
		check_err(rc2, &e2);
	else
		check_accepted(flags, &in);
	if (in.type != CKPT_SYMLINK && rc1 != -ENOMEM && rc2 != -ENOMEM) {
		/* Only links consult the resolver. */
		CHECK(rc1 == rc2);
		CHECK(rc1 == 0 || strcmp(e1.rule, e2.rule) == 0);
	}
	/* A decision is a pure function of its arguments. */
	if (rc1 != -ENOMEM) {
		struct ckpt_err e3;
		int rc3 = ckpt_policy_check(flags, &pe, &res, &e3);
		CHECK(rc3 == rc1 || rc3 == -ENOMEM);
	}

	/* Checkpoint names. */
	rc1 = ckpt_name_check(path, in.len);
	CHECK(rc1 == 0 || rc1 == -EINVAL || rc1 == -ENAMETOOLONG);
	CHECK((rc1 == 0) == name_oracle(path, in.len));
	if (rc1 == 0)
		CHECK(!memchr(path, '/', in.len) &&
		      !memchr(path, '\0', in.len) &&
		      !(in.len <= 2 && path[0] == '.'));

	/* Escaping into buffers of every small size. */
	check_escape(path, in.len, 1);
	check_escape(path, in.len, 1 + (byte0 >> 2) % 16);
	check_escape(path, in.len, 4 + (in.len * 7) % 61);
	check_escape(path, in.len, in.len * 6 + 8);
	if (in.tlen)
		check_escape(target, in.tlen, 2 + in.tlen % 13);

	free(path);
	free(target);
	return 0;
}
