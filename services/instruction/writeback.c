/* writeback (instruction): the DS write-back queue, its worker thread and DS's answers. */
#include "writeback.h"

#include <openssl/evp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "ds_client.h"
#include "log.h"
#include "metrics.h"
#include "uuid.h"
#include "xalloc.h"

extern const char ds_mutations_text[];

static struct metric m_sent = METRIC_COUNTER(
    "ptce_ds_writeback_sent_total", "DS write-back commands DS accepted (or found already done).");
static struct metric m_failed = METRIC_COUNTER(
    "ptce_ds_writeback_failed_total", "DS write-back attempts that failed and will be retried.");
static struct metric m_dead = METRIC_GAUGE(
    "ptce_ds_writeback_dead_letters", "DS write-back commands DS refused for good (a human acts).");
static struct metric m_backlog =
    METRIC_GAUGE("ptce_ds_writeback_backlog", "DS write-back commands waiting to be sent.");

/* ---- the mutations ---- */

struct wb_mutation {
    const char *name;        /* operation name and Mutation field */
    const char *target;      /* the DS state it leaves the dossier in */
    int takes_motivation;    /* its input type has a motivation field */
    int requires_motivation; /* … which is non-null */
};

static const struct wb_mutation wb_mutations[] = {
    {"dossierPasserEnInstruction", "en_instruction", 0, 0},
    {"dossierAccepter", "accepte", 1, 0},
    {"dossierRefuser", "refuse", 1, 1},
    {"dossierClasserSansSuite", "sans_suite", 1, 1},
    {"dossierRepasserEnConstruction", "en_construction", 0, 0},
};

static const struct wb_mutation *wb_mutation_find(const char *name)
{
    for (size_t i = 0; name && i < sizeof wb_mutations / sizeof wb_mutations[0]; i++) {
        if (strcmp(wb_mutations[i].name, name) == 0)
            return &wb_mutations[i];
    }
    return NULL;
}

const char *writeback_target_state(const char *mutation)
{
    const struct wb_mutation *m = wb_mutation_find(mutation);

    return m ? m->target : NULL;
}

long long writeback_interval_us(long rate_per_min)
{
    if (rate_per_min <= 0)
        return 0;
    return (60000000LL + rate_per_min - 1) / rate_per_min; /* rounded up: never above the rate */
}

/* ---- the queue's SQL ---- */

DB_STMT(st_wb_insert, "INSERT INTO ds_writeback (dossier_id, ds_number, mutation, motivation)"
                      " VALUES ($1::uuid, $2::bigint, $3, $4)");
/*
 * The next command to send: due, and the oldest pending one of its dossier (a command in
 * backoff holds back the later ones of its dossier, never those of other dossiers).
 */
DB_STMT(st_wb_next,
        "SELECT w.id, w.ds_number, w.mutation, w.motivation, w.attempts FROM ds_writeback w"
        " WHERE w.status = 'pending' AND w.next_attempt_at <= now() AND NOT EXISTS ("
        "SELECT 1 FROM ds_writeback e WHERE e.ds_number = w.ds_number AND e.status = 'pending'"
        " AND e.id < w.id) ORDER BY w.id LIMIT 1");
DB_STMT(st_wb_sent,
        "UPDATE ds_writeback SET status = 'sent', sent_at = now(),"
        " attempts = attempts + 1, last_error = $2 WHERE id = $1 AND status = 'pending'");
DB_STMT(st_wb_dead, "UPDATE ds_writeback SET status = 'dead', attempts = attempts + 1,"
                    " last_error = $2 WHERE id = $1 AND status = 'pending'");
DB_STMT(st_wb_retry, "UPDATE ds_writeback SET attempts = attempts + 1, last_error = $2,"
                     " next_attempt_at = now() + make_interval(secs => $3::bigint / 1000.0)"
                     " WHERE id = $1 AND status = 'pending'");
DB_STMT(st_wb_counts, "SELECT (SELECT count(*) FROM ds_writeback WHERE status = 'pending'),"
                      " (SELECT count(*) FROM ds_writeback WHERE status = 'dead')");
