/* store (funding): every SQL statement of the service, one function per use case. */
#include "store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "events.h"
#include "outbox.h"
#include "precond.h"

#define STORE_ATTEMPTS 3

static const struct {
    const char *slug;
    enum status st;
} store_slugs[] = {
    {"conflict", STATUS_CONFLICT},
    {"not_found", STATUS_NOT_FOUND},
    {"invalid", STATUS_INVALID},
    {"unprocessable", STATUS_UNPROCESSABLE},
    {"precondition_failed", STATUS_PRECONDITION_FAILED},
};

enum status store_status_from_slug(const char *slug)
{
    for (size_t i = 0; slug && i < sizeof store_slugs / sizeof *store_slugs; i++) {
        if (strcmp(slug, store_slugs[i].slug) == 0)
            return store_slugs[i].st;
    }
    return STATUS_INTERNAL;
}

enum status store_events_append(struct db_conn *conn, const json_t *doc)
{
    const json_t *events = json_object_get(doc, "events");
    enum status st = STATUS_OK;

    for (size_t i = 0; st == STATUS_OK && i < json_array_size(events); i++) {
        const json_t *e = json_array_get(events, i);
        const char *type = json_string_value(json_object_get(e, "type"));
        const char *subject = json_string_value(json_object_get(e, "subject"));
        json_t *data = json_object_get(e, "data");
        if (!type || !subject || !json_is_object(data))
            return STATUS_INTERNAL;
        /* outbox_append takes a reference: give it one of its own. */
        st = outbox_append(conn, FUNDING_TOPIC, FUNDING_SOURCE, type, subject, json_incref(data),
                           NULL);
    }
    return st;
}

/* Parses the first column of the first row as a JSON document; NULL → STATUS_NOT_FOUND. */
static enum status store_doc(PGresult *r, json_t **out)
{
    if (PQntuples(r) < 1 || PQgetisnull(r, 0, 0))
        return STATUS_NOT_FOUND;
    json_t *doc = json_loads(PQgetvalue(r, 0, 0), 0, NULL);
    if (!doc)
        return STATUS_INTERNAL;
    *out = doc;
    return STATUS_OK;
}

enum status store_apply(struct db_conn *conn, struct db_stmt *stmt, int n,
                        const char *const *params, json_t **out, char *why, size_t whylen)
{
    PGresult *r;
    json_t *doc = NULL;
    enum status st = db_exec(conn, stmt, n, params, &r);

    if (st != STATUS_OK)
        return st;
    st = store_doc(r, &doc);
    PQclear(r);
    if (st != STATUS_OK)
        return st;
    const char *slug = json_string_value(json_object_get(doc, "error"));
    if (slug) {
        snprintf(why, whylen, "%s", json_string_value(json_object_get(doc, "detail")));
        st = store_status_from_slug(slug); /* before the decref: slug is borrowed from doc */
        json_decref(doc);
        return st;
    }
    st = store_events_append(conn, doc);
    if (st == STATUS_OK && out)
        *out = doc;
    else
        json_decref(doc);
    return st;
}

void store_agreement_stale_why(long long version, char *why, size_t whylen)
{
    snprintf(why, whylen, "the agreement is at version %lld (ETag \"v%lld\")", version, version);
}

DB_STMT(store_agreement_lock, "SELECT version FROM agreement WHERE id = $1 FOR UPDATE");

/* The If-Match check of an amendment, under the agreement's row lock. */
static enum status store_match_check(struct db_conn *conn, const struct store_match *m, char *why,
                                     size_t whylen)
{
    const char *params[] = {m->agreement_id};
    PGresult *r;
    enum status st = db_exec(conn, &store_agreement_lock, 1, params, &r);

    if (st != STATUS_OK)
        return st;
    if (PQntuples(r) != 1) {
        PQclear(r);
        snprintf(why, whylen, "no agreement %s", m->agreement_id);
        return STATUS_NOT_FOUND;
    }
    long long version = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    st = precond_if_match(m->if_match, version, 1);
    if (st == STATUS_PRECONDITION_FAILED)
        store_agreement_stale_why(version, why, whylen);
    else if (st != STATUS_OK) /* a missing or malformed header, named as fsm_apply names it */
        snprintf(why, whylen, "%s", precond_if_match_strerror(st));
    return st;
}

/* What a use case runs: its statement, under an If-Match or an Idempotency-Key when it has one. */
struct store_call {
    const struct store_match *m; /* an amendment's If-Match, or NULL */
    struct db_stmt *stmt;
    int n;
    const char *const *params;
    struct http_idem *idem; /* a creating POST's key, or NULL */
    const char *member;     /* with idem: the document's member that is the answer, or NULL */
};

