/* server.c: the API's HTTP servers: libmicrohttpd on the libuv loop (MHD's
 * epoll fd in a uv_poll, its timeouts in a uv_timer), the listeners (unix
 * socket, TCP with a bearer token, the metrics-only TCP listener), the body
 * cap, the Content-Type check, the per-connection deadlines MHD does not
 * keep (a request head within api.header_timeout, a whole request within
 * api.request_timeout), the per-address limit, and the hang-up checks that
 * keep the accept queue moving at the connection limit (issue 8). What a
 * request means is router.c's. */
#include <microhttpd.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent/api/api-internal.h"
#include "agent/log.h"

static void on_timer(uv_timer_t *t);
static void server_stop(struct api_server *srv);

/* "Authorization: Bearer TOKEN": the scheme in any case (RFC 7235), one or
 * more spaces, then exactly the token: the value's full length (MHD keeps
 * bytes after an embedded NUL), compared in constant time. */
static bool token_ok(struct MHD_Connection *c, const char *token)
{
    const char *v = NULL;
    size_t vlen = 0, tl = strlen(token), i = 6;
    unsigned char diff = 0;

    if (MHD_lookup_connection_value_n(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION,
                                      strlen(MHD_HTTP_HEADER_AUTHORIZATION), &v, &vlen) != MHD_YES ||
        !v || vlen < 7 || strncasecmp(v, "Bearer", 6) != 0 || v[6] != ' ')
        return false;
    while (i < vlen && v[i] == ' ')
        i++;
    v += i;
    vlen -= i;
    if (vlen != tl)
        return false;
    for (i = 0; i < tl; i++)
        diff |= (unsigned char)token[i] ^ (unsigned char)v[i];
    return diff == 0;
}

static const char *skip_ows(const char *p)
{
    while (*p == ' ' || *p == '\t')
        p++;
    return p;
}

/* Content-Type names JSON: the media type application/json exactly (any
 * case), then only parameters; a charset, if given, is utf-8. */
static bool json_media_type(const char *v)
{
    const char *p = skip_ows(v);

    if (strncasecmp(p, "application/json", 16) != 0)
        return false;
    p = skip_ows(p + 16);
    while (*p == ';') {
        const char *name = p = skip_ows(p + 1), *val;
        size_t nlen, vlen;
        while (*p && *p != '=' && *p != ';' && *p != ' ' && *p != '\t' && *p != '"')
            p++;
        nlen = (size_t)(p - name);
        if (!nlen || *p != '=')
            return false;
        val = ++p;
        if (*p == '"') {
            val = ++p;
            while (*p && *p != '"' && *p != '\\')
                p++;
            if (*p != '"')
                return false;
            vlen = (size_t)(p++ - val);
        } else {
            while (*p && *p != ';' && *p != ' ' && *p != '\t' && *p != '"')
                p++;
            vlen = (size_t)(p - val);
        }
        if (!vlen)
            return false;
        if (nlen == 7 && !strncasecmp(name, "charset", 7) &&
            !(vlen == 5 && !strncasecmp(val, "utf-8", 5)))
            return false;
        p = skip_ows(p);
    }
    return *p == '\0';
}

static enum MHD_Result send_json(struct MHD_Connection *c, int status, json_t *body)
{
    char *text;

    if (status == MHD_HTTP_NO_CONTENT) {
        struct MHD_Response *empty = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
        enum MHD_Result r = empty ? MHD_queue_response(c, (unsigned)status, empty) : MHD_NO;
        json_decref(body);
        if (empty)
            MHD_destroy_response(empty);
        return r;
    }
    text = json_dumps(body, JSON_COMPACT);
    size_t len = text ? strlen(text) : 0;
    struct MHD_Response *resp;
    enum MHD_Result r;

    json_decref(body);
    if (!text)
        return MHD_NO;
    text[len] = '\0';
    resp = MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(text);
        return MHD_NO;
    }
    MHD_add_response_header(resp, "Content-Type", "application/json");
    r = MHD_queue_response(c, (unsigned)status, resp);
    MHD_destroy_response(resp);
    return r;
}

