/* http_internal: what the files of the http module share; nothing here is for the services. */
#ifndef PTCE_HTTP_INTERNAL_H
#define PTCE_HTTP_INTERNAL_H

#include <microhttpd.h>
#include <stdatomic.h>
#include <time.h>

#include "http.h"

/*
 * One worker: a one-thread MHD daemon with its own epoll set and no listening socket. The
 * acceptor hands it connections; `connections` counts those it holds.
 */
struct http_worker {
    struct MHD_Daemon *daemon;
    atomic_long connections;
};

/*
 * http_router.c: the checks a request passes on its request line and headers alone — request
 * id, query, route, gate, key, hidden role, role, rate — before any body is read. x->idx is
 * the route (or -1); when a check fails the answer is set (ctx.status_code != 0), and when
 * they pass x->headed is set.
 */
void http_dispatch_head(struct http_exchange *x);
/* http_router.c: the body checks of the route, then its handler; answers or defers. */
void http_dispatch_body(struct http_exchange *x);
/* http_router.c: what a handler's (or resume callback's) return value rc asks for. */
void http_handler_result(struct http_exchange *x, int rc);
/* http.c: appends text to out as valid UTF-8, other bytes as "%XX". */
void http_text_clean(const char *text, struct buf *out);
/* http_metrics.c: the zeroed figures of nroutes routes and of the unmatched requests; free() them.
 */
struct http_route_stats *http_route_stats_new(size_t nroutes);
/* http_metrics.c: counts and logs an answered request. */
void http_account(struct http_server *srv, const struct http_ctx *ctx, long idx, double secs);
/* http_router.c: 1 when content_type names media (parameters ignored). */
int http_media_is(const char *content_type, const char *media);

/*
 * A request from its first line to its answer: ulfius's request and response objects, the
 * handler's context, and what the worker needs to suspend and resume it.
 */
struct http_exchange {
    struct _u_request req;
    struct _u_response res;
    struct http_ctx ctx;
    struct http_server *srv;
    struct MHD_Connection *conn;
    struct MHD_PostProcessor *post; /* application/x-www-form-urlencoded bodies */
    struct timespec start;
    char names[HTTP_MAX_PARAMS][32];
    long idx; /* the route, or -1 */
    int started, dispatched;
    int headed; /* the checks on the headers passed: the body is read, then the handler runs */
    char bad_query[64];      /* the first query parameter that is not UTF-8 (cleaned), or "" */
    char client[64];         /* the client's address as text, for the failure throttle */
    enum status work_status; /* http_defer_work: STATUS_OK, or why no connection was lent */
    http_handler_fn resume;  /* set while the answer is deferred */
    void *state;
    void (*free_state)(void *);
    /*
     * One reference for MHD (until the request completes) and one for the thread that is to
     * call http_resume, while deferred: whichever goes last frees the exchange.
     */
    atomic_int refs;
    atomic_int defer_state; /* enum http_defer_state: who won the race to wake the worker */
    struct timespec deadline;
    struct http_exchange *dprev, *dnext; /* in its srv->defer_shards list, while WAITING */
};

enum http_defer_state {
    HTTP_DEFER_NONE,
    HTTP_DEFER_WAITING, /* suspended, in the server's list */
    HTTP_DEFER_RESUMED, /* http_resume came first: the worker calls resume */
    HTTP_DEFER_EXPIRED, /* the deadline (or a stop) came first: the worker answers 503 */
};

/* http_exchange.c: libmicrohttpd's callbacks, given to each worker's daemon. */
enum MHD_Result http_access(void *cls, struct MHD_Connection *conn, const char *url,
                            const char *method, const char *version, const char *upload_data,
                            size_t *upload_data_size, void **con_cls);
void *http_uri_log(void *cls, const char *uri, struct MHD_Connection *conn);
void http_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                    enum MHD_RequestTerminationCode toe);
/* http_work.c: nthreads database threads lending connections of db (may be NULL); NULL if
 * a thread cannot start. */
struct http_work_pool *http_work_start(struct db_pool *db, size_t nthreads);
/* http_work.c: runs an HTTP_DB route's handler on a database thread; what a handler returns. */
int http_work_handler(struct http_ctx *ctx);
/* http_work.c: runs what is queued, then stops the threads (NULL: nothing). */
void http_work_stop(struct http_work_pool *wp);

/* http_exchange.c: answers 503 to the deferred requests past their deadline, or to all. */
void http_defer_expire(struct http_server *srv, int all);
/* http_exchange.c: the thread that expires deferred requests until srv->defer_stop. */
void *http_defer_watch(void *arg);

#endif
