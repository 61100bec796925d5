/* experts (instruction): opinions asked of experts, with a key per request and a declaration. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "domain.h"
#include "events.h"
#include "http_idem.h"
#include "instruction.h"
#include "lifecycle.h"
#include "outbox.h"

/* The API form of a request; `o` is opinion_request's alias. Never the token. */
#define EXPERTS_DOC                                                                                \
    "json_build_object('id', o.id, 'dossier_id', o.dossier_id, 'expert',"                          \
    " json_build_object('name', o.expert_name, 'siret', o.expert_siret), 'question', o.question,"  \
    " 'yes_no', o.yes_no, 'confidential', o.confidential,"                                         \
    " 'deadline', to_char(o.deadline AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'),"    \
    " 'state', o.state, 'key_id', o.key_id, 'reminders', o.reminders,"                             \
    " 'answer', o.answer, 'answer_yes', o.answer_yes)"

DB_STMT(
    experts_insert,
    "INSERT INTO opinion_request AS o (id, dossier_id, expert_name, expert_siret, question, yes_no,"
    " confidential, deadline, key_id, created_by) VALUES ($1, $2, $3, $4, $5, $6::boolean,"
    " $7::boolean, $8::timestamptz, $9, $10) RETURNING " EXPERTS_DOC);
DB_STMT(experts_list,
        "SELECT " EXPERTS_DOC ", o.key_id = $2, o.confidential"
        " FROM opinion_request o WHERE o.dossier_id = $1 ORDER BY o.created_at, o.id");
DB_STMT(experts_lock, "SELECT dossier_id, key_id, state, yes_no, coalesce(expert_siret, ''),"
                      " confidential FROM opinion_request WHERE id = $1 FOR UPDATE");
DB_STMT(experts_declare, "UPDATE opinion_request SET state = $2, declaration = $3::jsonb"
                         " WHERE id = $1");
DB_STMT(experts_answer, "UPDATE opinion_request SET state = 'answered', answer = $2,"
                        " answer_yes = $3::boolean, answered_at = now() WHERE id = $1");
DB_STMT(experts_remind, "UPDATE opinion_request SET reminders = reminders + 1 WHERE id = $1");
DB_STMT(experts_revoke, "UPDATE opinion_request SET state = 'revoked' WHERE id = $1");
DB_STMT(experts_key_revoke, "UPDATE iam.api_key SET revoked_at = now() WHERE key_id = $1"
                            " AND revoked_at IS NULL");
DB_STMT(experts_get, "SELECT " EXPERTS_DOC " FROM opinion_request o WHERE o.id = $1");

/* The deadline of a request: an RFC 3339 date-time in the future. */
static int experts_deadline(const char *text, char out[CLOCK_RFC3339_LEN])
{
    int64_t us;

    return text && clock_rfc3339_parse(text, &us) == STATUS_OK &&
           clock_rfc3339_format(us, out) == STATUS_OK;
}

struct experts_create {
    const char *name, *siret, *question, *deadline;
    int yes_no, confidential;
};

