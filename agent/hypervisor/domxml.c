/* domxml.c: domain XML element writers on libxml2's xmlTextWriter (every
 * value is escaped by the writer). A driver composes them between
 * domxml_begin() and domxml_end() (kvm.c, xen.c, test.c); each returns 0 or
 * -1, and a driver chains them with || so the first failure ends the
 * document. Our <metadata> is read back in metadata.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/hypervisor/hv-internal.h"

/* ---- the document ---- */

int domxml_begin(struct domxml *d, const char *type)
{
    d->buf = xmlBufferCreate();
    d->w = d->buf ? xmlNewTextWriterMemory(d->buf, 0) : NULL;
    if (!d->w)
        return -1;
    xmlTextWriterSetIndent(d->w, 1);
    if (!type)
        return 0;
    if (xmlTextWriterStartElement(d->w, BAD_CAST "domain") < 0 ||
        xmlTextWriterWriteAttribute(d->w, BAD_CAST "type", BAD_CAST type) < 0)
        return -1;
    return 0;
}

void domxml_abort(struct domxml *d)
{
    if (d->w)
        xmlFreeTextWriter(d->w);
    if (d->buf)
        xmlBufferFree(d->buf);
    d->w = NULL;
    d->buf = NULL;
}

int domxml_end(struct domxml *d, bool failed, char **xml, struct agent_error *err)
{
    if (!failed && d->w && xmlTextWriterEndDocument(d->w) >= 0) {
        xmlFreeTextWriter(d->w);
        d->w = NULL;
        *xml = strdup((const char *)xmlBufferContent(d->buf));
        domxml_abort(d);
        if (*xml)
            return 0;
    }
    domxml_abort(d);
    return agent_error_set(err, ENOMEM, "internal", NULL, "cannot write the domain XML");
}

int domxml_start(struct domxml *d, const char *elem)
{
    return xmlTextWriterStartElement(d->w, BAD_CAST elem) < 0 ? -1 : 0;
}

int domxml_close(struct domxml *d)
{
    return xmlTextWriterEndElement(d->w) < 0 ? -1 : 0;
}

static int attr(struct domxml *d, const char *name, const char *value)
{
    return xmlTextWriterWriteAttribute(d->w, BAD_CAST name, BAD_CAST value) < 0 ? -1 : 0;
}

static int attr_u64(struct domxml *d, const char *name, uint64_t v)
{
    return xmlTextWriterWriteFormatAttribute(d->w, BAD_CAST name, "%llu", (unsigned long long)v) < 0
               ? -1
               : 0;
}

/* <elem/> with one attribute */
static int empty_with(struct domxml *d, const char *elem, const char *name, const char *value)
{
    return domxml_start(d, elem) || attr(d, name, value) || domxml_close(d);
}

int domxml_text(struct domxml *d, const char *elem, const char *text)
{
    return xmlTextWriterWriteElement(d->w, BAD_CAST elem, BAD_CAST text) < 0 ? -1 : 0;
}

static int text_u64(struct domxml *d, uint64_t v)
{
    return xmlTextWriterWriteFormatString(d->w, "%llu", (unsigned long long)v) < 0 ? -1 : 0;
}

/* ---- general ---- */

int domxml_identity(struct domxml *d, const struct hv_guest *g)
{
    return domxml_text(d, "name", g->name) || domxml_text(d, "uuid", g->uuid) ||
           (g->title && domxml_text(d, "title", g->title));
}

/* naked: no prefix (virDomainSetMetadata binds unqualified elements to our
 * namespace itself, and refuses an element that declares its prefix) */
static int meta_item(struct domxml *d, const struct hv_meta_item *it, bool naked)
{
    if ((naked ? xmlTextWriterStartElement(d->w, BAD_CAST it->name)
               : xmlTextWriterStartElementNS(d->w, BAD_CAST CA_XMLNS_PREFIX, BAD_CAST it->name, NULL)) < 0)
        return -1;
    for (size_t k = 0; k < HV_META_ATTRS && it->attrs[k].key; k++)
        if (it->attrs[k].value && attr(d, it->attrs[k].key, it->attrs[k].value))
            return -1;
    if (it->text && xmlTextWriterWriteString(d->w, BAD_CAST it->text) < 0)
        return -1;
    return domxml_close(d);
}

