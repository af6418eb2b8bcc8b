/* config.c: see config.h. One table describes every key once: its section,
 * name, type and place in struct agent_config; the file, flags and --help
 * all read that table. */
#include "agent/config.h"

#include <ctype.h>
#include <getopt.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent/localfile.h"
#include "agent/log.h"

/* The longest line of a configuration file, without its newline. */
#define CONFIG_LINE_MAX 4095

enum key_type { KEY_STR, KEY_INT, KEY_DOUBLE, KEY_BOOL };

struct key_desc {
    const char *section;
    const char *key;
    enum key_type type;
    size_t offset;
    const char *def;     /* embedded default as text */
    int64_t min, max;    /* integer/double bounds */
    const char *flag;    /* long option name or NULL */
    const char *help;
};

#define K(sec, k, t, field, d, lo, hi, fl, h)                                  \
    {sec, k, t, offsetof(struct agent_config, field), d, lo, hi, fl, h}

static const struct key_desc keys[] = {
    K("agent", "state_dir", KEY_STR, state_dir, "/var/lib/compute-agent", 0, 0, "state-dir", "state directory (SQLite store, socket, instance files)"),
    K("agent", "log_level", KEY_STR, log_level, "info", 0, 0, "log-level", "debug|info|warn|error"),
    K("agent", "instance_types", KEY_STR, instance_types, "", 0, 0, "instance-types", "instance-type catalogue (default: built in)"),
    K("agent", "host_name", KEY_STR, host_name, "", 0, 0, "host-name", "this host's name (default: the hostname)"),
    K("hypervisor", "driver", KEY_STR, hypervisor, "kvm", 0, 0, "hypervisor", "kvm|qemu|xen|test"),
    K("hypervisor", "libvirt_uri", KEY_STR, libvirt_uri, "", 0, 0, "libvirt-uri", "libvirt URI (default: the driver's)"),
    K("hypervisor", "domain_type", KEY_STR, domain_type, "auto", 0, 0, "domain-type", "auto|kvm|qemu: KVM acceleration or TCG emulation"),
    K("hypervisor", "stop_timeout", KEY_INT, stop_timeout, "60", 0, 3600, "stop-timeout", "seconds a graceful stop may take before it is forced"),
    K("hypervisor", "reboot_timeout", KEY_INT, reboot_timeout, "60", 0, 3600, NULL, "seconds a graceful reboot may take before a reset"),
    K("hypervisor", "live_resize", KEY_BOOL, live_resize, "true", 0, 0, NULL, "define guests with vCPU and memory hot-plug headroom, so a resize can be live"),
    K("hypervisor", "max_vcpus", KEY_INT, max_vcpus, "0", 0, 256, NULL, "vCPU ceiling of a guest's headroom (0: the largest instance type that fits the host)"),
    K("hypervisor", "max_memory_mb", KEY_INT, max_memory_mb, "0", 0, 4194304, NULL, "memory ceiling of a guest's headroom, MiB (0: the largest instance type that fits the host)"),
    K("hypervisor", "resize_confirm_window", KEY_INT, resize_confirm_window, "0", 0, 31536000, NULL, "seconds after which a resized guest is confirmed (0: never, as nova)"),
    K("migration", "libvirt_uri", KEY_STR, migration_uri, "", 0, 0, NULL, "libvirt URI other hosts' agents migrate guests to this host by, e.g. qemu+tcp://ADDRESS/system (empty: this host takes no migration)"),
    K("migration", "stream_uri", KEY_STR, migration_stream_uri, "", 0, 0, NULL, "where QEMU's migration stream comes in, e.g. tcp:ADDRESS (empty: libvirt's choice, migration_host of qemu.conf)"),
    K("migration", "prepare_timeout", KEY_INT, migration_prepare_timeout, "30", 1, 3600, NULL, "seconds a target agent may take to prepare a migration before the source gives up"),
    K("migration", "commit_timeout", KEY_INT, migration_commit_timeout, "30", 1, 3600, NULL, "seconds the source waits for the target's word once the guest switched over"),
    K("migration", "incoming_timeout", KEY_INT, migration_incoming_timeout, "3600", 10, 604800, NULL, "seconds a target waits for a silent source before the guest's place decides"),
    K("migration", "max_downtime", KEY_INT, migration_max_downtime, "500", 10, 60000, NULL, "default switch-over downtime bound, ms (max_downtime_ms)"),
    K("migration", "completion_timeout", KEY_INT, migration_completion_timeout, "800", 0, 86400, NULL, "seconds per GiB of memory and disk a live migration may take before its timeout action (0: none)"),
    K("migration", "postcopy", KEY_STR, migration_postcopy, "never", 0, 0, NULL, "never|auto|always: post-copy after the completion timeout (auto), from the start (always)"),
    K("migration", "bandwidth", KEY_INT, migration_bandwidth, "0", 0, 1048576, NULL, "migration bandwidth cap, MiB/s (0: unlimited)"),
    K("hypervisor", "resize_live_timeout", KEY_INT, resize_live_timeout, "30", 1, 3600, NULL, "seconds a guest may take to reach a live resize's size"),
    K("hypervisor", "reconnect_max_backoff", KEY_INT, reconnect_max_s, "30", 1, 3600, NULL, "cap of the libvirt reconnect backoff, seconds"),
    K("hypervisor", "workers", KEY_INT, workers, "8", 1, 128, NULL, "worker threads for blocking libvirt calls"),
    K("hypervisor", "local_image_dirs", KEY_STR, local_image_dirs, "", 0, 0, "local-image-dirs", "DIR[:DIR...] local image.path, kernel.path, kernel.initrd may come from (empty: none)"),
    K("api", "socket", KEY_STR, api_socket, "", 0, 0, "api-socket", "unix socket of the REST API (default: STATE_DIR/api.sock)"),
    K("api", "listen", KEY_STR, api_listen, "", 0, 0, "api-listen", "HOST:PORT to serve the API on TCP too (needs a token)"),
    K("api", "token", KEY_STR, api_token, "", 0, 0, "api-token", "bearer token required on TCP (16 bytes or more; prefer api.token_file)"),
    K("api", "token_file", KEY_STR, api_token_file, "", 0, 0, "api-token-file", "file holding the bearer token (one line)"),
    K("api", "header_timeout", KEY_INT, api_header_timeout_s, "5", 1, 3600, NULL, "seconds a client may take to send a request's head"),
    K("api", "request_timeout", KEY_INT, api_request_timeout_s, "30", 1, 3600, NULL, "seconds a whole request may take (a long-poll: its wait on top)"),
    K("api", "per_address_limit", KEY_INT, api_per_address_limit, "128", 1, 1000000, NULL, "TCP connections at once from one client address"),
    K("api", "max_connections", KEY_INT, api_max_connections, "4096", 16, 1000000, NULL, "connections at once per listener (capped by the open-file limit)"),
    K("api", "events_window", KEY_INT, api_events_window, "1000", 1, 1000000, NULL, "events GET /v1/events keeps (the newest)"),
    K("api", "events_window_bytes", KEY_INT, api_events_window_bytes, "4194304", 4096, INT64_C(1) << 32, NULL, "bytes of event JSON GET /v1/events keeps at most"),
    K("resources", "cpu_allocation_ratio", KEY_DOUBLE, cpu_allocation_ratio, "16.0", 0, 1000, NULL, "vCPUs per physical CPU"),
    K("resources", "ram_allocation_ratio", KEY_DOUBLE, ram_allocation_ratio, "1.0", 0, 1000, NULL, "guest memory per host memory"),
    K("resources", "disk_allocation_ratio", KEY_DOUBLE, disk_allocation_ratio, "1.0", 0, 1000, NULL, "guest disk per host disk"),
    K("resources", "reserved_host_memory_mb", KEY_INT, reserved_host_memory_mb, "512", 0, INT64_C(1) << 40, NULL, "memory kept for the host"),
    K("resources", "reserved_host_disk_gb", KEY_INT, reserved_host_disk_gb, "0", 0, INT64_C(1) << 30, NULL, "disk kept for the host"),
    K("resources", "reserved_host_cpus", KEY_INT, reserved_host_cpus, "0", 0, 4096, NULL, "physical CPUs kept for the host"),
    K("store", "sync", KEY_STR, store_sync, "normal", 0, 0, NULL, "normal|full: SQLite durability (WAL); full also survives power loss"),
    K("placement", "url", KEY_STR, placement_url, "", 0, 0, "placement-url", "OpenStack Placement endpoint (empty: no controller)"),
    K("placement", "token", KEY_STR, placement_token, "", 0, 0, "placement-token", "X-Auth-Token for Placement (noauth2: admin)"),
    K("placement", "auth", KEY_STR, placement_auth, "", 0, 0, NULL, "none|token|keystone (empty: token if set, else none)"),
    K("placement", "auth_url", KEY_STR, ks_auth_url, "", 0, 0, NULL, "Keystone v3 URL (auth = keystone)"),
    K("placement", "username", KEY_STR, ks_username, "", 0, 0, NULL, "Keystone user"),
    K("placement", "password", KEY_STR, ks_password, "", 0, 0, NULL, "Keystone password"),
    K("placement", "project_name", KEY_STR, ks_project_name, "", 0, 0, NULL, "Keystone project"),
    K("placement", "user_domain_name", KEY_STR, ks_user_domain, "Default", 0, 0, NULL, "Keystone user domain"),
    K("placement", "project_domain_name", KEY_STR, ks_project_domain, "Default", 0, 0, NULL, "Keystone project domain"),
    K("placement", "ca_bundle", KEY_STR, placement_ca_bundle, "", 0, 0, NULL, "CA bundle (PEM) for https"),
    K("placement", "usage_check_interval", KEY_INT, usage_check_s, "600", 10, 86400, NULL, "seconds between usage drift checks"),
    K("placement", "allocations", KEY_STR, placement_allocations, "scheduler", 0, 0, NULL, "who writes instances' allocations: scheduler|agent"),
    K("placement", "usage_heal", KEY_STR, usage_heal, "report", 0, 0, NULL, "drift: report, or fix (remove allocations of instances terminated here)"),
    K("placement", "default_project_id", KEY_STR, placement_project_id, "00000000-0000-0000-0000-000000000000", 0, 0, NULL, "allocation owner project when a launch names none"),
    K("placement", "default_user_id", KEY_STR, placement_user_id, "00000000-0000-0000-0000-000000000000", 0, 0, NULL, "allocation owner user when a launch names none"),
    K("bus", "brokers", KEY_STR, bus_brokers, "", 0, 0, "bus-brokers", "Kafka bootstrap servers (empty: in-process mock cluster)"),
    K("bus", "prefix", KEY_STR, bus_prefix, "", 0, 0, "bus-prefix", "Kafka topic prefix"),
    K("bus", "properties", KEY_STR, bus_properties, "", 0, 0, NULL, "extra librdkafka properties, k=v,k=v"),
    K("bus", "heartbeat_interval", KEY_INT, heartbeat_s, "5", 1, 3600, NULL, "seconds between heartbeats"),
    K("image_cache", "dir", KEY_STR, imgc_dir, "", 0, 0, NULL, "image cache directory (default: STATE_DIR/images)"),
    K("image_cache", "budget_mb", KEY_INT, imgc_budget_mb, "0", 0, INT64_C(1) << 40, NULL, "size budget in MiB (0: use budget_percent)"),
    K("image_cache", "budget_percent", KEY_INT, imgc_budget_percent, "50", 0, 100, NULL, "size budget as % of the cache's filesystem"),
    K("image_cache", "max_unused_age", KEY_INT, imgc_max_unused_age_s, "0", 0, INT64_C(1) << 40, NULL, "seconds an unused image may stay (0: no limit)"),
    K("image_cache", "max_virtual_size_gb", KEY_INT, imgc_max_virtual_gb, "1024", 1, INT64_C(1) << 30, NULL, "refuse images whose virtual size is larger"),
    K("image_cache", "ca_bundle", KEY_STR, imgc_ca_bundle, "", 0, 0, NULL, "CA bundle (PEM) for https image sources"),
    K("image_cache", "glance_url", KEY_STR, glance_url, "", 0, 0, NULL, "OpenStack Glance v2 endpoint (empty: none)"),
    K("image_cache", "glance_token", KEY_STR, glance_token, "", 0, 0, NULL, "X-Auth-Token for Glance"),
    K("image_cache", "max_parallel", KEY_INT, imgc_max_parallel, "4", 1, 256, NULL, "downloads at once"),
    K("image_cache", "stall_timeout", KEY_INT, imgc_stall_timeout_s, "30", 1, 3600, NULL, "seconds without a byte before a download fails"),
    K("image_cache", "retries", KEY_INT, imgc_retries, "3", 0, 100, NULL, "retries after transient download failures"),
    K("image_cache", "allowed_networks", KEY_STR, imgc_allowed_networks, "", 0, 0, NULL, "CIDRs image URLs may reach besides the default (loopback and link-local are refused)"),
    K("telemetry", "interval", KEY_INT, telemetry_interval_s, "10", 1, 3600, "telemetry-interval", "seconds between telemetry samples"),
    K("telemetry", "metrics_listen", KEY_STR, metrics_listen, "", 0, 0, "metrics-listen", "HOST:PORT serving /metrics to scrapers (no token)"),
    K("telemetry", "libvirt_exporter_names", KEY_BOOL, libvirt_exporter_names, "false", 0, 0, NULL, "/metrics also under prometheus-libvirt-exporter's names and labels"),
    K("metadata", "enabled", KEY_BOOL, md_enabled, "true", 0, 0, NULL, "serve the metadata service on each network's bridge"),
    K("metadata", "address", KEY_STR, md_address, "169.254.169.254", 0, 0, NULL, "IPv4 address the metadata service listens on"),
    K("metadata", "port", KEY_INT, md_port, "80", 1, 65535, NULL, "TCP port of the metadata service"),
    K("metadata", "rate", KEY_DOUBLE, md_rate, "50", 0, 1000000, NULL, "metadata requests per second per source address"),
    K("metadata", "burst", KEY_INT, md_burst, "100", 1, 1000000, NULL, "metadata request burst per source address"),
    K("metadata", "max_connections", KEY_INT, md_max_connections, "1024", 1, 65536, NULL, "open metadata connections, all networks"),
    K("metadata", "max_per_network", KEY_INT, md_max_per_network, "256", 1, 65536, NULL, "open metadata connections of one network"),
    K("metadata", "max_per_source", KEY_INT, md_max_per_source, "64", 1, 65536, NULL, "open metadata connections of one (network, source address)"),
    K("metadata", "http_tokens", KEY_STR, md_http_tokens, "optional", 0, 0, NULL, "optional|required: IMDSv2 tokens by default"),
    K("metadata", "hop_limit", KEY_INT, md_hop_limit, "1", 1, 64, NULL, "default IP TTL of the token PUT's answer"),
    K("metadata", "product", KEY_STR, md_product, "OpenStack Nova", 0, 0, NULL, "SMBIOS system product of guests"),
    K("metadata", "manufacturer", KEY_STR, md_manufacturer, "compute-agent", 0, 0, NULL, "SMBIOS system manufacturer of guests"),
    K("metadata", "availability_zone", KEY_STR, md_availability_zone, "nova", 0, 0, NULL, "availability zone of launches that name none"),
    K("metadata", "config_drive", KEY_BOOL, md_config_drive, "false", 0, 0, NULL, "attach a config drive to launches that do not say"),
    K("metadata", "config_drive_format", KEY_STR, md_config_drive_format, "config-2", 0, 0, NULL, "config-2|nocloud"),
    K("metadata", "xorriso", KEY_STR, md_xorriso, "xorriso", 0, 0, NULL, "xorriso program for config drives"),
    K("netplug", "host_firewall", KEY_BOOL, np_host_firewall, "true", 0, 0, NULL, "table inet compute_agent: no routing between networks, guests reach only the metadata service, DHCP and ping on the host"),
    K("dhcp", "dnsmasq", KEY_STR, dhcp_dnsmasq, "dnsmasq", 0, 0, NULL, "dnsmasq program for dhcp networks (PATH, /usr/sbin, /sbin searched when no slash)"),
    K("dhcp", "user", KEY_STR, dhcp_user, "root", 0, 0, NULL, "user dnsmasq runs as (--user); \"\": dnsmasq's default"),
};

