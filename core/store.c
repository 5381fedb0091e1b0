/*
 * store.c - the STORE directory: which checkpoints exist, and their
 * archives, opened at first use.
 *
 * Only regular files named NAME.ckpt with a valid NAME are checkpoints;
 * anything else in the directory (rsync's temporaries, links, FIFOs) is
 * ignored.  A checkpoint whose file changes identity (dev, inode, size,
 * times) is treated as replaced: its archive gets a new instance id, and
 * readers that hold the old archive keep reading the old file.  The store
 * is whatever directory its path names at each rescan (see attach()).
 * Locking: s->lock guards slots, inst and next_id; archives themselves
 * are immutable and refcounted.
 */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

#include "internal.h"

#define SUFFIX	    ".ckpt"
#define INDEXING    16	/* names indexed at once that others wait for */
#define NAME_BUF    256 /* a checkpoint name and its NUL */
#define RETIRED_MAX 8	/* replaced instances kept for the kernel's inodes */

struct journal;
static struct journal *journal_new(void);
static void journal_free(struct journal *j);
static char *journal_status(struct journal *j);

struct slot {
	char *name; /* checkpoint name, without the suffix */
	uint32_t key;
	struct stat st;		/* identity when scanned or opened */
	struct ckpt_archive *a; /* the store's reference, or NULL */
	bool refused;
	bool changed;	     /* during a refresh: new or replaced */
	struct ckpt_err why; /* when refused */
};

struct journal;

struct ckpt_store {
	int dirfd; /* the directory at path, as last attached */
	char *path;
	struct ckpt_store_opts o;
	pthread_rwlock_t lock;
	pthread_mutex_t refresh; /* one rescan at a time */
	struct slot *slots;	 /* sorted by name */
	size_t nslots;
	struct ckpt_archive **inst; /* by increasing id; NULL once dropped */
	size_t ninst, live;
	uint32_t next_id;
	struct journal *journal; /* saves, running and recent */
	/* Names changed by a refresh that had nobody to tell (one made from
	 * a request handler): reported by the next refresh that can.
	 * Guarded by refresh. */
	char **pending;
	size_t npending;
	/* Files this daemon wrote, scanned with its rules and allow list:
	 * the only parents whose bytes a save copies unread.  An archive
	 * from elsewhere may claim anything in its manifest.  Guarded by
	 * lock. */
	struct {
		dev_t dev;
		ino_t ino;
	} * written;
	size_t nwritten;
	/* Names being indexed now: a second thread waits for the first
	 * rather than indexing the same archive again (a refused one with a
	 * large manifest would cost its size in memory once per thread). */
	pthread_mutex_t indexing_lock;
	pthread_cond_t indexed;
	char indexing[INDEXING][NAME_BUF];
	unsigned nindexing;
	_Atomic int64_t changed_ns; /* see ckpt_store_changed_ns */
	size_t retired;		    /* instances kept for pins alone */
	uint64_t poisonings;	    /* archive_poisonings() last seen */
};

/* Marks a change to the listings; the clock never repeats a value, so a
 * change within one tick of the last is still seen. */
static void touch(struct ckpt_store *s)
{
	int64_t was = atomic_load(&s->changed_ns), now = ckpt_now_ns();

	while (!atomic_compare_exchange_weak(&s->changed_ns, &was,
					     now > was ? now : was + 1))
		;
}

int64_t ckpt_store_changed_ns(struct ckpt_store *s)
{
	/* An archive found broken leaves the listing at its next lookup;
	 * a listing the kernel cached must be dropped now. */
	uint64_t p = archive_poisonings();

	if (__atomic_exchange_n(&s->poisonings, p, __ATOMIC_RELAXED) != p)
		touch(s);
	return atomic_load(&s->changed_ns);
}

/* Whether another thread is indexing name; caller holds indexing_lock. */
static bool indexing_busy(const struct ckpt_store *s, const char *name)
{
	for (unsigned i = 0; i < s->nindexing; i++)
		if (strcmp(s->indexing[i], name) == 0)
			return true;
	return false;
}

/* Claims name for indexing; false when another thread is indexing it
 * (then it has waited until that one finished, and the caller looks
 * again).  Without room to record it, indexing goes ahead regardless. */
static bool indexing_claim(struct ckpt_store *s, const char *name)
{
	bool mine = true;

	pthread_mutex_lock(&s->indexing_lock);
	while (indexing_busy(s, name)) {
		mine = false;
		pthread_cond_wait(&s->indexed, &s->indexing_lock);
	}
	if (mine && s->nindexing < INDEXING)
		snprintf(s->indexing[s->nindexing++], NAME_BUF, "%s", name);
	pthread_mutex_unlock(&s->indexing_lock);
	return mine;
}

static void indexing_done(struct ckpt_store *s, const char *name)
{
	pthread_mutex_lock(&s->indexing_lock);
	for (unsigned i = 0; i < s->nindexing; i++)
		if (strcmp(s->indexing[i], name) == 0) {
			memmove(s->indexing[i], s->indexing[i + 1],
				(s->nindexing - i - 1) *
					sizeof(s->indexing[0]));
			s->nindexing--;
			break;
		}
	pthread_cond_broadcast(&s->indexed);
	pthread_mutex_unlock(&s->indexing_lock);
}

static bool same_file(const struct stat *a, const struct stat *b)
{
	return a->st_dev == b->st_dev && a->st_ino == b->st_ino &&
	       a->st_size == b->st_size &&
	       a->st_mtim.tv_sec == b->st_mtim.tv_sec &&
	       a->st_mtim.tv_nsec == b->st_mtim.tv_nsec &&
	       a->st_ctim.tv_sec == b->st_ctim.tv_sec &&
	       a->st_ctim.tv_nsec == b->st_ctim.tv_nsec;
}

static int cmp_slot(const void *x, const void *y)
{
	return strcmp(((const struct slot *)x)->name,
		      ((const struct slot *)y)->name);
}

static struct slot *find(struct slot *slots, size_t n, const char *name)
{
	struct slot key = {.name = (char *)name};

