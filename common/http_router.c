/*
 * http_router: finds a request's route, checks what the headers alone can tell (request id,
 * query, gate, key, hidden role, role, rate) before any body is read, then the body, then runs
 * the handler. Also the start-up check of route tables and their printing (`--routes`).
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "http.h"
#include "http_internal.h"
#include "log.h"
#include "ratelimit.h"
#include "uuid.h"

/* ---- matching ---- */

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
 * parameter NUL-terminated in place, then URL-decoded in place as ulfius decodes its path
 * parameters (ulfius_url_decode: %XX and '+'; the decoded text is never longer), and the names
 * are copied out of the pattern.
 */
static void http_params_set(struct http_ctx *ctx, const struct http_match *m, char names[][32])
{
    snprintf(ctx->path, sizeof ctx->path, "%s", ctx->req->url_path);
    ctx->nparams = m->n;
    for (int i = 0; i < m->n; i++) {
        char *param = ctx->path + m->off[i];
        param[m->len[i]] = '\0';
        char *decoded = ulfius_url_decode(param);
        if (decoded) {
            memcpy(param, decoded, strlen(decoded) + 1);
            o_free(decoded);
        }
        ctx->params[i] = param;
        size_t n = strcspn(m->names[i], "}");
        snprintf(names[i], 32, "%.*s", (int)n, m->names[i]);
        ctx->param_names[i] = names[i];
    }
}

/*
 * Finds the route. When none has this method, *path_matched tells a 405 from a 404, allow
 * lists the methods that path has, and *gate is the first of those routes with a gate (or -1).
 * Returns the index or -1.
 */
static long http_route_find(const struct http_server *srv, const char *method, struct http_ctx *ctx,
                            int *path_matched, struct buf *allow, long *gate, char names[][32])
{
    struct http_match m;

    *path_matched = 0;
    *gate = -1;
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
        if ((r->flags & HTTP_GATE) && *gate < 0) {
            *gate = (long)i;
            http_params_set(ctx, &m, names);
        }
        *path_matched = 1;
        buf_printf(allow, "%s%s", allow->len ? ", " : "", r->method);
    }
    return -1;
}

/* ---- the route table ---- */

static const char *const http_methods[] = {"GET", "POST", "PUT", "PATCH", "DELETE"};

