/* hv-internal.h: INTERNAL. Shared by the files of agent/hypervisor/ and the
 * unit tests only; not part of the agent's API. */
#ifndef CA_AGENT_HV_INTERNAL_H
#define CA_AGENT_HV_INTERNAL_H

#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>
#include <libxml/xmlwriter.h>
#include <pthread.h>

#include "agent/hypervisor/hv.h"

#define CA_XMLNS_URI "http://compute-agent.org/xmlns/instance/1.0"
#define CA_XMLNS_PREFIX "ca"

/* ---- the connection (conn.c) ---- */

/* Take a reference to the current connection; -ENOTCONN if none. The
 * caller virConnectClose()s it. */
int hv_conn_get(struct hv *hv, virConnectPtr *ret, struct agent_error *err);
/* Set what probe decided, under the connection's lock. type and reason
 * must be static strings (readers keep the pointers). */
void hv_set_domain_type(struct hv *hv, const char *type, const char *reason);
const char *hv_config_domain_type(const struct hv *hv);
/* Clear features the probe found missing on this host. */
void hv_clear_features(struct hv *hv, unsigned bits);

/* Translate the calling thread's last libvirt error into -errno + err. */
int hv_libvirt_error(struct agent_error *err, const char *what);

/* libvirt's virDomainState as our power state. */
enum hv_power hv_power_from_libvirt(int state);

/* ---- worker threads (workers.c) ---- */

struct hv_workers;
/* n short workers plus one long-job thread; done callbacks on loop. Each
 * work and done gets hv. 0 or -errno (nothing kept). */
int hv_workers_new(uv_loop_t *loop, struct hv *hv, unsigned n, struct hv_workers **ret);
int hv_workers_submit(struct hv_workers *w, bool long_job, hv_work_fn work, hv_done_fn done,
                      void *arg);
void hv_workers_stop(struct hv_workers *w);
/* Stop, join the threads, run every done not yet delivered, close the
 * async (the struct is freed by its close callback). Accepts NULL. */
void hv_workers_free(struct hv_workers *w);

/* ---- shared libvirt implementations (libvirt-common.c) ---- */

/* Look a domain up by UUID on the current connection (*conn and *dom to
 * hv_lv_release()); 0 or -errno with err. */
int hv_lv_lookup(struct hv *hv, const char *uuid, virConnectPtr *conn, virDomainPtr *dom,
                 struct agent_error *err);
/* Either may be NULL. */
void hv_lv_release(virConnectPtr conn, virDomainPtr dom);
/* HV_LIVE/HV_CONFIG as libvirt's VIR_DOMAIN_AFFECT_* */
unsigned hv_lv_affect(unsigned flags);

int hv_lv_define(struct hv *hv, const char *xml, unsigned flags, struct agent_error *err);
int hv_lv_start(struct hv *hv, const char *uuid, unsigned flags, struct agent_error *err);
int hv_lv_shutdown(struct hv *hv, const char *uuid, unsigned flags, struct agent_error *err);
int hv_lv_destroy(struct hv *hv, const char *uuid, unsigned flags, struct agent_error *err);
int hv_lv_reboot(struct hv *hv, const char *uuid, unsigned flags, struct agent_error *err);
int hv_lv_reset(struct hv *hv, const char *uuid, unsigned flags, struct agent_error *err);
int hv_lv_undefine(struct hv *hv, const char *uuid, unsigned flags, struct agent_error *err);
int hv_lv_power(struct hv *hv, const char *uuid, enum hv_power *ret, unsigned flags,
                struct agent_error *err);
int hv_lv_list(struct hv *hv, struct hv_domain **ret, size_t *n, unsigned flags,
               struct agent_error *err);
int hv_lv_host_info(struct hv *hv, struct hv_host_info *ret, unsigned flags,
                    struct agent_error *err);
int hv_lv_set_vcpus(struct hv *hv, const char *uuid, unsigned n, unsigned flags,
                    struct agent_error *err);
int hv_lv_set_memory(struct hv *hv, const char *uuid, uint64_t mib, unsigned flags,
                     struct agent_error *err);
/* kvm: set_memory through the virtio-mem device and the balloon (hv.h's
 * hv_set_memory); hv_lv_set_memory where the domain has no virtio-mem. */
int hv_lv_set_memory_vmem(struct hv *hv, const char *uuid, uint64_t mib, unsigned flags,
                          struct agent_error *err);
int hv_lv_get_size(struct hv *hv, const char *uuid, struct hv_size *ret, unsigned flags,
                   struct agent_error *err);
int hv_lv_set_metadata(struct hv *hv, const struct hv_guest *g, unsigned flags,
                       struct agent_error *err);
/* A domain's size from its XML (live: the running domain's, whose
 * <currentMemory> includes virtio-mem's <current>; else the persistent
 * definition's). -EINVAL when it is not a domain document. Exposed for the
 * unit tests. vmem_xml (if not NULL) gets the virtio-mem element as the
 * document has it, <current> left out, <requested> set to req_kib (owned;
 * NULL when there is none); parts (if not NULL) the figures the sums are
 * made of. */
