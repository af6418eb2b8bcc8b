/* launch.c: the launch operation (ops-internal.h).
 *
 *   claimed -> [image] -> [ports] -> [config-drive] -> defined -> started
 *   image: the image cache has the image, pinned for this instance; only
 *   for images by id, url or glance_id. ports: every interface plugged
 *   (net-plug, on the hypervisor layer's threads; idempotent, bounded).
 *   config-drive: config.iso written (when asked). A failure rolls back
 *   (domain, disk, ports unplugged, config.iso) and leaves the instance in
 *   error; its ports stay reserved until it is terminated. */
#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

#include "agent/host.h"
#include "agent/localfile.h"
#include "agent/ops/ops-internal.h"
#include "agent/resources.h"
#include "net-plug/netplug.h"

static const enum op_step launch_steps[] = {STEP_CLAIMED, STEP_IMAGE, STEP_PORTS, STEP_CONFIG_DRIVE,
                                            STEP_DEFINED, STEP_STARTED, STEP_NONE};

void ops_launch_fail(struct op_run *r, const struct agent_error *e)
{
    ops_log(LOG_WARN, "launch failed: rolling back", r, e->message);
    r->fail = *e;
    r->failing = true;
    /* an incoming migration's rollback never touches a running domain */
    ops_queue_job(r, r->type->kind == OP_MIGRATE_IN ? JOB_MIG_IN_CLEANUP : JOB_CLEANUP);
}

static void on_image(int status, const struct imgcache_image_info *info, const struct agent_error *err,
                     void *opaque)
{
    struct op_run *r = opaque;

    r->job_running = false;
    if (r->done || r->ops->stopping) {
        ops_run_release(r);
        return;
    }
    if (status < 0) {
        ops_launch_fail(r, err);
        return;
    }
    free(r->base_path);
    r->base_path = strdup(info->path);
    strscpy(r->base_format, info->format, sizeof(r->base_format));
    r->base_vsize = info->virtual_size;
    if (!r->inst.boot.image_id)
        ops_set_str(&r->inst.boot.image_id, info->id);
    ops_log(LOG_INFO, "image ready", r, NULL);
    ops_run_advance(r);
}

/* Launch from the image cache: get (or find) the image, pinned for this
 * instance, before the domain is defined (also a migration's target:
 * migrate.c). */
void ops_acquire_image(struct op_run *r)
{
    struct imgcache *ic = r->ops->d.imgcache;
    const struct boot_source *b = &r->inst.boot;
    struct imgcache_request req = {0};
    struct agent_error err = {0};
    char id[IMGCACHE_ID_LEN];
    int rc;

    if (!ic) {
        agent_error_set(&err, ENOTSUP, "not_supported", "image", "the image cache is not running");
        ops_launch_fail(r, &err);
        return;
    }
    if (b->image_url) {
        req.url = b->image_url;
        req.digest = b->image_digest;
    } else if (b->image_glance_id) {
        req.glance_id = b->image_glance_id;
    } else {
        req.id = b->image_id;
    }
    r->job_running = true;
    rc = imgcache_acquire(ic, &req, r->inst.uuid, on_image, r, id, &err);
    if (rc == 0)
        strscpy(r->cache_id, id, sizeof(r->cache_id));
    if (rc < 0) {
        r->job_running = false;
        ops_launch_fail(r, &err);
    }
}

/* After the image: ports, the config drive, the define, each when due. */
static void before_define(struct op_run *r)
{
    if (r->inst.n_ports && r->step < STEP_PORTS && r->ops->reconciling) {
        /* a reconcile's netplug_sync may be running: plug after it (the
         * reconcile advances parked runs when it ends) */
        r->parked = true;
        ops_log(LOG_INFO, "launch waits for the reconcile to plug its ports", r, NULL);
    } else if (r->inst.n_ports && r->step < STEP_PORTS)
        ops_queue_job(r, JOB_PLUG);
    else if (r->inst.config_drive && r->step < STEP_CONFIG_DRIVE)
        ops_queue_job(r, JOB_CONFIG_DRIVE);
    else
        ops_queue_job(r, JOB_DEFINE);
}

