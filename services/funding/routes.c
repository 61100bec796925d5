/* routes (funding): one thin handler per operation of api-spec/openapi.yaml. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "events.h"
#include "funding.h"
#include "jnum.h"
#include "money.h"
#include "page.h"
#include "pgarray.h"
#include "precond.h"
#include "region.h"
#include "service.h"
#include "store.h"
#include "ttlcache.h"
#include "utf8.h"
#include "uuid.h"

#define OFFICERS (ROLE_NATIONAL_ADMIN | ROLE_FUNDING_OFFICER)
/* Dashboards pass the role check of these routes and are then told they do not exist. */
#define OFFICERS_HIDDEN OFFICERS
/* Agreements, tranches, reports and the ledger do not exist for dashboards (404, not 403). */
#define PERSONAL HTTP_HIDE(ROLE_DASHBOARD)
#define AGGREGATES (OFFICERS | ROLE_DASHBOARD)

struct db_pool *funding_db(const struct http_ctx *ctx)
{
    return ((struct service *)ctx->app)->db;
}

struct funding *funding_domain(const struct http_ctx *ctx)
{
    return ((struct service *)ctx->app)->domain;
}

/* A decimal string's amount is below 10^16 euros, the spec's 16 digits before the point. */
#define FUNDING_AMOUNT_TEXT_LIMIT 1000000000000000000LL
/*
 * An envelope's amount is below 10^13 euros (FundingEnvelopeAmountInput, and a CHECK in the
 * database): a wave's 19 envelopes then sum within int64, as GET /v1/stats/money answers them.
 */
#define FUNDING_ENVELOPE_MAX_CENTS 999999999999999LL

int funding_amount_read(const json_t *v, int64_t *cents)
{
    long long n;

    if (json_is_number(v)) {
        if (!jnum_integer_read(v, 1, INT64_MAX, &n))
            return -1;
        *cents = n;
        return 0;
    }
    if (!json_is_string(v) || money_from_json(v, cents) != STATUS_OK || *cents <= 0 ||
        *cents >= FUNDING_AMOUNT_TEXT_LIMIT)
        return -1;
    return 0;
}

int funding_reply_doc(struct http_ctx *ctx, int code, json_t *doc)
{
    return http_reply_json(ctx, code, doc);
}

int funding_reply_refusal(struct http_ctx *ctx, enum status st, const char *why,
                          const char *fallback)
{
    return http_reply_problem(ctx, st, "%s", why && why[0] ? why : fallback);
}

int funding_resource_visible(struct http_ctx *ctx, const char *kind, const char *id, int *rc)
{
    char region[3];

    if (ctx->principal.role == ROLE_DASHBOARD || !uuid_is_valid(id)) {
        *rc = http_reply_problem(ctx, STATUS_NOT_FOUND, "no %s %s", kind, id);
        return -1;
    }
    enum status st = store_owner_region(funding_db(ctx), kind, id, region);
    if (st == STATUS_OK && !auth_principal_sees_region(&ctx->principal, region))
        st = STATUS_NOT_FOUND;
    if (st != STATUS_OK) {
        *rc = http_reply_problem(ctx, st, "no %s %s", kind, id);
        return -1;
    }
    return 0;
}

char *funding_scope_regions(const struct http_ctx *ctx)
{
    struct pgarray a;

    if (ctx->principal.all_regions)
        return NULL;
    pgarray_init(&a);
    for (int i = 0; i < ctx->principal.nregions; i++)
        pgarray_add_text(&a, ctx->principal.regions[i]);
    char *text = xstrdup(pgarray_text(&a));
    pgarray_free(&a);
    return text;
}

/*
 * An agreement's answer at `version`: sets its ETag and, for a 200, answers a matching
 * If-None-Match (304) or a malformed one; returns 1 with *rc when it answered, 0 when the
 * document is to be sent.
 */
