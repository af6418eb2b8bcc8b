/* xen.c: libvirt's libxl driver (xen:///system). A guest booted from a
 * kernel runs paravirtualized (PV, <os><type>xen</type>); a guest booted from
 * a disk image runs as HVM. Disks are xvda on the xen bus. */
#include "agent/hypervisor/hv-internal.h"

static int xen_probe(struct hv *hv, struct agent_error *err)
{
    (void)err;
    hv_set_domain_type(hv, "xen", "libxl driver");
    return 0;
}

static int xen_domain_xml(struct hv *hv, const struct hv_guest *g, char **xml, struct agent_error *err)
{
    bool pv = g->inst->boot.kind == BOOT_KERNEL;
    const struct domxml_opts o = {
        .domain_type = hv_domain_type(hv)[0] ? hv_domain_type(hv) : "xen",
        .os = pv ? DOMXML_OS_XEN_PV : DOMXML_OS_HVM,
        .machine = pv ? NULL : "xenfv",
        .serial_file = true,
        .balloon = true,
        .disk_bus = "xen",
        .disk_dev = "xvda",
    };
    return domxml_build(g, &o, xml, err);
}

const struct hv_driver hv_driver_xen = {
    .name = "xen",
    .default_uri = "xen:///system",
    .disk_files = true,
    .probe = xen_probe,
    .domain_xml = xen_domain_xml,
    HV_LIBVIRT_COMMON_OPS,
    .reset = hv_lv_reset,
};
