/* source.c: checking where an image may come from. Only http and https URLs
 * are accepted (curl is told the same for redirects at transfer time), and
 * downloads connect only to addresses allowed here (fetch.c asks for each
 * connection, redirects included). */
#include "image-cache/imgcache-internal.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <strings.h>
#include <sys/socket.h>

#define URL_MAX 4096

/* "prefix.name" or "name" into buf. */
static const char *field_path(const char *prefix, const char *name, char *buf, size_t size)
{
    if (!prefix || !*prefix)
        return name;
    snprintf(buf, size, "%s.%s", prefix, name);
    return buf;
}

int imgcache_url_check(const char *url, const char *field, struct agent_error *err)
{
    CURLU *u;
    char *scheme = NULL, *host = NULL;
    int r = 0;

    if (!url || !*url)
        return agent_error_set(err, EINVAL, "invalid_field", field, "URL is empty");
    if (strlen(url) > URL_MAX)
        return agent_error_set(err, EINVAL, "invalid_field", field,
                               "URL longer than %d characters", URL_MAX);
    for (const char *p = url; *p; p++)
        if ((unsigned char)*p <= 0x20 || *p == 0x7f)
            return agent_error_set(err, EINVAL, "invalid_field", field,
                                   "URL contains a space or control character");
    u = curl_url();
    if (!u)
        return agent_error_set(err, ENOMEM, "internal", field, "out of memory");
    /* No default scheme: "example.com/x" is refused rather than guessed. */
    if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK) {
        r = agent_error_set(err, EINVAL, "invalid_field", field, "not a valid URL");
        goto out;
    }
    if (curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK || !scheme ||
        (strcasecmp(scheme, "http") != 0 && strcasecmp(scheme, "https") != 0)) {
        r = agent_error_set(err, EINVAL, "invalid_field", field,
                            "URL scheme \"%s\" not allowed (only http and https)",
                            scheme ? scheme : "");
        goto out;
    }
    /* libcurl reads "http:///x" as host "x": an authority must follow "//" */
    if (!strstr(url, "://") || strstr(url, "://")[3] == '/' ||
        curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK || !host || !*host) {
        r = agent_error_set(err, EINVAL, "invalid_field", field, "URL has no host");
        goto out;
    }
out:
    curl_free(scheme);
    curl_free(host);
    curl_url_cleanup(u);
    return r;
}

int imgcache_request_check(const struct imgcache_request *req, const char *prefix,
                           struct agent_error *err)
{
    char f[128];
    int sources = !!req->id + !!req->url + !!req->glance_id;
    struct imgcache_digest d;
    int r;

    if (sources == 0)
        return agent_error_set(err, EINVAL, "missing_field", prefix && *prefix ? prefix : "url",
                               "an image needs one of id, url (with digest) or glance_id");
    if (sources > 1)
        return agent_error_set(err, EINVAL, "invalid_field", prefix && *prefix ? prefix : NULL,
                               "give only one of id, url or glance_id");
    if (req->id) {
        if (!uuid_is_valid(req->id))
            return agent_error_set(err, EINVAL, "invalid_field", field_path(prefix, "id", f, sizeof(f)),
                                   "image id must be a UUID");
        if (req->digest)
            return agent_error_set(err, EINVAL, "invalid_field",
                                   field_path(prefix, "digest", f, sizeof(f)),
                                   "digest goes with url only");
        return 0;
    }
    if (req->glance_id) {
        if (!uuid_is_valid(req->glance_id))
            return agent_error_set(err, EINVAL, "invalid_field",
                                   field_path(prefix, "glance_id", f, sizeof(f)),
                                   "glance_id must be a UUID");
        if (req->digest)
            return agent_error_set(err, EINVAL, "invalid_field",
                                   field_path(prefix, "digest", f, sizeof(f)),
                                   "digest goes with url only (Glance gives its own)");
        return 0;
    }
    r = imgcache_url_check(req->url, field_path(prefix, "url", f, sizeof(f)), err);
    if (r < 0)
        return r;
    if (!req->digest)
        return agent_error_set(err, EINVAL, "missing_field",
                               field_path(prefix, "digest", f, sizeof(f)),
                               "a url needs a digest (sha256:HEX or sha512:HEX)");
    if (imgcache_digest_parse(req->digest, &d) < 0)
        return agent_error_set(err, EINVAL, "invalid_field",
                               field_path(prefix, "digest", f, sizeof(f)),
                               "digest must be sha256:<64 hex> or sha512:<128 hex>");
    return 0;
}

