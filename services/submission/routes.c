/* routes (submission): one thin handler per operation of api-spec/openapi.yaml. */
#include <limits.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jnum.h"
#include "page.h"
#include "precond.h"
#include "region.h"
#include "service.h"
#include "deposit.h"
#include "intake.h"
#include "reader.h"
#include "store.h"
#include "submission.h"
#include "utf8.h"
#include "uuid.h"

/* The roles that read dossiers; dashboard keys see aggregates only, and dossiers do not exist for
 * them (HTTP_HIDE: 404, not 403). */
#define READERS                                                                                    \
    (ROLE_NATIONAL_ADMIN | ROLE_REGIONAL_INSTRUCTOR | ROLE_EXPERT | ROLE_FUNDING_OFFICER)
#define PERSONAL HTTP_HIDE(ROLE_DASHBOARD)

/* A list page's size when `limit` is absent, and the largest one asked for: as every list's. */
#define ROUTES_LIST_DEFAULT 50
#define ROUTES_LIST_MAX 200

static struct submission *routes_domain(const struct http_ctx *ctx)
{
    return ((struct service *)ctx->app)->domain;
}

static struct db_pool *routes_db(const struct http_ctx *ctx)
{
    return ((struct service *)ctx->app)->db;
}

/* Answers a stored JSON text as is (the common case of reads). Takes text. */
static int routes_reply_text(struct http_ctx *ctx, int code, char *text)
{
    int rc = http_reply_raw(ctx, code, "application/json", text, strlen(text));

    free(text);
    return rc;
}

/*
 * Answers a read of a versioned resource (a dossier, its history) with its ETag, the version as
 * common/precond writes it ("v3"): 304 with the ETag and no body when If-None-Match names it
 * (the weak comparison of RFC 9110, `*` and lists included), else 200 with text. A malformed
 * If-None-Match is a 400. Takes text.
 */
static int routes_reply_versioned(struct http_ctx *ctx, char *text, long long version)
{
    char etag[PRECOND_ETAG_LEN];
    int not_modified = 0;
    enum status st =
        precond_if_none_match(http_header(ctx, "If-None-Match"), version, &not_modified);

    if (st != STATUS_OK) {
        free(text);
        return http_reply_problem(ctx, st, "If-None-Match is not a list of entity tags");
    }
    precond_etag(version, etag);
    http_set_header(ctx, "ETag", etag);
    if (not_modified) {
        free(text);
        return http_reply_raw(ctx, 304, NULL, "", 0);
    }
    return routes_reply_text(ctx, 200, text);
}

/* ---- webhook ---- */

/* A form field, from the body or else from the query string. Borrowed. */
static const char *routes_field(const struct http_ctx *ctx, const char *name)
{
    const char *v = http_form(ctx, name);

    return v ? v : http_query(ctx, name);
}

static int routes_is_number(const char *s)
{
    size_t n = s ? strlen(s) : 0;

    if (n == 0 || n > 18)
        return 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return 0;
    }
    return 1;
}

/* A webhook notice on its way to the database, with the canonical forms of its fields. */
struct webhook_notice {
    struct intake_request rq;
    char procedure_id[24], dossier_number[24], updated_at[40];
};

static void webhook_recorded(struct intake_request *rq)
{
    http_resume(rq->arg);
}

static int webhook_answer(struct http_ctx *ctx)
{
    struct webhook_notice *w = http_state(ctx);

    if (w->rq.st != STATUS_OK)
        return http_reply_problem(ctx, w->rq.st, "the notification could not be recorded");
    if (w->rq.fresh)
        ds_workers_wake(routes_domain(ctx)->workers);
    return http_reply_json(
        ctx, 202, json_pack("{s:s, s:b}", "status", "accepted", "duplicate", !w->rq.fresh));
}

/*
 * The webhook's gate, run right after matching, before its method, body and Content-Type are
 * looked at: a wrong token answers exactly what an unknown path answers.
 */
