/* netplug.c: networks and ports: validation, the records (which port is on
 * which network: the refcount of the network's devices), plug / unplug / sync.
 * Records are rebuilt from the kernel (link aliases, the filter table) the first
 * time a handle needs them and by netplug_sync(), so a restarted agent never
 * deletes a bridge another port still uses. One mutex serialises every call. */
#include <arpa/inet.h>
#include <fcntl.h>
#include <sched.h>
#include <time.h>
#include <stdarg.h>

#include <netlink/netlink.h>
#include <nftables/libnftables.h>

#include "common/util.h"
#include "net-plug/netplug-internal.h"

int np_fail(struct np_error *err, int errnum, const char *fmt, ...)
{
    va_list ap;

    if (errnum < 0)
        errnum = -errnum;
    if (err) {
        err->code = -errnum;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
        va_end(ap);
    }
    return -errnum;
}

int np_nlerr(int e)
{
    switch (-e) {
    case 0: return 0;
    case NLE_INTR: case NLE_DUMP_INTR: return -EINTR;
    case NLE_BAD_SOCK: return -EBADF;
    case NLE_AGAIN: return -EAGAIN;
    case NLE_NOMEM: return -ENOMEM;
    case NLE_EXIST: return -EEXIST;
    case NLE_INVAL: case NLE_MISSING_ATTR: case NLE_AF_MISMATCH: case NLE_OBJ_MISMATCH:
    case NLE_PARSE_ERR: return -EINVAL;
    case NLE_RANGE: case NLE_ATTRSIZE: return -ERANGE;
    case NLE_MSGSIZE: case NLE_MSG_TRUNC: return -EMSGSIZE;
    case NLE_OPNOTSUPP: case NLE_SRCRT_NOSUPPORT: case NLE_MSGTYPE_NOSUPPORT: return -EOPNOTSUPP;
    case NLE_AF_NOSUPPORT: return -EAFNOSUPPORT;
    case NLE_OBJ_NOTFOUND: case NLE_NODEV: return -ENODEV;
    case NLE_NOATTR: case NLE_NOCACHE: case NLE_PKTLOC_FILE: return -ENOENT;
    case NLE_MSG_OVERFLOW: return -EOVERFLOW;
    case NLE_NOADDR: return -EADDRNOTAVAIL;
    case NLE_BUSY: return -EBUSY;
    case NLE_PROTO_MISMATCH: return -EPROTONOSUPPORT;
    case NLE_NOACCESS: return -EACCES;
    case NLE_PERM: case NLE_IMMUTABLE: return -EPERM;
    default: return -EIO;
    }
}

/* ---- names ---- */

static bool name_chars_ok(const char *s)
{
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '-' || *s == '_' || *s == '.'))
            return false;
    return true;
}

/* A device name we accept: 1..max characters of [A-Za-z0-9._-], not "." or "..". */
static bool devname_ok(const char *s, size_t max)
{
    size_t n = s ? strlen(s) : 0;

    return n >= 1 && n <= max && name_chars_ok(s) && strcmp(s, ".") != 0 && strcmp(s, "..") != 0;
}

static void derive(char out[IFNAMSIZ], const char *prefix, const char *name)
{
    snprintf(out, IFNAMSIZ, "%s%s", prefix, name); /* cut to 15 */
}

/* ---- records ---- */

struct np_net *np_net_find(struct netplug *np, const char *name)
{
    for (struct np_net *n = np->nets; n; n = n->next)
        if (strcmp(n->name, name) == 0)
            return n;
    return NULL;
}

static struct np_net *net_by_bridge(struct netplug *np, const char *bridge)
{
    for (struct np_net *n = np->nets; n; n = n->next)
        if (strcmp(n->bridge, bridge) == 0)
            return n;
    return NULL;
}

struct np_portrec *np_port_find(struct netplug *np, const char *dev)
{
    for (struct np_portrec *p = np->ports; p; p = p->next)
        if (strcmp(p->dev, dev) == 0)
            return p;
    return NULL;
}

struct np_portrec *np_port_new(struct netplug *np, const char *dev)
{
    struct np_portrec *p = calloc(1, sizeof(*p));

    if (!p)
        return NULL;
    strscpy(p->dev, dev, sizeof(p->dev));
    p->next = np->ports;
    np->ports = p;
    return p;
}

static void port_forget(struct netplug *np, struct np_portrec *rec)
{
    for (struct np_portrec **pp = &np->ports; *pp; pp = &(*pp)->next)
        if (*pp == rec) {
            *pp = rec->next;
            free(rec);
            return;
        }
}

static void ports_free(struct netplug *np)
{
    while (np->ports) {
        struct np_portrec *p = np->ports;
        np->ports = p->next;
        free(p);
    }
}

/* ---- marks ---- */

static bool netdev_ours(const struct np_linkinfo *li)
{
    return strcmp(li->alias, NP_ALIAS) == 0 || (li->alias[0] == '\0' && li->group == NP_DEV_GROUP);
}

static bool port_kind(const struct np_linkinfo *li)
{
    return strcmp(li->kind, "tun") == 0 || strcmp(li->kind, "veth") == 0;
}

static bool port_ours(const struct np_linkinfo *li)
{
    return strncmp(li->alias, NP_ALIAS_PORT, strlen(NP_ALIAS_PORT)) == 0 ||
           (li->alias[0] == '\0' && li->group == NP_DEV_GROUP && port_kind(li));
}

