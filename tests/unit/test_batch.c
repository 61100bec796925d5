/* test_batch: requests from many threads served in batches on a real PostgreSQL connection. */
#include <check.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "batch.h"
#include "testdb.h"

static char schema[64];

static void schema_setup(void)
{
    testdb_schema_create(schema, sizeof schema);
}

static void schema_teardown(void)
{
    testdb_schema_drop(schema);
}

/* What the batch function saw, for the assertions. */
static atomic_long batches, items_served, largest;
static atomic_int fail_next;
static atomic_int backend_pid;           /* of the last batch's connection */
static atomic_int running, most_running; /* batches being served at once, and the most seen */
static atomic_int stall_next;            /* the next batch first sleeps 400 ms: a stuck statement */
static atomic_int stalling;              /* that batch has taken its items and sleeps */
static struct timespec stalled_at;       /* when it began to (written before stalling is set) */
static long spare_us;                    /* start()'s spare_after_us */

/* Doubles each item's number with one statement for the whole batch; slow enough to queue. */
static enum status double_all(struct db_conn *conn, struct batch_item **items, size_t n, void *arg)
{
    (void)arg;
    char array[8192];
    size_t len = 0;

    if (atomic_exchange(&fail_next, 0))
        return STATUS_RETRY;
    int now = atomic_fetch_add(&running, 1) + 1, most = atomic_load(&most_running);
    while (now > most && !atomic_compare_exchange_weak(&most_running, &most, now))
        ;
    if (atomic_exchange(&stall_next, 0)) {
        clock_gettime(CLOCK_MONOTONIC, &stalled_at);
        atomic_store(&stalling, 1);
        usleep(400000);
    }
    len += (size_t)snprintf(array + len, sizeof array - len, "{");
    for (size_t i = 0; i < n; i++)
        len += (size_t)snprintf(array + len, sizeof array - len, "%s%d", i ? "," : "",
                                *(const int *)items[i]->in);
    snprintf(array + len, sizeof array - len, "}");
    PGresult *r = PQexecParams(conn->pg,
                               "SELECT x * 2, pg_sleep(0.005) FROM unnest($1::int[]) WITH "
                               "ORDINALITY AS t(x, i) ORDER BY i",
                               1, NULL, (const char *[]){array}, NULL, NULL, 0);
    ck_assert_int_eq(PQresultStatus(r), PGRES_TUPLES_OK);
    ck_assert_int_eq(PQntuples(r), (int)n);
    for (size_t i = 0; i < n; i++)
        *(int *)items[i]->out = (int)strtol(PQgetvalue(r, (int)i, 0), NULL, 10);
    PQclear(r);
    atomic_store(&backend_pid, PQbackendPID(conn->pg));
    atomic_fetch_sub(&running, 1);
    atomic_fetch_add(&batches, 1);
    atomic_fetch_add(&items_served, (long)n);
    long seen = atomic_load(&largest);
    while ((long)n > seen && !atomic_compare_exchange_weak(&largest, &seen, (long)n))
        ;
    return STATUS_OK;
}

static struct batcher *start(long threads, size_t max_batch)
{
    struct batcher_config cfg = {.conninfo = testdb_url(),
                                 .schema = schema,
                                 .statement_timeout_ms = 5000,
                                 .session_sql = "SET plan_cache_mode = force_generic_plan",
                                 .threads = threads,
                                 .max_batch = max_batch,
                                 .spare_after_us = spare_us,
                                 .fn = double_all};
    atomic_store(&batches, 0);
    atomic_store(&most_running, 0);
    atomic_store(&stall_next, 0);
    atomic_store(&stalling, 0);
    atomic_store(&items_served, 0);
    atomic_store(&largest, 0);
    atomic_store(&fail_next, 0);
    return batcher_start(&cfg);
}

#define CLIENTS 32
#define ROUNDS 20

struct client {
    struct batcher *b;
    int base;
    int wrong;
};

static void *client_run(void *arg)
{
    struct client *c = arg;

    for (int k = 0; k < ROUNDS; k++) {
        int in = c->base + k, out = -1;
        struct batch_item item = {.in = &in, .out = &out};
        if (batcher_submit(c->b, &item) != STATUS_OK || out != 2 * in)
            c->wrong++;
    }
    return NULL;
}