static int instance_meta(struct domxml *d, const struct hv_guest *g, bool naked)
{
    const struct hv_owner *own = g->owner;

    if ((naked ? xmlTextWriterStartElement(d->w, BAD_CAST "instance")
               : xmlTextWriterStartElementNS(d->w, BAD_CAST CA_XMLNS_PREFIX, BAD_CAST "instance",
                                             BAD_CAST CA_XMLNS_URI)) < 0)
        return -1;
    for (size_t i = 0; i < g->n_meta; i++)
        if (meta_item(d, &g->meta[i], naked))
            return -1;
    /* the owning host: an agent adopts only domains that name it */
    if (own && own->host[0]) {
        struct hv_meta_item host = {
            .name = "host",
            .attrs = {{"name", own->host}, {"uuid", own->host_uuid[0] ? own->host_uuid : NULL}},
        };
        if (meta_item(d, &host, naked))
            return -1;
    }
    return domxml_close(d);
}

int domxml_metadata(struct domxml *d, const struct hv_guest *g)
{
    return domxml_start(d, "metadata") || instance_meta(d, g, false) || domxml_close(d);
}

int domxml_metadata_element(const struct hv_guest *g, char **xml, struct agent_error *err)
{
    struct domxml d = {0};
    int failed = domxml_begin(&d, NULL) || instance_meta(&d, g, true);

    return domxml_end(&d, failed, xml, err);
}

int domxml_memory(struct domxml *d, uint64_t mib, uint64_t max_mib)
{
    if (max_mib < mib)
        max_mib = mib;
    if (domxml_start(d, "memory") || attr(d, "unit", "MiB") || text_u64(d, max_mib) ||
        domxml_close(d))
        return -1;
    if (mib == max_mib)
        return 0;
    return domxml_start(d, "currentMemory") || attr(d, "unit", "MiB") || text_u64(d, mib) ||
           domxml_close(d);
}

int domxml_vcpu(struct domxml *d, unsigned n, unsigned max)
{
    if (max < n)
        max = n;
    return domxml_start(d, "vcpu") || attr(d, "placement", "static") ||
           (n != max && attr_u64(d, "current", n)) || text_u64(d, max) || domxml_close(d);
}

/* ---- headroom (live resize, issue 12) ---- */

bool domxml_has_headroom(const struct hv_guest *g)
{
    return g->max_vcpus > g->vcpus || g->max_memory_mib > g->memory_mib;
}

uint64_t domxml_vmem_size_mib(const struct hv_guest *g)
{
    uint64_t sz = g->max_memory_mib > g->memory_mib ? g->max_memory_mib - g->memory_mib : 0;

    return (sz + DOMXML_VMEM_BLOCK_MIB - 1) / DOMXML_VMEM_BLOCK_MIB * DOMXML_VMEM_BLOCK_MIB;
}

int domxml_vcpus_hotplug(struct domxml *d, unsigned n, unsigned max)
{
    if (n < 1)
        n = 1;
    if (max < n)
        max = n;
    if (domxml_start(d, "vcpu") || attr(d, "placement", "static") || attr_u64(d, "current", n) ||
        text_u64(d, max) || domxml_close(d) || domxml_start(d, "vcpus"))
        return -1;
    /* QEMU wants vCPU 0 enabled and not hot-pluggable, the boot vCPUs in
     * order after it; the others are plugged (and unplugged) later */
    for (unsigned i = 0; i < max; i++)
        if (domxml_start(d, "vcpu") || attr_u64(d, "id", i) || attr(d, "enabled", i < n ? "yes" : "no") ||
            attr(d, "hotpluggable", i == 0 ? "no" : "yes") || (i < n && attr_u64(d, "order", i + 1)) ||
            domxml_close(d))
            return -1;
    return domxml_close(d);
}

