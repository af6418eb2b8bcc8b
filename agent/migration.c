/* migration.c: see migration.h. */
#include "agent/migration.h"

#include <stdlib.h>
#include <string.h>

#include "agent/request.h"

static const char *const kind_names[MIG_KIND_COUNT] = {
    [MIG_PREPARE] = "migration_prepare", [MIG_PREPARED] = "migration_prepared",
    [MIG_COMMIT] = "migration_commit",   [MIG_COMMITTED] = "migration_committed",
    [MIG_SETTLE] = "migration_settle",   [MIG_SETTLED] = "migration_settled",
};

static const char *const action_names[MIG_ACT_COUNT] = {
    [MIG_ACT_NONE] = "",          [MIG_ACT_LIVE_DONE] = "live_done", [MIG_ACT_COLD_START] = "cold_start",
    [MIG_ACT_ABORT] = "abort",    [MIG_ACT_CONFIRM] = "confirm",     [MIG_ACT_REVERT] = "revert",
};

/* Which actions each kind takes. */
static bool action_fits(enum mig_kind k, enum mig_action a)
{
    switch (k) {
    case MIG_COMMIT:
    case MIG_COMMITTED:
        return a == MIG_ACT_LIVE_DONE || a == MIG_ACT_COLD_START || a == MIG_ACT_ABORT;
    case MIG_SETTLE:
    case MIG_SETTLED:
        return a == MIG_ACT_CONFIRM || a == MIG_ACT_REVERT;
    default:
        return a == MIG_ACT_NONE;
    }
}

const char *mig_kind_name(enum mig_kind k)
{
    return (unsigned)k < MIG_KIND_COUNT ? kind_names[k] : "";
}

const char *mig_action_name(enum mig_action a)
{
    return (unsigned)a < MIG_ACT_COUNT ? action_names[a] : "";
}

bool mig_is_peer_op(const char *op)
{
    return op && !strncmp(op, "migration_", 10);
}

/* ---- field helpers ---- */

#define STR_MAX 4096 /* any string of the instance's */

static int bad(struct agent_error *err, const char *pfx, const char *key, const char *what)
{
    char field[96];

    snprintf(field, sizeof(field), "%s%s", pfx, key);
    return agent_error_set(err, EINVAL, "invalid_field", field, "field '%s' %s", field, what);
}

static int missing(struct agent_error *err, const char *pfx, const char *key)
{
    char field[96];

    snprintf(field, sizeof(field), "%s%s", pfx, key);
    return agent_error_set(err, EINVAL, "missing_field", field, "field '%s' is required", field);
}

/* A string member into buf (size bytes, NUL excluded from max): 0, 1 when
 * absent and optional, or -EINVAL. */
static int get_str(const json_t *o, const char *key, const char *pfx, bool required, char *buf, size_t size,
                   struct agent_error *err)
{
    json_t *v = json_object_get(o, key);

    if (!v)
        return required ? missing(err, pfx, key) : 1;
    if (!json_is_string(v) || json_string_length(v) >= size || strlen(json_string_value(v)) != json_string_length(v))
        return bad(err, pfx, key, "must be a string without NUL, shorter than the limit");
    strscpy(buf, json_string_value(v), size);
    return 0;
}

/* An optional string member, duplicated (NULL when absent). */
static int dup_str(const json_t *o, const char *key, const char *pfx, size_t max, char **out,
                   struct agent_error *err)
{
    json_t *v = json_object_get(o, key);

    *out = NULL;
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_string(v) || json_string_length(v) > max || strlen(json_string_value(v)) != json_string_length(v))
        return bad(err, pfx, key, "must be a string without NUL, within the limit");
    if (!(*out = strdup(json_string_value(v))))
        return -ENOMEM;
    return 0;
}

static int get_int(const json_t *o, const char *key, const char *pfx, bool required, int64_t lo, int64_t hi,
                   int64_t *out, struct agent_error *err)
{
    json_t *v = json_object_get(o, key);
    char what[96];

    if (!v) {
        if (required)
            return missing(err, pfx, key);
        return 0;
    }
    snprintf(what, sizeof(what), "must be an integer from %lld to %lld", (long long)lo, (long long)hi);
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
        return bad(err, pfx, key, what);
    *out = json_integer_value(v);
    return 0;
}

