/* netplug_vlan_probe: net-plug's VLAN path where the kernel has 802.1Q (issue 10).
 *
 *   netplug_vlan_probe
 *
 * Built for the test guest's initramfs (tests/env/build-guest.sh, ca.exec) and run
 * there by tests/integration/test_net_vlan_guest_qemu.py: the machines' own kernel has
 * no 802.1Q, the guest's Debian kernel has 8021q. Runs in a network and mount
 * namespace of its own (unshare; a fresh sysfs there), so it never touches the
 * namespace it was started in; needs root and the modules 8021q, bridge, tun, veth,
 * nf_tables, nft_objref, nft_meta_bridge loaded (the guest's ca.mods=netplug).
 *
 * Through net-plug's public API, as the agent does for a `type = vlan` network
 * (antispoof on, a tap port as for QEMU and a veth port as for the test driver),
 * on a parent veth pair it makes (cavp0 <-> cavp1; net-plug names the VLAN device
 * cavl-NAME, not PARENT.ID):
 *  - the VLAN device (cavl-NAME) exists with the id, on the parent, in the
 *    agent-made bridge (netlink, /proc/net/vlan, sysfs), the ports in that bridge;
 *  - frames: untagged from the veth port leave the parent tagged with the id;
 *    tagged with the id into the parent they reach the port; another id does
 *    not; a spoofed source MAC from the port is dropped (mac_drop counted);
 *  - refcount: unplug one port, the bridge and VLAN device stay; unplug the last,
 *    both are gone; the parent is untouched;
 *  - devices it did not make are never removed (unplug -EPERM; a foreign device
 *    with the VLAN device's name makes the plug fail -EEXIST and stays).
 * Output (stdout): one line per check, "CA-VLAN: ok WHAT" or "CA-VLAN: FAIL WHAT: WHY",
 * then "CA-VLAN: done pass=N fail=M". Exit 0 when every check passed, 1 otherwise,
 * 2 when it cannot start (not root, no namespaces). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <netlink/netlink.h>
#include <netlink/route/link.h>
#include <netlink/route/link/veth.h>
#include <netlink/route/link/vlan.h>

#include "net-plug/netplug-internal.h" /* netplug_counter(): the tests' view */
#include "net-plug/netplug.h"

#define NET "vl"
#define BRIDGE "cabr-" NET
#define UPLINK "cavl-" NET
#define VID 105
#define VID_OTHER 106
#define PARENT "cavp0"
#define PEER "cavp1"
#define TAP "tapvl0"
#define VETH "vethvl1"
#define VETH_PEER VETH "p" /* the guest side, left in our namespace by net-plug */
#define FOREIGN "cafor0"
#define NET2 "vw"
#define UPLINK2 "cavl-" NET2

static const uint8_t MAC_TAP[6] = {0x52, 0x54, 0x00, 0x95, 0x00, 0x10};
static const uint8_t MAC_VETH[6] = {0x52, 0x54, 0x00, 0x95, 0x00, 0x11};
static const uint8_t MAC_REMOTE[6] = {0x52, 0x54, 0x00, 0x95, 0x00, 0x99}; /* "beyond the parent" */
static const uint8_t MAC_SPOOF[6] = {0x52, 0x54, 0x00, 0x66, 0x66, 0x66};
static const uint8_t MAC_BCAST[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};

static int npass, nfail;

static void __attribute__((format(printf, 2, 3))) check(bool ok, const char *fmt, ...)
{
    va_list ap;

    printf("CA-VLAN: %s ", ok ? "ok" : "FAIL");
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    fflush(stdout);
    if (ok)
        npass++;
    else
        nfail++;
}

/* ---- what the kernel says (independently of net-plug) ---- */

static bool dev_exists(const char *dev)
{
    char p[128];

    snprintf(p, sizeof(p), "/sys/class/net/%s", dev);
    return access(p, F_OK) == 0;
}

/* The master's name ("" none). */
static void dev_master(const char *dev, char out[IFNAMSIZ])
{
    char p[128], t[256];
    ssize_t n;

    out[0] = '\0';
    snprintf(p, sizeof(p), "/sys/class/net/%s/master", dev);
    if ((n = readlink(p, t, sizeof(t) - 1)) <= 0)
        return;
    t[n] = '\0';
    snprintf(out, IFNAMSIZ, "%.15s", strrchr(t, '/') ? strrchr(t, '/') + 1 : t);
}

