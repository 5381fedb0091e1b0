/*
 * check_policy.c - the path policy against hostile and benign names.
 *
 * One table row per name: the bytes exactly (embedded NULs included), the
 * entry type and flags, and the rule expected (NULL: served).  Symlinks
 * are judged against a small fake tree, both with it and lexically.
 */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckpt.h"

#define F  CKPT_FILE
#define D  CKPT_DIR
#define S  CKPT_SYMLINK
#define X  CKPT_SPECIAL
#define WO CKPT_POLICY_WORKSPACE_ONLY

struct name_case {
	const char *path;
	size_t len;
	enum ckpt_type type;
	unsigned flags;
	const char *rule; /* NULL: allowed */
};

/* sizeof keeps embedded NUL bytes in the name. */
/* clang-format off */
#define R(p, t, f, rule) {p, sizeof(p) - 1, t, f, rule}
#define OK(p)            R(p, F, 0, NULL)
#define NO(p, rule)      R(p, F, 0, rule)
/* clang-format on */

static const struct name_case names[] = {
	/* Ordinary names, including ones that only look like traversal. */
	OK("workspace/x"),
	R("workspace", D, 0, NULL),
	R("world", D, 0, NULL),
	R("session", D, 0, NULL),
	OK("session/transcript.jsonl"),
	OK("world/doc.md"),
	OK("manifest.json"),
	OK("workspace/manifest.json"),
	OK("workspace/a..b"),
	OK("workspace/..."),
	OK("workspace/..a"),
	OK("workspace/.a"),
	OK("workspace/a./b"),
	OK("workspace/.github/workflows/ci.yml"),
	OK("workspace/caf\xc3\xa9"),
	OK("workspace/cafe\xcc\x81"),
	OK("workspace/\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e.txt"),
	OK("workspace/smile \xf0\x9f\x98\x80"),
	R("workspace/a", S, 0, NULL), /* given the target "y" */

	/* Benign look-alikes of credential names. */
	OK("workspace/.credentials.json.md"),
	OK("workspace/credentials.json.example"),
	OK("workspace/credentials.json"),
	OK("workspace/id_rsa.pub"),
	OK("workspace/ID_ED25519.PUB"),
	OK("workspace/my.env"),
	OK("workspace/envrc"),
	OK("workspace/.environment"),
	OK("workspace/x.env.bak"),
	OK("workspace/keys.ppk.txt"),
	OK("workspace/src/settings.json"),
	OK("workspace/settings.json"),
	OK("workspace/config.toml"),
	OK("world/x/settings.json"),
	OK("session/sub/settings.json"),
	OK("workspace/config"),
	OK("workspace/aws/credentials"),
	OK("workspace/.aws/README"),
	OK("workspace/.docker/daemon.json"),
	OK("workspace/.kube/cache"),
	OK("workspace/config.json"),
	OK("workspace/credentials.db"),
	R("workspace/.claude", D, 0, NULL),
	R("workspace/.aws", D, 0, NULL),

	/* Credential names, in every disguise a restore might undo. */
	NO("workspace/.credentials.json", "credential"),
	NO("session/.credentials.json", "credential"),
	NO("world/deep/dir/.credentials.json", "credential"),
	NO("workspace/.Credentials.JSON", "credential"),
	NO("workspace/.CREDENTIALS.json", "credential"),
	NO("workspace/.credentials.json.", "credential"),
	NO("workspace/.credentials.json ", "credential"),
	NO("workspace/.credentials.json::$DATA", "credential"),
	NO("workspace/.credentials.json::$DATA. .", "credential"),
	NO("workspace/.cred\xe2\x80\x8b"
	   "entials.json",
	   "credential"),
	NO("workspace/\xef\xbc\x8e\xef\xbd\x85\xef\xbd\x8e\xef\xbd\x96",
	   "credential"),
	NO("workspace/\xef\xbc\x8e"
	   "env",
	   "credential"),
	NO("workspace/.en\xc2\xadv", "credential"),
	NO("workspace/\xef\xbb\xbf.env", "credential"),
	NO("workspace/.env\xe2\x81\xa0", "credential"),
	NO("workspace/.env", "credential"),
	NO("workspace/.ENV", "credential"),
	NO("workspace/.env.local", "credential"),
	NO("workspace/.env.production", "credential"),
	NO("workspace/.env.example", "credential"),
	NO("workspace/.envrc", "credential"),
	R("workspace/.env/x", F, 0, "credential"),
	R("workspace/.env", D, 0, "credential"),
	NO("workspace/.netrc", "credential"),
	NO("workspace/_NETRC", "credential"),
	NO("workspace/.git-credentials", "credential"),
	NO("workspace/.git-credential\xc5\xbf", "credential"),
	NO("workspace/.claude.json", "credential"),
	NO("workspace/.pgpass", "credential"),
	NO("workspace/.npmrc", "credential"),
	NO("workspace/.pypirc", "credential"),
	NO("workspace/.htpasswd", "credential"),
	NO("workspace/id_rsa", "credential"),
	NO("workspace/ID_RSA", "credential"),
	NO("workspace/\xc4\xb0"
	   "d_rsa",
	   "credential"),
	NO("workspace/I\xcc\x87"
	   "D_RSA",
	   "credential"),
	NO("workspace/\xc4\xb1"
	   "d_rsa",
	   "credential"),
	NO("workspace/.ssh/id_dsa", "credential"),
	NO("workspace/id_ecdsa", "credential"),
	NO("workspace/id_ed25519", "credential"),
	NO("workspace/id_ecdsa_sk", "credential"),
	NO("workspace/id_ed25519_sk", "credential"),
	NO("workspace/server.PPK", "credential"),
	NO("workspace/.ppk", "credential"),
	NO("workspace/.claude/settings.json", "credential"),
	NO("workspace/.claude/settings.local.json", "credential"),
	NO("workspace/.claude/permissions.json", "credential"),
	NO("session/settings.json", "credential"),
	NO("session/auth.json", "credential"),
	NO("workspace/.codex/auth.json", "credential"),
	NO("workspace/.codex/config.toml", "credential"),
	NO("world/x/.vscode/settings.json", "credential"),
	NO("workspace/.../settings.json", "credential"),
	NO("workspace/\xef\xbc\x8e"
	   "claude/Settings.JSON",
	   "credential"),
	NO("workspace/.aws/credentials", "credential"),
	NO("workspace/.aws/config", "credential"),
	NO("workspace/.AWS/Credentials", "credential"),
	NO("workspace/.docker/config.json", "credential"),
	NO("workspace/.doc\xe2\x84\xaa"
	   "er/config.json",
	   "credential"),
	NO("workspace/.kube/config", "credential"),
	NO("workspace/.config/gcloud/credentials.db", "credential"),
	NO("workspace/.config/gcloud/access_tokens.db", "credential"),
	NO("workspace/x/application_default_credentials.json", "credential"),

	/* Traversal in every form. */
	NO("workspace/../x", "traversal"),
	NO("/workspace/x", "traversal"),
	NO("workspace//x", "traversal"),
	NO("workspace/./x", "traversal"),
	NO("workspace\\x", "traversal"),
	NO("workspace/a\\..\\..\\x", "traversal"),
	NO("workspace/x/", "traversal"),
	NO("workspace/..", "traversal"),
	NO("./workspace", "traversal"),
	NO("/", "traversal"),
	NO("workspace/\xe2\x80\xa5", "traversal"),
	NO("workspace/\xef\xbc\x8e\xef\xbc\x8e/x", "traversal"),
	NO("workspace/\xef\xb9\x92", "traversal"),
	NO("workspace/a\xef\xbc\x8f"
	   "b",
	   "traversal"),
	NO("workspace/a\xef\xbc\xbc"
	   "b",
	   "traversal"),
	NO("workspace/..\xe2\x80\x8b", "traversal"),
	NO("workspace/.. ", "traversal"),
	NO("workspace/..::$DATA", "traversal"),
	NO("workspace/\xe2\x80\x8b", "traversal"),
	NO("workspace/ ", "traversal"),
	NO("workspace/::$DATA", "traversal"),

	/* Bad names: controls, bidi, broken UTF-8. */
	NO("", "bad-name"),
	NO("\0", "bad-name"),
	NO("workspace/a\0b", "bad-name"),
	NO("workspace/x\0", "bad-name"),
	NO("workspace/a\x01", "bad-name"),
	NO("workspace/\x1b[31mred", "bad-name"),
	NO("workspace/a\x7f", "bad-name"),
	NO("workspace/a\n.txt", "bad-name"),
	NO("workspace/a\xc2\x85", "bad-name"),
	NO("workspace/evil\xe2\x80\xaetxt.exe", "bad-name"),
	NO("workspace/\xe2\x81\xa6x", "bad-name"),
	NO("workspace/\xd8\x9cx", "bad-name"),
	NO("workspace/\xe2\x80\x8ex", "bad-name"),
	NO("workspace/\xff", "bad-name"),
	NO("workspace/\xc0\xaf", "bad-name"),
	NO("workspace/\xe0\x80\xaf", "bad-name"),
	NO("workspace/\xed\xa0\x80", "bad-name"),
	NO("workspace/\xf4\x90\x80\x80", "bad-name"),
	NO("workspace/\xe2\x80", "bad-name"),
	NO("workspace/\x80", "bad-name"),
	NO("/a\x01", "bad-name"),

	/* Tiers: byte-exact names, roots are directories. */
	NO("other/x", "outside-tier"),
	NO("Workspace/x", "outside-tier"),
	NO("WORLD/x", "outside-tier"),
	NO("workspaces/x", "outside-tier"),
	NO("work", "outside-tier"),
	NO("x", "outside-tier"),
	NO("manifest.json/x", "outside-tier"),
	R("manifest.json", D, 0, "outside-tier"),
	R("manifest.json", S, 0, "outside-tier"),
	NO("workspace", "outside-tier"),
	R("session", S, 0, "outside-tier"),
	NO("other/.env", "outside-tier"),
	R("session/x", F, 0, NULL),
	R("session/x", F, WO, "workspace-only"),
	R("session", D, WO, "workspace-only"),
	R("session/.credentials.json", F, WO, "workspace-only"),
	R("workspace/x", F, WO, NULL),
	R("manifest.json", F, WO, NULL),

	/* Devices, FIFOs and sockets, after the name rules. */
	R("workspace/fifo", X, 0, "special-file"),
	R("world/dev/null", X, 0, "special-file"),
	R("workspace/.env", X, 0, "credential"),
	R("other/sock", X, 0, "outside-tier"),
};

