/* request.c: see request.h. The launch body's checks (from instance.c),
 * the action body and options, the bus command, the field renaming. */
#include "agent/request.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/log.h"

/* ---- validation helpers ---- */

static int check_known_keys(const json_t *obj, const char *prefix, const char *const allowed[],
                            struct agent_error *err)
{
    const char *key;
    json_t *v;

    json_object_foreach((json_t *)obj, key, v) {
        bool ok = false;
        for (size_t i = 0; allowed[i]; i++)
            ok |= strcmp(key, allowed[i]) == 0;
        if (!ok) {
            char field[96];
            snprintf(field, sizeof(field), "%s%s", prefix, key);
            return agent_error_set(err, EINVAL, "unknown_field", field,
                                   "unknown field '%s'", field);
        }
    }
    return 0;
}

/* Control characters (C0, DEL, C1), bidi controls and the other code points
 * log_unsafe_codepoint() names; s is valid UTF-8 (jansson checks it). */
static bool has_control_chars(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;

    while (*p) {
        uint32_t c;
        size_t k;
        if (*p < 0x80) {
            c = *p, k = 1;
        } else if ((*p & 0xe0) == 0xc0 && p[1]) {
            c = ((uint32_t)(*p & 0x1f) << 6) | (p[1] & 0x3f), k = 2;
        } else if ((*p & 0xf0) == 0xe0 && p[1] && p[2]) {
            c = ((uint32_t)(*p & 0x0f) << 12) | ((uint32_t)(p[1] & 0x3f) << 6) | (p[2] & 0x3f), k = 3;
        } else if ((*p & 0xf8) == 0xf0 && p[1] && p[2] && p[3]) {
            c = 0x10000, k = 4; /* astral planes: no controls there */
        } else {
            return true; /* not UTF-8: treat as unsafe */
        }
        if (log_unsafe_codepoint(c))
            return true;
        p += k;
    }
    return false;
}

int request_id_check(const char *s, size_t len, const char *field, struct agent_error *err)
{
    if (!s || len == 0 || len > REQUEST_ID_MAX || strlen(s) != len)
        return agent_error_set(err, EINVAL, "invalid_field", field,
                               "%s must be a string of 1 to %d printable ASCII characters",
                               field, REQUEST_ID_MAX);
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7e)
            return agent_error_set(err, EINVAL, "invalid_field", field,
                                   "%s must be a string of 1 to %d printable ASCII characters",
                                   field, REQUEST_ID_MAX);
    return 0;
}

/* A string field: required or optional, length bounds, no control chars. */
static int get_string(const json_t *obj, const char *key, const char *field, bool required,
                      size_t maxlen, char **out, struct agent_error *err)
{
    json_t *v = json_object_get(obj, key);
    const char *s;

    *out = NULL;
    if (!v || json_is_null(v)) {
        if (required)
            return agent_error_set(err, EINVAL, "missing_field", field,
                                   "field '%s' is required", field);
        return 0;
    }
    if (!json_is_string(v))
        return agent_error_set(err, EINVAL, "invalid_field", field,
                               "field '%s' must be a string", field);
    s = json_string_value(v);
    if (strlen(s) != json_string_length(v) || has_control_chars(s))
        return agent_error_set(err, EINVAL, "invalid_field", field,
                               "field '%s' must not contain control characters", field);
    if (!*s && required)
        return agent_error_set(err, EINVAL, "invalid_field", field,
                               "field '%s' must not be empty", field);
    if (strlen(s) > maxlen)
        return agent_error_set(err, EINVAL, "invalid_field", field,
                               "field '%s' is longer than %zu characters", field, maxlen);
    *out = strdup(s);
    return *out ? 0 : -ENOMEM;
}

static int get_path(const json_t *obj, const char *key, const char *field, bool required,
                    char **out, struct agent_error *err)
{
    int r = get_string(obj, key, field, required, 4096, out, err);

    if (r < 0 || !*out)
        return r;
    if ((*out)[0] != '/' || strstr(*out, "/../") || strstr(*out, "/./")) {
        free(*out);
        *out = NULL;
        return agent_error_set(err, EINVAL, "invalid_field", field,
                               "field '%s' must be an absolute, normalized path", field);
    }
    return 0;
}

