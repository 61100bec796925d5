/* test_uuid: random version-4 UUIDs have the right shape and bits, and do not repeat. */
#include <check.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "uuid.h"

#define NUNIQUE 10000

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1; /* upper case is not canonical output */
}

START_TEST(test_uuid_new_format)
{
    char id[UUID_STR_LEN];

    for (int n = 0; n < 1000; n++) {
        memset(id, 'X', sizeof id);
        uuid_new(id);
        ck_assert_uint_eq(strlen(id), 36);
        for (int i = 0; i < 36; i++) {
            if (i == 8 || i == 13 || i == 18 || i == 23)
                ck_assert_int_eq(id[i], '-');
            else
                ck_assert_msg(hex_value(id[i]) >= 0, "%s: not lower-case hex at %d", id, i);
        }
        ck_assert_int_eq(id[14], '7');                  /* version 7 */
        ck_assert_int_eq(hex_value(id[19]) & 0xc, 0x8); /* variant 10xx: 8, 9, a or b */
        ck_assert_int_eq(uuid_is_valid(id), 1);
    }
}
END_TEST

static unsigned long long now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (unsigned long long)ts.tv_sec * 1000ULL + (unsigned long long)ts.tv_nsec / 1000000ULL;
}

/* The first 48 bits are the time of the call in Unix milliseconds; later ids sort after. */
START_TEST(test_uuid_new_time_ordered)
{
    char a[UUID_STR_LEN], b[UUID_STR_LEN], hex[13];
    unsigned long long before = now_ms();

    uuid_new(a);
    unsigned long long after = now_ms();
    memcpy(hex, a, 8);
    memcpy(hex + 8, a + 9, 4);
    hex[12] = '\0';
    unsigned long long ms = strtoull(hex, NULL, 16);
    ck_assert_msg(ms >= before && ms <= after, "%s: %llu outside [%llu, %llu]", a, ms, before,
                  after);
    struct timespec pause = {0, 2000000}; /* 2 ms: the next id is in a later millisecond */
    nanosleep(&pause, NULL);
    uuid_new(b);
    ck_assert_msg(strcmp(a, b) < 0, "%s made before %s sorts after it", a, b);
}
END_TEST

static int cmp_str(const void *a, const void *b)
{
    return strcmp(a, b);
}

START_TEST(test_uuid_new_unique)
{
    char(*ids)[UUID_STR_LEN] = malloc(NUNIQUE * sizeof *ids);

    ck_assert_ptr_nonnull(ids);
    for (int i = 0; i < NUNIQUE; i++)
        uuid_new(ids[i]);
    qsort(ids, NUNIQUE, sizeof *ids, cmp_str);
    for (int i = 1; i < NUNIQUE; i++)
        ck_assert_msg(strcmp(ids[i - 1], ids[i]) != 0, "duplicate %s", ids[i]);
    free(ids);
}
END_TEST

START_TEST(test_uuid_random_bits_vary)
{
    /*
     * After the 48 bits of time (positions 0 to 12, which 200 ids made at once mostly share) and
     * the version digit, every hex position is random and should change.
     */
    char first[UUID_STR_LEN], id[UUID_STR_LEN];
    int changed[36] = {0};

    uuid_new(first);
    for (int n = 0; n < 200; n++) {
        uuid_new(id);
        for (int i = 0; i < 36; i++)
            changed[i] |= id[i] != first[i];
    }
    for (int i = 14; i < 36; i++) {
        int fixed = i == 14 || i == 18 || i == 23;
        ck_assert_msg(changed[i] == !fixed, "position %d %s", i, fixed ? "moved" : "never moved");
    }
}
END_TEST

START_TEST(test_uuid_is_valid)
{
    static const char *const ok[] = {
        "123e4567-e89b-12d3-a456-426614174000",
        "00000000-0000-0000-0000-000000000000",
        "FFFFFFFF-FFFF-4FFF-BFFF-FFFFFFFFFFFF", /* any case */
        "aBcDeF01-2345-6789-abcd-ef0123456789",
    };
    static const char *const bad[] = {
        "",
        "123e4567-e89b-12d3-a456-42661417400",   /* 35 characters */
        "123e4567-e89b-12d3-a456-4266141740000", /* 37 */
        "123e4567e89b-12d3-a456-4266141740000",  /* dash moved */
        "123e4567-e89b-12d3-a456_426614174000",
        "123e4567-e89b-12d3-a456-42661417400g",
        "{123e4567-e89b-12d3-a456-426614174000}",
        "123e4567-e89b-12d3-a456-426614174000\n",
        " 123e4567-e89b-12d3-a456-426614174000",
        "123e4567e89b12d3a456426614174000",
    };

    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        ck_assert_msg(uuid_is_valid(ok[i]) == 1, "rejected %s", ok[i]);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        ck_assert_msg(uuid_is_valid(bad[i]) == 0, "accepted \"%s\"", bad[i]);
    ck_assert_int_eq(uuid_is_valid(NULL), 0);
}
END_TEST

START_TEST(test_random_bytes_fills)
{
    unsigned char a[64], b[64];

    memset(a, 0, sizeof a);
    memset(b, 0, sizeof b);
    random_bytes(a, sizeof a);
    random_bytes(b, sizeof b);
    ck_assert(memcmp(a, b, sizeof a) != 0);
    random_bytes(a, 0); /* a no-op, not a hang */
}
END_TEST

START_TEST(test_hex_encode)
{
    static const unsigned char in[] = {0x00, 0x09, 0x9f, 0xa0, 0xff};
    char out[2 * sizeof in + 1];

    memset(out, 'x', sizeof out);
    hex_encode(in, sizeof in, out);
    ck_assert_str_eq(out, "00099fa0ff");
    hex_encode(in, 0, out);
    ck_assert_str_eq(out, "");
}
END_TEST

static Suite *uuid_suite(void)
{
    Suite *s = suite_create("uuid");
    TCase *tc = tcase_create("core");

    tcase_set_timeout(tc, 20);
    tcase_add_test(tc, test_uuid_new_format);
    tcase_add_test(tc, test_uuid_new_unique);
    tcase_add_test(tc, test_uuid_new_time_ordered);
    tcase_add_test(tc, test_uuid_random_bits_vary);
    tcase_add_test(tc, test_uuid_is_valid);
    tcase_add_test(tc, test_random_bytes_fills);
    tcase_add_test(tc, test_hex_encode);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(uuid_suite());

    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
