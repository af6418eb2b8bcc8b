/* bus.c: the agent's Kafka bus (see bus.h for the contract).
 *
 * Up to four librdkafka clients live in a bus:
 *   mock       owns the in-process mock cluster (only with no brokers set)
 *   events     idempotent producer for P compute.events; message.timeout.ms
 *              is infinite, so an event waits out a broker outage in the
 *              local queue and is acknowledged once; ordered per key
 *   telemetry  lossy producer for P telemetry (compressed, batched) and
 *              P compute.heartbeat (per-topic timeout). The telemetry bound
 *              is split between librdkafka's queue and a backlog in front
 *              of it, so that on overflow the oldest samples can go (purge
 *              of librdkafka's unsent ones, oldest of the backlog) and the
 *              newest survive, in order
 *   consumer   group consumer of P compute.H, manual offset commits
 * Each client's final queue (the main queue, or for the consumer the
 * consumer queue the main queue and the log queue are forwarded to) writes
 * to one shared eventfd when it turns non-empty; a uv_poll_t on that fd
 * serves every queue without blocking until it is empty. librdkafka calls
 * our callbacks (delivery reports, errors, logs, stats, rebalances) from
 * inside those non-blocking polls, i.e. on the loop thread.
 *
 * Broker state (for on_state) comes from librdkafka's statistics, emitted
 * every state_interval_ms on the consumer (or on the event producer when
 * there is no consumer): up when any real broker connection is UP. Those
 * periodic statistics events also keep the consumer well within
 * max.poll.interval.ms while no command arrives.
 */
#include "agent/bus.h"

#include "agent/bus-internal.h"
#include "common/list.h"
#include "common/util.h"

#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <sys/eventfd.h>

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

static const char *const bus_client_names[BUS_CLIENT_N] = {
    [BUS_CLIENT_MOCK] = "mock cluster",
    [BUS_CLIENT_EVENTS] = "event producer",
    [BUS_CLIENT_TELEMETRY] = "telemetry producer",
    [BUS_CLIENT_CONSUMER] = "command consumer",
};

/* Property scopes in bus_config.properties ("telemetry.linger.ms=5"). */
static const char *const bus_client_scopes[BUS_CLIENT_N] = {
    [BUS_CLIENT_EVENTS] = "events.",
    [BUS_CLIENT_TELEMETRY] = "telemetry.",
    [BUS_CLIENT_CONSUMER] = "consumer.",
};

/* What librdkafka writes to the eventfd: one wake-up. */
static const uint64_t bus_wakeup = 1;

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

static void bus_free_now(struct bus *bus);
static void bus_backlog_drain(struct bus *bus);

/* ---------------------------------------------------------------- errors */

/* The one place librdkafka's error codes become -errno. */
static int bus_errno(rd_kafka_resp_err_t e)
{
    switch (e) {
    case RD_KAFKA_RESP_ERR_NO_ERROR:
        return 0;
    case RD_KAFKA_RESP_ERR__QUEUE_FULL:
        return -ENOBUFS;
    case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE:
    case RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE:
        return -EMSGSIZE;
    case RD_KAFKA_RESP_ERR__MSG_TIMED_OUT:
    case RD_KAFKA_RESP_ERR__TIMED_OUT:
    case RD_KAFKA_RESP_ERR__TIMED_OUT_QUEUE:
    case RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT:
        return -ETIMEDOUT;
    case RD_KAFKA_RESP_ERR__PURGE_QUEUE:
    case RD_KAFKA_RESP_ERR__PURGE_INFLIGHT:
        return -ECANCELED;
    case RD_KAFKA_RESP_ERR__DESTROY:
        return -ESHUTDOWN;
    case RD_KAFKA_RESP_ERR__FATAL:
        return -ENOTRECOVERABLE;
    case RD_KAFKA_RESP_ERR__TRANSPORT:
    case RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN:
    case RD_KAFKA_RESP_ERR_NETWORK_EXCEPTION:
        return -ENOTCONN;
    case RD_KAFKA_RESP_ERR__RESOLVE:
        return -EHOSTUNREACH;
    case RD_KAFKA_RESP_ERR__SSL:
        return -EPROTO;
    case RD_KAFKA_RESP_ERR__AUTHENTICATION:
    case RD_KAFKA_RESP_ERR_SASL_AUTHENTICATION_FAILED:
    case RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED:
    case RD_KAFKA_RESP_ERR_GROUP_AUTHORIZATION_FAILED:
    case RD_KAFKA_RESP_ERR_CLUSTER_AUTHORIZATION_FAILED:
        return -EACCES;
    case RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC:
    case RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART:
    case RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION:
        return -ENOENT;
    case RD_KAFKA_RESP_ERR__INVALID_ARG:
    case RD_KAFKA_RESP_ERR__BAD_MSG:
    case RD_KAFKA_RESP_ERR_INVALID_MSG:
    case RD_KAFKA_RESP_ERR_INVALID_RECORD:
        return -EINVAL;
    case RD_KAFKA_RESP_ERR__NOT_IMPLEMENTED:
    case RD_KAFKA_RESP_ERR__UNSUPPORTED_FEATURE:
        return -ENOTSUP;
    case RD_KAFKA_RESP_ERR__NO_OFFSET:
        return -ENODATA;
    case RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS:
    case RD_KAFKA_RESP_ERR_ILLEGAL_GENERATION:
    case RD_KAFKA_RESP_ERR_UNKNOWN_MEMBER_ID:
        return -ESTALE;
    case RD_KAFKA_RESP_ERR__WAIT_COORD:
    case RD_KAFKA_RESP_ERR_NOT_COORDINATOR:
    case RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE:
    case RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS:
    case RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION:
    case RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE:
    case RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS:
    case RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS_AFTER_APPEND:
        return -EAGAIN;
    default:
        return -EIO;
    }
}

/* Report a client error to the agent; reason gets the client's name. */
static void bus_report_error(struct bus *bus, enum bus_client_kind kind,
                             rd_kafka_resp_err_t e, bool fatal,
                             const char *reason)
{
    char buf[640];

    bus->stats.client_errors++;
    if (!bus->cb.on_error)
        return;
    snprintf(buf, sizeof(buf), "%s: %s (%s)", bus_client_names[kind],
             reason ? reason : rd_kafka_err2str(e), rd_kafka_err2name(e));
    bus->cb.on_error(bus->opaque, bus_errno(e), fatal, buf);
}

/* ------------------------------------------------------------ dispatching */

/* Calls into librdkafka that may run our callbacks are bracketed by these,
 * so that a bus_free() from inside a callback is deferred until they are
 * done. bus_dispatch_end() returns true when it freed the bus. */
static void bus_dispatch_begin(struct bus *bus)
{
    bus->dispatching++;
}

static bool bus_dispatch_end(struct bus *bus)
{
    bus->dispatching--;
    if (bus->dispatching == 0 && bus->free_requested && !bus->closing) {
        bus_free_now(bus);
        return true;
    }
    return false;
}

static void bus_state_update(struct bus *bus)
{
    bool up = bus->clients[bus->state_client].up;

    if (up == bus->up)
        return;
    bus->up = up;
    if (!bus->closing && bus->cb.on_state)
        bus->cb.on_state(bus->opaque, up);
}

