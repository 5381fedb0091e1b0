/*
 * manifest.c - manifest.json, the public description of a checkpoint.
 *
 * Parses the untrusted text into a sorted array of records, refusing what
 * ckpt(5) says a reader must refuse (wrong format, unknown version,
 * malformed records, duplicate paths) and ignoring keys it does not know.
 * The records only say what an entry must be; whether it is served is the
 * index's and the policy's decision.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"

#define KEY(j, lit)                                                            \
	((j)->str_len == sizeof(lit) - 1 &&                                    \
	 memcmp((j)->str, lit, sizeof(lit) - 1) == 0)

struct pool {
	char *p;
	size_t len, cap;
};

/* Appends and returns the offset; offsets stay valid across realloc. */
static int64_t pool_add(struct pool *pl, const char *s, size_t n)
{
	size_t off = pl->len;

	if (pl->len + n + 1 > pl->cap) {
		size_t cap = pl->cap ? pl->cap : 4096;
		char *p;

		while (cap < pl->len + n + 1)
			cap *= 2;
		p = realloc(pl->p, cap);
		if (!p)
			return -ENOMEM;
		pl->p = p;
		pl->cap = cap;
	}
	memcpy(pl->p + off, s, n);
	pl->p[off + n] = '\0';
	pl->len += n + 1;
	return (int64_t)off;
}

static int bad(struct ckpt_err *err, const char *why)
{
	return ckpt_err_set(err, -EINVAL, "manifest", NULL, 0,
			    "manifest.json is invalid: %s", why);
}

int parse_rfc3339(const char *s, size_t len, int64_t *out)
{
	struct tm tm = {0};
	const char *p = s, *e = s + len;
	int64_t frac = 0, scale = 1000000000;
	int n = 0, off_min = 0;
	char buf[24];

	if (len < 20 || len >= 64)
		return -EINVAL;
	memcpy(buf, s, 19);
	buf[19] = '\0';
	if (sscanf(buf, "%4d-%2d-%2dT%2d:%2d:%2d%n", &tm.tm_year, &tm.tm_mon,
		   &tm.tm_mday, &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &n) != 6 ||
	    n != 19 || tm.tm_mon < 1 || tm.tm_mon > 12 || tm.tm_mday < 1 ||
	    tm.tm_mday > 31 || tm.tm_hour > 23 || tm.tm_min > 59 ||
	    tm.tm_sec > 60)
		return -EINVAL;
	p += 19;
	if (p < e && *p == '.') {
		p++;
		if (p >= e || *p < '0' || *p > '9')
			return -EINVAL;
		/* Digits past the nanosecond are accepted and dropped. */
		for (; p < e && *p >= '0' && *p <= '9'; p++)
			if (scale > 1)
				scale /= 10, frac += (*p - '0') * scale;
	}
	if (p < e && (*p == 'Z' || *p == 'z')) {
		p++;
	} else if (e - p == 6 && (*p == '+' || *p == '-') && p[3] == ':') {
		int h = (p[1] - '0') * 10 + (p[2] - '0');
		int m = (p[4] - '0') * 10 + (p[5] - '0');
		if (h < 0 || h > 23 || m < 0 || m > 59)
			return -EINVAL;
		off_min = (h * 60 + m) * (*p == '-' ? -1 : 1);
		p += 6;
	} else {
		return -EINVAL;
	}
	if (p != e)
		return -EINVAL;
	/* Nanoseconds since 1970 fit an int64 from 1678 to 2262: anything
	 * outside is refused, never wrapped. */
	if (tm.tm_year < 1 || tm.tm_year > 2261)
		return -EINVAL;
	tm.tm_year -= 1900;
	tm.tm_mon -= 1;
	int64_t secs = (int64_t)timegm(&tm) - off_min * 60;
	if (secs < INT64_MIN / 1000000000 + 1 ||
	    secs > INT64_MAX / 1000000000 - 1)
		return -EINVAL;
	*out = secs * 1000000000 + frac;
	return 0;
}

void ckpt_format_time(int64_t ns, char out[40])
{
	time_t s = (time_t)(ns / 1000000000);
	long frac = (long)(ns % 1000000000);
	struct tm tm;

	if (frac < 0)
		frac += 1000000000, s--;
	char buf[96];
	size_t n;

	gmtime_r(&s, &tm);
	n = (size_t)snprintf(buf, sizeof(buf),
			     "%04d-%02d-%02dT%02d:%02d:%02d.%09ldZ",
			     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
			     tm.tm_hour, tm.tm_min, tm.tm_sec, frac);
	n = n < 39 ? n : 39;
	memcpy(out, buf, n);
	out[n] = '\0';
}