struct conn *api_conn_of(struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);

    return ci ? ci->socket_context : NULL;
}

/* GET /metrics: the Prometheus text format, from the last sample and the
 * agent's counters; never calls libvirt. */
static enum MHD_Result send_metrics(struct api *api, struct MHD_Connection *c)
{
    struct MHD_Response *resp;
    enum MHD_Result r;
    char *text;
    size_t len;

    if (api_metrics_text(&api->deps, &text, &len) < 0)
        return MHD_NO;
    resp = MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(text);
        return MHD_NO;
    }
    MHD_add_response_header(resp, "Content-Type", "text/plain; version=0.0.4; charset=utf-8");
    r = MHD_queue_response(c, MHD_HTTP_OK, resp);
    MHD_destroy_response(resp);
    return r;
}

void api_server_kick(struct api_server *srv)
{
    uv_timer_start(&srv->timer, on_timer, 0, 0);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls)
{
    struct api_server *srv = cls;
    struct api *api = srv->api;
    struct request *req = *con_cls;
    json_t *reply = NULL;
    const char *ctype, *idem;
    uint64_t t0;
    int status;

    (void)version;
    if (!req) {
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
        int64_t clen;
        struct conn *k = api_conn_of(c);
        req = calloc(1, sizeof(*req));
        if (!req)
            return MHD_NO;
        if (k && k->phase == CONN_HEAD)
            k->phase = CONN_REQUEST; /* the head is in: the request deadline runs on */
        if (cl && parse_int64(cl, 0, INT64_MAX, &clen) == 0 && clen > API_MAX_BODY)
            req->too_big = true;
        *con_cls = req;
        return MHD_YES;
    }
    if (*upload_size) {
        if (!req->too_big && req->len + *upload_size <= API_MAX_BODY) {
            char *nb = realloc(req->body, req->len + *upload_size + 1);
            if (!nb)
                return MHD_NO;
            memcpy(nb + req->len, upload, *upload_size);
            req->body = nb;
            req->len += *upload_size;
            req->body[req->len] = '\0';
        } else {
            req->too_big = true;
        }
        *upload_size = 0;
        return MHD_YES;
    }
    if (req->reply) {
        /* a resumed long-poll */
        json_t *r = req->reply;
        req->reply = NULL;
        return send_json(c, req->status, r);
    }
    t0 = now_mono_ns();
    if (srv->tcp && !token_ok(c, api->cfg.token)) {
        status = api_fail_with(&reply, "unauthorized", NULL, "a valid bearer token is required");
        goto send;
    }
    if (req->too_big) {
        status = api_fail_with(&reply, "payload_too_large", NULL, "the body is larger than 64 KiB");
        goto send;
    }
    ctype = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Type");
    if (req->len && ctype && !json_media_type(ctype)) {
        status = api_fail_with(&reply, "unsupported_media_type", NULL, "the body must be application/json");
        goto send;
    }
    if (!strcmp(url, "/metrics") && (!strcmp(method, "GET") || !strcmp(method, "HEAD")))
        return send_metrics(api, c);
    if (srv->metrics_only) {
        status = api_fail_with(&reply, "not_found", NULL, "this listener serves GET /metrics only");
        goto send;
    }
    idem = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Idempotency-Key");
    if (!strcmp(method, "GET") && !strcmp(url, "/v1/events") &&
        (ctype = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Accept")) && strstr(ctype, "text/event-stream")) {
        int r = api_events_stream(srv, c, &reply, &status);
        if (r != 0)
            return r > 0 ? MHD_YES : MHD_NO;
        goto send;
    }
    if ((!strcmp(method, "GET") || !strcmp(method, "HEAD")) && !strcmp(url, "/v1/events")) {
        if (api_events_get(srv, c, req, &reply, &status) == 1)
            return MHD_YES; /* suspended */
        goto send;
    }
    if (!strcmp(method, "GET") && !strncmp(url, "/v1/operations/", 15)) {
        const char *w = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "wait");
        if (w) {
            int r = api_wait_maybe(srv, c, req, url + 15, w, &reply, &status);
            if (r == 1)
                return MHD_YES; /* suspended */
            if (r < 0)
                goto send;
        }
    }
    status = api_route_conn(c, &api->deps, &api->cfg, method, url, req->body, req->len, idem, &reply);
send:
    if (status >= 400) {
        json_t *e = json_object_get(reply, "error");
        log_info("request refused", "method=%s path=%s status=%d code=%s field=%s message=%s", method, url,
                 status, json_string_value(json_object_get(e, "code")),
                 json_is_string(json_object_get(e, "field")) ? json_string_value(json_object_get(e, "field")) : "-",
                 json_string_value(json_object_get(e, "message")));
    } else {
        log_debug("request", "method=%s path=%s status=%d us=%llu", method, url, status,
                  (unsigned long long)((now_mono_ns() - t0) / 1000));
    }
    return send_json(c, status, reply);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    struct request *req = *con_cls;
    struct conn *k = api_conn_of(c);

    (void)toe;
    if (req) {
        json_decref(req->reply);
        free(req->body);
        free(req);
        *con_cls = NULL;
    }
    if (k && k->phase != CONN_CUT) {
        /* kept alive: the next request head is due within header_timeout */
        struct api_server *srv = cls;
        k->phase = CONN_HEAD;
        k->since_ms = uv_now(srv->api->loop);
    }
}

