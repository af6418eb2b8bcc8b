/* util.c: see util.h. */
#include "util.h"

#include <ctype.h>
#include <stdarg.h>
#include <sys/random.h>
#include <time.h>

int agent_error_set(struct agent_error *err, int errnum, const char *code,
                    const char *field, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        strscpy(err->code, code ? code : "internal", sizeof(err->code));
        strscpy(err->field, field ? field : "", sizeof(err->field));
        va_start(ap, fmt);
        vsnprintf(err->message, sizeof(err->message), fmt, ap);
        va_end(ap);
        /* they end up in JSON (API answers, events), which must be UTF-8:
         * a value quoted from bad input, or cut short, may not be */
        utf8_scrub(err->field);
        utf8_scrub(err->message);
    }
    return -errnum;
}

/* Length of the valid UTF-8 sequence at s (RFC 3629: no overlong forms, no
 * surrogates, nothing past U+10FFFF), or 0. */
static size_t utf8_seq_len(const unsigned char *s)
{
    size_t n;
    unsigned cp;

    if (s[0] < 0x80)
        return 1;
    if (s[0] >= 0xc2 && s[0] <= 0xdf)
        n = 2, cp = s[0] & 0x1f;
    else if (s[0] >= 0xe0 && s[0] <= 0xef)
        n = 3, cp = s[0] & 0x0f;
    else if (s[0] >= 0xf0 && s[0] <= 0xf4)
        n = 4, cp = s[0] & 0x07;
    else
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80) /* the NUL terminator stops here too */
            return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
        (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return n;
}

void utf8_scrub(char *s)
{
    unsigned char *p = (unsigned char *)s;

    while (*p) {
        size_t n = utf8_seq_len(p);
        if (n == 0)
            *p++ = '?';
        else
            p += n;
    }
}

int strscpy(char *dst, const char *src, size_t size)
{
    size_t n;

    if (size == 0)
        return -ENAMETOOLONG;
    n = strnlen(src, size);
    if (n == size) {
        memcpy(dst, src, size - 1);
        dst[size - 1] = '\0';
        return -ENAMETOOLONG;
    }
    memcpy(dst, src, n + 1);
    return 0;
}

int parse_int64(const char *s, int64_t min, int64_t max, int64_t *ret)
{
    char *end;
    long long v;

    if (!s || !*s || isspace((unsigned char)*s))
        return -EINVAL;
    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno || *end)
        return -EINVAL;
    if (v < min || v > max)
        return -ERANGE;
    *ret = v;
    return 0;
}

uint64_t now_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

int64_t now_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void format_rfc3339_ms(int64_t ms, char buf[32])
{
    time_t secs = (time_t)(ms / 1000);
    struct tm tm;
    size_t n;

    gmtime_r(&secs, &tm);
    n = strftime(buf, 32, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + n, 32 - n, ".%03uZ", (unsigned)(ms % 1000) % 1000u);
}

int random_bytes(void *buf, size_t len)
{
    uint8_t *p = buf;

    while (len > 0) {
        ssize_t n = getrandom(p, len, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

int uuid_generate_str(char buf[37])
{
    uint8_t u[16];
    int r = random_bytes(u, sizeof(u));

    if (r < 0)
        return r;
    u[6] = (u[6] & 0x0f) | 0x40;
    u[8] = (u[8] & 0x3f) | 0x80;
    snprintf(buf, 37,
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
             u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10],
             u[11], u[12], u[13], u[14], u[15]);
    return 0;
}

bool uuid_is_valid(const char *s)
{
    static const int dash[] = {8, 13, 18, 23};
    size_t i, d = 0;

    if (!s || strlen(s) != 36)
        return false;
    for (i = 0; i < 36; i++) {
        if (d < ARRAY_SIZE(dash) && (int)i == dash[d]) {
            if (s[i] != '-')
                return false;
            d++;
        } else if (!isxdigit((unsigned char)s[i])) {
            return false;
        }
    }
    return true;
}

/* Does a query parameter name (len bytes) look like it carries a secret? */
static bool query_name_secret(const char *name, size_t len)
{
    static const char *const words[] = {"sig", "token", "key", "secret", "passw",
                                        "credential", "auth"};
    char low[64];

    if (len >= sizeof(low))
        len = sizeof(low) - 1;
    for (size_t i = 0; i < len; i++)
        low[i] = (char)tolower((unsigned char)name[i]);
    low[len] = '\0';
    for (size_t i = 0; i < ARRAY_SIZE(words); i++)
        if (strstr(low, words[i]))
            return true;
    return false;
}

char *url_redact(const char *url)
{
    const char *auth, *end, *at = NULL, *q, *p;
    size_t len;
    char *out, *o;

    if (!url)
        return NULL;
    len = strlen(url);
    /* each "k=v" grows by at most 3 ("***" for a 0-byte value), userinfo by 3 */
    out = malloc(2 * len + 8);
    if (!out)
        return NULL;
    o = out;
    auth = strstr(url, "://");
    if (auth && (size_t)(auth - url) < strcspn(url, "/?#"))
        auth += 3;
    else
        auth = url;
    end = auth + strcspn(auth, "/?#");
    for (p = auth; p < end; p++)
        if (*p == '@')
            at = p; /* the last one: whatever a parser takes for the host */
    memcpy(o, url, (size_t)(auth - url));
    o += auth - url;
    if (at) {
        memcpy(o, "***", 3);
        o += 3;
        p = at;
    } else {
        p = auth;
    }
    q = strchr(end, '?');
    if (q && strchr(end, '#') && strchr(end, '#') < q)
        q = NULL; /* a '?' in the fragment */
    if (!q) {
        memcpy(o, p, strlen(p) + 1);
        return out;
    }
    q++;
    memcpy(o, p, (size_t)(q - p));
    o += q - p;
    while (*q && *q != '#') {
        size_t plen = strcspn(q, "&#"), nlen = strcspn(q, "=&#");

        if (nlen < plen && query_name_secret(q, nlen)) {
            memcpy(o, q, nlen + 1);
            o += nlen + 1;
            memcpy(o, "***", 3);
            o += 3;
        } else {
            memcpy(o, q, plen);
            o += plen;
        }
        q += plen;
        if (*q == '&')
            *o++ = *q++;
    }
    memcpy(o, q, strlen(q) + 1);
    return out;
}
