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
    free(spec->ifaces);
    json_decref(spec->public_keys);
    json_decref(spec->metadata);
    free(spec->hostname);
    free(spec->availability_zone);
    free(spec->project_id);
    free(spec->user_id);
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

bool hostname_is_valid(const char *s)
{
    size_t label = 0, total = 0;
    char prev = '.';

    if (!s || !*s)
        return false;
    for (const char *p = s; *p; p++, total++) {
        char c = *p;
        if (c == '.') {
            if (!label || prev == '-')
                return false;
            label = 0;
        } else if (isalnum((unsigned char)c) || c == '-') {
            if (c == '-' && !label)
                return false;
            if (++label > 63)
                return false;
        } else {
            return false;
        }
        prev = c;
    }
    return total <= HOSTNAME_MAX && label && prev != '-';
}

json_t *instance_ports_to_json(const struct instance *inst)
{
    json_t *a = json_array();

    for (size_t i = 0; a && i < inst->n_ports; i++) {
        const struct port *p = &inst->ports[i];
        json_array_append_new(a, json_pack("{s:s, s:s, s:o, s:o, s:s, s:s, s:s}", "network", p->network,
                                           "mac", p->mac, "ip", p->ip[0] ? json_string(p->ip) : json_null(),
                                           "mtu", p->mtu ? json_integer(p->mtu) : json_null(), "device",
                                           p->device, "port_id", p->port_id, "state", p->state));
    }
    return a;
}

static json_t *md_options_to_json(const struct md_options *m)
{
    json_t *o = json_object();

    if (m->http_tokens[0])
        json_object_set_new(o, "http_tokens", json_string(m->http_tokens));
    if (m->http_endpoint[0])
        json_object_set_new(o, "http_endpoint", json_string(m->http_endpoint));
    if (m->hop_limit)
        json_object_set_new(o, "http_put_response_hop_limit", json_integer(m->hop_limit));
    return o;
}

/* The store's "resize" member of extra (what ST_ALLOCATED reads too:
 * $.resize.pending and $.resize.old_flavor.*; agent/store.c). */
static json_t *resize_info_to_json(const struct resize_info *r)
{
    json_t *o = json_pack("{s:b, s:s, s:{s:I, s:I, s:I}, s:b, s:I}", "pending", r->pending, "mode", r->mode,
                          "old_flavor", "vcpus", (json_int_t)r->old_flavor.vcpus, "memory_mb",
                          (json_int_t)r->old_flavor.memory_mb, "disk_gb", (json_int_t)r->old_flavor.disk_gb,
                          "power_on", r->power_on, "resized_ms", (json_int_t)r->resized_ms);

    if (r->reverting)
        json_object_set_new(o, "reverting", json_true());

    set_opt_str(o, "old_instance_type", r->old_instance_type);
    if (r->migration_uuid[0])
        json_object_set_new(o, "migration_uuid", json_string(r->migration_uuid));
    return o;
}

static void resize_info_from_json(const json_t *o, struct resize_info *r)
{
    const json_t *f = json_object_get(o, "old_flavor");
    const char *s;

    if (!json_is_object(o))
        return;
    r->pending = json_is_true(json_object_get(o, "pending"));
    if ((s = json_string_value(json_object_get(o, "mode"))))
        strscpy(r->mode, s, sizeof(r->mode));
    r->old_flavor.vcpus = json_integer_value(json_object_get(f, "vcpus"));
    r->old_flavor.memory_mb = json_integer_value(json_object_get(f, "memory_mb"));
    r->old_flavor.disk_gb = json_integer_value(json_object_get(f, "disk_gb"));
    r->old_instance_type = dup_member(o, "old_instance_type");
    r->power_on = json_is_true(json_object_get(o, "power_on"));
    r->reverting = json_is_true(json_object_get(o, "reverting"));
    r->resized_ms = json_integer_value(json_object_get(o, "resized_ms"));
    if ((s = json_string_value(json_object_get(o, "migration_uuid"))))
        strscpy(r->migration_uuid, s, sizeof(r->migration_uuid));
}

