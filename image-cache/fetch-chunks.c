/* fetch-chunks.c: the bytes of a download in 2 MiB chunks aligned to their
 * file offset; each full chunk goes to the thread pool to be hashed (one at a
 * time, in order) and written (two at a time, O_DIRECT when aligned). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* O_DIRECT, asprintf */
#endif
#include "image-cache/fetch-private.h"

#include <fcntl.h>

struct chunk *imgcache_fetch_chunk_get(struct imgcache_fetch *f, uint64_t off)
{
    struct chunk *c = list_first_entry_or_null(&f->free_chunks, struct chunk, hlink);
    void *buf;

    if (c) {
        list_del(&c->hlink);
    } else {
        c = calloc(1, sizeof(*c));
        if (!c)
            return NULL;
        if (posix_memalign(&buf, DIRECT_ALIGN, CHUNK_SIZE) != 0) {
            free(c);
            return NULL;
        }
        c->buf = buf;
        c->f = f;
    }
    list_init(&c->hlink);
    list_init(&c->wlink);
    c->len = 0;
    c->off = off;
    c->refs = 0;
    c->werr = 0;
    f->nchunks++;
    return c;
}

static void chunk_put(struct imgcache_fetch *f, struct chunk *c)
{
    list_add_head(&f->free_chunks, &c->hlink);
    f->nchunks--;
}

bool imgcache_fetch_drained(const struct imgcache_fetch *f)
{
    return list_empty(&f->hash_q) && !f->hashing && list_empty(&f->write_q) && f->writing == 0;
}

static void do_hash(uv_work_t *req)
{
    struct chunk *c = req->data;
    struct imgcache_fetch *f = c->f;

    EVP_DigestUpdate(f->md, c->buf, c->len);
    if (f->md5)
        EVP_DigestUpdate(f->md5, c->buf, c->len);
}

static void do_write(uv_work_t *req)
{
    struct chunk *c = req->data;
    struct imgcache_fetch *f = c->f;
    bool aligned = c->len % DIRECT_ALIGN == 0 && c->off % DIRECT_ALIGN == 0;
    int fd = f->fd_direct >= 0 && aligned ? f->fd_direct : f->fd;
    size_t done = 0;

    while (done < c->len) {
        ssize_t n = pwrite(fd, c->buf + done, c->len - done, (off_t)(c->off + done));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EINVAL && fd == f->fd_direct) {
                /* the filesystem took the O_DIRECT open but not the write */
                fd = f->fd;
                continue;
            }
            c->werr = -errno;
            return;
        }
        done += (size_t)n;
    }
}

static void after_hash(uv_work_t *req, int status)
{
    struct chunk *c = req->data;
    struct imgcache_fetch *f = c->f;

    (void)status; /* hash work is never cancelled */
    f->hashing = false;
    f->refs--;
    if (--c->refs == 0)
        chunk_put(f, c);
    imgcache_fetch_kick(f);
    imgcache_fetch_move_on(f);
}

static void after_write(uv_work_t *req, int status)
{
    struct chunk *c = req->data;
    struct imgcache_fetch *f = c->f;

    (void)status;
    f->writing--;
    f->refs--;
    if (c->werr < 0 && !f->owner_freed) {
        if (c->werr == -ENOSPC || c->werr == -EDQUOT)
            imgcache_fetch_fail(f, ENOSPC, "insufficient_resources",
                 "no space left on the device holding the image cache "
                 "(%llu of %llu bytes received)",
                 (unsigned long long)f->received, (unsigned long long)f->total);
        else
            imgcache_fetch_fail(f, -c->werr, "internal", "writing %s: %s", f->path, strerror(-c->werr));
    }
    if (--c->refs == 0)
        chunk_put(f, c);
    imgcache_fetch_kick(f);
    imgcache_fetch_move_on(f);
}

/* Queue the chunk being filled (full, or the tail at the end). */
void imgcache_fetch_queue_cur(struct imgcache_fetch *f)
{
    struct chunk *c = f->cur;

    if (!c)
        return;
    f->cur = NULL;
    if (c->len == 0) {
        chunk_put(f, c);
        return;
    }
    c->refs = 2;
    list_add_tail(&f->hash_q, &c->hlink);
    list_add_tail(&f->write_q, &c->wlink);
    imgcache_fetch_kick(f);
}

void imgcache_fetch_kick(struct imgcache_fetch *f)
{
    if (f->owner_freed || f->phase == PH_FAILING) {
        /* drop what nobody will use; only work already running stays */
        while (!list_empty(&f->hash_q)) {
            struct chunk *c = list_entry(f->hash_q.next, struct chunk, hlink);
            list_del(&c->hlink);
            if (--c->refs == 0)
                chunk_put(f, c);
        }
        while (!list_empty(&f->write_q)) {
            struct chunk *c = list_entry(f->write_q.next, struct chunk, wlink);
            list_del(&c->wlink);
            if (--c->refs == 0)
                chunk_put(f, c);
        }
        return;
    }
    if (!f->hashing && !list_empty(&f->hash_q)) {
        struct chunk *c = list_entry(f->hash_q.next, struct chunk, hlink);
        list_del(&c->hlink);
        f->hashing = true;
        f->refs++;
        c->hash_req.data = c;
        uv_queue_work(f->loop, &c->hash_req, do_hash, after_hash);
    }
    while (f->writing < MAX_WRITES && !list_empty(&f->write_q)) {
        struct chunk *c = list_entry(f->write_q.next, struct chunk, wlink);
        list_del(&c->wlink);
        f->writing++;
        f->refs++;
        c->write_req.data = c;
        uv_queue_work(f->loop, &c->write_req, do_write, after_write);
    }
    if (f->paused && f->in_transfer && !f->in_write && f->nchunks < MAX_CHUNKS) {
        f->paused = false;
        /* may call on_write right away, which may pause again */
        curl_easy_pause(f->easy, CURLPAUSE_CONT);
    }
}