struct hv_size_parts {
    uint64_t boot_kib;     /* the boot memory (the NUMA cells) */
    uint64_t balloon_kib;  /* what the balloon leaves of it */
    bool vmem;             /* a virtio-mem device */
    uint64_t vmem_req_kib, vmem_cur_kib;
};
int hv_size_from_xml(const char *xml, bool live, struct hv_size *ret, struct hv_size_parts *parts,
                     uint64_t req_kib, char **vmem_xml);
int hv_lv_attach_device(struct hv *hv, const char *uuid, const char *xml, unsigned flags,
                        struct agent_error *err);
int hv_lv_detach_device(struct hv *hv, const char *uuid, const char *xml, unsigned flags,
                        struct agent_error *err);
int hv_lv_job_info(struct hv *hv, const char *uuid, struct hv_job_info *ret, unsigned flags,
                   struct agent_error *err);
int hv_lv_job_abort(struct hv *hv, const char *uuid, unsigned flags, struct agent_error *err);
int hv_lv_migrate_postcopy(struct hv *hv, const char *uuid, unsigned flags,
                           struct agent_error *err);
/* migrate.c (issue 13) */
int hv_lv_migrate(struct hv *hv, const char *uuid, const struct hv_migrate_params *p,
                  unsigned flags, struct agent_error *err);
int hv_lv_migrate_set_max_downtime(struct hv *hv, const char *uuid, uint64_t ms, unsigned flags,
                                   struct agent_error *err);
/* virDomainGetJobStats' typed parameters -> *ret (exposed for tests). */
void hv_job_info_from_params(int type, const virTypedParameter *params, int n,
                             struct hv_job_info *ret);

/* The table entries every libvirt-backed driver shares (designated
 * initializers for a driver's table). reset and the hot-plug and job
 * entries are each driver's choice. */
#define HV_LIBVIRT_COMMON_OPS                                                  \
    .define = hv_lv_define, .start = hv_lv_start, .shutdown = hv_lv_shutdown,   \
    .destroy = hv_lv_destroy, .reboot = hv_lv_reboot,                           \
    .undefine = hv_lv_undefine, .power = hv_lv_power, .list = hv_lv_list,       \
    .host_info = hv_lv_host_info

/* ---- domain XML element writers (domxml.c) ----
 * Each returns 0, or nonzero when the writer failed (out of memory); a
 * driver composes them with || between domxml_begin() and domxml_end().
 * Every value goes through xmlTextWriter, which escapes it. */

struct domxml {
    xmlBufferPtr buf;
    xmlTextWriterPtr w;
};
/* Start a document with <domain type=type>, or (type NULL) a bare one for
 * a single device's XML. */
int domxml_begin(struct domxml *d, const char *type);
/* Close every open element, hand the text to *xml (owned by the caller) and
 * free the writer. On any earlier failure (failed true) or now, frees
 * everything and returns -ENOMEM with err. */
int domxml_end(struct domxml *d, bool failed, char **xml, struct agent_error *err);
/* Free without a result (a driver bailing out). */
void domxml_abort(struct domxml *d);

int domxml_start(struct domxml *d, const char *elem);
int domxml_close(struct domxml *d); /* end the innermost element */
int domxml_text(struct domxml *d, const char *elem, const char *text);
/* <name>, <uuid>, <title> */
int domxml_identity(struct domxml *d, const struct hv_guest *g);
/* <metadata><ca:instance> the guest's items, then <ca:host> from g->owner */
int domxml_metadata(struct domxml *d, const struct hv_guest *g);
/* The same <instance> element as a document of its own for
 * virDomainSetMetadata (*xml owned by the caller): naked, no prefix and no
 * namespace declaration, since libvirt binds every unqualified element to
 * the namespace it is given and refuses one that declares its prefix. */
int domxml_metadata_element(const struct hv_guest *g, char **xml, struct agent_error *err);
/* <memory unit=MiB>max</memory>, and <currentMemory> when below max */
int domxml_memory(struct domxml *d, uint64_t mib, uint64_t max_mib);
/* <vcpu placement=static [current=n]>max</vcpu> */
int domxml_vcpu(struct domxml *d, unsigned n, unsigned max);

/* Headroom for live resize (issue 12; kvm.c says what was measured). A
 * guest has headroom when max_vcpus > vcpus or max_memory_mib > memory_mib;
 * without it a driver writes exactly what it wrote before (domxml_vcpu,
 * domxml_memory). */
bool domxml_has_headroom(const struct hv_guest *g);
/* virtio-mem's block (libvirt <block>, and the granularity of <requested>) */
#define DOMXML_VMEM_BLOCK_MIB 2u
/* Our user alias for the one virtio-mem device ("ua-" keeps it in the
 * persistent definition too). */
#define DOMXML_VMEM_ALIAS "ua-ca-vmem0"
/* The virtio-mem device's size for a guest: max_memory_mib - memory_mib,
 * rounded up to the block; 0 without memory headroom. */
uint64_t domxml_vmem_size_mib(const struct hv_guest *g);
/* <vcpu placement=static current=n>max</vcpu> and <vcpus>: vCPU 0 enabled
 * and not hot-pluggable, 1..n-1 enabled (order 2..n), n..max-1 disabled;
 * all but 0 hot-pluggable. */
