/* domain (funding): agreements' schedules, clauses, decisions and open data — no I/O. */
#include "domain.h"

#include <stdio.h>
#include <string.h>

#include "clock.h"
#include "money.h"
#include "region.h"
#include "siret.h"
#include "uuid.h"

static const char *const domain_conditions[] = {
    "signature",
    "year1_reports_approved",
    "year2_reports_approved",
    "year3_decision",
};

const char funding_scdl_header[] =
    "nomAttribuant,idAttribuant,dateConvention,referenceDecision,nomBeneficiaire,"
    "idBeneficiaire,objet,montant,nature,conditionsVersement,datesPeriodeVersement,idRAE,"
    "notificationUE,pourcentageSubvention\r\n";

json_t *funding_template_default(void)
{
    return json_pack("[{s:s, s:i, s:s, s:i}, {s:s, s:i, s:s, s:i}]", "label",
                     "Versement à la signature", "weight", 50, "condition", "signature",
                     "due_offset_months", 0, "label", "Versement de deuxième année", "weight", 50,
                     "condition", "year1_reports_approved", "due_offset_months", 12);
}

static int domain_condition_is_valid(const char *c)
{
    for (size_t i = 0; c && i < sizeof domain_conditions / sizeof *domain_conditions; i++) {
        if (strcmp(c, domain_conditions[i]) == 0)
            return 1;
    }
    return 0;
}

enum status funding_template_check(const json_t *tmpl, char *why, size_t whylen)
{
    size_t n = json_array_size(tmpl);

    if (!json_is_array(tmpl) || n < 1 || n > FUNDING_MAX_TRANCHES) {
        snprintf(why, whylen, "a template has 1 to %d tranches", FUNDING_MAX_TRANCHES);
        return STATUS_INVALID;
    }
    for (size_t i = 0; i < n; i++) {
        const json_t *e = json_array_get(tmpl, i);
        const json_t *w = json_object_get(e, "weight");
        const json_t *off = json_object_get(e, "due_offset_months");
        const char *label = json_string_value(json_object_get(e, "label"));
        if (!label || !*label || !json_is_integer(w) || json_integer_value(w) <= 0 ||
            json_integer_value(w) > 10000 || !json_is_integer(off) || json_integer_value(off) < 0 ||
            json_integer_value(off) > 60 ||
            !domain_condition_is_valid(json_string_value(json_object_get(e, "condition")))) {
            snprintf(why, whylen,
                     "tranche %zu needs a label, a weight from 1 to 10000, a known condition and"
                     " due_offset_months from 0 to 60",
                     i + 1);
            return STATUS_INVALID;
        }
    }
    return STATUS_OK;
}

enum status funding_schedule_build(int64_t amount, const json_t *tmpl, json_t **out, char *why,
                                   size_t whylen)
{
    int64_t weights[FUNDING_MAX_TRANCHES], parts[FUNDING_MAX_TRANCHES];
    enum status st = funding_template_check(tmpl, why, whylen);

    if (st != STATUS_OK)
        return st;
    if (amount < 0) {
        snprintf(why, whylen, "an agreement's amount is not negative");
        return STATUS_INVALID;
    }
    size_t n = json_array_size(tmpl);
    for (size_t i = 0; i < n; i++)
        weights[i] = json_integer_value(json_object_get(json_array_get(tmpl, i), "weight"));
    st = money_allocate(amount, weights, n, parts);
    if (st != STATUS_OK) {
        snprintf(why, whylen, "the amount cannot be split by these weights");
        return st;
    }
    json_t *schedule = json_array();
    for (size_t i = 0; i < n; i++) {
        const json_t *e = json_array_get(tmpl, i);
        json_array_append_new(
            schedule, json_pack("{s:O, s:O, s:O, s:o}", "label", json_object_get(e, "label"),
                                "condition", json_object_get(e, "condition"), "due_offset_months",
                                json_object_get(e, "due_offset_months"), "amount_cents",
                                money_to_json(parts[i])));
    }
    *out = schedule;
    return STATUS_OK;
}

int funding_schedule_matches(const json_t *schedule, int64_t amount)
{
    int64_t sum = 0;

    if (!json_is_array(schedule) || json_array_size(schedule) == 0)
        return -1;
    for (size_t i = 0; i < json_array_size(schedule); i++) {
        const json_t *a = json_object_get(json_array_get(schedule, i), "amount_cents");
        if (!json_is_integer(a) || json_integer_value(a) < 0 ||
            money_add(sum, json_integer_value(a), &sum) != STATUS_OK)
            return -1;
    }
    return sum == amount ? 0 : -1;
}

static const char *domain_str(const json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key)); /* borrowed from o */
}

