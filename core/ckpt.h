/*
 * ckpt.h - the one public header of libckpt, the core of ckptfs.
 *
 * libckpt owns every decision about what a checkpoint may show: the archive
 * index, the path policy, the manifest and the reader.  It never includes
 * FUSE, never prints, and never exits; every function returns 0 (or a count)
 * or a negative errno, and a user-facing reason travels in struct ckpt_err.
 * All objects are opaque.  Unless said otherwise a function is safe to call
 * from any thread on distinct objects; shared objects say their locking.
 */
#ifndef CKPT_H
#define CKPT_H

#include <stdbool.h>
#include <stdint.h>
#include <stddef.h>
#include <sys/types.h>

/* ---- errors ------------------------------------------------------------ */

/* Fixed size: filling it never allocates.  Never holds secret content. */
struct ckpt_err {
	int code;	/* the negative errno also returned */
	char rule[32];	/* stable id: "traversal", "overlap", ... */
	char path[256]; /* archive- or tier-relative path concerned, escaped */
	unsigned line;	/* 1-based line for content findings, else 0 */
	char fingerprint[17]; /* of a secret finding: allows it; else "" */
	char msg[256];	      /* one sentence for the log and the status file */
};

/* Fills err (may be NULL) and returns code, so callers can
 * "return ckpt_err_set(err, -EIO, ...)".  path may be NULL; it is copied
 * with non-printable bytes escaped as \xNN so logs stay one line. */
int ckpt_err_set(struct ckpt_err *err, int code, const char *rule,
		 const char *path, size_t path_len, const char *fmt, ...)
	__attribute__((format(printf, 6, 7)));

/* Writes PATH escaped (bytes < 0x20, 0x7f, '\\' and non-UTF-8 as \xNN)
 * into out, always NUL-terminated, truncated with "..." if too long. */
void ckpt_escape(const char *path, size_t len, char *out, size_t outsz);

/* Formats ns since the epoch as RFC 3339 UTC with nanoseconds, the form
 * manifests use: "2026-11-22T09:00:00.123456789Z". */
void ckpt_format_time(int64_t ns, char out[40]);

/* ---- names and policy (policy.c) ---------------------------------------- */

enum ckpt_tier {
	CKPT_TIER_WORLD,
	CKPT_TIER_WORKSPACE,
	CKPT_TIER_SESSION,
	CKPT_TIER_COUNT
};

enum ckpt_type {
	CKPT_FILE,
	CKPT_DIR,
	CKPT_SYMLINK,
	CKPT_SPECIAL
};

/* Policy flags. */
#define CKPT_POLICY_WORKSPACE_ONLY 0x1u /* the session tier is not served */

/* Answers questions about the tree a symlink lives in, so that the policy
 * can follow chains of links.  lookup() is given a path relative to the
 * checkpoint root ("workspace/a/b", no trailing slash) and returns
 * CKPT_FILE, CKPT_DIR or CKPT_SYMLINK, or -ENOENT; for a symlink it copies
 * the target into target (size target_size, NUL-terminated) and stores
 * its length in *target_len. */
struct ckpt_resolver {
	int (*lookup)(void *ctx, const char *path, size_t len, char *target,
		      size_t target_size, size_t *target_len);
	void *ctx;
};

/* One candidate entry, as it is named in the archive (or on disk, at save
 * time): the bytes exactly as they will be used, no trailing '/'. */
struct ckpt_policy_entry {
	const char *path; /* relative to the checkpoint root: "workspace/x" */
	size_t len;
	enum ckpt_type type;
	const char *target; /* symlinks: the link text, no NUL */
	size_t target_len;
};

/*
 * The one policy decision: may this entry exist in a checkpoint?  Every
 * name served through the mount and every name written by a save passes
 * here.  Returns 0 when it may, or -ENOENT with err->rule naming why not
 * (-ENOMEM, rule "no-memory", when normalising a long name fails: callers
 * treat any negative return as "not served")
 * ("traversal", "bad-name", "outside-tier", "credential", "symlink-escape",
 * "special-file", "workspace-only").  For symlinks, resolver (may be NULL:
 * then links are judged lexically) lets chains of links be followed.
 */
