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
 * Messages show the URL without its credentials (url_redact()). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* O_DIRECT, asprintf */
#endif
#include "image-cache/imgcache-internal.h"
#include "common/list.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/stat.h>

#define CHUNK_SIZE (2u << 20)  /* bytes per chunk */
#define MAX_CHUNKS 8           /* chunks in flight before the transfer pauses */
#define MAX_WRITES 2           /* concurrent writes per fetch */
#define DIRECT_ALIGN 4096      /* O_DIRECT buffer/offset/length alignment */
#define RETRY_DELAY_CAP_MS 30000
#define RECV_BUFFER (512 * 1024)

struct chunk {
    struct imgcache_fetch *f;
    struct list_node hlink; /* in the hash queue or the free list */
    struct list_node wlink; /* in the write queue */
    unsigned char *buf;  /* CHUNK_SIZE bytes, DIRECT_ALIGN-aligned */
    size_t len;          /* bytes held */
    uint64_t off;        /* file offset of buf[0] */
    int refs;            /* hash and write still to happen */
    int werr;            /* result of the write (0 or -errno) */
    uv_work_t hash_req;
    uv_work_t write_req;
};

enum phase {
    PH_RUNNING,  /* a transfer runs, or waits for its retry */
    PH_FINISHING, /* all bytes received; draining, then fsync */
    PH_FAILING,  /* failed; draining, then remove and report */
    PH_DONE,     /* reported */
};

struct imgcache_fetch {
    uv_loop_t *loop;           /* the agent's loop (borrowed) */
    struct httpuv *http;       /* transfers driver (borrowed) */
    CURL *easy;                /* our transfer (owned) */
    struct curl_slist *headers;
    char errbuf[CURL_ERROR_SIZE];
    char *path;                /* the file being written */
    int fd;                    /* buffered writes (tail, unaligned) */
    int fd_direct;             /* O_DIRECT writes, or -1 if refused */
    bool file_kept;            /* success: the file stays */
    struct imgcache_fetch_opts o; /* copy; o.url and o.path point into ours */
    char *shown_url;           /* o.url without credentials, for messages */
    EVP_MD_CTX *md;            /* primary digest (used by one thread at a time) */
    EVP_MD_CTX *md5;           /* Glance checksum, or NULL */
    char hex[129];             /* results */
    char md5_hex[33];
    imgcache_fetch_size_cb size_cb;
    imgcache_fetch_done_cb done_cb;
    void *opaque;
    uv_timer_t timer;          /* stall watchdog during a transfer, else retry backoff */
    uint64_t last_byte_ns;     /* when the last body byte arrived (or the attempt began) */

    uint64_t received;         /* bytes accepted = offset of the next byte */
    uint64_t total;            /* expected total, 0 unknown */
    uint64_t granted;          /* unknown total: bytes room_cb made room for */
    bool refused;              /* this attempt met a forbidden address */
    char refused_why[160];     /* ... which, and why */
    bool size_told;            /* size_cb called */
    bool attempt_checked;      /* first body byte of this attempt seen */
    uint64_t attempt_start;    /* received when this attempt began */
    struct chunk *cur;         /* being filled */
    struct list_node hash_q;   /* chunk.hlink: full chunks to hash, in order */
    bool hashing;
    struct list_node write_q;  /* chunk.wlink: full chunks to write */
    int writing;
    struct list_node free_chunks; /* chunk.hlink: buffers to reuse */
    int nchunks;               /* chunks not on the free list */
    bool paused;               /* write callback returned PAUSE */
    bool in_transfer;          /* easy is in httpuv */
    bool retry_pending;        /* timer armed or waiting for a drain */
    bool restart_from_zero;    /* next attempt cannot resume */
    unsigned attempts;         /* HTTP requests made */
    int retries_used;
    enum phase phase;
    int status;                /* first failure */
    struct agent_error err;
    bool in_write;             /* inside on_write: no curl calls allowed */
    bool final_queued;         /* fsync work in flight */
    bool final_done;           /* ... and ended with final_status */
    uv_work_t final_req;
    int final_status;
    int refs;                  /* owner + open timer + work in flight */
    bool owner_freed;

    uint64_t sample_ns;        /* rate sampling */
    uint64_t sample_bytes;
    uint64_t rate_bps;
};

static void fetch_progress(struct imgcache_fetch *f);

static struct chunk *chunk_get(struct imgcache_fetch *f, uint64_t off)
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

