/* engine.c: the operation engine (ops-internal.h says who does what).
 *
 * A run is one operation in flight: its journal row, its instance, the wait
 * or the worker job that holds it. Each step is committed to the store
 * before the agent acts on it; a resumed operation repeats the work after
 * its last journaled step, and every such piece of work is idempotent
 * (define by UUID, start of a running domain, destroy of a stopped one,
 * undefine of a missing one). A write that fails parks the run at its last
 * recorded step (it acts no further; the next reconcile or start resumes
 * it): the agent never goes on from a step the store does not have.
 *
 * Crash points (COMPUTE_AGENT_CRASH_AT=type:step, tests): SIGKILL right
 * after that step is committed. */
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "agent/events.h"
#include "agent/host.h"
#include "agent/log.h"
#include "agent/metrics.h"
#include "agent/ops/ops-internal.h"

/* ---- names at the store's edge ---- */

static const char *const step_names[STEP_COUNT] = {
    [STEP_NONE] = "", [STEP_CLAIMED] = "claimed", [STEP_IMAGE] = "image",
    [STEP_DEFINED] = "defined", [STEP_STARTED] = "started", [STEP_REQUESTED] = "requested",
    [STEP_DESTROYED] = "destroyed", [STEP_UNDEFINED] = "undefined", [STEP_PORTS] = "ports",
    [STEP_CONFIG_DRIVE] = "config-drive", [STEP_UNPLUGGED] = "unplugged",
    [STEP_APPLIED] = "applied", [STEP_POWERED_OFF] = "powered-off", [STEP_DISK] = "disk",
    [STEP_ROLLBACK] = "rollback", [STEP_PREPARED] = "prepared", [STEP_MIGRATING] = "migrating",
    [STEP_MOVED] = "moved",
};

static const char *const state_names[] = {
    [OPS_PENDING] = "pending", [OPS_RUNNING] = "running", [OPS_SUCCEEDED] = "succeeded",
    [OPS_FAILED] = "failed",
};

const char *op_step_name(enum op_step s)
{
    return s < STEP_COUNT ? step_names[s] : "";
}

int op_step_parse(const char *s, enum op_step *ret)
{
    for (int i = 0; i < STEP_COUNT; i++)
        if (!strcmp(s, step_names[i])) {
            *ret = (enum op_step)i;
            return 0;
        }
    return -EINVAL;
}

const char *op_state_name(enum op_state s)
{
    return state_names[s];
}

int op_state_parse(const char *s, enum op_state *ret)
{
    for (size_t i = 0; i < ARRAY_SIZE(state_names); i++)
        if (!strcmp(s, state_names[i])) {
            *ret = (enum op_state)i;
            return 0;
        }
    return -EINVAL;
}

const struct op_type *op_type_find(const char *name)
{
    static const struct op_type *const types[] = {&op_type_launch,         &op_type_start,
                                                  &op_type_stop,           &op_type_reboot,
                                                  &op_type_terminate,      &op_type_resize,
                                                  &op_type_confirm_resize, &op_type_revert_resize,
                                                  &op_type_migrate,        &op_type_migrate_in};

    for (size_t i = 0; i < ARRAY_SIZE(types); i++)
        if (!strcmp(types[i]->name, name))
            return types[i];
    return NULL;
}

/* ---- small helpers ---- */

void ops_set_str(char **dst, const char *src)
{
    free(*dst);
    *dst = src ? strdup(src) : NULL;
}

void ops_log(enum log_level lvl, const char *msg, const struct op_run *r, const char *extra)
{
    const char *step = r->step != STEP_NONE ? op_step_name(r->step) : "-";
    const char *rid = r->rec.request_id ? r->rec.request_id : "-";

    if (extra)
        log_event(lvl, msg, "instance=%s ec2_id=%s op=%s type=%s step=%s request_id=%s error=%s",
                  r->inst.uuid, r->inst.ec2_id, r->rec.id, r->type->name, step, rid, extra);
    else
        log_event(lvl, msg, "instance=%s ec2_id=%s op=%s type=%s step=%s request_id=%s", r->inst.uuid,
                  r->inst.ec2_id, r->rec.id, r->type->name, step, rid);
}

