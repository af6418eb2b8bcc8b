/* test_ops.c: the operation engine and its types on libvirt's test driver
 * (test:///default, in this process): the journal (rows, steps, outbox
 * events), a resume after a simulated crash, a terminate superseding a stop
 * that waits for the guest, a run parked on a lost connection and resumed
 * by the next reconcile, a journal write that fails (the run parks at its
 * last recorded step and acts no further), and a launch's rollback.
 *
 * Each test has its own loop, in-memory store and engine; every wait runs
 * the loop with a deadline; every test closes every handle and checks
 * uv_loop_close() == 0. Drivers with one entry changed (a guest that ignores
 * a graceful stop, a connection that drops, a define that fails) are copies
 * of the test driver's table. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>
#include <uv.h>

#include "agent/config.h"
#include "agent/events.h"
#include "agent/host.h"
#include "agent/metrics.h"
#include "agent/ops.h"
#include "agent/ops/ops-internal.h"
#include "agent/resources.h"

#define DEADLINE_MS 10000

struct t {
    uv_loop_t loop;
    struct agent_config cfg;
    struct store *store;
    struct host *host;
    struct hv *hv;
    struct resources *res;
    struct events *events;
    struct metrics *metrics;
    struct ops *ops;
    struct hv_driver drv;     /* the test driver, maybe with one entry changed */
    char dir[64];             /* local files (kernel, initrd) */
    char kernel[128], initrd[128];
    int finished;             /* operation_finished calls */
    char last_state[16];      /* the last finished operation's state */
    int lost;                 /* hv_lost calls */
    int reconciled;           /* reconcile results seen */
    int reconcile_result;
};

/* ---- drivers with one entry changed ---- */

static int ignore_shutdown(struct hv *hv, const char *uuid, unsigned flags, struct agent_error *err)
{
    (void)hv, (void)uuid, (void)flags, (void)err;
    return 0; /* the guest ignores the power button */
}

static int start_fails_once_left = 0;

static int start_drops_connection(struct hv *hv, const char *uuid, unsigned flags, struct agent_error *err)
{
    if (start_fails_once_left > 0) {
        start_fails_once_left--;
        return agent_error_set(err, ENOTCONN, "unavailable", NULL, "connection lost (test)");
    }
    return hv_driver_test.start(hv, uuid, flags, err);
}

static int define_fails(struct hv *hv, const char *xml, unsigned flags, struct agent_error *err)
{
    (void)hv, (void)xml, (void)flags;
    return agent_error_set(err, EINVAL, "hypervisor_error", NULL, "define refused (test)");
}

/* ---- fixture ---- */

static void on_finished(void *opaque, const struct op_record *rec, const struct instance *inst)
{
    struct t *t = opaque;

    (void)inst;
    t->finished++;
    strscpy(t->last_state, rec->state, sizeof(t->last_state));
}

static void on_lost(void *opaque)
{
    ((struct t *)opaque)->lost++;
}

static void on_hv_event(const struct hv_event *ev, void *opaque)
{
    struct t *t = opaque;

    if (t->ops)
        ops_on_hv_event(t->ops, ev);
}

static void on_reconciled(void *opaque, int result)
{
    struct t *t = opaque;

    t->reconciled++;
    t->reconcile_result = result;
}

static void on_deadline(uv_timer_t *timer)
{
    *(bool *)timer->data = true;
}

/* Run the loop until pred(t) holds, or the deadline (false). */
static bool wait_until(struct t *t, bool (*pred)(struct t *t, const void *arg), const void *arg)
{
    uv_timer_t timer;
    bool expired = false, ok;

    uv_timer_init(&t->loop, &timer);
    timer.data = &expired;
    uv_timer_start(&timer, on_deadline, DEADLINE_MS, 0);
    while (!(ok = pred(t, arg)) && !expired)
        uv_run(&t->loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&timer, NULL);
    uv_run(&t->loop, UV_RUN_NOWAIT);
    return ok;
}

struct count_arg {
    const int *counter;
    int want;
};

static bool count_reached(struct t *t, const void *arg)
{
    const struct count_arg *c = arg;

    (void)t;
    return *c->counter >= c->want;
}

