/* ds_client: GraphQL over libcurl with DS's rate limit and error conventions. */
#include "ds_client.h"

#include <curl/curl.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <qpdf/qpdf-c.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "clock.h"
#include "log.h"
#include "uuid.h"

struct ds_client {
    char *api_url;
    char *token;
    char *queries;
    long timeout_ms;
    long max_file_bytes;
    int allow_http;
    char *user_agent;
    pthread_mutex_t lock;
    time_t paused_until; /* set by a 429, shared by every worker: one token, one budget */
};

static const char *const ds_result_names[] = {"ok",      "not_found", "rate_limited", "retry",
                                              "expired", "fatal",     "too_large",    "refused"};

const char *ds_result_name(enum ds_result r)
{
    return ds_result_names[r];
}

struct ds_client *ds_client_new(const struct ds_client_config *cfg, const char *queries)
{
    struct ds_client *c = xcalloc(1, sizeof *c);

    c->api_url = xstrdup(cfg->api_url);
    c->token = xstrdup(cfg->token);
    c->queries = xstrdup(queries);
    c->timeout_ms = cfg->timeout_ms;
    c->max_file_bytes = cfg->max_file_bytes;
    c->allow_http = cfg->allow_http;
    c->user_agent = xstrdup(cfg->user_agent ? cfg->user_agent : "ptce/1");
    pthread_mutex_init(&c->lock, NULL);
    return c;
}

void ds_client_free(struct ds_client *c)
{
    if (!c)
        return;
    pthread_mutex_destroy(&c->lock);
    free(c->api_url);
    free(c->token);
    free(c->queries);
    free(c->user_agent);
    free(c);
}

/* ---- HTTP exchange ---- */

struct ds_exchange {
    struct buf body;
    time_t rate_reset; /* from RateLimit-Reset */
    long retry_after;  /* from Retry-After, seconds */
    int too_large;     /* the answer went past the cap (announced or read) */
};

static size_t ds_write_cb(char *ptr, size_t size, size_t nmemb, void *ud)
{
    struct ds_exchange *x = ud;

    if (buf_append(&x->body, ptr, size * nmemb) == 0)
        return size * nmemb;
    x->too_large = 1; /* buf_append fails only at the cap: xalloc aborts on out-of-memory */
    return 0;         /* 0 aborts the transfer */
}

static size_t ds_header_cb(char *line, size_t size, size_t nmemb, void *ud)
{
    struct ds_exchange *x = ud;
    size_t n = size * nmemb;
    char value[64];

    if (n > 16 && strncasecmp(line, "RateLimit-Reset:", 16) == 0) {
        snprintf(value, sizeof value, "%.*s", (int)(n - 16), line + 16);
        x->rate_reset = (time_t)strtoll(value, NULL, 10);
    } else if (n > 12 && strncasecmp(line, "Retry-After:", 12) == 0) {
        snprintf(value, sizeof value, "%.*s", (int)(n - 12), line + 12);
        x->retry_after = strtol(value, NULL, 10);
    }
    return n;
}

/* libcurl's progress callback, about once a second even when idle: non-zero aborts. */
static int ds_progress_cb(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                          curl_off_t ulnow)
{
    (void)dltotal;
    (void)dlnow;
    (void)ultotal;
    (void)ulnow;
    return atomic_load((atomic_int *)ud) ? 1 : 0;
}

/*
 * Performs one request; returns the HTTP status, or -1 for a transport failure. A set *stop
 * (stop may be NULL) abandons the request within a second, with err "stopping": a service
 * that stops does not wait for DS's timeout.
 */
static long ds_perform(struct ds_client *c, const char *url, const char *post,
                       struct ds_exchange *x, long limit, char *err, size_t errlen,
                       atomic_int *stop)
{
    CURL *h = curl_easy_init();
    struct curl_slist *hdrs = NULL;
    char auth[512];
    long code = -1;

    buf_init(&x->body, (size_t)limit);
    x->rate_reset = 0;
    x->retry_after = 0;
    x->too_large = 0;
    if (!h)
        return -1;
    /* A Content-Length over the cap fails at once (CURLE_FILESIZE_EXCEEDED), before any body. */
    curl_easy_setopt(h, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)limit);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, c->timeout_ms);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, c->timeout_ms < 5000 ? c->timeout_ms : 5000);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, ds_write_cb);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, ds_header_cb);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, x);
    if (stop) {
        curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
        curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, ds_progress_cb);
        curl_easy_setopt(h, CURLOPT_XFERINFODATA, stop);
    }
    curl_easy_setopt(h, CURLOPT_USERAGENT, c->user_agent);
    /* The token travels in every request: plain http only when configured for tests. */
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, c->allow_http ? "http,https" : "https");
    curl_easy_setopt(h, CURLOPT_REDIR_PROTOCOLS_STR, c->allow_http ? "http,https" : "https");
    if (post) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", c->token);
        hdrs = curl_slist_append(hdrs, auth);
        hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, post);
    }
    CURLcode rc = curl_easy_perform(h);
    if (rc == CURLE_FILESIZE_EXCEEDED)
        x->too_large = 1;
    if (rc == CURLE_OK)
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
    else if (rc == CURLE_ABORTED_BY_CALLBACK)
        snprintf(err, errlen, "stopping");
    else
        snprintf(err, errlen, "%s: %s", x->too_large ? "answer too large" : "transport",
                 curl_easy_strerror(rc));
    curl_slist_free_all(hdrs);
    curl_easy_cleanup(h);
    return code;
}

