/*
 * policy.c - the one decision about which names a checkpoint may hold.
 *
 * Every path served through the mount and every path a save writes passes
 * ckpt_policy_check(); nothing else in ckptfs judges a name.  Invariant: the
 * check reads only its arguments (and the resolver), keeps no mutable static
 * state and allocates only when libunistring folds a long non-ASCII
 * component, so it is safe from any thread on every entry of a large archive.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <unicase.h>
#include <unictype.h>
#include <uninorm.h>

#include "internal.h"

#define NAME_MAX_BYTES 255  /* one component, as on every common fs */
#define PATH_MAX_BYTES 4095 /* a whole path or link target, without NUL */
#define MAX_HOPS       40   /* links followed while resolving, as Linux */
#define MAX_STEPS      4096 /* components processed while resolving */
#define PENDING_MAX    8192 /* bytes of not yet resolved components */
#define NORM_BUF       1024 /* folded component; longer ones are malloc'd */
#define PARENT_KEEP    32   /* longest parent name a denial refers to */

/* ---- characters --------------------------------------------------------- */

/* Code points never allowed in a name or link target: C0, DEL and C1
 * controls break terminals and logs; bidi controls make a name display
 * as something else ("txt.exe" shown as "exe.txt"). */
static bool cp_forbidden(uint32_t c)
{
	if (c < 0x20 || c == 0x7f || (c >= 0x80 && c <= 0x9f))
		return true;
	return c == 0x061c || c == 0x200e || c == 0x200f ||
	       (c >= 0x202a && c <= 0x202e) || (c >= 0x2066 && c <= 0x2069);
}

/* Returns NULL when s is valid UTF-8 free of forbidden code points, else
 * what is wrong with it, as the end of a sentence. */
static const char *text_bad(const unsigned char *s, size_t n)
{
	size_t i = 0;

	while (i < n) {
		uint32_t c = s[i];
		size_t l = 1;

		if (c >= 0x80) {
			l = utf8_decode(s + i, n - i, &c);
			if (l == 0)
				return "is not valid UTF-8";
		}
		if (c == 0)
			return "contains a NUL byte";
		if (cp_forbidden(c))
			return c >= 0x200 ? "contains a bidirectional control"
					  : "contains a control character";
		i += l;
	}
	return NULL;
}

/* ---- rule 1 and the lexical part of rule 2 ------------------------------ */

static const char *name_bad(const char *p, size_t len)
{
	const char *why;
	size_t start = 0;

	if (len == 0)
		return "is empty";
	if (len > PATH_MAX_BYTES)
		return "is longer than 4095 bytes";
	why = text_bad((const unsigned char *)p, len);
	if (why)
		return why;
	for (size_t i = 0; i <= len; i++) {
		if (i < len && p[i] != '/')
			continue;
		if (i - start > NAME_MAX_BYTES)
			return "has a component longer than 255 bytes";
		start = i + 1;
	}
	return NULL;
}

static const char *traversal_bad(const char *p, size_t len)
{
	size_t start = 0;

	if (p[0] == '/')
		return "is absolute";
	/* A backslash is a separator on restore to Windows or through Samba;
	 * no legitimate tool names a file with one. */
	if (memchr(p, '\\', len))
		return "contains a backslash";
	for (size_t i = 0; i <= len; i++) {
		size_t n = i - start;

		if (i < len && p[i] != '/')
			continue;
		if (n == 0)
			return "has an empty component";
		if (p[start] == '.' &&
		    (n == 1 || (n == 2 && p[start + 1] == '.')))
			return "has a '.' or '..' component";
		start = i + 1;
	}
	return NULL;
}

/* ---- normalising one component ------------------------------------------ */

/*
 * A component as a case-insensitive or Unicode-normalising filesystem
 * would see it on restore: default-ignorable code points removed, full case
 * fold plus NFKC.  Two small additions cover upcase-table filesystems
 * (NTFS, exFAT) that full folding alone misses: U+0131 DOTLESS I upcases to
 * 'I', and "i" + U+0307 is what U+0130 folds to, so both become "i".
 */
