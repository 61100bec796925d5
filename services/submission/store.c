/* store (submission): SQL of the submission service; each function owns its transaction. */
#include "store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cloudevent.h"
#include "dossier.h"
#include "log.h"
#include "outbox.h"
#include "pgarray.h"
#include "uuid.h"
#include "xalloc.h"

/* ---- notifications ---- */

DB_STMT(st_notice_insert_batch,
        "INSERT INTO ds_notification (procedure_id, dossier_number, state, updated_at_raw,"
        " updated_at) SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[],"
        " $5::timestamptz[]) ON CONFLICT DO NOTHING"
        " RETURNING procedure_id, dossier_number, state, updated_at_raw");

/* 1 when row r of the result is notice n. */
static int store_notice_is(PGresult *r, int row, const struct ds_notice *n)
{
    return !strcmp(PQgetvalue(r, row, 0), n->procedure_id) &&
           !strcmp(PQgetvalue(r, row, 1), n->dossier_number) &&
           !strcmp(PQgetvalue(r, row, 2), n->state) &&
           !strcmp(PQgetvalue(r, row, 3), n->updated_at_raw);
}

enum status store_notice_insert_batch(struct db_conn *conn, const struct ds_notice *const *n,
                                      size_t count, int *fresh)
{
    struct pgarray cols[5];
    const char *params[5];
    PGresult *r;

    for (int c = 0; c < 5; c++)
        pgarray_init(&cols[c]);
    for (size_t i = 0; i < count; i++) {
        pgarray_add_text(&cols[0], n[i]->procedure_id);
        pgarray_add_text(&cols[1], n[i]->dossier_number);
        pgarray_add_text(&cols[2], n[i]->state);
        pgarray_add_text(&cols[3], n[i]->updated_at_raw);
        pgarray_add_text(&cols[4], n[i]->updated_at);
        fresh[i] = 0;
    }
    for (int c = 0; c < 5; c++)
        params[c] = pgarray_text(&cols[c]);
    enum status st = db_exec(conn, &st_notice_insert_batch, 5, params, &r);
    for (int c = 0; c < 5; c++)
        pgarray_free(&cols[c]);
    if (st != STATUS_OK)
        return st;
    /* Each inserted row is fresh for the first request that carried it; the others are repeats. */
    for (int row = 0; row < PQntuples(r); row++) {
        for (size_t i = 0; i < count; i++) {
            if (!fresh[i] && store_notice_is(r, row, n[i])) {
                fresh[i] = 1;
                break;
            }
        }
    }
    PQclear(r);
    return STATUS_OK;
}

/* ---- reads ---- */

DB_STMT(st_dossier_get_many,
        "SELECT id::text, region, document::text, coalesce(partner_key_id, ''), version"
        " FROM dossier WHERE id = ANY($1::uuid[])");
DB_STMT(st_dossier_history,
        "SELECT d.region, coalesce(json_agg(json_build_object('at', h.at, 'actor', h.actor,"
        " 'kind', h.kind, 'detail', h.detail) ORDER BY h.id) FILTER (WHERE h.id IS NOT NULL),"
        " '[]')::text, coalesce(d.partner_key_id, ''), d.version FROM dossier d"
        " LEFT JOIN dossier_history h ON h.dossier_id = d.id WHERE d.id = $1"
        " GROUP BY d.region, d.partner_key_id, d.version");
/*
 * Commit-safe: a row is served only once the transaction that wrote it is older than every
 * transaction still in flight (see migrations/002_commit_order.sql), so a cursor never passes
 * a change that commits later.
 */
DB_STMT(st_dossier_list,
        "SELECT change_xid::text, id::text, document::text FROM dossier"
        " WHERE (change_xid, id) > (coalesce($1::xid8, '0'::xid8),"
        " coalesce($9::uuid, '00000000-0000-0000-0000-000000000000'::uuid))"
        " AND change_xid < pg_snapshot_xmin(pg_current_snapshot())"
        " AND ($2::text IS NULL OR wave_id = $2) AND ($3::text IS NULL OR region = $3)"
        " AND ($4::text IS NULL OR state = $4) AND ($5::text IS NULL OR eligibility = $5)"
        " AND ($6::timestamptz IS NULL OR updated_at >= $6)"
        " AND ($7::text[] IS NULL OR region = ANY($7::text[]))"
        " ORDER BY change_xid, id LIMIT $8");

/*
 * Whether the caller may see a dossier: every role the dossiers of its regions, and partners only
 * those of them that they deposited.
 */
static int store_visible(const struct auth_principal *who, const char *region,
                         const char *partner_key)
{
    if (who->role == ROLE_PARTNER && strcmp(partner_key, who->key_id) != 0)
        return 0;
    return auth_principal_sees_region(who, region);
}

/*
 * Runs a one-row read by dossier id (region, text, partner key, version) and applies the
 * caller's scope.
 */
static enum status store_scoped_read(struct db_pool *db, struct db_stmt *stmt,
                                     const struct auth_principal *who, const char *id, char **out,
                                     long long *version)
{
    struct db_conn *conn;
    PGresult *r;
    const char *params[] = {id};
    enum status st = db_acquire(db, &conn);

    if (st != STATUS_OK)
        return st;
    st = db_exec(conn, stmt, 1, params, &r);
    db_release(db, conn);
    if (st != STATUS_OK)
        return st;
    if (PQntuples(r) != 1 || !store_visible(who, PQgetvalue(r, 0, 0), PQgetvalue(r, 0, 2))) {
        PQclear(r);
        return STATUS_NOT_FOUND; /* out of scope looks exactly like absent */
    }
    *out = xstrdup(PQgetvalue(r, 0, 1));
    *version = strtoll(PQgetvalue(r, 0, 3), NULL, 10);
    PQclear(r);
    return STATUS_OK;
}

