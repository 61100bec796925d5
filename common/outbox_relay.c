/* outbox_relay: the outbox's rows to Kafka in id order, trusting only delivery reports. */
#include "outbox.h"

#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "log.h"
#include "metrics.h"
#include "pgarray.h"
#include "xalloc.h"

DB_STMT(outbox_lock, "SELECT pg_try_advisory_xact_lock(hashtext('ptce.outbox.' ||"
                     " current_schema()))");
/*
 * No FOR UPDATE: the round's advisory lock already makes this relay the only one of its schema,
 * and a row lock would give the round a transaction id for as long as the broker takes to
 * answer (a whole outage), holding back every commit-safe list (see submission's
 * 002_commit_order.sql), which serves only changes older than every transaction in flight.
 * The round's only writes come after its delivery reports.
 */
DB_STMT(
    outbox_pending,
    "SELECT id, topic, key, payload, type FROM outbox o WHERE sent_at IS NULL AND dead_at IS NULL"
    " AND discarded_at IS NULL AND NOT EXISTS (SELECT 1 FROM outbox d WHERE d.key = o.key"
    " AND d.dead_at IS NOT NULL AND d.id < o.id)"
    " ORDER BY id LIMIT $1");
DB_STMT(outbox_mark_sent, "UPDATE outbox SET sent_at = now() WHERE id = ANY($1::bigint[])");
DB_STMT(outbox_mark_failed, "UPDATE outbox SET attempts = attempts + 1, last_error = $2,"
                            " dead_at = CASE WHEN $3::boolean THEN now() END WHERE id = $1");
/* Wakes another replica's relay, the one holding the schema's round (see outbox_round_begin). */
DB_STMT(outbox_forward, "SELECT pg_notify(current_schema() || '_outbox', '')");
DB_STMT(outbox_backlog, "SELECT count(*), count(dead_at) FROM outbox WHERE sent_at IS NULL"
                        " AND discarded_at IS NULL");

static struct metric m_published =
    METRIC_COUNTER("ptce_outbox_published_total", "Outbox events acknowledged by the broker.");
static struct metric m_failed = METRIC_COUNTER("ptce_outbox_delivery_failures_total",
                                               "Outbox events whose delivery failed (retried).");
static struct metric m_backlog =
    METRIC_GAUGE("ptce_outbox_backlog", "Outbox events not yet acknowledged by the broker.");
static struct metric m_dead_total = METRIC_COUNTER(
    "ptce_outbox_dead_letters_total", "Outbox events set aside after a permanent broker refusal.");
static struct metric m_dead =
    METRIC_GAUGE("ptce_outbox_dead_letters", "Outbox events set aside now, awaiting an operator.");

enum delivery { DELIVERY_PENDING = 0, DELIVERY_OK, DELIVERY_FAILED, DELIVERY_SKIPPED };

struct outbox_batch;

/*
 * A row over Kafka's stock message limit (about 1 MB) goes out alone for its key: a broker or
 * topic still at that limit refuses it only in its delivery report, and a later row of its key
 * produced in the same round could otherwise reach the topic before it.
 */
#define OUTBOX_ALONE_BYTES 1000000

/* One row's result cell; the delivery report writes it through the message opaque. */
struct outbox_slot {
    struct outbox_batch *batch;
    rd_kafka_resp_err_t err; /* written before state */
    atomic_int state;        /* enum delivery */
    int holds_key;           /* the later rows of its key wait for the next round */
};

/*
 * The results of one round. It lives until the round and every message produced in it let
 * go of it: a delivery report that comes back after the round gave up waiting (the broker
 * stayed away past the wait, or the relay is stopping) still writes into live memory, and
 * the last reference frees it.
 */
struct outbox_batch {
    atomic_int refs; /* the round's own, plus one per message whose report is awaited */
    int n;
    struct outbox_slot slots[];
};

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
    long statement_timeout_ms;
    int backlog_counted;         /* the gauges were counted once */
    struct timespec backlog_due; /* and may be counted again from then */
    int wake_fd;                 /* outbox_wake_open's: this process's commits, -1: none */
    int woken;                   /* a commit of this process woke the relay since its last round */
};

