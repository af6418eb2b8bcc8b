/* dhcp.c: dnsmasq's argv and files for one network (net-plug/dhcp.h). */
#include <arpa/inet.h>
#include <fcntl.h>
#include <stdarg.h>
#include <sys/stat.h>

#include "common/util.h"
#include "net-plug/dhcp.h"
#include "net-plug/netplug-internal.h"

static int check_config(const struct netplug_dhcp_config *c, struct np_error *err)
{
    const char *nm = c->network ? c->network : "?";

    if (!c->dir || c->dir[0] != '/')
        return np_fail(err, EINVAL, "network %s: dhcp: state directory: not an absolute path", nm);
    if (!c->interface || !*c->interface || strlen(c->interface) >= IFNAMSIZ)
        return np_fail(err, EINVAL, "network %s: dhcp: interface: 1..15 characters", nm);
    if (!c->gateway)
        return np_fail(err, EINVAL, "network %s: gateway: required for dhcp", nm);
    if (c->prefix < 1 || c->prefix > 30)
        return np_fail(err, EINVAL, "network %s: cidr: prefix not in 1..30 for dhcp", nm);
    if (c->mtu != 0 && (c->mtu < 68 || c->mtu > 65535))
        return np_fail(err, EINVAL, "network %s: mtu: not in 68..65535", nm);
    if (c->lease_secs < 0)
        return np_fail(err, EINVAL, "network %s: dhcp: lease time: negative", nm);
    return 0;
}

static void ipstr(uint32_t ip, char out[INET_ADDRSTRLEN])
{
    struct in_addr a = {.s_addr = ip};
    inet_ntop(AF_INET, &a, out, INET_ADDRSTRLEN);
}

/* path = DIR/name; the content goes to DIR/.name.tmp, fsync, rename. */
static int write_atomic(const struct netplug_dhcp_config *c, const char *name, const char *content,
                        struct np_error *err)
{
    char path[4096], tmp[4096];
    size_t len = strlen(content), off = 0;
    int fd;

    if (snprintf(path, sizeof(path), "%s/%s", c->dir, name) >= (int)sizeof(path) ||
        snprintf(tmp, sizeof(tmp), "%s/.%s.tmp", c->dir, name) >= (int)sizeof(tmp))
        return np_fail(err, ENAMETOOLONG, "network %s: dhcp: %s: path too long", c->network, name);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return np_fail(err, errno, "network %s: dhcp: %s: %s", c->network, tmp, strerror(errno));
    while (off < len) {
        ssize_t k = write(fd, content + off, len - off);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0) {
            int e = errno;
            close(fd);
            unlink(tmp);
            return np_fail(err, e, "network %s: dhcp: %s: %s", c->network, tmp, strerror(e));
        }
        off += (size_t)k;
    }
    if (fsync(fd) < 0 || close(fd) < 0) {
        int e = errno;
        unlink(tmp);
        return np_fail(err, e, "network %s: dhcp: %s: %s", c->network, tmp, strerror(e));
    }
    if (rename(tmp, path) < 0) {
        int e = errno;
        unlink(tmp);
        return np_fail(err, e, "network %s: dhcp: %s: %s", c->network, path, strerror(e));
    }
    return 0;
}

struct buf {
    char *p;
    size_t len, cap;
    bool oom;
};

