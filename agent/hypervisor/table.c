/* table.c: the driver registry and the table's entry points. Each hv_* call
 * goes to the driver's entry or answers -ENOTSUP naming the driver and the
 * operation. */
#include <stdlib.h>
#include <string.h>

#include "agent/hypervisor/hv-internal.h"

/* Every driver, by the names --hypervisor accepts. */
static const struct {
    const char *name;
    const struct hv_driver *drv;
} hv_registry[] = {
    {"kvm", &hv_driver_kvm},
    {"qemu", &hv_driver_kvm}, /* emulation forced: the caller's domain_type */
    {"xen", &hv_driver_xen},
    {"test", &hv_driver_test},
};

const struct hv_driver *hv_driver_find(const char *name)
{
    for (size_t i = 0; name && i < ARRAY_SIZE(hv_registry); i++)
        if (strcmp(hv_registry[i].name, name) == 0)
            return hv_registry[i].drv;
    return NULL;
}

const char *hv_feature_name(enum hv_feature f)
{
    static const char *const names[HV_FEAT__COUNT] = {
        [HV_FEAT_DISK_FILES] = "disk_files",     [HV_FEAT_REBOOT_EVENT] = "reboot_event",
        [HV_FEAT_RESET] = "reset",               [HV_FEAT_VCPU_HOTPLUG] = "vcpu_hotplug",
        [HV_FEAT_MEM_HOTPLUG] = "memory_hotplug", [HV_FEAT_NIC_HOTPLUG] = "nic_hotplug",
        [HV_FEAT_DISK_HOTPLUG] = "disk_hotplug", [HV_FEAT_JOB_STATS] = "job_stats",
        [HV_FEAT_LIVE_MIGRATE] = "live_migrate", [HV_FEAT_POSTCOPY] = "postcopy",
        [HV_FEAT_ROOTFS_DIR] = "rootfs_dir",     [HV_FEAT_NIC_VETH] = "nic_veth",
        [HV_FEAT_VCPU_UNPLUG] = "vcpu_unplug",
    };
    return (unsigned)f < HV_FEAT__COUNT && names[f] ? names[f] : "?";
}

static int not_supported(const struct hv *hv, const char *what, struct agent_error *err)
{
    return agent_error_set(err, ENOTSUP, "not_supported", NULL,
                           "the %s driver does not support %s", hv_driver_name(hv), what);
}

/* An entry of the table, or -ENOTSUP. Plain calls, no macro: each entry
 * point reads as what it does. */
#define ENTRY(hv) (hv_driver(hv))

int hv_domain_xml(struct hv *hv, const struct hv_guest *g, char **xml, struct agent_error *err)
{
    struct hv_guest mine = *g;
    struct hv_owner self;

    if (!ENTRY(hv)->domain_xml)
        return not_supported(hv, "domain XML", err);
    hv_owner_self(hv, &self);
    mine.owner = &self;
    return ENTRY(hv)->domain_xml(hv, &mine, xml, err);
}

int hv_device_xml(struct hv *hv, const struct hv_device *dev, char **xml, struct agent_error *err)
{
    if (!ENTRY(hv)->device_xml)
        return not_supported(hv, "device XML", err);
    return ENTRY(hv)->device_xml(hv, dev, xml, err);
}

int hv_define(struct hv *hv, const char *xml, struct agent_error *err)
{
    if (!ENTRY(hv)->define)
        return not_supported(hv, "define", err);
    return ENTRY(hv)->define(hv, xml, 0, err);
}

int hv_start(struct hv *hv, const char *uuid, struct agent_error *err)
{
    if (!ENTRY(hv)->start)
        return not_supported(hv, "start", err);
    return ENTRY(hv)->start(hv, uuid, 0, err);
}

int hv_shutdown(struct hv *hv, const char *uuid, struct agent_error *err)
{
    if (!ENTRY(hv)->shutdown)
        return not_supported(hv, "shutdown", err);
    return ENTRY(hv)->shutdown(hv, uuid, 0, err);
}

int hv_destroy(struct hv *hv, const char *uuid, struct agent_error *err)
{
    if (!ENTRY(hv)->destroy)
        return not_supported(hv, "destroy", err);
    return ENTRY(hv)->destroy(hv, uuid, 0, err);
}

int hv_reboot(struct hv *hv, const char *uuid, struct agent_error *err)
{
    if (!ENTRY(hv)->reboot)
        return not_supported(hv, "reboot", err);
    return ENTRY(hv)->reboot(hv, uuid, 0, err);
}

int hv_reset(struct hv *hv, const char *uuid, struct agent_error *err)
{
    if (!ENTRY(hv)->reset)
        return not_supported(hv, "reset", err);
    return ENTRY(hv)->reset(hv, uuid, 0, err);
}

int hv_undefine(struct hv *hv, const char *uuid, struct agent_error *err)
{
    if (!ENTRY(hv)->undefine)
        return not_supported(hv, "undefine", err);
    return ENTRY(hv)->undefine(hv, uuid, 0, err);
}

