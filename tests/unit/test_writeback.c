/* test_writeback: instruction's DS write-back — the queue in the caller's transaction, the
 * configuration it refuses, the pace, and the shared client's helpers — against PostgreSQL. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ds_client.h"
#include "instruction/writeback.h"
#include "log.h"
#include "migrate.h"
#include "testdb.h"

extern const struct migration instruction_migrations[];
extern const size_t instruction_migrations_count;

#define DOSSIER "5f0c2a4e-9b1d-4c3e-8f7a-2d6b1e0c9a11"

static char schema[64];
static struct db_conn conn;

static void schema_setup(void)
{
    testdb_service_schema(schema, sizeof schema, &conn, 0, instruction_migrations,
                          instruction_migrations_count);
}

static void schema_teardown(void)
{
    testdb_service_schema_drop(schema, &conn);
}

/* The number of queued rows, and the motivation of the last one ("" for NULL) into out. */
static int queued(char *out, size_t len)
{
    PGresult *r = PQexec(conn.pg, "SELECT count(*), (SELECT coalesce(motivation, '') FROM"
                                  " ds_writeback ORDER BY id DESC LIMIT 1) FROM ds_writeback");
    ck_assert_int_eq(PQresultStatus(r), PGRES_TUPLES_OK);
    int n = (int)strtol(PQgetvalue(r, 0, 0), NULL, 10);
    if (out)
        snprintf(out, len, "%s", PQgetvalue(r, 0, 1));
    PQclear(r);
    return n;
}

static enum status enqueue(long long number, const char *mutation, const char *motivation)
{
    struct writeback_command cmd = {DOSSIER, number, mutation, motivation};

    return writeback_enqueue(&conn, &cmd);
}

START_TEST(test_enqueue_belongs_to_the_callers_transaction)
{
    char motivation[64];

    ck_assert_int_eq(db_begin(&conn), STATUS_OK);
    ck_assert_int_eq(enqueue(1001, "dossierAccepter", "Projet solide"), STATUS_OK);
    db_rollback(&conn); /* the decision did not commit: neither does its write-back */
    ck_assert_int_eq(queued(NULL, 0), 0);

    ck_assert_int_eq(db_begin(&conn), STATUS_OK);
    ck_assert_int_eq(enqueue(1001, "dossierAccepter", "Projet solide"), STATUS_OK);
    ck_assert_int_eq(db_commit(&conn), STATUS_OK);
    ck_assert_int_eq(queued(motivation, sizeof motivation), 1);
    ck_assert_str_eq(motivation, "Projet solide");
}
END_TEST

START_TEST(test_enqueue_refuses_what_ds_would)
{
    char motivation[64];

    ck_assert_int_eq(enqueue(0, "dossierAccepter", NULL), STATUS_OK); /* not a DS dossier */
    ck_assert_int_eq(queued(NULL, 0), 0);
    ck_assert_int_eq(enqueue(1001, "dossierSupprimer", NULL), STATUS_INVALID);
    ck_assert_int_eq(enqueue(1001, NULL, NULL), STATUS_INVALID);
    ck_assert_int_eq(enqueue(-4, "dossierAccepter", NULL), STATUS_INVALID);
    ck_assert_int_eq(enqueue(1001, "dossierRefuser", NULL), STATUS_INVALID);
    ck_assert_int_eq(enqueue(1001, "dossierClasserSansSuite", ""), STATUS_INVALID);
    struct writeback_command bad = {"not-a-uuid", 1001, "dossierAccepter", NULL};
    ck_assert_int_eq(writeback_enqueue(&conn, &bad), STATUS_INVALID);
    ck_assert_int_eq(queued(NULL, 0), 0);
    /* An input type without a motivation field: DS would refuse it, so it is not kept. */
    ck_assert_int_eq(enqueue(1001, "dossierPasserEnInstruction", "why"), STATUS_OK);
    ck_assert_int_eq(queued(motivation, sizeof motivation), 1);
    ck_assert_str_eq(motivation, "");
    ck_assert_int_eq(enqueue(1001, "dossierRefuser", "Hors champ"), STATUS_OK);
    ck_assert_int_eq(enqueue(1001, "dossierAccepter", NULL), STATUS_OK); /* optional there */
    ck_assert_int_eq(queued(NULL, 0), 3);
}
END_TEST

START_TEST(test_a_refused_command_leaves_the_transaction_usable)
{
    /* The decision's transaction goes on after a refused command: it was refused before SQL. */
    ck_assert_int_eq(db_begin(&conn), STATUS_OK);
    ck_assert_int_eq(enqueue(1001, "dossierRefuser", NULL), STATUS_INVALID);
    ck_assert_int_eq(enqueue(1001, "dossierAccepter", NULL), STATUS_OK);
    ck_assert_int_eq(db_commit(&conn), STATUS_OK);
    ck_assert_int_eq(queued(NULL, 0), 1);
}
END_TEST

