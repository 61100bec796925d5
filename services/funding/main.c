/* funding: envelopes, agreements, tranches and the bouquet of services — wiring only. */
#include <stddef.h>
#include <string.h>

#include "events.h"
#include "funding.h"
#include "log.h"
#include "service.h"
#include "siret.h"
#include "support.h"

extern const struct migration funding_migrations[];
extern const size_t funding_migrations_count;

static const char *const funding_consumes[] = {INSTRUCTION_TOPIC, SUBMISSION_EVENTS_TOPIC};

#define FUNDING_MONEY_MAX_BATCH 256

#define FCFG(field) offsetof(struct funding_config, field)
static struct funding_config funding_cfg_storage;
static const struct config_var funding_vars[] = {
    {"PTCE_FUNDING_GRANTOR_NAME", CONFIG_STRING,
     "Ministère de l'Économie - Économie sociale et solidaire", 0, 0, FCFG(grantor_name),
     "open data: nomAttribuant (the granting body)"},
    {"PTCE_FUNDING_GRANTOR_SIRET", CONFIG_STRING, "11000201100044", 0, 0, FCFG(grantor_siret),
     "open data: idAttribuant (the granting body's SIRET)"},
    {"PTCE_FUNDING_MONEY_WRITERS", CONFIG_INT, "2", 1, 16, FCFG(money_writers),
     "connections that apply signatures and payments in batches (one batch each at a time)"},
    {"PTCE_STATS_MONEY_TTL_MS", CONFIG_INT, "1000", 0, 60000, FCFG(stats_ttl_ms),
     "how long a wave's GET /v1/stats/money is served from memory (0: computed every time)"},
};

static enum status funding_start(struct service *svc)
{
    static struct funding f;
    char err[256];

    f.cfg = funding_cfg_storage;
    funding_events_metrics_register();
    if (siret_check(f.cfg.grantor_siret) != SIRET_OK) {
        log_event(LOG_ERROR, "config.invalid", "{s:s, s:s}", "variable",
                  "PTCE_FUNDING_GRANTOR_SIRET", "error",
                  siret_check_strerror(siret_check(f.cfg.grantor_siret)));
        return STATUS_INVALID;
    }
    f.agreements = fsm_new(&funding_agreement_fsm, err, sizeof err);
    if (!f.agreements) {
        log_event(LOG_ERROR, "fsm.invalid", "{s:s}", "error", err);
        return STATUS_INTERNAL;
    }
    f.money =
        money_batch_start(svc->cfg.database_url, svc->def->schema, svc->cfg.db_statement_timeout_ms,
                          f.cfg.money_writers, FUNDING_MONEY_MAX_BATCH);
    svc->domain = &f;
    return STATUS_OK;
}

static void funding_stop(struct service *svc)
{
    struct funding *f = svc->domain;

    money_batch_stop(f->money); /* after the HTTP server: nothing is queued any more */
    fsm_free(f->agreements);
}

int main(int argc, char **argv)
{
    /* funding's own routes, then the bouquet's and the charter's (support.c). */
    static struct http_route routes[64];
    size_t n = 0;

    for (size_t i = 0; i < funding_nroutes && n < sizeof routes / sizeof *routes; i++)
        routes[n++] = funding_routes[i];
    for (size_t i = 0; i < support_nroutes && n < sizeof routes / sizeof *routes; i++)
        routes[n++] = support_routes[i];
    struct service_def def = {
        .name = "funding",
        .schema = "funding",
        .default_port = 8083,
        .migrations = funding_migrations,
        .nmigrations = funding_migrations_count,
        .routes = routes,
        .nroutes = n,
        .topic = FUNDING_TOPIC,
        .consume_topics = funding_consumes,
        .nconsume = sizeof funding_consumes / sizeof *funding_consumes,
        .event_routes = funding_event_routes,
        .nevent_routes = funding_event_nroutes,
        /* it applies decisions and skips the rest: a second member would only fetch */
        .inbox_consumers = 1,
        /*
         * Funding's events (a phase-2 decision, a wave) are rare and in no hurry: its consumer
         * waits up to 100 ms for more, ten times fewer empty fetches for the broker to answer.
         */
        .kafka_fetch_wait_ms = 100,
        /*
         * Its own events are in no hurry either, and a money batch commits hundreds of times a
         * second: woken by each, the relay ran a round per batch (make bench: signatures and
         * payments 3 025 -> 1 641 req/s, the broker 7 -> 17 % of the machine). It publishes at
         * its poll, as it did with no NOTIFY on its outbox (008_money_contention.sql).
         */
        .outbox_by_poll = 1,
        .extra_config = funding_vars,
        .nextra = sizeof funding_vars / sizeof funding_vars[0],
        .extra_out = &funding_cfg_storage,
        .start = funding_start,
        .stop = funding_stop,
    };
    return service_main(&def, argc, argv);
}
