/* precond: resource versions as strong ETags, and the If-Match / If-None-Match decisions. */
#ifndef PTCE_PRECOND_H
#define PTCE_PRECOND_H

#include "status.h"

/*
 * A resource's version is a non-negative integer that grows by one at each change; its ETag is
 * the strong tag "v<version>" (quotes included: "\"v3\""). Header values are parsed by RFC 9110
 * §8.8.3 and §13.1: `*`, or a comma-separated list of entity tags, each optionally weak (W/).
 * A header that is not of that form is STATUS_INVALID. Nothing here allocates.
 */

/* '"v9223372036854775807"' and its terminator fit in this. */
#define PRECOND_ETAG_LEN 24

/* Writes the ETag of version into out ("\"v3\""). */
void precond_etag(long long version, char out[PRECOND_ETAG_LEN]);

/*
 * The version an If-Match header names when it is exactly one strong ETag of ours ("v3", no
 * spaces, no list), else -1: for a writer that decides the precondition later, against the
 * locked row (a batch), and takes every other header the ordinary way.
 */
long long precond_etag_version(const char *header);

/*
 * The decision on a change (PUT, PATCH, POST of a transition) to a resource whose version is
 * `current`, given its If-Match header (NULL when absent; borrowed). Returns STATUS_OK when
 * the change may go on: the header is `*`, or one of its tags equals the current ETag by the
 * strong comparison. A weak tag never matches (a change needs the exact version). Otherwise:
 * STATUS_PRECONDITION_REQUIRED (428) when the header is absent and `required`, STATUS_OK when
 * it is absent and not required, STATUS_PRECONDITION_FAILED (412) when no tag matches — which
 * an empty (or blank) header also gives: an empty list, as for If-None-Match — and
 * STATUS_INVALID for a malformed header (a list of commas only included).
 */
enum status precond_if_match(const char *header, long long current, int required);

/*
 * The detail of the problem that answers a refusal st of precond_if_match, the same in every
 * service ("If-Match is not a list of entity tags"); a static string, never NULL.
 */
const char *precond_if_match_strerror(enum status st);

/*
 * The decision on a read (GET, HEAD) of a resource whose version is `current`, given its
 * If-None-Match header (NULL when absent; borrowed). Returns STATUS_OK and sets *not_modified
 * to 1 when the answer is 304 Not Modified — the header is `*`, or one of its tags equals the
 * current ETag by the weak comparison (W/"v3" matches "v3") — and to 0 when the resource must
 * be sent, which an empty (or blank) header also gives: an empty list. STATUS_INVALID for a
 * malformed header (*not_modified is then 0).
 */
enum status precond_if_none_match(const char *header, long long current, int *not_modified);

#endif
