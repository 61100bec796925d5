/* national (instruction): the committee's ranking and its bulk decisions, all-or-nothing. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "domain.h"
#include "http_idem.h"
#include "instruction.h"
#include "lifecycle.h"
#include "page.h"
#include "ttlcache.h"

#define DECISIONS_MAX 500
#define RANKING_MAX 500
#define DECISION_TRIES 3

/*
 * One page of the ranking as one JSON array, built by the database: the service passes the
 * text through instead of parsing a hundred rows and writing them again. S and P are the score
 * and spread columns, W the region condition; the rank is the row's place in the whole order.
 */
#define RANK_PAGE(S, P, W)                                                                         \
    "SELECT coalesce(json_agg(json_build_object('dossier_id', x.id, 'title', x.title, 'region',"   \
    " x.region, 'state', x.state, 'labels', to_json(x.labels), 'regional_opinion', x.opinion,"     \
    " 'score', x.score, 'spread', x.spread, 'rank', x.rank) ORDER BY x.rank), '[]')::text,"        \
    " count(*) FROM (SELECT d.id, d.title, d.region, d.state, d.labels, d.opinion,"                \
    " d." S " AS score, d." P " AS spread,"                                                        \
    " row_number() OVER (ORDER BY d." S " DESC NULLS LAST, d.id) AS rank"                          \
    " FROM dossier d WHERE d.wave = $1 AND NOT d.withdrawn " W                                     \
    " AND ($2::text[] IS NULL OR d.region = ANY($2::text[])) AND ($3::text IS NULL OR"             \
    " d.state = $3) AND ($4::text IS NULL OR $4 = ANY(d.labels))"                                  \
    " ORDER BY d." S " DESC NULLS LAST, d.id LIMIT $6::int OFFSET $7::int) x"

/*
 * Four statements rather than one with optional parameters, so that the plan of a region's
 * ranking reads the dossier_rank index (wave, region, score DESC) in order and stops at LIMIT;
 * the index includes the page's columns (migration 007), so no heap row is read.
 */
DB_STMT(rank1_region, RANK_PAGE("score1", "spread1", "AND d.region = $5"));
DB_STMT(rank1_all, RANK_PAGE("score1", "spread1", "AND $5::text IS NULL"));
DB_STMT(rank2_region, RANK_PAGE("score2", "spread2", "AND d.region = $5"));
DB_STMT(rank2_all, RANK_PAGE("score2", "spread2", "AND $5::text IS NULL"));
/*
 * Counted per (region, state) first, in the order of the dossier_balance index, and only then
 * summed per region: a grouping on equal neighbours instead of an IN test on every row.
 */
#define RANK_BALANCE(FILTER)                                                                       \
    "SELECT coalesce(json_object_agg(region, json_build_object('dossiers', n,"                     \
    " 'phase1_laureates', l1, 'phase2_laureates', l2)), '{}') FROM (SELECT region, sum(c) AS n,"   \
    " coalesce(sum(c) FILTER (WHERE state IN ('phase1_laureate', 'phase2_invited',"                \
    " 'phase2_applied', 'phase2_review', 'phase2_laureate', 'phase2_not_selected')), 0) AS l1,"    \
    " coalesce(sum(c) FILTER (WHERE state = 'phase2_laureate'), 0) AS l2 FROM (SELECT d.region,"   \
    " d.state, count(*) AS c FROM dossier d"                                                       \
    " WHERE d.wave = $1 AND NOT d.withdrawn AND d.region IS NOT NULL " FILTER                      \
    " AND ($2::text[] IS NULL OR d.region = ANY($2::text[])) GROUP BY d.region, d.state) s"        \
    " GROUP BY region) b"
/* With a region filter, the balance is that region's: an index range, not the whole wave. */
DB_STMT(rank_balance_region, RANK_BALANCE("AND d.region = $3"));
DB_STMT(rank_balance_all, RANK_BALANCE("AND $3::text IS NULL"));

static int national_dashboard_404(struct http_ctx *ctx)
{
    return http_reply_problem(ctx, STATUS_NOT_FOUND, "no such resource: %s", ctx->req->url_path);
}

/*
 * The balance by region, counted over every dossier of the wave in the reader's scope, is most
 * of a ranking's cost and changes only with a decision: the last ones counted are served again
 * for PTCE_RANKING_BALANCE_TTL_MS (the items are read each time). Keyed by wave, scope and
 * region filter; a full cache gives up its oldest entry.
 */
static struct ttlcache balance_cache = TTLCACHE_INIT;

