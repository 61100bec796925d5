/*
 * batch: a queue of requests and threads that serve them in batches, one round trip each.
 *
 * The hand-off is made of atomics and futexes rather than a mutex and condition variables:
 * requesters push onto a lock-free stack, a batch thread takes the whole stack in one exchange,
 * and each requester sleeps on its own item. A mutex shared by every requester and the batch
 * threads made each completion wake a thread only for it to sleep again on that mutex (glibc's
 * condition variables do not requeue), which cost two more context switches a request.
 *
 * With spare_after_us, the threads beyond the first are spares: a request queued while a
 * thread is serving a batch waits for that thread's next batch rather than waking another one,
 * unless the serving threads have made no progress for spare_after_us (a slow statement, a
 * reconnection). Every thread eager to serve at once made, at 16 clients, batches of 4 on two
 * connections where one connection serves batches of 8 in the same time, for half the
 * statements, round trips and wake-ups.
 */
#define _GNU_SOURCE /* syscall(2) */
#include "batch.h"

#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "xalloc.h"

struct batcher {
    struct batcher_config cfg;        /* strings copied */
    _Atomic(struct batch_item *) top; /* pushed items, newest first */
    atomic_uint wake;                 /* futex word of idle batch threads: bumped on new work */
    atomic_int sleepers;              /* batch threads asleep on wake */
    atomic_int pushing;               /* requesters between their stop check and their push */
    atomic_int stop;
    atomic_int serving;       /* threads holding a batch, from taking it to the next wait */
    atomic_int watching;      /* a spare sleeps with a deadline, watching the serving ones */
    atomic_llong progress_ns; /* when a batch last started or ended (spare_after_us) */
    long nthreads;
    pthread_t *threads;
};

/* Sleeps at most ns (0: no limit) while *word == expected. */
static void futex_wait_for(atomic_uint *word, unsigned expected, long long ns)
{
    struct timespec ts = {.tv_sec = (time_t)(ns / 1000000000), .tv_nsec = (long)(ns % 1000000000)};

    /* returns at once when *word != expected; spurious wake-ups are checked by the callers */
    syscall(SYS_futex, (uint32_t *)word, FUTEX_WAIT_PRIVATE, expected, ns > 0 ? &ts : NULL, NULL,
            0);
}

static void futex_wait(atomic_uint *word, unsigned expected)
{
    futex_wait_for(word, expected, 0);
}

static void futex_wake(atomic_uint *word, int n)
{
    syscall(SYS_futex, (uint32_t *)word, FUTEX_WAKE_PRIVATE, n, NULL, NULL, 0);
}

/* Takes every pushed item, oldest first; NULL when there is none. */
static struct batch_item *batch_grab(struct batcher *b)
{
    struct batch_item *it = atomic_exchange(&b->top, NULL), *fifo = NULL;

    while (it) {
        struct batch_item *next = it->next;
        it->next = fifo;
        fifo = it;
        it = next;
    }
    return fifo;
}

static long long batch_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* How long until the serving threads count as stuck (no progress for spare_after_us), in ns;
 * <= 0: they are. */
static long long batch_stuck_in(struct batcher *b)
{
    return b->cfg.spare_after_us * 1000 - (batch_now_ns() - atomic_load(&b->progress_ns));
}

/*
 * Counts this thread in b->serving if it may serve now; 1 then. It may always without spares
 * and when stopping; with spares, when no thread serves (claimed atomically, so that two idle
 * threads woken together do not both serve) or when the serving threads are stuck. Otherwise
 * *wait_ns is how long until they would count as stuck.
 */
static int batch_claim(struct batcher *b, long long *wait_ns)
{
    int none = 0;

    *wait_ns = 0;
    if (b->cfg.spare_after_us <= 0 || atomic_load(&b->stop)) {
        atomic_fetch_add(&b->serving, 1);
        return 1;
    }
    if (atomic_compare_exchange_strong(&b->serving, &none, 1))
        return 1;
    *wait_ns = batch_stuck_in(b);
    if (*wait_ns > 0)
        return 0;
    atomic_fetch_add(&b->serving, 1);
    return 1;
}

