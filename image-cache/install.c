/* install.c: a fetched file is inspected (`qemu-img info`, safety checks),
 * made read-only and renamed to images/<algo>-<hex> on the thread pool, the
 * directories fsync'd; then its index row is "cached" and the flight ends. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* asprintf */
#endif
#include "image-cache/imgcache-private.h"

#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>

static void do_install(uv_work_t *req)
{
    struct install *in = req->data;
    int r;

    in->status = imgcache_inspect_file(in->qemu_img, in->tmp_path, in->max_virtual_size,
                                       &in->info, &in->err);
    if (in->status < 0) {
        unlink(in->tmp_path);
        return;
    }
    if (chmod(in->tmp_path, 0444) < 0 || rename(in->tmp_path, in->final_path) < 0) {
        r = -errno;
        unlink(in->tmp_path);
        in->status = agent_error_set(&in->err, -r, "internal", NULL, "installing %s: %s",
                                     in->final_path, strerror(-r));
        return;
    }
    if ((r = imgcache_fsync_dir(in->images_dir)) < 0 || (r = imgcache_fsync_dir(in->tmp_dir)) < 0)
        in->status = agent_error_set(&in->err, -r, "internal", NULL, "fsync %s: %s",
                                     in->images_dir, strerror(-r));
}

static void install_free(struct install *in)
{
    free(in->qemu_img);
    free(in->tmp_path);
    free(in->final_path);
    free(in->images_dir);
    free(in->tmp_dir);
    free(in);
}

static void after_install(uv_work_t *req, int status)
{
    struct install *in = req->data;
    struct flight *fl = in->fl;
    struct imgcache *c = in->c;
    struct imgcache_row r;
    struct agent_error err = {0};
    struct imgcache_image_info info;

    (void)status;
    if (!fl) { /* the cache is being freed */
        if (in->status == 0)
            unlink(in->final_path); /* no entry will name it */
        install_free(in);
        c->pending--;
        imgcache_maybe_free_cache(c);
        return;
    }
    fl->install = NULL;
    if (in->status < 0) {
        int st = in->status;

        err = in->err;
        install_free(in);
        imgcache_flight_fail(fl, st, &err);
        return;
    }
    if (imgcache_index_get(c->db, fl->id, &r) < 0) {
        unlink(in->final_path);
        install_free(in);
        agent_error_set(&err, EIO, "internal", NULL, "image %s vanished from the index", fl->id);
        imgcache_flight_end(fl, -EIO, NULL, &err);
        return;
    }
    r.state = IMGCACHE_CACHED;
    strscpy(r.format, in->info.format, sizeof(r.format));
    r.size = (int64_t)in->info.actual_size;
    r.virtual_size = (int64_t)in->info.virtual_size;
    free(r.path);
    r.path = in->final_path;
    in->final_path = NULL;
    r.last_used_at = now_wall_ms();
    imgcache_row_set_error(&r, NULL, NULL);
    install_free(in);
    if (imgcache_index_update(c->db, &r) < 0) {
        agent_error_set(&err, EIO, "internal", NULL, "cannot record image %s in the index",
                        fl->id);
        unlink(r.path);
        imgcache_row_clear(&r);
        imgcache_flight_fail(fl, -EIO, &err);
        return;
    }
    imgcache_info_from_row(&r, &info);
    imgcache_flight_end(fl, 0, &info, NULL);
    imgcache_row_clear(&r);
    /* keep within the budget now that the image counts as cached */
    imgcache_evict(c, 0);
}

void imgcache_install_start(struct flight *fl, const struct imgcache_digest *d)
{
    struct imgcache *c = fl->c;
    struct install *in = calloc(1, sizeof(*in));
    struct agent_error err = {0};
    char name[8 + 129];

    snprintf(name, sizeof(name), "%s-%s", imgcache_algo_name(d->algo), d->hex);
    if (in) {
        in->req.data = in;
        in->c = c;
        in->fl = fl;
        in->qemu_img = strdup(c->qemu_img);
        in->tmp_path = strdup(fl->tmp_path);
        in->final_path = imgcache_path_join(c->images_dir, name);
        in->images_dir = strdup(c->images_dir);
        in->tmp_dir = strdup(c->tmp_dir);
        in->max_virtual_size = c->max_virtual_size;
    }
    if (!in || !in->qemu_img || !in->tmp_path || !in->final_path || !in->images_dir ||
        !in->tmp_dir) {
        if (in)
            install_free(in);
        agent_error_set(&err, ENOMEM, "internal", NULL, "out of memory");
        imgcache_flight_fail(fl, -ENOMEM, &err);
        return;
    }
    fl->install = in;
    uv_queue_work(c->loop, &in->req, do_install, after_install);
}
