/* service: the life of a PTCE service process — config, database, Kafka, HTTP, signals. */
#ifndef PTCE_SERVICE_H
#define PTCE_SERVICE_H

#include "auth.h"
#include "config.h"
#include "db.h"
#include "http.h"
#include "inbox.h"
#include "migrate.h"
#include "outbox.h"

/* Settings every service reads from the environment (see the README's table). */
struct service_config {
    const char *http_bind;
    long http_port;
    long http_threads;
    long http_body_limit;
    long http_timeout_s;
    long http_connection_limit;
    long http_defer_timeout_ms;
    const char *database_url;
    long db_pool_size;
    long db_pool_wait_ms;
    long db_statement_timeout_ms;
    const char *kafka_brokers;
    long kafka_partitions;
    long kafka_replication;
    long kafka_message_timeout_ms;
    long kafka_fetch_wait_ms;
    long outbox_batch;
    long outbox_poll_ms;
    long auth_cache_ttl_ms;
    const char *log_level;
    long failpoint_inbox_exit_after;
    long inbox_max_attempts;
    long inbox_consumers;
    long rate_limit_rps;
    long rate_limit_burst;
    long auth_failure_rps;
    long auth_failure_burst;
    long db_threads;
};

struct service;

/*
 * What /readyz answers, kept by a thread of its own that checks the database (on a dedicated
 * connection, not the pool) and Kafka every SERVICE_READY_PERIOD_MS: a probe never holds an
 * HTTP worker on either. A state older than SERVICE_READY_STALE_MS (the checker is stuck on a
 * server that does not answer) counts as not ready.
 */
#define SERVICE_READY_PERIOD_MS 500
#define SERVICE_READY_STALE_MS 3000
struct service_ready {
    atomic_int database, kafka;
    atomic_long checked_ms; /* CLOCK_MONOTONIC milliseconds of the last check; 0: none yet */
    pthread_mutex_t lock;
    pthread_cond_t wake;
    int stop;
    int started;
    pthread_t thread;
};

/* What makes one service different from another. Everything here is static data. */
struct service_def {
    const char *name;   /* "submission": log name, Kafka client id and consumer group */
    const char *schema; /* its PostgreSQL schema */
    long default_port;
    const struct migration *migrations;
    size_t nmigrations;
    const struct http_route *routes;
    size_t nroutes;
    const char *topic;                 /* the topic its outbox publishes to */
    const char *const *consume_topics; /* may be NULL */
    size_t nconsume;
    inbox_handler_fn on_event;              /* one handler for every event, or: */
    const struct inbox_route *event_routes; /* a handler per event type (inbox_dispatch) */
    size_t nevent_routes;
    inbox_prepare_fn event_prepare; /* may be NULL: inbox_config.prepare */
    /* Members of the consumer group per process when PTCE_INBOX_CONSUMERS is 0 (0 means 1). */
    long inbox_consumers;
    /* The consumers' fetch.wait.max.ms when PTCE_KAFKA_FETCH_WAIT_MS is 0 (0 means 10). */
    long kafka_fetch_wait_ms;
    /*
     * 1: the relay is not woken by the service's commits and publishes at its poll
     * (PTCE_OUTBOX_POLL_MS), in rounds as large as the poll gathers: for events in no hurry
     * whose commits come by thousands a second. 0: each commit that appended wakes it.
     */
    int outbox_by_poll;
    /* Extra configuration read into extra_out, after the common table. */
    const struct config_var *extra_config;
    size_t nextra;
    void *extra_out;
    /* Optional domain hooks, run after the common parts start and before they stop. */
    enum status (*start)(struct service *svc);
    void (*stop)(struct service *svc);
};

/* The running service; handlers receive it as ctx->app. */
struct service {
    const struct service_def *def;
    struct service_config cfg;
    struct db_pool *db;
    struct auth *auth;
    rd_kafka_t *probe; /* a producer handle used only for readiness and topic creation */
    struct outbox_relay *relay;
    struct inbox *inbox;
    struct http_server http;
    struct http_route *routes; /* the service's routes plus the probes */
    struct service_ready ready;
    void *domain; /* the service's own state, set by def->start */
};

/*
 * Runs the service until SIGTERM or SIGINT, then stops it gracefully: stop accepting, finish
 * in-flight requests, stop the consumer (committing offsets), flush the producer.
 * `--help` prints the configuration table; `--routes` the route table, one line per route:
 * method, pattern, allowed roles (or `public`), hidden roles (or `-`). A route table that
 * http_routes_check refuses stops the service before anything starts (exit code 2).
 * Returns the process exit code.
 */
int service_main(const struct service_def *def, int argc, char **argv);

#endif
