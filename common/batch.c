/* batch: a queue of requests and threads that serve them in batches, one round trip each. */
#include "batch.h"

#include <stdlib.h>

#include "xalloc.h"

struct batcher {
    struct batcher_config cfg; /* strings copied */
    pthread_mutex_t lock;
    pthread_cond_t more; /* threads wait for items */
    struct batch_item *head, *tail;
    int stop;
    long nthreads;
    pthread_t *threads;
};

/* Takes up to max_batch items off the queue into items; 0 when stopping with nothing queued. */
static size_t batch_take(struct batcher *b, struct batch_item **items)
{
    size_t n = 0;

    pthread_mutex_lock(&b->lock);
    while (!b->head && !b->stop)
        pthread_cond_wait(&b->more, &b->lock);
    while (b->head && n < b->cfg.max_batch) {
        items[n++] = b->head;
        b->head = b->head->next;
    }
    if (!b->head)
        b->tail = NULL;
    pthread_mutex_unlock(&b->lock);
    return n;
}

static void batch_finish(struct batcher *b, struct batch_item **items, size_t n, enum status st)
{
    pthread_mutex_lock(&b->lock);
    for (size_t i = 0; i < n; i++) {
        if (st != STATUS_OK)
            items[i]->st = st;
        /* The owner may return as soon as done is set: items[i] is not touched after. */
        items[i]->done = 1;
        pthread_cond_signal(&items[i]->done_cond);
    }
    pthread_mutex_unlock(&b->lock);
}

static void *batch_thread(void *arg)
{
    struct batcher *b = arg;
    struct db_conn conn = {0};
    struct batch_item **items = xcalloc(b->cfg.max_batch, sizeof(struct batch_item *));
    size_t n;

    while ((n = batch_take(b, items)) > 0) {
        enum status st = STATUS_OK;
        if (!conn.pg || PQstatus(conn.pg) != CONNECTION_OK) {
            db_conn_close(&conn);
            st = db_conn_open(&conn, b->cfg.conninfo, b->cfg.schema, b->cfg.statement_timeout_ms);
            if (st == STATUS_OK && b->cfg.session_sql) {
                st = db_command(&conn, b->cfg.session_sql);
                if (st != STATUS_OK)
                    db_conn_close(&conn); /* set up again with the next batch */
            }
        }
        if (st == STATUS_OK)
            st = b->cfg.fn(&conn, items, n, b->cfg.arg);
        batch_finish(b, items, n, st);
    }
    free(items);
    db_conn_close(&conn);
    return NULL;
}

struct batcher *batcher_start(const struct batcher_config *cfg)
{
    struct batcher *b = xcalloc(1, sizeof *b);

    b->cfg = *cfg;
    b->cfg.conninfo = xstrdup(cfg->conninfo);
    b->cfg.schema = xstrdup(cfg->schema);
    b->cfg.session_sql = cfg->session_sql ? xstrdup(cfg->session_sql) : NULL;
    if (!b->cfg.max_batch)
        b->cfg.max_batch = 1;
    pthread_mutex_init(&b->lock, NULL);
    pthread_cond_init(&b->more, NULL);
    b->threads = xcalloc((size_t)cfg->threads, sizeof *b->threads);
    for (long i = 0; i < cfg->threads; i++) {
        if (pthread_create(&b->threads[i], NULL, batch_thread, b) != 0)
            abort();
        b->nthreads++;
    }
    return b;
}

void batcher_stop(struct batcher *b)
{
    if (!b)
        return;
    pthread_mutex_lock(&b->lock);
    b->stop = 1;
    pthread_cond_broadcast(&b->more);
    pthread_mutex_unlock(&b->lock);
    for (long i = 0; i < b->nthreads; i++)
        pthread_join(b->threads[i], NULL);
    pthread_cond_destroy(&b->more);
    pthread_mutex_destroy(&b->lock);
    free(b->threads);
    free((char *)b->cfg.conninfo);
    free((char *)b->cfg.schema);
    free((char *)b->cfg.session_sql);
    free(b);
}

enum status batcher_submit(struct batcher *b, struct batch_item *item)
{
    item->st = STATUS_OK;
    item->next = NULL;
    item->done = 0;
    pthread_mutex_lock(&b->lock);
    if (b->stop) {
        pthread_mutex_unlock(&b->lock);
        return item->st = STATUS_UNAVAILABLE;
    }
    pthread_cond_init(&item->done_cond, NULL);
    if (b->tail)
        b->tail->next = item;
    else
        b->head = item;
    b->tail = item;
    pthread_cond_signal(&b->more);
    while (!item->done)
        pthread_cond_wait(&item->done_cond, &b->lock);
    pthread_mutex_unlock(&b->lock);
    pthread_cond_destroy(&item->done_cond);
    return item->st;
}