/* CLIENTS threads of ROUNDS requests each on b; each must get its own answer. */
static void run_clients(struct batcher *b)
{
    pthread_t t[CLIENTS];
    struct client c[CLIENTS];

    for (int i = 0; i < CLIENTS; i++) {
        c[i] = (struct client){b, i * 1000, 0};
        ck_assert_int_eq(pthread_create(&t[i], NULL, client_run, &c[i]), 0);
    }
    for (int i = 0; i < CLIENTS; i++) {
        pthread_join(t[i], NULL);
        ck_assert_int_eq(c[i].wrong, 0);
    }
}

START_TEST(test_batch_concurrent_requests_share_statements)
{
    struct batcher *b = start(2, 8);
    run_clients(b);
    batcher_free(b);
    ck_assert_int_eq(atomic_load(&items_served), CLIENTS * ROUNDS);
    /* 32 clients on 2 threads that take 5 ms a batch: the queue fills, batches form */
    ck_assert_int_lt(atomic_load(&batches), CLIENTS * ROUNDS / 2);
    ck_assert_int_le(atomic_load(&largest), 8); /* and never pass max_batch */
    ck_assert_int_gt(atomic_load(&largest), 1);
}
END_TEST

/*
 * With a spare, the second thread stays out while the first keeps serving: the requests queued
 * during a batch wait for the serving thread's next one, and no two batches ever run at once.
 * (Without spares, 32 clients keep both threads busy.)
 */
START_TEST(test_batch_spare_waits_while_one_serves)
{
    spare_us = 1000000;
    struct batcher *b = start(2, 64);
    spare_us = 0;
    run_clients(b);
    batcher_free(b);
    ck_assert_int_eq(atomic_load(&items_served), CLIENTS * ROUNDS);
    ck_assert_int_eq(atomic_load(&most_running), 1); /* never two batches at once */
    ck_assert_int_lt(atomic_load(&batches), CLIENTS * ROUNDS / 4);
}
END_TEST

/* Submits one item; for a thread of its own. */
static void *submit_one(void *arg)
{
    struct batcher *b = arg;
    int in = 5, out = -1;
    struct batch_item item = {.in = &in, .out = &out};

    ck_assert_int_eq(batcher_submit(b, &item), STATUS_OK);
    ck_assert_int_eq(out, 10);
    return NULL;
}

static double since_ms(const struct timespec *t0)
{
    struct timespec t1;

    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double)(t1.tv_sec - t0->tv_sec) * 1e3 + (double)(t1.tv_nsec - t0->tv_nsec) / 1e6;
}

/* A batch stuck for 400 ms: the spare takes what queues behind it after spare_after_us. */
START_TEST(test_batch_spare_takes_over_a_stuck_batch)
{
    spare_us = 50000;
    struct batcher *b = start(2, 8);
    spare_us = 0;
    pthread_t stuck;
    int in = 21, out = -1;
    struct batch_item item = {.in = &in, .out = &out};

    ck_assert_int_eq(batcher_submit(b, &item), STATUS_OK); /* a first connection is made */
    atomic_store(&stall_next, 1);
    ck_assert_int_eq(pthread_create(&stuck, NULL, submit_one, b), 0);
    /*
     * Until its batch has started and stalls (a fixed sleep was too short on a loaded machine:
     * the next item then joined the stuck batch and waited its 400 ms with it).
     */
    for (int i = 0; i < 2000 && !atomic_load(&stalling); i++)
        usleep(1000);
    ck_assert_int_eq(atomic_load(&stalling), 1);
    out = -1;
    ck_assert_int_eq(batcher_submit(b, &item), STATUS_OK);
    /*
     * Counted from the stall's start, not from this submit: on a loaded machine this thread may
     * see the stall late, and the spare's 50 ms had then partly run before the submit.
     */
    double waited = since_ms(&stalled_at);
    ck_assert_int_eq(out, 42);
    ck_assert_msg(waited < 300, "served %.0f ms into the stuck batch", waited);
    ck_assert_msg(waited >= 20, "served %.0f ms into the stuck batch: the spare did not wait",
                  waited);
    pthread_join(stuck, NULL);
    batcher_free(b);
}
END_TEST

