/*
 * ops.c - the FUSE low-level operations.
 *
 * The op contract, written once: every op replies exactly once, with an
 * entry, attributes, data or an errno; it asks core what exists and never
 * judges a name itself.  Inode numbers given to the kernel ("nodeids")
 * are (archive instance id << 32 | node): a replaced checkpoint gets a
 * new instance id, so a nodeid is never reused for other content and the
 * kernel may cache everything under it for as long as it likes.  The
 * st_ino users see is (checkpoint key << 32 | node), stable across
 * remounts.  Nodeids below 2^32 are the fixed entries of enum INO_*.
 *
 * Opens and opendirs cost no message: the first of each is answered
 * ENOSYS, which the kernel takes as "open everything without asking"
 * (zero-message opens).  A read or a listing then names its file by
 * nodeid alone, so nothing here depends on an open handle: the archive
 * behind a nodeid stays reachable for as long as the kernel holds the
 * nodeid (pins, counted on every lookup answered and released by
 * FORGET), a replaced checkpoint included, and files.c keeps the readers.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#include "ckptfs.h"

#define LATEST	      "latest"
#define XATTR_USER    "user."
#define XATTR_HASH    "user.ckpt.xxh128"
#define XATTR_ORIGIN  "user.ckpt.origin"
#define XATTR_CREATED "user.ckpt.created"
#define XATTR_PARENT  "user.ckpt.parent"

static struct ckptfs *fs_of(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

static fuse_ino_t nodeid(const struct ckpt_archive *a, uint32_t node)
{
	return (fuse_ino_t)ckpt_archive_id(a) << 32 | node;
}

/* The archive and node behind a nodeid, with a reference to release;
 * -ESTALE once the checkpoint was replaced or removed. */
static int resolve(struct ckptfs *fs, fuse_ino_t ino, struct ckpt_archive **a,
		   uint32_t *node)
{
	if (!is_archive_ino(ino))
		return -ENOENT;
	*node = (uint32_t)ino;
	return ckpt_store_get_id(fs->store, (uint32_t)(ino >> 32), a);
}

/* The archive path of a current/ directory or file ("" for current/). */
static int live_of(struct ckptfs *fs, fuse_ino_t ino, char *buf, size_t size)
{
	if (ino == INO_CURRENT) {
		buf[0] = '\0';
		return 0;
	}
	return is_live(ino) ? live_path(fs, ino, buf, size) : -ENOENT;
}

static void set_time(struct stat *st, int64_t ns)
{
	st->st_mtim.tv_sec = ns / 1000000000;
	st->st_mtim.tv_nsec = ns % 1000000000;
	st->st_atim = st->st_ctim = st->st_mtim;
}

static void fixed_attr(struct ckptfs *fs, fuse_ino_t ino, struct stat *st,
		       size_t size)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = ino;
	st->st_uid = fs->uid;
	st->st_gid = fs->gid;
	st->st_nlink = 2;
	st->st_mode = S_IFDIR | 0555;
	if (ino == INO_STATUS) {
		st->st_mode = S_IFREG | 0444;
		st->st_nlink = 1;
	} else if (ino == INO_LATEST) {
		st->st_mode = S_IFLNK | 0777;
		st->st_nlink = 1;
	} else if (ino == INO_ROOT) {
		st->st_nlink = fs->has_source ? 5 : 4;
	} else if (ino == INO_CONTROL) {
		st->st_nlink = 3;
	}
	st->st_size = (off_t)size;
	st->st_blksize = 4096;
	/* Listings that change carry the time of the last change: at the
	 * start of a listing the kernel compares it with the time of the
	 * one it cached, and lists afresh when it moved. */
	if (ino == INO_ROOT || ino == INO_SNAPSHOTS || ino == INO_ERRORS)
		set_time(st, ckpt_store_changed_ns(fs->store));
	else
		set_time(st, fs->mount_ns);
}

static void to_stat(struct ckptfs *fs, const struct ckpt_stat *cs,
		    struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_mode = cs->mode;
	if (cs->type == CKPT_DIR)
		st->st_mode |= S_IFDIR;
	else if (cs->type == CKPT_SYMLINK)
		st->st_mode |= S_IFLNK;
	else
		st->st_mode |= S_IFREG;
	st->st_nlink = cs->nlink;
	st->st_uid = fs->uid;
	st->st_gid = fs->gid;
	st->st_size = (off_t)cs->size;
	st->st_blocks = (blkcnt_t)((cs->size + 511) / 512);
	st->st_blksize = 4096;
	set_time(st, cs->mtime_ns);
}

static int archive_attr(struct ckptfs *fs, const struct ckpt_archive *a,
			uint32_t node, struct stat *st)
{
	struct ckpt_stat cs;
	int rc = ckpt_archive_stat(a, node, &cs);

	if (rc < 0)
		return rc;
	to_stat(fs, &cs, st);
	st->st_ino = (ino_t)ckpt_archive_key(a) << 32 | node;
	if (node == CKPT_NODE_ROOT)
		set_time(st, ckpt_archive_created_ns(a));
	return 0;
}

/* The newest checkpoint's link text, "snapshots/NAME". */
static int latest_target(struct ckptfs *fs, char *buf, size_t size)
{
	struct ckpt_archive *a;
	int rc = ckpt_store_latest(fs->store, &a);

	if (rc < 0)
		return rc;
	rc = snprintf(buf, size, "snapshots/%s", ckpt_archive_name(a));
	ckpt_archive_unref(a);
	return rc;
}

