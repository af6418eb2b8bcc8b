/* hv.h: the hypervisor layer. One small driver table (struct hv_driver),
 * one file per driver (kvm.c, xen.c, test.c) filled with designated
 * initializers, found by name in a static registry (table.c); struct hv is a
 * live connection through one driver (conn.c).
 *
 * What a driver can do is asked with hv_supports(hv, HV_FEAT_...), never by
 * reading the table's members. A table entry a driver lacks answers
 * -ENOTSUP with err saying which driver and what.
 *
 * Guests are described by struct hv_guest (plain data, no agent types: the
 * agent's agent/guest.c builds it from an instance); the drivers compose the
 * domain XML from the element writers in domxml.c.
 *
 * Threads: every hv_* call that talks to libvirt blocks. The agent makes them
 * on the layer's own threads: hv_submit() (a pool of hv_config.workers
 * threads) or hv_submit_long() (one thread for long jobs: migrations), whose
 * completion callbacks run on the loop. Never on libuv's shared pool: image
 * downloads and hashing use it, and a hung libvirtd must not stall them.
 * Domain events and connection loss are received on libvirt's event thread
 * and handed to the loop through uv_async: the event callback given to
 * hv_new() always runs on the loop. The hv_* getters (hv_uri,
 * hv_domain_type, hv_supports, ...) do not block and may be called on any
 * thread. */
#ifndef CA_AGENT_HV_H
#define CA_AGENT_HV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "common/util.h"

enum hv_power {
    HV_POWER_NOSTATE,
    HV_POWER_RUNNING,
    HV_POWER_PAUSED,
    HV_POWER_SHUTDOWN, /* shutting down */
    HV_POWER_SHUTOFF,
    HV_POWER_CRASHED,
};

const char *hv_power_name(enum hv_power p);

/* ---- what a driver can do ---- */

enum hv_feature {
    HV_FEAT_DISK_FILES,   /* guests' disks and console logs are files the agent makes */
    HV_FEAT_REBOOT_EVENT, /* a graceful reboot ends with a reboot event (else it is
                           * done when the call returns) */
    HV_FEAT_RESET,        /* hard reset (hv_reset) */
    HV_FEAT_VCPU_HOTPLUG, /* hv_set_vcpus(HV_LIVE) within the domain's maximum */
    HV_FEAT_MEM_HOTPLUG,  /* hv_set_memory(HV_LIVE) within the domain's maximum */
    HV_FEAT_NIC_HOTPLUG,  /* hv_attach_device/hv_detach_device(HV_LIVE) of a NIC */
    HV_FEAT_DISK_HOTPLUG, /* the same for a disk */
    HV_FEAT_JOB_STATS,    /* hv_job_info and hv_job_abort */
    HV_FEAT_LIVE_MIGRATE, /* hv_migrate with HV_MIGRATE_LIVE */
    HV_FEAT_POSTCOPY,     /* hv_migrate_postcopy */
    HV_FEAT_ROOTFS_DIR,   /* a guest's root is a directory (containers) */
    HV_FEAT_NIC_VETH,     /* guests' NICs are host veth pairs, not taps (no QEMU to
                           * open a tap: the test driver, containers) */
    HV_FEAT_VCPU_UNPLUG,  /* hv_set_vcpus(HV_LIVE) may also lower the count (without
                           * it a live decrease answers -ENOTSUP: kvm.c says why) */
    HV_FEAT__COUNT
};
#define HV_FEAT_BIT(f) (1u << (f))

struct hv;

/* Whether the driver of this connection can do f (a driver's declared
 * features, less what its probe found missing on this host). Any thread. */
bool hv_supports(const struct hv *hv, enum hv_feature f);
/* The feature's name ("vcpu_hotplug", ...) for logs and answers; "?" if none. */
const char *hv_feature_name(enum hv_feature f);

/* Flags for entries that change a domain, as libvirt's
 * VIR_DOMAIN_AFFECT_*: HV_CURRENT (0) the domain's current state (live if
 * running, else its definition), HV_LIVE the running domain, HV_CONFIG the
 * persistent definition; LIVE|CONFIG both. Entries that do not change a
 * domain take 0. */
