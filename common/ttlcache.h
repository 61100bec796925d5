/* ttlcache: a few texts (JSON documents) kept in memory for a short time, by key. */
#ifndef PTCE_TTLCACHE_H
#define PTCE_TTLCACHE_H

#include <pthread.h>
#include <time.h>

/*
 * For reads that cost a query and may be a little old (a dashboard's aggregates, a ranking's
 * balance): each text is served again until its time to live has passed. Replicas keep their
 * own, so a reader may see a figure up to one time to live old, never older. In the last quarter
 * of an entry's life, one reader (the first) is told it is gone, so that it computes the next
 * text while the others are still served this one: under load a key is computed again by one
 * reader ahead of time, not by every reader at once when it expires. At most
 * TTLCACHE_SLOTS keys (of less than TTLCACHE_KEY_MAX bytes); a full cache gives up the entry
 * closest to expiry. Thread-safe. Define one with `= TTLCACHE_INIT`; ttlcache_clear frees it.
 */
#define TTLCACHE_SLOTS 64
#define TTLCACHE_KEY_MAX 256

struct ttlcache_entry {
    char key[TTLCACHE_KEY_MAX];
    char *text; /* NULL: a free slot */
    struct timespec expires;
    struct timespec renew; /* from then on, one reader is sent to compute the next text */
    int renewing;          /* that reader was sent */
};

struct ttlcache {
    pthread_mutex_t lock;
    struct ttlcache_entry e[TTLCACHE_SLOTS];
};

#define TTLCACHE_INIT                                                                              \
    {                                                                                              \
        .lock = PTHREAD_MUTEX_INITIALIZER                                                          \
    }

/*
 * A copy (to free) of key's text while it is fresh, or NULL; NULL also to the first reader in the
 * last quarter of its life (who is to compute and put the next one).
 */
char *ttlcache_get(struct ttlcache *c, const char *key);

/* Keeps a copy of text under key for ttl_ms; a key too long or ttl_ms <= 0 keeps nothing. */
void ttlcache_put(struct ttlcache *c, const char *key, const char *text, long ttl_ms);

/* Forgets every entry. */
void ttlcache_clear(struct ttlcache *c);

#endif
