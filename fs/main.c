/*
 * main.c - options, mount and logging.
 *
 * Every option is declared once, in opt_spec, and described once, in
 * usage(); bad options fail here, at mount, never at first use.  Logs go
 * to stderr in the foreground and to syslog once daemonised.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <malloc.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <cjson/cJSON.h>
#include <syslog.h>
#include <unistd.h>

#include "ckptfs.h"
#include "push.h"

struct options {
	char *store;
	int ro, workspace_only, help, version;
	bool others,
		checked; /* allow_other or allow_root; default_permissions */
	char *source, *tier[CKPT_TIER_COUNT], *backend, *agent_uid;
	char *exclude_from, *secrets_allow;
	unsigned every, keep;
	unsigned long max_entries, max_manifest_mb, max_ratio;
	unsigned long long max_entry_mb, max_total_mb;
	double timeout;
};

enum {
	KEY_OTHERS,
	KEY_CHECKED
};

#define OPT(t, p)                                                              \
	{                                                                      \
		t, offsetof(struct options, p), 1                              \
	}
static const struct fuse_opt opt_spec[] = {
	OPT("ro", ro), OPT("workspace_only", workspace_only),
	OPT("source=%s", source), OPT("world=%s", tier[CKPT_TIER_WORLD]),
	OPT("workspace=%s", tier[CKPT_TIER_WORKSPACE]),
	OPT("session=%s", tier[CKPT_TIER_SESSION]), OPT("backend=%s", backend),
	OPT("agent_uid=%s", agent_uid), OPT("every=%u", every),
	OPT("keep=%u", keep), OPT("exclude_from=%s", exclude_from),
	OPT("secrets_allow=%s", secrets_allow),
	OPT("max_entries=%lu", max_entries),
	OPT("max_entry_mb=%llu", max_entry_mb),
	OPT("max_total_mb=%llu", max_total_mb), OPT("max_ratio=%lu", max_ratio),
	OPT("max_manifest_mb=%lu", max_manifest_mb),
	OPT("cache_timeout=%lf", timeout), OPT("-h", help), OPT("--help", help),
	OPT("-V", version), OPT("--version", version),
	/* Noted, and passed on to libfuse. */
	FUSE_OPT_KEY("allow_other", KEY_OTHERS),
	FUSE_OPT_KEY("allow_root", KEY_OTHERS),
	FUSE_OPT_KEY("default_permissions", KEY_CHECKED), FUSE_OPT_END};

static void usage(const char *prog)
{
	printf("usage: %s [options] STORE MOUNTPOINT\n\n"
	       "Shows every STORE/NAME.ckpt as a read-only directory tree under\n"
	       "MOUNTPOINT/snapshots/NAME/; with a source, mkdir\n"
	       "MOUNTPOINT/snapshots/NEW saves the live run as STORE/NEW.ckpt.\n\n"
	       "ckptfs options:\n"
	       "    -o source=RUNDIR       the live run: RUNDIR/world, RUNDIR/workspace,\n"
	       "                           RUNDIR/session and RUNDIR/run.json\n"
	       "    -o world=DIR           the world tier (overrides source's)\n"
	       "    -o workspace=DIR       the workspace tier (overrides source's)\n"
	       "    -o session=DIR         the session tier, e.g. ~/.claude (overrides source's)\n"
	       "    -o backend=NAME        session allowlist: claude-code-v1, codex-v1, ...\n"
	       "                           (default: run.json's backend; none: no session)\n"
	       "    -o workspace_only      never save or show the session tier\n"
	       "    -o agent_uid=UID       mkdir by UID makes agent checkpoints, and UID\n"
	       "                           may not delete or rename user checkpoints\n"
	       "    -o every=SECONDS       take auto-YYYYMMDDTHHMMSSZ checkpoints\n"
	       "    -o keep=N              keep only the newest N automatic checkpoints\n"
	       "    -o exclude_from=FILE   more patterns the save leaves out\n"
	       "    -o secrets_allow=FILE  fingerprints of reviewed false positives\n"
	       "    -o ro                  refuse every change (mkdir, rmdir, mv)\n"
	       "    -o max_entries=N       refuse archives with more entries (1000000)\n"
	       "    -o max_entry_mb=N      hide entries larger than N MiB (65536)\n"
	       "    -o max_total_mb=N      refuse archives whose content exceeds N MiB (1048576)\n"
	       "    -o max_ratio=N         hide entries claiming more than N:1 (2000)\n"
	       "    -o max_manifest_mb=N   refuse larger manifests (256)\n"
	       "    -o cache_timeout=S     seconds the kernel caches checkpoint\n"
	       "                           metadata (86400; content never changes)\n"
	       "    -h, --help             print this help\n"
	       "    -V, --version          print the version\n\n",
	       prog);
	printf("FUSE options:\n");
	fuse_cmdline_help();
	fuse_lowlevel_help();
}

