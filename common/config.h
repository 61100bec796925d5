/* config: environment variables, described in a table, validated all at once at start-up. */
#ifndef PTCE_CONFIG_H
#define PTCE_CONFIG_H

#include <stddef.h>

enum config_type { CONFIG_STRING, CONFIG_INT, CONFIG_BOOL };

/*
 * One variable. The value is written at `offset` inside the caller's struct:
 * CONFIG_STRING → const char * (points into the environment or at `def`; never freed),
 * CONFIG_INT → long (checked against [min, max]), CONFIG_BOOL → int (0/1; "true/false/1/0").
 * A NULL `def` makes the variable required.
 */
struct config_var {
    const char *name;
    enum config_type type;
    const char *def;
    long min;
    long max;
    size_t offset;
    const char *help;
};

/*
 * Reads every variable of the table into `out`. Returns the number of problems found
 * (0 on success) and describes each of them, one per line, in errbuf.
 */
int config_load(const struct config_var *vars, size_t count, void *out, char *errbuf,
                size_t errlen);

/* Writes a "NAME  default  help" table of the variables to stdout (for --help). */
void config_print_help(const struct config_var *vars, size_t count);

#endif
