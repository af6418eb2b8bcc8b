/* dhcpd.c: dnsmasq per dhcp network, supervised on the loop (agent/dhcpd.h). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "agent/dhcpd-internal.h"
#include "agent/dhcpd.h"
#include "agent/log.h"
#include "agent/store.h"
#include "net-plug/dhcp.h"
#include "net-plug/netplug.h"

#define DHCPD_TERM_GRACE_MS 5000  /* SIGTERM, then SIGKILL */
#define DHCPD_HUP_RETRY_MS 20     /* a SIGHUP waits for dnsmasq's handler */
#define DHCPD_HUP_TRIES 500       /* ... for at most 10 s */
#define DHCPD_LINE_MAX 512
#define DHCPD_STALE_WAIT_MS 3000  /* a stale dnsmasq's exit after SIGTERM (then SIGKILL) */

struct dhcpd_net;

/* One dnsmasq process: freed when its handle has closed. */
struct dhcpd_child {
    uv_process_t proc;
    struct dhcpd_net *n;
    int pid;
    bool term_sent;           /* we asked it to stop */
    uint64_t started_ms;      /* monotonic */
};

/* Its output: freed when the pipe has closed (possibly after the process). */
struct dhcpd_out {
    uv_pipe_t pipe;
    struct dhcpd_net *n;
    int pid;
    char line[DHCPD_LINE_MAX];
    size_t len;
};

struct dhcpd_net {
    struct dhcpd *d;
    const struct net_config *cfg;
    char dir[4096];           /* STATE_DIR/dhcp/<network> */
    char pidfile_arg[4200];   /* "--pid-file=DIR/dnsmasq.pid": how our dnsmasq is recognised */
    struct dhcpd_child *child;/* NULL: no process (or its exit seen) */
    uv_timer_t timer;         /* the restart backoff; SIGKILL after the grace */
    uv_timer_t hup_timer;     /* a SIGHUP waiting for dnsmasq's handler */
    bool timers_open;
    bool usable;              /* its directory exists: files can be written */
    bool want;                /* its bridge exists: dnsmasq should run */
    bool closing_proc;        /* a child's handle is closing: no spawn before */
    unsigned hup_tries;
    unsigned restarts;        /* unexpected exits */
    uint64_t backoff_ms;      /* the last restart delay (0: none yet) */
    char error[256];          /* "" when none */
};

struct dhcpd {
    uv_loop_t *loop;
    struct dhcpd_deps d;
    char dnsmasq[4096];       /* resolved program, "" when not found */
    char dnsmasq_given[4096];
    char user[64];
    bool metadata;
    bool stopping;
    struct dhcpd_net *nets;
    size_t n;
};

/* ---- the pure pieces (dhcpd-internal.h) ---- */

uint64_t dhcpd_backoff_next(uint64_t prev)
{
    if (prev < DHCPD_BACKOFF_MIN_MS)
        return DHCPD_BACKOFF_MIN_MS;
    return prev >= DHCPD_BACKOFF_MAX_MS / 2 ? DHCPD_BACKOFF_MAX_MS : prev * 2;
}

bool dhcpd_cmdline_ours(const char *cmdline, size_t len, const char *pidfile_arg)
{
    const char *p = cmdline, *end = cmdline + len, *base;
    size_t alen = strlen(pidfile_arg);
    bool first = true, found = false;

    if (!len || !alen)
        return false;
    while (p < end) {
        const char *z = memchr(p, '\0', (size_t)(end - p));
        size_t n = z ? (size_t)(z - p) : (size_t)(end - p);
        if (first) {
            const char *slash = memrchr(p, '/', n);
            base = slash ? slash + 1 : p;
            if ((size_t)(p + n - base) != 7 || memcmp(base, "dnsmasq", 7) != 0)
                return false;
            first = false;
        } else if (n == alen && memcmp(p, pidfile_arg, alen) == 0) {
            found = true;
        }
        p += n + 1;
    }
    return found;
}

bool dhcpd_status_catches(const char *status, int sig)
{
    const char *p = strncmp(status, "SigCgt:", 7) == 0 ? status : strstr(status, "\nSigCgt:");
    unsigned long long mask;
    char *end;

    if (!p || sig < 1 || sig > 64)
        return false;
    p += *p == '\n' ? 8 : 7;
    p += strspn(p, " \t");
    errno = 0;
    mask = strtoull(p, &end, 16);
    if (errno || end == p || (*end && *end != '\n'))
        return false;
    return (mask >> (sig - 1)) & 1;
}

