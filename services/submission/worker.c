/* worker (submission): turns stored notifications into stored, checked dossiers. */
#define _XOPEN_SOURCE 700 /* strptime */
#include "worker.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "ds_files.h"
#include "log.h"
#include "metrics.h"
#include "store.h"
#include "uuid.h"

static struct metric m_fetched =
    METRIC_COUNTER("ptce_ds_dossiers_fetched_total", "DS dossiers fetched and stored.");
static struct metric m_fetch_errors =
    METRIC_COUNTER("ptce_ds_fetch_failures_total", "DS fetch attempts that will be retried.");
static struct metric m_polled = METRIC_COUNTER(
    "ptce_ds_poller_notices_total", "Notifications queued by the reconciliation poller.");

/* Attempts after which a notice DS answers "not found" (or refuses) is set aside as failed. */
#define DS_MAX_HOPELESS_ATTEMPTS 8

struct ds_workers {
    struct worker_config cfg;
    char *conninfo;
    char *schema;
    struct ds_client *client;
    const struct ds_mapping *mapping;
    atomic_int stop;
    pthread_t *threads;
    long nthreads;
    pthread_t poller;
    int has_poller;
    pthread_mutex_t wake_lock;
    pthread_cond_t wake;
    unsigned long wakeups; /* bumped by ds_workers_wake, so a wake-up is never missed */
};

static void ds_sleep_ms(struct ds_workers *w, long ms)
{
    while (ms > 0 && !atomic_load(&w->stop)) {
        long step = ms < 100 ? ms : 100;
        clock_sleep_ms(step);
        ms -= step;
    }
}

/* ---- one dossier ---- */

/* What one attempt at a dossier came to. */
struct ds_attempt {
    enum ds_result result;
    int changed;      /* a new version was stored */
    int store_failed; /* the database failed, not DS: try again soon, not after DS's backoff */
    char err[512];
};

/* Marks the main document as not verified, for the page rule to say needs_review. */
static void ds_document_unverified(json_t *doc, const char *verification)
{
    json_object_set_new(doc, "pages", json_null());
    json_object_set_new(doc, "verification", json_string(verification));
}

/*
 * Downloads the main document, verifies its checksum (three tries: a corrupt transfer is not a
 * corrupt file) and counts its pages. What cannot be verified is recorded in the content so that
 * the page rule says needs_review; only a transient failure is returned as an error. A file over
 * the download limit (declared by DS, announced by the server or met while reading) is
 * permanent: it is marked too_large and never downloaded again for this version.
 */
static enum ds_result ds_fetch_document(struct ds_workers *w, long long number, json_t *doc,
                                        struct buf *file, char *err, size_t errlen)
{
    const char *url = json_string_value(json_object_get(doc, "url"));
    const char *expected = json_string_value(json_object_get(doc, "checksum"));
    json_int_t declared = json_integer_value(json_object_get(doc, "byte_size"));
    char actual[25];

    char why[160];
    if (!ds_file_url_allowed(url, w->cfg.file_hosts, w->cfg.allow_http, why, sizeof why)) {
        log_event(LOG_WARN, "ds.file_host_refused", "{s:I, s:s}", "number", (json_int_t)number,
                  "reason", why);
        ds_document_unverified(doc, "host_refused");
        return DS_OK; /* never downloaded: a human looks at needs_review */
    }
    if (declared > ds_client_max_file_bytes(w->client)) {
        log_event(LOG_WARN, "ds.file_too_large", "{s:I, s:I, s:I}", "number", (json_int_t)number,
                  "byte_size", declared, "max", (json_int_t)ds_client_max_file_bytes(w->client));
        ds_document_unverified(doc, "too_large");
        return DS_OK;
    }
    for (int attempt = 0; attempt < 3; attempt++) {
        enum ds_result r = ds_client_download(w->client, url ? url : "", file, err, errlen);
        if (r == DS_TOO_LARGE) {
            log_event(LOG_WARN, "ds.file_too_large", "{s:I, s:I, s:s}", "number",
                      (json_int_t)number, "byte_size", declared, "error", err);
            ds_document_unverified(doc, "too_large");
            return DS_OK; /* kept, marked, never downloaded again: a human looks at it */
        }
        if (r != DS_OK)
            return r;
        ds_checksum((const unsigned char *)file->data, file->len, actual);
        if (expected && strcmp(actual, expected) == 0) {
            int pages = ds_pdf_pages((const unsigned char *)file->data, file->len);
            json_object_set_new(doc, "pages", pages >= 0 ? json_integer(pages) : json_null());
            json_object_set_new(doc, "verification",
                                json_string(pages >= 0 ? "verified" : "not_a_pdf"));
            return DS_OK;
        }
        buf_free(file);
    }
    log_event(LOG_WARN, "ds.checksum_mismatch", "{s:I, s:s?, s:s}", "number", (json_int_t)number,
              "expected", expected, "actual", actual);
    json_object_set_new(doc, "verification", json_string("checksum_mismatch"));
    return DS_OK; /* kept, marked, never dropped: a human looks at needs_review */
}

