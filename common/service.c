/* service: wiring shared by the three services, and the probes every one of them serves. */
#include "service.h"

#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "log.h"
#include "metrics.h"
#include "sql_common.h"
#include "xalloc.h"

#define CFG(field) offsetof(struct service_config, field)

static const struct config_var service_vars[] = {
    {"PTCE_HTTP_BIND", CONFIG_STRING, "127.0.0.1", 0, 0, CFG(http_bind),
     "IPv4 address to listen on"},
    {"PTCE_HTTP_PORT", CONFIG_INT, "0", 0, 65535, CFG(http_port),
     "HTTP port (0: the service's default)"},
    {"PTCE_HTTP_THREADS", CONFIG_INT, "8", 1, 512, CFG(http_threads), "HTTP worker threads"},
    {"PTCE_HTTP_BODY_LIMIT", CONFIG_INT, "1048576", 1024, 67108864, CFG(http_body_limit),
     "largest request body, bytes (413 beyond)"},
    {"PTCE_HTTP_TIMEOUT_S", CONFIG_INT, "30", 1, 3600, CFG(http_timeout_s),
     "idle connection timeout, seconds"},
    {"PTCE_HTTP_CONNECTION_LIMIT", CONFIG_INT, "1024", 8, 65536, CFG(http_connection_limit),
     "simultaneous connections"},
    {"PTCE_HTTP_DEFER_TIMEOUT_MS", CONFIG_INT, "15000", 100, 600000, CFG(http_defer_timeout_ms),
     "a deferred request (batched read, webhook) unanswered this long gets 503"},
    {"PTCE_DATABASE_URL", CONFIG_STRING, NULL, 0, 0, CFG(database_url),
     "libpq URL of the service's role"},
    {"PTCE_DB_POOL_SIZE", CONFIG_INT, "16", 1, 512, CFG(db_pool_size),
     "database connections in the pool"},
    {"PTCE_DB_POOL_WAIT_MS", CONFIG_INT, "2000", 1, 60000, CFG(db_pool_wait_ms),
     "wait for a free connection before 503"},
    {"PTCE_DB_STATEMENT_TIMEOUT_MS", CONFIG_INT, "5000", 0, 600000, CFG(db_statement_timeout_ms),
     "statement_timeout of request queries"},
    {"PTCE_KAFKA_BROKERS", CONFIG_STRING, NULL, 0, 0, CFG(kafka_brokers),
     "Kafka bootstrap servers"},
    {"PTCE_KAFKA_PARTITIONS", CONFIG_INT, "6", 1, 1024, CFG(kafka_partitions),
     "partitions of topics created"},
    {"PTCE_KAFKA_REPLICATION", CONFIG_INT, "1", 1, 16, CFG(kafka_replication),
     "replication factor of topics created"},
    {"PTCE_KAFKA_MESSAGE_TIMEOUT_MS", CONFIG_INT, "60000", 1000, 3600000,
     CFG(kafka_message_timeout_ms), "producer delivery timeout"},
    {"PTCE_KAFKA_FETCH_WAIT_MS", CONFIG_INT, "0", 0, 1000, CFG(kafka_fetch_wait_ms),
     "how long the broker holds a consumer's fetch for more events (fetch.wait.max.ms); 0: the"
     " service's own default"},
    {"PTCE_OUTBOX_BATCH", CONFIG_INT, "500", 1, 10000, CFG(outbox_batch),
     "outbox rows per relay round"},
    {"PTCE_OUTBOX_POLL_MS", CONFIG_INT, "1000", 10, 60000, CFG(outbox_poll_ms),
     "relay wake-up when nothing else woke it"},
    {"PTCE_INBOX_MAX_ATTEMPTS", CONFIG_INT, "5", 1, 1000, CFG(inbox_max_attempts),
     "handler failures before an event is set aside"},
    {"PTCE_INBOX_CONSUMERS", CONFIG_INT, "0", 0, 16, CFG(inbox_consumers),
     "consumers of the group in this process, each its own thread and connection; 0: the"
     " service's own default"},
    {"PTCE_AUTH_CACHE_TTL_MS", CONFIG_INT, "2000", 0, 600000, CFG(auth_cache_ttl_ms),
     "how long a checked key is trusted"},
    {"PTCE_RATE_LIMIT_RPS", CONFIG_INT, "500", 0, 100000000, CFG(rate_limit_rps),
     "requests a second per API key, on average (0: no limit; 429 beyond)"},
    {"PTCE_RATE_LIMIT_BURST", CONFIG_INT, "2000", 1, 100000000, CFG(rate_limit_burst),
     "requests an API key may make at once above its rate"},
    {"PTCE_AUTH_FAILURE_RPS", CONFIG_INT, "2", 0, 1000000, CFG(auth_failure_rps),
     "failed authentications a second per client address (0: no throttle; 429 beyond)"},
    {"PTCE_AUTH_FAILURE_BURST", CONFIG_INT, "50", 1, 1000000, CFG(auth_failure_burst),
     "failed authentications a client address may make at once"},
    {"PTCE_DB_THREADS", CONFIG_INT, "8", 1, 256, CFG(db_threads),
     "threads that run requests' database work off the HTTP workers"},
    {"PTCE_LOG_LEVEL", CONFIG_STRING, "info", 0, 0, CFG(log_level), "debug, info, warn or error"},
    {"PTCE_FAILPOINT_INBOX_EXIT_AFTER", CONFIG_INT, "0", 0, 1000000000,
     CFG(failpoint_inbox_exit_after), "tests only: crash after N inbox commits"},
};
#define NVARS (sizeof service_vars / sizeof service_vars[0])