#define HV_CURRENT 0u
#define HV_LIVE (1u << 0)
#define HV_CONFIG (1u << 1)
/* hv_set_vcpus: change the maximum (HV_CONFIG only), as VIR_DOMAIN_VCPU_MAXIMUM */
#define HV_VCPU_MAXIMUM (1u << 2)
/* hv_set_memory: change the maximum (HV_CONFIG only), as VIR_DOMAIN_MEM_MAXIMUM */
#define HV_MEM_MAXIMUM (1u << 3)

/* ---- a guest as the drivers see it (no agent types) ---- */

/* The host a domain belongs to, as its metadata records it: the agent's
 * host name (agent.host_name) and libvirt's host UUID (capabilities
 * /host/uuid). "" where not recorded (domains written before the owner was,
 * or a driver without a host UUID). */
struct hv_owner {
    char host[256];
    char host_uuid[37];
};

enum hv_boot_kind {
    HV_BOOT_DISK,   /* firmware boots the root disk */
    HV_BOOT_KERNEL, /* direct kernel boot: kernel (+ initrd, cmdline) */
    HV_BOOT_INIT,   /* a container's init in its root file system */
};

struct hv_boot {
    enum hv_boot_kind kind;
    const char *kernel;  /* HV_BOOT_KERNEL */
    const char *initrd;  /* HV_BOOT_KERNEL, NULL for none */
    const char *cmdline; /* HV_BOOT_KERNEL, NULL for none */
    const char *init;    /* HV_BOOT_INIT: path inside the root file system */
};

enum hv_disk_role {
    HV_DISK_ROOT,      /* the guest's disk (overlay or image) */
    HV_DISK_EPHEMERAL, /* scratch disk */
    HV_DISK_CONFIG,    /* config drive: read-only cdrom */
    HV_DISK_ROOTFS,    /* a container's root: a directory (HV_FEAT_ROOTFS_DIR) */
};

struct hv_disk {
    enum hv_disk_role role;
    const char *path;   /* file (directory for HV_DISK_ROOTFS) */
    const char *format; /* "qcow2" or "raw"; NULL: raw */
    bool readonly;
};

struct hv_nic {
    char mac[18];        /* "52:54:00:..."; "" lets libvirt choose */
    const char *bridge;  /* attach to this bridge, or */
    const char *tap;     /* use this existing tap device (type ethernet) */
    const char *model;   /* "virtio", ...; NULL: the driver's default */
    unsigned mtu;        /* 0: the network's default */
};

/* The guest's SMBIOS system block (<sysinfo type='smbios'> and <os><smbios
 * mode='sysinfo'/>): cloud-init's ds-identify reads the product, and checks
 * the UUID against meta_data.json's. NULL members are left out. */
struct hv_sysinfo {
    const char *manufacturer;
    const char *product;
    const char *serial;
    const char *uuid;
    const char *family;
};

/* One child element of our <metadata> (namespace CA_XMLNS_URI): its name, an
 * optional text and key/value attributes (NULL values are left out). */
#define HV_META_ATTRS 8
struct hv_meta_attr {
    const char *key;
    const char *value;
};
struct hv_meta_item {
    const char *name;
    const char *text;
    struct hv_meta_attr attrs[HV_META_ATTRS];
};

/* What a driver needs to build a guest's domain. Every pointer is borrowed
 * by the call it is given to. */
struct hv_guest {
    char uuid[37];
    const char *name;           /* libvirt domain name */
    const char *title;          /* human name, NULL for none */
    unsigned vcpus;             /* at boot */
    unsigned max_vcpus;         /* hot-plug ceiling (>= vcpus) */
    uint64_t memory_mib;        /* at boot */
    uint64_t max_memory_mib;    /* ceiling (>= memory_mib) */
    struct hv_boot boot;
    const struct hv_disk *disks;
    size_t n_disks;
    const struct hv_nic *nics;
    size_t n_nics;
    const char *console_log;    /* serial console log file, NULL for none */
    const struct hv_sysinfo *sysinfo; /* SMBIOS system, NULL for none */
    const struct hv_meta_item *meta; /* our <metadata> children */
    size_t n_meta;
    const struct hv_owner *owner;    /* set by hv_domain_xml(): this host */
};

