/*
 * http: the dispatcher that routes, limits, authenticates and measures a request, the answers
 * handlers give, and the figures of /metrics. The workers that drive libmicrohttpd are in
 * http_exchange.c (one request) and http_server.c (accepting, starting, stopping).
 */
#include "http.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "http_internal.h"
#include "log.h"
#include "utf8.h"
#include "uuid.h"

#define PROBLEM_TYPE_PREFIX "urn:ptce:problem:"

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

/* ---- small accessors ---- */

const char *http_param(const struct http_ctx *ctx, const char *name)
{
    for (int i = 0; i < ctx->nparams; i++) {
        if (strcmp(ctx->param_names[i], name) == 0)
            return ctx->params[i];
    }
    return NULL;
}

const char *http_query(const struct http_ctx *ctx, const char *name)
{
    return u_map_get(ctx->req->map_url, name);
}

const char *http_form(const struct http_ctx *ctx, const char *name)
{
    return u_map_get(ctx->req->map_post_body, name);
}

const char *http_header(const struct http_ctx *ctx, const char *name)
{
    return u_map_get_case(ctx->req->map_header, name);
}

void http_set_header(struct http_ctx *ctx, const char *name, const char *value)
{
    u_map_put(ctx->res->map_header, name, value);
}

/* ---- replies ---- */

int http_reply_raw(struct http_ctx *ctx, int code, const char *content_type, const char *data,
                   size_t len)
{
    ctx->status_code = code;
    ctx->res->status = code;
    if (content_type)
        u_map_put(ctx->res->map_header, "Content-Type", content_type);
    ulfius_set_binary_body_response(ctx->res, (unsigned)code, data, len);
    return U_CALLBACK_COMPLETE;
}

int http_reply_json(struct http_ctx *ctx, int code, json_t *body)
{
    char *text = json_dumps(body, JSON_COMPACT);

    json_decref(body);
    if (!text) {
        static const char fallback[] = "{\"title\":\"Internal error\",\"status\":500}";
        return http_reply_raw(ctx, 500, "application/problem+json", fallback, sizeof fallback - 1);
    }
    int rc = http_reply_raw(ctx, code, "application/json", text, strlen(text));
    free(text);
    return rc;
}

void http_field_error(json_t *errors, const char *field, const char *message)
{
    json_array_append_new(errors, json_pack("{s:s, s:s}", "field", field, "message", message));
}

/*
 * Copies text into out as valid UTF-8: jansson refuses anything else, and a path or a detail
 * may hold any byte the client sent. A byte that starts no valid sequence becomes "%XX", as in
 * a URI; a sequence cut short at the end of the text is such bytes too.
 */
static void http_text_clean(const char *text, struct buf *out)
{
    const unsigned char *p = (const unsigned char *)text;

    while (*p) {
        size_t n = utf8_sequence(p);
        if (n) {
            buf_append(out, (const char *)p, n);
            p += n;
            continue;
        }
        buf_printf(out, "%%%02X", *p);
        p++;
    }
}

static int http_reply_problem_v(struct http_ctx *ctx, enum status st, json_t *errors,
                                json_t *members, const char *fmt, va_list ap)
{
    static const char fallback[] = "{\"type\":\"" PROBLEM_TYPE_PREFIX "internal\","
                                   "\"title\":\"Internal error\",\"status\":500}";
    char raw[512], type[96];
    struct buf detail, instance;
    int code = status_http_code(st);

    vsnprintf(raw, sizeof raw, fmt, ap);
    buf_init(&detail, 0);
    buf_init(&instance, 0);
    http_text_clean(raw, &detail);
    http_text_clean(ctx->req->url_path ? ctx->req->url_path : "", &instance);
    snprintf(type, sizeof type, PROBLEM_TYPE_PREFIX "%s", status_strerror(st));
    json_t *p = json_pack("{s:s, s:s, s:i, s:s, s:s, s:s}", "type", type, "title", status_title(st),
                          "status", code, "detail", detail.data ? detail.data : "", "instance",
                          instance.data ? instance.data : "", "request_id", ctx->request_id);
    buf_free(&detail);
    buf_free(&instance);
    if (p && errors)
        json_object_set_new(p, "errors", errors);
    else
        json_decref(errors);
    if (p && members)
        json_object_update_missing_new(p, members); /* the standard members win */
    else
        json_decref(members);
    if (st == STATUS_UNAVAILABLE || st == STATUS_RETRY || st == STATUS_RATE_LIMITED) {
        if (!u_map_has_key(ctx->res->map_header, "Retry-After"))
            u_map_put(ctx->res->map_header, "Retry-After", "1");
    }
    if (st == STATUS_UNAUTHORIZED)
        u_map_put(ctx->res->map_header, "WWW-Authenticate", "Bearer realm=\"ptce\"");
    char *text = p ? json_dumps(p, JSON_COMPACT) : NULL;
    json_decref(p);
    if (!text) /* out of memory, or a field error that was not UTF-8 */
        return http_reply_raw(ctx, 500, "application/problem+json", fallback, sizeof fallback - 1);
    int rc = http_reply_raw(ctx, code, "application/problem+json", text, strlen(text));
    free(text);
    return rc;
}