/* One sender among the replicas: the one whose connection holds this lock. */
DB_STMT(st_wb_lead,
        "SELECT pg_try_advisory_lock(hashtext('ptce.ds_writeback.' || current_schema()))");

enum status writeback_enqueue(struct db_conn *conn, const struct writeback_command *cmd)
{
    const struct wb_mutation *m = wb_mutation_find(cmd->mutation);
    char number[24];
    int has_motivation = cmd->motivation && cmd->motivation[0];

    if (cmd->ds_number == 0)
        return STATUS_OK;
    if (!m || cmd->ds_number < 0 || !cmd->dossier_id || !uuid_is_valid(cmd->dossier_id))
        return STATUS_INVALID;
    if (m->requires_motivation && !has_motivation)
        return STATUS_INVALID;
    snprintf(number, sizeof number, "%lld", cmd->ds_number);
    /* A motivation the mutation's input cannot carry is not kept: DS would refuse the field. */
    const char *params[] = {cmd->dossier_id, number, m->name,
                            m->takes_motivation && has_motivation ? cmd->motivation : NULL};
    return db_exec(conn, &st_wb_insert, 4, params, NULL);
}

/* ---- configuration ---- */

/* 1 when id is the base64 of "Instructeur-<digits>", as DS's global ids are. */
static int wb_instructeur_id_valid(const char *id)
{
    unsigned char plain[64];
    size_t len = strlen(id);
    const char *prefix = "Instructeur-";

    if (len == 0 || len % 4 != 0 || len > 4 * (sizeof plain / 3) - 4)
        return 0;
    int n = EVP_DecodeBlock(plain, (const unsigned char *)id, (int)len);
    if (n < 0)
        return 0;
    while (n > 0 && id[len - 1] == '=' && plain[n - 1] == '\0') { /* padding decodes as NULs */
        n--;
        len--;
    }
    size_t plen = strlen(prefix);
    if ((size_t)n <= plen || memcmp(plain, prefix, plen) != 0)
        return 0;
    for (size_t i = plen; i < (size_t)n; i++) {
        if (plain[i] < '0' || plain[i] > '9')
            return 0;
    }
    return 1;
}

int writeback_config_check(const struct writeback_config *cfg, char *err, size_t errlen)
{
    err[0] = '\0';
    if (!cfg->api_url || !cfg->api_url[0])
        return 0; /* no DS: commands are queued and wait */
    if (!ds_url_allowed(cfg->api_url, cfg->allow_http))
        snprintf(err, errlen,
                 "PTCE_DS_API_URL must be an https:// URL "
                 "(http:// only with PTCE_DS_ALLOW_HTTP=1)");
    else if (!cfg->token || !cfg->token[0])
        snprintf(err, errlen, "PTCE_DS_TOKEN is required with PTCE_DS_API_URL");
    else if (!cfg->instructeur_id || !wb_instructeur_id_valid(cfg->instructeur_id))
        snprintf(err, errlen,
                 "PTCE_DS_INSTRUCTEUR_ID must be a DS instructeur id "
                 "(base64 of \"Instructeur-<number>\")");
    else if (cfg->rate_per_min <= 0)
        snprintf(err, errlen, "PTCE_DS_RATE_PER_MIN must be positive");
    return err[0] ? -1 : 0;
}

/* ---- the worker ---- */

struct writeback {
    char *conninfo;
    char *schema;
    char *instructeur_id;
    long statement_timeout_ms;
    long retry_max_ms;
    long long interval_us;
    long long next_send_us; /* monotonic: no request starts before it */
    struct ds_client *client;
    atomic_int stop;    /* no new request starts */
    atomic_int abandon; /* the request under way is given up too (WB_STOP_GRACE_MS after stop) */
    atomic_int running; /* the thread has not returned yet */
    pthread_t thread;
};

/*
 * How long a stop lets the request under way finish before it is given up. A request takes
 * milliseconds, so a stop between two paced requests waits for nothing and one during a request
 * lets DS answer it: given up, it may still have landed on DS, and the next sender would send it
 * again (DS's refusal then reads as done, but DS saw the command twice). A DS that does not
 * answer holds the stop no longer than this (the stack kills a service 10 s after SIGTERM).
 */
