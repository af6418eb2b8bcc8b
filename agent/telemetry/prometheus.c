/* prometheus.c: the last round as Prometheus text (on common/prom.c). */
#include <math.h>

#include "agent/telemetry/telemetry-private.h"
#include "agent/hypervisor/hv.h"
#include "common/prom.h"

/* name{instance_uuid="..",ec2_id="..",name=".."[,extra="val"]} */
static void dom_series(FILE *f, const char *name, const struct telemetry_domain *d,
                       const char *extra, const char *extra_val)
{
    const struct prom_label l[] = {
        {"instance_uuid", d->s.uuid},
        {"ec2_id", d->known ? d->ec2_id : ""},
        {"name", d->name},
        {extra, extra_val},
    };

    prom_series(f, name, l, extra ? 4 : 3);
}

enum dom_scalar {
    DS_STATE, DS_CPU_SECONDS, DS_CPU_UTIL, DS_VCPUS, DS_MEM, DS_MEM_USAGE, DS_MEM_RSS,
};

static const struct {
    const char *name, *type, *help;
} dom_scalars[] = {
    [DS_STATE] = {"compute_agent_instance_power_state", "gauge",
                  "libvirt domain state (1 running, 3 paused, 5 shut off, ...)"},
    [DS_CPU_SECONDS] = {"compute_agent_instance_cpu_seconds_total", "counter",
                        "CPU time used by the guest since it started"},
    [DS_CPU_UTIL] = {"compute_agent_instance_cpu_util_percent", "gauge",
                     "CPU utilisation over the last interval, percent of the guest's vCPUs"},
    [DS_VCPUS] = {"compute_agent_instance_vcpus", "gauge", "vCPUs the guest has"},
    [DS_MEM] = {"compute_agent_instance_memory_bytes", "gauge",
                "memory the guest has (balloon current)"},
    [DS_MEM_USAGE] = {"compute_agent_instance_memory_usage_bytes", "gauge",
                      "memory used inside the guest (available - unused)"},
    [DS_MEM_RSS] = {"compute_agent_instance_memory_resident_bytes", "gauge",
                    "resident memory of the guest's process on the host"},
};

static void render_dom_scalar(FILE *f, const struct telemetry *t, enum dom_scalar which)
{
    prom_family(f, dom_scalars[which].name, dom_scalars[which].type, dom_scalars[which].help);
    for (size_t i = 0; i < t->n_doms; i++) {
        const struct telemetry_domain *d = &t->doms[i];
        const struct hv_stats *s = &d->s;
        const char *n = dom_scalars[which].name;

        switch (which) {
        case DS_STATE:
            if (s->has_power) {
                dom_series(f, n, d, NULL, NULL);
                prom_u64(f, (uint64_t)s->state);
            }
            break;
        case DS_CPU_SECONDS:
            if (s->has_cpu_time) {
                dom_series(f, n, d, NULL, NULL);
                prom_double(f, (double)s->cpu_time_ns / 1e9);
            }
            break;
        case DS_CPU_UTIL:
            if (!isnan(d->cpu_util)) {
                dom_series(f, n, d, NULL, NULL);
                prom_double(f, d->cpu_util);
            }
            break;
        case DS_VCPUS:
            if (s->has_vcpus) {
                dom_series(f, n, d, NULL, NULL);
                prom_u64(f, s->vcpus);
            }
            break;
        case DS_MEM:
            if (s->has_balloon_current) {
                dom_series(f, n, d, NULL, NULL);
                prom_u64(f, s->balloon_current_kb * 1024);
            }
            break;
        case DS_MEM_USAGE:
            if (s->has_balloon_available && s->has_balloon_unused &&
                s->balloon_available_kb >= s->balloon_unused_kb) {
                dom_series(f, n, d, NULL, NULL);
                prom_u64(f, (s->balloon_available_kb - s->balloon_unused_kb) * 1024);
            }
            break;
        case DS_MEM_RSS:
            if (s->has_balloon_rss) {
                dom_series(f, n, d, NULL, NULL);
                prom_u64(f, s->balloon_rss_kb * 1024);
            }
            break;
        }
    }
}

