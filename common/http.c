/*
 * http: workers that drive libmicrohttpd, one dispatcher that routes, limits, authenticates and
 * measures, and answers that wait for another thread without holding a worker.
 */
#define _GNU_SOURCE /* accept4(2) */
#include "http.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <microhttpd.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
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

static int http_reply_problem_v(struct http_ctx *ctx, enum status st, json_t *errors,
                                json_t *members, const char *fmt, va_list ap)
{
    char detail[512], type[96];
    int code = status_http_code(st);

    vsnprintf(detail, sizeof detail, fmt, ap);
    snprintf(type, sizeof type, PROBLEM_TYPE_PREFIX "%s", status_strerror(st));
    json_t *p = json_pack("{s:s, s:s, s:i, s:s, s:s, s:s}", "type", type, "title", status_title(st),
                          "status", code, "detail", detail, "instance", ctx->req->url_path,
                          "request_id", ctx->request_id);
    if (errors)
        json_object_set_new(p, "errors", errors);
    if (members)
        json_object_update_missing_new(p, members); /* the standard members win */
    if (st == STATUS_UNAVAILABLE || st == STATUS_RETRY || st == STATUS_RATE_LIMITED) {
        if (!u_map_has_key(ctx->res->map_header, "Retry-After"))
            u_map_put(ctx->res->map_header, "Retry-After", "1");
    }
    if (st == STATUS_UNAUTHORIZED)
        u_map_put(ctx->res->map_header, "WWW-Authenticate", "Bearer realm=\"ptce\"");
    char *text = json_dumps(p, JSON_COMPACT);
    json_decref(p);
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

static int http_media_is(const char *content_type, const char *media)
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

static double http_elapsed(const struct timespec *start)
{
    struct timespec now;

    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - start->tv_sec) + (double)(now.tv_nsec - start->tv_nsec) / 1e9;
}

static void http_account(struct http_server *srv, const struct http_ctx *ctx, long idx, double secs)
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

/* ---- one request on a worker ---- */

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
    http_handler_fn resume; /* set while the answer is deferred */
    void *state;
    void (*free_state)(void *);
};

int http_defer(struct http_ctx *ctx, http_handler_fn resume, void *state,
               void (*free_state)(void *))
{
    struct http_exchange *x = ctx->x;

    x->resume = resume;
    x->state = state;
    x->free_state = free_state;
    atomic_fetch_add(&x->srv->deferred, 1);
    /* allowed here: the worker is inside its access handler */
    MHD_suspend_connection(x->conn);
    return U_CALLBACK_COMPLETE;
}

void http_resume(struct http_ctx *ctx)
{
    MHD_resume_connection(ctx->x->conn);
}

void *http_state(const struct http_ctx *ctx)
{
    return ctx->x->state;
}

/* Routes the request and runs its handler, which answers or defers. */
static void http_begin(struct http_exchange *x)
{
    struct http_server *srv = x->srv;
    struct http_ctx *ctx = &x->ctx;
    struct buf allow;
    int path_matched;

    clock_gettime(CLOCK_MONOTONIC, &x->start);
    ctx->req = &x->req;
    ctx->res = &x->res;
    ctx->app = srv->app;
    ctx->x = x;
    const char *rid = u_map_get_case(x->req.map_header, "X-Request-Id");
    if (rid && http_request_id_valid(rid))
        snprintf(ctx->request_id, sizeof ctx->request_id, "%s", rid);
    else
        uuid_new(ctx->request_id);
    log_set_request_id(ctx->request_id);
    u_map_put(x->res.map_header, "X-Request-Id", ctx->request_id);

    buf_init(&allow, 256);
    x->idx = http_route_find(srv, x->req.http_verb, ctx, &path_matched, &allow, x->names);
    http_run(srv, ctx, x->idx, path_matched, allow.data ? allow.data : "");
    buf_free(&allow);
}