struct norm {
	uint8_t buf[NORM_BUF];
	uint8_t *s; /* buf, or a string malloc'd by libunistring */
	size_t len;
};

static void norm_release(struct norm *nm)
{
	if (nm->s != nm->buf)
		free(nm->s);
}

/* Drops default-ignorable code points from s (valid UTF-8) into out, which
 * has room for n bytes.  Returns the new length. */
static size_t drop_ignorables(const uint8_t *s, size_t n, uint8_t *out)
{
	size_t i = 0, w = 0;

	while (i < n) {
		uint32_t c = s[i];
		size_t l = c < 0x80 ? 1 : utf8_decode(s + i, n - i, &c);

		if (l == 0)
			l = 1, c = s[i]; /* cannot happen: input was checked */
		if (c == 0x131) {
			out[w++] = 'i';
		} else if (c == 0x307 && w > 0 && out[w - 1] == 'i') {
			/* dot above on i: U+0130 folded */
		} else if (c < 0x80 ||
			   !uc_is_property_default_ignorable_code_point(c)) {
			memmove(out + w, s + i, l);
			w += l;
		}
		i += l;
	}
	return w;
}

/* Fills nm for component c (n <= NAME_MAX_BYTES, checked text).  Returns 0
 * or -ENOMEM; nm must be released either way. */
static int normalise(const char *c, size_t n, struct norm *nm)
{
	uint8_t pre[NAME_MAX_BYTES];
	size_t plen, i;

	nm->s = nm->buf;
	nm->len = 0;
	for (i = 0; i < n && !((unsigned char)c[i] & 0x80); i++)
		;
	if (i == n) {
		/* The common case, hundreds of thousands of times per archive:
		 * ASCII folds to lower case and nothing else. */
		for (i = 0; i < n; i++) {
			unsigned char ch = (unsigned char)c[i];

			nm->buf[i] = ch >= 'A' && ch <= 'Z' ? ch + 32 : ch;
		}
		nm->len = n;
		return 0;
	}
	/* Ignorables go before folding, since one between a letter and its
	 * combining mark would stop NFKC composing them, and again after,
	 * in case folding produced one. */
	plen = drop_ignorables((const uint8_t *)c, n, pre);
	if (plen == 0)
		return 0;
	nm->len = sizeof(nm->buf);
	nm->s = u8_casefold(pre, plen, NULL, UNINORM_NFKC, nm->buf, &nm->len);
	if (!nm->s) {
		nm->s = nm->buf;
		nm->len = 0;
		return -ENOMEM;
	}
	nm->len = drop_ignorables(nm->s, nm->len, nm->s);
	return 0;
}

static bool ends_with(const uint8_t *s, size_t n, const char *suf, size_t sl)
{
	return n >= sl && memcmp(s + n - sl, suf, sl) == 0;
}

/* Strips what Windows drops from the end of a name: the "::$DATA" stream
 * suffix, spaces, and (when dots) trailing dots, until nothing changes. */
static size_t strip_tail(const uint8_t *s, size_t n, bool dots)
{
	for (;;) {
		if (ends_with(s, n, "::$data", 7))
			n -= 7;
		else if (n > 0 &&
			 (s[n - 1] == ' ' || (dots && s[n - 1] == '.')))
			n--;
		else
			return n;
	}
}

/* The normalising part of rule 2.  Trailing dots are kept here: stripping
 * them would make "..." equal "" and ".." equal "", and "..." is a legal
 * name that no filesystem resolves to a parent. */
static const char *norm_traversal_bad(const struct norm *nm)
{
	size_t n = strip_tail(nm->s, nm->len, false);

	if (memchr(nm->s, '/', nm->len) || memchr(nm->s, '\\', nm->len))
		return "has a component that normalises to a separator";
	/* A name made only of ignorables or spaces vanishes on restore and
	 * would name its parent directory. */
	if (n == 0)
		return "has a component that normalises to nothing";
	if (nm->s[0] == '.' && (n == 1 || (n == 2 && nm->s[1] == '.')))
		return "has a component that normalises to '.' or '..'";
	return NULL;
}

/* ---- rule 4: credential and capability-config names --------------------- */

