/* jobs.c: the worker side of the engine (ops-internal.h): each job kind's
 * hypervisor calls, one place per call, and the guest's files. Runs on
 * libuv's pool: reads only its job and the engine's immutable parts (deps,
 * config), never a run. The one place that builds the hv_guest is
 * job_define(). */
#include <dirent.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <arpa/inet.h>

#include "agent/guest.h"
#include "agent/localfile.h"
#include "agent/metadata.h"
#include "agent/netmap.h"
#include "agent/ops/ops-internal.h"
#include "agent/request.h"
#include "net-plug/netplug.h"

/* The guest's disk: a qcow2 overlay on its base image, grown to the
 * flavor's disk size. The base (the image cache's verified file, or a local
 * image.path resolved and inspected by check_local_files()) comes with the
 * format its inspection found, which the overlay names explicitly: nothing
 * probes the base's bytes again. The overlay is written beside its final
 * name and renamed into place, so a crash never leaves a half-written disk
 * that a resumed launch would use. */
static int prepare_disk(struct instance *inst, const struct job *j, const char *dir,
                        const char **format, struct agent_error *err)
{
    char overlay[4400], tmp[4500];
    uint64_t want;
    int r;

    snprintf(overlay, sizeof(overlay), "%s/disk.qcow2", dir);
    /* a kernel-only launch with disk_gb > 0 gets that disk, blank (as nova's
     * ephemeral disk): what it is counted for is there; a disk made before
     * (a resumed launch, a resize's define) is the guest's as it is */
    if (!j->base_path && !(inst->boot.kernel && inst->flavor.disk_gb > 0) && access(overlay, F_OK) != 0)
        return 0;
    if (access(overlay, F_OK) != 0) {
        want = (uint64_t)inst->flavor.disk_gb << 30;
        if (want < j->base_vsize)
            want = j->base_vsize;
        snprintf(tmp, sizeof(tmp), "%s.tmp", overlay);
        unlink(tmp); /* a leftover of a crash */
        if ((r = imgcache_qcow2_overlay_write(tmp, j->base_path, j->base_format, want, err)) < 0)
            return r;
        if (rename(tmp, overlay) < 0) {
            r = agent_error_set(err, errno, "internal", NULL, "rename %s: %s", tmp, strerror(errno));
            unlink(tmp);
            return r;
        }
    }
    ops_set_str(&inst->disk_path, overlay);
    *format = "qcow2";
    return 0;
}

/* Local guest files, checked again where they are used (the launch checked
 * them when it was accepted; a crash may have come between, or the files
 * changed): each resolved once more inside hypervisor.local_image_dirs, the
 * symlink-free result used from here on; a local image is judged by the
 * image cache's inspection, which decides its format. */
static int check_local_files(struct job *j, struct agent_error *err)
{
    struct boot_source *b = &j->inst.boot;
    const char *dirs = j->ops->cfg.local_image_dirs;
    char *real = NULL, format[16];
    int r;

    if (b->kernel) {
        if ((r = localfile_resolve(dirs, b->kernel, "kernel.path", LOCALFILE_BOOT_MAX, &real, err)) < 0)
            return r;
        free(b->kernel);
        b->kernel = TAKE_PTR(real);
    }
    if (b->initrd) {
        if ((r = localfile_resolve(dirs, b->initrd, "kernel.initrd", LOCALFILE_BOOT_MAX, &real, err)) < 0)
            return r;
        free(b->initrd);
        b->initrd = TAKE_PTR(real);
    }
    if (!b->image_path || j->base_path)
        return 0;
    if (!j->ops->d.imgcache)
        return agent_error_set(err, ENOTSUP, "not_supported", "image.path",
                               "local images are inspected by the image cache, which is not running");
    if ((r = localfile_resolve(dirs, b->image_path, "image.path", UINT64_MAX, &real, err)) < 0)
        return r;
    r = imgcache_file_inspect(j->ops->d.imgcache, real, format, &j->base_vsize, err);
    if (r < 0) {
        free(real);
        if (err && !err->field[0])
            strscpy(err->field, "image.path", sizeof(err->field));
        return r;
    }
    strscpy(j->base_format, format, sizeof(j->base_format));
    j->base_path = real;
    return 0;
}