/* Record fields are kept as pool offsets while the pool may still move. */
struct raw {
	struct mentry m;
	int64_t path_off, target_off, chunks_off;
	bool has_path, known_type;
};

/* "chunks": {"size": S, "offsets": [0, ...], "xxh3_64": "<16 hex each>"}.
 * Only the shape is checked here; whether the table fits the entry is
 * the index's question. */
static int parse_chunks(struct json *j, enum json_tok t, struct pool *pl,
			struct raw *r, struct ckpt_err *err)
{
	uint64_t *off = NULL;
	size_t n = 0, cap = 0;
	int64_t size = -1, v;
	char *hex = NULL;
	size_t hex_len = 0;
	bool have_off = false;
	int rc = 0;

	if (t != JSON_OBJ_BEGIN)
		return bad(err, "chunks is not an object");
	while (rc == 0 && (t = json_next(j)) == JSON_KEY) {
		if (KEY(j, "size")) {
			t = json_next(j);
			if (size >= 0 || t != JSON_NUMBER ||
			    json_int64(j, &size) < 0 || size < CHUNK_SIZE_MIN ||
			    size > CHUNK_SIZE_MAX)
				rc = bad(err, "chunks.size is malformed");
		} else if (KEY(j, "offsets")) {
			if (have_off || json_next(j) != JSON_ARR_BEGIN) {
				rc = bad(err, "chunks.offsets is malformed");
				break;
			}
			have_off = true;
			while (rc == 0 && (t = json_next(j)) == JSON_NUMBER) {
				if (json_int64(j, &v) < 0 || v < 0 ||
				    (n > 0 && (uint64_t)v <= off[n - 1]) ||
				    (n == 0 && v != 0)) {
					rc = bad(err, "chunks.offsets must "
						      "rise from 0");
					break;
				}
				if (n == cap) {
					uint64_t *no;
					cap = cap ? cap * 2 : 64;
					no = realloc(off, cap * sizeof(*off));
					if (!no) {
						rc = ckpt_err_set(err, -ENOMEM,
								  "limit", NULL,
								  0,
								  "out of "
								  "memory");
						break;
					}
					off = no;
				}
				off[n++] = (uint64_t)v;
			}
			if (rc == 0 && t != JSON_ARR_END)
				rc = bad(err, "chunks.offsets is malformed");
		} else if (KEY(j, "xxh3_64")) {
			if (hex || json_next(j) != JSON_STRING) {
				rc = bad(err, "chunks.xxh3_64 is malformed");
				break;
			}
			hex = malloc(j->str_len + 1);
			if (!hex) {
				rc = ckpt_err_set(err, -ENOMEM, "limit", NULL,
						  0, "out of memory");
				break;
			}
			memcpy(hex, j->str, j->str_len);
			hex_len = j->str_len;
		} else if (json_skip(j, json_next(j)) < 0) {
			rc = bad(err, j->why ? j->why : "bad value");
		}
	}
	if (rc == 0 && t != JSON_OBJ_END)
		rc = bad(err, j->why ? j->why : "bad chunks");
	if (rc == 0 && (size < 0 || n == 0 || !hex || hex_len != 16 * n ||
			n > UINT32_MAX / 16))
		rc = bad(err, "chunks needs size, offsets and one xxh3_64 "
			      "per offset");
	if (rc == 0) {
		/* Two native words per chunk, the layout the index copies
		 * out. */
		uint64_t *rec = malloc(n * 2 * sizeof(*rec));
		int64_t at;

		if (!rec) {
			rc = ckpt_err_set(err, -ENOMEM, "limit", NULL, 0,
					  "out of memory");
			goto out;
		}
		for (size_t i = 0; i < n && rc == 0; i++) {
			uint64_t h = 0;
			for (size_t d = 0; d < 16; d++) {
				int x = hex_digit(hex[16 * i + d]);
				if (x < 0) {
					rc = bad(err, "chunks.xxh3_64 is not "
						      "hex");
					break;
				}
				h = h << 4 | (uint64_t)x;
			}
			rec[2 * i] = off[i];
			rec[2 * i + 1] = h;
		}
		at = rc == 0 ? pool_add(pl, (const char *)rec,
					n * 2 * sizeof(*rec))
			     : 0;
		free(rec);
		if (at < 0)
			rc = ckpt_err_set(err, -ENOMEM, "limit", NULL, 0,
					  "out of memory");
		else if (rc == 0) {
			r->chunks_off = at;
			r->m.nchunks = (uint32_t)n;
			r->m.chunk_size = (uint32_t)size;
		}
	}
out:
	free(off);
	free(hex);
	return rc;
}

