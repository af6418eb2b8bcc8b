/* telemetry.c: see agent/telemetry.h. Rounds (a sample on a worker thread per
 * tick, ingested on the loop), the timer and the object's life; rates.c,
 * message.c and prometheus.c do the rest. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "agent/telemetry/telemetry-private.h"

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
            d->has_sizes = prev->has_sizes;
            d->root_gb = prev->root_gb;
            d->ephemeral_gb = prev->ephemeral_gb;
        } else if (t->cb.lookup && t->cb.lookup(t->opaque, doms[i].uuid, d->ec2_id, d->name,
                                                sizeof(d->name)) == 0) {
            d->known = true;
            d->has_sizes = t->cb.sizes &&
                           t->cb.sizes(t->opaque, doms[i].uuid, &d->root_gb, &d->ephemeral_gb) == 0;
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
        if (telemetry_domain_rates(d, prev, dt) < 0) {
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
        t->host_cpu_percent = t->has_host ? telemetry_host_cpu_percent(&t->host, host) : NAN;
        t->host = *host;
        t->has_host = true;
    }
    t->round_mono_ns = mono_ns;
    t->round_wall_ms = wall_ms;
    t->stats.rounds++;
    t->stats.domains = k;
    t->stats.last_round_ms = wall_ms;
    telemetry_publish_round(t);
    return 0;
}

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

/* On the hypervisor layer's threads (hv_submit): a hung libvirtd holds one
 * of those, never a slot of libuv's pool that image pulls share. */
static void sample_work(struct hv *hv, void *arg)
{
    struct telemetry *t = arg;
    uint64_t t0 = now_mono_ns();

    (void)hv;
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

static void sample_done(struct hv *hv, void *arg, int status)
{
    struct telemetry *t = arg;
    int r = t->job.rc;

    (void)hv;
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
    r = hv_submit(t->hv, sample_work, sample_done, t);
    if (r < 0) {
        struct agent_error e;
        agent_error_set(&e, -r, "internal", NULL, "cannot queue the sample: %s", strerror(-r));
        t->stats.round_errors++;
        if (t->cb.on_round)
            t->cb.on_round(t->opaque, r, &e);
        return;
    }
    t->busy = true;
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
    t->exporter_names = cfg->libvirt_exporter_names;
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
