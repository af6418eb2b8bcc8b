/* fetch-transfer.c: the HTTP side of a download: attempts resuming with
 * Range, transient failures retried with backoff, the stall watchdog, and the
 * allowed_networks checks on every connection (source.c judges). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* O_DIRECT, asprintf */
#endif
#include "image-cache/fetch-private.h"

#include <netinet/in.h>
#include <stdio.h>

static size_t write_bytes(struct imgcache_fetch *f, const char *ptr, size_t n);
static void retry_or_fail(struct imgcache_fetch *f, CURLcode rc, long code);

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

/* First body bytes of an attempt: check the status and learn the size. */
static int attempt_check(struct imgcache_fetch *f)
{
    long code = 0;
    curl_off_t cl = -1;
    uint64_t total;

    f->attempt_checked = true;
    curl_easy_getinfo(f->easy, CURLINFO_RESPONSE_CODE, &code);
    if (code != 200 && code != 206) {
        imgcache_fetch_fail(f, EPROTO, "download_failed", "%s answered HTTP %ld, not the image", f->shown_url, code);
        return -1;
    }
    curl_easy_getinfo(f->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl);
    if (cl < 0 && !f->o.expected_size)
        return 0; /* unknown length: room_cb bounds it as it grows */
    /* no Content-Length but a size known beforehand (Glance): that one */
    total = cl < 0 ? f->o.expected_size : f->attempt_start + (uint64_t)cl;
    if (f->o.expected_size && total != f->o.expected_size) {
        imgcache_fetch_fail(f, EPROTO, "download_failed",
             "%s is %llu bytes long, %llu were expected", f->shown_url,
             (unsigned long long)total, (unsigned long long)f->o.expected_size);
        return -1;
    }
    if (f->o.max_size && total > f->o.max_size) {
        imgcache_fetch_fail(f, EFBIG, "image_too_large", "%s is %llu bytes long, more than the %llu allowed",
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
            imgcache_fetch_fail(f, -r, e.code, "%s", e.message);
            return -1;
        }
    }
    f->size_told = true;
    return 0;
}

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
        imgcache_fetch_fail(f, EFBIG, "image_too_large", "%s sends more than the %llu bytes allowed",
             f->shown_url, (unsigned long long)f->o.max_size);
        return 0;
    }
    if (f->total && f->received + n > f->total) {
        imgcache_fetch_fail(f, EPROTO, "download_failed", "%s sends more bytes than announced", f->shown_url);
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
            imgcache_fetch_fail(f, r < 0 ? -r : ENOSPC, e.code, "%s", e.message);
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
            f->cur = imgcache_fetch_chunk_get(f, f->received);
            if (!f->cur) {
                imgcache_fetch_fail(f, ENOMEM, "internal", "out of memory");
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
            imgcache_fetch_queue_cur(f);
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

void imgcache_fetch_retry_now(struct imgcache_fetch *f)
{
    int r;

    f->retry_pending = false;
    if (f->restart_from_zero && (r = restart_reset(f)) < 0) {
        imgcache_fetch_fail(f, -r, "internal", "restarting the download of %s: %s", f->shown_url, strerror(-r));
        imgcache_fetch_move_on(f);
        return;
    }
    r = imgcache_fetch_attempt_start(f);
    if (r < 0) {
        imgcache_fetch_fail(f, -r, "internal", "restarting the download of %s: %s", f->shown_url, strerror(-r));
        imgcache_fetch_move_on(f);
    }
}

static void on_retry_timer(uv_timer_t *t)
{
    struct imgcache_fetch *f = t->data;

    if (f->phase != PH_RUNNING)
        return;
    if (f->restart_from_zero && !imgcache_fetch_drained(f))
        return; /* imgcache_fetch_move_on() retries once the work in flight ends */
    imgcache_fetch_retry_now(f);
}

static void on_done(CURL *easy, CURLcode rc, void *opaque)
{
    struct imgcache_fetch *f = opaque;
    long code = 0;

    (void)easy;
    f->in_transfer = false;
    uv_timer_stop(&f->timer); /* the watchdog */
    if (f->phase != PH_RUNNING) {
        imgcache_fetch_move_on(f);
        return;
    }
    curl_easy_getinfo(f->easy, CURLINFO_RESPONSE_CODE, &code);
    if (rc == CURLE_OK && code != 200 && code != 206) {
        /* no body came to be checked (an empty answer, a redirect not followed) */
        imgcache_fetch_fail(f, EPROTO, "download_failed", "%s answered HTTP %ld, not the image", f->shown_url, code);
        imgcache_fetch_move_on(f);
        return;
    }
    if (rc == CURLE_OK) {
        if (f->total && f->received != f->total) {
            rc = CURLE_PARTIAL_FILE;
        } else {
            f->phase = PH_FINISHING;
            imgcache_fetch_queue_cur(f);
            imgcache_fetch_move_on(f);
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
        imgcache_fetch_fail(f, EACCES, "source_forbidden",
             "%s: refused to connect: %s%s%s (image_cache.allowed_networks can allow it)",
             f->shown_url, f->refused_why, where ? "; redirected to " : "", where ? where : "");
        imgcache_fetch_move_on(f);
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
        imgcache_fetch_fail(f, ENOENT, "source_not_found", "%s answered HTTP %ld", f->shown_url, code);
    else if (rc == CURLE_HTTP_RETURNED_ERROR)
        imgcache_fetch_fail(f, EIO, "download_failed", "%s answered HTTP %ld%s", f->shown_url, code,
             transient ? " (retries exhausted)" : "");
    else if (rc == CURLE_UNSUPPORTED_PROTOCOL)
        imgcache_fetch_fail(f, EPERM, "download_failed", "%s: redirected to a forbidden scheme (only http "
             "and https): %s", f->shown_url, f->errbuf[0] ? f->errbuf : curl_easy_strerror(rc));
    else
        imgcache_fetch_fail(f, EIO, "download_failed", "%s: %s%s", f->shown_url,
             f->errbuf[0] ? f->errbuf : curl_easy_strerror(rc),
             transient ? " (retries exhausted)" : "");
    imgcache_fetch_move_on(f);
}

int imgcache_fetch_attempt_start(struct imgcache_fetch *f)
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
int imgcache_fetch_setup_easy(struct imgcache_fetch *f)
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
