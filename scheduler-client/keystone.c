/* keystone.c: Keystone v3 password authentication, the pure parts: the
 * tokens URL, the request body, the expiry in the answer. The token itself
 * comes back in the X-Subject-Token header (request.c captures it). */
#include "scheduler-client/placement-internal.h"

#include <time.h>

#include "common/util.h"

char *placement_keystone_tokens_url(const char *auth_url)
{
    size_t n;
    char *url;
    const char *suffix;

    if (!auth_url)
        return NULL;
    n = strlen(auth_url);
    while (n > 0 && auth_url[n - 1] == '/')
        n--;
    if (n >= 3 && strncmp(auth_url + n - 3, "/v3", 3) == 0)
        suffix = "/auth/tokens?nocatalog";
    else
        suffix = "/v3/auth/tokens?nocatalog";
    if (asprintf(&url, "%.*s%s", (int)n, auth_url, suffix) < 0)
        return NULL;
    return url;
}

char *placement_keystone_body(const struct placement_keystone_config *k)
{
    json_t *body;
    char *s;

    if (!k->username || !k->password || !k->project_name)
        return NULL;
    body = json_pack(
        "{s:{s:{s:[s] s:{s:{s:s s:{s:s} s:s}}} s:{s:{s:s s:{s:s}}}}}",
        "auth", "identity", "methods", "password", "password", "user", "name", k->username,
        "domain", "name", k->user_domain_name ? k->user_domain_name : "Default", "password",
        k->password, "scope", "project", "name", k->project_name, "domain", "name",
        k->project_domain_name ? k->project_domain_name : "Default");
    if (!body)
        return NULL;
    s = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    return s;
}

int placement_keystone_expiry(const json_t *body, int64_t *ret_ms)
{
    const char *s = json_string_value(json_object_get(json_object_get(body, "token"),
                                                      "expires_at"));
    struct tm tm = {0};
    const char *rest;
    time_t t;

    if (!s)
        return -EINVAL;
    rest = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
    if (!rest)
        return -EINVAL;
    if (*rest == '.') /* fraction: ignored */
        for (rest++; *rest >= '0' && *rest <= '9'; rest++)
            ;
    if (strcmp(rest, "Z") != 0 && strcmp(rest, "+00:00") != 0 && *rest != '\0')
        return -EINVAL;
    t = timegm(&tm);
    if (t == (time_t)-1)
        return -EINVAL;
    *ret_ms = (int64_t)t * 1000;
    return 0;
}
