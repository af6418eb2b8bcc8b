/* controller.c: see controller.h. */
#include "agent/controller.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "agent/events.h"
#include "agent/host.h"
#include "agent/hypervisor/hv.h"
#include "agent/store.h"
#include "agent/log.h"
#include "agent/metrics.h"
#include "agent/resources.h"
#include "scheduler-client/placement.h"

#define META_PROVIDER "placement.provider_uuid"

struct controller {
    struct controller_deps d;  /* borrowed */
    const struct agent_config *cfg; /* borrowed */
    struct placement *p;       /* NULL when no controller is configured */
    uv_timer_t usage_timer;    /* periodic drift check */
    bool timer_open;
    char *stored_uuid;         /* the provider uuid the store had at start */
    bool agent_allocs;         /* [placement] allocations = agent */
    bool heal;                 /* [placement] usage_heal = fix */
    bool check_again;          /* a launch asked for a check while one ran */
};

static void on_usage_timer(uv_timer_t *t);

/* Write inst's allocation (allocations = agent). */
static void put_allocation(struct controller *c, const struct instance *inst)
{
    const struct placement_allocation a = {
        .vcpus = inst->flavor.vcpus,
        .memory_mb = inst->flavor.memory_mb,
        .disk_gb = resources_disk_of(c->d.res, &inst->flavor),
        .project_id = inst->project_id[0] ? inst->project_id : c->cfg->placement_project_id,
        .user_id = inst->user_id[0] ? inst->user_id : c->cfg->placement_user_id,
    };
    int r = placement_put_allocation(c->p, inst->uuid, &a);

    if (r < 0)
        log_warn("cannot queue the instance's allocation", "instance=%s error=%s", inst->uuid, strerror(-r));
}

static void delete_allocation(struct controller *c, const char *uuid)
{
    int r = placement_delete_allocation(c->p, uuid);

    if (r < 0)
        log_warn("cannot queue the removal of the instance's allocation", "instance=%s error=%s", uuid,
                 strerror(-r));
}

static bool holds_resources(const struct instance *inst)
{
    return strcmp(inst->state, "terminated") && strcmp(inst->state, "error") && strcmp(inst->state, "migrated");
}

/* Issue 13: an instance that moved to another host (or never arrived
 * here): its consumer is the other host's to write; nothing of ours. */
static bool moved_away(const struct instance *inst)
{
    return !strcmp(inst->state, "migrated");
}

static bool has_migration(const struct instance *inst)
{
    return uuid_is_valid(inst->resize.migration_uuid);
}

/* A cold resize waiting for confirm or revert (or under way): its
 * migration consumer holds the old flavor. (A live resize never has one:
 * a migration uuid beside it is a settled cold resize's, kept.) */
static bool cold_pending(const struct instance *inst)
{
    return inst->resize.pending && has_migration(inst) && strcmp(inst->resize.mode, "live");
}

static bool flavor_empty(const struct flavor *f)
{
    return f->vcpus <= 0 && f->memory_mb <= 0 && f->disk_gb <= 0;
}

static struct placement_allocation allocation_of(const struct controller *c, const struct instance *inst,
                                                 const struct flavor *f, const char *type)
{
    return (struct placement_allocation){
        .vcpus = f->vcpus,
        .memory_mb = f->memory_mb,
        .disk_gb = f->disk_gb,
        .project_id = inst->project_id[0] ? inst->project_id : c->cfg->placement_project_id,
        .user_id = inst->user_id[0] ? inst->user_id : c->cfg->placement_user_id,
        .consumer_type = type,
    };
}

/* Issue 12: the old flavor onto the migration consumer, the flavor onto
 * the instance (forward), or the migration consumer emptied (back). */
static void move_allocations(struct controller *c, const struct instance *inst, bool back)
{
    const struct placement_allocation now = allocation_of(c, inst, &inst->flavor, NULL);
    const struct placement_allocation old = allocation_of(c, inst, &inst->resize.old_flavor, "MIGRATION");
    int r;

    if (!has_migration(inst) || (!back && flavor_empty(&inst->resize.old_flavor))) {
        put_allocation(c, inst);
        return;
    }
    if (back)
        r = placement_move_allocations(c->p, inst->resize.migration_uuid, inst->uuid, NULL, &now);
    else
        r = placement_move_allocations(c->p, inst->uuid, inst->resize.migration_uuid, &now, &old);
    if (r < 0)
        log_warn("cannot queue the resize's allocation move", "instance=%s migration=%s back=%d error=%s",
                 inst->uuid, inst->resize.migration_uuid, back, strerror(-r));
}

