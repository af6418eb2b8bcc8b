/* digest.c: digest names and parsing ("sha256:HEX", "sha512:HEX"). */
#include "image-cache/imgcache-internal.h"

#include <ctype.h>
#include <strings.h>

static const struct {
    enum imgcache_algo algo;
    const char *name;
    size_t hex_len;
} algos[] = {
    {IMGCACHE_ALGO_SHA256, "sha256", 64},
    {IMGCACHE_ALGO_SHA512, "sha512", 128},
    {IMGCACHE_ALGO_MD5, "md5", 32},
};

const char *imgcache_algo_name(enum imgcache_algo a)
{
    for (size_t i = 0; i < ARRAY_SIZE(algos); i++)
        if (algos[i].algo == a)
            return algos[i].name;
    return "none";
}

enum imgcache_algo imgcache_algo_from_name(const char *name)
{
    if (!name)
        return IMGCACHE_ALGO_NONE;
    for (size_t i = 0; i < ARRAY_SIZE(algos); i++)
        if (strcasecmp(algos[i].name, name) == 0)
            return algos[i].algo;
    return IMGCACHE_ALGO_NONE;
}

size_t imgcache_algo_hex_len(enum imgcache_algo a)
{
    for (size_t i = 0; i < ARRAY_SIZE(algos); i++)
        if (algos[i].algo == a)
            return algos[i].hex_len;
    return 0;
}

const EVP_MD *imgcache_algo_md(enum imgcache_algo a)
{
    switch (a) {
    case IMGCACHE_ALGO_SHA256:
        return EVP_sha256();
    case IMGCACHE_ALGO_SHA512:
        return EVP_sha512();
    case IMGCACHE_ALGO_MD5:
        return EVP_md5();
    default:
        return NULL;
    }
}

void imgcache_hex(const unsigned char *in, size_t len, char *out)
{
    static const char digits[] = "0123456789abcdef";

    for (size_t i = 0; i < len; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 0xf];
    }
    out[2 * len] = '\0';
}

int imgcache_digest_parse(const char *s, struct imgcache_digest *d)
{
    const char *colon;
    char name[8];
    enum imgcache_algo algo;
    size_t hex_len, n;

    if (!s)
        return -EINVAL;
    colon = strchr(s, ':');
    if (!colon || (size_t)(colon - s) >= sizeof(name))
        return -EINVAL;
    memcpy(name, s, (size_t)(colon - s));
    name[colon - s] = '\0';
    algo = imgcache_algo_from_name(name);
    /* md5 is never accepted from a request: too weak to name content */
    if (algo != IMGCACHE_ALGO_SHA256 && algo != IMGCACHE_ALGO_SHA512)
        return -EINVAL;
    hex_len = imgcache_algo_hex_len(algo);
    n = strlen(colon + 1);
    if (n != hex_len)
        return -EINVAL;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)colon[1 + i];
        if (!isxdigit(ch))
            return -EINVAL;
        d->hex[i] = (char)tolower(ch);
    }
    d->hex[n] = '\0';
    d->algo = algo;
    return 0;
}

void imgcache_digest_format(const struct imgcache_digest *d, char *buf, size_t size)
{
    snprintf(buf, size, "%s:%s", imgcache_algo_name(d->algo), d->hex);
}
