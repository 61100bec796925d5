/* test_funding_support: the bouquet's and the charter's validation, and dossier.decided applied
 * exactly once — the latter against the real PostgreSQL. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "funding/support.h"
#include "funding/support_model.h"
#include "log.h"
#include "migrate.h"
#include "testdb.h"

extern const struct migration funding_migrations[];
extern const size_t funding_migrations_count;

static const struct clock_date today = {2026, 12, 1};

/* Parses a JSON text (which the test writes, so it must be sound). */
static json_t *obj(const char *text)
{
    json_error_t err;
    json_t *v = json_loads(text, 0, &err);

    ck_assert_msg(v != NULL, "bad test JSON: %s", err.text);
    return v;
}

/* The fields named in errors, comma-separated, into out. */
static const char *fields(const json_t *errors, char *out, size_t len)
{
    size_t i, n = 0;
    json_t *e;

    out[0] = '\0';
    json_array_foreach(errors, i, e)
    {
        n += (size_t)snprintf(out + n, len - n, "%s%s", i ? "," : "",
                              json_string_value(json_object_get(e, "field")));
    }
    return out;
}

#define SIGNATURE                                                                                  \
    "{\"organisation\": \"Coop\", \"siret\": \"%s\", \"role\": \"%s\","                            \
    " \"charter_version\": \"%s\", \"signed_on\": \"%s\"}"

/* Runs charter_signature_parse on a body built from the four values; returns the error fields. */
static const char *signature_errors(const char *siret, const char *role, const char *version,
                                    const char *date, char *out, size_t len)
{
    char text[512];
    struct charter_signature_input in;

    snprintf(text, sizeof text, SIGNATURE, siret, role, version, date);
    json_t *body = obj(text), *errors = json_array();
    enum status st = charter_signature_parse(body, &today, &in, errors);
    fields(errors, out, len);
    ck_assert_int_eq(st, json_array_size(errors) ? STATUS_INVALID : STATUS_OK);
    json_decref(body);
    json_decref(errors);
    return out;
}

START_TEST(test_charter_signature_rules)
{
    char f[256];

    ck_assert_str_eq(
        signature_errors("73282932000074", "carrier", "2021", "2026-06-01", f, sizeof f), "");
    /* La Poste's establishments follow their own rule. */
    ck_assert_str_eq(
        signature_errors("35600000000048", "contributor", "v1.2", "2024-02-29", f, sizeof f), "");
    ck_assert_str_eq(
        signature_errors("73282932000075", "carrier", "2021", "2026-06-01", f, sizeof f), "siret");
    ck_assert_str_eq(
        signature_errors("7328293200007", "carrier", "2021", "2026-06-01", f, sizeof f), "siret");
    ck_assert_str_eq(
        signature_errors("73282932000074", "member", "2021", "2026-06-01", f, sizeof f), "role");
    ck_assert_str_eq(
        signature_errors("73282932000074", "carrier", "v 1", "2026-06-01", f, sizeof f),
        "charter_version");
    ck_assert_str_eq(
        signature_errors("73282932000074", "carrier", "2021", "2026-02-29", f, sizeof f),
        "signed_on");
    ck_assert_str_eq(
        signature_errors("73282932000074", "carrier", "2021", "2026-12-02", f, sizeof f),
        "signed_on"); /* tomorrow */
    ck_assert_str_eq(
        signature_errors("73282932000074", "carrier", "2021", "2026-12-01", f, sizeof f),
        ""); /* today */
    ck_assert_str_eq(
        signature_errors("73282932000074", "carrier", "2021", "2026-06-01T00:00:00Z", f, sizeof f),
        "signed_on");
}
END_TEST

