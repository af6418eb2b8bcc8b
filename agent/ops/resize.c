/* resize.c: resize, confirm_resize and revert_resize (issue 12;
 * ops-internal.h).
 *
 *   resize, live:  requested -> applied -> (the guest reaches the size) -> succeeded
 *   resize, cold:  requested -> powered-off -> disk -> defined -> [started] -> "resized"
 *   confirm_resize: requested -> succeeded (the instance back to running/stopped)
 *   revert_resize:  requested -> powered-off -> defined -> [started] -> succeeded
 *   a failure:     rollback -> powered-off -> defined -> [started] -> failed
 *
 * What the store holds decides everything a resumed run does: when a
 * resize is accepted the instance row carries the new flavor and, in
 * struct resize_info, the old one (pending: both claimed, class by class
 * the larger, until the resize is settled). A revert and a rollback swap
 * the two (reverting: the target is the old flavor again) in the same row,
 * so the steps after powered-off are the same in both directions and each
 * is idempotent: a graceful shutdown of a domain that is off, a disk grown
 * to a size it has (imgcache_qcow2_grow never shrinks), a define by UUID
 * from the instance row, a start of a running domain. A kill -9 at any step
 * resumes at the last journaled one and ends in the old flavor or the new,
 * the domain defined from the row the store has.
 *
 * Live: vCPUs and memory set on the running domain and its definition at
 * once (HV_LIVE|HV_CONFIG, jobs.c: job_live), our metadata too; then the
 * domain's size is read (hv_get_size) until it matches the flavor or
 * hypervisor.resize_live_timeout passes. The vCPU figure is the
 * hypervisor's (QEMU's hot-plugged vCPUs; onlining them is the guest's
 * job), the memory figure what the guest took (virtio-mem's plugged size,
 * the balloon): a guest that did not take it all in time leaves the
 * operation succeeded with result.outcome "partial" and the figures seen.
 * The definition holds the new flavor either way (a reboot gives it whole),
 * the store too: they never disagree, and the claim is the new flavor's. */
#include <stdlib.h>
#include <string.h>

#include "agent/ops/ops-internal.h"
#include "agent/resources.h"

static const enum op_step resize_steps[] = {STEP_REQUESTED, STEP_APPLIED, STEP_POWERED_OFF, STEP_DISK,
                                            STEP_DEFINED,   STEP_STARTED, STEP_ROLLBACK,    STEP_NONE};
static const enum op_step confirm_steps[] = {STEP_REQUESTED, STEP_NONE};
static const enum op_step revert_steps[] = {STEP_REQUESTED, STEP_POWERED_OFF, STEP_DEFINED, STEP_STARTED,
                                            STEP_NONE};

#define POLL_MS 250

static bool is_live(const struct op_run *r)
{
    return r->type->kind == OP_RESIZE && !strcmp(r->inst.resize.mode, "live");
}

/* The target is the old flavor (a revert, a rollback). */
static bool backwards(const struct op_run *r)
{
    return r->type->kind == OP_REVERT_RESIZE || r->inst.resize.reverting;
}

static int64_t max64(int64_t a, int64_t b)
{
    return a > b ? a : b;
}

/* ---- the headroom a guest is defined with ---- */

void ops_headroom(const struct ops *o, const struct flavor *f, int64_t *max_vcpus, int64_t *max_memory_mb)
{
    bool cpu = hv_supports(o->d.hv, HV_FEAT_VCPU_HOTPLUG), mem = hv_supports(o->d.hv, HV_FEAT_MEM_HOTPLUG);
    int64_t host_cpus = 0, host_mem = 0, host_disk = 0;
    struct flavor ceil = {0};

    *max_vcpus = *max_memory_mb = 0;
    if (!o->cfg.live_resize || (!cpu && !mem))
        return;
    resources_totals(o->d.res, &host_cpus, &host_mem, &host_disk);
    /* auto: the largest instance type that fits the host (as Incus bounds
     * maxcpus by the host), each class on its own */
    if (o->cfg.catalog)
        catalog_ceiling(o->cfg.catalog, host_cpus, host_mem, &ceil);
    *max_vcpus = max64(f->vcpus, cpu ? (o->cfg.max_vcpus ? o->cfg.max_vcpus : ceil.vcpus) : 0);
    *max_memory_mb = max64(f->memory_mb, mem ? (o->cfg.max_memory_mb ? o->cfg.max_memory_mb : ceil.memory_mb) : 0);
}

