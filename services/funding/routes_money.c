/* routes_money (funding): the handlers of tranches, reports and the ledger. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "funding.h"
#include "jnum.h"
#include "money.h"
#include "store.h"
#include "utf8.h"
#include "uuid.h"

/*
 * A required string of 1 to max characters (code points, as JSON Schema's maxLength counts), or
 * a field error. Borrowed from the body.
 */
static const char *money_text(struct http_ctx *ctx, const char *name, size_t max, json_t *errors)
{
    const char *s = json_string_value(json_object_get(ctx->body, name));
    char message[64];

    if (s && *s && utf8_chars(s, strlen(s)) <= max)
        return s;
    snprintf(message, sizeof message, "is required (1 to %zu characters)", max);
    http_field_error(errors, name, message);
    return NULL;
}

/* Answers a use case's result: its member `key` (a tranche, a report) with 200. */
static int money_reply(struct http_ctx *ctx, enum status st, json_t *doc, const char *key,
                       const char *why, const char *fallback)
{
    if (st != STATUS_OK)
        return funding_reply_refusal(ctx, st, why, fallback);
    json_t *member = json_incref(json_object_get(doc, key));
    json_decref(doc);
    return http_reply_json(ctx, 200, member);
}

/* What is wrong with a payment's body (a new array, empty when nothing is); its members. */
static json_t *money_payment_errors(struct http_ctx *ctx, const char **reference,
                                    const char **paid_on)
{
    static const char *const known[] = {"reference", "paid_on", NULL};
    struct clock_date day;
    json_t *errors = json_array();

    http_fields_unknown(ctx->body, NULL, known, "a payment", errors);
    *reference = money_text(ctx, "reference", 64, errors);
    *paid_on = json_string_value(json_object_get(ctx->body, "paid_on"));
    if (!*paid_on || clock_date_parse(*paid_on, &day) != STATUS_OK)
        http_field_error(errors, "paid_on", "must be a date (YYYY-MM-DD)");
    return errors;
}

/* A payment on its own, on a database thread: what money_batch does not take. */
static int money_tranche_pay_alone(struct http_ctx *ctx)
{
    const char *id = http_param(ctx, "id");
    const char *reference, *paid_on;
    char why[MONEY_WHY_LEN] = "";
    struct http_idem idem;
    json_t *doc = NULL;
    int rc;

    if (funding_resource_visible(ctx, "tranche", id, &rc) != 0 ||
        !http_idem_read(ctx, &idem, 0, 200, &rc))
        return rc;
    json_t *errors = money_payment_errors(ctx, &reference, &paid_on);
    if (json_array_size(errors))
        return http_reply_problem_fields(ctx, STATUS_INVALID, errors, "invalid payment");
    json_decref(errors);
    enum status st = store_tranche_pay(funding_db(ctx), id, reference, paid_on,
                                       ctx->principal.key_id, &idem, &doc, why, sizeof why);
    if (http_idem_refused(ctx, &idem, st, &rc))
        return rc;
    return money_reply(ctx, st, doc, "tranche", why, "the payment could not be recorded");
}

/* A payment going through money_batch: its operation is the request's state. */
static void money_paying_free(void *p)
{
    money_op_clear(p);
    free(p);
}

static int money_paying_answer(struct http_ctx *ctx)
{
    struct money_op *op = http_state(ctx);

    if (op->st != STATUS_OK || !op->doc)
        return funding_reply_refusal(ctx, op->st == STATUS_OK ? STATUS_INTERNAL : op->st, op->why,
                                     "the payment could not be recorded");
    return http_reply_json_text(ctx, 200, op->doc); /* the batch's text, unparsed */
}

/*
 * A payment: one with a well-formed body and no Idempotency-Key is applied by the next batch
 * (money_batch.h), which answers every refusal as the payment alone would; any other (its 400,
 * a key to claim, a 404 that needs no look-up) is taken alone.
 */
int funding_handle_tranche_pay(struct http_ctx *ctx)
{
    const char *id = http_param(ctx, "id");
    const char *reference, *paid_on;
    json_t *errors = money_payment_errors(ctx, &reference, &paid_on);
    int valid = json_array_size(errors) == 0;

    json_decref(errors);
    if (!valid || http_header(ctx, "Idempotency-Key") || ctx->principal.role == ROLE_DASHBOARD ||
        !uuid_is_valid(id))
        return http_defer_handler(ctx, money_tranche_pay_alone);
    struct money_op *op = xcalloc(1, sizeof *op);
    *op = (struct money_op){.kind = MONEY_PAY,
                            .id = id,
                            .who = &ctx->principal,
                            .request_id = ctx->request_id,
                            .arg = ctx,
                            .reference = reference,
                            .paid_on = paid_on};
    int rc = http_defer(ctx, money_paying_answer, op, money_paying_free);
    money_batch_post(funding_domain(ctx)->money, op, funding_money_resume);
    return rc;
}