static void experts_create_read(const struct http_ctx *ctx, struct experts_create *c,
                                char deadline[CLOCK_RFC3339_LEN], json_t *errors)
{
    json_t *expert = json_object_get(ctx->body, "expert");
    json_t *yn = json_object_get(ctx->body, "yes_no"),
           *conf = json_object_get(ctx->body, "confidential");
    int bad = 0;

    static const char *const expert_members[] = {"name", "siret", NULL};

    if (json_is_object(expert))
        instruction_members_check(expert, "expert.", expert_members, errors);
    c->name = json_string_value(json_object_get(expert, "name"));
    c->siret = json_string_value(json_object_get(expert, "siret"));
    if (!c->name || !domain_annotation_filled(json_object_get(expert, "name")) ||
        instruction_chars(c->name) > 300)
        http_field_error(errors, "expert.name", "is required (at most 300 bytes)");
    if (json_object_get(expert, "siret") && !json_is_null(json_object_get(expert, "siret")) &&
        (!c->siret || strlen(c->siret) != 14 || strspn(c->siret, "0123456789") != 14))
        http_field_error(errors, "expert.siret", "must be 14 digits");
    c->question = instruction_body_str(ctx, "question", &bad);
    if (!domain_annotation_filled(json_object_get(ctx->body, "question")) || bad ||
        instruction_chars(c->question) > 5000)
        http_field_error(errors, "question", "is required (at most 5000 bytes)");
    if ((yn && !json_is_boolean(yn)) || (conf && !json_is_boolean(conf)))
        http_field_error(errors, yn && !json_is_boolean(yn) ? "yes_no" : "confidential",
                         "must be a boolean");
    c->yes_no = json_is_true(yn);
    c->confidential = json_is_true(conf);
    bad = 0;
    const char *dl = instruction_body_str(ctx, "deadline", &bad);
    if (bad || !experts_deadline(dl, deadline))
        http_field_error(errors, "deadline", "must be an RFC 3339 date-time");
    c->deadline = deadline;
}

/*
 * Inside one transaction: the Idempotency-Key's claim, the expert's key (scoped to the one
 * dossier) and the request. The answer stored under the Idempotency-Key is the request without
 * its token: keys are kept only as hashes, and the idempotency table must not be the one place
 * where a bearer token lies in clear. A replay (idem->replayed) writes nothing.
 */
static enum status experts_create_tx(struct db_conn *conn, const struct dossier_row *d,
                                     const struct experts_create *c, const char *actor,
                                     struct http_idem *idem, char **token, json_t **doc)
{
    char rid[UUID_STR_LEN], key_id[AUTH_KEY_ID_LEN + 1], label[80];
    PGresult *r;

    uuid_new(rid);
    snprintf(label, sizeof label, "expert opinion %s", rid);
    struct auth_key_spec spec = {
        .role = ROLE_EXPERT,
        .regions = d->region,
        .dossiers = d->id,
        .expires_at = c->deadline,
        .label = label,
    };
    enum status st = db_begin(conn);
    if (st == STATUS_OK)
        st = http_idem_claim(conn, idem);
    if (st == STATUS_OK && idem->replayed) {
        db_rollback(conn);
        return STATUS_OK;
    }
    if (st == STATUS_OK)
        st = auth_key_insert(conn, &spec, token, key_id);
    const char *params[] = {rid,
                            d->id,
                            c->name,
                            c->siret,
                            c->question,
                            c->yes_no ? "true" : "false",
                            c->confidential ? "true" : "false",
                            c->deadline,
                            key_id,
                            actor};
    if (st == STATUS_OK)
        st = db_exec(conn, &experts_insert, 10, params, &r);
    if (st == STATUS_OK) {
        *doc = json_loads(PQgetvalue(r, 0, 0), 0, NULL);
        PQclear(r);
        st = http_idem_store_json(conn, idem, *doc);
    }
    st = db_end(conn, st);
    if (st != STATUS_OK) {
        json_decref(*doc);
        *doc = NULL;
        free(*token);
        *token = NULL;
    }
    return st;
}

