/*
 * ptce-admin: bootstraps roles and schemas, manages API keys, and looks after the outbox dead
 * letters, as the database owner.
 */
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "region.h"
#include "xalloc.h"

static const char *const admin_services[] = {"submission", "instruction", "funding"};

/*
 * Roles and schemas: each service gets a login role that owns its schema and nothing else,
 * and may only read the API keys. Idempotent: run it at every start.
 */
static const char admin_bootstrap_sql[] =
    "CREATE SCHEMA IF NOT EXISTS iam;\n"
    "CREATE TABLE IF NOT EXISTS iam.api_key (\n"
    "  key_id text PRIMARY KEY CHECK (key_id ~ '^[0-9a-f]{16}$'),\n"
    "  secret_hash text NOT NULL CHECK (secret_hash ~ '^[0-9a-f]{64}$'),\n"
    "  role text NOT NULL CHECK (role IN ('national_admin','regional_instructor','expert',\n"
    "    'funding_officer','partner','dashboard')),\n"
    "  regions text[],\n"
    "  label text NOT NULL DEFAULT '',\n"
    "  created_at timestamptz NOT NULL DEFAULT now(),\n"
    "  revoked_at timestamptz);\n"
    /*
     * The scope is explicit: a list of regions, or all regions for the three national roles.
     * NOT VALID keeps a row of an older install loadable; the services refuse such a row.
     */
    "ALTER TABLE iam.api_key ADD COLUMN IF NOT EXISTS all_regions boolean NOT NULL DEFAULT false;\n"
    /* An expert's key: restricted to the dossiers asked of it, until the answer's deadline. */
    "ALTER TABLE iam.api_key ADD COLUMN IF NOT EXISTS dossiers uuid[];\n"
    "ALTER TABLE iam.api_key ADD COLUMN IF NOT EXISTS expires_at timestamptz;\n"
    "DO $$ BEGIN\n"
    "  IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'api_key_scope_explicit'\n"
    "                 AND conrelid = 'iam.api_key'::regclass) THEN\n"
    "    ALTER TABLE iam.api_key ADD CONSTRAINT api_key_scope_explicit CHECK (\n"
    "      (all_regions AND regions IS NULL\n"
    "        AND role IN ('national_admin', 'funding_officer', 'dashboard'))\n"
    "      OR (NOT all_regions AND regions IS NOT NULL AND cardinality(regions) > 0\n"
    "        AND regions <@ ARRAY['01','02','03','04','06','11','24','27','28','32','44',\n"
    "                             '52','53','75','76','84','93','94'])) NOT VALID;\n"
    "  END IF;\n"
    "END $$;\n"
    "REVOKE ALL ON SCHEMA public FROM PUBLIC;\n";

static int admin_exec(PGconn *pg, const char *sql, int nparams, const char *const *params,
                      PGresult **out)
{
    PGresult *r = PQexecParams(pg, sql, nparams, NULL, params, NULL, NULL, 0);
    ExecStatusType es = PQresultStatus(r);

    if (es != PGRES_COMMAND_OK && es != PGRES_TUPLES_OK) {
        fprintf(stderr, "ptce-admin: %s", PQresultErrorMessage(r));
        PQclear(r);
        return -1;
    }
    if (out)
        *out = r;
    else
        PQclear(r);
    return 0;
}

/* Runs a statement built server-side with format(), so identifiers and literals are quoted. */
static int admin_exec_formatted(PGconn *pg, const char *format_sql, int nparams,
                                const char *const *params)
{
    PGresult *r;

    if (admin_exec(pg, format_sql, nparams, params, &r) != 0)
        return -1;
    char *sql = xstrdup(PQgetvalue(r, 0, 0));
    PQclear(r);
    PGresult *x = PQexec(pg, sql);
    int ok = PQresultStatus(x) == PGRES_COMMAND_OK;
    if (!ok)
        fprintf(stderr, "ptce-admin: %s", PQresultErrorMessage(x));
    PQclear(x);
    free(sql);
    return ok ? 0 : -1;
}

