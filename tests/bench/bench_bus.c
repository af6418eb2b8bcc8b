/* bench_bus.c: figures for agent/bus/ on librdkafka's in-process mock
 * cluster (one broker, loopback):
 *   events      idempotent publish -> ack throughput and delivery lag
 *   commands    commands produced by kcat (another process) -> on_command ->
 *               event published + offset committed, until every event is
 *               acknowledged: the bus's share of a command round trip
 *   telemetry   bulk samples (1000 instances x 15 meters per interval),
 *               lz4 and zstd: CPU per interval, delivery lag
 *   idle        loop wake-ups and CPU while nothing happens
 * CPU is the whole process (librdkafka's threads and the mock broker
 * included). Usage: bench_bus [BUILD_DIR, ignored]; environment:
 * BENCH_BUS_SCALE (1..100, multiplies the event and command counts),
 * BENCH_BUS_PROP (one more bus property, "k=v").
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "agent/bus.h"
#include "common/util.h"

#include <fcntl.h>
#include <librdkafka/rdkafka.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>

extern char **environ;

struct bench {
    uv_loop_t loop;
    struct bus *bus;
    bool up;
    uint64_t acked, ack_errors;
    uint64_t commands;
    int64_t first_cmd_ms;
    double cmd_latency_ms_sum; /* producer timestamp -> on_command */
    int64_t next_outbox_id;
};

static void b_on_state(void *opaque, bool up)
{
    ((struct bench *)opaque)->up = up;
}

static void b_on_event_delivered(void *opaque, int64_t id, int err)
{
    struct bench *b = opaque;

    (void)id;
    b->acked++;
    if (err)
        b->ack_errors++;
}

/* The agent's command path without the journal: answer with an event keyed
 * like the command, then commit. */
static void b_on_command(void *opaque, const struct bus_message *msg)
{
    struct bench *b = opaque;
    char json[256];
    int64_t now = now_wall_ms();
    int len;

    if (b->commands++ == 0)
        b->first_cmd_ms = now;
    if (msg->timestamp_ms > 0)
        b->cmd_latency_ms_sum += (double)(now - msg->timestamp_ms);
    len = snprintf(json, sizeof(json),
                   "{\"event\":\"instance.running\",\"instance_id\":\"%s\",\"host\":\"bench\","
                   "\"request_id\":\"r%llu\"}",
                   msg->key ? msg->key : "", (unsigned long long)b->commands);
    if (bus_publish_event(b->bus, msg->key, json, (size_t)len, b->next_outbox_id++) < 0)
        b->ack_errors++;
    bus_command_commit(b->bus, msg);
}

static const struct bus_callbacks b_callbacks = {
    .on_command = b_on_command,
    .on_event_delivered = b_on_event_delivered,
    .on_state = b_on_state,
};

static double cpu_seconds(void)
{
    struct rusage ru;

    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static double mono_s(void)
{
    return (double)now_mono_ns() / 1e9;
}

static void deadline_cb(uv_timer_t *t)
{
    *(bool *)t->data = true;
}

/* Run the loop until *counter >= target or timeout_s; true if reached. */
static bool run_until_count(struct bench *b, const uint64_t *counter, uint64_t target,
                            double timeout_s)
{
    uv_timer_t timer;
    bool expired = false;

    uv_timer_init(&b->loop, &timer);
    timer.data = &expired;
    uv_timer_start(&timer, deadline_cb, (uint64_t)(timeout_s * 1000), 0);
    while (*counter < target && !expired)
        uv_run(&b->loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&timer, NULL);
    uv_run(&b->loop, UV_RUN_NOWAIT);
    return *counter >= target;
}

static bool run_until_up(struct bench *b, double timeout_s)
{
    double end = mono_s() + timeout_s;
    uint64_t dummy = 0;

    while (!b->up && mono_s() < end)
        run_until_count(b, &dummy, 1, 0.05);
    return b->up;
}

static int start_bus(struct bench *b, const char *host, const char *compression)
{
    /* BENCH_BUS_PROP: one more librdkafka property to try ("k=v"). */
    const char *extra = getenv("BENCH_BUS_PROP");
    const char *const props[] = {"reconnect.backoff.max.ms=500", extra, NULL};
    struct bus_config cfg = {.host = host, .properties = props,
                             .telemetry_compression = compression};
    struct agent_error err = {0};
    int r;

    memset(b, 0, sizeof(*b));
    uv_loop_init(&b->loop);
    r = bus_new(&b->loop, &cfg, &b_callbacks, b, &b->bus, &err);
    if (r < 0) {
        fprintf(stderr, "bus_new: %s\n", err.message);
        return r;
    }
    if (!run_until_up(b, 30)) {
        fprintf(stderr, "bus never came up\n");
        return -ETIMEDOUT;
    }
    return 0;
}

static void stop_bus(struct bench *b)
{
    b->bus = bus_free(b->bus);
    uv_run(&b->loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&b->loop) != 0)
        fprintf(stderr, "loop not clean\n");
}

