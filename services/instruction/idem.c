/* idem (instruction): the Idempotency-Key of a creating POST, claimed in its own transaction. */
#include "idem.h"

#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "idempotency.h"
#include "precond.h"
#include "xalloc.h"

int instruction_idem_init(struct http_ctx *ctx, struct instruction_idem *idem, int *rc)
{
    const struct _u_request *req = ctx->req;

    memset(idem, 0, sizeof *idem);
    idem->key = http_header(ctx, "Idempotency-Key");
    idem->key_id = ctx->principal.key_id;
    if (!idem->key)
        return 1;
    if (!idempotency_key_valid(idem->key)) {
        *rc = http_reply_problem(ctx, STATUS_INVALID, "Idempotency-Key must be 1 to 200 bytes");
        return 0;
    }
    /*
     * The request's identity is its method, its path and its raw body: the same key sent with
     * the same body to another dossier is another request (422), not a replay. The body was
     * parsed as JSON before the handler ran, so it holds no NUL byte.
     */
    struct buf b;
    buf_init(&b, 0);
    buf_printf(&b, "%s %s\n", req->http_verb, req->url_path);
    buf_append(&b, req->binary_body, req->binary_body_length);
    buf_append(&b, "", 1);
    auth_token_hash(b.data, idem->hash);
    buf_free(&b);
    return 1;
}

void instruction_idem_clear(struct instruction_idem *idem)
{
    free(idem->body);
    idem->body = NULL;
}

enum status instruction_idem_claim(struct db_conn *conn, struct instruction_idem *idem)
{
    enum idempotency_outcome outcome = IDEM_FRESH;

    if (!idem || !idem->key)
        return STATUS_OK;
    free(idem->body);
    idem->body = NULL;
    idem->replayed = 0;
    enum status st = idempotency_claim(conn, idem->key_id, idem->key, idem->hash, &outcome,
                                       &idem->status, &idem->body);
    idem->refused = st == STATUS_CONFLICT || st == STATUS_UNPROCESSABLE;
    if (st == STATUS_OK && outcome == IDEM_REPLAY)
        idem->replayed = 1;
    return st;
}

enum status instruction_idem_store(struct db_conn *conn, struct instruction_idem *idem, int code,
                                   const json_t *doc)
{
    if (!idem || !idem->key)
        return STATUS_OK;
    free(idem->body);
    idem->body = json_dumps(doc, JSON_COMPACT);
    idem->status = code;
    if (!idem->body)
        return STATUS_INTERNAL;
    return idempotency_store(conn, idem->key_id, idem->key, code, idem->body);
}

int instruction_idem_refusal(struct http_ctx *ctx, enum status st)
{
    if (st == STATUS_UNPROCESSABLE)
        return http_reply_problem(ctx, st, "this Idempotency-Key was used with another request");
    return http_reply_problem(ctx, st,
                              "a request with this Idempotency-Key is still being answered: "
                              "retry it in a moment");
}

int instruction_idem_reply(struct http_ctx *ctx, const struct instruction_idem *idem, int etag)
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