static int parse_bool(const char *v, bool *out)
{
    if (!strcmp(v, "true") || !strcmp(v, "yes") || !strcmp(v, "1") || !strcmp(v, "on"))
        *out = true;
    else if (!strcmp(v, "false") || !strcmp(v, "no") || !strcmp(v, "0") || !strcmp(v, "off"))
        *out = false;
    else
        return -EINVAL;
    return 0;
}

static int net_new(struct agent_config *cfg, const char *name, struct agent_error *err);
static int net_set(struct net_config *n, const char *key, const char *value, struct agent_error *err);
static int net_key_index(const char *key);
static int metadata_finish(struct agent_config *cfg, struct agent_error *err);
static void net_release(struct net_config *n);

static int set_key(struct agent_config *cfg, const struct key_desc *k, const char *value,
                   struct agent_error *err)
{
    char name[96];
    void *field = (char *)cfg + k->offset;

    snprintf(name, sizeof(name), "%s.%s", k->section, k->key);
    switch (k->type) {
    case KEY_STR: {
        char *dup = strdup(value);
        if (!dup)
            return -ENOMEM;
        free(*(char **)field);
        *(char **)field = dup;
        return 0;
    }
    case KEY_INT: {
        int64_t v;
        if (parse_int64(value, k->min, k->max, &v) < 0)
            return agent_error_set(err, EINVAL, "invalid_config", name,
                                   "%s: '%s' is not an integer in [%lld, %lld]", name,
                                   value, (long long)k->min, (long long)k->max);
        *(int64_t *)field = v;
        return 0;
    }
    case KEY_BOOL:
        if (parse_bool(value, (bool *)field) < 0)
            return agent_error_set(err, EINVAL, "invalid_config", name,
                                   "%s: '%s' is not true or false", name, value);
        return 0;
    case KEY_DOUBLE: {
        char *end;
        double v;
        errno = 0;
        v = strtod(value, &end);
        if (errno || !*value || *end || !isfinite(v) || v <= 0 || v > (double)k->max)
            return agent_error_set(err, EINVAL, "invalid_config", name,
                                   "%s: '%s' is not a number in (0, %lld]", name, value,
                                   (long long)k->max);
        *(double *)field = v;
        return 0;
    }
    }
    return -EINVAL;
}

