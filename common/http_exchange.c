/*
 * http_exchange: one request on its worker, from its first line to its answer — libmicrohttpd's
 * callbacks fill ulfius's request object, run the dispatcher, send the answer — and the answers
 * deferred to another thread, with their deadline.
 */
#include <arpa/inet.h>
#include <microhttpd.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "http.h"
#include "http_internal.h"
#include "log.h"
#include "utf8.h"

static void http_exchange_unref(struct http_exchange *x)
{
    if (atomic_fetch_sub(&x->refs, 1) != 1)
        return;
    if (x->free_state)
        x->free_state(x->state);
    json_decref(x->ctx.body);
    ulfius_clean_request(&x->req);
    ulfius_clean_response(&x->res);
    free(x);
}

/* The list x waits in: its address picks it (the low bits are the allocator's alignment). */
static struct http_defer_shard *http_defer_shard_of(struct http_server *srv,
                                                    const struct http_exchange *x)
{
    return &srv->defer_shards[((uintptr_t)x >> 6) % HTTP_DEFER_SHARDS];
}

/* Takes x out of its waiting list; the caller holds that list's lock. */
static void http_defer_unlink(struct http_defer_shard *sh, struct http_exchange *x)
{
    if (x->dprev)
        x->dprev->dnext = x->dnext;
    else
        sh->head = x->dnext;
    if (x->dnext)
        x->dnext->dprev = x->dprev;
    x->dprev = x->dnext = NULL;
}

/*
 * Whether `to` (RESUMED or EXPIRED) wins the race for a waiting request; 0 if another thread won
 * first. Only the winner unlinks it and wakes its worker. The connection stays suspended, and so
 * the exchange alive, until that MHD_resume_connection, which is called with no lock held: it
 * writes to the worker's wake-up descriptor, and a thread preempted there by the worker it woke
 * kept every other request of its list from being deferred or resumed.
 */
static int http_defer_win(struct http_exchange *x, int to)
{
    int expected = HTTP_DEFER_WAITING;

    return atomic_compare_exchange_strong(&x->defer_state, &expected, to);
}

/* Expires the waiting requests past their deadline, or all of them (a stop). */
void http_defer_expire(struct http_server *srv, int all)
{
    struct timespec now;

    clock_gettime(CLOCK_MONOTONIC, &now);
    for (size_t i = 0; i < HTTP_DEFER_SHARDS; i++) {
        struct http_defer_shard *sh = &srv->defer_shards[i];
        struct http_exchange *expired = NULL; /* linked by dnext once out of the list */
        pthread_mutex_lock(&sh->lock);
        struct http_exchange *x = sh->head;
        while (x) {
            struct http_exchange *next = x->dnext;
            int due = !clock_ts_before(&now, &x->deadline);
            if ((all || due) && http_defer_win(x, HTTP_DEFER_EXPIRED)) {
                http_defer_unlink(sh, x);
                x->dnext = expired;
                expired = x;
            }
            x = next;
        }
        pthread_mutex_unlock(&sh->lock);
        while (expired) {
            x = expired;
            expired = x->dnext; /* read first: once resumed, x may be gone */
            x->dnext = NULL;
            atomic_fetch_add(&srv->defer_expired, 1);
            MHD_resume_connection(x->conn);
        }
    }
}

/* Whether any request is waiting; a glance without the locks, for the expiry thread. */
static int http_defer_any(struct http_server *srv)
{
    return atomic_load(&srv->deferred) > 0;
}

/* The expiry thread: looks at the waiting requests every 50 ms until the server stops. */
void *http_defer_watch(void *arg)
{
    struct http_server *srv = arg;
    struct timespec until;

    pthread_mutex_lock(&srv->defer_lock);
    while (!srv->defer_stop) {
        clock_deadline(CLOCK_MONOTONIC, 50, &until);
        pthread_cond_timedwait(&srv->defer_cond, &srv->defer_lock, &until);
        if (srv->defer_stop || !http_defer_any(srv))
            continue;
        pthread_mutex_unlock(&srv->defer_lock);
        http_defer_expire(srv, 0);
        pthread_mutex_lock(&srv->defer_lock);
    }
    pthread_mutex_unlock(&srv->defer_lock);
    return NULL;
}