static int parse_entry(struct json *j, struct pool *pl, struct raw *r,
		       struct ckpt_err *err)
{
	enum json_tok t;
	unsigned seen = 0;
	int64_t v;

	memset(r, 0, sizeof(*r));
	r->target_off = -1;
	r->chunks_off = -1;
	while ((t = json_next(j)) == JSON_KEY) {
		enum {
			F_PATH,
			F_TYPE,
			F_MODE,
			F_SIZE,
			F_MTIME,
			F_HASH,
			F_TARGET,
			F_CHUNKS,
			F_OTHER
		} f = F_OTHER;
		if (KEY(j, "path"))
			f = F_PATH;
		else if (KEY(j, "type"))
			f = F_TYPE;
		else if (KEY(j, "mode"))
			f = F_MODE;
		else if (KEY(j, "size"))
			f = F_SIZE;
		else if (KEY(j, "mtime_ns"))
			f = F_MTIME;
		else if (KEY(j, "xxh3_128"))
			f = F_HASH;
		else if (KEY(j, "target"))
			f = F_TARGET;
		else if (KEY(j, "chunks"))
			f = F_CHUNKS;
		t = json_next(j);
		if (f == F_OTHER) {
			if (json_skip(j, t) < 0)
				return bad(err, j->why ? j->why : "bad value");
			continue;
		}
		/* Readers that keep the first value and readers that keep
		 * the last would see two different records. */
		if (seen & 1u << f)
			return bad(err, "an entry field is given twice");
		seen |= 1u << f;
		if (f == F_CHUNKS) {
			int rc = parse_chunks(j, t, pl, r, err);
			if (rc < 0)
				return rc;
			continue;
		}
		if (f == F_PATH || f == F_TYPE || f == F_HASH ||
		    f == F_TARGET) {
			if (t != JSON_STRING)
				return bad(err, "entry field is not a string");
		} else if (t != JSON_NUMBER || json_int64(j, &v) < 0) {
			return bad(err, "entry field is not an integer");
		}
		switch (f) {
		case F_PATH:
		case F_TARGET: {
			int64_t off = pool_add(pl, j->str, j->str_len);
			if (off < 0)
				return ckpt_err_set(err, -ENOMEM, "limit", NULL,
						    0, "out of memory");
			if (j->str_len > UINT32_MAX)
				return bad(err, "path too long");
			if (f == F_PATH) {
				r->path_off = off;
				r->m.len = (uint32_t)j->str_len;
				r->has_path = true;
			} else {
				r->target_off = off;
				r->m.target_len = (uint32_t)j->str_len;
			}
			break;
		}
		case F_TYPE:
			r->known_type = true;
			if (KEY(j, "file"))
				r->m.type = CKPT_FILE;
			else if (KEY(j, "dir"))
				r->m.type = CKPT_DIR;
			else if (KEY(j, "symlink"))
				r->m.type = CKPT_SYMLINK;
			else
				r->known_type = false; /* a later version's */
			break;
		case F_MODE:
			if (v < 0 || v > 07777)
				return bad(err, "mode out of range");
			r->m.mode = (uint16_t)v;
			r->m.has_mode = 1;
			break;
		case F_SIZE:
			if (v < 0)
				return bad(err, "negative size");
			r->m.size = (uint64_t)v;
			r->m.has_size = 1;
			break;
		case F_MTIME:
			r->m.mtime_ns = v;
			r->m.has_mtime = 1;
			break;
		case F_HASH:
			if (j->str_len != 32)
				return bad(err,
					   "xxh3_128 is not 32 hex digits");
			for (int i = 0; i < 16; i++) {
				int hi = hex_digit(j->str[2 * i]);
				int lo = hex_digit(j->str[2 * i + 1]);
				if (hi < 0 || lo < 0)
					return bad(err, "xxh3_128 is not hex");
				r->m.hash[i] = (uint8_t)(hi << 4 | lo);
			}
			r->m.has_hash = 1;
			break;
		default:
			break;
		}
	}
	if (t != JSON_OBJ_END)
		return bad(err, j->why ? j->why : "bad entry");
	if (!r->has_path)
		return bad(err, "entry without a path");
	return 0;
}

static int cmp_mentry(const void *x, const void *y)
{
	const struct mentry *a = x, *b = y;
	size_t n = a->len < b->len ? a->len : b->len;
	int c = memcmp(a->path, b->path, n);

	return c ? c : (a->len > b->len) - (a->len < b->len);
}

