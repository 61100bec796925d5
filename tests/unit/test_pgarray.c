/* test_pgarray: array literals as text, and what PostgreSQL reads back from them. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "pgarray.h"
#include "testdb.h"

START_TEST(test_pgarray_empty)
{
    struct pgarray a;

    pgarray_init(&a);
    ck_assert_str_eq(pgarray_text(&a), "{}");
    ck_assert_str_eq(pgarray_text(&a), "{}"); /* closing twice closes once */
    pgarray_free(&a);
}
END_TEST

START_TEST(test_pgarray_text_escaping)
{
    struct pgarray a;

    pgarray_init(&a);
    pgarray_add_text(&a, "plain");
    pgarray_add_text(&a, "say \"hi\"");
    pgarray_add_text(&a, "back\\slash");
    pgarray_add_text(&a, "a,b");
    pgarray_add_text(&a, "{x}");
    pgarray_add_text(&a, "");
    pgarray_add_text(&a, "NULL");
    pgarray_add_text(&a, NULL);
    ck_assert_str_eq(pgarray_text(&a),
                     "{\"plain\",\"say \\\"hi\\\"\",\"back\\\\slash\",\"a,b\",\"{x}\",\"\","
                     "\"NULL\",NULL}");
    pgarray_free(&a);
}
END_TEST

START_TEST(test_pgarray_ints_and_nulls)
{
    struct pgarray a;

    pgarray_init(&a);
    pgarray_add_int(&a, 1);
    pgarray_add_null(&a);
    pgarray_add_int(&a, -9223372036854775807LL - 1);
    ck_assert_str_eq(pgarray_text(&a), "{1,NULL,-9223372036854775808}");
    pgarray_free(&a);
    pgarray_init(&a); /* reusable after free */
    pgarray_add_int(&a, 42);
    ck_assert_str_eq(pgarray_text(&a), "{42}");
    pgarray_free(&a);
}
END_TEST

DB_STMT(q_unnest_text, "SELECT u, u IS NULL FROM unnest($1::text[]) WITH ORDINALITY AS t(u, i)"
                       " ORDER BY i");
DB_STMT(q_unnest_int, "SELECT coalesce(sum(u), 0), count(u), count(*) FROM unnest($1::bigint[]) u");

START_TEST(test_pgarray_round_trip)
{
    static const char *const items[] = {"say \"hi\"", "back\\slash", "a,b", "{x}",     " sp ",
                                        "",           "NULL",        NULL,  "é\"\\,{}"};
    const size_t n = sizeof items / sizeof items[0];
    struct db_conn conn;
    struct pgarray a;
    PGresult *r;

    ck_assert_int_eq(db_conn_open(&conn, testdb_url(), NULL, 0), STATUS_OK);
    pgarray_init(&a);
    for (size_t i = 0; i < n; i++)
        pgarray_add_text(&a, items[i]);
    const char *params[] = {pgarray_text(&a)};
    ck_assert_int_eq(db_exec(&conn, &q_unnest_text, 1, params, &r), STATUS_OK);
    ck_assert_int_eq(PQntuples(r), (int)n);
    for (size_t i = 0; i < n; i++) {
        if (!items[i]) {
            ck_assert_str_eq(PQgetvalue(r, (int)i, 1), "t");
            continue;
        }
        ck_assert_str_eq(PQgetvalue(r, (int)i, 1), "f");
        ck_assert_str_eq(PQgetvalue(r, (int)i, 0), items[i]);
    }
    PQclear(r);
    pgarray_free(&a);

    pgarray_init(&a);
    pgarray_add_int(&a, 40);
    pgarray_add_null(&a);
    pgarray_add_int(&a, 2);
    params[0] = pgarray_text(&a);
    ck_assert_int_eq(db_exec(&conn, &q_unnest_int, 1, params, &r), STATUS_OK);
    ck_assert_str_eq(PQgetvalue(r, 0, 0), "42");
    ck_assert_str_eq(PQgetvalue(r, 0, 1), "2");
    ck_assert_str_eq(PQgetvalue(r, 0, 2), "3");
    PQclear(r);
    pgarray_free(&a);

    pgarray_init(&a);
    params[0] = pgarray_text(&a);
    ck_assert_int_eq(db_exec(&conn, &q_unnest_int, 1, params, &r), STATUS_OK);
    ck_assert_str_eq(PQgetvalue(r, 0, 2), "0");
    PQclear(r);
    pgarray_free(&a);
    db_conn_close(&conn);
}
END_TEST

static Suite *pgarray_suite(void)
{
    Suite *s = suite_create("pgarray");
    TCase *tc = tcase_create("pgarray");

    tcase_add_test(tc, test_pgarray_empty);
    tcase_add_test(tc, test_pgarray_text_escaping);
    tcase_add_test(tc, test_pgarray_ints_and_nulls);
    tcase_add_test(tc, test_pgarray_round_trip);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    testdb_init();
    SRunner *sr = srunner_create(pgarray_suite());

    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
