/*
 * zip.c - the ZIP container, read from untrusted bytes.
 *
 * Owns the end-of-central-directory search, zip64, the central directory
 * records and the local header cross-check.  Every field is read through a
 * bounds-checked cursor with a sticky ok flag; no allocation is sized by a
 * declared value that was not first checked against the real file size.
 * Overlapping entries (non-recursive zip bombs) are refused here, before
 * any content is read.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "internal.h"

#define SIG_LOCAL	0x04034b50u
#define SIG_CENTRAL	0x02014b50u
#define SIG_EOCD	0x06054b50u
#define SIG_EOCD64	0x06064b50u
#define SIG_LOC64	0x07064b50u
#define EOCD_LEN	22u
#define LOC64_LEN	20u
#define EOCD64_LEN	56u
#define CENTRAL_LEN	46u
#define LOCAL_LEN	30u
#define FLAG_ENCRYPTED	0x0001u
#define FLAG_DESCRIPTOR 0x0008u

/* A bounds-checked little-endian cursor: reading past the end clears ok
 * and yields zeros, so a parser checks ok once per record. */
struct cur {
	const uint8_t *p, *end;
	bool ok;
};

static uint64_t get(struct cur *c, unsigned n)
{
	uint64_t v = 0;

	if (!c->ok || (size_t)(c->end - c->p) < n) {
		c->ok = false;
		return 0;
	}
	for (unsigned i = 0; i < n; i++)
		v |= (uint64_t)c->p[i] << (8 * i);
	c->p += n;
	return v;
}

static const uint8_t *take(struct cur *c, size_t n)
{
	const uint8_t *p = c->p;

	if (!c->ok || (size_t)(c->end - c->p) < n) {
		c->ok = false;
		return NULL;
	}
	c->p += n;
	return p;
}

static int pread_full(int fd, void *buf, size_t len, uint64_t off)
{
	size_t done = 0;

	while (done < len) {
		ssize_t r = pread(fd, (char *)buf + done, len - done,
				  (off_t)(off + done));
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		if (r == 0)
			return -EIO; /* truncated under us */
		done += (size_t)r;
	}
	return 0;
}

static int not_zip(struct ckpt_err *err, const char *why)
{
	return ckpt_err_set(err, -EINVAL, "not-zip", NULL, 0,
			    "not a valid ZIP archive: %s", why);
}

/* DOS date and time (local time by convention; taken as UTC so that the
 * result does not depend on the daemon's time zone). */
static int64_t dos_time_ns(uint16_t t, uint16_t d)
{
	struct tm tm = {
		.tm_year = ((d >> 9) & 0x7f) + 80,
		.tm_mon = ((d >> 5) & 0xf) - 1,
		.tm_mday = d & 0x1f,
		.tm_hour = (t >> 11) & 0x1f,
		.tm_min = (t >> 5) & 0x3f,
		.tm_sec = (t & 0x1f) * 2,
	};
	time_t s = timegm(&tm);

	return s < 0 ? 0 : (int64_t)s * 1000000000;
}

/* Walks the extra fields of a central record: zip64 sizes replace the
 * 0xffffffff placeholders in their fixed order; "UT" gives an mtime. */
static bool parse_extra(const uint8_t *p, size_t len, struct zcd *e,
			bool want_usize, bool want_csize, bool want_lho)
{
	struct cur c = {p, p + len, true};

	while (c.ok && c.end - c.p >= 4) {
		uint16_t id = (uint16_t)get(&c, 2);
		uint16_t sz = (uint16_t)get(&c, 2);
		struct cur f = {take(&c, sz), NULL, c.ok};

		if (!c.ok)
			return false;
		f.end = f.p + sz;
		if (id == 0x0001) {
			if (want_usize)
				e->z.size = get(&f, 8);
			if (want_csize)
				e->z.csize = get(&f, 8);
			if (want_lho)
				e->z.lho = get(&f, 8);
			if (!f.ok)
				return false;
			want_usize = want_csize = want_lho = false;
		} else if (id == 0x5455 && sz >= 5) {
			uint8_t fl = (uint8_t)get(&f, 1);
			if (fl & 1)
				e->mtime_ns = (int64_t)(int32_t)get(&f, 4) *
					      1000000000;
		}
	}
	/* A placeholder without its zip64 value cannot be trusted. */
	return !(want_usize || want_csize || want_lho);
}

