/* events.h: what the agent tells the cloud through the bus. Lifecycle
 * events and operation results are written to an outbox table in the same
 * transaction as the state change they report, sent to Kafka after the
 * commit, and deleted only once Kafka acknowledged them: a broker outage
 * delays events, a restart resends what was not acknowledged, nothing is
 * lost. Also the heartbeat and the bus's life (commands: commands.c). */
#ifndef CA_AGENT_EVENTS_H
#define CA_AGENT_EVENTS_H

#include <jansson.h>

#include "agent/agent.h"

/* Create the outbox table (at start, before anything journals). */
int events_init(struct agent *a);

/* Start the bus (brokers from config, or the in-process mock cluster) and
 * the heartbeat; resend the outbox. 0 or -errno with err. */
int events_start(struct agent *a, struct agent_error *err);
/* Flush (bounded) and close the bus. */
void events_stop(struct agent *a);

/* Record "instance.<state>" for inst. Call inside the transaction that
 * writes the state. request_id may be NULL. */
int events_instance(struct agent *a, const struct instance *inst, const char *request_id);
/* Record "operation.<succeeded|failed>". Inside the transaction too. */
int events_operation(struct agent *a, const struct op_record *rec, const struct instance *inst);
/* Record "command.rejected" for a bus command that was refused. */
int events_command_rejected(struct agent *a, const char *request_id, const char *instance_id,
                            const struct agent_error *e, int32_t partition, int64_t offset);
/* Record "placement.usage_drift" (keyed by host) and send it. */
int events_usage_drift(struct agent *a, const char *provider_uuid, const char *const only_in_placement[],
                       size_t n_in_placement, const char *const only_here[], size_t n_here);
/* After a commit: hand new outbox rows to the bus. Cheap when none. */
void events_flush(struct agent *a);

struct bus;
/* The bus, or NULL when stopped. */
struct bus *events_bus(struct agent *a);
/* Release the outbox statement (after events_stop and the loop's last run). */
void events_free(struct agent *a);

/* {"bootstrap_servers", "up", "prefix", "topics", "outbox"} or null. */
json_t *events_bus_json(struct agent *a);

/* The same two from the events object itself (the API holds no struct
 * agent): e may be NULL (then NULL, and null). */
struct bus *events_bus_of(struct events *e);
json_t *events_bus_json_of(struct events *e);

#endif