/* ---- probes ---- */

static int service_healthz(struct http_ctx *ctx)
{
    static const char ok[] = "{\"status\":\"ok\"}";

    return http_reply_raw(ctx, 200, "application/json", ok, sizeof ok - 1);
}

static long service_now_ms(void)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/*
 * SELECT 1 on conn, answered within timeout_ms or counted failed: a server that accepts and
 * never answers must not hold the checker (nor, through it, a stop). A connection that did not
 * answer is closed, and made again by the next check.
 */
static int service_db_ping(struct db_conn *conn, long timeout_ms)
{
    struct timespec deadline, now;
    int ok = 1;

    clock_deadline(CLOCK_MONOTONIC, timeout_ms, &deadline);
    if (!PQsendQuery(conn->pg, "SELECT 1"))
        goto out;
    for (;;) {
        if (!PQconsumeInput(conn->pg))
            goto out;
        if (!PQisBusy(conn->pg))
            break;
        clock_gettime(CLOCK_MONOTONIC, &now);
        long left = (long)(deadline.tv_sec - now.tv_sec) * 1000 +
                    (deadline.tv_nsec - now.tv_nsec) / 1000000;
        struct pollfd pfd = {.fd = PQsocket(conn->pg), .events = POLLIN};
        if (left <= 0 || poll(&pfd, 1, (int)left) < 0)
            goto out;
    }
    for (PGresult *r = PQgetResult(conn->pg); r; r = PQgetResult(conn->pg)) {
        ok = ok && PQresultStatus(r) == PGRES_TUPLES_OK;
        PQclear(r);
    }
    return ok;
out:
    db_conn_close(conn);
    return 0;
}

/* One database check on the checker's own connection, made (again) when it is gone. */
static int service_db_check(struct service *svc, struct db_conn *conn)
{
    enum status st = conn->conninfo
                         ? db_conn_check(conn)
                         : db_conn_open_session(conn, svc->cfg.database_url, svc->def->schema, 1000,
                                                "SET application_name = 'ptce-readiness'");
    return st == STATUS_OK && service_db_ping(conn, 1000);
}

static void *service_ready_watch(void *arg)
{
    struct service *svc = arg;
    struct service_ready *r = &svc->ready;
    struct db_conn conn = {0};
    struct timespec until;
    int db_failed = 0, kafka_failed = 0;

    pthread_mutex_lock(&r->lock);
    while (!r->stop) {
        pthread_mutex_unlock(&r->lock);
        /*
         * Ready again at the first success, not ready after two failures in a row: one slow
         * answer on a loaded machine (a metadata request past its second) must not make a
         * load balancer drop a healthy replica.
         */
        db_failed = service_db_check(svc, &conn) ? 0 : db_failed + 1;
        kafka_failed = kafka_reachable(svc->probe, 1000) ? 0 : kafka_failed + 1;
        atomic_store(&r->database, db_failed == 0 || (atomic_load(&r->database) && db_failed < 2));
        atomic_store(&r->kafka, kafka_failed == 0 || (atomic_load(&r->kafka) && kafka_failed < 2));
        atomic_store(&r->checked_ms, service_now_ms());
        pthread_mutex_lock(&r->lock);
        clock_deadline(CLOCK_MONOTONIC, SERVICE_READY_PERIOD_MS, &until);
        if (!r->stop)
            pthread_cond_timedwait(&r->wake, &r->lock, &until);
    }
    pthread_mutex_unlock(&r->lock);
    db_conn_close(&conn);
    return NULL;
}

