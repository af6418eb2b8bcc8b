/* telemetry-queue.c: the lossy telemetry producer. The bound is split between
 * librdkafka's queue and a backlog in front of it, so that on overflow the
 * oldest samples go (a purge of librdkafka's unsent ones on the threadpool,
 * the oldest of the backlog) and the newest survive, in order. */
#include "agent/bus/bus-private.h"

#include <sys/eventfd.h>

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
void bus_backlog_drain(struct bus *bus)
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

int bus_start_telemetry(struct bus *bus, const struct bus_config *cfg,
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

void bus_backlog_discard(struct bus *bus)
{
    bus_purge_wait(bus);
    while (!list_empty(&bus->backlog)) {
        bus_backlog_pop_free(bus);
        bus->stats.telemetry.queued--;
        bus->stats.telemetry.dropped++;
    }
}
