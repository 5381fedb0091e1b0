/*
 * read.c - the content of one entry, read through a per-open cursor.
 *
 * Stored entries are read straight from the archive at their data offset.
 * Deflated entries are inflated forward by a cursor that keeps the last
 * RING bytes, so a sequential reader (or the kernel's slightly reordered
 * readahead) never inflates anything twice.  As the cursor first passes
 * through an entry it leaves restart points, at most POINTS of them, at
 * deflate block boundaries about a span apart (a bit position and the 32
 * KiB window before it, as zlib's zran.c does): a read behind the ring,
 * or far ahead of the cursor, resumes at the nearest point before it
 * instead of at the start.  Memory per reader is bounded by RING + INBUF
 * + POINTS windows whatever the entry's size.  The CRC and the manifest's
 * xxh3-128 are checked before the last byte of an entry is returned, so
 * content that fails them is never returned whole.  Points lie where the
 * cursor has been, which the sums have covered, so resuming at one never
 * leaves them a gap: they go on from where they stand.
 *
 * Chunked entries (a chunk table in the manifest) and small deflated ones
 * (one chunk: the whole entry) are inflated a chunk at a time instead,
 * from any chunk, with libdeflate.  Each chunk is checked before any of it
 * is returned: against its XXH3-64, or for a whole entry its CRC and
 * xxh3-128.  Decoded chunks are shared by all readers through a small
 * cache, so requests served out of order or by several threads inflate a
 * chunk once, and readers of different chunks inflate in parallel.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <libdeflate.h>
#include <xxhash.h>
#include <zlib.h>

#include "internal.h"

/* The kernel's readahead sends several requests at once and the worker
 * threads may serve them out of order: a ring smaller than that window
 * turns a reordering into a re-inflate from the start of the entry. */
#define RING  (2048u * 1024)
#define INBUF (64u * 1024)
#define CHUNK (64u * 1024)  /* most output produced per inflate call */
#define SEG   (128u * 1024) /* most output copied per ring refill */

/* Deflated entries up to this size without a chunk table are one chunk;
 * it bounds the memory one cache slot may take. */
#define WHOLE_MAX (1024u * 1024)
#define SLOTS	  16
/* Read-ahead looks this many chunks past the one being read; the kernel
 * reorders readahead requests by about this much. */
#define AHEAD 2
#define NEAR  (1024u * 1024)

/* Restart points per deflated entry without a chunk table, and the least
 * distance between two: a resumed read inflates at most one span. */
#define POINTS	 64
#define SPAN_MIN (1024u * 1024)
#define WINDOW	 32768u

struct point {
	uint64_t out, in; /* bytes of content and of compressed data before */
	int bits;	  /* of the byte before in, still to be read */
	uint8_t *window;  /* the WINDOW bytes of content before out */
};

struct ckpt_reader {
	atomic_int refs;	/* the opener's, and ckpt_reader_hold's */
	struct ckpt_archive *a; /* one reference, held until freed */
	uint32_t node;
	const struct node *n;
	uint64_t data; /* offset of the entry's data in the archive */
	pthread_mutex_t lock;

	/* Verification, protected by lock: vpos bytes from 0 have gone
	 * through crc and xs, in order. */
	uint64_t vpos;
	uint32_t crc;
	XXH3_state_t *xs; /* NULL when the manifest has no hash */

	/* Deflate only, protected by lock.  The cursor has inflated out
	 * bytes of content, from base on (0, or a restart point's); the
	 * ring holds the last of them. */
	z_stream zs;
	bool zinit;
	int failed; /* sticky negative errno */
	uint64_t in_used, out, base;
	size_t ring_size, in_size;
	uint8_t *ring, *in;
	struct point pts[POINTS]; /* in content order, each span apart */
	uint32_t npts;
	uint64_t span;

	const char *mem; /* a filtered manifest, shared */
	size_t mem_len;

