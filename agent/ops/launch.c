/* launch.c: the launch operation (ops-internal.h).
 *
 *   claimed -> [image] -> defined -> started (with the result)
 *   image: the image cache has the image, pinned for this instance; only
 *   for images by id, url or glance_id. A failure rolls back (domain and
 *   disk) and leaves the instance in error. */
#include <stdlib.h>
#include <string.h>

#include "agent/host.h"
#include "agent/localfile.h"
#include "agent/ops/ops-internal.h"
#include "agent/resources.h"

static const enum op_step launch_steps[] = {STEP_CLAIMED, STEP_IMAGE, STEP_DEFINED, STEP_STARTED, STEP_NONE};

void ops_launch_fail(struct op_run *r, const struct agent_error *e)
{
    ops_log(LOG_WARN, "launch failed: rolling back", r, e->message);
    r->fail = *e;
    r->failing = true;
    ops_queue_job(r, JOB_CLEANUP);
}

static void on_image(int status, const struct imgcache_image_info *info, const struct agent_error *err,
                     void *opaque)
{
    struct op_run *r = opaque;

    r->job_running = false;
    if (r->done || r->ops->stopping) {
        ops_run_release(r);
        return;
    }
    if (status < 0) {
        ops_launch_fail(r, err);
        return;
    }
    free(r->base_path);
    r->base_path = strdup(info->path);
    strscpy(r->base_format, info->format, sizeof(r->base_format));
    r->base_vsize = info->virtual_size;
    if (!r->inst.boot.image_id)
        ops_set_str(&r->inst.boot.image_id, info->id);
    ops_log(LOG_INFO, "image ready", r, NULL);
    ops_run_advance(r);
}

/* Launch from the image cache: get (or find) the image, pinned for this
 * instance, before the domain is defined. */
static void acquire_image(struct op_run *r)
{
    struct imgcache *ic = r->ops->d.imgcache;
    const struct boot_source *b = &r->inst.boot;
    struct imgcache_request req = {0};
    struct agent_error err = {0};
    char id[IMGCACHE_ID_LEN];
    int rc;

    if (!ic) {
        agent_error_set(&err, ENOTSUP, "not_supported", "image", "the image cache is not running");
        ops_launch_fail(r, &err);
        return;
    }
    if (b->image_url) {
        req.url = b->image_url;
        req.digest = b->image_digest;
    } else if (b->image_glance_id) {
        req.glance_id = b->image_glance_id;
    } else {
        req.id = b->image_id;
    }
    r->job_running = true;
    rc = imgcache_acquire(ic, &req, r->inst.uuid, on_image, r, id, &err);
    if (rc == 0)
        strscpy(r->cache_id, id, sizeof(r->cache_id));
    if (rc < 0) {
        r->job_running = false;
        ops_launch_fail(r, &err);
    }
}

static void launch_advance(struct op_run *r)
{
    bool cached = boot_source_uses_cache(&r->inst.boot);

    switch (r->step) {
    case STEP_CLAIMED:
    case STEP_IMAGE:
        if (cached && !r->base_path)
            acquire_image(r);
        else if (cached && r->step == STEP_CLAIMED && ops_journal_step(r, STEP_IMAGE) < 0)
            return; /* parked */
        else
            ops_queue_job(r, JOB_DEFINE);
        break;
    case STEP_DEFINED:
        ops_queue_job(r, JOB_START);
        break;
    default:
        ops_queue_job(r, JOB_POWER); /* started: settle on what libvirt says */
        break;
    }
}

static void launch_job_done(struct op_run *r, const struct job *j)
{
    if (j->result < 0) {
        ops_launch_fail(r, &j->err);
        return;
    }
    switch (j->kind) {
    case JOB_DEFINE:
        if (j->inst.disk_path)
            ops_set_str(&r->inst.disk_path, j->inst.disk_path);
        if (ops_journal_step(r, STEP_DEFINED) == 0)
            ops_run_advance(r);
        break;
    case JOB_START:
        /* the step and the result go in one commit */
        r->step = STEP_STARTED;
        ops_finish(r, "running", NULL);
        if (r->done)
            ops_crash_point(r->ops, r);
        break;
    case JOB_POWER:
        ops_finish(r, ops_state_of_power(j->power), NULL);
        break;
    default:
        break;
    }
}

const struct op_type op_type_launch = {
    .kind = OP_LAUNCH,
    .name = "launch",
    .steps = launch_steps,
    .resume_prev_state = "running",
    .advance = launch_advance,
    .job_done = launch_job_done,
};

static void free_local(char *(*local)[3])
{
    for (size_t i = 0; i < ARRAY_SIZE(*local); i++)
        free((*local)[i]);
}

/* A launch's local files (image.path, kernel.path, kernel.initrd into
 * local[0..2], NULL where not given), resolved inside dirs: refused now,
 * before anything is recorded, when outside them or not regular files. */
