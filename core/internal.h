/*
 * internal.h - types shared by the files of libckpt, never by fs/.
 *
 * An archive is parsed once into a flat array of nodes; a node never
 * changes after the index is built, so readers need no lock to use it.
 */
#ifndef CKPT_INTERNAL_H
#define CKPT_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/stat.h>

#include "ckpt.h"

#define ZIP_METHOD_STORE   0
#define ZIP_METHOD_DEFLATE 8

/* Where one entry's bytes live in the archive file; everything the reader
 * needs, taken from the central directory and checked against the local
 * header when the entry is first opened. */
struct zentry {
	uint64_t lho;	 /* offset of the local header */
	uint64_t extent; /* bytes from lho to the next header or the CD */
	uint64_t csize;	 /* compressed bytes */
	uint64_t size;	 /* uncompressed bytes, as declared */
	uint32_t crc;
	uint16_t method;
	uint16_t flags;
};

/* One record of the central directory, while an archive is indexed. */
struct zcd {
	struct zentry z;
	const char *name; /* into the CD buffer, not NUL-terminated */
	uint16_t name_len;
	uint16_t made_by;
	uint32_t ext_attr;
	int64_t mtime_ns; /* from the UT extra field or DOS time */
};

/* Reads and checks the central directory of the file open on fd.  On
 * success *buf (free it) holds the raw CD that the names point into, and
 * *ents (free it) n records.  Refusals: -EINVAL with rule "not-zip",
 * "overlap" or "limit". */
int zip_read_cd(int fd, uint64_t file_size, const struct ckpt_limits *lim,
		uint8_t **buf, struct zcd **ents, size_t *n,
		struct ckpt_err *err);

/* Checks the local header of e against the central record (name, method,
 * sizes, CRC) and that the data fits before the next header.  Returns the
 * offset of the data, or a negative errno with rule "header-mismatch". */
int64_t zip_data_offset(int fd, const struct zentry *e, const char *name,
			size_t name_len, struct ckpt_err *err);

enum node_type {
	NODE_FILE = CKPT_FILE,
	NODE_DIR = CKPT_DIR,
	NODE_SYMLINK = CKPT_SYMLINK
};

struct node {
	struct zentry z; /* files: where the content lives */
	int64_t mtime_ns;
	uint32_t name_off; /* into archive->names */
	uint32_t parent;
	union {
		struct {
			uint32_t first;	 /* node number of the first child */
			uint32_t nchild; /* children are contiguous, by name */
			uint32_t nsubdir;
		} dir;
		struct {
			uint32_t off; /* target text in archive->names */
			uint32_t len;
		} link;
		struct {
			uint32_t hash;	 /* index into archive->hashes, or ~0 */
			uint32_t chunks; /* index into archive->chunks, or ~0 */
		} file;
	} u;
	uint16_t name_len;
	uint16_t mode;
	uint8_t type;
};

#define NO_HASH	     UINT32_MAX
#define NO_CHUNKS    UINT32_MAX
#define HIDDEN_RULES 16

/* Saves deflate a file in chunks of CKPT_CHUNK bytes, each compressed on
 * its own and ended by a full flush, so a reader can start inflating at
 * any chunk.  A manifest may give other sizes within these bounds. */
#define CKPT_CHUNK     (256u * 1024)
#define CHUNK_SIZE_MIN 4096u
#define CHUNK_SIZE_MAX (4u << 20)

/* Chunk k of a chunked entry holds bytes [k*size, (k+1)*size); its
 * compressed data starts off[k] bytes into the entry's data, and hash[k]
 * is the XXH3-64 of its bytes. */
struct chunktab {
	uint32_t size, n;
	uint64_t *off; /* n offsets, then n hashes, in one allocation */
	uint64_t *hash;
};

struct ckpt_archive {
	atomic_int refs;
	int fd;
	uint64_t file_size;
	struct stat st; /* of fd at open: the store compares it to notice a
			 * replaced file */

	struct node *nodes; /* immutable after open */
	uint32_t nnodes;
	char *names;		 /* component names and link targets */
	uint8_t (*hashes)[16];	 /* xxh3-128 of files, by node.u.file.hash */
	struct chunktab *chunks; /* by node.u.file.chunks */
	uint32_t nchunks;
	uint64_t serial;	/* unique in this process, never reused: names
				 * the archive in caches that outlive it */
	atomic_uchar *verified; /* per node: 0 unknown, 1 good, 2 bad */