static bool drained(const struct imgcache_fetch *f)
{
    return list_empty(&f->hash_q) && !f->hashing && list_empty(&f->write_q) && f->writing == 0;
}

static void fail(struct imgcache_fetch *f, int errnum, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Record the first failure and stop the transfer; the report waits for the
 * thread-pool work in flight (fetch_progress). */
static void fail(struct imgcache_fetch *f, int errnum, const char *code, const char *fmt, ...)
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

/* ---- thread-pool work ---- */

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

static void kick(struct imgcache_fetch *f);

static void after_hash(uv_work_t *req, int status)
{
    struct chunk *c = req->data;
    struct imgcache_fetch *f = c->f;

    (void)status; /* hash work is never cancelled */
    f->hashing = false;
    f->refs--;
    if (--c->refs == 0)
        chunk_put(f, c);
    kick(f);
    fetch_progress(f);
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
            fail(f, ENOSPC, "insufficient_resources",
                 "no space left on the device holding the image cache "
                 "(%llu of %llu bytes received)",
                 (unsigned long long)f->received, (unsigned long long)f->total);
        else
            fail(f, -c->werr, "internal", "writing %s: %s", f->path, strerror(-c->werr));
    }
    if (--c->refs == 0)
        chunk_put(f, c);
    kick(f);
    fetch_progress(f);
}

static void after_final(uv_work_t *req, int status)
{
    struct imgcache_fetch *f = req->data;

    (void)status;
    f->refs--;
    f->final_queued = false;
    f->final_done = true;
    fetch_progress(f);
}

/* Queue the chunk being filled (full, or the tail at the end). */
static void queue_cur(struct imgcache_fetch *f)
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
    kick(f);
}

static void kick(struct imgcache_fetch *f)
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

/* ---- the transfer ---- */

bool imgcache_http_status_transient(long status)
{
    return status == 408 || status == 425 || status == 429 ||
           (status >= 500 && status <= 599 && status != 501 && status != 505);
}

bool imgcache_curl_transient(CURLcode rc)
{
    switch (rc) {
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_CONNECT:
    case CURLE_PARTIAL_FILE:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_GOT_NOTHING:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
    case CURLE_SSL_CONNECT_ERROR:
        return true;
    default:
        return false;
    }
}

static int attempt_start(struct imgcache_fetch *f);

/* First body bytes of an attempt: check the status and learn the size. */
static int attempt_check(struct imgcache_fetch *f)
{
    long code = 0;
    curl_off_t cl = -1;
    uint64_t total;

    f->attempt_checked = true;
    curl_easy_getinfo(f->easy, CURLINFO_RESPONSE_CODE, &code);
    if (code != 200 && code != 206) {
        fail(f, EPROTO, "download_failed", "%s answered HTTP %ld, not the image", f->shown_url, code);
        return -1;
    }
    curl_easy_getinfo(f->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl);
    if (cl < 0 && !f->o.expected_size)
        return 0; /* unknown length: room_cb bounds it as it grows */
    /* no Content-Length but a size known beforehand (Glance): that one */
    total = cl < 0 ? f->o.expected_size : f->attempt_start + (uint64_t)cl;
    if (f->o.expected_size && total != f->o.expected_size) {
        fail(f, EPROTO, "download_failed",
             "%s is %llu bytes long, %llu were expected", f->shown_url,
             (unsigned long long)total, (unsigned long long)f->o.expected_size);
        return -1;
    }
    if (f->o.max_size && total > f->o.max_size) {
        fail(f, EFBIG, "image_too_large", "%s is %llu bytes long, more than the %llu allowed",
             f->shown_url, (unsigned long long)total, (unsigned long long)f->o.max_size);
        return -1;
    }
    f->total = total;
    if (!f->size_told && f->size_cb) {
        struct agent_error e = {0};
        int r;

        f->size_told = true;
        r = f->size_cb(total, &e, f->opaque);
        if (r < 0) {
            fail(f, -r, e.code, "%s", e.message);
            return -1;
        }
    }
    f->size_told = true;
    return 0;
}

static size_t write_bytes(struct imgcache_fetch *f, const char *ptr, size_t n);

static size_t on_write(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    struct imgcache_fetch *f = userdata;
    size_t r;

    f->in_write = true;
    r = write_bytes(f, ptr, size * nmemb);
    f->in_write = false;
    return r;
}

