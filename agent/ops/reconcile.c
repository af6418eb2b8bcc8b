/* reconcile.c: the instances' state from the hypervisor (ops-internal.h):
 * its events, and ops_reconcile() after each connect: every domain against
 * every instance the store knows, adoption of our own domains the store
 * lost (their identity from the metadata fields the hypervisor layer read
 * back: ops_instance_from_meta()), the use of other agents' domains, then
 * the interrupted operations resumed and the parked ones advanced again. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/events.h"
#include "agent/ops/ops-internal.h"
#include "agent/resources.h"

/* ---- hypervisor events ---- */

void ops_update_instance_state(struct ops *o, const char *uuid, const char *state, const char *fault)
{
    struct instance inst;

    if (store_instance_get(o->d.store, uuid, &inst) < 0)
        return;
    /* a resized guest waits for confirm or revert whatever its power: it
     * stays "resized" (only a lost domain changes that) */
    if (!strcmp(inst.state, "resized") && strcmp(state, "error") != 0) {
        instance_release(&inst);
        return;
    }
    if (strcmp(inst.state, state) != 0 && strcmp(inst.state, "terminated") != 0) {
        log_info("instance state changed by the hypervisor", "instance=%s ec2_id=%s from=%s to=%s fault=%s",
                 inst.uuid, inst.ec2_id, inst.state, state, fault ? fault : "");
        if (!strcmp(inst.state, "resized"))
            inst.task_state[0] = '\0'; /* verify_resize: nothing left to confirm */
        strscpy(inst.state, state, sizeof(inst.state));
        ops_set_str(&inst.fault, fault);
        inst.updated_ms = now_wall_ms();
        if (store_begin(o->d.store) == 0) {
            if (store_instance_update(o->d.store, &inst) < 0 || events_instance(o->d.events, &inst, NULL) < 0)
                store_rollback(o->d.store);
            else if (store_commit(o->d.store) == 0)
                events_flush(o->d.events);
        }
    }
    instance_release(&inst);
}

void ops_on_hv_event(struct ops *o, const struct hv_event *ev)
{
    struct op_run *r;
    struct op_record active;

    if (ev->type == HV_EVENT_DISCONNECTED) {
        log_warn("hypervisor connection lost", "reason=%d", ev->detail);
        if (o->hooks.hv_lost)
            o->hooks.hv_lost(o->opaque);
        return;
    }
    log_debug("hypervisor event", "instance=%s event=%d detail=%d", ev->uuid, ev->type, ev->detail);
    r = ops_find_run(o, ev->uuid);
    if (r) {
        if (r->wait == WAIT_STOPPED && (ev->type == HV_EVENT_STOPPED || ev->type == HV_EVENT_CRASHED) &&
            r->type->stopped) {
            r->wait = WAIT_NONE;
            uv_timer_stop(&r->timer);
            if (!r->job_running)
                r->type->stopped(r);
            /* else the shutdown job's return goes on (it sees the domain off) */
        } else if (r->wait == WAIT_STOPPED && (ev->type == HV_EVENT_STOPPED || ev->type == HV_EVENT_CRASHED))
            ops_finish(r, "stopped", NULL);
        else if (r->wait == WAIT_REBOOTED && (ev->type == HV_EVENT_REBOOTED || ev->type == HV_EVENT_STARTED))
            ops_finish(r, "running", NULL);
        return; /* the operation sets the state it ends in */
    }
    if (store_op_active_for(o->d.store, ev->uuid, &active) == 0) {
        op_record_release(&active); /* a journaled operation will settle it */
        return;
    }
    switch (ev->type) {
    case HV_EVENT_STARTED:
    case HV_EVENT_RESUMED:
        ops_update_instance_state(o, ev->uuid, "running", NULL);
        break;
    case HV_EVENT_STOPPED:
        ops_update_instance_state(o, ev->uuid, "stopped", NULL);
        break;
    case HV_EVENT_CRASHED:
        ops_update_instance_state(o, ev->uuid, "stopped", "the guest crashed");
        break;
    case HV_EVENT_UNDEFINED:
        ops_update_instance_state(o, ev->uuid, "error", "the domain was undefined outside the agent");
        break;
    default:
        break;
    }
}

