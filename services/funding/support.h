/* support (funding): the bouquet of services and the charter — built by its own change. */
#ifndef PTCE_FUNDING_SUPPORT_H
#define PTCE_FUNDING_SUPPORT_H

#include <stddef.h>

#include "cloudevent.h"
#include "db.h"
#include "http.h"

enum status support_on_decided(struct db_conn *conn, const struct cloudevent *ev);
extern const struct http_route support_routes[];
extern const size_t support_nroutes;

#endif
