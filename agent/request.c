/* request.c: see request.h. The launch body's checks (from instance.c),
 * the action body and options, the bus command, the field renaming. */
#include "agent/request.h"

#include <ctype.h>
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

/* ---- guest networking and metadata (issue 10) ---- */

/* A MAC "aa:bb:cc:dd:ee:ff" (either case) into lowercase out[18]: unicast
 * and not all zero. */
int request_mac_parse(const char *s, char out[18], uint8_t bytes[6])
{
    uint8_t b[6];
    bool zero = true;

    if (!s || strlen(s) != 17)
        return -EINVAL;
    for (int i = 0; i < 6; i++) {
        int v = 0;
        for (int k = 0; k < 2; k++) {
            char c = s[i * 3 + k];
            int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
                  : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
            if (d < 0)
                return -EINVAL;
            v = v * 16 + d;
        }
        if (i < 5 && s[i * 3 + 2] != ':')
            return -EINVAL;
        b[i] = (uint8_t)v;
        zero &= v == 0;
    }
    if (zero || (b[0] & 1))
        return -EINVAL; /* all zero, or multicast/broadcast */
    if (out)
        snprintf(out, 18, "%02x:%02x:%02x:%02x:%02x:%02x", b[0], b[1], b[2], b[3], b[4], b[5]);
    if (bytes)
        memcpy(bytes, b, 6);
    return 0;
}

int request_ipv4_check(const char *s)
{
    unsigned a, b, c, d;
    char tail, norm[16];

    if (!s || sscanf(s, "%3u.%3u.%3u.%3u%c", &a, &b, &c, &d, &tail) != 4 || a > 255 || b > 255 ||
        c > 255 || d > 255)
        return -EINVAL;
    snprintf(norm, sizeof(norm), "%u.%u.%u.%u", a, b, c, d);
    return strcmp(norm, s) ? -EINVAL : 0; /* no leading zeros, no spaces */
}

static int parse_iface(const json_t *o, size_t i, struct launch_iface *out, struct agent_error *err)
{
    static const char *const allowed[] = {"network", "mac", "ip", "mtu", NULL};
    char prefix[32], field[48];
    json_t *v;
    int r;

    snprintf(prefix, sizeof(prefix), "interfaces[%zu].", i);
#define IFIELD(k) (snprintf(field, sizeof(field), "%s%s", prefix, k), field)
    if (!json_is_object(o)) {
        snprintf(field, sizeof(field), "interfaces[%zu]", i);
        return agent_error_set(err, EINVAL, "invalid_field", field, "field '%s' must be an object", field);
    }
    if ((r = check_known_keys(o, prefix, allowed, err)) < 0)
        return r;
    v = json_object_get(o, "network");
    if (!v)
        return agent_error_set(err, EINVAL, "missing_field", IFIELD("network"), "field '%s' is required", field);
    if (!json_is_string(v) || !json_string_length(v) || json_string_length(v) >= sizeof(out->network) ||
        strlen(json_string_value(v)) != json_string_length(v) || has_control_chars(json_string_value(v)))
        return agent_error_set(err, EINVAL, "invalid_field", IFIELD("network"),
                               "field '%s' must name a configured network", field);
    strscpy(out->network, json_string_value(v), sizeof(out->network));
    if ((v = json_object_get(o, "mac")) && !json_is_null(v)) {
        if (!json_is_string(v) || request_mac_parse(json_string_value(v), out->mac, NULL) < 0)
            return agent_error_set(err, EINVAL, "invalid_field", IFIELD("mac"),
                                   "field '%s' must be a unicast MAC address aa:bb:cc:dd:ee:ff", field);
        /* net-plug gives a port's host end the guest's MAC with fe as its first byte */
        if (strncmp(out->mac, "fe:", 3) == 0)
            return agent_error_set(err, EINVAL, "invalid_field", IFIELD("mac"),
                                   "field '%s' must not begin with fe: (the host ends of ports use it)", field);
    }
    if ((v = json_object_get(o, "ip")) && !json_is_null(v)) {
        if (!json_is_string(v) || request_ipv4_check(json_string_value(v)) < 0)
            return agent_error_set(err, EINVAL, "invalid_field", IFIELD("ip"),
                                   "field '%s' must be an IPv4 address a.b.c.d", field);
        strscpy(out->ip, json_string_value(v), sizeof(out->ip));
    }
    if ((v = json_object_get(o, "mtu")) && !json_is_null(v)) {
        if (!json_is_integer(v) || json_integer_value(v) < 68 || json_integer_value(v) > 65535)
            return agent_error_set(err, EINVAL, "invalid_field", IFIELD("mtu"),
                                   "field '%s' must be an integer from 68 to 65535", field);
        out->mtu = (int)json_integer_value(v);
    }
#undef IFIELD
    return 0;
}

