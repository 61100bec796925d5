/* test_outbox: an event exists if and only if its transaction commits; the relay sends it on. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cloudevent.h"
#include "log.h"
#include "outbox.h"
#include "sql_common.h"
#include "testdb.h"
#include "xalloc.h"

#include <librdkafka/rdkafka_mock.h> /* must follow rdkafka.h, which outbox.h includes */

static char schema[64];
static struct db_pool *pool;

/* A fresh schema with the common migrations, and a pool of two connections on it. */
static void schema_setup(void)
{
    const struct migration *const lists[] = {sql_common_migrations};
    const size_t counts[] = {sql_common_migrations_count};
    struct db_conn *conn;
    size_t applied;

    testdb_schema_create(schema, sizeof schema);
    ck_assert_int_eq(db_pool_open(&pool, testdb_url(), schema, 4, 1000, 5000), STATUS_OK);
    ck_assert_int_eq(db_acquire(pool, &conn), STATUS_OK);
    ck_assert_int_eq(migrate_apply(conn, lists, counts, 1, &applied), STATUS_OK);
    db_release(pool, conn);
}

static void schema_teardown(void)
{
    db_pool_close(pool);
    testdb_schema_drop(schema);
}

DB_STMT(q_rows, "SELECT event_id, topic, key, type, payload, sent_at IS NULL FROM outbox"
                " ORDER BY id");

/* The outbox rows as another session sees them; the caller PQclear()s. */
static PGresult *outbox_rows(void)
{
    struct db_conn *other;
    PGresult *r;

    ck_assert_int_eq(db_acquire(pool, &other), STATUS_OK);
    ck_assert_int_eq(db_exec(other, &q_rows, 0, NULL, &r), STATUS_OK);
    db_release(pool, other);
    return r;
}

DB_STMT(q_count, "SELECT count(*) FROM outbox");
DB_STMT(q_statements, "SELECT count(DISTINCT xmin::text), count(DISTINCT cmin::text) FROM outbox");

/* The first column of the first row of stmt run on conn, as a number. */
static long count_on(struct db_conn *conn, struct db_stmt *stmt, int col)
{
    PGresult *r;

    ck_assert_int_eq(db_exec(conn, stmt, 0, NULL, &r), STATUS_OK);
    long n = strtol(PQgetvalue(r, 0, col), NULL, 10);
    PQclear(r);
    return n;
}

START_TEST(test_outbox_append_visible_only_after_commit)
{
    struct db_conn *conn;
    char id[UUID_STR_LEN] = "", why[256];
    struct cloudevent ev;

    ck_assert_int_eq(db_acquire(pool, &conn), STATUS_OK);
    log_set_request_id("req-outbox-1");
    ck_assert_int_eq(db_begin(conn), STATUS_OK);
    ck_assert_int_eq(outbox_append(conn, "submission.events", "/ptce/submission",
                                   "fr.ptce.dossier.submitted", "dossier-17",
                                   json_pack("{s:s, s:i}", "status", "submitted", "version", 2),
                                   id),
                     STATUS_OK);
    ck_assert_int_eq(uuid_is_valid(id), 1);
    PGresult *r = outbox_rows();
    ck_assert_int_eq(PQntuples(r), 0); /* not committed yet */
    PQclear(r);
    ck_assert_int_eq(db_commit(conn), STATUS_OK);
    db_release(pool, conn);

    r = outbox_rows();
    ck_assert_int_eq(PQntuples(r), 1);
    ck_assert_str_eq(PQgetvalue(r, 0, 0), id);
    ck_assert_str_eq(PQgetvalue(r, 0, 1), "submission.events");
    ck_assert_str_eq(PQgetvalue(r, 0, 2), "dossier-17"); /* the Kafka key is the subject */
    ck_assert_str_eq(PQgetvalue(r, 0, 3), "fr.ptce.dossier.submitted");
    ck_assert_str_eq(PQgetvalue(r, 0, 5), "t"); /* not sent yet */
    const char *payload = PQgetvalue(r, 0, 4);
    ck_assert_int_eq(cloudevent_parse(payload, strlen(payload), &ev, why, sizeof why), STATUS_OK);
    ck_assert_str_eq(ev.id, id);
    ck_assert_str_eq(ev.source, "/ptce/submission");
    ck_assert_str_eq(ev.type, "fr.ptce.dossier.submitted");
    ck_assert_str_eq(ev.subject, "dossier-17");
    ck_assert_str_eq(ev.request_id, "req-outbox-1");
    ck_assert_ptr_nonnull(ev.time);
    ck_assert_str_eq(json_string_value(json_object_get(ev.data, "status")), "submitted");
    ck_assert_int_eq(json_integer_value(json_object_get(ev.data, "version")), 2);
    cloudevent_clear(&ev);
    PQclear(r);
    log_set_request_id(NULL);
}
END_TEST

