/* ds_files (submission): checks a file URL's scheme and host before anything is downloaded. */
#include "ds_files.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

/* The authority of an http(s) URL: where it starts and how long it is; NULL when not http(s). */
static const char *ds_url_authority(const char *url, int *https, size_t *len)
{
    const char *p;

    if (!url)
        return NULL;
    if (strncasecmp(url, "https://", 8) == 0) {
        *https = 1;
        p = url + 8;
    } else if (strncasecmp(url, "http://", 7) == 0) {
        *https = 0;
        p = url + 7;
    } else {
        return NULL;
    }
    *len = strcspn(p, "/?#");
    return p;
}

int ds_url_host(const char *url, char *out, size_t outlen)
{
    int https;
    size_t len;
    const char *a = ds_url_authority(url, &https, &len);

    if (!a || len == 0 || memchr(a, '@', len) || len >= outlen)
        return -1; /* user info would hide the real host (https://api.host@elsewhere/) */
    size_t host;
    if (*a == '[') { /* an IPv6 literal: up to its closing bracket */
        const char *close = memchr(a, ']', len);
        if (!close)
            return -1;
        host = (size_t)(close - a) + 1;
    } else {
        host = strcspn(a, ":");
        if (host > len)
            host = len;
    }
    if (host == 0)
        return -1;
    for (size_t i = 0; i < host; i++)
        out[i] = (char)tolower((unsigned char)a[i]);
    out[host] = '\0';
    return 0;
}

/* 1 when host is entry, or a sub-domain of it when entry starts with '.'. */
static int ds_host_matches(const char *host, const char *entry, size_t n)
{
    size_t h = strlen(host);

    if (n == 0)
        return 0;
    if (entry[0] == '.')
        return h > n && strncasecmp(host + h - n, entry, n) == 0;
    return h == n && strncasecmp(host, entry, n) == 0;
}

int ds_file_url_allowed(const char *url, const char *hosts_csv, int allow_http, char *why,
                        size_t whylen)
{
    char host[256];
    int https = 0;
    size_t len;

    if (!ds_url_authority(url, &https, &len) || ds_url_host(url, host, sizeof host) != 0) {
        snprintf(why, whylen, "not an http(s) URL with a plain host");
        return 0;
    }
    if (!https && !allow_http) {
        snprintf(why, whylen, "plain http (only https is downloaded)");
        return 0;
    }
    for (const char *s = hosts_csv ? hosts_csv : ""; *s;) {
        size_t n = strcspn(s, ",");
        while (n && s[n - 1] == ' ')
            n--;
        if (ds_host_matches(host, s, n))
            return 1;
        s += strcspn(s, ",");
        while (*s == ',' || *s == ' ')
            s++;
    }
    snprintf(why, whylen, "host %s is not one of PTCE_DS_FILE_HOSTS", host);
    return 0;
}