static void add(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void add(struct buf *b, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (b->oom)
        return;
    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || b->len + (size_t)n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (n >= 0 && cap < b->len + (size_t)n + 1)
            cap *= 2;
        char *p = n < 0 ? NULL : realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

int netplug_dhcp_write_opts(const struct netplug_dhcp_config *c, struct np_error *err)
{
    struct buf b = {0};
    char gw[INET_ADDRSTRLEN], ip[INET_ADDRSTRLEN];
    int r;

    if ((r = check_config(c, err)) < 0)
        return r;
    ipstr(c->gateway, gw);
    add(&b, "# written by compute-agent for network %s\n", c->network ? c->network : "");
    add(&b, "option:router,%s\n", gw);
    if (c->n_dns > 0) {
        add(&b, "option:dns-server");
        for (size_t i = 0; i < c->n_dns; i++) {
            ipstr(c->dns[i], ip);
            add(&b, ",%s", ip);
        }
        add(&b, "\n");
    }
    if (c->mtu > 0)
        add(&b, "option:mtu,%d\n", c->mtu);
    /* with option 121 a client ignores the router option (RFC 3442): the default route goes in it too */
    if (c->metadata_route)
        add(&b, "option:classless-static-route,%s/32,%s,0.0.0.0/0,%s\n", NP_METADATA_ADDR, gw, gw);
    if (b.oom) {
        free(b.p);
        return np_fail(err, ENOMEM, "network %s: dhcp: out of memory", c->network);
    }
    r = write_atomic(c, "opts", b.p, err);
    free(b.p);
    return r;
}

static bool hostname_ok(const char *h)
{
    size_t n = strlen(h);

    if (n < 1 || n > 63 || h[0] == '-' || h[n - 1] == '-')
        return false;
    for (; *h; h++)
        if (!((*h >= 'a' && *h <= 'z') || (*h >= 'A' && *h <= 'Z') || (*h >= '0' && *h <= '9') || *h == '-'))
            return false;
    return true;
}

int netplug_dhcp_write_hosts(const struct netplug_dhcp_config *c, const struct netplug_dhcp_host *hosts,
                             size_t n, struct np_error *err)
{
    struct buf b = {0};
    char ip[INET_ADDRSTRLEN];
    uint32_t mask;
    int r;

    if ((r = check_config(c, err)) < 0)
        return r;
    mask = htonl(~0u << (32 - c->prefix));
    add(&b, "# written by compute-agent for network %s\n", c->network ? c->network : "");
    for (size_t i = 0; i < n; i++) {
        const struct netplug_dhcp_host *h = &hosts[i];
        const uint8_t *m = h->mac;
        if ((m[0] & 1) || !(m[0] | m[1] | m[2] | m[3] | m[4] | m[5]))
            r = np_fail(err, EINVAL, "network %s: hosts[%zu].mac: not a unicast MAC address", c->network, i);
        else if (!h->ipv4 || (h->ipv4 & mask) != (c->gateway & mask) || h->ipv4 == c->gateway ||
                 (h->ipv4 & ~mask) == ~mask || (h->ipv4 & ~mask) == 0)
            r = np_fail(err, EINVAL, "network %s: hosts[%zu].ip: not a host address of the network's cidr "
                                     "(or the gateway)", c->network, i);
        else if (h->hostname && !hostname_ok(h->hostname))
            r = np_fail(err, EINVAL, "network %s: hosts[%zu].hostname: 1..63 of [A-Za-z0-9-]", c->network, i);
        for (size_t j = 0; j < i && r == 0; j++) {
            if (memcmp(hosts[j].mac, h->mac, 6) == 0)
                r = np_fail(err, EINVAL, "network %s: hosts[%zu].mac: the same as hosts[%zu]'s", c->network, i, j);
            else if (hosts[j].ipv4 == h->ipv4)
                r = np_fail(err, EINVAL, "network %s: hosts[%zu].ip: the same as hosts[%zu]'s", c->network, i, j);
        }
        if (r < 0) {
            free(b.p);
            return r;
        }
        ipstr(h->ipv4, ip);
        add(&b, "%02x:%02x:%02x:%02x:%02x:%02x,%s", m[0], m[1], m[2], m[3], m[4], m[5], ip);
        if (h->hostname)
            add(&b, ",%s", h->hostname);
        add(&b, "\n");
    }
    if (b.oom) {
        free(b.p);
        return np_fail(err, ENOMEM, "network %s: dhcp: out of memory", c->network);
    }
    r = write_atomic(c, "hosts", b.p, err);
    free(b.p);
    return r;
}

void netplug_dhcp_argv_free(char **argv)
{
    if (!argv)
        return;
    for (char **a = argv; *a; a++)
        free(*a);
    free(argv);
}

int netplug_dhcp_argv(const struct netplug_dhcp_config *c, char ***out, struct np_error *err)
{
    char net[INET_ADDRSTRLEN], mask[INET_ADDRSTRLEN];
    char *v[24];
    size_t n = 0;
    uint32_t m;
    int r;

    if ((r = check_config(c, err)) < 0)
        return r;
    m = htonl(~0u << (32 - c->prefix));
    ipstr(c->gateway & m, net);
    ipstr(m, mask);
#define ARG(...) (n < ARRAY_SIZE(v) - 1 && asprintf(&v[n], __VA_ARGS__) >= 0 ? (void)n++ : (void)(r = -ENOMEM))
    ARG("%s", c->dnsmasq ? c->dnsmasq : "dnsmasq");
    ARG("--keep-in-foreground");
    ARG("--conf-file=/dev/null");
    ARG("--port=0"); /* no DNS */
    ARG("--no-resolv");
    ARG("--no-hosts");
    ARG("--bind-interfaces");
    ARG("--interface=%s", c->interface);
    ARG("--except-interface=lo");
    ARG("--dhcp-range=%s,static,%s,%d", net, mask, c->lease_secs ? c->lease_secs : 86400);
    ARG("--dhcp-hostsfile=%s/hosts", c->dir);
    ARG("--dhcp-optsfile=%s/opts", c->dir);
    ARG("--dhcp-leasefile=%s/leases", c->dir);
    ARG("--pid-file=%s/dnsmasq.pid", c->dir);
    ARG("--dhcp-authoritative");
    ARG("--dhcp-no-override");
    ARG("--log-facility=-");
    if (c->user)
        ARG("--user=%s", c->user);
#undef ARG
    v[n] = NULL;
    if (r < 0) {
        for (size_t i = 0; i < n; i++)
            free(v[i]);
        return np_fail(err, ENOMEM, "network %s: dhcp: out of memory", c->network);
    }
    char **a = calloc(n + 1, sizeof(*a));
    if (!a) {
        for (size_t i = 0; i < n; i++)
            free(v[i]);
        return np_fail(err, ENOMEM, "network %s: dhcp: out of memory", c->network);
    }
    memcpy(a, v, (n + 1) * sizeof(*a));
    *out = a;
    return 0;
}
