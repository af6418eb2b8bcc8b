/* Unit tests: telemetry rates (first sight, steady state, restart, counter
 * reset, clamping), the JSON messages' shape, the Prometheus text (checked by
 * `promtool check metrics` when installed), the parsing of libvirt's typed
 * parameters, and the timer path on libvirt's test:///default driver. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <fcntl.h>
#include <jansson.h>
#include <libvirt/libvirt.h>
#include <math.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "agent/hypervisor/stats.h"
#include "agent/telemetry.h"

extern char **environ;

#define UUID_A "11111111-2222-4333-8444-555555555555"
#define UUID_B "99999999-2222-4333-8444-555555555555"
#define EC2_A "i-0123456789abcdef0"

/* ---- fixtures ---- */

struct msg {
    char *key;
    json_t *json;
};

struct sink {
    struct msg msgs[64];
    size_t n;
    int rounds, round_errors;
    int publish_rc;
};

static void sink_clear(struct sink *s)
{
    for (size_t i = 0; i < s->n; i++) {
        free(s->msgs[i].key);
        json_decref(s->msgs[i].json);
    }
    s->n = 0;
}

static int lookup(void *opaque, const char *uuid, char ec2_id[EC2_ID_LEN + 1], char *name,
                  size_t name_size)
{
    (void)opaque;
    if (strcmp(uuid, UUID_A))
        return -ENOENT;
    strscpy(ec2_id, EC2_A, EC2_ID_LEN + 1);
    strscpy(name, "web \"1\"\n\\", name_size); /* needs escaping everywhere */
    return 0;
}

static int publish(void *opaque, const char *key, const char *json, size_t len)
{
    struct sink *s = opaque;
    json_error_t e;
    json_t *j = json_loadb(json, len, 0, &e);

    if (!j)
        fail_msg("published text is not JSON: %s: %.*s", e.text, (int)len, json);
    assert_int_equal(strlen(json), len);
    if (s->n < ARRAY_SIZE(s->msgs)) {
        s->msgs[s->n].key = strdup(key);
        s->msgs[s->n].json = j;
        s->n++;
    } else {
        json_decref(j);
    }
    return s->publish_rc;
}

static void on_round(void *opaque, int err, const struct agent_error *e)
{
    struct sink *s = opaque;

    (void)e;
    s->rounds++;
    if (err < 0)
        s->round_errors++;
}

static int sizes(void *opaque, const char *uuid, uint64_t *root_gb, uint64_t *ephemeral_gb)
{
    (void)opaque;
    if (strcmp(uuid, UUID_A))
        return -ENOENT;
    *root_gb = 3;
    *ephemeral_gb = 0;
    return 0;
}

static const struct telemetry_callbacks callbacks = {
    .lookup = lookup, .sizes = sizes, .publish = publish, .on_round = on_round};

/* One domain's figures. */
static struct hv_stats dom(const char *uuid, int id, uint64_t cpu_ns, uint64_t rd_bytes,
                           uint64_t rx_bytes)
{
    struct hv_stats s = {0};

    strscpy(s.uuid, uuid, sizeof(s.uuid));
    strscpy(s.name, "libvirt-name", sizeof(s.name));
    s.id = id;
    s.power = HV_POWER_RUNNING;
    s.state = 1;
    s.has_power = true;
    s.has_cpu_time = true;
    s.cpu_time_ns = cpu_ns;
    s.has_vcpus = true;
    s.vcpus = 2;
    s.n_vcpu = 2;
    s.vcpu_time_ns = calloc(2, sizeof(uint64_t));
    s.vcpu_has_time = calloc(2, sizeof(bool));
    s.vcpu_time_ns[0] = cpu_ns;
    s.vcpu_has_time[0] = s.vcpu_has_time[1] = true;
    s.has_balloon_current = s.has_balloon_rss = s.has_balloon_available = s.has_balloon_unused = true;
    s.balloon_current_kb = 131072;
    s.balloon_rss_kb = 65536;
    s.balloon_available_kb = 120000;
    s.balloon_unused_kb = 100000;
    s.has_balloon_maximum = s.has_balloon_swap_in = s.has_balloon_swap_out = true;
    s.balloon_maximum_kb = 262144;
    s.balloon_swap_in_kb = 2048;
    s.balloon_swap_out_kb = 4096;
    s.n_block = 1;
    s.block = calloc(1, sizeof(*s.block));
    strscpy(s.block[0].name, "vda", sizeof(s.block[0].name));
    s.block[0].has_rd_bytes = s.block[0].has_wr_bytes = true;
    s.block[0].has_rd_reqs = s.block[0].has_wr_reqs = true;
    s.block[0].rd_bytes = rd_bytes;
    s.block[0].rd_reqs = rd_bytes / 512;
    s.block[0].has_capacity = s.block[0].has_allocation = s.block[0].has_physical = true;
    s.block[0].capacity = 1ull << 30;
    s.block[0].allocation = 1ull << 20;
    s.block[0].physical = 2ull << 20;
    strscpy(s.block[0].path, "/var/lib/x/disk.qcow2", sizeof(s.block[0].path));
    s.n_net = 1;
    s.net = calloc(1, sizeof(*s.net));
    strscpy(s.net[0].name, "vnet0", sizeof(s.net[0].name));
    s.net[0].has_rx_bytes = s.net[0].has_tx_bytes = true;
    s.net[0].has_rx_pkts = s.net[0].has_tx_pkts = true;
    s.net[0].rx_bytes = rx_bytes;
    s.net[0].rx_pkts = rx_bytes / 100;
    s.net[0].has_rx_errs = s.net[0].has_rx_drop = s.net[0].has_tx_errs = s.net[0].has_tx_drop = true;
    s.net[0].rx_drop = 7;
    s.net[0].tx_errs = 9;
    return s;
}

