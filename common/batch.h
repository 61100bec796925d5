/*
 * batch: requests from many threads served by a few threads, each with its own database
 * connection, that take everything queued at once and answer it with one round trip.
 *
 * Under load a batch holds as many requests as arrived while the previous one ran, so the
 * database sees one statement (and for writes one WAL flush) instead of one each; an isolated
 * request is a batch of one.
 */
#ifndef PTCE_BATCH_H
#define PTCE_BATCH_H

#include <stdatomic.h>
#include <stddef.h>

#include "db.h"
#include "status.h"

struct batch_item;

/* Told on a batch thread that item was served (item->st set); item may be released then. */
typedef void (*batch_done_fn)(struct batch_item *item);

/* One request. The requester owns it and fills `in`; the batch function `out`. */
struct batch_item {
    const void *in;
    void *out;
    enum status st;
    /* private */
    batch_done_fn done_fn; /* batcher_post's; NULL: a waiting batcher_submit */
    struct batch_item *next;
    atomic_uint done; /* a futex word: 0 while queued, 1 once served */
};

/*
 * Serves items[0..n) on conn: sets each item's out and st. A status other than STATUS_OK is
 * given to every item of the batch (whatever the function set). Before each batch the
 * connection is checked (db_conn_check) and made again if the server dropped it, so that a
 * restart of the server costs no batch; the batch's first statement is retried as db_exec says.
 */
typedef enum status (*batch_fn)(struct db_conn *conn, struct batch_item **items, size_t n,
                                void *arg);

struct batcher;

struct batcher_config {
    const char *conninfo;
    const char *schema;
    long statement_timeout_ms; /* of each batch's statements; 0: the server's (none) */
    const char *session_sql;   /* run on each new connection (NULL: nothing), e.g. a SET */
    long threads;
    size_t max_batch;
    /*
     * 0: every idle thread takes what is queued at once. > 0: while a thread serves a batch, the
     * others are spares that take what is queued only once the serving threads have neither
     * started nor ended a batch for this many microseconds; until then queued requests wait for
     * the serving thread's next batch (fewer, larger batches at moderate load).
     */
    long spare_after_us;
    batch_fn fn;
    void *arg;
};

/* Starts cfg->threads threads that call fn with batches of at most max_batch items. */
struct batcher *batcher_start(const struct batcher_config *cfg);
/*
 * Serves what is queued, then stops the threads; a request made from then on gets
 * STATUS_UNAVAILABLE. A second call is a no-op, and so is NULL.
 */
void batcher_stop(struct batcher *b);
/* Stops b if need be, then releases it: nobody may use b any more. NULL is a no-op. */
void batcher_free(struct batcher *b);

/*
 * Queues item and waits until a batch has served it; returns item->st. STATUS_UNAVAILABLE once
 * the batcher is stopping.
 */
enum status batcher_submit(struct batcher *b, struct batch_item *item);

/*
 * Queues item and returns at once: done(item) is called on a batch thread once a batch has
 * served it, or at once on this thread with STATUS_UNAVAILABLE once the batcher is stopping.
 * item must stay alive until then.
 */
void batcher_post(struct batcher *b, struct batch_item *item, batch_done_fn done);

#endif
