/*
 * select.c - what a save takes from each tier (see select.h).
 *
 * Patterns are compiled once, at open, into their components ("segments");
 * ckpt_select_pick(), which runs for every name of every save, then walks
 * the name's components once per pattern through a small automaton whose
 * states fit one word.  Invariant: after open nothing is written, so pick()
 * takes no lock, never allocates, and costs O(depth x patterns).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"
#include "select.h"

/*
 * Pattern syntax, shared by exclude_from files and backend files (the man
 * page says the same):
 *
 *   - One pattern per line.  Blank lines and lines starting with '#' are
 *     ignored; a trailing '\r' and unescaped trailing blanks are dropped.
 *   - '*' matches any run of characters within one component, '?' one
 *     character, '[...]' one character of a set ("[a-z]", "[!0-9]" or
 *     "[^0-9]"; ']' first is literal); '\' makes the next character
 *     literal.  A component that is exactly "**" matches any number of
 *     components, none included, except as the last component, where it
 *     matches one or more (what is inside).  Wildcards match dot files.  POSIX
 * classes ("[:alpha:]") are refused.
 *   - A trailing '/' makes the pattern match directories only.
 *
 * exclude_from files:
 *   - A pattern with a '/' other than a trailing one is anchored to the
 *     tier root; one without matches a name at any depth.
 *   - A first component "world", "workspace" or "session" (with more after
 *     it) limits the pattern to that tier and anchors it there, so that
 *     "workspace/build/" is exactly the checkpoint path workspace/build (a
 *     "**" component after the tier name finds it at any depth).  Other
 *     patterns apply to every tier.  A pattern that is only a tier name
 *     ("session", "/session/") is refused as ambiguous.
 *   - A leading '!' re-includes what an earlier pattern left out; the last
 *     matching pattern decides.  As in gitignore, nothing below a left-out
 *     directory can be re-included.
 *
 * Backend files (the session allowlist):
 *   - Every pattern is relative to the session directory, always anchored
 *     (a leading '/' is allowed and changes nothing), and names files and
 *     symlinks: directories are walked when a pattern may match below them
 *     and are never taken themselves, so a trailing '/' is refused.
 *   - "exclude GLOB" leaves out what GLOB matches (a directory: with its
 *     content) even when an allowlist pattern names it.
 *   - A leading '!' is refused (write "exclude GLOB", or "\!" for a name).
 */

#define FILE_MAX	 (1u << 20) /* bytes of one pattern file */
#define PATTERN_MAX	 4095	    /* bytes of one pattern line */
#define SEG_MAX		 63	    /* so that states fit in 64 bits */
#define REL_MAX		 4095	    /* the policy refuses longer paths */
#define BACKEND_NAME_MAX 64
#define ALL_TIERS	 ((1u << CKPT_TIER_COUNT) - 1)

/* Directories a tool rebuilds, left out of the workspace wherever they
 * are: they are large, machine-specific and may hold copied secrets. */
static const char *const artifacts[] = {
	".venv",	 /* virtualenv, uv, poetry */
	"__pycache__",	 /* CPython bytecode */
	"node_modules",	 /* npm, yarn, pnpm */
	".cache",	 /* per-project tool caches */
	".pytest_cache", /* pytest */
	".mypy_cache",	 /* mypy */
	".ruff_cache",	 /* ruff */
	".tox",		 /* tox environments */
};

static const char *const tier_names[CKPT_TIER_COUNT] = {
	[CKPT_TIER_WORLD] = "world",
	[CKPT_TIER_WORKSPACE] = "workspace",
	[CKPT_TIER_SESSION] = "session",
};

enum seg_kind {
	SEG_DSTAR,  /* "**": any number of components */
	SEG_ANY,    /* "*": any one component */
	SEG_LIT,    /* no wildcard; text unescaped */
	SEG_SUFFIX, /* '*' then text (unescaped): "*.jsonl" */
	SEG_PREFIX, /* text (unescaped) then '*': "rollout-*" */
	SEG_GLOB,   /* anything else; text as written */
};

struct seg {
	const char *text; /* into the file's buffer; not NUL-terminated */
	uint16_t len;
	uint8_t kind; /* enum seg_kind */
};