static int get_int(const json_t *obj, const char *key, const char *field, int64_t min,
                   int64_t max, int64_t *out, struct agent_error *err)
{
    json_t *v = json_object_get(obj, key);

    if (!v)
        return agent_error_set(err, EINVAL, "missing_field", field,
                               "field '%s' is required", field);
    if (!json_is_integer(v))
        return agent_error_set(err, EINVAL, "invalid_field", field,
                               "field '%s' must be an integer", field);
    if (json_integer_value(v) < min || json_integer_value(v) > max)
        return agent_error_set(err, EINVAL, "invalid_field", field,
                               "field '%s' must be between %lld and %lld", field,
                               (long long)min, (long long)max);
    *out = json_integer_value(v);
    return 0;
}

static int parse_flavor(const json_t *f, struct flavor *out, struct agent_error *err)
{
    static const char *const allowed[] = {"vcpus", "memory_mb", "disk_gb", NULL};
    int r;

    if (!json_is_object(f))
        return agent_error_set(err, EINVAL, "invalid_field", "flavor",
                               "field 'flavor' must be an object");
    if ((r = check_known_keys(f, "flavor.", allowed, err)) < 0 ||
        (r = get_int(f, "vcpus", "flavor.vcpus", 1, 256, &out->vcpus, err)) < 0 ||
        (r = get_int(f, "memory_mb", "flavor.memory_mb", 16, 4194304, &out->memory_mb, err)) < 0)
        return r;
    out->disk_gb = 0;
    if (json_object_get(f, "disk_gb"))
        return get_int(f, "disk_gb", "flavor.disk_gb", 0, 65536, &out->disk_gb, err);
    return 0;
}

static int parse_image(const json_t *img, struct boot_source *b, struct agent_error *err)
{
    static const char *const allowed[] = {"path", "id", "url", "digest", "glance_id", NULL};
    int r, n;

    if (!json_is_object(img))
        return agent_error_set(err, EINVAL, "invalid_field", "image",
                               "field 'image' must be an object");
    if ((r = check_known_keys(img, "image.", allowed, err)) < 0)
        return r;
    n = !!json_object_get(img, "path") + !!json_object_get(img, "id") + !!json_object_get(img, "url") +
        !!json_object_get(img, "glance_id");
    if (n == 0)
        return agent_error_set(err, EINVAL, "missing_field", "image.path",
                               "field 'image.path' is required (or image.id, image.glance_id, "
                               "or image.url with image.digest)");
    if (n > 1)
        return agent_error_set(err, EINVAL, "invalid_field", "image",
                               "field 'image' takes one of path, id, url, glance_id");
    if (json_object_get(img, "digest") && !json_object_get(img, "url"))
        return agent_error_set(err, EINVAL, "invalid_field", "image.digest",
                               "field 'image.digest' goes with image.url only");
    if (json_object_get(img, "glance_id"))
        return get_string(img, "glance_id", "image.glance_id", true, 64, &b->image_glance_id, err);
    if (json_object_get(img, "path")) {
        return get_path(img, "path", "image.path", true, &b->image_path, err);
    }
    if (json_object_get(img, "id"))
        return get_string(img, "id", "image.id", true, 200, &b->image_id, err);
    if ((r = get_string(img, "url", "image.url", true, 4096, &b->image_url, err)) < 0)
        return r;
    return get_string(img, "digest", "image.digest", true, 200, &b->image_digest, err);
}

static int parse_kernel(const json_t *k, struct boot_source *b, struct agent_error *err)
{
    static const char *const allowed[] = {"path", "initrd", "cmdline", NULL};
    int r;

    if (!json_is_object(k))
        return agent_error_set(err, EINVAL, "invalid_field", "kernel",
                               "field 'kernel' must be an object");
    b->kind = BOOT_KERNEL;
    if ((r = check_known_keys(k, "kernel.", allowed, err)) < 0 ||
        (r = get_path(k, "path", "kernel.path", true, &b->kernel, err)) < 0 ||
        (r = get_path(k, "initrd", "kernel.initrd", false, &b->initrd, err)) < 0)
        return r;
    return get_string(k, "cmdline", "kernel.cmdline", false, 2048, &b->cmdline, err);
}

int launch_spec_parse(const json_t *body, const struct catalog *cat, struct launch_spec *spec,
                      struct agent_error *err)
{
    static const char *const allowed[] = {"name", "flavor", "instance_type", "image", "kernel",
                                          "user_data", "request_id", NULL};
    struct launch_spec s = {0};
    json_t *v;
    int r;

