/* inbox: consume, record the event id with its effect in one transaction, then store the offset. */
#include "inbox.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "log.h"
#include "metrics.h"
#include "outbox.h"
#include "pgarray.h"
#include "xalloc.h"

DB_STMT(inbox_record, "INSERT INTO inbox (event_id, topic, kafka_partition, kafka_offset, key,"
                      " type, source) VALUES ($1, $2, $3, $4, $5, $6, $7)"
                      " ON CONFLICT (event_id) DO NOTHING RETURNING seq");
/*
 * A batch's events recorded at once; returns the position (1-based) of each fresh one. An id
 * met twice in the arrays (a redelivery within the batch, in any spelling of the UUID) is
 * inserted once, by its first occurrence, since the rows go in in the arrays' order: min(n).
 */
DB_STMT(inbox_record_many,
        "WITH e AS (SELECT * FROM unnest($1::uuid[], $2::text[], $3::int[], $4::bigint[],"
        " $5::text[], $6::text[], $7::text[]) WITH ORDINALITY"
        " AS e (id, topic, part, off, key, type, source, n)),"
        " fresh AS (INSERT INTO inbox (event_id, topic, kafka_partition, kafka_offset, key,"
        " type, source) SELECT id, topic, part, off, key, type, source FROM e ORDER BY n"
        " ON CONFLICT (event_id) DO NOTHING RETURNING event_id)"
        " SELECT min(e.n) FROM fresh JOIN e ON e.id = fresh.event_id GROUP BY fresh.event_id");
DB_STMT(inbox_dead, "INSERT INTO inbox_dead_letter (topic, kafka_partition, kafka_offset,"
                    " reason, payload, attempts, last_status)"
                    " VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING");

static struct metric m_applied =
    METRIC_COUNTER("ptce_inbox_applied_total", "Events applied by this service's inbox.");
static struct metric m_duplicates =
    METRIC_COUNTER("ptce_inbox_duplicates_total", "Events received again and ignored.");
static struct metric m_skipped = METRIC_COUNTER("ptce_inbox_events_skipped_total",
                                                "Events of a type this service does not apply.");
static struct metric m_dead =
    METRIC_COUNTER("ptce_inbox_dead_letters_total", "Events set aside as impossible to apply.");
static struct metric m_lag =
    METRIC_GAUGE("ptce_consumer_lag", "Messages behind the end of the consumed partitions.");

/* The most members an inbox has (inbox_config.consumers). */
#define INBOX_MEMBERS_MAX 16

/* What the members of one inbox share. */
struct inbox_shared {
    pthread_mutex_t failpoint;          /* held over a whole batch while the failpoint is armed */
    atomic_long commits;                /* every member's, for the failpoint */
    atomic_long lag[INBOX_MEMBERS_MAX]; /* each member's latest, -1 before its first */
    struct inbox *first;                /* the members, by next */
};

struct inbox {
    struct inbox_config cfg;
    struct inbox_shared *shared;
    struct inbox *next;
    int member; /* its index in shared->lag */
    char *conninfo;
    char *schema;
    char *brokers;
    char *client_id;
    char *group;
    pthread_t thread;
    atomic_int stop;
    int started; /* the thread runs */
    rd_kafka_t *consumer;
    struct db_conn db;
};

/* The gauge is the sum over the members, each known from its own latest statistics. */
static int inbox_stats_cb(rd_kafka_t *rk, char *json, size_t len, void *opaque)
{
    struct inbox *inbox = opaque;
    long lag = kafka_stats_consumer_lag(json, len), sum = 0;

    (void)rk;
    if (lag < 0)
        return 0;
    atomic_store(&inbox->shared->lag[inbox->member], lag);
    for (int i = 0; i < INBOX_MEMBERS_MAX; i++) {
        long one = atomic_load(&inbox->shared->lag[i]);
        sum += one > 0 ? one : 0;
    }
    metric_set(&m_lag, sum);
    return 0; /* librdkafka frees json */
}