/* The store's "migration" member of extra (issue 13). */
static json_t *mig_info_to_json(const struct migration_info *m)
{
    json_t *o = json_pack("{s:b, s:s, s:s, s:s, s:s, s:b}", "pending", m->pending, "id", m->id, "role", m->role,
                          "mode", m->mode, "peer", m->peer, "power_on", m->power_on);

    if (m->max_downtime_ms)
        json_object_set_new(o, "max_downtime_ms", json_integer(m->max_downtime_ms));
    if (m->completion_timeout_s)
        json_object_set_new(o, "completion_timeout_s", json_integer(m->completion_timeout_s));
    if (m->postcopy[0])
        json_object_set_new(o, "postcopy", json_string(m->postcopy));
    if (m->peer_uri[0])
        json_object_set_new(o, "peer_uri", json_string(m->peer_uri));
    if (m->peer_migrate_uri[0])
        json_object_set_new(o, "peer_migrate_uri", json_string(m->peer_migrate_uri));
    if (m->peer_instances_dir[0])
        json_object_set_new(o, "peer_instances_dir", json_string(m->peer_instances_dir));
    if (m->peer_image_dir[0])
        json_object_set_new(o, "peer_image_dir", json_string(m->peer_image_dir));
    if (m->deadline_ms)
        json_object_set_new(o, "deadline_ms", json_integer(m->deadline_ms));
    return o;
}

static void copy_member(const json_t *o, const char *key, char *buf, size_t size)
{
    const char *s = json_string_value(json_object_get(o, key));

    if (s)
        strscpy(buf, s, size);
}

static void mig_info_from_json(const json_t *o, struct migration_info *m)
{
    if (!json_is_object(o))
        return;
    m->pending = json_is_true(json_object_get(o, "pending"));
    copy_member(o, "id", m->id, sizeof(m->id));
    copy_member(o, "role", m->role, sizeof(m->role));
    copy_member(o, "mode", m->mode, sizeof(m->mode));
    copy_member(o, "peer", m->peer, sizeof(m->peer));
    m->power_on = json_is_true(json_object_get(o, "power_on"));
    m->max_downtime_ms = json_integer_value(json_object_get(o, "max_downtime_ms"));
    m->completion_timeout_s = json_integer_value(json_object_get(o, "completion_timeout_s"));
    copy_member(o, "postcopy", m->postcopy, sizeof(m->postcopy));
    copy_member(o, "peer_uri", m->peer_uri, sizeof(m->peer_uri));
    copy_member(o, "peer_migrate_uri", m->peer_migrate_uri, sizeof(m->peer_migrate_uri));
    copy_member(o, "peer_instances_dir", m->peer_instances_dir, sizeof(m->peer_instances_dir));
    copy_member(o, "peer_image_dir", m->peer_image_dir, sizeof(m->peer_image_dir));
    m->deadline_ms = json_integer_value(json_object_get(o, "deadline_ms"));
}

bool instance_is_gone(const struct instance *inst)
{
    return !strcmp(inst->state, "terminated") || !strcmp(inst->state, "migrated");
}

char *instance_extra_to_text(const struct instance *inst)
{
    json_t *o = json_object();
    char *text;

    set_opt_str(o, "hostname", inst->hostname);
    set_opt_str(o, "availability_zone", inst->availability_zone);
    json_object_set_new(o, "config_drive", json_boolean(inst->config_drive));
    if (inst->config_drive_format[0])
        json_object_set_new(o, "config_drive_format", json_string(inst->config_drive_format));
    if (inst->public_keys)
        json_object_set(o, "public_keys", inst->public_keys);
    if (inst->metadata)
        json_object_set(o, "metadata", inst->metadata);
    json_object_set_new(o, "metadata_options", md_options_to_json(&inst->md_opts));
    if (inst->project_id[0])
        json_object_set_new(o, "project_id", json_string(inst->project_id));
    if (inst->user_id[0])
        json_object_set_new(o, "user_id", json_string(inst->user_id));
    if (inst->max_vcpus)
        json_object_set_new(o, "max_vcpus", json_integer(inst->max_vcpus));
    if (inst->max_memory_mb)
        json_object_set_new(o, "max_memory_mb", json_integer(inst->max_memory_mb));
    if (inst->resize.pending || inst->resize.migration_uuid[0])
        json_object_set_new(o, "resize", resize_info_to_json(&inst->resize));
    if (inst->mig.id[0])
        json_object_set_new(o, "migration", mig_info_to_json(&inst->mig));
    text = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(o);
    return text;
}

