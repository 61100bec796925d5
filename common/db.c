/* db: pool of libpq connections with bounded waits, lazy preparation and SQLSTATE mapping. */
#define _GNU_SOURCE /* strcasestr(3) */
#include "db.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "clock.h"
#include "log.h"
#include "xalloc.h"

struct db_pool {
    char *conninfo;
    char *schema;
    long wait_ms;
    long statement_timeout_ms;
    size_t size;
    struct db_conn *conns;
    size_t *free_slots; /* a stack of free slot indexes */
    size_t nfree;
    pthread_mutex_t lock;
    pthread_cond_t freed;
    unsigned long timeouts;
    atomic_ulong generation; /* bumped when a connection is found dead */
    atomic_ulong reconnects;
    atomic_ulong retries;
};

#define DB_CONNECT_TIMEOUT_S "5"

static atomic_int db_stmt_next_id = 1;
static atomic_ulong db_commits;
static void (*_Atomic db_outbox_hook)(void);

enum status db_status_from_sqlstate(const char *sqlstate)
{
    if (!sqlstate)
        return STATUS_UNAVAILABLE;
    if (!strcmp(sqlstate, "23505"))
        return STATUS_CONFLICT;
    if (!strcmp(sqlstate, "40001") || !strcmp(sqlstate, "40P01"))
        return STATUS_RETRY;
    if (!strncmp(sqlstate, "23", 2) || !strncmp(sqlstate, "22", 2))
        return STATUS_INVALID;
    if (!strncmp(sqlstate, "08", 2) || !strncmp(sqlstate, "57", 2) || !strncmp(sqlstate, "53", 2))
        return STATUS_UNAVAILABLE;
    return STATUS_INTERNAL;
}

static enum status db_session_setup(struct db_conn *conn, long statement_timeout_ms)
{
    char sql[256];
    enum status st = STATUS_OK;

    if (conn->schema) {
        char *ident = PQescapeIdentifier(conn->pg, conn->schema, strlen(conn->schema));
        if (!ident)
            return STATUS_INTERNAL;
        snprintf(sql, sizeof sql, "SET search_path TO %s", ident);
        PQfreemem(ident);
        st = db_command(conn, sql);
    }
    if (st == STATUS_OK && statement_timeout_ms > 0) {
        snprintf(sql, sizeof sql, "SET statement_timeout = %ld", statement_timeout_ms);
        st = db_command(conn, sql);
    }
    if (st == STATUS_OK && conn->session_sql)
        st = db_command(conn, conn->session_sql);
    return st;
}

/* Server notices become log lines: libpq would otherwise print raw text on stderr. */
/*
 * Set by db_notice on this thread when the server says goodbye on an idle connection: libpq
 * hands an unsolicited FATAL (pg_terminate_backend) to the notice receiver, and an immediate
 * shutdown sends a WARNING of class 57 (operator intervention) before the end of the stream.
 */
static _Thread_local int db_goodbye;

static void db_notice(void *arg, const PGresult *r)
{
    const char *severity = PQresultErrorField(r, PG_DIAG_SEVERITY_NONLOCALIZED);
    const char *sqlstate = PQresultErrorField(r, PG_DIAG_SQLSTATE);

    (void)arg;
    if ((severity && (!strcmp(severity, "FATAL") || !strcmp(severity, "PANIC"))) ||
        (sqlstate && !strncmp(sqlstate, "57", 2)))
        db_goodbye = 1;
    log_event(severity && !strcmp(severity, "WARNING") ? LOG_WARN : LOG_DEBUG, "db.notice",
              "{s:s?, s:s?}", "severity", severity, "message",
              PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY));
}

static enum status db_connect(struct db_conn *conn)
{
    memset(conn->prepared, 0, sizeof conn->prepared);
    if (conn->pool)
        conn->generation = atomic_load(&conn->pool->generation);
    /*
     * A bound on connecting, unless conninfo sets its own (its keywords come after ours): a
     * server that accepts and never answers must not hold a request, or the readiness checker,
     * for ever.
     */
    static const char *const keys[] = {"connect_timeout", "dbname", NULL};
    const char *const values[] = {DB_CONNECT_TIMEOUT_S, conn->conninfo, NULL};
    conn->pg = PQconnectdbParams(keys, values, 1);
    if (PQstatus(conn->pg) != CONNECTION_OK) {
        log_event(LOG_ERROR, "db.connect_failed", "{s:s}", "error", PQerrorMessage(conn->pg));
        PQfinish(conn->pg);
        conn->pg = NULL;
        return STATUS_UNAVAILABLE;
    }
    PQsetNoticeReceiver(conn->pg, db_notice, NULL);
    enum status st = db_session_setup(conn, conn->statement_timeout_ms);
    if (st != STATUS_OK) {
        PQfinish(conn->pg);
        conn->pg = NULL;
    }
    return st;
}

