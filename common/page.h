/* page: keyset pagination — the `limit` parameter and opaque, tamper-proof cursors. */
#ifndef PTCE_PAGE_H
#define PTCE_PAGE_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "status.h"

/*
 * A cursor is a keyset position (the sort key of the last row of a page: a few integers and
 * short strings, e.g. a sequence number and an id) sealed with AES-256-GCM: clients see an
 * opaque URL-safe token (base64url, no padding) and learn nothing of the values inside — not
 * the raw global sequence numbers — and cannot forge or alter one. The list's name (`kind`,
 * e.g. "dossiers") is authenticated with it, so a cursor of one list is refused by another.
 *
 * The key is derived (SHA-256) from PTCE_CURSOR_KEY, which every replica must share so that a
 * cursor given by one is read by another. Unset or empty, a development default is used and a
 * warning is logged: production sets it. Cursors do not survive a change of the key.
 */

#define PAGE_POS_MAX 4      /* values in a position */
#define PAGE_TEXT_MAX 64    /* bytes of a text value */
#define PAGE_CURSOR_MAX 512 /* longest token accepted, terminator included */
#define PAGE_KEY_MIN_LEN 16 /* shortest PTCE_CURSOR_KEY accepted */

enum page_type { PAGE_INT = 1, PAGE_TEXT = 2 };

struct page_value {
    enum page_type type;
    int64_t i;                    /* PAGE_INT */
    char text[PAGE_TEXT_MAX + 1]; /* PAGE_TEXT, terminated */
};

/* A keyset position; caller-owned, zero it (or page_pos_init) before adding values. */
struct page_pos {
    int n;
    struct page_value v[PAGE_POS_MAX];
};

void page_pos_init(struct page_pos *pos);
/* Appends a value; abort() past PAGE_POS_MAX values (a bug: positions are fixed by code). */
void page_pos_add_int(struct page_pos *pos, int64_t v);
/* Appends a copy of s; abort() when s is longer than PAGE_TEXT_MAX or the position is full. */
void page_pos_add_text(struct page_pos *pos, const char *s);

/*
 * Reads the `limit` query parameter (NULL when absent: *out = def). Accepted: decimal digits
 * only, from 1 to max. Otherwise STATUS_INVALID, *out untouched, and a message for the field
 * error written into why ("must be an integer from 1 to 200").
 */
enum status page_limit_parse(const char *text, long def, long max, long *out, char *why,
                             size_t whylen);

/*
 * Sets the cursor key from a secret (copied into the derived key). NULL or "" selects the
 * development default (and logs a warning); a secret shorter than PAGE_KEY_MIN_LEN bytes is
 * STATUS_INVALID and keeps the previous key. Call it at start-up, before serving requests;
 * without a call, the first encode or decode uses getenv("PTCE_CURSOR_KEY").
 */
enum status page_cursor_key_set(const char *secret);

/* Seals pos for the list `kind`; returns a new token that the caller frees. */
char *page_cursor_encode(const char *kind, const struct page_pos *pos);

/*
 * Opens a token given by page_cursor_encode for the same kind into *out. STATUS_INVALID for
 * anything else: not base64url, too short or long, altered, sealed with another key or for
 * another kind. *out is then untouched.
 */
enum status page_cursor_decode(const char *kind, const char *token, struct page_pos *out);

/*
 * The `next_cursor` member of a page: a new JSON string holding the sealed position of the
 * page's last row, or JSON null when last is NULL (no page follows). New reference.
 */
json_t *page_next_cursor(const char *kind, const struct page_pos *last);

#endif
