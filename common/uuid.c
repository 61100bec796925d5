/* uuid: version-7 UUIDs (RFC 9562: time-ordered), their random bits from the kernel's source. */
#include "uuid.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

void random_bytes(void *buf, size_t n)
{
    unsigned char *p = buf;

    while (n > 0) {
        ssize_t got = getrandom(p, n, 0);
        if (got < 0) {
            if (errno == EINTR)
                continue;
            abort();
        }
        p += got;
        n -= (size_t)got;
    }
}

/*
 * Per-thread reserve of kernel randomness: one getrandom(2) serves 256 UUIDs instead of one,
 * which matters when every request and every event needs a fresh id.
 */
static _Thread_local unsigned char uuid_pool[4096];
static _Thread_local size_t uuid_pool_left;

void uuid_new(char out[UUID_STR_LEN])
{
    unsigned char b[16];

    if (uuid_pool_left < sizeof b) {
        random_bytes(uuid_pool, sizeof uuid_pool);
        uuid_pool_left = sizeof uuid_pool;
    }
    memcpy(b, uuid_pool + sizeof uuid_pool - uuid_pool_left, sizeof b);
    memset(uuid_pool + sizeof uuid_pool - uuid_pool_left, 0, sizeof b); /* used once only */
    uuid_pool_left -= sizeof b;
    /*
     * Version 7: the first 48 bits are the Unix time in milliseconds, big-endian, then 74
     * random bits around the version and variant. Ids made one after another sort together, so
     * a primary key's inserts land on its rightmost leaf instead of a random one: after each
     * checkpoint a random key's first write to every leaf logged a whole 8 kB page.
     */
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    unsigned long long ms =
        (unsigned long long)now.tv_sec * 1000ULL + (unsigned long long)now.tv_nsec / 1000000ULL;
    for (int i = 5; i >= 0; i--, ms >>= 8)
        b[i] = (unsigned char)(ms & 0xff);
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x70); /* version 7 */
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80); /* RFC 9562 variant */
    /* 8-4-4-4-12: the groups start at bytes 0, 4, 6, 8 and 10 */
    hex_encode(b, 4, out);
    out[8] = '-';
    hex_encode(b + 4, 2, out + 9);
    out[13] = '-';
    hex_encode(b + 6, 2, out + 14);
    out[18] = '-';
    hex_encode(b + 8, 2, out + 19);
    out[23] = '-';
    hex_encode(b + 10, 6, out + 24);
}

void hex_encode(const unsigned char *in, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";

    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * n] = '\0';
}

int uuid_is_valid(const char *s)
{
    if (!s)
        return 0;
    for (int i = 0; i < 36; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i] != '-')
                return 0;
        } else if (!isxdigit((unsigned char)s[i])) {
            return 0;
        }
    }
    return s[36] == '\0';
}