struct pat {
	uint64_t dstar; /* bit i: segment i is SEG_DSTAR */
	uint32_t seg;	/* index of its first segment in rules.seg */
	uint8_t nseg;	/* state nseg is "matched" */
	uint8_t tiers;	/* bit (1 << tier) for each tier it applies to */
	bool negate;	/* "!pattern" */
	bool dir_only;	/* "pattern/" */
};

struct rules {
	struct pat *pat; /* in file order */
	size_t npat, patcap;
	struct seg *seg;
	size_t nseg, segcap;
	bool negation; /* some pattern re-includes: last match wins */
};

struct ckpt_select {
	bool session;	    /* a backend was named: the session tier is saved */
	struct rules excl;  /* exclude_from, every tier (pat.tiers) */
	struct rules allow; /* backend: the session files taken */
	struct rules deny;  /* backend "exclude" lines */
	char *excl_text;    /* the files as read: segments point into them */
	char *backend_text;
};

/* ---- matching one component ---------------------------------------------- */

/* The character at s as a code point and its length; a byte that is not
 * valid UTF-8 stands for itself, above the Unicode range so that it never
 * equals a real character. */
static uint32_t char_at(const char *s, size_t n, size_t *len)
{
	uint32_t cp;
	size_t l = utf8_decode((const unsigned char *)s, n, &cp);

	if (l == 0) {
		*len = 1;
		return 0x110000u + (unsigned char)*s;
	}
	*len = l;
	return cp;
}

/*
 * Reads the set at p (just after its '['; n bytes left) and tests c
 * against it.  Returns the set's length up to and including its ']', or
 * 0 when it is malformed, with *why saying how.  The same code checks
 * patterns at open and matches them in pick(), so they cannot disagree.
 */
static size_t class_scan(const char *p, size_t n, uint32_t c, bool *hit,
			 const char **why)
{
	size_t i = 0, l;
	bool neg = false, in = false;

	if (i < n && (p[i] == '!' || p[i] == '^')) {
		neg = true;
		i++;
	}
	for (bool first = true; i < n && (p[i] != ']' || first);
	     first = false) {
		uint32_t lo, hi;

		if (p[i] == '[' && i + 1 < n && p[i + 1] == ':') {
			*why = "uses a class like [:alpha:], which is not supported";
			return 0;
		}
		if (p[i] == '\\' && ++i == n)
			break;
		lo = hi = char_at(p + i, n - i, &l);
		i += l;
		if (i + 1 < n && p[i] == '-' && p[i + 1] != ']') {
			if (p[++i] == '\\' && ++i == n)
				break;
			hi = char_at(p + i, n - i, &l);
			i += l;
			if (hi < lo) {
				*why = "has a reversed range in '[...]'";
				return 0;
			}
		}
		if (c >= lo && c <= hi)
			in = true;
	}
	if (i >= n) {
		*why = "has an unterminated '['";
		return 0;
	}
	*hit = in != neg;
	return i + 1;
}

/* Matches one pattern element (not '*') at p against the character at s.
 * Stores the lengths consumed in *pl and *sl. */
static bool one_match(const char *p, size_t pn, const char *s, size_t sn,
		      size_t *pl, size_t *sl)
{
	const char *why;
	bool hit = false;
	uint32_t c;

	switch (p[0]) {
	case '?':
		char_at(s, sn, sl);
		*pl = 1;
		return true;
	case '[':
		c = char_at(s, sn, sl);
		*pl = 1 + class_scan(p + 1, pn - 1, c, &hit, &why);
		return hit;
	case '\\':
		*pl = 2;
		*sl = 1;
		return s[0] == p[1];
	default:
		*pl = 1;
		*sl = 1;
		return s[0] == p[0];
	}
}

/* Matches a whole component against a validated glob.  On a mismatch the
 * latest '*' takes one more character; earlier ones never need to, since
 * what lies between two stars is best matched at its earliest place. */