/* A device for hv_attach_device/hv_detach_device. */
enum hv_device_kind { HV_DEVICE_DISK, HV_DEVICE_NIC };
struct hv_device {
    enum hv_device_kind kind;
    const struct hv_disk *disk; /* HV_DEVICE_DISK */
    unsigned disk_index;        /* its place among the guest's disks (target name) */
    const struct hv_nic *nic;   /* HV_DEVICE_NIC */
};

/* Our <metadata> read back (metadata.c): the children of <instance> in our
 * namespace, in document order, each its name, text and unqualified
 * attributes, all owned; <host> is not among them (it is the owner,
 * hv_domain.owner). Only the document's shape is checked (well-formed, no
 * DTD, at most 64 KiB, our namespace): what each field means and whether it
 * is valid is the caller's. */
struct hv_meta_kv {
    char *key;
    char *value;
};
struct hv_meta_entry {
    char *name;               /* "uuid", "flavor", ... */
    char *text;               /* its text content, "" if none */
    struct hv_meta_kv *attrs;
    size_t n_attrs;
};
struct hv_meta {
    struct hv_meta_entry *items;
    size_t n;
};
/* The first entry named name (NULL if none); *count (if not NULL) how many. */
const struct hv_meta_entry *hv_meta_get(const struct hv_meta *m, const char *name, size_t *count);
/* The value of attribute key of e, or NULL (also for e NULL). */
const char *hv_meta_attr(const struct hv_meta_entry *e, const char *key);
/* Free what m holds; leaves it empty. Accepts an empty (zeroed) one. */
void hv_meta_release(struct hv_meta *m);

/* A domain as libvirt reports it. has_meta: it carries our <metadata> and
 * the layer could read it: meta holds its fields, owner the host it names.
 * meta_error says why metadata in our namespace could not be read ("" if
 * none or read). Whether the fields make an instance is the agent's call. */
struct hv_domain {
    char uuid[37];
    char name[128];
    enum hv_power power;
    bool has_meta;
    struct hv_meta meta;
    struct hv_owner owner;
    char meta_error[200];
};
void hv_domain_list_free(struct hv_domain *doms, size_t n);

/* A domain's size now (hv_get_size, issue 12). For a running domain the
 * live figures, else its definition's. */
struct hv_size {
    unsigned vcpus;           /* vCPUs the domain has (hot-plugged ones included) */
    unsigned max_vcpus;       /* its ceiling (<vcpu>M</vcpu>) */
    uint64_t memory_mib;      /* memory the guest holds now: boot memory plus the
                               * hot-plug memory plugged (virtio-mem <current>) */
    uint64_t requested_mib;   /* what the last hv_set_memory asked (== memory_mib
                               * once the guest took it) */
    uint64_t max_memory_mib;  /* its ceiling (<maxMemory>, else <memory>) */
    bool live_vcpus;          /* vCPUs can change live (max_vcpus > 1, vCPU 0 fixed) */
    bool live_memory;         /* memory can change live (the headroom devices exist) */
};

/* ---- the host ---- */

struct hv_numa_cell {
    int id;
    int64_t memory_mb;
    unsigned cpus;
};

/* One guest kind the hypervisor offers (capabilities /guest). */
#define HV_DOMAIN_TYPES 4
struct hv_guest_caps {
    char os_type[8];                    /* "hvm", "xen", "xenpvh", "exe" */
    char arch[16];                      /* "x86_64", "aarch64", ... */
    char domain_types[HV_DOMAIN_TYPES][8]; /* "kvm", "qemu", "xen", ...; "" after the last */
};

/* The host, from virNodeGetInfo() and the capabilities XML (caps.c). Arrays
 * and strings are owned: hv_host_info_release(). */