int experts_handle_request_create(struct http_ctx *ctx)
{
    char deadline[CLOCK_RFC3339_LEN];
    struct experts_create c = {0};
    struct http_idem idem;
    struct dossier_row d;
    struct db_conn *conn;
    char *token = NULL;
    json_t *doc = NULL, *errors;
    int rc;

    static const char *const members[] = {"expert",       "question", "yes_no",
                                          "confidential", "deadline", NULL};

    if (!instruction_body_closed(ctx, members, &rc) ||
        !http_idem_read(ctx, &idem, HTTP_IDEM_ID_METHOD_PATH, 201, &rc))
        return rc;
    errors = json_array();
    experts_create_read(ctx, &c, deadline, errors);
    if (json_array_size(errors))
        return http_reply_problem_fields(ctx, STATUS_INVALID, errors, "invalid opinion request");
    json_decref(errors);
    enum status st = db_acquire(instruction_db(ctx), &conn);
    if (st != STATUS_OK)
        return instruction_reply_dossier_missing(ctx, st);
    st = store_dossier_find(conn, &ctx->principal, http_param(ctx, "id"), &d);
    if (st == STATUS_OK && (d.withdrawn || !d.region[0]))
        st = STATUS_UNPROCESSABLE;
    if (st == STATUS_OK)
        st = experts_create_tx(conn, &d, &c, ctx->principal.key_id, &idem, &token, &doc);
    store_dossier_row_clear(&d);
    db_release(instruction_db(ctx), conn);
    if (idem.refused != STATUS_OK)
        rc = http_idem_reply_refusal(ctx, &idem);
    else if (st == STATUS_OK && idem.replayed)
        rc = http_idem_reply_json(ctx, &idem, 0); /* the request again, never its token */
    else if (st == STATUS_UNPROCESSABLE)
        rc = http_reply_problem(ctx, st, "a withdrawn or unlocated dossier gets no expert");
    else if (st != STATUS_OK)
        rc = instruction_reply_dossier_missing(ctx, st);
    else {
        json_object_set_new(doc, "token", json_string(token)); /* shown this once */
        rc = http_reply_json(ctx, 201, doc);
    }
    free(token);
    http_idem_clear(&idem);
    return rc;
}

int experts_handle_request_list(struct http_ctx *ctx)
{
    struct dossier_row d;
    struct db_conn *conn;
    PGresult *r = NULL;
    enum status st = db_acquire(instruction_db(ctx), &conn);

    if (st != STATUS_OK)
        return instruction_reply_dossier_missing(ctx, st);
    st = store_dossier_find(conn, &ctx->principal, http_param(ctx, "id"), &d);
    const char *params[] = {d.id, ctx->principal.key_id};
    if (st == STATUS_OK)
        st = db_exec(conn, &experts_list, 2, params, &r);
    store_dossier_row_clear(&d);
    db_release(instruction_db(ctx), conn);
    if (st != STATUS_OK)
        return instruction_reply_dossier_missing(ctx, st);
    json_t *items = json_array();
    int expert = ctx->principal.role == ROLE_EXPERT;
    for (int i = 0; i < PQntuples(r); i++) {
        int own = PQgetvalue(r, i, 1)[0] == 't', confidential = PQgetvalue(r, i, 2)[0] == 't';
        if (expert && !own && confidential)
            continue; /* a confidential opinion is hidden from the other experts */
        json_t *doc = json_loads(PQgetvalue(r, i, 0), 0, NULL);
        if (expert)
            json_object_del(doc, "key_id");
        json_array_append_new(items, doc);
    }
    PQclear(r);
    return http_reply_json(ctx, 200, json_pack("{s:o}", "items", items));
}

/* The request of the path, locked, within the caller's scope (its own key for an expert). */
struct experts_row {
    char dossier_id[UUID_STR_LEN], key_id[AUTH_KEY_ID_LEN + 1], state[16], siret[20];
    int yes_no, confidential;
    struct dossier_row d;
};

static enum status experts_lock_row(struct db_conn *conn, const struct auth_principal *p,
                                    const char *rid, struct experts_row *o)
{
    const char *params[] = {rid};
    PGresult *r;

    memset(o, 0, sizeof *o);
    if (!uuid_is_valid(rid))
        return STATUS_NOT_FOUND;
    enum status st = db_exec(conn, &experts_lock, 1, params, &r);
    if (st != STATUS_OK)
        return st;
    if (PQntuples(r) == 0) {
        PQclear(r);
        return STATUS_NOT_FOUND;
    }
    snprintf(o->dossier_id, sizeof o->dossier_id, "%s", PQgetvalue(r, 0, 0));
    snprintf(o->key_id, sizeof o->key_id, "%s", PQgetvalue(r, 0, 1));
    snprintf(o->state, sizeof o->state, "%s", PQgetvalue(r, 0, 2));
    o->yes_no = PQgetvalue(r, 0, 3)[0] == 't';
    snprintf(o->siret, sizeof o->siret, "%s", PQgetvalue(r, 0, 4));
    o->confidential = PQgetvalue(r, 0, 5)[0] == 't';
    PQclear(r);
    st = store_dossier_row(conn, o->dossier_id, 0, &o->d);
    if (st != STATUS_OK)
        return st;
    if (p->role == ROLE_EXPERT)
        return strcmp(p->key_id, o->key_id) == 0 ? STATUS_OK : STATUS_NOT_FOUND;
    return store_dossier_visible(conn, p, &o->d) ? STATUS_OK : STATUS_NOT_FOUND;
}

