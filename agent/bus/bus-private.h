/* bus-private.h: PRIVATE to the files of agent/bus/: the bus's object and the calls its
 * files make into each other. Nothing outside agent/bus/ includes it (tests use
 * bus-internal.h; the agent uses agent/bus.h).
 *
 * Who does what: bus.c (the object, librdkafka's client-level callbacks, the
 * eventfd and its serve budget, dispatch depth, teardown), conf.c (librdkafka
 * configuration, scoped user properties, topic names, starting a client),
 * produce.c (the acknowledged event producer, heartbeats, delivery
 * accounting), telemetry-queue.c (the lossy telemetry producer, its backlog and
 * the purge on the threadpool), consume.c (the command consumer: partitions,
 * ordered commits, rebalances), mock.c (the in-process mock cluster).
 * Everything here runs on the loop thread unless it says otherwise. */
#ifndef CA_AGENT_BUS_PRIVATE_H
#define CA_AGENT_BUS_PRIVATE_H

#include "agent/bus.h"
#include "common/list.h"
#include "common/util.h"

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#define BUS_DEFAULT_MAX_COMMAND_BYTES (1024 * 1024)
#define BUS_DEFAULT_TELEMETRY_QUEUE_MAX 100000
#define BUS_DEFAULT_TELEMETRY_QUEUE_KBYTES 16384
#define BUS_DEFAULT_TELEMETRY_LINGER_MS 500
#define BUS_DEFAULT_HEARTBEAT_TIMEOUT_MS 10000
#define BUS_DEFAULT_FLUSH_TIMEOUT_MS 2000
#define BUS_DEFAULT_STATE_INTERVAL_MS 1000
/* Bound on leaving the consumer group in bus_free(). */
#define BUS_CLOSE_TIMEOUT_MS 3000
/* Queue entries served per client per wake-up before yielding to the loop
 * (the bus then wakes itself again). */
#define BUS_SERVE_BUDGET 1000
/* Partitions of the topics created in the in-process mock cluster. */
#define BUS_MOCK_EVENT_PARTITIONS 4

_Static_assert(sizeof(void *) >= sizeof(int64_t),
               "outbox ids travel in librdkafka's per-message opaque");

enum bus_client_kind {
    BUS_CLIENT_MOCK,
    BUS_CLIENT_EVENTS,
    BUS_CLIENT_TELEMETRY,
    BUS_CLIENT_CONSUMER,
    BUS_CLIENT_N,
};

/* "event producer", ... (bus.c), for error messages. */
extern const char *const bus_client_names[BUS_CLIENT_N];

struct bus_client {
    struct bus *bus;           /* back pointer, for librdkafka callbacks */
    enum bus_client_kind kind;
    rd_kafka_t *rk;            /* NULL when this client is not used */
    rd_kafka_queue_t *queue;   /* the queue that wakes the loop (ref held) */
    bool up;                   /* a broker connection is UP (from stats) */
};

/* A telemetry sample waiting in the bus's backlog. */
struct bus_sample {
    struct list_node link;     /* in bus->backlog */
    size_t key_len;            /* SIZE_MAX: no key */
    size_t len;
    char data[];               /* key, then the JSON */
};

/* A partition of the command topic with the commands handed out from it,
 * in offset order, that were not yet committed. */
struct bus_part {
    struct list_node link;     /* in bus->parts */
    int32_t partition;
    struct list_node cmds;     /* bus_cmd.plink, oldest first */
};

/* A command handed to on_command; msg first so a bus_message pointer is a
 * bus_cmd pointer. */
struct bus_cmd {
    struct bus_message msg;
    rd_kafka_message_t *rkm;   /* owns payload and topic name */
    struct bus_part *part;     /* NULL once its partition was revoked */
    struct list_node plink;    /* in part->cmds (unlinked once orphaned) */
    struct list_node link;     /* in bus->cmds: every outstanding command */
    bool done;                 /* bus_command_commit() was called */
    char key[];                /* NUL-terminated key copy */
};

struct bus {
    uv_loop_t *loop;
    struct bus_callbacks cb;
    void *opaque;

    int efd;                   /* eventfd every client queue writes to */
    uv_poll_t poll;            /* watches efd */
    bool poll_inited;

    struct bus_client clients[BUS_CLIENT_N];
    enum bus_client_kind state_client; /* whose stats decide on_state */
    rd_kafka_mock_cluster_t *mock;     /* in-process cluster, or NULL */
    rd_kafka_topic_t *rkt_events, *rkt_heartbeat, *rkt_telemetry;

    char *bootstrap;           /* bootstrap.servers in use */
    char *topics[BUS_TOPIC_TELEMETRY + 1];
    char *group_id;
    char *host;