	/* Chunked: tab is NULL for a whole entry.  A chunked entry is also
	 * summed whole when its chunks are first reached in order (vchunk
	 * is the next one), protected by lock. */
	bool chunked;
	const struct chunktab *tab;
	uint32_t nchunk, vchunk;
	ckpt_chunk_fn *on_chunk;
	void *on_chunk_ctx;
	/* Where the last read ended, and whether it began near where the
	 * one before ended: read-ahead is for forward readers only. */
	_Atomic uint64_t next_off;
	atomic_bool forward;
};

static int fail(struct ckpt_reader *r, int code, const char *rule,
		const char *why, struct ckpt_err *err)
{
	char path[4096], full[4400];
	int len = node_path(r->a, r->node, path, sizeof(path));

	/* The log must say which checkpoint, not only which file. */
	len = snprintf(full, sizeof(full), "%s/%s",
		       r->a->name ? r->a->name : "?", len >= 0 ? path : "?");
	return ckpt_err_set(err, code, rule, full,
			    len > 0 && (size_t)len < sizeof(full) ? (size_t)len
								  : 0,
			    "%s", why);
}

static int pread_all(int fd, void *buf, size_t len, uint64_t off)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = pread(fd, (char *)buf + done, len - done,
				  (off_t)(off + done));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -EIO; /* an error, or truncated under us */
		done += (size_t)n;
	}
	return 0;
}

static bool verified(const struct ckpt_reader *r)
{
	return atomic_load(&r->a->verified[r->node]) == VERIFY_GOOD;
}

static void vreset(struct ckpt_reader *r)
{
	r->vpos = 0;
	r->crc = 0;
	if (r->xs)
		XXH3_128bits_reset(r->xs);
}

static void vupdate(struct ckpt_reader *r, const uint8_t *p, size_t n)
{
	if (!verified(r)) {
		r->crc = libdeflate_crc32(r->crc, p, n);
		if (r->xs)
			XXH3_128bits_update(r->xs, p, n);
	}
	r->vpos += n;
}

/* The verdict on a whole content: its CRC, then the manifest's xxh3-128
 * when it records one.  Remembered for the node. */
static int judge(struct ckpt_reader *r, uint32_t crc, const XXH128_hash_t *h,
		 struct ckpt_err *err)
{
	bool ok = crc == r->n->z.crc;

	if (ok && h && r->n->u.file.hash != NO_HASH) {
		XXH128_canonical_t c;
		XXH128_canonicalFromHash(&c, *h);
		ok = memcmp(c.digest, r->a->hashes[r->n->u.file.hash], 16) == 0;
	}
	atomic_store(&r->a->verified[r->node], ok ? VERIFY_GOOD : VERIFY_BAD);
	if (!ok)
		return fail(r, -EIO, "crc",
			    "content does not match its CRC or hash", err);
	return 0;
}

/* All size bytes have gone through the sums: judge them. */
static int vfinish(struct ckpt_reader *r, struct ckpt_err *err)
{
	XXH128_hash_t h;

	if (verified(r))
		return 0;
	if (r->xs)
		h = XXH3_128bits_digest(r->xs);
	return judge(r, r->crc, r->xs ? &h : NULL, err);
}

int ckpt_reader_open(struct ckpt_archive *a, uint32_t node,
		     struct ckpt_reader **out, struct ckpt_err *err)
{
	struct ckpt_reader *r;
	char path[4096];
	int64_t data;
	int len;

