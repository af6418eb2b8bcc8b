/* ops.c: see ops.h.
 *
 * Steps journaled per operation (and the crash points the tests use):
 *   launch:    claimed -> [image] -> defined -> started -> succeeded
 *              (image: the image cache has the image, pinned for this
 *              instance; only for images by id, url or glance_id)
 *   start:     requested -> succeeded
 *   stop:      requested -> (graceful shutdown, then forced) -> succeeded
 *   reboot:    requested -> (graceful reboot, then reset) -> succeeded
 *   terminate: requested -> destroyed -> undefined -> succeeded
 * A resumed operation repeats the work after its last journaled step; every
 * such piece of work is idempotent (define by UUID, start of a running
 * domain, destroy of a stopped one, undefine of a missing one). */
#include "agent/ops.h"

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "agent/events.h"
#include "agent/host.h"
#include "agent/localfile.h"
#include "agent/log.h"
#include "agent/metrics.h"
#include "agent/resources.h"
#include "image-cache/imgcache.h"

enum job_kind {
    JOB_DEFINE,   /* prepare files, build XML, define */
    JOB_START,
    JOB_SHUTDOWN, /* graceful; reports the power state after */
    JOB_DESTROY,
    JOB_REBOOT,
    JOB_RESET,
    JOB_UNDEFINE, /* undefine and remove the guest's disk */
    JOB_POWER,
    JOB_CLEANUP,  /* destroy + undefine, errors ignored (rollback) */
    JOB_LIST,     /* reconcile: every domain */
};

enum wait_kind { WAIT_NONE, WAIT_STOPPED, WAIT_REBOOTED };

struct op_run {
    struct ops *ops;
    struct op_record rec;     /* the journal row */
    struct instance inst;     /* the instance as last written */
    struct op_run *prev, *next;
    enum wait_kind wait;      /* an event the operation waits for */
    uv_timer_t timer;         /* graceful timeout */
    bool job_running;         /* a worker job holds this run */
    bool done;                /* finished; freed when no job holds it */
    bool parked;              /* waiting for the hypervisor to come back */
    bool failing;             /* rolling back before failing */
    bool force;               /* stop/reboot without the graceful part */
    int64_t timeout_s;        /* graceful timeout */
    char prev_state[16];      /* instance state before the operation */
    char emitted[16];         /* instance state last sent as an event */
    struct agent_error fail;  /* why it fails (when failing) */
    char *base_path;          /* the cached base image (image cache launches) */
    char cache_id[IMGCACHE_ID_LEN]; /* the cache entry being acquired, "" if none */
    char base_format[8];      /* its format, detected by the cache */
    uint64_t base_vsize;      /* its virtual size */
};

struct job {
    uv_work_t work;
    struct ops *ops;
    struct op_run *run;       /* NULL for JOB_LIST */
    enum job_kind kind;
    int result;
    struct agent_error err;
    enum hv_power power;
    struct hv_domain *doms;   /* JOB_LIST */
    size_t ndoms;
    int64_t list_ms;          /* JOB_LIST: when the snapshot was taken */
    struct instance inst;     /* a copy for the worker (JOB_DEFINE) */
    char *base_path;          /* JOB_DEFINE: cached base (copied from the run) or resolved local image */
    char base_format[8];      /* its format, as its inspection found it */
    uint64_t base_vsize;
    void (*list_done)(void *opaque, int result); /* JOB_LIST */
    void *list_opaque;
};

struct ops {
    uv_loop_t *loop;
    struct ops_deps d;        /* borrowed objects */
    struct ops_config cfg;    /* strings borrowed */
    struct ops_hooks hooks;
    void *opaque;             /* for the hooks */
    struct op_run *runs;      /* operations in flight */
    unsigned n_runs;
    bool reconciling;
    bool stopping;            /* ops_stop(): no new work, drain jobs */
};

static void advance(struct op_run *r);
static void queue_job(struct op_run *r, enum job_kind kind);

/* ---- small helpers ---- */

static void crash_point(struct ops *o, const struct op_record *rec)
{
    char here[64];

    if (!o->cfg.crash_at)
        return;
    snprintf(here, sizeof(here), "%s:%s", rec->type, rec->step);
    if (strcmp(here, o->cfg.crash_at) == 0) {
        log_warn("crash point reached: killing the agent", "op=%s point=%s", rec->id, here);
        raise(SIGKILL);
    }
}

static void set_str(char **dst, const char *src)
{
    free(*dst);
    *dst = src ? strdup(src) : NULL;
}

static struct op_run *find_run(struct ops *o, const char *uuid)
{
    for (struct op_run *r = o->runs; r; r = r->next)
        if (!r->done && strcmp(r->inst.uuid, uuid) == 0)
            return r;
    return NULL;
}

static json_t *answer_of(const struct instance *inst, const struct op_record *op)
{
    return json_pack("{s:o, s:o}", "instance", instance_to_json(inst), "operation",
                     op_record_to_json(op));
}

static void log_op(enum log_level lvl, const char *msg, const struct op_run *r, const char *extra)
{

    if (extra)
        log_event(lvl, msg, "instance=%s ec2_id=%s op=%s type=%s step=%s request_id=%s error=%s",
                  r->inst.uuid, r->inst.ec2_id, r->rec.id, r->rec.type, r->rec.step[0] ? r->rec.step : "-",
                  r->rec.request_id ? r->rec.request_id : "-", extra);
    else
        log_event(lvl, msg, "instance=%s ec2_id=%s op=%s type=%s step=%s request_id=%s",
                  r->inst.uuid, r->inst.ec2_id, r->rec.id, r->rec.type, r->rec.step[0] ? r->rec.step : "-",
                  r->rec.request_id ? r->rec.request_id : "-");
}

/* ---- journal ---- */

static bool done_now(const struct op_run *r)
{
    return !strcmp(r->rec.state, "succeeded") || !strcmp(r->rec.state, "failed");
}

/* Write the run's op row and instance row in one transaction, with the
 * events they cause (instance.<state> when it changed, operation.<result>
 * when it ended) in the outbox. */
