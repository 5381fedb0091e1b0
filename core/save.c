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
#include <libdeflate.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>
#include <zlib.h>

#include "internal.h"
#include "scan.h"
#include "select.h"

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
	uint32_t crc;
	uint64_t size_hint; /* the size when opened */
	/* deflated in more than one chunk: (offset, xxh3-64) pairs */
	uint64_t *chunks;
	uint32_t nchunks, chunk_cap, chunk_size;
	/* Set by the writer when the first chunk made it store the file:
	 * the reader stops asking for its later chunks to be deflated. */
	atomic_bool stored;
};

struct save {
	const struct ckpt_save_opts *o;
	struct ckpt_save_result *res;
	struct ckpt_err *err;
	struct sentry *e;
	size_t n, cap;
	struct zipw *w;
	struct ckpt_scan *scan;
	struct crew *crew;
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
	/* The buffers may hold the secret: the crew wipes them when the
	 * save ends. */
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

/* ---- compressing on every core ------------------------------------------ */

/*
 * Entries go through a ring of jobs in archive order.  The saving thread
 * reads, scans and sums each file a chunk at a time and queues the chunks;
 * workers (one per core) deflate them, each chunk on its own; the saving
 * thread writes finished jobs in order.  A chunk that is not a file's last
 * ends with a full flush, so its compressed bytes start at a byte boundary
 * and need nothing before them: the entry is one ordinary deflate stream,
 * and its chunk table lets a reader start at any chunk.  A file's last
 * chunk (for most files the only one) is a complete stream end, which
 * libdeflate writes faster than zlib.
 */

#define JOBS	    16
#define MAX_WORKERS 8
/* A fixed-Huffman final block holding only end-of-block: ends a stream
 * after a full flush, for a file whose size turned out to be a whole
 * number of chunks. */
static const uint8_t stream_end[2] = {0x03, 0x00};

enum job_kind {
	JOB_CHUNK, /* a piece of a file */
	JOB_END,   /* a file that ended on a chunk boundary */
	JOB_DIR,
	JOB_LINK,
	JOB_COPY /* an unchanged file, from the parent */
};

struct job {
	enum job_kind kind;
	struct sentry *e;
	bool first, last, deflate;
	bool done;     /* compressed, or nothing to compress */
	uint64_t hash; /* chunks: XXH3-64 of in[] */
	uint8_t *in, *out;
	size_t in_len, out_len;
	/* JOB_COPY: the parent's entry */
	const struct node *pn;
	int64_t pdata;
};

struct crew;
struct worker {
	struct crew *crew;
	pthread_t th;
	z_stream zs;
	struct libdeflate_compressor *ld;
};

struct crew {
	pthread_mutex_t lock;
	pthread_cond_t todo, finished;
	struct job job[JOBS];
	uint64_t head, next, tail; /* write, compress, fill positions */
	bool stop;
	int nworkers;
	struct worker w[MAX_WORKERS];
	size_t out_cap;
	/* the file being written (JOB_CHUNK), for the writer */
	uint16_t method;
	uint64_t csize;
};

static size_t out_bound(void)
{
	/* deflateBound of a default stream, and a full flush's marker */
	return CKPT_CHUNK + CKPT_CHUNK / 1000 + 64 + 1024;
}

static void compress_job(struct job *j, z_stream *zs,
			 struct libdeflate_compressor *ld, size_t cap)
{
	/* Only deflated chunks go in a chunk table; summed here, on the
	 * workers, not on the one thread that reads and writes. */
	j->hash = XXH3_64bits(j->in, j->in_len);
	if (j->last) {
		j->out_len = libdeflate_deflate_compress(ld, j->in, j->in_len,
							 j->out, cap);
		if (j->out_len > 0)
			return;
		/* It did not fit the bound: zlib's answer below. */
	}
	deflateReset(zs);
	zs->next_in = j->in;
	zs->avail_in = (uInt)j->in_len;
	zs->next_out = j->out;
	zs->avail_out = (uInt)cap;
	deflate(zs, j->last ? Z_FINISH : Z_FULL_FLUSH);
	j->out_len = cap - zs->avail_out;
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct crew *c = w->crew;