#define WB_STOP_GRACE_MS 2000

/* One queued command, as the worker read it. */
struct wb_item {
    char id[24];
    long long number;
    const struct wb_mutation *m;
    char *motivation; /* NULL or owned */
    int attempts;
};

static long long wb_now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void wb_sleep_ms(struct writeback *w, long ms)
{
    while (ms > 0 && !atomic_load(&w->stop)) {
        long step = ms < 100 ? ms : 100;
        clock_sleep_ms(step);
        ms -= step;
    }
}

/*
 * Waits for the next request's turn: requests start interval_us apart at least (a bucket of
 * one token), so that no minute, sliding or DS's fixed one, holds more than the rate. Returns
 * -1 when asked to stop meanwhile.
 */
static int wb_pace(struct writeback *w)
{
    for (;;) {
        if (atomic_load(&w->stop))
            return -1;
        long long wait = w->next_send_us - wb_now_us();
        if (wait <= 0)
            break;
        clock_sleep_ms(wait > 100000 ? 100 : (long)((wait + 999) / 1000));
    }
    w->next_send_us = wb_now_us() + w->interval_us;
    return 0;
}

static int wb_connect(struct writeback *w, struct db_conn *conn)
{
    if (conn->pg && PQstatus(conn->pg) == CONNECTION_OK)
        return 0;
    db_conn_close(conn);
    return db_conn_open(conn, w->conninfo, w->schema, w->statement_timeout_ms) == STATUS_OK ? 0
                                                                                            : -1;
}

/* 1 while conn, and with it the sender's lock, is alive (noticed without a query). */
static int wb_lock_held(struct db_conn *conn)
{
    return conn->pg && PQconsumeInput(conn->pg) == 1 && PQstatus(conn->pg) == CONNECTION_OK;
}

static int wb_lead(struct db_conn *conn, int *leader)
{
    PGresult *r;

    if (*leader)
        return 1;
    if (db_exec(conn, &st_wb_lead, 0, NULL, &r) != STATUS_OK)
        return 0;
    *leader = PQgetvalue(r, 0, 0)[0] == 't';
    PQclear(r);
    if (*leader)
        log_event(LOG_INFO, "ds.writeback_leader", "{s:i}", "backend_pid", PQbackendPID(conn->pg));
    return *leader;
}

static void wb_gauges_refresh(struct db_conn *conn)
{
    PGresult *r;

    if (db_exec(conn, &st_wb_counts, 0, NULL, &r) != STATUS_OK)
        return;
    metric_set(&m_backlog, strtol(PQgetvalue(r, 0, 0), NULL, 10));
    metric_set(&m_dead, strtol(PQgetvalue(r, 0, 1), NULL, 10));
    PQclear(r);
}

static enum status wb_next(struct db_conn *conn, struct wb_item *it, int *found)
{
    PGresult *r;
    enum status st = db_exec(conn, &st_wb_next, 0, NULL, &r);

    *found = 0;
    if (st != STATUS_OK)
        return st;
    if (PQntuples(r) == 1) {
        snprintf(it->id, sizeof it->id, "%s", PQgetvalue(r, 0, 0));
        it->number = strtoll(PQgetvalue(r, 0, 1), NULL, 10);
        it->m = wb_mutation_find(PQgetvalue(r, 0, 2));
        it->motivation = PQgetisnull(r, 0, 3) ? NULL : xstrdup(PQgetvalue(r, 0, 3));
        it->attempts = (int)strtol(PQgetvalue(r, 0, 4), NULL, 10);
        *found = 1;
    }
    PQclear(r);
    return STATUS_OK;
}

