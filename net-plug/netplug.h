/* netplug.h: the host side of guest networking. Networks (Linux bridges, VXLAN and
 * VLAN devices enslaved to a per-network bridge, Open vSwitch bridges) and ports
 * (persistent taps for QEMU/Xen, veth pairs for the test driver and LXC), made
 * through netlink (libnl-route-3), with per-port anti-spoofing in an nftables
 * bridge-family table (libnftables). No `ip` or `nft` process is run; only
 * ovs-vsctl, by argv, for 'ovs' networks.
 *
 * Devices the agent makes carry IFLA_IFALIAS "compute-agent" (network devices) or
 * "compute-agent:<owner>" (ports): that mark is how a restarted agent finds them
 * again (netplug_sync), and nothing without it is ever changed or deleted.
 *
 * Thread-safe: one mutex per struct netplug; calls block for milliseconds (netlink
 * and nftables round trips), so make them from worker threads, not the event loop.
 * Every call works in the network namespace the calling thread is in (the one the
 * struct netplug was made in). */
#ifndef CA_NETPLUG_H
#define CA_NETPLUG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum np_net_type { NP_NET_BRIDGE, NP_NET_VLAN, NP_NET_VXLAN, NP_NET_OVS };

struct np_network {       /* all strings borrowed for the call; netplug copies */
    const char *name;     /* [network NAME] */
    enum np_net_type type;
    const char *bridge;   /* bridge device; NULL: "cabr-" + name (cut to 15) for vlan/vxlan,
                             required for bridge/ovs */
    const char *parent;   /* vlan: required; vxlan: underlay device (optional) */
    int vlan_id;          /* vlan 1..4094 */
    uint32_t vni;         /* vxlan 1..16777215 */
    const char *local;    /* vxlan local IPv4 (optional) */
    const char *remote;   /* vxlan unicast peer, or */
    const char *group;    /* vxlan multicast group (one of the two, or neither: FDB-only) */
    uint16_t port;        /* vxlan UDP port, 0 = 4789 */
    int mtu;              /* 0 = leave as it is */
    const char *gateway;  /* "10.0.0.1/24": put on a bridge the agent made; NULL none */
    bool metadata;        /* put 169.254.169.254/32 on a bridge the agent made */
    bool dhcp;            /* the host firewall lets guests reach udp 67 on the bridge */
    bool dns_gateway;     /* guests are told the gateway is their DNS server: the host
                             firewall lets udp/tcp 53 to it through (a resolver of the
                             host's, not dnsmasq: that one serves no DNS) */
};

enum np_port_kind { NP_PORT_TAP, NP_PORT_VETH };

struct np_port {
    const char *network;    /* np_network.name */
    const char *dev;        /* host-side device name (<= 15), e.g. "tap" + port id cut to 14 */
    enum np_port_kind kind; /* TAP: persistent tap for QEMU/Xen (libvirt type='ethernet'
                               managed='no'); VETH: a veth pair, host end `dev` in the bridge,
                               peer `dev` + "p" left in the caller's netns (the test driver and
                               later LXC use it) */
    uint8_t mac[6];         /* the GUEST's MAC (filter key); the host end gets its own */
    uint32_t ipv4;          /* guest IPv4, network byte order; 0 = none (then IPv4 dropped) */
    int mtu;                /* 0 = the network's */
    const char *owner;      /* instance uuid: written as IFLA_IFALIAS "compute-agent:<owner>" */
};

/* What failed, for a user: code is the -errno the call returned, msg names the
 * network or port and the field at fault ("network n1: vni: not in 1..16777215"). */
struct np_error {
    int code; /* -errno */
    char msg[256];
};

struct netplug_config {
    const char *nft_table; /* NULL: "compute_agent" (family bridge) */
    bool antispoof;        /* true: filter every port (bridge, vlan, vxlan networks) */
    const char *ovs_vsctl; /* NULL: search PATH */
    bool host_firewall;    /* with antispoof: table inet <nft_table>: no routing between two
                              networks' bridges, guest ports never IP interfaces, and from a
                              bridge the agent made the host answers only the metadata
                              service, DHCP (dhcp networks), ping to the gateway and
                              replies; the rest is dropped (TCP: reset) and counted */
    const char *md_address; /* the metadata service it lets through: NULL 169.254.169.254 */
    uint16_t md_port;       /* 0: 80 */
    unsigned check_ms;     /* > 0: a thread of the handle's checks the filter table every
                              check_ms and puts it back when someone flushed or changed
                              it (netplug_filter_check); 0: no thread */
};