int domxml_vcpus_hotplug(struct domxml *d, unsigned n, unsigned max);
/* <maxMemory slots=1 unit=MiB>boot+vmem</maxMemory>, <memory> the same,
 * <currentMemory> boot (the balloon's target: all of the boot memory). */
int domxml_memory_headroom(struct domxml *d, uint64_t boot_mib, uint64_t vmem_mib);
/* <cpu><numa><cell id=0 cpus=0-(max-1) memory=boot unit=MiB/></numa></cpu>:
 * libvirt wants a guest NUMA cell for memory devices. */
int domxml_numa_cell(struct domxml *d, unsigned max_vcpus, uint64_t boot_mib);
/* <memory model=virtio-mem> on node 0: size, block, requested (MiB), our
 * alias. */
int domxml_virtio_mem(struct domxml *d, uint64_t size_mib, uint64_t requested_mib);

struct domxml_os {
    const char *type;    /* "hvm", "xen", "exe" */
    const char *arch;    /* NULL: none written (Xen PV, containers) */
    const char *machine; /* NULL: libvirt's default */
    bool boot_dev;       /* <boot dev=hd/> when booting from disk */
    bool smbios;         /* <smbios mode='sysinfo'/> (with domxml_sysinfo) */
};
/* <sysinfo type='smbios'><system><entry name=...>...</system></sysinfo>;
 * nothing when si is NULL. */
int domxml_sysinfo(struct domxml *d, const struct hv_sysinfo *si);
/* <os> with the type and the guest's boot source (kernel, initrd, cmdline,
 * boot device or init). */
int domxml_os(struct domxml *d, const struct domxml_os *os, const struct hv_boot *boot);
/* <features><acpi/>[<apic/>]</features> */
int domxml_features(struct domxml *d, bool apic);
/* on_poweroff destroy, on_reboot restart, on_crash destroy */
int domxml_lifecycle(struct domxml *d);
/* <disk type=file device=disk> with driver name/type, source, target, readonly */
int domxml_disk(struct domxml *d, const struct hv_disk *disk, const char *dev, const char *bus);
/* <disk device=cdrom> (config drive), always read-only */
int domxml_cdrom(struct domxml *d, const struct hv_disk *disk, const char *dev, const char *bus);
/* <interface type=bridge|ethernet> with mac, source/target, model, mtu */
int domxml_nic(struct domxml *d, const struct hv_nic *nic, const char *default_model);
/* <filesystem type=mount> source dir -> target dir */
int domxml_filesystem(struct domxml *d, const char *source_dir, const char *target_dir,
                      bool readonly);
/* <serial type=pty> and <console type=pty target type=console_target>, the
 * output appended to log_path by libvirt (<log file= append=on/>) */
int domxml_console(struct domxml *d, const char *log_path, const char *console_target);
/* <memballoon model=model/> ("none" for none) */
int domxml_memballoon(struct domxml *d, const char *model);
/* Where a guest's disks go: target names prefix + letter from first on,
 * on bus. */
struct domxml_bus {
    const char *prefix; /* "vd", "xvd", "hd" */
    const char *bus;    /* "virtio", "xen", "ide" */
    unsigned first;     /* 0 for "a" */
};
/* The guest's disks in order: root and ephemeral disks on disk (vda,
 * vdb, ...), the config drive as a cdrom on cdrom, or (cdrom NULL) as a
 * read-only disk in the disk sequence; a directory root (HV_DISK_ROOTFS) as
 * a <filesystem> mounted at /. */
int domxml_guest_disks(struct domxml *d, const struct hv_guest *g, const struct domxml_bus *disk,
                       const struct domxml_bus *cdrom);
/* One device (attach/detach) the way domxml_guest_disks and domxml_nic
 * write it. */
int domxml_device(const struct hv_device *dev, const struct domxml_bus *disk,
                  const struct domxml_bus *cdrom, const char *nic_model, char **xml,
                  struct agent_error *err);
/* Target device name for the index-th disk with prefix ("vd" -> "vda"):
 * into buf[8]; -1 past "zz". */
int domxml_disk_name(const char *prefix, unsigned index, char buf[8]);

/* ---- our metadata read back (metadata.c) ---- */

/* Our <metadata> element, as virDomainGetMetadata returns it, -> meta (its
 * children but <host>) and owner (<host>: "" members where not recorded).
 * libvirt 9.0 hands the element back without its namespace declaration (we
 * asked for it by our namespace URI, so it is ours); an element in any other
 * namespace is refused, children in another namespace are skipped. The owner
 * is checked (name required, uuid a UUID); the other fields are not (the
 * agent's ops_instance_from_meta()). On failure -EINVAL (or -ENOMEM),
 * err->message says why, and nothing is kept. */
int hv_meta_parse(const char *xml, struct hv_meta *meta, struct hv_owner *owner,
                  struct agent_error *err);
/* The host UUID in a libvirt capabilities document into buf[37]; "" if none. */
void domxml_caps_host_uuid(const char *caps, char buf[37]);

#endif
