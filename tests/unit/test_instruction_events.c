/* test_instruction_events: instruction's dispatch table of consumed events, on PostgreSQL. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cloudevent.h"
#include "instruction/events.h"
#include "log.h"
#include "migrate.h"
#include "testdb.h"
#include "uuid.h"

extern const struct migration instruction_migrations[];
extern const size_t instruction_migrations_count;

static char schema[64];
static struct db_conn conn;

static void events_setup(void)
{
    testdb_service_schema(schema, sizeof schema, &conn, 5000, instruction_migrations,
                          instruction_migrations_count);
}

static void events_teardown(void)
{
    testdb_service_schema_drop(schema, &conn);
}

/* The first column of the first row of a one-parameter query, as text (caller frees). */
static char *scalar(const char *sql, const char *param)
{
    const char *params[] = {param};
    PGresult *r = PQexecParams(conn.pg, sql, param ? 1 : 0, NULL, params, NULL, NULL, 0);

    ck_assert_int_eq(PQresultStatus(r), PGRES_TUPLES_OK);
    char *v = strdup(PQntuples(r) ? PQgetvalue(r, 0, 0) : "(none)");
    PQclear(r);
    return v;
}

static void assert_scalar(const char *sql, const char *param, const char *want)
{
    char *got = scalar(sql, param);

    ck_assert_str_eq(got, want);
    free(got);
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
    enum status st = instruction_on_event(&conn, &ev, NULL);
    if (st == STATUS_OK)
        ck_assert_int_eq(db_commit(&conn), STATUS_OK);
    else
        db_rollback(&conn);
    cloudevent_clear(&ev);
    return st;
}

static json_t *dossier(const char *title, int version)
{
    return json_pack("{s:{s:s, s:s, s:s, s:s, s:i}}", "dossier", "state", "deposited", "region",
                     "84", "wave", "2026", "title", title, "version", version);
}

START_TEST(test_each_consumed_type_has_its_route)
{
    static const char *const types[] = {"dossier.deposited", "dossier.updated", "dossier.withdrawn",
                                        "wave.published"};

    ck_assert_uint_eq(instruction_event_nroutes, sizeof types / sizeof *types);
    for (size_t i = 0; i < sizeof types / sizeof *types; i++) {
        size_t k = 0;
        while (k < instruction_event_nroutes &&
               strcmp(instruction_event_routes[k].type, types[i]) != 0)
            k++;
        ck_assert_msg(k < instruction_event_nroutes, "no route for %s", types[i]);
        ck_assert_ptr_nonnull(instruction_event_routes[k].handler);
    }
}
END_TEST

START_TEST(test_an_older_version_never_overwrites_a_newer)
{
    char id[UUID_STR_LEN];

    uuid_new(id);
    ck_assert_int_eq(apply("dossier.deposited", id, dossier("second", 2)), STATUS_OK);
    ck_assert_int_eq(apply("dossier.updated", id, dossier("first", 1)), STATUS_OK);
    assert_scalar("SELECT title FROM dossier WHERE id = $1", id, "second");
    assert_scalar("SELECT doc_version FROM dossier WHERE id = $1", id, "2");
    assert_scalar("SELECT stale_events FROM dossier WHERE id = $1", id, "1");
    assert_scalar("SELECT events_applied FROM dossier WHERE id = $1", id, "2");
    ck_assert_int_eq(apply("dossier.updated", id, dossier("third", 3)), STATUS_OK);
    assert_scalar("SELECT title FROM dossier WHERE id = $1", id, "third");
    /* A new dossier is routed once, with its dossier.routed event. */
    assert_scalar("SELECT count(*) FROM assignment WHERE dossier_id = $1", id, "1");
    assert_scalar("SELECT count(*) FROM outbox WHERE key = $1 AND type = 'dossier.routed'", id,
                  "1");
}
END_TEST

START_TEST(test_an_invalid_dossier_event_is_refused)
{
    ck_assert_int_eq(apply("dossier.deposited", "not-a-uuid", dossier("x", 1)), STATUS_INVALID);
    ck_assert_int_eq(apply("wave.published", "w", json_pack("{s:{s:s}}", "wave", "id", "w")),
                     STATUS_INVALID);
    assert_scalar("SELECT count(*) FROM dossier", NULL, "0");
}
END_TEST

START_TEST(test_a_wave_fills_the_wave_table)
{
    json_t *wave =
        json_pack("{s:{s:s, s:s, s:i}}", "wave", "id", "w7", "label", "Wave 7", "phase2_slots", 4);

    ck_assert_int_eq(apply("wave.published", "w7", wave), STATUS_OK);
    assert_scalar("SELECT phase2_slots FROM wave WHERE id = $1", "w7", "4");
}
END_TEST

/* Parses a new event of type for subject (caller clears). */
static void event_make(struct cloudevent *ev, const char *type, const char *subject, json_t *data)
{
    char why[128];
    json_t *env = cloudevent_new("/ptce/test", type, subject, data, NULL, NULL);
    char *text = json_dumps(env, JSON_COMPACT);

    json_decref(env);
    ck_assert_int_eq(cloudevent_parse(text, strlen(text), ev, why, sizeof why), STATUS_OK);
    free(text);
}