	/* An empty store has no array at all. */
	return n ? bsearch(&key, slots, n, sizeof(key), cmp_slot) : NULL;
}

static void slot_free(struct slot *sl)
{
	free(sl->name);
	ckpt_archive_unref(sl->a);
}

/*
 * The kernel forgets the inodes of a checkpoint that is no longer looked
 * up only under memory pressure, so retired instances (each an index and
 * an open descriptor, which also keeps a deleted file's space in use)
 * could pile up for good under periodic checkpoints and pruning.  Past
 * RETIRED_MAX the oldest one goes: what the kernel still holds of it
 * answers ESTALE, as it would without pins.  Caller holds the write lock.
 */
static void retire_oldest(struct ckpt_store *s)
{
	for (size_t i = 0; i < s->ninst && s->retired > RETIRED_MAX; i++) {
		struct ckpt_archive *a = s->inst[i];
		if (!a || !a->retired)
			continue;
		a->retired = false;
		s->retired--;
		s->inst[i] = NULL;
		s->live--;
		ckpt_archive_unref(a); /* the table's; no lock is taken */
	}
}

/* Removes an archive from the id table, or retires it there while the
 * kernel still holds names in it (the table then owns a reference);
 * caller holds the write lock.  Rare (a replace or removal), so a linear
 * scan is fine. */
static void drop_instance(struct ckpt_store *s, struct ckpt_archive *a)
{
	if (atomic_load(&a->pins) > 0 && !a->retired) {
		ckpt_archive_ref(a);
		a->retired = true;
		s->retired++;
		retire_oldest(s);
		return;
	}
	if (a->retired) {
		a->retired = false;
		s->retired--;
	}
	for (size_t i = 0; i < s->ninst; i++)
		if (s->inst[i] == a) {
			s->inst[i] = NULL;
			s->live--;
			break;
		}
	/* Compact when most of the table is holes. */
	if (s->live * 2 < s->ninst) {
		size_t j = 0;
		for (size_t i = 0; i < s->ninst; i++)
			if (s->inst[i])
				s->inst[j++] = s->inst[i];
		s->ninst = j;
	}
}

/*
 * The store is the directory at the path given at mount, not the inode
 * opened then: a store removed and created again (rm -rf, then a restore
 * from a backup) is followed, and one moved away is no longer served.
 * Swapping the descriptor in place with dup3 keeps s->dirfd valid for
 * the requests using it meanwhile; they reach the old directory or the
 * new one.  Caller holds s->refresh.
 */
