/*
 * store.c - the STORE directory: which checkpoints exist, and their
 * archives, opened at first use.
 *
 * Only regular files named NAME.ckpt with a valid NAME are checkpoints;
 * anything else in the directory (rsync's temporaries, links, FIFOs) is
 * ignored.  A checkpoint whose file changes identity (dev, inode, size,
 * times) is treated as replaced: its archive gets a new instance id, and
 * readers that hold the old archive keep reading the old file.
 * Locking: s->lock guards slots, inst and next_id; archives themselves
 * are immutable and refcounted.
 */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

#include "internal.h"

#define SUFFIX ".ckpt"

struct slot {
	char *name; /* checkpoint name, without the suffix */
	uint32_t key;
	struct stat st;		/* identity when scanned or opened */
	struct ckpt_archive *a; /* the store's reference, or NULL */
	bool refused;
	bool changed;	     /* during a refresh: new or replaced */
	struct ckpt_err why; /* when refused */
};

struct ckpt_store {
	int dirfd;
	struct ckpt_store_opts o;
	pthread_rwlock_t lock;
	pthread_mutex_t refresh; /* one rescan at a time */
	struct slot *slots;	 /* sorted by name */
	size_t nslots;
	struct ckpt_archive **inst; /* by increasing id; NULL once dropped */
	size_t ninst, live;
	uint32_t next_id;
};

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

/* Removes an archive from the id table; caller holds the write lock.
 * Rare (a replace or removal), so a linear scan is fine. */
static void drop_instance(struct ckpt_store *s, struct ckpt_archive *a)
{
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

int ckpt_store_refresh(struct ckpt_store *s,
		       void (*changed)(void *ctx, const char *name), void *ctx)
{
	struct slot *nv = NULL, *old;
	size_t nn = 0, no;
	int rc;

	pthread_mutex_lock(&s->refresh);
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

	/* Callbacks and frees happen unlocked: a callback may call back in. */
	for (size_t i = 0; i < nn && changed; i++)
		if (nv[i].changed)
			changed(ctx, nv[i].name);
	for (size_t i = 0; i < no; i++) {
		if (changed && !find(nv, nn, old[i].name))
			changed(ctx, old[i].name);
		slot_free(&old[i]);
	}
	free(old);
	pthread_mutex_unlock(&s->refresh);
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
	s->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (s->dirfd < 0) {
		int e = -errno;
		free(s);
		return ckpt_err_set(err, e, "store", dir, strlen(dir),
				    "cannot open the store: %s", strerror(-e));
	}
	pthread_rwlock_init(&s->lock, NULL);
	pthread_mutex_init(&s->refresh, NULL);
	ckpt_store_refresh(s, NULL, NULL);
	*out = s;
	return 0;
}

void ckpt_store_close(struct ckpt_store *s)
{
	if (!s)
		return;
	for (size_t i = 0; i < s->nslots; i++)
		slot_free(&s->slots[i]);
	free(s->slots);
	free(s->inst);
	close(s->dirfd);
	pthread_rwlock_destroy(&s->lock);
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
}

int ckpt_store_get(struct ckpt_store *s, const char *name,
		   struct ckpt_archive **out, struct ckpt_err *err)
{
	char file[256];
	struct ckpt_archive *a = NULL;
	struct slot *sl;
	struct stat st;
	int rc;

	bool poisoned = false, fresh = false;
	struct ckpt_err local;

	/* The reason is kept for the status file even when the caller
	 * does not want it. */
	if (!err)
		err = &local;

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

	/* Indexing happens unlocked; two threads may race to index one
	 * checkpoint, and the loser's work is dropped below. */
	snprintf(file, sizeof(file), "%s" SUFFIX, name);
	rc = ckpt_archive_open(s->dirfd, file, &s->o.limits, s->o.policy_flags,
			       &a, err);

	pthread_rwlock_wrlock(&s->lock);
	sl = find(s->slots, s->nslots, name);
	if (!sl || !same_file(&sl->st, &st)) {
		rc = -ENOENT; /* replaced meanwhile: the next call retries */
	} else if (sl->a) {
		ckpt_archive_unref(a);
		a = sl->a;
		rc = 0;
	} else if (rc < 0) {
		fresh = true;
		sl->refused = true;
		sl->why = *err;
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
	if (fresh && s->o.opened)
		s->o.opened(s->o.ctx, name, rc == 0 ? a : NULL, err);
	if (rc < 0 && a && (!sl || sl->a != a))
		ckpt_archive_unref(a);
	if (rc < 0)
		return rc == -ENOMEM ? rc : -ENOENT;
	*out = a;
	return 0;
}

int ckpt_store_get_id(struct ckpt_store *s, uint32_t id,
		      struct ckpt_archive **out)
{
	int rc = -ESTALE;

	pthread_rwlock_rdlock(&s->lock);
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
		if (s->inst[k]->id == id) {
			if (atomic_load(&s->inst[k]->poisoned) != 1) {
				ckpt_archive_ref(s->inst[k]);
				*out = s->inst[k];
				rc = 0;
			}
			break;
		}
		if (s->inst[k]->id < id)
			lo = k + 1;
		else
			hi = mid;
	}
	pthread_rwlock_unlock(&s->lock);
	return rc;
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
	if (!out)
		out = strdup("");
	*lenp = len;
	return out;
nomem:
	free(out);
	return NULL;
}
