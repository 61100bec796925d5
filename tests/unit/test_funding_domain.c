/* test_funding_domain: schedules, decisions, clauses and the SCDL rows of funding — pure code. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "funding/domain.h"

static json_t *tmpl_of(const char *text)
{
    json_t *t = json_loads(text, 0, NULL);

    ck_assert_ptr_nonnull(t);
    return t;
}

static long long part(const json_t *schedule, size_t i)
{
    return json_integer_value(json_object_get(json_array_get(schedule, i), "amount_cents"));
}

START_TEST(test_schedule_default_halves)
{
    json_t *tmpl = funding_template_default(), *s = NULL;
    char why[160];

    ck_assert_int_eq(funding_template_check(tmpl, why, sizeof why), STATUS_OK);
    ck_assert_int_eq(funding_schedule_build(10000000, tmpl, &s, why, sizeof why), STATUS_OK);
    ck_assert_int_eq(json_array_size(s), 2);
    ck_assert_int_eq(part(s, 0), 5000000);
    ck_assert_int_eq(part(s, 1), 5000000);
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(s, 0), "condition")),
                     "signature");
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(s, 1), "condition")),
                     "year1_reports_approved");
    ck_assert_int_eq(funding_schedule_matches(s, 10000000), 0);
    json_decref(s);
    /* An odd cent goes to the first tranche (largest remainder, lower index on a tie). */
    ck_assert_int_eq(funding_schedule_build(8000001, tmpl, &s, why, sizeof why), STATUS_OK);
    ck_assert_int_eq(part(s, 0), 4000001);
    ck_assert_int_eq(part(s, 1), 4000000);
    json_decref(s);
    json_decref(tmpl);
}
END_TEST

START_TEST(test_schedule_always_adds_up)
{
    json_t *tmpl =
        tmpl_of("[{\"label\":\"a\",\"weight\":30,\"condition\":\"signature\","
                "\"due_offset_months\":0},"
                "{\"label\":\"b\",\"weight\":30,\"condition\":\"year1_reports_approved\","
                "\"due_offset_months\":12},"
                "{\"label\":\"c\",\"weight\":40,\"condition\":\"year2_reports_approved\","
                "\"due_offset_months\":24}]");
    char why[160];

    for (long long amount = 0; amount < 20000; amount += 7) {
        json_t *s = NULL;
        ck_assert_int_eq(funding_schedule_build(amount, tmpl, &s, why, sizeof why), STATUS_OK);
        ck_assert_msg(funding_schedule_matches(s, amount) == 0, "%lld does not add up", amount);
        json_decref(s);
    }
    json_t *s = NULL;
    ck_assert_int_eq(funding_schedule_build(10000, tmpl, &s, why, sizeof why), STATUS_OK);
    ck_assert_int_eq(part(s, 0), 3000);
    ck_assert_int_eq(part(s, 2), 4000);
    json_decref(s);
    ck_assert_int_eq(funding_schedule_build(-1, tmpl, &s, why, sizeof why), STATUS_INVALID);
    json_decref(tmpl);
}
END_TEST

START_TEST(test_template_refusals)
{
    static const char *const bad[] = {
        "[]",
        "{}",
        "[{\"label\":\"a\",\"weight\":0,\"condition\":\"signature\",\"due_offset_months\":0}]",
        "[{\"label\":\"a\",\"weight\":1,\"condition\":\"whenever\",\"due_offset_months\":0}]",
        "[{\"label\":\"a\",\"weight\":1,\"condition\":\"signature\",\"due_offset_months\":61}]",
        "[{\"label\":\"\",\"weight\":1,\"condition\":\"signature\",\"due_offset_months\":0}]",
        "[{\"label\":\"a\",\"weight\":1.5,\"condition\":\"signature\",\"due_offset_months\":0}]",
        "[{\"label\":\"a\",\"condition\":\"signature\",\"due_offset_months\":0}]",
    };
    char why[160];

    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        json_t *t = tmpl_of(bad[i]), *s = NULL;
        why[0] = '\0';
        ck_assert_msg(funding_schedule_build(100, t, &s, why, sizeof why) == STATUS_INVALID,
                      "%s accepted", bad[i]);
        ck_assert_ptr_null(s);
        ck_assert(why[0] != '\0');
        json_decref(t);
    }
    /* Nine tranches are more than a template holds. */
    json_t *many = json_array();
    for (int i = 0; i < FUNDING_MAX_TRANCHES + 1; i++)
        json_array_append_new(many, json_pack("{s:s, s:i, s:s, s:i}", "label", "x", "weight", 1,
                                              "condition", "signature", "due_offset_months", 0));
    ck_assert_int_eq(funding_template_check(many, why, sizeof why), STATUS_INVALID);
    json_decref(many);
}
END_TEST