START_TEST(test_action_rules)
{
    char f[256];
    struct support_action_input in;
    json_t *errors = json_array();
    json_t *good =
        obj("{\"title\": \"Atelier\", \"partner_organisation\": \"France Active\","
            " \"format\": \"individual\", \"capacity\": 3, \"starts_on\": \"2026-01-01\","
            " \"ends_on\": \"2026-01-01\", \"partner_key_id\": \"0123456789abcdef\"}");

    ck_assert_int_eq(support_action_parse(good, &in, errors), STATUS_OK);
    ck_assert_int_eq(in.capacity, 3);
    ck_assert_str_eq(in.partner_key_id, "0123456789abcdef");
    ck_assert_ptr_null(in.description);
    /* JSON Schema's reading, as api-spec says: 12.0 is an integer, lengths are characters */
    char title[2 * 201 + 1] = "";
    for (int i = 0; i < 200; i++)
        memcpy(title + 2 * i, "\xc3\xa9", 3);
    json_object_set_new(good, "title", json_string(title));
    json_object_set_new(good, "capacity", json_real(12.0));
    ck_assert_int_eq(support_action_parse(good, &in, errors), STATUS_OK);
    ck_assert_int_eq(in.capacity, 12);
    memcpy(title + 2 * 200, "\xc3\xa9", 3);
    json_object_set_new(good, "title", json_string(title));
    ck_assert_int_eq(support_action_parse(good, &in, errors), STATUS_INVALID);
    ck_assert_str_eq(fields(errors, f, sizeof f), "title");
    json_array_clear(errors);
    json_t *bad = obj("{\"title\": \"  \", \"format\": \"group\", \"capacity\": 1.5,"
                      " \"starts_on\": \"2026-03-02\", \"ends_on\": \"2026-03-01\","
                      " \"partner_key_id\": \"0123456789ABCDEF\"}");
    ck_assert_int_eq(support_action_parse(bad, &in, errors), STATUS_INVALID);
    ck_assert_str_eq(fields(errors, f, sizeof f),
                     "title,partner_organisation,format,partner_key_id,capacity,ends_on");
    /* SupportActionInput is closed (additionalProperties: false): an unknown member is named */
    json_array_clear(errors);
    json_object_set_new(good, "title", json_string("Atelier"));
    json_object_set_new(good, "capacityy", json_integer(3));
    ck_assert_int_eq(support_action_parse(good, &in, errors), STATUS_INVALID);
    ck_assert_str_eq(fields(errors, f, sizeof f), "capacityy");
    json_decref(good);
    json_decref(bad);
    json_decref(errors);
}
END_TEST

START_TEST(test_enrolment_and_delivery_rules)
{
    char f[256];
    struct support_enrolment_input en;
    struct support_delivery_input de;
    json_t *errors = json_array();
    json_t *body = obj("{\"action_id\": \"not-a-uuid\", \"note\": 3}");

    ck_assert_int_eq(support_enrolment_parse(body, &en, errors), STATUS_INVALID);
    ck_assert_str_eq(fields(errors, f, sizeof f), "action_id,dossier_id,note");
    json_decref(body);
    json_array_clear(errors);
    body = obj("{\"delivered_on\": \"2027-01-01\"}");
    ck_assert_int_eq(support_delivery_parse(body, &today, &de, errors), STATUS_INVALID);
    json_decref(body);
    json_array_clear(errors);
    body = obj("{\"delivered_on\": \"2026-11-30\", \"note\": null}");
    ck_assert_int_eq(support_delivery_parse(body, &today, &de, errors), STATUS_OK);
    ck_assert_str_eq(de.delivered_on, "2026-11-30");
    json_decref(body);
    json_decref(errors);
}
END_TEST

/* ---- dossier.decided against the database ---- */

static char schema[64];
static struct db_conn conn;

static void schema_setup(void)
{
    testdb_service_schema(schema, sizeof schema, &conn, 0, funding_migrations,
                          funding_migrations_count);
}

static void schema_teardown(void)
{
    testdb_service_schema_drop(schema, &conn);
}

#define DOSSIER "5b0e3f55-93f4-4c0e-8d7a-2f6b1e0c9a11"

/* Applies a dossier.decided event, in one transaction as the inbox does; returns the status. */
static enum status decide(const char *event_id, const char *outcome, int phase)
{
    char text[1024], why[128];
    struct cloudevent ev;

