/* test_events.c: the events outbox (agent/events.c) against librdkafka's
 * mock cluster running in this process (agent/bus/mock.c), read back with a
 * plain librdkafka consumer of the test's own:
 *   - rows are written with their event_id (minted once, with the row) and
 *     nothing leaves before the bus is started;
 *   - once started, every row is sent once, in outbox order per key, and
 *     deleted on acknowledgement, with the per-partition read_from offsets
 *     recorded (the end of each partition after our last event);
 *   - a restart after a crash between Kafka's acknowledgement and the delete
 *     (rows back in the outbox, read_from as it was before the delete) sends
 *     only what the topic does not hold yet;
 *   - heartbeats carry the host's state (and the hypervisor's).
 * Every wait runs the uv loop (or polls the consumer) until a condition holds
 * or a deadline passes; every test closes every handle and checks
 * uv_loop_close() == 0. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <sqlite3.h>
#include <uv.h>

#include "agent/bus.h"
#include "agent/config.h"
#include "agent/events.h"
#include "agent/host.h"
#include "agent/hypervisor/hv.h"
#include "agent/metrics.h"
#include "agent/resources.h"
#include "agent/store.h"

#define DEADLINE_MS 20000
#define HOST "unit-events"
#define MAX_MSGS 256

struct t {
    uv_loop_t loop;
    struct agent_config cfg;
    struct store *store;
    struct host *host;
    struct hv *hv;
    struct resources *res;
    struct metrics *metrics;
    struct events *events;
    struct bus *owner;  /* holds the mock cluster across events objects (restart test) */
    char brokers[256];  /* "" for an events object that starts its own cluster */
};

/* ---- loop helpers ---- */

static void on_deadline(uv_timer_t *timer)
{
    *(bool *)timer->data = true;
}

/* Run the loop until pred(t) holds or the deadline passed; returns pred. */
static bool run_until(struct t *t, bool (*pred)(struct t *t), int timeout_ms)
{
    uv_timer_t timer;
    bool expired = false, ok;

    uv_timer_init(&t->loop, &timer);
    timer.data = &expired;
    uv_timer_start(&timer, on_deadline, (uint64_t)timeout_ms, 0);
    while (!(ok = pred(t)) && !expired)
        uv_run(&t->loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&timer, NULL);
    uv_run(&t->loop, UV_RUN_NOWAIT);
    return ok;
}

static int64_t outbox_count(struct t *t)
{
    sqlite3_stmt *st;
    int64_t n = -1;

    assert_int_equal(sqlite3_prepare_v2(store_db(t->store), "SELECT COUNT(*) FROM outbox", -1, &st, NULL),
                     SQLITE_OK);
    if (sqlite3_step(st) == SQLITE_ROW)
        n = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return n;
}

static bool outbox_empty(struct t *t)
{
    return outbox_count(t) == 0;
}

static bool read_from_recorded(struct t *t)
{
    char *text = NULL;

    if (store_meta_get(t->store, "events.read_from", &text) < 0)
        return false;
    free(text);
    return true;
}

static bool bus_up(struct t *t)
{
    return events_bus(t->events) && bus_is_up(events_bus(t->events));
}

/* ---- the outbox as rows ---- */

struct row {
    int64_t id;
    char key[64];
    char event[48];
    char event_id[37];
    char *payload;
};

/* Every outbox row, in id order (payloads owned: rows_free). */
static size_t outbox_rows(struct t *t, struct row *rows, size_t max)
{
    sqlite3_stmt *st;
    size_t n = 0;

    assert_int_equal(sqlite3_prepare_v2(store_db(t->store), "SELECT id, key, payload FROM outbox ORDER BY id",
                                        -1, &st, NULL),
                     SQLITE_OK);
    while (sqlite3_step(st) == SQLITE_ROW) {
        struct row *r = &rows[n];
        json_t *j;

        assert_true(n < max);
        r->id = sqlite3_column_int64(st, 0);
        strscpy(r->key, (const char *)sqlite3_column_text(st, 1), sizeof(r->key));
        r->payload = strdup((const char *)sqlite3_column_text(st, 2));
        assert_non_null(j = json_loads(r->payload, 0, NULL));
        strscpy(r->event, json_string_value(json_object_get(j, "event")), sizeof(r->event));
        assert_non_null(json_string_value(json_object_get(j, "event_id")));
        strscpy(r->event_id, json_string_value(json_object_get(j, "event_id")), sizeof(r->event_id));
        assert_string_equal(json_string_value(json_object_get(j, "host")), HOST);
        json_decref(j);
        n++;
    }
    sqlite3_finalize(st);
    return n;
}