/* The answer kept under the key: the member the handler sends, or the whole document. */
static enum status store_answer_keep(struct db_conn *conn, const struct store_call *c,
                                     const json_t *doc)
{
    const json_t *answer = c->member ? json_object_get(doc, c->member) : doc;
    char *text = answer ? json_dumps(answer, JSON_COMPACT) : NULL;

    if (!text)
        return STATUS_INTERNAL;
    enum status st = http_idem_store(conn, c->idem, text);
    free(text);
    return st;
}

/* A replayed answer, shaped as the use case's document. Takes text. */
static enum status store_answer_replay(const struct store_call *c, char *text, json_t **out)
{
    json_t *answer = json_loads(text, 0, NULL);

    free(text);
    if (!answer)
        return STATUS_INTERNAL;
    *out = c->member ? json_pack("{s:o}", c->member, answer) : answer; /* takes answer */
    return STATUS_OK;
}

/* One attempt, inside the open transaction: the key's claim, the precondition, the work. */
static enum status store_once(struct db_conn *conn, const struct store_call *c, json_t **out,
                              char *why, size_t whylen)
{
    enum status st = http_idem_claim(conn, c->idem); /* nothing when c->idem is NULL */
    char *replay = st == STATUS_OK && c->idem ? http_idem_body_take(c->idem) : NULL;

    if (st == STATUS_OK && replay)
        return store_answer_replay(c, replay, out);
    if (st == STATUS_OK && c->m)
        st = store_match_check(conn, c->m, why, whylen);
    if (st == STATUS_OK)
        st = store_apply(conn, c->stmt, c->n, c->params, out, why, whylen);
    if (st == STATUS_OK && c->idem) {
        st = store_answer_keep(conn, c, *out);
        if (st != STATUS_OK) {
            json_decref(*out);
            *out = NULL;
        }
    }
    return st;
}

/* One use case in a transaction of its own, run again on a serialization failure. */
static enum status store_run(struct db_pool *pool, const struct store_call *c, json_t **out,
                             char *why, size_t whylen)
{
    struct db_conn *conn;
    enum status st = db_acquire(pool, &conn);

    if (st != STATUS_OK)
        return st;
    for (int attempt = 0; attempt < STORE_ATTEMPTS; attempt++) {
        st = db_begin(conn);
        if (st == STATUS_OK)
            st = store_once(conn, c, out, why, whylen);
        st = db_end(conn, st);
        if (st != STATUS_RETRY)
            break;
    }
    if (st == STATUS_INVALID && !why[0])
        snprintf(why, whylen, "the database refused the change");
    db_release(pool, conn);
    return st;
}

/* One read statement answering one JSON document. */
/* One statement on a connection of the pool, released before the result is read. */
static enum status store_fetch(struct db_pool *pool, struct db_stmt *stmt, int n,
                               const char *const *params, PGresult **r)
{
    struct db_conn *conn;
    enum status st = db_acquire(pool, &conn);

    if (st != STATUS_OK)
        return st;
    st = db_exec(conn, stmt, n, params, r);
    db_release(pool, conn);
    return st;
}

static enum status store_read(struct db_pool *pool, struct db_stmt *stmt, int n,
                              const char *const *params, json_t **out)
{
    PGresult *r;
    enum status st = store_fetch(pool, stmt, n, params, &r);

    if (st == STATUS_OK) {
        st = store_doc(r, out);
        PQclear(r);
    }
    return st;
}

/* ---- use cases ---- */

DB_STMT(store_tranche_pay_fn, "SELECT tranche_pay($1::uuid, $2, $3::date, $4)");
DB_STMT(store_tranche_cancel_fn, "SELECT tranche_cancel($1::uuid, $2, $3)");
DB_STMT(store_tranche_recover_fn, "SELECT tranche_recover($1::uuid, $2::bigint, $3, $4)");
DB_STMT(store_agreement_reduce_fn, "SELECT agreement_reduce($1::uuid, $2::bigint, $3, $4)");
DB_STMT(store_year3_fn, "SELECT year3_decide($1::uuid, $2, $3::bigint, $4, $5)");
DB_STMT(store_report_submit_fn, "SELECT report_submit($1::uuid, $2::jsonb)");
DB_STMT(store_report_review_fn, "SELECT report_review($1::uuid, $2, $3)");