static int parse_entries(struct json *j, struct manifest *m, struct pool *pl,
			 struct ckpt_err *err)
{
	struct raw *raw = NULL, r;
	size_t n = 0, cap = 0;
	enum json_tok t;
	int rc = 0;

	while ((t = json_next(j)) == JSON_OBJ_BEGIN) {
		rc = parse_entry(j, pl, &r, err);
		if (rc < 0)
			goto out;
		if (!r.known_type)
			continue;
		if (n == cap) {
			struct raw *nr;
			cap = cap ? cap * 2 : 256;
			nr = realloc(raw, cap * sizeof(*raw));
			if (!nr) {
				rc = ckpt_err_set(err, -ENOMEM, "limit", NULL,
						  0, "out of memory");
				goto out;
			}
			raw = nr;
		}
		raw[n++] = r;
	}
	if (t != JSON_ARR_END) {
		rc = bad(err, j->why ? j->why
				     : "entries is not an array of "
				       "objects");
		goto out;
	}
	m->entries = calloc(n ? n : 1, sizeof(*m->entries));
	if (!m->entries) {
		rc = ckpt_err_set(err, -ENOMEM, "limit", NULL, 0,
				  "out of memory");
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		m->entries[i] = raw[i].m;
		m->entries[i].path = pl->p + raw[i].path_off;
		if (raw[i].target_off >= 0)
			m->entries[i].target = pl->p + raw[i].target_off;
		if (raw[i].chunks_off >= 0)
			m->entries[i].chunks = pl->p + raw[i].chunks_off;
	}
	m->nentries = n;
	qsort(m->entries, n, sizeof(*m->entries), cmp_mentry);
	for (size_t i = 1; i < n; i++)
		if (cmp_mentry(&m->entries[i - 1], &m->entries[i]) == 0) {
			rc = ckpt_err_set(err, -EINVAL, "duplicate",
					  m->entries[i].path, m->entries[i].len,
					  "manifest lists a path twice");
			goto out;
		}
	m->has_entries = true;
out:
	free(raw);
	return rc;
}

/* A short string field, copied out of the parser's buffer. */
static int take_string(struct json *j, enum json_tok t, char **dst,
		       struct ckpt_err *err)
{
	if (t == JSON_NULL)
		return 0;
	if (t != JSON_STRING || j->str_len > 1024 ||
	    memchr(j->str, '\0', j->str_len))
		return bad(err, "a string field is malformed");
	free(*dst);
	*dst = strdup(j->str);
	return *dst ? 0
		    : ckpt_err_set(err, -ENOMEM, "limit", NULL, 0,
				   "out of memory");
}

int manifest_parse(const char *text, size_t len, struct manifest *m,
		   struct ckpt_err *err)
{
	struct json j;
	struct pool pl = {0};
	enum json_tok t;
	bool format_ok = false;
	int rc = 0;
	int64_t v;

	memset(m, 0, sizeof(*m));
	m->version = -1;
	json_init(&j, text, len);
	if (json_next(&j) != JSON_OBJ_BEGIN) {
		rc = bad(err, "not a JSON object");
		goto out;
	}
	while (rc == 0 && (t = json_next(&j)) == JSON_KEY) {
		if (KEY(&j, "format")) {
			t = json_next(&j);
			format_ok = t == JSON_STRING && KEY(&j, "ckpt");
		} else if (KEY(&j, "version")) {
			t = json_next(&j);
			if (t != JSON_NUMBER || json_int64(&j, &v) < 0 ||
			    v < 0 || v > 1000000)
				rc = bad(err, "version is not an integer");
			else
				m->version = (int)v;
		} else if (KEY(&j, "created")) {
			t = json_next(&j);
			/* An unparsable time is not fatal: the archive's
			 * file time stands in, as ckpt(5) says. */
			if (t == JSON_STRING)
				parse_rfc3339(j.str, j.str_len, &m->created_ns);
			else
				rc = json_skip(&j, t) < 0
					     ? bad(err, "bad created")
					     : 0;
		} else if (KEY(&j, "name")) {
			rc = take_string(&j, json_next(&j), &m->name, err);
		} else if (KEY(&j, "origin")) {
			rc = take_string(&j, json_next(&j), &m->origin, err);
		} else if (KEY(&j, "parent")) {
			rc = take_string(&j, json_next(&j), &m->parent, err);
		} else if (KEY(&j, "scan_rules")) {
			rc = take_string(&j, json_next(&j), &m->scan_rules,
					 err);
		} else if (KEY(&j, "entries")) {
			/* Records point into the pool, which only one
			 * entries array may grow. */
			if (m->has_entries)
				rc = bad(err, "entries given twice");
			else if (json_next(&j) != JSON_ARR_BEGIN)
				rc = bad(err, "entries is not an array");
			else
				rc = parse_entries(&j, m, &pl, err);
		} else if (json_skip(&j, json_next(&j)) < 0) {
			rc = bad(err, j.why ? j.why : "bad value");
		}
	}
	if (rc < 0)
		goto out;
	if (t != JSON_OBJ_END || json_next(&j) != JSON_END) {
		rc = bad(err, j.why ? j.why : "not a single JSON object");
		goto out;
	}
	if (!format_ok) {
		rc = bad(err, "\"format\" is not \"ckpt\"");
		goto out;
	}
	if (m->version != 1) {
		rc = ckpt_err_set(err, -EINVAL, "manifest-version", NULL, 0,
				  "manifest version %d is not supported (this "
				  "reader knows version 1)",
				  m->version);
		goto out;
	}
	m->pool = pl.p;
	pl.p = NULL;
out:
	json_fini(&j);
	if (rc < 0) {
		free(pl.p);
		manifest_free(m);
	}
	return rc;
}