static int cmp_lho(const void *x, const void *y)
{
	const struct zcd *a = *(struct zcd *const *)x;
	const struct zcd *b = *(struct zcd *const *)y;

	return a->z.lho < b->z.lho ? -1 : a->z.lho > b->z.lho;
}

/* Every entry's smallest possible extent (its local header with the same
 * name and no extra field, then its data) must end before the next entry
 * begins, and all before the central directory: this is what defeats
 * overlapping and quoted-overlap bombs without reading any content.  The
 * exact extent is checked against e->extent when the entry is opened. */
static int check_overlap(struct zcd *ents, size_t n, uint64_t cd_off,
			 struct ckpt_err *err)
{
	struct zcd **by = malloc((n ? n : 1) * sizeof(*by));
	int rc = 0;

	if (!by)
		return ckpt_err_set(err, -ENOMEM, "limit", NULL, 0,
				    "out of memory indexing archive");
	for (size_t i = 0; i < n; i++)
		by[i] = &ents[i];
	qsort(by, n, sizeof(*by), cmp_lho);
	for (size_t i = 0; i < n; i++) {
		struct zcd *e = by[i];
		uint64_t next = i + 1 < n ? by[i + 1]->z.lho : cd_off;
		uint64_t min_end = e->z.lho + LOCAL_LEN + e->name_len;

		if (e->z.csize > cd_off || min_end > next ||
		    e->z.csize > next - min_end) {
			rc = ckpt_err_set(err, -EINVAL, "overlap", e->name,
					  e->name_len,
					  "entries overlap each other or the "
					  "central directory (a zip bomb)");
			break;
		}
		e->z.extent = next - e->z.lho;
	}
	free(by);
	return rc;
}

/* Finds the end of central directory record: the last signature whose
 * comment length reaches exactly the end of the file. */
