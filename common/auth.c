/* auth: API-key verification against hashed keys, with a small TTL cache. */
#include "auth.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "ratelimit.h"
#include "region.h"
#include "uuid.h"
#include "xalloc.h"

static const char *const auth_role_names[] = {
    "national_admin", "regional_instructor", "expert", "funding_officer", "partner", "dashboard",
};

const char *auth_role_name(enum auth_role role)
{
    for (size_t i = 0; i < sizeof auth_role_names / sizeof auth_role_names[0]; i++) {
        if (role == (enum auth_role)(1 << i))
            return auth_role_names[i];
    }
    return "unknown";
}

enum auth_role auth_role_parse(const char *name)
{
    for (size_t i = 0; name && i < sizeof auth_role_names / sizeof auth_role_names[0]; i++) {
        if (strcmp(name, auth_role_names[i]) == 0)
            return (enum auth_role)(1 << i);
    }
    return (enum auth_role)0;
}

int auth_role_may_see_all(enum auth_role role)
{
    return (role & (ROLE_NATIONAL_ADMIN | ROLE_FUNDING_OFFICER | ROLE_DASHBOARD)) != 0 &&
           (role & (role - 1)) == 0;
}

int auth_principal_sees_region(const struct auth_principal *p, const char *region)
{
    if (p->all_regions)
        return 1;
    for (int i = 0; region && i < p->nregions; i++) {
        if (strcmp(p->regions[i], region) == 0)
            return 1;
    }
    return 0;
}

static int auth_is_hex(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return 0;
    }
    return 1;
}

enum status auth_token_parse(const char *token, char *key_id)
{
    size_t len = token ? strlen(token) : 0;

    /* "ptce_" + id + "_" + at least 32 secret characters; longer tokens are not ours. */
    if (len < 5 + AUTH_KEY_ID_LEN + 1 + 32 || len > 128 || strncmp(token, "ptce_", 5) != 0 ||
        token[5 + AUTH_KEY_ID_LEN] != '_' || !auth_is_hex(token + 5, AUTH_KEY_ID_LEN))
        return STATUS_UNAUTHORIZED;
    memcpy(key_id, token + 5, AUTH_KEY_ID_LEN);
    key_id[AUTH_KEY_ID_LEN] = '\0';
    return STATUS_OK;
}

/*
 * The SHA-256 implementation, fetched once: with OpenSSL 3, EVP_sha256() makes every digest
 * look the algorithm up again under a global lock, which 16 request threads then queue on.
 */
static EVP_MD *auth_sha256;
static pthread_once_t auth_sha256_once = PTHREAD_ONCE_INIT;

static void auth_sha256_fetch(void)
{
    auth_sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
    if (!auth_sha256)
        abort();
}

void auth_token_hash(const char *token, char out[65])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;

    pthread_once(&auth_sha256_once, auth_sha256_fetch);
    if (EVP_Digest(token, strlen(token), md, &mdlen, auth_sha256, NULL) != 1)
        abort();
    if (mdlen != 32)
        abort();
    hex_encode(md, 32, out);
}

char *auth_token_new(char *key_id)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    unsigned char id[AUTH_KEY_ID_LEN / 2], secret[40];
    char *token = xmalloc(5 + AUTH_KEY_ID_LEN + 1 + sizeof secret + 1);
    size_t n = 0;

    random_bytes(id, sizeof id);
    random_bytes(secret, sizeof secret);
    memcpy(token, "ptce_", 5);
    n = 5;
    hex_encode(id, sizeof id, token + n);
    n += 2 * sizeof id;
    memcpy(key_id, token + 5, AUTH_KEY_ID_LEN);
    key_id[AUTH_KEY_ID_LEN] = '\0';
    token[n++] = '_';
    for (size_t i = 0; i < sizeof secret; i++)
        token[n++] = alphabet[secret[i] & 63]; /* 40 × 6 bits = 240 bits of secret */
    token[n] = '\0';
    return token;
}

