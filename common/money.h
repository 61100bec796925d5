/* money: amounts as signed 64-bit euro cents — checked arithmetic, allocation, text and JSON. */
#ifndef PTCE_MONEY_H
#define PTCE_MONEY_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "status.h"

/*
 * An amount is an int64_t of euro cents, never anything else: 100 000,00 € is 10000000.
 * Every function here is integer-only (tools/lint.sh refuses the binary floating types in any
 * file that includes this header). A result out of the int64_t range is STATUS_INVALID: no
 * amount of this platform comes near 92 233 720 368 547 758,07 €, so getting there is bad input.
 */

/* "-92233720368547758.08" and its terminator fit in this. */
#define MONEY_STR_LEN 24

/* How money_mul_ratio rounds a result that falls between two cents. */
enum money_round {
    MONEY_ROUND_HALF_AWAY = 0, /* to the nearest cent; a half cent goes away from zero */
    MONEY_ROUND_FLOOR,         /* toward minus infinity: never more than the exact value */
};

/* *out = a + b; STATUS_INVALID (and *out untouched) when the sum leaves the int64_t range. */
enum status money_add(int64_t a, int64_t b, int64_t *out);

/* *out = a - b; STATUS_INVALID (and *out untouched) when it leaves the int64_t range. */
enum status money_sub(int64_t a, int64_t b, int64_t *out);

/*
 * *out = amount × num / den, rounded by `mode` (30 % of x is money_mul_ratio(x, 30, 100, …)).
 * The product is computed exactly in 128 bits. STATUS_INVALID when den <= 0 or the result
 * leaves the int64_t range; *out is then untouched.
 */
enum status money_mul_ratio(int64_t amount, int64_t num, int64_t den, enum money_round mode,
                            int64_t *out);

/*
 * Splits total into n parts proportional to weights (n >= 1, each weight >= 0, at least one
 * positive), writing them into parts (caller-owned, n elements). The parts always add up to
 * total exactly: each gets the floor of its exact share, and the cents left over go one each to
 * the parts with the largest remainders, the lower index first on a tie (largest-remainder
 * method). A negative total is split as its opposite, then negated. 100.00 € in three equal
 * weights: 33.34, 33.33, 33.33. STATUS_INVALID for bad weights or an overflowing weight sum;
 * parts is then untouched.
 */
enum status money_allocate(int64_t total, const int64_t *weights, size_t n, int64_t *parts);

/*
 * Parses a decimal amount of euros: an optional '-', digits without a superfluous leading zero,
 * then optionally '.' and one or two digits ("12", "100000.00", "-0.50", "0.5"). Refused with
 * STATUS_INVALID: an empty string, a '+', spaces, an exponent, three decimals, a lone '.',
 * anything after the number, and amounts out of the int64_t range. *out untouched on failure.
 */
enum status money_parse(const char *s, int64_t *out);

/* Writes cents as euros with exactly two decimals ("100000.00", "-0.50") into out. */
void money_format(int64_t cents, char out[MONEY_STR_LEN]);

/*
 * Reads an amount from a JSON value (borrowed): a JSON integer is a number of cents; a JSON
 * string is a decimal amount of euros as money_parse reads it. A JSON real (1.5, 1e5), a
 * boolean, null, an array or an object is STATUS_INVALID. *out untouched on failure.
 */
enum status money_from_json(const json_t *v, int64_t *out);

/* The JSON form of an amount: an integer of cents. Returns a new reference. */
json_t *money_to_json(int64_t cents);

#endif