static int attach(struct ckpt_store *s)
{
	struct stat cur, at;
	int fd, rc = 0;

	if (fstatat(AT_FDCWD, s->path, &at, AT_SYMLINK_NOFOLLOW) < 0)
		return -errno;
	if (!S_ISDIR(at.st_mode))
		return -ENOTDIR;
	/* A removed directory has no links; its inode number may already
	 * belong to the new one. */
	if (fstat(s->dirfd, &cur) == 0 && cur.st_nlink > 0 &&
	    cur.st_dev == at.st_dev && cur.st_ino == at.st_ino)
		return 0;
	fd = open(s->path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (dup3(fd, s->dirfd, O_CLOEXEC) < 0)
		rc = -errno;
	close(fd);
	return rc;
}

static int scan(struct ckpt_store *s, struct slot **out, size_t *n)
{
	int fd = openat(s->dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	struct slot *v = NULL;
	size_t cnt = 0, cap = 0;
	struct dirent *de;
	DIR *d;

	if (fd < 0)
		return -errno;
	d = fdopendir(fd);
	if (!d) {
		close(fd);
		return -ENOMEM;
	}
	while ((de = readdir(d))) {
		size_t len = strlen(de->d_name);
		struct stat st;

		if (len <= sizeof(SUFFIX) - 1 ||
		    strcmp(de->d_name + len - (sizeof(SUFFIX) - 1), SUFFIX) !=
			    0 ||
		    ckpt_name_check(de->d_name, len - (sizeof(SUFFIX) - 1)) < 0)
			continue;
		if (fstatat(s->dirfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) <
			    0 ||
		    !S_ISREG(st.st_mode))
			continue;
		if (cnt == cap) {
			struct slot *nv;
			cap = cap ? cap * 2 : 64;
			nv = realloc(v, cap * sizeof(*v));
			if (!nv)
				goto nomem;
			v = nv;
		}
		memset(&v[cnt], 0, sizeof(v[cnt]));
		v[cnt].name = strndup(de->d_name, len - (sizeof(SUFFIX) - 1));
		if (!v[cnt].name)
			goto nomem;
		v[cnt++].st = st;
	}
	closedir(d);
	if (cnt)
		qsort(v, cnt, sizeof(*v), cmp_slot);
	*out = v;
	*n = cnt;
	return 0;
nomem:
	closedir(d);
	for (size_t i = 0; i < cnt; i++)
		free(v[i].name);
	free(v);
	return -ENOMEM;
}

static bool key_used(const struct slot *v, size_t n, uint32_t key)
{
	for (size_t i = 0; i < n; i++)
		if (v[i].key == key)
			return true;
	return false;
}

/* Remembers a changed name for the next refresh that has a callback;
 * caller holds s->refresh. */
static void queue(struct ckpt_store *s, const char *name)
{
	char **p;

	/* Bounded: past this, the kernel's timeouts cover what is lost. */
	if (s->npending >= 4096)
		return;
	p = realloc(s->pending, (s->npending + 1) * sizeof(*p));
	if (!p)
		return;
	s->pending = p;
	if ((p[s->npending] = strdup(name)))
		s->npending++;
}

int ckpt_store_refresh(struct ckpt_store *s,
		       void (*changed)(void *ctx, const char *name), void *ctx)
{
	struct slot *nv = NULL, *old;
	char **todo = NULL;
	size_t nn = 0, no, ntodo = 0;
	bool any = false;
	int rc;

	pthread_mutex_lock(&s->refresh);
	rc = attach(s);
	if (rc == 0)
		rc = scan(s, &nv, &nn);
	if (rc < 0) {
		/* The store vanished or became unreadable: show nothing
		 * rather than stale checkpoints. */
		nv = NULL;
		nn = 0;
	}
	pthread_rwlock_wrlock(&s->lock);
	old = s->slots;
	no = s->nslots;
	for (size_t i = 0; i < nn; i++) {
		struct slot *o = find(old, no, nv[i].name);
		nv[i].changed = !o || !same_file(&o->st, &nv[i].st);
		if (o && !nv[i].changed) {
			nv[i].a = o->a;
			nv[i].refused = o->refused;
			nv[i].why = o->why;
			o->a = NULL;
		}
		if (o)
			nv[i].key = o->key; /* a name keeps its key */
	}
	/* New names get keys in name order, so a fresh mount of the same
	 * store assigns the same ones. */
	for (size_t i = 0; i < nn; i++) {
		uint32_t k;
		if (nv[i].key)
			continue;
		k = XXH32(nv[i].name, strlen(nv[i].name), 0);
		while (k == 0 || key_used(nv, nn, k))
			k++;
		nv[i].key = k;
	}
	for (size_t i = 0; i < no; i++)
		if (old[i].a)
			drop_instance(s, old[i].a);
	s->slots = nv;
	s->nslots = nn;
	pthread_rwlock_unlock(&s->lock);

	/* Every change is queued; callbacks run after the refresh lock is
	 * dropped: a callback that notifies the kernel can wait on a
	 * request that is itself waiting to refresh (a mkdir). */
	for (size_t i = 0; i < nn; i++)
		if (nv[i].changed) {
			queue(s, nv[i].name);
			any = true;
		}
	for (size_t i = 0; i < no; i++) {
		if (!find(nv, nn, old[i].name)) {
			queue(s, old[i].name);
			any = true;
		}
		slot_free(&old[i]);
	}
	if (any)
		touch(s);
	free(old);
	if (changed) {
		todo = s->pending;
		ntodo = s->npending;
		s->pending = NULL;
		s->npending = 0;
	}
	pthread_mutex_unlock(&s->refresh);
	for (size_t i = 0; i < ntodo; i++) {
		changed(ctx, todo[i]);
		free(todo[i]);
	}
	free(todo);
	return rc;
}

int ckpt_store_open(const char *dir, const struct ckpt_store_opts *opts,
		    struct ckpt_store **out, struct ckpt_err *err)
{
	struct ckpt_store *s = calloc(1, sizeof(*s));

	if (!s)
		return -ENOMEM;
	s->o = *opts;
	s->next_id = 1;
	/* Absolute and free of links: see attach(). */
	s->path = realpath(dir, NULL);
	s->dirfd = s->path ? open(s->path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
			   : -1;
	if (s->dirfd < 0) {
		int e = -errno;
		free(s->path);
		free(s);
		return ckpt_err_set(err, e, "store", dir, strlen(dir),
				    "cannot open the store: %s", strerror(-e));
	}
	pthread_rwlock_init(&s->lock, NULL);
	pthread_mutex_init(&s->indexing_lock, NULL);
	pthread_cond_init(&s->indexed, NULL);
	pthread_mutex_init(&s->refresh, NULL);
	s->journal = journal_new();
	if (!s->journal) {
		close(s->dirfd);
		free(s->path);
		free(s);
		return -ENOMEM;
	}
	/* Saves that crashed left temporaries; they are never shown, and
	 * nobody will finish them. */
	ckpt_save_cleanup(s->dirfd);
	touch(s);
	ckpt_store_refresh(s, NULL, NULL);
	*out = s;
	return 0;
}

void ckpt_store_close(struct ckpt_store *s)
{
	if (!s)
		return;
	/* Retired instances first: the table's references are the only
	 * ones left to them, while the slots' may be the last of others. */
	for (size_t i = 0; i < s->ninst; i++)
		if (s->inst[i] && s->inst[i]->retired)
			ckpt_archive_unref(s->inst[i]);
	free(s->inst);
	for (size_t i = 0; i < s->nslots; i++)
		slot_free(&s->slots[i]);
	free(s->slots);
	journal_free(s->journal);
	for (size_t i = 0; i < s->npending; i++)
		free(s->pending[i]);
	free(s->pending);
	free(s->written);
	close(s->dirfd);
	free(s->path);
	pthread_rwlock_destroy(&s->lock);
	pthread_mutex_destroy(&s->indexing_lock);
	pthread_cond_destroy(&s->indexed);
	pthread_mutex_destroy(&s->refresh);
	free(s);
}

/* A poisoned archive becomes a refused slot; caller holds the write lock. */
static void retire_poisoned(struct ckpt_store *s, struct slot *sl)
{
	struct ckpt_archive *a = sl->a;

	sl->refused = true;
	sl->why = a->poison;
	sl->a = NULL;
	drop_instance(s, a);
	ckpt_archive_unref(a);
	touch(s);
}

int ckpt_store_get(struct ckpt_store *s, const char *name,
		   struct ckpt_archive **out, struct ckpt_err *err)
{
	char file[256];
	struct ckpt_archive *a = NULL;
	struct slot *sl;
	struct stat st;
	int rc;

	bool poisoned = false, fresh = false, gone = false;
	struct ckpt_err local;

	/* The reason is kept for the status file even when the caller
	 * does not want it. */
	if (!err)
		err = &local;

again:
	pthread_rwlock_rdlock(&s->lock);
	sl = find(s->slots, s->nslots, name);
	rc = 0;
	if (!sl) {
		rc = -ENOENT;
	} else if (sl->a) {
		poisoned = atomic_load(&sl->a->poisoned) == 1;
		if (!poisoned) {
			ckpt_archive_ref(sl->a);
			*out = sl->a;
			pthread_rwlock_unlock(&s->lock);
			return 0;
		}
	} else if (sl->refused) {
		*err = sl->why;
		rc = -ENOENT;
	} else {
		st = sl->st;
	}
	pthread_rwlock_unlock(&s->lock);
	if (poisoned) {
		pthread_rwlock_wrlock(&s->lock);
		sl = find(s->slots, s->nslots, name);
		if (sl && sl->a && atomic_load(&sl->a->poisoned) == 1)
			retire_poisoned(s, sl);
		if (sl && sl->refused)
			*err = sl->why;
		pthread_rwlock_unlock(&s->lock);
		return -ENOENT;
	}
	if (rc < 0)
		return rc;

	/* Indexing happens unlocked, one thread per name; another that
	 * wants the same one waits, then finds it published (or refused). */
	if (!indexing_claim(s, name))
		goto again;
	snprintf(file, sizeof(file), "%s" SUFFIX, name);
	rc = ckpt_archive_open(s->dirfd, file, &s->o.limits, s->o.policy_flags,
			       &a, err);
	if (rc < 0 && rc != -ENOMEM) {
		/* A file removed or still being written since the scan is
		 * not refused: the rescan its change causes looks again. */
		struct stat now;
		gone = fstatat(s->dirfd, file, &now, AT_SYMLINK_NOFOLLOW) < 0 ||
		       !same_file(&now, &st);
		if (gone)
			memset(err, 0, sizeof(*err));
	}

	pthread_rwlock_wrlock(&s->lock);
	sl = find(s->slots, s->nslots, name);
	if (!sl || !same_file(&sl->st, &st) || gone) {
		rc = -ENOENT; /* replaced meanwhile: the next call retries */
	} else if (sl->a) {
		ckpt_archive_unref(a);
		a = sl->a;
		rc = 0;
	} else if (rc < 0) {
		fresh = true;
		sl->refused = true;
		sl->why = *err;
		touch(s);
	} else {
		struct ckpt_archive **inst = s->inst;
		if (s->ninst % 64 == 0)
			inst = realloc(s->inst,
				       (s->ninst + 64) * sizeof(*s->inst));
		if (!inst) {
			rc = -ENOMEM;
		} else {
			s->inst = inst;
			a->id = s->next_id++;
			a->key = sl->key;
			a->name = strdup(name);
			s->inst[s->ninst++] = a;
			s->live++;
			sl->a = a;
			fresh = true;
		}
	}
	if (rc == 0)
		ckpt_archive_ref(a); /* the caller's */
	pthread_rwlock_unlock(&s->lock);
	indexing_done(s, name);
	if (fresh && s->o.opened)
		s->o.opened(s->o.ctx, name, rc == 0 ? a : NULL, err);
	if (rc < 0 && a && (!sl || sl->a != a))
		ckpt_archive_unref(a);
	if (rc < 0)
		return rc == -ENOMEM ? rc : -ENOENT;
	*out = a;
	return 0;
}

/* The slot of instance id in the table, or ninst; caller holds the lock. */
static size_t inst_find(const struct ckpt_store *s, uint32_t id)
{
	/* Ids increase along the table; holes are skipped linearly, which
	 * compaction keeps short. */
	size_t lo = 0, hi = s->ninst;

	while (lo < hi) {
		size_t mid = (lo + hi) / 2, k = mid;
		while (k < hi && !s->inst[k])
			k++;
		if (k == hi) {
			hi = mid;
			continue;
		}
		if (s->inst[k]->id == id)
			return k;
		if (s->inst[k]->id < id)
			lo = k + 1;
		else
			hi = mid;
	}
	return s->ninst;
}

int ckpt_store_get_id(struct ckpt_store *s, uint32_t id,
		      struct ckpt_archive **out)
{
	int rc = -ESTALE;
	size_t k;

	pthread_rwlock_rdlock(&s->lock);
	k = inst_find(s, id);
	if (k < s->ninst && atomic_load(&s->inst[k]->poisoned) == 1) {
		rc = -EIO; /* found broken since: see archive_poison */
	} else if (k < s->ninst) {
		ckpt_archive_ref(s->inst[k]);
		*out = s->inst[k];
		rc = 0;
	}
	pthread_rwlock_unlock(&s->lock);
	return rc;
}

int ckpt_store_pin(struct ckpt_store *s, struct ckpt_archive *a, uint64_t n)
{
	size_t k;
	int rc = -ESTALE;

	/* Under the lock, so that a drop cannot slip in between finding
	 * the archive unpinned and counting the pin. */
	pthread_rwlock_rdlock(&s->lock);
	k = inst_find(s, a->id);
	if (k < s->ninst && s->inst[k] == a) {
		atomic_fetch_add(&a->pins, n);
		rc = 0;
	}
	pthread_rwlock_unlock(&s->lock);
	return rc;
}

void ckpt_store_unpin(struct ckpt_store *s, uint32_t id, uint64_t n)
{
	struct ckpt_archive *gone = NULL;
	bool last = false;
	size_t k;

	pthread_rwlock_rdlock(&s->lock);
	k = inst_find(s, id);
	if (k < s->ninst) {
		struct ckpt_archive *a = s->inst[k];
		uint64_t was = atomic_load(&a->pins);
		/* Never below zero, whatever the kernel sends. */
		while (!atomic_compare_exchange_weak(&a->pins, &was,
						     was > n ? was - n : 0))
			;
		last = was <= n && a->retired;
	}
	pthread_rwlock_unlock(&s->lock);
	if (!last)
		return;
	pthread_rwlock_wrlock(&s->lock);
	k = inst_find(s, id);
	if (k < s->ninst && s->inst[k]->retired &&
	    atomic_load(&s->inst[k]->pins) == 0) {
		gone = s->inst[k];
		drop_instance(s, gone);
	}
	pthread_rwlock_unlock(&s->lock);
	ckpt_archive_unref(gone); /* the table's */
}

int ckpt_store_next(struct ckpt_store *s, size_t *pos,
		    struct ckpt_archive **out)
{
	for (size_t i = *pos;; i++) {
		char name[256];

		pthread_rwlock_rdlock(&s->lock);
		if (i >= s->nslots) {
			pthread_rwlock_unlock(&s->lock);
			return -ENOENT;
		}
		snprintf(name, sizeof(name), "%s", s->slots[i].name);
		pthread_rwlock_unlock(&s->lock);
		if (ckpt_store_get(s, name, out, NULL) == 0) {
			*pos = i;
			return 0;
		}
	}
}

int ckpt_store_latest(struct ckpt_store *s, struct ckpt_archive **out)
{
	struct ckpt_archive *best = NULL, *a;

	for (size_t pos = 0; ckpt_store_next(s, &pos, &a) == 0; pos++) {
		/* Ties go to the later name, so the choice is stable. */
		if (!best || a->created_ns >= best->created_ns) {
			ckpt_archive_unref(best);
			best = a;
		} else {
			ckpt_archive_unref(a);
		}
	}
	if (!best)
		return -ENOENT;
	*out = best;
	return 0;
}

void ckpt_store_usage(struct ckpt_store *s, uint64_t *bytes, uint64_t *count)
{
	pthread_rwlock_rdlock(&s->lock);
	*bytes = 0;
	*count = s->nslots;
	for (size_t i = 0; i < s->nslots; i++)
		*bytes += (uint64_t)s->slots[i].st.st_size;
	pthread_rwlock_unlock(&s->lock);
}

static char *status_line(const char *name, const struct ckpt_archive *a,
			 const struct ckpt_err *why)
{
	cJSON *o = cJSON_CreateObject();
	char *line = NULL;

	if (!o)
		return NULL;
	cJSON_AddStringToObject(o, "name", name);
	if (a) {
		struct ckpt_hidden h[HIDDEN_RULES];
		size_t n = ckpt_archive_hidden(a, h, HIDDEN_RULES);
		cJSON *hid = cJSON_CreateObject();

		cJSON_AddStringToObject(o, "result", "ok");
		cJSON_AddNumberToObject(o, "nodes", a->nnodes);
		for (size_t i = 0; i < n; i++)
			cJSON_AddNumberToObject(hid, h[i].rule, h[i].count);
		cJSON_AddItemToObject(o, "hidden", hid);
		if (n) {
			cJSON *ex = cJSON_CreateObject();
			for (size_t i = 0; i < n; i++)
				cJSON_AddStringToObject(ex, h[i].rule,
							h[i].sample);
			cJSON_AddItemToObject(o, "hidden_example", ex);
		}
	} else {
		cJSON_AddStringToObject(o, "result", "refused");
		cJSON_AddStringToObject(o, "rule", why->rule);
		cJSON_AddStringToObject(o, "reason", why->msg);
		if (why->path[0])
			cJSON_AddStringToObject(o, "path", why->path);
	}
	line = cJSON_PrintUnformatted(o);
	cJSON_Delete(o);
	return line;
}

char *ckpt_store_status(struct ckpt_store *s, size_t *lenp)
{
	char *out = NULL;
	size_t len = 0;

	for (size_t i = 0;; i++) {
		char name[256];
		struct ckpt_archive *a = NULL;
		struct ckpt_err why = {0};
		char *line, *grown;

		pthread_rwlock_rdlock(&s->lock);
		if (i >= s->nslots) {
			pthread_rwlock_unlock(&s->lock);
			break;
		}
		snprintf(name, sizeof(name), "%s", s->slots[i].name);
		pthread_rwlock_unlock(&s->lock);
		if (ckpt_store_get(s, name, &a, &why) < 0)
			a = NULL;
		if (!a && !why.rule[0])
			continue; /* vanished meanwhile */
		line = status_line(name, a, &why);
		ckpt_archive_unref(a);
		if (!line)
			goto nomem;
		grown = realloc(out, len + strlen(line) + 2);
		if (!grown) {
			cJSON_free(line);
			goto nomem;
		}
		out = grown;
		len += (size_t)sprintf(out + len, "%s\n", line);
		cJSON_free(line);
	}
	char *saves = journal_status(s->journal);
	if (saves) {
		char *grown = realloc(out, len + strlen(saves) + 1);
		if (grown) {
			out = grown;
			len += (size_t)sprintf(out + len, "%s", saves);
		}
		free(saves);
	}
	if (!out)
		out = strdup("");
	*lenp = len;
	return out;
nomem:
	free(out);
	return NULL;
}

/* ---- changing the store ------------------------------------------------ */

#define JOURNAL	   32
#define MAX_ERRORS 1024
#define POINTER	   "checkpoint.json"

/* One save, running or recent, for the status file. */
struct outcome {
	char name[256]; /* as asked, valid or not: the kernel allows 255 */
	int64_t start_ns, end_ns;
	bool running;
	int rc;
	struct ckpt_err why;
	struct ckpt_save_result res;
	struct ckpt_save_progress pg;
};

/* The last refusal of each name, for errors/NAME; slots are never reused,
 * so a name keeps its position (and inode) for the life of the mount. */
struct refusal {
	char *name;
	char *text; /* NULL once a save of the name succeeded */
};

struct journal {
	pthread_mutex_t lock;
	struct outcome *o[JOURNAL]; /* ring, newest at (head - 1) */
	size_t head;
	struct refusal *r;
	size_t nr;
};

static const char *refusal_code(const struct ckpt_err *e);

static struct journal *journal_of(struct ckpt_store *s)
{
	return s->journal;
}

static struct journal *journal_new(void)
{
	struct journal *j = calloc(1, sizeof(*j));

	if (j)
		pthread_mutex_init(&j->lock, NULL);
	return j;
}

static void journal_free(struct journal *j)
{
	if (!j)
		return;
	for (size_t i = 0; i < JOURNAL; i++)
		free(j->o[i]);
	for (size_t i = 0; i < j->nr; i++) {
		free(j->r[i].name);
		cJSON_free(j->r[i].text);
	}
	free(j->r);
	pthread_mutex_destroy(&j->lock);
	free(j);
}

/* One line per save, oldest first: name, time, result, reason, files and
 * bytes done and total, duration. */
static char *journal_status(struct journal *j)
{
	char *out = NULL;
	size_t len = 0;

	pthread_mutex_lock(&j->lock);
	for (size_t i = 0; i < JOURNAL; i++) {
		struct outcome *o = j->o[(j->head + i) % JOURNAL];
		char when[40], *line, *grown;
		cJSON *x;

		if (!o)
			continue;
		x = cJSON_CreateObject();
		ckpt_format_time(o->start_ns, when);
		cJSON_AddStringToObject(x, "save", o->name);
		cJSON_AddStringToObject(x, "time", when);
		cJSON_AddStringToObject(x, "result",
					o->running   ? "running"
					: o->rc == 0 ? "ok"
						     : refusal_code(&o->why));
		if (!o->running && o->rc < 0) {
			cJSON_AddStringToObject(x, "reason", o->why.msg);
			if (o->why.path[0])
				cJSON_AddStringToObject(x, "path", o->why.path);
		}
		cJSON_AddNumberToObject(x, "files_done",
					(double)atomic_load(&o->pg.files_done));
		cJSON_AddNumberToObject(
			x, "files_total",
			(double)atomic_load(&o->pg.files_total));
		cJSON_AddNumberToObject(x, "bytes_done",
					(double)atomic_load(&o->pg.bytes_done));
		cJSON_AddNumberToObject(
			x, "bytes_total",
			(double)atomic_load(&o->pg.bytes_total));
		if (!o->running) {
			cJSON_AddNumberToObject(x, "files_copied",
						(double)o->res.copied);
			cJSON_AddNumberToObject(x, "skipped",
						(double)o->res.skipped);
		}
		cJSON_AddNumberToObject(
			x, "duration",
			(double)((o->running ? ckpt_now_ns() : o->end_ns) -
				 o->start_ns) /
				1e9);
		line = cJSON_PrintUnformatted(x);
		cJSON_Delete(x);
		grown = line ? realloc(out, len + strlen(line) + 2) : NULL;
		if (grown) {
			out = grown;
			len += (size_t)sprintf(out + len, "%s\n", line);
		}
		cJSON_free(line);
	}
	pthread_mutex_unlock(&j->lock);
	return out;
}

int64_t ckpt_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Claims a journal slot for a save of name; -EEXIST while one runs. */
static int journal_start(struct journal *j, const char *name,
			 struct outcome **out)
{
	struct outcome *o = calloc(1, sizeof(*o));
	size_t slot = JOURNAL;

	if (!o)
		return -ENOMEM;
	pthread_mutex_lock(&j->lock);
	for (size_t i = 0; i < JOURNAL; i++) {
		struct outcome *x = j->o[(j->head + i) % JOURNAL];
		if (x && x->running && strcmp(x->name, name) == 0) {
			pthread_mutex_unlock(&j->lock);
			free(o);
			return -EEXIST;
		}
	}
	/* The oldest finished slot; running saves are never evicted. */
	for (size_t i = 0; i < JOURNAL && slot == JOURNAL; i++) {
		size_t k = (j->head + i) % JOURNAL;
		if (!j->o[k] || !j->o[k]->running)
			slot = k;
	}
	if (slot == JOURNAL) {
		pthread_mutex_unlock(&j->lock);
		free(o);
		return -EBUSY;
	}
	free(j->o[slot]);
	snprintf(o->name, sizeof(o->name), "%s", name);
	o->start_ns = ckpt_now_ns();
	o->running = true;
	j->o[slot] = o;
	j->head = (slot + 1) % JOURNAL;
	pthread_mutex_unlock(&j->lock);
	*out = o;
	return 0;
}

static const char *refusal_code(const struct ckpt_err *e)
{
	switch (-e->code) {
	case EPERM:
		return e->fingerprint[0] ? "secret_detected" : "policy_denied";
	case EEXIST:
		return "name_taken";
	case EINVAL:
		return "bad_name";
	case ENAMETOOLONG:
		return "name_too_long";
	case ENOSPC:
	case EDQUOT:
		return "no_space";
	case EROFS:
		return "read_only";
	default:
		return "io_error";
	}
}

static const char *refusal_fix(const struct ckpt_err *e)
{
	switch (-e->code) {
	case EPERM:
		return e->fingerprint[0]
			       ? "Remove the secret from the file, exclude the "
				 "file (exclude_from), or, if it is a reviewed "
				 "false positive, add the fingerprint to the "
				 "secrets_allow file."
			       : "The origin rules forbid this change.";
	case EEXIST:
		return "Choose another name.";
	case EINVAL:
	case ENAMETOOLONG:
		return "Use 1-200 characters of [A-Za-z0-9._+@-], not starting "
		       "with '.' or '-'.";
	case ENOSPC:
	case EDQUOT:
		return "Free space in the store; nothing was left behind.";
	default:
		return "See the daemon's log; nothing was left behind.";
	}
}

static char *refusal_text(const char *name, const struct ckpt_err *e)
{
	cJSON *o = cJSON_CreateObject();
	char *text;

	if (!o)
		return NULL;
	cJSON_AddStringToObject(o, "name", name);
	cJSON_AddStringToObject(o, "code", refusal_code(e));
	cJSON_AddStringToObject(o, "reason", e->msg);
	if (e->rule[0])
		cJSON_AddStringToObject(o, "rule", e->rule);
	if (e->path[0])
		cJSON_AddStringToObject(o, "path", e->path);
	if (e->line)
		cJSON_AddNumberToObject(o, "line", e->line);
	if (e->fingerprint[0])
		cJSON_AddStringToObject(o, "fingerprint", e->fingerprint);
	cJSON_AddStringToObject(o, "fix", refusal_fix(e));
	text = cJSON_Print(o);
	cJSON_Delete(o);
	return text;
}

/* Keeps text as errors/NAME (or clears it after a success); returns what
 * the caller still has to free.  Caller holds j->lock. */
static char *record_refusal(struct journal *j, const char *name, int rc,
			    char *text)
{
	size_t i;

	for (i = 0; i < j->nr; i++)
		if (strcmp(j->r[i].name, name) == 0)
			break;
	if (i == j->nr && rc < 0 && j->nr < MAX_ERRORS) {
		struct refusal *r = realloc(j->r, (j->nr + 1) * sizeof(*r));
		if (r && (r[j->nr].name = strdup(name))) {
			r[j->nr].text = NULL;
			j->r = r;
			j->nr++;
		} else if (r) {
			j->r = r;
		}
	}
	if (i < j->nr) {
		cJSON_free(j->r[i].text);
		j->r[i].text = text; /* NULL after a success */
		text = NULL;
	}
	return text;
}

static void journal_end(struct ckpt_store *s, struct outcome *o, int rc,
			const struct ckpt_err *why,
			const struct ckpt_save_result *res)
{
	struct journal *j = journal_of(s);
	char *text = rc < 0 ? refusal_text(o->name, why) : NULL;

	pthread_mutex_lock(&j->lock);
	o->running = false;
	o->rc = rc;
	o->end_ns = ckpt_now_ns();
	if (why)
		o->why = *why;
	if (res)
		o->res = *res;
	text = record_refusal(j, o->name, rc, text);
	pthread_mutex_unlock(&j->lock);
	cJSON_free(text);
	touch(s);
}

void ckpt_store_note(struct ckpt_store *s, const char *name,
		     const struct ckpt_err *why)
{
	struct journal *j = journal_of(s);
	char *text = refusal_text(name, why);

	pthread_mutex_lock(&j->lock);
	text = record_refusal(j, name, why->code, text);
	pthread_mutex_unlock(&j->lock);
	cJSON_free(text);
	touch(s);
}

/* Rewrites STORE/checkpoint.json to name the newest checkpoint, atomically,
 * for harnesses that resume a crashed run; removes it when none is left. */
static void write_pointer(struct ckpt_store *s)
{
	struct ckpt_archive *a;
	char tmp[64], when[40];
	char *text;
	cJSON *o;
	int fd;

	if (ckpt_store_latest(s, &a) < 0) {
		unlinkat(s->dirfd, POINTER, 0);
		return;
	}
	o = cJSON_CreateObject();
	ckpt_format_time(a->created_ns, when);
	cJSON_AddStringToObject(o, "latest", a->name);
	{
		char file[256];
		snprintf(file, sizeof(file), "%s" SUFFIX, a->name);
		cJSON_AddStringToObject(o, "file", file);
	}
	cJSON_AddStringToObject(o, "created", when);
	cJSON_AddStringToObject(o, "origin", a->origin ? a->origin : "user");
	ckpt_archive_unref(a);
	text = cJSON_Print(o);
	cJSON_Delete(o);
	if (!text)
		return;
	snprintf(tmp, sizeof(tmp), "." POINTER ".tmp-%ld", (long)getpid());
	fd = openat(s->dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
		    0644);
	if (fd >= 0) {
		size_t len = strlen(text);
		bool ok = write(fd, text, len) == (ssize_t)len &&
			  write(fd, "\n", 1) == 1 && fsync(fd) == 0;
		ok = close(fd) == 0 && ok;
		if (ok && renameat(s->dirfd, tmp, s->dirfd, POINTER) == 0)
			fsync(s->dirfd);
		else
			unlinkat(s->dirfd, tmp, 0);
	}
	cJSON_free(text);
}

static bool self_written(struct ckpt_store *s, const struct stat *st)
{
	bool found = false;

	pthread_rwlock_rdlock(&s->lock);
	for (size_t i = 0; i < s->nwritten && !found; i++)
		found = s->written[i].dev == st->st_dev &&
			s->written[i].ino == st->st_ino;
	pthread_rwlock_unlock(&s->lock);
	return found;
}

static void remember_written(struct ckpt_store *s, const char *file)
{
	struct stat st;
	void *p;

	if (fstatat(s->dirfd, file, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return;
	pthread_rwlock_wrlock(&s->lock);
	p = realloc(s->written, (s->nwritten + 1) * sizeof(*s->written));
	if (p) {
		s->written = p;
		s->written[s->nwritten].dev = st.st_dev;
		s->written[s->nwritten].ino = st.st_ino;
		s->nwritten++;
	}
	pthread_rwlock_unlock(&s->lock);
}

static bool has_name(struct ckpt_store *s, const char *name)
{
	bool found;

	pthread_rwlock_rdlock(&s->lock);
	found = find(s->slots, s->nslots, name) != NULL;
	pthread_rwlock_unlock(&s->lock);
	return found;
}

int ckpt_store_save(struct ckpt_store *s, const char *name, const char *origin,
		    const struct ckpt_save_opts *base,
		    struct ckpt_save_result *res, struct ckpt_err *err)
{
	struct journal *j = journal_of(s);
	struct ckpt_save_opts o = *base;
	struct ckpt_save_result r;
	struct ckpt_archive *parent = NULL;
	struct ckpt_err local;
	struct outcome *out = NULL;
	char file[256];
	int rc;

	if (!err)
		err = &local;
	memset(err, 0, sizeof(*err));
	memset(&r, 0, sizeof(r));
	rc = journal_start(j, name, &out);
	if (rc < 0) {
		ckpt_err_set(err, rc, "name", name, strlen(name),
			     rc == -EBUSY ? "too many saves at once"
					  : "a save of that name is running");
		ckpt_store_note(s, name, err);
		return rc;
	}
	rc = ckpt_name_check(name, strlen(name));
	if (rc < 0)
		ckpt_err_set(err, rc, "name", name, strlen(name),
			     "not a valid checkpoint name");
	else if (has_name(s, name))
		ckpt_err_set(err, -EEXIST, "name", name, strlen(name),
			     "a checkpoint of that name exists");
	if (!err->code) {
		/* Into the directory the store's path names now. */
		pthread_mutex_lock(&s->refresh);
		rc = attach(s);
		pthread_mutex_unlock(&s->refresh);
		if (rc < 0)
			ckpt_err_set(err, rc, "io", name, strlen(name),
				     "cannot reach the store directory: %s",
				     strerror(-rc));
	}
	if (err->code) {
		rc = err->code;
		journal_end(s, out, rc, err, NULL);
		return rc;
	}
	if (ckpt_store_latest(s, &parent) == 0) {
		o.parent_name = parent->name;
		if (self_written(s, &parent->st))
			o.parent = parent;
	}
	o.name = name;
	o.origin = origin;
	o.progress = &out->pg;
	snprintf(file, sizeof(file), "%s" SUFFIX, name);
	rc = ckpt_save(s->dirfd, file, &o, &r, err);
	ckpt_archive_unref(parent);
	if (rc == 0) {
		remember_written(s, file);
		ckpt_store_refresh(s, NULL, NULL);
		write_pointer(s);
	}
	journal_end(s, out, rc, err, &r);
	if (res)
		*res = r;
	return rc;
}

/* The origin rule, for an existing checkpoint. */
static int may_change(struct ckpt_store *s, const char *name, bool by_agent,
		      struct ckpt_err *err)
{
	struct ckpt_archive *a;
	int rc;

	if (!has_name(s, name))
		return ckpt_err_set(err, -ENOENT, "name", name, strlen(name),
				    "no such checkpoint");
	if (!by_agent)
		return 0;
	/* A checkpoint that cannot be read has no trustworthy origin: only
	 * its owner may remove it. */
	if (ckpt_store_get(s, name, &a, NULL) < 0)
		return ckpt_err_set(err, -EPERM, "origin", name, strlen(name),
				    "unreadable checkpoint");
	rc = ckpt_policy_may_change(a->origin, by_agent);
	ckpt_archive_unref(a);
	if (rc < 0)
		ckpt_err_set(err, rc, "origin", name, strlen(name),
			     "the agent may not change a user checkpoint");
	return rc;
}

int ckpt_store_remove(struct ckpt_store *s, const char *name, bool by_agent,
		      struct ckpt_err *err)
{
	char file[256];
	int rc = may_change(s, name, by_agent, err);

	if (rc < 0) {
		if (rc != -ENOENT && err)
			ckpt_store_note(s, name, err);
		return rc;
	}
	snprintf(file, sizeof(file), "%s" SUFFIX, name);
	if (unlinkat(s->dirfd, file, 0) < 0 || fsync(s->dirfd) < 0)
		return ckpt_err_set(err, -errno, "io", name, strlen(name),
				    "cannot delete: %s", strerror(errno));
	ckpt_store_refresh(s, NULL, NULL);
	write_pointer(s);
	return 0;
}

int ckpt_store_rename(struct ckpt_store *s, const char *from, const char *to,
		      bool by_agent, struct ckpt_err *err)
{
	char f[256], t[256];
	int rc = ckpt_name_check(to, strlen(to));

	if (rc < 0)
		return ckpt_err_set(err, rc, "name", to, strlen(to),
				    "not a valid checkpoint name");
	rc = may_change(s, from, by_agent, err);
	if (rc < 0) {
		if (rc != -ENOENT && err)
			ckpt_store_note(s, from, err);
		return rc;
	}
	snprintf(f, sizeof(f), "%s" SUFFIX, from);
	snprintf(t, sizeof(t), "%s" SUFFIX, to);
	if (renameat2(s->dirfd, f, s->dirfd, t, RENAME_NOREPLACE) < 0 ||
	    fsync(s->dirfd) < 0)
		return ckpt_err_set(err, -errno, "io", to, strlen(to),
				    "cannot rename: %s", strerror(errno));
	ckpt_store_refresh(s, NULL, NULL);
	write_pointer(s);
	return 0;
}

int ckpt_store_prune(struct ckpt_store *s, unsigned keep)
{
	struct ckpt_archive **all = NULL, *a, *latest = NULL;
	size_t n = 0, cap = 0, autos = 0;
	int removed = 0;

	for (size_t pos = 0; ckpt_store_next(s, &pos, &a) == 0; pos++) {
		if (n == cap) {
			struct ckpt_archive **v;
			cap = cap ? cap * 2 : 64;
			v = realloc(all, cap * sizeof(*v));
			if (!v) {
				ckpt_archive_unref(a);
				goto out;
			}
			all = v;
		}
		all[n++] = a;
	}
	ckpt_store_latest(s, &latest);
	for (size_t i = 0; i < n; i++)
		autos += all[i]->origin && strcmp(all[i]->origin, "auto") == 0;
	/* Oldest automatic checkpoints first, until keep are left. */
	while (autos > keep) {
		struct ckpt_archive *old = NULL;
		bool blocked;

		for (size_t i = 0; i < n; i++) {
			a = all[i];
			if (!a || !a->origin ||
			    strcmp(a->origin, "auto") != 0 || a == latest)
				continue;
			/* The base of a user's or the agent's checkpoint
			 * stays.  Automatic ones form a chain (each is the
			 * next one's parent) and every archive is complete
			 * on its own, so that link does not protect. */
			blocked = false;
			for (size_t k = 0; k < n && !blocked; k++)
				blocked = all[k] && all[k]->parent &&
					  (!all[k]->origin ||
					   strcmp(all[k]->origin, "auto")) &&
					  strcmp(all[k]->parent, a->name) == 0;
			if (!blocked &&
			    (!old || a->created_ns < old->created_ns))
				old = a;
		}
		if (!old)
			break; /* the rest are protected */
		if (ckpt_store_remove(s, old->name, false, NULL) == 0)
			removed++;
		for (size_t i = 0; i < n; i++)
			if (all[i] == old) {
				ckpt_archive_unref(all[i]);
				all[i] = NULL;
			}
		autos--;
	}
out:
	for (size_t i = 0; i < n; i++)
		ckpt_archive_unref(all[i]);
	free(all);
	ckpt_archive_unref(latest);
	return removed;
}

int ckpt_store_error(struct ckpt_store *s, size_t i, char **name, char **text,
		     size_t *len)
{
	struct journal *j = journal_of(s);
	int rc = -ENOENT;

	pthread_mutex_lock(&j->lock);
	if (i < j->nr) {
		const char *t = j->r[i].text;
		rc = t ? 0 : -ENODATA; /* cleared by a later success */
		if (rc == 0 && !(*name = strdup(j->r[i].name)))
			rc = -ENOMEM;
		if (rc == 0 && text) {
			*len = strlen(t);
			if (!(*text = strdup(t))) {
				free(*name);
				rc = -ENOMEM;
			}
		}
	}
	pthread_mutex_unlock(&j->lock);
	return rc;
}