int instance_extra_from_text(const char *text, struct instance *inst)
{
    json_t *o, *v, *mo;
    const char *s;

    if (!text)
        return 0;
    if (!(o = json_loads(text, 0, NULL)))
        return -EINVAL;
    inst->hostname = dup_member(o, "hostname");
    inst->availability_zone = dup_member(o, "availability_zone");
    inst->config_drive = json_is_true(json_object_get(o, "config_drive"));
    if ((s = json_string_value(json_object_get(o, "config_drive_format"))))
        strscpy(inst->config_drive_format, s, sizeof(inst->config_drive_format));
    if (json_is_object(v = json_object_get(o, "public_keys")))
        inst->public_keys = json_incref(v);
    if (json_is_object(v = json_object_get(o, "metadata")))
        inst->metadata = json_incref(v);
    mo = json_object_get(o, "metadata_options");
    if ((s = json_string_value(json_object_get(mo, "http_tokens"))))
        strscpy(inst->md_opts.http_tokens, s, sizeof(inst->md_opts.http_tokens));
    if ((s = json_string_value(json_object_get(mo, "http_endpoint"))))
        strscpy(inst->md_opts.http_endpoint, s, sizeof(inst->md_opts.http_endpoint));
    inst->md_opts.hop_limit = (int)json_integer_value(json_object_get(mo, "http_put_response_hop_limit"));
    if ((s = json_string_value(json_object_get(o, "project_id"))))
        strscpy(inst->project_id, s, sizeof(inst->project_id));
    if ((s = json_string_value(json_object_get(o, "user_id"))))
        strscpy(inst->user_id, s, sizeof(inst->user_id));
    inst->max_vcpus = json_integer_value(json_object_get(o, "max_vcpus"));
    inst->max_memory_mb = json_integer_value(json_object_get(o, "max_memory_mb"));
    resize_info_from_json(json_object_get(o, "resize"), &inst->resize);
    mig_info_from_json(json_object_get(o, "migration"), &inst->mig);
    json_decref(o);
    return 0;
}

