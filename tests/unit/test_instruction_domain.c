/* test_instruction_domain: instruction's pure rules — write-back, decisions, scores, CSV. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "instruction/domain.h"
#include "instruction/lifecycle.h"

START_TEST(test_writeback_mapping)
{
    ck_assert_str_eq(domain_writeback_mutation("received", "regional_review"),
                     "dossierPasserEnInstruction");
    ck_assert_str_eq(domain_writeback_mutation("awaiting_decision", "phase1_laureate"),
                     "dossierAccepter");
    ck_assert_str_eq(domain_writeback_mutation("awaiting_decision", "refused"), "dossierRefuser");
    ck_assert_str_eq(domain_writeback_mutation("regional_review", "closed"),
                     "dossierClasserSansSuite");
    ck_assert_str_eq(domain_writeback_mutation("regional_review", "correction_requested"),
                     "dossierRepasserEnConstruction");
    /* Back to regional review after a decision was undone is no DS instruction start. */
    ck_assert_ptr_null(domain_writeback_mutation("awaiting_decision", "regional_review"));
    ck_assert_ptr_null(domain_writeback_mutation("regional_review", "awaiting_decision"));
    ck_assert_ptr_null(domain_writeback_mutation("phase2_review", "phase2_laureate"));
    ck_assert_ptr_null(domain_writeback_mutation("correction_requested", "received"));
}
END_TEST

START_TEST(test_decision_phases)
{
    ck_assert_int_eq(domain_decision_phase("phase1_laureate"), 1);
    ck_assert_int_eq(domain_decision_phase("refused"), 1);
    ck_assert_int_eq(domain_decision_phase("closed"), 1);
    ck_assert_int_eq(domain_decision_phase("phase2_laureate"), 2);
    ck_assert_int_eq(domain_decision_phase("phase2_not_selected"), 2);
    ck_assert_int_eq(domain_decision_phase("phase2_invited"), 0);
    ck_assert_int_eq(domain_decision_phase("received"), 0);
    ck_assert_str_eq(domain_decision_from(1), "awaiting_decision");
    ck_assert_str_eq(domain_decision_from(2), "phase2_review");
    ck_assert(domain_state_known("phase2_applied"));
    ck_assert(!domain_state_known("accepte"));
    ck_assert(!domain_state_known(NULL));
}
END_TEST

/* The transition table: motivations where DESIGN.md requires them, decisions national only. */
START_TEST(test_lifecycle_table)
{
    char err[160];
    struct fsm *m = lifecycle_fsm_new(err, sizeof err);

    ck_assert_msg(m != NULL, "%s", err);
    fsm_free(m);
    ck_assert(lifecycle_transition_find("awaiting_decision", "refused")->motivation_required);
    ck_assert(lifecycle_transition_find("awaiting_decision", "closed")->motivation_required);
    ck_assert(lifecycle_transition_find("regional_review", "closed")->motivation_required);
    ck_assert(
        lifecycle_transition_find("regional_review", "correction_requested")->motivation_required);
    ck_assert(
        !lifecycle_transition_find("awaiting_decision", "phase1_laureate")->motivation_required);
    ck_assert_uint_eq(lifecycle_transition_find("awaiting_decision", "phase1_laureate")->roles,
                      ROLE_NATIONAL_ADMIN);
    ck_assert_uint_eq(lifecycle_transition_find("phase2_review", "phase2_laureate")->roles,
                      ROLE_NATIONAL_ADMIN);
    ck_assert_uint_eq(lifecycle_transition_find("correction_requested", "received")->roles, 0);
    ck_assert_ptr_null(lifecycle_transition_find("received", "phase1_laureate"));
    ck_assert_ptr_null(lifecycle_transition_find("refused", "phase1_laureate"));
    ck_assert_str_eq(lifecycle_transition_find("awaiting_decision", "refused")->event_type,
                     "dossier.decided");
    ck_assert_str_eq(lifecycle_transition_find("phase2_review", "phase2_not_selected")->event_type,
                     "dossier.phase2_decided");
}
END_TEST

START_TEST(test_annotation_types)
{
    json_t *s = json_string("x"), *blank = json_string(" \t"), *t = json_true(),
           *i = json_integer(3), *d = json_string("2026-02-28"), *bad = json_string("2026-02-30"),
           *null = json_null();

    ck_assert(domain_annotation_value_ok("text", s));
    ck_assert(!domain_annotation_value_ok("text", i));
    ck_assert(domain_annotation_value_ok("boolean", t));
    ck_assert(!domain_annotation_value_ok("boolean", s));
    ck_assert(domain_annotation_value_ok("integer", i));
    ck_assert(!domain_annotation_value_ok("integer", t));
    ck_assert(domain_annotation_value_ok("date", d));
    ck_assert(!domain_annotation_value_ok("date", bad));
    ck_assert(domain_annotation_value_ok("date", null));
    ck_assert(!domain_annotation_value_ok("colour", s));
    ck_assert(domain_annotation_filled(s));
    ck_assert(!domain_annotation_filled(blank));
    ck_assert(!domain_annotation_filled(null));
    ck_assert(!domain_annotation_filled(NULL));
    ck_assert(domain_annotation_filled(t));
    json_decref(s);
    json_decref(blank);
    json_decref(t);
    json_decref(i);
    json_decref(d);
    json_decref(bad);
    json_decref(null);
}
END_TEST

