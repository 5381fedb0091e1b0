/*
 * select.h - what a save takes from each tier, decided before the policy
 * is asked.
 *
 * world: everything, less the exclude_from patterns.  workspace: everything
 * but reconstructable artifacts (.venv, node_modules, ...) and the
 * exclude_from patterns.  session: only the files a backend's allowlist
 * names, less its "exclude" lines and the exclude_from patterns; with no
 * backend, nothing.  The pattern syntax is described in select.c and
 * ckptfs(1).
 */
#ifndef CKPT_SELECT_H
#define CKPT_SELECT_H

#include <stdbool.h>

#include "ckpt.h"

/* Opaque; read-only after ckpt_select_open(), so one may be shared by any
 * number of threads without a lock. */
struct ckpt_select;

/* ckpt_select_open(), ckpt_select_free() and ckpt_select_backends() are
 * public: see ckpt.h. */

enum ckpt_pick {
	CKPT_PICK_TAKE,	   /* record it; for a directory, walk into it */
	CKPT_PICK_SKIP,	   /* leave it out; for a directory, its content too */
	CKPT_PICK_DESCEND, /* directories: do not record, but walk into it */
};

/*
 * Decides one name met while walking tier `tier`.  rel is its path from
 * the tier root ("src/a.py": never empty, no leading or trailing '/').
 * Directories get TAKE, SKIP or DESCEND (session tier only: a pattern may
 * match below it); files and symlinks get TAKE or SKIP.  has_file(ctx,
 * name), which may be NULL, answers whether the directory rel holds a
 * regular file `name`; it is called only for workspace directories named
 * "venv" (with NULL, such a directory is kept).
 *
 * The answer for a path also accounts for its ancestors (a file below an
 * excluded or artifact directory is SKIP), so a caller that looks a single
 * path up gets the same answer as a walk, except that an ancestor named
 * "venv" cannot be asked about pyvenv.cfg: judge parents first.  Never
 * allocates; safe from any thread.
 */
enum ckpt_pick ckpt_select_pick(const struct ckpt_select *s,
				enum ckpt_tier tier, const char *rel,
				bool is_dir,
				bool (*has_file)(void *ctx, const char *name),
				void *ctx);

#endif