static bool glob_match(const char *p, size_t pn, const char *s, size_t sn)
{
	size_t pi = 0, si = 0, star_p = SIZE_MAX, star_s = 0, pl, sl;

	for (;;) {
		if (pi < pn && p[pi] == '*') {
			while (pi < pn && p[pi] == '*')
				pi++;
			if (pi == pn)
				return true;
			star_p = pi;
			star_s = si;
			continue;
		}
		if (si == sn)
			return pi == pn;
		if (pi < pn &&
		    one_match(p + pi, pn - pi, s + si, sn - si, &pl, &sl)) {
			pi += pl;
			si += sl;
			continue;
		}
		if (star_p == SIZE_MAX)
			return false;
		char_at(s + star_s, sn - star_s, &sl);
		star_s += sl;
		pi = star_p;
		si = star_s;
	}
}

static bool seg_match(const struct seg *g, const char *c, size_t n)
{
	switch ((enum seg_kind)g->kind) {
	case SEG_ANY:
		return true;
	case SEG_LIT:
		return n == g->len && memcmp(c, g->text, n) == 0;
	case SEG_SUFFIX:
		return n >= g->len &&
		       memcmp(c + n - g->len, g->text, g->len) == 0;
	case SEG_PREFIX:
		return n >= g->len && memcmp(c, g->text, g->len) == 0;
	case SEG_GLOB:
		return glob_match(g->text, g->len, c, n);
	case SEG_DSTAR:
		break;
	}
	return false;
}

/* ---- matching a path: one automaton per pattern ------------------------- */

/* State i means "segments before i matched"; a "**" may match nothing, so
 * being before it is also being after it. */
static uint64_t closure(uint64_t st, uint64_t dstar)
{
	uint64_t prev;

	do {
		prev = st;
		st |= (st & dstar) << 1;
	} while (st != prev);
	return st;
}

/* The states after consuming component c (n bytes). */
static uint64_t step(const struct rules *r, const struct pat *p, uint64_t st,
		     const char *c, size_t n)
{
	const struct seg *g = r->seg + p->seg;
	uint64_t live = st & ~(UINT64_C(1) << p->nseg), next = 0;

	while (live) {
		unsigned i = (unsigned)__builtin_ctzll(live);

		live &= live - 1;
		if (g[i].kind == SEG_DSTAR)
			next |= UINT64_C(1) << i;
		else if (seg_match(&g[i], c, n))
			next |= UINT64_C(1) << (i + 1);
	}
	return closure(next, p->dstar);
}

/*
 * Whether r leaves out rel (len bytes) in the tier with bit tier_bit.  As
 * in gitignore, each prefix of rel (its ancestors, as directories, and rel
 * itself) is decided by the last pattern matching it, and a prefix left
 * out takes everything below it along.  Patterns are tried last first, so
 * without negation the first match answers; with it, a negated match
 * settles its prefix as kept and the search goes on for the others.
 */
static bool excluded(const struct rules *r, unsigned tier_bit, const char *rel,
		     size_t len, bool is_dir)
{
	/* Bit k: the prefix of k components is settled as kept.  rel has at
	 * most (REL_MAX + 1) / 2 components. */
	uint64_t kept[(REL_MAX + 1) / 2 / 64 + 1];
	const char *end = rel + len;

	if (r->negation) /* only the words rel can reach */
		memset(kept, 0, ((len + 1) / 2 / 64 + 1) * sizeof(kept[0]));
	for (size_t i = r->npat; i-- > 0;) {
		const struct pat *p = &r->pat[i];
		const uint64_t accept = UINT64_C(1) << p->nseg;
		uint64_t st = closure(1, p->dstar);
		const char *c = rel;
		size_t k = 0;

		if (!(p->tiers & tier_bit))
			continue;
		while (st) {
			const char *e = memchr(c, '/', (size_t)(end - c));
			bool last = !e;

			if (last)
				e = end;
			k++;
			st = step(r, p, st, c, (size_t)(e - c));
			if ((st & accept) &&
			    (!last || is_dir || !p->dir_only)) {
				if (!r->negation)
					return true;
				if (!(kept[k / 64] >> (k % 64) & 1)) {
					if (!p->negate)
						return true;
					kept[k / 64] |= UINT64_C(1) << (k % 64);
				}
			}
			if (last)
				break;
			c = e + 1;
		}
	}
	return false;
}