static int routes_agreement_preconditions(struct http_ctx *ctx, int code, long long version,
                                          int *rc)
{
    char etag[PRECOND_ETAG_LEN];
    int not_modified = 0;

    precond_etag(version, etag);
    http_set_header(ctx, "ETag", etag);
    if (code != 200)
        return 0;
    enum status st =
        precond_if_none_match(http_header(ctx, "If-None-Match"), version, &not_modified);
    if (st != STATUS_OK) /* as submission and instruction answer it */
        *rc = http_reply_problem(ctx, st, "If-None-Match is not a list of entity tags");
    else if (not_modified)
        *rc = http_reply_raw(ctx, 304, NULL, "", 0);
    return st != STATUS_OK || not_modified;
}

/* Answers an agreement's document (taken) with its ETag, or 304 for a matching If-None-Match. */
static int routes_reply_agreement_doc(struct http_ctx *ctx, int code, json_t *doc)
{
    int rc;

    if (routes_agreement_preconditions(ctx, code,
                                       json_integer_value(json_object_get(doc, "version")), &rc)) {
        json_decref(doc);
        return rc;
    }
    return http_reply_json(ctx, code, doc);
}

/* Answers an agreement with its ETag (the version), or 304 for a matching If-None-Match. */
static int routes_reply_agreement(struct http_ctx *ctx, int code, const char *id)
{
    json_t *doc = NULL;
    enum status st = store_agreement_get(funding_db(ctx), id, &doc);

    if (st != STATUS_OK)
        return http_reply_problem(ctx, st, "no agreement %s", id);
    return routes_reply_agreement_doc(ctx, code, doc);
}

/* ---- envelopes ---- */

/* A wave id: 1 to 32 letters, digits, - or _ (the spec's pattern). */
static int routes_wave_valid(const char *wave)
{
    static const char chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";

    return wave && *wave && strlen(wave) <= 32 && strspn(wave, chars) == strlen(wave);
}

static int handle_envelope_list(struct http_ctx *ctx)
{
    json_t *doc = NULL;
    enum status st = store_envelope_list(funding_db(ctx), http_query(ctx, "wave"), &doc);

    if (st != STATUS_OK)
        return http_reply_problem(ctx, st, "the envelopes could not be listed");
    return http_reply_json(ctx, 200, doc);
}

static int handle_envelope_create(struct http_ctx *ctx)
{
    const char *wave = json_string_value(json_object_get(ctx->body, "wave"));
    const json_t *region = json_object_get(ctx->body, "region");
    struct http_idem idem;
    char amount[24];
    int64_t cents = 0;
    int rc;

    if (!http_idem_read(ctx, &idem, 0, 201, &rc))
        return rc;
    json_t *errors = json_array(), *doc = NULL;
    static const char *const known[] = {"wave", "region", "amount_cents", NULL};
    http_fields_unknown(ctx->body, NULL, known, "an envelope", errors);
    if (!routes_wave_valid(wave))
        http_field_error(errors, "wave", "must be a wave id (1 to 32 letters, digits, - or _)");
    if (!region || (!json_is_null(region) && !region_is_valid(json_string_value(region))))
        http_field_error(errors, "region", "must be null (national) or an INSEE region code");
    if (funding_amount_read(json_object_get(ctx->body, "amount_cents"), &cents) != 0 ||
        cents > FUNDING_ENVELOPE_MAX_CENTS)
        http_field_error(errors, "amount_cents",
                         "must be a positive amount of at most 999999999999999 cents"
                         " (9 999 999 999 999,99 euros)");
    if (json_array_size(errors))
        return http_reply_problem_fields(ctx, STATUS_INVALID, errors, "invalid envelope");
    json_decref(errors);
    snprintf(amount, sizeof amount, "%lld", (long long)cents);
    enum status st = store_envelope_create(funding_db(ctx), wave, json_string_value(region), amount,
                                           &idem, &doc);
    if (http_idem_refused(ctx, &idem, st, &rc))
        return rc;
    if (st == STATUS_CONFLICT)
        return http_reply_problem(ctx, st, "wave %s already has an envelope for this region", wave);
    if (st != STATUS_OK)
        return http_reply_problem(ctx, st, "the envelope could not be opened");
    return http_reply_json(ctx, 201, doc);
}

/* ---- agreements ---- */

static const char *const agreement_states[] = {"draft",  "carrier_signed", "signed",
                                               "active", "closed",         NULL};

