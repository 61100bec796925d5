/*
 * http: the services' HTTP plumbing — routing, limits, auth, problems, metrics, answers that
 * wait without holding a thread, database work off the workers. Requests and responses are
 * ulfius's objects; the workers drive libmicrohttpd themselves, because ulfius's dispatcher
 * must answer before it returns and so cannot suspend a request while the database works on
 * it. The README's "What of ulfius the layer serves" lists what is and is not served.
 */
#ifndef PTCE_HTTP_H
#define PTCE_HTTP_H

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <ulfius.h>

#include "auth.h"
#include "status.h"
#include "xalloc.h"

#define HTTP_MAX_PARAMS 4
#define HTTP_REQUEST_ID_LEN 64

struct http_ctx;
struct http_exchange;

/*
 * A handler answers through http_reply_*() and returns what they return (U_CALLBACK_COMPLETE),
 * or hands the answer to later with http_defer() / http_defer_work() and returns what they
 * return. The value means what it means to ulfius: U_CALLBACK_COMPLETE, the answer is given (or
 * deferred); U_CALLBACK_UNAUTHORIZED, answer 401; U_CALLBACK_ERROR (or anything else), answer
 * 500 in place of whatever was set. A gate (HTTP_GATE) returns HTTP_CONTINUE to let the
 * request through, or answers and returns U_CALLBACK_COMPLETE.
 */
typedef int (*http_handler_fn)(struct http_ctx *ctx);

#define HTTP_CONTINUE U_CALLBACK_CONTINUE

/* Route flags. */
enum {
    HTTP_BODY_JSON = 1 << 0,   /* requires application/json; body parsed into ctx->body */
    HTTP_BODY_FORM = 1 << 1,   /* accepts application/x-www-form-urlencoded (or no body) */
    HTTP_QUIET = 1 << 2,       /* probes: access-logged at debug level only */
    HTTP_SECRET_PATH = 1 << 3, /* the path holds a secret: logs show the route pattern only */
    HTTP_PUBLIC = 1 << 4,      /* no key at all: probes, webhooks (roles must be 0) */
    HTTP_GATE = 1 << 5,        /* the handler is first called as a gate, see http_gating() */
    HTTP_DB = 1 << 6,          /* the handler runs on a database thread, see below */
};

/*
 * HTTP_DB: the whole handler runs on one of the server's database threads (db_threads), not on
 * its HTTP worker, which serves other connections meanwhile; it may take connections of the
 * pool and wait on them as long as it needs. It answers as any handler does (http_reply_*,
 * http_set_header), into a response of its own that its worker sends once it returns; it must
 * not defer (http_defer*: 500). Past the server's defer_timeout_ms the client gets 503 and the
 * handler's late answer is dropped. Every route whose handler touches the database says it.
 */

/*
 * Roles that get 404 on a route, as if it did not exist for them, instead of 403: a flag
 * HTTP_HIDE(ROLE_DASHBOARD) on every route that shows personal data. Disjoint from the route's
 * roles. Kept in the flags so that route tables written as {method, pattern, handler, roles,
 * flags} stay as they are.
 */
#define HTTP_HIDE_SHIFT 16
#define HTTP_HIDE(roles) ((unsigned)(roles) << HTTP_HIDE_SHIFT)
#define HTTP_HIDDEN_ROLES(flags) (((unsigned)(flags) >> HTTP_HIDE_SHIFT) & ROLE_ANY)

/*
 * One operation. `pattern` is a path with {name} segments ("/v1/dossiers/{id}"); `roles` is
 * the mask of roles allowed; a route without a key says HTTP_PUBLIC in its flags (and has no
 * roles). http_server_start refuses a table where a route is neither, or both (see
 * http_routes_check).
 */
struct http_route {
    const char *method;
    const char *pattern;
    http_handler_fn handler;
    unsigned roles;
    unsigned flags;
};

struct http_ctx {
    const struct _u_request *req;
    struct _u_response *res;
    const struct http_route *route;
    void *app;                       /* the service's state, from http_server_start */
    struct auth_principal principal; /* valid when route->roles != 0 */
    json_t *body;                    /* the parsed JSON object (HTTP_BODY_JSON), borrowed */
    char request_id[HTTP_REQUEST_ID_LEN + 1];
    char path[512];
    const char *params[HTTP_MAX_PARAMS]; /* point into path */
    const char *param_names[HTTP_MAX_PARAMS];
    int nparams;
    int status_code;         /* what was answered, for the access log and metrics */
    struct http_exchange *x; /* private: the request on its worker */
    int gating;              /* private: the handler runs as its route's gate */
    int on_db_thread;        /* private: an HTTP_DB handler, answering into its own response */
};

