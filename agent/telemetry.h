/* telemetry.h: what every guest uses, sampled in bulk, turned into rates,
 * streamed out as ceilometer-style samples and kept for Prometheus.
 *
 * Every interval a uv_timer queues ONE bulk sample on a worker thread
 * (hv_all_domain_stats(): one virConnectGetAllDomainStats() call for all
 * domains, plus the host's CPU, memory and the configured directories'
 * file systems); never two at once (a tick that finds one in flight is
 * skipped and counted). Back on the loop, counters become rates against the
 * previous sample of the same domain. A domain whose libvirt id changed
 * (restarted), that was not running, or whose counter went down (reset)
 * gets no rate this round: rates are never negative, and utilisation is
 * clamped to its range (cpu_util 0..100, as ceilometer normalises it by the
 * vCPU count; vcpu_util 0..100 per vCPU).
 *
 * Published: one JSON message per instance per round (key = instance UUID)
 * and one for the host (key = host name), through the publish callback
 * (the bus's lossy telemetry stream). Message shape:
 *
 *   {"host":"h1","instance_id":"<uuid>"|null,"ec2_id":"i-..."|null,
 *    "name":"web-1"|null,"timestamp":"2026-11-23T20:10:11.123Z",
 *    "samples":[{"instance_id":"<uuid>"|null,"ec2_id":"i-..."|null,
 *                "host":"h1","timestamp":"...","meter":"cpu_util",
 *                "type":"gauge"|"cumulative","unit":"%","value":12.5,
 *                "resource_id":"<uuid>"|"<uuid>-vda"|"h1"|"h1-/var/lib/...",
 *                "device":"vda"  (device meters only)}, ...]}
 *
 * Instance meters (ceilometer names and units): cpu (ns, cumulative),
 * cpu_util (%), vcpus (vcpu), vcpu_util (%, per vCPU, device "vcpuN";
 * our addition), memory (MB, balloon.current), memory.usage (MB, guest's
 * available - unused), memory.resident (MB, QEMU's RSS), power.state
 * (libvirt's virDomainState number), disk.device.{read,write}.{bytes,requests}
 * (B / request, cumulative) and their .rate (B/s, request/s),
 * network.{incoming,outgoing}.{bytes,packets} (B / packet, cumulative) and
 * their .rate (B/s, packet/s).
 * Host meters (instance_id null): compute.node.cpu.{user,kernel,idle,iowait}.time
 * (ns, cumulative), compute.node.cpu.percent (%), hardware.memory.{total,avail,
 * buffer,cached} (KB), hardware.disk.size.{total,used} (KB, device = directory).
 *
 * A Prometheus scrape (telemetry_render_prometheus()) is served from the last
 * round, never by calling libvirt.
 *
 * Threads: every function here runs on the loop thread. */
#ifndef CA_AGENT_TELEMETRY_H
#define CA_AGENT_TELEMETRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <uv.h>

#include "agent/hypervisor/hv.h"
#include "agent/hypervisor/stats.h"
#include "agent/instance.h" /* EC2_ID_LEN */

#define TELEMETRY_INTERVAL_DEFAULT_S 10
#define TELEMETRY_INTERVAL_MAX_S 86400

struct telemetry;

struct telemetry_config {
    /* Seconds between samples; 0: TELEMETRY_INTERVAL_DEFAULT_S. The first
     * sample is taken at once. */
    unsigned interval_s;
    /* Host name put in every sample. Required. Copied. */
    const char *host;
    /* Directories whose file systems are measured (state dir, image cache),
     * NULL-terminated; NULL for none. Copied. */
    const char *const *dirs;
    /* Also sample domains the lookup callback does not know (not ours):
     * they carry ec2_id null and libvirt's name. Default false. */
    bool include_foreign;
    /* /metrics also under prometheus-libvirt-exporter's names and labels
     * ([telemetry] libvirt_exporter_names). Default false. */
    bool libvirt_exporter_names;
};

/* All called on the loop thread, opaque as given to telemetry_new(). */
struct telemetry_callbacks {
    /* Identity of a domain: 0 and ec2_id/name filled if it is one of the
     * agent's instances, -ENOENT if not. Called for domains not seen (as
     * known) in the previous round, so at most once per domain in steady
     * state. NULL: every domain is foreign. */
    int (*lookup)(void *opaque, const char *uuid, char ec2_id[EC2_ID_LEN + 1], char *name,
                  size_t name_size);
    /* Flavor sizes of one of the agent's domains (after lookup said 0):
     * 0 and root_gb/ephemeral_gb filled, or -ENOENT. Optional (NULL: no
     * disk.root.size / disk.ephemeral.size samples). */
    int (*sizes)(void *opaque, const char *uuid, uint64_t *root_gb, uint64_t *ephemeral_gb);
    /* Hand one message over (json is NUL-terminated, len bytes; copy it).
     * Return 0 if taken, else -errno (counted as dropped). NULL: nothing is
     * published (Prometheus only). */
    int (*publish)(void *opaque, const char *key, const char *json, size_t len);
    /* A round ended: err 0, or -errno and e says why (the previous round is
     * kept for scrapes). For logs and tests. Optional. */
    void (*on_round)(void *opaque, int err, const struct agent_error *e);
    /* After telemetry_free(): the object is gone and hv is no longer used
     * by it (the sample in flight, if any, came back). The one callback
     * that runs after telemetry_free(). Optional. */
    void (*on_closed)(void *opaque);
};

