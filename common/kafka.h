/* kafka: librdkafka producer, consumer and topic set-up with the platform's settings. */
#ifndef PTCE_KAFKA_H
#define PTCE_KAFKA_H

#include <librdkafka/rdkafka.h>

#include "status.h"

/*
 * The largest event the producer sends and the topics it creates accept, in bytes. A maximal
 * deposit under the default 1 MiB body limit makes an event of about the body's size (plus the
 * envelope and computed fields, a few KiB); 8 MiB leaves room even for JSON that jansson writes
 * out longer than it came in (1e-7 becomes 9.9999999999999995e-08). The broker's
 * message.max.bytes (deploy/local/kafka.sh, docker-compose.yml) is KAFKA_TOPIC_MAX_BYTES too.
 */
#define KAFKA_MESSAGE_MAX_BYTES 8388608
/* A record batch of one such message, with its framing: the topic's max.message.bytes. */
#define KAFKA_TOPIC_MAX_BYTES 8454144

struct kafka_config {
    const char *brokers;     /* bootstrap.servers */
    const char *client_id;   /* the service name */
    long message_timeout_ms; /* how long the producer keeps trying to deliver one message */
    long partitions;         /* for topics this service creates */
    long replication;        /* likewise */
    long fetch_wait_ms;      /* a consumer's fetch.wait.max.ms; 0: 10 ms */
};

/*
 * An idempotent producer (enable.idempotence, acks=all, in-order retries, message.max.bytes =
 * KAFKA_MESSAGE_MAX_BYTES). dr_cb receives the
 * delivery reports, which are the only truth about what reached the broker; the message
 * opaque is the caller's. Returns NULL and explains in errstr on a configuration error.
 */
rd_kafka_t *kafka_producer_new(const struct kafka_config *cfg,
                               void (*dr_cb)(rd_kafka_t *, const rd_kafka_message_t *, void *),
                               void *opaque, char *errstr, size_t errlen);

/*
 * A consumer in group `group`, subscribed to topics, with automatic offset *store* disabled:
 * the caller stores an offset only after its own commit, and the periodic auto-commit then
 * commits only stored offsets. stats_cb (may be NULL) gets librdkafka statistics every 5 s.
 */
rd_kafka_t *kafka_consumer_new(const struct kafka_config *cfg, const char *group,
                               const char *const *topics, size_t ntopics,
                               int (*stats_cb)(rd_kafka_t *, char *, size_t, void *), void *opaque,
                               char *errstr, size_t errlen);

/*
 * Creates the topics that are missing, with max.message.bytes = KAFKA_TOPIC_MAX_BYTES
 * (existing ones are left as they are).
 */
enum status kafka_topics_ensure(rd_kafka_t *rk, const char *const *topics, size_t ntopics,
                                long partitions, long replication, int timeout_ms);

/*
 * 1 when a produce error can never succeed on a retry of the same message (too large, invalid
 * record or message, bad argument), 0 when it is worth retrying (timeouts, broker down, queue
 * full, authorization or leadership changes an operator or the cluster will fix).
 */
int kafka_err_is_permanent(rd_kafka_resp_err_t err);

/* 1 when a broker answered a metadata request within timeout_ms. */
int kafka_reachable(rd_kafka_t *rk, int timeout_ms);

/* Sums consumer_lag over the partitions of a librdkafka statistics JSON; -1 if none. */
long kafka_stats_consumer_lag(const char *json, size_t len);

#endif