int http_reply_problem(struct http_ctx *ctx, enum status st, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    int rc = http_reply_problem_v(ctx, st, NULL, NULL, fmt, ap);
    va_end(ap);
    return rc;
}

int http_reply_problem_fields(struct http_ctx *ctx, enum status st, json_t *errors, const char *fmt,
                              ...)
{
    va_list ap;

    va_start(ap, fmt);
    int rc = http_reply_problem_v(ctx, st, errors, NULL, fmt, ap);
    va_end(ap);
    return rc;
}

int http_reply_problem_members(struct http_ctx *ctx, enum status st, json_t *members,
                               const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    int rc = http_reply_problem_v(ctx, st, NULL, members, fmt, ap);
    va_end(ap);
    return rc;
}

json_t *http_json_parse_object(const char *data, size_t len, char *why, size_t whylen)
{
    json_error_t err;
    json_t *v;

    if (!data || len == 0) {
        snprintf(why, whylen, "the request body is empty; a JSON object is expected");
        return NULL;
    }
    v = json_loadb(data, len, JSON_REJECT_DUPLICATES, &err);
    if (!v) {
        snprintf(why, whylen, "malformed JSON at line %d, column %d: %s", err.line, err.column,
                 err.text);
        return NULL;
    }
    if (!json_is_object(v)) {
        snprintf(why, whylen, "the body must be a JSON object");
        json_decref(v);
        return NULL;
    }
    return v;
}

/* ---- routing ---- */

/* Where the parameters of a matched path are: offsets and lengths into the path. */
struct http_match {
    size_t off[HTTP_MAX_PARAMS];
    size_t len[HTTP_MAX_PARAMS];
    const char *names[HTTP_MAX_PARAMS]; /* into the pattern: "id}/…" */
    int n;
};

/* Matches path against pattern without writing anything; 1 on a match, m then filled. */
static int http_route_match(const char *pattern, const char *path, struct http_match *m)
{
    const char *p = pattern, *s = path;

    m->n = 0;
    while (*p && *s) {
        if (*p == '{') {
            const char *close = strchr(p, '}');
            size_t n = strcspn(s, "/");
            if (!close || n == 0 || m->n == HTTP_MAX_PARAMS)
                return 0;
            m->off[m->n] = (size_t)(s - path);
            m->len[m->n] = n;
            m->names[m->n++] = p + 1;
            p = close + 1;
            s += n;
            continue;
        }
        if (*p != *s)
            return 0;
        p++;
        s++;
    }
    return *p == '\0' && (*s == '\0' || (*s == '/' && s[1] == '\0'));
}

/*
 * Gives the chosen route's parameters to ctx: the path is copied once into ctx->path with each
 * parameter NUL-terminated in place, and the names are copied out of the pattern.
 */
static void http_params_set(struct http_ctx *ctx, const struct http_match *m, char names[][32])
{
    snprintf(ctx->path, sizeof ctx->path, "%s", ctx->req->url_path);
    ctx->nparams = m->n;
    for (int i = 0; i < m->n; i++) {
        ctx->path[m->off[i] + m->len[i]] = '\0';
        ctx->params[i] = ctx->path + m->off[i];
        size_t n = strcspn(m->names[i], "}");
        snprintf(names[i], 32, "%.*s", (int)n, m->names[i]);
        ctx->param_names[i] = names[i];
    }
}

/* Finds the route; *path_matched tells a 405 from a 404. Returns the index or -1. */
static long http_route_find(const struct http_server *srv, const char *method, struct http_ctx *ctx,
                            int *path_matched, struct buf *allow, char names[][32])
{
    struct http_match m;

    *path_matched = 0;
    if (strlen(ctx->req->url_path) >= sizeof ctx->path)
        return -1; /* longer than any route: parameters could not point into ctx->path */
    for (size_t i = 0; i < srv->nroutes; i++) {
        const struct http_route *r = &srv->routes[i];
        if (!http_route_match(r->pattern, ctx->req->url_path, &m))
            continue;
        if (strcmp(r->method, method) == 0 ||
            (strcmp(method, "HEAD") == 0 && strcmp(r->method, "GET") == 0)) {
            http_params_set(ctx, &m, names);
            return (long)i;
        }
        *path_matched = 1;
        buf_printf(allow, "%s%s", allow->len ? ", " : "", r->method);
    }
    return -1;
}

/* ---- the request pipeline ---- */

