/* test_migrate: migrations run in order, once, atomically, even with replicas racing. */
#include <check.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "migrate.h"
#include "sql_common.h"
#include "testdb.h"

static char schema[64];
static struct db_conn conn;

static void schema_setup(void)
{
    testdb_schema_create(schema, sizeof schema);
    ck_assert_int_eq(db_conn_open(&conn, testdb_url(), schema, 0), STATUS_OK);
}

static void schema_teardown(void)
{
    db_conn_close(&conn);
    testdb_schema_drop(schema);
}

DB_STMT(q_regclass, "SELECT coalesce(to_regclass($1)::text, '')");
DB_STMT(q_recorded, "SELECT string_agg(name, ',' ORDER BY name) FROM schema_migrations");

/* 1 when relation `name` exists in the test's schema. */
static int relation_exists(struct db_conn *c, const char *name)
{
    char qualified[128];
    const char *params[] = {qualified};
    PGresult *r;

    snprintf(qualified, sizeof qualified, "%s.%s", schema, name);
    ck_assert_int_eq(db_exec(c, &q_regclass, 1, params, &r), STATUS_OK);
    int exists = PQgetvalue(r, 0, 0)[0] != '\0';
    PQclear(r);
    return exists;
}

static const char *recorded(struct db_conn *c)
{
    static char names[512];
    PGresult *r;

    ck_assert_int_eq(db_exec(c, &q_recorded, 0, NULL, &r), STATUS_OK);
    snprintf(names, sizeof names, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    return names;
}

/*
 * Rows the size of a deposit's event fill an outbox page as the relay finds them, then each is
 * marked sent: the page of every row (ctid's block) before and after its mark, as the number of
 * rows whose new version left their page.
 */
DB_STMT(q_outbox_fill,
        "INSERT INTO outbox (event_id, topic, key, type, payload) SELECT gen_random_uuid(), 't', "
        "'k', 'x', repeat('p', 1700) FROM generate_series(1, 40)");
DB_STMT(q_outbox_moved, "WITH b AS (SELECT id, (ctid::text::point)[0] AS page FROM outbox), "
                        "u AS (UPDATE outbox o SET sent_at = now() FROM b WHERE o.id = b.id "
                        "RETURNING b.page AS before, (o.ctid::text::point)[0] AS after) "
                        "SELECT count(*) FILTER (WHERE before <> after), count(*) FROM u");

static long outbox_rows_moved_by_their_sent_mark(struct db_conn *c)
{
    PGresult *r;

    ck_assert_int_eq(db_exec(c, &q_outbox_fill, 0, NULL, NULL), STATUS_OK);
    ck_assert_int_eq(db_exec(c, &q_outbox_moved, 0, NULL, &r), STATUS_OK);
    long moved = strtol(PQgetvalue(r, 0, 0), NULL, 10);
    ck_assert_int_eq(strtol(PQgetvalue(r, 0, 1), NULL, 10), 40);
    PQclear(r);
    return moved;
}

static enum status apply_one_list(struct db_conn *c, const struct migration *list, size_t count,
                                  size_t *applied)
{
    const struct migration *const lists[] = {list};
    const size_t counts[] = {count};

    return migrate_apply(c, lists, counts, 1, applied);
}

/* What common/sql holds, in order: the names schema_migrations records. */
#define COMMON_MIGRATIONS                                                                          \
    "001_outbox_inbox.sql,002_dead_letters.sql,003_idempotency.sql,004_outbox_fillfactor.sql,"     \
    "005_inbox_seq_unindexed.sql,006_outbox_wake_in_process.sql"

START_TEST(test_migrate_common_once)
{
    size_t applied = 99;

    ck_assert_uint_ge(sql_common_migrations_count, 1);
    ck_assert_int_eq(
        apply_one_list(&conn, sql_common_migrations, sql_common_migrations_count, &applied),
        STATUS_OK);
    ck_assert_uint_eq(applied, sql_common_migrations_count);
    ck_assert(relation_exists(&conn, "outbox"));
    ck_assert(relation_exists(&conn, "inbox"));
    ck_assert(relation_exists(&conn, "inbox_dead_letter"));
    ck_assert_str_eq(recorded(&conn), COMMON_MIGRATIONS);
    ck_assert_int_eq(PQtransactionStatus(conn.pg), PQTRANS_IDLE); /* committed */
    /* 004: a sent mark keeps the row on its page (its WAL then carries only what changed). */
    ck_assert_int_eq(outbox_rows_moved_by_their_sent_mark(&conn), 0);

    ck_assert_int_eq(
        apply_one_list(&conn, sql_common_migrations, sql_common_migrations_count, &applied),
        STATUS_OK);
    ck_assert_uint_eq(applied, 0);
    ck_assert_str_eq(recorded(&conn), COMMON_MIGRATIONS);
}
END_TEST

START_TEST(test_migrate_lists_in_order)
{
    /* b references a, across lists; c references b: any other order fails. */
    static const struct migration first[] = {{"001_a.sql", "CREATE TABLE a (id int PRIMARY KEY)"}};
    static const struct migration second[] = {
        {"101_b.sql", "CREATE TABLE b (id int PRIMARY KEY REFERENCES a)"},
        {"102_c.sql", "CREATE TABLE c (id int PRIMARY KEY REFERENCES b)"},
    };
    const struct migration *const lists[] = {first, second};
    size_t counts[] = {1, 1};
    size_t applied = 0;

    ck_assert_int_eq(migrate_apply(&conn, lists, counts, 2, &applied), STATUS_OK);
    ck_assert_uint_eq(applied, 2);
    ck_assert(!relation_exists(&conn, "c"));
    counts[1] = 2; /* a release adds a migration: only that one runs */
    ck_assert_int_eq(migrate_apply(&conn, lists, counts, 2, &applied), STATUS_OK);
    ck_assert_uint_eq(applied, 1);
    ck_assert(relation_exists(&conn, "c"));
    ck_assert_str_eq(recorded(&conn), "001_a.sql,101_b.sql,102_c.sql");
}
END_TEST

START_TEST(test_migrate_failure_rolls_back_everything)
{
    static const struct migration broken[] = {
        {"001_ok.sql", "CREATE TABLE ok_t (id int)"},
        {"002_bad.sql", "CREATE TABLE bad_t (id int); SELEC 1"},
    };
    size_t applied = 0;

    ck_assert_int_ne(apply_one_list(&conn, broken, 2, &applied), STATUS_OK);
    ck_assert_int_eq(PQtransactionStatus(conn.pg), PQTRANS_IDLE); /* rolled back, usable */
    ck_assert(!relation_exists(&conn, "ok_t"));
    ck_assert(!relation_exists(&conn, "bad_t"));
    ck_assert(!relation_exists(&conn, "schema_migrations"));
    /* Once fixed, both apply. */
    static const struct migration fixed[] = {
        {"001_ok.sql", "CREATE TABLE ok_t (id int)"},
        {"002_bad.sql", "CREATE TABLE bad_t (id int)"},
    };
    ck_assert_int_eq(apply_one_list(&conn, fixed, 2, &applied), STATUS_OK);
    ck_assert_uint_eq(applied, 2);
    ck_assert_str_eq(recorded(&conn), "001_ok.sql,002_bad.sql");
}
END_TEST

/* Two replicas starting together: each applies on its own connection. */
static const struct migration slow[] = {
    {"001_slow.sql", "SELECT pg_sleep(0.3); CREATE TABLE once_t (id int)"},
};

struct replica {
    struct db_conn db;
    enum status st;
    size_t applied;
};

static void *replica_run(void *arg)
{
    struct replica *r = arg;

    r->st = apply_one_list(&r->db, slow, 1, &r->applied);
    return NULL;
}

START_TEST(test_migrate_concurrent_replicas_apply_once)
{
    struct replica reps[2];
    pthread_t threads[2];

    for (int i = 0; i < 2; i++) {
        memset(&reps[i], 0, sizeof reps[i]);
        ck_assert_int_eq(db_conn_open(&reps[i].db, testdb_url(), schema, 0), STATUS_OK);
    }
    for (int i = 0; i < 2; i++)
        ck_assert_int_eq(pthread_create(&threads[i], NULL, replica_run, &reps[i]), 0);
    for (int i = 0; i < 2; i++)
        pthread_join(threads[i], NULL);
    ck_assert_int_eq(reps[0].st, STATUS_OK);
    ck_assert_int_eq(reps[1].st, STATUS_OK);
    ck_assert_uint_eq(reps[0].applied + reps[1].applied, 1);
    ck_assert_str_eq(recorded(&conn), "001_slow.sql");
    for (int i = 0; i < 2; i++)
        db_conn_close(&reps[i].db);
}
END_TEST

START_TEST(test_migrate_writes_only_json_to_stderr)
{
    /* The log contract: stderr carries JSON lines only, even when the server sends notices. */
    static const struct migration one[] = {{"001_t.sql", "CREATE TABLE t (id int)"}};
    char text[4096];
    size_t applied;
    FILE *tmp = tmpfile();
    int saved = dup(STDERR_FILENO);

    ck_assert_int_eq(apply_one_list(&conn, one, 1, &applied), STATUS_OK);
    ck_assert_ptr_nonnull(tmp);
    dup2(fileno(tmp), STDERR_FILENO);
    /* schema_migrations exists now: CREATE TABLE IF NOT EXISTS makes the server send a NOTICE. */
    enum status st = apply_one_list(&conn, one, 1, &applied);
    dup2(saved, STDERR_FILENO);
    close(saved);
    ck_assert_int_eq(st, STATUS_OK);
    rewind(tmp);
    size_t n = fread(text, 1, sizeof text - 1, tmp);
    text[n] = '\0';
    fclose(tmp);
    for (char *line = text, *eol; *line; line = eol + 1) {
        eol = strchr(line, '\n');
        ck_assert_msg(eol != NULL, "unterminated stderr output: %s", line);
        ck_assert_msg(line[0] == '{' && eol[-1] == '}', "not a JSON line on stderr: %.*s",
                      (int)(eol - line), line);
    }
}
END_TEST

static Suite *migrate_suite(void)
{
    Suite *s = suite_create("migrate");
    TCase *tc = tcase_create("postgresql");

    tcase_set_timeout(tc, 30);
    tcase_add_checked_fixture(tc, schema_setup, schema_teardown);
    tcase_add_unchecked_fixture(tc, NULL, testdb_schema_sweep);
    tcase_add_test(tc, test_migrate_common_once);
    tcase_add_test(tc, test_migrate_lists_in_order);
    tcase_add_test(tc, test_migrate_failure_rolls_back_everything);
    tcase_add_test(tc, test_migrate_concurrent_replicas_apply_once);
    tcase_add_test(tc, test_migrate_writes_only_json_to_stderr);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    testdb_init();
    SRunner *sr = srunner_create(migrate_suite());

    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
