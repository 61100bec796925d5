/* deposit (submission): partner deposits committed in batches by a batcher's threads. */
#include "deposit.h"

#include <stddef.h>
#include <stdlib.h>

#include "log.h"
#include "metrics.h"
#include "xalloc.h"

#define DEPOSITS_MAX_BATCH 128

static struct metric m_batches =
    METRIC_COUNTER("ptce_deposit_batches_total", "Commits of partner deposits (one per batch).");
static struct metric m_deposits =
    METRIC_COUNTER("ptce_deposit_batched_total", "Partner deposits committed by a batch.");
static struct metric m_alone = METRIC_COUNTER(
    "ptce_deposit_alone_total", "Partner deposits taken alone after their batch was refused.");

struct deposits {
    struct batcher *batcher;
};

static struct deposit_request *deposit_of(struct batch_item *item)
{
    return (struct deposit_request *)((char *)item - offsetof(struct deposit_request, item));
}

/*
 * The batch in one transaction; then, each in a transaction of its own as if it had come
 * alone, every deposit the batch did not create: one whose key was not fresh (a replay, a
 * twin, another body), or all of them when the batch failed as a whole (a statement one
 * deposit made fail, a timeout). A lost connection is not special: the deposits' keys make
 * the lone runs safe, and a commit that happened after all is found and replayed.
 */
static enum status deposits_write(struct db_conn *conn, struct batch_item **items, size_t n,
                                  void *arg)
{
    (void)arg;
    struct store_deposit *many[DEPOSITS_MAX_BATCH] = {0};

    for (size_t i = 0; i < n; i++)
        many[i] = &deposit_of(items[i])->d;
    enum status st = store_partner_create_many(conn, many, n);
    size_t alone = 0;

    if (st != STATUS_OK)
        log_event(LOG_WARN, "deposit.batch_failed", "{s:i, s:s}", "deposits", (int)n, "status",
                  status_strerror(st));
    else
        metric_add(&m_batches, 1);
    for (size_t i = 0; i < n; i++) {
        struct deposit_request *rq = deposit_of(items[i]);
        if (rq->d.created) {
            rq->st = STATUS_OK;
            metric_add(&m_deposits, 1);
            continue;
        }
        log_set_request_id(rq->d.request_id); /* the event's, as on the request's thread */
        rq->st = store_partner_create(conn, rq->d.who, rq->d.idem, rq->d.content, &rq->d.document);
        log_set_request_id(NULL);
        alone++;
    }
    metric_add(&m_alone, (long)alone);
    return STATUS_OK; /* each deposit carries its own answer */
}

struct deposits *deposits_start(const char *conninfo, const char *schema, long statement_timeout_ms,
                                long writers)
{
    struct deposits *d = xcalloc(1, sizeof *d);

    metrics_register(&m_batches);
    metrics_register(&m_deposits);
    metrics_register(&m_alone);
    struct batcher_config bc = {.conninfo = conninfo,
                                .schema = schema,
                                .statement_timeout_ms = statement_timeout_ms,
                                .threads = writers,
                                .max_batch = DEPOSITS_MAX_BATCH,
                                .spare_after_us = 2000,
                                .fn = deposits_write};
    d->batcher = batcher_start(&bc);
    return d;
}

void deposits_stop(struct deposits *d)
{
    if (!d)
        return;
    batcher_free(d->batcher);
    free(d);
}

static void deposits_served(struct batch_item *item)
{
    struct deposit_request *rq = deposit_of(item);

    if (item->st != STATUS_OK) /* the batch as a whole: e.g. no connection */
        rq->st = item->st;
    rq->done(rq);
}

void deposits_post(struct deposits *d, struct deposit_request *rq,
                   void (*done)(struct deposit_request *rq), void *arg)
{
    rq->st = STATUS_INTERNAL;
    rq->d.document = NULL;
    rq->done = done;
    rq->arg = arg;
    rq->item = (struct batch_item){.in = rq, .out = rq};
    batcher_post(d->batcher, &rq->item, deposits_served);
}
