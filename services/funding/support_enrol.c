/* support_enrol: the SQL of enrolments, deliveries and uptake — capacity kept under a row lock. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "precond.h"
#include "support_store.h"
#include "xalloc.h"

#define ENROLMENT_JSON                                                                             \
    "json_build_object('id', id, 'action_id', action_id, 'dossier_id', dossier_id,"                \
    " 'state', state, 'note', note, 'delivered_on', delivered_on,"                                 \
    " 'delivery_note', delivery_note, 'version', version,"                                         \
    " 'created_at', " SUPPORT_SQL_TIME("created_at") ")::text"

/* The action's row, locked until the transaction ends: enrolments into it take turns here. */
DB_STMT(st_enrol_lock, "SELECT coalesce(partner_key_id, ''), capacity, enrolled,"
                       " ends_on < (now() AT TIME ZONE 'UTC')::date"
                       " FROM support_action WHERE id = $1 FOR UPDATE");
DB_STMT(st_enrol_access, "SELECT region FROM support_access WHERE dossier_id = $1");
DB_STMT(st_enrol_insert,
        "INSERT INTO support_enrolment (id, action_id, dossier_id, partner_key_id, note)"
        " VALUES ($1, $2, $3, $4, $5) RETURNING " ENROLMENT_JSON);
DB_STMT(st_enrol_count, "UPDATE support_action SET enrolled = enrolled + 1 WHERE id = $1");

/* Takes (json, version) from the given columns of row 0 of r. */
static void enrol_take(PGresult *r, int col, char **json, long long *version)
{
    *json = xstrdup(PQgetvalue(r, 0, col));
    *version = strtoll(PQgetvalue(r, 0, col + 1), NULL, 10);
}

/* Refuses with a reason for the problem's detail. */
static enum status enrol_refuse(struct support_refusal *refusal, enum status st, const char *why)
{
    refusal->why = why;
    return st;
}

/* Locks the action and checks that this key delivers it; *full and *over say its room. */
static enum status enrol_lock_action(struct db_conn *conn, const struct auth_principal *who,
                                     const char *action_id, int *full, int *over,
                                     struct support_refusal *refusal)
{
    const char *params[] = {action_id};
    PGresult *r;
    enum status st = db_exec(conn, &st_enrol_lock, 1, params, &r);

    if (st != STATUS_OK)
        return st;
    if (PQntuples(r) != 1) {
        PQclear(r);
        return enrol_refuse(refusal, STATUS_NOT_FOUND, "no such action");
    }
    const char *partner = PQgetvalue(r, 0, 0);
    int mine = !*partner || strcmp(partner, who->key_id) == 0;
    *full = strtol(PQgetvalue(r, 0, 2), NULL, 10) >= strtol(PQgetvalue(r, 0, 1), NULL, 10);
    *over = PQgetvalue(r, 0, 3)[0] == 't';
    PQclear(r);
    /* An action another partner delivers is not this key's to see. */
    return mine ? STATUS_OK : enrol_refuse(refusal, STATUS_NOT_FOUND, "no such action");
}

/* 1 when the dossier has access and lies in the key's regions. */
static enum status enrol_may_serve(struct db_conn *conn, const struct auth_principal *who,
                                   const char *dossier_id, int *yes)
{
    const char *params[] = {dossier_id};
    PGresult *r;
    enum status st = db_exec(conn, &st_enrol_access, 1, params, &r);

    *yes = 0;
    if (st != STATUS_OK)
        return st;
    if (PQntuples(r) == 1 && !PQgetisnull(r, 0, 0))
        *yes = auth_principal_sees_region(who, PQgetvalue(r, 0, 0));
    PQclear(r);
    return STATUS_OK;
}

static enum status enrol_insert(struct db_conn *conn, const struct auth_principal *who,
                                const struct support_enrolment_input *in, char **json)
{
    char id[UUID_STR_LEN];
    PGresult *r;

    uuid_new(id);
    const char *params[] = {id, in->action_id, in->dossier_id, who->key_id, in->note};
    enum status st = db_exec(conn, &st_enrol_insert, 5, params, &r);
    if (st != STATUS_OK)
        return st;
    *json = xstrdup(PQgetvalue(r, 0, 0));
    PQclear(r);
    const char *p1[] = {in->action_id};
    return db_exec(conn, &st_enrol_count, 1, p1, NULL);
}

