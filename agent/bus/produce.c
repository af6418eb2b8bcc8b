/* produce.c: the acknowledged event producer (idempotent, no timeout: an event
 * waits out an outage and is acknowledged once), heartbeats, and the
 * delivery accounting of every stream. */
#include "agent/bus/bus-private.h"

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
    if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR && bus->cb.on_event_placed)
        bus->cb.on_event_placed(bus->opaque, outbox_id, m->partition, m->offset);
    if (bus->cb.on_event_delivered)
        bus->cb.on_event_delivered(bus->opaque, outbox_id, bus_errno(m->err));
}

/* Telemetry and heartbeats: the message opaque is the stream's counters. */
void bus_lossy_dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m,
                     void *opaque)
{
    (void)rk;
    (void)opaque;
    if (m->_private)
        bus_stream_account(m->_private, m, true);
}

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

int bus_send_command(struct bus *bus, const char *host, const char *key, const char *json, size_t len)
{
    const char *ev, *tail = "compute.events";
    char topic[512];
    size_t plen;
    rd_kafka_resp_err_t e;

    if (!bus || !host || !json)
        return -EINVAL;
    if (bus->closing)
        return -ESHUTDOWN;
    ev = bus->topics[BUS_TOPIC_EVENTS];
    plen = strlen(ev) - strlen(tail); /* the prefix, as every topic has it */
    if ((size_t)snprintf(topic, sizeof(topic), "%.*scompute.%s", (int)plen, ev, host) >= sizeof(topic))
        return -ENAMETOOLONG;
    /* the lossy producer (acks=1, its own timeout): a lost message is the
     * sender's deadline's to cover, never a wait behind the outbox */
    e = rd_kafka_producev(bus->clients[BUS_CLIENT_TELEMETRY].rk, RD_KAFKA_V_TOPIC(topic),
                          RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_KEY(key, key ? strlen(key) : 0),
                          RD_KAFKA_V_VALUE((void *)json, len), RD_KAFKA_V_OPAQUE(NULL), RD_KAFKA_V_END);
    if (e)
        return bus_errno(e);
    bus->stats.peer_sent++;
    return 0;
}

rd_kafka_resp_err_t bus_produce_lossy(struct bus *bus,
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

int bus_start_events(struct bus *bus, const struct bus_config *cfg,
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