enum status db_conn_open(struct db_conn *conn, const char *conninfo, const char *schema,
                         long statement_timeout_ms)
{
    return db_conn_open_session(conn, conninfo, schema, statement_timeout_ms, NULL);
}

enum status db_conn_open_session(struct db_conn *conn, const char *conninfo, const char *schema,
                                 long statement_timeout_ms, const char *session_sql)
{
    memset(conn, 0, sizeof *conn);
    conn->schema = schema;
    conn->session_sql = session_sql;
    conn->conninfo = conninfo;
    conn->statement_timeout_ms = statement_timeout_ms;
    enum status st = db_connect(conn);
    conn->fresh = st == STATUS_OK;
    return st;
}

void db_conn_close(struct db_conn *conn)
{
    if (conn->pg)
        PQfinish(conn->pg);
    conn->pg = NULL;
}

/* A connection is lost: every other idle one of its pool is suspect too (a restart). */
static void db_conn_lost(struct db_conn *conn)
{
    conn->outbox_appended = 0; /* the transaction is gone with the connection */
    memset(conn->prepared, 0, sizeof conn->prepared);
    if (conn->pool)
        atomic_fetch_add(&conn->pool->generation, 1);
}

/*
 * 1 when an idle connection still looks alive, without a round trip. Nothing is due on an idle
 * connection: a socket that reads ready holds the server's goodbye (a FATAL message or a class
 * 57 warning, then the end of the stream) or, rarely, something harmless (TLS housekeeping).
 * libpq takes it in and parses it, which hands a goodbye to db_notice; the end of the stream,
 * if it is there already, makes the connection CONNECTION_BAD. Still ready after two reads:
 * counted dead.
 */
static int db_conn_alive(struct db_conn *conn)
{
    if (!conn->pg || PQstatus(conn->pg) != CONNECTION_OK)
        return 0;
    db_goodbye = 0;
    for (int i = 0; i < 2; i++) {
        struct pollfd pfd = {.fd = PQsocket(conn->pg), .events = POLLIN};
        if (pfd.fd < 0)
            return 0;
        int n = poll(&pfd, 1, 0);
        if (n == 0)
            return 1;
        if (n < 0 || !PQconsumeInput(conn->pg) || PQstatus(conn->pg) != CONNECTION_OK)
            return 0;
        (void)PQisBusy(conn->pg); /* parses what came */
        if (db_goodbye)
            return 0;
    }
    return 0;
}

/* Makes conn again; counted for /metrics when it belongs to a pool. */
static enum status db_conn_renew(struct db_conn *conn)
{
    db_conn_close(conn);
    if (conn->pool)
        atomic_fetch_add(&conn->pool->reconnects, 1);
    return db_connect(conn);
}

enum status db_conn_check(struct db_conn *conn)
{
    enum status st = STATUS_OK;

    if (!db_conn_alive(conn)) {
        if (conn->pg)
            db_conn_lost(conn);
        st = db_conn_renew(conn);
    }
    conn->fresh = st == STATUS_OK;
    return st;
}

enum status db_pool_open(struct db_pool **out, const char *conninfo, const char *schema,
                         size_t size, long wait_ms, long statement_timeout_ms)
{
    struct db_pool *pool = xcalloc(1, sizeof *pool);
    pthread_condattr_t attr;

    pool->conninfo = xstrdup(conninfo);
    pool->schema = schema ? xstrdup(schema) : NULL;
    pool->size = size;
    pool->wait_ms = wait_ms;
    pool->statement_timeout_ms = statement_timeout_ms;
    pool->conns = xcalloc(size, sizeof *pool->conns);
    pool->free_slots = xcalloc(size, sizeof *pool->free_slots);
    for (size_t i = 0; i < size; i++) {
        pool->conns[i].slot = i;
        pool->conns[i].schema = pool->schema;
        pool->conns[i].conninfo = pool->conninfo;
        pool->conns[i].statement_timeout_ms = statement_timeout_ms;
        pool->conns[i].pool = pool;
        pool->free_slots[pool->nfree++] = size - 1 - i;
    }
    pthread_mutex_init(&pool->lock, NULL);
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&pool->freed, &attr);
    pthread_condattr_destroy(&attr);

    enum status st = db_connect(&pool->conns[0]);
    if (st != STATUS_OK) {
        db_pool_close(pool);
        return st;
    }
    *out = pool;
    return STATUS_OK;
}

