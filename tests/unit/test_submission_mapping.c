/* test_submission_mapping: the DS mapping (champs and dossier paths, checked at load), the
 * legal-person rule read from the catégorie juridique, and the pôle's name as the title. */
#include <check.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "jnum.h"
#include "submission/dossier.h"

extern const char ds_mapping_text[]; /* services/submission/ds_mapping.json, embedded */

/* A mapping for a démarche opened to legal persons: one champ, the carrier from the demandeur. */
static const char legal_mapping[] =
    "{\"demarche_number\": 23456, \"member_kind_labels\": {},"
    " \"dossier\": {\"carrier_siret\": \"demandeur.siret\","
    "   \"carrier_name\": \"demandeur.entreprise.raisonSociale\","
    "   \"carrier_legal_form\": \"demandeur.entreprise.formeJuridique\","
    "   \"carrier_legal_category\": \"demandeur.entreprise.formeJuridiqueCode\"},"
    " \"champs\": {\"Q2hhbXAtMjAx\": {\"typename\": \"TextChamp\","
    "   \"fields\": {\"ptce_name\": \"value\"}}}}";

static struct ds_mapping *mapping_load(const char *text)
{
    char err[512];
    struct ds_mapping *m = ds_mapping_load(NULL, text, err, sizeof err);

    ck_assert_msg(m != NULL, "mapping refused: %s", err);
    return m;
}

static json_t *ds_dossier(const char *demandeur_json)
{
    json_t *d = json_pack("{s:[{s:s, s:s}]}", "champs", "champDescriptorId", "Q2hhbXAtMjAx",
                          "value", "PTCE du Val");
    json_object_set_new(d, "demandeur", json_loads(demandeur_json, 0, NULL));
    return d;
}

static const char *carrier_str(json_t *content, const char *key)
{
    return json_string_value(json_object_get(json_object_get(content, "carrier"), key));
}

START_TEST(test_embedded_mapping_loads)
{
    struct ds_mapping *m = mapping_load(ds_mapping_text);

    ck_assert_int_eq(ds_mapping_demarche(m), 12345);
    ds_mapping_free(m);
    ds_mapping_free(NULL);
}
END_TEST

START_TEST(test_carrier_from_the_demandeur)
{
    struct ds_mapping *m = mapping_load(legal_mapping);
    json_t *d = ds_dossier("{\"__typename\": \"PersonneMorale\", \"siret\": \"73282932000074\","
                           " \"entreprise\": {\"raisonSociale\": \"ASSO DU VAL\","
                           " \"formeJuridique\": \"Association déclarée\","
                           " \"formeJuridiqueCode\": \"9220\"}}");
    json_t *content = dossier_content_from_ds(m, d);

    ck_assert_str_eq(carrier_str(content, "siret"), "73282932000074");
    ck_assert_str_eq(carrier_str(content, "name"), "ASSO DU VAL");
    ck_assert_str_eq(carrier_str(content, "legal_form"), "Association déclarée");
    ck_assert_str_eq(carrier_str(content, "legal_category"), "9220");
    ck_assert_str_eq(json_string_value(json_object_get(content, "ptce_name")), "PTCE du Val");
    json_decref(content);
    json_decref(d);
    ds_mapping_free(m);
}
END_TEST

START_TEST(test_incomplete_demandeur_gives_nulls)
{
    struct ds_mapping *m = mapping_load(legal_mapping);
    json_t *d = ds_dossier("{\"__typename\": \"PersonneMoraleIncomplete\","
                           " \"siret\": \"73282932000074\"}");
    json_t *content = dossier_content_from_ds(m, d);
    json_t *carrier = json_object_get(content, "carrier");

    ck_assert_str_eq(carrier_str(content, "siret"), "73282932000074");
    ck_assert(json_is_null(json_object_get(carrier, "name")));
    ck_assert(json_is_null(json_object_get(carrier, "legal_category")));
    json_decref(content);
    json_decref(d);

    d = ds_dossier("null"); /* no demandeur at all */
    content = dossier_content_from_ds(m, d);
    ck_assert(json_is_null(json_object_get(json_object_get(content, "carrier"), "siret")));
    json_decref(content);
    json_decref(d);
    ds_mapping_free(m);
}
END_TEST

