/*
 * live.c - nodeids for current/.
 *
 * The live source changes under the mount and has no node numbers of its
 * own, so each path the kernel has looked up gets an id, and keeps it
 * until the kernel forgets it (lookup counts, as passthrough_ll does).
 * Ids are never reused, so a stale nodeid can never name another path.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "ckptfs.h"

struct live_node {
	char *path;
	uint64_t nlookup;
	struct ckpt_stat told; /* the attributes last given to the kernel */
	bool told_any;
};

static size_t slot_of(const struct ckptfs_live *l, const char *path)
{
	return (size_t)XXH3_64bits(path, strlen(path)) & (l->hcap - 1);
}

/* Rebuilds the hash at twice the live count; caller holds the lock. */
static int rehash(struct ckptfs_live *l)
{
	size_t cap = 64;
	uint32_t *h;

	while (cap < 4 * (l->n + 1))
		cap *= 2;
	h = calloc(cap, sizeof(*h));
	if (!h)
		return -ENOMEM;
	free(l->hash);
	l->hash = h;
	l->hcap = cap;
	for (size_t i = 0; i < l->n; i++) {
		size_t k;
		if (!l->nodes[i])
			continue;
		for (k = slot_of(l, l->nodes[i]->path); h[k];
		     k = (k + 1) & (cap - 1))
			;
		h[k] = (uint32_t)(i + 1);
	}
	return 0;
}

fuse_ino_t live_ino(struct ckptfs *fs, const char *path)
{
	struct ckptfs_live *l = &fs->live;
	struct live_node *nd = NULL;
	fuse_ino_t ino = 0;
	size_t k;

	pthread_mutex_lock(&l->lock);
	if ((l->n + 1) * 2 > l->hcap && rehash(l) < 0)
		goto out;
	for (k = slot_of(l, path); l->hash[k]; k = (k + 1) & (l->hcap - 1)) {
		struct live_node *x = l->nodes[l->hash[k] - 1];
		if (x && strcmp(x->path, path) == 0) {
			x->nlookup++;
			ino = LIVE_BIT | l->hash[k];
			goto out;
		}
	}
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 256;
		struct live_node **v = realloc(l->nodes, cap * sizeof(*v));
		if (!v)
			goto out;
		l->nodes = v;
		l->cap = cap;
	}
	nd = calloc(1, sizeof(*nd));
	if (!nd || !(nd->path = strdup(path))) {
		free(nd);
		goto out;
	}
	nd->nlookup = 1;
	l->nodes[l->n++] = nd;
	l->hash[k] = (uint32_t)l->n;
	ino = LIVE_BIT | l->n;
out:
	pthread_mutex_unlock(&l->lock);
	return ino;
}

int live_path(struct ckptfs *fs, fuse_ino_t ino, char *buf, size_t size)
{
	struct ckptfs_live *l = &fs->live;
	size_t id = (size_t)(ino & ~LIVE_BIT);
	int rc = -ESTALE;

	pthread_mutex_lock(&l->lock);
	if (id >= 1 && id <= l->n && l->nodes[id - 1]) {
		snprintf(buf, size, "%s", l->nodes[id - 1]->path);
		rc = 0;
	}
	pthread_mutex_unlock(&l->lock);
	return rc;
}

enum live_change live_told(struct ckptfs *fs, fuse_ino_t ino,
			   const struct ckpt_stat *cs)
{
	struct ckptfs_live *l = &fs->live;
	size_t id = (size_t)(ino & ~LIVE_BIT);
	enum live_change c = LIVE_SAME;

	pthread_mutex_lock(&l->lock);
	if (id >= 1 && id <= l->n && l->nodes[id - 1]) {
		struct live_node *x = l->nodes[id - 1];
		if (x->told_any && !ckpt_stat_same(&x->told, cs))
			c = x->told.size == cs->size &&
					    x->told.mtime_ns == cs->mtime_ns
				    ? LIVE_BLIND
				    : LIVE_CHANGED;
		x->told = *cs;
		x->told_any = true;
	}
	pthread_mutex_unlock(&l->lock);
	return c;
}

void live_forget(struct ckptfs *fs, fuse_ino_t ino, uint64_t n)
{
	struct ckptfs_live *l = &fs->live;
	size_t id = (size_t)(ino & ~LIVE_BIT);

	pthread_mutex_lock(&l->lock);
	if (id >= 1 && id <= l->n && l->nodes[id - 1]) {
		struct live_node *x = l->nodes[id - 1];
		x->nlookup = n < x->nlookup ? x->nlookup - n : 0;
		if (x->nlookup == 0) {
			/* The hash slot keeps the id: a tombstone, dropped
			 * at the next rehash. */
			free(x->path);
			free(x);
			l->nodes[id - 1] = NULL;
		}
	}
	pthread_mutex_unlock(&l->lock);
}

void live_free(struct ckptfs *fs)
{
	struct ckptfs_live *l = &fs->live;

	for (size_t i = 0; i < l->n; i++)
		if (l->nodes[i]) {
			free(l->nodes[i]->path);
			free(l->nodes[i]);
		}
	free(l->nodes);
	free(l->hash);
}
