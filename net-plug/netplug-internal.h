/* netplug-internal.h: what the net-plug files share, and what its tests use
 * (tests/component/test_netplug.c, tests/bench/bench_netplug.c). Not part of the
 * public interface: the agent includes net-plug/netplug.h only. */
#ifndef CA_NETPLUG_INTERNAL_H
#define CA_NETPLUG_INTERNAL_H

#include <net/if.h>
#include <netinet/in.h>
#include <pthread.h>

#include "net-plug/netplug.h"

#define NP_ALIAS "compute-agent"         /* IFLA_IFALIAS of a network device we made */
#define NP_ALIAS_PORT "compute-agent:"   /* prefix of a port's IFLA_IFALIAS */
#define NP_DEV_GROUP 0x63614e50u         /* IFLA_GROUP set when a device is created ("caNP"):
                                            marks a device a crash left before its alias */
#define NP_NAME_MAX 63                   /* network names */
#define NP_OWNER_MAX 200                 /* alias is at most 255 bytes */
#define NP_VXLAN_PORT 4789
#define NP_METADATA_ADDR "169.254.169.254"
#define NP_DEL_THREADS_MAX 32            /* deletions finishing in the background, at most */
#define NP_PEER_TIMEOUT_MS 250           /* netplug_peer(): the most one netlink answer may take */

struct nl_sock;
struct nft_ctx;

/* A recorded network (netplug_network_add), with the names derived from it. */
struct np_net {
    struct np_net *next;
    char name[NP_NAME_MAX + 1];
    enum np_net_type type;
    char bridge[IFNAMSIZ];
    char uplink[IFNAMSIZ]; /* the vxlan / vlan device ("" for bridge and ovs) */
    char parent[IFNAMSIZ]; /* vlan parent, vxlan underlay ("" none) */
    int vlan_id;
    uint32_t vni;
    struct in_addr local, remote, group; /* s_addr 0 = not given */
    uint16_t port;
    int mtu;
    struct in_addr gw; /* s_addr 0 = none */
    int gw_prefix;
    bool metadata;
    bool dhcp;
    bool dns_gateway;
    unsigned users; /* ports recorded on this network */
    bool fw_in;     /* its host firewall elements written since the table was (re)made */
    bool fw_known;  /* ... written at all by this handle (a repair writes them again) */
    bool fw_ours;   /* ... as an agent-made bridge (hosted, gws, dhcp) */
};

/* A port netplug knows of: plugged by this process, or found in the kernel (its
 * alias) and in the filter table after a restart. */
struct np_portrec {
    struct np_portrec *next;
    char dev[IFNAMSIZ];
    char network[NP_NAME_MAX + 1]; /* "" unknown (found without a master) */
    enum np_port_kind kind;
    bool has_dev;  /* the device exists (false: only filter entries were found) */
    bool filtered; /* its entries are in the nft sets (mac, ip below) */
    bool verified;         /* netplug_port_filtered() found them in the kernel ... */
    uint32_t verified_gen; /* ... at this ruleset generation (nftgen.c) */
    uint8_t mac[6];
    uint32_t ipv4;
};

