/* test_bus.c: agent/bus/ against librdkafka's mock cluster running in this
 * process, with kcat in other processes as the independent client (commands
 * in with kcat -P, events read back with kcat -C). Every wait runs the uv
 * loop until a condition holds or a deadline passes; every test ends by
 * freeing the bus, running the loop dry and asserting uv_loop_close() == 0.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "agent/bus-readback.h"
#include "agent/bus/bus-internal.h"
#include "agent/bus.h"
#include "common/util.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>

extern char **environ;

#define MAX_IDS 4096
#define MAX_CMDS 64

struct rec_cmd {
    const struct bus_message *msg; /* NULL once committed */
    char payload[256];
    char key[64];
    size_t len;
    int32_t partition;
    int64_t offset;
    bool oversized;
};

struct tctx {
    uv_loop_t loop;
    struct bus *bus;
    /* on_state */
    bool up;
    int ups, downs;
    /* on_event_delivered */
    int delivered[MAX_IDS]; /* per outbox id: how many reports */
    int delivered_err[MAX_IDS];
    int64_t delivered_order[MAX_IDS];
    size_t n_delivered;
    /* on_event_placed */
    int32_t placed_part[MAX_IDS];
    int64_t placed_off[MAX_IDS];
    int placed[MAX_IDS];
    /* bus_readback_start's callback */
    bool rb_done;
    int rb_err;
    size_t rb_n_ids, rb_n_parts;
    int64_t rb_ends[16];
    bool rb_has[MAX_IDS];
    /* on_command */
    struct rec_cmd cmds[MAX_CMDS];
    size_t n_cmds;
    bool commit_in_callback;
    /* misc */
    int errors;
    bool free_on_up; /* test bus_free() from inside a callback */
    bool verbose;
};

/* ------------------------------------------------------------ callbacks */

static void t_on_state(void *opaque, bool up)
{
    struct tctx *t = opaque;

    t->up = up;
    if (up)
        t->ups++;
    else
        t->downs++;
    if (t->verbose)
        fprintf(stderr, "# bus %s\n", up ? "up" : "down");
    if (up && t->free_on_up && t->bus)
        t->bus = bus_free(t->bus);
}

static void t_on_event_delivered(void *opaque, int64_t id, int err)
{
    struct tctx *t = opaque;

    assert_true(id >= 0 && id < MAX_IDS);
    t->delivered[id]++;
    t->delivered_err[id] = err;
    if (t->n_delivered < MAX_IDS)
        t->delivered_order[t->n_delivered] = id;
    t->n_delivered++;
}

static void t_on_event_placed(void *opaque, int64_t id, int32_t partition, int64_t offset)
{
    struct tctx *t = opaque;

    assert_true(id >= 0 && id < MAX_IDS);
    assert_int_equal(t->delivered[id], 0); /* before its delivery report */
    t->placed[id]++;
    t->placed_part[id] = partition;
    t->placed_off[id] = offset;
}

static void t_on_command(void *opaque, const struct bus_message *msg)
{
    struct tctx *t = opaque;
    struct rec_cmd *r;

    assert_true(t->n_cmds < MAX_CMDS);
    r = &t->cmds[t->n_cmds++];
    r->msg = msg;
    r->len = msg->len;
    r->partition = msg->partition;
    r->offset = msg->offset;
    r->oversized = msg->oversized;
    if (msg->payload) {
        size_t n = msg->len < sizeof(r->payload) - 1 ? msg->len : sizeof(r->payload) - 1;
        memcpy(r->payload, msg->payload, n);
        r->payload[n] = '\0';
    }
    if (msg->key)
        strscpy(r->key, msg->key, sizeof(r->key));
    if (t->verbose)
        fprintf(stderr, "# command p%d@%lld key=%s %s\n", (int)msg->partition,
                (long long)msg->offset, r->key, r->oversized ? "(oversized)" : r->payload);
    if (t->commit_in_callback) {
        assert_int_equal(bus_command_commit(t->bus, msg), 0);
        r->msg = NULL;
    }
}

static void t_on_error(void *opaque, int err, bool fatal, const char *reason)
{
    struct tctx *t = opaque;

    t->errors++;
    if (t->verbose)
        fprintf(stderr, "# bus error %d%s: %s\n", err, fatal ? " (fatal)" : "", reason);
    assert_false(fatal);
}

static void t_on_log(void *opaque, int level, const char *fac, const char *msg)
{
    struct tctx *t = opaque;

    if (t->verbose)
        fprintf(stderr, "# rdkafka %d %s: %s\n", level, fac, msg);
}

static const struct bus_callbacks t_callbacks = {
    .on_command = t_on_command,
    .on_event_delivered = t_on_event_delivered,
    .on_event_placed = t_on_event_placed,
    .on_state = t_on_state,
    .on_error = t_on_error,
    .on_log = t_on_log,
};

/* ---------------------------------------------------------- loop helpers */

typedef bool (*pred_fn)(struct tctx *t, intptr_t arg);

static void t_deadline_cb(uv_timer_t *timer)
{
    *(bool *)timer->data = true;
}

/* Run the loop until pred holds or timeout_ms passed; returns pred. */
static bool run_until(struct tctx *t, pred_fn pred, intptr_t arg, int timeout_ms)
{
    uv_timer_t timer;
    bool expired = false;
    bool ok;

    uv_timer_init(&t->loop, &timer);
    timer.data = &expired;
    uv_timer_start(&timer, t_deadline_cb, (uint64_t)timeout_ms, 0);
    while (!(ok = pred(t, arg)) && !expired)
        uv_run(&t->loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&timer, NULL);
    uv_run(&t->loop, UV_RUN_NOWAIT);
    return ok;
}

