/* bus.c: the agent's Kafka bus (see agent/bus.h for the contract): the object,
 * librdkafka's client-level callbacks, serving the clients' queues, teardown.
 * The other parts are in this folder (bus-private.h says which file does what).
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
#include "agent/bus/bus-private.h"
#include "agent/bus/bus-internal.h"

#include <jansson.h>
#include <sys/eventfd.h>

static void bus_free_now(struct bus *bus);

const char *const bus_client_names[BUS_CLIENT_N] = {
    [BUS_CLIENT_MOCK] = "mock cluster",
    [BUS_CLIENT_EVENTS] = "event producer",
    [BUS_CLIENT_TELEMETRY] = "telemetry producer",
    [BUS_CLIENT_CONSUMER] = "command consumer",
};

/* The one place librdkafka's error codes become -errno. */
int bus_errno(rd_kafka_resp_err_t e)
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
void bus_report_error(struct bus *bus, enum bus_client_kind kind,
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

void bus_state_update(struct bus *bus)
{
    bool up = bus->clients[bus->state_client].up;

    if (up == bus->up)
        return;
    bus->up = up;
    if (!bus->closing && bus->cb.on_state)
        bus->cb.on_state(bus->opaque, up);
}

void bus_log_cb(const rd_kafka_t *rk, int level, const char *fac,
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

void bus_error_cb(rd_kafka_t *rk, int err, const char *reason,
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

int bus_stats_cb(rd_kafka_t *rk, char *json, size_t len, void *opaque)
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

void bus_unref(struct bus *bus)
{
    if (--bus->refs > 0)
        return;
    if (bus->purge_sync_inited) {
        uv_cond_destroy(&bus->purge_cond);
        uv_mutex_destroy(&bus->purge_lock);
    }
    free(bus);
}

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

/* Stop a client's queue from waking the loop and drop our reference. */
void bus_client_unhook(struct bus_client *c)
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
    bus_backlog_discard(bus);
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