	int64_t created_ns;
	char *origin, *parent;
	char *scan_rules; /* version of the secret rules it was saved with */

	/* manifest.json is served without the records of entries that are
	 * not shown; when that changes it, it is rebuilt at each open. */
	uint32_t manifest_node;
	bool manifest_filtered;
	uint64_t manifest_size; /* as served */
	uint64_t max_manifest;
	/* The filtered text, built by the first reader and shared until the
	 * last one closes. */
	pthread_mutex_t manifest_lock;
	char *manifest_text;
	unsigned manifest_users;

	struct ckpt_hidden hidden[HIDDEN_RULES];
	size_t nhidden;

	/* Set by the store; fixed once the archive is published. */
	uint32_t id, key;
	char *name;
	/* Lookups of its nodeids the kernel has not forgotten: while any
	 * remain, a replaced or removed checkpoint's instance stays
	 * reachable by id (retired, under the store's lock). */
	_Atomic uint64_t pins;
	bool retired;

	/* A defect found after indexing (a lying local header) makes the
	 * whole archive refused from then on. */
	atomic_int poisoned;
	struct ckpt_err poison; /* written once, before poisoned is set */
};

enum {
	VERIFY_UNKNOWN,
	VERIFY_GOOD,
	VERIFY_BAD
};

/* Full archive path of a node ("workspace/a/b"), NUL-terminated.  Returns
 * its length, or -ENAMETOOLONG. */
int node_path(const struct ckpt_archive *a, uint32_t node, char *buf,
	      size_t size);

/* The manifest text as served: the stored one without the records of
 * entries that are not shown, shared by its readers; each successful get
 * is matched by one put. */
int archive_manifest_get(struct ckpt_archive *a, const char **out, size_t *len,
			 struct ckpt_err *err);
void archive_manifest_put(struct ckpt_archive *a);

/* Marks the archive refused for a defect found while reading. */
void archive_poison(struct ckpt_archive *a, const struct ckpt_err *why);
/* How many archives this process has found broken, ever. */
uint64_t archive_poisonings(void);

/* Reads a whole entry into a new buffer of at most max bytes, checking its
 * CRC (used for the manifest and symlink targets).  *out is malloc'd. */
int zip_read_entry(int fd, const struct zentry *e, const char *name,
		   size_t name_len, uint64_t max, char **out, size_t *len,
		   struct ckpt_err *err);

/* ---- faults.c-style seam: tests make saves fail on purpose ------------ */

/* Zero in production.  A test sets write_fail_at = N to make the Nth
 * write of an archive fail with write_errno (a short write first, when
 * short is set), or fsync_errno to make syncing fail.  Not thread-safe:
 * tests that use it run one save at a time. */
struct ckpt_faults {
	int write_fail_at, write_errno, fsync_errno;
	bool short_write;
	int writes; /* counted while write_fail_at is set */
};
extern struct ckpt_faults ckpt_faults;

/* ---- zipw.c: a streaming ZIP writer ---------------------------------- */

struct zipw;
int zipw_open(int fd, struct zipw **out);
void zipw_free(struct zipw *w);
/* Starts an entry; mode includes the S_IF type bits.  size_hint is the
 * expected size (entries that may pass 4 GiB need room for zip64). */
int zipw_begin(struct zipw *w, const char *name, size_t nlen, uint32_t mode,
	       int64_t mtime_ns, uint16_t method, uint64_t size_hint);
/* Appends the entry's stored bytes (already compressed, if deflated). */
int zipw_data(struct zipw *w, const void *p, size_t n);
int zipw_end(struct zipw *w, uint32_t crc, uint64_t csize, uint64_t usize);
/* Writes the central directory and end records, and flushes. */
int zipw_finish(struct zipw *w);
uint64_t zipw_offset(const struct zipw *w);
/* The first error (a negative errno), or 0. */
int zipw_error(const struct zipw *w);

/* ---- save.c: what a save takes, shared with the live view ------------- */

enum {
	PICK_TAKE,
	PICK_DESCEND,
	PICK_SKIP,
	PICK_REPORT
};