enum deny_match {
	M_EXACT,
	M_PREFIX,
	M_SUFFIX
};

enum deny_scope {
	S_ANYWHERE,   /* in any directory */
	S_CONFIG_DIR, /* directly in session/, or in a directory named .x */
	S_PARENT,     /* in a directory with the given (normalised) name */
};

struct deny {
	const char *name; /* normalised: folded, stripped */
	unsigned char len;
	unsigned char match; /* enum deny_match */
	unsigned char scope; /* enum deny_scope */
	const char *parent;  /* S_PARENT only */
	unsigned char plen;
};

/* clang-format off */
#define DENY(n, m, s)    {n, sizeof(n) - 1, m, s, NULL, 0}
#define DENY_IN(n, m, p) {n, sizeof(n) - 1, m, S_PARENT, p, sizeof(p) - 1}
/* clang-format on */

/* The one list.  Names are compared after normalise() and strip_tail(), so
 * each entry is lower case with no trailing dot or space. */
static const struct deny deny_table[] = {
	/* Agent logins: OAuth tokens that let anyone act as the user. */
	DENY(".credentials.json", M_EXACT, S_ANYWHERE),
	DENY(".claude.json", M_EXACT, S_ANYWHERE),
	/* Passwords and tokens for remote services, git, databases and
	 * package registries, and web server password files. */
	DENY(".netrc", M_EXACT, S_ANYWHERE),
	DENY("_netrc", M_EXACT, S_ANYWHERE),
	DENY(".git-credentials", M_EXACT, S_ANYWHERE),
	DENY(".pgpass", M_EXACT, S_ANYWHERE),
	DENY(".npmrc", M_EXACT, S_ANYWHERE),
	DENY(".pypirc", M_EXACT, S_ANYWHERE),
	DENY(".htpasswd", M_EXACT, S_ANYWHERE),
	/* Environment files hold API keys by convention.  ".env.<x>" is
	 * hidden whatever x is, ".env.example" included: templates are meant
	 * to be empty, but real values are pasted into them often enough, and
	 * the name alone cannot tell.  "my.env" and "envrc" are not these. */
	DENY(".env", M_EXACT, S_ANYWHERE),
	DENY(".env.", M_PREFIX, S_ANYWHERE),
	DENY(".envrc", M_EXACT, S_ANYWHERE),
	/* SSH and PuTTY private keys; the ".pub" halves are public. */
	DENY("id_rsa", M_EXACT, S_ANYWHERE),
	DENY("id_dsa", M_EXACT, S_ANYWHERE),
	DENY("id_ecdsa", M_EXACT, S_ANYWHERE),
	DENY("id_ed25519", M_EXACT, S_ANYWHERE),
	DENY("id_ecdsa_sk", M_EXACT, S_ANYWHERE),
	DENY("id_ed25519_sk", M_EXACT, S_ANYWHERE),
	DENY(".ppk", M_SUFFIX, S_ANYWHERE),
	/* Google application default credentials: a refresh token. */
	DENY("application_default_credentials.json", M_EXACT, S_ANYWHERE),
	/* Capability config: which tools an agent may run without asking,
	 * its hooks, and codex's login.  Restoring one from a checkpoint
	 * would let a checkpoint grant itself permissions.  These names are
	 * ordinary in a project tree, so only where tools keep config: the
	 * session tier root or a dot directory (.claude, .codex, .vscode). */
	DENY("settings.json", M_EXACT, S_CONFIG_DIR),
	DENY("settings.local.json", M_EXACT, S_CONFIG_DIR),
	DENY("permissions.json", M_EXACT, S_CONFIG_DIR),
	DENY("auth.json", M_EXACT, S_CONFIG_DIR),
	DENY("config.toml", M_EXACT, S_CONFIG_DIR),
	/* Cloud CLI logins, recognised by the directory that holds them:
	 * "config" and "credentials" are common names elsewhere. */
	DENY_IN("credentials", M_EXACT, ".aws"),
	DENY_IN("config", M_EXACT, ".aws"),
	DENY_IN("config.json", M_EXACT, ".docker"),
	DENY_IN("config", M_EXACT, ".kube"),
	DENY_IN("credentials.db", M_EXACT, "gcloud"),
	DENY_IN("access_tokens.db", M_EXACT, "gcloud"),
};

