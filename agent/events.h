/* events.h: what the agent tells the cloud through the bus. Lifecycle
 * events and operation results are written to an outbox table in the same
 * transaction as the state change they report, sent to Kafka after the
 * commit, and deleted only once Kafka acknowledged them: a broker outage
 * delays events, a restart resends what was not acknowledged, nothing is
 * lost. Also the heartbeat and the bus's life. Commands that arrive on the
 * bus go to the on_command hook (commands.c, wired by main): events never
 * calls the command handler itself.
 *
 * Loop thread only. Every events_* call accepts e == NULL (no outbox: the
 * recording calls do nothing and return 0). */
#ifndef CA_AGENT_EVENTS_H
#define CA_AGENT_EVENTS_H

#include <jansson.h>
#include <stdint.h>
#include <uv.h>

#include "agent/instance.h"
#include "agent/store.h"

struct events;
struct bus;
struct bus_message;
struct host;
struct hv;
struct metrics;
struct resources;

/* Borrowed; each must outlive the events object. */
struct events_deps {
    struct store *store;     /* the outbox (required) */
    struct hv *hv;           /* heartbeat: domain type, connected */
    struct resources *res;   /* heartbeat: capacity and use */
    struct host *host;       /* heartbeat: enabled/disabled; sent once ready */
    struct metrics *metrics; /* bus errors counted (NULL: none) */
};

/* Strings borrowed (must outlive the events object). */
struct events_config {
    const char *host_name;      /* the events' "host" and key of host-wide events */
    const char *hypervisor;     /* heartbeat "hypervisor" */
    const char *bus_brokers;    /* "": librdkafka's in-process mock cluster */
    const char *bus_prefix;     /* topic prefix */
    const char *bus_properties; /* extra librdkafka properties "k=v,k=v", or "" */
    int64_t heartbeat_s;        /* heartbeat period */
    int64_t window_events;      /* events kept for events_window_read() (0: 1000) */
    int64_t window_bytes;       /* ... and their payload bytes at most (0: 4 MiB) */
};

struct events_hooks {
    /* A command arrived on the bus: the receiver must end with
     * bus_command_commit(events_bus(e), msg). msg is borrowed for the call. */
    void (*on_command)(void *opaque, const struct bus_message *msg);
};

/* Create the events object and the outbox table (at start, before
 * anything journals). *ret owned by the caller (events_free()). 0 or
 * -errno. hooks and opaque are kept for events_start(). */
int events_new(uv_loop_t *loop, const struct events_deps *deps, const struct events_config *cfg,
               const struct events_hooks *hooks, void *opaque, struct events **ret);

/* Start the bus (brokers from config, or the in-process mock cluster) and
 * the heartbeat; resend the outbox. 0 or -errno with err. */
int events_start(struct events *e, struct agent_error *err);
/* Flush (bounded) and close the bus. */
void events_stop(struct events *e);

/* Record "instance.<state>" for inst. Call inside the transaction that
 * writes the state. request_id may be NULL. */
int events_instance(struct events *e, const struct instance *inst, const char *request_id);
/* Record "operation.<succeeded|failed>". Inside the transaction too. */
int events_operation(struct events *e, const struct op_record *rec, const struct instance *inst);
/* Record "command.rejected" for a bus command that was refused. */
int events_command_rejected(struct events *e, const char *request_id, const char *instance_id,
                            const struct agent_error *err, int32_t partition, int64_t offset);
/* Record "placement.usage_drift" (keyed by host) and send it. */
int events_usage_drift(struct events *e, const char *provider_uuid, const char *const only_in_placement[],
                       size_t n_in_placement, const char *const only_here[], size_t n_here);
/* After a commit: hand new outbox rows to the bus. Cheap when none. */
void events_flush(struct events *e);
/* Record a migration's event (issue 13: "migration.progress",
 * "migration.completed", "migration.failed", "migration.aborted"), keyed
 * by the instance, with fields (taken; may be NULL) merged in, and send it. */
int events_migration(struct events *e, const char *event, const struct instance *inst, const char *request_id,
                     json_t *fields);

/* The bus (borrowed), or NULL when stopped. */
struct bus *events_bus(struct events *e);
/* Release the outbox statements and the object (after events_stop and the
 * loop's last run). Accepts NULL. */
void events_free(struct events *e);

/* The window of recent events (GET /v1/events): every outbox row is also
 * kept, in the same transaction, in the event_log table under its outbox
 * id (the sequence number: increasing, never reused, survives restarts),
 * the newest window_events of them within window_bytes. */
struct events_query {
    int64_t after;            /* events with seq > after; -1: from the oldest kept */
    const char *instance;     /* only this instance's (its UUID), or NULL */
    const char *type;         /* only this "event" name (a GLOB: "instance.*"), or NULL */
    int64_t limit;            /* at most this many */
};

/* The page for q: {"events": [{"seq", "key", "message"}], "next_after",
 * "first_seq", "last_seq", "truncated"} (new reference) into *page and the
 * number of events in it, or -errno. next_after: the `after` to ask with
 * next (the last seq looked at); truncated: events after q->after were
 * dropped from the window before this read (the caller lost them).
 * -ERANGE: after is beyond the newest seq (no such client: a store that
 * was replaced). */
int events_window_read(struct events *e, const struct events_query *q, json_t **page);
/* The newest sequence number given so far (0: none), or -errno. */
int64_t events_last_seq(struct events *e);
/* Call cb (loop thread) after a commit added events: last is the newest
 * seq. One watcher; cb NULL removes it. */
void events_watch(struct events *e, void (*cb)(void *opaque, int64_t last), void *opaque);

/* {"bootstrap_servers", "up", "prefix", "topics", "outbox"} or null (new
 * reference). */
json_t *events_bus_json(struct events *e);

/* The same two from the events object itself (the API holds no struct
 * agent): e may be NULL (then NULL, and null). */
struct bus *events_bus_of(struct events *e);
json_t *events_bus_json_of(struct events *e);

#endif