static void job_define(struct job *j)
{
    struct ops *o = j->ops;
    struct hv *hv = o->d.hv;
    const char *format = NULL;
    char dir[4300];
    char *xml = NULL;
    struct guest g;

    if ((j->result = check_local_files(j, &j->err)) < 0)
        return;
    if (ops_hv_disk_files(o)) {
        ops_instance_dir(o, j->inst.uuid, dir, sizeof(dir));
        if (mkdir(dir, 0750) < 0 && errno != EEXIST) {
            j->result = agent_error_set(&j->err, errno, "internal", NULL, "mkdir %s: %s", dir,
                                        strerror(errno));
            return;
        }
        if ((j->result = prepare_disk(&j->inst, j, dir, &format, &j->err)) < 0)
            return;
    }
    {
        const struct ops_config *c = &o->cfg;
        char iso[4400] = "";
        struct guest_env env = {.smbios_manufacturer = c->smbios_manufacturer,
                                .smbios_product = c->smbios_product,
                                .nets = c->networks, .n_nets = c->n_networks};
        if (j->inst.config_drive) {
            ops_config_drive_path(o, j->inst.uuid, iso, sizeof(iso));
            env.config_drive_path = iso;
        }
        guest_describe(&j->inst, format, &g);
        guest_describe_net(&j->inst, &env, &g);
        if ((j->result = hv_domain_xml(hv, &g.hv, &xml, &j->err)) < 0)
            return;
    }
    j->result = hv_define(hv, xml, &j->err);
    free(xml);
}

void ops_remove_disk(const struct ops *o, const char *uuid)
{
    char dir[4300], path[4400];

    ops_instance_dir(o, uuid, dir, sizeof(dir));
    if (dir[0] && (size_t)snprintf(path, sizeof(path), "%s/disk.qcow2", dir) < sizeof(path))
        unlink(path);
    ops_config_drive_path(o, uuid, path, sizeof(path));
    if (path[0])
        md_drive_remove(path); /* with what a crashed build left (user-data) */
}

/* Reconcile: what config drive builds interrupted by a crash left in any
 * instance's directory, once older than any build can take (a build is
 * bounded to a minute: one under way now is left alone). */
#define DRIVE_LEFTOVER_AGE_S 300
static void drive_leftovers_sweep(const struct ops *o)
{
    DIR *d = o->cfg.instances_dir ? opendir(o->cfg.instances_dir) : NULL;
    struct dirent *e;
    int n = 0, r;

    if (!d)
        return;
    while ((e = readdir(d))) {
        char path[4400];
        if (e->d_name[0] == '.' || strlen(e->d_name) != 36)
            continue;
        ops_config_drive_path(o, e->d_name, path, sizeof(path));
        if (path[0] && (r = md_drive_leftovers_remove(path, DRIVE_LEFTOVER_AGE_S)) > 0)
            n += r;
    }
    closedir(d);
    if (n)
        log_info("removed what interrupted config drive builds left", "count=%d", n);
}

void ops_config_drive_path(const struct ops *o, const char *uuid, char *buf, size_t size)
{
    if ((size_t)snprintf(buf, size, "%s/%s/config.iso", o->cfg.instances_dir, uuid) >= size)
        buf[0] = '\0';
}

/* ---- ports (net-plug) ---- */

void ops_np_port(const struct ops *o, const struct port *p, const char *owner, struct np_port *out)
{
    struct in_addr a = {0};

    memset(out, 0, sizeof(*out));
    out->network = p->network;
    out->dev = p->device;
    out->kind = hv_supports(o->d.hv, HV_FEAT_NIC_VETH) ? NP_PORT_VETH : NP_PORT_TAP;
    request_mac_parse(p->mac, NULL, out->mac);
    if (p->ip[0] && inet_pton(AF_INET, p->ip, &a) == 1)
        out->ipv4 = a.s_addr;
    out->mtu = p->mtu;
    out->owner = owner;
}