static int find_eocd(int fd, uint64_t size, uint64_t *cd_off, uint64_t *cd_len,
		     uint64_t *count, uint64_t *cd_end, struct ckpt_err *err)
{
	uint8_t tail[EOCD_LEN + 65535];
	size_t tl = size < sizeof(tail) ? (size_t)size : sizeof(tail);
	uint64_t base = size - tl;
	int rc;

	if (size < EOCD_LEN)
		return not_zip(err, "too short");
	rc = pread_full(fd, tail, tl, base);
	if (rc < 0)
		return ckpt_err_set(err, rc, "io", NULL, 0,
				    "cannot read archive: %s", strerror(-rc));
	for (size_t i = tl - EOCD_LEN + 1; i-- > 0;) {
		struct cur c = {tail + i, tail + tl, true};
		uint16_t disk, cd_disk, n_disk, n_all, clen;
		uint32_t len32, off32;

		if (get(&c, 4) != SIG_EOCD)
			continue;
		disk = (uint16_t)get(&c, 2);
		cd_disk = (uint16_t)get(&c, 2);
		n_disk = (uint16_t)get(&c, 2);
		n_all = (uint16_t)get(&c, 2);
		len32 = (uint32_t)get(&c, 4);
		off32 = (uint32_t)get(&c, 4);
		clen = (uint16_t)get(&c, 2);
		if (i + EOCD_LEN + clen != tl)
			continue;
		*cd_end = base + i;
		*count = n_all;
		*cd_len = len32;
		*cd_off = off32;
		if (n_all == 0xffff || len32 == 0xffffffff ||
		    off32 == 0xffffffff) {
			uint8_t l[LOC64_LEN], r[EOCD64_LEN];
			struct cur lc = {l, l + sizeof(l), true};
			struct cur rcur = {r, r + sizeof(r), true};
			uint64_t e64;

			if (*cd_end < LOC64_LEN ||
			    pread_full(fd, l, sizeof(l), *cd_end - LOC64_LEN))
				return not_zip(err, "no zip64 locator");
			if (get(&lc, 4) != SIG_LOC64 || get(&lc, 4) != 0)
				return not_zip(err, "bad zip64 locator");
			e64 = get(&lc, 8);
			if (e64 > *cd_end - LOC64_LEN - EOCD64_LEN ||
			    pread_full(fd, r, sizeof(r), e64))
				return not_zip(err, "bad zip64 end record");
			if (get(&rcur, 4) != SIG_EOCD64)
				return not_zip(err, "bad zip64 end record");
			take(&rcur, 8 + 2 + 2); /* record size, versions */
			if (get(&rcur, 4) != 0 || get(&rcur, 4) != 0)
				return not_zip(err, "multi-disk archive");
			n_disk = 0;
			uint64_t nd = get(&rcur, 8);
			*count = get(&rcur, 8);
			*cd_len = get(&rcur, 8);
			*cd_off = get(&rcur, 8);
			if (nd != *count)
				return not_zip(err, "multi-disk archive");
			*cd_end = e64;
		} else if (disk != 0 || cd_disk != 0 || n_disk != n_all) {
			return not_zip(err, "multi-disk archive");
		}
		/* Nothing may sit between the CD and its end record: bytes
		 * there would be unaccounted for, and prepended data would
		 * shift every offset. */
		if (*cd_off > *cd_end || *cd_len != *cd_end - *cd_off)
			return not_zip(err, "central directory misplaced");
		return 0;
	}
	return not_zip(err, "no end of central directory");
}

int zip_read_cd(int fd, uint64_t file_size, const struct ckpt_limits *lim,
		uint8_t **bufp, struct zcd **entsp, size_t *np,
		struct ckpt_err *err)
{
	uint64_t cd_off, cd_len, count, cd_end;
	uint8_t *buf = NULL;
	struct zcd *ents = NULL;
	struct cur c;
	int rc;

	rc = find_eocd(fd, file_size, &cd_off, &cd_len, &count, &cd_end, err);
	if (rc < 0)
		return rc;
	if (count > lim->max_entries)
		return ckpt_err_set(err, -EFBIG, "limit", NULL, 0,
				    "%llu entries, over the limit of %llu",
				    (unsigned long long)count,
				    (unsigned long long)lim->max_entries);
	/* Each record takes at least 46 bytes: a count the CD cannot hold
	 * is a lie, refused before anything is allocated from it. */
	if (count > cd_len / CENTRAL_LEN)
		return not_zip(err, "entry count larger than the directory");
	buf = malloc(cd_len ? cd_len : 1);
	ents = calloc(count ? count : 1, sizeof(*ents));
	if (!buf || !ents) {
		rc = ckpt_err_set(err, -ENOMEM, "limit", NULL, 0,
				  "out of memory reading central directory");
		goto out;
	}
	rc = pread_full(fd, buf, cd_len, cd_off);
	if (rc < 0) {
		ckpt_err_set(err, rc, "io", NULL, 0,
			     "cannot read central directory: %s",
			     strerror(-rc));
		goto out;
	}
	c = (struct cur){buf, buf + cd_len, true};
	for (uint64_t i = 0; i < count; i++) {
		struct zcd *e = &ents[i];
		uint16_t nl, xl, cl, t, d;
		uint32_t c32, u32, o32;
		const uint8_t *x;

		if (get(&c, 4) != SIG_CENTRAL) {
			rc = not_zip(err, "bad central directory record");
			goto out;
		}
		e->made_by = (uint16_t)get(&c, 2);
		get(&c, 2); /* version needed */
		e->z.flags = (uint16_t)get(&c, 2);
		e->z.method = (uint16_t)get(&c, 2);
		t = (uint16_t)get(&c, 2);
		d = (uint16_t)get(&c, 2);
		e->z.crc = (uint32_t)get(&c, 4);
		c32 = (uint32_t)get(&c, 4);
		u32 = (uint32_t)get(&c, 4);
		nl = (uint16_t)get(&c, 2);
		xl = (uint16_t)get(&c, 2);
		cl = (uint16_t)get(&c, 2);
		get(&c, 2 + 2); /* disk start, internal attributes */
		e->ext_attr = (uint32_t)get(&c, 4);
		o32 = (uint32_t)get(&c, 4);
		e->name = (const char *)take(&c, nl);
		e->name_len = nl;
		x = take(&c, xl);
		take(&c, cl);
		if (!c.ok) {
			rc = not_zip(err, "central directory truncated");
			goto out;
		}
		e->z.csize = c32;
		e->z.size = u32;
		e->z.lho = o32;
		e->mtime_ns = dos_time_ns(t, d);
		if (!parse_extra(x, xl, e, u32 == 0xffffffff, c32 == 0xffffffff,
				 o32 == 0xffffffff)) {
			rc = not_zip(err, "bad zip64 extra field");
			goto out;
		}
	}
	if (c.p != c.end) {
		rc = not_zip(err, "central directory has trailing bytes");
		goto out;
	}
	rc = check_overlap(ents, count, cd_off, err);
	if (rc < 0)
		goto out;
	*bufp = buf;
	*entsp = ents;
	*np = count;
	return 0;
out:
	free(buf);
	free(ents);
	return rc;
}

