/*
 * save.c - taking a checkpoint of tier directories.
 *
 * One save: walk the tiers, asking the selection (what a save takes) and
 * then ckpt_policy_check() (what may ever be stored) about every name;
 * then read each file once, and from that one buffer update its CRC and
 * xxh3-128, scan it for secrets and compress it.  An entry that matches
 * the parent checkpoint (path, type, size, mtime) is copied from the
 * parent's compressed bytes instead, unread.  The manifest goes last,
 * when every hash is known.  The archive is written under a temporary
 * name that is never a checkpoint name and published only once complete
 * and durable: either STORE/NAME.ckpt exists whole, or nothing does.
 */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>
#include <zlib.h>

#include "internal.h"
#include "scan.h"
#include "select.h"

#define CHUNK	(256u * 1024)
#define TMP_TAG ".tmp-"

static const char *const tier_name[CKPT_TIER_COUNT] = {"world", "workspace",
						       "session"};

struct sentry {
	char *path; /* in the archive: "workspace/src/a.c" */
	char *src;  /* on disk */
	enum ckpt_type type;
	enum ckpt_tier tier;
	unsigned mode;
	uint64_t size; /* as stored */
	int64_t mtime_ns;
	char *target;
	uint8_t hash[16];
};

struct save {
	const struct ckpt_save_opts *o;
	struct ckpt_save_result *res;
	struct ckpt_err *err;
	struct sentry *e;
	size_t n, cap;
	struct zipw *w;
	struct ckpt_scan *scan;
	z_stream zs;
	bool zinit;
	uint8_t *in, *out;
	XXH3_state_t *xs;
};

/* ---- choosing what goes in -------------------------------------------- */