static int journal(struct op_run *r)
{
    struct store *s = r->ops->d.store;
    int64_t now = now_wall_ms();
    int rc;

    r->rec.updated_ms = now;
    r->inst.updated_ms = now;
    if ((rc = store_begin(s)) < 0)
        return rc;
    if ((rc = store_op_update(s, &r->rec)) < 0 || (rc = store_instance_update(s, &r->inst)) < 0 ||
        (strcmp(r->emitted, r->inst.state) &&
         (rc = events_instance(r->ops->d.events, &r->inst, r->rec.request_id)) < 0) ||
        (done_now(r) && (rc = events_operation(r->ops->d.events, &r->rec, &r->inst)) < 0)) {
        store_rollback(s);
        return rc;
    }
    if ((rc = store_commit(s)) < 0)
        return rc;
    strscpy(r->emitted, r->inst.state, sizeof(r->emitted));
    events_flush(r->ops->d.events);
    return 0;
}

static void journal_step(struct op_run *r, const char *step)
{
    int rc;

    strscpy(r->rec.step, step, sizeof(r->rec.step));
    strscpy(r->rec.state, "running", sizeof(r->rec.state));
    rc = journal(r);
    if (rc < 0) {
        /* the store is the agent's memory: without it, stop acting */
        log_op(LOG_ERROR, "cannot journal an operation step", r, strerror(-rc));
        return;
    }
    log_op(LOG_DEBUG, "operation step", r, NULL);
    crash_point(r->ops, &r->rec);
}

static void on_run_closed(uv_handle_t *h)
{
    struct op_run *r = h->data;

    instance_release(&r->inst);
    op_record_release(&r->rec);
    free(r->base_path);
    free(r);
}

static void run_release(struct op_run *r)
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
    uv_close((uv_handle_t *)&r->timer, on_run_closed);
}

/* End the operation: record the result and the instance's new state. */
static void finish(struct op_run *r, const char *inst_state, const struct agent_error *failure)
{
    int rc;

    uv_timer_stop(&r->timer);
    r->wait = WAIT_NONE;
    strscpy(r->rec.state, failure ? "failed" : "succeeded", sizeof(r->rec.state));
    metrics_op_finished(r->ops->d.metrics, r->rec.type, r->rec.state,
                        (double)(now_wall_ms() - r->rec.created_ms) / 1000.0);
    if (failure) {
        strscpy(r->rec.error_code, failure->code[0] ? failure->code : "internal", sizeof(r->rec.error_code));
        set_str(&r->rec.error_message, failure->message);
    }
    if (inst_state)
        strscpy(r->inst.state, inst_state, sizeof(r->inst.state));
    r->inst.task_state[0] = '\0';
    /* the instance no longer needs its cached image */
    if (r->ops->d.imgcache && ((!failure && !strcmp(r->rec.type, "terminate")) ||
                                (failure && !strcmp(r->rec.type, "launch"))))
        imgcache_release(r->ops->d.imgcache, NULL, r->inst.uuid);
    if (failure && inst_state && strcmp(inst_state, "error") == 0)
        set_str(&r->inst.fault, failure->message);
    else if (!failure)
        set_str(&r->inst.fault, NULL);
    rc = journal(r);
    if (rc < 0)
        log_op(LOG_ERROR, "cannot journal an operation result", r, strerror(-rc));
    log_op(failure ? LOG_WARN : LOG_INFO, failure ? "operation failed" : "operation succeeded", r,
           failure ? failure->message : NULL);
    r->done = true;
    if (r->ops->hooks.operation_finished)
        r->ops->hooks.operation_finished(r->ops->opaque, &r->rec, &r->inst);
    if (!r->job_running)
        run_release(r);
}

/* ---- worker jobs ---- */

/* The guest's disk: a qcow2 overlay on its base image, grown to the
 * flavor's disk size. The base (the image cache's verified file, or a local
 * image.path resolved and inspected by check_local_files()) comes with the
 * format its inspection found, which the overlay names explicitly: nothing
 * probes the base's bytes again. The overlay is written beside its final
 * name and renamed into place, so a crash never leaves a half-written disk
 * that a resumed launch would use. */
static int prepare_disk(struct instance *inst, const struct job *j, const char *dir,
                        const char **format, struct agent_error *err)
{
    char overlay[4400], tmp[4500];
    uint64_t want;
    int r;

    if (!j->base_path)
        return 0;
    snprintf(overlay, sizeof(overlay), "%s/disk.qcow2", dir);
    if (access(overlay, F_OK) != 0) {
        want = (uint64_t)inst->flavor.disk_gb << 30;
        if (want < j->base_vsize)
            want = j->base_vsize;
        snprintf(tmp, sizeof(tmp), "%s.tmp", overlay);
        unlink(tmp); /* a leftover of a crash */
        if ((r = imgcache_qcow2_overlay_write(tmp, j->base_path, j->base_format, want, err)) < 0)
            return r;
        if (rename(tmp, overlay) < 0) {
            r = agent_error_set(err, errno, "internal", NULL, "rename %s: %s", tmp, strerror(errno));
            unlink(tmp);
            return r;
        }
    }
    set_str(&inst->disk_path, overlay);
    *format = "qcow2";
    return 0;
}

/* Local guest files, checked again where they are used (the launch checked
 * them when it was accepted; a crash may have come between, or the files
 * changed): each resolved once more inside hypervisor.local_image_dirs, the
 * symlink-free result used from here on; a local image is judged by the
 * image cache's inspection, which decides its format. */
