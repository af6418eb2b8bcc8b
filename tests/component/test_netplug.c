/* tests/component/test_netplug.c: net-plug against the real kernel (netlink,
 * nftables bridge family), never the machine's own: the process unshares its
 * network namespace at start, and every case gets a fresh one of its own
 * (unshare again), so nothing it makes can outlive it or touch the host; the
 * client namespaces of the spoof case are anonymous too (held by descriptors).
 * Exits 77 (SKIP) when it cannot (not root, no CLONE_NEWNET, no /dev/net/tun).
 *
 * Cases: validation messages; a bridge network with taps and veths (agent-made
 * bridge deleted with its last port, an operator's bridge never changed);
 * MTU; VXLAN; VLAN (this host's kernel has no 802.1Q: a clean -EOPNOTSUPP and
 * nothing left; where it has, the device is checked); idempotency; a failure
 * undone; sync after a simulated crash; concurrent plugs; ovs without
 * ovs-vsctl; the spoof test (raw frames and the kernel's own stack from two
 * client namespaces, drops asserted by nft counters and by a listener on the
 * bridge that must not see them) and netplug_peer(); DHCP: Debian's dnsmasq
 * run with net-plug/dhcp.c's argv and files answers a DISCOVER sent through a
 * filtered port (skipped without dnsmasq); netplug_peer() after a real TCP
 * connection (entry present, absent, the MAC on another port, VLAN filtering); the cost of one plug + unplug;
 * the bridge FDB (learning off on guest ports, the MAC pinned: link-local
 * frames with a victim's MAC move nothing, agent-made and operator bridge);
 * fake DHCP servers (anything to udp 68) and link-local frames dropped; the
 * filter table flushed or edited by someone else (seen, put back, also by the
 * watch thread); the host firewall (table inet) with ip_forward=1. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/if_packet.h>
#include <linux/if_tun.h>
#include <net/ethernet.h>
#include <netinet/ip.h>
#include <netinet/udp.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <spawn.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>

#include <netlink/netlink.h>
#include <nftables/libnftables.h>
#include <netlink/route/addr.h>
#include <netlink/route/link.h>
#include <netlink/route/link/bridge.h>
#include <netlink/route/link/veth.h>
#include <netlink/route/link/vxlan.h>
#include <netlink/route/link/vlan.h>
#include <netlink/route/neighbour.h>
#include <netlink/route/route.h>

#include "common/util.h"
#include "net-plug/dhcp.h"
#include "net-plug/netplug-internal.h"

#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <signal.h>

extern char **environ;

static int main_ns = -1; /* the current case's namespace */

/* ---- namespace and netlink helpers (the test's own, not netplug's) ---- */

static void write_file(const char *path, const char *s)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd >= 0) {
        ssize_t n = write(fd, s, strlen(s));
        (void)n;
        close(fd);
    }
}

static struct nl_sock *t_sock(void)
{
    struct nl_sock *sk = nl_socket_alloc();
    assert_non_null(sk);
    assert_int_equal(nl_connect(sk, NETLINK_ROUTE), 0);
    return sk;
}

static int t_change(const char *name, void (*fn)(struct rtnl_link *chg, void *arg), void *arg)
{
    struct nl_sock *sk = t_sock();
    struct rtnl_link *orig = NULL, *chg = rtnl_link_alloc();
    int r = rtnl_link_get_kernel(sk, 0, name, &orig);

    if (r == 0) {
        fn(chg, arg);
        r = rtnl_link_change(sk, orig, chg, 0);
        rtnl_link_put(orig);
    }
    rtnl_link_put(chg);
    nl_socket_free(sk);
    return r;
}

static void chg_up(struct rtnl_link *chg, void *arg)
{
    (void)arg;
    rtnl_link_set_flags(chg, IFF_UP);
}
static void chg_nsfd(struct rtnl_link *chg, void *arg) { rtnl_link_set_ns_fd(chg, *(int *)arg); }
static void chg_mac(struct rtnl_link *chg, void *arg)
{
    struct nl_addr *a = nl_addr_build(AF_LLC, arg, 6);
    rtnl_link_set_addr(chg, a);
    nl_addr_put(a);
}
static void chg_nomaster(struct rtnl_link *chg, void *arg)
{
    (void)arg;
    rtnl_link_set_master(chg, 0);
}

static void t_up(const char *name) { assert_int_equal(t_change(name, chg_up, NULL), 0); }

static void t_addr(const char *name, const char *ip, int prefix, bool add)
{
    struct nl_sock *sk = t_sock();
    struct rtnl_addr *a = rtnl_addr_alloc();
    struct in_addr in;
    struct nl_addr *l;

    inet_pton(AF_INET, ip, &in);
    l = nl_addr_build(AF_INET, &in, 4);
    nl_addr_set_prefixlen(l, prefix);
    rtnl_addr_set_ifindex(a, (int)if_nametoindex(name));
    rtnl_addr_set_local(a, l);
    assert_int_equal(add ? rtnl_addr_add(sk, a, 0) : rtnl_addr_delete(sk, a, 0), 0);
    nl_addr_put(l);
    rtnl_addr_put(a);
    nl_socket_free(sk);
}

static void t_bridge(const char *name, int mtu)
{
    struct nl_sock *sk = t_sock();
    struct rtnl_link *l = rtnl_link_bridge_alloc();

    rtnl_link_set_name(l, name);
    if (mtu)
        rtnl_link_set_mtu(l, (unsigned)mtu);
    assert_int_equal(rtnl_link_add(sk, l, NLM_F_CREATE | NLM_F_EXCL), 0);
    rtnl_link_put(l);
    nl_socket_free(sk);
}

/* A device as a crash between its create and its alias leaves it: our group, no alias. */
static void t_orphan_bridge(const char *name)
{
    struct nl_sock *sk = t_sock();
    struct rtnl_link *l = rtnl_link_bridge_alloc();

    rtnl_link_set_name(l, name);
    rtnl_link_set_group(l, NP_DEV_GROUP);
    assert_int_equal(rtnl_link_add(sk, l, NLM_F_CREATE | NLM_F_EXCL), 0);
    rtnl_link_put(l);
    nl_socket_free(sk);
}

static void t_veth(const char *a, const char *b)
{
    struct nl_sock *sk = t_sock();
    assert_int_equal(rtnl_link_veth_add(sk, a, b, getpid()), 0);
    nl_socket_free(sk);
}

/* A persistent tap no one marked: an operator's. */
static void t_foreign_tap(const char *name)
{
    struct ifreq ifr;
    int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);

    assert_true(fd >= 0);
    memset(&ifr, 0, sizeof(ifr));
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
    strscpy(ifr.ifr_name, name, sizeof(ifr.ifr_name));
    assert_int_equal(ioctl(fd, TUNSETIFF, &ifr), 0);
    assert_int_equal(ioctl(fd, TUNSETPERSIST, 1), 0);
    close(fd);
}

static bool t_exists(const char *name) { return if_nametoindex(name) != 0; }

/* Binding to a local address works only where it is assigned. */
static bool t_has_addr(const char *ip)
{
    struct sockaddr_in sa = {.sin_family = AF_INET};
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0), r;

    inet_pton(AF_INET, ip, &sa.sin_addr);
    r = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
    close(fd);
    return r == 0;
}

/* A fresh namespace for each case. */
static int setup_ns(void **state)
{
    (void)state;
    if (main_ns >= 0)
        close(main_ns);
    assert_int_equal(unshare(CLONE_NEWNET), 0);
    main_ns = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
    assert_true(main_ns >= 0);
    t_up("lo");
    return 0;
}

/* A client namespace, held by the returned descriptor; the thread stays in main_ns. */
static int t_client_ns(void)
{
    int fd;

    assert_int_equal(unshare(CLONE_NEWNET), 0);
    fd = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    /* no IPv6 chatter (router solicitations, MLD) to blur the counters */
    write_file("/proc/sys/net/ipv6/conf/all/disable_ipv6", "1");
    write_file("/proc/sys/net/ipv6/conf/default/disable_ipv6", "1");
    t_up("lo");
    assert_int_equal(setns(main_ns, CLONE_NEWNET), 0);
    return fd;
}

static void enter(int fd) { assert_int_equal(setns(fd, CLONE_NEWNET), 0); }

static struct netplug *t_np(bool antispoof)
{
    struct netplug_config cfg = {.nft_table = NULL, .antispoof = antispoof, .ovs_vsctl = NULL};
    struct np_error e = {0};
    struct netplug *np = NULL;

    assert_int_equal(netplug_new(&cfg, &np, &e), 0);
    return np;
}

static void t_net_add(struct netplug *np, const struct np_network *n)
{
    struct np_error e = {0};
    int r = netplug_network_add(np, n, &e);
    if (r != 0)
        fail_msg("network_add %s: %d %s", n->name, r, e.msg);
}

static void t_plug(struct netplug *np, const struct np_port *p)
{
    struct np_error e = {0};
    int r = netplug_plug(np, p, &e);
    if (r != 0)
        fail_msg("plug %s: %d %s", p->dev, r, e.msg);
}

static void t_unplug(struct netplug *np, const char *dev)
{
    struct np_error e = {0};
    int r = netplug_unplug(np, dev, &e);
    if (r != 0)
        fail_msg("unplug %s: %d %s", dev, r, e.msg);
}

static struct np_linkinfo t_info(struct netplug *np, const char *name)
{
    struct np_linkinfo li;
    int r = np_link_get(np, name, &li);
    if (r != 0)
        fail_msg("link %s: %d", name, r);
    return li;
}

static uint32_t ip4(const char *s)
{
    struct in_addr a;
    assert_int_equal(inet_pton(AF_INET, s, &a), 1);
    return a.s_addr;
}

static struct np_port port(const char *net, const char *dev, enum np_port_kind k, uint8_t last, const char *ip)
{
    struct np_port p = {.network = net, .dev = dev, .kind = k, .mac = {0x52, 0x54, 0x00, 0x11, 0x22, last},
                        .ipv4 = ip ? ip4(ip) : 0, .mtu = 0, .owner = "6a6a6a6a-0000-4000-8000-00000000000a"};
    return p;
}

static bool dump_has(struct netplug *np, const char *needle)
{
    char *d = netplug_filter_dump(np);
    bool r = d && strstr(d, needle);
    free(d);
    return r;
}

/* ---- cases ---- */

static int udp_socket(uint32_t bind_ip, uint16_t port);
static void udp_send_from(int ns, uint32_t dst, uint16_t port, const char *msg);
static bool udp_recv(int fd, const char *want, int timeout_ms);

static void expect_add_error(struct netplug *np, const struct np_network *n, int code, const char *msg)
{
    struct np_error e = {0};
    int r = netplug_network_add(np, n, &e);
    if (r != code || strcmp(e.msg, msg) != 0)
        fail_msg("network_add: got %d \"%s\", want %d \"%s\"", r, e.msg, code, msg);
    assert_int_equal(e.code, code);
}

static void test_validation(void **state)
{
    struct netplug *np = t_np(true);
    struct np_error e = {0};
    (void)state;

    expect_add_error(np, &(struct np_network){.name = "n1", .type = NP_NET_VXLAN, .vni = 0}, -EINVAL,
                     "network n1: vni: not in 1..16777215");
    expect_add_error(np, &(struct np_network){.name = "n1", .type = NP_NET_VXLAN, .vni = 16777216}, -EINVAL,
                     "network n1: vni: not in 1..16777215");
    expect_add_error(np, &(struct np_network){.name = "n1", .type = NP_NET_VLAN, .parent = "eth0", .vlan_id = 4095},
                     -EINVAL, "network n1: vlan_id: not in 1..4094");
    expect_add_error(np, &(struct np_network){.name = "n1", .type = NP_NET_VLAN, .vlan_id = 5}, -EINVAL,
                     "network n1: parent: required for type vlan");
    expect_add_error(np, &(struct np_network){.name = "n1", .type = NP_NET_BRIDGE}, -EINVAL,
                     "network n1: bridge: required for type bridge");
    expect_add_error(np, &(struct np_network){.name = "n1", .type = NP_NET_BRIDGE, .bridge = "a-very-long-bridge0"},
                     -EINVAL, "network n1: bridge: 1..15 of [A-Za-z0-9._-]");
    expect_add_error(np, &(struct np_network){.name = "n1", .type = NP_NET_BRIDGE, .bridge = "br0", .mtu = 67},
                     -EINVAL, "network n1: mtu: not in 68..65535");
    expect_add_error(np, &(struct np_network){.name = "n1", .type = NP_NET_BRIDGE, .bridge = "br0",
                                              .gateway = "10.0.0.1"},
                     -EINVAL, "network n1: gateway: not an IPv4 address/prefix (10.0.0.1/24)");
    expect_add_error(np, &(struct np_network){.name = "n1", .type = NP_NET_VXLAN, .vni = 5, .remote = "10.0.0.2",
                                              .group = "239.1.1.1"},
                     -EINVAL, "network n1: remote: give remote or group, not both");
    expect_add_error(np, &(struct np_network){.name = "n1", .type = NP_NET_VXLAN, .vni = 5, .group = "10.1.1.1"},
                     -EINVAL, "network n1: group: not a multicast IPv4 address");
    expect_add_error(np, &(struct np_network){.name = "n1", .type = NP_NET_VXLAN, .vni = 5, .local = "x"}, -EINVAL,
                     "network n1: local: not an IPv4 address");
    expect_add_error(np, &(struct np_network){.name = "bad name", .type = NP_NET_BRIDGE, .bridge = "b"}, -EINVAL,
                     "network bad name: name: 1..63 of [A-Za-z0-9._-]");
    expect_add_error(np, &(struct np_network){.name = "n1", .type = (enum np_net_type)9, .bridge = "b"}, -EINVAL,
                     "network n1: type: not one of bridge, vlan, vxlan, ovs");

    t_net_add(np, &(struct np_network){.name = "n1", .type = NP_NET_BRIDGE, .bridge = "cab-v1"});
    t_net_add(np, &(struct np_network){.name = "n1", .type = NP_NET_BRIDGE, .bridge = "cab-v1"}); /* same: 0 */
    expect_add_error(np, &(struct np_network){.name = "n1", .type = NP_NET_BRIDGE, .bridge = "cab-v2"}, -EEXIST,
                     "network n1: already defined differently");
    expect_add_error(np, &(struct np_network){.name = "n2", .type = NP_NET_BRIDGE, .bridge = "cab-v1"}, -EEXIST,
                     "network n2: bridge: cab-v1 is already used by network n1");

    char br[16];
    assert_int_equal(netplug_network_bridge(np, "n1", br), 0);
    assert_string_equal(br, "cab-v1");
    assert_int_equal(netplug_network_bridge(np, "nope", br), -ENOENT);
    t_net_add(np, &(struct np_network){.name = "a-long-network-name", .type = NP_NET_VXLAN, .vni = 9});
    assert_int_equal(netplug_network_bridge(np, "a-long-network-name", br), 0);
    assert_string_equal(br, "cabr-a-long-net");

    struct np_port p = port("nope", "tapx", NP_PORT_TAP, 1, "10.0.0.2");
    assert_int_equal(netplug_plug(np, &p, &e), -ENOENT);
    assert_string_equal(e.msg, "port tapx: network: unknown network nope");
    p = port("n1", "tap-too-long-name", NP_PORT_TAP, 1, NULL);
    assert_int_equal(netplug_plug(np, &p, &e), -EINVAL);
    assert_string_equal(e.msg, "port tap-too-long-nam: dev: 1..15 of [A-Za-z0-9._-]");
    p = port("n1", "veth-15-chars-x", NP_PORT_VETH, 1, NULL);
    assert_int_equal(netplug_plug(np, &p, &e), -EINVAL);
    assert_string_equal(e.msg, "port veth-15-chars-x: dev: 1..14 of [A-Za-z0-9._-]");
    p = port("n1", "tapm", NP_PORT_TAP, 1, NULL);
    p.mac[0] = 0x01;
    assert_int_equal(netplug_plug(np, &p, &e), -EINVAL);
    assert_string_equal(e.msg, "port tapm: mac: not a unicast MAC address");
    p = port("n1", "tapm", NP_PORT_TAP, 1, NULL);
    p.mtu = 70000;
    assert_int_equal(netplug_plug(np, &p, &e), -EINVAL);
    assert_string_equal(e.msg, "port tapm: mtu: not in 68..65535");
    assert_false(t_exists("cab-v1")); /* nothing made by a refused call */
    netplug_free(np);
}

