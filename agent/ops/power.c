/* power.c: ops_action (what every action shares) and the power operations
 * (ops-internal.h):
 *   start:  requested -> succeeded
 *   stop:   requested -> (graceful shutdown, then forced) -> succeeded
 *   reboot: requested -> (graceful reboot, then reset) -> succeeded
 * A failure leaves the instance in the state it had before; a domain gone
 * under the operation leaves it in error (lost). */
#include <string.h>

#include "agent/ops/ops-internal.h"

static const enum op_step action_steps[] = {STEP_REQUESTED, STEP_NONE};

/* The domain vanished under a stop, start or reboot (libvirtd lost it while
 * the agent was away): the instance is lost, not back in the state it had
 * before the operation. 1 if that was the case. */
static int lost(struct op_run *r, const struct job *j)
{
    struct agent_error e = {0};

    if (j->result != -ENOENT)
        return 0;
    agent_error_set(&e, ENOENT, "not_found", NULL, "the domain is missing from the hypervisor");
    ops_finish(r, "error", &e);
    return 1;
}

/* ---- start ---- */

static void start_advance(struct op_run *r)
{
    ops_queue_job(r, JOB_START);
}

static void start_job_done(struct op_run *r, const struct job *j)
{
    if (lost(r, j))
        return;
    if (j->result < 0)
        ops_finish(r, r->prev_state, &j->err);
    else
        ops_finish(r, "running", NULL);
}

const struct op_type op_type_start = {
    .kind = OP_START,
    .name = "start",
    .steps = action_steps,
    .need_state = "stopped",
    .task_state = "starting",
    .new_state = "pending",
    .resume_prev_state = "stopped",
    .advance = start_advance,
    .job_done = start_job_done,
};

/* ---- stop ---- */

static void stop_advance(struct op_run *r)
{
    if (r->force) {
        ops_queue_job(r, JOB_DESTROY);
    } else {
        /* wait for the stop event from before the job returns */
        ops_start_wait(r, WAIT_STOPPED);
        ops_queue_job(r, JOB_SHUTDOWN);
    }
}

static void stop_job_done(struct op_run *r, const struct job *j)
{
    if (lost(r, j))
        return;
    if (j->kind == JOB_SHUTDOWN) {
        if (j->result < 0) {
            /* the guest refused a graceful stop: force it */
            ops_log(LOG_WARN, "graceful stop refused: forcing", r, j->err.message);
            ops_queue_job(r, JOB_DESTROY);
        } else if (j->power == HV_POWER_SHUTOFF) {
            ops_finish(r, "stopped", NULL);
        } else if (r->wait == WAIT_NONE && !uv_is_active((uv_handle_t *)&r->timer)) {
            ops_start_wait(r, WAIT_STOPPED);
        }
        return;
    }
    if (j->result < 0)
        ops_finish(r, r->prev_state, &j->err);
    else /* JOB_DESTROY */
        ops_finish(r, "stopped", NULL);
}

const struct op_type op_type_stop = {
    .kind = OP_STOP,
    .name = "stop",
    .steps = action_steps,
    .need_state = "running",
    .task_state = "stopping",
    .new_state = "stopping",
    .resume_prev_state = "running",
    .advance = stop_advance,
    .job_done = stop_job_done,
};

/* ---- reboot ---- */

static void reboot_advance(struct op_run *r)
{
    if (!r->force && ops_hv_reboot_event(r->ops))
        ops_start_wait(r, WAIT_REBOOTED);
    ops_queue_job(r, r->force ? JOB_RESET : JOB_REBOOT);
}

static void reboot_job_done(struct op_run *r, const struct job *j)
{
    if (lost(r, j))
        return;
    if (j->result < 0) {
        if (j->kind == JOB_REBOOT && j->result == -ENOTSUP && !r->force)
            ops_queue_job(r, JOB_RESET);
        else
            ops_finish(r, r->prev_state, &j->err);
        return;
    }
    if (j->kind == JOB_RESET || !ops_hv_reboot_event(r->ops))
        ops_finish(r, "running", NULL);
    else if (r->wait == WAIT_NONE && !uv_is_active((uv_handle_t *)&r->timer))
        ops_start_wait(r, WAIT_REBOOTED);
}

const struct op_type op_type_reboot = {
    .kind = OP_REBOOT,
    .name = "reboot",
    .steps = action_steps,
    .need_state = "running",
    .task_state = "rebooting",
    .new_state = "running",
    .resume_prev_state = "running",
    .advance = reboot_advance,
    .job_done = reboot_job_done,
};

