/* cloudevent: the CloudEvents 1.0 JSON envelope of every event the platform publishes. */
#ifndef PTCE_CLOUDEVENT_H
#define PTCE_CLOUDEVENT_H

#include <jansson.h>
#include <stddef.h>

#include "clock.h"
#include "status.h"
#include "uuid.h"

/*
 * Builds {specversion, id, source, type, subject, time, datacontenttype, data, requestid?}.
 * Takes the reference to data. The new event id is written to id_out (may be NULL).
 */
json_t *cloudevent_new(const char *source, const char *type, const char *subject, json_t *data,
                       const char *request_id, char *id_out);

/* A parsed event; the strings are borrowed from root, freed by cloudevent_clear. */
struct cloudevent {
    json_t *root;
    const char *id;
    const char *source;
    const char *type;
    const char *subject;
    const char *time;
    const char *request_id; /* the "requestid" extension, or NULL */
    json_t *data;           /* borrowed; may be NULL */
};

/*
 * Parses and validates an envelope (specversion "1.0", non-empty id, source and type). On
 * failure returns STATUS_INVALID and explains in why.
 */
enum status cloudevent_parse(const char *text, size_t len, struct cloudevent *out, char *why,
                             size_t whylen);
void cloudevent_clear(struct cloudevent *ev);

#endif