enum status store_dossier_read_batch(struct db_conn *conn, struct dossier_read *const *reads,
                                     size_t n)
{
    struct pgarray ids;
    PGresult *r;

    pgarray_init(&ids);
    for (size_t i = 0; i < n; i++) {
        reads[i]->document = NULL;
        reads[i]->version = 0;
        pgarray_add_text(&ids, reads[i]->id);
    }
    const char *params[] = {pgarray_text(&ids)};
    enum status st = db_exec(conn, &st_dossier_get_many, 1, params, &r);
    pgarray_free(&ids);
    if (st != STATUS_OK)
        return st;
    /* A batch is small (one request per waiting client): a scan per read is cheap enough. */
    int rows = PQntuples(r);
    for (size_t i = 0; i < n; i++) {
        for (int k = 0; k < rows; k++) {
            /* the server writes ids in lower case; a request may use either case */
            if (strcasecmp(PQgetvalue(r, k, 0), reads[i]->id) != 0)
                continue;
            /* out of scope looks exactly like absent */
            if (store_visible(reads[i]->who, PQgetvalue(r, k, 1), PQgetvalue(r, k, 3))) {
                reads[i]->document = xstrdup(PQgetvalue(r, k, 2));
                reads[i]->version = strtoll(PQgetvalue(r, k, 4), NULL, 10);
            }
            break;
        }
    }
    PQclear(r);
    return STATUS_OK;
}

enum status store_dossier_history(struct db_pool *db, const struct auth_principal *who,
                                  const char *id, char **history, long long *version)
{
    return store_scoped_read(db, &st_dossier_history, who, id, history, version);
}

/* "{84,11}" from the principal's regions, or NULL for all regions. */
static char *store_region_array(const struct auth_principal *who)
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

enum status store_dossier_list(struct db_pool *db, const struct auth_principal *who,
                               const struct dossier_filter *f, struct buf *out, int *more,
                               struct dossier_position *last)
{
    struct db_conn *conn;
    PGresult *r;
    char limit[24];
    char *regions = store_region_array(who);

    snprintf(limit, sizeof limit, "%ld", f->limit + 1); /* one more tells if a page follows */
    const char *params[] = {f->after_xid,     f->wave, f->region, f->state,   f->eligibility,
                            f->updated_since, regions, limit,     f->after_id};
    enum status st = db_acquire(db, &conn);
    if (st == STATUS_OK) {
        st = db_exec(conn, &st_dossier_list, 9, params, &r);
        db_release(db, conn);
    }
    free(regions);
    if (st != STATUS_OK)
        return st;
    int n = PQntuples(r);
    int shown = n > f->limit ? (int)f->limit : n;
    buf_append(out, "[", 1);
    for (int i = 0; i < shown; i++) {
        if (i)
            buf_append(out, ",", 1);
        buf_append(out, PQgetvalue(r, i, 2), (size_t)PQgetlength(r, i, 2));
    }
    buf_append(out, "]", 1);
    *more = n > f->limit;
    if (*more) {
        snprintf(last->xid, sizeof last->xid, "%s", PQgetvalue(r, shown - 1, 0));
        snprintf(last->id, sizeof last->id, "%s", PQgetvalue(r, shown - 1, 1));
    }
    PQclear(r);
    return STATUS_OK;
}

/* ---- writes shared by DS and partner deposits ---- */

DB_STMT(st_wave_for, "SELECT id, rules_version FROM wave ORDER BY (deposit_opens_at <= $1"
                     " AND (deposit_closes_at IS NULL OR deposit_closes_at > $1)) DESC,"
                     " deposit_opens_at DESC LIMIT 1");
DB_STMT(st_dossier_insert,
        "INSERT INTO dossier (id, origin, ds_number, ds_procedure_id, ds_updated_at,"
        " partner_key_id, wave_id, state, region, eligibility, document, deposited_at)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::json, $12)");
DB_STMT(st_dossier_update,
        "UPDATE dossier SET state = $2, region = $3, eligibility = $4, version = $5,"
        " document = $6::json, ds_updated_at = $7, updated_at = now(), withdrawn_at = NULL"
        " WHERE id = $1");
DB_STMT(st_history_insert,
        "INSERT INTO dossier_history (dossier_id, actor, kind, detail) VALUES ($1, $2, $3, $4)");
/* A version's rule checks and its history line: one round trip for both. */
DB_STMT(st_checks_history_insert,
        "WITH c AS (INSERT INTO dossier_check_set (dossier_id, version, rules_version, checks)"
        " VALUES ($1, $2, $3, $4::jsonb))"
        " INSERT INTO dossier_history (dossier_id, actor, kind, detail) VALUES ($1, $5, $6, $7)");
DB_STMT(st_attachment_upsert,
        "INSERT INTO attachment (dossier_id, role, filename, content_type, byte_size, checksum,"
        " pages, content) VALUES ($1, 'main_document', $2, $3, $4, $5, $6, $7)"
        " ON CONFLICT (dossier_id, role) DO UPDATE SET filename = EXCLUDED.filename,"
        " content_type = EXCLUDED.content_type, byte_size = EXCLUDED.byte_size,"
        " checksum = EXCLUDED.checksum, pages = EXCLUDED.pages, content = EXCLUDED.content,"
        " fetched_at = now()");

/* Everything about one version of a dossier that gets written. */
struct store_version {
    struct dossier_meta meta;
    json_t *content;
    json_t *checks;
    const char *actor;
    const char *history_kind;
    const char *event_type;
};