/* ---- accepting a resize ---- */

/* Whether want can be reached live on inst now: "" or why not in why (with
 * the field it is about). */
static void live_check(const struct ops *o, const struct instance *in, const struct flavor *want, char *why,
                       size_t size, const char **field)
{
    const char *drv = hv_driver_name(o->d.hv);

    why[0] = '\0';
    *field = "mode";
    if (strcmp(in->state, "running") != 0) {
        snprintf(why, size, "the instance is %s: a live resize needs a running guest", in->state);
    } else if (want->disk_gb != in->flavor.disk_gb) {
        *field = "flavor.disk_gb";
        snprintf(why, size, "disk_gb: a disk grows only in a cold resize");
    } else if (want->vcpus != in->flavor.vcpus && !hv_supports(o->d.hv, HV_FEAT_VCPU_HOTPLUG)) {
        *field = "flavor.vcpus";
        snprintf(why, size, "vcpus: the %s driver cannot change vCPUs live", drv);
    } else if (want->vcpus < in->flavor.vcpus && !hv_supports(o->d.hv, HV_FEAT_VCPU_UNPLUG)) {
        /* QEMU 7.2 never completes a vCPU's unplug (hypervisor/kvm.c) */
        *field = "flavor.vcpus";
        snprintf(why, size, "vcpus: the %s driver cannot remove vCPUs live (a cold resize can)", drv);
    } else if (want->memory_mb != in->flavor.memory_mb && !hv_supports(o->d.hv, HV_FEAT_MEM_HOTPLUG)) {
        *field = "flavor.memory_mb";
        snprintf(why, size, "memory_mb: the %s driver cannot change memory live", drv);
    } else if (want->vcpus > max64(in->max_vcpus, in->flavor.vcpus)) {
        *field = "flavor.vcpus";
        snprintf(why, size, "vcpus: %lld exceeds the live ceiling %lld", (long long)want->vcpus,
                 (long long)max64(in->max_vcpus, in->flavor.vcpus));
    } else if (want->memory_mb != in->flavor.memory_mb && !in->max_memory_mb) {
        *field = "flavor.memory_mb";
        snprintf(why, size, "memory_mb: the domain was defined without memory hot-plug headroom");
    } else if (want->memory_mb > max64(in->max_memory_mb, in->flavor.memory_mb)) {
        *field = "flavor.memory_mb";
        snprintf(why, size, "memory_mb: %lld exceeds the live ceiling %lld", (long long)want->memory_mb,
                 (long long)max64(in->max_memory_mb, in->flavor.memory_mb));
    }
}

