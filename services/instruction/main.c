/* instruction: regional instruction and national decision — wiring only. */
#include <stdio.h>

#include "events.h"
#include "instruction.h"
#include "lifecycle.h"
#include "log.h"

extern const struct migration instruction_migrations[];
extern const size_t instruction_migrations_count;

static const char *const instruction_consumes[] = {SUBMISSION_TOPIC};
static struct instruction instruction_state;

static enum status instruction_start(struct service *svc)
{
    char err[256];

    instruction_state.fsm = lifecycle_fsm_new(err, sizeof err);
    if (!instruction_state.fsm) {
        log_event(LOG_ERROR, "instruction.fsm", "{s:s}", "error", err);
        return STATUS_INTERNAL;
    }
    svc->domain = &instruction_state;
    return STATUS_OK;
}

static void instruction_stop(struct service *svc)
{
    struct instruction *in = svc->domain;

    if (in)
        fsm_free(in->fsm);
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
        .on_event = instruction_on_event,
        .start = instruction_start,
        .stop = instruction_stop,
    };
    return service_main(&def, argc, argv);
}