static void test_bridge_ports(void **state)
{
    struct netplug *np = t_np(true);
    struct np_linkinfo li, br;
    (void)state;

    t_net_add(np, &(struct np_network){.name = "lan", .type = NP_NET_BRIDGE, .bridge = "cab-lan",
                                       .gateway = "10.10.0.1/24", .metadata = true});
    struct np_port t1 = port("lan", "tapa1", NP_PORT_TAP, 0x01, "10.10.0.11");
    struct np_port v1 = port("lan", "vetha1", NP_PORT_VETH, 0x02, "10.10.0.12");
    t1.owner = "11111111-1111-4111-8111-111111111111";
    t_plug(np, &t1);
    t_plug(np, &v1);

    br = t_info(np, "cab-lan");
    assert_string_equal(br.kind, "bridge");
    assert_string_equal(br.alias, "compute-agent");
    assert_int_equal(br.group, NP_DEV_GROUP); /* set in the create itself */
    assert_true(br.flags & IFF_UP);
    assert_true(t_has_addr("10.10.0.1"));
    assert_true(t_has_addr("169.254.169.254"));

    li = t_info(np, "tapa1");
    assert_string_equal(li.kind, "tun");
    assert_string_equal(li.alias, "compute-agent:11111111-1111-4111-8111-111111111111");
    assert_int_equal(li.master, br.ifindex);
    assert_int_equal(li.group, NP_DEV_GROUP);
    assert_true(li.flags & IFF_UP);
    const uint8_t host1[6] = {0xfe, 0x54, 0x00, 0x11, 0x22, 0x01};
    assert_memory_equal(li.addr, host1, 6);
    assert_true(netplug_port_filtered(np, "tapa1"));

    li = t_info(np, "vetha1");
    assert_string_equal(li.kind, "veth");
    assert_int_equal(li.master, br.ifindex);
    struct np_linkinfo peer = t_info(np, "vetha1p");
    assert_memory_equal(peer.addr, v1.mac, 6); /* the peer is the guest's end */
    assert_int_equal(peer.master, 0);
    assert_true(netplug_port_filtered(np, "vetha1"));
    assert_true(dump_has(np, "\"tapa1\" . 52:54:00:11:22:01"));
    assert_true(dump_has(np, "\"vetha1\" . 10.10.0.12"));

    t_unplug(np, "tapa1");
    assert_false(t_exists("tapa1"));
    assert_true(t_exists("cab-lan")); /* vetha1 still uses it */
    assert_false(netplug_port_filtered(np, "tapa1"));
    assert_false(dump_has(np, "\"tapa1\""));
    t_unplug(np, "vetha1");
    assert_false(t_exists("vetha1"));
    assert_false(t_exists("vetha1p"));
    assert_false(t_exists("cab-lan")); /* ours and unused: gone */
    assert_false(dump_has(np, "\"vetha1\""));
    netplug_free(np);
}

static void test_operator_bridge(void **state)
{
    struct netplug *np = t_np(true);
    struct np_error e = {0};
    struct np_linkinfo before, after, li;
    (void)state;

    t_bridge("opbr0", 0); /* left down, no alias: the operator's */
    t_foreign_tap("optap0");
    before = t_info(np, "opbr0");
    t_net_add(np, &(struct np_network){.name = "op", .type = NP_NET_BRIDGE, .bridge = "opbr0",
                                       .gateway = "10.20.0.1/24", .metadata = true});
    struct np_port a = port("op", "tapo1", NP_PORT_TAP, 0x31, "10.20.0.5");
    struct np_port b = port("op", "tapo2", NP_PORT_TAP, 0x32, "10.20.0.6");
    t_plug(np, &a);
    t_plug(np, &b);
    li = t_info(np, "tapo1");
    assert_int_equal(li.master, before.ifindex);
    after = t_info(np, "opbr0");
    assert_false(after.flags & IFF_UP); /* never changed */
    assert_string_equal(after.alias, "");
    assert_false(t_has_addr("10.20.0.1"));

    /* a device of the same name that we did not make */
    struct np_port c = port("op", "optap0", NP_PORT_TAP, 0x33, NULL);
    assert_int_equal(netplug_plug(np, &c, &e), -EEXIST);
    assert_string_equal(e.msg, "port optap0: dev: a device of that name exists and was not made by compute-agent");
    assert_int_equal(netplug_unplug(np, "optap0", &e), -EPERM);
    assert_string_equal(e.msg, "port optap0: dev: not made by compute-agent: left alone");
    assert_true(t_exists("optap0"));
    assert_int_equal(netplug_unplug(np, "opbr0", &e), -EPERM);

    t_unplug(np, "tapo1");
    t_unplug(np, "tapo2");
    assert_true(t_exists("opbr0")); /* survives its last port */
    assert_true(t_exists("optap0"));
    after = t_info(np, "opbr0");
    assert_int_equal(after.mtu, before.mtu);
    assert_int_equal(after.flags & IFF_UP, 0);
    netplug_free(np);
}

static void test_mtu(void **state)
{
    struct netplug *np = t_np(true);
    (void)state;

    t_net_add(np, &(struct np_network){.name = "m", .type = NP_NET_BRIDGE, .bridge = "cab-m", .mtu = 1450});
    struct np_port a = port("m", "tapm1", NP_PORT_TAP, 0x41, NULL);
    struct np_port b = port("m", "tapm2", NP_PORT_TAP, 0x42, NULL);
    struct np_port c = port("m", "tapm3", NP_PORT_TAP, 0x43, NULL);
    b.mtu = 1400; /* below the bridge: the bridge is not pulled down */
    c.mtu = 9000;
    t_plug(np, &a);
    t_plug(np, &b);
    t_plug(np, &c);
    assert_int_equal(t_info(np, "cab-m").mtu, 1450);
    assert_int_equal(t_info(np, "tapm1").mtu, 1450);
    assert_int_equal(t_info(np, "tapm2").mtu, 1450);
    assert_int_equal(t_info(np, "tapm3").mtu, 9000);
    assert_int_equal(t_info(np, "cab-m").mtu, 1450);

    /* an operator's bridge at 1500 with a 1400 port: stays 1500 */
    t_bridge("opbr1", 0);
    t_net_add(np, &(struct np_network){.name = "o", .type = NP_NET_BRIDGE, .bridge = "opbr1"});
    struct np_port d = port("o", "tapm4", NP_PORT_TAP, 0x44, NULL);
    d.mtu = 1400;
    t_plug(np, &d);
    assert_int_equal(t_info(np, "opbr1").mtu, 1500);
    assert_int_equal(t_info(np, "tapm4").mtu, 1500);
    netplug_free(np);
}

static void test_vxlan(void **state)
{
    struct netplug *np = t_np(true);
    struct nl_sock *sk;
    struct rtnl_link *l = NULL;
    uint32_t vni = 0, portno = 0, up = 0;
    (void)state;

    t_veth("caa-u0", "caa-u1");
    t_up("caa-u0");
    t_up("caa-u1");
    t_addr("caa-u0", "10.88.0.1", 24, true);
    t_net_add(np, &(struct np_network){.name = "vx1", .type = NP_NET_VXLAN, .vni = 4242, .local = "10.88.0.1",
                                       .remote = "10.88.0.2", .parent = "caa-u0", .port = 4790, .mtu = 1400,
                                       .gateway = "10.90.0.1/24"});
    struct np_port a = port("vx1", "tapx1", NP_PORT_TAP, 0x51, "10.90.0.5");
    t_plug(np, &a);

    struct np_linkinfo br = t_info(np, "cabr-vx1"), vx = t_info(np, "cavx-vx1");
    assert_string_equal(vx.kind, "vxlan");
    assert_string_equal(vx.alias, "compute-agent");
    assert_int_equal(vx.master, br.ifindex);
    assert_true(vx.flags & IFF_UP);
    assert_int_equal(vx.mtu, 1400);
    assert_int_equal(br.mtu, 1400);
    assert_int_equal(t_info(np, "tapx1").mtu, 1400);
    assert_int_equal(t_info(np, "tapx1").master, br.ifindex);
    assert_true(t_has_addr("10.90.0.1"));

    sk = t_sock();
    assert_int_equal(rtnl_link_get_kernel(sk, 0, "cavx-vx1", &l), 0);
    assert_int_equal(rtnl_link_vxlan_get_id(l, &vni), 0);
    assert_int_equal(vni, 4242);
    assert_int_equal(rtnl_link_vxlan_get_port(l, &portno), 0);
    assert_int_equal(portno, 4790);
    assert_int_equal(rtnl_link_vxlan_get_link(l, &up), 0);
    assert_int_equal(up, if_nametoindex("caa-u0"));
    struct nl_addr *g = NULL, *loc = NULL;
    assert_int_equal(rtnl_link_vxlan_get_group(l, &g), 0);
    assert_int_equal(rtnl_link_vxlan_get_local(l, &loc), 0);
    assert_int_equal(*(uint32_t *)nl_addr_get_binary_addr(g), ip4("10.88.0.2"));
    assert_int_equal(*(uint32_t *)nl_addr_get_binary_addr(loc), ip4("10.88.0.1"));
    nl_addr_put(g);
    nl_addr_put(loc);
    rtnl_link_put(l);
    nl_socket_free(sk);

    /* the overlay carries traffic: the underlay's other end in a client
     * namespace with a VXLAN device of the same vni, talking to the gateway */
    int ns = t_client_ns();
    assert_int_equal(t_change("caa-u1", chg_nsfd, &ns), 0);
    enter(ns);
    t_up("caa-u1");
    t_addr("caa-u1", "10.88.0.2", 24, true);
    {
        struct nl_sock *csk = t_sock();
        struct rtnl_link *v = rtnl_link_vxlan_alloc();
        struct in_addr ra;
        rtnl_link_set_name(v, "caa-vx");
        rtnl_link_vxlan_set_id(v, 4242);
        inet_pton(AF_INET, "10.88.0.1", &ra);
        struct nl_addr *rem = nl_addr_build(AF_INET, &ra, 4);
        rtnl_link_vxlan_set_group(v, rem);
        rtnl_link_vxlan_set_port(v, 4790);
        rtnl_link_vxlan_set_link(v, if_nametoindex("caa-u1"));
        rtnl_link_set_mtu(v, 1400);
        assert_int_equal(rtnl_link_add(csk, v, NLM_F_CREATE | NLM_F_EXCL), 0);
        nl_addr_put(rem);
        rtnl_link_put(v);
        nl_socket_free(csk);
    }
    t_up("caa-vx");
    t_addr("caa-vx", "10.90.0.2", 24, true);
    enter(main_ns);
    int u = udp_socket(ip4("10.90.0.1"), 20010);
    udp_send_from(ns, ip4("10.90.0.1"), 20010, "over-vxlan");
    assert_true(udp_recv(u, "over-vxlan", 3000));
    close(u);

    t_unplug(np, "tapx1");
    assert_false(t_exists("cabr-vx1"));
    assert_false(t_exists("cavx-vx1"));
    assert_true(t_exists("caa-u0")); /* the underlay is left alone */
    close(ns);

    /* a missing underlay: a clear error, nothing left */
    struct np_error e = {0};
    t_net_add(np, &(struct np_network){.name = "vx2", .type = NP_NET_VXLAN, .vni = 7, .parent = "nosuch0"});
    a = port("vx2", "tapx2", NP_PORT_TAP, 0x52, NULL);
    assert_int_equal(netplug_plug(np, &a, &e), -ENODEV);
    assert_string_equal(e.msg, "network vx2: parent: nosuch0: no such device");
    assert_false(t_exists("cabr-vx2"));
    assert_false(t_exists("tapx2"));
    netplug_free(np);
}

