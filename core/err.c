/*
 * err.c - the error object.  Filling one never allocates and never copies
 * a path unescaped, so a hostile name cannot break a log line.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

size_t utf8_decode(const unsigned char *s, size_t n, uint32_t *out)
{
	size_t len;
	uint32_t cp;

	if (n == 0)
		return 0;
	if (s[0] < 0x80) {
		*out = s[0];
		return 1;
	}
	if (s[0] >= 0xc2 && s[0] <= 0xdf)
		len = 2, cp = s[0] & 0x1f;
	else if (s[0] >= 0xe0 && s[0] <= 0xef)
		len = 3, cp = s[0] & 0x0f;
	else if (s[0] >= 0xf0 && s[0] <= 0xf4)
		len = 4, cp = s[0] & 0x07;
	else
		return 0;
	if (n < len)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (s[i] & 0x3f);
	}
	if ((len == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
	    (len == 4 && (cp < 0x10000 || cp > 0x10ffff)))
		return 0;
	*out = cp;
	return len;
}

static bool invisible(uint32_t cp)
{
	return (cp >= 0x80 && cp <= 0x9f) || cp == 0x061c || cp == 0x00ad ||
	       (cp >= 0x200b && cp <= 0x200f) ||
	       (cp >= 0x2028 && cp <= 0x202e) ||
	       (cp >= 0x2060 && cp <= 0x2069) || cp == 0xfeff;
}

void ckpt_escape(const char *path, size_t len, char *out, size_t outsz)
{
	const unsigned char *s = (const unsigned char *)path;
	size_t o = 0, i = 0;

	if (outsz == 0)
		return;
	while (i < len) {
		uint32_t cp;
		size_t n = utf8_decode(s + i, len - i, &cp);
		char tmp[8];
		size_t tl;

		if (n == 1 && (s[i] < 0x20 || s[i] == 0x7f || s[i] == '\\'))
			n = 0;
		if (n > 1 && invisible(cp)) {
			/* C1, bidi and zero-width characters would reorder
			 * or hide parts of a log line. */
			tl = (size_t)snprintf(tmp, sizeof(tmp), "\\u%04x",
					      (unsigned)cp & 0xffff);
		} else if (n == 0) {
			tl = (size_t)snprintf(tmp, sizeof(tmp), "\\x%02x",
					      s[i]);
			n = 1;
		} else {
			memcpy(tmp, s + i, n);
			tl = n;
		}
		if (o + tl + 4 > outsz) {
			/* Room is kept for "..." so truncation is visible. */
			if (outsz >= 4) {
				memcpy(out + (o < outsz - 4 ? o : outsz - 4),
				       "...", 3);
				o = (o < outsz - 4 ? o : outsz - 4) + 3;
			}
			break;
		}
		memcpy(out + o, tmp, tl);
		o += tl;
		i += n;
	}
	out[o < outsz ? o : outsz - 1] = '\0';
}

int ckpt_err_set(struct ckpt_err *err, int code, const char *rule,
		 const char *path, size_t path_len, const char *fmt, ...)
{
	va_list ap;

	if (!err)
		return code;
	memset(err, 0, sizeof(*err));
	err->code = code;
	if (rule)
		snprintf(err->rule, sizeof(err->rule), "%s", rule);
	if (path)
		ckpt_escape(path, path_len, err->path, sizeof(err->path));
	va_start(ap, fmt);
	vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
	va_end(ap);
	return code;
}

int hex_digit(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}