/* Sends what the handler answered, and counts and logs the request. */
static enum MHD_Result http_answer(struct http_exchange *x)
{
    struct http_ctx *ctx = &x->ctx;

    if (ctx->status_code == 0)
        http_reply_problem(ctx, STATUS_INTERNAL, "the handler gave no answer");
    http_account(x->srv, ctx, x->idx, http_elapsed(&x->start));
    log_set_request_id(NULL);

    /* the body goes to MHD as it is, and is freed by it */
    struct MHD_Response *r = MHD_create_response_from_buffer_with_free_callback(
        x->res.binary_body_length, x->res.binary_body, free);
    if (!r)
        return MHD_NO;
    x->res.binary_body = NULL;
    x->res.binary_body_length = 0;
    const char **keys = u_map_enum_keys(x->res.map_header);
    for (size_t i = 0; keys && keys[i]; i++)
        MHD_add_response_header(r, keys[i], u_map_get(x->res.map_header, keys[i]));
    enum MHD_Result ret = MHD_queue_response(x->conn, (unsigned)x->res.status, r);
    MHD_destroy_response(r);
    return ret;
}

/*
 * Puts a header or query value in map; like ulfius, drops what is not UTF-8 and joins the values
 * of a repeated name with commas.
 */
static enum MHD_Result http_fill_map(void *cls, enum MHD_ValueKind kind, const char *key,
                                     const char *value)
{
    (void)kind;
    struct _u_map *map = cls;

    if (!value)
        value = "";
    if (!utf8_valid(key, strlen(key)) || !utf8_valid(value, strlen(value)))
        return MHD_YES;
    const char *had = u_map_get(map, key);
    if (!had) {
        u_map_put(map, key, value);
        return MHD_YES;
    }
    struct buf b;
    buf_init(&b, strlen(had) + strlen(value) + 2);
    buf_printf(&b, "%s,%s", had, value);
    u_map_put(map, key, b.data);
    buf_free(&b);
    return MHD_YES;
}

/* One field of a form body, possibly in pieces (off > 0 continues the value). */
static enum MHD_Result http_form_field(void *cls, enum MHD_ValueKind kind, const char *key,
                                       const char *filename, const char *content_type,
                                       const char *transfer_encoding, const char *data,
                                       uint64_t off, size_t size)
{
    (void)kind;
    (void)filename;
    (void)content_type;
    (void)transfer_encoding;
    struct _u_map *map = cls;

    if (!utf8_valid(key, strlen(key)) || (size && !utf8_valid(data, size)))
        return MHD_YES;
    ssize_t had = u_map_get_length(map, key);
    if (had < 0)
        u_map_put_binary(map, key, data, 0, size);
    else if (off)
        u_map_put_binary(map, key, data, (uint64_t)had, size);
    else {
        /* a repeated field: values joined with commas, as for headers */
        u_map_put_binary(map, key, ",", (uint64_t)had, 1);
        u_map_put_binary(map, key, data, (uint64_t)had + 1, size);
    }
    return MHD_YES;
}

/* Headers read: fills the request object. */
static void http_request_start(struct http_exchange *x, const char *method, const char *version)
{
    struct _u_request *req = &x->req;
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(x->conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);

    req->http_verb = xstrdup(method);
    req->http_protocol = xstrdup(version);
    if (ci && ci->client_addr) {
        req->client_address = xmalloc(sizeof(struct sockaddr));
        memcpy(req->client_address, ci->client_addr, sizeof(struct sockaddr));
    }
    MHD_get_connection_values(x->conn, MHD_HEADER_KIND, http_fill_map, req->map_header);
    MHD_get_connection_values(x->conn, MHD_GET_ARGUMENT_KIND, http_fill_map, req->map_url);
    if (http_media_is(u_map_get_case(req->map_header, "Content-Type"),
                      "application/x-www-form-urlencoded"))
        x->post = MHD_create_post_processor(x->conn, 16384, http_form_field, req->map_post_body);
}

