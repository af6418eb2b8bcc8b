/* filter.c: per-port anti-spoofing in one nftables table of the bridge family,
 * through libnftables (no nft process). The table (default `bridge
 * compute_agent`) holds three sets, filled per port:
 *   ports { ifname }                   the ports under the filter
 *   macs  { ifname . ether_addr }      a port's guest MAC
 *   ips   { ifname . ipv4_addr }       a port's guest IPv4 (none: IPv4 and ARP dropped)
 * and a prerouting chain at priority -200 (before the bridge forwards or
 * delivers anything) that lets a filtered port send only:
 *   frames from its MAC; ARP (Ethernet/IPv4) with its MAC and its IP (or the
 *   0.0.0.0 of an RFC 5227 probe); IPv4 from its IP, or the DHCP discover
 *   0.0.0.0:68 -> 255.255.255.255:67; never a DHCP server reply (udp sport 67,
 *   or anything to udp port 68); no link-local group frame (01:80:c2:00:00:0X:
 *   here and in the bridge input chain, for those the bridge consumes); nothing
 *   else (IPv6, so no DHCPv6 either; VLAN-tagged frames, other ethertypes), as
 *   libvirt's clean-traffic. Named counters count each verdict, for tests and
 *   metrics. (01:80:c2:00:00:00 and :0e meet no bridge hook at all: learning is
 *   off on guest ports, link.c, and the inet table drops what reaches the port's
 *   own stack.)
 * The rules are rewritten (flush + add, one transaction) once per process, so
 * an older table is upgraded in place; the sets' elements and the counters
 * stay. Called with np->lock held. */
#include <jansson.h>
#include <nftables/libnftables.h>
#include <arpa/inet.h>
#include <stdarg.h>

#include "common/util.h"
#include "net-plug/netplug-internal.h"

struct sbuf {
    char *p;
    size_t len, cap;
    int err;
};