static bool is_error_ino(fuse_ino_t ino)
{
	return ino >= INO_ERROR_BASE && ino < INO_ERROR_END;
}

/* Attributes of a current/ name are about to reach the kernel: a changed
 * source is opened again at the next read, and pages the kernel cannot
 * know are stale are dropped. */
static void live_given(struct ckptfs *fs, fuse_ino_t ino,
		       const struct ckpt_stat *cs)
{
	enum live_change c = live_told(fs, ino, cs);

	if (c != LIVE_SAME)
		files_forget(ino, 0);
	if (c == LIVE_BLIND)
		ckptfs_watch_inval(fs, ino);
}

/* A control file's text: base is its fixed number. */
static void text_stat(struct ckptfs *fs, fuse_ino_t base, size_t len,
		      int64_t mtime, struct stat *st)
{
	fixed_attr(fs, INO_STATUS, st, len);
	st->st_ino = base;
	set_time(st, mtime);
}

static int getattr_ino(struct ckptfs *fs, fuse_ino_t ino, struct stat *st)
{
	struct ckpt_archive *a;
	uint32_t node;
	char buf[300];
	int rc;

	if (is_live(ino)) {
		struct ckpt_stat cs;
		char path[4096];
		rc = live_of(fs, ino, path, sizeof(path));
		if (rc == 0)
			rc = ckpt_live_stat(&fs->save, path, &cs);
		if (rc == 0) {
			to_stat(fs, &cs, st);
			st->st_ino = ino;
			live_given(fs, ino, &cs);
		}
		return rc;
	}
	if (is_text_ino(ino)) {
		size_t len;
		int64_t mtime;
		rc = files_text_attr(ino, &len, &mtime);
		if (rc == 0)
			text_stat(fs, ino & TEXT_BASE_MASK, len, mtime, st);
		return rc;
	}
	switch (ino) {
	case INO_SNAPSHOTS: {
		uint64_t bytes, count;
		/* Each checkpoint is a subdirectory; refused ones are
		 * counted too, which only errs on the safe side for tools
		 * that trust link counts. */
		ckpt_store_usage(fs->store, &bytes, &count);
		fixed_attr(fs, ino, st, 0);
		st->st_nlink = 2 + (nlink_t)count;
		return 0;
	}
	case INO_ROOT:
	case INO_CONTROL:
	case INO_ERRORS:
	case INO_CURRENT:
		fixed_attr(fs, ino, st, 0);
		return 0;
	case INO_LATEST:
		rc = latest_target(fs, buf, sizeof(buf));
		if (rc >= 0)
			fixed_attr(fs, ino, st, (size_t)rc);
		return rc < 0 ? rc : 0;
	}
	rc = resolve(fs, ino, &a, &node);
	if (rc < 0)
		return rc;
	rc = archive_attr(fs, a, node, st);
	ckpt_archive_unref(a);
	return rc;
}

static double entry_timeout(struct ckptfs *fs, fuse_ino_t ino);

/* Fixed entries that change (latest, the listings) must not be cached;
 * a control file's text changes under a new nodeid instead. */
static double attr_timeout(struct ckptfs *fs, fuse_ino_t ino)
{
	if (ino == INO_LATEST || ino == INO_SNAPSHOTS || ino == INO_ERRORS ||
	    ino == INO_ROOT)
		return 0;
	/* The live run changes under us: a second is what a user who just
	 * saved a file will tolerate. */
	if (ino == INO_CURRENT || is_live(ino))
		return 1;
	return fs->timeout;
}

/* The name of a control file (base: its fixed number) leads to its text
 * as taken now. */
static bool is_text_name(fuse_ino_t base)
{
	return base == INO_STATUS || is_error_ino(base);
}

/* The attributes of the entry for ino.  A control file's name gets the
 * nodeid of its text, taken now, in *ino, which counts as a lookup; a
 * plain listing (looked_up false) needs its type alone and takes none. */
static int entry_attr(struct ckptfs *fs, fuse_ino_t *ino, bool looked_up,
		      struct stat *st)
{
	size_t len;
	int64_t mtime;
	fuse_ino_t base = *ino;
	int rc;

	if (!is_text_name(base))
		return getattr_ino(fs, base, st);
	if (!looked_up) {
		memset(st, 0, sizeof(*st));
		st->st_mode = S_IFREG;
		st->st_ino = base;
		return 0;
	}
	rc = files_text(fs, base, ino, &len, &mtime);
	if (rc == 0)
		text_stat(fs, base, len, mtime, st);
	return rc;
}

static void reply_entry(fuse_req_t req, fuse_ino_t ino)
{
	struct ckptfs *fs = fs_of(req);
	struct fuse_entry_param e = {0};
	int rc = entry_attr(fs, &ino, true, &e.attr);

	if (rc < 0) {
		fuse_reply_err(req, -rc);
		return;
	}
	e.ino = ino;
	e.attr_timeout = attr_timeout(fs, ino);
	e.entry_timeout = entry_timeout(fs, ino);
	fuse_reply_entry(req, &e);
}

/* A name inside a checkpoint: pinned before the kernel learns it.
 * Returns -ESTALE, having replied nothing, when the archive left the
 * store meanwhile (a replace at this very moment). */