/* Waits while a 429 pause is in force. Returns -1 if asked to stop meanwhile. */
static int ds_wait_pause(struct ds_client *c, atomic_int *stop)
{
    for (;;) {
        pthread_mutex_lock(&c->lock);
        time_t until = c->paused_until;
        pthread_mutex_unlock(&c->lock);
        if (time(NULL) >= until)
            return 0;
        if (stop && atomic_load(stop))
            return -1;
        clock_sleep_ms(100);
    }
}

/* Records a 429: DS sends RateLimit-Reset (epoch seconds), maybe no Retry-After. */
static time_t ds_pause(struct ds_client *c, const struct ds_exchange *x)
{
    time_t now = time(NULL);
    /* A reset already past (clock skew, a late answer) means "soon", not "in a minute". */
    time_t until = x->rate_reset > 0 && x->rate_reset <= now           ? now + 1
                   : x->rate_reset > now && x->rate_reset < now + 3600 ? x->rate_reset
                   : x->retry_after > 0 && x->retry_after < 3600       ? now + x->retry_after
                                                                       : now + 60;

    pthread_mutex_lock(&c->lock);
    if (until > c->paused_until)
        c->paused_until = until;
    pthread_mutex_unlock(&c->lock);
    return until;
}

/* Reads a 200 answer: data, or errors[] (DS answers errors with HTTP 200). */
static enum ds_result ds_read_answer(const struct buf *body, json_t **data, char *err,
                                     size_t errlen)
{
    json_error_t jerr;
    json_t *root = json_loadb(body->data ? body->data : "", body->len, 0, &jerr);
    json_t *errors = json_object_get(root, "errors");

    if (!json_is_object(root)) {
        snprintf(err, errlen, "unreadable answer: %s", jerr.text);
        json_decref(root);
        return DS_RETRY;
    }
    if (json_array_size(errors) > 0) {
        json_t *first = json_array_get(errors, 0);
        const char *msg = json_string_value(json_object_get(first, "message"));
        const char *code =
            json_string_value(json_object_get(json_object_get(first, "extensions"), "code"));
        snprintf(err, errlen, "DS error %s: %s", code ? code : "-", msg ? msg : "-");
        enum ds_result r = code && !strcmp(code, "not_found")               ? DS_NOT_FOUND
                           : code && !strcmp(code, "internal_server_error") ? DS_RETRY
                                                                            : DS_FATAL;
        json_decref(root);
        return r;
    }
    *data = json_incref(json_object_get(root, "data"));
    json_decref(root);
    if (!json_is_object(*data)) {
        json_decref(*data);
        *data = NULL;
        snprintf(err, errlen, "answer without data");
        return DS_RETRY;
    }
    return DS_OK;
}

static enum ds_result ds_classify(long code, char *err, size_t errlen)
{
    if (code < 0)
        return DS_RETRY;
    snprintf(err, errlen, "HTTP %ld", code);
    if (code == 429)
        return DS_RATE_LIMITED;
    if (code >= 500 || code == 408)
        return DS_RETRY;
    return DS_FATAL;
}

enum ds_result ds_client_query(struct ds_client *c, const char *op, json_t *variables,
                               json_t **data, char *err, size_t errlen, atomic_int *stop)
{
    char url[1024];
    struct ds_exchange x;
    json_t *req = json_pack("{s:s, s:s, s:o}", "query", c->queries, "operationName", op,
                            "variables", variables);
    char *post = json_dumps(req, JSON_COMPACT);

    json_decref(req);
    *data = NULL;
    err[0] = '\0';
    if (ds_wait_pause(c, stop) != 0) {
        free(post);
        snprintf(err, errlen, "stopping");
        return DS_RETRY;
    }
    snprintf(url, sizeof url, "%s/api/v2/graphql", c->api_url);
    long code = ds_perform(c, url, post, &x, 64L * 1024 * 1024, err, errlen, stop);
    free(post);
    enum ds_result r =
        code == 200 ? ds_read_answer(&x.body, data, err, errlen) : ds_classify(code, err, errlen);
    if (r == DS_RATE_LIMITED) {
        time_t until = ds_pause(c, &x);
        log_event(LOG_WARN, "ds.rate_limited", "{s:I}", "paused_until", (json_int_t)until);
    }
    buf_free(&x.body);
    return r;
}

