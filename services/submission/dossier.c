/* dossier (submission): pure domain code — mapping, validation and eligibility rules. */
#include "dossier.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "http.h"
#include "jnum.h"
#include "region.h"
#include "siret.h"
#include "utf8.h"

/* ---- the content ---- */

json_t *dossier_content_empty(void)
{
    return json_pack("{s:{s:n, s:n, s:n, s:n}, s:n, s:{s:n, s:n}, s:[], s:n, s:n, s:n, s:n}",
                     "carrier", "siret", "name", "legal_form", "legal_category", "ptce_name",
                     "territory", "name", "region", "members", "summary", "main_document",
                     "legal_person_private", "prior_state_support");
}

/* ---- partner deposits ---- */

static const char *const dossier_member_kinds[] = {
    "ess_enterprise",   "other_enterprise", "local_authority", "research",
    "higher_education", "training",         "other",
};

static int dossier_kind_valid(const char *kind)
{
    for (size_t i = 0; kind && i < sizeof dossier_member_kinds / sizeof *dossier_member_kinds;
         i++) {
        if (strcmp(kind, dossier_member_kinds[i]) == 0)
            return 1;
    }
    return 0;
}

/* A string field of at most max characters (code points, as JSON Schema counts); "required" decides
 * whether null is accepted. */
static int dossier_text(json_t *obj, const char *key, const char *field, size_t max, int required,
                        json_t *errors)
{
    json_t *v = json_object_get(obj, key);
    char msg[128];

    if (!v || json_is_null(v)) {
        if (required)
            http_field_error(errors, field, "is required");
        return !required;
    }
    if (!json_is_string(v) || json_string_length(v) == 0 ||
        utf8_chars(json_string_value(v), json_string_length(v)) > max) {
        snprintf(msg, sizeof msg, "must be a non-empty string of at most %zu characters", max);
        http_field_error(errors, field, msg);
        return 0;
    }
    return 1;
}

static void dossier_partner_members(json_t *members, json_t *errors)
{
    size_t i;
    json_t *mb;
    char field[64];

    if (!json_is_array(members) || json_array_size(members) > 100) {
        http_field_error(errors, "members", "must be an array of at most 100 members");
        return;
    }
    json_array_foreach(members, i, mb)
    {
        snprintf(field, sizeof field, "members[%zu]", i);
        if (!json_is_object(mb)) {
            http_field_error(errors, field, "must be an object {name, siret, kind}");
            continue;
        }
        static const char *const member_keys[] = {"name", "siret", "kind", NULL};
        http_fields_unknown(mb, field, member_keys, "a dossier", errors);
        snprintf(field, sizeof field, "members[%zu].name", i);
        dossier_text(mb, "name", field, 300, 1, errors);
        snprintf(field, sizeof field, "members[%zu].siret", i);
        dossier_text(mb, "siret", field, 14, 0, errors);
        snprintf(field, sizeof field, "members[%zu].kind", i);
        if (!dossier_kind_valid(json_string_value(json_object_get(mb, "kind"))))
            http_field_error(errors, field,
                             "must be one of ess_enterprise, other_enterprise, local_authority, "
                             "research, higher_education, training, other");
    }
}

static void dossier_partner_bool(json_t *body, const char *key, json_t *errors)
{
    json_t *v = json_object_get(body, key);

    if (v && !json_is_boolean(v) && !json_is_null(v))
        http_field_error(errors, key, "must be true, false or null");
}