static void test_vlan(void **state)
{
    struct netplug *np = t_np(true);
    struct np_error e = {0};
    int r;
    (void)state;

    t_veth("caa-p0", "caa-p1");
    t_net_add(np, &(struct np_network){.name = "vl1", .type = NP_NET_VLAN, .parent = "caa-p0", .vlan_id = 100,
                                       .gateway = "10.100.0.1/24"});
    struct np_port a = port("vl1", "tapv1", NP_PORT_TAP, 0x61, "10.100.0.5");
    r = netplug_plug(np, &a, &e);
    if (r == -EOPNOTSUPP) {
        /* this kernel: CONFIG_VLAN_8021Q unset */
        assert_int_equal(e.code, -EOPNOTSUPP);
        assert_string_equal(e.msg, "network vl1: type: vlan: this kernel has no 802.1Q VLAN support "
                                   "(creating cavl-vl1 on caa-p0, id 100: Unknown device type)");
        assert_false(t_exists("cabr-vl1")); /* the bridge this call made is gone again */
        assert_false(t_exists("cavl-vl1"));
        assert_false(t_exists("tapv1"));
        assert_false(netplug_port_filtered(np, "tapv1"));
        print_message("VLAN: no 802.1Q in this kernel: plug failed cleanly (-EOPNOTSUPP) as it must\n");
    } else {
        if (r != 0)
            fail_msg("vlan plug: %d %s", r, e.msg);
        struct np_linkinfo vl = t_info(np, "cavl-vl1"), br = t_info(np, "cabr-vl1");
        assert_string_equal(vl.kind, "vlan");
        assert_int_equal(vl.master, br.ifindex);
        struct nl_sock *sk = t_sock();
        struct rtnl_link *l = NULL;
        assert_int_equal(rtnl_link_get_kernel(sk, 0, "cavl-vl1", &l), 0);
        assert_int_equal(rtnl_link_vlan_get_id(l), 100);
        assert_int_equal(rtnl_link_get_link(l), (int)if_nametoindex("caa-p0"));
        rtnl_link_put(l);
        nl_socket_free(sk);
        t_unplug(np, "tapv1");
        assert_false(t_exists("cavl-vl1"));
        assert_false(t_exists("cabr-vl1"));
    }
    assert_true(t_exists("caa-p0"));
    netplug_free(np);
}

static void test_idempotent(void **state)
{
    struct netplug *np = t_np(true);
    (void)state;

    t_net_add(np, &(struct np_network){.name = "i", .type = NP_NET_BRIDGE, .bridge = "cab-i",
                                       .gateway = "10.30.0.1/24"});
    struct np_port a = port("i", "tapi1", NP_PORT_TAP, 0x71, "10.30.0.5");
    struct np_port b = port("i", "vethi2", NP_PORT_VETH, 0x72, "10.30.0.6");
    t_plug(np, &a);
    t_plug(np, &b);
    int idx = t_info(np, "tapi1").ifindex, bidx = t_info(np, "cab-i").ifindex;
    t_plug(np, &a);
    t_plug(np, &b);
    assert_int_equal(t_info(np, "tapi1").ifindex, idx); /* not made again */
    assert_int_equal(t_info(np, "cab-i").ifindex, bidx);

    /* a changed address replaces the old entry */
    a.ipv4 = ip4("10.30.0.9");
    t_plug(np, &a);
    assert_true(dump_has(np, "\"tapi1\" . 10.30.0.9"));
    assert_false(dump_has(np, "\"tapi1\" . 10.30.0.5"));
    a.ipv4 = 0; /* none: no IPv4 entry at all */
    t_plug(np, &a);
    assert_false(dump_has(np, "\"tapi1\" . 10.30.0"));
    assert_true(netplug_port_filtered(np, "tapi1"));

    /* the table deleted behind our back (nft flush ruleset): made again */
    struct nft_ctx *nft = nft_ctx_new(NFT_CTX_DEFAULT);
    assert_non_null(nft);
    assert_int_equal(nft_run_cmd_from_buffer(nft, "delete table bridge compute_agent\n"), 0);
    nft_ctx_free(nft);
    struct np_port c = port("i", "tapi3", NP_PORT_TAP, 0x73, "10.30.0.7");
    t_plug(np, &c);
    assert_true(dump_has(np, "\"tapi3\" . 10.30.0.7"));
    assert_true(dump_has(np, "counter name \"mac_drop\" drop"));
    t_plug(np, &b); /* its entries were lost with the table: written again */
    assert_true(dump_has(np, "\"vethi2\" . 10.30.0.6"));
    t_unplug(np, "tapi3");

    /* a port detached behind our back is put back */
    assert_int_equal(t_change("tapi1", chg_nomaster, NULL), 0);
    t_plug(np, &a);
    assert_int_equal(t_info(np, "tapi1").master, bidx);

    t_unplug(np, "tapi1");
    t_unplug(np, "tapi1");
    t_unplug(np, "vethi2");
    t_unplug(np, "vethi2");
    t_unplug(np, "nosuchdev");
    assert_false(t_exists("cab-i"));
    netplug_free(np);
}

static void test_failure_undone(void **state)
{
    struct netplug *np = t_np(true);
    struct np_error e = {0};
    (void)state;

    /* the veth's peer name is taken: the plug fails after making the bridge */
    t_foreign_tap("vethf1p");
    t_net_add(np, &(struct np_network){.name = "f", .type = NP_NET_BRIDGE, .bridge = "cab-f",
                                       .gateway = "10.40.0.1/24"});
    struct np_port a = port("f", "vethf1", NP_PORT_VETH, 0x81, "10.40.0.5");
    assert_int_equal(netplug_plug(np, &a, &e), -EEXIST);
    assert_string_equal(e.msg, "port vethf1: dev: cannot make the veth pair: vethf1p exists");
    assert_false(t_exists("cab-f"));
    assert_false(t_exists("vethf1"));
    assert_true(t_exists("vethf1p"));
    assert_false(netplug_port_filtered(np, "vethf1"));

    /* with another port in place, the bridge stays and only the new port goes */
    struct np_port b = port("f", "tapf2", NP_PORT_TAP, 0x82, "10.40.0.6");
    t_plug(np, &b);
    assert_int_equal(netplug_plug(np, &a, &e), -EEXIST);
    assert_true(t_exists("cab-f"));
    assert_false(dump_has(np, "\"vethf1\""));
    t_unplug(np, "tapf2");
    assert_false(t_exists("cab-f"));
    netplug_free(np);

    /* the filter cannot go in (a table of that name with other sets): the port
     * never joins, and the bridge and tap this call made are gone again */
    struct nft_ctx *nft = nft_ctx_new(NFT_CTX_DEFAULT);
    assert_non_null(nft);
    assert_int_equal(nft_run_cmd_from_buffer(nft, "add table bridge caa_bad\n"
                                                  "add set bridge caa_bad macs { type ipv4_addr; }\n"), 0);
    nft_ctx_free(nft);
    struct netplug_config cfg = {.nft_table = "caa_bad", .antispoof = true, .ovs_vsctl = NULL};
    assert_int_equal(netplug_new(&cfg, &np, &e), 0);
    t_net_add(np, &(struct np_network){.name = "f", .type = NP_NET_BRIDGE, .bridge = "cab-f"});
    struct np_port c = port("f", "tapf3", NP_PORT_TAP, 0x83, "10.40.0.7");
    assert_int_equal(netplug_plug(np, &c, &e), -EIO);
    print_message("filter refused: %s\n", e.msg);
    assert_non_null(strstr(e.msg, "port tapf3: anti-spoofing: nftables table bridge caa_bad"));
    assert_false(t_exists("tapf3"));
    assert_false(t_exists("cab-f"));
    assert_false(netplug_port_filtered(np, "tapf3"));
    netplug_free(np);
}

static void test_sync_after_crash(void **state)
{
    struct netplug *np = t_np(true);
    struct np_error e = {0};
    (void)state;

    /* run 1 */
    struct np_network n1 = {.name = "s1", .type = NP_NET_BRIDGE, .bridge = "cab-s1", .gateway = "10.50.0.1/24"};
    struct np_network n2 = {.name = "s2", .type = NP_NET_VXLAN, .vni = 77};
    struct np_network n3 = {.name = "s3", .type = NP_NET_BRIDGE, .bridge = "cab-s3"};
    t_net_add(np, &n1);
    t_net_add(np, &n2);
    t_net_add(np, &n3);
    struct np_port p1 = port("s1", "taps1", NP_PORT_TAP, 0x91, "10.50.0.11");
    struct np_port p2 = port("s1", "taps2", NP_PORT_TAP, 0x92, "10.50.0.12");
    struct np_port p3 = port("s1", "taps3", NP_PORT_TAP, 0x93, "10.50.0.13");
    struct np_port p4 = port("s2", "veths4", NP_PORT_VETH, 0x94, "10.60.0.14");
    struct np_port p5 = port("s3", "taps5", NP_PORT_TAP, 0x95, "10.70.0.15");
    struct np_port gone = port("s1", "tapgone", NP_PORT_TAP, 0x96, "10.50.0.16");
    t_plug(np, &p1);
    t_plug(np, &p2);
    t_plug(np, &p3);
    t_plug(np, &p4);
    t_plug(np, &p5);
    t_plug(np, &gone);
    assert_int_equal(np_link_delete(np, "tapgone"), 0); /* its filter entries stay behind */
    t_bridge("opbr-s", 0);
    t_foreign_tap("optap-s");
    /* the operator's tap in the operator's bridge */
    {
        struct nl_sock *sk = t_sock();
        struct rtnl_link *orig = NULL, *chg = rtnl_link_alloc();
        assert_int_equal(rtnl_link_get_kernel(sk, 0, "optap-s", &orig), 0);
        rtnl_link_set_master(chg, (int)if_nametoindex("opbr-s"));
        assert_int_equal(rtnl_link_change(sk, orig, chg, 0), 0);
        rtnl_link_put(orig);
        rtnl_link_put(chg);
        nl_socket_free(sk);
    }
    /* crashes between a create and its alias */
    t_orphan_bridge("cabr-orph");
    assert_int_equal(np_veth_create(np, "vorph", "vorphp", (const uint8_t[6]){0xfe, 0, 0, 0, 0, 9},
                                    (const uint8_t[6]){0x52, 0, 0, 0, 0, 9}, 0, NP_ALIAS_PORT "x"), 0);
    assert_int_equal(np_link_set(np, "vorph", 0, -1, false, "", NULL), 0); /* alias lost */
    assert_int_equal(t_info(np, "vorph").group, NP_DEV_GROUP);
    /* crash in the middle of a plug: taps1 out of its bridge */
    assert_int_equal(t_change("taps1", chg_nomaster, NULL), 0);
    netplug_free(np); /* "crash": the kernel keeps everything */

    /* run 2: network s3 is no longer configured */
    np = t_np(true);
    t_net_add(np, &n1);
    t_net_add(np, &n2);
    /* before any sync, an unplug must not take the bridge others use */
    t_unplug(np, "taps2");
    assert_true(t_exists("cab-s1"));
    assert_true(netplug_port_filtered(np, "taps3"));

    p3.ipv4 = ip4("10.50.0.23");
    struct np_port keep[] = {p1, p3};
    int r = netplug_sync(np, keep, 2, &e);
    if (r != 0)
        fail_msg("sync: %d %s", r, e.msg);
    int br = (int)if_nametoindex("cab-s1");
    assert_true(br > 0);
    assert_int_equal(t_info(np, "taps1").master, br); /* put back */
    assert_int_equal(t_info(np, "taps3").master, br);
    assert_true(netplug_port_filtered(np, "taps1"));
    assert_true(netplug_port_filtered(np, "taps3"));
    assert_false(t_exists("veths4"));
    assert_false(t_exists("cabr-s2")); /* unused: gone */
    assert_false(t_exists("cavx-s2"));
    assert_false(t_exists("taps5"));   /* network gone from the config */
    assert_false(t_exists("cab-s3"));
    assert_false(t_exists("cabr-orph"));
    assert_false(t_exists("vorph"));
    assert_true(t_exists("opbr-s"));   /* never ours */
    assert_true(t_exists("optap-s"));
    assert_int_equal(t_info(np, "optap-s").master, (int)if_nametoindex("opbr-s"));
    assert_false(dump_has(np, "tapgone"));
    assert_false(dump_has(np, "veths4"));
    assert_false(dump_has(np, "taps2"));
    assert_false(dump_has(np, "taps5"));
    assert_true(dump_has(np, "\"taps3\" . 10.50.0.23"));
    assert_false(dump_has(np, "10.50.0.13"));
    assert_true(dump_has(np, "\"taps1\" . 10.50.0.11"));

    /* a second sync is a no-op */
    assert_int_equal(netplug_sync(np, keep, 2, &e), 0);
    assert_int_equal(t_info(np, "taps1").master, br);
    t_unplug(np, "taps1");
    t_unplug(np, "taps3");
    assert_false(t_exists("cab-s1"));
    netplug_free(np);
}


/* kill -9 in the middle of plugs and unplugs, at varied moments: a sync
 * afterwards leaves exactly the kept ports, filtered, and nothing else of ours */
struct leftovers {
    int ours_ports, ours_netdevs;
};

static int count_ours(void *opaque, const struct np_linkinfo *li, const char *name)
{
    struct leftovers *l = opaque;
    (void)name;
    if (strncmp(li->alias, NP_ALIAS_PORT, strlen(NP_ALIAS_PORT)) == 0 ||
        (li->group == NP_DEV_GROUP && (strcmp(li->kind, "tun") == 0 || strcmp(li->kind, "veth") == 0)))
        l->ours_ports++;
    else if (strcmp(li->alias, NP_ALIAS) == 0 || li->group == NP_DEV_GROUP)
        l->ours_netdevs++;
    return 0;
}

