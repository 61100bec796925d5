/* test_db: the connection pool, statements, SQLSTATE mapping and recovery from a lost backend. */
#include <arpa/inet.h>
#include <check.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "db.h"
#include "testdb.h"

/* ---- SQLSTATE mapping: no database ---- */

START_TEST(test_db_status_from_sqlstate)
{
    static const struct {
        const char *sqlstate;
        enum status st;
    } cases[] = {
        {"23505", STATUS_CONFLICT},    {"23503", STATUS_INVALID},     {"23502", STATUS_INVALID},
        {"22P02", STATUS_INVALID},     {"22001", STATUS_INVALID},     {"40001", STATUS_RETRY},
        {"40P01", STATUS_RETRY},       {"08006", STATUS_UNAVAILABLE}, {"57P01", STATUS_UNAVAILABLE},
        {"57014", STATUS_UNAVAILABLE}, {"53300", STATUS_UNAVAILABLE}, {"42P01", STATUS_INTERNAL},
        {"42601", STATUS_INTERNAL},    {"XX000", STATUS_INTERNAL},
    };

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        ck_assert_msg(db_status_from_sqlstate(cases[i].sqlstate) == cases[i].st, "%s → %d",
                      cases[i].sqlstate, db_status_from_sqlstate(cases[i].sqlstate));
    ck_assert_int_eq(db_status_from_sqlstate(NULL), STATUS_UNAVAILABLE); /* no server answer */
}
END_TEST

/* ---- fixtures: one schema per test, dropped at the end ---- */

static char schema[64];
static struct db_pool *pool;

static void schema_setup(void)
{
    testdb_schema_create(schema, sizeof schema);
    pool = NULL;
}

static void schema_teardown(void)
{
    db_pool_close(pool);
    testdb_schema_drop(schema);
}

static void pool_open(size_t size, long wait_ms, long statement_timeout_ms)
{
    enum status st = db_pool_open(&pool, testdb_url(), schema, size, wait_ms, statement_timeout_ms);

    ck_assert_int_eq(st, STATUS_OK);
}

static long elapsed_ms(const struct timespec *since)
{
    struct timespec now;

    clock_gettime(CLOCK_MONOTONIC, &now);
    return (now.tv_sec - since->tv_sec) * 1000 + (now.tv_nsec - since->tv_nsec) / 1000000;
}

