/* submission: the service's own state and configuration, shared by main, routes and worker. */
#ifndef PTCE_SUBMISSION_H
#define PTCE_SUBMISSION_H

#include "ds_client.h"
#include "dossier.h"
#include "http.h"
#include "worker.h"

struct submission_config {
    const char *ds_api_url; /* empty: no fetching (notifications wait, pending) */
    const char *ds_token;
    int ds_allow_http;            /* plain http to DS (tests only); otherwise https only */
    const char *ds_webhook_token; /* the secret path segment of the webhook URL */
    const char *ds_mapping_file;  /* empty: the mapping embedded at build time */
    long ds_demarche;             /* 0: the mapping's démarche */
    long ds_workers;
    long ds_poll_interval_s;
    long ds_poll_overlap_s;
    long ds_timeout_ms;
    long ds_max_file_bytes;
    long ds_retry_max_ms;
    const char *ds_file_hosts; /* empty: the API's host and DS_FILE_HOSTS_DEFAULT */
    long deposit_writers;      /* connections that commit partner deposits in batches */
};

struct submission {
    struct submission_config cfg;
    struct ds_mapping *mapping;
    struct ds_client *client;
    struct ds_workers *workers;
    struct intake *intake;       /* webhook notices, committed in batches */
    struct deposits *deposits;   /* partner deposits, committed in batches */
    struct reader *reader;       /* dossier reads by id, in batches */
    long demarche;               /* the PTCE démarche: webhooks of others are refused */
    char webhook_token_hash[65]; /* SHA-256 of the token; empty when the webhook is disabled */
    char file_hosts[512];        /* the hosts file URLs may point to */
};

extern const struct http_route submission_routes[];
extern const size_t submission_nroutes;

#endif
