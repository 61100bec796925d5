/* test_fsm: a toy machine on the real PostgreSQL — every refusal, and only one racer wins. */
#include <check.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cloudevent.h"
#include "fsm.h"
#include "log.h"
#include "sql_common.h"
#include "testdb.h"

/*
 * draft ─▶ submitted ─▶ approved ─▶ closed
 *   ▲          │ ╲
 *   └──────────┘  ╲─▶ rejected (motivation required)
 * approved has a guard: the toy's amount must be at most 1000.
 */
static const char *const toy_states[] = {"draft",    "submitted", "approved",
                                         "rejected", "closed",    NULL};

static enum status toy_guard_amount(struct db_conn *conn, const struct fsm_request *rq,
                                    struct fsm_result *res);

static const struct fsm_transition toy_transitions[] = {
    {"draft", "submitted", ROLE_PARTNER | ROLE_NATIONAL_ADMIN, 0, NULL, NULL},
    {"submitted", "draft", ROLE_PARTNER, 0, NULL, NULL},
    {"submitted", "approved", ROLE_NATIONAL_ADMIN, 0, toy_guard_amount, "unit.toy.approved"},
    {"submitted", "rejected", ROLE_NATIONAL_ADMIN | ROLE_REGIONAL_INSTRUCTOR, 1, NULL, NULL},
    {"approved", "closed", ROLE_NATIONAL_ADMIN, 0, NULL, NULL},
};

static const struct fsm_def toy_def = {
    .name = "toy",
    .table = "toy",
    .history_table = "toy_history",
    .states = toy_states,
    .transitions = toy_transitions,
    .ntransitions = sizeof toy_transitions / sizeof toy_transitions[0],
    .version_required = 1,
    .topic = "unit.toy.events",
    .source = "/unit/toy",
    .event_type = "unit.toy.state_changed",
};

static char schema[64];
static struct fsm *toy;
static struct db_conn conn;

static const struct auth_principal admin = {
    .key_id = "aaaaaaaaaaaaaaaa", .role = ROLE_NATIONAL_ADMIN, .all_regions = 1};
static const struct auth_principal partner = {
    .key_id = "bbbbbbbbbbbbbbbb", .role = ROLE_PARTNER, .all_regions = 1};

DB_STMT(q_guard_amount, "SELECT amount FROM toy WHERE id = $1");

static enum status toy_guard_amount(struct db_conn *c, const struct fsm_request *rq,
                                    struct fsm_result *res)
{
    const char *params[] = {rq->id};
    PGresult *r;
    enum status st = db_exec(c, &q_guard_amount, 1, params, &r);

