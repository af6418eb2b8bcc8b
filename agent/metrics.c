/* metrics.c: see metrics.h. */
#include <stdlib.h>
#include <string.h>
#include <inttypes.h>

#include "agent/bus.h"
#include "agent/metrics.h"
#include "common/prom.h"
#include "common/util.h"

#ifndef CA_VERSION
#define CA_VERSION "dev"
#endif

#define MAX_SERIES 64

/* Upper bounds (seconds) of the duration buckets; +Inf is implied. */
static const double op_bounds[] = {0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300};
static const double sync_bounds[] = {0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};
#define NB_OP ARRAY_SIZE(op_bounds)
#define NB_SYNC ARRAY_SIZE(sync_bounds)

struct histogram {
    uint64_t buckets[16]; /* non-cumulative counts per bucket; [nb] is +Inf */
    uint64_t count;
    double sum;
};

struct op_series {
    char type[24];
    char result[16];
    struct histogram h;
};

struct sync_series {
    char result[16];
    struct histogram h;
};

struct metrics {
    int64_t started_ms;               /* when the registry was made */
    struct op_series ops[MAX_SERIES]; /* by (type, result), in order of first sight */
    size_t n_ops;
    struct sync_series syncs[8];      /* Placement syncs by result */
    size_t n_syncs;
    int64_t last_sync_ok_ms;          /* last successful sync, 0 if none */
    uint64_t img_hits, img_misses, img_fetched_bytes, img_size_bytes;
    bool has_bus;
    struct bus_stats bus;             /* last snapshot */
    uint64_t bus_errors, bus_fatal_errors;
    bool libvirt_up;                  /* metrics_set_up() */
    int placement_up;                 /* 1, 0, -1: none configured */
    uint64_t alloc_missing;           /* issue 11: instances found without an allocation */
    uint64_t alloc_removed, alloc_written, alloc_refused; /* allocation work done */
};

int metrics_new(struct metrics **ret)
{
    struct metrics *m = calloc(1, sizeof(*m));

    if (!m)
        return -ENOMEM;
    m->started_ms = now_wall_ms();
    m->placement_up = -1;
    *ret = m;
    return 0;
}

struct metrics *metrics_free(struct metrics *m)
{
    free(m);
    return NULL;
}

/* Keep label values to a safe alphabet: anything else becomes '_' (it also keeps
 * the series few; common/prom.c escapes on output, a no-op on this alphabet). */
