/* kvm.c: libvirt's QEMU driver. The domain type is "kvm" where KVM really
 * works and "qemu" (TCG emulation) otherwise. /dev/kvm existing is not proof:
 * a nested host can expose a /dev/kvm that cannot run a guest, so the probe
 * asks for the CPU's virtualization flags, the KVM API, and libvirt's own
 * domain capabilities for kvm. The operator may force either. */
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "agent/hypervisor/hv-internal.h"

static bool cpu_has_virt_flags(void)
{
    _cleanup_fclose_ FILE *f = fopen("/proc/cpuinfo", "re");
    char line[8192];

    while (f && fgets(line, sizeof(line), f)) {
        if (strncmp(line, "flags", 5) != 0)
            continue;
        return strstr(line, " vmx") || strstr(line, " svm");
    }
    return false;
}

static bool kvm_api_ok(void)
{
    _cleanup_close_ int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);

    return fd >= 0 && ioctl(fd, KVM_GET_API_VERSION, 0) == KVM_API_VERSION;
}

static bool libvirt_offers_kvm(struct hv *hv)
{
    virConnectPtr conn;
    char *caps;

    if (hv_conn_get(hv, &conn, NULL) < 0)
        return false;
    caps = virConnectGetDomainCapabilities(conn, NULL, "x86_64", NULL, "kvm", 0);
    if (!caps)
        virResetLastError();
    virConnectClose(conn);
    free(caps);
    return caps != NULL;
}

static int kvm_probe(struct hv *hv, struct agent_error *err)
{
    const char *want = hv_config_domain_type(hv);

    (void)err;
    if (!strcmp(want, "kvm")) {
        hv_set_domain_type(hv, "kvm", "forced by configuration");
        return 0;
    }
    if (!strcmp(want, "qemu")) {
        hv_set_domain_type(hv, "qemu", "emulation forced by configuration");
        return 0;
    }
    if (!cpu_has_virt_flags())
        hv_set_domain_type(hv, "qemu", "no vmx/svm CPU flag: KVM cannot run guests, using emulation");
    else if (!kvm_api_ok())
        hv_set_domain_type(hv, "qemu", "/dev/kvm missing or unusable: using emulation");
    else if (!libvirt_offers_kvm(hv))
        hv_set_domain_type(hv, "qemu", "libvirt offers no kvm domain type: using emulation");
    else
        hv_set_domain_type(hv, "kvm", "KVM works: CPU flags, /dev/kvm API and libvirt agree");
    return 0;
}

static int kvm_domain_xml(struct hv *hv, const struct hv_guest *g, char **xml, struct agent_error *err)
{
    const struct domxml_opts o = {
        .domain_type = hv_domain_type(hv),
        .os = DOMXML_OS_HVM,
        .machine = "pc",
        .serial_file = true,
        .balloon = true,
        .disk_bus = "virtio",
        .disk_dev = "vda",
    };
    return domxml_build(g, &o, xml, err);
}

const struct hv_driver hv_driver_kvm = {
    .name = "kvm",
    .default_uri = "qemu:///system",
    .disk_files = true,
    .probe = kvm_probe,
    .domain_xml = kvm_domain_xml,
    HV_LIBVIRT_COMMON_OPS,
    .reset = hv_lv_reset,
};
