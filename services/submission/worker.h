/* worker (submission): the DS fetch workers and the reconciliation poller. */
#ifndef PTCE_SUBMISSION_WORKER_H
#define PTCE_SUBMISSION_WORKER_H

#include "ds_client.h"
#include "dossier.h"

struct worker_config {
    const char *conninfo;
    const char *schema;
    long workers;         /* fetch threads */
    long poll_interval_s; /* reconciliation period; 0 disables the poller */
    long poll_overlap_s;  /* how far before the watermark each poll starts again */
    long retry_max_ms;    /* cap of the exponential backoff */
    long demarche;
    long statement_timeout_ms; /* of each thread's own connection; 0: none */
    const char *file_hosts;    /* hosts file URLs may point to (ds_files.h); borrowed */
    int allow_http;            /* plain http file URLs too (development) */
};

struct ds_workers;

/*
 * Starts the fetch threads (each claims due notifications, fetches the dossier, downloads and
 * verifies its main document, counts its pages, stores it with its event) and the poller.
 * client and mapping are borrowed and must outlive the workers.
 */
struct ds_workers *ds_workers_start(const struct worker_config *cfg, struct ds_client *client,
                                    const struct ds_mapping *mapping);
void ds_workers_stop(struct ds_workers *w);

/* Tells the local fetch threads that a notification was just stored (NULL: no-op). */
void ds_workers_wake(struct ds_workers *w);

#endif
