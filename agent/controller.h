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
/* Issue 12: on the provider when the driver resizes running guests
 * (HV_FEAT_VCPU_HOTPLUG and HV_FEAT_MEM_HOTPLUG). */
#define CONTROLLER_TRAIT_LIVE_RESIZE "CUSTOM_COMPUTE_AGENT_LIVE_RESIZE"
size_t controller_compute_traits(const char *arch, const char *domain_type, bool nics, bool nic_hotplug,
                                 const char *out[COMPUTE_TRAITS_MAX]);

/* Issue 11: a launch claimed inst's resources. With [placement]
 * allocations = agent its allocation is written (consumer = its uuid);
 * with scheduler a usage check runs at once, so a missing one is reported
 * (log, placement.usage_drift event, metric) now, not at the next interval. */
void controller_claimed(struct controller *c, const struct instance *inst);

/* An operation ended: a terminate that succeeded removes the instance's
 * allocation (every mode); a failed launch with allocations = agent too;
 * issue 12's resize, confirm_resize and revert_resize as
 * controller_plan_finished() says. Durable without a record of its own: at
 * start every instance of the store is handled as controller_plan_start()
 * says (a 404 is done, a PUT replaces, a move already made writes nothing).
 * The usage check counts a pending resize's migration consumer as this
 * host's (never healed away) and one without a pending resize as
 * removable (usage_heal = fix). */
void controller_operation_finished(struct controller *c, const struct op_record *rec,
                                   const struct instance *inst);

/* Issue 12, with [placement] allocations = agent (scheduler mode: nothing
 * is written): a cold resize was accepted (ops' resize_claimed hook).
 * inst->resize.old_flavor moves onto the migration consumer
 * inst->resize.migration_uuid (consumer type MIGRATION) and inst->flavor
 * onto the instance, in one POST /allocations, so both stay reserved
 * until confirm or revert. Without a migration uuid the instance's
 * allocation is written with its flavor. */
void controller_resize_claimed(struct controller *c, const struct instance *inst);

/* What the controller asks Placement to do about one instance (see
 * controller_plan_finished(), controller_plan_start()). */
enum controller_alloc_act {
    CONTROLLER_ALLOC_PUT,              /* the instance's allocation := its flavor */
    CONTROLLER_ALLOC_DELETE,           /* the instance's allocation removed */
    CONTROLLER_ALLOC_MOVE,             /* migration consumer := old flavor, instance := flavor (one POST) */
    CONTROLLER_ALLOC_MOVE_BACK,        /* migration consumer emptied, instance := flavor (one POST) */
    CONTROLLER_ALLOC_DELETE_MIGRATION, /* the migration consumer's allocation removed */
};
#define CONTROLLER_ALLOC_ACTS_MAX 2

/* The Placement writes an operation's end asks for (pure; what
 * controller_operation_finished() carries out), into out; the count.
 * agent: [placement] allocations = agent. A terminate that succeeded
 * removes the allocation (every mode) and, with agent, the migration
 * consumer's. With agent: a failed launch removes it; a live resize that
 * ended writes the flavor it has; a cold resize that failed (rolled back)
 * and a revert_resize that succeeded move back (migration consumer
 * emptied, instance = its flavor); a cold resize that succeeded moves again
 * (idempotent); confirm_resize removes the migration consumer. */
size_t controller_plan_finished(const struct op_record *rec, const struct instance *inst, bool agent,
                                enum controller_alloc_act out[CONTROLLER_ALLOC_ACTS_MAX]);

/* What a start asks for one instance of the store (pure; durable without a
 * record of its own: every write is idempotent). Terminated: its
 * allocation removed (every mode). With agent: an instance holding
 * resources gets its allocation written, or with a pending cold resize
 * and a migration uuid the move written again; a migration consumer
 * without a pending cold resize is removed (404 is done); an instance in error has its
 * allocations removed. */
size_t controller_plan_start(const struct instance *inst, bool agent,
                             enum controller_alloc_act out[CONTROLLER_ALLOC_ACTS_MAX]);

/* usage_heal = fix: whether a consumer Placement holds against this
 * provider, not counted by the usage check, may be removed (pure). inst:
 * the store's instance of that uuid (NULL: none); owner: the instance
 * whose resize uses it as migration consumer (NULL: none). Removable: an
 * instance terminated here (with agent also one in error), or the
 * migration consumer of a resize that is settled (or whose instance holds
 * nothing any more). A consumer the store does not know never is. */
bool controller_consumer_removable(const struct instance *inst, const struct instance *owner, bool agent);

json_t *controller_to_json(const struct controller *c);
/* Whether Placement answered the last request: 1, 0, or -1 when no
 * controller is configured. */
int controller_reachable(const struct controller *c);
/* The provider uuid, or NULL. */
const char *controller_provider_uuid(const struct controller *c);

#endif
