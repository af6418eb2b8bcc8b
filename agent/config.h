/* config.h: the agent's configuration: embedded defaults, then the INI file,
 * then command-line flags. Every key is documented in etc/compute-agent.conf. */
#ifndef CA_AGENT_CONFIG_H
#define CA_AGENT_CONFIG_H

#include <stdbool.h>
#include <stdint.h>

#include "common/util.h"

/* One [network NAME] section (issue 10). Strings owned; "" where unset.
 * The figures after cidr are derived by config_finish() (host byte order). */
enum net_type { NET_BRIDGE, NET_VLAN, NET_VXLAN, NET_OVS };
#define NET_NAME_MAX 32
#define NET_DNS_MAX 4
struct net_config {
    char *name;               /* the section's NAME: [A-Za-z0-9_-], 1..NET_NAME_MAX */
    char *type;               /* bridge|vlan|vxlan|ovs (default bridge) */
    enum net_type kind;       /* type, parsed */
    char *bridge;             /* bridge device ("": cabr-NAME for vlan/vxlan) */
    char *parent;             /* vlan: the parent link; vxlan: the underlay device */
    int64_t vlan_id;          /* vlan: 1..4094 */
    int64_t vni;              /* vxlan: 1..16777215 */
    char *local, *remote, *group; /* vxlan addresses (IPv4) */
    int64_t port;             /* vxlan UDP port, 0: 4789 */
    int64_t mtu;              /* 0: leave the devices' MTU as it is */
    char *cidr;               /* guest subnet "10.0.0.0/24" ("": no allocator, IPs refused) */
    char *gateway;            /* "": none */
    char *dns;                /* comma list as written */
    bool dhcp;                /* dnsmasq on the network (agent/dhcpd.c) */
    bool metadata;            /* the metadata service listens on its bridge (default true; ovs: false) */
    bool metadata_set;        /* metadata was written in the file */
    char *ip_range;           /* "A-B" inside cidr: where allocated addresses come from ("": all) */
    /* derived */
    uint32_t net, mask;       /* cidr's network and mask (0/0 without cidr) */
    int prefix;
    uint32_t gw;              /* gateway or 0 */
    uint32_t range_lo, range_hi; /* ip_range parsed, host byte order (0/0: the whole cidr) */
    uint32_t dns_addr[NET_DNS_MAX];
    size_t n_dns;
};

struct agent_config {
    /* [agent] */
    char *state_dir;          /* SQLite store, api socket, instance dirs */
    char *log_level;          /* debug|info|warn|error */
    char *instance_types;     /* catalogue file (INI, one section per type) */
    char *host_name;          /* this host's name (default: hostname) */
    /* [hypervisor] */
    char *hypervisor;         /* kvm|qemu|xen|test */
    char *libvirt_uri;        /* empty: the driver's default */
    char *domain_type;        /* auto|kvm|qemu (kvm driver only) */
    int64_t stop_timeout;     /* seconds a graceful stop may take */
    int64_t reboot_timeout;   /* seconds a graceful reboot may take */
    /* issue 12: resize */
    bool live_resize;         /* define guests with hot-plug headroom */
    int64_t max_vcpus;        /* the headroom's vCPU ceiling, 0: auto */
    int64_t max_memory_mb;    /* its memory ceiling, 0: auto */
    int64_t resize_confirm_window; /* seconds before a resized guest is confirmed, 0: never */
    int64_t resize_live_timeout;   /* seconds a guest may take to reach a live size */
    /* [migration] (issue 13) */
    char *migration_uri;           /* libvirt URI other hosts reach this host's libvirtd by ("": none) */
    char *migration_stream_uri;    /* QEMU's incoming stream address ("": libvirt's choice) */
    int64_t migration_prepare_timeout; /* seconds a target may take to prepare */
    int64_t migration_commit_timeout;  /* seconds the target's word after the switch-over is waited for */
    int64_t migration_incoming_timeout; /* seconds a target waits for a silent source */
    int64_t migration_max_downtime;    /* ms, default max_downtime_ms */
    int64_t migration_completion_timeout; /* seconds per GiB, 0: none */
    char *migration_postcopy;      /* never|auto|always */
    int64_t migration_bandwidth;   /* MiB/s, 0: unlimited */
    int64_t reconnect_max_s;  /* cap of the libvirt reconnect backoff */
    int64_t workers;          /* libvirt worker threads (UV_THREADPOOL_SIZE) */
    char *local_image_dirs;   /* DIR[:DIR...] local guest files may come from; "": none */
    /* [api] */
    char *api_socket;         /* unix socket path (empty: <state_dir>/api.sock) */
    char *api_listen;         /* HOST:PORT for TCP, empty: no TCP */
    char *api_token;          /* bearer token required on TCP */
    char *api_token_file;     /* file holding the token (instead of api_token) */
    int64_t api_header_timeout_s;  /* seconds a connection may take to send a request head */
    int64_t api_request_timeout_s; /* seconds a whole request may take (long-polls: their wait) */
    int64_t api_per_address_limit; /* TCP connections at once from one address */
    int64_t api_max_connections;   /* connections at once per listener */
    int64_t api_events_window;       /* events kept for GET /v1/events */
    int64_t api_events_window_bytes; /* ... and their bytes at most */
    /* [resources] */
    double cpu_allocation_ratio;
    double ram_allocation_ratio;
    double disk_allocation_ratio;
    int64_t reserved_host_memory_mb;
    int64_t reserved_host_disk_gb;
    int64_t reserved_host_cpus;
    /* [store] */
    char *store_sync;         /* normal|full (SQLite synchronous in WAL mode) */
    /* [placement] */
    char *placement_url;      /* empty: no controller */
    char *placement_token;    /* X-Auth-Token (noauth2: "admin"; or a static token) */
    char *placement_auth;     /* none|token|keystone */
    char *ks_auth_url;        /* Keystone v3 */
    char *ks_username;
    char *ks_password;
    char *ks_project_name;
    char *ks_user_domain;
    char *ks_project_domain;
    char *placement_ca_bundle;
    int64_t usage_check_s;    /* usage drift check period */
    char *placement_allocations; /* scheduler|agent: who writes instances' allocations */
    char *usage_heal;         /* report|fix */
    char *placement_project_id; /* allocation owner when a launch names none */
    char *placement_user_id;
    /* [bus] */
    char *bus_brokers;        /* empty: librdkafka's in-process mock cluster */
    char *bus_prefix;         /* topic prefix */
    char *bus_properties;     /* extra librdkafka properties "k=v,k=v" */
    int64_t heartbeat_s;      /* heartbeat period */
    /* [image_cache] */
    char *imgc_dir;           /* empty: STATE_DIR/images */
    int64_t imgc_budget_mb;   /* size budget, MiB; 0: use budget_percent */
    int64_t imgc_budget_percent; /* % of the cache filesystem; 0 and 0: free space only */
    int64_t imgc_max_unused_age_s;
    int64_t imgc_max_virtual_gb;
    char *imgc_ca_bundle;
    char *glance_url;
    char *glance_token;
    int64_t imgc_max_parallel;
    int64_t imgc_stall_timeout_s;
    int64_t imgc_retries;
    char *imgc_allowed_networks; /* CIDRs allowed although refused by default (loopback, link-local) */
    /* [telemetry] */
    int64_t telemetry_interval_s;
    char *metrics_listen;     /* HOST:PORT for Prometheus scrapers, empty: none */
    bool libvirt_exporter_names; /* /metrics also as prometheus-libvirt-exporter */

