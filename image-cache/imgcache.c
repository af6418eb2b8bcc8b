/* imgcache.c: the cache object: single-flight acquisition, pins, the
 * install step (inspect, then rename into place), eviction, startup
 * consistency, and the image answers.
 *
 * One "flight" exists per image being fetched; every acquire of that image
 * while it runs adds a waiter to it, so any number of requests share one
 * download and all get its result. A flight goes: (Glance metadata) ->
 * fetch to tmp/<id>.part -> digest check -> install on the thread pool
 * (`qemu-img info`, safety checks, chmod 0444, rename to
 * images/<algo>-<hex>, fsync of the directories) -> index row "cached" ->
 * waiters called. At most max_parallel flights run; the others queue. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* asprintf */
#endif
#include "image-cache/imgcache-internal.h"
#include "common/list.h"

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#define DEFAULT_MAX_VSIZE (1ull << 40)
#define ROOM_STEP (16ull << 20) /* room asked at a time for a body of unknown length */
#define USER_MAX 64

struct waiter {
    struct list_node link;    /* in flight.waiters or imgcache.ready */
    imgcache_done_cb cb;
    void *opaque;
    char id[IMGCACHE_ID_LEN]; /* for cache hits: the image to report */
};

struct install;

struct flight {
    struct imgcache *c;
    struct list_node link;          /* in c->flights */
    struct list_node qlink;         /* in c->queue while waiting for a slot */
    char id[IMGCACHE_ID_LEN];       /* the index row */
    struct list_node waiters;       /* waiter.link: callbacks to call at the end */
    bool started;                   /* holds one of max_parallel slots */
    char *url;                      /* image bytes (for Glance: the /file URL) */
    char glance_id[IMGCACHE_ID_LEN]; /* "" unless from Glance */
    struct imgcache_digest expect;  /* algo NONE: unknown (Glance md5-only) */
    char md5_expect[33];            /* Glance checksum, "" if none */
    uint64_t expected_size;         /* 0: unknown */
    uint64_t reserved;              /* bytes counted in c->reserved */
    struct imgcache_glance_req *meta;
    struct imgcache_fetch *fetch;
    char *tmp_path;
    struct install *install;        /* install work in flight, or NULL */
};

struct install {
    uv_work_t req;
    struct imgcache *c;
    struct flight *fl;              /* NULL once the cache is being freed */
    char *qemu_img, *tmp_path, *final_path, *images_dir, *tmp_dir;
    uint64_t max_virtual_size;
    struct imgcache_inspect info;
    int status;
    struct agent_error err;
};

struct imgcache {
    uv_loop_t *loop;               /* the agent's loop (borrowed) */
    sqlite3 *db;                   /* the agent's store (borrowed) */
    struct httpuv *http;           /* transfers (owned) */
    char *dir, *images_dir, *tmp_dir; /* absolute paths */
    char *ca_bundle, *glance_url, *glance_token, *qemu_img;
    uint64_t budget_bytes;
    int budget_percent;
    int64_t max_unused_age_ms;
    uint64_t max_virtual_size;
    int max_redirects, max_parallel, stall_timeout_s, retries, retry_delay_ms;
    int evict_interval_s;
    struct imgcache_net *allowed;  /* image_cache.allowed_networks */
    size_t n_allowed;
    void (*pull_failed)(const char *, const char *, const struct agent_error *, void *);
    void *pull_failed_opaque;
    struct list_node flights;      /* flight.link: every flight, running or queued */
    struct list_node queue;        /* flight.qlink: waiting for a slot, oldest first */
    int running;                   /* flights holding a slot */
    uint64_t reserved;             /* expected bytes of fetches in flight */
    struct list_node ready;        /* waiter.link: cache hits to report next turn */
    uv_timer_t defer_timer;        /* reports cache hits */
    uv_timer_t evict_timer;        /* periodic eviction */
    int pending;                   /* open handles + install work, while freeing */
    bool freeing;
};

static void flight_begin(struct flight *fl);
static void flight_fail(struct flight *fl, int status, const struct agent_error *err);

/* ---- small helpers ---- */

static char *path_join(const char *a, const char *b)
{
    char *p;
    return asprintf(&p, "%s/%s", a, b) < 0 ? NULL : p;
}

static int mkdir_p(const char *path, mode_t mode)
{
    _cleanup_free_ char *copy = strdup(path);

    if (!copy)
        return -ENOMEM;
    for (char *p = copy + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(copy, 0755) < 0 && errno != EEXIST)
            return -errno;
        *p = '/';
    }
    if (mkdir(copy, mode) < 0 && errno != EEXIST)
        return -errno;
    return 0;
}

static int fsync_dir(const char *path)
{
    _cleanup_close_ int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

    if (fd < 0 || fsync(fd) < 0)
        return -errno;
    return 0;
}

static bool user_is_valid(const char *u)
{
    size_t n = u ? strlen(u) : 0;

    if (n == 0 || n > USER_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)u[i] < 0x21 || u[i] == 0x7f)
            return false;
    return true;
}

static struct flight *flight_find(struct imgcache *c, const char *id)
{
    struct flight *fl;

    list_for_each_entry(fl, &c->flights, link)
        if (strcmp(fl->id, id) == 0)
            return fl;
    return NULL;
}

static void info_from_row(const struct imgcache_row *r, struct imgcache_image_info *info)
{
    info->id = r->id;
    info->path = r->path;
    info->format = r->format;
    info->digest = r->digest;
    info->size = r->size > 0 ? (uint64_t)r->size : 0;
    info->virtual_size = r->virtual_size > 0 ? (uint64_t)r->virtual_size : 0;
}

/* Is a cached row's file there with the recorded size? */
static bool base_file_ok(const struct imgcache_row *r)
{
    struct stat st;

    return r->path && stat(r->path, &st) == 0 && S_ISREG(st.st_mode) &&
           (int64_t)st.st_size == r->size;
}

static void row_set_error(struct imgcache_row *r, const char *code, const char *message)
{
    strscpy(r->error_code, code ? code : "", sizeof(r->error_code));
    free(r->error_message);
    r->error_message = message ? strdup(message) : NULL;
}

uint64_t imgcache_budget(struct imgcache *c)
{
    struct statvfs vfs;

    if (c->budget_bytes)
        return c->budget_bytes;
    if (c->budget_percent > 0 && statvfs(c->dir, &vfs) == 0)
        return (uint64_t)vfs.f_blocks * vfs.f_frsize / 100 * (uint64_t)c->budget_percent;
    return UINT64_MAX;
}

const char *imgcache_dir(const struct imgcache *c)
{
    return c->dir;
}

/* ---- eviction ---- */