static int parse_interfaces(const json_t *a, struct launch_spec *s, struct agent_error *err)
{
    size_t n;

    if (!json_is_array(a))
        return agent_error_set(err, EINVAL, "invalid_field", "interfaces", "field 'interfaces' must be an array");
    n = json_array_size(a);
    if (n > IFACE_MAX)
        return agent_error_set(err, EINVAL, "invalid_field", "interfaces",
                               "field 'interfaces' lists %zu interfaces, more than %d", n, IFACE_MAX);
    if (!n)
        return 0;
    if (!(s->ifaces = calloc(n, sizeof(*s->ifaces))))
        return -ENOMEM;
    s->n_ifaces = n;
    for (size_t i = 0; i < n; i++) {
        struct launch_iface *f = &s->ifaces[i];
        int r = parse_iface(json_array_get(a, i), i, f, err);
        if (r < 0)
            return r;
        for (size_t k = 0; k < i; k++) {
            char field[48];
            if (f->mac[0] && !strcmp(f->mac, s->ifaces[k].mac)) {
                snprintf(field, sizeof(field), "interfaces[%zu].mac", i);
                return agent_error_set(err, EINVAL, "invalid_field", field,
                                       "field '%s' repeats the MAC of interfaces[%zu]", field, k);
            }
            if (f->ip[0] && !strcmp(f->ip, s->ifaces[k].ip) && !strcmp(f->network, s->ifaces[k].network)) {
                snprintf(field, sizeof(field), "interfaces[%zu].ip", i);
                return agent_error_set(err, EINVAL, "invalid_field", field,
                                       "field '%s' repeats the IP of interfaces[%zu]", field, k);
            }
        }
    }
    return 0;
}

/* A map of strings: at most max_items, keys 1..key_max characters (what
 * key_ok allows), values 1..value_max bytes, no control characters. The
 * field named is "<what>.<key>" (cut to fit). */
static int parse_string_map(const json_t *o, const char *what, size_t max_items, size_t key_max,
                            size_t value_max, bool empty_value_ok, json_t **out, struct agent_error *err)
{
    const char *key;
    json_t *v;
    char field[96];

    if (!json_is_object(o))
        return agent_error_set(err, EINVAL, "invalid_field", what, "field '%s' must be an object of strings", what);
    if (json_object_size(o) > max_items)
        return agent_error_set(err, EINVAL, "invalid_field", what, "field '%s' has %zu items, more than %zu",
                               what, json_object_size(o), max_items);
    json_object_foreach((json_t *)o, key, v) {
        size_t klen = strlen(key);
        snprintf(field, sizeof(field), "%s.%s", what, key);
        utf8_scrub(field);
        if (!klen || klen > key_max || has_control_chars(key))
            return agent_error_set(err, EINVAL, "invalid_field", klen ? field : what,
                                   "a key of '%s' must be 1 to %zu characters without control characters",
                                   what, key_max);
        if (!json_is_string(v))
            return agent_error_set(err, EINVAL, "invalid_field", field, "field '%s' must be a string", field);
        if (strlen(json_string_value(v)) != json_string_length(v) || has_control_chars(json_string_value(v)))
            return agent_error_set(err, EINVAL, "invalid_field", field,
                                   "field '%s' must not contain control characters", field);
        if (json_string_length(v) > value_max || (!empty_value_ok && !json_string_length(v)))
            return agent_error_set(err, EINVAL, "invalid_field", field, "field '%s' must be %s%zu characters",
                                   field, empty_value_ok ? "at most " : "1 to ", value_max);
    }
    *out = json_deep_copy(o);
    return *out ? 0 : -ENOMEM;
}

