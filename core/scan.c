/*
 * scan.c - the secret scanner: every byte a save writes passes here.
 *
 * Each rule is anchored on a literal (a key prefix, a PEM header, a
 * keyword).  The hot loop looks every pair of adjacent bytes up in a table
 * of the pairs that anchors contain (no regex, one load per byte), and only
 * where one is found compares the anchors of that pair and then the rule's
 * exact shape: lengths, character classes, boundaries, entropy.
 * Invariant: each position of a file is tried exactly once and always sees
 * the same window of bytes, [anchor - BEHIND, anchor + MAXTOK), however the
 * file was split into feed() calls, so a finding and its fingerprint never
 * depend on the split.  Matched bytes are copied only to be hashed, then
 * wiped.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "internal.h"
#include "scan.h"

#define BEHIND 16		   /* bytes a rule may read before its anchor */
#define MAXTOK CKPT_SCAN_MAX_MATCH /* bytes a rule reads from its anchor */
#define MAXOFF 10		   /* no anchor.off is larger */
/* A position waits until LA bytes from it are known, and keeps LB bytes
 * before it, so that every window is complete when it is tried. */
#define LB	 32   /* >= BEHIND + MAXOFF */
#define LA	 2048 /* > MAXTOK + 1 */
#define HIST	 (LB + LA)
#define KEYFP	 1024 /* base64 characters of a private key fingerprinted */
#define SENTINEL 256  /* at() past the window: belongs to no class */

_Static_assert(LB >= BEHIND + MAXOFF, "lookbehind too short");
_Static_assert(LA > MAXTOK + 1, "lookahead too short");

/* ---- rules -------------------------------------------------------------- */

enum rule {
	R_AWS_KEY,
	R_AWS_SECRET,
	R_GH_CLASSIC,
	R_GH_FINE,
	R_GH_OAUTH,
	R_GH_APP,
	R_GH_REFRESH,
	R_GITLAB,
	R_ANT_API,
	R_ANT_ADMIN,
	R_ANT_OAUTH,
	R_OPENAI,
	R_SLACK,
	R_SLACK_HOOK,
	R_STRIPE,
	R_GOOGLE,
	R_PEM_RSA,
	R_PEM_EC,
	R_PEM_DSA,
	R_PEM_OPENSSH,
	R_PEM_PKCS8,
	R_PEM_PGP,
	R_JWT,
	R_NPM,
	R_PYPI,
	R_HF,
	R_SENDGRID,
	R_TWILIO,
	R_DO,
	R_AZURE,
	R_VAULT,
	R_AGE,
	R_COUNT
};

static const struct ckpt_scan_rule_info rules[R_COUNT] = {
	[R_AWS_KEY] = {"aws-access-key-id",
		       "AWS access key ID: AKIA, ASIA, ABIA or ACCA and 16 of "
		       "[A-Z2-7]"},
	[R_AWS_SECRET] =
		{"aws-secret-access-key",
		 "AWS secret access key: 40 of [A-Za-z0-9/+] with upper "
		 "and lower case and a digit, / or +, within 80 bytes "
		 "after aws_secret or secret_access_key (any case)"},
	[R_GH_CLASSIC] =
		{"github-pat-classic",
		 "GitHub classic personal access token: ghp_ and 36 of "
		 "[A-Za-z0-9]"},
	[R_GH_FINE] = {"github-pat-fine-grained",
		       "GitHub fine-grained personal access token: github_pat_ "
		       "and 82 of [A-Za-z0-9_]"},
	[R_GH_OAUTH] =
		{"github-oauth",
		 "GitHub OAuth access token: gho_ and 36 of [A-Za-z0-9]"},
	[R_GH_APP] = {"github-app",
		      "GitHub App token: ghu_ or ghs_ and 36 of [A-Za-z0-9]"},
	[R_GH_REFRESH] =
		{"github-refresh",
		 "GitHub refresh token: ghr_ and 36 or more of [A-Za-z0-9]"},
	[R_GITLAB] = {"gitlab-pat",
		      "GitLab personal access token: glpat- and 20 or more of "
		      "[A-Za-z0-9_-]"},
	[R_ANT_API] = {"anthropic-api-key",
		       "Anthropic API key: sk-ant-api03- and 80 or more of "
		       "[A-Za-z0-9_-]"},
	[R_ANT_ADMIN] =
		{"anthropic-admin-key",
		 "Anthropic admin key: sk-ant-admin01- and 80 or more of "
		 "[A-Za-z0-9_-]"},
	[R_ANT_OAUTH] =
		{"anthropic-oauth",
		 "Anthropic OAuth token: sk-ant-oat01- or sk-ant-ort01- "
		 "and 80 or more of [A-Za-z0-9_-]"},
	[R_OPENAI] = {"openai-api-key",
		      "OpenAI API key: sk-proj-, sk-svcacct- or sk-admin- and "
		      "40 or more of [A-Za-z0-9_-], or sk- and 48 of "
		      "[A-Za-z0-9] containing T3BlbkFJ"},
	[R_SLACK] = {"slack-token",
		     "Slack token: xoxb-, xoxp-, xoxa-, xoxr- or xoxs- and 20 "
		     "or more of [A-Za-z0-9-], starting with a digit and "
		     "containing a dash"},
	[R_SLACK_HOOK] =
		{"slack-webhook",
		 "Slack incoming webhook: "
		 "hooks.slack.com/services/T[A-Z0-9]{8,}/B[A-Z0-9]{8,}/ "
		 "and 24 of [A-Za-z0-9]"},
	[R_STRIPE] =
		{"stripe-secret-key",
		 "Stripe secret or restricted key, live or test: sk_live_, "
		 "rk_live_, sk_test_ or rk_test_ and 24 or more of "
		 "[A-Za-z0-9]"},
	[R_GOOGLE] = {"google-api-key",
		      "Google API key: AIza and 35 of [A-Za-z0-9_-]"},
	[R_PEM_RSA] =
		{"private-key-rsa",
		 "PEM RSA private key: -----BEGIN RSA PRIVATE KEY----- and "
		 "64 or more base64 characters"},
	[R_PEM_EC] = {"private-key-ec",
		      "PEM EC private key: -----BEGIN EC PRIVATE KEY----- and "
		      "64 or more base64 characters"},
	[R_PEM_DSA] =
		{"private-key-dsa",
		 "PEM DSA private key: -----BEGIN DSA PRIVATE KEY----- and "
		 "64 or more base64 characters"},
	[R_PEM_OPENSSH] =
		{"private-key-openssh",
		 "OpenSSH private key: -----BEGIN OPENSSH PRIVATE KEY----- "
		 "and 64 or more base64 characters"},
	[R_PEM_PKCS8] = {"private-key-pkcs8",
			 "PKCS#8 private key, plain or encrypted: -----BEGIN "
			 "[ENCRYPTED ]PRIVATE KEY----- and 64 or more base64 "
			 "characters"},
	[R_PEM_PGP] = {"private-key-pgp",
		       "PGP private key block: -----BEGIN PGP PRIVATE KEY "
		       "BLOCK----- and 64 or more base64 characters"},
	[R_JWT] = {"jwt", "JSON Web Token: eyJ header (decoding to JSON with "
			  "\"alg\"), eyJ payload, signature of 20 or more, "
			  "base64url, dot-separated"},
	[R_NPM] = {"npm-token", "npm access token: npm_ and 36 of [A-Za-z0-9]"},
	[R_PYPI] = {"pypi-token",
		    "PyPI upload token: pypi-AgEIcHlwaS5vcmc (or the "
		    "test.pypi.org form) and 50 or more of [A-Za-z0-9_-]"},
	[R_HF] = {"huggingface-token",
		  "Hugging Face token: hf_ and 34 of [A-Za-z], both cases"},
	[R_SENDGRID] =
		{"sendgrid-api-key",
		 "SendGrid API key: SG., 22 of [A-Za-z0-9_-], a dot and 43 "
		 "of [A-Za-z0-9_-]"},
	[R_TWILIO] = {"twilio-api-key",
		      "Twilio API key: SK and 32 of [0-9a-f], with digits and "
		      "letters"},
	[R_DO] = {"digitalocean-token",
		  "DigitalOcean token: dop_v1_, doo_v1_ or dor_v1_ and 64 "
		  "of [0-9a-f]"},
	[R_AZURE] = {"azure-client-secret",
		     "Azure AD client secret: 3 of [A-Za-z0-9_~.-], a digit, "
		     "Q~ and 31 to 34 of [A-Za-z0-9_~.-]"},
	[R_VAULT] = {"hashicorp-vault-token",
		     "HashiCorp Vault token: hvs. or hvb. and 90 or more of "
		     "[A-Za-z0-9_-]"},
	[R_AGE] = {"age-secret-key",
		   "age secret key: AGE-SECRET-KEY-1 and 58 bech32 "
		   "characters (upper case)"},
};