static void carry_out(struct controller *c, const struct instance *inst, const enum controller_alloc_act *acts,
                      size_t n)
{
    for (size_t i = 0; i < n; i++) {
        switch (acts[i]) {
        case CONTROLLER_ALLOC_PUT:
            put_allocation(c, inst);
            break;
        case CONTROLLER_ALLOC_DELETE:
            delete_allocation(c, inst->uuid);
            break;
        case CONTROLLER_ALLOC_MOVE:
        case CONTROLLER_ALLOC_MOVE_BACK:
            move_allocations(c, inst, acts[i] == CONTROLLER_ALLOC_MOVE_BACK);
            break;
        case CONTROLLER_ALLOC_DELETE_MIGRATION:
            delete_allocation(c, inst->resize.migration_uuid);
            break;
        }
    }
}

size_t controller_plan_start(const struct instance *inst, bool agent,
                             enum controller_alloc_act out[CONTROLLER_ALLOC_ACTS_MAX])
{
    size_t n = 0;

    if (moved_away(inst) || !strcmp(inst->state, "migrating"))
        return 0; /* migrating: arriving here, its consumer still the source's until it runs here */
    if (!strcmp(inst->state, "terminated") || (agent && !holds_resources(inst))) {
        out[n++] = CONTROLLER_ALLOC_DELETE;
        if (agent && has_migration(inst))
            out[n++] = CONTROLLER_ALLOC_DELETE_MIGRATION;
        return n;
    }
    if (!agent)
        return 0;
    if (cold_pending(inst)) {
        out[n++] = CONTROLLER_ALLOC_MOVE;
        return n;
    }
    out[n++] = CONTROLLER_ALLOC_PUT;
    if (has_migration(inst))
        out[n++] = CONTROLLER_ALLOC_DELETE_MIGRATION;
    return n;
}

size_t controller_plan_finished(const struct op_record *rec, const struct instance *inst, bool agent,
                                enum controller_alloc_act out[CONTROLLER_ALLOC_ACTS_MAX])
{
    bool ok = !strcmp(rec->state, "succeeded");
    size_t n = 0;

    if (!strcmp(rec->type, "terminate")) {
        if (strcmp(inst->state, "terminated"))
            return 0;
        out[n++] = CONTROLLER_ALLOC_DELETE;
        if (agent && has_migration(inst))
            out[n++] = CONTROLLER_ALLOC_DELETE_MIGRATION;
        return n;
    }
    if (!agent || moved_away(inst))
        return 0;
    if (!strcmp(rec->type, "migrate_in")) {
        if (ok)
            out[n++] = CONTROLLER_ALLOC_PUT; /* the instance's allocation, on this host's provider now */
        return n;
    }
    if (!strcmp(rec->type, "launch")) {
        if (!strcmp(inst->state, "error"))
            out[n++] = CONTROLLER_ALLOC_DELETE;
        return n;
    }
    if (strcmp(rec->type, "resize") && strcmp(rec->type, "confirm_resize") && strcmp(rec->type, "revert_resize"))
        return 0;
    if (!holds_resources(inst)) {
        /* it ended in error: it holds nothing any more */
        out[n++] = CONTROLLER_ALLOC_DELETE;
        if (has_migration(inst))
            out[n++] = CONTROLLER_ALLOC_DELETE_MIGRATION;
        return n;
    }
    if (!strcmp(rec->type, "resize")) {
        if (!strcmp(inst->resize.mode, "live"))
            out[n++] = CONTROLLER_ALLOC_PUT; /* whatever size it reached */
        else if (!ok)
            out[n++] = CONTROLLER_ALLOC_MOVE_BACK; /* rolled back: flavor is the old one */
        else if (cold_pending(inst))
            out[n++] = CONTROLLER_ALLOC_MOVE; /* resized, waiting: the claim's move, again */
        return n;
    }
    if (!ok)
        return 0;
    if (!strcmp(rec->type, "confirm_resize"))
        out[n++] = has_migration(inst) ? CONTROLLER_ALLOC_DELETE_MIGRATION : CONTROLLER_ALLOC_PUT;
    else
        out[n++] = CONTROLLER_ALLOC_MOVE_BACK; /* revert_resize */
    return n;
}