static int np_fail(struct agent_error *err, const char *what, const struct port *p, const struct np_error *e)
{
    char field[48];

    snprintf(field, sizeof(field), "interfaces[%d]", p->index);
    return agent_error_set(err, e->code < 0 ? -e->code : EIO, "plug_failed", field, "%s %s (%s on %s): %s",
                           what, field, p->device, p->network, e->msg[0] ? e->msg : strerror(-e->code));
}

/* Every port plugged (each call idempotent and bounded); a failure unplugs
 * what this job plugged and fails with the port named. */
static void job_plug(struct job *j)
{
    struct netplug *np = j->ops->d.np;
    struct np_error e = {0};

    if (!np) {
        j->result = agent_error_set(&j->err, ENOTSUP, "not_supported", "interfaces",
                                    "guest networking is not set up on this host");
        return;
    }
    for (size_t i = 0; i < j->inst.n_ports; i++) {
        struct np_port npp;
        ops_np_port(j->ops, &j->inst.ports[i], j->inst.uuid, &npp);
        if (netplug_plug(np, &npp, &e) < 0) {
            j->result = np_fail(&j->err, "cannot plug", &j->inst.ports[i], &e);
            for (size_t k = 0; k < i; k++)
                netplug_unplug(np, j->inst.ports[k].device, &e);
            return;
        }
    }
    j->result = 0;
}

static int unplug_all(struct job *j, struct agent_error *err)
{
    struct netplug *np = j->ops->d.np;
    struct np_error e = {0};
    int r = 0;

    for (size_t i = 0; np && i < j->inst.n_ports; i++)
        if (netplug_unplug(np, j->inst.ports[i].device, &e) < 0 && r == 0)
            r = np_fail(err, "cannot unplug", &j->inst.ports[i], &e);
    return r;
}

/* The config drive: the metadata the service serves, as an ISO (temp file
 * and rename inside md_drive_build). Already there: kept (a resumed launch). */
static void job_config_drive(struct job *j)
{
    const struct ops_config *c = &j->ops->cfg;
    struct netmap_defaults def = {.http_tokens = c->md_http_tokens, .hop_limit = c->md_hop_limit};
    char dir[4300], path[4400];
    struct md_instance *m;

    ops_instance_dir(j->ops, j->inst.uuid, dir, sizeof(dir));
    ops_config_drive_path(j->ops, j->inst.uuid, path, sizeof(path));
    if (!dir[0] || !path[0]) {
        j->result = agent_error_set(&j->err, ENAMETOOLONG, "internal", NULL, "instance path too long");
        return;
    }
    if (mkdir(dir, 0750) < 0 && errno != EEXIST) {
        j->result = agent_error_set(&j->err, errno, "internal", NULL, "mkdir %s: %s", dir, strerror(errno));
        return;
    }
    if (access(path, F_OK) == 0) {
        j->result = 0;
        return;
    }
    if (!(m = netmap_md_instance(&j->inst, c->networks, c->n_networks, &def))) {
        j->result = agent_error_set(&j->err, ENOMEM, "internal", NULL, "out of memory");
        return;
    }
    j->result = md_drive_build(m, !strcmp(j->inst.config_drive_format, "nocloud") ? MD_DRIVE_NOCLOUD
                                                                                  : MD_DRIVE_CONFIG2,
                               path, c->xorriso ? c->xorriso : "xorriso", &j->err);
    md_instance_free(m);
}

/* Reconcile, after the domains were matched and adopted: the ports of live
 * instances kept, everything else of ours on the host removed
 * (netplug_sync), before any interrupted operation resumes. */
static void job_sync(struct job *j)
{
    struct np_port *keep = j->n_keep ? calloc(j->n_keep, sizeof(*keep)) : NULL;
    struct np_error e = {0};

    drive_leftovers_sweep(j->ops);
    if (!j->ops->d.np || (j->n_keep && !keep)) {
        free(keep);
        return;
    }
    for (size_t i = 0; i < j->n_keep; i++)
        ops_np_port(j->ops, &j->keep[i], j->keep_owner[i], &keep[i]);
    if (netplug_sync(j->ops->d.np, keep, j->n_keep, &e) < 0)
        log_warn("cannot sync the host's ports", "ports=%zu error=%s", j->n_keep, e.msg);
    else
        log_info("host ports synced", "ports=%zu", j->n_keep);
    free(keep);
}