static long national_balance_ttl(const struct http_ctx *ctx)
{
    const struct instruction *in = ((const struct service *)ctx->app)->domain;

    return in ? in->balance_ttl_ms : 0;
}

/* The balance by region of a ranking (JSON text, to free), from the cache or counted. */
static enum status national_balance(struct db_conn *conn, const struct http_ctx *ctx,
                                    const char *wave, const char *regions, const char *region,
                                    char **out)
{
    long ttl = national_balance_ttl(ctx);
    char key[TTLCACHE_KEY_MAX + 1];
    PGresult *r;

    snprintf(key, sizeof key, "%s\x1f%s\x1f%s", wave, regions ? regions : "*",
             region ? region : "*");
    if (ttl > 0 && (*out = ttlcache_get(&balance_cache, key)))
        return STATUS_OK;
    const char *b[] = {wave, regions, region};
    enum status st = db_exec(conn, region ? &rank_balance_region : &rank_balance_all, 3, b, &r);
    if (st != STATUS_OK)
        return st;
    *out = xstrdup(PQgetvalue(r, 0, 0));
    PQclear(r);
    ttlcache_put(&balance_cache, key, *out, ttl); /* a key cut short is too long: not kept */
    return STATUS_OK;
}

/* A page of the ranking: its items (JSON text), how many, and the balance by region (text). */
struct national_ranking {
    char *items;
    long count;
    char *balance;
};

/* regions: the reader's scope (store_scope_regions; NULL: every region). */
static enum status national_ranking_query(struct db_conn *conn, const struct http_ctx *ctx,
                                          const char *regions, int phase, long limit, long offset,
                                          struct national_ranking *out)
{
    char lim[24], off[24];
    const char *region = http_query(ctx, "region");
    struct db_stmt *stmt =
        phase == 2 ? (region ? &rank2_region : &rank2_all) : (region ? &rank1_region : &rank1_all);
    PGresult *r;

    snprintf(lim, sizeof lim, "%ld", limit);
    snprintf(off, sizeof off, "%ld", offset);
    const char *params[] = {http_query(ctx, "wave"),
                            regions,
                            http_query(ctx, "state"),
                            http_query(ctx, "label"),
                            region,
                            lim,
                            off};
    enum status st = db_exec(conn, stmt, 7, params, &r);
    if (st == STATUS_OK) {
        out->items = xstrdup(PQgetvalue(r, 0, 0));
        out->count = strtol(PQgetvalue(r, 0, 1), NULL, 10);
        PQclear(r);
        st = national_balance(conn, ctx, params[0], regions, region, &out->balance);
    }
    return st;
}

/*
 * Whole answers of the ranking, kept for PTCE_RANKING_TTL_MS and keyed by everything the
 * answer depends on: the query, the reader's scope, and the count of this process's commits
 * read before the query (db_commit_count). A decision, a score, an opinion or a projected
 * event committed here changes the count, so the next reader here sees it at once; a write
 * made by another replica shows within the time to live.
 */
static struct ttlcache ranking_cache = TTLCACHE_INIT;

/* The cache key of a ranking's answer; 0 when it does not fit (the answer is not kept). */
static int national_ranking_key(const struct http_ctx *ctx, const char *regions, int phase,
                                long limit, long offset, unsigned long commits, char *key,
                                size_t len)
{
    const char *q[] = {http_query(ctx, "wave"), http_query(ctx, "region"), http_query(ctx, "state"),
                       http_query(ctx, "label")};
    int n = snprintf(key, len, "%lu\x1f%d\x1f%ld\x1f%ld\x1f%s", commits, phase, limit, offset,
                     regions ? regions : "*");

    for (size_t i = 0; i < sizeof q / sizeof *q && n >= 0 && (size_t)n < len; i++)
        n += snprintf(key + n, len - (size_t)n, "\x1f%s", q[i] ? q[i] : "\x1e");
    return n >= 0 && (size_t)n < len;
}

