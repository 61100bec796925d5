/* events (instruction): applies submission's dossier events to instruction's projection. */
#include "events.h"

#include <string.h>

#include "log.h"
#include "uuid.h"

DB_STMT(instruction_upsert_dossier,
        "INSERT INTO dossier (id, region, wave, title, source_state, snapshot, events_applied,"
        " last_event_id) VALUES ($1, $2, $3, $4, $5, $6::jsonb, 1, $7)"
        " ON CONFLICT (id) DO UPDATE SET region = EXCLUDED.region, wave = EXCLUDED.wave,"
        " title = EXCLUDED.title, source_state = EXCLUDED.source_state,"
        " snapshot = EXCLUDED.snapshot, events_applied = dossier.events_applied + 1,"
        " last_event_id = EXCLUDED.last_event_id, updated_at = now()");

static const char *const instruction_dossier_types[] = {
    "dossier.deposited",
    "dossier.updated",
    "dossier.withdrawn",
};

static int instruction_is_dossier_event(const char *type)
{
    for (size_t i = 0; i < sizeof instruction_dossier_types / sizeof *instruction_dossier_types;
         i++) {
        if (strcmp(type, instruction_dossier_types[i]) == 0)
            return 1;
    }
    return 0;
}

static const char *instruction_str(json_t *obj, const char *key)
{
    return json_string_value(json_object_get(obj, key)); /* borrowed from the event */
}

enum status instruction_on_event(struct db_conn *conn, const struct cloudevent *ev, void *ud)
{
    (void)ud;
    if (!instruction_is_dossier_event(ev->type))
        return STATUS_OK; /* recorded in the inbox, nothing else to do */
    json_t *dossier = json_object_get(ev->data, "dossier");
    if (!json_is_object(dossier) || !ev->subject || !uuid_is_valid(ev->subject))
        return STATUS_INVALID;
    char *snapshot = json_dumps(dossier, JSON_COMPACT);
    const char *state = strcmp(ev->type, "dossier.withdrawn") == 0
                            ? "withdrawn"
                            : instruction_str(dossier, "state");
    const char *params[] = {ev->subject,
                            instruction_str(dossier, "region"),
                            instruction_str(dossier, "wave"),
                            instruction_str(dossier, "title"),
                            state ? state : "deposited",
                            snapshot,
                            ev->id};
    enum status st = db_exec(conn, &instruction_upsert_dossier, 7, params, NULL);
    free(snapshot);
    if (st == STATUS_OK)
        log_event(LOG_DEBUG, "dossier.projected", "{s:s, s:s}", "dossier", ev->subject, "type",
                  ev->type);
    return st;
}