static int resize_prepare(struct op_run *r, const struct action_opts *opts, struct agent_error *err)
{
    struct ops *o = r->ops;
    struct instance *in = &r->inst;
    struct resize_info *rz = &in->resize;
    const char *fk = opts->instance_type ? "instance_type" : "flavor";
    const char *mode = opts->mode ? opts->mode : "auto", *why_field;
    struct flavor want, delta;
    char why[200], field[48];
    bool live;
    int rc;

    if (!opts->flavor)
        return agent_error_set(err, EINVAL, "missing_field", "flavor", "a resize needs 'flavor' or 'instance_type'");
    want = *opts->flavor;
    if (!strcmp(in->state, "resized"))
        return agent_error_set(err, EBUSY, "conflict", "action",
                               "instance '%s' has a resize waiting for confirm_resize or revert_resize", in->uuid);
    if (strcmp(in->state, "running") != 0 && strcmp(in->state, "stopped") != 0)
        return agent_error_set(err, EBUSY, "conflict", "action",
                               "cannot resize an instance that is %s (needs running or stopped)", in->state);
    if (want.disk_gb < 0)
        want.disk_gb = in->flavor.disk_gb;
    snprintf(field, sizeof(field), "%s%s", fk, opts->instance_type ? "" : ".disk_gb");
    if (want.disk_gb < in->flavor.disk_gb)
        return agent_error_set(err, EINVAL, "invalid_field", field,
                               "cannot shrink a disk: %lld GB is below the instance's %lld GB",
                               (long long)want.disk_gb, (long long)in->flavor.disk_gb);
    if (want.vcpus == in->flavor.vcpus && want.memory_mb == in->flavor.memory_mb &&
        want.disk_gb == in->flavor.disk_gb)
        return agent_error_set(err, EINVAL, "invalid_field", fk, "the instance already has this flavor");
    live_check(o, in, &want, why, sizeof(why), &why_field);
    if (!strcmp(mode, "live") && why[0])
        return agent_error_set(err, EBUSY, "conflict", why_field, "a live resize is not possible: %s", why);
    live = strcmp(mode, "cold") != 0 && !why[0];
    /* what grows must fit beside everything claimed (the old flavor stays
     * claimed until the resize is settled) */
    delta = (struct flavor){.vcpus = max64(0, want.vcpus - in->flavor.vcpus),
                            .memory_mb = max64(0, want.memory_mb - in->flavor.memory_mb),
                            .disk_gb = max64(0, want.disk_gb - in->flavor.disk_gb)};
    if ((delta.vcpus || delta.memory_mb || delta.disk_gb) &&
        (rc = resources_check(o->d.res, o->d.store, &delta, err)) < 0) {
        if (opts->instance_type && err)
            strscpy(err->field, "instance_type", sizeof(err->field));
        return rc;
    }
    char keep_migration[37];
    strscpy(keep_migration, rz->migration_uuid, sizeof(keep_migration));
    free(rz->old_instance_type);
    memset(rz, 0, sizeof(*rz));
    rz->pending = true;
    strscpy(rz->mode, live ? "live" : "cold", sizeof(rz->mode));
    rz->old_flavor = in->flavor;
    rz->old_instance_type = in->instance_type; /* moved */
    rz->power_on = !strcmp(in->state, "running");
    if (live)
        strscpy(rz->migration_uuid, keep_migration, sizeof(rz->migration_uuid));
    else
        uuid_generate_str(rz->migration_uuid); /* the old allocation's consumer */
    in->instance_type = opts->instance_type ? strdup(opts->instance_type) : NULL;
    in->flavor = want;
    /* a cold resize defines the domain again: with the headroom the new
     * flavor gets (one defined before live resize existed gets one now) */
    if (!live)
        ops_headroom(o, &want, &in->max_vcpus, &in->max_memory_mb);
    strscpy(in->task_state, live ? "resizing" : "resize_prep", sizeof(in->task_state));
    return 0;
}

/* Swap the two flavors: the target is the other one. */
static void swap_flavors(struct instance *in)
{
    struct resize_info *rz = &in->resize;
    struct flavor f = in->flavor;
    char *t = in->instance_type;

    in->flavor = rz->old_flavor;
    in->instance_type = rz->old_instance_type;
    rz->old_flavor = f;
    rz->old_instance_type = t;
}

static int revert_prepare(struct op_run *r, const struct action_opts *opts, struct agent_error *err)
{
    struct instance *in = &r->inst;

    (void)opts;
    (void)err;
    swap_flavors(in);
    in->resize.reverting = true;
    strscpy(in->task_state, "resize_reverting", sizeof(in->task_state));
    return 0;
}

static int confirm_prepare(struct op_run *r, const struct action_opts *opts, struct agent_error *err)
{
    (void)opts;
    (void)err;
    strscpy(r->inst.task_state, "resize_confirming", sizeof(r->inst.task_state));
    return 0;
}

/* ---- ends ---- */

static json_t *flavor_json(const struct flavor *f)
{
    return json_pack("{s:I, s:I, s:I}", "vcpus", (json_int_t)f->vcpus, "memory_mb", (json_int_t)f->memory_mb,
                     "disk_gb", (json_int_t)f->disk_gb);
}

static void set_result(struct op_run *r, json_t *res)
{
    json_decref(r->result);
    r->result = res;
}

/* Settled: only the flavor the instance has is claimed from now on. */
static void settle(struct op_run *r)
{
    r->inst.resize.pending = false;
    r->inst.resize.reverting = false;
    free(r->inst.resize.old_instance_type);
    r->inst.resize.old_instance_type = NULL;
}

