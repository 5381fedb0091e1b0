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
	INO_FIRST_FREE,
};

struct ckptfs {
	struct ckpt_store *store;
	struct fuse_session *se;
	uid_t uid; /* the mounting user owns everything shown */
	gid_t gid;
	bool ro;
	int64_t mount_ns;
	double timeout; /* seconds the kernel may cache immutable content */

	/* watch.c */
	pthread_t watcher;
	int inotify_fd, stop_fd;
	bool watching;
};

extern const struct fuse_lowlevel_ops ckptfs_ops;

/* Starts and stops the thread that follows changes in STORE and tells the
 * kernel to forget what it cached about changed checkpoints. */
int ckptfs_watch_start(struct ckptfs *fs, const char *store_dir);
void ckptfs_watch_stop(struct ckptfs *fs);

/* Logs an error object: "what: reason (rule, path)". */
void ckptfs_log_err(enum fuse_log_level level, const char *what,
		    const struct ckpt_err *err);

#endif