static bool p_up(struct tctx *t, intptr_t want)
{
    return t->up == (bool)want;
}

static bool p_delivered(struct tctx *t, intptr_t n)
{
    return t->n_delivered >= (size_t)n;
}

static bool p_cmds(struct tctx *t, intptr_t n)
{
    return t->n_cmds >= (size_t)n;
}

/* Every request id in the comma-separated list was seen in a command. */
static bool p_request_ids(struct tctx *t, intptr_t arg)
{
    const char *list = (const char *)arg;

    while (*list) {
        const char *comma = strchr(list, ',');
        size_t n = comma ? (size_t)(comma - list) : strlen(list);
        char want[64];
        bool found = false;

        snprintf(want, sizeof(want), "\"request_id\":\"%.*s\"", (int)n, list);
        for (size_t i = 0; i < t->n_cmds && !found; i++)
            found = strstr(t->cmds[i].payload, want) != NULL;
        if (!found)
            return false;
        list += n + (comma ? 1 : 0);
    }
    return true;
}

static bool p_commits(struct tctx *t, intptr_t n)
{
    struct bus_stats s;

    bus_stats(t->bus, &s);
    return s.commits_done >= (uint64_t)n;
}

static bool p_never(struct tctx *t, intptr_t arg)
{
    (void)t;
    (void)arg;
    return false;
}

static bool p_telemetry_settled(struct tctx *t, intptr_t arg)
{
    struct bus_stats s;

    (void)arg;
    bus_stats(t->bus, &s);
    return s.telemetry.queued == 0;
}

static bool p_telemetry_queued(struct tctx *t, intptr_t n)
{
    struct bus_stats s;

    bus_stats(t->bus, &s);
    return s.telemetry.queued == (uint64_t)n;
}

static bool p_heartbeat_done(struct tctx *t, intptr_t n)
{
    struct bus_stats s;

    bus_stats(t->bus, &s);
    return s.heartbeat.delivered >= (uint64_t)n;
}

static void t_init(struct tctx *t)
{
    memset(t, 0, sizeof(*t));
    assert_int_equal(uv_loop_init(&t->loop), 0);
    t->verbose = getenv("TEST_BUS_VERBOSE") != NULL;
}

static int t_bus_new(struct tctx *t, struct bus_config *cfg, struct bus **ret)
{
    struct agent_error err = {0};
    int r = bus_new(&t->loop, cfg, &t_callbacks, t, ret, &err);

    if (r < 0)
        fprintf(stderr, "# bus_new: %d %s %s: %s\n", r, err.code, err.field, err.message);
    return r;
}

/* Free the bus and let the loop run its close callback (other buses may
 * still be alive on the loop). */
static void t_free_bus(struct tctx *t, struct bus **bus)
{
    *bus = bus_free(*bus);
    uv_run(&t->loop, UV_RUN_NOWAIT);
}

static void t_finish(struct tctx *t)
{
    uv_run(&t->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&t->loop), 0);
}

/* Properties that make the tests quick on the mock cluster. */
static const char *const fast_props[] = {
    "reconnect.backoff.ms=50",
    "reconnect.backoff.max.ms=500",
    "topic.metadata.refresh.interval.ms=1000",
    "telemetry.linger.ms=20",
    NULL,
};

/* ------------------------------------------------------- child processes */

/* Run argv with input on stdin, collect stdout into *out (NUL-terminated,
 * malloc'd). Returns the exit status, or -ETIMEDOUT (child killed). */
static int run_proc(char *const argv[], const char *input, char **out, int timeout_ms)
{
    int in_pipe[2], out_pipe[2];
    posix_spawn_file_actions_t fa;
    size_t in_len = input ? strlen(input) : 0, in_off = 0;
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    uint64_t deadline = now_mono_ns() + (uint64_t)timeout_ms * 1000000u;
    pid_t pid;
    int status, r;

    assert_non_null(buf);
    assert_int_equal(pipe2(in_pipe, O_CLOEXEC), 0);
    assert_int_equal(pipe2(out_pipe, O_CLOEXEC), 0);
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, in_pipe[0], 0);
    posix_spawn_file_actions_adddup2(&fa, out_pipe[1], 1);
    r = posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    assert_int_equal(r, 0);
    close(in_pipe[0]);
    close(out_pipe[1]);
    fcntl(in_pipe[1], F_SETFL, O_NONBLOCK);
    if (in_len == 0) {
        close(in_pipe[1]);
        in_pipe[1] = -1;
    }

    for (;;) {
        struct pollfd pfd[2] = {{.fd = out_pipe[0], .events = POLLIN},
                                {.fd = in_pipe[1], .events = POLLOUT}};
        uint64_t now = now_mono_ns();
        ssize_t n;

        if (now >= deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            close(out_pipe[0]);
            if (in_pipe[1] >= 0)
                close(in_pipe[1]);
            fprintf(stderr, "# %s timed out\n", argv[0]);
            free(buf);
            return -ETIMEDOUT;
        }
        if (poll(pfd, in_pipe[1] >= 0 ? 2 : 1, (int)((deadline - now) / 1000000) + 1) < 0)
            continue;
        if (in_pipe[1] >= 0 && (pfd[1].revents & (POLLOUT | POLLERR))) {
            n = write(in_pipe[1], input + in_off, in_len - in_off);
            if (n > 0)
                in_off += (size_t)n;
            if (n < 0 || in_off == in_len) {
                close(in_pipe[1]);
                in_pipe[1] = -1;
            }
        }
        if (pfd[0].revents & (POLLIN | POLLHUP)) {
            if (cap - len < 1024) {
                cap *= 2;
                buf = realloc(buf, cap);
                assert_non_null(buf);
            }
            n = read(out_pipe[0], buf + len, cap - len - 1);
            if (n == 0)
                break;
            if (n > 0)
                len += (size_t)n;
        }
    }
    close(out_pipe[0]);
    if (in_pipe[1] >= 0)
        close(in_pipe[1]);
    buf[len] = '\0';
    waitpid(pid, &status, 0);
    if (out)
        *out = buf;
    else
        free(buf);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* kcat -P: lines "key|value" to topic. */