/* Sets the message aside, in a transaction of its own; the caller retries when it failed. */
static enum status inbox_dead_letter(struct inbox *inbox, const rd_kafka_message_t *msg,
                                     const char *reason, int attempts, const char *last_status)
{
    char part[16], off[24], att[16];
    char *payload = xstrndup(msg->payload ? msg->payload : "", msg->len);
    const char *params[] = {
        rd_kafka_topic_name(msg->rkt), part, off, reason, payload, att, last_status};

    snprintf(part, sizeof part, "%d", (int)msg->partition);
    snprintf(off, sizeof off, "%lld", (long long)msg->offset);
    snprintf(att, sizeof att, "%d", attempts);
    enum status st = db_exec(&inbox->db, &inbox_dead, 7, params, NULL);
    if (st == STATUS_OK) {
        metric_add(&m_dead, 1);
        log_event(LOG_ERROR, "inbox.dead_letter", "{s:s, s:s, s:s, s:s, s:i, s:s?}", "topic",
                  params[0], "partition", part, "offset", off, "reason", reason, "attempts",
                  attempts, "last_status", last_status);
    }
    free(payload);
    return st;
}

/* The route of type among routes[0..nroutes), or NULL. */
static const struct inbox_route *inbox_route_of(const struct inbox_route *routes, size_t nroutes,
                                                const char *type)
{
    for (size_t i = 0; i < nroutes; i++) {
        if (strcmp(routes[i].type, type) == 0)
            return &routes[i];
    }
    return NULL;
}

/*
 * 0 when the inbox dispatches by type and no route names ev's: such an event changes nothing,
 * so it is counted as skipped without a statement — recording it would only keep it from being
 * skipped twice. A service that consumes a busy topic for one rare type (funding reads every
 * dossier.routed for the decisions) pays no insert and no commit for the rest.
 */
static int inbox_routed(const struct inbox *inbox, const struct cloudevent *ev)
{
    return !inbox->cfg.routes || inbox_route_of(inbox->cfg.routes, inbox->cfg.nroutes, ev->type);
}

/*
 * 1 when msg's ce_type header (outbox_relay.c sets it) names a type no route takes: skipped
 * without parsing its value. Without the header (another producer), the value decides. A type
 * that is not a C string (empty, NUL inside, too long) is left to the value too.
 */
static int inbox_skipped_by_header(const struct inbox *inbox, const rd_kafka_message_t *msg)
{
    rd_kafka_headers_t *hdrs;
    const void *value;
    size_t size;
    char type[128];

    if (!inbox->cfg.routes || rd_kafka_message_headers(msg, &hdrs) != RD_KAFKA_RESP_ERR_NO_ERROR ||
        rd_kafka_header_get_last(hdrs, "ce_type", &value, &size) != RD_KAFKA_RESP_ERR_NO_ERROR ||
        !value || size == 0 || size >= sizeof type || memchr(value, '\0', size))
        return 0;
    memcpy(type, value, size);
    type[size] = '\0';
    return inbox_route_of(inbox->cfg.routes, inbox->cfg.nroutes, type) == NULL;
}

/* The event's effect, by its type's route (or the one handler), in the open transaction. */
static enum status inbox_handle(struct inbox *inbox, const struct cloudevent *ev)
{
    if (inbox->cfg.routes)
        return inbox_dispatch(inbox->cfg.routes, inbox->cfg.nroutes, &inbox->db, ev, inbox->cfg.ud);
    return inbox->cfg.handler(&inbox->db, ev, inbox->cfg.ud);
}

/*
 * Applies one message in one transaction. STATUS_OK also covers duplicates and dead letters.
 * *handler_st receives what the handler returned when it ran and failed (else STATUS_OK).
 */
static enum status inbox_apply(struct inbox *inbox, const rd_kafka_message_t *msg,
                               enum status *handler_st)
{
    struct cloudevent ev;
    char why[256], part[16], off[24];
    PGresult *r;

