/* scoring (instruction): individual reviews against a wave's grid, and the consolidated score. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "domain.h"
#include "http_idem.h"
#include "instruction.h"

#define SCORING_MAX_REVIEWS 64

DB_STMT(scoring_grid,
        "SELECT wave, version, criteria FROM grid WHERE phase = $2::int AND wave IN ($1, '*')"
        " ORDER BY wave = '*', version DESC LIMIT 1");
DB_STMT(scoring_upsert,
        "INSERT INTO review (id, dossier_id, phase, reviewer, grid_wave, grid_version, scores,"
        " total, comment) VALUES ($1, $2, $3::int, $4, $5, $6::int, $7::jsonb, $8::int, $9)"
        " ON CONFLICT (dossier_id, phase, reviewer) DO UPDATE SET grid_wave = EXCLUDED.grid_wave,"
        " grid_version = EXCLUDED.grid_version, scores = EXCLUDED.scores, total = EXCLUDED.total,"
        " comment = EXCLUDED.comment, at = now() RETURNING id");
DB_STMT(scoring_totals, "SELECT total FROM review WHERE dossier_id = $1 AND phase = $2::int"
                        " ORDER BY at LIMIT 64");
DB_STMT(scoring_set1, "UPDATE dossier SET score1 = $2::int, spread1 = $3::int WHERE id = $1");
DB_STMT(scoring_set2, "UPDATE dossier SET score2 = $2::int, spread2 = $3::int WHERE id = $1");

struct scoring_arg {
    int phase;
    const json_t *scores;
    const char *comment, *reviewer;
    struct http_idem *idem;
    json_t *out; /* the answer, filled on success */
};

/* Recomputes the dossier's consolidated score of the phase from its reviews. */
static enum status scoring_consolidate(struct db_conn *conn, const char *id, int phase, int *mean,
                                       int *spread, size_t *n)
{
    char ph[4], m[16], s[16];
    int totals[SCORING_MAX_REVIEWS];
    PGresult *r;

    snprintf(ph, sizeof ph, "%d", phase);
    const char *params[] = {id, ph};
    enum status st = db_exec(conn, &scoring_totals, 2, params, &r);
    if (st != STATUS_OK)
        return st;
    *n = (size_t)PQntuples(r);
    for (size_t i = 0; i < *n; i++)
        totals[i] = (int)strtol(PQgetvalue(r, (int)i, 0), NULL, 10);
    PQclear(r);
    domain_consolidate(totals, *n, mean, spread);
    snprintf(m, sizeof m, "%d", *mean);
    snprintf(s, sizeof s, "%d", *spread);
    const char *set[] = {id, m, s};
    return db_exec(conn, phase == 2 ? &scoring_set2 : &scoring_set1, 3, set, NULL);
}