json_t *dossier_content_from_partner(json_t *body, json_t *errors)
{
    static const char *const known[] = {"carrier",
                                        "ptce_name",
                                        "territory",
                                        "members",
                                        "summary",
                                        "main_document",
                                        "legal_person_private",
                                        "prior_state_support",
                                        "partner_reference",
                                        NULL};
    static const char *const carrier_keys[] = {"siret", "name", "legal_form", NULL};
    static const char *const territory_keys[] = {"name", "region", NULL};
    static const char *const document_keys[] = {"filename", "pages", NULL};
    json_t *carrier = json_object_get(body, "carrier");
    json_t *territory = json_object_get(body, "territory");
    json_t *doc = json_object_get(body, "main_document");
    size_t before = json_array_size(errors);

    http_fields_unknown(body, "", known, "a dossier", errors);
    json_t *reference = json_object_get(body, "partner_reference");
    if (reference && !json_is_string(reference) && !json_is_null(reference))
        http_field_error(errors, "partner_reference",
                         "must be a string or null (it is not stored)");
    if (!json_is_object(carrier)) {
        http_field_error(errors, "carrier", "is required: {siret, name, legal_form}");
    } else {
        http_fields_unknown(carrier, "carrier", carrier_keys, "a dossier", errors);
        dossier_text(carrier, "siret", "carrier.siret", 14, 1, errors);
        dossier_text(carrier, "name", "carrier.name", 300, 1, errors);
        dossier_text(carrier, "legal_form", "carrier.legal_form", 100, 0, errors);
    }
    if (!json_is_object(territory)) {
        http_field_error(errors, "territory", "is required: {name, region}");
    } else {
        http_fields_unknown(territory, "territory", territory_keys, "a dossier", errors);
        dossier_text(territory, "name", "territory.name", 300, 1, errors);
        if (!region_is_valid(json_string_value(json_object_get(territory, "region"))))
            http_field_error(errors, "territory.region", "must be an INSEE region code such as 84");
    }
    dossier_text(body, "ptce_name", "ptce_name", 300, 0, errors);
    dossier_partner_members(json_object_get(body, "members"), errors);
    dossier_text(body, "summary", "summary", 20000, 1, errors);
    dossier_partner_bool(body, "legal_person_private", errors);
    dossier_partner_bool(body, "prior_state_support", errors);
    if (doc && !json_is_null(doc)) {
        json_t *pages = json_object_get(doc, "pages");
        long long npages = 0;
        if (json_is_object(doc))
            http_fields_unknown(doc, "main_document", document_keys, "a dossier", errors);
        if (!json_is_object(doc) ||
            !dossier_text(doc, "filename", "main_document.filename", 255, 1, errors))
            http_field_error(errors, "main_document", "must be {filename, pages?}");
        else if (pages && !jnum_integer_read(pages, 1, 99999, &npages))
            http_field_error(errors, "main_document.pages", "must be a positive integer");
        else if (pages) /* 8.0 is stored as 8 */
            json_object_set_new(doc, "pages", json_integer(npages));
    }
    if (json_array_size(errors) > before)
        return NULL;

    json_t *content = dossier_content_empty();
    json_object_set(content, "carrier", carrier);
    json_object_set(content, "territory", territory);
    json_t *name = json_object_get(body, "ptce_name");
    json_object_set(content, "ptce_name", name ? name : json_null());
    json_object_set(content, "members", json_object_get(body, "members"));
    json_object_set(content, "summary", json_object_get(body, "summary"));
    if (doc && !json_is_null(doc))
        json_object_set_new(content, "main_document",
                            json_pack("{s:O, s:n, s:n, s:n, s:O?}", "filename",
                                      json_object_get(doc, "filename"), "content_type", "byte_size",
                                      "checksum", "pages", json_object_get(doc, "pages")));
    json_t *lpp = json_object_get(body, "legal_person_private");
    json_t *pss = json_object_get(body, "prior_state_support");
    json_object_set(content, "legal_person_private", lpp ? lpp : json_null());
    json_object_set(content, "prior_state_support", pss ? pss : json_null());
    return content;
}

/* ---- rules ---- */

enum outcome { PASS, FAIL, REVIEW };
static const char *const outcome_names[] = {"pass", "fail", "needs_review"};

static void dossier_check_add(json_t *checks, const char *rule, enum outcome o, json_t *evidence)
{
    json_array_append_new(checks, json_pack("{s:s, s:s, s:o}", "rule", rule, "outcome",
                                            outcome_names[o], "evidence", evidence));
}

/* A yes/no answer: the wanted answer passes, the other fails, no answer needs review. */
static void dossier_rule_yes_no(json_t *checks, const char *rule, json_t *answer, int wanted)
{
    enum outcome o = !json_is_boolean(answer)                ? REVIEW
                     : json_is_true(answer) == (wanted != 0) ? PASS
                                                             : FAIL;
    dossier_check_add(checks, rule, o, json_pack("{s:O}", "answer", answer ? answer : json_null()));
}

