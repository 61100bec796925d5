/* test_submission_store: the DS fetch queue's claims, the poller's requeue, a withdrawal's error
 * path — against the real PostgreSQL. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "log.h"
#include "migrate.h"
#include "sql_common.h"
#include "submission/dossier.h"
#include "submission/store.h"
#include "testdb.h"

extern const struct migration submission_migrations[];
extern const size_t submission_migrations_count;

static char schema[64];
static struct db_conn a, b, c; /* workers' own connections, as ds_worker_main opens them */

static void conn_open(struct db_conn *conn)
{
    ck_assert_int_eq(db_conn_open(conn, testdb_url(), schema, 0), STATUS_OK);
}

/* A fresh schema with the common and submission migrations; two worker connections on it. */
static void schema_setup(void)
{
    const struct migration *const lists[] = {sql_common_migrations, submission_migrations};
    const size_t counts[] = {sql_common_migrations_count, submission_migrations_count};
    size_t applied;

    testdb_schema_create(schema, sizeof schema);
    conn_open(&a);
    conn_open(&b);
    ck_assert_int_eq(migrate_apply(&a, lists, counts, 2, &applied), STATUS_OK);
}

static void schema_teardown(void)
{
    db_conn_close(&a);
    db_conn_close(&b);
    db_conn_close(&c);
    testdb_schema_drop(schema);
}

static void exec_ok(struct db_conn *conn, const char *sql)
{
    ck_assert_msg(db_command(conn, sql) == STATUS_OK, "%s", sql);
}

/* Queues a poller notice for dossier number (one version per updated_at). */
static void queue(long long number, const char *updated_at)
{
    int queued = 0;

    ck_assert_int_eq(
        store_notice_from_poll(&a, 12345, number, "en_construction", updated_at, &queued),
        STATUS_OK);
    ck_assert_int_eq(queued, 1);
}

static long long claim(struct db_conn *conn)
{
    struct ds_claim cl;
    int found = 0;

    ck_assert_int_eq(store_notice_claim(conn, &cl, &found), STATUS_OK);
    return found ? cl.number : 0;
}

/* Claims again for up to 2 s: a closed connection's backend ends a few milliseconds later. */
static long long claim_soon(struct db_conn *conn)
{
    long long number = 0;

    for (int i = 0; i < 200 && !number; i++) {
        number = claim(conn);
        if (!number)
            clock_sleep_ms(10);
    }
    return number;
}

/* A claimed dossier is held by its connection only, and freed the moment that connection goes. */
START_TEST(test_claim_holds_the_dossier_until_its_connection_goes)
{
    struct ds_claim held;
    int found = 0;

    queue(7, "2026-03-01T10:00:00Z");
    queue(7, "2026-03-01T11:00:00Z");
    queue(8, "2026-03-01T10:00:00Z");
    ck_assert_int_eq(store_notice_claim(&a, &held, &found), STATUS_OK);
    ck_assert_int_eq(found, 1);
    ck_assert_int_eq(held.number, 7);
    ck_assert_int_eq(held.attempts, 1);
    /* The other worker skips both notices of dossier 7: never two fetches of one dossier. */
    ck_assert_int_eq(claim(&b), 8);
    conn_open(&c); /* a third worker: b still holds 8 */
    ck_assert_int_eq(claim(&c), 0);
    /* A crash, or a dropped connection: the dossier is free at once, not in 5 minutes. */
    db_conn_close(&a);
    ck_assert_int_eq(claim_soon(&c), 7);
}
END_TEST

