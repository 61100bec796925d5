/* test_inbox: events from librdkafka's mock broker are applied once, in order, or set aside. */
#include <check.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "inbox.h"
#include "metrics.h"
#include "outbox.h"
#include "sql_common.h"
#include "testdb.h"

#include <librdkafka/rdkafka_mock.h> /* must follow rdkafka.h, which inbox.h includes */

#define TOPIC "unit.events"

static char schema[64];
static struct db_conn conn; /* the test's own view of the schema */
static rd_kafka_t *mock_owner, *producer;
static rd_kafka_mock_cluster_t *mock;

static void setup(void)
{
    const struct migration *const lists[] = {sql_common_migrations};
    const size_t counts[] = {sql_common_migrations_count};
    char errstr[256];
    size_t applied;

    testdb_schema_create(schema, sizeof schema);
    ck_assert_int_eq(db_conn_open(&conn, testdb_url(), schema, 0), STATUS_OK);
    ck_assert_int_eq(migrate_apply(&conn, lists, counts, 1, &applied), STATUS_OK);
    ck_assert_int_eq(db_command(&conn,
                                "CREATE TABLE applied (event_id uuid PRIMARY KEY,"
                                " subject text, n serial, pid int DEFAULT pg_backend_pid())"),
                     STATUS_OK);

    rd_kafka_conf_t *conf = rd_kafka_conf_new(); /* the mock lives in a handle of its own */
    ck_assert_int_eq(rd_kafka_conf_set(conf, "log_level", "0", errstr, sizeof errstr),
                     RD_KAFKA_CONF_OK);
    mock_owner = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
    ck_assert_msg(mock_owner != NULL, "%s", errstr);
    mock = rd_kafka_mock_cluster_new(mock_owner, 1);
    ck_assert_ptr_nonnull(mock);
    ck_assert_int_eq(rd_kafka_mock_topic_create(mock, TOPIC, 1, 1), RD_KAFKA_RESP_ERR_NO_ERROR);
    conf = rd_kafka_conf_new();
    ck_assert_int_eq(rd_kafka_conf_set(conf, "bootstrap.servers",
                                       rd_kafka_mock_cluster_bootstraps(mock), errstr,
                                       sizeof errstr),
                     RD_KAFKA_CONF_OK);
    producer = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
    ck_assert_msg(producer != NULL, "%s", errstr);
}

static void teardown(void)
{
    rd_kafka_destroy(producer);
    rd_kafka_mock_cluster_destroy(mock);
    rd_kafka_destroy(mock_owner);
    db_conn_close(&conn);
    testdb_schema_drop(schema);
}

/* The handler: records the event; refuses type "unit.refused" after writing (to be undone). */
DB_STMT(q_apply, "INSERT INTO applied (event_id, subject) VALUES ($1, $2)");

/* Handler calls for the failing types below (the inbox thread runs in the test's process). */
static atomic_int broken_calls, flaky_calls, refused_publish_calls;
#define FLAKY_FAILURES 6 /* more than the 5 attempts an event gets for a lasting failure */

/* Types "unit.publish*" append two events each, "unit.first" then "unit.second", to the outbox. */
static enum status publish(struct db_conn *c, const struct cloudevent *ev)
{
    enum status st = outbox_append(c, "unit.out", "/unit", "unit.first", ev->subject,
                                   json_pack("{s:s}", "event", ev->id), NULL);

    if (st == STATUS_OK)
        st = outbox_append(c, "unit.out", "/unit", "unit.second", ev->subject,
                           json_pack("{s:s}", "event", ev->id), NULL);
    if (st == STATUS_OK && strcmp(ev->type, "unit.publish_refused") == 0) {
        atomic_fetch_add(&refused_publish_calls, 1);
        return STATUS_UNPROCESSABLE; /* after its appends, to be undone */
    }
    return st;
}

static enum status handle(struct db_conn *c, const struct cloudevent *ev, void *ud)
{
    const char *params[] = {ev->id, ev->subject};
    enum status st = db_exec(c, &q_apply, 2, params, NULL);

