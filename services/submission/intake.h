/* intake (submission): durable webhook intake, committed in batches (group commit). */
#ifndef PTCE_SUBMISSION_INTAKE_H
#define PTCE_SUBMISSION_INTAKE_H

#include "store.h"

struct intake;

/*
 * Starts `writers` threads, each with its own connection, that insert the notices queued by
 * concurrent requests as one multi-row statement: one commit (one WAL flush) for many webhooks.
 */
struct intake *intake_start(const char *conninfo, const char *schema, long writers);

/* Finishes the queued notices, then stops. */
void intake_stop(struct intake *in);

/*
 * Records one notice and returns once it is committed (or failed): the caller may answer 202
 * only on STATUS_OK. *fresh is 0 for a notice already stored (a duplicate).
 */
enum status intake_record(struct intake *in, const struct ds_notice *n, int *fresh);

#endif