size_t ckpt_scan_rules(const struct ckpt_scan_rule_info **out)
{
	*out = rules;
	return R_COUNT;
}

/* ---- character classes -------------------------------------------------- */

enum {
	C_UP = 1 << 0,
	C_LO = 1 << 1,
	C_DIG = 1 << 2,
	C_US = 1 << 3,	  /* _ */
	C_DASH = 1 << 4,  /* - */
	C_PLUS = 1 << 5,  /* + */
	C_SLASH = 1 << 6, /* / */
	C_DOT = 1 << 7,
	C_TILDE = 1 << 8,
	C_HEX = 1 << 9,	  /* [0-9a-f]: lower case only */
	C_B32 = 1 << 10,  /* [A-Z2-7] */
	C_BECH = 1 << 11, /* bech32, upper case */
};

#define ALPHA (C_UP | C_LO)
#define ALNUM (C_UP | C_LO | C_DIG)
#define WORD  (ALNUM | C_US | C_DASH) /* also base64url */
#define B64   (ALNUM | C_PLUS | C_SLASH)
#define AZURE (WORD | C_DOT | C_TILDE)

/* Ranges are disjoint: an overlapping designated initializer would
 * silently replace the earlier one. */
static const uint16_t cls[SENTINEL + 1] = {
	['0'] = C_DIG | C_HEX | C_BECH,
	['1'] = C_DIG | C_HEX,
	['2' ... '7'] = C_DIG | C_HEX | C_B32 | C_BECH,
	['8' ... '9'] = C_DIG | C_HEX | C_BECH,
	['A'] = C_UP | C_B32 | C_BECH,
	['B'] = C_UP | C_B32,
	['C' ... 'H'] = C_UP | C_B32 | C_BECH,
	['I'] = C_UP | C_B32,
	['J' ... 'N'] = C_UP | C_B32 | C_BECH,
	['O'] = C_UP | C_B32,
	['P' ... 'Z'] = C_UP | C_B32 | C_BECH,
	['a' ... 'f'] = C_LO | C_HEX,
	['g' ... 'z'] = C_LO,
	['_'] = C_US,
	['-'] = C_DASH,
	['+'] = C_PLUS,
	['/'] = C_SLASH,
	['.'] = C_DOT,
	['~'] = C_TILDE,
};

/* ---- anchors ------------------------------------------------------------ */

enum kind {
	K_RUN,	      /* literal, then a run of one class */
	K_AWS_SECRET, /* keyword, then a 40-character value nearby */
	K_HOOK,
	K_PEM,
	K_JWT,
	K_SENDGRID,
	K_AZURE,
};

/* K_RUN checks */
#define F_EDGE64  0x01 /* no + or / on either side: not inside base64 */
#define F_MIXED	  0x02 /* upper and lower case letters */
#define F_DIGLET  0x04 /* digits and letters */
#define F_EXAMPLE 0x08 /* "EXAMPLE" marks the documentation's sample */
#define F_T3	  0x10 /* contains T3BlbkFJ ("OpenAI" in base64) */
#define F_SLACK	  0x20 /* starts with a digit and contains a dash */

