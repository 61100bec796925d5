/* outbox: events written with the state change, published by a relay on delivery reports. */
#ifndef PTCE_OUTBOX_H
#define PTCE_OUTBOX_H

#include <jansson.h>

#include "db.h"
#include "kafka.h"

/*
 * Appends a CloudEvent to the outbox of the connection's schema, inside the caller's open
 * transaction: the event exists if and only if the caller commits. Takes the reference to
 * data. event_id_out (may be NULL) receives the event id. While conn defers its appends
 * (outbox_defer_begin) the event is built now, its id, time and request id with it, and
 * written by outbox_defer_flush.
 */
enum status outbox_append(struct db_conn *conn, const char *topic, const char *source,
                          const char *type, const char *subject, json_t *data, char *event_id_out);

/*
 * One event of outbox_append_batch. Strings borrowed; the reference to data is taken, and so is
 * data_json: the data already serialized (a JSON object's text, freed with free), for a caller
 * that holds it as text anyway (a deposit's document, which is also its answer), so that it is
 * not serialized twice. data_json, when set, is published in place of data.
 */
struct outbox_event {
    const char *type;
    const char *subject;
    json_t *data;
    const char *request_id; /* the event's "requestid", NULL: none (a batch serves many requests) */
    char *data_json;
};

/*
 * Appends events[0..n) to the outbox in that order with one statement, inside the caller's open
 * transaction, each as outbox_append would but with its own request id. Takes every data
 * reference and data_json, whatever it returns. n == 0 does nothing.
 */
enum status outbox_append_batch(struct db_conn *conn, const char *topic, const char *source,
                                struct outbox_event *events, size_t n);

/*
 * Holds back the outbox appends made on conn (outbox_append, outbox_append_batch) until
 * outbox_defer_flush writes them all with one statement, in the order of the calls: a caller
 * that runs many units of work in one transaction (the inbox's batch) pays one round trip for
 * all their events instead of one each. The rows do not exist before the flush, so nothing
 * that reads the outbox back in the transaction may run in between. Every begin ends with a
 * flush or a discard, before the commit or the rollback: db_commit aborts on appends still
 * held back. Beginning twice aborts (a bug in the caller).
 */
void outbox_defer_begin(struct db_conn *conn);

/* Writes the appends held back (none: no statement) and ends the deferral, whatever it returns. */
enum status outbox_defer_flush(struct db_conn *conn);

/* Drops the appends held back, for a transaction being rolled back, and ends the deferral. */
void outbox_defer_discard(struct db_conn *conn);

/*
 * The process's wake-up of its relay (an eventfd, made once, never closed; -1 when none can be
 * made). From the first call on, a commit through db_commit of a transaction that appended
 * events, or an append in autocommit, makes it readable, and those appends send no NOTIFY: the
 * relay that polls it is woken without the database. The relay calls it at its start.
 */
int outbox_wake_open(void);

/* ---- the relay (outbox_relay.c) ---- */

struct outbox_relay_config {
    const char *conninfo;
    const char *schema;
    struct kafka_config kafka;
    long batch;                /* rows per round */
    long poll_ms;              /* fallback wake-up when no NOTIFY arrives */
    long statement_timeout_ms; /* of the relay's own connection; 0: none */
    /*
     * 1: woken by this process's commits (outbox_wake_open), whose appends then send no NOTIFY;
     * 0: by NOTIFYs and the poll only, in rounds as large as the poll gathers.
     */
    int wake;
};

struct outbox_relay;

/*
 * Starts the relay thread: it takes unsent rows in id order (one relay active per schema at a
 * time, by a transaction-level advisory lock; no row locks), produces them with an idempotent
 * producer, and marks sent, key by key, only the unbroken run of a key's rows whose delivery
 * reports succeeded, so that a key's events keep their order. A row whose error is transient
 * (timeout, broker down…) counts an attempt and is tried again with backoff; one whose error is
 * permanent (kafka_err_is_permanent: too large, invalid record…) is set aside at once (dead_at,
 * with attempts and last_error), and the later rows of its key wait behind it until an operator
 * replays or discards it (ptce-admin outbox), while every other key keeps flowing. A row over
 * Kafka's stock 1 MB limit goes out alone for its key (the key's later rows wait a round).
 * Copies what it needs from cfg.
 */
struct outbox_relay *outbox_relay_start(const struct outbox_relay_config *cfg);

/* Finishes the round under way (its deliveries are flushed), then stops and frees. */
void outbox_relay_stop(struct outbox_relay *relay);

#endif
