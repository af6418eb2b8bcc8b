/* peer.c: who is behind a source address on a network's bridge, for the
 * metadata service: the neighbour entry of the IPv4 address on the bridge (its
 * MAC), then the bridge's forwarding database entry of that MAC (the port it
 * was learnt on). Both read through libnl (RTM_GETNEIGH dumps, AF_INET and
 * AF_BRIDGE). Anti-spoofing is what makes the pair trustworthy: the caller
 * also checks netplug_port_filtered() on the device. */
#include <linux/neighbour.h>
#include <netlink/netlink.h>
#include <netlink/route/link.h>
#include <netlink/route/neighbour.h>

#include "common/util.h"
#include "net-plug/netplug-internal.h"

#define NUD_USABLE (NUD_REACHABLE | NUD_STALE | NUD_DELAY | NUD_PROBE | NUD_PERMANENT | NUD_NOARP)

static int neigh_cache(struct netplug *np, int family, struct nl_cache **out)
{
    struct nl_cache *c = NULL;
    int r = nl_cache_alloc_name("route/neigh", &c);

    if (r < 0)
        return np_nlerr(r);
    nl_cache_set_arg1(c, family);
    if ((r = nl_cache_refill(np->sk, c)) < 0) {
        nl_cache_free(c);
        return np_nlerr(r);
    }
    *out = c;
    return 0;
}

static int find_mac(struct netplug *np, int bridge, uint32_t ip, uint8_t mac[6])
{
    struct nl_cache *c;
    int r = neigh_cache(np, AF_UNSPEC, &c); /* AF_INET is refused: the kernel dumps all */

    if (r < 0)
        return r;
    r = -ENOENT;
    for (struct nl_object *o = nl_cache_get_first(c); o; o = nl_cache_get_next(o)) {
        struct rtnl_neigh *n = (struct rtnl_neigh *)o;
        struct nl_addr *dst = rtnl_neigh_get_dst(n), *ll = rtnl_neigh_get_lladdr(n);

        if (rtnl_neigh_get_ifindex(n) != bridge || !dst || nl_addr_get_family(dst) != AF_INET ||
            nl_addr_get_len(dst) != 4 || memcmp(nl_addr_get_binary_addr(dst), &ip, 4) != 0)
            continue;
        if (!(rtnl_neigh_get_state(n) & NUD_USABLE) || !ll || nl_addr_get_len(ll) != 6)
            continue;
        memcpy(mac, nl_addr_get_binary_addr(ll), 6);
        r = 0;
        break;
    }
    nl_cache_free(c);
    return r;
}

static int find_port(struct netplug *np, int bridge, const uint8_t mac[6], int *ifindex)
{
    struct nl_cache *c;
    int r = neigh_cache(np, AF_BRIDGE, &c);

    if (r < 0)
        return r;
    r = -ENOENT;
    for (struct nl_object *o = nl_cache_get_first(c); o; o = nl_cache_get_next(o)) {
        struct rtnl_neigh *n = (struct rtnl_neigh *)o;
        struct nl_addr *ll = rtnl_neigh_get_lladdr(n);
        int idx = rtnl_neigh_get_ifindex(n);

        if (!ll || nl_addr_get_len(ll) != 6 || memcmp(nl_addr_get_binary_addr(ll), mac, 6) != 0)
            continue;
        /* the bridge's own entries (the port's own MAC, "permanent") are not the guest */
        if (rtnl_neigh_get_master(n) != bridge || idx == bridge || (rtnl_neigh_get_state(n) & NUD_PERMANENT))
            continue;
        *ifindex = idx;
        r = 0;
        break;
    }
    nl_cache_free(c);
    return r;
}

int netplug_peer(struct netplug *np, const char *network, uint32_t src_ipv4, uint8_t mac[6], char dev[16])
{
    struct np_linkinfo br;
    struct np_net *n;
    uint8_t m[6];
    char name[IFNAMSIZ];
    int idx, r;

    if (!network)
        return -ENOENT;
    pthread_mutex_lock(&np->lock);
    if (!(n = np_net_find(np, network))) {
        r = -ENOENT;
        goto out;
    }
    if ((r = np_link_get(np, n->bridge, &br)) < 0) {
        r = r == -ENODEV ? -ENOENT : r;
        goto out;
    }
    if ((r = find_mac(np, br.ifindex, src_ipv4, m)) < 0 || (r = find_port(np, br.ifindex, m, &idx)) < 0)
        goto out;
    if ((r = np_link_name(np, idx, name)) < 0) {
        r = r == -ENODEV ? -ENOENT : r;
        goto out;
    }
    memcpy(mac, m, 6);
    strscpy(dev, name, 16);
out:
    pthread_mutex_unlock(&np->lock);
    return r;
}
