/* jnum: JSON numbers read as JSON Schema reads them. */
#ifndef PTCE_JNUM_H
#define PTCE_JNUM_H

#include <jansson.h>

/*
 * 1 when v is a JSON number of integral value from min to max, stored into *out (may be NULL):
 * JSON Schema's "integer" takes 8.0 as well as 8 (jansson reads the first as a real), and so
 * does this. 0 for anything else (a fraction, a string, a value out of range).
 */
int jnum_integer_read(const json_t *v, long long min, long long max, long long *out);

#endif
