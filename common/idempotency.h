/* idempotency: Idempotency-Key for creating POSTs — claim, run in the same transaction, replay. */
#ifndef PTCE_IDEMPOTENCY_H
#define PTCE_IDEMPOTENCY_H

#include <stddef.h>

#include "db.h"

/*
 * Every service's schema has the table idempotency_key (common/sql/003_idempotency.sql). A key
 * is scoped to the API key that used it. The protocol, inside the caller's open transaction:
 *   idempotency_claim → IDEM_FRESH: do the work, then idempotency_store the answer, commit;
 *                     → IDEM_REPLAY: answer *status and *body (the first answer), change nothing.
 * The same key with another request (another hash) is STATUS_UNPROCESSABLE (422); a request with
 * the same key still in flight in another transaction is STATUS_CONFLICT (409), answered at once.
 */
enum idempotency_outcome { IDEM_FRESH = 1, IDEM_REPLAY = 2 };

/* request_hash identifies the request (e.g. SHA-256 of the body, hex). *body: caller frees. */
enum status idempotency_claim(struct db_conn *conn, const char *key_id, const char *key,
                              const char *request_hash, enum idempotency_outcome *outcome,
                              int *status, char **body);

/* Records the answer of a fresh claim, in the same transaction. */
enum status idempotency_store(struct db_conn *conn, const char *key_id, const char *key, int status,
                              const char *body);

/*
 * The claims of many requests at once, each with the answer it will give (status and
 * bodies[i]), in the caller's open transaction, with one statement: each key's lock, then its
 * row, answer included, so no idempotency_store follows (the caller's commit keeps the work and
 * the answers together, its rollback drops both). fresh[i] is 1 when request i was claimed
 * fresh; 0 for a replay, a twin in flight, another request under the key, or a key already
 * claimed earlier in the list: the caller takes those alone, after its commit, with
 * idempotency_claim, which tells each its own answer. Element i of each list is request i's.
 */
enum status idempotency_claim_many(struct db_conn *conn, const char *const *key_ids,
                                   const char *const *keys, const char *const *hashes, int status,
                                   const char *const *bodies, size_t n, int *fresh);

/* The key's rules for a header value: 1 to 200 bytes. 1 when valid. */
int idempotency_key_valid(const char *key);

#endif
