/*
 * json.c - a pull parser for untrusted JSON (RFC 8259).
 *
 * Manifests come from archives anyone may craft and can list 200,000
 * entries, so this parser builds no tree, bounds nesting at
 * JSON_MAX_DEPTH, keeps numbers as their exact text (nanosecond times do
 * not fit a double) and unescapes one string at a time into a buffer it
 * reuses.  Strings are checked to be valid UTF-8.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

enum {
	ST_TOP,	      /* a value is expected at the top level */
	ST_DONE,      /* the top-level value is complete */
	ST_OBJ_FIRST, /* after '{': a key or '}' */
	ST_OBJ_KEY,   /* after ',': a key */
	ST_OBJ_VALUE, /* after ':': a value */
	ST_OBJ_NEXT,  /* after a member: ',' or '}' */
	ST_ARR_FIRST, /* after '[': a value or ']' */
	ST_ARR_VALUE, /* after ',': a value */
	ST_ARR_NEXT,  /* after an element: ',' or ']' */
};

void json_init(struct json *j, const char *text, size_t len)
{
	memset(j, 0, sizeof(*j));
	j->s = text;
	j->end = text + len;
	j->stack[0] = ST_TOP;
	j->depth = 1;
}

void json_fini(struct json *j)
{
	free(j->str);
	j->str = NULL;
}

static enum json_tok fail(struct json *j, const char *why)
{
	j->why = why;
	j->s = j->end;
	j->depth = 0;
	return JSON_ERROR;
}

static void ws(struct json *j)
{
	while (j->s < j->end && (*j->s == ' ' || *j->s == '\t' ||
				 *j->s == '\n' || *j->s == '\r'))
		j->s++;
}

static int put(struct json *j, const char *p, size_t n)
{
	if (j->str_len + n + 1 > j->str_cap) {
		size_t cap = j->str_cap ? j->str_cap : 64;
		char *s;

		while (cap < j->str_len + n + 1)
			cap *= 2;
		s = realloc(j->str, cap);
		if (!s)
			return -ENOMEM;
		j->str = s;
		j->str_cap = cap;
	}
	memcpy(j->str + j->str_len, p, n);
	j->str_len += n;
	j->str[j->str_len] = '\0';
	return 0;
}

static int hex4(const char *p, uint32_t *out)
{
	uint32_t v = 0;

	for (int i = 0; i < 4; i++) {
		int d = hex_digit(p[i]);
		if (d < 0)
			return -1;
		v = v << 4 | (uint32_t)d;
	}
	*out = v;
	return 0;
}

