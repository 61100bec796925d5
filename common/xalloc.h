/* xalloc: allocation that aborts on out-of-memory, so callers need no NULL checks. */
#ifndef PTCE_XALLOC_H
#define PTCE_XALLOC_H

#include <stddef.h>

/* Like malloc/calloc/realloc/strdup, but abort() with a message instead of returning NULL. */
void *xmalloc(size_t n);
void *xcalloc(size_t count, size_t n);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);

/* A growable byte buffer with a hard cap. Caller-owned; buf_free releases the storage. */
struct buf {
    char *data;
    size_t len;
    size_t cap;
    size_t limit; /* 0: no limit */
};

void buf_init(struct buf *b, size_t limit);
/* Appends n bytes; returns -1 (and appends nothing) if the limit would be passed. */
int buf_append(struct buf *b, const void *p, size_t n);
/* Appends a formatted string; returns -1 past the limit. */
int buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void buf_free(struct buf *b);

#endif
