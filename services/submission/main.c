/* submission: dossiers from démarches-simplifiées and partners — wiring only. */
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "log.h"
#include "service.h"
#include "ds_files.h"
#include "deposit.h"
#include "intake.h"
#include "reader.h"
#include "store.h"
#include "submission.h"

extern const struct migration submission_migrations[];
extern const size_t submission_migrations_count;
extern const char ds_queries_text[];
extern const char ds_mapping_text[];

#define SCFG(field) offsetof(struct submission_config, field)

static struct submission_config submission_cfg_storage;

static const struct config_var submission_vars[] = {
    {"PTCE_DS_API_URL", CONFIG_STRING, "", 0, 0, SCFG(ds_api_url),
     "DS base URL; empty: no fetching"},
    {"PTCE_DS_TOKEN", CONFIG_STRING, "", 0, 0, SCFG(ds_token), "DS API token (Bearer)"},
    {"PTCE_DS_ALLOW_HTTP", CONFIG_BOOL, "0", 0, 1, SCFG(ds_allow_http),
     "1: plain http to DS allowed (tests); 0: https only"},
    {"PTCE_DS_WEBHOOK_TOKEN", CONFIG_STRING, "", 0, 0, SCFG(ds_webhook_token),
     "secret path token of the webhook; empty: disabled"},
    {"PTCE_DS_MAPPING_FILE", CONFIG_STRING, "", 0, 0, SCFG(ds_mapping_file),
     "champ mapping; empty: the embedded one"},
    {"PTCE_DS_DEMARCHE", CONFIG_INT, "0", 0, 2147483647, SCFG(ds_demarche),
     "démarche number; 0: the mapping's"},
    {"PTCE_DS_WORKERS", CONFIG_INT, "2", 1, 64, SCFG(ds_workers), "fetch worker threads"},
    {"PTCE_DS_POLL_INTERVAL_S", CONFIG_INT, "300", 0, 86400, SCFG(ds_poll_interval_s),
     "reconciliation period; 0: off"},
    {"PTCE_DS_POLL_OVERLAP_S", CONFIG_INT, "600", 0, 86400, SCFG(ds_poll_overlap_s),
     "poll from the watermark minus this"},
    {"PTCE_DS_TIMEOUT_MS", CONFIG_INT, "15000", 100, 600000, SCFG(ds_timeout_ms),
     "timeout of one DS request"},
    {"PTCE_DS_MAX_FILE_BYTES", CONFIG_INT, "20971520", 1024, 1073741824, SCFG(ds_max_file_bytes),
     "largest attachment downloaded"},
    {"PTCE_DS_RETRY_MAX_MS", CONFIG_INT, "600000", 100, 86400000, SCFG(ds_retry_max_ms),
     "cap of the retry backoff"},
    {"PTCE_DS_FILE_HOSTS", CONFIG_STRING, "", 0, 0, SCFG(ds_file_hosts),
     "hosts file URLs may point to (.domain: its sub-domains); empty: the API's and DS's"},
    {"PTCE_SUBMISSION_DEPOSIT_WRITERS", CONFIG_INT, "2", 1, 16, SCFG(deposit_writers),
     "connections that commit partner deposits in batches"},
};

static enum status submission_start(struct service *svc)
{
    static struct submission sub;
    char err[512];

    sub.cfg = submission_cfg_storage;
    sub.mapping = ds_mapping_load(sub.cfg.ds_mapping_file, ds_mapping_text, err, sizeof err);
    if (!sub.mapping) {
        log_event(LOG_ERROR, "ds.mapping_invalid", "{s:s}", "error", err);
        return STATUS_INVALID;
    }
    if (sub.cfg.ds_webhook_token[0])
        auth_token_hash(sub.cfg.ds_webhook_token, sub.webhook_token_hash);
    else
        log_event(LOG_WARN, "ds.webhook_disabled", "{s:s}", "reason",
                  "PTCE_DS_WEBHOOK_TOKEN unset");
    sub.demarche = sub.cfg.ds_demarche ? sub.cfg.ds_demarche : ds_mapping_demarche(sub.mapping);
    sub.intake =
        intake_start(svc->cfg.database_url, svc->def->schema, svc->cfg.db_statement_timeout_ms, 2);
    sub.deposits = deposits_start(svc->cfg.database_url, svc->def->schema,
                                  svc->cfg.db_statement_timeout_ms, sub.cfg.deposit_writers);
    sub.reader =
        reader_start(svc->cfg.database_url, svc->def->schema, svc->cfg.db_statement_timeout_ms, 2);
    svc->domain = &sub;
    if (!sub.cfg.ds_api_url[0]) {
        log_event(LOG_WARN, "ds.fetch_disabled", "{s:s}", "reason",
                  "PTCE_DS_API_URL unset: notifications are stored and wait");
        return STATUS_OK;
    }
    if (!ds_url_allowed(sub.cfg.ds_api_url, sub.cfg.ds_allow_http)) {
        log_event(LOG_ERROR, "ds.url_refused", "{s:s, s:s}", "variable", "PTCE_DS_API_URL", "error",
                  "must be an https:// URL (http:// only with PTCE_DS_ALLOW_HTTP=1)");
        return STATUS_INVALID;
    }
    struct ds_client_config cc = {sub.cfg.ds_api_url,    sub.cfg.ds_token,
                                  sub.cfg.ds_timeout_ms, sub.cfg.ds_max_file_bytes,
                                  sub.cfg.ds_allow_http, "ptce-submission/1"};
    sub.client = ds_client_new(&cc, ds_queries_text);
    char api_host[256];
    if (sub.cfg.ds_file_hosts[0])
        snprintf(sub.file_hosts, sizeof sub.file_hosts, "%s", sub.cfg.ds_file_hosts);
    else if (ds_url_host(sub.cfg.ds_api_url, api_host, sizeof api_host) == 0)
        snprintf(sub.file_hosts, sizeof sub.file_hosts, "%s," DS_FILE_HOSTS_DEFAULT, api_host);
    else
        snprintf(sub.file_hosts, sizeof sub.file_hosts, "%s", DS_FILE_HOSTS_DEFAULT);
    struct worker_config wc = {svc->cfg.database_url,
                               svc->def->schema,
                               sub.cfg.ds_workers,
                               sub.cfg.ds_poll_interval_s,
                               sub.cfg.ds_poll_overlap_s,
                               sub.cfg.ds_retry_max_ms,
                               sub.demarche,
                               svc->cfg.db_statement_timeout_ms,
                               sub.file_hosts,
                               sub.cfg.ds_allow_http};
    sub.workers = ds_workers_start(&wc, sub.client, sub.mapping);
    return STATUS_OK;
}

static void submission_stop(struct service *svc)
{
    struct submission *sub = svc->domain;

    intake_stop(sub->intake);
    deposits_stop(sub->deposits);
    reader_stop(sub->reader);
    ds_workers_stop(sub->workers);
    ds_client_free(sub->client);
    ds_mapping_free(sub->mapping);
}

int main(int argc, char **argv)
{
    struct service_def def = {
        .name = "submission",
        .schema = "submission",
        .default_port = 8081,
        .migrations = submission_migrations,
        .nmigrations = submission_migrations_count,
        .routes = submission_routes,
        .nroutes = submission_nroutes,
        .topic = SUBMISSION_TOPIC,
        .extra_config = submission_vars,
        .nextra = sizeof submission_vars / sizeof submission_vars[0],
        .extra_out = &submission_cfg_storage,
        .start = submission_start,
        .stop = submission_stop,
    };
    return service_main(&def, argc, argv);
}