#define NNAMES ((int)(sizeof(names) / sizeof(names[0])))

static void check_one(const struct name_case *c, const char *target,
		      size_t tlen, const struct ckpt_resolver *r, int row)
{
	struct ckpt_policy_entry e = {c->path, c->len, c->type, target, tlen};
	struct ckpt_err err = {0};
	char shown[256];
	int rc = ckpt_policy_check(c->flags, &e, r, &err);

	ckpt_escape(c->path, c->len, shown, sizeof(shown));
	if (!c->rule) {
		ck_assert_msg(rc == 0, "row %d '%s': refused as %s (%s)", row,
			      shown, err.rule, err.msg);
		return;
	}
	ck_assert_msg(rc == -ENOENT, "row %d '%s': rc %d, want %s", row, shown,
		      rc, c->rule);
	ck_assert_msg(strcmp(err.rule, c->rule) == 0,
		      "row %d '%s': rule %s (%s), want %s", row, shown,
		      err.rule, err.msg, c->rule);
	ck_assert_int_eq(err.code, -ENOENT);
	ck_assert_msg(err.msg[0] != '\0', "row %d: no message", row);
	ck_assert_str_eq(err.path, shown);
}

START_TEST(test_names)
{
	const struct name_case *c = &names[_i];

	/* A symlink row is given a harmless target. */
	check_one(c, c->type == S ? "y" : NULL, c->type == S ? 1 : 0, NULL, _i);
}
END_TEST

