/* intake (submission): webhook notices committed in batches by a batcher's threads. */
#include "intake.h"

#include <stddef.h>
#include <stdlib.h>

#include "batch.h"
#include "metrics.h"
#include "xalloc.h"

#define INTAKE_MAX_BATCH 512

static struct metric m_batches =
    METRIC_COUNTER("ptce_ds_intake_batches_total", "Commits of webhook notices (one per batch).");
static struct metric m_notices =
    METRIC_COUNTER("ptce_ds_intake_notices_total", "Webhook notices committed.");

struct intake {
    struct batcher *batcher;
};

/* One INSERT of the whole batch: one commit, one WAL flush for every notice in it. */
static enum status intake_write(struct db_conn *conn, struct batch_item **items, size_t n,
                                void *arg)
{
    (void)arg;
    const struct ds_notice *notices[INTAKE_MAX_BATCH] = {0};
    int fresh[INTAKE_MAX_BATCH] = {0};

    for (size_t i = 0; i < n; i++)
        notices[i] = items[i]->in;
    enum status st = store_notice_insert_batch(conn, notices, n, fresh);
    if (st != STATUS_OK)
        return st; /* a failed batch leaves nobody fresh */
    for (size_t i = 0; i < n; i++)
        *(int *)items[i]->out = fresh[i];
    metric_add(&m_batches, 1);
    metric_add(&m_notices, (long)n);
    return STATUS_OK;
}

struct intake *intake_start(const char *conninfo, const char *schema, long statement_timeout_ms,
                            long writers)
{
    struct intake *in = xcalloc(1, sizeof *in);

    metrics_register(&m_batches);
    metrics_register(&m_notices);
    struct batcher_config bc = {.conninfo = conninfo,
                                .schema = schema,
                                .statement_timeout_ms = statement_timeout_ms,
                                .threads = writers,
                                .max_batch = INTAKE_MAX_BATCH,
                                .fn = intake_write};
    in->batcher = batcher_start(&bc);
    return in;
}

void intake_stop(struct intake *in)
{
    if (!in)
        return;
    batcher_free(in->batcher);
    free(in);
}

static void intake_committed(struct batch_item *item)
{
    struct intake_request *rq =
        (struct intake_request *)((char *)item - offsetof(struct intake_request, item));

    rq->st = item->st;
    if (rq->st != STATUS_OK)
        rq->fresh = 0;
    rq->done(rq);
}

void intake_post(struct intake *in, struct intake_request *rq,
                 void (*done)(struct intake_request *rq), void *arg)
{
    rq->fresh = 0;
    rq->done = done;
    rq->arg = arg;
    rq->item = (struct batch_item){.in = &rq->notice, .out = &rq->fresh};
    batcher_post(in->batcher, &rq->item, intake_committed);
}
