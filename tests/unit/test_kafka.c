/* test_kafka: statistics parsing, and topic set-up and probing against librdkafka's mock broker. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kafka.h"

#include <librdkafka/rdkafka_mock.h> /* must follow rdkafka.h, which kafka.h includes */

/* ---- statistics: no broker ---- */

/* Trimmed librdkafka statistics: partition "-1" is the internal UA partition. */
static const char stats_sample[] =
    "{\"name\":\"rdkafka#consumer-1\",\"type\":\"consumer\",\"topics\":{"
    " \"submission.events\":{\"topic\":\"submission.events\",\"partitions\":{"
    "  \"0\":{\"partition\":0,\"consumer_lag\":5,\"committed_offset\":10},"
    "  \"1\":{\"partition\":1,\"consumer_lag\":7},"
    "  \"2\":{\"partition\":2,\"consumer_lag\":-1},"
    "  \"-1\":{\"partition\":-1,\"consumer_lag\":1000}}},"
    " \"funding.events\":{\"topic\":\"funding.events\",\"partitions\":{"
    "  \"0\":{\"partition\":0,\"consumer_lag\":3},"
    "  \"1\":{\"partition\":1}}}}}";

static long lag_of(const char *json)
{
    return kafka_stats_consumer_lag(json, strlen(json));
}

START_TEST(test_kafka_stats_lag_sum)
{
    ck_assert_int_eq(kafka_stats_consumer_lag(stats_sample, sizeof stats_sample - 1), 15);
}
END_TEST

START_TEST(test_kafka_stats_lag_none)
{
    ck_assert_int_eq(lag_of("{\"topics\":{}}"), -1);
    ck_assert_int_eq(lag_of("{\"name\":\"x\"}"), -1);
    ck_assert_int_eq(lag_of("{\"topics\":{\"t\":{\"partitions\":{\"-1\":{\"consumer_lag\":4},"
                            "\"0\":{\"consumer_lag\":-1}}}}}"),
                     -1);
    ck_assert_int_eq(lag_of("not json"), -1);
    ck_assert_int_eq(lag_of(""), -1);
    ck_assert_int_eq(lag_of("{\"topics\":[1,2]}"), -1);
    /* A partition that has caught up counts: 0 is a lag, -1 is "unknown". */
    ck_assert_int_eq(lag_of("{\"topics\":{\"t\":{\"partitions\":{\"0\":{\"consumer_lag\":0}}}}}"),
                     0);
}
END_TEST

START_TEST(test_kafka_stats_lag_respects_length)
{
    /* Only len bytes are read: a truncated document is malformed. */
    ck_assert_int_eq(kafka_stats_consumer_lag(stats_sample, 40), -1);
}
END_TEST

/* ---- the mock broker ---- */

static rd_kafka_t *mock_owner;
static rd_kafka_mock_cluster_t *mock;