struct netplug {
    pthread_mutex_t lock;
    struct nl_sock *sk;
    struct nft_ctx *nft;
    char table[64];
    bool antispoof;
    bool hostfw;          /* the inet table (netplug_config.host_firewall; needs antispoof) */
    char md_addr[16];     /* the metadata service the host firewall lets guests reach */
    uint16_t md_port;
    char ovs_vsctl[256]; /* "" not found */
    struct np_net *nets;
    struct np_portrec *ports;
    bool loaded;    /* ports read from the kernel and the filter table */
    bool nft_ready; /* table, sets, counters and chains are in place */
    int netns_fd;   /* the namespace the handle was made in (-1: unknown) */
    /* deletions whose kernel clean-up (an RCU barrier, ~16 ms) still runs in a
     * thread of their own after the device left the namespace (np_link_delete_fast) */
    pthread_mutex_t del_lock;
    pthread_cond_t del_cond;
    unsigned del_inflight;
    /* netplug_peer() (peer.c), on the agent's loop: a netlink socket of its
     * own with a receive timeout, under a lock of its own; `nets` is linked
     * with both np->lock and peer_lock held, so either lock reads it */
    pthread_mutex_t peer_lock;
    int peer_fd; /* -1: none */
    /* the ruleset generation (nftgen.c), under lock */
    int gen_fd; /* -1: none */
    uint32_t gen_seq;
    uint32_t peer_seq;
    /* the filter watch (netplug_config.check_ms): under watch_lock */
    pthread_mutex_t watch_lock;
    pthread_cond_t watch_cond;
    pthread_t watch;
    bool watch_running, watch_stop;
    unsigned check_ms;
    uint64_t repairs; /* under lock */
};