static void batch_wake_one(struct batcher *b)
{
    atomic_fetch_add(&b->wake, 1);
    futex_wake(&b->wake, 1);
}

/*
 * Waits for work; the oldest-first list, or NULL when stopping with nothing left to serve.
 * *serving tells whether this thread is counted in b->serving, and is kept up to date: a thread
 * is counted from the batch it takes until it finds nothing more to take.
 *
 * With spares, one sleeping thread watches while others serve: it sleeps with a deadline (when
 * the serving ones would count as stuck) rather than until woken, since no requester wakes
 * anyone then. The first thread to serve after none did wakes a sleeper to watch if none does.
 */
static struct batch_item *batch_wait(struct batcher *b, int *serving)
{
    for (;;) {
        unsigned seen = atomic_load(&b->wake);
        long long wait_ns = 0;
        int mine = *serving || batch_claim(b, &wait_ns);
        struct batch_item *list = mine ? batch_grab(b) : NULL;
        if (list) {
            if (!*serving && b->cfg.spare_after_us > 0 && !atomic_load(&b->watching) &&
                atomic_load(&b->sleepers) > 0)
                batch_wake_one(b);
            *serving = 1;
            return list;
        }
        if (mine) {
            /*
             * A requester that pushed while this thread was counted woke nobody: serving is
             * lowered before the queue is looked at again, as the requester pushes before it
             * reads serving, so that one of the two sees the other.
             */
            atomic_fetch_sub(&b->serving, 1);
            *serving = 0;
            if (atomic_load(&b->top))
                continue;
        }
        if (atomic_load(&b->stop)) {
            if (atomic_load(&b->pushing) == 0 && !atomic_load(&b->top))
                return NULL;
            sched_yield(); /* a requester is pushing its item: serve it too */
            continue;
        }
        /*
         * sleepers is raised before serving is read, and a thread that starts serving reads
         * sleepers after raising serving: either it wakes this one, or this one watches.
         */
        atomic_fetch_add(&b->sleepers, 1);
        int watch = 0;
        if (b->cfg.spare_after_us > 0 && atomic_load(&b->serving) > 0) {
            int no = 0;
            watch = atomic_compare_exchange_strong(&b->watching, &no, 1);
            if (watch && mine) /* batch_claim gave no deadline: this thread was counted */
                wait_ns = batch_stuck_in(b);
            if (watch && wait_ns <= 0)
                wait_ns = 1; /* stuck already: look again at once */
        }
        /* a spare that may not serve sleeps even with work queued: the serving ones take it */
        if ((!mine || !atomic_load(&b->top)) && !atomic_load(&b->stop))
            futex_wait_for(&b->wake, seen, watch ? wait_ns : 0);
        atomic_fetch_sub(&b->sleepers, 1);
        if (watch)
            atomic_store(&b->watching, 0);
    }
}

static void batch_finish(struct batch_item **items, size_t n, enum status st)
{
    for (size_t i = 0; i < n; i++) {
        if (st != STATUS_OK)
            items[i]->st = st;
        if (items[i]->done_fn) {
            items[i]->done_fn(items[i]); /* which may release the item */
            continue;
        }
        /*
         * The owner may return as soon as done is set, and its item is then gone: only the
         * futex word's address is used after, and a wake-up on a reused address is spurious.
         */
        atomic_store(&items[i]->done, 1);
        futex_wake(&items[i]->done, 1);
    }
}

