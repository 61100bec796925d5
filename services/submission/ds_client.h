/* ds_client (submission): the démarches-simplifiées GraphQL API v2 client, on libcurl. */
#ifndef PTCE_SUBMISSION_DS_CLIENT_H
#define PTCE_SUBMISSION_DS_CLIENT_H

#include <jansson.h>
#include <stdatomic.h>

#include "xalloc.h"

enum ds_result {
    DS_OK = 0,
    DS_NOT_FOUND,    /* the dossier does not exist (or is not visible to our token) */
    DS_RATE_LIMITED, /* 429: *retry_at holds when to try again (epoch seconds) */
    DS_RETRY,        /* timeout, connection failure, 5xx: try again with backoff */
    DS_EXPIRED,      /* a file URL that expired: fetch the dossier again for a fresh one */
    DS_FATAL,        /* 400/401/403 or an answer we cannot read: needs a human, retried slowly */
    DS_TOO_LARGE,    /* a file over max_file_bytes: permanent, never downloaded again */
};

const char *ds_result_name(enum ds_result r);

struct ds_client_config {
    const char *api_url; /* "https://www.demarches-simplifiees.fr" (no trailing /api/v2) */
    const char *token;
    long timeout_ms;
    long max_file_bytes;
};

struct ds_client;

/* The queries are sent whole with an operationName (they share fragments). Copies cfg. */
struct ds_client *ds_client_new(const struct ds_client_config *cfg, const char *queries);
void ds_client_free(struct ds_client *c);

/*
 * Runs operation `op` with variables (reference taken). On DS_OK *data is the answer's "data"
 * object (new reference). Honors a pause set by an earlier 429 before sending (checking
 * *stop every 100 ms). err receives a one-line explanation of anything else.
 */
enum ds_result ds_client_query(struct ds_client *c, const char *op, json_t *variables,
                               json_t **data, char *err, size_t errlen, atomic_int *stop);

/*
 * Downloads a file URL into out (caller frees it with buf_free). A file over max_file_bytes,
 * whether the server's Content-Length announces it or the body runs past it, is DS_TOO_LARGE
 * and nothing is kept.
 */
enum ds_result ds_client_download(struct ds_client *c, const char *url, struct buf *out, char *err,
                                  size_t errlen);

/* The largest file ds_client_download accepts, in bytes. */
long ds_client_max_file_bytes(const struct ds_client *c);

/* Base64 of the MD5 of data, as DS gives file checksums (25 bytes with the terminator). */
void ds_checksum(const unsigned char *data, size_t len, char out[25]);

/* The number of pages of a PDF, or -1 when it is not a readable PDF (uses qpdf). */
int ds_pdf_pages(const unsigned char *data, size_t len);

#endif