	if (node >= a->nnodes || a->nodes[node].type != CKPT_FILE)
		return -EINVAL;
	r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	atomic_init(&r->refs, 1);
	r->a = a;
	r->node = node;
	r->n = &a->nodes[node];
	if (node == a->manifest_node && a->manifest_filtered) {
		int rc = archive_manifest_get(a, &r->mem, &r->mem_len, err);
		if (rc < 0) {
			free(r);
			return rc;
		}
		pthread_mutex_init(&r->lock, NULL);
		ckpt_archive_ref(a);
		*out = r;
		return 0;
	}
	len = node_path(a, node, path, sizeof(path));
	if (len < 0) {
		free(r);
		return ckpt_err_set(err, len, "limit", NULL, 0,
				    "path too long to open");
	}
	data = zip_data_offset(a->fd, &r->n->z, path, (size_t)len, err);
	if (data < 0) {
		/* A local header that contradicts the central directory
		 * means the archive cannot be trusted at all. */
		if (err)
			archive_poison(a, err);
		free(r);
		return -EIO;
	}
	r->data = (uint64_t)data;
	if (r->n->z.method == ZIP_METHOD_DEFLATE &&
	    r->n->u.file.chunks != NO_CHUNKS) {
		r->tab = &a->chunks[r->n->u.file.chunks];
		r->chunked = true;
		r->nchunk = r->tab->n;
	} else if (r->n->z.method == ZIP_METHOD_DEFLATE &&
		   r->n->z.size <= WHOLE_MAX) {
		r->chunked = true;
		r->nchunk = 1;
	} else if (r->n->z.method == ZIP_METHOD_DEFLATE) {
		/* Small entries get small buffers: the whole content fits
		 * the ring, so nothing is ever inflated twice. */
		r->ring_size =
			r->n->z.size < RING ? (size_t)r->n->z.size + 1 : RING;
		r->in_size = r->n->z.csize < INBUF ? (size_t)r->n->z.csize + 1
						   : INBUF;
		r->ring = malloc(r->ring_size);
		r->in = malloc(r->in_size);
		r->span = r->n->z.size / POINTS > SPAN_MIN
				  ? r->n->z.size / POINTS
				  : SPAN_MIN;
		if (!r->ring || !r->in ||
		    inflateInit2(&r->zs, -MAX_WBITS) != Z_OK)
			goto nomem;
		r->zinit = true;
	}
	/* A whole entry is summed in one go when inflated; the others are
	 * summed as they are read in order. */
	if (r->n->u.file.hash != NO_HASH && !verified(r) &&
	    !(r->chunked && !r->tab)) {
		r->xs = XXH3_createState();
		if (!r->xs)
			goto nomem;
		XXH3_128bits_reset(r->xs);
	}
	pthread_mutex_init(&r->lock, NULL);
	ckpt_archive_ref(a);
	*out = r;
	return 0;
nomem:
	XXH3_freeState(r->xs);
	free(r->ring);
	free(r->in);
	free(r);
	return -ENOMEM;
}

size_t ckpt_reader_footprint(const struct ckpt_reader *r)
{
	/* As much as the restart points may grow to. */
	size_t points = r->ring && r->n->z.size > SPAN_MIN
				? (size_t)POINTS * WINDOW
				: 0;

	return r->ring_size + r->in_size + points + r->mem_len;
}

void ckpt_reader_hold(struct ckpt_reader *r)
{
	atomic_fetch_add(&r->refs, 1);
}

void ckpt_reader_close(struct ckpt_reader *r)
{
	if (!r || atomic_fetch_sub(&r->refs, 1) != 1)
		return;
	if (r->zinit)
		inflateEnd(&r->zs);
	for (uint32_t i = 0; i < r->npts; i++)
		free(r->pts[i].window);
	XXH3_freeState(r->xs);
	free(r->ring);
	free(r->in);
	if (r->mem)
		archive_manifest_put(r->a);
	pthread_mutex_destroy(&r->lock);
	ckpt_archive_unref(r->a);
	free(r);
}

/* Reads the whole stored entry once through the sums, for a reader whose
 * reads did not come in order. */
static int verify_stored(struct ckpt_reader *r, struct ckpt_err *err)
{
	uint8_t buf[64 * 1024];
	uint64_t size = r->n->z.size;

	vreset(r);
	while (r->vpos < size) {
		size_t n = size - r->vpos < sizeof(buf) ? size - r->vpos
							: sizeof(buf);
		if (pread_all(r->a->fd, buf, n, r->data + r->vpos) < 0)
			return fail(r, -EIO, "io", "archive unreadable", err);
		vupdate(r, buf, n);
	}
	return vfinish(r, err);
}