START_TEST(test_table_size)
{
	ck_assert_int_ge(NNAMES, 80);
}
END_TEST

START_TEST(test_err_null)
{
	struct ckpt_policy_entry e = {"workspace/../x", 14, F, NULL, 0};

	ck_assert_int_eq(ckpt_policy_check(0, &e, NULL, NULL), -ENOENT);
	e.path = "workspace/x";
	e.len = 11;
	ck_assert_int_eq(ckpt_policy_check(0, &e, NULL, NULL), 0);
}
END_TEST

/* ---- lengths ---------------------------------------------------------- */

static int check_buf(const char *p, size_t len, enum ckpt_type t,
		     struct ckpt_err *err)
{
	struct ckpt_policy_entry e = {p, len, t, NULL, 0};

	memset(err, 0, sizeof(*err));
	return ckpt_policy_check(0, &e, NULL, err);
}

START_TEST(test_component_length)
{
	char p[10 + 256 + 1];
	struct ckpt_err err;

	memcpy(p, "workspace/", 10);
	memset(p + 10, 'a', 256);
	ck_assert_int_eq(check_buf(p, 10 + 255, F, &err), 0);
	ck_assert_int_eq(check_buf(p, 10 + 256, F, &err), -ENOENT);
	ck_assert_str_eq(err.rule, "bad-name");
	/* As a directory in the middle, too. */
	p[10 + 256] = '/';
	ck_assert_int_eq(check_buf(p, 10 + 256 + 1, F, &err), -ENOENT);
}
END_TEST