bool controller_consumer_removable(const struct instance *inst, const struct instance *owner, bool agent)
{
    if (inst)
        return !moved_away(inst) &&
               (!strcmp(inst->state, "terminated") || (agent && !strcmp(inst->state, "error")));
    if (owner)
        return !cold_pending(owner) || !holds_resources(owner);
    return false;
}

/* At start: what a crash or an outage may have left undone, from the store. */
static int requeue_one(const struct instance *inst, void *opaque)
{
    struct controller *c = opaque;
    enum controller_alloc_act acts[CONTROLLER_ALLOC_ACTS_MAX];

    carry_out(c, inst, acts, controller_plan_start(inst, c->agent_allocs, acts));
    return 0;
}

static void on_allocation(struct placement *p, const char *consumer, bool removed, int status,
                          const struct agent_error *err, void *opaque)
{
    struct controller *c = opaque;

    (void)p;
    if (status < 0) {
        metrics_placement_allocation(c->d.metrics, "refused");
        log_warn("Placement refused an allocation change", "instance=%s op=%s error=%s", consumer,
                 removed ? "remove" : "write", err ? err->message : "");
        return;
    }
    metrics_placement_allocation(c->d.metrics, removed ? "removed" : "written");
    log_info(removed ? "allocation removed from Placement" : "allocation written to Placement", "instance=%s",
             consumer);
}

void controller_claimed(struct controller *c, const struct instance *inst)
{
    if (!c || !c->p)
        return;
    if (c->agent_allocs) {
        put_allocation(c, inst);
        return;
    }
    /* the scheduler should have written it: check now (debounced a little
     * so a burst of launches makes one check) */
    uv_timer_start(&c->usage_timer, on_usage_timer, 200, (uint64_t)c->cfg->usage_check_s * 1000);
}

void controller_operation_finished(struct controller *c, const struct op_record *rec,
                                   const struct instance *inst)
{
    enum controller_alloc_act acts[CONTROLLER_ALLOC_ACTS_MAX];

    if (!c || !c->p)
        return;
    carry_out(c, inst, acts, controller_plan_finished(rec, inst, c->agent_allocs, acts));
}

void controller_resize_claimed(struct controller *c, const struct instance *inst)
{
    if (!c || !c->p || !c->agent_allocs)
        return;
    move_allocations(c, inst, false);
}

static void on_provider(struct placement *p, const char *uuid, void *opaque)
{
    struct controller *c = opaque;
    char *cur = NULL;

    (void)p;
    if (store_meta_get(c->d.store, META_PROVIDER, &cur) == 0 && !strcmp(cur, uuid)) {
        free(cur);
        return;
    }
    free(cur);
    if (store_meta_set(c->d.store, META_PROVIDER, uuid) < 0)
        log_warn("cannot store the resource provider uuid", "provider=%s", uuid);
    log_info("registered with Placement", "provider=%s name=%s", uuid, c->cfg->host_name);
}

static void on_synced(struct placement *p, void *opaque)
{
    (void)p;
    (void)opaque;
    log_debug("Placement holds this host's inventories and traits", NULL);
}

static void on_error(struct placement *p, const struct agent_error *err, void *opaque)
{

    (void)p;
    (void)opaque;
    log_warn("Placement", "code=%s field=%s error=%s", err->code, err->field[0] ? err->field : "-",
             err->message);
}

/* The instance whose resize uses migration consumer uuid. */
struct migration_owner {
    const char *uuid;   /* the consumer */
    struct instance *inst; /* found: a copy (instance_release) */
    bool found;
};

static int find_owner(const struct instance *inst, void *opaque)
{
    struct migration_owner *o = opaque;

    if (strcasecmp(inst->resize.migration_uuid, o->uuid))
        return 0;
    o->found = instance_copy(o->inst, inst) == 0;
    return 1;
}

static bool migration_owner(struct controller *c, const char *consumer, struct instance *ret)
{
    struct migration_owner o = {.uuid = consumer, .inst = ret};

    if (!uuid_is_valid(consumer))
        return false;
    store_instance_foreach(c->d.store, true, find_owner, &o);
    return o.found;
}

