/*
 * files.c - file content by nodeid.
 *
 * Opens cost no message (the kernel's zero-message opens, see ops.c), so
 * a read names its file by nodeid alone.  The content behind the nodeids
 * read most recently stays open here, FILES of them at most: a reader of
 * a checkpoint's file, keeping its read-ahead state across requests; a
 * file of current/, whose secret scan must not be repeated for every
 * request; or the text of a control file.  The kernel's forgetting a
 * nodeid drops its entry.
 *
 * A control file's text is taken when the kernel asks for its attributes
 * (it does before every read, their timeout being 0), and reads are
 * served from that copy: the size the kernel was told and the bytes it
 * gets agree.  Its mtime moves whenever the text changes, which makes the
 * kernel drop what it cached.  A current/ file is opened again when its
 * source's size or mtime changed.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ckptfs.h"
#include "push.h"

#define FILES 32
/* What the kept readers' buffers may take together: a reader of a large
 * entry another tool deflated holds a 2 MiB window and up to 2 MiB of
 * restart points, a filtered manifest its whole text; room for a handful
 * of each, so that readers taking turns do not evict each other.  The
 * entry just opened always stays. */
#define FILES_BYTES (32u << 20)

enum kind {
	K_ARCHIVE,
	K_LIVE,
	K_TEXT
};

struct file {
	atomic_int refs; /* the table's, and each request's using it */
	fuse_ino_t ino;
	enum kind kind;
	uint64_t used; /* tick of the last use, for eviction */
	size_t cost;   /* bytes held, counted against FILES_BYTES */
	union {
		struct ckpt_reader *r; /* thread-safe */
		struct {
			/* One cursor and one scanner: one request at a
			 * time. */
			pthread_mutex_t lock;
			struct ckpt_live_file *f;
			struct ckpt_stat seen; /* the source when opened */
		} live;
		struct {
			char *buf;
			size_t len;
			int64_t mtime_ns;
		} text;
	} u;
};

static pthread_mutex_t files_lock = PTHREAD_MUTEX_INITIALIZER;
static struct file *files[FILES];
static uint64_t tick;
static size_t held; /* sum of the entries' cost */

static void file_put(struct file *f)
{
	if (!f || atomic_fetch_sub(&f->refs, 1) != 1)
		return;
	switch (f->kind) {
	case K_ARCHIVE:
		ckpt_reader_close(f->u.r);
		break;
	case K_LIVE:
		ckpt_live_close(f->u.live.f);
		pthread_mutex_destroy(&f->u.live.lock);
		break;
	case K_TEXT:
		free(f->u.text.buf);
		break;
	}
	free(f);
}

/* The entry for ino with a reference, or NULL.  Caller holds files_lock. */
static struct file *lookup(fuse_ino_t ino)
{
	for (unsigned i = 0; i < FILES; i++)
		if (files[i] && files[i]->ino == ino) {
			files[i]->used = ++tick;
			atomic_fetch_add(&files[i]->refs, 1);
			return files[i];
		}
	return NULL;
}

/* Takes entry i out of the table; caller holds files_lock and puts it. */
static struct file *take(unsigned i)
{
	struct file *f = files[i];

	files[i] = NULL;
	if (f)
		held -= f->cost;
	return f;
}

/* Puts f in the table in place of any entry for the same nodeid, or of
 * the least recently used one, and evicts the least recently used others
 * while their buffers exceed FILES_BYTES.  What it displaced goes into
 * out (FILES slots), for the caller to put outside the lock.  Caller
 * holds files_lock. */
static void place(struct file *f, struct file **out)
{
	unsigned victim = 0, n = 0;

	for (unsigned i = 0; i < FILES; i++) {
		if (files[i] && files[i]->ino == f->ino) {
			victim = i;
			break;
		}
		if (!files[i] ||
		    (files[victim] && files[i]->used < files[victim]->used))
			victim = i;
	}
	out[n++] = take(victim);
	f->used = ++tick;
	atomic_fetch_add(&f->refs, 1); /* the table's */
	files[victim] = f;
	held += f->cost;
	while (held > FILES_BYTES) {
		unsigned old = FILES;
		for (unsigned i = 0; i < FILES; i++)
			if (files[i] && files[i] != f &&
			    (old == FILES || files[i]->used < files[old]->used))
				old = i;
		if (old == FILES)
			break;
		out[n++] = take(old);
	}
	while (n < FILES)
		out[n++] = NULL;
}