	pthread_mutex_lock(&c->lock);
	for (;;) {
		struct job *j;

		/* Positions before head are written; their slots may hold
		 * newer jobs still being filled. */
		if (c->next < c->head)
			c->next = c->head;
		if (c->stop)
			break;
		if (c->next == c->tail) {
			pthread_cond_wait(&c->todo, &c->lock);
			continue;
		}
		j = &c->job[c->next++ % JOBS];
		if (j->done)
			continue;
		pthread_mutex_unlock(&c->lock);
		compress_job(j, &w->zs, w->ld, c->out_cap);
		pthread_mutex_lock(&c->lock);
		j->done = true;
		pthread_cond_broadcast(&c->finished);
	}
	pthread_mutex_unlock(&c->lock);
	return NULL;
}

static int crew_start(struct crew *c)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);

	memset(c, 0, sizeof(*c));
	pthread_mutex_init(&c->lock, NULL);
	pthread_cond_init(&c->todo, NULL);
	pthread_cond_init(&c->finished, NULL);
	c->out_cap = out_bound();
	n = n < 1 ? 1 : n > MAX_WORKERS ? MAX_WORKERS : n;
	for (long i = 0; i < n; i++) {
		struct worker *w = &c->w[c->nworkers];

		w->crew = c;
		w->ld = libdeflate_alloc_compressor(6);
		if (!w->ld || deflateInit2(&w->zs, 6, Z_DEFLATED, -MAX_WBITS, 8,
					   Z_DEFAULT_STRATEGY) != Z_OK) {
			libdeflate_free_compressor(w->ld);
			break;
		}
		if (pthread_create(&w->th, NULL, worker_main, w) != 0) {
			deflateEnd(&w->zs);
			libdeflate_free_compressor(w->ld);
			break;
		}
		c->nworkers++;
	}
	return c->nworkers > 0 ? 0 : -ENOMEM;
}

/* Stops the workers and frees every buffer, wiping it: a refused save's
 * buffers may hold the secret. */
static void crew_stop(struct crew *c)
{
	pthread_mutex_lock(&c->lock);
	c->stop = true;
	pthread_cond_broadcast(&c->todo);
	pthread_mutex_unlock(&c->lock);
	for (int i = 0; i < c->nworkers; i++) {
		pthread_join(c->w[i].th, NULL);
		deflateEnd(&c->w[i].zs);
		libdeflate_free_compressor(c->w[i].ld);
	}
	for (int i = 0; i < JOBS; i++) {
		if (c->job[i].in)
			explicit_bzero(c->job[i].in, CKPT_CHUNK);
		if (c->job[i].out)
			explicit_bzero(c->job[i].out, c->out_cap);
		free(c->job[i].in);
		free(c->job[i].out);
	}
	pthread_cond_destroy(&c->todo);
	pthread_cond_destroy(&c->finished);
	pthread_mutex_destroy(&c->lock);
}

static int write_failed(struct save *sv, const char *path)
{
	int rc = zipw_error(sv->w) ? zipw_error(sv->w) : -EIO;

	return ckpt_err_set(sv->err, rc, "io", path, path ? strlen(path) : 0,
			    "cannot write the checkpoint: %s", strerror(-rc));
}

static int add_chunk(struct sentry *e, uint64_t off, uint64_t hash)
{
	if (e->nchunks == e->chunk_cap) {
		uint32_t cap = e->chunk_cap ? e->chunk_cap * 2 : 16;
		uint64_t *p = realloc(e->chunks, (size_t)cap * 2 * sizeof(*p));
		if (!p)
			return -ENOMEM;
		e->chunks = p;
		e->chunk_cap = cap;
	}
	e->chunks[2 * e->nchunks] = off;
	e->chunks[2 * e->nchunks + 1] = hash;
	e->nchunks++;
	return 0;
}