    snprintf(text, sizeof text,
             "{\"specversion\": \"1.0\", \"id\": \"%s\", \"source\": \"/ptce/instruction\","
             " \"type\": \"dossier.decided\", \"subject\": \"" DOSSIER "\","
             " \"time\": \"2026-07-03T10:00:00.000Z\", \"data\": {\"dossier_id\": \"" DOSSIER "\","
             " \"wave\": \"2026\", \"region\": \"84\", \"phase\": %d, \"outcome\": \"%s\","
             " \"reference\": \"CNA-2026-07-03/12\", \"decided_at\": \"2026-07-03T10:00:00Z\","
             " \"version\": 3, \"ptce_name\": \"Pôle\","
             " \"beneficiary\": {\"siret\": null, \"name\": null}}}",
             event_id, phase, outcome);
    ck_assert_int_eq(cloudevent_parse(text, strlen(text), &ev, why, sizeof why), STATUS_OK);
    ck_assert_int_eq(db_begin(&conn), STATUS_OK);
    enum status st = support_on_decided(&conn, &ev);
    if (st == STATUS_OK)
        ck_assert_int_eq(db_commit(&conn), STATUS_OK);
    else
        db_rollback(&conn);
    cloudevent_clear(&ev);
    return st;
}

static long count(const char *sql)
{
    PGresult *r = PQexec(conn.pg, sql);

    ck_assert_int_eq(PQresultStatus(r), PGRES_TUPLES_OK);
    long n = strtol(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    return n;
}

START_TEST(test_decision_grants_access_once)
{
    ck_assert_int_eq(decide("11111111-1111-4111-8111-111111111111", "phase1_laureate", 1),
                     STATUS_OK);
    ck_assert_int_eq(decide("22222222-2222-4222-8222-222222222222", "phase1_laureate", 1),
                     STATUS_OK);
    ck_assert_int_eq(count("SELECT count(*) FROM support_access"), 1);
    ck_assert_int_eq(count("SELECT count(*) FROM outbox WHERE type = 'support.access_granted'"
                           " AND key = '" DOSSIER "'"),
                     1);
    /* A later refusal of the same dossier takes nothing away. */
    ck_assert_int_eq(decide("33333333-3333-4333-8333-333333333333", "refused", 1), STATUS_OK);
    ck_assert_int_eq(count("SELECT count(*) FROM support_access"), 1);
}
END_TEST

START_TEST(test_refusal_grants_nothing_and_bad_data_is_refused)
{
    ck_assert_int_eq(decide("44444444-4444-4444-8444-444444444444", "refused", 1), STATUS_OK);
    ck_assert_int_eq(decide("55555555-5555-4555-8555-555555555555", "closed", 1), STATUS_OK);
    ck_assert_int_eq(decide("66666666-6666-4666-8666-666666666666", "phase1_laureate", 2),
                     STATUS_INVALID);
    ck_assert_int_eq(decide("77777777-7777-4777-8777-777777777777", "accepte", 1), STATUS_INVALID);
    ck_assert_int_eq(count("SELECT count(*) FROM support_access"), 0);
    ck_assert_int_eq(count("SELECT count(*) FROM outbox"), 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("funding_support");
    TCase *model = tcase_create("model");
    TCase *db = tcase_create("decided");

    testdb_init();
    log_init("unit", LOG_ERROR); /* each test's migrations would fill the output */
    tcase_add_test(model, test_charter_signature_rules);
    tcase_add_test(model, test_action_rules);
    tcase_add_test(model, test_enrolment_and_delivery_rules);
    suite_add_tcase(s, model);
    tcase_set_timeout(db, 60);
    tcase_add_checked_fixture(db, schema_setup, schema_teardown);
    tcase_add_unchecked_fixture(db, NULL, testdb_schema_sweep);
    tcase_add_test(db, test_decision_grants_access_once);
    tcase_add_test(db, test_refusal_grants_nothing_and_bad_data_is_refused);
    suite_add_tcase(s, db);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
