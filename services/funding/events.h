/* events (funding): what funding publishes and consumes. */
#ifndef PTCE_FUNDING_EVENTS_H
#define PTCE_FUNDING_EVENTS_H

#include "inbox.h"

#define FUNDING_TOPIC "ptce.funding.events"
#define INSTRUCTION_TOPIC "ptce.instruction.events"

/* The inbox handler for instruction's events. */
enum status funding_on_event(struct db_conn *conn, const struct cloudevent *ev, void *ud);

#endif