static enum status store_wave_for(struct db_conn *conn, const char *when, char *wave, char *rules,
                                  size_t len)
{
    PGresult *r;
    const char *params[] = {when};
    enum status st = db_exec(conn, &st_wave_for, 1, params, &r);

    if (st != STATUS_OK)
        return st;
    if (PQntuples(r) != 1) {
        PQclear(r);
        return STATUS_CONFLICT; /* no wave at all: an administrator must create one */
    }
    snprintf(wave, len, "%s", PQgetvalue(r, 0, 0));
    snprintf(rules, len, "%s", PQgetvalue(r, 0, 1));
    PQclear(r);
    return STATUS_OK;
}

/* The detail of a version's history line, as text (caller frees). */
static char *store_history_detail(const struct dossier_meta *m)
{
    json_t *detail = json_pack("{s:s, s:s, s:i}", "state", m->state, "eligibility", m->eligibility,
                               "version", m->version);
    char *text = json_dumps(detail, JSON_COMPACT);

    json_decref(detail);
    return text;
}

/* Checks, history and event of a version; the dossier row itself is written by the caller. */
static enum status store_version_extras(struct db_conn *conn, const struct store_version *v,
                                        json_t *document)
{
    char version[16];
    char *checks = json_dumps(v->checks, JSON_COMPACT);
    char *detail_text = store_history_detail(&v->meta);

    snprintf(version, sizeof version, "%d", v->meta.version);
    const char *params[] = {v->meta.id,      version,    v->meta.rules_version, checks, v->actor,
                            v->history_kind, detail_text};
    enum status st = db_exec(conn, &st_checks_history_insert, 7, params, NULL);
    if (st == STATUS_OK)
        st = outbox_append(conn, SUBMISSION_TOPIC, SUBMISSION_SOURCE, v->event_type, v->meta.id,
                           json_pack("{s:O}", "dossier", document), NULL);
    free(checks);
    free(detail_text);
    return st;
}

/* Inserts a new dossier row (version 1). */
static enum status store_dossier_new(struct db_conn *conn, const struct store_version *v,
                                     const char *ds_number, const char *procedure,
                                     const char *partner_key, char **document_out)
{
    json_t *doc = dossier_document(&v->meta, v->content, v->checks);
    char *text = json_dumps(doc, JSON_COMPACT);
    const char *region = json_string_value(json_object_get(doc, "region"));
    const char *params[] = {
        v->meta.id,  v->meta.origin,      ds_number,     procedure, v->meta.ds_updated_at,
        partner_key, v->meta.wave,        v->meta.state, region,    v->meta.eligibility,
        text,        v->meta.deposited_at};
    enum status st = db_exec(conn, &st_dossier_insert, 12, params, NULL);

    if (st == STATUS_OK)
        st = store_version_extras(conn, v, doc);
    json_decref(doc);
    if (st == STATUS_OK && document_out)
        *document_out = text;
    else
        free(text);
    return st;
}

/* ---- partner deposits ---- */

/* A partner deposit's first version: its id, checks and eligibility made here. */
static void store_partner_version(struct store_version *v, char *id, const char *now,
                                  const char *wave, const char *rules,
                                  const struct auth_principal *who, json_t *content)
{
    const char *eligibility;

    uuid_new(id);
    json_t *checks = dossier_checks(content, &eligibility);
    *v = (struct store_version){
        {id, "partner", 0, wave, "deposited", eligibility, rules, 1, now, now, NULL},
        content,
        checks,
        who->key_id,
        "deposited",
        "dossier.deposited"};
}

static enum status store_partner_insert(struct db_conn *conn, const struct auth_principal *who,
                                        json_t *content, char **document)
{
    char id[UUID_STR_LEN], now[40], wave[64], rules[64];
    struct store_version v;
    enum status st;

    time_now_rfc3339(now, sizeof now);
    st = store_wave_for(conn, now, wave, rules, sizeof wave);
    if (st != STATUS_OK)
        return st;
    store_partner_version(&v, id, now, wave, rules, who, content);
    st = store_dossier_new(conn, &v, NULL, NULL, who->key_id, document);
    json_decref(v.checks);
    return st;
}

/* A deposit's arguments, for http_idem_run_on. */
struct store_partner_args {
    const struct auth_principal *who;
    json_t *content;
};

static enum status store_partner_make(struct db_conn *conn, void *arg, char **document)
{
    struct store_partner_args *a = arg;

    return store_partner_insert(conn, a->who, a->content, document);
}

enum status store_partner_create(struct db_conn *conn, const struct auth_principal *who,
                                 struct http_idem *idem, json_t *content, char **document)
{
    struct store_partner_args a = {who, content};

    /* A concurrent request with the same key, still in flight, is answered 409 at once. */
    return http_idem_run_on(conn, idem, store_partner_make, &a, document);
}

/*
 * The rows of many first versions in one statement: the dossiers (in the batch's order, which
 * their history lines' ids follow), their checks and their history lines. $8 wave, $9 rules
 * version, $10 the deposit time; the others one array element per deposit.
 */
DB_STMT(st_partner_insert_many,
        "WITH x AS (SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[],"
        " $5::text[], $6::text[], $7::text[]) WITH ORDINALITY"
        " AS x(id, key_id, region, eligibility, document, checks, detail, n)),"
        " d AS (INSERT INTO dossier (id, origin, partner_key_id, wave_id, state, region,"
        " eligibility, document, deposited_at) SELECT id, 'partner', key_id, $8, 'deposited',"
        " region, eligibility, document::json, $10::timestamptz FROM x ORDER BY n),"
        " c AS (INSERT INTO dossier_check_set (dossier_id, version, rules_version, checks)"
        " SELECT id, 1, $9, checks::jsonb FROM x ORDER BY n)"
        " INSERT INTO dossier_history (dossier_id, actor, kind, detail)"
        " SELECT id, key_id, 'deposited', detail::jsonb FROM x ORDER BY n");