static void bench_events(int n)
{
    struct bench b;
    struct bus_stats s;
    char json[320];
    double t0, c0, t1, c1;

    if (start_bus(&b, "bench-ev", NULL) < 0)
        return;
    t0 = mono_s();
    c0 = cpu_seconds();
    for (int i = 0; i < n;) {
        /* Like an agent: a burst per loop turn, not one huge one. */
        for (int k = 0; k < 500 && i < n; k++, i++) {
            char key[32];
            int len;

            snprintf(key, sizeof(key), "i-%04d", i % 100);
            len = snprintf(json, sizeof(json),
                           "{\"event\":\"instance.running\",\"instance_id\":\"%s\","
                           "\"ec2_id\":\"i-0123456789abcdef0\",\"host\":\"bench-ev\","
                           "\"request_id\":\"%08d\",\"timestamp\":\"2026-11-23T20:10:11.123Z\","
                           "\"state\":\"running\"}",
                           key, i);
            while (bus_publish_event(b.bus, key, json, (size_t)len, i) == -ENOBUFS)
                uv_run(&b.loop, UV_RUN_ONCE);
        }
        uv_run(&b.loop, UV_RUN_NOWAIT);
    }
    run_until_count(&b, &b.acked, (uint64_t)n, 120);
    t1 = mono_s();
    c1 = cpu_seconds();
    bus_stats(b.bus, &s);
    printf("events: %d published, %llu acked (%llu errors) in %.2f s = %.0f/s; lag avg %.1f ms max %.1f ms; "
           "CPU %.2f s (%.1f us/event); wake-ups %llu\n",
           n, (unsigned long long)b.acked, (unsigned long long)b.ack_errors, t1 - t0,
           (double)n / (t1 - t0), bus_stream_lag_ms_avg(&s.events), s.events.lag_ms_max,
           c1 - c0, (c1 - c0) * 1e6 / n, (unsigned long long)s.wakeups);
    stop_bus(&b);
}

static pid_t spawn_kcat_file(struct bench *b, const char *topic, const char *path)
{
    char *const argv[] = {"kcat", "-b", (char *)bus_bootstrap_servers(b->bus), "-t",
                          (char *)topic, "-P", "-K", "|", "-q", "-l", (char *)path, NULL};
    pid_t pid;

    if (posix_spawnp(&pid, "kcat", NULL, NULL, argv, environ) != 0)
        return -1;
    return pid;
}

static void bench_commands(int n)
{
    struct bench b;
    struct bus_stats s;
    char path[] = "/tmp/bench-bus-XXXXXX";
    int fd, status;
    FILE *f;
    pid_t pid;
    double c0, c1, single_sum = 0;
    int64_t end_ms;
    const int singles = 10;

    if (start_bus(&b, "bench-cmd", NULL) < 0)
        return;
    fd = mkstemp(path);
    if (fd < 0) {
        perror("mkstemp");
        stop_bus(&b);
        return;
    }
    close(fd);

    /* One at a time (after the group join): latency of a lone command,
     * kcat's produce timestamp to on_command. */
    for (int i = 0; i < singles; i++) {
        double before = b.cmd_latency_ms_sum;

        f = fopen(path, "w");
        fprintf(f, "i-single|{\"op\":\"start\",\"request_id\":\"s%d\"}\n", i);
        fclose(f);
        pid = spawn_kcat_file(&b, "compute.bench-cmd", path);
        if (pid < 0) {
            fprintf(stderr, "commands: kcat not available\n");
            unlink(path);
            stop_bus(&b);
            return;
        }
        run_until_count(&b, &b.acked, (uint64_t)i + 1, 30);
        waitpid(pid, &status, 0);
        if (i > 0) /* the first one includes the group join */
            single_sum += b.cmd_latency_ms_sum - before;
    }

    /* A burst of n: throughput of the bus's side of the round trip. */
    b.commands = 0;
    b.acked = 0;
    b.cmd_latency_ms_sum = 0;
    f = fopen(path, "w");
    for (int i = 0; i < n; i++)
        fprintf(f, "i-%04d|{\"op\":\"start\",\"request_id\":\"r%d\",\"instance_id\":\"i-%04d\"}\n",
                i % 100, i, i % 100);
    fclose(f);
    pid = spawn_kcat_file(&b, "compute.bench-cmd", path);
    c0 = cpu_seconds();
    run_until_count(&b, &b.acked, (uint64_t)n, 120);
    end_ms = now_wall_ms();
    c1 = cpu_seconds();
    waitpid(pid, &status, 0);
    unlink(path);
    bus_stats(b.bus, &s);
    printf("commands: lone command latency avg %.1f ms (kcat produce timestamp -> on_command, "
           "%d samples); burst: %llu in, %llu events acked (%llu errors) in %.3f s from the "
           "first = %.0f round trips/s; event lag avg %.1f ms; CPU %.2f s (kcat excluded)\n",
           single_sum / (singles - 1), singles - 1, (unsigned long long)b.commands,
           (unsigned long long)b.acked, (unsigned long long)b.ack_errors,
           (double)(end_ms - b.first_cmd_ms) / 1000.0,
           (double)b.acked * 1000.0 / (double)(end_ms - b.first_cmd_ms + 1),
           bus_stream_lag_ms_avg(&s.events), c1 - c0);
    stop_bus(&b);
}

