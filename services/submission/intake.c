/* intake (submission): a queue of notices and writer threads that commit them in batches. */
#include "intake.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "metrics.h"
#include "xalloc.h"

#define INTAKE_MAX_BATCH 512

static struct metric m_batches =
    METRIC_COUNTER("ptce_ds_intake_batches_total", "Commits of webhook notices (one per batch).");
static struct metric m_notices =
    METRIC_COUNTER("ptce_ds_intake_notices_total", "Webhook notices committed.");

/* One waiting request; lives on the requester's stack until done is set. */
struct intake_item {
    const struct ds_notice *notice;
    struct intake_item *next;
    pthread_cond_t done_cond; /* its own, so finishing a batch wakes only its requesters */
    enum status st;
    int fresh;
    int done;
};

struct intake {
    char *conninfo;
    char *schema;
    pthread_mutex_t lock;
    pthread_cond_t more; /* writers wait for items */
    struct intake_item *head, *tail;
    int stop;
    long nwriters;
    pthread_t *writers;
};

/* Takes up to INTAKE_MAX_BATCH items off the queue; NULL when stopping with nothing queued. */
static struct intake_item *intake_take(struct intake *in, size_t *count)
{
    struct intake_item *batch, *last;
    size_t n = 1;

    pthread_mutex_lock(&in->lock);
    while (!in->head && !in->stop)
        pthread_cond_wait(&in->more, &in->lock);
    batch = in->head;
    if (batch) {
        last = batch;
        while (last->next && n < INTAKE_MAX_BATCH) {
            last = last->next;
            n++;
        }
        in->head = last->next;
        if (!in->head)
            in->tail = NULL;
        last->next = NULL;
    }
    pthread_mutex_unlock(&in->lock);
    *count = batch ? n : 0;
    return batch;
}

static void intake_finish(struct intake *in, struct intake_item *batch, enum status st)
{
    pthread_mutex_lock(&in->lock);
    for (struct intake_item *it = batch, *next; it; it = next) {
        next = it->next; /* read before done: the owner may return as soon as it is set */
        if (st != STATUS_OK)
            it->st = st;
        it->done = 1;
        pthread_cond_signal(&it->done_cond);
    }
    pthread_mutex_unlock(&in->lock);
}

static void *intake_writer(void *arg)
{
    struct intake *in = arg;
    struct db_conn conn = {0};
    const struct ds_notice *notices[INTAKE_MAX_BATCH];
    int fresh[INTAKE_MAX_BATCH];
    size_t n;
    struct intake_item *batch;

    while ((batch = intake_take(in, &n)) != NULL) {
        size_t i = 0;
        for (struct intake_item *it = batch; it; it = it->next)
            notices[i++] = it->notice;
        enum status st = STATUS_OK;
        if (!conn.pg || PQstatus(conn.pg) != CONNECTION_OK) {
            db_conn_close(&conn);
            st = db_conn_open(&conn, in->conninfo, in->schema, 0);
        }
        memset(fresh, 0, sizeof fresh); /* a failed batch leaves nobody fresh */
        if (st == STATUS_OK)
            st = store_notice_insert_batch(&conn, notices, n, fresh);
        i = 0;
        for (struct intake_item *it = batch; it; it = it->next)
            it->fresh = fresh[i++];
        if (st == STATUS_OK) {
            metric_add(&m_batches, 1);
            metric_add(&m_notices, (long)n);
        }
        intake_finish(in, batch, st);
    }
    db_conn_close(&conn);
    return NULL;
}

struct intake *intake_start(const char *conninfo, const char *schema, long writers)
{
    struct intake *in = xcalloc(1, sizeof *in);

    in->conninfo = xstrdup(conninfo);
    in->schema = xstrdup(schema);
    pthread_mutex_init(&in->lock, NULL);
    pthread_cond_init(&in->more, NULL);
    metrics_register(&m_batches);
    metrics_register(&m_notices);
    in->writers = xcalloc((size_t)writers, sizeof *in->writers);
    for (long i = 0; i < writers; i++) {
        if (pthread_create(&in->writers[i], NULL, intake_writer, in) != 0)
            abort();
        in->nwriters++;
    }
    return in;
}

void intake_stop(struct intake *in)
{
    if (!in)
        return;
    pthread_mutex_lock(&in->lock);
    in->stop = 1;
    pthread_cond_broadcast(&in->more);
    pthread_mutex_unlock(&in->lock);
    for (long i = 0; i < in->nwriters; i++)
        pthread_join(in->writers[i], NULL);
    pthread_cond_destroy(&in->more);
    pthread_mutex_destroy(&in->lock);
    free(in->writers);
    free(in->conninfo);
    free(in->schema);
    free(in);
}

enum status intake_record(struct intake *in, const struct ds_notice *n, int *fresh)
{
    struct intake_item item = {.notice = n, .st = STATUS_OK};

    pthread_mutex_lock(&in->lock);
    if (in->stop) {
        pthread_mutex_unlock(&in->lock);
        return STATUS_UNAVAILABLE;
    }
    pthread_cond_init(&item.done_cond, NULL);
    /*
     * The queue points at an item on this stack: safe, because this function returns only once
     * a writer has set item.done and no longer touches it.
     */
    // cppcheck-suppress autoVariables
    if (in->tail)
        in->tail->next = &item;
    else
        in->head = &item; // cppcheck-suppress autoVariables
    in->tail = &item;     // cppcheck-suppress autoVariables
    pthread_cond_signal(&in->more);
    while (!item.done)
        pthread_cond_wait(&item.done_cond, &in->lock);
    pthread_mutex_unlock(&in->lock);
    pthread_cond_destroy(&item.done_cond);
    *fresh = item.fresh;
    return item.st;
}
