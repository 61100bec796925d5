/* events (instruction): applies submission's dossier and wave events to instruction's tables. */
#include "events.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "lifecycle.h"
#include "log.h"
#include "outbox.h"
#include "pgarray.h"
#include "uuid.h"

/* The content a carrier edits: the document without what changes with every fetch. */
#define EVENTS_CONTENT_HASH_OF(DOC)                                                                \
    "md5((" DOC " - ARRAY['state', 'version', 'updated_at', 'ds_updated_at', 'eligibility',"       \
    " 'checks', 'rules_version'])::text)"
#define EVENTS_CONTENT_HASH EVENTS_CONTENT_HASH_OF("$6::jsonb")
/* The instruction group of a region: its first routing rule's, or the default group. */
#define EVENTS_GROUP_OF(REGION)                                                                    \
    "coalesce((SELECT group_id FROM routing_rule WHERE region = " REGION                           \
    " ORDER BY priority, id LIMIT 1), 'default')"
/* A newer submission version (or an event without one) replaces what we hold. */
#define EVENTS_FRESH "(EXCLUDED.doc_version = 0 OR EXCLUDED.doc_version > dossier.doc_version)"

/*
 * The projection's upsert; a new dossier, routed by its insert, gets its assignment in the same
 * statement ($12 and $13: the reasons of the default group and of a region's rule).
 */
/* What a newer version changes in the projection's row; an older one only counts as stale. */
#define EVENTS_UPSERT_SET                                                                          \
    " ON CONFLICT (id) DO UPDATE SET events_applied = dossier.events_applied + 1,"                 \
    " last_event_id = EXCLUDED.last_event_id, updated_at = now(),"                                 \
    " stale_events = dossier.stale_events + CASE WHEN " EVENTS_FRESH " THEN 0 ELSE 1 END,"         \
    " region = CASE WHEN " EVENTS_FRESH " THEN EXCLUDED.region ELSE dossier.region END,"           \
    " wave = CASE WHEN " EVENTS_FRESH " THEN EXCLUDED.wave ELSE dossier.wave END,"                 \
    " title = CASE WHEN " EVENTS_FRESH " THEN EXCLUDED.title ELSE dossier.title END,"              \
    " source_state = CASE WHEN " EVENTS_FRESH " THEN EXCLUDED.source_state"                        \
    "   ELSE dossier.source_state END,"                                                            \
    " snapshot = CASE WHEN " EVENTS_FRESH " THEN EXCLUDED.snapshot ELSE dossier.snapshot END,"     \
    " content_hash = CASE WHEN " EVENTS_FRESH " THEN EXCLUDED.content_hash"                        \
    "   ELSE dossier.content_hash END,"                                                            \
    " ds_number = coalesce(EXCLUDED.ds_number, dossier.ds_number),"                                \
    " withdrawn = dossier.withdrawn OR (" EVENTS_FRESH " AND EXCLUDED.withdrawn),"                 \
    " doc_version = greatest(dossier.doc_version, EXCLUDED.doc_version)"                           \
    " RETURNING id, (xmax = 0) OR group_id IS NULL AS route, state,"                               \
    " content_hash IS DISTINCT FROM correction_hash AS edited, withdrawn,"                         \
    " xmax = 0 AS inserted, group_id),"                                                            \
    " a AS (INSERT INTO assignment (dossier_id, group_id, actor, reason)"                          \
    " SELECT id, group_id, 'system', CASE WHEN group_id = 'default' THEN $12"                      \
    " ELSE $13 END FROM up WHERE inserted AND group_id IS NOT NULL)"                               \
    " SELECT route, state, edited, withdrawn, inserted, group_id, id FROM up"

/*
 * The projection's upsert; a new dossier, routed by its insert, gets its assignment in the same
 * statement ($12 and $13: the reasons of the default group and of a region's rule).
 */
DB_STMT(events_upsert_dossier,
        "WITH up AS (INSERT INTO dossier (id, region, wave, title, source_state, snapshot,"
        " events_applied, last_event_id, doc_version, content_hash, ds_number, withdrawn,"
        " deposited_at, group_id)"
        " VALUES ($1, $2, $3, $4, $5, $6::jsonb, 1, $7, $8::bigint, " EVENTS_CONTENT_HASH ","
        " $9::bigint, $10::boolean, coalesce($11::timestamptz, now()), " EVENTS_GROUP_OF(
            "$2") ")" EVENTS_UPSERT_SET);
