/*
 * watch.c - the store is live, and automatic checkpoints are taken.
 *
 * A thread follows STORE with inotify (and rescans every RESCAN_MS in
 * case events are lost, or the store is on a filesystem without them),
 * lets core work out which checkpoints appeared, vanished or were
 * replaced, and tells the kernel to drop its cached entries for them.
 * Events come in bursts (rsync writes, then renames), so a change is acted
 * on DEBOUNCE_MS after the last event, and at most MAX_DELAY_MS after the
 * first.  Request handlers never notify the kernel themselves (it may hold
 * the very directory they would invalidate): they kick this thread.
 */
#include <errno.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <time.h>
#include <unistd.h>

#include "ckptfs.h"

#define DEBOUNCE_MS  50
#define MAX_DELAY_MS 250
#define RESCAN_MS    2000
#define WATCH_MASK                                                             \
	(IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO |                 \
	 IN_CLOSE_WRITE | IN_ATTRIB | IN_DELETE_SELF | IN_MOVE_SELF |          \
	 IN_ONLYDIR | IN_DONT_FOLLOW)

/* The store's path and the watch on what it names (one store a process). */
static char *watched;
static int wd = -1;

/* The eventfd wakes the watcher for two reasons: a change the daemon made
 * to the store (kicked), or pages to drop (inval). */
static atomic_bool kicked;
/* Nodeids whose cached pages the kernel must drop (ckptfs_watch_inval). */
static pthread_mutex_t inval_lock = PTHREAD_MUTEX_INITIALIZER;
static fuse_ino_t *inval;
static size_t ninval, capinval;

static void drop_pages(struct ckptfs *fs)
{
	fuse_ino_t *v;
	size_t n;

	pthread_mutex_lock(&inval_lock);
	v = inval;
	n = ninval;
	inval = NULL;
	ninval = capinval = 0;
	pthread_mutex_unlock(&inval_lock);
	for (size_t i = 0; i < n; i++)
		fuse_lowlevel_notify_inval_inode(fs->se, v[i], 0, 0);
	free(v);
}

struct changes {
	struct ckptfs *fs;
	int n;
};

/*
 * No entry of snapshots/ is ever invalidated: the kernel holds that
 * directory's lock through a whole mkdir, and an invalidation waits for
 * it; if the daemon is killed meanwhile, the thread stuck in the
 * invalidation keeps /dev/fuse open and the mkdir never ends.  Entries
 * there expire quickly instead (SNAPSHOT_ENTRY_TIMEOUT in ops.c), and
 * nodeids are never reused, so a replaced checkpoint is simply looked up
 * anew.  Invalidating an inode takes no directory lock.
 */
static void changed(void *ctx, const char *name)
{
	struct changes *c = ctx;

	(void)name;
	c->n++;
}

static void forget_latest(struct ckptfs *fs)
{
	fuse_lowlevel_notify_inval_inode(fs->se, INO_SNAPSHOTS, 0, 0);
	fuse_lowlevel_notify_inval_inode(fs->se, INO_LATEST, 0, 0);
}

/* Core follows the store's path to a directory created anew there (see
 * store.c); the watch follows it too, or its events would stop with the
 * old directory and changes would wait for the periodic rescan. */
static void rewatch(struct ckptfs *fs)
{
	int w;

	if (fs->inotify_fd < 0 || !watched)
		return;
	w = inotify_add_watch(fs->inotify_fd, watched, WATCH_MASK);
	if (w < 0 || w == wd)
		return;
	if (wd >= 0)
		inotify_rm_watch(fs->inotify_fd, wd);
	wd = w;
}

