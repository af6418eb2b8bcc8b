/* instance.c: see instance.h. */
#include "agent/instance.h"
#include "agent/log.h"
#include "agent/store.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- base64 ---- */

static int b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

ssize_t base64_decode(const char *in, uint8_t *out, size_t outsize)
{
    size_t len = strlen(in), o = 0;

    if (len % 4)
        return -EINVAL;
    for (size_t i = 0; i < len; i += 4) {
        int v[4], pad = 0;
        for (int k = 0; k < 4; k++) {
            if (in[i + k] == '=' && i + 4 == len && k >= 2) {
                v[k] = 0;
                pad++;
            } else if (pad) {
                return -EINVAL; /* data after padding */
            } else if ((v[k] = b64_value((unsigned char)in[i + k])) < 0) {
                return -EINVAL;
            }
        }
        uint32_t w = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | (uint32_t)v[3];
        uint8_t bytes[3] = {(uint8_t)(w >> 16), (uint8_t)(w >> 8), (uint8_t)w};
        for (int k = 0; k < 3 - pad; k++) {
            if (out) {
                if (o >= outsize)
                    return -ENOBUFS;
                out[o] = bytes[k];
            }
            o++;
        }
    }
    return (ssize_t)o;
}

/* ---- identity ---- */

int ec2_id_generate(char buf[EC2_ID_LEN + 1])
{
    uint8_t r[9];
    int ret = random_bytes(r, sizeof(r));

    if (ret < 0)
        return ret;
    buf[0] = 'i';
    buf[1] = '-';
    for (int i = 0; i < 17; i++) {
        uint8_t nib = (i % 2) ? (r[i / 2] & 0xf) : (r[i / 2] >> 4);
        buf[2 + i] = "0123456789abcdef"[nib];
    }
    buf[EC2_ID_LEN] = '\0';
    return 0;
}

bool ec2_id_is_valid(const char *s)
{
    if (!s || strlen(s) != EC2_ID_LEN || s[0] != 'i' || s[1] != '-')
        return false;
    for (int i = 2; i < EC2_ID_LEN; i++)
        if (!isdigit((unsigned char)s[i]) && !(s[i] >= 'a' && s[i] <= 'f'))
            return false;
    return true;
}

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

void boot_source_release(struct boot_source *b)
{
    free(b->image_path);
    free(b->image_id);
    free(b->image_url);
    free(b->image_digest);
    free(b->image_glance_id);
    free(b->kernel);
    free(b->initrd);
    free(b->cmdline);
    memset(b, 0, sizeof(*b));
}

void launch_spec_release(struct launch_spec *spec)
{
    free(spec->name);
    free(spec->instance_type);
    free(spec->user_data);
    free(spec->request_id);
    boot_source_release(&spec->boot);
    memset(spec, 0, sizeof(*spec));
}

/* ---- JSON ---- */

static void set_opt_str(json_t *o, const char *key, const char *v)
{
    if (v)
        json_object_set_new(o, key, json_string(v));
}

bool boot_source_has_image(const struct boot_source *b)
{
    return b->image_path || boot_source_uses_cache(b);
}

bool boot_source_uses_cache(const struct boot_source *b)
{
    return b->image_id || b->image_url || b->image_glance_id;
}

json_t *boot_source_to_json(const struct boot_source *b)
{
    json_t *out = json_object();

    if (b->kind == BOOT_KERNEL)
        json_object_set_new(out, "kernel",
                            json_pack("{s:s, s:o, s:o}", "path", b->kernel ? b->kernel : "", "initrd",
                                      b->initrd ? json_string(b->initrd) : json_null(), "cmdline",
                                      b->cmdline ? json_string(b->cmdline) : json_null()));
    if (boot_source_has_image(b)) {
        json_t *img = json_object();
        set_opt_str(img, "path", b->image_path);
        set_opt_str(img, "id", b->image_id);
        set_opt_str(img, "url", b->image_url);
        set_opt_str(img, "digest", b->image_digest);
        set_opt_str(img, "glance_id", b->image_glance_id);
        json_object_set_new(out, "image", img);
    }
    return out;
}

static char *dup_member(const json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? strdup(s) : NULL;
}

int boot_source_from_json(const json_t *j, struct boot_source *b)
{
    json_t *v;

    memset(b, 0, sizeof(*b));
    b->kind = BOOT_IMAGE;
    if ((v = json_object_get(j, "image"))) {
        b->image_path = dup_member(v, "path");
        b->image_id = dup_member(v, "id");
        b->image_url = dup_member(v, "url");
        b->image_digest = dup_member(v, "digest");
        b->image_glance_id = dup_member(v, "glance_id");
    }
    if ((v = json_object_get(j, "kernel"))) {
        b->kind = BOOT_KERNEL;
        b->kernel = dup_member(v, "path");
        b->initrd = dup_member(v, "initrd");
        b->cmdline = dup_member(v, "cmdline");
        return b->kernel ? 0 : -EINVAL;
    }
    return boot_source_has_image(b) ? 0 : -EINVAL;
}