static int handle_agreement_list(struct http_ctx *ctx)
{
    char why[96];
    long limit = 50;
    struct page_pos pos;
    const char *cursor = http_query(ctx, "cursor"), *after = NULL;
    json_t *errors, *items = NULL;

    if (ctx->principal.role == ROLE_DASHBOARD)
        return http_reply_problem(ctx, STATUS_NOT_FOUND, "no such resource: /v1/agreements");
    errors = json_array();
    if (page_limit_parse(http_query(ctx, "limit"), 50, 200, &limit, why, sizeof why) != STATUS_OK)
        http_field_error(errors, "limit", why);
    const char *state = http_query(ctx, "state");
    size_t k = 0;
    while (state && agreement_states[k] && strcmp(agreement_states[k], state) != 0)
        k++;
    if (state && !agreement_states[k])
        http_field_error(errors, "state", "is not an agreement state");
    if (cursor && (page_cursor_decode("agreements", cursor, &pos) != STATUS_OK || pos.n != 1 ||
                   pos.v[0].type != PAGE_TEXT))
        http_field_error(errors, "cursor", "is not a cursor this API gave");
    else if (cursor)
        after = pos.v[0].text;
    if (json_array_size(errors))
        return http_reply_problem_fields(ctx, STATUS_INVALID, errors, "invalid list parameters");
    json_decref(errors);
    char *regions = funding_scope_regions(ctx);
    enum status st = store_agreement_list(funding_db(ctx), http_query(ctx, "wave"), state, regions,
                                          after, limit, &items);
    free(regions);
    if (st != STATUS_OK)
        return http_reply_problem(ctx, st, "the agreements could not be listed");
    size_t n = json_array_size(items);
    struct page_pos last;
    page_pos_init(&last);
    if ((long)n == limit)
        page_pos_add_text(&last,
                          json_string_value(json_object_get(json_array_get(items, n - 1), "id")));
    return http_reply_json(ctx, 200,
                           json_pack("{s:o, s:o}", "items", items, "next_cursor",
                                     page_next_cursor("agreements", last.n ? &last : NULL)));
}

static int handle_agreement_get(struct http_ctx *ctx)
{
    const char *id = http_param(ctx, "id");
    int rc;

    if (funding_resource_visible(ctx, "agreement", id, &rc) != 0)
        return rc;
    return routes_reply_agreement(ctx, 200, id);
}

/* Answers one document about an agreement in the caller's scope (its versions, its reports). */
static int routes_agreement_part(struct http_ctx *ctx,
                                 enum status (*read)(struct db_pool *, const char *, json_t **))
{
    const char *id = http_param(ctx, "id");
    json_t *doc = NULL;
    int rc;

    if (funding_resource_visible(ctx, "agreement", id, &rc) != 0)
        return rc;
    enum status st = read(funding_db(ctx), id, &doc);
    if (st != STATUS_OK)
        return http_reply_problem(ctx, st, "no agreement %s", id);
    return http_reply_json(ctx, 200, doc);
}

static int handle_agreement_versions(struct http_ctx *ctx)
{
    return routes_agreement_part(ctx, store_agreement_versions);
}

static int handle_agreement_reports(struct http_ctx *ctx)
{
    return routes_agreement_part(ctx, store_agreement_reports);
}

/* ---- signatures: the agreement's state machine ---- */

static const struct fsm_transition agreement_transitions[] = {
    {"draft", "carrier_signed", OFFICERS, 0, NULL, NULL},
    {"carrier_signed", "signed", OFFICERS, 0, NULL, NULL},
};

const struct fsm_def funding_agreement_fsm = {
    .name = "agreement",
    .table = "agreement",
    .history_table = "agreement_history",
    .states = agreement_states,
    .transitions = agreement_transitions,
    .ntransitions = sizeof agreement_transitions / sizeof agreement_transitions[0],
    .version_required = 1,
    .topic = FUNDING_TOPIC,
    .source = FUNDING_SOURCE,
    .event_type = "funding.agreement_signed",
};

DB_STMT(routes_agreement_sign_fn, "SELECT agreement_sign($1::uuid, $2, $3)");