/*
 * The same for many dossiers (each once), $1 to $11 arrays of the parameters above. Each
 * snapshot is parsed once (the row's jsonb and its content hash both read x.doc, which the
 * materialized CTE computes once), and the groups come from one pass over the routing rules
 * (the first rule of each region) rather than one subquery per row: 261 ms instead of 564 ms
 * for these expressions over 8 000 deposits' snapshots (psql, the statement's SELECT alone).
 */
DB_STMT(events_upsert_many,
        "WITH x AS MATERIALIZED (SELECT u.*, u.snapshot::jsonb AS doc,"
        " coalesce(r.group_id, 'default') AS gid FROM unnest($1::uuid[], $2::text[], $3::text[],"
        " $4::text[], $5::text[], $6::text[], $7::uuid[], $8::bigint[], $9::bigint[],"
        " $10::boolean[], $11::text[]) AS u(id, region, wave, title, source_state, snapshot,"
        " last_event_id, doc_version, ds_number, withdrawn, deposited_at)"
        " LEFT JOIN (SELECT DISTINCT ON (region) region, group_id FROM routing_rule"
        " ORDER BY region, priority, id) r ON r.region = u.region),"
        " up AS (INSERT INTO dossier (id, region, wave, title, source_state, snapshot,"
        " events_applied, last_event_id, doc_version, content_hash, ds_number, withdrawn,"
        " deposited_at, group_id)"
        " SELECT id, region, wave, title, source_state, doc, 1, last_event_id, "
        "doc_version, " EVENTS_CONTENT_HASH_OF(
            "doc") ", ds_number, withdrawn,"
                   " coalesce(deposited_at::timestamptz, now()), gid FROM x" EVENTS_UPSERT_SET);
DB_STMT(events_route, "WITH g AS (SELECT " EVENTS_GROUP_OF(
                          "$2") " AS id)"
                                " UPDATE dossier SET group_id = g.id FROM g WHERE dossier.id = $1"
                                " RETURNING g.id");
DB_STMT(events_group_set, "UPDATE dossier SET group_id = $2 WHERE id = $1");
DB_STMT(events_assignment, "INSERT INTO assignment (dossier_id, group_id, actor, reason)"
                           " VALUES ($1, $2, $3, $4)");
DB_STMT(events_wave_upsert,
        "INSERT INTO wave (id, label, phase2_slots, doc) VALUES ($1, $2, $3::int, $4::jsonb)"
        " ON CONFLICT (id) DO UPDATE SET label = EXCLUDED.label,"
        " phase2_slots = EXCLUDED.phase2_slots, doc = EXCLUDED.doc, updated_at = now()");

static const char *events_str(json_t *obj, const char *key)
{
    return json_string_value(json_object_get(obj, key)); /* borrowed from the event */
}

#define EVENTS_WHY_DEFAULT "no rule: the default group"
#define EVENTS_WHY_RULE "routing rule of the region"
#define EVENTS_ROUTED_WHY(group) (strcmp(group, "default") ? EVENTS_WHY_RULE : EVENTS_WHY_DEFAULT)

/* Publishes dossier.routed, in the open transaction. */
static enum status events_publish_routed(struct db_conn *conn, const char *id, const char *region,
                                         const char *actor, const char *group, const char *why)
{
    json_t *data = json_pack("{s:s, s:s?, s:s, s:s, s:s}", "dossier_id", id, "region", region,
                             "group", group, "actor", actor, "reason", why);
    return outbox_append(conn, INSTRUCTION_TOPIC, LIFECYCLE_SOURCE, "dossier.routed", id, data,
                         NULL);
}

/* Keeps the assignment of id to group and publishes dossier.routed, in the open transaction. */
static enum status events_routed(struct db_conn *conn, const char *id, const char *region,
                                 const char *actor, const char *group, const char *why)
{
    const char *a[] = {id, group, actor, why};
    enum status st = db_exec(conn, &events_assignment, 4, a, NULL);

    return st == STATUS_OK ? events_publish_routed(conn, id, region, actor, group, why) : st;
}

