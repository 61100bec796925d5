/* ds_mapping (submission): reads and checks the DS mapping file, and maps a DS dossier by it. */
#include "ds_mapping.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dossier.h"
#include "xalloc.h"

/* Longest key of a path segment (DS's response keys are short camelCase names). */
#define DS_KEY_MAX 128

struct ds_mapping {
    json_t *root;    /* the whole file */
    json_t *champs;  /* borrowed from root */
    json_t *dossier; /* the dossier-level paths, borrowed from root; NULL when absent */
    json_t *labels;  /* member_kind_labels, borrowed from root */
    long demarche;
};

/* Where a model field may be read from. */
enum { DS_FROM_CHAMP = 1, DS_FROM_DOSSIER = 2, DS_FROM_ANY = 3 };

/* The model fields a mapping may name, and where each lands in the content object. */
static const struct ds_field {
    const char *name;
    const char *object; /* the content's sub-object; NULL: the top level */
    const char *key;
    int from;
} ds_fields[] = {
    {"carrier_siret", "carrier", "siret", DS_FROM_ANY},
    {"carrier_name", "carrier", "name", DS_FROM_ANY},
    {"carrier_legal_form", "carrier", "legal_form", DS_FROM_ANY},
    {"carrier_legal_category", "carrier", "legal_category", DS_FROM_ANY},
    {"ptce_name", NULL, "ptce_name", DS_FROM_ANY},
    {"territory_name", "territory", "name", DS_FROM_ANY},
    {"region", "territory", "region", DS_FROM_ANY},
    {"summary", NULL, "summary", DS_FROM_ANY},
    {"legal_person_private", NULL, "legal_person_private", DS_FROM_ANY},
    {"prior_state_support", NULL, "prior_state_support", DS_FROM_ANY},
    /* A repetition's rows and a champ's files exist only inside champs. */
    {"members", NULL, "members", DS_FROM_CHAMP},
    {"main_document", NULL, "main_document", DS_FROM_CHAMP},
};

/* The fields of one member, mapped from the champs of a repetition row. */
static const char *const ds_row_fields[] = {"name", "siret", "kind"};

static const struct ds_field *ds_field_find(const char *name)
{
    for (size_t i = 0; i < sizeof ds_fields / sizeof ds_fields[0]; i++) {
        if (strcmp(ds_fields[i].name, name) == 0)
            return &ds_fields[i];
    }
    return NULL;
}

static int ds_row_field_known(const char *name)
{
    for (size_t i = 0; i < sizeof ds_row_fields / sizeof ds_row_fields[0]; i++) {
        if (strcmp(ds_row_fields[i], name) == 0)
            return 1;
    }
    return 0;
}

/*
 * 1 for a well-formed path: dot-separated keys of letters, digits and '_', each maybe followed
 * by one index "[n]" ("stringValue", "demandeur.entreprise.raisonSociale", "files[0]").
 */
static int ds_path_valid(const char *path)
{
    const char *p = path;

    if (!p)
        return 0;
    for (;;) {
        size_t n = 0;
        while (isalnum((unsigned char)p[n]) || p[n] == '_')
            n++;
        if (n == 0 || n >= DS_KEY_MAX)
            return 0;
        p += n;
        if (*p == '[') {
            size_t d = 1;
            while (isdigit((unsigned char)p[d]))
                d++;
            if (d == 1 || d > 7 || p[d] != ']')
                return 0;
            p += d + 1;
        }
        if (*p == '\0')
            return 1;
        if (*p != '.')
            return 0;
        p++;
    }
}

/* The problems found in a mapping file, written one after the other into the caller's err. */
struct ds_problems {
    char *buf;
    size_t cap;
    size_t len;
    int count;
};

static void ds_problem_add(struct ds_problems *pr, const char *place, const char *what)
{
    if (pr->len < pr->cap) {
        int n = snprintf(pr->buf + pr->len, pr->cap - pr->len, "%s%s: %s", pr->count ? "; " : "",
                         place, what);
        pr->len += n > 0 ? (size_t)n : 0;
        if (pr->len >= pr->cap)
            pr->len = pr->cap; /* truncated: the first problems are the ones that fit */
    }
    pr->count++;
}

/* Checks a "fields" object: known model fields, allowed at this place, with valid paths. */
static void ds_fields_check(json_t *fields, const char *place, int from, int row,
                            struct ds_problems *pr)
{
    const char *name;
    json_t *path;
    char at[256], what[160];