START_TEST(test_champ_wins_over_dossier_path)
{
    static const char text[] =
        "{\"demarche_number\": 1, \"member_kind_labels\": {},"
        " \"dossier\": {\"carrier_siret\": \"demandeur.siret\", \"summary\": \"champs[0].label\","
        "   \"ptce_name\": \"champs[7].value\"},"
        " \"champs\": {\"Q2hhbXAtMTAx\": {\"fields\": {\"carrier_siret\": \"stringValue\"}}}}";
    struct ds_mapping *m = mapping_load(text);
    json_t *d = json_pack("{s:[{s:s, s:s, s:s}], s:{s:s}}", "champs", "champDescriptorId",
                          "Q2hhbXAtMTAx", "label", "SIRET", "stringValue", "11111111111111",
                          "demandeur", "siret", "22222222222222");
    json_t *content = dossier_content_from_ds(m, d);

    ck_assert_str_eq(carrier_str(content, "siret"), "11111111111111"); /* the champ answered */
    ck_assert_str_eq(json_string_value(json_object_get(content, "summary")), "SIRET"); /* [0] */
    ck_assert(json_is_null(json_object_get(content, "ptce_name"))); /* [7]: out of range */
    json_decref(content);

    /* The champ left unanswered: the demandeur's SIRET fills the field. */
    json_object_set_new(json_array_get(json_object_get(d, "champs"), 0), "stringValue",
                        json_null());
    content = dossier_content_from_ds(m, d);
    ck_assert_str_eq(carrier_str(content, "siret"), "22222222222222");
    json_decref(content);
    json_decref(d);
    ds_mapping_free(m);
}
END_TEST

START_TEST(test_bad_mappings_are_refused)
{
    static const struct {
        const char *part; /* spliced into a sound mapping */
        const char *named;
    } cases[] = {
        {"\"dossier\": {\"carrier_sirett\": \"demandeur.siret\"}",
         "dossier.carrier_sirett: unknown model field"},
        {"\"dossier\": {\"carrier_siret\": \"demandeur..siret\"}",
         "dossier.carrier_siret: bad path \"demandeur..siret\""},
        {"\"dossier\": {\"carrier_siret\": \"demandeur.siret[x]\"}", "dossier.carrier_siret: bad"},
        {"\"dossier\": {\"carrier_siret\": \"demandeur.siret[0\"}", "dossier.carrier_siret: bad"},
        {"\"dossier\": {\"carrier_siret\": \"files[-1]\"}", "dossier.carrier_siret: bad"},
        {"\"dossier\": {\"carrier_siret\": \"\"}", "dossier.carrier_siret: bad"},
        {"\"dossier\": {\"carrier_siret\": \".siret\"}", "dossier.carrier_siret: bad"},
        {"\"dossier\": {\"carrier_siret\": \"demandeur.\"}", "dossier.carrier_siret: bad"},
        {"\"dossier\": {\"carrier_siret\": 3}", "dossier.carrier_siret: the path must be a string"},
        {"\"dossier\": {\"members\": \"demandeur\"}",
         "dossier.members: can only be read from a champ"},
        {"\"dossier\": [\"demandeur.siret\"]", "dossier: must be an object"},
        {"\"champs\": {\"X\": {\"fields\": {\"carrier_nom\": \"value\"}}}",
         "champs.X.fields.carrier_nom: unknown model field"},
        {"\"champs\": {\"X\": {\"fields\": {}}}", "champs.X.fields: must be a non-empty object"},
        {"\"champs\": {\"X\": {\"fields\": {\"members\": \"rows\"}}}",
         "champs.X.row_champs: is required"},
        {"\"champs\": {\"X\": {\"fields\": {\"members\": \"rows\"}, \"row_champs\": {\"Y\":"
         " {\"fields\": {\"role\": \"value\"}}}}}",
         "champs.X.row_champs.Y.fields.role: unknown member field"},
        {"\"champs\": {\"X\": {\"fields\": {\"summary\": \"value\"}, \"labels\": \"nope\"}}",
         "champs.X.labels: must name a label table"},
    };
    char text[1024], err[512];

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int has_champs = strstr(cases[i].part, "\"champs\"") != NULL;
        snprintf(text, sizeof text, "{\"demarche_number\": 1, \"member_kind_labels\": {}, %s%s}",
                 has_champs ? "" : "\"champs\": {}, ", cases[i].part);
        err[0] = '\0';
        struct ds_mapping *m = ds_mapping_load(NULL, text, err, sizeof err);
        ck_assert_msg(m == NULL, "accepted: %s", text);
        ck_assert_msg(strstr(err, cases[i].named) != NULL, "case %zu: \"%s\" does not name \"%s\"",
                      i, err, cases[i].named);
        ck_assert_msg(strstr(err, "embedded mapping: ") == err, "no origin in \"%s\"", err);
    }
    /* Every problem is named, not only the first. */
    ck_assert_ptr_null(
        ds_mapping_load(NULL,
                        "{\"demarche_number\": 1, \"member_kind_labels\": {},"
                        " \"champs\": {}, \"dossier\": {\"a\": \"x\", \"b\": \"y\"}}",
                        err, sizeof err));
    ck_assert_ptr_nonnull(strstr(err, "dossier.a: unknown model field"));
    ck_assert_ptr_nonnull(strstr(err, "dossier.b: unknown model field"));
    ck_assert_ptr_null(ds_mapping_load("/nonexistent/mapping.json", NULL, err, sizeof err));
    ck_assert_ptr_nonnull(strstr(err, "/nonexistent/mapping.json"));
}
END_TEST