static enum status scoring_write(struct db_conn *conn, const struct dossier_row *d, void *arg,
                                 char *why, size_t whylen)
{
    struct scoring_arg *a = arg;
    char ph[4], total_s[16], rid[UUID_STR_LEN];
    int total, mean, spread;
    size_t n;
    PGresult *r;

    snprintf(ph, sizeof ph, "%d", a->phase);
    const char *g[] = {d->wave, ph};
    enum status st = http_idem_claim(conn, a->idem);
    if (st != STATUS_OK)
        return st;
    if (a->idem->replayed)
        return STATUS_CONFLICT; /* rolls back: a replay writes nothing, the handler sees why */
    st = db_exec(conn, &scoring_grid, 2, g, &r);
    if (st != STATUS_OK)
        return st;
    if (PQntuples(r) == 0) {
        PQclear(r);
        snprintf(why, whylen, "no scoring grid for wave %s, phase %d", d->wave, a->phase);
        return STATUS_UNPROCESSABLE;
    }
    json_t *criteria = json_loads(PQgetvalue(r, 0, 2), 0, NULL);
    char gwave[40], gversion[16];
    snprintf(gwave, sizeof gwave, "%s", PQgetvalue(r, 0, 0));
    snprintf(gversion, sizeof gversion, "%s", PQgetvalue(r, 0, 1));
    PQclear(r);
    st = domain_review_total(criteria, a->scores, &total, why, whylen);
    json_decref(criteria);
    if (st != STATUS_OK)
        return st;
    uuid_new(rid);
    snprintf(total_s, sizeof total_s, "%d", total);
    char *scores = json_dumps(a->scores, JSON_COMPACT);
    const char *params[] = {rid,      d->id,  ph,      a->reviewer, gwave,
                            gversion, scores, total_s, a->comment};
    st = db_exec(conn, &scoring_upsert, 9, params, &r);
    free(scores);
    if (st != STATUS_OK)
        return st;
    snprintf(rid, sizeof rid, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    st = scoring_consolidate(conn, d->id, a->phase, &mean, &spread, &n);
    if (st != STATUS_OK)
        return st;
    a->out =
        json_pack("{s:s, s:s, s:i, s:s, s:{s:s, s:i}, s:O, s:i, s:{s:i, s:i, s:i}}", "id", rid,
                  "dossier_id", d->id, "phase", a->phase, "reviewer", a->reviewer, "grid", "wave",
                  gwave, "version", (int)strtol(gversion, NULL, 10), "scores", a->scores, "total",
                  total, "consolidated", "score", mean, "spread", spread, "reviews", (int)n);
    return http_idem_store_json(conn, a->idem, a->out);
}

int scoring_handle_review(struct http_ctx *ctx)
{
    struct scoring_arg a = {0};
    struct http_idem idem;
    json_t *phase = json_object_get(ctx->body, "phase"), *errors;
    int bad = 0, rc;
    struct db_conn *conn;
    char why[200];

    static const char *const members[] = {"phase", "scores", "comment", NULL};

    if (!instruction_body_closed(ctx, members, &rc) ||
        !http_idem_read(ctx, &idem, HTTP_IDEM_ID_METHOD_PATH, 201, &rc))
        return rc;
    errors = json_array();
    a.idem = &idem;
    a.phase = (int)json_integer_value(phase);
    if (!json_is_integer(phase) || (a.phase != 1 && a.phase != 2))
        http_field_error(errors, "phase", "must be 1 or 2");
    a.scores = json_object_get(ctx->body, "scores");
    if (!json_is_object(a.scores))
        http_field_error(errors, "scores", "must be an object of criterion scores");
    a.comment = instruction_body_str(ctx, "comment", &bad);
    if (bad || (a.comment && instruction_chars(a.comment) > 5000))
        http_field_error(errors, "comment", "must be a string of at most 5000 bytes");
    if (json_array_size(errors))
        return http_reply_problem_fields(ctx, STATUS_INVALID, errors, "invalid review");
    json_decref(errors);
    a.reviewer = ctx->principal.key_id;
    enum status st = db_acquire(instruction_db(ctx), &conn);
    if (st != STATUS_OK)
        return instruction_reply_dossier_missing(ctx, st);
    st = store_dossier_change(conn, &ctx->principal, http_param(ctx, "id"), NULL, scoring_write, &a,
                              why, sizeof why);
    db_release(instruction_db(ctx), conn);
    if (idem.replayed)
        rc = http_idem_reply_json(ctx, &idem, 0);
    else if (idem.refused != STATUS_OK)
        rc = http_idem_reply_refusal(ctx, &idem);
    else if (st == STATUS_OK)
        rc = http_reply_json(ctx, 201, json_incref(a.out));
    else if (st == STATUS_NOT_FOUND && !why[0])
        rc = instruction_reply_dossier_missing(ctx, st);
    else
        rc = http_reply_problem(ctx, st, "%s", why[0] ? why : "the review was refused");
    json_decref(a.out);
    http_idem_clear(&idem);
    return rc;
}