static int reply_node(fuse_req_t req, struct ckpt_archive *a, uint32_t node)
{
	struct ckptfs *fs = fs_of(req);
	struct fuse_entry_param e = {0};
	int rc = archive_attr(fs, a, node, &e.attr);

	if (rc < 0) {
		fuse_reply_err(req, -rc);
		return 0;
	}
	e.ino = nodeid(a, node);
	e.attr_timeout = attr_timeout(fs, e.ino);
	e.entry_timeout = entry_timeout(fs, e.ino);
	rc = ckpt_store_pin(fs->store, a, 1);
	if (rc < 0)
		return rc;
	/* An interrupted lookup is not counted by the kernel either. */
	if (fuse_reply_entry(req, &e) != 0)
		ckpt_store_unpin(fs->store, ckpt_archive_id(a), 1);
	return 0;
}

/* The path of name under a current/ directory. */
static int live_child(struct ckptfs *fs, fuse_ino_t parent, const char *name,
		      char *out, size_t size)
{
	char path[4096];
	int rc = live_of(fs, parent, path, sizeof(path));

	if (rc == 0 && (size_t)snprintf(out, size, "%s%s%s", path,
					path[0] ? "/" : "", name) >= size)
		rc = -ENAMETOOLONG;
	return rc;
}

static void lookup_live(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct ckptfs *fs = fs_of(req);
	struct fuse_entry_param e = {.attr_timeout = 1, .entry_timeout = 1};
	struct ckpt_stat cs;
	char child[4096];
	int rc = live_child(fs, parent, name, child, sizeof(child));

	if (rc == 0)
		rc = ckpt_live_stat(&fs->save, child, &cs);
	if (rc < 0) {
		fuse_reply_err(req, -rc);
		return;
	}
	e.ino = live_ino(fs, child);
	if (!e.ino) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	to_stat(fs, &cs, &e.attr);
	e.attr.st_ino = e.ino;
	live_given(fs, e.ino, &cs);
	fuse_reply_entry(req, &e);
}

static void ckptfs_op_lookup(fuse_req_t req, fuse_ino_t parent,
			     const char *name)
{
	struct ckptfs *fs = fs_of(req);
	struct ckpt_archive *a;
	uint32_t dir, node;
	int rc;

	switch (parent) {
	case INO_ROOT:
		if (strcmp(name, "snapshots") == 0)
			return reply_entry(req, INO_SNAPSHOTS);
		if (strcmp(name, ".ckptfs") == 0)
			return reply_entry(req, INO_CONTROL);
		if (strcmp(name, LATEST) == 0)
			return reply_entry(req, INO_LATEST);
		if (strcmp(name, "current") == 0 && fs->has_source)
			return reply_entry(req, INO_CURRENT);
		fuse_reply_err(req, ENOENT);
		return;
	case INO_CONTROL:
		if (strcmp(name, "status") == 0)
			return reply_entry(req, INO_STATUS);
		if (strcmp(name, "errors") == 0)
			return reply_entry(req, INO_ERRORS);
		fuse_reply_err(req, ENOENT);
		return;
	case INO_ERRORS:
		for (size_t i = 0; i < INO_ERROR_END - INO_ERROR_BASE; i++) {
			char *n;
			rc = ckpt_store_error(fs->store, i, &n, NULL, NULL);
			if (rc == -ENOENT)
				break;
			if (rc < 0)
				continue;
			rc = strcmp(n, name);
			free(n);
			if (rc == 0)
				return reply_entry(req, INO_ERROR_BASE + i);
		}
		fuse_reply_err(req, ENOENT);
		return;
	case INO_SNAPSHOTS:
		/* Not cached when absent: a checkpoint may arrive any time.
		 * One replaced while it is looked up is looked up again. */
		for (int tries = 0;; tries++) {
			rc = ckpt_store_get(fs->store, name, &a, NULL);
			if (rc < 0) {
				fuse_reply_err(req, -rc);
				return;
			}
			rc = reply_node(req, a, CKPT_NODE_ROOT);
			ckpt_archive_unref(a);
			if (rc == 0)
				return;
			if (tries == 2) {
				fuse_reply_err(req, -rc);
				return;
			}
		}
	}
	if (parent == INO_CURRENT || is_live(parent)) {
		lookup_live(req, parent, name);
		return;
	}
	rc = resolve(fs, parent, &a, &dir);
	if (rc < 0) {
		fuse_reply_err(req, -rc);
		return;
	}
	rc = ckpt_archive_lookup(a, dir, name, strlen(name), &node);
	if (rc == -ENOENT) {
		/* Inside a checkpoint nothing appears later: let the kernel
		 * remember the absence too. */
		struct fuse_entry_param e = {.entry_timeout = fs->timeout};
		fuse_reply_entry(req, &e);
	} else if (rc < 0) {
		fuse_reply_err(req, -rc);
	} else if ((rc = reply_node(req, a, node)) < 0) {
		fuse_reply_err(req, -rc);
	}
	ckpt_archive_unref(a);
}

/* Seconds the kernel keeps a name in snapshots/ without asking again.
 * Short, because those names are never invalidated (see watch.c): a
 * checkpoint added, removed or replaced shows within this much of the
 * watcher noticing; asking again costs one in-memory search. */
#define SNAPSHOT_ENTRY_TIMEOUT 0.5

