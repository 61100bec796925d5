/* utf8: checks of UTF-8 text (RFC 3629: no overlong forms, no surrogates, nothing past U+10FFFF).
 */
#ifndef PTCE_UTF8_H
#define PTCE_UTF8_H

#include <stddef.h>

/* Length of the valid UTF-8 sequence that starts at p (1 to 4), or 0 if none starts there. */
size_t utf8_sequence(const unsigned char *p);
/* 1 if the n bytes at s are valid UTF-8 with no NUL byte, else 0. */
int utf8_valid(const char *s, size_t n);
/*
 * Characters (code points) of the n bytes of valid UTF-8 at s: the bytes that are not
 * continuation bytes. What JSON Schema's minLength and maxLength count.
 */
size_t utf8_chars(const char *s, size_t n);

#endif