static int remove_image(struct imgcache *c, const struct imgcache_row *r)
{
    if (r->path && r->state == IMGCACHE_CACHED && unlink(r->path) < 0 && errno != ENOENT)
        return -errno;
    return imgcache_index_delete(c->db, r->id);
}

static int evict_apply(struct imgcache *c, const struct imgcache_victim *v, size_t n,
                       const bool *chosen)
{
    int count = 0;

    for (size_t i = 0; i < n; i++) {
        struct imgcache_row r;

        if (!chosen[i] || flight_find(c, v[i].id))
            continue;
        if (imgcache_index_get(c->db, v[i].id, &r) < 0)
            continue;
        if (remove_image(c, &r) == 0)
            count++;
        imgcache_row_clear(&r);
    }
    return count;
}

int imgcache_evict(struct imgcache *c, uint64_t needed_bytes)
{
    _cleanup_free_ struct imgcache_victim *v = NULL;
    _cleanup_free_ bool *chosen = NULL;
    uint64_t used = 0, free_bytes = UINT64_MAX, in_flight_left = 0;
    int64_t cutoff = c->max_unused_age_ms > 0 ? now_wall_ms() - c->max_unused_age_ms : 0;
    struct statvfs vfs;
    size_t n = 0;
    int r, plan;

    if ((r = imgcache_index_cached_bytes(c->db, &used)) < 0 ||
        (r = imgcache_index_victims(c->db, &v, &n)) < 0)
        return r;
    used += c->reserved;
    /* the disk must also hold what downloads in flight still have to write */
    struct flight *fl;

    list_for_each_entry(fl, &c->flights, link) {
        struct imgcache_progress p;
        if (fl->fetch && fl->reserved) {
            imgcache_fetch_progress(fl->fetch, &p);
            in_flight_left += fl->reserved > p.bytes_done ? fl->reserved - p.bytes_done : 0;
        }
    }
    if (statvfs(c->dir, &vfs) == 0) {
        free_bytes = (uint64_t)vfs.f_bavail * vfs.f_frsize;
        free_bytes = free_bytes > in_flight_left ? free_bytes - in_flight_left : 0;
    }
    chosen = calloc(n ? n : 1, sizeof(*chosen));
    if (!chosen)
        return -ENOMEM;
    plan = imgcache_evict_plan(v, n, used, imgcache_budget(c), free_bytes, needed_bytes, cutoff,
                               chosen);
    if (plan == -ENOSPC && needed_bytes > 0) {
        /* no room for the newcomer: evict only what age and budget demand */
        imgcache_evict_plan(v, n, used, imgcache_budget(c), UINT64_MAX, 0, cutoff, chosen);
        evict_apply(c, v, n, chosen);
        return -ENOSPC;
    }
    r = evict_apply(c, v, n, chosen);
    return plan < 0 ? plan : r;
}

static void on_evict_timer(uv_timer_t *t)
{
    imgcache_evict(t->data, 0);
}

/* ---- completing waiters ---- */

/* Call w (unlinked) and free it. */
static void waiter_call(struct waiter *w, int status, const struct imgcache_image_info *info,
                        const struct agent_error *err)
{
    if (w->cb)
        w->cb(status, status == 0 ? info : NULL, status == 0 ? NULL : err, w->opaque);
    free(w);
}

/* Call and free every waiter of list (a list no callback can reach). */
static void call_waiters(struct list_node *list, int status, const struct imgcache_image_info *info,
                         const struct agent_error *err)
{
    struct waiter *w;

    while ((w = list_first_entry_or_null(list, struct waiter, link))) {
        list_del(&w->link);
        waiter_call(w, status, info, err);
    }
}

static void queue_run(struct imgcache *c);

/* Next loop turn after an acquire: start new flights, report cache hits. */
static void on_defer_timer(uv_timer_t *t)
{
    struct imgcache *c = t->data;
    struct list_node ready;
    struct waiter *w;

    queue_run(c);
    list_init(&ready);
    list_splice_tail(&ready, &c->ready);
    while ((w = list_first_entry_or_null(&ready, struct waiter, link))) {
        struct imgcache_row r;
        struct imgcache_image_info info;
        struct agent_error err = {0};

        list_del(&w->link);
        if (imgcache_index_get(c->db, w->id, &r) == 0 && r.state == IMGCACHE_CACHED) {
            info_from_row(&r, &info);
            waiter_call(w, 0, &info, NULL);
        } else {
            agent_error_set(&err, ENOENT, "not_found", NULL,
                            "image %s was removed before it could be handed over", w->id);
            waiter_call(w, -ENOENT, NULL, &err);
        }
        imgcache_row_clear(&r);
    }
}

static int add_ready(struct imgcache *c, const char *id, imgcache_done_cb cb, void *opaque)
{
    struct waiter *w = calloc(1, sizeof(*w));

    if (!w)
        return -ENOMEM;
    w->cb = cb;
    w->opaque = opaque;
    strscpy(w->id, id, sizeof(w->id));
    list_add_tail(&c->ready, &w->link);
    uv_timer_start(&c->defer_timer, on_defer_timer, 0, 0);
    return 0;
}

static int flight_add_waiter(struct flight *fl, imgcache_done_cb cb, void *opaque)
{
    struct waiter *w = calloc(1, sizeof(*w));

    if (!w)
        return -ENOMEM;
    w->cb = cb;
    w->opaque = opaque;
    list_add_tail(&fl->waiters, &w->link);
    return 0;
}

/* ---- flights ---- */

static void flight_unlink(struct flight *fl)
{
    struct imgcache *c = fl->c;

    list_del(&fl->link);
    list_del(&fl->qlink);
    if (fl->started)
        c->running--;
    c->reserved -= fl->reserved;
    fl->reserved = 0;
}

static void flight_destroy(struct flight *fl)
{
    imgcache_glance_req_free(fl->meta);
    imgcache_fetch_free(fl->fetch);
    free(fl->url);
    free(fl->tmp_path);
    free(fl);
}

/* Start queued flights while slots are free. */
static void queue_run(struct imgcache *c)
{
    while (!c->freeing && !list_empty(&c->queue) && c->running < c->max_parallel) {
        struct flight *fl = list_entry(c->queue.next, struct flight, qlink);

        list_del(&fl->qlink);
        flight_begin(fl);
    }
}