static void kcat_produce(const char *bootstrap, const char *topic, const char *lines)
{
    char *const argv[] = {"kcat", "-b", (char *)bootstrap, "-t", (char *)topic,
                          "-P", "-K", "|", "-q", NULL};

    assert_int_equal(run_proc(argv, lines, NULL, 30000), 0);
}

/* kcat -C from the beginning to the end: lines "key|value" (caller frees). */
static char *kcat_consume(const char *bootstrap, const char *topic)
{
    char *const argv[] = {"kcat", "-b", (char *)bootstrap, "-t", (char *)topic,
                          "-C", "-e", "-q", "-o", "beginning", "-f", "%k|%s\n", NULL};
    char *out = NULL;

    assert_int_equal(run_proc(argv, NULL, &out, 30000), 0);
    return out;
}

static bool kcat_available(void)
{
    char *const argv[] = {"kcat", "-V", NULL};

    return run_proc(argv, NULL, NULL, 10000) == 0;
}

/* Parse kcat output of events {"seq":N}: check each seq in [0,n) appears
 * exactly once and per key in increasing order. */
static void check_events_once_in_order(const char *out, int n)
{
    int *seen = calloc((size_t)n, sizeof(int));
    struct {
        char key[32];
        int last;
    } keys[16];
    size_t nkeys = 0;
    const char *line = out;

    assert_non_null(seen);
    while (line && *line) {
        const char *nl = strchr(line, '\n');
        const char *bar = strchr(line, '|');
        const char *sq = strstr(line, "\"seq\":");
        char key[32] = "";
        long seq;
        size_t k;

        assert_non_null(bar);
        assert_non_null(sq);
        assert_true((size_t)(bar - line) < sizeof(key));
        memcpy(key, line, (size_t)(bar - line));
        seq = strtol(sq + 6, NULL, 10);
        assert_true(seq >= 0 && seq < n);
        seen[seq]++;
        for (k = 0; k < nkeys && strcmp(keys[k].key, key) != 0; k++) {
        }
        if (k == nkeys) {
            assert_true(nkeys < ARRAY_SIZE(keys));
            strscpy(keys[nkeys].key, key, sizeof(keys[nkeys].key));
            keys[nkeys++].last = -1;
        }
        assert_true(seq > keys[k].last); /* per-key order */
        keys[k].last = (int)seq;
        line = nl ? nl + 1 : NULL;
    }
    for (int i = 0; i < n; i++) {
        if (seen[i] != 1)
            fprintf(stderr, "# seq %d seen %d times\n", i, seen[i]);
        assert_int_equal(seen[i], 1);
    }
    free(seen);
}

static int publish_seq_event(struct bus *bus, int seq, int nkeys)
{
    char key[32], json[128];
    int len;

    snprintf(key, sizeof(key), "i-%d", seq % nkeys);
    len = snprintf(json, sizeof(json), "{\"event\":\"instance.running\",\"instance_id\":\"%s\",\"seq\":%d}",
                   key, seq);
    return bus_publish_event(bus, key, json, (size_t)len, seq);
}

/* ---------------------------------------------------------------- tests */

static bool have_kcat;

#define NEED_KCAT()                                                            \
    do {                                                                       \
        if (!have_kcat)                                                        \
            skip();                                                            \
    } while (0)

static void test_config_errors(void **state)
{
    static const char *const bad_kv[] = {"novalue", NULL};
    static const char *const unknown[] = {"no.such.property=1", NULL};
    static const char *const bad_scoped[] = {"consumer.session.timeout.ms=abc", NULL};
    struct tctx t;
    struct agent_error err;
    struct bus *bus = NULL;
    struct bus_config cfg = {.brokers = "127.0.0.1:1", .host = "h"};

    (void)state;
    t_init(&t);

    cfg.host = NULL;
    memset(&err, 0, sizeof(err));
    assert_int_equal(bus_new(&t.loop, &cfg, &t_callbacks, &t, &bus, &err), -EINVAL);
    assert_string_equal(err.code, "invalid_field");
    assert_string_equal(err.field, "host_name");
    assert_null(bus);

    cfg.host = "bad host";
    memset(&err, 0, sizeof(err));
    assert_int_equal(bus_new(&t.loop, &cfg, &t_callbacks, &t, &bus, &err), -EINVAL);
    assert_string_equal(err.field, "host_name");

    cfg.host = "h";
    cfg.topic_prefix = "a/b.";
    memset(&err, 0, sizeof(err));
    assert_int_equal(bus_new(&t.loop, &cfg, &t_callbacks, &t, &bus, &err), -EINVAL);
    assert_string_equal(err.field, "bus.prefix");
    cfg.topic_prefix = NULL;

    cfg.properties = bad_kv;
    memset(&err, 0, sizeof(err));
    assert_int_equal(bus_new(&t.loop, &cfg, &t_callbacks, &t, &bus, &err), -EINVAL);
    assert_string_equal(err.field, "bus.properties");

    cfg.properties = unknown;
    memset(&err, 0, sizeof(err));
    assert_int_equal(bus_new(&t.loop, &cfg, &t_callbacks, &t, &bus, &err), -EINVAL);
    assert_string_equal(err.code, "invalid_field");
    assert_non_null(strstr(err.message, "no.such.property"));

    /* Scoped to the consumer: rejected there (the producers are already up
     * and must be torn down again). */
    cfg.properties = bad_scoped;
    memset(&err, 0, sizeof(err));
    assert_int_equal(bus_new(&t.loop, &cfg, &t_callbacks, &t, &bus, &err), -EINVAL);
    assert_non_null(strstr(err.message, "session.timeout.ms"));

    cfg.properties = NULL;
    cfg.telemetry_compression = "brotli";
    memset(&err, 0, sizeof(err));
    assert_int_equal(bus_new(&t.loop, &cfg, &t_callbacks, &t, &bus, &err), -EINVAL);
    assert_string_equal(err.field, "telemetry.compression");
    assert_null(bus);

    t_finish(&t);
}

