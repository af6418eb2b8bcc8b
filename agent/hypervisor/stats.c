/* stats.c: see stats.h. */
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>

#include "agent/hypervisor/hv-internal.h"
#include "agent/hypervisor/stats.h"

/* Upper bounds on what we believe from libvirt (a corrupt count must not
 * make us allocate gigabytes). */
#define MAX_DEVICES 4096
#define MAX_VCPUS 4096

void hv_stats_release(struct hv_stats *s)
{
    free(s->vcpu_time_ns);
    free(s->vcpu_has_time);
    free(s->block);
    free(s->net);
    memset(s, 0, sizeof(*s));
}

void hv_stats_free(struct hv_stats *s, size_t n)
{
    if (!s)
        return;
    for (size_t i = 0; i < n; i++)
        hv_stats_release(&s[i]);
    free(s);
}

/* A numeric typed parameter as uint64; false for strings, booleans and
 * negative values. */
static bool param_u64(const virTypedParameter *p, uint64_t *v)
{
    switch (p->type) {
    case VIR_TYPED_PARAM_ULLONG:
        *v = p->value.ul;
        return true;
    case VIR_TYPED_PARAM_UINT:
        *v = p->value.ui;
        return true;
    case VIR_TYPED_PARAM_LLONG:
        if (p->value.l < 0)
            return false;
        *v = (uint64_t)p->value.l;
        return true;
    case VIR_TYPED_PARAM_INT:
        if (p->value.i < 0)
            return false;
        *v = (uint64_t)p->value.i;
        return true;
    default:
        return false;
    }
}

/* "<prefix><N>.<rest>" -> N and rest; false if field is not like that. */
static bool indexed(const char *field, const char *prefix, size_t *idx, const char **rest)
{
    size_t pl = strlen(prefix);
    const char *s = field + pl;
    size_t n = 0;

    if (strncmp(field, prefix, pl) != 0 || *s < '0' || *s > '9')
        return false;
    for (; *s >= '0' && *s <= '9'; s++) {
        n = n * 10 + (size_t)(*s - '0');
        if (n > MAX_DEVICES * 16)
            return false;
    }
    if (*s != '.')
        return false;
    *idx = n;
    *rest = s + 1;
    return true;
}

/* First pass: the counts that size the arrays. */
static void count_params(const virTypedParameter *params, int nparams, size_t *nvcpu,
                         size_t *nblock, size_t *nnet)
{
    *nvcpu = *nblock = *nnet = 0;
    for (int i = 0; i < nparams; i++) {
        const virTypedParameter *p = &params[i];
        uint64_t v;
        size_t idx;
        const char *rest;

        if (!param_u64(p, &v) && p->type != VIR_TYPED_PARAM_STRING)
            continue;
        if (p->type != VIR_TYPED_PARAM_STRING) {
            if (!strcmp(p->field, "vcpu.maximum") && v <= MAX_VCPUS && v > *nvcpu)
                *nvcpu = (size_t)v;
            else if (!strcmp(p->field, "block.count") && v <= MAX_DEVICES)
                *nblock = (size_t)v;
            else if (!strcmp(p->field, "net.count") && v <= MAX_DEVICES)
                *nnet = (size_t)v;
        }
        /* Indices beyond the announced counts (should not happen) widen them. */
        if (indexed(p->field, "vcpu.", &idx, &rest) && idx < MAX_VCPUS && idx >= *nvcpu)
            *nvcpu = idx + 1;
        else if (indexed(p->field, "block.", &idx, &rest) && idx < MAX_DEVICES && idx >= *nblock)
            *nblock = idx + 1;
        else if (indexed(p->field, "net.", &idx, &rest) && idx < MAX_DEVICES && idx >= *nnet)
            *nnet = idx + 1;
    }
}

