/* metrics: a linked registry of atomic counters and gauges. */
#include "metrics.h"

#include <pthread.h>
#include <string.h>

static pthread_mutex_t metrics_lock = PTHREAD_MUTEX_INITIALIZER;
static struct metric *metrics_head;

void metrics_register(struct metric *m)
{
    pthread_mutex_lock(&metrics_lock);
    for (struct metric *it = metrics_head; it; it = it->next) {
        if (it == m) {
            pthread_mutex_unlock(&metrics_lock);
            return;
        }
    }
    m->next = metrics_head;
    metrics_head = m;
    pthread_mutex_unlock(&metrics_lock);
}

static void metrics_render_one(struct buf *out, const struct metric *m)
{
    if (m->labels)
        buf_printf(out, "%s{%s} %ld\n", m->name, m->labels, atomic_load(&m->value));
    else
        buf_printf(out, "%s %ld\n", m->name, atomic_load(&m->value));
}

/* 1 when a metric of the same family was met before m (and so already printed). */
static int metrics_family_seen(const struct metric *m)
{
    for (const struct metric *p = metrics_head; p != m; p = p->next) {
        if (strcmp(p->name, m->name) == 0)
            return 1;
    }
    return 0;
}

void metrics_render(struct buf *out)
{
    pthread_mutex_lock(&metrics_lock);
    /* The text format wants a family's samples together, under one HELP and TYPE. */
    for (const struct metric *m = metrics_head; m; m = m->next) {
        if (metrics_family_seen(m))
            continue;
        buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", m->name, m->help, m->name, m->type);
        for (const struct metric *s = m; s; s = s->next) {
            if (strcmp(s->name, m->name) == 0)
                metrics_render_one(out, s);
        }
    }
    pthread_mutex_unlock(&metrics_lock);
}
