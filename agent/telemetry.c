/* telemetry.c: see telemetry.h. */
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "agent/telemetry.h"
#include "common/prom.h"
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
    uint64_t interval_ms;

    uv_timer_t timer;              /* the sampling tick */
    bool timer_closed;             /* its close callback ran */
    bool closing;                  /* telemetry_free() was called */
    bool busy;                     /* a sample is on a worker thread */

    /* The sample in flight (one at a time; filled on the worker). */
    struct {
        uv_work_t work;
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

/* ---- small helpers ---- */

double telemetry_counter_rate(bool has_prev, uint64_t prev, bool has_cur, uint64_t cur,
                              double dt_s)
{
    if (!has_prev || !has_cur || !(dt_s > 0) || cur < prev)
        return NAN;
    return (double)(cur - prev) / dt_s;
}

static double clamp(double v, double lo, double hi)
{
    if (isnan(v))
        return v;
    return v < lo ? lo : v > hi ? hi : v;
}

static int cmp_uuid(const void *a, const void *b)
{
    return strcmp(((const struct telemetry_domain *)a)->s.uuid,
                  ((const struct telemetry_domain *)b)->s.uuid);
}

static void domain_release(struct telemetry_domain *d)
{
    hv_stats_release(&d->s);
    free(d->vcpu_util);
    free(d->block_rate);
    free(d->net_rate);
}

static void domains_free(struct telemetry_domain *d, size_t n)
{
    for (size_t i = 0; d && i < n; i++)
        domain_release(&d[i]);
    free(d);
}

const struct telemetry_domain *telemetry_domain_find(const struct telemetry *t, const char *uuid)
{
    struct telemetry_domain key;

    if (!t->n_doms)
        return NULL;
    strscpy(key.s.uuid, uuid, sizeof(key.s.uuid));
    return bsearch(&key, t->doms, t->n_doms, sizeof(key), cmp_uuid);
}

/* ---- rates ---- */

static const struct hv_block_stats *find_block(const struct hv_stats *s, const char *name)
{
    for (size_t i = 0; i < s->n_block; i++)
        if (!strcmp(s->block[i].name, name))
            return &s->block[i];
    return NULL;
}

static const struct hv_net_stats *find_net(const struct hv_stats *s, const char *name)
{
    for (size_t i = 0; i < s->n_net; i++)
        if (!strcmp(s->net[i].name, name))
            return &s->net[i];
    return NULL;
}

/* Whether prev and cur are two readings of one run of the domain: both
 * active with the same libvirt id, and it was running or paused before. */
static bool same_run(const struct hv_stats *prev, const struct hv_stats *cur)
{
    if (prev->id < 0 || cur->id < 0 || prev->id != cur->id)
        return false;
    if (prev->has_power && prev->power != HV_POWER_RUNNING && prev->power != HV_POWER_PAUSED)
        return false;
    return true;
}

/* Fill d's rates against prev (NULL: first sight). d->s is filled. */
static int domain_rates(struct telemetry_domain *d, const struct telemetry_domain *prev, double dt)
{
    const struct hv_stats *c = &d->s;
    const struct hv_stats *p = prev ? &prev->s : NULL;
    bool ok = p && same_run(p, c) && dt > 0;
    unsigned vcpus;

    d->cpu_util = NAN;
    if (c->n_vcpu && !(d->vcpu_util = calloc(c->n_vcpu, sizeof(double))))
        return -ENOMEM;
    if (c->n_block && !(d->block_rate = calloc(c->n_block, sizeof(*d->block_rate))))
        return -ENOMEM;
    if (c->n_net && !(d->net_rate = calloc(c->n_net, sizeof(*d->net_rate))))
        return -ENOMEM;

    vcpus = c->has_vcpus && c->vcpus ? c->vcpus : 0;
    if (!vcpus)
        for (size_t i = 0; i < c->n_vcpu; i++)
            vcpus += c->vcpu_has_time[i];
    if (!vcpus)
        vcpus = 1;
    if (ok) {
        double r = telemetry_counter_rate(p->has_cpu_time, p->cpu_time_ns, c->has_cpu_time,
                                          c->cpu_time_ns, dt);
        /* ns of CPU per s of wall time, as % of the guest's vCPUs (ceilometer) */
        d->cpu_util = clamp(r / 1e9 * 100.0 / vcpus, 0.0, 100.0);
    }
    for (size_t i = 0; i < c->n_vcpu; i++) {
        bool hp = ok && i < p->n_vcpu && p->vcpu_has_time[i];
        double r = telemetry_counter_rate(hp, hp ? p->vcpu_time_ns[i] : 0, c->vcpu_has_time[i],
                                          c->vcpu_time_ns[i], dt);
        d->vcpu_util[i] = clamp(r / 1e9 * 100.0, 0.0, 100.0);
    }
    for (size_t i = 0; i < c->n_block; i++) {
        const struct hv_block_stats *cb = &c->block[i];
        const struct hv_block_stats *pb = ok && cb->name[0] ? find_block(p, cb->name) : NULL;
        struct telemetry_dev_rates *r = &d->block_rate[i];

        r->a_bytes = r->b_bytes = r->a_ops = r->b_ops = NAN;
        if (!pb)
            continue;
        r->a_bytes = telemetry_counter_rate(pb->has_rd_bytes, pb->rd_bytes, cb->has_rd_bytes, cb->rd_bytes, dt);
        r->b_bytes = telemetry_counter_rate(pb->has_wr_bytes, pb->wr_bytes, cb->has_wr_bytes, cb->wr_bytes, dt);
        r->a_ops = telemetry_counter_rate(pb->has_rd_reqs, pb->rd_reqs, cb->has_rd_reqs, cb->rd_reqs, dt);
        r->b_ops = telemetry_counter_rate(pb->has_wr_reqs, pb->wr_reqs, cb->has_wr_reqs, cb->wr_reqs, dt);
    }
    for (size_t i = 0; i < c->n_net; i++) {
        const struct hv_net_stats *cn = &c->net[i];
        const struct hv_net_stats *pn = ok && cn->name[0] ? find_net(p, cn->name) : NULL;
        struct telemetry_dev_rates *r = &d->net_rate[i];

        r->a_bytes = r->b_bytes = r->a_ops = r->b_ops = NAN;
        if (!pn)
            continue;
        r->a_bytes = telemetry_counter_rate(pn->has_rx_bytes, pn->rx_bytes, cn->has_rx_bytes, cn->rx_bytes, dt);
        r->b_bytes = telemetry_counter_rate(pn->has_tx_bytes, pn->tx_bytes, cn->has_tx_bytes, cn->tx_bytes, dt);
        r->a_ops = telemetry_counter_rate(pn->has_rx_pkts, pn->rx_pkts, cn->has_rx_pkts, cn->rx_pkts, dt);
        r->b_ops = telemetry_counter_rate(pn->has_tx_pkts, pn->tx_pkts, cn->has_tx_pkts, cn->tx_pkts, dt);
    }
    return 0;
}

static double host_cpu_percent(const struct hv_host_stats *p, const struct hv_host_stats *c)
{
    uint64_t pb, cb, pt, ct;

    if (!p->has_cpu || !c->has_cpu)
        return NAN;
    pb = p->cpu_user_ns + p->cpu_kernel_ns;
    cb = c->cpu_user_ns + c->cpu_kernel_ns;
    pt = pb + p->cpu_idle_ns + p->cpu_iowait_ns;
    ct = cb + c->cpu_idle_ns + c->cpu_iowait_ns;
    if (cb < pb || ct <= pt)
        return NAN;
    return clamp((double)(cb - pb) / (double)(ct - pt) * 100.0, 0.0, 100.0);
}

/* ---- JSON messages ---- */

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
        sample_u64(m, "power.state", "gauge", "state", NULL, (uint64_t)s->state);
    if (s->has_cpu_time)
        sample_u64(m, "cpu", "cumulative", "ns", NULL, s->cpu_time_ns);
    sample_dbl(m, "cpu_util", "%", NULL, d->cpu_util);
    if (s->has_vcpus)
        sample_u64(m, "vcpus", "gauge", "vcpu", NULL, s->vcpus);
    for (size_t i = 0; i < s->n_vcpu; i++) {
        snprintf(dev, sizeof(dev), "vcpu%zu", i);
        sample_dbl(m, "vcpu_util", "%", dev, d->vcpu_util[i]);
    }
    if (s->has_balloon_current)
        sample_dbl(m, "memory", "MB", NULL, (double)s->balloon_current_kb / 1024.0);
    if (s->has_balloon_available && s->has_balloon_unused &&
        s->balloon_available_kb >= s->balloon_unused_kb)
        sample_dbl(m, "memory.usage", "MB", NULL,
                   (double)(s->balloon_available_kb - s->balloon_unused_kb) / 1024.0);
    if (s->has_balloon_rss)
        sample_dbl(m, "memory.resident", "MB", NULL, (double)s->balloon_rss_kb / 1024.0);
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
        sample_dbl(m, "disk.device.read.bytes.rate", "B/s", n, r->a_bytes);
        sample_dbl(m, "disk.device.write.bytes.rate", "B/s", n, r->b_bytes);
        sample_dbl(m, "disk.device.read.requests.rate", "request/s", n, r->a_ops);
        sample_dbl(m, "disk.device.write.requests.rate", "request/s", n, r->b_ops);
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
        sample_dbl(m, "network.incoming.bytes.rate", "B/s", n, r->a_bytes);
        sample_dbl(m, "network.outgoing.bytes.rate", "B/s", n, r->b_bytes);
        sample_dbl(m, "network.incoming.packets.rate", "packet/s", n, r->a_ops);
        sample_dbl(m, "network.outgoing.packets.rate", "packet/s", n, r->b_ops);
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
        sample_u64(m, "hardware.memory.total", "gauge", "KB", NULL, h->mem_total_kb);
        sample_u64(m, "hardware.memory.avail", "gauge", "KB", NULL,
                   h->mem_free_kb + h->mem_buffers_kb + h->mem_cached_kb);
        sample_u64(m, "hardware.memory.buffer", "gauge", "KB", NULL, h->mem_buffers_kb);
        sample_u64(m, "hardware.memory.cached", "gauge", "KB", NULL, h->mem_cached_kb);
    }
    for (size_t i = 0; i < t->n_dirs; i++) {
        if (!t->fs_ok[i])
            continue;
        sample_u64(m, "hardware.disk.size.total", "gauge", "KB", t->dirs[i],
                   t->fs[i].size_bytes / 1024);
        sample_u64(m, "hardware.disk.size.used", "gauge", "KB", t->dirs[i],
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

static void publish_round(struct telemetry *t)
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

/* ---- rounds ---- */

int telemetry_ingest(struct telemetry *t, struct hv_stats *doms, size_t n,
                     const struct hv_host_stats *host, uint64_t mono_ns, int64_t wall_ms)
{
    struct telemetry_domain *nd = calloc(n ? n : 1, sizeof(*nd));
    double dt = t->round_mono_ns && mono_ns > t->round_mono_ns
                    ? (double)(mono_ns - t->round_mono_ns) / 1e9
                    : 0.0;
    size_t k = 0;

    if (!nd) {
        hv_stats_free(doms, n);
        return -ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        struct telemetry_domain *d = &nd[k];
        const struct telemetry_domain *prev;

        if (!uuid_is_valid(doms[i].uuid))
            continue;
        prev = telemetry_domain_find(t, doms[i].uuid);
        if (prev && prev->known) {
            d->known = true;
            memcpy(d->ec2_id, prev->ec2_id, sizeof(d->ec2_id));
            memcpy(d->name, prev->name, sizeof(d->name));
        } else if (t->cb.lookup && t->cb.lookup(t->opaque, doms[i].uuid, d->ec2_id, d->name,
                                                sizeof(d->name)) == 0) {
            d->known = true;
        } else if (!t->include_foreign) {
            memset(d, 0, sizeof(*d));
            continue;
        } else {
            d->ec2_id[0] = '\0';
            strscpy(d->name, doms[i].name, sizeof(d->name));
        }
        d->s = doms[i];
        memset(&doms[i], 0, sizeof(doms[i])); /* moved */
        k++;
        if (domain_rates(d, prev, dt) < 0) {
            domains_free(nd, k);
            hv_stats_free(doms, n);
            return -ENOMEM;
        }
    }
    hv_stats_free(doms, n);
    qsort(nd, k, sizeof(*nd), cmp_uuid);

    domains_free(t->doms, t->n_doms);
    t->doms = nd;
    t->n_doms = k;
    if (host) {
        t->host_cpu_percent = t->has_host ? host_cpu_percent(&t->host, host) : NAN;
        t->host = *host;
        t->has_host = true;
    }
    t->round_mono_ns = mono_ns;
    t->round_wall_ms = wall_ms;
    t->stats.rounds++;
    t->stats.domains = k;
    t->stats.last_round_ms = wall_ms;
    publish_round(t);
    return 0;
}

static void sample_work(uv_work_t *w)
{
    struct telemetry *t = w->data;
    uint64_t t0 = now_mono_ns();

    t->job.doms = NULL;
    t->job.n = 0;
    memset(&t->job.err, 0, sizeof(t->job.err));
    t->job.rc = hv_all_domain_stats(t->hv, &t->job.doms, &t->job.n, &t->job.err);
    t->job.mono_ns = now_mono_ns();
    t->job.wall_ms = now_wall_ms();
    t->job.has_host = hv_host_stats(t->hv, &t->job.host, NULL) == 0;
    for (size_t i = 0; i < t->n_dirs; i++)
        t->job.fs_ok[i] = hv_fs_stats(t->dirs[i], &t->job.fs[i]) == 0;
    t->job.duration_s = (double)(now_mono_ns() - t0) / 1e9;
}

static void maybe_destroy(struct telemetry *t);

static void sample_done(uv_work_t *w, int status)
{
    struct telemetry *t = w->data;
    int r = t->job.rc;

    t->busy = false;
    if (t->closing) {
        hv_stats_free(t->job.doms, t->job.n);
        t->job.doms = NULL;
        maybe_destroy(t);
        return;
    }
    if (status < 0 && r == 0)
        r = agent_error_set(&t->job.err, -status, "internal", NULL, "the sample was cancelled");
    t->stats.last_duration_s = t->job.duration_s;
    if (r == 0) {
        /* Directories are kept as last measured (a failed statvfs keeps the old). */
        for (size_t i = 0; i < t->n_dirs; i++) {
            if (t->job.fs_ok[i]) {
                t->fs[i] = t->job.fs[i];
                t->fs_ok[i] = true;
            }
        }
        r = telemetry_ingest(t, t->job.doms, t->job.n, t->job.has_host ? &t->job.host : NULL,
                             t->job.mono_ns, t->job.wall_ms);
        t->job.doms = NULL;
        if (r < 0)
            agent_error_set(&t->job.err, -r, "internal", NULL, "out of memory");
    }
    if (r < 0)
        t->stats.round_errors++;
    if (t->cb.on_round && !t->closing)
        t->cb.on_round(t->opaque, r, &t->job.err);
}

static void on_tick(uv_timer_t *timer)
{
    struct telemetry *t = timer->data;
    int r;

    if (!t->hv)
        return; /* fed through telemetry_ingest() only */
    if (t->busy) {
        t->stats.rounds_skipped++;
        return;
    }
    t->job.work.data = t;
    r = uv_queue_work(t->loop, &t->job.work, sample_work, sample_done);
    if (r < 0) {
        struct agent_error e;
        agent_error_set(&e, -r, "internal", NULL, "cannot queue the sample: %s", uv_strerror(r));
        t->stats.round_errors++;
        if (t->cb.on_round)
            t->cb.on_round(t->opaque, r, &e);
        return;
    }
    t->busy = true;
}

/* ---- life cycle ---- */

static void destroy(struct telemetry *t)
{
    void (*on_closed)(void *) = t->closing ? t->cb.on_closed : NULL;
    void *opaque = t->opaque;

    domains_free(t->doms, t->n_doms);
    for (size_t i = 0; i < t->n_dirs; i++)
        free(t->dirs[i]);
    free(t->dirs);
    free(t->fs);
    free(t->fs_ok);
    free(t->job.fs);
    free(t->job.fs_ok);
    free(t->hostname);
    free(t);
    if (on_closed)
        on_closed(opaque);
}

static void maybe_destroy(struct telemetry *t)
{
    if (t->timer_closed && !t->busy)
        destroy(t);
}

static void on_timer_closed(uv_handle_t *h)
{
    struct telemetry *t = h->data;

    t->timer_closed = true;
    maybe_destroy(t);
}

int telemetry_new(uv_loop_t *loop, struct hv *hv, const struct telemetry_config *cfg,
                  const struct telemetry_callbacks *cb, void *opaque, struct telemetry **ret,
                  struct agent_error *err)
{
    struct telemetry *t;
    size_t nd = 0;
    int r;

    if (!cfg->host || !cfg->host[0])
        return agent_error_set(err, EINVAL, "invalid_field", "telemetry.host",
                               "telemetry needs the host name");
    if (cfg->interval_s > TELEMETRY_INTERVAL_MAX_S)
        return agent_error_set(err, EINVAL, "invalid_field", "telemetry.interval",
                               "the telemetry interval must be 1..%d seconds",
                               TELEMETRY_INTERVAL_MAX_S);
    while (cfg->dirs && cfg->dirs[nd])
        nd++;
    t = calloc(1, sizeof(*t));
    if (!t)
        return agent_error_set(err, ENOMEM, "internal", NULL, "out of memory");
    t->loop = loop;
    t->hv = hv;
    if (cb)
        t->cb = *cb;
    t->opaque = opaque;
    t->include_foreign = cfg->include_foreign;
    t->interval_ms = (uint64_t)(cfg->interval_s ? cfg->interval_s : TELEMETRY_INTERVAL_DEFAULT_S) * 1000;
    t->host_cpu_percent = NAN;
    t->hostname = strdup(cfg->host);
    t->dirs = calloc(nd ? nd : 1, sizeof(*t->dirs));
    t->fs = calloc(nd ? nd : 1, sizeof(*t->fs));
    t->fs_ok = calloc(nd ? nd : 1, sizeof(*t->fs_ok));
    t->job.fs = calloc(nd ? nd : 1, sizeof(*t->job.fs));
    t->job.fs_ok = calloc(nd ? nd : 1, sizeof(*t->job.fs_ok));
    if (!t->hostname || !t->dirs || !t->fs || !t->fs_ok || !t->job.fs || !t->job.fs_ok)
        goto oom;
    for (; t->n_dirs < nd; t->n_dirs++)
        if (!(t->dirs[t->n_dirs] = strdup(cfg->dirs[t->n_dirs])))
            goto oom;
    r = uv_timer_init(loop, &t->timer);
    if (r < 0) {
        destroy(t);
        return agent_error_set(err, -r, "internal", NULL, "cannot make the telemetry timer: %s",
                               uv_strerror(r));
    }
    t->timer.data = t;
    r = uv_timer_start(&t->timer, on_tick, 0, t->interval_ms);
    if (r < 0) {
        t->closing = true;
        t->cb.on_closed = NULL; /* never made: nothing to tell */
        uv_close((uv_handle_t *)&t->timer, on_timer_closed);
        return agent_error_set(err, -r, "internal", NULL, "cannot start the telemetry timer: %s",
                               uv_strerror(r));
    }
    *ret = t;
    return 0;
oom:
    destroy(t);
    return agent_error_set(err, ENOMEM, "internal", NULL, "out of memory");
}

struct telemetry *telemetry_free(struct telemetry *t)
{
    if (!t || t->closing)
        return NULL;
    t->closing = true;
    uv_timer_stop(&t->timer);
    uv_close((uv_handle_t *)&t->timer, on_timer_closed);
    return NULL;
}

int telemetry_set_interval(struct telemetry *t, unsigned interval_s)
{
    if (interval_s > TELEMETRY_INTERVAL_MAX_S)
        return -EINVAL;
    t->interval_ms = (uint64_t)(interval_s ? interval_s : TELEMETRY_INTERVAL_DEFAULT_S) * 1000;
    if (t->closing)
        return 0;
    uv_timer_set_repeat(&t->timer, t->interval_ms);
    return uv_timer_again(&t->timer) < 0 ? -EINVAL : 0;
}

void telemetry_get_stats(const struct telemetry *t, struct telemetry_stats *out)
{
    *out = t->stats;
}

/* ---- Prometheus ---- */

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

int telemetry_render_prometheus(const struct telemetry *t, FILE *out)
{
    for (int k = DS_STATE; k <= DS_MEM_RSS; k++)
        render_dom_scalar(out, t, (enum dom_scalar)k);
    render_vcpus(out, t);
    render_devices(out, t);
    render_host(out, t);
    render_self(out, t);
    return ferror(out) ? -EIO : 0;
}