START_TEST(test_path_length)
{
	char p[4097];
	struct ckpt_err err;

	memset(p, 'a', sizeof(p));
	memcpy(p, "workspace/", 10);
	for (size_t i = 10 + 200; i < sizeof(p); i += 201)
		p[i] = '/';
	if (p[4094] == '/')
		p[4094] = 'a';
	ck_assert_int_eq(check_buf(p, 4095, F, &err), 0);
	ck_assert_int_eq(check_buf(p, 4096, F, &err), -ENOENT);
	ck_assert_str_eq(err.rule, "bad-name");
}
END_TEST

/* U+FDFA folds to 18 letters: a component of 85 of them outgrows the
 * stack buffer and takes libunistring's malloc path. */
START_TEST(test_long_fold)
{
	char p[10 + 255];
	struct ckpt_err err;

	memcpy(p, "workspace/", 10);
	for (size_t i = 0; i < 85; i++)
		memcpy(p + 10 + 3 * i, "\xef\xb7\xba", 3);
	ck_assert_int_eq(check_buf(p, sizeof(p), F, &err), 0);
}
END_TEST

START_TEST(test_trailing_dots)
{
	char p[10 + 255];
	struct ckpt_err err;

	memcpy(p, "workspace/.env", 14);
	memset(p + 14, '.', sizeof(p) - 14);
	ck_assert_int_eq(check_buf(p, sizeof(p), F, &err), -ENOENT);
	ck_assert_str_eq(err.rule, "credential");
}
END_TEST

/* ---- symlinks over a fake tree ---------------------------------------- */

struct fake_node {
	const char *path;
	enum ckpt_type type;
	const char *target;
};

static const struct fake_node tree[] = {
	{"workspace/a", D, NULL},
	{"workspace/a/b", S, "."},
	{"workspace/d", D, NULL},
	{"workspace/f", F, NULL},
	{"workspace/up", S, ".."},
	{"workspace/loop1", S, "loop2"},
	{"workspace/loop2", S, "loop1"},
	{"workspace/self", S, "self"},
	{"workspace/abs", S, "/etc"},
	{"workspace/bs", S, "a\\b"},
	{"workspace/deep", S, "a/b/b/b"},
	{"workspace/err", D, NULL}, /* lookup fails with EIO */
	{"world/w", S, "../workspace"},
};