static bool wait_count(struct t *t, const int *counter, int want)
{
    struct count_arg c = {counter, want};

    return wait_until(t, count_reached, &c);
}

/* The one run in flight is parked (a lost connection, a refused write). */
static bool run_parked(struct t *t, const void *arg)
{
    (void)arg;
    return t->ops->runs && t->ops->runs->parked && !t->ops->runs->job_running;
}

/* The one run in flight waits for a guest's event, no job holds it. */
static bool run_waits(struct t *t, const void *arg)
{
    (void)arg;
    return t->ops->runs && t->ops->runs->wait != WAIT_NONE && !t->ops->runs->job_running;
}

static void engine_new(struct t *t)
{
    struct ops_deps d = {.store = t->store, .hv = t->hv, .host = t->host, .res = t->res,
                         .events = t->events, .metrics = t->metrics};
    struct ops_config oc = {.instances_dir = t->dir, .local_image_dirs = t->dir, .stop_timeout_s = 60,
                            .reboot_timeout_s = 60};
    struct ops_hooks h = {.operation_finished = on_finished, .hv_lost = on_lost};

    assert_int_equal(ops_new(&t->loop, &d, &oc, &h, t, &t->ops), 0);
}

static void reconcile(struct t *t)
{
    int before = t->reconciled;

    assert_int_equal(ops_reconcile(t->ops, on_reconciled, t), 0);
    assert_true(wait_count(t, &t->reconciled, before + 1));
    assert_int_equal(t->reconcile_result, 0);
}

static struct t *fixture(const struct hv_driver *drv)
{
    struct t *t = calloc(1, sizeof(*t));
    struct hv_config hvc = {.uri = "test:///default", .host_name = "unit-ops"};
    struct events_deps ed;
    struct events_config ec = {.host_name = "unit-ops", .hypervisor = "test", .bus_brokers = "",
                               .bus_prefix = "", .bus_properties = "", .heartbeat_s = 10};
    struct agent_error err = {0};
    struct hv_host_info info = {0};
    FILE *f;

    assert_non_null(t);
    t->drv = drv ? *drv : hv_driver_test;
    assert_int_equal(uv_loop_init(&t->loop), 0);
    config_init_defaults(&t->cfg);
    snprintf(t->dir, sizeof(t->dir), "/tmp/ca-unit-ops-XXXXXX");
    assert_non_null(mkdtemp(t->dir));
    snprintf(t->kernel, sizeof(t->kernel), "%s/vmlinuz", t->dir);
    snprintf(t->initrd, sizeof(t->initrd), "%s/initrd.gz", t->dir);
    assert_non_null(f = fopen(t->kernel, "w"));
    fclose(f);
    assert_non_null(f = fopen(t->initrd, "w"));
    fclose(f);
    assert_int_equal(store_open(":memory:", false, &t->store, &err), 0);
    assert_int_equal(host_new(t->store, &t->host), 0);
    host_set_ready(t->host);
    assert_int_equal(metrics_new(&t->metrics), 0);
    assert_int_equal(hv_new(&t->loop, &t->drv, &hvc, on_hv_event, t, &t->hv), 0);
    assert_int_equal(hv_connect(t->hv, &err), 0);
    assert_int_equal(resources_new(&t->cfg, &t->res), 0);
    assert_int_equal(hv_host_info(t->hv, &info, &err), 0);
    resources_set_host(t->res, &info, 100);
    hv_host_info_release(&info);
    ed = (struct events_deps){.store = t->store, .hv = t->hv, .res = t->res, .host = t->host,
                              .metrics = t->metrics};
    assert_int_equal(events_new(&t->loop, &ed, &ec, NULL, NULL, &t->events), 0);
    engine_new(t);
    reconcile(t);
    return t;
}

static void fixture_free(struct t *t)
{
    char path[160];

    ops_free(t->ops);
    t->ops = NULL;
    uv_run(&t->loop, UV_RUN_NOWAIT);
    hv_free(t->hv);
    uv_run(&t->loop, UV_RUN_DEFAULT);
    events_free(t->events);
    resources_free(t->res);
    metrics_free(t->metrics);
    host_free(t->host);
    store_free(t->store);
    config_release(&t->cfg);
    assert_int_equal(uv_loop_close(&t->loop), 0);
    unlink(t->kernel);
    unlink(t->initrd);
    snprintf(path, sizeof(path), "%s", t->dir);
    rmdir(path);
    free(t);
}

