/* ds_mapping (submission): the DS mapping file, checked at load, and a DS dossier mapped by it. */
#ifndef PTCE_SUBMISSION_DS_MAPPING_H
#define PTCE_SUBMISSION_DS_MAPPING_H

#include <jansson.h>
#include <stddef.h>

struct ds_mapping;

/*
 * Loads the mapping from the file at path, or when path is NULL or empty from text (the copy
 * of services/submission/ds_mapping.json embedded at build time), and checks it whole: every
 * model field named in "champs", "row_champs" and "dossier" must exist (and be allowed there),
 * every path must be well formed. Returns NULL and writes into err every problem found, each
 * named by its place in the file (e.g. "dossier.carrier_sirett: unknown model field").
 * The caller frees the mapping with ds_mapping_free.
 */
struct ds_mapping *ds_mapping_load(const char *path, const char *text, char *err, size_t errlen);
/* Frees m; NULL is a no-op. */
void ds_mapping_free(struct ds_mapping *m);
/* The démarche number the mapping is written for. */
long ds_mapping_demarche(const struct ds_mapping *m);

/*
 * Maps a DS dossier (the `dossier` object answered by getDossier) to our content: first the
 * champs, matched by champDescriptorId; then the "dossier" paths (e.g. demandeur.siret), read
 * from the dossier object itself, each filling its field only where the champs left it null:
 * a champ that answers wins. Returns a new reference; never NULL. ds_dossier is borrowed.
 */
json_t *dossier_content_from_ds(const struct ds_mapping *m, json_t *ds_dossier);

#endif