/* The cache: a small open-addressing table keyed by key id. */
#define AUTH_CACHE_SLOTS 256

/* A key as last read: known (hash and principal), or known to be absent (negative). */
struct auth_entry {
    char hash[65];
    struct auth_principal principal;
    struct timespec fetched;
    int used;
    int negative;
};

struct auth {
    struct db_pool *pool;
    long ttl_ms;
    pthread_mutex_t lock;
    struct auth_entry cache[AUTH_CACHE_SLOTS];
    struct auth_entry absent[AUTH_CACHE_SLOTS]; /* negative entries, apart: a flood of unknown
                                                   ids never evicts a real key */
    struct ratelimit *failures;                 /* per client; NULL: no throttle */
    atomic_ulong lookups;
};

DB_STMT(auth_find_key, "SELECT secret_hash, role, all_regions,"
                       " coalesce(array_to_string(regions, ','), ''),"
                       " coalesce(array_to_string(dossiers, ','), '')"
                       " FROM iam.api_key WHERE key_id = $1 AND revoked_at IS NULL"
                       " AND (expires_at IS NULL OR expires_at > now())");
DB_STMT(auth_insert_key,
        "INSERT INTO iam.api_key (key_id, secret_hash, role, regions, all_regions, dossiers,"
        " expires_at, label) VALUES ($1, $2, $3, CASE WHEN $4 = 'all' THEN NULL ELSE"
        " string_to_array($4, ',') END, $4 = 'all', string_to_array($5, ',')::uuid[],"
        " $6::timestamptz, coalesce($7, ''))");

struct auth *auth_new(struct db_pool *pool, long ttl_ms)
{
    struct auth *auth = xcalloc(1, sizeof *auth);

    auth->pool = pool;
    auth->ttl_ms = ttl_ms;
    pthread_mutex_init(&auth->lock, NULL);
    return auth;
}

void auth_free(struct auth *auth)
{
    if (!auth)
        return;
    pthread_mutex_destroy(&auth->lock);
    ratelimit_free(auth->failures);
    free(auth);
}

void auth_set_failure_limit(struct auth *auth, long per_second, long burst)
{
    ratelimit_free(auth->failures);
    auth->failures = per_second > 0 && burst > 0 ? ratelimit_new(per_second, burst, 4096) : NULL;
}

unsigned long auth_lookups(const struct auth *auth)
{
    return atomic_load(&auth->lookups);
}

static size_t auth_slot(const char *key_id)
{
    unsigned long h = 5381;

    for (const char *p = key_id; *p; p++)
        h = h * 33 + (unsigned char)*p;
    return h % AUTH_CACHE_SLOTS;
}

static long auth_age_ms(const struct timespec *then)
{
    struct timespec now;

    clock_gettime(CLOCK_MONOTONIC, &now);
    return (now.tv_sec - then->tv_sec) * 1000 + (now.tv_nsec - then->tv_nsec) / 1000000;
}

/* 1: a known key (hash and out filled); -1: known to be absent; 0: not cached. */
static int auth_cache_get(struct auth *auth, const char *key_id, char *hash,
                          struct auth_principal *out)
{
    int hit = 0;

    if (auth->ttl_ms <= 0)
        return 0;
    size_t slot = auth_slot(key_id);
    pthread_mutex_lock(&auth->lock);
    struct auth_entry *e = &auth->cache[slot];
    struct auth_entry *a = &auth->absent[slot];
    if (e->used && strcmp(e->principal.key_id, key_id) == 0 &&
        auth_age_ms(&e->fetched) < auth->ttl_ms) {
        memcpy(hash, e->hash, sizeof e->hash);
        *out = e->principal;
        hit = 1;
    } else if (a->used && strcmp(a->principal.key_id, key_id) == 0 &&
               auth_age_ms(&a->fetched) < auth->ttl_ms) {
        hit = -1;
    }
    pthread_mutex_unlock(&auth->lock);
    return hit;
}