    *handler_st = STATUS_OK;
    if (inbox_skipped_by_header(inbox, msg)) {
        metric_add(&m_skipped, 1);
        return STATUS_OK;
    }
    if (cloudevent_parse(msg->payload, msg->len, &ev, why, sizeof why) != STATUS_OK)
        return inbox_dead_letter(inbox, msg, why, 1, NULL);
    if (!inbox_routed(inbox, &ev)) {
        metric_add(&m_skipped, 1);
        cloudevent_clear(&ev);
        return STATUS_OK;
    }
    snprintf(part, sizeof part, "%d", (int)msg->partition);
    snprintf(off, sizeof off, "%lld", (long long)msg->offset);
    const char *params[] = {ev.id,    rd_kafka_topic_name(msg->rkt), part, off, ev.subject, ev.type,
                            ev.source};
    log_set_request_id(ev.request_id);
    enum status st = db_begin(&inbox->db);
    if (st == STATUS_OK)
        st = db_exec(&inbox->db, &inbox_record, 7, params, &r);
    if (st == STATUS_INVALID) { /* e.g. an id that is not a UUID */
        db_rollback(&inbox->db);
        st = inbox_dead_letter(inbox, msg, "event id or attributes rejected by the inbox table", 1,
                               status_strerror(STATUS_INVALID));
        goto out;
    }
    if (st != STATUS_OK) {
        db_rollback(&inbox->db); /* an aborted transaction would make every retry's BEGIN fail */
        goto out;
    }
    int fresh = PQntuples(r) == 1;
    PQclear(r);
    if (!fresh) {
        metric_add(&m_duplicates, 1);
        st = db_commit(&inbox->db);
        goto out;
    }
    st = inbox_handle(inbox, &ev);
    if (st == STATUS_OK) {
        st = db_commit(&inbox->db);
        if (st == STATUS_OK)
            metric_add(&m_applied, 1);
    } else if (st == STATUS_INVALID || st == STATUS_UNPROCESSABLE) {
        db_rollback(&inbox->db);
        st = inbox_dead_letter(inbox, msg, "the handler refused the event", 1, status_strerror(st));
    } else {
        db_rollback(&inbox->db);
        *handler_st = st;
    }
out:
    log_set_request_id(NULL);
    cloudevent_clear(&ev);
    return st;
}

enum status inbox_dispatch(const struct inbox_route *routes, size_t nroutes, struct db_conn *conn,
                           const struct cloudevent *ev, void *ud)
{
    const struct inbox_route *route = inbox_route_of(routes, nroutes, ev->type);

    if (route)
        return route->handler(conn, ev, ud);
    metric_add(&m_skipped, 1);
    log_event(LOG_DEBUG, "inbox.event_skipped", "{s:s, s:s?}", "type", ev->type, "subject",
              ev->subject);
    return STATUS_OK; /* recorded in the inbox: never looked at again */
}

/* 1 when a handler failure will not go away by itself: neither transient nor a lost link. */
static int inbox_failure_is_final(const struct inbox *inbox, enum status handler_st)
{
    if (handler_st == STATUS_OK || handler_st == STATUS_UNAVAILABLE || handler_st == STATUS_RETRY)
        return 0;
    return inbox->db.pg && PQstatus(inbox->db.pg) == CONNECTION_OK;
}

/* 1 when the inbox's connection is up: opened the first time, made again when it was lost. */
static int inbox_connect(struct inbox *inbox)
{
    enum status st = inbox->db.conninfo ? db_conn_check(&inbox->db)
                                        : db_conn_open(&inbox->db, inbox->conninfo, inbox->schema,
                                                       inbox->cfg.statement_timeout_ms);
    return st == STATUS_OK;
}

/*
 * Keeps trying one message until it is applied or set aside, or the inbox stops. Transient
 * failures are retried for as long as it takes; a handler that keeps failing otherwise has its
 * event set aside after max_attempts calls, `attempts` of them already made (in a batch). 1
 * when done with the message.
 */