static void on_drift(struct placement *p, const struct placement_drift *d, void *opaque)
{
    struct controller *c = opaque;

    if (events_usage_drift(c->d.events, placement_provider_uuid(p), d->only_in_placement, d->n_only_in_placement,
                           d->only_here, d->n_only_here) < 0)
        log_warn("cannot record the usage drift event", NULL);
    for (size_t i = 0; i < d->n_only_in_placement; i++) {
        struct instance inst;
        bool ours = false;
        /* fix: only what this host provably does not run: terminated here,
         * as the store records it (an unknown consumer is never touched) */
        if (c->heal && store_instance_get(c->d.store, d->only_in_placement[i], &inst) == 0) {
            ours = controller_consumer_removable(&inst, NULL, c->agent_allocs);
            instance_release(&inst);
        } else if (c->heal && migration_owner(c, d->only_in_placement[i], &inst)) {
            /* a resize's migration consumer (a pending one is counted as
             * this host's, so it is here only once settled) */
            ours = controller_consumer_removable(NULL, &inst, c->agent_allocs);
            instance_release(&inst);
        }
        if (ours) {
            log_warn("usage drift: removing the allocation of an instance or a resize settled here", "consumer=%s",
                     d->only_in_placement[i]);
            delete_allocation(c, d->only_in_placement[i]);
        } else {
            log_warn("usage drift: Placement holds an allocation for a consumer not running here",
                     "consumer=%s", d->only_in_placement[i]);
        }
    }
    for (size_t i = 0; i < d->n_only_here; i++) {
        struct instance inst;
        metrics_placement_allocation(c->d.metrics, "missing");
        log_warn("usage drift: instance running here has no allocation in Placement", "instance=%s",
                 d->only_here[i]);
        /* agent: ours to write (it may have been removed behind our back) */
        if (c->agent_allocs && c->heal && store_instance_get(c->d.store, d->only_here[i], &inst) == 0) {
            if (holds_resources(&inst) && strcmp(inst.state, "migrating"))
                carry_out(c, &inst,
                          (const enum controller_alloc_act[]){cold_pending(&inst) ? CONTROLLER_ALLOC_MOVE
                                                                                  : CONTROLLER_ALLOC_PUT},
                          1);
            instance_release(&inst);
        } else if (c->agent_allocs && c->heal && migration_owner(c, d->only_here[i], &inst)) {
            /* a pending resize's migration consumer lost its allocation */
            if (cold_pending(&inst) && holds_resources(&inst))
                move_allocations(c, &inst, false);
            instance_release(&inst);
        }
    }
}

struct uuid_list {
    char **v;
    size_t n, cap;
};

static int list_add(struct uuid_list *l, const char *uuid)
{
    if (l->n == l->cap) {
        size_t ncap = l->cap ? l->cap * 2 : 32;
        char **nv = realloc(l->v, ncap * sizeof(*nv));
        if (!nv)
            return -ENOMEM;
        l->v = nv;
        l->cap = ncap;
    }
    if (!(l->v[l->n] = strdup(uuid)))
        return -ENOMEM;
    l->n++;
    return 0;
}

static int collect_running(const struct instance *inst, void *opaque)
{
    struct uuid_list *l = opaque;

    /* pending too: a launch's allocation must exist from its claim on;
     * resized: a cold resize waiting for confirm or revert */
    if (strcmp(inst->state, "running") && strcmp(inst->state, "stopped") && strcmp(inst->state, "stopping") &&
        strcmp(inst->state, "pending") && strcmp(inst->state, "resized"))
        return 0;
    if (list_add(l, inst->uuid) < 0)
        return 1;
    /* a pending resize's migration consumer holds the old flavor here */
    if (cold_pending(inst) && list_add(l, inst->resize.migration_uuid) < 0)
        return 1;
    return 0;
}

static void on_usage_checked(struct placement *p, int status, const struct placement_drift *drift,
                             const struct agent_error *err, void *opaque)
{
    struct controller *c = opaque;

    (void)p;
    (void)drift; /* drift itself is reported by on_drift */
    if (status < 0)
        log_info("usage check against Placement not done", "error=%s", err ? err->message : "");
    if (c->check_again) {
        c->check_again = false;
        uv_timer_start(&c->usage_timer, on_usage_timer, 200, (uint64_t)c->cfg->usage_check_s * 1000);
    }
}

static void on_usage_timer(uv_timer_t *t)
{
    struct controller *c = t->data;
    struct uuid_list l = {0};
    int r;

    store_instance_foreach(c->d.store, false, collect_running, &l);
    r = placement_check_usage(c->p, (const char *const *)l.v, l.n, on_usage_checked, c);
    if (r == -EBUSY)
        c->check_again = true;
    else if (r == -EINVAL)
        log_warn("usage check refused by the Placement client", "instances=%zu", l.n);
    for (size_t i = 0; i < l.n; i++)
        free(l.v[i]);
    free(l.v);
}

