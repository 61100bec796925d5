/* regional (instruction): the regional team's work — opinion, annotations, labels, routing. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "domain.h"
#include "events.h"
#include "instruction.h"
#include "lifecycle.h"
#include "outbox.h"
#include "pgarray.h"

#define LABELS_MAX 20
#define LABEL_LEN 64

DB_STMT(regional_opinion_set,
        "UPDATE dossier SET opinion = $2, opinion_motivation = $3 WHERE id = $1");
DB_STMT(regional_annotation_def,
        "SELECT type FROM annotation_def WHERE key = $2 AND wave = CASE WHEN EXISTS (SELECT 1"
        " FROM annotation_def x WHERE x.wave = $1) THEN $1 ELSE '*' END");
DB_STMT(regional_annotation_set,
        "INSERT INTO annotation (dossier_id, key, value, updated_by) VALUES ($1, $2, $3::jsonb, $4)"
        " ON CONFLICT (dossier_id, key) DO UPDATE SET value = EXCLUDED.value,"
        " updated_by = EXCLUDED.updated_by, updated_at = now()");
DB_STMT(regional_labels_set, "UPDATE dossier SET labels = $2::text[] WHERE id = $1");
DB_STMT(regional_group_known, "SELECT 1 FROM instruction_group WHERE id = $1");

/* Runs a change of the dossier of the path and answers its new document. */
static int regional_change(struct http_ctx *ctx, store_change_fn change, void *arg)
{
    struct db_conn *conn;
    char why[200];
    enum status st = db_acquire(instruction_db(ctx), &conn);
    int rc;

    if (st != STATUS_OK)
        return instruction_reply_dossier_missing(ctx, st);
    st = store_dossier_change(conn, &ctx->principal, http_param(ctx, "id"),
                              http_header(ctx, "If-Match"), change, arg, why, sizeof why);
    if (st == STATUS_OK)
        rc = instruction_reply_dossier(ctx, conn, 200, http_param(ctx, "id"));
    else if (st == STATUS_NOT_FOUND && !why[0])
        rc = instruction_reply_dossier_missing(ctx, st);
    else
        rc = http_reply_problem(ctx, st, "%s", why[0] ? why : "the change was refused");
    db_release(instruction_db(ctx), conn);
    return rc;
}

struct opinion_arg {
    const char *opinion, *motivation;
    const struct auth_principal *who;
};

static enum status regional_opinion_write(struct db_conn *conn, const struct dossier_row *d,
                                          void *arg, char *why, size_t whylen)
{
    const struct opinion_arg *a = arg;
    const char *params[] = {d->id, a->opinion, a->motivation};

    if (strcmp(d->state, "regional_review") != 0) {
        snprintf(why, whylen, "a regional opinion is given in regional_review, not in %s",
                 d->state);
        return STATUS_CONFLICT;
    }
    enum status st = db_exec(conn, &regional_opinion_set, 3, params, NULL);
    if (st != STATUS_OK)
        return st;
    json_t *data = json_pack("{s:s, s:s, s:s, s:s, s:s?, s:s}", "dossier_id", d->id, "wave",
                             d->wave, "kind", "regional", "opinion", a->opinion, "motivation",
                             a->motivation, "actor", a->who->key_id);
    return outbox_append(conn, INSTRUCTION_TOPIC, LIFECYCLE_SOURCE, "dossier.opinion_recorded",
                         d->id, data, NULL);
}

int regional_handle_opinion(struct http_ctx *ctx)
{
    static const char *const members[] = {"opinion", "motivation", NULL};
    struct opinion_arg a = {.who = &ctx->principal};
    int bad = 0, rc;
    json_t *errors;

    if (!instruction_body_closed(ctx, members, &rc))
        return rc;
    errors = json_array();

    a.opinion = instruction_body_str(ctx, "opinion", &bad);
    if (!domain_opinion_valid(a.opinion))
        http_field_error(errors, "opinion", "must be favourable, reserved or unfavourable");
    bad = 0;
    a.motivation = instruction_body_str(ctx, "motivation", &bad);
    if (bad || (a.motivation && instruction_chars(a.motivation) > 5000))
        http_field_error(errors, "motivation", "must be a string of at most 5000 bytes");
    else if (a.opinion && strcmp(a.opinion, "favourable") != 0 &&
             !domain_annotation_filled(json_object_get(ctx->body, "motivation")))
        http_field_error(errors, "motivation",
                         "is required for a reserved or unfavourable opinion");
    if (json_array_size(errors))
        return http_reply_problem_fields(ctx, STATUS_INVALID, errors, "invalid regional opinion");
    json_decref(errors);
    return regional_change(ctx, regional_opinion_write, &a);
}

struct annotation_arg {
    const char *key;
    const json_t *value;
    const char *actor;
};