int64_t zip_data_offset(int fd, const struct zentry *e, const char *name,
			size_t name_len, struct ckpt_err *err)
{
	uint8_t h[LOCAL_LEN + 65535];
	struct cur c;
	uint16_t nl, xl;
	uint32_t crc, c32, u32;
	uint64_t data;
	const char *why = NULL;

	if (e->extent < LOCAL_LEN + name_len ||
	    pread_full(fd, h, LOCAL_LEN + name_len, e->lho) < 0)
		return ckpt_err_set(err, -EIO, "header-mismatch", name,
				    name_len, "local header unreadable");
	c = (struct cur){h, h + LOCAL_LEN + name_len, true};
	if (get(&c, 4) != SIG_LOCAL)
		why = "no local header signature";
	get(&c, 2);
	uint16_t flags = (uint16_t)get(&c, 2);
	uint16_t method = (uint16_t)get(&c, 2);
	get(&c, 4);
	crc = (uint32_t)get(&c, 4);
	c32 = (uint32_t)get(&c, 4);
	u32 = (uint32_t)get(&c, 4);
	nl = (uint16_t)get(&c, 2);
	xl = (uint16_t)get(&c, 2);
	if (!why && (nl != name_len || memcmp(c.p, name, name_len) != 0))
		why = "local and central names differ";
	if (!why && (method != e->method ||
		     (flags & FLAG_DESCRIPTOR) != (e->flags & FLAG_DESCRIPTOR)))
		why = "local and central method or flags differ";
	/* Without a data descriptor the local header carries the real
	 * values; zip64 entries keep theirs in the central record. */
	if (!why && !(flags & FLAG_DESCRIPTOR) &&
	    (crc != e->crc || (c32 != 0xffffffff && c32 != e->csize) ||
	     (u32 != 0xffffffff && u32 != e->size)))
		why = "local and central sizes or CRC differ";
	data = LOCAL_LEN + (uint64_t)name_len + xl;
	if (!why && (data > e->extent || e->csize > e->extent - data))
		why = "entry data runs into the next entry";
	if (why)
		return ckpt_err_set(err, -EIO, "header-mismatch", name,
				    name_len, "%s", why);
	return (int64_t)(e->lho + data);
}