static int inbox_apply_until_done(struct inbox *inbox, const rd_kafka_message_t *msg, long attempts)
{
    long backoff = 100;
    long max = inbox->cfg.max_attempts > 0 ? inbox->cfg.max_attempts : 5;
    char reason[128];

    while (!atomic_load(&inbox->stop)) {
        if (!inbox_connect(inbox)) {
            clock_sleep_ms(backoff);
            backoff = backoff < 5000 ? backoff * 2 : 5000;
            continue;
        }
        enum status handler_st;
        if (inbox_apply(inbox, msg, &handler_st) == STATUS_OK)
            return 1;
        if (inbox_failure_is_final(inbox, handler_st) && ++attempts >= max) {
            snprintf(reason, sizeof reason, "the handler failed %ld times (%s)", attempts,
                     status_strerror(handler_st));
            if (inbox_dead_letter(inbox, msg, reason, (int)attempts, status_strerror(handler_st)) ==
                STATUS_OK)
                return 1;
        }
        clock_sleep_ms(backoff);
        backoff = backoff < 5000 ? backoff * 2 : 5000;
    }
    return 0;
}

/*
 * The messages already fetched are applied together, in one transaction, up to this many: one
 * commit (one WAL flush) for a burst instead of one per event, which is what lets a projection
 * keep up with a thousand deposits a second.
 */
#define INBOX_BATCH_MAX 64

/* A routed message of a batch. */
struct inbox_item {
    const rd_kafka_message_t *msg;
    size_t at; /* its index in the batch */
    struct cloudevent ev;
    int fresh; /* not recorded before: its handler runs */
};

/*
 * Parses msgs[0..n) into items[0..*m), the routed events only; the others are counted in
 * *skipped. 0, nothing kept, when one is not a CloudEvent: the one-by-one pass sets it aside.
 */
static int inbox_batch_parse(const struct inbox *inbox, rd_kafka_message_t *const *msgs, size_t n,
                             struct inbox_item *items, size_t *m, long *skipped)
{
    char why[256];

    *m = 0;
    *skipped = 0;
    for (size_t i = 0; i < n; i++) {
        struct inbox_item *it = &items[*m];
        if (inbox_skipped_by_header(inbox, msgs[i])) {
            (*skipped)++;
            continue;
        }
        if (cloudevent_parse(msgs[i]->payload, msgs[i]->len, &it->ev, why, sizeof why) !=
            STATUS_OK) {
            while (*m > 0)
                cloudevent_clear(&items[--*m].ev);
            return 0;
        }
        if (!inbox_routed(inbox, &it->ev)) {
            (*skipped)++;
            cloudevent_clear(&it->ev);
            continue;
        }
        it->msg = msgs[i];
        it->at = i;
        it->fresh = 0;
        (*m)++;
    }
    return 1;
}

/* Records items[0..m) in the inbox with one statement, in the open transaction; marks the fresh. */
static enum status inbox_batch_record(struct inbox *inbox, struct inbox_item *items, size_t m)
{
    struct pgarray cols[7]; /* ids, topics, partitions, offsets, keys, types, sources */
    const char *params[7];
    PGresult *r;

    for (size_t c = 0; c < 7; c++)
        pgarray_init(&cols[c]);
    for (size_t i = 0; i < m; i++) {
        pgarray_add_text(&cols[0], items[i].ev.id);
        pgarray_add_text(&cols[1], rd_kafka_topic_name(items[i].msg->rkt));
        pgarray_add_int(&cols[2], items[i].msg->partition);
        pgarray_add_int(&cols[3], items[i].msg->offset);
        pgarray_add_text(&cols[4], items[i].ev.subject);
        pgarray_add_text(&cols[5], items[i].ev.type);
        pgarray_add_text(&cols[6], items[i].ev.source);
    }
    for (size_t c = 0; c < 7; c++)
        params[c] = pgarray_text(&cols[c]);
    enum status st = db_exec(&inbox->db, &inbox_record_many, 7, params, &r);
    for (size_t c = 0; c < 7; c++)
        pgarray_free(&cols[c]);
    if (st != STATUS_OK)
        return st;
    for (int k = 0; k < PQntuples(r); k++) {
        long n = strtol(PQgetvalue(r, k, 0), NULL, 10); /* 1-based */
        if (n >= 1 && (size_t)n <= m)
            items[n - 1].fresh = 1;
    }
    PQclear(r);
    return STATUS_OK;
}

