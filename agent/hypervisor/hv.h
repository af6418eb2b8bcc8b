/* hv.h: the hypervisor layer. One small driver table (struct hv_driver) with
 * one file per driver (kvm.c, xen.c, test.c), filled with designated
 * initializers; struct hv is a live connection through one driver.
 *
 * Threads: every hv_* call that talks to libvirt blocks, so the agent makes
 * them from worker threads only (uv_queue_work). Domain events and connection
 * loss are received on libvirt's event thread and handed to the loop through
 * uv_async: the event callback given to hv_new() always runs on the loop. */
#ifndef CA_AGENT_HV_H
#define CA_AGENT_HV_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "agent/instance.h"

enum hv_power {
    HV_POWER_NOSTATE,
    HV_POWER_RUNNING,
    HV_POWER_PAUSED,
    HV_POWER_SHUTDOWN, /* shutting down */
    HV_POWER_SHUTOFF,
    HV_POWER_CRASHED,
};

const char *hv_power_name(enum hv_power p);

/* The host a domain belongs to, as its metadata records it: the agent's
 * host name (agent.host_name) and libvirt's host UUID (capabilities
 * /host/uuid). "" where not recorded (domains written before the owner was,
 * or a driver without a host UUID). */
struct hv_owner {
    char host[256];
    char host_uuid[37];
};

/* What a driver needs to build a guest's domain. */
struct hv_guest {
    const struct instance *inst; /* identity, flavor, boot source (borrowed) */
    const char *disk_path;       /* guest disk, NULL for none */
    const char *disk_format;     /* "qcow2" or "raw" */
    const char *console_log;     /* serial console log file */
    const struct hv_owner *owner; /* set by hv_domain_xml(): this host */
};

/* A domain as libvirt reports it. ours: it carries our metadata and every
 * field of it is valid; ident then holds it (uuid, ec2_id, name, flavor,
 * instance_type, boot) and owner the host it names. meta_error says why
 * metadata in our namespace was refused ("" if none or valid). */
struct hv_domain {
    char uuid[37];
    char name[128];
    enum hv_power power;
    bool ours;
    struct instance ident;
    struct hv_owner owner;
    char meta_error[200];
};
void hv_domain_list_free(struct hv_domain *doms, size_t n);

struct hv_host_info {
    int64_t cpus;        /* logical CPUs */
    int64_t memory_mb;   /* host memory */
    char cpu_model[64];
    char *capabilities;  /* libvirt capabilities XML (owned, may be NULL) */
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

struct hv;

struct hv_driver {
    const char *name;        /* "kvm", "xen", "test" */
    const char *default_uri; /* used when no URI is configured */
    bool disk_files;         /* guests' disks are real files the agent makes */
    bool reboot_no_event;    /* a reboot is done when the call returns (no event) */
    /* Decide the domain type (and anything else host-specific) after connect. */
    int (*probe)(struct hv *hv, struct agent_error *err);
    /* The domain XML for a guest (*xml owned by the caller). */
    int (*domain_xml)(struct hv *hv, const struct hv_guest *g, char **xml, struct agent_error *err);
    int (*define)(struct hv *hv, const char *xml, struct agent_error *err);
    int (*start)(struct hv *hv, const char *uuid, struct agent_error *err);
    int (*shutdown)(struct hv *hv, const char *uuid, struct agent_error *err);
    int (*destroy)(struct hv *hv, const char *uuid, struct agent_error *err);
    int (*reboot)(struct hv *hv, const char *uuid, struct agent_error *err);
    int (*reset)(struct hv *hv, const char *uuid, struct agent_error *err);
    int (*undefine)(struct hv *hv, const char *uuid, struct agent_error *err);
    int (*power)(struct hv *hv, const char *uuid, enum hv_power *ret, struct agent_error *err);
    int (*list)(struct hv *hv, struct hv_domain **ret, size_t *n, struct agent_error *err);
    int (*host_info)(struct hv *hv, struct hv_host_info *ret, struct agent_error *err);
};

extern const struct hv_driver hv_driver_kvm;
extern const struct hv_driver hv_driver_xen;
extern const struct hv_driver hv_driver_test;

/* The driver for a --hypervisor name (kvm, qemu, xen, test); NULL if none.
 * "qemu" is the kvm driver with emulation forced. */
const struct hv_driver *hv_driver_find(const char *name);

struct hv_config {
    const char *uri;         /* NULL/"" for the driver's default */
    const char *domain_type; /* "auto", "kvm" or "qemu" (kvm driver) */
    const char *host_name;   /* recorded as the owner in every domain's metadata */
};

typedef void (*hv_event_cb)(const struct hv_event *ev, void *opaque);

/* Create (not yet connected). cb runs on loop's thread. */
int hv_new(uv_loop_t *loop, const struct hv_driver *drv, const struct hv_config *cfg,
           hv_event_cb cb, void *opaque, struct hv **ret);
/* Stop the event thread and close the connection. Accepts NULL. Loop thread. */
void hv_free(struct hv *hv);

/* Open the connection, register for events and probe (blocking: worker thread). */
int hv_connect(struct hv *hv, struct agent_error *err);
bool hv_connected(struct hv *hv);

const struct hv_driver *hv_driver(const struct hv *hv);
const char *hv_uri(const struct hv *hv);
/* The <domain type=...> this host uses ("kvm", "qemu", "xen", "test"). */
const char *hv_domain_type(const struct hv *hv);
/* Why the domain type was chosen (for logs and GET /v1/host). */
const char *hv_domain_type_reason(const struct hv *hv);
/* This host as domain metadata names it: the configured host name and the
 * libvirt host UUID read at the last connect ("" if libvirt has none). */
void hv_owner_self(struct hv *hv, struct hv_owner *ret);

/* Blocking calls through the driver table; -ENOTSUP when the driver lacks
 * the operation (err says so). Worker threads only. */
int hv_domain_xml(struct hv *hv, const struct hv_guest *g, char **xml, struct agent_error *err);
int hv_define(struct hv *hv, const char *xml, struct agent_error *err);
int hv_start(struct hv *hv, const char *uuid, struct agent_error *err);
int hv_shutdown(struct hv *hv, const char *uuid, struct agent_error *err);
int hv_destroy(struct hv *hv, const char *uuid, struct agent_error *err);
int hv_reboot(struct hv *hv, const char *uuid, struct agent_error *err);
int hv_reset(struct hv *hv, const char *uuid, struct agent_error *err);
int hv_undefine(struct hv *hv, const char *uuid, struct agent_error *err);
int hv_power(struct hv *hv, const char *uuid, enum hv_power *ret, struct agent_error *err);
int hv_list(struct hv *hv, struct hv_domain **ret, size_t *n, struct agent_error *err);
int hv_host_info(struct hv *hv, struct hv_host_info *ret, struct agent_error *err);
void hv_host_info_release(struct hv_host_info *info);

#endif
