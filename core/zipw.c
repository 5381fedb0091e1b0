/*
 * zipw.c - writing a ZIP archive as a stream, one entry at a time.
 *
 * The save path reads each file once and hands this writer the bytes it
 * compressed (or the raw bytes of an entry copied from a parent), so the
 * writer never reads a source itself.  Sizes and CRC are known only at the
 * end of an entry: the local header is written with zeros and patched in
 * place (in the buffer, or with pwrite once flushed), so no data
 * descriptors are needed and every field of the local header matches the
 * central one, as the reader requires.  Errors are sticky: after the first
 * failed write every call returns the same negative errno.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

#define BUF		  (256u * 1024)
#define LOCAL_LEN	  30u
#define CENTRAL_LEN	  46u
#define ZIP64_LOCAL_EXTRA 20u /* id, size, uncompressed, compressed */
#define FLAG_UTF8	  0x0800u
#define MADE_BY		  (3u << 8 | 63u) /* UNIX, spec 6.3 */
#define BIG		  (1ull << 30) /* entries this large get zip64 room up front */

struct zipw {
	int fd;
	int err;      /* sticky negative errno */
	uint64_t off; /* bytes of the archive so far, flushed or not */
	uint64_t flushed;
	uint8_t *buf;
	size_t blen;
	uint8_t *cd; /* the central directory, built as entries end */
	size_t cdlen, cdcap;
	uint64_t count;
	/* the entry being written */
	uint64_t lho;
	bool zip64_local;
	const char *name;
	size_t nlen;
	uint32_t mode;
	uint16_t method, dtime, ddate;
};