/* The effect of a signature, in fsm_apply's transaction: the State's one commits the money. */
static enum status routes_signature_effect(struct db_conn *conn, const struct fsm_request *rq,
                                           struct fsm_result *res)
{
    const char *params[] = {rq->id, rq->arg, rq->who->key_id};

    return store_apply(conn, &routes_agreement_sign_fn, 3, params, NULL, res->why, sizeof res->why);
}

/* A 409 naming the agreement's state and the transitions the caller may take from it. */
static int routes_reply_transition_refused(struct http_ctx *ctx, const struct fsm_result *res)
{
    struct buf allowed;

    buf_init(&allowed, 0);
    for (size_t i = 0; i < res->nallowed; i++)
        buf_printf(&allowed, "%s%s", i ? ", " : "", res->allowed[i]);
    buf_append(&allowed, "", 1);
    int rc =
        http_reply_problem(ctx, STATUS_CONFLICT, "the agreement is %s; from there it may go to: %s",
                           res->from, res->nallowed ? allowed.data : "nothing");
    buf_free(&allowed);
    return rc;
}

/* What is wrong with a signature's body: a new array, empty when nothing is. */
static json_t *routes_signature_errors(const struct http_ctx *ctx)
{
    static const char *const known[] = {"signer", NULL};
    const char *signer = json_string_value(json_object_get(ctx->body, "signer"));
    json_t *errors = json_array();

    http_fields_unknown(ctx->body, NULL, known, "a signature", errors);
    if (!signer || (strcmp(signer, "carrier") != 0 && strcmp(signer, "state") != 0))
        http_field_error(errors, "signer", "must be carrier or state");
    return errors;
}

/* A signature on its own, on a database thread: what money_batch does not take. */
static int routes_agreement_sign_alone(struct http_ctx *ctx)
{
    const char *id = http_param(ctx, "id");
    const char *signer = json_string_value(json_object_get(ctx->body, "signer"));
    struct fsm_result res;
    struct db_conn *conn;
    int rc;

    if (funding_resource_visible(ctx, "agreement", id, &rc) != 0)
        return rc;
    json_t *errors = routes_signature_errors(ctx);
    if (json_array_size(errors))
        return http_reply_problem_fields(ctx, STATUS_INVALID, errors, "invalid signature");
    json_decref(errors);
    json_t *data = json_pack("{s:s}", "signer", signer);
    struct fsm_request rq = {
        .id = id,
        .to = strcmp(signer, "carrier") == 0 ? "carrier_signed" : "signed",
        .who = &ctx->principal,
        .if_match = http_header(ctx, "If-Match"),
        .data = data,
        .effect = routes_signature_effect,
        .arg = (void *)signer,
    };
    memset(&res, 0, sizeof res);
    enum status st = db_acquire(funding_db(ctx), &conn);
    if (st == STATUS_OK) {
        st = fsm_apply(funding_domain(ctx)->agreements, conn, &rq, &res);
        db_release(funding_db(ctx), conn);
    }
    json_decref(data);
    if (st == STATUS_CONFLICT && res.from[0] && strncmp(res.why, "no transition", 13) == 0)
        return routes_reply_transition_refused(ctx, &res);
    if (st == STATUS_PRECONDITION_FAILED) /* the current ETag, as an amendment's 412 gives it */
        store_agreement_stale_why(res.version, res.why, sizeof res.why);
    if (st != STATUS_OK)
        return funding_reply_refusal(ctx, st, res.why, "the signature could not be recorded");
    return routes_reply_agreement(ctx, 200, id);
}

/* A signature going through money_batch: the operation, its transition, the event's members. */
struct routes_signing {
    struct money_op op;
    struct fsm_request rq;
    json_t *data;
};

static void routes_signing_free(void *p)
{
    struct routes_signing *s = p;

    money_op_clear(&s->op);
    json_decref(s->data);
    free(s);
}

void funding_money_resume(struct money_op *op)
{
    http_resume(op->arg); /* the request, deferred until its batch served it */
}