enum status store_tranche_pay(struct db_pool *pool, const char *id, const char *reference,
                              const char *paid_on, const char *actor, struct http_idem *idem,
                              json_t **out, char *why, size_t whylen)
{
    const char *params[] = {id, reference, paid_on, actor};
    struct store_call c = {NULL, &store_tranche_pay_fn, 4, params, idem, "tranche"};

    return store_run(pool, &c, out, why, whylen);
}

enum status store_tranche_cancel(struct db_pool *pool, const char *id, const char *motivation,
                                 const char *actor, json_t **out, char *why, size_t whylen)
{
    const char *params[] = {id, motivation, actor};
    struct store_call c = {NULL, &store_tranche_cancel_fn, 3, params, NULL, NULL};

    return store_run(pool, &c, out, why, whylen);
}

enum status store_tranche_recover(struct db_pool *pool, const char *id, const char *amount,
                                  const char *reference, const char *actor, json_t **out, char *why,
                                  size_t whylen)
{
    const char *params[] = {id, amount, reference, actor};
    struct store_call c = {NULL, &store_tranche_recover_fn, 4, params, NULL, NULL};

    return store_run(pool, &c, out, why, whylen);
}

enum status store_agreement_reduce(struct db_pool *pool, const struct store_match *m,
                                   const char *amount, const char *motivation, const char *actor,
                                   char *why, size_t whylen)
{
    const char *params[] = {m->agreement_id, amount, motivation, actor};
    struct store_call c = {m, &store_agreement_reduce_fn, 4, params, NULL, NULL};

    return store_run(pool, &c, NULL, why, whylen);
}

enum status store_year3_decide(struct db_pool *pool, const struct store_match *m,
                               const char *decision, const char *amount, const char *motivation,
                               const char *actor, char *why, size_t whylen)
{
    const char *params[] = {m->agreement_id, decision, amount, motivation, actor};
    struct store_call c = {m, &store_year3_fn, 5, params, NULL, NULL};

    return store_run(pool, &c, NULL, why, whylen);
}

enum status store_report_submit(struct db_pool *pool, const char *id, const char *content,
                                struct http_idem *idem, json_t **out, char *why, size_t whylen)
{
    const char *params[] = {id, content};
    struct store_call c = {NULL, &store_report_submit_fn, 2, params, idem, "report"};

    return store_run(pool, &c, out, why, whylen);
}

enum status store_report_review(struct db_pool *pool, const char *id, const char *decision,
                                const char *reason, json_t **out, char *why, size_t whylen)
{
    const char *params[] = {id, decision, reason};
    struct store_call c = {NULL, &store_report_review_fn, 3, params, NULL, NULL};

    return store_run(pool, &c, out, why, whylen);
}

/* ---- reads ---- */

DB_STMT(store_owner_agreement,
        "SELECT jsonb_build_object('region', region) FROM agreement WHERE id = $1::uuid");
DB_STMT(store_owner_tranche, "SELECT jsonb_build_object('region', a.region) FROM tranche t"
                             " JOIN agreement a ON a.id = t.agreement_id WHERE t.id = $1::uuid");
DB_STMT(store_owner_report, "SELECT jsonb_build_object('region', a.region) FROM report r"
                            " JOIN agreement a ON a.id = r.agreement_id WHERE r.id = $1::uuid");

enum status store_owner_region(struct db_pool *pool, const char *kind, const char *id,
                               char region[3])
{
    struct db_stmt *stmt = strcmp(kind, "tranche") == 0  ? &store_owner_tranche
                           : strcmp(kind, "report") == 0 ? &store_owner_report
                                                         : &store_owner_agreement;
    const char *params[] = {id};
    json_t *doc = NULL;
    enum status st = store_read(pool, stmt, 1, params, &doc);

    if (st == STATUS_OK) {
        const char *r = json_string_value(json_object_get(doc, "region"));
        snprintf(region, 3, "%s", r ? r : "");
        json_decref(doc);
    }
    return st;
}

DB_STMT(store_agreement_get_q, "SELECT agreement_doc($1::uuid)");
DB_STMT(store_agreement_list_q,
        "SELECT coalesce(jsonb_agg(agreement_doc(a.id) ORDER BY a.id), '[]') FROM ("
        " SELECT id FROM agreement"
        " WHERE ($1::text IS NULL OR wave = $1) AND ($2::text IS NULL OR state = $2)"
        " AND ($3::text[] IS NULL OR region = ANY($3::text[]))"
        " AND ($4::uuid IS NULL OR id > $4::uuid) ORDER BY id LIMIT $5::integer) a");