/* ------------------------------------------------- librdkafka callbacks */

static void bus_log_cb(const rd_kafka_t *rk, int level, const char *fac,
                       const char *buf)
{
    struct bus_client *c;

    /* Lines logged while a handle is being created come without one. */
    if (!rk)
        return;
    c = rd_kafka_opaque(rk);
    if (!c || !c->bus || !c->bus->cb.on_log)
        return;
    /* The mock cluster's owner has no brokers of its own and warns about
     * it; only its errors are worth passing on. */
    if (c->kind == BUS_CLIENT_MOCK && level > 3)
        return;
    c->bus->cb.on_log(c->bus->opaque, level, fac, buf);
}

static void bus_error_cb(rd_kafka_t *rk, int err, const char *reason,
                         void *opaque)
{
    struct bus_client *c = opaque;
    struct bus *bus = c->bus;
    rd_kafka_resp_err_t e = (rd_kafka_resp_err_t)err;
    char fatal_reason[512];
    bool fatal = false;

    if (c->kind == BUS_CLIENT_MOCK)
        return;
    if (e == RD_KAFKA_RESP_ERR__FATAL) {
        fatal = true;
        e = rd_kafka_fatal_error(rk, fatal_reason, sizeof(fatal_reason));
        reason = fatal_reason;
    }
    if (e == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN) {
        c->up = false;
        bus_state_update(bus);
    }
    /* Connection trouble is what on_state reports, and librdkafka logs
     * each attempt already: do not report it a third time. */
    if (!fatal && (e == RD_KAFKA_RESP_ERR__TRANSPORT ||
                   e == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN ||
                   e == RD_KAFKA_RESP_ERR__RESOLVE)) {
        bus->stats.client_errors++;
        return;
    }
    bus_report_error(bus, c->kind, e, fatal, reason);
}

/* Up when any real broker connection (not librdkafka's internal pseudo
 * broker) is in state UP. */
int bus_stats_broker_up(const char *json, size_t len, bool *up)
{
    json_t *root, *brokers, *b;
    const char *name;

    root = json_loadb(json, len, 0, NULL);
    if (!root)
        return -EINVAL;
    *up = false;
    brokers = json_object_get(root, "brokers");
    json_object_foreach(brokers, name, b) {
        const char *source = json_string_value(json_object_get(b, "source"));
        const char *state = json_string_value(json_object_get(b, "state"));

        if (source && strcmp(source, "internal") != 0 && state &&
            strcmp(state, "UP") == 0) {
            *up = true;
            break;
        }
    }
    json_decref(root);
    return 0;
}

static int bus_stats_cb(rd_kafka_t *rk, char *json, size_t len, void *opaque)
{
    struct bus_client *c = opaque;
    bool up;

    (void)rk;
    if (bus_stats_broker_up(json, len, &up) == 0) {
        c->up = up;
        bus_state_update(c->bus);
    }
    return 0; /* librdkafka frees json */
}

static void bus_stream_account(struct bus_stream_stats *s,
                               const rd_kafka_message_t *m, bool lossy)
{
    if (s->queued > 0)
        s->queued--;
    if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
        int64_t us = rd_kafka_message_latency(m);

        s->delivered++;
        if (us >= 0) {
            double ms = (double)us / 1000.0;

            s->lag_ms_sum += ms;
            s->lag_ms_last = ms;
            if (ms > s->lag_ms_max)
                s->lag_ms_max = ms;
        }
    } else if (lossy && (m->err == RD_KAFKA_RESP_ERR__PURGE_QUEUE ||
                         m->err == RD_KAFKA_RESP_ERR__PURGE_INFLIGHT ||
                         m->err == RD_KAFKA_RESP_ERR__MSG_TIMED_OUT)) {
        s->dropped++;
    } else {
        s->failed++;
    }
}

static void bus_events_dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m,
                             void *opaque)
{
    struct bus_client *c = opaque;
    struct bus *bus = c->bus;
    int64_t outbox_id = (int64_t)(intptr_t)m->_private;

    (void)rk;
    bus_stream_account(&bus->stats.events, m, false);
    if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR &&
        bus->state_client == BUS_CLIENT_EVENTS && !c->up) {
        c->up = true;
        bus_state_update(bus);
    }
    if (bus->cb.on_event_delivered)
        bus->cb.on_event_delivered(bus->opaque, outbox_id, bus_errno(m->err));
}

/* Telemetry and heartbeats: the message opaque is the stream's counters. */
static void bus_lossy_dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m,
                            void *opaque)
{
    (void)rk;
    (void)opaque;
    if (m->_private)
        bus_stream_account(m->_private, m, true);
}

static void bus_offset_commit_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                                 rd_kafka_topic_partition_list_t *offsets,
                                 void *opaque)
{
    struct bus_client *c = opaque;
    struct bus *bus = c->bus;

    (void)rk;
    if (err == RD_KAFKA_RESP_ERR__NO_OFFSET)
        return;
    if (err == RD_KAFKA_RESP_ERR_NO_ERROR && offsets) {
        for (int i = 0; i < offsets->cnt; i++) {
            if (offsets->elems[i].err) {
                err = offsets->elems[i].err;
                break;
            }
        }
    }
    if (err) {
        bus->stats.commit_errors++;
        bus_report_error(bus, c->kind, err, false, "offset commit failed");
        return;
    }
    bus->stats.commits_done++;
}

/* Forget the commands of the partitions in list (all when list is NULL):
 * their offsets must no longer be committed by us. The commands stay valid
 * until the agent hands them back. */
static void bus_parts_orphan(struct bus *bus,
                             const rd_kafka_topic_partition_list_t *list)
{
    struct bus_part *p, *ptmp;

    list_for_each_entry_safe(p, ptmp, &bus->parts, link) {
        struct bus_cmd *cmd, *ctmp;
        bool hit = !list;

        for (int i = 0; list && i < list->cnt; i++)
            if (list->elems[i].partition == p->partition &&
                strcmp(list->elems[i].topic, bus->topics[BUS_TOPIC_COMMANDS]) == 0)
                hit = true;
        if (!hit)
            continue;
        list_for_each_entry_safe(cmd, ctmp, &p->cmds, plink) {
            cmd->part = NULL;
            list_del(&cmd->plink);
        }
        list_del(&p->link);
        free(p);
    }
}

static void bus_rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                             rd_kafka_topic_partition_list_t *parts,
                             void *opaque)
{
    struct bus_client *c = opaque;
    struct bus *bus = c->bus;
    bool coop = strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE") == 0;
    rd_kafka_error_t *error = NULL;
    rd_kafka_resp_err_t e = RD_KAFKA_RESP_ERR_NO_ERROR;

    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        if (coop)
            error = rd_kafka_incremental_assign(rk, parts);
        else
            e = rd_kafka_assign(rk, parts);
    } else {
        bus_parts_orphan(bus, coop ? parts : NULL);
        if (coop)
            error = rd_kafka_incremental_unassign(rk, parts);
        else
            e = rd_kafka_assign(rk, NULL);
    }
    if (error) {
        e = rd_kafka_error_code(error);
        rd_kafka_error_destroy(error);
    }
    if (e)
        bus_report_error(bus, c->kind, e, false, "partition assignment failed");
}