static void rows_free(struct row *rows, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(rows[i].payload);
}

/* ---- the topic, read by a consumer of the test's own ---- */

struct msg {
    int32_t partition;
    int64_t offset;
    char key[64];
    char *payload;
};

struct topic {
    struct msg m[MAX_MSGS];
    size_t n;
    int64_t ends[16]; /* high watermark of each partition */
    int n_parts;
};

static rd_kafka_t *consumer_new(const char *bootstrap)
{
    char errstr[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_t *rk;

    assert_int_equal(rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, errstr, sizeof(errstr)),
                     RD_KAFKA_CONF_OK);
    assert_int_equal(rd_kafka_conf_set(conf, "group.id", "unit-events-reader", errstr, sizeof(errstr)),
                     RD_KAFKA_CONF_OK);
    assert_int_equal(rd_kafka_conf_set(conf, "enable.partition.eof", "true", errstr, sizeof(errstr)),
                     RD_KAFKA_CONF_OK);
    assert_int_equal(rd_kafka_conf_set(conf, "enable.auto.commit", "false", errstr, sizeof(errstr)),
                     RD_KAFKA_CONF_OK);
    /* the mock broker answers a fetch only when its wait expires */
    assert_int_equal(rd_kafka_conf_set(conf, "fetch.wait.max.ms", "50", errstr, sizeof(errstr)),
                     RD_KAFKA_CONF_OK);
    assert_non_null(rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr)));
    return rk;
}

/* Read topic from every partition's start to its end (deadline). */
static void topic_read(const char *bootstrap, const char *name, struct topic *out)
{
    rd_kafka_t *rk = consumer_new(bootstrap);
    rd_kafka_topic_t *tp = rd_kafka_topic_new(rk, name, NULL);
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_topic_partition_list_t *parts;
    uint64_t deadline = now_mono_ns() + (uint64_t)DEADLINE_MS * 1000000u;
    int eofs = 0;

    memset(out, 0, sizeof(*out));
    assert_int_equal(rd_kafka_metadata(rk, 0, tp, &md, DEADLINE_MS), RD_KAFKA_RESP_ERR_NO_ERROR);
    assert_int_equal(md->topic_cnt, 1);
    out->n_parts = md->topics[0].partition_cnt;
    assert_true(out->n_parts >= 1 && out->n_parts <= 16);
    rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(tp);
    parts = rd_kafka_topic_partition_list_new(out->n_parts);
    for (int p = 0; p < out->n_parts; p++) {
        int64_t lo, hi;

        assert_int_equal(rd_kafka_query_watermark_offsets(rk, name, p, &lo, &hi, DEADLINE_MS),
                         RD_KAFKA_RESP_ERR_NO_ERROR);
        out->ends[p] = hi;
        rd_kafka_topic_partition_list_add(parts, name, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
    }
    assert_int_equal(rd_kafka_assign(rk, parts), RD_KAFKA_RESP_ERR_NO_ERROR);
    rd_kafka_topic_partition_list_destroy(parts);
    while (eofs < out->n_parts) {
        rd_kafka_message_t *m;

        assert_true(now_mono_ns() < deadline);
        if (!(m = rd_kafka_consumer_poll(rk, 100)))
            continue;
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            eofs++;
        } else {
            struct msg *x = &out->m[out->n++];

            assert_int_equal(m->err, RD_KAFKA_RESP_ERR_NO_ERROR);
            assert_true(out->n < MAX_MSGS);
            x->partition = m->partition;
            x->offset = m->offset;
            snprintf(x->key, sizeof(x->key), "%.*s", (int)m->key_len, m->key ? (const char *)m->key : "");
            assert_non_null(x->payload = strndup(m->payload, m->len));
        }
        rd_kafka_message_destroy(m);
    }
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
}

static void topic_release(struct topic *tp)
{
    for (size_t i = 0; i < tp->n; i++)
        free(tp->m[i].payload);
    tp->n = 0;
}