static void fill_block(struct hv_block_stats *b, const char *rest, const virTypedParameter *p)
{
    uint64_t v;

    if (!strcmp(rest, "name")) {
        if (p->type == VIR_TYPED_PARAM_STRING && p->value.s)
            strscpy(b->name, p->value.s, sizeof(b->name));
        return;
    }
    if (!strcmp(rest, "path")) {
        if (p->type == VIR_TYPED_PARAM_STRING && p->value.s)
            strscpy(b->path, p->value.s, sizeof(b->path));
        return;
    }
    if (!param_u64(p, &v))
        return;
    if (!strcmp(rest, "rd.bytes")) {
        b->rd_bytes = v;
        b->has_rd_bytes = true;
    } else if (!strcmp(rest, "wr.bytes")) {
        b->wr_bytes = v;
        b->has_wr_bytes = true;
    } else if (!strcmp(rest, "rd.reqs")) {
        b->rd_reqs = v;
        b->has_rd_reqs = true;
    } else if (!strcmp(rest, "wr.reqs")) {
        b->wr_reqs = v;
        b->has_wr_reqs = true;
    } else if (!strcmp(rest, "capacity")) {
        b->capacity = v;
        b->has_capacity = true;
    } else if (!strcmp(rest, "allocation")) {
        b->allocation = v;
        b->has_allocation = true;
    } else if (!strcmp(rest, "physical")) {
        b->physical = v;
        b->has_physical = true;
    }
}

static void fill_net(struct hv_net_stats *n, const char *rest, const virTypedParameter *p)
{
    uint64_t v;

    if (!strcmp(rest, "name")) {
        if (p->type == VIR_TYPED_PARAM_STRING && p->value.s)
            strscpy(n->name, p->value.s, sizeof(n->name));
        return;
    }
    if (!param_u64(p, &v))
        return;
    if (!strcmp(rest, "rx.bytes")) {
        n->rx_bytes = v;
        n->has_rx_bytes = true;
    } else if (!strcmp(rest, "tx.bytes")) {
        n->tx_bytes = v;
        n->has_tx_bytes = true;
    } else if (!strcmp(rest, "rx.pkts")) {
        n->rx_pkts = v;
        n->has_rx_pkts = true;
    } else if (!strcmp(rest, "tx.pkts")) {
        n->tx_pkts = v;
        n->has_tx_pkts = true;
    } else if (!strcmp(rest, "rx.errs")) {
        n->rx_errs = v;
        n->has_rx_errs = true;
    } else if (!strcmp(rest, "rx.drop")) {
        n->rx_drop = v;
        n->has_rx_drop = true;
    } else if (!strcmp(rest, "tx.errs")) {
        n->tx_errs = v;
        n->has_tx_errs = true;
    } else if (!strcmp(rest, "tx.drop")) {
        n->tx_drop = v;
        n->has_tx_drop = true;
    }
}

static void fill_scalar(struct hv_stats *s, const virTypedParameter *p)
{
    uint64_t v;

    if (!param_u64(p, &v))
        return;
    if (!strcmp(p->field, "state.state")) {
        s->power = hv_power_from_libvirt((int)v);
        s->state = v > 16 ? 0 : (int)v;
        s->has_power = true;
    } else if (!strcmp(p->field, "cpu.time")) {
        s->cpu_time_ns = v;
        s->has_cpu_time = true;
    } else if (!strcmp(p->field, "vcpu.current")) {
        s->vcpus = v > MAX_VCPUS ? MAX_VCPUS : (unsigned)v;
        s->has_vcpus = true;
    } else if (!strcmp(p->field, "balloon.current")) {
        s->balloon_current_kb = v;
        s->has_balloon_current = true;
    } else if (!strcmp(p->field, "balloon.rss")) {
        s->balloon_rss_kb = v;
        s->has_balloon_rss = true;
    } else if (!strcmp(p->field, "balloon.available")) {
        s->balloon_available_kb = v;
        s->has_balloon_available = true;
    } else if (!strcmp(p->field, "balloon.unused")) {
        s->balloon_unused_kb = v;
        s->has_balloon_unused = true;
    } else if (!strcmp(p->field, "balloon.maximum")) {
        s->balloon_maximum_kb = v;
        s->has_balloon_maximum = true;
    } else if (!strcmp(p->field, "balloon.swap_in")) {
        s->balloon_swap_in_kb = v;
        s->has_balloon_swap_in = true;
    } else if (!strcmp(p->field, "balloon.swap_out")) {
        s->balloon_swap_out_kb = v;
        s->has_balloon_swap_out = true;
    }
}