json_t *instance_to_json(const struct instance *inst)
{
    char created[32], updated[32];
    json_t *j;

    format_rfc3339_ms(inst->created_ms, created);
    format_rfc3339_ms(inst->updated_ms, updated);
    j = json_pack("{s:s, s:s, s:s, s:s, s:o, s:{s:I, s:I, s:I}, s:o, s:o, s:b, s:o, s:s, s:s, s:o}",
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
    if (!j)
        return NULL;
    json_object_set_new(j, "interfaces", instance_ports_to_json(inst));
    json_object_set_new(j, "hostname", inst->hostname ? json_string(inst->hostname) : json_null());
    json_object_set_new(j, "availability_zone",
                        inst->availability_zone ? json_string(inst->availability_zone) : json_null());
    json_object_set_new(j, "config_drive", json_boolean(inst->config_drive));
    json_object_set_new(j, "metadata", inst->metadata ? json_incref(inst->metadata) : json_object());
    json_object_set_new(j, "key_names", json_array());
    if (inst->public_keys) {
        const char *k;
        json_t *v;
        json_object_foreach(inst->public_keys, k, v)
            json_array_append_new(json_object_get(j, "key_names"), json_string(k));
    }
    json_object_set_new(j, "metadata_options", md_options_to_json(&inst->md_opts));
    json_object_set_new(j, "project_id", inst->project_id[0] ? json_string(inst->project_id) : json_null());
    json_object_set_new(j, "user_id", inst->user_id[0] ? json_string(inst->user_id) : json_null());
    json_object_set_new(j, "max_vcpus", inst->max_vcpus ? json_integer(inst->max_vcpus) : json_null());
    json_object_set_new(j, "max_memory_mb", inst->max_memory_mb ? json_integer(inst->max_memory_mb) : json_null());
    if (inst->resize.pending) {
        const struct resize_info *rz = &inst->resize;
        char at[32] = "";
        if (rz->resized_ms)
            format_rfc3339_ms(rz->resized_ms, at);
        json_object_set_new(j, "resize",
                            json_pack("{s:b, s:s, s:{s:I, s:I, s:I}, s:o, s:o}", "pending", 1, "mode", rz->mode,
                                      "old_flavor", "vcpus", (json_int_t)rz->old_flavor.vcpus, "memory_mb",
                                      (json_int_t)rz->old_flavor.memory_mb, "disk_gb",
                                      (json_int_t)rz->old_flavor.disk_gb, "old_instance_type",
                                      rz->old_instance_type ? json_string(rz->old_instance_type) : json_null(),
                                      "resized_at", rz->resized_ms ? json_string(at) : json_null()));
    } else {
        json_object_set_new(j, "resize", json_null());
    }
    if (inst->mig.id[0])
        json_object_set_new(j, "migration",
                            json_pack("{s:s, s:b, s:s, s:s, s:s}", "id", inst->mig.id, "pending", inst->mig.pending,
                                      "role", inst->mig.role, "mode", inst->mig.mode, "peer", inst->mig.peer));
    else
        json_object_set_new(j, "migration", json_null());
    return j;
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
    json_t *result = op->result ? json_loads(op->result, 0, NULL) : NULL;
    json_t *j = json_pack("{s:s, s:s, s:s, s:o, s:s, s:o, s:o, s:s, s:s}", "id", op->id, "type", op->type,
                          "instance_id", op->instance_uuid, "request_id",
                          op->request_id ? json_string(op->request_id) : json_null(), "state", op->state,
                          "step", op->step[0] ? json_string(op->step) : json_null(), "error", error,
                          "created_at", created, "updated_at", updated);

    /* a resize's outcome (issue 12); absent for the other types */
    if (j && result)
        json_object_set_new(j, "result", result);
    else
        json_decref(result);
    return j;
}

void instance_release(struct instance *inst)
{
    free(inst->name);
    free(inst->instance_type);
    free(inst->user_data);
    free(inst->console_log);
    free(inst->disk_path);
    free(inst->fault);
    free(inst->hostname);
    free(inst->availability_zone);
    json_decref(inst->public_keys);
    json_decref(inst->metadata);
    free(inst->ports);
    free(inst->resize.old_instance_type);
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
    /* deep copies: the copy may go to another thread */
    dst->public_keys = src->public_keys ? json_deep_copy(src->public_keys) : NULL;
    dst->metadata = src->metadata ? json_deep_copy(src->metadata) : NULL;
    dst->ports = NULL;
    dst->hostname = dst->availability_zone = NULL;
    dst->resize.old_instance_type = NULL;
    if (src->n_ports && (dst->ports = malloc(src->n_ports * sizeof(*dst->ports))))
        memcpy(dst->ports, src->ports, src->n_ports * sizeof(*dst->ports));
    if ((src->n_ports && !dst->ports) || (src->public_keys && !dst->public_keys) ||
        (src->metadata && !dst->metadata) || dup_opt(&dst->hostname, src->hostname) ||
        dup_opt(&dst->availability_zone, src->availability_zone)) {
        dst->name = dst->instance_type = dst->user_data = dst->console_log = dst->disk_path = dst->fault = NULL;
        instance_release(dst);
        return -ENOMEM;
    }
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
        dup_opt(&dst->boot.cmdline, src->boot.cmdline) ||
        dup_opt(&dst->resize.old_instance_type, src->resize.old_instance_type)) {
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

void catalog_ceiling(const struct catalog *cat, int64_t cpus, int64_t memory_mb, struct flavor *out)
{
    memset(out, 0, sizeof(*out));
    for (size_t i = 0; cat && i < cat->n; i++) {
        const struct flavor *f = &cat->entries[i].flavor;
        if ((cpus > 0 && f->vcpus > cpus) || (memory_mb > 0 && f->memory_mb > memory_mb))
            continue;
        if (f->vcpus > out->vcpus)
            out->vcpus = f->vcpus;
        if (f->memory_mb > out->memory_mb)
            out->memory_mb = f->memory_mb;
    }
}

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
