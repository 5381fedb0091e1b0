/*
 * check_scan.c - the secret scanner: a positive per rule, wherever it falls
 * in the file and however the file is split; negatives that look like
 * secrets but are not; the allow file; fingerprints; throughput.
 *
 * No token appears whole in this file: each is assembled at run time from
 * a split prefix and a body drawn from a fixed PRNG, so that no scanner
 * (ours, a forge's push protection) fires on the source.
 */
#include <check.h>
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "scan.h"

/* ---- deterministic random text ------------------------------------------ */

static uint64_t rnd(uint64_t *st) /* splitmix64 */
{
	uint64_t z = (*st += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

#define UPPER  "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
#define LOWER  "abcdefghijklmnopqrstuvwxyz"
#define DIGITS "0123456789"

static const char alnum[] = UPPER LOWER DIGITS;
static const char b32[] = UPPER "234567";
static const char word[] = UPPER LOWER DIGITS "_-";
static const char hexl[] = DIGITS "abcdef";
static const char updig[] = UPPER DIGITS;
static const char alpha[] = UPPER LOWER;
static const char bech[] = "QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L";
static const char azchars[] = UPPER LOWER DIGITS "_~.-";
static const char b64[] = UPPER LOWER DIGITS "+/";

/* Appends n characters of alphabet a to the string out. */
static void put(char *out, const char *a, size_t n, uint64_t *st)
{
	size_t k = strlen(a), l = strlen(out);

	for (size_t i = 0; i < n; i++)
		out[l + i] = a[rnd(st) % k];
	out[l + n] = '\0';
}

static void b64url(const char *in, char *out)
{
	static const char t[] = UPPER LOWER DIGITS "-_";
	size_t n = strlen(in), o = 0;
	uint32_t acc = 0;
	int bits = 0;

	for (size_t i = 0; i < n; i++) {
		acc = acc << 8 | (unsigned char)in[i];
		bits += 8;
		while (bits >= 6) {
			bits -= 6;
			out[o++] = t[(acc >> bits) & 63];
		}
	}
	if (bits)
		out[o++] = t[(acc << (6 - bits)) & 63];
	out[o] = '\0';
}

/* ---- tokens ------------------------------------------------------------- */

struct token {
	char text[4096];
	size_t ms, me; /* the matched secret: text[ms .. me) */
	size_t body;   /* where the random part starts */
	bool pem;      /* fingerprinted over the body's base64 characters */
};

enum tcase {
	T_AWS_KEY,
	T_AWS_KEY_ASIA,
	T_AWS_SECRET,
	T_AWS_SECRET_ENV,
	T_AWS_SECRET_JSON,
	T_GH_CLASSIC,
	T_GH_FINE,
	T_GH_OAUTH,
	T_GH_APP_U,
	T_GH_APP_S,
	T_GH_REFRESH,
	T_GITLAB,
	T_ANT_API,
	T_ANT_ADMIN,
	T_ANT_OAT,
	T_ANT_ORT,
	T_OPENAI_PROJ,
	T_OPENAI_SVC,
	T_OPENAI_LEGACY,
	T_SLACK_BOT,
	T_SLACK_USER,
	T_SLACK_HOOK,
	T_STRIPE_LIVE,
	T_STRIPE_TEST,
	T_GOOGLE,
	T_PEM_RSA,
	T_PEM_EC,
	T_PEM_DSA,
	T_PEM_OPENSSH,
	T_PEM_PKCS8,
	T_PEM_PKCS8_JSON,
	T_PEM_ENCRYPTED,
	T_PEM_PGP,
	T_PEM_ONE_LINE,
	T_PEM_YAML,
	T_JWT,
	T_NPM,
	T_PYPI,
	T_HF,
	T_SENDGRID,
	T_TWILIO,
	T_DO,
	T_AZURE,
	T_VAULT,
	T_VAULT_BATCH,
	T_AGE,
	T_JWT_LONG,
	T_VAULT_LONG,
	T_COUNT
};

static const char *const case_rule[T_COUNT] = {
	[T_AWS_KEY] = "aws-access-key-id",
	[T_AWS_KEY_ASIA] = "aws-access-key-id",
	[T_AWS_SECRET] = "aws-secret-access-key",
	[T_AWS_SECRET_ENV] = "aws-secret-access-key",
	[T_AWS_SECRET_JSON] = "aws-secret-access-key",
	[T_GH_CLASSIC] = "github-pat-classic",
	[T_GH_FINE] = "github-pat-fine-grained",
	[T_GH_OAUTH] = "github-oauth",
	[T_GH_APP_U] = "github-app",
	[T_GH_APP_S] = "github-app",
	[T_GH_REFRESH] = "github-refresh",
	[T_GITLAB] = "gitlab-pat",
	[T_ANT_API] = "anthropic-api-key",
	[T_ANT_ADMIN] = "anthropic-admin-key",
	[T_ANT_OAT] = "anthropic-oauth",
	[T_ANT_ORT] = "anthropic-oauth",
	[T_OPENAI_PROJ] = "openai-api-key",
	[T_OPENAI_SVC] = "openai-api-key",
	[T_OPENAI_LEGACY] = "openai-api-key",
	[T_SLACK_BOT] = "slack-token",
	[T_SLACK_USER] = "slack-token",
	[T_SLACK_HOOK] = "slack-webhook",
	[T_STRIPE_LIVE] = "stripe-secret-key",
	[T_STRIPE_TEST] = "stripe-secret-key",
	[T_GOOGLE] = "google-api-key",
	[T_PEM_RSA] = "private-key-rsa",
	[T_PEM_EC] = "private-key-ec",
	[T_PEM_DSA] = "private-key-dsa",
	[T_PEM_OPENSSH] = "private-key-openssh",
	[T_PEM_PKCS8] = "private-key-pkcs8",
	[T_PEM_PKCS8_JSON] = "private-key-pkcs8",
	[T_PEM_ENCRYPTED] = "private-key-pkcs8",
	[T_PEM_PGP] = "private-key-pgp",
	[T_PEM_ONE_LINE] = "private-key-rsa",
	[T_PEM_YAML] = "private-key-ec",
	[T_JWT] = "jwt",
	[T_NPM] = "npm-token",
	[T_PYPI] = "pypi-token",
	[T_HF] = "huggingface-token",
	[T_SENDGRID] = "sendgrid-api-key",
	[T_TWILIO] = "twilio-api-key",
	[T_DO] = "digitalocean-token",
	[T_AZURE] = "azure-client-secret",
	[T_VAULT] = "hashicorp-vault-token",
	[T_VAULT_BATCH] = "hashicorp-vault-token",
	[T_AGE] = "age-secret-key",
	[T_JWT_LONG] = "jwt",
	[T_VAULT_LONG] = "hashicorp-vault-token",
};

/* A prefix, then a body of n characters of alphabet a. */
static void simple(struct token *t, const char *prefix, const char *a, size_t n,
		   uint64_t *st)
{
	strcpy(t->text, prefix);
	t->body = strlen(t->text);
	put(t->text, a, n, st);
}

/* Random base64 that has upper case, lower case and a digit. */
static void put_mixed(char *out, const char *a, size_t n, uint64_t *st)
{
	size_t l = strlen(out);

	put(out, a, n, st);
	out[l] = 'Q';
	out[l + 1] = 'r';
	out[l + 2] = '7';
}

/* A PEM block: header, optional armor lines, n base64 characters in lines
 * of 64 (with sep between lines), footer. */
static void pem(struct token *t, const char *kind, const char *armor,
		const char *sep, size_t n, uint64_t *st)
{
	char *p = t->text;

	sprintf(p, "-----BEGIN %s-----%s%s", kind, sep, armor);
	t->body = strlen(p);
	for (size_t done = 0; done < n; done += 64) {
		put(p, b64, n - done < 64 ? n - done : 64, st);
		strcat(p, sep);
	}
	sprintf(p + strlen(p), "-----END %s-----", kind);
	t->pem = true;
}

static void make(enum tcase c, uint64_t seed, struct token *t)
{
	uint64_t st = seed * 7919 + (uint64_t)c;
	char hdr[128], pay[256];

	memset(t, 0, sizeof(*t));
	switch (c) {
	case T_AWS_KEY:
		simple(t,
		       "AK"
		       "IA",
		       b32, 16, &st);
		break;
	case T_AWS_KEY_ASIA:
		simple(t,
		       "AS"
		       "IA",
		       b32, 16, &st);
		break;
	case T_AWS_SECRET:
		strcpy(t->text, "aws_secret"
				"_access_key = ");
		t->ms = t->body = strlen(t->text);
		put_mixed(t->text, b64, 40, &st);
		t->me = strlen(t->text);
		return;
	case T_AWS_SECRET_ENV:
		strcpy(t->text, "export AWS_SECRET"
				"_ACCESS_KEY=\"");
		t->ms = t->body = strlen(t->text);
		put_mixed(t->text, b64, 40, &st);
		t->me = strlen(t->text);
		strcat(t->text, "\"");
		return;
	case T_AWS_SECRET_JSON:
		strcpy(t->text, "\"SecretAccess"
				"Key\": \"");
		t->ms = t->body = strlen(t->text);
		put_mixed(t->text, b64, 40, &st);
		t->me = strlen(t->text);
		strcat(t->text, "\",");
		return;
	case T_GH_CLASSIC:
		simple(t,
		       "gh"
		       "p_",
		       alnum, 36, &st);
		break;
	case T_GH_FINE:
		simple(t,
		       "github"
		       "_pat_",
		       alnum, 22, &st);
		strcat(t->text, "_");
		put(t->text, alnum, 59, &st);
		break;
	case T_GH_OAUTH:
		simple(t,
		       "gh"
		       "o_",
		       alnum, 36, &st);
		break;
	case T_GH_APP_U:
		simple(t,
		       "gh"
		       "u_",
		       alnum, 36, &st);
		break;
	case T_GH_APP_S:
		simple(t,
		       "gh"
		       "s_",
		       alnum, 36, &st);
		break;
	case T_GH_REFRESH:
		simple(t,
		       "gh"
		       "r_",
		       alnum, 76, &st);
		break;
	case T_GITLAB:
		simple(t,
		       "gl"
		       "pat-",
		       word, 20, &st);
		break;
	case T_ANT_API:
		simple(t,
		       "sk-"
		       "ant-"
		       "api03-",
		       word, 93, &st);
		strcat(t->text, "AA");
		break;
	case T_ANT_ADMIN:
		simple(t,
		       "sk-"
		       "ant-"
		       "admin01-",
		       word, 93, &st);
		strcat(t->text, "AA");
		break;
	case T_ANT_OAT:
		simple(t,
		       "sk-"
		       "ant-"
		       "oat01-",
		       word, 93, &st);
		strcat(t->text, "AA");
		break;
	case T_ANT_ORT:
		simple(t,
		       "sk-"
		       "ant-"
		       "ort01-",
		       word, 93, &st);
		strcat(t->text, "AA");
		break;
	case T_OPENAI_PROJ:
		simple(t,
		       "sk-"
		       "proj-",
		       word, 156, &st);
		break;
	case T_OPENAI_SVC:
		simple(t,
		       "sk-"
		       "svcacct-",
		       word, 60, &st);
		break;
	case T_OPENAI_LEGACY:
		simple(t, "sk-", alnum, 20, &st);
		strcat(t->text, "T3Blbk"
				"FJ");
		put(t->text, alnum, 20, &st);
		break;
	case T_SLACK_BOT:
		simple(t,
		       "xo"
		       "xb-",
		       DIGITS, 11, &st);
		strcat(t->text, "-");
		put(t->text, DIGITS, 13, &st);
		strcat(t->text, "-");
		put(t->text, alnum, 24, &st);
		break;
	case T_SLACK_USER:
		simple(t,
		       "xo"
		       "xp-",
		       DIGITS, 11, &st);
		strcat(t->text, "-");
		put(t->text, DIGITS, 12, &st);
		strcat(t->text, "-");
		put(t->text, DIGITS, 13, &st);
		strcat(t->text, "-");
		put(t->text, hexl, 32, &st);
		break;
	case T_SLACK_HOOK:
		strcpy(t->text, "https://");
		t->ms = strlen(t->text);
		strcat(t->text, "hooks.slack"
				".com/services/T");
		t->body = strlen(t->text);
		put(t->text, updig, 10, &st);
		strcat(t->text, "/B");
		put(t->text, updig, 10, &st);
		strcat(t->text, "/");
		put(t->text, alnum, 24, &st);
		t->me = strlen(t->text);
		return;
	case T_STRIPE_LIVE:
		simple(t,
		       "sk"
		       "_live_",
		       alnum, 24, &st);
		break;
	case T_STRIPE_TEST:
		simple(t,
		       "rk"
		       "_test_",
		       alnum, 99, &st);
		break;
	case T_GOOGLE:
		simple(t,
		       "AI"
		       "za",
		       word, 35, &st);
		break;
	case T_PEM_RSA:
		pem(t,
		    "RSA "
		    "PRIVATE KEY",
		    "", "\n", 1588, &st);
		break;
	case T_PEM_EC:
		pem(t,
		    "EC "
		    "PRIVATE KEY",
		    "", "\n", 160, &st);
		break;
	case T_PEM_DSA:
		pem(t,
		    "DSA "
		    "PRIVATE KEY",
		    "", "\n", 600, &st);
		break;
	case T_PEM_OPENSSH:
		pem(t,
		    "OPENSSH "
		    "PRIVATE KEY",
		    "", "\n", 400, &st);
		break;
	case T_PEM_PKCS8:
		pem(t,
		    "PRIVATE"
		    " KEY",
		    "", "\n", 1624, &st);
		break;
	case T_PEM_PKCS8_JSON:
		pem(t,
		    "PRIVATE"
		    " KEY",
		    "", "\\n", 1624, &st);
		break;
	case T_PEM_ENCRYPTED:
		pem(t,
		    "ENCRYPTED "
		    "PRIVATE KEY",
		    "", "\n", 1700, &st);
		break;
	case T_PEM_PGP:
		pem(t,
		    "PGP "
		    "PRIVATE KEY BLOCK",
		    "Version: GnuPG v2\n\n", "\n", 900, &st);
		break;
	case T_PEM_ONE_LINE: /* pasted into an environment variable */
		pem(t,
		    "RSA "
		    "PRIVATE KEY",
		    "", " ", 1588, &st);
		break;
	case T_PEM_YAML: /* a block scalar, indented */
		pem(t,
		    "EC "
		    "PRIVATE KEY",
		    "", "\n    ", 160, &st);
		break;
	case T_JWT:
		b64url("{\"alg\":\"HS256\",\"typ\":\"JWT\"}", hdr);
		b64url("{\"sub\":\"1234567890\",\"name\":\"A\",\"iat\":1516239022}",
		       pay);
		sprintf(t->text, "%s.%s.", hdr, pay);
		t->body = strlen(t->text);
		put(t->text, word, 43, &st);
		break;
	case T_NPM:
		simple(t,
		       "np"
		       "m_",
		       alnum, 36, &st);
		break;
	case T_PYPI:
		simple(t,
		       "py"
		       "pi-AgEI"
		       "cHlwaS5vcmc",
		       word, 120, &st);
		break;
	case T_HF:
		simple(t,
		       "hf"
		       "_",
		       alpha, 34, &st);
		t->text[t->body] = 'H';
		t->text[t->body + 1] = 'f';
		break;
	case T_SENDGRID:
		simple(t,
		       "SG"
		       ".",
		       word, 22, &st);
		strcat(t->text, ".");
		put(t->text, word, 43, &st);
		break;
	case T_TWILIO:
		simple(t,
		       "S"
		       "K",
		       hexl, 32, &st);
		t->text[t->body] = '4';
		t->text[t->body + 1] = 'c';
		break;
	case T_DO:
		simple(t,
		       "do"
		       "p_v1_",
		       hexl, 64, &st);
		break;
	case T_AZURE:
		put(t->text, alnum, 3, &st);
		put(t->text, DIGITS, 1, &st);
		strcat(t->text, "Q"
				"~");
		t->body = strlen(t->text);
		put(t->text, azchars, 34, &st);
		t->text[t->body] = 'Z';
		t->text[t->body + 1] = 'z';
		/* the class has '.', '~' and '-': keep the end a letter */
		t->text[t->body + 33] = 'k';
		break;
	case T_VAULT:
		simple(t,
		       "hv"
		       "s.",
		       word, 91, &st);
		break;
	case T_VAULT_BATCH:
		simple(t,
		       "hv"
		       "b.",
		       word, 138, &st);
		break;
	case T_AGE:
		simple(t,
		       "AGE-SECRET"
		       "-KEY-1",
		       bech, 58, &st);
		break;
	case T_JWT_LONG:
		/* longer than a rule may look: matched as far as it can */
		b64url("{\"alg\":\"RS256\",\"kid\":\"a\"}", hdr);
		sprintf(t->text,
			"%s.ey"
			"J",
			hdr);
		t->body = strlen(t->text);
		put(t->text, word, 3000, &st);
		strcat(t->text, ".");
		put(t->text, word, 342, &st);
		t->me = CKPT_SCAN_MAX_MATCH;
		return;
	case T_VAULT_LONG:
		simple(t,
		       "hv"
		       "s.",
		       word, 3000, &st);
		t->me = CKPT_SCAN_MAX_MATCH;
		return;
	case T_COUNT:
		break;
	}
	t->ms = 0;
	t->me = strlen(t->text);
}

/* What the scanner must return for t: XXH3 over rule, NUL, secret. */
static void expect_fp(const char *rule, const struct token *t, char out[17])
{
	static char buf[8192];
	size_t il = strlen(rule) + 1, n = 0;

	memcpy(buf, rule, il);
	if (t->pem) {
		for (const char *p = t->text + t->body; *p && n < 1024;) {
			if (strchr(b64, *p)) {
				buf[il + n++] = *p++;
			} else if (*p == '\n' || *p == ' ') {
				p++;
			} else if (p[0] == '\\' && p[1] == 'n') {
				p += 2;
			} else {
				break;
			}
		}
	} else {
		n = t->me - t->ms;
		memcpy(buf + il, t->text + t->ms, n);
	}
	snprintf(out, 17, "%016llx",
		 (unsigned long long)XXH3_64bits(buf, il + n));
}

/* ---- documents ---------------------------------------------------------- */

static const char *const filler_lines[] = {
	"static int parse_config(const char *path, struct config *cfg)\n",
	"{\n",
	"\tif (!path)\n\t\treturn -EINVAL;\n",
	"# The password must be at least 12 characters; never log it.\n",
	"def load_token(path):\n    return open(path).read().strip()\n",
	"const apiKey = process.env.API_KEY; // set in CI, not here\n",
	"Rotate the secret access key every 90 days (see the runbook).\n",
	"\tfor (size_t i = 0; i < n; i++)\n\t\tsum += v[i];\n",
	"  \"name\": \"ckptfs\", \"version\": \"1.0.0\",\n",
	"}\n",
	"- [x] remove the hard-coded token from tests\n",
	"SELECT id, name FROM users WHERE email = ?;\n",
	"\n",
};

/* Appends about n bytes of harmless text made of whole lines. */
static void filler(char *out, size_t n, uint64_t *st)
{
	size_t l = strlen(out), want = l + n;
	size_t k = sizeof(filler_lines) / sizeof(filler_lines[0]);

	while (l < want) {
		const char *s = filler_lines[rnd(st) % k];

		strcpy(out + l, s);
		l += strlen(s);
	}
}

enum place {
	P_MIDDLE,
	P_START,
	P_END,
	P_COUNT
};

/* Builds a document holding t; returns its length and sets *off to where
 * t begins. */
static size_t place(char *doc, const struct token *t, enum place p, size_t *off)
{
	uint64_t st = 42 + (uint64_t)p;

	doc[0] = '\0';
	if (p == P_MIDDLE) {
		filler(doc, 5000, &st);
		strcat(doc, "value: ");
	} else if (p == P_END) {
		filler(doc, 300, &st);
		strcat(doc, "key ");
	}
	*off = strlen(doc);
	strcat(doc, t->text);
	if (p == P_MIDDLE) {
		strcat(doc, "\n");
		filler(doc, 5000, &st);
	} else if (p == P_START) {
		strcat(doc, "\n");
		filler(doc, 300, &st);
	}
	return strlen(doc);
}

static unsigned line_at(const char *doc, size_t off)
{
	unsigned l = 1;

	for (size_t i = 0; i < off; i++)
		l += doc[i] == '\n';
	return l;
}

/* How a document is cut into feed() calls. */
enum mode {
	M_WHOLE,
	M_BYTES,
	M_RANDOM,
	M_PAGES, /* 4 KiB */
	M_COUNT
};

struct result {
	int found; /* calls that returned 1 */
	int feeds; /* of which feed() calls */
	struct ckpt_finding f;
};

static void scan_cuts(struct ckpt_scan *s, const char *doc, size_t n,
		      enum mode m, size_t split, struct result *r)
{
	uint64_t st = 7;
	struct ckpt_finding f;
	size_t i = 0;

	memset(r, 0, sizeof(*r));
	ckpt_scan_reset(s);
	while (i < n) {
		size_t c = n - i;

		if (split && i < split)
			c = split - i;
		else if (m == M_BYTES)
			c = 1;
		else if (m == M_RANDOM)
			c = 1 + rnd(&st) % 5000;
		else if (m == M_PAGES)
			c = 4096;
		if (c > n - i)
			c = n - i;
		if (ckpt_scan_feed(s, doc + i, c, &f) == 1) {
			if (!r->found)
				r->f = f;
			r->found++;
			r->feeds++;
		}
		i += c;
	}
	if (ckpt_scan_finish(s, &f) == 1) {
		if (!r->found)
			r->f = f;
		r->found++;
	}
}

/* Shared by the tests: a forked child each, so no test sees another's. */
static char docbuf[1 << 20];

/* The finding holds no 8-byte piece of the secret's random part. */
static void assert_no_secret(const struct ckpt_finding *f,
			     const struct token *t)
{
	size_t end = t->pem ? strlen(t->text) : t->me;

	for (size_t i = t->body; i + 8 <= end; i++)
		ck_assert_msg(!memmem(f, sizeof(*f), t->text + i, 8),
			      "the finding holds part of the secret");
}

/* ---- the rule table ----------------------------------------------------- */

START_TEST(test_rules_table)
{
	const struct ckpt_scan_rule_info *r;
	size_t n = ckpt_scan_rules(&r);

	ck_assert_uint_ge(n, 25);
	for (size_t i = 0; i < n; i++) {
		bool tested = false;

		ck_assert_uint_lt(strlen(r[i].id), 32);
		ck_assert_uint_gt(strlen(r[i].what), 10);
		for (const char *p = r[i].id; *p; p++)
			ck_assert((*p >= 'a' && *p <= 'z') ||
				  (*p >= '0' && *p <= '9') || *p == '-');
		for (size_t j = 0; j < i; j++)
			ck_assert_str_ne(r[i].id, r[j].id);
		for (int c = 0; c < T_COUNT; c++)
			tested |= strcmp(case_rule[c], r[i].id) == 0;
		ck_assert_msg(tested, "no positive test for %s", r[i].id);
	}
	for (int c = 0; c < T_COUNT; c++) {
		bool known = false;

		for (size_t i = 0; i < n; i++)
			known |= strcmp(case_rule[c], r[i].id) == 0;
		ck_assert_msg(known, "unknown rule %s", case_rule[c]);
	}
}
END_TEST

/* ---- positives ---------------------------------------------------------- */

/* Every case, at every place, cut every way: found once, with its rule,
 * line and fingerprint. */
START_TEST(test_positive)
{
	enum tcase c = (enum tcase)_i;
	struct ckpt_scan *s;
	struct token t;
	char fp[17];

	ck_assert_int_eq(ckpt_scan_new(NULL, &s), 0);
	make(c, 1, &t);
	expect_fp(case_rule[c], &t, fp);
	for (int p = 0; p < P_COUNT; p++) {
		size_t off, n = place(docbuf, &t, (enum place)p, &off);
		unsigned line = line_at(docbuf, off + t.ms);

		for (int m = 0; m < M_COUNT; m++) {
			struct result r;

			scan_cuts(s, docbuf, n, (enum mode)m, 0, &r);
			ck_assert_msg(r.found == 1,
				      "%s place %d mode %d: found %d",
				      case_rule[c], p, m, r.found);
			ck_assert_str_eq(r.f.rule, case_rule[c]);
			ck_assert_uint_eq(r.f.line, line);
			ck_assert_str_eq(r.f.fingerprint, fp);
			assert_no_secret(&r.f, &t);
			/* Decided once the bytes after it are known: a short
			 * token in the last bytes waits for the end. */
			if (m == M_WHOLE && p == P_MIDDLE)
				ck_assert_int_eq(r.feeds, 1);
			if (m == M_WHOLE && p == P_END && strlen(t.text) < 1024)
				ck_assert_int_eq(r.feeds, 0);
		}
	}
	ckpt_scan_free(s);
}
END_TEST

/* A few rules, the document cut in two at every offset around the token,
 * and a token across the seam of two 256 KiB reads. */
static const enum tcase straddle_cases[] = {
	T_AWS_KEY, T_AWS_SECRET, T_GH_CLASSIC, T_SLACK_HOOK, T_PEM_EC,
	T_PEM_RSA, T_JWT,	 T_JWT_LONG,   T_SENDGRID,   T_AZURE,
};

START_TEST(test_straddle)
{
	enum tcase c = straddle_cases[_i];
	struct ckpt_scan *s;
	struct token t;
	struct result r;
	char fp[17];
	size_t off, n, len;
	unsigned line;

	ck_assert_int_eq(ckpt_scan_new(NULL, &s), 0);
	make(c, 2, &t);
	expect_fp(case_rule[c], &t, fp);
	len = strlen(t.text);
	n = place(docbuf, &t, P_MIDDLE, &off);
	line = line_at(docbuf, off + t.ms);
	for (size_t k = off - 50; k <= off + (len > 50 ? len : 50) + 50; k++) {
		scan_cuts(s, docbuf, n, M_WHOLE, k, &r);
		ck_assert_msg(r.found == 1, "%s split at %+ld: found %d",
			      case_rule[c], (long)k - (long)off, r.found);
		ck_assert_str_eq(r.f.rule, case_rule[c]);
		ck_assert_uint_eq(r.f.line, line);
		ck_assert_str_eq(r.f.fingerprint, fp);
	}

	/* 256 KiB reads, the token across the first seam */
	{
		const size_t chunk = 256 * 1024;
		uint64_t st = 5;
		size_t at;
		struct ckpt_finding f;
		int found = 0;

		docbuf[0] = '\0';
		filler(docbuf, chunk - 20 - 200, &st);
		at = strlen(docbuf);
		memset(docbuf + at, 'x', chunk - 20 - at);
		strcpy(docbuf + chunk - 20, " ");
		at = strlen(docbuf);
		strcat(docbuf, t.text);
		strcat(docbuf, "\n");
		filler(docbuf, chunk, &st);
		n = strlen(docbuf);
		ckpt_scan_reset(s);
		for (size_t i = 0; i < n; i += chunk)
			found += ckpt_scan_feed(s, docbuf + i,
						n - i < chunk ? n - i : chunk,
						&f) == 1;
		found += ckpt_scan_finish(s, &f) == 1;
		ck_assert_int_eq(found, 1);
		ck_assert_str_eq(f.rule, case_rule[c]);
		ck_assert_uint_eq(f.line, line_at(docbuf, at + t.ms));
		ck_assert_str_eq(f.fingerprint, fp);
	}
	ckpt_scan_free(s);
}
END_TEST

/* Small reads make the scanner compact the tail it keeps from time to
 * time: a rule that looks back (at a boundary, at the four characters
 * before Azure's Q~) must see the same bytes there, at every offset. */
START_TEST(test_lookbehind)
{
	struct ckpt_scan *s;
	struct token az, gh;
	struct result r;
	char fp[17];

	ck_assert_int_eq(ckpt_scan_new(NULL, &s), 0);
	make(T_AZURE, 4, &az);
	make(T_GH_CLASSIC, 4, &gh);
	expect_fp("azure-client-secret", &az, fp);
	for (size_t pad = 0; pad < 2200; pad++) {
		size_t n;

		memset(docbuf, '.', pad);
		/* no boundary before the GitHub token: not a match */
		n = pad +
		    (size_t)sprintf(docbuf + pad, "x%s %s\n", gh.text, az.text);
		memset(docbuf + n, ' ', 2100);
		n += 2100;
		scan_cuts(s, docbuf, n, M_BYTES, 0, &r);
		ck_assert_msg(r.found == 1, "pad %zu: found %d", pad, r.found);
		ck_assert_str_eq(r.f.rule, "azure-client-secret");
		ck_assert_str_eq(r.f.fingerprint, fp);
	}
	ckpt_scan_free(s);
}
END_TEST

/* After a finding the file is done; after reset the next one starts at
 * line 1. */
START_TEST(test_reset)
{
	struct ckpt_scan *s;
	struct ckpt_finding f;
	struct token t;
	char text[4200];

	ck_assert_int_eq(ckpt_scan_new(NULL, &s), 0);
	make(T_GH_CLASSIC, 3, &t);
	snprintf(text, sizeof(text), "a\nb\n%s\n", t.text);
	ck_assert_int_eq(ckpt_scan_feed(s, text, strlen(text), &f), 0);
	ck_assert_int_eq(ckpt_scan_finish(s, &f), 1);
	ck_assert_uint_eq(f.line, 3);
	ck_assert_int_eq(ckpt_scan_feed(s, text, strlen(text), &f), 0);
	ck_assert_int_eq(ckpt_scan_finish(s, &f), 0);

	ckpt_scan_reset(s);
	ck_assert_int_eq(ckpt_scan_finish(s, &f), 0); /* empty file */
	ckpt_scan_reset(s);
	ck_assert_int_eq(ckpt_scan_feed(s, text + 4, strlen(text) - 4, &f), 0);
	ck_assert_int_eq(ckpt_scan_finish(s, &f), 1);
	ck_assert_uint_eq(f.line, 1);
	ckpt_scan_free(s);
	ckpt_scan_free(NULL);
}
END_TEST

/* ---- negatives ---------------------------------------------------------- */

enum ncase {
	N_PROSE,
	N_UUID,
	N_DIGESTS,
	N_LOCKFILE,
	N_DATA_URI,
	N_GIT_LOG,
	N_SK_SHORT,
	N_AKIA_LOWER,
	N_JWT_LIKE,
	N_SSH_PUB,
	N_PUBLIC_PEM,
	N_PEM_IN_CODE,
	N_PLACEHOLDERS,
	N_IDENTIFIERS,
	N_BINARY,
	N_COUNT
};

static size_t negative(enum ncase c, char *out)
{
	uint64_t st = 1000 + (uint64_t)c;
	char hdr[128], pay[256];

	out[0] = '\0';
	switch (c) {
	case N_PROSE:
		strcat(out,
		       "Choose a strong password and keep your secret safe.\n"
		       "The API key and the access token are read from the\n"
		       "environment: password=${DB_PASSWORD}, token: <redacted>\n"
		       "api_key = os.environ[\"API_KEY\"]\n"
		       "aws_secret_access_key = None\n"
		       "AWS_SECRET_ACCESS_KEY=${AWS_SECRET_ACCESS_KEY}\n"
		       "Secret Access Key: see the vault, never paste it here.\n"
		       "Use a bearer token; the secret key rotates nightly.\n");
		break;
	case N_UUID:
		for (int i = 0; i < 50; i++) {
			put(out, hexl, 8, &st);
			strcat(out, "-");
			put(out, hexl, 4, &st);
			strcat(out, "-4");
			put(out, hexl, 3, &st);
			strcat(out, "-a");
			put(out, hexl, 3, &st);
			strcat(out, "-");
			put(out, hexl, 12, &st);
			strcat(out, i % 2 ? "\n" : " ");
		}
		break;
	case N_DIGESTS:
		for (int i = 0; i < 30; i++) {
			strcat(out, "sha1 ");
			put(out, hexl, 40, &st);
			strcat(out, "  sha256:");
			put(out, hexl, 64, &st);
			strcat(out, "  SK");
			put(out, hexl, 31, &st); /* one short of Twilio */
			strcat(out, " SK");
			put(out, DIGITS, 32, &st); /* no letter */
			strcat(out, " SK");
			put(out, "abcdef", 32, &st); /* no digit */
			strcat(out, "\n");
		}
		break;
	case N_LOCKFILE:
		for (int i = 0; i < 40; i++) {
			strcat(out,
			       "      \"resolved\": \"https://registry.npmjs."
			       "org/x/-/x-1.0.0.tgz\",\n"
			       "      \"integrity\": \"sha512-");
			put(out, b64, 86, &st);
			strcat(out, "==\"\n      \"integrity\": \"sha1-");
			put(out, b64, 27, &st);
			strcat(out, "=\"\n");
		}
		break;
	case N_DATA_URI:
		strcat(out, "<img src=\"data:image/png;base64,iVBORw0KGgo");
		put(out, b64, 30000, &st);
		/* key shapes by chance inside base64: not at a boundary */
		strcat(out, "+AK"
			    "IA");
		put(out, b32, 16, &st);
		strcat(out, "/AI"
			    "za");
		put(out, alnum, 35, &st);
		strcat(out, "+");
		put(out, b64, 30000, &st);
		strcat(out, "=\" alt=\"logo\">\n");
		break;
	case N_GIT_LOG:
		for (int i = 0; i < 20; i++) {
			strcat(out, "commit ");
			put(out, hexl, 40, &st);
			strcat(out, "\nMerge: ");
			put(out, hexl, 7, &st);
			strcat(out, " ");
			put(out, hexl, 7, &st);
			strcat(out,
			       "\nAuthor: A Developer <dev@example.com>\n"
			       "Date:   Mon Nov 3 10:00:00 2025 +0100\n\n"
			       "    Remove the hard-coded password and token\n\n"
			       "    Change-Id: I");
			put(out, hexl, 40, &st);
			strcat(out, "\n\n");
		}
		break;
	case N_SK_SHORT:
		strcat(out, "pip install sk-learn; sk-abc; the sk- prefix\n"
			    "sk-proj-short and sk-ant-api03-tooshort\n"
			    "legacy shape without the marker: sk-");
		put(out, alnum, 48, &st);
		strcat(out, "\nsk_live_short sk_test_ pk_live_");
		put(out, alnum, 24, &st);
		strcat(out, "\n");
		break;
	case N_AKIA_LOWER:
		strcat(out, "AK"
			    "IAbcdefghijklmnopq AK"
			    "IA");
		put(out, b32, 15, &st); /* one short */
		strcat(out, " AK"
			    "IA");
		put(out, b32, 17, &st); /* one long */
		strcat(out, " AK"
			    "IAIOSFODNN7"
			    "EXAMPLE\n");
		strcat(out, "aws_secret"
			    "_access_key = wJalrXUtnFEMI/K7MDENG"
			    "/bPxRfiCY"
			    "EXAMPLE"
			    "KEY\n");
		break;
	case N_JWT_LIKE:
		/* no "alg" in the header */
		b64url("{\"typ\":\"JWT\",\"kid\":\"k1\"}", hdr);
		b64url("{\"sub\":\"1234567890\",\"iat\":1516239022}", pay);
		sprintf(out, "%s.%s.", hdr, pay);
		put(out, word, 43, &st);
		/* a real header, but the signature is short */
		b64url("{\"alg\":\"HS256\",\"typ\":\"JWT\"}", hdr);
		sprintf(out + strlen(out), "\n%s.%s.", hdr, pay);
		put(out, word, 12, &st);
		/* unsigned */
		sprintf(out + strlen(out), "\n%s.%s.\n", hdr, pay);
		/* eyJ and random text */
		strcat(out, "ey"
			    "J");
		put(out, word, 30, &st);
		strcat(out, ".ey"
			    "J");
		put(out, word, 30, &st);
		strcat(out, ".");
		put(out, word, 40, &st);
		strcat(out, "\n");
		break;
	case N_SSH_PUB:
		strcat(out, "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI");
		put(out, b64, 43, &st);
		strcat(out,
		       " dev@laptop\nssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABgQ");
		put(out, b64, 540, &st);
		strcat(out, "= dev@laptop\n");
		break;
	case N_PUBLIC_PEM:
		strcat(out, "-----BEGIN PUBLIC KEY-----\n");
		for (int i = 0; i < 6; i++) {
			put(out, b64, 64, &st);
			strcat(out, "\n");
		}
		strcat(out, "-----END PUBLIC KEY-----\n"
			    "-----BEGIN CERTIFICATE-----\n");
		for (int i = 0; i < 20; i++) {
			put(out, b64, 64, &st);
			strcat(out, "\n");
		}
		strcat(out, "-----END CERTIFICATE-----\n");
		break;
	case N_PEM_IN_CODE:
		strcat(out, "if (strncmp(s, \"-----BEGIN RSA "
			    "PRIVATE KEY-----\", 31)"
			    " == 0)\n\treturn PEM_RSA;\n"
			    "HEADER = '-----BEGIN OPENSSH "
			    "PRIVATE KEY-----\\n'\n"
			    "-----BEGIN RSA PRIVATE"
			    " KEY----- and then the key "
			    "in base 64 and the END line as RFC 7468 says in "
			    "section 2 of its text and that is all there is\n"
			    "-----BEGIN PRIVATE"
			    " KEY-----\n...\n"
			    "-----END PRIVATE KEY-----\n"
			    "-----BEGIN PRIVATE"
			    " KEY-----\n"
			    "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC");
		for (int i = 0; i < 4; i++)
			strcat(out, "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n");
		strcat(out, "-----END PRIVATE KEY-----\n");
		break;
	case N_PLACEHOLDERS:
		strcat(out, "GITHUB_TOKEN=gh"
			    "p_");
		for (int i = 0; i < 36; i++)
			strcat(out, "x");
		strcat(out, "\nSTRIPE=sk"
			    "_live_");
		for (int i = 0; i < 24; i++)
			strcat(out, "x");
		strcat(out, "\nSLACK=xo"
			    "xb-your-bot-token-goes-here-now\n"
			    "AWS=AK"
			    "IAXXXXXXXXXXXXXXXX\nHF=hf"
			    "_");
		put(out, LOWER, 34, &st);
		strcat(out, "\nAZ=abc8Q"
			    "~xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n");
		break;
	case N_IDENTIFIERS:
		for (int i = 0; i < 100; i++) {
			strcat(out, "id_");
			put(out, alnum, 40, &st);
			strcat(out, " ");
			put(out, word, 64, &st);
			strcat(out, "\n");
		}
		strcat(out, "client_secret: ");
		put_mixed(out, b64, 40, &st);
		/* 40 letters, no digit: a name, not a key */
		strcat(out, "\naws_secret"
			    "_access_key = AwsSecretAccessKeyProvider"
			    "ChainFactoryXy\n");
		break;
	case N_BINARY: {
		size_t n = 512 * 1024;

		for (size_t i = 0; i < n; i += 8) {
			uint64_t v = rnd(&st);

			memcpy(out + i, &v, 8);
		}
		return n;
	}
	case N_COUNT:
		break;
	}
	return strlen(out);
}

START_TEST(test_negative)
{
	struct ckpt_scan *s;
	size_t n = negative((enum ncase)_i, docbuf);

	ck_assert_int_eq(ckpt_scan_new(NULL, &s), 0);
	for (int m = 0; m < M_COUNT; m++) {
		struct result r;

		scan_cuts(s, docbuf, n, (enum mode)m, 0, &r);
		ck_assert_msg(r.found == 0, "case %d mode %d: %s at line %u",
			      _i, m, r.f.rule, r.f.line);
	}
	ckpt_scan_free(s);
}
END_TEST

/* ---- the allow file ----------------------------------------------------- */

static char *write_tmp(const char *text)
{
	const char *dir = getenv("TMPDIR");
	char *path = malloc(4096);
	FILE *fp;
	int fd;

	ck_assert_ptr_nonnull(path);
	snprintf(path, 4096, "%s/check_scan.XXXXXX", dir ? dir : "/tmp");
	fd = mkstemp(path);
	ck_assert_int_ge(fd, 0);
	fp = fdopen(fd, "w");
	ck_assert_ptr_nonnull(fp);
	fputs(text, fp);
	ck_assert_int_eq(fclose(fp), 0);
	return path;
}

START_TEST(test_allow)
{
	struct ckpt_scan_allow *al;
	struct ckpt_scan *s;
	struct ckpt_err err = {0};
	struct token a, b;
	struct result r;
	char text[1024], fa[17], allow[256];
	char *path;
	size_t n;

	make(T_GH_CLASSIC, 10, &a);
	make(T_GH_CLASSIC, 11, &b);
	expect_fp("github-pat-classic", &a, fa);
	snprintf(allow, sizeof(allow),
		 "# reviewed: a test fixture\n\n  %s  # fixtures/a.txt\n"
		 "0123456789ABCDEF\n",
		 fa);
	path = write_tmp(allow);
	ck_assert_int_eq(ckpt_scan_allow_load(path, &al, &err), 0);
	ck_assert_int_eq(ckpt_scan_new(al, &s), 0);

	n = (size_t)snprintf(text, sizeof(text), "token %s\n", a.text);
	scan_cuts(s, text, n, M_WHOLE, 0, &r);
	ck_assert_int_eq(r.found, 0);

	n = (size_t)snprintf(text, sizeof(text), "token %s\n", b.text);
	scan_cuts(s, text, n, M_WHOLE, 0, &r);
	ck_assert_int_eq(r.found, 1);
	ck_assert_str_eq(r.f.rule, "github-pat-classic");

	/* the allowed one first: the scan goes on to the other */
	n = (size_t)snprintf(text, sizeof(text), "%s\nx\n%s\n", a.text, b.text);
	scan_cuts(s, text, n, M_BYTES, 0, &r);
	ck_assert_int_eq(r.found, 1);
	ck_assert_uint_eq(r.f.line, 3);

	ckpt_scan_free(s);
	ckpt_scan_allow_free(al);
	ckpt_scan_allow_free(NULL);
	unlink(path);
	free(path);
}
END_TEST

static const char *const bad_allow[] = {
	"0123456789abcdef\nnot a fingerprint\n",
	"0123456789abcdef\n0123456789abcde\n",	      /* 15 digits */
	"0123456789abcdef\n0123456789abcdef0\n",      /* 17 digits */
	"0123456789abcdef\n0123456789abcdef extra\n", /* trailing text */
	"0123456789abcdef\n0123456789abcdeg\n",	      /* not hex */
};

START_TEST(test_allow_malformed)
{
	struct ckpt_scan_allow *al = (void *)1;
	struct ckpt_err err = {0};
	char *path = write_tmp(bad_allow[_i]);

	ck_assert_int_eq(ckpt_scan_allow_load(path, &al, &err), -EINVAL);
	ck_assert_ptr_null(al);
	ck_assert_int_eq(err.code, -EINVAL);
	ck_assert_str_eq(err.rule, "allowlist");
	ck_assert_uint_eq(err.line, 2);
	ck_assert_ptr_nonnull(strstr(err.msg, "line 2"));
	unlink(path);
	free(path);

	ck_assert_int_eq(ckpt_scan_allow_load("/nonexistent/allow", &al, &err),
			 -ENOENT);
	ck_assert_ptr_null(al);
}
END_TEST

/* ---- fingerprints ------------------------------------------------------- */

START_TEST(test_fingerprints)
{
	struct ckpt_scan *s;
	struct token a, b;
	struct result r1, r2, r3;
	char text[4096];
	size_t n;

	ck_assert_int_eq(ckpt_scan_new(NULL, &s), 0);
	make(T_AWS_KEY, 20, &a);
	make(T_AWS_KEY, 21, &b);

	n = (size_t)snprintf(text, sizeof(text), "k = %s\n", a.text);
	scan_cuts(s, text, n, M_WHOLE, 0, &r1);
	n = (size_t)snprintf(text, sizeof(text), "\n\n\"%s\",", a.text);
	scan_cuts(s, text, n, M_BYTES, 0, &r2);
	n = (size_t)snprintf(text, sizeof(text), "k = %s\n", b.text);
	scan_cuts(s, text, n, M_WHOLE, 0, &r3);
	ck_assert_int_eq(r1.found + r2.found + r3.found, 3);
	/* the same secret anywhere: the same fingerprint */
	ck_assert_str_eq(r1.f.fingerprint, r2.f.fingerprint);
	ck_assert_uint_eq(r2.f.line, 3);
	/* another secret: another fingerprint */
	ck_assert_str_ne(r1.f.fingerprint, r3.f.fingerprint);
	ck_assert_uint_eq(strlen(r1.f.fingerprint), 16);
	ck_assert_uint_eq(strspn(r1.f.fingerprint, hexl), 16);

	/* a PEM key: the same in a file and in a JSON string */
	make(T_PEM_PKCS8, 22, &a);
	strcpy(text, "{\"private_key\": \"");
	for (const char *p = a.text; *p; p++)
		strcat(text, *p == '\n' ? "\\n" : (char[2]){*p, 0});
	strcat(text, "\"}\n");
	scan_cuts(s, text, strlen(text), M_RANDOM, 0, &r1);
	scan_cuts(s, a.text, strlen(a.text), M_WHOLE, 0, &r2);
	ck_assert_int_eq(r1.found + r2.found, 2);
	ck_assert_str_eq(r1.f.fingerprint, r2.f.fingerprint);
	ckpt_scan_free(s);
}
END_TEST

/* ---- throughput --------------------------------------------------------- */

static const char *const src_words[] = {
	"static", "int",     "const",	 "char",     "return",	"if",
	"else",	  "for",     "while",	 "struct",   "size_t",	"unsigned",
	"buf",	  "len",     "err",	 "path",     "node",	"entry",
	"count",  "index",   "value",	 "result",   "config",	"options",
	"self",	  "def",     "import",	 "function", "let",	"await",
	"printf", "memcpy",  "strlen",	 "malloc",   "free",	"NULL",
	"true",	  "false",   "uint64_t", "ckpt",     "archive", "reader",
	"scan",	  "finding", "rule",	 "line",     "token",	"password",
	"secret", "key",     "api",	 "session",  "user",	"workspace",
};

static const char *const src_punct[] = {
	" ",   " ",   " ",   "(",    ")",      ", ",   "; ",  " = ",
	"->",  ".",   "_",   " + ",  " == ",   " && ", "[",   "]",
	"{\n", "}\n", ";\n", "\n\t", "\n\t\t", " /* ", " */", "\"",
	"'",   ": ",  "\n",  "# ",   "// ",    "0",    "1",   "42",
};

static size_t source_text(char *out, size_t n, uint64_t *st)
{
	size_t o = 0, nw = sizeof(src_words) / sizeof(src_words[0]);
	size_t np = sizeof(src_punct) / sizeof(src_punct[0]);

	while (o + 64 < n) {
		const char *w = src_words[rnd(st) % nw];
		const char *p = src_punct[rnd(st) % np];

		o += (size_t)sprintf(out + o, "%s%s", w, p);
	}
	memset(out + o, ' ', n - o);
	return n;
}

START_TEST(test_throughput)
{
	const size_t total = 64u << 20, chunk = 256 * 1024;
	char *big = malloc(total);
	struct ckpt_scan *s;
	struct ckpt_finding f;
	struct timespec t0, t1;
	uint64_t st = 99;
	double sec;
	int found = 0;

	ck_assert_ptr_nonnull(big);
	source_text(big, 1u << 20, &st);
	for (size_t o = 1u << 20; o < total; o += 1u << 20)
		memcpy(big + o, big, 1u << 20);
	ck_assert_int_eq(ckpt_scan_new(NULL, &s), 0);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (size_t o = 0; o < total; o += chunk)
		found += ckpt_scan_feed(s, big + o, chunk, &f);
	found += ckpt_scan_finish(s, &f);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	sec = (double)(t1.tv_sec - t0.tv_sec) +
	      (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	printf("check_scan: throughput %.0f MB/s over %zu MiB of source-like "
	       "text in %zu KiB reads\n",
	       (double)total / sec / 1e6, total >> 20, chunk >> 10);
	fflush(stdout);
	ck_assert_int_eq(found, 0);
	ckpt_scan_free(s);
	free(big);
}
END_TEST

static Suite *scan_suite(void)
{
	Suite *s = suite_create("scan");
	TCase *tc;

	tc = tcase_create("rules");
	tcase_add_test(tc, test_rules_table);
	tcase_add_loop_test(tc, test_positive, 0, T_COUNT);
	tcase_add_loop_test(tc, test_straddle, 0,
			    sizeof(straddle_cases) / sizeof(straddle_cases[0]));
	tcase_add_test(tc, test_lookbehind);
	tcase_add_test(tc, test_reset);
	tcase_set_timeout(tc, 120);
	suite_add_tcase(s, tc);

	tc = tcase_create("negatives");
	tcase_add_loop_test(tc, test_negative, 0, N_COUNT);
	tcase_set_timeout(tc, 60);
	suite_add_tcase(s, tc);

	tc = tcase_create("allow and fingerprints");
	tcase_add_test(tc, test_allow);
	tcase_add_loop_test(tc, test_allow_malformed, 0,
			    sizeof(bad_allow) / sizeof(bad_allow[0]));
	tcase_add_test(tc, test_fingerprints);
	suite_add_tcase(s, tc);

	tc = tcase_create("throughput");
	tcase_add_test(tc, test_throughput);
	tcase_set_timeout(tc, 120);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(scan_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
