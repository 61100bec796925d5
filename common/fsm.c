/* fsm: the transition table checked and applied under a row lock, with history and outbox. */
#include "fsm.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "outbox.h"
#include "precond.h"
#include "xalloc.h"

#define FSM_IDENT_MAX 63 /* PostgreSQL's NAMEDATALEN - 1 */

enum { FSM_LOCK, FSM_UPDATE, FSM_HISTORY, FSM_NSTMTS };

struct fsm {
    const struct fsm_def *def; /* borrowed: static data */
    struct db_stmt stmts[FSM_NSTMTS];
    char *names[FSM_NSTMTS];
    char *sql[FSM_NSTMTS];
};

/*
 * Why building SQL text here is safe: the only pieces put into the text are identifiers from
 * the machine's static definition — program text, never a request's data — and each is checked
 * against [a-z_][a-z0-9_]* (at most 63 characters) before use, so it can hold no quote, space,
 * semicolon or comment and needs no quoting (PostgreSQL folds unquoted names to lower case, and
 * these are lower case already). Every value (ids, states, versions, actors, motivations) is a
 * $n parameter. The text is built once, in fsm_new, and prepared like any DB_STMT.
 */
static int fsm_ident_ok(const char *s)
{
    size_t n = s ? strlen(s) : 0;

    if (n == 0 || n > FSM_IDENT_MAX || (s[0] >= '0' && s[0] <= '9'))
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_'))
            return 0;
    }
    return 1;
}

static int fsm_state_known(const struct fsm_def *def, const char *state)
{
    for (const char *const *s = def->states; *s; s++) {
        if (!strcmp(*s, state))
            return 1;
    }
    return 0;
}