/*
 * Keeps body bytes up to one past the limit: enough for the dispatcher to see that the body was
 * longer and answer 413, while what follows is read and dropped.
 */
static void http_request_body(struct http_exchange *x, const char *data, size_t size)
{
    struct _u_request *req = &x->req;
    size_t room = x->srv->body_limit + 1 - req->binary_body_length;
    size_t n = size < room ? size : room;

    if (n) {
        req->binary_body = xrealloc(req->binary_body, req->binary_body_length + n);
        memcpy((char *)req->binary_body + req->binary_body_length, data, n);
        req->binary_body_length += n;
    }
    if (x->post && req->binary_body_length <= x->srv->body_limit)
        MHD_post_process(x->post, data, size);
}

static enum MHD_Result http_access(void *cls, struct MHD_Connection *conn, const char *url,
                                   const char *method, const char *version, const char *upload_data,
                                   size_t *upload_data_size, void **con_cls)
{
    (void)cls;
    (void)conn; /* the exchange has it, from the request line */
    (void)url;  /* decoded by MHD: routes match the path as it was sent */
    struct http_exchange *x = *con_cls;

    if (!x)
        return MHD_NO;
    if (!x->started) {
        x->started = 1;
        http_request_start(x, method, version);
        return MHD_YES;
    }
    if (*upload_data_size) {
        http_request_body(x, upload_data, *upload_data_size);
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (!x->dispatched) {
        x->dispatched = 1;
        http_begin(x);
        if (x->resume) {
            log_set_request_id(NULL);
            return MHD_YES; /* suspended: called again once resumed */
        }
    } else if (x->resume) {
        http_handler_fn resume = x->resume;
        x->resume = NULL;
        log_set_request_id(x->ctx.request_id);
        resume(&x->ctx);
        atomic_fetch_sub(&x->srv->deferred, 1);
    }
    return http_answer(x);
}

/* The request line is read: the exchange starts, with the path as the client sent it. */
static void *http_uri_log(void *cls, const char *uri, struct MHD_Connection *conn)
{
    struct http_exchange *x = xcalloc(1, sizeof *x);

    x->srv = cls;
    x->conn = conn;
    x->idx = -1;
    atomic_fetch_add(&x->srv->inflight, 1);
    ulfius_init_request(&x->req);
    ulfius_init_response(&x->res);
    x->req.http_url = xstrdup(uri);
    x->req.url_path = xstrndup(uri, strcspn(uri, "?"));
    return x;
}

static void http_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                           enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)conn;
    (void)toe;
    struct http_exchange *x = *con_cls;

    if (!x)
        return;
    if (x->post)
        MHD_destroy_post_processor(x->post);
    if (x->free_state)
        x->free_state(x->state);
    json_decref(x->ctx.body);
    ulfius_clean_request(&x->req);
    ulfius_clean_response(&x->res);
    atomic_fetch_sub(&x->srv->inflight, 1);
    free(x);
    *con_cls = NULL;
}

/* ---- server life ---- */

/*
 * One worker: a one-thread MHD daemon with its own epoll set and no listening socket. The
 * acceptor hands it connections; `connections` counts those it holds.
 */
struct http_worker {
    struct MHD_Daemon *daemon;
    atomic_long connections;
};

static void http_connection_notify(void *cls, struct MHD_Connection *connection,
                                   void **socket_context, enum MHD_ConnectionNotificationCode toe)
{
    (void)connection;
    (void)socket_context;
    struct http_worker *w = cls;
    if (toe == MHD_CONNECTION_NOTIFY_CLOSED)
        atomic_fetch_sub(&w->connections, 1);
}

/*
 * Gives a new connection to the worker holding the fewest. MHD's own thread pool lets every
 * thread race for accept(2), and a burst of connections lands unevenly: a thread with twice its
 * share serves each of its clients twice as slowly, which is what the tail latency shows.
 */
