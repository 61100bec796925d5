/* idempotency: one row per (API key, Idempotency-Key), claimed under a transaction lock. */
#include "idempotency.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pgarray.h"
#include "xalloc.h"

/*
 * The key's lock, then its row if the lock was had, in one round trip: (locked, fresh). The
 * lock is held until the claiming transaction ends, so a concurrent twin sees it taken and
 * answers 409; the lock is taken first (a materialized CTE the insert reads from).
 */
DB_STMT(idem_claim,
        "WITH l AS MATERIALIZED (SELECT pg_try_advisory_xact_lock(hashtext('ptce.idempotency.' ||"
        " current_schema()), hashtext($1 || ' ' || $2)) AS locked),"
        " i AS (INSERT INTO idempotency_request (key_id, key, request_hash)"
        " SELECT $1, $2, $3 FROM l WHERE l.locked ON CONFLICT DO NOTHING RETURNING 1)"
        " SELECT l.locked, EXISTS (SELECT 1 FROM i) FROM l");
/* The same for many keys, answers included: every lock is taken (materialized) before any row. */
DB_STMT(idem_claim_many,
        "WITH k AS (SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $5::text[])"
        " WITH ORDINALITY AS k(key_id, key, request_hash, body, n)),"
        " l AS MATERIALIZED (SELECT n, pg_try_advisory_xact_lock(hashtext('ptce.idempotency.' ||"
        " current_schema()), hashtext(key_id || ' ' || key)) AS locked FROM k),"
        " i AS (INSERT INTO idempotency_request (key_id, key, request_hash, response_status,"
        " response_body) SELECT k.key_id, k.key, k.request_hash, $4::int, k.body"
        " FROM k JOIN l USING (n) WHERE l.locked ORDER BY n ON CONFLICT DO NOTHING"
        " RETURNING key_id, key)"
        " SELECT key_id, key FROM i");
DB_STMT(idem_get, "SELECT request_hash, response_status, response_body FROM idempotency_request"
                  " WHERE key_id = $1 AND key = $2");
DB_STMT(idem_store, "UPDATE idempotency_request SET response_status = $3, response_body = $4"
                    " WHERE key_id = $1 AND key = $2");

int idempotency_key_valid(const char *key)
{
    size_t n = key ? strlen(key) : 0;

    return n >= 1 && n <= 200;
}

static enum status idempotency_replay(struct db_conn *conn, const char *const *params,
                                      const char *request_hash, int *status, char **body)
{
    PGresult *r;
    enum status st = db_exec(conn, &idem_get, 2, params, &r);

    if (st != STATUS_OK)
        return st;
    if (PQntuples(r) != 1 || PQgetisnull(r, 0, 1))
        st = STATUS_CONFLICT; /* claimed and never answered: another request still runs */
    else if (strcmp(PQgetvalue(r, 0, 0), request_hash) != 0)
        st = STATUS_UNPROCESSABLE;
    else {
        *status = (int)strtol(PQgetvalue(r, 0, 1), NULL, 10);
        *body = xstrdup(PQgetvalue(r, 0, 2));
    }
    PQclear(r);
    return st;
}

enum status idempotency_claim(struct db_conn *conn, const char *key_id, const char *key,
                              const char *request_hash, enum idempotency_outcome *outcome,
                              int *status, char **body)
{
    const char *params[] = {key_id, key, request_hash};
    PGresult *r;

    *body = NULL;
    *status = 0;
    enum status st = db_exec(conn, &idem_claim, 3, params, &r);
    if (st != STATUS_OK)
        return st;
    int locked = PQgetvalue(r, 0, 0)[0] == 't', fresh = PQgetvalue(r, 0, 1)[0] == 't';
    PQclear(r);
    if (!locked)
        return STATUS_CONFLICT; /* the same key is being answered right now */
    if (fresh) {
        *outcome = IDEM_FRESH;
        return STATUS_OK;
    }
    st = idempotency_replay(conn, params, request_hash, status, body);
    if (st == STATUS_OK)
        *outcome = IDEM_REPLAY;
    return st;
}

enum status idempotency_store(struct db_conn *conn, const char *key_id, const char *key, int status,
                              const char *body)
{
    char code[16];
    const char *params[] = {key_id, key, code, body};

    snprintf(code, sizeof code, "%d", status);
    return db_exec(conn, &idem_store, 4, params, NULL);
}

enum status idempotency_claim_many(struct db_conn *conn, const char *const *key_ids,
                                   const char *const *keys, const char *const *hashes, int status,
                                   const char *const *bodies, size_t n, int *fresh)
{
    const char *const *lists[] = {key_ids, keys, hashes, bodies};
    struct pgarray cols[4];
    char code[16];
    PGresult *r;

    snprintf(code, sizeof code, "%d", status);
    for (int k = 0; k < 4; k++) {
        pgarray_init(&cols[k]);
        for (size_t i = 0; i < n; i++)
            pgarray_add_text(&cols[k], lists[k][i]);
    }
    for (size_t i = 0; i < n; i++)
        fresh[i] = 0;
    const char *params[] = {pgarray_text(&cols[0]), pgarray_text(&cols[1]), pgarray_text(&cols[2]),
                            code, pgarray_text(&cols[3])};
    enum status st = db_exec(conn, &idem_claim_many, 5, params, &r);
    for (int k = 0; k < 4; k++)
        pgarray_free(&cols[k]);
    if (st != STATUS_OK)
        return st;
    /* a row inserted is its key's first request in the list (the insert reads them in order) */
    for (int row = 0; row < PQntuples(r); row++) {
        for (size_t i = 0; i < n; i++) {
            if (!fresh[i] && !strcmp(PQgetvalue(r, row, 0), key_ids[i]) &&
                !strcmp(PQgetvalue(r, row, 1), keys[i])) {
                fresh[i] = 1;
                break;
            }
        }
    }
    PQclear(r);
    return STATUS_OK;
}
