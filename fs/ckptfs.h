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
	INO_ERRORS, /* .ckptfs/errors */
	/* errors/NAME files: INO_ERROR_BASE + their slot (see
	 * ckpt_store_error), below 2^32 like every fixed entry */
	INO_ERROR_BASE = 1u << 16,
	INO_ERROR_END = 1u << 20,
};

struct ckptfs {
	struct ckpt_store *store;
	struct fuse_session *se;
	uid_t uid; /* the mounting user owns everything shown */
	gid_t gid;
	int64_t mount_ns;
	double timeout; /* seconds the kernel may cache immutable content */

	/* Saving: possible when a source was given and not -o ro. */
	bool can_save;
	bool ro;
	struct ckpt_save_opts save; /* sources, selection, allowed secrets */
	bool has_agent;
	uid_t agent_uid; /* mkdir by this uid makes agent checkpoints */
	unsigned every;	 /* seconds between automatic checkpoints, or 0 */
	unsigned keep;	 /* automatic checkpoints kept, or 0 for all */

	/* watch.c */
	pthread_t watcher, ticker;
	int inotify_fd, stop_fd, kick_fd;
	bool watching, ticking;
};

extern const struct fuse_lowlevel_ops ckptfs_ops;

/* Starts and stops the thread that follows changes in STORE and tells the
 * kernel to forget what it cached about changed checkpoints. */
int ckptfs_watch_start(struct ckptfs *fs, const char *store_dir);
void ckptfs_watch_stop(struct ckptfs *fs);
/* Asks the watcher to tell the kernel that "latest" and snapshots/ may
 * have changed.  Request handlers use this instead of notifying the
 * kernel themselves, which could deadlock on the directory they hold. */
void ckptfs_watch_kick(struct ckptfs *fs);

/* Logs an error object: "what: reason (rule, path)". */
void ckptfs_log_err(enum fuse_log_level level, const char *what,
		    const struct ckpt_err *err);

#endif
