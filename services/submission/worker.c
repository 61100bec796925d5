/* worker (submission): turns stored notifications into stored, checked dossiers. */
#define _XOPEN_SOURCE 700 /* strptime */
#include "worker.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
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

static void ds_sleep_ms(struct ds_workers *w, long ms)
{
    while (ms > 0 && !atomic_load(&w->stop)) {
        long step = ms < 100 ? ms : 100;
        clock_sleep_ms(step);
        ms -= step;
    }
}

/* ---- one dossier ---- */

/*
 * Downloads the main document, verifies its checksum (three tries: a corrupt transfer is not a
 * corrupt file) and counts its pages. What cannot be verified is recorded in the content so that
 * the page rule says needs_review; only a transient failure is returned as an error.
 */
static enum ds_result ds_fetch_document(struct ds_workers *w, json_t *doc, struct buf *file,
                                        char *err, size_t errlen)
{
    const char *url = json_string_value(json_object_get(doc, "url"));
    const char *expected = json_string_value(json_object_get(doc, "checksum"));
    char actual[25];

    for (int attempt = 0; attempt < 3; attempt++) {
        enum ds_result r = ds_client_download(w->client, url ? url : "", file, err, errlen);
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
    log_event(LOG_WARN, "ds.checksum_mismatch", "{s:s?, s:s}", "expected", expected, "actual",
              actual);
    json_object_set_new(doc, "verification", json_string("checksum_mismatch"));
    return DS_OK; /* kept, marked, never dropped: a human looks at needs_review */
}

static int ds_time_field(json_t *obj, const char *key, char *out, size_t len)
{
    return ds_time_parse(json_string_value(json_object_get(obj, key)), out, len);
}

static enum ds_result ds_fetch_once(struct ds_workers *w, struct db_conn *conn, long long number,
                                    char *err, size_t errlen, int *changed)
{
    json_t *data, *dossier;
    char updated[40], deposited[40];
    struct buf file;
    enum ds_result r =
        ds_client_query(w->client, "getDossier", json_pack("{s:I}", "number", (json_int_t)number),
                        &data, err, errlen, &w->stop);

    if (r != DS_OK)
        return r;
    dossier = json_object_get(data, "dossier");
    if (!json_is_object(dossier) ||
        ds_time_field(dossier, "dateDerniereModification", updated, sizeof updated) != 0) {
        snprintf(err, errlen, "dossier %lld: answer without a dossier or a modification date",
                 number);
        json_decref(data);
        return json_is_object(dossier) ? DS_FATAL : DS_NOT_FOUND;
    }
    json_int_t demarche =
        json_integer_value(json_object_get(json_object_get(dossier, "demarche"), "number"));
    if (demarche != w->cfg.demarche) {
        snprintf(err, errlen, "dossier %lld belongs to démarche %lld, not %ld", number,
                 (long long)demarche, w->cfg.demarche);
        json_decref(data);
        return DS_FATAL;
    }
    json_t *content = dossier_content_from_ds(w->mapping, dossier);
    json_t *doc = json_object_get(content, "main_document");
    buf_init(&file, 0);
    if (json_is_object(doc))
        r = ds_fetch_document(w, doc, &file, err, errlen);
    if (r == DS_OK) {
        int has_dep = ds_time_field(dossier, "dateDepot", deposited, sizeof deposited) == 0;
        struct ds_snapshot s = {number,
                                (long long)demarche,
                                json_string_value(json_object_get(dossier, "state")),
                                updated,
                                has_dep ? deposited : NULL,
                                content,
                                file.len ? (const unsigned char *)file.data : NULL,
                                file.len};
        enum status st = s.state ? store_ds_apply(conn, &s, changed) : STATUS_INVALID;
        if (st != STATUS_OK) {
            snprintf(err, errlen, "storing dossier %lld: %s", number, status_strerror(st));
            r = st == STATUS_INVALID ? DS_FATAL : DS_RETRY;
        }
    }
    buf_free(&file);
    json_decref(content);
    json_decref(data);
    return r;
}

/* Fetches and stores; an expired file URL means fetching the dossier again for a fresh one. */
static enum ds_result ds_fetch(struct ds_workers *w, struct db_conn *conn, long long number,
                               char *err, size_t errlen, int *changed)
{
    enum ds_result r = ds_fetch_once(w, conn, number, err, errlen, changed);

    if (r == DS_EXPIRED)
        r = ds_fetch_once(w, conn, number, err, errlen, changed);
    return r == DS_EXPIRED ? DS_RETRY : r;
}

static void ds_process(struct ds_workers *w, struct db_conn *conn, const struct ds_claim *c)
{
    char err[512] = "";
    int changed = 0;
    enum ds_result r = ds_fetch(w, conn, c->number, err, sizeof err, &changed);

    if (r == DS_OK) {
        metric_add(&m_fetched, 1);
        store_notice_done(conn, c);
        log_event(LOG_INFO, "ds.dossier_stored", "{s:I, s:b}", "number", (json_int_t)c->number,
                  "changed", changed);
        return;
    }
    metric_add(&m_fetch_errors, 1);
    if ((r == DS_NOT_FOUND || r == DS_FATAL) && c->attempts >= DS_MAX_HOPELESS_ATTEMPTS) {
        /* Kept, with its error, for a human: a dossier DS no longer has, or not ours. */
        store_notice_fail(conn, c, err);
        log_event(LOG_ERROR, "ds.notification_failed", "{s:I, s:s, s:i}", "number",
                  (json_int_t)c->number, "error", err, "attempts", c->attempts);
        return;
    }
    long delay = ds_backoff_ms(c->attempts, w->cfg.retry_max_ms);
    if (r == DS_NOT_FOUND || r == DS_FATAL) /* a human must act: retry, but rarely */
        delay = w->cfg.retry_max_ms;
    store_notice_retry(conn, c, delay, err);
    log_event(LOG_WARN, "ds.fetch_failed", "{s:I, s:s, s:s, s:i, s:I}", "number",
              (json_int_t)c->number, "result", ds_result_name(r), "error", err, "attempts",
              c->attempts, "retry_in_ms", (json_int_t)delay);
}

/* ---- threads ---- */

static int ds_connect(struct ds_workers *w, struct db_conn *conn)
{
    if (conn->pg && PQstatus(conn->pg) == CONNECTION_OK)
        return 0;
    db_conn_close(conn);
    return db_conn_open(conn, w->conninfo, w->schema, 0) == STATUS_OK ? 0 : -1;
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