static int check_local_files(struct job *j, struct agent_error *err)
{
    struct boot_source *b = &j->inst.boot;
    const char *dirs = j->ops->cfg.local_image_dirs;
    char *real = NULL, format[16];
    int r;

    if (b->kernel) {
        if ((r = localfile_resolve(dirs, b->kernel, "kernel.path", LOCALFILE_BOOT_MAX, &real, err)) < 0)
            return r;
        free(b->kernel);
        b->kernel = TAKE_PTR(real);
    }
    if (b->initrd) {
        if ((r = localfile_resolve(dirs, b->initrd, "kernel.initrd", LOCALFILE_BOOT_MAX, &real, err)) < 0)
            return r;
        free(b->initrd);
        b->initrd = TAKE_PTR(real);
    }
    if (!b->image_path || j->base_path)
        return 0;
    if (!j->ops->d.imgcache)
        return agent_error_set(err, ENOTSUP, "not_supported", "image.path",
                               "local images are inspected by the image cache, which is not running");
    if ((r = localfile_resolve(dirs, b->image_path, "image.path", UINT64_MAX, &real, err)) < 0)
        return r;
    r = imgcache_file_inspect(j->ops->d.imgcache, real, format, &j->base_vsize, err);
    if (r < 0) {
        free(real);
        if (err && !err->field[0])
            strscpy(err->field, "image.path", sizeof(err->field));
        return r;
    }
    strscpy(j->base_format, format, sizeof(j->base_format));
    j->base_path = real;
    return 0;
}

static void instance_dir(struct ops *o, const char *uuid, char *buf, size_t size)
{
    if ((size_t)snprintf(buf, size, "%s/%s", o->cfg.instances_dir, uuid) >= size)
        buf[0] = '\0';
}

static void job_define(struct job *j)
{
    struct ops *o = j->ops;
    struct hv *hv = o->d.hv;
    const char *format = NULL;
    char dir[4300];
    char *xml = NULL;
    struct hv_guest g = {.inst = &j->inst};

    if ((j->result = check_local_files(j, &j->err)) < 0)
        return;
    if (hv_driver(hv)->disk_files) {
        instance_dir(o, j->inst.uuid, dir, sizeof(dir));
        if (mkdir(dir, 0750) < 0 && errno != EEXIST) {
            j->result = agent_error_set(&j->err, errno, "internal", NULL, "mkdir %s: %s", dir,
                                        strerror(errno));
            return;
        }
        if ((j->result = prepare_disk(&j->inst, j, dir, &format, &j->err)) < 0)
            return;
        g.console_log = j->inst.console_log;
    }
    g.disk_path = j->inst.disk_path;
    g.disk_format = format;
    if ((j->result = hv_domain_xml(hv, &g, &xml, &j->err)) < 0)
        return;
    j->result = hv_define(hv, xml, &j->err);
    free(xml);
}

static void remove_disk(struct ops *o, const char *uuid)
{
    char path[4300];

    instance_dir(o, uuid, path, sizeof(path));
    strncat(path, "/disk.qcow2", sizeof(path) - strlen(path) - 1);
    unlink(path);
}

static void job_work(uv_work_t *w)
{
    struct job *j = w->data;
    struct hv *hv = j->ops->d.hv;
    const char *uuid = j->run ? j->run->inst.uuid : NULL;
    struct agent_error ignored;

    switch (j->kind) {
    case JOB_DEFINE:
        job_define(j);
        break;
    case JOB_START:
        j->result = hv_start(hv, uuid, &j->err);
        break;
    case JOB_SHUTDOWN:
        if ((j->result = hv_power(hv, uuid, &j->power, &j->err)) < 0 || j->power == HV_POWER_SHUTOFF)
            break;
        j->result = hv_shutdown(hv, uuid, &j->err);
        if (j->result == 0 && hv_power(hv, uuid, &j->power, &ignored) < 0)
            j->power = HV_POWER_NOSTATE;
        break;
    case JOB_DESTROY:
        j->result = hv_destroy(hv, uuid, &j->err);
        if (j->result == -ENOENT && strcmp(j->run->rec.type, "terminate") == 0)
            j->result = 0; /* already gone */
        break;
    case JOB_REBOOT:
        j->result = hv_reboot(hv, uuid, &j->err);
        break;
    case JOB_RESET:
        j->result = hv_reset(hv, uuid, &j->err);
        break;
    case JOB_UNDEFINE:
        j->result = hv_undefine(hv, uuid, &j->err);
        if (j->result == 0)
            remove_disk(j->ops, uuid);
        break;
    case JOB_POWER:
        j->result = hv_power(hv, uuid, &j->power, &j->err);
        break;
    case JOB_CLEANUP:
        hv_destroy(hv, uuid, &ignored);
        /* the disk goes only with its domain: a domain still defined (libvirtd
         * away during the rollback) keeps its disk, so reconcile finds a
         * whole guest, never one whose disk is gone */
        if (hv_undefine(hv, uuid, &ignored) == 0)
            remove_disk(j->ops, uuid);
        j->result = 0;
        break;
    case JOB_LIST:
        j->list_ms = now_wall_ms();
        j->result = hv_list(hv, &j->doms, &j->ndoms, &j->err);
        break;
    }
}

static void job_after_run(struct job *j);
static void reconcile_after(struct job *j);

static void job_after(uv_work_t *w, int status)
{
    struct job *j = w->data;

    (void)status;
    if (j->kind == JOB_LIST)
        reconcile_after(j);
    else
        job_after_run(j);
    instance_release(&j->inst);
    hv_domain_list_free(j->doms, j->ndoms);
    free(j->base_path);
    free(j);
}

static void queue_job(struct op_run *r, enum job_kind kind)
{
    struct job *j = calloc(1, sizeof(*j));
    int rc;

    if (!j || (kind == JOB_DEFINE && instance_copy(&j->inst, &r->inst) < 0)) {
        free(j);
        struct agent_error e;
        agent_error_set(&e, ENOMEM, "internal", NULL, "out of memory");
        finish(r, "error", &e);
        return;
    }
    j->work.data = j;
    j->ops = r->ops;
    j->run = r;
    j->kind = kind;
    if (kind == JOB_DEFINE && r->base_path) {
        j->base_path = strdup(r->base_path);
        strscpy(j->base_format, r->base_format, sizeof(j->base_format));
        j->base_vsize = r->base_vsize;
    }
    r->job_running = true;
    rc = uv_queue_work(r->ops->loop, &j->work, job_work, job_after);
    if (rc < 0) {
        r->job_running = false;
        instance_release(&j->inst);
        free(j);
        struct agent_error e;
        agent_error_set(&e, -rc, "internal", NULL, "cannot queue work: %s", uv_strerror(rc));
        finish(r, "error", &e);
    }
}