int hv_stats_from_params(const virTypedParameter *params, int nparams, struct hv_stats *out)
{
    size_t nvcpu, nblock, nnet;

    count_params(params, nparams, &nvcpu, &nblock, &nnet);
    if (nvcpu) {
        out->vcpu_time_ns = calloc(nvcpu, sizeof(*out->vcpu_time_ns));
        out->vcpu_has_time = calloc(nvcpu, sizeof(*out->vcpu_has_time));
    }
    if (nblock)
        out->block = calloc(nblock, sizeof(*out->block));
    if (nnet)
        out->net = calloc(nnet, sizeof(*out->net));
    if ((nvcpu && (!out->vcpu_time_ns || !out->vcpu_has_time)) || (nblock && !out->block) ||
        (nnet && !out->net)) {
        hv_stats_release(out);
        return -ENOMEM;
    }
    out->n_vcpu = nvcpu;
    out->n_block = nblock;
    out->n_net = nnet;

    for (int i = 0; i < nparams; i++) {
        const virTypedParameter *p = &params[i];
        size_t idx;
        const char *rest;
        uint64_t v;

        if (indexed(p->field, "block.", &idx, &rest)) {
            if (idx < nblock)
                fill_block(&out->block[idx], rest, p);
        } else if (indexed(p->field, "net.", &idx, &rest)) {
            if (idx < nnet)
                fill_net(&out->net[idx], rest, p);
        } else if (indexed(p->field, "vcpu.", &idx, &rest)) {
            if (idx < nvcpu && !strcmp(rest, "time") && param_u64(p, &v)) {
                out->vcpu_time_ns[idx] = v;
                out->vcpu_has_time[idx] = true;
            }
        } else {
            fill_scalar(out, p);
        }
    }
    return 0;
}

int hv_all_domain_stats(struct hv *hv, struct hv_stats **ret, size_t *n, struct agent_error *err)
{
    const unsigned int groups = VIR_DOMAIN_STATS_STATE | VIR_DOMAIN_STATS_CPU_TOTAL |
                                VIR_DOMAIN_STATS_BALLOON | VIR_DOMAIN_STATS_VCPU |
                                VIR_DOMAIN_STATS_BLOCK | VIR_DOMAIN_STATS_INTERFACE;
    virConnectPtr conn;
    virDomainStatsRecordPtr *recs = NULL;
    struct hv_stats *out;
    int nrec, r;

    r = hv_conn_get(hv, &conn, err);
    if (r < 0)
        return r;
    nrec = virConnectGetAllDomainStats(conn, groups, &recs,
                                       VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT);
    if (nrec < 0) {
        r = hv_libvirt_error(err, "cannot read the domains' statistics");
        virConnectClose(conn);
        return r;
    }
    out = calloc(nrec ? (size_t)nrec : 1, sizeof(*out));
    if (!out) {
        r = agent_error_set(err, ENOMEM, "internal", NULL, "out of memory");
        goto free_recs;
    }
    for (int i = 0; i < nrec; i++) {
        struct hv_stats *s = &out[i];

        r = hv_stats_from_params(recs[i]->params, recs[i]->nparams, s);
        if (r < 0) {
            hv_stats_free(out, (size_t)i);
            agent_error_set(err, -r, "internal", NULL, "out of memory");
            goto free_recs;
        }
        /* These read the domain object's cached fields: no RPC. */
        if (virDomainGetUUIDString(recs[i]->dom, s->uuid) < 0)
            s->uuid[0] = '\0';
        strscpy(s->name, virDomainGetName(recs[i]->dom) ? virDomainGetName(recs[i]->dom) : "",
                sizeof(s->name));
        s->id = (int)virDomainGetID(recs[i]->dom);
    }
    virResetLastError();
    *ret = out;
    *n = (size_t)nrec;
    r = 0;
free_recs:
    virDomainStatsRecordListFree(recs);
    virConnectClose(conn);
    return r;
}

/* ---- host ---- */