/*
 * The pending rows are found through the partial index outbox_pending, which keeps an entry for
 * every row sent since the table's last vacuum (sending changes sent_at, which the index's
 * predicate reads). A bitmap scan, the plan the statistics of a growing queue lead to, visits
 * the heap behind each of those entries on every round: 12 ms per round after 10 000 rows in
 * make bench. A plain index scan marks the entries of rows dead to every transaction as such
 * (kill_prior_tuple) and skips them afterwards, and stops at the round's LIMIT. So the relay's
 * own connection never plans a bitmap scan.
 */
/*
 * The relay's own commits (rows marked sent, attempts counted) do not wait for their WAL flush:
 * a mark lost with a crash of the server only sends its row again, which every consumer's inbox
 * absorbs, while a round that waits for the flush holds back every commit behind it.
 */
#define OUTBOX_SESSION_SQL "SET enable_bitmapscan = off; SET synchronous_commit = off"
#define OUTBOX_BACKLOG_EVERY_MS 1000

static struct outbox_batch *outbox_batch_new(int n)
{
    struct outbox_batch *b = xcalloc(1, sizeof *b + (size_t)n * sizeof b->slots[0]);

    atomic_init(&b->refs, 1);
    b->n = n;
    for (int i = 0; i < n; i++) {
        b->slots[i].batch = b;
        atomic_init(&b->slots[i].state, DELIVERY_PENDING);
    }
    return b;
}

static void outbox_batch_release(struct outbox_batch *b)
{
    if (atomic_fetch_sub(&b->refs, 1) == 1)
        free(b);
}

static void outbox_dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque)
{
    struct outbox_slot *slot = msg->_private; /* the per-row result cell of its round */

    (void)rk;
    (void)opaque;
    if (msg->err) {
        log_event(LOG_WARN, "outbox.delivery_failed", "{s:s}", "error", rd_kafka_err2str(msg->err));
        slot->err = msg->err;
        atomic_store(&slot->state, DELIVERY_FAILED);
    } else {
        atomic_store(&slot->state, DELIVERY_OK);
    }
    outbox_batch_release(slot->batch);
}

/* Produces one row, waiting while librdkafka's queue is full; the error when it was refused. */
static rd_kafka_resp_err_t outbox_produce(struct outbox_relay *relay, const char *topic,
                                          const char *key, const char *payload, const char *type,
                                          struct outbox_slot *slot)
{
    for (;;) {
        rd_kafka_resp_err_t err = rd_kafka_producev(
            relay->producer, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(key, strlen(key)),
            RD_KAFKA_V_VALUE((void *)payload, strlen(payload)),
            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
            /*
             * The CloudEvents Kafka binding, structured mode: the value is the whole event. The
             * type again as a ce_type header, binary mode's name for it: a consumer that routes
             * by type skips what it does not handle without parsing the value (inbox.c).
             */
            RD_KAFKA_V_HEADER("content-type", "application/cloudevents+json", -1),
            RD_KAFKA_V_HEADER("ce_type", type, -1), RD_KAFKA_V_OPAQUE(slot), RD_KAFKA_V_END);
        if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL) {
            if (err)
                log_event(LOG_ERROR, "outbox.produce_failed", "{s:s, s:s, s:i}", "topic", topic,
                          "error", rd_kafka_err2str(err), "bytes", (int)strlen(payload));
            return err;
        }
        rd_kafka_poll(relay->producer, 100);
    }
}

/* Waits for every delivery report of the round; bounded by the message timeout. */
static void outbox_await_reports(struct outbox_relay *relay, struct outbox_batch *b)
{
    long waited = 0, limit = relay->kafka.message_timeout_ms + 5000;

    while (atomic_load(&b->refs) > 1 && waited < limit) {
        if (atomic_load(&relay->stop) && waited >= 10000)
            break; /* shutting down: unacknowledged rows stay unsent for the next start */
        rd_kafka_poll(relay->producer, 100);
        waited += 100;
    }
}

