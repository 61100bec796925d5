/* cloudevent: building and validating CloudEvents 1.0 JSON envelopes. */
#include "cloudevent.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

json_t *cloudevent_new(const char *source, const char *type, const char *subject, json_t *data,
                       const char *request_id, char *id_out)
{
    char id[UUID_STR_LEN], now[40];

    uuid_new(id);
    time_now_rfc3339(now, sizeof now);
    json_t *ev =
        json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:o}", "specversion", "1.0", "id", id,
                  "source", source, "type", type, "subject", subject, "time", now,
                  "datacontenttype", "application/json", "data", data ? data : json_object());
    if (request_id)
        json_object_set_new(ev, "requestid", json_string(request_id));
    if (id_out)
        memcpy(id_out, id, UUID_STR_LEN);
    return ev;
}

static const char *cloudevent_str(json_t *root, const char *key)
{
    const char *s = json_string_value(json_object_get(root, key)); /* borrowed */

    return s && s[0] ? s : NULL;
}

enum status cloudevent_parse(const char *text, size_t len, struct cloudevent *out, char *why,
                             size_t whylen)
{
    json_error_t err;

    memset(out, 0, sizeof *out);
    out->root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &err);
    if (!json_is_object(out->root)) {
        snprintf(why, whylen, "not a JSON object: %s", out->root ? "wrong type" : err.text);
        cloudevent_clear(out);
        return STATUS_INVALID;
    }
    const char *spec = cloudevent_str(out->root, "specversion");
    out->id = cloudevent_str(out->root, "id");
    out->source = cloudevent_str(out->root, "source");
    out->type = cloudevent_str(out->root, "type");
    out->subject = cloudevent_str(out->root, "subject");
    out->time = cloudevent_str(out->root, "time");
    out->request_id = cloudevent_str(out->root, "requestid");
    out->data = json_object_get(out->root, "data");
    if (!spec || strcmp(spec, "1.0") != 0 || !out->id || !out->source || !out->type) {
        snprintf(why, whylen, "not a CloudEvents 1.0 envelope (specversion, id, source, type)");
        cloudevent_clear(out);
        return STATUS_INVALID;
    }
    return STATUS_OK;
}

void cloudevent_clear(struct cloudevent *ev)
{
    json_decref(ev->root);
    memset(ev, 0, sizeof *ev);
}