struct hv_host_info {
    int64_t cpus;         /* logical CPUs */
    int64_t memory_mb;    /* host memory */
    char cpu_model[64];   /* virNodeGetInfo's model */
    char arch[16];        /* /capabilities/host/cpu/arch ("" if unknown) */
    char cpu_name[64];    /* /capabilities/host/cpu/model ("" if none) */
    char cpu_vendor[32];
    char host_uuid[37];
    char **cpu_features;  /* enabled <feature name=...> beyond the model */
    size_t n_cpu_features;
    struct hv_numa_cell *cells;
    size_t n_cells;
    struct hv_guest_caps *guests;
    size_t n_guests;
};

/* Parse a capabilities document (outside input: no network, no entities)
 * into *ret, which is zeroed first. 0, -EINVAL with err (not capabilities
 * XML) or -ENOMEM; on failure nothing is kept. virNodeGetInfo's fields
 * (cpus, memory_mb, cpu_model) are left zero. */
int hv_caps_parse(const char *xml, struct hv_host_info *ret, struct agent_error *err);
/* Whether the host offers guests of os_type on arch with domain type dt
 * (any if dt is NULL). */
bool hv_caps_offers(const struct hv_host_info *info, const char *os_type, const char *arch,
                    const char *dt);
/* Release what the info owns; accepts a zeroed struct; leaves it zeroed. */
void hv_host_info_release(struct hv_host_info *info);

/* ---- long jobs ---- */

enum hv_job_type {
    HV_JOB_NONE,
    HV_JOB_BOUNDED,
    HV_JOB_UNBOUNDED,
    HV_JOB_COMPLETED,
    HV_JOB_FAILED,
    HV_JOB_CANCELLED,
};

/* A domain's job (migration) as virDomainGetJobStats reports it; has_*
 * false for what the driver did not report. */
struct hv_job_info {
    enum hv_job_type type;
    uint64_t elapsed_ms;
    bool has_data;
    uint64_t data_total, data_processed, data_remaining; /* bytes */
    bool has_memory;
    uint64_t mem_total, mem_processed, mem_remaining;    /* bytes */
    uint64_t mem_dirty_rate;                             /* pages/s */
    uint64_t mem_iteration;
    bool has_downtime;
    uint64_t downtime_ms;
    /* issue 13: the disks' copy (NON_SHARED_INC) */
    bool has_disk;
    uint64_t disk_total, disk_processed, disk_remaining; /* bytes */
};

/* hv_migrate flags */
#define HV_MIGRATE_LIVE (1u << 0)
#define HV_MIGRATE_POSTCOPY (1u << 1)     /* allow hv_migrate_postcopy during it */
#define HV_MIGRATE_AUTO_CONVERGE (1u << 2) /* QEMU throttles the vCPUs if it does not converge */
struct hv_migrate_params {
    const char *dest_uri;         /* the target's libvirt URI */
    const char *dest_xml;         /* NULL: the domain's own */
    const char *const *disks;     /* NULL-terminated target names to copy; NULL: none */
    uint64_t max_downtime_ms;
    uint64_t bandwidth_mib_s;     /* 0: unlimited */
    /* issue 13: QEMU's stream address on the target (NULL/"": libvirt's
     * choice), and path prefixes of the guest's files rewritten in the
     * destination XML (NULL-terminated pairs: from, to, from, to, ..., NULL;
     * NULL: none) */
    const char *migrate_uri;
    const char *const *path_map;
};

enum hv_event_type {
    HV_EVENT_STARTED,
    HV_EVENT_STOPPED,      /* shut off for any reason */
    HV_EVENT_CRASHED,
    HV_EVENT_SUSPENDED,
    HV_EVENT_RESUMED,
    HV_EVENT_REBOOTED,
    HV_EVENT_UNDEFINED,
    HV_EVENT_DEFINED,
    HV_EVENT_DISCONNECTED, /* the libvirt connection is gone */
};

struct hv_event {
    enum hv_event_type type;
    char uuid[37];   /* "" for connection events */
    int detail;      /* libvirt's detail code */
};

/* ---- the driver table ---- */

/* Every entry blocks (worker threads only); NULL means the driver cannot:
 * the hv_* call answers -ENOTSUP. Entries take flags like libvirt's
 * (HV_LIVE|HV_CONFIG where they change a domain, else 0 for now). */
