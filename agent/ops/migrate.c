/* migrate.c: moving an instance to another host (issue 13; ops-internal.h).
 *
 * The source's operation, "migrate" (live):
 *   requested -> prepared -> migrating -> moved -> succeeded (the instance "migrated")
 *   requested: the target was asked to prepare (migration_prepare) and
 *     answers within [migration] prepare_timeout, else the migration fails
 *     with nothing moved. prepared: its answer (libvirt URI, directories)
 *     recorded. migrating: journaled before the hypervisor's migration
 *     starts, on the long-job thread, watched every 0.5 s (job figures into
 *     the operation's progress and migration.progress events, the completion
 *     timeout, post-copy). When the job ends the outcome is read from where
 *     the domain is, never assumed: gone from here = moved, still active
 *     here = failed (the target is told to clean up: migration_commit abort).
 *     moved: the target is told (migration_commit live_done), the source
 *     releases its ports, disk and image pin, and its instance becomes
 *     "migrated" (kept for history, holding nothing) once the target said it
 *     runs the guest, or after [migration] commit_timeout without its word.
 *   A kill -9 at any step resumes there: requested asks again (a target
 *   answers a repeat), migrating waits out a job still running and decides
 *   from where the domain is, moved tells the target again.
 *
 * The target's operation, "migrate_in":
 *   claimed -> [image] -> [ports] -> prepared -> succeeded ("running")
 *   claimed: the instance recorded as "migrating" with its claim (admission
 *     by the resource tracker like a launch), its ports reserved with the
 *     source's MACs and IPs (each network must be configured here and the
 *     addresses free). image: the same image from this host's cache (by
 *     digest: byte-identical). ports: plugged. prepared: the guest's
 *     directory, an empty overlay on the base and the console log made,
 *     then answered. It waits for the source's commit: live_done (the domain
 *     must run here: our metadata is written with this host as owner, then
 *     the instance is "running"), or abort (anything of the guest here is
 *     removed: domain, disk, ports; the instance is "migrated", holding
 *     nothing). A source silent past [migration] incoming_timeout is judged
 *     by the domain: running here = arrived; absent = given up.
 *   A refusal or failure before prepared rolls back the same way and
 *   answers migration_prepared ok=false with the error. */
#include <stdlib.h>
#include <string.h>

#include "agent/events.h"
#include "agent/host.h"
#include "agent/ops/ops-internal.h"
#include "agent/request.h"
#include "agent/resources.h"

#define MONITOR_MS 500
#define PROGRESS_EVENT_MS 2000

static const enum op_step migrate_steps[] = {STEP_REQUESTED, STEP_PREPARED, STEP_MIGRATING, STEP_MOVED,
                                             STEP_NONE};
static const enum op_step migrate_in_steps[] = {STEP_CLAIMED, STEP_IMAGE, STEP_PORTS, STEP_PREPARED, STEP_NONE};

static int64_t cfg_or(int64_t v, int64_t dflt)
{
    return v > 0 ? v : dflt;
}

/* ---- messages ---- */

void ops_migration_send(struct op_run *r, enum mig_kind kind, enum mig_action action, bool ok,
                        const struct agent_error *e)
{
    struct ops *o = r->ops;
    struct mig_msg m = {.kind = kind, .action = action, .ok = ok};
    json_t *j;
    int rc;

    if (!o->hooks.send_peer)
        return;
    strscpy(m.migration_id, r->inst.mig.id, sizeof(m.migration_id));
    strscpy(m.instance_id, r->inst.uuid, sizeof(m.instance_id));
    strscpy(m.from, o->cfg.host_name, sizeof(m.from));
    if (e)
        m.error = *e;
    if (kind == MIG_PREPARE) {
        strscpy(m.mode, r->inst.mig.mode, sizeof(m.mode));
        m.power_on = r->inst.mig.power_on;
        m.inst = r->inst; /* borrowed for the JSON only */
    }
    if (kind == MIG_PREPARED && ok) {
        strscpy(m.libvirt_uri, o->cfg.migration_uri ? o->cfg.migration_uri : "", sizeof(m.libvirt_uri));
        strscpy(m.migrate_uri, o->cfg.migration_stream_uri ? o->cfg.migration_stream_uri : "",
                sizeof(m.migrate_uri));
        strscpy(m.instances_dir, o->cfg.instances_dir, sizeof(m.instances_dir));
        strscpy(m.image_dir, o->cfg.image_dir ? o->cfg.image_dir : "", sizeof(m.image_dir));
    }
    j = mig_msg_to_json(&m);
    rc = j ? o->hooks.send_peer(o->opaque, r->inst.mig.peer, r->inst.uuid, j) : -ENOMEM;
    json_decref(j);
    if (rc < 0)
        ops_log(LOG_WARN, "cannot send a migration message (the peer's deadline covers it)", r, strerror(-rc));
    else
        ops_log(LOG_DEBUG, mig_kind_name(kind), r, mig_action_name(action));
}

