/*
 * index.c - one archive, indexed once into an immutable tree.
 *
 * Opening an archive reads its central directory and manifest, passes
 * every entry through ckpt_policy_check(), and lays the survivors out as
 * a flat array of nodes in breadth-first order, so that a directory's
 * children are contiguous and sorted: lookup is a binary search and
 * listing is a slice, with no per-entry allocation.  Nothing that fails
 * the policy or disagrees with the manifest is ever in the array, so
 * nothing served can have skipped the policy.
 */
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

#define MANIFEST "manifest.json"
#define MAX_LINK 4095

void ckpt_limits_default(struct ckpt_limits *lim)
{
	lim->max_entries = 1000000;
	lim->max_entry_size = 64ull << 30;
	lim->max_total_size = 1ull << 40;
	/* Deflate cannot exceed about 1032:1; a declared size beyond that
	 * is a lie, not compression. */
	lim->max_ratio = 2000;
	lim->max_manifest_size = 256ull << 20;
}

/* Paths sort component by component ('/' below every other byte), so a
 * directory precedes its contents and siblings are in byte order. */
static int pathcmp(const char *a, size_t al, const char *b, size_t bl)
{
	size_t n = al < bl ? al : bl;

	for (size_t i = 0; i < n; i++) {
		unsigned ca = a[i] == '/' ? 0 : (unsigned char)a[i] + 1u;
		unsigned cb = b[i] == '/' ? 0 : (unsigned char)b[i] + 1u;
		if (ca != cb)
			return ca < cb ? -1 : 1;
	}
	return (al > bl) - (al < bl);
}

/* An entry that passed the policy, before it has a node number. */
struct item {
	const char *path;
	uint32_t len;
	uint32_t parent;      /* item index */
	uint32_t first, next; /* child list while building, ~0 ends */
	uint32_t last;
	uint8_t type;
	uint8_t hidden;
	uint16_t mode;
	int64_t mtime_ns;
	struct zentry z;
	const uint8_t *hash; /* 16 bytes from the manifest, or NULL */
	const char *target;  /* symlinks */
	uint32_t target_len;
	const struct mentry *chunked; /* its chunk table, or NULL */
};

struct build {
	struct ckpt_archive *a;
	const struct ckpt_limits *lim;
	unsigned flags;
	struct manifest m;
	uint8_t *cd;
	struct zcd *ents;
	size_t nents;
	struct item *items;
	size_t nitems, cap;
	char **targets; /* symlink texts read from the archive */
	size_t ntargets;
	char *mtext; /* manifest.json as stored */
	size_t mlen;
	struct zcd **by; /* the records, sorted by cmp_name */
	/* non-directory records left out */
	const struct zcd **gone;
	size_t ngone;
};

static void hide(struct ckpt_archive *a, const struct ckpt_err *why)
{
	size_t i;

	for (i = 0; i < a->nhidden; i++)
		if (strcmp(a->hidden[i].rule, why->rule) == 0)
			break;
	if (i == a->nhidden) {
		if (i == HIDDEN_RULES)
			i--; /* the last slot collects the rest */
		else
			a->nhidden++;
		snprintf(a->hidden[i].rule, sizeof(a->hidden[i].rule), "%s",
			 why->rule);
		snprintf(a->hidden[i].sample, sizeof(a->hidden[i].sample), "%s",
			 why->path);
	}
	a->hidden[i].count++;
}

static int hide_entry(struct ckpt_archive *a, const char *rule,
		      const char *path, size_t len, const char *why)
{
	struct ckpt_err e;

	ckpt_err_set(&e, -ENOENT, rule, path, len, "%s", why);
	hide(a, &e);
	return 0;
}

static struct item *add_item(struct build *b)
{
	if (b->nitems == b->cap) {
		size_t cap = b->cap ? b->cap * 2 : 1024;
		struct item *n = realloc(b->items, cap * sizeof(*n));
		if (!n)
			return NULL;
		b->items = n;
		b->cap = cap;
	}
	memset(&b->items[b->nitems], 0, sizeof(struct item));
	return &b->items[b->nitems++];
}

static int oom(struct ckpt_err *err)
{
	return ckpt_err_set(err, -ENOMEM, "limit", NULL, 0,
			    "out of memory indexing archive");
}

/* The type and permission bits an entry claims: UNIX mode bits when the
 * archive was made on UNIX, else a trailing '/' for directories. */
static enum ckpt_type zip_type(const struct zcd *e, bool slash, unsigned *mode)
{
	unsigned m = e->ext_attr >> 16;