void ops_crash_point(struct ops *o, const struct op_run *r)
{
    char here[64];

    if (!o->cfg.crash_at)
        return;
    snprintf(here, sizeof(here), "%s:%s", r->type->name, op_step_name(r->step));
    if (strcmp(here, o->cfg.crash_at) == 0) {
        log_warn("crash point reached: killing the agent", "op=%s point=%s", r->rec.id, here);
        raise(SIGKILL);
    }
}

const char *ops_state_of_power(enum hv_power p)
{
    return p == HV_POWER_RUNNING || p == HV_POWER_PAUSED || p == HV_POWER_SHUTDOWN ? "running" : "stopped";
}

void ops_instance_dir(const struct ops *o, const char *uuid, char *buf, size_t size)
{
    if ((size_t)snprintf(buf, size, "%s/%s", o->cfg.instances_dir, uuid) >= size)
        buf[0] = '\0';
}

bool ops_hv_disk_files(const struct ops *o)
{
    return hv_supports(o->d.hv, HV_FEAT_DISK_FILES);
}

bool ops_hv_reboot_event(const struct ops *o)
{
    return hv_supports(o->d.hv, HV_FEAT_REBOOT_EVENT);
}

bool ops_hv_can_reset(const struct ops *o)
{
    return hv_supports(o->d.hv, HV_FEAT_RESET);
}

struct op_run *ops_find_run(struct ops *o, const char *uuid)
{
    for (struct op_run *r = o->runs; r; r = r->next)
        if (!r->done && strcmp(r->inst.uuid, uuid) == 0)
            return r;
    return NULL;
}

static json_t *answer_of(const struct instance *inst, const struct op_record *op)
{
    return json_pack("{s:o, s:o}", "instance", instance_to_json(inst), "operation", op_record_to_json(op));
}

/* ---- runs ---- */

struct op_run *ops_run_new(struct ops *o, const struct op_type *t)
{
    struct op_run *r = calloc(1, sizeof(*r));

    if (!r)
        return NULL;
    r->ops = o;
    r->type = t;
    r->state = OPS_RUNNING;
    uv_timer_init(o->loop, &r->timer);
    r->timer.data = r;
    uv_timer_init(o->loop, &r->poll);
    r->poll.data = r;
    r->timeout_s = t->kind == OP_REBOOT ? o->cfg.reboot_timeout_s : o->cfg.stop_timeout_s;
    r->next = o->runs;
    if (o->runs)
        o->runs->prev = r;
    o->runs = r;
    o->n_runs++;
    return r;
}

static void on_run_closed(uv_handle_t *h)
{
    struct op_run *r = h->data;

    if (++r->closed < 2)
        return; /* both timers closed: then it goes */
    json_decref(r->result);
    json_decref(r->progress);
    instance_release(&r->inst);
    op_record_release(&r->rec);
    free(r->base_path);
    free(r);
}

void ops_run_release(struct op_run *r)
{
    struct ops *o = r->ops;

    if (r->prev)
        r->prev->next = r->next;
    else
        o->runs = r->next;
    if (r->next)
        r->next->prev = r->prev;
    o->n_runs--;
    uv_timer_stop(&r->timer);
    uv_timer_stop(&r->poll);
    uv_close((uv_handle_t *)&r->timer, on_run_closed);
    uv_close((uv_handle_t *)&r->poll, on_run_closed);
}

void ops_run_discard(struct op_run *r)
{
    r->done = true;
    ops_run_release(r);
}

void ops_run_advance(struct op_run *r)
{
    r->parked = false;
    r->type->advance(r);
}

/* The enums into the row's strings (the store's edge). */
static void rec_sync(struct op_run *r)
{
    strscpy(r->rec.type, r->type->name, sizeof(r->rec.type));
    strscpy(r->rec.step, op_step_name(r->step), sizeof(r->rec.step));
    strscpy(r->rec.state, op_state_name(r->state), sizeof(r->rec.state));
}

