/*
 * scan.h - the secret scanner: refuses a save that would write a credential.
 *
 * A save reads each file once, in chunks, and feeds every chunk to one
 * struct ckpt_scan.  A finding names a rule, a line and a fingerprint, never
 * the secret.  A reviewed false positive is allowed by its fingerprint.
 * The allow file and the rule table are declared in ckpt.h; the rest will
 * join them there under the same names.
 */
#ifndef CKPT_SCAN_H
#define CKPT_SCAN_H

#include <stddef.h>

/* Declared first, at file scope, so that the prototypes in ckpt.h name
 * this type and not one scoped to their parameter list. */
struct ckpt_scan_allow; /* opaque: reviewed fingerprints, read-only */

#include "ckpt.h"

/* Recorded in manifests as scan_rules; bumped whenever a rule changes what
 * it matches or how its fingerprint is computed. */
#define CKPT_SCAN_RULES_VERSION "1"

struct ckpt_scan; /* opaque: the state of scanning one file */

struct ckpt_finding {
	char rule[32];	      /* stable rule id, e.g. "aws-access-key-id" */
	unsigned line;	      /* 1-based line of the match start */
	char fingerprint[17]; /* 16 lowercase hex digits, see below */
};

/* A rule sees at most this many bytes from where its match starts: a
 * longer token (a JWT with a large payload) is matched and fingerprinted
 * as its first CKPT_SCAN_MAX_MATCH bytes, whatever the read sizes. */
#define CKPT_SCAN_MAX_MATCH 2032

/*
 * The fingerprint of a match is XXH3_64bits (seed 0) over the rule id, one
 * NUL byte and the matched secret (for private keys: the base64 characters
 * of the key body, at most the first 1024, so that the same key has the
 * same fingerprint in a PEM file and in a JSON string).
 */

/*
 * Declared in ckpt.h: ckpt_scan_allow_load() reads an allow file, one
 * fingerprint (16 hex digits) per line, optionally followed by a '#'
 * comment, blank lines and '#' lines ignored; it returns 0 with a set the
 * caller frees with ckpt_scan_allow_free(), -EINVAL with rule "allowlist"
 * and err->line naming a malformed line, or the errno of opening or
 * reading the file.  A loaded set is read-only, so scanners in several
 * threads may share it.  ckpt_scan_rules() gives the rule table.
 */

/* Creates a scanner ready for a first file.  allow may be NULL; it is
 * borrowed and must outlive the scanner.  Returns 0 or -ENOMEM.  One
 * scanner serves one thread at a time. */
int ckpt_scan_new(const struct ckpt_scan_allow *allow, struct ckpt_scan **out);

/* Starts a new file: forgets (and wipes) everything fed so far. */
void ckpt_scan_reset(struct ckpt_scan *s);

/* Feeds the next len bytes of the file.  Returns 0, or 1 with *f filled at
 * the first finding whose fingerprint is not allowed.  A match that
 * straddles calls is found once; a match is decided only when the 2 KiB
 * after its start are known, so it may be reported by a later call or by
 * ckpt_scan_finish().  Findings, lines and fingerprints do not depend on
 * how the file is cut into calls.  After a finding the rest of the file is
 * not scanned: feed and finish return 0 until ckpt_scan_reset(). */
int ckpt_scan_feed(struct ckpt_scan *s, const void *buf, size_t len,
		   struct ckpt_finding *f);

/* Ends the file: decides the matches still waiting for more bytes.  Returns
 * 0 or 1 with *f filled, as ckpt_scan_feed(); then feed and finish return
 * 0 until ckpt_scan_reset(). */
int ckpt_scan_finish(struct ckpt_scan *s, struct ckpt_finding *f);

/* Wipes the scanner's buffers and frees it; NULL is a no-op. */
void ckpt_scan_free(struct ckpt_scan *s);

#endif
