/* uuid: time-ordered (version 7) UUIDs, their textual validation, random bytes and hex. */
#ifndef PTCE_UUID_H
#define PTCE_UUID_H

#include <stddef.h>

#define UUID_STR_LEN 37 /* 36 characters and the terminator */

/*
 * Writes a new UUID in lower-case canonical form into out (UUID_STR_LEN bytes): version 7, the
 * current Unix time in milliseconds then 74 random bits, so that ids sort by creation time to
 * the millisecond (within one, in no order).
 */
void uuid_new(char out[UUID_STR_LEN]);

/* 1 when s is a canonical 8-4-4-4-12 hexadecimal UUID (any case), else 0. */
int uuid_is_valid(const char *s);

/* Fills buf with n cryptographically random bytes; aborts if the kernel cannot. */
void random_bytes(void *buf, size_t n);

/* Writes the 2n lower-case hexadecimal digits of in[0..n) into out, then a terminator. */
void hex_encode(const unsigned char *in, size_t n, char *out);

#endif