/* 1 when a row before i in the round has the same key and holds it. */
static int outbox_key_held(PGresult *r, const struct outbox_batch *b, int i)
{
    const char *key = PQgetvalue(r, i, 2);

    for (int j = 0; j < i; j++) {
        if (b->slots[j].holds_key && strcmp(PQgetvalue(r, j, 2), key) == 0)
            return 1;
    }
    return 0;
}

/*
 * Produces the round's rows. A row refused at once, or too large to be sure of the broker,
 * holds its key: the later rows of that key are skipped until the next round.
 */
static void outbox_produce_all(struct outbox_relay *relay, PGresult *r, struct outbox_batch *b)
{
    int holding = 0; /* rows holding their key so far: only then is a key looked up */

    for (int i = 0; i < b->n; i++) {
        struct outbox_slot *slot = &b->slots[i];
        const char *payload = PQgetvalue(r, i, 3);
        if (holding > 0 && outbox_key_held(r, b, i)) {
            atomic_store(&slot->state, DELIVERY_SKIPPED);
            continue;
        }
        atomic_fetch_add(&b->refs, 1);
        rd_kafka_resp_err_t err = outbox_produce(relay, PQgetvalue(r, i, 1), PQgetvalue(r, i, 2),
                                                 payload, PQgetvalue(r, i, 4), slot);
        if (err) {
            atomic_fetch_sub(&b->refs, 1); /* no report will come for it */
            slot->err = err;
            atomic_store(&slot->state, DELIVERY_FAILED);
        }
        slot->holds_key = err || strlen(payload) > OUTBOX_ALONE_BYTES;
        holding += slot->holds_key;
    }
}

/* What a round did with its rows. */
struct outbox_tally {
    int sent;    /* acknowledged and marked sent */
    int dead;    /* refused for good: set aside */
    int retried; /* failed for now */
    int skipped; /* held back behind a large or refused row of their key */
};

/* Records a failed delivery on its row: attempts, error, and the dead state when permanent. */
static enum status outbox_failure_record(struct outbox_relay *relay, const char *id,
                                         rd_kafka_resp_err_t err, int *dead)
{
    *dead = kafka_err_is_permanent(err);
    const char *params[] = {id, rd_kafka_err2str(err), *dead ? "true" : "false"};
    if (*dead)
        log_event(LOG_ERROR, "outbox.dead_letter", "{s:s, s:s}", "id", id, "error", params[1]);
    return db_exec(&relay->db, &outbox_mark_failed, 3, params, NULL);
}

/*
 * Marks the round's results, key by key in id order: a row is marked sent only when it and
 * every earlier row of its key in the round were acknowledged, so a key's events never
 * overtake each other; the first row of a key that failed records its failure, and the rows
 * behind it wait for a later round.
 */
static enum status outbox_settle(struct outbox_relay *relay, PGresult *r,
                                 const struct outbox_batch *b, struct outbox_tally *t)
{
    char *blocked = xcalloc((size_t)b->n + 1, 1);
    enum status st = STATUS_OK;
    struct pgarray ids;

    pgarray_init(&ids);
    for (int i = 0; i < b->n && st == STATUS_OK; i++) {
        const struct outbox_slot *slot = &b->slots[i];
        if (!blocked[i] && atomic_load(&slot->state) == DELIVERY_OK) {
            pgarray_add_text(&ids, PQgetvalue(r, i, 0));
            t->sent++;
            continue;
        }
        if (blocked[i])
            continue; /* behind a failed row of its key: waits, whatever its report said */
        if (atomic_load(&slot->state) == DELIVERY_FAILED) {
            int dead = 0;
            st = outbox_failure_record(relay, PQgetvalue(r, i, 0), slot->err, &dead);
            t->dead += dead;
            t->retried += !dead;
        } else if (atomic_load(&slot->state) == DELIVERY_SKIPPED) {
            t->skipped++; /* behind a large row of its key that went out: the next round */
        } else {
            t->retried++; /* no report came back in time */
        }
        for (int j = i + 1; j < b->n; j++)
            if (strcmp(PQgetvalue(r, j, 2), PQgetvalue(r, i, 2)) == 0)
                blocked[j] = 1;
    }
    if (st == STATUS_OK && t->sent > 0) {
        const char *params[] = {pgarray_text(&ids)};
        st = db_exec(&relay->db, &outbox_mark_sent, 1, params, NULL);
    }
    pgarray_free(&ids);
    free(blocked);
    return st;
}