int funding_handle_tranche_cancel(struct http_ctx *ctx)
{
    const char *id = http_param(ctx, "id");
    char why[MONEY_WHY_LEN] = "";
    json_t *doc = NULL;
    int rc;

    if (funding_resource_visible(ctx, "tranche", id, &rc) != 0)
        return rc;
    static const char *const known[] = {"motivation", NULL};
    json_t *errors = json_array();
    http_fields_unknown(ctx->body, NULL, known, "a cancellation", errors);
    const char *motivation = money_text(ctx, "motivation", 2000, errors);
    if (json_array_size(errors))
        return http_reply_problem_fields(ctx, STATUS_INVALID, errors, "invalid cancellation");
    json_decref(errors);
    enum status st = store_tranche_cancel(funding_db(ctx), id, motivation, ctx->principal.key_id,
                                          &doc, why, sizeof why);
    return money_reply(ctx, st, doc, "tranche", why, "the cancellation could not be recorded");
}

int funding_handle_tranche_recover(struct http_ctx *ctx)
{
    const char *id = http_param(ctx, "id");
    char why[MONEY_WHY_LEN] = "", amount[24];
    int64_t cents = 0;
    json_t *doc = NULL;
    int rc;

    if (funding_resource_visible(ctx, "tranche", id, &rc) != 0)
        return rc;
    static const char *const known[] = {"amount_cents", "reference", NULL};
    json_t *errors = json_array();
    http_fields_unknown(ctx->body, NULL, known, "a recovery", errors);
    const char *reference = money_text(ctx, "reference", 64, errors);
    if (funding_amount_read(json_object_get(ctx->body, "amount_cents"), &cents) != 0)
        http_field_error(errors, "amount_cents", "must be a positive amount (integer cents)");
    if (json_array_size(errors))
        return http_reply_problem_fields(ctx, STATUS_INVALID, errors, "invalid recovery");
    json_decref(errors);
    snprintf(amount, sizeof amount, "%lld", (long long)cents);
    enum status st = store_tranche_recover(funding_db(ctx), id, amount, reference,
                                           ctx->principal.key_id, &doc, why, sizeof why);
    return money_reply(ctx, st, doc, "tranche", why, "the recovery could not be recorded");
}

/* What a report's entries hold: a progress report's indicators, a financial one's lines. */
struct money_report_kind {
    const char *list;            /* "indicators" or "lines" */
    const char *text;            /* the required string member: "code" or "heading" */
    const char *const *integers; /* the integer members, NULL-terminated */
    const char *const *required; /* those of them that are required, NULL-terminated */
    const char *const *known;    /* every member an entry may have, NULL-terminated */
};

static const char *const indicator_numbers[] = {"baseline", "target", "value", NULL};
static const char *const indicator_members[] = {"code", "baseline", "target", "value", NULL};
static const char *const line_numbers[] = {"planned_cents", "actual_cents", NULL};
static const char *const line_required[] = {"actual_cents", NULL};
static const char *const line_members[] = {"heading", "planned_cents", "actual_cents", NULL};
static const struct money_report_kind report_kinds[] = {
    {"indicators", "code", indicator_numbers, indicator_numbers, indicator_members},
    {"lines", "heading", line_numbers, line_required, line_members},
};

/* 1 when name is one of the NULL-terminated words. */
static int money_word_in(const char *name, const char *const *words)
{
    for (size_t i = 0; words[i]; i++) {
        if (strcmp(words[i], name) == 0)
            return 1;
    }
    return 0;
}

/* Checks one entry of a report's list into errors (field "list[i].member"). */
static void money_report_entry(const struct money_report_kind *kind, size_t i, const json_t *e,
                               json_t *errors)
{
    char field[96];

    snprintf(field, sizeof field, "%s[%zu]", kind->list, i);
    if (!json_is_object(e)) {
        http_field_error(errors, field, "must be an object");
        return;
    }
    http_fields_unknown(e, field, kind->known, "a report's entry", errors);
    snprintf(field, sizeof field, "%s[%zu].%s", kind->list, i, kind->text);
    if (!json_is_string(json_object_get(e, kind->text)))
        http_field_error(errors, field, "is required: a string");
    for (size_t k = 0; kind->integers[k]; k++) {
        const json_t *v = json_object_get(e, kind->integers[k]);
        snprintf(field, sizeof field, "%s[%zu].%s", kind->list, i, kind->integers[k]);
        if (!v && !money_word_in(kind->integers[k], kind->required))
            continue;
        /* 8.0 is 8, as JSON Schema reads it; anything beyond int64 never parsed */
        if (!jnum_integer_read(v, INT64_MIN, INT64_MAX, NULL))
            http_field_error(errors, field, "must be a 64-bit integer");
    }
}

/*
 * A progress report lists indicators of the catalogue, each with the pole's baseline, target and
 * value; a financial one CERFA lines with their actual amount (and the planned one). Exactly one
 * of the two lists, 1 to 100 entries, and no other member, as FundingReportInput says (400
 * otherwise). The database then checks the list against the report's kind and its codes against
 * the catalogue, which is data: a well-formed report outside them is 422 (report_submit).
 */
