/*
 * live.c - the live run as a save would capture it now: what current/
 * shows.
 *
 * Every name passes source_pick(), the decision a save makes, and so do
 * all its ancestors, so current/ never shows what a save would leave out.
 * File content is scanned for secrets when a file is opened, and again
 * around every read (with CKPT_SCAN_MAX_MATCH bytes of context on both
 * sides), so current/ does not hand out a secret that a save would refuse.
 * The source changes under us: nothing here is cached.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"
#include "scan.h"

static const char *const tier_name[CKPT_TIER_COUNT] = {"world", "workspace",
						       "session"};

struct ckpt_live_file {
	int fd;
	uint64_t limit; /* bytes shown: a transcript ends at its last line */
	const struct ckpt_save_opts *o;
	struct ckpt_scan *scan;
	char path[4096];
};

static int tier_of(const struct ckpt_save_opts *o, const char *path, size_t *tl)
{
	for (int t = 0; t < CKPT_TIER_COUNT; t++) {
		size_t n = strlen(tier_name[t]);
		if (strncmp(path, tier_name[t], n) == 0 &&
		    (path[n] == '\0' || path[n] == '/')) {
			if (!o->tier_dir[t] ||
			    (t == CKPT_TIER_SESSION &&
			     (o->policy_flags & CKPT_POLICY_WORKSPACE_ONLY)))
				return -ENOENT;
			*tl = n;
			return t;
		}
	}
	return -ENOENT;
}

/* Checks path and every ancestor as a save would; fills src and st. */
static int judge(const struct ckpt_save_opts *o, const char *path, char *src,
		 size_t srcsz, struct stat *st, enum ckpt_type *type)
{
	char target[4096], prefix[4096];
	size_t tl, len = strlen(path);
	int t = tier_of(o, path, &tl), pick = PICK_TAKE;

	if (t < 0 || len >= sizeof(prefix))
		return -ENOENT;
	/* From the tier root down: an excluded directory hides all below. */
	for (size_t end = tl;; end++) {
		if (end < len && path[end] != '/')
			continue;
		memcpy(prefix, path, end);
		prefix[end] = '\0';
		if ((size_t)snprintf(src, srcsz, "%s%s", o->tier_dir[t],
				     prefix + tl) >= srcsz ||
		    lstat(src, st) < 0)
			return -ENOENT;
		pick = source_pick(o, (enum ckpt_tier)t, prefix, src, st,
				   target, sizeof(target), type);
		if (pick == PICK_SKIP || pick == PICK_REPORT ||
		    (pick == PICK_DESCEND && end < len &&
		     !S_ISDIR(st->st_mode)))
			return -ENOENT;
		if (end >= len)
			break;
	}
	return 0;
}

int ckpt_live_stat(const struct ckpt_save_opts *o, const char *path,
		   struct ckpt_stat *cs)
{
	char src[8192];
	struct stat st;
	enum ckpt_type type;
	int rc = judge(o, path, src, sizeof(src), &st, &type);