/* Copies the parent's compressed bytes of an unchanged file. */
/* An entry stored whole from memory: a link target, the manifest. */
static int write_stored(struct save *sv, const char *path, uint32_t mode,
			int64_t mtime, const char *data, size_t len)
{
	uint32_t crc = libdeflate_crc32(0, data, len);

	if (zipw_begin(sv->w, path, strlen(path), mode, mtime, ZIP_METHOD_STORE,
		       len) < 0 ||
	    zipw_data(sv->w, data, len) < 0 ||
	    zipw_end(sv->w, crc, len, len) < 0)
		return write_failed(sv, path);
	return 0;
}

static int write_copy(struct save *sv, struct job *j)
{
	struct ckpt_archive *p = sv->o->parent;
	const struct node *n = j->pn;
	struct sentry *e = j->e;
	uint8_t buf[64 * 1024];
	uint64_t left;

	if (zipw_begin(sv->w, e->path, strlen(e->path), S_IFREG | e->mode,
		       e->mtime_ns, n->z.method, n->z.size) < 0)
		return write_failed(sv, e->path);
	for (left = n->z.csize; left > 0;) {
		size_t c = left < sizeof(buf) ? (size_t)left : sizeof(buf);
		if (pread(p->fd, buf, c,
			  (off_t)((uint64_t)j->pdata + n->z.csize - left)) !=
		    (ssize_t)c)
			return ckpt_err_set(sv->err, -EIO, "io", e->path,
					    strlen(e->path),
					    "parent checkpoint unreadable");
		if (zipw_data(sv->w, buf, c) < 0)
			return write_failed(sv, e->path);
		left -= c;
	}
	if (zipw_end(sv->w, n->z.crc, n->z.csize, n->z.size) < 0)
		return write_failed(sv, e->path);
	return 0;
}

/* Writes one finished job, in archive order. */
static int write_job(struct save *sv, struct job *j)
{
	struct crew *c = sv->crew;
	struct sentry *e = j->e;
	char dir[4200];

	switch (j->kind) {
	case JOB_DIR:
		snprintf(dir, sizeof(dir), "%s/", e->path);
		if (zipw_begin(sv->w, dir, strlen(dir), S_IFDIR | e->mode,
			       e->mtime_ns, ZIP_METHOD_STORE, 0) < 0 ||
		    zipw_end(sv->w, 0, 0, 0) < 0)
			return write_failed(sv, e->path);
		return 0;
	case JOB_LINK:
		return write_stored(sv, e->path, S_IFLNK | 0777, e->mtime_ns,
				    e->target, strlen(e->target));
	case JOB_COPY:
		return write_copy(sv, j);
	case JOB_CHUNK:
	case JOB_END:
		break;
	}
	if (j->first) {
		/* The first chunk decides: formats that are compressed
		 * already are stored, and so is anything deflate cannot
		 * shrink by a 64th. */
		c->method = ZIP_METHOD_DEFLATE;
		if (!j->deflate ||
		    (j->in_len > 0 && j->out_len + j->in_len / 64 >= j->in_len))
			c->method = ZIP_METHOD_STORE;
		atomic_store(&e->stored, c->method == ZIP_METHOD_STORE);
		c->csize = 0;
		if (zipw_begin(sv->w, e->path, strlen(e->path),
			       S_IFREG | e->mode, e->mtime_ns, c->method,
			       e->size_hint) < 0)
			return write_failed(sv, e->path);
	}
	if (j->kind == JOB_END) {
		if (c->method == ZIP_METHOD_DEFLATE) {
			if (zipw_data(sv->w, stream_end, sizeof(stream_end)) <
			    0)
				return write_failed(sv, e->path);
			c->csize += sizeof(stream_end);
		}
	} else if (c->method == ZIP_METHOD_DEFLATE) {
		if (add_chunk(e, c->csize, j->hash) < 0)
			return ckpt_err_set(sv->err, -ENOMEM, "io", NULL, 0,
					    "out of memory");
		if (zipw_data(sv->w, j->out, j->out_len) < 0)
			return write_failed(sv, e->path);
		c->csize += j->out_len;
	} else {
		if (zipw_data(sv->w, j->in, j->in_len) < 0)
			return write_failed(sv, e->path);
		c->csize += j->in_len;
	}
	if (sv->o->progress)
		atomic_fetch_add(&sv->o->progress->bytes_done, j->in_len);
	if (!j->last)
		return 0;
	/* One chunk needs no table: the entry is read whole. */
	if (e->nchunks < 2) {
		free(e->chunks);
		e->chunks = NULL;
		e->nchunks = e->chunk_cap = 0;
	}
	e->chunk_size = CKPT_CHUNK;
	if (zipw_end(sv->w, e->crc, c->csize, e->size) < 0)
		return write_failed(sv, e->path);
	return 0;
}