/* End a flight: unlink it, then call its waiters (which may acquire again). */
static void flight_end(struct flight *fl, int status, const struct imgcache_image_info *info,
                       const struct agent_error *err)
{
    struct imgcache *c = fl->c;
    struct list_node w;

    list_init(&w);
    list_splice_tail(&w, &fl->waiters);
    if (status < 0 && c->pull_failed) {
        char glance[IMGCACHE_ID_LEN + 8];
        _cleanup_free_ char *shown = NULL;

        if (fl->glance_id[0])
            snprintf(glance, sizeof(glance), "glance:%s", fl->glance_id);
        else
            shown = url_redact(fl->url);
        c->pull_failed(fl->id, fl->glance_id[0] ? glance : shown ? shown : "?", err,
                       c->pull_failed_opaque);
    }
    flight_unlink(fl);
    flight_destroy(fl);
    queue_run(c);
    call_waiters(&w, status, info, err);
}

static void flight_fail(struct flight *fl, int status, const struct agent_error *err)
{
    struct imgcache *c = fl->c;
    struct imgcache_row r;

    if (fl->tmp_path)
        unlink(fl->tmp_path);
    if (imgcache_index_get(c->db, fl->id, &r) == 0) {
        r.state = IMGCACHE_FAILED;
        row_set_error(&r, err->code, err->message);
        imgcache_index_update(c->db, &r);
        imgcache_row_clear(&r);
    }
    /* the instances waiting for it will not boot from it */
    imgcache_index_users_clear(c->db, fl->id);
    flight_end(fl, status, NULL, err);
}

/* Another entry holds this content: hand our waiters and pins over to it and
 * drop our entry. Returns true if fl is gone. If that entry failed, it is
 * absorbed into ours instead (pins move to us), and fl goes on. */
static bool flight_merge(struct flight *fl, struct imgcache_row *other)
{
    struct imgcache *c = fl->c;
    struct flight *ofl;

    if (other->state == IMGCACHE_CACHED && base_file_ok(other)) {
        struct imgcache_image_info info;
        struct list_node w;

        imgcache_index_user_move(c->db, fl->id, other->id);
        if (fl->glance_id[0] && !other->glance_id[0])
            strscpy(other->glance_id, fl->glance_id, sizeof(other->glance_id));
        other->last_used_at = now_wall_ms();
        imgcache_index_update(c->db, other);
        imgcache_index_delete(c->db, fl->id);
        if (fl->tmp_path)
            unlink(fl->tmp_path);
        list_init(&w);
        list_splice_tail(&w, &fl->waiters);
        flight_unlink(fl);
        flight_destroy(fl);
        queue_run(c);
        info_from_row(other, &info);
        call_waiters(&w, 0, &info, NULL);
        return true;
    }
    ofl = other->state == IMGCACHE_DOWNLOADING ? flight_find(c, other->id) : NULL;
    if (ofl) {
        imgcache_index_user_move(c->db, fl->id, other->id);
        if (fl->glance_id[0] && !other->glance_id[0]) {
            strscpy(other->glance_id, fl->glance_id, sizeof(other->glance_id));
            imgcache_index_update(c->db, other);
        }
        imgcache_index_delete(c->db, fl->id);
        if (fl->tmp_path)
            unlink(fl->tmp_path);
        list_splice_tail(&ofl->waiters, &fl->waiters);
        flight_unlink(fl);
        flight_destroy(fl);
        queue_run(c);
        return true;
    }
    /* failed (or a stale entry): ours takes its place */
    imgcache_index_user_move(c->db, other->id, fl->id);
    imgcache_index_delete(c->db, other->id);
    return false;
}

/* ---- install: inspect and move into place (thread pool) ---- */

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
    if ((r = fsync_dir(in->images_dir)) < 0 || (r = fsync_dir(in->tmp_dir)) < 0)
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

static void maybe_free_cache(struct imgcache *c);

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
        maybe_free_cache(c);
        return;
    }
    fl->install = NULL;
    if (in->status < 0) {
        int st = in->status;

        err = in->err;
        install_free(in);
        flight_fail(fl, st, &err);
        return;
    }
    if (imgcache_index_get(c->db, fl->id, &r) < 0) {
        unlink(in->final_path);
        install_free(in);
        agent_error_set(&err, EIO, "internal", NULL, "image %s vanished from the index", fl->id);
        flight_end(fl, -EIO, NULL, &err);
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
    row_set_error(&r, NULL, NULL);
    install_free(in);
    if (imgcache_index_update(c->db, &r) < 0) {
        agent_error_set(&err, EIO, "internal", NULL, "cannot record image %s in the index",
                        fl->id);
        unlink(r.path);
        imgcache_row_clear(&r);
        flight_fail(fl, -EIO, &err);
        return;
    }
    info_from_row(&r, &info);
    flight_end(fl, 0, &info, NULL);
    imgcache_row_clear(&r);
    /* keep within the budget now that the image counts as cached */
    imgcache_evict(c, 0);
}

static void install_start(struct flight *fl, const struct imgcache_digest *d)
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
        in->final_path = path_join(c->images_dir, name);
        in->images_dir = strdup(c->images_dir);
        in->tmp_dir = strdup(c->tmp_dir);
        in->max_virtual_size = c->max_virtual_size;
    }
    if (!in || !in->qemu_img || !in->tmp_path || !in->final_path || !in->images_dir ||
        !in->tmp_dir) {
        if (in)
            install_free(in);
        agent_error_set(&err, ENOMEM, "internal", NULL, "out of memory");
        flight_fail(fl, -ENOMEM, &err);
        return;
    }
    fl->install = in;
    uv_queue_work(c->loop, &in->req, do_install, after_install);
}

/* ---- fetch ---- */

static int on_fetch_size(uint64_t total, struct agent_error *err, void *opaque)
{
    struct flight *fl = opaque;
    struct imgcache *c = fl->c;
    uint64_t budget = imgcache_budget(c);
    _cleanup_free_ char *shown = NULL;

    if (total <= budget && imgcache_evict(c, total) >= 0) {
        fl->reserved = total;
        c->reserved += total;
        return 0;
    }
    shown = url_redact(fl->url);
    if (total > budget)
        return agent_error_set(err, ENOSPC, "insufficient_resources", NULL,
                               "image of %llu bytes from %s is larger than the cache budget of "
                               "%llu bytes; not downloaded",
                               (unsigned long long)total, shown ? shown : "?",
                               (unsigned long long)budget);
    {
        struct statvfs vfs;
        uint64_t free_bytes = statvfs(c->dir, &vfs) == 0 ? (uint64_t)vfs.f_bavail * vfs.f_frsize : 0;

        if (free_bytes < total)
            return agent_error_set(err, ENOSPC, "insufficient_resources", NULL,
                                   "no room for an image of %llu bytes from %s: %llu bytes free "
                                   "on the disk holding the cache, with every unused image "
                                   "evicted; not downloaded",
                                   (unsigned long long)total, shown ? shown : "?",
                                   (unsigned long long)free_bytes);
    }
    return agent_error_set(err, ENOSPC, "insufficient_resources", NULL,
                           "no room for an image of %llu bytes from %s in the cache budget of "
                           "%llu bytes: the rest is held by images in use or downloading; not "
                           "downloaded",
                           (unsigned long long)total, shown ? shown : "?",
                           (unsigned long long)budget);
}

