/* events (instruction): what instruction publishes and how it applies submission's events. */
#ifndef PTCE_INSTRUCTION_EVENTS_H
#define PTCE_INSTRUCTION_EVENTS_H

#include "inbox.h"

#define INSTRUCTION_TOPIC "ptce.instruction.events"
#define SUBMISSION_TOPIC "ptce.submission.events"

/* The inbox handler: dossier.deposited / dossier.updated / dossier.withdrawn → projection. */
enum status instruction_on_event(struct db_conn *conn, const struct cloudevent *ev, void *ud);

#endif