int controller_new(uv_loop_t *loop, const struct controller_deps *deps, const struct agent_config *cfg,
                   struct controller **ret, struct agent_error *err)
{
    struct controller *c = calloc(1, sizeof(*c));
    struct placement_config pc = {0};
    static const struct placement_callbacks cb = {
        .on_provider = on_provider,
        .on_synced = on_synced,
        .on_error = on_error,
        .on_usage_drift = on_drift,
        .on_allocation = on_allocation,
    };
    int r;

    if (!c)
        return -ENOMEM;
    c->d = *deps;
    c->cfg = cfg;
    *ret = c;
    if (!cfg->placement_url[0])
        return 0;
    store_meta_get(c->d.store, META_PROVIDER, &c->stored_uuid);
    pc.url = cfg->placement_url;
    pc.token = cfg->placement_token[0] ? cfg->placement_token : NULL;
    if (!strcmp(cfg->placement_auth, "keystone"))
        pc.auth = PLACEMENT_AUTH_KEYSTONE;
    else if (!strcmp(cfg->placement_auth, "token") || (!cfg->placement_auth[0] && pc.token))
        pc.auth = PLACEMENT_AUTH_TOKEN;
    else
        pc.auth = PLACEMENT_AUTH_NONE;
    pc.keystone.auth_url = cfg->ks_auth_url;
    pc.keystone.username = cfg->ks_username;
    pc.keystone.password = cfg->ks_password;
    pc.keystone.project_name = cfg->ks_project_name;
    pc.keystone.user_domain_name = cfg->ks_user_domain;
    pc.keystone.project_domain_name = cfg->ks_project_domain;
    pc.ca_bundle = cfg->placement_ca_bundle[0] ? cfg->placement_ca_bundle : NULL;
    pc.provider_name = cfg->host_name;
    pc.provider_uuid = c->stored_uuid;
    r = placement_new(loop, &pc, &cb, c, &c->p);
    if (r < 0) {
        free(c->stored_uuid);
        free(c);
        *ret = NULL;
        return agent_error_set(err, -r, "invalid_config", "placement.url",
                               "cannot set up the Placement client for %s", cfg->placement_url);
    }
    c->agent_allocs = !strcmp(cfg->placement_allocations, "agent");
    c->heal = !strcmp(cfg->usage_heal, "fix");
    store_instance_foreach(c->d.store, true, requeue_one, c);
    uv_timer_init(loop, &c->usage_timer);
    c->usage_timer.data = c;
    c->timer_open = true;
    uv_timer_start(&c->usage_timer, on_usage_timer,
                   (uint64_t)(cfg->usage_check_s < 30 ? cfg->usage_check_s : 30) * 1000,
                   (uint64_t)cfg->usage_check_s * 1000);
    return 0;
}

size_t controller_compute_traits(const char *arch, const char *domain_type, bool nics, bool nic_hotplug,
                                 const char *out[COMPUTE_TRAITS_MAX])
{
    bool xen = domain_type && !strcmp(domain_type, "xen");
    size_t n = 0;

    /* the arches os-traits names (libvirt's spelling); none for others
     * (the test driver's fake host is i686, which has no trait) */
    static const char *const arches[][2] = {
        {"x86_64", "COMPUTE_ARCH_X86_64"}, {"aarch64", "COMPUTE_ARCH_AARCH64"},
        {"ppc64le", "COMPUTE_ARCH_PPC64LE"}, {"s390x", "COMPUTE_ARCH_S390X"},
        {"riscv64", "COMPUTE_ARCH_RISCV64"}, {"mipsel", "COMPUTE_ARCH_MIPSEL"},
    };

    out[n++] = "COMPUTE_NODE";
    for (size_t i = 0; arch && i < ARRAY_SIZE(arches); i++)
        if (!strcmp(arch, arches[i][0]))
            out[n++] = arches[i][1];
    /* what the image cache accepts (image-cache/inspect.c) */
    out[n++] = "COMPUTE_IMAGE_TYPE_QCOW2";
    out[n++] = "COMPUTE_IMAGE_TYPE_RAW";
    /* the buses the drivers put disks on: kvm/qemu/test virtio disks, an
     * ide (or virtio-scsi) config-drive cdrom; xen xvd disks, an ide cdrom */
    out[n++] = xen ? "COMPUTE_STORAGE_BUS_XEN" : "COMPUTE_STORAGE_BUS_VIRTIO";
    out[n++] = "COMPUTE_STORAGE_BUS_IDE";
    if (!xen)
        out[n++] = "COMPUTE_STORAGE_BUS_SCSI";
    /* NICs only where guest networking is configured; xen takes libxl's
     * default model, which names no trait */
    if (nics && !xen)
        out[n++] = "COMPUTE_NET_VIF_MODEL_VIRTIO";
    if (nics && nic_hotplug)
        out[n++] = "COMPUTE_NET_ATTACH_INTERFACE";
    return n;
}