struct anchor {
	const char *lit; /* compared exactly */
	uint8_t len;
	uint8_t off; /* lit[off], lit[off + 1] are the pair looked up: the
		      * rarest pair in source text, not always the first */
	uint8_t rule;
	uint8_t kind;
	uint16_t cls; /* K_RUN: class of the body */
	uint16_t min; /* K_RUN: body length */
	uint16_t max; /* 0: as long as the window */
	uint8_t mind; /* minimum distinct bytes in the body, against
		       * placeholders such as xxxx */
	uint8_t flags;
};

/* clang-format off */
#define RUN(l, o, r, c, mn, mx, d, f) \
	{l, sizeof(l) - 1, o, r, K_RUN, c, mn, mx, d, f}
#define KW(l, o, r, k) {l, sizeof(l) - 1, o, r, k, 0, 0, 0, 0, 0}

static const struct anchor anchors[] = {
	RUN("AKIA", 2, R_AWS_KEY, C_B32, 16, 16, 5, F_EDGE64 | F_EXAMPLE),
	RUN("ASIA", 2, R_AWS_KEY, C_B32, 16, 16, 5, F_EDGE64 | F_EXAMPLE),
	RUN("ABIA", 2, R_AWS_KEY, C_B32, 16, 16, 5, F_EDGE64 | F_EXAMPLE),
	RUN("ACCA", 2, R_AWS_KEY, C_B32, 16, 16, 5, F_EDGE64 | F_EXAMPLE),
	KW("secret", 2, R_AWS_SECRET, K_AWS_SECRET),
	KW("Secret", 2, R_AWS_SECRET, K_AWS_SECRET),
	KW("SECRET", 2, R_AWS_SECRET, K_AWS_SECRET),
	RUN("ghp_", 0, R_GH_CLASSIC, ALNUM, 36, 36, 10, 0),
	RUN("gho_", 0, R_GH_OAUTH, ALNUM, 36, 36, 10, 0),
	RUN("ghu_", 0, R_GH_APP, ALNUM, 36, 36, 10, 0),
	RUN("ghs_", 0, R_GH_APP, ALNUM, 36, 36, 10, 0),
	RUN("ghr_", 0, R_GH_REFRESH, ALNUM, 36, 0, 10, 0),
	RUN("github_pat_", 0, R_GH_FINE, ALNUM | C_US, 82, 82, 16, 0),
	RUN("glpat-", 0, R_GITLAB, WORD, 20, 0, 7, 0),
	RUN("sk-ant-api03-", 1, R_ANT_API, WORD, 80, 0, 16, 0),
	RUN("sk-ant-admin01-", 1, R_ANT_ADMIN, WORD, 80, 0, 16, 0),
	RUN("sk-ant-oat01-", 1, R_ANT_OAUTH, WORD, 80, 0, 16, 0),
	RUN("sk-ant-ort01-", 1, R_ANT_OAUTH, WORD, 80, 0, 16, 0),
	RUN("sk-proj-", 1, R_OPENAI, WORD, 40, 0, 12, 0),
	RUN("sk-svcacct-", 1, R_OPENAI, WORD, 40, 0, 12, 0),
	RUN("sk-admin-", 1, R_OPENAI, WORD, 40, 0, 12, 0),
	RUN("sk-", 1, R_OPENAI, ALNUM, 48, 48, 12, F_T3),
	RUN("xoxb-", 0, R_SLACK, ALNUM | C_DASH, 20, 0, 6, F_SLACK),
	RUN("xoxp-", 0, R_SLACK, ALNUM | C_DASH, 20, 0, 6, F_SLACK),
	RUN("xoxa-", 0, R_SLACK, ALNUM | C_DASH, 20, 0, 6, F_SLACK),
	RUN("xoxr-", 0, R_SLACK, ALNUM | C_DASH, 20, 0, 6, F_SLACK),
	RUN("xoxs-", 0, R_SLACK, ALNUM | C_DASH, 20, 0, 6, F_SLACK),
	KW("hooks.slack.com/services/", 10, R_SLACK_HOOK, K_HOOK),
	RUN("sk_live_", 1, R_STRIPE, ALNUM, 24, 0, 8, 0),
	RUN("rk_live_", 1, R_STRIPE, ALNUM, 24, 0, 8, 0),
	RUN("sk_test_", 1, R_STRIPE, ALNUM, 24, 0, 8, 0),
	RUN("rk_test_", 1, R_STRIPE, ALNUM, 24, 0, 8, 0),
	RUN("AIza", 1, R_GOOGLE, WORD, 35, 35, 10, F_EDGE64),
	KW("-----BEGIN ", 4, 0, K_PEM),
	KW("eyJ", 1, R_JWT, K_JWT),
	RUN("npm_", 1, R_NPM, ALNUM, 36, 36, 10, 0),
	RUN("pypi-AgEIcHlwaS5vcmc", 5, R_PYPI, WORD, 50, 0, 12, 0),
	RUN("pypi-AgENdGVzdC5weXBpLm9yZw", 5, R_PYPI, WORD, 50, 0, 12, 0),
	RUN("hf_", 0, R_HF, ALPHA, 34, 34, 10, F_MIXED),
	KW("SG.", 1, R_SENDGRID, K_SENDGRID),
	RUN("SK", 0, R_TWILIO, C_HEX, 32, 32, 6, F_EDGE64 | F_DIGLET),
	RUN("dop_v1_", 4, R_DO, C_HEX, 64, 64, 8, 0),
	RUN("doo_v1_", 4, R_DO, C_HEX, 64, 64, 8, 0),
	RUN("dor_v1_", 4, R_DO, C_HEX, 64, 64, 8, 0),
	KW("Q~", 0, R_AZURE, K_AZURE),
	RUN("hvs.", 0, R_VAULT, WORD, 90, 0, 16, 0),
	RUN("hvb.", 0, R_VAULT, WORD, 90, 0, 16, 0),
	RUN("AGE-SECRET-KEY-1", 2, R_AGE, C_BECH, 58, 58, 10, 0),
};
/* clang-format on */

