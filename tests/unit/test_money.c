/* test_money: checked cent arithmetic, rounding, allocation that adds up, strict text and JSON. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "money.h"

START_TEST(test_money_add_sub_overflow)
{
    int64_t v = 7;

    ck_assert_int_eq(money_add(150, -200, &v), STATUS_OK);
    ck_assert_int_eq(v, -50);
    ck_assert_int_eq(money_sub(INT64_MIN + 1, 1, &v), STATUS_OK);
    ck_assert_int_eq(v, INT64_MIN);
    v = 7;
    ck_assert_int_eq(money_add(INT64_MAX, 1, &v), STATUS_INVALID);
    ck_assert_int_eq(money_sub(INT64_MIN, 1, &v), STATUS_INVALID);
    ck_assert_int_eq(money_sub(0, INT64_MIN, &v), STATUS_INVALID);
    ck_assert_int_eq(v, 7); /* untouched on failure */
}
END_TEST

START_TEST(test_money_mul_ratio_rounding)
{
    int64_t v = 0;

    /* 30 % of 100 000,00 € */
    ck_assert_int_eq(money_mul_ratio(10000000, 30, 100, MONEY_ROUND_HALF_AWAY, &v), STATUS_OK);
    ck_assert_int_eq(v, 3000000);
    /* 0.05 × 1/2 = 2.5 cents: half away from zero gives 3, floor 2; negated: -3 and -3. */
    ck_assert_int_eq(money_mul_ratio(5, 1, 2, MONEY_ROUND_HALF_AWAY, &v), STATUS_OK);
    ck_assert_int_eq(v, 3);
    ck_assert_int_eq(money_mul_ratio(5, 1, 2, MONEY_ROUND_FLOOR, &v), STATUS_OK);
    ck_assert_int_eq(v, 2);
    ck_assert_int_eq(money_mul_ratio(-5, 1, 2, MONEY_ROUND_HALF_AWAY, &v), STATUS_OK);
    ck_assert_int_eq(v, -3);
    ck_assert_int_eq(money_mul_ratio(-5, 1, 2, MONEY_ROUND_FLOOR, &v), STATUS_OK);
    ck_assert_int_eq(v, -3);
    /* Just under and over a half: 1/3 → 0, 2/3 → 1 (and -2/3 → -1, floor -1). */
    ck_assert_int_eq(money_mul_ratio(1, 1, 3, MONEY_ROUND_HALF_AWAY, &v), STATUS_OK);
    ck_assert_int_eq(v, 0);
    ck_assert_int_eq(money_mul_ratio(2, 1, 3, MONEY_ROUND_HALF_AWAY, &v), STATUS_OK);
    ck_assert_int_eq(v, 1);
    ck_assert_int_eq(money_mul_ratio(-1, 1, 3, MONEY_ROUND_FLOOR, &v), STATUS_OK);
    ck_assert_int_eq(v, -1);
    ck_assert_int_eq(money_mul_ratio(-1, 1, 3, MONEY_ROUND_HALF_AWAY, &v), STATUS_OK);
    ck_assert_int_eq(v, 0);
    /* The intermediate product exceeds 64 bits but the result does not. */
    ck_assert_int_eq(money_mul_ratio(INT64_MAX, 3, 3, MONEY_ROUND_FLOOR, &v), STATUS_OK);
    ck_assert_int_eq(v, INT64_MAX);
}
END_TEST

START_TEST(test_money_mul_ratio_invalid)
{
    int64_t v = 9;

    ck_assert_int_eq(money_mul_ratio(100, 1, 0, MONEY_ROUND_FLOOR, &v), STATUS_INVALID);
    ck_assert_int_eq(money_mul_ratio(100, 1, -2, MONEY_ROUND_FLOOR, &v), STATUS_INVALID);
    ck_assert_int_eq(money_mul_ratio(INT64_MAX, 2, 1, MONEY_ROUND_FLOOR, &v), STATUS_INVALID);
    ck_assert_int_eq(money_mul_ratio(INT64_MIN, -1, 1, MONEY_ROUND_FLOOR, &v), STATUS_INVALID);
    ck_assert_int_eq(v, 9);
}
END_TEST

