/* reader (submission): reads of one dossier, served in batches (one statement for many). */
#ifndef PTCE_SUBMISSION_READER_H
#define PTCE_SUBMISSION_READER_H

#include "auth.h"
#include "batch.h"
#include "status.h"
#include "store.h"

struct reader;

/*
 * Starts `threads` threads, each with its own connection, that read the dossiers asked for by
 * concurrent requests with one statement.
 */
struct reader *reader_start(const char *conninfo, const char *schema, long statement_timeout_ms,
                            long threads);
/* Answers the queued reads, then stops. NULL is a no-op. */
void reader_stop(struct reader *rd);

/* A read in flight. Its owner keeps it alive until done has been called. */
struct reader_request {
    struct dossier_read read;
    struct batch_item item;
    void (*done)(struct reader_request *rq);
    void *arg; /* the owner's */
};

/*
 * Starts reading dossier id (a valid UUID) for who; both must live until done. done(rq) is called
 * on a reader thread once the read is made, or at once on this thread if the reader is stopping.
 */
void reader_dossier_post(struct reader *rd, struct reader_request *rq,
                         const struct auth_principal *who, const char *id,
                         void (*done)(struct reader_request *rq), void *arg);

/*
 * The outcome of a finished read: STATUS_OK, the stored document as JSON text (caller frees) and
 * its version (read from the same row) if the principal may see it; STATUS_NOT_FOUND whether it
 * does not exist or is out of scope; otherwise why the read failed.
 */
enum status reader_result(struct reader_request *rq, char **document, long long *version);

/* Releases rq (a heap-allocated request) and a document no one took. For http_defer. */
void reader_request_free(void *rq);

#endif