static double entry_timeout(struct ckptfs *fs, fuse_ino_t ino)
{
	if (ino == INO_LATEST || is_text_ino(ino))
		return 0;
	if (ino == INO_CURRENT || is_live(ino))
		return 1;
	/* A checkpoint's root is the only node 0, and lives in snapshots/. */
	if (is_archive_ino(ino) && (uint32_t)ino == CKPT_NODE_ROOT)
		return SNAPSHOT_ENTRY_TIMEOUT;
	return fs->timeout;
}

static void ckptfs_op_destroy(void *userdata)
{
	(void)userdata;
	/* After a lazy unmount the kernel drops the forgets of what was
	 * still in use when the last user went. */
	files_clear();
}

static void ckptfs_op_getattr(fuse_req_t req, fuse_ino_t ino,
			      struct fuse_file_info *fi)
{
	struct ckptfs *fs = fs_of(req);
	struct stat st;
	int rc = getattr_ino(fs, ino, &st);

	(void)fi;
	if (rc < 0)
		fuse_reply_err(req, -rc);
	else
		fuse_reply_attr(req, &st, attr_timeout(fs, ino));
}

static void ckptfs_op_readlink(fuse_req_t req, fuse_ino_t ino)
{
	struct ckptfs *fs = fs_of(req);
	struct ckpt_archive *a;
	char buf[4096];
	uint32_t node;
	ssize_t rc;

	if (ino == INO_LATEST) {
		rc = latest_target(fs, buf, sizeof(buf));
	} else if (is_live(ino)) {
		char path[4096];
		rc = live_of(fs, ino, path, sizeof(path));
		if (rc == 0)
			rc = ckpt_live_readlink(&fs->save, path, buf,
						sizeof(buf));
	} else {
		rc = resolve(fs, ino, &a, &node);
		if (rc == 0) {
			rc = ckpt_archive_readlink(a, node, buf, sizeof(buf));
			ckpt_archive_unref(a);
		}
	}
	if (rc < 0)
		fuse_reply_err(req, (int)-rc);
	else
		fuse_reply_readlink(req, buf);
}

/* ---- directories ------------------------------------------------------ */

/* Writes, and opens that would write, are refused: inside checkpoints
 * by the read-only filesystem, elsewhere by permission. */
static int refuse_write(fuse_ino_t ino)
{
	return is_archive_ino(ino) || is_live(ino) ? EROFS : EPERM;
}

static void ckptfs_op_opendir(fuse_req_t req, fuse_ino_t ino,
			      struct fuse_file_info *fi)
{
	if (fs_of(req)->no_opendir) {
		fuse_reply_err(req, ENOSYS);
		return;
	}
	/* A kernel that asks: listings inside checkpoints never change. */
	fi->cache_readdir = fi->keep_cache = is_archive_ino(ino);
	fuse_reply_open(req, fi);
}

/* One READDIR or READDIRPLUS reply being filled.  Every name readdirplus
 * hands out but "." and ".." counts as a lookup: those counted here are
 * remembered, to be forgotten again if the reply cannot be sent. */
struct listing {
	fuse_req_t req;
	char *buf;
	size_t size, pos;
	bool plus;
	fuse_ino_t *counted;
	size_t ncounted;
};

static void forget(struct ckptfs *fs, fuse_ino_t ino, uint64_t n);

/* Adds one entry; returns false when the buffer is full.  A caller that
 * holds the entry's archive passes it, which spares finding it again by
 * nodeid for every entry.  A live entry of a readdirplus comes counted
 * (live_ino), a text's is counted by entry_attr, an archive's is pinned
 * here. */
static bool add_entry_of(struct listing *l, const char *name, fuse_ino_t ino,
			 off_t next, struct ckpt_archive *a)
{
	struct ckptfs *fs = fs_of(l->req);
	struct fuse_entry_param e = {0};
	int rc = a ? archive_attr(fs, a, (uint32_t)ino, &e.attr)
		   : entry_attr(fs, &ino, l->plus, &e.attr);
	size_t n, room = l->size - l->pos;
	bool dots = strcmp(name, ".") == 0 || strcmp(name, "..") == 0;
	bool count =
		l->plus && !dots && (a || is_live(ino) || is_text_ino(ino));

	if (rc == 0 && count && a)
		rc = ckpt_store_pin(fs->store, a, 1);
	if (rc < 0) {
		if (count && !a)
			forget(fs, ino, 1);
		return true; /* vanished meanwhile: skip it */
	}
	if (l->plus) {
		e.ino = ino;
		e.attr_timeout = attr_timeout(fs, ino);
		e.entry_timeout = entry_timeout(fs, ino);
		n = fuse_add_direntry_plus(l->req, l->buf + l->pos, room, name,
					   &e, next);
	} else {
		n = fuse_add_direntry(l->req, l->buf + l->pos, room, name,
				      &e.attr, next);
	}
	if (n > room) {
		if (count)
			forget(fs, ino, 1); /* not sent: not looked up */
		return false;
	}
	l->pos += n;
	if (count)
		l->counted[l->ncounted++] = ino;
	return true;
}

static bool add_entry(struct listing *l, const char *name, fuse_ino_t ino,
		      off_t next)
{
	return add_entry_of(l, name, ino, next, NULL);
}