static int opt_proc(void *data, const char *arg, int key,
		    struct fuse_args *outargs)
{
	struct options *o = data;

	(void)outargs;
	if (key == FUSE_OPT_KEY_NONOPT && !o->store) {
		o->store = strdup(arg);
		return 0; /* consumed: the mountpoint is the next one */
	}
	if (key == KEY_OTHERS)
		o->others = true;
	if (key == KEY_CHECKED)
		o->checked = true;
	return 1;
}

static bool daemonized;

static void log_func(enum fuse_log_level level, const char *fmt, va_list ap)
{
	if (daemonized)
		vsyslog((int)level, fmt, ap);
	else
		vfprintf(stderr, fmt, ap);
}

void ckptfs_log_err(enum fuse_log_level level, const char *what,
		    const struct ckpt_err *err)
{
	fuse_log(level, "ckptfs: %s: %s (%s%s%s)\n", what, err->msg,
		 err->rule[0] ? err->rule : "error", err->path[0] ? ", " : "",
		 err->path);
}

/* The first time a checkpoint is indexed, say what was refused or hidden:
 * the kernel passes back only an errno, so the log carries the reason. */
static void on_open(void *ctx, const char *name, const struct ckpt_archive *a,
		    const struct ckpt_err *why)
{
	struct ckpt_hidden h[16];
	size_t n;

	(void)ctx;
	if (!a) {
		char what[300];
		snprintf(what, sizeof(what), "checkpoint %s refused", name);
		ckptfs_log_err(FUSE_LOG_WARNING, what, why);
		return;
	}
	n = ckpt_archive_hidden(a, h, 16);
	for (size_t i = 0; i < n; i++)
		fuse_log(FUSE_LOG_WARNING,
			 "ckptfs: checkpoint %s: %u entries hidden (%s), "
			 "e.g. %s\n",
			 name, h[i].count, h[i].rule, h[i].sample);
}

static const char *const tier_names[CKPT_TIER_COUNT] = {"world", "workspace",
							"session"};

/* An absolute path for a directory option, or NULL with a message. */
static char *dir_option(const char *opt, const char *path, bool must)
{
	char *abs = realpath(path, NULL);
	struct stat st;

	if (abs && stat(abs, &st) == 0 && S_ISDIR(st.st_mode))
		return abs;
	if (must)
		fprintf(stderr, "ckptfs: %s=%s: %s\n", opt, path,
			abs ? "not a directory" : strerror(errno));
	free(abs);
	return NULL;
}

/* run.json's "backend", when the harness wrote one. */
static char *run_backend(const char *run_json)
{
	char buf[65536];
	char *backend = NULL;
	FILE *f = fopen(run_json, "re");
	size_t n;
	cJSON *run, *b;

	if (!f)
		return NULL;
	n = fread(buf, 1, sizeof(buf), f);
	fclose(f);
	run = cJSON_ParseWithLength(buf, n);
	b = cJSON_GetObjectItem(run, "backend");
	if (cJSON_IsString(b))
		backend = strdup(b->valuestring);
	cJSON_Delete(run);
	return backend;
}

/* Everything a save needs, checked now so that a bad option fails the
 * mount rather than the first mkdir.  Returns 0, or -1 after saying why. */