void ops_run_init_record(struct op_run *r, const char *request_id, enum op_step first)
{
    struct op_record *rec = &r->rec;

    memset(rec, 0, sizeof(*rec));
    uuid_generate_str(rec->id);
    strscpy(rec->instance_uuid, r->inst.uuid, sizeof(rec->instance_uuid));
    rec->request_id = request_id ? strdup(request_id) : NULL;
    rec->created_ms = rec->updated_ms = now_wall_ms();
    r->step = r->journaled = first;
    r->state = OPS_RUNNING;
    rec_sync(r);
}

int ops_run_accept(struct op_run *r, bool new_instance, json_t **answer, struct agent_error *err)
{
    struct ops *o = r->ops;
    struct store *s = o->d.store;
    int rc;

    if ((rc = store_begin(s)) < 0 ||
        (rc = new_instance ? store_instance_insert(s, &r->inst) : store_op_insert(s, &r->rec)) < 0 ||
        (rc = new_instance ? store_op_insert(s, &r->rec) : store_instance_update(s, &r->inst)) < 0 ||
        ((new_instance || strcmp(r->prev_state, r->inst.state)) &&
         (rc = events_instance(o->d.events, &r->inst, r->rec.request_id)) < 0) ||
        (rc = store_commit(s)) < 0) {
        store_rollback(s);
        ops_run_discard(r);
        return store_error(rc, err, new_instance ? "cannot record the launch" : "cannot record the operation");
    }
    strscpy(r->emitted, r->inst.state, sizeof(r->emitted));
    events_flush(o->d.events);
    *answer = answer_of(&r->inst, &r->rec);
    ops_log(LOG_INFO, new_instance ? "launch accepted" : "operation accepted", r, NULL);
    if (new_instance && o->hooks.claimed)
        o->hooks.claimed(o->opaque, &r->inst);
    if (r->type->kind == OP_RESIZE && !strcmp(r->inst.resize.mode, "cold") && o->hooks.resize_claimed)
        o->hooks.resize_claimed(o->opaque, &r->inst);
    ops_crash_point(o, r);
    ops_run_advance(r);
    return 202;
}

int ops_replay(struct ops *o, const char *request_id, const char *type, json_t **answer,
               struct agent_error *err)
{
    struct op_record prev;
    struct instance inst;
    int rc = store_op_find_request(o->d.store, request_id, &prev);

    if (rc == -ENOENT)
        return 0;
    if (rc < 0)
        return agent_error_set(err, -rc, "internal", NULL, "cannot read the journal");
    if (strcmp(prev.type, type) != 0) {
        op_record_release(&prev);
        return agent_error_set(err, EEXIST, "conflict", "request_id",
                               "request_id '%s' was used for a %s operation", request_id, prev.type);
    }
    rc = store_instance_get(o->d.store, prev.instance_uuid, &inst);
    if (rc < 0) {
        op_record_release(&prev);
        return agent_error_set(err, ENOENT, "not_found", "request_id",
                               "the instance of request_id '%s' is gone", request_id);
    }
    *answer = answer_of(&inst, &prev);
    instance_release(&inst);
    op_record_release(&prev);
    return 202;
}

/* ---- the journal ---- */

/* Write the run's op row and instance row in one transaction, with the
 * events they cause (instance.<state> when it changed, operation.<result>
 * when it ended) in the outbox. */