/* ---- loading the records from the kernel ---- */

static int load_link(void *opaque, const struct np_linkinfo *li, const char *name)
{
    struct netplug *np = opaque;
    struct np_portrec *rec;
    char master[IFNAMSIZ];

    if (!port_ours(li) || !port_kind(li))
        return 0;
    if (!(rec = np_port_find(np, name)) && !(rec = np_port_new(np, name)))
        return -ENOMEM;
    rec->has_dev = true;
    rec->kind = strcmp(li->kind, "veth") == 0 ? NP_PORT_VETH : NP_PORT_TAP;
    rec->network[0] = '\0';
    if (li->master > 0 && np_link_name(np, li->master, master) == 0) {
        struct np_net *n = net_by_bridge(np, master);
        if (n)
            strscpy(rec->network, n->name, sizeof(rec->network));
    }
    return 0;
}

static void recount(struct netplug *np)
{
    for (struct np_net *n = np->nets; n; n = n->next)
        n->users = 0;
    for (struct np_portrec *p = np->ports; p; p = p->next) {
        struct np_net *n = p->network[0] ? np_net_find(np, p->network) : NULL;
        if (n && p->has_dev)
            n->users++;
    }
}

static int ensure_loaded(struct netplug *np, struct np_error *err)
{
    int r;

    if (np->loaded)
        return 0;
    ports_free(np);
    if ((r = np_link_foreach(np, load_link, np)) < 0)
        return np_fail(err, r, "reading the links: %s", strerror(-r));
    if (np->antispoof && (r = np_filter_load(np, err)) < 0)
        return r;
    recount(np);
    np->loaded = true;
    return 0;
}

/* ---- new / free ---- */

int netplug_new(const struct netplug_config *cfg, struct netplug **out, struct np_error *err)
{
    struct netplug_config def = {.nft_table = NULL, .antispoof = true, .ovs_vsctl = NULL};
    struct netplug *np;
    int r;

    if (!cfg)
        cfg = &def;
    if (cfg->nft_table && (strlen(cfg->nft_table) > 63 || !*cfg->nft_table ||
                           strspn(cfg->nft_table, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                                  "0123456789_") != strlen(cfg->nft_table)))
        return np_fail(err, EINVAL, "netplug: nft_table: 1..63 letters, digits or '_'");
    if (!(np = calloc(1, sizeof(*np))))
        return np_fail(err, ENOMEM, "netplug: out of memory");
    pthread_mutex_init(&np->lock, NULL);
    pthread_mutex_init(&np->del_lock, NULL);
    pthread_cond_init(&np->del_cond, NULL);
    pthread_mutex_init(&np->peer_lock, NULL);
    np->peer_fd = -1;
    np->gen_fd = -1;
    np_watch_init(np);
    np->netns_fd = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    strscpy(np->table, cfg->nft_table ? cfg->nft_table : "compute_agent", sizeof(np->table));
    np->antispoof = cfg->antispoof;
    np->hostfw = cfg->antispoof && cfg->host_firewall;
    strscpy(np->md_addr, NP_METADATA_ADDR, sizeof(np->md_addr));
    if (cfg->md_address) {
        struct in_addr a;
        if (inet_pton(AF_INET, cfg->md_address, &a) != 1) {
            r = np_fail(err, EINVAL, "netplug: md_address: not an IPv4 address");
            goto fail;
        }
        inet_ntop(AF_INET, &a, np->md_addr, sizeof(np->md_addr));
    }
    np->md_port = cfg->md_port ? cfg->md_port : 80;
    np_ovs_find(np, cfg->ovs_vsctl);
    if (!(np->sk = nl_socket_alloc())) {
        r = np_fail(err, ENOMEM, "netplug: out of memory");
        goto fail;
    }
    if ((r = nl_connect(np->sk, NETLINK_ROUTE)) < 0) {
        r = np_fail(err, np_nlerr(r), "netplug: netlink: %s", nl_geterror(r));
        goto fail;
    }
    if ((r = np_peer_open(np)) < 0) {
        r = np_fail(err, r, "netplug: netlink: %s", strerror(-r));
        goto fail;
    }
    if (np->antispoof && (r = np_gen_open(np)) < 0) {
        r = np_fail(err, r, "netplug: netlink (netfilter): %s", strerror(-r));
        goto fail;
    }
    if (np->antispoof) {
        if (!(np->nft = nft_ctx_new(NFT_CTX_DEFAULT))) {
            r = np_fail(err, ENOMEM, "netplug: cannot make a libnftables context");
            goto fail;
        }
        nft_ctx_buffer_output(np->nft);
        nft_ctx_buffer_error(np->nft);
    }
    if (np->antispoof && cfg->check_ms > 0 && (r = np_watch_start(np, (unsigned)cfg->check_ms, err)) < 0)
        goto fail;
    *out = np;
    return 0;
fail:
    netplug_free(np);
    return r;
}