	if ((e->made_by >> 8) == 3 && (m & S_IFMT)) {
		*mode = m & 07777;
		switch (m & S_IFMT) {
		case S_IFREG:
			return CKPT_FILE;
		case S_IFDIR:
			return CKPT_DIR;
		case S_IFLNK:
			return CKPT_SYMLINK;
		default:
			return CKPT_SPECIAL;
		}
	}
	*mode = slash ? 0755 : 0644;
	return slash ? CKPT_DIR : CKPT_FILE;
}

/* A chunk table must describe this entry exactly: deflated, one chunk per
 * chunk_size bytes, every chunk starting inside the compressed data. */
static bool chunks_fit(const struct mentry *me, const struct zentry *z)
{
	uint64_t last;

	if (me->type != CKPT_FILE || z->method != ZIP_METHOD_DEFLATE ||
	    z->size == 0 ||
	    (z->size - 1) / me->chunk_size + 1 != (uint64_t)me->nchunks)
		return false;
	memcpy(&last, me->chunks + (size_t)(me->nchunks - 1) * 16, 8);
	return last < z->csize;
}

/* Decides one central directory record: hidden (counted, with a reason)
 * or a candidate item. */
static int consider(struct build *b, const struct zcd *e)
{
	struct ckpt_archive *a = b->a;
	const char *path = e->name;
	size_t len = e->name_len;
	bool slash = len > 0 && path[len - 1] == '/';
	unsigned mode;
	enum ckpt_type type = zip_type(e, slash, &mode);
	const struct mentry *me = NULL;
	struct ckpt_policy_entry pe;
	struct ckpt_err why;
	char *target = NULL;
	size_t tlen = 0;
	struct item *it;

	if (slash)
		len--;
	if (slash && type != CKPT_DIR)
		return hide_entry(a, "bad-entry", e->name, e->name_len,
				  "name ends in '/' but is not a directory");
	if (type == CKPT_FILE || type == CKPT_SYMLINK) {
		if ((e->z.flags & 1) || (e->z.method != ZIP_METHOD_STORE &&
					 e->z.method != ZIP_METHOD_DEFLATE))
			return hide_entry(a, "unsupported", path, len,
					  "encrypted or unsupported method");
		if (e->z.method == ZIP_METHOD_STORE && e->z.csize != e->z.size)
			return hide_entry(a, "bad-entry", path, len,
					  "stored entry with two sizes");
		if (e->z.size > b->lim->max_entry_size ||
		    (e->z.size > 0 && e->z.csize == 0) ||
		    (e->z.csize > 0 &&
		     e->z.size / e->z.csize > b->lim->max_ratio))
			return hide_entry(a, "limit", path, len,
					  "size or compression ratio over the "
					  "limit");
	}
	if (b->m.has_entries) {
		me = manifest_find(&b->m, path, len);
		if (!me)
			return hide_entry(a, "unlisted", path, len,
					  "not listed in the manifest");
		if (me->type != type || (type == CKPT_FILE && me->has_size &&
					 me->size != e->z.size))
			return hide_entry(a, "manifest-mismatch", path, len,
					  "type or size differs from the "
					  "manifest");
		if (me->chunks && !chunks_fit(me, &e->z))
			return hide_entry(a, "manifest-mismatch", path, len,
					  "chunk table does not fit the entry");
	}
	/* The policy judges a link by its text, so the text is read now;
	 * it is small by construction (MAX_LINK). */
	if (type == CKPT_SYMLINK) {
		if (e->z.size > MAX_LINK ||
		    zip_read_entry(a->fd, &e->z, e->name, e->name_len, MAX_LINK,
				   &target, &tlen, &why) < 0)
			return hide_entry(a, "bad-entry", path, len,
					  "unreadable symlink");
		if (me && me->target &&
		    (me->target_len != tlen ||
		     memcmp(me->target, target, tlen))) {
			free(target);
			return hide_entry(a, "manifest-mismatch", path, len,
					  "symlink target differs from the "
					  "manifest");
		}
		char **t = realloc(b->targets,
				   (b->ntargets + 1) * sizeof(*b->targets));
		if (!t) {
			free(target);
			return -ENOMEM;
		}
		b->targets = t;
		b->targets[b->ntargets++] = target;
	}
	pe = (struct ckpt_policy_entry){path, len, type, target, tlen};
	if (ckpt_policy_check(b->flags, &pe, NULL, &why) < 0) {
		hide(a, &why);
		return 0;
	}
	it = add_item(b);
	if (!it)
		return -ENOMEM;
	it->path = path;
	it->len = (uint32_t)len;
	it->type = (uint8_t)type;
	it->mode = (uint16_t)(me && me->has_mode ? me->mode : mode);
	it->mtime_ns = me && me->has_mtime ? me->mtime_ns : e->mtime_ns;
	it->z = e->z;
	it->hash = me && me->has_hash ? me->hash : NULL;
	it->target = target;
	it->target_len = (uint32_t)tlen;
	it->chunked = me && me->chunks ? me : NULL;
	return 0;
}

