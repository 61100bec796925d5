/* test_auth: API-key tokens, roles and scopes; and auth_authenticate against iam.api_key. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "testdb.h"

/* ---- tokens, roles, scopes: no database ---- */

START_TEST(test_auth_token_round_trip)
{
    char id1[AUTH_KEY_ID_LEN + 1], id2[AUTH_KEY_ID_LEN + 1], parsed[AUTH_KEY_ID_LEN + 1];
    char *t1 = auth_token_new(id1);
    char *t2 = auth_token_new(id2);

    ck_assert(strncmp(t1, "ptce_", 5) == 0);
    ck_assert_uint_eq(strlen(t1), 5 + AUTH_KEY_ID_LEN + 1 + 40);
    ck_assert_uint_eq(strlen(id1), AUTH_KEY_ID_LEN);
    ck_assert_int_eq(t1[5 + AUTH_KEY_ID_LEN], '_');
    ck_assert(strncmp(t1 + 5, id1, AUTH_KEY_ID_LEN) == 0);
    ck_assert_int_eq(auth_token_parse(t1, parsed), STATUS_OK);
    ck_assert_str_eq(parsed, id1);
    ck_assert_str_ne(t1, t2);
    ck_assert_str_ne(id1, id2);
    free(t1);
    free(t2);
}
END_TEST

/* Builds "ptce_" + id + "_" + secret of secret_len characters into out. */
static void make_token(char *out, size_t outlen, const char *id, size_t secret_len)
{
    int n = snprintf(out, outlen, "ptce_%s_", id);

    ck_assert((size_t)n + secret_len < outlen);
    memset(out + n, 's', secret_len);
    out[(size_t)n + secret_len] = '\0';
}

START_TEST(test_auth_token_parse_bounds)
{
    char token[256], id[AUTH_KEY_ID_LEN + 1];

    make_token(token, sizeof token, "0123456789abcdef", 32); /* shortest accepted */
    ck_assert_int_eq(auth_token_parse(token, id), STATUS_OK);
    ck_assert_str_eq(id, "0123456789abcdef");
    make_token(token, sizeof token, "0123456789abcdef", 31);
    ck_assert_int_eq(auth_token_parse(token, id), STATUS_UNAUTHORIZED);
    make_token(token, sizeof token, "0123456789abcdef", 128 - 22); /* 128 characters */
    ck_assert_int_eq(auth_token_parse(token, id), STATUS_OK);
    make_token(token, sizeof token, "0123456789abcdef", 128 - 21); /* 129 */
    ck_assert_int_eq(auth_token_parse(token, id), STATUS_UNAUTHORIZED);
}
END_TEST

START_TEST(test_auth_token_parse_malformed)
{
    static const char *const bad[] = {
        "",
        "ptce_",
        "ptcf_0123456789abcdef_ssssssssssssssssssssssssssssssssssss", /* prefix */
        "PTCE_0123456789abcdef_ssssssssssssssssssssssssssssssssssss", /* prefix case */
        "xptce_0123456789abcde_ssssssssssssssssssssssssssssssssssss", /* shifted */
        "ptce_0123456789ABCDEF_ssssssssssssssssssssssssssssssssssss", /* upper-case id */
        "ptce_0123456789abcdeg_ssssssssssssssssssssssssssssssssssss", /* non-hex id */
        "ptce_0123456789abcde_sssssssssssssssssssssssssssssssssssss", /* 15-char id */
        "ptce_0123456789abcdef0_sssssssssssssssssssssssssssssssssss", /* 17-char id */
        "ptce_0123456789abcdef-ssssssssssssssssssssssssssssssssssss", /* separator */
        "ptce_0123456789abcdef_short",
    };
    char id[AUTH_KEY_ID_LEN + 1];

    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        ck_assert_msg(auth_token_parse(bad[i], id) == STATUS_UNAUTHORIZED, "accepted %s", bad[i]);
    ck_assert_int_eq(auth_token_parse(NULL, id), STATUS_UNAUTHORIZED);
}
END_TEST