typedef enum status (*experts_step_fn)(struct db_conn *conn, struct http_ctx *ctx,
                                       struct experts_row *o, char *why, size_t whylen);

/* One change of a request in its own transaction, then its document (or the refusal). */
static int experts_run(struct http_ctx *ctx, experts_step_fn fn)
{
    struct experts_row o;
    struct db_conn *conn;
    char why[200] = "";
    PGresult *r;
    const char *rid = http_param(ctx, "rid");
    enum status st = db_acquire(instruction_db(ctx), &conn);

    if (st != STATUS_OK)
        return http_reply_problem(ctx, st, "the opinion request could not be read");
    memset(&o, 0, sizeof o); /* read below even when the transaction cannot begin */
    st = db_begin(conn);
    if (st == STATUS_OK)
        st = experts_lock_row(conn, &ctx->principal, rid, &o);
    if (st == STATUS_OK)
        st = fn(conn, ctx, &o, why, sizeof why);
    /* A blocked declaration is kept (and its key revoked) even though the answer is a 409. */
    int keep = st == STATUS_OK || (st == STATUS_CONFLICT && !strcmp(o.state, "blocked"));
    if (keep && db_commit(conn) != STATUS_OK)
        st = STATUS_UNAVAILABLE;
    else if (!keep)
        db_rollback(conn);
    store_dossier_row_clear(&o.d);
    const char *params[] = {rid};
    int rc;
    if (st == STATUS_OK && db_exec(conn, &experts_get, 1, params, &r) == STATUS_OK) {
        rc = http_reply_json(ctx, 200, json_loads(PQgetvalue(r, 0, 0), 0, NULL));
        PQclear(r);
    } else if (st == STATUS_NOT_FOUND) {
        rc = http_reply_problem(ctx, st, "no opinion request %s", rid);
    } else {
        rc = http_reply_problem(ctx, st == STATUS_OK ? STATUS_INTERNAL : st, "%s",
                                why[0] ? why : "the opinion request could not be changed");
    }
    db_release(instruction_db(ctx), conn);
    return rc;
}

static enum status experts_declare_step(struct db_conn *conn, struct http_ctx *ctx,
                                        struct experts_row *o, char *why, size_t whylen)
{
    json_t *interests = json_object_get(ctx->body, "interests");
    const char *org = json_string_value(json_object_get(ctx->body, "organisation_siret"));

    if (strcmp(o->state, "requested") != 0) {
        snprintf(why, whylen, "the request is %s: the declaration was made", o->state);
        return STATUS_CONFLICT;
    }
    if (!domain_annotation_filled(interests) || !json_is_string(interests)) {
        snprintf(why, whylen, "interests (a text declaring them, or \"none\") are required");
        return STATUS_INVALID;
    }
    int conflict = domain_siret_conflicts(o->d.doc, o->siret) ||
                   (org && domain_siret_conflicts(o->d.doc, org));
    char *decl = json_dumps(ctx->body, JSON_COMPACT);
    snprintf(o->state, sizeof o->state, "%s", conflict ? "blocked" : "declared");
    const char *params[] = {http_param(ctx, "rid"), o->state, decl};
    enum status st = db_exec(conn, &experts_declare, 3, params, NULL);
    free(decl);
    const char *key[] = {o->key_id};
    if (st == STATUS_OK && conflict)
        st = db_exec(conn, &experts_key_revoke, 1, key, NULL);
    if (st == STATUS_OK && conflict) {
        snprintf(why, whylen,
                 "conflict of interest: the expert's organisation is a member of "
                 "the PTCE; the request is blocked and its key revoked");
        return STATUS_CONFLICT;
    }
    return st;
}