/* 0 when pattern is "/" segments whose {name} parameters fill a whole segment. */
static int http_pattern_check(const char *pattern, char *why, size_t whylen)
{
    const char *s = pattern;
    int nparams = 0;

    if (!pattern || pattern[0] != '/') {
        snprintf(why, whylen, "pattern %s does not start with '/'", pattern ? pattern : "(null)");
        return -1;
    }
    while (*s) {
        s++; /* the '/' */
        size_t n = strcspn(s, "/");
        if (n == 0 && s[n] == '/') {
            snprintf(why, whylen, "pattern %s has an empty segment", pattern);
            return -1;
        }
        if (memchr(s, '{', n) || memchr(s, '}', n)) {
            size_t name = n >= 2 ? strspn(s + 1, "abcdefghijklmnopqrstuvwxyz"
                                                 "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
                                 : 0;
            if (s[0] != '{' || name == 0 || name + 2 != n || s[n - 1] != '}' || name > 31) {
                snprintf(why, whylen,
                         "pattern %s: a parameter must be a whole segment {name} (letters, "
                         "digits, '_', at most 31)",
                         pattern);
                return -1;
            }
            if (++nparams > HTTP_MAX_PARAMS) {
                snprintf(why, whylen, "pattern %s has more than %d parameters", pattern,
                         HTTP_MAX_PARAMS);
                return -1;
            }
        }
        s += n;
    }
    return 0;
}

enum status http_routes_check(const struct http_route *routes, size_t nroutes, char *why,
                              size_t whylen)
{
    for (size_t i = 0; i < nroutes; i++) {
        const struct http_route *r = &routes[i];
        unsigned hidden = HTTP_HIDDEN_ROLES(r->flags);
        size_t m = 0;
        const char *method = r->method ? r->method : "(null)";

        while (m < sizeof http_methods / sizeof *http_methods &&
               strcmp(http_methods[m], method) != 0)
            m++;
        if (m == sizeof http_methods / sizeof *http_methods) {
            snprintf(why, whylen, "route %zu: %s is not a method this server serves", i, method);
            return STATUS_INVALID;
        }
        if (http_pattern_check(r->pattern, why, whylen) != 0)
            return STATUS_INVALID;
        if (!r->handler)
            snprintf(why, whylen, "%s %s has no handler", method, r->pattern);
        else if ((r->flags & HTTP_PUBLIC) && (r->roles || hidden))
            snprintf(why, whylen, "%s %s is public and names roles too", method, r->pattern);
        else if (!(r->flags & HTTP_PUBLIC) && !r->roles)
            snprintf(why, whylen,
                     "%s %s allows no role and is not public (HTTP_PUBLIC): say which it is",
                     method, r->pattern);
        else if ((r->roles | hidden) & ~(unsigned)ROLE_ANY)
            snprintf(why, whylen, "%s %s names a role that does not exist", method, r->pattern);
        else if (r->roles & hidden)
            snprintf(why, whylen, "%s %s both allows and hides a role", method, r->pattern);
        else if ((r->flags >> HTTP_HIDE_SHIFT) & ~(unsigned)ROLE_ANY)
            snprintf(why, whylen, "%s %s has unknown flags", method, r->pattern);
        else {
            for (size_t j = 0; j < i; j++) {
                if (strcmp(routes[j].method, method) == 0 &&
                    strcmp(routes[j].pattern, r->pattern) == 0) {
                    snprintf(why, whylen, "%s %s is in the table twice", method, r->pattern);
                    return STATUS_INVALID;
                }
            }
            continue;
        }
        return STATUS_INVALID;
    }
    return STATUS_OK;
}

/* Role names of mask joined by ',', or dash when there is none. */
static void http_roles_print(unsigned mask, const char *none, struct buf *out)
{
    int any = 0;

    for (unsigned bit = 1; bit <= ROLE_ANY; bit <<= 1) {
        if (!(mask & bit))
            continue;
        buf_printf(out, "%s%s", any ? "," : "", auth_role_name((enum auth_role)bit));
        any = 1;
    }
    if (!any)
        buf_printf(out, "%s", none);
}

void http_routes_print(const struct http_route *routes, size_t nroutes, struct buf *out)
{
    for (size_t i = 0; i < nroutes; i++) {
        buf_printf(out, "%s %s ", routes[i].method, routes[i].pattern);
        if (routes[i].flags & HTTP_PUBLIC)
            buf_printf(out, "public");
        else
            http_roles_print(routes[i].roles, "-", out);
        buf_printf(out, " ");
        http_roles_print(HTTP_HIDDEN_ROLES(routes[i].flags), "-", out);
        buf_printf(out, "\n");
    }
}

int http_gating(const struct http_ctx *ctx)
{
    return ctx->gating;
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

/* Runs a route's gate; 1 when it answered (the request stops there). */
static int http_gate_run(struct http_ctx *ctx, const struct http_route *r)
{
    const struct http_route *was = ctx->route;

    ctx->route = r;
    ctx->gating = 1;
    int rc = r->handler(ctx);
    ctx->gating = 0;
    ctx->route = was;
    if (rc == HTTP_CONTINUE && ctx->status_code == 0)
        return 0;
    if (ctx->status_code == 0)
        http_reply_problem(ctx, STATUS_INTERNAL, "the gate gave no answer");
    return 1;
}

/* What the key's look-up found, when it was made on a database thread. */
struct http_auth_lookup {
    enum status st;
    long retry;
};

/* The hidden roles, the roles, the per-key rate, after the key's check gave st. */
static void http_authorize_finish(struct http_server *srv, struct http_ctx *ctx, enum status st,
                                  long retry)
{
    const struct http_route *r = ctx->route;
    char secs[24];

    if (st == STATUS_RATE_LIMITED) {
        snprintf(secs, sizeof secs, "%ld", retry > 0 ? retry : 1);
        http_set_header(ctx, "Retry-After", secs);
        http_reply_problem(ctx, st, "too many failed authentications from this address");
        return;
    }
    if (st == STATUS_UNAUTHORIZED) {
        http_reply_problem(ctx, st, "a valid API key is required (Authorization: Bearer <key>)");
        return;
    }
    if (st != STATUS_OK) {
        http_reply_problem(ctx, st, "cannot check the API key right now");
        return;
    }
    if (HTTP_HIDDEN_ROLES(r->flags) & ctx->principal.role) {
        http_reply_problem(ctx, STATUS_NOT_FOUND, "no such resource: %s", ctx->req->url_path);
        return;
    }
    if (!(r->roles & ctx->principal.role)) {
        http_reply_problem(ctx, STATUS_FORBIDDEN, "role %s may not do this",
                           auth_role_name(ctx->principal.role));
        return;
    }
    if (srv->key_limit &&
        ratelimit_take(srv->key_limit, ctx->principal.key_id, &retry) != STATUS_OK) {
        atomic_fetch_add(&srv->rate_limited, 1);
        snprintf(secs, sizeof secs, "%ld", retry > 0 ? retry : 1);
        http_set_header(ctx, "Retry-After", secs);
        http_reply_problem(ctx, STATUS_RATE_LIMITED,
                           "this key is over its rate limit; try again in %ld s", retry);
        return;
    }
    ctx->x->headed = 1;
}

static const char *http_client(const struct http_ctx *ctx)
{
    return ctx->x->client[0] ? ctx->x->client : NULL;
}

/* On a database thread: the look-up the cache could not spare. */
static void http_auth_call(struct http_ctx *ctx, void *state)
{
    struct http_auth_lookup *l = state;

    l->st = auth_authenticate_client(ctx->x->srv->auth, http_header(ctx, "Authorization"),
                                     http_client(ctx), &ctx->principal, &l->retry);
}

/* Back on the worker: the rest of the checks on the headers. */
static int http_auth_resume(struct http_ctx *ctx)
{
    const struct http_auth_lookup *l = http_state(ctx);

    http_authorize_finish(ctx->x->srv, ctx, l->st, l->retry);
    return U_CALLBACK_COMPLETE;
}

/*
 * The key, from the cache when it is there; a key the cache does not know is looked up on a
 * database thread, the request waiting without its worker (the whole request: the look-up,
 * then the body and the handler).
 */
static void http_authorize(struct http_server *srv, struct http_ctx *ctx)
{
    long retry = 0;
    enum status st = STATUS_UNAUTHORIZED;

    if (srv->auth)
        st = auth_authenticate_cached(srv->auth, http_header(ctx, "Authorization"),
                                      http_client(ctx), &ctx->principal, &retry);
    if (st == STATUS_RETRY) {
        struct http_auth_lookup *l = xcalloc(1, sizeof *l);
        http_defer_call(ctx, http_auth_call, l, free, http_auth_resume);
        return;
    }
    http_authorize_finish(srv, ctx, st, retry);
}

void http_dispatch_head(struct http_exchange *x)
{
    struct http_server *srv = x->srv;
    struct http_ctx *ctx = &x->ctx;
    struct buf allow;
    int path_matched;
    long gate;

    ctx->app = srv->app;
    const char *rid = u_map_get_case(ctx->req->map_header, "X-Request-Id");
    if (rid && http_request_id_valid(rid))
        snprintf(ctx->request_id, sizeof ctx->request_id, "%s", rid);
    else
        uuid_new(ctx->request_id);
    log_set_request_id(ctx->request_id);
    u_map_put(ctx->res->map_header, "X-Request-Id", ctx->request_id);

    buf_init(&allow, 256);
    x->idx = http_route_find(srv, ctx->req->http_verb, ctx, &path_matched, &allow, &gate, x->names);
    const char *method = ctx->req->http_verb;
    if (x->idx < 0 && gate >= 0 && http_gate_run(ctx, &srv->routes[gate]))
        goto out; /* a secret path: a wrong secret is not told that the path exists */
    if (x->idx < 0 && path_matched) {
        http_set_header(ctx, "Allow", allow.data);
        http_reply_problem(ctx, STATUS_METHOD_NOT_ALLOWED, "%s is not allowed here; allowed: %s",
                           method, allow.data);
        goto out;
    }
    if (x->idx < 0) {
        http_reply_problem(ctx, STATUS_NOT_FOUND, "no such resource: %s", ctx->req->url_path);
        goto out;
    }
    ctx->route = &srv->routes[x->idx];
    if ((ctx->route->flags & HTTP_GATE) && http_gate_run(ctx, ctx->route))
        goto out;
    if (rid && !http_request_id_valid(rid)) {
        http_reply_problem(ctx, STATUS_INVALID,
                           "X-Request-Id must be 1 to 64 letters, digits, '.', '_', ':' or '-'");
        goto out;
    }
    if (x->bad_query[0]) {
        json_t *errors = json_array();
        http_field_error(errors, x->bad_query, "is not valid UTF-8");
        http_reply_problem_fields(ctx, STATUS_INVALID, errors,
                                  "query parameter %s is not valid UTF-8", x->bad_query);
        goto out;
    }
    if (!(ctx->route->flags & HTTP_PUBLIC))
        http_authorize(srv, ctx);
    else
        x->headed = 1;
out:
    buf_free(&allow);
}

/* Content-Type and body checks of a route; 1 when they failed and the problem is answered. */
static int http_check_body(struct http_server *srv, struct http_ctx *ctx)
{
    const struct _u_request *req = ctx->req;
    const char *ct = http_header(ctx, "Content-Type");
    char why[256];

    if (req->binary_body_length > srv->body_limit) {
        http_reply_problem(ctx, STATUS_TOO_LARGE, "the body exceeds %zu bytes", srv->body_limit);
        return 1;
    }
    if (ctx->route->flags & HTTP_BODY_JSON) {
        if (!http_media_is(ct, "application/json")) {
            http_reply_problem(ctx, STATUS_UNSUPPORTED_MEDIA,
                               "Content-Type must be application/json");
            return 1;
        }
        ctx->body =
            http_json_parse_object(req->binary_body, req->binary_body_length, why, sizeof why);
        if (!ctx->body) {
            http_reply_problem(ctx, STATUS_INVALID, "%s", why);
            return 1;
        }
    } else if (ctx->route->flags & HTTP_BODY_FORM) {
        if (req->binary_body_length > 0 &&
            !http_media_is(ct, "application/x-www-form-urlencoded")) {
            http_reply_problem(ctx, STATUS_UNSUPPORTED_MEDIA,
                               "Content-Type must be application/x-www-form-urlencoded");
            return 1;
        }
    }
    return 0;
}

void http_handler_result(struct http_exchange *x, int rc)
{
    struct http_ctx *ctx = &x->ctx;

    if (rc == U_CALLBACK_COMPLETE || x->resume)
        return; /* answered, or deferred (the resume callback answers) */
    if (rc == U_CALLBACK_UNAUTHORIZED) {
        http_reply_problem(ctx, STATUS_UNAUTHORIZED, "a valid API key is required");
        return;
    }
    http_reply_problem(ctx, STATUS_INTERNAL, "the request failed");
}

void http_dispatch_body(struct http_exchange *x)
{
    if (http_check_body(x->srv, &x->ctx))
        return;
    if (x->ctx.route->flags & HTTP_DB)
        http_handler_result(x, http_work_handler(&x->ctx));
    else
        http_handler_result(x, x->ctx.route->handler(&x->ctx));
}
