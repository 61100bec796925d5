/* test_submission_store: the DS fetch queue's claims, the poller's requeue, a withdrawal's error
 * path — against the real PostgreSQL. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "log.h"
#include "migrate.h"
#include "sql_common.h"
#include "submission/store.h"
#include "testdb.h"

extern const struct migration submission_migrations[];
extern const size_t submission_migrations_count;

static char schema[64];
static struct db_conn a, b, c; /* workers' own connections, as ds_worker_main opens them */

static void conn_open(struct db_conn *conn)
{
    ck_assert_int_eq(db_conn_open(conn, testdb_url(), schema, 0), STATUS_OK);
}

/* A fresh schema with the common and submission migrations; two worker connections on it. */
static void schema_setup(void)
{
    const struct migration *const lists[] = {sql_common_migrations, submission_migrations};
    const size_t counts[] = {sql_common_migrations_count, submission_migrations_count};
    size_t applied;

    testdb_schema_create(schema, sizeof schema);
    conn_open(&a);
    conn_open(&b);
    ck_assert_int_eq(migrate_apply(&a, lists, counts, 2, &applied), STATUS_OK);
}

static void schema_teardown(void)
{
    db_conn_close(&a);
    db_conn_close(&b);
    db_conn_close(&c);
    testdb_schema_drop(schema);
}

static void exec_ok(struct db_conn *conn, const char *sql)
{
    ck_assert_msg(db_command(conn, sql) == STATUS_OK, "%s", sql);
}

/* Queues a poller notice for dossier number (one version per updated_at). */
static void queue(long long number, const char *updated_at)
{
    int queued = 0;

    ck_assert_int_eq(
        store_notice_from_poll(&a, 12345, number, "en_construction", updated_at, &queued),
        STATUS_OK);
    ck_assert_int_eq(queued, 1);
}

static long long claim(struct db_conn *conn)
{
    struct ds_claim cl;
    int found = 0;

    ck_assert_int_eq(store_notice_claim(conn, &cl, &found), STATUS_OK);
    return found ? cl.number : 0;
}

/* Claims again for up to 2 s: a closed connection's backend ends a few milliseconds later. */
static long long claim_soon(struct db_conn *conn)
{
    long long number = 0;

    for (int i = 0; i < 200 && !number; i++) {
        number = claim(conn);
        if (!number)
            clock_sleep_ms(10);
    }
    return number;
}

/* A claimed dossier is held by its connection only, and freed the moment that connection goes. */
START_TEST(test_claim_holds_the_dossier_until_its_connection_goes)
{
    struct ds_claim held;
    int found = 0;

    queue(7, "2026-03-01T10:00:00Z");
    queue(7, "2026-03-01T11:00:00Z");
    queue(8, "2026-03-01T10:00:00Z");
    ck_assert_int_eq(store_notice_claim(&a, &held, &found), STATUS_OK);
    ck_assert_int_eq(found, 1);
    ck_assert_int_eq(held.number, 7);
    ck_assert_int_eq(held.attempts, 1);
    /* The other worker skips both notices of dossier 7: never two fetches of one dossier. */
    ck_assert_int_eq(claim(&b), 8);
    conn_open(&c); /* a third worker: b still holds 8 */
    ck_assert_int_eq(claim(&c), 0);
    /* A crash, or a dropped connection: the dossier is free at once, not in 5 minutes. */
    db_conn_close(&a);
    ck_assert_int_eq(claim_soon(&c), 7);
}
END_TEST