void netplug_free(struct netplug *np)
{
    if (!np)
        return;
    np_watch_stop(np);
    pthread_mutex_lock(&np->del_lock);
    while (np->del_inflight > 0)
        pthread_cond_wait(&np->del_cond, &np->del_lock);
    pthread_mutex_unlock(&np->del_lock);
    if (np->netns_fd >= 0)
        close(np->netns_fd);
    ports_free(np);
    while (np->nets) {
        struct np_net *n = np->nets;
        np->nets = n->next;
        free(n);
    }
    if (np->nft)
        nft_ctx_free(np->nft);
    if (np->sk)
        nl_socket_free(np->sk);
    if (np->peer_fd >= 0)
        close(np->peer_fd);
    if (np->gen_fd >= 0)
        close(np->gen_fd);
    pthread_mutex_destroy(&np->peer_lock);
    pthread_mutex_destroy(&np->lock);
    pthread_mutex_destroy(&np->del_lock);
    pthread_cond_destroy(&np->del_cond);
    np_watch_destroy(np);
    free(np);
}

/* ---- networks ---- */

static int parse_ip(const char *s, struct in_addr *a)
{
    return s && inet_pton(AF_INET, s, a) == 1 ? 0 : -EINVAL;
}

static int net_parse(const struct np_network *in, struct np_net *n, struct np_error *err)
{
    const char *nm = in->name;

    memset(n, 0, sizeof(*n));
    if (!in->name || !*in->name)
        return np_fail(err, EINVAL, "network: name: required");
    if (strlen(in->name) > NP_NAME_MAX || !name_chars_ok(in->name))
        return np_fail(err, EINVAL, "network %.64s: name: 1..%d of [A-Za-z0-9._-]", in->name, NP_NAME_MAX);
    strscpy(n->name, in->name, sizeof(n->name));
    n->type = in->type;
    n->metadata = in->metadata;
    n->dhcp = in->dhcp;
    n->dns_gateway = in->dns_gateway;
    if (in->type != NP_NET_BRIDGE && in->type != NP_NET_VLAN && in->type != NP_NET_VXLAN &&
        in->type != NP_NET_OVS)
        return np_fail(err, EINVAL, "network %s: type: not one of bridge, vlan, vxlan, ovs", nm);
    if (in->bridge) {
        if (!devname_ok(in->bridge, IFNAMSIZ - 1))
            return np_fail(err, EINVAL, "network %s: bridge: 1..15 of [A-Za-z0-9._-]", nm);
        strscpy(n->bridge, in->bridge, sizeof(n->bridge));
    } else if (in->type == NP_NET_BRIDGE || in->type == NP_NET_OVS) {
        return np_fail(err, EINVAL, "network %s: bridge: required for type %s", nm,
                       in->type == NP_NET_OVS ? "ovs" : "bridge");
    } else {
        derive(n->bridge, "cabr-", in->name);
    }
    if (in->parent) {
        if (!devname_ok(in->parent, IFNAMSIZ - 1))
            return np_fail(err, EINVAL, "network %s: parent: 1..15 of [A-Za-z0-9._-]", nm);
        if (in->type == NP_NET_VLAN || in->type == NP_NET_VXLAN)
            strscpy(n->parent, in->parent, sizeof(n->parent));
    }
    if (in->mtu != 0 && (in->mtu < 68 || in->mtu > 65535))
        return np_fail(err, EINVAL, "network %s: mtu: not in 68..65535", nm);
    n->mtu = in->mtu;
    if (in->gateway) {
        char ip[INET_ADDRSTRLEN];
        const char *slash = strchr(in->gateway, '/');
        int64_t pfx;
        if (!slash || (size_t)(slash - in->gateway) >= sizeof(ip))
            return np_fail(err, EINVAL, "network %s: gateway: not an IPv4 address/prefix (10.0.0.1/24)", nm);
        memcpy(ip, in->gateway, (size_t)(slash - in->gateway));
        ip[slash - in->gateway] = '\0';
        if (parse_ip(ip, &n->gw) < 0 || n->gw.s_addr == 0 || parse_int64(slash + 1, 1, 32, &pfx) < 0)
            return np_fail(err, EINVAL, "network %s: gateway: not an IPv4 address/prefix (10.0.0.1/24)", nm);
        n->gw_prefix = (int)pfx;
    }
    switch (in->type) {
    case NP_NET_VLAN:
        if (!in->parent)
            return np_fail(err, EINVAL, "network %s: parent: required for type vlan", nm);
        if (in->vlan_id < 1 || in->vlan_id > 4094)
            return np_fail(err, EINVAL, "network %s: vlan_id: not in 1..4094", nm);
        n->vlan_id = in->vlan_id;
        derive(n->uplink, "cavl-", in->name);
        break;
    case NP_NET_VXLAN:
        if (in->vni < 1 || in->vni > 16777215)
            return np_fail(err, EINVAL, "network %s: vni: not in 1..16777215", nm);
        n->vni = in->vni;
        if (in->local && (parse_ip(in->local, &n->local) < 0 || n->local.s_addr == 0))
            return np_fail(err, EINVAL, "network %s: local: not an IPv4 address", nm);
        if (in->remote && in->group)
            return np_fail(err, EINVAL, "network %s: remote: give remote or group, not both", nm);
        if (in->remote && (parse_ip(in->remote, &n->remote) < 0 || n->remote.s_addr == 0 ||
                           IN_MULTICAST(ntohl(n->remote.s_addr))))
            return np_fail(err, EINVAL, "network %s: remote: not a unicast IPv4 address", nm);
        if (in->group && (parse_ip(in->group, &n->group) < 0 || !IN_MULTICAST(ntohl(n->group.s_addr))))
            return np_fail(err, EINVAL, "network %s: group: not a multicast IPv4 address", nm);
        n->port = in->port ? in->port : NP_VXLAN_PORT;
        derive(n->uplink, "cavx-", in->name);
        break;
    default:
        break;
    }
    return 0;
}