/* ----------------------------------------------------------- commands */

static void bus_cmd_free(struct bus *bus, struct bus_cmd *cmd)
{
    (void)bus;
    list_del(&cmd->plink);
    list_del(&cmd->link);
    rd_kafka_message_destroy(cmd->rkm);
    free(cmd);
}

static struct bus_part *bus_part_get(struct bus *bus, int32_t partition)
{
    struct bus_part *p;

    list_for_each_entry(p, &bus->parts, link)
        if (p->partition == partition)
            return p;
    p = calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    p->partition = partition;
    list_init(&p->cmds);
    list_add_head(&bus->parts, &p->link);
    return p;
}

/* Takes m. */
static void bus_consumer_message(struct bus *bus, rd_kafka_message_t *m)
{
    struct bus_client *c = &bus->clients[BUS_CLIENT_CONSUMER];
    rd_kafka_timestamp_type_t tstype;
    struct bus_part *part;
    struct bus_cmd *cmd;
    size_t klen;

    if (m->err) {
        if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
            bus_report_error(bus, c->kind, m->err, false,
                             rd_kafka_message_errstr(m));
        rd_kafka_message_destroy(m);
        return;
    }
    if (!c->up) {
        c->up = true;
        bus_state_update(bus);
    }
    klen = m->key ? m->key_len : 0;
    part = bus_part_get(bus, m->partition);
    cmd = part ? calloc(1, sizeof(*cmd) + klen + 1) : NULL;
    if (!cmd) {
        /* Not handed out, not committed: it comes back with the next
         * consumer, which the agent makes after this fatal error. */
        rd_kafka_message_destroy(m);
        bus_report_error(bus, c->kind, RD_KAFKA_RESP_ERR__CRIT_SYS_RESOURCE,
                         true, "out of memory for a command");
        return;
    }
    cmd->rkm = m;
    cmd->part = part;
    if (m->key) {
        memcpy(cmd->key, m->key, klen);
        cmd->msg.key = cmd->key;
        cmd->msg.key_len = klen;
    }
    cmd->msg.len = m->len;
    cmd->msg.oversized = m->len > bus->max_command_bytes;
    cmd->msg.payload = cmd->msg.oversized ? NULL : m->payload;
    cmd->msg.topic = bus->topics[BUS_TOPIC_COMMANDS];
    cmd->msg.partition = m->partition;
    cmd->msg.offset = m->offset;
    cmd->msg.timestamp_ms = rd_kafka_message_timestamp(m, &tstype);

    list_add_tail(&part->cmds, &cmd->plink);
    list_add_head(&bus->cmds, &cmd->link);

    bus->stats.commands_received++;
    if (cmd->msg.oversized)
        bus->stats.commands_oversized++;
    bus->cb.on_command(bus->opaque, &cmd->msg);
}

int bus_command_commit(struct bus *bus, const struct bus_message *msg)
{
    struct bus_cmd *cmd = (struct bus_cmd *)msg;
    struct bus_part *part;
    struct bus_cmd *h;
    rd_kafka_topic_partition_list_t *list;
    rd_kafka_resp_err_t e;
    int64_t next = -1;

    if (!bus || !msg)
        return -EINVAL;
    if (bus->closing)
        return -ESHUTDOWN; /* bus_free() already released every command */
    part = cmd->part;
    if (!part) {
        bus_cmd_free(bus, cmd);
        return -ESTALE;
    }
    cmd->done = true;
    while ((h = list_first_entry_or_null(&part->cmds, struct bus_cmd, plink)) && h->done) {
        next = h->msg.offset + 1;
        bus_cmd_free(bus, h);
    }
    if (next < 0)
        return 0; /* an earlier command of this partition is still open */

    list = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(list, bus->topics[BUS_TOPIC_COMMANDS],
                                      part->partition)
        ->offset = next;
    e = rd_kafka_commit(bus->clients[BUS_CLIENT_CONSUMER].rk, list, 1);
    rd_kafka_topic_partition_list_destroy(list);
    if (e) {
        bus->stats.commit_errors++;
        return bus_errno(e);
    }
    return 0;
}

/* ------------------------------------------------------------- serving */

/* Serve one client's queue without blocking; true when it is empty. */
static bool bus_client_serve(struct bus *bus, struct bus_client *c)
{
    int budget = BUS_SERVE_BUDGET;

    if (!c->rk || !c->queue)
        return true;
    while (budget > 0 && !bus->free_requested) {
        if (c->kind == BUS_CLIENT_CONSUMER) {
            rd_kafka_message_t *m = rd_kafka_consumer_poll(c->rk, 0);

            if (!m)
                return true;
            bus_consumer_message(bus, m);
            budget--;
        } else {
            int n = rd_kafka_poll(c->rk, 0);

            if (n <= 0)
                return true;
            budget -= n;
        }
    }
    return bus->free_requested;
}

static void bus_poll_cb(uv_poll_t *handle, int status, int events)
{
    struct bus *bus = handle->data;
    uint64_t count;
    bool drained = true;

    (void)status;
    (void)events;
    bus->stats.wakeups++;
    /* Reset the eventfd before serving, so an entry queued after our last
     * look wakes us again. */
    if (read(bus->efd, &count, sizeof(count)) < 0) {
        /* EAGAIN: woken by something already served */
    }
    bus_dispatch_begin(bus);
    for (int k = 0; k < BUS_CLIENT_N && !bus->free_requested; k++)
        drained &= bus_client_serve(bus, &bus->clients[k]);
    /* Reports served above made room in librdkafka's telemetry queue. */
    if (!list_empty(&bus->backlog) && !bus->purge_pending && !bus->free_requested)
        bus_backlog_drain(bus);
    if (bus_dispatch_end(bus))
        return;
    if (!drained && eventfd_write(bus->efd, 1) < 0) {
        /* cannot happen short of a 2^64 counter; next wake-up serves it */
    }
}

/* ------------------------------------------------------------- publish */

int bus_publish_event(struct bus *bus, const char *key, const char *json,
                      size_t len, int64_t outbox_id)
{
    rd_kafka_resp_err_t e;

    if (!bus || !json)
        return -EINVAL;
    if (bus->closing)
        return -ESHUTDOWN;
    e = rd_kafka_producev(
        bus->clients[BUS_CLIENT_EVENTS].rk, RD_KAFKA_V_RKT(bus->rkt_events),
        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
        RD_KAFKA_V_KEY(key, key ? strlen(key) : 0),
        RD_KAFKA_V_VALUE((void *)json, len),
        RD_KAFKA_V_OPAQUE((void *)(intptr_t)outbox_id), RD_KAFKA_V_END);
    if (e)
        return bus_errno(e);
    bus->stats.events.produced++;
    bus->stats.events.queued++;
    return 0;
}

static rd_kafka_resp_err_t bus_produce_lossy(struct bus *bus,
                                             rd_kafka_topic_t *rkt,
                                             struct bus_stream_stats *s,
                                             const char *key,
                                             const char *json, size_t len)
{
    return rd_kafka_producev(bus->clients[BUS_CLIENT_TELEMETRY].rk,
                             RD_KAFKA_V_RKT(rkt),
                             RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                             RD_KAFKA_V_KEY(key, key ? strlen(key) : 0),
                             RD_KAFKA_V_VALUE((void *)json, len),
                             RD_KAFKA_V_OPAQUE(s), RD_KAFKA_V_END);
}

