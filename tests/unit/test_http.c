/* test_http: strict JSON parsing, and a real server on 127.0.0.1 called with libcurl. */
#define _GNU_SOURCE /* strcasestr(3) */
#include <arpa/inet.h>
#include <check.h>
#include <curl/curl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "http.h"
#include "testdb.h"
#include "uuid.h"

/* http_json_compact: the bytes jansson's compact dump gives for the same document. */
START_TEST(test_http_json_compact)
{
    static const char *const texts[] = {
        "{}",
        "[]",
        "{\"a\": 1, \"b\": [1, 2, {\"c\": null}], \"d\": true}",
        "{\"name\": \"Pôle : a, b\", \"q\": \"say \\\"hi\\\" , ok\"}",
        "{\"back\": \"a\\\\\", \"after\": \"x y\"}", /* a string ending in \\ */
        "{\"ctl\": \"tab\\there\\nline\\u0001\", \"sp\": \"  lead\"}",
        "{\"n\": -12.5, \"big\": 10000000, \"nested\": {\"k\": {\"l\": [\"\", \" \"]}}}",
        "\n{\r\n\t\"a\" :\t[ 1 ,2 ] }\n",
    };
    for (size_t i = 0; i < sizeof texts / sizeof *texts; i++) {
        json_error_t err;
        json_t *doc = json_loads(texts[i], JSON_DECODE_ANY, &err);
        ck_assert_msg(doc, "case %zu: %s", i, err.text);
        char *want = json_dumps(doc, JSON_COMPACT | JSON_ENCODE_ANY);
        char *got = malloc(strlen(texts[i]) + 1);
        size_t n = http_json_compact(texts[i], got);
        ck_assert_str_eq(got, want);
        ck_assert_uint_eq(n, strlen(want));
        free(got);
        free(want);
        json_decref(doc);
    }
}
END_TEST

/* ---- http_json_parse_object: no server ---- */

START_TEST(test_http_json_parse_object)
{
    static const struct {
        const char *text;
        const char *why; /* NULL: accepted */
    } cases[] = {
        {"", "empty"},
        {"{\"a\":", "malformed JSON"},
        {"{'a':1}", "malformed JSON"},
        {"[1,2]", "must be a JSON object"},
        {"42", "JSON"}, /* jansson itself refuses a bare value */
        {"{\"a\":1,\"a\":2}", "malformed JSON"},
        {"{\"a\":1} x", "malformed JSON"},
        {"{\"a\":1}{}", "malformed JSON"},
        {"{\"a\":1}", NULL},
        {" {\"a\":1}\n", NULL},
    };
    char why[256];

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        why[0] = '\0';
        json_t *v = http_json_parse_object(cases[i].text, strlen(cases[i].text), why, sizeof why);
        if (!cases[i].why) {
            ck_assert_msg(v != NULL, "%s refused: %s", cases[i].text, why);
            ck_assert_int_eq(json_integer_value(json_object_get(v, "a")), 1);
            json_decref(v);
            continue;
        }
        ck_assert_msg(v == NULL, "%s accepted", cases[i].text);
        ck_assert_msg(strstr(why, cases[i].why) != NULL, "%s: why = %s", cases[i].text, why);
    }
    ck_assert_ptr_null(http_json_parse_object(NULL, 0, why, sizeof why));
}
END_TEST

/* ---- http_fields_unknown: members a closed schema does not name ---- */

START_TEST(test_http_fields_unknown)
{
    static const char *const known[] = {"signer", "note", NULL};
    static const char text[] = "{\"signer\": \"state\", \"signe\": 1, \"J\": "
                               "123456789012345678, \"note\": null}";
    char why[128], longer[300];
    json_t *body = http_json_parse_object(text, strlen(text), why, sizeof why);
    json_t *errors = json_array();

    ck_assert_ptr_nonnull(body);
    ck_assert_uint_eq(http_fields_unknown(body, NULL, known, "a signature", errors), 2);
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(errors, 0), "field")),
                     "signe");
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(errors, 1), "field")), "J");
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(errors, 1), "message")),
                     "is not a field of a signature");
    json_decref(errors);
    json_decref(body);

    /* a long name is cut at a character's boundary: the error stays valid UTF-8 */
    body = json_object();
    size_t n = 0;
    longer[n++] = 'a';
    while (n + 2 < sizeof longer - 1) {
        longer[n++] = (char)0xc3;
        longer[n++] = (char)0xa9; /* é */
    }
    longer[n] = '\0';
    json_object_set_new(body, longer, json_true());
    errors = json_array();
    ck_assert_uint_eq(http_fields_unknown(body, "lines[0]", known, "a line", errors), 1);
    const char *field = json_string_value(json_object_get(json_array_get(errors, 0), "field"));
    ck_assert_ptr_nonnull(field);
    ck_assert_int_eq(strncmp(field, "lines[0].aé", strlen("lines[0].aé")), 0);
    ck_assert_uint_le(strlen(field), strlen("lines[0].") + 100);
    json_decref(errors);
    json_decref(body);
}
END_TEST

/* ---- the in-process server ---- */

#define BODY_LIMIT 1024
#define DEFER_TIMEOUT_MS 2500

static int handle_echo(struct http_ctx *ctx)
{
    return http_reply_json(ctx, 200,
                           json_pack("{s:s?, s:s?, s:s?, s:s?}", "id", http_param(ctx, "id"), "x",
                                     http_param(ctx, "x"), "y", http_param(ctx, "y"), "q",
                                     http_query(ctx, "q")));
}

static int handle_create(struct http_ctx *ctx)
{
    return http_reply_json(ctx, 201, json_pack("{s:O}", "got", ctx->body)); /* O: body borrowed */
}

static int handle_silent(struct http_ctx *ctx)
{
    (void)ctx;
    return U_CALLBACK_COMPLETE; /* forgets to answer */
}

/* An answer that another thread gives after a while, as a batched database read does. */
struct later {
    struct http_ctx *ctx;
    long ms;
};

static atomic_int later_resumed; /* http_resume calls that returned */

static void *later_resume(void *arg)
{
    struct later *l = arg;

    usleep((useconds_t)l->ms * 1000);
    l->ms = -l->ms; /* the state is still the work's, even past the request's deadline */
    l->ms = -l->ms;
    http_resume(l->ctx); /* l belongs to the request from here: not touched again */
    atomic_fetch_add(&later_resumed, 1);
    return NULL;
}

static int later_answer(struct http_ctx *ctx)
{
    const struct later *l = http_state(ctx);

    return http_reply_json(ctx, 200, json_pack("{s:I}", "waited_ms", (json_int_t)l->ms));
}

static int handle_later(struct http_ctx *ctx)
{
    struct later *l = xcalloc(1, sizeof *l);
    pthread_t t;

    l->ctx = ctx;
    l->ms = strtol(http_param(ctx, "ms"), NULL, 10);
    int rc = http_defer(ctx, later_answer, l, free);
    ck_assert_int_eq(pthread_create(&t, NULL, later_resume, l), 0);
    pthread_detach(t);
    return rc;
}

/* A request whose work never comes back by itself: the test resumes it, late, by hand. */
static struct http_ctx *_Atomic never_ctx;

