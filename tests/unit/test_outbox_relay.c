/* test_outbox_relay: the relay marks a row sent only after a successful delivery report. */
#include <check.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "db.h"
#include "log.h"
#include "migrate.h"
#include "outbox.h"
#include "sql_common.h"

#define TOPIC "unit.outbox"
#define NEVENTS 40
#define NKEYS 4

static char schema[64];
static const char *db_url;

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

    nanosleep(&ts, NULL);
}

/* A fresh schema with the outbox tables, through the real migrations. */
static void setup_schema(struct db_conn *conn)
{
    char sql[256];
    const struct migration *lists[] = {sql_common_migrations};
    const size_t counts[] = {sql_common_migrations_count};
    size_t applied;

    db_url = getenv("PTCE_TEST_DATABASE_URL");
    ck_assert_msg(db_url && *db_url, "PTCE_TEST_DATABASE_URL is not set: run through make test");
    snprintf(schema, sizeof schema, "unit_outbox_%d", (int)getpid());
    ck_assert_int_eq(db_conn_open(conn, db_url, NULL, 0), STATUS_OK);
    snprintf(sql, sizeof sql, "DROP SCHEMA IF EXISTS %s CASCADE; CREATE SCHEMA %s", schema, schema);
    ck_assert_int_eq(db_command(conn, sql), STATUS_OK);
    db_conn_close(conn);
    ck_assert_int_eq(db_conn_open(conn, db_url, schema, 0), STATUS_OK);
    ck_assert_int_eq(migrate_apply(conn, lists, counts, 1, &applied), STATUS_OK);
}

static long count_sent(struct db_conn *conn)
{
    PGresult *r = PQexec(conn->pg, "SELECT count(*) FROM outbox WHERE sent_at IS NOT NULL");
    long n = strtol(PQgetvalue(r, 0, 0), NULL, 10);

    PQclear(r);
    return n;
}

/* Commits NEVENTS events over NKEYS keys; data.seq numbers each key's events from 1. */
static void append_events(struct db_conn *conn)
{
    char key[32];

    ck_assert_int_eq(db_begin(conn), STATUS_OK);
    for (int i = 0; i < NEVENTS; i++) {
        snprintf(key, sizeof key, "key-%d", i % NKEYS);
        ck_assert_int_eq(outbox_append(conn, TOPIC, "/unit", "unit.event", key,
                                       json_pack("{s:i}", "seq", i / NKEYS + 1), NULL),
                         STATUS_OK);
    }
    ck_assert_int_eq(db_commit(conn), STATUS_OK);
}

/* Reads the topic back from the mock cluster and checks per-key order and the count. */
static void check_topic(const char *bootstraps)
{
    char errstr[256];
    int next_seq[NKEYS];
    int got = 0;
    rd_kafka_conf_t *conf = rd_kafka_conf_new();

    for (int k = 0; k < NKEYS; k++)
        next_seq[k] = 1;
    rd_kafka_conf_set(conf, "bootstrap.servers", bootstraps, errstr, sizeof errstr);
    rd_kafka_conf_set(conf, "group.id", "unit-check", errstr, sizeof errstr);
    rd_kafka_conf_set(conf, "auto.offset.reset", "earliest", errstr, sizeof errstr);
    rd_kafka_t *c = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof errstr);
    ck_assert_ptr_nonnull(c);
    rd_kafka_poll_set_consumer(c);
    rd_kafka_topic_partition_list_t *t = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(t, TOPIC, RD_KAFKA_PARTITION_UA);
    rd_kafka_subscribe(c, t);
    rd_kafka_topic_partition_list_destroy(t);
    for (int i = 0; i < 200 && got < NEVENTS; i++) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(c, 100);
        if (!m)
            continue;
        if (!m->err) {
            json_t *ev = json_loadb(m->payload, m->len, 0, NULL);
            const char *subject = json_string_value(json_object_get(ev, "subject"));
            int k = (int)strtol(subject + 4, NULL, 10); /* "key-N" */
            int seq = (int)json_integer_value(json_object_get(json_object_get(ev, "data"), "seq"));
            ck_assert_int_eq(seq, next_seq[k]); /* per key: 1, 2, 3… with no gap and no repeat */
            next_seq[k]++;
            got++;
            json_decref(ev);
        }
        rd_kafka_message_destroy(m);
    }
    rd_kafka_consumer_close(c);
    rd_kafka_destroy(c);
    ck_assert_int_eq(got, NEVENTS);
}

START_TEST(test_relay_marks_only_delivered)
{
    struct db_conn conn;
    char errstr[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();

    log_init("unit", LOG_ERROR);
    setup_schema(&conn);
    /* A throwaway handle owns the mock cluster that the relay then talks to over loopback. */
    rd_kafka_t *owner = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
    ck_assert_ptr_nonnull(owner);
    rd_kafka_mock_cluster_t *mc = rd_kafka_mock_cluster_new(owner, 1);
    ck_assert_ptr_nonnull(mc);
    ck_assert_int_eq(rd_kafka_mock_topic_create(mc, TOPIC, 2, 1), RD_KAFKA_RESP_ERR_NO_ERROR);
    const char *boot = rd_kafka_mock_cluster_bootstraps(mc);

    /* Every produce is refused: nothing may be marked sent. */
    rd_kafka_mock_topic_set_error(mc, TOPIC, RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED);
    struct outbox_relay_config rc = {db_url, schema, {boot, "unit-relay", 1000, 2, 1}, 500, 50};
    struct outbox_relay *relay = outbox_relay_start(&rc);
    ck_assert_ptr_nonnull(relay);
    append_events(&conn);
    sleep_ms(3500); /* past the 1 s message timeout: the failed reports have come back */
    ck_assert_int_eq(count_sent(&conn), 0);

    /* The broker accepts again: every row is delivered and marked, once, in order per key. */
    rd_kafka_mock_topic_set_error(mc, TOPIC, RD_KAFKA_RESP_ERR_NO_ERROR);
    long sent = 0;
    for (int i = 0; i < 150 && sent < NEVENTS; i++) {
        sleep_ms(100);
        sent = count_sent(&conn);
    }
    ck_assert_int_eq(sent, NEVENTS);
    outbox_relay_stop(relay);
    check_topic(boot);

    char sql[128];
    snprintf(sql, sizeof sql, "DROP SCHEMA %s CASCADE", schema);
    db_command(&conn, sql);
    db_conn_close(&conn);
    rd_kafka_mock_cluster_destroy(mc);
    rd_kafka_destroy(owner);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("outbox_relay");
    TCase *tc = tcase_create("mock_cluster");

    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_relay_marks_only_delivered);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
