/* test_page: `limit` parsing, and cursors that round-trip, hide their values and resist tampering.
 */
#include <check.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "page.h"

START_TEST(test_page_limit)
{
    long v = 7;
    char why[64] = "";

    ck_assert_int_eq(page_limit_parse(NULL, 50, 200, &v, why, sizeof why), STATUS_OK);
    ck_assert_int_eq(v, 50);
    ck_assert_int_eq(page_limit_parse("1", 50, 200, &v, why, sizeof why), STATUS_OK);
    ck_assert_int_eq(v, 1);
    ck_assert_int_eq(page_limit_parse("200", 50, 200, &v, why, sizeof why), STATUS_OK);
    ck_assert_int_eq(v, 200);
    ck_assert_int_eq(page_limit_parse("007", 50, 200, &v, why, sizeof why), STATUS_OK);
    ck_assert_int_eq(v, 7);
    /* A max near LONG_MAX: the bound is checked before the digits could overflow. */
    ck_assert_int_eq(page_limit_parse("9223372036854775807", 1, LONG_MAX, &v, why, sizeof why),
                     STATUS_OK);
    ck_assert_int_eq(v, LONG_MAX);
    ck_assert_int_eq(page_limit_parse("9223372036854775808", 1, LONG_MAX, &v, why, sizeof why),
                     STATUS_INVALID);
    ck_assert_int_eq(page_limit_parse("19223372036854775807", 1, LONG_MAX, &v, why, sizeof why),
                     STATUS_INVALID);

    static const char *const bad[] = {
        "", "0", "201", "-1", "+5", " 5", "5 ", "5x", "1e2", "2.0", "99999999999999999999999"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        v = 7;
        why[0] = '\0';
        ck_assert_msg(page_limit_parse(bad[i], 50, 200, &v, why, sizeof why) == STATUS_INVALID,
                      "'%s' accepted", bad[i]);
        ck_assert_int_eq(v, 7);
        ck_assert_str_eq(why, "must be an integer from 1 to 200");
    }
}
END_TEST

static void pos_sample(struct page_pos *pos)
{
    page_pos_init(pos);
    page_pos_add_int(pos, 123456789);
    page_pos_add_text(pos, "0b7e5c1e-5a9e-4c53-9d39-2f1a8c3b9e01");
    page_pos_add_int(pos, -1);
}

START_TEST(test_page_cursor_round_trip)
{
    struct page_pos pos, back;

    ck_assert_int_eq(page_cursor_key_set("unit-test-cursor-key-0123456789"), STATUS_OK);
    pos_sample(&pos);
    char *token = page_cursor_encode("dossiers", &pos);
    ck_assert_ptr_nonnull(token);
    ck_assert_uint_lt(strlen(token), PAGE_CURSOR_MAX);
    /* URL-safe, and the values are not readable in it. */
    ck_assert_uint_eq(strspn(token, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                    "0123456789-_"),
                      strlen(token));
    ck_assert_ptr_null(strstr(token, "123456789"));
    ck_assert_ptr_null(strstr(token, "0b7e5c1e"));
    ck_assert_int_eq(page_cursor_decode("dossiers", token, &back), STATUS_OK);
    ck_assert_int_eq(back.n, 3);
    ck_assert_int_eq(back.v[0].type, PAGE_INT);
    ck_assert_int_eq(back.v[0].i, 123456789);
    ck_assert_int_eq(back.v[1].type, PAGE_TEXT);
    ck_assert_str_eq(back.v[1].text, "0b7e5c1e-5a9e-4c53-9d39-2f1a8c3b9e01");
    ck_assert_int_eq(back.v[2].i, -1);
    /* Two cursors of the same position differ (fresh nonce), so equal positions do not show. */
    char *again = page_cursor_encode("dossiers", &pos);
    ck_assert_str_ne(token, again);
    free(again);
    free(token);

    /* Extremes: no value; the longest text; INT64_MIN. */
    page_pos_init(&pos);
    token = page_cursor_encode("k", &pos);
    ck_assert_int_eq(page_cursor_decode("k", token, &back), STATUS_OK);
    ck_assert_int_eq(back.n, 0);
    free(token);
    char longest[PAGE_TEXT_MAX + 1];
    memset(longest, 'z', PAGE_TEXT_MAX);
    longest[PAGE_TEXT_MAX] = '\0';
    page_pos_add_text(&pos, longest);
    page_pos_add_int(&pos, INT64_MIN);
    page_pos_add_text(&pos, "");
    page_pos_add_text(&pos, longest);
    token = page_cursor_encode("k", &pos);
    ck_assert_uint_lt(strlen(token), PAGE_CURSOR_MAX);
    ck_assert_int_eq(page_cursor_decode("k", token, &back), STATUS_OK);
    ck_assert_int_eq(back.n, 4);
    ck_assert_str_eq(back.v[0].text, longest);
    ck_assert_int_eq(back.v[1].i, INT64_MIN);
    ck_assert_str_eq(back.v[2].text, "");
    free(token);
}
END_TEST