/* Resize (issue 12): the disk to the flavor's size, only ever larger
 * (imgcache_qcow2_grow: nothing done when it is that size already, so a
 * resumed step repeats safely). No disk yet (a kernel-only guest that had
 * disk_gb 0): the define makes it at the new size. */
static void job_grow(struct job *j)
{
    char dir[4300], path[4400];

    j->result = 0;
    if (!ops_hv_disk_files(j->ops) || j->inst.flavor.disk_gb <= 0)
        return;
    ops_instance_dir(j->ops, j->inst.uuid, dir, sizeof(dir));
    snprintf(path, sizeof(path), "%s/disk.qcow2", dir);
    if (access(path, F_OK) != 0)
        return;
    j->result = imgcache_qcow2_grow(j->ops->cfg.qemu_img, path, (uint64_t)j->inst.flavor.disk_gb << 30, &j->err);
}

/* Resize (issue 12), live: vCPUs and memory to the flavor on the running
 * domain and in its definition (HV_LIVE|HV_CONFIG: a reboot keeps them),
 * then our metadata, so an adoption reads the new flavor. Each call sets an
 * absolute figure: repeating the job (a resumed step, the rollback to the
 * old flavor) is safe. */
/* One figure on the running domain, then in its definition: two calls, as
 * not every driver takes LIVE|CONFIG in one (libvirt's test driver refuses
 * the pair for memory). */
static int set_both(struct hv *hv, const char *uuid, bool vcpus, uint64_t v, struct agent_error *err)
{
    int r = vcpus ? hv_set_vcpus(hv, uuid, (unsigned)v, HV_LIVE, err) : hv_set_memory(hv, uuid, v, HV_LIVE, err);

    if (r < 0)
        return r;
    return vcpus ? hv_set_vcpus(hv, uuid, (unsigned)v, HV_CONFIG, err) : hv_set_memory(hv, uuid, v, HV_CONFIG, err);
}

static void job_live(struct job *j)
{
    struct hv *hv = j->ops->d.hv;
    struct hv_size now;
    struct guest g;
    struct agent_error ignored;

    if (hv_get_size(hv, j->uuid, &now, &ignored) < 0)
        memset(&now, 0, sizeof(now)); /* unknown: set both */
    if ((unsigned)j->inst.flavor.vcpus != now.vcpus &&
        (j->result = set_both(hv, j->uuid, true, (uint64_t)j->inst.flavor.vcpus, &j->err)) < 0)
        return;
    if ((uint64_t)j->inst.flavor.memory_mb != now.requested_mib &&
        (j->result = set_both(hv, j->uuid, false, (uint64_t)j->inst.flavor.memory_mb, &j->err)) < 0)
        return;
    guest_describe(&j->inst, NULL, &g);
    j->result = hv_set_metadata(hv, &g.hv, HV_LIVE | HV_CONFIG, &j->err);
    if (j->result == -ENOTSUP)
        j->result = 0; /* a driver without it: the store has the flavor */
}

/* ---- migration (issue 13) ---- */

/* Where the domain is after a migration: active here 1, gone (or only
 * inactive here: the target runs it) 0, unknown -1. */
static int domain_here(struct hv *hv, const char *uuid)
{
    struct agent_error e;
    enum hv_power p;
    int r = hv_power(hv, uuid, &p, &e);

    if (r == -ENOENT)
        return 0;
    if (r < 0)
        return -1;
    return p == HV_POWER_SHUTOFF ? 0 : 1;
}

