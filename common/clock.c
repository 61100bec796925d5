/* clock: RFC 3339 stamps, deadlines and sleeps, written once for every module. */
#include "clock.h"

#include <stdio.h>
#include <string.h>

void time_now_rfc3339(char *out, size_t len)
{
    struct timespec ts;
    struct tm tm;

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(out, len, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, len - n, ".%03ldZ", ts.tv_nsec / 1000000);
}

void clock_deadline(clockid_t clk, long ms, struct timespec *out)
{
    clock_gettime(clk, out);
    out->tv_sec += ms / 1000;
    out->tv_nsec += (ms % 1000) * 1000000L;
    if (out->tv_nsec >= 1000000000L) {
        out->tv_sec++;
        out->tv_nsec -= 1000000000L;
    }
}

int clock_ts_before(const struct timespec *a, const struct timespec *b)
{
    return a->tv_sec < b->tv_sec || (a->tv_sec == b->tv_sec && a->tv_nsec < b->tv_nsec);
}

void clock_sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

    nanosleep(&ts, NULL);
}

/* ---- RFC 3339 ---- */

static int clock_is_leap(int y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int clock_month_days(int y, int m)
{
    static const int days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};

    return m == 2 && clock_is_leap(y) ? 29 : days[m - 1];
}

/* Reads exactly n decimal digits at s into *out; 0 when one of them is not a digit. */
static int clock_digits(const char *s, int n, int *out)
{
    int v = 0;

    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return 0;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 1;
}

/* "YYYY-MM-DD" at the start of s (10 characters), checked against the calendar. */
static int clock_date_read(const char *s, struct clock_date *d)
{
    if (!clock_digits(s, 4, &d->year) || s[4] != '-' || !clock_digits(s + 5, 2, &d->month) ||
        s[7] != '-' || !clock_digits(s + 8, 2, &d->day))
        return 0;
    if (d->month < 1 || d->month > 12)
        return 0;
    return d->day >= 1 && d->day <= clock_month_days(d->year, d->month);
}

/* Howard Hinnant's days_from_civil: the proleptic Gregorian calendar, no time zone involved. */
int64_t clock_date_days(const struct clock_date *d)
{
    int64_t y = d->year - (d->month <= 2);
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t mp = (d->month + 9) % 12; /* March is 0 */
    int64_t doy = (153 * mp + 2) / 5 + d->day - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;

    return era * 146097 + doe - 719468;
}

/* The inverse of clock_date_days. */
static void clock_days_date(int64_t z, struct clock_date *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    int64_t m = mp < 10 ? mp + 3 : mp - 9;

    d->day = (int)(doy - (153 * mp + 2) / 5 + 1);
    d->month = (int)m;
    d->year = (int)(yoe + era * 400 + (m <= 2));
}

enum status clock_date_parse(const char *s, struct clock_date *out)
{
    struct clock_date d;

    if (!s || strlen(s) != 10 || !clock_date_read(s, &d))
        return STATUS_INVALID;
    *out = d;
    return STATUS_OK;
}

/* Reads "[.digits](Z|±HH:MM)" at s: the microseconds and the offset in seconds east of UTC. */
static int clock_frac_offset(const char *s, int64_t *frac_us, int64_t *offset_s)
{
    int64_t us = 0;
    int ndigits = 0, hh, mm;

    if (*s == '.') {
        for (s++; *s >= '0' && *s <= '9'; s++, ndigits++) {
            if (ndigits >= 9)
                return 0;
            if (ndigits < 6)
                us = us * 10 + (*s - '0');
        }
        if (ndigits == 0)
            return 0;
        for (int i = ndigits; i < 6; i++)
            us *= 10;
    }
    *frac_us = us;
    if (*s == 'Z' || *s == 'z') {
        *offset_s = 0;
        return s[1] == '\0';
    }
    if ((*s != '+' && *s != '-') || !clock_digits(s + 1, 2, &hh) || s[3] != ':' ||
        !clock_digits(s + 4, 2, &mm) || s[6] != '\0')
        return 0;
    if (hh > 23 || mm > 59)
        return 0;
    *offset_s = (*s == '-' ? -1 : 1) * (int64_t)(hh * 3600 + mm * 60);
    return 1;
}

enum status clock_rfc3339_parse(const char *s, int64_t *us_out)
{
    struct clock_date d;
    int hh, mi, ss;
    int64_t frac, offset;

    if (!s || strlen(s) < 20 || !clock_date_read(s, &d) || (s[10] != 'T' && s[10] != 't'))
        return STATUS_INVALID;
    if (!clock_digits(s + 11, 2, &hh) || s[13] != ':' || !clock_digits(s + 14, 2, &mi) ||
        s[16] != ':' || !clock_digits(s + 17, 2, &ss))
        return STATUS_INVALID;
    if (hh > 23 || mi > 59 || ss > 59 || !clock_frac_offset(s + 19, &frac, &offset))
        return STATUS_INVALID;
    int64_t secs = clock_date_days(&d) * 86400 + hh * 3600 + mi * 60 + ss - offset;
    *us_out = secs * 1000000 + frac;
    return STATUS_OK;
}

enum status clock_rfc3339_format(int64_t us, char out[CLOCK_RFC3339_LEN])
{
    /* Floor divisions, so that an instant before 1970 still counts forward within its day. */
    int64_t secs = us / 1000000 - (us % 1000000 < 0);
    int64_t sub_us = us - secs * 1000000;
    int64_t days = secs / 86400 - (secs % 86400 < 0);
    int64_t tod = secs - days * 86400;
    struct clock_date d;

    out[0] = '\0';
    if (days < -719528 || days > 2932896) /* 0000-01-01 .. 9999-12-31 */
        return STATUS_INVALID;
    clock_days_date(days, &d);
    /* Wide enough for any int, so the compiler sees no truncation; in range, 24 fit. */
    char text[80];
    snprintf(text, sizeof text, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", d.year, d.month, d.day,
             (int)(tod / 3600), (int)(tod / 60 % 60), (int)(tod % 60), (int)(sub_us / 1000));
    memcpy(out, text, CLOCK_RFC3339_LEN - 1);
    out[CLOCK_RFC3339_LEN - 1] = '\0';
    return STATUS_OK;
}