static void auth_cache_put_absent(struct auth *auth, const char *key_id)
{
    if (auth->ttl_ms <= 0)
        return;
    pthread_mutex_lock(&auth->lock);
    struct auth_entry *a = &auth->absent[auth_slot(key_id)];
    snprintf(a->principal.key_id, sizeof a->principal.key_id, "%s", key_id);
    clock_gettime(CLOCK_MONOTONIC, &a->fetched);
    a->used = 1;
    a->negative = 1;
    pthread_mutex_unlock(&auth->lock);
}

static void auth_cache_put(struct auth *auth, const char *hash, const struct auth_principal *p)
{
    if (auth->ttl_ms <= 0)
        return;
    pthread_mutex_lock(&auth->lock);
    struct auth_entry *e = &auth->cache[auth_slot(p->key_id)];
    memcpy(e->hash, hash, sizeof e->hash);
    e->principal = *p;
    clock_gettime(CLOCK_MONOTONIC, &e->fetched);
    e->used = 1;
    pthread_mutex_unlock(&auth->lock);
}

/* Reads "84,11" into the principal's region list (at most AUTH_MAX_REGIONS codes). */
static void auth_regions_parse(const char *csv, struct auth_principal *p)
{
    const char *s = csv;

    while (*s && p->nregions < AUTH_MAX_REGIONS) {
        size_t n = strcspn(s, ",");
        if (n == 2) {
            memcpy(p->regions[p->nregions], s, 2);
            p->regions[p->nregions][2] = '\0';
            if (region_is_valid(p->regions[p->nregions]))
                p->nregions++; /* anything else grants nothing */
        }
        s += n;
        if (*s == ',')
            s++;
    }
}

enum status auth_principal_from_row(const char *key_id, const char *role, int all_regions,
                                    const char *regions_csv, struct auth_principal *out)
{
    memset(out, 0, sizeof *out);
    snprintf(out->key_id, sizeof out->key_id, "%s", key_id);
    out->role = auth_role_parse(role);
    if (!out->role)
        return STATUS_UNAUTHORIZED;
    if (all_regions) {
        /* The database refuses such a row; a row from before that rule is refused here. */
        if (!auth_role_may_see_all(out->role))
            return STATUS_UNAUTHORIZED;
        out->all_regions = 1;
        return STATUS_OK;
    }
    auth_regions_parse(regions_csv ? regions_csv : "", out);
    return out->nregions > 0 ? STATUS_OK : STATUS_UNAUTHORIZED; /* deny by default */
}

void auth_principal_set_dossiers(struct auth_principal *p, const char *csv)
{
    const char *s = csv ? csv : "";

    p->ndossiers = 0;
    while (*s && p->ndossiers < AUTH_MAX_DOSSIERS) {
        size_t n = strcspn(s, ",");
        if (n == 36) {
            memcpy(p->dossiers[p->ndossiers], s, 36);
            p->dossiers[p->ndossiers++][36] = '\0';
        }
        s += n;
        if (*s == ',')
            s++;
    }
}

int auth_principal_sees_dossier(const struct auth_principal *p, const char *region,
                                const char *dossier_id)
{
    if (!auth_principal_sees_region(p, region))
        return 0;
    if (p->ndossiers == 0)
        return 1;
    for (int i = 0; dossier_id && i < p->ndossiers; i++) {
        if (strcasecmp(p->dossiers[i], dossier_id) == 0)
            return 1;
    }
    return 0;
}

enum status auth_key_insert(struct db_conn *conn, const struct auth_key_spec *spec, char **token,
                            char *key_id)
{
    char hash[65];
    char *t = auth_token_new(key_id);
    const char *params[] = {key_id,        hash,           auth_role_name(spec->role),
                            spec->regions, spec->dossiers, spec->expires_at,
                            spec->label};

    auth_token_hash(t, hash);
    enum status st =
        spec->regions ? db_exec(conn, &auth_insert_key, 7, params, NULL) : STATUS_INVALID;
    if (st != STATUS_OK) {
        free(t);
        return st;
    }
    *token = t;
    return STATUS_OK;
}