/* ---- the state machines ---- */

static void on_timeout(uv_timer_t *t)
{
    struct op_run *r = t->data;

    if (r->done || r->wait == WAIT_NONE)
        return;
    if (r->wait == WAIT_STOPPED) {
        log_op(LOG_WARN, "graceful stop timed out: forcing", r, NULL);
        r->wait = WAIT_NONE;
        queue_job(r, JOB_DESTROY);
    } else {
        log_op(LOG_WARN, "graceful reboot timed out: resetting", r, NULL);
        r->wait = WAIT_NONE;
        queue_job(r, JOB_RESET);
    }
}

static void start_wait(struct op_run *r, enum wait_kind w)
{
    r->wait = w;
    uv_timer_start(&r->timer, on_timeout, (uint64_t)r->timeout_s * 1000, 0);
}

static const char *state_of_power(enum hv_power p)
{
    return p == HV_POWER_RUNNING || p == HV_POWER_PAUSED || p == HV_POWER_SHUTDOWN ? "running" : "stopped";
}

/* Start the roll back of a failed launch, then fail it. */
static void fail_launch(struct op_run *r, const struct agent_error *e)
{
    log_op(LOG_WARN, "launch failed: rolling back", r, e->message);
    r->fail = *e;
    r->failing = true;
    queue_job(r, JOB_CLEANUP);
}

static void job_after_run(struct job *j)
{
    struct op_run *r = j->run;
    const char *type = r->rec.type;

    r->job_running = false;
    if (r->done || r->ops->stopping) {
        /* an event finished the operation while this job ran */
        run_release(r);
        return;
    }
    if (j->result == -ENOTCONN) {
        /* the hypervisor went away: resume after the reconnect */
        r->parked = true;
        log_op(LOG_WARN, "operation waits for the hypervisor", r, j->err.message);
        return;
    }
    if (r->failing) {
        finish(r, "error", &r->fail);
        return;
    }
    if (j->kind == JOB_DEFINE && j->result == 0 && j->inst.disk_path) {
        set_str(&r->inst.disk_path, j->inst.disk_path);
    }
    if (j->result == -ENOENT && strcmp(type, "launch") && strcmp(type, "terminate")) {
        /* the domain vanished under a stop, start or reboot (libvirtd lost it
         * while the agent was away): the instance is lost, not back in the
         * state it had before the operation */
        struct agent_error e = {0};
        agent_error_set(&e, ENOENT, "not_found", NULL, "the domain is missing from the hypervisor");
        finish(r, "error", &e);
        return;
    }
    if (j->result < 0 && j->kind != JOB_SHUTDOWN) {
        if (!strcmp(type, "launch")) {
            fail_launch(r, &j->err);
        } else if (j->kind == JOB_REBOOT && j->result == -ENOTSUP && !r->force) {
            queue_job(r, JOB_RESET);
        } else {
            finish(r, strcmp(type, "terminate") ? r->prev_state : "error", &j->err);
        }
        return;
    }
    switch (j->kind) {
    case JOB_DEFINE:
        journal_step(r, "defined");
        advance(r);
        break;
    case JOB_START:
        if (!strcmp(type, "launch")) {
            /* the step and the result go in one commit */
            strscpy(r->rec.step, "started", sizeof(r->rec.step));
        }
        finish(r, "running", NULL);
        crash_point(r->ops, &r->rec);
        break;
    case JOB_SHUTDOWN:
        if (j->result < 0) {
            /* the guest refused a graceful stop: force it */
            log_op(LOG_WARN, "graceful stop refused: forcing", r, j->err.message);
            queue_job(r, JOB_DESTROY);
        } else if (j->power == HV_POWER_SHUTOFF) {
            finish(r, "stopped", NULL);
        } else if (r->wait == WAIT_NONE && !uv_is_active((uv_handle_t *)&r->timer)) {
            start_wait(r, WAIT_STOPPED);
        }
        break;
    case JOB_DESTROY:
        if (!strcmp(type, "terminate")) {
            journal_step(r, "destroyed");
            advance(r);
        } else {
            finish(r, "stopped", NULL);
        }
        break;
    case JOB_REBOOT:
        if (hv_driver(r->ops->d.hv)->reboot_no_event)
            finish(r, "running", NULL);
        else if (r->wait == WAIT_NONE && !uv_is_active((uv_handle_t *)&r->timer))
            start_wait(r, WAIT_REBOOTED);
        break;
    case JOB_RESET:
        finish(r, "running", NULL);
        break;
    case JOB_UNDEFINE:
        journal_step(r, "undefined");
        finish(r, "terminated", NULL);
        break;
    case JOB_POWER:
        finish(r, state_of_power(j->power), NULL);
        break;
    case JOB_CLEANUP:
    case JOB_LIST:
        break;
    }
}

static void on_image(int status, const struct imgcache_image_info *info, const struct agent_error *err,
                     void *opaque)
{
    struct op_run *r = opaque;

    r->job_running = false;
    if (r->done || r->ops->stopping) {
        run_release(r);
        return;
    }
    if (status < 0) {
        fail_launch(r, err);
        return;
    }
    free(r->base_path);
    r->base_path = strdup(info->path);
    strscpy(r->base_format, info->format, sizeof(r->base_format));
    r->base_vsize = info->virtual_size;
    if (!r->inst.boot.image_id)
        set_str(&r->inst.boot.image_id, info->id);
    log_op(LOG_INFO, "image ready", r, NULL);
    if (!strcmp(r->rec.step, "claimed"))
        journal_step(r, "image");
    queue_job(r, JOB_DEFINE);
}

/* Launch from the image cache: get (or find) the image, pinned for this
 * instance, before the domain is defined. */