static size_t write_bytes(struct imgcache_fetch *f, const char *ptr, size_t n)
{
    size_t done = 0;
    uint64_t now;

    if (f->phase != PH_RUNNING)
        return 0;
    if (!f->attempt_checked && attempt_check(f) < 0)
        return 0;
    if (f->o.max_size && f->received + n > f->o.max_size) {
        fail(f, EFBIG, "image_too_large", "%s sends more than the %llu bytes allowed",
             f->shown_url, (unsigned long long)f->o.max_size);
        return 0;
    }
    if (f->total && f->received + n > f->total) {
        fail(f, EPROTO, "download_failed", "%s sends more bytes than announced", f->shown_url);
        return 0;
    }
    if (!f->total && f->o.room_cb && f->received + n > f->granted) {
        struct agent_error e = {0};
        uint64_t granted = 0;
        int r = f->o.room_cb(f->received + n, &granted, &e, f->opaque);

        if (r < 0 || granted < f->received + n) {
            if (r >= 0)
                agent_error_set(&e, ENOSPC, "insufficient_resources", NULL,
                                "no room for %s", f->shown_url);
            fail(f, r < 0 ? -r : ENOSPC, e.code, "%s", e.message);
            return 0;
        }
        f->granted = granted;
    }
    if (f->nchunks >= MAX_CHUNKS && (!f->cur || f->cur->len + n > CHUNK_SIZE)) {
        f->paused = true;
        return CURL_WRITEFUNC_PAUSE;
    }
    while (done < n) {
        size_t room, take;

        if (!f->cur) {
            f->cur = chunk_get(f, f->received);
            if (!f->cur) {
                fail(f, ENOMEM, "internal", "out of memory");
                return 0;
            }
        }
        room = CHUNK_SIZE - f->cur->len;
        take = n - done < room ? n - done : room;
        memcpy(f->cur->buf + f->cur->len, ptr + done, take);
        f->cur->len += take;
        f->received += take;
        done += take;
        if (f->cur->len == CHUNK_SIZE)
            queue_cur(f);
    }
    now = now_mono_ns();
    f->last_byte_ns = now;
    if (now - f->sample_ns >= 1000000000ull) {
        f->rate_bps = (f->received - f->sample_bytes) * 1000000000ull / (now - f->sample_ns);
        f->sample_ns = now;
        f->sample_bytes = f->received;
    }
    return n;
}

/* Back to zero: only when nothing is in flight (the hash is sequential). */
static int restart_reset(struct imgcache_fetch *f)
{
    if (f->cur)
        f->cur->len = 0, f->cur->off = 0;
    f->received = 0;
    if (EVP_DigestInit_ex(f->md, imgcache_algo_md(f->o.algo), NULL) != 1)
        return -EIO;
    if (f->md5 && EVP_DigestInit_ex(f->md5, EVP_md5(), NULL) != 1)
        return -EIO;
    if (ftruncate(f->fd, 0) < 0)
        return -errno;
    f->restart_from_zero = false;
    return 0;
}

static void retry_now(struct imgcache_fetch *f)
{
    int r;

    f->retry_pending = false;
    if (f->restart_from_zero && (r = restart_reset(f)) < 0) {
        fail(f, -r, "internal", "restarting the download of %s: %s", f->shown_url, strerror(-r));
        fetch_progress(f);
        return;
    }
    r = attempt_start(f);
    if (r < 0) {
        fail(f, -r, "internal", "restarting the download of %s: %s", f->shown_url, strerror(-r));
        fetch_progress(f);
    }
}

static void on_retry_timer(uv_timer_t *t)
{
    struct imgcache_fetch *f = t->data;

    if (f->phase != PH_RUNNING)
        return;
    if (f->restart_from_zero && !drained(f))
        return; /* fetch_progress() retries once the work in flight ends */
    retry_now(f);
}

static void retry_or_fail(struct imgcache_fetch *f, CURLcode rc, long code);

static void on_done(CURL *easy, CURLcode rc, void *opaque)
{
    struct imgcache_fetch *f = opaque;
    long code = 0;

    (void)easy;
    f->in_transfer = false;
    uv_timer_stop(&f->timer); /* the watchdog */
    if (f->phase != PH_RUNNING) {
        fetch_progress(f);
        return;
    }
    curl_easy_getinfo(f->easy, CURLINFO_RESPONSE_CODE, &code);
    if (rc == CURLE_OK && code != 200 && code != 206) {
        /* no body came to be checked (an empty answer, a redirect not followed) */
        fail(f, EPROTO, "download_failed", "%s answered HTTP %ld, not the image", f->shown_url, code);
        fetch_progress(f);
        return;
    }
    if (rc == CURLE_OK) {
        if (f->total && f->received != f->total) {
            rc = CURLE_PARTIAL_FILE;
        } else {
            f->phase = PH_FINISHING;
            queue_cur(f);
            fetch_progress(f);
            return;
        }
    }
    retry_or_fail(f, rc, code);
}

