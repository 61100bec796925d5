/* test_submission_time: DS's times (Ruby and ISO 8601) read into RFC 3339 UTC, strictly. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "submission/dossier.h"

START_TEST(test_ds_time_forms)
{
    static const char *const cases[][2] = {
        {"2021-06-23 10:32:42 +0200", "2021-06-23T08:32:42Z"}, /* DS's webhook (Ruby) form */
        {"2021-06-23 10:32:42 UTC", "2021-06-23T10:32:42Z"},
        {"2021-06-23T10:32:42+02:00", "2021-06-23T08:32:42Z"},
        {"2021-06-23T10:32:42.123Z", "2021-06-23T10:32:42Z"},
        {"2024-02-29T00:00:00Z", "2024-02-29T00:00:00Z"}, /* a leap year */
        {"2000-02-29T12:00:00Z", "2000-02-29T12:00:00Z"}, /* divisible by 400 */
        {"2021-12-31T23:30:00-01:00", "2022-01-01T00:30:00Z"},
    };
    char out[40];

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ck_assert_msg(ds_time_parse(cases[i][0], out, sizeof out) == 0, "%s refused", cases[i][0]);
        ck_assert_str_eq(out, cases[i][1]);
    }
}
END_TEST

START_TEST(test_ds_time_impossible_dates)
{
    static const char *const bad[] = {
        "2026-02-31T10:00:00Z", /* 31 February is not 3 March */
        "2026-02-29T10:00:00Z", /* 2026 is not a leap year */
        "2100-02-29T10:00:00Z", /* nor is 2100 */
        "2026-04-31T10:00:00Z", "2026-13-01T10:00:00Z",
        "2026-00-10T10:00:00Z", "2026-01-00T10:00:00Z",
        "2026-01-10T24:00:00Z", "2026-01-10T10:60:00Z",
        "2026-01-10",           "",
        "2026-01-10T10:00:00",  "2026-01-10T10:00:00+2",
        "1999-12-31T10:00:00Z",
    };
    char out[40];

    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        ck_assert_msg(ds_time_parse(bad[i], out, sizeof out) != 0, "%s accepted", bad[i]);
    ck_assert_int_ne(ds_time_parse(NULL, out, sizeof out), 0);
}
END_TEST

/* What api-spec's DsTime pattern says, exactly: the fuzzing checks that spec and code agree. */
START_TEST(test_ds_time_as_the_spec_says)
{
    char out[40], longest[DS_TIME_MAX + 2];

    /* the year as written: 2000 to 2200, whatever the zone makes of it in UTC */
    ck_assert_int_eq(ds_time_parse("2000-01-01T00:30:00+01:00", out, sizeof out), 0);
    ck_assert_str_eq(out, "1999-12-31T23:30:00Z");
    ck_assert_int_eq(ds_time_parse("2200-12-31T23:30:00-01:00", out, sizeof out), 0);
    ck_assert_int_ne(ds_time_parse("2201-01-01T00:00:00Z", out, sizeof out), 0);
    /* a zone without sign only after a space: glued to the seconds it is refused */
    ck_assert_int_eq(ds_time_parse("2021-06-23 10:32:42 0200", out, sizeof out), 0);
    ck_assert_int_ne(ds_time_parse("2021-06-23 10:32:420200", out, sizeof out), 0);
    ck_assert_int_ne(ds_time_parse("2021-06-23 10:32:42.50200", out, sizeof out), 0);
    ck_assert_int_eq(ds_time_parse("2021-06-23 10:32:42.5+0200", out, sizeof out), 0);
    /* at most DS_TIME_MAX bytes, fraction included */
    memset(longest, '0', sizeof longest);
    memcpy(longest, "2021-06-23T10:32:42.", 20);
    longest[DS_TIME_MAX - 1] = 'Z';
    longest[DS_TIME_MAX] = '\0';
    ck_assert_int_eq(ds_time_parse(longest, out, sizeof out), 0);
    longest[DS_TIME_MAX - 1] = '0';
    longest[DS_TIME_MAX] = 'Z';
    longest[DS_TIME_MAX + 1] = '\0';
    ck_assert_int_ne(ds_time_parse(longest, out, sizeof out), 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("submission_time");
    TCase *tc = tcase_create("ds_time_parse");

    tcase_add_test(tc, test_ds_time_forms);
    tcase_add_test(tc, test_ds_time_impossible_dates);
    tcase_add_test(tc, test_ds_time_as_the_spec_says);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