int domxml_memory_headroom(struct domxml *d, uint64_t boot_mib, uint64_t vmem_mib)
{
    uint64_t max = boot_mib + vmem_mib;

    /* one slot: the virtio-mem device (libvirt counts it against maxMemory) */
    return domxml_start(d, "maxMemory") || attr(d, "slots", "1") || attr(d, "unit", "MiB") ||
           text_u64(d, max) || domxml_close(d) || domxml_start(d, "memory") || attr(d, "unit", "MiB") ||
           text_u64(d, max) || domxml_close(d) || domxml_start(d, "currentMemory") ||
           attr(d, "unit", "MiB") || text_u64(d, boot_mib) || domxml_close(d);
}

int domxml_numa_cell(struct domxml *d, unsigned max_vcpus, uint64_t boot_mib)
{
    char cpus[32];

    if (max_vcpus < 1)
        max_vcpus = 1;
    if (max_vcpus == 1)
        snprintf(cpus, sizeof(cpus), "0");
    else
        snprintf(cpus, sizeof(cpus), "0-%u", max_vcpus - 1);
    return domxml_start(d, "cpu") || domxml_start(d, "numa") || domxml_start(d, "cell") ||
           attr(d, "id", "0") || attr(d, "cpus", cpus) || attr_u64(d, "memory", boot_mib) ||
           attr(d, "unit", "MiB") || domxml_close(d) || domxml_close(d) || domxml_close(d);
}

int domxml_virtio_mem(struct domxml *d, uint64_t size_mib, uint64_t requested_mib)
{
    return domxml_start(d, "memory") || attr(d, "model", "virtio-mem") || domxml_start(d, "target") ||
           domxml_start(d, "size") || attr(d, "unit", "MiB") || text_u64(d, size_mib) || domxml_close(d) ||
           domxml_text(d, "node", "0") || domxml_start(d, "block") || attr(d, "unit", "KiB") ||
           text_u64(d, DOMXML_VMEM_BLOCK_MIB * 1024) || domxml_close(d) || domxml_start(d, "requested") ||
           attr(d, "unit", "MiB") || text_u64(d, requested_mib) || domxml_close(d) || domxml_close(d) ||
           empty_with(d, "alias", "name", DOMXML_VMEM_ALIAS) || domxml_close(d);
}

int domxml_os(struct domxml *d, const struct domxml_os *os, const struct hv_boot *boot)
{
    const struct hv_boot none = {.kind = HV_BOOT_DISK};

    if (!boot)
        boot = &none;
    if (domxml_start(d, "os") || domxml_start(d, "type") || (os->arch && attr(d, "arch", os->arch)) ||
        (os->machine && attr(d, "machine", os->machine)) ||
        xmlTextWriterWriteString(d->w, BAD_CAST os->type) < 0 || domxml_close(d))
        return -1;
    switch (boot->kind) {
    case HV_BOOT_KERNEL:
        if (domxml_text(d, "kernel", boot->kernel) ||
            (boot->initrd && domxml_text(d, "initrd", boot->initrd)) ||
            (boot->cmdline && domxml_text(d, "cmdline", boot->cmdline)))
            return -1;
        break;
    case HV_BOOT_INIT:
        if (domxml_text(d, "init", boot->init ? boot->init : "/sbin/init"))
            return -1;
        break;
    case HV_BOOT_DISK:
        if (os->boot_dev && empty_with(d, "boot", "dev", "hd"))
            return -1;
        break;
    }
    if (os->smbios && empty_with(d, "smbios", "mode", "sysinfo"))
        return -1;
    return domxml_close(d);
}

static int sysinfo_entry(struct domxml *d, const char *name, const char *value)
{
    if (!value)
        return 0;
    return domxml_start(d, "entry") || attr(d, "name", name) ||
           xmlTextWriterWriteString(d->w, BAD_CAST value) < 0 || domxml_close(d);
}