    if (st != STATUS_OK)
        return st;
    long amount = strtol(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    if (amount > 1000) {
        snprintf(res->why, sizeof res->why, "amount %ld is over the cap", amount);
        return STATUS_UNPROCESSABLE;
    }
    return STATUS_OK;
}

static void admin_exec(const char *sql)
{
    ck_assert_int_eq(db_command(&conn, sql), STATUS_OK);
}

static void fsm_setup(void)
{
    const struct migration *const lists[] = {sql_common_migrations};
    const size_t counts[] = {sql_common_migrations_count};
    char errstr[256];
    size_t applied;

    testdb_schema_create(schema, sizeof schema);
    ck_assert_int_eq(db_conn_open(&conn, testdb_url(), schema, 5000), STATUS_OK);
    ck_assert_int_eq(migrate_apply(&conn, lists, counts, 1, &applied), STATUS_OK);
    admin_exec("CREATE TABLE toy (id text PRIMARY KEY, state text NOT NULL,"
               " version bigint NOT NULL, amount bigint NOT NULL DEFAULT 0)");
    admin_exec("CREATE TABLE toy_history (seq bigserial PRIMARY KEY, resource_id text NOT NULL,"
               " from_state text NOT NULL, to_state text NOT NULL, actor text NOT NULL,"
               " actor_role text, motivation text, request_id text, at timestamptz NOT NULL)");
    admin_exec("INSERT INTO toy VALUES ('t1', 'draft', 1, 10), ('t2', 'submitted', 4, 10),"
               " ('t3', 'submitted', 1, 5000)");
    toy = fsm_new(&toy_def, errstr, sizeof errstr);
    ck_assert_msg(toy != NULL, "%s", errstr);
}

static void fsm_teardown(void)
{
    fsm_free(toy);
    db_conn_close(&conn);
    testdb_schema_drop(schema);
}

/* Runs a query on a connection of its own (sees only what is committed); caller PQclear()s. */
static PGresult *other_query(const char *sql)
{
    PGconn *pg = PQconnectdb(testdb_url());
    char path[128];

    ck_assert_int_eq(PQstatus(pg), CONNECTION_OK);
    snprintf(path, sizeof path, "SET search_path TO %s", schema);
    PQclear(PQexec(pg, path));
    PGresult *r = PQexec(pg, sql);
    ck_assert_msg(PQresultStatus(r) == PGRES_TUPLES_OK, "%s: %s", sql, PQerrorMessage(pg));
    PQfinish(pg);
    return r;
}

static long other_count(const char *sql)
{
    PGresult *r = other_query(sql);
    long n = strtol(PQgetvalue(r, 0, 0), NULL, 10);

    PQclear(r);
    return n;
}

/* The toy row as "state/version". */
static void toy_row(const char *id, char *out, size_t len)
{
    char sql[128];

    snprintf(sql, sizeof sql, "SELECT state || '/' || version FROM toy WHERE id = '%s'", id);
    PGresult *r = other_query(sql);
    snprintf(out, len, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
}

/* Asserts that nothing was written: the row as given, no history, no event. */
static void assert_untouched(const char *id, const char *row)
{
    char now[64];

    toy_row(id, now, sizeof now);
    ck_assert_str_eq(now, row);
    ck_assert_int_eq(other_count("SELECT count(*) FROM toy_history"), 0);
    ck_assert_int_eq(other_count("SELECT count(*) FROM outbox"), 0);
}

START_TEST(test_fsm_legal_transition)
{
    struct fsm_request rq = {"t1", "submitted", &partner, "\"v1\"", NULL, NULL, NULL, NULL, NULL};
    struct fsm_result res;
    struct cloudevent ev;
    char row[64], why[128];

    log_set_request_id("req-fsm-1");
    ck_assert_int_eq(fsm_apply(toy, &conn, &rq, &res), STATUS_OK);
    log_set_request_id(NULL);
    ck_assert_str_eq(res.from, "draft");
    ck_assert_str_eq(res.to, "submitted");
    ck_assert_int_eq(res.version, 2);
    ck_assert_int_eq(uuid_is_valid(res.event_id), 1);
    toy_row("t1", row, sizeof row);
    ck_assert_str_eq(row, "submitted/2");

    PGresult *r = other_query("SELECT resource_id, from_state, to_state, actor, actor_role,"
                              " motivation IS NULL, request_id, at > now() - interval '1 minute'"
                              " FROM toy_history");
    ck_assert_int_eq(PQntuples(r), 1);
    ck_assert_str_eq(PQgetvalue(r, 0, 0), "t1");
    ck_assert_str_eq(PQgetvalue(r, 0, 1), "draft");
    ck_assert_str_eq(PQgetvalue(r, 0, 2), "submitted");
    ck_assert_str_eq(PQgetvalue(r, 0, 3), "bbbbbbbbbbbbbbbb");
    ck_assert_str_eq(PQgetvalue(r, 0, 4), "partner");
    ck_assert_str_eq(PQgetvalue(r, 0, 5), "t");
    ck_assert_str_eq(PQgetvalue(r, 0, 6), "req-fsm-1");
    ck_assert_str_eq(PQgetvalue(r, 0, 7), "t");
    PQclear(r);

    r = other_query("SELECT event_id, topic, key, type, payload FROM outbox");
    ck_assert_int_eq(PQntuples(r), 1);
    ck_assert_str_eq(PQgetvalue(r, 0, 0), res.event_id);
    ck_assert_str_eq(PQgetvalue(r, 0, 1), "unit.toy.events");
    ck_assert_str_eq(PQgetvalue(r, 0, 2), "t1");
    ck_assert_str_eq(PQgetvalue(r, 0, 3), "unit.toy.state_changed");
    const char *payload = PQgetvalue(r, 0, 4);
    ck_assert_int_eq(cloudevent_parse(payload, strlen(payload), &ev, why, sizeof why), STATUS_OK);
    ck_assert_str_eq(ev.subject, "t1");
    ck_assert_str_eq(ev.request_id, "req-fsm-1");
    ck_assert_str_eq(json_string_value(json_object_get(ev.data, "from")), "draft");
    ck_assert_str_eq(json_string_value(json_object_get(ev.data, "to")), "submitted");
    ck_assert_int_eq(json_integer_value(json_object_get(ev.data, "version")), 2);
    cloudevent_clear(&ev);
    PQclear(r);
}
END_TEST

START_TEST(test_fsm_illegal_transition_409)
{
    struct fsm_request rq = {"t1", "approved", &admin, "\"v1\"", NULL, NULL, NULL, NULL, NULL};
    struct fsm_result res;

    ck_assert_int_eq(fsm_apply(toy, &conn, &rq, &res), STATUS_CONFLICT);
    ck_assert_str_eq(res.from, "draft");
    ck_assert_int_eq(res.version, 1);
    ck_assert_int_eq(res.nallowed, 1);
    ck_assert_str_eq(res.allowed[0], "submitted");
    json_t *extra = fsm_conflict_members(&res);
    char *text = json_dumps(extra, JSON_COMPACT | JSON_SORT_KEYS);
    ck_assert_str_eq(text, "{\"allowed_transitions\":[\"submitted\"],\"current_state\":\"draft\"}");
    free(text);
    json_decref(extra);
    assert_untouched("t1", "draft/1");

    /* From submitted, the admin may approve or reject, not go back to draft. */
    struct fsm_request back = {"t2", "closed", &admin, "\"v4\"", NULL, NULL, NULL, NULL, NULL};
    ck_assert_int_eq(fsm_apply(toy, &conn, &back, &res), STATUS_CONFLICT);
    ck_assert_int_eq(res.nallowed, 2);
    ck_assert_str_eq(res.allowed[0], "approved");
    ck_assert_str_eq(res.allowed[1], "rejected");
    assert_untouched("t2", "submitted/4");
}
END_TEST

START_TEST(test_fsm_stale_version_412)
{
    struct fsm_request rq = {"t2", "draft", &partner, "\"v3\"", NULL, NULL, NULL, NULL, NULL};
    struct fsm_result res;

    ck_assert_int_eq(fsm_apply(toy, &conn, &rq, &res), STATUS_PRECONDITION_FAILED);
    ck_assert_int_eq(res.version, 4);
    rq.if_match = "W/\"v4\""; /* weak: never enough for a change */
    ck_assert_int_eq(fsm_apply(toy, &conn, &rq, &res), STATUS_PRECONDITION_FAILED);
    rq.if_match = "v4"; /* not an entity tag */
    ck_assert_int_eq(fsm_apply(toy, &conn, &rq, &res), STATUS_INVALID);
    assert_untouched("t2", "submitted/4");
    rq.if_match = "\"v2\", \"v4\"";
    ck_assert_int_eq(fsm_apply(toy, &conn, &rq, &res), STATUS_OK);
    ck_assert_int_eq(res.version, 5);
}
END_TEST

START_TEST(test_fsm_missing_version_428)
{
    struct fsm_request rq = {"t2", "draft", &partner, NULL, NULL, NULL, NULL, NULL, NULL};
    struct fsm_result res;

    ck_assert_int_eq(fsm_apply(toy, &conn, &rq, &res), STATUS_PRECONDITION_REQUIRED);
    assert_untouched("t2", "submitted/4");
    rq.if_match = "*"; /* any version: allowed, the client says it knows */
    ck_assert_int_eq(fsm_apply(toy, &conn, &rq, &res), STATUS_OK);
}
END_TEST

START_TEST(test_fsm_motivation_required)
{
    struct fsm_request rq = {"t2", "rejected", &admin, "\"v4\"", NULL, NULL, NULL, NULL, NULL};
    struct fsm_result res;

    ck_assert_int_eq(fsm_apply(toy, &conn, &rq, &res), STATUS_INVALID);
    ck_assert_str_eq(res.field, "motivation");
    rq.motivation = " \t\n";
    ck_assert_int_eq(fsm_apply(toy, &conn, &rq, &res), STATUS_INVALID);
    assert_untouched("t2", "submitted/4");
    rq.motivation = "Le territoire n'est pas défini.";
    ck_assert_int_eq(fsm_apply(toy, &conn, &rq, &res), STATUS_OK);
    ck_assert_ptr_null(res.field);
    PGresult *r = other_query("SELECT motivation, actor_role FROM toy_history");
    ck_assert_str_eq(PQgetvalue(r, 0, 0), "Le territoire n'est pas défini.");
    ck_assert_str_eq(PQgetvalue(r, 0, 1), "national_admin");
    PQclear(r);
}
END_TEST

START_TEST(test_fsm_role_not_allowed)
{
    /* The transition exists, but not for a partner. */
    struct fsm_request rq = {"t2", "rejected", &partner, "\"v4\"", "no", NULL, NULL, NULL, NULL};
    struct fsm_result res;

    ck_assert_int_eq(fsm_apply(toy, &conn, &rq, &res), STATUS_FORBIDDEN);
    ck_assert_int_eq(res.nallowed, 1);
    ck_assert_str_eq(res.allowed[0], "draft"); /* all a partner may do from submitted */
    assert_untouched("t2", "submitted/4");
}
END_TEST

START_TEST(test_fsm_guard_refuses)
{
    struct fsm_request rq = {"t3", "approved", &admin, "\"v1\"", NULL, NULL, NULL, NULL, NULL};
    struct fsm_result res;

    ck_assert_int_eq(fsm_apply(toy, &conn, &rq, &res), STATUS_UNPROCESSABLE);
    ck_assert_str_eq(res.why, "amount 5000 is over the cap");
    assert_untouched("t3", "submitted/1");
    /* Same guard passes under the cap, and the transition's own event type is used. */
    struct fsm_request ok = {"t2", "approved", &admin, "\"v4\"", NULL, NULL, NULL, NULL, NULL};
    ck_assert_int_eq(fsm_apply(toy, &conn, &ok, &res), STATUS_OK);
    ck_assert_int_eq(other_count("SELECT count(*) FROM outbox WHERE type = 'unit.toy.approved'"),
                     1);
}
END_TEST

/* An effect that looks from another session in the middle of the transaction. */
static enum status effect_peek(struct db_conn *c, const struct fsm_request *rq,
                               struct fsm_result *res)
{
    long *seen = rq->arg;
    char row[64];

    (void)c;
    (void)res;
    seen[0] = other_count("SELECT count(*) FROM toy_history");
    seen[1] = other_count("SELECT count(*) FROM outbox");
    toy_row("t1", row, sizeof row);
    seen[2] = !strcmp(row, "draft/1");
    return seen[3] ? STATUS_CONFLICT : STATUS_OK;
}

START_TEST(test_fsm_one_transaction)
{
    long seen[4] = {-1, -1, -1, 1}; /* seen[3]: the effect fails */
    struct fsm_request rq = {"t1", "submitted", &admin, "\"v1\"", NULL,
                             NULL, effect_peek, seen,   NULL};
    struct fsm_result res;
    json_t *data = json_pack("{s:s, s:s}", "wave", "2026", "to", "overridden?");

    rq.data = data;
    /* The effect fails after the state, history and event were written: all rolled back. */
    ck_assert_int_eq(fsm_apply(toy, &conn, &rq, &res), STATUS_CONFLICT);
    ck_assert_str_eq(res.event_id, "");
    ck_assert_int_eq(res.version, 1); /* the version that still stands */
    assert_untouched("t1", "draft/1");
    /* Succeeding: in the middle, another session saw none of the writes; after, all. */
    seen[3] = 0;
    ck_assert_int_eq(fsm_apply(toy, &conn, &rq, &res), STATUS_OK);
    ck_assert_int_eq(seen[0], 0);
    ck_assert_int_eq(seen[1], 0);
    ck_assert_int_eq(seen[2], 1);
    ck_assert_int_eq(other_count("SELECT count(*) FROM toy_history"), 1);
    ck_assert_int_eq(other_count("SELECT count(*) FROM outbox WHERE payload::jsonb"
                                 " @> '{\"data\": {\"wave\": \"2026\", \"to\": \"submitted\"}}'"),
                     1);
    json_decref(data);
}
END_TEST

/* prepare and effect both look whether another session could lock the row at that moment. */
static long lockable(void)
{
    return other_count("SELECT count(*) FROM (SELECT 1 FROM toy WHERE id = 't1'"
                       " FOR UPDATE SKIP LOCKED) x");
}

static enum status prepare_peek(struct db_conn *c, const struct fsm_request *rq,
                                struct fsm_result *res)
{
    long *seen = rq->arg;

    (void)c;
    seen[0] = lockable();
    seen[2] = res->from[0] == '\0';
    return seen[3] ? STATUS_UNAVAILABLE : STATUS_OK;
}

static enum status effect_lockable(struct db_conn *c, const struct fsm_request *rq,
                                   struct fsm_result *res)
{
    long *seen = rq->arg;

    (void)c;
    (void)res;
    seen[1] = lockable();
    return STATUS_OK;
}

START_TEST(test_fsm_prepare_runs_before_the_row_lock)
{
    long seen[4] = {-1, -1, -1, 1}; /* seen[3]: prepare fails */
    struct fsm_request rq = {"t1", "submitted",     &admin, "\"v1\"",    NULL,
                             NULL, effect_lockable, seen,   prepare_peek};
    struct fsm_result res;

    /* A failing prepare stops the transition before anything: nothing locked, nothing written. */
    ck_assert_int_eq(fsm_apply(toy, &conn, &rq, &res), STATUS_UNAVAILABLE);
    ck_assert_int_eq(seen[1], -1);
    assert_untouched("t1", "draft/1");
    seen[3] = 0;
    ck_assert_int_eq(fsm_apply(toy, &conn, &rq, &res), STATUS_OK);
    ck_assert_int_eq(seen[0], 1); /* prepare ran before the row was locked */
    ck_assert_int_eq(seen[1], 0); /* the effect after */
    ck_assert_int_eq(seen[2], 1);
}
END_TEST

START_TEST(test_fsm_bad_requests)
{
    struct fsm_request rq = {"nope", "submitted", &admin, "\"v1\"", NULL, NULL, NULL, NULL, NULL};
    struct fsm_result res;

    ck_assert_int_eq(fsm_apply(toy, &conn, &rq, &res), STATUS_NOT_FOUND);
    rq.id = "t1";
    rq.to = "flying";
    ck_assert_int_eq(fsm_apply(toy, &conn, &rq, &res), STATUS_INVALID);
    rq.to = "submitted";
    /* Inside a transaction of the caller's: refused, as fsm_apply owns its transaction. */
    ck_assert_int_eq(db_begin(&conn), STATUS_OK);
    ck_assert_int_eq(fsm_apply(toy, &conn, &rq, &res), STATUS_INTERNAL);
    db_rollback(&conn);
    /* The service itself (no principal) may take any listed transition. */
    rq.who = NULL;
    ck_assert_int_eq(fsm_apply(toy, &conn, &rq, &res), STATUS_OK);
    PGresult *r = other_query("SELECT actor, actor_role IS NULL FROM toy_history");
    ck_assert_str_eq(PQgetvalue(r, 0, 0), "system");
    ck_assert_str_eq(PQgetvalue(r, 0, 1), "t");
    PQclear(r);
}
END_TEST

START_TEST(test_fsm_definition_checked)
{
    char errstr[256];
    struct fsm_def bad = toy_def;
    static const struct fsm_transition unknown[] = {{"draft", "limbo", ROLE_ANY, 0, NULL, NULL}};
    static const struct fsm_transition twice[] = {{"draft", "submitted", ROLE_ANY, 0, NULL, NULL},
                                                  {"draft", "submitted", ROLE_ANY, 0, NULL, NULL}};
    static const char *const idents[] = {"toy; DROP TABLE toy", "Toy", "", "1toy", "toy\"x",
                                         "toy history"};

    for (size_t i = 0; i < sizeof idents / sizeof idents[0]; i++) {
        bad = toy_def;
        bad.table = idents[i];
        ck_assert_msg(fsm_new(&bad, errstr, sizeof errstr) == NULL, "table '%s'", idents[i]);
        bad = toy_def;
        bad.state_column = idents[i];
        ck_assert_msg(fsm_new(&bad, errstr, sizeof errstr) == NULL, "column '%s'", idents[i]);
    }
    bad = toy_def;
    bad.transitions = unknown;
    bad.ntransitions = 1;
    ck_assert_ptr_null(fsm_new(&bad, errstr, sizeof errstr));
    ck_assert_ptr_nonnull(strstr(errstr, "unknown state"));
    bad.transitions = twice;
    bad.ntransitions = 2;
    ck_assert_ptr_null(fsm_new(&bad, errstr, sizeof errstr));
    bad = toy_def;
    bad.history_table = NULL;
    ck_assert_ptr_null(fsm_new(&bad, errstr, sizeof errstr));
}
END_TEST

/* ---- two transitions on one row at once ---- */

struct racer {
    const char *if_match;
    enum status st;
};

static void *racer_main(void *arg)
{
    struct racer *rc = arg;
    struct db_conn own;
    struct fsm_request rq = {"t1", "submitted", &partner, rc->if_match, NULL,
                             NULL, NULL,        NULL,     NULL};
    struct fsm_result res;

    rc->st = STATUS_INTERNAL;
    if (db_conn_open(&own, testdb_url(), schema, 10000) != STATUS_OK)
        return NULL;
    rc->st = fsm_apply(toy, &own, &rq, &res);
    db_conn_close(&own);
    return NULL;
}

/* Both racers wait on a lock held by the test, then are let go together; returns the two. */
static void race(const char *if_match, enum status out[2])
{
    struct racer rc[2] = {{if_match, STATUS_OK}, {if_match, STATUS_OK}};
    pthread_t th[2];
    long waiting = 0;

    ck_assert_int_eq(db_begin(&conn), STATUS_OK);
    admin_exec("SELECT 1 FROM toy WHERE id = 't1' FOR UPDATE");
    for (int i = 0; i < 2; i++)
        ck_assert_int_eq(pthread_create(&th[i], NULL, racer_main, &rc[i]), 0);
    for (int i = 0; i < 100 && waiting < 2; i++) {
        usleep(50000);
        waiting = other_count("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type ="
                              " 'Lock' AND datname = current_database()");
    }
    ck_assert_int_eq(waiting, 2);
    db_rollback(&conn);
    for (int i = 0; i < 2; i++) {
        pthread_join(th[i], NULL);
        out[i] = rc[i].st;
    }
}

START_TEST(test_fsm_concurrent_one_wins)
{
    enum status st[2];
    char row[64];

    race("\"v1\"", st);
    /* One commits; the other then finds version 2 under its If-Match "v1": 412. */
    ck_assert_msg((st[0] == STATUS_OK && st[1] == STATUS_PRECONDITION_FAILED) ||
                      (st[1] == STATUS_OK && st[0] == STATUS_PRECONDITION_FAILED),
                  "statuses %d and %d", st[0], st[1]);
    toy_row("t1", row, sizeof row);
    ck_assert_str_eq(row, "submitted/2");
    ck_assert_int_eq(other_count("SELECT count(*) FROM toy_history"), 1);
    ck_assert_int_eq(other_count("SELECT count(*) FROM outbox"), 1);
}
END_TEST

START_TEST(test_fsm_concurrent_any_version)
{
    enum status st[2];

    /* With "*", the loser is refused by the table: it finds the row already submitted. */
    race("*", st);
    ck_assert_msg((st[0] == STATUS_OK && st[1] == STATUS_CONFLICT) ||
                      (st[1] == STATUS_OK && st[0] == STATUS_CONFLICT),
                  "statuses %d and %d", st[0], st[1]);
    ck_assert_int_eq(other_count("SELECT count(*) FROM toy_history"), 1);
    ck_assert_int_eq(other_count("SELECT count(*) FROM outbox"), 1);
}
END_TEST

static Suite *fsm_suite(void)
{
    Suite *s = suite_create("fsm");
    TCase *tc = tcase_create("toy");

    tcase_set_timeout(tc, 60);
    tcase_add_checked_fixture(tc, fsm_setup, fsm_teardown);
    tcase_add_unchecked_fixture(tc, NULL, testdb_schema_sweep);
    tcase_add_test(tc, test_fsm_legal_transition);
    tcase_add_test(tc, test_fsm_illegal_transition_409);
    tcase_add_test(tc, test_fsm_stale_version_412);
    tcase_add_test(tc, test_fsm_missing_version_428);
    tcase_add_test(tc, test_fsm_motivation_required);
    tcase_add_test(tc, test_fsm_role_not_allowed);
    tcase_add_test(tc, test_fsm_guard_refuses);
    tcase_add_test(tc, test_fsm_one_transaction);
    tcase_add_test(tc, test_fsm_prepare_runs_before_the_row_lock);
    tcase_add_test(tc, test_fsm_bad_requests);
    tcase_add_test(tc, test_fsm_definition_checked);
    tcase_add_test(tc, test_fsm_concurrent_one_wins);
    tcase_add_test(tc, test_fsm_concurrent_any_version);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    testdb_init();
    SRunner *sr = srunner_create(fsm_suite());

    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