static int http_request_id_valid(const char *s)
{
    size_t n = 0;

    for (; s[n]; n++) {
        char c = s[n];
        if (n >= HTTP_REQUEST_ID_LEN ||
            !(isalnum((unsigned char)c) || c == '-' || c == '_' || c == '.' || c == ':'))
            return 0;
    }
    return n > 0;
}

int http_media_is(const char *content_type, const char *media)
{
    size_t n = strlen(media);

    if (!content_type || strncasecmp(content_type, media, n) != 0)
        return 0;
    return content_type[n] == '\0' || content_type[n] == ';' || content_type[n] == ' ';
}

/* Content-Type and body checks of a route; answers the problem itself when they fail. */
static int http_check_body(struct http_server *srv, struct http_ctx *ctx, int *answered)
{
    const struct _u_request *req = ctx->req;
    const char *ct = http_header(ctx, "Content-Type");
    char why[256];

    *answered = 1;
    if (req->binary_body_length > srv->body_limit)
        return http_reply_problem(ctx, STATUS_TOO_LARGE, "the body exceeds %zu bytes",
                                  srv->body_limit);
    if (ctx->route->flags & HTTP_BODY_JSON) {
        if (!http_media_is(ct, "application/json"))
            return http_reply_problem(ctx, STATUS_UNSUPPORTED_MEDIA,
                                      "Content-Type must be application/json");
        ctx->body =
            http_json_parse_object(req->binary_body, req->binary_body_length, why, sizeof why);
        if (!ctx->body)
            return http_reply_problem(ctx, STATUS_INVALID, "%s", why);
    } else if (ctx->route->flags & HTTP_BODY_FORM) {
        if (req->binary_body_length > 0 && !http_media_is(ct, "application/x-www-form-urlencoded"))
            return http_reply_problem(ctx, STATUS_UNSUPPORTED_MEDIA,
                                      "Content-Type must be application/x-www-form-urlencoded");
    }
    *answered = 0;
    return U_CALLBACK_COMPLETE;
}

static int http_run(struct http_server *srv, struct http_ctx *ctx, long idx, int path_matched,
                    const char *allow)
{
    const char *method = ctx->req->http_verb;
    int answered;

    if (idx < 0 && path_matched) {
        http_set_header(ctx, "Allow", allow);
        return http_reply_problem(ctx, STATUS_METHOD_NOT_ALLOWED,
                                  "%s is not allowed here; allowed: %s", method, allow);
    }
    if (idx < 0)
        return http_reply_problem(ctx, STATUS_NOT_FOUND, "no such resource: %s",
                                  ctx->req->url_path);
    ctx->route = &srv->routes[idx];
    if (ctx->route->roles) {
        enum status st = srv->auth ? auth_authenticate(srv->auth, http_header(ctx, "Authorization"),
                                                       &ctx->principal)
                                   : STATUS_UNAUTHORIZED;
        if (st == STATUS_UNAUTHORIZED)
            return http_reply_problem(ctx, st,
                                      "a valid API key is required (Authorization: "
                                      "Bearer <key>)");
        if (st != STATUS_OK)
            return http_reply_problem(ctx, st, "cannot check the API key right now");
        if (!(ctx->route->roles & ctx->principal.role))
            return http_reply_problem(ctx, STATUS_FORBIDDEN, "role %s may not do this",
                                      auth_role_name(ctx->principal.role));
    }
    int rc = http_check_body(srv, ctx, &answered);
    if (answered)
        return rc;
    return ctx->route->handler(ctx);
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

long http_dispatch(struct http_server *srv, struct http_ctx *ctx, char names[][32])
{
    struct buf allow;
    int path_matched;

    ctx->app = srv->app;
    const char *rid = u_map_get_case(ctx->req->map_header, "X-Request-Id");
    if (rid && http_request_id_valid(rid))
        snprintf(ctx->request_id, sizeof ctx->request_id, "%s", rid);
    else
        uuid_new(ctx->request_id);
    log_set_request_id(ctx->request_id);
    u_map_put(ctx->res->map_header, "X-Request-Id", ctx->request_id);

    buf_init(&allow, 256);
    long idx = http_route_find(srv, ctx->req->http_verb, ctx, &path_matched, &allow, names);
    http_run(srv, ctx, idx, path_matched, allow.data ? allow.data : "");
    buf_free(&allow);
    return idx;
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
               "another thread's work (a batched statement).\n"
               "# TYPE ptce_http_requests_deferred gauge\n"
               "ptce_http_requests_deferred %ld\n"
               "# HELP ptce_http_requests_deferred_expired_total Deferred requests answered 503 "
               "because their work did not come back in time (or the server stopped).\n"
               "# TYPE ptce_http_requests_deferred_expired_total counter\n"
               "ptce_http_requests_deferred_expired_total %lu\n",
               open, atomic_load(&srv->rejected), atomic_load(&srv->inflight),
               atomic_load(&srv->deferred), atomic_load(&srv->defer_expired));
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