static void http_assign(struct http_server *srv, int fd, const struct sockaddr *addr,
                        socklen_t addrlen)
{
    long total = 0, least = LONG_MAX;
    size_t pick = 0;
    for (size_t k = 0; k < srv->nworkers; k++) {
        size_t i = (srv->next_worker + k) % srv->nworkers;
        long n = atomic_load(&srv->workers[i].connections);
        total += n;
        if (n < least) {
            least = n;
            pick = i;
        }
    }
    if (total >= srv->connection_limit) {
        atomic_fetch_add(&srv->rejected, 1);
        close(fd);
        return;
    }
    srv->next_worker = pick + 1 < srv->nworkers ? pick + 1 : 0;
    struct http_worker *w = &srv->workers[pick];
    atomic_fetch_add(&w->connections, 1);
    /* MHD owns the socket from here, and closes it itself on failure. */
    if (MHD_add_connection(w->daemon, fd, addr, addrlen) != MHD_YES) {
        atomic_fetch_sub(&w->connections, 1);
        log_event(LOG_WARN, "http.add_connection_failed", "{s:s}", "error", strerror(errno));
    }
}

static void *http_acceptor(void *arg)
{
    struct http_server *srv = arg;
    struct pollfd fds[2] = {{.fd = srv->listen_fd, .events = POLLIN},
                            {.fd = srv->wake_fd, .events = POLLIN}};
    for (;;) {
        if (poll(fds, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            log_event(LOG_ERROR, "http.poll_failed", "{s:s}", "error", strerror(errno));
            return NULL;
        }
        if (fds[1].revents)
            return NULL;
        for (;;) {
            struct sockaddr_storage ss;
            socklen_t sl = sizeof ss;
            int fd =
                accept4(srv->listen_fd, (struct sockaddr *)&ss, &sl, SOCK_CLOEXEC | SOCK_NONBLOCK);
            if (fd >= 0) {
                http_assign(srv, fd, (struct sockaddr *)&ss, sl);
                continue;
            }
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK) {
                /* Out of descriptors or memory: the backlog keeps the clients; try again soon. */
                log_event(LOG_WARN, "http.accept_failed", "{s:s}", "error", strerror(errno));
                clock_sleep_ms(50);
            }
            break;
        }
    }
}

/* The listening socket in *fd: STATUS_INVALID for a bad address, UNAVAILABLE if it is taken. */
static enum status http_listen(const struct http_server_config *cfg, int *out)
{
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)cfg->port)};
    if (inet_pton(AF_INET, cfg->bind, &addr.sin_addr) != 1) {
        log_event(LOG_ERROR, "http.bad_bind_address", "{s:s}", "bind", cfg->bind);
        return STATUS_INVALID;
    }
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    int on = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on) != 0 ||
        bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(fd, 1024) != 0) {
        log_event(LOG_ERROR, "http.listen_failed", "{s:s, s:i, s:s}", "bind", cfg->bind, "port",
                  (int)cfg->port, "error", strerror(errno));
        if (fd >= 0)
            close(fd);
        return STATUS_UNAVAILABLE;
    }
    *out = fd;
    return STATUS_OK;
}

static enum status http_worker_start(struct http_server *srv, struct http_worker *w,
                                     const struct http_server_config *cfg)
{
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME |
                     MHD_USE_NO_LISTEN_SOCKET | MHD_USE_ERROR_LOG;
    w->daemon = MHD_start_daemon(
        flags, 0, NULL, NULL, http_access, srv, MHD_OPTION_NOTIFY_COMPLETED, http_completed, srv,
        MHD_OPTION_NOTIFY_CONNECTION, http_connection_notify, w, MHD_OPTION_URI_LOG_CALLBACK,
        http_uri_log, srv, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)cfg->timeout_s,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)cfg->connection_limit, MHD_OPTION_END);
    return w->daemon ? STATUS_OK : STATUS_INTERNAL;
}