/* The columns of st_partner_insert_many, one element per deposit. */
enum { STORE_MANY_COLS = 7 };

/* One deposit's cells of st_partner_insert_many (owned) and its event, made before the claim. */
struct store_many_row {
    char *cells[STORE_MANY_COLS];
    struct outbox_event ev;
};

/* Makes deposit d's row, its document (the answer) and its event. */
static void store_partner_row(struct store_many_row *row, struct store_deposit *d, const char *now,
                              const char *wave, const char *rules)
{
    char id[UUID_STR_LEN];
    struct store_version v;

    store_partner_version(&v, id, now, wave, rules, d->who, d->content);
    json_t *doc = dossier_document(&v.meta, v.content, v.checks);
    const char *region = json_string_value(json_object_get(doc, "region"));
    free(d->document); /* NULL unless d came twice */
    d->document = json_dumps(doc, JSON_COMPACT);
    row->cells[0] = xstrdup(id);
    row->cells[1] = xstrdup(d->who->key_id);
    row->cells[2] = region ? xstrdup(region) : NULL;
    row->cells[3] = xstrdup(v.meta.eligibility);
    row->cells[4] = xstrdup(d->document);
    row->cells[5] = json_dumps(v.checks, JSON_COMPACT);
    row->cells[6] = store_history_detail(&v.meta);
    snprintf(d->id, sizeof d->id, "%s", id);
    /* the event's data is {"dossier": the document}, from the text just made, not dumped again */
    struct buf data;
    buf_init(&data, 0);
    buf_printf(&data, "{\"dossier\":%s}", d->document);
    row->ev = (struct outbox_event){v.event_type, d->id, NULL, d->request_id, data.data};
    json_decref(doc);
    json_decref(v.checks);
}

/* The rows of a batch of deposits, made before the statements that write them. */
struct store_many {
    char now[40], wave[64], rules[64];
    struct store_many_row *rows;
};

/* The wave that takes deposits now, then every deposit's row and document. */
static enum status store_many_make(struct db_conn *conn, struct store_deposit *const *d, size_t n,
                                   struct store_many *m)
{
    time_now_rfc3339(m->now, sizeof m->now);
    enum status st = store_wave_for(conn, m->now, m->wave, m->rules, sizeof m->wave);
    if (st != STATUS_OK)
        return st;
    m->rows = xcalloc(n, sizeof *m->rows);
    for (size_t i = 0; i < n; i++)
        store_partner_row(&m->rows[i], d[i], m->now, m->wave, m->rules);
    return STATUS_OK;
}

/* Writes the rows of the deposits claimed fresh, in the open transaction. */
static enum status store_many_write(struct db_conn *conn, struct store_many *m, const int *fresh,
                                    size_t n)
{
    struct pgarray cols[STORE_MANY_COLS];
    const char *params[STORE_MANY_COLS + 3];
    struct outbox_event *evs = xcalloc(n, sizeof *evs);
    size_t nev = 0;

    for (int c = 0; c < STORE_MANY_COLS; c++)
        pgarray_init(&cols[c]);
    for (size_t i = 0; i < n; i++) {
        if (!fresh[i])
            continue;
        for (int c = 0; c < STORE_MANY_COLS; c++)
            pgarray_add_text(&cols[c], m->rows[i].cells[c]);
        evs[nev++] = m->rows[i].ev;
        m->rows[i].ev.data = NULL; /* both taken by outbox_append_batch */
        m->rows[i].ev.data_json = NULL;
    }
    for (int c = 0; c < STORE_MANY_COLS; c++)
        params[c] = pgarray_text(&cols[c]);
    params[STORE_MANY_COLS] = m->wave;
    params[STORE_MANY_COLS + 1] = m->rules;
    params[STORE_MANY_COLS + 2] = m->now;
    enum status st =
        nev ? db_exec(conn, &st_partner_insert_many, STORE_MANY_COLS + 3, params, NULL) : STATUS_OK;
    if (st == STATUS_OK)
        st = outbox_append_batch(conn, SUBMISSION_TOPIC, SUBMISSION_SOURCE, evs, nev);
    else
        for (size_t i = 0; i < nev; i++) {
            json_decref(evs[i].data);
            free(evs[i].data_json);
        }
    for (int c = 0; c < STORE_MANY_COLS; c++)
        pgarray_free(&cols[c]);
    free(evs);
    return st;
}

static void store_many_free(struct store_many *m, size_t n)
{
    for (size_t i = 0; m->rows && i < n; i++) {
        for (int c = 0; c < STORE_MANY_COLS; c++)
            free(m->rows[i].cells[c]);
        json_decref(m->rows[i].ev.data);
        free(m->rows[i].ev.data_json);
    }
    free(m->rows);
}

/* Frees the documents of the deposits a batch did not create. */
static void store_deposits_reset(struct store_deposit *const *d, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (d[i]->created)
            continue;
        free(d[i]->document);
        d[i]->document = NULL;
    }
}

