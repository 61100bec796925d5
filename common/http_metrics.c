/* http_metrics: the per-route request counters and latency histograms, and /metrics' text. */
#include <stdatomic.h>
#include <stdio.h>

#include "http.h"
#include "http_internal.h"
#include "log.h"

/* Latency buckets (seconds) of the per-route histogram. */
static const double http_buckets[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                      0.05,   0.1,   0.25,   0.5,   1.0,  2.5};
#define HTTP_NBUCKETS (sizeof http_buckets / sizeof http_buckets[0])

/* Status codes counted separately; anything else falls in the last slot. */
static const int http_codes[] = {200, 201, 202, 204, 304, 400, 401, 403, 404, 405,
                                 409, 412, 413, 415, 422, 428, 429, 500, 503, 0};
#define HTTP_NCODES (sizeof http_codes / sizeof http_codes[0])

struct http_route_stats {
    atomic_ulong by_code[HTTP_NCODES];
    atomic_ulong buckets[HTTP_NBUCKETS + 1];
    atomic_ulong sum_us;
};

struct http_route_stats *http_route_stats_new(size_t nroutes)
{
    return xcalloc(nroutes + 1, sizeof(struct http_route_stats));
}

void http_account(struct http_server *srv, const struct http_ctx *ctx, long idx, double secs)
{
    struct http_route_stats *s = &srv->stats[idx < 0 ? (long)srv->nroutes : idx];
    size_t c = 0, b = 0;

    while (http_codes[c] && http_codes[c] != ctx->status_code)
        c++;
    while (b < HTTP_NBUCKETS && secs > http_buckets[b])
        b++;
    atomic_fetch_add_explicit(&s->by_code[c], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->buckets[b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->sum_us, (unsigned long)(secs * 1e6), memory_order_relaxed);

    enum log_level lvl = ctx->route && (ctx->route->flags & HTTP_QUIET) ? LOG_DEBUG : LOG_INFO;
    const char *path = ctx->route && (ctx->route->flags & HTTP_SECRET_PATH) ? ctx->route->pattern
                                                                            : ctx->req->url_path;
    if (ctx->status_code >= 500)
        lvl = LOG_ERROR;
    if (log_enabled(lvl))
        log_event(lvl, "http.request", "{s:s, s:s, s:s, s:i, s:I, s:s?}", "method",
                  ctx->req->http_verb, "path", path, "route",
                  ctx->route ? ctx->route->pattern : "-", "status", ctx->status_code, "duration_us",
                  (json_int_t)(secs * 1e6), "key_id",
                  ctx->principal.key_id[0] ? ctx->principal.key_id : NULL);
}

void http_metrics_render(const struct http_server *srv, struct buf *out)
{
    long open = 0;
    for (size_t i = 0; i < srv->nworkers; i++)
        open += atomic_load(&srv->workers[i].connections);
    buf_printf(out,
               "# HELP ptce_http_connections Client connections open.\n"
               "# TYPE ptce_http_connections gauge\n"
               "ptce_http_connections %ld\n"
               "# HELP ptce_http_connections_rejected_total Connections closed at once because "
               "the connection limit was reached.\n"
               "# TYPE ptce_http_connections_rejected_total counter\n"
               "ptce_http_connections_rejected_total %lu\n"
               "# HELP ptce_http_requests_in_flight Requests read and not yet answered.\n"
               "# TYPE ptce_http_requests_in_flight gauge\n"
               "ptce_http_requests_in_flight %ld\n"
               "# HELP ptce_http_requests_deferred Requests waiting, without a worker, for "
               "another thread's work (database work, a key look-up, a batched statement).\n"
               "# TYPE ptce_http_requests_deferred gauge\n"
               "ptce_http_requests_deferred %ld\n"
               "# HELP ptce_http_requests_deferred_expired_total Deferred requests answered 503 "
               "because their work did not come back in time (or the server stopped).\n"
               "# TYPE ptce_http_requests_deferred_expired_total counter\n"
               "ptce_http_requests_deferred_expired_total %lu\n"
               "# HELP ptce_http_rate_limited_total Requests answered 429 because their API key "
               "was over its rate limit.\n"
               "# TYPE ptce_http_rate_limited_total counter\n"
               "ptce_http_rate_limited_total %lu\n",
               open, atomic_load(&srv->rejected), atomic_load(&srv->inflight),
               atomic_load(&srv->deferred), atomic_load(&srv->defer_expired),
               atomic_load(&srv->rate_limited));
    buf_printf(out, "# HELP ptce_http_worker_connections Client connections held by each worker.\n"
                    "# TYPE ptce_http_worker_connections gauge\n");
    for (size_t i = 0; i < srv->nworkers; i++)
        buf_printf(out, "ptce_http_worker_connections{worker=\"%zu\"} %ld\n", i,
                   atomic_load(&srv->workers[i].connections));
    buf_printf(out, "# HELP ptce_http_requests_total HTTP requests by route and status.\n"
                    "# TYPE ptce_http_requests_total counter\n");
    for (size_t i = 0; i <= srv->nroutes; i++) {
        const char *route = i < srv->nroutes ? srv->routes[i].pattern : "unmatched";
        const char *method = i < srv->nroutes ? srv->routes[i].method : "";
        for (size_t c = 0; c < HTTP_NCODES; c++) {
            unsigned long n = atomic_load(&srv->stats[i].by_code[c]);
            if (n == 0)
                continue;
            if (http_codes[c])
                buf_printf(out,
                           "ptce_http_requests_total{method=\"%s\",route=\"%s\",status=\"%d\"} "
                           "%lu\n",
                           method, route, http_codes[c], n);
            else
                buf_printf(out,
                           "ptce_http_requests_total{method=\"%s\",route=\"%s\",status=\"other\"}"
                           " %lu\n",
                           method, route, n);
        }
    }
    buf_printf(out, "# HELP ptce_http_request_duration_seconds Request latency by route.\n"
                    "# TYPE ptce_http_request_duration_seconds histogram\n");
    for (size_t i = 0; i <= srv->nroutes; i++) {
        const char *route = i < srv->nroutes ? srv->routes[i].pattern : "unmatched";
        const char *method = i < srv->nroutes ? srv->routes[i].method : "";
        unsigned long cum = 0;
        for (size_t b = 0; b <= HTTP_NBUCKETS; b++) {
            cum += atomic_load(&srv->stats[i].buckets[b]);
            if (b < HTTP_NBUCKETS)
                buf_printf(out,
                           "ptce_http_request_duration_seconds_bucket{method=\"%s\",route=\"%s\","
                           "le=\"%g\"} %lu\n",
                           method, route, http_buckets[b], cum);
            else
                buf_printf(out,
                           "ptce_http_request_duration_seconds_bucket{method=\"%s\",route=\"%s\","
                           "le=\"+Inf\"} %lu\n",
                           method, route, cum);
        }
        buf_printf(out,
                   "ptce_http_request_duration_seconds_sum{method=\"%s\",route=\"%s\"} %.6f\n"
                   "ptce_http_request_duration_seconds_count{method=\"%s\",route=\"%s\"} %lu\n",
                   method, route, (double)atomic_load(&srv->stats[i].sum_us) / 1e6, method, route,
                   cum);
    }
}