static int cmp_item(const void *x, const void *y)
{
	const struct item *a = x, *b = y;

	return pathcmp(a->path, a->len, b->path, b->len);
}

static int cmp_name(const void *x, const void *y)
{
	const struct zcd *a = *(struct zcd *const *)x;
	const struct zcd *b = *(struct zcd *const *)y;
	size_t al = a->name_len, bl = b->name_len;

	/* "a" and "a/" name the same thing once extracted. */
	if (al && a->name[al - 1] == '/')
		al--;
	if (bl && b->name[bl - 1] == '/')
		bl--;
	return pathcmp(a->name, al, b->name, bl);
}

/* Archive-level refusals that need every name: duplicates. */
static int check_duplicates(struct build *b, struct ckpt_err *err)
{
	struct zcd **by = malloc((b->nents ? b->nents : 1) * sizeof(*by));
	int rc = 0;

	if (!by)
		return oom(err);
	for (size_t i = 0; i < b->nents; i++)
		by[i] = &b->ents[i];
	qsort(by, b->nents, sizeof(*by), cmp_name);
	for (size_t i = 1; i < b->nents; i++)
		if (cmp_name(&by[i - 1], &by[i]) == 0) {
			rc = ckpt_err_set(err, -EINVAL, "duplicate",
					  by[i]->name, by[i]->name_len,
					  "the archive holds a name twice");
			break;
		}
	b->by = by; /* kept for check_gone */
	return rc;
}

/* Inserts the directories that entry paths imply and links every item to
 * its parent.  Items are sorted, so a stack of open directories suffices.
 * A file that is also used as a directory refuses the archive. */
static int link_tree(struct build *b, struct ckpt_err *err)
{
	size_t n = b->nitems, depth = 1;
	uint32_t stack[2048];
	struct item *old = b->items;

	b->items = NULL;
	b->nitems = b->cap = 0;
	struct item *root = add_item(b);
	if (!root) {
		b->items = old;
		b->nitems = n;
		return oom(err);
	}
	root->type = CKPT_DIR;
	root->mode = 0555;
	root->path = "";
	stack[0] = 0;
	for (size_t i = 0; i < n; i++) {
		struct item *c = &old[i];
		struct item *top;

		for (;;) {
			top = &b->items[stack[depth - 1]];
			if (top->len == 0 ||
			    (c->len > top->len && c->path[top->len] == '/' &&
			     memcmp(c->path, top->path, top->len) == 0))
				break;
			depth--;
		}
		if (top->type != CKPT_DIR ||
		    (i > 0 && cmp_item(c, &old[i - 1]) == 0)) {
			ckpt_err_set(err, -EINVAL, "duplicate", c->path, c->len,
				     "a name is both a file and a directory");
			free(old);
			return -EINVAL;
		}
		/* Implied directories between top and c. */
		for (size_t at = top->len ? top->len + 1 : 0;;) {
			const char *slash =
				memchr(c->path + at, '/', c->len - at);
			if (!slash)
				break;
			if (depth == sizeof(stack) / sizeof(stack[0]))
				goto too_deep;
			struct item *d = add_item(b);
			if (!d)
				goto nomem;
			d->path = c->path;
			d->len = (uint32_t)(slash - c->path);
			d->type = CKPT_DIR;
			d->mode = 0555;
			d->mtime_ns = b->a->created_ns;
			d->parent = stack[depth - 1];
			stack[depth++] = (uint32_t)(b->nitems - 1);
			at = d->len + 1;
		}
		struct item *it = add_item(b);
		if (!it)
			goto nomem;
		*it = *c;
		it->parent = stack[depth - 1];
		/* Files go on the stack too, so that a later "file/x" finds
		 * a file on top and is refused above. */
		if (depth == sizeof(stack) / sizeof(stack[0]))
			goto too_deep;
		stack[depth++] = (uint32_t)(b->nitems - 1);
	}
	free(old);
	return 0;
too_deep:
	free(old);
	return ckpt_err_set(err, -EINVAL, "limit", NULL, 0,
			    "directories nested more than 2047 deep");
nomem:
	free(old);
	return oom(err);
}

/* The resolver the policy follows symlink chains through: the candidate
 * tree, searched by full path (items are sorted by path). */