/* Events and heartbeats through the in-process mock cluster, read back by
 * kcat in another process. */
static void test_events_roundtrip(void **state)
{
    struct tctx t;
    struct bus_config cfg = {.host = "node-a", .properties = fast_props};
    struct bus_stats s;
    const char *bs;
    char *out;
    const int n = 60;

    (void)state;
    NEED_KCAT();
    t_init(&t);
    t.commit_in_callback = true;
    assert_int_equal(t_bus_new(&t, &cfg, &t.bus), 0);
    bs = bus_bootstrap_servers(t.bus);
    assert_non_null(bs);
    assert_true(strlen(bs) > 0);
    assert_string_equal(bus_topic(t.bus, BUS_TOPIC_COMMANDS), "compute.node-a");
    assert_string_equal(bus_topic(t.bus, BUS_TOPIC_EVENTS), "compute.events");
    assert_string_equal(bus_group_id(t.bus), "compute-agent.node-a");
    assert_non_null(bus_mock_cluster(t.bus));

    assert_true(run_until(&t, p_up, true, 20000));
    assert_true(bus_is_up(t.bus));

    for (int i = 0; i < n; i++)
        assert_int_equal(publish_seq_event(t.bus, i, 5), 0);
    assert_int_equal(bus_publish_heartbeat(t.bus, "{\"host\":\"node-a\"}", 17), 0);
    assert_true(run_until(&t, p_delivered, n, 20000));
    assert_true(run_until(&t, p_heartbeat_done, 1, 20000));
    for (int i = 0; i < n; i++) {
        assert_int_equal(t.delivered[i], 1);
        assert_int_equal(t.delivered_err[i], 0);
    }
    bus_stats(t.bus, &s);
    assert_int_equal(s.events.produced, n);
    assert_int_equal(s.events.delivered, n);
    assert_int_equal(s.events.queued, 0);
    assert_int_equal(s.events.failed, 0);
    assert_true(s.events.lag_ms_max >= s.events.lag_ms_last);
    assert_true(bus_stream_lag_ms_avg(&s.events) > 0.0);

    out = kcat_consume(bs, "compute.events");
    check_events_once_in_order(out, n);
    free(out);
    out = kcat_consume(bs, "compute.heartbeat");
    assert_string_equal(out, "node-a|{\"host\":\"node-a\"}\n");
    free(out);

    t_free_bus(&t, &t.bus);
    t_finish(&t);
}

/* Commands from kcat reach on_command; offsets are committed only up to the
 * first unhandled command; a new bus in the same group gets back exactly
 * what was not committed. The cluster lives in a separate bus ("owner") so
 * that it outlives the consumers. */
static void test_commands_commit_and_restart(void **state)
{
    struct tctx t;
    struct bus *owner = NULL;
    struct bus_config ocfg = {.host = "owner", .properties = fast_props};
    struct bus_config cfg = {.host = "h1", .properties = fast_props};
    struct bus_stats s;
    char *bs;

    (void)state;
    NEED_KCAT();
    t_init(&t);
    assert_int_equal(t_bus_new(&t, &ocfg, &owner), 0);
    bs = strdup(bus_bootstrap_servers(owner));
    /* One partition, so that "the first unhandled command" is one line. */
    assert_int_equal(rd_kafka_mock_topic_create(bus_mock_cluster(owner), "compute.h1", 1, 1), 0);
    cfg.brokers = bs;

    /* First agent: gets three commands, handles #0 and #2 but not #1. */
    assert_int_equal(t_bus_new(&t, &cfg, &t.bus), 0);
    assert_null(bus_mock_cluster(t.bus)); /* not ours to steer */
    assert_string_equal(bus_bootstrap_servers(t.bus), bs);
    kcat_produce(bs, "compute.h1",
                 "i-1|{\"op\":\"start\",\"request_id\":\"r0\"}\n"
                 "i-2|{\"op\":\"stop\",\"request_id\":\"r1\"}\n"
                 "i-1|{\"op\":\"reboot\",\"request_id\":\"r2\"}\n");
    assert_true(run_until(&t, p_cmds, 3, 30000));
    assert_string_equal(t.cmds[0].payload, "{\"op\":\"start\",\"request_id\":\"r0\"}");
    assert_string_equal(t.cmds[0].key, "i-1");
    assert_int_equal(t.cmds[1].offset, t.cmds[0].offset + 1);
    assert_string_equal(t.cmds[2].payload, "{\"op\":\"reboot\",\"request_id\":\"r2\"}");
    assert_false(t.cmds[0].oversized);

    assert_int_equal(bus_command_commit(t.bus, t.cmds[0].msg), 0);
    assert_int_equal(bus_command_commit(t.bus, t.cmds[2].msg), 0);
    assert_true(run_until(&t, p_commits, 1, 10000));
    bus_stats(t.bus, &s);
    assert_int_equal(s.commands_received, 3);
    assert_int_equal(s.commit_errors, 0);
    /* "Killed" before #1 was journaled: free without committing it. */
    t_free_bus(&t, &t.bus);

    /* Second agent, same group: #1 and #2 come again (#2 was handled but
     * its offset could not pass the open #1), #0 does not. A rebalance may
     * hand a command over twice (at least once): count distinct ones, as
     * the agent does by request id. */
    t.n_cmds = 0;
    assert_int_equal(t_bus_new(&t, &cfg, &t.bus), 0);
    assert_true(run_until(&t, p_request_ids, (intptr_t)"r1,r2", 30000));
    assert_false(p_request_ids(&t, (intptr_t)"r0"));
    /* Commit newest first: nothing moves until r1 is handled too. */
    for (size_t i = t.n_cmds; i-- > 0;)
        if (t.cmds[i].msg) {
            int r = bus_command_commit(t.bus, t.cmds[i].msg);

            assert_true(r == 0 || r == -ESTALE);
            t.cmds[i].msg = NULL;
        }
    assert_true(run_until(&t, p_commits, 1, 10000));
    t_free_bus(&t, &t.bus);

    /* Third agent: nothing old comes back; a new command does. */
    t.n_cmds = 0;
    t.commit_in_callback = true;
    assert_int_equal(t_bus_new(&t, &cfg, &t.bus), 0);
    assert_true(run_until(&t, p_up, true, 20000));
    kcat_produce(bs, "compute.h1", "i-3|{\"op\":\"terminate\",\"request_id\":\"r3\"}\n");
    assert_true(run_until(&t, p_request_ids, (intptr_t)"r3", 30000));
    assert_true(run_until(&t, p_commits, 1, 10000));
    assert_false(p_request_ids(&t, (intptr_t)"r0"));
    assert_false(p_request_ids(&t, (intptr_t)"r1"));
    assert_false(p_request_ids(&t, (intptr_t)"r2"));
    t_free_bus(&t, &t.bus);

    t_free_bus(&t, &owner);
    free(bs);
    t_finish(&t);
}

