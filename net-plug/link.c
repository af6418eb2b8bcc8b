/* link.c: the netlink side of net-plug (libnl-route-3): links, bridges, VXLAN,
 * VLAN, veth pairs, taps (/dev/net/tun ioctls), addresses. Every function
 * returns 0 or -errno; the caller words the error for the user. Called with
 * np->lock held. */
#include <ifaddrs.h>
#include <linux/if_packet.h>
#include <fcntl.h>
#include <linux/if_bridge.h>
#include <linux/if_tun.h>
#include <linux/neighbour.h>
#include <linux/rtnetlink.h>
#include <sched.h>
#include <time.h>
#include <sys/ioctl.h>

#include <netlink/netlink.h>
#include <netlink/route/addr.h>
#include <netlink/route/link.h>
#include <netlink/route/link/bridge.h>
#include <netlink/route/link/veth.h>
#include <netlink/route/link/vlan.h>
#include <netlink/route/link/vxlan.h>

#include "common/util.h"
#include "net-plug/netplug-internal.h"

static void link_putp(struct rtnl_link **l)
{
    if (*l)
        rtnl_link_put(*l);
}
#define _cleanup_link_ _cleanup_(link_putp)

static void fill_info(struct rtnl_link *l, struct np_linkinfo *li)
{
    const char *kind = rtnl_link_get_type(l);
    const char *alias = rtnl_link_get_ifalias(l);
    struct nl_addr *a = rtnl_link_get_addr(l);

    memset(li, 0, sizeof(*li));
    li->ifindex = rtnl_link_get_ifindex(l);
    li->master = rtnl_link_get_master(l);
    li->mtu = rtnl_link_get_mtu(l);
    li->flags = rtnl_link_get_flags(l);
    li->group = rtnl_link_get_group(l);
    if (kind)
        strscpy(li->kind, kind, sizeof(li->kind));
    if (alias)
        strscpy(li->alias, alias, sizeof(li->alias));
    if (a && nl_addr_get_len(a) == 6)
        memcpy(li->addr, nl_addr_get_binary_addr(a), 6);
}

static int link_get_raw(struct netplug *np, int ifindex, const char *name, struct rtnl_link **out)
{
    int r = rtnl_link_get_kernel(np->sk, ifindex, name, out);

    if (r == -NLE_OBJ_NOTFOUND || r == -NLE_NODEV)
        return -ENODEV;
    return r < 0 ? np_nlerr(r) : 0;
}

int np_link_get(struct netplug *np, const char *name, struct np_linkinfo *li)
{
    _cleanup_link_ struct rtnl_link *l = NULL;
    int r = link_get_raw(np, 0, name, &l);

    if (r < 0)
        return r;
    fill_info(l, li);
    return 0;
}

int np_link_name(struct netplug *np, int ifindex, char name[IFNAMSIZ])
{
    _cleanup_link_ struct rtnl_link *l = NULL;
    int r = link_get_raw(np, ifindex, NULL, &l);

    if (r < 0)
        return r;
    return strscpy(name, rtnl_link_get_name(l), IFNAMSIZ) < 0 ? -ENAMETOOLONG : 0;
}

int np_link_delete(struct netplug *np, const char *name)
{
    _cleanup_link_ struct rtnl_link *l = rtnl_link_alloc();
    int r;

    if (!l)
        return -ENOMEM;
    rtnl_link_set_name(l, name);
    r = rtnl_link_delete(np->sk, l);
    if (r == -NLE_OBJ_NOTFOUND || r == -NLE_NODEV)
        return 0;
    return r < 0 ? np_nlerr(r) : 0;
}

/* ---- deleting without waiting for the kernel's clean-up ---- */

struct np_del {
    struct netplug *np;
    int ifindex;
    int result;
    bool done;
    int refs; /* the thread and the caller; under np->del_lock */
};

static void del_unref_locked(struct np_del *d)
{
    if (--d->refs == 0)
        free(d);
}

