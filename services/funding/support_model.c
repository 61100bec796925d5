/* support_model: the bouquet's and the charter's inputs, validated — no I/O, unit-tested. */
#include "support_model.h"

#include <stdio.h>
#include <string.h>

#include "http.h"
#include "jnum.h"
#include "region.h"
#include "siret.h"
#include "utf8.h"

/*
 * A string member of 1 to max characters (code points, as JSON Schema counts) that is not only
 * blanks (space, tab, CR, LF: api-spec's pattern '[^ \t\r\n]'); NULL (and an error) otherwise.
 */
static const char *model_text(const json_t *body, const char *field, size_t max, int required,
                              json_t *errors)
{
    const json_t *v = json_object_get(body, field);
    const char *s = json_string_value(v);
    char msg[96];

    if (!required && (!v || json_is_null(v)))
        return NULL;
    if (s && utf8_chars(s, strlen(s)) <= max && strspn(s, " \t\r\n") < strlen(s))
        return s;
    snprintf(msg, sizeof msg, "%s a non-blank string of at most %zu characters",
             required ? "is required:" : "must be null or", max);
    http_field_error(errors, field, msg);
    return NULL;
}

/* One of the NULL-terminated words; NULL (and an error) otherwise. */
static const char *model_word(const json_t *body, const char *field, const char *const *words,
                              const char *message, json_t *errors)
{
    const char *s = json_string_value(json_object_get(body, field));

    for (size_t i = 0; s && words[i]; i++) {
        if (strcmp(s, words[i]) == 0)
            return words[i];
    }
    http_field_error(errors, field, message);
    return NULL;
}

/* A strict YYYY-MM-DD member copied into out (11 bytes); 0, or -1 and an error. */
static int model_date(const json_t *body, const char *field, char out[11],
                      struct clock_date *parsed, json_t *errors)
{
    const char *s = json_string_value(json_object_get(body, field));
    struct clock_date d;

    out[0] = '\0';
    if (!s || clock_date_parse(s, &d) != STATUS_OK) {
        http_field_error(errors, field, "must be a date YYYY-MM-DD");
        return -1;
    }
    snprintf(out, 11, "%s", s);
    if (parsed)
        *parsed = d;
    return 0;
}

/* A UUID member copied into out; an error otherwise. */
static void model_uuid(const json_t *body, const char *field, char out[UUID_STR_LEN],
                       json_t *errors)
{
    const char *s = json_string_value(json_object_get(body, field));

    out[0] = '\0';
    if (!s || !uuid_is_valid(s)) {
        http_field_error(errors, field, "must be a UUID");
        return;
    }
    snprintf(out, UUID_STR_LEN, "%s", s);
}

static enum status model_result(const json_t *errors)
{
    return json_array_size(errors) ? STATUS_INVALID : STATUS_OK;
}

static int model_is_key_id(const char *s)
{
    return strlen(s) == 16 && strspn(s, "0123456789abcdef") == 16;
}

enum status support_action_parse(const json_t *body, struct support_action_input *out,
                                 json_t *errors)
{
    static const char *const formats[] = {"individual", "collective", NULL};
    static const char *const known[] = {"title",          "description", "partner_organisation",
                                        "partner_key_id", "format",      "capacity",
                                        "starts_on",      "ends_on",     NULL};
    const json_t *cap = json_object_get(body, "capacity");
    const json_t *key = json_object_get(body, "partner_key_id");
    struct clock_date from, to;

    memset(out, 0, sizeof *out);
    http_fields_unknown(body, NULL, known, "an action", errors);
    out->title = model_text(body, "title", SUPPORT_TEXT_MAX, 1, errors);
    out->description = model_text(body, "description", SUPPORT_NOTE_MAX, 0, errors);
    out->partner_organisation =
        model_text(body, "partner_organisation", SUPPORT_TEXT_MAX, 1, errors);
    out->format = model_word(body, "format", formats, "must be individual or collective", errors);
    if (key && !json_is_null(key)) {
        out->partner_key_id = json_string_value(key);
        if (!out->partner_key_id || !model_is_key_id(out->partner_key_id))
            http_field_error(errors, "partner_key_id",
                             "must be null or a key id (16 lower-case hex digits)");
    }
    long long capacity;
    if (!jnum_integer_read(cap, 1, 100000, &capacity)) /* 12.0 is 12, as JSON Schema reads it */
        http_field_error(errors, "capacity", "must be an integer from 1 to 100000");
    else
        out->capacity = (long)capacity;
    int ok = model_date(body, "starts_on", out->starts_on, &from, errors) == 0;
    ok &= model_date(body, "ends_on", out->ends_on, &to, errors) == 0;
    if (ok && clock_date_days(&to) < clock_date_days(&from))
        http_field_error(errors, "ends_on", "must not be before starts_on");
    return model_result(errors);
}

enum status support_enrolment_parse(const json_t *body, struct support_enrolment_input *out,
                                    json_t *errors)
{
    static const char *const known[] = {"action_id", "dossier_id", "note", NULL};

    memset(out, 0, sizeof *out);
    http_fields_unknown(body, NULL, known, "an enrolment", errors);
    model_uuid(body, "action_id", out->action_id, errors);
    model_uuid(body, "dossier_id", out->dossier_id, errors);
    out->note = model_text(body, "note", SUPPORT_NOTE_MAX, 0, errors);
    return model_result(errors);
}