static enum status service_ready_start(struct service *svc)
{
    struct service_ready *r = &svc->ready;
    pthread_condattr_t attr;

    pthread_mutex_init(&r->lock, NULL);
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&r->wake, &attr);
    pthread_condattr_destroy(&attr);
    if (pthread_create(&r->thread, NULL, service_ready_watch, svc) != 0)
        return STATUS_INTERNAL;
    r->started = 1;
    return STATUS_OK;
}

static void service_ready_stop(struct service *svc)
{
    struct service_ready *r = &svc->ready;

    if (!r->started)
        return;
    pthread_mutex_lock(&r->lock);
    r->stop = 1;
    pthread_cond_signal(&r->wake);
    pthread_mutex_unlock(&r->lock);
    pthread_join(r->thread, NULL);
    pthread_mutex_destroy(&r->lock);
    pthread_cond_destroy(&r->wake);
    r->started = 0;
}

/* Answers from the checker's state at once: no database, no Kafka on the worker. */
static int service_readyz(struct http_ctx *ctx)
{
    struct service *svc = ctx->app;
    long checked = atomic_load(&svc->ready.checked_ms);
    int fresh = checked > 0 && service_now_ms() - checked < SERVICE_READY_STALE_MS;
    int db = fresh && atomic_load(&svc->ready.database);
    int kafka = fresh && atomic_load(&svc->ready.kafka);
    json_t *body = json_pack("{s:s, s:{s:b, s:b}}", "status", db && kafka ? "ready" : "not_ready",
                             "checks", "database", db, "kafka", kafka);

    if (!(db && kafka))
        http_set_header(ctx, "Retry-After", "1");
    return http_reply_json(ctx, db && kafka ? 200 : 503, body);
}

static int service_metrics(struct http_ctx *ctx)
{
    struct service *svc = ctx->app;
    struct db_pool_stats ps;
    struct buf out;

    buf_init(&out, 0);
    http_metrics_render(&svc->http, &out);
    metrics_render(&out);
    db_pool_stats(svc->db, &ps);
    buf_printf(
        &out,
        "# HELP ptce_db_pool_connections Database pool size and connections in use.\n"
        "# TYPE ptce_db_pool_connections gauge\n"
        "ptce_db_pool_connections{state=\"size\"} %zu\n"
        "ptce_db_pool_connections{state=\"in_use\"} %zu\n"
        "# HELP ptce_db_pool_acquire_timeouts_total Requests that found no free connection.\n"
        "# TYPE ptce_db_pool_acquire_timeouts_total counter\n"
        "ptce_db_pool_acquire_timeouts_total %lu\n"
        "# HELP ptce_db_pool_reconnects_total Pooled connections made again: lost, or older "
        "than a connection found dead.\n"
        "# TYPE ptce_db_pool_reconnects_total counter\n"
        "ptce_db_pool_reconnects_total %lu\n"
        "# HELP ptce_db_pool_retries_total First statements run again after their connection "
        "was lost.\n"
        "# TYPE ptce_db_pool_retries_total counter\n"
        "ptce_db_pool_retries_total %lu\n",
        ps.size, ps.in_use, ps.acquire_timeouts, ps.reconnects, ps.retries);
    int rc = http_reply_raw(ctx, 200, "text/plain; version=0.0.4", out.data, out.len);
    buf_free(&out);
    return rc;
}

static const struct http_route service_probe_routes[] = {
    {"GET", "/healthz", service_healthz, 0, HTTP_PUBLIC | HTTP_QUIET},
    {"GET", "/readyz", service_readyz, 0, HTTP_PUBLIC | HTTP_QUIET},
    {"GET", "/metrics", service_metrics, 0, HTTP_PUBLIC | HTTP_QUIET},
};
#define NPROBES (sizeof service_probe_routes / sizeof service_probe_routes[0])

/* ---- start and stop ---- */

static enum status service_config_load(struct service *svc, const struct service_def *def)
{
    char errors[4096];
    int problems = config_load(service_vars, NVARS, &svc->cfg, errors, sizeof errors);