#define NANCHORS (sizeof(anchors) / sizeof(anchors[0]))

static const struct {
	const char *kind; /* after "-----BEGIN " */
	uint8_t len;
	uint8_t rule;
} pem_kinds[] = {
/* clang-format off */
#define PEM(k, r) {k, sizeof(k) - 1, r}
	/* clang-format on */
	PEM("RSA PRIVATE KEY-----", R_PEM_RSA),
	PEM("EC PRIVATE KEY-----", R_PEM_EC),
	PEM("DSA PRIVATE KEY-----", R_PEM_DSA),
	PEM("OPENSSH PRIVATE KEY-----", R_PEM_OPENSSH),
	PEM("PRIVATE KEY-----", R_PEM_PKCS8),
	PEM("ENCRYPTED PRIVATE KEY-----", R_PEM_PKCS8),
	PEM("PGP PRIVATE KEY BLOCK-----", R_PEM_PGP),
#undef PEM
};

/* ---- the scanner object ------------------------------------------------- */

struct ckpt_scan {
	const struct ckpt_scan_allow *allow; /* borrowed */

	uint64_t fed;  /* bytes of the file fed so far */
	uint64_t done; /* positions before this one have been tried */
	uint64_t nl;   /* '\n' bytes in the first fed bytes */
	bool stopped;  /* a finding was reported, or the file finished */
	size_t hlen;   /* hist holds the file's bytes [fed - hlen, fed) */
	const unsigned char *cur; /* a large feed's buffer, while scanned */
	/* [pair_at(b0 b1)]: 0, or 1 + the bucket of the anchors whose pair
	 * is b0 b1.  A byte per pair, not a bit: the hot loop then needs no
	 * shift, and text touches only a few of its cache lines. */
	uint8_t pairs[65536];
	uint8_t bucket[NANCHORS + 1]; /* bucket k: list[bucket[k] ..
				       * bucket[k + 1]) */
	uint8_t list[NANCHORS];
	/* The file's last bytes: at least min(fed, HIST) of them.  Small
	 * feeds are appended here and scanned in place, so feeding a byte
	 * at a time costs no more than feeding a buffer. */
	unsigned char hist[2 * HIST];
	unsigned char join[2 * HIST];	   /* hist's tail and a large buffer's
					    * head, for positions near the seam */
	unsigned char secret[32 + MAXTOK]; /* rule id, NUL, secret: hashed,
					    * then wiped */
};

_Static_assert(NANCHORS < 255, "pairs[], bucket[] and list[] hold bytes");

/* One rule's view of the file: b[lo .. end) is valid. */
struct win {
	const unsigned char *b;
	size_t lo, end;
};

/* What a rule matched: the finding's line is taken at start; the
 * fingerprint covers b[ss .. se), or, when inscratch, the slen bytes
 * already written after the rule id in the scanner's secret buffer. */
struct hit {
	int rule;
	size_t start, ss, se;
	bool inscratch;
	size_t slen;
};

static inline unsigned at(const struct win *w, size_t i)
{
	/* i may have wrapped below zero: it then fails i < end */
	return i >= w->lo && i < w->end ? w->b[i] : SENTINEL;
}

static inline unsigned cls_at(const struct win *w, size_t i)
{
	return cls[at(w, i)];
}

static size_t run(const struct win *w, size_t i, unsigned mask, size_t max)
{
	size_t n = 0;

	while (n < max && (cls_at(w, i + n) & mask))
		n++;
	return n;
}

/* Case-insensitive comparison with a lower-case ASCII word. */
static bool word_at(const struct win *w, size_t i, const char *s)
{
	for (; *s; s++, i++) {
		unsigned c = at(w, i);

		if (c >= 'A' && c <= 'Z')
			c += 'a' - 'A';
		if (c != (unsigned char)*s)
			return false;
	}
	return true;
}

static unsigned distinct(const unsigned char *p, size_t n)
{
	uint64_t seen[4] = {0};
	unsigned d = 0;

	for (size_t i = 0; i < n; i++) {
		uint64_t bit = 1ull << (p[i] & 63);

		if (!(seen[p[i] >> 6] & bit))
			d++;
		seen[p[i] >> 6] |= bit;
	}
	return d;
}

/* How often the most frequent byte occurs: a placeholder body ("MIIE"
 * and then xxxx) has a few distinct bytes, one of them everywhere. */
static size_t commonest(const unsigned char *p, size_t n)
{
	uint16_t count[256] = {0}; /* n <= KEYFP */
	size_t max = 0;

	for (size_t i = 0; i < n; i++)
		if (++count[p[i]] > max)
			max = count[p[i]];
	return max;
}

static unsigned classes(const unsigned char *p, size_t n)
{
	unsigned c = 0;

	for (size_t i = 0; i < n; i++)
		c |= cls[p[i]];
	return c;
}

/* ---- the rules' shapes -------------------------------------------------- */

static bool body_ok(const struct anchor *an, const unsigned char *p, size_t n)
{
	unsigned c = classes(p, n);

	if (distinct(p, n) < an->mind)
		return false;
	if ((an->flags & F_MIXED) && (c & ALPHA) != ALPHA)
		return false;
	if ((an->flags & F_DIGLET) && (!(c & C_DIG) || !(c & ALPHA)))
		return false;
	if ((an->flags & F_EXAMPLE) && memmem(p, n, "EXAMPLE", 7))
		return false;
	if ((an->flags & F_T3) && !memmem(p, n, "T3BlbkFJ", 8))
		return false;
	if ((an->flags & F_SLACK) &&
	    (!(cls[p[0]] & C_DIG) || !memchr(p, '-', n)))
		return false;
	return true;
}

static bool m_run(const struct anchor *an, const struct win *w, size_t a,
		  struct hit *h)
{
	size_t body = a + an->len, n;
	size_t max = an->max ? an->max : MAXTOK;
	unsigned edge = WORD | (an->flags & F_EDGE64 ? C_PLUS | C_SLASH : 0);