static int resolve_lookup(void *ctx, const char *path, size_t len, char *target,
			  size_t size, size_t *tlen)
{
	struct build *b = ctx;
	size_t lo = 0, hi = b->nitems;

	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		const struct item *it = &b->items[mid];
		int c = pathcmp(it->path, it->len, path, len);

		if (c == 0) {
			if (it->type == CKPT_SYMLINK) {
				size_t n = it->target_len < size - 1
						   ? it->target_len
						   : size - 1;
				memcpy(target, it->target, n);
				target[n] = '\0';
				*tlen = n;
			}
			return it->type;
		}
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return -ENOENT;
}

/* Judges every link against the tree with all candidate links present.
 * One pass suffices: hiding a link only makes paths through it end (the
 * kernel stops at a missing component), so a link found contained stays
 * contained. */
static void check_links(struct build *b)
{
	struct ckpt_resolver r = {resolve_lookup, b};

	for (size_t i = 0; i < b->nitems; i++) {
		struct item *it = &b->items[i];
		struct ckpt_policy_entry pe;
		struct ckpt_err why;

		if (it->type != CKPT_SYMLINK)
			continue;
		pe = (struct ckpt_policy_entry){it->path, it->len, CKPT_SYMLINK,
						it->target, it->target_len};
		if (ckpt_policy_check(b->flags, &pe, &r, &why) < 0) {
			it->hidden = 1;
			hide(b->a, &why);
		}
	}
}

static int pool_put(char **pool, size_t *len, size_t *cap, const char *s,
		    size_t n, uint32_t *off)
{
	if (*len + n > UINT32_MAX)
		return -EFBIG;
	if (*len + n > *cap) {
		size_t c = *cap ? *cap : 4096;
		char *p;
		while (c < *len + n)
			c *= 2;
		p = realloc(*pool, c);
		if (!p)
			return -ENOMEM;
		*pool = p;
		*cap = c;
	}
	if (n)
		memcpy(*pool + *len, s, n);
	*off = (uint32_t)*len;
	*len += n;
	return 0;
}

/* Copies a chunk table out of the manifest, which is freed after
 * indexing; a->chunks has room for every table. */
static int take_chunks(struct ckpt_archive *a, const struct mentry *me)
{
	struct chunktab *t = &a->chunks[a->nchunks];

	t->off = malloc((size_t)me->nchunks * 2 * sizeof(uint64_t));
	if (!t->off)
		return -ENOMEM;
	t->hash = t->off + me->nchunks;
	for (uint32_t k = 0; k < me->nchunks; k++) {
		memcpy(&t->off[k], me->chunks + (size_t)k * 16, 8);
		memcpy(&t->hash[k], me->chunks + (size_t)k * 16 + 8, 8);
	}
	t->size = me->chunk_size;
	t->n = me->nchunks;
	a->nchunks++;
	return 0;
}

/* Numbers the visible items breadth-first, so each directory's children
 * get consecutive node numbers in name order. */