static int admin_bootstrap_service(PGconn *pg, const char *svc)
{
    char role[64], envname[64], defpw[64];

    snprintf(role, sizeof role, "ptce_%s", svc);
    snprintf(envname, sizeof envname, "PTCE_DB_PASSWORD_%s", svc);
    for (char *p = envname; *p; p++)
        *p = (char)(*p >= 'a' && *p <= 'z' ? *p - 32 : *p);
    snprintf(defpw, sizeof defpw, "ptce_%s", svc);
    const char *env = getenv(envname);
    const char *pw = env && *env ? env : defpw;
    const char *p1[] = {role, pw};
    const char *p2[] = {svc, role};
    const char *p3[] = {role};

    if (admin_exec_formatted(
            pg,
            "SELECT CASE WHEN EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)"
            " THEN format('ALTER ROLE %I LOGIN PASSWORD %L', $1::text, $2::text)"
            " ELSE format('CREATE ROLE %I LOGIN PASSWORD %L', $1::text, $2::text) END",
            2, p1) != 0 ||
        admin_exec_formatted(pg,
                             "SELECT format('CREATE SCHEMA IF NOT EXISTS %I AUTHORIZATION %I',"
                             " $1::text, $2::text)",
                             2, p2) != 0 ||
        admin_exec_formatted(pg,
                             "SELECT format('GRANT CONNECT ON DATABASE %I TO %I',"
                             " current_database(), $1::text)",
                             1, p3) != 0 ||
        admin_exec_formatted(pg, "SELECT format('GRANT USAGE ON SCHEMA iam TO %I', $1::text)", 1,
                             p3) != 0 ||
        admin_exec_formatted(pg, "SELECT format('GRANT SELECT ON iam.api_key TO %I', $1::text)", 1,
                             p3) != 0)
        return -1;
    /* Instruction issues (and revokes) the expert keys of its opinion requests. */
    if (strcmp(svc, "instruction") == 0 &&
        admin_exec_formatted(pg,
                             "SELECT format('GRANT INSERT, UPDATE (revoked_at, expires_at) ON"
                             " iam.api_key TO %I', $1::text)",
                             1, p3) != 0)
        return -1;
    return 0;
}

static int admin_bootstrap(PGconn *pg)
{
    PGresult *r = PQexec(pg, admin_bootstrap_sql);
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK;

    if (!ok)
        fprintf(stderr, "ptce-admin: %s", PQresultErrorMessage(r));
    PQclear(r);
    if (!ok)
        return -1;
    if (admin_exec_formatted(pg,
                             "SELECT format('REVOKE ALL ON DATABASE %I FROM PUBLIC',"
                             " current_database())",
                             0, NULL) != 0)
        return -1;
    for (size_t i = 0; i < sizeof admin_services / sizeof admin_services[0]; i++) {
        if (admin_bootstrap_service(pg, admin_services[i]) != 0)
            return -1;
    }
    printf("bootstrap: roles, schemas and iam.api_key are in place\n");
    return 0;
}

static const char *admin_opt(int argc, char **argv, const char *name)
{
    for (int i = 0; i + 1 < argc; i++) {
        if (strcmp(argv[i], name) == 0)
            return argv[i + 1];
    }
    return NULL;
}

static int admin_key_create(PGconn *pg, int argc, char **argv)
{
    const char *role = admin_opt(argc, argv, "--role");
    const char *regions = admin_opt(argc, argv, "--regions");
    const char *label = admin_opt(argc, argv, "--label");
    char key_id[AUTH_KEY_ID_LEN + 1], hash[65];
    char regions_array[128];

    if (!auth_role_parse(role)) {
        fprintf(stderr, "ptce-admin: --role must be one of national_admin, regional_instructor, "
                        "expert, funding_officer, partner, dashboard\n");
        return 2;
    }
    if (!regions) {
        fprintf(stderr, "ptce-admin: --regions is required: INSEE codes such as 84,11, or all\n");
        return 2;
    }
    int all = strcmp(regions, "all") == 0;
    if (all && !auth_role_may_see_all(auth_role_parse(role))) {
        fprintf(stderr,
                "ptce-admin: --regions all is only for national_admin, funding_officer "
                "and dashboard keys; a %s key names its regions\n",
                role);
        return 2;
    }
    if (!all && !region_list_is_valid(regions)) {
        fprintf(stderr, "ptce-admin: --regions takes INSEE region codes such as 84,11, or all\n");
        return 2;
    }
    if (!all)
        snprintf(regions_array, sizeof regions_array, "{%s}", regions);
    char *token = auth_token_new(key_id);
    auth_token_hash(token, hash);
    const char *params[] = {
        key_id, hash, role, all ? NULL : regions_array, label ? label : "", all ? "t" : "f"};
    int rc = admin_exec(pg,
                        "INSERT INTO iam.api_key (key_id, secret_hash, role, regions, label,"
                        " all_regions) VALUES ($1, $2, $3, $4::text[], $5, $6::bool)",
                        6, params, NULL);
    if (rc == 0)
        printf("%s\n", token); /* shown once: only its hash is stored */
    free(token);
    return rc == 0 ? 0 : 1;
}