int dhcpd_pidfile_parse(const char *text, int *pid)
{
    char buf[32];
    size_t n = strlen(text);
    int64_t v;

    if (n && text[n - 1] == '\n')
        n--;
    if (!n || n >= sizeof(buf))
        return -EINVAL;
    memcpy(buf, text, n);
    buf[n] = '\0';
    if (parse_int64(buf, 1, INT32_MAX, &v) < 0)
        return -EINVAL;
    *pid = (int)v;
    return 0;
}

/* ---- helpers ---- */

static uint64_t mono_ms(void)
{
    return now_mono_ns() / 1000000;
}

static void set_error(struct dhcpd_net *n, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_error(struct dhcpd_net *n, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(n->error, sizeof(n->error), fmt, ap);
    va_end(ap);
}

/* name with no slash: PATH, then /usr/sbin and /sbin (an agent's PATH may lack them). */
static int resolve_program(const char *name, char *out, size_t size)
{
    const char *path = getenv("PATH");
    char dirs[8192];

    if (!name || !*name)
        return -ENOENT;
    if (strchr(name, '/')) {
        if (access(name, X_OK) < 0)
            return -errno;
        return strscpy(out, name, size) < 0 ? -ENAMETOOLONG : 0;
    }
    snprintf(dirs, sizeof(dirs), "%s:/usr/sbin:/sbin", path ? path : "/usr/bin:/bin");
    for (char *save = NULL, *dir = strtok_r(dirs, ":", &save); dir; dir = strtok_r(NULL, ":", &save)) {
        char cand[4096];
        if (!*dir || snprintf(cand, sizeof(cand), "%s/%s", dir, name) >= (int)sizeof(cand))
            continue;
        if (access(cand, X_OK) == 0)
            return strscpy(out, cand, size) < 0 ? -ENAMETOOLONG : 0;
    }
    return -ENOENT;
}

static int read_small(const char *path, char *buf, size_t size, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    size_t off = 0;

    if (fd < 0)
        return -errno;
    while (off < size - 1) {
        ssize_t k = read(fd, buf + off, size - 1 - off);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            break;
        off += (size_t)k;
    }
    close(fd);
    buf[off] = '\0';
    if (len)
        *len = off;
    return 0;
}

static bool bridge_of(const struct dhcpd_net *n, char bridge[16])
{
    return netplug_network_bridge(n->d->d.np, n->cfg->name, bridge) == 0;
}

/* The network's dnsmasq configuration (strings borrowed from n and bridge). */
static void fill_config(const struct dhcpd_net *n, const char *bridge, uint32_t dns[NET_DNS_MAX],
                        struct netplug_dhcp_config *c)
{
    const struct net_config *nc = n->cfg;

    for (size_t i = 0; i < nc->n_dns && i < NET_DNS_MAX; i++)
        dns[i] = htonl(nc->dns_addr[i]);
    *c = (struct netplug_dhcp_config){
        .network = nc->name, .interface = bridge, .dir = n->dir, .gateway = htonl(nc->gw),
        .prefix = nc->prefix, .dns = dns, .n_dns = nc->n_dns, .mtu = (int)nc->mtu,
        .metadata_route = nc->metadata && n->d->metadata, .dnsmasq = n->d->dnsmasq,
        .user = n->d->user[0] ? n->d->user : NULL,
    };
}

static int parse_mac(const char *s, uint8_t mac[6])
{
    unsigned v[6];
    char tail;

    if (sscanf(s, "%2x:%2x:%2x:%2x:%2x:%2x%c", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &tail) != 6)
        return -EINVAL;
    for (int i = 0; i < 6; i++)
        mac[i] = (uint8_t)v[i];
    return 0;
}

/* DIR/hosts from the store's live ports of the network, and DIR/opts when
 * with_opts (they change only with the configuration: written at each start). */
static int write_files(struct dhcpd_net *n, const char *bridge, bool with_opts)
{
    struct netplug_dhcp_config c;
    struct netplug_dhcp_host *hosts = NULL;
    struct np_error ne = {0};
    uint32_t dns[NET_DNS_MAX];
    struct port *ports = NULL;
    char(*owners)[37] = NULL;
    size_t cnt = 0, nh = 0;
    int r;

    fill_config(n, bridge, dns, &c);
    if ((r = store_ports_live(n->d->d.store, &ports, &owners, &cnt)) < 0) {
        set_error(n, "cannot read the ports from the store: %s", strerror(-r));
        return r;
    }
    if (cnt && !(hosts = calloc(cnt, sizeof(*hosts)))) {
        free(ports);
        free(owners);
        return -ENOMEM;
    }
    for (size_t i = 0; i < cnt; i++) {
        struct in_addr a;
        if (strcmp(ports[i].network, n->cfg->name) || !ports[i].ip[0])
            continue;
        if (parse_mac(ports[i].mac, hosts[nh].mac) < 0 || inet_pton(AF_INET, ports[i].ip, &a) != 1)
            continue;
        hosts[nh].ipv4 = a.s_addr;
        nh++;
    }
    r = with_opts ? netplug_dhcp_write_opts(&c, &ne) : 0;
    if (r == 0)
        r = netplug_dhcp_write_hosts(&c, hosts, nh, &ne);
    if (r < 0)
        set_error(n, "%s", ne.msg);
    else
        log_debug("dhcp hosts written", "network=%s hosts=%zu", n->cfg->name, nh);
    free(hosts);
    free(ports);
    free(owners);
    return r;
}

/* ---- a dnsmasq left by an earlier agent ---- */

static int pidfd_open_(int pid)
{
    return (int)syscall(SYS_pidfd_open, pid, 0);
}

static int pidfd_signal(int fd, int sig)
{
    return (int)syscall(SYS_pidfd_send_signal, fd, sig, NULL, 0);
}

static bool pidfd_wait(int fd, int ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int r;

    do
        r = poll(&p, 1, ms);
    while (r < 0 && errno == EINTR);
    return r > 0;
}

/* The pid file names a live process whose command line is ours: stop it
 * (through a pidfd: the process checked is the one signalled). Bounded by
 * DHCPD_STALE_WAIT_MS twice; once per network, before the loop serves. */
static void stale_stop(struct dhcpd_net *n)
{
    char path[4200], text[64], cmd[65536];
    size_t len = 0;
    int pid, fd;

    snprintf(path, sizeof(path), "%s/dnsmasq.pid", n->dir);
    if (read_small(path, text, sizeof(text), NULL) < 0 || dhcpd_pidfile_parse(text, &pid) < 0)
        return;
    if ((fd = pidfd_open_(pid)) < 0) {
        unlink(path); /* nobody has that pid now */
        return;
    }
    snprintf(path, sizeof(path), "/proc/%d/cmdline", pid);
    if (read_small(path, cmd, sizeof(cmd), &len) < 0 || pidfd_wait(fd, 0) ||
        !dhcpd_cmdline_ours(cmd, len, n->pidfile_arg)) {
        log_info("the dhcp pid file names a process that is not our dnsmasq: left alone", "network=%s pid=%d",
                 n->cfg->name, pid);
        close(fd);
        return;
    }
    log_warn("stopping a dnsmasq an earlier agent left running", "network=%s pid=%d", n->cfg->name, pid);
    if (pidfd_signal(fd, SIGTERM) == 0 && !pidfd_wait(fd, DHCPD_STALE_WAIT_MS)) {
        log_warn("the stale dnsmasq ignored SIGTERM: SIGKILL", "network=%s pid=%d", n->cfg->name, pid);
        pidfd_signal(fd, SIGKILL);
        pidfd_wait(fd, DHCPD_STALE_WAIT_MS);
    }
    close(fd);
}

/* ---- the process ---- */

static void child_start(struct dhcpd_net *n);
static void on_timer(uv_timer_t *t);

static void out_closed(uv_handle_t *h)
{
    free(h->data);
}

static void out_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    static char chunk[4096]; /* loop thread only; consumed before the next read */

    (void)h;
    (void)hint;
    *buf = uv_buf_init(chunk, sizeof(chunk));
}