static void dev_read(const char *dev, const char *attr, char *out, size_t size)
{
    char p[128];
    FILE *f;

    out[0] = '\0';
    snprintf(p, sizeof(p), "/sys/class/net/%s/%s", dev, attr);
    if (!(f = fopen(p, "r")))
        return;
    if (!fgets(out, (int)size, f))
        out[0] = '\0';
    out[strcspn(out, "\n")] = '\0';
    fclose(f);
}

static bool dev_is_bridge(const char *dev)
{
    char p[128];

    snprintf(p, sizeof(p), "/sys/class/net/%s/bridge", dev);
    return access(p, F_OK) == 0;
}

static bool dev_up(const char *dev)
{
    char fl[32];

    dev_read(dev, "flags", fl, sizeof(fl));
    return fl[0] && (strtoul(fl, NULL, 0) & IFF_UP);
}

/* VLAN devices in the namespace (netlink dump): how many, and the first's name. */
static int vlan_count(struct nl_sock *sk, char first[IFNAMSIZ])
{
    struct nl_cache *cache = NULL;
    int n = 0;

    first[0] = '\0';
    if (rtnl_link_alloc_cache(sk, AF_UNSPEC, &cache) < 0)
        return -1;
    for (struct nl_object *o = nl_cache_get_first(cache); o; o = nl_cache_get_next(o)) {
        struct rtnl_link *l = (struct rtnl_link *)o;
        if (rtnl_link_is_vlan(l) && n++ == 0)
            snprintf(first, IFNAMSIZ, "%.15s", rtnl_link_get_name(l));
    }
    nl_cache_free(cache);
    return n;
}

/* /proc/net/vlan/DEV: "VID: N" and "Device: PARENT". */
static int proc_vlan(const char *dev, int *vid, char parent[IFNAMSIZ])
{
    char p[128], line[256];
    FILE *f;

    *vid = -1;
    parent[0] = '\0';
    snprintf(p, sizeof(p), "/proc/net/vlan/%s", dev);
    if (!(f = fopen(p, "r")))
        return -errno;
    while (fgets(line, sizeof(line), f)) {
        char *s;
        if ((s = strstr(line, "VID: ")))
            sscanf(s + 5, "%d", vid); /* /proc/net/vlan/DEV: "... VID: 105  REORDER_HDR: 1 ..." */
        if ((s = strstr(line, "Device: ")))
            sscanf(s + 8, "%15s", parent);
    }
    fclose(f);
    return 0;
}

/* ---- devices of the probe's own (the parent, a foreign device) ---- */

static int set_up(const char *dev)
{
    struct ifreq ifr = {0};
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0), r = 0;

    if (fd < 0)
        return -errno;
    snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", dev);
    if (ioctl(fd, SIOCGIFFLAGS, &ifr) < 0 || (ifr.ifr_flags |= IFF_UP, ioctl(fd, SIOCSIFFLAGS, &ifr) < 0))
        r = -errno;
    close(fd);
    return r;
}

/* A device net-plug did not make: a veth pair NAME <-> NAME + "p" (veth is what the
 * parent needs anyway; no dummy module then). */
static int make_foreign(struct nl_sock *sk, const char *name)
{
    char peer[IFNAMSIZ];

    snprintf(peer, sizeof(peer), "%.14sp", name);
    return rtnl_link_veth_add(sk, name, peer, getpid()) < 0 ? -EIO : 0;
}

static void del_link(struct nl_sock *sk, const char *name)
{
    struct rtnl_link *l = rtnl_link_alloc();

    if (!l)
        return;
    rtnl_link_set_name(l, name);
    rtnl_link_delete(sk, l);
    rtnl_link_put(l);
}

/* ---- frames (AF_PACKET) ---- */

static uint64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int pkt_open(const char *dev)
{
    struct sockaddr_ll sa = {.sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_ALL)};
    int fd, one = 1;

    if (!(sa.sll_ifindex = (int)if_nametoindex(dev)))
        return -ENODEV;
    if ((fd = socket(AF_PACKET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, htons(ETH_P_ALL))) < 0)
        return -errno;
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
        setsockopt(fd, SOL_PACKET, PACKET_AUXDATA, &one, sizeof(one)) < 0) {
        int e = -errno;
        close(fd);
        return e;
    }
    return fd;
}