static int number(struct build *b, struct ckpt_err *err)
{
	struct ckpt_archive *a = b->a;
	size_t n = b->nitems, nn = 0, nh = 0, nc = 0, plen = 0, pcap = 0;
	uint32_t *queue = malloc(n * sizeof(*queue));
	uint32_t *num = malloc(n * sizeof(*num));
	int rc = 0;

	if (!queue || !num)
		goto nomem;
	for (size_t i = 0; i < n; i++) {
		b->items[i].first = b->items[i].next = b->items[i].last =
			UINT32_MAX;
		nh += b->items[i].hash != NULL;
		nc += b->items[i].chunked != NULL;
	}
	/* Child lists in item order, which is name order. */
	for (size_t i = 1; i < n; i++) {
		struct item *it = &b->items[i], *p = &b->items[it->parent];
		if (it->hidden)
			continue;
		if (p->last == UINT32_MAX)
			p->first = (uint32_t)i;
		else
			b->items[p->last].next = (uint32_t)i;
		p->last = (uint32_t)i;
	}
	a->nodes = calloc(n, sizeof(*a->nodes));
	a->hashes = nh ? malloc(nh * sizeof(*a->hashes)) : NULL;
	a->verified = calloc(n, sizeof(*a->verified));
	a->chunks = nc ? calloc(nc, sizeof(*a->chunks)) : NULL;
	if (!a->nodes || (nh && !a->hashes) || !a->verified ||
	    (nc && !a->chunks))
		goto nomem;
	nh = 0;
	queue[0] = 0;
	num[0] = 0;
	nn = 1;
	for (size_t qi = 0; qi < nn; qi++) {
		struct item *it = &b->items[queue[qi]];
		struct node *nd = &a->nodes[qi];
		const char *name = it->path + it->len;

		while (name > it->path && name[-1] != '/')
			name--;
		nd->name_len = (uint16_t)(it->path + it->len - name);
		nd->type = it->type;
		nd->mode = (uint16_t)ckpt_policy_mode(it->type, it->mode);
		nd->mtime_ns = it->mtime_ns;
		nd->parent = qi == 0 ? 0 : num[it->parent];
		nd->z = it->z;
		rc = pool_put(&a->names, &plen, &pcap, name, nd->name_len,
			      &nd->name_off);
		if (rc < 0)
			goto out;
		if (it->type == CKPT_DIR) {
			nd->u.dir.first = (uint32_t)nn;
			for (uint32_t c = it->first; c != UINT32_MAX;
			     c = b->items[c].next) {
				num[c] = (uint32_t)nn;
				queue[nn++] = c;
				nd->u.dir.nsubdir +=
					b->items[c].type == CKPT_DIR;
			}
			nd->u.dir.nchild = (uint32_t)nn - nd->u.dir.first;
		} else if (it->type == CKPT_SYMLINK) {
			nd->u.link.len = it->target_len;
			rc = pool_put(&a->names, &plen, &pcap, it->target,
				      it->target_len, &nd->u.link.off);
			if (rc < 0)
				goto out;
		} else {
			nd->u.file.hash = NO_HASH;
			nd->u.file.chunks = NO_CHUNKS;
			if (it->hash) {
				memcpy(a->hashes[nh], it->hash, 16);
				nd->u.file.hash = (uint32_t)nh++;
			}
			if (it->chunked) {
				rc = take_chunks(a, it->chunked);
				if (rc < 0)
					goto out;
				nd->u.file.chunks = a->nchunks - 1;
			}
		}
	}
	a->nnodes = (uint32_t)nn;
out:
	free(queue);
	free(num);
	if (rc == -ENOMEM)
		return oom(err);
	if (rc < 0)
		return ckpt_err_set(err, rc, "limit", NULL, 0,
				    "names too large to index");
	return 0;
nomem:
	rc = -ENOMEM;
	goto out;
}

static bool shown(void *ctx, const char *path, size_t len)
{
	const struct ckpt_archive *a = ctx;
	uint32_t node = CKPT_NODE_ROOT;

	for (size_t i = 0; i <= len;) {
		const char *c = path + i, *slash = memchr(c, '/', len - i);
		size_t n = slash ? (size_t)(slash - c) : len - i;

		if (ckpt_archive_lookup(a, node, c, n, &node) < 0)
			return false;
		i += n + 1;
	}
	return true;
}

static int build_manifest(const struct ckpt_archive *a, char **out,
			  struct ckpt_err *err)
{
	const struct node *n = &a->nodes[a->manifest_node];
	char *text, *buf;
	size_t tlen;
	ssize_t m;
	int rc;

	rc = zip_read_entry(a->fd, &n->z, MANIFEST, sizeof(MANIFEST) - 1,
			    a->max_manifest, &text, &tlen, err);
	if (rc < 0)
		return rc;
	buf = malloc(a->manifest_size + 1);
	m = buf ? manifest_filter(text, tlen, shown, (void *)a, buf) : -ENOMEM;
	free(text);
	/* Its CRC held, so a different length means the file was rewritten
	 * in place under the mount. */
	if (m != (ssize_t)a->manifest_size) {
		free(buf);
		return ckpt_err_set(err, -EIO, "io", MANIFEST,
				    sizeof(MANIFEST) - 1,
				    "manifest changed under the mount");
	}
	*out = buf;
	return 0;
}

/* One copy however many read it at once: a manifest may be tens of
 * megabytes. */
int archive_manifest_get(struct ckpt_archive *a, const char **out, size_t *len,
			 struct ckpt_err *err)
{
	int rc = 0;

	pthread_mutex_lock(&a->manifest_lock);
	if (!a->manifest_text)
		rc = build_manifest(a, &a->manifest_text, err);
	if (rc == 0) {
		a->manifest_users++;
		*out = a->manifest_text;
		*len = (size_t)a->manifest_size;
	}
	pthread_mutex_unlock(&a->manifest_lock);
	return rc;
}

void archive_manifest_put(struct ckpt_archive *a)
{
	pthread_mutex_lock(&a->manifest_lock);
	if (--a->manifest_users == 0) {
		free(a->manifest_text);
		a->manifest_text = NULL;
	}
	pthread_mutex_unlock(&a->manifest_lock);
}

/* Sizes the manifest as served, once, so stat is exact without keeping
 * the text. */
