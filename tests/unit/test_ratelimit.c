/* test_ratelimit: token buckets — burst, refill, Retry-After, bounded memory, threads. */
#include <check.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "ratelimit.h"

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

    nanosleep(&ts, NULL);
}

START_TEST(test_ratelimit_burst_then_limited)
{
    struct ratelimit *rl = ratelimit_new(1, 5, 128);
    long retry = -1;

    for (int i = 0; i < 5; i++)
        ck_assert_int_eq(ratelimit_take(rl, "key-a", &retry), STATUS_OK);
    ck_assert_int_eq(ratelimit_check(rl, "key-a", &retry), STATUS_RATE_LIMITED);
    ck_assert_int_eq(ratelimit_take(rl, "key-a", &retry), STATUS_RATE_LIMITED);
    ck_assert_int_eq(retry, 1); /* one token a second: the next is less than a second away */
    /* Another name has its own bucket. */
    ck_assert_int_eq(ratelimit_take(rl, "key-b", NULL), STATUS_OK);
    ratelimit_free(rl);
}
END_TEST

START_TEST(test_ratelimit_refills_at_its_rate)
{
    struct ratelimit *rl = ratelimit_new(20, 2, 128); /* a token every 50 ms */

    ck_assert_int_eq(ratelimit_take(rl, "k", NULL), STATUS_OK);
    ck_assert_int_eq(ratelimit_take(rl, "k", NULL), STATUS_OK);
    ck_assert_int_eq(ratelimit_take(rl, "k", NULL), STATUS_RATE_LIMITED);
    sleep_ms(70);
    ck_assert_int_eq(ratelimit_take(rl, "k", NULL), STATUS_OK);
    ck_assert_int_eq(ratelimit_take(rl, "k", NULL), STATUS_RATE_LIMITED);
    /* A long rest refills up to the burst, never beyond it. */
    sleep_ms(400);
    ck_assert_int_eq(ratelimit_take(rl, "k", NULL), STATUS_OK);
    ck_assert_int_eq(ratelimit_take(rl, "k", NULL), STATUS_OK);
    ck_assert_int_eq(ratelimit_take(rl, "k", NULL), STATUS_RATE_LIMITED);
    ratelimit_free(rl);
}
END_TEST

START_TEST(test_ratelimit_retry_after_rounds_up)
{
    struct ratelimit *slow = ratelimit_new(1, 1, 64);
    long retry = 0;

    ck_assert_int_eq(ratelimit_take(slow, "k", NULL), STATUS_OK);
    ck_assert_int_eq(ratelimit_take(slow, "k", &retry), STATUS_RATE_LIMITED);
    ck_assert_int_eq(retry, 1);
    ratelimit_free(slow);
}
END_TEST

START_TEST(test_ratelimit_disabled)
{
    struct ratelimit *off = ratelimit_new(0, 10, 64);

    for (int i = 0; i < 1000; i++)
        ck_assert_int_eq(ratelimit_take(off, "k", NULL), STATUS_OK);
    ratelimit_free(off);
    ck_assert_int_eq(ratelimit_take(NULL, "k", NULL), STATUS_OK);
    ratelimit_free(NULL);
}
END_TEST

/* Many more names than slots: memory stays bounded, and a busy name keeps its bucket. */
START_TEST(test_ratelimit_many_names)
{
    struct ratelimit *rl = ratelimit_new(1, 3, 64);
    char name[32];

    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(ratelimit_take(rl, "busy", NULL), STATUS_OK);
    for (int i = 0; i < 5000; i++) {
        snprintf(name, sizeof name, "flood-%d", i);
        ck_assert_int_eq(ratelimit_take(rl, name, NULL), STATUS_OK); /* a fresh name: full */
    }
    /*
     * The busy name may have been forgotten by the flood (then its bucket starts full again):
     * either way it never gets more than the burst at once.
     */
    int ok = 0;
    for (int i = 0; i < 10; i++)
        ok += ratelimit_take(rl, "busy", NULL) == STATUS_OK;
    ck_assert_int_le(ok, 3);
    ratelimit_free(rl);
}
END_TEST

static struct ratelimit *shared;
static atomic_int granted;

static void *taker(void *arg)
{
    (void)arg;
    for (int i = 0; i < 500; i++) {
        if (ratelimit_take(shared, "one-key", NULL) == STATUS_OK)
            atomic_fetch_add(&granted, 1);
    }
    return NULL;
}

START_TEST(test_ratelimit_threads_never_exceed)
{
    pthread_t t[8];
    struct timespec a, b;

    shared = ratelimit_new(100, 50, 256);
    atomic_store(&granted, 0);
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (int i = 0; i < 8; i++)
        pthread_create(&t[i], NULL, taker, NULL);
    for (int i = 0; i < 8; i++)
        pthread_join(t[i], NULL);
    clock_gettime(CLOCK_MONOTONIC, &b);
    long elapsed_ms = (b.tv_sec - a.tv_sec) * 1000 + (b.tv_nsec - a.tv_nsec) / 1000000;
    /* At most the burst plus what the rate refilled meanwhile (100 a second), plus one. */
    ck_assert_int_le(atomic_load(&granted), 50 + (100 * elapsed_ms) / 1000 + 1);
    ck_assert_int_ge(atomic_load(&granted), 50);
    ratelimit_free(shared);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("ratelimit");
    TCase *tc = tcase_create("buckets");

    tcase_set_timeout(tc, 20);
    tcase_add_test(tc, test_ratelimit_burst_then_limited);
    tcase_add_test(tc, test_ratelimit_refills_at_its_rate);
    tcase_add_test(tc, test_ratelimit_retry_after_rounds_up);
    tcase_add_test(tc, test_ratelimit_disabled);
    tcase_add_test(tc, test_ratelimit_many_names);
    tcase_add_test(tc, test_ratelimit_threads_never_exceed);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
