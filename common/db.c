/* db: pool of libpq connections with bounded waits, lazy preparation and SQLSTATE mapping. */
#include "db.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
};

static atomic_int db_stmt_next_id = 1;

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
    return st;
}

/* Server notices become log lines: libpq would otherwise print raw text on stderr. */
static void db_notice(void *arg, const PGresult *r)
{
    const char *severity = PQresultErrorField(r, PG_DIAG_SEVERITY_NONLOCALIZED);

    (void)arg;
    log_event(severity && !strcmp(severity, "WARNING") ? LOG_WARN : LOG_DEBUG, "db.notice",
              "{s:s?, s:s?}", "severity", severity, "message",
              PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY));
}

static enum status db_connect(struct db_conn *conn, const char *conninfo, long stmt_timeout)
{
    memset(conn->prepared, 0, sizeof conn->prepared);
    conn->pg = PQconnectdb(conninfo);
    if (PQstatus(conn->pg) != CONNECTION_OK) {
        log_event(LOG_ERROR, "db.connect_failed", "{s:s}", "error", PQerrorMessage(conn->pg));
        PQfinish(conn->pg);
        conn->pg = NULL;
        return STATUS_UNAVAILABLE;
    }
    PQsetNoticeReceiver(conn->pg, db_notice, NULL);
    enum status st = db_session_setup(conn, stmt_timeout);
    if (st != STATUS_OK) {
        PQfinish(conn->pg);
        conn->pg = NULL;
    }
    return st;
}

enum status db_conn_open(struct db_conn *conn, const char *conninfo, const char *schema,
                         long statement_timeout_ms)
{
    memset(conn, 0, sizeof *conn);
    conn->schema = schema;
    return db_connect(conn, conninfo, statement_timeout_ms);
}

void db_conn_close(struct db_conn *conn)
{
    if (conn->pg)
        PQfinish(conn->pg);
    conn->pg = NULL;
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
        pool->free_slots[pool->nfree++] = size - 1 - i;
    }
    pthread_mutex_init(&pool->lock, NULL);
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&pool->freed, &attr);
    pthread_condattr_destroy(&attr);

    enum status st = db_connect(&pool->conns[0], pool->conninfo, statement_timeout_ms);
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

    /* Connect lazily, and reconnect a connection the server dropped while it was idle. */
    if (!conn->pg || PQstatus(conn->pg) != CONNECTION_OK) {
        db_conn_close(conn);
        enum status st = db_connect(conn, pool->conninfo, pool->statement_timeout_ms);
        if (st != STATUS_OK) {
            db_release(pool, conn);
            return st;
        }
    }
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
        memset(conn->prepared, 0, sizeof conn->prepared);
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

enum status db_exec(struct db_conn *conn, struct db_stmt *stmt, int nparams,
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

enum status db_command(struct db_conn *conn, const char *sql)
{
    if (!conn->pg)
        return STATUS_UNAVAILABLE;
    PGresult *r = PQexec(conn->pg, sql);
    enum status st = db_check(conn, r, sql);
    if (st == STATUS_OK)
        PQclear(r);
    return st;
}

enum status db_begin(struct db_conn *conn)
{
    return db_command(conn, "BEGIN");
}

enum status db_commit(struct db_conn *conn)
{
    return db_command(conn, "COMMIT");
}

void db_rollback(struct db_conn *conn)
{
    if (conn->pg && PQstatus(conn->pg) == CONNECTION_OK)
        (void)db_command(conn, "ROLLBACK");
}