static void event(struct op_run *r, const char *name, json_t *fields)
{
    json_t *f = json_pack("{s:s, s:s, s:s, s:s}", "migration_id", r->inst.mig.id, "role", r->inst.mig.role,
                          "peer", r->inst.mig.peer, "mode", r->inst.mig.mode);

    if (fields) {
        json_object_update(f, fields);
        json_decref(fields);
    }
    if (r->failing || r->fail.code[0])
        json_object_set_new(f, "error", json_pack("{s:s, s:s}", "code", r->fail.code, "message", r->fail.message));
    events_migration(r->ops->d.events, name, &r->inst, r->rec.request_id, f);
}

static void set_result(struct op_run *r, const char *outcome, const char *note)
{
    json_t *res = json_pack("{s:s, s:s, s:s, s:s}", "outcome", outcome, "migration_id", r->inst.mig.id, "role",
                            r->inst.mig.role, "peer", r->inst.mig.peer);

    if (note)
        json_object_set_new(res, "note", json_string(note));
    if (r->progress)
        json_object_set(res, "last_progress", r->progress);
    json_decref(r->result);
    r->result = res;
}

/* ---- the source ---- */

static int migrate_prepare(struct op_run *r, const struct action_opts *opts, struct agent_error *err)
{
    struct ops *o = r->ops;
    struct instance *in = &r->inst;
    struct migration_info *m = &in->mig;
    const char *mode = opts->mode ? opts->mode : "live";

    if (!o->cfg.host_name || !o->hooks.send_peer)
        return agent_error_set(err, EAGAIN, "unavailable", NULL,
                               "migrations need the message bus ([bus] brokers or the mock cluster)");
    if (!opts->target)
        return agent_error_set(err, EINVAL, "missing_field", "target", "a migrate needs 'target'");
    if (!strcmp(opts->target, o->cfg.host_name))
        return agent_error_set(err, EINVAL, "invalid_field", "target", "target '%s' is this host", opts->target);
    if (!strcmp(in->state, "resized") || in->resize.pending)
        return agent_error_set(err, EBUSY, "conflict", "action",
                               "instance '%s' has a resize waiting for confirm_resize or revert_resize", in->uuid);
    if (!strcmp(mode, "cold"))
        return agent_error_set(err, ENOTSUP, "not_supported", "mode",
                               "cold migration is not available yet on this agent (live only)");
    if (strcmp(in->state, "running") != 0)
        return agent_error_set(err, EBUSY, "conflict", "action",
                               "cannot live-migrate an instance that is %s (needs running)", in->state);
    if (!hv_supports(o->d.hv, HV_FEAT_LIVE_MIGRATE))
        return agent_error_set(err, EBUSY, "conflict", "mode", "the %s driver cannot migrate a guest live",
                               hv_driver_name(o->d.hv));
    if (opts->postcopy && strcmp(opts->postcopy, "never") && !hv_supports(o->d.hv, HV_FEAT_POSTCOPY))
        return agent_error_set(err, EBUSY, "conflict", "postcopy", "the %s driver cannot switch to post-copy",
                               hv_driver_name(o->d.hv));
    memset(m, 0, sizeof(*m));
    m->pending = true;
    uuid_generate_str(m->id);
    strscpy(m->role, "source", sizeof(m->role));
    strscpy(m->mode, mode, sizeof(m->mode));
    strscpy(m->peer, opts->target, sizeof(m->peer));
    m->power_on = !strcmp(in->state, "running");
    m->max_downtime_ms = opts->max_downtime_ms;
    m->completion_timeout_s = opts->completion_timeout_s;
    strscpy(m->postcopy, opts->postcopy ? opts->postcopy : "", sizeof(m->postcopy));
    strscpy(in->task_state, "migrating", sizeof(in->task_state));
    return 0;
}

static void on_peer_timeout(uv_timer_t *t);

static void wait_peer(struct op_run *r, int64_t seconds)
{
    r->wait = WAIT_PEER;
    uv_timer_start(&r->timer, on_peer_timeout, (uint64_t)seconds * 1000, 0);
}

static void stop_wait(struct op_run *r)
{
    r->wait = WAIT_NONE;
    uv_timer_stop(&r->timer);
}

/* The migration failed with the guest still here: the target cleans up. */
static void source_failed(struct op_run *r, const struct agent_error *e)
{
    bool aborted = r->abort_asked;

    uv_timer_stop(&r->poll);
    stop_wait(r);
    r->fail = *e;
    r->inst.mig.pending = false;
    ops_migration_send(r, MIG_COMMIT, MIG_ACT_ABORT, true, NULL);
    set_result(r, aborted ? "aborted" : "failed", "the guest stays on this host");
    event(r, aborted ? "migration.aborted" : "migration.failed", NULL);
    ops_finish(r, r->prev_state[0] ? r->prev_state : "running", e);
}

/* The guest runs on the target: this host holds nothing of it any more. */
static void source_done(struct op_run *r, const char *note)
{
    struct ops *o = r->ops;

    stop_wait(r);
    r->inst.mig.pending = false;
    if (o->d.imgcache)
        imgcache_release(o->d.imgcache, NULL, r->inst.uuid);
    ops_set_str(&r->inst.disk_path, NULL);
    set_result(r, "completed", note);
    ops_finish(r, "migrated", NULL);
}

