/*
 * writeback (instruction): decisions written back to démarches-simplifiées (DS) through a queue
 * filled in the decision's transaction, so that a DS outage delays a decision, never loses it.
 */
#ifndef PTCE_INSTRUCTION_WRITEBACK_H
#define PTCE_INSTRUCTION_WRITEBACK_H

#include <stddef.h>

#include "db.h"
#include "status.h"

struct writeback_command {
    const char *dossier_id; /* instruction's dossier id (a UUID) */
    long long ds_number;    /* 0: not a DS dossier: nothing queued */
    const char *mutation;   /* "dossierPasserEnInstruction", "dossierAccepter", "dossierRefuser",
                               "dossierClasserSansSuite", "dossierRepasserEnConstruction" */
    const char *motivation; /* may be NULL */
};

/*
 * Queues the DS mutation inside the caller's open transaction on conn (the decision's): the
 * command exists exactly when the decision commits. Commands of one dossier are sent in the
 * order of their ids, so the caller enqueues after it has locked the dossier's row.
 * STATUS_INVALID for an unknown mutation, a missing motivation where DS requires one
 * (dossierRefuser, dossierClasserSansSuite) or a dossier_id that is not a UUID; STATUS_OK
 * without writing anything when ds_number is 0.
 */
enum status writeback_enqueue(struct db_conn *conn, const struct writeback_command *cmd);

/* What the write-back worker needs; every string is copied by writeback_start. */
struct writeback_config {
    const char *conninfo;
    const char *schema;
    long statement_timeout_ms;  /* of the worker's own connection */
    const char *api_url;        /* empty: commands are queued and wait */
    const char *token;          /* a DS token with write rights */
    int allow_http;             /* plain http to DS (tests only) */
    const char *instructeur_id; /* DS global id of the instructeur the token acts for */
    long rate_per_min;          /* requests a minute to DS, never more (DS: 400) */
    long timeout_ms;            /* of one DS request */
    long retry_max_ms;          /* cap of the retry backoff */
};

/*
 * Checks cfg as writeback_start will use it: with an API URL, the URL must be https (http only
 * with allow_http), the token set and instructeur_id a DS instructeur id (base64 of
 * "Instructeur-<n>"). Returns 0, or -1 with a one-line reason in err.
 */
int writeback_config_check(const struct writeback_config *cfg, char *err, size_t errlen);

struct writeback;

/*
 * Starts the worker thread: it refreshes the backlog and dead-letter gauges and, on the one
 * replica that holds the session-level advisory lock of the queue, sends the due commands to
 * DS, oldest first and in order per dossier, paced at cfg->rate_per_min. NULL (logged) when
 * writeback_config_check refuses cfg. Stop and free with writeback_stop (NULL is a no-op).
 */
struct writeback *writeback_start(const struct writeback_config *cfg);
void writeback_stop(struct writeback *w);

/* The DS state a mutation leaves the dossier in ("accepte"…), or NULL for an unknown one. */
const char *writeback_target_state(const char *mutation);

/* Microseconds between two requests at rate_per_min (burst 1: at most rate_per_min a minute). */
long long writeback_interval_us(long rate_per_min);

#endif