/* Child mode (test_killed_consumer): consume compute.<host> as a separate
 * agent process, print the first command, then die by SIGKILL before
 * committing it, as an agent killed mid-command would. */
static void child_on_command(void *opaque, const struct bus_message *msg)
{
    (void)opaque;
    if (msg->payload) {
        fwrite(msg->payload, 1, msg->len, stdout);
        fputc('\n', stdout);
    }
    fflush(stdout);
    raise(SIGKILL);
}

static int child_consumer(const char *brokers, const char *host)
{
    struct bus_config cfg = {.brokers = brokers, .host = host, .properties = fast_props};
    struct bus_callbacks cb = {.on_command = child_on_command};
    struct agent_error err;
    struct bus *bus;
    uv_loop_t loop;

    uv_loop_init(&loop);
    if (bus_new(&loop, &cfg, &cb, NULL, &bus, &err) < 0) {
        fprintf(stderr, "child: %s\n", err.message);
        return 1;
    }
    uv_run(&loop, UV_RUN_DEFAULT); /* until killed */
    return 1;
}

/* An agent process is SIGKILLed after receiving a command, before
 * committing it: its group membership is not left, the next agent of the
 * same host gets the command once the dead member's session expired. */
static void test_killed_consumer(void **state)
{
    struct tctx t;
    struct bus *owner = NULL;
    struct bus_config ocfg = {.host = "owner-k", .properties = fast_props};
    struct bus_config cfg = {.host = "hk", .properties = fast_props};
    char *bs, *out = NULL;
    uint64_t t0;

    (void)state;
    NEED_KCAT();
    t_init(&t);
    t.commit_in_callback = true;
    assert_int_equal(t_bus_new(&t, &ocfg, &owner), 0);
    bs = strdup(bus_bootstrap_servers(owner));
    cfg.brokers = bs;
    assert_int_equal(rd_kafka_mock_topic_create(bus_mock_cluster(owner), "compute.hk", 1, 1), 0);
    kcat_produce(bs, "compute.hk", "i-9|{\"op\":\"terminate\",\"request_id\":\"rk\"}\n");
    {
        char *const argv[] = {"/proc/self/exe", "--child-consumer", bs, "hk", NULL};

        /* Our loop does not run meanwhile; the mock has its own thread. */
        assert_int_equal(run_proc(argv, NULL, &out, 60000), 128 + SIGKILL);
    }
    assert_string_equal(out, "{\"op\":\"terminate\",\"request_id\":\"rk\"}\n");
    free(out);

    t0 = now_mono_ns();
    assert_int_equal(t_bus_new(&t, &cfg, &t.bus), 0);
    assert_true(run_until(&t, p_request_ids, (intptr_t)"rk", 40000));
    assert_true(run_until(&t, p_commits, 1, 10000));
    if (t.verbose)
        fprintf(stderr, "# redelivered after %.1f s\n", (double)(now_mono_ns() - t0) / 1e9);
    t_free_bus(&t, &t.bus);
    t_free_bus(&t, &owner);
    free(bs);
    t_finish(&t);
}

/* A command over the size limit is handed over as oversized, without its
 * payload, and can be committed like any other. */
static void test_oversized_command(void **state)
{
    struct tctx t;
    struct bus_config cfg = {.host = "node-o", .properties = fast_props,
                             .max_command_bytes = 64};
    struct bus_stats s;
    char big[512];
    char lines[700];

    (void)state;
    NEED_KCAT();
    t_init(&t);
    t.commit_in_callback = true;
    assert_int_equal(t_bus_new(&t, &cfg, &t.bus), 0);
    memset(big, 'x', 200);
    big[200] = '\0';
    snprintf(lines, sizeof(lines), "k|{\"op\":\"start\"}\nk|%s\nk|[1]\n", big);
    kcat_produce(bus_bootstrap_servers(t.bus), "compute.node-o", lines);
    assert_true(run_until(&t, p_cmds, 3, 30000));
    assert_false(t.cmds[0].oversized);
    assert_true(t.cmds[1].oversized);
    assert_int_equal(t.cmds[1].len, 200);
    assert_string_equal(t.cmds[1].payload, ""); /* no payload given */
    assert_string_equal(t.cmds[2].payload, "[1]");
    assert_true(run_until(&t, p_commits, 1, 10000));
    bus_stats(t.bus, &s);
    assert_int_equal(s.commands_received, 3);
    assert_int_equal(s.commands_oversized, 1);
    t_free_bus(&t, &t.bus);
    t_finish(&t);
}