static enum status auth_load(struct auth *auth, const char *key_id, char *hash,
                             struct auth_principal *out)
{
    struct db_conn *conn;
    PGresult *r;
    const char *params[] = {key_id};
    enum status st = db_acquire(auth->pool, &conn);

    if (st != STATUS_OK)
        return st;
    atomic_fetch_add(&auth->lookups, 1);
    st = db_exec(conn, &auth_find_key, 1, params, &r);
    db_release(auth->pool, conn);
    if (st != STATUS_OK)
        return st == STATUS_INVALID ? STATUS_UNAUTHORIZED : st;
    if (PQntuples(r) != 1) {
        PQclear(r);
        auth_cache_put_absent(auth, key_id);
        return STATUS_UNAUTHORIZED;
    }
    snprintf(hash, 65, "%s", PQgetvalue(r, 0, 0));
    st = auth_principal_from_row(key_id, PQgetvalue(r, 0, 1), PQgetvalue(r, 0, 2)[0] == 't',
                                 PQgetvalue(r, 0, 3), out);
    auth_principal_set_dossiers(out, PQgetvalue(r, 0, 4));
    PQclear(r); /* every PQgetvalue pointer above dies here: all were copied */
    return st;
}

/* auth_authenticate; without may_load, STATUS_RETRY where a look-up would be needed. */
static enum status auth_check(struct auth *auth, const char *authorization,
                              struct auth_principal *out, int may_load)
{
    char key_id[AUTH_KEY_ID_LEN + 1], stored[65], presented[65];
    enum status st;

    if (!authorization || strncasecmp(authorization, "Bearer ", 7) != 0)
        return STATUS_UNAUTHORIZED;
    const char *token = authorization + 7;
    while (*token == ' ')
        token++;
    if (auth_token_parse(token, key_id) != STATUS_OK)
        return STATUS_UNAUTHORIZED;
    int cached = auth_cache_get(auth, key_id, stored, out);
    if (cached < 0)
        return STATUS_UNAUTHORIZED;
    if (cached == 0 && !may_load)
        return STATUS_RETRY;
    if (cached == 0) {
        st = auth_load(auth, key_id, stored, out);
        if (st != STATUS_OK)
            return st;
        auth_cache_put(auth, stored, out);
    }
    auth_token_hash(token, presented);
    /* Constant time, so the comparison leaks nothing about the stored hash. */
    if (CRYPTO_memcmp(stored, presented, 64) != 0)
        return STATUS_UNAUTHORIZED;
    return STATUS_OK;
}

enum status auth_authenticate(struct auth *auth, const char *authorization,
                              struct auth_principal *out)
{
    return auth_check(auth, authorization, out, 1);
}

static enum status auth_client_check(struct auth *auth, const char *authorization,
                                     const char *client, struct auth_principal *out,
                                     long *retry_after_s, int may_load)
{
    *retry_after_s = 0;
    if (client && ratelimit_check(auth->failures, client, retry_after_s) != STATUS_OK)
        return STATUS_RATE_LIMITED; /* answered before any look-up */
    enum status st = auth_check(auth, authorization, out, may_load);
    if (st == STATUS_UNAUTHORIZED && client)
        (void)ratelimit_take(auth->failures, client, NULL);
    return st;
}

enum status auth_authenticate_client(struct auth *auth, const char *authorization,
                                     const char *client, struct auth_principal *out,
                                     long *retry_after_s)
{
    return auth_client_check(auth, authorization, client, out, retry_after_s, 1);
}

enum status auth_authenticate_cached(struct auth *auth, const char *authorization,
                                     const char *client, struct auth_principal *out,
                                     long *retry_after_s)
{
    return auth_client_check(auth, authorization, client, out, retry_after_s, 0);
}
