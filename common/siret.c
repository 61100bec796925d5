/* siret: Luhn validation of SIRET numbers, with La Poste's documented exception. */
#include "siret.h"

#include <string.h>

static int siret_luhn_ok(const char *digits, size_t n)
{
    int sum = 0;

    for (size_t i = 0; i < n; i++) {
        int d = digits[n - 1 - i] - '0';
        if (i % 2 == 1) {
            d *= 2;
            if (d > 9)
                d -= 9;
        }
        sum += d;
    }
    return sum % 10 == 0;
}

enum siret_check siret_check(const char *siret)
{
    if (!siret || strlen(siret) != 14)
        return SIRET_BAD_FORMAT;
    for (int i = 0; i < 14; i++) {
        if (siret[i] < '0' || siret[i] > '9')
            return SIRET_BAD_FORMAT;
    }
    /* La Poste's head office is the one establishment of SIREN 356000000 that keeps Luhn. */
    if (strncmp(siret, "356000000", 9) == 0 && strcmp(siret, "35600000000048") != 0) {
        int sum = 0;
        for (int i = 0; i < 14; i++)
            sum += siret[i] - '0';
        return sum % 5 == 0 ? SIRET_OK : SIRET_BAD_CHECKSUM;
    }
    return siret_luhn_ok(siret, 14) ? SIRET_OK : SIRET_BAD_CHECKSUM;
}

const char *siret_check_strerror(enum siret_check c)
{
    switch (c) {
    case SIRET_OK:
        return "valid";
    case SIRET_BAD_FORMAT:
        return "a SIRET is exactly 14 digits";
    case SIRET_BAD_CHECKSUM:
        return "the SIRET's check digit is wrong (Luhn)";
    }
    return "unknown";
}
