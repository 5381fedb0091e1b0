/*
 * pack.c - writing a checkpoint from tier directories.
 *
 * Walks each tier, asks ckpt_policy_check() about every name (so nothing
 * the mount would hide is ever written), records mode, mtime to the
 * nanosecond, size and xxh3-128, and writes the archive with libzip under
 * a temporary name that is never a checkpoint name.  Only a complete,
 * fsync'ed file is renamed into place: either OUT exists whole, or
 * nothing does.
 */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>
#include <zip.h>

#include "internal.h"

static const char *const tier_name[CKPT_TIER_COUNT] = {"world", "workspace",
						       "session"};

struct pentry {
	char *path; /* "workspace/src/a.c" */
	char *src;  /* absolute source path */
	enum ckpt_type type;
	unsigned mode;
	uint64_t size;
	int64_t mtime_ns;
	uint8_t hash[16];
	char *target;
};

struct pack {
	const struct ckpt_pack_opts *o;
	struct pentry *e;
	size_t n, cap;
	struct ckpt_err *err;
};

/* The real filesystem as a resolver, so symlink chains on disk are judged
 * exactly as the index judges them in an archive. */
static int disk_lookup(void *ctx, const char *path, size_t len, char *target,
		       size_t size, size_t *tlen)
{
	const struct ckpt_pack_opts *o = ctx;
	char full[8192];
	struct stat st;

	for (int t = 0; t < CKPT_TIER_COUNT; t++) {
		size_t tl = strlen(tier_name[t]);
		if (!o->tier_dir[t] || len < tl ||
		    memcmp(path, tier_name[t], tl) != 0 ||
		    (len > tl && path[tl] != '/'))
			continue;
		if ((size_t)snprintf(full, sizeof(full), "%s%.*s",
				     o->tier_dir[t], (int)(len - tl),
				     path + tl) >= sizeof(full) ||
		    lstat(full, &st) < 0)
			return -ENOENT;
		if (S_ISLNK(st.st_mode)) {
			ssize_t r = readlink(full, target, size - 1);
			if (r < 0)
				return -ENOENT;
			target[r] = '\0';
			*tlen = (size_t)r;
			return CKPT_SYMLINK;
		}
		return S_ISDIR(st.st_mode) ? CKPT_DIR : CKPT_FILE;
	}
	return -ENOENT;
}

static int hash_file(const char *src, uint64_t *size, uint8_t out[16])
{
	XXH3_state_t *xs = XXH3_createState();
	uint8_t buf[64 * 1024];
	XXH128_canonical_t c;
	uint64_t total = 0;
	int fd, rc = 0;
	ssize_t n;

	if (!xs)
		return -ENOMEM;
	fd = open(src, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0) {
		rc = -errno;
		goto out;
	}
	XXH3_128bits_reset(xs);
	while ((n = read(fd, buf, sizeof(buf))) != 0) {
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			rc = -errno;
			break;
		}
		XXH3_128bits_update(xs, buf, (size_t)n);
		total += (uint64_t)n;
	}
	close(fd);
	XXH128_canonicalFromHash(&c, XXH3_128bits_digest(xs));
	memcpy(out, c.digest, 16);
	*size = total;
out:
	XXH3_freeState(xs);
	return rc;
}