/* The normalised, stripped name of the previous component, as far as a
 * denial can refer to it. */
struct parent {
	uint8_t s[PARENT_KEEP];
	size_t len;    /* full length; only the first PARENT_KEEP bytes kept */
	uint8_t first; /* first byte before stripping: "..." starts with '.' */
	bool set;
};

static bool parent_is(const struct parent *par, const char *name, size_t n)
{
	return par->set && par->len == n && memcmp(par->s, name, n) == 0;
}

/* Returns the denial that name (normalised and stripped) falls under, or
 * NULL.  session_root: the name is directly in the session tier. */
static const struct deny *deny_find(const uint8_t *s, size_t n,
				    const struct parent *par, bool session_root)
{
	bool config_dir = session_root || (par->set && par->first == '.');

	for (size_t i = 0; i < sizeof(deny_table) / sizeof(deny_table[0]);
	     i++) {
		const struct deny *d = &deny_table[i];
		bool hit;

		if (d->match == M_EXACT)
			hit = n == d->len && memcmp(s, d->name, n) == 0;
		else if (d->match == M_PREFIX)
			hit = n > d->len && memcmp(s, d->name, d->len) == 0;
		else
			hit = ends_with(s, n, d->name, d->len);
		if (!hit)
			continue;
		if (d->scope == S_ANYWHERE ||
		    (d->scope == S_CONFIG_DIR && config_dir) ||
		    (d->scope == S_PARENT &&
		     parent_is(par, d->parent, d->plen)))
			return d;
	}
	return NULL;
}

/*
 * Walks the components once: each is normalised, checked for the
 * normalising part of rule 2 (returned at once in *why), and matched
 * against the denials.  The first denial is only remembered in *deny,
 * because rule 3 must be reported before rule 4.
 */
static int scan_components(const char *p, size_t len, const char **why,
			   const struct deny **deny)
{
	struct parent par = {.set = false};
	struct norm nm;
	size_t start = 0, idx = 0;
	bool session = len >= 8 && memcmp(p, "session/", 8) == 0;

	*why = NULL;
	*deny = NULL;
	for (size_t i = 0; i <= len; i++) {
		size_t n = i - start, cl;
		int rc;

		if (i < len && p[i] != '/')
			continue;
		rc = normalise(p + start, n, &nm);
		if (rc < 0) {
			norm_release(&nm);
			return rc;
		}
		*why = norm_traversal_bad(&nm);
		if (*why) {
			norm_release(&nm);
			return 0;
		}
		cl = strip_tail(nm.s, nm.len, true);
		if (!*deny)
			*deny = deny_find(nm.s, cl, &par, session && idx == 1);
		par.set = true;
		par.first = nm.s[0]; /* nm.len > 0: checked just above */
		par.len = cl;
		memcpy(par.s, nm.s, cl < PARENT_KEEP ? cl : PARENT_KEEP);
		norm_release(&nm);
		start = i + 1;
		idx++;
	}
	return 0;
}

/* ---- rule 3: tiers ------------------------------------------------------ */

static const char *const tier_names[CKPT_TIER_COUNT] = {
	[CKPT_TIER_WORLD] = "world",
	[CKPT_TIER_WORKSPACE] = "workspace",
	[CKPT_TIER_SESSION] = "session",
};

/* The tier of path's first component, compared byte for byte: a tier name
 * is ours, not the user's, so "Workspace" is simply not one.  Returns -1
 * when there is none. */
static int tier_of(const char *p, size_t len)
{
	const char *slash = memchr(p, '/', len);
	size_t n = slash ? (size_t)(slash - p) : len;

	for (int t = 0; t < CKPT_TIER_COUNT; t++)
		if (strlen(tier_names[t]) == n &&
		    memcmp(p, tier_names[t], n) == 0)
			return t;
	return -1;
}

/* ---- rule 6: symlinks --------------------------------------------------- */

