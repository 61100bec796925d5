/* store (instruction): the SQL of instruction's reads and simple writes, one function per use. */
#ifndef PTCE_INSTRUCTION_STORE_H
#define PTCE_INSTRUCTION_STORE_H

#include <jansson.h>

#include "auth.h"
#include "db.h"
#include "uuid.h"

/* What the checks of a route need of a dossier. Caller-owned; store_dossier_row_clear. */
struct dossier_row {
    char id[UUID_STR_LEN];
    char region[8];
    char wave[40];
    char state[64];
    long long version;
    long long ds_number; /* 0: not a DS dossier */
    int withdrawn;
    json_t *doc; /* the projected submission document (new reference) */
};

void store_dossier_row_clear(struct dossier_row *d);

/*
 * Reads dossier id into *out (FOR UPDATE when lock, inside the caller's transaction).
 * STATUS_NOT_FOUND when absent.
 */
enum status store_dossier_row(struct db_conn *conn, const char *id, int lock,
                              struct dossier_row *out);

/*
 * 1 when the principal may see this dossier: its region (and dossier list) in scope, and for an
 * expert an opinion request of that key on it whose declaration was made and not blocked.
 * Dashboards see no dossier. Runs a query for experts only.
 */
int store_dossier_visible(struct db_conn *conn, const struct auth_principal *p,
                          const struct dossier_row *d);

/* Loads and checks visibility in one step: STATUS_NOT_FOUND when absent or out of scope. */
enum status store_dossier_find(struct db_conn *conn, const struct auth_principal *p, const char *id,
                               struct dossier_row *out);

/* The API document of a dossier (InstructionDossier), a new reference; NULL if absent. */
json_t *store_dossier_document(struct db_conn *conn, const char *id);

struct dossier_list_filter {
    const char *wave, *region, *state, *group, *label;
    int overdue; /* 1: only dossiers past their wave's target delay and not decided */
    long limit;
    const char *after_id; /* keyset position, NULL for the first page */
};

/*
 * One page of dossier documents the principal sees, by id; *items a new array, *last_id the id
 * of the last row when another page may follow ("" otherwise, UUID_STR_LEN bytes).
 */
enum status store_dossier_queue(struct db_conn *conn, const struct auth_principal *p,
                                const struct dossier_list_filter *f, json_t **items, char *last_id);

/* One page of a dossier's history after seq (0: the start); *last_seq 0 when it is the last. */
enum status store_history_page(struct db_conn *conn, const char *id, long long after_seq,
                               long limit, json_t **items, long long *last_seq);

/*
 * A change to a dossier by a route, in one transaction of its own: lock the row, check scope
 * (STATUS_NOT_FOUND), If-Match against the version (optional: STATUS_OK when absent), run
 * change(conn, d, arg), then version + 1. On any failure nothing is written; why (may be
 * written by change) explains a refusal.
 */
typedef enum status (*store_change_fn)(struct db_conn *conn, const struct dossier_row *d, void *arg,
                                       char *why, size_t whylen);
enum status store_dossier_change(struct db_conn *conn, const struct auth_principal *p,
                                 const char *id, const char *if_match, store_change_fn change,
                                 void *arg, char *why, size_t whylen);

/* The principal's region scope as a PostgreSQL array literal, NULL for all regions (freed). */
char *store_scope_regions(const struct auth_principal *p);

#endif
