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

static bool is_x86(const char *arch)
{
    return !strcmp(arch, "x86_64") || !strcmp(arch, "i686");
}

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
    char *caps, arch[16];

    if (hv_conn_get(hv, &conn, NULL) < 0)
        return false;
    hv_guest_arch(hv, arch);
    caps = virConnectGetDomainCapabilities(conn, NULL, arch, NULL, "kvm", 0);
    if (!caps)
        virResetLastError();
    virConnectClose(conn);
    free(caps);
    return caps != NULL;
}

static int kvm_probe(struct hv *hv, struct agent_error *err)
{
    const char *want = hv_config_domain_type(hv);
    char arch[16];

    (void)err;
    if (!strcmp(want, "kvm")) {
        hv_set_domain_type(hv, "kvm", "forced by configuration");
        return 0;
    }
    if (!strcmp(want, "qemu")) {
        hv_set_domain_type(hv, "qemu", "emulation forced by configuration");
        return 0;
    }
    hv_guest_arch(hv, arch);
    /* vmx/svm are x86's names; elsewhere /dev/kvm and libvirt decide */
    if (is_x86(arch) && !cpu_has_virt_flags())
        hv_set_domain_type(hv, "qemu", "no vmx/svm CPU flag: KVM cannot run guests, using emulation");
    else if (!kvm_api_ok())
        hv_set_domain_type(hv, "qemu", "/dev/kvm missing or unusable: using emulation");
    else if (!libvirt_offers_kvm(hv))
        hv_set_domain_type(hv, "qemu", "libvirt offers no kvm domain type: using emulation");
    else
        hv_set_domain_type(hv, "kvm", "KVM works: CPU flags, /dev/kvm API and libvirt agree");
    return 0;
}

/* The machine type for an arch: "pc" (i440fx) on x86, where today's guests
 * and their config drive on IDE live; "virt" on ARM; libvirt's default
 * elsewhere. */
static const char *machine_for(const char *arch)
{
    if (is_x86(arch))
        return "pc";
    if (!strcmp(arch, "aarch64") || !strcmp(arch, "armv7l"))
        return "virt";
    return NULL;
}

static const struct domxml_bus kvm_disks = {"vd", "virtio", 0};
/* The config drive's cdrom on a bus the common guest kernels see (the
 * Debian cloud kernel has no AHCI): IDE on pc (hdc), virtio-scsi elsewhere
 * (q35, virt). */
static const struct domxml_bus kvm_cdroms = {"hd", "ide", 2}; /* hdc */
static const struct domxml_bus kvm_scsi_cdroms = {"sd", "scsi", 0};

static bool has_config_drive(const struct hv_guest *g)
{
    for (size_t i = 0; i < g->n_disks; i++)
        if (g->disks[i].role == HV_DISK_CONFIG)
            return true;
    return false;
}

static int kvm_devices(struct domxml *d, const struct hv_guest *g, const char *machine, uint64_t vmem_mib)
{
    bool ide = machine && !strcmp(machine, "pc");
    const struct domxml_bus *cd = ide ? &kvm_cdroms : &kvm_scsi_cdroms;

    if (domxml_start(d, "devices") || domxml_guest_disks(d, g, &kvm_disks, cd))
        return -1;
    if (!ide && has_config_drive(g) &&
        (domxml_start(d, "controller") || xmlTextWriterWriteAttribute(d->w, BAD_CAST "type", BAD_CAST "scsi") < 0 ||
         xmlTextWriterWriteAttribute(d->w, BAD_CAST "model", BAD_CAST "virtio-scsi") < 0 || domxml_close(d)))
        return -1;
    for (size_t i = 0; i < g->n_nics; i++)
        if (domxml_nic(d, &g->nics[i], "virtio"))
            return -1;
    return (g->console_log && domxml_console(d, g->console_log, "serial")) ||
           (vmem_mib && domxml_virtio_mem(d, vmem_mib, 0)) || domxml_memballoon(d, "virtio") ||
           domxml_close(d);
}