START_TEST(test_schedule_matches_refuses_a_wrong_sum)
{
    json_t *s = tmpl_of("[{\"amount_cents\":600},{\"amount_cents\":500}]");

    ck_assert_int_eq(funding_schedule_matches(s, 1100), 0);
    ck_assert_int_eq(funding_schedule_matches(s, 1000), -1);
    ck_assert_int_eq(funding_schedule_matches(s, 1101), -1);
    json_decref(s);
    s = tmpl_of("[{\"amount_cents\":-1},{\"amount_cents\":1001}]");
    ck_assert_int_eq(funding_schedule_matches(s, 1000), -1); /* a negative part */
    json_decref(s);
    s = tmpl_of("[{\"amount_cents\":\"1000\"}]");
    ck_assert_int_eq(funding_schedule_matches(s, 1000), -1); /* not an integer */
    json_decref(s);
    s = tmpl_of("[]");
    ck_assert_int_eq(funding_schedule_matches(s, 0), -1);
    json_decref(s);
}
END_TEST

static json_t *decision(void)
{
    return json_pack("{s:s, s:s, s:s, s:i, s:s, s:s, s:s, s:s, s:{s:s, s:s}}", "dossier_id",
                     "6f1c2f4e-3b7a-4d2e-9c1a-2b3c4d5e6f70", "wave", "2026", "region", "84",
                     "phase", 2, "outcome", "phase2_laureate", "reference", "CNA-2026/12",
                     "decided_at", "2026-07-03T10:00:00Z", "ptce_name", "Pôle du Val",
                     "beneficiary", "siret", "73282932000074", "name", "Coop du Val");
}

START_TEST(test_decision_read)
{
    struct funding_decision d;
    char why[160];
    json_t *data = decision();

    ck_assert_int_eq(funding_decision_read(data, &d, why, sizeof why), STATUS_OK);
    ck_assert(funding_decision_is_laureate(&d));
    ck_assert_str_eq(d.siret, "73282932000074");
    ck_assert_str_eq(d.region, "84");
    json_object_set_new(data, "outcome", json_string("phase2_not_selected"));
    ck_assert_int_eq(funding_decision_read(data, &d, why, sizeof why), STATUS_OK);
    ck_assert(!funding_decision_is_laureate(&d));
    json_decref(data);

    static const char *const fields[][2] = {
        {"phase", NULL},
        {"dossier_id", "42"},
        {"region", "05"},
        {"outcome", "laureate"},
        {"decided_at", "yesterday"},
        {"reference", ""},
        {"wave", ""},
    };
    for (size_t i = 0; i < sizeof fields / sizeof *fields; i++) {
        data = decision();
        if (fields[i][1])
            json_object_set_new(data, fields[i][0], json_string(fields[i][1]));
        else
            json_object_set_new(data, fields[i][0], json_integer(1));
        ck_assert_msg(funding_decision_read(data, &d, why, sizeof why) == STATUS_INVALID,
                      "%s accepted", fields[i][0]);
        json_decref(data);
    }
    data = decision();
    json_object_set_new(json_object_get(data, "beneficiary"), "siret",
                        json_string("73282932000075")); /* a wrong Luhn key */
    ck_assert_int_eq(funding_decision_read(data, &d, why, sizeof why), STATUS_INVALID);
    ck_assert_str_eq(why, "beneficiary.siret is not a valid SIRET");
    json_object_set_new(json_object_get(data, "beneficiary"), "siret", json_null());
    ck_assert_int_eq(funding_decision_read(data, &d, why, sizeof why), STATUS_OK);
    ck_assert_ptr_null(d.siret);
    json_object_del(data, "beneficiary");
    ck_assert_int_eq(funding_decision_read(data, &d, why, sizeof why), STATUS_INVALID);
    json_decref(data);
}
END_TEST