int config_set(struct agent_config *cfg, const char *section, const char *key,
               const char *value, struct agent_error *err)
{
    for (size_t i = 0; i < ARRAY_SIZE(keys); i++)
        if (strcmp(keys[i].section, section) == 0 && strcmp(keys[i].key, key) == 0)
            return set_key(cfg, &keys[i], value, err);
    return agent_error_set(err, EINVAL, "invalid_config", *key ? key : "config",
                           "unknown key %s.%s", section, key);
}

int config_init_defaults(struct agent_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    for (size_t i = 0; i < ARRAY_SIZE(keys); i++) {
        int r = set_key(cfg, &keys[i], keys[i].def, NULL);
        if (r < 0)
            return r;
    }
    return 0;
}

static char *trim(char *s)
{
    char *e;

    while (isspace((unsigned char)*s))
        s++;
    e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1]))
        *--e = '\0';
    return s;
}

int config_load_file(struct agent_config *cfg, const char *path, struct agent_error *err)
{
    _cleanup_fclose_ FILE *f = fopen(path, "re");
    char line[CONFIG_LINE_MAX + 64], section[64] = "";
    unsigned lineno = 0, seen_line[ARRAY_SIZE(keys)] = {0};
    unsigned net_seen = 0;    /* keys given in the current [network NAME] */
    ssize_t net_idx = -1;     /* its index in cfg->networks, -1: not in one */

    if (!f)
        return agent_error_set(err, errno, "invalid_config", "config",
                               "cannot open %s: %s", path, strerror(errno));
    while (fgets(line, sizeof(line), f)) {
        char *s, *eq, *key, *value;
        size_t len = strlen(line);
        int r;

        lineno++;
        /* a line that fills the buffer without its newline is too long: never
         * split it and read its tail as a key */
        if ((len == sizeof(line) - 1 && line[len - 1] != '\n' && !feof(f)) ||
            len - (len && line[len - 1] == '\n') > CONFIG_LINE_MAX)
            return agent_error_set(err, EINVAL, "invalid_config", "config",
                                   "%s:%u: line longer than %d bytes", path, lineno,
                                   CONFIG_LINE_MAX);
        s = trim(line);
        if (!*s || *s == '#' || *s == ';')
            continue;
        if (*s == '[') {
            char *close = strchr(s, ']');
            if (!close || close[1])
                return agent_error_set(err, EINVAL, "invalid_config", "config",
                                       "%s:%u: bad section header", path, lineno);
            *close = '\0';
            if (strscpy(section, trim(s + 1), sizeof(section)) < 0)
                return agent_error_set(err, EINVAL, "invalid_config", "config",
                                       "%s:%u: section name too long", path, lineno);
            net_idx = -1;
            if (!strncmp(section, "network", 7) && (section[7] == ' ' || section[7] == '\t' || !section[7])) {
                if ((r = net_new(cfg, trim(section + 7), err)) < 0)
                    goto line_error;
                net_idx = (ssize_t)cfg->n_networks - 1;
                net_seen = 0;
            }
            continue;
        }
        eq = strchr(s, '=');
        if (!eq || !*section)
            return agent_error_set(err, EINVAL, "invalid_config", "config",
                                   "%s:%u: expected key = value inside a [section]",
                                   path, lineno);
        *eq = '\0';
        key = trim(s);
        value = trim(eq + 1);
        if (net_idx >= 0) {
            struct net_config *n = &cfg->networks[net_idx];
            int ki = net_key_index(key);
            if (ki >= 0 && (net_seen & (1u << ki))) {
                char name[160];
                snprintf(name, sizeof(name), "network.%s.%s", n->name, key);
                return agent_error_set(err, EINVAL, "invalid_config", name,
                                       "%s:%u: network %s: duplicate key %s", path, lineno, n->name, key);
            }
            if (ki >= 0)
                net_seen |= 1u << ki;
            if ((r = net_set(n, key, value, err)) < 0)
                goto line_error;
            continue;
        }
        for (size_t i = 0; i < ARRAY_SIZE(keys); i++) {
            if (strcmp(keys[i].section, section) || strcmp(keys[i].key, key))
                continue;
            if (seen_line[i]) {
                char name[160];
                snprintf(name, sizeof(name), "%s.%s", section, key);
                return agent_error_set(err, EINVAL, "invalid_config", name,
                                       "%s:%u: duplicate key %s.%s (first set on line %u)", path,
                                       lineno, section, key, seen_line[i]);
            }
            seen_line[i] = lineno;
        }
        r = config_set(cfg, section, key, value, err);
        if (r < 0) {
        line_error:
            if (err) {
                char msg[sizeof(err->message)];
                int n = snprintf(msg, sizeof(msg), "%s:%u: ", path, lineno);
                if (n > 0 && (size_t)n < sizeof(msg))
                    strscpy(msg + n, err->message, sizeof(msg) - (size_t)n);
                memcpy(err->message, msg, sizeof(msg));
            }
            return r;
        }
    }
    return 0;
}