/* Callbacks of posted items: how many, and how many were served right. */
static atomic_long posted_done, posted_right;

static void count_done(struct batch_item *item)
{
    if (item->st == STATUS_OK && *(int *)item->out == 2 * *(const int *)item->in)
        atomic_fetch_add(&posted_right, 1);
    atomic_fetch_add(&posted_done, 1); /* last: the poster may reuse the item once it sees this */
}

START_TEST(test_batch_posted_items_are_called_back)
{
    enum { N = 100 };
    struct batcher *b = start(2, 8);
    static int in[N], out[N];
    static struct batch_item items[N];

    atomic_store(&posted_done, 0);
    atomic_store(&posted_right, 0);
    /* posted from one thread without waiting: they queue up, and are served in batches */
    for (int i = 0; i < N; i++) {
        in[i] = i;
        out[i] = -1;
        items[i] = (struct batch_item){.in = &in[i], .out = &out[i]};
        batcher_post(b, &items[i], count_done);
    }
    for (int i = 0; i < 500 && atomic_load(&posted_done) < N; i++)
        usleep(10000);
    ck_assert_int_eq(atomic_load(&posted_done), N);
    ck_assert_int_eq(atomic_load(&posted_right), N);
    ck_assert_int_lt(atomic_load(&batches), N / 2);
    batcher_free(b);
}
END_TEST

/* Submits until the batcher stops: counts the answers, and any answer that is wrong. */
struct stopper {
    struct batcher *b;
    int base;
    long ok, unavailable, wrong;
};

static void *client_until_stop(void *arg)
{
    struct stopper *c = arg;

    for (int k = 0;; k++) {
        int in = c->base + k % 1000, out = -1;
        struct batch_item item = {.in = &in, .out = &out};
        enum status st = batcher_submit(c->b, &item);
        if (st == STATUS_UNAVAILABLE) {
            c->unavailable++;
            return NULL;
        }
        if (st == STATUS_OK && out == 2 * in)
            c->ok++;
        else
            c->wrong++;
    }
}

START_TEST(test_batch_stop_under_load_answers_everyone)
{
    /* stops at different moments of the clients' traffic: a request lost in a stop hangs */
    for (int round = 0; round < 8; round++) {
        spare_us = round % 2 ? 2000 : 0; /* half the rounds with a spare thread */
        struct batcher *b = start(2, 8);
        spare_us = 0;
        pthread_t t[CLIENTS];
        struct stopper c[CLIENTS];

        for (int i = 0; i < CLIENTS; i++) {
            c[i] = (struct stopper){.b = b, .base = i * 1000};
            ck_assert_int_eq(pthread_create(&t[i], NULL, client_until_stop, &c[i]), 0);
        }
        usleep((useconds_t)(1000 + round * 7000));
        batcher_stop(b); /* while every client is submitting */
        long ok = 0;
        for (int i = 0; i < CLIENTS; i++) {
            pthread_join(t[i], NULL);
            ck_assert_int_eq(c[i].wrong, 0);
            ck_assert_int_eq(c[i].unavailable, 1);
            ok += c[i].ok;
        }
        /* after the stop, a posted request is called back at once, on this thread */
        int in = 1, out = -1;
        struct batch_item late = {.in = &in, .out = &out};
        atomic_store(&posted_done, 0);
        batcher_post(b, &late, count_done);
        ck_assert_int_eq(atomic_load(&posted_done), 1);
        ck_assert_int_eq(late.st, STATUS_UNAVAILABLE);
        batcher_free(b); /* no client left to use it */
        /* every request queued before the stop was served, and answered */
        ck_assert_int_eq(atomic_load(&items_served), ok);
    }
}
END_TEST

START_TEST(test_batch_alone_is_a_batch_of_one)
{
    struct batcher *b = start(1, 64);
    int in = 21, out = 0;
    struct batch_item item = {.in = &in, .out = &out};

    ck_assert_int_eq(batcher_submit(b, &item), STATUS_OK);
    ck_assert_int_eq(out, 42);
    batcher_free(b);
    ck_assert_int_eq(atomic_load(&batches), 1);
}
END_TEST