START_TEST(test_page_cursor_tamper)
{
    struct page_pos pos, back;

    ck_assert_int_eq(page_cursor_key_set("unit-test-cursor-key-0123456789"), STATUS_OK);
    pos_sample(&pos);
    char *token = page_cursor_encode("dossiers", &pos);
    size_t len = strlen(token);
    back.n = 99;

    /* Every single-character change is refused. */
    for (size_t i = 0; i < len; i++) {
        char saved = token[i];
        token[i] = saved == 'A' ? 'B' : 'A';
        ck_assert_msg(page_cursor_decode("dossiers", token, &back) == STATUS_INVALID,
                      "changed at %zu", i);
        token[i] = saved;
    }
    /* Cut short, lengthened, another list, garbage. */
    char *cut = strndup(token, len - 1);
    ck_assert_int_eq(page_cursor_decode("dossiers", cut, &back), STATUS_INVALID);
    free(cut);
    char longer[PAGE_CURSOR_MAX + 8];
    snprintf(longer, sizeof longer, "%sAA", token);
    ck_assert_int_eq(page_cursor_decode("dossiers", longer, &back), STATUS_INVALID);
    ck_assert_int_eq(page_cursor_decode("waves", token, &back), STATUS_INVALID);
    ck_assert_int_eq(page_cursor_decode("dossiers", "", &back), STATUS_INVALID);
    ck_assert_int_eq(page_cursor_decode("dossiers", "12345", &back), STATUS_INVALID);
    ck_assert_int_eq(page_cursor_decode("dossiers", "a+b/c=", &back), STATUS_INVALID);
    ck_assert_int_eq(page_cursor_decode("dossiers", NULL, &back), STATUS_INVALID);
    char huge[PAGE_CURSOR_MAX + 1];
    memset(huge, 'A', PAGE_CURSOR_MAX);
    huge[PAGE_CURSOR_MAX] = '\0';
    ck_assert_int_eq(page_cursor_decode("dossiers", huge, &back), STATUS_INVALID);
    ck_assert_int_eq(back.n, 99); /* untouched by every refusal */

    /* Another key refuses it; the first key reads it again. */
    ck_assert_int_eq(page_cursor_key_set("another-cursor-key-abcdefghij"), STATUS_OK);
    ck_assert_int_eq(page_cursor_decode("dossiers", token, &back), STATUS_INVALID);
    ck_assert_int_eq(page_cursor_key_set("unit-test-cursor-key-0123456789"), STATUS_OK);
    ck_assert_int_eq(page_cursor_decode("dossiers", token, &back), STATUS_OK);
    free(token);
}
END_TEST

START_TEST(test_page_cursor_key_from_env)
{
    struct page_pos pos, back;

    /* The first use reads PTCE_CURSOR_KEY: a cursor sealed under it opens under the same
     * secret set explicitly, and not under the development default. */
    setenv("PTCE_CURSOR_KEY", "from-the-environment-1234", 1);
    pos_sample(&pos);
    char *token = page_cursor_encode("dossiers", &pos);
    ck_assert_int_eq(page_cursor_key_set(NULL), STATUS_OK);
    ck_assert_int_eq(page_cursor_decode("dossiers", token, &back), STATUS_INVALID);
    ck_assert_int_eq(page_cursor_key_set("from-the-environment-1234"), STATUS_OK);
    ck_assert_int_eq(page_cursor_decode("dossiers", token, &back), STATUS_OK);
    free(token);
    /* Too short a secret is refused and the key stays. */
    ck_assert_int_eq(page_cursor_key_set("short"), STATUS_INVALID);
    token = page_cursor_encode("dossiers", &pos);
    ck_assert_int_eq(page_cursor_key_set("from-the-environment-1234"), STATUS_OK);
    ck_assert_int_eq(page_cursor_decode("dossiers", token, &back), STATUS_OK);
    free(token);
}
END_TEST

START_TEST(test_page_next_cursor)
{
    struct page_pos pos, back;

    ck_assert_int_eq(page_cursor_key_set("unit-test-cursor-key-0123456789"), STATUS_OK);
    json_t *none = page_next_cursor("dossiers", NULL);
    ck_assert(json_is_null(none));
    json_decref(none);
    pos_sample(&pos);
    json_t *next = page_next_cursor("dossiers", &pos);
    ck_assert(json_is_string(next));
    ck_assert_int_eq(page_cursor_decode("dossiers", json_string_value(next), &back), STATUS_OK);
    ck_assert_int_eq(back.v[0].i, 123456789);
    json_decref(next);
}
END_TEST

static Suite *page_suite(void)
{
    Suite *s = suite_create("page");
    TCase *tc = tcase_create("page");

    tcase_add_test(tc, test_page_limit);
    tcase_add_test(tc, test_page_cursor_round_trip);
    tcase_add_test(tc, test_page_cursor_tamper);
    tcase_add_test(tc, test_page_cursor_key_from_env);
    tcase_add_test(tc, test_page_next_cursor);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(page_suite());

    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