START_TEST(test_outbox_append_rollback_leaves_nothing)
{
    struct db_conn *conn;

    ck_assert_int_eq(db_acquire(pool, &conn), STATUS_OK);
    ck_assert_int_eq(db_begin(conn), STATUS_OK);
    ck_assert_int_eq(outbox_append(conn, "t", "/s", "x.y", "k", json_object(), NULL), STATUS_OK);
    ck_assert_int_eq(outbox_append(conn, "t", "/s", "x.y", "k", NULL, NULL), STATUS_OK);
    db_rollback(conn);
    /* held back, then discarded for the rollback */
    ck_assert_int_eq(db_begin(conn), STATUS_OK);
    outbox_defer_begin(conn);
    ck_assert_int_eq(outbox_defer_flush(conn), STATUS_OK); /* nothing held back: no statement */
    outbox_defer_begin(conn);
    ck_assert_int_eq(outbox_append(conn, "t", "/s", "x.y", "k", json_object(), NULL), STATUS_OK);
    outbox_defer_discard(conn);
    outbox_defer_discard(conn); /* ended already: nothing to do */
    db_rollback(conn);
    /* the deferral ended: written at once again */
    ck_assert_int_eq(db_begin(conn), STATUS_OK);
    ck_assert_int_eq(outbox_append(conn, "t", "/s", "x.z", "k", NULL, NULL), STATUS_OK);
    ck_assert_int_eq(count_on(conn, &q_count, 0), 1);
    ck_assert_int_eq(db_commit(conn), STATUS_OK);
    db_release(pool, conn);
    PGresult *r = outbox_rows();
    ck_assert_int_eq(PQntuples(r), 1);
    ck_assert_str_eq(PQgetvalue(r, 0, 3), "x.z");
    PQclear(r);
}
END_TEST

START_TEST(test_outbox_append_keeps_order)
{
    struct db_conn *conn;
    char ids[3][UUID_STR_LEN];

    ck_assert_int_eq(db_acquire(pool, &conn), STATUS_OK);
    ck_assert_int_eq(db_begin(conn), STATUS_OK);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(
            outbox_append(conn, "t", "/s", "x.y", "same-key", json_pack("{s:i}", "n", i), ids[i]),
            STATUS_OK);
    ck_assert_int_eq(db_commit(conn), STATUS_OK);
    db_release(pool, conn);
    PGresult *r = outbox_rows();
    ck_assert_int_eq(PQntuples(r), 3);
    for (int i = 0; i < 3; i++)
        ck_assert_str_eq(PQgetvalue(r, i, 0), ids[i]);
    ck_assert_str_ne(ids[0], ids[1]);
    PQclear(r);
}
END_TEST

/* What one outbox row should hold. */
struct expected_row {
    const char *topic, *key, *type, *source;
    const char *request_id; /* NULL: none */
};

/* Checks row i of outbox_rows() against e, its envelope too; returns its data (to json_decref). */
static json_t *check_row(PGresult *r, int i, const struct expected_row *e)
{
    struct cloudevent ev;
    char why[256];
    const char *payload = PQgetvalue(r, i, 4);

    ck_assert_str_eq(PQgetvalue(r, i, 1), e->topic);
    ck_assert_str_eq(PQgetvalue(r, i, 2), e->key);
    ck_assert_str_eq(PQgetvalue(r, i, 3), e->type);
    ck_assert_int_eq(cloudevent_parse(payload, strlen(payload), &ev, why, sizeof why), STATUS_OK);
    ck_assert_str_eq(ev.id, PQgetvalue(r, i, 0));
    ck_assert_str_eq(ev.source, e->source);
    ck_assert_str_eq(ev.type, e->type);
    ck_assert_str_eq(ev.subject, e->key);
    if (e->request_id)
        ck_assert_str_eq(ev.request_id, e->request_id);
    else
        ck_assert_ptr_null(ev.request_id);
    json_t *data = json_incref(ev.data); /* ev.data is borrowed from ev.root */
    cloudevent_clear(&ev);
    return data;
}