static void render_vcpus(FILE *f, const struct telemetry *t)
{
    char idx[32];

    prom_family(f, "compute_agent_instance_vcpu_cpu_seconds_total", "counter",
                "CPU time used by one vCPU since the guest started");
    for (size_t i = 0; i < t->n_doms; i++) {
        const struct telemetry_domain *d = &t->doms[i];
        for (size_t v = 0; v < d->s.n_vcpu; v++) {
            if (!d->s.vcpu_has_time[v])
                continue;
            snprintf(idx, sizeof(idx), "%zu", v);
            dom_series(f, "compute_agent_instance_vcpu_cpu_seconds_total", d, "vcpu", idx);
            prom_double(f, (double)d->s.vcpu_time_ns[v] / 1e9);
        }
    }
    prom_family(f, "compute_agent_instance_vcpu_util_percent", "gauge",
                "utilisation of one vCPU over the last interval, percent");
    for (size_t i = 0; i < t->n_doms; i++) {
        const struct telemetry_domain *d = &t->doms[i];
        for (size_t v = 0; v < d->s.n_vcpu; v++) {
            if (isnan(d->vcpu_util[v]))
                continue;
            snprintf(idx, sizeof(idx), "%zu", v);
            dom_series(f, "compute_agent_instance_vcpu_util_percent", d, "vcpu", idx);
            prom_double(f, d->vcpu_util[v]);
        }
    }
}

/* Device families: which = 0..3 counters (a/b bytes, a/b ops), 4..7 rates. */
struct dev_family {
    const char *name, *type, *help;
    int which;
};

static const struct dev_family block_families[] = {
    {"compute_agent_instance_disk_read_bytes_total", "counter", "bytes read from a guest disk", 0},
    {"compute_agent_instance_disk_write_bytes_total", "counter", "bytes written to a guest disk", 1},
    {"compute_agent_instance_disk_read_requests_total", "counter", "read requests on a guest disk", 2},
    {"compute_agent_instance_disk_write_requests_total", "counter", "write requests on a guest disk", 3},
    {"compute_agent_instance_disk_read_bytes_per_second", "gauge", "disk read rate over the last interval", 4},
    {"compute_agent_instance_disk_write_bytes_per_second", "gauge", "disk write rate over the last interval", 5},
    {"compute_agent_instance_disk_read_requests_per_second", "gauge", "disk read requests per second over the last interval", 6},
    {"compute_agent_instance_disk_write_requests_per_second", "gauge", "disk write requests per second over the last interval", 7},
};

static const struct dev_family net_families[] = {
    {"compute_agent_instance_network_receive_bytes_total", "counter", "bytes the guest received on an interface", 0},
    {"compute_agent_instance_network_transmit_bytes_total", "counter", "bytes the guest sent on an interface", 1},
    {"compute_agent_instance_network_receive_packets_total", "counter", "packets the guest received on an interface", 2},
    {"compute_agent_instance_network_transmit_packets_total", "counter", "packets the guest sent on an interface", 3},
    {"compute_agent_instance_network_receive_bytes_per_second", "gauge", "receive rate over the last interval", 4},
    {"compute_agent_instance_network_transmit_bytes_per_second", "gauge", "transmit rate over the last interval", 5},
    {"compute_agent_instance_network_receive_packets_per_second", "gauge", "received packets per second over the last interval", 6},
    {"compute_agent_instance_network_transmit_packets_per_second", "gauge", "sent packets per second over the last interval", 7},
};

static bool dev_value(int which, bool has[4], const uint64_t val[4],
                      const struct telemetry_dev_rates *r, double *out)
{
    const double rates[4] = {r->a_bytes, r->b_bytes, r->a_ops, r->b_ops};

    if (which < 4) {
        *out = (double)val[which];
        return has[which];
    }
    *out = rates[which - 4];
    return !isnan(*out);
}