static bool net_same(const struct np_net *a, const struct np_net *b)
{
    return strcmp(a->name, b->name) == 0 && a->type == b->type && strcmp(a->bridge, b->bridge) == 0 &&
           strcmp(a->uplink, b->uplink) == 0 && strcmp(a->parent, b->parent) == 0 &&
           a->vlan_id == b->vlan_id && a->vni == b->vni && a->local.s_addr == b->local.s_addr &&
           a->remote.s_addr == b->remote.s_addr && a->group.s_addr == b->group.s_addr &&
           a->port == b->port && a->mtu == b->mtu && a->gw.s_addr == b->gw.s_addr &&
           a->gw_prefix == b->gw_prefix && a->metadata == b->metadata && a->dhcp == b->dhcp &&
           a->dns_gateway == b->dns_gateway;
}

int netplug_network_add(struct netplug *np, const struct np_network *net, struct np_error *err)
{
    struct np_net tmp, *n, *o;
    int r;

    if ((r = net_parse(net, &tmp, err)) < 0)
        return r;
    pthread_mutex_lock(&np->lock);
    if ((o = np_net_find(np, tmp.name))) {
        r = net_same(o, &tmp) ? 0 : np_fail(err, EEXIST, "network %s: already defined differently", tmp.name);
        goto out;
    }
    for (o = np->nets; o; o = o->next) {
        if (strcmp(o->bridge, tmp.bridge) == 0 || strcmp(o->uplink, tmp.bridge) == 0) {
            r = np_fail(err, EEXIST, "network %s: bridge: %s is already used by network %s", tmp.name,
                        tmp.bridge, o->name);
            goto out;
        }
        if (tmp.uplink[0] && (strcmp(o->uplink, tmp.uplink) == 0 || strcmp(o->bridge, tmp.uplink) == 0)) {
            r = np_fail(err, EEXIST, "network %s: name: its device %s is already used by network %s",
                        tmp.name, tmp.uplink, o->name);
            goto out;
        }
    }
    if (!(n = malloc(sizeof(*n)))) {
        r = np_fail(err, ENOMEM, "network %s: out of memory", tmp.name);
        goto out;
    }
    *n = tmp;
    pthread_mutex_lock(&np->peer_lock); /* netplug_peer() reads the list under it alone */
    n->next = np->nets;
    np->nets = n;
    pthread_mutex_unlock(&np->peer_lock);
    np->loaded = false; /* ports may now map to this network */
    r = 0;
out:
    pthread_mutex_unlock(&np->lock);
    return r;
}

int netplug_network_bridge(struct netplug *np, const char *network, char bridge[16])
{
    struct np_net *n;
    int r = -ENOENT;

    pthread_mutex_lock(&np->lock);
    if (network && (n = np_net_find(np, network))) {
        strscpy(bridge, n->bridge, 16);
        r = 0;
    }
    pthread_mutex_unlock(&np->lock);
    return r;
}

/* ---- the network's devices ---- */

struct undo {
    bool bridge, uplink, port;
    bool filter_new;        /* the call added the port's filter entries */
    struct np_portrec *rec; /* a record this call made */
};

static int uplink_create(struct netplug *np, struct np_net *n, struct np_error *err)
{
    struct np_linkinfo pli;
    int pidx = 0, r;

    if (n->parent[0]) {
        if ((r = np_link_get(np, n->parent, &pli)) < 0)
            return np_fail(err, r, "network %s: parent: %s: %s", n->name, n->parent,
                           r == -ENODEV ? "no such device" : strerror(-r));
        pidx = pli.ifindex;
    }
    if (n->type == NP_NET_VXLAN) {
        r = np_vxlan_create(np, n, pidx);
        if (r < 0)
            return np_fail(err, r, "network %s: vni: cannot make VXLAN device %s (vni %u): %s", n->name,
                           n->uplink, n->vni, strerror(-r));
        return 0;
    }
    r = np_vlan_create(np, n, pidx);
    if (r == -EOPNOTSUPP)
        return np_fail(err, r, "network %s: type: vlan: this kernel has no 802.1Q VLAN support "
                               "(creating %s on %s, id %d: Unknown device type)",
                       n->name, n->uplink, n->parent, n->vlan_id);
    if (r < 0)
        return np_fail(err, r, "network %s: vlan_id: cannot make VLAN device %s on %s (id %d): %s", n->name,
                       n->uplink, n->parent, n->vlan_id, strerror(-r));
    return 0;
}

/* Ensures the bridge (and the vxlan / vlan device in it); *br gets the bridge. */
static int net_ensure(struct netplug *np, struct np_net *n, struct undo *u, struct np_linkinfo *br,
                      struct np_error *err)
{
    struct np_linkinfo ul;
    bool ours;
    int r;

