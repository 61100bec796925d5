/* test_config: table-driven environment loading, with every problem reported at once. */
#include <check.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

struct settings {
    const char *name;
    long port;
    long workers;
    int verbose;
    int cache;
    const char *url;
};

static const struct config_var vars[] = {
    {"UT_NAME", CONFIG_STRING, "anon", 0, 0, offsetof(struct settings, name), "a name"},
    {"UT_PORT", CONFIG_INT, "8080", 1, 65535, offsetof(struct settings, port), "TCP port"},
    {"UT_WORKERS", CONFIG_INT, "4", -2, 64, offsetof(struct settings, workers), "workers"},
    {"UT_VERBOSE", CONFIG_BOOL, "false", 0, 0, offsetof(struct settings, verbose), "chatty"},
    {"UT_CACHE", CONFIG_BOOL, "true", 0, 0, offsetof(struct settings, cache), "cache"},
    {"UT_URL", CONFIG_STRING, NULL, 0, 0, offsetof(struct settings, url), "database URL"},
};
#define NVARS (sizeof vars / sizeof vars[0])

/* Each test runs in its own process, so the environment it sets dies with it. */
static void env(const char *name, const char *value)
{
    ck_assert_int_eq(setenv(name, value, 1), 0);
}

static size_t count_lines(const char *s)
{
    size_t n = 0;

    for (; *s; s++)
        n += *s == '\n';
    return n;
}

START_TEST(test_config_defaults)
{
    struct settings s;
    char err[512];

    memset(&s, 0xAB, sizeof s);
    env("UT_URL", "postgres://x");
    ck_assert_int_eq(config_load(vars, NVARS, &s, err, sizeof err), 0);
    ck_assert_str_eq(err, "");
    ck_assert_str_eq(s.name, "anon");
    ck_assert_int_eq(s.port, 8080);
    ck_assert_int_eq(s.workers, 4);
    ck_assert_int_eq(s.verbose, 0);
    ck_assert_int_eq(s.cache, 1);
    ck_assert_str_eq(s.url, "postgres://x");
}
END_TEST

START_TEST(test_config_values_from_environment)
{
    struct settings s = {0};
    char err[512];

    env("UT_NAME", "svc");
    env("UT_PORT", "65535");
    env("UT_WORKERS", "-2");
    env("UT_VERBOSE", "TRUE");
    env("UT_CACHE", "0");
    env("UT_URL", "u");
    ck_assert_int_eq(config_load(vars, NVARS, &s, err, sizeof err), 0);
    ck_assert_str_eq(s.name, "svc");
    ck_assert_int_eq(s.port, 65535);
    ck_assert_int_eq(s.workers, -2);
    ck_assert_int_eq(s.verbose, 1);
    ck_assert_int_eq(s.cache, 0);
    ck_assert_str_eq(s.url, "u");
}
END_TEST

START_TEST(test_config_bools)
{
    static const struct {
        const char *text;
        int value;
    } cases[] = {{"true", 1},  {"True", 1},  {"1", 1}, {"yes", 1},
                 {"false", 0}, {"FALSE", 0}, {"0", 0}, {"no", 0}};
    char err[512];

    env("UT_URL", "u");
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct settings s = {0};
        s.verbose = 7;
        env("UT_VERBOSE", cases[i].text);
        ck_assert_int_eq(config_load(vars, NVARS, &s, err, sizeof err), 0);
        ck_assert_msg(s.verbose == cases[i].value, "%s gave %d", cases[i].text, s.verbose);
    }
    env("UT_VERBOSE", "maybe");
    struct settings s = {0};
    ck_assert_int_eq(config_load(vars, NVARS, &s, err, sizeof err), 1);
    ck_assert_ptr_nonnull(strstr(err, "UT_VERBOSE=maybe is not a boolean"));
}
END_TEST

START_TEST(test_config_int_out_of_range_and_garbage)
{
    static const char *const bad[] = {
        "0", "65536", "-1", "80x", "x80", "12 ", "99999999999999999999"};
    char err[512];

    env("UT_URL", "u");
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct settings s = {0};
        env("UT_PORT", bad[i]);
        ck_assert_msg(config_load(vars, NVARS, &s, err, sizeof err) == 1, "accepted %s", bad[i]);
        ck_assert_ptr_nonnull(strstr(err, "UT_PORT="));
        ck_assert_ptr_nonnull(strstr(err, "is not an integer between 1 and 65535 (TCP port)"));
        ck_assert_uint_eq(count_lines(err), 1);
    }
    struct settings s = {0};
    env("UT_PORT", "1");
    ck_assert_int_eq(config_load(vars, NVARS, &s, err, sizeof err), 0);
    ck_assert_int_eq(s.port, 1);
}
END_TEST

START_TEST(test_config_required_missing)
{
    struct settings s = {0};
    char err[512];

    unsetenv("UT_URL");
    ck_assert_int_eq(config_load(vars, NVARS, &s, err, sizeof err), 1);
    ck_assert_str_eq(err, "UT_URL is required (database URL)\n");
    /* An empty value counts as unset. */
    env("UT_URL", "");
    ck_assert_int_eq(config_load(vars, NVARS, &s, err, sizeof err), 1);
    ck_assert_str_eq(err, "UT_URL is required (database URL)\n");
}
END_TEST

START_TEST(test_config_every_problem_at_once)
{
    struct settings s = {0};
    char err[1024];

    unsetenv("UT_URL");
    env("UT_PORT", "70000");
    env("UT_WORKERS", "many");
    env("UT_CACHE", "perhaps");
    ck_assert_int_eq(config_load(vars, NVARS, &s, err, sizeof err), 4);
    ck_assert_uint_eq(count_lines(err), 4);
    ck_assert_ptr_nonnull(strstr(err, "UT_PORT=70000 is not an integer between 1 and 65535"));
    ck_assert_ptr_nonnull(strstr(err, "UT_WORKERS=many is not an integer between -2 and 64"));
    ck_assert_ptr_nonnull(strstr(err, "UT_CACHE=perhaps is not a boolean"));
    ck_assert_ptr_nonnull(strstr(err, "UT_URL is required (database URL)"));
    /* Valid variables are still read. */
    ck_assert_str_eq(s.name, "anon");
}
END_TEST

START_TEST(test_config_small_errbuf_truncates_safely)
{
    struct settings s = {0};
    char err[16];

    unsetenv("UT_URL");
    env("UT_PORT", "70000");
    env("UT_WORKERS", "many");
    ck_assert_int_eq(config_load(vars, NVARS, &s, err, sizeof err), 3);
    ck_assert_uint_eq(strlen(err), sizeof err - 1);
    ck_assert(strncmp(err, "UT_PORT=70000 i", sizeof err - 1) == 0);
}
END_TEST

static Suite *config_suite(void)
{
    Suite *s = suite_create("config");
    TCase *tc = tcase_create("core");

    tcase_set_timeout(tc, 10);
    tcase_add_test(tc, test_config_defaults);
    tcase_add_test(tc, test_config_values_from_environment);
    tcase_add_test(tc, test_config_bools);
    tcase_add_test(tc, test_config_int_out_of_range_and_garbage);
    tcase_add_test(tc, test_config_required_missing);
    tcase_add_test(tc, test_config_every_problem_at_once);
    tcase_add_test(tc, test_config_small_errbuf_truncates_safely);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(config_suite());

    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
