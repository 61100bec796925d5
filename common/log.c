/* log: structured JSON lines on stderr with a per-thread request id. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char *log_service = "ptce";
static enum log_level log_min = LOG_INFO;
static _Thread_local char log_rid[64];

static const char *const log_names[] = {"debug", "info", "warn", "error"};

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

static void log_timestamp(char *out, size_t len)
{
    struct timespec ts;
    struct tm tm;

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(out, len, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, len - n, ".%03ldZ", ts.tv_nsec / 1000000);
}

void log_event(enum log_level level, const char *event, const char *fields_fmt, ...)
{
    char ts[40];
    json_t *line;

    if (!log_enabled(level))
        return;
    log_timestamp(ts, sizeof ts);
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
    text[n] = '\n'; /* overwrite the terminator: one write of exactly one line */
    ssize_t w = write(STDERR_FILENO, text, n + 1);
    (void)w;
    free(text);
}