START_TEST(test_https_only_unless_allowed)
{
    char err[256];
    json_t *data = NULL;
    struct ds_client_config cc = {"http://127.0.0.1:1", "tok", 2000, 1024, 0, NULL};
    struct ds_client *c = ds_client_new(&cc, "query q { __typename }");

    /* curl itself refuses plain http: the token never leaves in clear, whatever the URL. */
    ck_assert_int_eq(ds_client_query(c, "q", json_object(), &data, err, sizeof err, NULL),
                     DS_RETRY);
    ck_assert_msg(strstr(err, "nsupported protocol") != NULL, "%s", err);
    ds_client_free(c);
    cc.allow_http = 1; /* then the request goes out, and port 1 refuses the connection */
    c = ds_client_new(&cc, "query q { __typename }");
    ck_assert_int_eq(ds_client_query(c, "q", json_object(), &data, err, sizeof err, NULL),
                     DS_RETRY);
    ck_assert_msg(strstr(err, "nsupported protocol") == NULL, "%s", err);
    ds_client_free(c);
}
END_TEST

START_TEST(test_config_check)
{
    char err[256];
    struct writeback_config c = {
        "",  "s",   0,     "https://www.demarches-simplifiees.fr", "tok", 0, "SW5zdHJ1Y3RldXItNDI=",
        400, 15000, 600000};

    ck_assert_int_eq(writeback_config_check(&c, err, sizeof err), 0);
    c.instructeur_id = "R3JvdXBlLTQy"; /* "Groupe-42": not an instructeur */
    ck_assert_int_eq(writeback_config_check(&c, err, sizeof err), -1);
    ck_assert_ptr_nonnull(strstr(err, "PTCE_DS_INSTRUCTEUR_ID"));
    c.instructeur_id = "";
    ck_assert_int_eq(writeback_config_check(&c, err, sizeof err), -1);
    c.instructeur_id = "SW5zdHJ1Y3RldXItNDI"; /* unpadded */
    ck_assert_int_eq(writeback_config_check(&c, err, sizeof err), -1);
    c.instructeur_id = "SW5zdHJ1Y3RldXItMQ==";
    ck_assert_int_eq(writeback_config_check(&c, err, sizeof err), 0);
    c.api_url = "http://127.0.0.1:9"; /* the token with write rights must not travel in clear */
    ck_assert_int_eq(writeback_config_check(&c, err, sizeof err), -1);
    ck_assert_ptr_nonnull(strstr(err, "PTCE_DS_ALLOW_HTTP"));
    c.allow_http = 1;
    ck_assert_int_eq(writeback_config_check(&c, err, sizeof err), 0);
    c.token = "";
    ck_assert_int_eq(writeback_config_check(&c, err, sizeof err), -1);
    c.api_url = ""; /* no DS: commands wait, nothing else is needed */
    ck_assert_int_eq(writeback_config_check(&c, err, sizeof err), 0);
}
END_TEST

START_TEST(test_pace_and_targets)
{
    ck_assert_int_eq(writeback_interval_us(400), 150000);
    ck_assert_int_eq(writeback_interval_us(30), 2000000);
    ck_assert_int_eq(writeback_interval_us(7), 8571429); /* rounded up, never faster */
    ck_assert_str_eq(writeback_target_state("dossierPasserEnInstruction"), "en_instruction");
    ck_assert_str_eq(writeback_target_state("dossierAccepter"), "accepte");
    ck_assert_str_eq(writeback_target_state("dossierRefuser"), "refuse");
    ck_assert_str_eq(writeback_target_state("dossierClasserSansSuite"), "sans_suite");
    ck_assert_str_eq(writeback_target_state("dossierRepasserEnConstruction"), "en_construction");
    ck_assert_ptr_null(writeback_target_state("dossierSupprimer"));
}
END_TEST

START_TEST(test_client_helpers)
{
    char id[64];

    ds_dossier_global_id(123, id, sizeof id);
    ck_assert_str_eq(id, "RG9zc2llci0xMjM=");
    ck_assert_int_eq(ds_url_allowed("https://ds.example", 0), 1);
    ck_assert_int_eq(ds_url_allowed("HTTPS://ds.example", 0), 1);
    ck_assert_int_eq(ds_url_allowed("http://ds.example", 0), 0);
    ck_assert_int_eq(ds_url_allowed("http://ds.example", 1), 1);
    ck_assert_int_eq(ds_url_allowed("ftp://ds.example", 1), 0);
    ck_assert_int_eq(ds_url_allowed("https://", 0), 0);
    ck_assert_int_eq(ds_url_allowed(NULL, 1), 0);
    ck_assert_str_eq(ds_result_name(DS_REFUSED), "refused");
}
END_TEST

int main(void)
{
    Suite *s = suite_create("writeback");
    TCase *tc = tcase_create("queue");

    testdb_init();
    log_init("unit", LOG_WARN);
    tcase_set_timeout(tc, 60);
    tcase_add_checked_fixture(tc, schema_setup, schema_teardown);
    tcase_add_unchecked_fixture(tc, NULL, testdb_schema_sweep);
    tcase_add_test(tc, test_enqueue_belongs_to_the_callers_transaction);
    tcase_add_test(tc, test_enqueue_refuses_what_ds_would);
    tcase_add_test(tc, test_a_refused_command_leaves_the_transaction_usable);
    tcase_add_test(tc, test_https_only_unless_allowed);
    tcase_add_test(tc, test_config_check);
    tcase_add_test(tc, test_pace_and_targets);
    tcase_add_test(tc, test_client_helpers);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
