/* terminate.c: the terminate operation (ops-internal.h):
 *   requested -> destroyed -> undefined (with the result)
 * A domain already gone counts as destroyed; a failure leaves the instance
 * in error. It supersedes an operation that only waits for the guest
 * (power.c, ops_action). */
#include "agent/ops/ops-internal.h"

static const enum op_step terminate_steps[] = {STEP_REQUESTED, STEP_DESTROYED, STEP_UNDEFINED, STEP_NONE};

static void terminate_advance(struct op_run *r)
{
    switch (r->step) {
    case STEP_REQUESTED:
        ops_queue_job(r, JOB_DESTROY);
        break;
    case STEP_DESTROYED:
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