    if (!json_is_object(fields) || json_object_size(fields) == 0) {
        ds_problem_add(pr, place, "must be a non-empty object {model field: path}");
        return;
    }
    json_object_foreach(fields, name, path)
    {
        const struct ds_field *f = row ? NULL : ds_field_find(name);
        snprintf(at, sizeof at, "%s.%.64s", place, name);
        if (row ? !ds_row_field_known(name) : !f)
            ds_problem_add(
                pr, at, row ? "unknown member field (name, siret, kind)" : "unknown model field");
        else if (f && !(f->from & from))
            ds_problem_add(pr, at, "can only be read from a champ");
        if (!json_is_string(path)) {
            ds_problem_add(pr, at, "the path must be a string");
        } else if (!ds_path_valid(json_string_value(path))) {
            snprintf(what, sizeof what, "bad path \"%.80s\" (keys separated by '.', '[n]' indexes)",
                     json_string_value(path));
            ds_problem_add(pr, at, what);
        }
    }
}

/* Checks the champ table at place ("champs", or a repetition's "row_champs"). */
static void ds_champs_check(json_t *root, json_t *champs, const char *place, int row,
                            struct ds_problems *pr)
{
    const char *id;
    json_t *spec;
    char at[256];

    json_object_foreach(champs, id, spec)
    {
        snprintf(at, sizeof at, "%s.%.40s", place, id);
        if (!json_is_object(spec)) {
            ds_problem_add(pr, at, "must be an object {typename, fields}");
            continue;
        }
        json_t *fields = json_object_get(spec, "fields");
        json_t *labels = json_object_get(spec, "labels");
        char sub[300];
        snprintf(sub, sizeof sub, "%s.fields", at);
        ds_fields_check(fields, sub, DS_FROM_CHAMP, row, pr);
        if (!row && json_object_get(fields, "members")) {
            json_t *rows = json_object_get(spec, "row_champs");
            snprintf(sub, sizeof sub, "%s.row_champs", at);
            if (json_is_object(rows))
                ds_champs_check(root, rows, sub, 1, pr);
            else
                ds_problem_add(pr, sub, "is required for members (the champs of a row)");
        }
        if (labels && !(json_is_string(labels) &&
                        json_is_object(json_object_get(root, json_string_value(labels))))) {
            snprintf(sub, sizeof sub, "%s.labels", at);
            ds_problem_add(pr, sub, "must name a label table of the file (member_kind_labels)");
        }
    }
}

/* Checks the whole file; returns the number of problems written into pr. */
static int ds_mapping_check(json_t *root, struct ds_problems *pr)
{
    json_t *champs = json_object_get(root, "champs");
    json_t *dossier = json_object_get(root, "dossier");

    if (!json_is_object(champs))
        ds_problem_add(pr, "champs", "is required: an object keyed by champDescriptorId");
    else
        ds_champs_check(root, champs, "champs", 0, pr);
    if (!json_is_object(json_object_get(root, "member_kind_labels")))
        ds_problem_add(pr, "member_kind_labels", "is required: an object {DS label: kind}");
    if (!json_is_integer(json_object_get(root, "demarche_number")))
        ds_problem_add(pr, "demarche_number", "is required: an integer");
    if (dossier && !json_is_null(dossier)) {
        if (json_is_object(dossier))
            ds_fields_check(dossier, "dossier", DS_FROM_DOSSIER, 0, pr);
        else
            ds_problem_add(pr, "dossier", "must be an object {model field: path}");
    }
    return pr->count;
}

struct ds_mapping *ds_mapping_load(const char *path, const char *text, char *err, size_t errlen)
{
    json_error_t jerr;
    const char *what = path && *path ? path : "embedded mapping";
    json_t *root = path && *path ? json_load_file(path, JSON_REJECT_DUPLICATES, &jerr)
                                 : json_loads(text, JSON_REJECT_DUPLICATES, &jerr);

    if (!root) {
        snprintf(err, errlen, "%s: %s (line %d)", what, jerr.text, jerr.line);
        return NULL;
    }
    int n = snprintf(err, errlen, "%s: ", what);
    size_t used = n > 0 && (size_t)n < errlen ? (size_t)n : 0; /* a path too long: no prefix */
    struct ds_problems pr = {err + used, errlen - used, 0, 0};
    if (ds_mapping_check(root, &pr) > 0) {
        json_decref(root);
        return NULL;
    }
    err[0] = '\0';
    struct ds_mapping *m = xcalloc(1, sizeof *m);
    m->root = root;
    m->champs = json_object_get(root, "champs");
    m->dossier = json_object_get(root, "dossier");
    m->labels = json_object_get(root, "member_kind_labels");
    m->demarche = (long)json_integer_value(json_object_get(root, "demarche_number"));
    return m;
}

void ds_mapping_free(struct ds_mapping *m)
{
    if (!m)
        return;
    json_decref(m->root);
    free(m);
}

long ds_mapping_demarche(const struct ds_mapping *m)
{
    return m->demarche;
}

