/* server.c: the metadata service's HTTP side. Our own listening sockets
 * (one or more per network, SO_BINDTODEVICE to its bridge) are accepted on
 * the libuv loop and each connection is handed to one libmicrohttpd daemon
 * (MHD_USE_NO_LISTEN_SOCKET + MHD_add_connection(); its epoll fd in a
 * uv_poll, its timeouts in a uv_timer, as agent/api/server.c does), which
 * remembers the network that accepted it. The instance is looked up once
 * per connection, on its first request; the answer is handle.c's. Around
 * it: a per-source token bucket (503, EC2's "retry" answer, when empty), a
 * connection cap and a per-source cap, a deadline for each request head
 * (slowloris), IP_TTL = the hop limit on a token's answer, counters. */
#include <arpa/inet.h>
#include <microhttpd.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "agent/metadata/md-internal.h"
#include "common/prom.h"

enum phase { PH_HEAD, PH_REQUEST, PH_CUT };

struct listener {
    struct md_service *s;
    char network[64];
    uint32_t scope;           /* rate-limit scope: one per network name */
    char dev[IF_NAMESIZE];    /* the device bound to ("": none) */
    unsigned ifindex;         /* ... by its index at the bind (a device remade gets another) */
    struct sockaddr_in sa;    /* the address bound (its port the one the kernel gave) */
    int fd;                   /* -1: down (the device is gone; bound again when it is back) */
    int port;
    uv_poll_t poll;           /* initialised only while fd >= 0 */
    bool counted;             /* its close is one of s->pending_closes */
    bool paused;              /* out of descriptors: not polled until the next sweep */
    struct listener *next;
};

struct mdconn {
    int fd;
    char network[64];         /* the network whose socket accepted it */
    uint32_t scope;
    struct sockaddr_in peer;
    bool looked_up;
    bool counted;             /* in the per-network and per-source counts */
    struct md_instance *inst; /* the lookup's answer, held for the connection (its render cache
                                 is the instance's, shared by every connection serving it) */
    bool ttl_set;             /* IP_TTL = hop limit for a token's answer, until the peer has it all */
    enum phase phase;
    uint64_t since_ms;
    struct mdconn *prev, *next;
};

/* The answer codes counted (anything else counts as "other"). */
static const int counted[] = {200, 400, 401, 403, 404, 405, 500, 503};
#define N_CODES (ARRAY_SIZE(counted) + 1)

/* Open connections per network (addr 0) and per (network, source address):
 * guests of two networks with overlapping CIDRs are two sources. */
struct conn_count {
    uint32_t scope, addr;
    bool network;
    unsigned n;
    struct conn_count *next;
};
#define COUNT_BUCKETS 256

struct md_service {
    uv_loop_t *loop;
    md_lookup_fn lookup;
    void *opaque;
    struct md_service_config cfg;
    struct md_token_key key;
    struct md_ratelimit *rl;
    struct md_budget *budget; /* what render caches may keep */
    struct MHD_Daemon *mhd;
    uv_poll_t poll;
    uv_timer_t timer, sweep;
    bool handles_open;
    unsigned pending_closes;
    bool freeing;
    struct listener *listeners;
    uint32_t next_scope;
    uint64_t sweeps;
    struct mdconn *conns;
    unsigned n_conns;
    struct mdconn *adding;    /* the connection MHD_add_connection() is adding */
    struct conn_count *counts[COUNT_BUCKETS];
    uint64_t answers[N_CODES];
    uint64_t lookup_failures, lookup_errors, refused, tokens, deadline_cuts;
};

static void drive(struct md_service *s);

static void on_timer(uv_timer_t *t)
{
    drive(t->data);
}

static void drive(struct md_service *s)
{
    MHD_UNSIGNED_LONG_LONG timeout;

    MHD_run(s->mhd);
    if (MHD_get_timeout(s->mhd, &timeout) == MHD_YES)
        uv_timer_start(&s->timer, on_timer, timeout, 0);
    else
        uv_timer_stop(&s->timer);
}

