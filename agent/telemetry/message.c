/* message.c: the telemetry messages (ceilometer-like samples, JSON). Written
 * by hand, not through jansson: every round's messages go into one growing
 * text buffer, reused from message to message, instead of a tree of JSON
 * objects per sample; strings are escaped by buf_json_str(). */
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "agent/telemetry/telemetry-private.h"

/* A growing text buffer; oom sticks once an allocation failed. */
struct buf {
    char *p;
    size_t len, cap;
    bool oom;
};

static bool buf_reserve(struct buf *b, size_t more)
{
    size_t cap;
    char *np;

    if (b->oom)
        return false;
    if (b->len + more + 1 <= b->cap)
        return true;
    cap = b->cap ? b->cap : 4096;
    while (cap < b->len + more + 1)
        cap *= 2;
    np = realloc(b->p, cap);
    if (!np) {
        b->oom = true;
        return false;
    }
    b->p = np;
    b->cap = cap;
    return true;
}

static void buf_put(struct buf *b, const char *s, size_t n)
{
    if (!buf_reserve(b, n))
        return;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void buf_puts(struct buf *b, const char *s) { buf_put(b, s, strlen(s)); }

static void __attribute__((format(printf, 2, 3))) buf_printf(struct buf *b, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (!buf_reserve(b, 64))
        return;
    va_start(ap, fmt);
    n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->oom = true;
        return;
    }
    if ((size_t)n >= b->cap - b->len) {
        if (!buf_reserve(b, (size_t)n))
            return;
        va_start(ap, fmt);
        vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
    }
    b->len += (size_t)n;
}

/* A JSON string (quoted, escaped) or null for NULL. */
static void buf_json_str(struct buf *b, const char *s)
{
    if (!s) {
        buf_puts(b, "null");
        return;
    }
    buf_put(b, "\"", 1);
    for (const char *run = s;; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch && ch >= 0x20 && ch != '"' && ch != '\\')
            continue;
        buf_put(b, run, (size_t)(s - run));
        if (!ch)
            break;
        if (ch == '"' || ch == '\\') {
            char e[2] = {'\\', (char)ch};
            buf_put(b, e, 2);
        } else {
            buf_printf(b, "\\u%04x", ch);
        }
        run = s + 1;
    }
    buf_put(b, "\"", 1);
}

/* What every sample of one message repeats. */
struct msg_ctx {
    struct buf *b;
    const char *uuid;     /* NULL for host samples */
    const char *ec2_id;   /* NULL when unknown */
    const char *host;
    const char *ts;
    const char *res_base; /* resource_id, or its prefix for devices */
    size_t n;             /* samples written */
};

static void sample_head(struct msg_ctx *m, const char *meter, const char *type, const char *unit,
                        const char *device)
{
    struct buf *b = m->b;

    buf_puts(b, m->n++ ? ",{\"instance_id\":" : "{\"instance_id\":");
    buf_json_str(b, m->uuid);
    buf_puts(b, ",\"ec2_id\":");
    buf_json_str(b, m->ec2_id);
    buf_puts(b, ",\"host\":");
    buf_json_str(b, m->host);
    buf_printf(b, ",\"timestamp\":\"%s\",\"meter\":", m->ts);
    buf_json_str(b, meter);
    buf_printf(b, ",\"type\":\"%s\",\"unit\":", type);
    buf_json_str(b, unit);
    buf_puts(b, ",\"resource_id\":");
    if (device) {
        char res[256]; /* "<uuid or host>-<device>" */
        snprintf(res, sizeof(res), "%s-%s", m->res_base, device);
        buf_json_str(b, res);
        buf_puts(b, ",\"device\":");
        buf_json_str(b, device);
    } else {
        buf_json_str(b, m->res_base);
    }
}

static void sample_u64(struct msg_ctx *m, const char *meter, const char *type, const char *unit,
                       const char *device, uint64_t v)
{
    sample_head(m, meter, type, unit, device);
    buf_printf(m->b, ",\"value\":%" PRIu64 "}", v);
}

static void sample_dbl(struct msg_ctx *m, const char *meter, const char *unit, const char *device,
                       double v)
{
    if (isnan(v) || isinf(v))
        return;
    sample_head(m, meter, "gauge", unit, device);
    buf_printf(m->b, ",\"value\":%.10g}", v);
}

static void msg_open(struct buf *b, const char *host, const char *uuid, const char *ec2_id,
                     const char *name, const char *ts)
{
    b->len = 0;
    buf_puts(b, "{\"host\":");
    buf_json_str(b, host);
    buf_puts(b, ",\"instance_id\":");
    buf_json_str(b, uuid);
    buf_puts(b, ",\"ec2_id\":");
    buf_json_str(b, ec2_id);
    buf_puts(b, ",\"name\":");
    buf_json_str(b, name);
    buf_printf(b, ",\"timestamp\":\"%s\",\"samples\":[", ts);
}