static int admin_key_list(PGconn *pg)
{
    PGresult *r;

    if (admin_exec(
            pg,
            "SELECT key_id, role, CASE WHEN all_regions THEN 'all' ELSE"
            " coalesce(nullif(array_to_string(regions, ','), ''), 'none (refused)') END, label,"
            " created_at, coalesce(revoked_at::text, '') FROM iam.api_key ORDER BY created_at",
            0, NULL, &r) != 0)
        return 1;
    printf("%-16s  %-20s  %-12s  %-20s  %-32s  %s\n", "key_id", "role", "regions", "label",
           "created_at", "revoked_at");
    for (int i = 0; i < PQntuples(r); i++)
        printf("%-16s  %-20s  %-12s  %-20s  %-32s  %s\n", PQgetvalue(r, i, 0), PQgetvalue(r, i, 1),
               PQgetvalue(r, i, 2), PQgetvalue(r, i, 3), PQgetvalue(r, i, 4), PQgetvalue(r, i, 5));
    PQclear(r);
    return 0;
}

static int admin_key_revoke(PGconn *pg, const char *key_id)
{
    PGresult *r;
    const char *params[] = {key_id};

    if (admin_exec(pg,
                   "UPDATE iam.api_key SET revoked_at = now() WHERE key_id = $1"
                   " AND revoked_at IS NULL RETURNING key_id",
                   1, params, &r) != 0)
        return 1;
    int n = PQntuples(r);
    PQclear(r);
    if (n == 0) {
        fprintf(stderr, "ptce-admin: no active key %s\n", key_id);
        return 1;
    }
    printf("revoked %s\n", key_id);
    return 0;
}

/* ---- outbox dead letters ---- */

/* Points the session at a service's schema; 0 when svc is one of admin_services. */
static int admin_service_schema(PGconn *pg, const char *svc)
{
    const char *params[] = {svc};

    for (size_t i = 0; svc && i < sizeof admin_services / sizeof admin_services[0]; i++) {
        if (strcmp(svc, admin_services[i]) == 0)
            return admin_exec(pg, "SELECT set_config('search_path', $1, false)", 1, params, NULL);
    }
    fprintf(stderr, "ptce-admin: --service must be submission, instruction or funding\n");
    return -1;
}

/* Lists the dead rows, with how many later rows of the same key wait behind each. */
static int admin_outbox_dead(PGconn *pg)
{
    PGresult *r;

    if (admin_exec(pg,
                   "SELECT id, key, type, attempts, octet_length(payload),"
                   " (SELECT count(*) FROM outbox w WHERE w.key = o.key AND w.id > o.id"
                   "  AND w.sent_at IS NULL AND w.dead_at IS NULL AND w.discarded_at IS NULL),"
                   " dead_at, coalesce(last_error, '')"
                   " FROM outbox o WHERE dead_at IS NOT NULL ORDER BY id",
                   0, NULL, &r) != 0)
        return 1;
    printf("%-10s  %-36s  %-24s  %-8s  %-10s  %-7s  %-32s  %s\n", "id", "key", "type", "attempts",
           "bytes", "waiting", "dead_at", "error");
    for (int i = 0; i < PQntuples(r); i++)
        printf("%-10s  %-36s  %-24s  %-8s  %-10s  %-7s  %-32s  %s\n", PQgetvalue(r, i, 0),
               PQgetvalue(r, i, 1), PQgetvalue(r, i, 2), PQgetvalue(r, i, 3), PQgetvalue(r, i, 4),
               PQgetvalue(r, i, 5), PQgetvalue(r, i, 6), PQgetvalue(r, i, 7));
    PQclear(r);
    return 0;
}

/*
 * Replays (the relay tries the row again, attempts from 0) or discards (the row is never sent
 * and stops holding its key back) one dead row, or with "--all" every one (replay only), then
 * wakes the service's relay.
 */