int http_defer(struct http_ctx *ctx, http_handler_fn resume, void *state,
               void (*free_state)(void *))
{
    struct http_exchange *x = ctx->x;
    struct http_server *srv = x->srv;

    if (ctx->on_db_thread) {
        log_event(LOG_ERROR, "http.defer_refused", "{s:s, s:s, s:s}", "why",
                  "an HTTP_DB handler may not defer", "method", ctx->route->method, "route",
                  ctx->route->pattern);
        if (free_state)
            free_state(state);
        return U_CALLBACK_ERROR;
    }
    /* deferred again (the key was looked up; now the handler's work): the first state is done */
    if (x->free_state && x->state != state)
        x->free_state(x->state);
    x->resume = resume;
    x->state = state;
    x->free_state = free_state;
    atomic_fetch_add(&x->refs, 1); /* the resumer's, dropped by http_resume */
    atomic_fetch_add(&srv->deferred, 1);
    clock_deadline(CLOCK_MONOTONIC, srv->defer_timeout_ms, &x->deadline);
    /* allowed here: the worker is inside its access handler */
    MHD_suspend_connection(x->conn);
    struct http_defer_shard *sh = http_defer_shard_of(srv, x);
    pthread_mutex_lock(&sh->lock);
    atomic_store(&x->defer_state, HTTP_DEFER_WAITING);
    x->dprev = NULL;
    x->dnext = sh->head;
    if (x->dnext)
        x->dnext->dprev = x;
    sh->head = x;
    pthread_mutex_unlock(&sh->lock);
    return U_CALLBACK_COMPLETE;
}

void http_resume(struct http_ctx *ctx)
{
    struct http_exchange *x = ctx->x;
    struct http_server *srv = x->srv;

    /* Late (expired, answered, maybe the server gone): only the reference is dropped. */
    if (http_defer_win(x, HTTP_DEFER_RESUMED)) {
        struct http_defer_shard *sh = http_defer_shard_of(srv, x);
        pthread_mutex_lock(&sh->lock);
        http_defer_unlink(sh, x);
        pthread_mutex_unlock(&sh->lock);
        MHD_resume_connection(x->conn);
    }
    http_exchange_unref(x);
}

void *http_state(const struct http_ctx *ctx)
{
    return ctx->x->state;
}

static double http_elapsed(const struct timespec *start)
{
    struct timespec now;

    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - start->tv_sec) + (double)(now.tv_nsec - start->tv_nsec) / 1e9;
}

/* Sends what the handler answered, and counts and logs the request. */
static enum MHD_Result http_answer(struct http_exchange *x)
{
    struct http_ctx *ctx = &x->ctx;

    if (ctx->status_code == 0)
        http_reply_problem(ctx, STATUS_INTERNAL, "the handler gave no answer");
    http_account(x->srv, ctx, x->idx, http_elapsed(&x->start));
    log_set_request_id(NULL);

    /* the body goes to MHD as it is, and is freed by it with ulfius's allocator, which made it */
    struct MHD_Response *r = MHD_create_response_from_buffer_with_free_callback(
        x->res.binary_body_length, x->res.binary_body, o_free);
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

/* Puts value in map; the values of a repeated name are joined with commas. */
static void http_map_add(struct _u_map *map, const char *key, const char *value)
{
    const char *had = u_map_get(map, key);
    if (!had) {
        u_map_put(map, key, value);
        return;
    }
    struct buf b;
    buf_init(&b, strlen(had) + strlen(value) + 2);
    buf_printf(&b, "%s,%s", had, value);
    u_map_put(map, key, b.data);
    buf_free(&b);
}

/* A header; like ulfius, drops what is not UTF-8. */
static enum MHD_Result http_fill_map(void *cls, enum MHD_ValueKind kind, const char *key,
                                     const char *value)
{
    (void)kind;

    if (!value)
        value = "";
    if (utf8_valid(key, strlen(key)) && utf8_valid(value, strlen(value)))
        http_map_add(cls, key, value);
    return MHD_YES;
}

/*
 * A query parameter. Unlike ulfius, which drops a value that is not UTF-8 (and so turns a
 * filter into no filter), the first such parameter is remembered for a 400 naming it.
 */
static enum MHD_Result http_fill_query(void *cls, enum MHD_ValueKind kind, const char *key,
                                       const char *value)
{
    (void)kind;
    struct http_exchange *x = cls;

    if (!value)
        value = "";
    if (utf8_valid(key, strlen(key)) && utf8_valid(value, strlen(value))) {
        http_map_add(x->req.map_url, key, value);
        return MHD_YES;
    }
    if (!x->bad_query[0]) {
        struct buf name;
        buf_init(&name, 0);
        http_text_clean(key, &name);
        snprintf(x->bad_query, sizeof x->bad_query, "%s", name.data ? name.data : "");
        if (!x->bad_query[0])
            snprintf(x->bad_query, sizeof x->bad_query, "(empty name)");
        buf_free(&name);
    }
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

    /* ulfius_clean_request frees these with o_free: they are made with its allocator */
    req->http_verb = o_strdup(method);
    req->http_protocol = o_strdup(version);
    if (ci && ci->client_addr) {
        req->client_address = o_malloc(sizeof(struct sockaddr));
        if (req->client_address)
            memcpy(req->client_address, ci->client_addr, sizeof(struct sockaddr));
        const struct sockaddr_in *in = (const struct sockaddr_in *)ci->client_addr;
        if (in->sin_family == AF_INET)
            inet_ntop(AF_INET, &in->sin_addr, x->client, sizeof x->client);
    }
    MHD_get_connection_values(x->conn, MHD_HEADER_KIND, http_fill_map, req->map_header);
    MHD_get_connection_values(x->conn, MHD_GET_ARGUMENT_KIND, http_fill_query, x);
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
        void *grown = o_realloc(req->binary_body, req->binary_body_length + n);
        if (!grown)
            abort(); /* as xrealloc does: out of memory */
        req->binary_body = grown;
        memcpy((char *)req->binary_body + req->binary_body_length, data, n);
        req->binary_body_length += n;
    }
    if (x->post && req->binary_body_length <= x->srv->body_limit)
        MHD_post_process(x->post, data, size);
}