static int journal(struct op_run *r)
{
    struct store *s = r->ops->d.store;
    struct events *ev = r->ops->d.events;
    int64_t now = now_wall_ms();
    bool ended = r->state == OPS_SUCCEEDED || r->state == OPS_FAILED;
    int rc;

    rec_sync(r);
    r->rec.updated_ms = now;
    r->inst.updated_ms = now;
    if ((rc = store_begin(s)) < 0)
        return rc;
    /* a terminated instance's MACs and IPs are free again, in the same commit */
    bool release_ports = ended && r->inst.n_ports &&
                         ((r->state == OPS_SUCCEEDED && r->type->kind == OP_TERMINATE &&
                           !strcmp(r->inst.state, "terminated")) ||
                          !strcmp(r->inst.state, "migrated"));
    if ((rc = store_op_update(s, &r->rec)) < 0 || (rc = store_instance_update(s, &r->inst)) < 0 ||
        (release_ports && (rc = store_ports_release(s, r->inst.uuid)) < 0) ||
        (strcmp(r->emitted, r->inst.state) && (rc = events_instance(ev, &r->inst, r->rec.request_id)) < 0) ||
        (ended && (rc = events_operation(ev, &r->rec, &r->inst)) < 0)) {
        store_rollback(s);
        return rc;
    }
    if ((rc = store_commit(s)) < 0)
        return rc;
    if (release_ports)
        r->inst.n_ports = 0;
    r->journaled = r->step;
    strscpy(r->emitted, r->inst.state, sizeof(r->emitted));
    events_flush(ev);
    return 0;
}

/* The store refused a write: back to what it has, and wait. */
static void park_unrecorded(struct op_run *r, const char *what, int rc)
{
    /* the store is the agent's memory: without it, stop acting */
    r->step = r->journaled;
    r->state = OPS_RUNNING;
    rec_sync(r);
    r->parked = true;
    ops_log(LOG_ERROR, what, r, strerror(-rc));
}

int ops_journal_step(struct op_run *r, enum op_step step)
{
    int rc;

    r->step = step;
    r->state = OPS_RUNNING;
    if ((rc = journal(r)) < 0) {
        park_unrecorded(r, "cannot journal an operation step; parked at the last recorded one", rc);
        return rc;
    }
    ops_log(LOG_DEBUG, "operation step", r, NULL);
    ops_crash_point(r->ops, r);
    return 0;
}

void ops_finish(struct op_run *r, const char *inst_state, const struct agent_error *failure)
{
    struct ops *o = r->ops;
    char state[sizeof(r->inst.state)], task[sizeof(r->inst.task_state)];
    int rc;

    uv_timer_stop(&r->timer);
    uv_timer_stop(&r->poll);
    r->wait = WAIT_NONE;
    strscpy(state, r->inst.state, sizeof(state));
    strscpy(task, r->inst.task_state, sizeof(task));
    r->state = failure ? OPS_FAILED : OPS_SUCCEEDED;
    if (failure) {
        strscpy(r->rec.error_code, failure->code[0] ? failure->code : "internal", sizeof(r->rec.error_code));
        ops_set_str(&r->rec.error_message, failure->message);
    }
    if (inst_state)
        strscpy(r->inst.state, inst_state, sizeof(r->inst.state));
    strscpy(r->inst.task_state, r->finish_task, sizeof(r->inst.task_state));
    if (r->result && !r->rec.result)
        r->rec.result = json_dumps(r->result, JSON_COMPACT | JSON_SORT_KEYS);
    if (failure && inst_state && strcmp(inst_state, "error") == 0)
        ops_set_str(&r->inst.fault, failure->message);
    else if (!failure)
        ops_set_str(&r->inst.fault, NULL);
    if ((rc = journal(r)) < 0) {
        strscpy(r->inst.state, state, sizeof(r->inst.state));
        strscpy(r->inst.task_state, task, sizeof(r->inst.task_state));
        r->rec.error_code[0] = '\0';
        ops_set_str(&r->rec.error_message, NULL);
        ops_set_str(&r->rec.result, NULL);
        park_unrecorded(r, "cannot journal an operation result; parked at the last recorded step", rc);
        return;
    }
    metrics_op_finished(o->d.metrics, r->type->name, op_state_name(r->state),
                        (double)(now_wall_ms() - r->rec.created_ms) / 1000.0);
    /* the instance no longer needs its cached image */
    if (o->d.imgcache && ((!failure && r->type->kind == OP_TERMINATE) || (failure && r->type->kind == OP_LAUNCH)))
        imgcache_release(o->d.imgcache, NULL, r->inst.uuid);
    ops_log(failure ? LOG_WARN : LOG_INFO, failure ? "operation failed" : "operation succeeded", r,
            failure ? failure->message : NULL);
    r->done = true;
    if (o->hooks.operation_finished)
        o->hooks.operation_finished(o->opaque, &r->rec, &r->inst);
    if (!r->job_running)
        ops_run_release(r);
}