/*
 * Runs items[0..m)'s fresh events through their handlers, in order, in the open transaction,
 * their outbox appends held back and written together at the end. On a handler's failure,
 * *failed_at and *failed_st say which and what, and nothing is written.
 */
static enum status inbox_batch_handle(struct inbox *inbox, const struct inbox_item *items, size_t m,
                                      long *applied, size_t *failed_at, enum status *failed_st)
{
    enum status st = STATUS_OK;

    outbox_defer_begin(&inbox->db);
    if (inbox->cfg.prepare) {
        const struct cloudevent *evs[INBOX_BATCH_MAX];
        size_t k = 0;
        for (size_t i = 0; i < m; i++)
            if (items[i].fresh)
                evs[k++] = &items[i].ev;
        if (k > 0 && (st = inbox->cfg.prepare(&inbox->db, evs, k, inbox->cfg.ud)) != STATUS_OK) {
            outbox_defer_discard(&inbox->db);
            return st; /* no event to blame: the batch is taken one by one */
        }
    }
    for (size_t i = 0; i < m && st == STATUS_OK; i++) {
        if (!items[i].fresh)
            continue;
        log_set_request_id(items[i].ev.request_id);
        st = inbox_handle(inbox, &items[i].ev);
        log_set_request_id(NULL);
        if (st == STATUS_OK) {
            (*applied)++;
        } else {
            *failed_at = items[i].at;
            *failed_st = st;
        }
    }
    if (st != STATUS_OK) {
        outbox_defer_discard(&inbox->db);
        return st;
    }
    return outbox_defer_flush(&inbox->db);
}

/* Records and applies items[0..m) in a transaction of their own; the commit's status. */
static enum status inbox_batch_run(struct inbox *inbox, struct inbox_item *items, size_t m,
                                   long *applied, size_t *failed_at, enum status *failed_st)
{
    enum status st = db_begin(&inbox->db);

    if (st != STATUS_OK)
        return st;
    st = inbox_batch_record(inbox, items, m);
    if (st == STATUS_OK)
        st = inbox_batch_handle(inbox, items, m, applied, failed_at, failed_st);
    if (inbox->cfg.prepare) /* what it left is for this batch's handlers only */
        inbox->cfg.prepare(&inbox->db, NULL, 0, inbox->cfg.ud);
    if (st != STATUS_OK) {
        db_rollback(&inbox->db); /* an aborted transaction would make every later BEGIN fail */
        return st;
    }
    return db_commit(&inbox->db);
}

/*
 * Applies msgs[0..n) in one transaction: every routed event recorded with one statement, the
 * fresh ones applied in order, their outbox events written with one more, so that a batch
 * costs its handlers' statements and four more (BEGIN, the record, the outbox, COMMIT). 1 when
 * every one was applied (or was a duplicate) and the transaction committed. 0, everything
 * rolled back, when any would need more than that: a payload or record the inbox refuses, a
 * handler failure, a lost connection — the caller then takes the messages one by one, each in
 * a transaction of its own, with its retries and dead letters. A commit that failed may still
 * have happened: the one-by-one pass then finds the events recorded and counts them as
 * duplicates. When a handler failed, *failed_at is its message and *failed_st what it
 * returned (else n and STATUS_OK): that call counts as one of the event's attempts.
 */
