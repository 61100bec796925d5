/* precond: strong ETags from versions; If-Match and If-None-Match by RFC 9110. */
#include "precond.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void precond_etag(long long version, char out[PRECOND_ETAG_LEN])
{
    snprintf(out, PRECOND_ETAG_LEN, "\"v%lld\"", version);
}

long long precond_etag_version(const char *header)
{
    char etag[PRECOND_ETAG_LEN];
    const char *h = header;

    if (!h || h[0] != '"' || h[1] != 'v' || h[2] < '0' || h[2] > '9')
        return -1;
    long long v = strtoll(h + 2, NULL, 10);
    precond_etag(v, etag);
    return strcmp(etag, h) == 0 ? v : -1; /* the whole header, and no leading zero */
}

/* One entity tag of a header list, as found by precond_tag_next. */
struct precond_tag {
    int weak;
    const char *opaque; /* between the quotes, not terminated */
    size_t len;
};

static int precond_is_ows(char c)
{
    return c == ' ' || c == '\t';
}

/* etagc: %x21 / %x23-7E / obs-text (%x80-FF). */
static int precond_is_etagc(unsigned char c)
{
    return c == 0x21 || (c >= 0x23 && c <= 0x7e) || c >= 0x80;
}

/*
 * Reads the next entity tag of a list at *p into tag and moves *p past it and its comma.
 * Returns 1 for a tag, 0 at the end of the list, -1 for a malformed list. Empty list elements
 * (", ,") are allowed, as RFC 9110 §5.6.1 asks recipients to accept.
 */
static int precond_tag_next(const char **p, struct precond_tag *tag)
{
    const char *s = *p;

    while (precond_is_ows(*s) || *s == ',')
        s++;
    if (!*s)
        return 0;
    tag->weak = 0;
    if (s[0] == 'W' && s[1] == '/') {
        tag->weak = 1;
        s += 2;
    }
    if (*s != '"')
        return -1;
    tag->opaque = ++s;
    while (precond_is_etagc((unsigned char)*s))
        s++;
    if (*s != '"')
        return -1;
    tag->len = (size_t)(s - tag->opaque);
    s++;
    while (precond_is_ows(*s))
        s++;
    if (*s && *s != ',')
        return -1;
    *p = s;
    return 1;
}

/* 1 when the tag's opaque part is exactly "v<current>". */
static int precond_tag_is(const struct precond_tag *tag, long long current)
{
    char etag[PRECOND_ETAG_LEN];

    precond_etag(current, etag);
    size_t n = strlen(etag) - 2; /* without the quotes */
    return tag->len == n && memcmp(tag->opaque, etag + 1, n) == 0;
}

/* 1 when the header is empty or holds only whitespace: an empty list (RFC 9110 §5.6.1). */
static int precond_is_blank(const char *h)
{
    return !h[strspn(h, " \t")];
}

/* 1 when the header, once its whitespace is skipped, is exactly "*". */
static int precond_is_star(const char *h)
{
    while (precond_is_ows(*h))
        h++;
    if (*h != '*')
        return 0;
    h++;
    while (precond_is_ows(*h))
        h++;
    return *h == '\0';
}

/*
 * Scans a list header: *matched is set when a tag matches current (weak tags only when
 * weak_ok). Returns STATUS_INVALID for a malformed list, or one of empty elements only
 * (","); the callers answer an empty header before.
 */
static enum status precond_scan(const char *header, long long current, int weak_ok, int *matched)
{
    const char *p = header;
    struct precond_tag tag;
    int seen = 0, found = 0;

    *matched = 0;
    for (;;) {
        int rc = precond_tag_next(&p, &tag);
        if (rc < 0)
            return STATUS_INVALID;
        if (rc == 0)
            break;
        seen = 1;
        if ((weak_ok || !tag.weak) && precond_tag_is(&tag, current))
            found = 1;
    }
    if (!seen)
        return STATUS_INVALID;
    *matched = found;
    return STATUS_OK;
}

enum status precond_if_match(const char *header, long long current, int required)
{
    int matched;

    if (!header)
        return required ? STATUS_PRECONDITION_REQUIRED : STATUS_OK;
    /* An empty list names no tag, so none matches the current one: the change must not go on. */
    if (precond_is_blank(header))
        return STATUS_PRECONDITION_FAILED;
    if (precond_is_star(header))
        return STATUS_OK;
    enum status st = precond_scan(header, current, 0, &matched);
    if (st != STATUS_OK)
        return st;
    return matched ? STATUS_OK : STATUS_PRECONDITION_FAILED;
}

const char *precond_if_match_strerror(enum status st)
{
    switch (st) {
    case STATUS_PRECONDITION_REQUIRED:
        return "If-Match with the resource's ETag is required";
    case STATUS_INVALID:
        return "If-Match is not a list of entity tags";
    case STATUS_PRECONDITION_FAILED:
        return "the resource has changed since that ETag";
    default:
        return "the If-Match precondition could not be checked";
    }
}

enum status precond_if_none_match(const char *header, long long current, int *not_modified)
{
    *not_modified = 0;
    /* An empty list names no tag, so nothing matches: the resource is sent. */
    if (!header || precond_is_blank(header))
        return STATUS_OK;
    if (precond_is_star(header)) {
        *not_modified = 1;
        return STATUS_OK;
    }
    return precond_scan(header, current, 1, not_modified);
}