/* For a file: whether an allowlist pattern matches rel whole.  For a
 * directory: whether one could match something below it. */
static bool allowed(const struct rules *r, const char *rel, size_t len,
		    bool is_dir)
{
	const char *end = rel + len;

	for (size_t i = 0; i < r->npat; i++) {
		const struct pat *p = &r->pat[i];
		const uint64_t accept = UINT64_C(1) << p->nseg;
		uint64_t st = closure(1, p->dstar);
		const char *c = rel;

		for (;;) {
			const char *e = memchr(c, '/', (size_t)(end - c));

			st = step(r, p, st, c, (size_t)((e ? e : end) - c));
			if (!st || !e)
				break;
			c = e + 1;
		}
		if (is_dir ? (st & (accept - 1)) != 0 : (st & accept) != 0)
			return true;
	}
	return false;
}

static bool is_artifact(const char *c, size_t n)
{
	for (size_t i = 0; i < sizeof(artifacts) / sizeof(artifacts[0]); i++)
		if (strlen(artifacts[i]) == n &&
		    memcmp(c, artifacts[i], n) == 0)
			return true;
	return false;
}

/* Whether rel is, or is below, a reconstructable artifact directory. */
static bool artifact(const char *rel, size_t len, bool is_dir,
		     bool (*has_file)(void *ctx, const char *name), void *ctx)
{
	const char *c = rel, *end = rel + len;

	for (;;) {
		const char *e = memchr(c, '/', (size_t)(end - c));
		size_t n = (size_t)((e ? e : end) - c);

		/* Only directories are artifacts: a file or a symlink named
		 * node_modules (pnpm links one) is the user's. */
		if (e || is_dir) {
			if (is_artifact(c, n))
				return true;
			/* "venv" is a common name for other things too; only a
			 * virtual environment has pyvenv.cfg.  An ancestor
			 * cannot be asked: the walk judged it already. */
			if (!e && n == 4 && memcmp(c, "venv", 4) == 0 &&
			    has_file && has_file(ctx, "pyvenv.cfg"))
				return true;
		}
		if (!e)
			return false;
		c = e + 1;
	}
}

enum ckpt_pick ckpt_select_pick(const struct ckpt_select *s,
				enum ckpt_tier tier, const char *rel,
				bool is_dir,
				bool (*has_file)(void *ctx, const char *name),
				void *ctx)
{
	size_t len = strlen(rel);
	unsigned bit;

	/* Longer paths are refused by the policy anyway. */
	if (len == 0 || len > REL_MAX || (unsigned)tier >= CKPT_TIER_COUNT)
		return CKPT_PICK_SKIP;
	bit = 1u << tier;
	if (tier == CKPT_TIER_SESSION) {
		/* An allowlist: without a backend there is nothing to allow. */
		if (!s->session || !allowed(&s->allow, rel, len, is_dir) ||
		    excluded(&s->deny, bit, rel, len, is_dir) ||
		    excluded(&s->excl, bit, rel, len, is_dir))
			return CKPT_PICK_SKIP;
		return is_dir ? CKPT_PICK_DESCEND : CKPT_PICK_TAKE;
	}
	if (tier == CKPT_TIER_WORKSPACE &&
	    artifact(rel, len, is_dir, has_file, ctx))
		return CKPT_PICK_SKIP;
	return excluded(&s->excl, bit, rel, len, is_dir) ? CKPT_PICK_SKIP
							 : CKPT_PICK_TAKE;
}

/* ---- compiling ---------------------------------------------------------- */

enum line_kind {
	LINE_EXCLUDE, /* a line of an exclude_from file */
	LINE_ALLOW,   /* a backend file's allowlist pattern */
	LINE_DENY,    /* a backend file's "exclude GLOB" */
};

/* Checks one component's syntax and classifies it, unescaping literal text
 * in place.  Returns NULL, or what is wrong. */