enum status store_partner_create_many(struct db_conn *conn, struct store_deposit *const *d,
                                      size_t n)
{
    struct http_idem **idems = xcalloc(n ? n : 1, sizeof(struct http_idem *));
    const char **texts = xcalloc(n ? n : 1, sizeof *texts);
    int *fresh = xcalloc(n ? n : 1, sizeof *fresh);
    struct store_many m = {0};
    enum status st = db_begin(conn);

    for (size_t i = 0; i < n; i++)
        d[i]->created = 0;
    /* The documents first (they are the answers the keys are claimed with), then the rows. */
    if (st == STATUS_OK)
        st = store_many_make(conn, d, n, &m);
    for (size_t i = 0; st == STATUS_OK && i < n; i++) {
        idems[i] = d[i]->idem;
        texts[i] = d[i]->document;
    }
    if (st == STATUS_OK)
        st = http_idem_claim_many(conn, idems, texts, n, fresh);
    if (st == STATUS_OK)
        st = store_many_write(conn, &m, fresh, n);
    st = db_end(conn, st);
    for (size_t i = 0; st == STATUS_OK && i < n; i++)
        d[i]->created = fresh[i];
    store_deposits_reset(d, n);
    store_many_free(&m, n);
    free(fresh);
    free(texts);
    free(idems);
    return st;
}

/* ---- DS dossiers ---- */

/* Serialises the writers of one DS dossier, even before its row exists. */
DB_STMT(st_ds_lock, "SELECT pg_advisory_xact_lock(hashtext('ptce.ds_dossier'), $1::int)");
DB_STMT(st_ds_current,
        "SELECT id, version, ds_updated_at >= $2::timestamptz, wave_id, document->>'rules_version',"
        " to_char(deposited_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"
        " FROM dossier WHERE ds_number = $1 FOR UPDATE");

static enum status store_attachment(struct db_conn *conn, const char *id,
                                    const struct ds_snapshot *s)
{
    json_t *doc = json_object_get(s->content, "main_document");
    char size[24], pages[16];
    json_t *jp = json_object_get(doc, "pages");
    size_t hexlen = 0;

    if (!s->file || !doc)
        return STATUS_OK;
    snprintf(size, sizeof size, "%zu", s->file_len);
    snprintf(pages, sizeof pages, "%lld", (long long)json_integer_value(jp));
    unsigned char *bytea = PQescapeByteaConn(conn->pg, s->file, s->file_len, &hexlen);
    if (!bytea)
        return STATUS_INTERNAL;
    const char *params[] = {id,
                            json_string_value(json_object_get(doc, "filename")),
                            json_string_value(json_object_get(doc, "content_type")),
                            size,
                            json_string_value(json_object_get(doc, "checksum")),
                            json_is_integer(jp) ? pages : NULL,
                            (const char *)bytea};
    enum status st = db_exec(conn, &st_attachment_upsert, 7, params, NULL);
    PQfreemem(bytea);
    return st;
}

/* Writes a new version over an existing DS dossier (row locked by the caller). */
static enum status store_ds_update(struct db_conn *conn, const struct store_version *v)
{
    char version[16];
    json_t *doc = dossier_document(&v->meta, v->content, v->checks);
    char *text = json_dumps(doc, JSON_COMPACT);
    const char *region = json_string_value(json_object_get(doc, "region"));

    snprintf(version, sizeof version, "%d", v->meta.version);
    const char *params[] = {v->meta.id, v->meta.state,        region, v->meta.eligibility, version,
                            text,       v->meta.ds_updated_at};
    enum status st = db_exec(conn, &st_dossier_update, 7, params, NULL);
    if (st == STATUS_OK)
        st = store_version_extras(conn, v, doc);
    json_decref(doc);
    free(text);
    return st;
}

static enum status store_ds_write(struct db_conn *conn, const struct ds_snapshot *s, PGresult *cur,
                                  int *changed)
{
    char id[UUID_STR_LEN], now[40], wave[64], rules[64], number[24], procedure[24];
    const char *eligibility;
    int exists = PQntuples(cur) == 1;
    enum status st = STATUS_OK;

    if (exists && PQgetvalue(cur, 0, 2)[0] == 't')
        return STATUS_OK; /* we already hold this version or a later one */
    time_now_rfc3339(now, sizeof now);
    if (exists) {
        snprintf(id, sizeof id, "%s", PQgetvalue(cur, 0, 0));
        snprintf(wave, sizeof wave, "%s", PQgetvalue(cur, 0, 3));
        snprintf(rules, sizeof rules, "%s", PQgetvalue(cur, 0, 4));
    } else {
        uuid_new(id);
        st =
            store_wave_for(conn, s->deposited_at ? s->deposited_at : now, wave, rules, sizeof wave);
    }
    if (st != STATUS_OK)
        return st;
    json_t *checks = dossier_checks(s->content, &eligibility);
    struct store_version v = {
        {id, "ds", s->number, wave, s->state, eligibility, rules,
         exists ? (int)strtol(PQgetvalue(cur, 0, 1), NULL, 10) + 1 : 1,
         exists ? PQgetvalue(cur, 0, 5) : (s->deposited_at ? s->deposited_at : now), now,
         s->ds_updated_at},
        s->content,
        checks,
        "ds",
        exists ? "ds.updated" : "ds.deposited",
        exists ? "dossier.updated" : "dossier.deposited"};
    snprintf(number, sizeof number, "%lld", s->number);
    snprintf(procedure, sizeof procedure, "%lld", s->procedure_id);
    st = exists ? store_ds_update(conn, &v)
                : store_dossier_new(conn, &v, number, procedure, NULL, NULL);
    if (st == STATUS_OK)
        st = store_attachment(conn, id, s);
    json_decref(checks);
    *changed = st == STATUS_OK;
    return st;
}

enum status store_ds_apply(struct db_conn *conn, const struct ds_snapshot *s, int *changed)
{
    char number[24];
    PGresult *cur;
    const char *params[] = {number, s->ds_updated_at};
    enum status st = db_begin(conn);

