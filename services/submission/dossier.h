/* dossier (submission): the dossier model, its mapping from DS and partners, and its checks. */
#ifndef PTCE_SUBMISSION_DOSSIER_H
#define PTCE_SUBMISSION_DOSSIER_H

#include <jansson.h>
#include <stddef.h>

#include "ds_mapping.h"

/* The eligibility rules of décret 2015-431 as this code evaluates them; waves name a version. */
#define DOSSIER_RULES_VERSION "decret-2015-431/v1"

/* Most pages a main document may have (décret 2015-431: a light dossier of 10 pages). */
#define DOSSIER_MAX_PAGES 10

/*
 * The content of a dossier, as a JSON object (owned by whoever holds the reference):
 *   carrier {siret, name, legal_form, legal_category}, ptce_name, territory {name, region},
 *   members [{name, siret, kind}], summary,
 *   main_document {filename, content_type, byte_size, checksum, pages, url?} or null,
 *   legal_person_private (true/false/null), prior_state_support (true/false/null).
 * legal_category is the INSEE catégorie juridique (4 digits, DS's formeJuridiqueCode); ptce_name
 * is the pôle's own name, the dossier's title. Missing answers are JSON null: the rules then say
 * needs_review rather than guess. The DS mapping (ds_mapping.h) fills it from a DS dossier.
 */

/* The content skeleton: every field present, each null (members empty). New reference. */
json_t *dossier_content_empty(void);

/*
 * Validates a partner's POST /v1/dossiers body and returns its content (new reference), or
 * NULL after appending {field, message} objects to errors.
 */
json_t *dossier_content_from_partner(json_t *body, json_t *errors);

/*
 * Evaluates every rule on content. Returns the array of checks
 * [{rule, outcome: pass|fail|needs_review, evidence}] and sets *eligibility to "eligible",
 * "ineligible" (any fail) or "needs_review".
 */
json_t *dossier_checks(json_t *content, const char **eligibility);

/* What a dossier is besides its content; strings are borrowed. */
struct dossier_meta {
    const char *id;
    const char *origin;  /* "ds" or "partner" */
    long long ds_number; /* 0 for partner deposits */
    const char *wave;
    const char *state;
    const char *eligibility;
    const char *rules_version;
    int version;
    const char *deposited_at;
    const char *updated_at;
    const char *ds_updated_at; /* may be NULL */
};

/*
 * The API representation of a dossier (new reference): meta, a flat region and title (ptce_name,
 * else the territory's name) for filters and consumers, the content (without expiring file URLs)
 * and the checks. Borrows content and checks.
 */
json_t *dossier_document(const struct dossier_meta *meta, json_t *content, json_t *checks);

/* 1 for the five DS states (en_construction, en_instruction, accepte, refuse, sans_suite). */
int ds_state_is_valid(const char *state);

/* The longest time text ds_time_parse reads, in bytes (api-spec's DsTime maxLength). */
#define DS_TIME_MAX 64

/*
 * Parses DS's webhook time ("2021-06-23 10:32:42 +0200", "2021-06-23 10:32:42 UTC", or
 * ISO 8601 "2021-06-23T10:32:42+02:00") into RFC 3339 UTC ("2021-06-23T08:32:42Z"),
 * fractional seconds dropped. The text is at most DS_TIME_MAX bytes, its date a real one of
 * the years 2000 to 2200 as written, and a zone without sign ("0200", a "+" that arrived as a
 * space) must follow a space: exactly what api-spec's DsTime pattern accepts.
 * Returns 0 on success, -1 for anything else.
 */
int ds_time_parse(const char *text, char *out, size_t outlen);

#endif