static uint16_t ip_csum(const uint8_t *p, size_t n)
{
    uint32_t s = 0;

    for (size_t i = 0; i + 1 < n; i += 2)
        s += (uint32_t)(p[i] << 8 | p[i + 1]);
    while (s >> 16)
        s = (s & 0xffff) + (s >> 16);
    return (uint16_t)~s;
}

/* An IPv4/UDP broadcast frame (src MAC/IP given), tagged with vid when vid > 0,
 * carrying the text tag; returns its length. */
static size_t frame(uint8_t *f, const uint8_t src[6], const char *sip, int vid, const char *tag)
{
    size_t o = 0, tl = strlen(tag), iplen = 20 + 8 + tl;
    struct in_addr s, d;

    memset(f, 0, 128);
    memcpy(f, MAC_BCAST, 6);
    memcpy(f + 6, src, 6);
    o = 12;
    if (vid > 0) {
        f[o++] = 0x81, f[o++] = 0x00;
        f[o++] = (uint8_t)(vid >> 8), f[o++] = (uint8_t)vid;
    }
    f[o++] = 0x08, f[o++] = 0x00;
    inet_pton(AF_INET, sip, &s);
    inet_pton(AF_INET, "10.95.0.255", &d);
    uint8_t *ip = f + o;
    ip[0] = 0x45;
    ip[2] = (uint8_t)(iplen >> 8), ip[3] = (uint8_t)iplen;
    ip[8] = 64;
    ip[9] = 17; /* UDP */
    memcpy(ip + 12, &s, 4);
    memcpy(ip + 16, &d, 4);
    uint16_t c = ip_csum(ip, 20);
    ip[10] = (uint8_t)(c >> 8), ip[11] = (uint8_t)c;
    uint8_t *udp = ip + 20;
    udp[0] = 0x9c, udp[1] = 0x40; /* 40000 */
    udp[2] = 0x9c, udp[3] = 0x41; /* 40001 */
    udp[4] = (uint8_t)((8 + tl) >> 8), udp[5] = (uint8_t)(8 + tl);
    memcpy(udp + 8, tag, tl);
    o += iplen;
    return o < 60 ? 60 : o;
}

static int pkt_send(int fd, const char *dev, const uint8_t *f, size_t n)
{
    struct sockaddr_ll sa = {.sll_family = AF_PACKET, .sll_halen = 6};

    sa.sll_ifindex = (int)if_nametoindex(dev);
    memcpy(sa.sll_addr, MAC_BCAST, 6);
    return sendto(fd, f, n, 0, (struct sockaddr *)&sa, sizeof(sa)) == (ssize_t)n ? 0 : -errno;
}

struct seen {
    bool want;   /* the frame tagged `want` arrived */
    int vid;     /* its 802.1Q id: -1 untagged (in the frame or in the auxdata) */
    bool bad;    /* a frame tagged `bad` arrived */
};

static bool has(const uint8_t *p, size_t n, const char *s)
{
    return s && memmem(p, n, s, strlen(s)) != NULL;
}

/* Reads what arrives on fd (not what it sends) until `want` is seen or until
 * deadline (ms, monotonic); notes `bad`. */
static void pkt_collect(int fd, uint64_t deadline, const char *want, const char *bad, struct seen *s)
{
    uint8_t buf[2048];
    union {
        struct cmsghdr h;
        char b[CMSG_SPACE(sizeof(struct tpacket_auxdata))];
    } cb;

    while (!s->want) {
        uint64_t t = now_ms();
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        if (t >= deadline || poll(&pfd, 1, (int)(deadline - t)) <= 0)
            return;
        for (;;) {
            struct sockaddr_ll from;
            struct iovec iov = {.iov_base = buf, .iov_len = sizeof(buf)};
            struct msghdr m = {.msg_name = &from, .msg_namelen = sizeof(from), .msg_iov = &iov,
                               .msg_iovlen = 1, .msg_control = cb.b, .msg_controllen = sizeof(cb.b)};
            ssize_t n = recvmsg(fd, &m, 0);
            if (n < 0)
                break;
            if (from.sll_pkttype == PACKET_OUTGOING)
                continue;
            int vid = -1;
            for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
                if (c->cmsg_level == SOL_PACKET && c->cmsg_type == PACKET_AUXDATA) {
                    struct tpacket_auxdata a;
                    memcpy(&a, CMSG_DATA(c), sizeof(a));
                    if (a.tp_status & TP_STATUS_VLAN_VALID)
                        vid = a.tp_vlan_tci & 0xfff;
                }
            }
            if (vid < 0 && n >= 16 && buf[12] == 0x81 && buf[13] == 0x00)
                vid = (buf[14] << 8 | buf[15]) & 0xfff;
            if (has(buf, (size_t)n, bad))
                s->bad = true;
            if (!s->want && has(buf, (size_t)n, want)) {
                s->want = true;
                s->vid = vid;
            }
        }
    }
}

