/* reader (submission): reads of one dossier, served in batches (one statement for many). */
#ifndef PTCE_SUBMISSION_READER_H
#define PTCE_SUBMISSION_READER_H

#include "auth.h"
#include "status.h"

struct reader;

/*
 * Starts `threads` threads, each with its own connection, that read the dossiers asked for by
 * concurrent requests with one statement.
 */
struct reader *reader_start(const char *conninfo, const char *schema, long statement_timeout_ms,
                            long threads);
/* Answers the queued reads, then stops. NULL is a no-op. */
void reader_stop(struct reader *rd);

/*
 * The stored document of dossier id (a valid UUID) as JSON text (caller frees), if the
 * principal may see it; STATUS_NOT_FOUND otherwise, whether it does not exist or is out of scope.
 */
enum status reader_dossier_get(struct reader *rd, const struct auth_principal *who, const char *id,
                               char **document);

#endif