/* An OpenSSH public key line: "TYPE BASE64 [comment]". */
static bool public_key_ok(const char *k)
{
    static const char *const types[] = {"ssh-rsa", "ssh-dss", "ssh-ed25519", "ecdsa-sha2-nistp256",
                                        "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
                                        "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com",
                                        NULL};
    size_t tlen = strcspn(k, " "), blen;
    bool ok = false;

    for (size_t i = 0; types[i]; i++)
        ok |= strlen(types[i]) == tlen && !strncmp(k, types[i], tlen);
    if (!ok || k[tlen] != ' ')
        return false;
    k += tlen + 1;
    blen = strcspn(k, " ");
    if (blen < 16)
        return false;
    for (size_t i = 0; i < blen; i++)
        if (!isalnum((unsigned char)k[i]) && k[i] != '+' && k[i] != '/' && k[i] != '=')
            return false;
    return true;
}

static int parse_public_keys(const json_t *o, json_t **out, struct agent_error *err)
{
    const char *key;
    json_t *v;
    int r = parse_string_map(o, "public_keys", PUBLIC_KEYS_MAX, KEY_NAME_MAX, PUBLIC_KEY_MAX, false, out, err);

    if (r < 0)
        return r;
    json_object_foreach(*out, key, v) {
        if (!public_key_ok(json_string_value(v))) {
            char field[96];
            snprintf(field, sizeof(field), "public_keys.%s", key);
            utf8_scrub(field);
            json_decref(*out);
            *out = NULL;
            return agent_error_set(err, EINVAL, "invalid_field", field,
                                   "field '%s' must be an OpenSSH public key (TYPE BASE64 [comment])", field);
        }
    }
    return 0;
}

static int parse_md_options(const json_t *o, struct md_options *m, struct agent_error *err)
{
    static const char *const allowed[] = {"http_tokens", "http_endpoint", "http_put_response_hop_limit", NULL};
    const char *t;
    json_t *v;
    int r;

    if (!json_is_object(o))
        return agent_error_set(err, EINVAL, "invalid_field", "metadata_options",
                               "field 'metadata_options' must be an object");
    if ((r = check_known_keys(o, "metadata_options.", allowed, err)) < 0)
        return r;
    if ((v = json_object_get(o, "http_tokens"))) {
        t = json_string_value(v);
        if (!t || (strcmp(t, "optional") && strcmp(t, "required")))
            return agent_error_set(err, EINVAL, "invalid_field", "metadata_options.http_tokens",
                                   "field 'metadata_options.http_tokens' must be optional or required");
        strscpy(m->http_tokens, t, sizeof(m->http_tokens));
    }
    if ((v = json_object_get(o, "http_endpoint"))) {
        t = json_string_value(v);
        if (!t || (strcmp(t, "enabled") && strcmp(t, "disabled")))
            return agent_error_set(err, EINVAL, "invalid_field", "metadata_options.http_endpoint",
                                   "field 'metadata_options.http_endpoint' must be enabled or disabled");
        strscpy(m->http_endpoint, t, sizeof(m->http_endpoint));
    }
    if ((v = json_object_get(o, "http_put_response_hop_limit"))) {
        if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > 64)
            return agent_error_set(err, EINVAL, "invalid_field", "metadata_options.http_put_response_hop_limit",
                                   "field 'metadata_options.http_put_response_hop_limit' must be an integer from 1 to 64");
        m->hop_limit = (int)json_integer_value(v);
    }
    return 0;
}

/* interfaces, public_keys, metadata, availability_zone, hostname,
 * metadata_options, config_drive, config_drive_format. */