/* The parent of a directory, for "..". */
static fuse_ino_t parent_ino(struct ckpt_archive *a, fuse_ino_t ino)
{
	uint32_t node = (uint32_t)ino;

	if (!a)
		return ino == INO_ERRORS ? INO_CONTROL
		       : is_live(ino)	 ? INO_CURRENT
					 : INO_ROOT;
	if (node == CKPT_NODE_ROOT)
		return INO_SNAPSHOTS;
	return nodeid(a, ckpt_archive_parent_of(a, node));
}

/* Offsets: 0 and 1 are "." and ".."; the i-th entry after them is at
 * i + 2 and names the offset i + 3 as the next one. */
struct live_listing {
	struct listing *l;
	fuse_ino_t dir;
	off_t skip, at;
};

static int list_live_one(void *ctx, const char *name)
{
	struct live_listing *ll = ctx;
	struct listing *l = ll->l;
	struct ckptfs *fs = fs_of(l->req);
	char child[4096];
	fuse_ino_t ino = LIVE_BIT; /* plain readdir: no lookup is counted */

	if (ll->at++ < ll->skip)
		return 0;
	if (live_child(fs, ll->dir, name, child, sizeof(child)) < 0)
		return 0;
	if (l->plus && !(ino = live_ino(fs, child)))
		return -ENOMEM;
	if (!l->plus) {
		struct ckpt_stat cs;
		struct stat st;
		size_t n;
		if (ckpt_live_stat(&fs->save, child, &cs) < 0)
			return 0;
		to_stat(fs, &cs, &st);
		n = fuse_add_direntry(l->req, l->buf + l->pos, l->size - l->pos,
				      name, &st, ll->at + 2);
		if (n > l->size - l->pos)
			return 1;
		l->pos += n;
		return 0;
	}
	return add_entry(l, name, ino, ll->at + 2) ? 0 : 1;
}

static void list_live(struct listing *l, fuse_ino_t ino, off_t off)
{
	struct live_listing ll = {l, ino, off, 0};
	char path[4096];

	if (live_of(fs_of(l->req), ino, path, sizeof(path)) == 0)
		ckpt_live_list(&fs_of(l->req)->save, path, list_live_one, &ll);
}

static void list_fixed(struct listing *l, fuse_ino_t ino, off_t off)
{
	struct ckptfs *fs = fs_of(l->req);
	struct ckpt_archive *a;
	char tmp[300];

	if (ino == INO_ROOT) {
		static const char *const names[] = {"snapshots", ".ckptfs",
						    LATEST, "current"};
		static const fuse_ino_t inos[] = {INO_SNAPSHOTS, INO_CONTROL,
						  INO_LATEST, INO_CURRENT};
		for (off_t i = off; i < 4; i++) {
			if (inos[i] == INO_LATEST &&
			    latest_target(fs, tmp, sizeof(tmp)) < 0)
				continue; /* an empty store has no latest */
			if (inos[i] == INO_CURRENT && !fs->has_source)
				continue;
			if (!add_entry(l, names[i], inos[i], i + 3))
				return;
		}
	} else if (ino == INO_CONTROL) {
		if (off == 0 && !add_entry(l, "status", INO_STATUS, 3))
			return;
		if (off <= 1)
			add_entry(l, "errors", INO_ERRORS, 4);
	} else if (ino == INO_ERRORS) {
		for (size_t i = (size_t)off;; i++) {
			char *n;
			int rc = ckpt_store_error(fs->store, i, &n, NULL, NULL);
			bool ok = true;
			if (rc == -ENOENT)
				break;
			if (rc < 0)
				continue;
			ok = add_entry(l, n, INO_ERROR_BASE + i, (off_t)i + 3);
			free(n);
			if (!ok)
				return;
		}
	} else if (ino == INO_SNAPSHOTS) {
		size_t p = (size_t)off;
		while (ckpt_store_next(fs->store, &p, &a) == 0) {
			bool ok = add_entry_of(l, ckpt_archive_name(a),
					       nodeid(a, CKPT_NODE_ROOT),
					       (off_t)p + 3, a);
			ckpt_archive_unref(a);
			if (!ok)
				return;
			p++;
		}
	}
}

static void readdir_common(fuse_req_t req, fuse_ino_t ino, size_t size,
			   off_t off, bool plus)
{
	struct ckpt_archive *a = NULL;
	/* A readdirplus entry takes at least 128 bytes of attributes. */
	size_t most = size / 128 + 1;
	struct listing l = {req, NULL, size, 0, plus, NULL, 0};
	struct ckptfs *fs;
	uint32_t dir = 0;
	int rc;

	if (is_archive_ino(ino)) {
		rc = resolve(fs_of(req), ino, &a, &dir);
		if (rc < 0) {
			fuse_reply_err(req, -rc);
			return;
		}
	}
	l.buf = malloc(size);
	l.counted = plus ? malloc(most * sizeof(*l.counted)) : NULL;
	if (!l.buf || (plus && !l.counted)) {
		free(l.buf);
		ckpt_archive_unref(a);
		fuse_reply_err(req, ENOMEM);
		return;
	}
	if (off == 0 && !add_entry(&l, ".", ino, 1))
		goto out;
	if (off <= 1 && !add_entry(&l, "..", parent_ino(a, ino), 2))
		goto out;
	off = off < 2 ? 0 : off - 2;
	if (!a && (ino == INO_CURRENT || is_live(ino))) {
		list_live(&l, ino, off);
	} else if (!a) {
		list_fixed(&l, ino, off);
	} else {
		uint32_t node;
		const char *name;
		size_t len;
		char nm[256];

		for (uint32_t i = (uint32_t)off;
		     ckpt_archive_child(a, dir, i, &node, &name, &len) == 0;
		     i++) {
			memcpy(nm, name, len);
			nm[len] = '\0';
			if (!add_entry_of(&l, nm, nodeid(a, node), (off_t)i + 3,
					  a))
				break;
		}
	}
out:
	fs = fs_of(req); /* the reply frees req */
	/* An interrupted reply counts no lookup in the kernel either. */
	if (fuse_reply_buf(req, l.buf, l.pos) != 0)
		for (size_t k = 0; k < l.ncounted; k++)
			forget(fs, l.counted[k], 1);
	free(l.buf);
	free(l.counted);
	ckpt_archive_unref(a);
}