void config_usage(FILE *out)
{
    fprintf(out,
            "Usage: compute-agent [OPTION]...\n"
            "The compute node agent: runs guests under libvirt and serves the REST API.\n\n"
            "  --config FILE             read FILE (INI) before the flags below\n");
    for (size_t i = 0; i < ARRAY_SIZE(keys); i++) {
        char opt[64];
        if (!keys[i].flag)
            continue;
        snprintf(opt, sizeof(opt), "--%s %s", keys[i].flag,
                 keys[i].type == KEY_STR ? "VALUE" : "N");
        fprintf(out, "  %-25s %s [%s.%s, default '%s']\n", opt, keys[i].help,
                keys[i].section, keys[i].key, keys[i].def);
    }
    fprintf(out, "  --help                    print this help\n"
                 "  --version                 print the version\n\n"
                 "Every key of the configuration file is documented in compute-agent.conf.\n");
}

int config_from_args(struct agent_config *cfg, int argc, char **argv, struct agent_error *err)
{
    struct option opts[ARRAY_SIZE(keys) + 4];
    size_t n = 0;
    int c, r;

    for (size_t i = 0; i < ARRAY_SIZE(keys); i++)
        if (keys[i].flag)
            opts[n++] = (struct option){keys[i].flag, required_argument, NULL, (int)(256 + i)};
    opts[n++] = (struct option){"config", required_argument, NULL, 'c'};
    opts[n++] = (struct option){"help", no_argument, NULL, 'h'};
    opts[n++] = (struct option){"version", no_argument, NULL, 'V'};
    opts[n] = (struct option){NULL, 0, NULL, 0};

    /* pass 1: --config, --help, --version */
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (c == 'h') {
            config_usage(stdout);
            return 1;
        }
        if (c == 'V') {
            printf("compute-agent %s\n", CA_VERSION);
            return 1;
        }
        if (c == 'c') {
            free(cfg->config_file);
            cfg->config_file = strdup(optarg);
        } else if (c == '?' || c == ':') {
            return agent_error_set(err, EINVAL, "invalid_argument", argv[optind - 1],
                                   "unknown or incomplete option '%s' (see --help)",
                                   argv[optind - 1]);
        }
    }
    if (optind < argc)
        return agent_error_set(err, EINVAL, "invalid_argument", argv[optind],
                               "unexpected argument '%s'", argv[optind]);
    if (cfg->config_file) {
        r = config_load_file(cfg, cfg->config_file, err);
        if (r < 0)
            return r;
    }
    /* pass 2: flags over the file */
    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (c >= 256) {
            const struct key_desc *k = &keys[c - 256];
            r = set_key(cfg, k, optarg, err);
            if (r < 0)
                return r;
        }
    }
    return 0;
}