    if (!json_is_object(body))
        return agent_error_set(err, EINVAL, "invalid_field", NULL,
                               "the request body must be a JSON object");
    if ((r = check_known_keys(body, "", allowed, err)) < 0)
        goto fail;
    if ((r = get_string(body, "name", "name", true, INSTANCE_NAME_MAX, &s.name, err)) < 0)
        goto fail;
    /* flavor, directly or by instance type */
    if (json_object_get(body, "flavor") && json_object_get(body, "instance_type")) {
        r = agent_error_set(err, EINVAL, "invalid_field", "instance_type",
                            "give either 'flavor' or 'instance_type', not both");
        goto fail;
    }
    if ((v = json_object_get(body, "flavor"))) {
        if ((r = parse_flavor(v, &s.flavor, err)) < 0)
            goto fail;
    } else if (json_object_get(body, "instance_type")) {
        const struct flavor *f;
        if ((r = get_string(body, "instance_type", "instance_type", true, 64, &s.instance_type,
                            err)) < 0)
            goto fail;
        if (!(f = catalog_find(cat, s.instance_type))) {
            r = agent_error_set(err, EINVAL, "invalid_field", "instance_type",
                                "unknown instance type '%s'", s.instance_type);
            goto fail;
        }
        s.flavor = *f;
    } else {
        r = agent_error_set(err, EINVAL, "missing_field", "flavor",
                            "field 'flavor' or 'instance_type' is required");
        goto fail;
    }
    /* boot source: an image, a kernel, or a kernel with an image as its disk */
    if ((v = json_object_get(body, "image")) && (r = parse_image(v, &s.boot, err)) < 0)
        goto fail;
    if ((v = json_object_get(body, "kernel")) && (r = parse_kernel(v, &s.boot, err)) < 0)
        goto fail;
    if (!json_object_get(body, "image") && !json_object_get(body, "kernel")) {
        r = agent_error_set(err, EINVAL, "missing_field", "image",
                            "a boot source is required: field 'image' or 'kernel'");
        goto fail;
    }
    /* user data: base64, at most 16 KiB decoded */
    if ((r = get_string(body, "user_data", "user_data", false, 4 * ((USER_DATA_MAX + 2) / 3) + 4,
                        &s.user_data, err)) < 0) {
        if (err && strstr(err->message, "longer"))
            snprintf(err->message, sizeof(err->message),
                     "field 'user_data' decodes to more than %d bytes", USER_DATA_MAX);
        goto fail;
    }
    if (s.user_data) {
        ssize_t n = base64_decode(s.user_data, NULL, 0);
        if (n < 0) {
            r = agent_error_set(err, EINVAL, "invalid_field", "user_data",
                                "field 'user_data' must be base64 (RFC 4648, padded)");
            goto fail;
        }
        if (n > USER_DATA_MAX) {
            r = agent_error_set(err, EINVAL, "invalid_field", "user_data",
                                "field 'user_data' decodes to %zd bytes, more than %d", n,
                                USER_DATA_MAX);
            goto fail;
        }
    }
    if ((v = json_object_get(body, "request_id")) && !json_is_null(v)) {
        if (!json_is_string(v)) {
            r = request_id_check(NULL, 0, "request_id", err);
            goto fail;
        }
        if ((r = request_id_check(json_string_value(v), json_string_length(v), "request_id", err)) < 0)
            goto fail;
        if (!(s.request_id = strdup(json_string_value(v)))) {
            r = -ENOMEM;
            goto fail;
        }
    }
    *spec = s;
    return 0;
fail:
    launch_spec_release(&s);
    return r;
}

/* ---- JSON documents and request ids ---- */

