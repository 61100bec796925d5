/* support_store: all SQL of the bouquet of services, one function per use case. */
#ifndef PTCE_FUNDING_SUPPORT_STORE_H
#define PTCE_FUNDING_SUPPORT_STORE_H

#include <jansson.h>

#include "auth.h"
#include "db.h"
#include "http_idem.h"
#include "support_model.h"

/* An RFC 3339 UTC rendering of a timestamptz column, for json_build_object. */
#define SUPPORT_SQL_TIME(col)                                                                      \
    "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"

/* One page of a list whose rows are (seq, JSON text), in seq order. */
struct support_page {
    json_t *items; /* new reference: the caller owns it */
    int more;      /* 1 when another page follows */
    long long last_seq;
};

/*
 * Runs a list statement whose $1 is the seq to start after and $2 the row limit (the function
 * asks for limit + 1 to learn whether a page follows), then, when nextra is 1, $3 = extra (may
 * be NULL: SQL NULL). Fills *out on STATUS_OK.
 */
enum status support_store_page(struct db_pool *db, struct db_stmt *stmt, int nextra,
                               const char *extra, long long after, long limit,
                               struct support_page *out);

/* Runs stmt on a pooled connection, outside any explicit transaction; *res as db_exec's. */
enum status support_store_run(struct db_pool *db, struct db_stmt *stmt, int nparams,
                              const char *const *params, PGresult **res);
/*
 * Runs a creating stmt answering one JSON text (*json, caller frees) in a transaction of its
 * own that holds the request's Idempotency-Key (http_idem.h): a replay answers the first text and
 * runs nothing.
 */
enum status support_store_create(struct db_pool *db, struct db_stmt *stmt, int nparams,
                                 const char *const *params, struct http_idem *idem, char **json);
/* Copies the first column of a one-row result into *json (else STATUS_NOT_FOUND); clears r. */
enum status support_store_one_text(PGresult *r, char **json);

/*
 * The principal's regions as a text[] literal ("{\"84\",\"11\"}"), or NULL for all regions.
 * The caller frees it.
 */
char *support_store_regions(const struct auth_principal *who);

/* Creates an action; *json receives it (caller frees). */
enum status support_store_action_insert(struct db_pool *db, const struct auth_principal *who,
                                        const struct support_action_input *in, char **json);
/* A page of the catalogue. */
enum status support_store_action_list(struct db_pool *db, long long after, long limit,
                                      struct support_page *out);

/*
 * Inside the caller's transaction: records the access of a phase-1 laureate unless the dossier
 * has one already. *granted is 1 when this call created it; *data (a new reference) is then
 * the data of support.access_granted.
 */
enum status support_store_access_grant(struct db_conn *conn, const struct support_decision *d,
                                       const char *event_id, int *granted, json_t **data);

/* The PTCE with access that the principal may serve (its regions). */
enum status support_store_beneficiary_list(struct db_pool *db, const struct auth_principal *who,
                                           long long after, long limit, struct support_page *out);
/* One of them; STATUS_NOT_FOUND when absent or outside the principal's regions. */
enum status support_store_beneficiary_get(struct db_pool *db, const struct auth_principal *who,
                                          const char *dossier_id, char **json);

/* Why an enrolment or a delivery was refused, for the problem's detail. */
struct support_refusal {
    const char *why; /* static text, NULL when the status says enough */
};

/*
 * Enrols a PTCE, in one transaction that holds the request's Idempotency-Key (http_idem.h: a replay
 * answers the first enrolment, STATUS_UNPROCESSABLE for another request under the key,
 * STATUS_CONFLICT for one still in flight) and locks the action's row, so concurrent enrolments
 * never pass its capacity. STATUS_NOT_FOUND for an action this partner key does not deliver or
 * a PTCE it may not serve; STATUS_CONFLICT when the action is full, over, or the PTCE already
 * enrolled (refusal->why says which). *json (caller frees) describes the enrolment.
 */
enum status support_store_enrolment_create(struct db_pool *db, const struct auth_principal *who,
                                           const struct support_enrolment_input *in,
                                           struct http_idem *idem, char **json,
                                           struct support_refusal *refusal);
/* An enrolment: a partner sees its own, other roles those of their regions. */
enum status support_store_enrolment_get(struct db_pool *db, const struct auth_principal *who,
                                        const char *id, char **json, long long *version);
/*
 * Records the delivery of an enrolment by its partner key, if if_match names its version
 * (common/precond.h: 428 without it, 412 when stale). STATUS_CONFLICT when already delivered.
 */
enum status support_store_delivery_record(struct db_pool *db, const struct auth_principal *who,
                                          const char *id, const char *if_match,
                                          const struct support_delivery_input *in, char **json,
                                          long long *version, struct support_refusal *refusal);

/* The uptake aggregate: per action, and per region of the principal's scope. */
enum status support_store_uptake(struct db_pool *db, const struct auth_principal *who,
                                 json_t **out);

#endif
