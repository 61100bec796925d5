/* support_model: the bouquet's and the charter's inputs, validated — no I/O, unit-tested. */
#ifndef PTCE_FUNDING_SUPPORT_MODEL_H
#define PTCE_FUNDING_SUPPORT_MODEL_H

#include <jansson.h>

#include "clock.h"
#include "status.h"
#include "uuid.h"

#define SUPPORT_TEXT_MAX 200
#define SUPPORT_NOTE_MAX 2000

/* A new catalogue action (POST /v1/support/actions). Strings are borrowed from the body. */
struct support_action_input {
    const char *title;
    const char *description;          /* NULL when absent */
    const char *partner_organisation; /* the organisation that delivers it */
    const char *partner_key_id;       /* NULL: any partner key may enrol */
    const char *format;               /* "individual" or "collective" */
    long capacity;
    char starts_on[11], ends_on[11]; /* YYYY-MM-DD */
};

/* A new enrolment (POST /v1/support/enrolments). Strings are borrowed from the body. */
struct support_enrolment_input {
    char action_id[UUID_STR_LEN];
    char dossier_id[UUID_STR_LEN];
    const char *note; /* NULL when absent */
};

/* A delivery of an enrolment (POST /v1/support/enrolments/{id}/deliveries). */
struct support_delivery_input {
    char delivered_on[11];
    const char *note; /* NULL when absent; borrowed */
};

/* A charter signature (POST /v1/charter/signatures). Strings are borrowed from the body. */
struct charter_signature_input {
    const char *organisation;
    const char *siret;
    const char *role; /* "carrier" or "contributor" */
    const char *charter_version;
    char signed_on[11];
};

/* What funding keeps of a dossier.decided event's data. Strings borrowed from the event. */
struct support_decision {
    char dossier_id[UUID_STR_LEN];
    const char *wave;
    const char *region; /* NULL when the event says null */
    const char *outcome;
    const char *reference;
    const char *decided_at;
    const char *ptce_name;         /* may be NULL */
    const char *beneficiary_siret; /* may be NULL */
    const char *beneficiary_name;  /* may be NULL */
};

/*
 * Each parser checks every field of body, appends one {"field", "message"} per problem to errors
 * (an array) and fills *out; it returns STATUS_OK when errors stayed empty, STATUS_INVALID
 * otherwise (then *out is partly filled and must not be used). `today` is the current UTC date:
 * a charter signature may not be dated in the future.
 */
enum status support_action_parse(const json_t *body, struct support_action_input *out,
                                 json_t *errors);
enum status support_enrolment_parse(const json_t *body, struct support_enrolment_input *out,
                                    json_t *errors);
enum status support_delivery_parse(const json_t *body, const struct clock_date *today,
                                   struct support_delivery_input *out, json_t *errors);
enum status charter_signature_parse(const json_t *body, const struct clock_date *today,
                                    struct charter_signature_input *out, json_t *errors);

/*
 * Reads the data of a dossier.decided event (api-spec/asyncapi.yaml, DecisionData with phase 1).
 * STATUS_INVALID, with the reason in why, when a required member is missing or malformed.
 */
enum status support_decision_parse(const json_t *data, struct support_decision *out, char *why,
                                   size_t whylen);

/* 1 for the outcome that opens the bouquet ("phase1_laureate"). */
int support_decision_grants(const struct support_decision *d);

/* Today's date in UTC. */
void support_today(struct clock_date *out);

#endif
