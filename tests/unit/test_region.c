/* test_region: the 18 INSEE region codes, and comma-separated lists of them. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "region.h"

static const char *const all_codes[] = {
    "01", "02", "03", "04", "06", "11", "24", "27", "28",
    "32", "44", "52", "53", "75", "76", "84", "93", "94",
};
#define NCODES (sizeof all_codes / sizeof all_codes[0])
_Static_assert(NCODES == 18, "France has 18 regions");

START_TEST(test_region_all_codes_valid)
{
    for (size_t i = 0; i < NCODES; i++) {
        ck_assert_msg(region_is_valid(all_codes[i]) == 1, "%s rejected", all_codes[i]);
        ck_assert_ptr_nonnull(region_name(all_codes[i]));
    }
    ck_assert_str_eq(region_name("11"), "Île-de-France");
    ck_assert_str_eq(region_name("84"), "Auvergne-Rhône-Alpes");
    ck_assert_str_eq(region_name("94"), "Corse");
    ck_assert_str_eq(region_name("06"), "Mayotte");
}
END_TEST

START_TEST(test_region_exactly_eighteen)
{
    /* No other two-digit code is a region. */
    char code[3];
    int valid = 0;

    for (int n = 0; n < 100; n++) {
        code[0] = (char)('0' + n / 10);
        code[1] = (char)('0' + n % 10);
        code[2] = '\0';
        valid += region_is_valid(code);
    }
    ck_assert_int_eq(valid, 18);
}
END_TEST

START_TEST(test_region_invalid_codes)
{
    static const char *const bad[] = {"05", "1", "011", "", "00", "99", "2A", "11 ", " 11", "1a"};

    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ck_assert_msg(region_is_valid(bad[i]) == 0, "\"%s\" accepted", bad[i]);
        ck_assert_ptr_null(region_name(bad[i]));
    }
    ck_assert_int_eq(region_is_valid(NULL), 0);
    ck_assert_ptr_null(region_name(NULL));
}
END_TEST

START_TEST(test_region_list_valid)
{
    ck_assert_int_eq(region_list_is_valid("84"), 1);
    ck_assert_int_eq(region_list_is_valid("84,11"), 1);
    ck_assert_int_eq(region_list_is_valid("01,02,03,04,06,11,24,27,28,32,44,52,53,75,76,84,93,94"),
                     1);
}
END_TEST

START_TEST(test_region_list_invalid)
{
    static const char *const bad[] = {
        "", ",", "84,", ",84", "84,,11", "84,05", "05", "84;11", "84, 11", "8411", "84,1", "84,011",
    };

    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        ck_assert_msg(region_list_is_valid(bad[i]) == 0, "\"%s\" accepted", bad[i]);
    ck_assert_int_eq(region_list_is_valid(NULL), 0);
}
END_TEST

static Suite *region_suite(void)
{
    Suite *s = suite_create("region");
    TCase *tc = tcase_create("core");

    tcase_set_timeout(tc, 10);
    tcase_add_test(tc, test_region_all_codes_valid);
    tcase_add_test(tc, test_region_exactly_eighteen);
    tcase_add_test(tc, test_region_invalid_codes);
    tcase_add_test(tc, test_region_list_valid);
    tcase_add_test(tc, test_region_list_invalid);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(region_suite());

    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