static int routes_signing_answer(struct http_ctx *ctx)
{
    struct routes_signing *s = http_state(ctx);
    struct money_op *op = &s->op;

    if (op->transition_refused) {
        struct fsm_result res;
        memset(&res, 0, sizeof res);
        snprintf(res.from, sizeof res.from, "%s", op->state);
        fsm_allowed(&funding_agreement_fsm, &ctx->principal, &res);
        return routes_reply_transition_refused(ctx, &res);
    }
    if (op->st == STATUS_PRECONDITION_FAILED)
        store_agreement_stale_why(op->version_now, op->why, sizeof op->why);
    if (op->st != STATUS_OK || !op->doc)
        return funding_reply_refusal(ctx, op->st == STATUS_OK ? STATUS_INTERNAL : op->st, op->why,
                                     "the signature could not be recorded");
    /* the batch's text as the answer, unparsed: it is the agreement at version_now */
    int rc;
    if (routes_agreement_preconditions(ctx, 200, op->version_now, &rc))
        return rc;
    return http_reply_json_text(ctx, 200, op->doc);
}

/* The one transition of the agreement's machine to `to`, when who may take it; else NULL. */
static const struct fsm_transition *routes_transition_to(const char *to,
                                                         const struct auth_principal *who)
{
    const struct fsm_transition *found = NULL;

    for (size_t i = 0; i < funding_agreement_fsm.ntransitions; i++) {
        const struct fsm_transition *t = &funding_agreement_fsm.transitions[i];
        if (strcmp(t->to, to) != 0)
            continue;
        if (found)
            return NULL; /* two ways there: only the row can say which */
        found = t;
    }
    return found && (found->roles & (unsigned)who->role) ? found : NULL;
}

/*
 * A signature: one with a well-formed body and an If-Match of exactly one ETag is applied by the
 * next batch (money_batch.h), which answers every refusal as the signature alone would; any other
 * (its 400, 428, 404 of a key or an id that needs no look-up…) is taken alone.
 */
static int handle_agreement_sign(struct http_ctx *ctx)
{
    const char *id = http_param(ctx, "id");
    const char *signer = json_string_value(json_object_get(ctx->body, "signer"));
    long long version = precond_etag_version(http_header(ctx, "If-Match"));
    json_t *errors = routes_signature_errors(ctx);
    int valid = json_array_size(errors) == 0;

    json_decref(errors);
    const char *to = valid && strcmp(signer, "carrier") == 0 ? "carrier_signed" : "signed";
    const struct fsm_transition *t = valid ? routes_transition_to(to, &ctx->principal) : NULL;
    if (!t || version < 0 || ctx->principal.role == ROLE_DASHBOARD || !uuid_is_valid(id))
        return http_defer_handler(ctx, routes_agreement_sign_alone);
    struct routes_signing *s = xcalloc(1, sizeof *s);
    s->data = json_pack("{s:s}", "signer", signer);
    s->rq = (struct fsm_request){.id = id, .to = to, .who = &ctx->principal, .data = s->data};
    s->op = (struct money_op){.kind = MONEY_SIGN,
                              .id = id,
                              .who = &ctx->principal,
                              .request_id = ctx->request_id,
                              .arg = ctx,
                              .rq = &s->rq,
                              .signer = signer,
                              .from_state = t->from,
                              .version = version};
    int rc = http_defer(ctx, routes_signing_answer, s, routes_signing_free);
    money_batch_post(funding_domain(ctx)->money, &s->op, funding_money_resume);
    return rc;
}

/* ---- amendments: reduction and year-3 aid, both under If-Match ---- */

static int handle_agreement_reduce(struct http_ctx *ctx)
{
    const char *id = http_param(ctx, "id");
    const char *motivation = json_string_value(json_object_get(ctx->body, "motivation"));
    char amount[24], why[FSM_WHY_LEN] = "";
    int64_t cents = 0;
    int rc;

    if (funding_resource_visible(ctx, "agreement", id, &rc) != 0)
        return rc;
    static const char *const known[] = {"amount_cents", "motivation", NULL};
    json_t *errors = json_array();
    http_fields_unknown(ctx->body, NULL, known, "a reduction", errors);
    if (funding_amount_read(json_object_get(ctx->body, "amount_cents"), &cents) != 0)
        http_field_error(errors, "amount_cents", "must be a positive amount (integer cents)");
    if (!motivation || !*motivation || utf8_chars(motivation, strlen(motivation)) > 2000)
        http_field_error(errors, "motivation", "is required (at most 2000 characters)");
    if (json_array_size(errors))
        return http_reply_problem_fields(ctx, STATUS_INVALID, errors, "invalid reduction");
    json_decref(errors);
    snprintf(amount, sizeof amount, "%lld", (long long)cents);
    struct store_match m = {id, http_header(ctx, "If-Match")};
    enum status st = store_agreement_reduce(funding_db(ctx), &m, amount, motivation,
                                            ctx->principal.key_id, why, sizeof why);
    if (st != STATUS_OK)
        return funding_reply_refusal(ctx, st, why, "the reduction could not be recorded");
    return routes_reply_agreement(ctx, 201, id);
}