static void launch_advance(struct op_run *r)
{
    bool cached = boot_source_uses_cache(&r->inst.boot);

    switch (r->step) {
    case STEP_CLAIMED:
    case STEP_IMAGE:
    case STEP_PORTS:
    case STEP_CONFIG_DRIVE:
        /* a resumed launch takes its pinned image back first: the define needs it */
        if (cached && !r->base_path)
            ops_acquire_image(r);
        else if (cached && r->step == STEP_CLAIMED && ops_journal_step(r, STEP_IMAGE) < 0)
            return; /* parked */
        else
            before_define(r);
        break;
    case STEP_DEFINED:
        ops_queue_job(r, JOB_START);
        break;
    default:
        ops_queue_job(r, JOB_POWER); /* started: settle on what libvirt says */
        break;
    }
}

static void launch_job_done(struct op_run *r, const struct job *j)
{
    if (j->result < 0) {
        ops_launch_fail(r, &j->err);
        return;
    }
    switch (j->kind) {
    case JOB_PLUG:
        for (size_t i = 0; i < r->inst.n_ports; i++)
            strscpy(r->inst.ports[i].state, "plugged", sizeof(r->inst.ports[i].state));
        if (ops_journal_step(r, STEP_PORTS) == 0) {
            if (r->ops->hooks.ports_plugged)
                r->ops->hooks.ports_plugged(r->ops->opaque, &r->inst);
            ops_run_advance(r);
        }
        break;
    case JOB_CONFIG_DRIVE:
        if (ops_journal_step(r, STEP_CONFIG_DRIVE) == 0)
            ops_run_advance(r);
        break;
    case JOB_DEFINE:
        if (j->inst.disk_path)
            ops_set_str(&r->inst.disk_path, j->inst.disk_path);
        if (ops_journal_step(r, STEP_DEFINED) == 0)
            ops_run_advance(r);
        break;
    case JOB_START:
        /* the step and the result go in one commit */
        r->step = STEP_STARTED;
        ops_finish(r, "running", NULL);
        if (r->done)
            ops_crash_point(r->ops, r);
        break;
    case JOB_POWER:
        ops_finish(r, ops_state_of_power(j->power), NULL);
        break;
    default:
        break;
    }
}

const struct op_type op_type_launch = {
    .kind = OP_LAUNCH,
    .name = "launch",
    .steps = launch_steps,
    .resume_prev_state = "running",
    .advance = launch_advance,
    .job_done = launch_job_done,
};

static void free_local(char *(*local)[3])
{
    for (size_t i = 0; i < ARRAY_SIZE(*local); i++)
        free((*local)[i]);
}

/* A launch's local files (image.path, kernel.path, kernel.initrd into
 * local[0..2], NULL where not given), resolved inside dirs: refused now,
 * before anything is recorded, when outside them or not regular files. */
static int resolve_local_files(const char *dirs, const struct boot_source *b, char *local[3],
                               struct agent_error *err)
{
    const char *given[3] = {b->image_path, b->kernel, b->initrd};
    static const char *const field[3] = {"image.path", "kernel.path", "kernel.initrd"};
    int rc;

    for (int i = 0; i < 3; i++) {
        if (!given[i])
            continue;
        rc = localfile_resolve(dirs, given[i], field[i], i == 0 ? UINT64_MAX : LOCALFILE_BOOT_MAX,
                               &local[i], err);
        if (rc < 0) {
            for (int k = 0; k < i; k++) {
                free(local[k]);
                local[k] = NULL;
            }
            return rc;
        }
    }
    return 0;
}

/* Refuse a bad image reference now, before anything is recorded. */
static int check_image_ref(struct ops *o, const struct boot_source *boot, struct agent_error *err)
{
    struct imgcache_request req;
    json_t *ref;
    int rc;

    if (!o->d.imgcache)
        return agent_error_set(err, ENOTSUP, "not_supported", "image",
                               "images by id, url or glance_id need the image cache");
    ref = boot_source_to_json(boot);
    rc = imgcache_request_from_json(json_object_get(ref, "image"), "image", &req, err);
    if (rc == 0 && req.id) {
        json_t *known = imgcache_get(o->d.imgcache, req.id);
        if (!known)
            rc = agent_error_set(err, EINVAL, "invalid_field", "image.id", "no cached image '%s'", req.id);
        json_decref(known);
    }
    json_decref(ref);
    return rc;
}