START_TEST(test_release_and_retry)
{
    struct ds_claim held;
    int found = 0;

    queue(9, "2026-03-01T10:00:00Z");
    ck_assert_int_eq(store_notice_claim(&a, &held, &found), STATUS_OK);
    ck_assert_int_eq(found, 1);
    ck_assert_int_eq(claim(&b), 0);
    /* A real failure waits for its backoff, whoever looks. */
    ck_assert_int_eq(store_notice_retry(&a, &held, 3600 * 1000, "HTTP 500"), STATUS_OK);
    ck_assert_int_eq(store_notice_release(&a, &held), STATUS_OK);
    ck_assert_int_eq(claim(&b), 0);
    ck_assert_int_eq(claim(&a), 0);
    /* The poller meets the same version again: DS answers, the notice is due now. */
    int queued = 0;
    ck_assert_int_eq(
        store_notice_from_poll(&a, 12345, 9, "en_construction", "2026-03-01T10:00:00Z", &queued),
        STATUS_OK);
    ck_assert_int_eq(queued, 1);
    ck_assert_int_eq(claim(&b), 9);
    /* A notice that is due already, or being fetched, is left as it is. */
    ck_assert_int_eq(
        store_notice_from_poll(&a, 12345, 9, "en_construction", "2026-03-01T10:00:00Z", &queued),
        STATUS_OK);
    ck_assert_int_eq(queued, 0);
}
END_TEST

/*
 * One fetch answers every notice of the dossier received before it began (a flood of webhooks
 * costs one DS fetch); a notice received while it runs is still to fetch.
 */
START_TEST(test_done_closes_the_notices_it_covers)
{
    struct ds_claim held;
    int found = 0;

    queue(10, "2026-03-01T10:00:00Z");
    queue(10, "2026-03-01T11:00:00Z");
    ck_assert_int_eq(store_notice_claim(&a, &held, &found), STATUS_OK);
    ck_assert_int_eq(found, 1);
    queue(10, "2026-03-01T12:00:00Z"); /* arrives during the fetch */
    ck_assert_int_eq(store_notice_done(&a, &held), STATUS_OK);
    ck_assert_int_eq(store_notice_release(&a, &held), STATUS_OK);
    PGresult *r = PQexec(a.pg, "SELECT count(*) FROM ds_notification WHERE dossier_number = 10"
                               " AND status = 'done'");
    ck_assert_str_eq(PQgetvalue(r, 0, 0), "2"); /* both received before the fetch */
    PQclear(r);
    ck_assert_int_eq(claim(&b), 10); /* the one received during it is still to fetch */
}
END_TEST

/*
 * A withdrawal whose history insert fails rolls back and reports it. Under LeakSanitizer (make
 * test) the result of its first statement must be freed on that path too.
 */
START_TEST(test_withdraw_error_path)
{
    int changed = 1;

    exec_ok(&a, "INSERT INTO dossier (id, origin, ds_number, wave_id, state, eligibility,"
                " document) VALUES ('5d2c7e1c-2f7a-4b8e-9a51-0c6f5c1d2e3f', 'ds', 11, '2026',"
                " 'en_construction', 'eligible', '{\"state\": \"en_construction\"}')");
    exec_ok(&a, "ALTER TABLE dossier_history ADD CONSTRAINT test_no_delete"
                " CHECK (kind <> 'ds.deleted')");
    enum status st = store_ds_withdraw(&a, 11, "2026-03-02T10:00:00Z", "user_request", &changed);
    ck_assert_int_ne(st, STATUS_OK);
    ck_assert_int_eq(changed, 0);
    exec_ok(&a, "ALTER TABLE dossier_history DROP CONSTRAINT test_no_delete");
    ck_assert_int_eq(store_ds_withdraw(&a, 11, "2026-03-02T10:00:00Z", NULL, &changed), STATUS_OK);
    ck_assert_int_eq(changed, 1);
    ck_assert_int_eq(store_ds_withdraw(&a, 11, "2026-03-02T10:00:00Z", NULL, &changed), STATUS_OK);
    ck_assert_int_eq(changed, 0); /* once */
}
END_TEST

int main(void)
{
    Suite *s = suite_create("submission_store");
    TCase *tc = tcase_create("queue");

    testdb_init();
    log_init("unit", LOG_WARN); /* each test's migrations would fill the output */
    tcase_set_timeout(tc, 60);
    tcase_add_checked_fixture(tc, schema_setup, schema_teardown);
    tcase_add_unchecked_fixture(tc, NULL, testdb_schema_sweep);
    tcase_add_test(tc, test_claim_holds_the_dossier_until_its_connection_goes);
    tcase_add_test(tc, test_release_and_retry);
    tcase_add_test(tc, test_done_closes_the_notices_it_covers);
    tcase_add_test(tc, test_withdraw_error_path);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
