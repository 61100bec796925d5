/* routes (instruction): the route table and the dossier operations (read, list, transitions). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "domain.h"
#include "instruction.h"
#include "lifecycle.h"
#include "page.h"
#include "precond.h"
#include "utf8.h"

#define LIST_MAX 200

struct db_pool *instruction_db(const struct http_ctx *ctx)
{
    return ((struct service *)ctx->app)->db;
}

struct fsm *instruction_fsm(const struct http_ctx *ctx)
{
    return ((struct instruction *)((struct service *)ctx->app)->domain)->fsm;
}

void instruction_members_check(const json_t *obj, const char *prefix, const char *const *allowed,
                               json_t *errors)
{
    const char *key;
    json_t *v;
    char field[160];

    json_object_foreach((json_t *)obj, key, v)
    {
        size_t i = 0;
        while (allowed[i] && strcmp(allowed[i], key) != 0)
            i++;
        if (allowed[i])
            continue;
        snprintf(field, sizeof field, "%s%s", prefix, key);
        http_field_error(errors, field, "is not a member of this request");
    }
}

int instruction_body_closed(struct http_ctx *ctx, const char *const *allowed, int *rc)
{
    json_t *errors = json_array();

    instruction_members_check(ctx->body, "", allowed, errors);
    if (json_array_size(errors)) {
        *rc = http_reply_problem_fields(ctx, STATUS_INVALID, errors, "unknown members");
        return 0;
    }
    json_decref(errors);
    return 1;
}

size_t instruction_chars(const char *s)
{
    return utf8_chars(s, strlen(s));
}

const char *instruction_body_str(const struct http_ctx *ctx, const char *key, int *bad)
{
    json_t *v = json_object_get(ctx->body, key);

    if (v && !json_is_string(v) && !json_is_null(v))
        *bad = 1;
    return json_string_value(v); /* borrowed from the body */
}

int instruction_reply_dossier_missing(struct http_ctx *ctx, enum status st)
{
    if (st == STATUS_NOT_FOUND)
        return http_reply_problem(ctx, st, "no dossier %s", http_param(ctx, "id"));
    return http_reply_problem(ctx, st, "the dossier could not be read");
}

int instruction_reply_dossier(struct http_ctx *ctx, struct db_conn *conn, int code, const char *id)
{
    char etag[PRECOND_ETAG_LEN];
    json_t *doc = store_dossier_document(conn, id);

    if (!doc)
        return http_reply_problem(ctx, STATUS_INTERNAL, "the dossier could not be read");
    if (ctx->principal.role == ROLE_EXPERT)
        json_object_del(doc, "annotations"); /* private to the instructors */
    precond_etag(json_integer_value(json_object_get(doc, "version")), etag);
    http_set_header(ctx, "ETag", etag);
    return http_reply_json(ctx, code, doc);
}

static int handle_dossier_get(struct http_ctx *ctx)
{
    struct db_conn *conn;
    struct dossier_row d;
    int not_modified = 0;
    enum status st = db_acquire(instruction_db(ctx), &conn);

    if (st != STATUS_OK)
        return instruction_reply_dossier_missing(ctx, st);
    st = store_dossier_find(conn, &ctx->principal, http_param(ctx, "id"), &d);
    if (st == STATUS_OK)
        st = precond_if_none_match(http_header(ctx, "If-None-Match"), d.version, &not_modified);
    int rc;
    if (st == STATUS_INVALID)
        rc = http_reply_problem(ctx, st, "If-None-Match is not a list of entity tags");
    else if (st != STATUS_OK)
        rc = instruction_reply_dossier_missing(ctx, st);
    else if (not_modified) {
        char etag[PRECOND_ETAG_LEN];
        precond_etag(d.version, etag);
        http_set_header(ctx, "ETag", etag);
        rc = http_reply_raw(ctx, 304, NULL, "", 0);
    } else
        rc = instruction_reply_dossier(ctx, conn, 200, d.id);
    store_dossier_row_clear(&d);
    db_release(instruction_db(ctx), conn);
    return rc;
}

/* Reads limit and cursor; answers the problem itself and returns 0 when they are wrong. */
static int routes_page_args(struct http_ctx *ctx, const char *kind, long *limit,
                            struct page_pos *pos, int *rc)
{
    char why[128];
    const char *cursor = http_query(ctx, "cursor");
    json_t *errors = json_array();