static int handle_never(struct http_ctx *ctx)
{
    struct later *l = xcalloc(1, sizeof *l);

    l->ctx = ctx;
    int rc = http_defer(ctx, later_answer, l, free);
    atomic_store(&never_ctx, ctx);
    return rc;
}

/* ---- http_defer_work: database work on the server's database threads ---- */

static atomic_int work_now, work_max; /* works running at once, and the most seen */

struct work {
    long ms;
    int ok;
};

static void work_run(struct http_ctx *ctx, struct db_conn *conn, void *arg)
{
    struct work *w = arg;
    char sql[64];
    (void)ctx;

    int now = atomic_fetch_add(&work_now, 1) + 1;
    for (int max = atomic_load(&work_max); now > max;)
        if (atomic_compare_exchange_weak(&work_max, &max, now))
            break;
    snprintf(sql, sizeof sql, "SELECT pg_sleep(%ld / 1000.0)", w->ms);
    PGresult *r = PQexec(conn->pg, sql);
    w->ok = PQresultStatus(r) == PGRES_TUPLES_OK;
    PQclear(r);
    atomic_fetch_sub(&work_now, 1);
}

static int work_answer(struct http_ctx *ctx)
{
    const struct work *w = http_state(ctx);

    return http_reply_json(ctx, 200, json_pack("{s:b}", "ok", w->ok));
}

static int handle_work(struct http_ctx *ctx)
{
    struct work *w = xcalloc(1, sizeof *w);

    w->ms = strtol(http_param(ctx, "ms"), NULL, 10);
    return http_defer_work(ctx, work_run, w, free, work_answer);
}

/* ---- HTTP_DB: a whole handler on a database thread ---- */

static atomic_int db_now, db_max; /* HTTP_DB handlers running at once, and the most seen */

static int handle_db(struct http_ctx *ctx)
{
    long ms = strtol(http_param(ctx, "ms"), NULL, 10);
    int now = atomic_fetch_add(&db_now, 1) + 1;

    for (int max = atomic_load(&db_max); now > max;)
        if (atomic_compare_exchange_weak(&db_max, &max, now))
            break;
    usleep((useconds_t)ms * 1000);
    atomic_fetch_sub(&db_now, 1);
    http_set_header(ctx, "Allow", "GET, from-the-db-thread");
    return http_reply_json(ctx, 203, json_pack("{s:i}", "slept", (int)ms));
}

/* Defers from a database thread: refused, 500. */
static int handle_db_defers(struct http_ctx *ctx)
{
    struct work *w = xcalloc(1, sizeof *w);

    return http_defer_work(ctx, work_run, w, free, work_answer);
}

/* Answers /v1/either/0 on its worker, and hands any other to handle_db on a database thread. */
static int handle_either(struct http_ctx *ctx)
{
    if (strcmp(http_param(ctx, "ms"), "0") == 0)
        return http_reply_json(ctx, 200, json_pack("{s:s}", "on", "worker"));
    return http_defer_handler(ctx, handle_db);
}

/* A gated route: only /v1/hook/good exists; any other token is an unknown path. */
static int handle_hook(struct http_ctx *ctx)
{
    if (http_gating(ctx))
        return strcmp(http_param(ctx, "token"), "good") == 0
                   ? HTTP_CONTINUE
                   : http_reply_problem(ctx, STATUS_NOT_FOUND, "no such resource: %s",
                                        ctx->req->url_path);
    return http_reply_json(ctx, 202, json_pack("{s:s}", "status", "accepted"));
}

/* Answers, then says it failed: the failure wins (500), as in ulfius. */
static int handle_fails(struct http_ctx *ctx)
{
    http_reply_json(ctx, 200, json_pack("{s:b}", "ok", 1));
    return U_CALLBACK_ERROR;
}

static int handle_refuses(struct http_ctx *ctx)
{
    (void)ctx;
    return U_CALLBACK_UNAUTHORIZED;
}

static const struct http_route routes[] = {
    {"POST", "/v1/hook/{token}", handle_hook, 0, HTTP_PUBLIC | HTTP_GATE | HTTP_BODY_FORM},
    {"GET", "/v1/fails", handle_fails, 0, HTTP_PUBLIC},
    {"GET", "/v1/refuses", handle_refuses, 0, HTTP_PUBLIC},
    {"GET", "/v1/later/{ms}", handle_later, 0, HTTP_PUBLIC},
    {"GET", "/v1/never", handle_never, 0, HTTP_PUBLIC},
    {"GET", "/v1/items/{id}", handle_echo, 0, HTTP_PUBLIC},
    {"PUT", "/v1/items/{id}", handle_echo, 0, HTTP_PUBLIC | HTTP_BODY_JSON},
    {"POST", "/v1/items", handle_create, 0, HTTP_PUBLIC | HTTP_BODY_JSON},
    {"GET", "/v1/a/{x}/b/{y}", handle_echo, 0, HTTP_PUBLIC},
    {"GET", "/v1/secure", handle_echo, ROLE_ANY, 0},
    {"POST", "/v1/secure", handle_create, ROLE_ANY, HTTP_BODY_JSON},
    {"GET", "/v1/work/{ms}", handle_work, 0, HTTP_PUBLIC},
    {"GET", "/v1/silent", handle_silent, 0, HTTP_PUBLIC},
    {"GET", "/v1/db/{ms}", handle_db, 0, HTTP_PUBLIC | HTTP_DB},
    {"GET", "/v1/db-defers", handle_db_defers, 0, HTTP_PUBLIC | HTTP_DB},
    {"GET", "/v1/either/{ms}", handle_either, 0, HTTP_PUBLIC},
};
#define NROUTES (sizeof routes / sizeof routes[0])

static struct http_server server;
static char base[64];
static long port;

