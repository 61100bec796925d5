/* test_siret: Luhn check digits, La Poste's exception, and malformed input. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "siret.h"

/*
 * Each vector was checked by hand. Luhn: from the right, every second digit is doubled (minus 9
 * when over 9) and the total must be a multiple of 10. La Poste (SIREN 356000000): the digits
 * must add up to a multiple of 5, except its head office, which follows Luhn.
 */
START_TEST(test_siret_valid_luhn)
{
    static const char *const ok[] = {
        "73282932000074", /* Luhn total 50 */
        "12345678200010", /* 123 456 782, a Luhn-valid SIREN, and NIC 00010: total 40 */
        "00000000000000", /* total 0: well-formed and Luhn-valid, whatever INSEE thinks */
    };

    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        ck_assert_msg(siret_check(ok[i]) == SIRET_OK, "%s rejected", ok[i]);
}
END_TEST

START_TEST(test_siret_la_poste)
{
    /* An establishment: digit sum 15, Luhn total 15 — valid only by La Poste's rule. */
    ck_assert_int_eq(siret_check("35600000000001"), SIRET_OK);
    /* Digit sum 19, although its Luhn total is 20: La Poste's rule replaces Luhn. */
    ck_assert_int_eq(siret_check("35600000000014"), SIRET_BAD_CHECKSUM);
    /* The head office keeps Luhn (total 30); its digit sum is 26. */
    ck_assert_int_eq(siret_check("35600000000048"), SIRET_OK);
    /* Digit sum 20, Luhn total 17: valid for La Poste only. */
    ck_assert_int_eq(siret_check("35600000000060"), SIRET_OK);
}
END_TEST

START_TEST(test_siret_bad_check_digit)
{
    static const char *const bad[] = {
        "73282932000075", "73282932000070", "12345678200011", "37282932000074", /* swap */
    };

    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        ck_assert_msg(siret_check(bad[i]) == SIRET_BAD_CHECKSUM, "%s accepted", bad[i]);
}
END_TEST

START_TEST(test_siret_bad_format)
{
    static const char *const bad[] = {
        "",
        "7328293200007",   /* 13 digits */
        "732829320000740", /* 15 digits */
        "732829320000 4",
        "7328293200007A",
        "73282932-00074",
        "+3282932000074",
        "732 829 320 00074",
    };

    ck_assert_int_eq(siret_check(NULL), SIRET_BAD_FORMAT);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        ck_assert_msg(siret_check(bad[i]) == SIRET_BAD_FORMAT, "\"%s\" not a format error", bad[i]);
}
END_TEST

START_TEST(test_siret_strerror)
{
    ck_assert_str_eq(siret_check_strerror(SIRET_OK), "valid");
    ck_assert_ptr_nonnull(strstr(siret_check_strerror(SIRET_BAD_FORMAT), "14 digits"));
    ck_assert_ptr_nonnull(strstr(siret_check_strerror(SIRET_BAD_CHECKSUM), "check digit"));
    ck_assert_str_eq(siret_check_strerror((enum siret_check)42), "unknown");
}
END_TEST

static Suite *siret_suite(void)
{
    Suite *s = suite_create("siret");
    TCase *tc = tcase_create("core");

    tcase_set_timeout(tc, 10);
    tcase_add_test(tc, test_siret_valid_luhn);
    tcase_add_test(tc, test_siret_la_poste);
    tcase_add_test(tc, test_siret_bad_check_digit);
    tcase_add_test(tc, test_siret_bad_format);
    tcase_add_test(tc, test_siret_strerror);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(siret_suite());

    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