int national_handle_rankings(struct http_ctx *ctx)
{
    const char *wave = http_query(ctx, "wave"), *phase_s = http_query(ctx, "phase");
    const char *cursor = http_query(ctx, "cursor"), *state = http_query(ctx, "state");
    struct page_pos pos, next;
    json_t *errors;
    struct db_conn *conn;
    char why[128];
    long limit;

    if (ctx->principal.role == ROLE_DASHBOARD)
        return national_dashboard_404(ctx);
    errors = json_array();
    int phase = phase_s && !strcmp(phase_s, "2") ? 2 : 1;
    if (!wave || !*wave || instruction_chars(wave) > 32)
        http_field_error(errors, "wave", "is required");
    if (phase_s && strcmp(phase_s, "1") != 0 && strcmp(phase_s, "2") != 0)
        http_field_error(errors, "phase", "must be 1 or 2");
    if (state && !domain_state_known(state))
        http_field_error(errors, "state", "must be a state of the lifecycle");
    if (page_limit_parse(http_query(ctx, "limit"), 100, RANKING_MAX, &limit, why, sizeof why) !=
        STATUS_OK)
        http_field_error(errors, "limit", why);
    page_pos_init(&pos);
    if (cursor && page_cursor_decode("instruction.rankings", cursor, &pos) != STATUS_OK)
        http_field_error(errors, "cursor", "is not a cursor of this list");
    if (json_array_size(errors))
        return http_reply_problem_fields(ctx, STATUS_INVALID, errors, "invalid ranking query");
    json_decref(errors);
    long offset = pos.n == 1 ? (long)pos.v[0].i : 0;
    const struct instruction *in = ((const struct service *)ctx->app)->domain;
    long ttl = in ? in->ranking_ttl_ms : 0;
    char key[TTLCACHE_KEY_MAX];
    char *regions = store_scope_regions(&ctx->principal);
    int keep = ttl > 0 && national_ranking_key(ctx, regions, phase, limit, offset,
                                               db_commit_count(), key, sizeof key);
    char *kept = keep ? ttlcache_get(&ranking_cache, key) : NULL;
    if (kept) {
        free(regions);
        int rc = http_reply_raw(ctx, 200, "application/json", kept, strlen(kept));
        free(kept);
        return rc;
    }
    struct national_ranking page = {0};
    enum status st = db_acquire(instruction_db(ctx), &conn);
    if (st == STATUS_OK) {
        st = national_ranking_query(conn, ctx, regions, phase, limit, offset, &page);
        db_release(instruction_db(ctx), conn);
    }
    free(regions);
    if (st != STATUS_OK) {
        free(page.items);
        free(page.balance);
        return http_reply_problem(ctx, st, "the ranking could not be read");
    }
    page_pos_init(&next);
    int more = page.count == limit;
    if (more)
        page_pos_add_int(&next, offset + limit);
    /* The database's JSON goes out as it came; only the envelope is written here. */
    json_t *head = json_pack("{s:s, s:i, s:o}", "wave", wave, "phase", phase, "next_cursor",
                             page_next_cursor("instruction.rankings", more ? &next : NULL));
    char *text = json_dumps(head, JSON_COMPACT);
    struct buf body;
    json_decref(head);
    buf_init(&body, 0);
    if (text) { /* {"wave":…,"next_cursor":…} → {…,"items":[…],"balance_by_region":{…}} */
        buf_append(&body, text, strlen(text) - 1);
        buf_printf(&body, ",\"items\":");
        buf_append(&body, page.items, strlen(page.items));
        buf_printf(&body, ",\"balance_by_region\":");
        buf_append(&body, page.balance, strlen(page.balance));
        buf_append(&body, "}", 1);
    }
    free(text);
    free(page.items);
    free(page.balance);
    if (!body.len) {
        buf_free(&body);
        return http_reply_problem(ctx, STATUS_INTERNAL, "the ranking could not be written");
    }
    if (keep)
        ttlcache_put(&ranking_cache, key, body.data, ttl); /* buf keeps a terminating NUL */
    int rc = http_reply_raw(ctx, 200, "application/json", body.data, body.len);
    buf_free(&body);
    return rc;
}

/* ---- bulk decisions ---- */

struct decision {
    char dossier_id[UUID_STR_LEN]; /* lower case: the order rows are locked in is the ids' */
    const char *outcome, *motivation, *reference;
    size_t index; /* in the request */
};

static int decision_cmp(const void *a, const void *b)
{
    return strcmp(((const struct decision *)a)->dossier_id,
                  ((const struct decision *)b)->dossier_id);
}

