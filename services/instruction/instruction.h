/* instruction: the service's state and the helpers its route files share. */
#ifndef PTCE_INSTRUCTION_H
#define PTCE_INSTRUCTION_H

#include "fsm.h"
#include "service.h"
#include "store.h"

#define INSTRUCTION_STAFF (ROLE_NATIONAL_ADMIN | ROLE_REGIONAL_INSTRUCTOR)
#define INSTRUCTION_READERS (INSTRUCTION_STAFF | ROLE_EXPERT)
#define INSTRUCTION_WRITERS INSTRUCTION_STAFF
/* Routes that show a dossier do not exist for dashboards (aggregates only): 404, not 403. */
#define INSTRUCTION_PERSONAL HTTP_HIDE(ROLE_DASHBOARD)

struct writeback;

struct instruction {
    struct fsm *fsm;
    struct writeback *writeback; /* the DS write-back's sender (writeback.h) */
    long balance_ttl_ms;         /* PTCE_RANKING_BALANCE_TTL_MS (national.c) */
    long ranking_ttl_ms;         /* PTCE_RANKING_TTL_MS (national.c) */
};

extern const struct http_route instruction_routes[];
extern const size_t instruction_nroutes;

struct db_pool *instruction_db(const struct http_ctx *ctx);
struct fsm *instruction_fsm(const struct http_ctx *ctx);

/* Answers the dossier document of id with its ETag (status code). Releases nothing. */
int instruction_reply_dossier(struct http_ctx *ctx, struct db_conn *conn, int code, const char *id);

/* Answers a failed status with a sentence; the common 404 of a dossier out of scope. */
int instruction_reply_dossier_missing(struct http_ctx *ctx, enum status st);

/*
 * Appends a field error to errors for each member of obj not named in allowed (NULL-ended):
 * the request bodies are closed (additionalProperties: false in api-spec/openapi.yaml), so a
 * misspelt member is named, not ignored. prefix ("" or "expert.") is put before the name.
 */
void instruction_members_check(const json_t *obj, const char *prefix, const char *const *allowed,
                               json_t *errors);

/* The same on the whole body: answers 400 naming the unknown members into *rc and returns 0. */
int instruction_body_closed(struct http_ctx *ctx, const char *const *allowed, int *rc);

/* The characters (code points) of a UTF-8 string: what the spec's maxLength counts. */
size_t instruction_chars(const char *s);

/* A string member of the body or NULL; *bad set when present but not a string. */
const char *instruction_body_str(const struct http_ctx *ctx, const char *key, int *bad);

/*
 * Handlers of the other route files, one per operation of api-spec/openapi.yaml (instruction's
 * paths): each parses, checks scope (404 outside it, dashboards included), calls its store or
 * lifecycle function and answers through http_reply_*.
 */
int regional_handle_opinion(struct http_ctx *ctx);
int regional_handle_annotation(struct http_ctx *ctx);
int regional_handle_labels(struct http_ctx *ctx);
int regional_handle_assignment(struct http_ctx *ctx);
int experts_handle_request_create(struct http_ctx *ctx);
int experts_handle_request_list(struct http_ctx *ctx);
int experts_handle_declaration(struct http_ctx *ctx);
int experts_handle_answer(struct http_ctx *ctx);
int experts_handle_remind(struct http_ctx *ctx);
int experts_handle_revoke(struct http_ctx *ctx);
int scoring_handle_review(struct http_ctx *ctx);
int national_handle_rankings(struct http_ctx *ctx);
int national_handle_decisions(struct http_ctx *ctx);
int national_handle_funnel(struct http_ctx *ctx);
int national_handle_delays(struct http_ctx *ctx);
int national_handle_export(struct http_ctx *ctx);

#endif