static int ds_time_field(json_t *obj, const char *key, char *out, size_t len)
{
    return ds_time_parse(json_string_value(json_object_get(obj, key)), out, len);
}

/*
 * 1 while conn, and with it the claim's lock, is alive. A connection the server cut (a restart,
 * pg_terminate_backend) is noticed without a query: its lock is gone and another worker may
 * have taken the dossier, so the attempt stops before it downloads or stores anything.
 */
static int ds_claim_held(struct db_conn *conn, long long number, struct ds_attempt *a)
{
    if (conn->pg && PQconsumeInput(conn->pg) == 1 && PQstatus(conn->pg) == CONNECTION_OK)
        return 1;
    snprintf(a->err, sizeof a->err, "dossier %lld: database connection lost during the fetch",
             number);
    a->result = DS_RETRY;
    a->store_failed = 1;
    return 0;
}

/* Stores a fetched dossier; a failure is the database's, recorded as such in a. */
static void ds_store(struct db_conn *conn, const struct ds_snapshot *s, struct ds_attempt *a)
{
    enum status st = s->state ? store_ds_apply(conn, s, &a->changed) : STATUS_INVALID;

    if (st == STATUS_OK)
        return;
    snprintf(a->err, sizeof a->err, "storing dossier %lld: %s", s->number, status_strerror(st));
    a->result = st == STATUS_INVALID ? DS_FATAL : DS_RETRY;
    a->store_failed = st != STATUS_INVALID;
}

static void ds_fetch_once(struct ds_workers *w, struct db_conn *conn, long long number,
                          struct ds_attempt *a)
{
    json_t *data, *dossier;
    char updated[40], deposited[40];
    struct buf file;

    a->result =
        ds_client_query(w->client, "getDossier", json_pack("{s:I}", "number", (json_int_t)number),
                        &data, a->err, sizeof a->err, &w->stop);
    if (a->result != DS_OK || !ds_claim_held(conn, number, a)) {
        json_decref(data);
        return;
    }
    dossier = json_object_get(data, "dossier");
    if (!json_is_object(dossier) ||
        ds_time_field(dossier, "dateDerniereModification", updated, sizeof updated) != 0) {
        snprintf(a->err, sizeof a->err,
                 "dossier %lld: answer without a dossier or a modification date", number);
        a->result = json_is_object(dossier) ? DS_FATAL : DS_NOT_FOUND;
        json_decref(data);
        return;
    }
    json_int_t demarche =
        json_integer_value(json_object_get(json_object_get(dossier, "demarche"), "number"));
    if (demarche != w->cfg.demarche) {
        snprintf(a->err, sizeof a->err, "dossier %lld belongs to démarche %lld, not %ld", number,
                 (long long)demarche, w->cfg.demarche);
        a->result = DS_FATAL;
        json_decref(data);
        return;
    }
    json_t *content = dossier_content_from_ds(w->mapping, dossier);
    json_t *doc = json_object_get(content, "main_document");
    buf_init(&file, 0);
    if (json_is_object(doc))
        a->result = ds_fetch_document(w, number, doc, &file, a->err, sizeof a->err);
    if (a->result == DS_OK && ds_claim_held(conn, number, a)) {
        int has_dep = ds_time_field(dossier, "dateDepot", deposited, sizeof deposited) == 0;
        struct ds_snapshot s = {number,
                                (long long)demarche,
                                json_string_value(json_object_get(dossier, "state")),
                                updated,
                                has_dep ? deposited : NULL,
                                content,
                                file.len ? (const unsigned char *)file.data : NULL,
                                file.len};
        ds_store(conn, &s, a);
    }
    buf_free(&file);
    json_decref(content);
    json_decref(data);
}

/* Fetches and stores; an expired file URL means fetching the dossier again for a fresh one. */
static void ds_fetch(struct ds_workers *w, struct db_conn *conn, long long number,
                     struct ds_attempt *a)
{
    ds_fetch_once(w, conn, number, a);
    if (a->result == DS_EXPIRED)
        ds_fetch_once(w, conn, number, a);
    if (a->result == DS_EXPIRED)
        a->result = DS_RETRY;
}