START_TEST(test_release_and_retry)
{
    struct ds_claim held;
    int found = 0;

    queue(9, "2026-03-01T10:00:00Z");
    ck_assert_int_eq(store_notice_claim(&a, &held, &found), STATUS_OK);
    ck_assert_int_eq(found, 1);
    ck_assert_int_eq(claim(&b), 0);
    /* A real failure waits for its backoff, whoever looks. */
    ck_assert_int_eq(store_notice_retry(&a, &held, 3600 * 1000, "HTTP 500"), STATUS_OK);
    ck_assert_int_eq(store_notice_release(&a, &held), STATUS_OK);
    ck_assert_int_eq(claim(&b), 0);
    ck_assert_int_eq(claim(&a), 0);
    /* The poller meets the same version again: DS answers, the notice is due now. */
    int queued = 0;
    ck_assert_int_eq(
        store_notice_from_poll(&a, 12345, 9, "en_construction", "2026-03-01T10:00:00Z", &queued),
        STATUS_OK);
    ck_assert_int_eq(queued, 1);
    ck_assert_int_eq(claim(&b), 9);
    /* A notice that is due already, or being fetched, is left as it is. */
    ck_assert_int_eq(
        store_notice_from_poll(&a, 12345, 9, "en_construction", "2026-03-01T10:00:00Z", &queued),
        STATUS_OK);
    ck_assert_int_eq(queued, 0);
}
END_TEST

/*
 * One fetch answers every notice of the dossier received before it began (a flood of webhooks
 * costs one DS fetch); a notice received while it runs is still to fetch.
 */
START_TEST(test_done_closes_the_notices_it_covers)
{
    struct ds_claim held;
    int found = 0;

    queue(10, "2026-03-01T10:00:00Z");
    queue(10, "2026-03-01T11:00:00Z");
    ck_assert_int_eq(store_notice_claim(&a, &held, &found), STATUS_OK);
    ck_assert_int_eq(found, 1);
    queue(10, "2026-03-01T12:00:00Z"); /* arrives during the fetch */
    ck_assert_int_eq(store_notice_done(&a, &held), STATUS_OK);
    ck_assert_int_eq(store_notice_release(&a, &held), STATUS_OK);
    PGresult *r = PQexec(a.pg, "SELECT count(*) FROM ds_notification WHERE dossier_number = 10"
                               " AND status = 'done'");
    ck_assert_str_eq(PQgetvalue(r, 0, 0), "2"); /* both received before the fetch */
    PQclear(r);
    ck_assert_int_eq(claim(&b), 10); /* the one received during it is still to fetch */
}
END_TEST

/*
 * A withdrawal whose history insert fails rolls back and reports it. Under LeakSanitizer (make
 * test) the result of its first statement must be freed on that path too.
 */
START_TEST(test_withdraw_error_path)
{
    int changed = 1;

    exec_ok(&a, "INSERT INTO dossier (id, origin, ds_number, wave_id, state, eligibility,"
                " document) VALUES ('5d2c7e1c-2f7a-4b8e-9a51-0c6f5c1d2e3f', 'ds', 11, '2026',"
                " 'en_construction', 'eligible', '{\"state\": \"en_construction\"}')");
    exec_ok(&a, "ALTER TABLE dossier_history ADD CONSTRAINT test_no_delete"
                " CHECK (kind <> 'ds.deleted')");
    enum status st = store_ds_withdraw(&a, 11, "2026-03-02T10:00:00Z", "user_request", &changed);
    ck_assert_int_ne(st, STATUS_OK);
    ck_assert_int_eq(changed, 0);
    exec_ok(&a, "ALTER TABLE dossier_history DROP CONSTRAINT test_no_delete");
    ck_assert_int_eq(store_ds_withdraw(&a, 11, "2026-03-02T10:00:00Z", NULL, &changed), STATUS_OK);
    ck_assert_int_eq(changed, 1);
    ck_assert_int_eq(store_ds_withdraw(&a, 11, "2026-03-02T10:00:00Z", NULL, &changed), STATUS_OK);
    ck_assert_int_eq(changed, 0); /* once */
}
END_TEST

/* ---- partner deposits in a batch ---- */

static long long count_of(const char *sql)
{
    PGresult *r = PQexec(a.pg, sql);
    ck_assert_msg(PQresultStatus(r) == PGRES_TUPLES_OK, "%s: %s", sql, PQresultErrorMessage(r));
    long long n = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    return n;
}

