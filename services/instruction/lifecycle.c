/* lifecycle (instruction): the dossier's state machine, its guards and its effects. */
#include "lifecycle.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "domain.h"
#include "events.h"
#include "log.h"
#include "outbox.h"
#include "writeback.h"

#define NA ROLE_NATIONAL_ADMIN
#define RI ROLE_REGIONAL_INSTRUCTOR

struct lifecycle_ctx {
    const struct dossier_row *d;
    const struct lifecycle_move *mv;
};

DB_STMT(lifecycle_ready,
        "SELECT d.opinion IS NOT NULL, (SELECT count(*) FROM annotation_def a"
        " WHERE a.mandatory AND a.wave = CASE WHEN EXISTS (SELECT 1 FROM annotation_def x"
        "   WHERE x.wave = d.wave) THEN d.wave ELSE '*' END"
        " AND NOT EXISTS (SELECT 1 FROM annotation n WHERE n.dossier_id = d.id AND n.key = a.key"
        "   AND n.value <> 'null'::jsonb AND btrim(n.value #>> '{}') <> ''))"
        " FROM dossier d WHERE d.id = $1");
DB_STMT(lifecycle_labels, "SELECT $2 = ANY(labels) FROM dossier WHERE id = $1");
/*
 * The count is a statement of its own, run once the wave's lock is held: a sub-select of the
 * locking statement would read the snapshot taken before the wait and miss the laureates that
 * the previous holder committed.
 */
DB_STMT(lifecycle_slots, "SELECT phase2_slots FROM wave WHERE id = $1 FOR UPDATE");
DB_STMT(lifecycle_laureates, "SELECT count(*) FROM dossier WHERE wave = $1"
                             " AND state = 'phase2_laureate'");
DB_STMT(lifecycle_effect,
        "UPDATE dossier SET decided_at = CASE WHEN $2::boolean THEN now() ELSE decided_at END,"
        " phase2_deadline = coalesce($3::timestamptz, phase2_deadline),"
        " correction_hash = CASE WHEN $4::boolean THEN content_hash ELSE correction_hash END"
        " WHERE id = $1");
DB_STMT(lifecycle_update, "UPDATE dossier SET state = $2, version = version + 1 WHERE id = $1"
                          " RETURNING version");
DB_STMT(lifecycle_history,
        "INSERT INTO dossier_history (resource_id, from_state, to_state, actor, actor_role,"
        " motivation, request_id) VALUES ($1, $2, $3, $4, $5, $6, $7)");

/* A regional opinion and every mandatory annotation are needed to leave regional review. */
static enum status lifecycle_guard_ready(struct db_conn *conn, const struct fsm_request *rq,
                                         struct fsm_result *res)
{
    const char *params[] = {rq->id};
    PGresult *r;
    enum status st = db_exec(conn, &lifecycle_ready, 1, params, &r);

    if (st != STATUS_OK)
        return st;
    int has_opinion = PQgetvalue(r, 0, 0)[0] == 't';
    long missing = strtol(PQgetvalue(r, 0, 1), NULL, 10);
    PQclear(r);
    if (!has_opinion) {
        snprintf(res->why, sizeof res->why, "the regional opinion is required first");
        return STATUS_UNPROCESSABLE;
    }
    if (missing > 0) {
        snprintf(res->why, sizeof res->why, "%ld mandatory annotation(s) left empty", missing);
        return STATUS_UNPROCESSABLE;
    }
    return STATUS_OK;
}

/* Phase 1 and phase 2 filed together: the label lets a laureate skip the invitation. */
static enum status lifecycle_guard_combined(struct db_conn *conn, const struct fsm_request *rq,
                                            struct fsm_result *res)
{
    const char *params[] = {rq->id, LIFECYCLE_COMBINED_LABEL};
    PGresult *r;
    enum status st = db_exec(conn, &lifecycle_labels, 2, params, &r);

