/* store (submission): every SQL statement of the service, one function per use case. */
#ifndef PTCE_SUBMISSION_STORE_H
#define PTCE_SUBMISSION_STORE_H

#include <jansson.h>

#include "auth.h"
#include "db.h"
#include "http_idem.h"
#include "uuid.h"
#include "xalloc.h"

#define SUBMISSION_TOPIC "ptce.submission.events"
#define SUBMISSION_SOURCE "/ptce/submission"

/* A webhook notification, validated. */
struct ds_notice {
    const char *procedure_id;
    const char *dossier_number;
    const char *state;
    const char *updated_at_raw;
    const char *updated_at; /* RFC 3339 */
};

/*
 * Records notifications in one statement (one commit). A notice already stored, or repeated
 * within the batch, is not an error: fresh[i] says which were new.
 */
enum status store_notice_insert_batch(struct db_conn *conn, const struct ds_notice *const *n,
                                      size_t count, int *fresh);

/* One read of store_dossier_read_batch. */
struct dossier_read {
    const char *id; /* a valid UUID */
    const struct auth_principal *who;
    char *document;    /* out: the stored document as JSON text (caller frees), or NULL */
    long long version; /* out: the dossier's version (its ETag), when document is set */
};

/*
 * Reads the documents of several dossiers, with their versions, in one statement (the version
 * comes from the same row as the document, so the two always agree). A document is left NULL
 * when the dossier does not exist or its reader may not see it: both look the same from outside.
 */
enum status store_dossier_read_batch(struct db_conn *conn, struct dossier_read *const *reads,
                                     size_t n);

struct dossier_filter {
    const char *wave;
    const char *region;
    const char *state;
    const char *eligibility;
    const char *updated_since; /* RFC 3339 */
    /* Keyset position: after this change (a transaction id) and dossier id; NULL: the start. */
    const char *after_xid;
    const char *after_id;
    long limit;
};

/* A position in the change order: the writing transaction's id (xid8 as text) and a uuid. */
struct dossier_position {
    char xid[24];
    char id[40];
};

/*
 * Appends a JSON array of documents to out, in commit-safe change order (only changes older
 * than every transaction still in flight are served). *more is 1 when a page follows, and
 * *last then holds the position of the page's last item.
 */
enum status store_dossier_list(struct db_pool *db, const struct auth_principal *who,
                               const struct dossier_filter *f, struct buf *out, int *more,
                               struct dossier_position *last);

/*
 * The history of a dossier as a JSON array text (caller frees), scope-checked like get, and the
 * dossier's version: every entry is written with a new version, so it tags the history too.
 */
enum status store_dossier_history(struct db_pool *db, const struct auth_principal *who,
                                  const char *id, char **history, long long *version);

/*
 * Creates a partner dossier under its Idempotency-Key (http_idem.h), in one transaction: the
 * same key and request replay the first answer (idem->replayed); another request under the key
 * is STATUS_UNPROCESSABLE, one still in flight STATUS_CONFLICT (both with idem->refused; a
 * STATUS_CONFLICT alone: no wave accepts deposits). On success *document is the created
 * document's text, or the replayed one (caller frees).
 */
enum status store_partner_create(struct db_conn *conn, const struct auth_principal *who,
                                 struct http_idem *idem, json_t *content, char **document);

/* One deposit of store_partner_create_many. Inputs borrowed; the rest are outputs. */
struct store_deposit {
    const struct auth_principal *who;
    struct http_idem *idem; /* its key required */
    json_t *content;
    const char *request_id; /* of the deposit's event */
    int created;            /* out: 1 when the batch created its dossier */
    char *document;         /* out, when created: the document's text (caller frees) */
    char id[UUID_STR_LEN];  /* out, when created: the new dossier's id */
};