static void test_kill9(void **state)
{
    struct np_error e = {0};
    struct np_network n = {.name = "k9", .type = NP_NET_VXLAN, .vni = 99, .gateway = "10.45.0.1/24"};
    char dev[16];
    (void)state;

    for (int round = 0; round < 6; round++) {
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            struct netplug *c = NULL;
            if (netplug_new(NULL, &c, &e) != 0 || netplug_network_add(c, &n, &e) != 0)
                _exit(1);
            for (unsigned i = 0;; i++) {
                snprintf(dev, sizeof(dev), "%s%u", i % 2 ? "vk9-" : "tk9-", i % 12);
                struct np_port p = port("k9", dev, i % 2 ? NP_PORT_VETH : NP_PORT_TAP, (uint8_t)(i % 12 + 1),
                                        NULL);
                p.ipv4 = htonl(0x0a2d0000u + i % 12 + 2);
                if (i % 3 == 2)
                    netplug_unplug(c, dev, &e);
                else
                    netplug_plug(c, &p, &e);
            }
        }
        struct timespec ts = {0, 3000000L + round * 7000000L};
        nanosleep(&ts, NULL);
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);

        struct netplug *np = t_np(true);
        struct leftovers before = {0};
        assert_int_equal(np_link_foreach(np, count_ours, &before), 0);
        print_message("kill -9 after %ld ms: %d ports, %d network devices of ours\n", ts.tv_nsec / 1000000,
                      before.ours_ports, before.ours_netdevs);
        t_net_add(np, &n);
        struct np_port keep = port("k9", "tk9-0", NP_PORT_TAP, 1, NULL);
        keep.ipv4 = htonl(0x0a2d0000u + 2);
        int r = netplug_sync(np, &keep, 1, &e);
        if (r != 0)
            fail_msg("round %d: sync: %d %s", round, r, e.msg);
        struct leftovers l = {0};
        assert_int_equal(np_link_foreach(np, count_ours, &l), 0);
        if (l.ours_ports != 1 || l.ours_netdevs != 2)
            fail_msg("round %d: %d ports and %d network devices of ours left", round, l.ours_ports,
                     l.ours_netdevs);
        assert_true(netplug_port_filtered(np, "tk9-0"));
        char *d = netplug_filter_dump(np);
        assert_non_null(d);
        for (int i = 1; i < 12; i++) {
            snprintf(dev, sizeof(dev), "\"%s%d\"", i % 2 ? "vk9-" : "tk9-", i);
            if (strstr(d, dev))
                fail_msg("round %d: filter entries of %s left", round, dev);
        }
        free(d);
        t_unplug(np, "tk9-0");
        l = (struct leftovers){0};
        assert_int_equal(np_link_foreach(np, count_ours, &l), 0);
        assert_int_equal(l.ours_ports + l.ours_netdevs, 0);
        netplug_free(np);
    }
}

struct thr {
    struct netplug *np;
    int id;
    int fails;
};

static void *plug_thread(void *arg)
{
    struct thr *t = arg;
    char dev[16];
    struct np_error e;

    for (int i = 0; i < 8; i++) {
        snprintf(dev, sizeof(dev), "tapc%d-%d", t->id, i);
        struct np_port p = port("c", dev, NP_PORT_TAP, (uint8_t)(t->id * 16 + i + 1), NULL);
        p.ipv4 = htonl(0x0a500000u + (uint32_t)(t->id * 16 + i + 2));
        if (netplug_plug(t->np, &p, &e) != 0)
            t->fails++;
    }
    for (int i = 0; i < 8; i++) {
        snprintf(dev, sizeof(dev), "tapc%d-%d", t->id, i);
        if (netplug_unplug(t->np, dev, &e) != 0)
            t->fails++;
    }
    return NULL;
}

static void test_threads(void **state)
{
    struct netplug *np = t_np(true);
    pthread_t th[4];
    struct thr t[4];
    (void)state;

    t_net_add(np, &(struct np_network){.name = "c", .type = NP_NET_BRIDGE, .bridge = "cab-c"});
    for (int i = 0; i < 4; i++) {
        t[i] = (struct thr){.np = np, .id = i, .fails = 0};
        assert_int_equal(pthread_create(&th[i], NULL, plug_thread, &t[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(t[i].fails, 0);
    }
    assert_false(t_exists("cab-c"));
    assert_false(dump_has(np, "tapc"));
    netplug_free(np);
}

static void test_ovs(void **state)
{
    struct netplug *np = t_np(true);
    struct np_error e = {0};
    (void)state;

    t_net_add(np, &(struct np_network){.name = "ov", .type = NP_NET_OVS, .bridge = "br-int"});
    if (np->ovs_vsctl[0]) {
        netplug_free(np);
        skip(); /* ovs-vsctl installed: the ovs path is not exercised by this test */
    }
    struct np_port a = port("ov", "tapovs1", NP_PORT_TAP, 0xa1, NULL);
    assert_int_equal(netplug_plug(np, &a, &e), -ENOTSUP);
    assert_string_equal(e.msg, "network ov: type: ovs needs ovs-vsctl, which is not installed here");
    assert_false(t_exists("tapovs1"));
    print_message("ovs: ovs-vsctl not installed: plug refused with -ENOTSUP (SKIP of the ovs data path)\n");
    netplug_free(np);
}

/* ---- the spoof test ---- */

static const uint8_t BCAST[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};

static size_t frame_udp(uint8_t *f, const uint8_t src[6], const uint8_t dst[6], uint32_t sip, uint32_t dip,
                        uint16_t sport, uint16_t dport, const char *marker)
{
    struct ether_header eh;
    struct iphdr ip;
    struct udphdr uh;
    uint16_t words[sizeof(ip) / 2];
    size_t plen = strlen(marker);
    uint32_t sum = 0;

    memcpy(eh.ether_dhost, dst, 6);
    memcpy(eh.ether_shost, src, 6);
    eh.ether_type = htons(ETHERTYPE_IP);
    memset(&ip, 0, sizeof(ip));
    ip.version = 4;
    ip.ihl = 5;
    ip.ttl = 64;
    ip.protocol = IPPROTO_UDP;
    ip.saddr = sip;
    ip.daddr = dip;
    ip.tot_len = htons((uint16_t)(sizeof(ip) + sizeof(uh) + plen));
    memcpy(words, &ip, sizeof(ip));
    for (size_t i = 0; i < ARRAY_SIZE(words); i++)
        sum += words[i];
    while (sum >> 16)
        sum = (sum & 0xffff) + (sum >> 16);
    ip.check = (uint16_t)~sum;
    uh.source = htons(sport);
    uh.dest = htons(dport);
    uh.len = htons((uint16_t)(sizeof(uh) + plen));
    uh.check = 0;
    memcpy(f, &eh, sizeof(eh));
    memcpy(f + sizeof(eh), &ip, sizeof(ip));
    memcpy(f + sizeof(eh) + sizeof(ip), &uh, sizeof(uh));
    memcpy(f + sizeof(eh) + sizeof(ip) + sizeof(uh), marker, plen);
    return sizeof(eh) + sizeof(ip) + sizeof(uh) + plen;
}

static size_t frame_arp(uint8_t *f, const uint8_t src[6], const uint8_t sha[6], uint32_t spa, uint32_t tpa,
                        const char *marker)
{
    struct ether_header eh;
    uint8_t *a = f + sizeof(eh);

    memcpy(eh.ether_dhost, BCAST, 6);
    memcpy(eh.ether_shost, src, 6);
    eh.ether_type = htons(ETHERTYPE_ARP);
    memcpy(f, &eh, sizeof(eh));
    a[0] = 0, a[1] = 1;             /* htype ethernet */
    a[2] = 0x08, a[3] = 0x00;       /* ptype ipv4 */
    a[4] = 6, a[5] = 4, a[6] = 0, a[7] = 1; /* request */
    memcpy(a + 8, sha, 6);
    memcpy(a + 14, &spa, 4);
    memset(a + 18, 0, 6);
    memcpy(a + 24, &tpa, 4);
    memcpy(a + 28, marker, strlen(marker)); /* trailer: lets the listener tell frames apart */
    return sizeof(eh) + 28 + strlen(marker);
}

static size_t frame_other(uint8_t *f, const uint8_t src[6], uint16_t type, const char *marker)
{
    struct ether_header eh;

    memcpy(eh.ether_dhost, BCAST, 6);
    memcpy(eh.ether_shost, src, 6);
    eh.ether_type = htons(type);
    memcpy(f, &eh, sizeof(eh));
    memset(f + sizeof(eh), 0, 40);
    memcpy(f + sizeof(eh) + 40, marker, strlen(marker));
    return sizeof(eh) + 40 + strlen(marker);
}

struct spoof {
    struct netplug *np;
    int ns_good, ns_bad;
    int tx_good, tx_bad; /* raw sockets in the clients, on the peers */
    int rx;              /* raw socket on the bridge, in main_ns */
    uint8_t mac_good[6], mac_bad[6];
    uint32_t ip_good, ip_bad, gw;
    int fence;
};

static int raw_socket_in(int ns, const char *dev)
{
    struct sockaddr_ll sll = {.sll_family = AF_PACKET};
    int fd;

    enter(ns);
    fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    sll.sll_ifindex = (int)if_nametoindex(dev);
    assert_true(sll.sll_ifindex > 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&sll, sizeof(sll)), 0);
    enter(main_ns);
    return fd;
}

static void memmem_drain(int fd, const char *marker, bool *seen, const char *until, bool *until_seen,
                         int timeout_ms)
{
    uint8_t buf[2048];
    uint64_t end = now_mono_ns() + (uint64_t)timeout_ms * 1000000u;

    for (;;) {
        uint64_t now = now_mono_ns();
        if (until && *until_seen)
            return;
        if (now >= end)
            return;
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        if (poll(&pfd, 1, (int)((end - now) / 1000000u) + 1) <= 0)
            continue;
        struct sockaddr_ll from;
        socklen_t fl = sizeof(from);
        ssize_t n = recvfrom(fd, buf, sizeof(buf), MSG_DONTWAIT, (struct sockaddr *)&from, &fl);
        if (n <= 0 || from.sll_pkttype == PACKET_OUTGOING)
            continue;
        if (marker && memmem(buf, (size_t)n, marker, strlen(marker)))
            *seen = true;
        if (until && memmem(buf, (size_t)n, until, strlen(until)))
            *until_seen = true;
    }
}

static uint64_t counter(struct netplug *np, const char *name)
{
    uint64_t v = 0;
    assert_int_equal(netplug_counter(np, name, &v), 0);
    return v;
}

/* Sends one frame from the bad port, then an honest fence frame from the same
 * port: once the fence is on the bridge, the first one would have been too. */
static void send_expect(struct spoof *s, const uint8_t *f, size_t len, const char *marker, bool pass,
                        const char *counter_name)
{
    uint8_t fence[256];
    char fm[32];
    bool seen = false, fseen = false;
    uint64_t before = counter_name ? counter(s->np, counter_name) : 0;

    snprintf(fm, sizeof(fm), "FENCE-%d", s->fence++);
    size_t fl = frame_udp(fence, s->mac_bad, BCAST, s->ip_bad, s->gw | htonl(0xff), 5000, 5000, fm);
    assert_int_equal(send(s->tx_bad, f, len, 0), (ssize_t)len);
    assert_int_equal(send(s->tx_bad, fence, fl, 0), (ssize_t)fl);
    memmem_drain(s->rx, marker, &seen, fm, &fseen, 3000);
    assert_true(fseen);
    if (seen != pass)
        fail_msg("%s: %s on the bridge", marker, seen ? "seen" : "not seen");
    if (counter_name) {
        uint64_t after = counter(s->np, counter_name);
        if (after < before + 1)
            fail_msg("%s: counter %s went %llu -> %llu", marker, counter_name, (unsigned long long)before,
                     (unsigned long long)after);
    }
}

static int udp_socket(uint32_t bind_ip, uint16_t port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = bind_ip};
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);

    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    return fd;
}

static void udp_send_from(int ns, uint32_t dst, uint16_t port, const char *msg)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = dst};
    int fd;

    enter(ns);
    fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    enter(main_ns);
    assert_true(fd >= 0);
    assert_int_equal(sendto(fd, msg, strlen(msg), 0, (struct sockaddr *)&sa, sizeof(sa)), (ssize_t)strlen(msg));
    close(fd);
}

static bool udp_recv(int fd, const char *want, int timeout_ms)
{
    char buf[256];
    uint64_t end = now_mono_ns() + (uint64_t)timeout_ms * 1000000u;

    for (;;) {
        uint64_t now = now_mono_ns();
        if (now >= end)
            return false;
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        if (poll(&pfd, 1, (int)((end - now) / 1000000u) + 1) <= 0)
            continue;
        ssize_t n = recv(fd, buf, sizeof(buf) - 1, MSG_DONTWAIT);
        if (n <= 0)
            continue;
        buf[n] = '\0';
        if (strcmp(buf, want) == 0)
            return true;
    }
}

static bool wait_counter_above(struct netplug *np, const char *name, uint64_t v, int timeout_ms)
{
    uint64_t end = now_mono_ns() + (uint64_t)timeout_ms * 1000000u;

    while (now_mono_ns() < end) {
        if (counter(np, name) > v)
            return true;
        struct timespec ts = {0, 2000000};
        nanosleep(&ts, NULL);
    }
    return false;
}

static void client_setup(int ns, const char *dev, const char *ip)
{
    enter(ns);
    t_up(dev);
    t_addr(dev, ip, 24, true);
    enter(main_ns);
}