/* Writes finished jobs in order until at most keep are left in the ring.
 * Returns the first error. */
static int drain(struct save *sv, unsigned keep)
{
	struct crew *c = sv->crew;
	int rc = 0;

	pthread_mutex_lock(&c->lock);
	while (rc == 0 && c->tail - c->head > keep) {
		struct job *j = &c->job[c->head % JOBS];
		while (!j->done)
			pthread_cond_wait(&c->finished, &c->lock);
		pthread_mutex_unlock(&c->lock);
		rc = write_job(sv, j);
		pthread_mutex_lock(&c->lock);
		c->head++;
	}
	pthread_mutex_unlock(&c->lock);
	return rc;
}

/* The next free job, its buffers ready for a chunk. */
static int job_claim(struct save *sv, enum job_kind kind, struct sentry *e,
		     struct job **out)
{
	struct crew *c = sv->crew;
	struct job *j;
	int rc = drain(sv, JOBS - 1);

	if (rc < 0)
		return rc;
	j = &c->job[c->tail % JOBS];
	if (kind == JOB_CHUNK && !j->in) {
		j->in = malloc(CKPT_CHUNK);
		j->out = malloc(c->out_cap);
		if (!j->in || !j->out)
			return ckpt_err_set(sv->err, -ENOMEM, "io", NULL, 0,
					    "out of memory");
	}
	j->kind = kind;
	j->e = e;
	j->first = j->last = j->deflate = j->done = false;
	j->in_len = j->out_len = 0;
	*out = j;
	return 0;
}

static void job_queue(struct save *sv, struct job *j)
{
	struct crew *c = sv->crew;

	pthread_mutex_lock(&c->lock);
	if (!j->deflate)
		j->done = true;
	c->tail++;
	/* Workers skip finished jobs when they next look; waking them for
	 * one would cost a switch per directory or copied file. */
	if (j->deflate)
		pthread_cond_signal(&c->todo);
	pthread_mutex_unlock(&c->lock);
}

static int queue_simple(struct save *sv, enum job_kind kind, struct sentry *e)
{
	struct job *j;
	int rc = job_claim(sv, kind, e, &j);

	if (rc == 0)
		job_queue(sv, j);
	return rc;
}

/* Reads one file a chunk at a time: each chunk is scanned, summed and
 * queued.  Returns 1 when the file vanished before it was opened. */