static int measure_manifest(struct ckpt_archive *a, const char *text,
			    size_t len, struct ckpt_err *err)
{
	ssize_t m;

	if (ckpt_archive_lookup(a, CKPT_NODE_ROOT, MANIFEST,
				sizeof(MANIFEST) - 1, &a->manifest_node) < 0)
		return ckpt_err_set(err, -EINVAL, "manifest", NULL, 0,
				    "manifest.json not indexed");
	m = manifest_filter(text, len, shown, a, NULL);
	if (m < 0)
		return ckpt_err_set(err, -EINVAL, "manifest", NULL, 0,
				    "manifest.json cannot be filtered");
	a->manifest_size = (uint64_t)m;
	a->manifest_filtered = (size_t)m != len;
	return 0;
}

/* A file, link or special entry that is not shown may still be the parent
 * of shown entries; ckpt(5) refuses that archive as it would if the entry
 * were shown, rather than showing the name as a directory. */
static int remember_gone(struct build *b, const struct zcd *e)
{
	if ((b->ngone & (b->ngone - 1)) == 0) {
		size_t cap = b->ngone ? b->ngone * 2 : 16;
		const struct zcd **g = realloc(b->gone, cap * sizeof(*g));
		if (!g)
			return -ENOMEM;
		b->gone = g;
	}
	b->gone[b->ngone++] = e;
	return 0;
}

/* In name order a record's descendants follow it directly ('/' sorts
 * below every other byte): one look after each record left out. */
static int check_gone(struct build *b, struct ckpt_err *err)
{
	for (size_t i = 0; i < b->ngone; i++) {
		const struct zcd *g = b->gone[i], *const * at, *next;

		at = bsearch(&g, b->by, b->nents, sizeof(*b->by), cmp_name);
		if (!at ||
		    (size_t)(at - (const struct zcd *const *)b->by) + 1 >=
			    b->nents)
			continue;
		next = at[1];
		if (next->name_len > g->name_len &&
		    next->name[g->name_len] == '/' &&
		    memcmp(next->name, g->name, g->name_len) == 0)
			return ckpt_err_set(err, -EINVAL, "duplicate",
					    next->name, next->name_len,
					    "a name is both a file and a "
					    "directory");
	}
	return 0;
}

static int build(struct build *b, struct ckpt_err *err)
{
	struct ckpt_archive *a = b->a;
	const struct zcd *mf = NULL;
	uint64_t total = 0;
	int rc;

	rc = zip_read_cd(a->fd, a->file_size, b->lim, &b->cd, &b->ents,
			 &b->nents, err);
	if (rc < 0)
		return rc;
	rc = check_duplicates(b, err);
	if (rc < 0)
		return rc;
	for (size_t i = 0; i < b->nents; i++) {
		const struct zcd *e = &b->ents[i];
		if (e->name_len == sizeof(MANIFEST) - 1 &&
		    memcmp(e->name, MANIFEST, sizeof(MANIFEST) - 1) == 0)
			mf = e;
		/* Compared before adding: zip64 sizes near 2^64 would wrap
		 * the sum. */
		if (e->z.size > b->lim->max_total_size - total)
			return ckpt_err_set(err, -EFBIG, "limit", NULL, 0,
					    "archive content larger than "
					    "the limit");
		total += e->z.size;
	}
	if (!mf)
		return ckpt_err_set(err, -EINVAL, "manifest", NULL, 0,
				    "the archive has no manifest.json");
	rc = zip_read_entry(a->fd, &mf->z, mf->name, mf->name_len,
			    b->lim->max_manifest_size, &b->mtext, &b->mlen,
			    err);
	if (rc < 0)
		return rc;
	rc = manifest_parse(b->mtext, b->mlen, &b->m, err);
	if (rc < 0)
		return rc;
	a->created_ns = b->m.created_ns
				? b->m.created_ns
				: (int64_t)a->st.st_mtim.tv_sec * 1000000000 +
					  a->st.st_mtim.tv_nsec;
	a->origin = b->m.origin;
	a->parent = b->m.parent;
	a->scan_rules = b->m.scan_rules;
	b->m.origin = b->m.parent = b->m.scan_rules = NULL;
	for (size_t i = 0; i < b->nents; i++) {
		const struct zcd *e = &b->ents[i];
		size_t had = b->nitems;
		unsigned mode;

		if (e == mf)
			continue;
		rc = consider(b, e);
		if (rc < 0)
			return oom(err);
		if (b->nitems == had && e->name_len > 0 &&
		    e->name[e->name_len - 1] != '/' &&
		    zip_type(e, false, &mode) != CKPT_DIR &&
		    (rc = remember_gone(b, e)) < 0)
			return oom(err);
	}
	rc = check_gone(b, err);
	if (rc < 0)
		return rc;
	/* The manifest is served as stored, at the checkpoint's root. */
	struct item *it = add_item(b);
	if (!it)
		return oom(err);
	it->path = MANIFEST;
	it->len = sizeof(MANIFEST) - 1;
	it->type = CKPT_FILE;
	it->mode = 0444;
	it->mtime_ns = a->created_ns;
	it->z = mf->z;
	qsort(b->items, b->nitems, sizeof(*b->items), cmp_item);
	rc = link_tree(b, err);
	if (rc < 0)
		return rc;
	/* The root and the directories it implies carry the creation time. */
	b->items[0].mtime_ns = a->created_ns;
	check_links(b);
	rc = number(b, err);
	if (rc == 0)
		rc = measure_manifest(a, b->mtext, b->mlen, err);
	return rc;
}