struct netplug;

/* A new handle in the calling thread's network namespace (opens a netlink socket
 * and a libnftables context; touches nothing in the kernel). cfg may be NULL
 * (the defaults above, antispoof on). *out is set only on success. */
int netplug_new(const struct netplug_config *cfg, struct netplug **out, struct np_error *err);

/* Validates and records a network; makes nothing yet. -EINVAL with the field in
 * msg; -EEXIST when a network of that name, or another network's bridge/uplink
 * device name, is already recorded with a different definition (the same
 * definition again is 0). */
int netplug_network_add(struct netplug *np, const struct np_network *net, struct np_error *err);

/* Idempotent: ensures the network's devices (bridge / vlan / vxlan: made only
 * when absent and then marked as ours; refcounted by the ports using them), the
 * port device, its MTU, its filter (BEFORE it joins the bridge), master, up.
 * Any failure undoes what this call made. Bounded time: no waiting on signals.
 * -ENOENT unknown network, -EEXIST a device of that name not made by netplug,
 * -EOPNOTSUPP the kernel lacks the device type (e.g. no 802.1Q for vlan),
 * -ENOTSUP an ovs network without ovs-vsctl. */
int netplug_plug(struct netplug *np, const struct np_port *p, struct np_error *err);

/* Idempotent (absent = 0): device deleted, filter out, refcount down; the
 * network's devices deleted when ours and unused. Never touches a device not
 * marked as ours (-EPERM). */
int netplug_unplug(struct netplug *np, const char *dev, struct np_error *err);

/* After a restart: re-plugs each kept port (idempotent), deletes every device
 * marked ours that is not kept or not in use, drops filter entries for ports not
 * kept. Carries on past a failing port; returns the first error. */
int netplug_sync(struct netplug *np, const struct np_port *keep, size_t n, struct np_error *err);

/* True when dev's anti-spoofing entries are in place: recorded by this handle
 * AND found in the kernel's table, with the table's chains and rules as
 * netplug writes them (one libnftables listing); false for unknown devices,
 * ovs ports, antispoof off, or a table someone flushed (until it is put back). */
bool netplug_port_filtered(struct netplug *np, const char *dev);

/* For the metadata service: the neighbour entry of src_ipv4 (network byte
 * order) on the network's bridge (its MAC) and the bridge FDB port of that MAC
 * (its device name). 0, -ENOENT (no such network, no entry), -errno. mac and
 * dev are written only on success. */
int netplug_peer(struct netplug *np, const char *network, uint32_t src_ipv4, uint8_t mac[6],
                 char dev[16]);

/* True when a device of the calling thread's namespace has mac as its own
 * address (a bridge, a host NIC, a port's host end): a guest given that MAC
 * would be confused with it. Its name in dev (written only when true). Takes
 * no lock and no handle: one getifaddrs() (a netlink dump, about a millisecond). */
bool netplug_mac_on_host(const uint8_t mac[6], char dev[16]);

/* Checks the filter table against what this handle wrote (chains, rules, every
 * filtered port's entries) and, when someone removed or changed it, puts it
 * back from the records: 1 repaired, 0 intact (or no port filtered), -errno.
 * The check_ms thread calls it; so may the agent or a test. */
int netplug_filter_check(struct netplug *np, struct np_error *err);

/* How many times netplug_filter_check found the table changed and put it back. */
uint64_t netplug_filter_repairs(struct netplug *np);

/* The bridge device name of a recorded network. 0 or -ENOENT. */
int netplug_network_bridge(struct netplug *np, const char *network, char bridge[16]);

/* Frees the handle (NULL is fine); leaves the kernel as it is. */
void netplug_free(struct netplug *np);

#endif