/* A port nobody listens on right now (the kernel picks it; a small race is acceptable). */
static long free_port(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

static void server_setup(void)
{
    struct http_server_config cfg = {.bind = "127.0.0.1",
                                     .port = free_port(),
                                     .threads = 2,
                                     .body_limit = BODY_LIMIT,
                                     .timeout_s = 5,
                                     .connection_limit = 16,
                                     .defer_timeout_ms = DEFER_TIMEOUT_MS};

    port = cfg.port;

    ck_assert_int_eq(curl_global_init(CURL_GLOBAL_DEFAULT), CURLE_OK);
    ck_assert_int_eq(http_server_start(&server, &cfg, routes, NROUTES, NULL, NULL), STATUS_OK);
    snprintf(base, sizeof base, "http://127.0.0.1:%ld", cfg.port);
}

static void server_teardown(void)
{
    http_server_stop(&server);
    curl_global_cleanup();
}

struct reply {
    long code;
    char body[8192];
    size_t len;
    char content_type[128];
    char allow[128];
    char request_id[128];
    char www_authenticate[128];
};

static size_t on_body(char *data, size_t size, size_t n, void *ud)
{
    struct reply *r = ud;
    size_t len = size * n;

    ck_assert_uint_lt(r->len + len, sizeof r->body);
    memcpy(r->body + r->len, data, len);
    r->len += len;
    r->body[r->len] = '\0';
    return len;
}

/* Keeps the headers the tests look at, without their trailing CR LF. */
static size_t on_header(char *data, size_t size, size_t n, void *ud)
{
    static const struct {
        const char *name;
        size_t offset;
    } wanted[] = {
        {"Content-Type:", offsetof(struct reply, content_type)},
        {"Allow:", offsetof(struct reply, allow)},
        {"X-Request-Id:", offsetof(struct reply, request_id)},
        {"WWW-Authenticate:", offsetof(struct reply, www_authenticate)},
    };
    size_t len = size * n;

    for (size_t i = 0; i < sizeof wanted / sizeof wanted[0]; i++) {
        size_t k = strlen(wanted[i].name);
        if (len > k && strncasecmp(data, wanted[i].name, k) == 0) {
            int vlen = (int)strcspn(data + k + 1, "\r\n");
            snprintf((char *)ud + wanted[i].offset, 128, "%.*s", vlen, data + k + 1);
        }
    }
    return len;
}

/* Feeds a chunked upload: *ud bytes of spaces, then the end. */
static size_t on_read(char *buf, size_t size, size_t n, void *ud)
{
    size_t *left = ud;
    size_t len = size * n < *left ? size * n : *left;

    memset(buf, ' ', len);
    *left -= len;
    return len;
}

/*
 * Calls method path. body (may be NULL) is sent with content_type; chunked > 0 sends that many
 * bytes with Transfer-Encoding: chunked instead. header is one extra header line, or NULL.
 */
static void call(const char *method, const char *path, const char *content_type, const char *body,
                 size_t chunked, const char *header, struct reply *r)
{
    char url[2048], ct[128];
    struct curl_slist *headers = NULL;
    CURL *c = curl_easy_init();

    memset(r, 0, sizeof *r);
    snprintf(url, sizeof url, "%s%s", base, path);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
    curl_easy_setopt(c, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, r);
    if (strcmp(method, "HEAD") == 0)
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    else
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    if (body) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    } else if (chunked) {
        curl_easy_setopt(c, CURLOPT_POST, 1L);
        curl_easy_setopt(c, CURLOPT_READFUNCTION, on_read);
        curl_easy_setopt(c, CURLOPT_READDATA, &chunked);
        headers = curl_slist_append(headers, "Transfer-Encoding: chunked");
    }
    snprintf(ct, sizeof ct, "Content-Type: %s", content_type ? content_type : "");
    headers = curl_slist_append(headers, content_type ? ct : "Content-Type:");
    headers = curl_slist_append(headers, "Expect:"); /* no 100-continue round trip */
    if (header)
        headers = curl_slist_append(headers, header);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
    CURLcode rc = curl_easy_perform(c);
    ck_assert_msg(rc == CURLE_OK, "%s %s: %s", method, path, curl_easy_strerror(rc));
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->code);
    curl_slist_free_all(headers);
    curl_easy_cleanup(c);
}

static json_t *reply_json(const struct reply *r)
{
    json_error_t err;
    json_t *v = json_loadb(r->body, r->len, JSON_REJECT_DUPLICATES, &err);

    ck_assert_msg(json_is_object(v), "body is not a JSON object: %s (%s)", r->body, err.text);
    return v;
}

/* Asserts an RFC 9457 problem for st about path, with the reply's request id and a detail. */
static void check_problem(const struct reply *r, enum status st, const char *path)
{
    json_t *p = reply_json(r);

    ck_assert_int_eq(r->code, status_http_code(st));
    ck_assert_str_eq(r->content_type, "application/problem+json");
    ck_assert_int_eq(json_integer_value(json_object_get(p, "status")), status_http_code(st));
    ck_assert_str_eq(json_string_value(json_object_get(p, "title")), status_title(st));
    const char *type = json_string_value(json_object_get(p, "type"));
    ck_assert_msg(type && strstr(type, status_strerror(st)), "type %s", type ? type : "(none)");
    const char *detail = json_string_value(json_object_get(p, "detail"));
    ck_assert_msg(detail && detail[0], "no detail");
    ck_assert_str_eq(json_string_value(json_object_get(p, "instance")), path);
    ck_assert_str_eq(json_string_value(json_object_get(p, "request_id")), r->request_id);
    json_decref(p);
}

START_TEST(test_http_get_with_param)
{
    struct reply r;

    call("GET", "/v1/items/abc-123?q=hello", NULL, NULL, 0, NULL, &r);
    ck_assert_int_eq(r.code, 200);
    ck_assert_str_eq(r.content_type, "application/json");
    json_t *v = reply_json(&r);
    ck_assert_str_eq(json_string_value(json_object_get(v, "id")), "abc-123");
    ck_assert_str_eq(json_string_value(json_object_get(v, "q")), "hello");
    json_decref(v);

    call("GET", "/v1/a/first/b/second/", NULL, NULL, 0, NULL, &r); /* trailing slash too */
    ck_assert_int_eq(r.code, 200);
    v = reply_json(&r);
    ck_assert_str_eq(json_string_value(json_object_get(v, "x")), "first");
    ck_assert_str_eq(json_string_value(json_object_get(v, "y")), "second");
    json_decref(v);

    call("HEAD", "/v1/items/abc", NULL, NULL, 0, NULL, &r); /* HEAD is served by GET */
    ck_assert_int_eq(r.code, 200);
}
END_TEST

START_TEST(test_http_not_found)
{
    struct reply r;

    call("GET", "/v1/nothing", NULL, NULL, 0, NULL, &r);
    check_problem(&r, STATUS_NOT_FOUND, "/v1/nothing");
    call("GET", "/v1/items/abc/extra", NULL, NULL, 0, NULL, &r);
    check_problem(&r, STATUS_NOT_FOUND, "/v1/items/abc/extra");
    call("GET", "/v1/a/x/b/", NULL, NULL, 0, NULL, &r); /* an empty parameter is no match */
    check_problem(&r, STATUS_NOT_FOUND, "/v1/a/x/b/");
}
END_TEST

START_TEST(test_http_long_path)
{
    /* Longer than the dispatcher's path copy: answered as a problem, nothing overwritten. */
    char path[1200];
    struct reply r;

    snprintf(path, sizeof path, "/v1/items/");
    memset(path + 10, 'a', 1100);
    path[1110] = '\0';
    call("GET", path, NULL, NULL, 0, NULL, &r);
    ck_assert_int_ge(r.code, 400);
    ck_assert_int_lt(r.code, 500);
    ck_assert_str_eq(r.content_type, "application/problem+json");
}
END_TEST

START_TEST(test_http_method_not_allowed)
{
    struct reply r;

    call("DELETE", "/v1/items/abc", NULL, NULL, 0, NULL, &r);
    check_problem(&r, STATUS_METHOD_NOT_ALLOWED, "/v1/items/abc");
    ck_assert_str_eq(r.allow, "GET, PUT");
    call("GET", "/v1/items", NULL, NULL, 0, NULL, &r);
    check_problem(&r, STATUS_METHOD_NOT_ALLOWED, "/v1/items");
    ck_assert_str_eq(r.allow, "POST");
}
END_TEST

START_TEST(test_http_post_json)
{
    struct reply r;

    call("POST", "/v1/items", "application/json; charset=utf-8", "{\"name\":\"x\"}", 0, NULL, &r);
    ck_assert_int_eq(r.code, 201);
    json_t *v = reply_json(&r);
    ck_assert_str_eq(json_string_value(json_object_get(json_object_get(v, "got"), "name")), "x");
    json_decref(v);
}
END_TEST