int ckpt_policy_check(unsigned flags, const struct ckpt_policy_entry *e,
		      const struct ckpt_resolver *resolver,
		      struct ckpt_err *err);

/* The mode bits a served entry shows: write, setuid, setgid and sticky bits
 * removed, read and execute bits kept as recorded. */
unsigned ckpt_policy_mode(enum ckpt_type type, unsigned recorded_mode);

/* May a checkpoint of this origin ("user", "agent", "auto") be deleted or
 * renamed?  The agent may change its own and automatic checkpoints, never
 * a user's; anyone else may change any.  Returns 0 or -EPERM. */
int ckpt_policy_may_change(const char *origin, bool by_agent);

/* Checkpoint names: 1-200 characters of [A-Za-z0-9._+@-], not starting
 * with '.' or '-'.  Returns 0, -EINVAL or -ENAMETOOLONG. */
int ckpt_name_check(const char *name, size_t len);

/* ---- limits ------------------------------------------------------------ */

struct ckpt_limits {
	uint64_t max_entries;	    /* central directory records */
	uint64_t max_entry_size;    /* uncompressed bytes of one entry */
	uint64_t max_total_size;    /* uncompressed bytes of one archive */
	uint64_t max_ratio;	    /* uncompressed/compressed of one entry */
	uint64_t max_manifest_size; /* bytes of manifest.json */
};

/* Fills lim with the defaults documented in ckptfs(1). */
void ckpt_limits_default(struct ckpt_limits *lim);

/* ---- one checkpoint archive (archive.c, index.c, read.c) --------------- */

struct ckpt_archive; /* opaque: an open .ckpt and its index; refcounted */

/* Node numbers within an archive are dense, 0 is the checkpoint's root
 * directory, and they depend only on the archive's content, so they are
 * stable across remounts. */
#define CKPT_NODE_ROOT 0u

struct ckpt_stat {
	enum ckpt_type type;
	unsigned mode;	  /* permission bits as served (ckpt_policy_mode) */
	uint64_t size;	  /* exact content size; symlinks: target length */
	int64_t mtime_ns; /* since the epoch */
	uint32_t nchild;  /* directories: number of children */
	uint32_t nlink;	  /* 1 for files; 2 + subdirectories for dirs */
	/* current/ only (0 in checkpoints): the source's identity, which
	 * changes with its content even when size and mtime do not (cp -p,
	 * rsync -a, a rename into place). */
	uint64_t ino;
	int64_t ctime_ns;
};

/* Whether two stats of one live name describe the same content. */
bool ckpt_stat_same(const struct ckpt_stat *a, const struct ckpt_stat *b);

/* Opens STORE/<file> (relative to dirfd) without following links or
 * blocking, checks it is a regular file, and indexes it.  On success
 * *out holds one reference.  A refused archive returns a negative errno
 * and says why in err (rule "overlap", "duplicate", "manifest", ...). */
int ckpt_archive_open(int dirfd, const char *file,
		      const struct ckpt_limits *lim, unsigned policy_flags,
		      struct ckpt_archive **out, struct ckpt_err *err);
void ckpt_archive_ref(struct ckpt_archive *a);
void ckpt_archive_unref(struct ckpt_archive *a); /* NULL is a no-op */

/* Checkpoint-level facts from the manifest.  Borrowed strings, valid
 * while the caller holds a reference; NULL when absent. */
int64_t ckpt_archive_created_ns(const struct ckpt_archive *a);
const char *ckpt_archive_origin(const struct ckpt_archive *a);
const char *ckpt_archive_parent(const struct ckpt_archive *a);
uint32_t ckpt_archive_node_count(const struct ckpt_archive *a);

