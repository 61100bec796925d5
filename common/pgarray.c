/* pgarray: builds PostgreSQL array literals, quoting every text element. */
#include "pgarray.h"

#include <stdlib.h>
#include <string.h>

void pgarray_init(struct pgarray *a)
{
    buf_init(&a->b, 0);
    buf_append(&a->b, "{", 1);
    a->n = 0;
    a->closed = 0;
}

/* Writes the separator before a new element. */
static void pgarray_next(struct pgarray *a)
{
    if (a->closed)
        abort(); /* added after pgarray_text: a bug in the caller */
    if (a->n++ > 0)
        buf_append(&a->b, ",", 1);
}

void pgarray_add_text(struct pgarray *a, const char *s)
{
    if (!s) {
        pgarray_add_null(a);
        return;
    }
    pgarray_next(a);
    buf_append(&a->b, "\"", 1);
    /* the runs between the characters to escape in one copy each: documents are kilobytes */
    for (const char *p = s; *p;) {
        size_t run = strcspn(p, "\"\\");
        buf_append(&a->b, p, run);
        p += run;
        if (*p) {
            buf_append(&a->b, "\\", 1);
            buf_append(&a->b, p++, 1);
        }
    }
    buf_append(&a->b, "\"", 1);
}

void pgarray_add_null(struct pgarray *a)
{
    pgarray_next(a);
    buf_append(&a->b, "NULL", 4);
}

void pgarray_add_int(struct pgarray *a, long long v)
{
    pgarray_next(a);
    buf_printf(&a->b, "%lld", v);
}

const char *pgarray_text(struct pgarray *a)
{
    if (!a->closed) {
        buf_append(&a->b, "}", 1);
        a->closed = 1;
    }
    return a->b.data;
}

void pgarray_free(struct pgarray *a)
{
    buf_free(&a->b);
    a->n = 0;
    a->closed = 0;
}