static int webhook_gate(struct http_ctx *ctx)
{
    struct submission *sub = routes_domain(ctx);
    char presented[65];

    auth_token_hash(http_param(ctx, "token"), presented);
    /* Constant time over fixed-length hashes: the comparison says nothing about the secret. */
    if (!sub->webhook_token_hash[0] || CRYPTO_memcmp(presented, sub->webhook_token_hash, 64) != 0)
        return http_reply_problem(ctx, STATUS_NOT_FOUND, "no such resource: %s",
                                  ctx->req->url_path);
    return HTTP_CONTINUE;
}

static int handle_ds_webhook(struct http_ctx *ctx)
{
    struct submission *sub = routes_domain(ctx);
    char when[40];
    struct ds_notice n = {0};

    if (http_gating(ctx))
        return webhook_gate(ctx);
    n.procedure_id = routes_field(ctx, "procedure_id");
    n.dossier_number = routes_field(ctx, "dossier_id");
    n.state = routes_field(ctx, "state");
    n.updated_at_raw = routes_field(ctx, "updated_at");
    json_t *errors = json_array();
    if (!routes_is_number(n.procedure_id))
        http_field_error(errors, "procedure_id", "must be a positive integer");
    if (!routes_is_number(n.dossier_number))
        http_field_error(errors, "dossier_id", "must be a positive integer");
    if (!ds_state_is_valid(n.state))
        http_field_error(errors, "state",
                         "must be en_construction, en_instruction, accepte, "
                         "refuse or sans_suite");
    if (!n.updated_at_raw || strlen(n.updated_at_raw) > 64 ||
        ds_time_parse(n.updated_at_raw, when, sizeof when) != 0)
        http_field_error(errors, "updated_at", "must be a time such as 2021-06-23 10:32:42 +0200");
    if (json_array_size(errors))
        return http_reply_problem_fields(ctx, STATUS_INVALID, errors, "invalid DS notification");
    json_decref(errors);
    if (strtol(n.procedure_id, NULL, 10) != sub->demarche)
        return http_reply_problem(ctx, STATUS_UNPROCESSABLE,
                                  "procedure %s is not the PTCE démarche (%ld)", n.procedure_id,
                                  sub->demarche);
    /*
     * Canonical numbers ("0042" is 42), so duplicates are recognised whatever the spelling. The
     * state and raw time stay in the request's form, alive until the answer.
     */
    struct webhook_notice *w = xcalloc(1, sizeof *w);
    snprintf(w->procedure_id, sizeof w->procedure_id, "%lld", strtoll(n.procedure_id, NULL, 10));
    snprintf(w->dossier_number, sizeof w->dossier_number, "%lld",
             strtoll(n.dossier_number, NULL, 10));
    snprintf(w->updated_at, sizeof w->updated_at, "%s", when);
    w->rq.notice = n;
    w->rq.notice.procedure_id = w->procedure_id;
    w->rq.notice.dossier_number = w->dossier_number;
    w->rq.notice.updated_at = w->updated_at;
    int rc = http_defer(ctx, webhook_answer, w, free);
    intake_post(sub->intake, &w->rq, webhook_recorded, ctx);
    return rc;
}

/* ---- dossiers ---- */

/* A deposit on its way to the database, and what the store answered. */
struct dossier_create {
    struct http_idem idem; /* the required Idempotency-Key, claimed in the deposit's transaction */
    json_t *content;
    struct deposit_request rq;
};

static void dossier_create_free(void *arg)
{
    struct dossier_create *c = arg;

    json_decref(c->content);
    free(c->rq.d.document);
    http_idem_clear(&c->idem);
    free(c);
}

/* On a writer thread, once the deposit's batch is done. */
static void dossier_created(struct deposit_request *rq)
{
    http_resume(rq->arg);
}