#define API_TOKEN_MIN 16

/* api.token_file: one line (a trailing newline is not part of the token),
 * not readable by other users. 0 with *out set (caller frees), or -errno. */
static int token_read(const char *path, char **out, struct agent_error *err)
{
    _cleanup_fclose_ FILE *f = fopen(path, "re");
    char buf[4097];
    struct stat st;
    size_t n;

    if (!f)
        return agent_error_set(err, errno, "invalid_config", "api.token_file", "api.token_file: cannot open %s: %s",
                               path, strerror(errno));
    if (fstat(fileno(f), &st) < 0 || !S_ISREG(st.st_mode))
        return agent_error_set(err, EINVAL, "invalid_config", "api.token_file", "api.token_file: %s is not a regular file", path);
    if (st.st_mode & (S_IROTH | S_IWOTH))
        return agent_error_set(err, EPERM, "invalid_config", "api.token_file",
                               "api.token_file: %s is accessible to other users (mode %03o); chmod o-rwx it", path,
                               (unsigned)(st.st_mode & 0777));
    n = fread(buf, 1, sizeof(buf), f);
    if (ferror(f) || n == sizeof(buf))
        return agent_error_set(err, EINVAL, "invalid_config", "api.token_file",
                               "api.token_file: %s: cannot read it, or longer than 4096 bytes", path);
    if (n && buf[n - 1] == '\n')
        n--;
    if (n && buf[n - 1] == '\r')
        n--;
    buf[n] = '\0';
    if (strlen(buf) != n)
        return agent_error_set(err, EINVAL, "invalid_config", "api.token_file", "api.token_file: %s holds a NUL byte",
                               path);
    *out = strdup(buf);
    return *out ? 0 : -ENOMEM;
}

/* The bearer token: from api.token or api.token_file (not both), at
 * least API_TOKEN_MIN bytes of visible ASCII. */
static int token_finish(struct agent_config *cfg, struct agent_error *err)
{
    const char *field = "api.token";

    if (cfg->api_token_file[0]) {
        char *tok;
        int r;
        if (cfg->api_token[0])
            return agent_error_set(err, EINVAL, "invalid_config", "api.token_file",
                                   "api.token_file: set api.token or api.token_file, not both");
        if ((r = token_read(cfg->api_token_file, &tok, err)) < 0)
            return r;
        free(cfg->api_token);
        cfg->api_token = tok;
        field = "api.token_file";
    }
    if (!cfg->api_token[0])
        return 0;
    for (const char *p = cfg->api_token; *p; p++)
        if ((unsigned char)*p <= ' ' || (unsigned char)*p >= 0x7f)
            return agent_error_set(err, EINVAL, "invalid_config", field,
                                   "%s: the token must be visible ASCII (no spaces or control bytes)", field);
    if (strlen(cfg->api_token) < API_TOKEN_MIN)
        return agent_error_set(err, EINVAL, "invalid_config", field,
                               "%s: the token is %zu bytes; at least %d are required", field,
                               strlen(cfg->api_token), API_TOKEN_MIN);
    return 0;
}

