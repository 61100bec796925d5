/* ds_client (submission): GraphQL over libcurl with DS's rate limit and error conventions. */
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

struct ds_client {
    char *api_url;
    char *token;
    char *queries;
    long timeout_ms;
    long max_file_bytes;
    pthread_mutex_t lock;
    time_t paused_until; /* set by a 429, shared by every worker: one token, one budget */
};

static const char *const ds_result_names[] = {"ok",      "not_found", "rate_limited", "retry",
                                              "expired", "fatal",     "too_large"};

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

/* Performs one request; returns the HTTP status, or -1 for a transport failure. */
static long ds_perform(struct ds_client *c, const char *url, const char *post,
                       struct ds_exchange *x, long limit, char *err, size_t errlen)
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
    curl_easy_setopt(h, CURLOPT_USERAGENT, "ptce-submission/1");
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
    long code = ds_perform(c, url, post, &x, 64L * 1024 * 1024, err, errlen);
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

enum ds_result ds_client_download(struct ds_client *c, const char *url, struct buf *out, char *err,
                                  size_t errlen)
{
    struct ds_exchange x;
    long code = ds_perform(c, url, NULL, &x, c->max_file_bytes, err, errlen);

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
