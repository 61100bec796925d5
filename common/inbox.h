/* inbox: a Kafka consumer that applies each event exactly once, in order per key. */
#ifndef PTCE_INBOX_H
#define PTCE_INBOX_H

#include "cloudevent.h"
#include "db.h"
#include "kafka.h"

/*
 * Applies one event inside the open transaction of conn. Return STATUS_OK to commit,
 * STATUS_RETRY/STATUS_UNAVAILABLE (transient: a lost connection counts as such too) to roll
 * back and try the same event again later, with backoff, for as long as it takes;
 * STATUS_INVALID/STATUS_UNPROCESSABLE to roll back and set the event aside (dead letter) at
 * once; any other status (STATUS_INTERNAL, STATUS_NOT_FOUND, STATUS_CONFLICT…) rolls back and
 * is tried again, and the event is set aside after max_attempts such failures, so that the
 * partition moves on. In a batch its outbox appends are held back and written with the others'
 * just before the commit (outbox_defer_begin): it must not read the outbox back.
 */
typedef enum status (*inbox_handler_fn)(struct db_conn *conn, const struct cloudevent *ev,
                                        void *ud);

/*
 * Events in, dispatched by type: a table of these replaces one handler per service. An event
 * of a type no route names changes nothing: it is skipped before any statement (not recorded
 * in the inbox, no transaction), counted in ptce_inbox_events_skipped_total.
 */
struct inbox_route {
    const char *type; /* "dossier.decided" */
    inbox_handler_fn handler;
};

/*
 * Applies ev with the route of its type in routes (nroutes entries); an unknown type counts as
 * skipped and answers STATUS_OK. Exposed for the services' unit tests.
 */
enum status inbox_dispatch(const struct inbox_route *routes, size_t nroutes, struct db_conn *conn,
                           const struct cloudevent *ev, void *ud);

/*
 * Optional, for a batch (inbox_config.prepare): called in the batch's open transaction with its
 * fresh events, in order, before their handlers run. It may do part of their work set-based (one
 * statement for many events) and leave its results for their handlers, which must then find
 * them (per thread: each member of the inbox runs its own batches). A failure fails the batch,
 * which is then taken one event at a time without it. Called again with n == 0 once the batch
 * is over, committed or not, to drop what it left: a handler outside a batch finds nothing.
 */
typedef enum status (*inbox_prepare_fn)(struct db_conn *conn, const struct cloudevent *const *evs,
                                        size_t n, void *ud);

struct inbox_config {
    const char *conninfo;
    const char *schema;
    struct kafka_config kafka;
    const char *group;
    const char *const *topics;
    size_t ntopics;
    inbox_handler_fn handler;         /* used when routes is NULL */
    const struct inbox_route *routes; /* dispatch by type; must outlive the inbox */
    size_t nroutes;
    inbox_prepare_fn prepare; /* may be NULL */
    void *ud;
    /*
     * Fault injection for the system tests: when > 0, the process exits abruptly right after
     * the N-th commit and before that offset is stored (PTCE_FAILPOINT_INBOX_EXIT_AFTER).
     */
    long exit_after_commits;
    /* Handler failures that are not transient before the event is set aside; 0 means 5. */
    long max_attempts;
    long statement_timeout_ms; /* of the consumer's own connection; 0: none */
    /*
     * Members of the consumer group in this process, each with its own thread, Kafka consumer
     * and connection (0 means 1): the group's partitions are shared among them, so events of
     * one key stay in order while two partitions are applied at once. The handlers must then
     * be safe to run concurrently on different connections (they are transactions). At most
     * 16; the failpoint (exit_after_commits) counts every member's commits, the members then
     * taking turns.
     */
    long consumers;
};

struct inbox;

/* Starts the consumer threads. The topics array and ud must outlive the inbox. */
struct inbox *inbox_start(const struct inbox_config *cfg);

/* Stops polling, finishes the event under way, commits stored offsets, frees. */
void inbox_stop(struct inbox *inbox);

#endif
