/* http_internal: what the files of the http module share; nothing here is for the services. */
#ifndef PTCE_HTTP_INTERNAL_H
#define PTCE_HTTP_INTERNAL_H

#include <microhttpd.h>
#include <stdatomic.h>

#include "http.h"

/*
 * One worker: a one-thread MHD daemon with its own epoll set and no listening socket. The
 * acceptor hands it connections; `connections` counts those it holds.
 */
struct http_worker {
    struct MHD_Daemon *daemon;
    atomic_long connections;
};

/* http.c: routes the request in ctx (req and res set), runs its handler; the route or -1. */
long http_dispatch(struct http_server *srv, struct http_ctx *ctx, char names[][32]);
/* http.c: the zeroed figures of nroutes routes and of the unmatched requests; free() them. */
struct http_route_stats *http_route_stats_new(size_t nroutes);
/* http.c: counts and logs an answered request. */
void http_account(struct http_server *srv, const struct http_ctx *ctx, long idx, double secs);
/* http.c: 1 when content_type names media (parameters ignored). */
int http_media_is(const char *content_type, const char *media);

/* http_exchange.c: libmicrohttpd's callbacks, given to each worker's daemon. */
enum MHD_Result http_access(void *cls, struct MHD_Connection *conn, const char *url,
                            const char *method, const char *version, const char *upload_data,
                            size_t *upload_data_size, void **con_cls);
void *http_uri_log(void *cls, const char *uri, struct MHD_Connection *conn);
void http_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                    enum MHD_RequestTerminationCode toe);
/* http_exchange.c: answers 503 to the deferred requests past their deadline, or to all. */
void http_defer_expire(struct http_server *srv, int all);
/* http_exchange.c: the thread that expires deferred requests until srv->defer_stop. */
void *http_defer_watch(void *arg);

#endif