static void label_copy(char *dst, size_t size, const char *src)
{
    size_t i = 0;

    for (; src && src[i] && i + 1 < size; i++) {
        char c = src[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '_' || c == '-' || c == '.';
        dst[i] = ok ? c : '_';
    }
    dst[i] = '\0';
    if (!i)
        strscpy(dst, "unknown", size);
}

static void observe(struct histogram *h, const double *bounds, size_t nb, double v)
{
    size_t i = 0;

    if (!(v >= 0)) /* NaN or negative: count it as 0 */
        v = 0;
    while (i < nb && v > bounds[i])
        i++;
    h->buckets[i]++;
    h->count++;
    h->sum += v;
}

void metrics_op_finished(struct metrics *m, const char *type, const char *result, double seconds)
{
    char t[24], r[16];
    struct op_series *s = NULL;

    label_copy(t, sizeof(t), type);
    label_copy(r, sizeof(r), result);
    for (int pass = 0; pass < 2 && !s; pass++) {
        for (size_t i = 0; i < m->n_ops; i++)
            if (!strcmp(m->ops[i].type, t) && !strcmp(m->ops[i].result, r))
                s = &m->ops[i];
        if (s)
            break;
        if (m->n_ops < MAX_SERIES - 1 || (m->n_ops < MAX_SERIES && !strcmp(t, "other"))) {
            s = &m->ops[m->n_ops++];
            strscpy(s->type, t, sizeof(s->type));
            strscpy(s->result, r, sizeof(s->result));
        } else {
            strscpy(t, "other", sizeof(t)); /* the last slot is kept for "other" */
        }
    }
    if (s)
        observe(&s->h, op_bounds, NB_OP, seconds);
}

void metrics_imgcache_hit(struct metrics *m) { m->img_hits++; }
void metrics_imgcache_miss(struct metrics *m) { m->img_misses++; }
void metrics_imgcache_fetched(struct metrics *m, uint64_t bytes) { m->img_fetched_bytes += bytes; }
void metrics_imgcache_set_size(struct metrics *m, uint64_t bytes) { m->img_size_bytes = bytes; }

void metrics_bus_update(struct metrics *m, const struct bus_stats *s)
{
    m->bus = *s;
    m->has_bus = true;
}

void metrics_bus_error(struct metrics *m, bool fatal)
{
    m->bus_errors++;
    if (fatal)
        m->bus_fatal_errors++;
}

void metrics_placement_sync(struct metrics *m, const char *result, double seconds)
{
    char r[16];
    struct sync_series *s = NULL;

    label_copy(r, sizeof(r), result);
    for (size_t i = 0; i < m->n_syncs && !s; i++)
        if (!strcmp(m->syncs[i].result, r))
            s = &m->syncs[i];
    if (!s) {
        if (m->n_syncs == ARRAY_SIZE(m->syncs))
            s = &m->syncs[m->n_syncs - 1]; /* more than 8 kinds: fold into the last */
        else
            s = &m->syncs[m->n_syncs++];
        strscpy(s->result, r, sizeof(s->result));
    }
    observe(&s->h, sync_bounds, NB_SYNC, seconds);
    if (!strcmp(r, "ok"))
        m->last_sync_ok_ms = now_wall_ms();
}

void metrics_set_up(struct metrics *m, bool libvirt_up, int placement_up)
{
    m->libvirt_up = libvirt_up;
    m->placement_up = placement_up < 0 ? -1 : placement_up > 0;
}

void metrics_placement_allocation(struct metrics *m, const char *what)
{
    if (!m)
        return;
    if (!strcmp(what, "missing"))
        m->alloc_missing++;
    else if (!strcmp(what, "removed"))
        m->alloc_removed++;
    else if (!strcmp(what, "written"))
        m->alloc_written++;
    else
        m->alloc_refused++;
}

/* ---- rendering (on common/prom.c) ---- */

static void counter(FILE *f, const char *name, const char *help, uint64_t v)
{
    prom_family(f, name, "counter", help);
    prom_series(f, name, NULL, 0);
    prom_u64(f, v);
}

static void gauge(FILE *f, const char *name, const char *help, double v)
{
    prom_family(f, name, "gauge", help);
    prom_series(f, name, NULL, 0);
    prom_double(f, v);
}

static void render_ops(FILE *f, const struct metrics *m)
{
    static const char *const dur = "compute_agent_operation_duration_seconds";

    prom_family(f, "compute_agent_operations_total", "counter",
                "operations finished, by type and result");
    for (size_t i = 0; i < m->n_ops; i++) {
        const struct prom_label l[] = {{"type", m->ops[i].type}, {"result", m->ops[i].result}};
        prom_series(f, "compute_agent_operations_total", l, ARRAY_SIZE(l));
        prom_u64(f, m->ops[i].h.count);
    }
    prom_family(f, dur, "histogram",
                "time from an operation's acceptance to its end, by type and result");
    for (size_t i = 0; i < m->n_ops; i++) {
        const struct prom_label l[] = {{"type", m->ops[i].type}, {"result", m->ops[i].result}};
        const struct histogram *h = &m->ops[i].h;
        prom_histogram(f, dur, l, ARRAY_SIZE(l), op_bounds, NB_OP, h->buckets, h->sum, h->count);
    }
}

static void render_placement(FILE *f, const struct metrics *m)
{
    static const char *const dur = "compute_agent_placement_sync_duration_seconds";

    prom_family(f, "compute_agent_placement_syncs_total", "counter",
                "Placement inventory syncs, by result");
    for (size_t i = 0; i < m->n_syncs; i++) {
        const struct prom_label l[] = {{"result", m->syncs[i].result}};
        prom_series(f, "compute_agent_placement_syncs_total", l, ARRAY_SIZE(l));
        prom_u64(f, m->syncs[i].h.count);
    }
    prom_family(f, dur, "histogram", "time a Placement sync took, by result");
    for (size_t i = 0; i < m->n_syncs; i++) {
        const struct prom_label l[] = {{"result", m->syncs[i].result}};
        const struct histogram *h = &m->syncs[i].h;
        prom_histogram(f, dur, l, ARRAY_SIZE(l), sync_bounds, NB_SYNC, h->buckets, h->sum,
                       h->count);
    }
    gauge(f, "compute_agent_placement_last_success_timestamp_seconds",
          "when the last Placement sync succeeded (Unix time, 0 if never)",
          (double)m->last_sync_ok_ms / 1000.0);
    counter(f, "compute_agent_placement_allocations_missing_total",
            "instances found running or launching here without an allocation in Placement", m->alloc_missing);
    prom_family(f, "compute_agent_placement_allocation_changes_total", "counter",
                "allocations this agent wrote or removed in Placement, and those Placement refused");
    {
        const char *const res[] = {"written", "removed", "refused"};
        const uint64_t v[] = {m->alloc_written, m->alloc_removed, m->alloc_refused};
        for (size_t i = 0; i < 3; i++) {
            const struct prom_label l[] = {{"result", res[i]}};
            prom_series(f, "compute_agent_placement_allocation_changes_total", l, 1);
            prom_u64(f, v[i]);
        }
    }
}

static void render_bus(FILE *f, const struct metrics *m)
{
    static const char *const streams[] = {"events", "heartbeat", "telemetry"};
    const struct bus_stream_stats *st[] = {&m->bus.events, &m->bus.heartbeat, &m->bus.telemetry};
    static const struct {
        const char *name, *type, *help;
    } fams[] = {
        {"compute_agent_bus_messages_produced_total", "counter", "messages accepted into the producer's queue"},
        {"compute_agent_bus_messages_delivered_total", "counter", "messages the broker acknowledged"},
        {"compute_agent_bus_messages_failed_total", "counter", "messages whose delivery failed"},
        {"compute_agent_bus_messages_dropped_total", "counter", "messages dropped by the lossy bound (telemetry)"},
        {"compute_agent_bus_messages_queued", "gauge", "messages waiting for their outcome"},
        {"compute_agent_bus_delivery_lag_last_seconds", "gauge", "publish-to-acknowledgement time of the latest delivery"},
        {"compute_agent_bus_delivery_lag_max_seconds", "gauge", "longest publish-to-acknowledgement time seen"},
        {"compute_agent_bus_delivery_lag_avg_seconds", "gauge", "mean publish-to-acknowledgement time"},
    };

    for (size_t k = 0; k < ARRAY_SIZE(fams); k++) {
        prom_family(f, fams[k].name, fams[k].type, fams[k].help);
        for (size_t i = 0; m->has_bus && i < ARRAY_SIZE(streams); i++) {
            const struct prom_label l[] = {{"stream", streams[i]}};
            const struct bus_stream_stats *s = st[i];
            const double v[] = {(double)s->produced, (double)s->delivered, (double)s->failed,
                                (double)s->dropped, (double)s->queued, s->lag_ms_last / 1000.0,
                                s->lag_ms_max / 1000.0, bus_stream_lag_ms_avg(s) / 1000.0};
            prom_series(f, fams[k].name, l, ARRAY_SIZE(l));
            prom_double(f, v[k]);
        }
    }
    gauge(f, "compute_agent_bus_up", "whether the Kafka brokers are reachable (1) or not (0)",
          m->has_bus && m->bus.up ? 1 : 0);
    counter(f, "compute_agent_bus_commands_received_total", "commands read from the bus",
            m->bus.commands_received);
    counter(f, "compute_agent_bus_commands_oversized_total", "commands refused for their size",
            m->bus.commands_oversized);
    counter(f, "compute_agent_bus_commit_errors_total", "offset commits that failed",
            m->bus.commit_errors);
    counter(f, "compute_agent_bus_client_errors_total",
            "client-level errors librdkafka reported (connection failures included)",
            m->bus.client_errors);
    counter(f, "compute_agent_bus_errors_reported_total",
            "client-level errors the bus reported to the agent (on_error)", m->bus_errors);
    counter(f, "compute_agent_bus_fatal_errors_total",
            "fatal producer or consumer errors (the bus was rebuilt)", m->bus_fatal_errors);
}

int metrics_render_prometheus(const struct metrics *m, FILE *f)
{
    const struct prom_label version[] = {{"version", CA_VERSION}};

    prom_family(f, "compute_agent_build_info", "gauge", "the agent's version (always 1)");
    prom_series(f, "compute_agent_build_info", version, ARRAY_SIZE(version));
    prom_u64(f, 1);
    gauge(f, "compute_agent_start_time_seconds", "when the agent started (Unix time)",
          (double)m->started_ms / 1000.0);
    gauge(f, "compute_agent_libvirt_up", "whether the libvirt connection is up (1) or not (0)",
          m->libvirt_up ? 1 : 0);
    prom_family(f, "compute_agent_placement_up", "gauge",
                "whether Placement answered the last request (1) or not (0); absent without Placement");
    if (m->placement_up >= 0) {
        prom_series(f, "compute_agent_placement_up", NULL, 0);
        prom_u64(f, (uint64_t)m->placement_up);
    }
    render_ops(f, m);
    counter(f, "compute_agent_image_cache_hits_total", "image requests served from the cache",
            m->img_hits);
    counter(f, "compute_agent_image_cache_misses_total", "image requests that had to fetch",
            m->img_misses);
    counter(f, "compute_agent_image_cache_fetched_bytes_total", "bytes fetched into the cache",
            m->img_fetched_bytes);
    gauge(f, "compute_agent_image_cache_size_bytes", "the image cache's size on disk",
          (double)m->img_size_bytes);
    render_bus(f, m);
    render_placement(f, m);
    return ferror(f) ? -EIO : 0;
}