/* ---- jobs and waits ---- */

static void job_after(uv_work_t *w, int status)
{
    struct job *j = w->data;
    struct op_run *r = j->run;

    (void)status;
    if (j->kind == JOB_LIST) {
        ops_reconcile_after(j);
    } else if (j->kind == JOB_SYNC) {
        ops_reconcile_synced(j);
    } else {
        r->job_running = false;
        if (r->done || r->ops->stopping) {
            /* an event finished the operation while this job ran, or the
             * engine stops: the journal row stays for the next start */
            ops_run_release(r);
        } else if (j->result == -ENOTCONN) {
            /* the hypervisor went away: resume after the reconnect */
            r->parked = true;
            ops_log(LOG_WARN, "operation waits for the hypervisor", r, j->err.message);
        } else if (r->failing) {
            /* the rollback (JOB_CLEANUP) unplugged every port */
            for (size_t i = 0; i < r->inst.n_ports; i++)
                strscpy(r->inst.ports[i].state, "unplugged", sizeof(r->inst.ports[i].state));
            if (r->type->kind == OP_MIGRATE_IN)
                ops_migrate_in_rolled_back(r);
            else
                ops_finish(r, "error", &r->fail);
        } else {
            r->type->job_done(r, j);
        }
    }
    instance_release(&j->inst);
    hv_domain_list_free(j->doms, j->ndoms);
    free(j->base_path);
    free(j->keep);
    free(j->keep_owner);
    free(j);
}

/* On the hypervisor layer's own threads (hv_submit), not libuv's pool. */
static void job_work_hv(struct hv *hv, void *arg)
{
    struct job *j = arg;

    (void)hv;
    ops_job_work(&j->work);
}

static void job_done_hv(struct hv *hv, void *arg, int status)
{
    struct job *j = arg;

    (void)hv;
    if (status < 0) {
        /* never ran (the layer stops): like a lost connection, the step
         * resumes at the next start or reconnect */
        j->result = agent_error_set(&j->err, ENOTCONN, "unavailable", NULL,
                                    "the hypervisor's workers stopped before the call");
    }
    job_after(&j->work, status);
}

static void fail_now(struct op_run *r, int rc, const char *what)
{
    struct agent_error e;

    agent_error_set(&e, -rc, "internal", NULL, "%s: %s", what, strerror(-rc));
    ops_finish(r, "error", &e);
}

void ops_queue_job(struct op_run *r, enum job_kind kind)
{
    struct job *j = calloc(1, sizeof(*j));
    int rc;

    bool copy = kind == JOB_DEFINE || kind == JOB_PLUG || kind == JOB_UNPLUG || kind == JOB_CONFIG_DRIVE ||
                kind == JOB_CLEANUP || kind == JOB_GROW || kind == JOB_LIVE || kind == JOB_MIGRATE ||
                kind == JOB_MIGRATE_CHECK || kind == JOB_META || kind == JOB_MIG_DISK || kind == JOB_MIG_RELEASE ||
                kind == JOB_MIG_IN_CLEANUP;
    bool long_job = kind == JOB_MIGRATE || kind == JOB_MIGRATE_CHECK;

    if (!j || (copy && instance_copy(&j->inst, &r->inst) < 0)) {
        free(j);
        fail_now(r, -ENOMEM, "cannot queue work");
        return;
    }
    j->work.data = j;
    j->ops = r->ops;
    j->run = r;
    j->kind = kind;
    strscpy(j->uuid, r->inst.uuid, sizeof(j->uuid));
    j->terminating = r->type->kind == OP_TERMINATE;
    if (kind == JOB_DEFINE && r->base_path) {
        j->base_path = strdup(r->base_path);
        strscpy(j->base_format, r->base_format, sizeof(j->base_format));
        j->base_vsize = r->base_vsize;
    }
    r->job_running = true;
    rc = long_job ? hv_submit_long(r->ops->d.hv, job_work_hv, job_done_hv, j)
                  : hv_submit(r->ops->d.hv, job_work_hv, job_done_hv, j);
    if (rc < 0) {
        r->job_running = false;
        instance_release(&j->inst);
        free(j->base_path);
        free(j);
        fail_now(r, rc, "cannot queue work");
    }
}