static void test_spoof(void **state)
{
    struct spoof s = {0};
    struct np_error e = {0};
    uint8_t f[512];
    size_t n;
    (void)state;

    s.np = t_np(true);
    t_net_add(s.np, &(struct np_network){.name = "sp", .type = NP_NET_BRIDGE, .bridge = "cab-sp",
                                         .gateway = "10.77.0.1/24", .metadata = true});
    struct np_port good = port("sp", "vgood", NP_PORT_VETH, 0x0a, "10.77.0.10");
    struct np_port bad = port("sp", "vbad", NP_PORT_VETH, 0x0b, "10.77.0.11");
    good.owner = "aaaaaaaa-0000-4000-8000-00000000000a";
    bad.owner = "bbbbbbbb-0000-4000-8000-00000000000b";
    t_plug(s.np, &good);
    t_plug(s.np, &bad);
    memcpy(s.mac_good, good.mac, 6);
    memcpy(s.mac_bad, bad.mac, 6);
    s.ip_good = good.ipv4;
    s.ip_bad = bad.ipv4;
    s.gw = ip4("10.77.0.0");

    /* the guests' ends into two client namespaces */
    s.ns_good = t_client_ns();
    s.ns_bad = t_client_ns();
    assert_int_equal(t_change("vgoodp", chg_nsfd, &s.ns_good), 0);
    assert_int_equal(t_change("vbadp", chg_nsfd, &s.ns_bad), 0);
    client_setup(s.ns_good, "vgoodp", "10.77.0.10");
    client_setup(s.ns_bad, "vbadp", "10.77.0.11");

    /* a listener on the bridge (what the host and the other ports would get) */
    s.rx = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(ETH_P_ALL));
    assert_true(s.rx >= 0);
    struct sockaddr_ll sll = {.sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_ALL),
                              .sll_ifindex = (int)if_nametoindex("cab-sp")};
    assert_int_equal(bind(s.rx, (struct sockaddr *)&sll, sizeof(sll)), 0);
    s.tx_good = raw_socket_in(s.ns_good, "vgoodp");
    s.tx_bad = raw_socket_in(s.ns_bad, "vbadp");

    /* 1. the kernel's own stack, honest: UDP to the gateway arrives (after ARP) */
    int u1 = udp_socket(ip4("10.77.0.1"), 20001);
    udp_send_from(s.ns_good, ip4("10.77.0.1"), 20001, "honest-good");
    assert_true(udp_recv(u1, "honest-good", 3000));
    udp_send_from(s.ns_bad, ip4("10.77.0.1"), 20001, "honest-bad");
    assert_true(udp_recv(u1, "honest-bad", 3000));

    /* netplug_peer: the gateway's neighbour entry and the bridge FDB name the port */
    uint8_t mac[6];
    char dev[16];
    int r = netplug_peer(s.np, "sp", s.ip_good, mac, dev);
    if (r != 0)
        fail_msg("netplug_peer: %d", r);
    assert_memory_equal(mac, s.mac_good, 6);
    assert_string_equal(dev, "vgood");
    assert_int_equal(netplug_peer(s.np, "sp", s.ip_bad, mac, dev), 0);
    assert_memory_equal(mac, s.mac_bad, 6);
    assert_string_equal(dev, "vbad");
    assert_int_equal(netplug_peer(s.np, "sp", ip4("10.77.0.99"), mac, dev), -ENOENT);
    assert_int_equal(netplug_peer(s.np, "nope", s.ip_good, mac, dev), -ENOENT);

    /* 2. raw frames from the bad port, each followed by an honest fence */
    const uint8_t fake_mac[6] = {0x52, 0x54, 0x00, 0x11, 0x22, 0x99};
    n = frame_udp(f, s.mac_bad, BCAST, s.ip_bad, ip4("10.77.0.255"), 5000, 5000, "RAW-HONEST");
    send_expect(&s, f, n, "RAW-HONEST", true, "ip_accept");
    n = frame_udp(f, fake_mac, BCAST, s.ip_bad, ip4("10.77.0.255"), 5000, 5000, "RAW-FAKEMAC");
    send_expect(&s, f, n, "RAW-FAKEMAC", false, "mac_drop");
    n = frame_udp(f, s.mac_good, BCAST, s.ip_bad, ip4("10.77.0.255"), 5000, 5000, "RAW-VICTIMMAC");
    send_expect(&s, f, n, "RAW-VICTIMMAC", false, "mac_drop");
    n = frame_udp(f, s.mac_bad, BCAST, s.ip_good, ip4("10.77.0.255"), 5000, 5000, "RAW-VICTIMIP");
    send_expect(&s, f, n, "RAW-VICTIMIP", false, "ip_drop");
    n = frame_udp(f, s.mac_bad, BCAST, ip4("10.77.0.200"), ip4("10.77.0.255"), 5000, 5000, "RAW-OTHERIP");
    send_expect(&s, f, n, "RAW-OTHERIP", false, "ip_drop");
    n = frame_arp(f, s.mac_bad, s.mac_bad, s.ip_good, ip4("10.77.0.1"), "ARP-VICTIMIP");
    send_expect(&s, f, n, "ARP-VICTIMIP", false, "arp_drop");
    n = frame_arp(f, s.mac_bad, fake_mac, s.ip_bad, ip4("10.77.0.1"), "ARP-FAKESHA");
    send_expect(&s, f, n, "ARP-FAKESHA", false, "arp_drop");
    n = frame_arp(f, s.mac_bad, s.mac_bad, s.ip_bad, ip4("10.77.0.1"), "ARP-HONEST");
    send_expect(&s, f, n, "ARP-HONEST", true, "arp_accept");
    n = frame_udp(f, s.mac_bad, BCAST, s.ip_bad, ip4("255.255.255.255"), 67, 68, "DHCP-SERVER");
    send_expect(&s, f, n, "DHCP-SERVER", false, "dhcp_server_drop");
    n = frame_udp(f, s.mac_bad, BCAST, 0, ip4("255.255.255.255"), 68, 67, "DHCP-DISCOVER");
    send_expect(&s, f, n, "DHCP-DISCOVER", true, "ip_accept");
    n = frame_udp(f, s.mac_bad, BCAST, 0, ip4("10.77.0.255"), 68, 67, "ZERO-NOT-DHCP");
    send_expect(&s, f, n, "ZERO-NOT-DHCP", false, "ip_drop");
    n = frame_other(f, s.mac_bad, 0x86dd, "IPV6-FRAME");
    send_expect(&s, f, n, "IPV6-FRAME", false, "other_drop");
    n = frame_other(f, s.mac_bad, 0x8100, "VLAN-TAGGED");
    send_expect(&s, f, n, "VLAN-TAGGED", false, "other_drop");

    /* 3. the kernel's stack again, with a spoofed MAC on the bad guest's NIC:
     * its ARP for the gateway is dropped, so nothing reaches the listener */
    int u2 = udp_socket(ip4("10.77.0.1"), 20002);
    uint64_t before = counter(s.np, "mac_drop");
    enter(s.ns_bad);
    assert_int_equal(t_change("vbadp", chg_mac, (void *)fake_mac), 0);
    enter(main_ns);
    udp_send_from(s.ns_bad, ip4("10.77.0.1"), 20002, "spoofed-mac");
    assert_true(wait_counter_above(s.np, "mac_drop", before, 3000));
    assert_false(udp_recv(u2, "spoofed-mac", 200));

    /* ... then its MAC back and the victim's IP instead of its own, with a static
     * neighbour for the gateway so the IP packets go out without ARP */
    enter(s.ns_bad);
    assert_int_equal(t_change("vbadp", chg_mac, s.mac_bad), 0);
    t_addr("vbadp", "10.77.0.11", 24, false);
    t_addr("vbadp", "10.77.0.10", 24, true);
    {
        struct nl_sock *sk = t_sock();
        struct rtnl_neigh *ne = rtnl_neigh_alloc();
        struct in_addr gw;
        inet_pton(AF_INET, "10.77.0.1", &gw);
        struct nl_addr *dst = nl_addr_build(AF_INET, &gw, 4);
        struct nl_addr *ll = nl_addr_build(AF_LLC, t_info(s.np, "cab-sp").addr, 6);
        rtnl_neigh_set_ifindex(ne, (int)if_nametoindex("vbadp"));
        rtnl_neigh_set_dst(ne, dst);
        rtnl_neigh_set_lladdr(ne, ll);
        rtnl_neigh_set_state(ne, NUD_PERMANENT);
        assert_int_equal(rtnl_neigh_add(sk, ne, NLM_F_CREATE | NLM_F_REPLACE), 0);
        nl_addr_put(dst);
        nl_addr_put(ll);
        rtnl_neigh_put(ne);
        nl_socket_free(sk);
    }
    enter(main_ns);
    before = counter(s.np, "ip_drop");
    udp_send_from(s.ns_bad, ip4("10.77.0.1"), 20002, "spoofed-ip");
    assert_true(wait_counter_above(s.np, "ip_drop", before, 3000));
    assert_false(udp_recv(u2, "spoofed-ip", 200));

    /* the victim's identity did not move: the metadata service would still find vgood */
    assert_int_equal(netplug_peer(s.np, "sp", s.ip_good, mac, dev), 0);
    assert_memory_equal(mac, s.mac_good, 6);
    assert_string_equal(dev, "vgood");
    /* and the honest guest still gets through */
    udp_send_from(s.ns_good, ip4("10.77.0.1"), 20002, "still-good");
    assert_true(udp_recv(u2, "still-good", 3000));

    uint64_t c[7];
    const char *names[] = {"mac_drop", "arp_drop", "ip_drop", "dhcp_server_drop", "other_drop", "ip_accept",
                           "arp_accept"};
    for (int i = 0; i < 7; i++)
        c[i] = counter(s.np, names[i]);
    print_message("spoof: counters mac_drop=%llu arp_drop=%llu ip_drop=%llu dhcp_server_drop=%llu "
                  "other_drop=%llu ip_accept=%llu arp_accept=%llu\n",
                  (unsigned long long)c[0], (unsigned long long)c[1], (unsigned long long)c[2],
                  (unsigned long long)c[3], (unsigned long long)c[4], (unsigned long long)c[5],
                  (unsigned long long)c[6]);

    /* unplugged: the filter entries go with the port */
    enter(s.ns_bad);
    close(s.tx_bad);
    enter(main_ns);
    t_change("vbadp", chg_up, NULL); /* not here any more: harmless */
    assert_int_equal(netplug_unplug(s.np, "vbad", &e), 0);
    assert_false(netplug_port_filtered(s.np, "vbad"));
    assert_false(dump_has(s.np, "\"vbad\""));
    assert_int_equal(netplug_unplug(s.np, "vgood", &e), 0);
    assert_false(t_exists("cab-sp"));
    close(u1);
    close(u2);
    close(s.rx);
    close(s.tx_good);
    close(s.ns_good);
    close(s.ns_bad);
    netplug_free(s.np);
}


/* ---- the bridge's forwarding database: learning off on guest ports, the MAC pinned ---- */

/* The FDB port (ifindex) and state of mac on bridge br, or 0 when absent. */
static int t_fdb_port(int br, const uint8_t mac[6], int *state)
{
    struct nl_sock *sk = t_sock();
    struct nl_cache *c = NULL;
    int found = 0;

    assert_int_equal(nl_cache_alloc_name("route/neigh", &c), 0);
    nl_cache_set_arg1(c, AF_BRIDGE);
    assert_int_equal(nl_cache_refill(sk, c), 0);
    for (struct nl_object *o = nl_cache_get_first(c); o; o = nl_cache_get_next(o)) {
        struct rtnl_neigh *n = (struct rtnl_neigh *)o;
        struct nl_addr *ll = rtnl_neigh_get_lladdr(n);
        if (!ll || nl_addr_get_len(ll) != 6 || memcmp(nl_addr_get_binary_addr(ll), mac, 6) != 0 ||
            rtnl_neigh_get_master(n) != br || rtnl_neigh_get_ifindex(n) == br)
            continue;
        found = rtnl_neigh_get_ifindex(n);
        if (state)
            *state = rtnl_neigh_get_state(n);
    }
    nl_cache_free(c);
    nl_socket_free(sk);
    return found;
}

/* The bridge port flags (RTNL_BRIDGE_*) of dev, from an AF_BRIDGE link dump. */
static unsigned t_brport_flags(const char *dev)
{
    struct nl_sock *sk = t_sock();
    struct nl_cache *c = NULL;
    unsigned flags = ~0u;

    assert_int_equal(rtnl_link_alloc_cache(sk, AF_BRIDGE, &c), 0);
    struct rtnl_link *l = rtnl_link_get_by_name(c, dev);
    assert_non_null(l);
    flags = (unsigned)rtnl_link_bridge_get_flags(l);
    rtnl_link_put(l);
    nl_cache_free(c);
    nl_socket_free(sk);
    return flags;
}

static size_t frame_to(uint8_t *f, const uint8_t dst[6], const uint8_t src[6], const char *marker)
{
    size_t n = frame_other(f, src, 0x88cc, marker); /* LLDP's ethertype */
    memcpy(f, dst, 6);
    return n;
}

/* One round on network `net` (bridge `bridge`, gateway 10.78.<sub>.1): a victim
 * and an attacker port; the attacker sends link-local group frames carrying the
 * victim's MAC (the bridge consumes them before its prerouting hook, so the
 * filter never sees them, yet it used to learn their source from them). */
static void fdb_round(struct netplug *np, const char *net, const char *bridge, int sub)
{
    static const uint8_t lldp[6] = {0x01, 0x80, 0xc2, 0x00, 0x00, 0x0e};
    static const uint8_t pae[6] = {0x01, 0x80, 0xc2, 0x00, 0x00, 0x03}; /* 802.1X: the bridge input hook */
    static const uint8_t stp[6] = {0x01, 0x80, 0xc2, 0x00, 0x00, 0x00};
    uint8_t f[256], mac[6];
    char dev[16], gw[32], ipv[32], ipa[32];
    int st = 0;

    snprintf(gw, sizeof(gw), "10.78.%d.1", sub);
    snprintf(ipv, sizeof(ipv), "10.78.%d.10", sub);
    snprintf(ipa, sizeof(ipa), "10.78.%d.11", sub);
    struct np_port vic = port(net, "vvic", NP_PORT_VETH, 0x1a, ipv);
    struct np_port atk = port(net, "vatk", NP_PORT_VETH, 0x1b, ipa);
    t_plug(np, &vic);
    t_plug(np, &atk);
    int br = (int)if_nametoindex(bridge), ivic = (int)if_nametoindex("vvic"), iatk = (int)if_nametoindex("vatk");

    /* learning is off on both guest ports; each guest MAC is a static (not
     * permanent) entry on its port */
    assert_int_equal(t_brport_flags("vvic") & RTNL_BRIDGE_LEARNING, 0);
    assert_int_equal(t_brport_flags("vatk") & RTNL_BRIDGE_LEARNING, 0);
    assert_int_equal(t_fdb_port(br, vic.mac, &st), ivic);
    assert_true(st & NUD_NOARP);
    assert_false(st & NUD_PERMANENT);
    assert_int_equal(t_fdb_port(br, atk.mac, NULL), iatk);

    int ns_vic = t_client_ns(), ns_atk = t_client_ns();
    assert_int_equal(t_change("vvicp", chg_nsfd, &ns_vic), 0);
    assert_int_equal(t_change("vatkp", chg_nsfd, &ns_atk), 0);
    client_setup(ns_vic, "vvicp", ipv);
    client_setup(ns_atk, "vatkp", ipa);
    int tx = raw_socket_in(ns_atk, "vatkp");

    /* the victim talks: the gateway's neighbour entry for its IP */
    int u = udp_socket(ip4(gw), 20011);
    udp_send_from(ns_vic, ip4(gw), 20011, "victim-hello");
    assert_true(udp_recv(u, "victim-hello", 3000));
    assert_int_equal(netplug_peer(np, net, vic.ipv4, mac, dev), 0);
    assert_string_equal(dev, "vvic");

    const uint8_t *dsts[] = {lldp, pae, stp};
    for (size_t i = 0; i < ARRAY_SIZE(dsts); i++) {
        size_t n = frame_to(f, dsts[i], vic.mac, "LL-VICTIM-MAC");
        for (int k = 0; k < 3; k++)
            assert_int_equal(send(tx, f, n, 0), (ssize_t)n);
    }
    /* an honest frame from the same port after them: once the gateway has it,
     * the bridge has handled the others */
    udp_send_from(ns_atk, ip4(gw), 20011, "attacker-fence");
    assert_true(udp_recv(u, "attacker-fence", 3000));
    assert_int_equal(t_fdb_port(br, vic.mac, &st), ivic);
    assert_true(st & NUD_NOARP);
    assert_int_equal(t_fdb_port(br, atk.mac, NULL), iatk);
    assert_int_equal(netplug_peer(np, net, vic.ipv4, mac, dev), 0);
    assert_memory_equal(mac, vic.mac, 6);
    assert_string_equal(dev, "vvic");
    assert_int_equal(netplug_peer(np, net, atk.ipv4, mac, dev), 0);
    assert_string_equal(dev, "vatk");

    /* idempotent re-plug keeps it so; unplug takes the entry with the port */
    t_plug(np, &vic);
    assert_int_equal(t_fdb_port(br, vic.mac, NULL), ivic);
    enter(ns_atk);
    close(tx);
    enter(main_ns);
    t_unplug(np, "vatk");
    assert_int_equal(t_fdb_port(br, atk.mac, NULL), 0);
    t_unplug(np, "vvic");
    close(u);
    close(ns_vic);
    close(ns_atk);
}

