/* events (funding): what funding publishes and consumes. */
#ifndef PTCE_FUNDING_EVENTS_H
#define PTCE_FUNDING_EVENTS_H

#include "inbox.h"

#define FUNDING_TOPIC "ptce.funding.events"
#define INSTRUCTION_TOPIC "ptce.instruction.events"
#define SUBMISSION_EVENTS_TOPIC "ptce.submission.events"

/*
 * The consumed event types and what applies each, inside the inbox's transaction (common/inbox
 * dispatches by type; a type without an entry is counted as skipped and recorded only).
 */
extern const struct inbox_route funding_event_routes[];
extern const size_t funding_event_nroutes;

/* Applies one event as the inbox does (inbox_dispatch over funding_event_routes). */
enum status funding_on_event(struct db_conn *conn, const struct cloudevent *ev, void *ud);

/*
 * dossier.phase2_decided: a laureate's agreement, created exactly once per dossier (a replay,
 * even under another event id, creates nothing), with its schedule, reports and clauses.
 */
enum status funding_on_phase2_decided(struct db_conn *conn, const struct cloudevent *ev);

/* Registers the metrics of the consumed events (idempotent): agreements made. */
void funding_events_metrics_register(void);

/* wave.published: funding's own copy of the wave's parameters. */
enum status funding_on_wave_published(struct db_conn *conn, const struct cloudevent *ev);

#endif