/* Start sampling. cfg and cb are copied; hv is borrowed and must outlive the
 * telemetry object (see telemetry_free()); hv NULL: no sampling, figures
 * come only through telemetry_ingest(). On success *ret owns the object
 * and the first sample is queued at once; on failure returns -errno
 * (-EINVAL for a bad config, err names the field) and *ret is untouched. */
int telemetry_new(uv_loop_t *loop, struct hv *hv, const struct telemetry_config *cfg,
                  const struct telemetry_callbacks *cb, void *opaque, struct telemetry **ret,
                  struct agent_error *err);

/* Stop sampling. No callback but on_closed runs after this returns. The
 * memory is released once the loop has closed the timer and the sample in
 * flight (if any) has come back, then on_closed runs: hv must stay alive
 * until then (free hv from on_closed, or after the loop has run dry).
 * Accepts NULL; returns NULL. */
struct telemetry *telemetry_free(struct telemetry *t);

/* Change the interval (SIGHUP reload); 0 means the default. */
int telemetry_set_interval(struct telemetry *t, unsigned interval_s);

/* Feed one round of figures as if the timer's sample had produced them:
 * takes ownership of doms (n entries, freed here in every case); host may be
 * NULL. mono_ns is the monotonic time the figures were read (rates use it),
 * wall_ms the wall time put in the samples. Computes rates, publishes and
 * keeps the round for scrapes. What the timer's sample calls; exposed for
 * tests and for other sources. 0 or -ENOMEM (the previous round is kept). */
int telemetry_ingest(struct telemetry *t, struct hv_stats *doms, size_t n,
                     const struct hv_host_stats *host, uint64_t mono_ns, int64_t wall_ms);

/* Write the last round in the Prometheus text format (version 0.0.4):
 * per-instance series labelled instance_uuid, ec2_id, name; host series;
 * the telemetry module's own counters. Names start with compute_agent_.
 * 0, or -EIO if writing to out failed. Never calls libvirt. */
int telemetry_render_prometheus(const struct telemetry *t, FILE *out);

struct telemetry_stats {
    uint64_t rounds;            /* rounds completed */
    uint64_t round_errors;      /* samples that failed (libvirt down...) */
    uint64_t rounds_skipped;    /* ticks that found a sample still in flight */
    uint64_t messages;          /* messages handed to publish */
    uint64_t messages_dropped;  /* ... that publish refused */
    uint64_t samples;           /* samples in those messages */
    size_t domains;             /* domains in the last round */
    double last_duration_s;     /* wall time of the last sample's libvirt work */
    int64_t last_round_ms;      /* wall time of the last round, 0 if none */
};
void telemetry_get_stats(const struct telemetry *t, struct telemetry_stats *out);

/* The rate of a counter between two readings, or NaN when there is none:
 * either reading missing, dt_s <= 0, or the counter went down (reset).
 * Exposed for tests. */
double telemetry_counter_rate(bool has_prev, uint64_t prev, bool has_cur, uint64_t cur,
                              double dt_s);

/* A domain's last round as kept for scrapes: rates are NaN when there is
 * none. Borrowed; valid until the next round or telemetry_free(). NULL if
 * the domain was not in the last round. For tests and the agent's API. */
struct telemetry_dev_rates {
    double a_bytes, b_bytes; /* block: read, write; net: incoming, outgoing (B/s) */
    double a_ops, b_ops;     /* block: requests/s; net: packets/s */
};
struct telemetry_domain {
    struct hv_stats s;         /* the raw figures */
    bool known;                /* one of ours (lookup said so) */
    char ec2_id[EC2_ID_LEN + 1];
    char name[128];
    bool has_sizes;            /* root_gb/ephemeral_gb from the sizes callback */
    uint64_t root_gb, ephemeral_gb;
    double cpu_util;           /* % of the guest's vCPUs, 0..100, or NaN */
    double *vcpu_util;         /* s.n_vcpu entries, % of one CPU, or NaN */
    struct telemetry_dev_rates *block_rate; /* s.n_block entries */
    struct telemetry_dev_rates *net_rate;   /* s.n_net entries */
};
const struct telemetry_domain *telemetry_domain_find(const struct telemetry *t, const char *uuid);

#endif