static void finish_live(struct op_run *r, bool complete, const struct hv_size *seen)
{
    json_t *res = json_pack("{s:s, s:{s:I, s:I}}", "outcome", complete ? "complete" : "partial", "requested",
                            "vcpus", (json_int_t)r->inst.flavor.vcpus, "memory_mb",
                            (json_int_t)r->inst.flavor.memory_mb);

    json_object_set_new(res, "seen",
                        seen ? json_pack("{s:I, s:I}", "vcpus", (json_int_t)seen->vcpus, "memory_mb",
                                         (json_int_t)seen->memory_mib)
                             : json_null());
    if (!complete)
        json_object_set_new(res, "note", json_string("the guest did not take the whole change within "
                                                     "hypervisor.resize_live_timeout; the definition holds the "
                                                     "new flavor"));
    set_result(r, res);
    settle(r);
    if (!complete)
        ops_log(LOG_WARN, "live resize partial", r, NULL);
    ops_finish(r, "running", NULL);
}

/* A cold resize reached the new flavor: it waits for confirm or revert. */
static void finish_forward(struct op_run *r)
{
    json_t *res = json_pack("{s:s, s:o, s:o}", "outcome", "resized", "flavor", flavor_json(&r->inst.flavor),
                            "old_flavor", flavor_json(&r->inst.resize.old_flavor));

    set_result(r, res);
    r->inst.resize.resized_ms = now_wall_ms();
    strscpy(r->finish_task, "verify_resize", sizeof(r->finish_task));
    ops_finish(r, "resized", NULL);
}

/* A revert, or the rollback of a failed resize, has the old flavor back. */
static void finish_backward(struct op_run *r)
{
    const struct flavor *from = &r->inst.resize.old_flavor;
    const char *state = r->inst.resize.power_on ? "running" : "stopped";
    json_t *res = json_pack("{s:s, s:o}", "outcome", r->type->kind == OP_REVERT_RESIZE ? "reverted" : "rolled_back",
                            "flavor", flavor_json(&r->inst.flavor));
    struct agent_error generic;

    if (from->disk_gb > r->inst.flavor.disk_gb)
        json_object_set_new(res, "disk_note",
                            json_sprintf("the disk keeps its grown size (%lld GB): a disk is never shrunk",
                                         (long long)from->disk_gb));
    set_result(r, res);
    settle(r);
    if (r->type->kind == OP_REVERT_RESIZE) {
        ops_finish(r, state, NULL);
        return;
    }
    if (!r->fail.code[0]) /* resumed after a restart: the first error is gone */
        agent_error_set(&generic, EIO, "resize_failed", NULL, "the resize failed and was rolled back");
    ops_finish(r, state, r->fail.code[0] ? &r->fail : &generic);
}

/* A step failed. Going forward: roll back (the old flavor is the target
 * again, journaled as "rollback"); going back already: the domain's state
 * is not known, the instance is in error. */
static void resize_fail(struct op_run *r, const struct agent_error *e)
{
    if (backwards(r) || r->type->kind != OP_RESIZE) {
        ops_finish(r, "error", e);
        return;
    }
    ops_log(LOG_WARN, "resize failed: rolling back", r, e->message);
    r->fail = *e;
    swap_flavors(&r->inst);
    r->inst.resize.reverting = true;
    strscpy(r->inst.task_state, "resize_reverting", sizeof(r->inst.task_state));
    if (ops_journal_step(r, STEP_ROLLBACK) == 0)
        ops_run_advance(r);
}

/* ---- steps ---- */

static void power_off(struct op_run *r)
{
    if (r->force) {
        ops_queue_job(r, JOB_DESTROY);
        return;
    }
    /* JOB_SHUTDOWN reads the power first: an off domain returns at once */
    ops_start_wait(r, WAIT_STOPPED);
    ops_queue_job(r, JOB_SHUTDOWN);
}

static void powered_off(struct op_run *r)
{
    if (r->step == STEP_REQUESTED || r->step == STEP_ROLLBACK) {
        uv_timer_stop(&r->timer);
        r->wait = WAIT_NONE;
        if (ops_journal_step(r, STEP_POWERED_OFF) == 0)
            ops_run_advance(r);
    }
}