/* ---- our metadata, read back by the hypervisor layer, as an instance ----
 * Outside input: every field is checked with a launch request's bounds
 * (instance.c). */

static bool clean_text(const char *s, size_t maxlen)
{
    size_t n = 0;

    for (const unsigned char *p = (const unsigned char *)s; *p; p++, n++)
        if (*p < 0x20 || *p == 0x7f)
            return false;
    return n <= maxlen;
}

static bool clean_path(const char *s)
{
    return clean_text(s, 4096) && s[0] == '/' && !strstr(s, "/../") && !strstr(s, "/./");
}

/* Attribute name of e into *out (NULL if absent). -EINVAL with err if present
 * but empty, too long, with control characters, or (path) not an absolute,
 * normalized path. */
static int meta_attr(const struct hv_meta_entry *e, const char *name, size_t maxlen, bool path,
                     bool required, char **out, struct agent_error *err)
{
    const char *s = hv_meta_attr(e, name);

    *out = NULL;
    if (!s)
        return required ? agent_error_set(err, EINVAL, "invalid_field", name,
                                          "metadata %s: attribute %s missing", e->name, name)
                        : 0;
    if (!*s || !(path ? clean_path(s) : clean_text(s, maxlen)))
        return agent_error_set(err, EINVAL, "invalid_field", name, "metadata %s: invalid %s", e->name,
                               name);
    *out = strdup(s);
    return *out ? 0 : -ENOMEM;
}

static int meta_int(const struct hv_meta_entry *e, const char *name, int64_t min, int64_t max,
                    int64_t *out, struct agent_error *err)
{
    char *v = NULL;
    int r = meta_attr(e, name, 32, false, true, &v, err);

    if (r == 0 && parse_int64(v, min, max, out) < 0)
        r = agent_error_set(err, EINVAL, "invalid_field", name,
                            "metadata flavor: %s must be an integer from %lld to %lld", name,
                            (long long)min, (long long)max);
    free(v);
    return r;
}

static int meta_flavor(const struct hv_meta_entry *e, struct instance *id, struct agent_error *err)
{
    int r;

    if ((r = meta_int(e, "vcpus", 1, 256, &id->flavor.vcpus, err)) < 0 ||
        (r = meta_int(e, "memory_mb", 16, 4194304, &id->flavor.memory_mb, err)) < 0 ||
        (r = meta_int(e, "disk_gb", 0, 65536, &id->flavor.disk_gb, err)) < 0)
        return r;
    /* issue 12: the headroom, when the domain was defined with one */
    if ((hv_meta_attr(e, "max_vcpus") && (r = meta_int(e, "max_vcpus", 1, 256, &id->max_vcpus, err)) < 0) ||
        (hv_meta_attr(e, "max_memory_mb") &&
         (r = meta_int(e, "max_memory_mb", 16, 4194304, &id->max_memory_mb, err)) < 0))
        return r;
    return meta_attr(e, "type", 64, false, false, &id->instance_type, err);
}

static int meta_kernel(const struct hv_meta_entry *e, struct boot_source *b, struct agent_error *err)
{
    int r;

    b->kind = BOOT_KERNEL;
    if ((r = meta_attr(e, "path", 0, true, true, &b->kernel, err)) < 0 ||
        (r = meta_attr(e, "initrd", 0, true, false, &b->initrd, err)) < 0)
        return r;
    return meta_attr(e, "cmdline", 2048, false, false, &b->cmdline, err);
}

/* An image as the store keeps it: one of path, url (with its digest) or
 * glance_id, and the cache's id once the cache resolved it. */