static int feed(struct telemetry *t, uint64_t sec, struct hv_stats a, struct hv_stats b)
{
    struct hv_stats *arr = calloc(2, sizeof(*arr));
    struct hv_host_stats host = {.has_cpu = true, .cpus = 2, .cpu_user_ns = sec * 500000000ull,
                                 .cpu_kernel_ns = sec * 100000000ull,
                                 .cpu_idle_ns = sec * 1400000000ull, .has_memory = true,
                                 .mem_total_kb = 1 << 20, .mem_free_kb = 1 << 19};
    arr[0] = a;
    arr[1] = b;
    return telemetry_ingest(t, arr, 2, &host, sec * 1000000000ull, 1700000000000 + (int64_t)sec * 1000);
}

static struct telemetry *make(uv_loop_t *loop, struct sink *s, bool foreign)
{
    static const char *const dirs[] = {"/", NULL};
    struct telemetry_config cfg = {.interval_s = 10, .host = "node-1", .dirs = dirs,
                                   .include_foreign = foreign};
    struct telemetry *t = NULL;
    struct agent_error e;

    assert_int_equal(telemetry_new(loop, NULL, &cfg, &callbacks, s, &t, &e), 0);
    return t;
}

static void finish(uv_loop_t *loop, struct telemetry *t)
{
    telemetry_free(t);
    assert_int_equal(uv_run(loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(loop), 0);
}

/* The value of meter (device or NULL) in the message keyed key, NAN if absent. */
static double meter(const struct sink *s, const char *key, const char *name, const char *device)
{
    for (size_t i = 0; i < s->n; i++) {
        json_t *sm;
        size_t k;

        if (strcmp(s->msgs[i].key, key))
            continue;
        json_array_foreach(json_object_get(s->msgs[i].json, "samples"), k, sm) {
            const char *dv = json_string_value(json_object_get(sm, "device"));
            if (strcmp(json_string_value(json_object_get(sm, "meter")), name))
                continue;
            if (device && (!dv || strcmp(dv, device)))
                continue;
            return json_number_value(json_object_get(sm, "value"));
        }
    }
    return NAN;
}

/* No sample anywhere has a negative value. */
static void assert_no_negative(const struct sink *s)
{
    for (size_t i = 0; i < s->n; i++) {
        json_t *sm;
        size_t k;
        json_array_foreach(json_object_get(s->msgs[i].json, "samples"), k, sm) {
            double v = json_number_value(json_object_get(sm, "value"));
            if (v < 0)
                fail_msg("negative %s: %g", json_string_value(json_object_get(sm, "meter")), v);
        }
    }
}

/* ---- tests ---- */

static void test_counter_rate(void **state)
{
    (void)state;
    assert_true(telemetry_counter_rate(true, 100, true, 300, 2.0) == 100.0);
    assert_true(telemetry_counter_rate(true, 300, true, 300, 2.0) == 0.0);
    assert_true(isnan(telemetry_counter_rate(true, 300, true, 100, 2.0)));  /* reset */
    assert_true(isnan(telemetry_counter_rate(false, 0, true, 100, 2.0)));   /* first sight */
    assert_true(isnan(telemetry_counter_rate(true, 0, false, 100, 2.0)));   /* missing */
    assert_true(isnan(telemetry_counter_rate(true, 0, true, 100, 0.0)));    /* no time */
    assert_true(isnan(telemetry_counter_rate(true, 0, true, 100, -1.0)));
    assert_true(isnan(telemetry_counter_rate(true, 0, true, 100, NAN)));
}

static void test_rates_restart_reset(void **state)
{
    uv_loop_t loop;
    struct sink s = {0};
    struct telemetry *t;
    const struct telemetry_domain *d;

    (void)state;
    uv_loop_init(&loop);
    t = make(&loop, &s, false);

    /* Round 1: first sight, counters only. B is not ours: skipped. */
    assert_int_equal(feed(t, 10, dom(UUID_A, 5, 1000000000ull, 4096, 1000), dom(UUID_B, 6, 1, 1, 1)), 0);
    assert_int_equal(s.n, 2); /* A and the host */
    assert_string_equal(s.msgs[0].key, UUID_A);
    assert_string_equal(s.msgs[1].key, "node-1");
    assert_true(meter(&s, UUID_A, "cpu", NULL) == 1e9);
    assert_true(isnan(meter(&s, UUID_A, "cpu_util", NULL)));
    assert_true(isnan(meter(&s, UUID_A, "compute_agent.disk.device.read.bytes.rate", "vda")));
    assert_null(telemetry_domain_find(t, UUID_B));
    sink_clear(&s);

    /* Round 2, 2 s later: 1 s of CPU over 2 s on 2 vCPUs = 25 %. */
    assert_int_equal(feed(t, 12, dom(UUID_A, 5, 2000000000ull, 4096 + 8192, 1200), dom(UUID_B, 6, 1, 1, 1)), 0);
    assert_true(fabs(meter(&s, UUID_A, "cpu_util", NULL) - 25.0) < 1e-9);
    assert_true(fabs(meter(&s, UUID_A, "compute_agent.vcpu_util", "vcpu0") - 50.0) < 1e-9);
    assert_true(meter(&s, UUID_A, "compute_agent.vcpu_util", "vcpu1") == 0.0);
    assert_true(meter(&s, UUID_A, "compute_agent.disk.device.read.bytes.rate", "vda") == 4096.0);
    assert_true(meter(&s, UUID_A, "compute_agent.disk.device.read.requests.rate", "vda") == 8.0);
    assert_true(meter(&s, UUID_A, "compute_agent.disk.device.write.bytes.rate", "vda") == 0.0);
    assert_true(meter(&s, UUID_A, "network.incoming.bytes.rate", "vnet0") == 100.0);
    assert_true(meter(&s, UUID_A, "memory.usage", NULL) == (120000.0 - 100000.0) / 1024.0);
    assert_true(meter(&s, UUID_A, "memory", NULL) == 128.0);
    assert_true(meter(&s, "node-1", "compute.node.cpu.percent", NULL) == 30.0);
    d = telemetry_domain_find(t, UUID_A);
    assert_non_null(d);
    assert_string_equal(d->ec2_id, EC2_A);
    assert_true(fabs(d->cpu_util - 25.0) < 1e-9);
    sink_clear(&s);

    /* Round 3: the domain restarted (new id, counters from zero): no rates. */
    assert_int_equal(feed(t, 14, dom(UUID_A, 9, 100000000ull, 512, 10), dom(UUID_B, 6, 1, 1, 1)), 0);
    assert_true(meter(&s, UUID_A, "cpu", NULL) == 1e8);
    assert_true(isnan(meter(&s, UUID_A, "cpu_util", NULL)));
    assert_true(isnan(meter(&s, UUID_A, "compute_agent.vcpu_util", "vcpu0")));
    assert_true(isnan(meter(&s, UUID_A, "compute_agent.disk.device.read.bytes.rate", "vda")));
    assert_true(isnan(meter(&s, UUID_A, "network.incoming.bytes.rate", "vnet0")));
    assert_no_negative(&s);
    sink_clear(&s);

    /* Round 4: same run, but the disk counter went down (reset): no disk
     * rate; CPU still has one. An absurd CPU jump is clamped to 100 %. */
    assert_int_equal(feed(t, 15, dom(UUID_A, 9, 100000000ull + 50000000000ull, 100, 10), dom(UUID_B, 6, 1, 1, 1)), 0);
    assert_true(isnan(meter(&s, UUID_A, "compute_agent.disk.device.read.bytes.rate", "vda")));
    assert_true(meter(&s, UUID_A, "network.incoming.bytes.rate", "vnet0") == 0.0);
    assert_true(meter(&s, UUID_A, "cpu_util", NULL) == 100.0);
    assert_true(meter(&s, UUID_A, "compute_agent.vcpu_util", "vcpu0") == 100.0);
    assert_no_negative(&s);
    sink_clear(&s);

    /* Round 5: the domain was shut off in between (same id cannot be trusted
     * after a non-running state): no rates. */
    {
        struct hv_stats off = dom(UUID_A, 9, 1, 1, 1);
        struct hv_stats b = dom(UUID_B, 6, 1, 1, 1);
        off.power = HV_POWER_SHUTOFF;
        off.state = 5;
        assert_int_equal(feed(t, 16, off, b), 0);
        sink_clear(&s);
        assert_int_equal(feed(t, 17, dom(UUID_A, 9, 2000000000ull, 9999, 10), dom(UUID_B, 6, 1, 1, 1)), 0);
        assert_true(isnan(meter(&s, UUID_A, "cpu_util", NULL)));
        assert_no_negative(&s);
        sink_clear(&s);
    }

    /* Same timestamp twice: no division by zero. */
    assert_int_equal(feed(t, 17, dom(UUID_A, 9, 3000000000ull, 9999, 10), dom(UUID_B, 6, 1, 1, 1)), 0);
    assert_true(isnan(meter(&s, UUID_A, "cpu_util", NULL)));
    sink_clear(&s);
    finish(&loop, t);
}

static void test_json_shape(void **state)
{
    static const char *const known[] = {
        "compute_agent.power.state", "cpu", "cpu_util", "vcpus", "compute_agent.vcpu_util",
        "memory", "memory.usage", "memory.resident", "memory.swap.in", "memory.swap.out",
        "disk.root.size", "disk.ephemeral.size", "disk.device.read.bytes",
        "disk.device.write.bytes", "disk.device.read.requests", "disk.device.write.requests",
        "disk.device.capacity", "disk.device.allocation", "disk.device.usage",
        "compute_agent.disk.device.read.bytes.rate", "compute_agent.disk.device.write.bytes.rate",
        "compute_agent.disk.device.read.requests.rate",
        "compute_agent.disk.device.write.requests.rate", "network.incoming.bytes",
        "network.outgoing.bytes", "network.incoming.packets", "network.outgoing.packets",
        "network.incoming.packets.drop", "network.outgoing.packets.drop",
        "network.incoming.packets.error", "network.outgoing.packets.error",
        "network.incoming.bytes.rate", "network.outgoing.bytes.rate",
        "compute_agent.network.incoming.packets.rate",
        "compute_agent.network.outgoing.packets.rate", "compute.node.cpu.user.time",
        "compute.node.cpu.kernel.time", "compute.node.cpu.idle.time",
        "compute.node.cpu.iowait.time", "compute.node.cpu.percent",
        "compute_agent.hardware.memory.total", "compute_agent.hardware.memory.avail",
        "compute_agent.hardware.memory.buffer", "compute_agent.hardware.memory.cached",
        "compute_agent.hardware.disk.size.total", "compute_agent.hardware.disk.size.used"};
    uv_loop_t loop;
    struct sink s = {0};
    struct telemetry *t;
    struct telemetry_stats st;
    bool seen_foreign = false;

    (void)state;
    uv_loop_init(&loop);
    t = make(&loop, &s, true);
    assert_int_equal(feed(t, 1, dom(UUID_A, 5, 1, 1, 1), dom(UUID_B, 6, 1, 1, 1)), 0);
    sink_clear(&s);
    assert_int_equal(feed(t, 2, dom(UUID_A, 5, 2, 2, 2), dom(UUID_B, 6, 2, 2, 2)), 0);
    assert_int_equal(s.n, 3);
    for (size_t i = 0; i < s.n; i++) {
        json_t *m = s.msgs[i].json, *sm;
        const char *iid = json_string_value(json_object_get(m, "instance_id"));
        size_t k;

        assert_string_equal(json_string_value(json_object_get(m, "host")), "node-1");
        assert_string_equal(json_string_value(json_object_get(m, "timestamp")),
                            "2023-11-14T22:13:22.000Z");
        assert_true(json_is_array(json_object_get(m, "samples")));
        assert_true(json_array_size(json_object_get(m, "samples")) > 0);
        if (iid) {
            assert_string_equal(s.msgs[i].key, iid); /* keyed by instance */
        } else {
            assert_string_equal(s.msgs[i].key, "node-1");
            assert_true(json_is_null(json_object_get(m, "ec2_id")));
        }
        if (iid && !strcmp(iid, UUID_A)) {
            assert_string_equal(json_string_value(json_object_get(m, "ec2_id")), EC2_A);
            assert_string_equal(json_string_value(json_object_get(m, "name")), "web \"1\"\n\\");
        }
        if (iid && !strcmp(iid, UUID_B)) {
            seen_foreign = true;
            assert_true(json_is_null(json_object_get(m, "ec2_id")));
            assert_string_equal(json_string_value(json_object_get(m, "name")), "libvirt-name");
        }
        json_array_foreach(json_object_get(m, "samples"), k, sm) {
            const char *name = json_string_value(json_object_get(sm, "meter"));
            const char *type = json_string_value(json_object_get(sm, "type"));
            bool ok = false;

            assert_non_null(name);
            for (size_t j = 0; j < ARRAY_SIZE(known); j++)
                ok = ok || !strcmp(known[j], name);
            if (!ok)
                fail_msg("unknown meter %s", name);
            assert_true(json_equal(json_object_get(sm, "instance_id"), json_object_get(m, "instance_id")));
            assert_true(json_equal(json_object_get(sm, "ec2_id"), json_object_get(m, "ec2_id")));
            assert_string_equal(json_string_value(json_object_get(sm, "host")), "node-1");
            assert_string_equal(json_string_value(json_object_get(sm, "timestamp")),
                                "2023-11-14T22:13:22.000Z");
            assert_true(!strcmp(type, "gauge") || !strcmp(type, "cumulative"));
            assert_non_null(json_string_value(json_object_get(sm, "unit")));
            assert_non_null(json_string_value(json_object_get(sm, "resource_id")));
            assert_true(json_is_number(json_object_get(sm, "value")));
            if (strstr(name, "disk.device.") || strstr(name, "network."))
                assert_non_null(json_string_value(json_object_get(sm, "device")));
        }
    }
    assert_true(seen_foreign);
    /* units as ceilometer has them */
    assert_true(meter(&s, UUID_A, "cpu", NULL) == 2);
    assert_true(meter(&s, UUID_A, "memory.swap.in", NULL) == 2);  /* MB */
    assert_true(meter(&s, UUID_A, "memory.swap.out", NULL) == 4);
    assert_true(meter(&s, UUID_A, "disk.root.size", NULL) == 3);  /* GB, the flavor's */
    assert_true(meter(&s, UUID_A, "disk.ephemeral.size", NULL) == 0);
    assert_true(isnan(meter(&s, UUID_B, "disk.root.size", NULL))); /* not ours: no flavor */
    assert_true(meter(&s, UUID_A, "disk.device.capacity", "vda") == 1073741824.0);
    assert_true(meter(&s, UUID_A, "disk.device.allocation", "vda") == 1048576.0);
    assert_true(meter(&s, UUID_A, "disk.device.usage", "vda") == 2097152.0);
    assert_true(meter(&s, UUID_A, "network.incoming.packets.drop", "vnet0") == 7);
    assert_true(meter(&s, UUID_A, "network.outgoing.packets.error", "vnet0") == 9);
    telemetry_get_stats(t, &st);
    assert_int_equal(st.rounds, 2);
    assert_int_equal(st.domains, 2);
    assert_int_equal(st.messages, 6);
    assert_int_equal(st.messages_dropped, 0);

    /* The bus refusing a message counts it as dropped. */
    sink_clear(&s);
    s.publish_rc = -ENOBUFS;
    assert_int_equal(feed(t, 3, dom(UUID_A, 5, 3, 3, 3), dom(UUID_B, 6, 3, 3, 3)), 0);
    telemetry_get_stats(t, &st);
    assert_int_equal(st.messages_dropped, 3);
    sink_clear(&s);
    finish(&loop, t);
}

/* Run `promtool check metrics` on text; returns its exit status, or -1 if
 * promtool is missing. */
static int promtool_check(const char *text, size_t len, char *out, size_t out_size)
{
    const char *tool = "/usr/bin/promtool";
    char *argv[] = {(char *)"promtool", (char *)"check", (char *)"metrics", NULL};
    int in[2], res[2], status;
    posix_spawn_file_actions_t fa;
    pid_t pid;
    size_t got = 0;
    ssize_t r;

    if (access(tool, X_OK) != 0)
        return -1;
    assert_int_equal(pipe2(in, O_CLOEXEC), 0);
    assert_int_equal(pipe2(res, O_CLOEXEC), 0);
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, in[0], 0);
    posix_spawn_file_actions_adddup2(&fa, res[1], 1);
    posix_spawn_file_actions_adddup2(&fa, res[1], 2);
    assert_int_equal(posix_spawn(&pid, tool, &fa, NULL, argv, environ), 0);
    posix_spawn_file_actions_destroy(&fa);
    close(in[0]);
    close(res[1]);
    for (size_t off = 0; off < len; off += (size_t)r) {
        r = write(in[1], text + off, len - off);
        assert_true(r > 0);
    }
    close(in[1]);
    while (got + 1 < out_size && (r = read(res[0], out + got, out_size - got - 1)) > 0)
        got += (size_t)r;
    out[got] = '\0';
    close(res[0]);
    assert_int_equal(waitpid(pid, &status, 0), pid);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

static void test_prometheus(void **state)
{
    uv_loop_t loop;
    struct sink s = {0};
    struct telemetry *t;
    char *text = NULL;
    size_t len = 0;
    FILE *f;
    char out[4096];
    int rc;

    (void)state;
    uv_loop_init(&loop);
    t = make(&loop, &s, true);
    /* An empty registry renders too. */
    f = open_memstream(&text, &len);
    assert_int_equal(telemetry_render_prometheus(t, f), 0);
    fclose(f);
    rc = promtool_check(text, len, out, sizeof(out));
    if (rc >= 0 && rc != 0)
        fail_msg("promtool (empty): %s\n%s", out, text);
    free(text);

    assert_int_equal(feed(t, 1, dom(UUID_A, 5, 1000000000, 1, 1), dom(UUID_B, 6, 1, 1, 1)), 0);
    assert_int_equal(feed(t, 2, dom(UUID_A, 5, 1500000000, 513, 1), dom(UUID_B, 6, 2, 2, 2)), 0);
    sink_clear(&s);
    f = open_memstream(&text, &len);
    assert_int_equal(telemetry_render_prometheus(t, f), 0);
    fclose(f);
    assert_non_null(strstr(text, "# TYPE compute_agent_instance_cpu_seconds_total counter\n"));
    assert_non_null(strstr(text, "compute_agent_instance_cpu_seconds_total{instance_uuid=\"" UUID_A
                                 "\",ec2_id=\"" EC2_A "\",name=\"web \\\"1\\\"\\n\\\\\"} 1.5\n"));
    assert_non_null(strstr(text, "compute_agent_instance_cpu_util_percent{instance_uuid=\"" UUID_A));
    assert_non_null(strstr(text, "compute_agent_instance_disk_read_bytes_per_second{instance_uuid=\"" UUID_A
                                 "\",ec2_id=\"" EC2_A "\",name=\"web \\\"1\\\"\\n\\\\\",device=\"vda\"} 512\n"));
    assert_non_null(strstr(text, "compute_agent_instance_vcpus{instance_uuid=\"" UUID_B
                                 "\",ec2_id=\"\",name=\"libvirt-name\"} 2\n"));
    assert_non_null(strstr(text, "compute_agent_host_cpu_seconds_total{host=\"node-1\",mode=\"idle\"}"));
    assert_non_null(strstr(text, "compute_agent_telemetry_rounds_total 2\n"));
    rc = promtool_check(text, len, out, sizeof(out));
    if (rc < 0)
        print_message("SKIP promtool check: /usr/bin/promtool missing (Debian package prometheus)\n");
    else if (rc != 0)
        fail_msg("promtool check metrics failed (%d): %s", rc, out);
    free(text);
    finish(&loop, t);
}

/* [telemetry] libvirt_exporter_names: prometheus-libvirt-exporter's names and
 * labels beside ours (the same figures). */
static void test_prometheus_exporter_names(void **state)
{
    static const char *const dirs[] = {NULL};
    struct telemetry_config cfg = {.interval_s = 10, .host = "node-1", .dirs = dirs,
                                   .include_foreign = true, .libvirt_exporter_names = true};
    uv_loop_t loop;
    struct sink s = {0};
    struct telemetry *t = NULL;
    struct agent_error e;
    char *text = NULL;
    size_t len = 0;
    FILE *f;
    char out[4096];
    int rc;

    (void)state;
    uv_loop_init(&loop);
    assert_int_equal(telemetry_new(&loop, NULL, &cfg, &callbacks, &s, &t, &e), 0);
    assert_int_equal(feed(t, 1, dom(UUID_A, 5, 1500000000, 513, 100), dom(UUID_B, 6, 1, 1, 1)), 0);
    sink_clear(&s);
    f = open_memstream(&text, &len);
    assert_int_equal(telemetry_render_prometheus(t, f), 0);
    fclose(f);
#define DL(u) "{domain=\"libvirt-name\",uuid=\"" u "\"}"
#define BL(u) "{domain=\"libvirt-name\",source_file=\"/var/lib/x/disk.qcow2\",target_device=\"vda\",uuid=\"" u "\"}"
#define NL(u) "{domain=\"libvirt-name\",source_bridge=\"\",target_device=\"vnet0\",uuid=\"" u "\"}"
    assert_non_null(strstr(text, "\nlibvirt_up 1\n"));
    assert_non_null(strstr(text, "\nlibvirt_domains_number 2\n"));
    assert_non_null(strstr(text, "# TYPE libvirt_domain_info_cpu_time_seconds_total counter\n"));
    assert_non_null(strstr(text, "libvirt_domain_info_cpu_time_seconds_total" DL(UUID_A) " 1.5\n"));
    assert_non_null(strstr(text, "libvirt_domain_info_maximum_memory_bytes" DL(UUID_A) " 268435456\n"));
    assert_non_null(strstr(text, "libvirt_domain_info_memory_usage_bytes" DL(UUID_A) " 134217728\n"));
    assert_non_null(strstr(text, "libvirt_domain_info_virtual_cpus" DL(UUID_B) " 2\n"));
    assert_non_null(strstr(text, "libvirt_domain_state_code" DL(UUID_A) " 1\n"));
    assert_non_null(strstr(text, "libvirt_domain_block_stats_read_bytes_total" BL(UUID_A) " 513\n"));
    assert_non_null(strstr(text, "libvirt_domain_block_stats_read_requests_total" BL(UUID_A) " 1\n"));
    assert_non_null(strstr(text, "libvirt_domain_interface_stats_receive_bytes_total" NL(UUID_A) " 100\n"));
    assert_non_null(strstr(text, "libvirt_domain_interface_stats_receive_drops_total" NL(UUID_A) " 7\n"));
    assert_non_null(strstr(text, "libvirt_domain_interface_stats_transmit_errors_total" NL(UUID_A) " 9\n"));
    /* ours are still there */
    assert_non_null(strstr(text, "compute_agent_instance_cpu_seconds_total{"));
#undef DL
#undef BL
#undef NL
    rc = promtool_check(text, len, out, sizeof(out));
    if (rc > 0)
        fail_msg("promtool check metrics failed (%d): %s", rc, out);
    free(text);
    finish(&loop, t);
}

static void test_params(void **state)
{
    virTypedParameter p[24];
    struct hv_stats s = {0};
    int n = 0;

    (void)state;
    memset(p, 0, sizeof(p));
#define P_UL(name, v) do { strscpy(p[n].field, name, sizeof(p[n].field)); p[n].type = VIR_TYPED_PARAM_ULLONG; p[n].value.ul = v; n++; } while (0)
#define P_S(name, v) do { strscpy(p[n].field, name, sizeof(p[n].field)); p[n].type = VIR_TYPED_PARAM_STRING; p[n].value.s = (char *)v; n++; } while (0)
    strscpy(p[n].field, "state.state", sizeof(p[n].field));
    p[n].type = VIR_TYPED_PARAM_INT;
    p[n++].value.i = VIR_DOMAIN_RUNNING;
    P_UL("cpu.time", 123456789);
    strscpy(p[n].field, "vcpu.current", sizeof(p[n].field));
    p[n].type = VIR_TYPED_PARAM_UINT;
    p[n++].value.ui = 1;
    strscpy(p[n].field, "vcpu.maximum", sizeof(p[n].field));
    p[n].type = VIR_TYPED_PARAM_UINT;
    p[n++].value.ui = 2;
    P_UL("vcpu.0.time", 1000);
    P_UL("balloon.rss", 4096);
    strscpy(p[n].field, "block.count", sizeof(p[n].field));
    p[n].type = VIR_TYPED_PARAM_UINT;
    p[n++].value.ui = 1;
    P_S("block.0.name", "vda");
    P_UL("block.0.rd.bytes", 777);
    P_UL("block.0.wr.reqs", 3);
    P_UL("block.0.capacity", 1u << 30);
    P_UL("block.0.physical", 4096);
    P_S("block.0.path", "/d/disk.qcow2");
    P_UL("balloon.swap_in", 11);
    P_UL("balloon.maximum", 65536);
    P_S("net.1.name", "vnet7"); /* beyond a missing net.count: widens */
    P_UL("net.1.rx.bytes", 55);
    P_UL("net.1.tx.drop", 5);
    P_UL("block.x.rd.bytes", 1); /* malformed: ignored */
#undef P_UL
#undef P_S
    assert_int_equal(hv_stats_from_params(p, n, &s), 0);
    assert_true(s.has_power);
    assert_int_equal(s.power, HV_POWER_RUNNING);
    assert_true(s.has_cpu_time && s.cpu_time_ns == 123456789);
    assert_int_equal(s.vcpus, 1);
    assert_int_equal(s.n_vcpu, 2);
    assert_true(s.vcpu_has_time[0] && !s.vcpu_has_time[1]);
    assert_true(s.has_balloon_rss && !s.has_balloon_current);
    assert_int_equal(s.n_block, 1);
    assert_string_equal(s.block[0].name, "vda");
    assert_true(s.block[0].has_rd_bytes && s.block[0].rd_bytes == 777);
    assert_true(!s.block[0].has_wr_bytes && s.block[0].has_wr_reqs);
    assert_true(s.block[0].has_capacity && s.block[0].capacity == 1u << 30);
    assert_true(s.block[0].has_physical && s.block[0].physical == 4096 && !s.block[0].has_allocation);
    assert_string_equal(s.block[0].path, "/d/disk.qcow2");
    assert_true(s.has_balloon_swap_in && s.balloon_swap_in_kb == 11 && !s.has_balloon_swap_out);
    assert_true(s.has_balloon_maximum && s.balloon_maximum_kb == 65536);
    assert_true(s.net[1].has_tx_drop && s.net[1].tx_drop == 5 && !s.net[1].has_rx_drop);
    assert_int_equal(s.n_net, 2);
    assert_string_equal(s.net[1].name, "vnet7");
    assert_true(s.net[1].has_rx_bytes && !s.net[0].has_rx_bytes);
    hv_stats_release(&s);
}

/* The timer path: libvirt's test driver (one running domain "test", state
 * group only), first sample at once, loop closes cleanly. */
struct timer_ctx {
    struct sink sink; /* first: publish() takes the context as a sink */
    uv_loop_t *loop;
    struct telemetry *t;
    struct hv *hv;
};

static void timer_round(void *opaque, int err, const struct agent_error *e)
{
    struct timer_ctx *c = opaque;

    if (err < 0)
        fail_msg("round failed: %s", e->message);
    c->sink.rounds++;
    if (c->sink.rounds == 2)
        uv_stop(c->loop);
}

static void free_hv(void *opaque)
{
    struct timer_ctx *c = opaque;
    hv_free(c->hv); /* telemetry no longer uses it */
    c->hv = NULL;
}

static void test_timer_test_driver(void **state)
{
    uv_loop_t loop;
    struct hv *hv = NULL;
    struct hv_config hc = {.uri = "test:///default"};
    struct agent_error e;
    struct timer_ctx c = {.loop = &loop};
    struct telemetry_callbacks cb = {.publish = publish, .on_round = timer_round,
                                     .on_closed = free_hv};
    static const char *const dirs[] = {"/", NULL};
    struct telemetry_config cfg = {.interval_s = 1, .host = "node-1", .include_foreign = true,
                                   .dirs = dirs};
    struct telemetry_stats st;
    const struct telemetry_domain *d = NULL;
    char *text = NULL;
    size_t len = 0;
    FILE *f;

    (void)state;
    uv_loop_init(&loop);
    assert_int_equal(hv_new(&loop, &hv_driver_test, &hc, NULL, NULL, &hv), 0);
    c.hv = hv;
    if (hv_connect(hv, &e) < 0)
        fail_msg("connect: %s", e.message);
    assert_int_equal(telemetry_new(&loop, hv, &cfg, &cb, &c, &c.t, &e), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    telemetry_get_stats(c.t, &st);
    assert_int_equal(st.rounds, 2);
    assert_true(st.domains >= 1);
    for (size_t i = 0; i < c.sink.n; i++) {
        const char *iid = json_string_value(json_object_get(c.sink.msgs[i].json, "instance_id"));
        if (iid && (d = telemetry_domain_find(c.t, iid)))
            break;
    }
    assert_non_null(d);
    assert_true(d->s.has_power);
    assert_int_equal(d->s.power, HV_POWER_RUNNING);
    f = open_memstream(&text, &len);
    assert_int_equal(telemetry_render_prometheus(c.t, f), 0);
    fclose(f);
    assert_non_null(strstr(text, "compute_agent_instance_power_state{"));
    assert_non_null(strstr(text, "compute_agent_host_filesystem_size_bytes{host=\"node-1\",path=\"/\"}"));
    assert_non_null(strstr(text, "compute_agent_host_memory_total_bytes{host=\"node-1\"}"));
    free(text);
    sink_clear(&c.sink);
    telemetry_free(c.t); /* on_closed frees hv */
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_counter_rate),
        cmocka_unit_test(test_rates_restart_reset),
        cmocka_unit_test(test_json_shape),
        cmocka_unit_test(test_prometheus),
        cmocka_unit_test(test_prometheus_exporter_names),
        cmocka_unit_test(test_params),
        cmocka_unit_test(test_timer_test_driver),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