struct http_server_config {
    const char *bind; /* IPv4 address to listen on */
    long port;
    long threads;          /* worker threads, one MHD daemon each; size it with the database pool */
    long body_limit;       /* bytes; larger bodies answer 413 */
    long timeout_s;        /* idle connection timeout */
    long connection_limit; /* simultaneous connections */
    long defer_timeout_ms; /* a deferred request unanswered this long gets 503 (0: 15000) */
    long rate_limit_rps;   /* requests a second per API key (0: no limit) */
    long rate_limit_burst; /* what a key may spend at once */
    struct db_pool *db_pool; /* the connections http_defer_work lends (may be NULL) */
    long db_threads;         /* threads that run http_defer_work (0: 4) */
};

struct http_route_stats;
struct http_worker;

#define HTTP_DEFER_TIMEOUT_MS_DEFAULT 15000

/*
 * The deferred requests are kept in HTTP_DEFER_SHARDS lists, each with its own lock, a request in
 * the list its address picks: every deferred request is linked and unlinked, by the workers and by
 * the threads that resume them, and one lock for all of them was where those threads queued.
 */
#define HTTP_DEFER_SHARDS 16
struct http_defer_shard {
    pthread_mutex_t lock;
    struct http_exchange *head;
};

/*
 * One acceptor thread takes the connections and gives each to the worker that holds the fewest;
 * every worker is an ulfius instance with a one-thread MHD daemon.
 */
struct http_server {
    struct http_worker *workers;
    size_t nworkers;
    size_t next_worker; /* where the next search for the least loaded worker starts */
    long connection_limit;
    atomic_ulong rejected;      /* connections closed at once: limit reached */
    atomic_long deferred;       /* requests waiting for http_resume */
    atomic_long inflight;       /* requests from their first line until their answer is sent */
    atomic_ulong defer_expired; /* deferred requests answered 503 at their deadline */
    long defer_timeout_ms;
    /* the deferred requests, watched by the expiry thread: private */
    struct http_defer_shard defer_shards[HTTP_DEFER_SHARDS];
    pthread_mutex_t defer_lock; /* the expiry thread's sleep and defer_stop */
    pthread_cond_t defer_cond;
    int defer_stop;
    int defer_thread_started;
    pthread_t defer_thread;
    int listen_fd;
    int wake_fd; /* eventfd that stops the acceptor */
    pthread_t acceptor;
    const struct http_route *routes;
    size_t nroutes;
    void *app;
    struct auth *auth;
    size_t body_limit;
    struct http_route_stats *stats; /* one per route, plus one for unmatched requests */
    struct ratelimit *key_limit;    /* per API key; NULL: no limit */
    atomic_ulong rate_limited;      /* requests answered 429 by the per-key limit */
    struct http_work_pool *work;    /* the threads of http_defer_work: private */
};

/* Starts listening. The routes array and app must outlive the server. auth may be NULL. */
enum status http_server_start(struct http_server *srv, const struct http_server_config *cfg,
                              const struct http_route *routes, size_t nroutes, void *app,
                              struct auth *auth);
/*
 * Stops accepting, lets in-flight requests finish (up to 10 s), answers 503 to the deferred
 * requests still waiting, then releases everything. Never stops MHD with a request suspended.
 */
void http_server_stop(struct http_server *srv);

/*
 * Checks a route table: every route public (HTTP_PUBLIC, no roles, nothing hidden) or with
 * roles; hidden roles disjoint from the allowed ones; a known method, a handler, a pattern of
 * "/" segments whose {name} parameters fill a whole segment (at most HTTP_MAX_PARAMS, names
 * of letters, digits and '_'); no method + pattern twice. STATUS_INVALID with the first
 * problem in why.
 */
enum status http_routes_check(const struct http_route *routes, size_t nroutes, char *why,
                              size_t whylen);

/*
 * Appends one line per route to out: "METHOD PATTERN ROLES HIDDEN", ROLES being "public" or
 * role names joined by ',', HIDDEN role names or "-".
 */
void http_routes_print(const struct http_route *routes, size_t nroutes, struct buf *out);

/* 1 while a route's handler runs as its gate (HTTP_GATE): right after matching, before the
 * key, the body and the method are looked at. It answers (a 404 for a wrong secret) or
 * returns HTTP_CONTINUE. */
int http_gating(const struct http_ctx *ctx);

/* Appends the per-route request counters and latency histograms to out (Prometheus text). */
void http_metrics_render(const struct http_server *srv, struct buf *out);

/* The value of path parameter `name`, or NULL. Borrowed from ctx. */
const char *http_param(const struct http_ctx *ctx, const char *name);
/* A query-string value, or NULL. Borrowed from the request. */
const char *http_query(const struct http_ctx *ctx, const char *name);
/* A field of an application/x-www-form-urlencoded body, or NULL. Borrowed from the request. */
const char *http_form(const struct http_ctx *ctx, const char *name);
/* A request header (case-insensitive), or NULL. Borrowed from the request. */
const char *http_header(const struct http_ctx *ctx, const char *name);
/* Sets a response header (copied). */
void http_set_header(struct http_ctx *ctx, const char *name, const char *value);

