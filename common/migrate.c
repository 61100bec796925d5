/* migrate: ordered, recorded, lock-protected schema migrations. */
#include "migrate.h"

#include <stdio.h>
#include <string.h>

#include "log.h"

DB_STMT(migrate_lock, "SELECT pg_advisory_xact_lock(hashtext('ptce.migrate.' || "
                      "current_schema()))");
DB_STMT(migrate_seen, "SELECT 1 FROM schema_migrations WHERE name = $1");
DB_STMT(migrate_record, "INSERT INTO schema_migrations (name) VALUES ($1)");

static enum status migrate_one(struct db_conn *conn, const struct migration *m, int *done)
{
    PGresult *r;
    const char *params[] = {m->name};
    enum status st = db_exec(conn, &migrate_seen, 1, params, &r);

    if (st != STATUS_OK)
        return st;
    int seen = PQntuples(r) > 0;
    PQclear(r);
    if (seen)
        return STATUS_OK;
    st = db_command(conn, m->sql);
    if (st == STATUS_OK)
        st = db_exec(conn, &migrate_record, 1, params, NULL);
    if (st == STATUS_OK) {
        log_event(LOG_INFO, "migration.applied", "{s:s}", "name", m->name);
        *done = 1;
    } else {
        log_event(LOG_ERROR, "migration.failed", "{s:s}", "name", m->name);
    }
    return st;
}

enum status migrate_apply(struct db_conn *conn, const struct migration *const *lists,
                          const size_t *counts, size_t nlists, size_t *applied)
{
    enum status st = db_begin(conn);

    *applied = 0;
    if (st == STATUS_OK)
        st = db_exec(conn, &migrate_lock, 0, NULL, NULL);
    if (st == STATUS_OK)
        st = db_command(conn, "CREATE TABLE IF NOT EXISTS schema_migrations ("
                              " name text PRIMARY KEY,"
                              " applied_at timestamptz NOT NULL DEFAULT now())");
    for (size_t l = 0; st == STATUS_OK && l < nlists; l++) {
        for (size_t i = 0; st == STATUS_OK && i < counts[l]; i++) {
            int done = 0;
            st = migrate_one(conn, &lists[l][i], &done);
            *applied += (size_t)done;
        }
    }
    if (st == STATUS_OK)
        return db_commit(conn);
    db_rollback(conn);
    return st;
}