static void *del_thread(void *arg)
{
    struct np_del *d = arg;
    struct netplug *np = d->np;
    struct nl_sock *sk = NULL;
    struct rtnl_link *l = NULL;
    int r;

    /* by ifindex, so only ever in the handle's own namespace */
    if (setns(np->netns_fd, CLONE_NEWNET) < 0) {
        r = -EXDEV;
        goto out;
    }
    r = -ENOMEM;
    if (!(sk = nl_socket_alloc()) || !(l = rtnl_link_alloc()))
        goto out;
    if ((r = nl_connect(sk, NETLINK_ROUTE)) < 0) {
        r = np_nlerr(r);
        goto out;
    }
    rtnl_link_set_ifindex(l, d->ifindex);
    r = rtnl_link_delete(sk, l); /* returns after the kernel's RCU barrier */
    r = (r == -NLE_OBJ_NOTFOUND || r == -NLE_NODEV) ? 0 : r < 0 ? np_nlerr(r) : 0;
out:
    if (l)
        rtnl_link_put(l);
    if (sk)
        nl_socket_free(sk);
    pthread_mutex_lock(&np->del_lock);
    d->result = r;
    d->done = true;
    np->del_inflight--;
    pthread_cond_broadcast(&np->del_cond);
    del_unref_locked(d);
    pthread_mutex_unlock(&np->del_lock);
    return NULL;
}

int np_link_delete_fast(struct netplug *np, const char *name)
{
    _cleanup_link_ struct rtnl_link *l = NULL;
    pthread_attr_t attr;
    pthread_t th;
    struct np_del *d;
    uint64_t deadline;
    int r, ifindex;

    pthread_mutex_lock(&np->del_lock);
    bool busy = np->del_inflight >= NP_DEL_THREADS_MAX;
    pthread_mutex_unlock(&np->del_lock);
    if (np->netns_fd < 0 || busy)
        return np_link_delete(np, name);
    if ((r = link_get_raw(np, 0, name, &l)) < 0)
        return r == -ENODEV ? 0 : r;
    ifindex = rtnl_link_get_ifindex(l);
    if (!(d = calloc(1, sizeof(*d))))
        return -ENOMEM;
    *d = (struct np_del){.np = np, .ifindex = ifindex, .refs = 2};
    pthread_mutex_lock(&np->del_lock);
    np->del_inflight++;
    pthread_mutex_unlock(&np->del_lock);
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    r = pthread_create(&th, &attr, del_thread, d);
    pthread_attr_destroy(&attr);
    if (r != 0) {
        pthread_mutex_lock(&np->del_lock);
        np->del_inflight--;
        pthread_mutex_unlock(&np->del_lock);
        free(d);
        return np_link_delete(np, name);
    }
    deadline = now_mono_ns() + 5000000000ull;
    pthread_mutex_lock(&np->del_lock);
    for (;;) {
        struct rtnl_link *still = NULL;
        struct timespec ts;
        if (d->done) {
            r = d->result;
            break;
        }
        pthread_mutex_unlock(&np->del_lock);
        r = link_get_raw(np, ifindex, NULL, &still);
        if (still)
            rtnl_link_put(still);
        pthread_mutex_lock(&np->del_lock);
        if (r == -ENODEV) { /* gone: the rest is the kernel's */
            r = 0;
            break;
        }
        if (now_mono_ns() > deadline) {
            while (!d->done)
                pthread_cond_wait(&np->del_cond, &np->del_lock);
            continue;
        }
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 200000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&np->del_cond, &np->del_lock, &ts);
    }
    del_unref_locked(d);
    pthread_mutex_unlock(&np->del_lock);
    if (r == -EXDEV) /* the thread could not enter the namespace */
        return np_link_delete(np, name);
    return r;
}

static int link_change(struct netplug *np, const char *name, struct rtnl_link *chg)
{
    _cleanup_link_ struct rtnl_link *orig = NULL;
    int r = link_get_raw(np, 0, name, &orig);

    if (r < 0)
        return r;
    r = rtnl_link_change(np->sk, orig, chg, 0);
    return r < 0 ? np_nlerr(r) : 0;
}

static int mac_addr(const uint8_t mac[6], struct nl_addr **out)
{
    *out = nl_addr_build(AF_LLC, mac, 6);
    return *out ? 0 : -ENOMEM;
}

int np_link_set(struct netplug *np, const char *name, int mtu, int master, bool up, const char *alias,
                const uint8_t *addr)
{
    _cleanup_link_ struct rtnl_link *chg = rtnl_link_alloc();
    struct nl_addr *a = NULL;
    int r;

    if (!chg)
        return -ENOMEM;
    if (mtu > 0)
        rtnl_link_set_mtu(chg, (unsigned)mtu);
    if (master >= 0)
        rtnl_link_set_master(chg, master);
    if (up)
        rtnl_link_set_flags(chg, IFF_UP);
    if (alias)
        rtnl_link_set_ifalias(chg, alias);
    if (addr) {
        if ((r = mac_addr(addr, &a)) < 0)
            return r;
        rtnl_link_set_addr(chg, a);
        nl_addr_put(a);
    }
    return link_change(np, name, chg);
}