static int only_keys(const json_t *o, const char *const *allowed, const char *pfx, struct agent_error *err)
{
    const char *k;
    json_t *v;

    json_object_foreach((json_t *)o, k, v) {
        bool ok = false;
        for (size_t i = 0; allowed[i] && !ok; i++)
            ok = !strcmp(k, allowed[i]);
        if (!ok) {
            char field[96];
            snprintf(field, sizeof(field), "%s%.64s", pfx, k);
            utf8_scrub(field);
            return agent_error_set(err, EINVAL, "unknown_field", field, "unknown field '%s'", field);
        }
    }
    return 0;
}

/* ---- the instance as it travels ---- */

static json_t *ports_to_json(const struct instance *inst)
{
    json_t *a = json_array();

    for (size_t i = 0; i < inst->n_ports; i++) {
        const struct port *p = &inst->ports[i];
        json_array_append_new(a, json_pack("{s:s, s:i, s:s, s:s, s:s, s:s, s:i}", "port_id", p->port_id, "index",
                                           p->index, "network", p->network, "mac", p->mac, "ip", p->ip, "device",
                                           p->device, "mtu", p->mtu));
    }
    return a;
}

json_t *mig_instance_to_json(const struct instance *inst)
{
    char *extra = instance_extra_to_text(inst);
    json_t *ex = extra ? json_loads(extra, 0, NULL) : NULL;
    json_t *j;

    free(extra);
    if (ex) {
        /* the source's own bookkeeping does not travel */
        json_object_del(ex, "resize");
        json_object_del(ex, "migration");
    }
    j = json_pack("{s:s, s:s, s:s?, s:{s:I, s:I, s:I}, s:s?, s:o, s:s?, s:o, s:o, s:I}", "uuid", inst->uuid,
                  "ec2_id", inst->ec2_id, "name", inst->name, "flavor", "vcpus", (json_int_t)inst->flavor.vcpus,
                  "memory_mb", (json_int_t)inst->flavor.memory_mb, "disk_gb", (json_int_t)inst->flavor.disk_gb,
                  "instance_type", inst->instance_type, "boot", boot_source_to_json(&inst->boot), "user_data",
                  inst->user_data, "extra", ex ? ex : json_object(), "ports", ports_to_json(inst), "created_ms",
                  (json_int_t)inst->created_ms);
    return j;
}

static int port_from_json(const json_t *o, size_t i, struct port *p, struct agent_error *err)
{
    static const char *const keys[] = {"port_id", "index", "network", "mac", "ip", "device", "mtu", NULL};
    char pfx[48], mac[18];
    int64_t v = 0;
    int r;

    snprintf(pfx, sizeof(pfx), "instance.ports[%zu].", i);
    if (!json_is_object(o))
        return agent_error_set(err, EINVAL, "invalid_field", pfx, "each port must be an object");
    if ((r = only_keys(o, keys, pfx, err)) < 0 ||
        (r = get_str(o, "port_id", pfx, true, p->port_id, sizeof(p->port_id), err)) < 0 ||
        (r = get_str(o, "network", pfx, true, p->network, sizeof(p->network), err)) < 0 ||
        (r = get_str(o, "mac", pfx, true, mac, sizeof(mac), err)) < 0 ||
        (r = get_str(o, "ip", pfx, false, p->ip, sizeof(p->ip), err)) < 0 ||
        (r = get_str(o, "device", pfx, true, p->device, sizeof(p->device), err)) < 0)
        return r;
    if (!uuid_is_valid(p->port_id))
        return bad(err, pfx, "port_id", "must be a UUID");
    if (!p->network[0])
        return bad(err, pfx, "network", "must not be empty");
    if (request_mac_parse(mac, p->mac, NULL) < 0)
        return bad(err, pfx, "mac", "must be a unicast MAC aa:bb:cc:dd:ee:ff");
    if (p->ip[0] && request_ipv4_check(p->ip) < 0)
        return bad(err, pfx, "ip", "must be an IPv4 address");
    if (strncmp(p->device, "tap", 3) || strlen(p->device) < 4 || strspn(p->device + 3, "0123456789abcdef-") != strlen(p->device + 3))
        return bad(err, pfx, "device", "must be tap followed by the port id's characters");
    if ((r = get_int(o, "index", pfx, true, 0, IFACE_MAX - 1, &v, err)) < 0)
        return r;
    if (v != (int64_t)i)
        return bad(err, pfx, "index", "must be the port's position");
    p->index = (int)v;
    v = 0;
    if ((r = get_int(o, "mtu", pfx, false, 0, 65535, &v, err)) < 0)
        return r;
    if (v && v < 68)
        return bad(err, pfx, "mtu", "must be 0 or 68 to 65535");
    p->mtu = (int)v;
    strscpy(p->state, "reserved", sizeof(p->state));
    return 0;
}