/*
 * Answers later, without holding the worker: a handler whose work is done by another thread (a
 * batched read) calls http_defer and returns what it returns, then starts that work. Once the
 * work is done, that thread calls http_resume(ctx); the worker then calls resume(ctx) on its
 * own thread, which answers as a handler does. state (may be NULL) is the handler's, given
 * back by http_state() and released with free_state when the request ends. Call http_defer
 * before starting the work: http_resume may come at once.
 *
 * A request not resumed within the server's defer_timeout_ms is answered 503 by its worker
 * without calling resume, and so is every one still waiting when the server stops. The other
 * thread must still call http_resume exactly once, however late: until then ctx and state stay
 * alive for it (the exchange is counted by reference), and a late call only releases them.
 */
int http_defer(struct http_ctx *ctx, http_handler_fn resume, void *state,
               void (*free_state)(void *));
void http_resume(struct http_ctx *ctx);
void *http_state(const struct http_ctx *ctx);

/* Database work of a request, run by http_defer_work on a database thread with conn lent. */
typedef void (*http_work_fn)(struct http_ctx *ctx, struct db_conn *conn, void *state);
/* Work of a request that takes its connections itself, run by http_defer_call. */
typedef void (*http_call_fn)(struct http_ctx *ctx, void *state);

/*
 * Runs fn(ctx, conn, state) on one of the server's database threads (http_server_config's
 * db_threads) with a connection of its pool (db_pool), without holding the HTTP worker; then
 * resume(ctx) answers on the worker, as after http_defer (state, free_state, the deadline and
 * a stop behave the same). When no connection frees up within the pool's wait, fn and resume
 * are not called and the request is answered 503 (Retry-After: 1). fn must not answer: it
 * leaves its results in state. ctx is readable from fn (parameters, principal, body), not
 * writable. Returns what the handler returns.
 */
int http_defer_work(struct http_ctx *ctx, http_work_fn fn, void *state, void (*free_state)(void *),
                    http_handler_fn resume);

/* The same for work that takes its connections itself (a store taking the pool): none lent. */
int http_defer_call(struct http_ctx *ctx, http_call_fn fn, void *state, void (*free_state)(void *),
                    http_handler_fn resume);

/*
 * Hands the whole request to handler run on a database thread, as a route flagged HTTP_DB has its
 * handler run: for a handler on its worker that answers some requests itself (or through a
 * batch) and leaves the others to code written for a database thread. Returns what the handler
 * returns; handler must not defer.
 */
int http_defer_handler(struct http_ctx *ctx, http_handler_fn handler);

/* Answers `code` with body serialised as JSON. Takes the reference to body. */
int http_reply_json(struct http_ctx *ctx, int code, json_t *body);
/*
 * Answers `code` with JSON already serialised (text, borrowed), as PostgreSQL's jsonb output
 * writes it: the blanks it puts after each ':' and ',' are dropped, so that the bytes are what
 * http_reply_json would have sent for the same document, without parsing it. text must be one
 * valid JSON value (the database's own output; not a client's).
 */
int http_reply_json_text(struct http_ctx *ctx, int code, const char *text);
/* text without the blanks between its tokens into out (room for strlen(text) + 1); its length. */
size_t http_json_compact(const char *text, char *out);
/* Answers `code` with raw bytes of the given content type (copied). */
int http_reply_raw(struct http_ctx *ctx, int code, const char *content_type, const char *data,
                   size_t len);
/* Answers an RFC 9457 problem for st, with a printf-style detail. */
int http_reply_problem(struct http_ctx *ctx, enum status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/*
 * Same, with field-level errors: an array of {"field": "...", "message": "..."} objects.
 * Takes the reference to errors (may be NULL).
 */
int http_reply_problem_fields(struct http_ctx *ctx, enum status st, json_t *errors, const char *fmt,
                              ...) __attribute__((format(printf, 4, 5)));

/*
 * Same, with extension members added to the problem object (RFC 9457 §3.2), e.g. a 409's
 * {"current_state": …, "allowed_transitions": […]}; a member named like a standard one (type,
 * title, status, detail, instance, request_id, errors) is ignored. Takes the reference to
 * members (may be NULL).
 */
int http_reply_problem_members(struct http_ctx *ctx, enum status st, json_t *members,
                               const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* Appends {"field": field, "message": message} to errors (an array). */
void http_field_error(json_t *errors, const char *field, const char *message);

/*
 * Names in errors each member of obj (borrowed) whose name is not in the NULL-terminated list
 * known, as "prefix.name" ("name" when prefix is NULL or empty), with the message "is not a
 * field of <what>": a body whose schema says additionalProperties: false refuses a misspelt or
 * unexpected member instead of dropping it. A long name is cut to 100 bytes at a character's
 * boundary. Returns how many members were named.
 */
size_t http_fields_unknown(const json_t *obj, const char *prefix, const char *const *known,
                           const char *what, json_t *errors);

/*
 * Parses a JSON text strictly: duplicate keys rejected, an object required, nothing after it.
 * On failure returns NULL and writes a human explanation into why.
 */
json_t *http_json_parse_object(const char *data, size_t len, char *why, size_t whylen);

#endif
