/* outbox: events appended in the caller's transaction (the relay is outbox_relay.c). */
#include "outbox.h"

#include <stdlib.h>
#include <string.h>

#include "cloudevent.h"
#include "log.h"
#include "pgarray.h"

DB_STMT(outbox_insert, "INSERT INTO outbox (event_id, topic, key, type, payload)"
                       " VALUES ($1, $2, $3, $4, $5)");
/* ORDER BY the arrays' order: the ids the events get, and so the relay's order per key. */
DB_STMT(outbox_insert_many,
        "INSERT INTO outbox (event_id, topic, key, type, payload)"
        " SELECT e.id, $2, e.key, e.type, e.payload FROM unnest($1::uuid[], $3::text[],"
        " $4::text[], $5::text[]) WITH ORDINALITY AS e (id, key, type, payload, n) ORDER BY e.n");

enum status outbox_append(struct db_conn *conn, const char *topic, const char *source,
                          const char *type, const char *subject, json_t *data, char *event_id_out)
{
    char id[UUID_STR_LEN];
    json_t *ev = cloudevent_new(source, type, subject, data, log_request_id(), id);
    char *payload = json_dumps(ev, JSON_COMPACT);

    json_decref(ev);
    if (!payload)
        return STATUS_INTERNAL;
    const char *params[] = {id, topic, subject, type, payload};
    enum status st = db_exec(conn, &outbox_insert, 5, params, NULL);
    free(payload);
    if (st == STATUS_OK && event_id_out)
        memcpy(event_id_out, id, UUID_STR_LEN);
    return st;
}

enum status outbox_append_batch(struct db_conn *conn, const char *topic, const char *source,
                                struct outbox_event *events, size_t n)
{
    struct pgarray cols[4]; /* ids, keys, types, payloads */
    enum status st = STATUS_OK;

    for (size_t c = 0; c < 4; c++)
        pgarray_init(&cols[c]);
    for (size_t i = 0; i < n; i++) {
        char id[UUID_STR_LEN];
        json_t *ev = cloudevent_new(source, events[i].type, events[i].subject, events[i].data,
                                    events[i].request_id, id); /* takes data */
        char *payload = json_dumps(ev, JSON_COMPACT);
        json_decref(ev);
        if (!payload)
            st = STATUS_INTERNAL;
        pgarray_add_text(&cols[0], id);
        pgarray_add_text(&cols[1], events[i].subject);
        pgarray_add_text(&cols[2], events[i].type);
        pgarray_add_text(&cols[3], payload);
        free(payload);
    }
    if (st == STATUS_OK && n > 0) {
        const char *params[] = {pgarray_text(&cols[0]), topic, pgarray_text(&cols[1]),
                                pgarray_text(&cols[2]), pgarray_text(&cols[3])};
        st = db_exec(conn, &outbox_insert_many, 5, params, NULL);
    }
    for (size_t c = 0; c < 4; c++)
        pgarray_free(&cols[c]);
    return st;
}
