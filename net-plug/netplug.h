/* netplug.h: STUB (helper C). A copy of the interface in the issue-10
 * contract so the agent builds before helper A's net-plug/ lands; the lead
 * drops this file (and net-plug/stub.c) for A's at merge.
 *
 * The host side of guest networking: bridges, VLAN and VXLAN links, taps and
 * veth pairs (libnl-route-3), anti-spoofing (libnftables). Thread-safe: calls
 * block for milliseconds and are made from worker threads. */
#ifndef CA_NETPLUG_H
#define CA_NETPLUG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum np_net_type { NP_NET_BRIDGE, NP_NET_VLAN, NP_NET_VXLAN, NP_NET_OVS };

struct np_network {           /* all strings borrowed for the call; netplug copies */
    const char *name;         /* [network NAME] */
    enum np_net_type type;
    const char *bridge;       /* bridge device; NULL: "cabr-" + name (cut to 15) for vlan/vxlan,
                                 required for bridge/ovs */
    const char *parent;       /* vlan: required; vxlan: underlay device (optional) */
    int vlan_id;              /* vlan 1..4094 */
    uint32_t vni;             /* vxlan 1..16777215 */
    const char *local;        /* vxlan local IPv4 (optional) */
    const char *remote;       /* vxlan unicast peer, or */
    const char *group;        /* vxlan multicast group (one of the two, or neither: FDB-only) */
    uint16_t port;            /* vxlan UDP port, 0 = 4789 */
    int mtu;                  /* 0 = leave as it is */
    const char *gateway;      /* "10.0.0.1/24": put on a bridge the agent made; NULL none */
    bool metadata;            /* put 169.254.169.254/32 on a bridge the agent made */
};

enum np_port_kind { NP_PORT_TAP, NP_PORT_VETH };

struct np_port {
    const char *network;      /* np_network.name */
    const char *dev;          /* host-side device name (<= 15) */
    enum np_port_kind kind;
    uint8_t mac[6];           /* the GUEST's MAC (filter key) */
    uint32_t ipv4;            /* guest IPv4, network byte order; 0 = none */
    int mtu;                  /* 0 = the network's */
    const char *owner;        /* instance uuid */
};

struct np_error {
    int code; /* -errno */
    char msg[256];
};

struct netplug_config {
    const char *nft_table;    /* NULL: "compute_agent" */
    bool antispoof;           /* true */
    const char *ovs_vsctl;    /* NULL: search PATH */
};

struct netplug;

int netplug_new(const struct netplug_config *cfg, struct netplug **out, struct np_error *err);
int netplug_network_add(struct netplug *np, const struct np_network *net, struct np_error *err);
int netplug_plug(struct netplug *np, const struct np_port *p, struct np_error *err);
int netplug_unplug(struct netplug *np, const char *dev, struct np_error *err);
int netplug_sync(struct netplug *np, const struct np_port *keep, size_t n, struct np_error *err);
bool netplug_port_filtered(struct netplug *np, const char *dev);
int netplug_peer(struct netplug *np, const char *network, uint32_t src_ipv4, uint8_t mac[6],
                 char dev[16]);
int netplug_network_bridge(struct netplug *np, const char *network, char bridge[16]);
void netplug_free(struct netplug *np);

#endif
