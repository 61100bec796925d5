/* log: structured JSON lines on stderr with a per-thread request id. */
#include "log.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "xalloc.h"

static const char *log_service = "ptce";
static enum log_level log_min = LOG_INFO;
static _Thread_local char log_rid[64];

static const char *const log_names[] = {"debug", "info", "warn", "error"};

/* Buffered mode: a queue of whole lines and the thread that writes it out. */
#define LOG_QUEUE_FLUSH (64 * 1024)     /* write as soon as this much is queued */
#define LOG_QUEUE_MAX (8 * 1024 * 1024) /* past this, the writer of the line waits its turn */
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t log_more = PTHREAD_COND_INITIALIZER;
static struct buf log_queue;
static int log_async;

static void log_write_all(const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(STDERR_FILENO, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return; /* stderr is gone: nothing better to do with a log line */
        p += w;
        n -= (size_t)w;
    }
}

/* Takes the queue out under the lock and writes it outside. Caller holds log_lock. */
static void log_drain_locked(void)
{
    struct buf out = log_queue;

    buf_init(&log_queue, 0);
    pthread_mutex_unlock(&log_lock);
    if (out.len)
        log_write_all(out.data, out.len);
    buf_free(&out);
    pthread_mutex_lock(&log_lock);
}

static void *log_writer(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&log_lock);
    for (;;) {
        struct timespec deadline;
        clock_deadline(CLOCK_REALTIME, 50, &deadline);
        if (log_queue.len < LOG_QUEUE_FLUSH)
            pthread_cond_timedwait(&log_more, &log_lock, &deadline);
        log_drain_locked();
    }
    return NULL;
}

void log_flush(void)
{
    pthread_mutex_lock(&log_lock);
    log_drain_locked();
    pthread_mutex_unlock(&log_lock);
}

void log_set_async(void)
{
    pthread_t t;

    pthread_mutex_lock(&log_lock);
    if (!log_async && pthread_create(&t, NULL, log_writer, NULL) == 0) {
        pthread_detach(t);
        log_async = 1;
        atexit(log_flush);
    }
    pthread_mutex_unlock(&log_lock);
}

/* Queues one line (buffered mode) or writes it (default, and for errors). */
static void log_emit(enum log_level level, const char *line, size_t n)
{
    pthread_mutex_lock(&log_lock);
    if (!log_async || level >= LOG_ERROR || log_queue.len + n > LOG_QUEUE_MAX) {
        log_drain_locked(); /* keep the order: what was queued goes first */
        log_write_all(line, n);
    } else {
        buf_append(&log_queue, line, n);
        if (log_queue.len >= LOG_QUEUE_FLUSH)
            pthread_cond_signal(&log_more);
    }
    pthread_mutex_unlock(&log_lock);
}

void log_init(const char *service, enum log_level min_level)
{
    log_service = service;
    log_min = min_level;
}

int log_level_parse(const char *s, enum log_level *out)
{
    for (size_t i = 0; i < sizeof log_names / sizeof log_names[0]; i++) {
        if (strcmp(s, log_names[i]) == 0) {
            *out = (enum log_level)i;
            return 0;
        }
    }
    return -1;
}

int log_enabled(enum log_level level)
{
    return level >= log_min;
}

void log_set_request_id(const char *request_id)
{
    if (!request_id) {
        log_rid[0] = '\0';
        return;
    }
    snprintf(log_rid, sizeof log_rid, "%s", request_id);
}

const char *log_request_id(void)
{
    return log_rid[0] ? log_rid : NULL;
}

void log_event(enum log_level level, const char *event, const char *fields_fmt, ...)
{
    char ts[40];
    json_t *line;

    if (!log_enabled(level))
        return;
    time_now_rfc3339(ts, sizeof ts);
    line = json_pack("{s:s, s:s, s:s, s:s}", "ts", ts, "level", log_names[level], "service",
                     log_service, "event", event);
    if (!line)
        return;
    if (log_rid[0])
        json_object_set_new(line, "request_id", json_string(log_rid));
    if (fields_fmt) {
        va_list ap;
        json_error_t err;

        va_start(ap, fields_fmt);
        json_t *fields = json_vpack_ex(&err, 0, fields_fmt, ap);
        va_end(ap);
        if (fields)
            json_object_update(line, fields); /* copies the members; we still own fields */
        else
            json_object_set_new(line, "log_error", json_string(err.text));
        json_decref(fields);
    }
    char *text = json_dumps(line, JSON_COMPACT);
    json_decref(line);
    if (!text)
        return;
    size_t n = strlen(text);
    text[n] = '\n'; /* overwrite the terminator: the line and its newline go out together */
    log_emit(level, text, n + 1);
    free(text);
}