    if (st != STATUS_OK)
        return st;
    int combined = PQgetvalue(r, 0, 0)[0] == 't';
    PQclear(r);
    if (!combined) {
        snprintf(res->why, sizeof res->why,
                 "only a dossier labelled " LIFECYCLE_COMBINED_LABEL " applies without invitation");
        return STATUS_UNPROCESSABLE;
    }
    return STATUS_OK;
}

static enum status lifecycle_guard_invite(struct db_conn *conn, const struct fsm_request *rq,
                                          struct fsm_result *res)
{
    const struct lifecycle_ctx *c = rq->arg;

    (void)conn;
    if (!c->mv->deadline) {
        res->field = "deadline";
        snprintf(res->why, sizeof res->why, "an invitation needs a deadline (RFC 3339)");
        return STATUS_INVALID;
    }
    return STATUS_OK;
}

enum status lifecycle_wave_slots_lock(struct db_conn *conn, const char *wave, long *slots,
                                      long *taken)
{
    const char *params[] = {wave};
    PGresult *r;
    enum status st = db_exec(conn, &lifecycle_slots, 1, params, &r);

    if (st != STATUS_OK)
        return st;
    if (PQntuples(r) == 0) {
        PQclear(r);
        return STATUS_NOT_FOUND;
    }
    *slots = strtol(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    st = db_exec(conn, &lifecycle_laureates, 1, params, &r);
    if (st != STATUS_OK)
        return st;
    *taken = strtol(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    return STATUS_OK;
}

static enum status lifecycle_guard_slots(struct db_conn *conn, const struct fsm_request *rq,
                                         struct fsm_result *res)
{
    const struct lifecycle_ctx *c = rq->arg;
    long slots, taken;
    enum status st = lifecycle_wave_slots_lock(conn, c->d->wave, &slots, &taken);

    if (st == STATUS_NOT_FOUND) {
        snprintf(res->why, sizeof res->why, "wave %s is not known to instruction", c->d->wave);
        return STATUS_UNPROCESSABLE;
    }
    if (st == STATUS_OK && taken >= slots) {
        snprintf(res->why, sizeof res->why, "the %ld phase-2 slots of wave %s are taken", slots,
                 c->d->wave);
        return STATUS_CONFLICT;
    }
    return st;
}

static const struct fsm_transition lifecycle_transitions[] = {
    {"received", "regional_review", NA | RI, 0, NULL, "dossier.instruction_started"},
    {"regional_review", "correction_requested", NA | RI, 1, NULL, NULL},
    {"correction_requested", "received", 0, 0, NULL, NULL}, /* the carrier's DS edit */
    {"regional_review", "awaiting_decision", NA | RI, 0, lifecycle_guard_ready, NULL},
    {"regional_review", "closed", NA, 1, NULL, "dossier.decided"},
    {"awaiting_decision", "regional_review", NA, 0, NULL, NULL},
    {"awaiting_decision", "phase1_laureate", NA, 0, NULL, "dossier.decided"},
    {"awaiting_decision", "refused", NA, 1, NULL, "dossier.decided"},
    {"awaiting_decision", "closed", NA, 1, NULL, "dossier.decided"},
    {"phase1_laureate", "phase2_invited", NA, 0, lifecycle_guard_invite, "dossier.phase2_invited"},
    {"phase1_laureate", "phase2_applied", NA | RI, 0, lifecycle_guard_combined, NULL},
    {"phase2_invited", "phase2_applied", NA | RI, 0, NULL, NULL},
    {"phase2_applied", "phase2_review", NA | RI, 0, NULL, NULL},
    {"phase2_review", "phase2_laureate", NA, 0, lifecycle_guard_slots, "dossier.phase2_decided"},
    {"phase2_review", "phase2_not_selected", NA, 1, NULL, "dossier.phase2_decided"},
};

static const struct fsm_def lifecycle_def = {
    .name = "dossier",
    .table = "dossier",
    .history_table = "dossier_history",
    .states = domain_states,
    .transitions = lifecycle_transitions,
    .ntransitions = sizeof lifecycle_transitions / sizeof *lifecycle_transitions,
    .version_required = 1,
    .topic = INSTRUCTION_TOPIC,
    .source = LIFECYCLE_SOURCE,
    .event_type = "dossier.state_changed",
};

struct fsm *lifecycle_fsm_new(char *err, size_t errlen)
{
    return fsm_new(&lifecycle_def, err, errlen);
}

const struct fsm_transition *lifecycle_transition_find(const char *from, const char *to)
{
    for (size_t i = 0; i < lifecycle_def.ntransitions; i++) {
        const struct fsm_transition *t = &lifecycle_transitions[i];
        if (!strcmp(t->from, from) && !strcmp(t->to, to))
            return t;
    }
    return NULL;
}

static const char *lifecycle_str(const json_t *obj, const char *key)
{
    return json_string_value(json_object_get(obj, key)); /* borrowed */
}

/* The event's data beyond fsm's own members: the DecisionData of a decision. New reference. */
static json_t *lifecycle_event_data(const struct dossier_row *d, const struct lifecycle_move *mv)
{
    char now[40];
    int phase = domain_decision_phase(mv->to);
    json_t *data = json_pack("{s:s, s:s, s:s?}", "dossier_id", d->id, "wave", d->wave, "region",
                             d->region[0] ? d->region : NULL);

    if (mv->deadline)
        json_object_set_new(data, "deadline", json_string(mv->deadline));
    if (phase == 0)
        return data;
    time_now_rfc3339(now, sizeof now);
    const json_t *carrier = json_object_get(d->doc, "carrier");
    json_object_update_new(
        data, json_pack("{s:i, s:s, s:s, s:s, s:s, s:s?, s:{s:s?, s:s?}}", "phase", phase,
                        "outcome", mv->to, "reference", mv->reference ? mv->reference : "",
                        "decided_at", now, "decided_by", mv->who ? mv->who->key_id : "system",
                        "ptce_name", lifecycle_str(d->doc, "title"), "beneficiary", "siret",
                        lifecycle_str(carrier, "siret"), "name", lifecycle_str(carrier, "name")));
    return data;
}

/* The caller's writes of a move: dates, the correction's fingerprint, the DS write-back. */
static enum status lifecycle_effects(struct db_conn *conn, const struct dossier_row *d,
                                     const char *from, const struct lifecycle_move *mv)
{
    const char *params[] = {d->id, domain_decision_phase(mv->to) ? "true" : "false", mv->deadline,
                            strcmp(mv->to, "correction_requested") == 0 ? "true" : "false"};
    enum status st = db_exec(conn, &lifecycle_effect, 4, params, NULL);
    const char *mutation = domain_writeback_mutation(from, mv->to);

    if (st != STATUS_OK || !mutation)
        return st;
    struct writeback_command cmd = {
        .dossier_id = d->id,
        .ds_number = d->ds_number,
        .mutation = mutation,
        .motivation = mv->motivation,
    };
    return writeback_enqueue(conn, &cmd);
}

static enum status lifecycle_effect_hook(struct db_conn *conn, const struct fsm_request *rq,
                                         struct fsm_result *res)
{
    const struct lifecycle_ctx *c = rq->arg;
    enum status st = lifecycle_effects(conn, c->d, res->from, c->mv);

    if (st != STATUS_OK || !c->mv->idem || !c->mv->idem->key)
        return st;
    json_t *doc = store_dossier_document(conn, c->d->id); /* what the answer shows */
    if (!doc)
        return STATUS_INTERNAL;
    st = http_idem_store_json(conn, c->mv->idem, doc);
    json_decref(doc);
    return st;
}

/* 1 when a move to `to` is capped by the wave's phase-2 slots (its guard locks the wave). */
static int lifecycle_locks_wave(const char *to)
{
    for (size_t i = 0; i < sizeof lifecycle_transitions / sizeof *lifecycle_transitions; i++) {
        if (!strcmp(lifecycle_transitions[i].to, to) &&
            lifecycle_transitions[i].guard == lifecycle_guard_slots)
            return 1;
    }
    return 0;
}

/*
 * Before the dossier's row: the Idempotency-Key's claim, then the wave's row when the slot cap
 * is involved — a bulk decision (national.c) locks the wave, then its dossiers, and a single
 * transition that locked its dossier before the wave could deadlock with it. The guard counts
 * the laureates again once the row is locked.
 */
static enum status lifecycle_prepare_hook(struct db_conn *conn, const struct fsm_request *rq,
                                          struct fsm_result *res)
{
    const struct lifecycle_ctx *c = rq->arg;
    long slots, taken;
    enum status st = http_idem_claim(conn, c->mv->idem);

    (void)res;
    if (st != STATUS_OK)
        return st;
    if (c->mv->idem && c->mv->idem->replayed)
        return STATUS_CONFLICT; /* rolls back: a replay writes nothing (see below) */
    if (!lifecycle_locks_wave(rq->to) || !c->d->wave[0])
        return STATUS_OK;
    st = lifecycle_wave_slots_lock(conn, c->d->wave, &slots, &taken);
    return st == STATUS_NOT_FOUND ? STATUS_OK : st; /* the guard says it to the caller */
}

enum status lifecycle_move_apply(struct fsm *m, struct db_conn *conn, const struct dossier_row *d,
                                 const struct lifecycle_move *mv, struct fsm_result *res)
{
    struct lifecycle_ctx c = {d, mv};
    json_t *data = lifecycle_event_data(d, mv);
    struct fsm_request rq = {
        .id = d->id,
        .to = mv->to,
        .who = mv->who,
        .if_match = mv->if_match,
        .motivation = mv->motivation,
        .data = data,
        .effect = lifecycle_effect_hook,
        .prepare = lifecycle_prepare_hook,
        .arg = &c,
    };
    enum status st = fsm_apply(m, conn, &rq, res);

    json_decref(data);
    if (mv->idem && mv->idem->replayed)
        return STATUS_OK; /* the first answer, stored, is the answer */
    return st;
}

enum status lifecycle_move_in_tx(struct db_conn *conn, const struct dossier_row *d,
                                 const struct lifecycle_move *mv, long long *version)
{
    const struct fsm_transition *t = lifecycle_transition_find(d->state, mv->to);
    const char *up[] = {d->id, mv->to};
    const char *actor = mv->who ? mv->who->key_id : "system";
    const char *role = mv->who ? auth_role_name(mv->who->role) : NULL;
    PGresult *r;
    enum status st = db_exec(conn, &lifecycle_update, 2, up, &r);

    if (st != STATUS_OK)
        return st;
    *version = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    const char *hist[] = {d->id, d->state, mv->to, actor, role, mv->motivation, log_request_id()};
    st = db_exec(conn, &lifecycle_history, 7, hist, NULL);
    if (st == STATUS_OK)
        st = lifecycle_effects(conn, d, d->state, mv);
    if (st != STATUS_OK)
        return st;
    json_t *data = lifecycle_event_data(d, mv);
    json_object_update_new(data, json_pack("{s:s, s:s, s:s, s:I, s:s, s:s?, s:s?}", "id", d->id,
                                           "from", d->state, "to", mv->to, "version",
                                           (json_int_t)*version, "actor", actor, "actor_role", role,
                                           "motivation", mv->motivation));
    const char *type = t && t->event_type ? t->event_type : lifecycle_def.event_type;
    return outbox_append(conn, INSTRUCTION_TOPIC, LIFECYCLE_SOURCE, type, d->id, data, NULL);
}
