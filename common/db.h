/* db: a bounded PostgreSQL connection pool with lazily prepared statements. */
#ifndef PTCE_DB_H
#define PTCE_DB_H

#include <libpq-fe.h>
#include <stddef.h>

#include "status.h"

/*
 * A statement known at compile time. Declare them static with DB_STMT; each connection
 * prepares a statement the first time it runs it, then reuses the server-side plan.
 */
struct db_stmt {
    const char *name;
    const char *sql;
    _Atomic int id; /* assigned on first use; 0 means not yet */
};
#define DB_STMT(ident, text) static struct db_stmt ident = {#ident, text, 0}

#define DB_MAX_STMTS 256

struct db_conn {
    PGconn *pg;
    unsigned char prepared[DB_MAX_STMTS / 8];
    const char *schema; /* borrowed: the pool's or the caller's */
    size_t slot;
};

struct db_pool;

/*
 * Opens a pool of `size` connections to conninfo (a libpq URI or key=value string) whose
 * search_path is `schema`. Connections are made lazily; the first one is made now so that a
 * wrong URL fails at start-up. `wait_ms` bounds how long db_acquire waits for a free one.
 */
enum status db_pool_open(struct db_pool **out, const char *conninfo, const char *schema,
                         size_t size, long wait_ms, long statement_timeout_ms);
void db_pool_close(struct db_pool *pool);

/* Takes a connection; STATUS_UNAVAILABLE when none frees up within the pool's wait. */
enum status db_acquire(struct db_pool *pool, struct db_conn **out);
/* Gives it back. A connection left inside a transaction is rolled back first. */
void db_release(struct db_pool *pool, struct db_conn *conn);

/* Pool figures for /metrics. */
struct db_pool_stats {
    size_t size;
    size_t in_use;
    unsigned long acquire_timeouts;
};
void db_pool_stats(struct db_pool *pool, struct db_pool_stats *out);

/* A dedicated connection outside any pool (relay, consumer, migrations). */
enum status db_conn_open(struct db_conn *conn, const char *conninfo, const char *schema,
                         long statement_timeout_ms);
void db_conn_close(struct db_conn *conn);

/*
 * Runs a prepared statement with text parameters (NULL entries are SQL NULL). On STATUS_OK
 * *res (if res is not NULL) holds the result, which the caller PQclear()s; on any other status
 * nothing is returned. SQLSTATE 23505 → STATUS_CONFLICT, 23xxx/22xxx → STATUS_INVALID,
 * 40001/40P01 → STATUS_RETRY, a lost connection → STATUS_UNAVAILABLE (the connection is reset).
 */
enum status db_exec(struct db_conn *conn, struct db_stmt *stmt, int nparams,
                    const char *const *params, PGresult **res);

/* Runs a parameterless command (BEGIN, COMMIT, SET …); same mapping as db_exec. */
enum status db_command(struct db_conn *conn, const char *sql);

enum status db_begin(struct db_conn *conn);
enum status db_commit(struct db_conn *conn);
void db_rollback(struct db_conn *conn);

/* Maps a failed result's SQLSTATE to a status (exposed for tests). */
enum status db_status_from_sqlstate(const char *sqlstate);

#endif
