/* testdb: the PostgreSQL scaffolding of the unit tests — URL, superuser, per-test schemas, sweep.
 */
#include "testdb.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "db.h"
#include "migrate.h"
#include "sql_common.h"

static pid_t runner_pid; /* names this run's schemas, so the runner can sweep what failures left */

void testdb_init(void)
{
    runner_pid = getpid();
}

const char *testdb_url(void)
{
    const char *url = getenv("PTCE_TEST_DATABASE_URL");

    ck_assert_msg(url && *url, "PTCE_TEST_DATABASE_URL is not set: the database tests need the URL "
                               "of a PostgreSQL superuser (deploy/local/pg.sh start, then url)");
    return url;
}

void testdb_notice_ignore(void *arg, const char *message)
{
    (void)arg;
    (void)message; /* "drop cascades to …" is expected here */
}

PGconn *testdb_admin_open(void)
{
    PGconn *pg = PQconnectdb(testdb_url());

    ck_assert_msg(PQstatus(pg) == CONNECTION_OK, "connect: %s", PQerrorMessage(pg));
    PQsetNoticeProcessor(pg, testdb_notice_ignore, NULL);
    return pg;
}

void testdb_name(char *out, size_t outlen)
{
    snprintf(out, outlen, "unit_%d_%d", (int)runner_pid, (int)getpid());
}

/* Runs "<command> <schema><tail>" as the superuser (DDL: the name is ours, unit_<pids>). */
static void admin_schema_sql(const char *command, const char *schema, const char *tail)
{
    char sql[256];
    PGconn *pg = testdb_admin_open();

    snprintf(sql, sizeof sql, "%s %s%s", command, schema, tail);
    PGresult *r = PQexec(pg, sql);
    ck_assert_msg(PQresultStatus(r) == PGRES_COMMAND_OK, "%s: %s", sql, PQresultErrorMessage(r));
    PQclear(r);
    PQfinish(pg);
}

void testdb_schema_create(char *schema, size_t size)
{
    testdb_name(schema, size);
    admin_schema_sql("CREATE SCHEMA", schema, "");
}

void testdb_schema_drop(const char *schema)
{
    admin_schema_sql("DROP SCHEMA", schema, " CASCADE");
}

void testdb_sweep(const char *sql)
{
    char pattern[64];
    const char *params[] = {pattern};
    const char *url = getenv("PTCE_TEST_DATABASE_URL");
    PGconn *pg = url ? PQconnectdb(url) : NULL;

    snprintf(pattern, sizeof pattern, "unit\\_%d\\_%%", (int)runner_pid);
    if (pg && PQstatus(pg) == CONNECTION_OK) {
        PQsetNoticeProcessor(pg, testdb_notice_ignore, NULL);
        PGresult *r = PQexecParams(pg, sql, 1, NULL, params, NULL, NULL, 0);
        for (int i = 0; PQresultStatus(r) == PGRES_TUPLES_OK && i < PQntuples(r); i++)
            PQclear(PQexec(pg, PQgetvalue(r, i, 0)));
        PQclear(r);
    }
    PQfinish(pg);
}

void testdb_schema_sweep(void)
{
    testdb_sweep("SELECT format('DROP SCHEMA %I CASCADE', nspname)"
                 " FROM pg_namespace WHERE nspname LIKE $1");
}

void testdb_service_schema(char *schema, size_t size, struct db_conn *conn, long timeout_ms,
                           const struct migration *migrations, size_t n)
{
    const struct migration *const lists[] = {sql_common_migrations, migrations};
    const size_t counts[] = {sql_common_migrations_count, n};
    size_t applied;

    testdb_schema_create(schema, size);
    ck_assert_int_eq(db_conn_open(conn, testdb_url(), schema, timeout_ms), STATUS_OK);
    ck_assert_int_eq(migrate_apply(conn, lists, counts, 2, &applied), STATUS_OK);
}

void testdb_service_schema_drop(const char *schema, struct db_conn *conn)
{
    db_conn_close(conn);
    testdb_schema_drop(schema);
}