static ssize_t read_stored(struct ckpt_reader *r, uint8_t *buf, size_t n,
			   uint64_t off, struct ckpt_err *err)
{
	uint64_t size = r->n->z.size;
	int rc = 0;

	if (pread_all(r->a->fd, buf, n, r->data + off) < 0)
		return fail(r, -EIO, "io", "archive unreadable or truncated",
			    err);
	if (verified(r))
		return (ssize_t)n;
	pthread_mutex_lock(&r->lock);
	if (off <= r->vpos && r->vpos < off + n)
		vupdate(r, buf + (r->vpos - off), (size_t)(off + n - r->vpos));
	if (off + n == size)
		rc = r->vpos == size ? vfinish(r, err) : verify_stored(r, err);
	pthread_mutex_unlock(&r->lock);
	return rc < 0 ? rc : (ssize_t)n;
}

static int refill(struct ckpt_reader *r, struct ckpt_err *err)
{
	size_t n = r->in_size;

	if (r->in_used == r->n->z.csize)
		return fail(r, -EIO, "crc", "compressed data ends early", err);
	if (n > r->n->z.csize - r->in_used)
		n = (size_t)(r->n->z.csize - r->in_used);
	if (pread_all(r->a->fd, r->in, n, r->data + r->in_used) < 0)
		return fail(r, -EIO, "io", "archive unreadable or truncated",
			    err);
	r->in_used += n;
	r->zs.next_in = r->in;
	r->zs.avail_in = (uInt)n;
	return 0;
}

/* At the declared size: the stream must end exactly here.  A stream that
 * would produce more proves the header lied; nothing past the declared
 * size is ever handed out. */
static int check_end(struct ckpt_reader *r, int zr, struct ckpt_err *err)
{
	uint8_t probe;

	while (zr != Z_STREAM_END) {
		/* zlib may hold the last bits already: ask it first. */
		if (r->zs.avail_in == 0 && r->in_used < r->n->z.csize) {
			int rc = refill(r, err);
			if (rc < 0)
				return rc;
		} else if (r->zs.avail_in == 0 && zr == Z_BUF_ERROR) {
			return fail(r, -EIO, "crc",
				    "compressed data ends early", err);
		}
		r->zs.next_out = &probe;
		r->zs.avail_out = 1;
		zr = inflate(&r->zs, Z_NO_FLUSH);
		/* Z_BUF_ERROR with input left means no progress is
		 * possible: a malformed stream, not a reason to loop. */
		if ((zr != Z_OK && zr != Z_STREAM_END &&
		     (zr != Z_BUF_ERROR || r->zs.avail_in > 0)) ||
		    r->zs.avail_out == 0)
			return fail(r, -EIO, "crc",
				    "content longer than its declared size",
				    err);
	}
	return vfinish(r, err);
}

/* Leaves a restart point where the cursor stands, at a block boundary a
 * span past the last one, with the window the ring still holds. */
static void add_point(struct ckpt_reader *r)
{
	uint64_t last = r->npts ? r->pts[r->npts - 1].out : 0;
	size_t w = r->out < WINDOW ? (size_t)r->out : WINDOW;
	struct point *p = &r->pts[r->npts];

	if (r->npts == POINTS || r->out < last + r->span ||
	    r->out - r->base < w || !(r->zs.data_type & 128) ||
	    (r->zs.data_type & 64))
		return;
	p->window = malloc(WINDOW);
	if (!p->window)
		return; /* points only save time */
	for (size_t k = 0; k < w;) {
		size_t at = (size_t)((r->out - w + k) % r->ring_size);
		size_t c =
			r->ring_size - at < w - k ? r->ring_size - at : w - k;
		memcpy(p->window + WINDOW - w + k, r->ring + at, c);
		k += c;
	}
	p->out = r->out;
	p->in = r->in_used - r->zs.avail_in;
	p->bits = r->zs.data_type & 7;
	r->npts++;
}

