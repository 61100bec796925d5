/* migrate: applies a service's SQL migrations in order, once, under an advisory lock. */
#ifndef PTCE_MIGRATE_H
#define PTCE_MIGRATE_H

#include <stddef.h>

#include "db.h"

/* One migration, embedded in the binary at build time (see tools/embed_sql.sh). */
struct migration {
    const char *name; /* "001_init.sql"; applied in array order and recorded by name */
    const char *sql;
};

/*
 * Applies, in one transaction on `conn` (whose search_path is the service's schema), every
 * migration of each list not yet recorded in schema_migrations. Replicas starting together
 * serialise on a transaction-level advisory lock keyed by the schema, so each migration runs
 * exactly once. Returns the number applied in *applied.
 */
enum status migrate_apply(struct db_conn *conn, const struct migration *const *lists,
                          const size_t *counts, size_t nlists, size_t *applied);

#endif