/* A new string formatted as by printf; the caller frees. */
static char *fsm_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *fsm_printf(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        abort();
    char *s = xmalloc((size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return s;
}

/* Checks everything fsm_new relies on; writes the first problem into errstr. */
static int fsm_def_check(const struct fsm_def *def, char *errstr, size_t errlen)
{
    const char *idents[] = {def->name,
                            def->table,
                            def->id_column ? def->id_column : "id",
                            def->state_column ? def->state_column : "state",
                            def->version_column ? def->version_column : "version",
                            def->history_table};

    for (size_t i = 0; i < sizeof idents / sizeof idents[0]; i++) {
        if (!fsm_ident_ok(idents[i])) {
            snprintf(errstr, errlen, "fsm: identifier '%s' is not [a-z_][a-z0-9_]*",
                     idents[i] ? idents[i] : "(null)");
            return 0;
        }
    }
    if (!def->states || !def->states[0] || !def->transitions || def->ntransitions == 0 ||
        !def->topic || !def->source || !def->event_type) {
        snprintf(errstr, errlen,
                 "fsm %s: states, transitions, topic, source and event_type "
                 "are required",
                 def->name);
        return 0;
    }
    for (const char *const *s = def->states; *s; s++) {
        if (!**s || strlen(*s) >= FSM_STATE_LEN) {
            snprintf(errstr, errlen, "fsm %s: a state name is empty or too long", def->name);
            return 0;
        }
    }
    for (size_t i = 0; i < def->ntransitions; i++) {
        const struct fsm_transition *t = &def->transitions[i];
        if (!t->from || !t->to || !fsm_state_known(def, t->from) || !fsm_state_known(def, t->to)) {
            snprintf(errstr, errlen, "fsm %s: transition %zu names an unknown state", def->name, i);
            return 0;
        }
        for (size_t k = 0; k < i; k++) {
            if (!strcmp(def->transitions[k].from, t->from) &&
                !strcmp(def->transitions[k].to, t->to)) {
                snprintf(errstr, errlen, "fsm %s: transition %s -> %s is listed twice", def->name,
                         t->from, t->to);
                return 0;
            }
        }
    }
    return 1;
}

struct fsm *fsm_new(const struct fsm_def *def, char *errstr, size_t errlen)
{
    if (!fsm_def_check(def, errstr, errlen))
        return NULL;
    const char *id = def->id_column ? def->id_column : "id";
    const char *state = def->state_column ? def->state_column : "state";
    const char *version = def->version_column ? def->version_column : "version";
    static const char *const suffix[FSM_NSTMTS] = {"lock", "update", "history"};
    struct fsm *m = xcalloc(1, sizeof *m);

    m->def = def;
    m->sql[FSM_LOCK] = fsm_printf("SELECT %s, %s FROM %s WHERE %s = $1 FOR UPDATE", state, version,
                                  def->table, id);
    m->sql[FSM_UPDATE] = fsm_printf("UPDATE %s SET %s = $2, %s = %s + 1 WHERE %s = $1"
                                    " RETURNING %s",
                                    def->table, state, version, version, id, version);
    m->sql[FSM_HISTORY] =
        fsm_printf("INSERT INTO %s (resource_id, from_state, to_state, actor, actor_role,"
                   " motivation, request_id, at) VALUES ($1, $2, $3, $4, $5, $6, $7, now())",
                   def->history_table);
    for (int i = 0; i < FSM_NSTMTS; i++) {
        m->names[i] = fsm_printf("fsm_%s_%s", def->name, suffix[i]);
        m->stmts[i].name = m->names[i];
        m->stmts[i].sql = m->sql[i];
    }
    return m;
}

void fsm_free(struct fsm *m)
{
    if (!m)
        return;
    for (int i = 0; i < FSM_NSTMTS; i++) {
        free(m->names[i]);
        free(m->sql[i]);
    }
    free(m);
}

/* The transition from -> to, or NULL. */
static const struct fsm_transition *fsm_find(const struct fsm_def *def, const char *from,
                                             const char *to)
{
    for (size_t i = 0; i < def->ntransitions; i++) {
        if (!strcmp(def->transitions[i].from, from) && !strcmp(def->transitions[i].to, to))
            return &def->transitions[i];
    }
    return NULL;
}

static int fsm_role_may(const struct fsm_transition *t, const struct auth_principal *who)
{
    return !who || (t->roles & (unsigned)who->role) != 0;
}

/* Lists the targets the caller may take from res->from. */
void fsm_allowed(const struct fsm_def *def, const struct auth_principal *who,
                 struct fsm_result *res)
{
    res->nallowed = 0;
    for (size_t i = 0; i < def->ntransitions && res->nallowed < FSM_MAX_ALLOWED; i++) {
        const struct fsm_transition *t = &def->transitions[i];
        if (!strcmp(t->from, res->from) && fsm_role_may(t, who))
            res->allowed[res->nallowed++] = t->to;
    }
}

static int fsm_blank(const char *s)
{
    if (!s)
        return 1;
    for (; *s; s++) {
        if (*s != ' ' && *s != '\t' && *s != '\n' && *s != '\r')
            return 0;
    }
    return 1;
}

/* Locks the row and reads its state and version into res. */
static enum status fsm_lock_row(struct fsm *m, struct db_conn *conn, const char *id,
                                struct fsm_result *res)
{
    const char *params[] = {id};
    PGresult *r;
    enum status st = db_exec(conn, &m->stmts[FSM_LOCK], 1, params, &r);

    if (st != STATUS_OK)
        return st;
    if (PQntuples(r) == 0) {
        PQclear(r);
        snprintf(res->why, sizeof res->why, "no %s %s", m->def->table, id);
        return STATUS_NOT_FOUND;
    }
    snprintf(res->from, sizeof res->from, "%s", PQgetvalue(r, 0, 0));
    res->version = strtoll(PQgetvalue(r, 0, 1), NULL, 10);
    PQclear(r);
    return STATUS_OK;
}

/* Every check that needs the locked row; fills res for the caller's problem on refusal. */
static enum status fsm_check(struct fsm *m, struct db_conn *conn, const struct fsm_request *rq,
                             struct fsm_result *res, const struct fsm_transition **out)
{
    const struct fsm_def *def = m->def;
    enum status st = precond_if_match(rq->if_match, res->version, def->version_required);

    if (st != STATUS_OK) {
        snprintf(res->why, sizeof res->why, "%s", precond_if_match_strerror(st));
        return st;
    }
    fsm_allowed(def, rq->who, res);
    const struct fsm_transition *t = fsm_find(def, res->from, rq->to);
    if (!t) {
        snprintf(res->why, sizeof res->why, "no transition from %s to %s", res->from, rq->to);
        return STATUS_CONFLICT;
    }
    if (!fsm_role_may(t, rq->who)) {
        snprintf(res->why, sizeof res->why, "role %s may not move %s to %s",
                 auth_role_name(rq->who->role), res->from, rq->to);
        return STATUS_FORBIDDEN;
    }
    if (t->motivation_required && fsm_blank(rq->motivation)) {
        res->field = "motivation";
        snprintf(res->why, sizeof res->why, "a motivation is required to move %s to %s", res->from,
                 rq->to);
        return STATUS_INVALID;
    }
    if (t->guard) {
        st = t->guard(conn, rq, res);
        if (st != STATUS_OK)
            return st;
    }
    *out = t;
    return STATUS_OK;
}

json_t *fsm_event_data(const struct fsm_request *rq, const struct fsm_result *res)
{
    const char *role = rq->who ? auth_role_name(rq->who->role) : NULL;
    json_t *data = json_pack("{s:s, s:s, s:s, s:I, s:s, s:s?, s:s?}", "id", rq->id, "from",
                             res->from, "to", rq->to, "version", (json_int_t)res->version, "actor",
                             rq->who ? rq->who->key_id : "system", "actor_role", role, "motivation",
                             fsm_blank(rq->motivation) ? NULL : rq->motivation);

    if (data && rq->data && json_is_object(rq->data))
        json_object_update_missing(data, (json_t *)rq->data); /* ours win on a clash */
    return data;
}

void fsm_transition_log(const struct fsm_def *def, const struct fsm_request *rq,
                        const struct fsm_result *res)
{
    log_event(LOG_INFO, "fsm.transition", "{s:s, s:s, s:s, s:s, s:I}", "machine", def->name, "id",
              rq->id, "from", res->from, "to", rq->to, "version", (json_int_t)res->version);
}

/* The new state and version, the history row and the event. */
static enum status fsm_write(struct fsm *m, struct db_conn *conn, const struct fsm_request *rq,
                             const struct fsm_transition *t, struct fsm_result *res)
{
    const struct fsm_def *def = m->def;
    const char *actor = rq->who ? rq->who->key_id : "system";
    const char *role = rq->who ? auth_role_name(rq->who->role) : NULL;
    const char *motivation = fsm_blank(rq->motivation) ? NULL : rq->motivation;
    const char *up[] = {rq->id, rq->to};
    PGresult *r;
    enum status st = db_exec(conn, &m->stmts[FSM_UPDATE], 2, up, &r);

    if (st != STATUS_OK)
        return st;
    res->version = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    const char *hist[] = {rq->id, res->from, rq->to, actor, role, motivation, log_request_id()};
    st = db_exec(conn, &m->stmts[FSM_HISTORY], 7, hist, NULL);
    if (st != STATUS_OK)
        return st;
    json_t *data = fsm_event_data(rq, res);
    if (!data)
        return STATUS_INTERNAL;
    return outbox_append(conn, def->topic, def->source,
                         t->event_type ? t->event_type : def->event_type, rq->id, data,
                         res->event_id);
}

enum status fsm_apply(struct fsm *m, struct db_conn *conn, const struct fsm_request *rq,
                      struct fsm_result *res)
{
    const struct fsm_transition *t = NULL;
    enum status st;

    memset(res, 0, sizeof *res);
    snprintf(res->to, sizeof res->to, "%s", rq->to ? rq->to : "");
    if (!rq->id || !rq->to || !fsm_state_known(m->def, rq->to)) {
        snprintf(res->why, sizeof res->why, "'%s' is not a state of %s", res->to, m->def->name);
        return STATUS_INVALID;
    }
    if (!conn->pg || PQtransactionStatus(conn->pg) != PQTRANS_IDLE)
        return STATUS_INTERNAL; /* fsm_apply owns its transaction */
    st = db_begin(conn);
    if (st == STATUS_OK && rq->prepare)
        st = rq->prepare(conn, rq, res);
    if (st == STATUS_OK)
        st = fsm_lock_row(m, conn, rq->id, res);
    if (st == STATUS_OK)
        st = fsm_check(m, conn, rq, res, &t);
    long long current = res->version; /* fsm_write moves it to the new version */
    if (st == STATUS_OK)
        st = fsm_write(m, conn, rq, t, res);
    if (st == STATUS_OK && rq->effect)
        st = rq->effect(conn, rq, res);
    st = db_end(conn, st);
    if (st != STATUS_OK) {
        res->event_id[0] = '\0';
        res->version = current; /* nothing was written */
        return st;
    }
    fsm_transition_log(m->def, rq, res);
    return STATUS_OK;
}

json_t *fsm_conflict_members(const struct fsm_result *res)
{
    json_t *allowed = json_array();

    for (size_t i = 0; i < res->nallowed; i++)
        json_array_append_new(allowed, json_string(res->allowed[i]));
    return json_pack("{s:s, s:o}", "current_state", res->from, "allowed_transitions", allowed);
}