/* Follows "a.b[0].c" through obj; returns a borrowed value, or NULL for null or missing. */
static json_t *ds_path_get(json_t *obj, const char *path)
{
    char key[DS_KEY_MAX];
    const char *p = path;

    while (obj && *p) {
        size_t n = strcspn(p, ".[");
        if (n >= sizeof key)
            return NULL;
        memcpy(key, p, n);
        key[n] = '\0';
        if (n)
            obj = json_object_get(obj, key);
        p += n;
        if (*p == '[') {
            char *end;
            long idx = strtol(p + 1, &end, 10);
            if (*end != ']' || idx < 0)
                return NULL;
            obj = json_array_get(obj, (size_t)idx);
            p = end + 1;
        }
        if (*p == '.')
            p++;
    }
    return json_is_null(obj) ? NULL : obj;
}

/* The content object that holds field f (the content itself or one of its sub-objects). */
static json_t *ds_field_holder(json_t *content, const struct ds_field *f)
{
    return f->object ? json_object_get(content, f->object) : content;
}

/* Sets model field name in content (value borrowed; NULL is JSON null). */
static void ds_content_put(json_t *content, const char *name, json_t *value)
{
    const struct ds_field *f = ds_field_find(name);

    if (f)
        json_object_set(ds_field_holder(content, f), f->key, value ? value : json_null());
}

/* 1 when model field name of content holds nothing yet (JSON null). */
static int ds_content_unanswered(json_t *content, const char *name)
{
    const struct ds_field *f = ds_field_find(name);

    return f && json_is_null(json_object_get(ds_field_holder(content, f), f->key));
}

/* Copies a DS File into our main_document shape (byteSizeBigInt is a string in DS). */
static json_t *ds_file(json_t *file)
{
    const char *size = json_string_value(json_object_get(file, "byteSizeBigInt"));

    return json_pack(
        "{s:O?, s:O?, s:I, s:O?, s:n, s:O?}", "filename", json_object_get(file, "filename"),
        "content_type", json_object_get(file, "contentType"), "byte_size",
        (json_int_t)(size ? strtoll(size, NULL, 10) : 0), "checksum",
        json_object_get(file, "checksum"), "pages", "url", json_object_get(file, "url"));
}

/* One repetition row → {name, siret, kind}. */
static json_t *ds_member(const struct ds_mapping *m, json_t *row_map, json_t *row)
{
    json_t *member = json_pack("{s:n, s:n, s:n}", "name", "siret", "kind");
    size_t i;
    json_t *champ;

    json_array_foreach(json_object_get(row, "champs"), i, champ)
    {
        const char *desc = json_string_value(json_object_get(champ, "champDescriptorId"));
        json_t *spec = desc ? json_object_get(row_map, desc) : NULL;
        const char *field;
        json_t *path;
        json_object_foreach(json_object_get(spec, "fields"), field, path)
        {
            json_t *v = ds_path_get(champ, json_string_value(path));
            if (v && json_object_get(spec, "labels")) /* a drop-down label → our kind */
                v = json_object_get(m->labels, json_string_value(v));
            json_object_set(member, field, v ? v : json_null());
        }
    }
    return member;
}

/* Maps one top-level champ through its spec into content. */
static void ds_champ_map(const struct ds_mapping *m, json_t *spec, json_t *champ, json_t *content)
{
    const char *field;
    json_t *path;

    json_object_foreach(json_object_get(spec, "fields"), field, path)
    {
        json_t *v = ds_path_get(champ, json_string_value(path));
        if (strcmp(field, "members") == 0) {
            size_t r;
            json_t *row;
            json_t *members = json_object_get(content, "members");
            json_array_foreach(v, r, row)
            {
                json_array_append_new(members,
                                      ds_member(m, json_object_get(spec, "row_champs"), row));
            }
        } else if (strcmp(field, "main_document") == 0) {
            if (v)
                json_object_set_new(content, field, ds_file(v));
        } else {
            ds_content_put(content, field, v);
        }
    }
}

json_t *dossier_content_from_ds(const struct ds_mapping *m, json_t *ds_dossier)
{
    json_t *content = dossier_content_empty();
    size_t i;
    json_t *champ;
    const char *field;
    json_t *path;

    json_array_foreach(json_object_get(ds_dossier, "champs"), i, champ)
    {
        const char *desc = json_string_value(json_object_get(champ, "champDescriptorId"));
        json_t *spec = desc ? json_object_get(m->champs, desc) : NULL;
        if (spec)
            ds_champ_map(m, spec, champ, content);
    }
    /* Dossier-level paths (the demandeur) fill only what no champ answered. */
    json_object_foreach(m->dossier, field, path)
    {
        json_t *v = ds_path_get(ds_dossier, json_string_value(path));
        if (v && ds_content_unanswered(content, field))
            ds_content_put(content, field, v);
    }
    return content;
}