static void test_fdb_pinned(void **state)
{
    struct netplug *np = t_np(true);
    (void)state;

    /* an agent-made bridge (no_linklocal_learn set too) */
    t_net_add(np, &(struct np_network){.name = "fp", .type = NP_NET_BRIDGE, .bridge = "cab-fp",
                                       .gateway = "10.78.0.1/24"});
    fdb_round(np, "fp", "cab-fp", 0);
    assert_false(t_exists("cab-fp"));
    /* an operator's bridge, left as it is: only the ports' settings protect it */
    t_bridge("opfp", 0);
    t_up("opfp");
    t_addr("opfp", "10.78.1.1", 24, true);
    t_net_add(np, &(struct np_network){.name = "op", .type = NP_NET_BRIDGE, .bridge = "opfp"});
    fdb_round(np, "op", "opfp", 1);
    assert_true(t_exists("opfp"));
    netplug_free(np);
}

/* ---- fake DHCP servers: any guest frame to udp 68 is dropped, clients pass ---- */

static void test_dhcp_fake_server(void **state)
{
    struct spoof s = {0};
    uint8_t f[512];
    size_t n;
    (void)state;

    s.np = t_np(true);
    t_net_add(s.np, &(struct np_network){.name = "fd", .type = NP_NET_BRIDGE, .bridge = "cab-fd",
                                         .gateway = "10.79.0.1/24"});
    struct np_port good = port("fd", "vfdg", NP_PORT_VETH, 0x2a, "10.79.0.10");
    struct np_port bad = port("fd", "vfdb", NP_PORT_VETH, 0x2b, "10.79.0.11");
    t_plug(s.np, &good);
    t_plug(s.np, &bad);
    memcpy(s.mac_good, good.mac, 6);
    memcpy(s.mac_bad, bad.mac, 6);
    s.ip_good = good.ipv4;
    s.ip_bad = bad.ipv4;
    s.gw = ip4("10.79.0.0");
    s.ns_bad = t_client_ns();
    assert_int_equal(t_change("vfdbp", chg_nsfd, &s.ns_bad), 0);
    client_setup(s.ns_bad, "vfdbp", "10.79.0.11");
    s.rx = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(ETH_P_ALL));
    assert_true(s.rx >= 0);
    struct sockaddr_ll sll = {.sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_ALL),
                              .sll_ifindex = (int)if_nametoindex("cab-fd")};
    assert_int_equal(bind(s.rx, (struct sockaddr *)&sll, sizeof(sll)), 0);
    s.tx_bad = raw_socket_in(s.ns_bad, "vfdbp");

    /* server direction, from the guest's own MAC and IP: dropped whatever the source port */
    n = frame_udp(f, s.mac_bad, BCAST, s.ip_bad, ip4("255.255.255.255"), 1067, 68, "OFFER-SPORT-1067");
    send_expect(&s, f, n, "OFFER-SPORT-1067", false, "dhcp_server_drop");
    n = frame_udp(f, s.mac_bad, BCAST, s.ip_bad, ip4("255.255.255.255"), 67, 68, "OFFER-SPORT-67");
    send_expect(&s, f, n, "OFFER-SPORT-67", false, "dhcp_server_drop");
    n = frame_udp(f, s.mac_bad, s.mac_good, s.ip_bad, s.ip_good, 5000, 68, "ACK-UNICAST");
    send_expect(&s, f, n, "ACK-UNICAST", false, "dhcp_server_drop");
    /* client direction: the discover and a renewal from its own IP pass */
    n = frame_udp(f, s.mac_bad, BCAST, 0, ip4("255.255.255.255"), 68, 67, "DISCOVER");
    send_expect(&s, f, n, "DISCOVER", true, "ip_accept");
    n = frame_udp(f, s.mac_bad, BCAST, s.ip_bad, ip4("10.79.0.255"), 68, 67, "RENEW");
    send_expect(&s, f, n, "RENEW", true, "ip_accept");
    /* a link-local group frame forwarded by the bridge would meet prerouting */
    n = frame_other(f, s.mac_bad, 0x88cc, "LL-FRAME");
    memcpy(f, (const uint8_t[]){0x01, 0x80, 0xc2, 0x00, 0x00, 0x03}, 6);
    uint64_t ll = counter(s.np, "ll_drop");
    send_expect(&s, f, n, "LL-FRAME", false, NULL);
    assert_true(counter(s.np, "ll_drop") > ll);

    enter(s.ns_bad);
    close(s.tx_bad);
    enter(main_ns);
    t_unplug(s.np, "vfdb");
    t_unplug(s.np, "vfdg");
    close(s.rx);
    close(s.ns_bad);
    netplug_free(s.np);
}

/* ---- the filter table flushed by someone else: found, put back ---- */

static void t_nft(const char *cmd)
{
    struct nft_ctx *c = nft_ctx_new(NFT_CTX_DEFAULT);
    assert_non_null(c);
    nft_ctx_buffer_output(c);
    nft_ctx_buffer_error(c);
    int r = nft_run_cmd_from_buffer(c, cmd);
    if (r != 0)
        fail_msg("nft %s: %s", cmd, nft_ctx_get_error_buffer(c));
    nft_ctx_free(c);
}

static void test_filter_flushed(void **state)
{
    struct spoof s = {0};
    struct np_error e = {0};
    uint8_t f[512];
    size_t n;
    const uint8_t fake_mac[6] = {0x52, 0x54, 0x00, 0x11, 0x22, 0x98};
    (void)state;

    s.np = t_np(true); /* no watch thread: the check is called by hand first */
    t_net_add(s.np, &(struct np_network){.name = "ff", .type = NP_NET_BRIDGE, .bridge = "cab-ff",
                                         .gateway = "10.80.0.1/24"});
    struct np_port good = port("ff", "vffg", NP_PORT_VETH, 0x3a, "10.80.0.10");
    struct np_port bad = port("ff", "vffb", NP_PORT_VETH, 0x3b, "10.80.0.11");
    t_plug(s.np, &good);
    t_plug(s.np, &bad);
    memcpy(s.mac_bad, bad.mac, 6);
    s.ip_bad = bad.ipv4;
    s.gw = ip4("10.80.0.0");
    s.ns_bad = t_client_ns();
    assert_int_equal(t_change("vffbp", chg_nsfd, &s.ns_bad), 0);
    client_setup(s.ns_bad, "vffbp", "10.80.0.11");
    s.rx = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(ETH_P_ALL));
    assert_true(s.rx >= 0);
    struct sockaddr_ll sll = {.sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_ALL),
                              .sll_ifindex = (int)if_nametoindex("cab-ff")};
    assert_int_equal(bind(s.rx, (struct sockaddr *)&sll, sizeof(sll)), 0);
    s.tx_bad = raw_socket_in(s.ns_bad, "vffbp");
    assert_true(netplug_port_filtered(s.np, "vffb"));
    assert_int_equal(netplug_filter_check(s.np, &e), 0);

    /* a firewall reload: everything gone; the port is not filtered any more (the
     * metadata service refuses it) and a spoofed frame passes */
    t_nft("flush ruleset");
    assert_false(netplug_port_filtered(s.np, "vffb"));
    assert_false(netplug_port_filtered(s.np, "vffg"));
    n = frame_udp(f, fake_mac, BCAST, s.ip_bad, ip4("10.80.0.255"), 5000, 5000, "FLUSHED-FAKEMAC");
    send_expect(&s, f, n, "FLUSHED-FAKEMAC", true, NULL);
    /* the check finds it and puts it all back */
    assert_int_equal(netplug_filter_check(s.np, &e), 1);
    assert_int_equal(netplug_filter_repairs(s.np), 1);
    assert_true(netplug_port_filtered(s.np, "vffb"));
    assert_true(netplug_port_filtered(s.np, "vffg"));
    n = frame_udp(f, fake_mac, BCAST, s.ip_bad, ip4("10.80.0.255"), 5000, 5000, "RESTORED-FAKEMAC");
    send_expect(&s, f, n, "RESTORED-FAKEMAC", false, "mac_drop");
    /* one entry deleted, one rule deleted: found too */
    t_nft("delete element bridge compute_agent macs { \"vffb\" . 52:54:00:11:22:3b }");
    assert_false(netplug_port_filtered(s.np, "vffb"));
    assert_true(netplug_port_filtered(s.np, "vffg"));
    assert_int_equal(netplug_filter_check(s.np, &e), 1);
    assert_true(netplug_port_filtered(s.np, "vffb"));
    t_nft("flush chain bridge compute_agent ip_check");
    assert_false(netplug_port_filtered(s.np, "vffg"));
    assert_int_equal(netplug_filter_check(s.np, &e), 1);
    assert_true(netplug_port_filtered(s.np, "vffg"));
    netplug_free(s.np);

    /* with the watch thread (as the agent runs it): back within a deadline */
    struct netplug_config cfg = {.antispoof = true, .check_ms = 50};
    assert_int_equal(netplug_new(&cfg, &s.np, &e), 0);
    t_net_add(s.np, &(struct np_network){.name = "ff", .type = NP_NET_BRIDGE, .bridge = "cab-ff",
                                         .gateway = "10.80.0.1/24"});
    t_plug(s.np, &good); /* records loaded, idempotent */
    t_plug(s.np, &bad);
    uint64_t t0 = now_mono_ns();
    t_nft("flush ruleset");
    uint64_t end = t0 + 3000000000ull;
    while (netplug_filter_repairs(s.np) == 0 && now_mono_ns() < end) {
        struct timespec ts = {0, 5000000};
        nanosleep(&ts, NULL);
    }
    assert_true(netplug_filter_repairs(s.np) >= 1);
    print_message("filter flushed: put back by the watch (50 ms period) after %.0f ms\n",
                  (double)(now_mono_ns() - t0) / 1e6);
    assert_true(netplug_port_filtered(s.np, "vffb"));
    n = frame_udp(f, fake_mac, BCAST, s.ip_bad, ip4("10.80.0.255"), 5000, 5000, "WATCHED-FAKEMAC");
    send_expect(&s, f, n, "WATCHED-FAKEMAC", false, "mac_drop");

    enter(s.ns_bad);
    close(s.tx_bad);
    enter(main_ns);
    t_unplug(s.np, "vffb");
    t_unplug(s.np, "vffg");
    assert_int_equal(netplug_filter_check(s.np, &e), 0);
    close(s.rx);
    close(s.ns_bad);
    netplug_free(s.np);
}

/* ---- the host firewall (table inet): isolation with ip_forward=1, host exposure ---- */

static void t_route_default(const char *gw)
{
    struct nl_sock *sk = t_sock();
    struct rtnl_route *rt = rtnl_route_alloc();
    struct rtnl_nexthop *nh = rtnl_route_nh_alloc();
    struct nl_addr *dst = NULL, *via = NULL;
    struct in_addr a;

    assert_int_equal(nl_addr_parse("0.0.0.0/0", AF_INET, &dst), 0);
    inet_pton(AF_INET, gw, &a);
    via = nl_addr_build(AF_INET, &a, 4);
    rtnl_route_set_family(rt, AF_INET);
    rtnl_route_set_dst(rt, dst);
    rtnl_route_nh_set_gateway(nh, via);
    rtnl_route_add_nexthop(rt, nh);
    assert_int_equal(rtnl_route_add(sk, rt, NLM_F_CREATE), 0);
    nl_addr_put(dst);
    nl_addr_put(via);
    rtnl_route_put(rt);
    nl_socket_free(sk);
}

/* A TCP connect from namespace ns: 0 connected, -ECONNREFUSED, -ETIMEDOUT. */
static int tcp_connect_from(int ns, uint32_t dst, uint16_t port, int timeout_ms)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = dst};
    int fd, r, err = 0;
    socklen_t el = sizeof(err);

    enter(ns);
    fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    enter(main_ns);
    assert_true(fd >= 0);
    r = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
    if (r < 0 && errno == EINPROGRESS) {
        struct pollfd pfd = {.fd = fd, .events = POLLOUT};
        if (poll(&pfd, 1, timeout_ms) <= 0) {
            close(fd);
            return -ETIMEDOUT;
        }
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el);
        r = err ? -err : 0;
    } else if (r < 0) {
        r = -errno;
    }
    close(fd);
    return r;
}

static int tcp_listener(uint32_t ip, uint16_t port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = ip};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;

    assert_true(fd >= 0);
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(fd, 8), 0);
    return fd;
}