static void ckptfs_op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size,
			      off_t off, struct fuse_file_info *fi)
{
	(void)fi;
	readdir_common(req, ino, size, off, false);
}

static void ckptfs_op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size,
				  off_t off, struct fuse_file_info *fi)
{
	(void)fi;
	readdir_common(req, ino, size, off, true);
}

/* ---- files ------------------------------------------------------------ */

static void ckptfs_op_open(fuse_req_t req, fuse_ino_t ino,
			   struct fuse_file_info *fi)
{
	if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC)) {
		fuse_reply_err(req, refuse_write(ino));
		return;
	}
	if (fs_of(req)->no_open) {
		fuse_reply_err(req, ENOSYS);
		return;
	}
	/* A kernel that asks: content under a checkpoint's nodeid never
	 * changes; the rest is looked at afresh by each open. */
	fi->keep_cache = is_archive_ino(ino) || is_text_ino(ino);
	fi->noflush = 1;
	fuse_reply_open(req, fi);
}

static void ckptfs_op_read(fuse_req_t req, fuse_ino_t ino, size_t size,
			   off_t off, struct fuse_file_info *fi)
{
	struct ckpt_err err = {0};
	struct ckpt_reader *ahead;
	ssize_t n;
	char *buf = malloc(size ? size : 1);

	(void)fi;
	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	n = files_read(fs_of(req), ino, buf, size, (uint64_t)off, &err, &ahead);
	if (n < 0) {
		if (err.msg[0])
			ckptfs_log_err(FUSE_LOG_ERR, "read", &err);
		fuse_reply_err(req, (int)-n);
	} else {
		fuse_reply_buf(req, buf, (size_t)n);
	}
	free(buf);
	/* Answered: inflating ahead now costs this reader nothing, and the
	 * next request finds its chunk ready. */
	if (ahead) {
		ckpt_reader_ahead(ahead);
		ckpt_reader_close(ahead);
	}
}

/* Reached only when opens cost no message: the open itself could not be
 * refused. */
static void ckptfs_op_write(fuse_req_t req, fuse_ino_t ino, const char *buf,
			    size_t size, off_t off, struct fuse_file_info *fi)
{
	struct ckptfs *fs = fs_of(req);

	(void)buf;
	(void)size;
	(void)off;
	(void)fi;
	fuse_reply_err(req, refuse_write(ino));
	/* A write through a shared map is in the kernel's cache already,
	 * and stays there after this refusal: have it dropped. */
	ckptfs_watch_inval(fs, ino);
}

/* ---- extended attributes ---------------------------------------------- */

/* Fills value for name on ino; returns its length or a negative errno. */
static int xattr_value(struct ckptfs *fs, fuse_ino_t ino, const char *name,
		       char *value, size_t size)
{
	struct ckpt_archive *a;
	uint32_t node;
	const char *v = NULL;
	char tmp[64];
	int rc = resolve(fs, ino, &a, &node);

	if (rc < 0)
		return rc == -ENOENT ? -ENODATA : rc;
	if (strcmp(name, XATTR_HASH) == 0) {
		if (ckpt_archive_xxh128(a, node, tmp) == 0)
			v = tmp;
	} else if (node == CKPT_NODE_ROOT) {
		if (strcmp(name, XATTR_ORIGIN) == 0) {
			v = ckpt_archive_origin(a);
		} else if (strcmp(name, XATTR_PARENT) == 0) {
			v = ckpt_archive_parent(a);
		} else if (strcmp(name, XATTR_CREATED) == 0) {
			ckpt_format_time(ckpt_archive_created_ns(a), tmp);
			v = tmp;
		}
	}
	rc = -ENODATA;
	if (v) {
		rc = (int)strlen(v);
		if (size && (size_t)rc > size)
			rc = -ERANGE;
		else if (size)
			memcpy(value, v, (size_t)rc);
	}
	ckpt_archive_unref(a);
	return rc;
}

static void ckptfs_op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name,
			       size_t size)
{
	char buf[4096];
	int rc;

	/* Only the user namespace exists here.  Saying so for the others
	 * (ACLs, security labels) rather than "no such attribute" lets ls,
	 * cp and tar, which remember an unsupported file system, stop
	 * asking after the first file instead of asking for every one. */
	if (strncmp(name, XATTR_USER, strlen(XATTR_USER)) != 0) {
		fuse_reply_err(req, EOPNOTSUPP);
		return;
	}
	rc = xattr_value(fs_of(req), ino, name, buf,
			 size < sizeof(buf) ? size : sizeof(buf));
	if (rc < 0)
		fuse_reply_err(req, -rc);
	else if (size == 0)
		fuse_reply_xattr(req, (size_t)rc);
	else
		fuse_reply_buf(req, buf, (size_t)rc);
}

