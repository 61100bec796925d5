/* metrics: process-wide counters and gauges, rendered in Prometheus text format. */
#ifndef PTCE_METRICS_H
#define PTCE_METRICS_H

#include <stdatomic.h>

#include "xalloc.h"

/*
 * A named value owned by the module that declares it (usually a static). Register it once at
 * start-up; it stays registered for the life of the process. `labels` is a constant
 * Prometheus label set such as "topic=\"submission.events\"" or NULL.
 */
struct metric {
    const char *name;
    const char *help;
    const char *type; /* "counter" or "gauge" */
    const char *labels;
    atomic_long value;
    struct metric *next;
};

#define METRIC_COUNTER(n, h)                                                                       \
    {                                                                                              \
        (n), (h), "counter", NULL, 0, NULL                                                         \
    }
#define METRIC_GAUGE(n, h)                                                                         \
    {                                                                                              \
        (n), (h), "gauge", NULL, 0, NULL                                                           \
    }

/* Adds m to the registry (idempotent). Thread-safe. */
void metrics_register(struct metric *m);

static inline void metric_add(struct metric *m, long n)
{
    atomic_fetch_add_explicit(&m->value, n, memory_order_relaxed);
}

static inline void metric_set(struct metric *m, long v)
{
    atomic_store_explicit(&m->value, v, memory_order_relaxed);
}

/* Appends every registered metric to out, HELP and TYPE lines included. */
void metrics_render(struct buf *out);

#endif
