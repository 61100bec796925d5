/* ratelimit: token buckets by name (an API key, a client address), in bounded memory. */
#ifndef PTCE_RATELIMIT_H
#define PTCE_RATELIMIT_H

#include "status.h"

struct ratelimit;

/*
 * A set of buckets that each hold up to `burst` tokens and gain `per_second` tokens a second.
 * Memory is bounded: at most `slots` names are tracked (rounded up to a power of two); when the
 * table is full the least recently used name of a small neighbourhood is forgotten, so a
 * forgotten name starts again with a full bucket. per_second or burst <= 0 disables the limit
 * (every take succeeds). Free with ratelimit_free (NULL is a no-op).
 */
struct ratelimit *ratelimit_new(long per_second, long burst, unsigned slots);
void ratelimit_free(struct ratelimit *rl);

/*
 * Takes one token from name's bucket. STATUS_OK when one was there; STATUS_RATE_LIMITED when
 * the bucket is empty, with *retry_after_s (may be NULL) set to the whole seconds, at least 1,
 * after which a token will be there. Thread-safe; name is copied (at most 63 bytes are used).
 */
enum status ratelimit_take(struct ratelimit *rl, const char *name, long *retry_after_s);

/* Like ratelimit_take, but only looks: no token is taken. */
enum status ratelimit_check(struct ratelimit *rl, const char *name, long *retry_after_s);

#endif
