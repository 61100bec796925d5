/* http_idem: the Idempotency-Key header of a creating POST, over common/idempotency.c. */
#ifndef PTCE_HTTP_IDEM_H
#define PTCE_HTTP_IDEM_H

#include <jansson.h>

#include "db.h"
#include "http.h"

/*
 * The protocol, for a handler and the use case's transaction:
 *   http_idem_read       in the handler, before the body's checks: the header (428 when a
 *                        required one is absent, 400 when not 1 to 200 bytes) and the identity;
 *   http_idem_claim      first thing in the use case's open transaction: a fresh request goes
 *                        on; a replay has the first answer in idem->body, changes nothing and
 *                        rolls back; a refusal (idem->refused) rolls back;
 *   http_idem_store      before the commit: the answer, so the effect and the key commit
 *   (_json)              together (a refusal of the work rolls the claim back with it, and the
 *                        key may be tried again once its cause is mended);
 *   http_idem_refused    in the handler: 422 another request under the key, 409 a twin still
 *                        in flight, else Idempotent-Replayed: true on a replay;
 *   http_idem_reply_json answers idem->body (the stored or the replayed answer) itself.
 * Without a header (idem->key NULL) every call but http_idem_read does nothing. Keys are scoped
 * to the API key (ctx->principal.key_id) and live in the service's schema.
 *
 * THE REQUEST'S IDENTITY. The same key must come with the same request; the request is the
 * SHA-256 (auth_token_hash) of one of two texts, fixed per service because the hashes already
 * stored cannot be computed again and must keep matching:
 *   HTTP_IDEM_ID_BODY         (funding, submission) the raw body, preceded by ctx->path and
 *                             "\n" when the route has path parameters. ctx->path as a C string
 *                             is the path up to the end of its first parameter, decoded
 *                             ("/v1/tranches/<id>" for /v1/tranches/{id}/payments): the same body
 *                             on another resource is another request. A route without
 *                             parameters hashes the body alone, which is what submission's keys
 *                             (migration 005) and funding's enrolment keys (migration 007) were
 *                             stored with.
 *   HTTP_IDEM_ID_METHOD_PATH  (instruction) "<method> <url path>\n", then the raw body.
 * A single rule (e.g. adding the method for everyone) would turn every stored key of one of
 * them into a 422. The body hashed stops at its first NUL byte (JSON bodies have none).
 */
enum http_idem_flags {
    HTTP_IDEM_REQUIRED = 1,       /* an absent header is a 428 */
    HTTP_IDEM_ID_METHOD_PATH = 2, /* the identity of instruction (above); else HTTP_IDEM_ID_BODY */
};

/*
 * One request's key, caller-owned: http_idem_read, then http_idem_clear, which only matters while
 * idem->body is set (a replay's answer not taken with http_idem_body_take, or one stored by
 * http_idem_store_json).
 */
struct http_idem {
    const char *key;     /* the header (borrowed from the request), NULL when absent */
    const char *key_id;  /* the API key's id (borrowed from ctx->principal) */
    char hash[65];       /* the request's identity, hex SHA-256 */
    int code;            /* the status a fresh answer is sent and stored with */
    int replayed;        /* 1 after a claim that found the first answer */
    enum status refused; /* the claim's refusal: STATUS_CONFLICT, STATUS_UNPROCESSABLE; else OK */
    int status;          /* idem->body's status: the replayed answer's, or code */
    char *body;          /* owned: the replayed answer, or the one http_idem_store_json stored */
};

/*
 * Reads the Idempotency-Key header of ctx into idem, with flags (enum http_idem_flags) and code,
 * the status of the fresh answer. 1 when the handler goes on; 0 when it answered (428, 400),
 * with the handler's return value in *rc.
 */
int http_idem_read(struct http_ctx *ctx, struct http_idem *idem, unsigned flags, int code, int *rc);

/* Frees what idem holds; idem may be NULL. */
void http_idem_clear(struct http_idem *idem);

/*
 * In the caller's open transaction: nothing when idem is NULL or has no key; else the claim.
 * STATUS_OK, idem->replayed 0: go on. STATUS_OK, idem->replayed 1: the first answer is in
 * idem->body and idem->status; roll back. Another status: roll back; when it is
 * STATUS_CONFLICT (in flight) or STATUS_UNPROCESSABLE (another request) idem->refused says so.
 */
enum status http_idem_claim(struct db_conn *conn, struct http_idem *idem);

/* Makes a creating POST's answer (*text, to free) in the open transaction. */
typedef enum status (*http_idem_make_fn)(struct db_conn *conn, void *arg, char **text);

/*
 * A creating POST whose answer is one text, under its key, in one transaction of a pooled
 * connection: the claim first (a replay or a twin in flight is answered before any lock the
 * work would wait for), then make — unless a replay brings the first answer — the answer
 * stored, the commit. *text is the answer (to free), NULL on failure.
 */
enum status http_idem_run(struct db_pool *db, struct http_idem *idem, http_idem_make_fn make,
                          void *arg, char **text);

/* The same on conn, a connection the caller holds (a batch's, when its batch failed). */
enum status http_idem_run_on(struct db_conn *conn, struct http_idem *idem, http_idem_make_fn make,
                             void *arg, char **text);

/*
 * Many requests' claims in the open transaction, in one statement, each with its answer
 * texts[i] (borrowed) and idems[0]->code (idempotency_claim_many: nothing to store after).
 * fresh[i] is 1 when request i was claimed fresh (each must have a key: STATUS_INVALID
 * otherwise); the others are taken alone once the caller has committed (http_idem_run_on),
 * which gives each its own answer: a replay, a twin in flight, another request under the key.
 */
enum status http_idem_claim_many(struct db_conn *conn, struct http_idem *const *idems,
                                 const char *const *texts, size_t n, int *fresh);

/* Gives up idem->body (NULL when none); the caller frees it. */
char *http_idem_body_take(struct http_idem *idem);

/* In the same transaction, before the commit: stores text (borrowed) with idem->code. */
enum status http_idem_store(struct db_conn *conn, const struct http_idem *idem, const char *text);

/* The same for doc (borrowed), whose compact text idem keeps for http_idem_reply_json. */
enum status http_idem_store_json(struct db_conn *conn, struct http_idem *idem, const json_t *doc);

/*
 * After the use case returned st: when its claim refused, answers 422 ("this Idempotency-Key was
 * used with another request") or 409 ("… still being answered: retry it in a moment") and
 * returns 1 with the handler's return value in *rc. Otherwise returns 0, having added
 * Idempotent-Replayed: true when st is STATUS_OK and the answer is a replay.
 */
int http_idem_refused(struct http_ctx *ctx, const struct http_idem *idem, enum status st, int *rc);

/* Answers the refusal of idem->refused (not STATUS_OK): the 422 or the 409 above. */
int http_idem_reply_refusal(struct http_ctx *ctx, const struct http_idem *idem);

/*
 * Answers idem->body with idem->status: the answer just stored, or the first one again with
 * Idempotent-Replayed: true; with the ETag of its integer `version` member when etag. 500 when
 * the text is not JSON.
 */
int http_idem_reply_json(struct http_ctx *ctx, const struct http_idem *idem, int etag);

#endif