static const char *seg_compile(char *t, size_t n, struct seg *g)
{
	size_t nstar = 0, nmeta = 0, star_at = 0, l;
	const char *why = NULL;
	bool hit;

	for (size_t i = 0; i < n; i++) {
		switch (t[i]) {
		case '\\':
			if (++i == n)
				return "ends with a '\\' that escapes nothing";
			break;
		case '[':
			l = class_scan(t + i + 1, n - i - 1, 0, &hit, &why);
			if (l == 0)
				return why;
			i += l;
			nmeta++;
			break;
		case '?':
			nmeta++;
			break;
		case '*':
			nstar++;
			star_at = i;
			break;
		}
	}
	g->kind = SEG_GLOB;
	if (nstar == n) {
		g->kind = SEG_ANY;
	} else if (nmeta == 0 && nstar <= 1 &&
		   (nstar == 0 || star_at == 0 || star_at == n - 1)) {
		size_t w = 0;

		g->kind = nstar == 0	 ? SEG_LIT
			  : star_at == 0 ? SEG_SUFFIX
					 : SEG_PREFIX;
		if (nstar) {
			n--;
			if (star_at == 0)
				t++;
		}
		for (size_t r = 0; r < n; r++) {
			if (t[r] == '\\')
				r++;
			t[w++] = t[r];
		}
		n = w;
	}
	g->text = t;
	g->len = (uint16_t)n;
	return NULL;
}

static int push_pat(struct rules *r, const struct pat *p, const struct seg *g)
{
	if (r->npat == r->patcap) {
		size_t cap = r->patcap ? r->patcap * 2 : 16;
		struct pat *np = realloc(r->pat, cap * sizeof(*np));

		if (!np)
			return -ENOMEM;
		r->pat = np;
		r->patcap = cap;
	}
	if (r->nseg + p->nseg > r->segcap) {
		size_t cap = r->segcap ? r->segcap * 2 : 64;
		struct seg *ns;

		while (cap < r->nseg + p->nseg)
			cap *= 2;
		ns = realloc(r->seg, cap * sizeof(*ns));
		if (!ns)
			return -ENOMEM;
		r->seg = ns;
		r->segcap = cap;
	}
	r->pat[r->npat] = *p;
	r->pat[r->npat].seg = (uint32_t)r->nseg;
	memcpy(r->seg + r->nseg, g, p->nseg * sizeof(*g));
	r->nseg += p->nseg;
	r->npat++;
	if (p->negate)
		r->negation = true;
	return 0;
}

/*
 * Compiles one pattern line (len bytes at t, trimmed, not a comment) into
 * r.  Returns 0, -ENOMEM, or -EINVAL with the reason in why, a phrase that
 * follows "pattern 'P' ".
 */