	if (cls_at(w, a - 1) & edge)
		return false;
	n = run(w, body, an->cls, max + 1);
	if (n < an->min || n > max)
		return false;
	/* A token cut by the end of the window is taken as it is: the
	 * window is the same whatever the split, so the decision is too. */
	if (cls_at(w, body + n) & edge)
		return false;
	if (!body_ok(an, w->b + body, n))
		return false;
	h->rule = an->rule;
	h->start = h->ss = a;
	h->se = body + n;
	return true;
}

static bool is_sep(unsigned c)
{
	return c == '_' || c == '-' || c == ' ';
}

/* The AWS secret has no prefix: only the keyword before it tells it from
 * any other 40 characters of base64. */
static bool m_aws_secret(const struct win *w, size_t a, struct hit *h)
{
	size_t kw = a + 6, i = a, j;
	bool named = false;

	/* aws_secret, AWS-Secret, aws.secret, "AWS Secret Access Key" */
	if (is_sep(at(w, a - 1)) || at(w, a - 1) == '.')
		i--;
	if (word_at(w, i - 3, "aws"))
		named = true;
	j = kw;
	if (is_sep(at(w, j)))
		j++;
	if (word_at(w, j, "access")) {
		j += 6;
		if (is_sep(at(w, j)))
			j++;
		if (word_at(w, j, "key")) {
			named = true;
			kw = j + 3;
		}
	}
	if (!named)
		return false;
	/* the rest of the name: AWS_SECRET_ACCESS_KEY_ID, aws_secret_key */
	kw += run(w, kw, WORD, 64);
	for (i = kw; i <= kw + 80; i++) {
		const unsigned char *p = w->b + i;
		unsigned k;
		size_t n;

		if (!(cls_at(w, i) & B64) || (cls_at(w, i - 1) & B64))
			continue;
		n = run(w, i, B64, 41);
		/* '=' after it: a longer base64 value, not a key */
		if (n != 40 || at(w, i + 40) == '=') {
			i += n;
			continue;
		}
		k = classes(p, 40);
		if ((k & ALPHA) != ALPHA || !(k & (C_DIG | C_PLUS | C_SLASH)) ||
		    distinct(p, 40) < 12 || memmem(p, 40, "EXAMPLE", 7)) {
			i += n;
			continue;
		}
		h->rule = R_AWS_SECRET;
		h->start = h->ss = i;
		h->se = i + 40;
		return true;
	}
	return false;
}

static bool m_hook(const struct anchor *an, const struct win *w, size_t a,
		   struct hit *h)
{
	size_t i = a + an->len, n;

	if (cls_at(w, a - 1) & (WORD | C_DOT))
		return false;
	for (int part = 0; part < 2; part++) {
		if (at(w, i) != (part ? 'B' : 'T'))
			return false;
		n = run(w, i + 1, C_UP | C_DIG, MAXTOK);
		if (n < 8 || at(w, i + 1 + n) != '/')
			return false;
		i += n + 2;
	}
	n = run(w, i, ALNUM, 25);
	if (n != 24 || (cls_at(w, i + n) & WORD) || distinct(w->b + i, n) < 8)
		return false;
	h->rule = R_SLACK_HOOK;
	h->start = h->ss = a;
	h->se = i + n;
	return true;
}

/* Skips what may separate the lines of a key: white space, quotes, and
 * the \n and \r escapes of a key kept in a JSON or source string.  Sets
 * *brk when a line break (real or escaped) was among them. */
static size_t pem_gap(const struct win *w, size_t i, bool *brk)
{
	*brk = false;
	for (;;) {
		unsigned c = at(w, i), d = at(w, i + 1);

		if (c == ' ' || c == '\t' || c == '"' || c == '\'') {
			i++;
		} else if (c == '\r' || c == '\n') {
			*brk = true;
			i++;
		} else if (c == '\\' && (d == 'n' || d == 'r')) {
			*brk = true;
			i += 2;
		} else {
			return i;
		}
	}
}

/* A header alone is often just code that looks for one: the block must
 * hold a key body, whose base64 characters are fingerprinted. */
static bool m_pem(const struct anchor *an, const struct win *w, size_t a,
		  unsigned char *out, struct hit *h)
{
	size_t i = a + an->len, n = 0, k, end, line = 0;
	int rule = -1;
	unsigned c, mix = 0;
	bool brk;

	for (k = 0; k < sizeof(pem_kinds) / sizeof(pem_kinds[0]); k++) {
		size_t l = pem_kinds[k].len;

		if (i + l <= w->end &&
		    memcmp(w->b + i, pem_kinds[k].kind, l) == 0) {
			rule = pem_kinds[k].rule;
			i += l;
			break;
		}
	}
	if (rule < 0)
		return false;
	/* Armor headers: "Proc-Type: 4,ENCRYPTED", "Version: ...". */
	for (int hdr = 0; hdr < 8; hdr++) {
		i = pem_gap(w, i, &brk);
		for (end = i; end < i + 128; end++) {
			c = at(w, end);
			if (c == ':' || c == '\n' || c == '\\' || c == SENTINEL)
				break;
		}
		if (at(w, end) != ':')
			break;
		while (end < w->end && w->b[end] != '\n' && w->b[end] != '\\')
			end++;
		i = end;
	}
	while (n < KEYFP) {
		c = at(w, i);
		if (!(cls[c] & B64)) {
			/* A space alone separates words of prose; lines of a
			 * key are separated by line breaks, or by spaces
			 * where a key was pasted on one line, after 64
			 * characters. */
			size_t g = pem_gap(w, i, &brk);

			if (g == i || (!brk && line < 48))
				break;
			i = g;
			line = 0;
			continue;
		}
		mix |= cls[c];
		out[n++] = (unsigned char)c;
		line++;
		i++;
	}
	if (n < 64 || (mix & ALNUM) != ALNUM || distinct(out, n) < 20 ||
	    commonest(out, n) > n / 4) {
		explicit_bzero(out, n);
		return false;
	}
	h->rule = rule;
	h->start = a;
	h->inscratch = true;
	h->slen = n;
	return true;
}