static void on_poll(uv_poll_t *p, int status, int events)
{
    (void)status;
    (void)events;
    drive(p->data);
}

static struct mdconn *conn_of(struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);

    return ci ? ci->socket_context : NULL;
}

static void count(struct md_service *s, int status)
{
    size_t i;

    for (i = 0; i < ARRAY_SIZE(counted); i++)
        if (counted[i] == status)
            break;
    s->answers[i]++;
}

static const char *header(struct MHD_Connection *c, const char *name, size_t *len)
{
    const char *v = NULL;

    *len = 0;
    if (MHD_lookup_connection_value_n(c, MHD_HEADER_KIND, name, strlen(name), &v, len) != MHD_YES)
        return NULL;
    return v;
}

/* Back to the default IP TTL once every byte sent has been acknowledged:
 * before that, a retransmission of the token's answer would leave with the
 * default TTL and reach a client farther than the hop limit. */
static void ttl_restore_maybe(struct mdconn *k)
{
    int queued = 1, dflt = -1; /* -1: the system's default */

    if (k->ttl_set && ioctl(k->fd, SIOCOUTQ, &queued) == 0 && queued == 0 &&
        setsockopt(k->fd, IPPROTO_IP, IP_TTL, &dflt, sizeof(dflt)) == 0)
        k->ttl_set = false;
}

static enum MHD_Result send_reply(struct md_service *s, struct MHD_Connection *c, struct mdconn *k,
                                  struct md_reply *rp)
{
    struct MHD_Response *resp;
    enum MHD_Result r;

    resp = MHD_create_response_from_buffer(rp->a.len, rp->a.body, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        md_answer_release(&rp->a);
        return MHD_NO;
    }
    rp->a.body = NULL;
    MHD_add_response_header(resp, "Content-Type", rp->a.content_type ? rp->a.content_type : "text/plain");
    MHD_add_response_header(resp, "Server", "compute-agent-metadata");
    if (rp->a.status == 405)
        MHD_add_response_header(resp, "Allow", rp->allow_put ? "PUT" : "GET, HEAD, PUT");
    if (rp->a.status == 503)
        MHD_add_response_header(resp, "Retry-After", "1");
    if (rp->token_put && k && k->inst) {
        char ttl[16];
        int hop = k->inst->hop_limit >= 1 && k->inst->hop_limit <= 64 ? k->inst->hop_limit : 1;
        snprintf(ttl, sizeof(ttl), "%d", rp->ttl_s);
        MHD_add_response_header(resp, "X-aws-ec2-metadata-token-ttl-seconds", ttl);
        /* restored once the peer has acknowledged it (ttl_restore_maybe) */
        if (setsockopt(k->fd, IPPROTO_IP, IP_TTL, &hop, sizeof(hop)) == 0)
            k->ttl_set = true;
        s->tokens++;
    }
    count(s, rp->a.status);
    r = MHD_queue_response(c, (unsigned)rp->a.status, resp);
    MHD_destroy_response(resp);
    return r;
}