/* A locally administered unicast MAC, random. */
static int random_mac(uint8_t mac[6])
{
    int r = random_bytes(mac, 6);

    if (r < 0)
        return r;
    mac[0] = (uint8_t)((mac[0] & 0xfe) | 0x02);
    return 0;
}

/* Adds l (made by the caller, name set), then writes the alias (the kernel
 * ignores IFLA_IFALIAS in a create); deletes it again if that fails. */
static int link_add_marked(struct netplug *np, struct rtnl_link *l, const char *name, const char *alias)
{
    int r;

    rtnl_link_set_group(l, NP_DEV_GROUP);
    r = rtnl_link_add(np->sk, l, NLM_F_CREATE | NLM_F_EXCL);
    if (r < 0)
        return np_nlerr(r);
    r = np_link_set(np, name, 0, -1, false, alias, NULL);
    if (r < 0)
        np_link_delete(np, name);
    return r;
}

int np_bridge_create(struct netplug *np, const char *name, int mtu)
{
    _cleanup_link_ struct rtnl_link *l = rtnl_link_bridge_alloc();
    struct nl_addr *a = NULL;
    uint8_t mac[6];
    int r;

    if (!l)
        return -ENOMEM;
    rtnl_link_set_name(l, name);
    if (mtu > 0)
        rtnl_link_set_mtu(l, (unsigned)mtu);
    /* A MAC of its own, so that it does not change as ports come and go. */
    if ((r = random_mac(mac)) < 0 || (r = mac_addr(mac, &a)) < 0)
        return r;
    rtnl_link_set_addr(l, a);
    nl_addr_put(a);
    return link_add_marked(np, l, name, NP_ALIAS);
}

static int set_in_addr(struct rtnl_link *l, struct in_addr in,
                       int (*setter)(struct rtnl_link *, struct nl_addr *))
{
    struct nl_addr *a = nl_addr_build(AF_INET, &in, 4);
    int r;

    if (!a)
        return -ENOMEM;
    r = setter(l, a);
    nl_addr_put(a);
    return r < 0 ? np_nlerr(r) : 0;
}

int np_vxlan_create(struct netplug *np, const struct np_net *n, int parent_ifindex)
{
    _cleanup_link_ struct rtnl_link *l = rtnl_link_vxlan_alloc();
    int r;

    if (!l)
        return -ENOMEM;
    rtnl_link_set_name(l, n->uplink);
    if ((r = rtnl_link_vxlan_set_id(l, n->vni)) < 0)
        return np_nlerr(r);
    if (n->remote.s_addr && (r = set_in_addr(l, n->remote, rtnl_link_vxlan_set_group)) < 0)
        return r;
    if (n->group.s_addr && (r = set_in_addr(l, n->group, rtnl_link_vxlan_set_group)) < 0)
        return r;
    if (n->local.s_addr && (r = set_in_addr(l, n->local, rtnl_link_vxlan_set_local)) < 0)
        return r;
    if (parent_ifindex > 0 && (r = rtnl_link_vxlan_set_link(l, (uint32_t)parent_ifindex)) < 0)
        return np_nlerr(r);
    if ((r = rtnl_link_vxlan_set_port(l, n->port)) < 0)
        return np_nlerr(r);
    if (n->mtu > 0)
        rtnl_link_set_mtu(l, (unsigned)n->mtu);
    return link_add_marked(np, l, n->uplink, NP_ALIAS);
}

int np_vlan_create(struct netplug *np, const struct np_net *n, int parent_ifindex)
{
    _cleanup_link_ struct rtnl_link *l = rtnl_link_vlan_alloc();
    int r;

    if (!l)
        return -ENOMEM;
    rtnl_link_set_name(l, n->uplink);
    rtnl_link_set_link(l, parent_ifindex);
    if ((r = rtnl_link_vlan_set_id(l, n->vlan_id)) < 0)
        return np_nlerr(r);
    if (n->mtu > 0)
        rtnl_link_set_mtu(l, (unsigned)n->mtu);
    return link_add_marked(np, l, n->uplink, NP_ALIAS);
}