START_TEST(test_batch_failure_reaches_every_item)
{
    struct batcher *b = start(1, 64);
    int in = 1, out = 0;
    struct batch_item item = {.in = &in, .out = &out};

    atomic_store(&fail_next, 1);
    ck_assert_int_eq(batcher_submit(b, &item), STATUS_RETRY);
    ck_assert_int_eq(out, 0);
    /* the next batch is served normally */
    ck_assert_int_eq(batcher_submit(b, &item), STATUS_OK);
    ck_assert_int_eq(out, 2);
    batcher_free(b);
}
END_TEST

/*
 * The server closes the batch thread's idle connection (a restart, an administrator): the next
 * batch is served all the same, on a new connection, rather than failed with 503.
 */
START_TEST(test_batch_connection_killed_while_idle)
{
    struct batcher *b = start(1, 8);
    int in = 21, out = -1;
    struct batch_item item = {.in = &in, .out = &out};

    ck_assert_int_eq(batcher_submit(b, &item), STATUS_OK);
    int pid = atomic_load(&backend_pid);
    char text[16];
    snprintf(text, sizeof text, "%d", pid);
    PGconn *admin = testdb_admin_open();
    const char *params[] = {text};
    PGresult *r =
        PQexecParams(admin, "SELECT pg_terminate_backend($1::int)", 1, NULL, params, NULL, NULL, 0);
    ck_assert_str_eq(PQgetvalue(r, 0, 0), "t");
    PQclear(r);
    for (int i = 0; i < 100; i++) {
        r = PQexecParams(admin, "SELECT count(*) FROM pg_stat_activity WHERE pid = $1::int", 1,
                         NULL, params, NULL, NULL, 0);
        int gone = strcmp(PQgetvalue(r, 0, 0), "0") == 0;
        PQclear(r);
        if (gone)
            break;
        usleep(20000);
    }
    PQfinish(admin);
    usleep(50000); /* the goodbye reaches the batch thread's socket */
    out = -1;
    ck_assert_int_eq(batcher_submit(b, &item), STATUS_OK);
    ck_assert_int_eq(out, 42);
    ck_assert_int_ne(atomic_load(&backend_pid), pid);
    batcher_free(b);
}
END_TEST

START_TEST(test_batch_unreachable_database)
{
    struct batcher_config cfg = {.conninfo = "postgresql://nobody@127.0.0.1:1/none",
                                 .schema = schema,
                                 .threads = 1,
                                 .max_batch = 4,
                                 .fn = double_all};
    struct batcher *b = batcher_start(&cfg);
    int in = 1, out = 0;
    struct batch_item item = {.in = &in, .out = &out};

    ck_assert_int_eq(batcher_submit(b, &item), STATUS_UNAVAILABLE);
    batcher_free(b);
}
END_TEST

static Suite *batch_suite(void)
{
    Suite *s = suite_create("batch");
    TCase *tc = tcase_create("postgresql");

    tcase_set_timeout(tc, 60);
    tcase_add_checked_fixture(tc, schema_setup, schema_teardown);
    tcase_add_unchecked_fixture(tc, NULL, testdb_schema_sweep);
    tcase_add_test(tc, test_batch_concurrent_requests_share_statements);
    tcase_add_test(tc, test_batch_spare_waits_while_one_serves);
    tcase_add_test(tc, test_batch_spare_takes_over_a_stuck_batch);
    tcase_add_test(tc, test_batch_stop_under_load_answers_everyone);
    tcase_add_test(tc, test_batch_posted_items_are_called_back);
    tcase_add_test(tc, test_batch_alone_is_a_batch_of_one);
    tcase_add_test(tc, test_batch_failure_reaches_every_item);
    tcase_add_test(tc, test_batch_unreachable_database);
    tcase_add_test(tc, test_batch_connection_killed_while_idle);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    testdb_init();
    SRunner *sr = srunner_create(batch_suite());

    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
