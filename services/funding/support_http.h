/* support_http: what the bouquet's and the charter's handlers share. */
#ifndef PTCE_FUNDING_SUPPORT_HTTP_H
#define PTCE_FUNDING_SUPPORT_HTTP_H

#include "http.h"
#include "support_store.h"

/* The service's database pool, from a handler's context. */
struct db_pool *support_db(const struct http_ctx *ctx);

/*
 * Reads `limit` (1 to 200, default 50) and `cursor` (a common/page.h cursor of the list `kind`)
 * into *limit and *after (0 without a cursor); appends field errors to errors.
 */
void support_list_args(const struct http_ctx *ctx, const char *kind, long *limit, long long *after,
                       json_t *errors);

/* Answers 200 {"items": [...], "next_cursor": ...} from a page. Takes page->items. */
int support_reply_page(struct http_ctx *ctx, const char *kind, struct support_page *page);

/* Answers a JSON text as is. Takes text. */
int support_reply_text(struct http_ctx *ctx, int code, char *text);

/* The charter's handlers (charter.c). */
int charter_signature_create(struct http_ctx *ctx);
int charter_signatory_list(struct http_ctx *ctx);

#endif