DB_STMT(store_versions_q,
        "SELECT CASE WHEN EXISTS (SELECT 1 FROM agreement WHERE id = $1::uuid) THEN"
        " jsonb_build_object('items', coalesce((SELECT jsonb_agg(jsonb_build_object("
        " 'number', v.number, 'kind', v.kind, 'amount_cents', v.amount_cents,"
        " 'motivation', v.motivation, 'actor', v.actor, 'at', v.at, 'agreement', v.snapshot)"
        " ORDER BY v.number) FROM agreement_version v WHERE v.agreement_id = $1::uuid), '[]'))"
        " END");
DB_STMT(store_reports_q,
        "SELECT CASE WHEN EXISTS (SELECT 1 FROM agreement WHERE id = $1::uuid) THEN"
        " jsonb_build_object('items', coalesce((SELECT jsonb_agg(report_doc(r)"
        " ORDER BY r.year, r.kind) FROM report r WHERE r.agreement_id = $1::uuid), '[]')) END");
DB_STMT(store_overdue_q,
        "SELECT jsonb_build_object('items', coalesce(jsonb_agg(report_doc(r)"
        " ORDER BY r.due_on, r.id), '[]')) FROM report r JOIN agreement a ON a.id = r.agreement_id"
        " WHERE r.state IN ('expected', 'rejected') AND r.due_on < current_date"
        " AND ($1::text[] IS NULL OR a.region = ANY($1::text[]))");
DB_STMT(store_catalogue_q,
        "SELECT jsonb_build_object("
        " 'indicators', (SELECT jsonb_agg(to_jsonb(i) ORDER BY i.code) FROM indicator i),"
        " 'cerfa_15059', (SELECT jsonb_agg(to_jsonb(h) ORDER BY h.side, h.code)"
        " FROM cerfa_heading h))");
DB_STMT(store_envelope_list_q,
        "SELECT jsonb_build_object('items', coalesce(jsonb_agg(envelope_doc(e)"
        " ORDER BY e.wave, e.region NULLS FIRST), '[]')) FROM envelope e"
        " WHERE $1::text IS NULL OR e.wave = $1");
DB_STMT(store_envelope_create_q,
        "WITH e AS (INSERT INTO envelope (wave, region, amount_cents)"
        " VALUES ($1, $2, $3::bigint) RETURNING *) SELECT envelope_doc(ROW(e.*)::envelope) FROM e");
DB_STMT(store_ledger_q,
        "SELECT jsonb_build_object('items', coalesce((SELECT jsonb_agg(to_jsonb(l) ORDER BY l.seq)"
        " FROM (SELECT * FROM ledger WHERE $1::uuid IS NULL OR agreement_id = $1::uuid"
        " ORDER BY seq DESC LIMIT 500) l), '[]'), 'discrepancies', ledger_check())");
DB_STMT(store_stats_q, "SELECT stats_money($1)");

enum status store_agreement_get(struct db_pool *pool, const char *id, json_t **out)
{
    const char *params[] = {id};

    return store_read(pool, &store_agreement_get_q, 1, params, out);
}

enum status store_agreement_list(struct db_pool *pool, const char *wave, const char *state,
                                 const char *regions, const char *after, long limit, json_t **out)
{
    char lim[24];

    snprintf(lim, sizeof lim, "%ld", limit);
    const char *params[] = {wave, state, regions, after, lim};
    return store_read(pool, &store_agreement_list_q, 5, params, out);
}

enum status store_agreement_versions(struct db_pool *pool, const char *id, json_t **out)
{
    const char *params[] = {id};

    return store_read(pool, &store_versions_q, 1, params, out);
}

enum status store_agreement_reports(struct db_pool *pool, const char *id, json_t **out)
{
    const char *params[] = {id};

    return store_read(pool, &store_reports_q, 1, params, out);
}

enum status store_reports_overdue(struct db_pool *pool, const char *regions, json_t **out)
{
    const char *params[] = {regions};

    return store_read(pool, &store_overdue_q, 1, params, out);
}

enum status store_catalogue(struct db_pool *pool, json_t **out)
{
    return store_read(pool, &store_catalogue_q, 0, NULL, out);
}

enum status store_envelope_list(struct db_pool *pool, const char *wave, json_t **out)
{
    const char *params[] = {wave};

    return store_read(pool, &store_envelope_list_q, 1, params, out);
}

enum status store_envelope_create(struct db_pool *pool, const char *wave, const char *region,
                                  const char *amount, struct http_idem *idem, json_t **out)
{
    const char *params[] = {wave, region, amount};
    struct store_call c = {NULL, &store_envelope_create_q, 3, params, idem, NULL};
    char why[128] = "";

    return store_run(pool, &c, out, why, sizeof why);
}

