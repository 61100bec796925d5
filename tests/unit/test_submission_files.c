/* test_submission_files: which DS file URLs may be downloaded (scheme, host list, tricks). */
#include <check.h>
#include <stdlib.h>

#include "submission/ds_files.h"

START_TEST(test_ds_file_url_allowed)
{
    static const char hosts[] =
        "api.demarches.example, static.demarches-simplifiees.fr,.s3.example";
    static const struct {
        const char *url;
        int allow_http;
        int ok;
    } cases[] = {
        {"https://static.demarches-simplifiees.fr/f/abc.pdf?sig=1", 0, 1},
        {"HTTPS://Static.Demarches-Simplifiees.FR/f", 0, 1},
        {"https://api.demarches.example:443/files/x", 0, 1},
        {"https://bucket.s3.example/x", 0, 1},
        {"https://s3.example/x", 0, 0}, /* ".s3.example" is its sub-domains only */
        {"https://evil.example/f.pdf", 0, 0},
        {"https://static.demarches-simplifiees.fr.evil.example/f", 0, 0},
        {"https://api.demarches.example@evil.example/f", 0, 0}, /* user info hides the host */
        {"http://static.demarches-simplifiees.fr/f", 0, 0},     /* plain http */
        {"http://static.demarches-simplifiees.fr/f", 1, 1},     /* …unless allowed */
        {"file:///etc/passwd", 1, 0},
        {"ftp://static.demarches-simplifiees.fr/f", 1, 0},
        {"https://", 0, 0},
        {"", 0, 0},
        {NULL, 0, 0},
        {"https://[::1]:8443/f", 0, 0},
    };
    char why[160];

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        ck_assert_msg(ds_file_url_allowed(cases[i].url, hosts, cases[i].allow_http, why,
                                          sizeof why) == cases[i].ok,
                      "case %zu (%s)", i, cases[i].url ? cases[i].url : "NULL");
    ck_assert_int_eq(ds_file_url_allowed("https://[::1]:8443/f", "[::1]", 0, why, sizeof why), 1);
}
END_TEST

START_TEST(test_ds_url_host)
{
    char host[64];

    ck_assert_int_eq(ds_url_host("https://API.Example:8443/x?y", host, sizeof host), 0);
    ck_assert_str_eq(host, "api.example");
    ck_assert_int_eq(ds_url_host("http://127.0.0.1:18080", host, sizeof host), 0);
    ck_assert_str_eq(host, "127.0.0.1");
    ck_assert_int_eq(ds_url_host("mailto:a@b", host, sizeof host), -1);
    ck_assert_int_eq(ds_url_host("https://u:p@h/x", host, sizeof host), -1);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("submission_files");
    TCase *tc = tcase_create("hosts");

    tcase_add_test(tc, test_ds_file_url_allowed);
    tcase_add_test(tc, test_ds_url_host);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
