/* bench_mdlookup: the metadata service's real instance lookup (netmap_lookup():
 * the store's port of the source IP, netplug_peer() for the MAC of that IP on
 * the bridge and the port that MAC was learnt on, the filter check, the
 * instance) in a network namespace of its own, with 0 and N (default 500)
 * extra neighbour entries on the bridge and as many extra FDB entries, beside
 * the same run's baseline: the peer lookup as it was before (two full dumps
 * through libnl caches, kept here only), and what it costs inside the lookup.
 *
 *   build-dev/tests/bench_mdlookup [BUILD_DIR] [-n N]     (as root)
 *
 * Not root, or no namespace: prints SKIP, exits 0. */
#include <arpa/inet.h>
#include <linux/neighbour.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <netlink/netlink.h>
#include <netlink/route/neighbour.h>

#include "agent/instance.h"
#include "agent/netmap.h"
#include "agent/store.h"
#include "common/util.h"
#include "net-plug/netplug-internal.h"

static double now_s(void) { return (double)now_mono_ns() / 1e9; }

static void die(const char *what, int r)
{
    fprintf(stderr, "bench_mdlookup: %s: %d\n", what, r);
    exit(1);
}

/* ---- the peer lookup before (net-plug/peer.c until the targeted gets) ---- */

#define NUD_USABLE (NUD_REACHABLE | NUD_STALE | NUD_DELAY | NUD_PROBE | NUD_PERMANENT | NUD_NOARP)

static int old_cache(struct netplug *np, int family, struct nl_cache **out)
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