static void on_poll(uv_timer_t *t)
{
    struct op_run *r = t->data;

    if (!r->done && !r->job_running)
        ops_queue_job(r, JOB_SIZE);
}

static void resize_advance(struct op_run *r)
{
    switch (r->step) {
    case STEP_REQUESTED:
        if (r->type->kind == OP_CONFIRM_RESIZE) {
            ops_queue_job(r, JOB_POWER);
            return;
        }
        /* fall through */
    case STEP_ROLLBACK:
        if (is_live(r))
            ops_queue_job(r, JOB_LIVE); /* forward, or the old size back */
        else
            power_off(r);
        return;
    case STEP_APPLIED:
        r->live_deadline_ms = now_wall_ms() + r->ops->cfg.resize_live_timeout_s * 1000;
        ops_queue_job(r, JOB_SIZE);
        return;
    case STEP_POWERED_OFF:
        ops_queue_job(r, backwards(r) ? JOB_DEFINE : JOB_GROW);
        return;
    case STEP_DISK:
        ops_queue_job(r, JOB_DEFINE);
        return;
    case STEP_DEFINED:
        if (r->inst.resize.power_on) {
            ops_queue_job(r, JOB_START);
            return;
        }
        /* fall through */
    case STEP_STARTED:
        if (backwards(r))
            finish_backward(r);
        else
            finish_forward(r);
        return;
    default:
        ops_finish(r, NULL, NULL);
        return;
    }
}

static bool size_reached(const struct flavor *f, const struct hv_size *s)
{
    int64_t want = f->memory_mb, got = (int64_t)s->memory_mib, slack = want / 100 > 2 ? want / 100 : 2;

    return s->vcpus == (unsigned)f->vcpus && got >= want - slack && got <= want + slack;
}

static void step_done(struct op_run *r, enum op_step step)
{
    if (ops_journal_step(r, step) == 0)
        ops_run_advance(r);
}

static void resize_job_done(struct op_run *r, const struct job *j)
{
    switch (j->kind) {
    case JOB_POWER:
        if (j->result < 0) {
            resize_fail(r, &j->err);
        } else if (r->type->kind == OP_CONFIRM_RESIZE) {
            set_result(r, json_pack("{s:s}", "outcome", "confirmed"));
            settle(r);
            ops_finish(r, ops_state_of_power(j->power), NULL);
        } else if (j->power == HV_POWER_SHUTOFF) {
            powered_off(r);
        } else {
            struct agent_error e;
            agent_error_set(&e, EIO, "internal", NULL, "the domain did not power off (%s)", hv_power_name(j->power));
            resize_fail(r, &e);
        }
        return;
    case JOB_SHUTDOWN:
        if (j->result < 0) {
            ops_log(LOG_WARN, "graceful stop refused: forcing", r, j->err.message);
            uv_timer_stop(&r->timer);
            r->wait = WAIT_NONE;
            ops_queue_job(r, JOB_DESTROY);
        } else if (j->power == HV_POWER_SHUTOFF) {
            powered_off(r);
        } else if (r->wait == WAIT_NONE && !uv_is_active((uv_handle_t *)&r->timer)) {
            ops_start_wait(r, WAIT_STOPPED);
        }
        return;
    case JOB_DESTROY:
        /* off already (it stopped between): the power says */
        if (j->result < 0)
            ops_queue_job(r, JOB_POWER);
        else
            powered_off(r);
        return;
    case JOB_LIVE:
        if (j->result < 0) {
            resize_fail(r, &j->err);
        } else if (backwards(r)) {
            finish_backward(r);
        } else {
            step_done(r, STEP_APPLIED);
        }
        return;
    case JOB_SIZE:
        if (j->result == -ENOTSUP) {
            finish_live(r, true, NULL); /* the driver cannot say: the calls succeeded */
        } else if (j->result == 0 && size_reached(&r->inst.flavor, &j->size)) {
            finish_live(r, true, &j->size);
        } else if (now_wall_ms() >= r->live_deadline_ms) {
            finish_live(r, false, j->result == 0 ? &j->size : NULL);
        } else {
            uv_timer_start(&r->poll, on_poll, POLL_MS, 0);
        }
        return;
    case JOB_GROW:
        if (j->result < 0)
            resize_fail(r, &j->err);
        else
            step_done(r, STEP_DISK);
        return;
    case JOB_DEFINE:
        if (j->result < 0)
            resize_fail(r, &j->err);
        else
            step_done(r, STEP_DEFINED);
        return;
    case JOB_START:
        if (j->result < 0)
            resize_fail(r, &j->err);
        else
            step_done(r, STEP_STARTED);
        return;
    default:
        return;
    }
}