    if (def->nextra)
        problems += config_load(def->extra_config, def->nextra, def->extra_out,
                                errors + strlen(errors), sizeof errors - strlen(errors));
    enum log_level lvl = LOG_INFO;
    if (log_level_parse(svc->cfg.log_level ? svc->cfg.log_level : "info", &lvl) != 0) {
        size_t n = strlen(errors);
        snprintf(errors + n, sizeof errors - n,
                 "PTCE_LOG_LEVEL=%s is not one of debug, info, "
                 "warn, error\n",
                 svc->cfg.log_level);
        problems++;
    }
    log_init(def->name, lvl);
    if (problems) {
        fprintf(stderr, "%s: %d configuration problem(s):\n%s", def->name, problems, errors);
        return STATUS_INVALID;
    }
    if (svc->cfg.http_port == 0)
        svc->cfg.http_port = def->default_port;
    if (svc->cfg.db_statement_timeout_ms == 0 ||
        svc->cfg.http_defer_timeout_ms <= svc->cfg.db_statement_timeout_ms)
        log_event(LOG_WARN, "config.defer_timeout_short", "{s:I, s:I}", "defer_timeout_ms",
                  (json_int_t)svc->cfg.http_defer_timeout_ms, "statement_timeout_ms",
                  (json_int_t)svc->cfg.db_statement_timeout_ms);
    return STATUS_OK;
}

static enum status service_migrate(struct service *svc)
{
    struct db_conn conn;
    const struct migration *lists[] = {sql_common_migrations, svc->def->migrations};
    const size_t counts[] = {sql_common_migrations_count, svc->def->nmigrations};
    size_t applied = 0;
    enum status st = db_conn_open(&conn, svc->cfg.database_url, svc->def->schema, 0);

    if (st == STATUS_OK)
        st = migrate_apply(&conn, lists, counts, 2, &applied);
    db_conn_close(&conn);
    if (st == STATUS_OK)
        log_event(LOG_INFO, "migrations.done", "{s:i}", "applied", (int)applied);
    return st;
}

static void service_probe_dr(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    (void)m;
    (void)opaque;
}

static struct kafka_config service_kafka(const struct service *svc)
{
    struct kafka_config k = {svc->cfg.kafka_brokers,
                             svc->def->name,
                             svc->cfg.kafka_message_timeout_ms,
                             svc->cfg.kafka_partitions,
                             svc->cfg.kafka_replication,
                             svc->cfg.kafka_fetch_wait_ms ? svc->cfg.kafka_fetch_wait_ms
                                                          : svc->def->kafka_fetch_wait_ms};
    return k;
}

static enum status service_kafka_start(struct service *svc)
{
    char errstr[512];
    struct kafka_config k = service_kafka(svc);

    svc->probe = kafka_producer_new(&k, service_probe_dr, NULL, errstr, sizeof errstr);
    if (!svc->probe) {
        log_event(LOG_ERROR, "kafka.config_invalid", "{s:s}", "error", errstr);
        return STATUS_INVALID;
    }
    const char *topics[] = {svc->def->topic};
    enum status st = kafka_topics_ensure(svc->probe, topics, 1, k.partitions, k.replication, 15000);
    if (st != STATUS_OK)
        return st;
    struct outbox_relay_config rc = {
        svc->cfg.database_url,    svc->def->schema,        k,
        svc->cfg.outbox_batch,    svc->cfg.outbox_poll_ms, svc->cfg.db_statement_timeout_ms,
        !svc->def->outbox_by_poll};
    svc->relay = outbox_relay_start(&rc);
    if (!svc->relay)
        return STATUS_INTERNAL;
    if (svc->def->nconsume == 0)
        return STATUS_OK;
    /* The consumed topics may belong to a service not started yet: create them too. */
    st = kafka_topics_ensure(svc->probe, svc->def->consume_topics, svc->def->nconsume, k.partitions,
                             k.replication, 15000);
    if (st != STATUS_OK)
        return st;
    struct inbox_config ic = {.conninfo = svc->cfg.database_url,
                              .schema = svc->def->schema,
                              .kafka = k,
                              .group = svc->def->name,
                              .topics = svc->def->consume_topics,
                              .ntopics = svc->def->nconsume,
                              .handler = svc->def->on_event,
                              .routes = svc->def->event_routes,
                              .nroutes = svc->def->nevent_routes,
                              .prepare = svc->def->event_prepare,
                              .ud = svc,
                              .exit_after_commits = svc->cfg.failpoint_inbox_exit_after,
                              .max_attempts = svc->cfg.inbox_max_attempts,
                              .statement_timeout_ms = svc->cfg.db_statement_timeout_ms,
                              .consumers = svc->cfg.inbox_consumers ? svc->cfg.inbox_consumers
                                                                    : svc->def->inbox_consumers};
    svc->inbox = inbox_start(&ic);
    return svc->inbox ? STATUS_OK : STATUS_INTERNAL;
}