static int host_cpu_libvirt(virConnectPtr conn, struct hv_host_stats *h)
{
    int nparams = 0;
    virNodeCPUStatsPtr params;
    int cpus;

    if (virNodeGetCPUStats(conn, VIR_NODE_CPU_STATS_ALL_CPUS, NULL, &nparams, 0) < 0 ||
        nparams <= 0 || nparams > 64)
        return -ENOTSUP;
    params = calloc((size_t)nparams, sizeof(*params));
    if (!params)
        return -ENOMEM;
    if (virNodeGetCPUStats(conn, VIR_NODE_CPU_STATS_ALL_CPUS, params, &nparams, 0) < 0) {
        free(params);
        return -ENOTSUP;
    }
    for (int i = 0; i < nparams; i++) {
        if (!strcmp(params[i].field, VIR_NODE_CPU_STATS_USER))
            h->cpu_user_ns = params[i].value;
        else if (!strcmp(params[i].field, VIR_NODE_CPU_STATS_KERNEL))
            h->cpu_kernel_ns = params[i].value;
        else if (!strcmp(params[i].field, VIR_NODE_CPU_STATS_IDLE))
            h->cpu_idle_ns = params[i].value;
        else if (!strcmp(params[i].field, VIR_NODE_CPU_STATS_IOWAIT))
            h->cpu_iowait_ns = params[i].value;
    }
    free(params);
    cpus = virNodeGetCPUMap(conn, NULL, NULL, 0);
    h->cpus = cpus > 0 ? (unsigned)cpus : 0;
    h->has_cpu = true;
    return 0;
}

static int host_mem_libvirt(virConnectPtr conn, struct hv_host_stats *h)
{
    int nparams = 0;
    virNodeMemoryStatsPtr params;

    if (virNodeGetMemoryStats(conn, VIR_NODE_MEMORY_STATS_ALL_CELLS, NULL, &nparams, 0) < 0 ||
        nparams <= 0 || nparams > 64)
        return -ENOTSUP;
    params = calloc((size_t)nparams, sizeof(*params));
    if (!params)
        return -ENOMEM;
    if (virNodeGetMemoryStats(conn, VIR_NODE_MEMORY_STATS_ALL_CELLS, params, &nparams, 0) < 0) {
        free(params);
        return -ENOTSUP;
    }
    for (int i = 0; i < nparams; i++) {
        if (!strcmp(params[i].field, VIR_NODE_MEMORY_STATS_TOTAL))
            h->mem_total_kb = params[i].value;
        else if (!strcmp(params[i].field, VIR_NODE_MEMORY_STATS_FREE))
            h->mem_free_kb = params[i].value;
        else if (!strcmp(params[i].field, VIR_NODE_MEMORY_STATS_BUFFERS))
            h->mem_buffers_kb = params[i].value;
        else if (!strcmp(params[i].field, VIR_NODE_MEMORY_STATS_CACHED))
            h->mem_cached_kb = params[i].value;
    }
    free(params);
    h->has_memory = h->mem_total_kb > 0;
    return h->has_memory ? 0 : -ENOTSUP;
}

/* /proc/stat's aggregate "cpu" line, in USER_HZ ticks. */
static int host_cpu_proc(struct hv_host_stats *h)
{
    _cleanup_fclose_ FILE *f = fopen("/proc/stat", "re");
    char line[512];
    unsigned long long user, nice, sys, idle, iowait, irq, softirq, steal;
    long hz = sysconf(_SC_CLK_TCK);
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    uint64_t ns;

    if (!f || hz <= 0)
        return -errno ? -errno : -EIO;
    if (!fgets(line, sizeof(line), f) ||
        sscanf(line, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &user, &nice, &sys, &idle,
               &iowait, &irq, &softirq, &steal) != 8)
        return -EIO;
    ns = 1000000000ull / (uint64_t)hz;
    h->cpu_user_ns = (user + nice) * ns;
    h->cpu_kernel_ns = (sys + irq + softirq + steal) * ns;
    h->cpu_idle_ns = idle * ns;
    h->cpu_iowait_ns = iowait * ns;
    h->cpus = ncpu > 0 ? (unsigned)ncpu : 0;
    h->has_cpu = true;
    return 0;
}