/* The broker goes away and comes back: events published before and during
 * the outage are acknowledged once each, and read back once each, in order
 * per key. */
static void test_broker_outage(void **state)
{
    struct tctx t;
    struct bus_config cfg = {.host = "node-b", .properties = fast_props};
    rd_kafka_mock_cluster_t *mc;
    const int before = 10, total = 40;
    char *out;

    (void)state;
    NEED_KCAT();
    t_init(&t);
    assert_int_equal(t_bus_new(&t, &cfg, &t.bus), 0);
    mc = bus_mock_cluster(t.bus);
    assert_non_null(mc);
    assert_true(run_until(&t, p_up, true, 20000));

    for (int i = 0; i < before; i++)
        assert_int_equal(publish_seq_event(t.bus, i, 3), 0);
    assert_int_equal(rd_kafka_mock_broker_set_down(mc, 1), 0);
    assert_true(run_until(&t, p_up, false, 20000));
    assert_true(t.downs >= 1);
    for (int i = before; i < total; i++)
        assert_int_equal(publish_seq_event(t.bus, i, 3), 0);
    /* Nothing published during the outage gets through while it lasts
     * (an observation window, not a wait for something to happen). */
    run_until(&t, p_never, 0, 1500);
    for (int i = before; i < total; i++)
        assert_int_equal(t.delivered[i], 0);

    assert_int_equal(rd_kafka_mock_broker_set_up(mc, 1), 0);
    assert_true(run_until(&t, p_delivered, total, 30000));
    assert_true(run_until(&t, p_up, true, 20000));
    for (int i = 0; i < total; i++) {
        assert_int_equal(t.delivered[i], 1);
        assert_int_equal(t.delivered_err[i], 0);
    }
    out = kcat_consume(bus_bootstrap_servers(t.bus), "compute.events");
    check_events_once_in_order(out, total);
    free(out);
    t_free_bus(&t, &t.bus);
    t_finish(&t);
}

/* Telemetry past its bound while the broker is away: the oldest samples
 * are dropped and counted, memory stays bounded, the newest get through
 * once it is back, lz4 compressed, readable by kcat. */
static void test_telemetry_overflow(void **state)
{
    struct tctx t;
    struct bus_config cfg = {.host = "node-t", .properties = fast_props,
                             .telemetry_queue_max = 10,
                             .telemetry_compression = "lz4"};
    rd_kafka_mock_cluster_t *mc;
    struct bus_stats s;
    char json[96];
    char *out;

    (void)state;
    NEED_KCAT();
    t_init(&t);
    assert_int_equal(t_bus_new(&t, &cfg, &t.bus), 0);
    mc = bus_mock_cluster(t.bus);
    assert_true(run_until(&t, p_up, true, 20000));
    assert_int_equal(rd_kafka_mock_broker_set_down(mc, 1), 0);
    assert_true(run_until(&t, p_up, false, 20000));

    /* Three rounds of 25 samples, some loop turns apart. */
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < 25; i++) {
            int len = snprintf(json, sizeof(json),
                               "{\"meter\":\"cpu\",\"round\":%d,\"i\":%d}", round, i);

            assert_int_equal(bus_publish_telemetry(t.bus, "inst-1", json, (size_t)len), 0);
            bus_stats(t.bus, &s);
            assert_true(s.telemetry.queued <= 10 + 5); /* bound (+ purged, not yet served) */
        }
        /* Until the purge's reports are in and the backlog moved on:
         * the 5 newest wait in librdkafka's half of the bound. */
        assert_true(run_until(&t, p_telemetry_queued, 5, 10000));
        bus_stats(t.bus, &s);
        assert_int_equal(s.telemetry.dropped, 20 + 25 * round);
        if (t.verbose)
            fprintf(stderr, "# round %d: queued %llu dropped %llu delivered %llu\n", round,
                    (unsigned long long)s.telemetry.queued, (unsigned long long)s.telemetry.dropped,
                    (unsigned long long)s.telemetry.delivered);
        assert_true(s.telemetry.queued <= 10);
    }
    bus_stats(t.bus, &s);
    assert_int_equal(s.telemetry.produced, 75);
    assert_true(s.telemetry.dropped >= 65);

    assert_int_equal(rd_kafka_mock_broker_set_up(mc, 1), 0);
    assert_true(run_until(&t, p_telemetry_settled, 0, 30000));
    bus_stats(t.bus, &s);
    if (t.verbose)
        fprintf(stderr, "# telemetry: produced %llu delivered %llu dropped %llu failed %llu queued %llu\n",
                (unsigned long long)s.telemetry.produced, (unsigned long long)s.telemetry.delivered,
                (unsigned long long)s.telemetry.dropped, (unsigned long long)s.telemetry.failed,
                (unsigned long long)s.telemetry.queued);
    /* Every sample is accounted for, none failed. */
    assert_int_equal(s.telemetry.failed, 0);
    assert_int_equal(s.telemetry.delivered + s.telemetry.dropped, 75);
    assert_true(s.telemetry.delivered >= 5);
    assert_true(s.telemetry.delivered <= 10);
    if (t.verbose)
        fprintf(stderr, "# telemetry: delivered %llu dropped %llu lag %.1f ms\n",
                (unsigned long long)s.telemetry.delivered,
                (unsigned long long)s.telemetry.dropped, s.telemetry.lag_ms_last);

    /* The survivors are the newest: the end of the last round, in order. */
    out = kcat_consume(bus_bootstrap_servers(t.bus), "telemetry");
    assert_null(strstr(out, "\"round\":0,"));
    assert_null(strstr(out, "\"round\":1,"));
    assert_non_null(strstr(out, "inst-1|{\"meter\":\"cpu\",\"round\":2,\"i\":24}\n"));
    assert_true(strstr(out, "\"i\":23}") < strstr(out, "\"i\":24}"));
    free(out);
    t_free_bus(&t, &t.bus);
    t_finish(&t);
}