/* A body of unknown length grows: reserve room for it a step at a time,
 * evicting unused images as needed, and refuse once neither the budget
 * (what images in use and other downloads leave of it) nor the disk can
 * take more. */
static int on_fetch_room(uint64_t need, uint64_t *granted, struct agent_error *err, void *opaque)
{
    struct flight *fl = opaque;
    struct imgcache *c = fl->c;
    uint64_t budget = imgcache_budget(c), cached = 0, unused = 0, held;
    _cleanup_free_ struct imgcache_victim *v = NULL;
    _cleanup_free_ char *shown = NULL;
    struct statvfs vfs;
    size_t n = 0;

    /* a step ahead if that fits, else just what is needed */
    for (int i = 0; i < 2; i++) {
        uint64_t want = i == 0 ? need + ROOM_STEP : need;
        uint64_t extra = want > fl->reserved ? want - fl->reserved : 0;

        if (imgcache_evict(c, extra) >= 0) {
            fl->reserved += extra;
            c->reserved += extra;
            *granted = want;
            return 0;
        }
    }
    /* the figures: what the budget holds that cannot go */
    imgcache_index_cached_bytes(c->db, &cached);
    if (imgcache_index_victims(c->db, &v, &n) == 0)
        for (size_t i = 0; i < n; i++)
            unused += v[i].size > 0 ? (uint64_t)v[i].size : 0;
    held = (cached > unused ? cached - unused : 0) + (c->reserved - fl->reserved);
    shown = url_redact(fl->url);
    if (budget != UINT64_MAX && need > (budget > held ? budget - held : 0))
        return agent_error_set(err, ENOSPC, "insufficient_resources", NULL,
                               "image of unknown size from %s passed %llu bytes, more than the "
                               "cache budget of %llu bytes allows: %llu bytes of it are held by "
                               "images in use or downloading; stopped",
                               shown ? shown : "?", (unsigned long long)need,
                               (unsigned long long)budget, (unsigned long long)held);
    return agent_error_set(err, ENOSPC, "insufficient_resources", NULL,
                           "image of unknown size from %s passed %llu bytes, more than the "
                           "%llu bytes free on the disk holding the cache (with every unused "
                           "image evicted); stopped",
                           shown ? shown : "?", (unsigned long long)need,
                           statvfs(c->dir, &vfs) == 0
                               ? (unsigned long long)vfs.f_bavail * vfs.f_frsize
                               : 0ull);
}

static void on_fetch_done(struct imgcache_fetch *f, int status, const struct agent_error *ferr,
                          void *opaque)
{
    struct flight *fl = opaque;
    struct imgcache *c = fl->c;
    struct agent_error err = {0};
    struct imgcache_digest got = {0};
    const char *md5;

    if (status < 0) {
        flight_fail(fl, status, ferr);
        return;
    }
    got.algo = fl->expect.algo != IMGCACHE_ALGO_NONE ? fl->expect.algo : IMGCACHE_ALGO_SHA256;
    strscpy(got.hex, imgcache_fetch_hex(f, got.algo), sizeof(got.hex));
    if (fl->expect.algo != IMGCACHE_ALGO_NONE && strcmp(got.hex, fl->expect.hex) != 0) {
        const char *name = imgcache_algo_name(got.algo);
        _cleanup_free_ char *shown = url_redact(fl->url);
        agent_error_set(&err, EBADMSG, "digest_mismatch", NULL,
                        "digest mismatch for %s: expected %s:%s, got %s:%s", shown ? shown : "?",
                        name, fl->expect.hex, name, got.hex);
        flight_fail(fl, -EBADMSG, &err);
        return;
    }
    md5 = imgcache_fetch_hex(f, IMGCACHE_ALGO_MD5);
    if (fl->md5_expect[0] && (!md5 || strcmp(md5, fl->md5_expect) != 0)) {
        _cleanup_free_ char *shown = url_redact(fl->url);
        agent_error_set(&err, EBADMSG, "digest_mismatch", NULL,
                        "checksum mismatch for %s: Glance says md5:%s, got md5:%s",
                        shown ? shown : "?", fl->md5_expect, md5 ? md5 : "?");
        flight_fail(fl, -EBADMSG, &err);
        return;
    }
    if (fl->expect.algo == IMGCACHE_ALGO_NONE) {
        /* Glance gave only an MD5: the content is named by our SHA-256 */
        char digest[IMGCACHE_DIGEST_MAX];
        struct imgcache_row other, r;

        imgcache_digest_format(&got, digest, sizeof(digest));
        if (imgcache_index_find_digest(c->db, digest, &other) == 0) {
            bool gone = strcmp(other.id, fl->id) != 0 && flight_merge(fl, &other);
            imgcache_row_clear(&other);
            if (gone)
                return;
        }
        if (imgcache_index_get(c->db, fl->id, &r) == 0) {
            strscpy(r.digest, digest, sizeof(r.digest));
            imgcache_index_update(c->db, &r);
            imgcache_row_clear(&r);
        }
        fl->expect = got;
    }
    install_start(fl, &got);
}

static void fetch_begin(struct flight *fl, const char *token)
{
    struct imgcache *c = fl->c;
    struct agent_error err = {0};
    struct imgcache_fetch_opts o = {
        .url = fl->url,
        .auth_token = token,
        .ca_bundle = c->ca_bundle,
        .max_redirects = token ? -1 : c->max_redirects,
        .stall_timeout_s = c->stall_timeout_s,
        .retries = c->retries,
        .retry_delay_ms = c->retry_delay_ms,
        .algo = fl->expect.algo != IMGCACHE_ALGO_NONE ? fl->expect.algo : IMGCACHE_ALGO_SHA256,
        .md5_too = fl->md5_expect[0] != '\0',
        .expected_size = fl->expected_size,
        /* a file much larger than the largest virtual size allowed is no image of ours */
        .max_size = c->max_virtual_size + (c->max_virtual_size >> 4) + (64u << 20),
        /* the URL came with the request; Glance's /file is the configured endpoint */
        .check_peer = token == NULL,
        .allowed = c->allowed,
        .n_allowed = c->n_allowed,
        .room_cb = on_fetch_room,
    };
    char name[IMGCACHE_ID_LEN + 8];
    int r;

    snprintf(name, sizeof(name), "%s.part", fl->id);
    fl->tmp_path = path_join(c->tmp_dir, name);
    if (!fl->tmp_path) {
        agent_error_set(&err, ENOMEM, "internal", NULL, "out of memory");
        flight_fail(fl, -ENOMEM, &err);
        return;
    }
    unlink(fl->tmp_path);
    o.path = fl->tmp_path;
    r = imgcache_fetch_start(c->loop, c->http, &o, on_fetch_size, on_fetch_done, fl, &fl->fetch,
                             &err);
    if (r < 0) {
        free(fl->tmp_path); /* fetch removed it; do not unlink someone else's */
        fl->tmp_path = NULL;
        flight_fail(fl, r, &err);
    }
}

