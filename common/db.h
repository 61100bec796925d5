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

struct db_pool;

struct db_conn {
    PGconn *pg;
    unsigned char prepared[DB_MAX_STMTS / 8];
    const char *schema;      /* borrowed: the pool's or the caller's */
    const char *conninfo;    /* borrowed: the pool's or the caller's, for reconnecting */
    const char *session_sql; /* borrowed: run on each new connection after the SETs, or NULL */
    long statement_timeout_ms;
    struct db_pool *pool;     /* NULL for a dedicated connection */
    unsigned long generation; /* the pool's generation when this connection was made */
    int fresh;                /* nothing run since db_acquire or db_conn_check: may retry */
    size_t slot;
    /*
     * Owned by outbox.c: the outbox rows held back for one statement between outbox_defer_begin
     * and outbox_defer_flush or outbox_defer_discard; NULL when appends are written at once.
     */
    struct outbox_rows *outbox_deferred;
    /* Set by outbox.c: the open transaction appended events, so its commit wakes the relay. */
    int outbox_appended;
};

/*
 * Opens a pool of `size` connections to conninfo (a libpq URI or key=value string) whose
 * search_path is `schema`. Connections are made lazily; the first one is made now so that a
 * wrong URL fails at start-up. `wait_ms` bounds how long db_acquire waits for a free one.
 */
enum status db_pool_open(struct db_pool **out, const char *conninfo, const char *schema,
                         size_t size, long wait_ms, long statement_timeout_ms);
void db_pool_close(struct db_pool *pool);

/*
 * Takes a connection; STATUS_UNAVAILABLE when none frees up within the pool's wait, or when the
 * server cannot be reached. A connection is never handed out known dead: one the server closed
 * while it was idle (its socket shows the end of the stream) is made again first, and once any
 * connection of the pool is found dead (a restart kills them all) every idle connection made
 * before is made again when it is next taken (the pool's generation counter).
 */
enum status db_acquire(struct db_pool *pool, struct db_conn **out);
/* Gives it back. A connection left inside a transaction is rolled back first. */
void db_release(struct db_pool *pool, struct db_conn *conn);

/* Pool figures for /metrics. */
struct db_pool_stats {
    size_t size;
    size_t in_use;
    unsigned long acquire_timeouts;
    unsigned long reconnects; /* connections made again after a loss, or of an old generation */
    unsigned long retries;    /* first statements run again on a new connection */
    unsigned long generation; /* bumped each time a dead connection is found */
};
void db_pool_stats(struct db_pool *pool, struct db_pool_stats *out);

/*
 * A dedicated connection outside any pool (relay, consumer, migrations). conninfo and schema are
 * borrowed and must outlive the connection: db_exec uses them to reconnect.
 */
enum status db_conn_open(struct db_conn *conn, const char *conninfo, const char *schema,
                         long statement_timeout_ms);
void db_conn_close(struct db_conn *conn);
/* Same, running session_sql (borrowed too; NULL: nothing) on each connection it makes. */
enum status db_conn_open_session(struct db_conn *conn, const char *conninfo, const char *schema,
                                 long statement_timeout_ms, const char *session_sql);

/*
 * Starts a unit of work on a dedicated connection, as db_acquire does for a pooled one: makes the
 * connection again when it is closed or the server has closed it, and lets the first statement
 * be retried once. STATUS_UNAVAILABLE when the server cannot be reached.
 */
enum status db_conn_check(struct db_conn *conn);

/*
 * Runs a prepared statement with text parameters (NULL entries are SQL NULL). On STATUS_OK
 * *res (if res is not NULL) holds the result, which the caller PQclear()s; on any other status
 * nothing is returned. SQLSTATE 23505 → STATUS_CONFLICT, 23xxx/22xxx → STATUS_INVALID,
 * 40001/40P01 → STATUS_RETRY, a lost connection → STATUS_UNAVAILABLE (the connection is reset).
 *
 * The first statement after db_acquire or db_conn_check that fails because the connection is
 * lost is run once more on a new connection when running it twice cannot do harm: BEGIN, or a
 * read (its text starts with SELECT and names no INSERT, UPDATE, DELETE or FOR UPDATE). A write
 * in autocommit is not retried: its loss may have come after its commit.
 */
enum status db_exec(struct db_conn *conn, struct db_stmt *stmt, int nparams,
                    const char *const *params, PGresult **res);

/* Runs a parameterless command (BEGIN, COMMIT, SET …); same mapping as db_exec. */
enum status db_command(struct db_conn *conn, const char *sql);

enum status db_begin(struct db_conn *conn);
/* Commits. Aborts when outbox appends are still held back (a bug: they would be lost). */
enum status db_commit(struct db_conn *conn);
/*
 * How many transactions this process has committed through db_commit (db_end, fsm_apply, the
 * inbox), all connections together. Something computed from the database and tagged with the
 * count read before its query is older than no commit of this process once the count has not
 * moved: a cache keyed by it sees the process's own writes at once.
 */
unsigned long db_commit_count(void);
/*
 * What db_commit calls, on the committing thread, after the commit of a transaction that
 * appended to the outbox (outbox_appended): outbox.c sets it to the wake-up of its process's
 * relay. Process-wide; NULL (the default) calls nothing.
 */
void db_set_outbox_hook(void (*hook)(void));
void db_rollback(struct db_conn *conn);
/* Ends a unit of work: commits when st is STATUS_OK, rolls back otherwise. Returns st, or the
 * commit's failure. */
enum status db_end(struct db_conn *conn, enum status st);

/* Maps a failed result's SQLSTATE to a status (exposed for tests). */
enum status db_status_from_sqlstate(const char *sqlstate);

#endif