static size_t utf8_encode(uint32_t cp, char *o)
{
	if (cp < 0x80) {
		o[0] = (char)cp;
		return 1;
	}
	if (cp < 0x800) {
		o[0] = (char)(0xc0 | cp >> 6);
		o[1] = (char)(0x80 | (cp & 0x3f));
		return 2;
	}
	if (cp < 0x10000) {
		o[0] = (char)(0xe0 | cp >> 12);
		o[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
		o[2] = (char)(0x80 | (cp & 0x3f));
		return 3;
	}
	o[0] = (char)(0xf0 | cp >> 18);
	o[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
	o[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
	o[3] = (char)(0x80 | (cp & 0x3f));
	return 4;
}

/* At the opening quote. */
static int string(struct json *j)
{
	j->str_len = 0;
	if (put(j, "", 0) < 0)
		return -ENOMEM;
	j->s++;
	while (j->s < j->end) {
		const char *run = j->s;
		unsigned char c;

		while (j->s < j->end && *j->s != '"' && *j->s != '\\' &&
		       (unsigned char)*j->s >= 0x20)
			j->s++;
		if (put(j, run, (size_t)(j->s - run)) < 0)
			return -ENOMEM;
		if (j->s >= j->end)
			break;
		c = (unsigned char)*j->s;
		if (c == '"') {
			uint32_t cp;
			/* Escapes produce valid UTF-8 by construction;
			 * raw bytes are checked here, once. */
			for (size_t i = 0; i < j->str_len;) {
				size_t n = utf8_decode(
					(const unsigned char *)j->str + i,
					j->str_len - i, &cp);
				if (n == 0)
					return -EILSEQ;
				i += n;
			}
			j->s++;
			return 0;
		}
		if (c < 0x20)
			return -EINVAL;
		/* backslash */
		if (j->end - j->s < 2)
			break;
		static const char from[] = "\"\\/bfnrt";
		static const char to[] = "\"\\/\b\f\n\r\t";
		char e = j->s[1], o[8];
		const char *m = e ? strchr(from, e) : NULL;
		size_t n = 1;

		j->s += 2;
		if (m) {
			o[0] = to[m - from];
		} else if (e == 'u') {
			uint32_t cp, lo;
			if (j->end - j->s < 4 || hex4(j->s, &cp) < 0)
				return -EINVAL;
			j->s += 4;
			if (cp >= 0xdc00 && cp <= 0xdfff)
				return -EILSEQ;
			if (cp >= 0xd800 && cp <= 0xdbff) {
				if (j->end - j->s < 6 || j->s[0] != '\\' ||
				    j->s[1] != 'u' || hex4(j->s + 2, &lo) < 0 ||
				    lo < 0xdc00 || lo > 0xdfff)
					return -EILSEQ;
				j->s += 6;
				cp = 0x10000 + ((cp - 0xd800) << 10) +
				     (lo - 0xdc00);
			}
			n = utf8_encode(cp, o);
		} else {
			return -EINVAL;
		}
		if (put(j, o, n) < 0)
			return -ENOMEM;
	}
	return -EINVAL;
}

static int number(struct json *j)
{
	const char *p = j->s;

	if (p < j->end && *p == '-')
		p++;
	if (p < j->end && *p == '0')
		p++;
	else if (p < j->end && *p >= '1' && *p <= '9')
		while (p < j->end && *p >= '0' && *p <= '9')
			p++;
	else
		return -EINVAL;
	if (p < j->end && *p == '.') {
		p++;
		if (p >= j->end || *p < '0' || *p > '9')
			return -EINVAL;
		while (p < j->end && *p >= '0' && *p <= '9')
			p++;
	}
	if (p < j->end && (*p == 'e' || *p == 'E')) {
		p++;
		if (p < j->end && (*p == '+' || *p == '-'))
			p++;
		if (p >= j->end || *p < '0' || *p > '9')
			return -EINVAL;
		while (p < j->end && *p >= '0' && *p <= '9')
			p++;
	}
	j->num = j->s;
	j->num_len = (size_t)(p - j->s);
	j->s = p;
	return 0;
}

static bool word(struct json *j, const char *w, size_t n)
{
	if ((size_t)(j->end - j->s) < n || memcmp(j->s, w, n) != 0)
		return false;
	j->s += n;
	return true;
}

/* A value starts here; st is what the enclosing level expects after it. */
static enum json_tok value(struct json *j, unsigned char after)
{
	unsigned char *top = &j->stack[j->depth - 1];

	ws(j);
	j->tok = j->s;
	if (j->s >= j->end)
		return fail(j, "unexpected end");
	*top = after;
	switch (*j->s) {
	case '{':
	case '[':
		if (j->depth >= JSON_MAX_DEPTH)
			return fail(j, "nested too deeply");
		j->stack[j->depth++] =
			*j->s == '{' ? ST_OBJ_FIRST : ST_ARR_FIRST;
		return *j->s++ == '{' ? JSON_OBJ_BEGIN : JSON_ARR_BEGIN;
	case '"':
		return string(j) < 0 ? fail(j, "bad string") : JSON_STRING;
	case 't':
		return word(j, "true", 4) ? JSON_TRUE : fail(j, "bad literal");
	case 'f':
		return word(j, "false", 5) ? JSON_FALSE
					   : fail(j, "bad literal");
	case 'n':
		return word(j, "null", 4) ? JSON_NULL : fail(j, "bad literal");
	default:
		return number(j) < 0 ? fail(j, "bad number") : JSON_NUMBER;
	}
}

static enum json_tok key(struct json *j)
{
	j->tok = j->s;
	if (j->s >= j->end || *j->s != '"' || string(j) < 0)
		return fail(j, "bad key");
	ws(j);
	if (j->s >= j->end || *j->s != ':')
		return fail(j, "missing ':'");
	j->s++;
	j->stack[j->depth - 1] = ST_OBJ_VALUE;
	return JSON_KEY;
}

static enum json_tok close(struct json *j, enum json_tok tok)
{
	j->tok = j->s;
	j->s++;
	j->depth--;
	return tok;
}

enum json_tok json_next(struct json *j)
{
	if (j->depth == 0)
		return JSON_ERROR;
	ws(j);
	switch (j->stack[j->depth - 1]) {
	case ST_TOP:
		return value(j, ST_DONE);
	case ST_DONE:
		return j->s == j->end ? JSON_END : fail(j, "trailing data");
	case ST_OBJ_FIRST:
		if (j->s < j->end && *j->s == '}')
			return close(j, JSON_OBJ_END);
		return key(j);
	case ST_OBJ_KEY:
		return key(j);
	case ST_OBJ_VALUE:
		return value(j, ST_OBJ_NEXT);
	case ST_OBJ_NEXT:
		if (j->s < j->end && *j->s == '}')
			return close(j, JSON_OBJ_END);
		if (j->s < j->end && *j->s == ',') {
			j->s++;
			ws(j);
			return key(j);
		}
		return fail(j, "expected ',' or '}'");
	case ST_ARR_FIRST:
		if (j->s < j->end && *j->s == ']')
			return close(j, JSON_ARR_END);
		return value(j, ST_ARR_NEXT);
	case ST_ARR_VALUE:
		return value(j, ST_ARR_NEXT);
	case ST_ARR_NEXT:
		if (j->s < j->end && *j->s == ']')
			return close(j, JSON_ARR_END);
		if (j->s < j->end && *j->s == ',') {
			j->s++;
			return value(j, ST_ARR_NEXT);
		}
		return fail(j, "expected ',' or ']'");
	}
	return fail(j, "bad state");
}

int json_skip(struct json *j, enum json_tok tok)
{
	int depth = 0;

	for (;;) {
		if (tok == JSON_ERROR || tok == JSON_END)
			return -EINVAL;
		if (tok == JSON_OBJ_BEGIN || tok == JSON_ARR_BEGIN)
			depth++;
		else if (tok == JSON_OBJ_END || tok == JSON_ARR_END)
			depth--;
		if (depth <= 0)
			return 0;
		tok = json_next(j);
	}
}

int json_int64(const struct json *j, int64_t *out)
{
	const char *p = j->num, *e = j->num + j->num_len;
	bool neg = false;
	uint64_t v = 0, lim;

	if (p < e && *p == '-')
		neg = true, p++;
	if (p == e)
		return -EINVAL;
	lim = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
	for (; p < e; p++) {
		if (*p < '0' || *p > '9')
			return -EINVAL; /* a fraction or exponent */
		if (v > (lim - (uint64_t)(*p - '0')) / 10)
			return -ERANGE;
		v = v * 10 + (uint64_t)(*p - '0');
	}
	*out = neg ? (int64_t)(0 - v) : (int64_t)v;
	return 0;
}
