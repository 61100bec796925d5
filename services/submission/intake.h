/* intake (submission): durable webhook intake, committed in batches (group commit). */
#ifndef PTCE_SUBMISSION_INTAKE_H
#define PTCE_SUBMISSION_INTAKE_H

#include "batch.h"
#include "store.h"

struct intake;

/*
 * Starts `writers` threads, each with its own connection, that insert the notices queued by
 * concurrent requests as one multi-row statement: one commit (one WAL flush) for many webhooks.
 * Each statement is bounded by statement_timeout_ms (0: no bound), as the pool's are.
 */
struct intake *intake_start(const char *conninfo, const char *schema, long statement_timeout_ms,
                            long writers);

/* Finishes the queued notices, then stops. */
void intake_stop(struct intake *in);

/* A notice being recorded. Its owner keeps it, and the notice's strings, alive until done. */
struct intake_request {
    struct ds_notice notice;
    int fresh;      /* out: 0 for a notice already stored (a duplicate) */
    enum status st; /* out: STATUS_OK once committed; the caller may answer 202 only then */
    void (*done)(struct intake_request *rq);
    void *arg;              /* the owner's */
    struct batch_item item; /* private */
};

/*
 * Records rq->notice: done(rq) is called on a writer thread once it is committed or failed, or
 * at once on this thread if the intake is stopping.
 */
void intake_post(struct intake *in, struct intake_request *rq,
                 void (*done)(struct intake_request *rq), void *arg);

#endif
