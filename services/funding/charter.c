/* charter (funding): signatures of the PTCE charter, and their public list of signatories. */
#include <stdlib.h>

#include "support_http.h"

#define SIGNATURE_JSON                                                                             \
    "json_build_object('id', id, 'organisation', organisation, 'siret', siret, 'role', role,"      \
    " 'charter_version', charter_version, 'signed_on', signed_on)::text"

DB_STMT(st_signature_insert,
        "INSERT INTO charter_signature (id, organisation, siret, role, charter_version, signed_on,"
        " recorded_by) VALUES ($1, $2, $3, $4, $5, $6::date, $7) RETURNING " SIGNATURE_JSON);
/* What is public: nothing of who recorded it. */
DB_STMT(st_signatory_list, "SELECT seq, " SIGNATURE_JSON " FROM charter_signature"
                           " WHERE seq > $1 AND ($3::text IS NULL OR charter_version = $3)"
                           " ORDER BY seq LIMIT $2");

int charter_signature_create(struct http_ctx *ctx)
{
    struct charter_signature_input in;
    struct http_idem idem;
    struct clock_date today;
    char id[UUID_STR_LEN];
    char *json;
    int rc;

    if (!http_idem_read(ctx, &idem, 0, 201, &rc))
        return rc;
    json_t *errors = json_array();
    support_today(&today);
    if (charter_signature_parse(ctx->body, &today, &in, errors) != STATUS_OK)
        return http_reply_problem_fields(ctx, STATUS_INVALID, errors, "invalid signature");
    json_decref(errors);
    uuid_new(id);
    const char *params[] = {
        id,           in.organisation,      in.siret, in.role, in.charter_version,
        in.signed_on, ctx->principal.key_id};
    enum status st =
        support_store_create(support_db(ctx), &st_signature_insert, 7, params, &idem, &json);
    if (http_idem_refused(ctx, &idem, st, &rc))
        return rc;
    if (st == STATUS_CONFLICT)
        return http_reply_problem(ctx, st, "SIRET %s has signed charter version %s already",
                                  in.siret, in.charter_version);
    if (st != STATUS_OK)
        return http_reply_problem(ctx, st, "the signature could not be recorded");
    return support_reply_text(ctx, 201, json);
}

int charter_signatory_list(struct http_ctx *ctx)
{
    const char *version = http_query(ctx, "charter_version");
    struct support_page page;
    long limit;
    long long after;
    json_t *errors = json_array();

    support_list_args(ctx, "charter_signatories", &limit, &after, errors);
    if (json_array_size(errors))
        return http_reply_problem_fields(ctx, STATUS_INVALID, errors, "invalid list parameters");
    json_decref(errors);
    enum status st =
        support_store_page(support_db(ctx), &st_signatory_list, 1, version, after, limit, &page);
    if (st != STATUS_OK)
        return http_reply_problem(ctx, st, "the signatories could not be listed");
    return support_reply_page(ctx, "charter_signatories", &page);
}