/* How many messages carry event_id; *at its index in the topic (last one). */
static int topic_count(const struct topic *tp, const char *event_id, size_t *at)
{
    char want[64];
    int n = 0;

    snprintf(want, sizeof(want), "\"event_id\":\"%s\"", event_id);
    for (size_t i = 0; i < tp->n; i++)
        if (strstr(tp->m[i].payload, want)) {
            n++;
            if (at)
                *at = i;
        }
    return n;
}

/* The recorded read_from offsets are the ends of the partitions. */
static void expect_read_from_at_ends(struct t *t, const struct topic *tp)
{
    char *text = NULL;
    json_t *j, *offs;

    assert_int_equal(store_meta_get(t->store, "events.read_from", &text), 0);
    assert_non_null(j = json_loads(text, 0, NULL));
    free(text);
    assert_string_equal(json_string_value(json_object_get(j, "topic")), "compute.events");
    offs = json_object_get(j, "offsets");
    assert_int_equal(json_array_size(offs), tp->n_parts);
    for (int p = 0; p < tp->n_parts; p++)
        assert_int_equal(json_integer_value(json_array_get(offs, (size_t)p)), tp->ends[p]);
    json_decref(j);
}

/* ---- fixture ---- */

static void fixture(struct t *t, bool with_owner)
{
    struct hv_config hvc = {.uri = "test:///default", .host_name = HOST};
    struct agent_error err = {0};
    struct hv_host_info info = {0};

    memset(t, 0, sizeof(*t));
    assert_int_equal(uv_loop_init(&t->loop), 0);
    config_init_defaults(&t->cfg);
    assert_int_equal(store_open(":memory:", false, &t->store, &err), 0);
    assert_int_equal(host_new(t->store, &t->host), 0);
    assert_int_equal(metrics_new(&t->metrics), 0);
    assert_int_equal(hv_new(&t->loop, &hv_driver_test, &hvc, NULL, NULL, &t->hv), 0);
    assert_int_equal(hv_connect(t->hv, &err), 0);
    assert_int_equal(resources_new(&t->cfg, &t->res), 0);
    assert_int_equal(hv_host_info(t->hv, &info, &err), 0);
    resources_set_host(t->res, &info, 100);
    hv_host_info_release(&info);
    if (with_owner) {
        /* a cluster that outlives the events objects, as real brokers do */
        struct bus_config bc = {.host = "unit-events-owner"};
        static const struct bus_callbacks none;

        assert_int_equal(bus_new(&t->loop, &bc, &none, NULL, &t->owner, &err), 0);
        strscpy(t->brokers, bus_bootstrap_servers(t->owner), sizeof(t->brokers));
    }
}

static void events_make(struct t *t, int64_t heartbeat_s)
{
    struct events_deps ed = {.store = t->store, .hv = t->hv, .res = t->res, .host = t->host,
                             .metrics = t->metrics};
    struct events_config ec = {.host_name = HOST, .hypervisor = "test", .bus_brokers = t->brokers,
                               .bus_prefix = "", .heartbeat_s = heartbeat_s,
                               .bus_properties = "reconnect.backoff.ms=50,reconnect.backoff.max.ms=500,"
                                                 "topic.metadata.refresh.interval.ms=1000"};

    assert_int_equal(events_new(&t->loop, &ed, &ec, NULL, NULL, &t->events), 0);
}

static void events_start_ok(struct t *t)
{
    struct agent_error err = {0};

    if (events_start(t->events, &err) < 0)
        fail_msg("events_start: %s", err.message);
}

static void events_end(struct t *t)
{
    events_stop(t->events);
    uv_run(&t->loop, UV_RUN_NOWAIT);
    events_free(t->events);
    t->events = NULL;
}

static void fixture_free(struct t *t)
{
    if (t->events)
        events_end(t);
    if (t->owner)
        t->owner = bus_free(t->owner);
    hv_free(t->hv);
    uv_run(&t->loop, UV_RUN_DEFAULT);
    resources_free(t->res);
    metrics_free(t->metrics);
    host_free(t->host);
    store_free(t->store);
    config_release(&t->cfg);
    assert_int_equal(uv_loop_close(&t->loop), 0);
}

static void make_instance(struct instance *i, const char *uuid, const char *ec2, const char *state)
{
    memset(i, 0, sizeof(*i));
    strscpy(i->uuid, uuid, sizeof(i->uuid));
    strscpy(i->ec2_id, ec2, sizeof(i->ec2_id));
    strscpy(i->state, state, sizeof(i->state));
    i->name = "unit";
    i->flavor = (struct flavor){.vcpus = 1, .memory_mb = 64};
    i->boot.kind = BOOT_KERNEL;
    i->boot.kernel = "/k/vmlinuz";
}