static void job_migrate(struct job *j)
{
    const struct ops *o = j->ops;
    const struct migration_info *m = &j->inst.mig;
    char src[4300], dst[4300];
    const char *map[5] = {NULL};
    static const char *const disks[] = {"vda", NULL};
    const char *pc = m->postcopy[0] ? m->postcopy : o->cfg.migration_postcopy ? o->cfg.migration_postcopy : "never";
    size_t n = 0;
    unsigned flags = HV_MIGRATE_LIVE;

    ops_instance_dir(o, j->uuid, src, sizeof(src));
    snprintf(dst, sizeof(dst), "%s/%s", m->peer_instances_dir, j->uuid);
    if (src[0] && m->peer_instances_dir[0]) {
        map[n++] = src;
        map[n++] = dst;
    }
    if (o->cfg.image_dir && o->cfg.image_dir[0] && m->peer_image_dir[0]) {
        map[n++] = o->cfg.image_dir;
        map[n++] = m->peer_image_dir;
    }
    if (strcmp(pc, "never") != 0)
        flags |= HV_MIGRATE_POSTCOPY;
    struct hv_migrate_params p = {
        .dest_uri = m->peer_uri,
        .disks = ops_hv_disk_files(o) && j->inst.disk_path ? disks : NULL,
        .max_downtime_ms = (uint64_t)(m->max_downtime_ms > 0 ? m->max_downtime_ms
                                                             : o->cfg.migration_max_downtime_ms > 0
                                                                   ? o->cfg.migration_max_downtime_ms
                                                                   : 500),
        .bandwidth_mib_s = o->cfg.migration_bandwidth_mib_s > 0 ? (uint64_t)o->cfg.migration_bandwidth_mib_s : 0,
        .migrate_uri = m->peer_migrate_uri[0] ? m->peer_migrate_uri : NULL,
        .path_map = n ? map : NULL,
    };
    j->result = hv_migrate(o->d.hv, j->uuid, &p, flags, &j->err);
    j->here = domain_here(o->d.hv, j->uuid);
}

/* A resumed migration: a job libvirtd still runs is waited out (polled
 * like the monitor), then the domain's place decides. */
static void job_migrate_check(struct job *j)
{
    struct hv *hv = j->ops->d.hv;
    struct hv_job_info ji;
    struct agent_error e;

    while (hv_job_info(hv, j->uuid, &ji, &e) == 0 && (ji.type == HV_JOB_UNBOUNDED || ji.type == HV_JOB_BOUNDED))
        usleep(500 * 1000);
    j->result = 0;
    j->here = domain_here(hv, j->uuid);
    if (j->here < 0)
        agent_error_set(&j->err, ENOTCONN, "unavailable", NULL, "the hypervisor cannot say where the domain is");
}

/* The target's incoming guest: its directory, an empty overlay on this
 * host's copy of the base (the migration's disk copy fills what the guest
 * wrote), its console log. */
static void job_mig_disk(struct job *j)
{
    const struct ops *o = j->ops;
    const char *format = NULL;
    char dir[4300], log[4400];
    int fd;

    j->result = 0;
    if (!ops_hv_disk_files(o))
        return;
    if ((j->result = check_local_files(j, &j->err)) < 0)
        return;
    ops_instance_dir(o, j->inst.uuid, dir, sizeof(dir));
    if (mkdir(dir, 0750) < 0 && errno != EEXIST) {
        j->result = agent_error_set(&j->err, errno, "internal", NULL, "mkdir %s: %s", dir, strerror(errno));
        return;
    }
    if ((j->result = prepare_disk(&j->inst, j, dir, &format, &j->err)) < 0)
        return;
    snprintf(log, sizeof(log), "%s/console.log", dir);
    fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0640);
    if (fd < 0) {
        j->result = agent_error_set(&j->err, errno, "internal", NULL, "open %s: %s", log, strerror(errno));
        return;
    }
    close(fd);
}

static void job_meta(struct job *j)
{
    struct guest g;

    guest_describe(&j->inst, NULL, &g);
    j->result = hv_set_metadata(j->ops->d.hv, &g.hv, HV_LIVE | HV_CONFIG, &j->err);
    if (j->result == -ENOTSUP) {
        enum hv_power p;
        j->result = hv_power(j->ops->d.hv, j->uuid, &p, &j->err); /* -ENOENT: not here */
    }
}