/*
 * Creates the dossiers of d[0..n), each under its key, in one transaction and a few statements
 * whatever n (a group commit). STATUS_OK: committed; d[i]->created says which were created (with
 * their document). A deposit whose key was not fresh (a replay, a twin in flight, another
 * request, a key already earlier in d) is left uncreated: the caller then takes it alone with
 * store_partner_create, which gives it its own answer. Anything else: nothing committed, no
 * deposit created.
 */
enum status store_partner_create_many(struct db_conn *conn, struct store_deposit *const *d,
                                      size_t n);

/* A DS dossier as fetched and mapped, ready to store. Strings borrowed. */
struct ds_snapshot {
    long long number;
    long long procedure_id;
    const char *state;
    const char *ds_updated_at; /* dateDerniereModification, RFC 3339 */
    const char *deposited_at;  /* dateDepot, may be NULL */
    json_t *content;           /* main_document.pages already set when counted */
    const unsigned char *file; /* the main document's bytes, or NULL */
    size_t file_len;
};

/*
 * Inserts or updates the dossier of a DS snapshot with its checks, history and event, in one
 * transaction — unless what we hold is already as recent (*changed = 0, nothing written).
 */
enum status store_ds_apply(struct db_conn *conn, const struct ds_snapshot *s, int *changed);

/* Marks a DS dossier deleted on DS as withdrawn (once), with its event. */
enum status store_ds_withdraw(struct db_conn *conn, long long number, const char *deleted_at,
                              const char *reason, int *changed);

/* The worker's queue. A claimed notice carries its id and DS number. */
struct ds_claim {
    long long id;
    long long number;
    int attempts;
    long long covers; /* the newest pending notice of the dossier when it was claimed */
};
/*
 * Takes the oldest due pending notification whose dossier no other worker holds, and holds that
 * dossier with a session-level advisory lock on conn until store_notice_release (or until conn
 * is closed or lost: a crash frees the dossier at once). *found = 0 when there is none.
 * The lock outlives transactions: store_ds_apply's COMMIT or ROLLBACK does not release it.
 */
enum status store_notice_claim(struct db_conn *conn, struct ds_claim *out, int *found);
/* Lets the claimed dossier go; call it on the connection that claimed it. */
enum status store_notice_release(struct db_conn *conn, const struct ds_claim *c);
/*
 * Done: every pending notice of the dossier up to c->covers (received before the fetch began:
 * the one fetch saw what they announced). Those received since stay pending.
 */
enum status store_notice_done(struct db_conn *conn, const struct ds_claim *c);
/* Hopeless (DS keeps answering not found): set aside as 'failed', kept with its error. */
enum status store_notice_fail(struct db_conn *conn, const struct ds_claim *c, const char *error);
/*
 * Failed: the notices the fetch covered try again after delay_ms, keeping the error (a notice
 * done meanwhile stays done).
 */
enum status store_notice_retry(struct db_conn *conn, const struct ds_claim *c, long delay_ms,
                               const char *error);

/* The poller's watermarks (RFC 3339 text or empty). */
enum status store_sync_get(struct db_conn *conn, long long demarche, char *updated, char *deleted,
                           size_t len);
enum status store_sync_put(struct db_conn *conn, long long demarche, const char *updated,
                           const char *deleted);
/*
 * Tries to take the poller's leadership of a démarche: a session-level advisory lock, so that
 * one replica's poller runs at a time. *held = 1 when this connection holds it now (taking it
 * again while held stacks, and every hold ends when the connection closes).
 */
enum status store_poller_lock(struct db_conn *conn, long long demarche, int *held);
/*
 * A poller finding: queue a notice if we hold nothing as recent for that dossier. When the same
 * notice is already pending but waiting (a backoff), it is made due now: DS just answered, and a
 * dossier must not wait for a stale delay. *queued says whether a notice was queued or made due.
 */
enum status store_notice_from_poll(struct db_conn *conn, long long procedure, long long number,
                                   const char *state, const char *updated_at, int *queued);

/* Waves. */
enum status store_waves_list(struct db_pool *db, char **json);
enum status store_wave_create(struct db_pool *db, json_t *wave, char **json);

#endif