static int meta_image(const struct hv_meta_entry *e, struct boot_source *b, struct agent_error *err)
{
    int r;

    if ((r = meta_attr(e, "path", 0, true, false, &b->image_path, err)) < 0 ||
        (r = meta_attr(e, "id", 200, false, false, &b->image_id, err)) < 0 ||
        (r = meta_attr(e, "url", 4096, false, false, &b->image_url, err)) < 0 ||
        (r = meta_attr(e, "digest", 200, false, false, &b->image_digest, err)) < 0 ||
        (r = meta_attr(e, "glance_id", 64, false, false, &b->image_glance_id, err)) < 0)
        return r;
    if (!!b->image_path + !!b->image_url + !!b->image_glance_id > 1 ||
        (b->image_path && b->image_id) || (b->image_digest && !b->image_url) ||
        !boot_source_has_image(b))
        return agent_error_set(err, EINVAL, "invalid_field", "image",
                               "metadata image: inconsistent path/id/url/digest/glance_id");
    return 0;
}

/* One interface: <port id= index= network= mac= ip= device= mtu=>, appended
 * to id->ports (at most IFACE_MAX, indexes unique). */
static int meta_port(const struct hv_meta_entry *e, struct instance *id, struct agent_error *err)
{
    char *pid = NULL, *net = NULL, *mac = NULL, *ip = NULL, *dev = NULL;
    int64_t index = 0, mtu = 0;
    char p_mac[18];
    struct port *p, *np;
    int r;

    if (id->n_ports >= IFACE_MAX)
        return agent_error_set(err, EINVAL, "invalid_field", "port", "metadata: more than %d ports", IFACE_MAX);
    if ((r = meta_attr(e, "id", 36, false, true, &pid, err)) < 0 ||
        (r = meta_int(e, "index", 0, IFACE_MAX - 1, &index, err)) < 0 ||
        (r = meta_attr(e, "network", 63, false, true, &net, err)) < 0 ||
        (r = meta_attr(e, "mac", 17, false, true, &mac, err)) < 0 ||
        (r = meta_attr(e, "ip", 15, false, false, &ip, err)) < 0 ||
        (r = meta_attr(e, "device", PORT_DEV_MAX, false, true, &dev, err)) < 0 ||
        (hv_meta_attr(e, "mtu") && (r = meta_int(e, "mtu", 68, 65535, &mtu, err)) < 0))
        goto out;
    /* the launch request's own checks */
    if (!uuid_is_valid(pid) || request_mac_parse(mac, p_mac, NULL) < 0 || (ip && request_ipv4_check(ip) < 0)) {
        r = agent_error_set(err, EINVAL, "invalid_field", "port", "metadata port: invalid id, mac or ip");
        goto out;
    }
    for (size_t i = 0; i < id->n_ports; i++)
        if (id->ports[i].index == (int)index) {
            r = agent_error_set(err, EINVAL, "invalid_field", "port", "metadata port: index %lld twice",
                                (long long)index);
            goto out;
        }
    if (!(np = realloc(id->ports, (id->n_ports + 1) * sizeof(*np)))) {
        r = -ENOMEM;
        goto out;
    }
    id->ports = np;
    p = &np[id->n_ports++];
    memset(p, 0, sizeof(*p));
    strscpy(p->port_id, pid, sizeof(p->port_id));
    p->index = (int)index;
    strscpy(p->network, net, sizeof(p->network));
    strscpy(p->mac, p_mac, sizeof(p->mac));
    strscpy(p->ip, ip ? ip : "", sizeof(p->ip));
    strscpy(p->device, dev, sizeof(p->device));
    p->mtu = (int)mtu;
    strscpy(p->state, "plugged", sizeof(p->state));
out:
    free(pid);
    free(net);
    free(mac);
    free(ip);
    free(dev);
    return r;
}

