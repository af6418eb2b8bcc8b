/* telemetry-private.h: PRIVATE to the files of agent/telemetry/: the object and
 * the calls between its files. telemetry.c: rounds, the timer, the worker's
 * sample, life cycle; rates.c: counters to rates; message.c: the sample
 * messages (JSON); prometheus.c: the /metrics text. Loop thread only, except
 * the fields the worker fills (job). */
#ifndef CA_AGENT_TELEMETRY_PRIVATE_H
#define CA_AGENT_TELEMETRY_PRIVATE_H

#include "agent/telemetry.h"
#include "common/util.h"

struct telemetry {
    uv_loop_t *loop;               /* borrowed */
    struct hv *hv;                 /* borrowed; outlives us */
    struct telemetry_callbacks cb; /* copied */
    void *opaque;
    char *hostname;                /* host name in samples (owned) */
    char **dirs;                   /* directories to statvfs (owned, n_dirs) */
    size_t n_dirs;
    bool include_foreign;
    bool exporter_names;           /* also prometheus-libvirt-exporter's names */
    uint64_t interval_ms;

    uv_timer_t timer;              /* the sampling tick */
    bool timer_closed;             /* its close callback ran */
    bool closing;                  /* telemetry_free() was called */
    bool busy;                     /* a sample is on a worker thread */

    /* The sample in flight (one at a time; filled on the worker). */
    struct {
        struct hv_stats *doms;
        size_t n;
        int rc;
        struct agent_error err;
        bool has_host;
        struct hv_host_stats host;
        struct hv_fs_stats *fs;    /* n_dirs entries */
        bool *fs_ok;               /* n_dirs entries */
        uint64_t mono_ns;          /* when the domain figures were read */
        int64_t wall_ms;
        double duration_s;         /* the worker's time for the whole sample */
    } job;

    /* The last round (loop thread only). */
    struct telemetry_domain *doms; /* sorted by uuid */
    size_t n_doms;
    uint64_t round_mono_ns;
    int64_t round_wall_ms;
    bool has_host;
    struct hv_host_stats host;
    double host_cpu_percent;       /* NaN when none */
    struct hv_fs_stats *fs;        /* n_dirs entries, last measured */
    bool *fs_ok;

    struct telemetry_stats stats;
};

/* rates.c: fill d's rates (cpu_util, vcpu_util, block_rate, net_rate; NaN
 * where unknown) against prev (NULL: none) dt_s seconds earlier. 0, -ENOMEM. */
int telemetry_domain_rates(struct telemetry_domain *d, const struct telemetry_domain *prev,
                           double dt_s);
/* rates.c: host CPU utilisation (percent, 0..100) between two readings, NaN
 * when unknown. */
double telemetry_host_cpu_percent(const struct hv_host_stats *p, const struct hv_host_stats *c);

/* message.c: publish the last round (one message per domain, one for the
 * host) through cb.publish. */
void telemetry_publish_round(struct telemetry *t);

#endif