    page_pos_init(pos);
    if (page_limit_parse(http_query(ctx, "limit"), 50, LIST_MAX, limit, why, sizeof why) !=
        STATUS_OK)
        http_field_error(errors, "limit", why);
    if (cursor && page_cursor_decode(kind, cursor, pos) != STATUS_OK)
        http_field_error(errors, "cursor", "is not a cursor of this list");
    if (json_array_size(errors)) {
        *rc = http_reply_problem_fields(ctx, STATUS_INVALID, errors, "invalid list parameters");
        return 0;
    }
    json_decref(errors);
    return 1;
}

static int handle_dossier_list(struct http_ctx *ctx)
{
    struct dossier_list_filter f = {0};
    struct page_pos pos, last;
    char last_id[UUID_STR_LEN];
    struct db_conn *conn;
    json_t *items;
    int rc;

    if (ctx->principal.role == ROLE_DASHBOARD)
        return http_reply_problem(ctx, STATUS_NOT_FOUND, "no such resource: /v1/dossiers");
    if (!routes_page_args(ctx, "instruction.dossiers", &f.limit, &pos, &rc))
        return rc;
    f.after_id = pos.n == 1 ? pos.v[0].text : NULL;
    f.wave = http_query(ctx, "wave");
    f.region = http_query(ctx, "region");
    f.state = http_query(ctx, "state");
    f.group = http_query(ctx, "group");
    f.label = http_query(ctx, "label");
    const char *overdue = http_query(ctx, "overdue");
    if (overdue && strcmp(overdue, "true") != 0 && strcmp(overdue, "false") != 0)
        return http_reply_problem(ctx, STATUS_INVALID, "overdue must be true or false");
    f.overdue = overdue && strcmp(overdue, "true") == 0;
    if (f.state && !domain_state_known(f.state))
        return http_reply_problem(ctx, STATUS_INVALID, "state '%s' is not a state", f.state);
    enum status st = db_acquire(instruction_db(ctx), &conn);
    if (st == STATUS_OK) {
        st = store_dossier_queue(conn, &ctx->principal, &f, &items, last_id);
        db_release(instruction_db(ctx), conn);
    }
    if (st != STATUS_OK)
        return http_reply_problem(ctx, st, "the dossiers could not be listed");
    page_pos_init(&last);
    if (last_id[0])
        page_pos_add_text(&last, last_id);
    return http_reply_json(
        ctx, 200,
        json_pack("{s:o, s:o}", "items", items, "next_cursor",
                  page_next_cursor("instruction.dossiers", last_id[0] ? &last : NULL)));
}

static int handle_dossier_history(struct http_ctx *ctx)
{
    struct page_pos pos, last;
    struct dossier_row d;
    struct db_conn *conn;
    long limit;
    long long last_seq = 0;
    json_t *items = NULL;
    int rc;

    if (!routes_page_args(ctx, "instruction.history", &limit, &pos, &rc))
        return rc;
    enum status st = db_acquire(instruction_db(ctx), &conn);
    if (st != STATUS_OK)
        return instruction_reply_dossier_missing(ctx, st);
    st = store_dossier_find(conn, &ctx->principal, http_param(ctx, "id"), &d);
    if (st == STATUS_OK)
        st = store_history_page(conn, d.id, pos.n == 1 ? pos.v[0].i : 0, limit, &items, &last_seq);
    store_dossier_row_clear(&d);
    db_release(instruction_db(ctx), conn);
    if (st != STATUS_OK)
        return instruction_reply_dossier_missing(ctx, st);
    page_pos_init(&last);
    if (last_seq)
        page_pos_add_int(&last, last_seq);
    return http_reply_json(
        ctx, 200,
        json_pack("{s:o, s:o}", "items", items, "next_cursor",
                  page_next_cursor("instruction.history", last_seq ? &last : NULL)));
}