/* ---- what every action shares ---- */

/* The instance may take the action now: 0, or -errno with err. */
static int action_allowed(struct ops *o, const struct op_type *t, const struct instance *inst, const char *id,
                          const struct action_opts *opts, struct agent_error *err)
{
    struct op_record active;
    struct op_run *r;
    int rc;

    if (!t->need_state && !strcmp(inst->state, "terminated"))
        return agent_error_set(err, EINVAL, "conflict", "id", "instance '%s' is already terminated", id);
    if (!strcmp(inst->state, "migrated"))
        return agent_error_set(err, EINVAL, "conflict", "id", "instance '%s' is not on this host any more (%s)", id,
                               inst->mig.peer[0] ? inst->mig.peer : "migrated");
    if (!strcmp(inst->state, "migrating"))
        return agent_error_set(err, EBUSY, "conflict", "id", "instance '%s' is migrating to this host", id);
    if (t->need_state && strcmp(inst->state, t->need_state) != 0)
        return agent_error_set(err, EINVAL, "conflict", "action", "cannot %s an instance that is %s (needs %s)",
                               t->name, inst->state, t->need_state);
    if (t->kind == OP_TERMINATE && (r = ops_find_run(o, inst->uuid)) && r->wait != WAIT_NONE && !r->job_running) {
        /* terminate wins over an operation that only waits for the guest */
        struct agent_error sup;
        agent_error_set(&sup, ECANCELED, "superseded", NULL, "superseded by a terminate");
        ops_finish(r, NULL, &sup);
    }
    if (store_op_active_for(o->d.store, inst->uuid, &active) == 0) {
        rc = agent_error_set(err, EBUSY, "conflict", "id", "instance '%s' has a %s operation in progress (%s)",
                             id, active.type, active.id);
        op_record_release(&active);
        return rc;
    }
    if (!hv_connected(o->d.hv))
        return agent_error_set(err, EAGAIN, "unavailable", NULL, "the hypervisor is not connected");
    if (t->kind == OP_REBOOT && opts->force && !ops_hv_can_reset(o))
        return agent_error_set(err, ENOTSUP, "not_supported", "force", "the %s driver cannot reset a guest",
                               hv_driver_name(o->d.hv));
    return 0;
}

int ops_action(struct ops *o, const char *id, const char *action, const struct action_opts *opts,
               json_t **answer, struct agent_error *err)
{
    const struct op_type *t = op_type_find(action);
    struct instance inst;
    struct op_run *r;
    int rc;

    if (!strcmp(action, "abort_migration")) {
        rc = store_instance_get(o->d.store, id, &inst);
        if (rc == -ENOENT)
            return agent_error_set(err, ENOENT, "not_found", "id", "no instance '%s'", id);
        if (rc < 0)
            return agent_error_set(err, -rc, "internal", NULL, "cannot read the store");
        rc = ops_migrate_abort(o, &inst, answer, err);
        instance_release(&inst);
        return rc;
    }
    if (!t || t->kind == OP_LAUNCH || t->kind == OP_MIGRATE_IN)
        return agent_error_set(err, EINVAL, "invalid_field", "action", "no action '%s'", action);
    if (opts->request_id && (rc = ops_replay(o, opts->request_id, action, answer, err)) != 0)
        return rc;
    rc = store_instance_get(o->d.store, id, &inst);
    if (rc == -ENOENT)
        return agent_error_set(err, ENOENT, "not_found", "id", "no instance '%s'", id);
    if (rc < 0)
        return agent_error_set(err, -rc, "internal", NULL, "cannot read the store");
    if ((rc = action_allowed(o, t, &inst, id, opts, err)) < 0) {
        instance_release(&inst);
        return rc;
    }
    if (!(r = ops_run_new(o, t))) {
        instance_release(&inst);
        return -ENOMEM;
    }
    r->inst = inst;
    strscpy(r->prev_state, inst.state, sizeof(r->prev_state));
    r->force = opts->force;
    if (opts->timeout_s >= 0)
        r->timeout_s = opts->timeout_s;
    if (t->prepare && (rc = t->prepare(r, opts, err)) < 0) {
        ops_run_discard(r);
        return rc;
    }
    ops_run_init_record(r, opts->request_id, STEP_REQUESTED);
    if (t->new_state)
        strscpy(r->inst.state, t->new_state, sizeof(r->inst.state));
    strscpy(r->inst.task_state, t->task_state, sizeof(r->inst.task_state));
    r->inst.updated_ms = now_wall_ms();
    return ops_run_accept(r, false, answer, err);
}
