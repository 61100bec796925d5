/*
 * http: what handlers read of a request and the answers they give (JSON, raw, RFC 9457
 * problems). The rest of the layer: http_router.c (routing, checks, the handler's call),
 * http_metrics.c, http_exchange.c (one request on its worker), http_server.c (accepting,
 * starting, stopping), http_work.c (database work off the worker).
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
#include "xalloc.h"

#define PROBLEM_TYPE_PREFIX "urn:ptce:problem:"

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

size_t http_json_compact(const char *text, char *out)
{
    size_t n = 0;
    int in_string = 0;

    for (const char *p = text; *p; p++) {
        if (in_string) {
            out[n++] = *p;
            if (*p == '\\' && p[1])
                out[n++] = *++p; /* the escaped character, a quote included */
            else if (*p == '"')
                in_string = 0;
        } else if (*p == '"') {
            out[n++] = *p;
            in_string = 1;
        } else if (*p != ' ' && *p != '\n' && *p != '\r' && *p != '\t') {
            out[n++] = *p;
        }
    }
    out[n] = '\0';
    return n;
}

int http_reply_json_text(struct http_ctx *ctx, int code, const char *text)
{
    char *out = xmalloc(strlen(text) + 1);
    size_t n = http_json_compact(text, out);
    int rc = http_reply_raw(ctx, code, "application/json", out, n);

    free(out);
    return rc;
}

void http_field_error(json_t *errors, const char *field, const char *message)
{
    json_array_append_new(errors, json_pack("{s:s, s:s}", "field", field, "message", message));
}

/* The bytes of name kept in a field error: at most max, cut at a character's boundary. */
static int http_name_cut(const char *name, size_t len, size_t max)
{
    size_t n = 0;

    while (n < len) {
        size_t seq = utf8_sequence((const unsigned char *)name + n);
        if (seq == 0 || name[n] == '\0' || n + seq > max)
            break;
        n += seq;
    }
    return (int)n;
}

size_t http_fields_unknown(const json_t *obj, const char *prefix, const char *const *known,
                           const char *what, json_t *errors)
{
    /* jansson's iterators take no const, and only read here */
    json_t *o = (json_t *)obj;
    const char *sep = prefix && *prefix ? "." : "";
    char field[160], message[128];
    size_t count = 0;

    snprintf(message, sizeof message, "is not a field of %s", what);
    for (void *it = json_object_iter(o); it; it = json_object_iter_next(o, it)) {
        const char *name = json_object_iter_key(it);
        size_t len = json_object_iter_key_len(it), k = 0;

        while (known[k] && (strlen(known[k]) != len || memcmp(known[k], name, len) != 0))
            k++;
        if (known[k])
            continue;
        snprintf(field, sizeof field, "%s%s%.*s", *sep ? prefix : "", sep,
                 http_name_cut(name, len, 100), name);
        http_field_error(errors, field, message);
        count++;
    }
    return count;
}

/*
 * Copies text into out as valid UTF-8: jansson refuses anything else, and a path or a detail
 * may hold any byte the client sent. A byte that starts no valid sequence becomes "%XX", as in
 * a URI; a sequence cut short at the end of the text is such bytes too.
 */
void http_text_clean(const char *text, struct buf *out)
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