/* The new instance from the spec, its local files as resolved. */
static void fill_instance(struct ops *o, struct instance *inst, const struct launch_spec *spec, char *local[3],
                          struct port *ports)
{
    inst->ports = ports;
    inst->n_ports = ports ? spec->n_ifaces : 0;
    if (spec->id[0])
        strscpy(inst->uuid, spec->id, sizeof(inst->uuid));
    else
        uuid_generate_str(inst->uuid);
    if (spec->project_id)
        strscpy(inst->project_id, spec->project_id, sizeof(inst->project_id));
    if (spec->user_id)
        strscpy(inst->user_id, spec->user_id, sizeof(inst->user_id));
    ec2_id_generate(inst->ec2_id);
    inst->name = strdup(spec->name);
    strscpy(inst->state, "pending", sizeof(inst->state));
    strscpy(inst->task_state, "launching", sizeof(inst->task_state));
    inst->flavor = spec->flavor;
    ops_headroom(o, &inst->flavor, &inst->max_vcpus, &inst->max_memory_mb);
    inst->instance_type = spec->instance_type ? strdup(spec->instance_type) : NULL;
    inst->boot.kind = spec->boot.kind;
    ops_set_str(&inst->boot.image_path, local[0]);
    ops_set_str(&inst->boot.image_id, spec->boot.image_id);
    ops_set_str(&inst->boot.image_url, spec->boot.image_url);
    ops_set_str(&inst->boot.image_digest, spec->boot.image_digest);
    ops_set_str(&inst->boot.kernel, local[1]);
    ops_set_str(&inst->boot.initrd, local[2]);
    ops_set_str(&inst->boot.cmdline, spec->boot.cmdline);
    ops_set_str(&inst->boot.image_glance_id, spec->boot.image_glance_id);
    ops_set_str(&inst->user_data, spec->user_data);
    /* guest networking and metadata */
    if (spec->hostname)
        ops_set_str(&inst->hostname, spec->hostname);
    else
        ops_set_str(&inst->hostname, hostname_is_valid(spec->name) && strlen(spec->name) <= 63 ? spec->name
                                                                                              : inst->ec2_id);
    ops_set_str(&inst->availability_zone, spec->availability_zone ? spec->availability_zone
                                          : o->cfg.availability_zone ? o->cfg.availability_zone : "nova");
    inst->config_drive = spec->config_drive < 0 ? o->cfg.config_drive : spec->config_drive == 1;
    strscpy(inst->config_drive_format,
            spec->config_drive_format[0] ? spec->config_drive_format
            : o->cfg.config_drive_format ? o->cfg.config_drive_format : "config-2",
            sizeof(inst->config_drive_format));
    inst->public_keys = spec->public_keys ? json_deep_copy(spec->public_keys) : NULL;
    inst->metadata = spec->metadata ? json_deep_copy(spec->metadata) : NULL;
    inst->md_opts = spec->md_opts;
    if (ops_hv_disk_files(o)) {
        char path[4300];
        snprintf(path, sizeof(path), "%s/%s/console.log", o->cfg.instances_dir, inst->uuid);
        inst->console_log = strdup(path);
    }
    inst->created_ms = inst->updated_ms = now_wall_ms();
}

/* ---- ports: checked against the host, MACs and IPs chosen ---- */

const struct net_config *ops_network_of(const struct ops *o, const char *name)
{
    for (size_t i = 0; i < o->cfg.n_networks; i++)
        if (!strcmp(o->cfg.networks[i].name, name))
            return &o->cfg.networks[i];
    return NULL;
}

static int iface_error(struct agent_error *err, int e, const char *code, size_t i, const char *key,
                       const char *fmt, const char *detail)
{
    char field[48];

    snprintf(field, sizeof(field), "interfaces[%zu].%s", i, key);
    return agent_error_set(err, e, code, field, "field '%s': %s", field, fmt ? fmt : detail);
}

/* A device of the agent's namespace (a bridge, a NIC, a port's host end) has it. */
static bool mac_on_host(const char *mac, char dev[16])
{
    uint8_t b[6];

    return request_mac_parse(mac, NULL, b) == 0 && netplug_mac_on_host(b, dev);
}

/* fa:16:3e:xx:xx:xx (nova's prefix: locally administered, unicast). */
static int mac_generate(struct ops *o, const struct port *ports, size_t n, char out[18])
{
    for (int tries = 0; tries < 64; tries++) {
        uint8_t b[3];
        char owner[37];
        bool dup = false;
        int r;
        if ((r = random_bytes(b, sizeof(b))) < 0)
            return r;
        snprintf(out, 18, "fa:16:3e:%02x:%02x:%02x", b[0], b[1], b[2]);
        for (size_t k = 0; k < n; k++)
            dup |= !strcmp(ports[k].mac, out);
        if (dup || mac_on_host(out, owner))
            continue;
        r = store_port_mac_owner(o->d.store, out, owner);
        if (r == -ENOENT)
            return 0;
        if (r < 0)
            return r;
    }
    return -EEXIST;
}

