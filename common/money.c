/* money: euro cents as int64_t, with every operation checked and integer-only. */
#include "money.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "xalloc.h"

/* GCC and Clang's 128-bit integers hold any product of two int64_t exactly. */
typedef __int128 money_wide;
typedef unsigned __int128 money_uwide;

static enum status money_narrow(money_wide v, int64_t *out)
{
    if (v > INT64_MAX || v < INT64_MIN)
        return STATUS_INVALID;
    *out = (int64_t)v;
    return STATUS_OK;
}

enum status money_add(int64_t a, int64_t b, int64_t *out)
{
    return money_narrow((money_wide)a + b, out);
}

enum status money_sub(int64_t a, int64_t b, int64_t *out)
{
    return money_narrow((money_wide)a - b, out);
}

enum status money_mul_ratio(int64_t amount, int64_t num, int64_t den, enum money_round mode,
                            int64_t *out)
{
    if (den <= 0)
        return STATUS_INVALID;
    money_wide p = (money_wide)amount * num;
    money_wide q = p / den, r = p % den; /* C truncates toward zero: r has the sign of p */

    if (mode == MONEY_ROUND_FLOOR) {
        if (r < 0)
            q -= 1;
    } else {
        money_wide twice = r < 0 ? -2 * r : 2 * r;
        if (twice >= den)
            q += p < 0 ? -1 : 1;
    }
    return money_narrow(q, out);
}

/* The index of the part not yet given a cent with the largest remainder; lowest index on ties. */
static size_t money_alloc_pick(const money_uwide *rem, const unsigned char *given, size_t n)
{
    size_t best = n;

    for (size_t i = 0; i < n; i++) {
        if (given[i])
            continue;
        if (best == n || rem[i] > rem[best])
            best = i;
    }
    return best;
}

enum status money_allocate(int64_t total, const int64_t *weights, size_t n, int64_t *parts)
{
    int64_t sum = 0;

    if (n == 0)
        return STATUS_INVALID;
    for (size_t i = 0; i < n; i++) {
        if (weights[i] < 0 || money_add(sum, weights[i], &sum) != STATUS_OK)
            return STATUS_INVALID;
    }
    if (sum == 0)
        return STATUS_INVALID;

    /* Work on the magnitude, so that INT64_MIN needs no special case. */
    money_uwide mag = total < 0 ? (money_uwide)(-(money_wide)total) : (money_uwide)total;
    money_uwide *share = xcalloc(n, sizeof *share);
    money_uwide *rem = xcalloc(n, sizeof *rem);
    unsigned char *given = xcalloc(n, 1);
    money_uwide left = mag;

    for (size_t i = 0; i < n; i++) {
        money_uwide exact = mag * (money_uwide)weights[i]; /* < 2^126: no wrap */
        share[i] = exact / (money_uwide)sum;
        rem[i] = exact % (money_uwide)sum;
        left -= share[i];
    }
    /* The floors lose less than one cent each, so fewer than n cents are left over. */
    while (left > 0) {
        size_t k = money_alloc_pick(rem, given, n);
        share[k]++;
        given[k] = 1;
        left--;
    }
    for (size_t i = 0; i < n; i++)
        parts[i] = (int64_t)(total < 0 ? -(money_wide)share[i] : (money_wide)share[i]);
    free(share);
    free(rem);
    free(given);
    return STATUS_OK;
}

enum status money_parse(const char *s, int64_t *out)
{
    const char *p = s;
    int negative = 0, decimals = 0;
    money_wide v = 0;

    if (!s)
        return STATUS_INVALID;
    if (*p == '-') {
        negative = 1;
        p++;
    }
    if (*p < '0' || *p > '9')
        return STATUS_INVALID;
    if (p[0] == '0' && p[1] >= '0' && p[1] <= '9')
        return STATUS_INVALID; /* "007" */
    for (; *p >= '0' && *p <= '9'; p++) {
        v = v * 10 + (*p - '0');
        if (v > (money_wide)INT64_MAX + 1)
            return STATUS_INVALID; /* stop before the 128 bits could wrap */
    }
    if (*p == '.') {
        p++;
        for (; *p >= '0' && *p <= '9' && decimals < 3; p++, decimals++)
            v = v * 10 + (*p - '0');
        if (decimals == 0 || decimals > 2)
            return STATUS_INVALID;
    }
    if (*p != '\0')
        return STATUS_INVALID;
    for (; decimals < 2; decimals++)
        v *= 10;
    return money_narrow(negative ? -v : v, out);
}

void money_format(int64_t cents, char out[MONEY_STR_LEN])
{
    /* The magnitude as unsigned, so that INT64_MIN formats too. */
    uint64_t mag = cents < 0 ? (uint64_t)0 - (uint64_t)cents : (uint64_t)cents;

    snprintf(out, MONEY_STR_LEN, "%s%llu.%02llu", cents < 0 ? "-" : "",
             (unsigned long long)(mag / 100), (unsigned long long)(mag % 100));
}

enum status money_from_json(const json_t *v, int64_t *out)
{
    if (json_is_integer(v)) {
        json_int_t i = json_integer_value(v);
        return money_narrow((money_wide)i, out);
    }
    if (json_is_string(v)) {
        /* An embedded NUL would end the C string early and let "1\u00002" read as 1. */
        if (strlen(json_string_value(v)) != json_string_length(v))
            return STATUS_INVALID;
        return money_parse(json_string_value(v), out);
    }
    return STATUS_INVALID;
}

json_t *money_to_json(int64_t cents)
{
    return json_integer((json_int_t)cents);
}