/* A link target that could be followed at all, or why not. */
static const char *target_bad(const char *t, size_t n)
{
	const char *why;

	if (n == 0)
		return "is empty";
	if (n > PATH_MAX_BYTES)
		return "is longer than 4095 bytes";
	why = text_bad((const unsigned char *)t, n);
	if (why)
		return why;
	if (memchr(t, '\\', n))
		return "contains a backslash";
	if (t[0] == '/')
		return "is absolute";
	return NULL;
}

/*
 * State of one resolution, like realpath(3) but over the archive's tree.
 * path is the stack of resolved components; pending holds the components
 * still to process, packed at the end of the buffer so that a link's
 * target can be put in front of them.
 */
struct walk {
	char path[PATH_MAX_BYTES + 1]; /* '/'-joined, NUL-terminated */
	size_t plen;
	unsigned depth; /* components in path; 1 is the tier root */
	char pending[PENDING_MAX];
	size_t pstart; /* pending text is pending[pstart..PENDING_MAX) */
	char target[PATH_MAX_BYTES + 1];
};

static bool pending_push(struct walk *w, const char *t, size_t n)
{
	if (w->pstart < n + 1)
		return false;
	w->pstart -= n + 1;
	memcpy(w->pending + w->pstart, t, n);
	w->pending[w->pstart + n] = '/';
	return true;
}

static void stack_pop(struct walk *w)
{
	while (w->plen > 0 && w->path[w->plen - 1] != '/')
		w->plen--;
	if (w->plen > 0)
		w->plen--;
	w->path[w->plen] = '\0';
	w->depth--;
}

/*
 * Why following chains matters: with workspace/a/b -> "." and
 * workspace/t -> "a/b/../..", t is inside its tier lexically (a, b, .., ..
 * cancel out) but really names a/../.., the checkpoint root, because b is
 * a/.  So each component that is a link is replaced by its target before
 * the next ".." is applied, exactly as the kernel will do after a restore.
 * Links the resolver does not know are judged lexically.
 */
static const char *symlink_bad(const struct ckpt_policy_entry *e,
			       const struct ckpt_resolver *r, struct walk *w)
{
	const char *why = target_bad(e->target, e->target_len);
	unsigned hops = 0, steps = 0;

	if (why)
		return why;
	/* Start in the link's directory; rule 3 made sure there is one. */
	w->plen = e->len;
	while (w->plen > 0 && e->path[w->plen - 1] != '/')
		w->plen--;
	if (w->plen == 0)
		return "has no directory";
	w->plen--;
	memcpy(w->path, e->path, w->plen);
	w->path[w->plen] = '\0';
	w->depth = 1;
	for (size_t i = 0; i < w->plen; i++)
		w->depth += w->path[i] == '/';
	w->pstart = PENDING_MAX;
	pending_push(w, e->target, e->target_len);

	while (w->pstart < PENDING_MAX) {
		const char *c = w->pending + w->pstart;
		const char *end = memchr(c, '/', PENDING_MAX - w->pstart);
		size_t n = (size_t)(end - c); /* every component ends in '/' */
		size_t tlen = 0;
		int rc;

		w->pstart += n + 1;
		if (++steps > MAX_STEPS)
			return "needs too many steps to resolve";
		if (n == 0 || (n == 1 && c[0] == '.'))
			continue;
		if (n == 2 && c[0] == '.' && c[1] == '.') {
			if (w->depth <= 1)
				return "resolves outside its tier";
			stack_pop(w);
			continue;
		}
		if (w->plen + 1 + n > PATH_MAX_BYTES)
			return "resolves to a path longer than 4095 bytes";
		w->path[w->plen++] = '/';
		memcpy(w->path + w->plen, c, n);
		w->plen += n;
		w->path[w->plen] = '\0';
		w->depth++;
		if (!r || !r->lookup)
			continue;
		rc = r->lookup(r->ctx, w->path, w->plen, w->target,
			       sizeof(w->target), &tlen);
		if (rc == -ENOENT || rc == -ENOTDIR || rc == CKPT_FILE ||
		    rc == CKPT_DIR)
			continue;
		/* Anything else the tree cannot vouch for fails closed. */
		if (rc != CKPT_SYMLINK)
			return "passes through an entry that cannot be read";
		if (++hops > MAX_HOPS)
			return "passes through more than 40 links";
		stack_pop(w);
		if (tlen >= sizeof(w->target) || target_bad(w->target, tlen))
			return "passes through a link with an unsafe target";
		if (!pending_push(w, w->target, tlen))
			return "needs too many steps to resolve";
	}
	return NULL;
}