static int admin_outbox_settle(PGconn *pg, const char *svc, const char *target, int discard)
{
    static const char *const sql[2][2] = {
        {"UPDATE outbox SET dead_at = NULL, attempts = 0 WHERE dead_at IS NOT NULL"
         " AND id = $1::bigint RETURNING id",
         "UPDATE outbox SET dead_at = NULL, attempts = 0 WHERE dead_at IS NOT NULL RETURNING id"},
        {"UPDATE outbox SET dead_at = NULL, discarded_at = now() WHERE dead_at IS NOT NULL"
         " AND id = $1::bigint RETURNING id",
         NULL},
    };
    int all = target && strcmp(target, "--all") == 0;
    const char *params[] = {target};
    PGresult *r;

    if (!target || (!all && strspn(target, "0123456789") != strlen(target)) || !sql[discard][all]) {
        fprintf(stderr, "ptce-admin: name the dead row by its id%s\n", discard ? "" : ", or --all");
        return 2;
    }
    if (admin_exec(pg, sql[discard][all], all ? 0 : 1, params, &r) != 0)
        return 1;
    int n = PQntuples(r);
    for (int i = 0; i < n; i++)
        printf("%s %s\n", discard ? "discarded" : "replayed", PQgetvalue(r, i, 0));
    PQclear(r);
    if (n == 0) {
        fprintf(stderr, "ptce-admin: no dead outbox row %s in %s\n", all ? "at all" : target, svc);
        return all ? 0 : 1;
    }
    params[0] = svc; /* the relay LISTENs on "<schema>_outbox" */
    return admin_exec(pg, "SELECT pg_notify($1 || '_outbox', '')", 1, params, NULL) == 0 ? 0 : 1;
}

/* ptce-admin outbox dead|replay|discard --service S [ID|--all] */
static int admin_outbox(PGconn *pg, int argc, char **argv)
{
    const char *svc = admin_opt(argc, argv, "--service");
    const char *target = NULL;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--service") == 0)
            i++;
        else if (!target)
            target = argv[i];
    }
    if (admin_service_schema(pg, svc) != 0)
        return 2;
    if (strcmp(argv[0], "dead") == 0)
        return admin_outbox_dead(pg);
    if (strcmp(argv[0], "replay") == 0)
        return admin_outbox_settle(pg, svc, target, 0);
    if (strcmp(argv[0], "discard") == 0)
        return admin_outbox_settle(pg, svc, target, 1);
    return -1;
}

static void admin_usage(void)
{
    fprintf(stderr, "usage: ptce-admin bootstrap\n"
                    "       ptce-admin key create --role ROLE --regions 84,11|all [--label TEXT]\n"
                    "       ptce-admin key list\n"
                    "       ptce-admin key revoke KEY_ID\n"
                    "       ptce-admin outbox dead --service SERVICE\n"
                    "       ptce-admin outbox replay --service SERVICE ID|--all\n"
                    "       ptce-admin outbox discard --service SERVICE ID\n"
                    "The database is PTCE_ADMIN_DATABASE_URL (a role that owns the database).\n");
}

int main(int argc, char **argv)
{
    const char *url = getenv("PTCE_ADMIN_DATABASE_URL");
    int rc = 2;

    if (argc < 2 || !url || !*url) {
        admin_usage();
        return 2;
    }
    PGconn *pg = PQconnectdb(url);
    if (PQstatus(pg) != CONNECTION_OK) {
        fprintf(stderr, "ptce-admin: cannot connect: %s", PQerrorMessage(pg));
        PQfinish(pg);
        return 1;
    }
    if (strcmp(argv[1], "bootstrap") == 0)
        rc = admin_bootstrap(pg) == 0 ? 0 : 1;
    else if (argc >= 3 && strcmp(argv[1], "key") == 0 && strcmp(argv[2], "create") == 0)
        rc = admin_key_create(pg, argc - 3, argv + 3);
    else if (argc >= 3 && strcmp(argv[1], "key") == 0 && strcmp(argv[2], "list") == 0)
        rc = admin_key_list(pg);
    else if (argc >= 4 && strcmp(argv[1], "key") == 0 && strcmp(argv[2], "revoke") == 0)
        rc = admin_key_revoke(pg, argv[3]);
    else if (argc >= 3 && strcmp(argv[1], "outbox") == 0)
        rc = admin_outbox(pg, argc - 2, argv + 2);
    else
        admin_usage();
    if (rc < 0) {
        admin_usage();
        rc = 2;
    }
    PQfinish(pg);
    return rc;
}