/* Every 250 ms while a transfer runs: no byte for stall_timeout_s (time
 * paused by us for the disk does not count) ends the attempt as a timeout.
 * libcurl's LOW_SPEED check stays as a backstop, but it averages over a
 * 5 s window and so fires seconds late. */
static void on_watchdog(uv_timer_t *t)
{
    struct imgcache_fetch *f = t->data;
    uint64_t now = now_mono_ns();

    if (!f->in_transfer || f->phase != PH_RUNNING) {
        uv_timer_stop(t);
        return;
    }
    if (f->paused) {
        f->last_byte_ns = now;
        return;
    }
    if (now - f->last_byte_ns < (uint64_t)f->o.stall_timeout_s * 1000000000ull)
        return;
    httpuv_cancel(f->http, f->easy);
    f->in_transfer = false;
    uv_timer_stop(t);
    snprintf(f->errbuf, sizeof(f->errbuf), "no data received for %d s", f->o.stall_timeout_s);
    retry_or_fail(f, CURLE_OPERATION_TIMEDOUT, 0);
}

static void retry_or_fail(struct imgcache_fetch *f, CURLcode rc, long code)
{
    bool transient;

    if (f->refused && (rc == CURLE_COULDNT_CONNECT || rc == CURLE_ABORTED_BY_CALLBACK)) {
        _cleanup_free_ char *where = NULL;
        char *eff = NULL;

        curl_easy_getinfo(f->easy, CURLINFO_EFFECTIVE_URL, &eff);
        where = eff && strcmp(eff, f->o.url) != 0 ? url_redact(eff) : NULL;
        fail(f, EACCES, "source_forbidden",
             "%s: refused to connect: %s%s%s (image_cache.allowed_networks can allow it)",
             f->shown_url, f->refused_why, where ? "; redirected to " : "", where ? where : "");
        fetch_progress(f);
        return;
    }
    if (rc == CURLE_RANGE_ERROR || (rc == CURLE_HTTP_RETURNED_ERROR && code == 416)) {
        f->restart_from_zero = true;
        transient = true;
    } else if (rc == CURLE_HTTP_RETURNED_ERROR) {
        transient = imgcache_http_status_transient(code);
    } else {
        transient = imgcache_curl_transient(rc);
    }
    if (transient && f->retries_used < f->o.retries) {
        uint64_t delay = (uint64_t)f->o.retry_delay_ms << (f->retries_used < 16 ? f->retries_used : 16);

        if (delay > RETRY_DELAY_CAP_MS)
            delay = RETRY_DELAY_CAP_MS;
        f->retries_used++;
        f->retry_pending = true;
        uv_timer_start(&f->timer, on_retry_timer, delay, 0);
        return;
    }
    if (rc == CURLE_HTTP_RETURNED_ERROR && (code == 404 || code == 410))
        fail(f, ENOENT, "source_not_found", "%s answered HTTP %ld", f->shown_url, code);
    else if (rc == CURLE_HTTP_RETURNED_ERROR)
        fail(f, EIO, "download_failed", "%s answered HTTP %ld%s", f->shown_url, code,
             transient ? " (retries exhausted)" : "");
    else if (rc == CURLE_UNSUPPORTED_PROTOCOL)
        fail(f, EPERM, "download_failed", "%s: redirected to a forbidden scheme (only http "
             "and https): %s", f->shown_url, f->errbuf[0] ? f->errbuf : curl_easy_strerror(rc));
    else
        fail(f, EIO, "download_failed", "%s: %s%s", f->shown_url,
             f->errbuf[0] ? f->errbuf : curl_easy_strerror(rc),
             transient ? " (retries exhausted)" : "");
    fetch_progress(f);
}

static int attempt_start(struct imgcache_fetch *f)
{
    int r;

    f->errbuf[0] = '\0';
    f->refused = false;
    f->attempt_checked = false;
    f->attempt_start = f->received;
    curl_easy_setopt(f->easy, CURLOPT_RESUME_FROM_LARGE, (curl_off_t)f->received);
    r = httpuv_add(f->http, f->easy, on_done, f);
    if (r < 0)
        return r;
    f->in_transfer = true;
    f->attempts++;
    f->last_byte_ns = now_mono_ns();
    uv_timer_start(&f->timer, on_watchdog, 250, 250);
    return 0;
}