/* chainN links to chain(N+1) up to chain_end, a file. */
struct fake {
	unsigned chain_end;
	unsigned lookups;
};

static int fake_lookup(void *ctx, const char *path, size_t len, char *target,
		       size_t size, size_t *tlen)
{
	struct fake *f = ctx;
	unsigned n;

	f->lookups++;
	ck_assert_uint_eq(strlen(path), len);
	ck_assert_msg(len == 0 || path[len - 1] != '/', "trailing slash");
	if (strcmp(path, "workspace/err") == 0)
		return -EIO;
	if (strcmp(path, "workspace/huge") == 0) {
		/* A target the buffer could not hold. */
		*tlen = size;
		snprintf(target, size, "%s", "y");
		return CKPT_SYMLINK;
	}
	if (strcmp(path, "workspace/many") == 0) {
		/* 1001 components, all ".". */
		for (size_t i = 0; i < 2000; i += 2)
			memcpy(target + i, "./", 2);
		memcpy(target + 2000, ".", 2);
		*tlen = 2001;
		return CKPT_SYMLINK;
	}
	if (sscanf(path, "workspace/chain%u", &n) == 1) {
		if (n >= f->chain_end)
			return CKPT_FILE;
		*tlen = (size_t)snprintf(target, size, "chain%u", n + 1);
		return CKPT_SYMLINK;
	}
	for (size_t i = 0; i < sizeof(tree) / sizeof(tree[0]); i++) {
		if (strcmp(tree[i].path, path) != 0)
			continue;
		if (tree[i].type == S) {
			*tlen = strlen(tree[i].target);
			snprintf(target, size, "%s", tree[i].target);
		}
		return (int)tree[i].type;
	}
	return -ENOENT;
}

struct link_case {
	const char *path;
	const char *target;
	size_t tlen;
	const char *with;    /* expected rule with the fake tree */
	const char *lexical; /* expected rule with no resolver */
};

/* clang-format off */
#define LK(p, t, w, l) {p, t, sizeof(t) - 1, w, l}
#define ESC            "symlink-escape"
/* clang-format on */

static const struct link_case links[] = {
	LK("workspace/x", "y", NULL, NULL),
	LK("workspace/d/x", "../y", NULL, NULL),
	LK("workspace/x", ".", NULL, NULL),
	LK("workspace/x", "./y/", NULL, NULL),
	LK("workspace/x", "a//b/./c", NULL, NULL),
	LK("world/a/b/c/l", "../../../x", NULL, NULL),
	LK("world/a/b/c/l", "../../../../x", ESC, ESC),
	LK("workspace/x", "..", ESC, ESC),
	LK("workspace/x", "../session/y", ESC, ESC),
	LK("session/x", "../workspace/y", ESC, ESC),
	LK("workspace/x", "/etc/passwd", ESC, ESC),
	LK("workspace/x", "/workspace/y", ESC, ESC),
	LK("workspace/x", "a\\..\\..\\y", ESC, ESC),
	LK("workspace/x", "", ESC, ESC),
	LK("workspace/x", "a\0b", ESC, ESC),
	LK("workspace/x", "a\x1b", ESC, ESC),
	LK("workspace/x", "a\xe2\x80\xae", ESC, ESC),
	LK("workspace/x", "\xff", ESC, ESC),
	/* Inside lexically; out through b -> "." or up -> "..". */
	LK("workspace/t", "a/b/../..", ESC, NULL),
	LK("workspace/a/x", "b/../..", ESC, NULL),
	LK("workspace/x", "up/y", ESC, NULL),
	LK("workspace/a/x", "b/b/b/../y", NULL, NULL),
	LK("workspace/x", "deep/../y", NULL, NULL),
	/* Loops, and links whose own targets are unsafe. */
	LK("workspace/l", "loop1", ESC, NULL),
	LK("workspace/l", "self", ESC, NULL),
	LK("workspace/x", "abs/y", ESC, NULL),
	LK("workspace/x", "bs", ESC, NULL),
	LK("workspace/x", "err/y", ESC, NULL),
	LK("workspace/x", "huge", ESC, NULL),
	LK("workspace/x", "many/many/many/many/y", NULL, NULL),
	/* 5005 components in all: more work than is ever done for a link. */
	LK("workspace/x", "many/many/many/many/many/y", ESC, NULL),
	LK("workspace/x", "f/../y", NULL, NULL),
	LK("workspace/x", "../world/w/x", ESC, ESC),
	LK("world/x", "w/x", ESC, NULL),
};