int imgcache_request_from_json(const json_t *obj, const char *field_prefix,
                               struct imgcache_request *req, struct agent_error *err)
{
    static const char *const known[] = {"id", "url", "digest", "glance_id"};
    const char *key;
    json_t *value;
    struct imgcache_request r = {0};
    char f[128];

    if (!json_is_object(obj))
        return agent_error_set(err, EINVAL, "invalid_field",
                               field_prefix && *field_prefix ? field_prefix : NULL,
                               "image must be an object");
    json_object_foreach((json_t *)obj, key, value) {
        size_t i;

        for (i = 0; i < ARRAY_SIZE(known); i++)
            if (strcmp(key, known[i]) == 0)
                break;
        if (i == ARRAY_SIZE(known))
            return agent_error_set(err, EINVAL, "unknown_field",
                                   field_path(field_prefix, key, f, sizeof(f)),
                                   "unknown field");
        if (!json_is_string(value))
            return agent_error_set(err, EINVAL, "invalid_field",
                                   field_path(field_prefix, key, f, sizeof(f)),
                                   "must be a string");
        if (i == 0)
            r.id = json_string_value(value);
        else if (i == 1)
            r.url = json_string_value(value);
        else if (i == 2)
            r.digest = json_string_value(value);
        else
            r.glance_id = json_string_value(value);
    }
    if (imgcache_request_check(&r, field_prefix, err) < 0)
        return -EINVAL;
    *req = r;
    return 0;
}

/* ---- networks ---- */

/* Refused unless allowed: what a download must not reach by default. */
static const struct {
    int family;
    unsigned char addr[16];
    unsigned prefix;
    const char *what;
} forbidden[] = {
    {AF_INET, {127}, 8, "a loopback address"},
    {AF_INET, {169, 254}, 16, "a link-local address (the metadata service's range)"},
    {AF_INET, {0}, 8, "a \"this host\" address (0.0.0.0/8)"},
    {AF_INET6, {[15] = 1}, 128, "the IPv6 loopback address"},
    {AF_INET6, {0}, 128, "the unspecified IPv6 address"},
    {AF_INET6, {0xfe, 0x80}, 10, "an IPv6 link-local address"},
};

static bool prefix_match(const unsigned char *a, const unsigned char *net, unsigned prefix)
{
    unsigned whole = prefix / 8, rest = prefix % 8;

    if (memcmp(a, net, whole) != 0)
        return false;
    return rest == 0 || ((a[whole] ^ net[whole]) & (0xff00u >> rest) & 0xff) == 0;
}

static bool net_contains(const struct imgcache_net *net, int family, const unsigned char *a)
{
    return net->family == family && prefix_match(a, net->addr, net->prefix);
}