static void refresh(struct ckptfs *fs)
{
	struct changes c = {fs, 0};

	ckpt_store_refresh(fs->store, changed, &c);
	rewatch(fs);
	if (c.n)
		forget_latest(fs);
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void *watch(void *arg)
{
	struct ckptfs *fs = arg;
	struct pollfd p[3] = {{fs->stop_fd, POLLIN, 0},
			      {fs->kick_fd, POLLIN, 0},
			      {fs->inotify_fd, POLLIN, 0}};
	char buf[8192]
		__attribute__((aligned(__alignof__(struct inotify_event))));
	int64_t first = 0; /* when the oldest unhandled event came, or 0 */

	for (;;) {
		int64_t left = first ? first + MAX_DELAY_MS - now_ms() : 0;
		int timeout = !first		   ? RESCAN_MS
			      : left < 0	   ? 0
			      : left < DEBOUNCE_MS ? (int)left
						   : DEBOUNCE_MS;
		int r = poll(p, fs->inotify_fd >= 0 ? 3 : 2, timeout);
		uint64_t v;

		if (r < 0 && errno == EINTR)
			continue;
		if (r > 0 && p[0].revents)
			break;
		if (r > 0 && (p[1].revents & POLLIN)) {
			/* A change the daemon made itself, refreshed
			 * silently in the request: now tell the kernel. */
			if (read(fs->kick_fd, &v, sizeof(v)) == sizeof(v)) {
				drop_pages(fs);
				if (atomic_exchange(&kicked, false)) {
					refresh(fs);
					forget_latest(fs);
				}
			}
			continue;
		}
		if (r > 0 && (p[2].revents & POLLIN)) {
			/* Drain; which names changed is core's question. */
			while (read(fs->inotify_fd, buf, sizeof(buf)) > 0)
				;
			if (!first)
				first = now_ms();
			if (now_ms() - first < MAX_DELAY_MS)
				continue;
		}
		first = 0;
		refresh(fs);
	}
	return NULL;
}

/* Periodic checkpoints: auto-YYYYMMDDTHHMMSSZ every fs->every seconds,
 * then pruning to fs->keep.  A tick whose name is taken (two in one
 * second) is simply skipped. */
static void *tick(void *arg)
{
	struct ckptfs *fs = arg;
	struct pollfd p = {fs->stop_fd, POLLIN, 0};

	for (;;) {
		struct ckpt_err err = {0};
		struct ckpt_save_result res;
		char name[64];
		time_t now;
		struct tm tm;
		int r = poll(&p, 1, (int)(fs->every * 1000));

		if (r < 0 && errno == EINTR)
			continue;
		if (r > 0)
			break;
		now = time(NULL);
		gmtime_r(&now, &tm);
		strftime(name, sizeof(name), "auto-%Y%m%dT%H%M%SZ", &tm);
		if (ckpt_store_save(fs->store, name, "auto", &fs->save, &res,
				    &err) < 0)
			ckptfs_log_err(FUSE_LOG_WARNING, "automatic checkpoint",
				       &err);
		else
			fuse_log(FUSE_LOG_INFO,
				 "ckptfs: saved %s: %llu files, %llu copied "
				 "from the parent\n",
				 name, (unsigned long long)res.files,
				 (unsigned long long)res.copied);
		if (fs->keep)
			ckpt_store_prune(fs->store, fs->keep);
		ckptfs_watch_kick(fs);
	}
	return NULL;
}

int ckptfs_watch_start(struct ckptfs *fs, const char *store_dir)
{
	int rc = 0;

	fs->stop_fd = eventfd(0, EFD_CLOEXEC);
	fs->kick_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (fs->stop_fd < 0 || fs->kick_fd < 0)
		return -errno;
	fs->inotify_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (fs->inotify_fd >= 0 &&
	    (wd = inotify_add_watch(fs->inotify_fd, store_dir, WATCH_MASK)) <
		    0) {
		close(fs->inotify_fd);
		fs->inotify_fd = -1;
	}
	if (fs->inotify_fd < 0)
		rc = -errno; /* polling alone still works */
	else
		watched = strdup(store_dir);
	if (pthread_create(&fs->watcher, NULL, watch, fs) != 0)
		return -EAGAIN;
	fs->watching = true;
	if (fs->every && fs->can_save &&
	    pthread_create(&fs->ticker, NULL, tick, fs) == 0)
		fs->ticking = true;
	return rc;
}

static void wake(struct ckptfs *fs)
{
	uint64_t one = 1;

	/* A failed write means a wake-up is already pending. */
	if (fs->kick_fd >= 0 && write(fs->kick_fd, &one, sizeof(one)) < 0)
		return;
}

void ckptfs_watch_kick(struct ckptfs *fs)
{
	atomic_store(&kicked, true);
	wake(fs);
}

void ckptfs_watch_inval(struct ckptfs *fs, fuse_ino_t ino)
{
	pthread_mutex_lock(&inval_lock);
	if (ninval == capinval) {
		size_t cap = capinval ? 2 * capinval : 16;
		fuse_ino_t *v = realloc(inval, cap * sizeof(*v));
		if (v) {
			inval = v;
			capinval = cap;
		}
	}
	if (ninval < capinval)
		inval[ninval++] = ino;
	pthread_mutex_unlock(&inval_lock);
	wake(fs);
}

void ckptfs_watch_stop(struct ckptfs *fs)
{
	uint64_t one = 1;

	if (!fs->watching)
		return;
	if (write(fs->stop_fd, &one, sizeof(one)) != sizeof(one))
		pthread_cancel(fs->watcher);
	pthread_join(fs->watcher, NULL);
	if (fs->ticking)
		pthread_join(fs->ticker, NULL);
	fs->watching = fs->ticking = false;
	close(fs->stop_fd);
	close(fs->kick_fd);
	if (fs->inotify_fd >= 0)
		close(fs->inotify_fd);
	free(watched);
	watched = NULL;
	wd = -1;
	free(inval);
	inval = NULL;
	ninval = capinval = 0;
}