/* A batch's events, each with its own request id, in order and byte for byte as one by one. */
START_TEST(test_outbox_append_batch_keeps_order_and_request_ids)
{
    struct db_conn *conn;
    struct outbox_event evs[3] = {
        {"x.a", "k1", json_pack("{s:s}", "quote", "a \"b\" {c}, \\d"), "req-1", NULL},
        {"x.b", "k2", json_pack("{s:i}", "n", 2), NULL, NULL},
        {"x.c", "k1", json_pack("{s:i}", "n", 3), "req-3", NULL},
    };

    ck_assert_int_eq(db_acquire(pool, &conn), STATUS_OK);
    ck_assert_int_eq(db_begin(conn), STATUS_OK);
    ck_assert_int_eq(outbox_append_batch(conn, "t", "/s", evs, 0), STATUS_OK);
    ck_assert_int_eq(outbox_append_batch(conn, "t", "/s", evs, 3), STATUS_OK);
    ck_assert_int_eq(db_commit(conn), STATUS_OK);
    db_release(pool, conn);
    PGresult *r = outbox_rows();
    ck_assert_int_eq(PQntuples(r), 3);
    static const struct expected_row rows[] = {
        {"t", "k1", "x.a", "/s", "req-1"},
        {"t", "k2", "x.b", "/s", NULL},
        {"t", "k1", "x.c", "/s", "req-3"},
    };
    for (int i = 0; i < 3; i++) {
        json_t *data = check_row(r, i, &rows[i]);
        if (i == 0)
            ck_assert_str_eq(json_string_value(json_object_get(data, "quote")), "a \"b\" {c}, \\d");
        json_decref(data);
    }
    PQclear(r);
}
END_TEST

/*
 * An event whose data is already text (data_json) is published with that text as its data, in
 * an envelope like any other: its request id, one data member (the parse refuses duplicates),
 * escapes kept as they were; data given beside it is dropped, not leaked.
 */
START_TEST(test_outbox_append_batch_data_json)
{
    struct db_conn *conn;
    struct outbox_event evs[2] = {
        {"x.j", "k1", json_pack("{s:i}", "ignored", 1), "req-j",
         xstrdup("{\"dossier\":{\"title\":\"a \\\"b\\\" \\u00e9\",\"n\":[1,2]}}")},
        {"x.k", "k2", NULL, NULL, xstrdup("{}")},
    };

    ck_assert_int_eq(db_acquire(pool, &conn), STATUS_OK);
    ck_assert_int_eq(db_begin(conn), STATUS_OK);
    ck_assert_int_eq(outbox_append_batch(conn, "t", "/s", evs, 2), STATUS_OK);
    ck_assert_int_eq(db_commit(conn), STATUS_OK);
    db_release(pool, conn);
    PGresult *r = outbox_rows();
    ck_assert_int_eq(PQntuples(r), 2);
    static const struct expected_row rows[] = {
        {"t", "k1", "x.j", "/s", "req-j"},
        {"t", "k2", "x.k", "/s", NULL},
    };
    json_t *data = check_row(r, 0, &rows[0]);
    json_t *dossier = json_object_get(data, "dossier");
    ck_assert_str_eq(json_string_value(json_object_get(dossier, "title")), "a \"b\" \u00e9");
    ck_assert_int_eq(json_array_size(json_object_get(dossier, "n")), 2);
    ck_assert_ptr_null(json_object_get(data, "ignored"));
    json_decref(data);
    data = check_row(r, 1, &rows[1]);
    ck_assert(json_is_object(data) && json_object_size(data) == 0);
    json_decref(data);
    PQclear(r);
}
END_TEST

