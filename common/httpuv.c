/* httpuv.c: see httpuv.h. One uv_poll per socket curl asks about, one
 * uv_timer for curl's timeout; completions are read after every action. */
#include "httpuv.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>

#include "common/list.h"

struct transfer {
    CURL *easy;            /* the caller's handle (borrowed) */
    httpuv_done_cb cb;     /* called once when the transfer ends */
    void *opaque;          /* the caller's argument for cb */
    struct list_node link; /* in httpuv.transfers */
};

struct httpuv {
    uv_loop_t *loop;  /* the loop everything runs on (borrowed) */
    CURLM *multi;     /* curl's multi handle (owned) */
    uv_timer_t timer; /* curl's requested timeout */
    unsigned active;  /* transfers added and not yet finished */
    struct list_node transfers; /* those transfers (transfer.link), for teardown */
};

static void transfer_unlink(struct httpuv *h, struct transfer *t)
{
    list_del(&t->link);
    h->active--;
}

struct sock_ctx {
    uv_poll_t poll;    /* watches one socket curl uses */
    curl_socket_t fd;  /* that socket */
    struct httpuv *h;  /* back pointer */
};

static void read_completions(struct httpuv *h)
{
    CURLMsg *msg;
    int pending;

    while ((msg = curl_multi_info_read(h->multi, &pending))) {
        struct transfer *t = NULL;
        CURL *easy;
        CURLcode result;

        if (msg->msg != CURLMSG_DONE)
            continue;
        easy = msg->easy_handle;
        result = msg->data.result;
        curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&t);
        curl_multi_remove_handle(h->multi, easy);
        curl_easy_setopt(easy, CURLOPT_PRIVATE, NULL);
        if (t) {
            transfer_unlink(h, t);
            httpuv_done_cb cb = t->cb;
            void *opaque = t->opaque;
            free(t);
            cb(easy, result, opaque);
        }
    }
}

static void on_poll(uv_poll_t *poll, int status, int events)
{
    struct sock_ctx *ctx = poll->data;
    struct httpuv *h = ctx->h;
    int flags = 0, running;

    if (status < 0)
        flags = CURL_CSELECT_ERR;
    if (events & UV_READABLE)
        flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE)
        flags |= CURL_CSELECT_OUT;
    curl_multi_socket_action(h->multi, ctx->fd, flags, &running);
    read_completions(h);
}