/* What the first digit of an INSEE catégorie juridique says about the person. */
static const struct {
    char digit;
    enum outcome outcome;
    const char *kind;
} dossier_categories[] = {
    {'1', FAIL, "natural person (entrepreneur individuel), not a legal person"},
    {'2', FAIL, "group without legal personality"},
    {'3', REVIEW, "foreign legal person: its law decides"},
    {'4', FAIL, "public-law person under commercial law"},
    {'5', PASS, "commercial company"},
    {'6', PASS, "other legal person registered at the RCS"},
    {'7', FAIL, "public-law person or body under administrative law"},
    {'8', PASS, "private-law body of a special kind"},
    {'9', PASS, "other private-law group (association, foundation...)"},
};

/* 1 for an INSEE catégorie juridique: exactly four digits. */
static int dossier_category_valid(const char *code)
{
    if (!code || strlen(code) != 4)
        return 0;
    for (int i = 0; i < 4; i++) {
        if (!isdigit((unsigned char)code[i]))
            return 0;
    }
    return 1;
}

/*
 * The carrier is a private-law legal person. A yes/no answer decides when there is one;
 * otherwise the first digit of the catégorie juridique does (5, 6, 8, 9 pass; 1, 2, 4, 7
 * fail; 3, or no valid code, needs review), with the code as evidence.
 */
static void dossier_rule_legal_person(json_t *checks, json_t *answer, json_t *carrier)
{
    static const char rule[] = "carrier.private_legal_person";
    const char *code = json_string_value(json_object_get(carrier, "legal_category"));
    enum outcome o = REVIEW;
    const char *kind =
        code ? "not an INSEE catégorie juridique" : "no answer, no catégorie juridique";

    if (json_is_boolean(answer)) {
        dossier_rule_yes_no(checks, rule, answer, 1);
        return;
    }
    for (size_t i = 0; dossier_category_valid(code) &&
                       i < sizeof dossier_categories / sizeof dossier_categories[0];
         i++) {
        if (dossier_categories[i].digit == code[0]) {
            o = dossier_categories[i].outcome;
            kind = dossier_categories[i].kind;
        }
    }
    dossier_check_add(
        checks, rule, o,
        json_pack("{s:n, s:s?, s:s}", "answer", "legal_category", code, "reason", kind));
}

static void dossier_rule_siret(json_t *checks, const char *rule, const char *siret)
{
    if (!siret) {
        dossier_check_add(checks, rule, REVIEW, json_pack("{s:s}", "reason", "no SIRET given"));
        return;
    }
    enum siret_check c = siret_check(siret);
    dossier_check_add(checks, rule, c == SIRET_OK ? PASS : FAIL,
                      json_pack("{s:s, s:s}", "siret", siret, "result", siret_check_strerror(c)));
}

/* Members: at least three, one ESS enterprise, one other enterprise, one article-9 actor. */
static void dossier_rule_members(json_t *checks, json_t *members)
{
    size_t i, n = json_array_size(members), unknown = 0, bad_sirets = 0;
    int ess = 0, other = 0, actor = 0;
    json_t *mb, *bad = json_array();

    json_array_foreach(members, i, mb)
    {
        const char *kind = json_string_value(json_object_get(mb, "kind"));
        const char *siret = json_string_value(json_object_get(mb, "siret"));
        if (!kind)
            unknown++;
        else if (strcmp(kind, "ess_enterprise") == 0)
            ess = 1;
        else if (strcmp(kind, "other_enterprise") == 0)
            other = 1;
        else
            actor = 1;
        if (siret && siret_check(siret) != SIRET_OK) {
            bad_sirets++;
            json_array_append_new(bad, json_string(siret));
        }
    }
    dossier_check_add(checks, "members.at_least_three", n >= 3 ? PASS : FAIL,
                      json_pack("{s:I}", "members", (json_int_t)n));
    enum outcome mix = ess && other && actor ? PASS : unknown ? REVIEW : FAIL;
    dossier_check_add(checks, "members.required_kinds", mix,
                      json_pack("{s:b, s:b, s:b, s:I}", "ess_enterprise", ess, "other_enterprise",
                                other, "other_actor", actor, "unknown_kind", (json_int_t)unknown));
    dossier_check_add(checks, "members.siret_format", bad_sirets ? FAIL : PASS,
                      json_pack("{s:o}", "invalid", bad));
}

