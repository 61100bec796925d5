/* clock: the few time helpers every module needs — RFC 3339 stamps, deadlines, short sleeps. */
#ifndef PTCE_CLOCK_H
#define PTCE_CLOCK_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "status.h"

/* Writes the current UTC time as RFC 3339 with milliseconds ("2026-11-26T14:00:00.000Z"). */
void time_now_rfc3339(char *out, size_t len);

/* Sets *out to now + ms on clock clk, for pthread_cond_timedwait and the like. */
void clock_deadline(clockid_t clk, long ms, struct timespec *out);

/* 1 when a is before b. */
int clock_ts_before(const struct timespec *a, const struct timespec *b);

/* Sleeps ms milliseconds (a signal may cut it short; callers loop on their own condition). */
void clock_sleep_ms(long ms);

/*
 * ---- RFC 3339 on the wire ----
 * Instants are int64_t microseconds since 1970-01-01T00:00:00Z (negative before it). Years
 * 0000 to 9999 only, as RFC 3339's four-digit year allows. Nothing here allocates, reads the
 * time zone or the locale.
 */

/* "YYYY-MM-DDTHH:MM:SS.mmmZ" and its terminator. */
#define CLOCK_RFC3339_LEN 25

/* A calendar date; month 1-12, day 1-31. */
struct clock_date {
    int year;
    int month;
    int day;
};

/*
 * Parses an RFC 3339 date-time (section 5.6) strictly into *us_out: "2026-02-28T14:00:00Z",
 * "2026-02-28T15:00:00.123456+01:00". 'T' and 'Z' may be lower case, as RFC 3339 allows; a
 * space instead of 'T', a missing offset, a day the month does not have (2026-02-31), hours
 * over 23, minutes over 59, a leap second (60, which POSIX time cannot hold) and anything
 * after the offset are STATUS_INVALID. Fractional seconds take 1 to 9 digits; digits past the
 * microsecond are dropped (truncated toward the earlier instant). *us_out untouched on failure.
 */
enum status clock_rfc3339_parse(const char *s, int64_t *us_out);

/*
 * Writes the instant as "YYYY-MM-DDTHH:MM:SS.mmmZ" (UTC, milliseconds, sub-milliseconds
 * truncated toward the earlier instant) into out. STATUS_INVALID, and out set to "", when the
 * year would fall outside 0000-9999.
 */
enum status clock_rfc3339_format(int64_t us, char out[CLOCK_RFC3339_LEN]);

/*
 * Parses a strict "YYYY-MM-DD" (RFC 3339 full-date) into *out; a day the month does not have
 * (2026-02-31, 2025-02-29) and anything else is STATUS_INVALID, *out untouched.
 */
enum status clock_date_parse(const char *s, struct clock_date *out);

/* Days from 1970-01-01 to the date (negative before it); the date must be valid. */
int64_t clock_date_days(const struct clock_date *d);

#endif