static int add(struct pack *p, const char *path, const char *src,
	       const struct stat *st)
{
	struct pentry *e;
	struct ckpt_policy_entry pe;
	struct ckpt_resolver r = {disk_lookup, (void *)p->o};
	char target[4096];
	ssize_t tl = 0;
	int rc;

	pe.path = path;
	pe.len = strlen(path);
	pe.target = NULL;
	pe.target_len = 0;
	if (S_ISREG(st->st_mode))
		pe.type = CKPT_FILE;
	else if (S_ISDIR(st->st_mode))
		pe.type = CKPT_DIR;
	else if (S_ISLNK(st->st_mode))
		pe.type = CKPT_SYMLINK;
	else
		pe.type = CKPT_SPECIAL;
	if (pe.type == CKPT_SYMLINK) {
		tl = readlink(src, target, sizeof(target) - 1);
		if (tl < 0)
			return 1; /* vanished: nothing to record */
		target[tl] = '\0';
		pe.target = target;
		pe.target_len = (size_t)tl;
	}
	if (ckpt_policy_check(p->o->policy_flags, &pe, &r, NULL) < 0)
		return 1; /* left out, and not descended into */
	if (p->n == p->cap) {
		size_t cap = p->cap ? p->cap * 2 : 256;
		struct pentry *ne = realloc(p->e, cap * sizeof(*ne));
		if (!ne)
			return -ENOMEM;
		p->e = ne;
		p->cap = cap;
	}
	e = &p->e[p->n];
	memset(e, 0, sizeof(*e));
	e->path = strdup(path);
	e->src = strdup(src);
	e->target = pe.type == CKPT_SYMLINK ? strdup(target) : NULL;
	if (!e->path || !e->src || (pe.type == CKPT_SYMLINK && !e->target)) {
		free(e->path);
		free(e->src);
		free(e->target);
		return -ENOMEM;
	}
	p->n++;
	e->type = pe.type;
	e->mode = st->st_mode & 0777; /* no setuid/setgid/sticky, ever */
	e->mtime_ns =
		(int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec;
	if (e->type == CKPT_FILE) {
		rc = hash_file(src, &e->size, e->hash);
		if (rc < 0)
			return ckpt_err_set(p->err, rc, "io", path,
					    strlen(path), "cannot read: %s",
					    strerror(-rc));
	}
	return 0;
}

static int walk(struct pack *p, char *path, size_t plen, char *src, size_t slen)
{
	DIR *d = opendir(src);
	struct dirent *de;
	int rc = 0;

	if (!d)
		return ckpt_err_set(p->err, -errno, "io", path, plen,
				    "cannot list: %s", strerror(errno));
	while (rc >= 0 && (de = readdir(d))) {
		size_t nl = strlen(de->d_name);
		struct stat st;

		if (strcmp(de->d_name, ".") == 0 ||
		    strcmp(de->d_name, "..") == 0)
			continue;
		if (plen + 1 + nl >= 4096 || slen + 1 + nl >= 8192) {
			rc = ckpt_err_set(p->err, -ENAMETOOLONG, "io", path,
					  plen, "path too long");
			break;
		}
		path[plen] = '/';
		memcpy(path + plen + 1, de->d_name, nl + 1);
		src[slen] = '/';
		memcpy(src + slen + 1, de->d_name, nl + 1);
		if (lstat(src, &st) < 0)
			continue; /* vanished while listing */
		rc = add(p, path, src, &st);
		if (rc == 0 && S_ISDIR(st.st_mode))
			rc = walk(p, path, plen + 1 + nl, src, slen + 1 + nl);
		if (rc > 0)
			rc = 0;
		path[plen] = '\0';
		src[slen] = '\0';
	}
	closedir(d);
	return rc;
}

static int cmp_pentry(const void *x, const void *y)
{
	return strcmp(((const struct pentry *)x)->path,
		      ((const struct pentry *)y)->path);
}

static void add_raw_int(cJSON *o, const char *key, long long v)
{
	char num[32];

	/* cJSON stores numbers as doubles; sizes and nanosecond times must
	 * be written exactly. */
	snprintf(num, sizeof(num), "%lld", v);
	cJSON_AddRawToObject(o, key, num);
}

static char *manifest_text(const struct pack *p, int64_t created)
{
	const struct ckpt_pack_opts *o = p->o;
	cJSON *m = cJSON_CreateObject(), *arr;
	char when[40], hex[33];
	char *text = NULL;

	if (!m)
		return NULL;
	ckpt_format_time(created, when);
	cJSON_AddStringToObject(m, "format", "ckpt");
	cJSON_AddNumberToObject(m, "version", 1);
	cJSON_AddStringToObject(m, "name", o->name ? o->name : "");
	cJSON_AddStringToObject(m, "created", when);
	cJSON_AddStringToObject(m, "origin", o->origin ? o->origin : "user");
	if (o->parent)
		cJSON_AddStringToObject(m, "parent", o->parent);
	else
		cJSON_AddNullToObject(m, "parent");
	arr = cJSON_AddArrayToObject(m, "entries");
	for (size_t i = 0; arr && i < p->n; i++) {
		const struct pentry *e = &p->e[i];
		cJSON *r = cJSON_CreateObject();

		if (!r)
			goto out;
		cJSON_AddItemToArray(arr, r);
		cJSON_AddStringToObject(r, "path", e->path);
		cJSON_AddStringToObject(r, "type",
					e->type == CKPT_FILE  ? "file"
					: e->type == CKPT_DIR ? "dir"
							      : "symlink");
		if (e->type != CKPT_SYMLINK)
			add_raw_int(r, "mode", e->mode);
		if (e->type == CKPT_FILE) {
			add_raw_int(r, "size", (long long)e->size);
			for (int k = 0; k < 16; k++)
				snprintf(hex + 2 * k, 3, "%02x", e->hash[k]);
			cJSON_AddStringToObject(r, "xxh3_128", hex);
		}
		if (e->type == CKPT_SYMLINK)
			cJSON_AddStringToObject(r, "target", e->target);
		add_raw_int(r, "mtime_ns", e->mtime_ns);
	}
	text = cJSON_Print(m);
out:
	cJSON_Delete(m);
	return text;
}

static int zip_fail(struct pack *p, zip_t *za, const char *what)
{
	int rc = ckpt_err_set(p->err, -EIO, "io", NULL, 0, "%s: %s", what,
			      za ? zip_strerror(za) : "cannot create archive");
	return rc;
}

static int write_zip(struct pack *p, const char *tmp, const char *manifest)
{
	int zerr = 0;
	zip_t *za = zip_open(tmp, ZIP_CREATE | ZIP_EXCL, &zerr);
	zip_source_t *src;
	zip_int64_t idx;

	if (!za)
		return zip_fail(p, NULL, tmp);
	src = zip_source_buffer(za, manifest, strlen(manifest), 0);
	if (!src || (idx = zip_file_add(za, "manifest.json", src,
					ZIP_FL_ENC_UTF_8)) < 0) {
		zip_source_free(src);
		goto bad;
	}
	for (size_t i = 0; i < p->n; i++) {
		const struct pentry *e = &p->e[i];
		zip_uint32_t attr;
		char name[4200];

		if (e->type == CKPT_DIR) {
			snprintf(name, sizeof(name), "%s", e->path);
			idx = zip_dir_add(za, name, ZIP_FL_ENC_UTF_8);
			attr = (zip_uint32_t)(S_IFDIR | e->mode) << 16;
		} else {
			if (e->type == CKPT_FILE)
				src = zip_source_file(za, e->src, 0, -1);
			else
				src = zip_source_buffer(za, e->target,
							strlen(e->target), 0);
			if (!src)
				goto bad;
			idx = zip_file_add(za, e->path, src, ZIP_FL_ENC_UTF_8);
			if (idx < 0) {
				zip_source_free(src);
				goto bad;
			}
			attr = (zip_uint32_t)((e->type == CKPT_FILE ? S_IFREG
								    : S_IFLNK) |
					      e->mode)
			       << 16;
			if (e->type == CKPT_SYMLINK)
				zip_set_file_compression(za, (zip_uint64_t)idx,
							 ZIP_CM_STORE, 0);
		}
		if (idx < 0 ||
		    zip_file_set_external_attributes(za, (zip_uint64_t)idx, 0,
						     ZIP_OPSYS_UNIX,
						     attr) < 0 ||
		    zip_file_set_mtime(za, (zip_uint64_t)idx,
				       (time_t)(e->mtime_ns / 1000000000),
				       0) < 0)
			goto bad;
	}
	if (zip_close(za) < 0)
		goto bad;
	return 0;
bad:
	zip_fail(p, za, "writing archive");
	zip_discard(za);
	return p->err ? p->err->code : -EIO;
}

/* fsync a file or directory by path. */
static int sync_path(const char *path, int flags)
{
	int fd = open(path, flags | O_CLOEXEC), rc = 0;

	if (fd < 0)
		return -errno;
	if (fsync(fd) < 0)
		rc = -errno;
	if (close(fd) < 0 && rc == 0)
		rc = -errno;
	return rc;
}

int ckpt_pack(const struct ckpt_pack_opts *o, const char *out_path,
	      struct ckpt_err *err)
{
	struct pack p = {.o = o, .err = err};
	char path[4096], src[8192], tmp[4200] = "", dir[4200];
	char *manifest = NULL;
	struct timespec now;
	int rc = 0;

	for (int t = 0; t < CKPT_TIER_COUNT && rc >= 0; t++) {
		struct stat st;
		if (!o->tier_dir[t])
			continue;
		if (stat(o->tier_dir[t], &st) < 0 || !S_ISDIR(st.st_mode)) {
			rc = ckpt_err_set(err, -ENOTDIR, "io", o->tier_dir[t],
					  strlen(o->tier_dir[t]),
					  "tier source is not a directory");
			break;
		}
		snprintf(path, sizeof(path), "%s", tier_name[t]);
		snprintf(src, sizeof(src), "%s", o->tier_dir[t]);
		rc = add(&p, path, src, &st);
		if (rc == 0)
			rc = walk(&p, path, strlen(path), src, strlen(src));
		if (rc > 0)
			rc = 0;
	}
	if (rc < 0)
		goto out;
	if (p.n)
		qsort(p.e, p.n, sizeof(*p.e), cmp_pentry);
	clock_gettime(CLOCK_REALTIME, &now);
	manifest = manifest_text(
		&p, o->created_ns
			    ? o->created_ns
			    : (int64_t)now.tv_sec * 1000000000 + now.tv_nsec);
	if (!manifest) {
		rc = ckpt_err_set(err, -ENOMEM, "io", NULL, 0, "out of memory");
		goto out;
	}
	/* A leading '.' and a suffix other than .ckpt: never shown as a
	 * checkpoint while it is being written. */
	snprintf(path, sizeof(path), "%s", out_path);
	snprintf(dir, sizeof(dir), "%s", dirname(path));
	snprintf(path, sizeof(path), "%s", out_path);
	if ((size_t)snprintf(tmp, sizeof(tmp), "%s/.%s.tmp-%ld", dir,
			     basename(path), (long)getpid()) >= sizeof(tmp)) {
		tmp[0] = '\0';
		rc = ckpt_err_set(err, -ENAMETOOLONG, "io", NULL, 0,
				  "output path too long");
		goto out;
	}
	unlink(tmp);
	rc = write_zip(&p, tmp, manifest);
	if (rc < 0)
		goto out;
	/* Durable before visible: the data, then the name, then the
	 * directory entry that holds the name. */
	if ((rc = sync_path(tmp, O_RDONLY)) < 0 ||
	    (rc = renameat2(AT_FDCWD, tmp, AT_FDCWD, out_path,
			    RENAME_NOREPLACE) < 0
			  ? -errno
			  : 0) < 0 ||
	    (rc = sync_path(dir, O_RDONLY | O_DIRECTORY)) < 0) {
		ckpt_err_set(err, rc, "io", out_path, strlen(out_path),
			     "cannot publish: %s", strerror(-rc));
		goto out;
	}
out:
	if (rc < 0 && tmp[0])
		unlink(tmp);
	free(manifest);
	for (size_t i = 0; i < p.n; i++) {
		free(p.e[i].path);
		free(p.e[i].src);
		free(p.e[i].target);
	}
	free(p.e);
	return rc;
}