/* An ICMP echo from ns to dst: answered within timeout_ms. */
static bool ping_from(int ns, uint32_t dst, int timeout_ms)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = dst};
    uint8_t pkt[16] = {8, 0, 0, 0, 0x12, 0x34, 0, 1}, buf[256];
    uint32_t sum = 0;
    int fd;

    for (size_t i = 0; i < sizeof(pkt); i += 2)
        sum += (uint32_t)(pkt[i] << 8 | pkt[i + 1]);
    while (sum >> 16)
        sum = (sum & 0xffff) + (sum >> 16);
    pkt[2] = (uint8_t)(~sum >> 8);
    pkt[3] = (uint8_t)~sum;
    enter(ns);
    fd = socket(AF_INET, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_ICMP);
    enter(main_ns);
    assert_true(fd >= 0);
    assert_int_equal(sendto(fd, pkt, sizeof(pkt), 0, (struct sockaddr *)&sa, sizeof(sa)), (ssize_t)sizeof(pkt));
    uint64_t end = now_mono_ns() + (uint64_t)timeout_ms * 1000000u;
    bool got = false;
    while (!got && now_mono_ns() < end) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        if (poll(&pfd, 1, (int)((end - now_mono_ns()) / 1000000u) + 1) <= 0)
            continue;
        ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
        if (n >= 28 && buf[20] == 0 && buf[24] == 0x12 && buf[25] == 0x34) /* echo reply, our id */
            got = true;
    }
    close(fd);
    return got;
}

static void test_host_firewall(void **state)
{
    struct netplug_config cfg = {.antispoof = true, .host_firewall = true, .md_port = 23580};
    struct netplug *np = NULL;
    struct np_error e = {0};
    uint8_t f[512];
    (void)state;

    assert_int_equal(netplug_new(&cfg, &np, &e), 0);
    /* forwarding on, as on a host with docker or libvirt's default network (this
     * namespace only) */
    write_file("/proc/sys/net/ipv4/ip_forward", "1");
    t_net_add(np, &(struct np_network){.name = "h1", .type = NP_NET_BRIDGE, .bridge = "cab-h1",
                                       .gateway = "10.81.0.1/24", .metadata = true, .dhcp = true,
                                       .dns_gateway = true});
    t_net_add(np, &(struct np_network){.name = "h2", .type = NP_NET_BRIDGE, .bridge = "cab-h2",
                                       .gateway = "10.82.0.1/24"});
    struct np_port p1 = port("h1", "vh1", NP_PORT_VETH, 0x4a, "10.81.0.10");
    struct np_port p2 = port("h2", "vh2", NP_PORT_VETH, 0x4b, "10.82.0.10");
    t_plug(np, &p1);
    t_plug(np, &p2);
    int ns1 = t_client_ns(), ns2 = t_client_ns();
    assert_int_equal(t_change("vh1p", chg_nsfd, &ns1), 0);
    assert_int_equal(t_change("vh2p", chg_nsfd, &ns2), 0);
    client_setup(ns1, "vh1p", "10.81.0.10");
    client_setup(ns2, "vh2p", "10.82.0.10");
    enter(ns1);
    t_route_default("10.81.0.1");
    enter(ns2);
    t_route_default("10.82.0.1");
    enter(main_ns);

    /* 1. n1's guest cannot reach n2's (routed through the host) */
    enter(ns2);
    int u2 = udp_socket(ip4("10.82.0.10"), 23501);
    enter(main_ns);
    uint64_t fwd = counter(np, "fwd_drop");
    udp_send_from(ns1, ip4("10.82.0.10"), 23501, "n1-to-n2");
    assert_false(udp_recv(u2, "n1-to-n2", 500));
    assert_true(counter(np, "fwd_drop") > fwd);
    /* control: without the table the host routes it (someone deleted it) ... */
    t_nft("delete table inet compute_agent");
    assert_false(netplug_port_filtered(np, "vh1"));
    udp_send_from(ns1, ip4("10.82.0.10"), 23501, "n1-to-n2-open");
    assert_true(udp_recv(u2, "n1-to-n2-open", 3000));
    /* ... and the check puts it back, elements included */
    assert_int_equal(netplug_filter_check(np, &e), 1);
    assert_true(netplug_port_filtered(np, "vh1"));
    udp_send_from(ns1, ip4("10.82.0.10"), 23501, "n1-to-n2-again");
    assert_false(udp_recv(u2, "n1-to-n2-again", 500));

    /* 2. host services on the gateway address: a TCP listener is refused (reset),
     * UDP dropped; the metadata address and port answer; ping the gateway works */
    int tl = tcp_listener(INADDR_ANY, 23502), md = tcp_listener(ip4("169.254.169.254"), 23580);
    uint64_t host = counter(np, "host_drop");
    assert_int_equal(tcp_connect_from(ns1, ip4("10.81.0.1"), 23502, 3000), -ECONNREFUSED);
    assert_int_equal(tcp_connect_from(ns1, ip4("169.254.169.254"), 23502, 3000), -ECONNREFUSED);
    assert_int_equal(tcp_connect_from(ns1, ip4("169.254.169.254"), 23580, 3000), 0);
    assert_int_equal(tcp_connect_from(ns2, ip4("10.82.0.1"), 23502, 3000), -ECONNREFUSED);
    int uh = udp_socket(INADDR_ANY, 23503);
    udp_send_from(ns1, ip4("10.81.0.1"), 23503, "udp-to-host");
    assert_false(udp_recv(uh, "udp-to-host", 300));
    assert_true(counter(np, "host_drop") >= host + 4);
    assert_true(ping_from(ns1, ip4("10.81.0.1"), 3000));
    assert_true(ping_from(ns2, ip4("10.82.0.1"), 3000));
    /* the other network's gateway is the host too: not its gateway, no answer */
    assert_false(ping_from(ns1, ip4("10.82.0.1"), 300));

    /* 3. DHCP: udp 67 on the dhcp network's bridge only */
    int ud = udp_socket(INADDR_ANY, 67);
    udp_send_from(ns1, ip4("10.81.0.1"), 67, "dhcp-h1");
    assert_true(udp_recv(ud, "dhcp-h1", 3000));
    udp_send_from(ns2, ip4("10.82.0.1"), 67, "dhcp-h2");
    assert_false(udp_recv(ud, "dhcp-h2", 300));
    /* DNS to the gateway where the network says the gateway is the guests' DNS */
    int un = udp_socket(INADDR_ANY, 53);
    udp_send_from(ns1, ip4("10.81.0.1"), 53, "dns-h1");
    assert_true(udp_recv(un, "dns-h1", 3000));
    udp_send_from(ns2, ip4("10.82.0.1"), 53, "dns-h2");
    assert_false(udp_recv(un, "dns-h2", 300));
    close(un);

    /* 4. a link-local group frame the bridge hands to the port's own stack,
     * with a spoofed source IP, reaches no socket of the host */
    int tx = raw_socket_in(ns1, "vh1p");
    uint64_t pd = counter(np, "port_drop");
    static const uint8_t lldp[6] = {0x01, 0x80, 0xc2, 0x00, 0x00, 0x0e};
    size_t n = frame_udp(f, p1.mac, lldp, ip4("10.81.0.99"), ip4("10.81.0.1"), 5555, 23503, "LL-SPOOFED-IP");
    for (int k = 0; k < 3; k++)
        assert_int_equal(send(tx, f, n, 0), (ssize_t)n);
    assert_false(udp_recv(uh, "LL-SPOOFED-IP", 300));
    assert_true(counter(np, "port_drop") > pd);

    uint64_t c[3] = {counter(np, "fwd_drop"), counter(np, "host_drop"), counter(np, "port_drop")};
    print_message("host firewall: fwd_drop=%llu host_drop=%llu port_drop=%llu\n", (unsigned long long)c[0],
                  (unsigned long long)c[1], (unsigned long long)c[2]);
    enter(ns1);
    close(tx);
    enter(main_ns);
    close(ud);
    close(uh);
    close(tl);
    close(md);
    close(u2);
    t_unplug(np, "vh1");
    t_unplug(np, "vh2");
    netplug_free(np);
    /* host_firewall off: the table goes (no stale rules) */
    struct netplug *np2 = t_np(true);
    t_net_add(np2, &(struct np_network){.name = "h1", .type = NP_NET_BRIDGE, .bridge = "cab-h1",
                                        .gateway = "10.81.0.1/24"});
    t_plug(np2, &p1);
    struct nft_ctx *nc = nft_ctx_new(NFT_CTX_DEFAULT);
    nft_ctx_buffer_output(nc);
    nft_ctx_buffer_error(nc);
    assert_int_not_equal(nft_run_cmd_from_buffer(nc, "list table inet compute_agent"), 0);
    nft_ctx_free(nc);
    t_unplug(np2, "vh1");
    netplug_free(np2);
    close(ns1);
    close(ns2);
}

/* ---- DHCP: dnsmasq with what net-plug/dhcp.c writes, a DISCOVER from a client ---- */

static pid_t dnsmasq_pid = -1;
static char dhcp_dir[64];

static int teardown_dhcp(void **state)
{
    (void)state;
    if (dnsmasq_pid > 0) {
        kill(dnsmasq_pid, SIGTERM);
        waitpid(dnsmasq_pid, NULL, 0);
        dnsmasq_pid = -1;
    }
    if (dhcp_dir[0]) {
        const char *files[] = {"hosts", "opts", "leases", "dnsmasq.pid", "dnsmasq.log"};
        char p[128];
        for (size_t i = 0; i < ARRAY_SIZE(files); i++) {
            snprintf(p, sizeof(p), "%s/%s", dhcp_dir, files[i]);
            unlink(p);
        }
        rmdir(dhcp_dir);
        dhcp_dir[0] = '\0';
    }
    return 0;
}

static size_t dhcp_discover(uint8_t *m, const uint8_t mac[6], uint32_t xid)
{
    memset(m, 0, 300);
    m[0] = 1, m[1] = 1, m[2] = 6;
    memcpy(m + 4, &xid, 4);
    m[10] = 0x80; /* broadcast the answer */
    memcpy(m + 28, mac, 6);
    m[236] = 99, m[237] = 130, m[238] = 83, m[239] = 99;
    size_t o = 240;
    m[o++] = 53, m[o++] = 1, m[o++] = 1;                          /* DHCPDISCOVER */
    m[o++] = 55, m[o++] = 5, m[o++] = 1, m[o++] = 3, m[o++] = 6, m[o++] = 26, m[o++] = 121;
    m[o++] = 255;
    return 300;
}

/* The option's value in a BOOTP reply, or NULL. */
static const uint8_t *dhcp_opt(const uint8_t *m, size_t len, uint8_t code, size_t *olen)
{
    for (size_t o = 240; o + 1 < len && m[o] != 255;) {
        if (m[o] == 0) {
            o++;
            continue;
        }
        if (o + 2 + m[o + 1] > len)
            return NULL;
        if (m[o] == code) {
            *olen = m[o + 1];
            return m + o + 2;
        }
        o += 2 + m[o + 1];
    }
    return NULL;
}

/* ---- netplug_peer(): targeted gets, no dumps ---- */

static void t_neigh_add(const char *dev, const char *ip, const uint8_t mac[6])
{
    struct nl_sock *sk = t_sock();
    struct rtnl_neigh *ne = rtnl_neigh_alloc();
    struct in_addr a;
    assert_int_equal(inet_pton(AF_INET, ip, &a), 1);
    struct nl_addr *dst = nl_addr_build(AF_INET, &a, 4);
    struct nl_addr *ll = nl_addr_build(AF_LLC, mac, 6);
    rtnl_neigh_set_ifindex(ne, (int)if_nametoindex(dev));
    rtnl_neigh_set_dst(ne, dst);
    rtnl_neigh_set_lladdr(ne, ll);
    rtnl_neigh_set_state(ne, NUD_PERMANENT);
    assert_int_equal(rtnl_neigh_add(sk, ne, NLM_F_CREATE | NLM_F_REPLACE), 0);
    nl_addr_put(dst);
    nl_addr_put(ll);
    rtnl_neigh_put(ne);
    nl_socket_free(sk);
}

/* A TCP connection from the client namespace ns to ip:port (the listener lfd in
 * main_ns), accepted within 3 s: what a guest's metadata request starts with. */
static void tcp_connect_accept(int ns, int lfd, uint32_t ip, uint16_t port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = ip};
    struct pollfd pfd = {.fd = lfd, .events = POLLIN};
    int fd, a;

    enter(ns);
    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    enter(main_ns);
    assert_true(fd >= 0);
    assert_true(connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 || errno == EINPROGRESS);
    assert_int_equal(poll(&pfd, 1, 3000), 1);
    a = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    assert_true(a >= 0);
    close(a);
    close(fd);
}