static void put(uint8_t *p, uint64_t v, int n)
{
	for (int i = 0; i < n; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

struct ckpt_faults ckpt_faults;

/* write(2), through the test seam: a failure or a short write on demand. */
static ssize_t do_write(int fd, const void *p, size_t n)
{
	if (ckpt_faults.write_fail_at &&
	    ++ckpt_faults.writes >= ckpt_faults.write_fail_at) {
		if (ckpt_faults.short_write && n > 1 &&
		    ckpt_faults.writes == ckpt_faults.write_fail_at)
			return write(fd, p, n / 2);
		errno = ckpt_faults.write_errno;
		return -1;
	}
	return write(fd, p, n);
}

static int flush(struct zipw *w)
{
	size_t done = 0;

	while (done < w->blen) {
		ssize_t n = do_write(w->fd, w->buf + done, w->blen - done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return w->err = n < 0 ? -errno : -EIO;
		done += (size_t)n;
	}
	w->flushed += w->blen;
	w->blen = 0;
	return 0;
}

static int emit(struct zipw *w, const void *p, size_t n)
{
	const uint8_t *s = p;

	if (w->err)
		return w->err;
	while (n > 0) {
		size_t room = BUF - w->blen, c = n < room ? n : room;

		memcpy(w->buf + w->blen, s, c);
		w->blen += c;
		w->off += c;
		s += c;
		n -= c;
		if (w->blen == BUF && flush(w) < 0)
			return w->err;
	}
	return 0;
}

/* Overwrites bytes already emitted: with pwrite where they were flushed,
 * in the buffer where they were not. */
static int patch(struct zipw *w, uint64_t at, const uint8_t *p, size_t n)
{
	if (w->err)
		return w->err;
	if (at < w->flushed) {
		size_t k = w->flushed - at < n ? (size_t)(w->flushed - at) : n;
		if (pwrite(w->fd, p, k, (off_t)at) != (ssize_t)k)
			return w->err = errno ? -errno : -EIO;
		p += k;
		at += k;
		n -= k;
	}
	if (n)
		memcpy(w->buf + (at - w->flushed), p, n);
	return 0;
}

static void dos_time(int64_t ns, uint16_t *t, uint16_t *d)
{
	time_t s = (time_t)(ns / 1000000000);
	struct tm tm;

	gmtime_r(&s, &tm);
	if (tm.tm_year < 80) { /* DOS time starts in 1980 */
		*t = 0;
		*d = (0 << 9) | (1 << 5) | 1;
		return;
	}
	*t = (uint16_t)(tm.tm_hour << 11 | tm.tm_min << 5 | tm.tm_sec / 2);
	*d = (uint16_t)((tm.tm_year - 80) << 9 | (tm.tm_mon + 1) << 5 |
			tm.tm_mday);
}

int zipw_open(int fd, struct zipw **out)
{
	struct zipw *w = calloc(1, sizeof(*w));

	if (!w || !(w->buf = malloc(BUF))) {
		free(w);
		return -ENOMEM;
	}
	w->fd = fd;
	*out = w;
	return 0;
}

void zipw_free(struct zipw *w)
{
	if (!w)
		return;
	free(w->buf);
	free(w->cd);
	free(w);
}

int zipw_begin(struct zipw *w, const char *name, size_t nlen, uint32_t mode,
	       int64_t mtime_ns, uint16_t method, uint64_t size_hint)
{
	uint8_t h[LOCAL_LEN + ZIP64_LOCAL_EXTRA];
	size_t hl = LOCAL_LEN;

	if (w->err)
		return w->err;
	if (nlen > 0xffff)
		return -ENAMETOOLONG;
	w->lho = w->off;
	w->name = name;
	w->nlen = nlen;
	w->mode = mode;
	w->method = method;
	/* A file that may pass 4 GiB gets zip64 room now: the header is
	 * written before its size is known. */
	w->zip64_local = size_hint >= BIG;
	dos_time(mtime_ns, &w->dtime, &w->ddate);
	memset(h, 0, sizeof(h));
	put(h, 0x04034b50, 4);
	put(h + 4, w->zip64_local ? 45 : 20, 2);
	put(h + 6, FLAG_UTF8, 2);
	put(h + 8, method, 2);
	put(h + 10, w->dtime, 2);
	put(h + 12, w->ddate, 2);
	/* CRC and sizes at 14..25 are patched by zipw_end. */
	put(h + 26, nlen, 2);
	put(h + 28, w->zip64_local ? ZIP64_LOCAL_EXTRA : 0, 2);
	if (w->zip64_local) {
		put(h + LOCAL_LEN, 0x0001, 2);
		put(h + LOCAL_LEN + 2, 16, 2);
		hl += ZIP64_LOCAL_EXTRA;
	}
	if (emit(w, h, LOCAL_LEN) < 0 || emit(w, name, nlen) < 0)
		return w->err;
	return hl > LOCAL_LEN ? emit(w, h + LOCAL_LEN, ZIP64_LOCAL_EXTRA) : 0;
}

int zipw_data(struct zipw *w, const void *p, size_t n)
{
	return emit(w, p, n);
}

int zipw_error(const struct zipw *w)
{
	return w->err;
}

uint64_t zipw_offset(const struct zipw *w)
{
	return w->off;
}

static int cd_reserve(struct zipw *w, size_t n)
{
	if (w->cdlen + n > w->cdcap) {
		size_t cap = w->cdcap ? w->cdcap : 64 * 1024;
		uint8_t *p;
		while (cap < w->cdlen + n)
			cap *= 2;
		p = realloc(w->cd, cap);
		if (!p)
			return w->err = -ENOMEM;
		w->cd = p;
		w->cdcap = cap;
	}
	return 0;
}

int zipw_end(struct zipw *w, uint32_t crc, uint64_t csize, uint64_t usize)
{
	uint8_t p[12], x[28];
	uint8_t *c;
	size_t xl = 0;
	bool big_u = usize >= 0xffffffffu, big_c = csize >= 0xffffffffu;
	bool big_o = w->lho >= 0xffffffffu;

	if (w->err)
		return w->err;
	if ((big_u || big_c) && !w->zip64_local)
		return w->err = -EFBIG; /* grew past 4 GiB while read */
	put(p, crc, 4);
	put(p + 4, w->zip64_local ? 0xffffffffu : csize, 4);
	put(p + 8, w->zip64_local ? 0xffffffffu : usize, 4);
	if (patch(w, w->lho + 14, p, sizeof(p)) < 0)
		return w->err;
	if (w->zip64_local) {
		uint8_t z[16];
		put(z, usize, 8);
		put(z + 8, csize, 8);
		if (patch(w, w->lho + LOCAL_LEN + w->nlen + 4, z, 16) < 0)
			return w->err;
	}
	/* The central record: zip64 values in their fixed order, only for
	 * the fields that overflow. */
	if (big_u || big_c || big_o) {
		put(x, 0x0001, 2);
		xl = 4;
		if (big_u)
			put(x + xl, usize, 8), xl += 8;
		if (big_c)
			put(x + xl, csize, 8), xl += 8;
		if (big_o)
			put(x + xl, w->lho, 8), xl += 8;
		put(x + 2, xl - 4, 2);
	}
	if (cd_reserve(w, CENTRAL_LEN + w->nlen + xl) < 0)
		return w->err;
	c = w->cd + w->cdlen;
	memset(c, 0, CENTRAL_LEN);
	put(c, 0x02014b50, 4);
	put(c + 4, MADE_BY, 2);
	put(c + 6, xl ? 45 : 20, 2);
	put(c + 8, FLAG_UTF8, 2);
	put(c + 10, w->method, 2);
	put(c + 12, w->dtime, 2);
	put(c + 14, w->ddate, 2);
	put(c + 16, crc, 4);
	put(c + 20, big_c ? 0xffffffffu : csize, 4);
	put(c + 24, big_u ? 0xffffffffu : usize, 4);
	put(c + 28, w->nlen, 2);
	put(c + 30, xl, 2);
	/* External attributes: the UNIX mode, and MS-DOS's directory bit
	 * for tools that look only there. */
	put(c + 38, (uint64_t)w->mode << 16 | (S_ISDIR(w->mode) ? 0x10 : 0), 4);
	put(c + 42, big_o ? 0xffffffffu : w->lho, 4);
	memcpy(c + CENTRAL_LEN, w->name, w->nlen);
	memcpy(c + CENTRAL_LEN + w->nlen, x, xl);
	w->cdlen += CENTRAL_LEN + w->nlen + xl;
	w->count++;
	return 0;
}

int zipw_finish(struct zipw *w)
{
	uint64_t cd_off = w->off, cd_len = w->cdlen;
	uint8_t e[22], z[56 + 20];
	bool z64 = w->count >= 0xffff || cd_off >= 0xffffffffu ||
		   cd_len >= 0xffffffffu;

	if (emit(w, w->cd, w->cdlen) < 0)
		return w->err;
	if (z64) {
		uint64_t at = w->off;
		memset(z, 0, sizeof(z));
		put(z, 0x06064b50, 4);
		put(z + 4, 44, 8);
		put(z + 12, MADE_BY, 2);
		put(z + 14, 45, 2);
		put(z + 24, w->count, 8);
		put(z + 32, w->count, 8);
		put(z + 40, cd_len, 8);
		put(z + 48, cd_off, 8);
		put(z + 56, 0x07064b50, 4);
		put(z + 64, at, 8);
		put(z + 72, 1, 4);
		if (emit(w, z, sizeof(z)) < 0)
			return w->err;
	}
	memset(e, 0, sizeof(e));
	put(e, 0x06054b50, 4);
	put(e + 8, z64 ? 0xffff : w->count, 2);
	put(e + 10, z64 ? 0xffff : w->count, 2);
	put(e + 12, z64 ? 0xffffffffu : cd_len, 4);
	put(e + 16, z64 ? 0xffffffffu : cd_off, 4);
	if (emit(w, e, sizeof(e)) < 0)
		return w->err;
	return flush(w);
}