    *changed = 0;
    snprintf(number, sizeof number, "%lld", s->number);
    if (st == STATUS_OK)
        st = db_exec(conn, &st_ds_lock, 1, params, NULL);
    if (st == STATUS_OK)
        st = db_exec(conn, &st_ds_current, 2, params, &cur);
    if (st == STATUS_OK) {
        st = store_ds_write(conn, s, cur, changed);
        PQclear(cur);
    }
    st = db_end(conn, st);
    if (st != STATUS_OK)
        *changed = 0;
    return st;
}

DB_STMT(st_notice_close, "UPDATE ds_notification SET status = 'done', done_at = now(),"
                         " last_error = 'dossier deleted on DS' WHERE dossier_number = $1"
                         " AND status = 'pending'");
DB_STMT(
    st_ds_withdraw,
    "UPDATE dossier SET state = 'withdrawn', withdrawn_at = $2, version = version + 1,"
    " updated_at = now(),"
    " document = (document::jsonb || jsonb_build_object('state', 'withdrawn', 'version',"
    " version + 1,"
    " 'updated_at', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')))::json"
    " WHERE ds_number = $1 AND withdrawn_at IS NULL RETURNING id, document::text");

enum status store_ds_withdraw(struct db_conn *conn, long long number, const char *deleted_at,
                              const char *reason, int *changed)
{
    char num[24];
    PGresult *r = NULL; /* cleared once at the end, whichever statement failed */
    const char *params[] = {num, deleted_at};
    enum status st = db_begin(conn);

    *changed = 0;
    snprintf(num, sizeof num, "%lld", number);
    if (st == STATUS_OK)
        st = db_exec(conn, &st_ds_withdraw, 2, params, &r);
    if (st == STATUS_OK && PQntuples(r) == 1) {
        json_t *doc = json_loads(PQgetvalue(r, 0, 1), 0, NULL);
        json_t *detail = json_pack("{s:s, s:s?}", "deleted_at", deleted_at, "reason", reason);
        char *detail_text = json_dumps(detail, JSON_COMPACT);
        const char *ph[] = {PQgetvalue(r, 0, 0), "ds", "ds.deleted", detail_text};
        st = db_exec(conn, &st_history_insert, 4, ph, NULL);
        if (st == STATUS_OK) /* nothing left to fetch for a dossier DS deleted */
            st = db_exec(conn, &st_notice_close, 1, params, NULL);
        if (st == STATUS_OK)
            st = outbox_append(conn, SUBMISSION_TOPIC, SUBMISSION_SOURCE, "dossier.withdrawn",
                               PQgetvalue(r, 0, 0),
                               json_pack("{s:o, s:s?}", "dossier", doc, "reason", reason), NULL);
        else
            json_decref(doc);
        *changed = st == STATUS_OK;
        free(detail_text);
        json_decref(detail);
    }
    PQclear(r);
    st = db_end(conn, st);
    return st;
}

/* ---- the worker's queue ---- */

/*
 * A claim is a session-level advisory lock on the dossier, held by the worker's own connection:
 * a crash or a dropped connection releases it at once, so a failed attempt is taken again within
 * seconds by this process or another replica. next_attempt_at only carries the backoff of real
 * failures. The lock is taken in its own statement, never in a WHERE clause over many rows, so
 * that a worker never holds the lock of a dossier it did not claim.
 */
DB_STMT(st_notice_due, "SELECT id, dossier_number FROM ds_notification WHERE status = 'pending'"
                       " AND next_attempt_at <= now() ORDER BY next_attempt_at, id LIMIT 32");
DB_STMT(st_fetch_lock, "SELECT pg_try_advisory_lock(hashtext('ptce.ds_fetch'), $1::int)");
DB_STMT(st_fetch_unlock, "SELECT pg_advisory_unlock(hashtext('ptce.ds_fetch'), $1::int)");
/*
 * Also returns the newest pending notice of the dossier: every notice up to it was received
 * before this fetch starts, so the one fetch answers them all (a flood of webhooks for one
 * dossier costs one DS fetch, plus one for those that arrive while it runs).
 */
DB_STMT(st_notice_take, "UPDATE ds_notification SET attempts = attempts + 1 WHERE id = $1"
                        " AND status = 'pending' AND next_attempt_at <= now() RETURNING attempts,"
                        " (SELECT max(p.id) FROM ds_notification p WHERE p.dossier_number ="
                        " ds_notification.dossier_number AND p.status = 'pending')");
DB_STMT(st_notice_done, "UPDATE ds_notification SET status = 'done', done_at = now(),"
                        " last_error = NULL WHERE dossier_number = $1 AND status = 'pending'"
                        " AND id <= $2");
DB_STMT(st_notice_fail, "UPDATE ds_notification SET status = 'failed', last_error = $2"
                        " WHERE id = $1");
/* The failed fetch answered for every notice it covered: they all wait the same backoff. */
DB_STMT(st_notice_retry, "UPDATE ds_notification SET next_attempt_at = now() + $2 * interval"
                         " '1 millisecond', last_error = $3 WHERE dossier_number = $4"
                         " AND id BETWEEN $1 AND $5 AND status = 'pending'");

/* Runs a one-boolean statement on a dossier number; *yes is its answer. */
static enum status store_fetch_lock_run(struct db_conn *conn, struct db_stmt *stmt,
                                        const char *number, int *yes)
{
    PGresult *r;
    const char *params[] = {number};
    enum status st = db_exec(conn, stmt, 1, params, &r);

    *yes = 0;
    if (st != STATUS_OK)
        return st;
    *yes = PQntuples(r) == 1 && PQgetvalue(r, 0, 0)[0] == 't';
    PQclear(r);
    return STATUS_OK;
}