/* ---- helpers ---- */

static void launch(struct t *t, char *iid, char *op_id)
{
    struct launch_spec spec = {0};
    struct agent_error err = {0};
    json_t *answer = NULL;

    spec.name = "unit";
    spec.flavor = (struct flavor){.vcpus = 1, .memory_mb = 64, .disk_gb = 0};
    spec.boot.kind = BOOT_KERNEL;
    spec.boot.kernel = t->kernel;
    spec.boot.initrd = t->initrd;
    assert_int_equal(ops_launch(t->ops, &spec, &answer, &err), 202);
    strscpy(iid, json_string_value(json_object_get(json_object_get(answer, "instance"), "id")), 37);
    strscpy(op_id, json_string_value(json_object_get(json_object_get(answer, "operation"), "id")), 37);
    json_decref(answer);
}

static int action(struct t *t, const char *iid, const char *what, bool force, char *op_id, struct agent_error *err)
{
    struct action_opts opts = {.timeout_s = -1, .force = force};
    json_t *answer = NULL;
    int rc = ops_action(t->ops, iid, what, &opts, &answer, err);

    if (rc == 202 && op_id)
        strscpy(op_id, json_string_value(json_object_get(json_object_get(answer, "operation"), "id")), 37);
    json_decref(answer);
    return rc;
}

static void expect_op(struct t *t, const char *op_id, const char *state, const char *step)
{
    struct op_record rec;

    assert_int_equal(store_op_get(t->store, op_id, &rec), 0);
    assert_string_equal(rec.state, state);
    if (step)
        assert_string_equal(rec.step, step);
    op_record_release(&rec);
}

static void expect_instance(struct t *t, const char *iid, const char *state)
{
    struct instance inst;

    assert_int_equal(store_instance_get(t->store, iid, &inst), 0);
    assert_string_equal(inst.state, state);
    instance_release(&inst);
}

static int64_t outbox_count(struct t *t, const char *event)
{
    sqlite3_stmt *st;
    int64_t n = -1;
    char like[80];

    snprintf(like, sizeof(like), "%%\"event\":\"%s\"%%", event);
    assert_int_equal(sqlite3_prepare_v2(store_db(t->store), "SELECT COUNT(*) FROM outbox WHERE payload LIKE ?1",
                                        -1, &st, NULL),
                     SQLITE_OK);
    sqlite3_bind_text(st, 1, like, -1, SQLITE_TRANSIENT);
    if (sqlite3_step(st) == SQLITE_ROW)
        n = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return n;
}

static enum hv_power power_of(struct t *t, const char *iid)
{
    struct agent_error err;
    enum hv_power p = HV_POWER_NOSTATE;

    assert_int_equal(hv_power(t->hv, iid, &p, &err), 0);
    return p;
}

/* ---- tests ---- */

/* Launch, stop, start, reboot, terminate: each journaled, each with its events. */
static void test_journal(void **state)
{
    struct t *t = fixture(NULL);
    char iid[37], op[37];
    struct agent_error err = {0};

    (void)state;
    launch(t, iid, op);
    assert_true(wait_count(t, &t->finished, 1));
    assert_string_equal(t->last_state, "succeeded");
    expect_op(t, op, "succeeded", "started");
    expect_instance(t, iid, "running");
    assert_int_equal(power_of(t, iid), HV_POWER_RUNNING);
    assert_int_equal(outbox_count(t, "instance.pending"), 1);
    assert_int_equal(outbox_count(t, "instance.running"), 1);
    assert_int_equal(outbox_count(t, "operation.succeeded"), 1);

    assert_int_equal(action(t, iid, "stop", false, op, &err), 202);
    assert_true(wait_count(t, &t->finished, 2));
    expect_op(t, op, "succeeded", "requested");
    expect_instance(t, iid, "stopped");
    assert_int_equal(action(t, iid, "stop", false, NULL, &err), -EINVAL);
    assert_string_equal(err.code, "conflict");

    assert_int_equal(action(t, iid, "start", false, op, &err), 202);
    assert_true(wait_count(t, &t->finished, 3));
    expect_instance(t, iid, "running");
    assert_int_equal(action(t, iid, "reboot", false, op, &err), 202);
    assert_true(wait_count(t, &t->finished, 4));
    expect_instance(t, iid, "running");

    assert_int_equal(action(t, iid, "terminate", false, op, &err), 202);
    assert_true(wait_count(t, &t->finished, 5));
    expect_op(t, op, "succeeded", "undefined");
    expect_instance(t, iid, "terminated");
    assert_int_equal(outbox_count(t, "operation.succeeded"), 5);
    assert_int_equal(ops_in_flight(t->ops), 0);
    fixture_free(t);
}

