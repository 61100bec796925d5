/* deposit (submission): partner deposits committed in batches (group commit). */
#ifndef PTCE_SUBMISSION_DEPOSIT_H
#define PTCE_SUBMISSION_DEPOSIT_H

#include "batch.h"
#include "store.h"

struct deposits;

/*
 * Starts `writers` threads, each with its own connection, that create the partner dossiers
 * queued by concurrent requests together: one transaction and a few statements for a batch
 * (store_partner_create_many), so a burst costs one commit instead of one each. A batch the
 * database refuses as a whole is taken again one deposit at a time, each answered alone.
 */
struct deposits *deposits_start(const char *conninfo, const char *schema, long statement_timeout_ms,
                                long writers);

/* Finishes the queued deposits, then stops. NULL is a no-op. */
void deposits_stop(struct deposits *d);

/* A deposit on its way. Its owner keeps it, and what it borrows, alive until done. */
struct deposit_request {
    struct store_deposit d; /* who, idem, content, request_id in; document, id out */
    enum status st;         /* out: the store's answer, as store_partner_create gives it */
    void (*done)(struct deposit_request *rq);
    void *arg;              /* the owner's */
    struct batch_item item; /* private */
};

/*
 * Creates rq's dossier: done(rq) is called on a writer thread once it is committed or failed,
 * or at once on this thread if the writers are stopping (STATUS_UNAVAILABLE).
 */
void deposits_post(struct deposits *d, struct deposit_request *rq,
                   void (*done)(struct deposit_request *rq), void *arg);

#endif
