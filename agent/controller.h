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
#include <uv.h>

#include "agent/config.h"
#include "common/util.h"

struct controller;
struct events;
struct host;
struct hv;
struct hv_host_info;
struct resources;
struct store;

/* Borrowed; each must outlive the controller. */
struct controller_deps {
    struct store *store;   /* the provider uuid, the instances for the usage check */
    struct resources *res; /* inventories */
    struct hv *hv;         /* domain type (traits) */
    struct host *host;     /* enabled/disabled at each sync */
    struct events *events; /* "placement.usage_drift" (NULL: only logged) */
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
json_t *controller_to_json(const struct controller *c);
/* Whether Placement answered the last request: 1, 0, or -1 when no
 * controller is configured. */
int controller_reachable(const struct controller *c);
/* The provider uuid, or NULL. */
const char *controller_provider_uuid(const struct controller *c);

#endif