void db_pool_close(struct db_pool *pool)
{
    if (!pool)
        return;
    for (size_t i = 0; i < pool->size; i++)
        db_conn_close(&pool->conns[i]);
    pthread_mutex_destroy(&pool->lock);
    pthread_cond_destroy(&pool->freed);
    free(pool->conns);
    free(pool->free_slots);
    free(pool->conninfo);
    free(pool->schema);
    free(pool);
}

enum status db_acquire(struct db_pool *pool, struct db_conn **out)
{
    struct timespec deadline;

    clock_deadline(CLOCK_MONOTONIC, pool->wait_ms, &deadline);
    pthread_mutex_lock(&pool->lock);
    while (pool->nfree == 0) {
        if (pthread_cond_timedwait(&pool->freed, &pool->lock, &deadline) == ETIMEDOUT &&
            pool->nfree == 0) {
            pool->timeouts++;
            pthread_mutex_unlock(&pool->lock);
            return STATUS_UNAVAILABLE;
        }
    }
    struct db_conn *conn = &pool->conns[pool->free_slots[--pool->nfree]];
    pthread_mutex_unlock(&pool->lock);

    /*
     * Connect lazily; make again a connection that the server dropped while it was idle, and one
     * made before another of this pool was found dead: a restart has killed it too, even if its
     * socket does not show it yet.
     */
    enum status st = STATUS_OK;
    if (!conn->pg)
        st = db_connect(conn);
    else if (conn->generation != atomic_load(&pool->generation))
        st = db_conn_renew(conn);
    else
        st = db_conn_check(conn);
    if (st != STATUS_OK) {
        db_release(pool, conn);
        return st;
    }
    conn->fresh = 1;
    *out = conn;
    return STATUS_OK;
}

void db_release(struct db_pool *pool, struct db_conn *conn)
{
    if (conn->pg && PQtransactionStatus(conn->pg) != PQTRANS_IDLE)
        db_rollback(conn);
    pthread_mutex_lock(&pool->lock);
    pool->free_slots[pool->nfree++] = conn->slot;
    pthread_cond_signal(&pool->freed);
    pthread_mutex_unlock(&pool->lock);
}

void db_pool_stats(struct db_pool *pool, struct db_pool_stats *out)
{
    pthread_mutex_lock(&pool->lock);
    out->size = pool->size;
    out->in_use = pool->size - pool->nfree;
    out->acquire_timeouts = pool->timeouts;
    pthread_mutex_unlock(&pool->lock);
    out->reconnects = atomic_load(&pool->reconnects);
    out->retries = atomic_load(&pool->retries);
    out->generation = atomic_load(&pool->generation);
}

/* Turns a result into a status, logging failures; clears the result unless it is a success. */
static enum status db_check(struct db_conn *conn, PGresult *r, const char *what)
{
    ExecStatusType es = PQresultStatus(r);

    if (es == PGRES_COMMAND_OK || es == PGRES_TUPLES_OK)
        return STATUS_OK;
    const char *sqlstate = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    enum status st = db_status_from_sqlstate(sqlstate);
    if (PQstatus(conn->pg) == CONNECTION_BAD) {
        st = STATUS_UNAVAILABLE;
        db_conn_lost(conn);
    }
    /* Expected outcomes (a duplicate, a bad value) are the caller's to report. */
    if (st != STATUS_CONFLICT && st != STATUS_INVALID)
        log_event(LOG_ERROR, "db.error", "{s:s, s:s?, s:s}", "statement", what, "sqlstate",
                  sqlstate, "error", PQresultErrorMessage(r));
    PQclear(r);
    return st;
}

static int db_stmt_id(struct db_stmt *stmt)
{
    int id = atomic_load(&stmt->id);

    if (id == 0) {
        int expected = 0;
        int fresh = atomic_fetch_add(&db_stmt_next_id, 1);
        id = atomic_compare_exchange_strong(&stmt->id, &expected, fresh) ? fresh : expected;
    }
    if (id >= DB_MAX_STMTS)
        abort(); /* a build-time limit: raise DB_MAX_STMTS */
    return id;
}

