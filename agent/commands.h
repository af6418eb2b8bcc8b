/* commands.h: commands from the bus (P compute.<host>): validated,
 * de-duplicated by request id, journaled through the operations engine, and
 * only then is their offset committed. A bad command produces a
 * "command.rejected" event naming the field, its offset is committed (one
 * bad message never blocks the queue), and nothing else changes.
 *
 * A command: {"op": "launch"|"start"|"stop"|"reboot"|"terminate",
 *   "request_id": "...", "instance_id": "..." (not for launch),
 *   "instance": {the REST launch body} (launch only),
 *   "timeout": S, "force": bool (stop/reboot, optional)} */
#ifndef CA_AGENT_COMMANDS_H
#define CA_AGENT_COMMANDS_H

#include "agent/agent.h"

struct bus_message;

/* The bus's on_command callback (opaque: struct agent). */
void commands_on_message(void *opaque, const struct bus_message *msg);

/* Handle one command body; 0 when it was journaled (or replayed), -errno with
 * err naming the field when it was refused. Exposed for tests and fuzzing. */
int commands_handle(struct agent *a, const char *payload, size_t len, char **request_id,
                    char **instance_id, struct agent_error *err);

#endif