START_TEST(test_http_unsupported_media_type)
{
    struct reply r;

    call("POST", "/v1/items", "text/plain", "{\"name\":\"x\"}", 0, NULL, &r);
    check_problem(&r, STATUS_UNSUPPORTED_MEDIA, "/v1/items");
    call("POST", "/v1/items", NULL, "{\"name\":\"x\"}", 0, NULL, &r);
    check_problem(&r, STATUS_UNSUPPORTED_MEDIA, "/v1/items");
    call("POST", "/v1/items", "application/jsonp", "{\"name\":\"x\"}", 0, NULL, &r);
    check_problem(&r, STATUS_UNSUPPORTED_MEDIA, "/v1/items");
}
END_TEST

START_TEST(test_http_bad_json)
{
    static const char *const bodies[] = {"{\"name\":", "{\"a\":1,\"a\":2}", "[1]", "{} trailing"};
    struct reply r;

    for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
        call("POST", "/v1/items", "application/json", bodies[i], 0, NULL, &r);
        check_problem(&r, STATUS_INVALID, "/v1/items");
    }
    call("PUT", "/v1/items/abc", "application/json", "", 0, NULL, &r);
    check_problem(&r, STATUS_INVALID, "/v1/items/abc");
}
END_TEST

START_TEST(test_http_body_limit)
{
    char body[BODY_LIMIT + 2];
    struct reply r;

    /* {"k":"…"} of exactly BODY_LIMIT bytes is accepted; one byte more is not. */
    memset(body, 'v', sizeof body);
    memcpy(body, "{\"k\":\"", 6);
    memcpy(body + BODY_LIMIT - 2, "\"}", 3);
    call("POST", "/v1/items", "application/json", body, 0, NULL, &r);
    ck_assert_int_eq(r.code, 201);
    memset(body, 'v', sizeof body);
    memcpy(body, "{\"k\":\"", 6);
    memcpy(body + BODY_LIMIT - 1, "\"}", 3);
    call("POST", "/v1/items", "application/json", body, 0, NULL, &r);
    check_problem(&r, STATUS_TOO_LARGE, "/v1/items");
}
END_TEST

START_TEST(test_http_body_limit_chunked)
{
    struct reply r;

    call("POST", "/v1/items", "application/json", NULL, 64 * 1024, NULL, &r);
    check_problem(&r, STATUS_TOO_LARGE, "/v1/items");
    call("POST", "/v1/items", "application/json", NULL, BODY_LIMIT + 1, NULL, &r);
    check_problem(&r, STATUS_TOO_LARGE, "/v1/items");
    /* A small chunked body is read whole: spaces only, so the JSON is malformed, not too big. */
    call("POST", "/v1/items", "application/json", NULL, 100, NULL, &r);
    check_problem(&r, STATUS_INVALID, "/v1/items");
}
END_TEST

START_TEST(test_http_request_id)
{
    struct reply r;

    call("GET", "/v1/nothing", NULL, NULL, 0, "X-Request-Id: abc-123_x.y:z", &r);
    ck_assert_str_eq(r.request_id, "abc-123_x.y:z");
    check_problem(&r, STATUS_NOT_FOUND, "/v1/nothing"); /* also in the problem body */

    call("GET", "/v1/items/1", NULL, NULL, 0, NULL, &r);
    ck_assert_int_eq(uuid_is_valid(r.request_id), 1);

    /* the spec gives a pattern: a value outside it is refused, not replaced */
    call("GET", "/v1/items/1", NULL, NULL, 0, "X-Request-Id: has space", &r);
    ck_assert_int_eq(uuid_is_valid(r.request_id), 1);
    check_problem(&r, STATUS_INVALID, "/v1/items/1");
    ck_assert_ptr_nonnull(strstr(r.body, "X-Request-Id"));
    call("GET", "/v1/items/1", NULL, NULL, 0, "X-Request-Id: <script>", &r);
    check_problem(&r, STATUS_INVALID, "/v1/items/1");

    char header[128], id[HTTP_REQUEST_ID_LEN + 2];
    memset(id, 'r', sizeof id - 1);
    id[HTTP_REQUEST_ID_LEN] = '\0'; /* the longest accepted */
    snprintf(header, sizeof header, "X-Request-Id: %s", id);
    call("GET", "/v1/items/1", NULL, NULL, 0, header, &r);
    ck_assert_str_eq(r.request_id, id);
    id[HTTP_REQUEST_ID_LEN] = 'r'; /* one more */
    id[HTTP_REQUEST_ID_LEN + 1] = '\0';
    snprintf(header, sizeof header, "X-Request-Id: %s", id);
    call("GET", "/v1/items/1", NULL, NULL, 0, header, &r);
    ck_assert_int_eq(uuid_is_valid(r.request_id), 1);
    check_problem(&r, STATUS_INVALID, "/v1/items/1");
}
END_TEST

START_TEST(test_http_roles_without_auth)
{
    struct reply r;

    call("GET", "/v1/secure", NULL, NULL, 0, NULL, &r);
    check_problem(&r, STATUS_UNAUTHORIZED, "/v1/secure");
    ck_assert_str_eq(r.www_authenticate, "Bearer realm=\"ptce\"");
    call("GET", "/v1/secure", NULL, NULL, 0,
         "Authorization: Bearer ptce_0123456789abcdef_ssssssssssssssssssssssssssssssss", &r);
    check_problem(&r, STATUS_UNAUTHORIZED, "/v1/secure");
}
END_TEST

START_TEST(test_http_handler_without_answer)
{
    struct reply r;

    call("GET", "/v1/silent", NULL, NULL, 0, NULL, &r);
    check_problem(&r, STATUS_INTERNAL, "/v1/silent");
}
END_TEST

START_TEST(test_http_metrics)
{
    struct reply r;
    struct buf b;

    call("GET", "/v1/items/1", NULL, NULL, 0, NULL, &r);
    call("GET", "/v1/items/2", NULL, NULL, 0, NULL, &r);
    call("GET", "/v1/nothing", NULL, NULL, 0, NULL, &r);
    buf_init(&b, 0);
    http_metrics_render(&server, &b);
    ck_assert_ptr_nonnull(strstr(
        b.data,
        "ptce_http_requests_total{method=\"GET\",route=\"/v1/items/{id}\",status=\"200\"} 2\n"));
    ck_assert_ptr_nonnull(strstr(
        b.data, "ptce_http_requests_total{method=\"\",route=\"unmatched\",status=\"404\"} 1\n"));
    ck_assert_ptr_nonnull(strstr(b.data, "ptce_http_request_duration_seconds_count{method=\"GET\","
                                         "route=\"/v1/items/{id}\"} 2\n"));
    buf_free(&b);
}
END_TEST

/* The value of one metric line (its name and labels as written), or -1 when absent. */
static long metric_value(const char *series)
{
    struct buf b;
    long v = -1;

    buf_init(&b, 0);
    http_metrics_render(&server, &b);
    /* the line that starts with the series, not the HELP line that names it */
    for (const char *at = b.data; (at = strstr(at, series)) != NULL; at++) {
        if ((at == b.data || at[-1] == '\n') && at[strlen(series)] == ' ') {
            v = strtol(at + strlen(series) + 1, NULL, 10);
            break;
        }
    }
    buf_free(&b);
    return v;
}