enum status events_route_dossier(struct db_conn *conn, const char *id, const char *region,
                                 const char *actor, const char *reason, const char *group)
{
    char chosen[64];
    const char *params[] = {id, region};
    PGresult *r;
    enum status st;

    if (group) {
        const char *set[] = {id, group};
        st = db_exec(conn, &events_group_set, 2, set, NULL);
        return st == STATUS_OK ? events_routed(conn, id, region, actor, group, reason) : st;
    }
    st = db_exec(conn, &events_route, 2, params, &r);
    if (st != STATUS_OK)
        return st;
    if (PQntuples(r) == 0) {
        PQclear(r);
        return STATUS_NOT_FOUND;
    }
    snprintf(chosen, sizeof chosen, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    return events_routed(conn, id, region, actor, chosen, EVENTS_ROUTED_WHY(chosen));
}

/* The projection's own moves: a withdrawal leaves every queue, a carrier's edit ends a
 * correction. */
static enum status events_follow_up(struct db_conn *conn, const char *id, const char *type,
                                    int edited)
{
    struct dossier_row d;
    enum status st = store_dossier_row(conn, id, 1, &d);
    struct lifecycle_move mv = {0};
    long long version;

    if (st != STATUS_OK)
        return st;
    if (d.withdrawn && strcmp(d.state, "withdrawn") != 0)
        mv.to = "withdrawn";
    else if (edited && !strcmp(d.state, "correction_requested") && !strcmp(type, "dossier.updated"))
        mv.to = "received";
    if (mv.to) {
        mv.motivation = !strcmp(mv.to, "withdrawn") ? "withdrawn on DS" : "the carrier's edit";
        st = lifecycle_move_in_tx(conn, &d, &mv, &version);
    }
    store_dossier_row_clear(&d);
    return st;
}

/* The upsert's parameters of a dossier event; strings borrowed from ev, but snapshot (to free). */
struct events_params {
    const char *p[13];
    char version[24], ds_number[24];
    char *snapshot;
};

/* STATUS_INVALID when ev is no dossier event the projection can take. */
static enum status events_params_make(const struct cloudevent *ev, struct events_params *e)
{
    json_t *dossier = json_object_get(ev->data, "dossier");

    if (!json_is_object(dossier) || !ev->subject || !uuid_is_valid(ev->subject))
        return STATUS_INVALID;
    int withdrawn = strcmp(ev->type, "dossier.withdrawn") == 0;
    const char *state = withdrawn ? "withdrawn" : events_str(dossier, "state");
    json_t *dsn = json_object_get(dossier, "ds_number");
    snprintf(e->version, sizeof e->version, "%lld",
             (long long)json_integer_value(json_object_get(dossier, "version")));
    snprintf(e->ds_number, sizeof e->ds_number, "%lld", (long long)json_integer_value(dsn));
    e->snapshot = json_dumps(dossier, JSON_COMPACT);
    const char *p[13] = {ev->subject,
                         events_str(dossier, "region"),
                         events_str(dossier, "wave"),
                         events_str(dossier, "title"),
                         state ? state : "deposited",
                         e->snapshot,
                         ev->id,
                         e->version,
                         json_is_integer(dsn) ? e->ds_number : NULL,
                         withdrawn ? "true" : "false",
                         events_str(dossier, "deposited_at"),
                         EVENTS_WHY_DEFAULT,
                         EVENTS_WHY_RULE};
    memcpy(e->p, p, sizeof p);
    return STATUS_OK;
}

/* What the upsert said of one dossier. */
struct events_upserted {
    int route, edited, follow, inserted;
    char group[64];
};

static void events_upserted_read(PGresult *r, int row, struct events_upserted *u)
{
    u->route = PQgetvalue(r, row, 0)[0] == 't';
    u->edited = PQgetvalue(r, row, 2)[0] == 't';
    u->follow =
        PQgetvalue(r, row, 3)[0] == 't' || !strcmp(PQgetvalue(r, row, 1), "correction_requested");
    /* a new dossier was routed and assigned by its insert: only the event is left */
    u->inserted = PQgetvalue(r, row, 4)[0] == 't' && !PQgetisnull(r, row, 5);
    snprintf(u->group, sizeof u->group, "%s", PQgetvalue(r, row, 5));
}

/*
 * The upserts a batch made at once (events_prepare), for its handlers, by event id: per thread,
 * as each member of the inbox runs its own batches; emptied when the batch is over.
 */
#define EVENTS_PREPARED_MAX 64
static _Thread_local struct {
    char event_id[40];
    struct events_upserted u;
} events_prepared[EVENTS_PREPARED_MAX];
static _Thread_local size_t events_nprepared;

/* Takes the batch's upsert of event id into *u; 0 when there is none. */
static int events_prepared_take(const char *id, struct events_upserted *u)
{
    for (size_t i = 0; i < events_nprepared; i++) {
        if (events_prepared[i].event_id[0] && !strcmp(events_prepared[i].event_id, id)) {
            *u = events_prepared[i].u;
            events_prepared[i].event_id[0] = '\0'; /* once */
            return 1;
        }
    }
    return 0;
}

static enum status events_dossier(struct db_conn *conn, const struct cloudevent *ev)
{
    json_t *dossier = json_object_get(ev->data, "dossier");
    struct events_upserted u;
    enum status st = STATUS_OK;

    if (!events_prepared_take(ev->id, &u)) {
        struct events_params e;
        PGresult *r;
        if ((st = events_params_make(ev, &e)) != STATUS_OK)
            return st;
        st = db_exec(conn, &events_upsert_dossier, 13, e.p, &r);
        free(e.snapshot);
        if (st != STATUS_OK)
            return st;
        events_upserted_read(r, 0, &u);
        PQclear(r);
    }
    if (u.route && u.inserted)
        st = events_publish_routed(conn, ev->subject, events_str(dossier, "region"), "system",
                                   u.group, EVENTS_ROUTED_WHY(u.group));
    else if (u.route)
        st = events_route_dossier(conn, ev->subject, events_str(dossier, "region"), "system", NULL,
                                  NULL);
    if (st == STATUS_OK && u.follow)
        st = events_follow_up(conn, ev->subject, ev->type, u.edited);
    if (st == STATUS_OK)
        log_event(LOG_DEBUG, "dossier.projected", "{s:s, s:s}", "dossier", ev->subject, "type",
                  ev->type);
    return st;
}

static enum status events_route_dossier_event(struct db_conn *conn, const struct cloudevent *ev,
                                              void *ud);

/* 1 for the types events_dossier applies: those the route table gives to it. */
static int events_is_dossier(const char *type)
{
    for (size_t i = 0; i < instruction_event_nroutes; i++)
        if (!strcmp(instruction_event_routes[i].type, type))
            return instruction_event_routes[i].handler == events_route_dossier_event;
    return 0;
}

/* 1 when another dossier event of evs[0..n) has the subject of evs[i]. */
static int events_subject_repeats(const struct cloudevent *const *evs, size_t n, size_t i)
{
    for (size_t j = 0; j < n; j++)
        if (j != i && events_is_dossier(evs[j]->type) && evs[j]->subject && evs[i]->subject &&
            !strcmp(evs[j]->subject, evs[i]->subject))
            return 1;
    return 0;
}

enum status events_prepare(struct db_conn *conn, const struct cloudevent *const *evs, size_t n,
                           void *ud)
{
    struct pgarray cols[11];
    struct events_params e[EVENTS_PREPARED_MAX];
    size_t k = 0;
    PGresult *r;

    (void)ud;
    events_nprepared = 0;
    if (n == 0)
        return STATUS_OK;
    /*
     * The dossier events whose dossier comes once in the batch, in one statement (one upsert
     * cannot touch a row twice); the others' handlers run their own, in the batch's order.
     */
    for (size_t i = 0; i < n && k < EVENTS_PREPARED_MAX; i++) {
        if (!events_is_dossier(evs[i]->type) || events_subject_repeats(evs, n, i) ||
            events_params_make(evs[i], &e[k]) != STATUS_OK)
            continue;
        snprintf(events_prepared[k].event_id, sizeof events_prepared[k].event_id, "%s", evs[i]->id);
        k++;
    }
    if (k < 2) { /* one alone gains nothing */
        for (size_t i = 0; i < k; i++)
            free(e[i].snapshot);
        return STATUS_OK;
    }
    for (int c = 0; c < 11; c++) {
        pgarray_init(&cols[c]);
        for (size_t i = 0; i < k; i++)
            pgarray_add_text(&cols[c], e[i].p[c]);
    }
    const char *params[13];
    for (int c = 0; c < 11; c++)
        params[c] = pgarray_text(&cols[c]);
    params[11] = EVENTS_WHY_DEFAULT;
    params[12] = EVENTS_WHY_RULE;
    enum status st = db_exec(conn, &events_upsert_many, 13, params, &r);
    for (int c = 0; c < 11; c++)
        pgarray_free(&cols[c]);
    for (size_t i = 0; i < k; i++)
        free(e[i].snapshot);
    if (st != STATUS_OK)
        return st;
    /* each row by its dossier's id: the subjects are distinct */
    for (int row = 0; row < PQntuples(r); row++) {
        const char *id = PQgetvalue(r, row, 6);
        for (size_t i = 0; i < k; i++) {
            if (!strcasecmp(e[i].p[0], id)) {
                events_upserted_read(r, row, &events_prepared[i].u);
                break;
            }
        }
    }
    st = (size_t)PQntuples(r) == k ? STATUS_OK : STATUS_INTERNAL;
    PQclear(r);
    if (st == STATUS_OK)
        events_nprepared = k;
    return st;
}

DB_STMT(events_wave_delay, "UPDATE wave SET target_delay_days = $2::int WHERE id = $1");
DB_STMT(events_grid_add,
        "INSERT INTO grid (wave, phase, version, criteria) SELECT $1, $2::int,"
        " coalesce(max(version), 0) + 1, $3::jsonb FROM grid WHERE wave = $1 AND phase = $2::int"
        " HAVING coalesce((array_agg(criteria ORDER BY version DESC))[1] <> $3::jsonb, true)");
DB_STMT(events_catalogue_clear, "DELETE FROM annotation_def WHERE wave = $1");
DB_STMT(events_catalogue_add, "INSERT INTO annotation_def (wave, key, type, mandatory, label)"
                              " VALUES ($1, $2, $3, $4::boolean, $5)");

/*
 * The wave's instruction parameters, when its owner sends them (optional members of the wave):
 * target_delay_days, grids {"1": [criteria], "2": [...]} (a changed grid is a new version)
 * and annotations [{key, type, mandatory, label}] (the wave's catalogue, replaced).
 */
static enum status events_wave_parameters(struct db_conn *conn, const char *id, json_t *wave)
{
    json_t *delay = json_object_get(wave, "target_delay_days");
    json_t *grids = json_object_get(wave, "grids"), *annotations, *a;
    char text[24];
    enum status st = STATUS_OK;
    size_t i;

    if (json_is_integer(delay)) {
        snprintf(text, sizeof text, "%lld", (long long)json_integer_value(delay));
        const char *params[] = {id, text};
        st = db_exec(conn, &events_wave_delay, 2, params, NULL);
    }
    for (int phase = 1; phase <= 2 && st == STATUS_OK; phase++) {
        json_t *criteria = json_object_get(grids, phase == 1 ? "1" : "2");
        if (!json_is_array(criteria))
            continue;
        char *doc = json_dumps(criteria, JSON_COMPACT);
        const char *params[] = {id, phase == 1 ? "1" : "2", doc};
        st = db_exec(conn, &events_grid_add, 3, params, NULL);
        free(doc);
    }
    annotations = json_object_get(wave, "annotations");
    if (st != STATUS_OK || !json_is_array(annotations))
        return st;
    const char *clear[] = {id};
    st = db_exec(conn, &events_catalogue_clear, 1, clear, NULL);
    json_array_foreach(annotations, i, a)
    {
        if (st != STATUS_OK)
            break;
        const char *params[] = {id, events_str(a, "key"), events_str(a, "type"),
                                json_is_true(json_object_get(a, "mandatory")) ? "true" : "false",
                                events_str(a, "label") ? events_str(a, "label")
                                                       : events_str(a, "key")};
        st = db_exec(conn, &events_catalogue_add, 5, params, NULL);
    }
    return st;
}

static enum status events_wave(struct db_conn *conn, const struct cloudevent *ev)
{
    json_t *wave = json_object_get(ev->data, "wave");
    char slots[24];

    if (!json_is_object(wave) || !events_str(wave, "id") ||
        !json_is_integer(json_object_get(wave, "phase2_slots")))
        return STATUS_INVALID;
    snprintf(slots, sizeof slots, "%lld",
             (long long)json_integer_value(json_object_get(wave, "phase2_slots")));
    char *doc = json_dumps(wave, JSON_COMPACT);
    const char *label = events_str(wave, "label");
    const char *params[] = {events_str(wave, "id"), label ? label : "", slots, doc};
    enum status st = db_exec(conn, &events_wave_upsert, 4, params, NULL);
    free(doc);
    if (st == STATUS_OK)
        st = events_wave_parameters(conn, events_str(wave, "id"), wave);
    return st;
}

/* The handlers take no user data: these adapt them to the inbox's signature. */
static enum status events_route_dossier_event(struct db_conn *conn, const struct cloudevent *ev,
                                              void *ud)
{
    (void)ud;
    return events_dossier(conn, ev);
}

static enum status events_route_wave(struct db_conn *conn, const struct cloudevent *ev, void *ud)
{
    (void)ud;
    return events_wave(conn, ev);
}

const struct inbox_route instruction_event_routes[] = {
    {"dossier.deposited", events_route_dossier_event},
    {"dossier.updated", events_route_dossier_event},
    {"dossier.withdrawn", events_route_dossier_event},
    {"wave.published", events_route_wave},
};
const size_t instruction_event_nroutes =
    sizeof instruction_event_routes / sizeof instruction_event_routes[0];

enum status instruction_on_event(struct db_conn *conn, const struct cloudevent *ev, void *ud)
{
    return inbox_dispatch(instruction_event_routes, instruction_event_nroutes, conn, ev, ud);
}
