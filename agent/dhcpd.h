/* dhcpd.h: the DHCP server of each `dhcp = true` network: Debian's dnsmasq,
 * one process per network, started and supervised by the agent on its loop
 * (uv_spawn, an argv vector from net-plug/dhcp.c, no shell). Its files live
 * in STATE_DIR/dhcp/<network>/ (0700): hosts (a static MAC -> IPv4 entry per
 * port the store holds for the network), opts (router, DNS, MTU, option 121
 * with the metadata route), leases, dnsmasq.pid.
 *
 * dnsmasq runs once the network's bridge exists (an agent-made bridge appears
 * with the first plug) and is stopped (SIGTERM, reaped) when the bridge is
 * gone or the agent stops. An unexpected exit is logged and restarted after a
 * backoff (1 s doubling to 30 s). Its output goes to the agent's log, one
 * event per line, the line as a quoted value. A dnsmasq left by an agent that
 * was killed is found through its pid file, recognised by its command line
 * (ours names this directory's pid file) and stopped; any other process is
 * left alone.
 *
 * Loop thread only. */
#ifndef CA_AGENT_DHCPD_H
#define CA_AGENT_DHCPD_H

#include <jansson.h>
#include <stdbool.h>
#include <uv.h>

#include "agent/config.h"

struct dhcpd;
struct store;
struct netplug;

/* Borrowed; each must outlive the object. */
struct dhcpd_deps {
    struct store *store;              /* the ports (required) */
    struct netplug *np;               /* the networks' bridge names (required) */
    const struct net_config *networks;/* [network NAME] sections */
    size_t n_networks;
};

/* Strings borrowed for the call (copied). */
struct dhcpd_config {
    const char *state_dir;  /* STATE_DIR: dhcp/<network>/ goes under it (required) */
    const char *dnsmasq;    /* the program: a path, or a name searched in PATH, /usr/sbin, /sbin */
    const char *user;       /* dnsmasq's --user; "" or NULL: none given */
    bool metadata;          /* the metadata service is on: option 121 for networks that have it */
};

/* A new supervisor in *ret: the directories made, stale dnsmasq processes of
 * an earlier agent stopped; nothing started yet (dhcpd_refresh() does).
 * A network whose DHCP cannot work (no dnsmasq, no gateway, a directory that
 * cannot be made) is logged and shows its error in dhcpd_network_json();
 * the others work. 0, or -ENOMEM / -EINVAL (nothing made). */
int dhcpd_new(uv_loop_t *loop, const struct dhcpd_deps *deps, const struct dhcpd_config *cfg,
              struct dhcpd **ret);

/* The network's hosts file rewritten from the store's live ports, then:
 * dnsmasq started if its bridge exists and it is not running, SIGHUPed
 * (it reads hosts and opts again) if it is, stopped if the bridge is gone.
 * network NULL: every dhcp network. A network without dhcp: nothing. */
void dhcpd_refresh(struct dhcpd *d, const char *network);

/* The agent stops: every dnsmasq gets SIGTERM (SIGKILL after 5 s); the
 * handles close as they exit (keep running the loop). Accepts NULL. */
void dhcpd_stop(struct dhcpd *d);

/* Frees the object (after dhcpd_stop() and the loop's end, or before the
 * loop ever ran). Accepts NULL. */
void dhcpd_free(struct dhcpd *d);

/* {"enabled": true, "running", "pid", "restarts", "error"} of a dhcp network
 * (new reference), NULL for any other network. */
json_t *dhcpd_network_json(const struct dhcpd *d, const char *network);

#endif
