/* test_idempotency: claim → run → store; replay, another body → 422, still in flight → 409;
 * and the same through the Idempotency-Key header (http_idem). */
#include <check.h>
#include <stdlib.h>
#include <string.h>
#include <ulfius.h>

#include "auth.h"
#include "db.h"
#include "http.h"
#include "http_idem.h"
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

/* ---- the header, over a request as the router hands it (http_idem) ---- */

/* One request: ctx->path holds the path with its first parameter ended, as the router leaves it. */
struct fake {
    struct _u_request req;
    struct _u_response res;
    struct http_ctx ctx;
};

static void fake_open(struct fake *f, const char *key, const char *path, size_t param_end,
                      const char *body)
{
    memset(f, 0, sizeof *f);
    ulfius_init_request(&f->req);
    ulfius_init_response(&f->res);
    if (key)
        u_map_put(f->req.map_header, "Idempotency-Key", key);
    o_free(f->req.http_verb);
    f->req.http_verb = o_strdup("POST");
    o_free(f->req.url_path);
    f->req.url_path = o_strdup(path);
    f->req.binary_body = o_strdup(body);
    f->req.binary_body_length = strlen(body);
    f->ctx.req = &f->req;
    f->ctx.res = &f->res;
    snprintf(f->ctx.principal.key_id, sizeof f->ctx.principal.key_id, "k1");
    snprintf(f->ctx.path, sizeof f->ctx.path, "%s", path);
    if (param_end > 0 && param_end < sizeof f->ctx.path) {
        f->ctx.path[param_end] = '\0';
        f->ctx.nparams = 1;
    }
}

static void fake_close(struct fake *f)
{
    ulfius_clean_request(&f->req);
    ulfius_clean_response(&f->res);
}

/* A fresh response for the same request. */
static void fake_response_reset(struct fake *f)
{
    ulfius_clean_response(&f->res);
    ulfius_init_response(&f->res);
}

/* The problem's detail member, or "" (a static copy). */
static const char *fake_detail(const struct fake *f)
{
    static char detail[256];
    json_t *p = json_loadb(f->res.binary_body, f->res.binary_body_length, 0, NULL);

    snprintf(detail, sizeof detail, "%s", p ? json_string_value(json_object_get(p, "detail")) : "");
    json_decref(p);
    return detail;
}

START_TEST(test_read_rules)
{
    struct fake f;
    struct http_idem idem;
    char long_key[202];
    int rc = -1;

    /* Optional and absent: the handler goes on and nothing runs. */
    fake_open(&f, NULL, "/v1/things", 0, "{}");
    ck_assert_int_eq(http_idem_read(&f.ctx, &idem, 0, 201, &rc), 1);
    ck_assert_ptr_null(idem.key);
    ck_assert_int_eq(http_idem_claim(&a, &idem), STATUS_OK);
    ck_assert_int_eq(http_idem_store(&a, &idem, "{}"), STATUS_OK);
    ck_assert_int_eq(http_idem_refused(&f.ctx, &idem, STATUS_CONFLICT, &rc), 0);
    ck_assert_int_eq(http_idem_claim(&a, NULL), STATUS_OK);
    /* Required and absent: 428. */
    ck_assert_int_eq(http_idem_read(&f.ctx, &idem, HTTP_IDEM_REQUIRED, 201, &rc), 0);
    ck_assert_int_eq(f.res.status, 428);
    ck_assert_str_eq(fake_detail(&f), "an Idempotency-Key header is required");
    fake_close(&f);
    /* Not 1 to 200 bytes: 400. */
    memset(long_key, 'k', sizeof long_key - 1);
    long_key[sizeof long_key - 1] = '\0';
    fake_open(&f, long_key, "/v1/things", 0, "{}");
    ck_assert_int_eq(http_idem_read(&f.ctx, &idem, 0, 201, &rc), 0);
    ck_assert_int_eq(f.res.status, 400);
    ck_assert_str_eq(fake_detail(&f), "Idempotency-Key must be 1 to 200 bytes");
    fake_close(&f);
    fake_open(&f, "", "/v1/things", 0, "{}");
    ck_assert_int_eq(http_idem_read(&f.ctx, &idem, 0, 201, &rc), 0);
    ck_assert_int_eq(f.res.status, 400);
    fake_close(&f);
}
END_TEST