static void render_devices(FILE *f, const struct telemetry *t)
{
    for (size_t k = 0; k < ARRAY_SIZE(block_families); k++) {
        const struct dev_family *fam = &block_families[k];
        prom_family(f, fam->name, fam->type, fam->help);
        for (size_t i = 0; i < t->n_doms; i++) {
            const struct telemetry_domain *d = &t->doms[i];
            for (size_t j = 0; j < d->s.n_block; j++) {
                const struct hv_block_stats *b = &d->s.block[j];
                bool has[4] = {b->has_rd_bytes, b->has_wr_bytes, b->has_rd_reqs, b->has_wr_reqs};
                const uint64_t val[4] = {b->rd_bytes, b->wr_bytes, b->rd_reqs, b->wr_reqs};
                double v;
                if (!dev_value(fam->which, has, val, &d->block_rate[j], &v))
                    continue;
                dom_series(f, fam->name, d, "device", b->name);
                prom_double(f, v);
            }
        }
    }
    for (size_t k = 0; k < ARRAY_SIZE(net_families); k++) {
        const struct dev_family *fam = &net_families[k];
        prom_family(f, fam->name, fam->type, fam->help);
        for (size_t i = 0; i < t->n_doms; i++) {
            const struct telemetry_domain *d = &t->doms[i];
            for (size_t j = 0; j < d->s.n_net; j++) {
                const struct hv_net_stats *n = &d->s.net[j];
                bool has[4] = {n->has_rx_bytes, n->has_tx_bytes, n->has_rx_pkts, n->has_tx_pkts};
                const uint64_t val[4] = {n->rx_bytes, n->tx_bytes, n->rx_pkts, n->tx_pkts};
                double v;
                if (!dev_value(fam->which, has, val, &d->net_rate[j], &v))
                    continue;
                dom_series(f, fam->name, d, "device", n->name);
                prom_double(f, v);
            }
        }
    }
}

static void host_series(FILE *f, const struct telemetry *t, const char *name, const char *lname,
                        const char *lval)
{
    const struct prom_label l[] = {{"host", t->hostname}, {lname, lval}};

    prom_series(f, name, l, lname ? 2 : 1);
}

static void render_host(FILE *f, const struct telemetry *t)
{
    const struct hv_host_stats *h = &t->host;
    static const char *const modes[] = {"user", "system", "idle", "iowait"};
    const uint64_t ns[] = {h->cpu_user_ns, h->cpu_kernel_ns, h->cpu_idle_ns, h->cpu_iowait_ns};

    prom_family(f, "compute_agent_host_cpu_seconds_total", "counter",
                "host CPU time by mode, all CPUs together");
    for (size_t i = 0; t->has_host && h->has_cpu && i < ARRAY_SIZE(modes); i++) {
        host_series(f, t, "compute_agent_host_cpu_seconds_total", "mode", modes[i]);
        prom_double(f, (double)ns[i] / 1e9);
    }
    prom_family(f, "compute_agent_host_cpus", "gauge", "online logical CPUs of the host");
    if (t->has_host && h->has_cpu) {
        host_series(f, t, "compute_agent_host_cpus", NULL, NULL);
        prom_u64(f, h->cpus);
    }
    prom_family(f, "compute_agent_host_cpu_util_percent", "gauge",
                "host CPU utilisation over the last interval, percent");
    if (!isnan(t->host_cpu_percent)) {
        host_series(f, t, "compute_agent_host_cpu_util_percent", NULL, NULL);
        prom_double(f, t->host_cpu_percent);
    }
    prom_family(f, "compute_agent_host_memory_total_bytes", "gauge", "host memory");
    if (t->has_host && h->has_memory) {
        host_series(f, t, "compute_agent_host_memory_total_bytes", NULL, NULL);
        prom_u64(f, h->mem_total_kb * 1024);
    }
    prom_family(f, "compute_agent_host_memory_free_bytes", "gauge", "host memory free");
    if (t->has_host && h->has_memory) {
        host_series(f, t, "compute_agent_host_memory_free_bytes", NULL, NULL);
        prom_u64(f, h->mem_free_kb * 1024);
    }
    prom_family(f, "compute_agent_host_memory_available_bytes", "gauge",
                "host memory free, buffers and page cache");
    if (t->has_host && h->has_memory) {
        host_series(f, t, "compute_agent_host_memory_available_bytes", NULL, NULL);
        prom_u64(f, (h->mem_free_kb + h->mem_buffers_kb + h->mem_cached_kb) * 1024);
    }
    static const char *const fsn[] = {"compute_agent_host_filesystem_size_bytes",
                                      "compute_agent_host_filesystem_free_bytes",
                                      "compute_agent_host_filesystem_avail_bytes"};
    static const char *const fsh[] = {"size of the file system holding a directory",
                                      "free space of that file system",
                                      "space of that file system free for unprivileged users"};
    for (size_t k = 0; k < ARRAY_SIZE(fsn); k++) {
        prom_family(f, fsn[k], "gauge", fsh[k]);
        for (size_t i = 0; i < t->n_dirs; i++) {
            const uint64_t v[] = {t->fs[i].size_bytes, t->fs[i].free_bytes, t->fs[i].avail_bytes};
            if (!t->fs_ok[i])
                continue;
            host_series(f, t, fsn[k], "path", t->dirs[i]);
            prom_u64(f, v[k]);
        }
    }
}