	if (rc < 0)
		return rc;
	memset(cs, 0, sizeof(*cs));
	cs->type = type;
	cs->mode = ckpt_policy_mode(type, st.st_mode & 07777);
	cs->mtime_ns =
		(int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
	cs->ctime_ns =
		(int64_t)st.st_ctim.tv_sec * 1000000000 + st.st_ctim.tv_nsec;
	cs->ino = (uint64_t)st.st_ino;
	/* Directories are not counted through: 1 tells find(1) and fts not
	 * to trust the count, as on other filesystems that do not know. */
	cs->nlink = 1;
	cs->size = type == CKPT_DIR ? 0 : (uint64_t)st.st_size;
	if (type == CKPT_FILE && is_transcript(path)) {
		int fd = open(src,
			      O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
		cs->size = fd < 0 ? 0 : whole_lines(fd, cs->size);
		if (fd >= 0)
			close(fd);
	}
	return 0;
}

bool ckpt_stat_same(const struct ckpt_stat *a, const struct ckpt_stat *b)
{
	return a->type == b->type && a->size == b->size &&
	       a->mtime_ns == b->mtime_ns && a->ctime_ns == b->ctime_ns &&
	       a->ino == b->ino;
}

int ckpt_live_list(const struct ckpt_save_opts *o, const char *path,
		   int (*fn)(void *ctx, const char *name), void *ctx)
{
	char src[8192], child[4096], csrc[8400], target[4096];
	struct stat st;
	enum ckpt_type type;
	struct dirent *de;
	size_t tl;
	int rc = 0, t;
	DIR *d;

	if (path[0] == '\0') {
		/* current/ itself: the tiers a save would take. */
		for (t = 0; t < CKPT_TIER_COUNT && rc == 0; t++)
			if (tier_of(o, tier_name[t], &tl) == t)
				rc = fn(ctx, tier_name[t]);
		return rc < 0 ? rc : 0;
	}
	rc = judge(o, path, src, sizeof(src), &st, &type);
	if (rc < 0)
		return rc;
	if (type != CKPT_DIR)
		return -ENOTDIR;
	t = tier_of(o, path, &tl);
	d = opendir(src);
	if (!d)
		return -errno;
	while (rc == 0 && (de = readdir(d))) {
		int pick;
		if (strcmp(de->d_name, ".") == 0 ||
		    strcmp(de->d_name, "..") == 0)
			continue;
		if ((size_t)snprintf(child, sizeof(child), "%s/%s", path,
				     de->d_name) >= sizeof(child))
			continue;
		if ((size_t)snprintf(csrc, sizeof(csrc), "%s/%s", src,
				     de->d_name) >= sizeof(csrc) ||
		    lstat(csrc, &st) < 0)
			continue;
		pick = source_pick(o, (enum ckpt_tier)t, child, csrc, &st,
				   target, sizeof(target), &type);
		if (pick == PICK_TAKE ||
		    (pick == PICK_DESCEND && S_ISDIR(st.st_mode)))
			rc = fn(ctx, de->d_name);
	}
	closedir(d);
	return rc < 0 ? rc : 0;
}

ssize_t ckpt_live_readlink(const struct ckpt_save_opts *o, const char *path,
			   char *buf, size_t size)
{
	char src[8192];
	struct stat st;
	enum ckpt_type type;
	ssize_t n;
	int rc = judge(o, path, src, sizeof(src), &st, &type);

	if (rc < 0)
		return rc;
	if (type != CKPT_SYMLINK)
		return -EINVAL;
	n = readlink(src, buf, size - 1);
	if (n < 0)
		return -errno;
	buf[n] = '\0';
	return n;
}

/* Scans [off, off + len) of the file; -EPERM with err on a finding. */
static int scan_range(struct ckpt_live_file *f, uint64_t off, uint64_t len,
		      struct ckpt_err *err)
{
	uint8_t buf[64 * 1024];
	struct ckpt_finding fd;
	int hit = 0;

	ckpt_scan_reset(f->scan);
	while (len > 0 && !hit) {
		size_t c = len < sizeof(buf) ? (size_t)len : sizeof(buf);
		ssize_t n = pread(f->fd, buf, c, (off_t)off);
		if (n <= 0)
			break;
		hit = ckpt_scan_feed(f->scan, buf, (size_t)n, &fd);
		off += (uint64_t)n;
		len -= (uint64_t)n;
	}
	if (!hit)
		hit = ckpt_scan_finish(f->scan, &fd);
	explicit_bzero(buf, sizeof(buf));
	if (!hit)
		return 0;
	ckpt_err_set(err, -EPERM, fd.rule, f->path, strlen(f->path),
		     "secret-shaped content (%s) at line %u, fingerprint %s: "
		     "not shown",
		     fd.rule, fd.line, fd.fingerprint);
	if (err) {
		err->line = fd.line;
		snprintf(err->fingerprint, sizeof(err->fingerprint), "%s",
			 fd.fingerprint);
	}
	return -EPERM;
}

int ckpt_live_open(const struct ckpt_save_opts *o, const char *path,
		   struct ckpt_live_file **out, struct ckpt_err *err)
{
	struct ckpt_live_file *f;
	char src[8192];
	struct stat st;
	enum ckpt_type type;
	int rc = judge(o, path, src, sizeof(src), &st, &type);

	if (rc < 0)
		return rc;
	if (type != CKPT_FILE)
		return -EISDIR;
	f = calloc(1, sizeof(*f));
	if (!f || ckpt_scan_new(o->allow, &f->scan) < 0) {
		free(f);
		return -ENOMEM;
	}
	f->o = o;
	snprintf(f->path, sizeof(f->path), "%s", path);
	f->fd = open(src, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (f->fd < 0 || fstat(f->fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		rc = f->fd < 0 ? -errno : -ENOENT;
		goto bad;
	}
	f->limit = is_transcript(path)
			   ? whole_lines(f->fd, (uint64_t)st.st_size)
			   : (uint64_t)st.st_size;
	rc = scan_range(f, 0, f->limit, err);
	if (rc < 0)
		goto bad;
	*out = f;
	return 0;
bad:
	ckpt_live_close(f);
	return rc;
}

ssize_t ckpt_live_pread(struct ckpt_live_file *f, void *buf, size_t size,
			uint64_t off, struct ckpt_err *err)
{
	uint64_t lo, n;
	ssize_t got;
	int rc;

	if (off >= f->limit)
		return 0;
	n = size < f->limit - off ? size : f->limit - off;
	/* The file may have changed since it was opened: the bytes handed
	 * out, and enough around them to hold any match, are scanned
	 * again. */
	lo = off > CKPT_SCAN_MAX_MATCH ? off - CKPT_SCAN_MAX_MATCH : 0;
	rc = scan_range(f, lo, off + n + CKPT_SCAN_MAX_MATCH - lo, err);
	if (rc < 0)
		return rc;
	got = pread(f->fd, buf, (size_t)n, (off_t)off);
	return got < 0 ? -errno : got;
}

void ckpt_live_close(struct ckpt_live_file *f)
{
	if (!f)
		return;
	if (f->fd >= 0)
		close(f->fd);
	ckpt_scan_free(f->scan);
	free(f);
}