/* 1 for a statement that may run twice: BEGIN, or a plain read. */
static int db_sql_repeatable(const char *sql)
{
    static const char *const writes[] = {"INSERT", "UPDATE", "DELETE", "FOR UPDATE", "MERGE"};

    sql += strspn(sql, " \t\r\n(");
    if (!strcasecmp(sql, "BEGIN"))
        return 1;
    if (strncasecmp(sql, "SELECT", 6) != 0)
        return 0;
    for (size_t i = 0; i < sizeof writes / sizeof writes[0]; i++) {
        if (strcasestr(sql, writes[i]))
            return 0;
    }
    return 1;
}

/*
 * Whether a failed first statement is to run again on a new connection: made again here, and
 * counted. The connection may fail to come back (the server is still down): then no.
 */
static int db_retry_wanted(struct db_conn *conn, int was_fresh, enum status st, const char *sql)
{
    if (!was_fresh || st != STATUS_UNAVAILABLE || !conn->pg ||
        PQstatus(conn->pg) != CONNECTION_BAD || !db_sql_repeatable(sql))
        return 0;
    if (db_conn_renew(conn) != STATUS_OK)
        return 0;
    if (conn->pool)
        atomic_fetch_add(&conn->pool->retries, 1);
    log_event(LOG_WARN, "db.retry", "{s:s}", "reason",
              "connection lost before the first statement");
    return 1;
}

static enum status db_exec_once(struct db_conn *conn, struct db_stmt *stmt, int nparams,
                                const char *const *params, PGresult **res)
{
    int id = db_stmt_id(stmt);
    unsigned char bit = (unsigned char)(1u << (id % 8));

    if (!conn->pg)
        return STATUS_UNAVAILABLE;
    if (!(conn->prepared[id / 8] & bit)) {
        PGresult *p = PQprepare(conn->pg, stmt->name, stmt->sql, 0, NULL);
        enum status st = db_check(conn, p, stmt->name);
        if (st != STATUS_OK)
            return st;
        PQclear(p);
        conn->prepared[id / 8] |= bit;
    }
    PGresult *r = PQexecPrepared(conn->pg, stmt->name, nparams, params, NULL, NULL, 0);
    enum status st = db_check(conn, r, stmt->name);
    if (st != STATUS_OK)
        return st;
    if (res)
        *res = r;
    else
        PQclear(r);
    return STATUS_OK;
}

enum status db_exec(struct db_conn *conn, struct db_stmt *stmt, int nparams,
                    const char *const *params, PGresult **res)
{
    int was_fresh = conn->fresh;

    conn->fresh = 0;
    enum status st = db_exec_once(conn, stmt, nparams, params, res);
    if (db_retry_wanted(conn, was_fresh, st, stmt->sql))
        st = db_exec_once(conn, stmt, nparams, params, res);
    return st;
}

static enum status db_command_once(struct db_conn *conn, const char *sql)
{
    if (!conn->pg)
        return STATUS_UNAVAILABLE;
    PGresult *r = PQexec(conn->pg, sql);
    enum status st = db_check(conn, r, sql);
    if (st == STATUS_OK)
        PQclear(r);
    return st;
}

enum status db_command(struct db_conn *conn, const char *sql)
{
    int was_fresh = conn->fresh;

    conn->fresh = 0;
    enum status st = db_command_once(conn, sql);
    if (db_retry_wanted(conn, was_fresh, st, sql))
        st = db_command_once(conn, sql);
    return st;
}

enum status db_begin(struct db_conn *conn)
{
    return db_command(conn, "BEGIN");
}

void db_set_outbox_hook(void (*hook)(void))
{
    atomic_store(&db_outbox_hook, hook);
}

enum status db_commit(struct db_conn *conn)
{
    if (conn->outbox_deferred)
        abort(); /* outbox_defer_flush was forgotten: the events would vanish with the commit */
    enum status st = db_command(conn, "COMMIT");
    int appended = conn->outbox_appended;

    conn->outbox_appended = 0;
    if (st == STATUS_OK) {
        atomic_fetch_add(&db_commits, 1);
        void (*hook)(void) = atomic_load(&db_outbox_hook);
        if (appended && hook)
            hook();
    }
    return st;
}

unsigned long db_commit_count(void)
{
    return atomic_load(&db_commits);
}

void db_rollback(struct db_conn *conn)
{
    conn->outbox_appended = 0;
    if (conn->pg && PQstatus(conn->pg) == CONNECTION_OK)
        (void)db_command(conn, "ROLLBACK");
}

enum status db_end(struct db_conn *conn, enum status st)
{
    if (st == STATUS_OK)
        return db_commit(conn);
    db_rollback(conn);
    return st;
}