static int dossier_create_answer(struct http_ctx *ctx)
{
    struct dossier_create *c = http_state(ctx);
    char location[128];
    int rc;

    /* Submission's clients have always read "another body" (its identity is the body alone). */
    if (c->idem.refused == STATUS_UNPROCESSABLE)
        return http_reply_problem(ctx, c->rq.st, "this Idempotency-Key was used with another body");
    if (http_idem_refused(ctx, &c->idem, c->rq.st, &rc))
        return rc; /* 409: a twin still in flight */
    if (c->rq.st == STATUS_CONFLICT)
        return http_reply_problem(ctx, c->rq.st,
                                  "no wave accepts deposits: a wave must be created");
    if (c->rq.st != STATUS_OK)
        return http_reply_problem(ctx, c->rq.st, "the dossier could not be created");
    json_t *parsed = json_loads(c->rq.d.document, 0, NULL);
    snprintf(location, sizeof location, "/v1/dossiers/%s",
             json_string_value(json_object_get(parsed, "id")));
    json_decref(parsed);
    http_set_header(ctx, "Location", location);
    char *doc = c->rq.d.document;
    c->rq.d.document = NULL;
    return routes_reply_text(ctx, 201, doc);
}

static int handle_dossier_create(struct http_ctx *ctx)
{
    struct http_idem idem;
    int rc;

    if (!http_idem_read(ctx, &idem, HTTP_IDEM_REQUIRED, 201, &rc))
        return rc;
    json_t *errors = json_array();
    json_t *content = dossier_content_from_partner(ctx->body, errors);
    if (!content)
        return http_reply_problem_fields(ctx, STATUS_INVALID, errors, "invalid dossier");
    json_decref(errors);
    const char *region =
        json_string_value(json_object_get(json_object_get(content, "territory"), "region"));
    if (!auth_principal_sees_region(&ctx->principal, region)) {
        json_decref(content);
        return http_reply_problem(ctx, STATUS_FORBIDDEN, "this key may not deposit for region %s",
                                  region ? region : "(none)");
    }
    struct dossier_create *c = xcalloc(1, sizeof *c);
    c->idem = idem; /* its strings are borrowed from the request, alive until the answer */
    c->content = content;
    c->rq.d = (struct store_deposit){.who = &ctx->principal,
                                     .idem = &c->idem,
                                     .content = content,
                                     .request_id = ctx->request_id};
    rc = http_defer(ctx, dossier_create_answer, c, dossier_create_free);
    deposits_post(routes_domain(ctx)->deposits, &c->rq, dossier_created, ctx);
    return rc;
}

/* A dossier read by id waits for its batch without holding the HTTP worker. */
static void dossier_read_done(struct reader_request *rq)
{
    http_resume(rq->arg);
}

static int dossier_read_answer(struct http_ctx *ctx)
{
    char *doc;
    long long version;
    enum status st = reader_result(http_state(ctx), &doc, &version);

    if (st != STATUS_OK)
        return http_reply_problem(ctx, st, "no dossier %s", http_param(ctx, "id"));
    return routes_reply_versioned(ctx, doc, version);
}

static int handle_dossier_get(struct http_ctx *ctx)
{
    const char *id = http_param(ctx, "id");

    if (!uuid_is_valid(id))
        return http_reply_problem(ctx, STATUS_NOT_FOUND, "no dossier %s", id);
    struct reader_request *rq = xcalloc(1, sizeof *rq);
    int rc = http_defer(ctx, dossier_read_answer, rq, reader_request_free);
    reader_dossier_post(routes_domain(ctx)->reader, rq, &ctx->principal, id, dossier_read_done,
                        ctx);
    return rc;
}

/* A read that the store answers with one JSON text (history, waves, a new wave). */
struct routes_text {
    const char *id;
    json_t *wave;
    char *text;
    long long version; /* of the dossier, for its history's ETag */
    enum status st;
};

static void routes_text_free(void *arg)
{
    struct routes_text *t = arg;

    free(t->text);
    free(t);
}

/* Answers the store's text (which the state gives up) with code. */
static int routes_text_answer(struct http_ctx *ctx, struct routes_text *t, int code)
{
    char *text = t->text;

    t->text = NULL;
    return routes_reply_text(ctx, code, text);
}

static void dossier_history_run(struct http_ctx *ctx, void *arg)
{
    struct routes_text *t = arg;

    t->st = store_dossier_history(routes_db(ctx), &ctx->principal, t->id, &t->text, &t->version);
}