static void mock_setup(void)
{
    char errstr[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();

    /* The mock cluster needs a handle to live in; it listens on 127.0.0.1 only. */
    ck_assert_int_eq(rd_kafka_conf_set(conf, "log_level", "0", errstr, sizeof errstr),
                     RD_KAFKA_CONF_OK);
    mock_owner = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
    ck_assert_msg(mock_owner != NULL, "%s", errstr);
    mock = rd_kafka_mock_cluster_new(mock_owner, 1);
    ck_assert_ptr_nonnull(mock);
    ck_assert(strncmp(rd_kafka_mock_cluster_bootstraps(mock), "127.0.0.1:", 10) == 0);
}

static void mock_teardown(void)
{
    rd_kafka_mock_cluster_destroy(mock);
    rd_kafka_destroy(mock_owner);
}

static rd_kafka_t *producer_on(const char *brokers)
{
    char errstr[256];
    struct kafka_config cfg = {brokers, "unit-test", 5000, 3, 1, 0};
    rd_kafka_t *rk = kafka_producer_new(&cfg, NULL, NULL, errstr, sizeof errstr);

    ck_assert_msg(rk != NULL, "kafka_producer_new: %s", errstr);
    return rk;
}

static long elapsed_ms(const struct timespec *since)
{
    struct timespec now;

    clock_gettime(CLOCK_MONOTONIC, &now);
    return (now.tv_sec - since->tv_sec) * 1000 + (now.tv_nsec - since->tv_nsec) / 1000000;
}

START_TEST(test_kafka_reachable_mock)
{
    rd_kafka_t *rk = producer_on(rd_kafka_mock_cluster_bootstraps(mock));

    ck_assert_int_eq(kafka_reachable(rk, 5000), 1);
    rd_kafka_destroy(rk);
}
END_TEST

START_TEST(test_kafka_unreachable_closed_port)
{
    rd_kafka_t *rk = producer_on("127.0.0.1:1");
    struct timespec start;

    clock_gettime(CLOCK_MONOTONIC, &start);
    ck_assert_int_eq(kafka_reachable(rk, 300), 0);
    ck_assert_int_lt(elapsed_ms(&start), 3000);
    rd_kafka_destroy(rk);
}
END_TEST

START_TEST(test_kafka_producer_bad_config)
{
    char errstr[256] = "";
    struct kafka_config cfg = {"127.0.0.1:1", "unit-test", -5, 1, 1, 0};

    ck_assert_ptr_null(kafka_producer_new(&cfg, NULL, NULL, errstr, sizeof errstr));
    ck_assert_msg(strstr(errstr, "message.timeout.ms") != NULL, "errstr: %s", errstr);
}
END_TEST

START_TEST(test_kafka_consumer_on_mock)
{
    static const char *const topics[] = {"unit.consumed"};
    char errstr[256];
    struct kafka_config cfg = {rd_kafka_mock_cluster_bootstraps(mock), "unit-test", 5000, 1, 1, 0};
    rd_kafka_t *rk =
        kafka_consumer_new(&cfg, "unit-group", topics, 1, NULL, NULL, errstr, sizeof errstr);
    rd_kafka_topic_partition_list_t *subs = NULL;

    ck_assert_msg(rk != NULL, "kafka_consumer_new: %s", errstr);
    ck_assert_int_eq(rd_kafka_subscription(rk, &subs), RD_KAFKA_RESP_ERR_NO_ERROR);
    ck_assert_int_eq(subs->cnt, 1);
    ck_assert_str_eq(subs->elems[0].topic, "unit.consumed");
    rd_kafka_topic_partition_list_destroy(subs);
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
}
END_TEST

/* A consumer's fetch.wait.max.ms: 10 ms unless its configuration says otherwise. */
static void check_fetch_wait(long fetch_wait_ms, const char *expected)
{
    static const char *const topics[] = {"unit.consumed"};
    char errstr[256], value[32];
    size_t size = sizeof value;
    struct kafka_config cfg = {
        rd_kafka_mock_cluster_bootstraps(mock), "unit-test", 5000, 1, 1, fetch_wait_ms};
    rd_kafka_t *rk =
        kafka_consumer_new(&cfg, "unit-group", topics, 1, NULL, NULL, errstr, sizeof errstr);

    ck_assert_msg(rk != NULL, "kafka_consumer_new: %s", errstr);
    ck_assert_int_eq(rd_kafka_conf_get(rd_kafka_conf(rk), "fetch.wait.max.ms", value, &size),
                     RD_KAFKA_CONF_OK);
    ck_assert_str_eq(value, expected);
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
}

START_TEST(test_kafka_consumer_fetch_wait)
{
    check_fetch_wait(0, "10");
    check_fetch_wait(100, "100");
}
END_TEST

START_TEST(test_kafka_topics_ensure_bounded_on_mock)
{
    /*
     * librdkafka 2.0's mock broker does not implement CreateTopics (rdkafka_mock.h says so): the
     * call must fail as unavailable within its timeout instead of hanging. Creation itself is
     * tested against a real broker below when PTCE_TEST_KAFKA_BROKERS is set.
     */
    static const char *const topics[] = {"unit.mock.a"};
    rd_kafka_t *rk = producer_on(rd_kafka_mock_cluster_bootstraps(mock));
    struct timespec start;

    clock_gettime(CLOCK_MONOTONIC, &start);
    ck_assert_int_eq(kafka_topics_ensure(rk, topics, 1, 3, 1, 500), STATUS_UNAVAILABLE);
    ck_assert_int_lt(elapsed_ms(&start), 3000);
    rd_kafka_destroy(rk);
}
END_TEST

/* ---- a real broker (optional): PTCE_TEST_KAFKA_BROKERS, on loopback ---- */

/* The partition count of topic in the cluster, or -1 if it does not exist. */
static int partitions_now(rd_kafka_t *rk, const char *topic)
{
    const struct rd_kafka_metadata *md;
    int n = -1;

    ck_assert_int_eq(rd_kafka_metadata(rk, 1, NULL, &md, 5000), RD_KAFKA_RESP_ERR_NO_ERROR);
    for (int i = 0; i < md->topic_cnt; i++) {
        if (strcmp(md->topics[i].topic, topic) == 0 && !md->topics[i].err)
            n = md->topics[i].partition_cnt;
    }
    rd_kafka_metadata_destroy(md);
    return n;
}

/* Same, once the topic shows up: brokers learn of a new topic a moment after it is created. */
static int partitions_of(rd_kafka_t *rk, const char *topic)
{
    int n = partitions_now(rk, topic);

    for (int i = 0; n < 0 && i < 50; i++) {
        usleep(100000);
        n = partitions_now(rk, topic);
    }
    return n;
}

START_TEST(test_kafka_topics_ensure_broker)
{
    char a[64], b[64];
    const char *topics[] = {a, b};
    rd_kafka_t *rk = producer_on(getenv("PTCE_TEST_KAFKA_BROKERS"));

    snprintf(a, sizeof a, "unit.%d.%ld.a", (int)getpid(), (long)time(NULL));
    snprintf(b, sizeof b, "unit.%d.%ld.b", (int)getpid(), (long)time(NULL));
    ck_assert_int_eq(partitions_now(rk, a), -1);
    ck_assert_int_eq(kafka_topics_ensure(rk, topics, 1, 3, 1, 10000), STATUS_OK);
    ck_assert_int_eq(partitions_of(rk, a), 3);
    /* Again, with one topic more and another partition count: a exists and is left alone. */
    ck_assert_int_eq(kafka_topics_ensure(rk, topics, 2, 2, 1, 10000), STATUS_OK);
    ck_assert_int_eq(partitions_of(rk, a), 3);
    ck_assert_int_eq(partitions_of(rk, b), 2);
    ck_assert_int_eq(kafka_topics_ensure(rk, topics, 2, 2, 1, 10000), STATUS_OK);
    rd_kafka_destroy(rk);
}
END_TEST

static Suite *kafka_suite(void)
{
    Suite *s = suite_create("kafka");
    TCase *stats = tcase_create("stats");
    TCase *mocked = tcase_create("mock");

    tcase_set_timeout(stats, 10);
    tcase_add_test(stats, test_kafka_stats_lag_sum);
    tcase_add_test(stats, test_kafka_stats_lag_none);
    tcase_add_test(stats, test_kafka_stats_lag_respects_length);
    suite_add_tcase(s, stats);

    tcase_set_timeout(mocked, 30);
    tcase_add_checked_fixture(mocked, mock_setup, mock_teardown);
    tcase_add_test(mocked, test_kafka_reachable_mock);
    tcase_add_test(mocked, test_kafka_unreachable_closed_port);
    tcase_add_test(mocked, test_kafka_producer_bad_config);
    tcase_add_test(mocked, test_kafka_consumer_on_mock);
    tcase_add_test(mocked, test_kafka_consumer_fetch_wait);
    tcase_add_test(mocked, test_kafka_topics_ensure_bounded_on_mock);
    suite_add_tcase(s, mocked);

    const char *brokers = getenv("PTCE_TEST_KAFKA_BROKERS");
    if (brokers && *brokers) {
        TCase *real = tcase_create("broker");
        tcase_set_timeout(real, 60);
        tcase_add_test(real, test_kafka_topics_ensure_broker);
        suite_add_tcase(s, real);
    } else {
        printf("kafka: PTCE_TEST_KAFKA_BROKERS is not set; topic creation on a real broker is "
               "not tested\n");
    }
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(kafka_suite());

    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
