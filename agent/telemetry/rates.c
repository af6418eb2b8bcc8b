/* rates.c: libvirt's counters turned into rates between two rounds (a counter
 * that went back, or a domain that restarted, gives no rate). */
#include <math.h>
#include <string.h>

#include "agent/telemetry/telemetry-private.h"

static double clamp(double v, double lo, double hi)
{
    if (isnan(v))
        return v;
    return v < lo ? lo : v > hi ? hi : v;
}

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
int telemetry_domain_rates(struct telemetry_domain *d, const struct telemetry_domain *prev, double dt)
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

double telemetry_host_cpu_percent(const struct hv_host_stats *p, const struct hv_host_stats *c)
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

double telemetry_counter_rate(bool has_prev, uint64_t prev, bool has_cur, uint64_t cur,
                              double dt_s)
{
    if (!has_prev || !has_cur || !(dt_s > 0) || cur < prev)
        return NAN;
    return (double)(cur - prev) / dt_s;
}