    (void)ud;
    if (st == STATUS_OK && strncmp(ev->type, "unit.publish", 12) == 0)
        return publish(c, ev);
    if (st == STATUS_OK && strcmp(ev->type, "unit.refused") == 0)
        return STATUS_UNPROCESSABLE;
    if (st == STATUS_OK && strcmp(ev->type, "unit.broken") == 0) {
        atomic_fetch_add(&broken_calls, 1);
        return STATUS_INTERNAL; /* a bug: no retry will help */
    }
    if (st == STATUS_OK && strcmp(ev->type, "unit.flaky") == 0 &&
        atomic_fetch_add(&flaky_calls, 1) < FLAKY_FAILURES)
        return atomic_load(&flaky_calls) % 2 ? STATUS_UNAVAILABLE : STATUS_RETRY;
    return st;
}

static struct inbox *inbox_open(void)
{
    static const char *const topics[] = {TOPIC};
    struct inbox_config cfg = {
        .conninfo = testdb_url(),
        .schema = schema,
        .kafka = {rd_kafka_mock_cluster_bootstraps(mock), "unit-inbox", 5000, 1, 1, 0},
        .group = "unit-inbox",
        .topics = topics,
        .ntopics = 1,
        .handler = handle,
    };
    struct inbox *inbox = inbox_start(&cfg);

    ck_assert_ptr_nonnull(inbox);
    return inbox;
}

/* A message, with a ce_type header when ce_type is not NULL (as outbox_relay.c sends them). */
static void produce_typed(const char *key, const char *payload, const char *ce_type)
{
    rd_kafka_headers_t *hdrs = rd_kafka_headers_new(1);

    if (ce_type)
        rd_kafka_header_add(hdrs, "ce_type", -1, ce_type, -1);
    rd_kafka_resp_err_t err = rd_kafka_producev(
        producer, RD_KAFKA_V_TOPIC(TOPIC), RD_KAFKA_V_KEY(key, strlen(key)),
        RD_KAFKA_V_VALUE((void *)payload, strlen(payload)),
        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_HEADERS(hdrs), RD_KAFKA_V_END);

    if (err)
        rd_kafka_headers_destroy(hdrs); /* only a refused message leaves them to the caller */
    ck_assert_int_eq(err, RD_KAFKA_RESP_ERR_NO_ERROR);
    ck_assert_int_eq(rd_kafka_flush(producer, 5000), RD_KAFKA_RESP_ERR_NO_ERROR);
}

static void produce(const char *key, const char *payload)
{
    rd_kafka_resp_err_t err =
        rd_kafka_producev(producer, RD_KAFKA_V_TOPIC(TOPIC), RD_KAFKA_V_KEY(key, strlen(key)),
                          RD_KAFKA_V_VALUE((void *)payload, strlen(payload)),
                          RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);

    ck_assert_int_eq(err, RD_KAFKA_RESP_ERR_NO_ERROR);
    ck_assert_int_eq(rd_kafka_flush(producer, 5000), RD_KAFKA_RESP_ERR_NO_ERROR);
}

/* An event with a request id (NULL: none). */
static void produce_event_rid(const char *id, const char *type, const char *subject,
                              const char *rid)
{
    char text[512], rid_member[96] = "";

    if (rid)
        snprintf(rid_member, sizeof rid_member, ",\"requestid\":\"%s\"", rid);
    snprintf(text, sizeof text,
             "{\"specversion\":\"1.0\",\"id\":\"%s\",\"source\":\"/unit\",\"type\":\"%s\","
             "\"subject\":\"%s\",\"data\":{}%s}",
             id, type, subject, rid_member);
    produce(subject, text);
}

static void produce_event(const char *id, const char *type, const char *subject)
{
    produce_event_rid(id, type, subject, NULL);
}