/* Sends (on tx/txdev) the frame `bad` (if any) then `want`, again every 200 ms,
 * until `want` is seen on rx or 10 s have passed (a bridge port may take a moment
 * to forward). */
static void exchange(int tx, const char *txdev, int rx, const uint8_t *fbad, size_t nbad, const char *bad,
                     const uint8_t *fwant, size_t nwant, const char *want, struct seen *s)
{
    uint64_t end = now_ms() + 10000;

    *s = (struct seen){.vid = -2};
    while (!s->want && now_ms() < end) {
        if (fbad)
            pkt_send(tx, txdev, fbad, nbad);
        pkt_send(tx, txdev, fwant, nwant);
        uint64_t d = now_ms() + 200;
        pkt_collect(rx, d < end ? d : end, want, bad, s);
    }
}

static void traffic(struct netplug *np)
{
    uint8_t f1[128], f2[128];
    size_t n1, n2;
    struct seen s;
    int fp = pkt_open(PEER), fv = pkt_open(VETH_PEER);
    uint64_t drops0 = 0, drops1 = 0;

    if (fp < 0 || fv < 0) {
        check(false, "traffic: AF_PACKET sockets on %s and %s: %s", PEER, VETH_PEER,
              strerror(-(fp < 0 ? fp : fv)));
        check(false, "traffic: (skipped)");
        check(false, "traffic: (skipped)");
        check(false, "traffic: (skipped)");
        goto out;
    }
    n1 = frame(f1, MAC_VETH, "10.95.0.11", 0, "CA-VLAN-PROBE-UP");
    exchange(fv, VETH_PEER, fp, NULL, 0, NULL, f1, n1, "CA-VLAN-PROBE-UP", &s);
    check(s.want && s.vid == VID, "traffic: an untagged frame from the port leaves %s tagged %d", PARENT, VID);
    if (!(s.want && s.vid == VID))
        printf("CA-VLAN: (arrived %d, id %d)\n", s.want, s.vid);

    n1 = frame(f1, MAC_REMOTE, "10.95.0.99", VID_OTHER, "CA-VLAN-PROBE-OTHER");
    n2 = frame(f2, MAC_REMOTE, "10.95.0.99", VID, "CA-VLAN-PROBE-DOWN");
    exchange(fp, PEER, fv, f1, n1, "CA-VLAN-PROBE-OTHER", f2, n2, "CA-VLAN-PROBE-DOWN", &s);
    check(s.want && s.vid == -1, "traffic: a frame tagged %d into %s reaches the port untagged", VID, PARENT);
    if (!(s.want && s.vid == -1))
        printf("CA-VLAN: (arrived %d, id %d)\n", s.want, s.vid);
    check(s.want && !s.bad, "traffic: a frame tagged %d (sent before it) does not", VID_OTHER);

    netplug_counter(np, "mac_drop", &drops0);
    n1 = frame(f1, MAC_SPOOF, "10.95.0.11", 0, "CA-VLAN-PROBE-SPOOF");
    n2 = frame(f2, MAC_VETH, "10.95.0.11", 0, "CA-VLAN-PROBE-AFTER");
    exchange(fv, VETH_PEER, fp, f1, n1, "CA-VLAN-PROBE-SPOOF", f2, n2, "CA-VLAN-PROBE-AFTER", &s);
    netplug_counter(np, "mac_drop", &drops1);
    check(s.want && !s.bad && drops1 > drops0,
          "traffic: a spoofed source MAC from the port never reaches %s (mac_drop %llu -> %llu)", PARENT,
          (unsigned long long)drops0, (unsigned long long)drops1);
out:
    if (fp >= 0)
        close(fp);
    if (fv >= 0)
        close(fv);
}

/* ---- the run ---- */

static int enter_namespace(void)
{
    if (unshare(CLONE_NEWNET | CLONE_NEWNS) < 0) {
        fprintf(stderr, "netplug_vlan_probe: unshare: %s\n", strerror(errno));
        return -1;
    }
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
        mount("sysfs", "/sys", "sysfs", 0, NULL) < 0) {
        fprintf(stderr, "netplug_vlan_probe: a sysfs of the new namespace: %s\n", strerror(errno));
        return -1;
    }
    return 0;
}

