/* test_submission_dossier: the submission domain — DS mapping, eligibility rules, DS times. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "submission/dossier.h"

extern const char ds_mapping_text[];

/* A content that passes every rule: 4 verified pages, three kinds of members, region 84. */
static json_t *content_eligible(void)
{
    return json_pack("{s:{s:s, s:s, s:n}, s:{s:s, s:s}, s:[{s:s, s:s, s:s}, {s:s, s:s, s:s},"
                     " {s:s, s:n, s:s}], s:s, s:{s:s, s:s, s:I, s:s, s:i, s:s}, s:b, s:b}",
                     "carrier", "siret", "73282932000074", "name", "PTCE du Val", "legal_form",
                     "territory", "name", "Val de Drôme", "region", "84", "members", "name", "A",
                     "siret", "73282932000074", "kind", "ess_enterprise", "name", "B", "siret",
                     "73282932000074", "kind", "other_enterprise", "name", "C", "siret", "kind",
                     "local_authority", "summary", "Un pôle.", "main_document", "filename",
                     "candidature.pdf", "content_type", "application/pdf", "byte_size",
                     (json_int_t)1654, "checksum", "abc", "pages", 4, "verification", "verified",
                     "legal_person_private", 1, "prior_state_support", 0);
}

/* The check of one rule in an array of checks (borrowed), or NULL. */
static json_t *check_of(json_t *checks, const char *rule)
{
    size_t i;
    json_t *c;

    json_array_foreach(checks, i, c)
    {
        if (strcmp(json_string_value(json_object_get(c, "rule")), rule) == 0)
            return c;
    }
    return NULL;
}

static const char *outcome_of(json_t *checks, const char *rule)
{
    return json_string_value(json_object_get(check_of(checks, rule), "outcome"));
}

START_TEST(test_eligible_content_passes_every_rule)
{
    const char *eligibility = NULL;
    json_t *content = content_eligible();
    json_t *checks = dossier_checks(content, &eligibility);
    size_t i;
    json_t *c;

    ck_assert_str_eq(eligibility, "eligible");
    ck_assert_uint_eq(json_array_size(checks), 9);
    json_array_foreach(checks, i, c)
    {
        ck_assert_str_eq(json_string_value(json_object_get(c, "outcome")), "pass");
        /* each rule once: dossier_check_set relies on it (no key per rule any more) */
        for (size_t j = 0; j < i; j++)
            ck_assert_str_ne(json_string_value(json_object_get(c, "rule")),
                             json_string_value(json_object_get(json_array_get(checks, j), "rule")));
    }
    json_decref(checks);
    json_decref(content);
}
END_TEST

START_TEST(test_eleven_pages_fail)
{
    const char *eligibility = NULL;
    json_t *content = content_eligible();

    json_object_set_new(json_object_get(content, "main_document"), "pages", json_integer(11));
    json_t *checks = dossier_checks(content, &eligibility);
    json_t *evidence = json_object_get(check_of(checks, "main_document.max_pages"), "evidence");
    ck_assert_str_eq(outcome_of(checks, "main_document.max_pages"), "fail");
    ck_assert_int_eq(json_integer_value(json_object_get(evidence, "pages")), 11);
    ck_assert_int_eq(json_integer_value(json_object_get(evidence, "max")), DOSSIER_MAX_PAGES);
    ck_assert_str_eq(eligibility, "ineligible");
    json_decref(checks);
    json_decref(content);
}
END_TEST

/* A document over the download limit has no page count: review, and the evidence says why. */
START_TEST(test_too_large_document_needs_review)
{
    const char *eligibility = NULL;
    json_t *content = content_eligible();
    json_t *doc = json_object_get(content, "main_document");

    json_object_set_new(doc, "pages", json_null());
    json_object_set_new(doc, "verification", json_string("too_large"));
    json_object_set_new(doc, "byte_size", json_integer(50000000));
    json_t *checks = dossier_checks(content, &eligibility);
    json_t *evidence = json_object_get(check_of(checks, "main_document.max_pages"), "evidence");
    ck_assert_str_eq(outcome_of(checks, "main_document.max_pages"), "needs_review");
    ck_assert_str_eq(json_string_value(json_object_get(evidence, "verification")), "too_large");
    ck_assert_ptr_nonnull(
        strstr(json_string_value(json_object_get(evidence, "reason")), "download limit"));
    ck_assert_int_eq(json_integer_value(json_object_get(evidence, "byte_size")), 50000000);
    ck_assert_str_eq(eligibility, "needs_review");
    json_decref(checks);
    json_decref(content);
}
END_TEST

