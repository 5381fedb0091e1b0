/*
 * files.c - file content by nodeid.
 *
 * Opens cost no message (the kernel's zero-message opens, see ops.c), so
 * a read names its file by nodeid alone.  The content behind the nodeids
 * read most recently stays open here, FILES of them at most: a reader of
 * a checkpoint's file, keeping its read-ahead state and restart points
 * across requests, or a file of current/, whose secret scan must not be
 * repeated for every request.  The texts of control files are kept in a
 * table of their own, so that listing many reports never evicts a reader.
 * The kernel's forgetting a nodeid drops its entry; so does a failed read,
 * so that an error that passes is not remembered (content that failed its
 * sums stays refused by core).
 *
 * A control file's text is taken each time its name is looked up (never
 * cached by the kernel), and a text that changed gets a new nodeid: what
 * the kernel cached under a nodeid is never stale, and an open file reads
 * the text it was opened on to its end.  A current/ file is dropped, to
 * be opened again, when ops.c gives the kernel attributes of its source
 * that changed (another inode, size, mtime or ctime).
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "ckptfs.h"
#include "push.h"

#define FILES 32
/* What the kept readers' buffers may take together: a reader of a large
 * entry another tool deflated holds a 2 MiB window and up to 2 MiB of
 * restart points, a filtered manifest its whole text; room for a handful
 * of each, so that readers taking turns do not evict each other.  The
 * entry just opened always stays, and one evicted while a request uses
 * it lives until that request ends. */
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
		} live;
		struct {
			char *buf;
			size_t len;
			int64_t mtime_ns;
			/* Lookups the kernel has not forgotten: a name
			 * looked up again may get the same nodeid while
			 * the forget of an earlier lookup is on its way. */
			uint64_t nlookup;
		} text;
	} u;
};

struct table {
	struct file *v[FILES];
	uint64_t tick;
	size_t held; /* sum of the entries' cost */
};

/* One lock for both tables: every use is a few dozen compares. */
static pthread_mutex_t files_lock = PTHREAD_MUTEX_INITIALIZER;
static struct table readers, texts;

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

static void put_all(struct file **v, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		file_put(v[i]);
}

static struct table *table_of(fuse_ino_t ino)
{
	return is_text_ino(ino) ? &texts : &readers;
}

/* The entry for ino with a reference, or NULL.  Caller holds files_lock. */
static struct file *lookup(struct table *t, fuse_ino_t ino)
{
	for (unsigned i = 0; i < FILES; i++)
		if (t->v[i] && t->v[i]->ino == ino) {
			t->v[i]->used = ++t->tick;
			atomic_fetch_add(&t->v[i]->refs, 1);
			return t->v[i];
		}
	return NULL;
}

/* Takes entry i out of the table; caller holds files_lock and puts it. */
static struct file *take(struct table *t, unsigned i)
{
	struct file *f = t->v[i];

	t->v[i] = NULL;
	if (f)
		t->held -= f->cost;
	return f;
}

/* Puts f in the table in place of any entry for the same nodeid, or of
 * the least recently used one, and evicts the least recently used others
 * while their buffers exceed FILES_BYTES.  What it displaced goes into
 * out (FILES slots), for the caller to put outside the lock; returns how
 * many.  Caller holds files_lock. */
static unsigned place(struct table *t, struct file *f, struct file **out)
{
	unsigned victim = 0, n = 0;

	for (unsigned i = 0; i < FILES; i++) {
		if (t->v[i] && t->v[i]->ino == f->ino) {
			victim = i;
			break;
		}
		if (!t->v[i] ||
		    (t->v[victim] && t->v[i]->used < t->v[victim]->used))
			victim = i;
	}
	out[n++] = take(t, victim);
	f->used = ++t->tick;
	atomic_fetch_add(&f->refs, 1); /* the table's */
	t->v[victim] = f;
	t->held += f->cost;
	while (t->held > FILES_BYTES) {
		unsigned old = FILES;
		for (unsigned i = 0; i < FILES; i++)
			if (t->v[i] && t->v[i] != f &&
			    (old == FILES || t->v[i]->used < t->v[old]->used))
				old = i;
		if (old == FILES)
			break;
		out[n++] = take(t, old);
	}
	return n;
}

/* Drops ino's entry, if it is still f (any entry for ino when f is NULL). */
static void drop(fuse_ino_t ino, const struct file *f)
{
	struct table *t = table_of(ino);
	struct file *gone = NULL;

	pthread_mutex_lock(&files_lock);
	for (unsigned i = 0; i < FILES; i++)
		if (t->v[i] && t->v[i]->ino == ino && (!f || t->v[i] == f)) {
			gone = take(t, i);
			break;
		}
	pthread_mutex_unlock(&files_lock);
	file_put(gone);
}