/* The outcome and evidence of carrier.private_legal_person for content. */
static const char *legal_person_outcome(json_t *content, json_t **evidence)
{
    const char *eligibility;
    json_t *checks = dossier_checks(content, &eligibility);
    size_t i;
    json_t *c;
    static char outcome[16];

    outcome[0] = '\0';
    json_array_foreach(checks, i, c)
    {
        if (strcmp(json_string_value(json_object_get(c, "rule")), "carrier.private_legal_person") !=
            0)
            continue;
        snprintf(outcome, sizeof outcome, "%s", json_string_value(json_object_get(c, "outcome")));
        *evidence = json_incref(json_object_get(c, "evidence"));
    }
    json_decref(checks);
    return outcome;
}

START_TEST(test_category_decides_without_an_answer)
{
    static const struct {
        const char *code;
        const char *outcome;
    } cases[] = {
        {"5499", "pass"},         {"5785", "pass"},          {"6540", "pass"},
        {"8110", "pass"},         {"9220", "pass"},          {"7210", "fail"},
        {"7383", "fail"},         {"4110", "fail"},          {"1000", "fail"},
        {"2110", "fail"},         {"3110", "needs_review"},  {NULL, "needs_review"},
        {"72", "needs_review"},   {"92200", "needs_review"}, {"9a20", "needs_review"},
        {"0000", "needs_review"},
    };

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        json_t *content = dossier_content_empty();
        json_t *evidence = NULL;
        json_object_set_new(json_object_get(content, "carrier"), "legal_category",
                            cases[i].code ? json_string(cases[i].code) : json_null());
        const char *outcome = legal_person_outcome(content, &evidence);
        ck_assert_msg(strcmp(outcome, cases[i].outcome) == 0, "%s: %s, not %s",
                      cases[i].code ? cases[i].code : "null", outcome, cases[i].outcome);
        json_t *code = json_object_get(evidence, "legal_category");
        if (cases[i].code)
            ck_assert_str_eq(json_string_value(code), cases[i].code);
        else
            ck_assert(code == NULL || json_is_null(code));
        ck_assert_ptr_nonnull(json_string_value(json_object_get(evidence, "reason")));
        json_decref(evidence);
        json_decref(content);
    }
}
END_TEST

START_TEST(test_an_answer_wins_over_the_category)
{
    json_t *content = dossier_content_empty();
    json_t *evidence = NULL;

    json_object_set_new(json_object_get(content, "carrier"), "legal_category", json_string("7210"));
    json_object_set_new(content, "legal_person_private", json_true());
    ck_assert_str_eq(legal_person_outcome(content, &evidence), "pass");
    ck_assert(json_is_true(json_object_get(evidence, "answer")));
    json_decref(evidence);
    json_object_set_new(json_object_get(content, "carrier"), "legal_category", json_string("9220"));
    json_object_set_new(content, "legal_person_private", json_false());
    ck_assert_str_eq(legal_person_outcome(content, &evidence), "fail");
    json_decref(evidence);
    json_decref(content);
}
END_TEST

static const char *title_of(json_t *content)
{
    static char title[64];
    struct dossier_meta meta = {.id = "00000000-0000-4000-8000-000000000000",
                                .origin = "ds",
                                .wave = "2026",
                                .state = "en_construction",
                                .eligibility = "eligible",
                                .rules_version = DOSSIER_RULES_VERSION,
                                .version = 1,
                                .deposited_at = "2026-01-01T00:00:00Z",
                                .updated_at = "2026-01-01T00:00:00Z"};
    json_t *checks = json_array();
    json_t *doc = dossier_document(&meta, content, checks);
    const char *t = json_string_value(json_object_get(doc, "title"));

    snprintf(title, sizeof title, "%s", t ? t : "(null)");
    json_decref(doc);
    json_decref(checks);
    return title;
}

START_TEST(test_title_is_the_ptce_name)
{
    json_t *content = dossier_content_empty();

    json_object_set_new(json_object_get(content, "territory"), "name", json_string("Val"));
    ck_assert_str_eq(title_of(content), "Val"); /* no name: the territory's */
    json_object_set_new(content, "ptce_name", json_string(""));
    ck_assert_str_eq(title_of(content), "Val");
    json_object_set_new(content, "ptce_name", json_string("PTCE du Val"));
    ck_assert_str_eq(title_of(content), "PTCE du Val");
    json_decref(content);
}
END_TEST