int config_finish(struct agent_config *cfg, struct agent_error *err)
{
    static const char *const drivers[] = {"kvm", "qemu", "xen", "test"};
    static const char *const dtypes[] = {"auto", "kvm", "qemu"};
    enum log_level lvl;
    bool ok = false;
    int r;

    for (size_t i = 0; i < ARRAY_SIZE(drivers); i++)
        ok |= strcmp(cfg->hypervisor, drivers[i]) == 0;
    if (!ok)
        return agent_error_set(err, EINVAL, "invalid_config", "hypervisor.driver",
                               "hypervisor '%s' is not one of kvm, qemu, xen, test",
                               cfg->hypervisor);
    ok = false;
    for (size_t i = 0; i < ARRAY_SIZE(dtypes); i++)
        ok |= strcmp(cfg->domain_type, dtypes[i]) == 0;
    if (!ok)
        return agent_error_set(err, EINVAL, "invalid_config", "hypervisor.domain_type",
                               "domain_type '%s' is not one of auto, kvm, qemu",
                               cfg->domain_type);
    if (log_level_parse(cfg->log_level, &lvl) < 0)
        return agent_error_set(err, EINVAL, "invalid_config", "agent.log_level",
                               "log level '%s' is not one of debug, info, warn, error",
                               cfg->log_level);
    if (strcmp(cfg->migration_postcopy, "never") && strcmp(cfg->migration_postcopy, "auto") &&
        strcmp(cfg->migration_postcopy, "always"))
        return agent_error_set(err, EINVAL, "invalid_config", "migration.postcopy",
                               "migration.postcopy '%s' is not never, auto or always", cfg->migration_postcopy);
    if (strcmp(cfg->store_sync, "normal") && strcmp(cfg->store_sync, "full"))
        return agent_error_set(err, EINVAL, "invalid_config", "store.sync",
                               "store.sync '%s' is not normal or full", cfg->store_sync);
    if (localfile_dirs_check(cfg->local_image_dirs, err) < 0)
        return -EINVAL;
    if ((r = metadata_finish(cfg, err)) < 0)
        return r;
    if (cfg->state_dir[0] != '/')
        return agent_error_set(err, EINVAL, "invalid_config", "agent.state_dir",
                               "state directory '%s' must be an absolute path", cfg->state_dir);
    if (!cfg->api_socket[0]) {
        char *p;
        if (asprintf(&p, "%s/api.sock", cfg->state_dir) < 0)
            return -ENOMEM;
        free(cfg->api_socket);
        cfg->api_socket = p;
    }
    if (strcmp(cfg->placement_allocations, "scheduler") && strcmp(cfg->placement_allocations, "agent"))
        return agent_error_set(err, EINVAL, "invalid_config", "placement.allocations",
                               "placement.allocations '%s' is not scheduler or agent", cfg->placement_allocations);
    if (strcmp(cfg->usage_heal, "report") && strcmp(cfg->usage_heal, "fix"))
        return agent_error_set(err, EINVAL, "invalid_config", "placement.usage_heal",
                               "placement.usage_heal '%s' is not report or fix", cfg->usage_heal);
    if (!cfg->placement_project_id[0] || strlen(cfg->placement_project_id) > 255 || !cfg->placement_user_id[0] ||
        strlen(cfg->placement_user_id) > 255)
        return agent_error_set(err, EINVAL, "invalid_config",
                               !cfg->placement_project_id[0] || strlen(cfg->placement_project_id) > 255
                                   ? "placement.default_project_id"
                                   : "placement.default_user_id",
                               "placement.default_project_id and default_user_id must be 1 to 255 characters");
    if (cfg->placement_auth[0] && strcmp(cfg->placement_auth, "none") &&
        strcmp(cfg->placement_auth, "token") && strcmp(cfg->placement_auth, "keystone"))
        return agent_error_set(err, EINVAL, "invalid_config", "placement.auth",
                               "placement.auth '%s' is not none, token or keystone", cfg->placement_auth);
    if (!strcmp(cfg->placement_auth, "keystone") &&
        (!cfg->ks_auth_url[0] || !cfg->ks_username[0] || !cfg->ks_password[0] || !cfg->ks_project_name[0]))
        return agent_error_set(err, EINVAL, "invalid_config", "placement.auth_url",
                               "keystone auth needs auth_url, username, password and project_name");
    if ((r = token_finish(cfg, err)) < 0)
        return r;
    if (cfg->api_listen[0] && !cfg->api_token[0])
        return agent_error_set(err, EINVAL, "invalid_config", "api.token",
                               "serving the API on TCP (%s) needs api.token", cfg->api_listen);
    if (!cfg->host_name[0]) {
        char h[256] = "";
        gethostname(h, sizeof(h) - 1);
        free(cfg->host_name);
        cfg->host_name = strdup(h[0] ? h : "localhost");
    }
    return 0;
}

void config_release(struct agent_config *cfg)
{
    for (size_t i = 0; i < ARRAY_SIZE(keys); i++)
        if (keys[i].type == KEY_STR) {
            char **p = (char **)((char *)cfg + keys[i].offset);
            free(*p);
            *p = NULL;
        }
    free(cfg->config_file);
    cfg->config_file = NULL;
    for (size_t i = 0; i < cfg->n_networks; i++)
        net_release(&cfg->networks[i]);
    free(cfg->networks);
    cfg->networks = NULL;
    cfg->n_networks = 0;
}

/* ---- [network NAME] sections ---- */

int net_parse_ipv4(const char *s, uint32_t *out)
{
    uint32_t a = 0;
    int parts = 0;

    while (parts < 4) {
        int64_t v = 0;
        int digits = 0;
        while (*s >= '0' && *s <= '9' && digits < 4) {
            v = v * 10 + (*s++ - '0');
            digits++;
        }
        if (!digits || v > 255 || (digits > 1 && s[-digits] == '0'))
            return -EINVAL;
        a = a << 8 | (uint32_t)v;
        if (++parts < 4 && *s++ != '.')
            return -EINVAL;
    }
    if (*s)
        return -EINVAL;
    *out = a;
    return 0;
}

void net_format_ipv4(uint32_t a, char buf[16])
{
    snprintf(buf, 16, "%u.%u.%u.%u", a >> 24, (a >> 16) & 255, (a >> 8) & 255, a & 255);
}

bool net_ip_assignable(const struct net_config *n, uint32_t ip)
{
    if (!n->mask || (ip & n->mask) != n->net)
        return false;
    return ip != n->net && ip != (n->net | ~n->mask) && ip != n->gw;
}

const struct net_config *config_network(const struct agent_config *cfg, const char *name)
{
    for (size_t i = 0; name && i < cfg->n_networks; i++)
        if (!strcmp(cfg->networks[i].name, name))
            return &cfg->networks[i];
    return NULL;
}

static void net_release(struct net_config *n)
{
    free(n->name);
    free(n->type);
    free(n->bridge);
    free(n->parent);
    free(n->local);
    free(n->remote);
    free(n->group);
    free(n->cidr);
    free(n->ip_range);
    free(n->gateway);
    free(n->dns);
    memset(n, 0, sizeof(*n));
}

enum nkey_type { NK_STR, NK_INT, NK_BOOL };
struct net_key {
    const char *key;
    enum nkey_type type;
    size_t offset;
    int64_t min, max;
};
#define NK(k, t, f, lo, hi) {k, t, offsetof(struct net_config, f), lo, hi}
static const struct net_key net_keys[] = {
    NK("type", NK_STR, type, 0, 0),        NK("bridge", NK_STR, bridge, 0, 0),
    NK("parent", NK_STR, parent, 0, 0),    NK("vlan_id", NK_INT, vlan_id, 1, 4094),
    NK("vni", NK_INT, vni, 1, 16777215),   NK("local", NK_STR, local, 0, 0),
    NK("remote", NK_STR, remote, 0, 0),    NK("group", NK_STR, group, 0, 0),
    NK("port", NK_INT, port, 0, 65535),    NK("mtu", NK_INT, mtu, 68, 65535),
    NK("cidr", NK_STR, cidr, 0, 0),        NK("gateway", NK_STR, gateway, 0, 0),
    NK("dns", NK_STR, dns, 0, 0),          NK("dhcp", NK_BOOL, dhcp, 0, 0),
    NK("metadata", NK_BOOL, metadata, 0, 0), NK("ip_range", NK_STR, ip_range, 0, 0),
};