static void sb_add(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_add(struct sbuf *b, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (b->err)
        return;
    for (;;) {
        size_t room = b->cap - b->len;
        va_start(ap, fmt);
        n = vsnprintf(b->p ? b->p + b->len : NULL, b->p ? room : 0, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->err = -EINVAL;
            return;
        }
        if (b->p && (size_t)n < room) {
            b->len += (size_t)n;
            return;
        }
        size_t ncap = b->cap ? b->cap * 2 : 1024;
        while (ncap < b->len + (size_t)n + 1)
            ncap *= 2;
        char *np = realloc(b->p, ncap);
        if (!np) {
            b->err = -ENOMEM;
            return;
        }
        b->p = np;
        b->cap = ncap;
    }
}

/* Runs a command buffer; on failure the first line of nft's error in err. */
static int nft_run(struct netplug *np, const char *cmd, bool json, struct np_error *err, const char *what)
{
    unsigned flags = nft_ctx_output_get_flags(np->nft);
    int r;

    if (json)
        nft_ctx_output_set_flags(np->nft, flags | NFT_CTX_OUTPUT_JSON);
    r = nft_run_cmd_from_buffer(np->nft, cmd);
    if (json)
        nft_ctx_output_set_flags(np->nft, flags);
    if (r == 0)
        return 0;
    const char *e = nft_ctx_get_error_buffer(np->nft);
    char line[160] = "";
    if (e) {
        strscpy(line, e, sizeof(line));
        line[strcspn(line, "\n")] = '\0';
    }
    r = (e && strstr(e, "No such file or directory")) ? -ENOENT : -EIO;
    if (err)
        np_fail(err, -r, "%s: nftables table bridge %s: %s", what, np->table, line);
    return r;
}

static const char *const counters[] = {"mac_drop",  "arp_drop",   "ip_drop",   "dhcp_server_drop",
                                       "other_drop", "ip_accept", "arp_accept", "ll_drop"};

/* The rules, in order (np_filter_verify counts them back). */
static const struct {
    const char *chain, *text;
} rules[] = {
    {"prerouting", "iifname != @ports accept"},
    {"prerouting", "iifname . ether saddr != @macs counter name mac_drop drop"},
    /* link-local group frames (STP, LACP, 802.1X, LLDP...): nothing a guest needs
     * to send; those the bridge forwards (group_fwd_mask) meet them here */
    {"prerouting", "ether daddr & ff:ff:ff:ff:ff:f0 == 01:80:c2:00:00:00 counter name ll_drop drop"},
    {"prerouting", "ether type arp jump arp_check"},
    {"prerouting", "ether type ip jump ip_check"},
    {"prerouting", "counter name other_drop drop"},
    {"arp_check", "arp htype != 1 counter name arp_drop drop"},
    {"arp_check", "arp ptype != ip counter name arp_drop drop"},
    {"arp_check", "arp hlen != 6 counter name arp_drop drop"},
    {"arp_check", "arp plen != 4 counter name arp_drop drop"},
    {"arp_check", "iifname . arp saddr ether != @macs counter name arp_drop drop"},
    {"arp_check", "arp saddr ip 0.0.0.0 counter name arp_accept accept"},
    {"arp_check", "iifname . arp saddr ip != @ips counter name arp_drop drop"},
    {"arp_check", "counter name arp_accept accept"},
    {"ip_check", "udp sport 67 counter name dhcp_server_drop drop"},
    {"ip_check", "udp dport 68 counter name dhcp_server_drop drop"}, /* a reply from any source port */
    {"ip_check", "ip saddr 0.0.0.0 ip daddr 255.255.255.255 udp sport 68 udp dport 67 "
                 "counter name ip_accept accept"},
    {"ip_check", "iifname . ip saddr != @ips counter name ip_drop drop"},
    {"ip_check", "counter name ip_accept accept"},
    /* the link-local frames the bridge consumes skip prerouting; all but
     * 01:80:c2:00:00:00 and :0e (which meet no bridge hook at all) pass input */
    {"input", "iifname != @ports accept"},
    {"input", "ether daddr & ff:ff:ff:ff:ff:f0 == 01:80:c2:00:00:00 counter name ll_drop drop"},
};

/* The host firewall: table inet <table> (when np->hostfw). Sets of the agent's
 * devices: nets {ifname} every bridge of a (non-ovs) network, same {ifname .
 * ifname} each (bridge . bridge), hosted {ifname} the bridges the agent made
 * (their gateway and metadata addresses are the agent's), gws {ifname .
 * ipv4_addr} their gateways, dhcp {ifname} those serving DHCP, dns {ifname}
 * those whose guests are told the gateway is their DNS server, ports {ifname}
 * the guest ports. After the metadata rule below (its address and port are
 * the handle's) come these. */
static const struct {
    const char *chain, *text;
} inet_rules[] = {
    /* a guest port is never an IP interface: what reaches its own stack
     * (a link-local group frame the bridge passed up) goes no further */
    {"prerouting", "iifname @ports counter name port_drop drop"},
    /* no routing between two agent networks (a network's own L2 is bridged, not
     * routed; to and from elsewhere is the host's routing, not the agent's) */
    {"forward", "iifname . oifname @same accept"},
    {"forward", "iifname @nets oifname @nets counter name fwd_drop drop"},
    /* from an agent-made bridge, the host answers only what guests need */
    {"input", "iifname != @hosted accept"},
    {"input", "ct state established,related accept"},
    {"input", "iifname @dhcp udp dport 67 accept"},
    {"input", "iifname . ip daddr @gws icmp type echo-request accept"},
    {"input", "iifname @dns iifname . ip daddr @gws meta l4proto { tcp, udp } th dport 53 accept"},
    {"input", "meta l4proto tcp counter name host_drop reject with tcp reset"},
    {"input", "counter name host_drop drop"},
};
#define INET_RULES (ARRAY_SIZE(inet_rules) + 1) /* and the metadata rule */

static void inet_ensure(struct netplug *np, struct sbuf *b)
{
    const char *t = np->table;
    static const char *const sets[][2] = {{"nets", "ifname"}, {"same", "ifname . ifname"}, {"hosted", "ifname"},
                                          {"gws", "ifname . ipv4_addr"}, {"dhcp", "ifname"}, {"dns", "ifname"},
                                          {"ports", "ifname"}};

    sb_add(b, "add table inet %s\n", t);
    for (size_t i = 0; i < ARRAY_SIZE(sets); i++)
        sb_add(b, "add set inet %s %s { type %s; }\n", t, sets[i][0], sets[i][1]);
    /* the networks' elements are written again by every plug (net_ensure) */
    for (size_t i = 0; i < ARRAY_SIZE(sets) - 1; i++) /* all but ports */
        sb_add(b, "flush set inet %s %s\n", t, sets[i][0]);
    sb_add(b, "add counter inet %s port_drop\nadd counter inet %s fwd_drop\nadd counter inet %s host_drop\n",
           t, t, t);
    sb_add(b, "add chain inet %s prerouting { type filter hook prerouting priority -300; policy accept; }\n", t);
    sb_add(b, "add chain inet %s forward { type filter hook forward priority 0; policy accept; }\n", t);
    sb_add(b, "add chain inet %s input { type filter hook input priority 0; policy accept; }\n", t);
    sb_add(b, "flush chain inet %s prerouting\nflush chain inet %s forward\nflush chain inet %s input\n", t, t, t);
    for (size_t i = 0; i < ARRAY_SIZE(inet_rules); i++) {
        sb_add(b, "add rule inet %s %s %s\n", t, inet_rules[i].chain, inet_rules[i].text);
        if (i == 4) /* after the established replies */
            sb_add(b, "add rule inet %s input ip daddr %s tcp dport %u accept\n", t, np->md_addr,
                   (unsigned)np->md_port);
    }
    for (struct np_net *n = np->nets; n; n = n->next)
        n->fw_in = false;
}

int np_filter_ensure(struct netplug *np, struct np_error *err)
{
    struct sbuf b = {0};
    const char *t = np->table;
    int r;

    if (np->nft_ready)
        return 0;
    sb_add(&b, "add table bridge %s\n", t);
    sb_add(&b, "add set bridge %s ports { type ifname; }\n", t);
    sb_add(&b, "add set bridge %s macs { type ifname . ether_addr; }\n", t);
    sb_add(&b, "add set bridge %s ips { type ifname . ipv4_addr; }\n", t);
    for (size_t i = 0; i < ARRAY_SIZE(counters); i++)
        sb_add(&b, "add counter bridge %s %s\n", t, counters[i]);
    sb_add(&b, "add chain bridge %s prerouting { type filter hook prerouting priority -200; "
               "policy accept; }\n", t);
    sb_add(&b, "add chain bridge %s input { type filter hook input priority -200; policy accept; }\n", t);
    sb_add(&b, "add chain bridge %s arp_check\nadd chain bridge %s ip_check\n", t, t);
    sb_add(&b, "flush chain bridge %s prerouting\nflush chain bridge %s arp_check\n"
               "flush chain bridge %s ip_check\nflush chain bridge %s input\n", t, t, t, t);
    for (size_t i = 0; i < ARRAY_SIZE(rules); i++)
        sb_add(&b, "add rule bridge %s %s %s\n", t, rules[i].chain, rules[i].text);
    if (np->hostfw)
        inet_ensure(np, &b);
    if (b.err) {
        free(b.p);
        return np_fail(err, -b.err, "anti-spoofing: %s", strerror(-b.err));
    }
    r = nft_run(np, b.p, false, err, "anti-spoofing");
    free(b.p);
    if (r == 0 && !np->hostfw) {
        char cmd[96];
        snprintf(cmd, sizeof(cmd), "delete table inet %s", t); /* host_firewall turned off: none left */
        nft_run(np, cmd, false, NULL, "host firewall");
    }
    if (r == 0)
        np->nft_ready = true;
    return r;
}

static void fmt_mac(const uint8_t m[6], char out[18])
{
    snprintf(out, 18, "%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4], m[5]);
}

static void fmt_ip(uint32_t ip, char out[16])
{
    struct in_addr a = {.s_addr = ip};
    inet_ntop(AF_INET, &a, out, 16);
}

static void add_elems(struct sbuf *b, const char *verb, struct netplug *np, const char *dev, const uint8_t mac[6],
                      uint32_t ip)
{
    const char *t = np->table;
    char m[18], i[16];

    fmt_mac(mac, m);
    sb_add(b, "%s element bridge %s macs { \"%s\" . %s }\n", verb, t, dev, m);
    if (ip) {
        fmt_ip(ip, i);
        sb_add(b, "%s element bridge %s ips { \"%s\" . %s }\n", verb, t, dev, i);
    }
    sb_add(b, "%s element bridge %s ports { \"%s\" }\n", verb, t, dev);
    if (np->hostfw)
        sb_add(b, "%s element inet %s ports { \"%s\" }\n", verb, t, dev);
}

/* Runs the change; if the table is not as recorded (someone else edited it),
 * reads it back once and lets the caller retry. */
static int run_change(struct netplug *np, struct sbuf *b, struct np_error *err, const char *dev)
{
    char what[64];
    int r;

    if (b->err) {
        free(b->p);
        return np_fail(err, -b->err, "port %s: anti-spoofing: %s", dev, strerror(-b->err));
    }
    snprintf(what, sizeof(what), "port %s: anti-spoofing", dev);
    r = nft_run(np, b->p, false, err, what);
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
    return r;
}

static void net_elems(struct netplug *np, struct sbuf *b, const char *verb, const struct np_net *n)
{
    const char *t = np->table, *br = n->bridge;

    sb_add(b, "%s element inet %s nets { \"%s\" }\n", verb, t, br);
    sb_add(b, "%s element inet %s same { \"%s\" . \"%s\" }\n", verb, t, br, br);
    if (!n->fw_ours)
        return;
    sb_add(b, "%s element inet %s hosted { \"%s\" }\n", verb, t, br);
    if (n->gw.s_addr) {
        char i[16];
        fmt_ip(n->gw.s_addr, i);
        sb_add(b, "%s element inet %s gws { \"%s\" . %s }\n", verb, t, br, i);
    }
    if (n->dhcp)
        sb_add(b, "%s element inet %s dhcp { \"%s\" }\n", verb, t, br);
    if (n->dns_gateway && n->gw.s_addr)
        sb_add(b, "%s element inet %s dns { \"%s\" }\n", verb, t, br);
}

int np_fw_net_add(struct netplug *np, struct np_net *n, bool ours, struct np_error *err)
{
    struct sbuf b = {0};
    int r;

    if (!np->hostfw || n->type == NP_NET_OVS)
        return 0;
    if (n->fw_in && n->fw_ours == ours)
        return 0;
    if ((r = np_filter_ensure(np, err)) < 0)
        return r;
    n->fw_ours = ours;
    net_elems(np, &b, "add", n);
    if (b.err) {
        free(b.p);
        return np_fail(err, -b.err, "network %s: host firewall: %s", n->name, strerror(-b.err));
    }
    r = nft_run(np, b.p, false, err, "host firewall");
    free(b.p);
    if (r == 0)
        n->fw_in = n->fw_known = true;
    return r;
}

void np_fw_net_del(struct netplug *np, struct np_net *n)
{
    struct sbuf b = {0};

    if (!np->hostfw || !n->fw_known)
        return;
    /* one element at a time: an absent one must not keep the others */
    net_elems(np, &b, "delete", n);
    for (char *line = b.p, *nl; line && *line; line = nl + 1) {
        if (!(nl = strchr(line, '\n')))
            break;
        *nl = '\0';
        nft_run(np, line, false, NULL, "host firewall");
    }
    free(b.p);
    n->fw_in = n->fw_known = false;
}

/* The table is not as this process wrote it (flushed, deleted, edited by
 * someone else: a firewall reload, `nft flush ruleset`): the table, its chains
 * and every recorded port's entries are put back as recorded. Memory is the
 * truth here: the records are what plug and unplug last made. */
static int table_repair(struct netplug *np, struct np_error *err)
{
    struct sbuf b = {0};
    int r;

    np->nft_ready = false;
    if ((r = np_filter_ensure(np, err)) < 0)
        return r;
    for (struct np_portrec *p = np->ports; p; p = p->next)
        if (p->filtered)
            add_elems(&b, "add", np, p->dev, p->mac, p->ipv4);
    if (!b.p && !b.err)
        return 0;
    /* the networks' elements come back with the next plug, or now: */
    for (struct np_net *n = np->nets; n; n = n->next)
        if (np->hostfw && n->fw_known)
            net_elems(np, &b, "add", n);
    if (b.err) {
        free(b.p);
        return np_fail(err, -b.err, "anti-spoofing: %s", strerror(-b.err));
    }
    r = nft_run(np, b.p, false, err, "anti-spoofing: restoring the ports' entries");
    free(b.p);
    return r;
}

int np_filter_set(struct netplug *np, struct np_portrec *rec, const uint8_t mac[6], uint32_t ipv4,
                  struct np_error *err)
{
    int r;

    bool same = rec->filtered && memcmp(rec->mac, mac, 6) == 0 && rec->ipv4 == ipv4;

    /* even when the record says so: "add" again (idempotent) is what finds a
     * table someone flushed */
    if ((r = np_filter_ensure(np, err)) < 0) {
        if (err) {
            char why[sizeof(err->msg)];
            strscpy(why, err->msg, sizeof(why));
            snprintf(err->msg, sizeof(err->msg), "port %s: %.200s", rec->dev, why);
        }
        return r;
    }
    for (int attempt = 0;; attempt++) {
        struct sbuf b = {0};
        if (rec->filtered && !same)
            add_elems(&b, "delete", np, rec->dev, rec->mac, rec->ipv4);
        add_elems(&b, "add", np, rec->dev, mac, ipv4);
        r = run_change(np, &b, attempt ? err : NULL, rec->dev);
        if (r == 0)
            break;
        if (attempt || (r = table_repair(np, err)) < 0)
            return r < 0 ? r : -EIO;
    }
    rec->filtered = true;
    memcpy(rec->mac, mac, 6);
    rec->ipv4 = ipv4;
    return 0;
}

int np_filter_del(struct netplug *np, struct np_portrec *rec, struct np_error *err)
{
    int r;

    if (!rec->filtered)
        return 0;
    for (int attempt = 0;; attempt++) {
        struct sbuf b = {0};
        add_elems(&b, "delete", np, rec->dev, rec->mac, rec->ipv4);
        r = run_change(np, &b, attempt ? err : NULL, rec->dev);
        if (r == 0)
            break;
        if (attempt || (r = table_repair(np, err)) < 0)
            return r < 0 ? r : -EIO;
        if (!rec->filtered)
            return 0; /* gone already */
    }
    rec->filtered = false;
    rec->ipv4 = 0;
    return 0;
}

static int parse_mac(const char *s, uint8_t m[6])
{
    unsigned v[6];
    char extra;

    if (sscanf(s, "%x:%x:%x:%x:%x:%x%c", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &extra) != 6)
        return -EINVAL;
    for (int i = 0; i < 6; i++) {
        if (v[i] > 255)
            return -EINVAL;
        m[i] = (uint8_t)v[i];
    }
    return 0;
}

/* One element of a set: "dev" (ports) or {"concat": ["dev", "value"]}. */
static int load_elem(struct netplug *np, const char *set, json_t *e)
{
    const char *dev = NULL, *val = NULL;
    struct np_portrec *rec;

    if (json_is_object(e) && json_object_get(e, "elem")) /* with flags: {"elem": {"val": ...}} */
        e = json_object_get(json_object_get(e, "elem"), "val");
    if (json_is_string(e)) {
        dev = json_string_value(e);
    } else {
        json_t *c = json_object_get(e, "concat");
        if (!json_is_array(c) || json_array_size(c) != 2)
            return 0;
        dev = json_string_value(json_array_get(c, 0));
        val = json_string_value(json_array_get(c, 1));
        if (!val)
            return 0;
    }
    if (!dev || strlen(dev) >= IFNAMSIZ)
        return 0;
    rec = np_port_find(np, dev);
    if (!rec && !(rec = np_port_new(np, dev)))
        return -ENOMEM;
    if (strcmp(set, "ports") == 0) {
        rec->filtered = true;
    } else if (strcmp(set, "macs") == 0) {
        if (parse_mac(val, rec->mac) < 0)
            return 0;
        rec->filtered = true;
    } else if (strcmp(set, "ips") == 0) {
        struct in_addr a;
        if (inet_pton(AF_INET, val, &a) == 1)
            rec->ipv4 = a.s_addr;
        rec->filtered = true;
    }
    return 0;
}

int np_filter_load(struct netplug *np, struct np_error *err)
{
    char cmd[128];
    json_error_t je;
    json_t *root, *arr, *it;
    size_t i;
    int r;

    for (struct np_portrec *p = np->ports; p; p = p->next) {
        p->filtered = false;
        p->ipv4 = 0;
    }
    snprintf(cmd, sizeof(cmd), "list table bridge %s", np->table);
    r = nft_run(np, cmd, true, NULL, "anti-spoofing");
    if (r == -ENOENT)
        return 0; /* no table yet: nothing filtered */
    if (r < 0)
        return nft_run(np, cmd, true, err, "anti-spoofing");
    root = json_loads(nft_ctx_get_output_buffer(np->nft), 0, &je);
    if (!root)
        return np_fail(err, EIO, "anti-spoofing: cannot read table %s: %s", np->table, je.text);
    arr = json_object_get(root, "nftables");
    r = 0;
    json_array_foreach(arr, i, it) {
        json_t *set = json_object_get(it, "set"), *elems, *e;
        const char *name = json_string_value(json_object_get(set, "name"));
        size_t j;

        if (!name || !(elems = json_object_get(set, "elem")))
            continue;
        json_array_foreach(elems, j, e) {
            if ((r = load_elem(np, name, e)) < 0)
                break;
        }
        if (r < 0)
            break;
    }
    json_decref(root);
    if (r < 0)
        return np_fail(err, -r, "anti-spoofing: %s", strerror(-r));
    return 0;
}

/* Whether set elems holds dev (ports) or dev . val (macs, ips). */
static bool elems_have(json_t *elems, const char *dev, const char *val)
{
    size_t i;
    json_t *e;

    json_array_foreach(elems, i, e) {
        if (json_is_object(e) && json_object_get(e, "elem"))
            e = json_object_get(json_object_get(e, "elem"), "val");
        if (!val) {
            if (json_is_string(e) && strcmp(json_string_value(e), dev) == 0)
                return true;
            continue;
        }
        json_t *c = json_object_get(e, "concat");
        const char *d = json_string_value(json_array_get(c, 0)), *v = json_string_value(json_array_get(c, 1));
        if (d && v && strcmp(d, dev) == 0 && strcasecmp(v, val) == 0)
            return true;
    }
    return false;
}

static bool rec_in_table(json_t *sets[3], const struct np_portrec *p)
{
    char m[18], i[16];

    fmt_mac(p->mac, m);
    if (!elems_have(sets[0], p->dev, NULL) || !elems_have(sets[1], p->dev, m))
        return false;
    if (p->ipv4) {
        fmt_ip(p->ipv4, i);
        if (!elems_have(sets[2], p->dev, i))
            return false;
    }
    return true;
}

/* The host firewall table has its three chains' rules. */
static int inet_verify(struct netplug *np)
{
    char cmd[128];
    json_error_t je;
    json_t *root, *it;
    size_t i, nrules = 0, nchains = 0;
    int r;

    snprintf(cmd, sizeof(cmd), "list table inet %s", np->table);
    if ((r = nft_run(np, cmd, true, NULL, "host firewall")) < 0)
        return r == -ENOENT ? -ESTALE : r;
    if (!(root = json_loads(nft_ctx_get_output_buffer(np->nft), 0, &je)))
        return -EIO;
    json_array_foreach(json_object_get(root, "nftables"), i, it) {
        json_t *c = json_object_get(it, "chain");
        if (json_object_get(it, "rule"))
            nrules++;
        else if (c && json_string_value(json_object_get(c, "hook")))
            nchains++;
    }
    json_decref(root);
    return nrules == INET_RULES && nchains == 3 ? 0 : -ESTALE;
}

int np_filter_verify(struct netplug *np, const char *dev)
{
    char cmd[128];
    json_error_t je;
    json_t *root, *it, *sets[3] = {NULL, NULL, NULL};
    size_t i, nrules = 0;
    bool pre = false, in = false;
    int r;

    snprintf(cmd, sizeof(cmd), "list table bridge %s", np->table);
    if ((r = nft_run(np, cmd, true, NULL, "anti-spoofing")) < 0)
        return r == -ENOENT ? -ESTALE : r;
    if (!(root = json_loads(nft_ctx_get_output_buffer(np->nft), 0, &je)))
        return -EIO;
    json_array_foreach(json_object_get(root, "nftables"), i, it) {
        json_t *o;
        const char *name;
        if (json_object_get(it, "rule")) {
            nrules++;
        } else if ((o = json_object_get(it, "chain"))) {
            name = json_string_value(json_object_get(o, "name"));
            const char *hook = json_string_value(json_object_get(o, "hook"));
            if (name && hook && strcmp(name, "prerouting") == 0 && strcmp(hook, "prerouting") == 0)
                pre = true;
            if (name && hook && strcmp(name, "input") == 0 && strcmp(hook, "input") == 0)
                in = true;
        } else if ((o = json_object_get(it, "set")) && (name = json_string_value(json_object_get(o, "name")))) {
            json_t *el = json_object_get(o, "elem");
            if (!el)
                el = json_array();
            else
                json_incref(el);
            int k = strcmp(name, "ports") == 0 ? 0 : strcmp(name, "macs") == 0 ? 1 : strcmp(name, "ips") == 0 ? 2 : -1;
            if (k >= 0 && !sets[k])
                sets[k] = el;
            else
                json_decref(el);
        }
    }
    r = 0;
    if (!pre || !in || nrules != ARRAY_SIZE(rules) || !sets[0] || !sets[1] || !sets[2])
        r = -ESTALE;
    for (struct np_portrec *p = np->ports; p && r == 0; p = p->next)
        if (p->filtered && (!dev || strcmp(p->dev, dev) == 0) && !rec_in_table(sets, p))
            r = -ESTALE;
    for (int k = 0; k < 3; k++)
        json_decref(sets[k]);
    json_decref(root);
    if (r == 0 && np->hostfw)
        r = inet_verify(np);
    return r;
}

int np_filter_check(struct netplug *np, struct np_error *err)
{
    bool any = false;
    int r;

    for (struct np_portrec *p = np->ports; p && !any; p = p->next)
        any = p->filtered;
    if (!any)
        return 0; /* nothing to guard (and no table to make) */
    if ((r = np_filter_verify(np, NULL)) != -ESTALE)
        return r;
    if ((r = table_repair(np, err)) < 0)
        return r;
    return 1;
}

int netplug_counter(struct netplug *np, const char *name, uint64_t *packets)
{
    char cmd[160];
    json_error_t je;
    json_t *root, *arr, *it;
    size_t i;
    int r = -ENOENT;

    pthread_mutex_lock(&np->lock);
    /* the host firewall's are in the inet table */
    bool inet = !strcmp(name, "port_drop") || !strcmp(name, "fwd_drop") || !strcmp(name, "host_drop");
    snprintf(cmd, sizeof(cmd), "list counter %s %s %s", inet ? "inet" : "bridge", np->table, name);
    if (nft_run(np, cmd, true, NULL, "counter") < 0)
        goto out;
    root = json_loads(nft_ctx_get_output_buffer(np->nft), 0, &je);
    if (!root)
        goto out;
    arr = json_object_get(root, "nftables");
    json_array_foreach(arr, i, it) {
        json_t *c = json_object_get(it, "counter");
        if (c && json_is_integer(json_object_get(c, "packets"))) {
            *packets = (uint64_t)json_integer_value(json_object_get(c, "packets"));
            r = 0;
        }
    }
    json_decref(root);
out:
    pthread_mutex_unlock(&np->lock);
    return r;
}

char *netplug_filter_dump(struct netplug *np)
{
    char cmd[128];
    char *s = NULL;

    pthread_mutex_lock(&np->lock);
    snprintf(cmd, sizeof(cmd), "list table bridge %s", np->table);
    if (nft_run(np, cmd, false, NULL, "dump") == 0)
        s = strdup(nft_ctx_get_output_buffer(np->nft));
    pthread_mutex_unlock(&np->lock);
    return s;
}