/* Sends the command's mutation (one paced request). */
static enum ds_result wb_send(struct writeback *w, const struct wb_item *it, char *err,
                              size_t errlen)
{
    char gid[64], client_id[40];

    ds_dossier_global_id(it->number, gid, sizeof gid);
    snprintf(client_id, sizeof client_id, "ptce-writeback-%s", it->id);
    json_t *input = json_pack("{s:s, s:s, s:s}", "dossierId", gid, "instructeurId",
                              w->instructeur_id, "clientMutationId", client_id);
    if (it->m->takes_motivation && it->motivation)
        json_object_set_new(input, "motivation", json_string(it->motivation));
    if (wb_pace(w) != 0) {
        json_decref(input);
        snprintf(err, errlen, "stopping");
        return DS_RETRY;
    }
    return ds_client_mutate(w->client, it->m->name, it->m->name, json_pack("{s:o}", "input", input),
                            NULL, err, errlen, &w->abandon);
}

/*
 * After a refusal: is the dossier already in the state the command wanted (a retry of a
 * command that DS had applied, an answer lost on the way)? DS_OK when it is, DS_REFUSED when
 * it is not (err keeps the refusal), anything else when DS could not be asked.
 */
static enum ds_result wb_check_done(struct writeback *w, const struct wb_item *it, char *err,
                                    size_t errlen)
{
    char why[512];
    json_t *data;

    if (wb_pace(w) != 0)
        return DS_RETRY;
    enum ds_result r = ds_client_query(w->client, "writebackDossierState",
                                       json_pack("{s:I}", "number", (json_int_t)it->number), &data,
                                       why, sizeof why, &w->abandon);
    if (r != DS_OK) {
        snprintf(err + strlen(err), errlen - strlen(err), " (state check: %s)", why);
        return r == DS_NOT_FOUND ? DS_REFUSED : r;
    }
    const char *state =
        json_string_value(json_object_get(json_object_get(data, "dossier"), "state"));
    r = state && strcmp(state, it->m->target) == 0 ? DS_OK : DS_REFUSED;
    json_decref(data);
    return r;
}

/* Records what came of one command on conn; a failure to record leaves it pending (resent). */
static void wb_record(struct writeback *w, struct db_conn *conn, const struct wb_item *it,
                      enum ds_result r, const char *err)
{
    char delay[24];
    const char *params[] = {it->id, err[0] ? err : NULL, delay};
    enum status st;

    if (r == DS_OK) {
        st = db_exec(conn, &st_wb_sent, 2, params, NULL);
        metric_add(&m_sent, 1);
        log_event(LOG_INFO, "ds.writeback_sent", "{s:s, s:I, s:s, s:s?}", "id", it->id, "number",
                  (json_int_t)it->number, "mutation", it->m->name, "note", params[1]);
    } else if (r == DS_REFUSED || r == DS_NOT_FOUND) {
        st = db_exec(conn, &st_wb_dead, 2, params, NULL);
        log_event(LOG_ERROR, "ds.writeback_dead_letter", "{s:s, s:I, s:s, s:s}", "id", it->id,
                  "number", (json_int_t)it->number, "mutation", it->m->name, "error", err);
    } else {
        /* A 429 already paused the client until DS's reset: no backoff on top of it. A refused
         * token or document (DS_FATAL) needs a human: retried, but at the slowest pace. */
        long ms = r == DS_RATE_LIMITED ? 0
                  : r == DS_FATAL      ? w->retry_max_ms
                                       : ds_backoff_ms(it->attempts + 1, w->retry_max_ms);
        snprintf(delay, sizeof delay, "%ld", ms);
        st = db_exec(conn, &st_wb_retry, 3, params, NULL);
        metric_add(&m_failed, 1);
        log_event(LOG_WARN, "ds.writeback_failed", "{s:s, s:I, s:s, s:s, s:s, s:I}", "id", it->id,
                  "number", (json_int_t)it->number, "mutation", it->m->name, "result",
                  ds_result_name(r), "error", err, "retry_in_ms", (json_int_t)ms);
    }
    if (st != STATUS_OK)
        log_event(LOG_WARN, "ds.writeback_not_recorded", "{s:s, s:s}", "id", it->id, "status",
                  status_strerror(st));
}

