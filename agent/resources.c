/* resources.c: see resources.h. */
#include "agent/resources.h"

#include <math.h>
#include <stdlib.h>
#include <sys/statvfs.h>

struct resources {
    const struct agent_config *cfg; /* ratios and reservations (borrowed) */
    bool known;                     /* host figures read at least once */
    int64_t cpus;                   /* host logical CPUs */
    int64_t memory_mb;              /* host memory */
    int64_t disk_gb;                /* filesystem of the state directory */
    struct flavor foreign;          /* held by domains of other agents (last reconcile) */
    int64_t foreign_domains;        /* how many */
    bool no_disks;                  /* the driver makes no disk files: disk_gb counts 0 */
};

int resources_new(const struct agent_config *cfg, struct resources **ret)
{
    struct resources *r = calloc(1, sizeof(*r));

    if (!r)
        return -ENOMEM;
    r->cfg = cfg;
    *ret = r;
    return 0;
}

void resources_free(struct resources *r)
{
    free(r);
}

int64_t resources_disk_gb(const char *path)
{
    struct statvfs vfs;

    if (statvfs(path, &vfs) < 0)
        return -errno;
    return (int64_t)((uint64_t)vfs.f_blocks * vfs.f_frsize >> 30);
}

void resources_set_host(struct resources *r, const struct hv_host_info *info, int64_t disk_gb)
{
    r->cpus = info->cpus;
    r->memory_mb = info->memory_mb;
    if (disk_gb >= 0)
        r->disk_gb = disk_gb;
    r->known = true;
}

void resources_set_disk_files(struct resources *r, bool makes_disks)
{
    r->no_disks = !makes_disks;
}

int64_t resources_disk_of(const struct resources *r, const struct flavor *f)
{
    return r->no_disks || f->disk_gb < 0 ? 0 : f->disk_gb;
}

void resources_set_foreign(struct resources *r, const struct flavor *sum, int64_t domains)
{
    r->foreign = *sum;
    r->foreign_domains = domains;
}

static void add_foreign(const struct resources *r, struct flavor *used)
{
    used->vcpus += r->foreign.vcpus;
    used->memory_mb += r->foreign.memory_mb;
    used->disk_gb += resources_disk_of(r, &r->foreign);
}

/* What the store says instances hold, the disk as resources_disk_of() counts it. */
static int allocated(const struct resources *r, struct store *s, struct flavor *used, int64_t *count)
{
    int rc = store_allocated(s, used, count);

    if (rc == 0)
        used->disk_gb = resources_disk_of(r, used);
    return rc;
}

bool resources_known(const struct resources *r)
{
    return r->known;
}

void resources_totals(const struct resources *r, int64_t *cpus, int64_t *memory_mb, int64_t *disk_gb)
{
    *cpus = r->cpus;
    *memory_mb = r->memory_mb;
    *disk_gb = r->disk_gb;
}

static int64_t usable(int64_t total, int64_t reserved, double ratio)
{
    int64_t base = total - reserved;
    return base <= 0 ? 0 : (int64_t)floor((double)base * ratio);
}

void resources_usable(const struct resources *r, struct flavor *out)
{
    out->vcpus = usable(r->cpus, r->cfg->reserved_host_cpus, r->cfg->cpu_allocation_ratio);
    out->memory_mb = usable(r->memory_mb, r->cfg->reserved_host_memory_mb, r->cfg->ram_allocation_ratio);
    out->disk_gb = usable(r->disk_gb, r->cfg->reserved_host_disk_gb, r->cfg->disk_allocation_ratio);
}

int resources_check(const struct resources *r, struct store *s, const struct flavor *want,
                    struct agent_error *err)
{
    struct flavor cap, used;
    int64_t want_disk = resources_disk_of(r, want);
    int rc;

    if (!r->known)
        return agent_error_set(err, EAGAIN, "unavailable", NULL,
                               "the host's capacity is not known yet (hypervisor not connected)");
    if ((rc = allocated(r, s, &used, NULL)) < 0)
        return agent_error_set(err, -rc, "internal", NULL, "cannot read allocations");
    add_foreign(r, &used);
    resources_usable(r, &cap);
    if (used.vcpus + want->vcpus > cap.vcpus)
        return agent_error_set(err, ENOSPC, "insufficient_resources", "flavor.vcpus",
                               "%lld vCPUs requested, %lld of %lld free", (long long)want->vcpus,
                               (long long)(cap.vcpus - used.vcpus), (long long)cap.vcpus);
    if (used.memory_mb + want->memory_mb > cap.memory_mb)
        return agent_error_set(err, ENOSPC, "insufficient_resources", "flavor.memory_mb",
                               "%lld MiB requested, %lld of %lld MiB free",
                               (long long)want->memory_mb, (long long)(cap.memory_mb - used.memory_mb),
                               (long long)cap.memory_mb);
    if (used.disk_gb + want_disk > cap.disk_gb)
        return agent_error_set(err, ENOSPC, "insufficient_resources", "flavor.disk_gb",
                               "%lld GiB requested, %lld of %lld GiB free", (long long)want_disk,
                               (long long)(cap.disk_gb - used.disk_gb), (long long)cap.disk_gb);
    return 0;
}

int resources_to_json(const struct resources *r, struct store *s, json_t *obj)
{
    struct flavor cap, used = {0};
    int64_t count = 0;
    int rc = allocated(r, s, &used, &count);

    if (rc < 0)
        return rc;
    resources_usable(r, &cap);
    json_object_set_new(obj, "capacity", json_pack("{s:I, s:I, s:I}", "vcpus", (json_int_t)r->cpus,
                                                   "memory_mb", (json_int_t)r->memory_mb, "disk_gb",
                                                   (json_int_t)r->disk_gb));
    json_object_set_new(obj, "reserved",
                        json_pack("{s:I, s:I, s:I}", "vcpus", (json_int_t)r->cfg->reserved_host_cpus,
                                  "memory_mb", (json_int_t)r->cfg->reserved_host_memory_mb, "disk_gb",
                                  (json_int_t)r->cfg->reserved_host_disk_gb));
    json_object_set_new(obj, "allocation_ratios",
                        json_pack("{s:f, s:f, s:f}", "vcpu", r->cfg->cpu_allocation_ratio, "memory",
                                  r->cfg->ram_allocation_ratio, "disk", r->cfg->disk_allocation_ratio));
    json_object_set_new(obj, "allocated", json_pack("{s:I, s:I, s:I}", "vcpus", (json_int_t)used.vcpus,
                                                    "memory_mb", (json_int_t)used.memory_mb,
                                                    "disk_gb", (json_int_t)used.disk_gb));
    json_object_set_new(obj, "foreign",
                        json_pack("{s:I, s:I, s:I, s:I}", "vcpus", (json_int_t)r->foreign.vcpus,
                                  "memory_mb", (json_int_t)r->foreign.memory_mb, "disk_gb",
                                  (json_int_t)resources_disk_of(r, &r->foreign), "domains",
                                  (json_int_t)r->foreign_domains));
    add_foreign(r, &used);
    json_object_set_new(obj, "free",
                        json_pack("{s:I, s:I, s:I}", "vcpus", (json_int_t)(cap.vcpus - used.vcpus),
                                  "memory_mb", (json_int_t)(cap.memory_mb - used.memory_mb),
                                  "disk_gb", (json_int_t)(cap.disk_gb - used.disk_gb)));
    json_object_set_new(obj, "instances", json_integer(count));
    return 0;
}
