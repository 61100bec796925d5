/* status: names, titles and HTTP codes of the platform's statuses, as one table. */
#include "status.h"

static const struct {
    const char *slug;
    const char *title;
    int http;
} status_table[STATUS__COUNT] = {
    [STATUS_OK] = {"ok", "OK", 200},
    [STATUS_INVALID] = {"invalid", "Invalid request", 400},
    [STATUS_UNAUTHORIZED] = {"unauthorized", "Authentication required", 401},
    [STATUS_FORBIDDEN] = {"forbidden", "Operation not allowed for this role", 403},
    [STATUS_NOT_FOUND] = {"not_found", "Not found", 404},
    [STATUS_METHOD_NOT_ALLOWED] = {"method_not_allowed", "Method not allowed", 405},
    [STATUS_CONFLICT] = {"conflict", "Conflict", 409},
    [STATUS_PRECONDITION_FAILED] = {"precondition_failed", "Precondition failed", 412},
    [STATUS_TOO_LARGE] = {"too_large", "Request body too large", 413},
    [STATUS_UNSUPPORTED_MEDIA] = {"unsupported_media_type", "Unsupported media type", 415},
    [STATUS_UNPROCESSABLE] = {"unprocessable", "Unprocessable request", 422},
    [STATUS_PRECONDITION_REQUIRED] = {"precondition_required", "Precondition required", 428},
    [STATUS_RATE_LIMITED] = {"rate_limited", "Too many requests", 429},
    [STATUS_INTERNAL] = {"internal", "Internal error", 500},
    [STATUS_UNAVAILABLE] = {"unavailable", "Service temporarily unavailable", 503},
    [STATUS_RETRY] = {"retry", "Transient failure, retry", 503},
};

static int status_valid(enum status st)
{
    return (int)st >= 0 && st < STATUS__COUNT;
}

const char *status_strerror(enum status st)
{
    return status_valid(st) ? status_table[st].slug : "unknown";
}

const char *status_title(enum status st)
{
    return status_valid(st) ? status_table[st].title : "Unknown error";
}

int status_http_code(enum status st)
{
    return status_valid(st) ? status_table[st].http : 500;
}