static int ds_connect(struct ds_workers *w, struct db_conn *conn);

/*
 * Records a failed attempt. The retry is written on a working connection (a lost one is opened
 * again first); when it cannot be written at all, the dossier is still freed when its lock goes
 * with the lost connection, and the notice, still due, is taken again at once. Returns 1 when
 * conn is still the connection that claimed (and holds the lock).
 */
static int ds_record_failure(struct ds_workers *w, struct db_conn *conn, const struct ds_claim *c,
                             const struct ds_attempt *a)
{
    /* 0: still the claiming connection, 1: opened again (the lock went with the old one). */
    int connected = conn->pg && PQstatus(conn->pg) == CONNECTION_OK ? 0 : 1;

    if (ds_connect(w, conn) != 0)
        connected = -1;
    metric_add(&m_fetch_errors, 1);
    if (connected < 0) {
        log_event(LOG_WARN, "ds.retry_not_recorded", "{s:I, s:s}", "number", (json_int_t)c->number,
                  "error", a->err);
        return 0;
    }
    int hopeless = a->result == DS_NOT_FOUND || a->result == DS_FATAL;
    if (hopeless && c->attempts >= DS_MAX_HOPELESS_ATTEMPTS) {
        /* Kept, with its error, for a human: a dossier DS no longer has, or not ours. */
        if (store_notice_fail(conn, c, a->err) == STATUS_OK)
            log_event(LOG_ERROR, "ds.notification_failed", "{s:I, s:s, s:i}", "number",
                      (json_int_t)c->number, "error", a->err, "attempts", c->attempts);
        return connected == 0;
    }
    /* A database failure is ours, not DS's: it does not grow DS's backoff. */
    long delay = ds_backoff_ms(a->store_failed ? 1 : c->attempts, w->cfg.retry_max_ms);
    if (hopeless) /* a human must act: retry, but rarely */
        delay = w->cfg.retry_max_ms;
    enum status st = store_notice_retry(conn, c, delay, a->err);
    log_event(LOG_WARN, "ds.fetch_failed", "{s:I, s:s, s:s, s:i, s:I, s:b}", "number",
              (json_int_t)c->number, "result", ds_result_name(a->result), "error", a->err,
              "attempts", c->attempts, "retry_in_ms", (json_int_t)delay, "retry_recorded",
              st == STATUS_OK);
    return connected == 0;
}

static void ds_process(struct ds_workers *w, struct db_conn *conn, const struct ds_claim *c)
{
    struct ds_attempt a = {DS_OK, 0, 0, ""};
    int holds_lock = 1;

    ds_fetch(w, conn, c->number, &a);
    if (a.result == DS_OK) {
        metric_add(&m_fetched, 1);
        /* If this fails the dossier is stored: the next attempt finds it current and is done. */
        if (store_notice_done(conn, c) != STATUS_OK)
            log_event(LOG_WARN, "ds.done_not_recorded", "{s:I}", "number", (json_int_t)c->number);
        log_event(LOG_INFO, "ds.dossier_stored", "{s:I, s:b}", "number", (json_int_t)c->number,
                  "changed", a.changed);
    } else {
        holds_lock = ds_record_failure(w, conn, c, &a);
    }
    /*
     * The lock lives on the connection that claimed: a new connection never held it. When it
     * cannot be released, closing the connection releases it.
     */
    if (holds_lock && store_notice_release(conn, c) != STATUS_OK)
        db_conn_close(conn);
}

/* ---- threads ---- */

static int ds_connect(struct ds_workers *w, struct db_conn *conn)
{
    if (conn->pg && PQstatus(conn->pg) == CONNECTION_OK)
        return 0;
    db_conn_close(conn);
    return db_conn_open(conn, w->conninfo, w->schema, w->cfg.statement_timeout_ms) == STATUS_OK
               ? 0
               : -1;
}

void ds_workers_wake(struct ds_workers *w)
{
    if (!w)
        return;
    pthread_mutex_lock(&w->wake_lock);
    w->wakeups++;
    pthread_cond_broadcast(&w->wake);
    pthread_mutex_unlock(&w->wake_lock);
}

/* Sleeps until woken or timeout_ms passes; seen is the wake-up count of the last look. */
static void ds_wait_work(struct ds_workers *w, unsigned long *seen, long timeout_ms)
{
    struct timespec deadline;

    clock_deadline(CLOCK_MONOTONIC, timeout_ms, &deadline);
    pthread_mutex_lock(&w->wake_lock);
    while (*seen == w->wakeups && !atomic_load(&w->stop)) {
        if (pthread_cond_timedwait(&w->wake, &w->wake_lock, &deadline) != 0)
            break;
    }
    *seen = w->wakeups;
    pthread_mutex_unlock(&w->wake_lock);
}