static int parse_guest_fields(const json_t *body, struct launch_spec *s, struct agent_error *err)
{
    json_t *v;
    int r;

    if ((v = json_object_get(body, "interfaces")) && !json_is_null(v) &&
        (r = parse_interfaces(v, s, err)) < 0)
        return r;
    if ((v = json_object_get(body, "public_keys")) && !json_is_null(v) &&
        (r = parse_public_keys(v, &s->public_keys, err)) < 0)
        return r;
    if ((v = json_object_get(body, "metadata")) && !json_is_null(v) &&
        (r = parse_string_map(v, "metadata", METADATA_ITEMS_MAX, METADATA_KEY_MAX, METADATA_VALUE_MAX, true,
                              &s->metadata, err)) < 0)
        return r;
    if ((r = get_string(body, "availability_zone", "availability_zone", false, AZ_MAX, &s->availability_zone,
                        err)) < 0)
        return r;
    if (s->availability_zone && !*s->availability_zone)
        return agent_error_set(err, EINVAL, "invalid_field", "availability_zone",
                               "field 'availability_zone' must not be empty");
    if ((r = get_string(body, "hostname", "hostname", false, HOSTNAME_MAX, &s->hostname, err)) < 0)
        return r;
    if (s->hostname && !hostname_is_valid(s->hostname))
        return agent_error_set(err, EINVAL, "invalid_field", "hostname",
                               "field 'hostname' must be an RFC 1123 host name (labels of 1-63 letters, "
                               "digits and '-', 253 characters in all)");
    if ((v = json_object_get(body, "metadata_options")) && !json_is_null(v) &&
        (r = parse_md_options(v, &s->md_opts, err)) < 0)
        return r;
    s->config_drive = -1;
    if ((v = json_object_get(body, "config_drive")) && !json_is_null(v)) {
        if (!json_is_boolean(v))
            return agent_error_set(err, EINVAL, "invalid_field", "config_drive",
                                   "field 'config_drive' must be a boolean");
        s->config_drive = json_is_true(v);
    }
    if ((v = json_object_get(body, "config_drive_format")) && !json_is_null(v)) {
        const char *f = json_string_value(v);
        if (!f || (strcmp(f, "config-2") && strcmp(f, "nocloud")))
            return agent_error_set(err, EINVAL, "invalid_field", "config_drive_format",
                                   "field 'config_drive_format' must be config-2 or nocloud");
        strscpy(s->config_drive_format, f, sizeof(s->config_drive_format));
    }
    return 0;
}

int launch_spec_parse(const json_t *body, const struct catalog *cat, struct launch_spec *spec,
                      struct agent_error *err)
{
    static const char *const allowed[] = {"name", "flavor", "instance_type", "image", "kernel",
                                          "user_data", "request_id", "interfaces", "public_keys",
                                          "metadata", "availability_zone", "hostname",
                                          "metadata_options", "config_drive", "config_drive_format",
                                          "id", "project_id", "user_id", NULL};
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
    /* the instance UUID the controller chose (Placement's consumer) */
    if ((v = json_object_get(body, "id")) && !json_is_null(v)) {
        const char *id = json_string_value(v);
        if (!id || json_string_length(v) != 36 || !uuid_is_valid(id)) {
            r = agent_error_set(err, EINVAL, "invalid_field", "id",
                                "field 'id' must be a UUID (8-4-4-4-12 hex digits)");
            goto fail;
        }
        for (size_t i = 0; i < 36; i++)
            s.id[i] = (char)tolower((unsigned char)id[i]);
        s.id[36] = '\0';
    }
    if ((r = get_string(body, "project_id", "project_id", false, 255, &s.project_id, err)) < 0 ||
        (r = get_string(body, "user_id", "user_id", false, 255, &s.user_id, err)) < 0)
        goto fail;
    if ((s.project_id && !*s.project_id) || (s.user_id && !*s.user_id)) {
        r = agent_error_set(err, EINVAL, "invalid_field", s.project_id && !*s.project_id ? "project_id" : "user_id",
                            "field '%s' must not be empty", s.project_id && !*s.project_id ? "project_id" : "user_id");
        goto fail;
    }
    if ((r = parse_guest_fields(body, &s, err)) < 0)
        goto fail;
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
    [REQUEST_RESIZE] = "resize",
    [REQUEST_CONFIRM_RESIZE] = "confirm_resize",
    [REQUEST_REVERT_RESIZE] = "revert_resize",
    [REQUEST_MIGRATE] = "migrate",
    [REQUEST_ABORT_MIGRATION] = "abort_migration",
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

int request_resize_fields(const json_t *obj, const struct catalog *cat, struct action_request *out,
                          struct agent_error *err)
{
    json_t *f = json_object_get(obj, "flavor"), *t = json_object_get(obj, "instance_type"),
           *m = json_object_get(obj, "mode");
    int r;