static int extra_from_json(const json_t *ex, struct instance *inst, struct agent_error *err)
{
    static const char *const keys[] = {"hostname", "availability_zone", "config_drive", "config_drive_format",
                                       "public_keys", "metadata", "metadata_options", "project_id", "user_id",
                                       "max_vcpus", "max_memory_mb", NULL};
    const char *pfx = "instance.extra.", *k;
    json_t *v;
    int r;

    if (!json_is_object(ex))
        return agent_error_set(err, EINVAL, "invalid_field", "instance.extra", "field 'instance.extra' must be an object");
    if ((r = only_keys(ex, keys, pfx, err)) < 0)
        return r;
    if ((v = json_object_get(ex, "hostname")) &&
        (!json_is_string(v) || !hostname_is_valid(json_string_value(v))))
        return bad(err, pfx, "hostname", "must be an RFC 1123 host name");
    if ((v = json_object_get(ex, "availability_zone")) &&
        (!json_is_string(v) || !json_string_length(v) || json_string_length(v) > AZ_MAX))
        return bad(err, pfx, "availability_zone", "must be a string of 1 to 255 characters");
    if ((v = json_object_get(ex, "config_drive")) && !json_is_boolean(v))
        return bad(err, pfx, "config_drive", "must be a boolean");
    if ((v = json_object_get(ex, "config_drive_format")) &&
        (!json_is_string(v) ||
         (strcmp(json_string_value(v), "config-2") && strcmp(json_string_value(v), "nocloud"))))
        return bad(err, pfx, "config_drive_format", "must be config-2 or nocloud");
    if ((v = json_object_get(ex, "public_keys"))) {
        if (!json_is_object(v) || json_object_size(v) > PUBLIC_KEYS_MAX)
            return bad(err, pfx, "public_keys", "must be an object of at most 32 keys");
        json_t *kv;
        json_object_foreach(v, k, kv) {
            if (!*k || strlen(k) > KEY_NAME_MAX || !json_is_string(kv) || json_string_length(kv) > PUBLIC_KEY_MAX)
                return bad(err, pfx, "public_keys", "holds a name or key out of bounds");
        }
    }
    (void)inst;
    return 0;
}

/* The checks above are on shapes; the values then go through the store's
 * own reader, as the source wrote them. */
static int extra_load(const json_t *ex, struct instance *inst, struct agent_error *err)
{
    json_t *v;
    const char *k;
    char *text;
    int r;

    if ((r = extra_from_json(ex, inst, err)) < 0)
        return r;
    if ((v = json_object_get(ex, "metadata"))) {
        json_t *val;
        if (!json_is_object(v) || json_object_size(v) > METADATA_ITEMS_MAX)
            return bad(err, "instance.extra.", "metadata", "must be an object of at most 128 items");
        json_object_foreach(v, k, val) {
            if (!*k || strlen(k) > METADATA_KEY_MAX || !json_is_string(val) ||
                json_string_length(val) > METADATA_VALUE_MAX)
                return bad(err, "instance.extra.", "metadata", "holds a key or value out of bounds");
        }
    }
    if ((v = json_object_get(ex, "metadata_options"))) {
        json_t *t = json_object_get(v, "http_tokens"), *e = json_object_get(v, "http_endpoint"),
               *h = json_object_get(v, "http_put_response_hop_limit");
        if (!json_is_object(v) || (t && (!json_is_string(t) || json_string_length(t) > 11)) ||
            (e && (!json_is_string(e) || json_string_length(e) > 11)) ||
            (h && (!json_is_integer(h) || json_integer_value(h) < 1 || json_integer_value(h) > 64)))
            return bad(err, "instance.extra.", "metadata_options", "is not a valid metadata_options object");
    }
    {
        static const char *const ids[] = {"project_id", "user_id"};
        for (size_t i = 0; i < 2; i++)
            if ((v = json_object_get(ex, ids[i])) && (!json_is_string(v) || json_string_length(v) > 255))
                return bad(err, "instance.extra.", ids[i], "must be a string of at most 255 characters");
    }
    {
        int64_t x = 0;
        if ((r = get_int(ex, "max_vcpus", "instance.extra.", false, 0, 4096, &x, err)) < 0 ||
            (r = get_int(ex, "max_memory_mb", "instance.extra.", false, 0, INT64_C(1) << 30, &x, err)) < 0)
            return r;
    }
    if (!(text = json_dumps(ex, JSON_COMPACT)))
        return -ENOMEM;
    r = instance_extra_from_text(text, inst);
    free(text);
    return r < 0 ? bad(err, "instance.", "extra", "cannot be read") : 0;
}

