/* lifecycle (instruction): the dossier's state machine, its guards and its effects. */
#ifndef PTCE_INSTRUCTION_LIFECYCLE_H
#define PTCE_INSTRUCTION_LIFECYCLE_H

#include "fsm.h"
#include "http_idem.h"
#include "store.h"

#define LIFECYCLE_SOURCE "/ptce/instruction"
#define LIFECYCLE_COMBINED_LABEL "phase1_phase2_combined"

/* One move asked for; every pointer borrowed for the call. */
struct lifecycle_move {
    const char *to;
    const char *motivation;           /* NULL when none */
    const char *reference;            /* a decision's committee reference, NULL when none */
    const char *deadline;             /* an invitation's deadline, RFC 3339, NULL when none */
    const char *if_match;             /* NULL when absent */
    const struct auth_principal *who; /* NULL: the service itself */
    struct http_idem *idem;           /* lifecycle_move_apply's Idempotency-Key, NULL: none */
};

/* The machine, built once at start-up (NULL and a message in err when the table is wrong). */
struct fsm *lifecycle_fsm_new(char *err, size_t errlen);

/* The table's transition from -> to, or NULL. */
const struct fsm_transition *lifecycle_transition_find(const char *from, const char *to);

/*
 * Applies the move to dossier d through fsm_apply (its own transaction): the state, the
 * history, the event and, in the same transaction, the dates and the DS write-back. Locks are
 * taken in the order every path takes them: the Idempotency-Key's claim (mv->idem), then the
 * wave's row when the move is capped by the wave's phase-2 slots, then the dossier's row. With
 * mv->idem and a key, the dossier's new document is stored under it before the commit (and
 * kept in it for the answer); a replay writes nothing, returns STATUS_OK and sets
 * mv->idem->replayed.
 */
enum status lifecycle_move_apply(struct fsm *m, struct db_conn *conn, const struct dossier_row *d,
                                 const struct lifecycle_move *mv, struct fsm_result *res);

/*
 * The same writes inside the caller's open transaction, for a row the caller has locked and
 * whose transition it has checked (bulk decisions, the projection's own moves). *version
 * receives the new version.
 */
enum status lifecycle_move_in_tx(struct db_conn *conn, const struct dossier_row *d,
                                 const struct lifecycle_move *mv, long long *version);

/*
 * Locks the wave row and counts its phase-2 laureates: *slots and *taken. STATUS_NOT_FOUND
 * for an unknown wave. Two deciders serialise on this lock, so the cap holds.
 */
enum status lifecycle_wave_slots_lock(struct db_conn *conn, const char *wave, long *slots,
                                      long *taken);

#endif