static int b64url_value(unsigned c)
{
	if (c >= 'A' && c <= 'Z')
		return (int)(c - 'A');
	if (c >= 'a' && c <= 'z')
		return (int)(c - 'a' + 26);
	if (c >= '0' && c <= '9')
		return (int)(c - '0' + 52);
	if (c == '-' || c == '+')
		return 62;
	if (c == '_' || c == '/')
		return 63;
	return -1;
}

/* Does the base64url text p[0 .. n) decode to JSON naming "alg"? */
static bool jwt_header(const unsigned char *p, size_t n)
{
	unsigned char out[384];
	size_t o = 0;
	uint32_t acc = 0;
	int bits = 0;
	bool ok;

	for (size_t i = 0; i < n && o < sizeof(out); i++) {
		int v = b64url_value(p[i]);

		if (v < 0)
			break;
		acc = acc << 6 | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[o++] = (unsigned char)(acc >> bits);
		}
	}
	ok = o > 0 && out[0] == '{' && memmem(out, o, "\"alg\"", 5);
	explicit_bzero(out, sizeof(out));
	return ok;
}

static bool m_jwt(const struct win *w, size_t a, struct hit *h)
{
	size_t hdr, pay, sig, i;

	if (cls_at(w, a - 1) & WORD)
		return false;
	hdr = run(w, a, WORD, MAXTOK);
	if (hdr < 13 || at(w, a + hdr) != '.')
		return false;
	i = a + hdr + 1;
	if (at(w, i) != 'e' || at(w, i + 1) != 'y' || at(w, i + 2) != 'J')
		return false;
	pay = run(w, i, WORD, MAXTOK);
	if (pay < 13 || !jwt_header(w->b + a, hdr))
		return false;
	i += pay;
	/* A token cut by the end of the window is taken as far as it goes:
	 * the header and the payload's start have been seen. */
	if (i < a + MAXTOK) {
		if (at(w, i) != '.')
			return false;
		sig = run(w, i + 1, WORD, MAXTOK);
		i += 1 + sig;
		if (sig < 20 && i < a + MAXTOK)
			return false;
	}
	h->rule = R_JWT;
	h->start = h->ss = a;
	h->se = i;
	return true;
}

static bool m_sendgrid(const struct win *w, size_t a, struct hit *h)
{
	size_t i = a + 3, n;

	if (cls_at(w, a - 1) & WORD)
		return false;
	n = run(w, i, WORD, 23);
	if (n != 22 || at(w, i + n) != '.' || distinct(w->b + i, n) < 7)
		return false;
	i += n + 1;
	n = run(w, i, WORD, 44);
	if (n != 43 || (cls_at(w, i + n) & WORD) || distinct(w->b + i, n) < 12)
		return false;
	h->rule = R_SENDGRID;
	h->start = h->ss = a;
	h->se = i + n;
	return true;
}

/* The anchor "Q~" sits after four characters of the secret. */
static bool m_azure(const struct win *w, size_t a, struct hit *h)
{
	size_t s = a - 4, n;
	unsigned k;

	if (a < w->lo + 4 || !(cls_at(w, a - 1) & C_DIG) ||
	    run(w, s, AZURE, 3) != 3 || (cls_at(w, s - 1) & AZURE))
		return false;
	n = run(w, a + 2, AZURE, 35);
	if (n < 31 || n > 34)
		return false;
	k = classes(w->b + a + 2, n);
	if ((k & ALPHA) != ALPHA || distinct(w->b + a + 2, n) < 9)
		return false;
	h->rule = R_AZURE;
	h->start = h->ss = s;
	h->se = a + 2 + n;
	return true;
}

/* ---- the scanner -------------------------------------------------------- */

/* Two adjacent bytes as one table index, in the machine's byte order. */
static inline unsigned pair_at(const unsigned char *p)
{
	uint16_t v;

	memcpy(&v, p, 2);
	return v;
}

static unsigned anchor_pair(const struct anchor *an)
{
	return pair_at((const unsigned char *)an->lit + an->off);
}

int ckpt_scan_new(const struct ckpt_scan_allow *allow, struct ckpt_scan **out)
{
	struct ckpt_scan *s = calloc(1, sizeof(*s));
	size_t nb = 0, nl = 0;

	*out = NULL;
	if (!s)
		return -ENOMEM;
	s->allow = allow;
	/* One bucket per distinct pair, holding its anchors in table order;
	 * the table is small, so quadratic is fine. */
	for (size_t k = 0; k < NANCHORS; k++) {
		unsigned pk = anchor_pair(&anchors[k]);

		if (s->pairs[pk])
			continue;
		s->pairs[pk] = (uint8_t)(nb + 1);
		s->bucket[nb++] = (uint8_t)nl;
		for (size_t j = k; j < NANCHORS; j++)
			if (anchor_pair(&anchors[j]) == pk)
				s->list[nl++] = (uint8_t)j;
	}
	s->bucket[nb] = (uint8_t)nl;
	*out = s;
	return 0;
}

void ckpt_scan_reset(struct ckpt_scan *s)
{
	explicit_bzero(s->hist, sizeof(s->hist));
	explicit_bzero(s->join, sizeof(s->join));
	s->fed = s->done = s->nl = 0;
	s->hlen = 0;
	s->stopped = false;
	s->cur = NULL;
}

void ckpt_scan_free(struct ckpt_scan *s)
{
	if (!s)
		return;
	explicit_bzero(s, sizeof(*s));
	free(s);
}

typedef unsigned char v16u8 __attribute__((vector_size(16)));

/* Counts '\n' sixteen bytes at a time, in byte-wide counters that are
 * added up before they can overflow. */
static uint64_t count_nl(const unsigned char *p, size_t n)
{
	uint64_t c = 0;
	size_t i = 0;

	while (n - i >= 16) {
		v16u8 acc = {0};
		size_t blk = (n - i) / 16 < 255 ? (n - i) / 16 : 255;

		for (size_t k = 0; k < blk; k++, i += 16) {
			v16u8 v;

			memcpy(&v, p + i, 16);
			acc -= (v16u8)(v == '\n');
		}
		for (int j = 0; j < 16; j++)
			c += acc[j];
	}
	for (; i < n; i++)
		c += p[i] == '\n';
	return c;
}

