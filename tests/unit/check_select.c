/*
 * check_select.c - what a save takes from each tier.
 *
 * Artifacts and their look-alikes, the shipped backends against realistic
 * trees of ~/.claude and ~/.codex, exclude_from patterns and every way a
 * pattern file can be malformed.  The backends come from $SRCDIR/backends
 * (".." when unset); scratch files go to a mkdtemp directory, never there.
 */
#include <check.h>
#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "select.h"

#define TAKE	CKPT_PICK_TAKE
#define SKIP	CKPT_PICK_SKIP
#define DESCEND CKPT_PICK_DESCEND
#define WORLD	CKPT_TIER_WORLD
#define WS	CKPT_TIER_WORKSPACE
#define SESS	CKPT_TIER_SESSION

static char top[256];	  /* one per test case, removed even after failures */
static char tmp[300];	  /* this test's scratch directory, inside top */
static char bdir[4096];	  /* the repository's backends/ */
static char scratch[512]; /* a path built under tmp */

static int rm_one(const char *path, const struct stat *st, int flag,
		  struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

/* Unchecked: runs in the parent, so a failed test's files go too. */
static void top_setup(void)
{
	const char *t = getenv("TMPDIR");

	snprintf(top, sizeof(top), "%s/check_select.XXXXXX",
		 t && *t ? t : "/tmp");
	if (!mkdtemp(top))
		abort();
}

static void top_teardown(void)
{
	nftw(top, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static void setup(void)
{
	const char *src = getenv("SRCDIR");

	snprintf(bdir, sizeof(bdir), "%s/backends", src && *src ? src : "..");
	snprintf(tmp, sizeof(tmp), "%s/t.XXXXXX", top);
	ck_assert_ptr_nonnull(mkdtemp(tmp));
}

static void teardown(void)
{
	nftw(tmp, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* Writes len bytes to tmp/name and returns the path (in scratch). */
static const char *put(const char *name, const char *text, size_t len)
{
	FILE *f;

	snprintf(scratch, sizeof(scratch), "%s/%s", tmp, name);
	f = fopen(scratch, "w");
	ck_assert_ptr_nonnull(f);
	ck_assert_uint_eq(fwrite(text, 1, len, f), len);
	ck_assert_int_eq(fclose(f), 0);
	return scratch;
}

#define PUT(name, lit) put(name, lit, sizeof(lit) - 1)

/* The fake directory behind has_file: whether it holds pyvenv.cfg, and
 * how often it was asked. */
struct fake_dir {
	bool cfg;
	int asked;
};

static bool has_file(void *ctx, const char *name)
{
	struct fake_dir *d = ctx;

	d->asked++;
	return d->cfg && strcmp(name, "pyvenv.cfg") == 0;
}

static enum ckpt_pick pick(const struct ckpt_select *s, enum ckpt_tier tier,
			   const char *rel, bool is_dir)
{
	struct fake_dir d = {false, 0};

	return ckpt_select_pick(s, tier, rel, is_dir, has_file, &d);
}

struct pick_case {
	enum ckpt_tier tier;
	const char *rel;
	bool dir;
	enum ckpt_pick want;
};

static void check_cases(const struct ckpt_select *s, const struct pick_case *c,
			size_t n)
{
	static const char *const names[] = {"TAKE", "SKIP", "DESCEND"};

	for (size_t i = 0; i < n; i++) {
		enum ckpt_pick got = pick(s, c[i].tier, c[i].rel, c[i].dir);

		ck_assert_msg(got == c[i].want, "tier %d %s%s: %s, want %s",
			      c[i].tier, c[i].rel, c[i].dir ? "/" : "",
			      names[got], names[c[i].want]);
	}
}

#define CHECK(s, cases) check_cases(s, cases, sizeof(cases) / sizeof(cases[0]))

static struct ckpt_select *open_ok(const char *backend, const char *exclude)
{
	struct ckpt_err err = {0};
	struct ckpt_select *s = NULL;
	int rc = ckpt_select_open(backend, bdir, exclude, &s, &err);

	ck_assert_msg(rc == 0, "open %s: %d %s", backend ? backend : "-", rc,
		      err.msg);
	ck_assert_ptr_nonnull(s);
	return s;
}

/* Opens expecting code; the message must contain every string in want. */
static struct ckpt_err open_bad(const char *backend, const char *dir,
				const char *exclude, int code)
{
	struct ckpt_err err = {0};
	struct ckpt_select *s = (struct ckpt_select *)&err;
	int rc = ckpt_select_open(backend, dir, exclude, &s, &err);

	ck_assert_msg(rc == code, "want %d, got %d (%s)", code, rc, err.msg);
	ck_assert_int_eq(err.code, code);
	ck_assert_ptr_null(s);
	return err;
}

#define HAS(str, sub)                                                          \
	ck_assert_msg(strstr(str, sub), "'%s' lacks '%s'", str, sub)

/* ---- artifacts ----------------------------------------------------------- */

static const char *const artifacts[] = {
	".venv",	 "__pycache__", "node_modules", ".cache",
	".pytest_cache", ".mypy_cache", ".ruff_cache",	".tox",
};
#define NART (int)(sizeof(artifacts) / sizeof(artifacts[0]))

START_TEST(test_artifact_dirs)
{
	struct ckpt_select *s = open_ok(NULL, NULL);
	const char *a = artifacts[_i];
	char p[256];

	ck_assert_int_eq(pick(s, WS, a, true), SKIP);
	snprintf(p, sizeof(p), "src/pkg/%s", a);
	ck_assert_int_eq(pick(s, WS, p, true), SKIP);
	ck_assert_int_eq(pick(s, WS, "src/pkg", true), TAKE);
	/* What is below one is left out too, when asked directly. */
	snprintf(p, sizeof(p), "%s/x.py", a);
	ck_assert_int_eq(pick(s, WS, p, false), SKIP);
	snprintf(p, sizeof(p), "a/%s/b/c", a);
	ck_assert_int_eq(pick(s, WS, p, true), SKIP);
	/* Only directories are artifacts. */
	ck_assert_int_eq(pick(s, WS, a, false), TAKE);
	snprintf(p, sizeof(p), "src/%s", a);
	ck_assert_int_eq(pick(s, WS, p, false), TAKE);
	/* The world is stored as given. */
	ck_assert_int_eq(pick(s, WORLD, a, true), TAKE);
	snprintf(p, sizeof(p), "%s/x", a);
	ck_assert_int_eq(pick(s, WORLD, p, false), TAKE);
	ckpt_select_free(s);
}
END_TEST

START_TEST(test_venv)
{
	struct ckpt_select *s = open_ok(NULL, NULL);
	struct fake_dir env = {true, 0}, plain = {false, 0};

	ck_assert_int_eq(ckpt_select_pick(s, WS, "venv", true, has_file, &env),
			 SKIP);
	ck_assert_int_eq(env.asked, 1);
	ck_assert_int_eq(
		ckpt_select_pick(s, WS, "tools/venv", true, has_file, &env),
		SKIP);
	ck_assert_int_eq(
		ckpt_select_pick(s, WS, "venv", true, has_file, &plain), TAKE);
	ck_assert_int_eq(
		ckpt_select_pick(s, WS, "tools/venv", true, has_file, &plain),
		TAKE);
	ck_assert_int_eq(ckpt_select_pick(s, WS, "venv", true, NULL, NULL),
			 TAKE);
	/* Only a directory named exactly venv is asked about. */
	env.asked = 0;
	ck_assert_int_eq(ckpt_select_pick(s, WS, "venv", false, has_file, &env),
			 TAKE);
	ck_assert_int_eq(ckpt_select_pick(s, WS, "venv2", true, has_file, &env),
			 TAKE);
	ck_assert_int_eq(
		ckpt_select_pick(s, WS, "myvenv", true, has_file, &env), TAKE);
	ck_assert_int_eq(
		ckpt_select_pick(s, WS, "venv/bin", true, has_file, &env),
		TAKE);
	ck_assert_int_eq(
		ckpt_select_pick(s, WORLD, "venv", true, has_file, &env), TAKE);
	ck_assert_int_eq(env.asked, 0);
	ckpt_select_free(s);
}
END_TEST

START_TEST(test_lookalikes)
{
	static const struct pick_case cases[] = {
		{WS, "node_modules_backup", true, TAKE},
		{WS, "node_modules_backup/x.js", false, TAKE},
		{WS, "my.cache", true, TAKE},
		{WS, "cache", true, TAKE},
		{WS, "cache/x", false, TAKE},
		{WS, ".cachedir", true, TAKE},
		{WS, ".venv2", true, TAKE},
		{WS, "venv-old", true, TAKE},
		{WS, "__pycache__x", true, TAKE},
		{WS, "x__pycache__", true, TAKE},
		{WS, ".toxic", true, TAKE},
		{WS, ".Venv", true, TAKE},
		{WS, "NODE_MODULES", true, TAKE},
		{WS, "src/.cache.py", false, TAKE},
		{WS, ".github/workflows/ci.yml", false, TAKE},
		{WS, "a.venv/b", false, TAKE},
	};
	struct ckpt_select *s = open_ok(NULL, NULL);

	CHECK(s, cases);
	ckpt_select_free(s);
}
END_TEST

/* ---- the session tier and the shipped backends ----------------------------
 */

START_TEST(test_no_backend)
{
	static const struct pick_case cases[] = {
		{SESS, "projects", true, SKIP},
		{SESS, "projects/-home-u-proj/3f2a.jsonl", false, SKIP},
		{SESS, "todos/t.json", false, SKIP},
		{SESS, "sessions/2026/11/22/rollout-x.jsonl", false, SKIP},
		{SESS, "transcript.jsonl", false, SKIP},
		{SESS, "x", true, SKIP},
		{WS, "transcript.jsonl", false, TAKE},
		{WORLD, "doc.md", false, TAKE},
	};
	struct ckpt_select *s = open_ok(NULL, NULL);

	CHECK(s, cases);
	ckpt_select_free(s);
}
END_TEST

#define UUID  "3f2a9c1e-7b4d-4e2a-9f3c-1d2e3f4a5b6c"
#define PROJ  "projects/-home-u-proj"
#define CODEX "sessions/2026/11/22"

START_TEST(test_claude)
{
	static const struct pick_case cases[] = {
		{SESS, "projects", true, DESCEND},
		{SESS, PROJ, true, DESCEND},
		{SESS, PROJ "/" UUID ".jsonl", false, TAKE},
		{SESS, "projects/-home-u-other-proj/a.jsonl", false, TAKE},
		{SESS, PROJ "/" UUID, true, DESCEND},
		{SESS, PROJ "/" UUID "/subagents", true, DESCEND},
		{SESS, PROJ "/" UUID "/subagents/agent-1.jsonl", false, TAKE},
		{SESS, PROJ "/" UUID "/subagents/agent-1.txt", false, SKIP},
		{SESS, PROJ "/" UUID "/tool-results", true, SKIP},
		{SESS, PROJ "/" UUID "/x.jsonl", false, SKIP},
		{SESS, PROJ "/notes.md", false, SKIP},
		{SESS, "projects/x.jsonl", false, SKIP},
		{SESS, "todos", true, DESCEND},
		{SESS, "todos/t.json", false, TAKE},
		{SESS, "todos/" UUID "-agent-" UUID ".json", false, TAKE},
		{SESS, "todos/sub", true, SKIP},
		{SESS, "todos/t.json.bak", false, SKIP},
		{SESS, "statsig", true, SKIP},
		{SESS, "statsig/x", false, SKIP},
		{SESS, "shell-snapshots", true, SKIP},
		{SESS, "shell-snapshots/s.sh", false, SKIP},
		{SESS, "ide", true, SKIP},
		{SESS, "ide/1234.lock", false, SKIP},
		{SESS, "debug", true, SKIP},
		{SESS, "plugins", true, SKIP},
		{SESS, "cache", true, SKIP},
		{SESS, "settings.json", false, SKIP},
		{SESS, "settings.local.json", false, SKIP},
		{SESS, ".credentials.json", false, SKIP},
		{SESS, "history.jsonl", false, SKIP},
		{SESS, "a.jsonl", false, SKIP},
		/* The allowlist is the session's only. */
		{WS, "statsig", true, TAKE},
		{WORLD, "settings.json", false, TAKE},
	};
	struct ckpt_select *s = open_ok("claude-code-v1", NULL);

	CHECK(s, cases);
	ckpt_select_free(s);
}
END_TEST

START_TEST(test_codex)
{
	static const struct pick_case cases[] = {
		{SESS, "sessions", true, DESCEND},
		{SESS, "sessions/2026", true, DESCEND},
		{SESS, "sessions/2026/11", true, DESCEND},
		{SESS, CODEX, true, DESCEND},
		{SESS, CODEX "/rollout-2026-11-22T09-00-00-abc.jsonl", false,
		 TAKE},
		{SESS, CODEX "/other.jsonl", false, SKIP},
		{SESS, CODEX "/rollout-x.json", false, SKIP},
		{SESS, CODEX "/sub", true, SKIP},
		{SESS, "sessions/rollout-x.jsonl", false, SKIP},
		{SESS, "sessions/tmp", true, SKIP},
		{SESS, "log", true, SKIP},
		{SESS, "log/codex.log", false, SKIP},
		{SESS, "history.jsonl", false, SKIP},
		{SESS, "auth.json", false, SKIP},
		{SESS, "config.toml", false, SKIP},
		{SESS, "projects", true, SKIP},
	};
	struct ckpt_select *s = open_ok("codex-v1", NULL);

	CHECK(s, cases);
	ckpt_select_free(s);
}
END_TEST

START_TEST(test_backends_list)
{
	char *l = ckpt_select_backends(bdir);
	char dir[400];

	ck_assert_ptr_nonnull(l);
	ck_assert_str_eq(l, "claude-code-v1");
	ck_assert_str_eq(l + strlen(l) + 1, "codex-v1");
	ck_assert_int_eq(l[sizeof("claude-code-v1") + sizeof("codex-v1")],
			 '\0');
	free(l);

	/* Only regular files with a backend's name are listed. */
	snprintf(dir, sizeof(dir), "%s/b", tmp);
	ck_assert_int_eq(mkdir(dir, 0700), 0);
	l = ckpt_select_backends(dir);
	ck_assert_ptr_nonnull(l);
	ck_assert_int_eq(l[0], '\0');
	free(l);
	PUT("b/zz-v1", "x\n");
	PUT("b/aa-v1", "x\n");
	PUT("b/.hidden", "x\n");
	PUT("b/aa-v1~", "x\n");
	snprintf(scratch, sizeof(scratch), "%s/b/sub", tmp);
	ck_assert_int_eq(mkdir(scratch, 0700), 0);
	l = ckpt_select_backends(dir);
	ck_assert_ptr_nonnull(l);
	ck_assert_int_eq(memcmp(l, "aa-v1\0zz-v1\0", 13), 0);
	free(l);

	snprintf(dir, sizeof(dir), "%s/none", tmp);
	ck_assert_ptr_null(ckpt_select_backends(dir));
}
END_TEST

START_TEST(test_backend_errors)
{
	struct ckpt_err e;
	char dir[400];

	e = open_bad("claude-code-v9", bdir, NULL, -ENOENT);
	HAS(e.msg, "claude-code-v9");
	HAS(e.msg, "claude-code-v1, codex-v1");
	e = open_bad("../backends/codex-v1", bdir, NULL, -EINVAL);
	HAS(e.msg, "not a backend name");
	e = open_bad(".hidden", bdir, NULL, -EINVAL);
	e = open_bad("codex-v1", NULL, NULL, -EINVAL);

	snprintf(dir, sizeof(dir), "%s/none", tmp);
	e = open_bad("codex-v1", dir, NULL, -ENOENT);
	HAS(e.msg, "cannot read");
	HAS(e.msg, "/none: No such file");

	snprintf(dir, sizeof(dir), "%s/b", tmp);
	ck_assert_int_eq(mkdir(dir, 0700), 0);
	e = open_bad("codex-v1", dir, NULL, -ENOENT);
	HAS(e.msg, "holds none");

	PUT("b/dir-v1", "# comment\nprojects/*.jsonl\nprojects/\n");
	e = open_bad("dir-v1", dir, NULL, -EINVAL);
	ck_assert_uint_eq(e.line, 3);
	HAS(e.msg, "dir-v1:3:");
	HAS(e.msg, "'projects/'");
	HAS(e.msg, "name files");
	HAS(e.path, "dir-v1");
	ck_assert_str_eq(e.rule, "bad-pattern");

	PUT("b/bang-v1", "!x.jsonl\n");
	e = open_bad("bang-v1", dir, NULL, -EINVAL);
	HAS(e.msg, "bang-v1:1:");
	HAS(e.msg, "exclude GLOB");

	PUT("b/excl-v1", "a/*.jsonl\nexclude   \n");
	e = open_bad("excl-v1", dir, NULL, -EINVAL);
	ck_assert_uint_eq(e.line, 2);
	HAS(e.msg, "without a glob");

	snprintf(scratch, sizeof(scratch), "%s/b/sub-v1", tmp);
	ck_assert_int_eq(mkdir(scratch, 0700), 0);
	e = open_bad("sub-v1", dir, NULL, -EINVAL);
	HAS(e.msg, "not a regular file");
}
END_TEST

/* A backend of one's own: a data file, with "exclude" lines. */
START_TEST(test_custom_backend)
{
	static const struct pick_case cases[] = {
		{SESS, "a", true, DESCEND},
		{SESS, "a/b/c.jsonl", false, TAKE},
		{SESS, "c.jsonl", false, TAKE},
		{SESS, "c.json", false, SKIP},
		{SESS, "private", true, SKIP},
		{SESS, "private/c.jsonl", false, SKIP},
		{SESS, "a/private", true, DESCEND},
		{SESS, "a/x.bak.jsonl", false, SKIP},
		{SESS, "notes/n.md", false, TAKE},
		{SESS, "notes/sub/n.md", false, TAKE},
		{SESS, "notes", true, DESCEND},
		{SESS, "notes/tmp", true, SKIP},
		{SESS, "notes/tmp/n.md", false, SKIP},
	};
	struct ckpt_select *s = NULL;
	struct ckpt_err err = {0};
	char dir[400];

	snprintf(dir, sizeof(dir), "%s/b", tmp);
	ck_assert_int_eq(mkdir(dir, 0700), 0);
	PUT("b/mine-v1", "# mine\n"
			 "**/*.jsonl\r\n"
			 "/notes/**\n"
			 "exclude private/\n"
			 "exclude\t**/*.bak.jsonl\n"
			 "exclude notes/tmp\n");
	ck_assert_int_eq(ckpt_select_open("mine-v1", dir, NULL, &s, &err), 0);
	CHECK(s, cases);
	ckpt_select_free(s);
}
END_TEST

/* ---- exclude_from ---------------------------------------------------------
 */

START_TEST(test_exclude)
{
	static const struct pick_case cases[] = {
		/* unanchored, with a re-include; the last match wins */
		{WS, "x.log", false, SKIP},
		{WS, "a/b/x.log", false, SKIP},
		{WORLD, "x.log", false, SKIP},
		{WS, "keep.log", false, TAKE},
		{WS, "a/keep.log", false, TAKE},
		{WS, "early.log", false, SKIP},
		/* anchored */
		{WS, "top.txt", false, SKIP},
		{WS, "a/top.txt", false, TAKE},
		{WS, "docs/a.pdf", false, SKIP},
		{WS, "x/docs/a.pdf", false, TAKE},
		{WS, "docs/sub/a.pdf", false, TAKE},
		/* directories only; a re-include cannot reach inside one */
		{WS, "build", true, SKIP},
		{WS, "a/build", true, SKIP},
		{WS, "build", false, TAKE},
		{WS, "build/x.c", false, SKIP},
		{WS, "build/keep.c", false, SKIP},
		{WS, "data", true, TAKE},
		{WS, "data/x", false, SKIP},
		{WS, "data/x", true, SKIP},
		{WS, "data/keep", true, TAKE},
		{WS, "data/keep/f", false, TAKE},
		/* "**" */
		{WS, "gen", true, TAKE},
		{WS, "gen/x", false, SKIP},
		{WS, "a/b/gen/x/y", false, SKIP},
		{WS, "a/z", false, SKIP},
		{WS, "a/b/c/z", false, SKIP},
		{WS, "b/a/z", false, TAKE},
		{WS, "a/z/y", false, SKIP},
		/* tier prefixes */
		{WS, "secret-notes", true, SKIP},
		{WS, "secret-notes/n.md", false, SKIP},
		{WORLD, "secret-notes", true, TAKE},
		{WS, "a/secret-notes", true, TAKE},
		{WORLD, "big.bin", false, SKIP},
		{WS, "big.bin", false, TAKE},
		{WORLD, "a/big.bin", false, TAKE},
		{SESS, PROJ "/" UUID ".jsonl", false, TAKE},
		{SESS, "projects/-home-u-secret", true, SKIP},
		{SESS, "projects/-home-u-secret/" UUID ".jsonl", false, SKIP},
		{WS, "projects/-home-u-secret", true, TAKE},
		{SESS, PROJ "/" UUID "/subagents/agent-1.jsonl", false, SKIP},
		/* wildcards within a component */
		{WS, "file1.txt", false, SKIP},
		{WS, "file10.txt", false, TAKE},
		{WS, "img3.png", false, SKIP},
		{WS, "imgx.png", false, TAKE},
		{WS, "dx.dat", false, SKIP},
		{WS, "ax.dat", false, TAKE},
		{WS, "]x.dat", false, SKIP},
		{WS, "caf\xc3\xa9", false, SKIP},
		{WS, "caf", false, TAKE},
		{WS, "caf\xc3\xa9s", false, TAKE},
		{WS, "a\xc3\xa9z.bin", false, SKIP},
		{WS, "abz.bin", false, TAKE},
		{WS, "pre-mid-post", false, SKIP},
		{WS, "pre-post", false, SKIP},
		{WS, "prepost", false, TAKE},
		{WS, ".hidden.tmp", false, SKIP},
		/* escapes */
		{WS, "#hash", false, SKIP},
		{WS, "!bang", false, SKIP},
		{WS, "trailing ", false, SKIP},
		{WS, "trailing", false, TAKE},
		{WS, "star*", false, SKIP},
		{WS, "starx", false, TAKE},
		/* comments are not patterns */
		{WS, "comment", false, TAKE},
		{WS, "# comment", false, TAKE},
		/* the artifacts stay out whatever is re-included */
		{WS, "node_modules", true, SKIP},
		{WS, "ordinary.c", false, TAKE},
	};
	const char *path = PUT("excl", "# comment\n"
				       "\n"
				       "!early.log\n"
				       "*.log\n"
				       "!keep.log\n"
				       "/top.txt\n"
				       "docs/*.pdf\n"
				       "build/\n"
				       "!build/keep.c\n"
				       "/data/*\n"
				       "!/data/keep/\n"
				       "**/gen/**\n"
				       "a/**/z\n"
				       "workspace/secret-notes/\n"
				       "/world/big.bin\n"
				       "session/projects/-home-u-secret/\n"
				       "session/**/subagents/\n"
				       "file?.txt\n"
				       "img[0-9].png\n"
				       "[!a-c]x.dat\n"
				       "caf?\n"
				       "a[\xc3\xa0-\xc3\xbf]z.bin\n"
				       "pre-*post\n"
				       "*.tmp\n"
				       "\\#hash\n"
				       "\\!bang\n"
				       "trailing\\ \n"
				       "star\\*  \t\n"
				       "!node_modules/\n");
	struct ckpt_select *s = open_ok("claude-code-v1", path);

	CHECK(s, cases);
	ckpt_select_free(s);
}
END_TEST

struct bad_case {
	const char *text;
	unsigned line;
	const char *says;
};

static const struct bad_case bad_files[] = {
	{"# ok\n\nfoo[ab\n", 3, "unterminated '['"},
	{"session\n", 1, "names a whole tier"},
	{"/workspace/\n", 1, "'workspace/**'"},
	{"ok\na//b\n", 2, "empty component"},
	{"../x\n", 1, "'..'"},
	{"a/./b\n", 1, "'.'"},
	{"[[:alpha:]]\n", 1, "not supported"},
	{"[z-a]\n", 1, "reversed range"},
	{"foo\\\n", 1, "escapes nothing"},
	{"!\n", 1, "is empty"},
	{"/\n", 1, "is empty"},
	{"ok\nok\n\xff\xfe\n", 3, "not valid UTF-8"},
	{"a\x01"
	 "b\n",
	 1, "control character"},
	{"a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/p/q/r/s/t/u/v/w/x/y/z/"
	 "a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/p/q/r/s/t/u/v/w/x/y/z/"
	 "a/b/c/d/e/f/g/h/i/j/k/l\n",
	 1, "more than 63 components"},
};
#define NBAD (int)(sizeof(bad_files) / sizeof(bad_files[0]))

START_TEST(test_exclude_malformed)
{
	const struct bad_case *c = &bad_files[_i];
	const char *path = put("bad-excl", c->text, strlen(c->text));
	char where[300];
	struct ckpt_err e = open_bad(NULL, bdir, path, -EINVAL);

	ck_assert_str_eq(e.rule, "bad-pattern");
	ck_assert_uint_eq(e.line, c->line);
	snprintf(where, sizeof(where), "bad-excl:%u:", c->line);
	HAS(e.msg, where);
	HAS(e.msg, c->says);
	HAS(e.path, "bad-excl");
}
END_TEST

START_TEST(test_exclude_file_errors)
{
	struct ckpt_err e;
	char path[400];
	char big[70000];

	snprintf(path, sizeof(path), "%s/missing", tmp);
	e = open_bad(NULL, NULL, path, -ENOENT);
	HAS(e.msg, "exclude file");
	HAS(e.msg, "missing");

	e = open_bad(NULL, NULL, tmp, -EINVAL);
	HAS(e.msg, "not a regular file");

	e = open_bad(NULL, NULL, put("nul", "a\0b\n", 4), -EINVAL);
	HAS(e.msg, "NUL byte");

	/* 70 kB of one line: over the longest pattern. */
	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\n';
	e = open_bad(NULL, NULL, put("long", big, sizeof(big)), -EINVAL);
	HAS(e.msg, "longer than");

	/* An error in the exclude file is reported with a good backend. */
	e = open_bad("codex-v1", bdir, PUT("x", "ok\n[\n"), -EINVAL);
	ck_assert_uint_eq(e.line, 2);

	/* An empty file and one of comments are fine. */
	ckpt_select_free(open_ok(NULL, PUT("empty", "")));
	ckpt_select_free(open_ok(NULL, PUT("comments", "# a\n\n  \n#b")));
	ckpt_select_free(NULL);
}
END_TEST

/* Deep and long names: no overflow, with negation (which keeps per-depth
 * state) and without. */
START_TEST(test_deep)
{
	struct ckpt_select *s = open_ok(NULL, PUT("neg", "*.x\n!a\n"));
	static char rel[5000];
	size_t n = 0;

	while (n < 4000) {
		rel[n++] = 'a';
		rel[n++] = '/';
	}
	rel[n++] = 'a';
	rel[n] = '\0';
	ck_assert_int_eq(pick(s, WS, rel, false), TAKE);
	rel[n - 1] = 'b';
	ck_assert_int_eq(pick(s, WS, rel, true), TAKE);
	memcpy(rel + n, ".x", 3);
	ck_assert_int_eq(pick(s, WS, rel, false), SKIP);
	/* Past the policy's limit nothing is taken. */
	memset(rel, 'a', 4096);
	rel[4096] = '\0';
	ck_assert_int_eq(pick(s, WS, rel, false), SKIP);
	ck_assert_int_eq(pick(s, WS, "", false), SKIP);
	ckpt_select_free(s);
}
END_TEST

static Suite *select_suite(void)
{
	Suite *s = suite_create("select");
	TCase *tc = tcase_create("workspace");

	tcase_add_unchecked_fixture(tc, top_setup, top_teardown);
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_loop_test(tc, test_artifact_dirs, 0, NART);
	tcase_add_test(tc, test_venv);
	tcase_add_test(tc, test_lookalikes);
	suite_add_tcase(s, tc);

	tc = tcase_create("session");
	tcase_add_unchecked_fixture(tc, top_setup, top_teardown);
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_no_backend);
	tcase_add_test(tc, test_claude);
	tcase_add_test(tc, test_codex);
	tcase_add_test(tc, test_backends_list);
	tcase_add_test(tc, test_backend_errors);
	tcase_add_test(tc, test_custom_backend);
	suite_add_tcase(s, tc);

	tc = tcase_create("exclude_from");
	tcase_add_unchecked_fixture(tc, top_setup, top_teardown);
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_exclude);
	tcase_add_loop_test(tc, test_exclude_malformed, 0, NBAD);
	tcase_add_test(tc, test_exclude_file_errors);
	tcase_add_test(tc, test_deep);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(select_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
