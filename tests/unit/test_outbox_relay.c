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
#include "metrics.h"
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

/* Rows of the outbox matching a fixed condition. */
static long count_where(struct db_conn *conn, const char *cond)
{
    char sql[256];

    snprintf(sql, sizeof sql, "SELECT count(*) FROM outbox WHERE %s", cond);
    PGresult *r = PQexec(conn->pg, sql);
    ck_assert_int_eq(PQresultStatus(r), PGRES_TUPLES_OK);
    long n = strtol(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    return n;
}

/* Waits (15 s at most) until count_where(cond) reaches want. */
static long wait_count(struct db_conn *conn, const char *cond, long want)
{
    long n = count_where(conn, cond);

    for (int i = 0; i < 150 && n != want; i++) {
        sleep_ms(100);
        n = count_where(conn, cond);
    }
    return n;
}

/*
 * Commits nevents events over nkeys keys ("key-N"; data.seq numbers each key's events from 1);
 * the first one carries a data.pad string of pad bytes when pad > 0.
 */
static void append_padded(struct db_conn *conn, int nkeys, int nevents, size_t pad)
{
    char key[32];
    char *text = malloc(pad + 1);

    ck_assert_ptr_nonnull(text);
    memset(text, 'x', pad);
    text[pad] = '\0';
    ck_assert_int_eq(db_begin(conn), STATUS_OK);
    for (int i = 0; i < nevents; i++) {
        json_t *data = json_pack("{s:i}", "seq", i / nkeys + 1);
        if (i == 0 && pad > 0)
            json_object_set_new(data, "pad", json_string(text));
        snprintf(key, sizeof key, "key-%d", i % nkeys);
        ck_assert_int_eq(outbox_append(conn, TOPIC, "/unit", "unit.event", key, data, NULL),
                         STATUS_OK);
    }
    ck_assert_int_eq(db_commit(conn), STATUS_OK);
    free(text);
}

/* Commits NEVENTS events over NKEYS keys. */
static void append_events(struct db_conn *conn)
{
    append_padded(conn, NKEYS, NEVENTS, 0);
}

/* Reads the topic back from the mock cluster and checks per-key order and the count. */
static void check_topic_count(const char *bootstraps, int expected)
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
    for (int i = 0; i < 200 && got < expected; i++) {
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
    ck_assert_int_eq(got, expected);
}

static void check_topic(const char *bootstraps)
{
    check_topic_count(bootstraps, NEVENTS);
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
    struct outbox_relay_config rc = {db_url, schema, {boot, "unit-relay", 1000, 2, 1, 0}, 500, 50,
                                     5000,   1};
    struct outbox_relay *relay = outbox_relay_start(&rc);
    ck_assert_ptr_nonnull(relay);
    append_events(&conn);
    sleep_ms(3500); /* past the 1 s message timeout: the failed reports have come back */
    ck_assert_int_eq(count_sent(&conn), 0);
    /* An authorization failure is for an operator to fix: retried, counted, never set aside. */
    ck_assert_int_eq(count_where(&conn, "dead_at IS NOT NULL"), 0);
    ck_assert_int_gt(count_where(&conn, "attempts > 0 AND last_error IS NOT NULL"), 0);

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

/* A mock cluster of one broker in a throwaway handle of its own, with TOPIC on 2 partitions. */
struct mock {
    rd_kafka_t *owner;
    rd_kafka_mock_cluster_t *mc;
    const char *boot;
};

static void mock_open(struct mock *m)
{
    char errstr[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();

    ck_assert_int_eq(rd_kafka_conf_set(conf, "log_level", "0", errstr, sizeof errstr),
                     RD_KAFKA_CONF_OK);
    m->owner = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
    ck_assert_ptr_nonnull(m->owner);
    m->mc = rd_kafka_mock_cluster_new(m->owner, 1);
    ck_assert_ptr_nonnull(m->mc);
    ck_assert_int_eq(rd_kafka_mock_topic_create(m->mc, TOPIC, 2, 1), RD_KAFKA_RESP_ERR_NO_ERROR);
    m->boot = rd_kafka_mock_cluster_bootstraps(m->mc);
}

static void mock_close(struct mock *m, struct db_conn *conn)
{
    char sql[128];

    snprintf(sql, sizeof sql, "DROP SCHEMA %s CASCADE", schema);
    db_command(conn, sql);
    db_conn_close(conn);
    rd_kafka_mock_cluster_destroy(m->mc);
    rd_kafka_destroy(m->owner);
}

static void exec_ok(struct db_conn *conn, const char *sql)
{
    PGresult *r = PQexec(conn->pg, sql);

    ck_assert_msg(PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK,
                  "%s: %s", sql, PQresultErrorMessage(r));
    PQclear(r);
}

/* The relay counts its backlog gauges at most once a second: waits up to 3 s for the line. */
static void check_metric(const char *line)
{
    struct buf b;

    for (int i = 0;; i++) {
        buf_init(&b, 0);
        metrics_render(&b);
        if (strstr(b.data, line) || i == 60)
            break;
        buf_free(&b);
        sleep_ms(50);
    }
    ck_assert_msg(strstr(b.data, line) != NULL, "no \"%s\" in:\n%s", line, b.data);
    buf_free(&b);
}

#define NDEAD_EVENTS (3 * NKEYS)

START_TEST(test_relay_dead_letter_blocks_only_its_key)
{
    struct db_conn conn;
    struct mock m;

    log_init("unit", LOG_ERROR);
    setup_schema(&conn);
    mock_open(&m);
    /* key-0's first event is larger than any message the producer may send. */
    append_padded(&conn, NKEYS, NDEAD_EVENTS, KAFKA_MESSAGE_MAX_BYTES + 1024);
    struct outbox_relay_config rc = {db_url, schema, {m.boot, "unit-relay", 5000, 2, 1, 0}, 500, 50,
                                     5000,   1};
    struct outbox_relay *relay = outbox_relay_start(&rc);
    ck_assert_ptr_nonnull(relay);

    /* Every other key flows; key-0's later events wait, in order, behind the dead one. */
    ck_assert_int_eq(wait_count(&conn, "sent_at IS NOT NULL", NDEAD_EVENTS - 3), NDEAD_EVENTS - 3);
    sleep_ms(500);
    ck_assert_int_eq(count_where(&conn, "sent_at IS NOT NULL"), NDEAD_EVENTS - 3);
    ck_assert_int_eq(count_where(&conn, "dead_at IS NOT NULL AND attempts = 1 AND key = 'key-0'"
                                        " AND last_error ILIKE '%too large%'"),
                     1);
    ck_assert_int_eq(count_where(&conn, "key = 'key-0' AND sent_at IS NULL AND dead_at IS NULL"),
                     2);
    check_metric("ptce_outbox_dead_letters_total 1\n");
    check_metric("ptce_outbox_dead_letters 1\n");

    /* An operator mends the row and replays it (ptce-admin outbox replay): all of key-0 goes. */
    exec_ok(&conn, "UPDATE outbox SET payload = (payload::jsonb #- '{data,pad}')::text,"
                   " dead_at = NULL, attempts = 0 WHERE dead_at IS NOT NULL");
    exec_ok(&conn, "SELECT pg_notify(current_schema() || '_outbox', '')");
    ck_assert_int_eq(wait_count(&conn, "sent_at IS NOT NULL", NDEAD_EVENTS), NDEAD_EVENTS);
    sleep_ms(200);
    check_metric("ptce_outbox_dead_letters 0\n");
    outbox_relay_stop(relay);
    check_topic_count(m.boot, NDEAD_EVENTS);
    mock_close(&m, &conn);
}
END_TEST

START_TEST(test_relay_dead_letter_from_the_broker)
{
    struct db_conn conn;
    struct mock m;

    log_init("unit", LOG_ERROR);
    setup_schema(&conn);
    mock_open(&m);
    /* The broker refuses the first produce request for good (API key 0 is Produce). */
    rd_kafka_mock_push_request_errors(m.mc, 0, 1, RD_KAFKA_RESP_ERR_INVALID_RECORD);
    ck_assert_int_eq(db_begin(&conn), STATUS_OK);
    ck_assert_int_eq(outbox_append(&conn, TOPIC, "/unit", "unit.event", "refused",
                                   json_pack("{s:i}", "seq", 1), NULL),
                     STATUS_OK);
    ck_assert_int_eq(db_commit(&conn), STATUS_OK);
    struct outbox_relay_config rc = {db_url, schema, {m.boot, "unit-relay", 5000, 2, 1, 0}, 500, 50,
                                     5000,   1};
    struct outbox_relay *relay = outbox_relay_start(&rc);
    ck_assert_ptr_nonnull(relay);
    ck_assert_int_eq(wait_count(&conn, "dead_at IS NOT NULL", 1), 1);
    ck_assert_int_eq(count_where(&conn, "dead_at IS NOT NULL AND attempts = 1"
                                        " AND last_error ILIKE '%validate record%'"),
                     1);
    /* The stream goes on for every other key. */
    append_events(&conn);
    ck_assert_int_eq(wait_count(&conn, "sent_at IS NOT NULL", NEVENTS), NEVENTS);
    outbox_relay_stop(relay);
    check_topic(m.boot);
    mock_close(&m, &conn);
}
END_TEST

/*
 * A row over Kafka's stock 1 MB limit goes out alone for its key: when the broker refuses it
 * in its delivery report, the later rows of its key were not produced beside it, so they
 * cannot reach the topic before it.
 */
START_TEST(test_relay_large_row_goes_alone)
{
    struct db_conn conn;
    struct mock m;

    log_init("unit", LOG_ERROR);
    setup_schema(&conn);
    mock_open(&m);
    /* The broker refuses the first produce request, as one still at 1 MB would (API key 0). */
    rd_kafka_mock_push_request_errors(m.mc, 0, 1, RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE);
    append_padded(&conn, 1, 3, 1200000); /* key-0: a 1.2 MB event, then two small ones */
    struct outbox_relay_config rc = {db_url, schema, {m.boot, "unit-relay", 5000, 2, 1, 0}, 500, 50,
                                     5000,   1};
    struct outbox_relay *relay = outbox_relay_start(&rc);
    ck_assert_ptr_nonnull(relay);
    ck_assert_int_eq(wait_count(&conn, "dead_at IS NOT NULL", 1), 1);
    sleep_ms(500);
    ck_assert_int_eq(count_where(&conn, "sent_at IS NULL AND dead_at IS NULL"), 2);
    exec_ok(&conn, "UPDATE outbox SET dead_at = NULL, attempts = 0 WHERE dead_at IS NOT NULL");
    exec_ok(&conn, "SELECT pg_notify(current_schema() || '_outbox', '')");
    ck_assert_int_eq(wait_count(&conn, "sent_at IS NOT NULL", 3), 3);
    outbox_relay_stop(relay);
    check_topic_count(m.boot, 3); /* key-0: 1, 2, 3, each once */
    mock_close(&m, &conn);
}
END_TEST

/*
 * The relay sleeps for a NOTIFY between rounds; one that came while its own statements ran was
 * read with their results and must still wake it. With a poll of a minute, bursts of commits
 * made while the relay works are all sent within a few seconds each, or one of them was lost.
 */
START_TEST(test_relay_wakes_for_a_notify_read_during_its_round)
{
    struct db_conn conn;
    struct mock m;
    char want[32];
    long total = 0;

    log_init("unit", LOG_ERROR);
    setup_schema(&conn);
    mock_open(&m);
    struct outbox_relay_config rc = {db_url, schema, {m.boot, "unit-relay", 5000, 2, 1, 0},
                                     500,    60000,  5000,
                                     0}; /* NOTIFY alone */
    struct outbox_relay *relay = outbox_relay_start(&rc);
    ck_assert_ptr_nonnull(relay);
    for (int burst = 0; burst < 15; burst++) {
        for (int i = 0; i < 20; i++) {
            append_padded(&conn, 4, 1, 0);
            sleep_ms(1 + i % 3);
        }
        total += 20;
        snprintf(want, sizeof want, "%ld", total);
        ck_assert_msg(wait_count(&conn, "sent_at IS NOT NULL", total) == total,
                      "burst %d: %ld of %s sent", burst, count_sent(&conn), want);
    }
    outbox_relay_stop(relay);
    mock_close(&m, &conn);
}
END_TEST

/*
 * The broker is away and a message outlives the round's wait at stop (10 s) but not the stop's
 * flush: its delivery report comes back after the round ended, and must find live memory
 * (under ASan, a freed result array shows as heap-use-after-free).
 */
START_TEST(test_relay_stop_with_reports_outstanding)
{
    struct db_conn conn;
    struct mock m;

    log_init("unit", LOG_ERROR);
    setup_schema(&conn);
    mock_open(&m);
    ck_assert_int_eq(rd_kafka_mock_broker_set_down(m.mc, 1), RD_KAFKA_RESP_ERR_NO_ERROR);
    append_events(&conn);
    struct outbox_relay_config rc = {
        db_url, schema, {m.boot, "unit-relay", 12000, 2, 1, 0}, 500, 50, 5000, 1};
    struct outbox_relay *relay = outbox_relay_start(&rc);
    ck_assert_ptr_nonnull(relay);
    sleep_ms(1000); /* the round has produced and waits for reports */
    outbox_relay_stop(relay);
    ck_assert_int_eq(count_sent(&conn), 0);
    mock_close(&m, &conn);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("outbox_relay");
    TCase *tc = tcase_create("mock_cluster");

    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_relay_marks_only_delivered);
    tcase_add_test(tc, test_relay_dead_letter_blocks_only_its_key);
    tcase_add_test(tc, test_relay_dead_letter_from_the_broker);
    tcase_add_test(tc, test_relay_large_row_goes_alone);
    tcase_add_test(tc, test_relay_stop_with_reports_outstanding);
    tcase_add_test(tc, test_relay_wakes_for_a_notify_read_during_its_round);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
