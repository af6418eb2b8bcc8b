/* fetch.c: one download into a file, with the digest computed on the way.
 *
 * The loop thread only moves bytes: curl's write callback (called from
 * httpuv on the loop) copies them into 2 MiB chunks. Each full chunk goes
 * to the libuv thread pool twice, at once: to be hashed (one chunk at a
 * time, in order, since a digest is sequential) and to be written at its
 * offset (two at a time). Chunks are aligned to their file offset, so full
 * ones are written with O_DIRECT: a multi-GiB image then neither evicts the
 * guests' page cache nor pays for it, and the final fsync has little left to
 * do. When eight chunks are in flight the transfer pauses until the disk or
 * the hash catches up.
 *
 * A transfer cut or failing transiently is retried after a backoff
 * (doubling from retry_delay_ms, capped at 30 s), resuming with Range from
 * the bytes already received; a server that cannot resume makes the next
 * try start from zero (hash reset, file truncated). A transfer that moves
 * no byte for stall_timeout_s is ended by a watchdog (CURLOPT_LOW_SPEED_*
 * as a backstop) and retried like any timeout.
 * Any failure removes the file.
 *
 * Every connection is judged by source.c before it is used (check_peer):
 * libcurl's open-socket callback refuses a forbidden address before any
 * packet is sent, and its pre-request callback checks the peer of every
 * request, redirects and reused connections included. A body of unknown
 * length asks room_cb for room as it grows, so it cannot fill the disk.
 * Messages show the URL without its credentials (url_redact()).
 *
 * This file: the object, failure, finishing (fsync), the public calls; the
 * chunk pipeline is in fetch-chunks.c, the transfer in fetch-transfer.c. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* O_DIRECT, asprintf */
#endif
#include "image-cache/fetch-private.h"

#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/stat.h>

/* Record the first failure and stop the transfer; the report waits for the
 * thread-pool work in flight (imgcache_fetch_move_on()). */
void imgcache_fetch_fail(struct imgcache_fetch *f, int errnum, const char *code, const char *fmt, ...)
{
    va_list ap;

    if (f->phase == PH_FAILING || f->phase == PH_DONE)
        return;
    f->phase = PH_FAILING;
    f->status = -errnum;
    strscpy(f->err.code, code, sizeof(f->err.code));
    f->err.field[0] = '\0';
    va_start(ap, fmt);
    vsnprintf(f->err.message, sizeof(f->err.message), fmt, ap);
    va_end(ap);
    /* Inside curl's write callback the transfer cannot be removed: on_write
     * returns 0 instead, and on_done reports. */
    if (f->in_transfer && !f->in_write) {
        httpuv_cancel(f->http, f->easy);
        f->in_transfer = false;
    }
    uv_timer_stop(&f->timer);
    f->retry_pending = false;
}

static void destroy(struct imgcache_fetch *f)
{
    while (!list_empty(&f->free_chunks)) {
        struct chunk *c = list_entry(f->free_chunks.next, struct chunk, hlink);
        list_del(&c->hlink);
        free(c->buf);
        free(c);
    }
    if (f->cur) {
        free(f->cur->buf);
        free(f->cur);
    }
    if (f->fd >= 0)
        close(f->fd);
    if (f->fd_direct >= 0)
        close(f->fd_direct);
    if (!f->file_kept && f->path)
        unlink(f->path);
    if (f->easy)
        curl_easy_cleanup(f->easy);
    curl_slist_free_all(f->headers);
    EVP_MD_CTX_free(f->md);
    EVP_MD_CTX_free(f->md5);
    free(f->path);
    free((char *)f->o.url);
    free(f->shown_url);
    free(f);
}

static void close_files(struct imgcache_fetch *f)
{
    if (f->fd >= 0)
        close(f->fd);
    if (f->fd_direct >= 0)
        close(f->fd_direct);
    f->fd = f->fd_direct = -1;
}

static void do_final(uv_work_t *req)
{
    struct imgcache_fetch *f = req->data;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned len = 0;

    f->final_status = 0;
    if (EVP_DigestFinal_ex(f->md, md, &len) != 1) {
        f->final_status = -EIO;
        return;
    }
    imgcache_hex(md, len, f->hex);
    if (f->md5) {
        if (EVP_DigestFinal_ex(f->md5, md, &len) != 1) {
            f->final_status = -EIO;
            return;
        }
        imgcache_hex(md, len, f->md5_hex);
    }
    if (fsync(f->fd) < 0)
        f->final_status = -errno;
}

static void after_final(uv_work_t *req, int status)
{
    struct imgcache_fetch *f = req->data;

    (void)status;
    f->refs--;
    f->final_queued = false;
    f->final_done = true;
    imgcache_fetch_move_on(f);
}

/* Move on once the work in flight allows: finish, fail, retry, or free. */
void imgcache_fetch_move_on(struct imgcache_fetch *f)
{
    if (f->owner_freed) {
        if (f->refs == 0)
            destroy(f);
        return;
    }
    if (!imgcache_fetch_drained(f) || f->final_queued)
        return;
    switch (f->phase) {
    case PH_RUNNING:
        if (f->retry_pending && f->restart_from_zero && !uv_is_active((uv_handle_t *)&f->timer))
            imgcache_fetch_retry_now(f);
        break;
    case PH_FINISHING:
        if (!f->final_done) {
            f->final_req.data = f;
            f->final_queued = true;
            f->refs++;
            uv_queue_work(f->loop, &f->final_req, do_final, after_final);
            return;
        }
        if (f->final_status < 0) {
            f->phase = PH_RUNNING; /* let fail() record it */
            imgcache_fetch_fail(f, -f->final_status, "internal", "finishing %s: %s", f->path,
                 strerror(-f->final_status));
            imgcache_fetch_move_on(f);
            return;
        }
        close_files(f);
        f->file_kept = true;
        f->phase = PH_DONE;
        f->done_cb(f, 0, NULL, f->opaque);
        break;
    case PH_FAILING:
        close_files(f);
        unlink(f->path);
        f->phase = PH_DONE;
        f->done_cb(f, f->status, &f->err, f->opaque);
        break;
    case PH_DONE:
        break;
    }
}