/* Waits up to 2 s for the metric to read want; returns what it read last. */
static long metric_wait(const char *series, long want)
{
    long v = -1;

    for (int i = 0; i < 200 && (v = metric_value(series)) != want; i++)
        usleep(10000);
    return v;
}

static int connect_raw(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    return fd;
}

/* Sends req on a new connection and reads the answer until the server closes it. */
static size_t raw_request(const char *req, char *out, size_t outlen)
{
    struct timeval tv = {.tv_sec = 5};
    int fd = connect_raw();
    size_t len = 0;
    ssize_t n;

    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ck_assert_int_eq(send(fd, req, strlen(req), 0), (ssize_t)strlen(req));
    while (len + 1 < outlen && (n = recv(fd, out + len, outlen - 1 - len, 0)) > 0)
        len += (size_t)n;
    out[len] = '\0';
    close(fd);
    return len;
}

/*
 * A path with bytes that are not UTF-8, raw or escaped: a problem+json 404 all the same, its
 * instance with each such byte as %XX (jansson refuses them, and the body was NULL before).
 */
START_TEST(test_http_not_found_non_utf8_path)
{
    static const char req[] =
        "GET /v1/\xff\xfe\xc3x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    char got[4096];
    struct reply r;

    raw_request(req, got, sizeof got);
    ck_assert_msg(strncmp(got, "HTTP/1.1 404", 12) == 0, "%s", got);
    ck_assert_msg(strcasestr(got, "Content-Type: application/problem+json") != NULL, "%s", got);
    const char *body = strstr(got, "\r\n\r\n");
    ck_assert_ptr_nonnull(body);
    json_error_t err;
    json_t *p = json_loads(body + 4, 0, &err);
    ck_assert_msg(json_is_object(p), "body %s: %s", body + 4, err.text);
    ck_assert_int_eq(json_integer_value(json_object_get(p, "status")), 404);
    ck_assert_str_eq(json_string_value(json_object_get(p, "instance")), "/v1/%FF%FE%C3x");
    ck_assert_ptr_nonnull(strstr(json_string_value(json_object_get(p, "detail")), "%FF%FE%C3x"));
    json_decref(p);

    call("GET", "/v1/%FF", NULL, NULL, 0, NULL, &r); /* sent escaped: matched as sent */
    check_problem(&r, STATUS_NOT_FOUND, "/v1/%FF");
}
END_TEST