/* ---- the monitor (loop timer; the figures read on a short worker) ---- */

enum side_kind { SIDE_INFO, SIDE_ABORT, SIDE_POSTCOPY };

struct side {
    struct ops *o;
    char op_id[37];
    char uuid[37];
    enum side_kind kind;
    struct hv_job_info info;
    int result;
    struct agent_error err;
};

static struct op_run *run_by_op(struct ops *o, const char *op_id)
{
    for (struct op_run *r = o->runs; r; r = r->next)
        if (!r->done && !strcmp(r->rec.id, op_id))
            return r;
    return NULL;
}

static void side_work(struct hv *hv, void *arg)
{
    struct side *s = arg;

    switch (s->kind) {
    case SIDE_INFO:
        s->result = hv_job_info(hv, s->uuid, &s->info, &s->err);
        break;
    case SIDE_ABORT:
        s->result = hv_job_abort(hv, s->uuid, &s->err);
        break;
    case SIDE_POSTCOPY:
        s->result = hv_migrate_postcopy(hv, s->uuid, &s->err);
        break;
    }
}

static json_t *progress_json(const struct hv_job_info *i, const struct migration_info *m)
{
    json_t *p = json_pack("{s:I}", "elapsed_ms", (json_int_t)i->elapsed_ms);

    if (i->has_data) {
        json_object_set_new(p, "data_total", json_integer((json_int_t)i->data_total));
        json_object_set_new(p, "data_processed", json_integer((json_int_t)i->data_processed));
        json_object_set_new(p, "data_remaining", json_integer((json_int_t)i->data_remaining));
        if (i->data_total)
            json_object_set_new(p, "percent",
                                json_integer((json_int_t)(100 - (i->data_remaining * 100) / i->data_total)));
    }
    if (i->has_memory) {
        json_object_set_new(p, "memory_total", json_integer((json_int_t)i->mem_total));
        json_object_set_new(p, "memory_processed", json_integer((json_int_t)i->mem_processed));
        json_object_set_new(p, "memory_remaining", json_integer((json_int_t)i->mem_remaining));
        json_object_set_new(p, "memory_dirty_rate", json_integer((json_int_t)i->mem_dirty_rate));
        json_object_set_new(p, "iteration", json_integer((json_int_t)i->mem_iteration));
    }
    if (i->has_downtime)
        json_object_set_new(p, "downtime_ms", json_integer((json_int_t)i->downtime_ms));
    json_object_set_new(p, "max_downtime_ms", json_integer((json_int_t)m->max_downtime_ms));
    return p;
}

static int side_submit(struct op_run *r, enum side_kind kind);

/* The completion timeout: [migration] completion_timeout per GiB of
 * memory and disk (nova's data size: max(RAM GiB, 2) + max(disk GiB, 2)),
 * or the request's own figure. 0: none. */
static int64_t completion_bound_s(const struct op_run *r)
{
    const struct migration_info *m = &r->inst.mig;
    int64_t gib;

    if (m->completion_timeout_s < 0)
        return 0;
    if (m->completion_timeout_s > 0)
        return m->completion_timeout_s;
    gib = (r->inst.flavor.memory_mb + 1023) / 1024;
    gib = (gib > 2 ? gib : 2) + (r->inst.flavor.disk_gb > 2 ? r->inst.flavor.disk_gb : 2);
    return r->ops->cfg.migration_completion_timeout_s * gib;
}

static void side_done(struct hv *hv, void *arg, int status)
{
    struct side *s = arg;
    struct op_run *r = run_by_op(s->o, s->op_id);
    int64_t now = now_wall_ms();

    (void)hv;
    if (!r || status < 0 || r->step != STEP_MIGRATING) {
        free(s);
        return;
    }
    if (s->kind == SIDE_INFO && s->result == 0 && s->info.type == HV_JOB_UNBOUNDED) {
        int64_t bound = completion_bound_s(r);
        const char *pc = r->inst.mig.postcopy[0] ? r->inst.mig.postcopy
                         : r->ops->cfg.migration_postcopy ? r->ops->cfg.migration_postcopy : "never";
        json_decref(r->progress);
        r->progress = progress_json(&s->info, &r->inst.mig);
        if (now - r->progress_sent_ms >= PROGRESS_EVENT_MS) {
            r->progress_sent_ms = now;
            event(r, "migration.progress", json_pack("{s:O}", "progress", r->progress));
        }
        if (bound && (int64_t)s->info.elapsed_ms > bound * 1000 && !r->abort_asked) {
            if (!strcmp(pc, "auto") && !json_is_true(json_object_get(r->progress, "postcopy"))) {
                ops_log(LOG_WARN, "migration past its completion timeout: switching to post-copy", r, NULL);
                json_object_set_new(r->progress, "postcopy", json_true());
                side_submit(r, SIDE_POSTCOPY);
            } else if (strcmp(pc, "auto") != 0) {
                ops_log(LOG_WARN, "migration past its completion timeout: aborting", r, NULL);
                r->abort_asked = true;
                side_submit(r, SIDE_ABORT);
            }
        }
    } else if (s->kind != SIDE_INFO && s->result < 0) {
        ops_log(LOG_WARN, s->kind == SIDE_ABORT ? "cannot abort the migration job" : "cannot switch to post-copy", r,
                s->err.message);
    }
    free(s);
}