/* The text of the single value a statement returns (static storage). */
static const char *scalar(struct db_conn *conn, struct db_stmt *stmt, int n, const char *const *p)
{
    static char value[128];
    PGresult *r;

    ck_assert_int_eq(db_exec(conn, stmt, n, p, &r), STATUS_OK);
    ck_assert_int_eq(PQntuples(r), 1);
    snprintf(value, sizeof value, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    return value;
}

DB_STMT(q_schema, "SELECT current_schema()");
DB_STMT(q_pid, "SELECT pg_backend_pid()");
DB_STMT(q_insert, "INSERT INTO item (id, name) VALUES ($1, $2)");
DB_STMT(q_name, "SELECT name FROM item WHERE id = $1");
DB_STMT(q_count, "SELECT count(*) FROM item");
DB_STMT(q_sleep, "SELECT pg_sleep(2)");

static void create_items(struct db_conn *conn)
{
    ck_assert_int_eq(db_command(conn, "CREATE TABLE item (id int PRIMARY KEY, name text NOT NULL)"),
                     STATUS_OK);
}

START_TEST(test_db_pool_acquire_release)
{
    struct db_conn *a, *b, *c;
    struct db_pool_stats stats;

    pool_open(2, 1000, 0);
    ck_assert_int_eq(db_acquire(pool, &a), STATUS_OK);
    ck_assert_int_eq(db_acquire(pool, &b), STATUS_OK);
    ck_assert_ptr_ne(a, b);
    db_pool_stats(pool, &stats);
    ck_assert_uint_eq(stats.size, 2);
    ck_assert_uint_eq(stats.in_use, 2);
    /* Both connections, the lazy one included, use the pool's schema. */
    ck_assert_str_eq(scalar(a, &q_schema, 0, NULL), schema);
    ck_assert_str_eq(scalar(b, &q_schema, 0, NULL), schema);
    db_release(pool, b);
    db_pool_stats(pool, &stats);
    ck_assert_uint_eq(stats.in_use, 1);
    ck_assert_int_eq(db_acquire(pool, &c), STATUS_OK);
    ck_assert_ptr_eq(c, b); /* the freed slot is reused */
    db_release(pool, c);
    db_release(pool, a);
    db_pool_stats(pool, &stats);
    ck_assert_uint_eq(stats.in_use, 0);
    ck_assert_uint_eq(stats.acquire_timeouts, 0);
}
END_TEST

START_TEST(test_db_pool_acquire_timeout)
{
    struct db_conn *a, *b;
    struct db_pool_stats stats;
    struct timespec start;

    pool_open(1, 100, 0);
    ck_assert_int_eq(db_acquire(pool, &a), STATUS_OK);
    clock_gettime(CLOCK_MONOTONIC, &start);
    ck_assert_int_eq(db_acquire(pool, &b), STATUS_UNAVAILABLE);
    long waited = elapsed_ms(&start);
    ck_assert_msg(waited >= 90 && waited < 2000, "waited %ld ms for a 100 ms bound", waited);
    db_pool_stats(pool, &stats);
    ck_assert_uint_eq(stats.acquire_timeouts, 1);
    ck_assert_uint_eq(stats.in_use, 1);
    db_release(pool, a);
    ck_assert_int_eq(db_acquire(pool, &b), STATUS_OK);
    db_release(pool, b);
}
END_TEST

static void *release_later(void *arg)
{
    struct timespec ts = {0, 150 * 1000000L};

    nanosleep(&ts, NULL);
    db_release(pool, arg);
    return NULL;
}

START_TEST(test_db_pool_waiter_woken_by_release)
{
    struct db_conn *a, *b;
    struct timespec start;
    pthread_t t;

    pool_open(1, 5000, 0);
    ck_assert_int_eq(db_acquire(pool, &a), STATUS_OK);
    ck_assert_int_eq(pthread_create(&t, NULL, release_later, a), 0);
    clock_gettime(CLOCK_MONOTONIC, &start);
    ck_assert_int_eq(db_acquire(pool, &b), STATUS_OK);
    ck_assert_int_lt(elapsed_ms(&start), 4000); /* woken by the release, not by the deadline */
    ck_assert_ptr_eq(a, b);
    pthread_join(t, NULL);
    db_release(pool, b);
}
END_TEST

START_TEST(test_db_exec_params_and_sqlstates)
{
    struct db_conn *conn;
    const char *p1[] = {"1", "first"}, *p2[] = {"2", NULL}, *p3[] = {"abc", "x"};
    const char *dup[] = {"1", "again"}, *id1[] = {"1"}, *id9[] = {"9"};
    PGresult *r = (PGresult *)1;

    pool_open(1, 1000, 0);
    ck_assert_int_eq(db_acquire(pool, &conn), STATUS_OK);
    create_items(conn);
    ck_assert_int_eq(db_exec(conn, &q_insert, 2, p1, NULL), STATUS_OK);
    ck_assert_str_eq(scalar(conn, &q_name, 1, id1), "first");
    ck_assert_int_eq(db_exec(conn, &q_name, 1, id9, &r), STATUS_OK);
    ck_assert_int_eq(PQntuples(r), 0);
    PQclear(r);
    r = NULL;
    ck_assert_int_eq(db_exec(conn, &q_insert, 2, dup, &r), STATUS_CONFLICT); /* 23505 */
    ck_assert_ptr_null(r);                                                   /* nothing returned */
    ck_assert_int_eq(db_exec(conn, &q_insert, 2, p3, NULL), STATUS_INVALID); /* 22P02 */
    ck_assert_int_eq(db_exec(conn, &q_insert, 2, p2, NULL), STATUS_INVALID); /* 23502: NULL */
    ck_assert_int_eq(db_command(conn, "SELECT * FROM no_such_table"), STATUS_INTERNAL);
    ck_assert_str_eq(scalar(conn, &q_count, 0, NULL), "1"); /* the connection still works */
    db_release(pool, conn);
}
END_TEST

START_TEST(test_db_statement_timeout)
{
    struct db_conn *conn;

    pool_open(1, 1000, 100);
    ck_assert_int_eq(db_acquire(pool, &conn), STATUS_OK);
    ck_assert_int_eq(db_exec(conn, &q_sleep, 0, NULL, NULL), STATUS_UNAVAILABLE); /* 57014 */
    ck_assert_str_eq(scalar(conn, &q_schema, 0, NULL), schema);
    db_release(pool, conn);
}
END_TEST

START_TEST(test_db_transactions)
{
    struct db_conn *conn;
    const char *p1[] = {"1", "kept"}, *p2[] = {"2", "dropped"}, *p3[] = {"3", "abandoned"};

    pool_open(1, 1000, 0);
    ck_assert_int_eq(db_acquire(pool, &conn), STATUS_OK);
    create_items(conn);
    unsigned long commits = db_commit_count();
    ck_assert_int_eq(db_begin(conn), STATUS_OK);
    ck_assert_int_eq(db_exec(conn, &q_insert, 2, p1, NULL), STATUS_OK);
    ck_assert_int_eq(db_commit(conn), STATUS_OK);
    ck_assert_uint_eq(db_commit_count(), commits + 1);
    ck_assert_int_eq(db_begin(conn), STATUS_OK);
    ck_assert_int_eq(db_exec(conn, &q_insert, 2, p2, NULL), STATUS_OK);
    db_rollback(conn);
    ck_assert_uint_eq(db_commit_count(), commits + 1); /* a rollback is no commit */
    ck_assert_int_eq(db_end(conn, STATUS_CONFLICT), STATUS_CONFLICT);
    ck_assert_uint_eq(db_commit_count(), commits + 1);
    ck_assert_str_eq(scalar(conn, &q_count, 0, NULL), "1");
    /* Released inside a transaction: rolled back before anyone else gets the connection. */
    ck_assert_int_eq(db_begin(conn), STATUS_OK);
    ck_assert_int_eq(db_exec(conn, &q_insert, 2, p3, NULL), STATUS_OK);
    db_release(pool, conn);
    ck_assert_int_eq(db_acquire(pool, &conn), STATUS_OK);
    ck_assert_int_eq(PQtransactionStatus(conn->pg), PQTRANS_IDLE);
    ck_assert_str_eq(scalar(conn, &q_count, 0, NULL), "1");
    db_release(pool, conn);
}
END_TEST

/* Kills a backend from another session and waits until it is gone. */
static void backend_kill(const char *pid)
{
    const char *params[] = {pid};
    PGconn *pg = testdb_admin_open();
    PGresult *r =
        PQexecParams(pg, "SELECT pg_terminate_backend($1::int)", 1, NULL, params, NULL, NULL, 0);

    ck_assert_str_eq(PQgetvalue(r, 0, 0), "t");
    PQclear(r);
    for (int i = 0; i < 100; i++) {
        r = PQexecParams(pg, "SELECT count(*) FROM pg_stat_activity WHERE pid = $1::int", 1, NULL,
                         params, NULL, NULL, 0);
        int gone = strcmp(PQgetvalue(r, 0, 0), "0") == 0;
        PQclear(r);
        if (gone)
            break;
        usleep(20000);
    }
    PQfinish(pg);
}

START_TEST(test_db_reconnect_after_backend_killed)
{
    struct db_conn *conn;
    char pid[32];

    pool_open(1, 1000, 0);
    ck_assert_int_eq(db_acquire(pool, &conn), STATUS_OK);
    snprintf(pid, sizeof pid, "%s", scalar(conn, &q_pid, 0, NULL)); /* q_pid is now prepared */
    backend_kill(pid);
    ck_assert_int_eq(db_exec(conn, &q_pid, 0, NULL, NULL), STATUS_UNAVAILABLE);
    db_release(pool, conn);
    /* The next acquire reconnects, and the statement is prepared again on the new backend. */
    ck_assert_int_eq(db_acquire(pool, &conn), STATUS_OK);
    ck_assert_str_ne(scalar(conn, &q_pid, 0, NULL), pid);
    ck_assert_str_eq(scalar(conn, &q_schema, 0, NULL), schema);
    db_release(pool, conn);
}
END_TEST

/* Takes every connection of a pool of n (n <= 8), runs q_pid on each, writes the pids. */
static void pool_pids(size_t n, char pids[][32])
{
    struct db_conn *held[8];

    for (size_t i = 0; i < n; i++) {
        ck_assert_int_eq(db_acquire(pool, &held[i]), STATUS_OK);
        snprintf(pids[i], 32, "%s", scalar(held[i], &q_pid, 0, NULL));
    }
    for (size_t i = 0; i < n; i++)
        db_release(pool, held[n - 1 - i]);
}

static int pid_among(const char *pid, char pids[][32], size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(pid, pids[i]) == 0)
            return 1;
    }
    return 0;
}