/* 1 when a NOTIFY reaches listener within two seconds. */
static int notified(struct db_conn *listener)
{
    for (int i = 0; i < 20; i++) {
        PQconsumeInput(listener->pg);
        PGnotify *n = PQnotifies(listener->pg);
        if (n) {
            PQfreemem(n);
            return 1;
        }
        usleep(100000);
    }
    return 0;
}

/*
 * Appends held back are built at the call (id, request id) and written by the flush, all with
 * one statement, in the order of the calls, batches and topics mixed; the relay is notified.
 */
START_TEST(test_outbox_defer_flush_writes_in_call_order)
{
    struct db_conn *conn, *listener;
    char id0[UUID_STR_LEN] = "", id3[UUID_STR_LEN] = "", listen[128];
    struct outbox_event evs[2] = {
        {"x.b", "k2", json_pack("{s:i}", "n", 1), "req-b", NULL},
        {"x.c", "k1", NULL, NULL, NULL},
    };

    ck_assert_int_eq(db_acquire(pool, &listener), STATUS_OK);
    snprintf(listen, sizeof listen, "LISTEN \"%s_outbox\"", schema);
    ck_assert_int_eq(db_command(listener, listen), STATUS_OK);
    ck_assert_int_eq(db_acquire(pool, &conn), STATUS_OK);
    ck_assert_int_eq(db_begin(conn), STATUS_OK);
    outbox_defer_begin(conn);
    log_set_request_id("req-a");
    ck_assert_int_eq(outbox_append(conn, "t1", "/s", "x.a", "k1", json_object(), id0), STATUS_OK);
    ck_assert_int_eq(uuid_is_valid(id0), 1); /* known at once, before the row exists */
    ck_assert_int_eq(outbox_append_batch(conn, "t2", "/s2", evs, 2), STATUS_OK);
    log_set_request_id("req-d");
    ck_assert_int_eq(outbox_append(conn, "t1", "/s", "x.d", "k2", NULL, id3), STATUS_OK);
    log_set_request_id(NULL);
    /* held back: not even this session sees them */
    ck_assert_int_eq(count_on(conn, &q_count, 0), 0);
    ck_assert_int_eq(outbox_defer_flush(conn), STATUS_OK);
    ck_assert_ptr_null(conn->outbox_deferred);
    ck_assert_int_eq(count_on(conn, &q_count, 0), 4);
    ck_assert_int_eq(db_commit(conn), STATUS_OK);
    ck_assert_int_eq(notified(listener), 1);
    ck_assert_int_eq(db_command(listener, "UNLISTEN *"), STATUS_OK);
    db_release(pool, listener);
    /* one transaction, one statement */
    ck_assert_int_eq(count_on(conn, &q_statements, 0), 1);
    ck_assert_int_eq(count_on(conn, &q_statements, 1), 1);
    db_release(pool, conn);

    PGresult *r = outbox_rows();
    ck_assert_int_eq(PQntuples(r), 4);
    static const struct expected_row rows[] = {
        {"t1", "k1", "x.a", "/s", "req-a"},
        {"t2", "k2", "x.b", "/s2", "req-b"},
        {"t2", "k1", "x.c", "/s2", NULL},
        {"t1", "k2", "x.d", "/s", "req-d"},
    };
    for (int i = 0; i < 4; i++)
        json_decref(check_row(r, i, &rows[i]));
    ck_assert_str_eq(PQgetvalue(r, 0, 0), id0);
    ck_assert_str_eq(PQgetvalue(r, 3, 0), id3);
    PQclear(r);
}
END_TEST

START_TEST(test_outbox_append_without_table_fails)
{
    struct db_conn conn;
    char id[UUID_STR_LEN] = "unchanged";

    /* search_path "pg_catalog" has no outbox: a failure, the data still released (ASan). */
    ck_assert_int_eq(db_conn_open(&conn, testdb_url(), "pg_catalog", 0), STATUS_OK);
    ck_assert_int_ne(outbox_append(&conn, "t", "/s", "x.y", "k", json_pack("{s:s}", "a", "b"), id),
                     STATUS_OK);
    ck_assert_str_eq(id, "unchanged");
    db_conn_close(&conn);
}
END_TEST

/*
 * ---- the relay, against librdkafka's mock broker ----
 * test_outbox_relay.c checks that only delivered rows are marked sent; these tests check the
 * NOTIFY wake-up, the order, and recovery from a failed round.
 */

