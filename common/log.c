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
#include "utf8.h"
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

/*
 * Appends s as a JSON string. Valid UTF-8 goes through as it is; a byte that does not start a
 * valid sequence becomes U+FFFD, so a line stays valid JSON whatever a client sent.
 */
static void log_put_string(struct buf *b, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)s;

    if (!s) {
        buf_append(b, "null", 4);
        return;
    }
    buf_append(b, "\"", 1);
    while (*p) {
        const unsigned char *run = p;
        /* the common case: printable ASCII that needs no escape */
        while (*p >= 0x20 && *p < 0x80 && *p != '"' && *p != '\\')
            p++;
        if (p > run)
            buf_append(b, run, (size_t)(p - run));
        if (!*p)
            break;
        unsigned char c = *p;
        if (c == '"' || c == '\\') {
            char esc[2] = {'\\', (char)c};
            buf_append(b, esc, 2);
            p++;
        } else if (c < 0x20) {
            char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            if (c == '\n')
                buf_append(b, "\\n", 2);
            else if (c == '\t')
                buf_append(b, "\\t", 2);
            else if (c == '\r')
                buf_append(b, "\\r", 2);
            else
                buf_append(b, esc, 6);
            p++;
        } else {
            size_t n = utf8_sequence(p); /* c >= 0x80 here: 0 or a multi-byte sequence */
            if (n) {
                buf_append(b, p, n);
                p += n;
            } else {
                buf_append(b, "\\ufffd", 6);
                p++;
            }
        }
    }
    buf_append(b, "\"", 1);
}

static void log_put_int(struct buf *b, long long v)
{
    char tmp[24], *q = tmp + sizeof tmp;
    unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;

    do {
        *--q = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        *--q = '-';
    buf_append(b, q, (size_t)(tmp + sizeof tmp - q));
}

/*
 * Whether fields_fmt is an object of "s:X" pairs with X among s, s?, i, I, b: the formats the
 * services use, which log_put_fields writes without building jansson values. One line per
 * request goes through here, and building it as a json_t tree cost as much as the request.
 */
static int log_fmt_direct(const char *fmt)
{
    const char *f = fmt;

    while (*f == ' ')
        f++;
    if (*f++ != '{')
        return 0;
    for (;;) {
        while (*f == ' ' || *f == ',')
            f++;
        if (*f == '}')
            return f[1] == '\0';
        if (f[0] != 's' || f[1] != ':')
            return 0;
        f += 2;
        if (*f == 's' && f[1] == '?')
            f += 2;
        else if (*f == 's' || *f == 'i' || *f == 'I' || *f == 'b')
            f++;
        else
            return 0;
        if (*f != ',' && *f != ' ' && *f != '}')
            return 0;
    }
}

/* Writes the members of a format accepted by log_fmt_direct, each preceded by a comma. */
static void log_put_fields(struct buf *b, const char *fmt, va_list ap)
{
    for (const char *f = fmt; *f; f++) {
        if (f[0] != 's' || f[1] != ':')
            continue;
        f += 2;
        const char *key = va_arg(ap, const char *);
        if (*f == 's') {
            const char *v = va_arg(ap, const char *);
            if (!v && f[1] != '?') { /* as json_pack: only "s?" takes NULL */
                buf_append(b, ",\"log_error\":", 13);
                log_put_string(b, "NULL string value");
                continue;
            }
            buf_append(b, ",", 1);
            log_put_string(b, key);
            buf_append(b, ":", 1);
            log_put_string(b, v); /* NULL: null */
            continue;
        }
        buf_append(b, ",", 1);
        log_put_string(b, key);
        buf_append(b, ":", 1);
        if (*f == 'i') {
            log_put_int(b, va_arg(ap, int));
        } else if (*f == 'I') {
            log_put_int(b, (long long)va_arg(ap, json_int_t));
        } else { /* 'b' */
            if (va_arg(ap, int))
                buf_append(b, "true", 4);
            else
                buf_append(b, "false", 5);
        }
    }
}

/* Any other format: built with jansson, then its members appended to the line. */
static void log_put_packed(struct buf *b, const char *fmt, va_list ap)
{
    json_error_t err;
    json_t *fields = json_vpack_ex(&err, 0, fmt, ap);
    if (!fields) {
        buf_append(b, ",\"log_error\":", 13);
        log_put_string(b, err.text);
        return;
    }
    char *text = json_dumps(fields, JSON_COMPACT);
    json_decref(fields);
    if (!text)
        return;
    size_t n = strlen(text);
    if (n > 2) { /* "{...}" minus its braces, after a comma */
        buf_append(b, ",", 1);
        buf_append(b, text + 1, n - 2);
    }
    free(text);
}

void log_event(enum log_level level, const char *event, const char *fields_fmt, ...)
{
    char ts[40];
    struct buf line;

    if (!log_enabled(level))
        return;
    time_now_rfc3339(ts, sizeof ts);
    buf_init(&line, 0);
    buf_append(&line, "{\"ts\":\"", 7);
    buf_append(&line, ts, strlen(ts));
    buf_append(&line, "\",\"level\":\"", 11);
    buf_append(&line, log_names[level], strlen(log_names[level]));
    buf_append(&line, "\",\"service\":", 12);
    log_put_string(&line, log_service);
    buf_append(&line, ",\"event\":", 9);
    log_put_string(&line, event);
    if (log_rid[0]) {
        buf_append(&line, ",\"request_id\":", 14);
        log_put_string(&line, log_rid);
    }
    if (fields_fmt) {
        va_list ap;
        va_start(ap, fields_fmt);
        if (log_fmt_direct(fields_fmt))
            log_put_fields(&line, fields_fmt, ap);
        else
            log_put_packed(&line, fields_fmt, ap);
        va_end(ap);
    }
    buf_append(&line, "}\n", 2);
    log_emit(level, line.data, line.len);
    buf_free(&line);
}