/* 1-based line of file offset q, which is in hist or in the current
 * buffer. */
static unsigned line_of(const struct ckpt_scan *s, uint64_t q)
{
	uint64_t l;

	if (q >= s->fed)
		l = s->nl + count_nl(s->cur, (size_t)(q - s->fed));
	else
		l = s->nl - count_nl(s->hist + s->hlen - (s->fed - q),
				     (size_t)(s->fed - q));
	return l + 1 > UINT32_MAX ? UINT32_MAX : (unsigned)(l + 1);
}

static bool allowed(const struct ckpt_scan_allow *a, uint64_t fp);

/* Fingerprints a hit; returns 1 with f filled unless it is allowed. */
static int report(struct ckpt_scan *s, const struct win *w, uint64_t base,
		  const struct hit *h, struct ckpt_finding *f)
{
	const char *id = rules[h->rule].id;
	size_t il = strlen(id) + 1, n = h->inscratch ? h->slen : h->se - h->ss;
	uint64_t fp;

	memmove(s->secret + il, h->inscratch ? s->secret + 32 : w->b + h->ss,
		n);
	memcpy(s->secret, id, il);
	fp = XXH3_64bits(s->secret, il + n);
	explicit_bzero(s->secret, 32 + n);
	if (allowed(s->allow, fp))
		return 0;
	memset(f, 0, sizeof(*f));
	snprintf(f->rule, sizeof(f->rule), "%s", id);
	f->line = line_of(s, base + h->start);
	snprintf(f->fingerprint, sizeof(f->fingerprint), "%016llx",
		 (unsigned long long)fp);
	s->stopped = true;
	return 1;
}

/* Tries the anchors whose pair is at b[i], b[i + 1].  b[lo .. end) is
 * valid and is the file's bytes from offset base + lo.  Kept out of line
 * so that the hot loop keeps its few variables in registers. */
static __attribute__((noinline)) int try_at(struct ckpt_scan *s,
					    const unsigned char *b, size_t lo,
					    size_t i, size_t end, uint64_t base,
					    struct ckpt_finding *f)
{
	unsigned bk = s->pairs[pair_at(b + i)] - 1u;

	for (unsigned k = s->bucket[bk]; k < s->bucket[bk + 1]; k++) {
		const struct anchor *an = &anchors[s->list[k]];
		struct hit h = {0};
		struct win w;
		size_t a, j;
		bool m;
		int rc;

		if (i < lo + an->off)
			continue;
		a = i - an->off;
		if (a + an->len > end)
			continue;
		/* inline: most candidates differ within a byte or two */
		for (j = 0;
		     j < an->len && b[a + j] == (unsigned char)an->lit[j]; j++)
			;
		if (j < an->len)
			continue;
		/* The same window whatever the split: see the file head. */
		w.b = b;
		w.lo = a - lo > BEHIND ? a - BEHIND : lo;
		w.end = end - a > MAXTOK ? a + MAXTOK : end;
		switch (an->kind) {
		case K_RUN:
			m = m_run(an, &w, a, &h);
			break;
		case K_AWS_SECRET:
			m = m_aws_secret(&w, a, &h);
			break;
		case K_HOOK:
			m = m_hook(an, &w, a, &h);
			break;
		case K_PEM:
			m = m_pem(an, &w, a, s->secret + 32, &h);
			break;
		case K_JWT:
			m = m_jwt(&w, a, &h);
			break;
		case K_SENDGRID:
			m = m_sendgrid(&w, a, &h);
			break;
		case K_AZURE:
			m = m_azure(&w, a, &h);
			break;
		default:
			m = false;
		}
		if (m && (rc = report(s, &w, base, &h, f)) != 0)
			return rc;
	}
	return 0;
}

/* The hot loop: tries positions [i, stop) of b; stop < end. */
static int scan_range(struct ckpt_scan *s, const unsigned char *b, size_t lo,
		      size_t i, size_t stop, size_t end, uint64_t base,
		      struct ckpt_finding *f)
{
	const uint8_t *pairs = s->pairs;
	int rc;

	while (i < stop) {
		/* Four pairs per test: a hit is rare, so one branch covers
		 * four positions and the hit is located afterwards. */
		if (i + 4 <= stop &&
		    !(pairs[pair_at(b + i)] | pairs[pair_at(b + i + 1)] |
		      pairs[pair_at(b + i + 2)] | pairs[pair_at(b + i + 3)])) {
			i += 4;
			continue;
		}
		if (pairs[pair_at(b + i)]) {
			rc = try_at(s, b, lo, i, end, base, f);
			if (rc)
				return rc;
		}
		i++;
	}
	return 0;
}

/* Small feeds: append to hist and scan there. */
static int feed_small(struct ckpt_scan *s, const unsigned char *b, size_t len,
		      uint64_t lim, struct ckpt_finding *f)
{
	size_t keep;

	if (s->hlen + len > sizeof(s->hist)) {
		/* HIST bytes cover the undecided positions and what they
		 * may look back at. */
		keep = s->hlen < HIST ? s->hlen : HIST;
		memmove(s->hist, s->hist + s->hlen - keep, keep);
		s->hlen = keep;
	}
	memcpy(s->hist + s->hlen, b, len);
	s->hlen += len;
	s->nl += count_nl(b, len);
	s->fed += len;
	if (s->done >= lim)
		return 0;
	return scan_range(s, s->hist, 0, (size_t)(s->done - (s->fed - s->hlen)),
			  (size_t)(lim - (s->fed - s->hlen)), s->hlen,
			  s->fed - s->hlen, f);
}

/* Large feeds: scan in place, but near the seam, where a window spans
 * hist and buf, in a copy of both. */