/* Inflates at most CHUNK more bytes into the ring, stopping at the end of
 * a deflate block to leave a restart point there. */
static int inflate_some(struct ckpt_reader *r, struct ckpt_err *err)
{
	uint64_t size = r->n->z.size, at = r->out;
	size_t pos = (size_t)(r->out % r->ring_size);
	size_t room = r->ring_size - pos;
	size_t made;
	int zr;

	if (room > CHUNK)
		room = CHUNK;
	if (room > size - r->out)
		room = (size_t)(size - r->out);
	/* Past a block's end zlib may hold the next block whole in its
	 * bits: input ran out only if it cannot go on without. */
	if (r->zs.avail_in == 0 && r->in_used < r->n->z.csize) {
		int rc = refill(r, err);
		if (rc < 0)
			return rc;
	}
	r->zs.next_out = r->ring + pos;
	r->zs.avail_out = (uInt)room;
	zr = inflate(&r->zs, Z_BLOCK);
	made = room - r->zs.avail_out;
	if (zr != Z_OK && zr != Z_STREAM_END && zr != Z_BUF_ERROR)
		return fail(r, -EIO, "crc", "corrupt compressed data", err);
	if (zr == Z_BUF_ERROR && made == 0 && r->zs.avail_in == 0)
		return fail(r, -EIO, "crc", "compressed data ends early", err);
	if (zr == Z_STREAM_END && r->out + made < size)
		return fail(r, -EIO, "crc",
			    "content shorter than its declared size", err);
	r->out += made;
	/* The sums go on from where they stand, whatever the cursor
	 * inflated again or skipped. */
	if (at <= r->vpos && r->vpos < r->out)
		vupdate(r, r->ring + pos + (r->vpos - at),
			(size_t)(r->out - r->vpos));
	if (r->out == size)
		return check_end(r, zr, err);
	add_point(r);
	return 0;
}

/* Resumes the cursor at the last restart point at or before off, or at
 * the start of the entry. */
static int resume(struct ckpt_reader *r, uint64_t off, struct ckpt_err *err)
{
	const struct point *p = NULL;
	uint8_t byte;

	for (uint32_t i = 0; i < r->npts && r->pts[i].out <= off; i++)
		p = &r->pts[i];
	if (inflateReset(&r->zs) != Z_OK)
		return -EIO;
	r->zs.avail_in = 0;
	r->in_used = p ? p->in : 0;
	r->out = r->base = p ? p->out : 0;
	if (!p)
		return 0;
	if (p->bits) {
		if (pread_all(r->a->fd, &byte, 1, r->data + p->in - 1) < 0)
			return fail(r, -EIO, "io", "archive unreadable", err);
		if (inflatePrime(&r->zs, p->bits, byte >> (8 - p->bits)) !=
		    Z_OK)
			return -EIO;
	}
	if (inflateSetDictionary(&r->zs, p->window, WINDOW) != Z_OK)
		return -EIO;
	return 0;
}

/* Whether a read at off should resume at a restart point: it lies behind
 * what the ring holds, or a point lies more than a ring's length ahead of
 * the cursor on the way to it. */
static bool must_resume(const struct ckpt_reader *r, uint64_t off)
{
	uint64_t lo = r->out > r->ring_size ? r->out - r->ring_size : 0;

	if (lo < r->base)
		lo = r->base;
	if (off < lo)
		return true;
	for (uint32_t i = r->npts; i-- > 0;)
		if (r->pts[i].out <= off)
			return r->pts[i].out > r->out + r->ring_size;
	return false;
}