static void on_glance_meta(int status, const struct imgcache_glance_meta *m,
                           const struct agent_error *gerr, void *opaque)
{
    struct flight *fl = opaque;
    struct imgcache *c = fl->c;
    struct agent_error err = {0};
    char digest[IMGCACHE_DIGEST_MAX];
    struct imgcache_row other, r;

    imgcache_glance_req_free(fl->meta);
    fl->meta = NULL;
    if (status < 0) {
        flight_fail(fl, status, gerr);
        return;
    }
    if (strcmp(m->status, "active") != 0) {
        agent_error_set(&err, EAGAIN, "image_not_active", "glance_id",
                        "Glance image %s is %s, not active", fl->glance_id, m->status);
        flight_fail(fl, -EAGAIN, &err);
        return;
    }
    if (m->algo == IMGCACHE_ALGO_NONE && !m->md5_hex[0]) {
        agent_error_set(&err, EINVAL, "glance_error", "glance_id",
                        "Glance image %s has neither os_hash_value nor checksum: it cannot be "
                        "verified", fl->glance_id);
        flight_fail(fl, -EINVAL, &err);
        return;
    }
    fl->expect.algo = m->algo;
    strscpy(fl->expect.hex, m->hash_hex, sizeof(fl->expect.hex));
    strscpy(fl->md5_expect, m->md5_hex, sizeof(fl->md5_expect));
    fl->expected_size = m->size;
    free(fl->url);
    fl->url = imgcache_glance_file_url(c->glance_url, fl->glance_id);
    if (!fl->url) {
        agent_error_set(&err, ENOMEM, "internal", NULL, "out of memory");
        flight_fail(fl, -ENOMEM, &err);
        return;
    }
    if (m->algo != IMGCACHE_ALGO_NONE) {
        imgcache_digest_format(&fl->expect, digest, sizeof(digest));
        if (imgcache_index_find_digest(c->db, digest, &other) == 0) {
            bool gone = strcmp(other.id, fl->id) != 0 && flight_merge(fl, &other);
            imgcache_row_clear(&other);
            if (gone)
                return;
        }
        if (imgcache_index_get(c->db, fl->id, &r) == 0) {
            strscpy(r.digest, digest, sizeof(r.digest));
            imgcache_index_update(c->db, &r);
            imgcache_row_clear(&r);
        }
    }
    fetch_begin(fl, c->glance_token ? c->glance_token : "");
}

static void flight_begin(struct flight *fl)
{
    struct imgcache *c = fl->c;
    struct agent_error err = {0};
    int r;

    fl->started = true;
    c->running++;
    if (!fl->glance_id[0]) {
        fetch_begin(fl, NULL);
        return;
    }
    r = imgcache_glance_get(c->loop, c->http, c->glance_url, c->glance_token, fl->glance_id,
                            c->ca_bundle, c->retries, c->retry_delay_ms, c->stall_timeout_s,
                            on_glance_meta, fl, &fl->meta);
    if (r < 0) {
        agent_error_set(&err, -r, "internal", NULL, "cannot ask Glance: %s", strerror(-r));
        flight_fail(fl, r, &err);
    }
}

/* A new flight for row r (state already "downloading"), with its first
 * waiter: from Glance (via_glance) or from r->url with expect. */
static int flight_new(struct imgcache *c, const struct imgcache_row *r, bool via_glance,
                      const struct imgcache_digest *expect, imgcache_done_cb cb, void *opaque)
{
    struct flight *fl = calloc(1, sizeof(*fl));

    if (!fl)
        return -ENOMEM;
    fl->c = c;
    list_init(&fl->waiters);
    strscpy(fl->id, r->id, sizeof(fl->id));
    if (via_glance)
        strscpy(fl->glance_id, r->glance_id, sizeof(fl->glance_id));
    if (expect)
        fl->expect = *expect;
    if (r->url && !(fl->url = strdup(r->url))) {
        free(fl);
        return -ENOMEM;
    }
    if (flight_add_waiter(fl, cb, opaque) < 0) {
        free(fl->url);
        free(fl);
        return -ENOMEM;
    }
    list_add_head(&c->flights, &fl->link);
    /* started from the loop, so that no callback ever runs inside acquire */
    list_add_tail(&c->queue, &fl->qlink);
    uv_timer_start(&c->defer_timer, on_defer_timer, 0, 0);
    return 0;
}

/* ---- public API ---- */

int imgcache_acquire(struct imgcache *c, const struct imgcache_request *req, const char *user,
                     imgcache_done_cb cb, void *opaque, char image_id[IMGCACHE_ID_LEN],
                     struct agent_error *err)
{
    struct imgcache_row r = {0};
    struct imgcache_digest d = {0};
    char digest[IMGCACHE_DIGEST_MAX] = "";
    struct flight *fl;
    bool via_glance;
    int found, rc;

    if (c->freeing)
        return agent_error_set(err, ECANCELED, "unavailable", NULL, "the image cache is closing");
    if (imgcache_request_check(req, "image", err) < 0)
        return -EINVAL;
    if (user && !user_is_valid(user))
        return agent_error_set(err, EINVAL, "invalid_field", NULL,
                               "user must be 1..%d printable characters", USER_MAX);
    if (req->glance_id && !c->glance_url)
        return agent_error_set(err, ENOTSUP, "not_supported", "image.glance_id",
                               "no Glance endpoint is configured on this host");
    if (req->url) {
        imgcache_digest_parse(req->digest, &d);
        imgcache_digest_format(&d, digest, sizeof(digest));
        found = imgcache_index_find_digest(c->db, digest, &r);
    } else if (req->glance_id) {
        found = imgcache_index_find_glance(c->db, req->glance_id, &r);
    } else {
        found = imgcache_index_get(c->db, req->id, &r);
        if (found == -ENOENT)
            return agent_error_set(err, ENOENT, "not_found", "image.id", "no image %s in the cache",
                                   req->id);
    }
    if (found < 0 && found != -ENOENT)
        return agent_error_set(err, EIO, "internal", NULL, "image index unreadable");

