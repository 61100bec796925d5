/* clock: the few time helpers every module needs — RFC 3339 stamps, deadlines, short sleeps. */
#ifndef PTCE_CLOCK_H
#define PTCE_CLOCK_H

#include <stddef.h>
#include <time.h>

/* Writes the current UTC time as RFC 3339 with milliseconds ("2026-11-26T14:00:00.000Z"). */
void time_now_rfc3339(char *out, size_t len);

/* Sets *out to now + ms on clock clk, for pthread_cond_timedwait and the like. */
void clock_deadline(clockid_t clk, long ms, struct timespec *out);

/* Sleeps ms milliseconds (a signal may cut it short; callers loop on their own condition). */
void clock_sleep_ms(long ms);

#endif