static void bus_unref(struct bus *bus)
{
    if (--bus->refs > 0)
        return;
    if (bus->purge_sync_inited) {
        uv_cond_destroy(&bus->purge_cond);
        uv_mutex_destroy(&bus->purge_lock);
    }
    free(bus);
}

/* Threadpool: evict what librdkafka holds unsent of telemetry (the oldest
 * samples), blocking until its broker threads are done. */
static void bus_purge_work(uv_work_t *req)
{
    struct bus *bus = req->data;

    rd_kafka_purge(bus->clients[BUS_CLIENT_TELEMETRY].rk, RD_KAFKA_PURGE_F_QUEUE);
    uv_mutex_lock(&bus->purge_lock);
    bus->purge_done = true;
    uv_cond_signal(&bus->purge_cond);
    uv_mutex_unlock(&bus->purge_lock);
}

static void bus_purge_after(uv_work_t *req, int status)
{
    struct bus *bus = req->data;

    (void)status;
    bus->purge_pending = false;
    if (!bus->closing) {
        /* The purge's reports are queued: serve them, then move the
         * backlog on. */
        if (eventfd_write(bus->efd, 1) < 0) {
            /* cannot fail short of a 2^64 counter */
        }
    }
    bus_unref(bus);
}

static void bus_purge_start(struct bus *bus)
{
    if (bus->purge_pending)
        return;
    bus->purge_done = false;
    bus->purge_req.data = bus;
    if (uv_queue_work(bus->loop, &bus->purge_req, bus_purge_work, bus_purge_after) < 0)
        return; /* the backlog still bounds memory; try again at next overflow */
    bus->purge_pending = true;
    bus->refs++;
}

/* bus_free(): a purge still running must finish before its client goes. */
static void bus_purge_wait(struct bus *bus)
{
    if (!bus->purge_pending)
        return;
    if (uv_cancel((uv_req_t *)&bus->purge_req) == 0)
        return; /* never started; bus_purge_after() still runs, cancelled */
    uv_mutex_lock(&bus->purge_lock);
    while (!bus->purge_done)
        uv_cond_wait(&bus->purge_cond, &bus->purge_lock);
    uv_mutex_unlock(&bus->purge_lock);
}

static void bus_backlog_pop_free(struct bus *bus)
{
    struct bus_sample *smp = list_entry(bus->backlog.next, struct bus_sample, link);

    list_del(&smp->link);
    bus->backlog_len--;
    bus->backlog_bytes -= smp->len;
    free(smp);
}

/* Move backlog samples, oldest first, into librdkafka while it has room. */
static void bus_backlog_drain(struct bus *bus)
{
    while (!list_empty(&bus->backlog)) {
        struct bus_sample *smp = list_entry(bus->backlog.next, struct bus_sample, link);
        const char *key = smp->key_len == SIZE_MAX ? NULL : smp->data;
        size_t klen = key ? smp->key_len : 0;
        rd_kafka_resp_err_t e = rd_kafka_producev(
            bus->clients[BUS_CLIENT_TELEMETRY].rk, RD_KAFKA_V_RKT(bus->rkt_telemetry),
            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_KEY(key, klen),
            RD_KAFKA_V_VALUE(smp->data + klen, smp->len),
            RD_KAFKA_V_OPAQUE(&bus->stats.telemetry), RD_KAFKA_V_END);

        if (e == RD_KAFKA_RESP_ERR__QUEUE_FULL)
            return;
        if (e) {
            /* Not retryable (too large...): account it as failed. */
            bus->stats.telemetry.failed++;
            bus->stats.telemetry.queued--;
        }
        bus_backlog_pop_free(bus);
    }
}

/* Queue a sample behind librdkafka's full queue. When the backlog is full
 * too, the oldest samples go: everything librdkafka holds unsent (a purge
 * in the threadpool; its reports count as dropped when served) and the
 * oldest of the backlog. */
static int bus_backlog_push(struct bus *bus, const char *key, const char *json,
                            size_t len)
{
    size_t klen = key ? strlen(key) : 0;
    struct bus_sample *smp;

    if (len > bus->backlog_max_bytes)
        return -EMSGSIZE;
    smp = malloc(sizeof(*smp) + klen + len);
    if (!smp)
        return -ENOMEM;
    list_init(&smp->link);
    smp->key_len = key ? klen : SIZE_MAX;
    smp->len = len;
    memcpy(smp->data, key, klen);
    memcpy(smp->data + klen, json, len);

    while (!list_empty(&bus->backlog) && (bus->backlog_len + 1 > bus->backlog_max ||
                                 bus->backlog_bytes + len > bus->backlog_max_bytes)) {
        bus_purge_start(bus);
        bus_backlog_pop_free(bus);
        bus->stats.telemetry.queued--;
        bus->stats.telemetry.dropped++;
    }
    list_add_tail(&bus->backlog, &smp->link);
    bus->backlog_len++;
    bus->backlog_bytes += len;
    return 0;
}

int bus_publish_telemetry(struct bus *bus, const char *key, const char *json,
                          size_t len)
{
    struct bus_stream_stats *s;
    rd_kafka_resp_err_t e = RD_KAFKA_RESP_ERR__QUEUE_FULL;
    int r;

    if (!bus || !json)
        return -EINVAL;
    if (bus->closing)
        return -ESHUTDOWN;
    s = &bus->stats.telemetry;
    /* Samples keep their order: straight to librdkafka only when nothing
     * is waiting before them. */
    if (!list_empty(&bus->backlog) && !bus->purge_pending)
        bus_backlog_drain(bus);
    if (!!list_empty(&bus->backlog) && !bus->purge_pending)
        e = bus_produce_lossy(bus, bus->rkt_telemetry, s, key, json, len);
    if (e == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
        if (bus->drop_newest) {
            s->dropped++;
            return -ENOBUFS;
        }
        r = bus_backlog_push(bus, key, json, len);
        if (r < 0) {
            s->dropped++;
            return r;
        }
        e = RD_KAFKA_RESP_ERR_NO_ERROR;
    }
    if (e)
        return bus_errno(e);
    s->produced++;
    s->queued++;
    return 0;
}

int bus_publish_heartbeat(struct bus *bus, const char *json, size_t len)
{
    struct bus_stream_stats *s;
    rd_kafka_resp_err_t e;

    if (!bus || !json)
        return -EINVAL;
    if (bus->closing)
        return -ESHUTDOWN;
    s = &bus->stats.heartbeat;
    e = bus_produce_lossy(bus, bus->rkt_heartbeat, s, bus->host, json, len);
    if (e == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
        s->dropped++;
        return -ENOBUFS;
    }
    if (e)
        return bus_errno(e);
    s->produced++;
    s->queued++;
    return 0;
}

/* ------------------------------------------------------------- getters */

const char *bus_bootstrap_servers(const struct bus *bus)
{
    return bus->bootstrap;
}

const char *bus_topic(const struct bus *bus, enum bus_topic which)
{
    if ((unsigned)which > BUS_TOPIC_TELEMETRY)
        return NULL;
    return bus->topics[which];
}