int imgcache_fetch_start(uv_loop_t *loop, struct httpuv *http,
                         const struct imgcache_fetch_opts *o,
                         imgcache_fetch_size_cb size_cb, imgcache_fetch_done_cb done_cb,
                         void *opaque, struct imgcache_fetch **ret, struct agent_error *err)
{
    struct imgcache_fetch *f;
    const EVP_MD *md = imgcache_algo_md(o->algo);
    int r;

    if (!md || o->algo == IMGCACHE_ALGO_MD5)
        return agent_error_set(err, EINVAL, "internal", NULL, "no digest to compute");
    f = calloc(1, sizeof(*f));
    if (!f)
        return agent_error_set(err, ENOMEM, "internal", NULL, "out of memory");
    f->fd = f->fd_direct = -1;
    list_init(&f->hash_q);
    list_init(&f->write_q);
    list_init(&f->free_chunks);
    f->loop = loop;
    f->http = http;
    f->o = *o;
    f->o.url = strdup(o->url);
    f->shown_url = url_redact(o->url);
    f->path = strdup(o->path);
    f->o.path = f->path;
    f->size_cb = size_cb;
    f->done_cb = done_cb;
    f->opaque = opaque;
    f->total = o->expected_size;
    f->refs = 1;
    f->sample_ns = now_mono_ns();
    f->md = EVP_MD_CTX_new();
    if (o->md5_too)
        f->md5 = EVP_MD_CTX_new();
    if (!f->o.url || !f->shown_url || !f->path || !f->md || (o->md5_too && !f->md5)) {
        r = agent_error_set(err, ENOMEM, "internal", NULL, "out of memory");
        goto fail_free;
    }
    if (EVP_DigestInit_ex(f->md, md, NULL) != 1 ||
        (f->md5 && EVP_DigestInit_ex(f->md5, EVP_md5(), NULL) != 1)) {
        r = agent_error_set(err, EIO, "internal", NULL, "cannot set up the %s digest",
                            imgcache_algo_name(o->algo));
        goto fail_free;
    }
    if (o->auth_token) {
        _cleanup_free_ char *h = NULL;
        if (asprintf(&h, "X-Auth-Token: %s", o->auth_token) < 0) {
            h = NULL;
            r = agent_error_set(err, ENOMEM, "internal", NULL, "out of memory");
            goto fail_free;
        }
        f->headers = curl_slist_append(NULL, h);
        if (!f->headers) {
            r = agent_error_set(err, ENOMEM, "internal", NULL, "out of memory");
            goto fail_free;
        }
    }
    r = imgcache_fetch_setup_easy(f);
    if (r < 0) {
        if (r == -ENOMEM)
            agent_error_set(err, ENOMEM, "internal", NULL, "out of memory");
        else
            agent_error_set(err, EINVAL, "internal", NULL, "libcurl refused an option");
        goto fail_free;
    }
    f->fd = open(f->path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (f->fd < 0) {
        r = agent_error_set(err, errno, "internal", NULL, "creating %s: %s", f->path,
                            strerror(errno));
        free(f->path); /* not ours to unlink */
        f->path = NULL;
        goto fail_free;
    }
    f->fd_direct = open(f->path, O_WRONLY | O_DIRECT | O_CLOEXEC);
    uv_timer_init(loop, &f->timer);
    f->timer.data = f;
    f->refs++;
    r = imgcache_fetch_attempt_start(f);
    if (r < 0) {
        agent_error_set(err, -r, "internal", NULL, "starting the transfer: %s", strerror(-r));
        f->phase = PH_DONE;
        imgcache_fetch_free(f);
        return r;
    }
    *ret = f;
    return 0;

fail_free:
    destroy(f);
    return r;
}

void imgcache_fetch_progress(const struct imgcache_fetch *f, struct imgcache_progress *p)
{
    uint64_t now = now_mono_ns();

    p->bytes_done = f->received;
    p->bytes_total = f->total;
    /* a rate not refreshed for 3 s is stale: the transfer is stuck or paused */
    p->rate_bps = now - f->sample_ns > 3000000000ull ? 0 : f->rate_bps;
}

const char *imgcache_fetch_hex(const struct imgcache_fetch *f, enum imgcache_algo algo)
{
    if (algo == IMGCACHE_ALGO_MD5)
        return f->md5 ? f->md5_hex : NULL;
    return algo == f->o.algo ? f->hex : NULL;
}

unsigned imgcache_fetch_attempts(const struct imgcache_fetch *f)
{
    return f->attempts;
}

static void on_timer_closed(uv_handle_t *h)
{
    struct imgcache_fetch *f = h->data;

    f->refs--;
    if (f->refs == 0)
        destroy(f);
}

void imgcache_fetch_free(struct imgcache_fetch *f)
{
    if (!f)
        return;
    f->owner_freed = true;
    if (f->in_transfer) {
        httpuv_cancel(f->http, f->easy);
        f->in_transfer = false;
    }
    imgcache_fetch_kick(f); /* drops queued chunks */
    f->refs--;
    uv_close((uv_handle_t *)&f->timer, on_timer_closed);
}