/* A date that is not after today; otherwise an error. */
static void model_not_future(const char *field, const struct clock_date *d,
                             const struct clock_date *today, json_t *errors)
{
    if (clock_date_days(d) > clock_date_days(today))
        http_field_error(errors, field, "must not be in the future");
}

enum status support_delivery_parse(const json_t *body, const struct clock_date *today,
                                   struct support_delivery_input *out, json_t *errors)
{
    static const char *const known[] = {"delivered_on", "note", NULL};
    struct clock_date d;

    memset(out, 0, sizeof *out);
    http_fields_unknown(body, NULL, known, "a delivery", errors);
    if (model_date(body, "delivered_on", out->delivered_on, &d, errors) == 0)
        model_not_future("delivered_on", &d, today, errors);
    out->note = model_text(body, "note", SUPPORT_NOTE_MAX, 0, errors);
    return model_result(errors);
}

enum status charter_signature_parse(const json_t *body, const struct clock_date *today,
                                    struct charter_signature_input *out, json_t *errors)
{
    static const char *const roles[] = {"carrier", "contributor", NULL};
    static const char *const known[] = {"organisation",    "siret",     "role",
                                        "charter_version", "signed_on", NULL};
    const char *siret = json_string_value(json_object_get(body, "siret"));
    const char *version = json_string_value(json_object_get(body, "charter_version"));
    struct clock_date d;

    memset(out, 0, sizeof *out);
    http_fields_unknown(body, NULL, known, "a charter signature", errors);
    out->organisation = model_text(body, "organisation", SUPPORT_TEXT_MAX, 1, errors);
    if (!siret)
        http_field_error(errors, "siret", "is required: 14 digits");
    else if (siret_check(siret) != SIRET_OK)
        http_field_error(errors, "siret", siret_check_strerror(siret_check(siret)));
    else
        out->siret = siret;
    out->role = model_word(body, "role", roles, "must be carrier or contributor", errors);
    if (!version || strlen(version) < 1 || strlen(version) > 32 ||
        strspn(version, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-") !=
            strlen(version))
        http_field_error(errors, "charter_version",
                         "must be 1 to 32 letters, digits, '.', '-' or '_'");
    else
        out->charter_version = version;
    if (model_date(body, "signed_on", out->signed_on, &d, errors) == 0)
        model_not_future("signed_on", &d, today, errors);
    return model_result(errors);
}

/* A member that must be a string (or null when nullable); 0 when it is. */
static int model_member(const json_t *data, const char *name, int nullable, const char **out)
{
    const json_t *v = json_object_get(data, name);

    *out = NULL;
    if (nullable && (!v || json_is_null(v)))
        return 0;
    *out = json_string_value(v);
    return *out ? 0 : -1;
}

enum status support_decision_parse(const json_t *data, struct support_decision *out, char *why,
                                   size_t whylen)
{
    const char *id = json_string_value(json_object_get(data, "dossier_id"));
    const json_t *phase = json_object_get(data, "phase");
    const json_t *ben = json_object_get(data, "beneficiary");
    const json_t *version = json_object_get(data, "version");
    const char *bad = NULL;

    memset(out, 0, sizeof *out);
    if (!id || !uuid_is_valid(id)) {
        snprintf(why, whylen, "%s", "dossier_id is not a UUID (or data is not an object)");
        return STATUS_INVALID;
    }
    snprintf(out->dossier_id, sizeof out->dossier_id, "%s", id);
    if (!json_is_integer(phase) || json_integer_value(phase) != 1)
        bad = "phase is not 1";
    else if (model_member(data, "wave", 0, &out->wave) || !*out->wave)
        bad = "wave is missing";
    else if (model_member(data, "region", 1, &out->region) ||
             (out->region && !region_is_valid(out->region)))
        bad = "region is not an INSEE region code or null";
    else if (model_member(data, "outcome", 0, &out->outcome) ||
             (strcmp(out->outcome, "phase1_laureate") != 0 &&
              strcmp(out->outcome, "refused") != 0 && strcmp(out->outcome, "closed") != 0))
        bad = "outcome is not phase1_laureate, refused or closed";
    else if (model_member(data, "reference", 0, &out->reference))
        bad = "reference is missing";
    else if (model_member(data, "decided_at", 0, &out->decided_at) ||
             clock_rfc3339_parse(out->decided_at, &(int64_t){0}) != STATUS_OK)
        bad = "decided_at is not an RFC 3339 time";
    else if (!json_is_integer(version) || json_integer_value(version) < 1)
        bad = "version is not a positive integer";
    else if (model_member(data, "ptce_name", 1, &out->ptce_name))
        bad = "ptce_name is not a string or null";
    else if (ben && !json_is_null(ben) &&
             (!json_is_object(ben) || model_member(ben, "siret", 1, &out->beneficiary_siret) ||
              model_member(ben, "name", 1, &out->beneficiary_name)))
        bad = "beneficiary is not {siret, name}";
    if (bad) {
        snprintf(why, whylen, "%s", bad);
        return STATUS_INVALID;
    }
    return STATUS_OK;
}

int support_decision_grants(const struct support_decision *d)
{
    return strcmp(d->outcome, "phase1_laureate") == 0;
}

void support_today(struct clock_date *out)
{
    time_t now = time(NULL);
    struct tm tm;

    gmtime_r(&now, &tm);
    out->year = tm.tm_year + 1900;
    out->month = tm.tm_mon + 1;
    out->day = tm.tm_mday;
}