/* A crash right after a stop was accepted: the row says stop:requested and
 * the instance "stopping". The next engine's reconcile resumes it. */
static void test_resume_after_crash(void **state)
{
    struct t *t = fixture(NULL);
    char iid[37], op[37];
    struct op_record rec = {0};
    struct instance inst;

    (void)state;
    launch(t, iid, op);
    assert_true(wait_count(t, &t->finished, 1));
    ops_free(t->ops);
    t->ops = NULL;

    uuid_generate_str(rec.id);
    strscpy(rec.type, "stop", sizeof(rec.type));
    strscpy(rec.instance_uuid, iid, sizeof(rec.instance_uuid));
    strscpy(rec.state, "running", sizeof(rec.state));
    strscpy(rec.step, "requested", sizeof(rec.step));
    rec.created_ms = rec.updated_ms = now_wall_ms();
    assert_int_equal(store_op_insert(t->store, &rec), 0);
    assert_int_equal(store_instance_get(t->store, iid, &inst), 0);
    strscpy(inst.state, "stopping", sizeof(inst.state));
    strscpy(inst.task_state, "stopping", sizeof(inst.task_state));
    assert_int_equal(store_instance_update(t->store, &inst), 0);
    instance_release(&inst);

    engine_new(t);
    reconcile(t);
    assert_true(wait_count(t, &t->finished, 2));
    expect_op(t, rec.id, "succeeded", "requested");
    expect_instance(t, iid, "stopped");
    assert_int_equal(power_of(t, iid), HV_POWER_SHUTOFF);
    fixture_free(t);
}

/* A graceful stop the guest ignores waits for the event; a terminate
 * supersedes it (failed: superseded) and runs. */
static void test_supersede(void **state)
{
    struct hv_driver drv = hv_driver_test;
    struct t *t;
    char iid[37], op[37], stop_op[37];
    struct agent_error err = {0};
    struct op_record rec;

    (void)state;
    drv.shutdown = ignore_shutdown;
    t = fixture(&drv);
    launch(t, iid, op);
    assert_true(wait_count(t, &t->finished, 1));
    assert_int_equal(action(t, iid, "stop", false, stop_op, &err), 202);
    /* the shutdown job returned; the stop waits for the guest's event */
    assert_true(wait_until(t, run_waits, NULL));
    assert_int_equal(action(t, iid, "terminate", false, op, &err), 202);
    assert_true(wait_count(t, &t->finished, 3));
    assert_int_equal(store_op_get(t->store, stop_op, &rec), 0);
    assert_string_equal(rec.state, "failed");
    assert_string_equal(rec.error_code, "superseded");
    op_record_release(&rec);
    expect_op(t, op, "succeeded", "undefined");
    expect_instance(t, iid, "terminated");
    fixture_free(t);
}

/* The connection drops under a launch's start: the run parks (no result),
 * and the reconcile after the reconnect resumes it to the end. */