static int setup_save(struct options *o, struct ckptfs *fs)
{
	struct ckpt_save_opts *so = &fs->save;
	struct ckpt_err err = {0};
	const char *dir = getenv("CKPTFS_BACKENDS");
	char *backend = o->backend ? strdup(o->backend) : NULL;
	char *src = NULL, path[PATH_MAX + 32];
	bool any = false;
	int rc = 0;

	if (o->source && !(src = dir_option("source", o->source, true)))
		return -1;
	for (int t = 0; t < CKPT_TIER_COUNT; t++) {
		if (o->tier[t]) {
			so->tier_dir[t] =
				dir_option(tier_names[t], o->tier[t], true);
			if (!so->tier_dir[t])
				rc = -1;
		} else if (src) {
			snprintf(path, sizeof(path), "%s/%s", src,
				 tier_names[t]);
			so->tier_dir[t] =
				dir_option(tier_names[t], path, false);
		}
		any |= so->tier_dir[t] != NULL;
	}
	if (src) {
		snprintf(path, sizeof(path), "%s/run.json", src);
		if (access(path, R_OK) == 0) {
			so->run_json = strdup(path);
			if (!backend)
				backend = run_backend(path);
		}
	}
	free(src);
	if (rc < 0)
		return -1;
	if ((o->source || o->tier[0] || o->tier[1] || o->tier[2]) && !any) {
		fprintf(stderr,
			"ckptfs: source=%s has no world/, workspace/ "
			"or session/\n",
			o->source);
		return -1;
	}
	/* Without a backend nothing says which session files matter: the
	 * session tier is not saved at all (the safe default). */
	if (!backend) {
		free((char *)so->tier_dir[CKPT_TIER_SESSION]);
		so->tier_dir[CKPT_TIER_SESSION] = NULL;
	}
	so->backend = backend;
	so->policy_flags = o->workspace_only ? CKPT_POLICY_WORKSPACE_ONLY : 0;
	if (ckpt_select_open(backend, dir ? dir : PKGDATADIR "/backends",
			     o->exclude_from,
			     (struct ckpt_select **)&so->select, &err) < 0) {
		fprintf(stderr, "ckptfs: %s%s%s\n", err.msg,
			err.path[0] ? ": " : "", err.path);
		return -1;
	}
	if (o->secrets_allow &&
	    ckpt_scan_allow_load(o->secrets_allow,
				 (struct ckpt_scan_allow **)&so->allow,
				 &err) < 0) {
		fprintf(stderr, "ckptfs: secrets_allow=%s: %s\n",
			o->secrets_allow, err.msg);
		return -1;
	}
	if (o->agent_uid) {
		char *end;
		unsigned long uid = strtoul(o->agent_uid, &end, 10);
		if (!*o->agent_uid || *end || uid >= (uid_t)-1) {
			fprintf(stderr, "ckptfs: agent_uid=%s: not a uid\n",
				o->agent_uid);
			return -1;
		}
		fs->has_agent = true;
		fs->agent_uid = (uid_t)uid;
	}
	if ((o->every || o->keep) && !any) {
		fprintf(stderr, "ckptfs: every= and keep= need a source\n");
		return -1;
	}
	if (o->keep && !o->every) {
		fprintf(stderr, "ckptfs: keep= prunes automatic checkpoints; "
				"give every= too\n");
		return -1;
	}
	/* A year at most: beyond that (or a negative number read as a huge
	 * one) the period overflows the ticker's poll timeout. */
	if (o->every > 365u * 86400) {
		fprintf(stderr, "ckptfs: every=%u: at most %u seconds\n",
			o->every, 365u * 86400);
		return -1;
	}
	fs->every = o->every;
	fs->keep = o->keep;
	fs->ro = o->ro;
	fs->has_source = any;
	fs->can_save = any && !o->ro;
	return 0;
}

static void free_save(struct ckptfs *fs)
{
	for (int t = 0; t < CKPT_TIER_COUNT; t++)
		free((char *)fs->save.tier_dir[t]);
	free((char *)fs->save.run_json);
	free((char *)fs->save.backend);
	ckpt_select_free((struct ckpt_select *)fs->save.select);
	ckpt_scan_allow_free((struct ckpt_scan_allow *)fs->save.allow);
}

