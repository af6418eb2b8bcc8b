/* stats.h: bulk statistics of every domain in one libvirt call, plus the
 * host's CPU, memory and file system figures, copied out of libvirt into
 * plain structs the telemetry module turns into samples and rates.
 *
 * Threads: hv_all_domain_stats() and hv_host_stats() call libvirt and block:
 * worker threads only. hv_fs_stats() is a statvfs() (may block on a dead
 * NFS mount): worker threads too. */
#ifndef CA_AGENT_HV_STATS_H
#define CA_AGENT_HV_STATS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "agent/hypervisor/hv.h"

struct _virTypedParameter; /* libvirt's virTypedParameter */

struct hv_block_stats {
    char name[32];      /* target device ("vda") */
    bool has_rd_bytes, has_wr_bytes, has_rd_reqs, has_wr_reqs;
    uint64_t rd_bytes;  /* cumulative since the domain started */
    uint64_t wr_bytes;
    uint64_t rd_reqs;
    uint64_t wr_reqs;
    bool has_capacity, has_allocation, has_physical;
    uint64_t capacity;   /* bytes the guest sees (block.N.capacity) */
    uint64_t allocation; /* bytes written in the image (block.N.allocation) */
    uint64_t physical;   /* bytes the image takes on the host (block.N.physical) */
    char path[1024];     /* source file ("" for none or network disks) */
};

struct hv_net_stats {
    char name[32];      /* host-side device ("vnet3") */
    bool has_rx_bytes, has_tx_bytes, has_rx_pkts, has_tx_pkts;
    uint64_t rx_bytes;  /* cumulative, guest's receive side */
    uint64_t tx_bytes;
    uint64_t rx_pkts;
    uint64_t tx_pkts;
    bool has_rx_errs, has_rx_drop, has_tx_errs, has_tx_drop;
    uint64_t rx_errs, rx_drop, tx_errs, tx_drop;
};

/* One domain's figures. Counters are cumulative and restart from zero when
 * the domain restarts (its id changes). has_* says whether libvirt reported
 * the value (libvirt 9.0's test driver fills only the state group). */
struct hv_stats {
    char uuid[37];
    char name[128];
    int id;                     /* libvirt domain id, -1 when inactive */
    enum hv_power power;
    bool has_power;
    int state;                  /* state.state: libvirt's virDomainState number */
    bool has_cpu_time;
    uint64_t cpu_time_ns;       /* cpu.time */
    bool has_vcpus;
    unsigned vcpus;             /* vcpu.current */
    size_t n_vcpu;              /* entries in vcpu_time_ns (vcpu.maximum) */
    uint64_t *vcpu_time_ns;     /* vcpu.N.time, owned */
    bool *vcpu_has_time;        /* whether vcpu.N.time was reported, owned */
    bool has_balloon_current, has_balloon_rss, has_balloon_available, has_balloon_unused;
    uint64_t balloon_current_kb;   /* balloon.current: memory the guest has */
    uint64_t balloon_rss_kb;       /* balloon.rss: resident set of the QEMU process */
    uint64_t balloon_available_kb; /* balloon.available: as the guest sees it */
    uint64_t balloon_unused_kb;    /* balloon.unused: free inside the guest */
    bool has_balloon_maximum, has_balloon_swap_in, has_balloon_swap_out;
    uint64_t balloon_maximum_kb;   /* balloon.maximum: the most it may have */
    uint64_t balloon_swap_in_kb;   /* balloon.swap_in: swapped in, cumulative */
    uint64_t balloon_swap_out_kb;  /* balloon.swap_out: swapped out, cumulative */
    size_t n_block;
    struct hv_block_stats *block; /* owned */
    size_t n_net;
    struct hv_net_stats *net;     /* owned */
};

/* Release what one struct hv_stats owns (not the struct itself); leaves it
 * zeroed. Accepts a zeroed struct. */
void hv_stats_release(struct hv_stats *s);
/* Release an array from hv_all_domain_stats(). Accepts NULL. */
void hv_stats_free(struct hv_stats *s, size_t n);

/* One virConnectGetAllDomainStats() call for every domain (groups state,
 * cpu, balloon, vcpu, block, interface; NOWAIT so a domain stuck in a job
 * reports what it can without blocking the call). On success *ret is an
 * array of *n entries owned by the caller (hv_stats_free()); on failure
 * returns -errno, fills err and leaves *ret and *n untouched. Worker thread. */
int hv_all_domain_stats(struct hv *hv, struct hv_stats **ret, size_t *n, struct agent_error *err);

/* Parse libvirt's typed parameters of one domain record into *out (which
 * must be zeroed; identity fields are left to the caller). Returns 0 or
 * -ENOMEM (then *out is released). Exposed for tests. */
int hv_stats_from_params(const struct _virTypedParameter *params, int nparams, struct hv_stats *out);

struct hv_host_stats {
    bool has_cpu;
    unsigned cpus;           /* online logical CPUs */
    uint64_t cpu_user_ns;    /* cumulative, all CPUs together */
    uint64_t cpu_kernel_ns;
    uint64_t cpu_idle_ns;
    uint64_t cpu_iowait_ns;
    bool has_memory;
    uint64_t mem_total_kb;
    uint64_t mem_free_kb;
    uint64_t mem_buffers_kb;
    uint64_t mem_cached_kb;
};

/* The host memory figure the agent uses everywhere (Placement MEMORY_MB,
 * GET /v1/host, /metrics' compute_agent_host_memory_total_bytes), from the
 * hypervisor's node figure (virNodeGetInfo, KiB): the smaller of it and
 * /proc/meminfo's MemTotal (the node figure alone when /proc says nothing).
 * Why: see stats.c. Any thread. */
uint64_t hv_memory_total_kb(uint64_t node_kb);

/* The host's CPU times and memory: virNodeGetCPUStats() and
 * virNodeGetMemoryStats() when the connection offers them, else /proc/stat
 * and /proc/meminfo. Fills what it can (has_*); returns 0, or -errno when
 * neither source gave anything (err says why). Worker thread. */
int hv_host_stats(struct hv *hv, struct hv_host_stats *ret, struct agent_error *err);

struct hv_fs_stats {
    uint64_t size_bytes;  /* file system size */
    uint64_t free_bytes;  /* free, root's reserve included */
    uint64_t avail_bytes; /* free for unprivileged users */
};

/* statvfs() of the file system holding path. 0 or -errno. Worker thread. */
int hv_fs_stats(const char *path, struct hv_fs_stats *ret);

#endif