static int check_given(struct ops *o, const struct launch_iface *f, const struct net_config *net, size_t i,
                       uint32_t *ip, struct agent_error *err)
{
    char owner[37], msg[200], dev[16];
    struct port held;
    struct in_addr a;

    if (f->mtu && net->mtu && f->mtu > net->mtu) {
        snprintf(msg, sizeof(msg), "%d is above network %s's mtu %lld", f->mtu, net->name, (long long)net->mtu);
        return iface_error(err, EINVAL, "invalid_field", i, "mtu", NULL, msg);
    }
    if (f->mac[0] && store_port_mac_owner(o->d.store, f->mac, owner) == 0) {
        snprintf(msg, sizeof(msg), "MAC %s is in use on this host", f->mac);
        return iface_error(err, EEXIST, "conflict", i, "mac", NULL, msg);
    }
    if (f->mac[0] && mac_on_host(f->mac, dev)) {
        snprintf(msg, sizeof(msg), "MAC %s is the address of host device %s", f->mac, dev);
        return iface_error(err, EEXIST, "conflict", i, "mac", NULL, msg);
    }
    *ip = 0;
    if (!f->ip[0])
        return 0;
    if (!net->mask) {
        snprintf(msg, sizeof(msg), "network %s has no cidr: it takes no IP", net->name);
        return iface_error(err, EINVAL, "invalid_field", i, "ip", NULL, msg);
    }
    if (inet_pton(AF_INET, f->ip, &a) != 1)
        return iface_error(err, EINVAL, "invalid_field", i, "ip", "not an IPv4 address", NULL);
    *ip = ntohl(a.s_addr);
    if ((*ip & net->mask) != net->net) {
        snprintf(msg, sizeof(msg), "%s is outside network %s's cidr %s", f->ip, net->name, net->cidr);
        return iface_error(err, EINVAL, "invalid_field", i, "ip", NULL, msg);
    }
    if (!net_ip_assignable(net, *ip)) {
        snprintf(msg, sizeof(msg), "%s is the %s address of network %s", f->ip,
                 *ip == net->net ? "network" : *ip == net->gw ? "gateway" : "broadcast", net->name);
        return iface_error(err, EINVAL, "invalid_field", i, "ip", NULL, msg);
    }
    if (store_port_by_ip(o->d.store, net->name, f->ip, &held, owner) == 0) {
        snprintf(msg, sizeof(msg), "%s is in use on network %s (instance %s)", f->ip, net->name, owner);
        return iface_error(err, EEXIST, "conflict", i, "ip", NULL, msg);
    }
    return 0;
}

int ops_ports_reserve(struct ops *o, const struct launch_spec *spec, struct port **out, struct agent_error *err)
{
    const size_t n = spec->n_ifaces;
    struct port *ports;
    uint32_t *given;
    int rc = 0;

    *out = NULL;
    if (!n)
        return 0;
    if (!o->d.np)
        return agent_error_set(err, ENOTSUP, "invalid_field", "interfaces",
                               "field 'interfaces': guest networking is not set up on this host");
    ports = calloc(n, sizeof(*ports));
    given = calloc(n, sizeof(*given));
    if (!ports || !given) {
        rc = -ENOMEM;
        goto out;
    }
    /* first what was given (so an allocated IP never takes a given one) */
    for (size_t i = 0; i < n; i++) {
        const struct launch_iface *f = &spec->ifaces[i];
        const struct net_config *net = ops_network_of(o, f->network);
        char msg[120];
        if (!net) {
            snprintf(msg, sizeof(msg), "unknown network '%.64s'", f->network);
            rc = iface_error(err, EINVAL, "invalid_field", i, "network", NULL, msg);
            goto out;
        }
        if ((rc = check_given(o, f, net, i, &given[i], err)) < 0)
            goto out;
    }
    for (size_t i = 0; i < n; i++) {
        const struct launch_iface *f = &spec->ifaces[i];
        const struct net_config *net = ops_network_of(o, f->network);
        struct port *p = &ports[i];
        p->index = (int)i;
        strscpy(p->network, f->network, sizeof(p->network));
        strscpy(p->state, "reserved", sizeof(p->state));
        p->mtu = f->mtu;
        uuid_generate_str(p->port_id);
        snprintf(p->device, sizeof(p->device), "tap%.11s", p->port_id); /* 14 characters */
        if (f->mac[0])
            strscpy(p->mac, f->mac, sizeof(p->mac));
        else if ((rc = mac_generate(o, ports, i, p->mac)) < 0) {
            rc = iface_error(err, -rc, "internal", i, "mac", "cannot generate a free MAC", NULL);
            goto out;
        }
        if (given[i]) {
            strscpy(p->ip, f->ip, sizeof(p->ip));
        } else if (net->mask) {
            /* the lowest free: the store's, what this request gave or took */
            uint32_t a;
            char msg[160];
            const struct ip_pool pool = {net->net, net->mask, net->gw, net->range_lo, net->range_hi};
            rc = store_ip_allocate_except(o->d.store, net->name, &pool, given, n, &a);
            if (rc < 0) {
                snprintf(msg, sizeof(msg), "no free address left in network %s (%s%s%s)", net->name, net->cidr,
                         net->range_lo ? ", ip_range " : "", net->range_lo ? net->ip_range : "");
                rc = iface_error(err, -rc, rc == -ENOSPC ? "conflict" : "internal", i, "ip", NULL, msg);
                goto out;
            }
            given[i] = a;
            net_format_ipv4(a, p->ip);
        }
    }
    *out = ports;
    ports = NULL;
out:
    free(ports);
    free(given);
    return rc;
}