/* MHD_OPTION_NOTIFY_CONNECTION: track each connection for its deadlines. */
static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                          enum MHD_ConnectionNotificationCode code)
{
    struct api_server *srv = cls;
    struct conn *k = *socket_context;

    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
        if (!ci)
            return;
        k = calloc(1, sizeof(*k));
        if (!k) {
            shutdown(ci->connect_fd, SHUT_RDWR); /* no deadline to keep: no connection */
            return;
        }
        k->fd = ci->connect_fd;
        k->phase = CONN_HEAD;
        k->fresh = true;
        srv->fresh++;
        k->since_ms = uv_now(srv->api->loop);
        k->next = srv->conns;
        if (srv->conns)
            srv->conns->prev = k;
        srv->conns = k;
        *socket_context = k;
        return;
    }
    /* MHD_CONNECTION_NOTIFY_CLOSED */
    srv->closed_in_run = true;
    if (!k)
        return;
    if (k->fresh)
        srv->fresh--;
    if (k->prev)
        k->prev->next = k->next;
    else
        srv->conns = k->next;
    if (k->next)
        k->next->prev = k->prev;
    api_waiters_forget_conn(srv->api, k);
    api_events_forget_conn(srv->api, k);
    free(k);
    *socket_context = NULL;
}

/* 1 if a connection still waiting for its request head can never send
 * one: its client has hung up and MHD has read every byte it sent. MHD
 * (edge-triggered epoll) misses a hang-up that came with the data before
 * the accept, and would keep such a connection to its deadline; a queue of
 * them behind the connection limit would then keep everyone out. 0 if
 * alive, -1 if MHD has bytes still to read (ask again later). */
static int head_abandoned(const struct conn *k)
{
    struct pollfd p = {.fd = k->fd, .events = POLLIN | POLLRDHUP};
    int unread = 0;

    if (poll(&p, 1, 0) != 1 || !(p.revents & (POLLRDHUP | POLLHUP | POLLERR)))
        return 0;
    if (ioctl(k->fd, FIONREAD, &unread) < 0 || unread > 0)
        return -1;
    return 1;
}

static void conn_cut(struct conn *k)
{
    k->phase = CONN_CUT;
    shutdown(k->fd, SHUT_RDWR);
}

/* The connections accepted in the last run: cut those abandoned already. */
static bool check_fresh(struct api_server *srv)
{
    bool cut = false;

    for (struct conn *k = srv->conns; k && srv->fresh; k = k->next) {
        int r;
        if (!k->fresh)
            continue;
        r = k->phase == CONN_HEAD ? head_abandoned(k) : 0;
        if (r < 0)
            continue;
        if (r > 0) {
            conn_cut(k);
            cut = true;
        }
        k->fresh = false;
        srv->fresh--;
    }
    return cut;
}