static void plug_checks(struct netplug *np, struct nl_sock *sk)
{
    struct np_error e = {0};
    struct np_port tap = {.network = NET, .dev = TAP, .kind = NP_PORT_TAP, .owner = "probe-tap"};
    struct np_port veth = {.network = NET, .dev = VETH, .kind = NP_PORT_VETH, .owner = "probe-veth"};
    char m[IFNAMSIZ], par[IFNAMSIZ], first[IFNAMSIZ] = "", alias[256];
    struct rtnl_link *l = NULL;
    int r, vid;

    memcpy(tap.mac, MAC_TAP, 6);
    inet_pton(AF_INET, "10.95.0.10", &tap.ipv4);
    memcpy(veth.mac, MAC_VETH, 6);
    inet_pton(AF_INET, "10.95.0.11", &veth.ipv4);

    r = netplug_plug(np, &tap, &e);
    check(r == 0, "plug %s (a tap, as for QEMU) on vlan network %s%s%s", TAP, NET, r ? ": " : "", r ? e.msg : "");

    r = rtnl_link_get_kernel(sk, 0, UPLINK, &l);
    check(r == 0 && rtnl_link_is_vlan(l) && rtnl_link_vlan_get_id(l) == VID &&
              rtnl_link_get_link(l) == (int)if_nametoindex(PARENT),
          "netlink: %s is a VLAN device, id %d, on %s (got: %s, id %d, link %d)", UPLINK, VID, PARENT,
          r ? nl_geterror(r) : rtnl_link_get_type(l) ? rtnl_link_get_type(l) : "?",
          r == 0 && rtnl_link_is_vlan(l) ? rtnl_link_vlan_get_id(l) : -1, r == 0 ? rtnl_link_get_link(l) : 0);
    if (l)
        rtnl_link_put(l);

    r = proc_vlan(UPLINK, &vid, par);
    check(r == 0 && vid == VID && strcmp(par, PARENT) == 0, "/proc/net/vlan/%s: VID %d on %s (got %d on '%s'%s%s)",
          UPLINK, VID, PARENT, vid, par, r ? ", " : "", r ? strerror(-r) : "");

    dev_read(BRIDGE, "ifalias", alias, sizeof(alias));
    check(dev_is_bridge(BRIDGE) && dev_up(BRIDGE) && strcmp(alias, "compute-agent") == 0,
          "bridge %s made by net-plug: a bridge, up, alias compute-agent (alias '%s')", BRIDGE, alias);

    dev_master(UPLINK, m);
    check(strcmp(m, BRIDGE) == 0 && dev_up(UPLINK), "%s is up and enslaved to %s (master '%s')", UPLINK, BRIDGE, m);
    dev_master(TAP, m);
    check(strcmp(m, BRIDGE) == 0, "%s is enslaved to %s (master '%s')", TAP, BRIDGE, m);

    r = netplug_plug(np, &veth, &e);
    dev_master(VETH, m);
    check(r == 0 && strcmp(m, BRIDGE) == 0 && dev_exists(VETH_PEER),
          "plug %s (a veth, as for the test driver): in %s, %s left to the guest side (master '%s')%s%s", VETH,
          BRIDGE, VETH_PEER, m, r ? ": " : "", r ? e.msg : "");

    r = netplug_plug(np, &tap, &e);
    check(r == 0 && vlan_count(sk, first) == 1 && strcmp(first, UPLINK) == 0,
          "plug %s again: idempotent, still one VLAN device (%s)%s%s", TAP, first, r ? ": " : "", r ? e.msg : "");

    check(netplug_port_filtered(np, TAP) && netplug_port_filtered(np, VETH),
          "both ports have their anti-spoofing entries");

    set_up(VETH_PEER);
    traffic(np);

    r = netplug_unplug(np, TAP, &e);
    dev_master(VETH, m);
    check(r == 0 && !dev_exists(TAP) && dev_exists(BRIDGE) && dev_exists(UPLINK) && strcmp(m, BRIDGE) == 0,
          "unplug %s: gone; %s and %s stay for %s (refcount)%s%s", TAP, BRIDGE, UPLINK, VETH, r ? ": " : "",
          r ? e.msg : "");

    r = netplug_unplug(np, VETH, &e);
    check(r == 0 && !dev_exists(VETH) && !dev_exists(VETH_PEER) && !dev_exists(UPLINK) && !dev_exists(BRIDGE) &&
              vlan_count(sk, first) == 0,
          "unplug %s, the last port: it, %s and %s are gone%s%s", VETH, UPLINK, BRIDGE, r ? ": " : "",
          r ? e.msg : "");
    check(!netplug_port_filtered(np, TAP) && !netplug_port_filtered(np, VETH),
          "no anti-spoofing entries left for the ports");

    r = netplug_unplug(np, VETH, &e);
    check(r == 0, "unplug %s again: 0 (idempotent)%s%s", VETH, r ? ": " : "", r ? e.msg : "");

    dev_master(PARENT, m);
    dev_read(PARENT, "ifalias", alias, sizeof(alias));
    check(dev_exists(PARENT) && dev_exists(PEER) && !m[0] && !alias[0] && dev_up(PARENT),
          "parent %s untouched: there, up, no master, no alias (master '%s', alias '%s')", PARENT, m, alias);
}