static void raise_nofile(void)
{
	struct rlimit rl;

	/* One descriptor per open checkpoint: a store of thousands must not
	 * run out at the default soft limit of 1024. */
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

/* ---- reading the store ahead ------------------------------------------ */

/*
 * Listing snapshots/ (or finding latest) indexes every checkpoint in turn,
 * and on a cold cache each one waits for the tail of its file (end record,
 * central directory, manifest) to come from the disk.  Right after the
 * mount, a thread asks the kernel to read every checkpoint's tail ahead,
 * all at once, so the first listing finds them in the page cache.  The
 * daemon holds no memory for it, and reads at most PREFETCH_TOTAL.  Names
 * and file types are checked as the store does: only regular files
 * NAME.ckpt are opened, without following links or blocking.
 */
#define PREFETCH_TAIL  (256 << 10)
#define PREFETCH_TOTAL (64 << 20)

static pthread_t prefetcher;
static bool prefetching;
static volatile sig_atomic_t prefetch_stop;

static void prefetch_one(int dfd, const char *name, off_t *budget)
{
	size_t n = strlen(name);
	struct stat st;
	off_t len;
	int fd;

	if (n <= 5 || strcmp(name + n - 5, ".ckpt") != 0 ||
	    ckpt_name_check(name, n - 5) < 0)
		return;
	if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
	    !S_ISREG(st.st_mode))
		return;
	fd = openat(dfd, name, O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return;
	if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) {
		len = st.st_size < PREFETCH_TAIL ? st.st_size : PREFETCH_TAIL;
		len = len < *budget ? len : *budget;
		posix_fadvise(fd, st.st_size - len, len, POSIX_FADV_WILLNEED);
		*budget -= len;
	}
	close(fd);
}

static void *prefetch(void *arg)
{
	DIR *d = opendir(arg);
	struct dirent *e;
	off_t budget = PREFETCH_TOTAL;

	if (!d)
		return NULL;
	while (!prefetch_stop && budget > 0 && (e = readdir(d)))
		prefetch_one(dirfd(d), e->d_name, &budget);
	closedir(d);
	return NULL;
}

static void prefetch_start(const char *store)
{
	prefetching =
		pthread_create(&prefetcher, NULL, prefetch, (void *)store) == 0;
}

static void prefetch_end(void)
{
	prefetch_stop = 1;
	if (prefetching)
		pthread_join(prefetcher, NULL);
	prefetching = false;
}