    r = np_link_get(np, n->bridge, br);
    if (r == -ENODEV) {
        if ((r = np_bridge_create(np, n->bridge, n->mtu)) < 0)
            return np_fail(err, r, "network %s: bridge: cannot make %s: %s", n->name, n->bridge, strerror(-r));
        u->bridge = true;
        r = np_link_get(np, n->bridge, br);
    }
    if (r < 0)
        return np_fail(err, r, "network %s: bridge: %s: %s", n->name, n->bridge, strerror(-r));
    if (strcmp(br->kind, "bridge") != 0)
        return np_fail(err, EEXIST, "network %s: bridge: %s exists and is not a bridge", n->name, n->bridge);
    ours = netdev_ours(br);
    if (n->uplink[0]) {
        /* its MTU may pull the bridge's down: read the bridge again below */
        r = np_link_get(np, n->uplink, &ul);
        if (r == -ENODEV) {
            if ((r = uplink_create(np, n, err)) < 0)
                return r;
            u->uplink = true;
            r = np_link_get(np, n->uplink, &ul);
        }
        if (r < 0)
            return np_fail(err, r, "network %s: %s: %s", n->name, n->uplink, strerror(-r));
        if (!netdev_ours(&ul))
            return np_fail(err, EEXIST, "network %s: name: device %s exists and was not made by compute-agent",
                           n->name, n->uplink);
        if (strcmp(ul.kind, n->type == NP_NET_VXLAN ? "vxlan" : "vlan") != 0)
            return np_fail(err, EEXIST, "network %s: type: device %s is a %s, not a %s", n->name, n->uplink,
                           ul.kind[0] ? ul.kind : "device", n->type == NP_NET_VXLAN ? "vxlan" : "vlan");
        if (ul.master != br->ifindex || !(ul.flags & IFF_UP)) {
            if ((r = np_link_set(np, n->uplink, 0, br->ifindex, true, NULL, NULL)) < 0)
                return np_fail(err, r, "network %s: cannot put %s in bridge %s: %s", n->name, n->uplink,
                               n->bridge, strerror(-r));
            if ((r = np_link_get(np, n->bridge, br)) < 0)
                return np_fail(err, r, "network %s: bridge: %s: %s", n->name, n->bridge, strerror(-r));
        }
    }
    if ((r = np_fw_net_add(np, n, ours, err)) < 0)
        return r;
    if (!ours)
        return 0; /* an operator's bridge: used as it is */
    /* no learning from link-local frames (the uplink's: guest ports learn nothing) */
    if ((r = np_bridge_no_ll_learn(np, br->ifindex)) < 0 && r != -EOPNOTSUPP && r != -EINVAL)
        return np_fail(err, r, "network %s: bridge: cannot set no_linklocal_learn on %s: %s", n->name, n->bridge,
                       strerror(-r));
    if (!(br->flags & IFF_UP) && (r = np_link_set(np, n->bridge, 0, -1, true, NULL, NULL)) < 0)
        return np_fail(err, r, "network %s: bridge: cannot set %s up: %s", n->name, n->bridge, strerror(-r));
    if (n->gw.s_addr && (r = np_addr_ensure(np, br->ifindex, n->gw, n->gw_prefix)) < 0)
        return np_fail(err, r, "network %s: gateway: cannot add it to %s: %s", n->name, n->bridge, strerror(-r));
    if (n->metadata) {
        struct in_addr md;
        inet_pton(AF_INET, NP_METADATA_ADDR, &md);
        if ((r = np_addr_ensure(np, br->ifindex, md, 32)) < 0)
            return np_fail(err, r, "network %s: metadata: cannot add %s to %s: %s", n->name, NP_METADATA_ADDR,
                           n->bridge, strerror(-r));
    }
    return 0;
}

/* Deletes the network's devices when they are ours and nothing else uses them. */
static void net_release(struct netplug *np, struct np_net *n)
{
    struct np_linkinfo br, ul;
    bool have_ul;
    int slaves;

    if (n->users > 0 || n->type == NP_NET_OVS)
        return;
    have_ul = n->uplink[0] && np_link_get(np, n->uplink, &ul) == 0 && netdev_ours(&ul);
    if (np_link_get(np, n->bridge, &br) == 0) {
        slaves = np_bridge_slaves(np, br.ifindex, have_ul ? n->uplink : NULL);
        if (slaves != 0)
            return; /* in use (or unknown): keep */
        if (netdev_ours(&br)) {
            np_link_delete(np, n->bridge);
            np_fw_net_del(np, n);
        }
    }
    if (have_ul)
        np_link_delete(np, n->uplink);
}

/* ---- ports ---- */

static int port_check(const struct np_port *p, struct np_error *err)
{
    const char *d = p->dev ? p->dev : "";
    static const uint8_t zero[6];

    if (!devname_ok(p->dev, p->kind == NP_PORT_VETH ? IFNAMSIZ - 2 : IFNAMSIZ - 1))
        return np_fail(err, EINVAL, "port %.16s: dev: 1..%d of [A-Za-z0-9._-]", d,
                       p->kind == NP_PORT_VETH ? IFNAMSIZ - 2 : IFNAMSIZ - 1);
    if (p->kind != NP_PORT_TAP && p->kind != NP_PORT_VETH)
        return np_fail(err, EINVAL, "port %s: kind: not tap or veth", d);
    if (!p->network)
        return np_fail(err, EINVAL, "port %s: network: required", d);
    if ((p->mac[0] & 1) || memcmp(p->mac, zero, 6) == 0)
        return np_fail(err, EINVAL, "port %s: mac: not a unicast MAC address", d);
    if (p->mtu != 0 && (p->mtu < 68 || p->mtu > 65535))
        return np_fail(err, EINVAL, "port %s: mtu: not in 68..65535", d);
    if (p->ipv4 && (IN_MULTICAST(ntohl(p->ipv4)) || p->ipv4 == INADDR_BROADCAST))
        return np_fail(err, EINVAL, "port %s: ipv4: not a unicast IPv4 address", d);
    if (p->owner && (strlen(p->owner) > NP_OWNER_MAX || strpbrk(p->owner, "\n\r\t ")))
        return np_fail(err, EINVAL, "port %s: owner: at most %d characters, no spaces", d, NP_OWNER_MAX);
    return 0;
}

