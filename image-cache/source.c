/* source.c: checking where an image may come from. Only http and https URLs
 * are accepted (curl is told the same for redirects at transfer time). */
#include "image-cache/imgcache-internal.h"

#include <strings.h>

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
