/*
 * support (funding): the bouquet of services — the catalogue of actions, access granted to
 * phase-1 laureates on dossier.decided, partners' enrolments and deliveries, uptake.
 */
#include "support.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "events.h"
#include "log.h"
#include "page.h"
#include "precond.h"
#include "service.h"
#include "support_http.h"

#define SUPPORT_SOURCE "/ptce/funding"
#define STAFF (ROLE_NATIONAL_ADMIN | ROLE_FUNDING_OFFICER)

/* ---- the event ---- */

enum status support_on_decided(struct db_conn *conn, const struct cloudevent *ev)
{
    struct support_decision d;
    char why[96];
    int granted = 0;
    json_t *data = NULL;
    enum status st = support_decision_parse(ev->data, &d, why, sizeof why);

    if (st != STATUS_OK) {
        log_event(LOG_WARN, "support.decision_invalid", "{s:s, s:s}", "event_id", ev->id, "why",
                  why);
        return st;
    }
    if (!support_decision_grants(&d))
        return STATUS_OK; /* refused or closed: no access */
    st = support_store_access_grant(conn, &d, ev->id, &granted, &data);
    if (st != STATUS_OK || !granted)
        return st; /* a dossier with access already keeps the one it has */
    log_event(LOG_INFO, "support.access_granted", "{s:s, s:s?}", "dossier_id", d.dossier_id,
              "region", d.region);
    return outbox_append(conn, FUNDING_TOPIC, SUPPORT_SOURCE, "support.access_granted",
                         d.dossier_id, data, NULL); /* takes data */
}

/* ---- shared by the handlers ---- */

struct db_pool *support_db(const struct http_ctx *ctx)
{
    return ((struct service *)ctx->app)->db;
}

int support_reply_text(struct http_ctx *ctx, int code, char *text)
{
    int rc = http_reply_raw(ctx, code, "application/json", text, strlen(text));

    free(text);
    return rc;
}

void support_list_args(const struct http_ctx *ctx, const char *kind, long *limit, long long *after,
                       json_t *errors)
{
    const char *cursor = http_query(ctx, "cursor");
    struct page_pos pos;
    char why[96];

    *after = 0;
    if (page_limit_parse(http_query(ctx, "limit"), 50, 200, limit, why, sizeof why) != STATUS_OK)
        http_field_error(errors, "limit", why);
    if (!cursor)
        return;
    if (page_cursor_decode(kind, cursor, &pos) != STATUS_OK || pos.n != 1 ||
        pos.v[0].type != PAGE_INT)
        http_field_error(errors, "cursor", "is not a cursor of this list");
    else
        *after = pos.v[0].i;
}

int support_reply_page(struct http_ctx *ctx, const char *kind, struct support_page *page)
{
    struct page_pos last;

    page_pos_init(&last);
    page_pos_add_int(&last, page->last_seq);
    json_t *body = json_pack("{s:o, s:o}", "items", page->items, "next_cursor",
                             page_next_cursor(kind, page->more ? &last : NULL));
    page->items = NULL;
    return http_reply_json(ctx, 200, body);
}

/* Answers a versioned resource with its ETag. Takes json. */
static int support_reply_versioned(struct http_ctx *ctx, int code, char *json, long long version)
{
    char etag[PRECOND_ETAG_LEN];

    precond_etag(version, etag);
    http_set_header(ctx, "ETag", etag);
    return support_reply_text(ctx, code, json);
}

/* ---- actions ---- */

static int handle_action_list(struct http_ctx *ctx)
{
    struct support_page page;
    long limit;
    long long after;
    json_t *errors = json_array();

    support_list_args(ctx, "support_actions", &limit, &after, errors);
    if (json_array_size(errors))
        return http_reply_problem_fields(ctx, STATUS_INVALID, errors, "invalid list parameters");
    json_decref(errors);
    enum status st = support_store_action_list(support_db(ctx), after, limit, &page);
    if (st != STATUS_OK)
        return http_reply_problem(ctx, st, "the actions could not be listed");
    return support_reply_page(ctx, "support_actions", &page);
}

static int handle_action_create(struct http_ctx *ctx)
{
    struct support_action_input in;
    char *json;
    json_t *errors = json_array();

    if (support_action_parse(ctx->body, &in, errors) != STATUS_OK)
        return http_reply_problem_fields(ctx, STATUS_INVALID, errors, "invalid action");
    json_decref(errors);
    enum status st = support_store_action_insert(support_db(ctx), &ctx->principal, &in, &json);
    if (st != STATUS_OK)
        return http_reply_problem(ctx, st, "the action could not be created");
    return support_reply_text(ctx, 201, json);
}

/* ---- beneficiaries: the PTCE a key may serve ---- */

static int handle_beneficiary_list(struct http_ctx *ctx)
{
    struct support_page page;
    long limit;
    long long after;
    json_t *errors = json_array();

    support_list_args(ctx, "support_beneficiaries", &limit, &after, errors);
    if (json_array_size(errors))
        return http_reply_problem_fields(ctx, STATUS_INVALID, errors, "invalid list parameters");
    json_decref(errors);
    enum status st =
        support_store_beneficiary_list(support_db(ctx), &ctx->principal, after, limit, &page);
    if (st != STATUS_OK)
        return http_reply_problem(ctx, st, "the beneficiaries could not be listed");
    return support_reply_page(ctx, "support_beneficiaries", &page);
}