static int resolve_local_files(const char *dirs, const struct boot_source *b, char *local[3],
                               struct agent_error *err)
{
    const char *given[3] = {b->image_path, b->kernel, b->initrd};
    static const char *const field[3] = {"image.path", "kernel.path", "kernel.initrd"};
    int rc;

    for (int i = 0; i < 3; i++) {
        if (!given[i])
            continue;
        rc = localfile_resolve(dirs, given[i], field[i], i == 0 ? UINT64_MAX : LOCALFILE_BOOT_MAX,
                               &local[i], err);
        if (rc < 0) {
            for (int k = 0; k < i; k++) {
                free(local[k]);
                local[k] = NULL;
            }
            return rc;
        }
    }
    return 0;
}

/* Refuse a bad image reference now, before anything is recorded. */
static int check_image_ref(struct ops *o, const struct boot_source *boot, struct agent_error *err)
{
    struct imgcache_request req;
    json_t *ref;
    int rc;

    if (!o->d.imgcache)
        return agent_error_set(err, ENOTSUP, "not_supported", "image",
                               "images by id, url or glance_id need the image cache");
    ref = boot_source_to_json(boot);
    rc = imgcache_request_from_json(json_object_get(ref, "image"), "image", &req, err);
    if (rc == 0 && req.id) {
        json_t *known = imgcache_get(o->d.imgcache, req.id);
        if (!known)
            rc = agent_error_set(err, EINVAL, "invalid_field", "image.id", "no cached image '%s'", req.id);
        json_decref(known);
    }
    json_decref(ref);
    return rc;
}

/* The new instance from the spec, its local files as resolved. */
static void fill_instance(struct ops *o, struct instance *inst, const struct launch_spec *spec, char *local[3])
{
    uuid_generate_str(inst->uuid);
    ec2_id_generate(inst->ec2_id);
    inst->name = strdup(spec->name);
    strscpy(inst->state, "pending", sizeof(inst->state));
    strscpy(inst->task_state, "launching", sizeof(inst->task_state));
    inst->flavor = spec->flavor;
    inst->instance_type = spec->instance_type ? strdup(spec->instance_type) : NULL;
    inst->boot.kind = spec->boot.kind;
    ops_set_str(&inst->boot.image_path, local[0]);
    ops_set_str(&inst->boot.image_id, spec->boot.image_id);
    ops_set_str(&inst->boot.image_url, spec->boot.image_url);
    ops_set_str(&inst->boot.image_digest, spec->boot.image_digest);
    ops_set_str(&inst->boot.kernel, local[1]);
    ops_set_str(&inst->boot.initrd, local[2]);
    ops_set_str(&inst->boot.cmdline, spec->boot.cmdline);
    ops_set_str(&inst->boot.image_glance_id, spec->boot.image_glance_id);
    ops_set_str(&inst->user_data, spec->user_data);
    if (ops_hv_disk_files(o)) {
        char path[4300];
        snprintf(path, sizeof(path), "%s/%s/console.log", o->cfg.instances_dir, inst->uuid);
        inst->console_log = strdup(path);
    }
    inst->created_ms = inst->updated_ms = now_wall_ms();
}

int ops_launch(struct ops *o, const struct launch_spec *spec, json_t **answer, struct agent_error *err)
{
    struct op_run *r;
    _cleanup_(free_local) char *local[3] = {NULL, NULL, NULL};
    int rc;

    if (spec->request_id && (rc = ops_replay(o, spec->request_id, "launch", answer, err)) != 0)
        return rc;
    if (host_disabled(o->d.host))
        return agent_error_set(err, EBUSY, "conflict", NULL, "the host is disabled (computectl host enable)");
    if (!hv_connected(o->d.hv))
        return agent_error_set(err, EAGAIN, "unavailable", NULL, "the hypervisor is not connected");
    if (!host_ready(o->d.host))
        return agent_error_set(err, EAGAIN, "unavailable", NULL, "the agent is still reconciling");
    if ((rc = resolve_local_files(o->cfg.local_image_dirs, &spec->boot, local, err)) < 0)
        return rc;
    if ((rc = resources_check(o->d.res, o->d.store, &spec->flavor, err)) < 0) {
        if (spec->instance_type && rc == -ENOSPC)
            strscpy(err->field, "instance_type", sizeof(err->field));
        return rc;
    }
    if (boot_source_uses_cache(&spec->boot) && (rc = check_image_ref(o, &spec->boot, err)) < 0)
        return rc;
    if (!(r = ops_run_new(o, &op_type_launch)))
        return -ENOMEM;
    fill_instance(o, &r->inst, spec, local);
    strscpy(r->prev_state, "pending", sizeof(r->prev_state));
    ops_run_init_record(r, spec->request_id, STEP_CLAIMED);
    /* journal before acting: instance + operation in one transaction */
    return ops_run_accept(r, true, answer, err);
}