static atomic_uint_fast64_t next_serial = 1;

int ckpt_archive_open(int dirfd, const char *file,
		      const struct ckpt_limits *lim, unsigned flags,
		      struct ckpt_archive **out, struct ckpt_err *err)
{
	struct build b = {.lim = lim, .flags = flags};
	struct ckpt_archive *a;
	int rc;

	a = calloc(1, sizeof(*a));
	if (!a)
		return oom(err);
	atomic_init(&a->refs, 1);
	a->serial = atomic_fetch_add(&next_serial, 1);
	pthread_mutex_init(&a->manifest_lock, NULL);
	/* O_NONBLOCK: a FIFO named like a checkpoint must not hang us;
	 * O_NOFOLLOW: a link to /dev/zero must not be followed. */
	a->fd = openat(dirfd, file,
		       O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC |
			       O_NOCTTY);
	if (a->fd < 0) {
		rc = ckpt_err_set(err, -errno, "io", file, strlen(file),
				  "cannot open: %s", strerror(errno));
		goto out;
	}
	if (fstat(a->fd, &a->st) < 0 || !S_ISREG(a->st.st_mode)) {
		rc = ckpt_err_set(err, -EINVAL, "not-regular", file,
				  strlen(file), "not a regular file");
		goto out;
	}
	a->file_size = (uint64_t)a->st.st_size;
	a->max_manifest = lim->max_manifest_size;
	b.a = a;
	a->created_ns = 0;
	rc = build(&b, err);
out:
	for (size_t i = 0; i < b.ntargets; i++)
		free(b.targets[i]);
	free(b.targets);
	free(b.items);
	free(b.gone);
	free(b.by);
	free(b.ents);
	free(b.cd);
	free(b.mtext);
	manifest_free(&b.m);
	if (rc < 0) {
		ckpt_archive_unref(a);
		return rc;
	}
	/* Indexing allocates and frees a lot at once (CD, manifest); give
	 * it back so a long-running daemon stays small. */
	malloc_trim(0);
	*out = a;
	return 0;
}

void ckpt_archive_ref(struct ckpt_archive *a)
{
	atomic_fetch_add(&a->refs, 1);
}

void ckpt_archive_unref(struct ckpt_archive *a)
{
	if (!a || atomic_fetch_sub(&a->refs, 1) != 1)
		return;
	if (a->fd >= 0)
		close(a->fd);
	free(a->nodes);
	free(a->names);
	free(a->hashes);
	for (uint32_t i = 0; i < a->nchunks; i++)
		free(a->chunks[i].off);
	free(a->chunks);
	free(a->verified);
	free(a->origin);
	free(a->parent);
	free(a->scan_rules);
	free(a->name);
	free(a->manifest_text);
	pthread_mutex_destroy(&a->manifest_lock);
	free(a);
}

static _Atomic uint64_t poisonings;

void archive_poison(struct ckpt_archive *a, const struct ckpt_err *why)
{
	int expected = 0;

	/* Only the first defect is kept; later readers see the flag. */
	if (atomic_compare_exchange_strong(&a->poisoned, &expected, 2)) {
		a->poison = *why;
		atomic_store(&a->poisoned, 1);
		atomic_fetch_add(&poisonings, 1);
	}
}

uint64_t archive_poisonings(void)
{
	return atomic_load(&poisonings);
}

int64_t ckpt_archive_created_ns(const struct ckpt_archive *a)
{
	return a->created_ns;
}

const char *ckpt_archive_origin(const struct ckpt_archive *a)
{
	return a->origin;
}

const char *ckpt_archive_parent(const struct ckpt_archive *a)
{
	return a->parent;
}

uint32_t ckpt_archive_node_count(const struct ckpt_archive *a)
{
	return a->nnodes;
}

size_t ckpt_archive_hidden(const struct ckpt_archive *a,
			   struct ckpt_hidden *out, size_t max)
{
	size_t n = a->nhidden < max ? a->nhidden : max;

