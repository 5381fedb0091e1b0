/*
 * ckptfs.h - the daemon's shared state.  fs/ translates between the
 * kernel's requests and libckpt; it never decides what is safe to show.
 */
#ifndef CKPTFS_H
#define CKPTFS_H

#define FUSE_USE_VERSION 314
#include <fuse_lowlevel.h>
#include <pthread.h>
#include <stdbool.h>

#include "ckpt.h"

/* The directories and files that are not inside a checkpoint. */
enum {
	INO_ROOT = FUSE_ROOT_ID, /* 1 */
	INO_SNAPSHOTS,
	INO_CONTROL, /* .ckptfs */
	INO_STATUS,
	INO_LATEST,
	INO_ERRORS,  /* .ckptfs/errors */
	INO_CURRENT, /* current/: the live run as a save would take it */
	/* errors/NAME files: INO_ERROR_BASE + their slot (see
	 * ckpt_store_error), below 2^32 like every fixed entry */
	INO_ERROR_BASE = 1u << 16,
	INO_ERROR_END = 1u << 20,
};

/* Nodeids of current/ carry this bit: archive nodeids are (instance id
 * << 32 | node) with instance ids far below 2^30. */
#define LIVE_BIT (1ull << 62)
/* So do the texts of the control files: each text taken gets a nodeid of
 * its own (files.c), so that content under a nodeid never changes, as in
 * checkpoints.  The low 20 bits are the file's fixed number. */
#define TEXT_BIT       (1ull << 61)
#define TEXT_BASE_MASK 0xfffffu

static inline bool is_archive_ino(fuse_ino_t ino)
{
	return ino >> 32 && !(ino & (LIVE_BIT | TEXT_BIT));
}

static inline bool is_text_ino(fuse_ino_t ino)
{
	return (ino & TEXT_BIT) != 0;
}

static inline bool is_live(fuse_ino_t ino)
{
	return (ino & LIVE_BIT) != 0;
}

struct live_node;

struct ckptfs_live {
	pthread_mutex_t lock;
	struct live_node **nodes; /* by id - 1; NULL once forgotten */
	size_t n, cap;
	uint32_t *hash; /* open addressing on the path: id, 0 empty */
	size_t hcap;
};

struct ckptfs {
	struct ckpt_store *store;
	struct fuse_session *se;
	uid_t uid; /* the mounting user owns everything shown */
	gid_t gid;
	int64_t mount_ns;
	double timeout; /* seconds the kernel may cache immutable content */
	/* The kernel opens files and directories without asking: reads
	 * name their file by nodeid alone (files.c). */
	bool no_open, no_opendir;
	/* Other users reach the mount (allow_other or allow_root) and the
	 * kernel does not check modes: opens must ask, so that a write
	 * open can be refused before a shared writable map exists. */
	bool shared;

	/* Saving: possible when a source was given and not -o ro. */
	bool has_source;
	bool can_save;
	bool ro;
	struct ckpt_save_opts save; /* sources, selection, allowed secrets */
	bool has_agent;
	uid_t agent_uid; /* mkdir by this uid makes agent checkpoints */
	unsigned every;	 /* seconds between automatic checkpoints, or 0 */
	unsigned keep;	 /* automatic checkpoints kept, or 0 for all */

	struct ckptfs_live live; /* live.c: nodeids of current/ */

	/* watch.c */
	pthread_t watcher, ticker;
	int inotify_fd, stop_fd, kick_fd;
	bool watching, ticking;
};

extern const struct fuse_lowlevel_ops ckptfs_ops;

/* Runs the session until it ends (loop.c): while requests come one at a
 * time one worker serves them all, and more read when requests overlap or
 * one stalls; at most max_threads workers (0: 10).  Returns 0 or a
 * negative errno. */
int ckptfs_serve(struct fuse_session *se, unsigned max_threads);

/* Starts and stops the thread that follows changes in STORE and tells the
 * kernel to forget what it cached about changed checkpoints. */
int ckptfs_watch_start(struct ckptfs *fs, const char *store_dir);
void ckptfs_watch_stop(struct ckptfs *fs);
/* Asks the watcher to tell the kernel that "latest" and snapshots/ may
 * have changed.  Request handlers use this instead of notifying the
 * kernel themselves, which could deadlock on the directory they hold. */
void ckptfs_watch_kick(struct ckptfs *fs);
/* Asks the watcher to make the kernel drop the cached pages of ino: a
 * change it cannot see, or a write it took into its cache and the daemon
 * refused.  Request handlers cannot do it themselves: the kernel may wait
 * for their own reply before it lets go of those pages. */
void ckptfs_watch_inval(struct ckptfs *fs, fuse_ino_t ino);

/* current/ has no stable node numbers: each path the kernel holds gets a
 * nodeid until the kernel forgets it.  live_ino() counts one lookup. */
fuse_ino_t live_ino(struct ckptfs *fs, const char *path);
/* Records the attributes about to be given for a live nodeid, and says
 * how they differ from the last ones: LIVE_BLIND when the content changed
 * but size and mtime did not, which the kernel would not notice on its
 * own (see ckptfs_watch_inval). */
enum live_change {
	LIVE_SAME,
	LIVE_CHANGED,
	LIVE_BLIND
};
enum live_change live_told(struct ckptfs *fs, fuse_ino_t ino,
			   const struct ckpt_stat *cs);
/* Copies the path of a live nodeid; -ESTALE once forgotten. */
int live_path(struct ckptfs *fs, fuse_ino_t ino, char *buf, size_t size);
void live_forget(struct ckptfs *fs, fuse_ino_t ino, uint64_t n);
void live_free(struct ckptfs *fs);

/* Reads size bytes at off of the file ino names (files.c): a checkpoint's
 * file, a current/ file or a control file.  Returns the count or a
 * negative errno.  *ahead is a reader to call ckpt_reader_ahead on after
 * replying, then close, or NULL. */
ssize_t files_read(struct ckptfs *fs, fuse_ino_t ino, void *buf, size_t size,
		   uint64_t off, struct ckpt_err *err,
		   struct ckpt_reader **ahead);
/* Takes the text of a control file (status, errors/NAME: base is its
 * fixed number) afresh for a lookup: gives the nodeid it is served under
 * (a new one when it changed), its length and the time it was taken. */
int files_text(struct ckptfs *fs, fuse_ino_t base, fuse_ino_t *node,
	       size_t *len, int64_t *mtime_ns);
/* The length and time of the text a nodeid names; -ESTALE once gone. */
int files_text_attr(fuse_ino_t node, size_t *len, int64_t *mtime_ns);
/* The kernel forgot n lookups of ino: what is open for it is dropped (a
 * text, once all its lookups are forgotten); a current/ file whose source
 * changed is dropped this way too, with n 0.  files_clear drops all. */
void files_forget(fuse_ino_t ino, uint64_t n);
void files_clear(void);

/* Logs an error object: "what: reason (rule, path)". */
void ckptfs_log_err(enum fuse_log_level level, const char *what,
		    const struct ckpt_err *err);

#endif
