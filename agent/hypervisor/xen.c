/* xen.c: libvirt's libxl driver (xen:///system). A guest booted from a
 * kernel runs paravirtualized (PV, <os><type>xen</type>); a guest booted from
 * a disk image runs as HVM. Disks are xvda... on the xen bus; the config
 * drive is an IDE cdrom for HVM and a read-only disk for PV. The balloon is
 * Xen's own in both: libxl refuses a virtio balloon. */
#include "agent/hypervisor/hv-internal.h"

static int xen_probe(struct hv *hv, struct agent_error *err)
{
    (void)err;
    hv_set_domain_type(hv, "xen", "libxl driver");
    return 0;
}

static const struct domxml_bus xen_disks = {"xvd", "xen", 0};
static const struct domxml_bus xen_cdroms = {"hd", "ide", 2}; /* HVM: hdc */

static int xen_devices(struct domxml *d, const struct hv_guest *g, bool pv)
{
    if (domxml_start(d, "devices") || domxml_guest_disks(d, g, &xen_disks, pv ? NULL : &xen_cdroms))
        return -1;
    for (size_t i = 0; i < g->n_nics; i++)
        if (domxml_nic(d, &g->nics[i], NULL)) /* libxl's default model */
            return -1;
    return (g->console_log && domxml_console(d, g->console_log, pv ? "xen" : "serial")) ||
           domxml_memballoon(d, "xen") || domxml_close(d);
}

static int xen_domain_xml(struct hv *hv, const struct hv_guest *g, char **xml, struct agent_error *err)
{
    bool pv = g->boot.kind == HV_BOOT_KERNEL;
    const char *dt = hv_domain_type(hv)[0] ? hv_domain_type(hv) : "xen";
    struct domxml d = {0};
    char arch[16];
    struct domxml_os os = {.type = "hvm", .arch = arch, .machine = "xenfv", .boot_dev = true};
    int failed;

    hv_guest_arch(hv, arch);
    if (pv)
        os = (struct domxml_os){.type = "xen"};
    failed = domxml_begin(&d, dt) || domxml_identity(&d, g) || domxml_metadata(&d, g) ||
             domxml_memory(&d, g->memory_mib, g->max_memory_mib) ||
             domxml_vcpu(&d, g->vcpus, g->max_vcpus) || domxml_os(&d, &os, &g->boot) ||
             (!pv && domxml_features(&d, true)) || domxml_lifecycle(&d) || xen_devices(&d, g, pv);
    return domxml_end(&d, failed, xml, err);
}

static int xen_device_xml(struct hv *hv, const struct hv_device *dev, char **xml,
                          struct agent_error *err)
{
    (void)hv;
    return domxml_device(dev, &xen_disks, NULL, NULL, xml, err);
}

/* Only what was seen to work is declared (issue 14 verifies live vCPU and
 * memory changes through libxl); the entries exist, so HV_CONFIG changes
 * and what libxl does offer answer for themselves. Live resize (issue 12):
 * libvirt's libxl driver has domainSetVcpusFlags and domainSetMemoryFlags
 * (the Xen balloon, within <memory>: no virtio-mem, no NUMA cell written)
 * and domainGetXMLDesc, read from its source; no Xen host here to run them,
 * so HV_FEAT_VCPU_HOTPLUG/MEM_HOTPLUG/VCPU_UNPLUG stay undeclared and the
 * agent resizes xen guests cold. get_size reads the XML as for the others;
 * set_metadata is libvirt's virDomainSetMetadata, which older libxl drivers
 * lack (the answer is then libvirt's -ENOTSUP). */
const struct hv_driver hv_driver_xen = {
    .name = "xen",
    .default_uri = "xen:///system",
    .features = HV_FEAT_BIT(HV_FEAT_DISK_FILES) | HV_FEAT_BIT(HV_FEAT_REBOOT_EVENT) |
                HV_FEAT_BIT(HV_FEAT_RESET),
    .probe = xen_probe,
    .domain_xml = xen_domain_xml,
    .device_xml = xen_device_xml,
    HV_LIBVIRT_COMMON_OPS,
    .reset = hv_lv_reset,
    .set_vcpus = hv_lv_set_vcpus,
    .set_memory = hv_lv_set_memory,
    .get_size = hv_lv_get_size,
    .set_metadata = hv_lv_set_metadata,
    .attach_device = hv_lv_attach_device,
    .detach_device = hv_lv_detach_device,
    .job_info = hv_lv_job_info,
    .job_abort = hv_lv_job_abort,
    /* .migrate, .migrate_postcopy: -ENOTSUP (libxl has no post-copy) */
};