int imgcache_nets_parse(const char *spec, const char *field, struct imgcache_net **nets,
                        size_t *n, struct agent_error *err)
{
    _cleanup_free_ struct imgcache_net *out = NULL;
    size_t count = 0, cap = 0;
    const char *p = spec ? spec : "";

    for (;;) {
        char item[INET6_ADDRSTRLEN + 8], *slash;
        size_t len;
        struct imgcache_net net = {0};
        unsigned max;

        while (*p == ',' || isspace((unsigned char)*p))
            p++;
        if (!*p)
            break;
        len = strcspn(p, ", \t\r\n");
        if (len >= sizeof(item))
            return agent_error_set(err, EINVAL, "invalid_config", field,
                                   "%s: '%.*s' is not a network (CIDR)", field, (int)len, p);
        memcpy(item, p, len);
        item[len] = '\0';
        p += len;
        slash = strchr(item, '/');
        if (slash)
            *slash = '\0';
        if (inet_pton(AF_INET, item, net.addr) == 1) {
            net.family = AF_INET;
            max = 32;
        } else if (inet_pton(AF_INET6, item, net.addr) == 1) {
            net.family = AF_INET6;
            max = 128;
        } else {
            if (slash)
                *slash = '/';
            return agent_error_set(err, EINVAL, "invalid_config", field,
                                   "%s: '%s' is not an IPv4 or IPv6 network (CIDR)", field, item);
        }
        net.prefix = max;
        if (slash) {
            int64_t v;
            if (parse_int64(slash + 1, 0, max, &v) < 0) {
                *slash = '/';
                return agent_error_set(err, EINVAL, "invalid_config", field,
                                       "%s: '%s' has a bad prefix length (0..%u)", field, item,
                                       max);
            }
            net.prefix = (unsigned)v;
        }
        for (unsigned i = net.prefix; i < max; i++) /* host bits: dropped */
            net.addr[i / 8] &= (unsigned char)~(0x80u >> (i % 8));
        if (count == cap) {
            size_t ncap = cap ? cap * 2 : 4;
            struct imgcache_net *grown = realloc(out, ncap * sizeof(*out));
            if (!grown)
                return agent_error_set(err, ENOMEM, "internal", field, "out of memory");
            out = grown;
            cap = ncap;
        }
        out[count++] = net;
    }
    *nets = TAKE_PTR(out);
    *n = count;
    return 0;
}

bool imgcache_addr_allowed(const struct imgcache_net *allowed, size_t n, int family,
                           const void *addr, char *why, size_t whylen)
{
    static const unsigned char v4mapped[12] = {[10] = 0xff, [11] = 0xff};
    const unsigned char *a = addr;
    char text[INET6_ADDRSTRLEN];

    if (family != AF_INET && family != AF_INET6) {
        snprintf(why, whylen, "address family %d is not IP", family);
        return false;
    }
    inet_ntop(family, addr, text, sizeof(text));
    /* ::ffff:a.b.c.d reaches a.b.c.d: judge it as that */
    if (family == AF_INET6 && memcmp(a, v4mapped, sizeof(v4mapped)) == 0) {
        family = AF_INET;
        a += 12;
    }
    for (size_t i = 0; i < n; i++)
        if (net_contains(&allowed[i], family, a))
            return true;
    for (size_t i = 0; i < ARRAY_SIZE(forbidden); i++)
        if (forbidden[i].family == family && prefix_match(a, forbidden[i].addr, forbidden[i].prefix)) {
            snprintf(why, whylen, "%s is %s", text, forbidden[i].what);
            return false;
        }
    return true;
}

bool imgcache_addr_text_allowed(const struct imgcache_net *allowed, size_t n, const char *ip,
                                char *why, size_t whylen)
{
    unsigned char a[16];
    char buf[INET6_ADDRSTRLEN + 16];

    strscpy(buf, ip ? ip : "", sizeof(buf));
    buf[strcspn(buf, "%")] = '\0'; /* a zone index ("fe80::1%eth0") */
    if (inet_pton(AF_INET, buf, a) == 1)
        return imgcache_addr_allowed(allowed, n, AF_INET, a, why, whylen);
    if (inet_pton(AF_INET6, buf, a) == 1)
        return imgcache_addr_allowed(allowed, n, AF_INET6, a, why, whylen);
    snprintf(why, whylen, "the peer address '%s' is not understood", buf);
    return false;
}