int main(int argc, char **argv)
{
	struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
	struct options o = {.timeout = 86400};
	struct fuse_cmdline_opts cmd = {0};
	struct ckpt_store_opts so = {.opened = on_open};
	struct ckptfs fs = {.inotify_fd = -1,
			    .stop_fd = -1,
			    .kick_fd = -1,
			    .live = {.lock = PTHREAD_MUTEX_INITIALIZER}};
	struct ckpt_err err = {0};
	char store[PATH_MAX], fsname[PATH_MAX + 32];
	int rc = 1;

	/* Indexing an archive frees megabytes of temporaries in the arena of
	 * the worker that asked first, and malloc_trim() cannot return the
	 * top of a thread's arena: 2.4 MiB stayed resident for 22,000
	 * entries.  With one arena the trim after indexing returns it all;
	 * the workers allocate little per request, so they do not contend. */
	mallopt(M_ARENA_MAX, 1);
	fuse_set_log_func(log_func);
	if (fuse_opt_parse(&args, &o, opt_spec, opt_proc) < 0)
		return 2;
	if (o.help) {
		usage(argv[0]);
		rc = 0;
		goto out_args;
	}
	if (o.version) {
		printf("ckptfs %s (libfuse %s)\n", PACKAGE_VERSION,
		       fuse_pkgversion());
		rc = 0;
		goto out_args;
	}
	if (fuse_parse_cmdline(&args, &cmd) != 0) {
		rc = 2;
		goto out_args;
	}
	if (!o.store || !cmd.mountpoint) {
		fprintf(stderr,
			"usage: %s [options] STORE MOUNTPOINT "
			"(see --help)\n",
			argv[0]);
		rc = 2;
		goto out_args;
	}
	/* Daemonising changes to "/": keep the store absolute. */
	if (!realpath(o.store, store)) {
		fprintf(stderr, "ckptfs: %s: %s\n", o.store, strerror(errno));
		goto out_args;
	}
	ckpt_limits_default(&so.limits);
	if (o.max_entries)
		so.limits.max_entries = o.max_entries;
	if (o.max_entry_mb)
		so.limits.max_entry_size = o.max_entry_mb << 20;
	if (o.max_total_mb)
		so.limits.max_total_size = o.max_total_mb << 20;
	if (o.max_ratio)
		so.limits.max_ratio = o.max_ratio;
	if (o.max_manifest_mb)
		so.limits.max_manifest_size = (uint64_t)o.max_manifest_mb << 20;
	if (o.timeout < 0) {
		fprintf(stderr, "ckptfs: cache_timeout must be >= 0\n");
		goto out_args;
	}
	so.policy_flags = o.workspace_only ? CKPT_POLICY_WORKSPACE_ONLY : 0;
	if (setup_save(&o, &fs) < 0)
		goto out_save;
	raise_nofile();
	if (ckpt_store_open(store, &so, &fs.store, &err) < 0) {
		fprintf(stderr, "ckptfs: %s: %s\n", store, err.msg);
		goto out_save;
	}
	fs.uid = getuid();
	fs.gid = getgid();
	fs.timeout = o.timeout;
	fs.shared = o.others && !o.checked;
	fs.mount_ns = ckpt_now_ns();

	/* fsname shows the store in mount(8) and df(1); commas would split
	 * the option string, so such paths fall back to the bare name. */
	snprintf(fsname, sizeof(fsname), "-ofsname=%s,subtype=ckptfs",
		 strpbrk(store, ",\\") ? "ckptfs" : store);
	fuse_opt_add_arg(&args, fsname);
	/* ro is ours (every change refused) and the kernel's too, so
	 * /proc/mounts and mount(8) say what users asked for. */
	if (o.ro)
		fuse_opt_add_arg(&args, "-oro");
	fs.se = fuse_session_new(&args, &ckptfs_ops, sizeof(ckptfs_ops), &fs);
	if (!fs.se)
		goto out_store;
	if (fuse_set_signal_handlers(fs.se) != 0)
		goto out_session;
	if (fuse_session_mount(fs.se, cmd.mountpoint) != 0)
		goto out_signals;
	if (fuse_daemonize(cmd.foreground) != 0)
		goto out_unmount;
	if (!cmd.foreground) {
		openlog("ckptfs", LOG_PID, LOG_DAEMON);
		daemonized = true;
	}
	/* After daemonising: threads do not survive fork(). */
	if (ckptfs_watch_start(&fs, store) < 0)
		fuse_log(FUSE_LOG_WARNING,
			 "ckptfs: cannot watch %s; new "
			 "checkpoints appear within 2 s\n",
			 store);
	if (ckptfs_push_start(fs.se) < 0)
		fuse_log(FUSE_LOG_WARNING,
			 "ckptfs: cannot start the page cache thread\n");
	prefetch_start(store);
	if (cmd.singlethread) {
		rc = fuse_session_loop(fs.se);
	} else if (!cmd.clone_fd) {
		rc = ckptfs_serve(fs.se, cmd.max_threads);
	} else {
		struct fuse_loop_config *cfg = fuse_loop_cfg_create();
		fuse_loop_cfg_set_clone_fd(cfg, cmd.clone_fd);
		if (cmd.max_threads)
			fuse_loop_cfg_set_max_threads(cfg, cmd.max_threads);
		/* UINT_MAX is the parser's "not given". */
		if (cmd.max_idle_threads != UINT_MAX)
			fuse_loop_cfg_set_idle_threads(cfg,
						       cmd.max_idle_threads);
		rc = fuse_session_loop_mt(fs.se, cfg);
		fuse_loop_cfg_destroy(cfg);
	}
	rc = rc < 0 ? 1 : 0;
	prefetch_end();
	ckptfs_push_stop();
	ckptfs_watch_stop(&fs);
out_unmount:
	fuse_session_unmount(fs.se);
out_signals:
	fuse_remove_signal_handlers(fs.se);
out_session:
	fuse_session_destroy(fs.se);
out_store:
	ckpt_store_close(fs.store);
out_save:
	free_save(&fs);
	live_free(&fs);
out_args:
	free(cmd.mountpoint);
	free(o.store);
	free(o.source);
	free(o.backend);
	free(o.agent_uid);
	free(o.exclude_from);
	free(o.secrets_allow);
	for (int t = 0; t < CKPT_TIER_COUNT; t++)
		free(o.tier[t]);
	fuse_opt_free_args(&args);
	return rc;
}