/* Locks the dossier of one due notice and takes the notice; *found = 0 if another holds it. */
static enum status store_notice_take(struct db_conn *conn, const char *id, const char *number,
                                     struct ds_claim *out, int *found)
{
    PGresult *r;
    const char *params[] = {id};
    int locked = 0, unlocked = 0;
    enum status st = store_fetch_lock_run(conn, &st_fetch_lock, number, &locked);

    if (st != STATUS_OK || !locked)
        return st;
    st = db_exec(conn, &st_notice_take, 1, params, &r);
    if (st == STATUS_OK && PQntuples(r) == 1) {
        out->id = strtoll(id, NULL, 10);
        out->number = strtoll(number, NULL, 10);
        out->attempts = (int)strtol(PQgetvalue(r, 0, 0), NULL, 10);
        out->covers = strtoll(PQgetvalue(r, 0, 1), NULL, 10);
        if (out->covers < out->id)
            out->covers = out->id;
        *found = 1;
    }
    if (st == STATUS_OK)
        PQclear(r);
    if (!*found) /* done or retried meanwhile, or the statement failed: let the dossier go */
        store_fetch_lock_run(conn, &st_fetch_unlock, number, &unlocked);
    return st;
}

enum status store_notice_claim(struct db_conn *conn, struct ds_claim *out, int *found)
{
    PGresult *r;
    enum status st = db_exec(conn, &st_notice_due, 0, NULL, &r);

    *found = 0;
    if (st != STATUS_OK)
        return st;
    /* Oldest first; a dossier another worker holds is skipped, not waited for. */
    for (int row = 0; row < PQntuples(r) && !*found && st == STATUS_OK; row++)
        st = store_notice_take(conn, PQgetvalue(r, row, 0), PQgetvalue(r, row, 1), out, found);
    PQclear(r);
    return st;
}

enum status store_notice_release(struct db_conn *conn, const struct ds_claim *c)
{
    char number[24];
    int unlocked = 0;

    snprintf(number, sizeof number, "%lld", c->number);
    return store_fetch_lock_run(conn, &st_fetch_unlock, number, &unlocked);
}

enum status store_notice_done(struct db_conn *conn, const struct ds_claim *c)
{
    char number[24], id[24];
    const char *params[] = {number, id};

    snprintf(number, sizeof number, "%lld", c->number);
    snprintf(id, sizeof id, "%lld", c->covers > c->id ? c->covers : c->id);
    return db_exec(conn, &st_notice_done, 2, params, NULL);
}

enum status store_notice_fail(struct db_conn *conn, const struct ds_claim *c, const char *error)
{
    char id[24];
    const char *params[] = {id, error};

    snprintf(id, sizeof id, "%lld", c->id);
    return db_exec(conn, &st_notice_fail, 2, params, NULL);
}

enum status store_notice_retry(struct db_conn *conn, const struct ds_claim *c, long delay_ms,
                               const char *error)
{
    char id[24], delay[24], number[24], covers[24];
    const char *params[] = {id, delay, error, number, covers};

    snprintf(id, sizeof id, "%lld", c->id);
    snprintf(delay, sizeof delay, "%ld", delay_ms);
    snprintf(number, sizeof number, "%lld", c->number);
    snprintf(covers, sizeof covers, "%lld", c->covers > c->id ? c->covers : c->id);
    return db_exec(conn, &st_notice_retry, 5, params, NULL);
}

/* ---- the poller ---- */

DB_STMT(st_sync_get, "SELECT coalesce(to_char(updated_watermark AT TIME ZONE 'UTC',"
                     " 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), ''), coalesce(to_char(deleted_watermark"
                     " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), '')"
                     " FROM ds_sync WHERE demarche_number = $1");
DB_STMT(st_sync_put, "INSERT INTO ds_sync (demarche_number, updated_watermark, deleted_watermark,"
                     " last_run_at) VALUES ($1, $2, $3, now()) ON CONFLICT (demarche_number)"
                     " DO UPDATE SET updated_watermark = greatest(ds_sync.updated_watermark,"
                     " EXCLUDED.updated_watermark), deleted_watermark ="
                     " greatest(ds_sync.deleted_watermark, EXCLUDED.deleted_watermark),"
                     " last_run_at = now()");
DB_STMT(st_notice_poll,
        "INSERT INTO ds_notification (procedure_id, dossier_number, state, updated_at_raw,"
        " updated_at, origin) SELECT $1::bigint, $2::bigint, $3::text, $4::text,"
        " $4::text::timestamptz, 'poller' WHERE NOT EXISTS (SELECT 1 FROM dossier"
        " WHERE ds_number = $2::bigint AND ds_updated_at >= $4::text::timestamptz)"
        " ON CONFLICT (procedure_id, dossier_number, state, updated_at) DO UPDATE"
        " SET next_attempt_at = now() WHERE ds_notification.status = 'pending'"
        " AND ds_notification.next_attempt_at > now() RETURNING id");

enum status store_sync_get(struct db_conn *conn, long long demarche, char *updated, char *deleted,
                           size_t len)
{
    char num[24];
    PGresult *r;
    const char *params[] = {num};

    snprintf(num, sizeof num, "%lld", demarche);
    updated[0] = deleted[0] = '\0';
    enum status st = db_exec(conn, &st_sync_get, 1, params, &r);
    if (st != STATUS_OK)
        return st;
    if (PQntuples(r) == 1) {
        snprintf(updated, len, "%s", PQgetvalue(r, 0, 0));
        snprintf(deleted, len, "%s", PQgetvalue(r, 0, 1));
    }
    PQclear(r);
    return STATUS_OK;
}

