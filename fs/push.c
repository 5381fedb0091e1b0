/*
 * push.c - handing inflated chunks to the kernel's page cache.
 *
 * A reader inflates a whole chunk to answer a request for part of it.  The
 * rest goes to the kernel with a store notification, so later reads of
 * that chunk (random reads nearby, the rest of a sequential pass) are
 * served from the page cache without a request.  Storing waits for the
 * lock of each page, and a page being read stays locked until its request
 * is answered, so it is never done by a request handler: this thread does
 * it, and handlers only queue a copy and move on.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "push.h"

#define QUEUE 8 /* chunks waiting; more are dropped (they are only a hint) */

struct item {
	fuse_ino_t ino;
	uint64_t off;
	size_t len;
	void *data;
};

static struct {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	pthread_t thread;
	struct fuse_session *se;
	struct item q[QUEUE];
	unsigned head, count;
	bool running, stop;
} push = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};

static void *push_main(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&push.lock);
	for (;;) {
		struct item it;
		struct fuse_bufvec bv = FUSE_BUFVEC_INIT(0);

		while (!push.stop && push.count == 0)
			pthread_cond_wait(&push.cond, &push.lock);
		if (push.stop)
			break;
		it = push.q[push.head];
		push.head = (push.head + 1) % QUEUE;
		push.count--;
		pthread_mutex_unlock(&push.lock);
		bv.buf[0].mem = it.data;
		bv.buf[0].size = it.len;
		/* -ENOENT: the kernel has forgotten the file; nothing to do. */
		fuse_lowlevel_notify_store(push.se, it.ino, (off_t)it.off, &bv,
					   0);
		free(it.data);
		pthread_mutex_lock(&push.lock);
	}
	pthread_mutex_unlock(&push.lock);
	return NULL;
}

int ckptfs_push_start(struct fuse_session *se)
{
	push.se = se;
	push.stop = false;
	if (pthread_create(&push.thread, NULL, push_main, NULL) != 0)
		return -EAGAIN;
	pthread_mutex_lock(&push.lock);
	push.running = true;
	pthread_mutex_unlock(&push.lock);
	return 0;
}

void ckptfs_push_stop(void)
{
	struct timespec until;

	if (!push.running)
		return;
	pthread_mutex_lock(&push.lock);
	push.stop = true;
	pthread_cond_broadcast(&push.cond);
	pthread_mutex_unlock(&push.lock);
	/* A store may wait for a page whose read will never be answered
	 * once the loop has stopped (a signal, not an unmount); the
	 * process is ending then, and is not held up by it. */
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += 2;
	if (pthread_timedjoin_np(push.thread, NULL, &until) != 0) {
		pthread_detach(push.thread);
		return;
	}
	pthread_mutex_lock(&push.lock);
	push.running = false;
	pthread_mutex_unlock(&push.lock);
	for (; push.count > 0; push.count--) {
		free(push.q[push.head].data);
		push.head = (push.head + 1) % QUEUE;
	}
}

void ckptfs_push_chunk(void *ctx, uint64_t off, const void *p, size_t len)
{
	struct item it = {(fuse_ino_t)(uintptr_t)ctx, off, len, NULL};
	bool room;

	pthread_mutex_lock(&push.lock);
	room = push.running && push.count < QUEUE;
	pthread_mutex_unlock(&push.lock);
	if (!room)
		return;
	it.data = malloc(len);
	if (!it.data)
		return;
	memcpy(it.data, p, len);
	pthread_mutex_lock(&push.lock);
	if (push.running && push.count < QUEUE && !push.stop) {
		push.q[(push.head + push.count) % QUEUE] = it;
		push.count++;
		it.data = NULL;
		pthread_cond_signal(&push.cond);
	}
	pthread_mutex_unlock(&push.lock);
	free(it.data);
}