void controller_host_changed(struct controller *c, const struct hv_host_info *host)
{
    char **traits = NULL;
    size_t n = 0;
    struct agent_error err;
    const char *dt;

    if (!c || !c->p)
        return;
    {
        const struct agent_config *cfg = c->cfg;
        int64_t cpus, mem, disk;
        resources_totals(c->d.res, &cpus, &mem, &disk);
        struct placement_inventory inv[] = {
            {"VCPU", cpus, cfg->reserved_host_cpus < cpus ? cfg->reserved_host_cpus : 0, 1, cpus, 1,
             cfg->cpu_allocation_ratio},
            {"MEMORY_MB", mem, cfg->reserved_host_memory_mb < mem ? cfg->reserved_host_memory_mb : 0, 1,
             mem, 1, cfg->ram_allocation_ratio},
            {"DISK_GB", disk, cfg->reserved_host_disk_gb < disk ? cfg->reserved_host_disk_gb : 0, 1,
             disk > 0 ? disk : 1, 1, cfg->disk_allocation_ratio},
        };
        placement_set_inventory(c->p, inv, disk > 0 ? 3 : 2);
    }
    dt = hv_domain_type(c->d.hv);
    if (host->arch[0] &&
        placement_traits_from_cpu(host->arch, (const char *const *)host->cpu_features,
                                  host->n_cpu_features,
                                  !strcmp(dt, "kvm") || !strcmp(dt, "qemu") || !strcmp(dt, "xen")
                                      ? dt
                                      : NULL,
                                  &traits, &n, &err) == 0) {
        const char *all[n + COMPUTE_TRAITS_MAX + 1];
        size_t k = controller_compute_traits(host->arch, dt, c->cfg->n_networks > 0,
                                             hv_supports(c->d.hv, HV_FEAT_NIC_HOTPLUG), all);
        /* issue 12: the driver resizes running guests (vCPUs and memory) */
        if (hv_supports(c->d.hv, HV_FEAT_VCPU_HOTPLUG) && hv_supports(c->d.hv, HV_FEAT_MEM_HOTPLUG))
            all[k++] = CONTROLLER_TRAIT_LIVE_RESIZE;
        for (size_t i = 0; i < n; i++)
            all[k++] = traits[i];
        placement_set_traits(c->p, all, k);
        placement_traits_free(traits, n);
    }
    placement_set_disabled(c->p, host_disabled(c->d.host));
}

void controller_set_disabled(struct controller *c, bool disabled)
{
    if (c && c->p)
        placement_set_disabled(c->p, disabled);
}

const char *controller_provider_uuid(const struct controller *c)
{
    if (!c || !c->p)
        return NULL;
    return placement_provider_uuid(c->p) ? placement_provider_uuid(c->p) : c->stored_uuid;
}

int controller_reachable(const struct controller *c)
{
    struct placement_stats st;

    if (!c || !c->p)
        return -1;
    placement_stats(c->p, &st);
    return st.reachable ? 1 : 0;
}

json_t *controller_to_json(const struct controller *c)
{
    struct placement_stats st;
    const char *uuid = controller_provider_uuid(c);

    if (!c || !c->p)
        return json_null();
    placement_stats(c->p, &st);
    return json_pack("{s:s, s:o, s:b, s:b, s:s, s:I, s:I, s:I, s:I}", "url", c->cfg->placement_url,
                     "provider_uuid", uuid ? json_string(uuid) : json_null(), "synced", st.synced,
                     "reachable", st.reachable, "microversion", st.microversion, "requests",
                     (json_int_t)st.requests, "ok", (json_int_t)st.ok, "conflicts",
                     (json_int_t)st.conflict, "errors", (json_int_t)st.error);
}

static void on_timer_closed(uv_handle_t *h)
{
    struct controller *c = h->data;

    free(c->stored_uuid);
    free(c);
}

void controller_free(struct controller *c)
{
    if (!c)
        return;
    placement_free(c->p);
    if (c->timer_open) {
        uv_close((uv_handle_t *)&c->usage_timer, on_timer_closed);
        return;
    }
    free(c->stored_uuid);
    free(c);
}
