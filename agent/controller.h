/* controller.h: the agent's side of the cloud controller's REST API
 * (OpenStack Placement through scheduler-client/): the provider uuid kept in
 * the store, inventories from the resource tracker when they change, traits
 * from the hypervisor, the host's enabled/disabled state, and the periodic
 * usage drift check. With no Placement URL configured, all of it is off and
 * the calls below do nothing. */
#ifndef CA_AGENT_CONTROLLER_H
#define CA_AGENT_CONTROLLER_H

#include <jansson.h>

#include "agent/agent.h"

struct controller;

int controller_new(struct agent *a, struct controller **ret, struct agent_error *err);
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
/* The provider uuid, or NULL. */
const char *controller_provider_uuid(const struct controller *c);

#endif
