/* flight.c: one flight per image being fetched; every acquire of that image
 * while it runs adds a waiter, so any number of requests share one download
 * and all get its result. A flight: (Glance metadata) -> fetch to
 * tmp/<id>.part -> digest check -> install (install.c) -> waiters called. At
 * most max_parallel flights run; the others queue. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* asprintf */
#endif
#include "image-cache/imgcache-private.h"

#include <stdio.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

static void queue_run(struct imgcache *c);
static void flight_begin(struct flight *fl);

struct flight *imgcache_flight_find(struct imgcache *c, const char *id)
{
    struct flight *fl;

    list_for_each_entry(fl, &c->flights, link)
        if (strcmp(fl->id, id) == 0)
            return fl;
    return NULL;
}

/* Call w (unlinked) and free it. */
static void waiter_call(struct waiter *w, int status, const struct imgcache_image_info *info,
                        const struct agent_error *err)
{
    if (w->cb)
        w->cb(status, status == 0 ? info : NULL, status == 0 ? NULL : err, w->opaque);
    free(w);
}

/* Call and free every waiter of list (a list no callback can reach). */
void imgcache_call_waiters(struct list_node *list, int status, const struct imgcache_image_info *info,
                           const struct agent_error *err)
{
    struct waiter *w;

    while ((w = list_first_entry_or_null(list, struct waiter, link))) {
        list_del(&w->link);
        waiter_call(w, status, info, err);
    }
}

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
            imgcache_info_from_row(&r, &info);
            waiter_call(w, 0, &info, NULL);
        } else {
            agent_error_set(&err, ENOENT, "not_found", NULL,
                            "image %s was removed before it could be handed over", w->id);
            waiter_call(w, -ENOENT, NULL, &err);
        }
        imgcache_row_clear(&r);
    }
}

int imgcache_add_ready(struct imgcache *c, const char *id, imgcache_done_cb cb, void *opaque)
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

int imgcache_flight_add_waiter(struct flight *fl, imgcache_done_cb cb, void *opaque)
{
    struct waiter *w = calloc(1, sizeof(*w));

    if (!w)
        return -ENOMEM;
    w->cb = cb;
    w->opaque = opaque;
    list_add_tail(&fl->waiters, &w->link);
    return 0;
}

void imgcache_flight_unlink(struct flight *fl)
{
    struct imgcache *c = fl->c;

    list_del(&fl->link);
    list_del(&fl->qlink);
    if (fl->started)
        c->running--;
    c->reserved -= fl->reserved;
    fl->reserved = 0;
}

void imgcache_flight_destroy(struct flight *fl)
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
void imgcache_flight_end(struct flight *fl, int status, const struct imgcache_image_info *info,
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
    imgcache_flight_unlink(fl);
    imgcache_flight_destroy(fl);
    queue_run(c);
    imgcache_call_waiters(&w, status, info, err);
}

void imgcache_flight_fail(struct flight *fl, int status, const struct agent_error *err)
{
    struct imgcache *c = fl->c;
    struct imgcache_row r;

    if (fl->tmp_path)
        unlink(fl->tmp_path);
    if (imgcache_index_get(c->db, fl->id, &r) == 0) {
        r.state = IMGCACHE_FAILED;
        imgcache_row_set_error(&r, err->code, err->message);
        imgcache_index_update(c->db, &r);
        imgcache_row_clear(&r);
    }
    /* the instances waiting for it will not boot from it */
    imgcache_index_users_clear(c->db, fl->id);
    imgcache_flight_end(fl, status, NULL, err);
}

/* Another entry holds this content: hand our waiters and pins over to it and
 * drop our entry. Returns true if fl is gone. If that entry failed, it is
 * absorbed into ours instead (pins move to us), and fl goes on. */
static bool flight_merge(struct flight *fl, struct imgcache_row *other)
{
    struct imgcache *c = fl->c;
    struct flight *ofl;

    if (other->state == IMGCACHE_CACHED && imgcache_base_file_ok(other)) {
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
        imgcache_flight_unlink(fl);
        imgcache_flight_destroy(fl);
        queue_run(c);
        imgcache_info_from_row(other, &info);
        imgcache_call_waiters(&w, 0, &info, NULL);
        return true;
    }
    ofl = other->state == IMGCACHE_DOWNLOADING ? imgcache_flight_find(c, other->id) : NULL;
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
        imgcache_flight_unlink(fl);
        imgcache_flight_destroy(fl);
        queue_run(c);
        return true;
    }
    /* failed (or a stale entry): ours takes its place */
    imgcache_index_user_move(c->db, other->id, fl->id);
    imgcache_index_delete(c->db, other->id);
    return false;
}

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
        imgcache_flight_fail(fl, status, ferr);
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
        imgcache_flight_fail(fl, -EBADMSG, &err);
        return;
    }
    md5 = imgcache_fetch_hex(f, IMGCACHE_ALGO_MD5);
    if (fl->md5_expect[0] && (!md5 || strcmp(md5, fl->md5_expect) != 0)) {
        _cleanup_free_ char *shown = url_redact(fl->url);
        agent_error_set(&err, EBADMSG, "digest_mismatch", NULL,
                        "checksum mismatch for %s: Glance says md5:%s, got md5:%s",
                        shown ? shown : "?", fl->md5_expect, md5 ? md5 : "?");
        imgcache_flight_fail(fl, -EBADMSG, &err);
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
    imgcache_install_start(fl, &got);
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
    fl->tmp_path = imgcache_path_join(c->tmp_dir, name);
    if (!fl->tmp_path) {
        agent_error_set(&err, ENOMEM, "internal", NULL, "out of memory");
        imgcache_flight_fail(fl, -ENOMEM, &err);
        return;
    }
    unlink(fl->tmp_path);
    o.path = fl->tmp_path;
    r = imgcache_fetch_start(c->loop, c->http, &o, on_fetch_size, on_fetch_done, fl, &fl->fetch,
                             &err);
    if (r < 0) {
        free(fl->tmp_path); /* fetch removed it; do not unlink someone else's */
        fl->tmp_path = NULL;
        imgcache_flight_fail(fl, r, &err);
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
        imgcache_flight_fail(fl, status, gerr);
        return;
    }
    if (strcmp(m->status, "active") != 0) {
        agent_error_set(&err, EAGAIN, "image_not_active", "glance_id",
                        "Glance image %s is %s, not active", fl->glance_id, m->status);
        imgcache_flight_fail(fl, -EAGAIN, &err);
        return;
    }
    if (m->algo == IMGCACHE_ALGO_NONE && !m->md5_hex[0]) {
        agent_error_set(&err, EINVAL, "glance_error", "glance_id",
                        "Glance image %s has neither os_hash_value nor checksum: it cannot be "
                        "verified", fl->glance_id);
        imgcache_flight_fail(fl, -EINVAL, &err);
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
        imgcache_flight_fail(fl, -ENOMEM, &err);
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
        imgcache_flight_fail(fl, r, &err);
    }
}

/* A new flight for row r (state already "downloading"), with its first
 * waiter: from Glance (via_glance) or from r->url with expect. */
int imgcache_flight_new(struct imgcache *c, const struct imgcache_row *r, bool via_glance,
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
    if (imgcache_flight_add_waiter(fl, cb, opaque) < 0) {
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