static void dossier_rule_territory(json_t *checks, json_t *territory)
{
    const char *name = json_string_value(json_object_get(territory, "name"));
    const char *region = json_string_value(json_object_get(territory, "region"));

    dossier_check_add(checks, "territory.defined", name && *name ? PASS : REVIEW,
                      json_pack("{s:s?}", "name", name));
    dossier_check_add(checks, "territory.region_code",
                      !region                   ? REVIEW
                      : region_is_valid(region) ? PASS
                                                : FAIL,
                      json_pack("{s:s?}", "region", region));
}

/* Why a main document has no page count, for the evidence of needs_review. */
static const char *dossier_pages_unknown_reason(const char *verification)
{
    static const struct {
        const char *verification;
        const char *reason;
    } reasons[] = {
        {"too_large", "file larger than the download limit: not downloaded"},
        {"checksum_mismatch", "downloaded bytes do not match DS's checksum"},
        {"not_a_pdf", "not a readable PDF"},
        {"host_refused", "file URL outside PTCE_DS_FILE_HOSTS (or not https): not downloaded"},
    };

    for (size_t i = 0; verification && i < sizeof reasons / sizeof reasons[0]; i++) {
        if (strcmp(verification, reasons[i].verification) == 0)
            return reasons[i].reason;
    }
    return "page count unknown";
}

static void dossier_rule_pages(json_t *checks, json_t *doc)
{
    json_t *pages = json_object_get(doc, "pages");

    if (!json_is_object(doc)) { /* absent, or JSON null as in every mapped content */
        dossier_check_add(checks, "main_document.max_pages", REVIEW,
                          json_pack("{s:s}", "reason", "no main document"));
        return;
    }
    if (!json_is_integer(pages)) {
        const char *verification = json_string_value(json_object_get(doc, "verification"));
        dossier_check_add(checks, "main_document.max_pages", REVIEW,
                          json_pack("{s:s, s:s?, s:O?}", "reason",
                                    dossier_pages_unknown_reason(verification), "verification",
                                    verification, "byte_size", json_object_get(doc, "byte_size")));
        return;
    }
    json_int_t n = json_integer_value(pages);
    dossier_check_add(checks, "main_document.max_pages", n <= DOSSIER_MAX_PAGES ? PASS : FAIL,
                      json_pack("{s:I, s:i}", "pages", n, "max", DOSSIER_MAX_PAGES));
}

json_t *dossier_checks(json_t *content, const char **eligibility)
{
    json_t *checks = json_array();
    json_t *carrier = json_object_get(content, "carrier");
    size_t i;
    json_t *c;
    int fail = 0, review = 0;

    dossier_rule_legal_person(checks, json_object_get(content, "legal_person_private"), carrier);
    dossier_rule_siret(checks, "carrier.siret",
                       json_string_value(json_object_get(carrier, "siret")));
    dossier_rule_members(checks, json_object_get(content, "members"));
    dossier_rule_territory(checks, json_object_get(content, "territory"));
    dossier_rule_yes_no(checks, "no_prior_state_support",
                        json_object_get(content, "prior_state_support"), 0);
    dossier_rule_pages(checks, json_object_get(content, "main_document"));
    json_array_foreach(checks, i, c)
    {
        const char *o = json_string_value(json_object_get(c, "outcome"));
        fail |= strcmp(o, "fail") == 0;
        review |= strcmp(o, "needs_review") == 0;
    }
    *eligibility = fail ? "ineligible" : review ? "needs_review" : "eligible";
    return checks;
}

/* ---- the document ---- */

json_t *dossier_document(const struct dossier_meta *meta, json_t *content, json_t *checks)
{
    json_t *territory = json_object_get(content, "territory");
    json_t *title = json_object_get(content, "ptce_name");
    if (!json_is_string(title) || json_string_length(title) == 0)
        title = json_object_get(territory, "name"); /* partner deposits may leave it out */
    json_t *doc = json_pack(
        "{s:s, s:s, s:s, s:s, s:s, s:s, s:i, s:O?, s:O?, s:s, s:s, s:s?}", "id", meta->id, "origin",
        meta->origin, "wave", meta->wave, "state", meta->state, "eligibility", meta->eligibility,
        "rules_version", meta->rules_version, "version", meta->version, "region",
        json_object_get(territory, "region"), "title", title, "deposited_at", meta->deposited_at,
        "updated_at", meta->updated_at, "ds_updated_at", meta->ds_updated_at);
    json_t *copy = json_deep_copy(content);

    if (meta->ds_number)
        json_object_set_new(doc, "ds_number", json_integer(meta->ds_number));
    json_object_del(json_object_get(copy, "main_document"), "url"); /* it expires in an hour */
    json_object_update(doc, copy);
    json_decref(copy);
    json_object_set(doc, "checks", checks);
    return doc;
}