/*
 * A restart kills every backend at once while the pool's connections sit idle: none of them may
 * be handed out dead, and the first that is found dead renews all the others.
 */
START_TEST(test_db_idle_connections_renewed_after_backends_killed)
{
    char before[4][32], after[4][32];
    struct db_conn *conn;
    struct db_pool_stats ps;

    pool_open(4, 1000, 0);
    pool_pids(4, before);
    backend_kill(before[0]); /* the one on top of the free stack: the next one handed out */
    ck_assert_int_eq(db_acquire(pool, &conn), STATUS_OK);
    ck_assert_int_eq(db_command(conn, "SET application_name = 'renewed'"),
                     STATUS_OK); /* no retry */
    db_release(pool, conn);
    db_pool_stats(pool, &ps);
    ck_assert_uint_ge(ps.generation, 1);
    /* The three others were alive, but older than the dead one: all of them are made again. */
    pool_pids(4, after);
    for (size_t i = 0; i < 4; i++)
        ck_assert_msg(!pid_among(after[i], before, 4), "connection %zu kept backend %s", i,
                      after[i]);
    db_pool_stats(pool, &ps);
    ck_assert_uint_ge(ps.reconnects, 4);
    ck_assert_uint_eq(ps.retries, 0); /* found dead before anything was sent */
}
END_TEST