/* One text child (uuid, ec2-id, name). */
static int meta_text(const struct hv_meta_entry *e, char **out, struct agent_error *err)
{
    bool ok = e->text[0] && clean_text(e->text, INSTANCE_NAME_MAX);

    *out = ok ? strdup(e->text) : NULL;
    if (!ok)
        return agent_error_set(err, EINVAL, "invalid_field", e->name, "metadata: invalid %s", e->name);
    return *out ? 0 : -ENOMEM;
}

static int meta_ident(const struct hv_meta_entry *e, bool uuid, struct instance *id,
                      struct agent_error *err)
{
    char *text = NULL;
    int r;

    if ((r = meta_text(e, &text, err)) < 0)
        return r;
    if (uuid ? !uuid_is_valid(text) : !ec2_id_is_valid(text))
        r = agent_error_set(err, EINVAL, "invalid_field", e->name, "metadata: invalid %s", e->name);
    else if (uuid)
        strscpy(id->uuid, text, sizeof(id->uuid));
    else
        strscpy(id->ec2_id, text, sizeof(id->ec2_id));
    free(text);
    return r;
}

static int meta_fields(const struct hv_meta *m, struct instance *id, struct agent_error *err)
{
    static const char *const names[] = {"uuid", "ec2-id", "name", "flavor", "kernel", "image"};
    const struct hv_meta_entry *e[ARRAY_SIZE(names)];
    size_t count;
    int r = 0;

    for (size_t k = 0; k < ARRAY_SIZE(names); k++) {
        e[k] = hv_meta_get(m, names[k], &count);
        if (count > 1)
            return agent_error_set(err, EINVAL, "invalid_field", names[k], "metadata: %s given twice",
                                   names[k]);
    }
    /* other names are a newer writer's fields: not needed to adopt */
    if ((e[0] && (r = meta_ident(e[0], true, id, err)) < 0) ||
        (e[1] && (r = meta_ident(e[1], false, id, err)) < 0) ||
        (e[2] && (r = meta_text(e[2], &id->name, err)) < 0) ||
        (e[3] && (r = meta_flavor(e[3], id, err)) < 0) ||
        (e[4] && (r = meta_kernel(e[4], &id->boot, err)) < 0) ||
        (e[5] && (r = meta_image(e[5], &id->boot, err)) < 0))
        return r;
    for (size_t i = 0; i < m->n; i++) /* repeated: one per interface */
        if (!strcmp(m->items[i].name, "port") && (r = meta_port(&m->items[i], id, err)) < 0)
            return r;
    if (!id->uuid[0] || !id->ec2_id[0] || !id->name)
        return agent_error_set(err, EINVAL, "missing_field", NULL, "metadata: uuid, ec2-id or name missing");
    if (!e[3])
        return agent_error_set(err, EINVAL, "missing_field", "flavor", "metadata: flavor missing");
    if (!e[4] && !e[5])
        return agent_error_set(err, EINVAL, "missing_field", "image",
                               "metadata: no boot source (kernel or image)");
    return 0;
}

int ops_instance_from_meta(const struct hv_meta *m, const char *dom_uuid, struct instance *ret,
                           struct agent_error *err)
{
    struct instance id = {0};
    int r = meta_fields(m, &id, err);

    if (r == 0 && dom_uuid && strcmp(id.uuid, dom_uuid) != 0)
        r = agent_error_set(err, EINVAL, "invalid_field", "uuid", "metadata: uuid does not match the domain's");
    if (r < 0) {
        instance_release(&id);
        return r;
    }
    *ret = id;
    return 0;
}

/* ---- reconcile and resume ---- */

static void resume_all(struct ops *o);
static int sync_ports(struct ops *o, const struct job *list);

struct reconcile_ctx {
    struct ops *o;
    struct hv_domain *doms;
    size_t n;
    bool *seen;
    int64_t list_ms;          /* when libvirt was asked */
};

static const struct hv_domain *find_dom(struct reconcile_ctx *c, const char *uuid, size_t *idx)
{
    for (size_t i = 0; i < c->n; i++)
        if (strcmp(c->doms[i].uuid, uuid) == 0) {
            *idx = i;
            return &c->doms[i];
        }
    return NULL;
}