static void out_flush(struct dhcpd_out *o)
{
    if (!o->len)
        return;
    o->line[o->len] = '\0';
    log_info("dnsmasq", "network=%s pid=%d line=%s", o->n->cfg->name, o->pid, o->line);
    o->len = 0;
}

static void out_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct dhcpd_out *o = s->data;

    if (nread < 0) {
        out_flush(o);
        uv_close((uv_handle_t *)s, out_closed);
        return;
    }
    for (ssize_t i = 0; i < nread; i++) {
        char ch = buf->base[i];
        if (ch == '\n') {
            out_flush(o);
        } else if (o->len < sizeof(o->line) - 1) {
            o->line[o->len++] = ch;
        } else {
            out_flush(o); /* an over-long line goes in pieces */
            o->line[o->len++] = ch;
        }
    }
}

static void child_closed(uv_handle_t *h)
{
    struct dhcpd_child *c = h->data;
    struct dhcpd_net *n = c->n;

    n->closing_proc = false;
    free(c);
    if (n->d->stopping && n->timers_open) {
        uv_close((uv_handle_t *)&n->timer, NULL);
        uv_close((uv_handle_t *)&n->hup_timer, NULL);
        n->timers_open = false;
    }
}

static void on_exit_(uv_process_t *p, int64_t status, int sig)
{
    struct dhcpd_child *c = p->data;
    struct dhcpd_net *n = c->n;
    uint64_t ran = mono_ms() - c->started_ms;

    n->child = NULL;
    n->closing_proc = true;
    uv_timer_stop(&n->timer);
    uv_timer_stop(&n->hup_timer);
    uv_close((uv_handle_t *)p, child_closed);
    if (n->d->stopping || c->term_sent || !n->want) {
        log_info("dnsmasq stopped", "network=%s pid=%d status=%lld signal=%d", n->cfg->name, c->pid,
                 (long long)status, sig);
        if (!n->d->stopping && n->want) /* the bridge came back meanwhile: once the handle has closed */
            child_start(n);
        return;
    }
    if (ran >= DHCPD_STABLE_MS)
        n->backoff_ms = 0;
    n->backoff_ms = dhcpd_backoff_next(n->backoff_ms);
    n->restarts++;
    set_error(n, "dnsmasq (pid %d) exited (status %lld, signal %d); restarting", c->pid, (long long)status, sig);
    log_warn("dnsmasq exited; restarting", "network=%s pid=%d status=%lld signal=%d ran_ms=%llu retry_ms=%llu",
             n->cfg->name, c->pid, (long long)status, sig, (unsigned long long)ran,
             (unsigned long long)n->backoff_ms);
    uv_timer_start(&n->timer, on_timer, n->backoff_ms, 0);
}