static void *ds_worker_main(void *arg)
{
    struct ds_workers *w = arg;
    struct db_conn conn = {0};
    unsigned long seen = 0;

    while (!atomic_load(&w->stop)) {
        struct ds_claim c;
        int found = 0;
        if (ds_connect(w, &conn) != 0) {
            ds_sleep_ms(w, 1000);
            continue;
        }
        if (store_notice_claim(&conn, &c, &found) != STATUS_OK) {
            ds_sleep_ms(w, 500);
            continue;
        }
        if (found)
            ds_process(w, &conn, &c);
        else
            ds_wait_work(w, &seen, 250); /* polling finds other replicas' rows and retries */
    }
    db_conn_close(&conn);
    return NULL;
}

/* Walks every page of one poller query, calling fn on each node. Returns DS_OK or the error. */
static enum ds_result ds_poll_pages(struct ds_workers *w, const char *op, const char *field,
                                    const char *since_name, const char *since,
                                    enum status (*fn)(struct ds_workers *, struct db_conn *,
                                                      json_t *, char *),
                                    struct db_conn *conn, char *watermark)
{
    char err[512];
    const char *after = NULL;
    char cursor[512] = "";

    for (int page = 0; page < 10000 && !atomic_load(&w->stop); page++) {
        json_t *vars =
            json_pack("{s:I, s:i}", "demarcheNumber", (json_int_t)w->cfg.demarche, "first", 100);
        if (since && *since)
            json_object_set_new(vars, since_name, json_string(since));
        if (after)
            json_object_set_new(vars, "after", json_string(after));
        json_t *data;
        enum ds_result r = ds_client_query(w->client, op, vars, &data, err, sizeof err, &w->stop);
        if (r != DS_OK) {
            log_event(LOG_WARN, "ds.poll_failed", "{s:s, s:s}", "operation", op, "error", err);
            return r;
        }
        json_t *conn_obj = json_object_get(json_object_get(data, "demarche"), field);
        size_t i;
        json_t *node;
        enum status st = STATUS_OK;
        json_array_foreach(json_object_get(conn_obj, "nodes"), i, node)
        {
            if (st == STATUS_OK)
                st = fn(w, conn, node, watermark);
        }
        json_t *info = json_object_get(conn_obj, "pageInfo");
        int more = json_is_true(json_object_get(info, "hasNextPage"));
        const char *end = json_string_value(json_object_get(info, "endCursor"));
        snprintf(cursor, sizeof cursor, "%s", end ? end : "");
        json_decref(data);
        if (st != STATUS_OK) {
            /* The watermark must not pass a dossier we failed to queue. */
            log_event(LOG_WARN, "ds.poll_store_failed", "{s:s, s:s}", "operation", op, "status",
                      status_strerror(st));
            return DS_RETRY;
        }
        if (!more || !*cursor)
            return DS_OK;
        after = cursor;
    }
    return DS_OK;
}

static enum status ds_poll_updated_node(struct ds_workers *w, struct db_conn *conn, json_t *node,
                                        char *watermark)
{
    char when[40];
    int queued = 0;
    const char *state = json_string_value(json_object_get(node, "state"));
    json_int_t number = json_integer_value(json_object_get(node, "number"));

    if (ds_time_field(node, "dateDerniereModification", when, sizeof when) != 0 || !state)
        return STATUS_OK; /* not a node we can use; nothing to wait for either */
    enum status st = store_notice_from_poll(conn, w->cfg.demarche, number, state, when, &queued);
    if (st != STATUS_OK)
        return st;
    if (queued)
        metric_add(&m_polled, 1);
    if (strcmp(when, watermark) > 0) /* same RFC 3339 UTC format: text order is time order */
        snprintf(watermark, 40, "%s", when);
    return STATUS_OK;
}

static enum status ds_poll_deleted_node(struct ds_workers *w, struct db_conn *conn, json_t *node,
                                        char *watermark)
{
    char when[40];
    int changed = 0;

    (void)w;
    if (ds_time_field(node, "dateSupression", when, sizeof when) != 0)
        return STATUS_OK;
    enum status st =
        store_ds_withdraw(conn, json_integer_value(json_object_get(node, "number")), when,
                          json_string_value(json_object_get(node, "reason")), &changed);
    if (st == STATUS_OK && strcmp(when, watermark) > 0)
        snprintf(watermark, 40, "%s", when);
    return st;
}