static int side_submit(struct op_run *r, enum side_kind kind)
{
    struct side *s = calloc(1, sizeof(*s));
    int rc;

    if (!s)
        return -ENOMEM;
    s->o = r->ops;
    s->kind = kind;
    strscpy(s->op_id, r->rec.id, sizeof(s->op_id));
    strscpy(s->uuid, r->inst.uuid, sizeof(s->uuid));
    if ((rc = hv_submit(r->ops->d.hv, side_work, side_done, s)) < 0)
        free(s);
    return rc;
}

static void on_monitor(uv_timer_t *t)
{
    struct op_run *r = t->data;

    if (!r->done && r->step == STEP_MIGRATING)
        side_submit(r, SIDE_INFO);
}

/* ---- the source's steps ---- */

static void migrate_advance(struct op_run *r)
{
    struct ops *o = r->ops;

    switch (r->step) {
    case STEP_REQUESTED:
        if (r->abort_asked) {
            struct agent_error e;
            agent_error_set(&e, ECANCELED, "aborted", NULL, "the migration was aborted before it began");
            source_failed(r, &e);
            return;
        }
        ops_migration_send(r, MIG_PREPARE, MIG_ACT_NONE, true, NULL);
        wait_peer(r, cfg_or(o->cfg.migration_prepare_timeout_s, 30));
        return;
    case STEP_PREPARED:
        if (ops_journal_step(r, STEP_MIGRATING) < 0)
            return; /* parked */
        uv_timer_start(&r->poll, on_monitor, MONITOR_MS, MONITOR_MS);
        ops_queue_job(r, JOB_MIGRATE);
        return;
    case STEP_MIGRATING:
        /* resumed: a job may still run (libvirtd carries a peer-to-peer
         * migration on); its end and the domain's place decide */
        uv_timer_start(&r->poll, on_monitor, MONITOR_MS, MONITOR_MS);
        ops_queue_job(r, JOB_MIGRATE_CHECK);
        return;
    case STEP_MOVED:
        ops_queue_job(r, JOB_MIG_RELEASE);
        return;
    default:
        ops_finish(r, NULL, NULL);
        return;
    }
}

static void migrate_job_done(struct op_run *r, const struct job *j)
{
    struct agent_error e;

    switch (j->kind) {
    case JOB_MIGRATE:
    case JOB_MIGRATE_CHECK:
        uv_timer_stop(&r->poll);
        if (j->here == 0) {
            event(r, "migration.completed", r->progress ? json_pack("{s:O}", "progress", r->progress) : NULL);
            if (ops_journal_step(r, STEP_MOVED) == 0)
                ops_run_advance(r);
        } else if (j->here == 1) {
            if (j->result < 0)
                e = j->err;
            else
                agent_error_set(&e, EIO, "migration_failed", NULL,
                                "the migration ended with the domain still active on this host");
            if (r->abort_asked && j->result < 0)
                agent_error_set(&e, ECANCELED, "aborted", NULL, "the migration was aborted: %s", j->err.message);
            source_failed(r, &e);
        } else {
            /* where the domain is cannot be read now: decide after the
             * reconnect (resumes at migrating) */
            r->parked = true;
            ops_log(LOG_WARN, "migration outcome unknown: waiting for the hypervisor", r, j->err.message);
        }
        return;
    case JOB_MIG_RELEASE:
        if (j->result < 0)
            ops_log(LOG_WARN, "cannot release every port of a migrated guest", r, j->err.message);
        for (size_t i = 0; i < r->inst.n_ports; i++)
            strscpy(r->inst.ports[i].state, "unplugged", sizeof(r->inst.ports[i].state));
        ops_migration_send(r, MIG_COMMIT, MIG_ACT_LIVE_DONE, true, NULL);
        wait_peer(r, cfg_or(r->ops->cfg.migration_commit_timeout_s, 30));
        return;
    default:
        return;
    }
}

const struct op_type op_type_migrate = {
    .kind = OP_MIGRATE,
    .name = "migrate",
    .steps = migrate_steps,
    .need_state = NULL,
    .task_state = "migrating",
    .new_state = NULL,
    .resume_prev_state = "running",
    .advance = migrate_advance,
    .job_done = migrate_job_done,
    .prepare = migrate_prepare,
};