START_TEST(test_http_connections_balanced_and_limited)
{
    int fds[16];
    char got[256];

    /* 16 connections at once (the limit) over 2 workers: 8 each, none left to a race */
    for (int i = 0; i < 16; i++)
        fds[i] = connect_raw();
    ck_assert_int_eq(metric_wait("ptce_http_connections", 16), 16);
    ck_assert_int_eq(metric_value("ptce_http_worker_connections{worker=\"0\"}"), 8);
    ck_assert_int_eq(metric_value("ptce_http_worker_connections{worker=\"1\"}"), 8);

    /* one more: closed at once, and counted */
    int extra = connect_raw();
    struct timeval tv = {.tv_sec = 2};
    setsockopt(extra, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ck_assert_int_eq(recv(extra, got, sizeof got, 0), 0);
    close(extra);
    ck_assert_int_eq(metric_value("ptce_http_connections_rejected_total"), 1);

    /* the connections held still serve requests */
    static const char req[] = "GET /v1/items/7 HTTP/1.1\r\nHost: t\r\n\r\n";
    ck_assert_int_eq(send(fds[15], req, sizeof req - 1, 0), (ssize_t)(sizeof req - 1));
    setsockopt(fds[15], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ssize_t n = recv(fds[15], got, sizeof got - 1, 0);
    ck_assert_int_gt(n, 12);
    got[n] = '\0';
    ck_assert_msg(strncmp(got, "HTTP/1.1 200", 12) == 0, "%s", got);

    /* closed by the clients: the count comes back down, so the limit frees up */
    for (int i = 0; i < 16; i++)
        close(fds[i]);
    ck_assert_int_eq(metric_wait("ptce_http_connections", 0), 0);
    extra = connect_raw();
    ck_assert_int_eq(metric_wait("ptce_http_connections", 1), 1);
    close(extra);
}
END_TEST

static double now_s(void)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* A call on its own thread (and its own connection), timed. */
struct background {
    const char *path;
    struct reply r;
    double secs;
    pthread_t thread;
};

static void *background_call(void *arg)
{
    struct background *b = arg;
    double t0 = now_s();

    call("GET", b->path, NULL, NULL, 0, NULL, &b->r);
    b->secs = now_s() - t0;
    return NULL;
}

/* Waits up to 2 s for the server to hold want deferred requests. */
static long deferred_wait(long want)
{
    long v = -1;

    for (int i = 0; i < 200 && (v = atomic_load(&server.deferred)) != want; i++)
        usleep(10000);
    return v;
}

static void check_waited(struct background *b, long ms)
{
    pthread_join(b->thread, NULL);
    ck_assert_int_eq(b->r.code, 200);
    json_t *v = reply_json(&b->r);
    ck_assert_int_eq(json_integer_value(json_object_get(v, "waited_ms")), ms);
    json_decref(v);
    ck_assert_msg(b->secs >= (double)ms / 1000, "answered after %.3f s", b->secs);
}

START_TEST(test_http_deferred_answer_frees_its_worker)
{
    struct background slow[2] = {{.path = "/v1/later/1500"}, {.path = "/v1/later/1500"}};
    struct reply r;

    /* two waiting requests on two connections: one on each of the 2 workers */
    for (int i = 0; i < 2; i++)
        ck_assert_int_eq(pthread_create(&slow[i].thread, NULL, background_call, &slow[i]), 0);
    ck_assert_int_eq(deferred_wait(2), 2);
    ck_assert_int_eq(metric_value("ptce_http_requests_deferred"), 2);
    /* a third request is answered at once: neither worker is held by the one it waits for */
    double t0 = now_s();
    call("GET", "/v1/items/7", NULL, NULL, 0, NULL, &r);
    double fast = now_s() - t0;
    ck_assert_int_eq(r.code, 200);
    ck_assert_msg(fast < 0.75, "a free request waited %.3f s", fast);
    for (int i = 0; i < 2; i++)
        check_waited(&slow[i], 1500);
    ck_assert_int_eq(deferred_wait(0), 0);
}
END_TEST

START_TEST(test_http_stop_answers_deferred_requests)
{
    struct background slow = {.path = "/v1/later/500"};

    ck_assert_int_eq(pthread_create(&slow.thread, NULL, background_call, &slow), 0);
    ck_assert_int_eq(deferred_wait(1), 1);
    http_server_stop(&server); /* returns once the waiting request is answered */
    ck_assert_int_eq(atomic_load(&server.deferred), 0);
    check_waited(&slow, 500);
}
END_TEST

START_TEST(test_http_client_gone_while_deferred)
{
    static const char req[] = "GET /v1/later/300 HTTP/1.1\r\nHost: t\r\n\r\n";
    int fd = connect_raw();
    struct reply r;

    ck_assert_int_eq(send(fd, req, sizeof req - 1, 0), (ssize_t)(sizeof req - 1));
    ck_assert_int_eq(deferred_wait(1), 1);
    close(fd); /* gone before the answer */
    /* the answer finds nobody: the request ends, and the worker goes on serving */
    ck_assert_int_eq(deferred_wait(0), 0);
    ck_assert_int_eq(metric_wait("ptce_http_connections", 0), 0);
    call("GET", "/v1/items/7", NULL, NULL, 0, NULL, &r);
    ck_assert_int_eq(r.code, 200);
}
END_TEST

/* Waits up to 2 s for the server to hold want requests under way. */
static long inflight_wait(long want)
{
    long v = -1;

    for (int i = 0; i < 200 && (v = atomic_load(&server.inflight)) != want; i++)
        usleep(10000);
    return v;
}

/* Past its deadline, a deferred request is answered 503 by its worker; a late resume is harmless.
 */
START_TEST(test_http_deferred_deadline_answers_503)
{
    struct background never = {.path = "/v1/never"};
    struct background slow = {.path = "/v1/later/3500"};
    struct reply r;

    ck_assert_int_eq(pthread_create(&never.thread, NULL, background_call, &never), 0);
    ck_assert_int_eq(pthread_create(&slow.thread, NULL, background_call, &slow), 0);
    ck_assert_int_eq(deferred_wait(2), 2);
    for (int i = 0; i < 2; i++) {
        struct background *b = i ? &slow : &never;
        pthread_join(b->thread, NULL);
        check_problem(&b->r, STATUS_UNAVAILABLE, b->path);
        ck_assert_msg(b->secs >= DEFER_TIMEOUT_MS / 1000.0 - 0.05 && b->secs < 3.4,
                      "%s answered after %.3f s", b->path, b->secs);
    }
    ck_assert_int_eq(atomic_load(&server.deferred), 0);
    ck_assert_int_eq(metric_value("ptce_http_requests_deferred_expired_total"), 2);
    /* the work comes back after the answer: its state was kept for it, and is released now */
    for (int i = 0; i < 300 && atomic_load(&later_resumed) == 0; i++)
        usleep(10000);
    ck_assert_int_eq(atomic_load(&later_resumed), 1);
    ck_assert_ptr_nonnull(atomic_load(&never_ctx));
    http_resume(atomic_load(&never_ctx));
    call("GET", "/v1/items/7", NULL, NULL, 0, NULL, &r);
    ck_assert_int_eq(r.code, 200);
    ck_assert_int_eq(inflight_wait(0), 0);
}
END_TEST

/* A stop with a request whose work never comes back: answered, then a clean stop. */
START_TEST(test_http_stop_with_never_resumed_request)
{
    struct background never = {.path = "/v1/never"};

    ck_assert_int_eq(pthread_create(&never.thread, NULL, background_call, &never), 0);
    ck_assert_int_eq(deferred_wait(1), 1);
    double t0 = now_s();
    http_server_stop(&server); /* MHD is never stopped with the connection suspended */
    double took = now_s() - t0;
    ck_assert_msg(took < DEFER_TIMEOUT_MS / 1000.0 + 1, "stop took %.3f s", took);
    pthread_join(never.thread, NULL);
    check_problem(&never.r, STATUS_UNAVAILABLE, "/v1/never");
    ck_assert_int_eq(atomic_load(&server.deferred), 0);
    http_resume(atomic_load(&never_ctx)); /* after the server is gone: only releases */
}
END_TEST

START_TEST(test_http_requests_cut_short_end)
{
    static const char *cut[] = {
        "GET /v1/items/1 HTTP/1.1\r\nHost: t\r\n",                   /* headers never end */
        "GET /v1/items/1 HTTP/1.1\r\nHost: t\r\nBad header\r\n\r\n", /* MHD answers 400 */
        "POST /v1/items HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n{", /* short body */
    };

    for (size_t i = 0; i < sizeof cut / sizeof cut[0]; i++) {
        int fd = connect_raw();
        ck_assert_int_eq(send(fd, cut[i], strlen(cut[i]), 0), (ssize_t)strlen(cut[i]));
        usleep(100 * 1000);
        close(fd);
        /* each request ends with its connection: nothing left under way, nothing leaked */
        ck_assert_msg(inflight_wait(0) == 0, "case %zu left a request under way", i);
    }
}
END_TEST

START_TEST(test_http_routes_check)
{
    static const struct {
        struct http_route r[2];
        size_t n;
        const char *why; /* NULL: accepted */
    } cases[] = {
        {{{"GET", "/a/{id}", handle_echo, ROLE_ANY, HTTP_HIDE(0)}}, 1, NULL},
        {{{"GET", "/a", handle_echo, 0, HTTP_PUBLIC}}, 1, NULL},
        {{{"GET", "/a", handle_echo, ROLE_PARTNER, HTTP_HIDE(ROLE_DASHBOARD)}}, 1, NULL},
        {{{"GET", "/a", handle_echo, 0, 0}}, 1, "not public"},
        {{{"GET", "/a", handle_echo, ROLE_PARTNER, HTTP_PUBLIC}}, 1, "public and names roles"},
        {{{"GET", "/a", handle_echo, 0, HTTP_PUBLIC | HTTP_HIDE(ROLE_DASHBOARD)}}, 1, "public"},
        {{{"GET", "/a", handle_echo, ROLE_DASHBOARD, HTTP_HIDE(ROLE_DASHBOARD)}}, 1, "hides"},
        {{{"GET", "/a", handle_echo, 1u << 9, 0}}, 1, "role that does not exist"},
        {{{"GET", "a", handle_echo, ROLE_ANY, 0}}, 1, "start with '/'"},
        {{{"GET", "/a//b", handle_echo, ROLE_ANY, 0}}, 1, "empty segment"},
        {{{"GET", "/a/x{id}", handle_echo, ROLE_ANY, 0}}, 1, "whole segment"},
        {{{"GET", "/a/{id", handle_echo, ROLE_ANY, 0}}, 1, "whole segment"},
        {{{"GET", "/a/{}", handle_echo, ROLE_ANY, 0}}, 1, "whole segment"},
        {{{"GET", "/{a}/{b}/{c}/{d}/{e}", handle_echo, ROLE_ANY, 0}}, 1, "more than"},
        {{{"FETCH", "/a", handle_echo, ROLE_ANY, 0}}, 1, "not a method"},
        {{{"GET", "/a", NULL, ROLE_ANY, 0}}, 1, "no handler"},
        {{{"GET", "/a", handle_echo, ROLE_ANY, 0}, {"GET", "/a", handle_echo, ROLE_ANY, 0}},
         2,
         "twice"},
        {{{"GET", "/a", handle_echo, ROLE_ANY, 0}, {"POST", "/a", handle_echo, ROLE_ANY, 0}},
         2,
         NULL},
    };
    char why[256];

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        why[0] = '\0';
        enum status st = http_routes_check(cases[i].r, cases[i].n, why, sizeof why);
        if (!cases[i].why) {
            ck_assert_msg(st == STATUS_OK, "case %zu refused: %s", i, why);
            continue;
        }
        ck_assert_msg(st == STATUS_INVALID, "case %zu accepted", i);
        ck_assert_msg(strstr(why, cases[i].why) != NULL, "case %zu: why = %s", i, why);
    }
    ck_assert_int_eq(http_routes_check(routes, NROUTES, why, sizeof why), STATUS_OK);

    /* a bad table does not start */
    struct http_server other;
    struct http_server_config cfg = {.bind = "127.0.0.1",
                                     .port = free_port(),
                                     .threads = 1,
                                     .body_limit = BODY_LIMIT,
                                     .timeout_s = 5,
                                     .connection_limit = 16};
    ck_assert_int_eq(http_server_start(&other, &cfg, &cases[3].r[0], 1, NULL, NULL),
                     STATUS_INVALID);

    struct buf out;
    const struct http_route printed[] = {
        {"GET", "/p", handle_echo, 0, HTTP_PUBLIC},
        {"POST", "/d", handle_echo, ROLE_PARTNER | ROLE_NATIONAL_ADMIN, HTTP_HIDE(ROLE_DASHBOARD)},
    };
    buf_init(&out, 0);
    http_routes_print(printed, 2, &out);
    ck_assert_str_eq(out.data, "GET /p public -\nPOST /d national_admin,partner dashboard\n");
    buf_free(&out);
}
END_TEST

/* An unauthenticated request is answered from its headers: the body is never waited for. */
START_TEST(test_http_unauthenticated_body_not_read)
{
    static const char head[] = "POST /v1/secure HTTP/1.1\r\nHost: t\r\n"
                               "Content-Type: application/json\r\n"
                               "Content-Length: 1048576\r\n\r\n";
    char chunk[65536], got[512];
    struct timeval tv = {.tv_sec = 3};
    int fd = connect_raw();

    memset(chunk, ' ', sizeof chunk);
    ck_assert_int_eq(send(fd, head, sizeof head - 1, 0), (ssize_t)(sizeof head - 1));
    ck_assert_int_eq(send(fd, chunk, sizeof chunk, MSG_NOSIGNAL), (ssize_t)sizeof chunk);
    /* 64 KiB of the 1 MiB sent: a server that read the body first would still be waiting */
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ssize_t n = recv(fd, got, sizeof got - 1, 0);
    ck_assert_msg(n > 12, "no answer before the body was sent");
    got[n] = '\0';
    ck_assert_msg(strncmp(got, "HTTP/1.1 401", 12) == 0, "%s", got);
    close(fd);
}
END_TEST

START_TEST(test_http_query_not_utf8)
{
    struct reply r;

    call("GET", "/v1/items/1?q=%FF%FE", NULL, NULL, 0, NULL, &r);
    check_problem(&r, STATUS_INVALID, "/v1/items/1");
    json_t *p = reply_json(&r);
    json_t *e = json_array_get(json_object_get(p, "errors"), 0);
    ck_assert_str_eq(json_string_value(json_object_get(e, "field")), "q");
    json_decref(p);
    call("GET", "/v1/items/1?q=%C3%A9", NULL, NULL, 0, NULL, &r); /* é */
    ck_assert_int_eq(r.code, 200);
    ck_assert_ptr_nonnull(strstr(r.body, "\"q\":\"\xc3\xa9\""));
}
END_TEST

START_TEST(test_http_path_params_decoded)
{
    struct reply r;

    call("GET", "/v1/items/a%20b%2Fc+d", NULL, NULL, 0, NULL, &r);
    ck_assert_int_eq(r.code, 200);
    json_t *v = reply_json(&r);
    ck_assert_str_eq(json_string_value(json_object_get(v, "id")), "a b/c d");
    json_decref(v);
}
END_TEST

/* A wrong secret is an unknown path whatever else is wrong with the request. */
START_TEST(test_http_gate_before_everything)
{
    char big[BODY_LIMIT * 2];
    struct reply r, unknown;

    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    call("POST", "/v1/nothing/bad", "text/plain", big, 0, NULL, &unknown);
    check_problem(&unknown, STATUS_NOT_FOUND, "/v1/nothing/bad");
    call("POST", "/v1/hook/bad", "text/plain", big, 0, NULL, &r); /* 413 and 415 otherwise */
    check_problem(&r, STATUS_NOT_FOUND, "/v1/hook/bad");
    call("GET", "/v1/hook/bad", NULL, NULL, 0, NULL, &r); /* 405 otherwise */
    check_problem(&r, STATUS_NOT_FOUND, "/v1/hook/bad");
    ck_assert_str_eq(r.allow, "");
    /* the right secret: the usual checks, then the handler */
    call("GET", "/v1/hook/good", NULL, NULL, 0, NULL, &r);
    check_problem(&r, STATUS_METHOD_NOT_ALLOWED, "/v1/hook/good");
    call("POST", "/v1/hook/good", "text/plain", "x=1", 0, NULL, &r);
    check_problem(&r, STATUS_UNSUPPORTED_MEDIA, "/v1/hook/good");
    call("POST", "/v1/hook/good", "application/x-www-form-urlencoded", "x=1", 0, NULL, &r);
    ck_assert_int_eq(r.code, 202);
}
END_TEST

START_TEST(test_http_handler_return_value)
{
    struct reply r;

    call("GET", "/v1/fails", NULL, NULL, 0, NULL, &r);
    check_problem(&r, STATUS_INTERNAL, "/v1/fails");
    call("GET", "/v1/refuses", NULL, NULL, 0, NULL, &r);
    check_problem(&r, STATUS_UNAUTHORIZED, "/v1/refuses");
}
END_TEST

/* A server of 8 workers whose database work gets a pool of pool_size connections. */
static void db_server_start(struct http_server *srv, struct db_pool **pool, size_t pool_size,
                            long wait_ms)
{
    struct http_server_config cfg = {.bind = "127.0.0.1",
                                     .port = free_port(),
                                     .threads = 8,
                                     .body_limit = BODY_LIMIT,
                                     .timeout_s = 5,
                                     .connection_limit = 64,
                                     .defer_timeout_ms = 10000,
                                     .db_threads = 16};

    ck_assert_int_eq(db_pool_open(pool, testdb_url(), "public", pool_size, wait_ms, 0), STATUS_OK);
    cfg.db_pool = *pool;
    ck_assert_int_eq(http_server_start(srv, &cfg, routes, NROUTES, NULL, NULL), STATUS_OK);
    snprintf(base, sizeof base, "http://127.0.0.1:%ld", cfg.port);
}

/* More database-bound requests than workers are all under way at once. */
START_TEST(test_http_defer_work_not_bound_by_workers)
{
    struct http_server dbsrv;
    struct db_pool *pool;
    struct background b[12];

    db_server_start(&dbsrv, &pool, 16, 2000);
    atomic_store(&work_max, 0);
    double t0 = now_s();
    for (int i = 0; i < 12; i++) {
        b[i] = (struct background){.path = "/v1/work/800"};
        ck_assert_int_eq(pthread_create(&b[i].thread, NULL, background_call, &b[i]), 0);
    }
    for (int i = 0; i < 12; i++) {
        pthread_join(b[i].thread, NULL);
        ck_assert_int_eq(b[i].r.code, 200);
        ck_assert_ptr_nonnull(strstr(b[i].r.body, "\"ok\":true"));
    }
    double secs = now_s() - t0;
    /* serialised by the 8 workers, 12 works of 0.8 s would take 1.6 s and overlap 8 at most */
    ck_assert_int_eq(atomic_load(&work_max), 12);
    ck_assert_msg(secs < 1.6, "12 works took %.2f s", secs);
    http_server_stop(&dbsrv);
    db_pool_close(pool);
}
END_TEST

START_TEST(test_http_defer_work_pool_exhausted)
{
    struct http_server dbsrv;
    struct db_pool *pool;
    struct background holder = {.path = "/v1/work/1500"};
    struct reply r;

    db_server_start(&dbsrv, &pool, 1, 100);
    ck_assert_int_eq(pthread_create(&holder.thread, NULL, background_call, &holder), 0);
    for (int i = 0; i < 100 && atomic_load(&work_now) == 0; i++)
        usleep(10000); /* the holder has the only connection */
    call("GET", "/v1/work/10", NULL, NULL, 0, NULL, &r);
    check_problem(&r, STATUS_UNAVAILABLE, "/v1/work/10");
    pthread_join(holder.thread, NULL);
    ck_assert_int_eq(holder.r.code, 200);
    http_server_stop(&dbsrv);
    db_pool_close(pool);
}
END_TEST

START_TEST(test_http_defer_work_without_pool)
{
    struct reply r;

    call("GET", "/v1/work/10", NULL, NULL, 0, NULL, &r); /* the fixture's server has no pool */
    check_problem(&r, STATUS_UNAVAILABLE, "/v1/work/10");
}
END_TEST

/* HTTP_DB handlers run beside the 2 workers (4 at once), their answer whole: status, header, body.
 */
/* Calls path (an answer of handle_db's, after 600 ms) 4 times at once: all 4 run together. */
static void db_calls_check(const char *path)
{
    struct background b[4];

    atomic_store(&db_max, 0);
    for (int i = 0; i < 4; i++) {
        b[i] = (struct background){.path = path};
        ck_assert_int_eq(pthread_create(&b[i].thread, NULL, background_call, &b[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(b[i].thread, NULL);
        ck_assert_int_eq(b[i].r.code, 203);
        ck_assert_str_eq(b[i].r.body, "{\"slept\":600}");
        ck_assert_str_eq(b[i].r.allow, "GET, from-the-db-thread");
        ck_assert_str_ne(b[i].r.request_id, ""); /* set by the worker, kept */
    }
    ck_assert_int_eq(atomic_load(&db_max), 4); /* on the 2 workers, 2 at most */
}

START_TEST(test_http_db_handlers_off_the_workers)
{
    struct reply r;

    db_calls_check("/v1/db/600");
    call("GET", "/v1/db-defers", NULL, NULL, 0, NULL, &r);
    check_problem(&r, STATUS_INTERNAL, "/v1/db-defers");
}
END_TEST

/* A handler on its worker hands some requests to a database thread whole (http_defer_handler). */
START_TEST(test_http_defer_handler)
{
    struct reply r;

    call("GET", "/v1/either/0", NULL, NULL, 0, NULL, &r);
    ck_assert_int_eq(r.code, 200);
    ck_assert_str_eq(r.body, "{\"on\":\"worker\"}");
    db_calls_check("/v1/either/600");
}
END_TEST

/* Past the deadline the client gets 503; the handler's late answer is dropped, nothing leaks. */
START_TEST(test_http_db_handler_past_deadline)
{
    struct reply r;
    char path[64];

    snprintf(path, sizeof path, "/v1/db/%d", DEFER_TIMEOUT_MS + 700);
    call("GET", path, NULL, NULL, 0, NULL, &r);
    check_problem(&r, STATUS_UNAVAILABLE, path);
    sleep(1); /* the handler ends, answering into its own response */
    call("GET", "/v1/db/1", NULL, NULL, 0, NULL, &r);
    ck_assert_int_eq(r.code, 203);
}
END_TEST

START_TEST(test_http_start_failures)
{
    struct http_server other;
    struct http_server_config bad = {.bind = "256.0.0.1",
                                     .port = free_port(),
                                     .threads = 2,
                                     .body_limit = BODY_LIMIT,
                                     .timeout_s = 5,
                                     .connection_limit = 16};
    struct http_server_config taken = bad;

    taken.bind = "127.0.0.1";
    taken.port = port;

    ck_assert_int_eq(http_server_start(&other, &bad, routes, NROUTES, NULL, NULL), STATUS_INVALID);
    /* the fixture's server holds the port */
    ck_assert_int_eq(http_server_start(&other, &taken, routes, NROUTES, NULL, NULL),
                     STATUS_UNAVAILABLE);
    http_server_stop(&other); /* a server that did not start: a no-op */
}
END_TEST

static Suite *http_suite(void)
{
    Suite *s = suite_create("http");
    TCase *json = tcase_create("json");
    TCase *tc = tcase_create("server");

    tcase_set_timeout(json, 10);
    tcase_add_test(json, test_http_json_parse_object);
    tcase_add_test(json, test_http_fields_unknown);
    tcase_add_test(json, test_http_json_compact);
    suite_add_tcase(s, json);

    tcase_set_timeout(tc, 30);
    tcase_add_checked_fixture(tc, server_setup, server_teardown);
    tcase_add_test(tc, test_http_get_with_param);
    tcase_add_test(tc, test_http_not_found);
    tcase_add_test(tc, test_http_not_found_non_utf8_path);
    tcase_add_test(tc, test_http_long_path);
    tcase_add_test(tc, test_http_method_not_allowed);
    tcase_add_test(tc, test_http_post_json);
    tcase_add_test(tc, test_http_unsupported_media_type);
    tcase_add_test(tc, test_http_bad_json);
    tcase_add_test(tc, test_http_body_limit);
    tcase_add_test(tc, test_http_body_limit_chunked);
    tcase_add_test(tc, test_http_request_id);
    tcase_add_test(tc, test_http_roles_without_auth);
    tcase_add_test(tc, test_http_handler_without_answer);
    tcase_add_test(tc, test_http_metrics);
    tcase_add_test(tc, test_http_connections_balanced_and_limited);
    tcase_add_test(tc, test_http_deferred_answer_frees_its_worker);
    tcase_add_test(tc, test_http_stop_answers_deferred_requests);
    tcase_add_test(tc, test_http_client_gone_while_deferred);
    tcase_add_test(tc, test_http_deferred_deadline_answers_503);
    tcase_add_test(tc, test_http_stop_with_never_resumed_request);
    tcase_add_test(tc, test_http_requests_cut_short_end);
    tcase_add_test(tc, test_http_start_failures);
    tcase_add_test(tc, test_http_routes_check);
    tcase_add_test(tc, test_http_unauthenticated_body_not_read);
    tcase_add_test(tc, test_http_query_not_utf8);
    tcase_add_test(tc, test_http_path_params_decoded);
    tcase_add_test(tc, test_http_gate_before_everything);
    tcase_add_test(tc, test_http_handler_return_value);
    tcase_add_test(tc, test_http_defer_work_not_bound_by_workers);
    tcase_add_test(tc, test_http_defer_work_pool_exhausted);
    tcase_add_test(tc, test_http_defer_work_without_pool);
    tcase_add_test(tc, test_http_db_handlers_off_the_workers);
    tcase_add_test(tc, test_http_db_handler_past_deadline);
    tcase_add_test(tc, test_http_defer_handler);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(http_suite());

    testdb_init();
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
