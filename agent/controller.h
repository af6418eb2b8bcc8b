/* controller.h: the agent's side of the cloud controller's REST API
 * (OpenStack Placement through scheduler-client/): the provider uuid kept in
 * the store, inventories from the resource tracker when they change, traits
 * from the hypervisor, the host's enabled/disabled state, and the periodic
 * usage drift check. With no Placement URL configured, all of it is off and
 * the calls below do nothing. */
#ifndef CA_AGENT_CONTROLLER_H
#define CA_AGENT_CONTROLLER_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

#include "agent/config.h"
#include "common/util.h"

struct controller;
struct events;
struct host;
struct hv;
struct hv_host_info;
struct instance;
struct metrics;
struct op_record;
struct resources;
struct store;

/* Borrowed; each must outlive the controller. */
struct controller_deps {
    struct store *store;   /* the provider uuid, the instances for the usage check */
    struct resources *res; /* inventories */
    struct hv *hv;         /* domain type (traits) */
    struct host *host;     /* enabled/disabled at each sync */
    struct events *events; /* "placement.usage_drift" (NULL: only logged) */
    struct metrics *metrics; /* allocation counters (NULL: none) */
};

/* cfg (borrowed, must outlive the controller: read again at each host
 * change, so a reload's ratios and reservations take effect) gives the
 * Placement URL and credentials, the host name, the usage check period,
 * the reservations and ratios. *ret owned by the caller (controller_free());
 * 0, or -errno with err naming the setting at fault. */
int controller_new(uv_loop_t *loop, const struct controller_deps *deps, const struct agent_config *cfg,
                   struct controller **ret, struct agent_error *err);
/* Closes the client; memory goes with the loop's close callbacks. NULL ok. */
void controller_free(struct controller *c);

/* The hypervisor was (re)connected: send inventories and traits (only what
 * changed goes out). host: what hv_host_info() read (traits from its CPU
 * features; none if its capabilities were not read). */
void controller_host_changed(struct controller *c, const struct hv_host_info *host);

/* computectl host disable|enable: COMPUTE_STATUS_DISABLED on the provider. */
void controller_set_disabled(struct controller *c, bool disabled);

/* {"url", "provider_uuid", "synced", "reachable", "requests", ...} or
 * null when no controller is configured (new reference). */
/* The standard (os-traits) COMPUTE_* traits of this host into out (at most
 * COMPUTE_TRAITS_MAX, static strings): COMPUTE_NODE; the arch's
 * (x86_64, aarch64); the image types the image cache accepts (qcow2, raw);
 * the storage buses the driver of domain_type puts disks and cdroms on;
 * COMPUTE_NET_VIF_MODEL_VIRTIO when guests get NICs (nics) on a virtio
 * driver and COMPUTE_NET_ATTACH_INTERFACE when NICs hot-plug. Returns the
 * count. */
#define COMPUTE_TRAITS_MAX 12
size_t controller_compute_traits(const char *arch, const char *domain_type, bool nics, bool nic_hotplug,
                                 const char *out[COMPUTE_TRAITS_MAX]);

/* Issue 11: a launch claimed inst's resources. With [placement]
 * allocations = agent its allocation is written (consumer = its uuid);
 * with scheduler a usage check runs at once, so a missing one is reported
 * (log, placement.usage_drift event, metric) now, not at the next interval. */
void controller_claimed(struct controller *c, const struct instance *inst);

/* An operation ended: a terminate that succeeded removes the instance's
 * allocation (every mode); a failed launch with allocations = agent too.
 * Durable without a record of its own: at start every instance the store
 * has as terminated has its allocation removed again (a 404 is done), and
 * with agent every instance holding resources has its allocation written
 * again (a PUT replaces, never doubles). */
void controller_operation_finished(struct controller *c, const struct op_record *rec,
                                   const struct instance *inst);

json_t *controller_to_json(const struct controller *c);
/* Whether Placement answered the last request: 1, 0, or -1 when no
 * controller is configured. */
int controller_reachable(const struct controller *c);
/* The provider uuid, or NULL. */
const char *controller_provider_uuid(const struct controller *c);

#endif