/*
 * A batch as the inbox runs it: events_prepare upserts the dossiers that come once in one
 * statement, then every handler runs in order and takes its result; a dossier that comes twice
 * is left to its handlers. The rows are those the events one by one would have made.
 */
START_TEST(test_a_batch_upserts_its_dossiers_together)
{
    char a[UUID_STR_LEN], b[UUID_STR_LEN], c[UUID_STR_LEN], twice[UUID_STR_LEN], old[UUID_STR_LEN];
    struct cloudevent evs[7];
    const struct cloudevent *list[7];

    uuid_new(a);
    uuid_new(b);
    uuid_new(c);
    uuid_new(twice);
    uuid_new(old);
    ck_assert_int_eq(apply("dossier.deposited", old, dossier("newer", 2)), STATUS_OK);
    event_make(&evs[0], "dossier.deposited", a, dossier("a", 1));
    event_make(&evs[1], "dossier.deposited", twice, dossier("twice 1", 1));
    event_make(
        &evs[2], "wave.published", "w9",
        json_pack("{s:{s:s, s:s, s:i}}", "wave", "id", "w9", "label", "W9", "phase2_slots", 2));
    event_make(&evs[3], "dossier.deposited", b, dossier("b", 1));
    event_make(&evs[4], "dossier.updated", old, dossier("older", 1));
    event_make(&evs[5], "dossier.updated", twice, dossier("twice 2", 2));
    event_make(&evs[6], "dossier.deposited", c, dossier("c", 1));
    for (int i = 0; i < 7; i++)
        list[i] = &evs[i];
    ck_assert_int_eq(db_begin(&conn), STATUS_OK);
    ck_assert_int_eq(events_prepare(&conn, list, 7, NULL), STATUS_OK);
    for (int i = 0; i < 7; i++)
        ck_assert_int_eq(instruction_on_event(&conn, &evs[i], NULL), STATUS_OK);
    ck_assert_int_eq(events_prepare(&conn, NULL, 0, NULL), STATUS_OK);
    ck_assert_int_eq(db_commit(&conn), STATUS_OK);

    /* a, b, c and the older update were one statement (one command id); twice was not */
    char in[512];
    snprintf(in, sizeof in,
             "SELECT count(DISTINCT cmin::text) FROM dossier WHERE id IN ('%s', '%s', '%s')", a, b,
             c);
    assert_scalar(in, NULL, "1");
    const char *ids[] = {a, b, c};
    for (int i = 0; i < 3; i++) {
        assert_scalar("SELECT events_applied FROM dossier WHERE id = $1", ids[i], "1");
        assert_scalar("SELECT count(*) FROM assignment WHERE dossier_id = $1", ids[i], "1");
        assert_scalar("SELECT count(*) FROM outbox WHERE key = $1 AND type = 'dossier.routed'",
                      ids[i], "1");
    }
    assert_scalar("SELECT title || ' ' || events_applied FROM dossier WHERE id = $1", twice,
                  "twice 2 2");
    assert_scalar("SELECT count(*) FROM assignment WHERE dossier_id = $1", twice, "1");
    assert_scalar("SELECT title || ' ' || stale_events FROM dossier WHERE id = $1", old, "newer 1");
    assert_scalar("SELECT phase2_slots FROM wave WHERE id = $1", "w9", "2");
    /* the routed events in the order of the batch */
    snprintf(in, sizeof in,
             "SELECT string_agg(CASE key WHEN '%s' THEN 'a' WHEN '%s' THEN 'b' WHEN '%s' THEN 'c'"
             " WHEN '%s' THEN 't' END, '' ORDER BY id) FROM outbox WHERE type = 'dossier.routed'"
             " AND key <> '%s'",
             a, b, c, twice, old);
    assert_scalar(in, NULL, "atbc");
    for (int i = 0; i < 7; i++)
        cloudevent_clear(&evs[i]);
}
END_TEST

START_TEST(test_an_unknown_type_is_skipped)
{
    char id[UUID_STR_LEN];

    uuid_new(id);
    /* Shaped like a dossier event, so only its type keeps it out of the projection. */
    ck_assert_int_eq(apply("dossier.archived", id, dossier("never", 1)), STATUS_OK);
    ck_assert_int_eq(apply("dossier.routed", id, dossier("never", 1)), STATUS_OK);
    assert_scalar("SELECT count(*) FROM dossier", NULL, "0");
    assert_scalar("SELECT count(*) FROM outbox", NULL, "0");
}
END_TEST

int main(void)
{
    testdb_init();
    log_init("test_instruction_events", LOG_ERROR);
    Suite *s = suite_create("instruction_events");
    TCase *tc = tcase_create("events");

    tcase_add_unchecked_fixture(tc, NULL, testdb_schema_sweep);
    tcase_add_checked_fixture(tc, events_setup, events_teardown);
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_each_consumed_type_has_its_route);
    tcase_add_test(tc, test_an_older_version_never_overwrites_a_newer);
    tcase_add_test(tc, test_an_invalid_dossier_event_is_refused);
    tcase_add_test(tc, test_a_wave_fills_the_wave_table);
    tcase_add_test(tc, test_an_unknown_type_is_skipped);
    tcase_add_test(tc, test_a_batch_upserts_its_dossiers_together);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
