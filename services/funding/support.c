/* support (funding): a placeholder until the bouquet of services and the charter arrive. */
#include "support.h"

enum status support_on_decided(struct db_conn *conn, const struct cloudevent *ev)
{
    (void)conn;
    (void)ev;
    return STATUS_OK; /* recorded in the inbox; the bouquet's access comes with its change */
}

/* No route yet: one placeholder element, since C has no empty arrays; support_nroutes is 0. */
const struct http_route support_routes[] = {{NULL, NULL, NULL, 0, 0}};
const size_t support_nroutes = 0;