static int disk_lookup(void *ctx, const char *path, size_t len, char *target,
		       size_t size, size_t *tlen)
{
	const struct ckpt_save_opts *o = ctx;
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

static bool has_file(void *ctx, const char *name)
{
	char path[8400];
	struct stat st;

	snprintf(path, sizeof(path), "%s/%s", (const char *)ctx, name);
	return lstat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static void skipped(struct save *sv, const char *path)
{
	if (sv->res->skipped++ == 0)
		ckpt_escape(path, strlen(path), sv->res->skipped_sample,
			    sizeof(sv->res->skipped_sample));
}

int source_pick(const struct ckpt_save_opts *o, enum ckpt_tier tier,
		const char *path, const char *src, const struct stat *st,
		char *target, size_t tsize, enum ckpt_type *type)
{
	struct ckpt_policy_entry pe = {path, strlen(path), CKPT_FILE, NULL, 0};
	struct ckpt_resolver r = {disk_lookup, (void *)o};
	bool is_dir = S_ISDIR(st->st_mode), descend_only = false;

	if (S_ISDIR(st->st_mode))
		pe.type = CKPT_DIR;
	else if (S_ISLNK(st->st_mode))
		pe.type = CKPT_SYMLINK;
	else if (!S_ISREG(st->st_mode))
		pe.type = CKPT_SPECIAL;
	*type = pe.type;
	/* The tier root itself is always recorded. */
	if (o->select && strchr(path, '/')) {
		const char *rel = strchr(path, '/') + 1;
		switch (ckpt_select_pick(o->select, tier, rel, is_dir, has_file,
					 (void *)src)) {
		case CKPT_PICK_SKIP:
			return PICK_SKIP;
		case CKPT_PICK_DESCEND:
			descend_only = true;
			break;
		case CKPT_PICK_TAKE:
			break;
		}
	}
	if (pe.type == CKPT_SYMLINK) {
		ssize_t tl = readlink(src, target, tsize - 1);
		if (tl < 0)
			return PICK_SKIP; /* vanished */
		target[tl] = '\0';
		pe.target = target;
		pe.target_len = (size_t)tl;
	}
	if (ckpt_policy_check(o->policy_flags, &pe, &r, NULL) < 0)
		return pe.type == CKPT_SYMLINK || pe.type == CKPT_SPECIAL
			       ? PICK_REPORT
			       : PICK_SKIP;
	return descend_only ? PICK_DESCEND : PICK_TAKE;
}

/* Returns 1 to descend into a directory without recording it, 0 when
 * recorded (directories: and descend), 2 when left out. */
static int consider(struct save *sv, enum ckpt_tier tier, const char *path,
		    const char *src, const struct stat *st)
{
	char target[4096];
	struct sentry *e;
	enum ckpt_type type;
	int pick = source_pick(sv->o, tier, path, src, st, target,
			       sizeof(target), &type);

	if (pick == PICK_REPORT) {
		/* Credentials leave no trace; what a user may wonder about
		 * (an escaping link, a FIFO) is reported. */
		skipped(sv, path);
		return 2;
	}
	if (pick == PICK_SKIP)
		return 2;
	if (pick == PICK_DESCEND)
		return 1;
	if (sv->n == sv->cap) {
		size_t cap = sv->cap ? sv->cap * 2 : 256;
		struct sentry *ne = realloc(sv->e, cap * sizeof(*ne));
		if (!ne)
			return -ENOMEM;
		sv->e = ne;
		sv->cap = cap;
	}
	e = &sv->e[sv->n];
	memset(e, 0, sizeof(*e));
	e->path = strdup(path);
	e->src = strdup(src);
	e->target = type == CKPT_SYMLINK ? strdup(target) : NULL;
	if (!e->path || !e->src || (type == CKPT_SYMLINK && !e->target)) {
		free(e->path);
		free(e->src);
		free(e->target);
		return -ENOMEM;
	}
	sv->n++;
	e->type = type;
	e->tier = tier;
	e->mode = st->st_mode & 0777; /* never setuid, setgid or sticky */
	e->size = S_ISREG(st->st_mode) ? (uint64_t)st->st_size : 0;
	e->mtime_ns =
		(int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec;
	return 0;
}

static int walk(struct save *sv, enum ckpt_tier tier, char *path, size_t plen,
		char *src, size_t slen)
{
	DIR *d = opendir(src);
	struct dirent *de;
	int rc = 0;

	if (!d)
		return ckpt_err_set(sv->err, -errno, "io", path, plen,
				    "cannot list: %s", strerror(errno));
	while (rc >= 0 && (de = readdir(d))) {
		size_t nl = strlen(de->d_name);
		struct stat st;

		if (strcmp(de->d_name, ".") == 0 ||
		    strcmp(de->d_name, "..") == 0)
			continue;
		if (plen + 1 + nl >= 4096 || slen + 1 + nl >= 8192) {
			rc = ckpt_err_set(sv->err, -ENAMETOOLONG, "io", path,
					  plen, "path too long");
			break;
		}
		path[plen] = '/';
		memcpy(path + plen + 1, de->d_name, nl + 1);
		src[slen] = '/';
		memcpy(src + slen + 1, de->d_name, nl + 1);
		if (lstat(src, &st) == 0) {
			rc = consider(sv, tier, path, src, &st);
			if (rc >= 0 && rc < 2 && S_ISDIR(st.st_mode))
				rc = walk(sv, tier, path, plen + 1 + nl, src,
					  slen + 1 + nl);
			if (rc > 0)
				rc = 0;
			if (rc == -ENOMEM)
				ckpt_err_set(sv->err, rc, "io", NULL, 0,
					     "out of memory");
		}
		path[plen] = '\0';
		src[slen] = '\0';
	}
	closedir(d);
	return rc;
}

static int cmp_sentry(const void *x, const void *y)
{
	return strcmp(((const struct sentry *)x)->path,
		      ((const struct sentry *)y)->path);
}

static int collect(struct save *sv)
{
	const struct ckpt_save_opts *o = sv->o;
	char path[4096], src[8192];
	int rc = 0;

	for (int t = 0; t < CKPT_TIER_COUNT && rc >= 0; t++) {
		struct stat st;

		if (!o->tier_dir[t])
			continue;
		if (t == CKPT_TIER_SESSION &&
		    (o->policy_flags & CKPT_POLICY_WORKSPACE_ONLY))
			continue;
		if (stat(o->tier_dir[t], &st) < 0 || !S_ISDIR(st.st_mode))
			return ckpt_err_set(sv->err, -ENOENT, "source",
					    o->tier_dir[t],
					    strlen(o->tier_dir[t]),
					    "tier source is not a directory");
		snprintf(path, sizeof(path), "%s", tier_name[t]);
		snprintf(src, sizeof(src), "%s", o->tier_dir[t]);
		rc = consider(sv, (enum ckpt_tier)t, path, src, &st);
		if (rc >= 0 && rc < 2)
			rc = walk(sv, (enum ckpt_tier)t, path, strlen(path),
				  src, strlen(src));
		if (rc > 0)
			rc = 0;
	}
	if (rc < 0)
		return rc;
	if (sv->n)
		qsort(sv->e, sv->n, sizeof(*sv->e), cmp_sentry);
	if (o->progress) {
		uint64_t bytes = 0, files = 0;
		for (size_t i = 0; i < sv->n; i++)
			if (sv->e[i].type == CKPT_FILE)
				files++, bytes += sv->e[i].size;
		atomic_store(&o->progress->files_total, files);
		atomic_store(&o->progress->bytes_total, bytes);
	}
	return 0;
}

/* ---- writing one file ------------------------------------------------- */

/* Formats that deflate cannot shrink, by their first bytes. */
static bool compressed_magic(const uint8_t *p, size_t n)
{
	static const struct {
		unsigned off, len;
		const char *magic;
	} m[] = {
		{0, 8, "\x89PNG\r\n\x1a\n"},
		{0, 3, "\xff\xd8\xff"},
		{0, 4, "GIF8"},
		{0, 4, "PK\x03\x04"},
		{0, 2, "\x1f\x8b"},
		{0, 3, "BZh"},
		{0, 6,
		 "\xfd"
		 "7zXZ\x00"},
		{0, 4, "\x28\xb5\x2f\xfd"},
		{0, 6, "7z\xbc\xaf\x27\x1c"},
		{0, 4, "\x04\x22\x4d\x18"},
		{8, 4, "WEBP"},
		{4, 4, "ftyp"},
		{0, 4, "OggS"},
		{0, 4, "fLaC"},
		{0, 3, "ID3"},
		{0, 4, "Rar!"},
	};

	for (size_t i = 0; i < sizeof(m) / sizeof(m[0]); i++)
		if (n >= m[i].off + m[i].len &&
		    memcmp(p + m[i].off, m[i].magic, m[i].len) == 0)
			return true;
	return false;
}

static int read_some(int fd, uint8_t *buf, size_t want, size_t *got)
{
	*got = 0;
	while (*got < want) {
		ssize_t n = read(fd, buf + *got, want - *got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			break;
		*got += (size_t)n;
	}
	return 0;
}

/* A transcript being appended to ends mid-line; only whole lines are
 * stored, so a resumed conversation starts at its last complete message.
 * Returns the length up to and including the last newline. */
uint64_t whole_lines(int fd, uint64_t size)
{
	uint8_t buf[4096];
	uint64_t end = size;

	while (end > 0) {
		size_t n = end < sizeof(buf) ? (size_t)end : sizeof(buf);
		ssize_t r = pread(fd, buf, n, (off_t)(end - n));
		if (r != (ssize_t)n)
			return 0;
		for (size_t i = n; i-- > 0;)
			if (buf[i] == '\n')
				return end - n + i + 1;
		end -= n;
	}
	return 0;
}

bool is_transcript(const char *path)
{
	size_t n = strlen(path);

	return strncmp(path, "session/", 8) == 0 && n > 6 &&
	       strcmp(path + n - 6, ".jsonl") == 0;
}

static int secret(struct save *sv, const struct sentry *e,
		  const struct ckpt_finding *f)
{
	/* The buffers may hold the secret: nothing of it outlives the
	 * refusal. */
	explicit_bzero(sv->in, CHUNK);
	explicit_bzero(sv->out, CHUNK + 1024);
	ckpt_err_set(sv->err, -EPERM, f->rule, e->path, strlen(e->path),
		     "secret-shaped content (%s) at line %u, fingerprint %s: "
		     "remove it, exclude the file, or allow the fingerprint "
		     "with secrets_allow",
		     f->rule, f->line, f->fingerprint);
	sv->err->line = f->line;
	snprintf(sv->err->fingerprint, sizeof(sv->err->fingerprint), "%s",
		 f->fingerprint);
	return -EPERM;
}

/* Deflates in[0..n) (finishing the stream if fin) and writes the output. */
static int deflate_out(struct save *sv, const uint8_t *in, size_t n, bool fin,
		       uint64_t *csize)
{
	int zr;

	sv->zs.next_in = (Bytef *)in;
	sv->zs.avail_in = (uInt)n;
	do {
		size_t made;
		sv->zs.next_out = sv->out;
		sv->zs.avail_out = CHUNK + 1024;
		zr = deflate(&sv->zs, fin ? Z_FINISH : Z_NO_FLUSH);
		if (zr == Z_STREAM_ERROR)
			return -EIO;
		made = CHUNK + 1024 - sv->zs.avail_out;
		if (made && zipw_data(sv->w, sv->out, made) < 0)
			return -EIO;
		*csize += made;
	} while (sv->zs.avail_out == 0 || (fin && zr != Z_STREAM_END));
	return 0;
}

/* Deflates the first chunk into sv->out with a sync flush, so its whole
 * output is known before the method is chosen; the stream goes on from
 * there if deflate wins.  Returns the bytes produced. */
static size_t deflate_trial(struct save *sv, size_t n)
{
	sv->zs.next_in = sv->in;
	sv->zs.avail_in = (uInt)n;
	sv->zs.next_out = sv->out;
	sv->zs.avail_out = CHUNK + 1024;
	/* CHUNK + 1024 holds deflate's worst case for CHUNK bytes. */
	deflate(&sv->zs, Z_SYNC_FLUSH);
	return CHUNK + 1024 - sv->zs.avail_out;
}

static int write_failed(struct save *sv, const char *path)
{
	int rc = zipw_error(sv->w) ? zipw_error(sv->w) : -EIO;

	return ckpt_err_set(sv->err, rc, "io", path, path ? strlen(path) : 0,
			    "cannot write the checkpoint: %s", strerror(-rc));
}

static int write_file(struct save *sv, struct sentry *e)
{
	uint64_t limit = UINT64_MAX, done = 0, csize = 0;
	uint32_t crc = 0;
	struct stat st;
	struct ckpt_finding f;
	uint16_t method = ZIP_METHOD_DEFLATE;
	XXH128_canonical_t c;
	size_t got;
	bool first = true;
	int fd, rc = 0;

	fd = open(e->src, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		rc = -errno;
		if (fd >= 0)
			close(fd);
		/* Vanished or replaced by something else since the walk:
		 * the checkpoint holds what existed when it was read. */
		return rc == -ENOENT || rc == 0
			       ? 1
			       : ckpt_err_set(sv->err, rc, "io", e->path,
					      strlen(e->path),
					      "cannot read: %s", strerror(-rc));
	}
	if (is_transcript(e->path))
		limit = whole_lines(fd, (uint64_t)st.st_size);
	ckpt_scan_reset(sv->scan);
	XXH3_128bits_reset(sv->xs);
	/* At least one pass, even for nothing to read: the first pass
	 * writes the entry's header. */
	for (;;) {
		size_t want =
			limit - done < CHUNK ? (size_t)(limit - done) : CHUNK;
		rc = read_some(fd, sv->in, want, &got);
		if (rc < 0) {
			ckpt_err_set(sv->err, rc, "io", e->path,
				     strlen(e->path), "read failed: %s",
				     strerror(-rc));
			goto out;
		}
		if (got == 0 && !first)
			break;
		if (ckpt_scan_feed(sv->scan, sv->in, got, &f) == 1) {
			rc = secret(sv, e, &f);
			goto out;
		}
		crc = (uint32_t)crc32(crc, sv->in, (uInt)got);
		XXH3_128bits_update(sv->xs, sv->in, got);
		if (first) {
			size_t trial = 0;

			deflateReset(&sv->zs);
			/* Formats that are compressed already are stored; so
			 * is anything the first chunk shows deflate cannot
			 * shrink by a 64th. */
			if (compressed_magic(sv->in, got))
				method = ZIP_METHOD_STORE;
			else if ((trial = deflate_trial(sv, got)) + got / 64 >=
					 got &&
				 got > 0)
				method = ZIP_METHOD_STORE;
			rc = zipw_begin(sv->w, e->path, strlen(e->path),
					S_IFREG | e->mode, e->mtime_ns, method,
					(uint64_t)st.st_size);
			if (rc < 0)
				goto io;
			first = false;
			if (method == ZIP_METHOD_DEFLATE) {
				/* The trial is the stream's beginning. */
				if (trial &&
				    zipw_data(sv->w, sv->out, trial) < 0)
					goto io;
				csize += trial;
				done += got;
				goto counted;
			}
		}
		done += got;
		if (method == ZIP_METHOD_STORE) {
			csize += got;
			if (zipw_data(sv->w, sv->in, got) < 0)
				goto io;
		} else if (deflate_out(sv, sv->in, got, false, &csize) < 0) {
			goto io;
		}
	counted:
		if (sv->o->progress)
			atomic_fetch_add(&sv->o->progress->bytes_done, got);
		if (got < want || done >= limit)
			break; /* end of file (it may have shrunk), or limit */
	}
	if (ckpt_scan_finish(sv->scan, &f) == 1) {
		rc = secret(sv, e, &f);
		goto out;
	}
	if (method == ZIP_METHOD_DEFLATE &&
	    deflate_out(sv, NULL, 0, true, &csize) < 0)
		goto io;
	/* Stored as read: the size and hash are of what was stored. */
	e->size = done;
	XXH128_canonicalFromHash(&c, XXH3_128bits_digest(sv->xs));
	memcpy(e->hash, c.digest, 16);
	if (zipw_end(sv->w, crc, csize, done) < 0)
		goto io;
	sv->res->files++;
	sv->res->bytes += done;
	close(fd);
	return 0;
io:
	rc = write_failed(sv, e->path);
out:
	close(fd);
	return rc;
}

/* The parent's bytes for an unchanged entry, copied without inflating:
 * same path, type, size and mtime, and scanned by the same rules. */
static int copy_from_parent(struct save *sv, struct sentry *e)
{
	struct ckpt_archive *p = sv->o->parent;
	const struct node *n;
	uint32_t node = CKPT_NODE_ROOT;
	const char *s = e->path;
	uint8_t *buf = sv->out;
	int64_t data;
	uint64_t left;

	if (!p || !p->scan_rules ||
	    strcmp(p->scan_rules, CKPT_SCAN_RULES_VERSION) != 0)
		return 1;
	while (*s) {
		const char *slash = strchr(s, '/');
		size_t len = slash ? (size_t)(slash - s) : strlen(s);
		if (ckpt_archive_lookup(p, node, s, len, &node) < 0)
			return 1;
		s += len + (slash != NULL);
	}
	n = &p->nodes[node];
	if (n->type != CKPT_FILE || n->z.size != e->size ||
	    n->mtime_ns != e->mtime_ns || n->u.file.hash == NO_HASH ||
	    atomic_load(&p->verified[node]) == VERIFY_BAD)
		return 1;
	data = zip_data_offset(p->fd, &n->z, e->path, strlen(e->path), NULL);
	if (data < 0)
		return 1;
	if (zipw_begin(sv->w, e->path, strlen(e->path), S_IFREG | e->mode,
		       e->mtime_ns, n->z.method, n->z.size) < 0)
		return -EIO;
	for (left = n->z.csize; left > 0;) {
		size_t c = left < CHUNK ? (size_t)left : CHUNK;
		/* Half an entry is written: no falling back from here. */
		if (pread(p->fd, buf, c,
			  (off_t)((uint64_t)data + n->z.csize - left)) !=
		    (ssize_t)c)
			return ckpt_err_set(sv->err, -EIO, "io", e->path,
					    strlen(e->path),
					    "parent checkpoint unreadable");
		if (zipw_data(sv->w, buf, c) < 0)
			return -EIO;
		left -= c;
	}
	memcpy(e->hash, p->hashes[n->u.file.hash], 16);
	if (zipw_end(sv->w, n->z.crc, n->z.csize, n->z.size) < 0)
		return -EIO;
	sv->res->files++;
	sv->res->copied++;
	sv->res->bytes += e->size;
	if (sv->o->progress)
		atomic_fetch_add(&sv->o->progress->bytes_done, e->size);
	return 0;
}

/* ---- the whole archive ------------------------------------------------- */

static void add_int(cJSON *o, const char *key, long long v)
{
	char num[32];

	/* cJSON keeps numbers as doubles; sizes and nanosecond times must
	 * be written exactly. */
	snprintf(num, sizeof(num), "%lld", v);
	cJSON_AddRawToObject(o, key, num);
}

/* run.json from the source, kept as given when it is a small JSON object:
 * it is the harness's to define, and it is scanned like everything else. */
static cJSON *run_metadata(const char *path)
{
	char buf[65536];
	cJSON *run = NULL;
	ssize_t n;
	int fd;

	if (!path)
		return NULL;
	fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0)
		return NULL;
	n = read(fd, buf, sizeof(buf));
	close(fd);
	if (n > 0 && (size_t)n < sizeof(buf))
		run = cJSON_ParseWithLength(buf, (size_t)n);
	if (run && !cJSON_IsObject(run)) {
		cJSON_Delete(run);
		run = NULL;
	}
	return run;
}

static char *manifest_text(struct save *sv, int64_t created)
{
	const struct ckpt_save_opts *o = sv->o;
	cJSON *m = cJSON_CreateObject(), *arr, *run;
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
	if (o->parent_name)
		cJSON_AddStringToObject(m, "parent", o->parent_name);
	else
		cJSON_AddNullToObject(m, "parent");
	run = run_metadata(o->run_json);
	/* The backend that chose the session files is the one recorded,
	 * whatever run.json says. */
	if (o->backend) {
		if (!run)
			run = cJSON_CreateObject();
		if (run) {
			cJSON_DeleteItemFromObject(run, "backend");
			cJSON_AddStringToObject(run, "backend", o->backend);
		}
	}
	if (run)
		cJSON_AddItemToObject(m, "run", run);
	cJSON_AddStringToObject(m, "scan_rules", CKPT_SCAN_RULES_VERSION);
	arr = cJSON_AddArrayToObject(m, "entries");
	for (size_t i = 0; arr && i < sv->n; i++) {
		const struct sentry *e = &sv->e[i];
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
			add_int(r, "mode", e->mode);
		if (e->type == CKPT_FILE) {
			add_int(r, "size", (long long)e->size);
			for (int k = 0; k < 16; k++)
				snprintf(hex + 2 * k, 3, "%02x", e->hash[k]);
			cJSON_AddStringToObject(r, "xxh3_128", hex);
		}
		if (e->type == CKPT_SYMLINK)
			cJSON_AddStringToObject(r, "target", e->target);
		add_int(r, "mtime_ns", e->mtime_ns);
	}
	text = cJSON_Print(m);
out:
	cJSON_Delete(m);
	return text;
}

/* A small entry written whole from memory (a link target, the manifest),
 * scanned like every other byte the save writes. */
/* Scans bytes held in memory; path names them in a refusal. */
static int scan_text(struct save *sv, const char *path, const char *data,
		     size_t len)
{
	struct ckpt_finding f;
	struct sentry e = {.path = (char *)path};

	ckpt_scan_reset(sv->scan);
	if (ckpt_scan_feed(sv->scan, data, len, &f) == 1 ||
	    ckpt_scan_finish(sv->scan, &f) == 1)
		return secret(sv, &e, &f);
	return 0;
}

/* run.json goes into the manifest; it is scanned on its own first, so a
 * refusal names the file the user must fix, with its line. */
static int scan_run(struct save *sv)
{
	char buf[65536];
	ssize_t n;
	int fd, rc;

	if (!sv->o->run_json)
		return 0;
	fd = open(sv->o->run_json,
		  O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0)
		return 0; /* gone: the manifest will not have it either */
	n = read(fd, buf, sizeof(buf));
	close(fd);
	rc = n > 0 ? scan_text(sv, "run.json", buf, (size_t)n) : 0;
	explicit_bzero(buf, sizeof(buf));
	return rc;
}

static int write_small(struct save *sv, const char *path, uint32_t mode,
		       int64_t mtime, const char *data, size_t len)
{
	uint32_t crc = (uint32_t)crc32(0, (const Bytef *)data, (uInt)len);
	int rc = scan_text(sv, path, data, len);

	if (rc < 0)
		return rc;
	if (zipw_begin(sv->w, path, strlen(path), mode, mtime, ZIP_METHOD_STORE,
		       len) < 0 ||
	    zipw_data(sv->w, data, len) < 0 ||
	    zipw_end(sv->w, crc, len, len) < 0)
		return write_failed(sv, path);
	return 0;
}

static int write_entries(struct save *sv)
{
	int rc = 0;

	for (size_t i = 0; i < sv->n && rc >= 0; i++) {
		struct sentry *e = &sv->e[i];
		char dir[4200];

		switch (e->type) {
		case CKPT_DIR:
			snprintf(dir, sizeof(dir), "%s/", e->path);
			if (zipw_begin(sv->w, dir, strlen(dir),
				       S_IFDIR | e->mode, e->mtime_ns,
				       ZIP_METHOD_STORE, 0) < 0 ||
			    zipw_end(sv->w, 0, 0, 0) < 0)
				rc = write_failed(sv, e->path);
			sv->res->dirs++;
			break;
		case CKPT_SYMLINK:
			rc = write_small(sv, e->path, S_IFLNK | 0777,
					 e->mtime_ns, e->target,
					 strlen(e->target));
			sv->res->links++;
			break;
		default:
			rc = copy_from_parent(sv, e);
			if (rc == 1)
				rc = write_file(sv, e);
			if (rc == 1) {
				/* Vanished since the walk: leave it out. */
				free(e->path);
				e->path = NULL;
				rc = 0;
			}
			if (rc == 0 && sv->o->progress)
				atomic_fetch_add(&sv->o->progress->files_done,
						 1);
			break;
		}
	}
	/* Entries that vanished are dropped from the manifest too. */
	size_t j = 0;
	for (size_t i = 0; i < sv->n; i++) {
		if (sv->e[i].path)
			sv->e[j++] = sv->e[i];
		else
			free(sv->e[i].src), free(sv->e[i].target);
	}
	sv->n = j;
	return rc;
}

static int sync_fd(int fd)
{
	if (ckpt_faults.fsync_errno)
		return -ckpt_faults.fsync_errno;
	return fsync(fd) < 0 ? -errno : 0;
}

int ckpt_save(int dirfd, const char *file, const struct ckpt_save_opts *o,
	      struct ckpt_save_result *res, struct ckpt_err *err)
{
	static atomic_uint seq;
	struct ckpt_save_result dummy;
	struct ckpt_err local;
	struct save sv = {
		.o = o, .res = res ? res : &dummy, .err = err ? err : &local};
	char tmp[300], *manifest = NULL;
	struct timespec now;
	int64_t created;
	int fd = -1, rc;

	memset(sv.res, 0, sizeof(*sv.res));
	/* Names are checked by the caller; this only keeps the temporary
	 * name ('.', file, ".tmp-PID-N") within NAME_MAX. */
	if (strlen(file) > 220)
		return ckpt_err_set(sv.err, -ENAMETOOLONG, "name", file,
				    strlen(file), "name too long");
	/* Never a checkpoint name (leading '.'), and unique to this
	 * process, so that cleanup can tell a crash's leftovers from a save
	 * in progress. */
	snprintf(tmp, sizeof(tmp), ".%s" TMP_TAG "%ld-%u", file, (long)getpid(),
		 atomic_fetch_add(&seq, 1));
	sv.in = malloc(CHUNK);
	sv.out = malloc(CHUNK + 1024);
	sv.xs = XXH3_createState();
	if (!sv.in || !sv.out || !sv.xs ||
	    deflateInit2(&sv.zs, 6, Z_DEFLATED, -MAX_WBITS, 8,
			 Z_DEFAULT_STRATEGY) != Z_OK ||
	    ckpt_scan_new(o->allow, &sv.scan) < 0) {
		rc = ckpt_err_set(sv.err, -ENOMEM, "io", NULL, 0,
				  "out of memory");
		goto out;
	}
	sv.zinit = true;
	rc = collect(&sv);
	if (rc < 0)
		goto out;
	/* Fail early and cheaply when the name is taken; the rename below
	 * settles races. */
	if (faccessat(dirfd, file, F_OK, AT_SYMLINK_NOFOLLOW) == 0) {
		rc = ckpt_err_set(sv.err, -EEXIST, "name", file, strlen(file),
				  "a checkpoint of that name exists");
		goto out;
	}
	fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (fd < 0 || zipw_open(fd, &sv.w) < 0) {
		rc = ckpt_err_set(sv.err, fd < 0 ? -errno : -ENOMEM, "io", tmp,
				  strlen(tmp), "cannot create: %s",
				  strerror(errno));
		goto out;
	}
	rc = write_entries(&sv);
	if (rc < 0)
		goto out;
	clock_gettime(CLOCK_REALTIME, &now);
	created = o->created_ns
			  ? o->created_ns
			  : (int64_t)now.tv_sec * 1000000000 + now.tv_nsec;
	rc = scan_run(&sv);
	if (rc < 0)
		goto out;
	manifest = manifest_text(&sv, created);
	if (!manifest) {
		rc = ckpt_err_set(sv.err, -ENOMEM, "io", NULL, 0,
				  "out of memory");
		goto out;
	}
	rc = write_small(&sv, "manifest.json", S_IFREG | 0644, created,
			 manifest, strlen(manifest));
	if (rc < 0)
		goto out;
	/* Durable before visible: the data, then the name, then the
	 * directory that holds the name. */
	if (zipw_finish(sv.w) < 0) {
		rc = write_failed(&sv, NULL);
		goto out;
	}
	if ((rc = sync_fd(fd)) < 0 || (close(fd) < 0 && (rc = -errno) < 0)) {
		fd = -1;
		ckpt_err_set(sv.err, rc, "io", NULL, 0, "cannot sync: %s",
			     strerror(-rc));
		goto out;
	}
	fd = -1;
	if (renameat2(dirfd, tmp, dirfd, file, RENAME_NOREPLACE) < 0) {
		rc = -errno;
		ckpt_err_set(sv.err, rc, rc == -EEXIST ? "name" : "io", file,
			     strlen(file), "cannot publish: %s", strerror(-rc));
		goto out;
	}
	tmp[0] = '\0'; /* published: nothing to remove */
	rc = sync_fd(dirfd);
	if (rc < 0)
		ckpt_err_set(sv.err, rc, "io", NULL, 0,
			     "cannot sync the store: %s", strerror(-rc));
out:
	if (fd >= 0)
		close(fd);
	if (tmp[0])
		unlinkat(dirfd, tmp, 0);
	zipw_free(sv.w);
	if (sv.zinit)
		deflateEnd(&sv.zs);
	ckpt_scan_free(sv.scan);
	XXH3_freeState(sv.xs);
	free(sv.in);
	free(sv.out);
	cJSON_free(manifest);
	for (size_t i = 0; i < sv.n; i++) {
		free(sv.e[i].path);
		free(sv.e[i].src);
		free(sv.e[i].target);
	}
	free(sv.e);
	return rc;
}

int ckpt_save_cleanup(int dirfd)
{
	int fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	struct dirent *de;
	int removed = 0;
	DIR *d;

	if (fd < 0 || !(d = fdopendir(fd))) {
		if (fd >= 0)
			close(fd);
		return -errno;
	}
	while ((de = readdir(d))) {
		const char *tag = strstr(de->d_name, ".ckpt" TMP_TAG);
		const char *ptr = strstr(de->d_name, ".json" TMP_TAG);
		long pid;

		/* Archives being written, and the pointer file's
		 * temporaries (see checkpoint.json in store.c). */
		if (!tag)
			tag = ptr ? ptr : NULL;
		if (de->d_name[0] != '.' || !tag ||
		    sscanf(tag + strlen(".ckpt" TMP_TAG), "%ld", &pid) != 1)
			continue;
		/* A live process may still be writing it (another mount of
		 * the same store). */
		if (pid > 0 && (kill((pid_t)pid, 0) == 0 || errno == EPERM))
			continue;
		if (unlinkat(dirfd, de->d_name, 0) == 0)
			removed++;
	}
	closedir(d);
	return removed;
}