static int compile(struct rules *r, char *t, size_t len, enum line_kind kind,
		   char *why, size_t whysz)
{
	struct seg g[SEG_MAX + 2];
	struct pat p = {.tiers = ALL_TIERS};
	bool anchored = kind != LINE_EXCLUDE;
	size_t n = 0;
	const char *bad;

#define BAD(...)                                                               \
	do {                                                                   \
		snprintf(why, whysz, __VA_ARGS__);                             \
		return -EINVAL;                                                \
	} while (0)

	if (len && t[0] == '!') {
		if (kind != LINE_EXCLUDE)
			BAD("starts with '!': write 'exclude GLOB' to leave files out, or '\\!' for a name");
		p.negate = true;
		t++;
		len--;
	}
	if (len && t[len - 1] == '/') {
		if (kind == LINE_ALLOW)
			BAD("ends with '/': allowlist patterns name files, and directories are walked as needed");
		p.dir_only = true;
		len--;
	}
	if (len && t[0] == '/') {
		anchored = true;
		t++;
		len--;
	}
	if (len == 0)
		BAD("is empty");
	if (memchr(t, '/', len))
		anchored = true;
	if (kind == LINE_EXCLUDE) {
		const char *sl = memchr(t, '/', len);
		size_t first = sl ? (size_t)(sl - t) : len;

		for (unsigned i = 0; i < CKPT_TIER_COUNT; i++) {
			if (strlen(tier_names[i]) != first ||
			    memcmp(t, tier_names[i], first) != 0)
				continue;
			if (!sl)
				BAD("names a whole tier: use '%s/**' for its content, '**/%s' for that name",
				    tier_names[i], tier_names[i]);
			p.tiers = (uint8_t)(1u << i);
			t += first + 1;
			len -= first + 1;
			break;
		}
	}
	if (!anchored)
		g[n++] = (struct seg){.kind = SEG_DSTAR};
	for (size_t i = 0; i <= len;) {
		const char *sl = memchr(t + i, '/', len - i);
		size_t cl = sl ? (size_t)(sl - (t + i)) : len - i;
		char *c = t + i;

		if (cl == 0)
			BAD("has an empty component");
		if ((cl == 1 && c[0] == '.') ||
		    (cl == 2 && c[0] == '.' && c[1] == '.'))
			BAD("has a '.' or '..' component, which never matches a name");
		if (n == SEG_MAX + 1)
			BAD("has more than %d components", SEG_MAX);
		if (cl == 2 && c[0] == '*' && c[1] == '*') {
			/* "**" twice in a row is "**" once. */
			if (n == 0 || g[n - 1].kind != SEG_DSTAR)
				g[n++] = (struct seg){.kind = SEG_DSTAR};
		} else {
			bad = seg_compile(c, cl, &g[n]);
			if (bad)
				BAD("%s", bad);
			n++;
		}
		i += cl + 1;
	}
	/* A trailing "**" means what is inside: one component or more. */
	if (g[n - 1].kind == SEG_DSTAR) {
		g[n - 1] = (struct seg){.kind = SEG_ANY};
		g[n++] = (struct seg){.kind = SEG_DSTAR};
	}
	if (n > SEG_MAX)
		BAD("has more than %d components", SEG_MAX);
#undef BAD
	p.nseg = (uint8_t)n;
	for (size_t i = 0; i < n; i++)
		if (g[i].kind == SEG_DSTAR)
			p.dstar |= UINT64_C(1) << i;
	if (kind == LINE_DENY || kind == LINE_ALLOW)
		p.tiers = (uint8_t)(1u << CKPT_TIER_SESSION);
	return push_pat(r, &p, g);
}

/* Whether the byte at t[i] is escaped by an odd run of '\' before it. */
static bool escaped(const char *t, size_t i)
{
	size_t k = 0;

	while (k < i && t[i - k - 1] == '\\')
		k++;
	return k % 2 == 1;
}

/*
 * Compiles every line of a file (text, size bytes; patterns point into
 * it) into excl (exclude_from) or allow and deny (a backend).  path names
 * the file in errors.
 */
static int parse(char *text, size_t size, const char *path, struct rules *excl,
		 struct rules *allow, struct rules *deny, struct ckpt_err *err)
{
	unsigned line = 0;
	char why[160];

	for (size_t off = 0; off < size;) {
		char *t = text + off, *nl = memchr(t, '\n', size - off);
		size_t len = nl ? (size_t)(nl - t) : size - off;
		enum line_kind kind = excl ? LINE_EXCLUDE : LINE_ALLOW;
		const char *bad = NULL;
		char shown[64];
		int rc = 0;

		off += len + 1;
		line++;
		if (len && t[len - 1] == '\r')
			len--;
		while (len && (t[len - 1] == ' ' || t[len - 1] == '\t') &&
		       !escaped(t, len - 1))
			len--;
		if (len == 0 || t[0] == '#')
			continue;
		/* Taken now: compiling unescapes the line in place. */
		ckpt_escape(t, len, shown, sizeof(shown));
		for (size_t i = 0, l; i < len && !bad; i += l) {
			uint32_t cp;

			l = utf8_decode((const unsigned char *)t + i, len - i,
					&cp);
			if (l == 0)
				bad = "is not valid UTF-8";
			else if (cp < 0x20 && cp != '\t')
				bad = "contains a control character";
		}
		if (!bad && len > PATTERN_MAX)
			bad = "is longer than 4095 bytes";
		if (!bad && !excl && len >= 7 && memcmp(t, "exclude", 7) == 0 &&
		    (len == 7 || t[7] == ' ' || t[7] == '\t')) {
			kind = LINE_DENY;
			t += 7;
			len -= 7;
			while (len && (t[0] == ' ' || t[0] == '\t'))
				t++, len--;
			if (len == 0)
				bad = "has 'exclude' without a glob";
		}
		if (!bad) {
			rc = compile(kind == LINE_EXCLUDE ? excl
				     : kind == LINE_ALLOW ? allow
							  : deny,
				     t, len, kind, why, sizeof(why));
			if (rc == -ENOMEM)
				return ckpt_err_set(err, rc, "no-memory", NULL,
						    0, "out of memory");
			if (rc < 0)
				bad = why;
		}
		if (bad) {
			char file[96];

			ckpt_escape(path, strlen(path), file, sizeof(file));
			rc = ckpt_err_set(err, -EINVAL, "bad-pattern", path,
					  strlen(path),
					  "%s:%u: pattern '%s' %s", file, line,
					  shown, bad);
			if (err)
				err->line = line;
			return rc;
		}
	}
	return 0;
}