/* Reads and checks the request; returns the decisions (sorted by id) or NULL with errors. */
static struct decision *national_decisions_read(const json_t *body, int *phase, size_t *n,
                                                json_t *errors)
{
    json_t *list = json_object_get(body, "decisions"), *ph = json_object_get(body, "phase"), *v;
    static const char *const item_members[] = {"dossier_id", "outcome", "motivation", "reference",
                                               NULL};
    char field[48];
    size_t i;

    *phase = (int)json_integer_value(ph);
    if (!json_is_integer(ph) || (*phase != 1 && *phase != 2))
        http_field_error(errors, "phase", "must be 1 or 2");
    *n = json_array_size(list);
    if (!json_is_array(list) || *n == 0 || *n > DECISIONS_MAX) {
        http_field_error(errors, "decisions", "must hold 1 to 500 decisions");
        return NULL;
    }
    struct decision *ds = xcalloc(*n, sizeof *ds);
    json_array_foreach(list, i, v)
    {
        struct decision *d = &ds[i];
        d->index = i;
        const char *id = json_string_value(json_object_get(v, "dossier_id"));
        if (id && uuid_is_valid(id)) {
            for (size_t c = 0; c < UUID_STR_LEN - 1; c++)
                d->dossier_id[c] = (char)tolower((unsigned char)id[c]);
        }
        d->outcome = json_string_value(json_object_get(v, "outcome"));
        d->motivation = json_string_value(json_object_get(v, "motivation"));
        d->reference = json_string_value(json_object_get(v, "reference"));
        snprintf(field, sizeof field, "decisions[%zu]", i);
        char prefix[56];
        snprintf(prefix, sizeof prefix, "%s.", field);
        if (json_is_object(v))
            instruction_members_check(v, prefix, item_members, errors);
        if (!d->dossier_id[0])
            http_field_error(errors, field, "dossier_id must be a dossier id");
        else if (!d->outcome || domain_decision_phase(d->outcome) != *phase)
            http_field_error(errors, field, "outcome must be a decision of this phase");
        else if (!d->reference || !*d->reference || instruction_chars(d->reference) > 200)
            http_field_error(errors, field, "reference is required (at most 200 bytes)");
        else if (d->motivation && instruction_chars(d->motivation) > 5000)
            http_field_error(errors, field, "motivation is at most 5000 bytes");
        else if (lifecycle_transition_find(domain_decision_from(*phase), d->outcome)
                     ->motivation_required &&
                 !domain_annotation_filled(json_object_get(v, "motivation")))
            http_field_error(errors, field, "a motivation is required for this outcome");
    }
    if (json_array_size(errors)) {
        free(ds);
        return NULL;
    }
    /*
     * Rows locked in id order, after the wave's row (national_decide_tx), as a single
     * transition locks them (lifecycle_move_apply): two batches, or a batch and a transition,
     * over the same dossiers wait for each other and never deadlock.
     */
    qsort(ds, *n, sizeof *ds, decision_cmp);
    for (i = 1; i < *n; i++) {
        if (!strcmp(ds[i].dossier_id, ds[i - 1].dossier_id)) {
            snprintf(field, sizeof field, "decisions[%zu]", ds[i].index);
            http_field_error(errors, field, "the dossier is decided twice in this request");
            free(ds);
            return NULL;
        }
    }
    return ds;
}

/* Checks each locked dossier; appends a field error for each that may not take its outcome. */
static enum status national_decisions_check(struct db_conn *conn, const char *wave, int phase,
                                            const struct decision *ds, size_t n,
                                            struct dossier_row *rows, long *laureates,
                                            json_t *errors)
{
    char field[48], msg[160];

    *laureates = 0;
    for (size_t i = 0; i < n; i++) {
        enum status st = store_dossier_row(conn, ds[i].dossier_id, 1, &rows[i]);
        snprintf(field, sizeof field, "decisions[%zu]", ds[i].index);
        if (st == STATUS_NOT_FOUND || (st == STATUS_OK && strcmp(rows[i].wave, wave) != 0)) {
            http_field_error(errors, field, "no such dossier in this wave");
            continue;
        }
        if (st != STATUS_OK)
            return st;
        if (strcmp(rows[i].state, domain_decision_from(phase)) != 0) {
            snprintf(msg, sizeof msg, "the dossier is %s, not %s", rows[i].state,
                     domain_decision_from(phase));
            http_field_error(errors, field, msg);
        }
        if (!strcmp(ds[i].outcome, "phase2_laureate"))
            (*laureates)++;
    }
    return STATUS_OK;
}

/*
 * One attempt: the whole batch in one transaction, or nothing: the Idempotency-Key's claim, the
 * wave's row, the dossiers' rows in id order, the moves, the answer stored under the key. A
 * replay (idem->replayed) writes nothing.
 */