/* Record one event in its own transaction, as the engine does. */
static void record_instance(struct t *t, const char *uuid, const char *ec2, const char *state)
{
    struct instance i;

    make_instance(&i, uuid, ec2, state);
    assert_int_equal(store_begin(t->store), 0);
    assert_int_equal(events_instance(t->events, &i, "req-1"), 0);
    assert_int_equal(store_commit(t->store), 0);
    events_flush(t->events);
}

#define UA "0d8f7a34-8a47-4a59-9d3a-2b1e8c9b0f11"
#define UB "5b1c5a2e-93d4-4b8e-9f0e-3c1d2a4b5c6d"
#define EA "i-0123456789abcdef0"
#define EB "i-0fedcba9876543210"

/* ---- tests ---- */

/* Rows with their event_id, nothing sent before the start; then every row
 * once, in order per key, deleted on acknowledgement with read_from at the
 * partitions' ends. */
static void test_outbox_send_in_order(void **state)
{
    static const char *const states[] = {"pending", "running", "stopping", "stopped", "running"};
    struct t t;
    struct row rows[32];
    struct topic tp;
    struct op_record rec = {.id = "7a0e1c52-6a6f-4d0b-8c5e-9d1f0e2a3b4c", .type = "launch",
                            .instance_uuid = UA, .state = "succeeded", .step = "started"};
    struct instance ia;
    struct agent_error rej = {.code = "invalid_field", .field = "flavor.vcpus", .message = "too many"};
    int64_t prev[2] = {-1, -1};
    int32_t part[2] = {-1, -1};
    size_t n;
    json_t *bj;

    (void)state;
    fixture(&t, false);
    events_make(&t, 3600);
    /* written before the bus runs: they wait */
    for (size_t k = 0; k < ARRAY_SIZE(states); k++) {
        record_instance(&t, UA, EA, states[k]);
        record_instance(&t, UB, EB, states[(k + 2) % ARRAY_SIZE(states)]);
    }
    make_instance(&ia, UA, EA, "running");
    assert_int_equal(store_begin(t.store), 0);
    assert_int_equal(events_operation(t.events, &rec, &ia), 0);
    assert_int_equal(events_command_rejected(t.events, "req-bad", NULL, &rej, 0, 41), 0);
    assert_int_equal(store_commit(t.store), 0);
    events_flush(t.events); /* no bus: a no-op */
    assert_null(events_bus(t.events));
    assert_true(json_is_null(bj = events_bus_json(t.events)));
    json_decref(bj);

    n = outbox_rows(&t, rows, ARRAY_SIZE(rows));
    assert_int_equal(n, 2 * ARRAY_SIZE(states) + 2);
    for (size_t k = 0; k < ARRAY_SIZE(states); k++) {
        char want[48];

        snprintf(want, sizeof(want), "instance.%s", states[k]);
        assert_string_equal(rows[2 * k].key, UA);
        assert_string_equal(rows[2 * k].event, want);
        assert_string_equal(rows[2 * k + 1].key, UB);
    }
    assert_string_equal(rows[n - 2].event, "operation.succeeded");
    assert_string_equal(rows[n - 2].key, UA);
    assert_string_equal(rows[n - 1].event, "command.rejected");
    assert_string_equal(rows[n - 1].key, HOST); /* no instance: the host's key */
    for (size_t i = 0; i < n; i++) {
        assert_true(uuid_is_valid(rows[i].event_id));
        for (size_t k = 0; k < i; k++)
            assert_string_not_equal(rows[i].event_id, rows[k].event_id);
    }

    /* started: the first readback (new store: nothing to read), then sent */
    events_start_ok(&t);
    assert_true(run_until(&t, bus_up, DEADLINE_MS));
    assert_true(run_until(&t, outbox_empty, DEADLINE_MS));
    bj = events_bus_json(t.events);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(bj, "outbox"), "pending")), 0);
    json_decref(bj);

    topic_read(bus_bootstrap_servers(events_bus(t.events)), "compute.events", &tp);
    assert_int_equal(tp.n, n);
    for (size_t i = 0; i < n; i++) {
        size_t at = 0;

        /* each row once, with its key, its payload as written */
        assert_int_equal(topic_count(&tp, rows[i].event_id, &at), 1);
        assert_string_equal(tp.m[at].key, rows[i].key);
        assert_string_equal(tp.m[at].payload, rows[i].payload);
        /* in outbox order within a key (one key, one partition) */
        for (int k = 0; k < 2; k++)
            if (!strcmp(rows[i].key, k ? UB : UA)) {
                if (part[k] >= 0)
                    assert_int_equal(tp.m[at].partition, part[k]);
                assert_true(tp.m[at].offset > prev[k]);
                part[k] = tp.m[at].partition;
                prev[k] = tp.m[at].offset;
            }
    }
    /* the deletes recorded where the next readback starts */
    expect_read_from_at_ends(&t, &tp);
    topic_release(&tp);
    rows_free(rows, n);

    /* an event recorded while running goes at once, after the others */
    record_instance(&t, UA, EA, "stopping");
    assert_true(run_until(&t, outbox_empty, DEADLINE_MS));
    topic_read(bus_bootstrap_servers(events_bus(t.events)), "compute.events", &tp);
    assert_int_equal(tp.n, n + 1);
    expect_read_from_at_ends(&t, &tp);
    topic_release(&tp);
    fixture_free(&t);
}