const struct op_type op_type_resize = {
    .kind = OP_RESIZE,
    .name = "resize",
    .steps = resize_steps,
    .task_state = "resize_prep",
    .resume_prev_state = "running",
    .advance = resize_advance,
    .job_done = resize_job_done,
    .prepare = resize_prepare,
    .stopped = powered_off,
};

const struct op_type op_type_confirm_resize = {
    .kind = OP_CONFIRM_RESIZE,
    .name = "confirm_resize",
    .steps = confirm_steps,
    .need_state = "resized",
    .task_state = "resize_confirming",
    .resume_prev_state = "resized",
    .advance = resize_advance,
    .job_done = resize_job_done,
    .prepare = confirm_prepare,
};

const struct op_type op_type_revert_resize = {
    .kind = OP_REVERT_RESIZE,
    .name = "revert_resize",
    .steps = revert_steps,
    .need_state = "resized",
    .task_state = "resize_reverting",
    .resume_prev_state = "resized",
    .advance = resize_advance,
    .job_done = resize_job_done,
    .prepare = revert_prepare,
    .stopped = powered_off,
};

/* ---- auto-confirm (resize_confirm_window) ---- */

struct sweep {
    struct ops *o;
    int64_t now;
    int64_t window_ms;
    char (*due)[37];
    size_t n, cap;
};

static int find_due(const struct instance *inst, void *opaque)
{
    struct sweep *s = opaque;

    if (strcmp(inst->state, "resized") != 0 || !inst->resize.resized_ms ||
        inst->resize.resized_ms + s->window_ms > s->now)
        return 0;
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 8;
        char(*d)[37] = realloc(s->due, cap * sizeof(*d));
        if (!d)
            return 0;
        s->due = d;
        s->cap = cap;
    }
    strscpy(s->due[s->n++], inst->uuid, 37);
    return 0;
}

static void on_sweep(uv_timer_t *t)
{
    struct ops *o = t->data;
    struct sweep s = {.o = o, .now = now_wall_ms(), .window_ms = o->cfg.resize_confirm_window_s * 1000};

    if (o->stopping)
        return;
    store_instance_foreach(o->d.store, false, find_due, &s);
    for (size_t i = 0; i < s.n; i++) {
        struct action_opts opts = {.timeout_s = -1};
        struct agent_error e = {0};
        json_t *answer = NULL;
        if (ops_action(o, s.due[i], "confirm_resize", &opts, &answer, &e) >= 0)
            log_info("resize confirmed automatically", "instance=%s window_s=%lld", s.due[i],
                     (long long)o->cfg.resize_confirm_window_s);
        else if (e.code[0] && strcmp(e.code, "conflict") != 0)
            log_warn("cannot confirm a resize automatically", "instance=%s error=%s", s.due[i], e.message);
        json_decref(answer);
    }
    free(s.due);
}

static void on_sweep_closed(uv_handle_t *h)
{
    free(h);
}

void ops_resize_sweep_start(struct ops *o)
{
    int64_t every_ms;
    uv_timer_t *t;

    if (o->cfg.resize_confirm_window_s <= 0 || !(t = calloc(1, sizeof(*t))))
        return;
    /* a quarter of the window, between 1 s and a minute */
    every_ms = o->cfg.resize_confirm_window_s * 250;
    every_ms = every_ms < 1000 ? 1000 : every_ms > 60000 ? 60000 : every_ms;
    uv_timer_init(o->loop, t);
    t->data = o;
    uv_timer_start(t, on_sweep, (uint64_t)every_ms, (uint64_t)every_ms);
    o->confirm_timer = t;
}

void ops_resize_sweep_stop(struct ops *o)
{
    if (!o->confirm_timer)
        return;
    uv_timer_stop(o->confirm_timer);
    uv_close((uv_handle_t *)o->confirm_timer, on_sweep_closed);
    o->confirm_timer = NULL;
}