START_TEST(test_db_every_backend_killed_next_requests_succeed)
{
    char before[3][32];
    struct db_conn *held[3];

    pool_open(3, 1000, 0);
    ck_assert_int_eq(db_acquire(pool, &held[0]), STATUS_OK);
    create_items(held[0]);
    db_release(pool, held[0]);
    pool_pids(3, before);
    for (size_t i = 0; i < 3; i++)
        backend_kill(before[i]);
    /* Writes too: nothing is retried, nothing fails, because nothing dead is handed out. */
    for (int i = 0; i < 3; i++) {
        char id[16];
        snprintf(id, sizeof id, "%d", i);
        const char *params[] = {id, "x"};
        ck_assert_int_eq(db_acquire(pool, &held[i]), STATUS_OK);
        ck_assert_int_eq(db_exec(held[i], &q_insert, 2, params, NULL), STATUS_OK);
    }
    for (int i = 0; i < 3; i++)
        db_release(pool, held[i]);
}
END_TEST

DB_STMT(q_touch, "UPDATE item SET name = name WHERE id = 0");

/*
 * The backend dies after the connection was checked, before its first statement: a BEGIN or a
 * read runs again on a new connection; a write in autocommit, or a statement after the first,
 * reports the loss.
 */
START_TEST(test_db_first_statement_retried_once)
{
    struct db_conn *conn;
    struct db_pool_stats ps;
    char pid[32];

    pool_open(1, 1000, 0);
    ck_assert_int_eq(db_acquire(pool, &conn), STATUS_OK);
    create_items(conn);
    snprintf(pid, sizeof pid, "%s", scalar(conn, &q_pid, 0, NULL));
    db_release(pool, conn);

    ck_assert_int_eq(db_acquire(pool, &conn), STATUS_OK);
    backend_kill(pid);
    snprintf(pid, sizeof pid, "%s", scalar(conn, &q_pid, 0, NULL)); /* retried: a new backend */
    backend_kill(pid);
    ck_assert_int_eq(db_exec(conn, &q_pid, 0, NULL, NULL), STATUS_UNAVAILABLE); /* not first */
    db_release(pool, conn);

    ck_assert_int_eq(db_acquire(pool, &conn), STATUS_OK);
    snprintf(pid, sizeof pid, "%s", scalar(conn, &q_pid, 0, NULL));
    db_release(pool, conn);
    ck_assert_int_eq(db_acquire(pool, &conn), STATUS_OK);
    backend_kill(pid);
    ck_assert_int_eq(db_begin(conn), STATUS_OK); /* retried */
    ck_assert_int_eq(db_exec(conn, &q_touch, 0, NULL, NULL), STATUS_OK);
    ck_assert_int_eq(db_commit(conn), STATUS_OK);
    snprintf(pid, sizeof pid, "%s", scalar(conn, &q_pid, 0, NULL));
    db_release(pool, conn);

    ck_assert_int_eq(db_acquire(pool, &conn), STATUS_OK);
    backend_kill(pid);
    ck_assert_int_eq(db_exec(conn, &q_touch, 0, NULL, NULL), STATUS_UNAVAILABLE); /* a write */
    db_release(pool, conn);
    db_pool_stats(pool, &ps);
    ck_assert_uint_eq(ps.retries, 2);
}
END_TEST