int ops_migrate_abort(struct ops *o, struct instance *inst, json_t **answer, struct agent_error *err)
{
    struct op_run *r = ops_find_run(o, inst->uuid);
    int rc;

    if (!r || r->type->kind != OP_MIGRATE)
        return agent_error_set(err, EBUSY, "conflict", "action", "instance '%s' has no migration in progress",
                               inst->uuid);
    if (r->step == STEP_MOVED)
        return agent_error_set(err, EBUSY, "conflict", "action",
                               "the guest of instance '%s' already runs on %s: too late to abort", inst->uuid,
                               r->inst.mig.peer);
    r->abort_asked = true;
    *answer = json_pack("{s:o, s:o}", "instance", instance_to_json(&r->inst), "operation", op_record_to_json(&r->rec));
    ops_log(LOG_INFO, "migration abort asked", r, NULL);
    if (r->step == STEP_REQUESTED || r->step == STEP_PREPARED) {
        /* nothing moves yet: it ends now (the target is told to clean up) */
        struct agent_error e;
        agent_error_set(&e, ECANCELED, "aborted", NULL, "the migration was aborted before it began");
        if (!r->job_running)
            source_failed(r, &e);
        return 202;
    }
    if ((rc = side_submit(r, SIDE_ABORT)) < 0) {
        json_decref(*answer);
        *answer = NULL;
        return agent_error_set(err, -rc, "internal", NULL, "cannot queue the abort");
    }
    return 202;
}

/* ---- the target ---- */

static void in_failed(struct op_run *r, const struct agent_error *e)
{
    r->inst.mig.pending = false;
    ops_launch_fail(r, e); /* JOB_CLEANUP, then ops_migrate_in_rolled_back */
}

void ops_migrate_in_rolled_back(struct op_run *r)
{
    struct ops *o = r->ops;
    bool answered = r->step >= STEP_PREPARED;

    stop_wait(r);
    r->inst.mig.pending = false;
    if (o->d.imgcache)
        imgcache_release(o->d.imgcache, NULL, r->inst.uuid);
    ops_set_str(&r->inst.disk_path, NULL);
    if (!answered)
        ops_migration_send(r, MIG_PREPARED, MIG_ACT_NONE, false, &r->fail);
    else
        ops_migration_send(r, MIG_COMMITTED, MIG_ACT_ABORT, true, NULL);
    set_result(r, "failed", "nothing of the guest is left on this host");
    event(r, r->abort_asked ? "migration.aborted" : "migration.failed", NULL);
    ops_finish(r, "migrated", &r->fail);
}

static void in_arrived(struct op_run *r)
{
    /* our metadata with this host as owner, which also proves the domain
     * is here; then its power */
    stop_wait(r);
    ops_queue_job(r, JOB_META);
}

static void migrate_in_advance(struct op_run *r)
{
    bool cached = boot_source_uses_cache(&r->inst.boot);

    switch (r->step) {
    case STEP_CLAIMED:
    case STEP_IMAGE:
        if (cached && !r->base_path) {
            ops_acquire_image(r);
            return;
        }
        if (r->step == STEP_CLAIMED && ops_journal_step(r, STEP_IMAGE) < 0)
            return;
        /* fall through */
    case STEP_PORTS:
        if (r->inst.n_ports && r->step < STEP_PORTS) {
            if (r->ops->reconciling) {
                r->parked = true; /* after the reconcile's port sync */
                return;
            }
            ops_queue_job(r, JOB_PLUG);
            return;
        }
        ops_queue_job(r, JOB_MIG_DISK);
        return;
    case STEP_PREPARED: {
        int64_t left = r->inst.mig.deadline_ms - now_wall_ms();
        if (r->abort_asked) {
            struct agent_error e;
            agent_error_set(&e, ECANCELED, "aborted", NULL, "the source aborted the migration");
            in_failed(r, &e);
            return;
        }
        /* answered (again: a resumed run, a repeated prepare) */
        ops_migration_send(r, MIG_PREPARED, MIG_ACT_NONE, true, NULL);
        r->wait = WAIT_PEER;
        uv_timer_start(&r->timer, on_peer_timeout, left > 1000 ? (uint64_t)left : 1000, 0);
        return;
    }
    default:
        ops_finish(r, NULL, NULL);
        return;
    }
}

