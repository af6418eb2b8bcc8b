/* router.c: method + path -> handler, from one table. The path is matched
 * segment by segment ("{name}" segments are parameters); then the
 * parameters are checked (a malformed id is a resource that does not
 * exist: 404 naming "id"); then the method (405 when the path exists but
 * not with it); then the handler runs.
 *
 * Paths come percent-decoded once (by MHD); nothing here decodes again, so
 * "%2F" sent by a client is a "/" here and "%252F" a literal "%2F" (which
 * no id matches). A trailing "/" is ignored; an empty segment matches
 * nothing. */
#include <microhttpd.h>
#include <string.h>

#include "agent/api/api-internal.h"
#include "agent/request.h"

enum {
    M_GET = 1,                /* GET and HEAD */
    M_POST = 2,
    M_DELETE = 4,
};

struct route {
    const char *pattern;
    unsigned methods;
    api_handler handler;
};

static const struct route routes[] = {
    {"/healthz", M_GET, api_healthz},
    {"/v1/host", M_GET, api_host_show},
    {"/v1/host/disable", M_POST, api_host_disable},
    {"/v1/host/enable", M_POST, api_host_enable},
    {"/v1/instances", M_GET, api_instances_list},
    {"/v1/instances", M_POST, api_instances_launch},
    {"/v1/instances/{instance}", M_GET, api_instance_show},
    {"/v1/instances/{instance}", M_DELETE, api_instance_terminate},
    {"/v1/instances/{instance}/actions", M_POST, api_instance_action},
    {"/v1/images", M_GET, api_images_list},
    {"/v1/images", M_POST, api_images_create},
    {"/v1/images/{image}", M_GET, api_image_show},
    {"/v1/images/{image}", M_DELETE, api_image_delete},
    {"/v1/operations/{operation}", M_GET, api_operation_show},
    {"/v1/networks", M_GET, api_networks_list},
    {"/v1/instances/{instance}/console", M_GET, api_instance_console},
    {"/v1/events", M_GET, api_events_list},
};

static bool instance_id_ok(const char *id)
{
    return uuid_is_valid(id) || ec2_id_is_valid(id);
}

static const struct param {
    const char *name;         /* as in the patterns */
    bool (*valid)(const char *s);
    const char *missing;      /* the 404's message */
} params[] = {
    {"{instance}", instance_id_ok, "no such instance (ids are UUIDs or i- followed by 17 hex digits)"},
    {"{image}", uuid_is_valid, "no such image"},
    {"{operation}", uuid_is_valid, "no such operation"},
};

#define MAX_SEGMENTS 8

static unsigned method_bit(const char *method)
{
    if (!strcmp(method, "GET") || !strcmp(method, "HEAD"))
        return M_GET;
    if (!strcmp(method, "POST"))
        return M_POST;
    if (!strcmp(method, "DELETE"))
        return M_DELETE;
    return 0;
}

/* path (writable, starting with '/') into its segments; -1 if too many. */
static int split(char *path, char *seg[MAX_SEGMENTS])
{
    int n = 0;

    if (path[0] != '/')
        return -1;
    for (char *p = path + 1;; p++) {
        char *slash = strchr(p, '/');
        if (n == MAX_SEGMENTS)
            return -1;
        seg[n++] = p;
        if (!slash)
            return n;
        *slash = '\0';
        p = slash;
    }
}

/* Does pattern match the segments? Parameters' values into param[] and
 * their rules into rule[], in order. */
static bool match(const char *pattern, char *const seg[], int n, const char *param[API_MAX_PARAMS],
                  const struct param *rule[API_MAX_PARAMS])
{
    const char *p = pattern + 1;
    int np = 0;

    for (int i = 0; i < n; i++) {
        size_t len = strcspn(p, "/");
        if (!len && !*p)
            return false; /* the path is longer */
        if (p[0] == '{') {
            const struct param *r = NULL;
            for (size_t k = 0; k < ARRAY_SIZE(params); k++)
                if (strlen(params[k].name) == len && !strncmp(p, params[k].name, len))
                    r = &params[k];
            if (!r || !seg[i][0] || np == API_MAX_PARAMS)
                return false;
            rule[np] = r;
            param[np++] = seg[i];
        } else if (strlen(seg[i]) != len || strncmp(p, seg[i], len)) {
            return false;
        }
        p += len;
        if (*p == '/')
            p++;
        else if (i + 1 < n)
            return false;
    }
    return !*p;
}