/* The other policy: a full queue refuses the new sample. */
static void test_telemetry_drop_newest(void **state)
{
    struct tctx t;
    struct bus_config cfg = {.host = "node-n", .properties = fast_props,
                             .telemetry_queue_max = 10,
                             .telemetry_compression = "zstd",
                             .telemetry_drop_newest = true};
    struct bus_stats s;
    int accepted = 0, refused = 0;

    (void)state;
    t_init(&t);
    assert_int_equal(t_bus_new(&t, &cfg, &t.bus), 0);
    assert_true(run_until(&t, p_up, true, 20000));
    /* No loop turn in between: nothing is acknowledged meanwhile. */
    for (int i = 0; i < 25; i++) {
        int r = bus_publish_telemetry(t.bus, "inst-2", "{\"v\":1}", 7);

        if (r == 0)
            accepted++;
        else {
            assert_int_equal(r, -ENOBUFS);
            refused++;
        }
    }
    assert_int_equal(accepted, 10);
    assert_int_equal(refused, 15);
    assert_true(run_until(&t, p_telemetry_settled, 0, 30000));
    bus_stats(t.bus, &s);
    assert_int_equal(s.telemetry.produced, 10);
    assert_int_equal(s.telemetry.delivered, 10);
    assert_int_equal(s.telemetry.dropped, 15);
    t_free_bus(&t, &t.bus);
    t_finish(&t);
}

/* bus_free() flushes: events published just before are acknowledged during
 * it; nothing is left for the loop but the closing handle. */
static void test_free_flushes(void **state)
{
    struct tctx t;
    struct bus_config cfg = {.host = "node-f", .properties = fast_props};

    (void)state;
    t_init(&t);
    assert_int_equal(t_bus_new(&t, &cfg, &t.bus), 0);
    assert_true(run_until(&t, p_up, true, 20000));
    for (int i = 0; i < 20; i++)
        assert_int_equal(publish_seq_event(t.bus, i, 2), 0);
    t.bus = bus_free(t.bus);
    assert_int_equal(t.n_delivered, 20);
    for (int i = 0; i < 20; i++)
        assert_int_equal(t.delivered_err[i], 0);
    t_finish(&t);
}

/* bus_free() while the broker is away is bounded, and the event it could
 * not deliver is reported as cancelled (its outbox row stays). */
static void test_free_during_outage(void **state)
{
    struct tctx t;
    struct bus_config cfg = {.host = "node-d", .properties = fast_props,
                             .flush_timeout_ms = 1000, .telemetry_queue_max = 4};
    uint64_t t0;
    double secs;

    (void)state;
    t_init(&t);
    assert_int_equal(t_bus_new(&t, &cfg, &t.bus), 0);
    assert_true(run_until(&t, p_up, true, 20000));
    assert_int_equal(rd_kafka_mock_broker_set_down(bus_mock_cluster(t.bus), 1), 0);
    assert_true(run_until(&t, p_up, false, 20000));
    assert_int_equal(publish_seq_event(t.bus, 7, 1), 0);
    /* Overflow the telemetry bound: a purge is under way as we free. */
    for (int i = 0; i < 20; i++)
        assert_int_equal(bus_publish_telemetry(t.bus, "x", "{}", 2), 0);
    t0 = now_mono_ns();
    t.bus = bus_free(t.bus);
    secs = (double)(now_mono_ns() - t0) / 1e9;
    if (t.verbose)
        fprintf(stderr, "# bus_free took %.2f s\n", secs);
    assert_true(secs < 1.0 + 4.0 + 1.0); /* flush_timeout_ms + 4 s, + slack */
    assert_int_equal(t.delivered[7], 1);
    assert_int_equal(t.delivered_err[7], -ECANCELED);
    t_finish(&t);
}

/* Without a consumer (no on_command), and freed from inside its own
 * callback: the free is deferred until the callback returns. */
/* ------------------------------------------------------- events readback */

static void t_on_readback(void *opaque, const struct bus_readback_result *res)
{
    struct tctx *t = opaque;

    t->rb_done = true;
    t->rb_err = res->err;
    t->rb_n_ids = res->n_ids;
    t->rb_n_parts = res->n_parts;
    for (size_t p = 0; p < res->n_parts && p < 16; p++)
        t->rb_ends[p] = res->ends[p];
    memset(t->rb_has, 0, sizeof(t->rb_has));
    for (int i = 0; i < MAX_IDS; i++) {
        char id[32];

        snprintf(id, sizeof(id), "ev-%d", i);
        t->rb_has[i] = bus_readback_has(res, id);
    }
}

static bool p_rb_done(struct tctx *t, intptr_t unused)
{
    (void)unused;
    return t->rb_done;
}

