/*
 * push.h - handing inflated chunks to the kernel's page cache.
 */
#ifndef CKPTFS_PUSH_H
#define CKPTFS_PUSH_H

#include "ckptfs.h"

/* Starts and stops the thread that stores chunks in the page cache. */
int ckptfs_push_start(struct fuse_session *se);
void ckptfs_push_stop(void);
/* A ckpt_chunk_fn: ctx is the file's nodeid.  Queues a copy; drops the
 * chunk when the queue is full. */
void ckptfs_push_chunk(void *ctx, uint64_t off, const void *p, size_t len);

#endif