START_TEST(test_money_allocate_examples)
{
    int64_t parts[5];
    static const int64_t halves[] = {50, 50}, thirds[] = {1, 1, 1};

    ck_assert_int_eq(money_allocate(10000000, halves, 2, parts), STATUS_OK);
    ck_assert_int_eq(parts[0], 5000000);
    ck_assert_int_eq(parts[1], 5000000);
    ck_assert_int_eq(money_allocate(10000, thirds, 3, parts), STATUS_OK);
    ck_assert_int_eq(parts[0], 3334);
    ck_assert_int_eq(parts[1], 3333);
    ck_assert_int_eq(parts[2], 3333);
    /* 0.02 € in thirds: the two leftover cents go to the two lowest indexes. */
    ck_assert_int_eq(money_allocate(2, thirds, 3, parts), STATUS_OK);
    ck_assert_int_eq(parts[0], 1);
    ck_assert_int_eq(parts[1], 1);
    ck_assert_int_eq(parts[2], 0);
    /* Negative totals mirror positive ones. */
    ck_assert_int_eq(money_allocate(-10000, thirds, 3, parts), STATUS_OK);
    ck_assert_int_eq(parts[0], -3334);
    ck_assert_int_eq(parts[2], -3333);
}
END_TEST

START_TEST(test_money_allocate_largest_remainder)
{
    int64_t parts[3];
    /* 1.00 € by 1:2:7 → exact 10, 20, 70. By 1:1:5 (7ths) → 14.28…, 14.28…, 71.42… : floors
     * 14, 14, 71 leave one cent, which goes to the largest remainder (5/7·100 = 71 r 3, the
     * others r 2): the third part. */
    static const int64_t w1[] = {1, 2, 7}, w2[] = {1, 1, 5}, w3[] = {0, 3, 0};

    ck_assert_int_eq(money_allocate(100, w1, 3, parts), STATUS_OK);
    ck_assert_int_eq(parts[0], 10);
    ck_assert_int_eq(parts[1], 20);
    ck_assert_int_eq(parts[2], 70);
    ck_assert_int_eq(money_allocate(100, w2, 3, parts), STATUS_OK);
    ck_assert_int_eq(parts[0], 14);
    ck_assert_int_eq(parts[1], 14);
    ck_assert_int_eq(parts[2], 72);
    ck_assert_int_eq(money_allocate(101, w3, 3, parts), STATUS_OK);
    ck_assert_int_eq(parts[0], 0);
    ck_assert_int_eq(parts[1], 101);
    ck_assert_int_eq(parts[2], 0);
}
END_TEST

START_TEST(test_money_allocate_always_adds_up)
{
    int64_t weights[7], parts[7];
    static const int64_t totals[] = {0, 1, 99, 10000, 10000001, -7, INT64_MAX, INT64_MIN};
    unsigned seed = 12345;

    for (size_t t = 0; t < sizeof totals / sizeof totals[0]; t++) {
        for (int round = 0; round < 200; round++) {
            size_t n = 1 + round % 7;
            for (size_t i = 0; i < n; i++) {
                seed = seed * 1103515245u + 12345u;
                weights[i] = (int64_t)(seed >> 8) % 1000 + (i == 0); /* one weight is positive */
            }
            ck_assert_int_eq(money_allocate(totals[t], weights, n, parts), STATUS_OK);
            /* Summed in 128 bits, so that INT64_MIN's parts cannot wrap the check itself. */
            __int128 s = 0;
            for (size_t i = 0; i < n; i++)
                s += parts[i];
            ck_assert_msg(s == totals[t], "total %lld, n %zu", (long long)totals[t], n);
        }
    }
}
END_TEST

START_TEST(test_money_allocate_invalid)
{
    int64_t parts[2] = {5, 5};
    static const int64_t zero[] = {0, 0}, neg[] = {3, -1}, big[] = {INT64_MAX, 1};

    ck_assert_int_eq(money_allocate(100, zero, 0, parts), STATUS_INVALID);
    ck_assert_int_eq(money_allocate(100, zero, 2, parts), STATUS_INVALID);
    ck_assert_int_eq(money_allocate(100, neg, 2, parts), STATUS_INVALID);
    ck_assert_int_eq(money_allocate(100, big, 2, parts), STATUS_INVALID);
    ck_assert_int_eq(parts[0], 5);
}
END_TEST

START_TEST(test_money_parse_accepts)
{
    static const struct {
        const char *text;
        int64_t cents;
    } ok[] = {
        {"100000.00", 10000000},
        {"-0.50", -50},
        {"12", 1200},
        {"0", 0},
        {"-0", 0},
        {"0.5", 50},
        {"0.05", 5},
        {"92233720368547758.07", INT64_MAX},
        {"-92233720368547758.08", INT64_MIN},
    };

    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        int64_t v = 1;
        ck_assert_msg(money_parse(ok[i].text, &v) == STATUS_OK, "%s refused", ok[i].text);
        ck_assert_msg(v == ok[i].cents, "%s read as %lld", ok[i].text, (long long)v);
    }
}
END_TEST

