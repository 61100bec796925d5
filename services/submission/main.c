/* submission: dossiers from démarches-simplifiées and partners — wiring only. */
#include "service.h"

extern const struct migration submission_migrations[];
extern const size_t submission_migrations_count;

int main(int argc, char **argv)
{
    struct service_def def = {
        .name = "submission",
        .schema = "submission",
        .default_port = 8081,
        .migrations = submission_migrations,
        .nmigrations = submission_migrations_count,
        .topic = "ptce.submission.events",
    };
    return service_main(&def, argc, argv);
}