START_TEST(test_db_dedicated_connection_check)
{
    struct db_conn conn;
    char pid[32];

    ck_assert_int_eq(
        db_conn_open_session(&conn, testdb_url(), schema, 0, "SET application_name = 'unit'"),
        STATUS_OK);
    snprintf(pid, sizeof pid, "%s", scalar(&conn, &q_pid, 0, NULL));
    ck_assert_int_eq(db_conn_check(&conn), STATUS_OK);
    ck_assert_str_eq(scalar(&conn, &q_pid, 0, NULL), pid); /* alive: kept */
    backend_kill(pid);
    ck_assert_int_eq(db_conn_check(&conn), STATUS_OK);
    ck_assert_str_ne(scalar(&conn, &q_pid, 0, NULL), pid);
    ck_assert_str_eq(scalar(&conn, &q_schema, 0, NULL), schema); /* set up again, session too */
    DB_STMT(q_app, "SELECT current_setting('application_name')");
    ck_assert_str_eq(scalar(&conn, &q_app, 0, NULL), "unit");
    db_conn_close(&conn);
}
END_TEST

START_TEST(test_db_dedicated_connection)
{
    struct db_conn conn;

    ck_assert_int_eq(db_conn_open(&conn, testdb_url(), schema, 0), STATUS_OK);
    ck_assert_str_eq(scalar(&conn, &q_schema, 0, NULL), schema);
    db_conn_close(&conn);
    ck_assert_ptr_null(conn.pg);
    ck_assert_int_eq(db_exec(&conn, &q_schema, 0, NULL, NULL), STATUS_UNAVAILABLE);
    ck_assert_int_eq(db_command(&conn, "SELECT 1"), STATUS_UNAVAILABLE);
}
END_TEST

START_TEST(test_db_open_unreachable)
{
    struct db_pool *p = (struct db_pool *)1;
    struct db_conn conn;

    (void)testdb_url();
    ck_assert_int_eq(
        db_pool_open(&p, "postgresql://nobody@127.0.0.1:1/none?connect_timeout=2", NULL, 2, 100, 0),
        STATUS_UNAVAILABLE);
    ck_assert_ptr_eq(p, (struct db_pool *)1); /* untouched on failure */
    ck_assert_int_eq(
        db_conn_open(&conn, "postgresql://nobody@127.0.0.1:1/none?connect_timeout=2", NULL, 0),
        STATUS_UNAVAILABLE);
    ck_assert_ptr_null(conn.pg);
}
END_TEST

/* A server that accepts and never answers: connecting gives up after the default bound. */
START_TEST(test_db_connect_bounded)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    char url[128];
    struct db_conn conn;
    struct timespec t0;

    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    ck_assert_int_eq(listen(fd, 4), 0); /* the kernel accepts; nobody ever speaks */
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    snprintf(url, sizeof url, "postgresql://nobody@127.0.0.1:%d/none?sslmode=disable",
             ntohs(a.sin_port));
    clock_gettime(CLOCK_MONOTONIC, &t0);
    ck_assert_int_eq(db_conn_open(&conn, url, NULL, 0), STATUS_UNAVAILABLE);
    long ms = elapsed_ms(&t0);
    ck_assert_msg(ms >= 4000 && ms < 8000, "gave up after %ld ms", ms);
    close(fd);
}
END_TEST

static Suite *db_suite(void)
{
    Suite *s = suite_create("db");
    TCase *pure = tcase_create("sqlstate");
    TCase *tc = tcase_create("postgresql");

    tcase_set_timeout(pure, 10);
    tcase_add_test(pure, test_db_status_from_sqlstate);
    tcase_add_test(pure, test_db_connect_bounded);
    suite_add_tcase(s, pure);

    tcase_set_timeout(tc, 30);
    tcase_add_checked_fixture(tc, schema_setup, schema_teardown);
    tcase_add_unchecked_fixture(tc, NULL, testdb_schema_sweep);
    tcase_add_test(tc, test_db_pool_acquire_release);
    tcase_add_test(tc, test_db_pool_acquire_timeout);
    tcase_add_test(tc, test_db_pool_waiter_woken_by_release);
    tcase_add_test(tc, test_db_exec_params_and_sqlstates);
    tcase_add_test(tc, test_db_statement_timeout);
    tcase_add_test(tc, test_db_transactions);
    tcase_add_test(tc, test_db_reconnect_after_backend_killed);
    tcase_add_test(tc, test_db_dedicated_connection);
    tcase_add_test(tc, test_db_idle_connections_renewed_after_backends_killed);
    tcase_add_test(tc, test_db_every_backend_killed_next_requests_succeed);
    tcase_add_test(tc, test_db_first_statement_retried_once);
    tcase_add_test(tc, test_db_dedicated_connection_check);
    tcase_add_test(tc, test_db_open_unreachable);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    testdb_init();
    SRunner *sr = srunner_create(db_suite());

    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
