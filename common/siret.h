/* siret: French establishment identifiers (SIRET, 14 digits) and company ids (SIREN, 9). */
#ifndef PTCE_SIRET_H
#define PTCE_SIRET_H

enum siret_check {
    SIRET_OK = 0,
    SIRET_BAD_FORMAT, /* not exactly 14 decimal digits */
    SIRET_BAD_CHECKSUM,
};

/*
 * Checks a SIRET: 14 digits with a valid Luhn check digit. The establishments of La Poste
 * (SIREN 356000000) do not follow Luhn: their digits must add up to a multiple of 5 — all but
 * the head office, 35600000000048, which keeps the ordinary Luhn rule.
 */
enum siret_check siret_check(const char *siret);

/* A short English explanation of a check result. */
const char *siret_check_strerror(enum siret_check c);

#endif