/* The probes and the service's routes, in one table (svc->routes); their count. */
static size_t service_routes_build(struct service *svc, const struct service_def *def)
{
    size_t n = def->nroutes + NPROBES;

    svc->routes = xcalloc(n, sizeof *svc->routes);
    memcpy(svc->routes, service_probe_routes, sizeof service_probe_routes);
    if (def->nroutes)
        memcpy(svc->routes + NPROBES, def->routes, def->nroutes * sizeof *svc->routes);
    return n;
}

static enum status service_http_start(struct service *svc)
{
    struct http_server_config hc = {
        .bind = svc->cfg.http_bind,
        .port = svc->cfg.http_port,
        .threads = svc->cfg.http_threads,
        .body_limit = svc->cfg.http_body_limit,
        .timeout_s = svc->cfg.http_timeout_s,
        .connection_limit = svc->cfg.http_connection_limit,
        .defer_timeout_ms = svc->cfg.http_defer_timeout_ms,
        .rate_limit_rps = svc->cfg.rate_limit_rps,
        .rate_limit_burst = svc->cfg.rate_limit_burst,
        .db_pool = svc->db,
        .db_threads = svc->cfg.db_threads,
    };

    return http_server_start(&svc->http, &hc, svc->routes, svc->def->nroutes + NPROBES, svc,
                             svc->auth);
}

static void service_stop(struct service *svc)
{
    http_server_stop(&svc->http); /* first: no new work arrives */
    if (svc->def->stop && svc->domain)
        svc->def->stop(svc);
    service_ready_stop(svc);
    inbox_stop(svc->inbox);
    outbox_relay_stop(svc->relay);
    if (svc->probe)
        rd_kafka_destroy(svc->probe);
    auth_free(svc->auth);
    db_pool_close(svc->db);
    free(svc->routes);
}

static enum status service_start(struct service *svc)
{
    enum status st = db_pool_open(&svc->db, svc->cfg.database_url, svc->def->schema,
                                  (size_t)svc->cfg.db_pool_size, svc->cfg.db_pool_wait_ms,
                                  svc->cfg.db_statement_timeout_ms);
    if (st != STATUS_OK) {
        log_event(LOG_ERROR, "service.database_unreachable", NULL);
        return st;
    }
    st = service_migrate(svc);
    if (st == STATUS_OK) {
        svc->auth = auth_new(svc->db, svc->cfg.auth_cache_ttl_ms);
        auth_set_failure_limit(svc->auth, svc->cfg.auth_failure_rps, svc->cfg.auth_failure_burst);
        st = service_kafka_start(svc);
    }
    if (st == STATUS_OK)
        st = service_ready_start(svc);
    if (st == STATUS_OK && svc->def->start)
        st = svc->def->start(svc);
    if (st == STATUS_OK)
        st = service_http_start(svc);
    return st;
}

int service_main(const struct service_def *def, int argc, char **argv)
{
    struct service svc;
    sigset_t sigs;
    int sig = 0;

    if (argc > 1 && strcmp(argv[1], "--help") == 0) {
        printf("ptce-%s: environment variables\n", def->name);
        config_print_help(service_vars, NVARS);
        config_print_help(def->extra_config, def->nextra);
        return 0;
    }
    memset(&svc, 0, sizeof svc);
    svc.def = def;
    size_t nroutes = service_routes_build(&svc, def);
    char why[256];
    if (http_routes_check(svc.routes, nroutes, why, sizeof why) != STATUS_OK) {
        fprintf(stderr, "ptce-%s: the route table is wrong, not starting: %s\n", def->name, why);
        free(svc.routes);
        return 2;
    }
    if (argc > 1 && strcmp(argv[1], "--routes") == 0) {
        struct buf out;
        buf_init(&out, 0);
        http_routes_print(svc.routes, nroutes, &out);
        fwrite(out.data, 1, out.len, stdout);
        buf_free(&out);
        free(svc.routes);
        return 0;
    }
    if (service_config_load(&svc, def) != STATUS_OK) {
        free(svc.routes);
        return 2;
    }
    log_set_async();
    /* Block the stop signals in every thread; the main thread waits for them below. */
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    enum status st = service_start(&svc);
    if (st != STATUS_OK) {
        log_event(LOG_ERROR, "service.start_failed", "{s:s}", "status", status_strerror(st));
        service_stop(&svc);
        log_flush();
        return 1;
    }
    log_event(LOG_INFO, "service.started", "{s:i}", "port", (int)svc.cfg.http_port);
    sigwait(&sigs, &sig);
    log_event(LOG_INFO, "service.stopping", "{s:i}", "signal", sig);
    service_stop(&svc);
    log_event(LOG_INFO, "service.stopped", NULL);
    log_flush();
    return 0;
}
