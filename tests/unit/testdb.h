/* testdb: the PostgreSQL scaffolding of the unit tests — URL, superuser, per-test schemas, sweep.
 */
#ifndef PTCE_TESTDB_H
#define PTCE_TESTDB_H

#include <stddef.h>

#include <libpq-fe.h>

/* Records the runner's pid, which names this run's schemas; main() calls it before running the
 * suite, in the runner process. */
void testdb_init(void);

/* The URL of a PostgreSQL superuser, from PTCE_TEST_DATABASE_URL; fails the test, with a message
 * that says how to get one, when it is unset or empty. */
const char *testdb_url(void);

/* A libpq notice processor that drops every notice ("drop cascades to …" is expected). */
void testdb_notice_ignore(void *arg, const char *message);

/* A new superuser connection that ignores notices; fails the test when it cannot connect. The
 * caller PQfinish()es it. */
PGconn *testdb_admin_open(void);

/* Writes this test's name, "unit_<runner pid>_<test pid>", into out (outlen bytes, 64 is plenty):
 * unique to the forked test, and found again by testdb_sweep(). */
void testdb_name(char *out, size_t outlen);

/* Names this test's schema (testdb_name) into schema and creates it as the superuser; fails the
 * test when it cannot. */
void testdb_schema_create(char *schema, size_t size);

/* Drops the schema and everything in it as the superuser; fails the test when it cannot. */
void testdb_schema_drop(const char *schema);

struct db_conn;
struct migration;

/* Creates this test's schema (testdb_schema_create), opens conn on it with that statement
 * timeout (0: none) and applies common's migrations, then a service's (migrations[0..n)), as the
 * service does at start-up; fails the test on any error. */
void testdb_service_schema(char *schema, size_t size, struct db_conn *conn, long timeout_ms,
                           const struct migration *migrations, size_t n);

/* Closes conn and drops the schema (testdb_schema_drop). */
void testdb_service_schema_drop(const char *schema, struct db_conn *conn);

/* Runner side, best effort (nothing when the URL is unset or the server is unreachable): runs sql
 * as the superuser with $1 bound to the LIKE pattern of this run's names, "unit\_<runner pid>\_%";
 * when it returns rows, runs each row's first column as a statement. */
void testdb_sweep(const char *sql);

/* An unchecked fixture's teardown: drops the schemas of this run's tests that failed midway. */
void testdb_schema_sweep(void);

#endif