/* The boot source as shown (API, events): the image URL without credentials. */
static json_t *boot_source_shown(const struct boot_source *b)
{
    json_t *out = boot_source_to_json(b), *img = json_object_get(out, "image");
    char *shown;

    if (b->image_url && img && (shown = url_redact(b->image_url))) {
        json_object_set_new(img, "url", json_string(shown));
        free(shown);
    }
    return out;
}

json_t *instance_to_json(const struct instance *inst)
{
    char created[32], updated[32];

    format_rfc3339_ms(inst->created_ms, created);
    format_rfc3339_ms(inst->updated_ms, updated);
    return json_pack("{s:s, s:s, s:s, s:s, s:o, s:{s:I, s:I, s:I}, s:o, s:o, s:b, s:o, s:s, s:s, s:o}",
                     "id", inst->uuid, "ec2_id", inst->ec2_id, "name", inst->name,
                     "state", inst->state,
                     "task_state", inst->task_state[0] ? json_string(inst->task_state) : json_null(),
                     "flavor", "vcpus", (json_int_t)inst->flavor.vcpus, "memory_mb",
                     (json_int_t)inst->flavor.memory_mb, "disk_gb", (json_int_t)inst->flavor.disk_gb,
                     "instance_type", inst->instance_type ? json_string(inst->instance_type) : json_null(),
                     "boot", boot_source_shown(&inst->boot),
                     "has_user_data", inst->user_data != NULL,
                     "console_log", inst->console_log ? json_string(inst->console_log) : json_null(),
                     "created_at", created, "updated_at", updated,
                     "fault", inst->fault ? json_string(inst->fault) : json_null());
}

json_t *op_record_to_json(const struct op_record *op)
{
    char created[32], updated[32];
    json_t *error = json_null();

    format_rfc3339_ms(op->created_ms, created);
    format_rfc3339_ms(op->updated_ms, updated);
    if (op->error_code[0])
        error = json_pack("{s:s, s:s}", "code", op->error_code, "message",
                          op->error_message ? op->error_message : "");
    return json_pack("{s:s, s:s, s:s, s:o, s:s, s:o, s:o, s:s, s:s}", "id", op->id, "type", op->type,
                     "instance_id", op->instance_uuid, "request_id",
                     op->request_id ? json_string(op->request_id) : json_null(), "state", op->state,
                     "step", op->step[0] ? json_string(op->step) : json_null(), "error", error,
                     "created_at", created, "updated_at", updated);
}

void instance_release(struct instance *inst)
{
    free(inst->name);
    free(inst->instance_type);
    free(inst->user_data);
    free(inst->console_log);
    free(inst->disk_path);
    free(inst->fault);
    boot_source_release(&inst->boot);
    memset(inst, 0, sizeof(*inst));
}

static int dup_opt(char **dst, const char *src)
{
    *dst = NULL;
    if (!src)
        return 0;
    *dst = strdup(src);
    return *dst ? 0 : -ENOMEM;
}

int instance_copy(struct instance *dst, const struct instance *src)
{
    *dst = *src;
    memset(&dst->boot, 0, sizeof(dst->boot));
    dst->boot.kind = src->boot.kind;
    if (dup_opt(&dst->name, src->name) || dup_opt(&dst->instance_type, src->instance_type) ||
        dup_opt(&dst->user_data, src->user_data) || dup_opt(&dst->console_log, src->console_log) ||
        dup_opt(&dst->disk_path, src->disk_path) || dup_opt(&dst->fault, src->fault) ||
        dup_opt(&dst->boot.image_path, src->boot.image_path) ||
        dup_opt(&dst->boot.image_id, src->boot.image_id) ||
        dup_opt(&dst->boot.image_url, src->boot.image_url) ||
        dup_opt(&dst->boot.image_digest, src->boot.image_digest) ||
        dup_opt(&dst->boot.image_glance_id, src->boot.image_glance_id) ||
        dup_opt(&dst->boot.kernel, src->boot.kernel) ||
        dup_opt(&dst->boot.initrd, src->boot.initrd) ||
        dup_opt(&dst->boot.cmdline, src->boot.cmdline)) {
        instance_release(dst);
        return -ENOMEM;
    }
    return 0;
}

/* ---- catalogue ---- */

struct catalog_entry {
    char name[64];
    struct flavor flavor;
};