static int dossier_history_answer(struct http_ctx *ctx)
{
    struct routes_text *t = http_state(ctx);

    if (t->st != STATUS_OK)
        return http_reply_problem(ctx, t->st, "no dossier %s", t->id);
    char *text = t->text;
    t->text = NULL; /* the state gives it up */
    return routes_reply_versioned(ctx, text, t->version);
}

static int handle_dossier_history(struct http_ctx *ctx)
{
    const char *id = http_param(ctx, "id");

    if (!uuid_is_valid(id))
        return http_reply_problem(ctx, STATUS_NOT_FOUND, "no dossier %s", id);
    struct routes_text *t = xcalloc(1, sizeof *t);
    t->id = id;
    return http_defer_call(ctx, dossier_history_run, t, routes_text_free, dossier_history_answer);
}

/*
 * A list cursor is sealed by common/page (clients learn nothing of the transaction ids inside):
 * its position is the writing transaction's id and the dossier id of the page's last item.
 */
static int routes_cursor_parse(const char *cursor, struct dossier_position *pos)
{
    struct page_pos p;

    if (page_cursor_decode("dossiers", cursor, &p) != STATUS_OK || p.n != 2 ||
        p.v[0].type != PAGE_INT || p.v[1].type != PAGE_TEXT || p.v[0].i < 0 ||
        !uuid_is_valid(p.v[1].text))
        return -1;
    snprintf(pos->xid, sizeof pos->xid, "%lld", (long long)p.v[0].i);
    memcpy(pos->id, p.v[1].text, 37); /* a UUID: 36 characters and the terminator */
    return 0;
}

/* The sealed cursor of a position (caller frees). */
static char *routes_cursor_make(const struct dossier_position *last)
{
    struct page_pos p;

    page_pos_init(&p);
    page_pos_add_int(&p, strtoll(last->xid, NULL, 10));
    page_pos_add_text(&p, last->id);
    return page_cursor_encode("dossiers", &p);
}

/* Reads and validates the list filters; appends field errors. pos holds the cursor's parts. */
static void routes_list_filter(struct http_ctx *ctx, struct dossier_filter *f,
                               struct dossier_position *pos, char *since, size_t sincelen,
                               json_t *errors)
{
    static const char *const states[] = {"deposited",      "withdrawn", "en_construction",
                                         "en_instruction", "accepte",   "refuse",
                                         "sans_suite"};
    const char *limit = http_query(ctx, "limit"), *cursor = http_query(ctx, "cursor");
    const char *upd = http_query(ctx, "updated_since");
    char why[96];

    memset(f, 0, sizeof *f);
    f->wave = http_query(ctx, "wave");
    f->region = http_query(ctx, "region");
    f->state = http_query(ctx, "state");
    f->eligibility = http_query(ctx, "eligibility");
    /* The bounds and the message of every list (common/page): decimal digits, 1 to 200. */
    if (page_limit_parse(limit, ROUTES_LIST_DEFAULT, ROUTES_LIST_MAX, &f->limit, why, sizeof why) !=
        STATUS_OK)
        http_field_error(errors, "limit", why);
    if (cursor && routes_cursor_parse(cursor, pos) != 0)
        http_field_error(errors, "cursor", "is not a cursor this API gave");
    f->after_xid = cursor ? pos->xid : NULL;
    f->after_id = cursor ? pos->id : NULL;
    if (f->region && !region_is_valid(f->region))
        http_field_error(errors, "region", "must be an INSEE region code");
    if (f->eligibility && strcmp(f->eligibility, "eligible") != 0 &&
        strcmp(f->eligibility, "ineligible") != 0 && strcmp(f->eligibility, "needs_review") != 0)
        http_field_error(errors, "eligibility", "must be eligible, ineligible or needs_review");
    if (f->state) {
        size_t i = 0;
        while (i < sizeof states / sizeof *states && strcmp(states[i], f->state) != 0)
            i++;
        if (i == sizeof states / sizeof *states)
            http_field_error(errors, "state", "is not a dossier state");
    }
    if (upd && ds_time_parse(upd, since, sincelen) != 0)
        http_field_error(errors, "updated_since", "must be an RFC 3339 time");
    f->updated_since = upd ? since : NULL;
}