    if (out->action != REQUEST_RESIZE) {
        const char *k = f ? "flavor" : t ? "instance_type" : m && out->action != REQUEST_MIGRATE ? "mode" : NULL;
        if (k)
            return agent_error_set(err, EINVAL, "invalid_field", k, "only a resize takes '%s'", k);
        return 0;
    }
    if (f && t)
        return agent_error_set(err, EINVAL, "invalid_field", "instance_type",
                               "give either 'flavor' or 'instance_type', not both");
    if (f) {
        if ((r = parse_flavor(f, &out->flavor, err)) < 0)
            return r;
        if (!json_object_get(f, "disk_gb"))
            out->flavor.disk_gb = -1; /* the instance's */
        out->instance_type = NULL;
    } else if (t) {
        const struct flavor *cf;
        if (!json_is_string(t) || !json_string_length(t) || json_string_length(t) > 64)
            return agent_error_set(err, EINVAL, "invalid_field", "instance_type",
                                   "field 'instance_type' must be a string of 1 to 64 characters");
        if (!cat || !(cf = catalog_find(cat, json_string_value(t))))
            return agent_error_set(err, EINVAL, "invalid_field", "instance_type", "unknown instance type '%s'",
                                   json_string_value(t));
        out->flavor = *cf;
        out->instance_type = json_string_value(t);
    } else {
        return agent_error_set(err, EINVAL, "missing_field", "flavor",
                               "a resize needs 'flavor' or 'instance_type'");
    }
    out->mode = NULL;
    if (m) {
        const char *ms = json_string_value(m);
        if (!ms || (strcmp(ms, "auto") && strcmp(ms, "live") && strcmp(ms, "cold")))
            return agent_error_set(err, EINVAL, "invalid_field", "mode", "field 'mode' must be auto, live or cold");
        out->mode = ms;
    }
    return 0;
}

bool request_host_name_valid(const char *s, size_t len)
{
    if (!s || !len || len > HOST_NAME_MAX_LEN || strlen(s) != len)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= '0' && s[i] <= '9') ||
              s[i] == '.' || s[i] == '_' || s[i] == '-'))
            return false;
    return true;
}

static int int_field(const json_t *obj, const char *key, int64_t lo, int64_t hi, int64_t *out,
                     struct agent_error *err)
{
    json_t *v = json_object_get(obj, key);

    if (!v)
        return 0;
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
        return agent_error_set(err, EINVAL, "invalid_field", key, "field '%s' must be an integer from %lld to %lld",
                               key, (long long)lo, (long long)hi);
    *out = json_integer_value(v);
    return 0;
}