static void put_all(struct file **v)
{
	for (unsigned i = 0; i < FILES; i++)
		file_put(v[i]);
}

static int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* The text of a control file: the status, or an errors/NAME report. */
static int control_text(struct ckptfs *fs, fuse_ino_t ino, char **text,
			size_t *len)
{
	char *name;

	if (ino == INO_STATUS) {
		*text = ckpt_store_status(fs->store, len);
		return *text ? 0 : -ENOMEM;
	}
	if (ckpt_store_error(fs->store, ino - INO_ERROR_BASE, &name, text,
			     len) < 0)
		return -ENOENT;
	free(name);
	return 0;
}

int files_text(struct ckptfs *fs, fuse_ino_t ino, size_t *len,
	       int64_t *mtime_ns)
{
	struct file *f = calloc(1, sizeof(*f)), *old, *out[FILES] = {NULL};
	int rc;

	if (!f)
		return -ENOMEM;
	rc = control_text(fs, ino, &f->u.text.buf, &f->u.text.len);
	if (rc < 0) {
		free(f);
		return rc;
	}
	f->ino = ino;
	f->kind = K_TEXT;
	atomic_init(&f->refs, 0);
	pthread_mutex_lock(&files_lock);
	old = lookup(ino);
	if (old && old->u.text.len == f->u.text.len &&
	    memcmp(old->u.text.buf, f->u.text.buf, f->u.text.len) == 0) {
		/* Unchanged: the kernel keeps what it cached. */
		f->u.text.mtime_ns = old->u.text.mtime_ns;
		free(f->u.text.buf);
		free(f);
		f = old;
		old = NULL;
	} else {
		int64_t now = now_ns(), was = old ? old->u.text.mtime_ns : 0;
		f->u.text.mtime_ns = now > was ? now : was + 1;
		f->cost = f->u.text.len;
		file_put(old);
		old = NULL;
		atomic_fetch_add(&f->refs, 1); /* ours, until below */
		place(f, out);
	}
	*len = f->u.text.len;
	*mtime_ns = f->u.text.mtime_ns;
	pthread_mutex_unlock(&files_lock);
	put_all(out);
	file_put(f);
	return 0;
}

/* Opens what ino names, outside the table. */
static int file_open(struct ckptfs *fs, fuse_ino_t ino, struct file **out,
		     struct ckpt_err *err)
{
	struct file *f = calloc(1, sizeof(*f));
	char path[4096];
	int rc = 0;

	if (!f)
		return -ENOMEM;
	f->ino = ino;
	atomic_init(&f->refs, 1);
	if (ino == INO_STATUS ||
	    (ino >= INO_ERROR_BASE && ino < INO_ERROR_END)) {
		size_t len;
		int64_t mtime;
		free(f);
		/* Taken by the attribute request that preceded the read,
		 * unless evicted since. */
		rc = files_text(fs, ino, &len, &mtime);
		pthread_mutex_lock(&files_lock);
		*out = rc == 0 ? lookup(ino) : NULL;
		pthread_mutex_unlock(&files_lock);
		return rc < 0 ? rc : *out ? 0 : -EAGAIN;
	}
	if (ino & LIVE_BIT) {
		f->kind = K_LIVE;
		rc = live_path(fs, ino, path, sizeof(path));
		if (rc == 0)
			rc = ckpt_live_stat(&fs->save, path, &f->u.live.seen);
		if (rc == 0)
			rc = ckpt_live_open(&fs->save, path, &f->u.live.f, err);
		if (rc == 0)
			pthread_mutex_init(&f->u.live.lock, NULL);
	} else if (ino >> 32) {
		struct ckpt_archive *a;
		f->kind = K_ARCHIVE;
		rc = ckpt_store_get_id(fs->store, (uint32_t)(ino >> 32), &a);
		if (rc == 0) {
			rc = ckpt_reader_open(a, (uint32_t)ino, &f->u.r, err);
			ckpt_archive_unref(a);
		}
		/* What a read inflates beyond the request goes to the page
		 * cache. */
		if (rc == 0) {
			ckpt_reader_on_chunk(f->u.r, ckptfs_push_chunk,
					     (void *)(uintptr_t)ino);
			f->cost = ckpt_reader_footprint(f->u.r);
		}
	} else {
		rc = -EISDIR; /* the fixed directories */
	}
	if (rc < 0) {
		free(f);
		return rc;
	}
	*out = f;
	return 0;
}