/* A page of the list on its way to the database. */
struct dossier_page {
    struct dossier_filter f;
    struct dossier_position pos, last;
    char since[40];
    int more;
    struct buf out;
    enum status st;
};

static void dossier_page_free(void *arg)
{
    struct dossier_page *p = arg;

    buf_free(&p->out);
    free(p);
}

static void dossier_list_run(struct http_ctx *ctx, void *arg)
{
    struct dossier_page *p = arg;

    p->st = store_dossier_list(routes_db(ctx), &ctx->principal, &p->f, &p->out, &p->more, &p->last);
}

static int dossier_list_answer(struct http_ctx *ctx)
{
    struct dossier_page *p = http_state(ctx);

    if (p->st != STATUS_OK)
        return http_reply_problem(ctx, p->st, "the dossiers could not be listed");
    if (p->more) {
        char *cursor = routes_cursor_make(&p->last);
        buf_printf(&p->out, ",\"next_cursor\":\"%s\"}", cursor); /* base64url: no escaping */
        free(cursor);
    } else
        buf_printf(&p->out, ",\"next_cursor\":null}");
    return http_reply_raw(ctx, 200, "application/json", p->out.data, p->out.len);
}

static int handle_dossier_list(struct http_ctx *ctx)
{
    struct dossier_page *p = xcalloc(1, sizeof *p);
    json_t *errors = json_array();

    routes_list_filter(ctx, &p->f, &p->pos, p->since, sizeof p->since, errors);
    if (json_array_size(errors)) {
        free(p);
        return http_reply_problem_fields(ctx, STATUS_INVALID, errors, "invalid list parameters");
    }
    json_decref(errors);
    buf_init(&p->out, 0);
    buf_append(&p->out, "{\"items\":", 9);
    return http_defer_call(ctx, dossier_list_run, p, dossier_page_free, dossier_list_answer);
}

/* ---- waves ---- */

static void wave_list_run(struct http_ctx *ctx, void *arg)
{
    struct routes_text *t = arg;

    t->st = store_waves_list(routes_db(ctx), &t->text);
}

static int wave_list_answer(struct http_ctx *ctx)
{
    struct routes_text *t = http_state(ctx);

    if (t->st != STATUS_OK)
        return http_reply_problem(ctx, t->st, "the waves could not be listed");
    return routes_text_answer(ctx, t, 200);
}

static int handle_wave_list(struct http_ctx *ctx)
{
    return http_defer_call(ctx, wave_list_run, xcalloc(1, sizeof(struct routes_text)),
                           routes_text_free, wave_list_answer);
}

/*
 * Validates a wave's fields into errors, as api-spec's WaveInput says, and rewrites each valid
 * time as the RFC 3339 UTC text that is stored (fractions dropped), so that the database reads
 * exactly the instant that was checked. deposit_closes_at must be after deposit_opens_at;
 * unknown fields are refused.
 */
