/* events (instruction): what instruction publishes and how it applies submission's events. */
#ifndef PTCE_INSTRUCTION_EVENTS_H
#define PTCE_INSTRUCTION_EVENTS_H

#include "inbox.h"

#define INSTRUCTION_TOPIC "ptce.instruction.events"
#define SUBMISSION_TOPIC "ptce.submission.events"

/*
 * The consumed event types and what applies each, inside the inbox's transaction (common/inbox
 * dispatches by type; a type without an entry is recorded in the inbox, counted in
 * ptce_inbox_events_skipped_total and otherwise ignored): dossier.deposited / dossier.updated /
 * dossier.withdrawn → the projection (a newer version never overwritten by an older one;
 * routing of a new dossier; a withdrawal leaves every queue; a carrier's edit ends a
 * correction), wave.published → the wave table.
 */
extern const struct inbox_route instruction_event_routes[];

/*
 * The inbox's batch hook (inbox_prepare_fn): the projection's upserts of a batch's dossier
 * events, each dossier once, in one statement; their handlers then take the results.
 */
enum status events_prepare(struct db_conn *conn, const struct cloudevent *const *evs, size_t n,
                           void *ud);
extern const size_t instruction_event_nroutes;

/* Applies one event as the inbox does (inbox_dispatch over instruction_event_routes). */
enum status instruction_on_event(struct db_conn *conn, const struct cloudevent *ev, void *ud);

/*
 * Assigns the dossier, in the caller's transaction: to `group` when given (a re-assignment by
 * `actor`, for `reason`), else by the routing rules of region (the default group when none
 * matches). Keeps the assignment row and publishes dossier.routed.
 */
enum status events_route_dossier(struct db_conn *conn, const char *id, const char *region,
                                 const char *actor, const char *reason, const char *group);

#endif