/* ---- DS states and times ---- */

int ds_state_is_valid(const char *state)
{
    static const char *const states[] = {"en_construction", "en_instruction", "accepte", "refuse",
                                         "sans_suite"};

    for (size_t i = 0; state && i < sizeof states / sizeof *states; i++) {
        if (strcmp(state, states[i]) == 0)
            return 1;
    }
    return 0;
}

/* Reads exactly n digits at *p into *out and advances. */
static int ds_digits(const char **p, int n, int *out)
{
    int v = 0;

    for (int i = 0; i < n; i++) {
        if (!isdigit((unsigned char)(*p)[i]))
            return -1;
        v = v * 10 + ((*p)[i] - '0');
    }
    *p += n;
    *out = v;
    return 0;
}

/*
 * Reads the zone: "UTC", "Z", "+0200", "+02:00", "-05:00". Offset in minutes east of UTC.
 * spaced: the zone came after a space, where a bare "0200" may stand for "+0200".
 */
static int ds_zone(const char *p, int spaced, int *minutes)
{
    int sign, hh, mm;

    if (!strcmp(p, "UTC") || !strcmp(p, "Z")) {
        *minutes = 0;
        return 0;
    }
    /*
     * A "+" that travelled unencoded through a form or a query string arrives as a space,
     * which the caller already skipped: a bare "0200" is read as "+0200" (only there: glued
     * to the seconds or their fraction, digits would be ambiguous).
     */
    sign = *p == '-' ? -1 : 1;
    if (*p == '+' || *p == '-')
        p++;
    else if (!spaced || !isdigit((unsigned char)*p))
        return -1;
    if (ds_digits(&p, 2, &hh) != 0)
        return -1;
    if (*p == ':')
        p++;
    if (ds_digits(&p, 2, &mm) != 0 || *p != '\0' || hh > 14 || mm > 59)
        return -1;
    *minutes = sign * (hh * 60 + mm);
    return 0;
}

/* Days in month mo (1–12) of year y, Gregorian. */
static int ds_month_days(int y, int mo)
{
    static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;

    return mo == 2 && leap ? 29 : days[mo - 1];
}

int ds_time_parse(const char *text, char *out, size_t outlen)
{
    struct tm tm = {0};
    int y, mo, d, h, mi, s, zone;
    const char *p = text;

    if (!text || strlen(text) > DS_TIME_MAX || ds_digits(&p, 4, &y) || *p++ != '-' ||
        ds_digits(&p, 2, &mo) || *p++ != '-' || ds_digits(&p, 2, &d) || (*p != ' ' && *p != 'T') ||
        !*p++ || ds_digits(&p, 2, &h) || *p++ != ':' || ds_digits(&p, 2, &mi) || *p++ != ':' ||
        ds_digits(&p, 2, &s))
        return -1;
    if (*p == '.') { /* fractional seconds are dropped: DS's times are whole seconds */
        p++;
        while (isdigit((unsigned char)*p))
            p++;
    }
    const char *zone_at = p;
    while (*p == ' ')
        p++;
    if (ds_zone(p, p > zone_at, &zone) != 0 || y < 2000 || y > 2200 || mo < 1 || mo > 12 || d < 1 ||
        d > ds_month_days(y, mo) || h > 23 || mi > 59 || s > 60)
        return -1; /* 31 February is refused, not rolled over to 3 March */
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = s;
    time_t t = timegm(&tm) - (time_t)zone * 60;
    struct tm utc;
    gmtime_r(&t, &utc);
    return strftime(out, outlen, "%Y-%m-%dT%H:%M:%SZ", &utc) ? 0 : -1;
}
