/* host.h: the host's own state as the operator and the agent see it: enabled
 * or disabled (kept in the store, survives restarts) and ready (the first
 * reconcile after start is done). Loop thread only.
 *
 * Who changes it: the API (enable/disable), main (ready). Who reads it: the
 * operations engine (launches refused while disabled or not ready), the API
 * and the heartbeat (state shown). Who is told: whoever registered with
 * host_on_change() (the Placement controller marks the provider). */
#ifndef CA_AGENT_HOST_H
#define CA_AGENT_HOST_H

#include <stdbool.h>

#include "agent/store.h"
#include "common/util.h"

struct host;

typedef void (*host_change_cb)(void *opaque, bool disabled);

/* Reads host.disabled from the store (absent: enabled). */
int host_new(struct store *st, struct host **ret);
void host_free(struct host *h);

bool host_disabled(const struct host *h);
bool host_ready(const struct host *h);
void host_set_ready(struct host *h);

/* Records the choice in the store first; on failure nothing changes and err
 * says why. Then tells the change hook (only when the state changed). */
int host_set_disabled(struct host *h, bool disabled, struct agent_error *err);

/* One listener (NULL clears it). */
void host_on_change(struct host *h, host_change_cb cb, void *opaque);

#endif