enum status funding_decision_read(const json_t *data, struct funding_decision *d, char *why,
                                  size_t whylen)
{
    static const char *const outcomes[] = {"phase2_laureate", "phase2_not_selected"};
    const json_t *ben = json_object_get(data, "beneficiary");
    int64_t us;

    memset(d, 0, sizeof *d);
    d->dossier_id = domain_str(data, "dossier_id");
    d->wave = domain_str(data, "wave");
    d->region = domain_str(data, "region");
    d->outcome = domain_str(data, "outcome");
    d->reference = domain_str(data, "reference");
    d->decided_at = domain_str(data, "decided_at");
    d->ptce_name = domain_str(data, "ptce_name");
    d->siret = domain_str(ben, "siret");
    d->name = domain_str(ben, "name");
    const char *problem = NULL;
    if (!json_is_object(data))
        problem = "the data is not an object";
    else if (json_integer_value(json_object_get(data, "phase")) != 2)
        problem = "phase is not 2";
    else if (!d->dossier_id || !uuid_is_valid(d->dossier_id))
        problem = "dossier_id is not a uuid";
    else if (!d->wave || !*d->wave || strlen(d->wave) > 32)
        problem = "wave is missing";
    else if (d->region && !region_is_valid(d->region))
        problem = "region is not an INSEE region code";
    else if (!d->outcome ||
             (strcmp(d->outcome, outcomes[0]) != 0 && strcmp(d->outcome, outcomes[1]) != 0))
        problem = "outcome is not phase2_laureate or phase2_not_selected";
    else if (!d->reference || !*d->reference)
        problem = "reference is missing";
    else if (!d->decided_at || clock_rfc3339_parse(d->decided_at, &us) != STATUS_OK)
        problem = "decided_at is not an RFC 3339 time";
    else if (!json_is_object(ben))
        problem = "beneficiary is missing";
    else if (d->siret && siret_check(d->siret) != SIRET_OK)
        problem = "beneficiary.siret is not a valid SIRET";
    if (problem) {
        snprintf(why, whylen, "%s", problem);
        return STATUS_INVALID;
    }
    return STATUS_OK;
}

int funding_decision_is_laureate(const struct funding_decision *d)
{
    return d->outcome && strcmp(d->outcome, "phase2_laureate") == 0;
}

json_t *funding_clauses_build(const struct funding_decision *d, int64_t amount, long months,
                              const json_t *schedule)
{
    char euros[MONEY_STR_LEN], objet[512], montant[128];
    json_t *versement = json_array();

    money_format(amount, euros);
    snprintf(objet, sizeof objet,
             "Soutien au pôle territorial de coopération économique %s (dossier %s) au titre de"
             " l'appel à manifestation d'intérêt %s",
             d->ptce_name ? d->ptce_name : (d->name ? d->name : "lauréat"), d->dossier_id, d->wave);
    snprintf(montant, sizeof montant, "%s euros", euros);
    for (size_t i = 0; i < json_array_size(schedule); i++) {
        const json_t *t = json_array_get(schedule, i);
        money_format(json_integer_value(json_object_get(t, "amount_cents")), euros);
        json_array_append_new(
            versement, json_pack("{s:O, s:s, s:O, s:O}", "label", json_object_get(t, "label"),
                                 "montant", euros, "condition", json_object_get(t, "condition"),
                                 "due_offset_months", json_object_get(t, "due_offset_months")));
    }
    return json_pack(
        "{s:s, s:s, s:s, s:o, s:s, s:i}", "legal_basis",
        "loi n° 2000-321 du 12 avril 2000, article 10; décret n° 2001-495", "objet", objet,
        "montant", montant, "modalites_versement", versement, "conditions_utilisation",
        "La subvention est affectée à l'objet de la convention. Le bénéficiaire remet chaque"
        " année un compte rendu d'activité et un compte rendu financier (CERFA 15059) dans les"
        " six mois suivant la fin de l'exercice; les sommes non utilisées ou non justifiées"
        " font l'objet d'un reversement.",
        "duree_mois", (int)months);
}

void funding_csv_field_append(struct buf *out, const char *s)
{
    if (!s)
        return;
    if (strpbrk(s, ",\"\r\n") == NULL) {
        buf_append(out, s, strlen(s));
        return;
    }
    buf_append(out, "\"", 1);
    for (const char *p = s; *p; p++) {
        if (*p == '"')
            buf_append(out, "\"", 1);
        buf_append(out, p, 1);
    }
    buf_append(out, "\"", 1);
}

void funding_scdl_row_append(struct buf *out, const struct funding_grantor *g,
                             const struct funding_scdl_row *row)
{
    char euros[MONEY_STR_LEN], period[32], object[257];

    money_format(row->amount_cents, euros);
    if (strcmp(row->first_date, row->last_date) == 0)
        snprintf(period, sizeof period, "%s", row->first_date);
    else
        snprintf(period, sizeof period, "%s/%s", row->first_date, row->last_date);
    /* SCDL caps objet at 256 characters; cut on a UTF-8 boundary. */
    size_t n = strlen(row->object);
    if (n > 256) {
        n = 256;
        while (n > 0 && ((unsigned char)row->object[n] & 0xC0) == 0x80)
            n--;
    }
    memcpy(object, row->object, n);
    object[n] = '\0';
    const char *fields[] = {g->name,
                            g->siret,
                            row->date_convention,
                            row->reference,
                            row->beneficiary_name,
                            row->beneficiary_siret,
                            object,
                            euros,
                            "aide en numéraire",
                            row->ntranches > 1 ? "échelonné" : "unique",
                            period,
                            "", /* idRAE: the aid is not listed in the RAE */
                            "non",
                            "1.00"}; /* one beneficiary: all of it */
    for (size_t i = 0; i < sizeof fields / sizeof *fields; i++) {
        if (i)
            buf_append(out, ",", 1);
        funding_csv_field_append(out, fields[i]);
    }
    buf_append(out, "\r\n", 2);
}