    if (found == 0 && r.state == IMGCACHE_CACHED) {
        if (base_file_ok(&r)) {
            rc = add_ready(c, r.id, cb, opaque);
            if (rc == 0) {
                if (user)
                    imgcache_index_user_add(c->db, r.id, user);
                imgcache_index_touch(c->db, r.id, now_wall_ms());
                if (image_id)
                    strscpy(image_id, r.id, IMGCACHE_ID_LEN);
            }
            imgcache_row_clear(&r);
            return rc < 0 ? agent_error_set(err, -rc, "internal", NULL, "out of memory") : 0;
        }
        r.state = IMGCACHE_FAILED; /* file gone: fetch it again below */
    }
    if (found == 0 && r.state == IMGCACHE_DOWNLOADING && (fl = flight_find(c, r.id))) {
        rc = flight_add_waiter(fl, cb, opaque);
        if (rc == 0) {
            if (user)
                imgcache_index_user_add(c->db, r.id, user);
            if (image_id)
                strscpy(image_id, r.id, IMGCACHE_ID_LEN);
        }
        imgcache_row_clear(&r);
        return rc < 0 ? agent_error_set(err, -rc, "internal", NULL, "out of memory") : 0;
    }

    if (found == 0) {
        /* failed, file gone, or left "downloading" by a crash: fetch again */
        if (req->url) {
            free(r.url);
            r.url = strdup(req->url);
            if (!r.url) {
                imgcache_row_clear(&r);
                return agent_error_set(err, ENOMEM, "internal", NULL, "out of memory");
            }
        }
        /* the source asked for; for an id, its URL if it has one, else Glance */
        via_glance = req->glance_id || (req->id && !r.url && r.glance_id[0]);
        if (!r.url && !via_glance) {
            imgcache_row_clear(&r);
            return agent_error_set(err, ENOENT, "not_found", "image.id",
                                   "image %s has no source to fetch it again from", req->id);
        }
        if (via_glance && !c->glance_url) {
            imgcache_row_clear(&r);
            return agent_error_set(err, ENOTSUP, "not_supported", "image.id",
                                   "image comes from Glance, and no Glance endpoint is "
                                   "configured on this host");
        }
        if (req->id && !via_glance && imgcache_digest_parse(r.digest, &d) < 0) {
            imgcache_row_clear(&r);
            return agent_error_set(err, EINVAL, "internal", NULL, "bad digest in the index");
        }
        r.state = IMGCACHE_DOWNLOADING;
        r.format[0] = '\0';
        r.size = r.virtual_size = -1;
        row_set_error(&r, NULL, NULL);
        rc = imgcache_index_update(c->db, &r);
    } else {
        via_glance = req->glance_id != NULL;
        if ((rc = uuid_generate_str(r.id)) < 0)
            return agent_error_set(err, -rc, "internal", NULL, "no random bytes for an id");
        strscpy(r.digest, digest, sizeof(r.digest));
        r.url = req->url ? strdup(req->url) : NULL;
        strscpy(r.glance_id, req->glance_id ? req->glance_id : "", sizeof(r.glance_id));
        r.state = IMGCACHE_DOWNLOADING;
        r.size = r.virtual_size = -1;
        r.created_at = r.last_used_at = now_wall_ms();
        rc = (req->url && !r.url) ? -ENOMEM : imgcache_index_insert(c->db, &r);
    }
    if (rc < 0) {
        imgcache_row_clear(&r);
        return agent_error_set(err, -rc, "internal", NULL, "cannot record the image: %s",
                               strerror(-rc));
    }
    if (user)
        imgcache_index_user_add(c->db, r.id, user);
    if (image_id)
        strscpy(image_id, r.id, IMGCACHE_ID_LEN);
    rc = flight_new(c, &r, via_glance, via_glance ? NULL : &d, cb, opaque);
    if (rc < 0) {
        r.state = IMGCACHE_FAILED;
        row_set_error(&r, "internal", "out of memory");
        imgcache_index_update(c->db, &r);
        imgcache_index_users_clear(c->db, r.id);
        imgcache_row_clear(&r);
        return agent_error_set(err, -rc, "internal", NULL, "out of memory");
    }
    imgcache_row_clear(&r);
    return 0;
}

int imgcache_release(struct imgcache *c, const char *image_id, const char *user)
{
    if (!user)
        return -EINVAL;
    return imgcache_index_user_remove(c->db, image_id, user, now_wall_ms());
}

int imgcache_overlay_create(struct imgcache *c, const char *image_id, const char *overlay_path,
                            uint64_t size_bytes, struct agent_error *err)
{
    struct imgcache_row r;
    int rc;

    if (!image_id || imgcache_index_get(c->db, image_id, &r) < 0)
        return agent_error_set(err, ENOENT, "not_found", "image.id", "no image %s in the cache",
                               image_id ? image_id : "");
    if (r.state != IMGCACHE_CACHED || !base_file_ok(&r)) {
        rc = agent_error_set(err, EAGAIN, "conflict", "image.id", "image %s is %s, not cached",
                             r.id, imgcache_state_name(r.state));
        goto out;
    }
    if (size_bytes == 0)
        size_bytes = (uint64_t)r.virtual_size;
    if (size_bytes < (uint64_t)r.virtual_size) {
        rc = agent_error_set(err, EINVAL, "invalid_field", "flavor.disk_gb",
                             "disk of %llu bytes is smaller than the image (%lld bytes)",
                             (unsigned long long)size_bytes, (long long)r.virtual_size);
        goto out;
    }
    rc = imgcache_qcow2_overlay_write(overlay_path, r.path, r.format, size_bytes, err);
    if (rc == 0)
        imgcache_index_touch(c->db, r.id, now_wall_ms());
out:
    imgcache_row_clear(&r);
    return rc;
}

int imgcache_file_inspect(const struct imgcache *c, const char *path, char format[16],
                          uint64_t *virtual_size, struct agent_error *err)
{
    struct imgcache_inspect in;
    int rc = imgcache_inspect_file(c->qemu_img, path, c->max_virtual_size, &in, err);

    if (rc < 0)
        return rc;
    strscpy(format, in.format, 16);
    *virtual_size = in.virtual_size;
    return 0;
}

int imgcache_progress(struct imgcache *c, const char *id, struct imgcache_progress *p)
{
    struct flight *fl = flight_find(c, id);

    if (!fl)
        return -ENOENT;
    if (fl->fetch) {
        imgcache_fetch_progress(fl->fetch, p);
    } else {
        p->bytes_done = fl->install ? fl->expected_size : 0;
        p->bytes_total = fl->expected_size;
        p->rate_bps = 0;
    }
    return 0;
}

static json_t *json_time_or_null(int64_t ms)
{
    char buf[32];

    if (ms <= 0)
        return json_null();
    format_rfc3339_ms(ms, buf);
    return json_string(buf);
}