int request_migrate_fields(const json_t *obj, struct action_request *out, struct agent_error *err)
{
    static const char *const keys[] = {"target", "max_downtime_ms", "completion_timeout_s", "postcopy"};
    json_t *t = json_object_get(obj, "target"), *m = json_object_get(obj, "mode"),
           *pc = json_object_get(obj, "postcopy");
    int r;

    out->target = out->postcopy = NULL;
    out->max_downtime_ms = out->completion_timeout_s = 0;
    if (out->action != REQUEST_MIGRATE) {
        for (size_t i = 0; i < ARRAY_SIZE(keys); i++)
            if (json_object_get(obj, keys[i]))
                return agent_error_set(err, EINVAL, "invalid_field", keys[i], "only a migrate takes '%s'", keys[i]);
        return 0;
    }
    if (!t)
        return agent_error_set(err, EINVAL, "missing_field", "target", "a migrate needs 'target' (a host name)");
    if (!json_is_string(t) || !request_host_name_valid(json_string_value(t), json_string_length(t)))
        return agent_error_set(err, EINVAL, "invalid_field", "target",
                               "field 'target' must be a host name of 1 to %d characters [A-Za-z0-9._-]",
                               HOST_NAME_MAX_LEN);
    out->target = json_string_value(t);
    out->mode = NULL;
    if (m) {
        const char *ms = json_string_value(m);
        if (!ms || (strcmp(ms, "live") && strcmp(ms, "cold")))
            return agent_error_set(err, EINVAL, "invalid_field", "mode", "field 'mode' must be live or cold");
        out->mode = ms;
    }
    if ((r = int_field(obj, "max_downtime_ms", MIGRATE_DOWNTIME_MIN_MS, MIGRATE_DOWNTIME_MAX_MS,
                       &out->max_downtime_ms, err)) < 0)
        return r;
    out->completion_timeout_s = 0;
    if (json_object_get(obj, "completion_timeout_s")) {
        if ((r = int_field(obj, "completion_timeout_s", 0, MIGRATE_COMPLETION_MAX_S, &out->completion_timeout_s,
                           err)) < 0)
            return r;
        if (out->completion_timeout_s == 0)
            out->completion_timeout_s = -1; /* asked for none */
    }
    if (pc) {
        const char *ps = json_string_value(pc);
        if (!ps || (strcmp(ps, "never") && strcmp(ps, "auto") && strcmp(ps, "always")))
            return agent_error_set(err, EINVAL, "invalid_field", "postcopy",
                                   "field 'postcopy' must be never, auto or always");
        out->postcopy = ps;
    }
    if (out->mode && !strcmp(out->mode, "cold")) {
        const char *k = json_object_get(obj, "max_downtime_ms")        ? "max_downtime_ms"
                        : json_object_get(obj, "completion_timeout_s") ? "completion_timeout_s"
                        : pc                                           ? "postcopy"
                                                                       : NULL;
        if (k)
            return agent_error_set(err, EINVAL, "invalid_field", k, "a cold migration takes no '%s'", k);
    }
    return 0;
}

int request_action_parse(const json_t *body, const char *idem, const struct catalog *cat,
                         struct action_request *out, struct agent_error *err)
{
    static const char *const allowed[] = {"action", "request_id", "timeout", "force", "flavor",
                                          "instance_type", "mode", "target", "max_downtime_ms",
                                          "completion_timeout_s", "postcopy", NULL};
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
                               "field 'action' must be start, stop, reboot, resize, confirm_resize, "
                               "revert_resize, migrate or abort_migration");
    if ((r = request_action_options(body, &a, err)) < 0 || (r = request_resize_fields(body, cat, &a, err)) < 0 ||
        (r = request_migrate_fields(body, &a, err)) < 0 ||
        (r = request_id_resolve(body, idem, &a.request_id, err)) < 0)
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

static int command_action(const json_t *cmd, enum request_action act, const struct catalog *cat,
                          struct command_request *c, struct agent_error *err)
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
    int r = request_action_options(cmd, &c->action, err);
    if (r == 0)
        r = request_resize_fields(cmd, cat, &c->action, err);
    return r < 0 ? r : request_migrate_fields(cmd, &c->action, err);
}

int request_command_parse(const json_t *cmd, const struct catalog *cat, struct command_request *out,
                          struct agent_error *err)
{
    static const char *const allowed[] = {"op",     "request_id",      "instance_id",          "instance",
                                          "timeout", "force",          "flavor",               "instance_type",
                                          "mode",    "target",         "max_downtime_ms",      "completion_timeout_s",
                                          "postcopy", NULL};
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
                               "field 'op' must be launch, start, stop, reboot, terminate, resize, "
                               "confirm_resize, revert_resize, migrate or abort_migration");
    if (!(v = json_object_get(cmd, "request_id")))
        return agent_error_set(err, EINVAL, "missing_field", "request_id", "field 'request_id' is required on the bus");
    c.request_id = json_string_value(v);
    if ((r = request_id_check(c.request_id, json_string_length(v), "request_id", err)) < 0)
        return r;
    r = !strcmp(op, "launch") ? command_launch(cmd, cat, &c, err) : command_action(cmd, act, cat, &c, err);
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