static int marker;

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload, size_t *upload_size, void **con_cls)
{
    struct md_service *s = cls;
    struct mdconn *k = conn_of(c);
    struct md_request rq = {.method = method, .path = url};
    struct md_reply rp;
    size_t xff_len;

    (void)version;
    (void)upload;
    if (!*con_cls) {
        *con_cls = &marker;
        if (k && k->phase == PH_HEAD)
            k->phase = PH_REQUEST;
        return MHD_YES;
    }
    if (*upload_size) {
        *upload_size = 0; /* no request here has a body: dropped */
        return MHD_YES;
    }
    memset(&rp, 0, sizeof(rp));
    if (k)
        ttl_restore_maybe(k);
    if (k && !md_ratelimit_take(s->rl, k->scope, k->peer.sin_addr.s_addr, uv_now(s->loop))) {
        if (md_answer_text(&rp.a, 503, "Service Unavailable") < 0)
            return MHD_NO;
        return send_reply(s, c, k, &rp);
    }
    if (k && !k->looked_up) {
        int lr = s->lookup(s->opaque, k->network, &k->peer, &k->inst);
        if (lr < 0 && lr != -ENOENT) {
            /* a transient error (a netlink dump interrupted, out of memory,
             * the store busy) is not "not yours": 503, EC2's "retry" answer
             * (cloud-init retries 5xx, never a 404 on meta_data.json), and
             * looked up again on the next request */
            k->inst = NULL;
            s->lookup_errors++;
            if (md_answer_text(&rp.a, 503, "Service Unavailable") < 0)
                return MHD_NO;
            return send_reply(s, c, k, &rp);
        }
        k->looked_up = true;
        if (lr < 0 || !k->inst) {
            k->inst = NULL;
            s->lookup_failures++;
        }
    }
    rq.token = header(c, "X-aws-ec2-metadata-token", &rq.token_len);
    rq.ttl = header(c, "X-aws-ec2-metadata-token-ttl-seconds", &rq.ttl_len);
    rq.forwarded = header(c, "X-Forwarded-For", &xff_len) != NULL;
    rq.now_s = now_wall_ms() / 1000;
    rq.cache = k && k->inst ? md_instance_cache(k->inst, s->budget) : NULL;
    if (md_handle(k ? k->inst : NULL, &s->key, &rq, &rp) < 0)
        return MHD_NO;
    return send_reply(s, c, k, &rp);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe)
{
    struct md_service *s = cls;
    struct mdconn *k = conn_of(c);

    (void)toe;
    *con_cls = NULL;
    if (!k)
        return;
    if (k->phase != PH_CUT) {
        k->phase = PH_HEAD; /* kept alive: the next head is due in header_timeout */
        k->since_ms = uv_now(s->loop);
    }
}

static struct conn_count **count_slot(struct md_service *s, uint32_t scope, uint32_t addr, bool network)
{
    struct conn_count **p = &s->counts[((scope * 2654435761u) ^ addr ^ network) % COUNT_BUCKETS];

    for (; *p; p = &(*p)->next)
        if ((*p)->scope == scope && (*p)->addr == addr && (*p)->network == network)
            break;
    return p;
}

static unsigned count_get(struct md_service *s, uint32_t scope, uint32_t addr, bool network)
{
    struct conn_count *c = *count_slot(s, scope, addr, network);

    return c ? c->n : 0;
}

/* +1 or -1; an entry goes with its last connection. false: out of memory. */
static bool count_add(struct md_service *s, uint32_t scope, uint32_t addr, bool network, int d)
{
    struct conn_count **p = count_slot(s, scope, addr, network), *c = *p;

    if (!c) {
        if (d < 0 || !(c = calloc(1, sizeof(*c))))
            return false;
        *c = (struct conn_count){.scope = scope, .addr = addr, .network = network};
        *p = c;
    }
    c->n = (unsigned)((int)c->n + d);
    if (!c->n) {
        *p = c->next;
        free(c);
    }
    return true;
}

static void counts_drop(struct md_service *s, struct mdconn *k)
{
    if (!k->counted)
        return;
    count_add(s, k->scope, 0, true, -1);
    count_add(s, k->scope, k->peer.sin_addr.s_addr, false, -1);
    k->counted = false;
}

static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                          enum MHD_ConnectionNotificationCode code)
{
    struct md_service *s = cls;
    struct mdconn *k = *socket_context;

    (void)c;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        k = s->adding;
        s->adding = NULL;
        if (!k) {
            /* not one we are adding (cannot happen): no network, so no instance */
            const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
            k = calloc(1, sizeof(*k));
            if (!k)
                return;
            k->fd = ci ? ci->connect_fd : -1;
            k->looked_up = true;
        }
        k->phase = PH_HEAD;
        k->since_ms = uv_now(s->loop);
        if (k->scope && count_add(s, k->scope, 0, true, 1)) {
            if (count_add(s, k->scope, k->peer.sin_addr.s_addr, false, 1))
                k->counted = true;
            else
                count_add(s, k->scope, 0, true, -1);
        }
        k->next = s->conns;
        if (s->conns)
            s->conns->prev = k;
        s->conns = k;
        s->n_conns++;
        *socket_context = k;
        return;
    }
    if (!k)
        return;
    if (k->prev)
        k->prev->next = k->next;
    else
        s->conns = k->next;
    if (k->next)
        k->next->prev = k->prev;
    s->n_conns--;
    counts_drop(s, k);
    md_instance_free(k->inst);
    free(k);
    *socket_context = NULL;
}

