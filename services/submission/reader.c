/* reader (submission): GET /v1/dossiers/{id} reads, batched by a batcher's threads. */
#include "reader.h"

#include <stddef.h>
#include <stdlib.h>

#include "batch.h"
#include "metrics.h"
#include "store.h"
#include "xalloc.h"

#define READER_MAX_BATCH 128

static struct metric m_batches =
    METRIC_COUNTER("ptce_dossier_read_batches_total", "Statements that read dossiers by id.");
static struct metric m_reads =
    METRIC_COUNTER("ptce_dossier_reads_total", "Dossiers read by id (requests served).");

struct reader {
    struct batcher *batcher;
};

static enum status reader_batch(struct db_conn *conn, struct batch_item **items, size_t n,
                                void *arg)
{
    (void)arg;
    struct dossier_read *reads[READER_MAX_BATCH] = {0};

    for (size_t i = 0; i < n; i++)
        reads[i] = items[i]->out;
    enum status st = store_dossier_read_batch(conn, reads, n);
    if (st == STATUS_OK) {
        metric_add(&m_batches, 1);
        metric_add(&m_reads, (long)n);
    }
    return st;
}

struct reader *reader_start(const char *conninfo, const char *schema, long statement_timeout_ms,
                            long threads)
{
    struct reader *rd = xcalloc(1, sizeof *rd);

    metrics_register(&m_batches);
    metrics_register(&m_reads);
    /*
     * The batch statement takes an array of ids; with custom plans PostgreSQL would plan it
     * again on every call for the array's length. The generic plan (an index scan on the
     * primary key) is right for every length.
     *
     * The second thread is a spare (spare_after_us): it takes reads only when the first is stuck
     * for 2 ms (a slow statement, a reconnection), so that reads arriving while a batch runs
     * make one larger batch rather than many small ones on two connections.
     */
    struct batcher_config bc = {.conninfo = conninfo,
                                .schema = schema,
                                .statement_timeout_ms = statement_timeout_ms,
                                .session_sql = "SET plan_cache_mode = force_generic_plan",
                                .threads = threads,
                                .max_batch = READER_MAX_BATCH,
                                .spare_after_us = 2000,
                                .fn = reader_batch};
    rd->batcher = batcher_start(&bc);
    return rd;
}

void reader_stop(struct reader *rd)
{
    if (!rd)
        return;
    batcher_free(rd->batcher);
    free(rd);
}

static void reader_served(struct batch_item *item)
{
    struct reader_request *rq =
        (struct reader_request *)((char *)item - offsetof(struct reader_request, item));

    rq->done(rq);
}

void reader_dossier_post(struct reader *rd, struct reader_request *rq,
                         const struct auth_principal *who, const char *id,
                         void (*done)(struct reader_request *rq), void *arg)
{
    rq->read = (struct dossier_read){.id = id, .who = who};
    rq->item = (struct batch_item){.out = &rq->read};
    rq->done = done;
    rq->arg = arg;
    batcher_post(rd->batcher, &rq->item, reader_served);
}

enum status reader_result(struct reader_request *rq, char **document, long long *version)
{
    if (rq->item.st != STATUS_OK)
        return rq->item.st;
    if (!rq->read.document)
        return STATUS_NOT_FOUND;
    *document = rq->read.document;
    *version = rq->read.version;
    rq->read.document = NULL;
    return STATUS_OK;
}

void reader_request_free(void *p)
{
    struct reader_request *rq = p;

    if (rq)
        free(rq->read.document);
    free(rq);
}