/* Opens the round's transaction; 1 when this relay leads the schema, 0 when not, -1 on error. */
static int outbox_round_begin(struct outbox_relay *relay)
{
    PGresult *lock = NULL;
    enum status st = db_begin(&relay->db);

    if (st == STATUS_OK)
        st = db_exec(&relay->db, &outbox_lock, 0, NULL, &lock);
    if (st != STATUS_OK) {
        db_rollback(&relay->db); /* an aborted transaction would make every later BEGIN fail */
        return -1;
    }
    int leader = PQgetvalue(lock, 0, 0)[0] == 't';
    int woken = relay->woken;

    PQclear(lock);
    relay->woken = 0;
    if (!leader) { /* another replica is relaying this schema right now */
        db_rollback(&relay->db);
        /*
         * Woken by a commit of this process, whose appends sent no NOTIFY: tell the replica
         * that holds the round, or its rows would wait for its poll. One NOTIFY per wake-up,
         * however many commits it gathered; outside any transaction of the data's.
         */
        if (woken)
            (void)db_exec(&relay->db, &outbox_forward, 0, NULL, NULL);
    }
    return leader;
}

/*
 * One round. Returns the rows it took, or -1 when some must be retried later (the others of
 * the round are marked all the same); *again is set when rows wait for the next round.
 */
static int outbox_round(struct outbox_relay *relay, int *again)
{
    char limit[24];
    const char *params[1];
    PGresult *r = NULL;
    struct outbox_tally t = {0, 0, 0, 0};
    int leader = outbox_round_begin(relay);

    *again = 0;
    if (leader <= 0)
        return leader;
    snprintf(limit, sizeof limit, "%ld", relay->batch);
    params[0] = limit;
    if (db_exec(&relay->db, &outbox_pending, 1, params, &r) != STATUS_OK) {
        db_rollback(&relay->db);
        return -1;
    }
    struct outbox_batch *b = outbox_batch_new(PQntuples(r));
    outbox_produce_all(relay, r, b);
    outbox_await_reports(relay, b);
    enum status st = outbox_settle(relay, r, b, &t);
    if (st == STATUS_OK && b->n > 0)
        st = db_commit(&relay->db);
    else
        db_rollback(&relay->db); /* an empty round wrote nothing: no commit to count */
    int n = b->n;
    PQclear(r);
    outbox_batch_release(b); /* reports still out keep it alive until they come back */
    if (st != STATUS_OK)
        return -1; /* the broker has them; they will be sent again and deduplicated downstream */
    metric_add(&m_published, t.sent);
    metric_add(&m_dead_total, t.dead);
    if (t.retried > 0) {
        metric_add(&m_failed, t.retried);
        return -1;
    }
    *again = n == relay->batch || t.skipped > 0;
    return n;
}

/*
 * The backlog gauges, counted at most once a second (a count costs as much as a round).
 * Returns 0 when counted, or the milliseconds until the count is due.
 */
static long outbox_update_backlog(struct outbox_relay *relay)
{
    struct timespec now;
    PGresult *r;

    clock_gettime(CLOCK_MONOTONIC, &now);
    if (relay->backlog_counted && clock_ts_before(&now, &relay->backlog_due)) {
        long ms = (relay->backlog_due.tv_sec - now.tv_sec) * 1000 +
                  (relay->backlog_due.tv_nsec - now.tv_nsec) / 1000000;
        return ms > 0 ? ms : 1;
    }
    relay->backlog_counted = 1;
    clock_deadline(CLOCK_MONOTONIC, OUTBOX_BACKLOG_EVERY_MS, &relay->backlog_due);
    if (db_exec(&relay->db, &outbox_backlog, 0, NULL, &r) == STATUS_OK) {
        metric_set(&m_backlog, strtol(PQgetvalue(r, 0, 0), NULL, 10));
        metric_set(&m_dead, strtol(PQgetvalue(r, 0, 1), NULL, 10));
        PQclear(r);
    }
    return 0;
}

