/* funding: agreements, tranches and the bouquet of services — wiring only. */
#include "events.h"
#include "service.h"
#include "support.h"

extern const struct migration funding_migrations[];
extern const size_t funding_migrations_count;

static const char *const funding_consumes[] = {INSTRUCTION_TOPIC};

int main(int argc, char **argv)
{
    struct service_def def = {
        .name = "funding",
        .schema = "funding",
        .default_port = 8083,
        .migrations = funding_migrations,
        .nmigrations = funding_migrations_count,
        .topic = FUNDING_TOPIC,
        .consume_topics = funding_consumes,
        .nconsume = 1,
        .on_event = funding_on_event,
        .routes = support_routes,
        .nroutes = support_nroutes,
    };
    return service_main(&def, argc, argv);
}