static int feed_large(struct ckpt_scan *s, const unsigned char *b, size_t len,
		      uint64_t lim, struct ckpt_finding *f)
{
	uint64_t jl, j0, from;
	size_t fh, fb;
	int rc;

	s->cur = b;
	jl = lim < s->fed + LB ? lim : s->fed + LB;
	if (s->done < jl) {
		j0 = s->done > LB ? s->done - LB : 0;
		fh = (size_t)(s->fed - j0);
		fb = len < LB + LA ? len : LB + LA;
		memcpy(s->join, s->hist + s->hlen - fh, fh);
		memcpy(s->join + fh, b, fb);
		rc = scan_range(s, s->join, 0, (size_t)(s->done - j0),
				(size_t)(jl - j0), fh + fb, j0, f);
		if (rc)
			return rc;
	}
	from = s->done > s->fed + LB ? s->done : s->fed + LB;
	if (from < lim) {
		rc = scan_range(s, b, 0, (size_t)(from - s->fed),
				(size_t)(lim - s->fed), len, s->fed, f);
		if (rc)
			return rc;
	}
	memcpy(s->hist, b + len - HIST, HIST);
	s->hlen = HIST;
	s->nl += count_nl(b, len);
	s->fed += len;
	s->cur = NULL;
	return 0;
}

int ckpt_scan_feed(struct ckpt_scan *s, const void *buf, size_t len,
		   struct ckpt_finding *f)
{
	uint64_t end = s->fed + len, lim;
	int rc;

	if (s->stopped || len == 0)
		return 0;
	/* Positions with LA bytes known after them can be decided now. */
	lim = end >= LA ? end - LA + 1 : 0;
	if (len < HIST)
		rc = feed_small(s, buf, len, lim, f);
	else
		rc = feed_large(s, buf, len, lim, f);
	if (rc)
		return rc;
	if (lim > s->done)
		s->done = lim;
	return 0;
}

int ckpt_scan_finish(struct ckpt_scan *s, struct ckpt_finding *f)
{
	uint64_t base = s->fed - s->hlen;
	int rc = 0;

	if (s->stopped)
		return 0;
	/* The last byte starts no pair, hence no anchor. */
	if (s->done + 1 < s->fed)
		rc = scan_range(s, s->hist, 0, (size_t)(s->done - base),
				s->hlen - 1, s->hlen, base, f);
	s->done = s->fed;
	s->stopped = true;
	return rc;
}

/* ---- the allow file ----------------------------------------------------- */

#define ALLOW_MAX (1u << 20) /* fingerprints in one allow file */

struct ckpt_scan_allow {
	uint64_t *fp; /* sorted */
	size_t n;
};

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static bool allowed(const struct ckpt_scan_allow *a, uint64_t fp)
{
	return a && a->n && bsearch(&fp, a->fp, a->n, sizeof(fp), cmp_u64);
}

/* Parses one line: 1 with *fp set, 0 when there is nothing on it, -1 when
 * it is malformed. */
static int allow_line(const char *p, uint64_t *fp)
{
	uint64_t v = 0;

	while (*p == ' ' || *p == '\t')
		p++;
	if (*p == '\0' || *p == '#' || *p == '\n' || *p == '\r')
		return 0;
	for (int i = 0; i < 16; i++, p++) {
		int d = hex_digit(*p);

		if (d < 0)
			return -1;
		v = v << 4 | (uint64_t)d;
	}
	while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')
		p++;
	if (*p != '\0' && *p != '#')
		return -1;
	*fp = v;
	return 1;
}

int ckpt_scan_allow_load(const char *path, struct ckpt_scan_allow **out,
			 struct ckpt_err *err)
{
	struct ckpt_scan_allow *a = NULL;
	FILE *fp = NULL;
	char *line = NULL;
	size_t cap = 0, room = 0;
	ssize_t len;
	unsigned lineno = 0;
	int rc;

	*out = NULL;
	fp = fopen(path, "re");
	if (!fp) {
		rc = -errno;
		ckpt_err_set(err, rc, "allowlist", path, strlen(path),
			     "cannot open the allow file: %s", strerror(-rc));
		goto out;
	}
	a = calloc(1, sizeof(*a));
	if (!a) {
		rc = ckpt_err_set(err, -ENOMEM, "no-memory", path, strlen(path),
				  "out of memory");
		goto out;
	}
	while ((len = getline(&line, &cap, fp)) >= 0) {
		uint64_t v;
		int r;

		lineno++;
		/* a NUL would hide the rest of the line from the parser */
		r = memchr(line, '\0', (size_t)len) ? -1 : allow_line(line, &v);
		if (r < 0) {
			rc = ckpt_err_set(
				err, -EINVAL, "allowlist", path, strlen(path),
				"line %u of the allow file is not a fingerprint of 16 hex digits",
				lineno);
			if (err)
				err->line = lineno;
			goto out;
		}
		if (r == 0)
			continue;
		if (a->n == room) {
			uint64_t *n;

			if (room >= ALLOW_MAX) {
				rc = ckpt_err_set(
					err, -E2BIG, "allowlist", path,
					strlen(path),
					"more than %u fingerprints in the allow file",
					ALLOW_MAX);
				goto out;
			}
			room = room ? 2 * room : 64;
			n = realloc(a->fp, room * sizeof(*n));
			if (!n) {
				rc = ckpt_err_set(err, -ENOMEM, "no-memory",
						  path, strlen(path),
						  "out of memory");
				goto out;
			}
			a->fp = n;
		}
		a->fp[a->n++] = v;
	}
	if (ferror(fp)) {
		rc = ckpt_err_set(err, -EIO, "allowlist", path, strlen(path),
				  "cannot read the allow file");
		goto out;
	}
	if (a->n)
		qsort(a->fp, a->n, sizeof(*a->fp), cmp_u64);
	*out = a;
	a = NULL;
	rc = 0;
out:
	free(line);
	if (fp)
		fclose(fp);
	ckpt_scan_allow_free(a);
	return rc;
}

void ckpt_scan_allow_free(struct ckpt_scan_allow *a)
{
	if (!a)
		return;
	free(a->fp);
	free(a);
}