static void routes_wave_check(json_t *w, json_t *errors)
{
    static const char *const times[] = {"deposit_opens_at", "deposit_closes_at", "phase2_opens_at",
                                        "phase2_closes_at"};
    const char *id = json_string_value(json_object_get(w, "id"));
    const char *label = json_string_value(json_object_get(w, "label"));
    json_t *slots = json_object_get(w, "phase2_slots");
    json_t *amount = json_object_get(w, "amount_per_laureate_cents");
    static const char *const known[] = {"id",
                                        "label",
                                        "deposit_opens_at",
                                        "deposit_closes_at",
                                        "phase2_opens_at",
                                        "phase2_closes_at",
                                        "phase2_slots",
                                        "amount_per_laureate_cents",
                                        NULL};
    char when[4][40] = {{0}};
    long long n;

    /* unknown fields are refused (as a deposit's are), each named: a misspelt one is not lost */
    http_fields_unknown(w, NULL, known, "a wave", errors);

    if (!id || strlen(id) < 1 || strlen(id) > 32 ||
        strspn(id, "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                   "abcdefghijklmnopqrstuvwxyz"
                   "0123456789_-") != strlen(id))
        http_field_error(errors, "id", "must be 1 to 32 letters, digits, '-' or '_'");
    if (!label || !*label || utf8_chars(label, strlen(label)) > 200)
        http_field_error(errors, "label", "is required (at most 200 characters)");
    for (size_t i = 0; i < sizeof times / sizeof *times; i++) {
        json_t *t = json_object_get(w, times[i]);
        if ((i == 0 && (!t || json_is_null(t))) ||
            (t && !json_is_null(t) &&
             ds_time_parse(json_string_value(t), when[i], sizeof when[i]) != 0))
            http_field_error(errors, times[i],
                             i == 0 ? "is required: an RFC 3339 time"
                                    : "must be an RFC 3339 time or null");
        else if (when[i][0])
            json_object_set_new(w, times[i], json_string(when[i]));
    }
    /* Canonical UTC texts of one length compare as their instants do. */
    if (when[0][0] && when[1][0] && strcmp(when[1], when[0]) <= 0)
        http_field_error(errors, "deposit_closes_at", "must be after deposit_opens_at");
    /* 20.0 is the integer 20 (JSON Schema's reading), stored as such */
    if (!jnum_integer_read(slots, 0, 1000, &n))
        http_field_error(errors, "phase2_slots", "must be an integer from 0 to 1000");
    else
        json_object_set_new(w, "phase2_slots", json_integer(n));
    if (!jnum_integer_read(amount, 0, LLONG_MAX, &n))
        http_field_error(errors, "amount_per_laureate_cents",
                         "must be a non-negative integer (euro cents)");
    else
        json_object_set_new(w, "amount_per_laureate_cents", json_integer(n));
}

static void wave_create_run(struct http_ctx *ctx, void *arg)
{
    struct routes_text *t = arg;

    t->st = store_wave_create(routes_db(ctx), ctx->body, &t->text);
}

static int wave_create_answer(struct http_ctx *ctx)
{
    struct routes_text *t = http_state(ctx);

    if (t->st == STATUS_CONFLICT)
        return http_reply_problem(ctx, t->st, "a wave with this id exists");
    if (t->st != STATUS_OK)
        return http_reply_problem(ctx, t->st, "the wave could not be created");
    return routes_text_answer(ctx, t, 201);
}

static int handle_wave_create(struct http_ctx *ctx)
{
    json_t *errors = json_array();

    routes_wave_check(ctx->body, errors);
    if (json_array_size(errors))
        return http_reply_problem_fields(ctx, STATUS_INVALID, errors, "invalid wave");
    json_decref(errors);
    return http_defer_call(ctx, wave_create_run, xcalloc(1, sizeof(struct routes_text)),
                           routes_text_free, wave_create_answer);
}

/*
 * The route table; tests/system/route_matrix.py says the same, role by role. The webhook is
 * public (DS sends no key) and gated by the secret in its path.
 */
const struct http_route submission_routes[] = {
    {"POST", "/v1/webhooks/ds/{token}", handle_ds_webhook, 0,
     HTTP_PUBLIC | HTTP_GATE | HTTP_BODY_FORM | HTTP_SECRET_PATH},
    {"POST", "/v1/dossiers", handle_dossier_create, ROLE_PARTNER | ROLE_NATIONAL_ADMIN,
     HTTP_BODY_JSON | PERSONAL},
    {"GET", "/v1/dossiers", handle_dossier_list, READERS, PERSONAL},
    /* A partner reads back the dossiers it deposited, and only those. */
    {"GET", "/v1/dossiers/{id}", handle_dossier_get, READERS | ROLE_PARTNER, PERSONAL},
    {"GET", "/v1/dossiers/{id}/history", handle_dossier_history, READERS | ROLE_PARTNER, PERSONAL},
    {"GET", "/v1/waves", handle_wave_list, READERS | ROLE_PARTNER | ROLE_DASHBOARD, 0},
    {"POST", "/v1/waves", handle_wave_create, ROLE_NATIONAL_ADMIN, HTTP_BODY_JSON},
};
const size_t submission_nroutes = sizeof submission_routes / sizeof submission_routes[0];
