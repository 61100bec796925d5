/* store (funding): every SQL statement of the service, one function per use case. */
#ifndef PTCE_FUNDING_STORE_H
#define PTCE_FUNDING_STORE_H

#include <jansson.h>
#include <stddef.h>

#include "db.h"
#include "domain.h"
#include "http_idem.h"

#define FUNDING_SOURCE "/ptce/funding"

/*
 * The use cases live in SQL functions (migrations/003_funding_ops.sql) that answer one jsonb
 * document: {"error": "<status slug>", "detail"} for a refusal, else a result with "events".
 * Every function here runs its statement in a transaction of its own, appends the result's
 * events to the outbox and commits, or rolls back on any refusal: a refusal writes nothing.
 * On success *out (when out is not NULL) receives the result document (caller decrefs); on a
 * refusal why holds the detail for the problem.
 */

/* What the caller's version check needs: the agreement and the If-Match header (may be NULL). */
struct store_match {
    const char *agreement_id;
    const char *if_match;
};

/*
 * The detail of a 412 on an agreement now at `version`: its current ETag, which the client
 * reads again before it retries (the amendments' If-Match and the signatures' alike).
 */
void store_agreement_stale_why(long long version, char *why, size_t whylen);

/* The status a use case's "error" slug names ("conflict" → STATUS_CONFLICT …). */
enum status store_status_from_slug(const char *slug);

/*
 * Appends each {type, subject, data} of doc["events"] (borrowed) to the outbox inside the open
 * transaction of conn.
 */
enum status store_events_append(struct db_conn *conn, const json_t *doc);

/*
 * Runs `SELECT fn(args)` (stmt) inside the open transaction of conn and reads its document
 * into *out (new reference); a refusal becomes its status, with why filled. The events are
 * appended on success.
 */
enum status store_apply(struct db_conn *conn, struct db_stmt *stmt, int n,
                        const char *const *params, json_t **out, char *why, size_t whylen);

/* ---- the use cases; params as the SQL function takes them (see store.c) ---- */

/*
 * The creating POSTs (a payment, a report's submission, an envelope) take the request's
 * Idempotency-Key (http_idem.h; NULL, or one without a key, for none): claimed in the use case's
 * transaction, its answer stored there, a replay answered from the store as the same document.
 */
enum status store_tranche_pay(struct db_pool *pool, const char *id, const char *reference,
                              const char *paid_on, const char *actor, struct http_idem *idem,
                              json_t **out, char *why, size_t whylen);
enum status store_tranche_cancel(struct db_pool *pool, const char *id, const char *motivation,
                                 const char *actor, json_t **out, char *why, size_t whylen);
enum status store_tranche_recover(struct db_pool *pool, const char *id, const char *amount,
                                  const char *reference, const char *actor, json_t **out, char *why,
                                  size_t whylen);
enum status store_agreement_reduce(struct db_pool *pool, const struct store_match *m,
                                   const char *amount, const char *motivation, const char *actor,
                                   char *why, size_t whylen);
enum status store_year3_decide(struct db_pool *pool, const struct store_match *m,
                               const char *decision, const char *amount, const char *motivation,
                               const char *actor, char *why, size_t whylen);
enum status store_report_submit(struct db_pool *pool, const char *id, const char *content,
                                struct http_idem *idem, json_t **out, char *why, size_t whylen);
enum status store_report_review(struct db_pool *pool, const char *id, const char *decision,
                                const char *reason, json_t **out, char *why, size_t whylen);

/* ---- reads: one document each; regions NULL means every region (a "{…}" array literal) ---- */

/* The region of the agreement owning a resource ("agreement", "tranche", "report"), into
 * region (3 bytes, "" when none). STATUS_NOT_FOUND when there is no such resource. */
enum status store_owner_region(struct db_pool *pool, const char *kind, const char *id,
                               char region[3]);
enum status store_agreement_get(struct db_pool *pool, const char *id, json_t **out);
enum status store_agreement_list(struct db_pool *pool, const char *wave, const char *state,
                                 const char *regions, const char *after, long limit, json_t **out);
enum status store_agreement_versions(struct db_pool *pool, const char *id, json_t **out);
enum status store_agreement_reports(struct db_pool *pool, const char *id, json_t **out);
enum status store_reports_overdue(struct db_pool *pool, const char *regions, json_t **out);
enum status store_catalogue(struct db_pool *pool, json_t **out);
enum status store_envelope_list(struct db_pool *pool, const char *wave, json_t **out);
/* An envelope (idem as the use cases'); STATUS_CONFLICT when the wave has one for the region. */
enum status store_envelope_create(struct db_pool *pool, const char *wave, const char *region,
                                  const char *amount, struct http_idem *idem, json_t **out);
enum status store_ledger(struct db_pool *pool, const char *agreement_id, json_t **out);
/* A wave's GET /v1/stats/money document as the database writes it (JSON text, to free). */
enum status store_stats_money(struct db_pool *pool, const char *wave, char **out);

/* Appends the open data's rows (signed agreements) to out. */
enum status store_opendata(struct db_pool *pool, const struct funding_grantor *g, struct buf *out);

/* ---- events ---- */

/* Keeps a wave's parameters from wave.published's data.wave (borrowed), in conn's transaction. */
enum status store_wave_upsert(struct db_conn *conn, const json_t *wave);

/*
 * The amount, duration and tranche template of a wave (defaults for a wave never published),
 * read in conn's transaction. *tmpl receives a new reference.
 */
enum status store_wave_params(struct db_conn *conn, const char *wave, long long *amount,
                              long *months, json_t **tmpl);

#endif