struct hv_driver {
    const char *name;        /* "kvm", "xen", "test" */
    const char *default_uri; /* used when no URI is configured */
    unsigned features;       /* HV_FEAT_BIT(...) it can do (hv_supports) */
    /* Decide the domain type (and anything else host-specific) after connect. */
    int (*probe)(struct hv *hv, struct agent_error *err);
    /* The domain XML for a guest (*xml owned by the caller). */
    int (*domain_xml)(struct hv *hv, const struct hv_guest *g, char **xml, struct agent_error *err);
    /* One device's XML (attach/detach). */
    int (*device_xml)(struct hv *hv, const struct hv_device *dev, char **xml, struct agent_error *err);
    int (*define)(struct hv *hv, const char *xml, unsigned flags, struct agent_error *err);
    int (*start)(struct hv *hv, const char *uuid, unsigned flags, struct agent_error *err);
    int (*shutdown)(struct hv *hv, const char *uuid, unsigned flags, struct agent_error *err);
    int (*destroy)(struct hv *hv, const char *uuid, unsigned flags, struct agent_error *err);
    int (*reboot)(struct hv *hv, const char *uuid, unsigned flags, struct agent_error *err);
    int (*reset)(struct hv *hv, const char *uuid, unsigned flags, struct agent_error *err);
    int (*undefine)(struct hv *hv, const char *uuid, unsigned flags, struct agent_error *err);
    int (*power)(struct hv *hv, const char *uuid, enum hv_power *ret, unsigned flags,
                 struct agent_error *err);
    int (*list)(struct hv *hv, struct hv_domain **ret, size_t *n, unsigned flags,
                struct agent_error *err);
    int (*host_info)(struct hv *hv, struct hv_host_info *ret, unsigned flags,
                     struct agent_error *err);
    int (*set_vcpus)(struct hv *hv, const char *uuid, unsigned n, unsigned flags,
                     struct agent_error *err);
    int (*set_memory)(struct hv *hv, const char *uuid, uint64_t mib, unsigned flags,
                      struct agent_error *err);
    /* The domain's size (struct hv_size); flags 0. */
    int (*get_size)(struct hv *hv, const char *uuid, struct hv_size *ret, unsigned flags,
                    struct agent_error *err);
    /* Replace our <metadata> element of domain g->uuid with g's items
     * (HV_LIVE|HV_CONFIG: a live resize keeps both in step). */
    int (*set_metadata)(struct hv *hv, const struct hv_guest *g, unsigned flags,
                        struct agent_error *err);
    int (*attach_device)(struct hv *hv, const char *uuid, const char *xml, unsigned flags,
                         struct agent_error *err);
    int (*detach_device)(struct hv *hv, const char *uuid, const char *xml, unsigned flags,
                         struct agent_error *err);
    int (*migrate)(struct hv *hv, const char *uuid, const struct hv_migrate_params *p,
                   unsigned flags, struct agent_error *err);
    int (*job_info)(struct hv *hv, const char *uuid, struct hv_job_info *ret, unsigned flags,
                    struct agent_error *err);
    int (*job_abort)(struct hv *hv, const char *uuid, unsigned flags, struct agent_error *err);
    int (*migrate_postcopy)(struct hv *hv, const char *uuid, unsigned flags,
                            struct agent_error *err);
    int (*migrate_set_max_downtime)(struct hv *hv, const char *uuid, uint64_t ms, unsigned flags,
                                    struct agent_error *err);
};

extern const struct hv_driver hv_driver_kvm;
extern const struct hv_driver hv_driver_xen;
extern const struct hv_driver hv_driver_test;

/* The driver for a --hypervisor name (kvm, qemu, xen, test); NULL if none.
 * "qemu" is the kvm driver with emulation forced (by the caller's config). */
const struct hv_driver *hv_driver_find(const char *name);

/* ---- the connection ---- */

struct hv_config {
    const char *uri;         /* NULL/"" for the driver's default */
    const char *domain_type; /* "auto", "kvm" or "qemu" (kvm driver) */
    const char *host_name;   /* recorded as the owner in every domain's metadata */
    unsigned workers;        /* libvirt worker threads (hypervisor.workers); 0: 4 */
};