static void on_timer(uv_timer_t *timer)
{
    struct httpuv *h = timer->data;
    int running;

    curl_multi_socket_action(h->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    read_completions(h);
}

static int start_timeout(CURLM *multi, long timeout_ms, void *userp)
{
    struct httpuv *h = userp;

    (void)multi;
    if (timeout_ms < 0)
        uv_timer_stop(&h->timer);
    else
        /* 0 means "now": run from the loop, never re-entrantly */
        uv_timer_start(&h->timer, on_timer, (uint64_t)timeout_ms, 0);
    return 0;
}

static void on_sock_closed(uv_handle_t *handle)
{
    free(handle->data);
}

static int handle_socket(CURL *easy, curl_socket_t s, int action, void *userp,
                         void *socketp)
{
    struct httpuv *h = userp;
    struct sock_ctx *ctx = socketp;
    int events = 0;

    (void)easy;
    if (action == CURL_POLL_REMOVE) {
        if (ctx) {
            uv_poll_stop(&ctx->poll);
            curl_multi_assign(h->multi, s, NULL);
            uv_close((uv_handle_t *)&ctx->poll, on_sock_closed);
        }
        return 0;
    }
    if (!ctx) {
        ctx = calloc(1, sizeof(*ctx));
        if (!ctx)
            return -1;
        ctx->fd = s;
        ctx->h = h;
        if (uv_poll_init_socket(h->loop, &ctx->poll, s) < 0) {
            free(ctx);
            return -1;
        }
        ctx->poll.data = ctx;
        curl_multi_assign(h->multi, s, ctx);
    }
    if (action != CURL_POLL_OUT)
        events |= UV_READABLE;
    if (action != CURL_POLL_IN)
        events |= UV_WRITABLE;
    uv_poll_start(&ctx->poll, events, on_poll);
    return 0;
}

int httpuv_easy_new(const struct httpuv_easy_opts *o, CURL **ret)
{
    CURL *e = curl_easy_init();
    CURLcode rc = CURLE_OK;

    if (!e)
        return -ENOMEM;
#define SET(opt, val)                                                          \
    do {                                                                       \
        if (rc == CURLE_OK)                                                    \
            rc = curl_easy_setopt(e, opt, val);                                \
    } while (0)
    SET(CURLOPT_URL, o->url);
    SET(CURLOPT_PROTOCOLS_STR, "http,https");
    SET(CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    SET(CURLOPT_FOLLOWLOCATION, o->max_redirects >= 0 ? 1L : 0L);
    if (o->max_redirects >= 0)
        SET(CURLOPT_MAXREDIRS, (long)o->max_redirects);
    SET(CURLOPT_NOSIGNAL, 1L);
    SET(CURLOPT_USERAGENT, o->user_agent);
    if (o->fail_on_error)
        SET(CURLOPT_FAILONERROR, 1L);
    if (o->connect_timeout_ms > 0)
        SET(CURLOPT_CONNECTTIMEOUT_MS, o->connect_timeout_ms);
    if (o->timeout_ms > 0)
        SET(CURLOPT_TIMEOUT_MS, o->timeout_ms);
    if (o->low_speed_time_s > 0) {
        SET(CURLOPT_LOW_SPEED_LIMIT, 1L);
        SET(CURLOPT_LOW_SPEED_TIME, o->low_speed_time_s);
    }
    if (o->tcp_keepalive)
        SET(CURLOPT_TCP_KEEPALIVE, 1L);
    if (o->buffer_size > 0)
        SET(CURLOPT_BUFFERSIZE, o->buffer_size);
    if (o->ca_bundle)
        SET(CURLOPT_CAINFO, o->ca_bundle);
    if (o->headers)
        SET(CURLOPT_HTTPHEADER, o->headers);
    if (o->on_body) {
        SET(CURLOPT_WRITEFUNCTION, o->on_body);
        SET(CURLOPT_WRITEDATA, o->body_data);
    }
    if (o->on_header) {
        SET(CURLOPT_HEADERFUNCTION, o->on_header);
        SET(CURLOPT_HEADERDATA, o->header_data);
    }
    if (o->errbuf)
        SET(CURLOPT_ERRORBUFFER, o->errbuf);
#undef SET
    if (rc != CURLE_OK) {
        curl_easy_cleanup(e);
        return -EINVAL;
    }
    *ret = e;
    return 0;
}

static void global_init(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

int httpuv_new(uv_loop_t *loop, struct httpuv **ret)
{
    struct httpuv *h;
    static uv_once_t once = UV_ONCE_INIT;

    uv_once(&once, global_init);
    h = calloc(1, sizeof(*h));
    if (!h)
        return -ENOMEM;
    h->loop = loop;
    list_init(&h->transfers);
    h->multi = curl_multi_init();
    if (!h->multi) {
        free(h);
        return -ENOMEM;
    }
    uv_timer_init(loop, &h->timer);
    h->timer.data = h;
    curl_multi_setopt(h->multi, CURLMOPT_SOCKETFUNCTION, handle_socket);
    curl_multi_setopt(h->multi, CURLMOPT_SOCKETDATA, h);
    curl_multi_setopt(h->multi, CURLMOPT_TIMERFUNCTION, start_timeout);
    curl_multi_setopt(h->multi, CURLMOPT_TIMERDATA, h);
    *ret = h;
    return 0;
}

int httpuv_add(struct httpuv *h, CURL *easy, httpuv_done_cb cb, void *opaque)
{
    struct transfer *t = calloc(1, sizeof(*t));

    if (!t)
        return -ENOMEM;
    t->easy = easy;
    t->cb = cb;
    t->opaque = opaque;
    curl_easy_setopt(easy, CURLOPT_PRIVATE, t);
    if (curl_multi_add_handle(h->multi, easy) != CURLM_OK) {
        curl_easy_setopt(easy, CURLOPT_PRIVATE, NULL);
        free(t);
        return -EINVAL;
    }
    list_add_head(&h->transfers, &t->link);
    h->active++;
    return 0;
}

int httpuv_cancel(struct httpuv *h, CURL *easy)
{
    struct transfer *t = NULL;

    curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&t);
    if (!t)
        return -ENOENT;
    curl_multi_remove_handle(h->multi, easy);
    curl_easy_setopt(easy, CURLOPT_PRIVATE, NULL);
    transfer_unlink(h, t);
    free(t);
    return 0;
}

unsigned httpuv_active(const struct httpuv *h)
{
    return h->active;
}

static void on_timer_closed(uv_handle_t *handle)
{
    free(handle->data);
}

void httpuv_free(struct httpuv *h)
{
    if (!h)
        return;
    /* Removing each handle makes curl call handle_socket(REMOVE), which
     * closes its uv_poll. Callbacks are not called on teardown. */
    while (!list_empty(&h->transfers))
        httpuv_cancel(h, list_entry(h->transfers.next, struct transfer, link)->easy);
    curl_multi_cleanup(h->multi);
    uv_close((uv_handle_t *)&h->timer, on_timer_closed);
}