int mig_instance_from_json(const json_t *j, struct instance *out, struct agent_error *err)
{
    static const char *const keys[] = {"uuid",      "ec2_id", "name",  "flavor",     "instance_type", "boot",
                                       "user_data", "extra",  "ports", "created_ms", NULL};
    static const char *const pfx = "instance.";
    struct instance in = {0};
    json_t *f, *b, *ps;
    int64_t v;
    int r;

    if (!json_is_object(j))
        return agent_error_set(err, EINVAL, "invalid_field", "instance", "field 'instance' must be an object");
    if ((r = only_keys(j, keys, pfx, err)) < 0)
        return r;
    if ((r = get_str(j, "uuid", pfx, true, in.uuid, sizeof(in.uuid), err)) < 0)
        return r;
    if (!uuid_is_valid(in.uuid))
        return bad(err, pfx, "uuid", "must be a UUID");
    if ((r = get_str(j, "ec2_id", pfx, true, in.ec2_id, sizeof(in.ec2_id), err)) < 0)
        return r;
    if (!ec2_id_is_valid(in.ec2_id))
        return bad(err, pfx, "ec2_id", "must be i- and 17 hex digits");
    if ((r = dup_str(j, "name", pfx, INSTANCE_NAME_MAX, &in.name, err)) < 0)
        goto fail;
    if (!in.name || !in.name[0]) {
        r = in.name ? bad(err, pfx, "name", "must not be empty") : missing(err, pfx, "name");
        goto fail;
    }
    if (!json_is_object(f = json_object_get(j, "flavor"))) {
        r = f ? bad(err, pfx, "flavor", "must be an object") : missing(err, pfx, "flavor");
        goto fail;
    }
    if ((r = get_int(f, "vcpus", "instance.flavor.", true, 1, 4096, &in.flavor.vcpus, err)) < 0 ||
        (r = get_int(f, "memory_mb", "instance.flavor.", true, 16, INT64_C(1) << 30, &in.flavor.memory_mb, err)) <
            0 ||
        (r = get_int(f, "disk_gb", "instance.flavor.", true, 0, 1 << 20, &in.flavor.disk_gb, err)) < 0)
        goto fail;
    if ((r = dup_str(j, "instance_type", pfx, 64, &in.instance_type, err)) < 0)
        goto fail;
    if (!json_is_object(b = json_object_get(j, "boot"))) {
        r = b ? bad(err, pfx, "boot", "must be an object") : missing(err, pfx, "boot");
        goto fail;
    }
    {
        char *text = json_dumps(b, JSON_COMPACT);
        bool big = !text || strlen(text) > 4 * STR_MAX;
        free(text);
        if (big || boot_source_from_json(b, &in.boot) < 0) {
            r = bad(err, pfx, "boot", "must name an image or a kernel, within the limits");
            goto fail;
        }
    }
    if ((r = dup_str(j, "user_data", pfx, (USER_DATA_MAX * 4) / 3 + 4, &in.user_data, err)) < 0)
        goto fail;
    if (in.user_data && base64_decode(in.user_data, NULL, 0) < 0) {
        r = bad(err, pfx, "user_data", "must be base64");
        goto fail;
    }
    if (json_object_get(j, "extra") && (r = extra_load(json_object_get(j, "extra"), &in, err)) < 0)
        goto fail;
    if ((ps = json_object_get(j, "ports"))) {
        if (!json_is_array(ps) || json_array_size(ps) > IFACE_MAX) {
            r = bad(err, pfx, "ports", "must be an array of at most 8 ports");
            goto fail;
        }
        if (json_array_size(ps)) {
            in.ports = calloc(json_array_size(ps), sizeof(*in.ports));
            if (!in.ports) {
                r = -ENOMEM;
                goto fail;
            }
            in.n_ports = json_array_size(ps);
            for (size_t i = 0; i < in.n_ports; i++)
                if ((r = port_from_json(json_array_get(ps, i), i, &in.ports[i], err)) < 0)
                    goto fail;
            for (size_t i = 0; i < in.n_ports; i++)
                for (size_t k = 0; k < i; k++)
                    if (!strcmp(in.ports[i].mac, in.ports[k].mac) || !strcmp(in.ports[i].port_id, in.ports[k].port_id)) {
                        r = bad(err, pfx, "ports", "holds a MAC or port id twice");
                        goto fail;
                    }
        }
    }
    v = 0;
    if ((r = get_int(j, "created_ms", pfx, false, 0, INT64_MAX, &v, err)) < 0)
        goto fail;
    in.created_ms = v;
    *out = in;
    return 0;
fail:
    instance_release(&in);
    return r;
}