enum status store_sync_put(struct db_conn *conn, long long demarche, const char *updated,
                           const char *deleted)
{
    char num[24];
    const char *params[] = {num, updated && *updated ? updated : NULL,
                            deleted && *deleted ? deleted : NULL};

    snprintf(num, sizeof num, "%lld", demarche);
    return db_exec(conn, &st_sync_put, 3, params, NULL);
}

/* Session-level: held by the poller's connection until it closes (the key is in README). */
DB_STMT(st_poller_lock, "SELECT pg_try_advisory_lock(hashtext('ptce.ds_poller.' ||"
                        " current_schema()), ($1::bigint % 2147483647)::int)");

enum status store_poller_lock(struct db_conn *conn, long long demarche, int *held)
{
    char num[24];
    PGresult *r;
    const char *params[] = {num};

    *held = 0;
    snprintf(num, sizeof num, "%lld", demarche);
    enum status st = db_exec(conn, &st_poller_lock, 1, params, &r);
    if (st != STATUS_OK)
        return st;
    *held = PQgetvalue(r, 0, 0)[0] == 't';
    PQclear(r);
    return STATUS_OK;
}

enum status store_notice_from_poll(struct db_conn *conn, long long procedure, long long number,
                                   const char *state, const char *updated_at, int *queued)
{
    char proc[24], num[24];
    PGresult *r;
    const char *params[] = {proc, num, state, updated_at};

    snprintf(proc, sizeof proc, "%lld", procedure);
    snprintf(num, sizeof num, "%lld", number);
    enum status st = db_exec(conn, &st_notice_poll, 4, params, &r);
    *queued = 0;
    if (st != STATUS_OK)
        return st;
    *queued = PQntuples(r) == 1;
    PQclear(r);
    return STATUS_OK;
}

/* ---- waves ---- */

DB_STMT(st_waves_list,
        "SELECT coalesce(json_agg(json_build_object('id', id, 'label', label, 'deposit_opens_at',"
        " deposit_opens_at, 'deposit_closes_at', deposit_closes_at, 'phase2_opens_at',"
        " phase2_opens_at, 'phase2_closes_at', phase2_closes_at, 'phase2_slots', phase2_slots,"
        " 'amount_per_laureate_cents', amount_per_laureate_cents, 'rules_version', rules_version)"
        " ORDER BY deposit_opens_at), '[]')::text FROM wave");
DB_STMT(st_wave_insert,
        "INSERT INTO wave (id, label, deposit_opens_at, deposit_closes_at, phase2_opens_at,"
        " phase2_closes_at, phase2_slots, amount_per_laureate_cents, rules_version)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        " RETURNING json_build_object('id', id, 'label', label, 'deposit_opens_at',"
        " deposit_opens_at, 'deposit_closes_at', deposit_closes_at, 'phase2_opens_at',"
        " phase2_opens_at, 'phase2_closes_at', phase2_closes_at, 'phase2_slots', phase2_slots,"
        " 'amount_per_laureate_cents', amount_per_laureate_cents, 'rules_version',"
        " rules_version)::text");

static enum status store_one_text(struct db_pool *db, struct db_stmt *stmt, int n,
                                  const char *const *params, char **out)
{
    struct db_conn *conn;
    PGresult *r;
    enum status st = db_acquire(db, &conn);

    if (st != STATUS_OK)
        return st;
    st = db_exec(conn, stmt, n, params, &r);
    db_release(db, conn);
    if (st != STATUS_OK)
        return st;
    *out = xstrdup(PQgetvalue(r, 0, 0));
    PQclear(r);
    return STATUS_OK;
}

enum status store_waves_list(struct db_pool *db, char **json)
{
    return store_one_text(db, &st_waves_list, 0, NULL, json);
}

/* The wave row and its wave.published event, in one transaction: waves are submission's. */
static enum status store_wave_insert(struct db_pool *db, const char *const *params, char **json)
{
    struct db_conn *conn;
    PGresult *r = NULL;
    enum status st = db_acquire(db, &conn);

    *json = NULL;
    if (st != STATUS_OK)
        return st;
    st = db_begin(conn);
    if (st == STATUS_OK)
        st = db_exec(conn, &st_wave_insert, 9, params, &r);
    if (st == STATUS_OK) {
        *json = xstrdup(PQgetvalue(r, 0, 0));
        PQclear(r);
        json_t *wave = json_loads(*json, 0, NULL);
        st = wave ? outbox_append(conn, SUBMISSION_TOPIC, SUBMISSION_SOURCE, "wave.published",
                                  params[0], json_pack("{s:o}", "wave", wave), NULL)
                  : STATUS_INTERNAL;
    }
    st = db_end(conn, st);
    db_release(db, conn);
    if (st != STATUS_OK) {
        free(*json);
        *json = NULL;
    }
    return st;
}

enum status store_wave_create(struct db_pool *db, json_t *w, char **json)
{
    char slots[24], amount[24];
    const char *params[9];
    static const char *const keys[] = {"id",
                                       "label",
                                       "deposit_opens_at",
                                       "deposit_closes_at",
                                       "phase2_opens_at",
                                       "phase2_closes_at"};

    for (size_t i = 0; i < 6; i++)
        params[i] = json_string_value(json_object_get(w, keys[i]));
    snprintf(slots, sizeof slots, "%lld",
             (long long)json_integer_value(json_object_get(w, "phase2_slots")));
    snprintf(amount, sizeof amount, "%lld",
             (long long)json_integer_value(json_object_get(w, "amount_per_laureate_cents")));
    params[6] = slots;
    params[7] = amount;
    params[8] = DOSSIER_RULES_VERSION;
    return store_wave_insert(db, params, json);
}