static int reconcile_instance(const struct instance *inst, void *opaque)
{
    struct reconcile_ctx *c = opaque;
    struct op_record active;
    const struct hv_domain *d;
    size_t idx;
    bool busy;

    d = find_dom(c, inst->uuid, &idx);
    if (d)
        c->seen[idx] = true;
    busy = ops_find_run(c->o, inst->uuid) || store_op_active_for(c->o->d.store, inst->uuid, &active) == 0;
    if (busy) {
        if (!ops_find_run(c->o, inst->uuid))
            op_record_release(&active);
        return 0; /* its operation settles it */
    }
    if (inst->updated_ms > c->list_ms)
        return 0; /* an event newer than the snapshot already set its state */
    if (!d) {
        if (strcmp(inst->state, "error") != 0)
            ops_update_instance_state(c->o, inst->uuid, "error", "the domain is missing from the hypervisor");
        return 0;
    }
    ops_update_instance_state(c->o, inst->uuid, ops_state_of_power(d->power), inst->fault);
    return 0;
}

/* Whose a domain the store does not know is, from the owner its metadata
 * records (docs/architecture.md, "Adoption"). The key is the host name
 * (agent.host_name): it survives a lost store, where an id kept in the store
 * would not, and it tells apart two agents on one libvirtd. libvirt's host
 * UUID, when both the metadata and this libvirtd have one, must match too:
 * a host restored from another's backup (same configured name) is not that
 * host. A domain with no owner recorded (written before owners were) cannot
 * be told from another agent's: it is left alone. */
enum dom_owner { OWNER_SELF, OWNER_OTHER_HOST, OWNER_OTHER_LIBVIRT, OWNER_UNRECORDED };

static enum dom_owner owner_of(const struct hv_owner *self, const struct hv_owner *d)
{
    if (!d->host[0])
        return OWNER_UNRECORDED;
    if (strcmp(d->host, self->host) != 0)
        return OWNER_OTHER_HOST;
    if (d->host_uuid[0] && self->host_uuid[0] && strcmp(d->host_uuid, self->host_uuid) != 0)
        return OWNER_OTHER_LIBVIRT;
    return OWNER_SELF;
}

/* Our domain that the store does not know (store lost or restored from a
 * backup): take it back from its metadata. The console log and the disk
 * are where a launch puts them. */
static void adopt(struct ops *o, const struct hv_domain *d, struct instance *ident)
{
    struct instance inst = *ident;

    *ident = (struct instance){0}; /* taken */
    if (ops_hv_disk_files(o)) {
        char dir[4300], path[4400];
        ops_instance_dir(o, inst.uuid, dir, sizeof(dir));
        snprintf(path, sizeof(path), "%s/console.log", dir);
        ops_set_str(&inst.console_log, path);
        if (boot_source_has_image(&inst.boot)) {
            snprintf(path, sizeof(path), "%s/disk.qcow2", dir);
            ops_set_str(&inst.disk_path, path);
        }
    }
    strscpy(inst.state, ops_state_of_power(d->power), sizeof(inst.state));
    inst.task_state[0] = '\0';
    inst.created_ms = inst.updated_ms = now_wall_ms();
    if (store_begin(o->d.store) < 0) {
        instance_release(&inst);
        return;
    }
    if (store_instance_insert(o->d.store, &inst) < 0 || events_instance(o->d.events, &inst, NULL) < 0) {
        /* a port's MAC or IP held by another instance refuses it too */
        store_rollback(o->d.store);
        log_warn("cannot record an instance recovered from libvirt metadata", "instance=%s ec2_id=%s ports=%zu",
                 inst.uuid, inst.ec2_id, inst.n_ports);
    } else if (store_commit(o->d.store) == 0) {
        events_flush(o->d.events);
        log_warn("instance recovered from libvirt metadata", "instance=%s ec2_id=%s state=%s",
                 inst.uuid, inst.ec2_id, inst.state);
    }
    instance_release(&inst);
}

