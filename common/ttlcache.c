/* ttlcache: a few texts kept in memory for a short time, by key. */
#include "ttlcache.h"

#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "xalloc.h"

char *ttlcache_get(struct ttlcache *c, const char *key)
{
    struct timespec now;
    char *text = NULL;

    clock_gettime(CLOCK_MONOTONIC, &now);
    pthread_mutex_lock(&c->lock);
    for (size_t i = 0; i < TTLCACHE_SLOTS; i++) {
        struct ttlcache_entry *e = &c->e[i];
        if (!e->text || strcmp(e->key, key) != 0 || !clock_ts_before(&now, &e->expires))
            continue;
        if (!e->renewing && !clock_ts_before(&now, &e->renew))
            e->renewing = 1; /* this reader computes the next text */
        else
            text = xstrdup(e->text);
        break;
    }
    pthread_mutex_unlock(&c->lock);
    return text;
}

void ttlcache_put(struct ttlcache *c, const char *key, const char *text, long ttl_ms)
{
    size_t slot = 0;

    if (ttl_ms <= 0 || strlen(key) >= TTLCACHE_KEY_MAX)
        return;
    char *copy = xstrdup(text);
    pthread_mutex_lock(&c->lock);
    for (size_t i = 0; i < TTLCACHE_SLOTS; i++) {
        const struct ttlcache_entry *e = &c->e[i];
        if (!e->text || !strcmp(e->key, key)) {
            slot = i;
            break;
        }
        if (clock_ts_before(&e->expires, &c->e[slot].expires))
            slot = i;
    }
    struct ttlcache_entry *e = &c->e[slot];
    free(e->text);
    e->text = copy;
    memcpy(e->key, key, strlen(key) + 1);
    clock_deadline(CLOCK_MONOTONIC, ttl_ms, &e->expires);
    clock_deadline(CLOCK_MONOTONIC, ttl_ms - ttl_ms / 4, &e->renew);
    e->renewing = 0;
    pthread_mutex_unlock(&c->lock);
}

void ttlcache_clear(struct ttlcache *c)
{
    pthread_mutex_lock(&c->lock);
    for (size_t i = 0; i < TTLCACHE_SLOTS; i++) {
        free(c->e[i].text);
        c->e[i].text = NULL;
    }
    pthread_mutex_unlock(&c->lock);
}