static int handle_beneficiary_get(struct http_ctx *ctx)
{
    const char *id = http_param(ctx, "dossier_id");
    char *json;

    if (!uuid_is_valid(id))
        return http_reply_problem(ctx, STATUS_NOT_FOUND, "no beneficiary %s", id);
    enum status st = support_store_beneficiary_get(support_db(ctx), &ctx->principal, id, &json);
    if (st != STATUS_OK)
        return http_reply_problem(ctx, st, "no beneficiary %s", id);
    return support_reply_text(ctx, 200, json);
}

/* ---- enrolments and deliveries ---- */

static int handle_enrolment_create(struct http_ctx *ctx)
{
    struct support_enrolment_input in;
    struct support_refusal refusal;
    struct http_idem idem;
    char location[96];
    char *json;
    int rc;

    if (!http_idem_read(ctx, &idem, HTTP_IDEM_REQUIRED, 201, &rc))
        return rc;
    json_t *errors = json_array();
    if (support_enrolment_parse(ctx->body, &in, errors) != STATUS_OK)
        return http_reply_problem_fields(ctx, STATUS_INVALID, errors, "invalid enrolment");
    json_decref(errors);
    enum status st = support_store_enrolment_create(support_db(ctx), &ctx->principal, &in, &idem,
                                                    &json, &refusal);
    if (http_idem_refused(ctx, &idem, st, &rc))
        return rc;
    if (st != STATUS_OK)
        return http_reply_problem(ctx, st, "%s",
                                  refusal.why ? refusal.why : "the enrolment could not be made");
    /* The ETag and the Location come from the answer itself, the same on a replay. */
    json_t *parsed = json_loads(json, 0, NULL);
    snprintf(location, sizeof location, "/v1/support/enrolments/%s",
             json_string_value(json_object_get(parsed, "id")));
    long long version = json_integer_value(json_object_get(parsed, "version"));
    json_decref(parsed);
    http_set_header(ctx, "Location", location);
    return support_reply_versioned(ctx, 201, json, version);
}

static int handle_enrolment_get(struct http_ctx *ctx)
{
    const char *id = http_param(ctx, "id");
    char *json;
    long long version;

    if (!uuid_is_valid(id))
        return http_reply_problem(ctx, STATUS_NOT_FOUND, "no enrolment %s", id);
    enum status st =
        support_store_enrolment_get(support_db(ctx), &ctx->principal, id, &json, &version);
    if (st != STATUS_OK)
        return http_reply_problem(ctx, st, "no enrolment %s", id);
    return support_reply_versioned(ctx, 200, json, version);
}

static int handle_delivery_record(struct http_ctx *ctx)
{
    const char *id = http_param(ctx, "id");
    struct support_delivery_input in;
    struct support_refusal refusal;
    struct clock_date today;
    char *json;
    long long version;
    json_t *errors;

    if (!uuid_is_valid(id))
        return http_reply_problem(ctx, STATUS_NOT_FOUND, "no enrolment %s", id);
    support_today(&today);
    errors = json_array();
    if (support_delivery_parse(ctx->body, &today, &in, errors) != STATUS_OK)
        return http_reply_problem_fields(ctx, STATUS_INVALID, errors, "invalid delivery");
    json_decref(errors);
    enum status st =
        support_store_delivery_record(support_db(ctx), &ctx->principal, id,
                                      http_header(ctx, "If-Match"), &in, &json, &version, &refusal);
    if (st == STATUS_PRECONDITION_REQUIRED)
        return http_reply_problem(ctx, st,
                                  "an If-Match header with the enrolment's ETag is "
                                  "required");
    if (st == STATUS_PRECONDITION_FAILED)
        return http_reply_problem(ctx, st, "the enrolment changed: read it again");
    if (st != STATUS_OK)
        return http_reply_problem(ctx, st, "%s",
                                  refusal.why ? refusal.why : "the delivery could not be recorded");
    return support_reply_versioned(ctx, 200, json, version);
}

/* ---- uptake ---- */

static int handle_uptake(struct http_ctx *ctx)
{
    json_t *body;
    enum status st = support_store_uptake(support_db(ctx), &ctx->principal, &body);

    if (st != STATUS_OK)
        return http_reply_problem(ctx, st, "the uptake could not be computed");
    return http_reply_json(ctx, 200, body);
}

const struct http_route support_routes[] = {
    {"GET", "/v1/support/actions", handle_action_list, ROLE_ANY, HTTP_DB},
    {"POST", "/v1/support/actions", handle_action_create, ROLE_NATIONAL_ADMIN,
     HTTP_BODY_JSON | HTTP_DB},
    {"GET", "/v1/support/beneficiaries", handle_beneficiary_list, STAFF | ROLE_PARTNER, HTTP_DB},
    {"GET", "/v1/support/beneficiaries/{dossier_id}", handle_beneficiary_get, STAFF | ROLE_PARTNER,
     HTTP_DB},
    {"POST", "/v1/support/enrolments", handle_enrolment_create, ROLE_PARTNER,
     HTTP_BODY_JSON | HTTP_DB},
    {"GET", "/v1/support/enrolments/{id}", handle_enrolment_get, STAFF | ROLE_PARTNER, HTTP_DB},
    {"POST", "/v1/support/enrolments/{id}/deliveries", handle_delivery_record, ROLE_PARTNER,
     HTTP_BODY_JSON | HTTP_DB},
    {"GET", "/v1/support/uptake", handle_uptake, STAFF | ROLE_DASHBOARD, HTTP_DB},
    {"POST", "/v1/charter/signatures", charter_signature_create, STAFF, HTTP_BODY_JSON | HTTP_DB},
    /* Public data: no key (roles 0), like the probes. */
    {"GET", "/v1/charter/signatories", charter_signatory_list, 0, HTTP_PUBLIC | HTTP_DB},
};
const size_t support_nroutes = sizeof support_routes / sizeof support_routes[0];
