/* test_ttlcache: texts served again until their time to live passes, in bounded memory. */
#include <check.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ttlcache.h"

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

    nanosleep(&ts, NULL);
}

START_TEST(test_ttlcache_fresh_then_expired)
{
    struct ttlcache c = TTLCACHE_INIT;

    ck_assert_ptr_null(ttlcache_get(&c, "w1"));
    ttlcache_put(&c, "w1", "{\"n\":1}", 150);
    char *t = ttlcache_get(&c, "w1");
    ck_assert_str_eq(t, "{\"n\":1}");
    free(t);
    ck_assert_ptr_null(ttlcache_get(&c, "w2"));
    ttlcache_put(&c, "w1", "{\"n\":2}", 150); /* a newer text replaces the key's */
    t = ttlcache_get(&c, "w1");
    ck_assert_str_eq(t, "{\"n\":2}");
    free(t);
    sleep_ms(200);
    ck_assert_ptr_null(ttlcache_get(&c, "w1"));
    ttlcache_clear(&c);
}
END_TEST

START_TEST(test_ttlcache_one_reader_renews_ahead_of_expiry)
{
    struct ttlcache c = TTLCACHE_INIT;

    ttlcache_put(&c, "w1", "old", 1000);
    char *t = ttlcache_get(&c, "w1");
    ck_assert_str_eq(t, "old"); /* in its first three quarters: everyone is served */
    free(t);
    sleep_ms(800);
    ck_assert_ptr_null(ttlcache_get(&c, "w1")); /* the first reader of the last quarter renews */
    for (int i = 0; i < 3; i++) {               /* while the others are still served */
        t = ttlcache_get(&c, "w1");
        ck_assert_str_eq(t, "old");
        free(t);
    }
    ttlcache_put(&c, "w1", "new", 1000);
    t = ttlcache_get(&c, "w1");
    ck_assert_str_eq(t, "new");
    free(t);
    sleep_ms(800);
    ck_assert_ptr_null(ttlcache_get(&c, "w1")); /* the new text's last quarter: one reader again */
    sleep_ms(300);
    ck_assert_ptr_null(ttlcache_get(&c, "w1")); /* never renewed: gone at its expiry for all */
    ck_assert_ptr_null(ttlcache_get(&c, "w1"));
    ttlcache_clear(&c);
}
END_TEST

START_TEST(test_ttlcache_keeps_nothing_it_should_not)
{
    struct ttlcache c = TTLCACHE_INIT;
    char key[TTLCACHE_KEY_MAX + 1];

    ttlcache_put(&c, "off", "x", 0);
    ck_assert_ptr_null(ttlcache_get(&c, "off"));
    memset(key, 'k', TTLCACHE_KEY_MAX);
    key[TTLCACHE_KEY_MAX] = '\0';
    ttlcache_put(&c, key, "x", 10000); /* one byte too long: maybe cut short, never kept */
    ck_assert_ptr_null(ttlcache_get(&c, key));
    key[TTLCACHE_KEY_MAX - 1] = '\0';
    ttlcache_put(&c, key, "y", 10000);
    char *t = ttlcache_get(&c, key);
    ck_assert_str_eq(t, "y");
    free(t);
    ttlcache_clear(&c);
    ck_assert_ptr_null(ttlcache_get(&c, key));
}
END_TEST

START_TEST(test_ttlcache_full_gives_up_the_closest_to_expiry)
{
    struct ttlcache c = TTLCACHE_INIT;
    char key[16];

    ttlcache_put(&c, "first", "soon", 5000);
    for (int i = 1; i < TTLCACHE_SLOTS; i++) {
        snprintf(key, sizeof key, "k%d", i);
        ttlcache_put(&c, key, "later", 60000);
    }
    ttlcache_put(&c, "extra", "new", 60000);
    char *t = ttlcache_get(&c, "extra");
    ck_assert_str_eq(t, "new");
    free(t);
    ck_assert_ptr_null(ttlcache_get(&c, "first"));
    for (int i = 1; i < TTLCACHE_SLOTS; i++) {
        snprintf(key, sizeof key, "k%d", i);
        t = ttlcache_get(&c, key);
        ck_assert_msg(t != NULL, "%s given up", key);
        free(t);
    }
    ttlcache_clear(&c);
}
END_TEST

static struct ttlcache shared = TTLCACHE_INIT;

static void *ttlcache_worker(void *arg)
{
    char key[16], text[32];
    int id = *(int *)arg, bad = 0;

    for (int i = 0; i < 2000; i++) {
        snprintf(key, sizeof key, "k%d", (id * 7 + i) % 100);
        snprintf(text, sizeof text, "%s-text", key);
        ttlcache_put(&shared, key, text, 1000);
        char *t = ttlcache_get(&shared, key);
        /* Another thread may have given the slot up, never filled it with another key's. */
        bad += t && strcmp(t, text) != 0;
        free(t);
    }
    *(int *)arg = bad;
    return NULL;
}

START_TEST(test_ttlcache_threads)
{
    pthread_t th[4];
    int ids[4] = {0, 1, 2, 3};

    for (int i = 0; i < 4; i++)
        pthread_create(&th[i], NULL, ttlcache_worker, &ids[i]);
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        ck_assert_int_eq(ids[i], 0);
    }
    ttlcache_clear(&shared);
}
END_TEST

static Suite *ttlcache_suite(void)
{
    Suite *s = suite_create("ttlcache");
    TCase *tc = tcase_create("core");

    tcase_set_timeout(tc, 10);
    tcase_add_test(tc, test_ttlcache_fresh_then_expired);
    tcase_add_test(tc, test_ttlcache_one_reader_renews_ahead_of_expiry);
    tcase_add_test(tc, test_ttlcache_keeps_nothing_it_should_not);
    tcase_add_test(tc, test_ttlcache_full_gives_up_the_closest_to_expiry);
    tcase_add_test(tc, test_ttlcache_threads);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(ttlcache_suite());

    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