static json_t *json_str_or_null(const char *s)
{
    return s && *s ? json_string(s) : json_null();
}

static json_t *json_int_or_null(int64_t v)
{
    return v < 0 ? json_null() : json_integer(v);
}

json_t *imgcache_get(struct imgcache *c, const char *id)
{
    struct imgcache_row r;
    struct imgcache_progress p;
    json_t *o, *users, *source, *progress = json_null(), *error = json_null();

    if (!id || imgcache_index_get(c->db, id, &r) < 0)
        return NULL;
    users = imgcache_index_users(c->db, r.id);
    if (r.glance_id[0])
        source = json_pack("{s:s}", "glance_id", r.glance_id);
    else {
        _cleanup_free_ char *shown = url_redact(r.url);
        source = json_pack("{s:s?}", "url", shown);
    }
    if (r.state == IMGCACHE_DOWNLOADING && imgcache_progress(c, r.id, &p) == 0) {
        json_decref(progress);
        progress = json_pack("{s:I,s:o,s:I}", "bytes_done", (json_int_t)p.bytes_done,
                             "bytes_total",
                             p.bytes_total ? json_integer((json_int_t)p.bytes_total) : json_null(),
                             "rate_bps", (json_int_t)p.rate_bps);
    }
    if (r.state == IMGCACHE_FAILED && r.error_code[0]) {
        json_decref(error);
        error = json_pack("{s:s,s:s}", "code", r.error_code, "message",
                          r.error_message ? r.error_message : "");
    }
    o = json_pack("{s:s,s:o,s:o,s:o,s:s,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o}", "id", r.id,
                  "digest", json_str_or_null(r.digest), "size", json_int_or_null(r.size),
                  "format", json_str_or_null(r.format), "state", imgcache_state_name(r.state),
                  "in_use_by", users ? users : json_array(), "source",
                  source ? source : json_null(), "virtual_size",
                  json_int_or_null(r.virtual_size), "created_at",
                  json_time_or_null(r.created_at), "last_used_at",
                  json_time_or_null(r.last_used_at), "error", error ? error : json_null(),
                  "progress", progress ? progress : json_null(), "path",
                  json_str_or_null(r.state == IMGCACHE_CACHED ? r.path : NULL));
    imgcache_row_clear(&r);
    return o;
}

json_t *imgcache_list(struct imgcache *c)
{
    char(*ids)[IMGCACHE_ID_LEN] = NULL;
    size_t n = 0;
    json_t *a = json_array();

    if (!a || imgcache_index_ids(c->db, &ids, &n) < 0) {
        json_decref(a);
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *o = imgcache_get(c, ids[i]);
        if (o)
            json_array_append_new(a, o);
    }
    free(ids);
    return a;
}

int imgcache_delete(struct imgcache *c, const char *id, struct agent_error *err)
{
    struct imgcache_row r;
    int n, rc;

    if (!id || imgcache_index_get(c->db, id, &r) < 0)
        return agent_error_set(err, ENOENT, "not_found", NULL, "no image %s in the cache",
                               id ? id : "");
    if (r.state == IMGCACHE_DOWNLOADING || flight_find(c, r.id)) {
        imgcache_row_clear(&r);
        return agent_error_set(err, EBUSY, "conflict", NULL, "image %s is being downloaded", id);
    }
    n = imgcache_index_user_count(c->db, r.id);
    if (n != 0) {
        json_t *users = imgcache_index_users(c->db, r.id);
        _cleanup_free_ char *list = users ? json_dumps(users, JSON_COMPACT) : NULL;
        json_decref(users);
        imgcache_row_clear(&r);
        return agent_error_set(err, EBUSY, "conflict", NULL, "image %s is in use by %s", id,
                               list ? list : "instances");
    }
    rc = remove_image(c, &r);
    imgcache_row_clear(&r);
    if (rc < 0)
        return agent_error_set(err, -rc, "internal", NULL, "removing image %s: %s", id,
                               strerror(-rc));
    return 0;
}

/* ---- start and stop ---- */

/* Downloads cut by a crash, files without an entry, entries without a file. */
static int startup_check(struct imgcache *c)
{
    char(*ids)[IMGCACHE_ID_LEN] = NULL;
    size_t n = 0;
    DIR *d;
    struct dirent *de;
    int r;

    d = opendir(c->tmp_dir);
    if (d) {
        while ((de = readdir(d)))
            if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
                unlinkat(dirfd(d), de->d_name, 0);
        closedir(d);
    }
    if ((r = imgcache_index_ids(c->db, &ids, &n)) < 0)
        return r;
    for (size_t i = 0; i < n; i++) {
        struct imgcache_row row;

        if (imgcache_index_get(c->db, ids[i], &row) < 0)
            continue;
        if (row.state == IMGCACHE_DOWNLOADING) {
            row.state = IMGCACHE_FAILED;
            row_set_error(&row, "download_failed",
                          "interrupted: the agent stopped during the download");
            imgcache_index_update(c->db, &row);
        } else if (row.state == IMGCACHE_CACHED && !base_file_ok(&row)) {
            row.state = IMGCACHE_FAILED;
            row_set_error(&row, "internal",
                          "the cached file was missing or of the wrong size at start");
            imgcache_index_update(c->db, &row);
        }
        imgcache_row_clear(&row);
    }
    free(ids);
    d = opendir(c->images_dir);
    if (d) {
        while ((de = readdir(d))) {
            _cleanup_free_ char *p = NULL;
            struct imgcache_row row;
            bool keep = false;
            const char *dash;
            char digest[IMGCACHE_DIGEST_MAX];

            if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
                continue;
            dash = strchr(de->d_name, '-');
            if (dash && (size_t)(dash - de->d_name) < 8) {
                snprintf(digest, sizeof(digest), "%.*s:%s", (int)(dash - de->d_name),
                         de->d_name, dash + 1);
                p = path_join(c->images_dir, de->d_name);
                if (p && imgcache_index_find_digest(c->db, digest, &row) == 0) {
                    keep = row.state == IMGCACHE_CACHED && row.path && strcmp(row.path, p) == 0;
                    imgcache_row_clear(&row);
                }
            }
            if (!keep)
                unlinkat(dirfd(d), de->d_name, 0);
        }
        closedir(d);
    }
    return 0;
}

static char *strdup_or_null(const char *s, bool *oom)
{
    char *d;

    if (!s)
        return NULL;
    d = strdup(s);
    if (!d)
        *oom = true;
    return d;
}

static void cache_release_memory(struct imgcache *c)
{
    free(c->dir);
    free(c->images_dir);
    free(c->tmp_dir);
    free(c->ca_bundle);
    free(c->glance_url);
    free(c->glance_token);
    free(c->qemu_img);
    free(c->allowed);
    free(c);
}

