/* status: the one error vocabulary of the platform, and its mapping to HTTP. */
#ifndef PTCE_STATUS_H
#define PTCE_STATUS_H

/*
 * Every fallible function of common/ and of the services returns one of these.
 * A status becomes an HTTP code in exactly one place: status_http_code().
 */
enum status {
    STATUS_OK = 0,
    STATUS_INVALID,               /* bad input: 400 */
    STATUS_UNAUTHORIZED,          /* missing, unknown or revoked key: 401 */
    STATUS_FORBIDDEN,             /* role not allowed for this operation: 403 */
    STATUS_NOT_FOUND,             /* absent, or out of the caller's scope: 404 */
    STATUS_METHOD_NOT_ALLOWED,    /* 405 */
    STATUS_CONFLICT,              /* unique violation, state clash: 409 */
    STATUS_PRECONDITION_FAILED,   /* If-Match mismatch: 412 */
    STATUS_TOO_LARGE,             /* body over the limit: 413 */
    STATUS_UNSUPPORTED_MEDIA,     /* wrong Content-Type: 415 */
    STATUS_UNPROCESSABLE,         /* well-formed but semantically wrong: 422 */
    STATUS_PRECONDITION_REQUIRED, /* missing Idempotency-Key or If-Match: 428 */
    STATUS_RATE_LIMITED,          /* 429 */
    STATUS_INTERNAL,              /* a bug or an unexpected library failure: 500 */
    STATUS_UNAVAILABLE,           /* database or broker unreachable, pool exhausted: 503 */
    STATUS_RETRY,                 /* transient (serialization failure, deadlock): retry the unit */
    STATUS__COUNT
};

/* A short stable slug for the status ("invalid", "not_found"…), never NULL. */
const char *status_strerror(enum status st);

/* The HTTP status code that answers this status. */
int status_http_code(enum status st);

/* The human title of the problem type (RFC 9457 "title"). */
const char *status_title(enum status st);

#endif