struct catalog {
    struct catalog_entry *entries;
    size_t n;
};

static const struct catalog_entry builtin_types[] = {
    {"t3.nano", {2, 512, 8}},      {"t3.micro", {2, 1024, 8}},    {"t3.small", {2, 2048, 16}},
    {"t3.medium", {2, 4096, 32}},  {"t3.large", {2, 8192, 64}},   {"t3.xlarge", {4, 16384, 128}},
    {"m5.large", {2, 8192, 64}},   {"m5.xlarge", {4, 16384, 128}}, {"m5.2xlarge", {8, 32768, 256}},
    {"c5.large", {2, 4096, 32}},   {"c5.xlarge", {4, 8192, 64}},  {"r5.large", {2, 16384, 64}},
};

const struct flavor *catalog_find(const struct catalog *cat, const char *name)
{
    for (size_t i = 0; cat && i < cat->n; i++)
        if (strcmp(cat->entries[i].name, name) == 0)
            return &cat->entries[i].flavor;
    return NULL;
}

int catalog_builtin(struct catalog **ret)
{
    struct catalog *c = calloc(1, sizeof(*c));

    if (!c)
        return -ENOMEM;
    c->entries = malloc(sizeof(builtin_types));
    if (!c->entries) {
        free(c);
        return -ENOMEM;
    }
    memcpy(c->entries, builtin_types, sizeof(builtin_types));
    c->n = ARRAY_SIZE(builtin_types);
    *ret = c;
    return 0;
}

/* INI: [type-name] then vcpus = N, memory_mb = N, disk_gb = N. */
int catalog_load(const char *path, struct catalog **ret, struct agent_error *err)
{
    _cleanup_fclose_ FILE *f = fopen(path, "re");
    struct catalog *c;
    char line[512];
    unsigned lineno = 0;

    if (!f)
        return agent_error_set(err, errno, "invalid_config", "agent.instance_types",
                               "cannot open %s: %s", path, strerror(errno));
    c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    while (fgets(line, sizeof(line), f)) {
        char *s = line, *e, *eq;
        struct catalog_entry *cur = c->n ? &c->entries[c->n - 1] : NULL;
        int64_t v;

        lineno++;
        while (isspace((unsigned char)*s))
            s++;
        e = s + strlen(s);
        while (e > s && isspace((unsigned char)e[-1]))
            *--e = '\0';
        if (!*s || *s == '#' || *s == ';')
            continue;
        if (*s == '[' && e[-1] == ']') {
            struct catalog_entry *n = realloc(c->entries, (c->n + 1) * sizeof(*n));
            if (!n) {
                catalog_free(c);
                return -ENOMEM;
            }
            c->entries = n;
            e[-1] = '\0';
            memset(&n[c->n], 0, sizeof(*n));
            if (strscpy(n[c->n].name, s + 1, sizeof(n[c->n].name)) < 0) {
                catalog_free(c);
                return agent_error_set(err, EINVAL, "invalid_config", "agent.instance_types",
                                       "%s:%u: type name too long", path, lineno);
            }
            c->n++;
            continue;
        }
        eq = strchr(s, '=');
        if (!cur || !eq)
            goto bad;
        *eq = '\0';
        for (e = eq; e > s && isspace((unsigned char)e[-1]);)
            *--e = '\0';
        for (eq++; isspace((unsigned char)*eq);)
            eq++;
        if (parse_int64(eq, 0, 4194304, &v) < 0)
            goto bad;
        if (strcmp(s, "vcpus") == 0 && v >= 1 && v <= 256)
            cur->flavor.vcpus = v;
        else if (strcmp(s, "memory_mb") == 0 && v >= 16)
            cur->flavor.memory_mb = v;
        else if (strcmp(s, "disk_gb") == 0 && v <= 65536)
            cur->flavor.disk_gb = v;
        else
            goto bad;
    }
    for (size_t i = 0; i < c->n; i++)
        if (!c->entries[i].flavor.vcpus || !c->entries[i].flavor.memory_mb) {
            int r = agent_error_set(err, EINVAL, "invalid_config", "agent.instance_types",
                                    "%s: type '%s' needs vcpus and memory_mb", path,
                                    c->entries[i].name);
            catalog_free(c);
            return r;
        }
    *ret = c;
    return 0;
bad:
    catalog_free(c);
    return agent_error_set(err, EINVAL, "invalid_config", "agent.instance_types",
                           "%s:%u: expected [type] or vcpus|memory_mb|disk_gb = N", path, lineno);
}

void catalog_free(struct catalog *cat)
{
    if (!cat)
        return;
    free(cat->entries);
    free(cat);
}