/* Headroom for live resize (issue 12): what was tried on this host's QEMU 7.2
 * and libvirt 9.0 (TCG, machine pc, the test guest's Debian 6.1 cloud kernel,
 * tests/integration/test_hv_live_resize_qemu.py), and why it is this:
 *
 * - vCPUs: <vcpu current=N>M</vcpu> with a <vcpus> list (vCPU 0 enabled and
 *   not hot-pluggable, the others hot-pluggable). virDomainSetVcpusFlags
 *   LIVE|CONFIG plugs one in 15-40 ms; the guest has it online (its onliner
 *   polls every 0.3 s) 1.0-1.5 s after the call for the first hot-plugged
 *   vCPU, 0.45-0.75 s for later ones (raw `virsh setvcpus --live` the same). Unplugging does NOT work here: the guest offlines
 *   and ejects the vCPU in ~0.5 s and QEMU removes it, but QEMU 7.2 emits
 *   DEVICE_DELETED only for ".../vcpuN/lapic", so libvirt waits its 5 s, fails
 *   with "vcpu unplug request timed out" and keeps counting the vCPU; the
 *   next plug then double-adds and once crashed QEMU ("corrupted
 *   double-linked list"). So the kvm driver does not declare
 *   HV_FEAT_VCPU_UNPLUG and refuses a live decrease (a cold resize does it).
 * - Memory up: virtio-mem rather than DIMMs. Both work (a 256 MiB DIMM
 *   attached: guest MemTotal up 0.54 s after the call, detached 0.45 s), but
 *   a DIMM is a device per step (a slot each, 128 MiB steps for Linux, each
 *   unplug needs that whole DIMM movable), while one virtio-mem device
 *   defined at boot grows and shrinks through its <requested> (2 MiB blocks,
 *   virDomainUpdateDeviceFlags LIVE|CONFIG so a reboot keeps it): +256 MiB
 *   seen in the guest's MemTotal 0.15-0.45 s after the call, -256 MiB in
 *   0.7-1.7 s (test_hv_live_resize_qemu.py's runs). libvirt
 *   finds the device by its PCI address and QEMU by its alias, so the update
 *   sends the element as dumpxml gives it (our user alias ua-ca-vmem0 keeps
 *   the persistent definition's alias the same). It needs <maxMemory> and a
 *   guest NUMA cell; Linux adds whole 128 MiB memory blocks, so a headroom
 *   (max - boot) in 128 MiB multiples is all usable.
 * - Memory below the boot memory: the virtio balloon (virDomainSetMemoryFlags:
 *   with virtio-mem present libvirt's ceiling for it is the boot memory);
 *   256 -> 192 MiB seen in MemTotal 0.2-0.8 s after the call.
 * A guest without headroom (max == boot) gets the XML it always had. */
static int kvm_size_xml(struct domxml *d, const struct hv_guest *g, uint64_t *vmem_mib)
{
    unsigned maxv = g->max_vcpus > g->vcpus ? g->max_vcpus : g->vcpus;

    *vmem_mib = domxml_vmem_size_mib(g);
    return (*vmem_mib ? domxml_memory_headroom(d, g->memory_mib, *vmem_mib)
                      : domxml_memory(d, g->memory_mib, g->max_memory_mib)) ||
           (maxv > g->vcpus ? domxml_vcpus_hotplug(d, g->vcpus, maxv) : domxml_vcpu(d, g->vcpus, maxv));
}

static int kvm_domain_xml(struct hv *hv, const struct hv_guest *g, char **xml, struct agent_error *err)
{
    struct domxml d = {0};
    char arch[16];
    struct domxml_os os = {.type = "hvm", .arch = arch, .boot_dev = true, .smbios = g->sysinfo != NULL};
    uint64_t vmem = 0;
    int failed;

    hv_guest_arch(hv, arch);
    os.machine = machine_for(arch);
    failed = domxml_begin(&d, hv_domain_type(hv)) || domxml_identity(&d, g) ||
             domxml_metadata(&d, g) || kvm_size_xml(&d, g, &vmem) || domxml_os(&d, &os, &g->boot) ||
             domxml_sysinfo(&d, g->sysinfo) || domxml_features(&d, is_x86(arch)) ||
             (vmem && domxml_numa_cell(&d, g->max_vcpus > g->vcpus ? g->max_vcpus : g->vcpus, g->memory_mib)) ||
             domxml_lifecycle(&d) || kvm_devices(&d, g, os.machine, vmem);
    return domxml_end(&d, failed, xml, err);
}

static int kvm_device_xml(struct hv *hv, const struct hv_device *dev, char **xml,
                          struct agent_error *err)
{
    (void)hv;
    return domxml_device(dev, &kvm_disks, &kvm_cdroms, "virtio", xml, err);
}

/* What QEMU through libvirt offers (live migration and post-copy: migrate.c). */
const struct hv_driver hv_driver_kvm = {
    .name = "kvm",
    .default_uri = "qemu:///system",
    .features = HV_FEAT_BIT(HV_FEAT_DISK_FILES) | HV_FEAT_BIT(HV_FEAT_REBOOT_EVENT) |
                HV_FEAT_BIT(HV_FEAT_RESET) | HV_FEAT_BIT(HV_FEAT_VCPU_HOTPLUG) |
                HV_FEAT_BIT(HV_FEAT_MEM_HOTPLUG) | HV_FEAT_BIT(HV_FEAT_NIC_HOTPLUG) |
                HV_FEAT_BIT(HV_FEAT_DISK_HOTPLUG) | HV_FEAT_BIT(HV_FEAT_JOB_STATS) |
                HV_FEAT_BIT(HV_FEAT_LIVE_MIGRATE) | HV_FEAT_BIT(HV_FEAT_POSTCOPY),
    .probe = kvm_probe,
    .domain_xml = kvm_domain_xml,
    .device_xml = kvm_device_xml,
    HV_LIBVIRT_COMMON_OPS,
    .reset = hv_lv_reset,
    .set_vcpus = hv_lv_set_vcpus,
    .set_memory = hv_lv_set_memory_vmem,
    .get_size = hv_lv_get_size,
    .set_metadata = hv_lv_set_metadata,
    .attach_device = hv_lv_attach_device,
    .detach_device = hv_lv_detach_device,
    .migrate = hv_lv_migrate,
    .migrate_set_max_downtime = hv_lv_migrate_set_max_downtime,
    .job_info = hv_lv_job_info,
    .job_abort = hv_lv_job_abort,
    .migrate_postcopy = hv_lv_migrate_postcopy,
};
