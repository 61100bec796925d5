/* test_status: every status has a slug, a title and the HTTP code the API promises. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "status.h"

static const struct {
    enum status st;
    const char *slug;
    int http;
} expected[] = {
    {STATUS_OK, "ok", 200},
    {STATUS_INVALID, "invalid", 400},
    {STATUS_UNAUTHORIZED, "unauthorized", 401},
    {STATUS_FORBIDDEN, "forbidden", 403},
    {STATUS_NOT_FOUND, "not_found", 404},
    {STATUS_METHOD_NOT_ALLOWED, "method_not_allowed", 405},
    {STATUS_CONFLICT, "conflict", 409},
    {STATUS_PRECONDITION_FAILED, "precondition_failed", 412},
    {STATUS_TOO_LARGE, "too_large", 413},
    {STATUS_UNSUPPORTED_MEDIA, "unsupported_media_type", 415},
    {STATUS_UNPROCESSABLE, "unprocessable", 422},
    {STATUS_PRECONDITION_REQUIRED, "precondition_required", 428},
    {STATUS_RATE_LIMITED, "rate_limited", 429},
    {STATUS_INTERNAL, "internal", 500},
    {STATUS_UNAVAILABLE, "unavailable", 503},
    {STATUS_RETRY, "retry", 503},
};
#define NEXPECTED (sizeof expected / sizeof expected[0])

/* Adding a status without adding it here must break the build, not silently pass. */
_Static_assert(NEXPECTED == STATUS__COUNT, "every status needs a row in this table");

/* Loop test: _i is the row of `expected`. */
START_TEST(test_status_row)
{
    enum status st = expected[_i].st;
    const char *title = status_title(st);

    ck_assert_int_eq((int)st, _i); /* the table follows the enum order */
    ck_assert_str_eq(status_strerror(st), expected[_i].slug);
    ck_assert_int_eq(status_http_code(st), expected[_i].http);
    ck_assert_ptr_nonnull(title);
    ck_assert_uint_gt(strlen(title), 1);
    ck_assert_str_ne(title, "Unknown error");
}
END_TEST

START_TEST(test_status_slugs_and_titles_unique)
{
    for (size_t i = 0; i < NEXPECTED; i++) {
        for (size_t j = i + 1; j < NEXPECTED; j++) {
            ck_assert_str_ne(status_strerror(expected[i].st), status_strerror(expected[j].st));
            ck_assert_str_ne(status_title(expected[i].st), status_title(expected[j].st));
        }
    }
}
END_TEST

START_TEST(test_status_out_of_range)
{
    const int bad[] = {STATUS__COUNT, STATUS__COUNT + 1, 1000, -1};

    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        enum status st = (enum status)bad[i];
        ck_assert_int_eq(status_http_code(st), 500);
        ck_assert_str_eq(status_strerror(st), "unknown");
        ck_assert_str_eq(status_title(st), "Unknown error");
    }
}
END_TEST

static Suite *status_suite(void)
{
    Suite *s = suite_create("status");
    TCase *tc = tcase_create("core");

    tcase_set_timeout(tc, 10);
    tcase_add_loop_test(tc, test_status_row, 0, (int)NEXPECTED);
    tcase_add_test(tc, test_status_slugs_and_titles_unique);
    tcase_add_test(tc, test_status_out_of_range);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(status_suite());

    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
