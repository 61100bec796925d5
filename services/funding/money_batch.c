/* money_batch (funding): signatures and payments, a batch per call of money_batch(). */
#include "money_batch.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "events.h"
#include "funding.h"
#include "log.h"
#include "metrics.h"
#include "outbox.h"
#include "store.h"
#include "xalloc.h"

/* A deadlock or a serialization failure runs the whole batch again, as store_run does one use case.
 */
#define MONEY_ATTEMPTS 3

static struct metric m_batches = METRIC_COUNTER(
    "ptce_funding_money_batches_total", "Commits of signatures and payments (one per batch).");
static struct metric m_ops = METRIC_COUNTER("ptce_funding_money_operations_total",
                                            "Signatures and payments answered by a batch.");

struct money_batch {
    struct batcher *batcher;
};

DB_STMT(money_batch_q, "SELECT n, status, detail, state, version, doc, events::text"
                       " FROM money_batch($1::jsonb)");

/* The operation as money_batch() reads it (a member of its jsonb array). */
static json_t *money_op_json(const struct money_op *op, size_t n)
{
    json_t *scope = json_null();

    if (!op->who->all_regions) {
        scope = json_array();
        for (int i = 0; i < op->who->nregions; i++)
            json_array_append_new(scope, json_string(op->who->regions[i]));
    }
    json_t *o = json_pack("{s:I, s:s, s:s, s:o, s:s, s:s, s:s}", "n", (json_int_t)n, "kind",
                          op->kind == MONEY_SIGN ? "sign" : "pay", "id", op->id, "scope", scope,
                          "actor", op->who->key_id, "actor_role", auth_role_name(op->who->role),
                          "request_id", op->request_id);
    if (op->kind == MONEY_SIGN)
        json_object_update_new(o, json_pack("{s:I, s:s, s:s, s:s}", "version",
                                            (json_int_t)op->version, "signer", op->signer,
                                            "from_state", op->from_state, "to_state", op->rq->to));
    else
        json_object_update_new(
            o, json_pack("{s:s, s:s}", "reference", op->reference, "paid_on", op->paid_on));
    return o;
}

static const struct {
    const char *slug;
    enum status st;
} money_slugs[] = {{"ok", STATUS_OK}, {"transition", STATUS_CONFLICT}};

/* One outcome row into its operation. */
static void money_outcome_read(PGresult *r, int row, struct money_op *op)
{
    const char *slug = PQgetvalue(r, row, 1);

    op->st = STATUS_INTERNAL;
    for (size_t i = 0; i < sizeof money_slugs / sizeof *money_slugs; i++) {
        if (strcmp(slug, money_slugs[i].slug) == 0)
            op->st = money_slugs[i].st;
    }
    if (op->st == STATUS_INTERNAL)
        op->st = store_status_from_slug(slug);
    op->transition_refused = strcmp(slug, "transition") == 0;
    if (op->st == STATUS_NOT_FOUND) /* the id as the request wrote it, as the lone path says */
        snprintf(op->why, sizeof op->why, "no %s %s",
                 op->kind == MONEY_SIGN ? "agreement" : "tranche", op->id);
    else
        snprintf(op->why, sizeof op->why, "%s", PQgetvalue(r, row, 2));
    snprintf(op->state, sizeof op->state, "%s", PQgetvalue(r, row, 3));
    op->version_now = strtoll(PQgetvalue(r, row, 4), NULL, 10);
    if (op->st == STATUS_OK)
        op->doc = xstrdup(PQgetvalue(r, row, 5));
}

/*
 * The events of an accepted operation: a signature's transition (as fsm_apply writes it), then
 * those money_batch() gave (list, borrowed: the tranches due, the tranche paid). Appends to evs,
 * whose types and subjects borrow from list, at most cap; returns how many.
 */
static size_t money_events(const struct money_op *op, const json_t *list, struct outbox_event *evs,
                           size_t cap)
{
    size_t n = 0;

    if (op->kind == MONEY_SIGN && n < cap) {
        struct fsm_result res = {.version = op->version_now};
        snprintf(res.from, sizeof res.from, "%s", op->from_state);
        evs[n++] = (struct outbox_event){funding_agreement_fsm.event_type, op->id,
                                         fsm_event_data(op->rq, &res), op->request_id, NULL};
    }
    for (size_t i = 0; i < json_array_size(list) && n < cap; i++) {
        const json_t *e = json_array_get(list, i);
        evs[n++] =
            (struct outbox_event){json_string_value(json_object_get(e, "type")),
                                  json_string_value(json_object_get(e, "subject")),
                                  json_incref(json_object_get(e, "data")), op->request_id, NULL};
    }
    return n;
}

/* Frees the outputs of a failed attempt, so that the next starts clean. */
static void money_outcomes_reset(struct batch_item **items, size_t n)
{
    for (size_t i = 0; i < n; i++)
        money_op_clear(items[i]->out);
}

/* One attempt in the open transaction: the batch, its events; the caller commits. */
static enum status money_batch_once(struct db_conn *conn, const char *ops,
                                    struct batch_item **items, size_t n)
{
    const char *params[] = {ops};
    PGresult *r;
    enum status st = db_exec(conn, &money_batch_q, 1, params, &r);

