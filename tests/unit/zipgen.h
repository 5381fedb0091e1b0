/*
 * zipgen.h - builds ZIP archives byte by byte for unit tests, including
 * the malformed ones no library would write.
 */
#ifndef ZIPGEN_H
#define ZIPGEN_H

#include <stddef.h>
#include <stdint.h>

struct zg_entry {
	const char *name;
	const void *data;
	size_t len;
	int deflate;   /* 1: deflate the data */
	unsigned mode; /* st_mode with type bits, e.g. S_IFREG | 0644 */
	/* corruptions */
	int64_t size_delta; /* added to the declared uncompressed size */
	uint32_t crc_xor;   /* xored into the declared CRC */
	int lho_of;	    /* > 0: central header points at entry lho_of - 1's
			     * local header (index among all, manifest first) */
	const char *local_name; /* local header name, if different */
};

/* Writes entries (and a manifest.json with text manifest first, if
 * manifest is not NULL) to path.  Returns 0 or -1. */
int zg_write(const char *path, const char *manifest, const struct zg_entry *e,
	     size_t n);

#endif