/* A current/ file whose source changed since it was opened is stale. */
static bool stale(struct ckptfs *fs, struct file *f)
{
	struct ckpt_stat now;
	char path[4096];

	if (f->kind != K_LIVE)
		return false;
	if (live_path(fs, f->ino, path, sizeof(path)) < 0 ||
	    ckpt_live_stat(&fs->save, path, &now) < 0)
		return false; /* reading what was opened still works */
	return now.size != f->u.live.seen.size ||
	       now.mtime_ns != f->u.live.seen.mtime_ns;
}

static int file_get(struct ckptfs *fs, fuse_ino_t ino, struct file **out,
		    struct ckpt_err *err)
{
	struct file *f, *gone[FILES];
	int rc;

	pthread_mutex_lock(&files_lock);
	f = lookup(ino);
	pthread_mutex_unlock(&files_lock);
	if (f && !stale(fs, f)) {
		*out = f;
		return 0;
	}
	file_put(f);
	rc = file_open(fs, ino, &f, err);
	if (rc < 0)
		return rc;
	if (f->kind == K_TEXT) {
		*out = f;
		return 0;
	}
	pthread_mutex_lock(&files_lock);
	place(f, gone);
	pthread_mutex_unlock(&files_lock);
	put_all(gone);
	*out = f;
	return 0;
}

ssize_t files_read(struct ckptfs *fs, fuse_ino_t ino, void *buf, size_t size,
		   uint64_t off, struct ckpt_err *err,
		   struct ckpt_reader **ahead)
{
	struct file *f;
	ssize_t n;
	int rc = file_get(fs, ino, &f, err);

	*ahead = NULL;
	if (rc < 0)
		return rc;
	switch (f->kind) {
	case K_ARCHIVE:
		n = ckpt_reader_pread(f->u.r, buf, size, off, err);
		if (n > 0) {
			/* Held past the reply: read-ahead comes after it. */
			ckpt_reader_hold(f->u.r);
			*ahead = f->u.r;
		}
		break;
	case K_LIVE:
		pthread_mutex_lock(&f->u.live.lock);
		n = ckpt_live_pread(f->u.live.f, buf, size, off, err);
		pthread_mutex_unlock(&f->u.live.lock);
		break;
	case K_TEXT:
	default:
		if (off >= f->u.text.len) {
			n = 0;
		} else {
			size_t left = f->u.text.len - (size_t)off;
			n = (ssize_t)(size < left ? size : left);
			memcpy(buf, f->u.text.buf + off, (size_t)n);
		}
		break;
	}
	file_put(f);
	return n;
}

void files_forget(fuse_ino_t ino)
{
	struct file *f = NULL;

	pthread_mutex_lock(&files_lock);
	for (unsigned i = 0; i < FILES; i++)
		if (files[i] && files[i]->ino == ino) {
			f = take(i);
			break;
		}
	pthread_mutex_unlock(&files_lock);
	file_put(f);
}

void files_clear(void)
{
	pthread_mutex_lock(&files_lock);
	for (unsigned i = 0; i < FILES; i++)
		file_put(take(i));
	pthread_mutex_unlock(&files_lock);
}