/* Run MHD, then re-arm the timer MHD asks for.
 *
 * At its connection limit (or after accept() failed with EMFILE) MHD takes
 * its listen socket out of its epoll set, and puts it back only at the
 * start of a later MHD_run(), once a connection has gone. Connections that
 * close during a run (clients hanging up, MHD's timeouts, our deadlines)
 * make that room at the run's end; if nothing else wakes the loop, no
 * later run comes: the listen socket never returns to the set, nothing is
 * accepted again and the accept queue stays full. So a run in which a
 * connection closed is followed by another at once. */
static void drive(struct api_server *srv)
{
    MHD_UNSIGNED_LONG_LONG timeout;

    srv->closed_in_run = false;
    MHD_run(srv->mhd);
    if (srv->fresh && check_fresh(srv))
        srv->closed_in_run = true;
    if (srv->closed_in_run)
        uv_timer_start(&srv->timer, on_timer, 0, 0);
    else if (MHD_get_timeout(srv->mhd, &timeout) == MHD_YES)
        uv_timer_start(&srv->timer, on_timer, timeout, 0);
    else
        uv_timer_stop(&srv->timer);
}

#define SWEEP_MS 250

/* Shut down the connections past their deadline; run MHD (which also
 * keeps a missed wake-up from lasting). */
static void on_sweep(uv_timer_t *t)
{
    struct api_server *srv = t->data;
    const struct api_config *cfg = &srv->api->cfg;
    uint64_t now = uv_now(srv->api->loop);
    unsigned head = 0, request = 0;

    for (struct conn *k = srv->conns; k; k = k->next) {
        bool late = (k->phase == CONN_HEAD && now - k->since_ms >= (uint64_t)cfg->header_timeout_s * 1000) ||
                    (k->phase == CONN_REQUEST && now - k->since_ms >= (uint64_t)cfg->request_timeout_s * 1000);
        if (!late) {
            if (k->phase == CONN_HEAD && head_abandoned(k) > 0)
                conn_cut(k);
            continue;
        }
        if (k->phase == CONN_HEAD)
            head++;
        else
            request++;
        conn_cut(k);
    }
    if (head || request)
        log_info("connections closed at their deadline", "listener=%s without_request_head=%u request_too_long=%u",
                 srv->name, head, request);
    drive(srv);
}

static void on_timer(uv_timer_t *t)
{
    drive(t->data);
}

static void on_poll(uv_poll_t *p, int status, int events)
{
    (void)status;
    (void)events;
    drive(p->data);
}

static int server_start(struct api *api, struct api_server *srv, int fd, bool tcp, const char *name,
                        unsigned limit, struct agent_error *err)
{
    const union MHD_DaemonInfo *info;
    /* per client address, on TCP (MHD counts none on a unix socket) */
    unsigned per_ip = tcp || srv->metrics_only ? (unsigned)api->cfg.per_address_limit : 0;

    srv->api = api;
    srv->tcp = tcp;
    srv->name = name;
    srv->mhd = MHD_start_daemon(MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME, 0, NULL, NULL, on_request, srv,
                                MHD_OPTION_LISTEN_SOCKET, fd, MHD_OPTION_NOTIFY_COMPLETED, on_completed,
                                srv, MHD_OPTION_NOTIFY_CONNECTION, on_connection, srv,
                                MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)60,
                                MHD_OPTION_CONNECTION_LIMIT, limit,
                                MHD_OPTION_PER_IP_CONNECTION_LIMIT, per_ip,
                                MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(128 * 1024), MHD_OPTION_END);
    if (!srv->mhd) {
        close(fd);
        return agent_error_set(err, EIO, "internal", tcp ? "api.listen" : "api.socket",
                               "cannot start the HTTP server");
    }
    info = MHD_get_daemon_info(srv->mhd, MHD_DAEMON_INFO_EPOLL_FD);
    if (!info || uv_poll_init(api->loop, &srv->poll, info->epoll_fd) < 0) {
        MHD_stop_daemon(srv->mhd);
        srv->mhd = NULL;
        return agent_error_set(err, EIO, "internal", NULL, "cannot watch the HTTP server");
    }
    uv_timer_init(api->loop, &srv->timer);
    uv_timer_init(api->loop, &srv->sweep);
    srv->poll.data = srv;
    srv->timer.data = srv;
    srv->sweep.data = srv;
    srv->open = true;
    uv_poll_start(&srv->poll, UV_READABLE, on_poll);
    uv_timer_start(&srv->sweep, on_sweep, SWEEP_MS, SWEEP_MS);
    drive(srv);
    return 0;
}