/* Drops the NOTIFYs libpq holds; 1 when there was one, not counting the relay's own. */
static int outbox_notified(struct outbox_relay *relay)
{
    PGnotify *n;
    int any = 0, self = PQbackendPID(relay->db.pg);

    while ((n = PQnotifies(relay->db.pg)) != NULL) {
        any |= n->be_pid != self; /* a forward (outbox_round_begin) comes back to its sender */
        PQfreemem(n);
    }
    return any;
}

/* Takes the wake-ups of this process's commits; 1 when there was one. */
static int outbox_woken(struct outbox_relay *relay)
{
    uint64_t count;

    if (relay->wake_fd < 0 || read(relay->wake_fd, &count, sizeof count) != sizeof count)
        return 0;
    relay->woken = 1;
    return 1;
}

/*
 * Sleeps until a NOTIFY arrives on the connection, a commit of this process wakes the relay
 * (outbox_wake_open), or wait_ms passes. A NOTIFY that came while the round's own statements
 * ran was read off the socket with their results: libpq holds it, and the socket stays quiet.
 * It wakes the relay at once, or the commit it announces would wait for the poll (a second, at
 * the end of a burst).
 */
static void outbox_wait_notify(struct outbox_relay *relay, long wait_ms)
{
    struct pollfd pfd[2] = {{PQsocket(relay->db.pg), POLLIN, 0}, {relay->wake_fd, POLLIN, 0}};

    PQconsumeInput(relay->db.pg); /* what is on the socket already, without waiting */
    int notified = outbox_notified(relay), woken = outbox_woken(relay);
    if (notified || woken)
        return;
    /* a negative fd is left out by poll: a relay without a socket sleeps on its wake-up alone */
    if (poll(pfd, 2, (int)wait_ms) > 0 && pfd[0].revents)
        PQconsumeInput(relay->db.pg);
    outbox_notified(relay);
    outbox_woken(relay);
}

static int outbox_connect(struct outbox_relay *relay)
{
    char listen[128];

    db_conn_close(&relay->db);
    if (db_conn_open_session(&relay->db, relay->conninfo, relay->schema,
                             relay->statement_timeout_ms, OUTBOX_SESSION_SQL) != STATUS_OK)
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
        int again;
        int n = outbox_round(relay, &again);
        /* Counted busy, idle or failing alike (a broker outage is when the backlog matters). */
        long count_due = outbox_update_backlog(relay);
        if (n < 0) {
            clock_sleep_ms(backoff);
            backoff = backoff < 5000 ? backoff * 2 : 5000;
            continue;
        }
        backoff = 100;
        if (again)
            continue; /* more may be waiting */
        /* A count skipped is made when due, if no NOTIFY comes first. */
        outbox_wait_notify(relay,
                           count_due && count_due < relay->poll_ms ? count_due : relay->poll_ms);
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
    relay->statement_timeout_ms = cfg->statement_timeout_ms;
    relay->wake_fd = cfg->wake ? outbox_wake_open() : -1;
    metrics_register(&m_published);
    metrics_register(&m_failed);
    metrics_register(&m_backlog);
    metrics_register(&m_dead_total);
    metrics_register(&m_dead);
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
        /*
         * A round that gave up waiting may still have messages out: flush serves their
         * reports, then whatever the broker did not answer is purged, which reports it too,
         * so that every round's results are released before destroy.
         */
        if (rd_kafka_flush(relay->producer, 5000) != RD_KAFKA_RESP_ERR_NO_ERROR) {
            rd_kafka_purge(relay->producer, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
            rd_kafka_flush(relay->producer, 2000);
        }
        rd_kafka_destroy(relay->producer);
    }
    db_conn_close(&relay->db);
    free(relay->conninfo);
    free(relay->schema);
    free(relay->brokers);
    free(relay->client_id);
    free(relay);
}
