/* utf8: checks of UTF-8 text. */
#include "utf8.h"

size_t utf8_sequence(const unsigned char *p)
{
    unsigned char c = p[0];

    if (c < 0x80)
        return c ? 1 : 0;
    /* the length from the lead byte, then continuation bytes (a NUL stops the scan) */
    size_t n = c >= 0xf0 && c <= 0xf4  ? 4
               : c >= 0xe0 && c < 0xf0 ? 3
               : c >= 0xc2 && c < 0xe0 ? 2
                                       : 0;
    size_t k = 1;
    while (n && k < n && (p[k] & 0xc0) == 0x80)
        k++;
    if (!n || k != n)
        return 0;
    if (n == 3 && ((c == 0xe0 && p[1] < 0xa0) || (c == 0xed && p[1] >= 0xa0)))
        return 0; /* overlong, or a surrogate */
    if (n == 4 && ((c == 0xf0 && p[1] < 0x90) || (c == 0xf4 && p[1] >= 0x90)))
        return 0; /* overlong, or past U+10FFFF */
    return n;
}

int utf8_valid(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s, *end = p + n;

    while (p < end) {
        size_t k = utf8_sequence(p);
        if (!k || k > (size_t)(end - p))
            return 0;
        p += k;
    }
    return 1;
}

size_t utf8_chars(const char *s, size_t n)
{
    size_t chars = 0;

    for (size_t i = 0; i < n; i++) {
        if (((unsigned char)s[i] & 0xc0) != 0x80)
            chars++;
    }
    return chars;
}