static void ckptfs_op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	static const char *const names[] = {XATTR_HASH, XATTR_ORIGIN,
					    XATTR_CREATED, XATTR_PARENT};
	struct ckptfs *fs = fs_of(req);
	char list[256];
	size_t len = 0;

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		if (xattr_value(fs, ino, names[i], NULL, 0) < 0)
			continue;
		memcpy(list + len, names[i], strlen(names[i]) + 1);
		len += strlen(names[i]) + 1;
	}
	if (size == 0)
		fuse_reply_xattr(req, len);
	else if (size < len)
		fuse_reply_err(req, ERANGE);
	else
		fuse_reply_buf(req, list, len);
}

/* ---- refusals --------------------------------------------------------- */

/* The errno for creating something under parent (DESIGN §2): inside a
 * checkpoint EROFS; at the root, in .ckptfs/ and for anything but a
 * directory in snapshots/, EPERM. */
static int refuse(fuse_ino_t parent)
{
	return parent >> 32 || parent == INO_CURRENT ? EROFS : EPERM;
}

static bool by_agent(struct ckptfs *fs, fuse_req_t req)
{
	return fs->has_agent && fuse_req_ctx(req)->uid == fs->agent_uid;
}

/* mkdir snapshots/NEW: save the live source; returns once it is durable. */
static void ckptfs_op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name,
			    mode_t mode)
{
	struct ckptfs *fs = fs_of(req);
	struct ckpt_save_result res;
	struct ckpt_err err = {0};
	struct ckpt_archive *a;
	int rc;

	(void)mode;
	if (parent != INO_SNAPSHOTS) {
		fuse_reply_err(req, refuse(parent));
		return;
	}
	if (!fs->can_save) {
		ckpt_err_set(&err, -EROFS, "read-only", name, strlen(name),
			     fs->ro ? "the mount is read-only (-o ro)"
				    : "the mount has no source to save "
				      "(-o source=RUNDIR)");
		ckpt_store_note(fs->store, name, &err);
		fuse_reply_err(req, EROFS);
		return;
	}
	rc = ckpt_store_save(fs->store, name,
			     by_agent(fs, req) ? "agent" : "user", &fs->save,
			     &res, &err);
	if (rc < 0) {
		ckptfs_log_err(FUSE_LOG_WARNING, "save refused", &err);
		fuse_reply_err(req, -rc);
		return;
	}
	fuse_log(FUSE_LOG_INFO,
		 "ckptfs: saved %s: %llu files (%llu bytes), %llu copied from "
		 "the parent, %llu left out\n",
		 name, (unsigned long long)res.files,
		 (unsigned long long)res.bytes, (unsigned long long)res.copied,
		 (unsigned long long)res.skipped);
	ckptfs_watch_kick(fs);
	rc = ckpt_store_get(fs->store, name, &a, &err);
	if (rc < 0) {
		/* Saved, but it does not index: say why, keep the file. */
		ckptfs_log_err(FUSE_LOG_ERR, "saved checkpoint unreadable",
			       &err);
		fuse_reply_err(req, EIO);
		return;
	}
	if ((rc = reply_node(req, a, CKPT_NODE_ROOT)) < 0)
		fuse_reply_err(req, -rc);
	ckpt_archive_unref(a);
}

/* rmdir snapshots/NAME deletes the checkpoint, contents and all. */
static void ckptfs_op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct ckptfs *fs = fs_of(req);
	struct ckpt_err err = {0};
	int rc;

	if (parent != INO_SNAPSHOTS) {
		fuse_reply_err(req, refuse(parent));
		return;
	}
	if (fs->ro) {
		fuse_reply_err(req, EROFS);
		return;
	}
	rc = ckpt_store_remove(fs->store, name, by_agent(fs, req), &err);
	if (rc < 0 && rc != -ENOENT)
		ckptfs_log_err(FUSE_LOG_WARNING, "delete refused", &err);
	else if (rc == 0)
		ckptfs_watch_kick(fs);
	fuse_reply_err(req, -rc);
}

static void ckptfs_op_unlink(fuse_req_t req, fuse_ino_t parent,
			     const char *name)
{
	(void)name;
	fuse_reply_err(req, parent == INO_SNAPSHOTS ? EISDIR : refuse(parent));
}

static void ckptfs_op_rename(fuse_req_t req, fuse_ino_t parent,
			     const char *name, fuse_ino_t newparent,
			     const char *newname, unsigned int flags)
{
	struct ckptfs *fs = fs_of(req);
	struct ckpt_err err = {0};
	int rc;

	if (parent >> 32 || newparent >> 32) {
		fuse_reply_err(req, EROFS);
		return;
	}
	if (parent != INO_SNAPSHOTS) {
		fuse_reply_err(req, EPERM);
		return;
	}
	if (newparent != INO_SNAPSHOTS) {
		fuse_reply_err(req, EXDEV);
		return;
	}
	if (flags & ~(unsigned)RENAME_NOREPLACE) {
		fuse_reply_err(req, EINVAL); /* no exchange, no whiteout */
		return;
	}
	if (fs->ro) {
		fuse_reply_err(req, EROFS);
		return;
	}
	rc = ckpt_store_rename(fs->store, name, newname, by_agent(fs, req),
			       &err);
	if (rc < 0 && rc != -ENOENT)
		ckptfs_log_err(FUSE_LOG_WARNING, "rename refused", &err);
	else if (rc == 0)
		ckptfs_watch_kick(fs);
	fuse_reply_err(req, -rc);
}

