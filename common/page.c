/* page: `limit` parsing and cursors sealed with AES-256-GCM under a configured key. */
#include "page.h"

#include <openssl/evp.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "xalloc.h"

/* For development only: anyone who reads this file can forge cursors under it. */
#define PAGE_DEV_SECRET "ptce-development-cursor-key-not-for-production"

#define PAGE_NONCE_LEN 12
#define PAGE_TAG_LEN 16
#define PAGE_FORMAT 1 /* first byte of the sealed text: its layout */
/* format, count, then per value a type and 8 bytes, or a type, a length and the text */
#define PAGE_PLAIN_MAX (2 + PAGE_POS_MAX * (2 + PAGE_TEXT_MAX))
#define PAGE_BLOB_MAX (PAGE_NONCE_LEN + PAGE_PLAIN_MAX + PAGE_TAG_LEN)

static unsigned char page_key[32];
static pthread_once_t page_key_once = PTHREAD_ONCE_INIT;
static int page_key_ok;

void page_pos_init(struct page_pos *pos)
{
    memset(pos, 0, sizeof *pos);
}

void page_pos_add_int(struct page_pos *pos, int64_t v)
{
    if (pos->n >= PAGE_POS_MAX)
        abort();
    pos->v[pos->n].type = PAGE_INT;
    pos->v[pos->n].i = v;
    pos->n++;
}

void page_pos_add_text(struct page_pos *pos, const char *s)
{
    size_t len = strlen(s);

    if (pos->n >= PAGE_POS_MAX || len > PAGE_TEXT_MAX)
        abort();
    pos->v[pos->n].type = PAGE_TEXT;
    memcpy(pos->v[pos->n].text, s, len + 1);
    pos->n++;
}

enum status page_limit_parse(const char *text, long def, long max, long *out, char *why,
                             size_t whylen)
{
    long v = 0;

    if (!text) {
        *out = def;
        return STATUS_OK;
    }
    for (const char *p = text; *p; p++) {
        int d = *p - '0';
        if (*p < '0' || *p > '9' || v > (max - d) / 10) {
            v = -1; /* not a digit, or past max (checked before it could overflow) */
            break;
        }
        v = v * 10 + d;
    }
    if (!*text || v < 1 || v > max) {
        snprintf(why, whylen, "must be an integer from 1 to %ld", max);
        return STATUS_INVALID;
    }
    *out = v;
    return STATUS_OK;
}

enum status page_cursor_key_set(const char *secret)
{
    static const char label[] = "ptce-cursor-v1:";
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int dlen = 0;
    struct buf b;

    if (!secret || !*secret) {
        log_event(LOG_WARN, "page.cursor_key_default", "{s:s}", "hint",
                  "set PTCE_CURSOR_KEY: development cursor key in use");
        secret = PAGE_DEV_SECRET;
    }
    if (strlen(secret) < PAGE_KEY_MIN_LEN)
        return STATUS_INVALID;
    buf_init(&b, 0);
    buf_append(&b, label, sizeof label - 1);
    buf_append(&b, secret, strlen(secret));
    int ok = EVP_Digest(b.data, b.len, digest, &dlen, EVP_sha256(), NULL);
    buf_free(&b);
    if (!ok || dlen != sizeof page_key)
        return STATUS_INTERNAL;
    memcpy(page_key, digest, sizeof page_key);
    page_key_ok = 1;
    return STATUS_OK;
}

static void page_key_from_env(void)
{
    if (!page_key_ok && page_cursor_key_set(getenv("PTCE_CURSOR_KEY")) != STATUS_OK)
        log_event(LOG_ERROR, "page.cursor_key_invalid", "{s:i}", "min_length", PAGE_KEY_MIN_LEN);
}

/* ---- base64url without padding (RFC 4648 §5) ---- */

static const char page_b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static void page_b64_encode(const unsigned char *in, size_t n, struct buf *out)
{
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)in[i] << 16;
        size_t chunk = n - i < 3 ? n - i : 3;
        if (chunk > 1)
            v |= (unsigned)in[i + 1] << 8;
        if (chunk > 2)
            v |= in[i + 2];
        for (size_t k = 0; k < chunk + 1; k++)
            buf_append(out, &page_b64[(v >> (18 - 6 * k)) & 63], 1);
    }
}

static int page_b64_value(char c)
{
    const char *p = c ? strchr(page_b64, c) : NULL;

    return p ? (int)(p - page_b64) : -1;
}

/* Decodes into out (cap bytes); returns the length, or -1 for a bad or too long token. */
static long page_b64_decode(const char *s, unsigned char *out, size_t cap)
{
    size_t len = strlen(s), n = 0;
    unsigned v = 0;
    int bits = 0;

    if (len % 4 == 1)
        return -1; /* no byte count gives that length */
    for (size_t i = 0; i < len; i++) {
        int d = page_b64_value(s[i]);
        if (d < 0)
            return -1;
        v = (v << 6) | (unsigned)d;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (n >= cap)
                return -1;
            out[n++] = (unsigned char)(v >> bits);
            v &= (1u << bits) - 1;
        }
    }
    /* The leftover bits must be zero, so that each token has one spelling only. */
    return v == 0 ? (long)n : -1;
}

/* ---- the sealed position ---- */

