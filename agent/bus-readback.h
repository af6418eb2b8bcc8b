/* bus-readback.h: read the agent's own events back from P compute.events, so
 * that a restart does not send twice what Kafka already holds.
 *
 * Why: the outbox row of an event is deleted after Kafka acknowledged it. An
 * agent killed between the two (kill -9, power loss) finds the row again at
 * its next start; sending it blindly would put the same event on the topic
 * twice. Each event carries an "event_id" (minted with its outbox row) and
 * its "host"; before resending, the agent reads the topic from where its last
 * recorded acknowledgement left each partition to the end, and drops the
 * rows whose event_id is already there.
 *
 * Bounds: with the idempotent producer, the agent's messages land in each
 * partition in the order they were produced, so every row still in the outbox
 * lies after the last acknowledged offset of its partition (recorded with the
 * deletes, in one transaction). The window is what every host wrote since
 * then: normally a few messages. A partition with no record at all (the topic
 * gained partitions) is read from its start.
 *
 * The reading runs on a detached thread of its own with a consumer of its
 * own (no group joined, nothing committed); done() runs on the loop thread
 * exactly once if bus_readback_start() returned 0 and the reading was not
 * cancelled first, never otherwise. */
#ifndef CA_AGENT_BUS_READBACK_H
#define CA_AGENT_BUS_READBACK_H

#include <librdkafka/rdkafka.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct agent_error;

struct bus_readback_config {
    const char *bootstrap;          /* bootstrap.servers (bus_bootstrap_servers()) */
    const char *host;               /* only events whose "host" is this count */
    const char *topic;              /* full events topic name */
    const char *const *properties;  /* as bus_config.properties (consumer scope) */
    /* Where to start, per partition (index = partition; -1: unknown, read
     * from the partition's start). NULL with n_from 0: nothing is recorded
     * at all (a new store): read nothing, only learn the ends. */
    const int64_t *from;
    size_t n_from;
    int timeout_ms;                 /* whole reading, 0: 30000 */
};

struct bus_readback_result {
    int err;                        /* 0, or -errno (then message says why) */
    char message[256];
    char **event_ids;               /* this host's event ids found (owned) */
    size_t n_ids;
    int64_t *ends;                  /* end offset of each partition (owned) */
    size_t n_parts;
    uint64_t messages;              /* messages read, all hosts */
};

/* res is the callee's to read during the call only; it is freed afterwards. */
typedef void (*bus_readback_cb)(void *opaque, const struct bus_readback_result *res);

struct bus_readback;

/* Start reading (cfg is copied). 0: done() follows once on the loop (unless
 * cancelled), and *handle (if not NULL) is valid until done() returns or
 * until bus_readback_cancel(); -errno (err filled): done() never runs. */
int bus_readback_start(uv_loop_t *loop, const struct bus_readback_config *cfg,
                       bus_readback_cb done, void *opaque, struct bus_readback **handle,
                       struct agent_error *err);

/* Abandon a running readback (loop thread; not from inside done()): done()
 * will not run, the handle is invalid after this call, and the thread stops
 * soon and frees what it holds. The loop is not kept open for it. */
void bus_readback_cancel(struct bus_readback *rb);

/* true if id is among res's event ids. */
bool bus_readback_has(const struct bus_readback_result *res, const char *id);

/* Implemented by bus.c: a consumer conf for reading (bootstrap, client.id
 * "compute-agent.HOST.readback", the user's unscoped and "consumer."
 * properties, no group, nothing committed). 0 and *ret owned, or -errno. */
int bus_reader_conf_new(const char *bootstrap, const char *host, const char *const *props,
                        rd_kafka_conf_t **ret, struct agent_error *err);

#endif