static bool given(const char *s)
{
    return s && s[0];
}

int api_new(uv_loop_t *loop, const struct api_deps *deps, const struct api_config *cfg, struct api **ret,
            struct agent_error *err)
{
    struct api *api = calloc(1, sizeof(*api));
    unsigned limit = api_connection_limit(cfg, 1 + given(cfg->listen) + given(cfg->metrics_listen));
    int fd, r = 0;

    if (!api)
        return agent_error_set(err, ENOMEM, "internal", NULL, "out of memory");
    api->loop = loop;
    api->deps = *deps;
    api->cfg = *cfg;
    if (limit < cfg->max_connections)
        log_warn("the open-file limit caps api.max_connections", "max_connections=%u", limit);
    fd = api_unix_listen(api, cfg->socket, err);
    if (fd < 0 || (r = server_start(api, &api->unix_srv, fd, false, "api.socket", limit, err)) < 0) {
        api_free(api);
        return fd < 0 ? fd : r;
    }
    if (given(cfg->listen)) {
        fd = api_tcp_listen(cfg->listen, err);
        if (fd < 0 || (r = server_start(api, &api->tcp_srv, fd, true, "api.listen", limit, err)) < 0) {
            api_free(api);
            return fd < 0 ? fd : r;
        }
    }
    if (given(cfg->metrics_listen)) {
        fd = api_tcp_listen(cfg->metrics_listen, err);
        if (fd >= 0)
            api->metrics_srv.metrics_only = true;
        if (fd < 0 ||
            (r = server_start(api, &api->metrics_srv, fd, false, "telemetry.metrics_listen", limit, err)) < 0) {
            if (err)
                strscpy(err->field, "telemetry.metrics_listen", sizeof(err->field));
            api_free(api);
            return fd < 0 ? fd : r;
        }
    }
    api_events_start(api);
    *ret = api;
    return 0;
}

static void on_closed(uv_handle_t *h)
{
    struct api_server *srv = h->data;
    struct api *api = srv->api;

    if (--api->pending_closes == 0)
        free(api);
}

static void server_stop(struct api_server *srv)
{
    if (srv->mhd) {
        if (srv->open) {
            uv_poll_stop(&srv->poll);
            srv->api->pending_closes += 3;
            uv_close((uv_handle_t *)&srv->poll, on_closed);
            uv_close((uv_handle_t *)&srv->timer, on_closed);
            uv_close((uv_handle_t *)&srv->sweep, on_closed);
        }
        MHD_stop_daemon(srv->mhd);
        srv->mhd = NULL;
    }
}

void api_free(struct api *api)
{
    if (!api)
        return;
    /* MHD needs every suspended connection resumed before it stops */
    api->stopping = true;
    api_waiters_flush(api);
    api_events_flush(api);
    if (api->unix_srv.mhd)
        MHD_run(api->unix_srv.mhd);
    if (api->tcp_srv.mhd)
        MHD_run(api->tcp_srv.mhd);
    server_stop(&api->metrics_srv);
    if (api->socket_bound) {
        /* ours only if it is still the inode bound (not a successor's) */
        struct stat st;
        if (lstat(api->cfg.socket, &st) == 0 && S_ISSOCK(st.st_mode) && st.st_dev == api->socket_dev &&
            st.st_ino == api->socket_ino)
            unlink(api->cfg.socket);
    }
    server_stop(&api->unix_srv);
    server_stop(&api->tcp_srv);
    if (api->pending_closes == 0)
        free(api);
}