    size_t max_command_bytes;
    bool drop_newest;
    /* Purging librdkafka's telemetry queue (evicting the oldest samples)
     * waits for every broker thread, so it runs in libuv's threadpool;
     * meanwhile new samples wait in the backlog, or the purge could take
     * them too. */
    bool purge_pending;        /* purge queued or running */
    uv_work_t purge_req;
    uv_mutex_t purge_lock;     /* guards purge_done */
    uv_cond_t purge_cond;
    bool purge_done;           /* set by the worker when rd_kafka_purge returned */
    bool purge_sync_inited;
    /* The memory goes when both the poll handle is closed and any purge
     * request has been completed by the loop. */
    int refs;
    /* Telemetry samples waiting for room in librdkafka's queue, oldest
     * first, bounded by backlog_max entries and backlog_max_bytes. */
    struct list_node backlog;  /* bus_sample.link */
    size_t backlog_len, backlog_bytes;
    size_t backlog_max, backlog_max_bytes;
    int flush_timeout_ms;

    struct list_node parts;    /* bus_part.link: partitions with open commands */
    struct list_node cmds;     /* bus_cmd.link: outstanding commands, any partition */

    struct bus_stats stats;
    bool up;
    bool closing;              /* bus_free() started */
    unsigned dispatching;      /* depth of calls that run callbacks */
    bool free_requested;       /* bus_free() called from a callback */
};

static inline void rd_kafka_conf_destroyp(rd_kafka_conf_t **conf)
{
    if (*conf)
        rd_kafka_conf_destroy(*conf);
}

static inline int bus_remaining_ms(uint64_t deadline_ns)
{
    uint64_t now = now_mono_ns();

    return now >= deadline_ns ? 0 : (int)((deadline_ns - now) / 1000000);
}

/* ---- bus.c ---- */

/* The one place librdkafka's error codes become -errno. */
int bus_errno(rd_kafka_resp_err_t e);
/* Count a client error and report it to the agent (on_error); reason NULL:
 * librdkafka's text for e. */
void bus_report_error(struct bus *bus, enum bus_client_kind kind, rd_kafka_resp_err_t e,
                      bool fatal, const char *reason);
/* Tell on_state when the deciding client's broker state changed. */
void bus_state_update(struct bus *bus);
/* Drop a reference (the poll handle's or a purge's); the last frees bus. */
void bus_unref(struct bus *bus);
/* Stop a client's queue from waking the loop and drop our reference. */
void bus_client_unhook(struct bus_client *c);
/* librdkafka callbacks every client (or the stats client) gets. */
void bus_log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf);
void bus_error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque);
int bus_stats_cb(rd_kafka_t *rk, char *json, size_t len, void *opaque);

/* ---- conf.c ---- */

/* Topic names, group id and host from cfg (errors name the config field). */
int bus_names_init(struct bus *bus, const struct bus_config *cfg, struct agent_error *err);
/* A new conf with what every client of kind starts from (client.id). */
int bus_conf_new(struct bus *bus, enum bus_client_kind kind, rd_kafka_conf_t **ret,
                 struct agent_error *err);
/* key=value on conf; field is the config field blamed on failure. */
int bus_conf_set(rd_kafka_conf_t *conf, const char *key, const char *value, const char *field,
                 struct agent_error *err);
int bus_conf_set_int(rd_kafka_conf_t *conf, const char *key, long long value,
                     struct agent_error *err);
/* Apply the bus.properties meant for kind (unscoped or "kind."-scoped). */
int bus_conf_apply_user(rd_kafka_conf_t *conf, enum bus_client_kind kind,
                        const char *const *props, struct agent_error *err);
/* Create client kind from conf (taken, also on failure) and make its queue
 * wake the loop through bus->efd. */
int bus_client_start(struct bus *bus, enum bus_client_kind kind, rd_kafka_conf_t *conf_in,
                     struct agent_error *err);

/* ---- produce.c ---- */

int bus_start_events(struct bus *bus, const struct bus_config *cfg, struct agent_error *err);
/* Hand json to the telemetry client on rkt; s counts its outcome. */
rd_kafka_resp_err_t bus_produce_lossy(struct bus *bus, rd_kafka_topic_t *rkt,
                                      struct bus_stream_stats *s, const char *key,
                                      const char *json, size_t len);
/* Delivery reports of the telemetry client (telemetry and heartbeats). */
void bus_lossy_dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque);

/* ---- telemetry-queue.c ---- */

/* The telemetry client, its topic and the heartbeat topic. */
int bus_start_telemetry(struct bus *bus, const struct bus_config *cfg, struct agent_error *err);
/* Move backlog samples, oldest first, into librdkafka while it has room. */
void bus_backlog_drain(struct bus *bus);
/* Teardown: wait for a running purge, then drop the backlog (counted dropped). */
void bus_backlog_discard(struct bus *bus);

/* ---- consume.c ---- */

int bus_start_consumer(struct bus *bus, const struct bus_config *cfg, struct agent_error *err);
/* A message from the consumer queue (taken). */
void bus_consumer_message(struct bus *bus, rd_kafka_message_t *m);
/* Forget the commands of the partitions in list (all when NULL). */
void bus_parts_orphan(struct bus *bus, const rd_kafka_topic_partition_list_t *list);
/* Release every command, leave the group within timeout_ms, destroy the client. */
void bus_consumer_close(struct bus *bus, int timeout_ms);

/* ---- mock.c ---- */

/* The in-process cluster (no brokers configured); sets bus->bootstrap. */
int bus_start_mock(struct bus *bus, struct agent_error *err);

#endif