/* Ensures the port device exists and is ours (made by this call or earlier). */
static int port_ensure(struct netplug *np, const struct np_port *p, struct undo *u, struct np_error *err)
{
    char alias[256], peer[IFNAMSIZ];
    uint8_t host[6];
    struct np_linkinfo li;
    int r;

    snprintf(alias, sizeof(alias), "%s%s", NP_ALIAS_PORT, p->owner ? p->owner : "");
    r = np_link_get(np, p->dev, &li);
    if (r == 0) {
        bool veth = strcmp(li.kind, "veth") == 0;
        if (!port_ours(&li))
            return np_fail(err, EEXIST, "port %s: dev: a device of that name exists and was not made by "
                                        "compute-agent", p->dev);
        if (veth != (p->kind == NP_PORT_VETH))
            return np_fail(err, EEXIST, "port %s: kind: the device exists as a %s", p->dev, veth ? "veth" : "tap");
        if (li.alias[0] && strcmp(li.alias, alias) != 0 && p->owner && strcmp(li.alias, NP_ALIAS_PORT) != 0)
            return np_fail(err, EEXIST, "port %s: owner: the device belongs to %s", p->dev,
                           li.alias + strlen(NP_ALIAS_PORT));
        if (strcmp(li.alias, alias) != 0 && (r = np_link_set(np, p->dev, 0, -1, false, alias, NULL)) < 0)
            return np_fail(err, r, "port %s: owner: cannot write its alias: %s", p->dev, strerror(-r));
        return 0;
    }
    if (r != -ENODEV)
        return np_fail(err, r, "port %s: dev: %s", p->dev, strerror(-r));
    /* The host end's MAC: the guest's with fe as its first byte (as libvirt does),
     * so that the bridge never takes it and it never equals the guest's. */
    memcpy(host, p->mac, 6);
    host[0] = 0xfe;
    if (p->kind == NP_PORT_TAP) {
        r = np_tap_create(np, p->dev, host, alias);
    } else {
        snprintf(peer, sizeof(peer), "%sp", p->dev);
        r = np_veth_create(np, p->dev, peer, host, p->mac, 0, alias);
    }
    if (r == -EEXIST && p->kind == NP_PORT_VETH)
        return np_fail(err, r, "port %s: dev: cannot make the veth pair: %sp exists", p->dev, p->dev);
    if (r < 0)
        return np_fail(err, r, "port %s: dev: cannot make the %s: %s", p->dev,
                       p->kind == NP_PORT_TAP ? "tap" : "veth pair", strerror(-r));
    u->port = true;
    return 0;
}

static void undo_plug(struct netplug *np, struct np_net *n, const struct np_port *p, struct undo *u)
{
    struct np_portrec *rec = np_port_find(np, p->dev);

    if (u->port)
        np_link_delete(np, p->dev);
    if (rec && u->filter_new)
        np_filter_del(np, rec, NULL);
    if (u->rec && rec == u->rec)
        port_forget(np, u->rec);
    if (u->uplink)
        np_link_delete(np, n->uplink);
    if (u->bridge)
        np_link_delete(np, n->bridge);
}

static int plug_ovs(struct netplug *np, struct np_net *n, const struct np_port *p, struct undo *u,
                    struct np_error *err)
{
    char mac[48], owner[256];
    int r;

    if (!np->ovs_vsctl[0])
        return np_fail(err, ENOTSUP, "network %s: type: ovs needs ovs-vsctl, which is not installed here",
                       n->name);
    if ((r = port_ensure(np, p, u, err)) < 0)
        return r;
    snprintf(mac, sizeof(mac), "external_ids:attached-mac=%02x:%02x:%02x:%02x:%02x:%02x", p->mac[0], p->mac[1],
             p->mac[2], p->mac[3], p->mac[4], p->mac[5]);
    snprintf(owner, sizeof(owner), "external_ids:vm-uuid=%s", p->owner ? p->owner : "");
    const char *argv[] = {"ovs-vsctl", "--timeout=10", "--", "--may-exist", "add-port", n->bridge, p->dev,
                          "--", "set", "Interface", p->dev, mac, owner, "external_ids:iface-status=active",
                          NULL};
    if ((r = np_ovs_run(np, argv, err)) < 0)
        return r;
    if ((r = np_link_set(np, p->dev, p->mtu ? p->mtu : n->mtu, -1, true, NULL, NULL)) < 0) {
        const char *del[] = {"ovs-vsctl", "--timeout=10", "--if-exists", "del-port", n->bridge, p->dev, NULL};
        np_ovs_run(np, del, NULL);
        return np_fail(err, r, "port %s: mtu: %s", p->dev, strerror(-r));
    }
    return 0;
}

