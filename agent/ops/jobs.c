/* jobs.c: the worker side of the engine (ops-internal.h): each job kind's
 * hypervisor calls, one place per call, and the guest's files. Runs on
 * libuv's pool: reads only its job and the engine's immutable parts (deps,
 * config), never a run. The one place that builds the hv_guest is
 * job_define(). */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent/guest.h"
#include "agent/localfile.h"
#include "agent/ops/ops-internal.h"

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
    ops_set_str(&inst->disk_path, overlay);
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

static void job_define(struct job *j)
{
    struct ops *o = j->ops;
    struct hv *hv = o->d.hv;
    const char *format = NULL;
    char dir[4300];
    char *xml = NULL;
    struct guest g;

    if ((j->result = check_local_files(j, &j->err)) < 0)
        return;
    if (ops_hv_disk_files(o)) {
        ops_instance_dir(o, j->inst.uuid, dir, sizeof(dir));
        if (mkdir(dir, 0750) < 0 && errno != EEXIST) {
            j->result = agent_error_set(&j->err, errno, "internal", NULL, "mkdir %s: %s", dir,
                                        strerror(errno));
            return;
        }
        if ((j->result = prepare_disk(&j->inst, j, dir, &format, &j->err)) < 0)
            return;
    }
    if ((j->result = hv_domain_xml(hv, guest_describe(&j->inst, format, &g), &xml, &j->err)) < 0)
        return;
    j->result = hv_define(hv, xml, &j->err);
    free(xml);
}

void ops_remove_disk(const struct ops *o, const char *uuid)
{
    char dir[4300], path[4400];

    ops_instance_dir(o, uuid, dir, sizeof(dir));
    if (dir[0] && (size_t)snprintf(path, sizeof(path), "%s/disk.qcow2", dir) < sizeof(path))
        unlink(path);
}

void ops_job_work(uv_work_t *w)
{
    struct job *j = w->data;
    struct hv *hv = j->ops->d.hv;
    const char *uuid = j->uuid;
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
        if (j->result == -ENOENT && j->terminating)
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
            ops_remove_disk(j->ops, uuid);
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
            ops_remove_disk(j->ops, uuid);
        j->result = 0;
        break;
    case JOB_LIST:
        j->list_ms = now_wall_ms();
        j->result = hv_list(hv, &j->doms, &j->ndoms, &j->err);
        break;
    }
}