/* The checks and writes of one enrolment, inside the open transaction, after the key's claim. */
static enum status enrol_apply(struct db_conn *conn, const struct auth_principal *who,
                               const struct support_enrolment_input *in, char **json,
                               struct support_refusal *refusal)
{
    int full = 0, over = 0, serve = 0;
    enum status st = enrol_lock_action(conn, who, in->action_id, &full, &over, refusal);

    if (st == STATUS_OK)
        st = enrol_may_serve(conn, who, in->dossier_id, &serve);
    if (st != STATUS_OK)
        return st;
    if (!serve)
        return enrol_refuse(refusal, STATUS_NOT_FOUND, "no PTCE this key may serve has this id");
    if (over)
        return enrol_refuse(refusal, STATUS_CONFLICT, "the action's period is over");
    if (full)
        return enrol_refuse(refusal, STATUS_CONFLICT, "the action is full");
    st = enrol_insert(conn, who, in, json);
    if (st == STATUS_CONFLICT)
        refusal->why = "this PTCE is already enrolled in this action";
    return st;
}

/* An enrolment's arguments, for http_idem_run. */
struct enrol_args {
    const struct auth_principal *who;
    const struct support_enrolment_input *in;
    struct support_refusal *refusal;
};

static enum status enrol_make(struct db_conn *conn, void *arg, char **json)
{
    struct enrol_args *a = arg;

    return enrol_apply(conn, a->who, a->in, json, a->refusal);
}

enum status support_store_enrolment_create(struct db_pool *db, const struct auth_principal *who,
                                           const struct support_enrolment_input *in,
                                           struct http_idem *idem, char **json,
                                           struct support_refusal *refusal)
{
    struct enrol_args a = {who, in, refusal};

    refusal->why = NULL;
    /* The key first (http_idem_run): a replay or a twin in flight is answered without waiting
     * for the action's lock. */
    return http_idem_run(db, idem, enrol_make, &a, json);
}

/* ---- one enrolment, its delivery ---- */

DB_STMT(st_enrolment_get, "SELECT " ENROLMENT_JSON ", version, partner_key_id, s.region"
                          " FROM support_enrolment JOIN support_access s USING (dossier_id)"
                          " WHERE id = $1");
DB_STMT(st_delivery_lock, "SELECT partner_key_id, state, version FROM support_enrolment"
                          " WHERE id = $1 FOR UPDATE");
DB_STMT(st_delivery_update,
        "UPDATE support_enrolment SET state = 'delivered', delivered_on = $2::date,"
        " delivery_note = $3, version = version + 1 WHERE id = $1"
        " RETURNING " ENROLMENT_JSON ", version");

enum status support_store_enrolment_get(struct db_pool *db, const struct auth_principal *who,
                                        const char *id, char **json, long long *version)
{
    const char *params[] = {id};
    PGresult *r;
    enum status st = support_store_run(db, &st_enrolment_get, 1, params, &r);

    if (st != STATUS_OK)
        return st;
    int visible = 0;
    if (PQntuples(r) == 1 && who->role == ROLE_PARTNER)
        visible = strcmp(PQgetvalue(r, 0, 2), who->key_id) == 0;
    else if (PQntuples(r) == 1)
        visible = !PQgetisnull(r, 0, 3) ? auth_principal_sees_region(who, PQgetvalue(r, 0, 3))
                                        : who->all_regions;
    if (visible)
        enrol_take(r, 0, json, version);
    PQclear(r);
    return visible ? STATUS_OK : STATUS_NOT_FOUND;
}

