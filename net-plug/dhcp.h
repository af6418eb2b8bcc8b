/* dhcp.h: what a network's DHCP server (Debian's dnsmasq, one per network,
 * started and supervised by the agent) is given: its argv vector and its
 * files under a directory of the network's own. Static leases only (a MAC ->
 * IPv4 entry per port); the router, DNS servers, MTU and the classless static
 * route to the metadata address (option 121) in an options file. dnsmasq reads
 * both files again on SIGHUP, so a plug or an unplug rewrites the hosts file
 * (atomically: temp file + rename) and signals the running process.
 * No shell anywhere: the caller spawns argv as it is. */
#ifndef CA_NETPLUG_DHCP_H
#define CA_NETPLUG_DHCP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "net-plug/netplug.h"

struct netplug_dhcp_host {
    uint8_t mac[6];
    uint32_t ipv4;        /* network byte order */
    const char *hostname; /* NULL: none; else 1..63 of [A-Za-z0-9-] */
};

struct netplug_dhcp_config {
    const char *network;   /* for messages */
    const char *interface; /* the bridge dnsmasq serves (--interface, --bind-interfaces) */
    const char *dir;       /* the network's state directory (must exist): hosts, opts, leases, pid */
    uint32_t gateway;      /* network byte order: the router option, and the server's address */
    int prefix;            /* of the network's cidr, 1..30 */
    const uint32_t *dns;   /* DNS servers (network byte order), n_dns of them */
    size_t n_dns;
    int mtu;               /* 0: no MTU option */
    bool metadata_route;   /* option 121: 169.254.169.254/32 via the gateway (plus the default route) */
    int lease_secs;        /* 0: 86400 */
    const char *dnsmasq;   /* NULL: "dnsmasq" (the caller resolves it in PATH) */
    const char *user;      /* --user; NULL: dnsmasq's own default */
};

/* Writes DIR/opts (the options) atomically. 0 or -errno with err filled. */
int netplug_dhcp_write_opts(const struct netplug_dhcp_config *c, struct np_error *err);

/* Writes DIR/hosts (one "mac,ip[,hostname]" line per host) atomically.
 * -EINVAL (err names hosts[i] and the field) on a bad or duplicate entry;
 * nothing is written then. */
int netplug_dhcp_write_hosts(const struct netplug_dhcp_config *c, const struct netplug_dhcp_host *hosts,
                             size_t n, struct np_error *err);

/* The argv vector to run dnsmasq in the foreground for this network (its own
 * configuration only: --conf-file=/dev/null, no DNS, no /etc/hosts). Newly
 * allocated, NULL-terminated: free it with netplug_dhcp_argv_free(). */
int netplug_dhcp_argv(const struct netplug_dhcp_config *c, char ***argv, struct np_error *err);
void netplug_dhcp_argv_free(char **argv);

#endif
