/* conf.c: librdkafka configuration for the bus's clients (what each starts
 * from, the user's scoped properties), topic names, starting a client. */
#include "agent/bus/bus-private.h"
#include "agent/bus-readback.h"

/* Property scopes in bus_config.properties ("telemetry.linger.ms=5"). */
static const char *const bus_client_scopes[BUS_CLIENT_N] = {
    [BUS_CLIENT_EVENTS] = "events.",
    [BUS_CLIENT_TELEMETRY] = "telemetry.",
    [BUS_CLIENT_CONSUMER] = "consumer.",
};

/* What librdkafka writes to the eventfd: one wake-up. */
static const uint64_t bus_wakeup = 1;

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

int bus_conf_set(rd_kafka_conf_t *conf, const char *key,
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

int bus_conf_set_int(rd_kafka_conf_t *conf, const char *key,
                     long long value, struct agent_error *err)
{
    char buf[32];

    snprintf(buf, sizeof(buf), "%lld", value);
    return bus_conf_set(conf, key, buf, "bus", err);
}

/* Apply the properties from cfg meant for client kind. */
int bus_conf_apply_user(rd_kafka_conf_t *conf,
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
int bus_client_start(struct bus *bus, enum bus_client_kind kind,
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
int bus_conf_new(struct bus *bus, enum bus_client_kind kind,
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

int bus_names_init(struct bus *bus, const struct bus_config *cfg,
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

int bus_reader_conf_new(const char *bootstrap, const char *host, const char *const *props,
                        rd_kafka_conf_t **ret, struct agent_error *err)
{
    _cleanup_(rd_kafka_conf_destroyp) rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char client_id[300];
    int r;

    if (!conf)
        return agent_error_set(err, ENOMEM, "internal", NULL, "out of memory");
    snprintf(client_id, sizeof(client_id), "compute-agent.%s.readback", host);
    if ((r = bus_conf_set(conf, "client.id", client_id, "host", err)) < 0 ||
        (r = bus_conf_apply_user(conf, BUS_CLIENT_CONSUMER, props, err)) < 0 ||
        (r = bus_conf_set(conf, "bootstrap.servers", bootstrap, "bus.brokers", err)) < 0 ||
        /* librdkafka 2.0 wants a group for assign(); it is never joined
         * (no subscribe) and nothing is committed to it */
        (r = bus_conf_set(conf, "group.id", client_id, "host", err)) < 0 ||
        (r = bus_conf_set(conf, "enable.auto.commit", "false", "bus", err)) < 0 ||
        (r = bus_conf_set(conf, "enable.auto.offset.store", "false", "bus", err)) < 0 ||
        (r = bus_conf_set(conf, "enable.partition.eof", "true", "bus", err)) < 0 ||
        (r = bus_conf_set(conf, "auto.offset.reset", "earliest", "bus", err)) < 0)
        return r;
    *ret = TAKE_PTR(conf);
    return 0;
}