static void migrate_in_job_done(struct op_run *r, const struct job *j)
{
    switch (j->kind) {
    case JOB_PLUG:
        if (j->result < 0) {
            in_failed(r, &j->err);
            return;
        }
        for (size_t i = 0; i < r->inst.n_ports; i++)
            strscpy(r->inst.ports[i].state, "plugged", sizeof(r->inst.ports[i].state));
        if (ops_journal_step(r, STEP_PORTS) == 0) {
            if (r->ops->hooks.ports_plugged)
                r->ops->hooks.ports_plugged(r->ops->opaque, &r->inst);
            ops_run_advance(r);
        }
        return;
    case JOB_MIG_DISK:
        if (j->result < 0) {
            in_failed(r, &j->err);
            return;
        }
        if (j->inst.disk_path)
            ops_set_str(&r->inst.disk_path, j->inst.disk_path);
        if (ops_journal_step(r, STEP_PREPARED) == 0)
            ops_run_advance(r);
        return;
    case JOB_META:
        if (j->result == -ENOENT) {
            /* no domain here: not arrived */
            if (r->wait == WAIT_NONE && now_wall_ms() < r->inst.mig.deadline_ms) {
                ops_run_advance(r); /* keep waiting */
                return;
            }
            struct agent_error e;
            agent_error_set(&e, ETIMEDOUT, "migration_failed", NULL, "the guest never arrived on this host");
            in_failed(r, &e);
            return;
        }
        ops_queue_job(r, JOB_POWER);
        return;
    case JOB_POWER:
        if (j->result < 0 || (j->power != HV_POWER_RUNNING && j->power != HV_POWER_PAUSED)) {
            struct agent_error e;
            if (j->result < 0)
                e = j->err;
            else
                agent_error_set(&e, EIO, "migration_failed", NULL, "the guest is %s on this host",
                                hv_power_name(j->power));
            in_failed(r, &e);
            return;
        }
        if (j->power == HV_POWER_PAUSED && now_wall_ms() < r->inst.mig.deadline_ms) {
            /* an incoming domain, still paused: the switch-over is not
             * done; the source's word or the deadline settles it */
            r->wait = WAIT_PEER;
            uv_timer_start(&r->timer, on_peer_timeout, 1000, 0);
            return;
        }
        r->inst.mig.pending = false;
        ops_migration_send(r, MIG_COMMITTED, MIG_ACT_LIVE_DONE, true, NULL);
        set_result(r, "completed", NULL);
        event(r, "migration.completed", NULL);
        ops_finish(r, ops_state_of_power(j->power), NULL);
        return;
    default:
        return;
    }
}

const struct op_type op_type_migrate_in = {
    .kind = OP_MIGRATE_IN,
    .name = "migrate_in",
    .steps = migrate_in_steps,
    .resume_prev_state = "migrating",
    .advance = migrate_in_advance,
    .job_done = migrate_in_job_done,
};

static void on_peer_timeout(uv_timer_t *t)
{
    struct op_run *r = t->data;
    struct agent_error e;

    if (r->done || r->wait != WAIT_PEER)
        return;
    r->wait = WAIT_NONE;
    if (r->type->kind == OP_MIGRATE_IN) {
        /* the source is silent: the domain decides (or we look again) */
        if (!r->job_running)
            in_arrived(r);
        return;
    }
    if (r->step == STEP_REQUESTED) {
        agent_error_set(&e, ETIMEDOUT, "peer_timeout", "target",
                        "the target %s did not answer the prepare within %lld s", r->inst.mig.peer,
                        (long long)cfg_or(r->ops->cfg.migration_prepare_timeout_s, 30));
        source_failed(r, &e);
    } else if (r->step == STEP_MOVED) {
        source_done(r, "the target did not confirm within [migration] commit_timeout; the guest left this host");
    }
}

/* ---- a prepare, on the target ---- */

static int refuse(struct ops *o, const struct mig_msg *m, const struct agent_error *why, struct agent_error *err)
{
    struct op_run tmp = {.ops = o, .type = &op_type_migrate_in};

    /* an answer without a run: from the message's own fields */
    strscpy(tmp.inst.uuid, m->instance_id, sizeof(tmp.inst.uuid));
    strscpy(tmp.inst.mig.id, m->migration_id, sizeof(tmp.inst.mig.id));
    strscpy(tmp.inst.mig.peer, m->from, sizeof(tmp.inst.mig.peer));
    ops_migration_send(&tmp, m->kind == MIG_COMMIT ? MIG_COMMITTED : MIG_PREPARED,
                       m->kind == MIG_COMMIT ? m->action : MIG_ACT_NONE, m->kind == MIG_COMMIT, why);
    log_warn("migration prepare refused", "instance=%s migration=%s source=%s code=%s field=%s error=%s",
             m->instance_id, m->migration_id, m->from, why ? why->code : "", why ? why->field : "",
             why ? why->message : "");
    if (err && why)
        *err = *why;
    return -(why && why->code[0] ? EPERM : EINVAL);
}

/* The source's ports, here: each network configured, its MAC and IP free. */
static int check_ports(struct ops *o, const struct instance *in, struct agent_error *err)
{
    for (size_t i = 0; i < in->n_ports; i++) {
        const struct port *p = &in->ports[i];
        char owner[37], field[48];
        struct port held;
        snprintf(field, sizeof(field), "instance.ports[%zu].network", i);
        if (!o->d.np)
            return agent_error_set(err, ENOTSUP, "not_supported", field, "guest networking is not set up here");
        if (!ops_network_of(o, p->network))
            return agent_error_set(err, EINVAL, "invalid_field", field, "network '%s' is not configured here",
                                   p->network);
        snprintf(field, sizeof(field), "instance.ports[%zu].mac", i);
        if (store_port_mac_owner(o->d.store, p->mac, owner) == 0 && strcmp(owner, in->uuid))
            return agent_error_set(err, EEXIST, "conflict", field, "MAC %s is in use here", p->mac);
        snprintf(field, sizeof(field), "instance.ports[%zu].ip", i);
        if (p->ip[0] && store_port_by_ip(o->d.store, p->network, p->ip, &held, owner) == 0 && strcmp(owner, in->uuid))
            return agent_error_set(err, EEXIST, "conflict", field, "%s is in use on network %s here", p->ip,
                                   p->network);
    }
    return 0;
}