/* Killed between Kafka's acknowledgement and the delete: the rows are back
 * and read_from is where it was. The next start reads the topic back and
 * sends only the row the topic lacks. */
static void test_restart_sends_once(void **state)
{
    struct t t;
    struct row rows[8];
    struct topic tp;
    char *before = NULL;
    sqlite3_stmt *ins;
    size_t n;

    (void)state;
    fixture(&t, true);
    events_make(&t, 3600);
    events_start_ok(&t);
    assert_true(run_until(&t, bus_up, DEADLINE_MS));
    /* the first readback (new store) records the empty topic's ends */
    assert_true(run_until(&t, read_from_recorded, DEADLINE_MS));
    assert_int_equal(store_meta_get(t.store, "events.read_from", &before), 0);
    events_end(&t);

    /* three events: the ones a crashed run will have sent */
    events_make(&t, 3600);
    record_instance(&t, UA, EA, "pending");
    record_instance(&t, UA, EA, "running");
    record_instance(&t, UB, EB, "pending");
    n = outbox_rows(&t, rows, ARRAY_SIZE(rows));
    assert_int_equal(n, 3);
    events_start_ok(&t);
    assert_true(run_until(&t, outbox_empty, DEADLINE_MS));
    events_end(&t);

    /* the crash: rows 0 and 2 back (Kafka has them), read_from as before the
     * delete; and one new row Kafka never saw */
    assert_int_equal(store_meta_set(t.store, "events.read_from", before), 0);
    free(before);
    assert_int_equal(sqlite3_prepare_v2(store_db(t.store),
                                        "INSERT INTO outbox (key, payload, created_ms) VALUES (?1, ?2, 0)", -1,
                                        &ins, NULL),
                     SQLITE_OK);
    for (size_t i = 0; i < n; i += 2) {
        sqlite3_bind_text(ins, 1, rows[i].key, -1, SQLITE_STATIC);
        sqlite3_bind_text(ins, 2, rows[i].payload, -1, SQLITE_STATIC);
        assert_int_equal(sqlite3_step(ins), SQLITE_DONE);
        sqlite3_reset(ins);
    }
    sqlite3_finalize(ins);
    events_make(&t, 3600);
    record_instance(&t, UB, EB, "running");
    assert_int_equal(outbox_count(&t), 3);

    events_start_ok(&t);
    assert_true(run_until(&t, outbox_empty, DEADLINE_MS));
    topic_read(t.brokers, "compute.events", &tp);
    assert_int_equal(tp.n, 4); /* 3 + the new one, no repeat */
    for (size_t i = 0; i < n; i++)
        assert_int_equal(topic_count(&tp, rows[i].event_id, NULL), 1);
    expect_read_from_at_ends(&t, &tp);
    topic_release(&tp);
    rows_free(rows, n);
    fixture_free(&t);
}