	memcpy(out, a->hidden, n * sizeof(*out));
	return n;
}

int ckpt_archive_lookup(const struct ckpt_archive *a, uint32_t dir,
			const char *name, size_t len, uint32_t *out)
{
	const struct node *d;
	uint32_t lo, hi;

	if (dir >= a->nnodes)
		return -ENOENT;
	d = &a->nodes[dir];
	if (d->type != CKPT_DIR)
		return -ENOTDIR;
	lo = d->u.dir.first;
	hi = lo + d->u.dir.nchild;
	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;
		const struct node *n = &a->nodes[mid];
		size_t m = n->name_len < len ? n->name_len : len;
		int c = memcmp(a->names + n->name_off, name, m);

		if (c == 0)
			c = (n->name_len > len) - (n->name_len < len);
		if (c == 0) {
			*out = mid;
			return 0;
		}
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return -ENOENT;
}

int ckpt_archive_stat(const struct ckpt_archive *a, uint32_t node,
		      struct ckpt_stat *st)
{
	const struct node *n;

	if (node >= a->nnodes)
		return -ENOENT;
	n = &a->nodes[node];
	st->type = n->type;
	st->mode = n->mode;
	st->mtime_ns = n->mtime_ns;
	st->nchild = n->type == CKPT_DIR ? n->u.dir.nchild : 0;
	st->nlink = n->type == CKPT_DIR ? 2 + n->u.dir.nsubdir : 1;
	st->size = n->type == CKPT_FILE	     ? n->z.size
		   : n->type == CKPT_SYMLINK ? n->u.link.len
					     : 0;
	if (node == a->manifest_node && a->manifest_filtered)
		st->size = a->manifest_size;
	return 0;
}

int ckpt_archive_child(const struct ckpt_archive *a, uint32_t dir, uint32_t i,
		       uint32_t *node, const char **name, size_t *len)
{
	const struct node *d, *n;

	if (dir >= a->nnodes || a->nodes[dir].type != CKPT_DIR ||
	    i >= a->nodes[dir].u.dir.nchild)
		return -ENOENT;
	d = &a->nodes[dir];
	*node = d->u.dir.first + i;
	n = &a->nodes[*node];
	*name = a->names + n->name_off;
	*len = n->name_len;
	return 0;
}

uint32_t ckpt_archive_parent_of(const struct ckpt_archive *a, uint32_t node)
{
	return node < a->nnodes ? a->nodes[node].parent : 0;
}

ssize_t ckpt_archive_readlink(const struct ckpt_archive *a, uint32_t node,
			      char *buf, size_t size)
{
	const struct node *n;
	size_t len;

	if (node >= a->nnodes)
		return -ENOENT;
	n = &a->nodes[node];
	if (n->type != CKPT_SYMLINK)
		return -EINVAL;
	len = n->u.link.len < size - 1 ? n->u.link.len : size - 1;
	memcpy(buf, a->names + n->u.link.off, len);
	buf[len] = '\0';
	return (ssize_t)n->u.link.len;
}

int ckpt_archive_xxh128(const struct ckpt_archive *a, uint32_t node,
			char out[33])
{
	const struct node *n;

	if (node >= a->nnodes)
		return -ENOENT;
	n = &a->nodes[node];
	if (n->type != CKPT_FILE || n->u.file.hash == NO_HASH)
		return -ENODATA;
	for (int i = 0; i < 16; i++)
		snprintf(out + 2 * i, 3, "%02x", a->hashes[n->u.file.hash][i]);
	return 0;
}

int node_path(const struct ckpt_archive *a, uint32_t node, char *buf,
	      size_t size)
{
	size_t pos = size - 1, len;

	buf[pos] = '\0';
	while (node != 0 && node < a->nnodes) {
		const struct node *n = &a->nodes[node];
		/* Room for the name, and for the '/' before it unless it is
		 * the first component. */
		if (n->name_len + (n->parent != 0 ? 1u : 0u) > pos)
			return -ENAMETOOLONG;
		pos -= n->name_len;
		memcpy(buf + pos, a->names + n->name_off, n->name_len);
		node = n->parent;
		if (node != 0)
			buf[--pos] = '/';
	}
	len = size - 1 - pos;
	memmove(buf, buf + pos, len + 1);
	return (int)len;
}

uint32_t ckpt_archive_id(const struct ckpt_archive *a)
{
	return a->id;
}

uint32_t ckpt_archive_key(const struct ckpt_archive *a)
{
	return a->key;
}

const char *ckpt_archive_name(const struct ckpt_archive *a)
{
	return a->name;
}