/* The text of a control file: the status, or an errors/NAME report. */
static int control_text(struct ckptfs *fs, fuse_ino_t base, char **text,
			size_t *len)
{
	char *name;

	if (base == INO_STATUS) {
		*text = ckpt_store_status(fs->store, len);
		return *text ? 0 : -ENOMEM;
	}
	if (ckpt_store_error(fs->store, base - INO_ERROR_BASE, &name, text,
			     len) < 0)
		return -ENOENT;
	free(name);
	return 0;
}

int files_text(struct ckptfs *fs, fuse_ino_t base, fuse_ino_t *node,
	       size_t *len, int64_t *mtime_ns)
{
	static uint64_t generation; /* under files_lock */
	struct file *f = calloc(1, sizeof(*f)), *cur = NULL, *gone[FILES + 1];
	unsigned n = 0;
	int rc;

	if (!f)
		return -ENOMEM;
	rc = control_text(fs, base, &f->u.text.buf, &f->u.text.len);
	if (rc < 0) {
		free(f);
		return rc;
	}
	f->kind = K_TEXT;
	atomic_init(&f->refs, 1); /* ours, put below */
	pthread_mutex_lock(&files_lock);
	/* The newest text of this file, if it is still kept. */
	for (unsigned i = 0; i < FILES; i++) {
		struct file *x = texts.v[i];
		if (x && (x->ino & TEXT_BASE_MASK) == base &&
		    (!cur || x->ino > cur->ino))
			cur = x;
	}
	if (cur && cur->u.text.len == f->u.text.len &&
	    memcmp(cur->u.text.buf, f->u.text.buf, f->u.text.len) == 0) {
		cur->used = ++texts.tick;
		gone[n++] = f;
		f = cur;
	} else {
		f->ino = TEXT_BIT | ++generation << 20 | base;
		f->u.text.mtime_ns = ckpt_now_ns();
		f->cost = f->u.text.len;
		n = place(&texts, f, gone);
		gone[n++] = f; /* the table keeps it */
	}
	f->u.text.nlookup++;
	*node = f->ino;
	*len = f->u.text.len;
	*mtime_ns = f->u.text.mtime_ns;
	pthread_mutex_unlock(&files_lock);
	put_all(gone, n);
	return 0;
}

int files_text_attr(fuse_ino_t node, size_t *len, int64_t *mtime_ns)
{
	struct file *f;

	pthread_mutex_lock(&files_lock);
	f = lookup(&texts, node);
	if (f) {
		*len = f->u.text.len;
		*mtime_ns = f->u.text.mtime_ns;
	}
	pthread_mutex_unlock(&files_lock);
	file_put(f);
	return f ? 0 : -ESTALE;
}

/* Opens what ino names, outside the table. */
static int file_open(struct ckptfs *fs, fuse_ino_t ino, struct file **out,
		     struct ckpt_err *err)
{
	struct file *f;
	char path[4096];
	int rc = 0;

	if (is_text_ino(ino))
		return -ESTALE; /* evicted: taken again at the next lookup */
	f = calloc(1, sizeof(*f));
	if (!f)
		return -ENOMEM;
	f->ino = ino;
	atomic_init(&f->refs, 1);
	if (is_live(ino)) {
		f->kind = K_LIVE;
		rc = live_path(fs, ino, path, sizeof(path));
		if (rc == 0)
			rc = ckpt_live_open(&fs->save, path, &f->u.live.f, err);
		if (rc == 0)
			pthread_mutex_init(&f->u.live.lock, NULL);
	} else if (is_archive_ino(ino)) {
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

static int file_get(struct ckptfs *fs, fuse_ino_t ino, struct file **out,
		    struct ckpt_err *err)
{
	struct file *f, *gone[FILES];
	unsigned n;
	int rc;

	pthread_mutex_lock(&files_lock);
	f = lookup(table_of(ino), ino);
	pthread_mutex_unlock(&files_lock);
	if (f) {
		*out = f;
		return 0;
	}
	rc = file_open(fs, ino, &f, err);
	if (rc < 0)
		return rc;
	pthread_mutex_lock(&files_lock);
	n = place(&readers, f, gone);
	pthread_mutex_unlock(&files_lock);
	put_all(gone, n);
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
	if (n < 0)
		drop(ino, f);
	file_put(f);
	return n;
}

void files_forget(fuse_ino_t ino, uint64_t n)
{
	struct file *gone = NULL;

	if (!is_text_ino(ino)) {
		drop(ino, NULL);
		return;
	}
	pthread_mutex_lock(&files_lock);
	for (unsigned i = 0; i < FILES; i++) {
		struct file *x = texts.v[i];
		if (!x || x->ino != ino)
			continue;
		x->u.text.nlookup -=
			n < x->u.text.nlookup ? n : x->u.text.nlookup;
		if (x->u.text.nlookup == 0)
			gone = take(&texts, i);
		break;
	}
	pthread_mutex_unlock(&files_lock);
	file_put(gone);
}

void files_clear(void)
{
	pthread_mutex_lock(&files_lock);
	for (unsigned i = 0; i < FILES; i++) {
		file_put(take(&readers, i));
		file_put(take(&texts, i));
	}
	pthread_mutex_unlock(&files_lock);
}