int request_json_object(const char *text, size_t len, json_t **out, struct agent_error *err)
{
    json_error_t jerr;
    json_t *j;

    *out = NULL;
    if (!text || !len)
        return agent_error_set(err, EINVAL, "invalid_json", NULL, "a JSON body is required");
    j = json_loadb(text, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
    if (!j)
        return agent_error_set(err, EINVAL, "invalid_json", NULL, "malformed JSON at line %d column %d: %s",
                               jerr.line, jerr.column, jerr.text);
    if (!json_is_object(j)) {
        json_decref(j);
        return agent_error_set(err, EINVAL, "invalid_json", NULL, "the body must be a JSON object");
    }
    *out = j;
    return 0;
}

int request_id_resolve(const json_t *body, const char *header, const char **out, struct agent_error *err)
{
    json_t *v = body ? json_object_get(body, "request_id") : NULL;
    int r;

    *out = header;
    if (header && (r = request_id_check(header, strlen(header), "Idempotency-Key", err)) < 0) {
        if (err)
            strscpy(err->field, "request_id", sizeof(err->field));
        return r;
    }
    if (v && !json_is_null(v)) {
        if ((r = request_id_check(json_string_value(v), json_string_length(v), "request_id", err)) < 0)
            return r;
        if (header && strcmp(header, json_string_value(v)) != 0)
            return agent_error_set(err, EINVAL, "invalid_field", "request_id",
                                   "field 'request_id' differs from the Idempotency-Key header");
        *out = json_string_value(v);
    }
    return 0;
}

/* ---- actions ---- */

static const char *const action_names[] = {
    [REQUEST_START] = "start",
    [REQUEST_STOP] = "stop",
    [REQUEST_REBOOT] = "reboot",
    [REQUEST_TERMINATE] = "terminate",
};

const char *request_action_name(enum request_action a)
{
    return (size_t)a < ARRAY_SIZE(action_names) ? action_names[a] : "unknown";
}

/* name (may be NULL) as an action; terminate only where allowed. */
static int action_of(const char *name, bool terminate_ok, enum request_action *out)
{
    for (size_t i = 0; name && i < ARRAY_SIZE(action_names); i++)
        if (!strcmp(name, action_names[i]) && (terminate_ok || i != REQUEST_TERMINATE)) {
            *out = (enum request_action)i;
            return 0;
        }
    return -EINVAL;
}

int request_action_options(const json_t *obj, struct action_request *out, struct agent_error *err)
{
    json_t *v;

    if ((v = json_object_get(obj, "timeout"))) {
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > 3600)
            return agent_error_set(err, EINVAL, "invalid_field", "timeout",
                                   "field 'timeout' must be an integer from 0 to 3600");
        out->timeout_s = json_integer_value(v);
    }
    if ((v = json_object_get(obj, "force"))) {
        if (!json_is_boolean(v))
            return agent_error_set(err, EINVAL, "invalid_field", "force", "field 'force' must be a boolean");
        out->force = json_is_true(v);
    }
    return 0;
}

/* Every key of obj among allowed; else unknown_field naming the key. */
static int only_keys(const json_t *obj, const char *const allowed[], struct agent_error *err)
{
    const char *key;
    json_t *v;

    json_object_foreach((json_t *)obj, key, v) {
        bool ok = false;
        for (size_t i = 0; allowed[i]; i++)
            ok |= !strcmp(key, allowed[i]);
        if (!ok)
            return agent_error_set(err, EINVAL, "unknown_field", key, "unknown field '%.100s'", key);
    }
    return 0;
}

int request_action_parse(const json_t *body, const char *idem, struct action_request *out,
                         struct agent_error *err)
{
    static const char *const allowed[] = {"action", "request_id", "timeout", "force", NULL};
    struct action_request a = {.timeout_s = -1};
    json_t *v;
    int r;

    if (!json_is_object(body))
        return agent_error_set(err, EINVAL, "invalid_json", NULL, "the body must be a JSON object");
    if ((r = only_keys(body, allowed, err)) < 0)
        return r;
    if (!(v = json_object_get(body, "action")))
        return agent_error_set(err, EINVAL, "missing_field", "action", "field 'action' is required");
    if (action_of(json_string_value(v), false, &a.action) < 0)
        return agent_error_set(err, EINVAL, "invalid_field", "action",
                               "field 'action' must be start, stop or reboot");
    if ((r = request_action_options(body, &a, err)) < 0 || (r = request_id_resolve(body, idem, &a.request_id, err)) < 0)
        return r;
    *out = a;
    return 0;
}

/* ---- bus commands ---- */

/* The launch body inside a command: errors named under "instance". */
static int command_launch(const json_t *cmd, const struct catalog *cat, struct command_request *c,
                          struct agent_error *err)
{
    json_t *inst = json_object_get(cmd, "instance");
    int r;