static int prepare_in(struct ops *o, const struct mig_msg *m, struct agent_error *err)
{
    struct instance held;
    struct agent_error why = {0};
    struct op_run *r;
    bool exists = false;
    int rc;

    if ((r = ops_find_run(o, m->instance_id))) {
        if (r->type->kind == OP_MIGRATE_IN && !strcmp(r->inst.mig.id, m->migration_id)) {
            if (r->step == STEP_PREPARED && !r->job_running)
                ops_migration_send(r, MIG_PREPARED, MIG_ACT_NONE, true, NULL); /* a repeat */
            return 0;
        }
        agent_error_set(&why, EBUSY, "conflict", "instance_id", "instance %s has an operation in progress here",
                        m->instance_id);
        return refuse(o, m, &why, err);
    }
    rc = store_instance_get(o->d.store, m->instance_id, &held);
    if (rc == 0) {
        exists = true;
        bool gone = instance_is_gone(&held), same = !strcmp(held.mig.id, m->migration_id);
        instance_release(&held);
        if (same) {
            agent_error_set(&why, EALREADY, "conflict", "migration_id", "migration %s already ended here",
                            m->migration_id);
            return refuse(o, m, &why, err);
        }
        if (!gone) {
            agent_error_set(&why, EEXIST, "conflict", "instance_id", "instance %s exists on this host",
                            m->instance_id);
            return refuse(o, m, &why, err);
        }
    } else if (rc != -ENOENT) {
        return agent_error_set(err, -rc, "internal", NULL, "cannot read the store");
    }
    if (strcmp(m->mode, "live") != 0)
        agent_error_set(&why, ENOTSUP, "not_supported", "mode", "cold migration is not available yet here");
    else if (host_disabled(o->d.host))
        agent_error_set(&why, EBUSY, "host_disabled", NULL, "the target host is disabled");
    else if (!hv_connected(o->d.hv))
        agent_error_set(&why, EAGAIN, "unavailable", NULL, "the target's hypervisor is not connected");
    else if (!host_ready(o->d.host))
        agent_error_set(&why, EAGAIN, "unavailable", NULL, "the target agent is still reconciling");
    else if (!hv_supports(o->d.hv, HV_FEAT_LIVE_MIGRATE))
        agent_error_set(&why, ENOTSUP, "not_supported", "mode", "the target's %s driver cannot take a live migration",
                        hv_driver_name(o->d.hv));
    else if (boot_source_uses_cache(&m->inst.boot) && !o->d.imgcache)
        agent_error_set(&why, ENOTSUP, "not_supported", "instance.boot", "the target has no image cache");
    if (!why.code[0] && resources_check(o->d.res, o->d.store, &m->inst.flavor, &why) < 0 && !why.field[0])
        strscpy(why.field, "instance.flavor", sizeof(why.field));
    if (!why.code[0])
        check_ports(o, &m->inst, &why);
    if (why.code[0])
        return refuse(o, m, &why, err);
    if (!(r = ops_run_new(o, &op_type_migrate_in)))
        return -ENOMEM;
    if ((rc = instance_copy(&r->inst, &m->inst)) < 0) {
        ops_run_discard(r);
        return rc;
    }
    {
        struct instance *in = &r->inst;
        struct migration_info *mi = &in->mig;
        memset(mi, 0, sizeof(*mi));
        mi->pending = true;
        strscpy(mi->id, m->migration_id, sizeof(mi->id));
        strscpy(mi->role, "target", sizeof(mi->role));
        strscpy(mi->mode, m->mode, sizeof(mi->mode));
        strscpy(mi->peer, m->from, sizeof(mi->peer));
        mi->power_on = m->power_on;
        mi->deadline_ms = now_wall_ms() + cfg_or(o->cfg.migration_incoming_timeout_s, 3600) * 1000;
        strscpy(in->state, "migrating", sizeof(in->state));
        strscpy(in->task_state, "migrating", sizeof(in->task_state));
        ops_set_str(&in->fault, NULL);
        ops_set_str(&in->disk_path, NULL);
        ops_set_str(&in->console_log, NULL);
        if (ops_hv_disk_files(o)) {
            char path[4300];
            snprintf(path, sizeof(path), "%s/%s/console.log", o->cfg.instances_dir, in->uuid);
            ops_set_str(&in->console_log, path);
        }
        /* the flavor's headroom as the source defined it: the domain comes with it */
        in->updated_ms = now_wall_ms();
        if (!in->created_ms)
            in->created_ms = in->updated_ms;
    }
    strscpy(r->prev_state, "migrating", sizeof(r->prev_state));
    ops_run_init_record(r, NULL, STEP_CLAIMED);
    {
        struct store *s = o->d.store;
        if ((rc = store_begin(s)) < 0 || (rc = store_instance_upsert(s, &r->inst, exists)) < 0 ||
            (rc = store_op_insert(s, &r->rec)) < 0 || (rc = events_instance(o->d.events, &r->inst, NULL)) < 0 ||
            (rc = store_commit(s)) < 0) {
            store_rollback(s);
            ops_run_discard(r);
            agent_error_set(&why, -rc, "conflict", "instance", "cannot record the incoming instance: %s",
                            strerror(-rc));
            return refuse(o, m, &why, err);
        }
    }
    strscpy(r->emitted, r->inst.state, sizeof(r->emitted));
    events_flush(o->d.events);
    ops_log(LOG_INFO, "migration prepare accepted", r, m->from);
    ops_crash_point(o, r);
    ops_run_advance(r);
    return 0;
}

