/* outbox: append in the caller's transaction; relay to Kafka, trusting only delivery reports. */
#include "outbox.h"

#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cloudevent.h"
#include "clock.h"
#include "log.h"
#include "metrics.h"
#include "xalloc.h"

DB_STMT(outbox_insert, "INSERT INTO outbox (event_id, topic, key, type, payload)"
                       " VALUES ($1, $2, $3, $4, $5)");
DB_STMT(outbox_lock, "SELECT pg_try_advisory_xact_lock(hashtext('ptce.outbox.' ||"
                     " current_schema()))");
DB_STMT(outbox_pending, "SELECT id, topic, key, payload FROM outbox WHERE sent_at IS NULL"
                        " ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED");
DB_STMT(outbox_mark_sent, "UPDATE outbox SET sent_at = now() WHERE id = ANY($1::bigint[])");
DB_STMT(outbox_backlog, "SELECT count(*) FROM outbox WHERE sent_at IS NULL");

static struct metric m_published =
    METRIC_COUNTER("ptce_outbox_published_total", "Outbox events acknowledged by the broker.");
static struct metric m_failed = METRIC_COUNTER("ptce_outbox_delivery_failures_total",
                                               "Outbox events whose delivery failed (retried).");
static struct metric m_backlog =
    METRIC_GAUGE("ptce_outbox_backlog", "Outbox events not yet acknowledged by the broker.");

enum status outbox_append(struct db_conn *conn, const char *topic, const char *source,
                          const char *type, const char *subject, json_t *data, char *event_id_out)
{
    char id[UUID_STR_LEN];
    json_t *ev = cloudevent_new(source, type, subject, data, log_request_id(), id);
    char *payload = json_dumps(ev, JSON_COMPACT);

    json_decref(ev);
    if (!payload)
        return STATUS_INTERNAL;
    const char *params[] = {id, topic, subject, type, payload};
    enum status st = db_exec(conn, &outbox_insert, 5, params, NULL);
    free(payload);
    if (st == STATUS_OK && event_id_out)
        memcpy(event_id_out, id, UUID_STR_LEN);
    return st;
}

/* ---- the relay ---- */

enum delivery { DELIVERY_PENDING = 0, DELIVERY_OK, DELIVERY_FAILED };

struct outbox_relay {
    char *conninfo;
    char *schema;
    char *brokers;
    char *client_id;
    struct kafka_config kafka;
    long batch;
    long poll_ms;
    pthread_t thread;
    atomic_int stop;
    rd_kafka_t *producer;
    struct db_conn db;
    atomic_int pending; /* delivery reports still awaited in this round */
};

static void outbox_dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque)
{
    struct outbox_relay *relay = opaque;
    enum delivery *slot = msg->_private; /* the per-row result cell of this round */

    (void)rk;
    if (msg->err) {
        log_event(LOG_WARN, "outbox.delivery_failed", "{s:s}", "error", rd_kafka_err2str(msg->err));
        *slot = DELIVERY_FAILED;
    } else {
        *slot = DELIVERY_OK;
    }
    atomic_fetch_sub(&relay->pending, 1);
}

/* Produces one row, waiting while librdkafka's queue is full. */
static int outbox_produce(struct outbox_relay *relay, const char *topic, const char *key,
                          const char *payload, enum delivery *slot)
{
    for (;;) {
        rd_kafka_resp_err_t err = rd_kafka_producev(
            relay->producer, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(key, strlen(key)),
            RD_KAFKA_V_VALUE((void *)payload, strlen(payload)),
            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
            /* The CloudEvents Kafka binding, structured mode: the value is the whole event. */
            RD_KAFKA_V_HEADER("content-type", "application/cloudevents+json", -1),
            RD_KAFKA_V_OPAQUE(slot), RD_KAFKA_V_END);
        if (err == RD_KAFKA_RESP_ERR_NO_ERROR)
            return 0;
        if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL) {
            log_event(LOG_ERROR, "outbox.produce_failed", "{s:s, s:s}", "topic", topic, "error",
                      rd_kafka_err2str(err));
            return -1;
        }
        rd_kafka_poll(relay->producer, 100);
    }
}

/* Waits for every delivery report of the round; bounded by the message timeout. */
static void outbox_await_reports(struct outbox_relay *relay)
{
    long waited = 0, limit = relay->kafka.message_timeout_ms + 5000;

    while (atomic_load(&relay->pending) > 0 && waited < limit) {
        if (atomic_load(&relay->stop) && waited >= 10000)
            break; /* shutting down: unacknowledged rows stay unsent for the next start */
        rd_kafka_poll(relay->producer, 100);
        waited += 100;
    }
}

/* Builds "{1,2,3}" from the first n ids of the result. */
static void outbox_id_array(PGresult *r, int n, struct buf *out)
{
    buf_append(out, "{", 1);
    for (int i = 0; i < n; i++)
        buf_printf(out, "%s%s", i ? "," : "", PQgetvalue(r, i, 0));
    buf_append(out, "}", 1);
}