/* The identities of http_idem.h, byte for byte: keys stored before must keep matching. */
START_TEST(test_identity_rules)
{
    struct fake f;
    struct http_idem idem;
    char want[65];
    int rc;

    /* A route without parameters: the body alone (submission's and enrolments' old keys). */
    fake_open(&f, "k", "/v1/support/enrolments", 0, "{\"a\":1}");
    ck_assert_int_eq(http_idem_read(&f.ctx, &idem, HTTP_IDEM_REQUIRED, 201, &rc), 1);
    auth_token_hash("{\"a\":1}", want);
    ck_assert_str_eq(idem.hash, want);
    fake_close(&f);
    /* With parameters: the path up to the first one's end, a newline, the body. */
    fake_open(&f, "k", "/v1/tranches/t-1/payments", strlen("/v1/tranches/t-1"), "{\"a\":1}");
    ck_assert_int_eq(http_idem_read(&f.ctx, &idem, 0, 200, &rc), 1);
    auth_token_hash("/v1/tranches/t-1\n{\"a\":1}", want);
    ck_assert_str_eq(idem.hash, want);
    /* Instruction's: method, whole path, newline, body. */
    ck_assert_int_eq(http_idem_read(&f.ctx, &idem, HTTP_IDEM_ID_METHOD_PATH, 200, &rc), 1);
    auth_token_hash("POST /v1/tranches/t-1/payments\n{\"a\":1}", want);
    ck_assert_str_eq(idem.hash, want);
    fake_close(&f);
}
END_TEST