/* An invitation's deadline: an RFC 3339 date-time, or a full date (the end of that day, UTC). */
static int routes_deadline(const char *text, char out[CLOCK_RFC3339_LEN])
{
    int64_t us;
    struct clock_date day;

    if (clock_rfc3339_parse(text, &us) == STATUS_OK)
        return clock_rfc3339_format(us, out) == STATUS_OK;
    if (clock_date_parse(text, &day) != STATUS_OK)
        return 0;
    us = (clock_date_days(&day) + 1) * 86400LL * 1000000LL - 1000;
    return clock_rfc3339_format(us, out) == STATUS_OK;
}

/* Answers a refused move: 409 names the current and allowed states, 400 the field. */
static int routes_move_refused(struct http_ctx *ctx, enum status st, const struct fsm_result *res)
{
    if (st == STATUS_CONFLICT)
        return http_reply_problem_members(ctx, st, fsm_conflict_members(res), "%s", res->why);
    if (st == STATUS_INVALID && res->field) {
        json_t *errors = json_array();
        http_field_error(errors, res->field, res->why);
        return http_reply_problem_fields(ctx, st, errors, "%s", res->why);
    }
    if (st == STATUS_NOT_FOUND)
        return instruction_reply_dossier_missing(ctx, st);
    return http_reply_problem(ctx, st, "%s", res->why[0] ? res->why : "the move was refused");
}

static int handle_dossier_transition(struct http_ctx *ctx)
{
    char deadline[CLOCK_RFC3339_LEN];
    struct lifecycle_move mv = {0};
    struct http_idem idem;
    struct fsm_result res;
    struct dossier_row d;
    struct db_conn *conn;
    int bad = 0, rc;
    json_t *errors;

    static const char *const members[] = {"to", "motivation", "reference", "deadline", NULL};

    if (!instruction_body_closed(ctx, members, &rc) ||
        !http_idem_read(ctx, &idem, HTTP_IDEM_ID_METHOD_PATH, 200, &rc))
        return rc;
    errors = json_array();

    mv.to = instruction_body_str(ctx, "to", &bad);
    if (!mv.to || bad)
        http_field_error(errors, "to", "must be a state of the lifecycle");
    bad = 0;
    mv.motivation = instruction_body_str(ctx, "motivation", &bad);
    if (bad || (mv.motivation && instruction_chars(mv.motivation) > 5000))
        http_field_error(errors, "motivation", "must be a string of at most 5000 bytes");
    bad = 0;
    mv.reference = instruction_body_str(ctx, "reference", &bad);
    if (bad || (mv.reference && instruction_chars(mv.reference) > 200))
        http_field_error(errors, "reference", "must be a string of at most 200 bytes");
    bad = 0;
    const char *dl = instruction_body_str(ctx, "deadline", &bad);
    if (bad || (dl && !routes_deadline(dl, deadline)))
        http_field_error(errors, "deadline", "must be an RFC 3339 date or date-time");
    else if (dl)
        mv.deadline = deadline;
    if (json_array_size(errors))
        return http_reply_problem_fields(ctx, STATUS_INVALID, errors, "invalid transition");
    json_decref(errors);
    mv.if_match = http_header(ctx, "If-Match");
    mv.who = &ctx->principal;
    mv.idem = &idem;
    enum status st = db_acquire(instruction_db(ctx), &conn);
    if (st != STATUS_OK)
        return instruction_reply_dossier_missing(ctx, st);
    st = store_dossier_find(conn, &ctx->principal, http_param(ctx, "id"), &d);
    if (st != STATUS_OK)
        rc = instruction_reply_dossier_missing(ctx, st);
    else {
        st = lifecycle_move_apply(instruction_fsm(ctx), conn, &d, &mv, &res);
        if (idem.refused != STATUS_OK)
            rc = http_idem_reply_refusal(ctx, &idem);
        else if (st != STATUS_OK)
            rc = routes_move_refused(ctx, st, &res);
        else if (idem.key) /* the document stored under the key, or the first one replayed */
            rc = http_idem_reply_json(ctx, &idem, 1);
        else
            rc = instruction_reply_dossier(ctx, conn, 200, d.id);
    }
    store_dossier_row_clear(&d);
    db_release(instruction_db(ctx), conn);
    http_idem_clear(&idem);
    return rc;
}

/*
 * Every handler of instruction reads or writes the database: each route says HTTP_DB, so that
 * the whole handler runs on a database thread (waiting for the pool, a row lock, a statement)
 * while its HTTP worker serves the other connections. None of them defers (http_defer*).
 */