static void domain_samples(struct msg_ctx *m, const struct telemetry_domain *d)
{
    const struct hv_stats *s = &d->s;
    char dev[32];

    if (s->has_power)
        sample_u64(m, "compute_agent.power.state", "gauge", "state", NULL, (uint64_t)s->state);
    if (s->has_cpu_time)
        sample_u64(m, "cpu", "cumulative", "ns", NULL, s->cpu_time_ns);
    sample_dbl(m, "cpu_util", "%", NULL, d->cpu_util);
    if (s->has_vcpus)
        sample_u64(m, "vcpus", "gauge", "vcpu", NULL, s->vcpus);
    for (size_t i = 0; i < s->n_vcpu; i++) {
        snprintf(dev, sizeof(dev), "vcpu%zu", i);
        sample_dbl(m, "compute_agent.vcpu_util", "%", dev, d->vcpu_util[i]);
    }
    if (s->has_balloon_current)
        sample_dbl(m, "memory", "MB", NULL, (double)s->balloon_current_kb / 1024.0);
    if (s->has_balloon_available && s->has_balloon_unused &&
        s->balloon_available_kb >= s->balloon_unused_kb)
        sample_dbl(m, "memory.usage", "MB", NULL,
                   (double)(s->balloon_available_kb - s->balloon_unused_kb) / 1024.0);
    if (s->has_balloon_rss)
        sample_dbl(m, "memory.resident", "MB", NULL, (double)s->balloon_rss_kb / 1024.0);
    /* ceilometer's memory.swap.* are cumulative MB (libvirt's are KiB) */
    if (s->has_balloon_swap_in)
        sample_u64(m, "memory.swap.in", "cumulative", "MB", NULL, s->balloon_swap_in_kb / 1024);
    if (s->has_balloon_swap_out)
        sample_u64(m, "memory.swap.out", "cumulative", "MB", NULL, s->balloon_swap_out_kb / 1024);
    /* disk.root.size / disk.ephemeral.size: the flavor's, as ceilometer
     * reports them (the agent's flavors have no ephemeral part: 0) */
    if (d->has_sizes) {
        sample_u64(m, "disk.root.size", "gauge", "GB", NULL, d->root_gb);
        sample_u64(m, "disk.ephemeral.size", "gauge", "GB", NULL, d->ephemeral_gb);
    }
    for (size_t i = 0; i < s->n_block; i++) {
        const struct hv_block_stats *b = &s->block[i];
        const struct telemetry_dev_rates *r = &d->block_rate[i];
        const char *n = b->name[0] ? b->name : "unknown";

        if (b->has_rd_bytes)
            sample_u64(m, "disk.device.read.bytes", "cumulative", "B", n, b->rd_bytes);
        if (b->has_wr_bytes)
            sample_u64(m, "disk.device.write.bytes", "cumulative", "B", n, b->wr_bytes);
        if (b->has_rd_reqs)
            sample_u64(m, "disk.device.read.requests", "cumulative", "request", n, b->rd_reqs);
        if (b->has_wr_reqs)
            sample_u64(m, "disk.device.write.requests", "cumulative", "request", n, b->wr_reqs);
        if (b->has_capacity)
            sample_u64(m, "disk.device.capacity", "gauge", "B", n, b->capacity);
        if (b->has_allocation)
            sample_u64(m, "disk.device.allocation", "gauge", "B", n, b->allocation);
        if (b->has_physical)
            sample_u64(m, "disk.device.usage", "gauge", "B", n, b->physical);
        sample_dbl(m, "compute_agent.disk.device.read.bytes.rate", "B/s", n, r->a_bytes);
        sample_dbl(m, "compute_agent.disk.device.write.bytes.rate", "B/s", n, r->b_bytes);
        sample_dbl(m, "compute_agent.disk.device.read.requests.rate", "request/s", n, r->a_ops);
        sample_dbl(m, "compute_agent.disk.device.write.requests.rate", "request/s", n, r->b_ops);
    }
    for (size_t i = 0; i < s->n_net; i++) {
        const struct hv_net_stats *nt = &s->net[i];
        const struct telemetry_dev_rates *r = &d->net_rate[i];
        const char *n = nt->name[0] ? nt->name : "unknown";

        if (nt->has_rx_bytes)
            sample_u64(m, "network.incoming.bytes", "cumulative", "B", n, nt->rx_bytes);
        if (nt->has_tx_bytes)
            sample_u64(m, "network.outgoing.bytes", "cumulative", "B", n, nt->tx_bytes);
        if (nt->has_rx_pkts)
            sample_u64(m, "network.incoming.packets", "cumulative", "packet", n, nt->rx_pkts);
        if (nt->has_tx_pkts)
            sample_u64(m, "network.outgoing.packets", "cumulative", "packet", n, nt->tx_pkts);
        if (nt->has_rx_drop)
            sample_u64(m, "network.incoming.packets.drop", "cumulative", "packet", n, nt->rx_drop);
        if (nt->has_tx_drop)
            sample_u64(m, "network.outgoing.packets.drop", "cumulative", "packet", n, nt->tx_drop);
        if (nt->has_rx_errs)
            sample_u64(m, "network.incoming.packets.error", "cumulative", "packet", n, nt->rx_errs);
        if (nt->has_tx_errs)
            sample_u64(m, "network.outgoing.packets.error", "cumulative", "packet", n, nt->tx_errs);
        sample_dbl(m, "network.incoming.bytes.rate", "B/s", n, r->a_bytes);
        sample_dbl(m, "network.outgoing.bytes.rate", "B/s", n, r->b_bytes);
        sample_dbl(m, "compute_agent.network.incoming.packets.rate", "packet/s", n, r->a_ops);
        sample_dbl(m, "compute_agent.network.outgoing.packets.rate", "packet/s", n, r->b_ops);
    }
}

