/*
 * zipgen.c - a deliberately naive ZIP writer for tests (see zipgen.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include "zipgen.h"

static void le(FILE *f, uint64_t v, int n)
{
	for (int i = 0; i < n; i++)
		fputc((int)(v >> (8 * i)) & 0xff, f);
}

static size_t deflate_raw(const void *in, size_t len, unsigned char **out)
{
	z_stream zs = {0};
	size_t cap = compressBound((uLong)len) + 64;

	*out = malloc(cap);
	deflateInit2(&zs, 6, Z_DEFLATED, -MAX_WBITS, 8, Z_DEFAULT_STRATEGY);
	zs.next_in = (Bytef *)in;
	zs.avail_in = (uInt)len;
	zs.next_out = *out;
	zs.avail_out = (uInt)cap;
	deflate(&zs, Z_FINISH);
	deflateEnd(&zs);
	return zs.total_out;
}

int zg_write(const char *path, const char *manifest,
	     const struct zg_entry *ents, size_t n)
{
	FILE *f = fopen(path, "wb");
	size_t total = n + (manifest ? 1 : 0);
	struct zg_entry *all = calloc(total + 1, sizeof(*all));
	uint64_t *lho = calloc(total + 1, sizeof(*lho));
	uint64_t *csz = calloc(total + 1, sizeof(*csz));
	uint64_t cd;

	if (!f || !all || !lho || !csz)
		return -1;
	if (manifest) {
		all[0].name = "manifest.json";
		all[0].data = manifest;
		all[0].len = strlen(manifest);
		all[0].deflate = 1;
		all[0].mode = S_IFREG | 0644;
	}
	memcpy(all + (manifest ? 1 : 0), ents, n * sizeof(*ents));
	for (size_t i = 0; i < total; i++) {
		struct zg_entry *e = &all[i];
		const char *ln = e->local_name ? e->local_name : e->name;
		unsigned char *comp = NULL;
		const void *data = e->data;
		size_t clen = e->len;
		uint32_t crc = (uint32_t)crc32(0, e->data, (uInt)e->len);

		if (e->deflate) {
			clen = deflate_raw(e->data, e->len, &comp);
			data = comp;
		}
		lho[i] = (uint64_t)ftell(f);
		csz[i] = clen;
		le(f, 0x04034b50, 4);
		le(f, 20, 2);
		le(f, 0x0800, 2);
		le(f, e->deflate ? 8 : 0, 2);
		le(f, 0, 4);
		le(f, crc ^ e->crc_xor, 4);
		le(f, clen, 4);
		le(f, (uint64_t)((int64_t)e->len + e->size_delta), 4);
		le(f, strlen(ln), 2);
		le(f, 0, 2);
		fwrite(ln, 1, strlen(ln), f);
		fwrite(data, 1, clen, f);
		free(comp);
	}
	cd = (uint64_t)ftell(f);
	for (size_t i = 0; i < total; i++) {
		struct zg_entry *e = &all[i];
		uint32_t crc = (uint32_t)crc32(0, e->data, (uInt)e->len);

		le(f, 0x02014b50, 4);
		le(f, 3 << 8 | 20, 2);
		le(f, 20, 2);
		le(f, 0x0800, 2);
		le(f, e->deflate ? 8 : 0, 2);
		le(f, 0, 4);
		le(f, crc ^ e->crc_xor, 4);
		le(f, csz[i], 4);
		le(f, (uint64_t)((int64_t)e->len + e->size_delta), 4);
		le(f, strlen(e->name), 2);
		le(f, 0, 2 + 2 + 2 + 2);
		le(f, (uint64_t)(e->mode ? e->mode : S_IFREG | 0644) << 16, 4);
		le(f, e->lho_of > 0 ? lho[e->lho_of - 1] : lho[i], 4);
		fwrite(e->name, 1, strlen(e->name), f);
	}
	uint64_t end = (uint64_t)ftell(f);
	le(f, 0x06054b50, 4);
	le(f, 0, 4);
	le(f, total, 2);
	le(f, total, 2);
	le(f, end - cd, 4);
	le(f, cd, 4);
	le(f, 0, 2);
	free(all);
	free(lho);
	free(csz);
	return fclose(f) == 0 ? 0 : -1;
}