/* Reads a small regular file whole into *out (malloc'd).  A file that
 * grows while read is taken up to its size at open.  what ("exclude
 * file") and the path name it in errors. */
static int read_small(const char *path, const char *what, char **out,
		      size_t *len, struct ckpt_err *err)
{
	size_t plen = strlen(path), n = 0;
	char name[200], esc[160];
	struct stat st;
	char *buf = NULL;
	int fd = -1, rc;

	ckpt_escape(path, plen, esc, sizeof(esc));
	snprintf(name, sizeof(name), "%s %s", what, esc);
	/* O_NONBLOCK: a FIFO given by mistake must not hang the mount. */
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0 || fstat(fd, &st) < 0) {
		rc = -errno;
		ckpt_err_set(err, rc, "cannot-read", path, plen,
			     "cannot open the %s: %s", name, strerror(-rc));
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		rc = ckpt_err_set(err, -EINVAL, "cannot-read", path, plen,
				  "the %s is not a regular file", name);
		goto out;
	}
	if (st.st_size > FILE_MAX) {
		rc = ckpt_err_set(err, -EINVAL, "cannot-read", path, plen,
				  "the %s is over %u bytes", name, FILE_MAX);
		goto out;
	}
	buf = malloc((size_t)st.st_size + 1);
	if (!buf) {
		rc = ckpt_err_set(err, -ENOMEM, "no-memory", NULL, 0,
				  "out of memory");
		goto out;
	}
	while (n < (size_t)st.st_size) {
		ssize_t r = read(fd, buf + n, (size_t)st.st_size - n);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			rc = -errno;
			ckpt_err_set(err, rc, "cannot-read", path, plen,
				     "cannot read the %s: %s", name,
				     strerror(-rc));
			goto out;
		}
		if (r == 0)
			break;
		n += (size_t)r;
	}
	if (memchr(buf, '\0', n)) {
		rc = ckpt_err_set(err, -EINVAL, "bad-pattern", path, plen,
				  "the %s contains a NUL byte", name);
		goto out;
	}
	buf[n] = '\0';
	*out = buf;
	*len = n;
	buf = NULL;
	rc = 0;
out:
	free(buf);
	if (fd >= 0)
		close(fd);
	return rc;
}

/* Backend names are file names in one directory: no '/', no "..", no
 * hidden or backup files. */
static bool backend_name_ok(const char *name)
{
	size_t n = strlen(name);

	if (n == 0 || n > BACKEND_NAME_MAX || name[0] == '.' || name[0] == '-')
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = name[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      (c >= '0' && c <= '9') || c == '.' || c == '_' ||
		      c == '-' || c == '+'))
			return false;
	}
	return true;
}

static int unknown_backend(const char *name, const char *dir,
			   struct ckpt_err *err)
{
	char *list = ckpt_select_backends(dir);
	int saved = errno;
	char known[160] = "";
	size_t k = 0;
	int rc;

	for (const char *b = list; b && *b; b += strlen(b) + 1) {
		int w = snprintf(known + k, sizeof(known) - k, "%s%s",
				 k ? ", " : "", b);

		if (w < 0 || (size_t)w >= sizeof(known) - k) {
			/* Cut at a name, not inside one. */
			known[k] = '\0';
			snprintf(known + k, sizeof(known) - k, ", ...");
			break;
		}
		k += (size_t)w;
	}
	if (!list) {
		char esc[128];

		ckpt_escape(dir, strlen(dir), esc, sizeof(esc));
		rc = ckpt_err_set(err, -ENOENT, "unknown-backend", dir,
				  strlen(dir),
				  "unknown backend '%s': cannot read %s: %s",
				  name, esc, strerror(saved));
	} else if (k == 0)
		rc = ckpt_err_set(
			err, -ENOENT, "unknown-backend", dir, strlen(dir),
			"unknown backend '%s': the backends directory holds none",
			name);
	else
		rc = ckpt_err_set(
			err, -ENOENT, "unknown-backend", dir, strlen(dir),
			"unknown backend '%s' (known: %s)", name, known);
	free(list);
	return rc;
}

