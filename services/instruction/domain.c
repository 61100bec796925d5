/* domain (instruction): the pure rules of instruction — no I/O, unit-tested. */
#include "domain.h"

#include <stdio.h>
#include <string.h>

#include "clock.h"
#include "utf8.h"

const char *const domain_states[] = {
    "received",        "correction_requested",
    "regional_review", "awaiting_decision",
    "phase1_laureate", "refused",
    "closed",          "phase2_invited",
    "phase2_applied",  "phase2_review",
    "phase2_laureate", "phase2_not_selected",
    "withdrawn",       NULL,
};

int domain_state_known(const char *state)
{
    for (const char *const *s = domain_states; state && *s; s++) {
        if (strcmp(*s, state) == 0)
            return 1;
    }
    return 0;
}

struct domain_mutation {
    const char *from; /* NULL: any */
    const char *to;
    const char *mutation;
};

/* A table, not a ladder: the write-back of each transition that DS must hear of. */
static const struct domain_mutation domain_mutations[] = {
    {"received", "regional_review", "dossierPasserEnInstruction"},
    {NULL, "phase1_laureate", "dossierAccepter"},
    {NULL, "refused", "dossierRefuser"},
    {NULL, "closed", "dossierClasserSansSuite"},
    {NULL, "correction_requested", "dossierRepasserEnConstruction"},
};

const char *domain_writeback_mutation(const char *from, const char *to)
{
    for (size_t i = 0; i < sizeof domain_mutations / sizeof *domain_mutations; i++) {
        const struct domain_mutation *m = &domain_mutations[i];
        if (strcmp(m->to, to) == 0 && (!m->from || strcmp(m->from, from) == 0))
            return m->mutation;
    }
    return NULL;
}

int domain_decision_phase(const char *to)
{
    if (!strcmp(to, "phase1_laureate") || !strcmp(to, "refused") || !strcmp(to, "closed"))
        return 1;
    if (!strcmp(to, "phase2_laureate") || !strcmp(to, "phase2_not_selected"))
        return 2;
    return 0;
}

const char *domain_decision_from(int phase)
{
    return phase == 2 ? "phase2_review" : "awaiting_decision";
}

int domain_opinion_valid(const char *opinion)
{
    return opinion && (!strcmp(opinion, "favourable") || !strcmp(opinion, "reserved") ||
                       !strcmp(opinion, "unfavourable"));
}

int domain_annotation_value_ok(const char *type, const json_t *value)
{
    struct clock_date d;

    if (json_is_null(value))
        return 1;
    if (!strcmp(type, "text"))
        return json_is_string(value) &&
               utf8_chars(json_string_value(value), json_string_length(value)) <= 10000;
    if (!strcmp(type, "boolean"))
        return json_is_boolean(value);
    if (!strcmp(type, "integer"))
        return json_is_integer(value);
    if (!strcmp(type, "date"))
        return json_is_string(value) && clock_date_parse(json_string_value(value), &d) == STATUS_OK;
    return 0;
}

int domain_annotation_filled(const json_t *value)
{
    if (!value || json_is_null(value))
        return 0;
    if (!json_is_string(value))
        return 1;
    for (const char *s = json_string_value(value); *s; s++) {
        if (*s != ' ' && *s != '\t' && *s != '\n' && *s != '\r')
            return 1;
    }
    return 0;
}

/* Reads one criterion; 0 when it is not {"key": string, "weight" > 0, "max" > 0}. */
static int domain_criterion(const json_t *c, const char **key, json_int_t *weight, json_int_t *max)
{
    *key = json_string_value(json_object_get(c, "key"));
    *weight = json_integer_value(json_object_get(c, "weight"));
    *max = json_integer_value(json_object_get(c, "max"));
    return *key && *weight > 0 && *max > 0 && *weight <= 1000 && *max <= 1000;
}

