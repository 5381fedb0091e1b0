/*
 * mkckpt - writes a checkpoint from a run directory with core's save path
 * (ckpt_save: the same code as a mkdir in snapshots/, policy and secret
 * scan included, every name taken), so tests and the demo can build
 * stores without a mount.
 *
 *   mkckpt [-n NAME] [-p PARENT] [-o ORIGIN] [-c CREATED_NS] RUNDIR OUT.ckpt
 *
 * RUNDIR/world, RUNDIR/workspace and RUNDIR/session are the tiers; each is
 * optional.  NAME defaults to OUT's base name without ".ckpt".
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ckpt.h"

static void usage(void)
{
	fprintf(stderr, "usage: mkckpt [-n NAME] [-p PARENT] [-o ORIGIN] "
			"[-c CREATED_NS] RUNDIR OUT.ckpt\n");
	exit(2);
}

int main(int argc, char **argv)
{
	static const char *const tiers[] = {"world", "workspace", "session"};
	struct ckpt_save_opts o = {.origin = "user"};
	char dirs[CKPT_TIER_COUNT][4096], name[256], dir[4096], base[4096];
	struct ckpt_err err = {0};
	const char *out;
	int c;

	while ((c = getopt(argc, argv, "n:p:o:c:")) != -1) {
		switch (c) {
		case 'n':
			o.name = optarg;
			break;
		case 'p':
			o.parent_name = optarg;
			break;
		case 'o':
			o.origin = optarg;
			break;
		case 'c':
			o.created_ns = strtoll(optarg, NULL, 10);
			break;
		default:
			usage();
		}
	}
	if (argc - optind != 2)
		usage();
	out = argv[optind + 1];
	if (!o.name) {
		const char *b = strrchr(out, '/');
		size_t n;
		b = b ? b + 1 : out;
		n = strlen(b);
		if (n > 5 && strcmp(b + n - 5, ".ckpt") == 0)
			n -= 5;
		snprintf(name, sizeof(name), "%.*s", (int)n, b);
		o.name = name;
	}
	for (int t = 0; t < CKPT_TIER_COUNT; t++) {
		struct stat st;
		snprintf(dirs[t], sizeof(dirs[t]), "%s/%s", argv[optind],
			 tiers[t]);
		if (stat(dirs[t], &st) == 0 && S_ISDIR(st.st_mode))
			o.tier_dir[t] = dirs[t];
	}
	snprintf(dir, sizeof(dir), "%s", out);
	snprintf(base, sizeof(base), "%s", out);
	int dfd = open(dirname(dir), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	struct ckpt_archive *parent = NULL;
	if (dfd >= 0 && o.parent_name) {
		/* The parent lives beside OUT; unchanged files are copied
		 * from it, as a save on a mount would. */
		struct ckpt_limits lim;
		char pf[300];
		ckpt_limits_default(&lim);
		snprintf(pf, sizeof(pf), "%s.ckpt", o.parent_name);
		if (ckpt_archive_open(dfd, pf, &lim, 0, &parent, &err) == 0)
			o.parent = parent;
	}
	if (dfd < 0 || ckpt_save(dfd, basename(base), &o, NULL, &err) < 0) {
		fprintf(stderr, "mkckpt: %s: %s%s%s\n", out,
			dfd < 0 ? strerror(errno) : err.msg,
			err.path[0] ? ": " : "", err.path);
		return 1;
	}
	ckpt_archive_unref(parent);
	return 0;
}