/* ---- the decision ------------------------------------------------------- */

#define DENY_RET(rule, fmt, ...)                                               \
	ckpt_err_set(err, -ENOENT, rule, e->path, e->len, fmt, __VA_ARGS__)

int ckpt_policy_check(unsigned flags, const struct ckpt_policy_entry *e,
		      const struct ckpt_resolver *resolver,
		      struct ckpt_err *err)
{
	const struct deny *deny;
	const char *why;
	struct walk w;
	int tier, rc;

	if (!e->path || e->len == 0)
		return DENY_RET("bad-name", "entry name %s", "is empty");
	why = name_bad(e->path, e->len);
	if (why)
		return DENY_RET("bad-name", "entry name %s", why);
	why = traversal_bad(e->path, e->len);
	if (why)
		return DENY_RET("traversal", "entry name %s", why);
	rc = scan_components(e->path, e->len, &why, &deny);
	if (rc < 0)
		return ckpt_err_set(err, rc, "no-memory", e->path, e->len,
				    "out of memory while normalising a name");
	if (why)
		return DENY_RET("traversal", "entry name %s", why);

	tier = tier_of(e->path, e->len);
	if (tier < 0) {
		/* The manifest is the only thing outside the tiers. */
		if (e->type == CKPT_FILE && e->len == 13 &&
		    memcmp(e->path, "manifest.json", 13) == 0)
			return 0;
		return DENY_RET("outside-tier", "%s",
				"entry is not under world/, workspace/ or "
				"session/");
	}
	if (e->len == strlen(tier_names[tier]) && e->type != CKPT_DIR)
		return DENY_RET("outside-tier",
				"tier root %s is not a directory",
				tier_names[tier]);
	if ((flags & CKPT_POLICY_WORKSPACE_ONLY) && tier == CKPT_TIER_SESSION)
		return DENY_RET("workspace-only", "%s",
				"the session tier is not served with "
				"workspace_only");
	if (deny)
		return DENY_RET("credential",
				"'%s%s%s' is a credential or capability-config "
				"name, never stored or served",
				deny->match == M_SUFFIX ? "*" : "", deny->name,
				deny->match == M_PREFIX ? "*" : "");
	if (e->type == CKPT_SPECIAL)
		return DENY_RET("special-file", "%s",
				"devices, FIFOs and sockets are never served");
	if (e->type == CKPT_SYMLINK) {
		why = symlink_bad(e, resolver, &w);
		if (why)
			return DENY_RET("symlink-escape", "symlink target %s",
					why);
	}
	return 0;
}

unsigned ckpt_policy_mode(enum ckpt_type type, unsigned recorded_mode)
{
	if (type == CKPT_DIR)
		return 0555;
	if (type == CKPT_SYMLINK)
		return 0777;
	/* Archives written by non-Unix tools record no mode at all. */
	if ((recorded_mode & 0777) == 0)
		return 0444;
	return recorded_mode & 0555;
}

static bool name_char(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '+' ||
	       c == '@' || c == '-';
}

int ckpt_name_check(const char *name, size_t len)
{
	/* A leading '.' would hide the file and allow "." and ".."; a
	 * leading '-' would read as an option on a command line. */
	if (len == 0 || name[0] == '.' || name[0] == '-')
		return -EINVAL;
	for (size_t i = 0; i < len; i++)
		if (!name_char((unsigned char)name[i]))
			return -EINVAL;
	return len > 200 ? -ENAMETOOLONG : 0;
}

int ckpt_policy_may_change(const char *origin, bool by_agent)
{
	/* A user's checkpoint is read-only from the agent's side; what the
	 * agent or the daemon made, the agent may tidy. */
	if (by_agent && (!origin || strcmp(origin, "user") == 0))
		return -EPERM;
	return 0;
}