/* A partner's deposit under key, its content parsed as the route parses it. */
struct deposit_fixture {
    struct http_idem idem;
    struct store_deposit d;
    json_t *content;
};

static const struct auth_principal partner = {.key_id = "partner-1", .all_regions = 1};

static void deposit_make(struct deposit_fixture *f, const char *key, const char *name)
{
    char body[512];
    json_t *errors = json_array();

    snprintf(body, sizeof body,
             "{\"carrier\":{\"siret\":\"73282932000074\",\"name\":\"%s\"},"
             "\"territory\":{\"name\":\"T\",\"region\":\"84\"},\"members\":["
             "{\"name\":\"a\",\"kind\":\"ess_enterprise\"},{\"name\":\"b\","
             "\"kind\":\"other_enterprise\"},{\"name\":\"c\",\"kind\":\"local_authority\"}],"
             "\"summary\":\"s\",\"legal_person_private\":true,\"prior_state_support\":false}",
             name);
    json_t *parsed = json_loads(body, 0, NULL);
    memset(f, 0, sizeof *f);
    f->content = dossier_content_from_partner(parsed, errors);
    ck_assert_ptr_nonnull(f->content);
    json_decref(parsed);
    json_decref(errors);
    f->idem = (struct http_idem){.key = key, .key_id = partner.key_id, .code = 201, .status = 201};
    snprintf(f->idem.hash, sizeof f->idem.hash, "hash-of-%s", name);
    f->d = (struct store_deposit){
        .who = &partner, .idem = &f->idem, .content = f->content, .request_id = key};
}

static void deposit_clear(struct deposit_fixture *f)
{
    json_decref(f->content);
    free(f->d.document);
    http_idem_clear(&f->idem);
}

/*
 * A batch writes every deposit's rows, its event (in the batch's order, each with its own
 * request id) and its key with the answer, in one transaction; a batch with a key that is not
 * fresh writes nothing, and the deposit alone then gets its own answer.
 */