int domxml_sysinfo(struct domxml *d, const struct hv_sysinfo *si)
{
    if (!si)
        return 0;
    return domxml_start(d, "sysinfo") || attr(d, "type", "smbios") || domxml_start(d, "system") ||
           sysinfo_entry(d, "manufacturer", si->manufacturer) || sysinfo_entry(d, "product", si->product) ||
           sysinfo_entry(d, "serial", si->serial) || sysinfo_entry(d, "uuid", si->uuid) ||
           sysinfo_entry(d, "family", si->family) || domxml_close(d) || domxml_close(d);
}

int domxml_features(struct domxml *d, bool apic)
{
    return domxml_start(d, "features") ||
           xmlTextWriterWriteElement(d->w, BAD_CAST "acpi", NULL) < 0 ||
           (apic && xmlTextWriterWriteElement(d->w, BAD_CAST "apic", NULL) < 0) || domxml_close(d);
}

int domxml_lifecycle(struct domxml *d)
{
    return domxml_text(d, "on_poweroff", "destroy") || domxml_text(d, "on_reboot", "restart") ||
           domxml_text(d, "on_crash", "destroy");
}

/* ---- devices ---- */

static int file_disk(struct domxml *d, const struct hv_disk *disk, const char *device,
                     const char *dev, const char *bus, bool readonly)
{
    return domxml_start(d, "disk") || attr(d, "type", "file") || attr(d, "device", device) ||
           domxml_start(d, "driver") || attr(d, "name", "qemu") ||
           attr(d, "type", disk->format ? disk->format : "raw") || domxml_close(d) ||
           empty_with(d, "source", "file", disk->path) || domxml_start(d, "target") ||
           attr(d, "dev", dev) || attr(d, "bus", bus) || domxml_close(d) ||
           (readonly && xmlTextWriterWriteElement(d->w, BAD_CAST "readonly", NULL) < 0) ||
           domxml_close(d);
}

int domxml_disk(struct domxml *d, const struct hv_disk *disk, const char *dev, const char *bus)
{
    return file_disk(d, disk, "disk", dev, bus, disk->readonly);
}

int domxml_cdrom(struct domxml *d, const struct hv_disk *disk, const char *dev, const char *bus)
{
    return file_disk(d, disk, "cdrom", dev, bus, true);
}

int domxml_nic(struct domxml *d, const struct hv_nic *nic, const char *default_model)
{
    const char *model = nic->model ? nic->model : default_model;

    if (domxml_start(d, "interface") || attr(d, "type", nic->tap ? "ethernet" : "bridge") ||
        (nic->mac[0] && empty_with(d, "mac", "address", nic->mac)))
        return -1;
    if (nic->tap) {
        if (domxml_start(d, "target") || attr(d, "dev", nic->tap) || attr(d, "managed", "no") ||
            domxml_close(d))
            return -1;
    } else if (empty_with(d, "source", "bridge", nic->bridge ? nic->bridge : "")) {
        return -1;
    }
    return (model && empty_with(d, "model", "type", model)) ||
           (nic->mtu && (domxml_start(d, "mtu") || attr_u64(d, "size", nic->mtu) || domxml_close(d))) ||
           domxml_close(d);
}

int domxml_filesystem(struct domxml *d, const char *source_dir, const char *target_dir,
                      bool readonly)
{
    return domxml_start(d, "filesystem") || attr(d, "type", "mount") ||
           attr(d, "accessmode", "passthrough") || empty_with(d, "source", "dir", source_dir) ||
           empty_with(d, "target", "dir", target_dir) ||
           (readonly && xmlTextWriterWriteElement(d->w, BAD_CAST "readonly", NULL) < 0) ||
           domxml_close(d);
}

/* <ELEM type="pty">, with <log file=path append="on"/> when path is given,
 * and <target [type=target_type] port="0"/>. */