static void foreign_checks(struct netplug *np, struct nl_sock *sk)
{
    struct np_error e = {0};
    struct np_network n2 = {.name = NET2, .type = NP_NET_VLAN, .parent = PARENT, .vlan_id = VID_OTHER};
    struct np_port p = {.network = NET2, .dev = "tapvw0", .kind = NP_PORT_TAP, .owner = "probe-foreign"};
    int r;

    r = make_foreign(sk, FOREIGN);
    r = r < 0 ? r : netplug_unplug(np, FOREIGN, &e);
    check(r == -EPERM && dev_exists(FOREIGN), "unplug %s, a device net-plug did not make: -EPERM, left alone (%d %s)",
          FOREIGN, r, e.msg);

    memcpy(p.mac, MAC_TAP, 6);
    r = make_foreign(sk, UPLINK2);
    r = r < 0 ? r : netplug_network_add(np, &n2, &e);
    r = r < 0 ? r : netplug_plug(np, &p, &e);
    check(r == -EEXIST && dev_exists(UPLINK2) && !dev_exists("cabr-" NET2) && !dev_exists("tapvw0"),
          "vlan network %s whose device name %s is taken by a foreign device: plug -EEXIST, the device kept, "
          "nothing left (%d %s)", NET2, UPLINK2, r, e.msg);
}

int main(void)
{
    struct netplug_config cfg = {.antispoof = true}; /* as the agent (agent/main.c) */
    struct np_network net = {.name = NET, .type = NP_NET_VLAN, .parent = PARENT, .vlan_id = VID,
                             .gateway = "10.95.0.1/24"};
    struct netplug *np = NULL;
    struct np_error e = {0};
    struct nl_sock *sk;
    int r;

    setvbuf(stdout, NULL, _IOLBF, 0);
    if (geteuid() != 0) {
        fprintf(stderr, "netplug_vlan_probe: needs root\n");
        return 2;
    }
    if (enter_namespace() < 0)
        return 2;
    if (!(sk = nl_socket_alloc()) || nl_connect(sk, NETLINK_ROUTE) < 0) {
        fprintf(stderr, "netplug_vlan_probe: netlink socket\n");
        return 2;
    }
    check(access("/proc/net/vlan", F_OK) == 0, "802.1Q in this kernel (/proc/net/vlan: 8021q loaded)");

    r = rtnl_link_veth_add(sk, PARENT, PEER, getpid());
    if (r == 0 && (r = set_up(PARENT)) == 0)
        r = set_up(PEER);
    check(r == 0, "parent veth pair %s <-> %s made by the probe, up (%d)", PARENT, PEER, r);

    r = netplug_new(&cfg, &np, &e);
    check(r == 0, "netplug_new (antispoof on)%s%s", r ? ": " : "", r ? e.msg : "");
    if (r == 0) {
        r = netplug_network_add(np, &net, &e);
        check(r == 0, "network %s: type vlan, parent %s, vlan_id %d%s%s", NET, PARENT, VID, r ? ": " : "",
              r ? e.msg : "");
        plug_checks(np, sk);
        foreign_checks(np, sk);
        netplug_free(np);
    }
    del_link(sk, FOREIGN);
    del_link(sk, UPLINK2);
    del_link(sk, PARENT);
    nl_socket_free(sk);
    printf("CA-VLAN: done pass=%d fail=%d\n", npass, nfail);
    return nfail ? 1 : 0;
}
