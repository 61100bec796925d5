/* region: the 18 INSEE region codes of France, overseas included. */
#ifndef PTCE_REGION_H
#define PTCE_REGION_H

/* 1 when code is one of the 18 current INSEE region codes ("01" … "94"; there is no "05"). */
int region_is_valid(const char *code);

/* The region's name ("Île-de-France"), or NULL for an unknown code. */
const char *region_name(const char *code);

/* Validates a comma-separated list of codes ("84,11"); 1 if every code is valid and non-empty. */
int region_list_is_valid(const char *csv);

#endif
