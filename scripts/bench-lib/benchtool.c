/*
 * benchtool - the measuring half of scripts/bench: small, dependency-free
 * readers whose own timing (CLOCK_MONOTONIC) excludes process start-up.
 * Built at run time into a temporary directory by scripts/bench-lib/bench.py.
 *
 *   benchtool readlist ROOT LIST                 read every file LIST names
 *   benchtool conclist N M ROOT LIST             N processes, process k reads
 *                                                the files i with i % M == k
 *   benchtool seq FILE                           read FILE with 1 MiB reads
 *   benchtool concseq N M FILE                   N processes, process k reads
 *                                                the k-th of M equal regions
 *   benchtool rand FILE COUNT SEED [MAXSEC]      COUNT 4 KiB preads at random
 *                                                4 KiB-aligned offsets, or as
 *                                                many as MAXSEC seconds allow
 *   benchtool storestat DIR REL                  list DIR, then stat
 *                                                DIR/ENTRY/REL for each entry
 *
 * LIST holds one path per line, relative to ROOT.  Every command prints one
 * line of key=value pairs on standard output and exits non-zero when any
 * read failed.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define BUF (1u << 20)

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static char *buf;

/* Reads fd to its end; returns the bytes read, or -1. */
static long long drain(int fd, off_t off, long long len)
{
	long long total = 0;

	for (;;) {
		size_t want = BUF;
		ssize_t n;

		if (len >= 0 && len - total < (long long)want)
			want = (size_t)(len - total);
		if (want == 0)
			break;
		n = off >= 0 ? pread(fd, buf, want, off + total)
			     : read(fd, buf, want);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		if (n == 0)
			break;
		total += n;
	}
	return total;
}

static char **load_list(const char *path, size_t *count)
{
	FILE *f = fopen(path, "re");
	char *line = NULL, **v = NULL;
	size_t cap = 0, n = 0, lcap = 0;
	ssize_t len;

	if (!f) {
		perror(path);
		exit(2);
	}
	while ((len = getline(&line, &lcap, f)) > 0) {
		if (line[len - 1] == '\n')
			line[--len] = 0;
		if (len == 0)
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 1024;
			v = realloc(v, cap * sizeof(*v));
			if (!v)
				exit(2);
		}
		v[n++] = strdup(line);
	}
	free(line);
	fclose(f);
	*count = n;
	return v;
}

/* Reads files k, k+m, k+2m, ... of the list; returns bytes, -1 on error. */
static long long read_slice(int root, char **list, size_t n, size_t k, size_t m)
{
	long long total = 0;

	for (size_t i = k; i < n; i += m) {
		int fd = openat(root, list[i], O_RDONLY | O_CLOEXEC);
		long long got;

		if (fd < 0) {
			fprintf(stderr, "benchtool: %s: %s\n", list[i],
				strerror(errno));
			return -1;
		}
		got = drain(fd, -1, -1);
		close(fd);
		if (got < 0) {
			fprintf(stderr, "benchtool: read %s: %s\n", list[i],
				strerror(errno));
			return -1;
		}
		total += got;
	}
	return total;
}

/* Runs fn(k) in n children; returns the wall time, or -1 if any failed. */
static double in_children(int n, long long (*fn)(int k, void *), void *arg,
			  long long *bytes)
{
	int pipes[64][2];
	pid_t pids[64];
	double t0, t1;
	int bad = 0;

	*bytes = 0;
	for (int k = 0; k < n; k++) {
		if (pipe(pipes[k]) != 0)
			exit(2);
	}
	t0 = now();
	for (int k = 0; k < n; k++) {
		pids[k] = fork();
		if (pids[k] < 0)
			exit(2);
		if (pids[k] == 0) {
			long long got = fn(k, arg);
			if (write(pipes[k][1], &got, sizeof(got)) < 0)
				_exit(1);
			_exit(got < 0);
		}
	}
	for (int k = 0; k < n; k++) {
		int st;
		long long got = -1;

		if (waitpid(pids[k], &st, 0) < 0 || !WIFEXITED(st) ||
		    WEXITSTATUS(st) != 0)
			bad = 1;
		if (read(pipes[k][0], &got, sizeof(got)) != sizeof(got))
			bad = 1;
		else
			*bytes += got;
	}
	t1 = now();
	return bad ? -1 : t1 - t0;
}

struct list_arg {
	int root, m;
	char **list;
	size_t n;
};

static long long list_child(int k, void *p)
{
	struct list_arg *a = p;
	return read_slice(a->root, a->list, a->n, (size_t)k, (size_t)a->m);
}

struct seq_arg {
	const char *file;
	int m;
};

