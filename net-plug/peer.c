/* peer.c: who is behind a source address on a network's bridge, for the
 * metadata service: the neighbour entry of the IPv4 address on the bridge (its
 * MAC), then the bridge's forwarding database entry of that MAC (the port it
 * was learnt on). Anti-spoofing is what makes the pair trustworthy: the caller
 * also checks netplug_port_filtered() on the device.
 *
 * It runs on the agent's loop for every metadata connection, so it asks the
 * kernel for the two entries only (non-dump RTM_GETNEIGH: `ip neigh get ADDR
 * dev BR`, `bridge fdb get MAC br BR`), never dumps the tables: four small
 * requests (the bridge, the neighbour, the FDB entry, the port's name) whose
 * cost does not grow with the neighbours or ports on the host. They go through
 * a netlink socket of its own, opened with the handle in its namespace, with a
 * receive timeout (NP_PEER_TIMEOUT_MS) and its own lock (np->peer_lock), so a
 * plug holding np->lock on a worker never holds the loop up. A bridge with VLAN
 * filtering learns MACs per VLAN, which the get (VLAN 0) does not see: there
 * the FDB is read by a dump of that bridge's entries only. */
#include <linux/if_bridge.h>
#include <linux/if_link.h>
#include <linux/neighbour.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/util.h"
#include "net-plug/netplug-internal.h"

#define NUD_USABLE (NUD_REACHABLE | NUD_STALE | NUD_DELAY | NUD_PROBE | NUD_PERMANENT | NUD_NOARP)
#define PEER_BUF 32768 /* the most the kernel puts in one read of a dump */

#ifndef NETLINK_GET_STRICT_CHK
#define NETLINK_GET_STRICT_CHK 12
#endif

int np_nl_open(int protocol)
{
    struct timeval tv = {.tv_sec = NP_PEER_TIMEOUT_MS / 1000, .tv_usec = (NP_PEER_TIMEOUT_MS % 1000) * 1000};
    struct sockaddr_nl sa = {.nl_family = AF_NETLINK};
    int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, protocol);

    if (fd < 0)
        return -errno;
    if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0 ||
        bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        int e = -errno;
        close(fd);
        return e;
    }
    return fd;
}

int np_peer_open(struct netplug *np)
{
    int one = 1, fd = np_nl_open(NETLINK_ROUTE);

    if (fd < 0)
        return fd;
    /* strict checking of requests (the kernel then filters the VLAN-filtering
     * fallback's dump by bridge); older kernels without it still answer gets */
    (void)setsockopt(fd, SOL_NETLINK, NETLINK_GET_STRICT_CHK, &one, sizeof(one));
    np->peer_fd = fd;
    return 0;
}

/* ---- one request, its answers ---- */

struct req {
    struct nlmsghdr h;
    union {
        struct ifinfomsg ifi;
        struct ndmsg nd;
    };
    char attrs[64];
};

static void put_attr(struct req *q, unsigned short type, const void *data, size_t len)
{
    struct rtattr *a = (struct rtattr *)((char *)q + NLMSG_ALIGN(q->h.nlmsg_len));

    a->rta_type = type;
    a->rta_len = (unsigned short)RTA_LENGTH(len);
    memcpy(RTA_DATA(a), data, len);
    q->h.nlmsg_len = NLMSG_ALIGN(q->h.nlmsg_len) + RTA_ALIGN(a->rta_len);
}

static void req_init(struct req *q, unsigned short type, size_t body, bool dump)
{
    memset(q, 0, sizeof(*q));
    q->h.nlmsg_len = (unsigned)NLMSG_LENGTH(body);
    q->h.nlmsg_type = type;
    q->h.nlmsg_flags = NLM_F_REQUEST | (dump ? NLM_F_DUMP : 0);
}

/* fn is called for each answer; it returns 1 when it has what it wanted (the
 * rest of a dump is still read), 0 when the message is not it, or -errno. Returns fn's 1, -ENOENT when nothing matched or the kernel said
 * ENOENT/ENODEV, -ETIMEDOUT when the kernel did not answer in time, -errno. */
