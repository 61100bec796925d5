/* test_idempotency: claim → run → store; replay, another body → 422, still in flight → 409. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "idempotency.h"
#include "migrate.h"
#include "sql_common.h"
#include "testdb.h"

static char schema[64];
static struct db_conn a, b;

static void setup(void)
{
    const struct migration *const lists[] = {sql_common_migrations};
    const size_t counts[] = {sql_common_migrations_count};
    size_t applied;

    testdb_schema_create(schema, sizeof schema);
    ck_assert_int_eq(db_conn_open(&a, testdb_url(), schema, 5000), STATUS_OK);
    ck_assert_int_eq(db_conn_open(&b, testdb_url(), schema, 5000), STATUS_OK);
    ck_assert_int_eq(migrate_apply(&a, lists, counts, 1, &applied), STATUS_OK);
}

static void teardown(void)
{
    db_conn_close(&a);
    db_conn_close(&b);
    testdb_schema_drop(schema);
}

static enum status claim(struct db_conn *c, const char *key, const char *hash,
                         enum idempotency_outcome *o, int *code, char **body)
{
    return idempotency_claim(c, "k1", key, hash, o, code, body);
}

START_TEST(test_fresh_then_replay)
{
    enum idempotency_outcome o = 0;
    int code = 0;
    char *body = NULL;

    ck_assert_int_eq(db_begin(&a), STATUS_OK);
    ck_assert_int_eq(claim(&a, "key-1", "h1", &o, &code, &body), STATUS_OK);
    ck_assert_int_eq(o, IDEM_FRESH);
    ck_assert_ptr_null(body);
    ck_assert_int_eq(idempotency_store(&a, "k1", "key-1", 201, "{\"id\":1}"), STATUS_OK);
    ck_assert_int_eq(db_commit(&a), STATUS_OK);

    ck_assert_int_eq(db_begin(&a), STATUS_OK);
    ck_assert_int_eq(claim(&a, "key-1", "h1", &o, &code, &body), STATUS_OK);
    ck_assert_int_eq(o, IDEM_REPLAY);
    ck_assert_int_eq(code, 201);
    ck_assert_str_eq(body, "{\"id\":1}");
    free(body);
    body = NULL;
    /* The same key with another request is refused; another API key has its own keys. */
    ck_assert_int_eq(claim(&a, "key-1", "h2", &o, &code, &body), STATUS_UNPROCESSABLE);
    ck_assert_ptr_null(body);
    db_rollback(&a);
    ck_assert_int_eq(db_begin(&a), STATUS_OK);
    ck_assert_int_eq(idempotency_claim(&a, "k2", "key-1", "h2", &o, &code, &body), STATUS_OK);
    ck_assert_int_eq(o, IDEM_FRESH);
    db_rollback(&a);
}
END_TEST

/* A twin request arriving while the first is still in flight is answered 409 at once. */
START_TEST(test_in_flight_is_a_conflict)
{
    enum idempotency_outcome o = 0;
    int code = 0;
    char *body = NULL;

    ck_assert_int_eq(db_begin(&a), STATUS_OK);
    ck_assert_int_eq(claim(&a, "key-2", "h1", &o, &code, &body), STATUS_OK);
    ck_assert_int_eq(o, IDEM_FRESH);
    ck_assert_int_eq(db_begin(&b), STATUS_OK);
    ck_assert_int_eq(claim(&b, "key-2", "h1", &o, &code, &body), STATUS_CONFLICT);
    db_rollback(&b);
    ck_assert_int_eq(idempotency_store(&a, "k1", "key-2", 201, "{}"), STATUS_OK);
    ck_assert_int_eq(db_commit(&a), STATUS_OK);
    /* Once the first committed, the twin replays its answer. */
    ck_assert_int_eq(db_begin(&b), STATUS_OK);
    ck_assert_int_eq(claim(&b, "key-2", "h1", &o, &code, &body), STATUS_OK);
    ck_assert_int_eq(o, IDEM_REPLAY);
    ck_assert_str_eq(body, "{}");
    free(body);
    db_rollback(&b);
    /* A first request that failed (rolled back) leaves the key free. */
    ck_assert_int_eq(db_begin(&a), STATUS_OK);
    ck_assert_int_eq(claim(&a, "key-3", "h1", &o, &code, &body), STATUS_OK);
    db_rollback(&a);
    ck_assert_int_eq(db_begin(&b), STATUS_OK);
    ck_assert_int_eq(claim(&b, "key-3", "h1", &o, &code, &body), STATUS_OK);
    ck_assert_int_eq(o, IDEM_FRESH);
    db_rollback(&b);
}
END_TEST

START_TEST(test_key_rules)
{
    char long_key[202];

    memset(long_key, 'k', sizeof long_key - 1);
    long_key[sizeof long_key - 1] = '\0';
    ck_assert_int_eq(idempotency_key_valid("a"), 1);
    ck_assert_int_eq(idempotency_key_valid(""), 0);
    ck_assert_int_eq(idempotency_key_valid(NULL), 0);
    ck_assert_int_eq(idempotency_key_valid(long_key), 0);
    long_key[200] = '\0';
    ck_assert_int_eq(idempotency_key_valid(long_key), 1);
}
END_TEST

int main(void)
{
    testdb_init();
    Suite *s = suite_create("idempotency");
    TCase *tc = tcase_create("claims");

    tcase_set_timeout(tc, 30);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_unchecked_fixture(tc, NULL, testdb_schema_sweep);
    tcase_add_test(tc, test_fresh_then_replay);
    tcase_add_test(tc, test_in_flight_is_a_conflict);
    tcase_add_test(tc, test_key_rules);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
