/* events (funding): instruction's decisions will open agreements; for now they are recorded. */
#include "events.h"

#include "log.h"

enum status funding_on_event(struct db_conn *conn, const struct cloudevent *ev, void *ud)
{
    (void)conn;
    (void)ud;
    /* The inbox row written by the caller is the whole effect until agreements exist. */
    log_event(LOG_DEBUG, "event.recorded", "{s:s, s:s?}", "type", ev->type, "subject", ev->subject);
    return STATUS_OK;
}