#define NLINKS ((int)(sizeof(links) / sizeof(links[0])))

START_TEST(test_links)
{
	const struct link_case *l = &links[_i];
	struct fake f = {.chain_end = 10};
	struct ckpt_resolver r = {fake_lookup, &f};
	struct name_case c = {l->path, strlen(l->path), S, 0, l->with};

	check_one(&c, l->target, l->tlen, &r, _i);
	c.rule = l->lexical;
	check_one(&c, l->target, l->tlen, NULL, _i);
	/* A resolver without a lookup function is the lexical judgment. */
	r.lookup = NULL;
	check_one(&c, l->target, l->tlen, &r, _i);
}
END_TEST

START_TEST(test_link_hops)
{
	struct fake f = {0};
	struct ckpt_resolver r = {fake_lookup, &f};
	struct ckpt_policy_entry e = {"workspace/x", 11, S, "chain1", 6};
	struct ckpt_err err;

	/* chain1 .. chain40 are 40 links: the most that is followed. */
	f.chain_end = 41;
	ck_assert_int_eq(ckpt_policy_check(0, &e, &r, &err), 0);
	f.chain_end = 42;
	ck_assert_int_eq(ckpt_policy_check(0, &e, &r, &err), -ENOENT);
	ck_assert_str_eq(err.rule, ESC);
}
END_TEST

START_TEST(test_link_name_first)
{
	struct ckpt_policy_entry e = {"workspace/.env", 14, S, "/etc/passwd",
				      11};
	struct ckpt_err err;

	/* The link's own name is judged before its target. */
	ck_assert_int_eq(ckpt_policy_check(0, &e, NULL, &err), -ENOENT);
	ck_assert_str_eq(err.rule, "credential");
	e.path = "workspace";
	e.len = 9;
	ck_assert_int_eq(ckpt_policy_check(0, &e, NULL, &err), -ENOENT);
	ck_assert_str_eq(err.rule, "outside-tier");
}
END_TEST

START_TEST(test_link_long_target)
{
	static char t[4097];
	struct fake f = {.chain_end = 1};
	struct ckpt_resolver r = {fake_lookup, &f};
	struct ckpt_policy_entry e = {"workspace/x", 11, S, t, 0};
	struct ckpt_err err;

	/* 2047 "a/" then "a": deep but inside, and never over a buffer. */
	for (size_t i = 0; i < sizeof(t); i += 2) {
		t[i] = 'a';
		if (i + 1 < sizeof(t))
			t[i + 1] = '/';
	}
	e.target_len = 4001;
	ck_assert_int_eq(ckpt_policy_check(0, &e, &r, &err), 0);
	/* Resolved path over 4095 bytes. */
	e.target_len = 4095;
	ck_assert_int_eq(ckpt_policy_check(0, &e, &r, &err), -ENOENT);
	ck_assert_str_eq(err.rule, ESC);
	e.target_len = 4096;
	ck_assert_int_eq(ckpt_policy_check(0, &e, NULL, &err), -ENOENT);
	ck_assert_str_eq(err.rule, ESC);
	/* Only "." components: nothing to look up. */
	for (size_t i = 0; i < 4094; i += 2)
		t[i] = '.';
	f.lookups = 0;
	e.target_len = 4093;
	ck_assert_int_eq(ckpt_policy_check(0, &e, &r, &err), 0);
	ck_assert_uint_eq(f.lookups, 0);
}
END_TEST

/* ---- modes and checkpoint names --------------------------------------- */

