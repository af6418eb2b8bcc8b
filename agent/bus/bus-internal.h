/* bus-internal.h: TEST-ONLY hooks into agent/bus/. The agent must not
 * include this file; nothing here is part of the bus's contract. */
#ifndef CA_AGENT_BUS_INTERNAL_H
#define CA_AGENT_BUS_INTERNAL_H

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <stdbool.h>
#include <stddef.h>

struct bus;

/* The mock cluster this bus runs in-process (no brokers configured), for
 * fault injection (rd_kafka_mock_broker_set_down/up, ...), or NULL when the
 * bus talks to configured brokers: an outside cluster cannot be steered from
 * here. Borrowed, valid until bus_free(). */
rd_kafka_mock_cluster_t *bus_mock_cluster(struct bus *bus);

/* From librdkafka's statistics JSON (statistics.interval.ms): is any real
 * broker (not the internal pseudo broker) in state UP? 0 and *up, or
 * -EINVAL when json is not JSON (*up untouched). Exposed for fuzzing. */
int bus_stats_broker_up(const char *json, size_t len, bool *up);

#endif
