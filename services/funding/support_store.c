/* support_store: all SQL of the bouquet of services, one function per use case. */
#include "support_store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pgarray.h"
#include "precond.h"
#include "xalloc.h"

#define ACTION_JSON                                                                                \
    "json_build_object('id', id, 'title', title, 'description', description,"                      \
    " 'partner_organisation', partner_organisation, 'partner_key_id', partner_key_id,"             \
    " 'format', format, 'capacity', capacity, 'enrolled', enrolled,"                               \
    " 'remaining', capacity - enrolled, 'starts_on', starts_on, 'ends_on', ends_on,"               \
    " 'created_at', " SUPPORT_SQL_TIME("created_at") ")::text"

#define ACCESS_JSON                                                                                \
    "json_build_object('dossier_id', dossier_id, 'wave', wave, 'region', region,"                  \
    " 'ptce_name', ptce_name, 'beneficiary', json_build_object('siret', beneficiary_siret,"        \
    " 'name', beneficiary_name), 'decision_reference', decision_reference,"                        \
    " 'granted_at', " SUPPORT_SQL_TIME("granted_at") ")::text"

char *support_store_regions(const struct auth_principal *who)
{
    struct pgarray a;

    if (who->all_regions)
        return NULL;
    pgarray_init(&a);
    for (int i = 0; i < who->nregions; i++)
        pgarray_add_text(&a, who->regions[i]);
    char *text = xstrdup(pgarray_text(&a));
    pgarray_free(&a);
    return text;
}

enum status support_store_run(struct db_pool *db, struct db_stmt *stmt, int nparams,
                              const char *const *params, PGresult **res)
{
    struct db_conn *conn;
    enum status st = db_acquire(db, &conn);

    if (st != STATUS_OK)
        return st;
    st = db_exec(conn, stmt, nparams, params, res);
    db_release(db, conn);
    return st;
}

/* One statement's row as the answer. */
struct support_create_stmt {
    struct db_stmt *stmt;
    int nparams;
    const char *const *params;
};

static enum status support_create_make(struct db_conn *conn, void *arg, char **json)
{
    const struct support_create_stmt *c = arg;
    PGresult *r;
    enum status st = db_exec(conn, c->stmt, c->nparams, c->params, &r);

    return st == STATUS_OK ? support_store_one_text(r, json) : st;
}

enum status support_store_create(struct db_pool *db, struct db_stmt *stmt, int nparams,
                                 const char *const *params, struct http_idem *idem, char **json)
{
    struct support_create_stmt c = {stmt, nparams, params};

    return http_idem_run(db, idem, support_create_make, &c, json);
}

enum status support_store_one_text(PGresult *r, char **json)
{
    enum status st = PQntuples(r) == 1 ? STATUS_OK : STATUS_NOT_FOUND;

    if (st == STATUS_OK)
        *json = xstrdup(PQgetvalue(r, 0, 0));
    PQclear(r);
    return st;
}

enum status support_store_page(struct db_pool *db, struct db_stmt *stmt, int nextra,
                               const char *extra, long long after, long limit,
                               struct support_page *out)
{
    char after_s[24], limit_s[24];
    PGresult *r;

    snprintf(after_s, sizeof after_s, "%lld", after);
    snprintf(limit_s, sizeof limit_s, "%ld", limit + 1);
    const char *params[] = {after_s, limit_s, extra};
    enum status st = support_store_run(db, stmt, 2 + (nextra > 0), params, &r);
    if (st != STATUS_OK)
        return st;
    int n = PQntuples(r);
    out->more = n > limit;
    out->items = json_array();
    out->last_seq = 0;
    for (int i = 0; i < n && i < limit; i++) {
        json_t *row = json_loads(PQgetvalue(r, i, 1), 0, NULL);
        if (!row) {
            st = STATUS_INTERNAL;
            break;
        }
        json_array_append_new(out->items, row);
        out->last_seq = strtoll(PQgetvalue(r, i, 0), NULL, 10);
    }
    PQclear(r);
    if (st != STATUS_OK) {
        json_decref(out->items);
        out->items = NULL;
    }
    return st;
}