/* Entries hidden by the policy while indexing, by rule; and a few of them
 * as samples for the log.  Returns the number of rules filled. */
struct ckpt_hidden {
	char rule[32];
	uint32_t count;
	char sample[256]; /* escaped path of one hidden entry */
};
size_t ckpt_archive_hidden(const struct ckpt_archive *a,
			   struct ckpt_hidden *out, size_t max);

/* Looks NAME (one component, len bytes) up in directory dir.  Returns 0
 * and the node in *out, -ENOENT, or -ENOTDIR. */
int ckpt_archive_lookup(const struct ckpt_archive *a, uint32_t dir,
			const char *name, size_t len, uint32_t *out);
int ckpt_archive_stat(const struct ckpt_archive *a, uint32_t node,
		      struct ckpt_stat *st);
/* The i-th child (0-based, in name order) of dir: node number and a
 * borrowed name (not NUL-terminated).  Returns 0 or -ENOENT past the end. */
int ckpt_archive_child(const struct ckpt_archive *a, uint32_t dir, uint32_t i,
		       uint32_t *node, const char **name, size_t *len);
/* Parent of a node (the root is its own parent). */
uint32_t ckpt_archive_parent_of(const struct ckpt_archive *a, uint32_t node);
/* Copies a symlink's target, NUL-terminated.  Returns its length. */
ssize_t ckpt_archive_readlink(const struct ckpt_archive *a, uint32_t node,
			      char *buf, size_t size);
/* The xxh3-128 of a file as 32 hex digits, when the manifest has it.
 * Returns 0, or -ENODATA. */
int ckpt_archive_xxh128(const struct ckpt_archive *a, uint32_t node,
			char out[33]);

/* ---- reading content (read.c) ------------------------------------------ */

struct ckpt_reader; /* per open file: a cursor into one entry */

/* Opens a reader on a file node; it holds a reference to the archive, so
 * it keeps reading the content it was opened on. */
int ckpt_reader_open(struct ckpt_archive *a, uint32_t node,
		     struct ckpt_reader **out, struct ckpt_err *err);
/* Reads up to size bytes at off.  Returns the count (0 at the end) or a
 * negative errno; -EIO when content fails its CRC or hash, which is
 * detected before the last byte is returned.  Serialised internally: one
 * reader may be used from several threads. */
ssize_t ckpt_reader_pread(struct ckpt_reader *r, void *buf, size_t size,
			  uint64_t off, struct ckpt_err *err);
/* Drops a reference: the opener's, or one taken with ckpt_reader_hold by
 * a thread that uses the reader after the close may have been asked for.
 * The last one frees it.  NULL is a no-op. */
void ckpt_reader_close(struct ckpt_reader *r);
void ckpt_reader_hold(struct ckpt_reader *r);
/* Bytes of buffers the reader holds for itself, beyond its small fixed
 * state: what keeping it open costs. */
size_t ckpt_reader_footprint(const struct ckpt_reader *r);

/* Called with each chunk the reader inflates into its shared cache, while
 * the bytes are held: content bytes [off, off + len), checked already.  A
 * filesystem hands them to the kernel's page cache, so the other reads of
 * that chunk need no request.  Must not block; the bytes are only valid
 * during the call. */
typedef void ckpt_chunk_fn(void *ctx, uint64_t off, const void *p, size_t len);
void ckpt_reader_on_chunk(struct ckpt_reader *r, ckpt_chunk_fn *fn, void *ctx);
/* After a read: when the reads so far run forward, inflates the next
 * chunk not yet cached (at most a few ahead), so that a sequential reader
 * finds it ready and two threads inflate at once.  Never waits for
 * another thread; 0, or a negative errno that only says nothing was
 * done. */
int ckpt_reader_ahead(struct ckpt_reader *r);

/* ---- the store (store.c) ----------------------------------------------- */

struct ckpt_store; /* opaque: the STORE directory and its checkpoints */