static void http_workers_stop(struct http_server *srv)
{
    /*
     * Requests under way are finished and their answers sent, for up to 10 s; idle keep-alive
     * connections hold nothing. MHD must not stop with a suspended connection at all: deferred
     * requests are waited for 30 s more (whoever resumes them is still running).
     */
    for (int waited = 0; atomic_load(&srv->inflight) > 0 && waited < 10000; waited++)
        clock_sleep_ms(1);
    for (int waited = 0; atomic_load(&srv->deferred) > 0 && waited < 30000; waited++)
        clock_sleep_ms(1);
    if (atomic_load(&srv->deferred) > 0)
        log_event(LOG_ERROR, "http.stop_with_deferred_requests", "{s:I}", "deferred",
                  (json_int_t)atomic_load(&srv->deferred));
    for (size_t i = 0; i < srv->nworkers; i++) {
        if (srv->workers[i].daemon)
            MHD_stop_daemon(srv->workers[i].daemon);
    }
    free(srv->workers);
    srv->workers = NULL;
}

enum status http_server_start(struct http_server *srv, const struct http_server_config *cfg,
                              const struct http_route *routes, size_t nroutes, void *app,
                              struct auth *auth)
{
    memset(srv, 0, sizeof *srv);
    srv->listen_fd = srv->wake_fd = -1;
    srv->routes = routes;
    srv->nroutes = nroutes;
    srv->app = app;
    srv->auth = auth;
    srv->body_limit = (size_t)cfg->body_limit;
    srv->connection_limit = cfg->connection_limit;
    srv->nworkers = cfg->threads > 0 ? (size_t)cfg->threads : 1;
    srv->stats = xcalloc(nroutes + 1, sizeof *srv->stats);
    srv->workers = xcalloc(srv->nworkers, sizeof *srv->workers);

    enum status st = http_listen(cfg, &srv->listen_fd);
    if (st != STATUS_OK)
        goto fail;
    srv->wake_fd = eventfd(0, EFD_CLOEXEC);
    if (srv->wake_fd < 0) {
        st = STATUS_INTERNAL;
        goto fail;
    }
    for (size_t i = 0; i < srv->nworkers; i++) {
        st = http_worker_start(srv, &srv->workers[i], cfg);
        if (st != STATUS_OK) {
            log_event(LOG_ERROR, "http.start_failed", "{s:i}", "worker", (int)i);
            goto fail;
        }
    }
    if (pthread_create(&srv->acceptor, NULL, http_acceptor, srv) != 0) {
        st = STATUS_INTERNAL;
        goto fail;
    }
    log_event(LOG_INFO, "http.listening", "{s:s, s:i, s:i}", "bind", cfg->bind, "port",
              (int)cfg->port, "threads", (int)srv->nworkers);
    return STATUS_OK;

fail:
    http_workers_stop(srv);
    if (srv->listen_fd >= 0)
        close(srv->listen_fd);
    if (srv->wake_fd >= 0)
        close(srv->wake_fd);
    free(srv->stats);
    srv->stats = NULL;
    return st;
}

void http_server_stop(struct http_server *srv)
{
    if (!srv->stats)
        return;
    /* Stop accepting first, then let each worker finish what it is serving. */
    uint64_t one = 1;
    if (write(srv->wake_fd, &one, sizeof one) != (ssize_t)sizeof one)
        log_event(LOG_ERROR, "http.stop_signal_failed", "{s:s}", "error", strerror(errno));
    pthread_join(srv->acceptor, NULL);
    close(srv->listen_fd);
    close(srv->wake_fd);
    http_workers_stop(srv);
    free(srv->stats);
    srv->stats = NULL;
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
               "ptce_http_requests_deferred %ld\n",
               open, atomic_load(&srv->rejected), atomic_load(&srv->inflight),
               atomic_load(&srv->deferred));
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
