/* store (instruction): the SQL of instruction's reads, one function per use. */
#include "store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pgarray.h"
#include "precond.h"

/* The API form of a dossier; `d` is the dossier table's alias. */
#define STORE_DOC                                                                                  \
    "json_build_object('id', d.id, 'wave', d.wave, 'region', d.region, 'title', d.title,"          \
    " 'state', d.state, 'version', d.version, 'group', d.group_id, 'withdrawn', d.withdrawn,"      \
    " 'source_state', d.source_state, 'source_version', d.doc_version,"                            \
    " 'deposited_at', to_char(d.deposited_at AT TIME ZONE 'UTC',"                                  \
    " 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'),"                                                       \
    " 'decided_at', to_char(d.decided_at AT TIME ZONE 'UTC', "                                     \
    "'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'),"                                                        \
    " 'phase2_deadline', to_char(d.phase2_deadline AT TIME ZONE 'UTC',"                            \
    " 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'),"                                                       \
    " 'regional_opinion', CASE WHEN d.opinion IS NULL THEN NULL ELSE json_build_object("           \
    " 'opinion', d.opinion, 'motivation', d.opinion_motivation) END,"                              \
    " 'labels', to_json(d.labels), 'annotations', (SELECT coalesce(json_object_agg(a.key,"         \
    " a.value), '{}') FROM annotation a WHERE a.dossier_id = d.id),"                               \
    " 'score', json_build_object('phase1', d.score1, 'spread1', d.spread1, 'phase2', d.score2,"    \
    " 'spread2', d.spread2), 'dossier', d.snapshot)"

DB_STMT(store_row_get, "SELECT id, coalesce(region, ''), coalesce(wave, ''), state, version,"
                       " coalesce(ds_number, 0), withdrawn, snapshot FROM dossier WHERE id = $1");
DB_STMT(store_row_lock, "SELECT id, coalesce(region, ''), coalesce(wave, ''), state, version,"
                        " coalesce(ds_number, 0), withdrawn, snapshot FROM dossier WHERE id = $1"
                        " FOR UPDATE");
DB_STMT(store_expert_declared, "SELECT 1 FROM opinion_request WHERE dossier_id = $1 AND key_id = $2"
                               " AND state IN ('declared', 'answered')");
DB_STMT(store_doc_get, "SELECT " STORE_DOC " FROM dossier d WHERE d.id = $1");
DB_STMT(store_list,
        "SELECT " STORE_DOC ", d.id FROM dossier d"
        " LEFT JOIN wave w ON w.id = d.wave"
        " WHERE ($1::text[] IS NULL OR d.region = ANY($1::text[]))"
        " AND ($2::uuid[] IS NULL OR d.id IN (SELECT o.dossier_id FROM opinion_request o"
        "      WHERE o.dossier_id = ANY($2::uuid[]) AND o.key_id = $10"
        "      AND o.state IN ('declared', 'answered')))"
        " AND ($3::text IS NULL OR d.wave = $3) AND ($4::text IS NULL OR d.region = $4)"
        " AND ($5::text IS NULL OR d.state = $5)"
        " AND ($6::text IS NULL OR (d.group_id = $6 AND NOT d.withdrawn))"
        " AND ($7::text IS NULL OR $7 = ANY(d.labels))"
        " AND (NOT $8::boolean OR (NOT d.withdrawn AND d.decided_at IS NULL"
        "      AND d.deposited_at + make_interval(days => coalesce(w.target_delay_days, 42))"
        "      < now()))"
        " AND ($9::uuid IS NULL OR d.id > $9::uuid)"
        " ORDER BY d.id LIMIT $11::int");
DB_STMT(store_bump, "UPDATE dossier SET version = version + 1 WHERE id = $1");
DB_STMT(store_history,
        "SELECT json_build_object('seq', seq, 'from', from_state, 'to', to_state, 'actor', actor,"
        " 'actor_role', actor_role, 'motivation', motivation, 'request_id', request_id,"
        " 'at', to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')), seq"
        " FROM dossier_history WHERE resource_id = $1 AND seq > $2::bigint ORDER BY seq"
        " LIMIT $3::int");

void store_dossier_row_clear(struct dossier_row *d)
{
    json_decref(d->doc);
    d->doc = NULL;
}

enum status store_dossier_row(struct db_conn *conn, const char *id, int lock,
                              struct dossier_row *out)
{
    const char *params[] = {id};
    PGresult *r;

    memset(out, 0, sizeof *out);
    if (!uuid_is_valid(id))
        return STATUS_NOT_FOUND;
    enum status st = db_exec(conn, lock ? &store_row_lock : &store_row_get, 1, params, &r);
    if (st != STATUS_OK)
        return st;
    if (PQntuples(r) == 0) {
        PQclear(r);
        return STATUS_NOT_FOUND;
    }
    snprintf(out->id, sizeof out->id, "%s", PQgetvalue(r, 0, 0));
    snprintf(out->region, sizeof out->region, "%s", PQgetvalue(r, 0, 1));
    snprintf(out->wave, sizeof out->wave, "%s", PQgetvalue(r, 0, 2));
    snprintf(out->state, sizeof out->state, "%s", PQgetvalue(r, 0, 3));
    out->version = strtoll(PQgetvalue(r, 0, 4), NULL, 10);
    out->ds_number = strtoll(PQgetvalue(r, 0, 5), NULL, 10);
    out->withdrawn = PQgetvalue(r, 0, 6)[0] == 't';
    out->doc = json_loads(PQgetvalue(r, 0, 7), 0, NULL);
    PQclear(r);
    return STATUS_OK;
}

