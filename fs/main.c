/*
 * main.c - options, mount, logging and the session loop.
 *
 * Every option is declared once, in opt_spec, and described once, in
 * usage(); bad options fail here, at mount, never at first use.  Logs go
 * to stderr in the foreground and to syslog once daemonised.
 */
#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "ckptfs.h"

struct options {
	char *store;
	int ro, workspace_only, help, version;
	unsigned long max_entries, max_manifest_mb, max_ratio;
	unsigned long long max_entry_mb, max_total_mb;
	double timeout;
};

#define OPT(t, p)                                                              \
	{                                                                      \
		t, offsetof(struct options, p), 1                              \
	}
static const struct fuse_opt opt_spec[] = {
	OPT("ro", ro),
	OPT("workspace_only", workspace_only),
	OPT("max_entries=%lu", max_entries),
	OPT("max_entry_mb=%llu", max_entry_mb),
	OPT("max_total_mb=%llu", max_total_mb),
	OPT("max_ratio=%lu", max_ratio),
	OPT("max_manifest_mb=%lu", max_manifest_mb),
	OPT("cache_timeout=%lf", timeout),
	OPT("-h", help),
	OPT("--help", help),
	OPT("-V", version),
	OPT("--version", version),
	FUSE_OPT_END};

static void usage(const char *prog)
{
	printf("usage: %s [options] STORE MOUNTPOINT\n\n"
	       "Shows every STORE/NAME.ckpt as a read-only directory tree under\n"
	       "MOUNTPOINT/snapshots/NAME/.\n\n"
	       "ckptfs options:\n"
	       "    -o ro                  refuse every change (mkdir, rmdir, mv)\n"
	       "    -o workspace_only      never show the session tier\n"
	       "    -o max_entries=N       refuse archives with more entries (1000000)\n"
	       "    -o max_entry_mb=N      hide entries larger than N MiB (65536)\n"
	       "    -o max_total_mb=N      refuse archives whose content exceeds N MiB (1048576)\n"
	       "    -o max_ratio=N         hide entries compressed more than N:1 (1000)\n"
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

int main(int argc, char **argv)
{
	struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
	struct options o = {.timeout = 86400};
	struct fuse_cmdline_opts cmd = {0};
	struct ckpt_store_opts so = {.opened = on_open};
	struct ckptfs fs = {.inotify_fd = -1, .stop_fd = -1};
	struct ckpt_err err = {0};
	char store[PATH_MAX], fsname[PATH_MAX + 32];
	struct timespec now;
	int rc = 1;

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
	raise_nofile();
	if (ckpt_store_open(store, &so, &fs.store, &err) < 0) {
		fprintf(stderr, "ckptfs: %s: %s\n", store, err.msg);
		goto out_args;
	}
	fs.uid = getuid();
	fs.gid = getgid();
	fs.ro = o.ro;
	fs.timeout = o.timeout;
	clock_gettime(CLOCK_REALTIME, &now);
	fs.mount_ns = (int64_t)now.tv_sec * 1000000000 + now.tv_nsec;

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
	if (cmd.singlethread) {
		rc = fuse_session_loop(fs.se);
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
	ckptfs_watch_stop(&fs);
out_unmount:
	fuse_session_unmount(fs.se);
out_signals:
	fuse_remove_signal_handlers(fs.se);
out_session:
	fuse_session_destroy(fs.se);
out_store:
	ckpt_store_close(fs.store);
out_args:
	free(cmd.mountpoint);
	free(o.store);
	fuse_opt_free_args(&args);
	return rc;
}