static void wb_process(struct writeback *w, struct db_conn *conn, const struct wb_item *it)
{
    char err[1024] = "";
    enum ds_result r;

    if (!it->m) { /* the table's CHECK makes this impossible; say so if it ever happens */
        snprintf(err, sizeof err, "unknown mutation");
        wb_record(w, conn, it, DS_REFUSED, err);
        return;
    }
    /* The lock goes with a lost connection: another replica may be sending already. */
    if (!wb_lock_held(conn))
        return;
    r = wb_send(w, it, err, sizeof err);
    if (r == DS_REFUSED && wb_lock_held(conn)) {
        r = wb_check_done(w, it, err, sizeof err);
        if (r == DS_OK) /* kept as a note: the refusal was "already done" */
            snprintf(err + strlen(err), sizeof err - strlen(err), " (already %s)", it->m->target);
    }
    if (atomic_load(&w->stop) && r == DS_RETRY && strcmp(err, "stopping") == 0)
        return; /* stopped before DS answered: the command waits, a resend tells if it landed */
    wb_record(w, conn, it, r, err);
}

static void *wb_main(void *arg)
{
    struct writeback *w = arg;
    struct db_conn conn = {0};
    int leader = 0;
    long long gauges_at = 0;

    while (!atomic_load(&w->stop)) {
        if (leader && !wb_lock_held(&conn)) {
            log_event(LOG_WARN, "ds.writeback_leadership_lost", "{s:s}", "reason",
                      "database connection lost");
            leader = 0;
        }
        if (wb_connect(w, &conn) != 0) {
            wb_sleep_ms(w, 1000);
            continue;
        }
        if (wb_now_us() - gauges_at >= 1000000) {
            wb_gauges_refresh(&conn);
            gauges_at = wb_now_us();
        }
        if (!w->client || !wb_lead(&conn, &leader)) {
            wb_sleep_ms(w, 500);
            continue;
        }
        struct wb_item it = {0};
        int found = 0;
        if (wb_next(&conn, &it, &found) != STATUS_OK)
            wb_sleep_ms(w, 500);
        else if (!found)
            wb_sleep_ms(w, 100);
        else
            wb_process(w, &conn, &it);
        free(it.motivation);
    }
    db_conn_close(&conn);
    atomic_store(&w->running, 0);
    return NULL;
}

struct writeback *writeback_start(const struct writeback_config *cfg)
{
    char err[256];

    if (writeback_config_check(cfg, err, sizeof err) != 0) {
        log_event(LOG_ERROR, "ds.writeback_config_invalid", "{s:s}", "error", err);
        return NULL;
    }
    struct writeback *w = xcalloc(1, sizeof *w);
    w->conninfo = xstrdup(cfg->conninfo);
    w->schema = xstrdup(cfg->schema);
    w->instructeur_id = xstrdup(cfg->instructeur_id ? cfg->instructeur_id : "");
    w->statement_timeout_ms = cfg->statement_timeout_ms;
    w->retry_max_ms = cfg->retry_max_ms;
    w->interval_us = writeback_interval_us(cfg->rate_per_min);
    w->next_send_us = wb_now_us();
    metrics_register(&m_sent);
    metrics_register(&m_failed);
    metrics_register(&m_dead);
    metrics_register(&m_backlog);
    if (cfg->api_url && cfg->api_url[0]) {
        struct ds_client_config cc = {cfg->api_url, cfg->token,      cfg->timeout_ms,
                                      1048576,      cfg->allow_http, "ptce-instruction/1"};
        w->client = ds_client_new(&cc, ds_mutations_text);
    } else {
        log_event(LOG_WARN, "ds.writeback_disabled", "{s:s}", "reason",
                  "PTCE_DS_API_URL unset: decisions are queued and wait");
    }
    atomic_store(&w->running, 1);
    if (pthread_create(&w->thread, NULL, wb_main, w) != 0)
        abort();
    return w;
}

void writeback_stop(struct writeback *w)
{
    if (!w)
        return;
    atomic_store(&w->stop, 1);
    for (long waited = 0; atomic_load(&w->running) && waited < WB_STOP_GRACE_MS; waited += 10)
        clock_sleep_ms(10);
    atomic_store(&w->abandon, 1);
    pthread_join(w->thread, NULL);
    ds_client_free(w->client);
    free(w->conninfo);
    free(w->schema);
    free(w->instructeur_id);
    free(w);
}