static ssize_t read_deflated(struct ckpt_reader *r, uint8_t *buf, size_t n,
			     uint64_t off, struct ckpt_err *err)
{
	size_t done = 0;
	int rc = 0;

	pthread_mutex_lock(&r->lock);
	if (r->failed) {
		rc = fail(r, r->failed, "crc", "entry failed earlier", err);
		goto out;
	}
	while (done < n) {
		uint64_t at = off + done;
		size_t seg = n - done < SEG ? n - done : SEG;

		if (must_resume(r, at) && (rc = resume(r, at, err)) < 0)
			break;
		while (r->out < at + seg && (rc = inflate_some(r, err)) == 0)
			;
		if (rc < 0)
			break;
		for (size_t k = 0; k < seg;) {
			size_t p = (size_t)((at + k) % r->ring_size);
			size_t c = r->ring_size - p < seg - k ? r->ring_size - p
							      : seg - k;
			memcpy(buf + done + k, r->ring + p, c);
			k += c;
		}
		done += seg;
	}
	if (rc < 0)
		r->failed = rc;
out:
	pthread_mutex_unlock(&r->lock);
	return rc < 0 ? rc : (ssize_t)n;
}

/* ---- chunks ------------------------------------------------------------ */

/* Where chunk k lives: its bytes [*uoff, *uoff + *ulen) of the content,
 * compressed as [*coff, *coff + *clen) of the entry's data. */
static void chunk_span(const struct ckpt_reader *r, uint32_t k, uint64_t *uoff,
		       size_t *ulen, uint64_t *coff, uint64_t *clen)
{
	const struct chunktab *t = r->tab;
	uint64_t size = r->n->z.size, csize = r->n->z.csize;

	if (!t) {
		*uoff = *coff = 0;
		*ulen = (size_t)size;
		*clen = csize;
		return;
	}
	*uoff = (uint64_t)k * t->size;
	*ulen = (size_t)(size - *uoff < t->size ? size - *uoff : t->size);
	*coff = t->off[k];
	*clen = (k + 1 < t->n ? t->off[k + 1] : csize) - *coff;
}

/* Inflates chunk k into dst (its exact length) and checks it. */
static int chunk_inflate(struct ckpt_reader *r, uint32_t k, uint8_t *dst,
			 struct ckpt_err *err)
{
	/* A full flush leaves the stream byte-aligned after an empty stored
	 * block; this final empty block turns one chunk's bytes into a
	 * complete stream that a whole-buffer inflater accepts. */
	static const uint8_t tail[5] = {0x01, 0x00, 0x00, 0xff, 0xff};
	struct libdeflate_decompressor *d;
	enum libdeflate_result lr;
	uint64_t uoff, coff, clen;
	size_t ulen;
	uint8_t *in;
	bool last = k + 1 == r->nchunk;

	chunk_span(r, k, &uoff, &ulen, &coff, &clen);
	/* No deflate stream for ulen bytes is this long: a table that says
	 * otherwise is not read. */
	if (clen > (uint64_t)ulen + ulen / 8 + 4096)
		return fail(r, -EIO, "crc", "chunk table is corrupt", err);
	in = malloc((size_t)clen + sizeof(tail));
	d = libdeflate_alloc_decompressor();
	if (!in || !d) {
		free(in);
		libdeflate_free_decompressor(d);
		return -ENOMEM;
	}
	if (pread_all(r->a->fd, in, (size_t)clen, r->data + coff) < 0) {
		free(in);
		libdeflate_free_decompressor(d);
		return fail(r, -EIO, "io", "archive unreadable or truncated",
			    err);
	}
	if (!last)
		memcpy(in + clen, tail, sizeof(tail));
	lr = libdeflate_deflate_decompress(
		d, in, (size_t)clen + (last ? 0 : sizeof(tail)), dst, ulen,
		NULL);
	free(in);
	libdeflate_free_decompressor(d);
	if (lr != LIBDEFLATE_SUCCESS)
		return fail(r, -EIO, "crc",
			    lr == LIBDEFLATE_INSUFFICIENT_SPACE
				    ? "content longer than its declared size"
				    : "corrupt compressed data",
			    err);
	if (r->tab) {
		if (XXH3_64bits(dst, ulen) != r->tab->hash[k])
			return fail(r, -EIO, "crc",
				    "content does not match its chunk hash",
				    err);
		return 0;
	}
	/* A whole entry: its own sums decide, every time it is inflated. */
	XXH128_hash_t h = XXH3_128bits(dst, ulen);
	return judge(r, libdeflate_crc32(0, dst, ulen), &h, err);
}