START_TEST(test_partner_ptce_name)
{
    json_t *body =
        json_loads("{\"carrier\": {\"siret\": \"73282932000074\", \"name\": \"X\"},"
                   " \"territory\": {\"name\": \"Val\", \"region\": \"84\"}, \"members\": [],"
                   " \"summary\": \"s\", \"ptce_name\": \"PTCE du Val\"}",
                   0, NULL);
    json_t *errors = json_array();
    json_t *content = dossier_content_from_partner(body, errors);

    ck_assert_ptr_nonnull(content);
    ck_assert_str_eq(json_string_value(json_object_get(content, "ptce_name")), "PTCE du Val");
    json_decref(content);
    json_object_del(body, "ptce_name");
    content = dossier_content_from_partner(body, errors);
    ck_assert(json_is_null(json_object_get(content, "ptce_name")));
    json_decref(content);
    json_object_set_new(body, "ptce_name", json_integer(3));
    ck_assert_ptr_null(dossier_content_from_partner(body, errors));
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(errors, 0), "field")),
                     "ptce_name");
    json_decref(errors);
    json_decref(body);
}
END_TEST

/* Lengths are characters, as JSON Schema's maxLength counts them: 300 "é" (600 bytes) fit. */
START_TEST(test_partner_lengths_count_characters)
{
    char name[2 * 301 + 1] = "";
    json_t *body = json_loads("{\"carrier\": {\"siret\": \"73282932000074\", \"name\": \"X\"},"
                              " \"territory\": {\"name\": \"Val\", \"region\": \"84\"},"
                              " \"members\": [], \"summary\": \"s\"}",
                              0, NULL);
    json_t *errors = json_array();

    for (int i = 0; i < 300; i++)
        memcpy(name + 2 * i, "\xc3\xa9", 3);
    json_object_set_new(json_object_get(body, "carrier"), "name", json_string(name));
    json_t *content = dossier_content_from_partner(body, errors);
    ck_assert_ptr_nonnull(content);
    ck_assert_int_eq(json_array_size(errors), 0);
    json_decref(content);
    memcpy(name + 2 * 300, "\xc3\xa9", 3);
    json_object_set_new(json_object_get(body, "carrier"), "name", json_string(name));
    ck_assert_ptr_null(dossier_content_from_partner(body, errors));
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(errors, 0), "field")),
                     "carrier.name");
    json_decref(errors);
    json_decref(body);
}
END_TEST

/* JSON Schema's integers: 8.0 is the integer 8 (stored as 8), 8.5 is not one. */
START_TEST(test_partner_integral_numbers)
{
    json_t *body = json_loads("{\"carrier\": {\"siret\": \"73282932000074\", \"name\": \"X\"},"
                              " \"territory\": {\"name\": \"Val\", \"region\": \"84\"},"
                              " \"members\": [], \"summary\": \"s\","
                              " \"main_document\": {\"filename\": \"d.pdf\", \"pages\": 8.0}}",
                              0, NULL);
    json_t *errors = json_array();
    json_t *content = dossier_content_from_partner(body, errors);
    long long n = 0;

    ck_assert_ptr_nonnull(content);
    json_t *pages = json_object_get(json_object_get(content, "main_document"), "pages");
    ck_assert(json_is_integer(pages));
    ck_assert_int_eq(json_integer_value(pages), 8);
    json_decref(content);
    json_object_set_new(json_object_get(body, "main_document"), "pages", json_real(8.5));
    ck_assert_ptr_null(dossier_content_from_partner(body, errors));
    json_t *big = json_real(1e18), *past = json_real(9223372036854775808.0),
           *text = json_string("3");
    ck_assert(jnum_integer_read(big, 0, LLONG_MAX, &n) && n == 1000000000000000000LL);
    ck_assert(!jnum_integer_read(past, 0, LLONG_MAX, &n));
    ck_assert(!jnum_integer_read(text, 0, 10, &n));
    json_decref(big);
    json_decref(past);
    json_decref(text);
    json_decref(errors);
    json_decref(body);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("submission_mapping");
    TCase *tc = tcase_create("mapping");

    tcase_add_test(tc, test_embedded_mapping_loads);
    tcase_add_test(tc, test_carrier_from_the_demandeur);
    tcase_add_test(tc, test_incomplete_demandeur_gives_nulls);
    tcase_add_test(tc, test_champ_wins_over_dossier_path);
    tcase_add_test(tc, test_bad_mappings_are_refused);
    tcase_add_test(tc, test_category_decides_without_an_answer);
    tcase_add_test(tc, test_an_answer_wins_over_the_category);
    tcase_add_test(tc, test_title_is_the_ptce_name);
    tcase_add_test(tc, test_partner_ptce_name);
    tcase_add_test(tc, test_partner_lengths_count_characters);
    tcase_add_test(tc, test_partner_integral_numbers);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