static void bench_telemetry(const char *compression, int instances, int intervals)
{
    struct bench b;
    struct bus_stats s;
    const int meters = 15;
    static const char *const names[] = {
        "cpu", "cpu_util", "vcpus", "memory.usage", "memory.resident",
        "disk.device.read.bytes", "disk.device.write.bytes", "disk.device.read.requests",
        "disk.device.write.requests", "network.incoming.bytes", "network.outgoing.bytes",
        "network.incoming.packets", "network.outgoing.packets", "disk.device.capacity",
        "disk.device.usage"};
    double cpu_total = 0, t0;
    uint64_t target = 0;

    if (start_bus(&b, "bench-tm", compression) < 0)
        return;
    t0 = mono_s();
    for (int iv = 0; iv < intervals; iv++) {
        double c0 = cpu_seconds();

        for (int i = 0; i < instances; i++) {
            char key[40], json[320];

            snprintf(key, sizeof(key), "00000000-0000-4000-8000-%012d", i);
            for (int m = 0; m < meters; m++) {
                int len = snprintf(json, sizeof(json),
                                   "{\"instance_id\":\"%s\",\"ec2_id\":\"i-%017d\",\"host\":"
                                   "\"bench-tm\",\"timestamp\":\"2026-11-23T20:10:%02d.000Z\","
                                   "\"meter\":\"%s\",\"unit\":\"B\",\"value\":%d}",
                                   key, i, iv % 60, names[m], (i * 31 + m * 7 + iv) % 100000);

                bus_publish_telemetry(b.bus, key, json, (size_t)len);
            }
        }
        target += (uint64_t)instances * meters;
        /* Let the interval's batch go out before the next one. */
        {
            double end = mono_s() + 30;

            do {
                uv_run(&b.loop, UV_RUN_ONCE);
                bus_stats(b.bus, &s);
            } while (s.telemetry.delivered + s.telemetry.dropped + s.telemetry.failed < target &&
                     mono_s() < end);
        }
        cpu_total += cpu_seconds() - c0;
    }
    bus_stats(b.bus, &s);
    printf("telemetry %s: %d intervals x %d samples: delivered %llu dropped %llu failed %llu in "
           "%.2f s; CPU %.3f s per interval (%.2f us/sample); lag avg %.0f ms (linger 500 ms)\n",
           compression, intervals, instances * meters, (unsigned long long)s.telemetry.delivered,
           (unsigned long long)s.telemetry.dropped, (unsigned long long)s.telemetry.failed,
           mono_s() - t0, cpu_total / intervals, cpu_total * 1e6 / (double)target,
           bus_stream_lag_ms_avg(&s.telemetry));
    stop_bus(&b);
}

static void bench_idle(double seconds)
{
    struct bench b;
    struct bus_stats s0, s1;
    double c0, c1;
    uint64_t never = 0;

    if (start_bus(&b, "bench-idle", NULL) < 0)
        return;
    bus_stats(b.bus, &s0);
    c0 = cpu_seconds();
    run_until_count(&b, &never, 1, seconds);
    c1 = cpu_seconds();
    bus_stats(b.bus, &s1);
    printf("idle: %.0f s: %llu loop wake-ups (%.1f/s, librdkafka statistics for on_state), "
           "CPU %.3f s (%.2f%% of a core, mock broker included)\n",
           seconds, (unsigned long long)(s1.wakeups - s0.wakeups),
           (double)(s1.wakeups - s0.wakeups) / seconds, c1 - c0, (c1 - c0) * 100 / seconds);
    stop_bus(&b);
}

int main(int argc, char **argv)
{
    const char *env = getenv("BENCH_BUS_SCALE");
    int scale = 1;

    /* argv[1] is the build directory when run by tests/bench/run.sh. */
    (void)argc;
    (void)argv;
    if (env) {
        int64_t v;

        if (parse_int64(env, 1, 100, &v) < 0) {
            fprintf(stderr, "BENCH_BUS_SCALE must be 1..100\n");
            return 2;
        }
        scale = (int)v;
    }
    printf("librdkafka %s, mock cluster in-process\n", rd_kafka_version_str());
    bench_events(20000 * scale);
    bench_commands(5000 * scale);
    bench_telemetry("lz4", 1000, 5);
    bench_telemetry("zstd", 1000, 5);
    bench_idle(10);
    return 0;
}
