/* writeback (instruction): decisions written back to démarches-simplifiées through an outbox. */
#ifndef PTCE_INSTRUCTION_WRITEBACK_H
#define PTCE_INSTRUCTION_WRITEBACK_H

#include "db.h"
#include "status.h"

struct writeback_command {
    const char *dossier_id;
    long long ds_number;    /* 0: not a DS dossier */
    const char *mutation;   /* "dossierPasserEnInstruction", "dossierAccepter", "dossierRefuser",
                               "dossierClasserSansSuite", "dossierRepasserEnConstruction" */
    const char *motivation; /* may be NULL */
};

/*
 * Queues the DS mutation inside the caller's open transaction on conn: it exists if and only
 * if the caller commits, and is delivered later by the write-back worker.
 */
enum status writeback_enqueue(struct db_conn *conn, const struct writeback_command *cmd);

#endif
