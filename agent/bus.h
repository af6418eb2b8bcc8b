/* bus.h: the agent's message bus: Kafka through librdkafka, served on the
 * agent's single libuv loop.
 *
 * Topics (P = topic prefix, H = host name):
 *   P compute.H          commands for this host, consumed in group
 *                        "P compute-agent.H", offsets committed by hand
 *   P compute.events     lifecycle events and operation results, keyed by
 *                        instance, from an idempotent producer; every accepted
 *                        event gets exactly one delivery report
 *   P compute.heartbeat  host heartbeats, keyed by host, fire and forget
 *   P telemetry          samples, keyed by instance, compressed and batched,
 *                        through a bounded queue that drops (and counts) the
 *                        oldest samples when full
 *
 * Nothing polls: every librdkafka queue wakes the loop through
 * rd_kafka_queue_io_event_enable() on one eventfd watched by a uv_poll_t, and
 * is then served without blocking until empty. All callbacks run on the loop
 * thread. librdkafka errors are translated here, once, to -errno values.
 *
 * With no brokers configured the bus starts librdkafka's mock cluster in this
 * process (one broker on loopback); outside clients (kcat, other agents) reach
 * it at bus_bootstrap_servers().
 */
#ifndef CA_AGENT_BUS_H
#define CA_AGENT_BUS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct agent_error;
struct bus;

struct bus_config {
    /* "host:port,...". NULL or "": start the in-process mock cluster. */
    const char *brokers;
    /* Prepended to every topic and to the group id. NULL: "". */
    const char *topic_prefix;
    /* Required. Topic and group names are built from it, so it must leave
     * them made of [A-Za-z0-9._-] and at most 249 characters. */
    const char *host;
    /* Extra librdkafka properties, NULL-terminated array of "key=value".
     * Unscoped ones go to every client; "events.", "telemetry." and
     * "consumer." scope one to the event producer, the telemetry/heartbeat
     * producer or the command consumer ("telemetry.linger.ms=100"). They
     * override the bus's defaults (consumer: session.timeout.ms=6000,
     * heartbeat.interval.ms=500, auto.offset.reset=earliest, and with the
     * in-process mock fetch.wait.max.ms=100 because its broker answers a
     * fetch only when the wait expires; events: message.timeout.ms=0,
     * linger.ms=5), except what the bus owns: bootstrap.servers, group.id,
     * enable.auto.commit, enable.auto.offset.store, enable.idempotence. */
    const char *const *properties;
    /* Commands larger than this are handed over as oversized, without
     * payload. 0: 1 MiB. */
    size_t max_command_bytes;
    /* Telemetry queue bound, in messages and in KiB. 0: 100000 and 16384.
     * Half is librdkafka's queue, half a backlog in front of it. When both
     * are full the oldest samples go: librdkafka's unsent ones (purged in
     * libuv's threadpool, the purge waits for its broker threads) and the
     * oldest of the backlog. */
    size_t telemetry_queue_max;
    size_t telemetry_queue_max_kbytes;
    /* "lz4" or "zstd" (also "gzip", "snappy", "none"). NULL: "lz4". */
    const char *telemetry_compression;
    /* Telemetry batching delay. 0: 500 ms. */
    int telemetry_linger_ms;
    /* false (default): drop the oldest samples as above. true: no backlog;
     * a full librdkafka queue refuses the new sample (-ENOBUFS). Either way
     * the drops are counted. */
    bool telemetry_drop_newest;
    /* A heartbeat not delivered within this is dropped. 0: 10000 ms. */
    int heartbeat_timeout_ms;
    /* Bound on bus_free()'s flush of pending events. 0: 2000 ms. */
    int flush_timeout_ms;
    /* How often librdkafka reports broker states (used for on_state). It
     * also keeps the consumer inside max.poll.interval.ms while idle.
     * 0: 1000 ms. */
    int state_interval_ms;
};

/* A command as read from P compute.H. Owned by the bus: valid from
 * on_command() until bus_command_commit() is called with it (or bus_free()). */