static int net_key_index(const char *key)
{
    for (size_t i = 0; i < ARRAY_SIZE(net_keys); i++)
        if (!strcmp(net_keys[i].key, key))
            return (int)i;
    return -1;
}

static int net_new(struct agent_config *cfg, const char *name, struct agent_error *err)
{
    struct net_config *nn, *n;
    bool ok = *name && strlen(name) <= NET_NAME_MAX;

    for (const char *p = name; *p; p++)
        ok &= (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '-' || *p == '_';
    if (!ok)
        return agent_error_set(err, EINVAL, "invalid_config", "network",
                               "network '%.64s': the name must be 1 to %d letters, digits, - or _",
                               name, NET_NAME_MAX);
    if (config_network(cfg, name))
        return agent_error_set(err, EINVAL, "invalid_config", "network",
                               "network %s: a second [network %s] section", name, name);
    if (!(nn = realloc(cfg->networks, (cfg->n_networks + 1) * sizeof(*nn))))
        return -ENOMEM;
    cfg->networks = nn;
    n = &nn[cfg->n_networks];
    memset(n, 0, sizeof(*n));
    n->metadata = true;
    n->name = strdup(name);
    n->type = strdup("bridge");
    if (!n->name || !n->type) {
        net_release(n);
        return -ENOMEM;
    }
    cfg->n_networks++;
    return 0;
}

static int net_set(struct net_config *n, const char *key, const char *value, struct agent_error *err)
{
    for (size_t i = 0; i < ARRAY_SIZE(net_keys); i++) {
        const struct net_key *k = &net_keys[i];
        void *field = (char *)n + k->offset;
        char fname[96];
        int64_t v;
        if (strcmp(k->key, key))
            continue;
        snprintf(fname, sizeof(fname), "network.%s.%s", n->name, key);
        switch (k->type) {
        case NK_STR: {
            char *dup = strdup(value);
            if (!dup)
                return -ENOMEM;
            free(*(char **)field);
            *(char **)field = dup;
            return 0;
        }
        case NK_INT:
            if (parse_int64(value, k->min, k->max, &v) < 0)
                return agent_error_set(err, EINVAL, "invalid_config", fname,
                                       "network %s: %s '%s' is not an integer in [%lld, %lld]", n->name,
                                       key, value, (long long)k->min, (long long)k->max);
            *(int64_t *)field = v;
            return 0;
        case NK_BOOL:
            if (parse_bool(value, (bool *)field) < 0)
                return agent_error_set(err, EINVAL, "invalid_config", fname,
                                       "network %s: %s '%s' is not true or false", n->name, key, value);
            if (field == (void *)&n->metadata)
                n->metadata_set = true;
            return 0;
        }
    }
    return agent_error_set(err, EINVAL, "invalid_config", "network", "network %s: unknown key %s",
                           n->name, key);
}

/* The checks of one network after the file: cross-key rules and the
 * derived addresses. Errors name the key: "network n1: vni ...". */
static int net_finish(struct net_config *n, struct agent_error *err)
{
    static const char *const types[] = {"bridge", "vlan", "vxlan", "ovs"};
    char field[96];
    uint32_t a;
    bool ok = false;

#define NET_ERR(key, ...)                                                                  \
    (snprintf(field, sizeof(field), "network.%s.%s", n->name, key),                        \
     agent_error_set(err, EINVAL, "invalid_config", field, __VA_ARGS__))
    for (size_t i = 0; i < ARRAY_SIZE(types); i++)
        if (!strcmp(n->type, types[i])) {
            n->kind = (enum net_type)i;
            ok = true;
        }
    if (!ok)
        return NET_ERR("type", "network %s: type '%s' is not bridge, vlan, vxlan or ovs", n->name, n->type);
    if (n->bridge && strlen(n->bridge) > 15)
        return NET_ERR("bridge", "network %s: bridge '%s' is longer than 15 characters", n->name, n->bridge);
    if ((n->kind == NET_BRIDGE || n->kind == NET_OVS) && (!n->bridge || !*n->bridge))
        return NET_ERR("bridge", "network %s: bridge is required for type %s", n->name, n->type);
    if (n->kind == NET_OVS) {
        /* The lookup that names a metadata request's instance reads the Linux
         * bridge's neighbour and FDB tables, and the anti-spoofing filter that
         * makes them trustworthy is the nft bridge family: neither sees an
         * Open vSwitch bridge (port security there is the OVS controller's). */
        if (n->metadata_set && n->metadata)
            return NET_ERR("metadata", "network %s: metadata is not served on an ovs network (the agent can "
                           "neither filter nor identify its guests; use a config drive)", n->name);
        n->metadata = false;
    }
    if (n->kind == NET_VLAN && (!n->parent || !*n->parent))
        return NET_ERR("parent", "network %s: parent is required for type vlan", n->name);
    if (n->kind == NET_VLAN && !n->vlan_id)
        return NET_ERR("vlan_id", "network %s: vlan_id (1-4094) is required for type vlan", n->name);
    if (n->kind != NET_VLAN && n->vlan_id)
        return NET_ERR("vlan_id", "network %s: vlan_id goes with type vlan only", n->name);
    if (n->kind == NET_VXLAN && !n->vni)
        return NET_ERR("vni", "network %s: vni (1-16777215) is required for type vxlan", n->name);
    if (n->kind != NET_VXLAN && (n->vni || n->local || n->remote || n->group || n->port))
        return NET_ERR(n->vni ? "vni" : n->local ? "local" : n->remote ? "remote" : n->group ? "group" : "port",
                       "network %s: vni, local, remote, group and port go with type vxlan only", n->name);
    if (n->remote && n->group)
        return NET_ERR("group", "network %s: give remote or group, not both", n->name);
    if (n->local && net_parse_ipv4(n->local, &a) < 0)
        return NET_ERR("local", "network %s: local '%s' is not an IPv4 address", n->name, n->local);
    if (n->remote && net_parse_ipv4(n->remote, &a) < 0)
        return NET_ERR("remote", "network %s: remote '%s' is not an IPv4 address", n->name, n->remote);
    if (n->group && (net_parse_ipv4(n->group, &a) < 0 || (a >> 28) != 0xe))
        return NET_ERR("group", "network %s: group '%s' is not an IPv4 multicast address", n->name, n->group);
    if (n->cidr && *n->cidr) {
        char addr[32];
        const char *slash = strchr(n->cidr, '/');
        int64_t p;
        if (!slash || (size_t)(slash - n->cidr) >= sizeof(addr) ||
            (memcpy(addr, n->cidr, (size_t)(slash - n->cidr)), addr[slash - n->cidr] = '\0',
             net_parse_ipv4(addr, &a) < 0) ||
            parse_int64(slash + 1, 8, 30, &p) < 0)
            return NET_ERR("cidr", "network %s: cidr '%s' is not an IPv4 a.b.c.d/8..30", n->name, n->cidr);
        n->prefix = (int)p;
        n->mask = ~UINT32_C(0) << (32 - p);
        if (a & ~n->mask)
            return NET_ERR("cidr", "network %s: cidr '%s' has host bits set", n->name, n->cidr);
        n->net = a;
    }
    if (n->gateway && *n->gateway) {
        if (!n->mask)
            return NET_ERR("gateway", "network %s: gateway needs a cidr", n->name);
        uint32_t gw = 0;
        n->gw = 0;
        if (net_parse_ipv4(n->gateway, &gw) < 0 || !net_ip_assignable(n, gw))
            return NET_ERR("gateway", "network %s: gateway '%s' is not a host address of %s", n->name,
                           n->gateway, n->cidr);
        n->gw = gw;
    }
    if (n->dns && *n->dns) {
        const char *p = n->dns;
        while (*p) {
            char tok[32];
            size_t len;
            p += strspn(p, ", ");
            if (!*p)
                break;
            len = strcspn(p, ", ");
            if (len >= sizeof(tok))
                return NET_ERR("dns", "network %s: dns '%.40s' is not an IPv4 address", n->name, p);
            memcpy(tok, p, len);
            tok[len] = '\0';
            p += len;
            if (n->n_dns == NET_DNS_MAX)
                return NET_ERR("dns", "network %s: dns lists more than %d servers", n->name, NET_DNS_MAX);
            if (net_parse_ipv4(tok, &n->dns_addr[n->n_dns]) < 0)
                return NET_ERR("dns", "network %s: dns '%s' is not an IPv4 address", n->name, tok);
            n->n_dns++;
        }
    }
    if (n->dhcp && !n->mask)
        return NET_ERR("dhcp", "network %s: dhcp needs a cidr", n->name);
    if (n->ip_range && *n->ip_range) {
        const char *dash = strchr(n->ip_range, '-');
        char lo[16], hi[16];
        uint32_t first = 0, last = 0;

        if (!n->mask)
            return NET_ERR("ip_range", "network %s: ip_range needs a cidr", n->name);
        if (!dash || (size_t)(dash - n->ip_range) >= sizeof(lo) || strlen(dash + 1) >= sizeof(hi))
            return NET_ERR("ip_range", "network %s: ip_range '%.40s' is not FIRST-LAST (IPv4)", n->name,
                           n->ip_range);
        memcpy(lo, n->ip_range, (size_t)(dash - n->ip_range));
        lo[dash - n->ip_range] = '\0';
        strscpy(hi, dash + 1, sizeof(hi));
        if (net_parse_ipv4(lo, &first) < 0 || net_parse_ipv4(hi, &last) < 0)
            return NET_ERR("ip_range", "network %s: ip_range '%.40s' is not FIRST-LAST (IPv4)", n->name,
                           n->ip_range);
        if ((first & n->mask) != n->net || (last & n->mask) != n->net || first == n->net || last == (n->net | ~n->mask))
            return NET_ERR("ip_range", "network %s: ip_range '%s' is not inside the host addresses of %s",
                           n->name, n->ip_range, n->cidr);
        if (first > last)
            return NET_ERR("ip_range", "network %s: ip_range '%s' ends before it starts", n->name, n->ip_range);
        if (first == last && first == n->gw)
            return NET_ERR("ip_range", "network %s: ip_range '%s' holds only the gateway", n->name, n->ip_range);
        n->range_lo = first;
        n->range_hi = last;
    }
    if (n->dhcp && !n->gw) /* the router option, and dnsmasq's address on the bridge */
        return NET_ERR("dhcp", "network %s: dhcp needs a gateway", n->name);
#undef NET_ERR
    return 0;
}

/* [metadata] after the file. */
static int metadata_finish(struct agent_config *cfg, struct agent_error *err)
{
    uint32_t a;

    if (net_parse_ipv4(cfg->md_address, &a) < 0)
        return agent_error_set(err, EINVAL, "invalid_config", "metadata.address",
                               "metadata.address '%s' is not an IPv4 address", cfg->md_address);
    if (strcmp(cfg->md_http_tokens, "optional") && strcmp(cfg->md_http_tokens, "required"))
        return agent_error_set(err, EINVAL, "invalid_config", "metadata.http_tokens",
                               "metadata.http_tokens '%s' is not optional or required", cfg->md_http_tokens);
    if (strcmp(cfg->md_config_drive_format, "config-2") && strcmp(cfg->md_config_drive_format, "nocloud"))
        return agent_error_set(err, EINVAL, "invalid_config", "metadata.config_drive_format",
                               "metadata.config_drive_format '%s' is not config-2 or nocloud",
                               cfg->md_config_drive_format);
    if (!cfg->md_availability_zone[0] || strlen(cfg->md_availability_zone) > 255)
        return agent_error_set(err, EINVAL, "invalid_config", "metadata.availability_zone",
                               "metadata.availability_zone must be 1 to 255 characters");
    for (size_t i = 0; i < cfg->n_networks; i++) {
        int r = net_finish(&cfg->networks[i], err);
        if (r < 0)
            return r;
    }
    return 0;
}
