/* idem (funding): Idempotency-Key on funding's creating POSTs, over common/idempotency.c. */
#include "idem.h"

#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "idempotency.h"
#include "xalloc.h"

int funding_idem_read(struct http_ctx *ctx, struct funding_idem *idem, int required, int code,
                      int *rc)
{
    const char *key = http_header(ctx, "Idempotency-Key");
    struct buf identity;

    memset(idem, 0, sizeof *idem);
    idem->key_id = ctx->principal.key_id;
    idem->code = code;
    if (!key && required) {
        *rc = http_reply_problem(ctx, STATUS_PRECONDITION_REQUIRED,
                                 "an Idempotency-Key header is required");
        return -1;
    }
    if (!key)
        return 0;
    if (!idempotency_key_valid(key)) {
        *rc = http_reply_problem(ctx, STATUS_INVALID, "Idempotency-Key must be 1 to 200 bytes");
        return -1;
    }
    idem->key = key;
    /* The raw bytes are the request's identity: the same key must come with the same body. */
    buf_init(&identity, 0);
    if (ctx->nparams > 0)
        buf_printf(&identity, "%s\n", ctx->path);
    buf_append(&identity, ctx->req->binary_body, ctx->req->binary_body_length);
    buf_append(&identity, "", 1);
    auth_token_hash(identity.data, idem->hash);
    buf_free(&identity);
    return 0;
}

enum status funding_idem_claim(struct db_conn *conn, struct funding_idem *idem, char **body)
{
    enum idempotency_outcome outcome = IDEM_FRESH;
    int status = 0;

    *body = NULL;
    idem->replayed = 0;
    if (!idem->key)
        return STATUS_OK;
    enum status st =
        idempotency_claim(conn, idem->key_id, idem->key, idem->hash, &outcome, &status, body);
    if (st == STATUS_CONFLICT)
        idem->replayed = FUNDING_IDEM_IN_FLIGHT;
    if (st == STATUS_UNPROCESSABLE)
        idem->replayed = FUNDING_IDEM_OTHER_REQUEST;
    if (st == STATUS_OK && outcome == IDEM_REPLAY)
        idem->replayed = 1;
    return st;
}

enum status funding_idem_store(struct db_conn *conn, const struct funding_idem *idem,
                               const char *body)
{
    if (!idem->key)
        return STATUS_OK;
    return idempotency_store(conn, idem->key_id, idem->key, idem->code, body);
}

int funding_idem_reply(struct http_ctx *ctx, const struct funding_idem *idem, enum status st,
                       int *rc)
{
    if (!idem->key)
        return 0;
    if (st == STATUS_UNPROCESSABLE && idem->replayed == FUNDING_IDEM_OTHER_REQUEST) {
        *rc = http_reply_problem(ctx, st, "this Idempotency-Key was used with another request");
        return 1;
    }
    if (st == STATUS_CONFLICT && idem->replayed == FUNDING_IDEM_IN_FLIGHT) {
        *rc = http_reply_problem(ctx, st,
                                 "a request with this Idempotency-Key is still being answered: "
                                 "retry it in a moment");
        return 1;
    }
    if (st == STATUS_OK && idem->replayed > 0)
        http_set_header(ctx, "Idempotent-Replayed", "true");
    return 0;
}
