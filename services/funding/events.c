/* events (funding): instruction's decisions open agreements; submission's waves set parameters. */
#include "events.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "domain.h"
#include "log.h"
#include "metrics.h"
#include "store.h"
#include "support.h"

static struct metric m_created =
    METRIC_COUNTER("ptce_funding_agreements_created_total", "agreements created from decisions");

/* The handlers take no user data: these adapt them to the inbox's signature. */
static enum status funding_route_decided(struct db_conn *conn, const struct cloudevent *ev,
                                         void *ud)
{
    (void)ud;
    return support_on_decided(conn, ev);
}

static enum status funding_route_phase2(struct db_conn *conn, const struct cloudevent *ev, void *ud)
{
    (void)ud;
    return funding_on_phase2_decided(conn, ev);
}

static enum status funding_route_wave(struct db_conn *conn, const struct cloudevent *ev, void *ud)
{
    (void)ud;
    return funding_on_wave_published(conn, ev);
}

const struct inbox_route funding_event_routes[] = {
    {"dossier.decided", funding_route_decided},
    {"dossier.phase2_decided", funding_route_phase2},
    {"wave.published", funding_route_wave},
};
const size_t funding_event_nroutes = sizeof funding_event_routes / sizeof funding_event_routes[0];

DB_STMT(funding_agreement_create_q, "SELECT agreement_create($1::jsonb)");

enum status funding_on_phase2_decided(struct db_conn *conn, const struct cloudevent *ev)
{
    struct funding_decision d;
    char why[160];
    long long amount;
    long months;
    json_t *tmpl = NULL, *schedule = NULL, *doc = NULL;

    enum status st = funding_decision_read(ev->data, &d, why, sizeof why);
    if (st != STATUS_OK) {
        log_event(LOG_WARN, "event.invalid", "{s:s, s:s}", "type", ev->type, "why", why);
        return st;
    }
    if (!funding_decision_is_laureate(&d))
        return STATUS_OK; /* not selected: nothing to fund; the inbox row records it */
    st = store_wave_params(conn, d.wave, &amount, &months, &tmpl);
    if (st == STATUS_OK)
        st = funding_schedule_build(amount, tmpl, &schedule, why, sizeof why);
    json_decref(tmpl);
    if (st != STATUS_OK)
        return st;
    json_t *p = json_pack(
        "{s:s, s:s, s:s?, s:{s:s?, s:s?}, s:s?, s:s, s:s, s:i, s:I, s:o, s:o}", "dossier_id",
        d.dossier_id, "wave", d.wave, "region", d.region, "beneficiary", "siret", d.siret, "name",
        d.name, "ptce_name", d.ptce_name, "reference", d.reference, "decided_at", d.decided_at,
        "duration_months", (int)months, "amount_cents", (json_int_t)amount, "clauses",
        funding_clauses_build(&d, amount, months, schedule), "tranches", json_incref(schedule));
    json_decref(schedule);
    char *text = json_dumps(p, JSON_COMPACT);
    json_decref(p);
    const char *params[] = {text};
    st = store_apply(conn, &funding_agreement_create_q, 1, params, &doc, why, sizeof why);
    free(text);
    if (st == STATUS_OK) {
        int dup = json_is_true(json_object_get(doc, "duplicate"));
        if (!dup)
            metric_add(&m_created, 1);
        log_event(LOG_INFO, dup ? "agreement.exists" : "agreement.created", "{s:s, s:s?}",
                  "dossier", d.dossier_id, "agreement",
                  json_string_value(json_object_get(doc, "id")));
        json_decref(doc);
    }
    return st;
}

enum status funding_on_wave_published(struct db_conn *conn, const struct cloudevent *ev)
{
    const json_t *wave = json_object_get(ev->data, "wave");

    if (!json_is_object(wave))
        return STATUS_INVALID;
    return store_wave_upsert(conn, wave);
}

void funding_events_metrics_register(void)
{
    metrics_register(&m_created);
}

enum status funding_on_event(struct db_conn *conn, const struct cloudevent *ev, void *ud)
{
    return inbox_dispatch(funding_event_routes, funding_event_nroutes, conn, ev, ud);
}