const char *bus_group_id(const struct bus *bus)
{
    return bus->group_id;
}

bool bus_is_up(const struct bus *bus)
{
    return bus->up;
}

void bus_stats(const struct bus *bus, struct bus_stats *out)
{
    *out = bus->stats;
    out->up = bus->up;
}

rd_kafka_mock_cluster_t *bus_mock_cluster(struct bus *bus)
{
    return bus->mock;
}

/* ------------------------------------------------------------ creation */

static void rd_kafka_conf_destroyp(rd_kafka_conf_t **conf)
{
    if (*conf)
        rd_kafka_conf_destroy(*conf);
}

static char *bus_strcat3(const char *a, const char *b, const char *c)
{
    size_t la = strlen(a), lb = strlen(b), lc = strlen(c);
    char *s = malloc(la + lb + lc + 1);

    if (!s)
        return NULL;
    memcpy(s, a, la);
    memcpy(s + la, b, lb);
    memcpy(s + la + lb, c, lc + 1);
    return s;
}

static bool bus_topic_name_valid(const char *s)
{
    size_t n = strlen(s);

    if (n == 0 || n > 249)
        return false;
    for (; *s; s++) {
        char ch = *s;

        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
              (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' || ch == '-'))
            return false;
    }
    return true;
}

static int bus_conf_set(rd_kafka_conf_t *conf, const char *key,
                        const char *value, const char *field,
                        struct agent_error *err)
{
    char errstr[512];

    if (rd_kafka_conf_set(conf, key, value, errstr, sizeof(errstr)) !=
        RD_KAFKA_CONF_OK)
        return agent_error_set(err, EINVAL, "invalid_field", field,
                               "Kafka property %s=%s: %s", key, value, errstr);
    return 0;
}

static int bus_conf_set_int(rd_kafka_conf_t *conf, const char *key,
                            long long value, struct agent_error *err)
{
    char buf[32];

    snprintf(buf, sizeof(buf), "%lld", value);
    return bus_conf_set(conf, key, buf, "bus", err);
}

/* Apply the properties from cfg meant for client kind. */
static int bus_conf_apply_user(rd_kafka_conf_t *conf,
                               enum bus_client_kind kind,
                               const char *const *props,
                               struct agent_error *err)
{
    for (; props && *props; props++) {
        const char *kv = *props;
        const char *eq;
        bool other = false;
        int r;

        for (int k = 0; k < BUS_CLIENT_N; k++) {
            const char *scope = bus_client_scopes[k];

            if (scope && strncmp(kv, scope, strlen(scope)) == 0) {
                if (k == (int)kind)
                    kv += strlen(scope);
                else
                    other = true;
                break;
            }
        }
        if (other)
            continue;
        eq = strchr(kv, '=');
        if (!eq || eq == kv)
            return agent_error_set(err, EINVAL, "invalid_field",
                                   "bus.properties",
                                   "Kafka property \"%s\" is not key=value",
                                   *props);
        _cleanup_free_ char *key = strndup(kv, (size_t)(eq - kv));
        if (!key)
            return agent_error_set(err, ENOMEM, "internal", NULL,
                                   "out of memory");
        r = bus_conf_set(conf, key, eq + 1, "bus.properties", err);
        if (r < 0)
            return r;
    }
    return 0;
}

/* Create client kind from conf (taken, also on failure) and make its
 * queue wake the loop. */
static int bus_client_start(struct bus *bus, enum bus_client_kind kind,
                            rd_kafka_conf_t *conf_in, struct agent_error *err)
{
    _cleanup_(rd_kafka_conf_destroyp) rd_kafka_conf_t *conf = conf_in;
    struct bus_client *c = &bus->clients[kind];
    char errstr[512];
    int r;

    c->bus = bus;
    c->kind = kind;
    /* Set last: owned by the bus whatever the properties said. */
    if (kind != BUS_CLIENT_MOCK &&
        (r = bus_conf_set(conf, "bootstrap.servers", bus->bootstrap, "bus.brokers", err)) < 0)
        return r;
    r = bus_conf_set(conf, "log.queue", "true", "bus", err);
    if (r < 0)
        return r;
    rd_kafka_conf_set_opaque(conf, c);
    rd_kafka_conf_set_error_cb(conf, bus_error_cb);
    rd_kafka_conf_set_log_cb(conf, bus_log_cb);
    c->rk = rd_kafka_new(kind == BUS_CLIENT_CONSUMER ? RD_KAFKA_CONSUMER
                                                     : RD_KAFKA_PRODUCER,
                         conf, errstr, sizeof(errstr));
    if (!c->rk)
        return agent_error_set(err, EINVAL, "invalid_field", "bus.properties",
                               "cannot create the Kafka %s: %s",
                               bus_client_names[kind], errstr);
    conf = NULL; /* owned by c->rk now */
    rd_kafka_set_log_queue(c->rk, NULL);
    if (kind == BUS_CLIENT_CONSUMER) {
        rd_kafka_poll_set_consumer(c->rk);
        c->queue = rd_kafka_queue_get_consumer(c->rk);
    } else {
        c->queue = rd_kafka_queue_get_main(c->rk);
    }
    rd_kafka_queue_io_event_enable(c->queue, bus->efd, &bus_wakeup,
                                   sizeof(bus_wakeup));
    return 0;
}

/* A new conf with what every client starts from. */
static int bus_conf_new(struct bus *bus, enum bus_client_kind kind,
                        rd_kafka_conf_t **ret, struct agent_error *err)
{
    _cleanup_(rd_kafka_conf_destroyp) rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char client_id[128];
    int r;

    snprintf(client_id, sizeof(client_id), "compute-agent.%s.%s", bus->host,
             kind == BUS_CLIENT_EVENTS      ? "events"
             : kind == BUS_CLIENT_TELEMETRY ? "telemetry"
                                            : "commands");
    r = bus_conf_set(conf, "client.id", client_id, "host", err);
    if (r < 0)
        return r;
    *ret = TAKE_PTR(conf);
    return 0;
}

static int bus_start_events(struct bus *bus, const struct bus_config *cfg,
                            struct agent_error *err)
{
    _cleanup_(rd_kafka_conf_destroyp) rd_kafka_conf_t *conf = NULL;
    int r;

    r = bus_conf_new(bus, BUS_CLIENT_EVENTS, &conf, err);
    if (r < 0)
        return r;
    /* Wait out any outage: the outbox holds the event anyway, and a resend
     * after a timeout could duplicate it. */
    if ((r = bus_conf_set(conf, "message.timeout.ms", "0", "bus", err)) < 0 ||
        (r = bus_conf_set(conf, "partitioner", "murmur2_random", "bus", err)) < 0 ||
        (r = bus_conf_set(conf, "linger.ms", "5", "bus", err)) < 0)
        return r;
    r = bus_conf_apply_user(conf, BUS_CLIENT_EVENTS, cfg->properties, err);
    if (r < 0)
        return r;
    /* Owned by the bus: once each, in order per key. */
    r = bus_conf_set(conf, "enable.idempotence", "true", "bus", err);
    if (r < 0)
        return r;
    if (bus->state_client == BUS_CLIENT_EVENTS &&
        (r = bus_conf_set_int(conf, "statistics.interval.ms",
                              cfg->state_interval_ms > 0
                                  ? cfg->state_interval_ms
                                  : BUS_DEFAULT_STATE_INTERVAL_MS,
                              err)) < 0)
        return r;
    if (bus->state_client == BUS_CLIENT_EVENTS)
        rd_kafka_conf_set_stats_cb(conf, bus_stats_cb);
    rd_kafka_conf_set_dr_msg_cb(conf, bus_events_dr_cb);
    r = bus_client_start(bus, BUS_CLIENT_EVENTS, TAKE_PTR(conf), err);
    if (r < 0)
        return r;
    bus->rkt_events = rd_kafka_topic_new(bus->clients[BUS_CLIENT_EVENTS].rk,
                                         bus->topics[BUS_TOPIC_EVENTS], NULL);
    if (!bus->rkt_events)
        return agent_error_set(err, EINVAL, "internal", NULL,
                               "cannot create topic handle %s: %s",
                               bus->topics[BUS_TOPIC_EVENTS],
                               rd_kafka_err2str(rd_kafka_last_error()));
    return 0;
}

static int bus_start_telemetry(struct bus *bus, const struct bus_config *cfg,
                               struct agent_error *err)
{
    _cleanup_(rd_kafka_conf_destroyp) rd_kafka_conf_t *conf = NULL;
    rd_kafka_topic_conf_t *tconf;
    rd_kafka_t *rk;
    char errstr[256];
    size_t max = cfg->telemetry_queue_max ? cfg->telemetry_queue_max
                                          : BUS_DEFAULT_TELEMETRY_QUEUE_MAX;
    size_t max_kbytes = cfg->telemetry_queue_max_kbytes
                            ? cfg->telemetry_queue_max_kbytes
                            : BUS_DEFAULT_TELEMETRY_QUEUE_KBYTES;
    /* The bound is shared between librdkafka's queue and the backlog in
     * front of it (all of it for librdkafka when dropping the newest). */
    size_t rk_max = bus->drop_newest ? max : (max + 1) / 2;
    size_t rk_max_kbytes = bus->drop_newest ? max_kbytes : (max_kbytes + 1) / 2;
    int r;

    bus->backlog_max = max > rk_max ? max - rk_max : 1;
    bus->backlog_max_bytes = (max_kbytes > rk_max_kbytes ? max_kbytes - rk_max_kbytes : 1) * 1024;
    r = bus_conf_new(bus, BUS_CLIENT_TELEMETRY, &conf, err);
    if (r < 0)
        return r;
    r = bus_conf_set(conf, "compression.type",
                     cfg->telemetry_compression && *cfg->telemetry_compression
                         ? cfg->telemetry_compression
                         : "lz4",
                     "telemetry.compression", err);
    if (r < 0)
        return r;
    if ((r = bus_conf_set_int(conf, "linger.ms",
                              cfg->telemetry_linger_ms > 0
                                  ? cfg->telemetry_linger_ms
                                  : BUS_DEFAULT_TELEMETRY_LINGER_MS,
                              err)) < 0 ||
        (r = bus_conf_set_int(conf, "queue.buffering.max.messages",
                              (long long)rk_max, err)) < 0 ||
        (r = bus_conf_set_int(conf, "queue.buffering.max.kbytes",
                              (long long)rk_max_kbytes, err)) < 0 ||
        (r = bus_conf_set(conf, "acks", "1", "bus", err)) < 0 ||
        (r = bus_conf_set(conf, "partitioner", "murmur2_random", "bus", err)) < 0)
        return r;
    r = bus_conf_apply_user(conf, BUS_CLIENT_TELEMETRY, cfg->properties, err);
    if (r < 0)
        return r;
    rd_kafka_conf_set_dr_msg_cb(conf, bus_lossy_dr_cb);
    r = bus_client_start(bus, BUS_CLIENT_TELEMETRY, TAKE_PTR(conf), err);
    if (r < 0)
        return r;
    rk = bus->clients[BUS_CLIENT_TELEMETRY].rk;

    bus->rkt_telemetry = rd_kafka_topic_new(rk, bus->topics[BUS_TOPIC_TELEMETRY], NULL);
    if (!bus->rkt_telemetry)
        return agent_error_set(err, EINVAL, "internal", NULL,
                               "cannot create topic handle %s: %s",
                               bus->topics[BUS_TOPIC_TELEMETRY],
                               rd_kafka_err2str(rd_kafka_last_error()));

    /* Heartbeats: small, uncompressed, worthless once stale. */
    tconf = rd_kafka_default_topic_conf_dup(rk);
    snprintf(errstr, sizeof(errstr), "%d",
             cfg->heartbeat_timeout_ms > 0 ? cfg->heartbeat_timeout_ms
                                           : BUS_DEFAULT_HEARTBEAT_TIMEOUT_MS);
    if (!tconf ||
        rd_kafka_topic_conf_set(tconf, "message.timeout.ms", errstr, errstr,
                                sizeof(errstr)) != RD_KAFKA_CONF_OK ||
        rd_kafka_topic_conf_set(tconf, "compression.type", "none", errstr,
                                sizeof(errstr)) != RD_KAFKA_CONF_OK) {
        if (tconf)
            rd_kafka_topic_conf_destroy(tconf);
        return agent_error_set(err, EINVAL, "invalid_field",
                               "heartbeat_timeout_ms",
                               "heartbeat topic configuration: %s", errstr);
    }
    bus->rkt_heartbeat = rd_kafka_topic_new(rk, bus->topics[BUS_TOPIC_HEARTBEAT], tconf);
    if (!bus->rkt_heartbeat)
        return agent_error_set(err, EINVAL, "internal", NULL,
                               "cannot create topic handle %s: %s",
                               bus->topics[BUS_TOPIC_HEARTBEAT],
                               rd_kafka_err2str(rd_kafka_last_error()));
    return 0;
}

static int bus_start_consumer(struct bus *bus, const struct bus_config *cfg,
                              struct agent_error *err)
{
    _cleanup_(rd_kafka_conf_destroyp) rd_kafka_conf_t *conf = NULL;
    rd_kafka_topic_partition_list_t *topics;
    rd_kafka_resp_err_t e;
    int r;

    r = bus_conf_new(bus, BUS_CLIENT_CONSUMER, &conf, err);
    if (r < 0)
        return r;
    /* session/heartbeat: short enough for librdkafka 2.0.2's mock cluster,
     * where a departed member lingers until its session times out. */
    if ((r = bus_conf_set(conf, "auto.offset.reset", "earliest", "bus", err)) < 0 ||
        (r = bus_conf_set(conf, "session.timeout.ms", "6000", "bus", err)) < 0 ||
        (r = bus_conf_set(conf, "heartbeat.interval.ms", "500", "bus", err)) < 0 ||
        (r = bus_conf_set(conf, "allow.auto.create.topics", "true", "bus", err)) < 0 ||
        (r = bus_conf_set_int(conf, "statistics.interval.ms",
                              cfg->state_interval_ms > 0
                                  ? cfg->state_interval_ms
                                  : BUS_DEFAULT_STATE_INTERVAL_MS,
                              err)) < 0)
        return r;
    /* librdkafka 2.0.2's mock broker answers a fetch only when its wait
     * expires, not when data arrives: keep a lone command's latency short
     * (a real broker answers on arrival, the default 500 ms is right). */
    if (bus->mock && (r = bus_conf_set(conf, "fetch.wait.max.ms", "100", "bus", err)) < 0)
        return r;
    r = bus_conf_apply_user(conf, BUS_CLIENT_CONSUMER, cfg->properties, err);
    if (r < 0)
        return r;
    /* Owned by the bus: offsets move only through bus_command_commit(). */
    if ((r = bus_conf_set(conf, "group.id", bus->group_id, "host", err)) < 0 ||
        (r = bus_conf_set(conf, "enable.auto.commit", "false", "bus", err)) < 0 ||
        (r = bus_conf_set(conf, "enable.auto.offset.store", "false", "bus", err)) < 0)
        return r;
    rd_kafka_conf_set_stats_cb(conf, bus_stats_cb);
    rd_kafka_conf_set_rebalance_cb(conf, bus_rebalance_cb);
    rd_kafka_conf_set_offset_commit_cb(conf, bus_offset_commit_cb);
    r = bus_client_start(bus, BUS_CLIENT_CONSUMER, TAKE_PTR(conf), err);
    if (r < 0)
        return r;

    topics = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(topics, bus->topics[BUS_TOPIC_COMMANDS],
                                      RD_KAFKA_PARTITION_UA);
    e = rd_kafka_subscribe(bus->clients[BUS_CLIENT_CONSUMER].rk, topics);
    rd_kafka_topic_partition_list_destroy(topics);
    if (e)
        return agent_error_set(err, -bus_errno(e), "internal", NULL,
                               "cannot subscribe to %s: %s",
                               bus->topics[BUS_TOPIC_COMMANDS],
                               rd_kafka_err2str(e));
    return 0;
}

/* The in-process cluster: one broker on loopback, owned by a client of its
 * own; the topics are created up front (commands: one partition, so a
 * host's commands keep their order). */
static int bus_start_mock(struct bus *bus, struct agent_error *err)
{
    static const struct {
        enum bus_topic topic;
        int partitions;
    } topics[] = {
        {BUS_TOPIC_COMMANDS, 1},
        {BUS_TOPIC_EVENTS, BUS_MOCK_EVENT_PARTITIONS},
        {BUS_TOPIC_HEARTBEAT, 1},
        {BUS_TOPIC_TELEMETRY, BUS_MOCK_EVENT_PARTITIONS},
    };
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    const char *bs;
    int r;

    r = bus_client_start(bus, BUS_CLIENT_MOCK, conf, err);
    if (r < 0)
        return r;
    bus->mock = rd_kafka_mock_cluster_new(bus->clients[BUS_CLIENT_MOCK].rk, 1);
    if (!bus->mock)
        return agent_error_set(err, EIO, "internal", NULL,
                               "cannot start the in-process Kafka mock cluster");
    bs = rd_kafka_mock_cluster_bootstraps(bus->mock);
    bus->bootstrap = strdup(bs ? bs : "");
    if (!bus->bootstrap)
        return agent_error_set(err, ENOMEM, "internal", NULL, "out of memory");
    for (size_t i = 0; i < ARRAY_SIZE(topics); i++) {
        rd_kafka_resp_err_t e = rd_kafka_mock_topic_create(
            bus->mock, bus->topics[topics[i].topic], topics[i].partitions, 1);

        if (e)
            return agent_error_set(err, -bus_errno(e), "internal", NULL,
                                   "mock cluster: cannot create topic %s: %s",
                                   bus->topics[topics[i].topic],
                                   rd_kafka_err2str(e));
    }
    return 0;
}

static int bus_names_init(struct bus *bus, const struct bus_config *cfg,
                          struct agent_error *err)
{
    const char *prefix = cfg->topic_prefix ? cfg->topic_prefix : "";

    if (!cfg->host || !*cfg->host)
        return agent_error_set(err, EINVAL, "invalid_field", "host_name",
                               "a host name is required for the bus");
    bus->host = strdup(cfg->host);
    bus->topics[BUS_TOPIC_COMMANDS] = bus_strcat3(prefix, "compute.", cfg->host);
    bus->topics[BUS_TOPIC_EVENTS] = bus_strcat3(prefix, "compute.events", "");
    bus->topics[BUS_TOPIC_HEARTBEAT] = bus_strcat3(prefix, "compute.heartbeat", "");
    bus->topics[BUS_TOPIC_TELEMETRY] = bus_strcat3(prefix, "telemetry", "");
    bus->group_id = bus_strcat3(prefix, "compute-agent.", cfg->host);
    if (!bus->host || !bus->group_id)
        return agent_error_set(err, ENOMEM, "internal", NULL, "out of memory");
    /* The prefix alone first, so a bad one is blamed on the prefix. */
    static const enum bus_topic order[] = {BUS_TOPIC_EVENTS, BUS_TOPIC_HEARTBEAT,
                                           BUS_TOPIC_TELEMETRY, BUS_TOPIC_COMMANDS};
    for (size_t i = 0; i < ARRAY_SIZE(order); i++) {
        enum bus_topic t = order[i];

        if (!bus->topics[t])
            return agent_error_set(err, ENOMEM, "internal", NULL,
                                   "out of memory");
        if (!bus_topic_name_valid(bus->topics[t]))
            return agent_error_set(
                err, EINVAL, "invalid_field",
                t == BUS_TOPIC_COMMANDS ? "host_name" : "bus.prefix",
                "\"%s\" is not a valid Kafka topic name (letters, digits, "
                "'.', '_', '-', at most 249)",
                bus->topics[t]);
    }
    return 0;
}

int bus_new(uv_loop_t *loop, const struct bus_config *cfg,
            const struct bus_callbacks *cb, void *opaque, struct bus **ret,
            struct agent_error *err)
{
    struct bus *bus;
    int r;

    if (!loop || !cfg || !cb || !ret)
        return agent_error_set(err, EINVAL, "internal", NULL,
                               "bus_new: missing argument");
    bus = calloc(1, sizeof(*bus));
    if (!bus)
        return agent_error_set(err, ENOMEM, "internal", NULL, "out of memory");
    list_init(&bus->parts);
    list_init(&bus->cmds);
    list_init(&bus->backlog);
    bus->loop = loop;
    bus->cb = *cb;
    bus->opaque = opaque;
    bus->max_command_bytes =
        cfg->max_command_bytes ? cfg->max_command_bytes : BUS_DEFAULT_MAX_COMMAND_BYTES;
    bus->drop_newest = cfg->telemetry_drop_newest;
    bus->flush_timeout_ms =
        cfg->flush_timeout_ms > 0 ? cfg->flush_timeout_ms : BUS_DEFAULT_FLUSH_TIMEOUT_MS;
    bus->state_client = cb->on_command ? BUS_CLIENT_CONSUMER : BUS_CLIENT_EVENTS;
    bus->refs = 1;
    if (uv_mutex_init(&bus->purge_lock) == 0) {
        if (uv_cond_init(&bus->purge_cond) == 0)
            bus->purge_sync_inited = true;
        else
            uv_mutex_destroy(&bus->purge_lock);
    }
    if (!bus->purge_sync_inited) {
        free(bus);
        return agent_error_set(err, ENOMEM, "internal", NULL, "cannot create a mutex");
    }
    bus->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (bus->efd < 0) {
        r = agent_error_set(err, errno, "internal", NULL, "eventfd: %s",
                            strerror(errno));
        bus_unref(bus);
        return r;
    }
    r = uv_poll_init(loop, &bus->poll, bus->efd);
    if (r < 0) {
        agent_error_set(err, -r, "internal", NULL, "uv_poll_init: %s",
                        uv_strerror(r));
        close(bus->efd);
        bus_unref(bus);
        return r;
    }
    bus->poll_inited = true;
    bus->poll.data = bus;

    r = bus_names_init(bus, cfg, err);
    if (r < 0)
        goto fail;
    if (cfg->brokers && *cfg->brokers) {
        bus->bootstrap = strdup(cfg->brokers);
        if (!bus->bootstrap) {
            r = agent_error_set(err, ENOMEM, "internal", NULL, "out of memory");
            goto fail;
        }
    } else {
        r = bus_start_mock(bus, err);
        if (r < 0)
            goto fail;
    }
    r = bus_start_events(bus, cfg, err);
    if (r < 0)
        goto fail;
    r = bus_start_telemetry(bus, cfg, err);
    if (r < 0)
        goto fail;
    if (cb->on_command) {
        r = bus_start_consumer(bus, cfg, err);
        if (r < 0)
            goto fail;
    }
    r = uv_poll_start(&bus->poll, UV_READABLE, bus_poll_cb);
    if (r < 0) {
        agent_error_set(err, -r, "internal", NULL, "uv_poll_start: %s",
                        uv_strerror(r));
        goto fail;
    }
    /* Serve whatever was queued before the watch started. */
    if (eventfd_write(bus->efd, 1) < 0) {
        /* cannot fail on a fresh eventfd */
    }
    *ret = bus;
    return 0;

fail:
    bus_free_now(bus);
    return r;
}

/* ----------------------------------------------------------- teardown */

static int bus_remaining_ms(uint64_t deadline_ns)
{
    uint64_t now = now_mono_ns();

    return now >= deadline_ns ? 0 : (int)((deadline_ns - now) / 1000000);
}

/* Stop a client's queue from waking the loop and drop our reference. */
static void bus_client_unhook(struct bus_client *c)
{
    if (!c->queue)
        return;
    rd_kafka_queue_io_event_enable(c->queue, -1, NULL, 0);
    rd_kafka_queue_destroy(c->queue);
    c->queue = NULL;
}

/* Deliver what can be delivered within timeout_ms, then fail the rest. */
static void bus_producer_drain(struct bus_client *c, int timeout_ms)
{
    if (!c->rk)
        return;
    rd_kafka_flush(c->rk, timeout_ms);
    rd_kafka_purge(c->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    while (rd_kafka_poll(c->rk, 0) > 0) {
    }
}

static void bus_consumer_close(struct bus *bus, int timeout_ms)
{
    struct bus_client *c = &bus->clients[BUS_CLIENT_CONSUMER];
    uint64_t deadline = now_mono_ns() + (uint64_t)timeout_ms * 1000000u;
    rd_kafka_queue_t *q;
    rd_kafka_error_t *error;
    bool closed = false;

    if (!c->rk)
        return;
    /* Messages must go before their consumer; their offsets stay
     * uncommitted and the commands come back to the next member. */
    bus_parts_orphan(bus, NULL);
    while (!list_empty(&bus->cmds))
        bus_cmd_free(bus, list_entry(bus->cmds.next, struct bus_cmd, link));
    bus_client_unhook(c);

    q = rd_kafka_queue_new(c->rk);
    error = rd_kafka_consumer_close_queue(c->rk, q);
    if (error) {
        rd_kafka_error_destroy(error);
    } else {
        /* Serve the close (rebalance callbacks, pending commit results)
         * until done or out of time. */
        while (!(closed = rd_kafka_consumer_closed(c->rk)) &&
               bus_remaining_ms(deadline) > 0) {
            int wait = bus_remaining_ms(deadline);
            rd_kafka_message_t *m =
                rd_kafka_consume_queue(q, wait < 100 ? wait : 100);

            if (m)
                rd_kafka_message_destroy(m);
        }
    }
    rd_kafka_queue_destroy(q);
    rd_kafka_destroy_flags(c->rk, closed ? 0 : RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    c->rk = NULL;
}

static void bus_closed_cb(uv_handle_t *handle)
{
    bus_unref(handle->data);
}

static void bus_free_now(struct bus *bus)
{
    struct bus_client *ev = &bus->clients[BUS_CLIENT_EVENTS];
    struct bus_client *tm = &bus->clients[BUS_CLIENT_TELEMETRY];
    struct bus_client *mk = &bus->clients[BUS_CLIENT_MOCK];
    uint64_t deadline;
    int left;

    bus->closing = true;
    if (bus->poll_inited)
        uv_poll_stop(&bus->poll);

    /* Consumer first: no command arrives while the producers drain.
     * Leaving the group needs the broker: little point waiting without. */
    bus_consumer_close(bus, bus->clients[BUS_CLIENT_CONSUMER].up
                                ? BUS_CLOSE_TIMEOUT_MS
                                : BUS_CLOSE_TIMEOUT_MS / 6);

    deadline = now_mono_ns() + (uint64_t)bus->flush_timeout_ms * 1000000u;
    bus_client_unhook(ev);
    bus_producer_drain(ev, bus->flush_timeout_ms);
    left = bus_remaining_ms(deadline);
    bus_client_unhook(tm);
    bus_purge_wait(bus);
    while (!list_empty(&bus->backlog)) {
        bus_backlog_pop_free(bus);
        bus->stats.telemetry.queued--;
        bus->stats.telemetry.dropped++;
    }
    bus_producer_drain(tm, left < 500 ? left : 500);

    if (bus->rkt_events)
        rd_kafka_topic_destroy(bus->rkt_events);
    if (bus->rkt_telemetry)
        rd_kafka_topic_destroy(bus->rkt_telemetry);
    if (bus->rkt_heartbeat)
        rd_kafka_topic_destroy(bus->rkt_heartbeat);
    if (ev->rk)
        rd_kafka_destroy(ev->rk);
    if (tm->rk)
        rd_kafka_destroy(tm->rk);

    bus_client_unhook(mk);
    if (bus->mock)
        rd_kafka_mock_cluster_destroy(bus->mock);
    if (mk->rk)
        rd_kafka_destroy(mk->rk);

    free(bus->bootstrap);
    for (int t = 0; t <= BUS_TOPIC_TELEMETRY; t++)
        free(bus->topics[t]);
    free(bus->group_id);
    free(bus->host);
    bus_parts_orphan(bus, NULL);

    if (bus->poll_inited) {
        /* The fd may be closed once uv_close() was called on its watcher. */
        uv_close((uv_handle_t *)&bus->poll, bus_closed_cb);
        close(bus->efd);
    } else {
        close(bus->efd);
        bus_unref(bus);
    }
}

struct bus *bus_free(struct bus *bus)
{
    if (!bus || bus->closing)
        return NULL;
    if (bus->dispatching) {
        /* Called from one of our callbacks: finish that first. */
        bus->free_requested = true;
        return NULL;
    }
    bus_free_now(bus);
    return NULL;
}