/* The cache of inflated chunks, shared by every reader of every archive.
 * A slot is named by the archive's serial, the node and the chunk; one
 * thread inflates it while the others wanting it wait. */
struct slot {
	uint64_t serial; /* 0: empty */
	uint32_t node, k;
	bool loading;
	int refs;
	uint64_t used;
	uint8_t *buf;
	size_t cap, len;
};

static struct {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	uint64_t tick;
	struct slot s[SLOTS];
} cache = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, {{0}}};

static struct slot *slot_find(const struct ckpt_reader *r, uint32_t k)
{
	for (int i = 0; i < SLOTS; i++) {
		struct slot *s = &cache.s[i];
		if (s->serial == r->a->serial && s->node == r->node &&
		    s->k == k)
			return s;
	}
	return NULL;
}

static struct slot *slot_victim(void)
{
	struct slot *v = NULL;

	for (int i = 0; i < SLOTS; i++) {
		struct slot *s = &cache.s[i];
		if (s->refs == 0 && !s->loading && (!v || s->used < v->used))
			v = s;
	}
	return v;
}

/* Returns chunk k held in a slot (release it with slot_put).  Without
 * wait, gives -EAGAIN instead of waiting when the chunk is being inflated
 * or cached already (fresh is then false) or no slot is free. */
static int slot_get(struct ckpt_reader *r, uint32_t k, bool wait,
		    struct slot **out, struct ckpt_err *err)
{
	uint64_t uoff, coff, clen;
	struct slot *s;
	size_t ulen;
	int rc;

	chunk_span(r, k, &uoff, &ulen, &coff, &clen);
	pthread_mutex_lock(&cache.lock);
	for (;;) {
		s = slot_find(r, k);
		if (s && !wait) {
			pthread_mutex_unlock(&cache.lock);
			return -EAGAIN;
		}
		if (s && !s->loading)
			break;
		if (!s && (s = slot_victim()))
			break;
		if (!wait) {
			pthread_mutex_unlock(&cache.lock);
			return -EAGAIN;
		}
		pthread_cond_wait(&cache.cond, &cache.lock);
	}
	s->refs++;
	s->used = ++cache.tick;
	if (s->serial == r->a->serial && s->node == r->node && s->k == k) {
		pthread_mutex_unlock(&cache.lock);
		*out = s;
		return 0;
	}
	s->serial = r->a->serial;
	s->node = r->node;
	s->k = k;
	s->loading = true;
	pthread_mutex_unlock(&cache.lock);

	rc = 0;
	if (s->cap < ulen) {
		uint8_t *b = realloc(s->buf, ulen);
		if (b) {
			s->buf = b;
			s->cap = ulen;
		} else {
			rc = -ENOMEM;
		}
	}
	if (rc == 0)
		rc = chunk_inflate(r, k, s->buf, err);
	pthread_mutex_lock(&cache.lock);
	s->loading = false;
	s->len = ulen;
	if (rc < 0) {
		/* Waiters find no slot and try for themselves. */
		s->serial = 0;
		s->refs--;
	}
	pthread_cond_broadcast(&cache.cond);
	pthread_mutex_unlock(&cache.lock);
	if (rc < 0)
		return rc;
	if (r->on_chunk)
		r->on_chunk(r->on_chunk_ctx, uoff, s->buf, ulen);
	*out = s;
	return 0;
}

static void slot_put(struct slot *s)
{
	pthread_mutex_lock(&cache.lock);
	if (--s->refs == 0)
		pthread_cond_broadcast(&cache.cond);
	pthread_mutex_unlock(&cache.lock);
}