int hv_power(struct hv *hv, const char *uuid, enum hv_power *ret, struct agent_error *err)
{
    if (!ENTRY(hv)->power)
        return not_supported(hv, "power", err);
    return ENTRY(hv)->power(hv, uuid, ret, 0, err);
}

int hv_list(struct hv *hv, struct hv_domain **ret, size_t *n, struct agent_error *err)
{
    if (!ENTRY(hv)->list)
        return not_supported(hv, "list", err);
    return ENTRY(hv)->list(hv, ret, n, 0, err);
}

int hv_host_info(struct hv *hv, struct hv_host_info *ret, struct agent_error *err)
{
    memset(ret, 0, sizeof(*ret));
    if (!ENTRY(hv)->host_info)
        return not_supported(hv, "host_info", err);
    return ENTRY(hv)->host_info(hv, ret, 0, err);
}

int hv_set_vcpus(struct hv *hv, const char *uuid, unsigned n, unsigned flags,
                 struct agent_error *err)
{
    if (!ENTRY(hv)->set_vcpus)
        return not_supported(hv, "set_vcpus", err);
    return ENTRY(hv)->set_vcpus(hv, uuid, n, flags, err);
}

int hv_set_memory(struct hv *hv, const char *uuid, uint64_t mib, unsigned flags,
                  struct agent_error *err)
{
    if (!ENTRY(hv)->set_memory)
        return not_supported(hv, "set_memory", err);
    return ENTRY(hv)->set_memory(hv, uuid, mib, flags, err);
}

int hv_get_size(struct hv *hv, const char *uuid, struct hv_size *ret, struct agent_error *err)
{
    memset(ret, 0, sizeof(*ret));
    if (!ENTRY(hv)->get_size)
        return not_supported(hv, "get_size", err);
    return ENTRY(hv)->get_size(hv, uuid, ret, 0, err);
}

int hv_set_metadata(struct hv *hv, const struct hv_guest *g, unsigned flags, struct agent_error *err)
{
    struct hv_guest mine = *g;
    struct hv_owner self;

    if (!ENTRY(hv)->set_metadata)
        return not_supported(hv, "set_metadata", err);
    hv_owner_self(hv, &self); /* the owner, as hv_domain_xml() writes it */
    mine.owner = &self;
    return ENTRY(hv)->set_metadata(hv, &mine, flags, err);
}

/* attach or detach: the device's XML from the driver, then the call */
static int device_call(struct hv *hv, const char *uuid, const struct hv_device *dev, unsigned flags,
                       bool attach, struct agent_error *err)
{
    int (*fn)(struct hv *, const char *, const char *, unsigned, struct agent_error *) =
        attach ? ENTRY(hv)->attach_device : ENTRY(hv)->detach_device;
    char *xml = NULL;
    int r;

    if (!fn)
        return not_supported(hv, attach ? "attach_device" : "detach_device", err);
    if ((r = hv_device_xml(hv, dev, &xml, err)) < 0)
        return r;
    r = fn(hv, uuid, xml, flags, err);
    free(xml);
    return r;
}

int hv_attach_device(struct hv *hv, const char *uuid, const struct hv_device *dev, unsigned flags,
                     struct agent_error *err)
{
    return device_call(hv, uuid, dev, flags, true, err);
}

int hv_detach_device(struct hv *hv, const char *uuid, const struct hv_device *dev, unsigned flags,
                     struct agent_error *err)
{
    return device_call(hv, uuid, dev, flags, false, err);
}

int hv_migrate(struct hv *hv, const char *uuid, const struct hv_migrate_params *p, unsigned flags,
               struct agent_error *err)
{
    if (!ENTRY(hv)->migrate)
        return not_supported(hv, "migrate", err);
    return ENTRY(hv)->migrate(hv, uuid, p, flags, err);
}

int hv_job_info(struct hv *hv, const char *uuid, struct hv_job_info *ret, struct agent_error *err)
{
    if (!ENTRY(hv)->job_info)
        return not_supported(hv, "job_info", err);
    return ENTRY(hv)->job_info(hv, uuid, ret, 0, err);
}

int hv_job_abort(struct hv *hv, const char *uuid, struct agent_error *err)
{
    if (!ENTRY(hv)->job_abort)
        return not_supported(hv, "job_abort", err);
    return ENTRY(hv)->job_abort(hv, uuid, 0, err);
}

int hv_migrate_set_max_downtime(struct hv *hv, const char *uuid, uint64_t ms, struct agent_error *err)
{
    if (!ENTRY(hv)->migrate_set_max_downtime)
        return not_supported(hv, "migrate_set_max_downtime", err);
    return ENTRY(hv)->migrate_set_max_downtime(hv, uuid, ms, 0, err);
}

int hv_migrate_postcopy(struct hv *hv, const char *uuid, struct agent_error *err)
{
    if (!ENTRY(hv)->migrate_postcopy)
        return not_supported(hv, "migrate_postcopy", err);
    return ENTRY(hv)->migrate_postcopy(hv, uuid, 0, err);
}

void hv_domain_list_free(struct hv_domain *doms, size_t n)
{
    for (size_t i = 0; doms && i < n; i++)
        hv_meta_release(&doms[i].meta);
    free(doms);
}