/* The first value of a query with at most one parameter, as text (static storage). */
static const char *scalar_p(const char *sql, const char *param)
{
    static char value[512];
    const char *params[] = {param};
    PGresult *r = PQexecParams(conn.pg, sql, param ? 1 : 0, NULL, params, NULL, NULL, 0);

    ck_assert_msg(PQresultStatus(r) == PGRES_TUPLES_OK, "%s: %s", sql, PQresultErrorMessage(r));
    snprintf(value, sizeof value, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    return value;
}

static const char *scalar(const char *sql)
{
    return scalar_p(sql, NULL);
}

/* Waits (20 s at most) until the event with this id has been applied. */
static void wait_applied(const char *id)
{
    static const char sql[] = "SELECT count(*) FROM applied WHERE event_id = $1::uuid";

    for (int i = 0; i < 200 && strcmp(scalar_p(sql, id), "1") != 0; i++)
        usleep(100000);
    ck_assert_msg(strcmp(scalar_p(sql, id), "1") == 0, "event %s never applied", id);
}

#define E1 "00000000-0000-4000-8000-000000000001"
#define E2 "00000000-0000-4000-8000-000000000002"
#define E3 "00000000-0000-4000-8000-000000000003"

START_TEST(test_inbox_applies_once_in_order)
{
    struct inbox *inbox = inbox_open();

    produce_event(E1, "unit.ok", "k");
    produce_event(E2, "unit.ok", "k");
    produce_event(E1, "unit.ok", "k"); /* delivered again */
    produce_event(E3, "unit.ok", "k"); /* same key, so it comes after the duplicate */
    wait_applied(E3);
    ck_assert_str_eq(scalar("SELECT string_agg(right(event_id::text, 1), ',' ORDER BY n)"
                            " FROM applied"),
                     "1,2,3");
    ck_assert_str_eq(scalar("SELECT string_agg(right(event_id::text, 1), ',' ORDER BY seq)"
                            " FROM inbox"),
                     "1,2,3");
    ck_assert_str_eq(scalar("SELECT string_agg(kafka_offset::text, ',' ORDER BY seq) FROM inbox"),
                     "0,1,3");
    ck_assert_str_eq(scalar("SELECT count(*) FROM inbox_dead_letter"), "0");
    inbox_stop(inbox);
}
END_TEST

/* A burst already in the topic is applied in a few transactions, each event once, in order. */
START_TEST(test_inbox_applies_a_burst_together)
{
    char id[64];

    for (int i = 1; i <= 40; i++) {
        snprintf(id, sizeof id, "00000000-0000-4000-8000-%012d", i);
        produce_event(id, "unit.ok", "k");
    }
    produce_event(E1, "unit.ok", "k"); /* the first again, within the burst */
    struct inbox *inbox = inbox_open();
    wait_applied("00000000-0000-4000-8000-000000000040");
    ck_assert_str_eq(scalar("SELECT count(*) FROM applied"), "40");
    ck_assert_str_eq(scalar("SELECT bool_and(right(event_id::text, 2)::int = n) FROM applied"),
                     "t");
    /* one transaction per event would give 40 distinct transaction ids */
    long xacts = strtol(scalar("SELECT count(DISTINCT xmin::text) FROM inbox"), NULL, 10);
    ck_assert_msg(xacts >= 1 && xacts <= 10, "40 events in %ld transactions", xacts);
    inbox_stop(inbox);
}
END_TEST

/*
 * Failures inside a burst: the events around them are applied, each failing one is handled as
 * alone (refused: set aside at once; broken: 5 calls in all, the batch's one among them).
 */
START_TEST(test_inbox_burst_with_failures)
{
    produce_event(E1, "unit.ok", "k");
    produce_event(E2, "unit.broken", "k");
    produce_event("00000000-0000-4000-8000-000000000004", "unit.refused", "k");
    produce_event(E3, "unit.ok", "k");
    atomic_store(&broken_calls, 0);
    struct inbox *inbox = inbox_open();
    wait_applied(E3);
    ck_assert_int_eq(atomic_load(&broken_calls), 5);
    ck_assert_str_eq(scalar("SELECT string_agg(right(event_id::text, 1), ',' ORDER BY n)"
                            " FROM applied"),
                     "1,3");
    ck_assert_str_eq(scalar("SELECT string_agg(format('%s/%s', kafka_offset, attempts), ','"
                            " ORDER BY kafka_offset) FROM inbox_dead_letter"),
                     "1/5,2/1");
    inbox_stop(inbox);
}
END_TEST

/* The id of the i-th event of a burst, and its key: two keys, interleaved. */
static void burst_id(char *id, size_t len, int i)
{
    snprintf(id, len, "00000000-0000-4000-8000-%012d", i);
}
#define BURST_KEY(i) ((i) % 2 ? "k1" : "k2")

/*
 * The outbox holds, in id order, "unit.first" then "unit.second" for each event 1..last of a
 * burst but `missing`, with the event's key, request id and id.
 */
static void check_burst_outbox(int last, int missing)
{
    PGresult *r = PQexec(conn.pg, "SELECT type, key, payload::json->>'requestid',"
                                  " payload::json->'data'->>'event' FROM outbox ORDER BY id");
    char id[64], rid[32];
    int row = 0;

    ck_assert_int_eq(PQresultStatus(r), PGRES_TUPLES_OK);
    for (int i = 1; i <= last; i++) {
        if (i == missing)
            continue;
        burst_id(id, sizeof id, i);
        snprintf(rid, sizeof rid, "req-%d", i);
        for (int k = 0; k < 2; k++, row++) {
            ck_assert_int_lt(row, PQntuples(r));
            ck_assert_str_eq(PQgetvalue(r, row, 0), k ? "unit.second" : "unit.first");
            ck_assert_str_eq(PQgetvalue(r, row, 1), BURST_KEY(i));
            ck_assert_str_eq(PQgetvalue(r, row, 2), rid);
            ck_assert_str_eq(PQgetvalue(r, row, 3), id);
        }
    }
    ck_assert_int_eq(PQntuples(r), row);
    PQclear(r);
}

/*
 * The statements of the batches (transactions of more than one event): the inbox rows of one
 * were recorded by one statement, its outbox rows written by one statement, in the same
 * transaction as their events. Returns how many batches there were.
 */
static long check_batch_statements(void)
{
    ck_assert_str_eq(scalar("SELECT count(*) FROM (SELECT 1 FROM inbox GROUP BY xmin::text"
                            " HAVING count(DISTINCT cmin::text) > 1) b"),
                     "0");
    ck_assert_str_eq(scalar("SELECT count(*) FROM (SELECT 1 FROM outbox WHERE xmin::text IN"
                            " (SELECT xmin::text FROM inbox GROUP BY 1 HAVING count(*) > 1)"
                            " GROUP BY xmin::text HAVING count(DISTINCT cmin::text) > 1) b"),
                     "0");
    ck_assert_str_eq(scalar("SELECT count(*) FROM outbox o JOIN inbox i"
                            " ON i.event_id = (o.payload::json->'data'->>'event')::uuid"
                            " WHERE o.xmin::text <> i.xmin::text"),
                     "0");
    return strtol(scalar("SELECT count(*) FROM (SELECT 1 FROM inbox GROUP BY xmin::text"
                         " HAVING count(*) > 1) b"),
                  NULL, 10);
}

/*
 * Produces events 1..last of a burst, "unit.publish" but `refused` ("unit.publish_refused"),
 * each with request id "req-<i>"; event `again` is delivered twice in a row (0: none).
 */
static void produce_burst(int last, int again, int refused)
{
    char id[64], rid[32];

    for (int i = 1; i <= last; i++) {
        burst_id(id, sizeof id, i);
        snprintf(rid, sizeof rid, "req-%d", i);
        for (int k = 0; k < (i == again ? 2 : 1); k++)
            produce_event_rid(id, i == refused ? "unit.publish_refused" : "unit.publish",
                              BURST_KEY(i), rid);
    }
}

/* Starts an inbox on the burst already produced, waits for its last event, stops it. */
static void apply_burst(int last)
{
    char id[64];
    struct inbox *inbox = inbox_open();

    burst_id(id, sizeof id, last);
    wait_applied(id);
    inbox_stop(inbox);
}

/*
 * A burst whose handlers append to the outbox, one event delivered twice in a row: each is
 * applied once, by its first delivery, and the outbox holds their events in append order,
 * each with its event's request id; the batch costs one inbox and one outbox statement.
 */
START_TEST(test_inbox_batch_records_and_publishes_together)
{
    char id[64];
    struct buf m;

    produce_burst(30, 15, 0); /* event 15 at offsets 14 and 15 */
    apply_burst(30);
    ck_assert_str_eq(scalar("SELECT count(*) FROM applied"), "30");
    ck_assert_str_eq(scalar("SELECT bool_and(right(event_id::text, 2)::int = n) FROM applied"),
                     "t");
    burst_id(id, sizeof id, 15);
    ck_assert_str_eq(scalar_p("SELECT kafka_offset FROM inbox WHERE event_id = $1::uuid", id),
                     "14");
    /* the two deliveries came in one batch: the events around them share its transaction */
    ck_assert_str_eq(scalar("SELECT count(DISTINCT xmin::text) FROM inbox"
                            " WHERE kafka_offset IN (13, 16)"),
                     "1");
    check_burst_outbox(30, 0);
    ck_assert_int_ge(check_batch_statements(), 1);
    buf_init(&m, 0);
    metrics_render(&m);
    ck_assert_msg(strstr(m.data, "ptce_inbox_applied_total 30\n") != NULL, "%s", m.data);
    ck_assert_msg(strstr(m.data, "ptce_inbox_duplicates_total 1\n") != NULL, "%s", m.data);
    buf_free(&m);
}
END_TEST

/*
 * A handler that fails after its appends in a batch: the batch leaves no outbox row, the
 * one-by-one pass applies the others (their events once each, in order) and sets it aside.
 */
START_TEST(test_inbox_batch_failure_leaves_no_outbox_rows)
{
    produce_burst(20, 0, 11);
    atomic_store(&refused_publish_calls, 0);
    apply_burst(20);
    /* once in the batch, once alone, where it was set aside */
    ck_assert_int_eq(atomic_load(&refused_publish_calls), 2);
    ck_assert_str_eq(scalar("SELECT format('%s/%s', kafka_offset, attempts)"
                            " FROM inbox_dead_letter"),
                     "10/1");
    ck_assert_str_eq(scalar("SELECT count(*) FROM applied"), "19");
    check_burst_outbox(20, 11);
    check_batch_statements();
}
END_TEST

START_TEST(test_inbox_dead_letters)
{
    struct inbox *inbox = inbox_open();

    produce("k", "this is not JSON");
    produce_event("not-a-uuid", "unit.ok", "k");
    produce_event(E1, "unit.refused", "k");
    produce_event(E2, "unit.ok", "k");
    wait_applied(E2);
    ck_assert_str_eq(scalar("SELECT string_agg(kafka_offset::text, ',' ORDER BY kafka_offset)"
                            " FROM inbox_dead_letter"),
                     "0,1,2");
    ck_assert_str_eq(scalar("SELECT payload FROM inbox_dead_letter WHERE kafka_offset = 0"),
                     "this is not JSON");
    /* The refused event's own writes were rolled back with its inbox row. */
    ck_assert_str_eq(scalar("SELECT count(*) FROM applied"), "1");
    ck_assert_str_eq(scalar("SELECT count(*) FROM inbox"), "1");
    inbox_stop(inbox);
}
END_TEST

START_TEST(test_inbox_sets_aside_a_lasting_failure)
{
    struct inbox *inbox = inbox_open();

    produce_event(E1, "unit.broken", "k");
    produce_event(E2, "unit.ok", "k"); /* same partition: it waits until E1 is done with */
    wait_applied(E2);
    ck_assert_int_eq(atomic_load(&broken_calls), 5);
    ck_assert_str_eq(scalar("SELECT format('%s/%s/%s', kafka_offset, attempts, last_status)"
                            " FROM inbox_dead_letter"),
                     "0/5/internal");
    ck_assert_str_eq(scalar("SELECT count(*) FROM applied"), "1");
    ck_assert_str_eq(scalar("SELECT count(*) FROM inbox"), "1");
    inbox_stop(inbox);
}
END_TEST

START_TEST(test_inbox_retries_a_transient_failure)
{
    struct inbox *inbox = inbox_open();

    produce_event(E1, "unit.flaky", "k");
    wait_applied(E1); /* after FLAKY_FAILURES transient failures, well past 5 attempts */
    ck_assert_int_eq(atomic_load(&flaky_calls), FLAKY_FAILURES + 1);
    ck_assert_str_eq(scalar("SELECT count(*) FROM inbox_dead_letter"), "0");
    ck_assert_str_eq(scalar("SELECT count(*) FROM inbox"), "1");
    inbox_stop(inbox);
}
END_TEST

/* The offset group "unit-inbox" committed for partition 0 of TOPIC. */
static long committed_offset(void)
{
    char errstr[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();

    ck_assert_int_eq(rd_kafka_conf_set(conf, "bootstrap.servers",
                                       rd_kafka_mock_cluster_bootstraps(mock), errstr,
                                       sizeof errstr),
                     RD_KAFKA_CONF_OK);
    ck_assert_int_eq(rd_kafka_conf_set(conf, "group.id", "unit-inbox", errstr, sizeof errstr),
                     RD_KAFKA_CONF_OK);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof errstr);
    ck_assert_msg(rk != NULL, "%s", errstr);
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(parts, TOPIC, 0);
    ck_assert_int_eq(rd_kafka_committed(rk, parts, 5000), RD_KAFKA_RESP_ERR_NO_ERROR);
    long offset = (long)parts->elems[0].offset;
    rd_kafka_topic_partition_list_destroy(parts);
    rd_kafka_destroy(rk);
    return offset;
}

START_TEST(test_inbox_stop_commits_offsets)
{
    struct inbox *inbox = inbox_open();

    produce_event(E1, "unit.ok", "k");
    produce_event(E2, "unit.ok", "k");
    wait_applied(E2);
    inbox_stop(inbox);
    /* Both messages (offsets 0 and 1) were applied: a restart resumes at offset 2. */
    ck_assert_int_eq(committed_offset(), 2);
}
END_TEST

START_TEST(test_inbox_metrics)
{
    struct inbox *inbox = inbox_open();
    struct buf b;

    produce_event(E1, "unit.ok", "k");
    produce_event(E1, "unit.ok", "k");
    produce("k", "[]");
    produce_event(E2, "unit.ok", "k");
    wait_applied(E2);
    inbox_stop(inbox);
    buf_init(&b, 0);
    metrics_render(&b);
    ck_assert_msg(strstr(b.data, "ptce_inbox_applied_total 2\n") != NULL, "%s", b.data);
    ck_assert_msg(strstr(b.data, "ptce_inbox_duplicates_total 1\n") != NULL, "%s", b.data);
    ck_assert_msg(strstr(b.data, "ptce_inbox_dead_letters_total 1\n") != NULL, "%s", b.data);
    buf_free(&b);
}
END_TEST

START_TEST(test_inbox_recovers_from_failed_apply)
{
    /* While the table is away, each attempt fails inside its transaction; it must not stay stuck.
     */
    ck_assert_int_eq(db_command(&conn, "ALTER TABLE inbox RENAME TO inbox_away"), STATUS_OK);
    struct inbox *inbox = inbox_open();
    produce_event(E1, "unit.ok", "k");
    sleep(5); /* the group forms, then the first attempts fail */
    ck_assert_str_eq(scalar("SELECT count(*) FROM applied"), "0");
    ck_assert_int_eq(db_command(&conn, "ALTER TABLE inbox_away RENAME TO inbox"), STATUS_OK);
    wait_applied(E1);
    ck_assert_str_eq(scalar("SELECT count(*) FROM inbox"), "1");
    inbox_stop(inbox);
}
END_TEST

/* ---- dispatch by event type ---- */

static int calls_a, calls_b;

static enum status route_a(struct db_conn *c, const struct cloudevent *ev, void *ud)
{
    (void)c;
    (void)ev;
    calls_a += ud == (void *)&calls_a;
    return STATUS_OK;
}

static enum status route_b(struct db_conn *c, const struct cloudevent *ev, void *ud)
{
    (void)c;
    (void)ev;
    (void)ud;
    calls_b++;
    return STATUS_NOT_FOUND;
}

START_TEST(test_inbox_dispatch_by_type)
{
    static const struct inbox_route routes[] = {{"t.a", route_a}, {"t.b", route_b}};
    struct cloudevent ev;
    struct buf m;

    memset(&ev, 0, sizeof ev);
    ev.type = "t.a";
    ck_assert_int_eq(inbox_dispatch(routes, 2, NULL, &ev, &calls_a), STATUS_OK);
    ev.type = "t.b";
    ck_assert_int_eq(inbox_dispatch(routes, 2, NULL, &ev, NULL), STATUS_NOT_FOUND);
    ev.type = "t.unknown";
    ck_assert_int_eq(inbox_dispatch(routes, 2, NULL, &ev, NULL), STATUS_OK);
    ck_assert_int_eq(inbox_dispatch(routes, 2, NULL, &ev, NULL), STATUS_OK);
    ck_assert_int_eq(calls_a, 1);
    ck_assert_int_eq(calls_b, 1);
    /* The skipped ones are counted (the metric is registered when an inbox starts). */
    struct inbox *inbox = inbox_open();
    buf_init(&m, 0);
    metrics_render(&m);
    ck_assert_msg(strstr(m.data, "ptce_inbox_events_skipped_total 2"), "%s", m.data);
    buf_free(&m);
    inbox_stop(inbox);
}
END_TEST

/*
 * With routes, a message whose ce_type header names a type no route takes is skipped unread:
 * its value, not even JSON here, is no dead letter. A routed type's header, or no header, leaves
 * the value to decide: the routed event is applied, the unparsable one without a header set aside.
 */
START_TEST(test_inbox_skips_by_the_type_header)
{
    static const char *const topics[] = {TOPIC};
    static const struct inbox_route routes[] = {{"unit.ok", handle}};
    struct inbox_config cfg = {
        .conninfo = testdb_url(),
        .schema = schema,
        .kafka = {rd_kafka_mock_cluster_bootstraps(mock), "unit-inbox", 5000, 1, 1, 0},
        .group = "unit-inbox",
        .topics = topics,
        .ntopics = 1,
        .routes = routes,
        .nroutes = 1,
    };
    struct inbox *inbox = inbox_start(&cfg);
    char text[512];

    ck_assert_ptr_nonnull(inbox);
    produce_typed("k", "not JSON: never parsed", "unit.other");
    produce("k", "not JSON, no header");
    snprintf(text, sizeof text,
             "{\"specversion\":\"1.0\",\"id\":\"%s\",\"source\":\"/unit\",\"type\":"
             "\"unit.ok\",\"subject\":\"k\",\"data\":{}}",
             E1);
    produce_typed("k", text, "unit.ok");
    wait_applied(E1);
    ck_assert_str_eq(scalar("SELECT string_agg(kafka_offset::text, ',') FROM inbox_dead_letter"),
                     "1");
    ck_assert_str_eq(scalar("SELECT count(*) FROM inbox"), "1");
    inbox_stop(inbox);
}
END_TEST

#define WIDE "unit.wide"

/*
 * Two members of the group in one process share a topic's partitions, each on its own
 * connection: events come in over several keys until both members have applied some (their
 * assignment settles after a rebalance), and every event is applied once, in order per key.
 */
START_TEST(test_inbox_members_share_the_partitions)
{
    static const char *const topics[] = {WIDE};
    char id[64], key[16], text[512];
    int produced = 0;

    ck_assert_int_eq(rd_kafka_mock_topic_create(mock, WIDE, 4, 1), RD_KAFKA_RESP_ERR_NO_ERROR);
    struct inbox_config cfg = {
        .conninfo = testdb_url(),
        .schema = schema,
        .kafka = {rd_kafka_mock_cluster_bootstraps(mock), "unit-inbox", 5000, 1, 1, 0},
        .group = "unit-wide",
        .topics = topics,
        .ntopics = 1,
        .handler = handle,
        .consumers = 2,
    };
    struct inbox *inbox = inbox_start(&cfg);
    ck_assert_ptr_nonnull(inbox);
    for (int round = 0; round < 60 && produced < 2000; round++) {
        for (int i = 0; i < 16; i++) {
            produced++;
            snprintf(id, sizeof id, "00000000-0000-4000-8000-%012d", produced);
            snprintf(key, sizeof key, "k%d", produced % 8);
            snprintf(text, sizeof text,
                     "{\"specversion\":\"1.0\",\"id\":\"%s\",\"source\":\"/unit\","
                     "\"type\":\"unit.ok\",\"subject\":\"%s\",\"data\":{}}",
                     id, key);
            ck_assert_int_eq(rd_kafka_producev(
                                 producer, RD_KAFKA_V_TOPIC(WIDE), RD_KAFKA_V_KEY(key, strlen(key)),
                                 RD_KAFKA_V_VALUE(text, strlen(text)),
                                 RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END),
                             RD_KAFKA_RESP_ERR_NO_ERROR);
        }
        ck_assert_int_eq(rd_kafka_flush(producer, 5000), RD_KAFKA_RESP_ERR_NO_ERROR);
        usleep(300000);
        if (strcmp(scalar("SELECT count(DISTINCT pid) FROM applied"), "2") == 0)
            break;
    }
    wait_applied(id);
    ck_assert_str_eq(scalar("SELECT count(DISTINCT pid) FROM applied"), "2");
    snprintf(text, sizeof text, "%d", produced);
    for (int i = 0; i < 100 && strcmp(scalar("SELECT count(*) FROM applied"), text) != 0; i++)
        usleep(100000);
    ck_assert_str_eq(scalar("SELECT count(*) FROM applied"), text);
    /* within a key, the order of production (the ids) is the order of application */
    ck_assert_str_eq(scalar("SELECT count(*) FROM (SELECT event_id, lag(event_id) OVER"
                            " (PARTITION BY subject ORDER BY n) AS before FROM applied) x"
                            " WHERE before > event_id"),
                     "0");
    inbox_stop(inbox);
}
END_TEST

static Suite *inbox_suite(void)
{
    Suite *s = suite_create("inbox");
    TCase *tc = tcase_create("mock");

    tcase_set_timeout(tc, 60);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_unchecked_fixture(tc, NULL, testdb_schema_sweep);
    tcase_add_test(tc, test_inbox_applies_once_in_order);
    tcase_add_test(tc, test_inbox_dead_letters);
    tcase_add_test(tc, test_inbox_applies_a_burst_together);
    tcase_add_test(tc, test_inbox_burst_with_failures);
    tcase_add_test(tc, test_inbox_batch_records_and_publishes_together);
    tcase_add_test(tc, test_inbox_batch_failure_leaves_no_outbox_rows);
    tcase_add_test(tc, test_inbox_stop_commits_offsets);
    tcase_add_test(tc, test_inbox_metrics);
    tcase_add_test(tc, test_inbox_recovers_from_failed_apply);
    tcase_add_test(tc, test_inbox_sets_aside_a_lasting_failure);
    tcase_add_test(tc, test_inbox_retries_a_transient_failure);
    tcase_add_test(tc, test_inbox_dispatch_by_type);
    tcase_add_test(tc, test_inbox_skips_by_the_type_header);
    tcase_add_test(tc, test_inbox_members_share_the_partitions);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    testdb_init();
    SRunner *sr = srunner_create(inbox_suite());

    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