static void host_samples(struct msg_ctx *m, const struct telemetry *t)
{
    const struct hv_host_stats *h = &t->host;

    if (t->has_host && h->has_cpu) {
        sample_u64(m, "compute.node.cpu.user.time", "cumulative", "ns", NULL, h->cpu_user_ns);
        sample_u64(m, "compute.node.cpu.kernel.time", "cumulative", "ns", NULL, h->cpu_kernel_ns);
        sample_u64(m, "compute.node.cpu.idle.time", "cumulative", "ns", NULL, h->cpu_idle_ns);
        sample_u64(m, "compute.node.cpu.iowait.time", "cumulative", "ns", NULL, h->cpu_iowait_ns);
        sample_dbl(m, "compute.node.cpu.percent", "%", NULL, t->host_cpu_percent);
    }
    if (t->has_host && h->has_memory) {
        sample_u64(m, "compute_agent.hardware.memory.total", "gauge", "KB", NULL, h->mem_total_kb);
        sample_u64(m, "compute_agent.hardware.memory.avail", "gauge", "KB", NULL,
                   h->mem_free_kb + h->mem_buffers_kb + h->mem_cached_kb);
        sample_u64(m, "compute_agent.hardware.memory.buffer", "gauge", "KB", NULL, h->mem_buffers_kb);
        sample_u64(m, "compute_agent.hardware.memory.cached", "gauge", "KB", NULL, h->mem_cached_kb);
    }
    for (size_t i = 0; i < t->n_dirs; i++) {
        if (!t->fs_ok[i])
            continue;
        sample_u64(m, "compute_agent.hardware.disk.size.total", "gauge", "KB", t->dirs[i],
                   t->fs[i].size_bytes / 1024);
        sample_u64(m, "compute_agent.hardware.disk.size.used", "gauge", "KB", t->dirs[i],
                   (t->fs[i].size_bytes - t->fs[i].free_bytes) / 1024);
    }
}

static void publish(struct telemetry *t, const char *key, struct buf *b, size_t nsamples)
{
    int r;

    buf_puts(b, "]}");
    if (b->oom) {
        t->stats.messages_dropped++;
        return;
    }
    t->stats.messages++;
    t->stats.samples += nsamples;
    r = t->cb.publish(t->opaque, key, b->p, b->len);
    if (r < 0)
        t->stats.messages_dropped++;
}

void telemetry_publish_round(struct telemetry *t)
{
    struct buf b = {0};
    char ts[32];

    if (!t->cb.publish)
        return;
    format_rfc3339_ms(t->round_wall_ms, ts);
    for (size_t i = 0; i < t->n_doms; i++) {
        const struct telemetry_domain *d = &t->doms[i];
        const char *ec2 = d->known ? d->ec2_id : NULL;
        struct msg_ctx m = {&b, d->s.uuid, ec2, t->hostname, ts, d->s.uuid, 0};

        msg_open(&b, t->hostname, d->s.uuid, ec2, d->name[0] ? d->name : NULL, ts);
        domain_samples(&m, d);
        if (m.n)
            publish(t, d->s.uuid, &b, m.n);
        if (t->closing)
            break; /* publish may have freed us: it must not, but stop early */
    }
    if (t->has_host || t->n_dirs) {
        struct msg_ctx m = {&b, NULL, NULL, t->hostname, ts, t->hostname, 0};

        msg_open(&b, t->hostname, NULL, NULL, NULL, ts);
        host_samples(&m, t);
        if (m.n)
            publish(t, t->hostname, &b, m.n);
    }
    free(b.p);
}