START_TEST(test_clauses_of_loi_2000_321)
{
    struct funding_decision d;
    char why[160];
    json_t *data = decision(), *tmpl = funding_template_default(), *s = NULL;

    ck_assert_int_eq(funding_decision_read(data, &d, why, sizeof why), STATUS_OK);
    ck_assert_int_eq(funding_schedule_build(10000000, tmpl, &s, why, sizeof why), STATUS_OK);
    json_t *c = funding_clauses_build(&d, 10000000, 24, s);
    ck_assert_str_eq(json_string_value(json_object_get(c, "montant")), "100000.00 euros");
    ck_assert_ptr_nonnull(strstr(json_string_value(json_object_get(c, "objet")), "Pôle du Val"));
    ck_assert_ptr_nonnull(json_string_value(json_object_get(c, "conditions_utilisation")));
    json_t *v = json_object_get(c, "modalites_versement");
    ck_assert_int_eq(json_array_size(v), 2);
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(v, 1), "montant")),
                     "50000.00");
    ck_assert_int_eq(json_integer_value(json_object_get(c, "duree_mois")), 24);
    json_decref(c);
    json_decref(s);
    json_decref(tmpl);
    json_decref(data);
}
END_TEST

static char *row_text(const struct funding_scdl_row *row)
{
    static const struct funding_grantor g = {"État", "11000201100044"};
    struct buf b;

    buf_init(&b, 0);
    funding_scdl_row_append(&b, &g, row);
    buf_append(&b, "", 1);
    return b.data; /* the caller frees */
}

START_TEST(test_scdl_rows)
{
    struct funding_scdl_row row = {"2026-12-01",
                                   "CNA-2026/12",
                                   "Pôle \"Val, Rhône\"",
                                   "73282932000074",
                                   "Soutien",
                                   10000000,
                                   2,
                                   "2026-07-03",
                                   "2027-07-03"};
    char *text = row_text(&row);

    ck_assert_str_eq(text, "État,11000201100044,2026-12-01,CNA-2026/12,\"Pôle \"\"Val, Rhône\"\"\","
                           "73282932000074,Soutien,100000.00,aide en numéraire,échelonné,"
                           "2026-07-03/2027-07-03,,non,1.00\r\n");
    free(text);
    row.ntranches = 1;
    row.last_date = "2026-07-03";
    row.amount_cents = 1;
    text = row_text(&row);
    ck_assert_ptr_nonnull(strstr(text, ",0.01,aide en numéraire,unique,2026-07-03,,non,"));
    free(text);
    /* objet is cut at 256 bytes, never inside a UTF-8 character. */
    char longer[600];
    memset(longer, 'a', 255);
    memcpy(longer + 255, "ééé", sizeof "ééé"); /* byte 256 falls inside the first é */
    row.object = longer;
    text = row_text(&row);
    const char *o = strstr(text, ",aaaa");
    ck_assert_ptr_nonnull(o);
    ck_assert_ptr_nonnull(strstr(o, "aaa,0.01,")); /* 255 a's, then the comma: no half é */
    free(text);
    ck_assert_ptr_nonnull(strstr(funding_scdl_header, "pourcentageSubvention\r\n"));
}
END_TEST

START_TEST(test_csv_fields)
{
    static const char *const cases[][2] = {
        {"plain", "plain"},
        {"a,b", "\"a,b\""},
        {"say \"hi\"", "\"say \"\"hi\"\"\""},
        {"two\nlines", "\"two\nlines\""},
        {"", ""},
    };

    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        struct buf b;
        buf_init(&b, 0);
        funding_csv_field_append(&b, cases[i][0]);
        buf_append(&b, "", 1);
        ck_assert_str_eq(b.data, cases[i][1]);
        buf_free(&b);
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("funding_domain");
    TCase *tc = tcase_create("domain");

    tcase_add_test(tc, test_schedule_default_halves);
    tcase_add_test(tc, test_schedule_always_adds_up);
    tcase_add_test(tc, test_template_refusals);
    tcase_add_test(tc, test_schedule_matches_refuses_a_wrong_sum);
    tcase_add_test(tc, test_decision_read);
    tcase_add_test(tc, test_clauses_of_loi_2000_321);
    tcase_add_test(tc, test_scdl_rows);
    tcase_add_test(tc, test_csv_fields);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