int np_veth_create(struct netplug *np, const char *name, const char *peer, const uint8_t host_mac[6],
                   const uint8_t peer_mac[6], int mtu, const char *alias)
{
    struct rtnl_link *l = rtnl_link_veth_alloc(), *p;
    struct nl_addr *a = NULL, *b = NULL;
    int r;

    if (!l)
        return -ENOMEM;
    p = rtnl_link_veth_get_peer(l);
    rtnl_link_set_name(l, name);
    rtnl_link_set_name(p, peer);
    if ((r = mac_addr(host_mac, &a)) < 0 || (r = mac_addr(peer_mac, &b)) < 0)
        goto out;
    rtnl_link_set_addr(l, a);
    rtnl_link_set_addr(p, b);
    if (mtu > 0) {
        rtnl_link_set_mtu(l, (unsigned)mtu);
        rtnl_link_set_mtu(p, (unsigned)mtu);
    }
    r = link_add_marked(np, l, name, alias);
out:
    if (a)
        nl_addr_put(a);
    if (b)
        nl_addr_put(b);
    rtnl_link_put(p); /* rtnl_link_veth_get_peer() took a reference */
    rtnl_link_veth_release(l);
    return r;
}

/* The tap stays non-persistent (it dies with our descriptor) until it has its
 * alias: a crash in between leaves nothing behind. */
int np_tap_create(struct netplug *np, const char *name, const uint8_t host_mac[6], const char *alias)
{
    _cleanup_close_ int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
    _cleanup_link_ struct rtnl_link *chg = NULL;
    struct nl_addr *a = NULL;
    struct ifreq ifr;
    int r;

    if (fd < 0)
        return -errno;
    memset(&ifr, 0, sizeof(ifr));
    ifr.ifr_flags = (short)(IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | IFF_TUN_EXCL); /* 0x8000: a short */
    if (strscpy(ifr.ifr_name, name, sizeof(ifr.ifr_name)) < 0)
        return -ENAMETOOLONG;
    if (ioctl(fd, TUNSETIFF, &ifr) < 0)
        return -errno;
    if (!(chg = rtnl_link_alloc()))
        return -ENOMEM;
    if ((r = mac_addr(host_mac, &a)) < 0)
        return r;
    rtnl_link_set_addr(chg, a);
    nl_addr_put(a);
    rtnl_link_set_ifalias(chg, alias);
    rtnl_link_set_group(chg, NP_DEV_GROUP);
    if ((r = link_change(np, name, chg)) < 0)
        return r;
    if (ioctl(fd, TUNSETPERSIST, 1) < 0)
        return -errno;
    return 0;
}

int np_addr_ensure(struct netplug *np, int ifindex, struct in_addr in, int prefix)
{
    struct rtnl_addr *a = rtnl_addr_alloc();
    struct nl_addr *local = nl_addr_build(AF_INET, &in, 4);
    int r = -ENOMEM;

    if (!a || !local)
        goto out;
    nl_addr_set_prefixlen(local, prefix);
    rtnl_addr_set_ifindex(a, ifindex);
    if ((r = rtnl_addr_set_local(a, local)) < 0) {
        r = np_nlerr(r);
        goto out;
    }
    r = rtnl_addr_add(np->sk, a, NLM_F_EXCL);
    r = (r == -NLE_EXIST) ? 0 : r < 0 ? np_nlerr(r) : 0;
out:
    if (local)
        nl_addr_put(local);
    if (a)
        rtnl_addr_put(a);
    return r;
}

int np_link_foreach(struct netplug *np,
                    int (*fn)(void *opaque, const struct np_linkinfo *li, const char *name), void *opaque)
{
    struct nl_cache *cache = NULL;
    int r = rtnl_link_alloc_cache(np->sk, AF_UNSPEC, &cache);

    if (r < 0)
        return np_nlerr(r);
    r = 0;
    for (struct nl_object *o = nl_cache_get_first(cache); o && r >= 0; o = nl_cache_get_next(o)) {
        struct rtnl_link *l = (struct rtnl_link *)o;
        struct np_linkinfo li;

        fill_info(l, &li);
        r = fn(opaque, &li, rtnl_link_get_name(l));
    }
    nl_cache_free(cache);
    return r < 0 ? r : 0;
}

struct slaves_ctx {
    int ifindex;
    const char *except;
    int n;
};

static int count_slave(void *opaque, const struct np_linkinfo *li, const char *name)
{
    struct slaves_ctx *c = opaque;

    if (li->master == c->ifindex && !(c->except && strcmp(name, c->except) == 0))
        c->n++;
    return 0;
}