static void acquire_image(struct op_run *r)
{
    const struct boot_source *b = &r->inst.boot;
    struct imgcache_request req = {0};
    struct agent_error err = {0};
    char id[IMGCACHE_ID_LEN];
    int rc;

    if (!r->ops->d.imgcache) {
        agent_error_set(&err, ENOTSUP, "not_supported", "image", "the image cache is not running");
        fail_launch(r, &err);
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
    rc = imgcache_acquire(r->ops->d.imgcache, &req, r->inst.uuid, on_image, r, id, &err);
    if (rc == 0)
        strscpy(r->cache_id, id, sizeof(r->cache_id));
    if (rc < 0) {
        r->job_running = false;
        fail_launch(r, &err);
    }
}

/* Do the work after the last journaled step. */
static void advance(struct op_run *r)
{
    const char *t = r->rec.type, *s = r->rec.step;

    r->parked = false;
    if (!strcmp(t, "launch")) {
        if ((!strcmp(s, "claimed") || !strcmp(s, "image")) && boot_source_uses_cache(&r->inst.boot) &&
            !r->base_path)
            acquire_image(r);
        else if (!strcmp(s, "claimed") || !strcmp(s, "image"))
            queue_job(r, JOB_DEFINE);
        else if (!strcmp(s, "defined"))
            queue_job(r, JOB_START);
        else
            queue_job(r, JOB_POWER); /* started: settle on what libvirt says */
    } else if (!strcmp(t, "start")) {
        queue_job(r, JOB_START);
    } else if (!strcmp(t, "stop")) {
        if (r->force) {
            queue_job(r, JOB_DESTROY);
        } else {
            /* wait for the stop event from before the job returns */
            start_wait(r, WAIT_STOPPED);
            queue_job(r, JOB_SHUTDOWN);
        }
    } else if (!strcmp(t, "reboot")) {
        if (!r->force && !hv_driver(r->ops->d.hv)->reboot_no_event)
            start_wait(r, WAIT_REBOOTED);
        queue_job(r, r->force ? JOB_RESET : JOB_REBOOT);
    } else if (!strcmp(t, "terminate")) {
        if (!strcmp(s, "requested"))
            queue_job(r, JOB_DESTROY);
        else if (!strcmp(s, "destroyed"))
            queue_job(r, JOB_UNDEFINE);
        else
            finish(r, "terminated", NULL);
    }
}

static struct op_run *run_new(struct ops *o)
{
    struct op_run *r = calloc(1, sizeof(*r));

    if (!r)
        return NULL;
    r->ops = o;
    uv_timer_init(o->loop, &r->timer);
    r->timer.data = r;
    r->timeout_s = o->cfg.stop_timeout_s;
    r->next = o->runs;
    if (o->runs)
        o->runs->prev = r;
    o->runs = r;
    o->n_runs++;
    return r;
}

/* A run object whose creation failed before anything was journaled. */
static void run_discard(struct op_run *r)
{
    r->done = true;
    run_release(r);
}

/* ---- entry points ---- */

static void op_record_init(struct op_record *rec, const char *type, const char *uuid,
                           const char *request_id, const char *step)
{
    memset(rec, 0, sizeof(*rec));
    uuid_generate_str(rec->id);
    strscpy(rec->type, type, sizeof(rec->type));
    strscpy(rec->instance_uuid, uuid, sizeof(rec->instance_uuid));
    rec->request_id = request_id ? strdup(request_id) : NULL;
    strscpy(rec->state, "running", sizeof(rec->state));
    strscpy(rec->step, step, sizeof(rec->step));
    rec->created_ms = rec->updated_ms = now_wall_ms();
}

/* A repeated request id: the first answer again. */
static int replay(struct ops *o, const char *request_id, const char *type, json_t **answer,
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

int ops_launch(struct ops *o, const struct launch_spec *spec, json_t **answer, struct agent_error *err)
{
    struct op_run *r;
    struct instance *inst;
    _cleanup_(free_local) char *local[3] = {NULL, NULL, NULL};
    int rc;

    if (spec->request_id && (rc = replay(o, spec->request_id, "launch", answer, err)) != 0)
        return rc;
    if (host_disabled(o->d.host))
        return agent_error_set(err, EBUSY, "conflict", NULL,
                               "the host is disabled (computectl host enable)");
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
    if (!(r = run_new(o)))
        return -ENOMEM;
    inst = &r->inst;
    uuid_generate_str(inst->uuid);
    ec2_id_generate(inst->ec2_id);
    inst->name = strdup(spec->name);
    strscpy(inst->state, "pending", sizeof(inst->state));
    strscpy(inst->task_state, "launching", sizeof(inst->task_state));
    inst->flavor = spec->flavor;
    inst->instance_type = spec->instance_type ? strdup(spec->instance_type) : NULL;
    inst->boot.kind = spec->boot.kind;
    set_str(&inst->boot.image_path, local[0]);
    set_str(&inst->boot.image_id, spec->boot.image_id);
    set_str(&inst->boot.image_url, spec->boot.image_url);
    set_str(&inst->boot.image_digest, spec->boot.image_digest);
    set_str(&inst->boot.kernel, local[1]);
    set_str(&inst->boot.initrd, local[2]);
    set_str(&inst->boot.cmdline, spec->boot.cmdline);
    set_str(&inst->user_data, spec->user_data);
    if (hv_driver(o->d.hv)->disk_files) {
        char path[4300];
        snprintf(path, sizeof(path), "%s/%s/console.log", o->cfg.instances_dir, inst->uuid);
        inst->console_log = strdup(path);
    }
    inst->created_ms = inst->updated_ms = now_wall_ms();
    strscpy(r->prev_state, "pending", sizeof(r->prev_state));
    op_record_init(&r->rec, "launch", inst->uuid, spec->request_id, "claimed");

    set_str(&inst->boot.image_glance_id, spec->boot.image_glance_id);
    if (boot_source_uses_cache(&spec->boot)) {
        /* refuse a bad image reference now, before anything is recorded */
        struct imgcache_request req;
        json_t *ref;
        if (!o->d.imgcache) {
            run_discard(r);
            return agent_error_set(err, ENOTSUP, "not_supported", "image",
                                   "images by id, url or glance_id need the image cache");
        }
        ref = boot_source_to_json(&spec->boot);
        rc = imgcache_request_from_json(json_object_get(ref, "image"), "image", &req, err);
        if (rc == 0 && req.id) {
            json_t *known = imgcache_get(o->d.imgcache, req.id);
            if (!known)
                rc = agent_error_set(err, EINVAL, "invalid_field", "image.id", "no cached image '%s'", req.id);
            json_decref(known);
        }
        json_decref(ref);
        if (rc < 0) {
            run_discard(r);
            return rc;
        }
    }
    /* journal before acting: instance + operation in one transaction */
    if ((rc = store_begin(o->d.store)) < 0 || (rc = store_instance_insert(o->d.store, inst)) < 0 ||
        (rc = store_op_insert(o->d.store, &r->rec)) < 0 ||
        (rc = events_instance(o->d.events, inst, r->rec.request_id)) < 0 || (rc = store_commit(o->d.store)) < 0) {
        if (o->d.store)
            store_rollback(o->d.store);
        run_discard(r);
        return agent_error_set(err, -rc, "internal", NULL, "cannot record the launch: %s",
                               strerror(-rc));
    }
    strscpy(r->emitted, inst->state, sizeof(r->emitted));
    events_flush(o->d.events);
    *answer = answer_of(inst, &r->rec);
    log_op(LOG_INFO, "launch accepted", r, NULL);
    crash_point(o, &r->rec);
    advance(r);
    return 202;
}

int ops_action(struct ops *o, const char *id, const char *action, const struct action_opts *opts,
               json_t **answer, struct agent_error *err)
{
    struct instance inst;
    struct op_record active;
    struct op_run *r;
    const char *need = NULL, *task, *new_state;
    int rc;

    if (opts->request_id && (rc = replay(o, opts->request_id, action, answer, err)) != 0)
        return rc;
    rc = store_instance_get(o->d.store, id, &inst);
    if (rc == -ENOENT)
        return agent_error_set(err, ENOENT, "not_found", "id", "no instance '%s'", id);
    if (rc < 0)
        return agent_error_set(err, -rc, "internal", NULL, "cannot read the store");
    if (!strcmp(action, "start")) {
        need = "stopped", task = "starting", new_state = "pending";
    } else if (!strcmp(action, "stop")) {
        need = "running", task = "stopping", new_state = "stopping";
    } else if (!strcmp(action, "reboot")) {
        need = "running", task = "rebooting", new_state = "running";
    } else {
        task = "terminating", new_state = "shutting-down";
        if (!strcmp(inst.state, "terminated")) {
            instance_release(&inst);
            return agent_error_set(err, EINVAL, "conflict", "id", "instance '%s' is already terminated", id);
        }
    }
    if (need && strcmp(inst.state, need) != 0) {
        rc = agent_error_set(err, EINVAL, "conflict", "action", "cannot %s an instance that is %s (needs %s)",
                             action, inst.state, need);
        instance_release(&inst);
        return rc;
    }
    if (!strcmp(action, "terminate") && (r = find_run(o, inst.uuid)) && r->wait != WAIT_NONE &&
        !r->job_running) {
        /* terminate wins over an operation that only waits for the guest */
        struct agent_error sup;
        agent_error_set(&sup, ECANCELED, "superseded", NULL, "superseded by a terminate");
        finish(r, NULL, &sup);
    }
    if (store_op_active_for(o->d.store, inst.uuid, &active) == 0) {
        rc = agent_error_set(err, EBUSY, "conflict", "id", "instance '%s' has a %s operation in progress (%s)",
                             id, active.type, active.id);
        op_record_release(&active);
        instance_release(&inst);
        return rc;
    }
    if (!hv_connected(o->d.hv)) {
        instance_release(&inst);
        return agent_error_set(err, EAGAIN, "unavailable", NULL, "the hypervisor is not connected");
    }
    if (!strcmp(action, "reboot") && opts->force && !hv_driver(o->d.hv)->reset) {
        instance_release(&inst);
        return agent_error_set(err, ENOTSUP, "not_supported", "force",
                               "the %s driver cannot reset a guest", hv_driver(o->d.hv)->name);
    }
    if (!(r = run_new(o))) {
        instance_release(&inst);
        return -ENOMEM;
    }
    r->inst = inst;
    strscpy(r->prev_state, inst.state, sizeof(r->prev_state));
    r->force = opts->force;
    if (opts->timeout_s >= 0)
        r->timeout_s = opts->timeout_s;
    else if (!strcmp(action, "reboot"))
        r->timeout_s = o->cfg.reboot_timeout_s;
    op_record_init(&r->rec, action, inst.uuid, opts->request_id, "requested");
    strscpy(r->inst.state, new_state, sizeof(r->inst.state));
    strscpy(r->inst.task_state, task, sizeof(r->inst.task_state));
    r->inst.updated_ms = now_wall_ms();
    if ((rc = store_begin(o->d.store)) < 0 || (rc = store_op_insert(o->d.store, &r->rec)) < 0 ||
        (rc = store_instance_update(o->d.store, &r->inst)) < 0 ||
        (strcmp(r->prev_state, r->inst.state) &&
         (rc = events_instance(o->d.events, &r->inst, r->rec.request_id)) < 0) ||
        (rc = store_commit(o->d.store)) < 0) {
        store_rollback(o->d.store);
        run_discard(r);
        return agent_error_set(err, -rc, "internal", NULL, "cannot record the operation: %s",
                               strerror(-rc));
    }
    strscpy(r->emitted, r->inst.state, sizeof(r->emitted));
    events_flush(o->d.events);
    *answer = answer_of(&r->inst, &r->rec);
    log_op(LOG_INFO, "operation accepted", r, NULL);
    crash_point(o, &r->rec);
    advance(r);
    return 202;
}

/* ---- hypervisor events ---- */

static void update_instance_state(struct ops *o, const char *uuid, const char *state, const char *fault)
{
    struct instance inst;

    if (store_instance_get(o->d.store, uuid, &inst) < 0)
        return;
    if (strcmp(inst.state, state) != 0 && strcmp(inst.state, "terminated") != 0) {
        log_info("instance state changed by the hypervisor", "instance=%s ec2_id=%s from=%s to=%s fault=%s",
                 inst.uuid, inst.ec2_id, inst.state, state, fault ? fault : "");
        strscpy(inst.state, state, sizeof(inst.state));
        set_str(&inst.fault, fault);
        inst.updated_ms = now_wall_ms();
        if (store_begin(o->d.store) == 0) {
            if (store_instance_update(o->d.store, &inst) < 0 || events_instance(o->d.events, &inst, NULL) < 0)
                store_rollback(o->d.store);
            else if (store_commit(o->d.store) == 0)
                events_flush(o->d.events);
        }
    }
    instance_release(&inst);
}

void ops_on_hv_event(struct ops *o, const struct hv_event *ev)
{
    struct op_run *r;
    struct op_record active;

    if (ev->type == HV_EVENT_DISCONNECTED) {
        log_warn("hypervisor connection lost", "reason=%d", ev->detail);
        if (o->hooks.hv_lost)
            o->hooks.hv_lost(o->opaque);
        return;
    }
    log_debug("hypervisor event", "instance=%s event=%d detail=%d", ev->uuid, ev->type, ev->detail);
    r = find_run(o, ev->uuid);
    if (r) {
        if (r->wait == WAIT_STOPPED && (ev->type == HV_EVENT_STOPPED || ev->type == HV_EVENT_CRASHED))
            finish(r, "stopped", NULL);
        else if (r->wait == WAIT_REBOOTED && (ev->type == HV_EVENT_REBOOTED || ev->type == HV_EVENT_STARTED))
            finish(r, "running", NULL);
        return; /* the operation sets the state it ends in */
    }
    if (store_op_active_for(o->d.store, ev->uuid, &active) == 0) {
        op_record_release(&active); /* a journaled operation will settle it */
        return;
    }
    switch (ev->type) {
    case HV_EVENT_STARTED:
    case HV_EVENT_RESUMED:
        update_instance_state(o, ev->uuid, "running", NULL);
        break;
    case HV_EVENT_STOPPED:
        update_instance_state(o, ev->uuid, "stopped", NULL);
        break;
    case HV_EVENT_CRASHED:
        update_instance_state(o, ev->uuid, "stopped", "the guest crashed");
        break;
    case HV_EVENT_UNDEFINED:
        update_instance_state(o, ev->uuid, "error", "the domain was undefined outside the agent");
        break;
    default:
        break;
    }
}

/* ---- reconcile and resume ---- */

struct reconcile_ctx {
    struct ops *o;
    struct hv_domain *doms;
    size_t n;
    bool *seen;
    int64_t list_ms;          /* when libvirt was asked */
};

static const struct hv_domain *find_dom(struct reconcile_ctx *c, const char *uuid, size_t *idx)
{
    for (size_t i = 0; i < c->n; i++)
        if (strcmp(c->doms[i].uuid, uuid) == 0) {
            *idx = i;
            return &c->doms[i];
        }
    return NULL;
}

static int reconcile_instance(const struct instance *inst, void *opaque)
{
    struct reconcile_ctx *c = opaque;
    struct op_record active;
    const struct hv_domain *d;
    size_t idx;
    bool busy;

    d = find_dom(c, inst->uuid, &idx);
    if (d)
        c->seen[idx] = true;
    busy = find_run(c->o, inst->uuid) || store_op_active_for(c->o->d.store, inst->uuid, &active) == 0;
    if (busy) {
        if (!find_run(c->o, inst->uuid))
            op_record_release(&active);
        return 0; /* its operation settles it */
    }
    if (inst->updated_ms > c->list_ms)
        return 0; /* an event newer than the snapshot already set its state */
    if (!d) {
        if (strcmp(inst->state, "error") != 0)
            update_instance_state(c->o, inst->uuid, "error", "the domain is missing from the hypervisor");
        return 0;
    }
    update_instance_state(c->o, inst->uuid, state_of_power(d->power), inst->fault);
    return 0;
}

/* Whose a domain the store does not know is, from the owner its metadata
 * records (docs/architecture.md, "Adoption"). The key is the host name
 * (agent.host_name): it survives a lost store, where an id kept in the store
 * would not, and it tells apart two agents on one libvirtd. libvirt's host
 * UUID, when both the metadata and this libvirtd have one, must match too:
 * a host restored from another's backup (same configured name) is not that
 * host. A domain with no owner recorded (written before owners were) cannot
 * be told from another agent's: it is left alone. */
enum dom_owner { OWNER_SELF, OWNER_OTHER_HOST, OWNER_OTHER_LIBVIRT, OWNER_UNRECORDED };

static enum dom_owner owner_of(const struct hv_owner *self, const struct hv_owner *d)
{
    if (!d->host[0])
        return OWNER_UNRECORDED;
    if (strcmp(d->host, self->host) != 0)
        return OWNER_OTHER_HOST;
    if (d->host_uuid[0] && self->host_uuid[0] && strcmp(d->host_uuid, self->host_uuid) != 0)
        return OWNER_OTHER_LIBVIRT;
    return OWNER_SELF;
}

/* Our domain that the store does not know (store lost or restored from a
 * backup): take it back from its metadata. The console log and the disk
 * are where a launch puts them. */
static void adopt(struct ops *o, const struct hv_domain *d)
{
    struct instance inst;

    if (instance_copy(&inst, &d->ident) < 0)
        return;
    if (hv_driver(o->d.hv)->disk_files) {
        char dir[4300], path[4400];
        instance_dir(o, inst.uuid, dir, sizeof(dir));
        snprintf(path, sizeof(path), "%s/console.log", dir);
        set_str(&inst.console_log, path);
        if (boot_source_has_image(&inst.boot)) {
            snprintf(path, sizeof(path), "%s/disk.qcow2", dir);
            set_str(&inst.disk_path, path);
        }
    }
    strscpy(inst.state, state_of_power(d->power), sizeof(inst.state));
    inst.task_state[0] = '\0';
    inst.created_ms = inst.updated_ms = now_wall_ms();
    if (store_begin(o->d.store) < 0) {
        instance_release(&inst);
        return;
    }
    if (store_instance_insert(o->d.store, &inst) < 0 || events_instance(o->d.events, &inst, NULL) < 0) {
        store_rollback(o->d.store);
    } else if (store_commit(o->d.store) == 0) {
        events_flush(o->d.events);
        log_warn("instance recovered from libvirt metadata", "instance=%s ec2_id=%s state=%s",
                 inst.uuid, inst.ec2_id, inst.state);
    }
    instance_release(&inst);
}

static int resume_one(const struct op_record *rec, void *opaque)
{
    struct ops *o = opaque;
    struct op_run *r;

    for (r = o->runs; r; r = r->next)
        if (!strcmp(r->rec.id, rec->id))
            return 0; /* in flight already */
    if (!(r = run_new(o)))
        return 0;
    if (store_instance_get(o->d.store, rec->instance_uuid, &r->inst) < 0) {
        run_discard(r);
        return 0;
    }
    r->rec = *rec;
    r->rec.request_id = rec->request_id ? strdup(rec->request_id) : NULL;
    r->rec.error_message = NULL;
    strscpy(r->prev_state, !strcmp(rec->type, "start") ? "stopped" : "running", sizeof(r->prev_state));
    strscpy(r->emitted, r->inst.state, sizeof(r->emitted));
    if (!strcmp(rec->type, "reboot"))
        r->timeout_s = o->cfg.reboot_timeout_s;
    log_op(LOG_INFO, "resuming an interrupted operation", r, NULL);
    advance(r);
    return 0;
}

static void reconcile_after(struct job *j)
{
    struct ops *o = j->ops;
    struct reconcile_ctx c = {.o = o, .doms = j->doms, .n = j->ndoms, .list_ms = j->list_ms};
    unsigned strangers = 0, adopted = 0, foreign = 0;
    struct flavor foreign_sum = {0};
    struct hv_owner self;

    o->reconciling = false;
    if (o->stopping) {
        j->list_done(j->list_opaque, -ECANCELED);
        return;
    }
    if (j->result < 0) {
        log_warn("reconcile failed", "error=%s", j->err.message);
        j->list_done(j->list_opaque, j->result);
        return;
    }
    c.seen = calloc(j->ndoms + 1, sizeof(bool));
    if (!c.seen) {
        j->list_done(j->list_opaque, -ENOMEM);
        return;
    }
    store_instance_foreach(o->d.store, false, reconcile_instance, &c);
    hv_owner_self(o->d.hv, &self);
    for (size_t i = 0; i < j->ndoms; i++) {
        struct instance known;
        const struct hv_domain *d = &j->doms[i];
        char q[400];
        if (c.seen[i])
            continue;
        if (!d->ours) {
            strangers++;
            if (d->meta_error[0])
                log_warn("domain with invalid compute-agent metadata left alone",
                         "domain=%s uuid=%s state=%s error=%s", d->name, d->uuid,
                         hv_power_name(d->power), log_quote(d->meta_error, q, sizeof(q)));
            else
                log_info("domain not managed by this agent left alone", "domain=%s uuid=%s state=%s",
                         d->name, d->uuid, hv_power_name(d->power));
            continue;
        }
        if (store_instance_get(o->d.store, d->uuid, &known) == 0) {
            /* terminated here but still defined: finish the terminate */
            log_warn("terminated instance still has a domain", "instance=%s", known.uuid);
            instance_release(&known);
            continue;
        }
        switch (owner_of(&self, &d->owner)) {
        case OWNER_SELF:
            adopt(o, d);
            adopted++;
            continue;
        case OWNER_OTHER_HOST:
            log_info("domain owned by another agent left alone", "domain=%s uuid=%s host=%s state=%s",
                     d->name, d->uuid, log_quote(d->owner.host, q, sizeof(q)), hv_power_name(d->power));
            break;
        case OWNER_OTHER_LIBVIRT:
            log_warn("domain of this host name but another libvirt host left alone",
                     "domain=%s uuid=%s host_uuid=%s libvirt_host_uuid=%s state=%s", d->name, d->uuid,
                     d->owner.host_uuid, self.host_uuid, hv_power_name(d->power));
            break;
        case OWNER_UNRECORDED:
            log_warn("domain with no owning host in its metadata left alone",
                     "domain=%s uuid=%s ec2_id=%s state=%s", d->name, d->uuid, d->ident.ec2_id,
                     hv_power_name(d->power));
            break;
        }
        /* another agent's guest still holds this host's capacity */
        foreign++;
        foreign_sum.vcpus += d->ident.flavor.vcpus;
        foreign_sum.memory_mb += d->ident.flavor.memory_mb;
        foreign_sum.disk_gb += d->ident.flavor.disk_gb;
    }
    resources_set_foreign(o->d.res, &foreign_sum, foreign);
    free(c.seen);
    store_op_foreach_unfinished(o->d.store, resume_one, o);
    for (struct op_run *r = o->runs; r; r = r->next)
        if (r->parked && !r->job_running && !r->done)
            advance(r);
    log_info("reconciled with the hypervisor",
             "domains=%zu strangers=%u adopted=%u foreign=%u in_flight=%u", j->ndoms, strangers,
             adopted, foreign, o->n_runs);
    j->list_done(j->list_opaque, 0);
}

int ops_reconcile(struct ops *o, void (*done)(void *opaque, int result), void *opaque)
{
    struct job *j;
    int rc;

    if (o->stopping)
        return -ECANCELED;
    if (o->reconciling)
        return -EBUSY;
    if (!(j = calloc(1, sizeof(*j))))
        return -ENOMEM;
    j->work.data = j;
    j->ops = o;
    j->kind = JOB_LIST;
    j->list_done = done;
    j->list_opaque = opaque;
    rc = uv_queue_work(o->loop, &j->work, job_work, job_after);
    if (rc < 0) {
        free(j);
        return rc;
    }
    o->reconciling = true;
    return 0;
}

json_t *ops_progress(struct ops *o, const char *op_id)
{
    for (struct op_run *r = o->runs; r; r = r->next) {
        json_t *img, *p;
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
    for (; r; r = next) {
        next = r->next;
        if (!r->done)
            log_op(LOG_INFO, "operation parked until the next start", r, NULL);
        r->done = true;
        if (!r->job_running)
            run_release(r);
    }
}

void ops_free(struct ops *o)
{
    if (!o)
        return;
    ops_stop(o);
    free(o);
}