int ops_launch(struct ops *o, const struct launch_spec *spec, json_t **answer, struct agent_error *err)
{
    struct op_run *r;
    _cleanup_(free_local) char *local[3] = {NULL, NULL, NULL};
    struct port *ports = NULL;
    int rc;

    if (spec->request_id && (rc = ops_replay(o, spec->request_id, "launch", answer, err)) != 0) {
        /* the same request again: the same instance, or a conflict */
        const char *was = rc > 0 ? json_string_value(json_object_get(json_object_get(*answer, "instance"), "id"))
                                 : NULL;
        if (spec->id[0] && was && strcmp(was, spec->id)) {
            rc = agent_error_set(err, EEXIST, "conflict", "request_id",
                                 "request_id '%s' launched instance %s, not %s", spec->request_id, was,
                                 spec->id);
            json_decref(*answer); /* was points into it */
            *answer = NULL;
            return rc;
        }
        return rc;
    }
    if (spec->id[0]) {
        struct instance held;
        if ((rc = store_instance_get(o->d.store, spec->id, &held)) == 0) {
            instance_release(&held);
            return agent_error_set(err, EEXIST, "conflict", "id", "instance %s exists on this host", spec->id);
        }
        if (rc != -ENOENT)
            return agent_error_set(err, -rc, "internal", NULL, "cannot read the store");
    }
    if (host_disabled(o->d.host))
        return agent_error_set(err, EBUSY, "conflict", NULL, "the host is disabled (computectl host enable)");
    if (!hv_connected(o->d.hv))
        return agent_error_set(err, EAGAIN, "unavailable", NULL, "the hypervisor is not connected");
    if (!host_ready(o->d.host))
        return agent_error_set(err, EAGAIN, "unavailable", NULL, "the agent is still reconciling");
    if ((rc = resolve_local_files(o->cfg.local_image_dirs, &spec->boot, local, err)) < 0)
        return rc;
    if ((rc = resources_check(o->d.res, o->d.store, &spec->flavor, err)) < 0) {
        if (spec->instance_type && rc == -ENOSPC)
            strscpy(err->field, "instance_type", sizeof(err->field));
        return rc;
    }
    if (boot_source_uses_cache(&spec->boot) && (rc = check_image_ref(o, &spec->boot, err)) < 0)
        return rc;
    /* chosen here and inserted with the instance, on this thread with no
     * write between: the store's UNIQUE constraints refuse any collision */
    if ((rc = ops_ports_reserve(o, spec, &ports, err)) < 0)
        return rc;
    if (!(r = ops_run_new(o, &op_type_launch))) {
        free(ports);
        return -ENOMEM;
    }
    fill_instance(o, &r->inst, spec, local, ports);
    strscpy(r->prev_state, "pending", sizeof(r->prev_state));
    ops_run_init_record(r, spec->request_id, STEP_CLAIMED);
    /* journal before acting: instance + operation in one transaction */
    return ops_run_accept(r, true, answer, err);
}