enum status domain_review_total(const json_t *criteria, const json_t *scores, int *total, char *why,
                                size_t whylen)
{
    long long got = 0, best = 0;
    json_int_t weight, max;
    const char *key;
    size_t i;
    const json_t *c;

    if (!json_is_array(criteria) || json_array_size(criteria) == 0) {
        snprintf(why, whylen, "the grid has no criteria");
        return STATUS_INVALID;
    }
    if (!json_is_object(scores) || json_object_size(scores) != json_array_size(criteria)) {
        snprintf(why, whylen, "scores must name each of the grid's %zu criteria once",
                 json_array_size(criteria));
        return STATUS_INVALID;
    }
    json_array_foreach(criteria, i, c)
    {
        if (!domain_criterion(c, &key, &weight, &max)) {
            snprintf(why, whylen, "criterion %zu of the grid is malformed", i);
            return STATUS_INVALID;
        }
        const json_t *s = json_object_get(scores, key);
        if (!json_is_integer(s) || json_integer_value(s) < 0 || json_integer_value(s) > max) {
            snprintf(why, whylen, "score '%s' must be an integer from 0 to %lld", key,
                     (long long)max);
            return STATUS_INVALID;
        }
        /* Each criterion counts weight × score / max, kept in millionths to stay in integers. */
        got += weight * json_integer_value(s) * 1000000 / max;
        best += weight;
    }
    if (best <= 0)
        return STATUS_INVALID; /* not reached: every criterion has a positive weight */
    /* The weighted share as hundredths of a percent, rounded half up. */
    *total = (int)((got + best * 50) / (best * 100));
    return STATUS_OK;
}

void domain_consolidate(const int *totals, size_t n, int *mean, int *spread)
{
    long long sum = 0;
    int lo = 0, hi = 0;

    if (n == 0) {
        *mean = *spread = -1;
        return;
    }
    for (size_t i = 0; i < n; i++) {
        sum += totals[i];
        if (i == 0 || totals[i] < lo)
            lo = totals[i];
        if (i == 0 || totals[i] > hi)
            hi = totals[i];
    }
    *mean = (int)((2 * sum + (long long)n) / (2 * (long long)n));
    *spread = hi - lo;
}

int64_t domain_percentile(const int64_t *sorted, size_t n, int p)
{
    if (n == 0)
        return -1;
    /* Nearest rank: the smallest value with at least p% of the values at or below it. */
    size_t rank = ((size_t)p * n + 99) / 100;
    if (rank == 0)
        rank = 1;
    if (rank > n)
        rank = n;
    return sorted[rank - 1];
}

int domain_int64_cmp(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

    return (x > y) - (x < y);
}

void domain_csv_field(struct buf *out, const char *s)
{
    if (!s)
        return;
    if (!strpbrk(s, ";\"\r\n")) {
        buf_append(out, s, strlen(s));
        return;
    }
    buf_append(out, "\"", 1);
    for (; *s; s++) {
        if (*s == '"')
            buf_append(out, "\"", 1);
        buf_append(out, s, 1);
    }
    buf_append(out, "\"", 1);
}

/* Copies s without spaces into out (at most len - 1 bytes). */
static void domain_siret_norm(const char *s, char *out, size_t len)
{
    size_t n = 0;

    for (; s && *s && n + 1 < len; s++) {
        if (*s != ' ')
            out[n++] = *s;
    }
    out[n] = '\0';
}

int domain_siret_conflicts(const json_t *doc, const char *siret)
{
    char want[32], have[32];
    size_t i;
    const json_t *m;

    domain_siret_norm(siret, want, sizeof want);
    if (!want[0])
        return 0;
    domain_siret_norm(json_string_value(json_object_get(json_object_get(doc, "carrier"), "siret")),
                      have, sizeof have);
    if (!strcmp(have, want))
        return 1;
    json_array_foreach(json_object_get(doc, "members"), i, m)
    {
        domain_siret_norm(json_string_value(json_object_get(m, "siret")), have, sizeof have);
        if (!strcmp(have, want))
            return 1;
    }
    return 0;
}