static void render_self(FILE *f, const struct telemetry *t)
{
    const struct telemetry_stats *s = &t->stats;
    const struct {
        const char *name, *type, *help;
        double v;
    } rows[] = {
        {"compute_agent_telemetry_rounds_total", "counter", "telemetry rounds completed", (double)s->rounds},
        {"compute_agent_telemetry_round_errors_total", "counter", "telemetry samples that failed", (double)s->round_errors},
        {"compute_agent_telemetry_rounds_skipped_total", "counter", "ticks skipped because a sample was still running", (double)s->rounds_skipped},
        {"compute_agent_telemetry_messages_total", "counter", "telemetry messages handed to the bus", (double)s->messages},
        {"compute_agent_telemetry_messages_dropped_total", "counter", "telemetry messages the bus refused", (double)s->messages_dropped},
        {"compute_agent_telemetry_samples_total", "counter", "samples in those messages", (double)s->samples},
        {"compute_agent_telemetry_domains", "gauge", "domains in the last round", (double)s->domains},
        {"compute_agent_telemetry_last_round_duration_seconds", "gauge", "time the last sample took on its worker thread", s->last_duration_s},
        {"compute_agent_telemetry_last_round_timestamp_seconds", "gauge", "when the last round was read (Unix time)", (double)s->last_round_ms / 1000.0},
        {"compute_agent_telemetry_interval_seconds", "gauge", "the sampling interval", (double)t->interval_ms / 1000.0},
    };

    for (size_t i = 0; i < ARRAY_SIZE(rows); i++) {
        prom_family(f, rows[i].name, rows[i].type, rows[i].help);
        prom_series(f, rows[i].name, NULL, 0);
        prom_double(f, rows[i].v);
    }
}

/* ---- prometheus-libvirt-exporter's names and labels ([telemetry]
 * libvirt_exporter_names), as its version 0.2 (Debian's) writes them, so its
 * dashboards and alerts read this agent unchanged: domain is libvirt's domain
 * name. Limits: source_bridge of interfaces is "" (the bulk stats call does
 * not say it), and only the domains this agent samples are listed. */

static void exp_dom(FILE *f, const char *name, const struct telemetry_domain *d)
{
    const struct prom_label l[] = {{"domain", d->s.name}, {"uuid", d->s.uuid}};

    prom_series(f, name, l, ARRAY_SIZE(l));
}

static void exp_dev(FILE *f, const char *name, const struct telemetry_domain *d, const char *l3,
                    const char *v3, const char *dev)
{
    const struct prom_label l[] = {
        {"domain", d->s.name}, {l3, v3}, {"target_device", dev}, {"uuid", d->s.uuid}};

    prom_series(f, name, l, ARRAY_SIZE(l));
}

enum exp_scalar { EX_CPU, EX_MAXMEM, EX_MEM, EX_VCPUS, EX_STATE };