void manifest_free(struct manifest *m)
{
	free(m->entries);
	free(m->pool);
	free(m->name);
	free(m->origin);
	free(m->parent);
	free(m->scan_rules);
	memset(m, 0, sizeof(*m));
}

const struct mentry *manifest_find(const struct manifest *m, const char *path,
				   size_t len)
{
	struct mentry key = {.path = path, .len = (uint32_t)len};

	if (!m->has_entries)
		return NULL;
	return bsearch(&key, m->entries, m->nentries, sizeof(key), cmp_mentry);
}

/* Emits n bytes at p, or only counts them when out is NULL. */
static void emit(char *out, size_t *o, const char *p, size_t n)
{
	if (out)
		memcpy(out + *o, p, n);
	*o += n;
}

ssize_t manifest_filter(const char *text, size_t len,
			bool (*keep)(void *ctx, const char *path, size_t len),
			void *ctx, char *out)
{
	struct json j;
	enum json_tok t;
	const char *copied = text; /* everything before this is emitted */
	size_t o = 0;
	ssize_t rc = -EINVAL;

	json_init(&j, text, len);
	if (json_next(&j) != JSON_OBJ_BEGIN)
		goto out;
	while ((t = json_next(&j)) == JSON_KEY) {
		bool entries = KEY(&j, "entries");
		const char *open, *prev_end;
		bool any = false;

		t = json_next(&j);
		if (!entries || t != JSON_ARR_BEGIN) {
			if (json_skip(&j, t) < 0)
				goto out;
			continue;
		}
		/* Original: '[' ws R1 ",ws" R2 ... ws ']'.  Kept records
		 * keep the separator that preceded them; the first kept one
		 * takes the whitespace that followed '['. */
		open = prev_end = j.s;
		emit(out, &o, copied, (size_t)(open - copied));
		while ((t = json_next(&j)) == JSON_OBJ_BEGIN) {
			const char *start = j.tok;
			const char *ws_end = start;
			char *path = NULL;
			size_t plen = 0;

			while ((t = json_next(&j)) == JSON_KEY) {
				bool is_path = KEY(&j, "path") && !path;
				t = json_next(&j);
				if (is_path && t == JSON_STRING) {
					path = strndup(j.str, j.str_len);
					plen = j.str_len;
				} else if (json_skip(&j, t) < 0) {
					break;
				}
			}
			if (t != JSON_OBJ_END) {
				free(path);
				goto out;
			}
			if (path && keep(ctx, path, plen)) {
				if (!any) /* whitespace after '[' */
					for (ws_end = open;
					     ws_end < start && *ws_end != '{';)
						ws_end++;
				emit(out, &o, any ? prev_end : open,
				     (size_t)(ws_end -
					      (any ? prev_end : open)));
				emit(out, &o, start, (size_t)(j.s - start));
				any = true;
			}
			free(path);
			prev_end = j.s;
		}
		if (t != JSON_ARR_END)
			goto out;
		/* Whatever follows the last record (whitespace and ']')
		 * goes out as it was; a leading comma cannot, since only
		 * records were dropped. */
		copied = prev_end;
	}
	if (t != JSON_OBJ_END)
		goto out;
	emit(out, &o, copied, (size_t)(text + len - copied));
	rc = (ssize_t)o;
out:
	json_fini(&j);
	return rc;
}
