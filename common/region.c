/* region: INSEE region codes as a table. */
#include "region.h"

#include <string.h>

static const struct {
    const char *code;
    const char *name;
} regions[] = {
    {"01", "Guadeloupe"},
    {"02", "Martinique"},
    {"03", "Guyane"},
    {"04", "La Réunion"},
    {"06", "Mayotte"},
    {"11", "Île-de-France"},
    {"24", "Centre-Val de Loire"},
    {"27", "Bourgogne-Franche-Comté"},
    {"28", "Normandie"},
    {"32", "Hauts-de-France"},
    {"44", "Grand Est"},
    {"52", "Pays de la Loire"},
    {"53", "Bretagne"},
    {"75", "Nouvelle-Aquitaine"},
    {"76", "Occitanie"},
    {"84", "Auvergne-Rhône-Alpes"},
    {"93", "Provence-Alpes-Côte d'Azur"},
    {"94", "Corse"},
};

const char *region_name(const char *code)
{
    for (size_t i = 0; code && i < sizeof regions / sizeof regions[0]; i++) {
        if (strcmp(regions[i].code, code) == 0)
            return regions[i].name;
    }
    return NULL;
}

int region_is_valid(const char *code)
{
    return region_name(code) != NULL;
}

int region_list_is_valid(const char *csv)
{
    char code[3];
    const char *s = csv;

    if (!s || !*s)
        return 0;
    for (;;) {
        size_t n = strcspn(s, ",");
        if (n != 2)
            return 0;
        memcpy(code, s, 2);
        code[2] = '\0';
        if (!region_is_valid(code))
            return 0;
        s += n;
        if (*s == '\0')
            return 1;
        s++;
    }
}