static enum status delivery_apply(struct db_conn *conn, const struct auth_principal *who,
                                  const char *id, const char *if_match,
                                  const struct support_delivery_input *in, char **json,
                                  long long *version, struct support_refusal *refusal)
{
    const char *params[] = {id, in->delivered_on, in->note};
    PGresult *r;
    enum status st = db_exec(conn, &st_delivery_lock, 1, params, &r);

    if (st != STATUS_OK)
        return st;
    if (PQntuples(r) != 1 || strcmp(PQgetvalue(r, 0, 0), who->key_id) != 0) {
        PQclear(r);
        return enrol_refuse(refusal, STATUS_NOT_FOUND, "no such enrolment");
    }
    int delivered = strcmp(PQgetvalue(r, 0, 1), "delivered") == 0;
    long long current = strtoll(PQgetvalue(r, 0, 2), NULL, 10);
    PQclear(r);
    st = precond_if_match(if_match, current, 1);
    if (st != STATUS_OK)
        return st;
    if (delivered)
        return enrol_refuse(refusal, STATUS_CONFLICT, "the delivery is recorded already");
    st = db_exec(conn, &st_delivery_update, 3, params, &r);
    if (st != STATUS_OK)
        return st;
    enrol_take(r, 0, json, version);
    PQclear(r);
    return STATUS_OK;
}

enum status support_store_delivery_record(struct db_pool *db, const struct auth_principal *who,
                                          const char *id, const char *if_match,
                                          const struct support_delivery_input *in, char **json,
                                          long long *version, struct support_refusal *refusal)
{
    struct db_conn *conn;
    enum status st = db_acquire(db, &conn);

    *json = NULL;
    refusal->why = NULL;
    if (st != STATUS_OK)
        return st;
    st = db_begin(conn);
    if (st == STATUS_OK)
        st = delivery_apply(conn, who, id, if_match, in, json, version, refusal);
    st = db_end(conn, st);
    db_release(db, conn);
    if (st != STATUS_OK) {
        free(*json);
        *json = NULL;
    }
    return st;
}

/* ---- uptake ---- */

DB_STMT(st_uptake_actions,
        "SELECT coalesce(json_agg(json_build_object('action_id', a.id, 'title', a.title,"
        " 'partner_organisation', a.partner_organisation, 'format', a.format,"
        " 'capacity', a.capacity, 'enrolled', a.enrolled,"
        " 'delivered', (SELECT count(*) FROM support_enrolment e"
        "   WHERE e.action_id = a.id AND e.state = 'delivered')) ORDER BY a.seq), '[]')::text"
        " FROM support_action a");
DB_STMT(st_uptake_regions,
        "SELECT coalesce(json_agg(json_build_object('region', u.region,"
        " 'beneficiaries', u.beneficiaries, 'enrolled_beneficiaries', u.enrolled_beneficiaries,"
        " 'enrolments', u.enrolments, 'deliveries', u.deliveries)"
        " ORDER BY u.region NULLS LAST), '[]')::text FROM ("
        "  SELECT s.region, count(DISTINCT s.dossier_id) AS beneficiaries,"
        "   count(DISTINCT e.dossier_id) AS enrolled_beneficiaries, count(e.id) AS enrolments,"
        "   count(e.id) FILTER (WHERE e.state = 'delivered') AS deliveries"
        "  FROM support_access s LEFT JOIN support_enrolment e ON e.dossier_id = s.dossier_id"
        "  WHERE $1::text[] IS NULL OR s.region = ANY($1::text[]) GROUP BY s.region) u");

/* Runs a one-cell aggregate and parses it as JSON. */
static enum status uptake_part(struct db_pool *db, struct db_stmt *stmt, int nparams,
                               const char *const *params, json_t **out)
{
    PGresult *r;
    char *text = NULL;
    enum status st = support_store_run(db, stmt, nparams, params, &r);

    if (st == STATUS_OK)
        st = support_store_one_text(r, &text);
    if (st != STATUS_OK)
        return st;
    *out = json_loads(text, 0, NULL);
    free(text);
    return *out ? STATUS_OK : STATUS_INTERNAL;
}

enum status support_store_uptake(struct db_pool *db, const struct auth_principal *who, json_t **out)
{
    char *regions = support_store_regions(who);
    const char *params[] = {regions};
    json_t *actions = NULL, *by_region = NULL;
    enum status st = uptake_part(db, &st_uptake_actions, 0, NULL, &actions);

    if (st == STATUS_OK)
        st = uptake_part(db, &st_uptake_regions, 1, params, &by_region);
    free(regions);
    if (st != STATUS_OK) {
        json_decref(actions);
        return st;
    }
    *out = json_pack("{s:o, s:o}", "actions", actions, "regions", by_region);
    return STATUS_OK;
}
