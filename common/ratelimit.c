/* ratelimit: integer token buckets in a fixed open-addressing table, one lock per stripe. */
#include "ratelimit.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "xalloc.h"

/* Tokens are counted in millionths, so that refill needs no floating point. */
#define RL_UNIT 1000000LL
#define RL_NAME 64
#define RL_PROBE 8 /* slots looked at for a name; the oldest of them is reused */
#define RL_STRIPES 64

struct rl_slot {
    char name[RL_NAME];
    int64_t tokens;  /* millionths of a token */
    int64_t last_us; /* when tokens was last brought up to date; 0: free slot */
};

struct ratelimit {
    int64_t per_second;
    int64_t burst;
    unsigned mask;
    struct rl_slot *slots;
    pthread_mutex_t stripes[RL_STRIPES];
};

static int64_t rl_now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000 + 1; /* never 0 */
}

static unsigned rl_hash(const char *s)
{
    uint32_t h = 2166136261u; /* FNV-1a */

    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

struct ratelimit *ratelimit_new(long per_second, long burst, unsigned slots)
{
    struct ratelimit *rl = xcalloc(1, sizeof *rl);
    unsigned n = RL_STRIPES;

    while (n < slots && n < (1u << 24))
        n <<= 1;
    rl->per_second = per_second;
    rl->burst = burst;
    rl->mask = n - 1;
    rl->slots = xcalloc(n, sizeof *rl->slots);
    for (int i = 0; i < RL_STRIPES; i++)
        pthread_mutex_init(&rl->stripes[i], NULL);
    return rl;
}

void ratelimit_free(struct ratelimit *rl)
{
    if (!rl)
        return;
    for (int i = 0; i < RL_STRIPES; i++)
        pthread_mutex_destroy(&rl->stripes[i]);
    free(rl->slots);
    free(rl);
}

/*
 * The slot of name among the RL_PROBE slots from its hash, or the least recently used of them
 * (reset to a full bucket). The probe window never crosses a stripe: the table size is a
 * multiple of RL_STRIPES and each stripe owns a contiguous run of size / RL_STRIPES slots.
 */
static struct rl_slot *rl_find(struct ratelimit *rl, const char *name, unsigned h, int64_t now)
{
    unsigned per_stripe = (rl->mask + 1) / RL_STRIPES;
    unsigned base = (h % RL_STRIPES) * per_stripe;
    unsigned start = (h / RL_STRIPES) % per_stripe;
    unsigned probes = per_stripe < RL_PROBE ? per_stripe : RL_PROBE;
    struct rl_slot *oldest = &rl->slots[base + start];

    for (unsigned i = 0; i < probes; i++) {
        struct rl_slot *s = &rl->slots[base + (start + i) % per_stripe];
        if (s->last_us && strncmp(s->name, name, RL_NAME - 1) == 0)
            return s;
        if (s->last_us < oldest->last_us)
            oldest = s;
    }
    snprintf(oldest->name, sizeof oldest->name, "%s", name);
    oldest->tokens = rl->burst * RL_UNIT;
    oldest->last_us = now;
    return oldest;
}

static enum status rl_run(struct ratelimit *rl, const char *name, int take, long *retry_after_s)
{
    if (retry_after_s)
        *retry_after_s = 0;
    if (!rl || rl->per_second <= 0 || rl->burst <= 0)
        return STATUS_OK;
    unsigned h = rl_hash(name ? name : "");
    int64_t now = rl_now_us();
    pthread_mutex_t *lock = &rl->stripes[h % RL_STRIPES];

    pthread_mutex_lock(lock);
    struct rl_slot *s = rl_find(rl, name ? name : "", h, now);
    /* per_second tokens a second is per_second millionths a microsecond. */
    int64_t cap = rl->burst * RL_UNIT;
    int64_t gained = (now - s->last_us) * rl->per_second;
    s->tokens = gained > cap - s->tokens ? cap : s->tokens + gained;
    s->last_us = now;
    enum status st = STATUS_OK;
    if (s->tokens >= RL_UNIT) {
        if (take)
            s->tokens -= RL_UNIT;
    } else {
        st = STATUS_RATE_LIMITED;
        if (retry_after_s) {
            int64_t wait_us = (RL_UNIT - s->tokens + rl->per_second - 1) / rl->per_second;
            *retry_after_s = (long)((wait_us + 999999) / 1000000);
            if (*retry_after_s < 1)
                *retry_after_s = 1;
        }
    }
    pthread_mutex_unlock(lock);
    return st;
}

enum status ratelimit_take(struct ratelimit *rl, const char *name, long *retry_after_s)
{
    return rl_run(rl, name, 1, retry_after_s);
}

enum status ratelimit_check(struct ratelimit *rl, const char *name, long *retry_after_s)
{
    return rl_run(rl, name, 0, retry_after_s);
}