typedef void (*hv_event_cb)(const struct hv_event *ev, void *opaque);

/* Create (not yet connected) and start the layer's threads (event thread,
 * workers, long-job thread). cb runs on loop's thread. 0 or -errno (nothing
 * kept). */
int hv_new(uv_loop_t *loop, const struct hv_driver *drv, const struct hv_config *cfg,
           hv_event_cb cb, void *opaque, struct hv **ret);
/* Stop the threads and close the connection; work still queued is
 * cancelled and every pending done callback runs (status -ECANCELED for
 * work that never ran) before this returns. Accepts NULL. Loop thread; the
 * loop must run once more to release the handles. */
void hv_free(struct hv *hv);

/* Open the connection, register for events, read the host's capabilities
 * and probe (blocking: a worker thread). What the probe decides is set under
 * the connection's lock. */
int hv_connect(struct hv *hv, struct agent_error *err);
bool hv_connected(struct hv *hv);

const struct hv_driver *hv_driver(const struct hv *hv);
const char *hv_driver_name(const struct hv *hv);
const char *hv_uri(const struct hv *hv);
/* The <domain type=...> this host uses ("kvm", "qemu", "xen", "test"; ""
 * before the first connect). A static string: valid for the process. */
const char *hv_domain_type(const struct hv *hv);
/* Why the domain type was chosen (for logs and GET /v1/host); static. */
const char *hv_domain_type_reason(const struct hv *hv);
/* The guests' architecture: the host's, from its capabilities at the last
 * connect; "x86_64" until known. Into buf. */
void hv_guest_arch(struct hv *hv, char buf[16]);
/* This host as domain metadata names it: the configured host name and the
 * libvirt host UUID read at the last connect ("" if libvirt has none). */
void hv_owner_self(struct hv *hv, struct hv_owner *ret);

/* ---- the layer's threads ---- */

/* Blocking work for a worker thread, and its completion on the loop: status
 * 0 when work ran, -ECANCELED when the layer stopped before it could. */
typedef void (*hv_work_fn)(struct hv *hv, void *arg);
typedef void (*hv_done_fn)(struct hv *hv, void *arg, int status);

/* Run work(hv, arg) on one of the worker threads, then done(hv, arg, status)
 * on the loop. done runs exactly once if this returns 0; if it fails
 * (-ESHUTDOWN after hv_stop/hv_free began, -ENOMEM) it never runs. Loop
 * thread (or any thread: done still runs on the loop). */
int hv_submit(struct hv *hv, hv_work_fn work, hv_done_fn done, void *arg);
/* The same on the single long-job thread (migrations and their monitors),
 * so a ten-minute job never holds a worker the short calls need. */
int hv_submit_long(struct hv *hv, hv_work_fn work, hv_done_fn done, void *arg);
/* Refuse new work from now on and cancel what is queued (their done
 * callbacks run on the loop with -ECANCELED); running work finishes. Loop
 * thread; idempotent. */
void hv_stop(struct hv *hv);

/* ---- blocking calls through the driver table ----
 * -ENOTSUP when the driver lacks the operation (err says so). Worker threads
 * only. */
int hv_domain_xml(struct hv *hv, const struct hv_guest *g, char **xml, struct agent_error *err);
int hv_device_xml(struct hv *hv, const struct hv_device *dev, char **xml, struct agent_error *err);
int hv_define(struct hv *hv, const char *xml, struct agent_error *err);
int hv_start(struct hv *hv, const char *uuid, struct agent_error *err);
int hv_shutdown(struct hv *hv, const char *uuid, struct agent_error *err);
int hv_destroy(struct hv *hv, const char *uuid, struct agent_error *err);
int hv_reboot(struct hv *hv, const char *uuid, struct agent_error *err);
int hv_reset(struct hv *hv, const char *uuid, struct agent_error *err);
int hv_undefine(struct hv *hv, const char *uuid, struct agent_error *err);
int hv_power(struct hv *hv, const char *uuid, enum hv_power *ret, struct agent_error *err);
int hv_list(struct hv *hv, struct hv_domain **ret, size_t *n, struct agent_error *err);
/* The host (node info + parsed capabilities); release with
 * hv_host_info_release() (also after a failure). */