    /* [metadata] */
    bool np_host_firewall;    /* [netplug] host_firewall: the agent's inet table */
    bool md_enabled;          /* serve the metadata service on each network */
    char *md_address;         /* 169.254.169.254 */
    int64_t md_port;          /* 80 */
    double md_rate;           /* requests per second per source address */
    int64_t md_burst;
    int64_t md_max_connections; /* open connections: all networks, one network, one (network, source) */
    int64_t md_max_per_network;
    int64_t md_max_per_source;
    char *md_http_tokens;     /* optional|required: the default of metadata_options */
    int64_t md_hop_limit;     /* 1..64: the default PUT response hop limit */
    char *md_product;         /* SMBIOS system product */
    char *md_manufacturer;    /* SMBIOS system manufacturer */
    char *md_availability_zone; /* default availability_zone */
    bool md_config_drive;     /* default of config_drive */
    char *md_config_drive_format; /* config-2|nocloud */
    char *md_xorriso;         /* xorriso binary (PATH searched when no slash) */
    /* [dhcp] */
    char *dhcp_dnsmasq;       /* dnsmasq program for dhcp networks */
    char *dhcp_user;          /* its --user ("": dnsmasq's default) */
    /* [network NAME] sections, in file order */
    struct net_config *networks;
    size_t n_networks;

    char *config_file;        /* the file read, if any (for SIGHUP) */
};

/* The network named name, or NULL. */
const struct net_config *config_network(const struct agent_config *cfg, const char *name);
/* IPv4 dotted quad to host byte order; 0 or -EINVAL. */
int net_parse_ipv4(const char *s, uint32_t *out);
/* Host byte order to a dotted quad in buf[16]. */
void net_format_ipv4(uint32_t a, char buf[16]);
/* ip inside n's cidr and not its network, broadcast or gateway address. */
bool net_ip_assignable(const struct net_config *n, uint32_t ip);

/* Fill cfg with embedded defaults. */
int config_init_defaults(struct agent_config *cfg);

/* Read an INI file over cfg. Unknown sections/keys and bad values are errors
 * naming "section.key" and the line; on error cfg may be partly updated, so
 * callers parse into a copy. */
int config_load_file(struct agent_config *cfg, const char *path, struct agent_error *err);

/* Set one key ("section.key") from a string. */
int config_set(struct agent_config *cfg, const char *section, const char *key,
               const char *value, struct agent_error *err);

/* Parse argv: --config first, then the file, then the other flags over it.
 * Returns 0, 1 if --help/--version was printed (exit 0), or -errno. */
int config_from_args(struct agent_config *cfg, int argc, char **argv, struct agent_error *err);

/* Check cross-key consistency and fill derived defaults (socket path...). */
int config_finish(struct agent_config *cfg, struct agent_error *err);

void config_release(struct agent_config *cfg);

/* Usage text for --help. */
void config_usage(FILE *out);

#endif