static int host_mem_proc(struct hv_host_stats *h)
{
    _cleanup_fclose_ FILE *f = fopen("/proc/meminfo", "re");
    char line[256];

    if (!f)
        return -errno;
    while (fgets(line, sizeof(line), f)) {
        char key[64];
        unsigned long long v;

        if (sscanf(line, "%63[^:]: %llu", key, &v) != 2)
            continue;
        if (!strcmp(key, "MemTotal"))
            h->mem_total_kb = v;
        else if (!strcmp(key, "MemFree"))
            h->mem_free_kb = v;
        else if (!strcmp(key, "Buffers"))
            h->mem_buffers_kb = v;
        else if (!strcmp(key, "Cached"))
            h->mem_cached_kb = v;
    }
    h->has_memory = h->mem_total_kb > 0;
    return h->has_memory ? 0 : -EIO;
}

/* One memory figure. libvirt's node figure (virNodeGetInfo) sums the NUMA
 * cells' sysfs meminfo; /proc/meminfo's MemTotal is the kernel's count of
 * the RAM it manages, and virNodeGetMemoryStats(ALL_CELLS) reads that same
 * file. On these machines the two differ by GiBs (a sandboxed kernel
 * reports 24 GB in /proc and one 7 GB NUMA node; the test driver reports a
 * 3 GiB fake node). Guests are placed by libvirt on its NUMA cells and take
 * their pages from the kernel, so memory one of the two does not have is
 * not there to offer: the smaller one is the honest figure (never
 * over-promising to a scheduler), and it is the one used for Placement,
 * the API and the metrics alike. */
uint64_t hv_memory_total_kb(uint64_t node_kb)
{
    struct hv_host_stats h = {0};

    if (host_mem_proc(&h) < 0 || !h.mem_total_kb)
        return node_kb;
    if (!node_kb)
        return h.mem_total_kb;
    return node_kb < h.mem_total_kb ? node_kb : h.mem_total_kb;
}

int hv_host_stats(struct hv *hv, struct hv_host_stats *ret, struct agent_error *err)
{
    struct hv_host_stats h = {0};
    virConnectPtr conn = NULL;
    virNodeInfo node;
    uint64_t node_kb = 0;

    if (hv && hv_conn_get(hv, &conn, NULL) == 0) {
        if (host_cpu_libvirt(conn, &h) < 0)
            memset(&h, 0, sizeof(h));
        if (host_mem_libvirt(conn, &h) < 0)
            h.mem_total_kb = h.mem_free_kb = h.mem_buffers_kb = h.mem_cached_kb = 0;
        virResetLastError();
        if (virNodeGetInfo(conn, &node) == 0)
            node_kb = node.memory;
        virResetLastError();
        virConnectClose(conn);
    }
    if (!h.has_cpu)
        host_cpu_proc(&h);
    if (!h.has_memory)
        host_mem_proc(&h);
    if (h.has_memory) {
        /* the one figure (hv_memory_total_kb): free/buffers/cached no larger */
        uint64_t total = hv_memory_total_kb(node_kb);
        if (total && total < h.mem_total_kb) {
            h.mem_total_kb = total;
            uint64_t left = total;
            h.mem_free_kb = h.mem_free_kb < left ? h.mem_free_kb : left;
            left -= h.mem_free_kb;
            h.mem_buffers_kb = h.mem_buffers_kb < left ? h.mem_buffers_kb : left;
            left -= h.mem_buffers_kb;
            h.mem_cached_kb = h.mem_cached_kb < left ? h.mem_cached_kb : left;
        }
    }
    if (!h.has_cpu && !h.has_memory)
        return agent_error_set(err, EIO, "internal", NULL,
                               "neither libvirt nor /proc gave the host's CPU or memory figures");
    *ret = h;
    return 0;
}

int hv_fs_stats(const char *path, struct hv_fs_stats *ret)
{
    struct statvfs st;

    if (statvfs(path, &st) < 0)
        return -errno;
    ret->size_bytes = (uint64_t)st.f_blocks * st.f_frsize;
    ret->free_bytes = (uint64_t)st.f_bfree * st.f_frsize;
    ret->avail_bytes = (uint64_t)st.f_bavail * st.f_frsize;
    return 0;
}
