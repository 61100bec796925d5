/* fsm: state machines as data — a transition table applied in one locked transaction. */
#ifndef PTCE_FSM_H
#define PTCE_FSM_H

#include <jansson.h>
#include <stddef.h>

#include "auth.h"
#include "db.h"
#include "uuid.h"

/*
 * A machine is a static definition: its states, the allowed transitions (from, to, the roles
 * that may take it, whether a motivation is required, an optional guard), and where it lives —
 * the resource table (an id, a state and an integer version column) and its history table,
 * which must have the columns
 *   resource_id, from_state, to_state, actor, actor_role, motivation, request_id, at
 * (any types that take text and now()). fsm_apply then takes a transition in ONE transaction:
 * lock the row, check If-Match against its version, check the transition, the role, the
 * motivation and the guard, write the new state and version + 1, append the history row and
 * the outbox event. Either all of it commits or none of it does.
 */

#define FSM_STATE_LEN 64   /* longest state name, terminator included */
#define FSM_MAX_ALLOWED 16 /* targets listed in a 409 */
#define FSM_WHY_LEN 160

struct fsm_request;
struct fsm_result;

/*
 * A guard or an effect: runs inside the transaction, with the resource row locked and res->from,
 * res->to and res->version filled (a guard sees the current version, an effect the new one).
 * STATUS_OK lets the transition go on; any other status rolls it all back and is what fsm_apply
 * returns (a guard writes the reason in res->why). A guard runs before anything is written; an
 * effect (fsm_request.effect) after the state, history and event are written, for the caller's own
 * writes in the same transaction.
 */
typedef enum status (*fsm_hook_fn)(struct db_conn *conn, const struct fsm_request *rq,
                                   struct fsm_result *res);

struct fsm_transition {
    const char *from;
    const char *to;
    unsigned roles;          /* mask of enum auth_role that may take it */
    int motivation_required; /* a non-blank motivation must be given */
    fsm_hook_fn guard;       /* NULL: none */
    const char *event_type;  /* NULL: the machine's event_type */
};

/*
 * Every string is borrowed and must outlive the machine (static data). Identifiers (name,
 * table, columns, history_table) must match [a-z_][a-z0-9_]* and be at most 63 characters.
 */
struct fsm_def {
    const char *name;           /* names the prepared statements: fsm_<name>_lock … */
    const char *table;          /* the resource table, found through the search_path */
    const char *id_column;      /* NULL: "id" */
    const char *state_column;   /* NULL: "state" */
    const char *version_column; /* NULL: "version" */
    const char *history_table;
    const char *const *states; /* NULL-terminated */
    const struct fsm_transition *transitions;
    size_t ntransitions;
    int version_required; /* 1: a change without If-Match is 428 */
    const char *topic;    /* outbox event: Kafka topic, CloudEvents source and default type */
    const char *source;
    const char *event_type;
};

/* One transition asked for. Every pointer is borrowed for the call. */
struct fsm_request {
    const char *id;                   /* the resource id (the event subject too) */
    const char *to;                   /* the target state */
    const struct auth_principal *who; /* NULL: the service itself (an event handler) */
    const char *if_match;             /* the If-Match header, NULL when absent */
    const char *motivation;           /* NULL when none */
    const json_t *data; /* NULL, or an object whose members are added to the event data */
    fsm_hook_fn effect; /* NULL, or the caller's writes in the same transaction */
    void *arg;          /* for the guard, the effect and prepare */
    /*
     * NULL, or the caller's first statements in the transaction, before the row is locked (its
     * res->from is still empty): locks that must be taken before the row's so that every path
     * takes them in one order, or an idempotency claim. Any status but STATUS_OK rolls back.
     */
    fsm_hook_fn prepare;
};

/* What fsm_apply found; caller-owned, filled on success and on refusal. */
struct fsm_result {
    char from[FSM_STATE_LEN]; /* the state found ("" when the row was not found) */
    char to[FSM_STATE_LEN];
    long long version; /* on success the new version, on refusal the current one */
    const char *allowed[FSM_MAX_ALLOWED]; /* targets the caller's role may take from `from`;
                                             borrowed from the definition */
    size_t nallowed;
    char event_id[UUID_STR_LEN]; /* on success */
    char why[FSM_WHY_LEN];       /* a sentence for the problem's detail on refusal */
    const char *field;           /* "motivation" when that is what is wrong, else NULL */
};

struct fsm;

/*
 * Checks the definition and builds its three statements once (see fsm.c for why building them
 * from identifiers is safe). Returns NULL with a message in errstr when the definition is
 * wrong. One machine per definition for the life of the process: the statement names are
 * derived from def->name. Free with fsm_free (NULL is a no-op).
 */
struct fsm *fsm_new(const struct fsm_def *def, char *errstr, size_t errlen);
void fsm_free(struct fsm *m);

/*
 * Takes rq->to on resource rq->id in one transaction of its own on conn (which must not be in
 * one: STATUS_INTERNAL). Returns:
 *   STATUS_OK                     committed; res->version is the new version
 *   STATUS_NOT_FOUND              no such resource
 *   STATUS_INVALID                unknown target state, malformed If-Match, or a missing
 *                                 motivation (res->field = "motivation")
 *   STATUS_PRECONDITION_REQUIRED  no If-Match and the machine requires one (428)
 *   STATUS_PRECONDITION_FAILED    If-Match does not match the current version (412)
 *   STATUS_CONFLICT               no such transition from the current state (409; res->from
 *                                 and res->allowed say what is possible, fsm_conflict_members)
 *   STATUS_FORBIDDEN              the transition exists but not for the caller's role
 *   a guard's or effect's status, or a database status (STATUS_RETRY: run it again)
 * On any status but STATUS_OK nothing was written.
 */
enum status fsm_apply(struct fsm *m, struct db_conn *conn, const struct fsm_request *rq,
                      struct fsm_result *res);

/*
 * For a caller that writes a transition itself (many at once, set-based), as fsm_apply would:
 *   fsm_allowed         fills res->allowed and res->nallowed: the targets who may take from
 *                       res->from (a 409's list);
 *   fsm_event_data      the event's data for the transition rq->to from res->from, at the new
 *                       version res->version, with rq->data's members (a new reference);
 *   fsm_transition_log  the log line of a committed transition.
 */
void fsm_allowed(const struct fsm_def *def, const struct auth_principal *who,
                 struct fsm_result *res);
json_t *fsm_event_data(const struct fsm_request *rq, const struct fsm_result *res);
void fsm_transition_log(const struct fsm_def *def, const struct fsm_request *rq,
                        const struct fsm_result *res);

/*
 * The extra members of a 409 problem+json: {"current_state": "…", "allowed_transitions":
 * ["…", …]}, from a result of fsm_apply. Returns a new reference.
 */
json_t *fsm_conflict_members(const struct fsm_result *res);

#endif