static long long seq_child(int k, void *p)
{
	struct seq_arg *a = p;
	int fd = open(a->file, O_RDONLY | O_CLOEXEC);
	struct stat st;
	long long region, got;

	if (fd < 0 || fstat(fd, &st) != 0)
		return -1;
	region = (long long)st.st_size / a->m;
	got = drain(fd, (off_t)(region * k), region);
	close(fd);
	return got;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static uint64_t rnd(uint64_t *s)
{
	/* splitmix64: the same offsets on every machine for one seed. */
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

int main(int argc, char **argv)
{
	buf = malloc(BUF);
	if (!buf)
		return 2;
	if (argc == 4 && strcmp(argv[1], "readlist") == 0) {
		size_t n;
		char **list = load_list(argv[3], &n);
		int root = open(argv[2], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		double t0 = now(), t1;
		long long b;

		if (root < 0)
			return perror(argv[2]), 2;
		b = read_slice(root, list, n, 0, 1);
		t1 = now();
		if (b < 0)
			return 1;
		printf("files=%zu bytes=%lld seconds=%.6f\n", n, b, t1 - t0);
		return 0;
	}
	if (argc == 6 && strcmp(argv[1], "conclist") == 0) {
		struct list_arg a = {.m = atoi(argv[3])};
		int n = atoi(argv[2]);
		long long b;
		double sec;

		a.list = load_list(argv[5], &a.n);
		a.root = open(argv[4], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (a.root < 0 || n < 1 || n > 64 || a.m < n)
			return 2;
		sec = in_children(n, list_child, &a, &b);
		if (sec < 0)
			return 1;
		printf("readers=%d bytes=%lld seconds=%.6f\n", n, b, sec);
		return 0;
	}
	if (argc == 3 && strcmp(argv[1], "seq") == 0) {
		double t0 = now(), t1;
		int fd = open(argv[2], O_RDONLY | O_CLOEXEC);
		long long b;

		if (fd < 0)
			return perror(argv[2]), 1;
		b = drain(fd, -1, -1);
		t1 = now();
		close(fd);
		if (b < 0)
			return perror(argv[2]), 1;
		printf("bytes=%lld seconds=%.6f\n", b, t1 - t0);
		return 0;
	}
	if (argc == 5 && strcmp(argv[1], "concseq") == 0) {
		struct seq_arg a = {.file = argv[4], .m = atoi(argv[3])};
		int n = atoi(argv[2]);
		long long b;
		double sec;

		if (n < 1 || n > 64 || a.m < n)
			return 2;
		sec = in_children(n, seq_child, &a, &b);
		if (sec < 0)
			return 1;
		printf("readers=%d bytes=%lld seconds=%.6f\n", n, b, sec);
		return 0;
	}
	if ((argc == 5 || argc == 6) && strcmp(argv[1], "rand") == 0) {
		int count = atoi(argv[3]), fd, done = 0;
		double maxsec = argc == 6 ? atof(argv[5]) : 0;
		uint64_t seed = strtoull(argv[4], NULL, 10);
		double t0, t1, ttfb, *lat, total = 0;
		struct stat st;
		uint64_t blocks;

		if (count < 1)
			return 2;
		lat = calloc((size_t)count, sizeof(*lat));
		t0 = now();
		fd = open(argv[2], O_RDONLY | O_CLOEXEC);
		if (fd < 0 || fstat(fd, &st) != 0)
			return perror(argv[2]), 1;
		blocks = (uint64_t)st.st_size / 4096;
		if (blocks == 0)
			return 2;
		for (int i = 0; i < count; i++) {
			off_t off = (off_t)(rnd(&seed) % blocks) * 4096;
			double a = now();
			ssize_t n = pread(fd, buf, 4096, off);

			t1 = now();
			if (n != 4096)
				return fprintf(stderr, "benchtool: pread: %s\n",
					       n < 0 ? strerror(errno)
						     : "short read"),
				       1;
			if (i == 0)
				ttfb = t1 - t0; /* open + first pread */
			lat[i] = t1 - a;
			total += lat[i];
			done++;
			if (maxsec > 0 && t1 - t0 > maxsec)
				break;
		}
		close(fd);
		qsort(lat, (size_t)done, sizeof(*lat), cmp_double);
		printf("count=%d ttfb=%.6f median=%.6f p99=%.6f max=%.6f "
		       "seconds=%.6f\n",
		       done, ttfb, lat[done / 2],
		       lat[(size_t)((done - 1) * 0.99)], lat[done - 1], total);
		return 0;
	}
	if (argc == 4 && strcmp(argv[1], "storestat") == 0) {
		double t0 = now(), t1;
		DIR *d = opendir(argv[2]);
		struct dirent *e;
		char path[8192];
		int n = 0, ok = 0;

		if (!d)
			return perror(argv[2]), 1;
		while ((e = readdir(d))) {
			struct stat st;

			if (e->d_name[0] == '.')
				continue;
			n++;
			snprintf(path, sizeof(path), "%s/%s/%s", argv[2],
				 e->d_name, argv[3]);
			if (stat(path, &st) == 0)
				ok++;
		}
		closedir(d);
		t1 = now();
		printf("entries=%d stat_ok=%d seconds=%.6f\n", n, ok, t1 - t0);
		return ok == n && n > 0 ? 0 : 1;
	}
	fprintf(stderr, "usage: see the comment at the top of benchtool.c\n");
	return 2;
}