/* ---- messages ---- */

int mig_msg_parse(const json_t *j, struct mig_msg *out, struct agent_error *err)
{
    static const char *const keys[] = {"op",       "migration_id", "instance_id",  "from",        "mode",
                                       "instance", "power_on",     "action",       "ok",          "error",
                                       "libvirt_uri", "migrate_uri", "instances_dir", "image_dir", "request_id",
                                       NULL};
    struct mig_msg m = {0};
    const char *op;
    json_t *v;
    int r, k;

    if (!json_is_object(j))
        return agent_error_set(err, EINVAL, "invalid_json", NULL, "a message is a JSON object");
    if ((r = only_keys(j, keys, "", err)) < 0)
        return r;
    op = json_string_value(json_object_get(j, "op"));
    for (k = 0; k < MIG_KIND_COUNT; k++)
        if (op && !strcmp(op, kind_names[k]))
            break;
    if (k == MIG_KIND_COUNT)
        return agent_error_set(err, EINVAL, "invalid_field", "op", "not a migration message");
    m.kind = (enum mig_kind)k;
    if ((r = get_str(j, "migration_id", "", true, m.migration_id, sizeof(m.migration_id), err)) < 0)
        return r;
    if (!uuid_is_valid(m.migration_id))
        return bad(err, "", "migration_id", "must be a UUID");
    if ((r = get_str(j, "instance_id", "", true, m.instance_id, sizeof(m.instance_id), err)) < 0)
        return r;
    if (!uuid_is_valid(m.instance_id))
        return bad(err, "", "instance_id", "must be a UUID");
    if ((r = get_str(j, "from", "", true, m.from, sizeof(m.from), err)) < 0)
        return r;
    if (!request_host_name_valid(m.from, strlen(m.from)))
        return bad(err, "", "from", "must be a host name");
    /* per kind */
    if ((v = json_object_get(j, "action"))) {
        const char *a = json_string_value(v);
        int i;
        for (i = 1; i < MIG_ACT_COUNT; i++)
            if (a && !strcmp(a, action_names[i]))
                break;
        if (i == MIG_ACT_COUNT || !action_fits(m.kind, (enum mig_action)i))
            return bad(err, "", "action", "is not an action of this message");
        m.action = (enum mig_action)i;
    } else if (!action_fits(m.kind, MIG_ACT_NONE)) {
        return missing(err, "", "action");
    }
    if (m.kind == MIG_PREPARED || m.kind == MIG_COMMITTED || m.kind == MIG_SETTLED) {
        if (!json_is_boolean(v = json_object_get(j, "ok")))
            return v ? bad(err, "", "ok", "must be a boolean") : missing(err, "", "ok");
        m.ok = json_is_true(v);
        if (!m.ok) {
            json_t *e = json_object_get(j, "error");
            char code[sizeof(m.error.code)] = "", field[sizeof(m.error.field)] = "", msg[sizeof(m.error.message)] = "";
            if (!json_is_object(e))
                return e ? bad(err, "", "error", "must be an object") : missing(err, "", "error");
            if (get_str(e, "code", "error.", true, code, sizeof(code), err) < 0 ||
                get_str(e, "field", "error.", false, field, sizeof(field), err) < 0 ||
                get_str(e, "message", "error.", true, msg, sizeof(msg), err) < 0)
                return -EINVAL;
            strscpy(m.error.code, code, sizeof(m.error.code));
            strscpy(m.error.field, field, sizeof(m.error.field));
            strscpy(m.error.message, msg, sizeof(m.error.message));
            utf8_scrub(m.error.message);
            utf8_scrub(m.error.field);
            utf8_scrub(m.error.code);
        }
    } else if (json_object_get(j, "ok") || json_object_get(j, "error")) {
        return bad(err, "", json_object_get(j, "ok") ? "ok" : "error", "belongs to an answer only");
    }
    if (m.kind == MIG_PREPARED && m.ok) {
        if ((r = get_str(j, "libvirt_uri", "", true, m.libvirt_uri, sizeof(m.libvirt_uri), err)) < 0 ||
            (r = get_str(j, "migrate_uri", "", false, m.migrate_uri, sizeof(m.migrate_uri), err)) < 0 ||
            (r = get_str(j, "instances_dir", "", true, m.instances_dir, sizeof(m.instances_dir), err)) < 0 ||
            (r = get_str(j, "image_dir", "", false, m.image_dir, sizeof(m.image_dir), err)) < 0)
            return r;
        if (m.instances_dir[0] != '/' || strstr(m.instances_dir, "/../") || (m.image_dir[0] && m.image_dir[0] != '/'))
            return bad(err, "", "instances_dir", "must be an absolute path");
    }
    if (m.kind == MIG_PREPARE) {
        if ((r = get_str(j, "mode", "", true, m.mode, sizeof(m.mode), err)) < 0)
            return r;
        if (strcmp(m.mode, "live") && strcmp(m.mode, "cold"))
            return bad(err, "", "mode", "must be live or cold");
        if ((v = json_object_get(j, "power_on")) && !json_is_boolean(v))
            return bad(err, "", "power_on", "must be a boolean");
        m.power_on = json_is_true(v);
        if (!json_object_get(j, "instance"))
            return missing(err, "", "instance");
        if ((r = mig_instance_from_json(json_object_get(j, "instance"), &m.inst, err)) < 0)
            return r;
        if (strcmp(m.inst.uuid, m.instance_id)) {
            instance_release(&m.inst);
            return bad(err, "", "instance.uuid", "must be instance_id");
        }
    } else {
        static const char *const prep_only[] = {"instance", "mode", "power_on"};
        for (size_t i = 0; i < ARRAY_SIZE(prep_only); i++)
            if (json_object_get(j, prep_only[i]))
                return bad(err, "", prep_only[i], "belongs to migration_prepare only");
    }
    *out = m;
    return 0;
}