static int plug_locked(struct netplug *np, const struct np_port *p, struct np_error *err)
{
    struct undo u = {0};
    struct np_linkinfo br, li;
    struct np_net *n, *old = NULL;
    struct np_portrec *rec;
    int r, want, mtu;

    if ((r = port_check(p, err)) < 0)
        return r;
    if (!(n = np_net_find(np, p->network)))
        return np_fail(err, ENOENT, "port %s: network: unknown network %.64s", p->dev, p->network);
    if ((r = ensure_loaded(np, err)) < 0)
        return r;
    if (n->type == NP_NET_OVS) {
        if ((r = plug_ovs(np, n, p, &u, err)) < 0)
            goto fail;
    } else {
        if ((r = net_ensure(np, n, &u, &br, err)) < 0)
            goto fail;
        if ((r = port_ensure(np, p, &u, err)) < 0)
            goto fail;
    }
    if (!(rec = np_port_find(np, p->dev))) {
        if (!(rec = u.rec = np_port_new(np, p->dev))) {
            r = np_fail(err, ENOMEM, "port %s: out of memory", p->dev);
            goto fail;
        }
    }
    if (n->type != NP_NET_OVS) {
        /* The filter goes in before the port joins the bridge. */
        if (np->antispoof) {
            bool was = rec->filtered;
            if ((r = np_filter_set(np, rec, p->mac, p->ipv4, err)) < 0)
                goto fail;
            u.filter_new = !was;
        }
        if ((r = np_link_get(np, p->dev, &li)) < 0) {
            r = np_fail(err, r, "port %s: dev: %s", p->dev, strerror(-r));
            goto fail;
        }
        /* Never lower the bridge's MTU: a port below it would pull it down. */
        want = p->mtu ? p->mtu : n->mtu;
        mtu = want > (int)br.mtu ? want : (int)br.mtu;
        if ((unsigned)mtu == li.mtu)
            mtu = 0;
        if (mtu || li.master != br.ifindex) {
            r = np_link_set(np, p->dev, mtu, li.master != br.ifindex ? br.ifindex : -1, false, NULL, NULL);
            if (r < 0) {
                r = np_fail(err, r, "port %s: %s: %s", p->dev, mtu ? "mtu" : "network",
                            strerror(-r));
                goto fail;
            }
        }
        /* Before it goes up: no learning on the port, the guest's MAC pinned to it
         * (a link-local frame skips the filter, but the bridge would learn from it). */
        if ((r = np_port_learning_off(np, li.ifindex)) < 0 ||
            (r = np_fdb_static(np, li.ifindex, br.ifindex, p->mac)) < 0) {
            r = np_fail(err, r, "port %s: network: cannot pin its MAC in bridge %s: %s", p->dev, n->bridge,
                        strerror(-r));
            goto fail;
        }
        if (!(li.flags & IFF_UP) && (r = np_link_set(np, p->dev, 0, -1, true, NULL, NULL)) < 0) {
            r = np_fail(err, r, "port %s: network: cannot set it up: %s", p->dev, strerror(-r));
            goto fail;
        }
    }
    if (rec->network[0] && strcmp(rec->network, n->name) != 0)
        old = np_net_find(np, rec->network);
    if (!rec->has_dev || strcmp(rec->network, n->name) != 0) {
        if (old && old->users > 0)
            old->users--;
        n->users++;
    }
    strscpy(rec->network, n->name, sizeof(rec->network));
    rec->kind = p->kind;
    rec->has_dev = true;
    memcpy(rec->mac, p->mac, 6);
    rec->ipv4 = p->ipv4;
    if (old)
        net_release(np, old);
    return 0;
fail:
    undo_plug(np, n, p, &u);
    return r;
}

int netplug_plug(struct netplug *np, const struct np_port *p, struct np_error *err)
{
    int r;

    pthread_mutex_lock(&np->lock);
    r = plug_locked(np, p, err);
    pthread_mutex_unlock(&np->lock);
    return r;
}

static int unplug_locked(struct netplug *np, const char *dev, struct np_error *err)
{
    struct np_portrec *rec;
    struct np_linkinfo li;
    struct np_net *n = NULL;
    char master[IFNAMSIZ];
    int r;

    if (!devname_ok(dev, IFNAMSIZ - 1))
        return np_fail(err, EINVAL, "port %.16s: dev: 1..15 of [A-Za-z0-9._-]", dev ? dev : "");
    if ((r = ensure_loaded(np, err)) < 0)
        return r;
    rec = np_port_find(np, dev);
    if (rec && rec->network[0])
        n = np_net_find(np, rec->network);
    r = np_link_get(np, dev, &li);
    if (r == 0) {
        if (!port_ours(&li))
            return np_fail(err, EPERM, "port %s: dev: not made by compute-agent: left alone", dev);
        if (!n && li.master > 0 && np_link_name(np, li.master, master) == 0)
            n = net_by_bridge(np, master);
        if (n && n->type == NP_NET_OVS) {
            const char *del[] = {"ovs-vsctl", "--timeout=10", "--if-exists", "del-port", n->bridge, dev, NULL};
            np_ovs_run(np, del, NULL);
        }
        /* The device goes first: its filter entries then guard nothing. */
        if ((r = np_link_delete_fast(np, dev)) < 0)
            return np_fail(err, r, "port %s: dev: cannot delete it: %s", dev, strerror(-r));
    } else if (r != -ENODEV) {
        return np_fail(err, r, "port %s: dev: %s", dev, strerror(-r));
    }
    if (rec) {
        if ((r = np_filter_del(np, rec, err)) < 0)
            return r;
        if (n && rec->has_dev && strcmp(rec->network, n->name) == 0 && n->users > 0)
            n->users--;
        port_forget(np, rec);
    }
    if (n)
        net_release(np, n);
    return 0;
}

