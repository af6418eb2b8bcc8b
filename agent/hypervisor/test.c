/* test.c: libvirt's test driver (test:///default, or a node file). State
 * lives in the agent's process, so it serves unit tests, scale tests and
 * benchmarks. It keeps no disks or consoles, it has no reset, and a reboot
 * is done when the call returns (no event). It does change vCPUs and
 * memory live (tests/unit/test_hv.c checks), down as well as up: its
 * headroom is today's XML (<vcpu current=N>M, <memory> the ceiling and
 * <currentMemory> the size; no <vcpus> list, NUMA cell or virtio-mem, which
 * it would only store), and hv_set_memory moves <currentMemory>. */
#include "agent/hypervisor/hv-internal.h"

static int test_probe(struct hv *hv, struct agent_error *err)
{
    (void)err;
    hv_set_domain_type(hv, "test", "libvirt test driver");
    return 0;
}

static const struct domxml_bus test_disks = {"vd", "virtio", 0};

static int test_devices(struct domxml *d, const struct hv_guest *g)
{
    if (domxml_start(d, "devices") || domxml_guest_disks(d, g, &test_disks, NULL))
        return -1;
    for (size_t i = 0; i < g->n_nics; i++)
        if (domxml_nic(d, &g->nics[i], "virtio"))
            return -1;
    /* no console: the test driver writes no files */
    return domxml_memballoon(d, "none") || domxml_close(d);
}

static int test_domain_xml(struct hv *hv, const struct hv_guest *g, char **xml, struct agent_error *err)
{
    struct domxml d = {0};
    char arch[16];
    const struct domxml_os os = {.type = "hvm", .arch = arch, .boot_dev = true, .smbios = g->sysinfo != NULL};
    int failed;

    hv_guest_arch(hv, arch);
    failed = domxml_begin(&d, hv_domain_type(hv)) || domxml_identity(&d, g) ||
             domxml_metadata(&d, g) || domxml_memory(&d, g->memory_mib, g->max_memory_mib) ||
             domxml_vcpu(&d, g->vcpus, g->max_vcpus) || domxml_os(&d, &os, &g->boot) ||
             domxml_sysinfo(&d, g->sysinfo) || domxml_features(&d, true) || domxml_lifecycle(&d) ||
             test_devices(&d, g);
    return domxml_end(&d, failed, xml, err);
}

/* libvirt's test driver takes LIVE or CONFIG for setmem, not both
 * ("mutually exclusive"): one call each */
static int test_set_memory(struct hv *hv, const char *uuid, uint64_t mib, unsigned flags,
                           struct agent_error *err)
{
    int r;

    if ((flags & (HV_LIVE | HV_CONFIG)) != (HV_LIVE | HV_CONFIG))
        return hv_lv_set_memory(hv, uuid, mib, flags, err);
    r = hv_lv_set_memory(hv, uuid, mib, flags & ~HV_CONFIG, err);
    return r < 0 ? r : hv_lv_set_memory(hv, uuid, mib, flags & ~HV_LIVE, err);
}

const struct hv_driver hv_driver_test = {
    .name = "test",
    .default_uri = "test:///default",
    /* its guests have no QEMU to open a tap: their ports are veth pairs */
    .features = HV_FEAT_BIT(HV_FEAT_VCPU_HOTPLUG) | HV_FEAT_BIT(HV_FEAT_MEM_HOTPLUG) |
                HV_FEAT_BIT(HV_FEAT_VCPU_UNPLUG) | HV_FEAT_BIT(HV_FEAT_NIC_VETH),
    .probe = test_probe,
    .domain_xml = test_domain_xml,
    HV_LIBVIRT_COMMON_OPS,
    /* .reset: the test driver has none; callers get -ENOTSUP */
    .set_vcpus = hv_lv_set_vcpus,
    .set_memory = test_set_memory,
    .get_size = hv_lv_get_size,
    .set_metadata = hv_lv_set_metadata,
};
