/* jnum: JSON numbers read as JSON Schema reads them. */
#include "jnum.h"

#include <math.h>

int jnum_integer_read(const json_t *v, long long min, long long max, long long *out)
{
    long long n;

    if (json_is_integer(v)) {
        n = json_integer_value(v);
    } else {
        double d = json_is_real(v) ? json_real_value(v) : 0.5;
        /* 2^63 is the first double past LLONG_MAX; a fraction fails floor(d) == d */
        if (floor(d) != d || d < -9223372036854775808.0 || d >= 9223372036854775808.0)
            return 0;
        n = (long long)d;
    }
    if (n < min || n > max)
        return 0;
    if (out)
        *out = n;
    return 1;
}