static void on_timer(uv_timer_t *t)
{
    struct dhcpd_net *n = t->data;

    if (n->child) { /* the grace after SIGTERM is over */
        log_warn("dnsmasq ignored SIGTERM: SIGKILL", "network=%s pid=%d", n->cfg->name, n->child->pid);
        uv_process_kill(&n->child->proc, SIGKILL);
        return;
    }
    child_start(n); /* the restart backoff is over */
}

static void child_term(struct dhcpd_net *n)
{
    struct dhcpd_child *c = n->child;

    if (!c || c->term_sent)
        return;
    c->term_sent = true;
    uv_timer_stop(&n->hup_timer);
    log_info("stopping dnsmasq", "network=%s pid=%d", n->cfg->name, c->pid);
    uv_process_kill(&c->proc, SIGTERM);
    uv_timer_start(&n->timer, on_timer, DHCPD_TERM_GRACE_MS, 0);
}

/* SIGHUP only once dnsmasq catches it (the default action would end it). */
static bool hup_now(struct dhcpd_net *n)
{
    char path[64], status[8192];

    snprintf(path, sizeof(path), "/proc/%d/status", n->child->pid);
    if (read_small(path, status, sizeof(status), NULL) < 0 || !dhcpd_status_catches(status, SIGHUP))
        return false;
    uv_process_kill(&n->child->proc, SIGHUP);
    log_debug("dnsmasq reloads its hosts", "network=%s pid=%d", n->cfg->name, n->child->pid);
    return true;
}

static void on_hup_timer(uv_timer_t *t)
{
    struct dhcpd_net *n = t->data;

    if (!n->child || n->child->term_sent || hup_now(n)) {
        uv_timer_stop(t);
        return;
    }
    if (++n->hup_tries >= DHCPD_HUP_TRIES) {
        log_warn("dnsmasq does not catch SIGHUP: its hosts are not reloaded", "network=%s pid=%d",
                 n->cfg->name, n->child->pid);
        uv_timer_stop(t);
    }
}

static void child_hup(struct dhcpd_net *n)
{
    if (!n->child || n->child->term_sent || hup_now(n))
        return;
    n->hup_tries = 0;
    if (!uv_is_active((uv_handle_t *)&n->hup_timer))
        uv_timer_start(&n->hup_timer, on_hup_timer, DHCPD_HUP_RETRY_MS, DHCPD_HUP_RETRY_MS);
}

