/* test_xalloc: the growable buffer grows, stays terminated, and never passes its limit. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "xalloc.h"

START_TEST(test_xalloc_strdup)
{
    char *a = xstrdup("hello");
    char *b = xstrndup("hello world", 5);
    char *c = xstrndup("hi", 10); /* n past the end copies only what is there */

    ck_assert_str_eq(a, "hello");
    ck_assert_str_eq(b, "hello");
    ck_assert_str_eq(c, "hi");
    free(a);
    free(b);
    free(c);
}
END_TEST

START_TEST(test_buf_append_grows)
{
    struct buf b;
    char chunk[100];

    buf_init(&b, 0);
    ck_assert_ptr_null(b.data);
    ck_assert_uint_eq(b.len, 0);
    /* 100 × 100 bytes forces several reallocations past the first 256-byte block. */
    for (int i = 0; i < 100; i++) {
        memset(chunk, 'a' + i % 26, sizeof chunk);
        ck_assert_int_eq(buf_append(&b, chunk, sizeof chunk), 0);
    }
    ck_assert_uint_eq(b.len, 10000);
    ck_assert_uint_gt(b.cap, b.len); /* room for the terminator */
    ck_assert_uint_eq(strlen(b.data), 10000);
    for (int i = 0; i < 100; i++)
        ck_assert_int_eq(b.data[i * 100 + 99], 'a' + i % 26);
    buf_free(&b);
    ck_assert_ptr_null(b.data);
    ck_assert_uint_eq(b.len, 0);
}
END_TEST

START_TEST(test_buf_append_empty_terminates)
{
    struct buf b;

    buf_init(&b, 0);
    ck_assert_int_eq(buf_append(&b, "", 0), 0);
    ck_assert_ptr_nonnull(b.data);
    ck_assert_str_eq(b.data, "");
    buf_free(&b);
}
END_TEST

START_TEST(test_buf_append_limit)
{
    struct buf b;

    buf_init(&b, 10);
    ck_assert_int_eq(buf_append(&b, "12345", 5), 0);
    ck_assert_int_eq(buf_append(&b, "123456", 6), -1); /* 11 > 10: refused whole */
    ck_assert_uint_eq(b.len, 5);
    ck_assert_str_eq(b.data, "12345");
    ck_assert_int_eq(buf_append(&b, "67890", 5), 0); /* exactly at the limit is fine */
    ck_assert_str_eq(b.data, "1234567890");
    ck_assert_int_eq(buf_append(&b, "x", 1), -1);
    ck_assert_str_eq(b.data, "1234567890");
    buf_free(&b);
    ck_assert_uint_eq(b.limit, 10); /* buf_free keeps the limit for reuse */
}
END_TEST

START_TEST(test_buf_printf_short)
{
    struct buf b;

    buf_init(&b, 0);
    ck_assert_int_eq(buf_printf(&b, "%s=%d", "n", 42), 0);
    ck_assert_int_eq(buf_printf(&b, ",%s", "x"), 0);
    ck_assert_str_eq(b.data, "n=42,x");
    ck_assert_uint_eq(b.len, 6);
    buf_free(&b);
}
END_TEST

START_TEST(test_buf_printf_long)
{
    struct buf b;
    char big[1001];

    memset(big, 'z', 1000);
    big[1000] = '\0';
    buf_init(&b, 0);
    ck_assert_int_eq(buf_printf(&b, "<"), 0);
    /* Longer than the 256-byte stack buffer: takes the second, direct formatting path. */
    ck_assert_int_eq(buf_printf(&b, "[%s|%d]", big, 7), 0);
    ck_assert_uint_eq(b.len, 1 + 1000 + 4);
    ck_assert_uint_eq(strlen(b.data), b.len);
    ck_assert_int_eq(b.data[0], '<');
    ck_assert_int_eq(b.data[1], '[');
    ck_assert_int_eq(b.data[1001], 'z');
    ck_assert_str_eq(b.data + 1002, "|7]");
    /* Appending after a long printf keeps working. */
    ck_assert_int_eq(buf_append(&b, "!", 1), 0);
    ck_assert_str_eq(b.data + 1002, "|7]!");
    buf_free(&b);
}
END_TEST

START_TEST(test_buf_printf_limit)
{
    struct buf b;
    char big[300];

    memset(big, 'q', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    buf_init(&b, 100);
    ck_assert_int_eq(buf_printf(&b, "%s", "abc"), 0);
    ck_assert_int_eq(buf_printf(&b, "%s", big), -1); /* long path refused */
    ck_assert_str_eq(b.data, "abc");
    char mid[99];
    memset(mid, 'm', sizeof mid - 1);
    mid[sizeof mid - 1] = '\0';
    ck_assert_int_eq(buf_printf(&b, "%s", mid), -1); /* short path: 3 + 98 > 100 */
    ck_assert_uint_eq(b.len, 3);
    ck_assert_str_eq(b.data, "abc");
    mid[97] = '\0';
    ck_assert_int_eq(buf_printf(&b, "%s", mid), 0); /* 3 + 97 = 100 */
    ck_assert_uint_eq(b.len, 100);
    buf_free(&b);
}
END_TEST

static Suite *xalloc_suite(void)
{
    Suite *s = suite_create("xalloc");
    TCase *tc = tcase_create("core");

    tcase_set_timeout(tc, 10);
    tcase_add_test(tc, test_xalloc_strdup);
    tcase_add_test(tc, test_buf_append_grows);
    tcase_add_test(tc, test_buf_append_empty_terminates);
    tcase_add_test(tc, test_buf_append_limit);
    tcase_add_test(tc, test_buf_printf_short);
    tcase_add_test(tc, test_buf_printf_long);
    tcase_add_test(tc, test_buf_printf_limit);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(xalloc_suite());

    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
