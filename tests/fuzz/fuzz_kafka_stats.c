/* fuzz_kafka_stats: librdkafka's statistics JSON (the stats callback of
 * every bus client, which decides whether the bus is up) from untrusted
 * bytes through bus_stats_broker_up(): never a crash or leak. */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#include "agent/bus/bus-internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    bool up = true;

    if (bus_stats_broker_up((const char *)data, size, &up) < 0 && !up)
        abort(); /* a refusal leaves *up alone */
    return 0;
}

static void fuzz_done(void) {}

#include "tests/fuzz/replay.h"