static void child_start(struct dhcpd_net *n)
{
    struct dhcpd *d = n->d;
    struct netplug_dhcp_config cfg;
    struct np_error ne = {0};
    struct dhcpd_child *c;
    struct dhcpd_out *o;
    uv_process_options_t po = {0};
    uv_stdio_container_t stdio[3];
    uint32_t dns[NET_DNS_MAX];
    char bridge[16], **argv = NULL;
    int r;

    if (n->child || d->stopping || !n->want || !n->usable)
        return;
    if (n->closing_proc || uv_is_active((uv_handle_t *)&n->timer)) {
        if (!uv_is_active((uv_handle_t *)&n->timer))
            uv_timer_start(&n->timer, on_timer, 0, 0); /* after the old handle has closed */
        return;
    }
    if (!d->dnsmasq[0]) {
        set_error(n, "dnsmasq: '%s' not found (dhcp.dnsmasq)", d->dnsmasq_given);
        return;
    }
    if (!bridge_of(n, bridge) || write_files(n, bridge, true) < 0)
        return;
    fill_config(n, bridge, dns, &cfg);
    if (netplug_dhcp_argv(&cfg, &argv, &ne) < 0) {
        set_error(n, "%s", ne.msg);
        return;
    }
    c = calloc(1, sizeof(*c));
    o = calloc(1, sizeof(*o));
    if (!c || !o) {
        free(c);
        free(o);
        netplug_dhcp_argv_free(argv);
        set_error(n, "out of memory");
        return;
    }
    c->n = o->n = n;
    c->proc.data = c;
    o->pipe.data = o;
    uv_pipe_init(d->loop, &o->pipe, 0);
    stdio[0] = (uv_stdio_container_t){.flags = UV_IGNORE};
    stdio[1] = (uv_stdio_container_t){.flags = UV_IGNORE};
    /* --log-facility=-: its log on stderr */
    stdio[2] = (uv_stdio_container_t){.flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE,
                                      .data.stream = (uv_stream_t *)&o->pipe};
    po.file = argv[0];
    po.args = argv;
    po.exit_cb = on_exit_;
    po.stdio = stdio;
    po.stdio_count = 3;
    r = uv_spawn(d->loop, &c->proc, &po);
    netplug_dhcp_argv_free(argv);
    if (r < 0) {
        set_error(n, "cannot start %s: %s", d->dnsmasq, uv_strerror(r));
        log_error("cannot start dnsmasq", "network=%s program=%s error=%s", n->cfg->name, d->dnsmasq,
                  uv_strerror(r));
        n->closing_proc = true;
        uv_close((uv_handle_t *)&c->proc, child_closed);
        uv_close((uv_handle_t *)&o->pipe, out_closed);
        if (r != UV_ENOENT && r != UV_EACCES) {
            n->backoff_ms = dhcpd_backoff_next(n->backoff_ms);
            uv_timer_start(&n->timer, on_timer, n->backoff_ms, 0);
        }
        return;
    }
    c->pid = o->pid = c->proc.pid;
    c->started_ms = mono_ms();
    n->child = c;
    n->error[0] = '\0';
    uv_read_start((uv_stream_t *)&o->pipe, out_alloc, out_read);
    log_info("dnsmasq started", "network=%s bridge=%s pid=%d dir=%s", n->cfg->name, bridge, c->pid, n->dir);
}

/* ---- the object ---- */

static int make_dirs(struct dhcpd_net *n, const char *state_dir)
{
    char top[4200];

    snprintf(top, sizeof(top), "%s/dhcp", state_dir);
    if (mkdir(top, 0700) < 0 && errno != EEXIST)
        return -errno;
    if (snprintf(n->dir, sizeof(n->dir), "%s/%s", top, n->cfg->name) >= (int)sizeof(n->dir))
        return -ENAMETOOLONG;
    if (mkdir(n->dir, 0700) < 0 && errno != EEXIST)
        return -errno;
    if (chmod(n->dir, 0700) < 0)
        return -errno;
    snprintf(n->pidfile_arg, sizeof(n->pidfile_arg), "--pid-file=%s/dnsmasq.pid", n->dir);
    return 0;
}

int dhcpd_new(uv_loop_t *loop, const struct dhcpd_deps *deps, const struct dhcpd_config *cfg,
              struct dhcpd **ret)
{
    struct dhcpd *d;
    size_t k = 0;
    int r;