/* Before connecting: a forbidden address gets no packet. libcurl then tries
 * the host's other addresses, if any. */
static curl_socket_t on_open_socket(void *clientp, curlsocktype purpose,
                                    struct curl_sockaddr *a)
{
    struct imgcache_fetch *f = clientp;
    const void *ip = NULL;

    (void)purpose;
    if (a->family == AF_INET && a->addrlen >= sizeof(struct sockaddr_in))
        ip = &((const struct sockaddr_in *)&a->addr)->sin_addr;
    else if (a->family == AF_INET6 && a->addrlen >= sizeof(struct sockaddr_in6))
        ip = &((const struct sockaddr_in6 *)&a->addr)->sin6_addr;
    if (!ip || !imgcache_addr_allowed(f->o.allowed, f->o.n_allowed, a->family, ip,
                                      f->refused_why, sizeof(f->refused_why))) {
        if (!ip)
            snprintf(f->refused_why, sizeof(f->refused_why), "address family %d is not IP",
                     a->family);
        f->refused = true;
        return CURL_SOCKET_BAD;
    }
    return socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
}

/* Before each request, on a new or reused connection: the peer it reached. */
static int on_prereq(void *clientp, char *peer_ip, char *local_ip, int peer_port, int local_port)
{
    struct imgcache_fetch *f = clientp;

    (void)local_ip;
    (void)peer_port;
    (void)local_port;
    if (imgcache_addr_text_allowed(f->o.allowed, f->o.n_allowed, peer_ip, f->refused_why,
                                   sizeof(f->refused_why)))
        return CURL_PREREQFUNC_OK;
    f->refused = true;
    return CURL_PREREQFUNC_ABORT;
}

/* The handle (common/httpuv.c's shared setup), then the allowed_networks
 * checks (before connecting and once connected). 0, -ENOMEM or -EINVAL. */
static int setup_easy(struct imgcache_fetch *f)
{
    const struct httpuv_easy_opts eo = {
        .url = f->o.url,
        .user_agent = "compute-agent-imgcache/1",
        .connect_timeout_ms = (long)f->o.stall_timeout_s * 1000,
        .low_speed_time_s = f->o.stall_timeout_s,
        .max_redirects = f->o.max_redirects,
        .fail_on_error = true,
        .tcp_keepalive = true,
        .buffer_size = RECV_BUFFER,
        .ca_bundle = f->o.ca_bundle,
        .headers = f->headers,
        .on_body = on_write,
        .body_data = f,
        .errbuf = f->errbuf,
    };
    CURLcode rc = CURLE_OK;
    int r;

    r = httpuv_easy_new(&eo, &f->easy);
    if (r < 0)
        return r;
    if (f->o.check_peer) {
        rc = curl_easy_setopt(f->easy, CURLOPT_OPENSOCKETFUNCTION, on_open_socket);
        if (rc == CURLE_OK)
            rc = curl_easy_setopt(f->easy, CURLOPT_OPENSOCKETDATA, f);
        if (rc == CURLE_OK)
            rc = curl_easy_setopt(f->easy, CURLOPT_PREREQFUNCTION, on_prereq);
        if (rc == CURLE_OK)
            rc = curl_easy_setopt(f->easy, CURLOPT_PREREQDATA, f);
    }
    return rc == CURLE_OK ? 0 : -EINVAL;
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

/* Move on once the work in flight allows: finish, fail, retry, or free. */
static void fetch_progress(struct imgcache_fetch *f)
{
    if (f->owner_freed) {
        if (f->refs == 0)
            destroy(f);
        return;
    }
    if (!drained(f) || f->final_queued)
        return;
    switch (f->phase) {
    case PH_RUNNING:
        if (f->retry_pending && f->restart_from_zero && !uv_is_active((uv_handle_t *)&f->timer))
            retry_now(f);
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
            fail(f, -f->final_status, "internal", "finishing %s: %s", f->path,
                 strerror(-f->final_status));
            fetch_progress(f);
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
    r = setup_easy(f);
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
    r = attempt_start(f);
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
    kick(f); /* drops queued chunks */
    f->refs--;
    uv_close((uv_handle_t *)&f->timer, on_timer_closed);
}
