/*
 * loop.c - the session loop: which worker reads the next request.
 */
#include <errno.h>
#include <linux/fuse.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ckptfs.h"

/*
 * libfuse's multi-threaded loop leaves every idle worker blocked reading
 * /dev/fuse, and the kernel gives each request to the worker that has
 * waited longest: a walk, which sends one request at a time, is served by
 * the workers in turn, each woken cold (find took 25% longer than with
 * one thread).  Here, while requests come one at a time, one worker reads
 * them all: the one that has just replied reads the next itself, and the
 * others sleep.  They are woken when a request arrives while others are
 * at work or with more queued behind it, and when the one in hand has run
 * for a tick (a save, a slow read) with nobody reading.
 */
#define TICK_MS	    2	/* a stalled request is noticed within two */
#define ACTIVE_MS   100 /* ticking stops this long after the last request */
#define DOZE_MS	    250 /* then the loop only checks for exit */
#define MAX_WORKERS 10	/* libfuse's default for -o max_threads */

struct worker {
	struct loop *l;
	pthread_t id;
	struct fuse_buf buf;
};

struct loop {
	struct fuse_session *se;
	pthread_mutex_t lock;
	pthread_cond_t idle; /* workers with nothing to do */
	pthread_cond_t tick; /* the main thread, watching */
	struct worker *w;    /* max of them, n started */
	unsigned n, max;
	unsigned reading, parked;
	unsigned busy, fg; /* requests in hand; fg: someone waits on them */
	uint64_t served;
	bool dozing, stop;
	int err;
};

static void *work(void *arg);

/* Lock held.  Someone should read: wake a sleeping worker or start one. */
static void add_reader(struct loop *l)
{
	struct worker *w;
	sigset_t exits, old;

	if (l->parked) {
		pthread_cond_signal(&l->idle);
		return;
	}
	if (l->n >= l->max)
		return;
	w = &l->w[l->n];
	memset(w, 0, sizeof(*w));
	w->l = l;
	/* The signals that end the session go to the main thread, which
	 * watches for the end (as libfuse's workers do). */
	sigemptyset(&exits);
	sigaddset(&exits, SIGTERM);
	sigaddset(&exits, SIGINT);
	sigaddset(&exits, SIGHUP);
	sigaddset(&exits, SIGQUIT);
	pthread_sigmask(SIG_BLOCK, &exits, &old);
	if (pthread_create(&w->id, NULL, work, w) == 0)
		l->n++;
	pthread_sigmask(SIG_SETMASK, &old, NULL);
}

/* Releases and forgets: the kernel sends them without anyone waiting. */
static bool background(const struct fuse_buf *b)
{
	const struct fuse_in_header *h = b->mem;

	if (b->flags & FUSE_BUF_IS_FD || b->size < sizeof(*h))
		return false;
	return h->opcode == FUSE_RELEASE || h->opcode == FUSE_RELEASEDIR ||
	       h->opcode == FUSE_FORGET || h->opcode == FUSE_BATCH_FORGET;
}

/* More requests waiting behind the one just read? */
static bool queued(struct loop *l)
{
	struct pollfd p = {fuse_session_fd(l->se), POLLIN, 0};

	return poll(&p, 1, 0) > 0 && (p.revents & POLLIN);
}

static void *work(void *arg)
{
	struct worker *w = arg;
	struct loop *l = w->l;
	bool fg;
	int res;

	pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, NULL);
	pthread_mutex_lock(&l->lock);
	for (;;) {
		/* Sleep while another reads and nobody else waits on an
		 * answer; with others at work, concurrent load is likely:
		 * read too. */
		while (!l->stop && l->reading && !l->fg) {
			l->parked++;
			pthread_cond_wait(&l->idle, &l->lock);
			l->parked--;
		}
		if (l->stop)
			break;
		l->reading++;
		pthread_mutex_unlock(&l->lock);
		/* Only a read in progress may be cancelled, at exit. */
		pthread_setcancelstate(PTHREAD_CANCEL_ENABLE, NULL);
		res = fuse_session_receive_buf(l->se, &w->buf);
		pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, NULL);
		pthread_mutex_lock(&l->lock);
		l->reading--;
		if (res == -EINTR)
			continue;
		if (res <= 0) {
			if (res < 0)
				l->err = res;
			l->stop = true;
			pthread_cond_broadcast(&l->idle);
			pthread_cond_signal(&l->tick);
			break;
		}
		fg = !background(&w->buf);
		l->served++;
		l->busy++;
		l->fg += fg;
		if (l->dozing) {
			l->dozing = false;
			pthread_cond_signal(&l->tick);
		}
		/* Others at work or waiting: keep someone reading, as any
		 * concurrent load wants.  A release is quick and waits for
		 * nothing; the request behind it is this worker's next. */
		if (fg && !l->reading && (l->fg > 1 || queued(l)))
			add_reader(l);
		pthread_mutex_unlock(&l->lock);
		fuse_session_process_buf(l->se, &w->buf);
		pthread_mutex_lock(&l->lock);
		l->busy--;
		l->fg -= fg;
	}
	pthread_mutex_unlock(&l->lock);
	return NULL;
}

static void deadline(struct timespec *ts, long ms)
{
	clock_gettime(CLOCK_MONOTONIC, ts);
	ts->tv_sec += ms / 1000;
	ts->tv_nsec += (ms % 1000) * 1000000;
	if (ts->tv_nsec >= 1000000000) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000;
	}
}

/* Runs the session until it ends, with at most max_threads workers (0:
 * MAX_WORKERS); idle workers sleep rather than exit, so -o
 * max_idle_threads has no use here.  Returns 0 or a negative errno. */
int ckptfs_serve(struct fuse_session *se, unsigned max_threads)
{
	struct loop l = {.se = se,
			 .lock = PTHREAD_MUTEX_INITIALIZER,
			 .max = max_threads ? max_threads : MAX_WORKERS};
	pthread_condattr_t ca;
	unsigned quiet = 0;

	l.w = calloc(l.max, sizeof(*l.w));
	if (!l.w)
		return -ENOMEM;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&l.idle, NULL);
	pthread_cond_init(&l.tick, &ca);
	pthread_condattr_destroy(&ca);
	pthread_mutex_lock(&l.lock);
	add_reader(&l);
	if (!l.n)
		l.stop = true;
	/* A signal ends the session (fuse_set_signal_handlers) but does not
	 * end a condition wait: hence the doze timeout. */
	while (!l.stop && !fuse_session_exited(se)) {
		uint64_t seen = l.served;
		struct timespec ts;

		l.dozing = quiet * TICK_MS >= ACTIVE_MS;
		deadline(&ts, l.dozing ? DOZE_MS : TICK_MS);
		pthread_cond_timedwait(&l.tick, &l.lock, &ts);
		l.dozing = false;
		if (l.served != seen)
			quiet = 0;
		else if (quiet * TICK_MS < ACTIVE_MS)
			quiet++;
		if (l.busy && !l.reading && l.served == seen && !l.stop)
			add_reader(&l);
	}
	l.stop = true;
	pthread_cond_broadcast(&l.idle);
	for (unsigned i = 0; i < l.n; i++)
		pthread_cancel(l.w[i].id);
	pthread_mutex_unlock(&l.lock);
	for (unsigned i = 0; i < l.n; i++) {
		pthread_join(l.w[i].id, NULL);
		free(l.w[i].buf.mem);
	}
	free(l.w);
	pthread_cond_destroy(&l.idle);
	pthread_cond_destroy(&l.tick);
	fuse_session_reset(se);
	return l.err;
}