/* ---- messages in ---- */

/* A message nothing here waits for (late, repeated, or not ours). */
static int stale(const struct mig_msg *m, struct agent_error *err)
{
    return agent_error_set(err, ENOENT, "not_found", "migration_id", "no migration %s of instance %s waits for %s from %s",
                           m->migration_id, m->instance_id, mig_kind_name(m->kind), m->from);
}

static struct op_run *run_of(struct ops *o, const struct mig_msg *m, enum op_kind kind)
{
    struct op_run *r = ops_find_run(o, m->instance_id);

    return r && r->type->kind == kind && !strcmp(r->inst.mig.id, m->migration_id) &&
                   !strcmp(r->inst.mig.peer, m->from)
               ? r
               : NULL;
}

int ops_migration_message(struct ops *o, const struct mig_msg *m, struct agent_error *err)
{
    struct op_run *r;

    if (o->stopping)
        return agent_error_set(err, ECANCELED, "unavailable", NULL, "the agent is stopping");
    switch (m->kind) {
    case MIG_PREPARE:
        return prepare_in(o, m, err);
    case MIG_PREPARED:
        if (!(r = run_of(o, m, OP_MIGRATE)) || r->step != STEP_REQUESTED || r->wait != WAIT_PEER)
            return stale(m, err);
        stop_wait(r);
        if (!m->ok) {
            source_failed(r, &m->error);
            return 0;
        }
        strscpy(r->inst.mig.peer_uri, m->libvirt_uri, sizeof(r->inst.mig.peer_uri));
        strscpy(r->inst.mig.peer_migrate_uri, m->migrate_uri, sizeof(r->inst.mig.peer_migrate_uri));
        strscpy(r->inst.mig.peer_instances_dir, m->instances_dir, sizeof(r->inst.mig.peer_instances_dir));
        strscpy(r->inst.mig.peer_image_dir, m->image_dir, sizeof(r->inst.mig.peer_image_dir));
        if (ops_journal_step(r, STEP_PREPARED) == 0)
            ops_run_advance(r);
        return 0;
    case MIG_COMMIT:
        if (!(r = run_of(o, m, OP_MIGRATE_IN))) {
            /* settled already (a repeat): answer what the store says */
            struct instance in;
            if (store_instance_get(o->d.store, m->instance_id, &in) == 0) {
                bool mine = !strcmp(in.mig.id, m->migration_id) && !in.mig.pending;
                bool arrived = mine && !instance_is_gone(&in);
                instance_release(&in);
                if (mine && (arrived == (m->action == MIG_ACT_LIVE_DONE))) {
                    struct op_run tmp = {.ops = o, .type = &op_type_migrate_in};
                    strscpy(tmp.inst.uuid, m->instance_id, sizeof(tmp.inst.uuid));
                    strscpy(tmp.inst.mig.id, m->migration_id, sizeof(tmp.inst.mig.id));
                    strscpy(tmp.inst.mig.peer, m->from, sizeof(tmp.inst.mig.peer));
                    ops_migration_send(&tmp, MIG_COMMITTED, m->action, true, NULL);
                    return 0; /* a repeat, answered again */
                }
            }
            return stale(m, err);
        }
        if (m->action == MIG_ACT_ABORT) {
            struct agent_error e;
            r->abort_asked = true;
            if (r->job_running || r->step < STEP_PREPARED)
                return 0; /* its job's return (or the prepared step) sees abort_asked */
            agent_error_set(&e, ECANCELED, "aborted", NULL, "the source aborted the migration");
            stop_wait(r);
            in_failed(r, &e);
        } else if (m->action == MIG_ACT_LIVE_DONE && r->step == STEP_PREPARED && !r->job_running) {
            in_arrived(r);
        }
        return 0;
    case MIG_COMMITTED:
        if (!(r = run_of(o, m, OP_MIGRATE)) || r->step != STEP_MOVED || r->wait != WAIT_PEER)
            return stale(m, err);
        source_done(r, m->ok ? NULL : m->error.message);
        return 0;
    default:
        return agent_error_set(err, ENOTSUP, "invalid_field", "op", "%s is not handled yet", mig_kind_name(m->kind));
    }
}