static int inbox_apply_batch(struct inbox *inbox, rd_kafka_message_t *const *msgs, size_t n,
                             size_t *failed_at, enum status *failed_st)
{
    struct inbox_item items[INBOX_BATCH_MAX];
    size_t m;
    long applied = 0, skipped;
    enum status st = STATUS_OK;

    *failed_at = n;
    *failed_st = STATUS_OK;
    if (n > INBOX_BATCH_MAX || !inbox->db.pg || PQstatus(inbox->db.pg) != CONNECTION_OK)
        return 0;
    if (!inbox_batch_parse(inbox, msgs, n, items, &m, &skipped))
        return 0;
    if (m > 0) /* a batch of skipped events only needs no transaction */
        st = inbox_batch_run(inbox, items, m, &applied, failed_at, failed_st);
    for (size_t i = 0; i < m; i++)
        cloudevent_clear(&items[i].ev);
    if (st != STATUS_OK)
        return 0;
    metric_add(&m_applied, applied);
    metric_add(&m_duplicates, (long)m - applied);
    metric_add(&m_skipped, skipped);
    return 1;
}

/* Counts n committed messages; exits there when the failpoint says so. */
static void inbox_committed(struct inbox *inbox, long n)
{
    long commits = atomic_fetch_add(&inbox->shared->commits, n) + n;

    if (inbox->cfg.exit_after_commits > 0 && commits >= inbox->cfg.exit_after_commits) {
        log_event(LOG_WARN, "inbox.failpoint_exit", "{s:i}", "commits", (int)commits);
        log_flush(); /* _exit skips atexit: write the queued lines first */
        _exit(86);   /* committed in the database, offset not stored: a crash */
    }
}

/* One poll and what it brought, applied; offsets stored for what was done. */
static void inbox_round(struct inbox *inbox)
{
    rd_kafka_message_t *batch[INBOX_BATCH_MAX];
    size_t n = 0, most = INBOX_BATCH_MAX;
    long left = inbox->cfg.exit_after_commits - atomic_load(&inbox->shared->commits);

    /* the failpoint's crash comes right after its N-th commit, never past it */
    if (inbox->cfg.exit_after_commits > 0 && left < (long)most)
        most = (size_t)(left > 1 ? left : 1);
    rd_kafka_message_t *msg = rd_kafka_consumer_poll(inbox->consumer, 200);
    /* then whatever is already fetched, without waiting */
    while (msg) {
        if (msg->err) {
            log_event(LOG_WARN, "inbox.consume_error", "{s:s}", "error",
                      rd_kafka_message_errstr(msg));
            rd_kafka_message_destroy(msg);
            break;
        }
        batch[n++] = msg;
        msg = n < most ? rd_kafka_consumer_poll(inbox->consumer, 0) : NULL;
    }
    if (n == 0)
        return;
    /* the first round, or the first after a lost link: a closed connection is not a reason to
       take a burst one by one (the one-by-one pass waits for the database if it is down) */
    (void)inbox_connect(inbox);
    size_t done = 0, failed_at = n;
    enum status failed_st = STATUS_OK;
    if (n > 1 && inbox_apply_batch(inbox, batch, n, &failed_at, &failed_st)) {
        inbox_committed(inbox, (long)n);
        done = n;
    } else {
        long prior = inbox_failure_is_final(inbox, failed_st) ? 1 : 0;
        while (done < n &&
               inbox_apply_until_done(inbox, batch[done], done == failed_at ? prior : 0)) {
            inbox_committed(inbox, 1);
            done++;
        }
    }
    /* Only now may the offsets move past these messages; not past one left undone. */
    for (size_t i = 0; i < done; i++)
        rd_kafka_offset_store(batch[i]->rkt, batch[i]->partition, batch[i]->offset);
    for (size_t i = 0; i < n; i++)
        rd_kafka_message_destroy(batch[i]);
}