#define TOPIC "unit.outbox"

static rd_kafka_t *mock_owner;
static rd_kafka_mock_cluster_t *mock;

static void mock_start(void)
{
    char errstr[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new(); /* the mock lives in a handle of its own */

    ck_assert_int_eq(rd_kafka_conf_set(conf, "log_level", "0", errstr, sizeof errstr),
                     RD_KAFKA_CONF_OK);
    mock_owner = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
    ck_assert_msg(mock_owner != NULL, "%s", errstr);
    mock = rd_kafka_mock_cluster_new(mock_owner, 1);
    ck_assert_ptr_nonnull(mock);
    ck_assert_int_eq(rd_kafka_mock_topic_create(mock, TOPIC, 1, 1), RD_KAFKA_RESP_ERR_NO_ERROR);
}

static void mock_stop(void)
{
    rd_kafka_mock_cluster_destroy(mock);
    rd_kafka_destroy(mock_owner);
}

static struct outbox_relay *relay_open(long message_timeout_ms, long poll_ms)
{
    struct outbox_relay_config cfg = {
        testdb_url(),
        schema,
        {rd_kafka_mock_cluster_bootstraps(mock), "unit-relay", message_timeout_ms, 1, 1, 0},
        10,
        poll_ms,
        5000,
        1};
    struct outbox_relay *relay = outbox_relay_start(&cfg);

    ck_assert_ptr_nonnull(relay);
    return relay;
}

/* Appends n events with key "k" in one committed transaction. */
static void append_committed(int n, char ids[][UUID_STR_LEN])
{
    struct db_conn *conn;

    ck_assert_int_eq(db_acquire(pool, &conn), STATUS_OK);
    ck_assert_int_eq(db_begin(conn), STATUS_OK);
    for (int i = 0; i < n; i++)
        ck_assert_int_eq(outbox_append(conn, TOPIC, "/unit", "unit.t", "k", NULL, ids[i]),
                         STATUS_OK);
    ck_assert_int_eq(db_commit(conn), STATUS_OK);
    db_release(pool, conn);
}

DB_STMT(q_unsent, "SELECT count(*) FROM outbox WHERE sent_at IS NULL");

static long unsent(void)
{
    struct db_conn *conn;
    PGresult *r;

    ck_assert_int_eq(db_acquire(pool, &conn), STATUS_OK);
    ck_assert_int_eq(db_exec(conn, &q_unsent, 0, NULL, &r), STATUS_OK);
    long n = strtol(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    db_release(pool, conn);
    return n;
}

/* Waits up to `seconds` for every row to be marked sent. */
static void wait_all_sent(int seconds)
{
    for (int i = 0; i < seconds * 10 && unsent() > 0; i++)
        usleep(100000);
    ck_assert_int_eq(unsent(), 0);
}

/* Reads partition 0 of TOPIC from the start; checks keys and that the ids come in this order. */
static void check_published(char ids[][UUID_STR_LEN], int n)
{
    char errstr[256], why[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    int seen = 0;

    rd_kafka_conf_set(conf, "bootstrap.servers", rd_kafka_mock_cluster_bootstraps(mock), errstr,
                      sizeof errstr);
    rd_kafka_conf_set(conf, "group.id", "unit-reader", errstr, sizeof errstr);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof errstr);
    ck_assert_msg(rk != NULL, "%s", errstr);
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(parts, TOPIC, 0)->offset = RD_KAFKA_OFFSET_BEGINNING;
    ck_assert_int_eq(rd_kafka_assign(rk, parts), RD_KAFKA_RESP_ERR_NO_ERROR);
    rd_kafka_topic_partition_list_destroy(parts);
    for (int polls = 0; seen < n && polls < 100; polls++) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
        if (!m)
            continue;
        if (!m->err) {
            struct cloudevent ev;
            ck_assert_int_eq(m->key_len, 1);
            ck_assert_int_eq(((const char *)m->key)[0], 'k');
            ck_assert_int_eq(cloudevent_parse(m->payload, m->len, &ev, why, sizeof why), STATUS_OK);
            ck_assert_str_eq(ev.id, ids[seen++]);
            /* structured mode's content type, and the type again for consumers that route */
            rd_kafka_headers_t *hdrs;
            const void *v;
            size_t size;
            ck_assert_int_eq(rd_kafka_message_headers(m, &hdrs), RD_KAFKA_RESP_ERR_NO_ERROR);
            ck_assert_int_eq(rd_kafka_header_get_last(hdrs, "content-type", &v, &size), 0);
            ck_assert_int_eq((int)size, (int)strlen("application/cloudevents+json"));
            ck_assert(memcmp(v, "application/cloudevents+json", size) == 0);
            ck_assert_int_eq(rd_kafka_header_get_last(hdrs, "ce_type", &v, &size), 0);
            ck_assert_int_eq((int)size, (int)strlen(ev.type));
            ck_assert(memcmp(v, ev.type, size) == 0);
            cloudevent_clear(&ev);
        }
        rd_kafka_message_destroy(m);
    }
    ck_assert_int_eq(seen, n);
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
}

START_TEST(test_outbox_relay_publishes_in_order)
{
    char ids[5][UUID_STR_LEN];

    mock_start();
    append_committed(3, ids);
    /* With a 5 s fallback poll, rows appended 1 s into an idle wait and sent within 2 s were
     * picked up through NOTIFY. Stopping waits for the end of the poll. */
    struct outbox_relay *relay = relay_open(5000, 5000);
    wait_all_sent(20);
    sleep(1);
    append_committed(2, ids + 3);
    wait_all_sent(2);
    outbox_relay_stop(relay);
    check_published(ids, 5);
    mock_stop();
}
END_TEST

/* The backend pid of the NOTIFY that reaches listener within two seconds, or 0. */
static int notified_by(struct db_conn *listener)
{
    for (int i = 0; i < 20; i++) {
        PQconsumeInput(listener->pg);
        PGnotify *n = PQnotifies(listener->pg);
        if (n) {
            int pid = n->be_pid;
            PQfreemem(n);
            return pid;
        }
        usleep(100000);
    }
    return 0;
}

static struct db_conn *listen_outbox(void)
{
    struct db_conn *listener;
    char listen[128];

    ck_assert_int_eq(db_acquire(pool, &listener), STATUS_OK);
    snprintf(listen, sizeof listen, "LISTEN \"%s_outbox\"", schema);
    ck_assert_int_eq(db_command(listener, listen), STATUS_OK);
    return listener;
}

/* Appends one event with key "k" on conn and commits; the backend's pid. */
static int append_one(struct db_conn *conn, char id[UUID_STR_LEN])
{
    ck_assert_int_eq(db_begin(conn), STATUS_OK);
    ck_assert_int_eq(outbox_append(conn, TOPIC, "/unit", "unit.t", "k", NULL, id), STATUS_OK);
    ck_assert_int_eq(conn->outbox_appended, 1);
    ck_assert_int_eq(db_commit(conn), STATUS_OK);
    ck_assert_int_eq(conn->outbox_appended, 0);
    return PQbackendPID(conn->pg);
}

/*
 * Once the relay runs, a commit of its process wakes it without the database: the row goes out
 * well within the 5 s poll, and no NOTIFY is sent (the commit took no database-wide lock). An
 * append in autocommit wakes it too.
 */
START_TEST(test_outbox_relay_woken_by_its_process)
{
    char ids[2][UUID_STR_LEN];
    struct db_conn *conn;

    mock_start();
    struct outbox_relay *relay = relay_open(5000, 5000);
    wait_all_sent(5); /* its first round, on an empty table */
    struct db_conn *listener = listen_outbox();
    ck_assert_int_eq(db_acquire(pool, &conn), STATUS_OK);
    sleep(1); /* the relay is in its idle wait */
    append_one(conn, ids[0]);
    wait_all_sent(2);
    ck_assert_int_eq(notified_by(listener), 0);
    ck_assert_int_eq(outbox_append(conn, TOPIC, "/unit", "unit.t", "k", NULL, ids[1]), STATUS_OK);
    ck_assert_int_eq(conn->outbox_appended, 0); /* autocommit: committed, woken at once */
    wait_all_sent(2);
    ck_assert_int_eq(notified_by(listener), 0);
    db_release(pool, conn);
    ck_assert_int_eq(db_command(listener, "UNLISTEN *"), STATUS_OK);
    db_release(pool, listener);
    outbox_relay_stop(relay);
    check_published(ids, 2);
    mock_stop();
}
END_TEST

/*
 * While another replica holds the round (its advisory lock, held here by a session of the
 * test), the woken relay cannot publish: it sends the NOTIFY the commit did not, from its own
 * session, so that the holder wakes. Once the lock is free the row goes out.
 */
START_TEST(test_outbox_relay_forwards_to_the_holder)
{
    char ids[1][UUID_STR_LEN];
    struct db_conn *conn, *holder;

    mock_start();
    struct outbox_relay *relay = relay_open(5000, 500);
    wait_all_sent(5);
    ck_assert_int_eq(db_acquire(pool, &holder), STATUS_OK);
    ck_assert_int_eq(db_begin(holder), STATUS_OK);
    ck_assert_int_eq(db_command(holder, "SELECT pg_advisory_xact_lock(hashtext('ptce.outbox.' ||"
                                        " current_schema()))"),
                     STATUS_OK);
    struct db_conn *listener = listen_outbox();
    ck_assert_int_eq(db_acquire(pool, &conn), STATUS_OK);
    int appender = append_one(conn, ids[0]);
    int from = notified_by(listener);
    ck_assert_int_ne(from, 0);
    ck_assert_int_ne(from, appender); /* the relay's, not the commit's */
    ck_assert_int_ne(from, PQbackendPID(holder->pg));
    ck_assert_int_eq(unsent(), 1); /* the holder's to send */
    db_rollback(holder);
    db_release(pool, holder);
    wait_all_sent(5); /* the relay's next poll finds the round free */
    db_release(pool, conn);
    ck_assert_int_eq(db_command(listener, "UNLISTEN *"), STATUS_OK);
    db_release(pool, listener);
    outbox_relay_stop(relay);
    check_published(ids, 1);
    mock_stop();
}
END_TEST

START_TEST(test_outbox_relay_recovers_from_failed_round)
{
    char ids[1][UUID_STR_LEN];
    struct db_conn *conn;

    /* While the table is away, rounds fail inside their transaction; they must not stay stuck. */
    mock_start();
    append_committed(1, ids);
    ck_assert_int_eq(db_acquire(pool, &conn), STATUS_OK);
    ck_assert_int_eq(db_command(conn, "ALTER TABLE outbox RENAME TO outbox_away"), STATUS_OK);
    struct outbox_relay *relay = relay_open(5000, 100);
    sleep(1);
    ck_assert_int_eq(db_command(conn, "ALTER TABLE outbox_away RENAME TO outbox"), STATUS_OK);
    db_release(pool, conn);
    wait_all_sent(15);
    outbox_relay_stop(relay);
    check_published(ids, 1);
    mock_stop();
}
END_TEST

static Suite *outbox_suite(void)
{
    Suite *s = suite_create("outbox");
    TCase *tc = tcase_create("append");

    tcase_set_timeout(tc, 60);
    tcase_add_checked_fixture(tc, schema_setup, schema_teardown);
    tcase_add_unchecked_fixture(tc, NULL, testdb_schema_sweep);
    tcase_add_test(tc, test_outbox_append_visible_only_after_commit);
    tcase_add_test(tc, test_outbox_append_rollback_leaves_nothing);
    tcase_add_test(tc, test_outbox_append_keeps_order);
    tcase_add_test(tc, test_outbox_append_batch_keeps_order_and_request_ids);
    tcase_add_test(tc, test_outbox_append_batch_data_json);
    tcase_add_test(tc, test_outbox_append_without_table_fails);
    tcase_add_test(tc, test_outbox_defer_flush_writes_in_call_order);
    tcase_add_test(tc, test_outbox_relay_publishes_in_order);
    tcase_add_test(tc, test_outbox_relay_recovers_from_failed_round);
    tcase_add_test(tc, test_outbox_relay_woken_by_its_process);
    tcase_add_test(tc, test_outbox_relay_forwards_to_the_holder);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    testdb_init();
    SRunner *sr = srunner_create(outbox_suite());

    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
