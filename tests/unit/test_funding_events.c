/* test_funding_events: decisions open one agreement per dossier, on the real PostgreSQL. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cloudevent.h"
#include "funding/events.h"
#include "log.h"
#include "migrate.h"
#include "testdb.h"
#include "uuid.h"

extern const struct migration funding_migrations[];
extern const size_t funding_migrations_count;

static char schema[64];
static struct db_conn conn;

static void events_setup(void)
{
    testdb_service_schema(schema, sizeof schema, &conn, 5000, funding_migrations,
                          funding_migrations_count);
}

static void events_teardown(void)
{
    testdb_service_schema_drop(schema, &conn);
}

static long long count(const char *sql)
{
    PGresult *r = PQexec(conn.pg, sql);

    ck_assert_int_eq(PQresultStatus(r), PGRES_TUPLES_OK);
    long long n = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    return n;
}

/* Applies one event as the inbox would: inside a transaction, committed only on STATUS_OK. */
static enum status apply(const char *type, const char *subject, json_t *data)
{
    struct cloudevent ev;
    char why[128];
    json_t *env = cloudevent_new("/ptce/test", type, subject, data, NULL, NULL);
    char *text = json_dumps(env, JSON_COMPACT);

    json_decref(env);
    ck_assert_int_eq(cloudevent_parse(text, strlen(text), &ev, why, sizeof why), STATUS_OK);
    free(text);
    ck_assert_int_eq(db_begin(&conn), STATUS_OK);
    enum status st = funding_on_event(&conn, &ev, NULL);
    if (st == STATUS_OK)
        ck_assert_int_eq(db_commit(&conn), STATUS_OK);
    else
        db_rollback(&conn);
    cloudevent_clear(&ev);
    return st;
}

static json_t *decision(const char *dossier, const char *wave, const char *outcome)
{
    return json_pack("{s:s, s:s, s:s, s:i, s:s, s:s, s:s, s:n, s:{s:s, s:s}}", "dossier_id",
                     dossier, "wave", wave, "region", "84", "phase", 2, "outcome", outcome,
                     "reference", "CNA-1", "decided_at", "2026-07-03T10:00:00Z", "ptce_name",
                     "beneficiary", "siret", "73282932000074", "name", "Coop");
}

START_TEST(test_a_laureate_gets_one_agreement)
{
    char dossier[UUID_STR_LEN];

    uuid_new(dossier);
    ck_assert_int_eq(
        apply("dossier.phase2_decided", dossier, decision(dossier, "2026", "phase2_laureate")),
        STATUS_OK);
    /* The same decision again (another event id, as a replay by the producer would be). */
    ck_assert_int_eq(
        apply("dossier.phase2_decided", dossier, decision(dossier, "2026", "phase2_laureate")),
        STATUS_OK);
    ck_assert_int_eq(count("SELECT count(*) FROM agreement"), 1);
    ck_assert_int_eq(count("SELECT count(*) FROM tranche"), 2);
    ck_assert_int_eq(count("SELECT sum(amount_cents) FROM tranche"), 10000000);
    ck_assert_int_eq(count("SELECT count(*) FROM report"), 4);
    ck_assert_int_eq(count("SELECT count(*) FROM agreement_version"), 1);
    ck_assert_int_eq(count("SELECT count(*) FROM outbox WHERE type = 'funding.agreement_created'"),
                     1);
}
END_TEST

START_TEST(test_not_selected_and_invalid_decisions)
{
    char dossier[UUID_STR_LEN];

    uuid_new(dossier);
    ck_assert_int_eq(
        apply("dossier.phase2_decided", dossier, decision(dossier, "2026", "phase2_not_selected")),
        STATUS_OK);
    ck_assert_int_eq(
        apply("dossier.phase2_decided", dossier, decision("x", "2026", "phase2_laureate")),
        STATUS_INVALID);
    ck_assert_int_eq(count("SELECT count(*) FROM agreement"), 0);
    /* A type funding does not apply is recorded and skipped. */
    ck_assert_int_eq(apply("dossier.deposited", dossier, json_object()), STATUS_OK);
}
END_TEST

START_TEST(test_wave_parameters_set_the_amount)
{
    char dossier[UUID_STR_LEN];
    json_t *wave = json_pack("{s:{s:s, s:i, s:I}}", "wave", "id", "w9", "phase2_slots", 3,
                             "amount_per_laureate_cents", (json_int_t)7500001);

    ck_assert_int_eq(apply("wave.published", "w9", wave), STATUS_OK);
    uuid_new(dossier);
    ck_assert_int_eq(
        apply("dossier.phase2_decided", dossier, decision(dossier, "w9", "phase2_laureate")),
        STATUS_OK);
    ck_assert_int_eq(count("SELECT amount_cents FROM agreement"), 7500001);
    ck_assert_int_eq(count("SELECT max(amount_cents) FROM tranche"), 3750001);
    /* The database refuses tranches that stop adding up. */
    PGresult *r = PQexec(conn.pg, "UPDATE tranche SET amount_cents = amount_cents + 1"
                                  " WHERE rank = 1");
    ck_assert_int_ne(PQresultStatus(r), PGRES_COMMAND_OK);
    ck_assert_str_eq(PQresultErrorField(r, PG_DIAG_SQLSTATE), "23514");
    PQclear(r);
}
END_TEST

int main(void)
{
    testdb_init();
    log_init("test_funding_events", LOG_ERROR);
    Suite *s = suite_create("funding_events");
    TCase *tc = tcase_create("events");

    tcase_add_unchecked_fixture(tc, NULL, testdb_schema_sweep);
    tcase_add_checked_fixture(tc, events_setup, events_teardown);
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_a_laureate_gets_one_agreement);
    tcase_add_test(tc, test_not_selected_and_invalid_decisions);
    tcase_add_test(tc, test_wave_parameters_set_the_amount);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