static int write_file(struct save *sv, struct sentry *e)
{
	uint64_t limit = UINT64_MAX, done = 0;
	XXH3_state_t *xs = sv->xs;
	struct ckpt_finding f;
	XXH128_canonical_t c;
	bool first = true, store = false;
	struct stat st;
	uint32_t crc = 0;
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
	e->size_hint = (uint64_t)st.st_size;
	ckpt_scan_reset(sv->scan);
	XXH3_128bits_reset(xs);
	/* At least one chunk, even of nothing: it writes the header. */
	for (;;) {
		size_t want = limit - done < CKPT_CHUNK ? (size_t)(limit - done)
							: CKPT_CHUNK;
		size_t got;
		struct job *j;

		rc = job_claim(sv, JOB_CHUNK, e, &j);
		if (rc < 0)
			goto out;
		rc = read_some(fd, j->in, want, &got);
		if (rc < 0) {
			ckpt_err_set(sv->err, rc, "io", e->path,
				     strlen(e->path), "read failed: %s",
				     strerror(-rc));
			goto out;
		}
		if (got == 0 && !first) {
			/* The last chunk was full: end the stream. */
			j->kind = JOB_END;
			j->last = true;
			goto last;
		}
		if (ckpt_scan_feed(sv->scan, j->in, got, &f) == 1) {
			rc = secret(sv, e, &f);
			goto out;
		}
		if (first && compressed_magic(j->in, got))
			store = true;
		crc = libdeflate_crc32(crc, j->in, got);
		XXH3_128bits_update(xs, j->in, got);
		j->in_len = got;
		j->first = first;
		/* Chunks queued before the writer decided are deflated
		 * for nothing; at most the ring's worth. */
		j->deflate = !store && !atomic_load(&e->stored);
		j->last = got < want || done + got >= limit;
		first = false;
		done += got;
		if (!j->last) {
			job_queue(sv, j);
			continue;
		}
	last:
		if (ckpt_scan_finish(sv->scan, &f) == 1) {
			rc = secret(sv, e, &f);
			goto out;
		}
		/* Stored as read: the size and hash are of what was
		 * stored.  The writer reads them once it reaches this
		 * job. */
		e->size = done;
		e->crc = crc;
		XXH128_canonicalFromHash(&c, XXH3_128bits_digest(xs));
		memcpy(e->hash, c.digest, 16);
		job_queue(sv, j);
		break;
	}
	sv->res->files++;
	sv->res->bytes += done;
out:
	close(fd);
	return rc;
}

/* An unchanged entry (same path, type, size and mtime as in the parent,
 * which was scanned by the same rules) is copied from the parent's
 * compressed bytes.  Returns 1 when it cannot be. */
static int copy_from_parent(struct save *sv, struct sentry *e)
{
	struct ckpt_archive *p = sv->o->parent;
	const struct node *n;
	uint32_t node = CKPT_NODE_ROOT;
	const char *s = e->path;
	struct job *j;
	int64_t data;
	int rc;

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
	if (n->u.file.chunks != NO_CHUNKS) {
		const struct chunktab *t = &p->chunks[n->u.file.chunks];
		for (uint32_t k = 0; k < t->n; k++)
			if (add_chunk(e, t->off[k], t->hash[k]) < 0)
				return ckpt_err_set(sv->err, -ENOMEM, "io",
						    NULL, 0, "out of memory");
		e->chunk_size = t->size;
	}
	memcpy(e->hash, p->hashes[n->u.file.hash], 16);
	rc = job_claim(sv, JOB_COPY, e, &j);
	if (rc < 0)
		return rc;
	j->pn = n;
	j->pdata = data;
	job_queue(sv, j);
	sv->res->files++;
	sv->res->copied++;
	sv->res->bytes += e->size;
	if (sv->o->progress)
		atomic_fetch_add(&sv->o->progress->bytes_done, e->size);
	return 0;
}

/* ---- the whole archive ------------------------------------------------- */

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

/* The manifest's records are written by hand: cJSON would hold a tree of
 * every record and print it through doubles; this writes each number
 * exactly, once, into one growing buffer. */
struct jbuf {
	char *p;
	size_t len, cap;
	bool oom;
};