/* watermark − overlap, as RFC 3339; empty stays empty (first run: everything). */
static void ds_since(const char *watermark, long overlap_s, char *out, size_t len)
{
    struct tm tm = {0};

    out[0] = '\0';
    if (!*watermark || !strptime(watermark, "%Y-%m-%dT%H:%M:%SZ", &tm))
        return;
    time_t t = timegm(&tm) - overlap_s;
    gmtime_r(&t, &tm);
    strftime(out, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static void ds_poll_once(struct ds_workers *w, struct db_conn *conn)
{
    char updated[40], deleted[40], since[40];

    if (store_sync_get(conn, w->cfg.demarche, updated, deleted, sizeof updated) != STATUS_OK)
        return;
    ds_since(updated, w->cfg.poll_overlap_s, since, sizeof since);
    if (ds_poll_pages(w, "getDemarcheDossiers", "dossiers", "updatedSince", since,
                      ds_poll_updated_node, conn, updated) != DS_OK)
        return; /* the watermark moves only after a complete pass */
    ds_since(deleted, w->cfg.poll_overlap_s, since, sizeof since);
    if (ds_poll_pages(w, "getDeletedDossiers", "deletedDossiers", "deletedSince", since,
                      ds_poll_deleted_node, conn, deleted) != DS_OK)
        return;
    store_sync_put(conn, w->cfg.demarche, updated, deleted);
    log_event(LOG_DEBUG, "ds.poll_done", "{s:s, s:s}", "updated_watermark", updated,
              "deleted_watermark", deleted);
}

/*
 * One replica's poller runs at a time: the one whose connection holds the session-level
 * advisory lock of the démarche. The others try again every interval, so a leader that dies or
 * loses its connection (the lock goes with it) is replaced within one interval.
 */
static int ds_poll_lead(struct ds_workers *w, struct db_conn *conn, int *leader)
{
    int held = 0;

    if (*leader)
        return 1;
    if (store_poller_lock(conn, w->cfg.demarche, &held) != STATUS_OK || !held)
        return 0;
    *leader = 1;
    log_event(LOG_INFO, "ds.poller_leader", "{s:I, s:i}", "demarche", (json_int_t)w->cfg.demarche,
              "backend_pid", PQbackendPID(conn->pg));
    return 1;
}

static void *ds_poller_main(void *arg)
{
    struct ds_workers *w = arg;
    struct db_conn conn = {0};
    int leader = 0;

    while (!atomic_load(&w->stop)) {
        if (leader && PQstatus(conn.pg) != CONNECTION_OK) {
            /* Only ds_connect replaces a connection, and only a bad one: the lock is gone. */
            log_event(LOG_WARN, "ds.poller_leadership_lost", "{s:s}", "reason",
                      "database connection lost");
            leader = 0;
        }
        if (ds_connect(w, &conn) == 0 && ds_poll_lead(w, &conn, &leader))
            ds_poll_once(w, &conn);
        ds_sleep_ms(w, w->cfg.poll_interval_s * 1000);
    }
    db_conn_close(&conn);
    return NULL;
}

struct ds_workers *ds_workers_start(const struct worker_config *cfg, struct ds_client *client,
                                    const struct ds_mapping *mapping)
{
    struct ds_workers *w = xcalloc(1, sizeof *w);

    w->cfg = *cfg;
    w->conninfo = xstrdup(cfg->conninfo);
    w->schema = xstrdup(cfg->schema);
    w->client = client;
    w->mapping = mapping;
    metrics_register(&m_fetched);
    metrics_register(&m_fetch_errors);
    metrics_register(&m_polled);
    pthread_mutex_init(&w->wake_lock, NULL);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&w->wake, &attr);
    pthread_condattr_destroy(&attr);
    w->threads = xcalloc((size_t)cfg->workers, sizeof *w->threads);
    for (long i = 0; i < cfg->workers; i++) {
        if (pthread_create(&w->threads[i], NULL, ds_worker_main, w) != 0)
            abort();
        w->nthreads++;
    }
    if (cfg->poll_interval_s > 0) {
        if (pthread_create(&w->poller, NULL, ds_poller_main, w) != 0)
            abort();
        w->has_poller = 1;
    }
    return w;
}

void ds_workers_stop(struct ds_workers *w)
{
    if (!w)
        return;
    atomic_store(&w->stop, 1);
    ds_workers_wake(w);
    for (long i = 0; i < w->nthreads; i++)
        pthread_join(w->threads[i], NULL);
    if (w->has_poller)
        pthread_join(w->poller, NULL);
    pthread_cond_destroy(&w->wake);
    pthread_mutex_destroy(&w->wake_lock);
    free(w->threads);
    free(w->conninfo);
    free(w->schema);
    free(w);
}