/* Heartbeats, once the host is ready, with the host's state. */
static void test_heartbeat(void **state)
{
    struct t t;
    struct topic tp;
    struct agent_error err = {0};
    bool disabled_seen = false, heartbeat_seen = false;
    uint64_t deadline;

    (void)state;
    fixture(&t, false);
    events_make(&t, 1);
    events_start_ok(&t);
    assert_true(run_until(&t, bus_up, DEADLINE_MS));
    assert_true(run_until(&t, outbox_empty, DEADLINE_MS));
    host_set_ready(t.host);
    assert_int_equal(host_set_disabled(t.host, true, &err), 0);
    deadline = now_mono_ns() + (uint64_t)DEADLINE_MS * 1000000u;
    while (!disabled_seen) {
        struct bus_stats s;

        assert_true(now_mono_ns() < deadline);
        uv_run(&t.loop, UV_RUN_ONCE);
        bus_stats(events_bus(t.events), &s);
        if (s.heartbeat.delivered == 0)
            continue;
        topic_read(bus_bootstrap_servers(events_bus(t.events)), "compute.heartbeat", &tp);
        for (size_t i = 0; i < tp.n; i++) {
            json_t *j = json_loads(tp.m[i].payload, 0, NULL);

            assert_non_null(j);
            assert_string_equal(tp.m[i].key, HOST);
            assert_string_equal(json_string_value(json_object_get(j, "host")), HOST);
            assert_string_equal(json_string_value(json_object_get(j, "hypervisor")), "test");
            assert_string_equal(json_string_value(json_object_get(j, "domain_type")), "test");
            assert_true(json_is_true(json_object_get(j, "libvirt_connected")));
            assert_non_null(json_string_value(json_object_get(j, "timestamp")));
            disabled_seen = !strcmp(json_string_value(json_object_get(j, "state")), "disabled");
            heartbeat_seen = true;
            json_decref(j);
        }
        topic_release(&tp);
    }
    assert_true(heartbeat_seen);
    fixture_free(&t);
}

/* ---- the window GET /v1/events serves (no bus: rows stay in the outbox) ---- */

static void events_make_window(struct t *t, int64_t n, int64_t bytes)
{
    struct events_deps ed = {.store = t->store, .hv = t->hv, .res = t->res, .host = t->host,
                             .metrics = t->metrics};
    struct events_config ec = {.host_name = HOST, .hypervisor = "test", .bus_brokers = "", .bus_prefix = "",
                               .heartbeat_s = 5, .bus_properties = "", .window_events = n,
                               .window_bytes = bytes};

    assert_int_equal(events_new(&t->loop, &ed, &ec, NULL, NULL, &t->events), 0);
}

static int64_t watched_last;
static int watched_calls;

static void on_watch(void *opaque, int64_t last)
{
    (void)opaque;
    watched_last = last;
    watched_calls++;
}

/* The page for (after, instance, type, limit 100); its seqs into seqs[]. */
static json_t *window_page(struct t *t, int64_t after, const char *inst, const char *type, int64_t *seqs,
                           size_t *n)
{
    struct events_query q = {.after = after, .instance = inst, .type = type, .limit = 100};
    json_t *page = NULL, *e;
    size_t i;
    int r = events_window_read(t->events, &q, &page);

    assert_true(r >= 0);
    assert_int_equal(json_array_size(json_object_get(page, "events")), (size_t)r);
    json_array_foreach(json_object_get(page, "events"), i, e)
        seqs[i] = json_integer_value(json_object_get(e, "seq"));
    *n = (size_t)r;
    return page;
}

static int64_t jint(const json_t *o, const char *k)
{
    return json_integer_value(json_object_get(o, k));
}

/* Seq = outbox id, a window of 3 newest, truncated for a reader behind
 * it, filters, -ERANGE past the last, the watcher told after commits,
 * a rolled-back event never seen, seqs going on after a restart, and the
 * bytes bound. */