    if (!deps->store || !deps->np || !cfg->state_dir)
        return -EINVAL;
    if (!(d = calloc(1, sizeof(*d))))
        return -ENOMEM;
    d->loop = loop;
    d->d = *deps;
    d->metadata = cfg->metadata;
    strscpy(d->dnsmasq_given, cfg->dnsmasq && *cfg->dnsmasq ? cfg->dnsmasq : "dnsmasq", sizeof(d->dnsmasq_given));
    if (cfg->user && strscpy(d->user, cfg->user, sizeof(d->user)) < 0) {
        free(d);
        return -EINVAL;
    }
    for (size_t i = 0; i < deps->n_networks; i++)
        d->n += deps->networks[i].dhcp;
    if (d->n && !(d->nets = calloc(d->n, sizeof(*d->nets)))) {
        free(d);
        return -ENOMEM;
    }
    if (d->n && (r = resolve_program(d->dnsmasq_given, d->dnsmasq, sizeof(d->dnsmasq))) < 0) {
        d->dnsmasq[0] = '\0';
        log_error("dnsmasq not found: dhcp networks get no DHCP server", "dnsmasq=%s error=%s",
                  d->dnsmasq_given, strerror(-r));
    }
    for (size_t i = 0; i < deps->n_networks; i++) {
        struct dhcpd_net *n;
        if (!deps->networks[i].dhcp)
            continue;
        n = &d->nets[k++];
        n->d = d;
        n->cfg = &deps->networks[i];
        uv_timer_init(loop, &n->timer);
        uv_timer_init(loop, &n->hup_timer);
        n->timer.data = n->hup_timer.data = n;
        n->timers_open = true;
        if ((r = make_dirs(n, cfg->state_dir)) < 0) {
            set_error(n, "cannot make %s: %s", n->dir[0] ? n->dir : "the dhcp directory", strerror(-r));
            log_error("dhcp directory", "network=%s error=%s", n->cfg->name, n->error);
            continue;
        }
        n->usable = true;
        if (!d->dnsmasq[0])
            set_error(n, "dnsmasq: '%s' not found (dhcp.dnsmasq)", d->dnsmasq_given);
        else if (!n->cfg->gw)
            set_error(n, "network %s: gateway: required for dhcp", n->cfg->name);
        if (n->error[0] && d->dnsmasq[0])
            log_error("dhcp cannot work on the network", "network=%s error=%s", n->cfg->name, n->error);
        stale_stop(n);
    }
    *ret = d;
    return 0;
}

static void refresh_one(struct dhcpd_net *n)
{
    char bridge[16] = "";
    bool exists = bridge_of(n, bridge) && if_nametoindex(bridge) != 0;

    if (!n->usable || n->d->stopping)
        return;
    if (!exists) {
        n->want = false;
        child_term(n);
        /* the hosts file stays current for the next start */
        if (n->d->dnsmasq[0] && n->cfg->gw && bridge[0])
            write_files(n, bridge, false);
        return;
    }
    n->want = true;
    if (!n->child) {
        child_start(n);
    } else if (n->child->term_sent) {
        /* stopping: on_exit_ starts it again, n->want being set */
    } else if (write_files(n, bridge, false) == 0) {
        n->error[0] = '\0'; /* running, with the current hosts */
        child_hup(n);
    }
}

void dhcpd_refresh(struct dhcpd *d, const char *network)
{
    for (size_t i = 0; d && i < d->n; i++)
        if (!network || !strcmp(d->nets[i].cfg->name, network))
            refresh_one(&d->nets[i]);
}

void dhcpd_stop(struct dhcpd *d)
{
    if (!d || d->stopping)
        return;
    d->stopping = true;
    for (size_t i = 0; i < d->n; i++) {
        struct dhcpd_net *n = &d->nets[i];
        n->want = false;
        if (n->child) {
            child_term(n); /* child_closed() closes the timers */
        } else if (!n->closing_proc && n->timers_open) {
            uv_close((uv_handle_t *)&n->timer, NULL);
            uv_close((uv_handle_t *)&n->hup_timer, NULL);
            n->timers_open = false;
        }
    }
}

void dhcpd_free(struct dhcpd *d)
{
    if (!d)
        return;
    free(d->nets);
    free(d);
}

json_t *dhcpd_network_json(const struct dhcpd *d, const char *network)
{
    for (size_t i = 0; d && i < d->n; i++) {
        const struct dhcpd_net *n = &d->nets[i];
        bool running = n->child && !n->child->term_sent;
        if (strcmp(n->cfg->name, network))
            continue;
        return json_pack("{s:b, s:b, s:o, s:I, s:o}", "enabled", 1, "running", running, "pid",
                         running ? json_integer(n->child->pid) : json_null(), "restarts",
                         (json_int_t)n->restarts, "error", n->error[0] ? json_string(n->error) : json_null());
    }
    return NULL;
}