static void ckptfs_op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name,
			    mode_t mode, dev_t rdev)
{
	(void)name;
	(void)mode;
	(void)rdev;
	fuse_reply_err(req, refuse(parent));
}

static void ckptfs_op_create(fuse_req_t req, fuse_ino_t parent,
			     const char *name, mode_t mode,
			     struct fuse_file_info *fi)
{
	(void)name;
	(void)mode;
	(void)fi;
	fuse_reply_err(req, refuse(parent));
}

static void ckptfs_op_symlink(fuse_req_t req, const char *link,
			      fuse_ino_t parent, const char *name)
{
	(void)link;
	(void)name;
	fuse_reply_err(req, refuse(parent));
}

static void ckptfs_op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent,
			   const char *newname)
{
	(void)ino;
	(void)newname;
	fuse_reply_err(req, refuse(newparent));
}

static void ckptfs_op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr,
			      int to_set, struct fuse_file_info *fi)
{
	(void)attr;
	(void)to_set;
	(void)fi;
	fuse_reply_err(req, refuse_write(ino));
}

static void ckptfs_op_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name,
			       const char *value, size_t size, int flags)
{
	(void)name;
	(void)value;
	(void)size;
	(void)flags;
	fuse_reply_err(req, refuse_write(ino));
}

static void ckptfs_op_removexattr(fuse_req_t req, fuse_ino_t ino,
				  const char *name)
{
	(void)name;
	fuse_reply_err(req, refuse_write(ino));
}

static void ckptfs_op_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct ckptfs *fs = fs_of(req);
	struct statvfs sv = {0};
	uint64_t bytes, count;

	(void)ino;
	ckpt_store_usage(fs->store, &bytes, &count);
	sv.f_bsize = sv.f_frsize = 4096;
	sv.f_blocks = (fsblkcnt_t)((bytes + 4095) / 4096);
	sv.f_files = (fsfilcnt_t)count;
	sv.f_namemax = 255;
	fuse_reply_statfs(req, &sv);
}

/* The kernel forgets a nodeid once, with all its lookups, when it evicts
 * the inode. */
static void forget(struct ckptfs *fs, fuse_ino_t ino, uint64_t n)
{
	if (is_live(ino))
		live_forget(fs, ino, n);
	else if (is_archive_ino(ino))
		ckpt_store_unpin(fs->store, (uint32_t)(ino >> 32), n);
	files_forget(ino, n);
}

static void ckptfs_op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t n)
{
	forget(fs_of(req), ino, n);
	fuse_reply_none(req);
}

static void ckptfs_op_forget_multi(fuse_req_t req, size_t count,
				   struct fuse_forget_data *forgets)
{
	for (size_t i = 0; i < count; i++)
		forget(fs_of(req), forgets[i].ino, forgets[i].nlookup);
	fuse_reply_none(req);
}

static void ckptfs_op_init(void *userdata, struct fuse_conn_info *conn)
{
	struct ckptfs *fs = userdata;

	/* An open that asks nothing is one round trip fewer per file read,
	 * most of what reading a small file costs once it is cached. */
	fs->no_open = (conn->capable & FUSE_CAP_NO_OPEN_SUPPORT) && !fs->shared;
	fs->no_opendir = conn->capable & FUSE_CAP_NO_OPENDIR_SUPPORT;
	/* O_TRUNC must reach setattr, to be refused: with atomic truncation
	 * the kernel would take an open it never sent as having truncated
	 * the file, and show it empty. */
	conn->want &= ~FUSE_CAP_ATOMIC_O_TRUNC;
	/* Link targets never change under a nodeid; "latest" is
	 * invalidated explicitly when it moves. */
	if (conn->capable & FUSE_CAP_CACHE_SYMLINKS)
		conn->want |= FUSE_CAP_CACHE_SYMLINKS;
}

const struct fuse_lowlevel_ops ckptfs_ops = {
	.init = ckptfs_op_init,
	.destroy = ckptfs_op_destroy,
	.lookup = ckptfs_op_lookup,
	.forget = ckptfs_op_forget,
	.forget_multi = ckptfs_op_forget_multi,
	.getattr = ckptfs_op_getattr,
	.readlink = ckptfs_op_readlink,
	.opendir = ckptfs_op_opendir,
	.readdir = ckptfs_op_readdir,
	.readdirplus = ckptfs_op_readdirplus,
	.open = ckptfs_op_open,
	.read = ckptfs_op_read,
	.write = ckptfs_op_write,
	.getxattr = ckptfs_op_getxattr,
	.listxattr = ckptfs_op_listxattr,
	.mkdir = ckptfs_op_mkdir,
	.rmdir = ckptfs_op_rmdir,
	.unlink = ckptfs_op_unlink,
	.rename = ckptfs_op_rename,
	.mknod = ckptfs_op_mknod,
	.create = ckptfs_op_create,
	.symlink = ckptfs_op_symlink,
	.link = ckptfs_op_link,
	.setattr = ckptfs_op_setattr,
	.setxattr = ckptfs_op_setxattr,
	.removexattr = ckptfs_op_removexattr,
	.statfs = ckptfs_op_statfs,
};