enum MHD_Result http_access(void *cls, struct MHD_Connection *conn, const char *url,
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
        /*
         * The headers are in: everything they can decide (route, gate, key, role, rate) is
         * decided now, before a byte of body is read. A refusal is queued at once, which MHD
         * allows on this first call: it sends it and closes, never reading the body.
         */
        x->started = 1;
        clock_gettime(CLOCK_MONOTONIC, &x->start);
        x->ctx.req = &x->req;
        x->ctx.res = &x->res;
        x->ctx.x = x;
        http_request_start(x, method, version);
        http_dispatch_head(x);
        if (x->resume) {
            log_set_request_id(NULL);
            return MHD_YES; /* suspended: called again once resumed */
        }
        if (!x->headed)
            return http_answer(x);
        log_set_request_id(NULL);
        return MHD_YES;
    }
    if (x->resume) {
        http_handler_fn resume = x->resume;
        x->resume = NULL;
        log_set_request_id(x->ctx.request_id);
        atomic_fetch_sub(&x->srv->deferred, 1);
        /* Expired: the other thread may still be using the state, so resume is not called. */
        if (atomic_load(&x->defer_state) == HTTP_DEFER_EXPIRED)
            http_reply_problem(&x->ctx, STATUS_UNAVAILABLE,
                               "no answer within %ld ms; the request may still take effect",
                               x->srv->defer_timeout_ms);
        else if (x->work_status != STATUS_OK)
            http_reply_problem(&x->ctx, x->work_status, "no database connection is free right now");
        else
            http_handler_result(x, resume(&x->ctx));
        if (x->resume) {
            log_set_request_id(NULL);
            return MHD_YES; /* deferred again (the key was checked; now the handler's work) */
        }
        if (x->ctx.status_code || !x->headed)
            return http_answer(x);
        log_set_request_id(NULL);
        return MHD_YES; /* the key is checked: on to the body */
    }
    if (*upload_data_size) {
        http_request_body(x, upload_data, *upload_data_size);
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (!x->dispatched) {
        x->dispatched = 1;
        log_set_request_id(x->ctx.request_id);
        http_dispatch_body(x);
        if (x->resume) {
            log_set_request_id(NULL);
            return MHD_YES; /* suspended: called again once resumed */
        }
    }
    return http_answer(x);
}

/* The request line is read: the exchange starts, with the path as the client sent it. */
void *http_uri_log(void *cls, const char *uri, struct MHD_Connection *conn)
{
    struct http_exchange *x = xcalloc(1, sizeof *x);

    x->srv = cls;
    x->conn = conn;
    x->idx = -1;
    atomic_init(&x->refs, 1);
    atomic_init(&x->defer_state, HTTP_DEFER_NONE);
    atomic_fetch_add(&x->srv->inflight, 1);
    ulfius_init_request(&x->req);
    ulfius_init_response(&x->res);
    x->req.http_url = o_strdup(uri);
    x->req.url_path = o_strndup(uri, strcspn(uri, "?"));
    return x;
}

void http_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
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
    x->post = NULL;
    /*
     * Ended while deferred: MHD may close a resumed connection whose client went away (a load
     * generator's close at its end) without calling the handler again, which is where a deferred
     * request stops being counted. Resumed or expired, it is out of the waiting lists by now.
     */
    if (x->resume) {
        x->resume = NULL;
        atomic_fetch_sub(&x->srv->deferred, 1);
    }
    atomic_fetch_sub(&x->srv->inflight, 1);
    *con_cls = NULL;
    http_exchange_unref(x); /* the resumer's reference may outlive the request */
}