START_TEST(test_unverified_or_missing_document_needs_review)
{
    const char *eligibility = NULL;
    json_t *content = content_eligible();
    json_t *doc = json_object_get(content, "main_document");

    json_object_set_new(doc, "pages", json_null());
    json_object_set_new(doc, "verification", json_string("checksum_mismatch"));
    json_t *checks = dossier_checks(content, &eligibility);
    json_t *evidence = json_object_get(check_of(checks, "main_document.max_pages"), "evidence");
    ck_assert_str_eq(outcome_of(checks, "main_document.max_pages"), "needs_review");
    ck_assert_str_eq(json_string_value(json_object_get(evidence, "verification")),
                     "checksum_mismatch");
    ck_assert_str_eq(eligibility, "needs_review");
    json_decref(checks);

    json_object_set_new(content, "main_document", json_null());
    checks = dossier_checks(content, &eligibility);
    evidence = json_object_get(check_of(checks, "main_document.max_pages"), "evidence");
    ck_assert_str_eq(outcome_of(checks, "main_document.max_pages"), "needs_review");
    ck_assert_str_eq(json_string_value(json_object_get(evidence, "reason")), "no main document");
    ck_assert_str_eq(eligibility, "needs_review");
    json_decref(checks);
    json_decref(content);
}
END_TEST

/* A fail outweighs a review; unanswered yes/no questions are reviews, never guesses. */
START_TEST(test_eligibility_aggregates_outcomes)
{
    const char *eligibility = NULL;
    json_t *content = content_eligible();

    json_object_set_new(content, "legal_person_private", json_null());
    json_t *checks = dossier_checks(content, &eligibility);
    ck_assert_str_eq(outcome_of(checks, "carrier.private_legal_person"), "needs_review");
    ck_assert_str_eq(eligibility, "needs_review");
    json_decref(checks);

    json_object_set_new(content, "prior_state_support", json_true());
    checks = dossier_checks(content, &eligibility);
    ck_assert_str_eq(outcome_of(checks, "no_prior_state_support"), "fail");
    ck_assert_str_eq(eligibility, "ineligible");
    json_decref(checks);
    json_decref(content);
}
END_TEST

/* The DS mapping reads byteSizeBigInt (a string) into byte_size, which the worker compares. */
START_TEST(test_mapping_reads_the_main_document)
{
    char err[256] = "";
    struct ds_mapping *m = ds_mapping_load(NULL, ds_mapping_text, err, sizeof err);

    ck_assert_msg(m != NULL, "%s", err);
    json_t *ds =
        json_pack("{s:[{s:s, s:s, s:[{s:s, s:s, s:s, s:s, s:s}]}]}", "champs", "__typename",
                  "PieceJustificativeChamp", "champDescriptorId", "Q2hhbXAtMTEw", "files",
                  "filename", "big.pdf", "contentType", "application/pdf", "byteSizeBigInt",
                  "50000000", "checksum", "xyz", "url", "http://127.0.0.1/f");
    json_t *content = dossier_content_from_ds(m, ds);
    json_t *doc = json_object_get(content, "main_document");
    ck_assert_str_eq(json_string_value(json_object_get(doc, "filename")), "big.pdf");
    ck_assert_int_eq(json_integer_value(json_object_get(doc, "byte_size")), 50000000);
    ck_assert(json_is_null(json_object_get(doc, "pages")));
    ck_assert(json_is_null(json_object_get(json_object_get(content, "territory"), "region")));
    json_decref(content);
    json_decref(ds);
    ds_mapping_free(m);
}
END_TEST

START_TEST(test_ds_time_parse)
{
    static const struct {
        const char *in;
        const char *out; /* NULL: refused */
    } cases[] = {
        {"2021-06-23 10:32:42 +0200", "2021-06-23T08:32:42Z"},
        {"2021-06-23 10:32:42 UTC", "2021-06-23T10:32:42Z"},
        {"2021-06-23T10:32:42+02:00", "2021-06-23T08:32:42Z"},
        {"2021-06-23T10:32:42.123Z", "2021-06-23T10:32:42Z"},
        {"2021-06-23 10:32:42  0200", "2021-06-23T08:32:42Z"}, /* "+" decoded as a space */
        {"2021-01-01 00:30:00 +0100", "2020-12-31T23:30:00Z"},
        {"2021-13-45 10:32:42 +0200", NULL},
        {"yesterday at noon", NULL},
        {"2021-06-23 10:32:42", NULL},
        {"2021-06-23 10:32:42 +2500", NULL},
        {"1999-12-31 23:00:00 UTC", NULL},
    };
    char out[40];

    ck_assert_int_eq(ds_time_parse(NULL, out, sizeof out), -1);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int rc = ds_time_parse(cases[i].in, out, sizeof out);
        if (!cases[i].out) {
            ck_assert_msg(rc == -1, "%s accepted as %s", cases[i].in, out);
            continue;
        }
        ck_assert_msg(rc == 0, "%s refused", cases[i].in);
        ck_assert_str_eq(out, cases[i].out);
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("submission_dossier");
    TCase *tc = tcase_create("core");

    tcase_add_test(tc, test_eligible_content_passes_every_rule);
    tcase_add_test(tc, test_eleven_pages_fail);
    tcase_add_test(tc, test_too_large_document_needs_review);
    tcase_add_test(tc, test_unverified_or_missing_document_needs_review);
    tcase_add_test(tc, test_eligibility_aggregates_outcomes);
    tcase_add_test(tc, test_mapping_reads_the_main_document);
    tcase_add_test(tc, test_ds_time_parse);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