enum status store_ledger(struct db_pool *pool, const char *agreement_id, json_t **out)
{
    const char *params[] = {agreement_id};

    return store_read(pool, &store_ledger_q, 1, params, out);
}

enum status store_stats_money(struct db_pool *pool, const char *wave, char **out)
{
    const char *params[] = {wave};
    PGresult *r;
    enum status st = store_fetch(pool, &store_stats_q, 1, params, &r);

    if (st != STATUS_OK)
        return st;
    *out = xstrdup(PQgetvalue(r, 0, 0));
    PQclear(r);
    return STATUS_OK;
}

DB_STMT(store_opendata_q,
        "SELECT a.signed_on::text, a.decision_reference, coalesce(a.beneficiary_name, ''),"
        " coalesce(a.beneficiary_siret, ''), a.clauses->>'objet', a.amount_cents::text,"
        " count(t.id)::text, min(t.due_on)::text, max(t.due_on)::text"
        " FROM agreement a JOIN tranche t ON t.agreement_id = a.id AND t.state <> 'cancelled'"
        " WHERE a.state IN ('signed', 'active', 'closed')"
        " GROUP BY a.id ORDER BY a.signed_on, a.id");

enum status store_opendata(struct db_pool *pool, const struct funding_grantor *g, struct buf *out)
{
    PGresult *r;
    enum status st = store_fetch(pool, &store_opendata_q, 0, NULL, &r);

    if (st != STATUS_OK)
        return st;
    for (int i = 0; i < PQntuples(r); i++) {
        struct funding_scdl_row row = {
            PQgetvalue(r, i, 0),
            PQgetvalue(r, i, 1),
            PQgetvalue(r, i, 2),
            PQgetvalue(r, i, 3),
            PQgetvalue(r, i, 4),
            strtoll(PQgetvalue(r, i, 5), NULL, 10),
            (int)strtol(PQgetvalue(r, i, 6), NULL, 10),
            PQgetvalue(r, i, 7),
            PQgetvalue(r, i, 8),
        };
        funding_scdl_row_append(out, g, &row);
    }
    PQclear(r);
    return STATUS_OK;
}

/* ---- events ---- */

DB_STMT(store_wave_upsert_q,
        "INSERT INTO wave_parameters (wave, amount_per_laureate_cents, phase2_slots)"
        " VALUES ($1, coalesce(nullif($2::bigint, 0), 10000000), $3::integer)"
        " ON CONFLICT (wave) DO UPDATE SET"
        " amount_per_laureate_cents = EXCLUDED.amount_per_laureate_cents,"
        " phase2_slots = EXCLUDED.phase2_slots, updated_at = now()");
DB_STMT(store_wave_params_q,
        "SELECT amount_per_laureate_cents, duration_months, tranche_template::text"
        " FROM wave_parameters WHERE wave = $1");

enum status store_wave_upsert(struct db_conn *conn, const json_t *wave)
{
    char amount[24], slots[24];
    const char *id = json_string_value(json_object_get(wave, "id"));
    const json_t *a = json_object_get(wave, "amount_per_laureate_cents");
    const json_t *s = json_object_get(wave, "phase2_slots");

    if (!id || !json_is_integer(a) || json_integer_value(a) < 0 || !json_is_integer(s))
        return STATUS_INVALID;
    snprintf(amount, sizeof amount, "%lld", (long long)json_integer_value(a));
    snprintf(slots, sizeof slots, "%lld", (long long)json_integer_value(s));
    const char *params[] = {id, amount, slots};
    return db_exec(conn, &store_wave_upsert_q, 3, params, NULL);
}

enum status store_wave_params(struct db_conn *conn, const char *wave, long long *amount,
                              long *months, json_t **tmpl)
{
    const char *params[] = {wave};
    PGresult *r;
    enum status st = db_exec(conn, &store_wave_params_q, 1, params, &r);

    if (st != STATUS_OK)
        return st;
    if (PQntuples(r) == 0) {
        *amount = FUNDING_DEFAULT_AMOUNT_CENTS;
        *months = FUNDING_DEFAULT_DURATION_MONTHS;
        *tmpl = funding_template_default();
    } else {
        *amount = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
        *months = strtol(PQgetvalue(r, 0, 1), NULL, 10);
        *tmpl = json_loads(PQgetvalue(r, 0, 2), 0, NULL);
    }
    PQclear(r);
    return *tmpl ? STATUS_OK : STATUS_INTERNAL;
}