/* Claim, store, commit; then the replay, another request (422) and a twin in flight (409). */
START_TEST(test_claim_replay_refusals)
{
    struct fake f, g;
    struct http_idem idem, twin;
    json_t *doc = json_pack("{s:s, s:i}", "id", "d1", "version", 3);
    int rc = 0;

    fake_open(&f, "key-1", "/v1/dossiers/d1/reviews", strlen("/v1/dossiers/d1"), "{}");
    ck_assert_int_eq(http_idem_read(&f.ctx, &idem, HTTP_IDEM_ID_METHOD_PATH, 201, &rc), 1);
    ck_assert_int_eq(db_begin(&a), STATUS_OK);
    ck_assert_int_eq(http_idem_claim(&a, &idem), STATUS_OK);
    ck_assert_int_eq(idem.replayed, 0);
    ck_assert_int_eq(http_idem_store_json(&a, &idem, doc), STATUS_OK);
    /* A twin while the first is in flight: 409 at once, with the wording clients read. */
    fake_open(&g, "key-1", "/v1/dossiers/d1/reviews", strlen("/v1/dossiers/d1"), "{}");
    ck_assert_int_eq(http_idem_read(&g.ctx, &twin, HTTP_IDEM_ID_METHOD_PATH, 201, &rc), 1);
    ck_assert_int_eq(db_begin(&b), STATUS_OK);
    ck_assert_int_eq(http_idem_claim(&b, &twin), STATUS_CONFLICT);
    ck_assert_int_eq(twin.refused, STATUS_CONFLICT);
    db_rollback(&b);
    ck_assert_int_eq(http_idem_refused(&g.ctx, &twin, STATUS_CONFLICT, &rc), 1);
    ck_assert_int_eq(g.res.status, 409);
    ck_assert_ptr_nonnull(strstr(fake_detail(&g), "still being answered"));
    ck_assert_int_eq(db_commit(&a), STATUS_OK);
    /* The fresh answer is the one stored. */
    http_idem_reply_json(&f.ctx, &idem, 1);
    ck_assert_int_eq(f.res.status, 201);
    ck_assert_ptr_null(u_map_get(f.res.map_header, "Idempotent-Replayed"));
    ck_assert_str_eq(u_map_get(f.res.map_header, "ETag"), "\"v3\"");
    http_idem_clear(&idem);
    fake_close(&f);

    /* Once committed, the twin replays the first answer, marked, and changes nothing. */
    ck_assert_int_eq(db_begin(&b), STATUS_OK);
    ck_assert_int_eq(http_idem_claim(&b, &twin), STATUS_OK);
    ck_assert_int_eq(twin.replayed, 1);
    ck_assert_int_eq(twin.refused, STATUS_OK);
    ck_assert_int_eq(twin.status, 201);
    ck_assert_str_eq(twin.body, "{\"id\":\"d1\",\"version\":3}");
    db_rollback(&b);
    fake_response_reset(&g);
    ck_assert_int_eq(http_idem_refused(&g.ctx, &twin, STATUS_OK, &rc), 0);
    ck_assert_str_eq(u_map_get(g.res.map_header, "Idempotent-Replayed"), "true");
    http_idem_reply_json(&g.ctx, &twin, 0);
    ck_assert_int_eq(g.res.status, 201);
    ck_assert_ptr_null(u_map_get(g.res.map_header, "ETag"));
    char *taken = http_idem_body_take(&twin);
    ck_assert_ptr_null(twin.body);
    free(taken);
    fake_close(&g);

    /* The same key on another dossier is another request: 422. */
    fake_open(&g, "key-1", "/v1/dossiers/d2/reviews", strlen("/v1/dossiers/d2"), "{}");
    ck_assert_int_eq(http_idem_read(&g.ctx, &twin, HTTP_IDEM_ID_METHOD_PATH, 201, &rc), 1);
    ck_assert_int_eq(db_begin(&b), STATUS_OK);
    ck_assert_int_eq(http_idem_claim(&b, &twin), STATUS_UNPROCESSABLE);
    db_rollback(&b);
    ck_assert_int_eq(http_idem_refused(&g.ctx, &twin, STATUS_UNPROCESSABLE, &rc), 1);
    ck_assert_int_eq(g.res.status, 422);
    ck_assert_str_eq(fake_detail(&g), "this Idempotency-Key was used with another request");
    http_idem_clear(&twin);
    fake_close(&g);
    json_decref(doc);
}
END_TEST

/* A text stored with http_idem_store replays with the code given at read, and a rolled-back
 * claim leaves the key free. */
START_TEST(test_store_text_and_rollback)
{
    struct fake f;
    struct http_idem idem;
    int rc;

    fake_open(&f, "key-2", "/v1/envelopes", 0, "{\"x\":1}");
    ck_assert_int_eq(http_idem_read(&f.ctx, &idem, 0, 200, &rc), 1);
    ck_assert_int_eq(db_begin(&a), STATUS_OK);
    ck_assert_int_eq(http_idem_claim(&a, &idem), STATUS_OK);
    db_rollback(&a);
    ck_assert_int_eq(db_begin(&a), STATUS_OK);
    ck_assert_int_eq(http_idem_claim(&a, &idem), STATUS_OK);
    ck_assert_int_eq(idem.replayed, 0);
    ck_assert_int_eq(http_idem_store(&a, &idem, "{\"ok\":true}"), STATUS_OK);
    ck_assert_int_eq(db_commit(&a), STATUS_OK);
    ck_assert_int_eq(db_begin(&a), STATUS_OK);
    ck_assert_int_eq(http_idem_claim(&a, &idem), STATUS_OK);
    db_rollback(&a);
    ck_assert_int_eq(idem.replayed, 1);
    ck_assert_int_eq(idem.status, 200);
    char *body = http_idem_body_take(&idem);
    ck_assert_str_eq(body, "{\"ok\":true}");
    free(body);
    http_idem_clear(&idem);
    fake_close(&f);
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
    tcase_add_test(tc, test_read_rules); /* the header (http_idem) */
    tcase_add_test(tc, test_identity_rules);
    tcase_add_test(tc, test_claim_replay_refusals);
    tcase_add_test(tc, test_store_text_and_rollback);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