static int resume_one(const struct op_record *rec, void *opaque)
{
    struct ops *o = opaque;
    const struct op_type *t = op_type_find(rec->type);
    enum op_step step;
    enum op_state state;
    struct op_run *r;

    for (r = o->runs; r; r = r->next)
        if (!strcmp(r->rec.id, rec->id))
            return 0; /* in flight already */
    if (!t || op_step_parse(rec->step, &step) < 0 || op_state_parse(rec->state, &state) < 0) {
        log_warn("interrupted operation of an unknown type or step left alone", "op=%s type=%s step=%s",
                 rec->id, rec->type, rec->step);
        return 0;
    }
    if (!(r = ops_run_new(o, t)))
        return 0;
    if (store_instance_get(o->d.store, rec->instance_uuid, &r->inst) < 0) {
        ops_run_discard(r);
        return 0;
    }
    r->rec = *rec;
    r->rec.request_id = rec->request_id ? strdup(rec->request_id) : NULL;
    r->rec.error_message = NULL;
    r->rec.result = NULL;
    r->step = r->journaled = step;
    r->state = OPS_RUNNING;
    strscpy(r->prev_state, t->resume_prev_state, sizeof(r->prev_state));
    strscpy(r->emitted, r->inst.state, sizeof(r->emitted));
    ops_log(LOG_INFO, "resuming an interrupted operation", r, NULL);
    ops_run_advance(r);
    return 0;
}

void ops_reconcile_after(struct job *j)
{
    struct ops *o = j->ops;
    struct reconcile_ctx c = {.o = o, .doms = j->doms, .n = j->ndoms, .list_ms = j->list_ms};
    unsigned strangers = 0, adopted = 0, foreign = 0;
    struct flavor foreign_sum = {0};
    struct hv_owner self;

    o->reconciling = false;
    if (o->stopping) {
        j->list_done(j->list_opaque, -ECANCELED);
        return;
    }
    if (j->result < 0) {
        log_warn("reconcile failed", "error=%s", j->err.message);
        j->list_done(j->list_opaque, j->result);
        return;
    }
    c.seen = calloc(j->ndoms + 1, sizeof(bool));
    if (!c.seen) {
        j->list_done(j->list_opaque, -ENOMEM);
        return;
    }
    store_instance_foreach(o->d.store, false, reconcile_instance, &c);
    hv_owner_self(o->d.hv, &self);
    for (size_t i = 0; i < j->ndoms; i++) {
        struct instance known, ident = {0};
        struct agent_error merr = {0};
        const struct hv_domain *d = &j->doms[i];
        char q[400];
        if (c.seen[i])
            continue;
        if (!d->has_meta || ops_instance_from_meta(&d->meta, d->uuid, &ident, &merr) < 0) {
            const char *why = d->has_meta ? merr.message : d->meta_error;
            strangers++;
            if (why[0])
                log_warn("domain with invalid compute-agent metadata left alone",
                         "domain=%s uuid=%s state=%s error=%s", d->name, d->uuid,
                         hv_power_name(d->power), log_quote(why, q, sizeof(q)));
            else
                log_info("domain not managed by this agent left alone", "domain=%s uuid=%s state=%s",
                         d->name, d->uuid, hv_power_name(d->power));
            continue;
        }
        if (store_instance_get(o->d.store, d->uuid, &known) == 0) {
            /* terminated here but still defined: finish the terminate */
            log_warn("terminated instance still has a domain", "instance=%s", known.uuid);
            instance_release(&known);
            instance_release(&ident);
            continue;
        }
        switch (owner_of(&self, &d->owner)) {
        case OWNER_SELF:
            adopt(o, d, &ident);
            adopted++;
            continue;
        case OWNER_OTHER_HOST:
            log_info("domain owned by another agent left alone", "domain=%s uuid=%s host=%s state=%s",
                     d->name, d->uuid, log_quote(d->owner.host, q, sizeof(q)), hv_power_name(d->power));
            break;
        case OWNER_OTHER_LIBVIRT:
            log_warn("domain of this host name but another libvirt host left alone",
                     "domain=%s uuid=%s host_uuid=%s libvirt_host_uuid=%s state=%s", d->name, d->uuid,
                     d->owner.host_uuid, self.host_uuid, hv_power_name(d->power));
            break;
        case OWNER_UNRECORDED:
            log_warn("domain with no owning host in its metadata left alone",
                     "domain=%s uuid=%s ec2_id=%s state=%s", d->name, d->uuid, ident.ec2_id,
                     hv_power_name(d->power));
            break;
        }
        /* another agent's guest still holds this host's capacity */
        foreign++;
        foreign_sum.vcpus += ident.flavor.vcpus;
        foreign_sum.memory_mb += ident.flavor.memory_mb;
        foreign_sum.disk_gb += ident.flavor.disk_gb;
        instance_release(&ident);
    }
    resources_set_foreign(o->d.res, &foreign_sum, foreign);
    free(c.seen);
    log_info("reconciled with the hypervisor",
             "domains=%zu strangers=%u adopted=%u foreign=%u in_flight=%u", j->ndoms, strangers,
             adopted, foreign, o->n_runs);
    if (o->d.np && sync_ports(o, j) == 0)
        return; /* resumes in ops_reconcile_synced() */
    resume_all(o);
    j->list_done(j->list_opaque, 0);
}