/* ---- actions ---- */

DB_STMT(st_action_insert,
        "INSERT INTO support_action (id, title, description, partner_organisation,"
        " partner_key_id, format, capacity, starts_on, ends_on, created_by)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7::integer, $8::date, $9::date, $10)"
        " RETURNING " ACTION_JSON);
DB_STMT(st_action_list, "SELECT seq, " ACTION_JSON " FROM support_action WHERE seq > $1"
                        " ORDER BY seq LIMIT $2");

enum status support_store_action_insert(struct db_pool *db, const struct auth_principal *who,
                                        const struct support_action_input *in, char **json)
{
    char id[UUID_STR_LEN], capacity[24];
    PGresult *r;

    uuid_new(id);
    snprintf(capacity, sizeof capacity, "%ld", in->capacity);
    const char *params[] = {id,
                            in->title,
                            in->description,
                            in->partner_organisation,
                            in->partner_key_id,
                            in->format,
                            capacity,
                            in->starts_on,
                            in->ends_on,
                            who->key_id};
    enum status st = support_store_run(db, &st_action_insert, 10, params, &r);
    if (st != STATUS_OK)
        return st;
    return support_store_one_text(r, json);
}

enum status support_store_action_list(struct db_pool *db, long long after, long limit,
                                      struct support_page *out)
{
    return support_store_page(db, &st_action_list, 0, NULL, after, limit, out);
}

/* ---- access ---- */

DB_STMT(st_access_insert,
        "INSERT INTO support_access (dossier_id, wave, region, ptce_name, beneficiary_siret,"
        " beneficiary_name, decision_reference, decided_at, event_id)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8::timestamptz, $9)"
        " ON CONFLICT (dossier_id) DO NOTHING RETURNING " ACCESS_JSON);

enum status support_store_access_grant(struct db_conn *conn, const struct support_decision *d,
                                       const char *event_id, int *granted, json_t **data)
{
    const char *params[] = {
        d->dossier_id,       d->wave,      d->region,     d->ptce_name, d->beneficiary_siret,
        d->beneficiary_name, d->reference, d->decided_at, event_id};
    PGresult *r;
    enum status st = db_exec(conn, &st_access_insert, 9, params, &r);

    *granted = 0;
    *data = NULL;
    if (st != STATUS_OK)
        return st;
    if (PQntuples(r) == 1) {
        *data = json_loads(PQgetvalue(r, 0, 0), 0, NULL);
        *granted = *data != NULL;
        st = *data ? STATUS_OK : STATUS_INTERNAL;
    }
    PQclear(r);
    return st;
}

/* ---- beneficiaries ---- */

DB_STMT(st_beneficiary_list,
        "SELECT seq, " ACCESS_JSON " FROM support_access WHERE seq > $1"
        " AND ($3::text[] IS NULL OR region = ANY($3::text[])) ORDER BY seq LIMIT $2");
DB_STMT(st_beneficiary_get, "SELECT " ACCESS_JSON " FROM support_access WHERE dossier_id = $1"
                            " AND ($2::text[] IS NULL OR region = ANY($2::text[]))");

enum status support_store_beneficiary_list(struct db_pool *db, const struct auth_principal *who,
                                           long long after, long limit, struct support_page *out)
{
    char *regions = support_store_regions(who);
    enum status st = support_store_page(db, &st_beneficiary_list, 1, regions, after, limit, out);

    free(regions);
    return st;
}

enum status support_store_beneficiary_get(struct db_pool *db, const struct auth_principal *who,
                                          const char *dossier_id, char **json)
{
    char *regions = support_store_regions(who);
    const char *params[] = {dossier_id, regions};
    PGresult *r;
    enum status st = support_store_run(db, &st_beneficiary_get, 2, params, &r);

    free(regions);
    if (st != STATUS_OK)
        return st;
    return support_store_one_text(r, json); /* out of scope looks exactly like absent */
}