START_TEST(test_auth_token_hash_vectors)
{
    char out[65];

    auth_token_hash("abc", out);
    ck_assert_str_eq(out, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    auth_token_hash("", out);
    ck_assert_str_eq(out, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}
END_TEST

START_TEST(test_auth_roles)
{
    static const struct {
        enum auth_role role;
        const char *name;
    } roles[] = {
        {ROLE_NATIONAL_ADMIN, "national_admin"},
        {ROLE_REGIONAL_INSTRUCTOR, "regional_instructor"},
        {ROLE_EXPERT, "expert"},
        {ROLE_FUNDING_OFFICER, "funding_officer"},
        {ROLE_PARTNER, "partner"},
        {ROLE_DASHBOARD, "dashboard"},
    };
    unsigned all = 0;

    for (size_t i = 0; i < sizeof roles / sizeof roles[0]; i++) {
        ck_assert_str_eq(auth_role_name(roles[i].role), roles[i].name);
        ck_assert_int_eq(auth_role_parse(roles[i].name), roles[i].role);
        all |= (unsigned)roles[i].role;
    }
    ck_assert_uint_eq(all, ROLE_ANY);
    ck_assert_int_eq(auth_role_parse("admin"), 0);
    ck_assert_int_eq(auth_role_parse("Expert"), 0);
    ck_assert_int_eq(auth_role_parse(""), 0);
    ck_assert_int_eq(auth_role_parse(NULL), 0);
    ck_assert_str_eq(auth_role_name((enum auth_role)0), "unknown");
    ck_assert_str_eq(auth_role_name((enum auth_role)(ROLE_EXPERT | ROLE_PARTNER)), "unknown");
    ck_assert_str_eq(auth_role_name((enum auth_role)(1 << 6)), "unknown");
}
END_TEST

START_TEST(test_auth_principal_sees_region)
{
    struct auth_principal p = {.role = ROLE_REGIONAL_INSTRUCTOR, .nregions = 2};

    snprintf(p.regions[0], sizeof p.regions[0], "84");
    snprintf(p.regions[1], sizeof p.regions[1], "11");
    ck_assert_int_eq(auth_principal_sees_region(&p, "84"), 1);
    ck_assert_int_eq(auth_principal_sees_region(&p, "11"), 1);
    ck_assert_int_eq(auth_principal_sees_region(&p, "93"), 0);
    ck_assert_int_eq(auth_principal_sees_region(&p, "8"), 0);
    ck_assert_int_eq(auth_principal_sees_region(&p, NULL), 0);
    p.nregions = 0;
    ck_assert_int_eq(auth_principal_sees_region(&p, "84"), 0);
    p.all_regions = 1;
    ck_assert_int_eq(auth_principal_sees_region(&p, "93"), 1);
}
END_TEST

/* ---- auth_authenticate: PostgreSQL ---- */

static char label[64]; /* unit_<pids>: labels this test's keys, so the runner can sweep them */
static struct db_pool *pool;

static void sql_ok(PGconn *pg, const char *sql, int nparams, const char *const *params)
{
    /* PQexec runs several statements in one implicit transaction; PQexecParams only one. */
    PGresult *r =
        nparams ? PQexecParams(pg, sql, nparams, NULL, params, NULL, NULL, 0) : PQexec(pg, sql);
    ExecStatusType es = PQresultStatus(r);

    ck_assert_msg(es == PGRES_COMMAND_OK || es == PGRES_TUPLES_OK, "%s: %s", sql,
                  PQresultErrorMessage(r));
    PQclear(r);
}

/* iam is a fixed schema shared by every test run: create it once, under a lock. */
static void iam_setup(void)
{
    PGconn *pg = testdb_admin_open();

    sql_ok(pg,
           "SET client_min_messages = warning;"
           "SELECT pg_advisory_xact_lock(hashtext('ptce.unit.iam'));"
           "CREATE SCHEMA IF NOT EXISTS iam;"
           "CREATE TABLE IF NOT EXISTS iam.api_key ("
           "  key_id text PRIMARY KEY CHECK (key_id ~ '^[0-9a-f]{16}$'),"
           "  secret_hash text NOT NULL CHECK (secret_hash ~ '^[0-9a-f]{64}$'),"
           "  role text NOT NULL CHECK (role IN ('national_admin','regional_instructor','expert',"
           "    'funding_officer','partner','dashboard')),"
           "  regions text[], label text NOT NULL DEFAULT '',"
           "  created_at timestamptz NOT NULL DEFAULT now(), revoked_at timestamptz);"
           "ALTER TABLE iam.api_key ADD COLUMN IF NOT EXISTS all_regions boolean NOT NULL"
           "  DEFAULT false",
           0, NULL);
    PQfinish(pg);
    testdb_name(label, sizeof label);
    ck_assert_int_eq(db_pool_open(&pool, testdb_url(), NULL, 1, 2000, 5000), STATUS_OK);
}

static void iam_teardown(void)
{
    const char *params[] = {label};
    PGconn *pg = testdb_admin_open();

    sql_ok(pg, "DELETE FROM iam.api_key WHERE label = $1", 1, params);
    PQfinish(pg);
    db_pool_close(pool);
}

/* Runs in the runner process after the case: removes the keys of tests that failed midway. */
static void iam_sweep(void)
{
    testdb_sweep("DELETE FROM iam.api_key WHERE label LIKE $1");
}

/* Stores a new key; returns the "Bearer <token>" header value (caller frees). */
static char *key_insert(const char *role, const char *regions, int revoked)
{
    char id[AUTH_KEY_ID_LEN + 1], hash[65];
    char *token = auth_token_new(id);
    /* NULL regions: an "all regions" key, as `ptce-admin key create --regions all` makes. */
    const char *params[] = {
        id, hash, role, regions, label, revoked ? "t" : "f", regions ? "f" : "t"};
    PGconn *pg = testdb_admin_open();

    auth_token_hash(token, hash);
    sql_ok(pg,
           "INSERT INTO iam.api_key (key_id, secret_hash, role, regions, label, revoked_at,"
           " all_regions) VALUES ($1, $2, $3, $4::text[], $5, CASE WHEN $6::bool THEN now() END,"
           " $7::bool)",
           7, params);
    PQfinish(pg);
    size_t n = strlen(token) + 8;
    char *header = malloc(n);
    ck_assert_ptr_nonnull(header);
    snprintf(header, n, "Bearer %s", token);
    free(token);
    return header;
}

START_TEST(test_auth_authenticate_valid)
{
    struct auth *auth = auth_new(pool, 0);
    char *regional = key_insert("regional_instructor", "{84,11}", 0);
    char *national = key_insert("national_admin", NULL, 0);
    struct auth_principal p;

    ck_assert_int_eq(auth_authenticate(auth, regional, &p), STATUS_OK);
    ck_assert_int_eq(p.role, ROLE_REGIONAL_INSTRUCTOR);
    ck_assert(strncmp(p.key_id, regional + 7 + 5, AUTH_KEY_ID_LEN) == 0);
    ck_assert_int_eq(p.all_regions, 0);
    ck_assert_int_eq(p.nregions, 2);
    ck_assert_str_eq(p.regions[0], "84");
    ck_assert_str_eq(p.regions[1], "11");
    ck_assert_int_eq(auth_principal_sees_region(&p, "84"), 1);
    ck_assert_int_eq(auth_principal_sees_region(&p, "93"), 0);

    ck_assert_int_eq(auth_authenticate(auth, national, &p), STATUS_OK);
    ck_assert_int_eq(p.role, ROLE_NATIONAL_ADMIN);
    ck_assert_int_eq(p.all_regions, 1);
    ck_assert_int_eq(auth_principal_sees_region(&p, "93"), 1);

    regional[0] = 'b'; /* the scheme is case-insensitive */
    ck_assert_int_eq(auth_authenticate(auth, regional, &p), STATUS_OK);
    free(regional);
    free(national);
    auth_free(auth);
}
END_TEST

START_TEST(test_auth_authenticate_rejects)
{
    struct auth *auth = auth_new(pool, 0);
    char *good = key_insert("expert", "{53}", 0);
    char *revoked = key_insert("expert", "{53}", 1);
    char id[AUTH_KEY_ID_LEN + 1], unknown[128], wrong[128];
    struct auth_principal p;

    char *token = auth_token_new(id); /* never stored */
    snprintf(unknown, sizeof unknown, "Bearer %s", token);
    free(token);
    snprintf(wrong, sizeof wrong, "%s", good);
    wrong[strlen(wrong) - 1] = wrong[strlen(wrong) - 1] == 'A' ? 'B' : 'A'; /* same id */

    ck_assert_int_eq(auth_authenticate(auth, good, &p), STATUS_OK);
    ck_assert_int_eq(auth_authenticate(auth, wrong, &p), STATUS_UNAUTHORIZED);
    ck_assert_int_eq(auth_authenticate(auth, revoked, &p), STATUS_UNAUTHORIZED);
    ck_assert_int_eq(auth_authenticate(auth, unknown, &p), STATUS_UNAUTHORIZED);
    ck_assert_int_eq(auth_authenticate(auth, NULL, &p), STATUS_UNAUTHORIZED);
    ck_assert_int_eq(auth_authenticate(auth, "", &p), STATUS_UNAUTHORIZED);
    ck_assert_int_eq(auth_authenticate(auth, good + 7, &p), STATUS_UNAUTHORIZED); /* no scheme */
    ck_assert_int_eq(auth_authenticate(auth, "Basic dXNlcjpwYXNz", &p), STATUS_UNAUTHORIZED);
    ck_assert_int_eq(auth_authenticate(auth, "Bearer ptce_zz", &p), STATUS_UNAUTHORIZED);
    free(good);
    free(revoked);
    auth_free(auth);
}
END_TEST

START_TEST(test_auth_authenticate_cache)
{
    struct auth *cached = auth_new(pool, 60000), *uncached = auth_new(pool, 0);
    char *key = key_insert("partner", "{76}", 0);
    char wrong[128];
    const char *params[] = {key + 7 + 5};
    struct auth_principal p;

    snprintf(wrong, sizeof wrong, "%s", key);
    wrong[strlen(wrong) - 1] = wrong[strlen(wrong) - 1] == 'A' ? 'B' : 'A';
    ck_assert_int_eq(auth_authenticate(cached, key, &p), STATUS_OK);
    PGconn *pg = testdb_admin_open();
    sql_ok(pg, "UPDATE iam.api_key SET revoked_at = now() WHERE key_id = left($1, 16)", 1, params);
    PQfinish(pg);
    /* The cache answers until its TTL passes; without a cache, revocation is immediate. */
    ck_assert_int_eq(auth_authenticate(cached, key, &p), STATUS_OK);
    ck_assert_int_eq(p.role, ROLE_PARTNER);
    ck_assert_int_eq(auth_authenticate(cached, wrong, &p), STATUS_UNAUTHORIZED);
    ck_assert_int_eq(auth_authenticate(uncached, key, &p), STATUS_UNAUTHORIZED);
    free(key);
    auth_free(cached);
    auth_free(uncached);
}
END_TEST

START_TEST(test_auth_authenticate_database_busy)
{
    struct db_pool *small;
    struct db_conn *held;
    char *key = key_insert("dashboard", NULL, 0);
    struct auth_principal p;

    /* With the only connection taken, the key cannot be checked: 503, not 401. */
    ck_assert_int_eq(db_pool_open(&small, testdb_url(), NULL, 1, 100, 5000), STATUS_OK);
    struct auth *auth = auth_new(small, 0);
    ck_assert_int_eq(db_acquire(small, &held), STATUS_OK);
    ck_assert_int_eq(auth_authenticate(auth, key, &p), STATUS_UNAVAILABLE);
    db_release(small, held);
    ck_assert_int_eq(auth_authenticate(auth, key, &p), STATUS_OK);
    auth_free(auth);
    db_pool_close(small);
    free(key);
}
END_TEST

START_TEST(test_auth_principal_from_row)
{
    struct auth_principal p;

    ck_assert_int_eq(auth_principal_from_row("k", "regional_instructor", 0, "84,11", &p),
                     STATUS_OK);
    ck_assert_int_eq(p.nregions, 2);
    ck_assert_int_eq(p.all_regions, 0);
    ck_assert_int_eq(auth_principal_from_row("k", "national_admin", 1, "", &p), STATUS_OK);
    ck_assert_int_eq(p.all_regions, 1);
    ck_assert_int_eq(auth_principal_from_row("k", "funding_officer", 1, "", &p), STATUS_OK);
    ck_assert_int_eq(auth_principal_from_row("k", "dashboard", 1, "", &p), STATUS_OK);
    /* Deny by default: no region and not "all" (a row written by hand) grants nothing. */
    ck_assert_int_eq(auth_principal_from_row("k", "national_admin", 0, "", &p),
                     STATUS_UNAUTHORIZED);
    ck_assert_int_eq(auth_principal_from_row("k", "dashboard", 0, NULL, &p), STATUS_UNAUTHORIZED);
    ck_assert_int_eq(auth_principal_sees_region(&p, "84"), 0);
    /* "all" is only for the national roles. */
    ck_assert_int_eq(auth_principal_from_row("k", "regional_instructor", 1, "", &p),
                     STATUS_UNAUTHORIZED);
    ck_assert_int_eq(auth_principal_from_row("k", "partner", 1, "", &p), STATUS_UNAUTHORIZED);
    ck_assert_int_eq(auth_principal_from_row("k", "expert", 1, "", &p), STATUS_UNAUTHORIZED);
    /* Codes that are not INSEE regions grant nothing. */
    ck_assert_int_eq(auth_principal_from_row("k", "partner", 0, "05,99,", &p), STATUS_UNAUTHORIZED);
    ck_assert_int_eq(auth_principal_from_row("k", "partner", 0, "05,84", &p), STATUS_OK);
    ck_assert_int_eq(p.nregions, 1);
    ck_assert_str_eq(p.regions[0], "84");
    ck_assert_int_eq(auth_principal_from_row("k", "root", 1, "", &p), STATUS_UNAUTHORIZED);
    ck_assert_int_eq(auth_role_may_see_all(ROLE_NATIONAL_ADMIN | ROLE_PARTNER), 0);
}
END_TEST

/* An unknown key presented again costs no database round trip while the TTL lasts. */
START_TEST(test_auth_negative_cache)
{
    struct auth *cached = auth_new(pool, 60000), *uncached = auth_new(pool, 0);
    char id[AUTH_KEY_ID_LEN + 1], unknown[128];
    struct auth_principal p;
    char *token = auth_token_new(id); /* never stored */

    snprintf(unknown, sizeof unknown, "Bearer %s", token);
    free(token);
    for (int i = 0; i < 20; i++) {
        ck_assert_int_eq(auth_authenticate(cached, unknown, &p), STATUS_UNAUTHORIZED);
        ck_assert_int_eq(auth_authenticate(uncached, unknown, &p), STATUS_UNAUTHORIZED);
    }
    ck_assert_uint_eq(auth_lookups(cached), 1);
    ck_assert_uint_eq(auth_lookups(uncached), 20);
    /* A real key is still found while unknown ones are remembered as absent. */
    char *real = key_insert("partner", "{84}", 0);
    ck_assert_int_eq(auth_authenticate(cached, real, &p), STATUS_OK);
    free(real);
    auth_free(cached);
    auth_free(uncached);
}
END_TEST

/* Repeated failures from one client are refused at once, without a look-up; others are not. */
START_TEST(test_auth_failure_throttle)
{
    struct auth *auth = auth_new(pool, 0);
    char *good = key_insert("partner", "{84}", 0);
    char id[AUTH_KEY_ID_LEN + 1], unknown[128];
    struct auth_principal p;
    long retry = 0;
    char *token = auth_token_new(id);

    snprintf(unknown, sizeof unknown, "Bearer %s", token);
    free(token);
    auth_set_failure_limit(auth, 1, 5);
    for (int i = 0; i < 5; i++)
        ck_assert_int_eq(auth_authenticate_client(auth, unknown, "203.0.113.7", &p, &retry),
                         STATUS_UNAUTHORIZED);
    unsigned long before = auth_lookups(auth);
    ck_assert_int_eq(auth_authenticate_client(auth, unknown, "203.0.113.7", &p, &retry),
                     STATUS_RATE_LIMITED);
    ck_assert_int_ge(retry, 1);
    /* Even a valid key from that client waits: the throttle answers before the key is read. */
    ck_assert_int_eq(auth_authenticate_client(auth, good, "203.0.113.7", &p, &retry),
                     STATUS_RATE_LIMITED);
    ck_assert_uint_eq(auth_lookups(auth), before);
    ck_assert_int_eq(auth_authenticate_client(auth, good, "198.51.100.2", &p, &retry), STATUS_OK);
    ck_assert_int_eq(auth_authenticate_client(auth, good, NULL, &p, &retry), STATUS_OK);
    /* Successes take nothing from the bucket. */
    for (int i = 0; i < 20; i++)
        ck_assert_int_eq(auth_authenticate_client(auth, good, "198.51.100.2", &p, &retry),
                         STATUS_OK);
    free(good);
    auth_free(auth);
}
END_TEST

/* The database says the same as the code: ptce-admin bootstrap installs the CHECK. */
START_TEST(test_auth_scope_check_constraint)
{
    static const char *const refused[][3] = {
        {"national_admin", NULL, "f"}, {"dashboard", "{}", "f"}, {"regional_instructor", NULL, "t"},
        {"partner", "{05}", "f"},      {"expert", NULL, "t"},
    };
    PGconn *pg = testdb_admin_open();
    PGresult *c =
        PQexec(pg, "SELECT 1 FROM pg_constraint WHERE conname = 'api_key_scope_explicit'");
    int installed = PQntuples(c) == 1;

    PQclear(c);
    ck_assert_msg(installed, "iam.api_key has no api_key_scope_explicit: ptce-admin bootstrap");
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        char id[AUTH_KEY_ID_LEN + 1], hash[65];
        char *token = auth_token_new(id);
        auth_token_hash(token, hash);
        free(token);
        const char *params[] = {id, hash, refused[i][0], refused[i][1], label, refused[i][2]};
        PGresult *r = PQexecParams(pg,
                                   "INSERT INTO iam.api_key (key_id, secret_hash, role, regions,"
                                   " label, all_regions) VALUES ($1, $2, $3, $4::text[], $5,"
                                   " $6::bool)",
                                   6, NULL, params, NULL, NULL, 0);
        const char *sqlstate = PQresultErrorField(r, PG_DIAG_SQLSTATE);
        ck_assert_msg(sqlstate && strcmp(sqlstate, "23514") == 0, "row %zu (%s) was accepted", i,
                      refused[i][0]);
        PQclear(r);
    }
    PQfinish(pg);
}
END_TEST

static Suite *auth_suite(void)
{
    Suite *s = suite_create("auth");
    TCase *tc = tcase_create("tokens");
    TCase *db = tcase_create("authenticate");

    tcase_set_timeout(tc, 10);
    tcase_add_test(tc, test_auth_token_round_trip);
    tcase_add_test(tc, test_auth_token_parse_bounds);
    tcase_add_test(tc, test_auth_token_parse_malformed);
    tcase_add_test(tc, test_auth_token_hash_vectors);
    tcase_add_test(tc, test_auth_roles);
    tcase_add_test(tc, test_auth_principal_sees_region);
    tcase_add_test(tc, test_auth_principal_from_row);
    suite_add_tcase(s, tc);

    tcase_set_timeout(db, 30);
    tcase_add_checked_fixture(db, iam_setup, iam_teardown);
    tcase_add_unchecked_fixture(db, NULL, iam_sweep);
    tcase_add_test(db, test_auth_authenticate_valid);
    tcase_add_test(db, test_auth_authenticate_rejects);
    tcase_add_test(db, test_auth_authenticate_cache);
    tcase_add_test(db, test_auth_authenticate_database_busy);
    tcase_add_test(db, test_auth_scope_check_constraint);
    tcase_add_test(db, test_auth_negative_cache);
    tcase_add_test(db, test_auth_failure_throttle);
    suite_add_tcase(s, db);
    return s;
}

int main(void)
{
    testdb_init();
    SRunner *sr = srunner_create(auth_suite());

    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