void ops_job_work(uv_work_t *w)
{
    struct job *j = w->data;
    struct hv *hv = j->ops->d.hv;
    const char *uuid = j->uuid;
    struct agent_error ignored;

    switch (j->kind) {
    case JOB_DEFINE:
        job_define(j);
        break;
    case JOB_START:
        j->result = hv_start(hv, uuid, &j->err);
        break;
    case JOB_SHUTDOWN:
        if ((j->result = hv_power(hv, uuid, &j->power, &j->err)) < 0 || j->power == HV_POWER_SHUTOFF)
            break;
        j->result = hv_shutdown(hv, uuid, &j->err);
        if (j->result == 0 && hv_power(hv, uuid, &j->power, &ignored) < 0)
            j->power = HV_POWER_NOSTATE;
        break;
    case JOB_DESTROY:
        j->result = hv_destroy(hv, uuid, &j->err);
        if (j->result == -ENOENT && j->terminating)
            j->result = 0; /* already gone */
        break;
    case JOB_REBOOT:
        j->result = hv_reboot(hv, uuid, &j->err);
        break;
    case JOB_RESET:
        j->result = hv_reset(hv, uuid, &j->err);
        break;
    case JOB_UNDEFINE:
        j->result = hv_undefine(hv, uuid, &j->err);
        if (j->result == 0)
            ops_remove_disk(j->ops, uuid);
        break;
    case JOB_POWER:
        j->result = hv_power(hv, uuid, &j->power, &j->err);
        break;
    case JOB_CLEANUP:
        hv_destroy(hv, uuid, &ignored);
        /* the disk goes only with its domain: a domain still defined (libvirtd
         * away during the rollback) keeps its disk, so reconcile finds a
         * whole guest, never one whose disk is gone */
        if (hv_undefine(hv, uuid, &ignored) == 0)
            ops_remove_disk(j->ops, uuid);
        unplug_all(j, &ignored); /* after the destroy: no guest uses them */
        j->result = 0;
        break;
    case JOB_PLUG:
        job_plug(j);
        break;
    case JOB_UNPLUG:
        j->result = unplug_all(j, &j->err);
        break;
    case JOB_CONFIG_DRIVE:
        job_config_drive(j);
        break;
    case JOB_SYNC:
        job_sync(j);
        j->result = 0;
        break;
    case JOB_GROW:
        job_grow(j);
        break;
    case JOB_LIVE:
        job_live(j);
        break;
    case JOB_SIZE:
        j->result = hv_get_size(hv, uuid, &j->size, &j->err);
        break;
    case JOB_MIGRATE:
        job_migrate(j);
        break;
    case JOB_MIGRATE_CHECK:
        job_migrate_check(j);
        break;
    case JOB_META:
        job_meta(j);
        break;
    case JOB_MIG_DISK:
        job_mig_disk(j);
        break;
    case JOB_MIG_IN_CLEANUP: {
        enum hv_power p;
        int rc = hv_power(hv, uuid, &p, &ignored);
        if (rc == 0 && p == HV_POWER_RUNNING) {
            /* never: a guest that runs here is not an aborted arrival */
            log_error("an aborted incoming migration's domain runs here: left alone", "instance=%s", uuid);
        } else {
            if (rc == 0 && p != HV_POWER_SHUTOFF)
                hv_destroy(hv, uuid, &ignored);
            if (rc == 0)
                hv_undefine(hv, uuid, &ignored);
            ops_remove_disk(j->ops, uuid);
        }
        unplug_all(j, &ignored);
        j->result = 0;
        break;
    }
    case JOB_MIG_RELEASE:
        j->result = unplug_all(j, &j->err);
        if (domain_here(hv, uuid) == 0)
            ops_remove_disk(j->ops, uuid);
        break;
    case JOB_LIST:
        j->list_ms = now_wall_ms();
        j->result = hv_list(hv, &j->doms, &j->ndoms, &j->err);
        break;
    }
}