int np_bridge_slaves(struct netplug *np, int ifindex, const char *except)
{
    struct slaves_ctx c = {.ifindex = ifindex, .except = except, .n = 0};
    int r = np_link_foreach(np, count_slave, &c);

    return r < 0 ? r : c.n;
}

/* ---- bridge port learning, static FDB entries, bridge options ----
 * Raw rtnetlink through the handle's libnl socket: libnl-route-3 has no
 * setter for these (IFLA_BR_MULTI_BOOLOPT) or words them through its caches. */

/* Sends m (freed here) and waits for the kernel's ack: 0 or -errno. */
static int nl_request(struct netplug *np, struct nl_msg *m)
{
    int r = nl_send_auto(np->sk, m);

    nlmsg_free(m);
    if (r < 0)
        return np_nlerr(r);
    r = nl_wait_for_ack(np->sk);
    return r < 0 ? np_nlerr(r) : 0;
}

int np_port_learning_off(struct netplug *np, int ifindex)
{
    struct ifinfomsg ifi = {.ifi_family = AF_BRIDGE, .ifi_index = ifindex};
    struct nl_msg *m = nlmsg_alloc_simple(RTM_SETLINK, NLM_F_ACK);
    struct nlattr *pi;

    if (!m)
        return -ENOMEM;
    if (nlmsg_append(m, &ifi, sizeof(ifi), NLMSG_ALIGNTO) < 0 ||
        !(pi = nla_nest_start(m, IFLA_PROTINFO | NLA_F_NESTED)) ||
        nla_put_u8(m, IFLA_BRPORT_LEARNING, 0) < 0) {
        nlmsg_free(m);
        return -EMSGSIZE;
    }
    nla_nest_end(m, pi);
    return nl_request(np, m);
}

int np_fdb_static(struct netplug *np, int port_ifindex, int bridge_ifindex, const uint8_t mac[6])
{
    struct ndmsg nd = {.ndm_family = AF_BRIDGE, .ndm_ifindex = port_ifindex, .ndm_state = NUD_NOARP,
                       .ndm_flags = NTF_MASTER | NTF_STICKY};
    struct nl_msg *m = nlmsg_alloc_simple(RTM_NEWNEIGH, NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE);

    if (!m)
        return -ENOMEM;
    if (nlmsg_append(m, &nd, sizeof(nd), NLMSG_ALIGNTO) < 0 || nla_put(m, NDA_LLADDR, 6, mac) < 0 ||
        nla_put_u32(m, NDA_MASTER, (uint32_t)bridge_ifindex) < 0) {
        nlmsg_free(m);
        return -EMSGSIZE;
    }
    return nl_request(np, m);
}

int np_bridge_no_ll_learn(struct netplug *np, int ifindex)
{
    struct ifinfomsg ifi = {.ifi_family = AF_UNSPEC, .ifi_index = ifindex};
    struct br_boolopt_multi bm = {.optval = 1u << BR_BOOLOPT_NO_LL_LEARN,
                                  .optmask = 1u << BR_BOOLOPT_NO_LL_LEARN};
    struct nl_msg *m = nlmsg_alloc_simple(RTM_NEWLINK, NLM_F_ACK);
    struct nlattr *li, *data;

    if (!m)
        return -ENOMEM;
    if (nlmsg_append(m, &ifi, sizeof(ifi), NLMSG_ALIGNTO) < 0 || !(li = nla_nest_start(m, IFLA_LINKINFO)) ||
        nla_put_string(m, IFLA_INFO_KIND, "bridge") < 0 || !(data = nla_nest_start(m, IFLA_INFO_DATA)) ||
        nla_put(m, IFLA_BR_MULTI_BOOLOPT, sizeof(bm), &bm) < 0) {
        nlmsg_free(m);
        return -EMSGSIZE;
    }
    nla_nest_end(m, data);
    nla_nest_end(m, li);
    return nl_request(np, m);
}

bool netplug_mac_on_host(const uint8_t mac[6], char dev[16])
{
    struct ifaddrs *ifa = NULL;
    bool found = false;

    if (getifaddrs(&ifa) < 0)
        return false;
    for (struct ifaddrs *i = ifa; i && !found; i = i->ifa_next) {
        const struct sockaddr_ll *ll = (const struct sockaddr_ll *)i->ifa_addr;
        if (!ll || ll->sll_family != AF_PACKET || ll->sll_halen != 6 || memcmp(ll->sll_addr, mac, 6) != 0)
            continue;
        strscpy(dev, i->ifa_name, 16);
        found = true;
    }
    freeifaddrs(ifa);
    return found;
}