struct ckpt_store_opts {
	struct ckpt_limits limits;
	unsigned policy_flags;
	/* Called once each time a checkpoint is indexed: with the archive
	 * when it was accepted (it may have hidden entries), or with NULL
	 * and the reason when it was refused.  May be NULL. */
	void (*opened)(void *ctx, const char *name,
		       const struct ckpt_archive *a,
		       const struct ckpt_err *why);
	void *ctx;
};

int ckpt_store_open(const char *dir, const struct ckpt_store_opts *opts,
		    struct ckpt_store **out, struct ckpt_err *err);
void ckpt_store_close(struct ckpt_store *s); /* NULL is a no-op */

/* Rescans the directory.  For every checkpoint that appeared, disappeared
 * or was replaced, calls changed(ctx, name); with changed NULL the names
 * are kept and given to the next refresh that has a callback, so no change
 * goes unreported.  Thread-safe. */
int ckpt_store_refresh(struct ckpt_store *s,
		       void (*changed)(void *ctx, const char *name), void *ctx);

/* Returns the archive named NAME with a new reference in *out, opening and
 * indexing it at first use.  -ENOENT when there is no such checkpoint or
 * it was refused (err says why).  Thread-safe. */
int ckpt_store_get(struct ckpt_store *s, const char *name,
		   struct ckpt_archive **out, struct ckpt_err *err);

/* Returns the archive with instance id id (see ckpt_archive_id) with a new
 * reference; -ESTALE once it has been replaced or removed and no pin
 * holds it, -EIO once it was found broken. */
int ckpt_store_get_id(struct ckpt_store *s, uint32_t id,
		      struct ckpt_archive **out);

/* Pins count the names of an archive the kernel holds (each lookup it was
 * answered, until it forgets them).  A pinned archive outlives the
 * replacement or removal of its checkpoint, reachable by id: a file the
 * kernel opened then still reads the old content, though the kernel
 * sends no open.  Counted before the answer is sent; -ESTALE, counting
 * nothing, when the archive is no longer in the store's table (replaced
 * or removed meanwhile, unpinned). */
int ckpt_store_pin(struct ckpt_store *s, struct ckpt_archive *a, uint64_t n);
void ckpt_store_unpin(struct ckpt_store *s, uint32_t id, uint64_t n);

/* CLOCK_REALTIME now, in nanoseconds since the epoch: the unit of every
 * time here. */
int64_t ckpt_now_ns(void);

/* CLOCK_REALTIME nanoseconds of the last change to what the store shows
 * beside the checkpoints' content: the set of usable checkpoints, and the
 * save reports of .ckptfs/errors/.  Strictly increasing, so it serves as
 * the mtime that tells the kernel its cached listings are stale. */
int64_t ckpt_store_changed_ns(struct ckpt_store *s);

/* Instance id: unique among archives alive in this store, never 0; a
 * replaced checkpoint gets a new one.  Key: a stable, non-zero number
 * derived from the checkpoint's name, unique within the store. */
uint32_t ckpt_archive_id(const struct ckpt_archive *a);
uint32_t ckpt_archive_key(const struct ckpt_archive *a);
const char *ckpt_archive_name(const struct ckpt_archive *a);

/* The first usable checkpoint at or after position *pos in name order
 * (refused ones are skipped; the call may open archives to find out).
 * Returns 0 with a reference in *out and its position in *pos, or -ENOENT
 * past the end.  Positions shift when the store changes, as directory
 * offsets do on any live filesystem. */
int ckpt_store_next(struct ckpt_store *s, size_t *pos,
		    struct ckpt_archive **out);

/* Total bytes and count of the checkpoint files, for statfs. */
void ckpt_store_usage(struct ckpt_store *s, uint64_t *bytes, uint64_t *count);

/* The newest usable checkpoint by creation time, with a reference. */
int ckpt_store_latest(struct ckpt_store *s, struct ckpt_archive **out);