/* Joins the messages of a payload's errors[] ("a; b") into err. */
static void ds_join_messages(json_t *errors, char *err, size_t errlen)
{
    size_t i, used = 0;
    json_t *e;

    err[0] = '\0';
    json_array_foreach(errors, i, e)
    {
        const char *msg = json_string_value(json_object_get(e, "message"));
        int n = snprintf(err + used, errlen - used, "%s%s", i ? "; " : "", msg ? msg : "-");
        if (n < 0 || (size_t)n >= errlen - used)
            return; /* truncated: the first messages are the ones that matter */
        used += (size_t)n;
    }
}

enum ds_result ds_client_mutate(struct ds_client *c, const char *op, const char *field,
                                json_t *variables, json_t **payload, char *err, size_t errlen,
                                atomic_int *stop)
{
    json_t *data;
    enum ds_result r = ds_client_query(c, op, variables, &data, err, errlen, stop);

    if (payload)
        *payload = NULL;
    if (r != DS_OK)
        return r;
    json_t *p = json_object_get(data, field); /* borrowed from data */
    json_t *errors = json_object_get(p, "errors");
    if (!json_is_object(p)) {
        snprintf(err, errlen, "answer without the %s payload", field);
        r = DS_RETRY;
    } else if (json_array_size(errors) > 0) {
        ds_join_messages(errors, err, errlen);
        r = DS_REFUSED;
    } else if (payload) {
        *payload = json_incref(p);
    }
    json_decref(data);
    return r;
}

void ds_dossier_global_id(long long number, char *out, size_t len)
{
    char plain[48];
    unsigned char encoded[68];
    int n = snprintf(plain, sizeof plain, "Dossier-%lld", number);

    EVP_EncodeBlock(encoded, (const unsigned char *)plain, n); /* padded, as graphql-ruby */
    snprintf(out, len, "%s", (const char *)encoded);
}

int ds_url_allowed(const char *url, int allow_http)
{
    if (!url)
        return 0;
    if (strncasecmp(url, "https://", 8) == 0)
        return url[8] != '\0';
    return allow_http && strncasecmp(url, "http://", 7) == 0 && url[7] != '\0';
}

long ds_backoff_ms(int attempts, long cap_ms)
{
    long base = 1000;
    unsigned char r;

    for (int i = 1; i < attempts && base < cap_ms; i++)
        base *= 2;
    if (base > cap_ms)
        base = cap_ms;
    random_bytes(&r, 1);
    long delay = base / 2 + (base * r) / 255; /* between 50 % and 150 % */
    return delay < cap_ms ? delay : cap_ms;
}

enum ds_result ds_client_download(struct ds_client *c, const char *url, struct buf *out, char *err,
                                  size_t errlen)
{
    struct ds_exchange x;
    long code = ds_perform(c, url, NULL, &x, c->max_file_bytes, err, errlen, NULL);

    if (x.too_large) {
        buf_free(&x.body);
        snprintf(err, errlen, "file larger than %ld bytes", c->max_file_bytes);
        return DS_TOO_LARGE;
    }
    if (code == 200) {
        *out = x.body; /* hand the buffer over */
        return DS_OK;
    }
    buf_free(&x.body);
    if (code == 401 || code == 403 || code == 404) {
        snprintf(err, errlen, "file URL refused with HTTP %ld (expired)", code);
        return DS_EXPIRED;
    }
    return ds_classify(code, err, errlen);
}

long ds_client_max_file_bytes(const struct ds_client *c)
{
    return c->max_file_bytes;
}

/* ---- files ---- */

void ds_checksum(const unsigned char *data, size_t len, char out[25])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;

    if (EVP_Digest(data, len, md, &mdlen, EVP_md5(), NULL) != 1)
        abort();
    EVP_EncodeBlock((unsigned char *)out, md, (int)mdlen); /* 16 bytes → 24 chars + NUL */
}

int ds_pdf_pages(const unsigned char *data, size_t len)
{
    qpdf_data q = qpdf_init();
    int pages = -1;

    qpdf_silence_errors(q);
    qpdf_set_suppress_warnings(q, QPDF_TRUE);
    if (!(qpdf_read_memory(q, "main_document", (const char *)data, (unsigned long long)len, NULL) &
          QPDF_ERRORS))
        pages = qpdf_get_num_pages(q);
    qpdf_cleanup(&q);
    return pages < 0 ? -1 : pages;
}