START_TEST(test_review_total)
{
    json_t *grid = json_loads("[{\"key\":\"a\",\"weight\":3,\"max\":5},"
                              "{\"key\":\"b\",\"weight\":1,\"max\":10}]",
                              0, NULL);
    json_t *full = json_loads("{\"a\":5,\"b\":10}", 0, NULL);
    json_t *mixed = json_loads("{\"a\":2,\"b\":7}", 0, NULL);
    json_t *third = json_loads("{\"a\":0,\"b\":1}", 0, NULL); /* 1/10 of weight 1 of 4: 2.5 % */
    json_t *over = json_loads("{\"a\":6,\"b\":1}", 0, NULL);
    json_t *missing = json_loads("{\"a\":1}", 0, NULL);
    json_t *other = json_loads("{\"a\":1,\"c\":1}", 0, NULL);
    char why[120];
    int total = -1;

    ck_assert_int_eq(domain_review_total(grid, full, &total, why, sizeof why), STATUS_OK);
    ck_assert_int_eq(total, 10000);
    /* (3·2/5 + 1·7/10) / 4 = (1.2 + 0.7) / 4 = 47.5 % */
    ck_assert_int_eq(domain_review_total(grid, mixed, &total, why, sizeof why), STATUS_OK);
    ck_assert_int_eq(total, 4750);
    ck_assert_int_eq(domain_review_total(grid, third, &total, why, sizeof why), STATUS_OK);
    ck_assert_int_eq(total, 250);
    ck_assert_int_eq(domain_review_total(grid, over, &total, why, sizeof why), STATUS_INVALID);
    ck_assert_ptr_nonnull(strstr(why, "'a'"));
    ck_assert_int_eq(domain_review_total(grid, missing, &total, why, sizeof why), STATUS_INVALID);
    ck_assert_int_eq(domain_review_total(grid, other, &total, why, sizeof why), STATUS_INVALID);
    json_decref(grid);
    json_decref(full);
    json_decref(mixed);
    json_decref(third);
    json_decref(over);
    json_decref(missing);
    json_decref(other);
}
END_TEST

START_TEST(test_consolidate_and_percentile)
{
    int totals[] = {10000, 5500, 6001};
    int mean, spread;
    int64_t sorted[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};

    domain_consolidate(totals, 3, &mean, &spread);
    ck_assert_int_eq(mean, 7167); /* 21501 / 3 = 7167 */
    ck_assert_int_eq(spread, 4500);
    domain_consolidate(totals, 2, &mean, &spread);
    ck_assert_int_eq(mean, 7750);
    domain_consolidate(totals, 0, &mean, &spread);
    ck_assert_int_eq(mean, -1);
    ck_assert_int_eq(spread, -1);
    ck_assert_int_eq(domain_percentile(sorted, 10, 50), 5);
    ck_assert_int_eq(domain_percentile(sorted, 10, 90), 9);
    ck_assert_int_eq(domain_percentile(sorted, 10, 100), 10);
    ck_assert_int_eq(domain_percentile(sorted, 1, 90), 1);
    ck_assert_int_eq(domain_percentile(sorted, 0, 50), -1);
}
END_TEST

START_TEST(test_csv_field)
{
    struct buf b;

    buf_init(&b, 0);
    domain_csv_field(&b, "plain é");
    buf_append(&b, ";", 1);
    domain_csv_field(&b, NULL);
    buf_append(&b, ";", 1);
    domain_csv_field(&b, "a;b");
    buf_append(&b, ";", 1);
    domain_csv_field(&b, "say \"hi\"\nnow");
    buf_append(&b, "", 1);
    ck_assert_str_eq(b.data, "plain é;;\"a;b\";\"say \"\"hi\"\"\nnow\"");
    buf_free(&b);
}
END_TEST

START_TEST(test_siret_conflicts)
{
    json_t *doc = json_loads("{\"carrier\":{\"siret\":\"11111111111111\"},\"members\":["
                             "{\"name\":\"a\",\"siret\":\"22222222222222\"},{\"name\":\"b\"}]}",
                             0, NULL);

    ck_assert(domain_siret_conflicts(doc, "22222222222222"));
    ck_assert(domain_siret_conflicts(doc, "222 222 222 22222"));
    ck_assert(domain_siret_conflicts(doc, "11111111111111"));
    ck_assert(!domain_siret_conflicts(doc, "33333333333333"));
    ck_assert(!domain_siret_conflicts(doc, ""));
    ck_assert(!domain_siret_conflicts(doc, NULL));
    json_decref(doc);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("instruction_domain");
    TCase *tc = tcase_create("domain");

    tcase_add_test(tc, test_writeback_mapping);
    tcase_add_test(tc, test_decision_phases);
    tcase_add_test(tc, test_lifecycle_table);
    tcase_add_test(tc, test_annotation_types);
    tcase_add_test(tc, test_review_total);
    tcase_add_test(tc, test_consolidate_and_percentile);
    tcase_add_test(tc, test_csv_field);
    tcase_add_test(tc, test_siret_conflicts);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