/* ---- errors (netplug.c) ---- */
int np_fail(struct np_error *err, int errnum, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int np_nlerr(int nlerr); /* libnl NLE_* (negative) -> -errno */

/* ---- links (link.c): names are device names; 0 or -errno ---- */
struct np_linkinfo {
    int ifindex;
    int master;        /* ifindex, 0 none */
    unsigned mtu;
    unsigned flags;    /* IFF_* */
    uint32_t group;
    char kind[16];     /* "bridge", "vxlan", "vlan", "veth", "tun", "" */
    char alias[256];
    uint8_t addr[6];
};
int np_link_get(struct netplug *np, const char *name, struct np_linkinfo *li); /* -ENODEV absent */
int np_link_name(struct netplug *np, int ifindex, char name[IFNAMSIZ]);
int np_link_delete(struct netplug *np, const char *name);
/* The same, but returns as soon as the device is gone from the namespace (its
 * name free again) and leaves the kernel's clean-up wait to a thread;
 * netplug_free() waits for those threads. Bounded: at worst it waits for the
 * thread. Falls back to np_link_delete() where it cannot. */
int np_link_delete_fast(struct netplug *np, const char *name);
/* Any of mtu (0 = keep), master (-1 = keep, 0 = none), up, alias (NULL = keep),
 * addr (NULL = keep) in one RTM_NEWLINK. */
int np_link_set(struct netplug *np, const char *name, int mtu, int master, bool up, const char *alias,
                const uint8_t *addr);
int np_bridge_create(struct netplug *np, const char *name, int mtu);
int np_vxlan_create(struct netplug *np, const struct np_net *n, int parent_ifindex);
int np_vlan_create(struct netplug *np, const struct np_net *n, int parent_ifindex);
int np_veth_create(struct netplug *np, const char *name, const char *peer, const uint8_t host_mac[6],
                   const uint8_t peer_mac[6], int mtu, const char *alias);
int np_tap_create(struct netplug *np, const char *name, const uint8_t host_mac[6], const char *alias);
int np_addr_ensure(struct netplug *np, int ifindex, struct in_addr a, int prefix);
/* Calls fn for every link (dump); stops at fn's negative return. */
int np_link_foreach(struct netplug *np, int (*fn)(void *opaque, const struct np_linkinfo *li,
                                                   const char *name), void *opaque);
/* A guest port's bridge side: learning off on the port (IFLA_BRPORT_LEARNING 0),
 * so no frame it sends (the link-local ones that skip the filter included) can
 * move a MAC in the bridge's forwarding database; the guest's MAC then gets a
 * static, sticky entry on it (NUD_NOARP, NTF_STICKY: not "permanent", which
 * marks the bridge's own local entries), which goes with the port. The port must
 * be in the bridge already. */
int np_port_learning_off(struct netplug *np, int ifindex);
int np_fdb_static(struct netplug *np, int port_ifindex, int bridge_ifindex, const uint8_t mac[6]);
/* BR_BOOLOPT_NO_LL_LEARN on a bridge (the uplink's link-local frames too):
 * -EOPNOTSUPP / -EINVAL where the kernel lacks it. */
int np_bridge_no_ll_learn(struct netplug *np, int ifindex);
/* How many links have master == ifindex, not counting the one named except. */
int np_bridge_slaves(struct netplug *np, int ifindex, const char *except);

/* ---- anti-spoofing (filter.c) ---- */
int np_filter_ensure(struct netplug *np, struct np_error *err);
/* Replaces dev's entries with (mac, ipv4) in one transaction; old as recorded. */
int np_filter_set(struct netplug *np, struct np_portrec *rec, const uint8_t mac[6], uint32_t ipv4,
                  struct np_error *err);
int np_filter_del(struct netplug *np, struct np_portrec *rec, struct np_error *err);
/* The host firewall's elements of a network whose bridge exists (ours: the
 * agent made it); added once per table, idempotent. And taken out (its bridge
 * deleted). */
int np_fw_net_add(struct netplug *np, struct np_net *n, bool ours, struct np_error *err);
void np_fw_net_del(struct netplug *np, struct np_net *n);
/* 0 when the table has its chains and rules as this process writes them and
 * the entries of dev (NULL: of every filtered record) as recorded; -ESTALE
 * when not (flushed, deleted, edited); other -errno when it cannot tell. */
int np_filter_verify(struct netplug *np, const char *dev);
/* np_filter_verify(NULL), and when stale, everything put back as recorded:
 * 1 repaired, 0 intact (or nothing filtered), -errno. */
int np_filter_check(struct netplug *np, struct np_error *err);
/* Reads the sets into records (creating records for unknown devices). */
int np_filter_load(struct netplug *np, struct np_error *err);
/* A named counter of the table ("mac_drop", "arp_drop", "ip_drop",
 * "dhcp_server_drop", "other_drop", "ip_accept", "arp_accept", "ll_drop"; of the
 * host firewall's inet table: "port_drop", "fwd_drop", "host_drop"): packets. */
int netplug_counter(struct netplug *np, const char *name, uint64_t *packets);
/* The current elements (text, for tests and debugging): newly allocated. */
char *netplug_filter_dump(struct netplug *np);

/* ---- ovs (ovs.c) ---- */
int np_ovs_find(struct netplug *np, const char *configured);
int np_ovs_run(struct netplug *np, const char *const *argv, struct np_error *err);

/* ---- peers (peer.c) ---- */
/* A raw netlink socket of protocol, bound, with NP_PEER_TIMEOUT_MS send and
 * receive timeouts, in the calling thread's namespace: the fd or -errno. */
int np_nl_open(int protocol);
int np_peer_open(struct netplug *np); /* np->peer_fd, or -errno */
int np_gen_open(struct netplug *np);  /* np->gen_fd, or -errno */
/* watch.c: the filter watch (np->watch*): init before anything can fail,
 * start once the handle is ready, stop before freeing, destroy last. */
void np_watch_init(struct netplug *np);
int np_watch_start(struct netplug *np, unsigned check_ms, struct np_error *err);
void np_watch_stop(struct netplug *np);
void np_watch_destroy(struct netplug *np);
/* The nftables ruleset generation now: 0 with *gen, -errno (under np->lock). */
int np_gen_get(struct netplug *np, uint32_t *gen);
/* One NETLINK_NETFILTER read: 1 with *gen (NEWGEN answer to seq), 0 none of it ours, -errno. */
int np_gen_parse(const void *buf, size_t len, uint32_t seq, uint32_t *gen);

/* ---- records (netplug.c) ---- */
struct np_net *np_net_find(struct netplug *np, const char *name);
struct np_portrec *np_port_find(struct netplug *np, const char *dev);
struct np_portrec *np_port_new(struct netplug *np, const char *dev);

#endif
