/* test_clock: strict RFC 3339 and full-date parsing, and the wire format of instants. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"

/* Epoch values computed independently (Python's datetime, proleptic Gregorian, UTC). */
START_TEST(test_clock_rfc3339_parse_accepts)
{
    static const struct {
        const char *text;
        int64_t us;
    } ok[] = {
        {"1970-01-01T00:00:00Z", 0},
        {"2026-02-28T14:00:00Z", 1772287200LL * 1000000},
        {"2026-02-28t14:00:00z", 1772287200LL * 1000000},
        {"2026-02-28T15:00:00+01:00", 1772287200LL * 1000000},
        {"2026-02-28T09:30:00-04:30", 1772287200LL * 1000000},
        {"2026-02-28T14:00:00-00:00", 1772287200LL * 1000000},
        {"2024-02-29T23:59:59.999999Z", 1709251199999999LL},
        {"2024-02-29T23:59:59.9999999Z", 1709251199999999LL}, /* past µs: dropped */
        {"2024-02-29T23:59:59.5Z", 1709251199500000LL},
        {"1969-12-31T23:59:59Z", -1000000},
        {"1969-12-31T23:59:59.5Z", -500000},
        {"1900-03-01T00:00:00Z", -2203891200LL * 1000000},
        {"0001-01-01T00:00:00Z", -62135596800LL * 1000000},
        {"2000-02-29T00:00:00Z", 951782400LL * 1000000},
    };

    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        int64_t us = 42;
        ck_assert_msg(clock_rfc3339_parse(ok[i].text, &us) == STATUS_OK, "%s refused", ok[i].text);
        ck_assert_msg(us == ok[i].us, "%s read as %lld", ok[i].text, (long long)us);
    }
}
END_TEST

START_TEST(test_clock_rfc3339_parse_refuses)
{
    static const char *const bad[] = {
        "",
        "2026-02-31T00:00:00Z",            /* no 31 February */
        "2025-02-29T00:00:00Z",            /* not a leap year */
        "1900-02-29T00:00:00Z",            /* a century, not a leap year */
        "2026-04-31T00:00:00Z",            /* April has 30 days */
        "2026-13-01T00:00:00Z",            /* month 13 */
        "2026-00-10T00:00:00Z",            /* month 0 */
        "2026-01-00T00:00:00Z",            /* day 0 */
        "2026-01-01T24:00:00Z",            /* hour 24 */
        "2026-01-01T23:60:00Z",            /* minute 60 */
        "2026-12-31T23:59:60Z",            /* leap second */
        "2026-01-01 00:00:00Z",            /* a space for T */
        "2026-01-01T00:00:00",             /* no offset */
        "2026-01-01T00:00Z",               /* no seconds */
        "2026-01-01T00:00:00.Z",           /* empty fraction */
        "2026-01-01T00:00:00.1234567890Z", /* ten fraction digits */
        "2026-01-01T00:00:00+0100",        /* offset without colon */
        "2026-01-01T00:00:00+24:00",       /* offset hour 24 */
        "2026-01-01T00:00:00+01:60",       /* offset minute 60 */
        "2026-01-01T00:00:00Z ",           /* trailing space */
        " 2026-01-01T00:00:00Z",           /* leading space */
        "2026-1-01T00:00:00Z",             /* one-digit month */
        "+2026-01-01T00:00:00Z",           /* signed year */
        "2026-01-01T00:00:00ZZ",
        "2026-01-01T00:00:00+01:00x",
        "2026-01-01",
    };

    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int64_t us = 42;
        ck_assert_msg(clock_rfc3339_parse(bad[i], &us) == STATUS_INVALID, "'%s' accepted", bad[i]);
        ck_assert_int_eq(us, 42);
    }
    ck_assert_int_eq(clock_rfc3339_parse(NULL, NULL), STATUS_INVALID);
}
END_TEST