#define SWEEP_MS 250
#define REFRESH_SWEEPS 4 /* the listeners' devices checked every second */

static void on_listen(uv_poll_t *p, int status, int events);

static void on_sweep(uv_timer_t *t)
{
    struct md_service *s = t->data;
    uint64_t now = uv_now(s->loop), limit = (uint64_t)s->cfg.header_timeout_s * 1000;

    if (++s->sweeps % REFRESH_SWEEPS == 0)
        md_service_refresh(s, NULL); /* a bridge deleted or made again */
    for (struct listener *l = s->listeners; l; l = l->next)
        if (l->paused && l->fd >= 0) {
            l->paused = false;
            uv_poll_start(&l->poll, UV_READABLE, on_listen);
        }

    for (struct mdconn *k = s->conns; k; k = k->next) {
        if (k->phase == PH_CUT || now - k->since_ms < limit)
            continue;
        k->phase = PH_CUT;
        s->deadline_cuts++;
        shutdown(k->fd, SHUT_RDWR);
    }
    drive(s);
}

static void accept_one(struct listener *l, int fd, const struct sockaddr_in *peer)
{
    struct md_service *s = l->s;
    struct mdconn *k;
    int one = 1;

    /* the caps: all, the network's (one network cannot take all), the
     * source's on that network */
    if (s->n_conns >= s->cfg.max_connections || count_get(s, l->scope, 0, true) >= s->cfg.max_per_network ||
        count_get(s, l->scope, peer->sin_addr.s_addr, false) >= s->cfg.max_per_source ||
        !(k = calloc(1, sizeof(*k)))) {
        s->refused++;
        close(fd);
        return;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    k->fd = fd;
    strscpy(k->network, l->network, sizeof(k->network));
    k->scope = l->scope;
    k->peer = *peer;
    s->adding = k;
    /* MHD owns (and closes) fd from here, even on failure */
    if (MHD_add_connection(s->mhd, fd, (const struct sockaddr *)peer, sizeof(*peer)) != MHD_YES) {
        s->refused++;
        if (s->adding == k)
            free(k);
    } else if (s->adding == k) {
        /* MHD did not tell us (it always does when not threaded) */
        free(k);
    }
    s->adding = NULL;
}

static void on_listen(uv_poll_t *p, int status, int events)
{
    struct listener *l = p->data;

    (void)events;
    if (status < 0)
        return;
    for (int i = 0; i < 64; i++) {
        struct sockaddr_in peer;
        socklen_t len = sizeof(peer);
        int fd = accept4(l->fd, (struct sockaddr *)&peer, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                /* the socket stays readable: not polled again before the next sweep */
                uv_poll_stop(&l->poll);
                l->paused = true;
                l->s->refused++;
            }
            break;
        }
        if (len != sizeof(peer) || peer.sin_family != AF_INET) {
            close(fd);
            continue;
        }
        accept_one(l, fd, &peer);
    }
    uv_timer_start(&l->s->timer, on_timer, 0, 0);
}

int md_service_new(uv_loop_t *loop, const struct md_service_config *cfg, md_lookup_fn lookup, void *opaque,
                   struct md_service **out)
{
    struct md_service *s;
    const union MHD_DaemonInfo *info;
    int r;

