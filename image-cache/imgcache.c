/* imgcache.c: the cache object: acquisition (single-flight, in flight.c),
 * pins, overlays, startup consistency, start and stop. The install step is in
 * install.c, eviction in evict.c, the JSON answers in answers.c.
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
#include "image-cache/imgcache-private.h"

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

char *imgcache_path_join(const char *a, const char *b)
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

int imgcache_fsync_dir(const char *path)
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

void imgcache_info_from_row(const struct imgcache_row *r, struct imgcache_image_info *info)
{
    info->id = r->id;
    info->path = r->path;
    info->format = r->format;
    info->digest = r->digest;
    info->size = r->size > 0 ? (uint64_t)r->size : 0;
    info->virtual_size = r->virtual_size > 0 ? (uint64_t)r->virtual_size : 0;
}

/* Is a cached row's file there with the recorded size? */
bool imgcache_base_file_ok(const struct imgcache_row *r)
{
    struct stat st;

    return r->path && stat(r->path, &st) == 0 && S_ISREG(st.st_mode) &&
           (int64_t)st.st_size == r->size;
}

void imgcache_row_set_error(struct imgcache_row *r, const char *code, const char *message)
{
    strscpy(r->error_code, code ? code : "", sizeof(r->error_code));
    free(r->error_message);
    r->error_message = message ? strdup(message) : NULL;
}

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
        if (imgcache_base_file_ok(&r)) {
            rc = imgcache_add_ready(c, r.id, cb, opaque);
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
    if (found == 0 && r.state == IMGCACHE_DOWNLOADING && (fl = imgcache_flight_find(c, r.id))) {
        rc = imgcache_flight_add_waiter(fl, cb, opaque);
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
        imgcache_row_set_error(&r, NULL, NULL);
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
    rc = imgcache_flight_new(c, &r, via_glance, via_glance ? NULL : &d, cb, opaque);
    if (rc < 0) {
        r.state = IMGCACHE_FAILED;
        imgcache_row_set_error(&r, "internal", "out of memory");
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
    if (r.state != IMGCACHE_CACHED || !imgcache_base_file_ok(&r)) {
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
            imgcache_row_set_error(&row, "download_failed",
                          "interrupted: the agent stopped during the download");
            imgcache_index_update(c->db, &row);
        } else if (row.state == IMGCACHE_CACHED && !imgcache_base_file_ok(&row)) {
            row.state = IMGCACHE_FAILED;
            imgcache_row_set_error(&row, "internal",
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
                p = imgcache_path_join(c->images_dir, de->d_name);
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

void imgcache_maybe_free_cache(struct imgcache *c)
{
    if (c->freeing && c->pending == 0)
        cache_release_memory(c);
}

static void on_cache_handle_closed(uv_handle_t *h)
{
    struct imgcache *c = h->data;

    c->pending--;
    imgcache_maybe_free_cache(c);
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
    c->images_dir = imgcache_path_join(real, "images");
    c->tmp_dir = imgcache_path_join(real, "tmp");
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
    uv_timer_start(&c->evict_timer, imgcache_on_evict_timer, (uint64_t)c->evict_interval_s * 1000,
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
        imgcache_flight_unlink(fl);
        imgcache_flight_destroy(fl);
    }
    list_splice_tail(&cancelled, &c->ready);
    imgcache_call_waiters(&cancelled, -ECANCELED, NULL, &err);
    httpuv_free(c->http);
    c->http = NULL;
    c->pending += 2;
    uv_close((uv_handle_t *)&c->defer_timer, on_cache_handle_closed);
    uv_close((uv_handle_t *)&c->evict_timer, on_cache_handle_closed);
}
