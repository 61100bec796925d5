/* auth: bearer API keys stored as hashes, each with one role and a region scope. */
#ifndef PTCE_AUTH_H
#define PTCE_AUTH_H

#include <stddef.h>

#include "db.h"

/* Roles as bits, so a route can allow several with one mask. */
enum auth_role {
    ROLE_NATIONAL_ADMIN = 1 << 0,
    ROLE_REGIONAL_INSTRUCTOR = 1 << 1,
    ROLE_EXPERT = 1 << 2,
    ROLE_FUNDING_OFFICER = 1 << 3,
    ROLE_PARTNER = 1 << 4,
    ROLE_DASHBOARD = 1 << 5,
};
#define ROLE_ANY 0x3f

#define AUTH_KEY_ID_LEN 16  /* hex characters */
#define AUTH_MAX_REGIONS 18 /* there are 18 INSEE regions */
#define AUTH_MAX_DOSSIERS 8 /* an expert key names the few dossiers asked of it */

/*
 * Who is calling. Every key's scope is explicit: a list of regions, or all regions (only for the
 * roles auth_role_may_see_all() names). A key with neither sees nothing and is refused.
 */
struct auth_principal {
    char key_id[AUTH_KEY_ID_LEN + 1];
    enum auth_role role;
    int all_regions;
    int nregions;
    char regions[AUTH_MAX_REGIONS][3];
    int ndossiers; /* > 0: the key sees only these dossiers (an expert's key) */
    char dossiers[AUTH_MAX_DOSSIERS][37];
};

/* "national_admin" ↔ ROLE_NATIONAL_ADMIN …; parse returns 0 (unknown) for a bad name. */
const char *auth_role_name(enum auth_role role);
enum auth_role auth_role_parse(const char *name);

/* 1 for the roles that may hold an "all regions" scope: national admin, funding, dashboard. */
int auth_role_may_see_all(enum auth_role role);

/*
 * Fills a principal from a stored key row: role name, whether the row says "all regions", and
 * its regions as "84,11". STATUS_UNAUTHORIZED when the row grants nothing usable: an unknown
 * role, "all" for a role that may not have it, or no region at all (a row written by hand).
 */
enum status auth_principal_from_row(const char *key_id, const char *role, int all_regions,
                                    const char *regions_csv, struct auth_principal *out);

/* Reads "uuid,uuid" into the principal's dossier list (at most AUTH_MAX_DOSSIERS). */
void auth_principal_set_dossiers(struct auth_principal *p, const char *csv);

/* 1 when the principal's scope includes this INSEE region code. */
int auth_principal_sees_region(const struct auth_principal *p, const char *region);

/*
 * 1 when the principal may see this dossier: its region is in scope and, for a key restricted
 * to some dossiers (ndossiers > 0), the id is one of them (compared without regard to case).
 */
int auth_principal_sees_dossier(const struct auth_principal *p, const char *region,
                                const char *dossier_id);

/* What a new key may do; regions "84,11" or "all", dossiers "uuid,uuid" or NULL. */
struct auth_key_spec {
    enum auth_role role;
    const char *regions;
    const char *dossiers;   /* NULL: not restricted to dossiers */
    const char *expires_at; /* RFC 3339, or NULL: never */
    const char *label;
};

/*
 * Stores a new key inside the caller's transaction on conn (a role that may INSERT into
 * iam.api_key: ptce-admin's, or instruction's for expert keys). *token receives the token, to be
 * shown once (caller frees); key_id receives AUTH_KEY_ID_LEN + 1 bytes. STATUS_INVALID when the
 * database refuses the scope (its CHECK).
 */
enum status auth_key_insert(struct db_conn *conn, const struct auth_key_spec *spec, char **token,
                            char *key_id);

/*
 * Splits "ptce_<16 hex id>_<secret>" into its id; returns STATUS_UNAUTHORIZED when the token
 * does not have that shape. key_id receives AUTH_KEY_ID_LEN + 1 bytes.
 */
enum status auth_token_parse(const char *token, char *key_id);

/* SHA-256 of the whole token, as 64 lower-case hex characters and a terminator. */
void auth_token_hash(const char *token, char out[65]);

/* Makes a fresh token (returned, caller frees) and its id (key_id, AUTH_KEY_ID_LEN + 1). */
char *auth_token_new(char *key_id);

struct auth;

/*
 * An authenticator reading iam.api_key through `pool`. Successful look-ups are cached for
 * ttl_ms (0: no cache), which bounds how long a revoked key keeps working.
 */
struct auth *auth_new(struct db_pool *pool, long ttl_ms);
void auth_free(struct auth *auth);

/*
 * Checks an Authorization header value ("Bearer <token>"). STATUS_UNAUTHORIZED for a missing,
 * malformed, unknown or revoked key; STATUS_UNAVAILABLE when the database cannot answer. An id
 * the database does not know is remembered for the cache's TTL too (a negative entry), so
 * the same unknown key presented again costs no round trip.
 */
enum status auth_authenticate(struct auth *auth, const char *authorization,
                              struct auth_principal *out);

/*
 * Throttles failed authentications per client (an address as text): each failure takes a token
 * from the client's bucket (burst tokens, refilled per_second a second); while it is empty
 * every attempt of that client answers STATUS_RATE_LIMITED at once, without a look-up.
 * per_second <= 0 turns the throttle off (the default).
 */
void auth_set_failure_limit(struct auth *auth, long per_second, long burst);

/*
 * auth_authenticate for a request from client (may be NULL: not throttled). On
 * STATUS_RATE_LIMITED, *retry_after_s holds the seconds to wait.
 */
enum status auth_authenticate_client(struct auth *auth, const char *authorization,
                                     const char *client, struct auth_principal *out,
                                     long *retry_after_s);

/*
 * auth_authenticate_client without a database look-up: STATUS_RETRY when the key is in neither
 * cache, for a caller that makes the look-up elsewhere (an HTTP request off its worker).
 */
enum status auth_authenticate_cached(struct auth *auth, const char *authorization,
                                     const char *client, struct auth_principal *out,
                                     long *retry_after_s);

/* Database look-ups made so far (cache misses), for /metrics and tests. */
unsigned long auth_lookups(const struct auth *auth);

#endif