json_t *mig_msg_to_json(const struct mig_msg *m)
{
    json_t *j = json_pack("{s:s, s:s, s:s, s:s}", "op", mig_kind_name(m->kind), "migration_id", m->migration_id,
                          "instance_id", m->instance_id, "from", m->from);

    if (!j)
        return NULL;
    if (m->action != MIG_ACT_NONE)
        json_object_set_new(j, "action", json_string(mig_action_name(m->action)));
    switch (m->kind) {
    case MIG_PREPARE:
        json_object_set_new(j, "mode", json_string(m->mode));
        json_object_set_new(j, "power_on", json_boolean(m->power_on));
        json_object_set_new(j, "instance", mig_instance_to_json(&m->inst));
        break;
    case MIG_PREPARED:
    case MIG_COMMITTED:
    case MIG_SETTLED:
        json_object_set_new(j, "ok", json_boolean(m->ok));
        if (!m->ok) {
            json_t *e = json_pack("{s:s, s:s}", "code", m->error.code[0] ? m->error.code : "internal", "message",
                                  m->error.message);
            if (m->error.field[0])
                json_object_set_new(e, "field", json_string(m->error.field));
            json_object_set_new(j, "error", e);
        } else if (m->kind == MIG_PREPARED) {
            json_object_set_new(j, "libvirt_uri", json_string(m->libvirt_uri));
            if (m->migrate_uri[0])
                json_object_set_new(j, "migrate_uri", json_string(m->migrate_uri));
            json_object_set_new(j, "instances_dir", json_string(m->instances_dir));
            if (m->image_dir[0])
                json_object_set_new(j, "image_dir", json_string(m->image_dir));
        }
        break;
    default:
        break;
    }
    return j;
}

void mig_msg_release(struct mig_msg *m)
{
    instance_release(&m->inst);
    memset(m, 0, sizeof(*m));
}
