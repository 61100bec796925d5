/* http_idem: the Idempotency-Key header of a creating POST, over common/idempotency.c. */
#include "http_idem.h"

#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "idempotency.h"
#include "precond.h"
#include "xalloc.h"

/* The request's identity, as http_idem.h defines it; hashes stored before depend on every byte. */
static void http_idem_identity(const struct http_ctx *ctx, unsigned flags, char hash[65])
{
    const struct _u_request *req = ctx->req;
    struct buf b;

    buf_init(&b, 0);
    if (flags & HTTP_IDEM_ID_METHOD_PATH)
        buf_printf(&b, "%s %s\n", req->http_verb, req->url_path);
    else if (ctx->nparams > 0)
        buf_printf(&b, "%s\n", ctx->path);
    buf_append(&b, req->binary_body, req->binary_body_length);
    buf_append(&b, "", 1);
    auth_token_hash(b.data, hash);
    buf_free(&b);
}

int http_idem_read(struct http_ctx *ctx, struct http_idem *idem, unsigned flags, int code, int *rc)
{
    memset(idem, 0, sizeof *idem);
    idem->key = http_header(ctx, "Idempotency-Key");
    idem->key_id = ctx->principal.key_id;
    idem->code = code;
    idem->status = code;
    idem->refused = STATUS_OK;
    if (!idem->key && (flags & HTTP_IDEM_REQUIRED)) {
        *rc = http_reply_problem(ctx, STATUS_PRECONDITION_REQUIRED,
                                 "an Idempotency-Key header is required");
        return 0;
    }
    if (!idem->key)
        return 1;
    if (!idempotency_key_valid(idem->key)) {
        *rc = http_reply_problem(ctx, STATUS_INVALID, "Idempotency-Key must be 1 to 200 bytes");
        return 0;
    }
    http_idem_identity(ctx, flags, idem->hash);
    return 1;
}

void http_idem_clear(struct http_idem *idem)
{
    if (!idem)
        return;
    free(idem->body);
    idem->body = NULL;
}

enum status http_idem_claim(struct db_conn *conn, struct http_idem *idem)
{
    enum idempotency_outcome outcome = IDEM_FRESH;
    int status = 0;

    if (!idem || !idem->key)
        return STATUS_OK;
    /* A use case run again (a serialization failure) claims again from scratch. */
    free(idem->body);
    idem->body = NULL;
    idem->replayed = 0;
    idem->status = idem->code;
    enum status st = idempotency_claim(conn, idem->key_id, idem->key, idem->hash, &outcome, &status,
                                       &idem->body);
    idem->refused = st == STATUS_CONFLICT || st == STATUS_UNPROCESSABLE ? st : STATUS_OK;
    if (st == STATUS_OK && outcome == IDEM_REPLAY) {
        idem->replayed = 1;
        idem->status = status;
    }
    return st;
}

char *http_idem_body_take(struct http_idem *idem)
{
    char *body = idem->body;

    idem->body = NULL;
    return body;
}

enum status http_idem_store(struct db_conn *conn, const struct http_idem *idem, const char *text)
{
    if (!idem || !idem->key)
        return STATUS_OK;
    return idempotency_store(conn, idem->key_id, idem->key, idem->code, text);
}

enum status http_idem_store_json(struct db_conn *conn, struct http_idem *idem, const json_t *doc)
{
    if (!idem || !idem->key)
        return STATUS_OK;
    free(idem->body);
    idem->body = json_dumps(doc, JSON_COMPACT);
    idem->status = idem->code;
    if (!idem->body)
        return STATUS_INTERNAL;
    return idempotency_store(conn, idem->key_id, idem->key, idem->code, idem->body);
}

int http_idem_reply_refusal(struct http_ctx *ctx, const struct http_idem *idem)
{
    if (idem->refused == STATUS_UNPROCESSABLE)
        return http_reply_problem(ctx, idem->refused,
                                  "this Idempotency-Key was used with another request");
    return http_reply_problem(ctx, STATUS_CONFLICT,
                              "a request with this Idempotency-Key is still being answered: "
                              "retry it in a moment");
}

int http_idem_refused(struct http_ctx *ctx, const struct http_idem *idem, enum status st, int *rc)
{
    if (!idem->key)
        return 0;
    if (idem->refused != STATUS_OK) {
        *rc = http_idem_reply_refusal(ctx, idem);
        return 1;
    }
    if (st == STATUS_OK && idem->replayed)
        http_set_header(ctx, "Idempotent-Replayed", "true");
    return 0;
}

int http_idem_reply_json(struct http_ctx *ctx, const struct http_idem *idem, int etag)
{
    json_t *doc = json_loads(idem->body ? idem->body : "", 0, NULL);

    if (!doc)
        return http_reply_problem(ctx, STATUS_INTERNAL, "the stored answer could not be read");
    if (etag && json_is_integer(json_object_get(doc, "version"))) {
        char tag[PRECOND_ETAG_LEN];
        precond_etag(json_integer_value(json_object_get(doc, "version")), tag);
        http_set_header(ctx, "ETag", tag);
    }
    if (idem->replayed)
        http_set_header(ctx, "Idempotent-Replayed", "true");
    return http_reply_json(ctx, idem->status, doc);
}

enum status http_idem_run_on(struct db_conn *conn, struct http_idem *idem, http_idem_make_fn make,
                             void *arg, char **text)
{
    enum status st = db_begin(conn);

    *text = NULL;
    if (st == STATUS_OK)
        st = http_idem_claim(conn, idem);
    if (st == STATUS_OK && idem->replayed) {
        *text = http_idem_body_take(idem);
    } else if (st == STATUS_OK) {
        st = make(conn, arg, text);
        if (st == STATUS_OK)
            st = http_idem_store(conn, idem, *text);
    }
    st = db_end(conn, st);
    if (st != STATUS_OK) {
        free(*text);
        *text = NULL;
    }
    return st;
}

enum status http_idem_run(struct db_pool *db, struct http_idem *idem, http_idem_make_fn make,
                          void *arg, char **text)
{
    struct db_conn *conn;
    enum status st = db_acquire(db, &conn);

    *text = NULL;
    if (st != STATUS_OK)
        return st;
    st = http_idem_run_on(conn, idem, make, arg, text);
    db_release(db, conn);
    return st;
}

/* The key ids, keys and hashes of idems[0..n), borrowed, or -1 when one has no key. */
static int http_idem_columns(struct http_idem *const *idems, size_t n, const char **key_ids,
                             const char **keys, const char **hashes)
{
    for (size_t i = 0; i < n; i++) {
        if (!idems[i]->key)
            return -1;
        key_ids[i] = idems[i]->key_id;
        keys[i] = idems[i]->key;
        hashes[i] = idems[i]->hash;
    }
    return 0;
}

enum status http_idem_claim_many(struct db_conn *conn, struct http_idem *const *idems,
                                 const char *const *texts, size_t n, int *fresh)
{
    const char **cols = xcalloc(3 * (n ? n : 1), sizeof *cols);
    enum status st = STATUS_INVALID;

    if (http_idem_columns(idems, n, cols, cols + n, cols + 2 * n) == 0)
        st = n ? idempotency_claim_many(conn, cols, cols + n, cols + 2 * n, idems[0]->code, texts,
                                        n, fresh)
               : STATUS_OK;
    free(cols);
    return st;
}