/* Used by reconcile.c: a listing job (no run). */
int ops_queue_list(struct ops *o, struct job *j)
{
    j->work.data = j;
    j->ops = o;
    if (j->kind != JOB_SYNC)
        j->kind = JOB_LIST;
    return hv_submit(o->d.hv, job_work_hv, job_done_hv, j);
}

static void on_timeout(uv_timer_t *t)
{
    struct op_run *r = t->data;

    if (r->done || r->wait == WAIT_NONE)
        return;
    if (r->wait == WAIT_STOPPED) {
        ops_log(LOG_WARN, "graceful stop timed out: forcing", r, NULL);
        r->wait = WAIT_NONE;
        ops_queue_job(r, JOB_DESTROY);
    } else {
        ops_log(LOG_WARN, "graceful reboot timed out: resetting", r, NULL);
        r->wait = WAIT_NONE;
        ops_queue_job(r, JOB_RESET);
    }
}

void ops_start_wait(struct op_run *r, enum wait_kind w)
{
    r->wait = w;
    uv_timer_start(&r->timer, on_timeout, (uint64_t)r->timeout_s * 1000, 0);
}

/* ---- the engine's life ---- */

int ops_new(uv_loop_t *loop, const struct ops_deps *deps, const struct ops_config *cfg,
            const struct ops_hooks *hooks, void *opaque, struct ops **ret)
{
    struct ops *o = calloc(1, sizeof(*o));

    if (!o)
        return -ENOMEM;
    o->loop = loop;
    o->d = *deps;
    o->cfg = *cfg;
    if (hooks)
        o->hooks = *hooks;
    o->opaque = opaque;
    if (!o->cfg.crash_at)
        o->cfg.crash_at = getenv("COMPUTE_AGENT_CRASH_AT");
    if (o->cfg.crash_at && !*o->cfg.crash_at)
        o->cfg.crash_at = NULL;
    if (!o->cfg.local_image_dirs)
        o->cfg.local_image_dirs = "";
    if (o->cfg.resize_live_timeout_s <= 0)
        o->cfg.resize_live_timeout_s = 30;
    ops_resize_sweep_start(o);
    *ret = o;
    return 0;
}

void ops_set_timeouts(struct ops *o, int64_t stop_timeout_s, int64_t reboot_timeout_s)
{
    o->cfg.stop_timeout_s = stop_timeout_s;
    o->cfg.reboot_timeout_s = reboot_timeout_s;
}

void ops_stop(struct ops *o)
{
    struct op_run *r = o->runs, *next;

    o->stopping = true;
    ops_resize_sweep_stop(o);
    for (; r; r = next) {
        next = r->next;
        if (!r->done)
            ops_log(LOG_INFO, "operation parked until the next start", r, NULL);
        r->done = true;
        if (!r->job_running)
            ops_run_release(r);
    }
}

void ops_free(struct ops *o)
{
    if (!o)
        return;
    ops_stop(o);
    free(o);
}

json_t *ops_progress(struct ops *o, const char *op_id)
{
    for (struct op_run *r = o->runs; r; r = r->next) {
        json_t *img, *p;
        if (!r->done && !strcmp(r->rec.id, op_id) && r->progress)
            return json_incref(r->progress); /* a migration's job figures */
        if (r->done || strcmp(r->rec.id, op_id) || !r->cache_id[0] || !o->d.imgcache)
            continue;
        img = imgcache_get(o->d.imgcache, r->cache_id);
        p = json_incref(json_object_get(img, "progress"));
        json_decref(img);
        if (p && json_is_object(p))
            json_object_set_new(p, "image_id", json_string(r->cache_id));
        return p;
    }
    return NULL;
}

unsigned ops_in_flight(const struct ops *o)
{
    return o->n_runs;
}