static void jb_put(struct jbuf *b, const char *s, size_t n)
{
	if (b->oom)
		return;
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 64 * 1024;
		char *p;
		while (cap < b->len + n + 1)
			cap *= 2;
		p = realloc(b->p, cap);
		if (!p) {
			b->oom = true;
			return;
		}
		b->p = p;
		b->cap = cap;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

static void jb_lit(struct jbuf *b, const char *s)
{
	jb_put(b, s, strlen(s));
}

static void jb_int(struct jbuf *b, const char *key, long long v)
{
	char num[48];
	int n = snprintf(num, sizeof(num), ",\"%s\":%lld", key, v);

	jb_put(b, num, (size_t)n);
}

/* A JSON string: names are valid UTF-8 (the policy sees to it), so only
 * quotes, backslashes and control characters need escaping. */
static void jb_str(struct jbuf *b, const char *s)
{
	const char *run = s;

	jb_put(b, "\"", 1);
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		char esc[8];

		if (c >= 0x20 && c != '"' && c != '\\')
			continue;
		jb_put(b, run, (size_t)(s - run));
		snprintf(esc, sizeof(esc),
			 c == '"'    ? "\\\""
			 : c == '\\' ? "\\\\"
				     : "\\u%04x",
			 c);
		jb_lit(b, esc);
		run = s + 1;
	}
	jb_put(b, run, (size_t)(s - run));
	jb_put(b, "\"", 1);
}

static void jb_hex(struct jbuf *b, const uint8_t *p, size_t n)
{
	static const char digit[] = "0123456789abcdef";
	char out[64];

	for (size_t i = 0; i < n;) {
		size_t k = 0;
		for (; k < sizeof(out) && i < n; i++, k += 2) {
			out[k] = digit[p[i] >> 4];
			out[k + 1] = digit[p[i] & 15];
		}
		jb_put(b, out, k);
	}
}

/* "chunks": where a reader may start inflating, and each chunk's hash. */
static void jb_chunks(struct jbuf *b, const struct sentry *e)
{
	char num[32];

	snprintf(num, sizeof(num), "%u", e->chunk_size);
	jb_lit(b, ",\"chunks\":{\"size\":");
	jb_lit(b, num);
	jb_lit(b, ",\"offsets\":[");
	for (uint32_t k = 0; k < e->nchunks; k++) {
		int n = snprintf(num, sizeof(num), "%s%llu", k ? "," : "",
				 (unsigned long long)e->chunks[2 * k]);
		jb_put(b, num, (size_t)n);
	}
	jb_lit(b, "],\"xxh3_64\":\"");
	for (uint32_t k = 0; k < e->nchunks; k++) {
		uint8_t h[8];
		for (int i = 0; i < 8; i++)
			h[i] = (uint8_t)(e->chunks[2 * k + 1] >> (56 - 8 * i));
		jb_hex(b, h, 8);
	}
	jb_lit(b, "\"}");
}

static char *manifest_text(struct save *sv, int64_t created)
{
	const struct ckpt_save_opts *o = sv->o;
	cJSON *m = cJSON_CreateObject(), *run;
	struct jbuf b = {0};
	char when[40], *head;

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
	head = cJSON_PrintUnformatted(m);
	cJSON_Delete(m);
	if (!head)
		return NULL;
	/* The header object, reopened for the entries: one per line. */
	jb_put(&b, head, strlen(head) - 1);
	cJSON_free(head);
	jb_lit(&b, ",\n\"entries\":[");
	for (size_t i = 0; i < sv->n; i++) {
		const struct sentry *e = &sv->e[i];

		jb_lit(&b, i ? ",\n{\"path\":" : "\n{\"path\":");
		jb_str(&b, e->path);
		jb_lit(&b, e->type == CKPT_FILE	 ? ",\"type\":\"file\""
			   : e->type == CKPT_DIR ? ",\"type\":\"dir\""
						 : ",\"type\":\"symlink\"");
		if (e->type != CKPT_SYMLINK)
			jb_int(&b, "mode", e->mode);
		if (e->type == CKPT_FILE) {
			jb_int(&b, "size", (long long)e->size);
			jb_lit(&b, ",\"xxh3_128\":\"");
			jb_hex(&b, e->hash, 16);
			jb_lit(&b, "\"");
			if (e->nchunks > 1)
				jb_chunks(&b, e);
		}
		if (e->type == CKPT_SYMLINK) {
			jb_lit(&b, ",\"target\":");
			jb_str(&b, e->target);
		}
		jb_int(&b, "mtime_ns", e->mtime_ns);
		jb_lit(&b, "}");
	}
	jb_lit(&b, "\n]}\n");
	if (b.oom) {
		free(b.p);
		return NULL;
	}
	return b.p;
}

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

