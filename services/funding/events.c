/* events (funding): instruction's decisions will open agreements; for now they are recorded. */
#include "events.h"

#include <string.h>

#include "log.h"
#include "support.h"

enum status funding_on_event(struct db_conn *conn, const struct cloudevent *ev, void *ud)
{
    (void)ud;
    if (strcmp(ev->type, "dossier.decided") == 0)
        return support_on_decided(conn, ev);
    /* The inbox row written by the caller is the whole effect until agreements exist. */
    log_event(LOG_DEBUG, "event.recorded", "{s:s, s:s?}", "type", ev->type, "subject", ev->subject);
    return STATUS_OK;
}
