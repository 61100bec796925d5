/* instruction: regional instruction and national decision — wiring only. */
#include <stddef.h>
#include <stdio.h>

#include "events.h"
#include "instruction.h"
#include "lifecycle.h"
#include "log.h"
#include "service.h"
#include "writeback.h"

extern const struct migration instruction_migrations[];
extern const size_t instruction_migrations_count;

static const char *const instruction_consumes[] = {SUBMISSION_TOPIC};
static struct instruction instruction_state;

/* The DS write-back's settings (README, "Decisions written back to DS"). */
struct instruction_config {
    const char *ds_api_url;
    const char *ds_token;
    int ds_allow_http;
    const char *ds_instructeur_id;
    long ds_rate_per_min;
    long ds_timeout_ms;
    long ds_retry_max_ms;
    long balance_ttl_ms;
    long ranking_ttl_ms;
};

#define ICFG(field) offsetof(struct instruction_config, field)

static struct instruction_config instruction_cfg;

static const struct config_var instruction_vars[] = {
    {"PTCE_DS_API_URL", CONFIG_STRING, "", 0, 0, ICFG(ds_api_url),
     "DS base URL; empty: decisions are queued and wait"},
    {"PTCE_DS_TOKEN", CONFIG_STRING, "", 0, 0, ICFG(ds_token),
     "DS API token with write rights (Bearer)"},
    {"PTCE_DS_ALLOW_HTTP", CONFIG_BOOL, "0", 0, 1, ICFG(ds_allow_http),
     "1: plain http to DS allowed (tests); 0: https only"},
    {"PTCE_DS_INSTRUCTEUR_ID", CONFIG_STRING, "", 0, 0, ICFG(ds_instructeur_id),
     "DS id of the instructeur the token acts for (required with PTCE_DS_API_URL)"},
    {"PTCE_DS_RATE_PER_MIN", CONFIG_INT, "400", 1, 100000, ICFG(ds_rate_per_min),
     "DS requests a minute, never more (DS's limit: 400)"},
    {"PTCE_DS_TIMEOUT_MS", CONFIG_INT, "15000", 100, 600000, ICFG(ds_timeout_ms),
     "timeout of one DS request"},
    {"PTCE_DS_RETRY_MAX_MS", CONFIG_INT, "600000", 100, 86400000, ICFG(ds_retry_max_ms),
     "cap of the retry backoff"},
    {"PTCE_RANKING_BALANCE_TTL_MS", CONFIG_INT, "1000", 0, 60000, ICFG(balance_ttl_ms),
     "how long a ranking's balance by region is served from memory (0: counted every time)"},
    {"PTCE_RANKING_TTL_MS", CONFIG_INT, "1000", 0, 60000, ICFG(ranking_ttl_ms),
     "how long a ranking's answer is served again while this process committed nothing (0: never)"},
};

static enum status instruction_start(struct service *svc)
{
    char err[256];
    struct writeback_config wc = {svc->cfg.database_url,
                                  svc->def->schema,
                                  svc->cfg.db_statement_timeout_ms,
                                  instruction_cfg.ds_api_url,
                                  instruction_cfg.ds_token,
                                  instruction_cfg.ds_allow_http,
                                  instruction_cfg.ds_instructeur_id,
                                  instruction_cfg.ds_rate_per_min,
                                  instruction_cfg.ds_timeout_ms,
                                  instruction_cfg.ds_retry_max_ms};

    instruction_state.fsm = lifecycle_fsm_new(err, sizeof err);
    if (!instruction_state.fsm) {
        log_event(LOG_ERROR, "instruction.fsm", "{s:s}", "error", err);
        return STATUS_INTERNAL;
    }
    instruction_state.balance_ttl_ms = instruction_cfg.balance_ttl_ms;
    instruction_state.ranking_ttl_ms = instruction_cfg.ranking_ttl_ms;
    svc->domain = &instruction_state;
    instruction_state.writeback = writeback_start(&wc);
    return instruction_state.writeback ? STATUS_OK : STATUS_INVALID;
}

static void instruction_stop(struct service *svc)
{
    struct instruction *in = svc->domain;

    if (!in)
        return;
    writeback_stop(in->writeback);
    in->writeback = NULL;
    fsm_free(in->fsm);
    in->fsm = NULL;
}

int main(int argc, char **argv)
{
    struct service_def def = {
        .name = "instruction",
        .schema = "instruction",
        .default_port = 8082,
        .migrations = instruction_migrations,
        .nmigrations = instruction_migrations_count,
        .routes = instruction_routes,
        .nroutes = instruction_nroutes,
        .topic = INSTRUCTION_TOPIC,
        .consume_topics = instruction_consumes,
        .nconsume = 1,
        .event_routes = instruction_event_routes,
        .nevent_routes = instruction_event_nroutes,
        .event_prepare = events_prepare,
        /* every deposit comes through: three of the six partitions applied at once (README) */
        .inbox_consumers = 3,
        .extra_config = instruction_vars,
        .nextra = sizeof instruction_vars / sizeof instruction_vars[0],
        .extra_out = &instruction_cfg,
        .start = instruction_start,
        .stop = instruction_stop,
    };
    return service_main(&def, argc, argv);
}