/* A small entry written whole from memory (the manifest), scanned like
 * every other byte the save writes. */
static int write_small(struct save *sv, const char *path, uint32_t mode,
		       int64_t mtime, const char *data, size_t len)
{
	int rc = scan_text(sv, path, data, len);

	return rc < 0 ? rc : write_stored(sv, path, mode, mtime, data, len);
}

static int write_entries(struct save *sv)
{
	int rc = 0;

	for (size_t i = 0; i < sv->n && rc >= 0; i++) {
		struct sentry *e = &sv->e[i];

		switch (e->type) {
		case CKPT_DIR:
			rc = queue_simple(sv, JOB_DIR, e);
			sv->res->dirs++;
			break;
		case CKPT_SYMLINK:
			rc = scan_text(sv, e->path, e->target,
				       strlen(e->target));
			if (rc == 0)
				rc = queue_simple(sv, JOB_LINK, e);
			sv->res->links++;
			break;
		default:
			rc = copy_from_parent(sv, e);
			if (rc == 1)
				rc = write_file(sv, e);
			if (rc == 1) {
				/* Vanished since the walk: leave it out (no
				 * job refers to it). */
				free(e->path);
				e->path = NULL;
				rc = 0;
			} else if (rc == 0 && sv->o->progress) {
				atomic_fetch_add(&sv->o->progress->files_done,
						 1);
			}
			break;
		}
	}
	if (rc >= 0)
		rc = drain(sv, 0);
	if (rc < 0)
		return rc;
	/* Entries that vanished are dropped from the manifest too. */
	size_t j = 0;
	for (size_t i = 0; i < sv->n; i++) {
		if (sv->e[i].path)
			sv->e[j++] = sv->e[i];
		else
			free(sv->e[i].src), free(sv->e[i].target),
				free(sv->e[i].chunks);
	}
	sv->n = j;
	return 0;
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
	struct crew crew;
	struct save sv = {
		.o = o, .res = res ? res : &dummy, .err = err ? err : &local};
	char tmp[300], *manifest = NULL;
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
	sv.xs = XXH3_createState();
	if (!sv.xs || ckpt_scan_new(o->allow, &sv.scan) < 0) {
		rc = ckpt_err_set(sv.err, -ENOMEM, "io", NULL, 0,
				  "out of memory");
		goto out;
	}
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
	if (crew_start(&crew) < 0) {
		rc = ckpt_err_set(sv.err, -ENOMEM, "io", NULL, 0,
				  "cannot start the compressing threads");
		goto out;
	}
	sv.crew = &crew;
	rc = write_entries(&sv);
	if (rc < 0)
		goto out;
	created = o->created_ns ? o->created_ns : ckpt_now_ns();
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
	if (sv.crew)
		crew_stop(sv.crew);
	zipw_free(sv.w);
	ckpt_scan_free(sv.scan);
	XXH3_freeState(sv.xs);
	free(manifest);
	for (size_t i = 0; i < sv.n; i++) {
		free(sv.e[i].path);
		free(sv.e[i].src);
		free(sv.e[i].target);
		free(sv.e[i].chunks);
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
