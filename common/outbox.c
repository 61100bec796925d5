/* outbox: events appended in the caller's transaction, at once or held back for one statement. */
#include "outbox.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "cloudevent.h"
#include "log.h"
#include "pgarray.h"
#include "xalloc.h"

/*
 * Every append, one event or many. ORDER BY the arrays' order: the ids the events get, and so
 * the relay's order per key. $6 is 'on' when this process's relay is woken by the commit itself
 * (outbox_wake_open): the outbox's trigger (common 006) then sends no NOTIFY. A notifying commit
 * holds a database-wide lock from its commit record to its end, WAL flush included, so every
 * service's commits that notified went through their flushes one at a time. The setting is the
 * transaction's own (set_config's third argument), read by the statement's AFTER trigger; the
 * WHERE makes the planner run the volatile set_config whatever columns it reads.
 */
DB_STMT(outbox_insert_many,
        "WITH w (v) AS (SELECT set_config('ptce.outbox_wakes_relay', $6::text, true))"
        " INSERT INTO outbox (event_id, topic, key, type, payload)"
        " SELECT e.id, e.topic, e.key, e.type, e.payload FROM unnest($1::uuid[], $2::text[],"
        " $3::text[], $4::text[], $5::text[]) WITH ORDINALITY"
        " AS e (id, topic, key, type, payload, n), w WHERE w.v IS NOT NULL ORDER BY e.n");

/* The eventfd this process's relay polls (outbox_wake_open), -1 before any. */
static atomic_int outbox_wake_fd = -1;
static pthread_once_t outbox_wake_once = PTHREAD_ONCE_INIT;

/* Wakes the relay: called after a commit that appended events (db_commit's hook). */
static void outbox_wake(void)
{
    int fd = atomic_load(&outbox_wake_fd);
    uint64_t one = 1;

    if (fd >= 0 && write(fd, &one, sizeof one) < 0) {
        /* EAGAIN: the counter is full, the relay has wake-ups enough */
    }
}

static void outbox_wake_init(void)
{
    int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);

    if (fd < 0) {
        log_event(LOG_WARN, "outbox.wake_unavailable", "{s:s}", "reason",
                  "eventfd failed: commits notify the relay through the database");
        return;
    }
    atomic_store(&outbox_wake_fd, fd);
    db_set_outbox_hook(outbox_wake);
}

int outbox_wake_open(void)
{
    pthread_once(&outbox_wake_once, outbox_wake_init);
    return atomic_load(&outbox_wake_fd);
}

static const char *outbox_wakes_relay(void)
{
    return atomic_load(&outbox_wake_fd) >= 0 ? "on" : "off";
}

/*
 * Rows for outbox_insert_many, column by column in their order: a batch's, or the appends a
 * connection holds back (struct db_conn's outbox_deferred).
 */
struct outbox_rows {
    struct pgarray cols[5]; /* event ids, topics, keys, types, payloads */
    size_t n;
};

static void outbox_rows_init(struct outbox_rows *rows)
{
    for (size_t c = 0; c < 5; c++)
        pgarray_init(&rows->cols[c]);
    rows->n = 0;
}

static void outbox_rows_free(struct outbox_rows *rows)
{
    for (size_t c = 0; c < 5; c++)
        pgarray_free(&rows->cols[c]);
    rows->n = 0;
}

static void outbox_rows_add(struct outbox_rows *rows, const char *id, const char *topic,
                            const char *key, const char *type, const char *payload)
{
    pgarray_add_text(&rows->cols[0], id);
    pgarray_add_text(&rows->cols[1], topic);
    pgarray_add_text(&rows->cols[2], key);
    pgarray_add_text(&rows->cols[3], type);
    pgarray_add_text(&rows->cols[4], payload);
    rows->n++;
}

/* Writes the rows with one statement (none: nothing), in the open transaction or autocommit. */
static enum status outbox_rows_insert(struct db_conn *conn, struct outbox_rows *rows)
{
    const char *params[6];

    if (rows->n == 0)
        return STATUS_OK;
    for (size_t c = 0; c < 5; c++)
        params[c] = pgarray_text(&rows->cols[c]);
    params[5] = outbox_wakes_relay();
    enum status st = db_exec(conn, &outbox_insert_many, 6, params, NULL);
    if (st != STATUS_OK)
        return st;
    /* The rows are in: in autocommit they are committed already, in a transaction at db_commit. */
    if (conn->pg && PQtransactionStatus(conn->pg) == PQTRANS_IDLE)
        outbox_wake();
    else
        conn->outbox_appended = 1;
    return STATUS_OK;
}