struct bus_message {
    const void *payload; /* NULL when oversized; not NUL-terminated */
    size_t len;          /* payload length, also when oversized */
    const char *key;     /* NUL-terminated copy of the key, NULL if none */
    size_t key_len;
    const char *topic;
    int32_t partition;
    int64_t offset;
    int64_t timestamp_ms; /* broker or producer time, -1 if unknown */
    bool oversized;       /* len > max_command_bytes: report as bad, do not parse */
};

/* All run on the loop thread, from inside the bus. A bus_free() of the bus
 * from one of its callbacks is deferred until the callback returns. */
struct bus_callbacks {
    /* A command arrived. Required unless the bus should not consume (then
     * no consumer is created). The agent calls bus_command_commit(msg) once,
     * after journaling the command or after emitting the error event for a
     * bad one; it may do so inside this callback or later. A command not
     * committed holds its partition's commit point: later commands are
     * handed over but their offsets wait (they come back after a restart,
     * to be recognised by request id), and the bus keeps them in memory.
     * A command is handed over again only to a new bus or after a
     * rebalance, never to the same one otherwise. */
    void (*on_command)(void *opaque, const struct bus_message *msg);
    /* Outcome of bus_publish_event(): err 0 when Kafka acknowledged it (the
     * outbox row can go), else a -errno and the row stays: -ECANCELED (bus
     * freed first; resend after the next start), -ENOTRECOVERABLE (producer
     * failed: make a new bus, resend), -EMSGSIZE or -EINVAL (the broker
     * will never take it: log and delete), others (-EACCES, -ENOENT,
     * -EIO...) need an operator; keep the row. Events never time out
     * locally: an outage only delays this call. Called exactly once for
     * each accepted event, possibly from within bus_free(). */
    void (*on_event_delivered)(void *opaque, int64_t outbox_id, int err);
    /* Where an acknowledged event landed, just before its on_event_delivered
     * with err 0. Optional. */
    void (*on_event_placed)(void *opaque, int64_t outbox_id, int32_t partition,
                            int64_t offset);
    /* Broker connectivity changed (for health). Optional. */
    void (*on_state)(void *opaque, bool up);
    /* A client-level error (-errno). fatal: the producer or consumer can no
     * longer work; free the bus and make a new one (then republish the
     * outbox). Non-fatal ones are informational (commit failures, consumer
     * errors, authorization...). Lost connections are not reported here
     * (on_state is, and librdkafka logs each attempt through on_log).
     * reason is only valid during the call. Optional. */
    void (*on_error)(void *opaque, int err, bool fatal, const char *reason);
    /* librdkafka's log lines, syslog levels (3 error .. 7 debug). Optional. */
    void (*on_log)(void *opaque, int level, const char *facility,
                   const char *message);
};

/* Create the bus and start connecting (returns at once; on_state reports
 * when brokers are reachable). cfg and cb are copied; opaque is passed to
 * every callback. On success *ret owns the bus (free with bus_free()); on
 * failure returns -errno, fills err (code "invalid_field" with the field at
 * fault for bad configuration, else "internal") and *ret is untouched. Either
 * way the loop must run afterwards for the closing handles to be released. */
int bus_new(uv_loop_t *loop, const struct bus_config *cfg,
            const struct bus_callbacks *cb, void *opaque, struct bus **ret,
            struct agent_error *err);

/* Leave the consumer group (commands not committed stay so and come back
 * to the next consumer; every bus_message is freed), flush pending events
 * for at most flush_timeout_ms (their delivery reports reach
 * on_event_delivered, those still pending then with -ECANCELED), drop
 * pending telemetry, stop the mock cluster if it runs here, and close the
 * uv handles. Blocks for at most about flush_timeout_ms + 4 s (3 s to leave
 * the group, 1 s for the mock). Memory is released once the loop has run
 * the close callbacks. Accepts NULL; returns NULL. */
struct bus *bus_free(struct bus *bus);

static inline void bus_freep(struct bus **bus)
{
    if (*bus)
        bus_free(*bus);
}
#define _cleanup_bus_ __attribute__((cleanup(bus_freep)))

/* The bootstrap servers: the configured brokers, or the in-process mock
 * cluster's address. Borrowed, valid until bus_free(). */
const char *bus_bootstrap_servers(const struct bus *bus);