static enum status national_decide_tx(struct db_conn *conn, const struct http_ctx *ctx, int phase,
                                      const struct decision *ds, size_t n, struct http_idem *idem,
                                      json_t *errors, json_t **answer, char *why, size_t whylen)
{
    const char *wave = http_param(ctx, "wave");
    struct dossier_row *rows;
    long slots = 0, taken = 0, laureates = 0;
    enum status st = db_begin(conn);

    *answer = NULL;
    if (st == STATUS_OK)
        st = http_idem_claim(conn, idem);
    if (st == STATUS_OK && idem->replayed) {
        db_rollback(conn);
        return STATUS_OK;
    }
    rows = xcalloc(n, sizeof *rows);
    if (st == STATUS_OK)
        st = lifecycle_wave_slots_lock(conn, wave, &slots, &taken);
    if (st == STATUS_NOT_FOUND)
        snprintf(why, whylen, "no wave %s", wave);
    if (st == STATUS_OK)
        st = national_decisions_check(conn, wave, phase, ds, n, rows, &laureates, errors);
    if (st == STATUS_OK && json_array_size(errors))
        st = STATUS_CONFLICT;
    if (st == STATUS_OK && taken + laureates > slots) {
        snprintf(why, whylen, "wave %s has %ld phase-2 slots, %ld taken: %ld more do not fit", wave,
                 slots, taken, laureates);
        st = STATUS_CONFLICT;
    }
    json_t *results = json_array();
    for (size_t i = 0; st == STATUS_OK && i < n; i++) {
        struct lifecycle_move mv = {.to = ds[i].outcome,
                                    .motivation = ds[i].motivation,
                                    .reference = ds[i].reference,
                                    .who = &ctx->principal};
        long long version = 0;
        st = lifecycle_move_in_tx(conn, &rows[i], &mv, &version);
        json_array_append_new(results, json_pack("{s:s, s:s, s:I}", "dossier_id", rows[i].id,
                                                 "state", mv.to, "version", (json_int_t)version));
    }
    *answer = json_pack("{s:s, s:i, s:I, s:o}", "wave", wave, "phase", phase, "decided",
                        (json_int_t)n, "results", results);
    if (st == STATUS_OK)
        st = http_idem_store_json(conn, idem, *answer);
    st = db_end(conn, st);
    if (st != STATUS_OK) {
        json_decref(*answer);
        *answer = NULL;
    }
    for (size_t i = 0; i < n; i++)
        store_dossier_row_clear(&rows[i]);
    free(rows);
    return st;
}

int national_handle_decisions(struct http_ctx *ctx)
{
    struct http_idem idem;
    json_t *errors, *answer = NULL;
    struct db_conn *conn;
    char why[200] = "";
    int phase, rc;
    size_t n;

    static const char *const members[] = {"phase", "decisions", NULL};

    if (!instruction_body_closed(ctx, members, &rc) ||
        !http_idem_read(ctx, &idem, HTTP_IDEM_ID_METHOD_PATH, 200, &rc))
        return rc;
    errors = json_array();
    struct decision *ds = national_decisions_read(ctx->body, &phase, &n, errors);
    if (!ds)
        return http_reply_problem_fields(ctx, STATUS_INVALID, errors, "invalid decisions");
    enum status st = db_acquire(instruction_db(ctx), &conn);
    if (st != STATUS_OK) {
        free(ds);
        json_decref(errors);
        return http_reply_problem(ctx, st, "no decision was recorded");
    }
    for (int attempt = 0; attempt < DECISION_TRIES; attempt++) {
        json_array_clear(errors);
        st = national_decide_tx(conn, ctx, phase, ds, n, &idem, errors, &answer, why, sizeof why);
        if (st != STATUS_RETRY)
            break; /* a deadlock or serialization failure: the batch runs again */
    }
    db_release(instruction_db(ctx), conn);
    free(ds);
    if (st == STATUS_OK && idem.replayed)
        rc = http_idem_reply_json(ctx, &idem, 0);
    else if (idem.refused != STATUS_OK)
        rc = http_idem_reply_refusal(ctx, &idem);
    else if (st == STATUS_OK)
        rc = http_reply_json(ctx, 200, answer);
    else if (json_array_size(errors)) {
        rc = http_reply_problem_fields(ctx, STATUS_CONFLICT, json_incref(errors),
                                       "no decision was recorded: some dossiers may not take "
                                       "their outcome");
    } else
        rc = http_reply_problem(ctx, st, "%s", why[0] ? why : "no decision was recorded");
    json_decref(errors);
    http_idem_clear(&idem);
    return rc;
}