int zip_read_entry(int fd, const struct zentry *e, const char *name,
		   size_t name_len, uint64_t max, char **out, size_t *lenp,
		   struct ckpt_err *err)
{
	int64_t data = zip_data_offset(fd, e, name, name_len, err);
	uint8_t in[16384];
	z_stream zs = {0};
	char *buf = NULL;
	uint64_t pos = 0, used = 0, cap;
	int rc = 0, zr = Z_OK;

	if (data < 0)
		return (int)data;
	if (e->size > max)
		return ckpt_err_set(err, -EFBIG, "limit", name, name_len,
				    "entry larger than %llu bytes",
				    (unsigned long long)max);
	/* A stored entry's compressed size is backed by bytes in the file
	 * (its extent was checked), and its size must equal it; a deflated
	 * one's size is only a claim, so its buffer grows with the output
	 * actually produced, up to size + 1.  The buffer is never exactly
	 * size bytes: a stream ending there would leave no room for the
	 * NUL after the content. */
	if (e->method == ZIP_METHOD_STORE && e->csize != e->size)
		return ckpt_err_set(err, -EIO, "crc", name, name_len,
				    "stored entry with two sizes");
	cap = e->method == ZIP_METHOD_STORE || e->size <= 65536 ? e->size + 1
								: 65536;
	buf = malloc(cap);
	if (!buf)
		return ckpt_err_set(err, -ENOMEM, "limit", name, name_len,
				    "out of memory");
	if (e->method == ZIP_METHOD_STORE) {
		if (e->csize != e->size) {
			rc = -EIO;
			goto bad;
		}
		rc = pread_full(fd, buf, e->size, (uint64_t)data);
		if (rc < 0)
			goto bad;
		pos = e->size;
	} else if (e->method == ZIP_METHOD_DEFLATE) {
		if (inflateInit2(&zs, -MAX_WBITS) != Z_OK) {
			rc = -ENOMEM;
			goto bad;
		}
		zs.next_out = (Bytef *)buf;
		/* One spare byte: output beyond the declared size proves the
		 * header lied. */
		zs.avail_out = (uInt)cap;
		while (zr != Z_STREAM_END) {
			if (zs.avail_out == 0 && cap < e->size + 1) {
				uint64_t grown = cap * 2 < e->size
							 ? cap * 2
							 : e->size + 1;
				char *nb = realloc(buf, grown);
				if (!nb) {
					rc = -ENOMEM;
					break;
				}
				buf = nb;
				zs.next_out = (Bytef *)buf + cap;
				zs.avail_out = (uInt)(grown - cap);
				cap = grown;
			}
			if (zs.avail_in == 0) {
				size_t n = sizeof(in);
				if (used == e->csize) {
					rc = -EIO;
					break;
				}
				if (n > e->csize - used)
					n = (size_t)(e->csize - used);
				rc = pread_full(fd, in, n,
						(uint64_t)data + used);
				if (rc < 0)
					break;
				used += n;
				zs.next_in = in;
				zs.avail_in = (uInt)n;
			}
			zr = inflate(&zs, Z_NO_FLUSH);
			if (zr != Z_OK && zr != Z_STREAM_END) {
				rc = -EIO;
				break;
			}
			/* Full at size + 1 and still going: the header
			 * lied about the size. */
			if (zs.avail_out == 0 && zr != Z_STREAM_END &&
			    cap == e->size + 1) {
				rc = -EIO;
				break;
			}
		}
		pos = zs.total_out;
		inflateEnd(&zs);
		if (rc < 0)
			goto bad;
	} else {
		rc = -EIO;
		goto bad;
	}
	if (pos != e->size || crc32(0, (Bytef *)buf, (uInt)pos) != e->crc) {
		rc = -EIO;
		goto bad;
	}
	buf[pos] = '\0';
	*out = buf;
	*lenp = (size_t)pos;
	return 0;
bad:
	free(buf);
	return ckpt_err_set(err, rc, "crc", name, name_len,
			    "content does not match its size or CRC");
}