static void test_park_on_lost_connection(void **state)
{
    struct hv_driver drv = hv_driver_test;
    struct t *t;
    char iid[37], op[37];

    (void)state;
    drv.start = start_drops_connection;
    t = fixture(&drv);
    start_fails_once_left = 1;
    launch(t, iid, op);
    /* parked: still in flight, the row at its last step, no result */
    assert_true(wait_until(t, run_parked, NULL));
    assert_int_equal(start_fails_once_left, 0);
    assert_int_equal(t->finished, 0);
    assert_int_equal(ops_in_flight(t->ops), 1);
    expect_op(t, op, "running", "defined");
    reconcile(t);
    assert_true(wait_count(t, &t->finished, 1));
    expect_op(t, op, "succeeded", "started");
    expect_instance(t, iid, "running");
    fixture_free(t);
}

/* The store refuses the "defined" step: the run parks at "claimed" and does
 * not start the domain; once the store takes writes, the next reconcile
 * resumes it (define again: idempotent) to the end. */
static void test_journal_failure_parks(void **state)
{
    struct t *t = fixture(NULL);
    char iid[37], op[37];
    sqlite3 *db = store_db(t->store);

    (void)state;
    assert_int_equal(sqlite3_exec(db,
                                  "CREATE TRIGGER refuse_defined BEFORE UPDATE ON operations "
                                  "WHEN NEW.step = 'defined' BEGIN SELECT RAISE(ABORT, 'refused (test)'); END",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    launch(t, iid, op);
    assert_true(wait_until(t, run_parked, NULL));
    assert_int_equal(t->finished, 0);
    assert_int_equal(ops_in_flight(t->ops), 1);
    expect_op(t, op, "running", "claimed");
    assert_int_equal(power_of(t, iid), HV_POWER_SHUTOFF); /* defined, never started */
    assert_int_equal(sqlite3_exec(db, "DROP TRIGGER refuse_defined", NULL, NULL, NULL), SQLITE_OK);
    reconcile(t);
    assert_true(wait_count(t, &t->finished, 1));
    expect_op(t, op, "succeeded", "started");
    expect_instance(t, iid, "running");
    fixture_free(t);
}

/* A define that fails rolls the launch back: failed, the instance in error
 * with the reason as its fault, no domain left. */
static void test_rollback(void **state)
{
    struct hv_driver drv = hv_driver_test;
    struct t *t;
    char iid[37], op[37];
    struct instance inst;
    struct op_record rec;
    enum hv_power p;
    struct agent_error err;

    (void)state;
    drv.define = define_fails;
    t = fixture(&drv);
    launch(t, iid, op);
    assert_true(wait_count(t, &t->finished, 1));
    assert_string_equal(t->last_state, "failed");
    assert_int_equal(store_op_get(t->store, op, &rec), 0);
    assert_string_equal(rec.state, "failed");
    assert_string_equal(rec.error_code, "hypervisor_error");
    op_record_release(&rec);
    assert_int_equal(store_instance_get(t->store, iid, &inst), 0);
    assert_string_equal(inst.state, "error");
    assert_non_null(inst.fault);
    assert_non_null(strstr(inst.fault, "define refused"));
    instance_release(&inst);
    assert_int_equal(hv_power(t->hv, iid, &p, &err), -ENOENT);
    assert_int_equal(outbox_count(t, "operation.failed"), 1);
    fixture_free(t);
}

/* ops_reconcile either fails at once or calls back once. */
static void test_reconcile_contract(void **state)
{
    struct t *t = fixture(NULL);
    int before = t->reconciled;

    (void)state;
    assert_int_equal(ops_reconcile(t->ops, on_reconciled, t), 0);
    assert_int_equal(ops_reconcile(t->ops, on_reconciled, t), -EBUSY);
    assert_true(wait_count(t, &t->reconciled, before + 1));
    ops_stop(t->ops);
    assert_int_equal(ops_reconcile(t->ops, on_reconciled, t), -ECANCELED);
    uv_run(&t->loop, UV_RUN_NOWAIT);
    assert_int_equal(t->reconciled, before + 1);
    fixture_free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_journal),
        cmocka_unit_test(test_resume_after_crash),
        cmocka_unit_test(test_supersede),
        cmocka_unit_test(test_park_on_lost_connection),
        cmocka_unit_test(test_journal_failure_parks),
        cmocka_unit_test(test_rollback),
        cmocka_unit_test(test_reconcile_contract),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