static enum status regional_annotation_write(struct db_conn *conn, const struct dossier_row *d,
                                             void *arg, char *why, size_t whylen)
{
    const struct annotation_arg *a = arg;
    const char *def[] = {d->wave, a->key};
    PGresult *r;
    enum status st = db_exec(conn, &regional_annotation_def, 2, def, &r);

    if (st != STATUS_OK)
        return st;
    if (PQntuples(r) == 0) {
        PQclear(r);
        snprintf(why, whylen, "annotation '%s' is not in the catalogue of wave %s", a->key,
                 d->wave);
        return STATUS_NOT_FOUND;
    }
    int fits = domain_annotation_value_ok(PQgetvalue(r, 0, 0), a->value);
    if (!fits)
        snprintf(why, whylen, "annotation '%s' takes a value of type %s", a->key,
                 PQgetvalue(r, 0, 0));
    PQclear(r);
    if (!fits)
        return STATUS_INVALID;
    char *text = json_dumps(a->value, JSON_COMPACT | JSON_ENCODE_ANY);
    const char *params[] = {d->id, a->key, text, a->actor};
    st = db_exec(conn, &regional_annotation_set, 4, params, NULL);
    free(text);
    return st;
}

int regional_handle_annotation(struct http_ctx *ctx)
{
    struct annotation_arg a = {http_param(ctx, "key"), json_object_get(ctx->body, "value"),
                               ctx->principal.key_id};

    if (!a.value || json_object_size(ctx->body) != 1) {
        json_t *errors = json_array();
        http_field_error(errors, "value", "the body is {\"value\": …} (null empties it)");
        return http_reply_problem_fields(ctx, STATUS_INVALID, errors, "invalid annotation");
    }
    return regional_change(ctx, regional_annotation_write, &a);
}

static int regional_label_ok(const char *s)
{
    size_t n = s ? strlen(s) : 0;

    if (n == 0 || n > LABEL_LEN)
        return 0;
    return strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789_-") == n;
}

static enum status regional_labels_write(struct db_conn *conn, const struct dossier_row *d,
                                         void *arg, char *why, size_t whylen)
{
    const char *params[] = {d->id, arg};

    (void)why;
    (void)whylen;
    return db_exec(conn, &regional_labels_set, 2, params, NULL);
}

int regional_handle_labels(struct http_ctx *ctx)
{
    static const char *const members[] = {"labels", NULL};
    json_t *labels = json_object_get(ctx->body, "labels"), *v;
    struct pgarray a;
    size_t i;
    int rc;

    if (!instruction_body_closed(ctx, members, &rc))
        return rc;

    if (!json_is_array(labels) || json_array_size(labels) > LABELS_MAX) {
        json_t *errors = json_array();
        http_field_error(errors, "labels", "must be an array of at most 20 labels");
        return http_reply_problem_fields(ctx, STATUS_INVALID, errors, "invalid labels");
    }
    pgarray_init(&a);
    json_array_foreach(labels, i, v)
    {
        if (!regional_label_ok(json_string_value(v))) {
            pgarray_free(&a);
            json_t *errors = json_array();
            http_field_error(errors, "labels", "each label is 1 to 64 of [a-z0-9_-]");
            return http_reply_problem_fields(ctx, STATUS_INVALID, errors, "invalid labels");
        }
        pgarray_add_text(&a, json_string_value(v));
    }
    rc = regional_change(ctx, regional_labels_write, (void *)pgarray_text(&a));
    pgarray_free(&a);
    return rc;
}

struct assignment_arg {
    const char *group, *reason, *actor;
};

static enum status regional_assignment_write(struct db_conn *conn, const struct dossier_row *d,
                                             void *arg, char *why, size_t whylen)
{
    const struct assignment_arg *a = arg;
    const char *params[] = {a->group};
    PGresult *r;
    enum status st = db_exec(conn, &regional_group_known, 1, params, &r);

    if (st != STATUS_OK)
        return st;
    int known = PQntuples(r) > 0;
    PQclear(r);
    if (!known) {
        snprintf(why, whylen, "no instruction group %s", a->group);
        return STATUS_UNPROCESSABLE;
    }
    return events_route_dossier(conn, d->id, d->region, a->actor, a->reason, a->group);
}

int regional_handle_assignment(struct http_ctx *ctx)
{
    static const char *const members[] = {"group", "reason", NULL};
    struct assignment_arg a = {.actor = ctx->principal.key_id};
    int bad = 0, rc;
    json_t *errors;

    if (!instruction_body_closed(ctx, members, &rc))
        return rc;
    errors = json_array();

    a.group = instruction_body_str(ctx, "group", &bad);
    if (!a.group || bad || instruction_chars(a.group) > 60)
        http_field_error(errors, "group", "must name an instruction group");
    bad = 0;
    a.reason = instruction_body_str(ctx, "reason", &bad);
    if (!domain_annotation_filled(json_object_get(ctx->body, "reason")) || bad ||
        instruction_chars(a.reason) > 150)
        http_field_error(errors, "reason", "is required (at most 150 bytes)");
    if (json_array_size(errors))
        return http_reply_problem_fields(ctx, STATUS_INVALID, errors, "invalid assignment");
    json_decref(errors);
    return regional_change(ctx, regional_assignment_write, &a);
}
