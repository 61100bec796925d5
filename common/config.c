/* config: table-driven environment parsing that reports every problem in one go. */
#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static void config_problem(char *errbuf, size_t errlen, size_t *used, const char *fmt, ...)
{
    va_list ap;

    if (*used >= errlen)
        return;
    va_start(ap, fmt);
    int n = vsnprintf(errbuf + *used, errlen - *used, fmt, ap);
    va_end(ap);
    if (n > 0)
        *used += (size_t)n;
}

static int config_parse_long(const char *s, long *out)
{
    char *end;

    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end != '\0')
        return -1;
    *out = v;
    return 0;
}

static int config_parse_bool(const char *s, int *out)
{
    if (!strcasecmp(s, "true") || !strcmp(s, "1") || !strcasecmp(s, "yes")) {
        *out = 1;
        return 0;
    }
    if (!strcasecmp(s, "false") || !strcmp(s, "0") || !strcasecmp(s, "no")) {
        *out = 0;
        return 0;
    }
    return -1;
}

int config_load(const struct config_var *vars, size_t count, void *out, char *errbuf, size_t errlen)
{
    size_t used = 0;
    int problems = 0;

    if (errlen)
        errbuf[0] = '\0';
    for (size_t i = 0; i < count; i++) {
        const struct config_var *v = &vars[i];
        const char *raw = getenv(v->name);
        char *field = (char *)out + v->offset;

        if (raw && raw[0] == '\0')
            raw = NULL;
        if (!raw)
            raw = v->def;
        if (!raw) {
            config_problem(errbuf, errlen, &used, "%s is required (%s)\n", v->name, v->help);
            problems++;
            continue;
        }
        switch (v->type) {
        case CONFIG_STRING:
            memcpy(field, &raw, sizeof raw);
            break;
        case CONFIG_INT: {
            long n;
            if (config_parse_long(raw, &n) != 0 || n < v->min || n > v->max) {
                config_problem(errbuf, errlen, &used,
                               "%s=%s is not an integer between %ld and %ld (%s)\n", v->name, raw,
                               v->min, v->max, v->help);
                problems++;
                break;
            }
            memcpy(field, &n, sizeof n);
            break;
        }
        case CONFIG_BOOL: {
            int b;
            if (config_parse_bool(raw, &b) != 0) {
                config_problem(errbuf, errlen, &used, "%s=%s is not a boolean (true/false)\n",
                               v->name, raw);
                problems++;
                break;
            }
            memcpy(field, &b, sizeof b);
            break;
        }
        }
    }
    return problems;
}

void config_print_help(const struct config_var *vars, size_t count)
{
    for (size_t i = 0; i < count; i++)
        printf("  %-28s %-24s %s\n", vars[i].name, vars[i].def ? vars[i].def : "(required)",
               vars[i].help);
}