static void render_exporter(FILE *f, const struct telemetry *t)
{
    static const struct {
        const char *name, *type, *help;
    } sc[] = {
        [EX_CPU] = {"libvirt_domain_info_cpu_time_seconds_total", "counter",
                    "Amount of CPU time used by the domain, in seconds."},
        [EX_MAXMEM] = {"libvirt_domain_info_maximum_memory_bytes", "gauge",
                       "Maximum allowed memory of the domain, in bytes."},
        [EX_MEM] = {"libvirt_domain_info_memory_usage_bytes", "gauge",
                    "Memory usage of the domain, in bytes."},
        [EX_VCPUS] = {"libvirt_domain_info_virtual_cpus", "gauge",
                      "Number of virtual CPUs for the domain."},
        [EX_STATE] = {"libvirt_domain_state_code", "gauge", "State of the domain."},
    };
    static const struct {
        const char *name, *help;
    } blk[] = {
        {"libvirt_domain_block_stats_read_bytes_total", "Number of bytes read from a block device, in bytes."},
        {"libvirt_domain_block_stats_read_requests_total", "Number of read requests from a block device."},
        {"libvirt_domain_block_stats_write_bytes_total", "Number of bytes written from a block device, in bytes."},
        {"libvirt_domain_block_stats_write_requests_total", "Number of write requests from a block device."},
    }, net[] = {
        {"libvirt_domain_interface_stats_receive_bytes_total", "Number of bytes received on a network interface, in bytes."},
        {"libvirt_domain_interface_stats_receive_packets_total", "Number of packets received on a network interface."},
        {"libvirt_domain_interface_stats_receive_errors_total", "Number of packet receive errors on a network interface."},
        {"libvirt_domain_interface_stats_receive_drops_total", "Number of packet receive drops on a network interface."},
        {"libvirt_domain_interface_stats_transmit_bytes_total", "Number of bytes transmitted on a network interface, in bytes."},
        {"libvirt_domain_interface_stats_transmit_packets_total", "Number of packets transmitted on a network interface."},
        {"libvirt_domain_interface_stats_transmit_errors_total", "Number of packet transmit errors on a network interface."},
        {"libvirt_domain_interface_stats_transmit_drops_total", "Number of packet transmit drops on a network interface."},
    };
    bool up = t->hv ? hv_connected(t->hv) : t->stats.rounds > 0;

    prom_family(f, "libvirt_up", "gauge", "Whether scraping libvirt's metrics was successful.");
    prom_series(f, "libvirt_up", NULL, 0);
    prom_u64(f, up ? 1 : 0);
    prom_family(f, "libvirt_domains_number", "gauge", "Number of domains.");
    prom_series(f, "libvirt_domains_number", NULL, 0);
    prom_u64(f, t->n_doms);
    for (size_t k = 0; k < ARRAY_SIZE(sc); k++) {
        prom_family(f, sc[k].name, sc[k].type, sc[k].help);
        for (size_t i = 0; i < t->n_doms; i++) {
            const struct hv_stats *s = &t->doms[i].s;
            bool has[] = {s->has_cpu_time, s->has_balloon_maximum, s->has_balloon_current,
                          s->has_vcpus, s->has_power};
            const double v[] = {(double)s->cpu_time_ns / 1e9, (double)s->balloon_maximum_kb * 1024,
                                (double)s->balloon_current_kb * 1024, (double)s->vcpus,
                                (double)s->state};
            if (!has[k])
                continue;
            exp_dom(f, sc[k].name, &t->doms[i]);
            prom_double(f, v[k]);
        }
    }
    for (size_t k = 0; k < ARRAY_SIZE(blk); k++) {
        prom_family(f, blk[k].name, "counter", blk[k].help);
        for (size_t i = 0; i < t->n_doms; i++) {
            const struct telemetry_domain *d = &t->doms[i];
            for (size_t j = 0; j < d->s.n_block; j++) {
                const struct hv_block_stats *b = &d->s.block[j];
                bool has[] = {b->has_rd_bytes, b->has_rd_reqs, b->has_wr_bytes, b->has_wr_reqs};
                const uint64_t v[] = {b->rd_bytes, b->rd_reqs, b->wr_bytes, b->wr_reqs};
                if (!has[k])
                    continue;
                exp_dev(f, blk[k].name, d, "source_file", b->path, b->name);
                prom_u64(f, v[k]);
            }
        }
    }
    for (size_t k = 0; k < ARRAY_SIZE(net); k++) {
        prom_family(f, net[k].name, "counter", net[k].help);
        for (size_t i = 0; i < t->n_doms; i++) {
            const struct telemetry_domain *d = &t->doms[i];
            for (size_t j = 0; j < d->s.n_net; j++) {
                const struct hv_net_stats *n = &d->s.net[j];
                bool has[] = {n->has_rx_bytes, n->has_rx_pkts, n->has_rx_errs, n->has_rx_drop,
                              n->has_tx_bytes, n->has_tx_pkts, n->has_tx_errs, n->has_tx_drop};
                const uint64_t v[] = {n->rx_bytes, n->rx_pkts, n->rx_errs, n->rx_drop,
                                      n->tx_bytes, n->tx_pkts, n->tx_errs, n->tx_drop};
                if (!has[k])
                    continue;
                exp_dev(f, net[k].name, d, "source_bridge", "", n->name);
                prom_u64(f, v[k]);
            }
        }
    }
}

int telemetry_render_prometheus(const struct telemetry *t, FILE *out)
{
    for (int k = DS_STATE; k <= DS_MEM_RSS; k++)
        render_dom_scalar(out, t, (enum dom_scalar)k);
    render_vcpus(out, t);
    render_devices(out, t);
    render_host(out, t);
    render_self(out, t);
    if (t->exporter_names)
        render_exporter(out, t);
    return ferror(out) ? -EIO : 0;
}