int netplug_unplug(struct netplug *np, const char *dev, struct np_error *err)
{
    int r;

    pthread_mutex_lock(&np->lock);
    r = unplug_locked(np, dev, err);
    pthread_mutex_unlock(&np->lock);
    return r;
}

/* ---- sync ---- */

struct sweep_ctx {
    struct netplug *np;
    char (*names)[IFNAMSIZ];
    size_t n, cap;
};

/* Collects our network devices that belong to no recorded network. */
static int sweep_link(void *opaque, const struct np_linkinfo *li, const char *name)
{
    struct sweep_ctx *c = opaque;

    if (!netdev_ours(li) || port_kind(li))
        return 0;
    for (struct np_net *n = c->np->nets; n; n = n->next)
        if (strcmp(n->bridge, name) == 0 || strcmp(n->uplink, name) == 0)
            return 0;
    if (c->n == c->cap) {
        size_t ncap = c->cap ? c->cap * 2 : 16;
        void *p = realloc(c->names, ncap * sizeof(*c->names));
        if (!p)
            return -ENOMEM;
        c->names = p;
        c->cap = ncap;
    }
    strscpy(c->names[c->n++], name, IFNAMSIZ);
    return 0;
}

/* Our devices of networks no longer configured: a bridge goes when only our
 * uplinks (or nothing) are in it; an uplink goes when its bridge goes or it
 * has none. */
static void sweep_orphans(struct netplug *np)
{
    struct sweep_ctx c = {.np = np};
    struct np_linkinfo li;

    if (np_link_foreach(np, sweep_link, &c) < 0)
        goto out;
    for (size_t i = 0; i < c.n; i++) {
        if (np_link_get(np, c.names[i], &li) < 0 || strcmp(li.kind, "bridge") != 0)
            continue;
        int others = 0;
        for (size_t j = 0; j < c.n; j++) {
            struct np_linkinfo s;
            if (j != i && np_link_get(np, c.names[j], &s) == 0 && s.master == li.ifindex)
                others--;
        }
        others += np_bridge_slaves(np, li.ifindex, NULL);
        if (others == 0)
            np_link_delete(np, c.names[i]);
    }
    for (size_t i = 0; i < c.n; i++) {
        if (np_link_get(np, c.names[i], &li) < 0 || strcmp(li.kind, "bridge") == 0)
            continue;
        if (li.master == 0)
            np_link_delete(np, c.names[i]);
    }
out:
    free(c.names);
}

int netplug_sync(struct netplug *np, const struct np_port *keep, size_t n, struct np_error *err)
{
    struct np_error e1;
    char (*gone)[IFNAMSIZ] = NULL;
    size_t ngone = 0, cap = 0;
    int first = 0, r;

    pthread_mutex_lock(&np->lock);
    np->loaded = false;
    if ((r = ensure_loaded(np, err)) < 0)
        goto out;
    for (size_t i = 0; i < n; i++) {
        r = plug_locked(np, &keep[i], &e1);
        if (r < 0 && !first) {
            first = r;
            if (err)
                *err = e1;
        }
    }
    for (struct np_portrec *p = np->ports; p; p = p->next) {
        bool kept = false;
        for (size_t i = 0; i < n && !kept; i++)
            kept = keep[i].dev && strcmp(keep[i].dev, p->dev) == 0;
        if (kept)
            continue;
        if (ngone == cap) {
            size_t ncap = cap ? cap * 2 : 16;
            void *q = realloc(gone, ncap * sizeof(*gone));
            if (!q) {
                r = np_fail(err, ENOMEM, "sync: out of memory");
                goto out;
            }
            gone = q;
            cap = ncap;
        }
        strscpy(gone[ngone++], p->dev, IFNAMSIZ);
    }
    for (size_t i = 0; i < ngone; i++) {
        r = unplug_locked(np, gone[i], &e1);
        if (r < 0 && !first) {
            first = r;
            if (err)
                *err = e1;
        }
    }
    for (struct np_net *net = np->nets; net; net = net->next)
        net_release(np, net);
    sweep_orphans(np);
    r = first;
out:
    free(gone);
    pthread_mutex_unlock(&np->lock);
    return r;
}

bool netplug_port_filtered(struct netplug *np, const char *dev)
{
    struct np_portrec *rec;
    bool r = false;

    if (!dev)
        return false;
    pthread_mutex_lock(&np->lock);
    if (np->antispoof && ensure_loaded(np, NULL) == 0 && (rec = np_port_find(np, dev)) && rec->filtered &&
        rec->has_dev) {
        uint32_t gen;
        /* Listing the table costs milliseconds; the ruleset's generation one
         * round trip. The generation is read before the listing, so a change
         * made during it shows as a new generation next time. */
        if (np_gen_get(np, &gen) < 0) {
            r = np_filter_verify(np, dev) == 0; /* no generation: the listing, every time */
        } else if (rec->verified && rec->verified_gen == gen) {
            r = true;
        } else {
            r = np_filter_verify(np, dev) == 0;
            rec->verified = r;
            rec->verified_gen = gen;
        }
    }
    pthread_mutex_unlock(&np->lock);
    return r;
}
