/* funding: the service's state shared by its handlers (ctx->app's domain). */
#ifndef PTCE_FUNDING_H
#define PTCE_FUNDING_H

#include <stddef.h>
#include <stdint.h>

#include "fsm.h"
#include "http.h"
#include "money_batch.h"

/* Settings of funding itself (see the README's table). */
struct funding_config {
    const char *grantor_name;  /* PTCE_FUNDING_GRANTOR_NAME: nomAttribuant of the open data */
    const char *grantor_siret; /* PTCE_FUNDING_GRANTOR_SIRET: idAttribuant */
    long stats_ttl_ms;         /* PTCE_STATS_MONEY_TTL_MS: a wave's statistics kept in memory */
    long money_writers;        /* PTCE_FUNDING_MONEY_WRITERS: connections applying money batches */
};

struct funding {
    struct funding_config cfg;
    struct fsm *agreements;    /* the agreement's signatures: draft → carrier_signed → signed */
    struct money_batch *money; /* signatures and payments applied in batches (money_batch.h) */
};

/* The agreement state machine's definition (routes.c). */
extern const struct fsm_def funding_agreement_fsm;

/* The routes of routes.c; main.c appends support.c's. */
extern const struct http_route funding_routes[];
extern const size_t funding_nroutes;

/* Handlers of routes_money.c: tranches, reports and the ledger. */
int funding_handle_tranche_pay(struct http_ctx *ctx);
int funding_handle_tranche_cancel(struct http_ctx *ctx);
int funding_handle_tranche_recover(struct http_ctx *ctx);
int funding_handle_report_submit(struct http_ctx *ctx);
int funding_handle_report_review(struct http_ctx *ctx);
int funding_handle_reports_overdue(struct http_ctx *ctx);
int funding_handle_catalogue(struct http_ctx *ctx);
int funding_handle_ledger(struct http_ctx *ctx);

/* ---- helpers shared by the two handler files (routes.c) ---- */

/* The service's pool and state. */
struct db_pool *funding_db(const struct http_ctx *ctx);
struct funding *funding_domain(const struct http_ctx *ctx);

/*
 * 0 when the caller may see the resource `kind` ("agreement", "tranche", "report") with this
 * id: a uuid, existing, of a region in the key's scope, and the key not a dashboard's (which
 * sees aggregates only). Otherwise answers 404 (or the database's status) and returns the
 * handler's return value through *rc.
 */
int funding_resource_visible(struct http_ctx *ctx, const char *kind, const char *id, int *rc);

/* The key's regions as a PostgreSQL array literal (caller frees), or NULL for every region. */
char *funding_scope_regions(const struct http_ctx *ctx);

/*
 * Reads a positive amount (borrowed) as api-spec's FundingAmountInput says: an integer of cents
 * from 1 to INT64_MAX (8.0 is 8, as JSON Schema reads an integer), or a decimal string of euros
 * (money_parse) of at most 16 digits before the point. 0 with *cents set, or -1.
 */
int funding_amount_read(const json_t *v, int64_t *cents);

/* A money_batch operation's done: resumes its request (op->arg, the http_ctx). */
void funding_money_resume(struct money_op *op);

/* Answers a document with 200 (or code). Takes doc. */
int funding_reply_doc(struct http_ctx *ctx, int code, json_t *doc);

/* A problem for st with the store's detail when it gave one, else the fallback. */
int funding_reply_refusal(struct http_ctx *ctx, enum status st, const char *why,
                          const char *fallback);

#endif
