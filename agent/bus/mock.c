/* mock.c: librdkafka's in-process mock cluster, used when no brokers are set. */
#include "agent/bus/bus-private.h"

#include "agent/bus/bus-internal.h"

/* The in-process cluster: one broker on loopback, owned by a client of its
 * own; the topics are created up front (commands: one partition, so a
 * host's commands keep their order). */
int bus_start_mock(struct bus *bus, struct agent_error *err)
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

rd_kafka_mock_cluster_t *bus_mock_cluster(struct bus *bus)
{
    return bus->mock;
}