/* One JSON object per line describing the store's checkpoints: refused
 * ones and why, hidden entries by rule.  Returns a malloc'd string the
 * caller frees, and its length in *len; NULL on allocation failure. */
char *ckpt_store_status(struct ckpt_store *s, size_t *len);

/* ---- changing the store (store.c) -------------------------------------- */

struct ckpt_save_opts;	 /* below */
struct ckpt_save_result; /* below */

/* Saves the live source as checkpoint NAME in the store: NAME is checked
 * (-EINVAL, -ENAMETOOLONG), must be free (-EEXIST, also when a save of
 * that name is running), and the newest checkpoint is the parent; its
 * unchanged files are copied unread only when this store object wrote
 * it (and so scanned it with the same rules and allow list).  On
 * success the store already lists it and STORE/checkpoint.json names it.
 * Every outcome is kept for the status file and, for refusals, as the
 * text of errors/NAME.  base gives the sources; its name, origin, parent
 * and progress fields are filled here. */
int ckpt_store_save(struct ckpt_store *s, const char *name, const char *origin,
		    const struct ckpt_save_opts *base,
		    struct ckpt_save_result *res, struct ckpt_err *err);

/* Records a refusal decided elsewhere (mkdir on a read-only mount) as the
 * text of errors/NAME, like the store's own refusals. */
void ckpt_store_note(struct ckpt_store *s, const char *name,
		     const struct ckpt_err *why);

/* Deletes or renames a checkpoint; by_agent applies the origin rule of
 * ckpt_policy_may_change().  Rename refuses a taken target (-EEXIST). */
int ckpt_store_remove(struct ckpt_store *s, const char *name, bool by_agent,
		      struct ckpt_err *err);
int ckpt_store_rename(struct ckpt_store *s, const char *from, const char *to,
		      bool by_agent, struct ckpt_err *err);

/* Deletes automatic checkpoints beyond the newest keep, never the latest
 * checkpoint and never one that a user or agent checkpoint names as its
 * parent.  Returns the number deleted. */
int ckpt_store_prune(struct ckpt_store *s, unsigned keep);

/* The text of .ckptfs/errors/NAME for the i-th name with a refused save
 * (0-based, in the order first refused).  Returns 0 and malloc'd copies
 * (text NULL: the name alone), -ENODATA when a later save of the name
 * succeeded, or -ENOENT past the end. */
int ckpt_store_error(struct ckpt_store *s, size_t i, char **name, char **text,
		     size_t *len);

/* ---- what a save takes (select.c) and refuses (scan.c) ----------------- */

struct ckpt_select;	/* opaque, read-only once open */
struct ckpt_scan_allow; /* opaque, read-only once loaded */

/* Opens the selection a save applies before the policy: the workspace
 * without reconstructable artifacts, the session through the allowlist of
 * backend (a data file in backends_dir; NULL: the session is not saved),
 * and the patterns of exclude_from (NULL for none).  Returns 0 with *out
 * owned by the caller, or: -ENOENT for an unknown backend (err->msg lists
 * those found) or a file that cannot be opened; -EINVAL for a bad backend
 * name or a malformed file (err->path names the file, err->line the
 * line); -ENOMEM.  The pattern syntax is described in select.c and
 * ckptfs(1). */
int ckpt_select_open(const char *backend, const char *backends_dir,
		     const char *exclude_from, struct ckpt_select **out,
		     struct ckpt_err *err);
void ckpt_select_free(struct ckpt_select *s); /* NULL is a no-op */
/* The backends found in dir: a malloc'd list of NUL-terminated names ending
 * with an empty one, or NULL when dir cannot be read. */
char *ckpt_select_backends(const char *backends_dir);

/* Loads reviewed false positives: one 16-hex-digit fingerprint per line,
 * '#' comments.  -EINVAL names a malformed line. */
int ckpt_scan_allow_load(const char *path, struct ckpt_scan_allow **out,
			 struct ckpt_err *err);