static void rules_free(struct rules *r)
{
	free(r->pat);
	free(r->seg);
}

void ckpt_select_free(struct ckpt_select *s)
{
	if (!s)
		return;
	rules_free(&s->excl);
	rules_free(&s->allow);
	rules_free(&s->deny);
	free(s->excl_text);
	free(s->backend_text);
	free(s);
}

int ckpt_select_open(const char *backend, const char *backends_dir,
		     const char *exclude_from, struct ckpt_select **out,
		     struct ckpt_err *err)
{
	struct ckpt_select *s = calloc(1, sizeof(*s));
	char *path = NULL;
	size_t len;
	int rc;

	*out = NULL;
	if (!s)
		return ckpt_err_set(err, -ENOMEM, "no-memory", NULL, 0,
				    "out of memory");
	if (backend) {
		if (!backend_name_ok(backend)) {
			rc = ckpt_err_set(
				err, -EINVAL, "unknown-backend", backend,
				strlen(backend),
				"not a backend name: use letters, digits, '.', '_', '+' and '-'");
			goto out;
		}
		if (!backends_dir) {
			rc = ckpt_err_set(
				err, -EINVAL, "unknown-backend", NULL, 0,
				"backend '%s' given without a backends directory",
				backend);
			goto out;
		}
		if (asprintf(&path, "%s/%s", backends_dir, backend) < 0) {
			path = NULL;
			rc = ckpt_err_set(err, -ENOMEM, "no-memory", NULL, 0,
					  "out of memory");
			goto out;
		}
		rc = read_small(path, "backend file", &s->backend_text, &len,
				err);
		if (rc == -ENOENT)
			rc = unknown_backend(backend, backends_dir, err);
		if (rc < 0)
			goto out;
		rc = parse(s->backend_text, len, path, NULL, &s->allow,
			   &s->deny, err);
		if (rc < 0)
			goto out;
		s->session = true;
	}
	if (exclude_from) {
		rc = read_small(exclude_from, "exclude file", &s->excl_text,
				&len, err);
		if (rc < 0)
			goto out;
		rc = parse(s->excl_text, len, exclude_from, &s->excl, NULL,
			   NULL, err);
		if (rc < 0)
			goto out;
	}
	*out = s;
	s = NULL;
	rc = 0;
out:
	free(path);
	ckpt_select_free(s);
	return rc;
}

/* ---- listing backends --------------------------------------------------- */

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

char *ckpt_select_backends(const char *backends_dir)
{
	DIR *d = opendir(backends_dir);
	char **names = NULL, *list = NULL;
	size_t n = 0, cap = 0, total = 1;
	struct dirent *de;

	if (!d)
		return NULL;
	while ((de = readdir(d))) {
		struct stat st;
		char **nn;

		/* Following links: a packager may alias one backend. */
		if (!backend_name_ok(de->d_name) ||
		    fstatat(dirfd(d), de->d_name, &st, 0) < 0 ||
		    !S_ISREG(st.st_mode))
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 8;
			nn = realloc(names, cap * sizeof(*nn));
			if (!nn)
				goto out;
			names = nn;
		}
		names[n] = strdup(de->d_name);
		if (!names[n])
			goto out;
		total += strlen(names[n++]) + 1;
	}
	if (n)
		qsort(names, n, sizeof(*names), cmp_str);
	list = malloc(total + 1);
	if (list) {
		char *p = list;

		for (size_t i = 0; i < n; i++)
			p = stpcpy(p, names[i]) + 1;
		p[0] = p[1] = '\0';
	}
out:
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
	closedir(d);
	return list;
}