static void *batch_thread(void *arg)
{
    struct batcher *b = arg;
    struct db_conn conn = {0};
    struct batch_item **items = xcalloc(b->cfg.max_batch, sizeof(struct batch_item *));
    struct batch_item *pending = NULL; /* taken, not yet served: oldest first */
    int serving = 0;                   /* counted in b->serving */

    for (;;) {
        if (!pending && !(pending = batch_wait(b, &serving)))
            break;
        atomic_store(&b->progress_ns, batch_now_ns());
        size_t n = 0;
        while (pending && n < b->cfg.max_batch) {
            items[n++] = pending;
            pending = pending->next;
        }
        /*
         * A connection the server closed while idle (a restart) is made again before the batch
         * is sent, and a read batch whose connection is lost under it runs again once.
         */
        enum status st =
            conn.conninfo ? db_conn_check(&conn)
                          : db_conn_open_session(&conn, b->cfg.conninfo, b->cfg.schema,
                                                 b->cfg.statement_timeout_ms, b->cfg.session_sql);
        if (st == STATUS_OK)
            st = b->cfg.fn(&conn, items, n, b->cfg.arg);
        batch_finish(items, n, st);
        atomic_store(&b->progress_ns, batch_now_ns());
    }
    free(items);
    db_conn_close(&conn);
    return NULL;
}

struct batcher *batcher_start(const struct batcher_config *cfg)
{
    struct batcher *b = xcalloc(1, sizeof *b);

    b->cfg = *cfg;
    b->cfg.conninfo = xstrdup(cfg->conninfo);
    b->cfg.schema = xstrdup(cfg->schema);
    b->cfg.session_sql = cfg->session_sql ? xstrdup(cfg->session_sql) : NULL;
    if (!b->cfg.max_batch)
        b->cfg.max_batch = 1;
    atomic_init(&b->top, NULL);
    /* no batch yet: a spare counts the first serving thread's time from here, not from boot */
    atomic_init(&b->progress_ns, batch_now_ns());
    b->threads = xcalloc((size_t)cfg->threads, sizeof *b->threads);
    for (long i = 0; i < cfg->threads; i++) {
        if (pthread_create(&b->threads[i], NULL, batch_thread, b) != 0)
            abort();
        b->nthreads++;
    }
    return b;
}

void batcher_stop(struct batcher *b)
{
    if (!b || atomic_exchange(&b->stop, 1))
        return;
    atomic_fetch_add(&b->wake, 1);
    futex_wake(&b->wake, INT32_MAX);
    for (long i = 0; i < b->nthreads; i++)
        pthread_join(b->threads[i], NULL);
}

void batcher_free(struct batcher *b)
{
    if (!b)
        return;
    batcher_stop(b);
    free(b->threads);
    free((char *)b->cfg.conninfo);
    free((char *)b->cfg.schema);
    free((char *)b->cfg.session_sql);
    free(b);
}

/* Queues item; 0 (nothing queued) once the batcher is stopping. */
static int batch_push(struct batcher *b, struct batch_item *item)
{
    item->st = STATUS_OK;
    atomic_init(&item->done, 0);
    /*
     * pushing is raised before stop is read, and a stopping thread reads pushing after setting
     * stop: either this request sees stop, or the batch threads wait for its push.
     */
    atomic_fetch_add(&b->pushing, 1);
    if (atomic_load(&b->stop)) {
        atomic_fetch_sub(&b->pushing, 1);
        item->st = STATUS_UNAVAILABLE;
        return 0;
    }
    struct batch_item *old = atomic_load(&b->top);
    do
        item->next = old;
    while (!atomic_compare_exchange_weak(&b->top, &old, item));
    atomic_fetch_sub(&b->pushing, 1);
    /* with spares, a serving thread takes this item with its next batch */
    if (atomic_load(&b->sleepers) > 0 &&
        (b->cfg.spare_after_us <= 0 || atomic_load(&b->serving) == 0))
        batch_wake_one(b);
    return 1;
}

enum status batcher_submit(struct batcher *b, struct batch_item *item)
{
    item->done_fn = NULL;
    if (!batch_push(b, item))
        return item->st;
    while (!atomic_load(&item->done))
        futex_wait(&item->done, 0);
    return item->st;
}

void batcher_post(struct batcher *b, struct batch_item *item, batch_done_fn done)
{
    item->done_fn = done;
    if (!batch_push(b, item))
        done(item);
}