static int run_quiet(const char *const *argv)
{
    pid_t pid;
    int st;
    posix_spawn_file_actions_t fa;

    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    int r = posix_spawnp(&pid, argv[0], &fa, NULL, (char *const *)argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (r != 0)
        return -1;
    while (waitpid(pid, &st, 0) < 0)
        ;
    return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -1;
}

static void test_peer(void **state)
{
    uint8_t mac[6];
    char dev[16];
    (void)state;

    struct netplug *np = t_np(true);
    t_net_add(np, &(struct np_network){.name = "pe", .type = NP_NET_BRIDGE, .bridge = "cab-pe",
                                       .gateway = "10.78.0.1/24", .metadata = true});
    struct np_port a = port("pe", "vpa", NP_PORT_VETH, 0x1a, "10.78.0.10");
    struct np_port b = port("pe", "vpb", NP_PORT_VETH, 0x1b, "10.78.0.11");
    t_plug(np, &a);
    t_plug(np, &b);
    int ns_a = t_client_ns(), ns_b = t_client_ns();
    assert_int_equal(t_change("vpap", chg_nsfd, &ns_a), 0);
    assert_int_equal(t_change("vpbp", chg_nsfd, &ns_b), 0);
    client_setup(ns_a, "vpap", "10.78.0.10");
    client_setup(ns_b, "vpbp", "10.78.0.11");
    /* b knows the gateway's MAC already: its first packet is the TCP SYN (no ARP
     * from the guest); the host's SYN-ACK resolves b itself */
    enter(ns_b);
    t_neigh_add("vpbp", "10.78.0.1", t_info(np, "cab-pe").addr);
    enter(main_ns);

    /* nothing sent yet: no neighbour entries */
    assert_int_equal(netplug_peer(np, "pe", a.ipv4, mac, dev), -ENOENT);

    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = ip4("10.78.0.1")};
    socklen_t sl = sizeof(sa);
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    assert_true(lfd >= 0);
    assert_int_equal(bind(lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(lfd, 8), 0);
    assert_int_equal(getsockname(lfd, (struct sockaddr *)&sa, &sl), 0);
    uint16_t lport = ntohs(sa.sin_port);

    /* 1. present: once a connection is accepted, the entry is there (the
     * guest's ARP made it STALE/DELAY; without one, the SYN-ACK resolved it) */
    tcp_connect_accept(ns_a, lfd, ip4("10.78.0.1"), lport);
    assert_int_equal(netplug_peer(np, "pe", a.ipv4, mac, dev), 0);
    assert_memory_equal(mac, a.mac, 6);
    assert_string_equal(dev, "vpa");
    tcp_connect_accept(ns_b, lfd, ip4("10.78.0.1"), lport);
    assert_int_equal(netplug_peer(np, "pe", b.ipv4, mac, dev), 0);
    assert_memory_equal(mac, b.mac, 6);
    assert_string_equal(dev, "vpb");

    /* 2. absent: no neighbour; no such network; a neighbour whose MAC the bridge
     * never learnt; a neighbour naming the bridge's own MAC (a permanent entry) */
    assert_int_equal(netplug_peer(np, "pe", ip4("10.78.0.99"), mac, dev), -ENOENT);
    assert_int_equal(netplug_peer(np, "nope", a.ipv4, mac, dev), -ENOENT);
    const uint8_t unseen[6] = {0x52, 0x54, 0x00, 0x11, 0x22, 0x7f};
    t_neigh_add("cab-pe", "10.78.0.50", unseen);
    assert_int_equal(netplug_peer(np, "pe", ip4("10.78.0.50"), mac, dev), -ENOENT);
    t_neigh_add("cab-pe", "10.78.0.52", t_info(np, "cab-pe").addr);
    assert_int_equal(netplug_peer(np, "pe", ip4("10.78.0.52"), mac, dev), -ENOENT);
    t_neigh_add("cab-pe", "10.78.0.53", t_info(np, "vpa").addr); /* the host end's own MAC */
    assert_int_equal(netplug_peer(np, "pe", ip4("10.78.0.53"), mac, dev), -ENOENT);

    /* 3. a's IP with b's MAC: the lookup names b's port (the caller's check
     * against a's port then refuses it) */
    t_neigh_add("cab-pe", "10.78.0.10", b.mac);
    assert_int_equal(netplug_peer(np, "pe", a.ipv4, mac, dev), 0);
    assert_memory_equal(mac, b.mac, 6);
    assert_string_equal(dev, "vpb");
    t_neigh_add("cab-pe", "10.78.0.10", a.mac);

    /* 4. a bridge with VLAN filtering learns per VLAN (the get of VLAN 0 misses
     * those): the lookup reads that bridge's FDB instead */
    const char *vf[] = {"ip", "link", "set", "cab-pe", "type", "bridge", "vlan_filtering", "1", NULL};
    char macs[18];
    snprintf(macs, sizeof(macs), "%02x:%02x:%02x:%02x:%02x:%02x", a.mac[0], a.mac[1], a.mac[2], a.mac[3],
             a.mac[4], a.mac[5]);
    const char *del[] = {"bridge", "fdb", "del", macs, "dev", "vpa", "master", NULL};
    if (run_quiet(vf) == 0) {
        run_quiet(del);
        assert_int_equal(netplug_peer(np, "pe", a.ipv4, mac, dev), -ENOENT);
        tcp_connect_accept(ns_a, lfd, ip4("10.78.0.1"), lport);
        assert_int_equal(netplug_peer(np, "pe", a.ipv4, mac, dev), 0);
        assert_memory_equal(mac, a.mac, 6);
        assert_string_equal(dev, "vpa");
    } else {
        print_message("peer: `ip link set ... vlan_filtering 1` not usable here: VLAN-filtering case skipped\n");
    }

    close(lfd);
    close(ns_a);
    close(ns_b);
    t_unplug(np, "vpa");
    t_unplug(np, "vpb");
    netplug_free(np);
}

static void test_dhcp(void **state)
{
    struct np_error e = {0};
    char **argv = NULL;
    (void)state;

    if (access("/usr/sbin/dnsmasq", X_OK) != 0) {
        print_message("dhcp: dnsmasq not installed: SKIP\n");
        skip();
    }
    struct netplug *np = t_np(true);
    t_net_add(np, &(struct np_network){.name = "dh", .type = NP_NET_BRIDGE, .bridge = "cab-dh",
                                       .gateway = "10.66.0.1/24", .metadata = true});
    struct np_port g = port("dh", "vdh1", NP_PORT_VETH, 0x66, "10.66.0.5");
    t_plug(np, &g);

    strscpy(dhcp_dir, "/tmp/caa-dhcp-XXXXXX", sizeof(dhcp_dir));
    assert_non_null(mkdtemp(dhcp_dir));
    chmod(dhcp_dir, 0755);
    uint32_t dns[2] = {ip4("10.66.0.1"), ip4("9.9.9.9")};
    struct netplug_dhcp_config c = {.network = "dh", .interface = "cab-dh", .dir = dhcp_dir,
                                    .gateway = ip4("10.66.0.1"), .prefix = 24, .dns = dns, .n_dns = 2,
                                    .mtu = 1450, .metadata_route = true, .lease_secs = 3600,
                                    .dnsmasq = "/usr/sbin/dnsmasq", .user = "root"};
    struct netplug_dhcp_host hosts[3] = {
        {.mac = {0x52, 0x54, 0x00, 0x11, 0x22, 0x66}, .ipv4 = ip4("10.66.0.5"), .hostname = "vm1"},
        {.mac = {0x52, 0x54, 0x00, 0x11, 0x22, 0x67}, .ipv4 = ip4("10.66.0.6"), .hostname = NULL},
        {.mac = {0x52, 0x54, 0x00, 0x11, 0x22, 0x66}, .ipv4 = ip4("10.66.0.7"), .hostname = NULL},
    };
    assert_int_equal(netplug_dhcp_write_hosts(&c, hosts, 3, &e), -EINVAL);
    assert_string_equal(e.msg, "network dh: hosts[2].mac: the same as hosts[0]'s");
    hosts[2].mac[5] = 0x68;
    hosts[2].ipv4 = ip4("10.67.0.7");
    assert_int_equal(netplug_dhcp_write_hosts(&c, hosts, 3, &e), -EINVAL);
    assert_string_equal(e.msg, "network dh: hosts[2].ip: not a host address of the network's cidr (or the gateway)");
    hosts[2].ipv4 = ip4("10.66.0.1");
    assert_int_equal(netplug_dhcp_write_hosts(&c, hosts, 3, &e), -EINVAL);
    hosts[1].hostname = "bad_name";
    assert_int_equal(netplug_dhcp_write_hosts(&c, hosts, 2, &e), -EINVAL);
    assert_string_equal(e.msg, "network dh: hosts[1].hostname: 1..63 of [A-Za-z0-9-]");
    hosts[1].hostname = NULL;
    if (netplug_dhcp_write_hosts(&c, hosts, 2, &e) != 0 || netplug_dhcp_write_opts(&c, &e) != 0 ||
        netplug_dhcp_argv(&c, &argv, &e) != 0)
        fail_msg("dhcp files: %s", e.msg);

    /* dnsmasq in this case's namespace; killed with us if we die */
    char log[128];
    snprintf(log, sizeof(log), "%s/dnsmasq.log", dhcp_dir);
    dnsmasq_pid = fork();
    assert_true(dnsmasq_pid >= 0);
    if (dnsmasq_pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execv(argv[0], argv);
        _exit(127);
    }
    netplug_dhcp_argv_free(argv);

    /* the guest's end in a client namespace, no address: DISCOVER, OFFER */
    int ns = t_client_ns();
    assert_int_equal(t_change("vdh1p", chg_nsfd, &ns), 0);
    enter(ns);
    t_up("vdh1p");
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0), one = 1;
    enter(main_ns);
    assert_true(fd >= 0);
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    setsockopt(fd, SOL_SOCKET, SO_BROADCAST, &one, sizeof(one));
    assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_BINDTODEVICE, "vdh1p", 6), 0);
    struct sockaddr_in any = {.sin_family = AF_INET, .sin_port = htons(68)};
    assert_int_equal(bind(fd, (struct sockaddr *)&any, sizeof(any)), 0);

    uint8_t msg[600], reply[1500];
    uint32_t xid = 0x43410001;
    struct sockaddr_in srv = {.sin_family = AF_INET, .sin_port = htons(67), .sin_addr.s_addr = INADDR_BROADCAST};
    size_t len = dhcp_discover(msg, g.mac, xid);
    ssize_t got = -1;
    uint64_t end = now_mono_ns() + 10000000000ull;
    while (got < 0 && now_mono_ns() < end) {
        /* dnsmasq may not listen yet: DISCOVER again until it answers */
        assert_int_equal(sendto(fd, msg, len, 0, (struct sockaddr *)&srv, sizeof(srv)), (ssize_t)len);
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        while (poll(&pfd, 1, 250) > 0) {
            ssize_t k = recv(fd, reply, sizeof(reply), 0);
            if (k >= 240 && reply[0] == 2 && memcmp(reply + 4, &xid, 4) == 0) {
                got = k;
                break;
            }
        }
    }
    close(fd);
    if (got < 0) {
        char buf[512] = "";
        int lf = open(log, O_RDONLY);
        if (lf >= 0) {
            ssize_t k = read(lf, buf, sizeof(buf) - 1);
            buf[k > 0 ? k : 0] = '\0';
            close(lf);
        }
        fail_msg("no DHCPOFFER; dnsmasq said: %s", buf);
    }
    size_t ol = 0;
    const uint8_t *o;
    assert_int_equal(*(uint32_t *)(void *)(reply + 16), ip4("10.66.0.5")); /* yiaddr */
    assert_non_null(o = dhcp_opt(reply, (size_t)got, 53, &ol));
    assert_int_equal(o[0], 2); /* OFFER */
    assert_non_null(o = dhcp_opt(reply, (size_t)got, 3, &ol));
    assert_int_equal(ol, 4);
    assert_memory_equal(o, &dns[0], 4); /* the router: the gateway */
    assert_non_null(o = dhcp_opt(reply, (size_t)got, 6, &ol));
    assert_int_equal(ol, 8);
    assert_memory_equal(o + 4, &dns[1], 4);
    assert_non_null(o = dhcp_opt(reply, (size_t)got, 26, &ol));
    assert_int_equal((o[0] << 8) | o[1], 1450);
    assert_non_null(o = dhcp_opt(reply, (size_t)got, 121, &ol));
    const uint8_t route[] = {32, 169, 254, 169, 254, 10, 66, 0, 1, 0, 10, 66, 0, 1};
    assert_int_equal(ol, sizeof(route));
    assert_memory_equal(o, route, sizeof(route));
    print_message("dhcp: dnsmasq offered 10.66.0.5 with router, dns, mtu 1450 and the metadata route, "
                  "through the port's filter\n");
    close(ns);
    netplug_free(np);
}

/* One plug + unplug, timed (the full figure is tests/bench/bench_netplug.c). */
static void test_cost(void **state)
{
    struct netplug *np = t_np(true);
    (void)state;

    t_net_add(np, &(struct np_network){.name = "k", .type = NP_NET_BRIDGE, .bridge = "cab-k"});
    struct np_port w = port("k", "tapk0", NP_PORT_TAP, 0xc0, "10.99.0.2");
    t_plug(np, &w); /* the bridge and the table exist from here on */
    double pl[5], un[5];
    for (int i = 0; i < 5; i++) {
        struct np_port a = port("k", "tapk1", NP_PORT_TAP, (uint8_t)(0xc1 + i), "10.99.0.3");
        uint64_t t0 = now_mono_ns();
        t_plug(np, &a);
        uint64_t t1 = now_mono_ns();
        t_unplug(np, "tapk1");
        uint64_t t2 = now_mono_ns();
        pl[i] = (double)(t1 - t0) / 1e6;
        un[i] = (double)(t2 - t1) / 1e6;
    }
    for (int i = 0; i < 5; i++) /* sort, for the median */
        for (int k = i + 1; k < 5; k++) {
            if (pl[k] < pl[i]) { double x = pl[i]; pl[i] = pl[k]; pl[k] = x; }
            if (un[k] < un[i]) { double x = un[i]; un[i] = un[k]; un[k] = x; }
        }
    print_message("cost of one tap (bridge and table in place), median of 5: plug %.2f ms, unplug %.2f ms "
                  "(min %.2f / %.2f)\n", pl[2], un[2], pl[0], un[0]);
    t_unplug(np, "tapk0");
    netplug_free(np);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_validation, setup_ns),
        cmocka_unit_test_setup(test_bridge_ports, setup_ns),
        cmocka_unit_test_setup(test_operator_bridge, setup_ns),
        cmocka_unit_test_setup(test_mtu, setup_ns),
        cmocka_unit_test_setup(test_vxlan, setup_ns),
        cmocka_unit_test_setup(test_vlan, setup_ns),
        cmocka_unit_test_setup(test_idempotent, setup_ns),
        cmocka_unit_test_setup(test_failure_undone, setup_ns),
        cmocka_unit_test_setup(test_sync_after_crash, setup_ns),
        cmocka_unit_test_setup(test_kill9, setup_ns),
        cmocka_unit_test_setup(test_threads, setup_ns),
        cmocka_unit_test_setup(test_ovs, setup_ns),
        cmocka_unit_test_setup(test_spoof, setup_ns),
        cmocka_unit_test_setup(test_peer, setup_ns),
        cmocka_unit_test_setup(test_fdb_pinned, setup_ns),
        cmocka_unit_test_setup(test_dhcp_fake_server, setup_ns),
        cmocka_unit_test_setup(test_filter_flushed, setup_ns),
        cmocka_unit_test_setup(test_host_firewall, setup_ns),
        cmocka_unit_test_setup_teardown(test_dhcp, setup_ns, teardown_dhcp),
        cmocka_unit_test_setup(test_cost, setup_ns),
    };

    if (geteuid() != 0) {
        printf("SKIP: test_netplug needs root (network namespaces, /dev/net/tun)\n");
        return 77;
    }
    if (unshare(CLONE_NEWNET) != 0) {
        printf("SKIP: test_netplug: unshare(CLONE_NEWNET): %s\n", strerror(errno));
        return 77;
    }
    if (access("/dev/net/tun", R_OK | W_OK) != 0) {
        printf("SKIP: test_netplug: /dev/net/tun: %s\n", strerror(errno));
        return 77;
    }
    return cmocka_run_group_tests(tests, NULL, NULL) ? 1 : 0;
}
