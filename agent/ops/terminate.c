/* terminate.c: the terminate operation (ops-internal.h):
 *   requested -> destroyed -> [unplugged] -> undefined (with the result)
 * unplugged: its ports off the host after the domain is off (idempotent);
 * with the result, its MACs and IPs are released (engine.c, journal()).
 * A domain already gone counts as destroyed; a failure leaves the instance
 * in error. It supersedes an operation that only waits for the guest
 * (power.c, ops_action). */
#include "agent/ops/ops-internal.h"

static const enum op_step terminate_steps[] = {STEP_REQUESTED, STEP_DESTROYED, STEP_UNPLUGGED, STEP_UNDEFINED,
                                               STEP_NONE};

static void terminate_advance(struct op_run *r)
{
    switch (r->step) {
    case STEP_REQUESTED:
        ops_queue_job(r, JOB_DESTROY);
        break;
    case STEP_DESTROYED:
        ops_queue_job(r, r->inst.n_ports ? JOB_UNPLUG : JOB_UNDEFINE);
        break;
    case STEP_UNPLUGGED:
        ops_queue_job(r, JOB_UNDEFINE);
        break;
    default:
        ops_finish(r, "terminated", NULL);
        break;
    }
}

static void terminate_job_done(struct op_run *r, const struct job *j)
{
    if (j->result < 0) {
        ops_finish(r, "error", &j->err);
        return;
    }
    if (j->kind == JOB_DESTROY) {
        if (ops_journal_step(r, STEP_DESTROYED) == 0)
            ops_run_advance(r);
    } else if (j->kind == JOB_UNPLUG) {
        for (size_t i = 0; i < r->inst.n_ports; i++)
            strscpy(r->inst.ports[i].state, "unplugged", sizeof(r->inst.ports[i].state));
        if (ops_journal_step(r, STEP_UNPLUGGED) == 0)
            ops_run_advance(r);
    } else if (j->kind == JOB_UNDEFINE) {
        if (ops_journal_step(r, STEP_UNDEFINED) == 0)
            ops_finish(r, "terminated", NULL);
    }
}

const struct op_type op_type_terminate = {
    .kind = OP_TERMINATE,
    .name = "terminate",
    .steps = terminate_steps,
    .task_state = "terminating",
    .new_state = "shutting-down",
    .resume_prev_state = "running",
    .advance = terminate_advance,
    .job_done = terminate_job_done,
};
