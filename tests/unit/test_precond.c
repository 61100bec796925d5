/* test_precond: ETags from versions, and the 412 / 428 / 304 decisions of RFC 9110. */
#include <check.h>
#include <stdlib.h>

#include "precond.h"

START_TEST(test_precond_etag)
{
    char etag[PRECOND_ETAG_LEN];

    precond_etag(3, etag);
    ck_assert_str_eq(etag, "\"v3\"");
    precond_etag(9223372036854775807LL, etag);
    ck_assert_str_eq(etag, "\"v9223372036854775807\"");
}
END_TEST

START_TEST(test_precond_etag_version)
{
    ck_assert_int_eq(precond_etag_version("\"v3\""), 3);
    ck_assert_int_eq(precond_etag_version("\"v0\""), 0);
    ck_assert_int_eq(precond_etag_version("\"v9223372036854775807\""), 9223372036854775807LL);
    ck_assert_int_eq(precond_etag_version(NULL), -1);
    ck_assert_int_eq(precond_etag_version(""), -1);
    ck_assert_int_eq(precond_etag_version("*"), -1);
    ck_assert_int_eq(precond_etag_version("W/\"v3\""), -1);       /* weak */
    ck_assert_int_eq(precond_etag_version("\"v3\", \"v4\""), -1); /* a list */
    ck_assert_int_eq(precond_etag_version(" \"v3\""), -1);        /* spaces */
    ck_assert_int_eq(precond_etag_version("\"v03\""), -1);        /* not ours */
    ck_assert_int_eq(precond_etag_version("\"v-3\""), -1);
    ck_assert_int_eq(precond_etag_version("\"v3"), -1);
}
END_TEST

START_TEST(test_precond_if_match_decisions)
{
    /* absent: 428 only when required */
    ck_assert_int_eq(precond_if_match(NULL, 3, 1), STATUS_PRECONDITION_REQUIRED);
    ck_assert_int_eq(precond_if_match(NULL, 3, 0), STATUS_OK);
    /* the current version, alone or in a list, with the optional whitespace */
    ck_assert_int_eq(precond_if_match("\"v3\"", 3, 1), STATUS_OK);
    ck_assert_int_eq(precond_if_match("\"v1\", \"v3\"", 3, 1), STATUS_OK);
    ck_assert_int_eq(precond_if_match(" \"v2\" ,\t\"v3\" ", 3, 1), STATUS_OK);
    ck_assert_int_eq(precond_if_match("\"v1\",,\"v3\"", 3, 1), STATUS_OK);
    ck_assert_int_eq(precond_if_match("*", 3, 1), STATUS_OK);
    ck_assert_int_eq(precond_if_match(" * ", 3, 1), STATUS_OK);
    /* stale, or near misses of the current tag: 412 */
    ck_assert_int_eq(precond_if_match("\"v2\"", 3, 1), STATUS_PRECONDITION_FAILED);
    ck_assert_int_eq(precond_if_match("\"v2\", \"v4\"", 3, 1), STATUS_PRECONDITION_FAILED);
    ck_assert_int_eq(precond_if_match("\"v33\"", 3, 1), STATUS_PRECONDITION_FAILED);
    ck_assert_int_eq(precond_if_match("\"v\"", 3, 1), STATUS_PRECONDITION_FAILED);
    ck_assert_int_eq(precond_if_match("\"3\"", 3, 1), STATUS_PRECONDITION_FAILED);
    ck_assert_int_eq(precond_if_match("\"V3\"", 3, 1), STATUS_PRECONDITION_FAILED);
    ck_assert_int_eq(precond_if_match("\"v03\"", 3, 1), STATUS_PRECONDITION_FAILED);
    /* an empty (or blank) header is an empty list: no tag, so none matches (RFC 9110 §5.6.1) */
    ck_assert_int_eq(precond_if_match("", 3, 1), STATUS_PRECONDITION_FAILED);
    ck_assert_int_eq(precond_if_match(" \t ", 3, 0), STATUS_PRECONDITION_FAILED);
    /* a weak tag never matches for a change, even the current version */
    ck_assert_int_eq(precond_if_match("W/\"v3\"", 3, 1), STATUS_PRECONDITION_FAILED);
    ck_assert_int_eq(precond_if_match("W/\"v3\", \"v3\"", 3, 1), STATUS_OK);
}
END_TEST

START_TEST(test_precond_malformed)
{
    static const char *const bad[] = {
        "v3", "\"v3",      "\"v3\"x", "\"v3\" \"v4\"", "w/\"v3\"", "W/v3",       "W/ \"v3\"",
        "**", "*, \"v3\"", ",",       " , ",           "\"v 3\"",  "\"v\"3\"\"", "\"v3\";q=1",
    };
    int nm;

    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ck_assert_msg(precond_if_match(bad[i], 3, 1) == STATUS_INVALID, "If-Match '%s'", bad[i]);
        nm = 7;
        ck_assert_msg(precond_if_none_match(bad[i], 3, &nm) == STATUS_INVALID, "If-None-Match '%s'",
                      bad[i]);
        ck_assert_int_eq(nm, 0);
    }
    /* A malformed list after a matching tag is still malformed, and not "not modified". */
    nm = 7;
    ck_assert_int_eq(precond_if_none_match("\"v3\", junk", 3, &nm), STATUS_INVALID);
    ck_assert_int_eq(nm, 0);
}
END_TEST

START_TEST(test_precond_if_none_match)
{
    int nm = 7;

    ck_assert_int_eq(precond_if_none_match(NULL, 3, &nm), STATUS_OK);
    ck_assert_int_eq(nm, 0);
    nm = 7;
    ck_assert_int_eq(precond_if_none_match("", 3, &nm), STATUS_OK); /* an empty list */
    ck_assert_int_eq(nm, 0);
    nm = 7;
    ck_assert_int_eq(precond_if_none_match(" \t ", 3, &nm), STATUS_OK);
    ck_assert_int_eq(nm, 0);
    ck_assert_int_eq(precond_if_none_match("\"v3\"", 3, &nm), STATUS_OK);
    ck_assert_int_eq(nm, 1);
    ck_assert_int_eq(precond_if_none_match("W/\"v3\"", 3, &nm), STATUS_OK);
    ck_assert_int_eq(nm, 1); /* the weak comparison, for reads */
    ck_assert_int_eq(precond_if_none_match("\"v1\", W/\"v3\"", 3, &nm), STATUS_OK);
    ck_assert_int_eq(nm, 1);
    ck_assert_int_eq(precond_if_none_match("*", 3, &nm), STATUS_OK);
    ck_assert_int_eq(nm, 1);
    ck_assert_int_eq(precond_if_none_match("\"v2\"", 3, &nm), STATUS_OK);
    ck_assert_int_eq(nm, 0);
    ck_assert_int_eq(precond_if_none_match("\"v2\", \"v4\"", 3, &nm), STATUS_OK);
    ck_assert_int_eq(nm, 0);
}
END_TEST

static Suite *precond_suite(void)
{
    Suite *s = suite_create("precond");
    TCase *tc = tcase_create("precond");

    tcase_add_test(tc, test_precond_etag);
    tcase_add_test(tc, test_precond_etag_version);
    tcase_add_test(tc, test_precond_if_match_decisions);
    tcase_add_test(tc, test_precond_malformed);
    tcase_add_test(tc, test_precond_if_none_match);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(precond_suite());

    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
