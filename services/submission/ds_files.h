/* ds_files (submission): the hosts a DS file URL may send us to download from. */
#ifndef PTCE_SUBMISSION_DS_FILES_H
#define PTCE_SUBMISSION_DS_FILES_H

#include <stddef.h>

/* Where DS serves attachments from besides its API host (the default of PTCE_DS_FILE_HOSTS). */
#define DS_FILE_HOSTS_DEFAULT "static.demarches-simplifiees.fr"

/*
 * 1 when url may be downloaded: https (or http when allow_http), no user info, and a host in
 * hosts_csv ("a.example,b.example"; an entry ".example" matches every sub-domain of example),
 * compared without regard to case. Otherwise 0, with the reason in why.
 */
int ds_file_url_allowed(const char *url, const char *hosts_csv, int allow_http, char *why,
                        size_t whylen);

/*
 * The host of an http(s) URL into out (lower case, no port); 0 on success, -1 when the URL has
 * no such host.
 */
int ds_url_host(const char *url, char *out, size_t outlen);

#endif
