/* stats (instruction): the funnel, processing times and the CSV export, for dashboards. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "domain.h"
#include "instruction.h"

#define EXPORT_MAX_ROWS 100000
#define DELAY_MAX_ROWS 200000

/* The counts of the funnel for one group of rows (one region, or the whole wave). */
#define FUNNEL_COUNTS                                                                              \
    "count(*) AS deposited,"                                                                       \
    " count(*) FILTER (WHERE d.snapshot->>'eligibility' = 'eligible') AS eligible,"                \
    " count(*) FILTER (WHERE d.state IN ('regional_review', 'correction_requested',"               \
    "   'awaiting_decision')) AS in_review,"                                                       \
    " count(*) FILTER (WHERE d.state IN ('phase1_laureate', 'phase2_invited', 'phase2_applied',"   \
    "   'phase2_review', 'phase2_laureate', 'phase2_not_selected')) AS phase1_laureates,"          \
    " count(*) FILTER (WHERE d.state IN ('phase2_invited', 'phase2_applied', 'phase2_review',"     \
    "   'phase2_laureate', 'phase2_not_selected')) AS phase2_invited,"                             \
    " count(*) FILTER (WHERE d.state = 'phase2_laureate') AS phase2_laureates,"                    \
    " count(*) FILTER (WHERE d.state = 'refused') AS refused,"                                     \
    " count(*) FILTER (WHERE d.state = 'closed') AS closed"

DB_STMT(stats_funnel,
        "SELECT region, row_to_json(f)::text FROM (SELECT d.region, " FUNNEL_COUNTS
        " FROM dossier d WHERE d.wave = $1 AND ($2::text[] IS NULL OR d.region = ANY($2::text[]))"
        " GROUP BY GROUPING SETS ((d.region), ())) f ORDER BY region NULLS FIRST");
DB_STMT(
    stats_delays,
    "SELECT coalesce(d.region, ''), (extract(epoch FROM d.decided_at - d.deposited_at))::bigint,"
    " coalesce(w.target_delay_days, 42) FROM dossier d LEFT JOIN wave w ON w.id = d.wave"
    " WHERE d.wave = $1 AND d.decided_at IS NOT NULL"
    " AND ($2::text[] IS NULL OR d.region = ANY($2::text[]))"
    " ORDER BY d.region, 2 LIMIT 200000");
DB_STMT(stats_overdue,
        "SELECT count(*), coalesce(max(w.target_delay_days), 42) FROM dossier d"
        " LEFT JOIN wave w ON w.id = d.wave WHERE d.wave = $1 AND NOT d.withdrawn"
        " AND d.decided_at IS NULL AND ($2::text[] IS NULL OR d.region = ANY($2::text[]))"
        " AND d.deposited_at + make_interval(days => coalesce(w.target_delay_days, 42)) < now()");
DB_STMT(stats_export,
        "SELECT d.id::text, d.wave, d.region, d.title, d.state, d.group_id, d.opinion,"
        " d.score1::text, d.spread1::text, d.score2::text, d.spread2::text,"
        " array_to_string(d.labels, ','),"
        " to_char(d.deposited_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),"
        " to_char(d.decided_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"
        " FROM dossier d WHERE ($1::text IS NULL OR d.wave = $1)"
        " AND ($2::text[] IS NULL OR d.region = ANY($2::text[]))"
        " AND ($3::text IS NULL OR d.region = $3) AND ($4::text IS NULL OR d.state = $4)"
        " AND ($5::text IS NULL OR $5 = ANY(d.labels)) ORDER BY d.id LIMIT 100000");

static const char *stats_wave(struct http_ctx *ctx, int *rc)
{
    const char *wave = http_query(ctx, "wave");

    if (wave && *wave && instruction_chars(wave) <= 32)
        return wave;
    json_t *errors = json_array();
    http_field_error(errors, "wave", "is required");
    *rc = http_reply_problem_fields(ctx, STATUS_INVALID, errors, "a wave is required");
    return NULL;
}

/* Runs one statement with (wave, scope regions) on a pooled connection. */
static enum status stats_query(struct http_ctx *ctx, struct db_stmt *stmt, const char *wave,
                               PGresult **r)
{
    char *regions = store_scope_regions(&ctx->principal);
    const char *params[] = {wave, regions};
    struct db_conn *conn;
    enum status st = db_acquire(instruction_db(ctx), &conn);

    if (st == STATUS_OK) {
        st = db_exec(conn, stmt, 2, params, r);
        db_release(instruction_db(ctx), conn);
    }
    free(regions);
    return st;
}