static int pty_chardev(struct domxml *d, const char *elem, const char *log_path,
                       const char *target_type)
{
    return domxml_start(d, elem) || attr(d, "type", "pty") ||
           (log_path && (domxml_start(d, "log") || attr(d, "file", log_path) || attr(d, "append", "on") ||
                         domxml_close(d))) ||
           domxml_start(d, "target") || (target_type && attr(d, "type", target_type)) || attr(d, "port", "0") ||
           domxml_close(d) || domxml_close(d);
}

/* A pty (so virsh console and virDomainOpenConsole work) whose output
 * libvirt also appends to log_path (virtlogd for QEMU), so the log
 * outlives reboots. One device writes the log: the serial port when the
 * console is its alias (target "serial"), else the console itself (Xen
 * PV's "xen" console is the guest's hvc0, its serial port stays quiet). */
int domxml_console(struct domxml *d, const char *log_path, const char *console_target)
{
    bool on_serial = !strcmp(console_target, "serial");

    return pty_chardev(d, "serial", on_serial ? log_path : NULL, NULL) ||
           pty_chardev(d, "console", on_serial ? NULL : log_path, console_target);
}

int domxml_memballoon(struct domxml *d, const char *model)
{
    return empty_with(d, "memballoon", "model", model);
}

int domxml_disk_name(const char *prefix, unsigned index, char buf[8])
{
    size_t n = strlen(prefix);

    if (n > 4 || index >= 26 + 26 * 26)
        return -1;
    memcpy(buf, prefix, n);
    if (index < 26) {
        buf[n++] = (char)('a' + index);
    } else {
        index -= 26;
        buf[n++] = (char)('a' + index / 26);
        buf[n++] = (char)('a' + index % 26);
    }
    buf[n] = '\0';
    return 0;
}

static int one_disk(struct domxml *d, const struct hv_disk *disk, const struct domxml_bus *b,
                    unsigned index, bool cdrom)
{
    char dev[8];

    if (domxml_disk_name(b->prefix, b->first + index, dev) < 0)
        return -1;
    return cdrom ? domxml_cdrom(d, disk, dev, b->bus) : domxml_disk(d, disk, dev, b->bus);
}

int domxml_guest_disks(struct domxml *d, const struct hv_guest *g, const struct domxml_bus *disk,
                       const struct domxml_bus *cdrom)
{
    unsigned nd = 0, nc = 0;

    for (size_t i = 0; i < g->n_disks; i++) {
        const struct hv_disk *k = &g->disks[i];
        int r;
        if (k->role == HV_DISK_ROOTFS)
            r = domxml_filesystem(d, k->path, "/", k->readonly);
        else if (k->role == HV_DISK_CONFIG && cdrom)
            r = one_disk(d, k, cdrom, nc++, true);
        else if (k->role == HV_DISK_CONFIG) {
            struct hv_disk ro = *k;
            ro.readonly = true;
            r = one_disk(d, &ro, disk, nd++, false);
        } else
            r = one_disk(d, k, disk, nd++, false);
        if (r)
            return -1;
    }
    return 0;
}

int domxml_device(const struct hv_device *dev, const struct domxml_bus *disk,
                  const struct domxml_bus *cdrom, const char *nic_model, char **xml,
                  struct agent_error *err)
{
    struct domxml d = {0};
    int failed = domxml_begin(&d, NULL);

    if (!failed && dev->kind == HV_DEVICE_NIC && dev->nic)
        failed = domxml_nic(&d, dev->nic, nic_model);
    else if (!failed && dev->kind == HV_DEVICE_DISK && dev->disk)
        failed = dev->disk->role == HV_DISK_CONFIG && cdrom
                     ? one_disk(&d, dev->disk, cdrom, dev->disk_index, true)
                     : one_disk(&d, dev->disk, disk, dev->disk_index, false);
    else if (!failed) {
        domxml_abort(&d);
        return agent_error_set(err, EINVAL, "invalid", "device", "no device given");
    }
    return domxml_end(&d, failed, xml, err);
}
