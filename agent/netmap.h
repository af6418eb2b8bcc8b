/* netmap.h: who a metadata request comes from, and what the metadata of an
 * instance is (issue 10).
 *
 * netmap_lookup() is the metadata service's md_lookup_fn: the network the
 * request arrived on and its source IPv4 -> the port holding that IP on that
 * network (store) -> netplug_peer(): the MAC the bridge's neighbour table
 * has for that IP and the bridge port (device) that MAC was learned on ->
 * both must equal the port's MAC and device -> netplug_port_filtered() on
 * that device (the anti-spoofing filter is what makes MAC and IP
 * trustworthy) -> the instance, neither terminated nor in error ->
 * netmap_md_instance(), shared: while the instance is unchanged (a digest of
 * what its metadata is built from) every lookup of it answers the same
 * md_instance, so its connections share one render cache (a table of the
 * 32 most recently served). Anything else: -ENOENT (the service answers 404 and
 * counts it), except an error that says nothing about who asks (the store
 * busy, a neighbour dump interrupted, out of memory): that -errno is returned
 * as it is (the service answers 503 and asks again). Never the source IP
 * alone, never a header.
 *
 * Loop thread (the store is the loop's); netplug_peer() blocks for a
 * netlink round trip (sub-millisecond). */
#ifndef CA_AGENT_NETMAP_H
#define CA_AGENT_NETMAP_H

#include <netinet/in.h>
#include <stdio.h>

#include "agent/config.h"
#include "agent/instance.h"
#include "agent/metadata.h"

struct store;
struct netplug;

/* What an instance's metadata holds beside the instance itself. */
struct netmap_defaults {
    const char *http_tokens;   /* metadata.http_tokens: optional|required */
    int hop_limit;             /* metadata.hop_limit */
    const char *arch;          /* the guests' arch ("x86_64"), NULL: unknown */
};

/* The md_instance of inst (calloc'ed, md_instance_free()), its interfaces
 * with their networks' cidr, gateway, DNS and MTU from nets. NULL on ENOMEM.
 * Pure: any thread. */
struct md_instance *netmap_md_instance(const struct instance *inst, const struct net_config *nets,
                                       size_t n_nets, const struct netmap_defaults *def);

struct netmap_deps {
    struct store *store;
    struct netplug *np;
    const struct net_config *nets;  /* borrowed, outlive the netmap */
    size_t n_nets;
    struct netmap_defaults def;
    uint64_t (*now_ms)(void);       /* monotonic clock for the log's windows; NULL: the system's */
};

struct netmap;
int netmap_new(const struct netmap_deps *deps, struct netmap **out);
void netmap_free(struct netmap *m);
/* md_lookup_fn (opaque: the struct netmap). */
int netmap_lookup(void *opaque, const char *network, const struct sockaddr_in *peer,
                  struct md_instance **out);
/* inst's md_instance as the lookup answers it: the one already built while
 * inst is unchanged, else a new one (then the shared one). A new reference,
 * or NULL (ENOMEM). Loop thread. */
struct md_instance *netmap_md_shared(struct netmap *m, const struct instance *inst);
/* Lookups so far, by result: found, or refused by reason (for logs and tests). */
struct netmap_counts {
    uint64_t ok, no_port, peer_mismatch, unfiltered, not_live;
    uint64_t transient;        /* not decided (store busy, a netlink dump interrupted, ENOMEM): not a result */
    /* refusals written to the log / only counted: the first of a source (network, address) in a
     * minute is logged (with how many of its were not, suppressed=N), at most 100 lines a minute */
    uint64_t refusals_logged, refusals_unlogged;
    uint64_t shared;           /* lookups answered with the md_instance already built for an unchanged instance */
};
void netmap_counts(const struct netmap *m, struct netmap_counts *out);
/* The same as Prometheus text on f: the counter family
 * compute_agent_metadata_lookups_total{result="ok|no_port|peer_mismatch|
 * unfiltered|not_live"} (a refused lookup is also one of the service's
 * compute_agent_metadata_lookup_failures_total). 0, or -EIO when f failed.
 * Loop thread. */
int netmap_metrics(const struct netmap *m, FILE *f);

#endif