START_TEST(test_money_parse_refuses)
{
    static const char *const bad[] = {
        "",
        "1.234",
        "1e5",
        "  1",
        "1 ",
        "+-1",
        "+1",
        "--1",
        "-",
        ".5",
        "1.",
        "1.2.3",
        "007",
        "0x10",
        "1,50",
        "abc",
        "1a",
        "-.5",
        "1.-5",
        "92233720368547758.08",
        "-92233720368547758.09",
        "99999999999999999999999999999999",
    };

    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int64_t v = 42;
        ck_assert_msg(money_parse(bad[i], &v) == STATUS_INVALID, "'%s' accepted", bad[i]);
        ck_assert_int_eq(v, 42);
    }
    ck_assert_int_eq(money_parse(NULL, NULL), STATUS_INVALID);
}
END_TEST

START_TEST(test_money_format)
{
    char s[MONEY_STR_LEN];

    money_format(10000000, s);
    ck_assert_str_eq(s, "100000.00");
    money_format(-50, s);
    ck_assert_str_eq(s, "-0.50");
    money_format(5, s);
    ck_assert_str_eq(s, "0.05");
    money_format(0, s);
    ck_assert_str_eq(s, "0.00");
    money_format(INT64_MIN, s);
    ck_assert_str_eq(s, "-92233720368547758.08");
    money_format(INT64_MAX, s);
    ck_assert_str_eq(s, "92233720368547758.07");
    /* Every formatted amount parses back to itself. */
    static const int64_t some[] = {1, -1, 99, -101, 123456789, INT64_MIN, INT64_MAX};
    for (size_t i = 0; i < sizeof some / sizeof some[0]; i++) {
        int64_t back = 0;
        money_format(some[i], s);
        ck_assert_int_eq(money_parse(s, &back), STATUS_OK);
        ck_assert_int_eq(back, some[i]);
    }
}
END_TEST

START_TEST(test_money_json)
{
    json_error_t err;
    int64_t v = 3;
    json_t *doc = json_loads("[1234, \"12.34\", 12.5, 1e5, true, null, \"1.234\", {}, -7,"
                             " \"1\\u00002\"]",
                             JSON_ALLOW_NUL, &err);

    ck_assert_ptr_nonnull(doc);
    ck_assert_int_eq(money_from_json(json_array_get(doc, 0), &v), STATUS_OK);
    ck_assert_int_eq(v, 1234); /* an integer is cents */
    ck_assert_int_eq(money_from_json(json_array_get(doc, 1), &v), STATUS_OK);
    ck_assert_int_eq(v, 1234); /* a string is euros */
    for (size_t i = 2; i <= 7; i++) {
        v = 3;
        ck_assert_msg(money_from_json(json_array_get(doc, i), &v) == STATUS_INVALID, "item %zu", i);
        ck_assert_int_eq(v, 3);
    }
    ck_assert_int_eq(money_from_json(json_array_get(doc, 8), &v), STATUS_OK);
    ck_assert_int_eq(v, -7);
    ck_assert_int_eq(money_from_json(json_array_get(doc, 9), &v), STATUS_INVALID);
    ck_assert_int_eq(money_from_json(NULL, &v), STATUS_INVALID);
    json_decref(doc);

    json_t *j = money_to_json(-50);
    ck_assert(json_is_integer(j));
    ck_assert_int_eq(json_integer_value(j), -50);
    json_decref(j);
}
END_TEST

static Suite *money_suite(void)
{
    Suite *s = suite_create("money");
    TCase *tc = tcase_create("money");

    tcase_add_test(tc, test_money_add_sub_overflow);
    tcase_add_test(tc, test_money_mul_ratio_rounding);
    tcase_add_test(tc, test_money_mul_ratio_invalid);
    tcase_add_test(tc, test_money_allocate_examples);
    tcase_add_test(tc, test_money_allocate_largest_remainder);
    tcase_add_test(tc, test_money_allocate_always_adds_up);
    tcase_add_test(tc, test_money_allocate_invalid);
    tcase_add_test(tc, test_money_parse_accepts);
    tcase_add_test(tc, test_money_parse_refuses);
    tcase_add_test(tc, test_money_format);
    tcase_add_test(tc, test_money_json);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(money_suite());

    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