static int handle_agreement_year3(struct http_ctx *ctx)
{
    const char *id = http_param(ctx, "id");
    const char *decision = json_string_value(json_object_get(ctx->body, "decision"));
    const char *motivation = json_string_value(json_object_get(ctx->body, "motivation"));
    const json_t *jamount = json_object_get(ctx->body, "amount_cents");
    char amount[24], why[FSM_WHY_LEN] = "";
    int64_t cents = 0;
    int rc;

    if (funding_resource_visible(ctx, "agreement", id, &rc) != 0)
        return rc;
    static const char *const known[] = {"decision", "amount_cents", "motivation", NULL};
    json_t *errors = json_array();
    http_fields_unknown(ctx->body, NULL, known, "a year-3 decision", errors);
    int granted = decision && strcmp(decision, "granted") == 0;
    if (!decision || (!granted && strcmp(decision, "declined") != 0))
        http_field_error(errors, "decision", "must be granted or declined");
    if (granted && funding_amount_read(jamount, &cents) != 0)
        http_field_error(errors, "amount_cents", "a grant needs a positive amount");
    if (!granted && jamount && !json_is_null(jamount))
        http_field_error(errors, "amount_cents", "a declined aid has no amount");
    if (decision && !granted && (!motivation || !*motivation))
        http_field_error(errors, "motivation", "a declined aid must be motivated");
    const json_t *jmotivation = json_object_get(ctx->body, "motivation");
    if (jmotivation && !json_is_string(jmotivation) && !json_is_null(jmotivation))
        http_field_error(errors, "motivation", "is a string (or null)");
    if (motivation && utf8_chars(motivation, strlen(motivation)) > 2000)
        http_field_error(errors, "motivation", "is at most 2000 characters");
    if (json_array_size(errors))
        return http_reply_problem_fields(ctx, STATUS_INVALID, errors, "invalid year-3 decision");
    json_decref(errors);
    snprintf(amount, sizeof amount, "%lld", (long long)cents);
    struct store_match m = {id, http_header(ctx, "If-Match")};
    enum status st = store_year3_decide(funding_db(ctx), &m, decision, amount, motivation,
                                        ctx->principal.key_id, why, sizeof why);
    if (st != STATUS_OK)
        return funding_reply_refusal(ctx, st, why, "the year-3 decision could not be recorded");
    return routes_reply_agreement(ctx, 201, id);
}

/* ---- aggregates and open data ---- */

/*
 * A wave's statistics, the dashboards' most frequent read, are computed by the database and
 * served again from memory for PTCE_STATS_MONEY_TTL_MS: a figure is at most that old.
 */
static struct ttlcache routes_stats_cache = TTLCACHE_INIT;

static int handle_stats_money(struct http_ctx *ctx)
{
    const char *wave = http_query(ctx, "wave");
    long ttl = funding_domain(ctx)->cfg.stats_ttl_ms;
    char *doc = NULL;

    if (!routes_wave_valid(wave)) {
        json_t *errors = json_array();
        http_field_error(errors, "wave", "is required (1 to 32 letters, digits, - or _)");
        return http_reply_problem_fields(ctx, STATUS_INVALID, errors, "invalid query");
    }
    if (!(ttl > 0 && (doc = ttlcache_get(&routes_stats_cache, wave)))) {
        enum status st = store_stats_money(funding_db(ctx), wave, &doc);
        if (st != STATUS_OK)
            return http_reply_problem(ctx, st, "the statistics could not be computed");
        ttlcache_put(&routes_stats_cache, wave, doc, ttl);
    }
    int rc = http_reply_raw(ctx, 200, "application/json", doc, strlen(doc));
    free(doc);
    return rc;
}