/* The whole-content sums of a chunked entry, over chunks reached in
 * order; before the last chunk is returned they decide. */
static int chunk_sum(struct ckpt_reader *r, uint32_t k, const uint8_t *p,
		     size_t n, struct ckpt_err *err)
{
	int rc = 0;

	if (!r->tab || verified(r))
		return 0;
	pthread_mutex_lock(&r->lock);
	if (k == r->vchunk) {
		vupdate(r, p, n);
		if (++r->vchunk == r->nchunk)
			rc = vfinish(r, err);
	}
	pthread_mutex_unlock(&r->lock);
	return rc;
}

static ssize_t read_chunked(struct ckpt_reader *r, uint8_t *buf, size_t n,
			    uint64_t off, struct ckpt_err *err)
{
	uint32_t k = r->tab ? (uint32_t)(off / r->tab->size) : 0;
	uint64_t prev = atomic_exchange(&r->next_off, off + n);
	size_t done = 0;

	atomic_store(&r->forward,
		     off == 0 || (off + NEAR >= prev && off <= prev + NEAR));

	while (done < n) {
		uint64_t uoff, coff, clen, at = off + done;
		size_t ulen, skip, c;
		struct slot *s;
		int rc;

		chunk_span(r, k, &uoff, &ulen, &coff, &clen);
		skip = (size_t)(at - uoff);
		c = ulen - skip < n - done ? ulen - skip : n - done;
		if (skip == 0 && c == ulen) {
			/* The request covers the chunk: straight into the
			 * caller's buffer, no copy. */
			rc = chunk_inflate(r, k, buf + done, err);
			if (rc == 0)
				rc = chunk_sum(r, k, buf + done, c, err);
		} else {
			rc = slot_get(r, k, true, &s, err);
			if (rc == 0) {
				rc = chunk_sum(r, k, s->buf, s->len, err);
				if (rc == 0)
					memcpy(buf + done, s->buf + skip, c);
				slot_put(s);
			}
		}
		if (rc < 0)
			return rc;
		done += c;
		k++;
	}
	return (ssize_t)n;
}

void ckpt_reader_on_chunk(struct ckpt_reader *r, ckpt_chunk_fn *fn, void *ctx)
{
	r->on_chunk = fn;
	r->on_chunk_ctx = ctx;
}

int ckpt_reader_ahead(struct ckpt_reader *r)
{
	uint64_t next = atomic_load(&r->next_off);
	struct slot *s;

	if (!r->tab || !atomic_load(&r->forward) || next >= r->n->z.size ||
	    atomic_load(&r->a->verified[r->node]) == VERIFY_BAD)
		return 0;
	for (uint32_t k = (uint32_t)(next / r->tab->size), i = 0;
	     i <= AHEAD && k < r->nchunk; k++, i++) {
		int rc = slot_get(r, k, false, &s, NULL);
		if (rc == -EAGAIN)
			continue;
		if (rc < 0)
			return rc;
		slot_put(s);
		return 0;
	}
	return 0;
}

ssize_t ckpt_reader_pread(struct ckpt_reader *r, void *buf, size_t size,
			  uint64_t off, struct ckpt_err *err)
{
	uint64_t total = r->n->z.size;

	if (r->mem) {
		if (off >= r->mem_len)
			return 0;
		size = size < r->mem_len - off ? size
					       : r->mem_len - (size_t)off;
		memcpy(buf, r->mem + off, size);
		return (ssize_t)size;
	}
	if (atomic_load(&r->a->verified[r->node]) == VERIFY_BAD)
		return fail(r, -EIO, "crc",
			    "content does not match its CRC "
			    "or hash",
			    err);
	if (off >= total || size == 0)
		return 0;
	if (size > total - off)
		size = (size_t)(total - off);
	if (r->n->z.method == ZIP_METHOD_STORE)
		return read_stored(r, buf, size, off, err);
	if (r->chunked)
		return read_chunked(r, buf, size, off, err);
	return read_deflated(r, buf, size, off, err);
}
