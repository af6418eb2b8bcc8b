/* token.c: IMDSv2 session tokens, stateless: base64url(expiry, 8 bytes big
 * endian || HMAC-SHA256(key, "md-token-v1" NUL uuid expiry)). A token is
 * good for the instance it was made for, until its expiry, for as long as
 * the key lives (random per process unless configured: a restart ends
 * every session, and clients fetch a new one on the 401). */
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <string.h>

#include "agent/metadata/md-internal.h"

#define RAW_LEN 40

static const char b64u[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static int mac_of(const struct md_token_key *k, const char *uuid, const uint8_t exp[8], uint8_t out[32])
{
    uint8_t msg[12 + 36 + 8];
    unsigned int len = 0;

    memcpy(msg, "md-token-v1", 12); /* with its NUL */
    memset(msg + 12, 0, 36);
    memcpy(msg + 12, uuid, strnlen(uuid, 36));
    memcpy(msg + 48, exp, 8);
    if (!HMAC(EVP_sha256(), k->key, (int)k->len, msg, sizeof(msg), out, &len) || len != 32)
        return -EIO;
    return 0;
}

int md_token_make(const struct md_token_key *k, const char *uuid, int64_t now_s, int ttl_s, char *buf)
{
    uint8_t raw[RAW_LEN + 2] = {0};
    uint64_t exp = (uint64_t)(now_s + ttl_s);
    char *o = buf;

    for (int i = 0; i < 8; i++)
        raw[i] = (uint8_t)(exp >> (56 - 8 * i));
    if (mac_of(k, uuid, raw, raw + 8) < 0)
        return -EIO;
    for (size_t i = 0; i < RAW_LEN; i += 3) {
        uint32_t v = (uint32_t)raw[i] << 16 | (uint32_t)raw[i + 1] << 8 | raw[i + 2];
        *o++ = b64u[v >> 18 & 63];
        *o++ = b64u[v >> 12 & 63];
        if (i + 1 < RAW_LEN)
            *o++ = b64u[v >> 6 & 63];
        if (i + 2 < RAW_LEN)
            *o++ = b64u[v & 63];
    }
    *o = '\0';
    return (size_t)(o - buf) == MD_TOKEN_LEN ? 0 : -EIO;
}

static int b64u_val(char c)
{
    const char *p = c ? memchr(b64u, c, 64) : NULL;

    return p ? (int)(p - b64u) : -1;
}

bool md_token_check(const struct md_token_key *k, const char *uuid, int64_t now_s, const char *tok, size_t len)
{
    uint8_t raw[RAW_LEN + 2] = {0}, want[32];
    uint64_t exp = 0;
    size_t o = 0;

    if (!tok || len != MD_TOKEN_LEN)
        return false;
    for (size_t i = 0; i < len; i += 4) {
        uint32_t v = 0;
        size_t n = len - i < 4 ? len - i : 4;
        for (size_t j = 0; j < 4; j++) {
            int d = j < n ? b64u_val(tok[i + j]) : 0;
            if (d < 0)
                return false;
            v = v << 6 | (uint32_t)d;
        }
        raw[o++] = (uint8_t)(v >> 16);
        raw[o++] = (uint8_t)(v >> 8);
        raw[o++] = (uint8_t)v;
    }
    /* the last group held 2 chars' worth of 1 byte: its unused bits are 0 */
    if (raw[RAW_LEN] || raw[RAW_LEN + 1])
        return false;
    for (int i = 0; i < 8; i++)
        exp = exp << 8 | raw[i];
    if (mac_of(k, uuid, raw, want) < 0 || CRYPTO_memcmp(want, raw + 8, 32) != 0)
        return false;
    return now_s >= 0 && exp > (uint64_t)now_s && exp <= (uint64_t)now_s + MD_TOKEN_TTL_MAX;
}

int md_token_ttl_parse(const char *s, size_t len, int *ttl_s)
{
    int64_t v = 0;

    if (!s || len == 0 || len > 5)
        return -EINVAL;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -EINVAL;
        v = v * 10 + (s[i] - '0');
    }
    if (v < 1 || v > MD_TOKEN_TTL_MAX)
        return -EINVAL;
    *ttl_s = (int)v;
    return 0;
}