static void t_readback(struct tctx *t, const int64_t *from, size_t n_from)
{
    struct bus_readback_config rc = {
        .bootstrap = bus_bootstrap_servers(t->bus),
        .host = "node-a",
        .topic = bus_topic(t->bus, BUS_TOPIC_EVENTS),
        .properties = fast_props,
        .from = from,
        .n_from = n_from,
        .timeout_ms = 20000,
    };
    struct agent_error err = {0};

    t->rb_done = false;
    assert_int_equal(bus_readback_start(&t->loop, &rc, t_on_readback, t, NULL, &err), 0);
    assert_true(run_until(t, p_rb_done, 0, 25000));
}

/* Events of two hosts on the topic; the readback finds this host's event
 * ids from the given offsets to the end, and the ends; a start with nothing
 * recorded reads nothing. */
static void test_events_readback(void **state)
{
    struct tctx t;
    struct bus_config cfg = {.host = "node-a", .properties = fast_props};
    const int n = 40;
    int64_t from[16];

    (void)state;
    t_init(&t);
    t.commit_in_callback = true;
    assert_int_equal(t_bus_new(&t, &cfg, &t.bus), 0);
    assert_true(run_until(&t, p_up, true, 20000));
    for (int i = 0; i < n; i++) {
        char key[16], json[160];
        int len;

        snprintf(key, sizeof(key), "i-%d", i % 7);
        len = snprintf(json, sizeof(json), "{\"event\":\"instance.running\",\"event_id\":\"ev-%d\",\"host\":\"%s\"}", i,
                       i % 3 == 2 ? "node-b" : "node-a");
        assert_int_equal(bus_publish_event(t.bus, key, json, (size_t)len, i), 0);
    }
    assert_true(run_until(&t, p_delivered, n, 20000));
    for (int i = 0; i < n; i++)
        assert_int_equal(t.placed[i], 1);

    /* nothing recorded: only the ends */
    t_readback(&t, NULL, 0);
    assert_int_equal(t.rb_err, 0);
    assert_int_equal(t.rb_n_ids, 0);
    assert_true(t.rb_n_parts >= 1 && t.rb_n_parts <= 16);
    for (int i = 0; i < n; i++)
        assert_true(t.placed_off[i] < t.rb_ends[t.placed_part[i]]);

    /* everything from the start (-1: no record for the partition) */
    for (size_t p = 0; p < 16; p++)
        from[p] = -1;
    t_readback(&t, from, 16);
    assert_int_equal(t.rb_err, 0);
    for (int i = 0; i < n; i++)
        assert_int_equal(t.rb_has[i], i % 3 != 2);

    /* from just after event 19 in its partition, the start of the others */
    for (size_t p = 0; p < 16; p++)
        from[p] = -1;
    from[t.placed_part[19]] = t.placed_off[19] + 1;
    t_readback(&t, from, t.rb_n_parts);
    assert_int_equal(t.rb_err, 0);
    for (int i = 0; i < n; i++) {
        bool later = t.placed_part[i] != t.placed_part[19] || t.placed_off[i] > t.placed_off[19];
        assert_int_equal(t.rb_has[i], later && i % 3 != 2);
    }

    /* a topic that does not exist: no partitions (or, where the broker
     * creates topics on a metadata request as the mock does, empty ones) */
    {
        struct bus_readback_config rc = {
            .bootstrap = bus_bootstrap_servers(t.bus), .host = "node-a", .topic = "no-such-topic",
            .properties = fast_props, .from = from, .n_from = 1, .timeout_ms = 20000,
        };
        struct agent_error err = {0};

        t.rb_done = false;
        assert_int_equal(bus_readback_start(&t.loop, &rc, t_on_readback, &t, NULL, &err), 0);
        assert_true(run_until(&t, p_rb_done, 0, 25000));
        assert_int_equal(t.rb_err, 0);
        assert_int_equal(t.rb_n_ids, 0);
        for (size_t p = 0; p < t.rb_n_parts && p < 16; p++)
            assert_int_equal(t.rb_ends[p], 0);
    }
    t_free_bus(&t, &t.bus);
    t_finish(&t);
}

static void test_free_from_callback(void **state)
{
    struct tctx t;
    struct bus_config cfg = {.host = "node-c", .properties = fast_props};
    struct bus_callbacks cb = t_callbacks;
    struct agent_error err;

    (void)state;
    t_init(&t);
    cb.on_command = NULL;
    t.free_on_up = true;
    assert_int_equal(bus_new(&t.loop, &cfg, &cb, &t, &t.bus, &err), 0);
    assert_int_equal(bus_publish_event(t.bus, "k", "{\"seq\":0}", 9, 0), 0);
    assert_true(run_until(&t, p_up, true, 20000));
    assert_null(t.bus);
    assert_int_equal(t.n_delivered, 1);
    t_finish(&t);
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_errors),
        cmocka_unit_test(test_events_roundtrip),
        cmocka_unit_test(test_commands_commit_and_restart),
        cmocka_unit_test(test_killed_consumer),
        cmocka_unit_test(test_oversized_command),
        cmocka_unit_test(test_broker_outage),
        cmocka_unit_test(test_telemetry_overflow),
        cmocka_unit_test(test_telemetry_drop_newest),
        cmocka_unit_test(test_free_flushes),
        cmocka_unit_test(test_free_during_outage),
        cmocka_unit_test(test_free_from_callback),
        cmocka_unit_test(test_events_readback),
    };

    if (argc == 4 && strcmp(argv[1], "--child-consumer") == 0)
        return child_consumer(argv[2], argv[3]);
    signal(SIGPIPE, SIG_IGN);
    if (getenv("TEST_BUS_FILTER"))
        cmocka_set_test_filter(getenv("TEST_BUS_FILTER"));
    have_kcat = kcat_available();
    if (!have_kcat)
        fprintf(stderr, "# kcat not found: tests with an outside client skipped\n");
    return cmocka_run_group_tests(tests, NULL, NULL);
}