/* Interrupted operations resumed, parked ones advanced (launches wait at
 * their plug while a reconcile runs: reconcile.c's sync must not remove a
 * port a launch plugs). */
static void resume_all(struct ops *o)
{
    store_op_foreach_unfinished(o->d.store, resume_one, o);
    for (struct op_run *r = o->runs; r; r = r->next)
        if (r->parked && !r->job_running && !r->done)
            ops_run_advance(r);
}

/* The ports live instances hold (adopted ones included): netplug_sync
 * keeps these and removes every other device and filter of ours, on a
 * worker, before anything resumes. 0: queued (the reconcile goes on in
 * ops_reconcile_synced); -errno: not synced (logged), go on now. */
static int sync_ports(struct ops *o, const struct job *list)
{
    struct job *s = calloc(1, sizeof(*s));
    int rc;

    if (!s)
        return -ENOMEM;
    s->kind = JOB_SYNC;
    s->list_done = list->list_done;
    s->list_opaque = list->list_opaque;
    if ((rc = store_ports_live(o->d.store, &s->keep, &s->keep_owner, &s->n_keep)) < 0 ||
        (rc = ops_queue_list(o, s)) < 0) {
        log_warn("cannot sync the host's ports", "error=%s", strerror(-rc));
        free(s->keep);
        free(s->keep_owner);
        free(s);
        return rc;
    }
    o->reconciling = true; /* until the sync returns */
    return 0;
}

void ops_reconcile_synced(struct job *j)
{
    struct ops *o = j->ops;

    o->reconciling = false;
    if (o->stopping) {
        j->list_done(j->list_opaque, -ECANCELED);
        return;
    }
    resume_all(o);
    j->list_done(j->list_opaque, 0);
}

int ops_reconcile(struct ops *o, void (*done)(void *opaque, int result), void *opaque)
{
    struct job *j;
    int rc;

    if (o->stopping)
        return -ECANCELED;
    if (o->reconciling)
        return -EBUSY;
    if (!(j = calloc(1, sizeof(*j))))
        return -ENOMEM;
    j->list_done = done;
    j->list_opaque = opaque;
    rc = ops_queue_list(o, j);
    if (rc < 0) {
        free(j);
        return rc;
    }
    o->reconciling = true;
    return 0;
}