const struct http_route instruction_routes[] = {
    {"GET", "/v1/dossiers", handle_dossier_list, INSTRUCTION_READERS,
     HTTP_DB | INSTRUCTION_PERSONAL},
    {"GET", "/v1/dossiers/{id}", handle_dossier_get, INSTRUCTION_READERS,
     HTTP_DB | INSTRUCTION_PERSONAL},
    {"GET", "/v1/dossiers/{id}/history", handle_dossier_history, INSTRUCTION_READERS,
     HTTP_DB | INSTRUCTION_PERSONAL},
    {"POST", "/v1/dossiers/{id}/transitions", handle_dossier_transition, INSTRUCTION_WRITERS,
     HTTP_DB | HTTP_BODY_JSON | INSTRUCTION_PERSONAL},
    {"POST", "/v1/dossiers/{id}/assignment", regional_handle_assignment, ROLE_NATIONAL_ADMIN,
     HTTP_DB | HTTP_BODY_JSON | INSTRUCTION_PERSONAL},
    {"PUT", "/v1/dossiers/{id}/regional-opinion", regional_handle_opinion, INSTRUCTION_WRITERS,
     HTTP_DB | HTTP_BODY_JSON | INSTRUCTION_PERSONAL},
    {"PUT", "/v1/dossiers/{id}/annotations/{key}", regional_handle_annotation, INSTRUCTION_WRITERS,
     HTTP_DB | HTTP_BODY_JSON | INSTRUCTION_PERSONAL},
    {"PUT", "/v1/dossiers/{id}/labels", regional_handle_labels, INSTRUCTION_WRITERS,
     HTTP_DB | HTTP_BODY_JSON | INSTRUCTION_PERSONAL},
    {"POST", "/v1/dossiers/{id}/opinion-requests", experts_handle_request_create,
     INSTRUCTION_WRITERS, HTTP_DB | HTTP_BODY_JSON | INSTRUCTION_PERSONAL},
    {"GET", "/v1/dossiers/{id}/opinion-requests", experts_handle_request_list, INSTRUCTION_READERS,
     HTTP_DB | INSTRUCTION_PERSONAL},
    {"POST", "/v1/opinion-requests/{rid}/declaration", experts_handle_declaration, ROLE_EXPERT,
     HTTP_DB | HTTP_BODY_JSON | INSTRUCTION_PERSONAL},
    {"PUT", "/v1/opinion-requests/{rid}/answer", experts_handle_answer, ROLE_EXPERT,
     HTTP_DB | HTTP_BODY_JSON | INSTRUCTION_PERSONAL},
    {"POST", "/v1/opinion-requests/{rid}/remind", experts_handle_remind, INSTRUCTION_WRITERS,
     HTTP_DB | INSTRUCTION_PERSONAL},
    {"POST", "/v1/opinion-requests/{rid}/revoke", experts_handle_revoke, INSTRUCTION_WRITERS,
     HTTP_DB | INSTRUCTION_PERSONAL},
    {"POST", "/v1/dossiers/{id}/reviews", scoring_handle_review, INSTRUCTION_READERS,
     HTTP_DB | HTTP_BODY_JSON | INSTRUCTION_PERSONAL},
    {"GET", "/v1/rankings", national_handle_rankings, INSTRUCTION_WRITERS,
     HTTP_DB | INSTRUCTION_PERSONAL},
    {"POST", "/v1/waves/{wave}/decisions", national_handle_decisions, ROLE_NATIONAL_ADMIN,
     HTTP_DB | HTTP_BODY_JSON},
    {"GET", "/v1/stats/funnel", national_handle_funnel, INSTRUCTION_STAFF | ROLE_DASHBOARD,
     HTTP_DB},
    {"GET", "/v1/stats/delays", national_handle_delays, INSTRUCTION_STAFF | ROLE_DASHBOARD,
     HTTP_DB},
    {"GET", "/v1/exports/dossiers.csv", national_handle_export, INSTRUCTION_WRITERS,
     HTTP_DB | INSTRUCTION_PERSONAL},
};
const size_t instruction_nroutes = sizeof instruction_routes / sizeof *instruction_routes;
