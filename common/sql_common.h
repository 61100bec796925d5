/* sql_common: the migrations of every service schema (outbox, inbox), embedded at build time. */
#ifndef PTCE_SQL_COMMON_H
#define PTCE_SQL_COMMON_H

#include <stddef.h>

#include "migrate.h"

extern const struct migration sql_common_migrations[];
extern const size_t sql_common_migrations_count;

#endif
