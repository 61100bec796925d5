/* instruction: regional instruction and national decision — wiring only. */
#include "events.h"
#include "service.h"

extern const struct migration instruction_migrations[];
extern const size_t instruction_migrations_count;

static const char *const instruction_consumes[] = {SUBMISSION_TOPIC};

int main(int argc, char **argv)
{
    struct service_def def = {
        .name = "instruction",
        .schema = "instruction",
        .default_port = 8082,
        .migrations = instruction_migrations,
        .nmigrations = instruction_migrations_count,
        .topic = INSTRUCTION_TOPIC,
        .consume_topics = instruction_consumes,
        .nconsume = 1,
        .on_event = instruction_on_event,
    };
    return service_main(&def, argc, argv);
}
