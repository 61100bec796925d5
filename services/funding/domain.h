/* domain (funding): agreements' schedules, clauses, decisions and open data — no I/O. */
#ifndef PTCE_FUNDING_DOMAIN_H
#define PTCE_FUNDING_DOMAIN_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "status.h"
#include "xalloc.h"

#define FUNDING_DEFAULT_AMOUNT_CENTS 10000000 /* 100 000,00 € */
#define FUNDING_DEFAULT_DURATION_MONTHS 24
#define FUNDING_MAX_TRANCHES 8

/*
 * The default tranche template of a wave: 50 % at the State's signature, 50 % in year 2 once
 * the year-1 reports are approved. A template is a JSON array of {"label", "weight" (integer
 * > 0), "condition", "due_offset_months" (0..60)}. Returns a new reference.
 */
json_t *funding_template_default(void);

/*
 * Checks a template (borrowed): 1 to FUNDING_MAX_TRANCHES elements of the shape above, each
 * condition one of the tranche conditions of the schema. STATUS_INVALID with a sentence in why.
 */
enum status funding_template_check(const json_t *tmpl, char *why, size_t whylen);

/*
 * The schedule of an agreement of amount cents: one tranche per template element (borrowed),
 * {"label", "condition", "due_offset_months", "amount_cents"}, the amounts split by weight with
 * money_allocate so that they always add up to amount. *out receives a new array.
 * STATUS_INVALID (why filled) for a bad template or a negative amount.
 */
enum status funding_schedule_build(int64_t amount, const json_t *tmpl, json_t **out, char *why,
                                   size_t whylen);

/*
 * 0 when the schedule's amounts (borrowed array of {"amount_cents"}) add up to amount exactly,
 * -1 otherwise (a missing or negative amount included).
 */
int funding_schedule_matches(const json_t *schedule, int64_t amount);

/* What a dossier.phase2_decided event says, borrowed from the event's data. */
struct funding_decision {
    const char *dossier_id;
    const char *wave;
    const char *region; /* NULL: none */
    const char *outcome;
    const char *reference;
    const char *decided_at;
    const char *ptce_name; /* NULL: none */
    const char *siret;     /* NULL: none */
    const char *name;      /* NULL: none */
};

/*
 * Reads and checks the data of a dossier.phase2_decided event (borrowed): phase 2, an outcome
 * of the asyncapi enum, a dossier uuid, a wave, a reference, an RFC 3339 decided_at. Returns
 * STATUS_INVALID (why filled) otherwise; d's strings point into data.
 */
enum status funding_decision_read(const json_t *data, struct funding_decision *d, char *why,
                                  size_t whylen);

/* 1 when the decision makes the dossier a phase-2 laureate. */
int funding_decision_is_laureate(const struct funding_decision *d);

/*
 * The clauses that loi 2000-321 art. 10 asks of a convention (objet, montant, modalités de
 * versement, conditions d'utilisation) and its duration, as data, from the decision and the
 * schedule (borrowed). Returns a new object.
 */
json_t *funding_clauses_build(const struct funding_decision *d, int64_t amount, long months,
                              const json_t *schedule);

/* The open data's grantor: the granting body's name and SIRET (configuration). */
struct funding_grantor {
    const char *name;
    const char *siret;
};

/* The 14 columns of SCDL subventions v2.0.1, in order, joined by commas, with CRLF. */
extern const char funding_scdl_header[];

/* One row of the open data, from an agreement's stored fields (all borrowed). */
struct funding_scdl_row {
    const char *date_convention; /* YYYY-MM-DD: the State's signature */
    const char *reference;
    const char *beneficiary_name;
    const char *beneficiary_siret;
    const char *object;
    int64_t amount_cents;
    int ntranches;          /* tranches that are not cancelled */
    const char *first_date; /* YYYY-MM-DD */
    const char *last_date;  /* YYYY-MM-DD */
};

/* Appends one CSV row (RFC 4180 quoting where needed, CRLF) to out. */
void funding_scdl_row_append(struct buf *out, const struct funding_grantor *g,
                             const struct funding_scdl_row *row);

/* Appends s to out as one CSV field: quoted, with '"' doubled, when it holds , " CR or LF. */
void funding_csv_field_append(struct buf *out, const char *s);

#endif
