/* support: the bouquet of services and the PTCE charter — what the rest of funding sees. */
#ifndef PTCE_FUNDING_SUPPORT_H
#define PTCE_FUNDING_SUPPORT_H

#include <stddef.h>

#include "cloudevent.h"
#include "http.h"
#include "inbox.h"

/*
 * Applies dossier.decided inside the inbox's open transaction on conn: a phase-1 laureate gets
 * access to the bouquet, exactly once per dossier (a replay or a later event changes nothing),
 * and support.access_granted is appended to the outbox in the same transaction. Other outcomes
 * change nothing. STATUS_INVALID for data that does not match api-spec/asyncapi.yaml (the
 * inbox sets such an event aside); a database status otherwise.
 */
enum status support_on_decided(struct db_conn *conn, const struct cloudevent *ev);

/* The routes of /v1/support/... and /v1/charter/..., for funding's route table. */
extern const struct http_route support_routes[];
extern const size_t support_nroutes;

#endif