static int transact(struct netplug *np, struct req *q, int (*fn)(const struct nlmsghdr *h, void *arg),
                    void *arg)
{
    static _Thread_local char buf[PEER_BUF] __attribute__((aligned(NLMSG_ALIGNTO)));
    struct sockaddr_nl to = {.nl_family = AF_NETLINK};
    bool dump = q->h.nlmsg_flags & NLM_F_DUMP;
    int found = 0;

    q->h.nlmsg_seq = ++np->peer_seq;
    if (sendto(np->peer_fd, q, q->h.nlmsg_len, 0, (struct sockaddr *)&to, sizeof(to)) < 0)
        return errno == EAGAIN ? -ETIMEDOUT : -errno;
    for (;;) {
        struct iovec iov = {.iov_base = buf, .iov_len = sizeof(buf)};
        struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
        ssize_t n = recvmsg(np->peer_fd, &mh, 0);

        if (n < 0) {
            if (errno == EINTR)
                continue;
            return errno == EAGAIN || errno == EWOULDBLOCK ? -ETIMEDOUT : -errno;
        }
        if (mh.msg_flags & MSG_TRUNC)
            return -EMSGSIZE;
        for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, (size_t)n); h = NLMSG_NEXT(h, n)) {
            if (h->nlmsg_seq != q->h.nlmsg_seq)
                continue; /* a late answer to a request that timed out */
            if (h->nlmsg_type == NLMSG_ERROR) {
                const struct nlmsgerr *e = NLMSG_DATA(h);
                if (h->nlmsg_len < NLMSG_LENGTH(sizeof(*e)))
                    return -EIO;
                if (e->error == 0)
                    return found ? found : -ENOENT;
                return e->error == -ENOENT || e->error == -ENODEV ? -ENOENT : e->error;
            }
            if (h->nlmsg_type == NLMSG_DONE)
                return found ? found : -ENOENT;
            if (found)
                continue;
            int r = fn(h, arg);
            if (r < 0)
                return r;
            if (r > 0)
                found = r;
            if (!dump) /* a get has one answer, and no ACK after it */
                return found ? found : -ENOENT;
        }
    }
}

/* the attributes of a message after its fixed header of size hdr */
static void parse_attrs(const struct nlmsghdr *h, size_t hdr, const struct rtattr **tb, int max)
{
    const struct rtattr *a = (const struct rtattr *)((const char *)NLMSG_DATA(h) + NLMSG_ALIGN(hdr));
    int len = (int)h->nlmsg_len - (int)NLMSG_LENGTH(hdr);

    memset(tb, 0, sizeof(*tb) * (size_t)(max + 1));
    for (; len > 0 && RTA_OK(a, len); a = RTA_NEXT(a, len))
        if (a->rta_type <= max && !tb[a->rta_type])
            tb[a->rta_type] = a;
}

static void nested(const struct rtattr *in, const struct rtattr **tb, int max)
{
    const struct rtattr *a = RTA_DATA(in);
    int len = (int)RTA_PAYLOAD(in);

    memset(tb, 0, sizeof(*tb) * (size_t)(max + 1));
    for (; len > 0 && RTA_OK(a, len); a = RTA_NEXT(a, len))
        if (a->rta_type <= max && !tb[a->rta_type])
            tb[a->rta_type] = a;
}

/* ---- links ---- */

struct link_ans {
    int ifindex;
    bool bridge, vlan_filtering;
    char name[IFNAMSIZ];
};

static int on_link(const struct nlmsghdr *h, void *arg)
{
    struct link_ans *l = arg;
    const struct rtattr *tb[IFLA_MAX + 1], *li[IFLA_INFO_MAX + 1], *bd[IFLA_BR_MAX + 1];
    const struct ifinfomsg *ifi = NLMSG_DATA(h);

    if (h->nlmsg_type != RTM_NEWLINK || h->nlmsg_len < NLMSG_LENGTH(sizeof(*ifi)))
        return 0;
    parse_attrs(h, sizeof(*ifi), tb, IFLA_MAX);
    l->ifindex = ifi->ifi_index;
    if (tb[IFLA_IFNAME] && RTA_PAYLOAD(tb[IFLA_IFNAME]) <= IFNAMSIZ)
        strscpy(l->name, RTA_DATA(tb[IFLA_IFNAME]), sizeof(l->name)); /* NUL-terminated by the kernel */
    if (tb[IFLA_LINKINFO]) {
        nested(tb[IFLA_LINKINFO], li, IFLA_INFO_MAX);
        l->bridge = li[IFLA_INFO_KIND] && RTA_PAYLOAD(li[IFLA_INFO_KIND]) >= 6 &&
                    memcmp(RTA_DATA(li[IFLA_INFO_KIND]), "bridge", 6) == 0;
        if (l->bridge && li[IFLA_INFO_DATA]) {
            nested(li[IFLA_INFO_DATA], bd, IFLA_BR_MAX);
            l->vlan_filtering = bd[IFLA_BR_VLAN_FILTERING] && RTA_PAYLOAD(bd[IFLA_BR_VLAN_FILTERING]) >= 1 &&
                                *(const uint8_t *)RTA_DATA(bd[IFLA_BR_VLAN_FILTERING]);
        }
    }
    return 1;
}

static int get_link(struct netplug *np, const char *name, int ifindex, struct link_ans *out)
{
    struct req q;
    uint32_t mask = RTEXT_FILTER_SKIP_STATS;

    memset(out, 0, sizeof(*out));
    req_init(&q, RTM_GETLINK, sizeof(q.ifi), false);
    q.ifi.ifi_family = AF_UNSPEC;
    q.ifi.ifi_index = ifindex;
    if (name)
        put_attr(&q, IFLA_IFNAME, name, strlen(name) + 1);
    put_attr(&q, IFLA_EXT_MASK, &mask, sizeof(mask));
    int r = transact(np, &q, on_link, out);
    return r < 0 ? r : 0;
}

/* ---- the neighbour entry of the IP on the bridge ---- */

struct neigh_ans {
    int ifindex;
    uint32_t ip;
    uint8_t mac[6];
};

