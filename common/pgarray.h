/* pgarray: PostgreSQL array literals ("{1,2}", "{\"a\",NULL}") for one $n parameter. */
#ifndef PTCE_PGARRAY_H
#define PTCE_PGARRAY_H

#include <stddef.h>

#include "xalloc.h"

/*
 * Passing a list as one text parameter cast in SQL ($1::text[], $1::bigint[]) keeps the
 * statement text fixed, so a list never turns into SQL. Text elements are always quoted, with
 * '"' and '\' escaped, so commas, braces, spaces and the word NULL stay data; a NULL element is
 * written bare. Caller-owned: pgarray_init, the adds, pgarray_text, then pgarray_free.
 */
struct pgarray {
    struct buf b; /* "{" and the elements so far; the closing "}" is added by pgarray_text */
    size_t n;     /* elements so far */
    int closed;
};

/* Starts an empty array. */
void pgarray_init(struct pgarray *a);

/* Appends a text element (copied); s == NULL appends a NULL element. */
void pgarray_add_text(struct pgarray *a, const char *s);

/* Appends a NULL element. */
void pgarray_add_null(struct pgarray *a);

/* Appends an integer element. */
void pgarray_add_int(struct pgarray *a, long long v);

/*
 * Closes the literal and returns it ("{}" when empty), borrowed until pgarray_free. Nothing may
 * be added afterwards (that aborts: it would be a bug).
 */
const char *pgarray_text(struct pgarray *a);

/* Releases the storage; the struct may be initialised again. */
void pgarray_free(struct pgarray *a);

#endif
