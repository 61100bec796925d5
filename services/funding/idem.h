/* idem (funding): Idempotency-Key on funding's creating POSTs, over common/idempotency.c. */
#ifndef PTCE_FUNDING_IDEM_H
#define PTCE_FUNDING_IDEM_H

#include "db.h"
#include "http.h"

/*
 * One request's key, from the handler to the use case's transaction: there the key is claimed
 * before the work (funding_idem_claim), and the answer stored after it (funding_idem_store), so
 * the effect and the key commit together. Without a key (key NULL) both do nothing. Caller-owned;
 * the strings are borrowed from the request.
 */
struct funding_idem {
    const char *key_id; /* the API key's id: a key is scoped to it */
    const char *key;    /* the Idempotency-Key header, NULL without one */
    char hash[65];      /* the request's identity (see funding_idem_read) */
    int code;           /* the HTTP status the fresh answer is sent with */
    int replayed;       /* out: 1 the first answer replayed, or one of the refusals below */
};

/* idem->replayed when the claim refused the request (a store's own 409 or 422 leaves it 0). */
#define FUNDING_IDEM_IN_FLIGHT (-1)
#define FUNDING_IDEM_OTHER_REQUEST (-2)

/*
 * Reads the Idempotency-Key header into idem. The request's identity is the SHA-256 of its raw
 * body, preceded by its path when the route names a resource ("/v1/tranches/{id}/payments"), so
 * the same key on another tranche is another request. 0 when the handler goes on; -1 when it
 * answered (428 for a required key that is absent, 400 for one not of 1 to 200 bytes), with the
 * handler's return value in *rc.
 */
int funding_idem_read(struct http_ctx *ctx, struct funding_idem *idem, int required, int code,
                      int *rc);

/*
 * In the caller's open transaction: claims the key. *body stays NULL for a fresh request (the
 * work runs); on a replay it is the first answer (caller frees) and idem->replayed is 1. The same
 * key with another request: STATUS_UNPROCESSABLE (FUNDING_IDEM_OTHER_REQUEST); still being
 * answered by a twin: STATUS_CONFLICT (FUNDING_IDEM_IN_FLIGHT).
 */
enum status funding_idem_claim(struct db_conn *conn, struct funding_idem *idem, char **body);

/* In the same transaction: records the answer of a fresh request (its body as sent). */
enum status funding_idem_store(struct db_conn *conn, const struct funding_idem *idem,
                               const char *body);

/*
 * Answers what is the key's doing: 422 for another request under the key, 409 for one still in
 * flight. 1 when it answered (the handler's return value in *rc), 0 otherwise. On a replay it
 * adds Idempotent-Replayed: true and returns 0: the caller answers the replayed body.
 */
int funding_idem_reply(struct http_ctx *ctx, const struct funding_idem *idem, enum status st,
                       int *rc);

#endif