START_TEST(test_clock_rfc3339_format)
{
    char s[CLOCK_RFC3339_LEN];

    ck_assert_int_eq(clock_rfc3339_format(0, s), STATUS_OK);
    ck_assert_str_eq(s, "1970-01-01T00:00:00.000Z");
    ck_assert_int_eq(clock_rfc3339_format(1709251199999999LL, s), STATUS_OK);
    ck_assert_str_eq(s, "2024-02-29T23:59:59.999Z"); /* truncated, not rounded to March */
    ck_assert_int_eq(clock_rfc3339_format(-1, s), STATUS_OK);
    ck_assert_str_eq(s, "1969-12-31T23:59:59.999Z");
    ck_assert_int_eq(clock_rfc3339_format(-500000, s), STATUS_OK);
    ck_assert_str_eq(s, "1969-12-31T23:59:59.500Z");
    ck_assert_int_eq(clock_rfc3339_format(-62135596800LL * 1000000, s), STATUS_OK);
    ck_assert_str_eq(s, "0001-01-01T00:00:00.000Z");
    ck_assert_int_eq(clock_rfc3339_format(253402300799999999LL, s), STATUS_OK);
    ck_assert_str_eq(s, "9999-12-31T23:59:59.999Z");
    ck_assert_int_eq(clock_rfc3339_format(253402300800000000LL, s), STATUS_INVALID);
    ck_assert_str_eq(s, "");
    ck_assert_int_eq(clock_rfc3339_format(INT64_MIN, s), STATUS_INVALID);
    /* What the format writes, the parser reads back to the millisecond; for a span of instants
     * that crosses leap days, month ends and the epoch. */
    for (int64_t us = -40000000000000000LL; us < 40000000000000000LL; us += 987654321987LL) {
        int64_t back;
        ck_assert_int_eq(clock_rfc3339_format(us, s), STATUS_OK);
        ck_assert_int_eq(clock_rfc3339_parse(s, &back), STATUS_OK);
        int64_t ms_floor = us / 1000 - (us % 1000 < 0);
        ck_assert_msg(back == ms_floor * 1000, "%lld → %s → %lld", (long long)us, s,
                      (long long)back);
    }
}
END_TEST

START_TEST(test_clock_date_parse)
{
    struct clock_date d = {1, 1, 1};

    ck_assert_int_eq(clock_date_parse("2026-02-28", &d), STATUS_OK);
    ck_assert_int_eq(d.year, 2026);
    ck_assert_int_eq(d.month, 2);
    ck_assert_int_eq(d.day, 28);
    ck_assert_int_eq(clock_date_days(&d), 20512);
    ck_assert_int_eq(clock_date_parse("2024-02-29", &d), STATUS_OK);
    ck_assert_int_eq(clock_date_parse("2000-02-29", &d), STATUS_OK);
    ck_assert_int_eq(clock_date_parse("1970-01-01", &d), STATUS_OK);
    ck_assert_int_eq(clock_date_days(&d), 0);

    static const char *const bad[] = {
        "2026-02-31",  "2025-02-29", "1900-02-29", "2026-06-31",           "2026-13-01",
        "2026-00-01",  "2026-01-00", "2026-1-1",   "2026-01-01T00:00:00Z", "20260101",
        "2026-01-01 ", "",           "2026/01/01", "2026-01-0a",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        d.year = 7;
        ck_assert_msg(clock_date_parse(bad[i], &d) == STATUS_INVALID, "'%s' accepted", bad[i]);
        ck_assert_int_eq(d.year, 7);
    }
    ck_assert_int_eq(clock_date_parse(NULL, &d), STATUS_INVALID);
}
END_TEST

START_TEST(test_clock_now_is_parsable)
{
    char now[64];
    int64_t us;

    time_now_rfc3339(now, sizeof now);
    ck_assert_int_eq(clock_rfc3339_parse(now, &us), STATUS_OK);
    ck_assert(us > 1700000000LL * 1000000);
}
END_TEST

static Suite *clock_suite(void)
{
    Suite *s = suite_create("clock");
    TCase *tc = tcase_create("rfc3339");

    tcase_add_test(tc, test_clock_rfc3339_parse_accepts);
    tcase_add_test(tc, test_clock_rfc3339_parse_refuses);
    tcase_add_test(tc, test_clock_rfc3339_format);
    tcase_add_test(tc, test_clock_date_parse);
    tcase_add_test(tc, test_clock_now_is_parsable);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(clock_suite());

    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