enum bus_topic {
    BUS_TOPIC_COMMANDS,
    BUS_TOPIC_EVENTS,
    BUS_TOPIC_HEARTBEAT,
    BUS_TOPIC_TELEMETRY,
};
/* Full topic name (prefix included). Borrowed, valid until bus_free(). */
const char *bus_topic(const struct bus *bus, enum bus_topic which);
/* The consumer group id. Borrowed, valid until bus_free(). */
const char *bus_group_id(const struct bus *bus);

/* Publish an event (json, len bytes, copied) keyed by key (the instance id;
 * NULL for none) on P compute.events. outbox_id comes back through
 * on_event_delivered. Events with the same key arrive in the order they were
 * published. Returns 0 if accepted (exactly one on_event_delivered follows),
 * else -errno and no callback: -ENOBUFS (local queue full: retry later),
 * -EMSGSIZE, -ESHUTDOWN (bus closing), -ENOTRECOVERABLE (producer failed
 * fatally). */
int bus_publish_event(struct bus *bus, const char *key, const char *json,
                      size_t len, int64_t outbox_id);

/* Send a command to another agent: json (copied) on P compute.<host>,
 * keyed by key, on the lossy producer (no outbox behind it: issue 13's
 * migration messages, whose senders' deadlines cover a loss).
 * 0 if queued, else -errno. */
int bus_send_command(struct bus *bus, const char *host, const char *key, const char *json, size_t len);

/* Publish a heartbeat on P compute.heartbeat, keyed by host. Fire and forget:
 * dropped if not delivered within heartbeat_timeout_ms. 0 or -errno. */
int bus_publish_heartbeat(struct bus *bus, const char *json, size_t len);

/* Publish a telemetry sample (copied) keyed by key on P telemetry. Lossy:
 * returns 0 if queued (it may still be dropped later as one of the oldest),
 * -ENOBUFS if refused because the queue is full (telemetry_drop_newest
 * only), -EMSGSIZE if larger than the backlog's byte bound, -ESHUTDOWN,
 * -EINVAL. Every drop is counted. */
int bus_publish_telemetry(struct bus *bus, const char *key, const char *json,
                          size_t len);

/* Mark msg as handled; its offset is committed (asynchronously) once every
 * earlier command of its partition is handled too, so a crash never skips an
 * unhandled command. Frees msg in every case. Returns 0, or -ESTALE when the
 * partition was taken away meanwhile (a rebalance: the command will be
 * delivered again, to this or another consumer; nothing to do). */
int bus_command_commit(struct bus *bus, const struct bus_message *msg);

/* Whether the brokers are reachable, as last reported to on_state. */
bool bus_is_up(const struct bus *bus);

struct bus_stream_stats {
    uint64_t produced;  /* accepted into the local queue */
    uint64_t delivered; /* acknowledged by the broker */
    uint64_t failed;    /* delivery failed (reported) */
    uint64_t dropped;   /* telemetry: lost to the bound or age limit, be it
                         * refused at publish (not in produced) or evicted */
    uint64_t queued;    /* accepted, outcome not known yet */
    double lag_ms_sum;  /* sum of the delivered ones' latencies, from the
                         * hand-over to librdkafka to the broker's ack */
    double lag_ms_last; /* latest of those */
    double lag_ms_max;
};

struct bus_stats {
    struct bus_stream_stats events, heartbeat, telemetry;
    uint64_t commands_received;
    uint64_t commands_oversized;
    uint64_t commits_done;   /* offset commits acknowledged */
    uint64_t commit_errors;
    uint64_t client_errors;  /* client errors, connection failures included */
    uint64_t wakeups;        /* times librdkafka's queues woke the loop */
    uint64_t peer_sent;      /* commands sent to other agents (bus_send_command) */
    bool up;
};

/* Snapshot of the counters. */
void bus_stats(const struct bus *bus, struct bus_stats *out);

/* Mean delivery lag of a stream in ms, 0 if nothing was delivered yet. */
static inline double bus_stream_lag_ms_avg(const struct bus_stream_stats *s)
{
    return s->delivered ? s->lag_ms_sum / (double)s->delivered : 0.0;
}

#endif
