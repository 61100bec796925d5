/* log: one JSON object per line on stderr, one line per event. */
#ifndef PTCE_LOG_H
#define PTCE_LOG_H

#include <jansson.h>

enum log_level { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR };

/* Sets the service name stamped on every line and the lowest level written. */
void log_init(const char *service, enum log_level min_level);

/* Parses "debug", "info", "warn", "error"; returns -1 for anything else. */
int log_level_parse(const char *s, enum log_level *out);

/* 1 when a line at this level would be written (lets callers skip building fields). */
int log_enabled(enum log_level level);

/*
 * Writes {"ts","level","service","event","request_id"?, ...fields} as one line.
 * fields_fmt is a jansson json_pack() format describing an object ("{s:s, s:i}"), or NULL.
 * The line is written with a single write(2), so lines from threads never interleave.
 */
void log_event(enum log_level level, const char *event, const char *fields_fmt, ...);

/*
 * Switches to buffered writing: lines are queued and written by a background thread at least
 * every 50 ms (errors at once, with whatever is queued before them), which keeps 64 request
 * threads from queueing on the file lock. log_flush() writes what is queued; services call it
 * when they stop, and it is registered with atexit.
 */
void log_set_async(void);
void log_flush(void);

/* The request id of the calling thread, stamped on its lines; NULL clears it. Copied. */
void log_set_request_id(const char *request_id);
const char *log_request_id(void);

#endif