int experts_handle_declaration(struct http_ctx *ctx)
{
    static const char *const members[] = {"interests", "organisation_siret", NULL};
    int rc;

    if (!instruction_body_closed(ctx, members, &rc))
        return rc;
    return experts_run(ctx, experts_declare_step);
}

static enum status experts_answer_step(struct db_conn *conn, struct http_ctx *ctx,
                                       struct experts_row *o, char *why, size_t whylen)
{
    json_t *answer = json_object_get(ctx->body, "answer"), *yes = json_object_get(ctx->body, "yes");

    if (strcmp(o->state, "declared") != 0) {
        snprintf(why, whylen, "the request is %s: %s", o->state,
                 !strcmp(o->state, "requested") ? "declare interests first" : "no answer now");
        return STATUS_CONFLICT;
    }
    if (!json_is_string(answer) || !domain_annotation_filled(answer) ||
        instruction_chars(json_string_value(answer)) > 20000 ||
        (o->yes_no && !json_is_boolean(yes))) {
        snprintf(why, whylen,
                 "answer (a text) is required, and yes (a boolean) for a yes/no "
                 "question");
        return STATUS_INVALID;
    }
    const char *params[] = {http_param(ctx, "rid"), json_string_value(answer),
                            json_is_boolean(yes) ? (json_is_true(yes) ? "true" : "false") : NULL};
    enum status st = db_exec(conn, &experts_answer, 3, params, NULL);
    if (st != STATUS_OK)
        return st;
    json_t *data = json_pack("{s:s, s:s, s:s, s:s, s:b, s:s}", "dossier_id", o->dossier_id, "wave",
                             o->d.wave, "kind", "expert", "request_id", http_param(ctx, "rid"),
                             "confidential", o->confidential, "actor", ctx->principal.key_id);
    return outbox_append(conn, INSTRUCTION_TOPIC, LIFECYCLE_SOURCE, "dossier.opinion_recorded",
                         o->dossier_id, data, NULL);
}

int experts_handle_answer(struct http_ctx *ctx)
{
    static const char *const members[] = {"answer", "yes", NULL};
    int rc;

    if (!instruction_body_closed(ctx, members, &rc))
        return rc;
    return experts_run(ctx, experts_answer_step);
}

static enum status experts_remind_step(struct db_conn *conn, struct http_ctx *ctx,
                                       struct experts_row *o, char *why, size_t whylen)
{
    const char *params[] = {http_param(ctx, "rid")};

    if (strcmp(o->state, "requested") != 0 && strcmp(o->state, "declared") != 0) {
        snprintf(why, whylen, "the request is %s: nothing to remind", o->state);
        return STATUS_CONFLICT;
    }
    return db_exec(conn, &experts_remind, 1, params, NULL);
}

int experts_handle_remind(struct http_ctx *ctx)
{
    return experts_run(ctx, experts_remind_step);
}

static enum status experts_revoke_step(struct db_conn *conn, struct http_ctx *ctx,
                                       struct experts_row *o, char *why, size_t whylen)
{
    const char *params[] = {http_param(ctx, "rid")};
    const char *key[] = {o->key_id};

    if (!strcmp(o->state, "answered") || !strcmp(o->state, "revoked")) {
        snprintf(why, whylen, "the request is %s already", o->state);
        return STATUS_CONFLICT;
    }
    enum status st = db_exec(conn, &experts_revoke, 1, params, NULL);
    return st == STATUS_OK ? db_exec(conn, &experts_key_revoke, 1, key, NULL) : st;
}

int experts_handle_revoke(struct http_ctx *ctx)
{
    return experts_run(ctx, experts_revoke_step);
}