static size_t page_pos_pack(const struct page_pos *pos, unsigned char *p)
{
    size_t n = 0;

    p[n++] = PAGE_FORMAT;
    p[n++] = (unsigned char)pos->n;
    for (int k = 0; k < pos->n; k++) {
        const struct page_value *v = &pos->v[k];
        p[n++] = (unsigned char)v->type;
        if (v->type == PAGE_INT) {
            uint64_t u = (uint64_t)v->i;
            for (int b = 7; b >= 0; b--)
                p[n++] = (unsigned char)(u >> (8 * b));
        } else {
            size_t len = strlen(v->text);
            p[n++] = (unsigned char)len;
            memcpy(p + n, v->text, len);
            n += len;
        }
    }
    return n;
}

/* The inverse of page_pos_pack, checking every byte; 0 when the layout is wrong. */
static int page_pos_unpack(const unsigned char *p, size_t len, struct page_pos *pos)
{
    size_t n = 2;

    if (len < 2 || p[0] != PAGE_FORMAT || p[1] > PAGE_POS_MAX)
        return 0;
    page_pos_init(pos);
    for (int k = 0; k < p[1]; k++) {
        if (n >= len)
            return 0;
        struct page_value *v = &pos->v[pos->n++];
        v->type = p[n++];
        if (v->type == PAGE_INT) {
            uint64_t u = 0;
            if (len - n < 8)
                return 0;
            for (int b = 0; b < 8; b++)
                u = (u << 8) | p[n++];
            v->i = (int64_t)u;
        } else if (v->type == PAGE_TEXT) {
            if (n >= len || p[n] > PAGE_TEXT_MAX || len - n - 1 < p[n])
                return 0;
            size_t tl = p[n++];
            if (memchr(p + n, '\0', tl))
                return 0;
            memcpy(v->text, p + n, tl);
            v->text[tl] = '\0';
            n += tl;
        } else {
            return 0;
        }
    }
    return n == len;
}

/* Runs AES-256-GCM over in; returns 1 on success (for decryption: the tag verified). */
static int page_gcm(int encrypt, const char *kind, const unsigned char *nonce,
                    const unsigned char *in, int inlen, unsigned char *out, unsigned char *tag)
{
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    int len = 0, ok;

    if (!c)
        abort();
    ok = EVP_CipherInit_ex(c, EVP_aes_256_gcm(), NULL, page_key, nonce, encrypt) == 1 &&
         EVP_CipherUpdate(c, NULL, &len, (const unsigned char *)kind, (int)strlen(kind)) == 1;
    if (ok && !encrypt)
        ok = EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, PAGE_TAG_LEN, tag) == 1;
    if (ok)
        ok = EVP_CipherUpdate(c, out, &len, in, inlen) == 1 && len == inlen;
    if (ok)
        ok = EVP_CipherFinal_ex(c, out + len, &len) == 1;
    if (ok && encrypt)
        ok = EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, PAGE_TAG_LEN, tag) == 1;
    EVP_CIPHER_CTX_free(c);
    return ok;
}

char *page_cursor_encode(const char *kind, const struct page_pos *pos)
{
    unsigned char plain[PAGE_PLAIN_MAX], blob[PAGE_BLOB_MAX];
    struct buf out;

    pthread_once(&page_key_once, page_key_from_env);
    size_t plen = page_pos_pack(pos, plain);
    if (!page_key_ok || RAND_bytes(blob, PAGE_NONCE_LEN) != 1 ||
        !page_gcm(1, kind, blob, plain, (int)plen, blob + PAGE_NONCE_LEN,
                  blob + PAGE_NONCE_LEN + plen))
        abort(); /* no key (refused at start-up) or a broken libcrypto: nothing to answer */
    buf_init(&out, 0);
    page_b64_encode(blob, PAGE_NONCE_LEN + plen + PAGE_TAG_LEN, &out);
    buf_append(&out, "", 1);
    return out.data;
}

enum status page_cursor_decode(const char *kind, const char *token, struct page_pos *out)
{
    unsigned char blob[PAGE_BLOB_MAX], plain[PAGE_PLAIN_MAX];
    struct page_pos pos;

    pthread_once(&page_key_once, page_key_from_env);
    if (!page_key_ok)
        return STATUS_INTERNAL;
    if (!token || strlen(token) >= PAGE_CURSOR_MAX)
        return STATUS_INVALID;
    long n = page_b64_decode(token, blob, sizeof blob);
    if (n < PAGE_NONCE_LEN + PAGE_TAG_LEN + 2)
        return STATUS_INVALID;
    int clen = (int)n - PAGE_NONCE_LEN - PAGE_TAG_LEN;
    if (!page_gcm(0, kind, blob, blob + PAGE_NONCE_LEN, clen, plain, blob + n - PAGE_TAG_LEN))
        return STATUS_INVALID;
    if (!page_pos_unpack(plain, (size_t)clen, &pos))
        return STATUS_INVALID;
    *out = pos;
    return STATUS_OK;
}

json_t *page_next_cursor(const char *kind, const struct page_pos *last)
{
    if (!last)
        return json_null();
    char *token = page_cursor_encode(kind, last);
    json_t *j = json_string(token);
    free(token);
    return j;
}