static int old_find_mac(struct netplug *np, int bridge, uint32_t ip, uint8_t mac[6])
{
    struct nl_cache *c;
    int r = old_cache(np, AF_UNSPEC, &c);

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

static int old_find_port(struct netplug *np, int bridge, const uint8_t mac[6], int *ifindex)
{
    struct nl_cache *c;
    int r = old_cache(np, AF_BRIDGE, &c);

    if (r < 0)
        return r;
    r = -ENOENT;
    for (struct nl_object *o = nl_cache_get_first(c); o; o = nl_cache_get_next(o)) {
        struct rtnl_neigh *n = (struct rtnl_neigh *)o;
        struct nl_addr *ll = rtnl_neigh_get_lladdr(n);
        int idx = rtnl_neigh_get_ifindex(n);

        if (!ll || nl_addr_get_len(ll) != 6 || memcmp(nl_addr_get_binary_addr(ll), mac, 6) != 0)
            continue;
        if (rtnl_neigh_get_master(n) != bridge || idx == bridge || (rtnl_neigh_get_state(n) & NUD_PERMANENT))
            continue;
        *ifindex = idx;
        r = 0;
        break;
    }
    nl_cache_free(c);
    return r;
}

static int old_peer(struct netplug *np, const char *network, uint32_t src_ipv4, uint8_t mac[6], char dev[16])
{
    struct np_linkinfo br;
    struct np_net *n;
    uint8_t m[6];
    char name[IFNAMSIZ];
    int idx, r;

    pthread_mutex_lock(&np->lock);
    if (!(n = np_net_find(np, network))) {
        r = -ENOENT;
        goto out;
    }
    if ((r = np_link_get(np, n->bridge, &br)) < 0)
        goto out;
    if ((r = old_find_mac(np, br.ifindex, src_ipv4, m)) < 0 || (r = old_find_port(np, br.ifindex, m, &idx)) < 0)
        goto out;
    if ((r = np_link_name(np, idx, name)) < 0)
        goto out;
    memcpy(mac, m, 6);
    strscpy(dev, name, 16);
out:
    pthread_mutex_unlock(&np->lock);
    return r;
}

/* ---- the namespace's entries ---- */

static void neigh_add(struct nl_sock *sk, int family, int ifindex, uint32_t ip, const uint8_t mac[6])
{
    struct rtnl_neigh *ne = rtnl_neigh_alloc();
    struct nl_addr *ll = nl_addr_build(AF_LLC, mac, 6), *dst = NULL;
    int r;

    rtnl_neigh_set_ifindex(ne, ifindex);
    rtnl_neigh_set_lladdr(ne, ll);
    if (family == AF_INET) {
        dst = nl_addr_build(AF_INET, &ip, 4);
        rtnl_neigh_set_dst(ne, dst);
        rtnl_neigh_set_state(ne, NUD_PERMANENT);
    } else { /* `bridge fdb add MAC dev PORT master static`: as a learnt entry to the lookup */
        rtnl_neigh_set_family(ne, AF_BRIDGE);
        rtnl_neigh_set_flags(ne, NTF_MASTER);
        rtnl_neigh_set_state(ne, NUD_NOARP);
    }
    if ((r = rtnl_neigh_add(sk, ne, NLM_F_CREATE | NLM_F_REPLACE)) < 0)
        die(family == AF_INET ? "neighbour add" : "fdb add", r);
    nl_addr_put(ll);
    if (dst)
        nl_addr_put(dst);
    rtnl_neigh_put(ne);
}

static void mac_of(uint32_t i, uint8_t m[6])
{
    m[0] = 0x52, m[1] = 0x54, m[2] = 0x01, m[3] = (uint8_t)(i >> 16), m[4] = (uint8_t)(i >> 8), m[5] = (uint8_t)i;
}

/* N more neighbours on the bridge (10.124.128.0/17) and N more FDB entries on the port */
static void add_entries(struct netplug *np, int from, int to)
{
    int br = (int)if_nametoindex("cab-bml"), port = (int)if_nametoindex("vbml0");

    for (int i = from; i < to; i++) {
        uint8_t m[6];
        mac_of((uint32_t)i, m);
        neigh_add(np->sk, AF_INET, br, htonl(0x0a7c8000u + (uint32_t)i), m);
        neigh_add(np->sk, AF_BRIDGE, port, 0, m);
    }
}

/* calls per second over at least 0.3 s */
static double rate(int (*fn)(void *), void *arg)
{
    double t0 = now_s(), t;
    long n = 0;

    do {
        for (int i = 0; i < 50; i++)
            if (fn(arg) != 0)
                die("lookup", -1);
        n += 50;
    } while ((t = now_s() - t0) < 0.3);
    return (double)n / t;
}

struct ctx {
    struct netplug *np;
    struct netmap *nm;
    struct sockaddr_in peer;
};

static int do_lookup(void *a)
{
    struct ctx *c = a;
    struct md_instance *m;
    int r = netmap_lookup(c->nm, "bml", &c->peer, &m);
    md_instance_free(m);
    return r;
}

static int do_peer(void *a)
{
    struct ctx *c = a;
    uint8_t mac[6];
    char dev[16];
    return netplug_peer(c->np, "bml", c->peer.sin_addr.s_addr, mac, dev) || strcmp(dev, "vbml0");
}

static int do_old_peer(void *a)
{
    struct ctx *c = a;
    uint8_t mac[6];
    char dev[16];
    return old_peer(c->np, "bml", c->peer.sin_addr.s_addr, mac, dev) || strcmp(dev, "vbml0");
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

#define ROUNDS 3

struct figs {
    double lookup, peer, old_peer;
};

static struct figs measure(struct ctx *c)
{
    double l[ROUNDS], p[ROUNDS], o[ROUNDS];
    for (int r = 0; r < ROUNDS; r++) { /* interleaved, medians: the machine is shared */
        l[r] = rate(do_lookup, c);
        p[r] = rate(do_peer, c);
        o[r] = rate(do_old_peer, c);
    }
    qsort(l, ROUNDS, sizeof(double), cmp_d);
    qsort(p, ROUNDS, sizeof(double), cmp_d);
    qsort(o, ROUNDS, sizeof(double), cmp_d);
    return (struct figs){l[ROUNDS / 2], p[ROUNDS / 2], o[ROUNDS / 2]};
}

int main(int argc, char **argv)
{
    int n = 500;
    struct ctx c = {.peer = {.sin_family = AF_INET}};
    struct np_error e = {0};
    struct agent_error ae = {0};
    struct store *s;
    struct instance inst;
    int r;

    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "-n") == 0 && i + 1 < argc) {
            int64_t v;
            if (parse_int64(argv[++i], 1, 30000, &v) < 0) {
                fprintf(stderr, "bench_mdlookup: -n: not an integer in [1, 30000]: %s\n", argv[i]);
                return 2;
            }
            n = (int)v;
        }
    if (geteuid() != 0 || unshare(CLONE_NEWNET) != 0) {
        printf("bench_mdlookup: SKIP (needs root and a network namespace of its own)\n");
        return 0;
    }
    struct netplug_config cfg = {.nft_table = "bench_ml", .antispoof = true, .ovs_vsctl = NULL};
    if ((r = netplug_new(&cfg, &c.np, &e)) < 0)
        die(e.msg, r);
    struct np_network nw = {.name = "bml", .type = NP_NET_BRIDGE, .bridge = "cab-bml", .gateway = "10.124.0.1/16",
                            .metadata = true};
    if ((r = netplug_network_add(c.np, &nw, &e)) < 0)
        die(e.msg, r);
    struct np_port p = {.network = "bml", .dev = "vbml0", .kind = NP_PORT_VETH,
                        .mac = {0xfa, 0x16, 0x3e, 0x00, 0x00, 0x07}, .ipv4 = inet_addr("10.124.0.7"),
                        .owner = "6a6a6a6a-0000-4000-8000-0000000000c1"};
    if ((r = netplug_plug(c.np, &p, &e)) < 0)
        die(e.msg, r);
    /* the guest: its neighbour entry on the bridge, its MAC on its port */
    neigh_add(c.np->sk, AF_INET, (int)if_nametoindex("cab-bml"), p.ipv4, p.mac);
    neigh_add(c.np->sk, AF_BRIDGE, (int)if_nametoindex("vbml0"), 0, p.mac);

    /* the store: the instance and its port */
    if ((r = store_open(":memory:", false, &s, &ae)) < 0)
        die("store_open", r);
    memset(&inst, 0, sizeof(inst));
    strscpy(inst.uuid, p.owner, sizeof(inst.uuid));
    ec2_id_generate(inst.ec2_id);
    inst.name = strdup("bench");
    strscpy(inst.state, "running", sizeof(inst.state));
    inst.flavor = (struct flavor){1, 64, 0};
    inst.boot.kind = BOOT_KERNEL;
    inst.boot.kernel = strdup("/k");
    inst.created_ms = inst.updated_ms = now_wall_ms();
    inst.n_ports = 1;
    inst.ports = calloc(1, sizeof(*inst.ports));
    strscpy(inst.ports[0].network, "bml", sizeof(inst.ports[0].network));
    strscpy(inst.ports[0].mac, "fa:16:3e:00:00:07", sizeof(inst.ports[0].mac));
    strscpy(inst.ports[0].ip, "10.124.0.7", sizeof(inst.ports[0].ip));
    strscpy(inst.ports[0].device, "vbml0", sizeof(inst.ports[0].device));
    strscpy(inst.ports[0].state, "plugged", sizeof(inst.ports[0].state));
    uuid_generate_str(inst.ports[0].port_id);
    if ((r = store_instance_insert(s, &inst)) < 0)
        die("store_instance_insert", r);
    struct netmap_deps nd = {.store = s, .np = c.np};
    if ((r = netmap_new(&nd, &c.nm)) < 0)
        die("netmap_new", r);
    c.peer.sin_addr.s_addr = p.ipv4;
    if (do_lookup(&c) != 0)
        die("the first lookup", -1);

    printf("bench_mdlookup: the metadata lookup (netmap_lookup: store, netplug_peer, filter, instance), one\n"
           "  network namespace, median of %d interleaved rounds; baseline: the peer lookup by two dumps (before)\n",
           ROUNDS);
    int sizes[2] = {0, n};
    for (int k = 0; k < 2; k++) {
        add_entries(c.np, 0, sizes[k]);
        struct figs f = measure(&c);
        /* the lookup as it was: the same, with the dumps' cost in place of the gets' */
        double old_lookup = 1.0 / (1.0 / f.lookup - 1.0 / f.peer + 1.0 / f.old_peer);
        printf("  %5d extra neighbours + FDB entries:\n", sizes[k]);
        printf("    netmap_lookup (real, targeted gets): %8.0f lookups/s (%.1f us)\n", f.lookup, 1e6 / f.lookup);
        printf("    netplug_peer, targeted gets:         %8.0f /s (%.1f us)\n", f.peer, 1e6 / f.peer);
        printf("    netplug_peer, two dumps (before):    %8.0f /s (%.1f us)\n", f.old_peer, 1e6 / f.old_peer);
        printf("    netmap_lookup with the dumps (derived): %5.0f lookups/s (%.1f us)\n", old_lookup,
               1e6 / old_lookup);
        printf("    ratio peer gets / dumps: %.1fx; lookup now / before: %.1fx\n", f.peer / f.old_peer,
               f.lookup / old_lookup);
    }
    netmap_free(c.nm);
    store_free(s);
    instance_release(&inst);
    netplug_unplug(c.np, "vbml0", &e);
    netplug_free(c.np);
    return 0;
}
