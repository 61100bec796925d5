/*
 * money_batch (funding): signatures and payments of tranches applied many at a time, each batch
 * by one call of the SQL function money_batch (migrations/013_money_batch.sql), its events in one
 * outbox statement and one commit.
 *
 * One transaction per request ran each operation's statements one at a time, and every
 * commitment and payment of a wave updated the same envelope and money_stats rows, so they all
 * committed one after the other (make bench: 0.03 x pgbench's insert rate). money_batch applies
 * a batch in a few set-based statements over all its operations and moves each balance once per
 * batch, while each operation keeps the outcome it would have had alone, in arrival order.
 */
#ifndef PTCE_FUNDING_MONEY_BATCH_H
#define PTCE_FUNDING_MONEY_BATCH_H

#include <jansson.h>

#include "auth.h"
#include "batch.h"
#include "fsm.h"
#include "status.h"

#define MONEY_WHY_LEN 256

enum money_kind { MONEY_SIGN, MONEY_PAY };

/*
 * One operation, caller-owned. The caller fills the inputs (every pointer borrowed until done is
 * called); the batch fills the outputs. Only requests whose answer depends on the database alone
 * come here: a well-formed body, an If-Match of exactly one ETag, no Idempotency-Key.
 */
struct money_op {
    enum money_kind kind;
    const char *id;                   /* the agreement (MONEY_SIGN) or the tranche (MONEY_PAY) */
    const struct auth_principal *who; /* the actor and the regions in scope */
    const char *request_id;           /* the request's, carried by its events */
    void *arg;                        /* the caller's, for done */
    /* MONEY_SIGN: the transition and the version the If-Match names */
    const struct fsm_request *rq; /* id, to, who and the event's data members */
    const char *signer;
    const char *from_state;
    long long version;
    /* MONEY_PAY */
    const char *reference;
    const char *paid_on;

    /* outputs, valid in done */
    enum status st;
    int transition_refused;    /* st is STATUS_CONFLICT: no transition from `state` */
    char state[FSM_STATE_LEN]; /* the agreement's state (its current one when refused) */
    long long version_now;     /* the agreement's version: the new one, or the current one */
    char *doc;                 /* STATUS_OK: the answer's JSON text (the agreement, the tranche);
                                  owned by the op, freed by money_op_clear */
    char why[MONEY_WHY_LEN];   /* a refusal's detail ("" when none) */

    /* private */
    void (*done)(struct money_op *op);
    struct batch_item item;
};

struct money_batch;

/* Starts `writers` threads, each with its own connection, serving batches of up to max_batch. */
struct money_batch *money_batch_start(const char *conninfo, const char *schema,
                                      long statement_timeout_ms, long writers, size_t max_batch);
/* Serves what is queued, stops the threads and frees mb (NULL: nothing). */
void money_batch_stop(struct money_batch *mb);

/*
 * Queues op; done(op) is called on a batch thread once its batch committed (op->st STATUS_OK or
 * the operation's own refusal) or failed (the failure's status: nothing of it was committed, or
 * its outcome is unknown), or at once on this thread when the batcher is stopping. A batch that
 * failed otherwise than by a lost connection is run again one operation at a time, so a failure
 * is the operation's own.
 */
void money_batch_post(struct money_batch *mb, struct money_op *op,
                      void (*done)(struct money_op *op));

/* Frees what op's outputs hold (op itself is the caller's). */
void money_op_clear(struct money_op *op);

#endif
