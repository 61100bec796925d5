/*
 * ds_client: the démarches-simplifiées GraphQL API v2 client, on libcurl, shared by submission
 * (queries, downloads) and instruction (the write-back mutations).
 */
#ifndef PTCE_DS_CLIENT_H
#define PTCE_DS_CLIENT_H

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
    DS_REFUSED,      /* a mutation DS answered with errors in its payload: a business refusal */
};

const char *ds_result_name(enum ds_result r);

struct ds_client_config {
    const char *api_url; /* "https://www.demarches-simplifiees.fr" (no trailing /api/v2) */
    const char *token;
    long timeout_ms;
    long max_file_bytes;
    int allow_http;         /* 0: https only (curl refuses anything else); 1: http too (tests) */
    const char *user_agent; /* NULL: "ptce/1" */
};

struct ds_client;

/* The queries are sent whole with an operationName (they share fragments). Copies cfg. */
struct ds_client *ds_client_new(const struct ds_client_config *cfg, const char *queries);
void ds_client_free(struct ds_client *c);

/*
 * Runs operation `op` with variables (reference taken). On DS_OK *data is the answer's "data"
 * object (new reference). Honors a pause set by an earlier 429 before sending (checking
 * *stop every 100 ms); a request in flight when *stop is set is abandoned within a second.
 * Both give DS_RETRY with err "stopping" (stop may be NULL). err receives a one-line
 * explanation of anything else.
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

/*
 * Runs mutation `op` whose payload is data.<field> ({dossier, errors}), with variables
 * (reference taken), like ds_client_query. DS answers a business refusal inside an HTTP 200:
 * errors[] in the payload and a null dossier; that is DS_REFUSED, with the messages joined in
 * err. On DS_OK *payload (may be NULL) is the payload object (new reference).
 */
enum ds_result ds_client_mutate(struct ds_client *c, const char *op, const char *field,
                                json_t *variables, json_t **payload, char *err, size_t errlen,
                                atomic_int *stop);

/*
 * DS's global id of a dossier, the dossierId mutations take: base64 of "Dossier-<number>".
 * out needs 32 bytes at least.
 */
void ds_dossier_global_id(long long number, char *out, size_t len);

/* 1 when url may be used under allow_http: https://, or http:// when allow_http is set. */
int ds_url_allowed(const char *url, int allow_http);

/* Backoff before attempt n+1: exponential from 1 s, capped, with ±50 % jitter. */
long ds_backoff_ms(int attempts, long cap_ms);

/* Base64 of the MD5 of data, as DS gives file checksums (25 bytes with the terminator). */
void ds_checksum(const unsigned char *data, size_t len, char out[25]);

/* The number of pages of a PDF, or -1 when it is not a readable PDF (uses qpdf). */
int ds_pdf_pages(const unsigned char *data, size_t len);

#endif