static void *inbox_main(void *arg)
{
    struct inbox *inbox = arg;
    int armed = inbox->cfg.exit_after_commits > 0;

    while (!atomic_load(&inbox->stop)) {
        /* armed, the members take turns, so that the count is exact across them */
        if (armed)
            pthread_mutex_lock(&inbox->shared->failpoint);
        inbox_round(inbox);
        if (armed)
            pthread_mutex_unlock(&inbox->shared->failpoint);
    }
    return NULL;
}

/* One member: its consumer and its thread (its connection opens on first use). */
static struct inbox *inbox_member_start(const struct inbox_config *cfg, struct inbox_shared *shared,
                                        int member)
{
    struct inbox *inbox = xcalloc(1, sizeof *inbox);
    char errstr[512];

    inbox->cfg = *cfg;
    inbox->shared = shared;
    inbox->member = member;
    inbox->conninfo = xstrdup(cfg->conninfo);
    inbox->schema = xstrdup(cfg->schema);
    inbox->brokers = xstrdup(cfg->kafka.brokers);
    inbox->client_id = xstrdup(cfg->kafka.client_id);
    inbox->group = xstrdup(cfg->group);
    inbox->cfg.conninfo = inbox->conninfo;
    inbox->cfg.schema = inbox->schema;
    inbox->cfg.kafka.brokers = inbox->brokers;
    inbox->cfg.kafka.client_id = inbox->client_id;
    inbox->cfg.group = inbox->group;
    inbox->consumer = kafka_consumer_new(&inbox->cfg.kafka, inbox->group, cfg->topics, cfg->ntopics,
                                         inbox_stats_cb, inbox, errstr, sizeof errstr);
    if (!inbox->consumer) {
        log_event(LOG_ERROR, "inbox.consumer_failed", "{s:s}", "error", errstr);
        return inbox; /* not started: inbox_start stops the others */
    }
    if (pthread_create(&inbox->thread, NULL, inbox_main, inbox) != 0)
        abort();
    inbox->started = 1;
    return inbox;
}

struct inbox *inbox_start(const struct inbox_config *cfg)
{
    struct inbox_shared *shared = xcalloc(1, sizeof *shared);
    struct inbox **tail = &shared->first;
    long members = cfg->consumers > 0 ? cfg->consumers : 1;

    if (members > INBOX_MEMBERS_MAX)
        members = INBOX_MEMBERS_MAX;
    for (int i = 0; i < INBOX_MEMBERS_MAX; i++)
        atomic_init(&shared->lag[i], -1);
    pthread_mutex_init(&shared->failpoint, NULL);
    metrics_register(&m_applied);
    metrics_register(&m_duplicates);
    metrics_register(&m_dead);
    metrics_register(&m_skipped);
    metrics_register(&m_lag);
    for (long i = 0; i < members; i++) {
        *tail = inbox_member_start(cfg, shared, (int)i);
        if (!(*tail)->started) {
            inbox_stop(shared->first);
            return NULL;
        }
        tail = &(*tail)->next;
    }
    return shared->first;
}

static void inbox_member_free(struct inbox *inbox)
{
    if (inbox->started) {
        pthread_join(inbox->thread, NULL);
        rd_kafka_consumer_close(inbox->consumer); /* commits the stored offsets */
    }
    if (inbox->consumer)
        rd_kafka_destroy(inbox->consumer);
    db_conn_close(&inbox->db);
    free(inbox->conninfo);
    free(inbox->schema);
    free(inbox->brokers);
    free(inbox->client_id);
    free(inbox->group);
    free(inbox);
}

void inbox_stop(struct inbox *inbox)
{
    if (!inbox)
        return;
    struct inbox_shared *shared = inbox->shared;
    /* every member stops polling first, then each finishes its batch and leaves the group */
    for (struct inbox *m = shared->first; m; m = m->next)
        atomic_store(&m->stop, 1);
    for (struct inbox *m = shared->first, *next; m; m = next) {
        next = m->next;
        inbox_member_free(m);
    }
    pthread_mutex_destroy(&shared->failpoint);
    free(shared);
}
