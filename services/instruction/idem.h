/* idem (instruction): Idempotency-Key on instruction's creating POSTs, over common/idempotency. */
#ifndef PTCE_INSTRUCTION_IDEM_H
#define PTCE_INSTRUCTION_IDEM_H

#include <jansson.h>

#include "db.h"
#include "http.h"

/*
 * One request's key, caller-owned (instruction_idem_init, then instruction_idem_clear). The
 * header is optional on these routes: without it every call runs. With it, the protocol of
 * common/idempotency.h runs inside the operation's own transaction, keys scoped to the API key:
 * claim first, then the work, then the answer stored before the commit. Only successful
 * answers are stored: a refusal rolls the claim back with everything else, so the same key
 * may be tried again once the refusal's cause is mended.
 */
struct instruction_idem {
    const char *key;    /* the header (borrowed from the request), NULL when absent */
    const char *key_id; /* the API key's id (borrowed from the principal) */
    char hash[65];      /* SHA-256 of method, path and body: the request's identity */
    int replayed;       /* set by a claim that found the first answer */
    int refused;        /* set when the claim itself refused: 409 in flight, 422 other request */
    int status;         /* the replayed answer's code */
    char *body;         /* the replayed answer, or the one stored; owned */
};

/*
 * Reads the Idempotency-Key header into idem. Returns 1; or 0 when the header is not 1 to 200
 * bytes, having answered 400 into *rc.
 */
int instruction_idem_init(struct http_ctx *ctx, struct instruction_idem *idem, int *rc);
void instruction_idem_clear(struct instruction_idem *idem);

/*
 * In the caller's open transaction: nothing without a key; else the claim. STATUS_OK with
 * idem->replayed 0: go on; with idem->replayed 1: answer instruction_idem_replay and roll back.
 * Another status: idem->refused is set when the claim refused (409, 422), roll back.
 */
enum status instruction_idem_claim(struct db_conn *conn, struct instruction_idem *idem);

/*
 * In the same transaction, before the commit: stores code and doc (borrowed) under the key, and
 * keeps them in idem for instruction_idem_reply. Nothing without a key.
 */
enum status instruction_idem_store(struct db_conn *conn, struct instruction_idem *idem, int code,
                                   const json_t *doc);

/* Answers a refusal of the claim (idem->refused, st): 409 a twin still in flight, 422 the key
 * used for another request. */
int instruction_idem_refusal(struct http_ctx *ctx, enum status st);

/*
 * Answers idem's answer: the one just stored, or the first one again with Idempotent-Replayed:
 * true (idem->replayed); with the ETag of its `version` when etag.
 */
int instruction_idem_reply(struct http_ctx *ctx, const struct instruction_idem *idem, int etag);

#endif
