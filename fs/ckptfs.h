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

/* current/ has no stable node numbers: each path the kernel holds gets a
 * nodeid until the kernel forgets it.  live_ino() counts one lookup. */
fuse_ino_t live_ino(struct ckptfs *fs, const char *path);
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
/* Takes the text of a control file (status, errors/NAME) afresh for the
 * next reads; gives its length, and the time it last changed. */
int files_text(struct ckptfs *fs, fuse_ino_t ino, size_t *len,
	       int64_t *mtime_ns);
/* Drops what is open for a nodeid the kernel forgot; and everything. */
void files_forget(fuse_ino_t ino);
void files_clear(void);

/* Logs an error object: "what: reason (rule, path)". */
void ckptfs_log_err(enum fuse_log_level level, const char *what,
		    const struct ckpt_err *err);

#endif