START_TEST(test_deposits_in_one_batch)
{
    struct deposit_fixture f[4];
    struct store_deposit *many[3];

    deposit_make(&f[0], "key-1", "one");
    deposit_make(&f[1], "key-2", "two");
    deposit_make(&f[2], "key-3", "three");
    for (int i = 0; i < 3; i++)
        many[i] = &f[i].d;
    ck_assert_int_eq(store_partner_create_many(&a, many, 3), STATUS_OK);
    ck_assert_int_eq(count_of("SELECT count(*) FROM dossier WHERE origin = 'partner'"), 3);
    ck_assert_int_eq(count_of("SELECT count(*) FROM dossier_history WHERE kind = 'deposited'"), 3);
    ck_assert_int_gt(count_of("SELECT count(DISTINCT dossier_id) FROM dossier_check"), 2);
    for (int i = 0; i < 3; i++) {
        char sql[8192];
        json_t *doc = json_loads(f[i].d.document, 0, NULL);
        ck_assert_str_eq(json_string_value(json_object_get(doc, "id")), f[i].d.id);
        json_decref(doc);
        /* the stored answer is the document; the event is the i-th, with the request's id */
        snprintf(
            sql, sizeof sql,
            "SELECT count(*) FROM idempotency_request r, dossier d WHERE r.key = 'key-%d'"
            " AND r.response_status = 201 AND d.id = '%s' AND r.response_body = d.document::text"
            " AND r.response_body = $$%s$$",
            i + 1, f[i].d.id, f[i].d.document);
        ck_assert_int_eq(count_of(sql), 1);
        snprintf(sql, sizeof sql,
                 "SELECT count(*) FROM (SELECT key, payload, row_number() OVER (ORDER BY id) AS n"
                 " FROM outbox WHERE type = 'dossier.deposited') o WHERE o.n = %d AND o.key = '%s'"
                 " AND o.payload::jsonb->>'requestid' = 'key-%d'"
                 " AND o.payload::jsonb->>'type' = 'dossier.deposited'",
                 i + 1, f[i].d.id, i + 1);
        if (count_of(sql) != 1) {
            PGresult *r =
                PQexec(a.pg, "SELECT string_agg(key || ' ' || coalesce(payload::jsonb->>"
                             "'requestid', '-') || ' ' || type, ', ' ORDER BY id) FROM outbox");
            ck_abort_msg("event %d (%s) not in place: %s", i + 1, f[i].d.id, PQgetvalue(r, 0, 0));
        }
    }

    /* key-2 again, with a new key-4: the batch creates key-4 only; alone, key-2 replays */
    struct store_deposit *again[2];
    deposit_make(&f[3], "key-4", "four");
    char *first = f[1].d.document;
    f[1].d.document = NULL;
    again[0] = &f[1].d;
    again[1] = &f[3].d;
    ck_assert_int_eq(store_partner_create_many(&a, again, 2), STATUS_OK);
    ck_assert_int_eq(f[1].d.created, 0);
    ck_assert_ptr_null(f[1].d.document);
    ck_assert_int_eq(f[3].d.created, 1);
    ck_assert_ptr_nonnull(f[3].d.document);
    ck_assert_int_eq(count_of("SELECT count(*) FROM dossier"), 4);
    ck_assert_int_eq(count_of("SELECT count(*) FROM idempotency_request WHERE key = 'key-2'"), 1);
    ck_assert_int_eq(count_of("SELECT count(*) FROM outbox WHERE type = 'dossier.deposited'"), 4);
    ck_assert_int_eq(store_partner_create(&a, &partner, &f[1].idem, f[1].content, &f[1].d.document),
                     STATUS_OK);
    ck_assert_int_eq(f[1].idem.replayed, 1);
    ck_assert_str_eq(f[1].d.document, first);
    free(first);

    /* one key twice in a batch: its first deposit is created, the second is left alone */
    struct deposit_fixture twin[2];
    deposit_make(&twin[0], "key-5", "five");
    deposit_make(&twin[1], "key-5", "five");
    again[0] = &twin[0].d;
    again[1] = &twin[1].d;
    ck_assert_int_eq(store_partner_create_many(&a, again, 2), STATUS_OK);
    ck_assert_int_eq(twin[0].d.created, 1);
    ck_assert_int_eq(twin[1].d.created, 0);
    ck_assert_int_eq(count_of("SELECT count(*) FROM dossier"), 5);
    for (int i = 0; i < 2; i++)
        deposit_clear(&twin[i]);
    for (int i = 0; i < 4; i++)
        deposit_clear(&f[i]);
}
END_TEST

/* No wave takes deposits: the batch refuses all, as a deposit alone would. */
START_TEST(test_deposits_without_a_wave)
{
    struct deposit_fixture f;
    struct store_deposit *one[1] = {&f.d};

    exec_ok(&a, "DELETE FROM wave");
    deposit_make(&f, "key-1", "one");
    ck_assert_int_eq(store_partner_create_many(&a, one, 1), STATUS_CONFLICT);
    ck_assert_int_eq(count_of("SELECT count(*) FROM idempotency_request"), 0);
    deposit_clear(&f);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("submission_store");
    TCase *tc = tcase_create("queue");

    testdb_init();
    log_init("unit", LOG_WARN); /* each test's migrations would fill the output */
    tcase_set_timeout(tc, 60);
    tcase_add_checked_fixture(tc, schema_setup, schema_teardown);
    tcase_add_unchecked_fixture(tc, NULL, testdb_schema_sweep);
    tcase_add_test(tc, test_claim_holds_the_dossier_until_its_connection_goes);
    tcase_add_test(tc, test_release_and_retry);
    tcase_add_test(tc, test_done_closes_the_notices_it_covers);
    tcase_add_test(tc, test_withdraw_error_path);
    tcase_add_test(tc, test_deposits_in_one_batch);
    tcase_add_test(tc, test_deposits_without_a_wave);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