    if (!loop || !lookup || !out)
        return -EINVAL;
    if (!(s = calloc(1, sizeof(*s))))
        return -ENOMEM;
    s->loop = loop;
    s->lookup = lookup;
    s->opaque = opaque;
    if (cfg)
        s->cfg = *cfg;
    s->cfg.token_key = NULL;
    if (!s->cfg.max_connections)
        s->cfg.max_connections = 1024;
    if (!s->cfg.max_per_network)
        s->cfg.max_per_network = s->cfg.max_connections > 4 ? s->cfg.max_connections / 4 : s->cfg.max_connections;
    if (!s->cfg.max_per_source)
        s->cfg.max_per_source = 64;
    if (!s->cfg.header_timeout_s)
        s->cfg.header_timeout_s = 10;
    if (!s->cfg.idle_timeout_s)
        s->cfg.idle_timeout_s = 30;
    if (cfg && cfg->token_key && cfg->token_key_len) {
        s->key.len = cfg->token_key_len < sizeof(s->key.key) ? cfg->token_key_len : sizeof(s->key.key);
        memcpy(s->key.key, cfg->token_key, s->key.len);
    } else {
        s->key.len = MD_TOKEN_KEY_LEN;
        if ((r = random_bytes(s->key.key, s->key.len)) < 0) {
            free(s);
            return r;
        }
    }
    if (!(s->budget = md_budget_new(s->cfg.cache_bytes ? s->cfg.cache_bytes : (size_t)64 << 20,
                                    s->cfg.cache_instance_bytes ? s->cfg.cache_instance_bytes : (size_t)16 << 20))) {
        free(s);
        return -ENOMEM;
    }
    if ((r = md_ratelimit_new(cfg ? cfg->rate : 0, cfg ? cfg->burst : 0, &s->rl)) < 0) {
        md_budget_unref(s->budget);
        free(s);
        return r;
    }
    s->mhd = MHD_start_daemon(MHD_USE_EPOLL | MHD_USE_NO_LISTEN_SOCKET, 0,
                              NULL, NULL, on_request, s, MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
                              MHD_OPTION_NOTIFY_CONNECTION, on_connection, s, MHD_OPTION_CONNECTION_TIMEOUT,
                              s->cfg.idle_timeout_s, MHD_OPTION_CONNECTION_LIMIT, s->cfg.max_connections,
                              MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(32 * 1024), MHD_OPTION_END);
    info = s->mhd ? MHD_get_daemon_info(s->mhd, MHD_DAEMON_INFO_EPOLL_FD) : NULL;
    if (!info || uv_poll_init(loop, &s->poll, info->epoll_fd) < 0) {
        if (s->mhd)
            MHD_stop_daemon(s->mhd);
        md_ratelimit_free(s->rl);
        md_budget_unref(s->budget);
        free(s);
        return -EIO;
    }
    uv_timer_init(loop, &s->timer);
    uv_timer_init(loop, &s->sweep);
    s->poll.data = s->timer.data = s->sweep.data = s;
    s->handles_open = true;
    uv_poll_start(&s->poll, UV_READABLE, on_poll);
    uv_timer_start(&s->sweep, on_sweep, SWEEP_MS, SWEEP_MS);
    *out = s;
    return 0;
}

static uint32_t scope_of(struct md_service *s, const char *network)
{
    for (struct listener *l = s->listeners; l; l = l->next)
        if (!strcmp(l->network, network))
            return l->scope;
    return ++s->next_scope;
}

/* A listening socket on l->sa, bound to l->dev by the index it has now
 * (SO_BINDTOIFINDEX: a device deleted and made again under the same name
 * is another index, which md_service_refresh() notices), polled. 0 (l->fd
 * set, l->port the port bound), -ENODEV when the device is not there, or
 * -errno. */
static int listener_open(struct md_service *s, struct listener *l)
{
    struct sockaddr_in sa = l->sa;
    socklen_t len = sizeof(sa);
    unsigned idx = 0;
    int one = 1, fd, r;

    if (l->dev[0] && !(idx = if_nametoindex(l->dev)))
        return -ENODEV;
    fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        setsockopt(fd, IPPROTO_IP, IP_FREEBIND, &one, sizeof(one)) < 0 ||
        (idx && setsockopt(fd, SOL_SOCKET, SO_BINDTOIFINDEX, &idx, sizeof(idx)) < 0) ||
        bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 1024) < 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &len) < 0) {
        r = -errno;
        close(fd);
        return r;
    }
    if ((r = uv_poll_init(s->loop, &l->poll, fd)) < 0) {
        close(fd);
        return r;
    }
    l->fd = fd;
    l->ifindex = idx;
    l->port = ntohs(sa.sin_port);
    l->sa.sin_port = sa.sin_port; /* bound again on the same port */
    l->paused = false;
    l->poll.data = l;
    uv_poll_start(&l->poll, UV_READABLE, on_listen);
    return 0;
}