static void money_report_check(const json_t *body, json_t *errors)
{
    static const char *const known[] = {"indicators", "lines", NULL};
    const json_t *ind = json_object_get(body, "indicators");
    const struct money_report_kind *kind = &report_kinds[ind ? 0 : 1];
    const json_t *list = json_object_get(body, kind->list);

    http_fields_unknown(body, NULL, known, "a report", errors);
    if ((ind && json_object_get(body, "lines")) || !json_is_array(list) ||
        json_array_size(list) == 0 || json_array_size(list) > 100) {
        http_field_error(errors, kind->list,
                         "a progress report has indicators [{code, baseline, target, value}], a"
                         " financial one lines [{heading, actual_cents}] (1 to 100, integers)");
        return;
    }
    for (size_t i = 0; i < json_array_size(list); i++)
        money_report_entry(kind, i, json_array_get(list, i), errors);
}

int funding_handle_report_submit(struct http_ctx *ctx)
{
    const char *id = http_param(ctx, "id");
    char why[MONEY_WHY_LEN] = "";
    struct http_idem idem;
    json_t *doc = NULL;
    int rc;

    if (funding_resource_visible(ctx, "report", id, &rc) != 0 ||
        !http_idem_read(ctx, &idem, 0, 200, &rc))
        return rc;
    json_t *errors = json_array();
    money_report_check(ctx->body, errors);
    if (json_array_size(errors))
        return http_reply_problem_fields(ctx, STATUS_INVALID, errors, "invalid report");
    json_decref(errors);
    char *content = json_dumps(ctx->body, JSON_COMPACT);
    enum status st =
        store_report_submit(funding_db(ctx), id, content, &idem, &doc, why, sizeof why);
    free(content);
    if (http_idem_refused(ctx, &idem, st, &rc))
        return rc;
    return money_reply(ctx, st, doc, "report", why, "the report could not be recorded");
}

int funding_handle_report_review(struct http_ctx *ctx)
{
    const char *id = http_param(ctx, "id");
    const char *decision = json_string_value(json_object_get(ctx->body, "decision"));
    const char *reason = json_string_value(json_object_get(ctx->body, "reason"));
    char why[MONEY_WHY_LEN] = "";
    json_t *doc = NULL;
    int rc;

    if (funding_resource_visible(ctx, "report", id, &rc) != 0)
        return rc;
    static const char *const known[] = {"decision", "reason", NULL};
    json_t *errors = json_array();
    http_fields_unknown(ctx->body, NULL, known, "a review", errors);
    int approved = decision && strcmp(decision, "approved") == 0;
    if (!decision || (!approved && strcmp(decision, "rejected") != 0))
        http_field_error(errors, "decision", "must be approved or rejected");
    if (decision && !approved && (!reason || !*reason))
        http_field_error(errors, "reason", "a rejection gives its reason");
    if (reason && utf8_chars(reason, strlen(reason)) > 2000)
        http_field_error(errors, "reason", "is at most 2000 characters");
    const json_t *jreason = json_object_get(ctx->body, "reason");
    if (jreason && !json_is_string(jreason) && !json_is_null(jreason))
        http_field_error(errors, "reason", "is a string (or null)");
    if (json_array_size(errors))
        return http_reply_problem_fields(ctx, STATUS_INVALID, errors, "invalid review");
    json_decref(errors);
    enum status st =
        store_report_review(funding_db(ctx), id, decision, reason, &doc, why, sizeof why);
    return money_reply(ctx, st, doc, "report", why, "the review could not be recorded");
}

int funding_handle_reports_overdue(struct http_ctx *ctx)
{
    json_t *doc = NULL;

    if (ctx->principal.role == ROLE_DASHBOARD)
        return http_reply_problem(ctx, STATUS_NOT_FOUND, "no such resource: /v1/reports/overdue");
    char *regions = funding_scope_regions(ctx);
    enum status st = store_reports_overdue(funding_db(ctx), regions, &doc);
    free(regions);
    if (st != STATUS_OK)
        return http_reply_problem(ctx, st, "the overdue reports could not be listed");
    return http_reply_json(ctx, 200, doc);
}

int funding_handle_catalogue(struct http_ctx *ctx)
{
    json_t *doc = NULL;
    enum status st = store_catalogue(funding_db(ctx), &doc);

    if (st != STATUS_OK)
        return http_reply_problem(ctx, st, "the catalogue could not be read");
    return http_reply_json(ctx, 200, doc);
}

int funding_handle_ledger(struct http_ctx *ctx)
{
    const char *agreement = http_query(ctx, "agreement_id");
    json_t *doc = NULL;
    int rc;

    if (agreement && funding_resource_visible(ctx, "agreement", agreement, &rc) != 0)
        return rc;
    if (ctx->principal.role == ROLE_DASHBOARD)
        return http_reply_problem(ctx, STATUS_NOT_FOUND, "no such resource: /v1/ledger");
    if (!agreement && !ctx->principal.all_regions)
        return http_reply_problem(ctx, STATUS_FORBIDDEN,
                                  "a regional key reads the ledger of one agreement at a time");
    enum status st = store_ledger(funding_db(ctx), agreement, &doc);
    if (st != STATUS_OK)
        return http_reply_problem(ctx, st, "the ledger could not be read");
    return http_reply_json(ctx, 200, doc);
}
