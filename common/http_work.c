/*
 * http_work: database work off the HTTP workers. A handler hands a function to a small set of
 * database threads (http_defer_work, http_defer_call) and its request waits suspended, holding
 * no worker; the thread runs the function (with a connection of the pool lent to it, for
 * http_defer_work) and resumes the request, whose resume callback answers on its worker.
 */
#include <stdlib.h>
#include <string.h>

#include "http.h"
#include "http_internal.h"
#include "log.h"

struct http_work_item {
    struct http_work_item *next;
    struct http_ctx *ctx;
    http_work_fn work; /* with a lent connection, or NULL */
    http_call_fn call; /* without one, or NULL */
    void *state;
};

struct http_work_pool {
    pthread_mutex_t lock;
    pthread_cond_t wake;
    struct http_work_item *head, *tail;
    int stop;
    size_t nthreads;
    pthread_t *threads;
    struct db_pool *db;
};

/* Runs one item, then gives the request back to its worker. */
static void http_work_run(struct http_work_pool *wp, struct http_work_item *it)
{
    struct http_exchange *x = it->ctx->x;

    if (it->call) {
        it->call(it->ctx, it->state);
    } else {
        struct db_conn *conn = NULL;
        enum status st = wp->db ? db_acquire(wp->db, &conn) : STATUS_UNAVAILABLE;
        if (st == STATUS_OK) {
            it->work(it->ctx, conn, it->state);
            db_release(wp->db, conn);
        }
        x->work_status = st;
    }
    http_resume(it->ctx); /* it->ctx is the request's from here: not touched again */
    free(it);
}

static void *http_work_thread(void *arg)
{
    struct http_work_pool *wp = arg;

    pthread_mutex_lock(&wp->lock);
    for (;;) {
        while (!wp->head && !wp->stop)
            pthread_cond_wait(&wp->wake, &wp->lock);
        struct http_work_item *it = wp->head;
        if (!it)
            break; /* stopping, and nothing left: every queued request was given back */
        wp->head = it->next;
        if (!wp->head)
            wp->tail = NULL;
        pthread_mutex_unlock(&wp->lock);
        http_work_run(wp, it);
        pthread_mutex_lock(&wp->lock);
    }
    pthread_mutex_unlock(&wp->lock);
    return NULL;
}

struct http_work_pool *http_work_start(struct db_pool *db, size_t nthreads)
{
    struct http_work_pool *wp = xcalloc(1, sizeof *wp);

    wp->db = db;
    pthread_mutex_init(&wp->lock, NULL);
    pthread_cond_init(&wp->wake, NULL);
    wp->threads = xcalloc(nthreads, sizeof *wp->threads);
    for (size_t i = 0; i < nthreads; i++) {
        if (pthread_create(&wp->threads[i], NULL, http_work_thread, wp) != 0) {
            http_work_stop(wp);
            return NULL;
        }
        wp->nthreads++;
    }
    return wp;
}

void http_work_stop(struct http_work_pool *wp)
{
    if (!wp)
        return;
    pthread_mutex_lock(&wp->lock);
    wp->stop = 1;
    pthread_cond_broadcast(&wp->wake);
    pthread_mutex_unlock(&wp->lock);
    for (size_t i = 0; i < wp->nthreads; i++)
        pthread_join(wp->threads[i], NULL);
    pthread_mutex_destroy(&wp->lock);
    pthread_cond_destroy(&wp->wake);
    free(wp->threads);
    free(wp);
}

static int http_work_post(struct http_ctx *ctx, http_work_fn work, http_call_fn call, void *state,
                          void (*free_state)(void *), http_handler_fn resume)
{
    struct http_work_pool *wp = ctx->x->srv->work;

    if (ctx->on_db_thread)
        return http_defer(ctx, resume, state, free_state); /* refused there, state released */
    struct http_work_item *it = xcalloc(1, sizeof *it);

    it->ctx = ctx;
    it->work = work;
    it->call = call;
    it->state = state;
    ctx->x->work_status = STATUS_OK;
    int rc = http_defer(ctx, resume, state, free_state);
    pthread_mutex_lock(&wp->lock);
    if (wp->tail)
        wp->tail->next = it;
    else
        wp->head = it;
    wp->tail = it;
    pthread_cond_signal(&wp->wake);
    pthread_mutex_unlock(&wp->lock);
    return rc;
}

int http_defer_work(struct http_ctx *ctx, http_work_fn fn, void *state, void (*free_state)(void *),
                    http_handler_fn resume)
{
    return http_work_post(ctx, fn, NULL, state, free_state, resume);
}

int http_defer_call(struct http_ctx *ctx, http_call_fn fn, void *state, void (*free_state)(void *),
                    http_handler_fn resume)
{
    return http_work_post(ctx, NULL, fn, state, free_state, resume);
}

/*
 * An HTTP_DB handler's run: it answers into res, its own, so that a worker answering 503 at the
 * deadline never shares a response with it; the worker then takes status, headers and body.
 */
struct http_db_run {
    http_handler_fn handler;
    struct _u_response res;
    int status_code;
    int rc;
};

static void http_db_run_free(void *p)
{
    struct http_db_run *run = p;

    ulfius_clean_response(&run->res);
    free(run);
}

static void http_db_call(struct http_ctx *ctx, void *state)
{
    struct http_db_run *run = state;
    struct http_ctx local = *ctx;

    local.res = &run->res;
    local.status_code = 0;
    local.on_db_thread = 1;
    log_set_request_id(ctx->request_id);
    run->rc = run->handler(&local);
    run->status_code = local.status_code;
    log_set_request_id(NULL);
}

static int http_db_resume(struct http_ctx *ctx)
{
    struct http_db_run *run = http_state(ctx);
    const char **keys = u_map_enum_keys(run->res.map_header);

    for (size_t i = 0; keys && keys[i]; i++)
        u_map_put(ctx->res->map_header, keys[i], u_map_get(run->res.map_header, keys[i]));
    ctx->status_code = run->status_code;
    ctx->res->status = run->res.status;
    if (run->res.binary_body_length > 0)
        ulfius_set_binary_body_response(ctx->res, run->res.status, run->res.binary_body,
                                        run->res.binary_body_length);
    return run->rc;
}

int http_defer_handler(struct http_ctx *ctx, http_handler_fn handler)
{
    struct http_db_run *run = xcalloc(1, sizeof *run);

    run->handler = handler;
    ulfius_init_response(&run->res);
    return http_defer_call(ctx, http_db_call, run, http_db_run_free, http_db_resume);
}

int http_work_handler(struct http_ctx *ctx)
{
    return http_defer_handler(ctx, ctx->route->handler);
}