int md_service_listen(struct md_service *s, const char *network, const char *bind_dev, const char *addr, int port)
{
    struct listener *l;
    int r;

    if (!network || strlen(network) >= sizeof(l->network) || port < 0 || port > 65535 ||
        (bind_dev && (!*bind_dev || strlen(bind_dev) >= sizeof(l->dev))))
        return -EINVAL;
    if (!(l = calloc(1, sizeof(*l))))
        return -ENOMEM;
    l->sa = (struct sockaddr_in){.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, addr ? addr : "169.254.169.254", &l->sa.sin_addr) != 1) {
        free(l);
        return -EINVAL;
    }
    l->s = s;
    l->fd = -1;
    strscpy(l->network, network, sizeof(l->network));
    strscpy(l->dev, bind_dev ? bind_dev : "", sizeof(l->dev));
    if ((r = listener_open(s, l)) < 0) {
        free(l);
        return r;
    }
    l->scope = scope_of(s, network);
    l->next = s->listeners;
    s->listeners = l;
    return 0;
}

int md_service_port(struct md_service *s, const char *network)
{
    int port = -ENOENT;

    for (struct listener *l = s->listeners; l; l = l->next)
        if (!strcmp(l->network, network))
            port = l->port; /* the oldest is last */
    return port;
}

static void on_listener_closed(uv_handle_t *h)
{
    struct listener *l = h->data;
    struct md_service *s = l->s;

    bool pending = l->counted;

    free(l);
    if (pending && --s->pending_closes == 0)
        free(s);
}

/* The socket closed now (the poll handle's close is queued; the descriptor
 * is closed at once, so that a socket bound in its place right after cannot
 * get its number while libuv still knows the old one). */
static void listener_shut(struct listener *l, uv_close_cb cb)
{
    uv_poll_stop(&l->poll);
    uv_close((uv_handle_t *)&l->poll, cb);
    close(l->fd);
    l->fd = -1;
}

static void listener_close(struct listener *l)
{
    if (l->fd < 0) { /* down: no handle */
        free(l);
        return;
    }
    l->counted = l->s->freeing;
    if (l->counted)
        l->s->pending_closes++;
    listener_shut(l, on_listener_closed);
}

int md_service_unlisten(struct md_service *s, const char *network)
{
    struct listener **p = &s->listeners;
    int r = -ENOENT;

    while (*p) {
        struct listener *l = *p;
        if (strcmp(l->network, network)) {
            p = &l->next;
            continue;
        }
        *p = l->next;
        listener_close(l);
        r = 0;
    }
    return r;
}

int md_service_refresh(struct md_service *s, const char *network)
{
    struct listener **p = &s->listeners;
    bool found = false;
    int n = 0;

    for (; *p; p = &(*p)->next) {
        struct listener *l = *p, *fresh;
        unsigned idx;
        if (network && strcmp(l->network, network))
            continue;
        found = true;
        if (!l->dev[0])
            continue;
        idx = if_nametoindex(l->dev);
        if (l->fd >= 0 ? idx == l->ifindex : !idx)
            continue; /* still the same device, or still none */
        /* the device went, or was made again: this socket hears nothing any more */
        if (!(fresh = malloc(sizeof(*fresh))))
            return -ENOMEM;
        *fresh = *l;
        fresh->fd = -1;
        fresh->paused = fresh->counted = false;
        *p = fresh;
        listener_close(l);
        if (idx && listener_open(s, fresh) == 0)
            n++; /* else down until the device is back */
    }
    return found ? n : -ENOENT;
}