static int route(struct api_call *call, char *path, json_t **reply)
{
    char *seg[MAX_SEGMENTS];
    const struct param *rule[API_MAX_PARAMS] = {0};
    const struct route *found = NULL;
    unsigned m = method_bit(call->method);
    int n = split(path, seg);

    for (size_t i = 0; n > 0 && i < ARRAY_SIZE(routes); i++) {
        const char *param[API_MAX_PARAMS] = {0};
        const struct param *r[API_MAX_PARAMS] = {0};
        if (!match(routes[i].pattern, seg, n, param, r))
            continue;
        if (!found || (routes[i].methods & m)) {
            found = &routes[i];
            memcpy(call->param, param, sizeof(param));
            memcpy(rule, r, sizeof(r));
        }
        if (routes[i].methods & m)
            break;
    }
    if (!found)
        return api_fail_with(reply, "not_found", NULL, "no such resource");
    for (int k = 0; k < API_MAX_PARAMS && call->param[k]; k++)
        if (!rule[k]->valid(call->param[k]))
            return api_fail_with(reply, "not_found", "id", rule[k]->missing);
    if (!(found->methods & m))
        return api_fail_with(reply, "method_not_allowed", NULL, "method not allowed on this resource");
    return found->handler(call, reply);
}

int api_route_conn(struct MHD_Connection *c, const struct api_deps *deps, const struct api_config *cfg,
                   const char *method, const char *url, const char *body, size_t len, const char *idem,
                   json_t **reply)
{
    struct api_call call = {.deps = deps, .cfg = cfg, .method = method, .body = body, .len = len, .idem = idem,
                            .mhd = c};
    char path[512];
    size_t n = strcspn(url, "?");

    *reply = NULL;
    if (n >= sizeof(path))
        return api_fail_with(reply, "not_found", NULL, "no such resource");
    memcpy(path, url, n);
    path[n] = '\0';
    if (url[n] == '?')
        call.query = url + n + 1;
    while (n > 1 && path[n - 1] == '/')
        path[--n] = '\0';
    return route(&call, path, reply);
}

int api_route(const struct api_deps *deps, const struct api_config *cfg, const char *method, const char *url,
              const char *body, size_t len, const char *idem, json_t **reply)
{
    return api_route_conn(NULL, deps, cfg, method, url, body, len, idem, reply);
}

const char *api_call_arg(const struct api_call *call, const char *name, char *buf, size_t size)
{
    size_t nl = strlen(name);

    if (call->mhd) {
        const char *v = NULL;
        size_t vl = 0;
        if (MHD_lookup_connection_value_n(call->mhd, MHD_GET_ARGUMENT_KIND, name, nl, &v, &vl) != MHD_YES)
            return NULL;
        return v && !memchr(v, '\0', vl) ? v : ""; /* "?name" alone, or a decoded NUL: no value */
    }
    for (const char *p = call->query; p && *p;) {
        size_t kv = strcspn(p, "&");
        if (kv >= nl && !strncmp(p, name, nl) && (kv == nl || p[nl] == '=')) {
            const char *v = kv == nl ? p + kv : p + nl + 1;
            size_t vl = (size_t)(p + kv - v);
            if (!size)
                return NULL;
            if (vl >= size)
                vl = size - 1;
            memcpy(buf, v, vl);
            buf[vl] = '\0';
            return buf;
        }
        p += kv;
        if (*p == '&')
            p++;
    }
    return NULL;
}

int api_body_object(const struct api_call *call, json_t **out, json_t **reply)
{
    struct agent_error e;

    if (request_json_object(call->body, call->len, out, &e) < 0)
        return api_fail(reply, &e);
    return 0;
}