/* The event's envelope as published (the caller frees it), or NULL. Takes data. */
static char *outbox_payload(const char *source, const char *type, const char *subject, json_t *data,
                            const char *request_id, char *id_out)
{
    json_t *ev = cloudevent_new(source, type, subject, data, request_id, id_out);
    char *payload = json_dumps(ev, JSON_COMPACT);

    json_decref(ev);
    return payload;
}

enum status outbox_append(struct db_conn *conn, const char *topic, const char *source,
                          const char *type, const char *subject, json_t *data, char *event_id_out)
{
    char id[UUID_STR_LEN];
    char *payload = outbox_payload(source, type, subject, data, log_request_id(), id);
    enum status st = STATUS_OK;

    if (!payload)
        return STATUS_INTERNAL;
    if (conn->outbox_deferred) {
        outbox_rows_add(conn->outbox_deferred, id, topic, subject, type, payload);
    } else {
        struct outbox_rows one;
        outbox_rows_init(&one);
        outbox_rows_add(&one, id, topic, subject, type, payload);
        st = outbox_rows_insert(conn, &one);
        outbox_rows_free(&one);
    }
    free(payload);
    if (st == STATUS_OK && event_id_out)
        memcpy(event_id_out, id, UUID_STR_LEN);
    return st;
}

/*
 * The envelope of an event whose data is already text: the envelope without its data member,
 * then `"data":` and that text spliced in before its closing brace (the members' order is no
 * part of the contract). Takes data_json.
 */
static char *outbox_payload_text(const char *source, const char *type, const char *subject,
                                 char *data_json, const char *request_id, char *id_out)
{
    json_t *ev = cloudevent_new(source, type, subject, NULL, request_id, id_out);
    json_object_del(ev, "data");
    char *head = json_dumps(ev, JSON_COMPACT);
    json_decref(ev);
    if (!head) {
        free(data_json);
        return NULL;
    }
    struct buf b;
    size_t len = strlen(head); /* "{…}": at least the seven members cloudevent_new writes */
    buf_init(&b, 0);
    buf_append(&b, head, len - 1);
    buf_append(&b, ",\"data\":", 8);
    buf_append(&b, data_json, strlen(data_json));
    buf_append(&b, "}", 1);
    free(head);
    free(data_json);
    return b.data;
}

/* Adds events[0..n) to rows as outbox_append_batch describes; takes every data reference. */
static enum status outbox_rows_add_events(struct outbox_rows *rows, const char *topic,
                                          const char *source, struct outbox_event *events, size_t n)
{
    enum status st = STATUS_OK;

    for (size_t i = 0; i < n; i++) {
        char id[UUID_STR_LEN];
        char *payload;
        if (events[i].data_json) { /* takes data_json; data, if any, is dropped */
            json_decref(events[i].data);
            payload = outbox_payload_text(source, events[i].type, events[i].subject,
                                          events[i].data_json, events[i].request_id, id);
        } else {
            payload = outbox_payload(source, events[i].type, events[i].subject, events[i].data,
                                     events[i].request_id, id); /* takes data */
        }
        if (payload)
            outbox_rows_add(rows, id, topic, events[i].subject, events[i].type, payload);
        else
            st = STATUS_INTERNAL; /* the caller rolls back: held-back rows are discarded too */
        free(payload);
    }
    return st;
}

enum status outbox_append_batch(struct db_conn *conn, const char *topic, const char *source,
                                struct outbox_event *events, size_t n)
{
    struct outbox_rows own;

    if (conn->outbox_deferred)
        return outbox_rows_add_events(conn->outbox_deferred, topic, source, events, n);
    outbox_rows_init(&own);
    enum status st = outbox_rows_add_events(&own, topic, source, events, n);
    if (st == STATUS_OK)
        st = outbox_rows_insert(conn, &own);
    outbox_rows_free(&own);
    return st;
}

void outbox_defer_begin(struct db_conn *conn)
{
    if (conn->outbox_deferred)
        abort(); /* already deferring: the first begin's flush or discard would end both */
    conn->outbox_deferred = xcalloc(1, sizeof *conn->outbox_deferred);
    outbox_rows_init(conn->outbox_deferred);
}

void outbox_defer_discard(struct db_conn *conn)
{
    if (!conn->outbox_deferred)
        return;
    outbox_rows_free(conn->outbox_deferred);
    free(conn->outbox_deferred);
    conn->outbox_deferred = NULL;
}

enum status outbox_defer_flush(struct db_conn *conn)
{
    enum status st = STATUS_OK;

    if (conn->outbox_deferred)
        st = outbox_rows_insert(conn, conn->outbox_deferred);
    outbox_defer_discard(conn);
    return st;
}