static int on_neigh(const struct nlmsghdr *h, void *arg)
{
    struct neigh_ans *a = arg;
    const struct ndmsg *nd = NLMSG_DATA(h);
    const struct rtattr *tb[NDA_MAX + 1];

    if (h->nlmsg_type != RTM_NEWNEIGH || h->nlmsg_len < NLMSG_LENGTH(sizeof(*nd)))
        return 0;
    parse_attrs(h, sizeof(*nd), tb, NDA_MAX);
    if (nd->ndm_family != AF_INET || nd->ndm_ifindex != a->ifindex || !tb[NDA_DST] ||
        RTA_PAYLOAD(tb[NDA_DST]) != 4 || memcmp(RTA_DATA(tb[NDA_DST]), &a->ip, 4) != 0)
        return 0;
    /* an entry being resolved or failed is not an answer */
    if (!(nd->ndm_state & NUD_USABLE) || !tb[NDA_LLADDR] || RTA_PAYLOAD(tb[NDA_LLADDR]) != 6)
        return -ENOENT;
    memcpy(a->mac, RTA_DATA(tb[NDA_LLADDR]), 6);
    return 1;
}

static int find_mac(struct netplug *np, int bridge, uint32_t ip, uint8_t mac[6])
{
    struct neigh_ans a = {.ifindex = bridge, .ip = ip};
    struct req q;
    int r;

    req_init(&q, RTM_GETNEIGH, sizeof(q.nd), false);
    q.nd.ndm_family = AF_INET;
    q.nd.ndm_ifindex = bridge;
    put_attr(&q, NDA_DST, &ip, 4);
    if ((r = transact(np, &q, on_neigh, &a)) < 0)
        return r;
    memcpy(mac, a.mac, 6);
    return 0;
}

/* ---- the FDB entry of the MAC on the bridge ---- */

struct fdb_ans {
    int bridge;
    const uint8_t *mac;
    int port;
};

static int on_fdb(const struct nlmsghdr *h, void *arg)
{
    struct fdb_ans *a = arg;
    const struct ndmsg *nd = NLMSG_DATA(h);
    const struct rtattr *tb[NDA_MAX + 1];

    if (h->nlmsg_type != RTM_NEWNEIGH || h->nlmsg_len < NLMSG_LENGTH(sizeof(*nd)))
        return 0;
    parse_attrs(h, sizeof(*nd), tb, NDA_MAX);
    if (nd->ndm_family != AF_BRIDGE || !tb[NDA_LLADDR] || RTA_PAYLOAD(tb[NDA_LLADDR]) != 6 ||
        memcmp(RTA_DATA(tb[NDA_LLADDR]), a->mac, 6) != 0)
        return 0;
    /* the bridge's own entries (a port's own MAC, "permanent") are not the guest */
    if (!tb[NDA_MASTER] || RTA_PAYLOAD(tb[NDA_MASTER]) != 4 || *(const uint32_t *)RTA_DATA(tb[NDA_MASTER]) != (uint32_t)a->bridge ||
        nd->ndm_ifindex == a->bridge || (nd->ndm_state & NUD_PERMANENT))
        return 0;
    a->port = nd->ndm_ifindex;
    return 1;
}

static int find_port(struct netplug *np, int bridge, bool vlan_filtering, const uint8_t mac[6], int *ifindex)
{
    struct fdb_ans a = {.bridge = bridge, .mac = mac};
    uint32_t br = (uint32_t)bridge;
    struct req q;
    int r;

    req_init(&q, RTM_GETNEIGH, sizeof(q.nd), vlan_filtering);
    q.nd.ndm_family = AF_BRIDGE;
    put_attr(&q, NDA_MASTER, &br, sizeof(br));
    if (!vlan_filtering)
        put_attr(&q, NDA_LLADDR, mac, 6);
    if ((r = transact(np, &q, on_fdb, &a)) < 0)
        return r;
    *ifindex = a.port;
    return 0;
}

int netplug_peer(struct netplug *np, const char *network, uint32_t src_ipv4, uint8_t mac[6], char dev[16])
{
    struct link_ans br, port;
    struct np_net *n;
    uint8_t m[6];
    int idx, r;

    if (!network)
        return -ENOENT;
    /* np->nets is linked under both locks, so peer_lock alone reads it */
    pthread_mutex_lock(&np->peer_lock);
    if (np->peer_fd < 0) {
        r = -EBADF;
        goto out;
    }
    if (!(n = np_net_find(np, network))) {
        r = -ENOENT;
        goto out;
    }
    if ((r = get_link(np, n->bridge, 0, &br)) < 0 || (r = find_mac(np, br.ifindex, src_ipv4, m)) < 0 ||
        (r = find_port(np, br.ifindex, br.vlan_filtering, m, &idx)) < 0 || (r = get_link(np, NULL, idx, &port)) < 0)
        goto out;
    if (!port.name[0]) {
        r = -ENOENT;
        goto out;
    }
    memcpy(mac, m, 6);
    strscpy(dev, port.name, 16);
    r = 0;
out:
    pthread_mutex_unlock(&np->peer_lock);
    return r;
}