    if (json_object_get(cmd, "instance_id"))
        return agent_error_set(err, EINVAL, "invalid_field", "instance_id", "a launch takes no 'instance_id'");
    if (!inst)
        return agent_error_set(err, EINVAL, "missing_field", "instance",
                               "field 'instance' (the launch body) is required");
    if (!json_is_object(inst))
        return agent_error_set(err, EINVAL, "invalid_field", "instance", "field 'instance' must be an object");
    if ((r = launch_spec_parse(inst, cat, &c->spec, err)) < 0) {
        if (err) {
            char field[sizeof(err->field) + 16];
            snprintf(field, sizeof(field), "instance%s%s", err->field[0] ? "." : "", err->field);
            strscpy(err->field, field, sizeof(err->field));
            utf8_scrub(err->field); /* cut short: it goes into the rejection event */
        }
        return r;
    }
    if (c->spec.request_id && strcmp(c->spec.request_id, c->request_id)) {
        launch_spec_release(&c->spec);
        return agent_error_set(err, EINVAL, "invalid_field", "instance.request_id",
                               "instance.request_id differs from request_id");
    }
    free(c->spec.request_id);
    if (!(c->spec.request_id = strdup(c->request_id))) {
        launch_spec_release(&c->spec);
        return -ENOMEM;
    }
    c->launch = true;
    return 0;
}

static int command_action(const json_t *cmd, enum request_action act, struct command_request *c,
                          struct agent_error *err)
{
    json_t *id = json_object_get(cmd, "instance_id");

    if (json_object_get(cmd, "instance"))
        return agent_error_set(err, EINVAL, "invalid_field", "instance", "only a launch takes 'instance'");
    if (!json_is_string(id))
        return agent_error_set(err, EINVAL, id ? "invalid_field" : "missing_field", "instance_id",
                               "field 'instance_id' (a UUID or an i- id) is required");
    c->instance_id = json_string_value(id);
    c->action.action = act;
    c->action.timeout_s = -1;
    c->action.request_id = c->request_id;
    return request_action_options(cmd, &c->action, err);
}

int request_command_parse(const json_t *cmd, const struct catalog *cat, struct command_request *out,
                          struct agent_error *err)
{
    static const char *const allowed[] = {"op", "request_id", "instance_id", "instance", "timeout", "force", NULL};
    struct command_request c = {0};
    enum request_action act = REQUEST_START;
    const char *op;
    json_t *v;
    int r;

    if (!json_is_object(cmd))
        return agent_error_set(err, EINVAL, "invalid_json", NULL, "a command is a JSON object");
    if ((r = only_keys(cmd, allowed, err)) < 0)
        return r;
    if (!(v = json_object_get(cmd, "op")))
        return agent_error_set(err, EINVAL, "missing_field", "op", "field 'op' is required");
    op = json_string_value(v);
    if (!op || (strcmp(op, "launch") && action_of(op, true, &act) < 0))
        return agent_error_set(err, EINVAL, "invalid_field", "op",
                               "field 'op' must be launch, start, stop, reboot or terminate");
    if (!(v = json_object_get(cmd, "request_id")))
        return agent_error_set(err, EINVAL, "missing_field", "request_id", "field 'request_id' is required on the bus");
    c.request_id = json_string_value(v);
    if ((r = request_id_check(c.request_id, json_string_length(v), "request_id", err)) < 0)
        return r;
    r = !strcmp(op, "launch") ? command_launch(cmd, cat, &c, err) : command_action(cmd, act, &c, err);
    if (r < 0)
        return r;
    *out = c;
    return 0;
}

void request_command_release(struct command_request *c)
{
    if (c->launch)
        launch_spec_release(&c->spec);
    memset(c, 0, sizeof(*c));
}

void request_field_for_command(struct agent_error *err, bool launch)
{
    char field[sizeof(err->field) + 16];

    if (!err || !err->field[0])
        return;
    if (launch) {
        if (!strcmp(err->field, "request_id"))
            return;
        snprintf(field, sizeof(field), "instance.%s", err->field);
        strscpy(err->field, field, sizeof(err->field));
        utf8_scrub(err->field); /* cut short: it goes into the rejection event */
    } else if (!strcmp(err->field, "id")) {
        strscpy(err->field, "instance_id", sizeof(err->field));
    } else if (!strcmp(err->field, "action")) {
        strscpy(err->field, "op", sizeof(err->field));
    }
}