static void maybe_free_cache(struct imgcache *c)
{
    if (c->freeing && c->pending == 0)
        cache_release_memory(c);
}

static void on_cache_handle_closed(uv_handle_t *h)
{
    struct imgcache *c = h->data;

    c->pending--;
    maybe_free_cache(c);
}

int imgcache_new(uv_loop_t *loop, sqlite3 *db, const struct imgcache_config *cfg,
                 struct imgcache **ret, struct agent_error *err)
{
    struct imgcache *c;
    char real[PATH_MAX];
    bool oom = false;
    int r;

    if (!cfg || !cfg->dir || !*cfg->dir)
        return agent_error_set(err, EINVAL, "invalid_field", "image_cache.dir",
                               "the image cache needs a directory");
    if ((r = mkdir_p(cfg->dir, 0755)) < 0)
        return agent_error_set(err, -r, "internal", "image_cache.dir", "creating %s: %s",
                               cfg->dir, strerror(-r));
    if (!realpath(cfg->dir, real))
        return agent_error_set(err, errno, "internal", "image_cache.dir", "%s: %s", cfg->dir,
                               strerror(errno));
    if (cfg->glance_url) {
        struct agent_error e;
        if (imgcache_url_check(cfg->glance_url, "image_cache.glance_url", &e) < 0) {
            if (err)
                *err = e;
            return -EINVAL;
        }
    }
    c = calloc(1, sizeof(*c));
    if (!c)
        return agent_error_set(err, ENOMEM, "internal", NULL, "out of memory");
    list_init(&c->flights);
    list_init(&c->queue);
    list_init(&c->ready);
    c->loop = loop;
    c->db = db;
    c->dir = strdup_or_null(real, &oom);
    c->images_dir = path_join(real, "images");
    c->tmp_dir = path_join(real, "tmp");
    c->ca_bundle = strdup_or_null(cfg->ca_bundle, &oom);
    c->glance_url = strdup_or_null(cfg->glance_url, &oom);
    c->glance_token = strdup_or_null(cfg->glance_token, &oom);
    c->qemu_img = strdup_or_null(cfg->qemu_img ? cfg->qemu_img : "/usr/bin/qemu-img", &oom);
    if (oom || !c->images_dir || !c->tmp_dir) {
        cache_release_memory(c);
        return agent_error_set(err, ENOMEM, "internal", NULL, "out of memory");
    }
    if (c->glance_url) {
        size_t n = strlen(c->glance_url);
        while (n > 0 && c->glance_url[n - 1] == '/')
            c->glance_url[--n] = '\0';
    }
    c->budget_bytes = cfg->budget_bytes;
    c->budget_percent = cfg->budget_percent > 100 ? 100 : cfg->budget_percent;
    c->max_unused_age_ms = cfg->max_unused_age_s > 0 ? cfg->max_unused_age_s * 1000 : 0;
    c->max_virtual_size = cfg->max_virtual_size ? cfg->max_virtual_size : DEFAULT_MAX_VSIZE;
    c->max_redirects = cfg->max_redirects ? (cfg->max_redirects < 0 ? -1 : cfg->max_redirects) : 5;
    c->max_parallel = cfg->max_parallel > 0 ? cfg->max_parallel : 4;
    c->stall_timeout_s = cfg->stall_timeout_s > 0 ? cfg->stall_timeout_s : 30;
    c->retries = cfg->retries ? (cfg->retries < 0 ? 0 : cfg->retries) : 3;
    c->retry_delay_ms = cfg->retry_delay_ms > 0 ? cfg->retry_delay_ms : 1000;
    c->evict_interval_s = cfg->evict_interval_s > 0 ? cfg->evict_interval_s : 300;
    c->pull_failed = cfg->pull_failed;
    c->pull_failed_opaque = cfg->pull_failed_opaque;
    if ((r = imgcache_nets_parse(cfg->allowed_networks, "image_cache.allowed_networks",
                                 &c->allowed, &c->n_allowed, err)) < 0) {
        cache_release_memory(c);
        return r;
    }

    if ((r = mkdir_p(c->images_dir, 0755)) < 0 || (r = mkdir_p(c->tmp_dir, 0700)) < 0) {
        agent_error_set(err, -r, "internal", "image_cache.dir", "creating %s: %s", c->images_dir,
                        strerror(-r));
        cache_release_memory(c);
        return r;
    }
    if (imgcache_index_init(db) < 0) {
        agent_error_set(err, EIO, "internal", NULL, "creating the image index: %s",
                        sqlite3_errmsg(db));
        cache_release_memory(c);
        return -EIO;
    }
    if ((r = startup_check(c)) < 0) {
        agent_error_set(err, -r, "internal", NULL, "checking the image cache: %s", strerror(-r));
        cache_release_memory(c);
        return r;
    }
    if ((r = httpuv_new(loop, &c->http)) < 0) {
        agent_error_set(err, -r, "internal", NULL, "cannot set up libcurl: %s", strerror(-r));
        cache_release_memory(c);
        return r;
    }
    uv_timer_init(loop, &c->defer_timer);
    c->defer_timer.data = c;
    uv_timer_init(loop, &c->evict_timer);
    c->evict_timer.data = c;
    uv_timer_start(&c->evict_timer, on_evict_timer, (uint64_t)c->evict_interval_s * 1000,
                   (uint64_t)c->evict_interval_s * 1000);
    uv_unref((uv_handle_t *)&c->evict_timer); /* does not keep the loop alive alone */
    imgcache_evict(c, 0);
    *ret = c;
    return 0;
}

void imgcache_free(struct imgcache *c)
{
    struct agent_error err = {0};
    struct list_node cancelled;
    struct flight *fl;

    if (!c || c->freeing)
        return;
    c->freeing = true;
    agent_error_set(&err, ECANCELED, "unavailable", NULL, "the image cache was shut down");
    list_init(&cancelled);
    while ((fl = list_first_entry_or_null(&c->flights, struct flight, link))) {
        list_splice_tail(&cancelled, &fl->waiters);
        if (fl->install) {
            fl->install->fl = NULL; /* after_install cleans up */
            c->pending++;
            fl->install = NULL;
        }
        flight_unlink(fl);
        flight_destroy(fl);
    }
    list_splice_tail(&cancelled, &c->ready);
    call_waiters(&cancelled, -ECANCELED, NULL, &err);
    httpuv_free(c->http);
    c->http = NULL;
    c->pending += 2;
    uv_close((uv_handle_t *)&c->defer_timer, on_cache_handle_closed);
    uv_close((uv_handle_t *)&c->evict_timer, on_cache_handle_closed);
}