/* Decides one name of the source, exactly as a save does: the selection,
 * then the policy (symlinks judged through the real tree).  path is the
 * archive path ("workspace/a"), src the file on disk, st its lstat.
 * Returns PICK_TAKE, PICK_DESCEND (a directory only walked through),
 * PICK_SKIP, or PICK_REPORT (left out, and worth telling: an escaping
 * link, a special file).  Symlink targets are read into target. */
int source_pick(const struct ckpt_save_opts *o, enum ckpt_tier tier,
		const char *path, const char *src, const struct stat *st,
		char *target, size_t tsize, enum ckpt_type *type);
/* A session transcript (session/...jsonl) is stored up to its last
 * complete line: the length up to and including the last newline. */
bool is_transcript(const char *path);
uint64_t whole_lines(int fd, uint64_t size);

/* ---- manifest.c ------------------------------------------------------- */

struct mentry {
	const char *path; /* into the manifest's string pool */
	uint32_t len;
	uint8_t type; /* enum ckpt_type */
	uint8_t has_hash, has_mode, has_size, has_mtime;
	uint16_t mode;
	uint64_t size;
	int64_t mtime_ns;
	uint8_t hash[16];
	const char *target; /* symlinks */
	uint32_t target_len;
	/* a chunked file: nchunks records of (offset, xxh3-64), each two
	 * native uint64_t, unaligned (copy them out) */
	const char *chunks;
	uint32_t nchunks, chunk_size;
};

struct manifest {
	int version;
	int64_t created_ns; /* 0 when absent */
	char *name, *origin, *parent, *scan_rules;
	bool has_entries;
	struct mentry *entries; /* sorted by path */
	size_t nentries;
	char *pool;
};

/* Parses manifest text.  Returns 0, or -EINVAL with rule "manifest" and a
 * reason.  Unknown keys are ignored; an unknown version is refused. */
int manifest_parse(const char *text, size_t len, struct manifest *m,
		   struct ckpt_err *err);
void manifest_free(struct manifest *m);
/* Copies manifest text to out (or, with out NULL, only measures it),
 * leaving out the entry records for which keep() is false, and keeping
 * every other byte as it was.  Returns the length, or -EINVAL when the text
 * does not parse (it was parsed once already, so that is a bug). */
ssize_t manifest_filter(const char *text, size_t len,
			bool (*keep)(void *ctx, const char *path, size_t len),
			void *ctx, char *out);
/* Finds the record for path, or NULL. */
const struct mentry *manifest_find(const struct manifest *m, const char *path,
				   size_t len);
/* Parses "2026-11-22T09:00:00.123456789Z" into ns since the epoch. */
int parse_rfc3339(const char *s, size_t len, int64_t *out);

/* ---- json.c: a bounded pull parser for untrusted JSON ----------------- */

enum json_tok {
	JSON_ERROR = -1,
	JSON_END,
	JSON_OBJ_BEGIN,
	JSON_OBJ_END,
	JSON_ARR_BEGIN,
	JSON_ARR_END,
	JSON_KEY,
	JSON_STRING,
	JSON_NUMBER,
	JSON_TRUE,
	JSON_FALSE,
	JSON_NULL,
};

#define JSON_MAX_DEPTH 64

struct json {
	const char *s, *end;
	int depth;
	/* what the container at each level expects next */
	unsigned char stack[JSON_MAX_DEPTH];
	/* the last JSON_KEY or JSON_STRING, unescaped (valid UTF-8, may hold
	 * NUL bytes), and the raw text of the last JSON_NUMBER */
	char *str;
	size_t str_len, str_cap;
	const char *num;
	size_t num_len;
	const char *why; /* set on JSON_ERROR */
	const char *tok; /* where the last token began: its text runs from
			  * here to s, which lets a caller copy it verbatim */
};

void json_init(struct json *j, const char *text, size_t len);
void json_fini(struct json *j);
enum json_tok json_next(struct json *j);
/* Skips the value whose first token was tok (containers entirely). */
int json_skip(struct json *j, enum json_tok tok);
/* The last number as an exact integer; -ERANGE or -EINVAL otherwise. */
int json_int64(const struct json *j, int64_t *out);

/* ---- scan helpers shared by policy and the reader --------------------- */

/* Byte length of the valid UTF-8 sequence at s (n bytes available), or 0;
 * *cp receives the code point. */
size_t utf8_decode(const unsigned char *s, size_t n, uint32_t *cp);
/* The value of one hexadecimal digit, either case, or -1. */
int hex_digit(int c);

#endif