int md_service_metrics(struct md_service *s, FILE *f)
{
    static const char *req = "compute_agent_metadata_requests_total";

    prom_family(f, req, "counter", "metadata service answers, by HTTP status");
    for (size_t i = 0; i < N_CODES; i++) {
        char code[16];
        struct prom_label l = {"code", code};
        if (i < ARRAY_SIZE(counted))
            snprintf(code, sizeof(code), "%d", counted[i]);
        else
            strscpy(code, "other", sizeof(code));
        prom_series(f, req, &l, 1);
        prom_u64(f, s->answers[i]);
    }
    prom_family(f, "compute_agent_metadata_lookup_failures_total", "counter",
                "metadata connections whose instance was not found (answered 404)");
    prom_series(f, "compute_agent_metadata_lookup_failures_total", NULL, 0);
    prom_u64(f, s->lookup_failures);
    prom_family(f, "compute_agent_metadata_lookup_errors_total", "counter",
                "metadata lookups that failed for a transient reason (answered 503, looked up again)");
    prom_series(f, "compute_agent_metadata_lookup_errors_total", NULL, 0);
    prom_u64(f, s->lookup_errors);
    prom_family(f, "compute_agent_metadata_tokens_issued_total", "counter", "IMDSv2 session tokens issued");
    prom_series(f, "compute_agent_metadata_tokens_issued_total", NULL, 0);
    prom_u64(f, s->tokens);
    prom_family(f, "compute_agent_metadata_connections_refused_total", "counter",
                "metadata connections refused at the connection cap");
    prom_series(f, "compute_agent_metadata_connections_refused_total", NULL, 0);
    prom_u64(f, s->refused);
    prom_family(f, "compute_agent_metadata_deadline_cuts_total", "counter",
                "metadata connections closed for sending no request head in time");
    prom_series(f, "compute_agent_metadata_deadline_cuts_total", NULL, 0);
    prom_u64(f, s->deadline_cuts);
    prom_family(f, "compute_agent_metadata_connections", "gauge", "open metadata connections");
    prom_series(f, "compute_agent_metadata_connections", NULL, 0);
    prom_u64(f, s->n_conns);
    prom_family(f, "compute_agent_metadata_render_cache_bytes", "gauge",
                "bytes of rendered metadata documents kept for the instances being served");
    prom_series(f, "compute_agent_metadata_render_cache_bytes", NULL, 0);
    prom_u64(f, __atomic_load_n(&s->budget->used, __ATOMIC_RELAXED));
    return ferror(f) ? -EIO : 0;
}

static void on_closed(uv_handle_t *h)
{
    struct md_service *s = h->data;

    if (--s->pending_closes == 0)
        free(s);
}

void md_service_free(struct md_service *s)
{
    if (!s)
        return;
    s->freeing = true;
    s->pending_closes = 1; /* held until every close is queued */
    while (s->listeners) {
        struct listener *l = s->listeners;
        s->listeners = l->next;
        listener_close(l);
    }
    if (s->handles_open) {
        uv_poll_stop(&s->poll); /* before MHD closes the epoll fd */
        s->pending_closes += 3;
        uv_close((uv_handle_t *)&s->poll, on_closed);
        uv_close((uv_handle_t *)&s->timer, on_closed);
        uv_close((uv_handle_t *)&s->sweep, on_closed);
    }
    if (s->mhd) {
        MHD_stop_daemon(s->mhd); /* closes the connections: on_connection frees them */
        s->mhd = NULL;
    }
    for (size_t i = 0; i < COUNT_BUCKETS; i++)
        while (s->counts[i]) { /* (none left: each connection's close dropped its own) */
            struct conn_count *c = s->counts[i];
            s->counts[i] = c->next;
            free(c);
        }
    md_ratelimit_free(s->rl);
    s->rl = NULL;
    md_budget_unref(s->budget); /* instances still held elsewhere keep it until they go */
    s->budget = NULL;
    memset(s->key.key, 0, sizeof(s->key.key));
    if (--s->pending_closes == 0)
        free(s);
}
