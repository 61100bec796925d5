/* domain (instruction): the pure rules of instruction — no I/O, unit-tested. */
#ifndef PTCE_INSTRUCTION_DOMAIN_H
#define PTCE_INSTRUCTION_DOMAIN_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "status.h"
#include "xalloc.h"

/* The states of instruction's lifecycle (../shared/DESIGN.md), NULL-terminated. */
extern const char *const domain_states[];

/* 1 when state is one of domain_states. */
int domain_state_known(const char *state);

/*
 * The DS mutation a transition writes back (NULL: none): regional review started →
 * dossierPasserEnInstruction, phase1_laureate → dossierAccepter, refused → dossierRefuser,
 * closed → dossierClasserSansSuite, correction_requested → dossierRepasserEnConstruction.
 */
const char *domain_writeback_mutation(const char *from, const char *to);

/* The decision phase of a national outcome: 1, 2, or 0 when `to` is no decision. */
int domain_decision_phase(const char *to);

/* The state a dossier must be in for a national decision of that phase. */
const char *domain_decision_from(int phase);

/* 1 when the regional opinion is favourable, reserved or unfavourable. */
int domain_opinion_valid(const char *opinion);

/*
 * Checks an annotation value against its catalogue type ("text", "boolean", "integer",
 * "date" as YYYY-MM-DD). JSON null always passes (it empties the annotation). 1 when it fits.
 */
int domain_annotation_value_ok(const char *type, const json_t *value);

/* 1 when an annotation value counts as filled (not null, not a blank string). */
int domain_annotation_filled(const json_t *value);

/*
 * A review's total against a grid: criteria is [{"key", "weight", "max"}, …], scores is
 * {"<key>": integer 0..max, …} naming every criterion and nothing else. *total receives the
 * weighted score in hundredths of a percent of the maximum (0..10000, rounded half up, integer
 * arithmetic). STATUS_INVALID with a sentence in why otherwise.
 */
enum status domain_review_total(const json_t *criteria, const json_t *scores, int *total, char *why,
                                size_t whylen);

/*
 * The consolidated score of reviews' totals: their mean rounded half up and the spread (max −
 * min). n == 0: *mean = *spread = -1.
 */
void domain_consolidate(const int *totals, size_t n, int *mean, int *spread);

/* The p-th percentile (0..100, nearest rank) of n sorted values; -1 when n == 0. */
int64_t domain_percentile(const int64_t *sorted, size_t n, int p);

/* qsort comparator of int64_t values, ascending. */
int domain_int64_cmp(const void *a, const void *b);

/*
 * Appends s to out as one CSV field for ';'-separated files: quoted (doubling quotes) when it
 * holds ';', '"', CR or LF; NULL appends nothing (an empty field).
 */
void domain_csv_field(struct buf *out, const char *s);

/*
 * 1 when the SIRET is one of the dossier document's members' (or its carrier's) SIRETs, the
 * conflict of interest the expert check blocks. Spaces in either are ignored.
 */
int domain_siret_conflicts(const json_t *dossier_doc, const char *siret);

#endif