/* One round. Returns the rows published, or -1 when the round must be retried later. */
static int outbox_round(struct outbox_relay *relay)
{
    char limit[24];
    const char *params[1];
    PGresult *r = NULL, *lock = NULL;
    enum status st = db_begin(&relay->db);

    if (st == STATUS_OK)
        st = db_exec(&relay->db, &outbox_lock, 0, NULL, &lock);
    if (st != STATUS_OK) {
        db_rollback(&relay->db); /* an aborted transaction would make every later BEGIN fail */
        return -1;
    }
    int leader = PQgetvalue(lock, 0, 0)[0] == 't';
    PQclear(lock);
    if (!leader) { /* another replica is relaying this schema right now */
        db_rollback(&relay->db);
        return 0;
    }
    snprintf(limit, sizeof limit, "%ld", relay->batch);
    params[0] = limit;
    if (db_exec(&relay->db, &outbox_pending, 1, params, &r) != STATUS_OK) {
        db_rollback(&relay->db);
        return -1;
    }

    int n = PQntuples(r), sent = 0;
    enum delivery *results = xcalloc((size_t)n, sizeof *results);
    atomic_store(&relay->pending, 0);
    for (int i = 0; i < n; i++) {
        atomic_fetch_add(&relay->pending, 1);
        if (outbox_produce(relay, PQgetvalue(r, i, 1), PQgetvalue(r, i, 2), PQgetvalue(r, i, 3),
                           &results[i]) != 0) {
            atomic_fetch_sub(&relay->pending, 1);
            results[i] = DELIVERY_FAILED;
            break;
        }
    }
    outbox_await_reports(relay);
    /* Only the unbroken run of successes counts, so a key's events never overtake each other. */
    while (sent < n && results[sent] == DELIVERY_OK)
        sent++;
    if (sent > 0) {
        struct buf ids;
        buf_init(&ids, 0);
        outbox_id_array(r, sent, &ids);
        params[0] = ids.data;
        st = db_exec(&relay->db, &outbox_mark_sent, 1, params, NULL);
        buf_free(&ids);
    }
    if (st == STATUS_OK)
        st = db_commit(&relay->db);
    else
        db_rollback(&relay->db);
    PQclear(r);
    free(results);
    if (st != STATUS_OK)
        return -1; /* the broker has them; they will be sent again and deduplicated downstream */
    metric_add(&m_published, sent);
    if (sent < n) {
        metric_add(&m_failed, n - sent);
        return -1;
    }
    return sent;
}

static void outbox_update_backlog(struct outbox_relay *relay)
{
    PGresult *r;

    if (db_exec(&relay->db, &outbox_backlog, 0, NULL, &r) == STATUS_OK) {
        metric_set(&m_backlog, strtol(PQgetvalue(r, 0, 0), NULL, 10));
        PQclear(r);
    }
}

/* Sleeps until a NOTIFY arrives on the connection or poll_ms passes. */
static void outbox_wait_notify(struct outbox_relay *relay)
{
    struct pollfd pfd = {PQsocket(relay->db.pg), POLLIN, 0};

    if (pfd.fd >= 0 && poll(&pfd, 1, (int)relay->poll_ms) > 0)
        PQconsumeInput(relay->db.pg);
    PGnotify *n;
    while ((n = PQnotifies(relay->db.pg)) != NULL)
        PQfreemem(n);
}

static int outbox_connect(struct outbox_relay *relay)
{
    char listen[128];

    db_conn_close(&relay->db);
    if (db_conn_open(&relay->db, relay->conninfo, relay->schema, 0) != STATUS_OK)
        return -1;
    snprintf(listen, sizeof listen, "LISTEN \"%s_outbox\"", relay->schema);
    return db_command(&relay->db, listen) == STATUS_OK ? 0 : -1;
}

static void *outbox_relay_main(void *arg)
{
    struct outbox_relay *relay = arg;
    long backoff = 100;

    while (!atomic_load(&relay->stop)) {
        if (!relay->db.pg || PQstatus(relay->db.pg) != CONNECTION_OK) {
            if (outbox_connect(relay) != 0) {
                clock_sleep_ms(backoff);
                backoff = backoff < 5000 ? backoff * 2 : 5000;
                continue;
            }
        }
        int n = outbox_round(relay);
        if (n < 0) {
            clock_sleep_ms(backoff);
            backoff = backoff < 5000 ? backoff * 2 : 5000;
            continue;
        }
        backoff = 100;
        if (n == relay->batch)
            continue; /* more may be waiting */
        outbox_update_backlog(relay);
        outbox_wait_notify(relay);
    }
    return NULL;
}

struct outbox_relay *outbox_relay_start(const struct outbox_relay_config *cfg)
{
    struct outbox_relay *relay = xcalloc(1, sizeof *relay);
    char errstr[512];

    relay->conninfo = xstrdup(cfg->conninfo);
    relay->schema = xstrdup(cfg->schema);
    relay->brokers = xstrdup(cfg->kafka.brokers);
    relay->client_id = xstrdup(cfg->kafka.client_id);
    relay->kafka = cfg->kafka;
    relay->kafka.brokers = relay->brokers;
    relay->kafka.client_id = relay->client_id;
    relay->batch = cfg->batch;
    relay->poll_ms = cfg->poll_ms;
    metrics_register(&m_published);
    metrics_register(&m_failed);
    metrics_register(&m_backlog);
    relay->producer = kafka_producer_new(&relay->kafka, outbox_dr_cb, relay, errstr, sizeof errstr);
    if (!relay->producer) {
        log_event(LOG_ERROR, "outbox.producer_failed", "{s:s}", "error", errstr);
        outbox_relay_stop(relay);
        return NULL;
    }
    if (pthread_create(&relay->thread, NULL, outbox_relay_main, relay) != 0)
        abort();
    return relay;
}

void outbox_relay_stop(struct outbox_relay *relay)
{
    if (!relay)
        return;
    atomic_store(&relay->stop, 1);
    if (relay->producer) {
        pthread_join(relay->thread, NULL);
        /* Every round awaited its reports; flush is a last guard before destroy. */
        rd_kafka_flush(relay->producer, 5000);
        rd_kafka_destroy(relay->producer);
    }
    db_conn_close(&relay->db);
    free(relay->conninfo);
    free(relay->schema);
    free(relay->brokers);
    free(relay->client_id);
    free(relay);
}