static void test_window(void **state)
{
    struct t t;
    int64_t seqs[100], last;
    size_t n;
    json_t *p;
    struct events_query q = {.after = 1000, .limit = 10};
    struct instance i;

    (void)state;
    fixture(&t, false);
    events_make_window(&t, 3, 1 << 20);
    events_watch(t.events, on_watch, NULL);
    record_instance(&t, UA, EA, "pending");
    assert_int_equal(watched_calls, 1);
    assert_int_equal(watched_last, 1);
    record_instance(&t, UB, EB, "pending");
    record_instance(&t, UA, EA, "running");
    record_instance(&t, UB, EB, "running");
    record_instance(&t, UA, EA, "stopped");
    assert_int_equal(watched_calls, 5);
    assert_int_equal(events_last_seq(t.events), 5);
    /* rolled back: neither in the window nor told */
    make_instance(&i, UA, EA, "terminated");
    assert_int_equal(store_begin(t.store), 0);
    assert_int_equal(events_instance(t.events, &i, NULL), 0);
    store_rollback(t.store);
    events_flush(t.events);
    assert_int_equal(watched_calls, 5);
    assert_int_equal(events_last_seq(t.events), 5);

    p = window_page(&t, -1, NULL, NULL, seqs, &n);
    assert_int_equal(n, 3);
    assert_int_equal(seqs[0], 3);
    assert_int_equal(seqs[2], 5);
    assert_false(json_is_true(json_object_get(p, "truncated")));
    assert_int_equal(jint(p, "first_seq"), 3);
    assert_int_equal(jint(p, "last_seq"), 5);
    assert_int_equal(jint(p, "next_after"), 5);
    assert_string_equal(json_string_value(json_object_get(json_object_get(json_array_get(json_object_get(p, "events"), 2),
                                                                          "message"), "event")),
                        "instance.stopped");
    json_decref(p);
    p = window_page(&t, 1, NULL, NULL, seqs, &n);
    assert_true(json_is_true(json_object_get(p, "truncated")));
    assert_int_equal(n, 3);
    json_decref(p);
    p = window_page(&t, 2, NULL, NULL, seqs, &n);
    assert_false(json_is_true(json_object_get(p, "truncated")));
    json_decref(p);
    p = window_page(&t, 5, NULL, NULL, seqs, &n);
    assert_int_equal(n, 0);
    assert_int_equal(jint(p, "next_after"), 5);
    json_decref(p);
    p = window_page(&t, -1, UA, NULL, seqs, &n);
    assert_int_equal(n, 2);
    assert_int_equal(seqs[0], 3);
    assert_int_equal(seqs[1], 5);
    assert_int_equal(jint(p, "next_after"), 5);
    json_decref(p);
    p = window_page(&t, -1, EB, NULL, seqs, &n);
    assert_int_equal(n, 1);
    assert_int_equal(seqs[0], 4);
    json_decref(p);
    p = window_page(&t, -1, NULL, "instance.run*", seqs, &n);
    assert_int_equal(n, 2);
    json_decref(p);
    assert_int_equal(events_window_read(t.events, &q, &p), -ERANGE);
    q.after = 2;
    q.limit = 1;
    assert_int_equal(events_window_read(t.events, &q, &p), 1);
    assert_int_equal(jint(p, "next_after"), 3);
    json_decref(p);

    /* a restart: the window and the seqs go on */
    events_watch(t.events, NULL, NULL);
    events_free(t.events);
    events_make_window(&t, 3, 1 << 20);
    assert_int_equal(events_last_seq(t.events), 5);
    record_instance(&t, UB, EB, "stopped");
    p = window_page(&t, -1, NULL, NULL, seqs, &n);
    assert_int_equal(n, 3);
    assert_int_equal(seqs[2], 6);
    json_decref(p);
    events_free(t.events);

    /* the bytes bound: about two and a half events' worth keeps two */
    {
        sqlite3_stmt *st;
        int64_t len = 0;
        assert_int_equal(sqlite3_prepare_v2(store_db(t.store), "SELECT max(length(payload)) FROM event_log", -1,
                                            &st, NULL), SQLITE_OK);
        assert_int_equal(sqlite3_step(st), SQLITE_ROW);
        len = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
        events_make_window(&t, 100, len * 5 / 2);
        /* it shrank: trimmed at the start */
        p = window_page(&t, -1, NULL, NULL, seqs, &n);
        assert_int_equal(n, 2);
        json_decref(p);
        for (int k = 0; k < 4; k++)
            record_instance(&t, UA, EA, "running");
        p = window_page(&t, -1, NULL, NULL, seqs, &n);
        last = jint(p, "last_seq");
        assert_int_equal(last, 10);
        assert_int_equal(n, 2);
        assert_int_equal(seqs[1], 10);
        json_decref(p);
    }
    fixture_free(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_outbox_send_in_order),
        cmocka_unit_test(test_restart_sends_once),
        cmocka_unit_test(test_heartbeat),
        cmocka_unit_test(test_window),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