    if (st != STATUS_OK)
        return st;
    if ((size_t)PQntuples(r) != n) {
        PQclear(r);
        return STATUS_INTERNAL;
    }
    /* a signature has its transition and at most a few tranches due; a payment one event */
    size_t cap = 8 * n, nev = 0;
    struct outbox_event *evs = xcalloc(cap, sizeof *evs);
    json_t *keep = json_array(); /* holds the strings evs borrow */
    for (int row = 0; row < PQntuples(r); row++) {
        size_t k = strtoul(PQgetvalue(r, row, 0), NULL, 10);
        struct money_op *op = k < n ? items[k]->out : NULL;
        if (!op) {
            st = STATUS_INTERNAL;
            break;
        }
        money_outcome_read(r, row, op);
        if (op->st != STATUS_OK)
            continue;
        json_t *list = json_loads(PQgetvalue(r, row, 6), 0, NULL);
        nev += money_events(op, list, evs + nev, cap - nev);
        json_array_append_new(keep, list ? list : json_array()); /* what evs borrow */
    }
    PQclear(r);
    if (st == STATUS_OK)
        st = outbox_append_batch(conn, FUNDING_TOPIC, FUNDING_SOURCE, evs, nev);
    else
        for (size_t i = 0; i < nev; i++)
            json_decref(evs[i].data);
    json_decref(keep);
    free(evs);
    return st;
}

/* Runs items[0..n) as one batch, in its own transaction, again after a deadlock. */
static enum status money_batch_run(struct db_conn *conn, struct batch_item **items, size_t n)
{
    json_t *ops = json_array();

    for (size_t i = 0; i < n; i++)
        json_array_append_new(ops, money_op_json(items[i]->out, i));
    char *text = json_dumps(ops, JSON_COMPACT);
    json_decref(ops);
    enum status st = text ? STATUS_RETRY : STATUS_INTERNAL;
    for (int attempt = 0; st == STATUS_RETRY && attempt < MONEY_ATTEMPTS; attempt++) {
        money_outcomes_reset(items, n);
        st = db_begin(conn);
        if (st == STATUS_OK)
            st = money_batch_once(conn, text, items, n);
        st = db_end(conn, st);
    }
    free(text);
    return st;
}

/* After a committed batch: the transitions' log lines, the counters. */
static void money_batch_committed(struct batch_item **items, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        struct money_op *op = items[i]->out;
        if (op->kind != MONEY_SIGN || op->st != STATUS_OK)
            continue;
        struct fsm_result res = {.version = op->version_now};
        snprintf(res.from, sizeof res.from, "%s", op->from_state);
        log_set_request_id(op->request_id);
        fsm_transition_log(&funding_agreement_fsm, op->rq, &res);
    }
    log_set_request_id(NULL);
    metric_add(&m_batches, 1);
    metric_add(&m_ops, (long)n);
}

/*
 * A batch the database refused as a whole (a statement that failed for one operation, a
 * timeout) is run again one operation at a time, each in its own transaction: the operation
 * that fails is answered its failure alone, the others as if they had come alone. A lost
 * connection is everyone's failure: nothing of the batch is known committed.
 */
static enum status money_batch_serve(struct db_conn *conn, struct batch_item **items, size_t n,
                                     void *arg)
{
    (void)arg;
    enum status st = money_batch_run(conn, items, n);

    if (st == STATUS_OK) {
        money_batch_committed(items, n);
        return STATUS_OK;
    }
    log_event(LOG_WARN, "funding.money_batch_failed", "{s:i, s:s}", "operations", (int)n, "status",
              status_strerror(st));
    if (n == 1 || st == STATUS_UNAVAILABLE)
        return st; /* given to every item */
    for (size_t i = 0; i < n; i++) {
        struct money_op *op = items[i]->out;
        enum status one = money_batch_run(conn, items + i, 1);
        if (one == STATUS_OK) {
            money_batch_committed(items + i, 1);
            continue;
        }
        money_op_clear(op);
        op->st = one;
        op->transition_refused = 0;
        op->why[0] = '\0';
    }
    return STATUS_OK; /* each operation carries its own answer */
}

struct money_batch *money_batch_start(const char *conninfo, const char *schema,
                                      long statement_timeout_ms, long writers, size_t max_batch)
{
    struct money_batch *mb = xcalloc(1, sizeof *mb);

    metrics_register(&m_batches);
    metrics_register(&m_ops);
    struct batcher_config bc = {.conninfo = conninfo,
                                .schema = schema,
                                .statement_timeout_ms = statement_timeout_ms,
                                .threads = writers,
                                .max_batch = max_batch,
                                .fn = money_batch_serve};
    mb->batcher = batcher_start(&bc);
    return mb;
}

void money_batch_stop(struct money_batch *mb)
{
    if (!mb)
        return;
    batcher_free(mb->batcher);
    free(mb);
}

void money_op_clear(struct money_op *op)
{
    free(op->doc);
    op->doc = NULL;
}

static void money_op_served(struct batch_item *item)
{
    struct money_op *op = (struct money_op *)((char *)item - offsetof(struct money_op, item));

    if (item->st != STATUS_OK) { /* the batch failed: that is every operation's answer */
        money_op_clear(op);
        op->st = item->st;
        op->transition_refused = 0;
        op->why[0] = '\0';
    }
    op->done(op);
}

void money_batch_post(struct money_batch *mb, struct money_op *op,
                      void (*done)(struct money_op *op))
{
    op->st = STATUS_INTERNAL;
    op->transition_refused = 0;
    op->doc = NULL;
    op->why[0] = '\0';
    op->done = done;
    op->item = (struct batch_item){.in = op, .out = op};
    batcher_post(mb->batcher, &op->item, money_op_served);
}