static int handle_opendata(struct http_ctx *ctx)
{
    const struct funding *f = funding_domain(ctx);
    struct funding_grantor g = {f->cfg.grantor_name, f->cfg.grantor_siret};
    struct buf out;

    buf_init(&out, 0);
    buf_append(&out, funding_scdl_header, strlen(funding_scdl_header));
    enum status st = store_opendata(funding_db(ctx), &g, &out);
    if (st != STATUS_OK) {
        buf_free(&out);
        return http_reply_problem(ctx, st, "the open data could not be produced");
    }
    int rc = http_reply_raw(ctx, 200, "text/csv; charset=utf-8", out.data, out.len);
    buf_free(&out);
    return rc;
}

const struct http_route funding_routes[] = {
    {"GET", "/v1/envelopes", handle_envelope_list, AGGREGATES, HTTP_DB},
    {"POST", "/v1/envelopes", handle_envelope_create, OFFICERS, HTTP_BODY_JSON | HTTP_DB},
    {"GET", "/v1/agreements", handle_agreement_list, OFFICERS_HIDDEN, PERSONAL | HTTP_DB},
    {"GET", "/v1/agreements/{id}", handle_agreement_get, OFFICERS_HIDDEN, PERSONAL | HTTP_DB},
    {"GET", "/v1/agreements/{id}/versions", handle_agreement_versions, OFFICERS_HIDDEN,
     PERSONAL | HTTP_DB},
    {"GET", "/v1/agreements/{id}/reports", handle_agreement_reports, OFFICERS_HIDDEN,
     PERSONAL | HTTP_DB},
    /* on its worker: it hands what it does not batch to a database thread */
    {"POST", "/v1/agreements/{id}/signatures", handle_agreement_sign, OFFICERS_HIDDEN,
     HTTP_BODY_JSON | PERSONAL},
    {"POST", "/v1/agreements/{id}/reductions", handle_agreement_reduce, OFFICERS_HIDDEN,
     HTTP_BODY_JSON | PERSONAL | HTTP_DB},
    {"POST", "/v1/agreements/{id}/year3", handle_agreement_year3, OFFICERS_HIDDEN,
     HTTP_BODY_JSON | PERSONAL | HTTP_DB},
    {"POST", "/v1/tranches/{id}/payments", funding_handle_tranche_pay, OFFICERS_HIDDEN,
     HTTP_BODY_JSON | PERSONAL},
    {"POST", "/v1/tranches/{id}/cancellation", funding_handle_tranche_cancel, OFFICERS_HIDDEN,
     HTTP_BODY_JSON | PERSONAL | HTTP_DB},
    {"POST", "/v1/tranches/{id}/recoveries", funding_handle_tranche_recover, OFFICERS_HIDDEN,
     HTTP_BODY_JSON | PERSONAL | HTTP_DB},
    {"GET", "/v1/reports/overdue", funding_handle_reports_overdue, OFFICERS_HIDDEN,
     PERSONAL | HTTP_DB},
    {"GET", "/v1/reports/catalogue", funding_handle_catalogue, AGGREGATES, HTTP_DB},
    {"POST", "/v1/reports/{id}/submission", funding_handle_report_submit, OFFICERS_HIDDEN,
     HTTP_BODY_JSON | PERSONAL | HTTP_DB},
    {"POST", "/v1/reports/{id}/review", funding_handle_report_review, OFFICERS_HIDDEN,
     HTTP_BODY_JSON | PERSONAL | HTTP_DB},
    {"GET", "/v1/ledger", funding_handle_ledger, OFFICERS_HIDDEN, PERSONAL | HTTP_DB},
    {"GET", "/v1/stats/money", handle_stats_money, AGGREGATES, HTTP_DB},
    {"GET", "/v1/opendata/subventions.csv", handle_opendata, 0, HTTP_PUBLIC | HTTP_DB},
};
const size_t funding_nroutes = sizeof funding_routes / sizeof funding_routes[0];