void ckpt_scan_allow_free(struct ckpt_scan_allow *a); /* NULL is a no-op */

/* The secret rules, for --help and the man page: a static array. */
struct ckpt_scan_rule_info {
	const char *id, *what;
};
size_t ckpt_scan_rules(const struct ckpt_scan_rule_info **out);

/* ---- saving a checkpoint (save.c) --------------------------------------- */

/* Counters a running save updates, for the status file.  Relaxed atomics:
 * read them while the save runs. */
struct ckpt_save_progress {
	_Atomic uint64_t files_total, files_done;
	_Atomic uint64_t bytes_total, bytes_done;
};

struct ckpt_save_opts {
	const char *name;		       /* recorded in the manifest */
	const char *origin;		       /* "user", "agent" or "auto" */
	const char *tier_dir[CKPT_TIER_COUNT]; /* sources, or NULL */
	const char *run_json;  /* the run's metadata file, or NULL */
	const char *backend;   /* recorded in the manifest's run, or NULL */
	unsigned policy_flags; /* WORKSPACE_ONLY: the session is not saved */
	const struct ckpt_select *select;    /* NULL: every name is taken */
	const struct ckpt_scan_allow *allow; /* or NULL */
	const char *parent_name; /* recorded as the parent, or NULL */
	/* The checkpoint this one continues: unchanged files are copied
	 * from it without being read.  NULL for none; the caller keeps its
	 * reference. */
	struct ckpt_archive *parent;
	int64_t created_ns;		     /* 0: now */
	struct ckpt_save_progress *progress; /* or NULL */
};

struct ckpt_save_result {
	uint64_t files, dirs, links, bytes; /* written */
	uint64_t copied;  /* files copied from the parent, unread */
	uint64_t skipped; /* special files and escaping links left out */
	char skipped_sample[256];
};

/* Saves into dirfd/file ("NAME.ckpt").  The archive is written under a
 * temporary name, synced, renamed without replacing and the directory
 * synced: on any failure nothing is left behind.  Returns 0, -EEXIST when
 * the name is taken, -EPERM when a secret was found (err->rule is the
 * scan rule, err->path and err->line say where, err->msg gives the
 * fingerprint, never the secret), or the errno that stopped it (ENOSPC,
 * EIO, ...).  res may be NULL. */
int ckpt_save(int dirfd, const char *file, const struct ckpt_save_opts *o,
	      struct ckpt_save_result *res, struct ckpt_err *err);

/* Removes what saves that crashed left in the store directory: temporary
 * files whose writer is no longer running.  Returns how many. */
int ckpt_save_cleanup(int dirfd);

/* ---- the live run (live.c): current/ ---------------------------------- */

/* What a save of the sources in o would capture now, by archive path
 * ("", "workspace", "workspace/src/a.c"): -ENOENT for what a save leaves
 * out.  Nothing is cached; every call looks at the source again. */
int ckpt_live_stat(const struct ckpt_save_opts *o, const char *path,
		   struct ckpt_stat *st);
/* Calls fn for every name in directory path that a save would take. */
int ckpt_live_list(const struct ckpt_save_opts *o, const char *path,
		   int (*fn)(void *ctx, const char *name), void *ctx);
ssize_t ckpt_live_readlink(const struct ckpt_save_opts *o, const char *path,
			   char *buf, size_t size);

struct ckpt_live_file; /* an open file of the live run */

/* Opens a file; it is scanned first, and -EPERM (err says where, never
 * what) when a save would refuse it.  o must outlive the file. */
int ckpt_live_open(const struct ckpt_save_opts *o, const char *path,
		   struct ckpt_live_file **out, struct ckpt_err *err);
/* Reads, scanning the bytes returned and their surroundings again. */
ssize_t ckpt_live_pread(struct ckpt_live_file *f, void *buf, size_t size,
			uint64_t off, struct ckpt_err *err);
void ckpt_live_close(struct ckpt_live_file *f); /* NULL is a no-op */

#endif