int national_handle_funnel(struct http_ctx *ctx)
{
    PGresult *r;
    int rc;
    const char *wave = stats_wave(ctx, &rc);

    if (!wave)
        return rc;
    enum status st = stats_query(ctx, &stats_funnel, wave, &r);
    if (st != STATUS_OK)
        return http_reply_problem(ctx, st, "the funnel could not be counted");
    json_t *out = NULL, *by_region = json_object();
    for (int i = 0; i < PQntuples(r); i++) {
        json_t *counts = json_loads(PQgetvalue(r, i, 1), 0, NULL);
        json_object_del(counts, "region");
        if (PQgetisnull(r, i, 0) && !out)
            out = counts; /* the grand total comes first (NULLS FIRST) */
        else if (PQgetisnull(r, i, 0))
            json_decref(counts); /* dossiers without a region count in the total only */
        else
            json_object_set_new(by_region, PQgetvalue(r, i, 0), counts);
    }
    PQclear(r);
    if (!out)
        out = json_pack("{s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i}", "deposited", 0, "eligible", 0,
                        "in_review", 0, "phase1_laureates", 0, "phase2_invited", 0,
                        "phase2_laureates", 0, "refused", 0, "closed", 0);
    json_object_set_new(out, "wave", json_string(wave));
    json_object_set_new(out, "by_region", by_region);
    return http_reply_json(ctx, 200, out);
}

/* p50 and p90 in days (one decimal is not money: integer hours / 24 kept as integer days). */
static json_t *stats_delay_json(const int64_t *secs, size_t n)
{
    return json_pack("{s:I, s:I, s:I}", "decided", (json_int_t)n, "p50_days",
                     (json_int_t)(n ? domain_percentile(secs, n, 50) / 86400 : -1), "p90_days",
                     (json_int_t)(n ? domain_percentile(secs, n, 90) / 86400 : -1));
}

int national_handle_delays(struct http_ctx *ctx)
{
    PGresult *r, *o;
    int rc;
    const char *wave = stats_wave(ctx, &rc);

    if (!wave)
        return rc;
    enum status st = stats_query(ctx, &stats_delays, wave, &r);
    if (st == STATUS_OK) {
        st = stats_query(ctx, &stats_overdue, wave, &o);
        if (st != STATUS_OK)
            PQclear(r);
    }
    if (st != STATUS_OK)
        return http_reply_problem(ctx, st, "the processing times could not be read");
    size_t n = (size_t)PQntuples(r), start = 0;
    int64_t *all = xcalloc(n + 1, sizeof *all), *reg = xcalloc(n + 1, sizeof *reg);
    json_t *by_region = json_object();
    for (size_t i = 0; i < n; i++) {
        all[i] = strtoll(PQgetvalue(r, (int)i, 1), NULL, 10);
        reg[i - start] = all[i];
        if (i + 1 == n || strcmp(PQgetvalue(r, (int)i, 0), PQgetvalue(r, (int)i + 1, 0)) != 0) {
            /* Rows come by region, then by delay: each region's run is sorted already. */
            if (PQgetvalue(r, (int)i, 0)[0])
                json_object_set_new(by_region, PQgetvalue(r, (int)i, 0),
                                    stats_delay_json(reg, i + 1 - start));
            start = i + 1;
        }
    }
    PQclear(r);
    qsort(all, n, sizeof *all, domain_int64_cmp);
    json_t *out = stats_delay_json(all, n);
    free(all);
    free(reg);
    json_object_set_new(out, "wave", json_string(wave));
    json_object_set_new(out, "overdue", json_integer(strtoll(PQgetvalue(o, 0, 0), NULL, 10)));
    json_object_set_new(out, "target_delay_days",
                        json_integer(strtoll(PQgetvalue(o, 0, 1), NULL, 10)));
    json_object_set_new(out, "by_region", by_region);
    PQclear(o);
    return http_reply_json(ctx, 200, out);
}

int national_handle_export(struct http_ctx *ctx)
{
    static const char header[] = "id;wave;region;title;state;group;regional_opinion;score1;"
                                 "spread1;score2;spread2;labels;deposited_at;decided_at\r\n";
    char *regions = store_scope_regions(&ctx->principal);
    const char *state = http_query(ctx, "state");
    struct db_conn *conn;
    PGresult *r;
    struct buf out;

    if (ctx->principal.role == ROLE_DASHBOARD) {
        free(regions);
        return http_reply_problem(ctx, STATUS_NOT_FOUND, "no such resource: %s",
                                  ctx->req->url_path);
    }
    if (state && !domain_state_known(state)) {
        free(regions);
        return http_reply_problem(ctx, STATUS_INVALID, "state '%s' is not a state", state);
    }
    const char *params[] = {http_query(ctx, "wave"), regions, http_query(ctx, "region"), state,
                            http_query(ctx, "label")};
    enum status st = db_acquire(instruction_db(ctx), &conn);
    if (st == STATUS_OK) {
        st = db_exec(conn, &stats_export, 5, params, &r);
        db_release(instruction_db(ctx), conn);
    }
    free(regions);
    if (st != STATUS_OK)
        return http_reply_problem(ctx, st, "the export could not be read");
    buf_init(&out, 0);
    buf_append(&out, header, sizeof header - 1);
    for (int i = 0; i < PQntuples(r); i++) {
        for (int c = 0; c < PQnfields(r); c++) {
            if (c > 0)
                buf_append(&out, ";", 1);
            domain_csv_field(&out, PQgetisnull(r, i, c) ? NULL : PQgetvalue(r, i, c));
        }
        buf_append(&out, "\r\n", 2);
    }
    PQclear(r);
    http_set_header(ctx, "Content-Disposition", "attachment; filename=\"dossiers.csv\"");
    int rc = http_reply_raw(ctx, 200, "text/csv; charset=utf-8", out.data, out.len);
    buf_free(&out);
    return rc;
}