int store_dossier_visible(struct db_conn *conn, const struct auth_principal *p,
                          const struct dossier_row *d)
{
    if (p->role == ROLE_DASHBOARD || !auth_principal_sees_dossier(p, d->region, d->id))
        return 0;
    if (p->role != ROLE_EXPERT)
        return 1;
    const char *params[] = {d->id, p->key_id};
    PGresult *r;
    if (db_exec(conn, &store_expert_declared, 2, params, &r) != STATUS_OK)
        return 0;
    int ok = PQntuples(r) > 0;
    PQclear(r);
    return ok;
}

enum status store_dossier_find(struct db_conn *conn, const struct auth_principal *p, const char *id,
                               struct dossier_row *out)
{
    enum status st = store_dossier_row(conn, id, 0, out);

    if (st == STATUS_OK && !store_dossier_visible(conn, p, out)) {
        store_dossier_row_clear(out);
        st = STATUS_NOT_FOUND;
    }
    return st;
}

json_t *store_dossier_document(struct db_conn *conn, const char *id)
{
    const char *params[] = {id};
    PGresult *r;
    json_t *doc = NULL;

    if (db_exec(conn, &store_doc_get, 1, params, &r) != STATUS_OK)
        return NULL;
    if (PQntuples(r) > 0)
        doc = json_loads(PQgetvalue(r, 0, 0), 0, NULL);
    PQclear(r);
    return doc;
}

char *store_scope_regions(const struct auth_principal *p)
{
    struct pgarray a;

    if (p->all_regions)
        return NULL;
    pgarray_init(&a);
    for (int i = 0; i < p->nregions; i++)
        pgarray_add_text(&a, p->regions[i]);
    char *text = xstrdup(pgarray_text(&a));
    pgarray_free(&a);
    return text;
}

/* The expert's dossiers as a uuid[] literal, NULL for other roles (freed by the caller). */
static char *store_scope_dossiers(const struct auth_principal *p)
{
    struct pgarray a;

    if (p->role != ROLE_EXPERT)
        return NULL;
    pgarray_init(&a);
    for (int i = 0; i < p->ndossiers; i++)
        pgarray_add_text(&a, p->dossiers[i]);
    char *text = xstrdup(pgarray_text(&a));
    pgarray_free(&a);
    return text;
}

/* Appends the first column of each row as parsed JSON to a new array. */
static json_t *store_json_rows(PGresult *r)
{
    json_t *items = json_array();

    for (int i = 0; i < PQntuples(r); i++)
        json_array_append_new(items, json_loads(PQgetvalue(r, i, 0), 0, NULL));
    return items;
}

enum status store_dossier_queue(struct db_conn *conn, const struct auth_principal *p,
                                const struct dossier_list_filter *f, json_t **items, char *last_id)
{
    char *regions = store_scope_regions(p), *dossiers = store_scope_dossiers(p);
    char limit[24];
    PGresult *r;

    snprintf(limit, sizeof limit, "%ld", f->limit);
    const char *params[] = {regions,     dossiers,  f->wave,  f->region,
                            f->state,    f->group,  f->label, f->overdue ? "true" : "false",
                            f->after_id, p->key_id, limit};
    enum status st = db_exec(conn, &store_list, 11, params, &r);
    free(regions);
    free(dossiers);
    last_id[0] = '\0';
    if (st != STATUS_OK)
        return st;
    *items = store_json_rows(r);
    if (PQntuples(r) == f->limit)
        snprintf(last_id, UUID_STR_LEN, "%s", PQgetvalue(r, PQntuples(r) - 1, 1));
    PQclear(r);
    return STATUS_OK;
}

enum status store_history_page(struct db_conn *conn, const char *id, long long after_seq,
                               long limit, json_t **items, long long *last_seq)
{
    char after[24], lim[24];
    PGresult *r;

    snprintf(after, sizeof after, "%lld", after_seq);
    snprintf(lim, sizeof lim, "%ld", limit);
    const char *params[] = {id, after, lim};
    enum status st = db_exec(conn, &store_history, 3, params, &r);
    if (st != STATUS_OK)
        return st;
    *items = store_json_rows(r);
    *last_seq = PQntuples(r) == limit ? strtoll(PQgetvalue(r, PQntuples(r) - 1, 1), NULL, 10) : 0;
    PQclear(r);
    return STATUS_OK;
}

enum status store_dossier_change(struct db_conn *conn, const struct auth_principal *p,
                                 const char *id, const char *if_match, store_change_fn change,
                                 void *arg, char *why, size_t whylen)
{
    struct dossier_row d = {0};
    enum status st = db_begin(conn);

    why[0] = '\0';
    if (st == STATUS_OK)
        st = store_dossier_row(conn, id, 1, &d);
    if (st == STATUS_OK && !store_dossier_visible(conn, p, &d))
        st = STATUS_NOT_FOUND;
    if (st == STATUS_OK) {
        st = precond_if_match(if_match, d.version, 0);
        if (st != STATUS_OK)
            snprintf(why, whylen, "%s",
                     st == STATUS_PRECONDITION_FAILED ? "the dossier has changed since that ETag"
                                                      : precond_if_match_strerror(st));
    }
    if (st == STATUS_OK)
        st = change(conn, &d, arg, why, whylen);
    const char *params[] = {d.id};
    if (st == STATUS_OK)
        st = db_exec(conn, &store_bump, 1, params, NULL);
    st = db_end(conn, st);
    store_dossier_row_clear(&d);
    return st;
}