int hv_host_info(struct hv *hv, struct hv_host_info *ret, struct agent_error *err);
/* vCPUs (flags HV_LIVE|HV_CONFIG, HV_VCPU_MAXIMUM) and memory in MiB
 * (HV_LIVE|HV_CONFIG, HV_MEM_MAXIMUM).
 * hv_set_vcpus: above the domain's maximum -ERANGE; a live decrease where
 * the driver lacks HV_FEAT_VCPU_UNPLUG -ENOTSUP; else libvirt's answer.
 * hv_set_memory: mib is the memory the guest should have in all. On a
 * domain with the kvm headroom (a virtio-mem device) at or above the boot
 * memory it is boot + virtio-mem <requested> (mib - boot rounded up to the
 * 2 MiB block; the balloon back to all of the boot memory), below it the
 * balloon's target (virtio-mem back to 0); above the ceiling (<maxMemory>)
 * -ERANGE, nothing changed. Without the device (no headroom, the test
 * driver, xen) it is the balloon within <memory> (above it -ERANGE), else
 * libvirt's errors as they come. The call returns when the hypervisor has the new target; the
 * guest takes it afterwards: watch hv_get_size's memory_mib. */
int hv_set_vcpus(struct hv *hv, const char *uuid, unsigned n, unsigned flags,
                 struct agent_error *err);
int hv_set_memory(struct hv *hv, const char *uuid, uint64_t mib, unsigned flags,
                  struct agent_error *err);
/* The domain's size now (issue 12: what a live resize reached). */
int hv_get_size(struct hv *hv, const char *uuid, struct hv_size *ret, struct agent_error *err);
/* Our <metadata> of domain g->uuid rewritten from g (flags HV_LIVE|HV_CONFIG). */
int hv_set_metadata(struct hv *hv, const struct hv_guest *g, unsigned flags, struct agent_error *err);
/* Attach or detach one device (its XML from the driver's device_xml). */
int hv_attach_device(struct hv *hv, const char *uuid, const struct hv_device *dev, unsigned flags,
                     struct agent_error *err);
int hv_detach_device(struct hv *hv, const char *uuid, const struct hv_device *dev, unsigned flags,
                     struct agent_error *err);
/* Migration (flags HV_MIGRATE_*): on the long-job thread (hv_submit_long).
 * kvm: peer-to-peer, persistent on the target, undefined on the source; the
 * destination XML is p->dest_xml or the domain's migratable XML with
 * p->path_map applied (hv_migrate_rewrite_paths); p->disks copied
 * incrementally (the target has the backing files and empty overlays). It
 * returns when the migration ended: 0 moved, else libvirt's error (an
 * hv_job_abort gives -ECANCELED, code "cancelled"). */
int hv_migrate(struct hv *hv, const char *uuid, const struct hv_migrate_params *p, unsigned flags,
               struct agent_error *err);
int hv_job_info(struct hv *hv, const char *uuid, struct hv_job_info *ret, struct agent_error *err);
int hv_job_abort(struct hv *hv, const char *uuid, struct agent_error *err);
int hv_migrate_postcopy(struct hv *hv, const char *uuid, struct agent_error *err);
/* The downtime QEMU may take at the switch, also during a migration (the
 * downtime schedule). */
int hv_migrate_set_max_downtime(struct hv *hv, const char *uuid, uint64_t ms, struct agent_error *err);
/* A pure function: xml with every guest file path (<source file=>, <source
 * path=> of file-backed chars, <log file=>, <kernel>/<initrd>/<loader>/<nvram>
 * text) under one of map's prefixes (NULL-terminated from, to pairs; the
 * first pair whose from is a whole-component prefix wins) rewritten to the
 * matching to. 0 with *ret (free()), -EINVAL (not a domain XML, an odd
 * map), -ENOMEM. */
int hv_migrate_rewrite_paths(const char *xml, const char *const *map, char **ret,
                             struct agent_error *err);

#endif