START_TEST(test_mode)
{
	ck_assert_uint_eq(ckpt_policy_mode(F, 0755), 0555);
	ck_assert_uint_eq(ckpt_policy_mode(F, 04755), 0555);
	ck_assert_uint_eq(ckpt_policy_mode(F, 02755), 0555);
	ck_assert_uint_eq(ckpt_policy_mode(F, 01777), 0555);
	ck_assert_uint_eq(ckpt_policy_mode(F, 0644), 0444);
	ck_assert_uint_eq(ckpt_policy_mode(F, 0600), 0400);
	ck_assert_uint_eq(ckpt_policy_mode(F, 0100644), 0444);
	ck_assert_uint_eq(ckpt_policy_mode(F, 0), 0444);
	ck_assert_uint_eq(ckpt_policy_mode(F, 04000), 0444);
	ck_assert_uint_eq(ckpt_policy_mode(D, 0700), 0555);
	ck_assert_uint_eq(ckpt_policy_mode(D, 0), 0555);
	ck_assert_uint_eq(ckpt_policy_mode(D, 07777), 0555);
	ck_assert_uint_eq(ckpt_policy_mode(S, 0), 0777);
}
END_TEST

static int name_check(const char *s)
{
	return ckpt_name_check(s, strlen(s));
}

START_TEST(test_checkpoint_names)
{
	char n[202];

	ck_assert_int_eq(name_check("gen3-0900"), 0);
	ck_assert_int_eq(name_check("auto-20261122T090000Z"), 0);
	ck_assert_int_eq(name_check("a"), 0);
	ck_assert_int_eq(name_check("A.b_c+d@e-f"), 0);
	ck_assert_int_eq(name_check("foo.ckpt"), 0);
	ck_assert_int_eq(name_check("a.."), 0);
	memset(n, 'a', sizeof(n));
	ck_assert_int_eq(ckpt_name_check(n, 200), 0);
	ck_assert_int_eq(ckpt_name_check(n, 201), -ENAMETOOLONG);
	n[150] = '/';
	ck_assert_int_eq(ckpt_name_check(n, 201), -EINVAL);

	ck_assert_int_eq(ckpt_name_check("", 0), -EINVAL);
	ck_assert_int_eq(name_check(".x"), -EINVAL);
	ck_assert_int_eq(name_check("."), -EINVAL);
	ck_assert_int_eq(name_check(".."), -EINVAL);
	ck_assert_int_eq(name_check("-x"), -EINVAL);
	ck_assert_int_eq(name_check("a/b"), -EINVAL);
	ck_assert_int_eq(name_check("a b"), -EINVAL);
	ck_assert_int_eq(name_check("a\\b"), -EINVAL);
	ck_assert_int_eq(name_check("\xc3\xa4"), -EINVAL);
	ck_assert_int_eq(name_check("a\nb"), -EINVAL);
	ck_assert_int_eq(ckpt_name_check("a\0b", 3), -EINVAL);
}
END_TEST

static Suite *policy_suite(void)
{
	Suite *s = suite_create("policy");
	TCase *tc = tcase_create("names");

	tcase_add_test(tc, test_table_size);
	tcase_add_loop_test(tc, test_names, 0, NNAMES);
	tcase_add_test(tc, test_err_null);
	tcase_add_test(tc, test_component_length);
	tcase_add_test(tc, test_path_length);
	tcase_add_test(tc, test_long_fold);
	tcase_add_test(tc, test_trailing_dots);
	suite_add_tcase(s, tc);

	tc = tcase_create("symlinks");
	tcase_add_loop_test(tc, test_links, 0, NLINKS);
	tcase_add_test(tc, test_link_hops);
	tcase_add_test(tc, test_link_name_first);
	tcase_add_test(tc, test_link_long_target);
	suite_add_tcase(s, tc);

	tc = tcase_create("modes and checkpoint names");
	tcase_add_test(tc, test_mode);
	tcase_add_test(tc, test_checkpoint_names);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(policy_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
