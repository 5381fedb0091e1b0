/*
 * fuzz.h - what every fuzz target shares: a fatal invariant check, and a
 * private scratch directory made once per process.
 */
#ifndef CKPT_FUZZ_H
#define CKPT_FUZZ_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(c)                                                               \
	do {                                                                   \
		if (!(c)) {                                                    \
			fprintf(stderr, "%s:%d: invariant failed: %s\n",       \
				__FILE__, __LINE__, #c);                       \
			abort();                                               \
		}                                                              \
	} while (0)

/* Makes a fresh directory under $TMPDIR (or /tmp) into dir; aborts when it
 * cannot, since a target without scratch space tests nothing. */
static inline void fuzz_tempdir(char *dir, size_t size)
{
	const char *tmp = getenv("TMPDIR");

	snprintf(dir, size, "%s/ckptfs-fuzz.XXXXXX",
		 tmp && strlen(tmp) < 32 ? tmp : "/tmp");
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		abort();
	}
}

#endif
