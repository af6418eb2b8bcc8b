/* test.c: libvirt's test driver (test:///default, or a node file). State
 * lives in the agent's process, so it serves unit tests, scale tests and
 * benchmarks. It keeps no disks or consoles, and it has no reset. */
#include "agent/hypervisor/hv-internal.h"

static int test_probe(struct hv *hv, struct agent_error *err)
{
    (void)err;
    hv_set_domain_type(hv, "test", "libvirt test driver");
    return 0;
}

static int test_domain_xml(struct hv *hv, const struct hv_guest *g, char **xml, struct agent_error *err)
{
    const struct domxml_opts o = {
        .domain_type = hv_domain_type(hv),
        .os = DOMXML_OS_HVM,
        .machine = NULL,
        .serial_file = false,
        .balloon = false,
        .disk_bus = "virtio",
        .disk_dev = "vda",
    };
    return domxml_build(g, &o, xml, err);
}

const struct hv_driver hv_driver_test = {
    .name = "test",
    .default_uri = "test:///default",
    .disk_files = false,
    .reboot_no_event = true,
    .probe = test_probe,
    .domain_xml = test_domain_xml,
    HV_LIBVIRT_COMMON_OPS,
    /* .reset: the test driver has none; callers get -ENOTSUP */
};
