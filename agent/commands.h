/* commands.h: commands from the bus (P compute.<host>): validated,
 * de-duplicated by request id, journaled through the operations engine, and
 * only then is their offset committed. A bad command produces a
 * "command.rejected" event naming the field, its offset is committed (one
 * bad message never blocks the queue), and nothing else changes.
 *
 * A command: {"op": "launch"|"start"|"stop"|"reboot"|"terminate",
 *   "request_id": "...", "instance_id": "..." (not for launch),
 *   "instance": {the REST launch body} (launch only),
 *   "timeout": S, "force": bool (stop/reboot, optional)}
 *
 * Loop thread only. */
#ifndef CA_AGENT_COMMANDS_H
#define CA_AGENT_COMMANDS_H

#include <stddef.h>

#include "common/util.h"

struct bus_message;
struct catalog;
struct commands;
struct events;
struct ops;
struct store;

/* Borrowed; each must outlive the commands object. */
struct commands_deps {
    struct ops *ops;         /* where accepted commands go (required) */
    struct store *store;     /* instance lookups for rejections (required) */
    struct catalog *catalog; /* instance types of a launch body (required) */
    struct events *events;   /* rejections recorded, offsets committed (NULL: none) */
};

/* *ret owned by the caller (commands_free()). 0 or -ENOMEM. */
int commands_new(const struct commands_deps *deps, struct commands **ret);
/* Accepts NULL. */
void commands_free(struct commands *c);

/* The bus's command hook (events_hooks.on_command; opaque: struct
 * commands): handles msg, records a rejection, commits its offset. */
void commands_on_message(void *opaque, const struct bus_message *msg);

/* Handle one command body; 0 when it was journaled (or replayed), -errno with
 * err naming the field when it was refused. *request_id and *instance_id
 * (new strings or NULL, the caller frees) are the ids the body named.
 * Exposed for tests and fuzzing. */
int commands_handle(struct commands *c, const char *payload, size_t len, char **request_id,
                    char **instance_id, struct agent_error *err);

#endif
