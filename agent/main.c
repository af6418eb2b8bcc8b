/* main.c: compute-agent. Builds every module with the objects it uses
 * (struct agent holds them; no module sees it), wires their callbacks,
 * connects to the hypervisor (off the loop, with backoff), reconciles,
 * serves the API, and says READY=1 to systemd once it serves. It alone owns
 * the start and stop order. SIGTERM stops the agent, not the guests. */
#include <fcntl.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include <systemd/sd-daemon.h>

#include "agent/agent.h"
#include "agent/api.h"
#include "agent/commands.h"
#include "agent/dhcpd.h"
#include "agent/controller.h"
#include "agent/events.h"
#include "agent/bus.h"
#include "agent/host.h"
#include "agent/hypervisor/hv.h"
#include "agent/instance.h"
#include "agent/store.h"
#include "agent/log.h"
#include "agent/metrics.h"
#include "agent/telemetry.h"
#include "image-cache/imgcache.h"
#include "agent/ops.h"
#include "agent/resources.h"
#include "agent/metadata.h"
#include "agent/netmap.h"
#include "net-plug/netplug.h"

#define PURGE_AFTER_MS (3600 * 1000) /* terminated instances stay visible 1 h, as on EC2 */

struct connect_job {
    struct agent *a;
    int result;
    struct agent_error err;
    struct hv_host_info info;
    int64_t disk_gb;          /* the state directory's filesystem */
};

/* The image cache tells each failed pull once (however many launches
 * waited for it): logged here, at the edge. source carries no credentials. */
static void on_image_pull_failed(const char *image_id, const char *source,
                                 const struct agent_error *err, void *opaque)
{
    (void)opaque;
    log_warn("image pull failed", "image=%s source=%s reason=%s error=%s", image_id, source,
             err && err->code[0] ? err->code : "internal", err ? err->message : "");
}

static void connect_work(struct hv *hv, void *arg)
{
    struct connect_job *j = arg;

    (void)hv;
    j->result = hv_connect(j->a->hv, &j->err);
    if (j->result == 0)
        j->result = hv_host_info(j->a->hv, &j->info, &j->err);
    j->disk_gb = resources_disk_gb(j->a->cfg.state_dir);
}

static void schedule_reconnect(struct agent *a);
static void md_listen_networks(struct agent *a, const struct instance *only);

static void on_reconciled(void *opaque, int result)
{
    struct agent *a = opaque;

    if (result < 0) {
        schedule_reconnect(a);
        return;
    }
    md_listen_networks(a, NULL);
    dhcpd_refresh(a->dhcpd, NULL); /* hosts from the store; dnsmasq where the bridge is (after the sync) */
    if (!host_ready(a->host)) {
        struct agent_error err = {0};
        host_set_ready(a->host);
        /* the bus after the first reconcile: commands then find a settled state */
        if (events_start(a->events, &err) < 0) {
            log_error("cannot start the bus; events stay in the outbox", "field=%s error=%s",
                      err.field[0] ? err.field : "-", err.message);
        }
        sd_notify(0, "READY=1\nSTATUS=serving");
        log_info("agent ready", "api_socket=%s api_listen=%s", a->cfg.api_socket,
                 a->cfg.api_listen[0] ? a->cfg.api_listen : "-");
    }
}

static void connect_after(struct hv *hv, void *arg, int status)
{
    struct connect_job *j = arg;
    struct agent *a = j->a;

    (void)hv;
    if (status < 0 && j->result == 0) /* never ran: the layer stops */
        j->result = agent_error_set(&j->err, ECANCELED, "unavailable", NULL, "connect cancelled");
    a->connecting = false;
    if (a->stopping) {
        hv_host_info_release(&j->info);
        free(j);
        return;
    }
    if (j->result < 0) {
        log_warn("cannot connect to the hypervisor", "uri=%s retry_ms=%llu error=%s", hv_uri(a->hv),
                 (unsigned long long)a->reconnect_delay_ms, j->err.message);
        schedule_reconnect(a);
    } else {
        a->reconnect_delay_ms = 0;
        resources_set_host(a->res, &j->info, j->disk_gb);
        controller_host_changed(a->ctl, &j->info);
        log_info("connected to the hypervisor", "uri=%s driver=%s domain_type=%s reason=%s cpus=%lld memory_mb=%lld",
                 hv_uri(a->hv), hv_driver(a->hv)->name, hv_domain_type(a->hv),
                 hv_domain_type_reason(a->hv), (long long)j->info.cpus, (long long)j->info.memory_mb);
        int r = ops_reconcile(a->ops, on_reconciled, a);
        if (r < 0 && r != -EBUSY) /* busy: the reconcile under way reports */
            schedule_reconnect(a);
    }
    hv_host_info_release(&j->info);
    free(j);
}

static void start_connect(struct agent *a)
{
    struct connect_job *j;

    if (a->connecting || a->stopping)
        return;
    j = calloc(1, sizeof(*j));
    if (!j)
        return;
    j->a = a;
    a->connecting = true;
    if (hv_submit(a->hv, connect_work, connect_after, j) < 0) {
        a->connecting = false;
        free(j);
    }
}

static void on_reconnect_timer(uv_timer_t *t)
{
    start_connect(t->data);
}

/* host_on_change: Placement marks the provider. */
static void on_host_change(void *opaque, bool disabled)
{
    struct agent *a = opaque;

    controller_set_disabled(a->ctl, disabled);
}

static void schedule_reconnect(struct agent *a)
{
    uint64_t cap = (uint64_t)a->cfg.reconnect_max_s * 1000;

    if (a->stopping || uv_is_active((uv_handle_t *)&a->reconnect_timer))
        return;
    a->reconnect_delay_ms = a->reconnect_delay_ms ? a->reconnect_delay_ms * 2 : 250;
    if (a->reconnect_delay_ms > cap)
        a->reconnect_delay_ms = cap;
    uv_timer_start(&a->reconnect_timer, on_reconnect_timer, a->reconnect_delay_ms, 0);
}

/* The DHCP servers of inst's networks (each once). */
static void dhcp_refresh_ports(struct agent *a, const struct instance *inst)
{
    for (size_t k = 0; inst && k < inst->n_ports; k++) {
        bool seen = false;
        for (size_t j = 0; j < k; j++)
            seen |= !strcmp(inst->ports[j].network, inst->ports[k].network);
        if (!seen)
            dhcpd_refresh(a->dhcpd, inst->ports[k].network);
    }
}

/* ops hooks: the API's long-polls hear of the end; a lost connection is
 * reconnected. */
static void on_operation_finished(void *opaque, const struct op_record *rec, const struct instance *inst)
{
    struct agent *a = opaque;

    /* a terminate released its ports (inst has none left: every dhcp
     * network is refreshed), a failed launch unplugged them: the DHCP hosts
     * lose them (and dnsmasq stops with an agent-made bridge) */
    if (!strcmp(rec->type, "terminate"))
        dhcpd_refresh(a->dhcpd, NULL);
    else if (!strcmp(rec->type, "launch") && strcmp(rec->state, "succeeded"))
        dhcp_refresh_ports(a, inst);
    controller_operation_finished(a->ctl, rec, inst);
    if (a->api)
        api_operation_done(a->api, rec);
}

static void on_claimed(void *opaque, const struct instance *inst)
{
    struct agent *a = opaque;

    controller_claimed(a->ctl, inst);
}

static void on_resize_claimed(void *opaque, const struct instance *inst)
{
    struct agent *a = opaque;

    controller_resize_claimed(a->ctl, inst);
}

static void on_hv_lost(void *opaque)
{
    schedule_reconnect(opaque);
}

/* The metadata service on each network's bridge, once the bridge exists
 * (after the network's first plug, or a reconcile that kept its ports);
 * then, at each plug, bound again if the bridge was remade. */
static void md_listen_networks(struct agent *a, const struct instance *only)
{
    for (size_t i = 0; a->md && a->np && i < a->cfg.n_networks; i++) {
        const struct net_config *n = &a->cfg.networks[i];
        char bridge[16];
        bool used = !only;
        int r;
        for (size_t k = 0; only && k < only->n_ports; k++)
            used |= !strcmp(only->ports[k].network, n->name);
        if (!used || !n->metadata)
            continue;
        if (a->md_listening[i]) { /* the bridge may have been deleted and made again since */
            if (md_service_refresh(a->md, n->name) > 0)
                log_info("metadata service listening again (bridge made again)", "network=%s", n->name);
            continue;
        }
        if (netplug_network_bridge(a->np, n->name, bridge) < 0)
            continue;
        r = md_service_listen(a->md, n->name, bridge, a->cfg.md_address, (int)a->cfg.md_port);
        if (r == 0) {
            a->md_listening[i] = true;
            log_info("metadata service listening", "network=%s bridge=%s address=%s port=%lld", n->name, bridge,
                     a->cfg.md_address, (long long)a->cfg.md_port);
        } else if (only) {
            log_warn("metadata service cannot listen on the network yet", "network=%s bridge=%s error=%s",
                     n->name, bridge, strerror(-r));
        }
    }
}

/* Before the define: dnsmasq knows the ports (its hosts file rewritten and
 * SIGHUP, or started now that the bridge exists), so the guest's first
 * DISCOVER gets its lease. */
static void on_ports_plugged(void *opaque, const struct instance *inst)
{
    md_listen_networks(opaque, inst);
    dhcp_refresh_ports(opaque, inst);
}

/* ops hook (issue 13): a migration message to another host's agent. */
static int on_send_peer(void *opaque, const char *host, const char *key, json_t *msg)
{
    struct agent *a = opaque;
    struct bus *bus = events_bus(a->events);
    char *text;
    int r;

    if (!bus)
        return -ENOTCONN;
    if (!(text = json_dumps(msg, JSON_COMPACT)))
        return -ENOMEM;
    r = bus_send_command(bus, host, key, text, strlen(text));
    free(text);
    return r;
}

/* events hook: a bus command goes to the command handler. */
static void on_bus_command(void *opaque, const struct bus_message *msg)
{
    struct agent *a = opaque;

    commands_on_message(a->commands, msg);
}

static void on_hv_event(const struct hv_event *ev, void *opaque)
{
    struct agent *a = opaque;

    if (!a->stopping)
        ops_on_hv_event(a->ops, ev);
}

/* Telemetry: who a domain is (from the store), and where samples go (bus). */
static int tm_lookup(void *o, const char *uuid, char ec2[EC2_ID_LEN + 1], char *name, size_t ns)
{
    struct agent *a = o;
    struct instance inst;
    bool live;

    if (store_instance_get(a->store, uuid, &inst) < 0)
        return -ENOENT;
    live = !instance_is_gone(&inst);
    strscpy(ec2, inst.ec2_id, EC2_ID_LEN + 1);
    strscpy(name, inst.name ? inst.name : "", ns);
    instance_release(&inst);
    return live ? 0 : -ENOENT;
}

static int tm_sizes(void *o, const char *uuid, uint64_t *root_gb, uint64_t *ephemeral_gb)
{
    struct agent *a = o;
    struct instance inst;

    if (store_instance_get(a->store, uuid, &inst) < 0)
        return -ENOENT;
    *root_gb = inst.flavor.disk_gb > 0 ? (uint64_t)inst.flavor.disk_gb : 0;
    *ephemeral_gb = 0; /* flavors here have one disk size */
    instance_release(&inst);
    return 0;
}

static int tm_publish(void *o, const char *key, const char *json, size_t len)
{
    struct agent *a = o;
    struct bus *bus = events_bus(a->events);

    return bus ? bus_publish_telemetry(bus, key, json, len) : -ENOTCONN;
}

static void on_purge(uv_timer_t *t)
{
    struct agent *a = t->data;
    int n = store_purge_terminated(a->store, now_wall_ms() - PURGE_AFTER_MS);

    if (n > 0)
        log_info("purged terminated instances", "count=%d", n);
}

static void shutdown_agent(struct agent *a, const char *why)
{
    if (a->stopping)
        return;
    a->stopping = true;
    log_info("stopping; guests keep running", "signal=%s in_flight=%u", why, ops_in_flight(a->ops));
    sd_notify(0, "STOPPING=1");
    /* the order matters: no new requests; then the operations parked as
     * they are (journal rows kept, nothing rolled back: the next start
     * resumes them), before the image cache cancels the pulls they wait on;
     * then what only reports; the bus last, so the events of all that go
     * out (bounded flush) */
    api_free(a->api);
    a->api = NULL;
    md_service_free(a->md);
    a->md = NULL;
    dhcpd_stop(a->dhcpd); /* each dnsmasq reaped before the loop ends */
    ops_stop(a->ops);
    a->telemetry = telemetry_free(a->telemetry);
    imgcache_free(a->imgcache);
    a->imgcache = NULL;
    controller_free(a->ctl);
    a->ctl = NULL;
    events_stop(a->events);
    uv_close((uv_handle_t *)&a->reconnect_timer, NULL);
    uv_close((uv_handle_t *)&a->purge_timer, NULL);
    uv_close((uv_handle_t *)&a->sig_term, NULL);
    uv_close((uv_handle_t *)&a->sig_int, NULL);
    uv_close((uv_handle_t *)&a->sig_hup, NULL);
}

/* SIGHUP: the log level, ratios, reservations and timeouts take effect;
 * the rest needs a restart (said in the log). */
static void reload(struct agent *a)
{
    struct agent_config fresh;
    struct agent_error err;
    enum log_level lvl;

    if (!a->cfg.config_file) {
        log_info("reload: no configuration file, nothing to do", NULL);
        return;
    }
    config_init_defaults(&fresh);
    if (config_load_file(&fresh, a->cfg.config_file, &err) < 0 || config_finish(&fresh, &err) < 0) {
        log_warn("reload refused, configuration unchanged", "field=%s error=%s", err.field,
                 err.message);
        config_release(&fresh);
        return;
    }
    if (log_level_parse(fresh.log_level, &lvl) == 0)
        log_level_current = lvl;
    a->cfg.cpu_allocation_ratio = fresh.cpu_allocation_ratio;
    a->cfg.ram_allocation_ratio = fresh.ram_allocation_ratio;
    a->cfg.disk_allocation_ratio = fresh.disk_allocation_ratio;
    a->cfg.reserved_host_memory_mb = fresh.reserved_host_memory_mb;
    a->cfg.reserved_host_disk_gb = fresh.reserved_host_disk_gb;
    a->cfg.reserved_host_cpus = fresh.reserved_host_cpus;
    a->cfg.stop_timeout = fresh.stop_timeout;
    a->cfg.reboot_timeout = fresh.reboot_timeout;
    ops_set_timeouts(a->ops, a->cfg.stop_timeout, a->cfg.reboot_timeout);
    a->cfg.reconnect_max_s = fresh.reconnect_max_s;
    if (fresh.telemetry_interval_s != a->cfg.telemetry_interval_s && a->telemetry) {
        a->cfg.telemetry_interval_s = fresh.telemetry_interval_s;
        telemetry_set_interval(a->telemetry, (unsigned)fresh.telemetry_interval_s);
    }
    log_info("configuration reloaded", "file=%s log_level=%s note=\"hypervisor, api and state_dir need a restart\"",
             a->cfg.config_file, fresh.log_level);
    config_release(&fresh);
}

static void on_signal(uv_signal_t *s, int signum)
{
    struct agent *a = s->data;

    if (signum == SIGHUP)
        reload(a);
    else
        shutdown_agent(a, signum == SIGTERM ? "TERM" : "INT");
}

static int make_dir(const char *path, struct agent_error *err)
{
    if (mkdir(path, 0750) < 0 && errno != EEXIST)
        return agent_error_set(err, errno, "invalid_config", "agent.state_dir", "cannot create %s: %s", path,
                               strerror(errno));
    return 0;
}

/* One agent per state directory: an exclusive flock on STATE_DIR/agent.lock,
 * held (the fd open) for the process's life, with the holder's pid in it
 * for the next one's error. Returns the fd, or -errno with err set. */
static int lock_state_dir(const char *dir, struct agent_error *err)
{
    char path[4200], pid[32] = "";
    ssize_t n;
    int fd;

    snprintf(path, sizeof(path), "%s/agent.lock", dir);
    fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0640);
    if (fd < 0)
        return agent_error_set(err, errno, "invalid_config", "agent.state_dir", "cannot open %s: %s", path,
                               strerror(errno));
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        int e = errno;
        n = pread(fd, pid, sizeof(pid) - 1, 0);
        pid[n > 0 ? n : 0] = '\0';
        pid[strcspn(pid, "\n")] = '\0';
        close(fd);
        if (e == EWOULDBLOCK)
            return agent_error_set(err, EBUSY, "invalid_config", "agent.state_dir",
                                   "state directory %s is in use by pid %s (%s is locked)", dir,
                                   pid[0] ? pid : "unknown", path);
        return agent_error_set(err, e, "invalid_config", "agent.state_dir", "cannot lock %s: %s", path,
                               strerror(e));
    }
    n = snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) < 0 || pwrite(fd, pid, (size_t)n, 0) != n) {
        int e = errno;
        close(fd);
        return agent_error_set(err, e, "invalid_config", "agent.state_dir", "cannot write %s: %s", path,
                               strerror(e));
    }
    return fd;
}

/* Clients' connections are file descriptors: take all the kernel allows. */
static void raise_nofile(void)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static int build_imgcache(struct agent *a, const char *imgc_dir, struct agent_error *err)
{
    struct imgcache_config ic = {0};

    ic.dir = imgc_dir;
    ic.budget_bytes = (uint64_t)a->cfg.imgc_budget_mb << 20;
    ic.budget_percent = (int)a->cfg.imgc_budget_percent;
    ic.max_unused_age_s = a->cfg.imgc_max_unused_age_s;
    ic.max_virtual_size = (uint64_t)a->cfg.imgc_max_virtual_gb << 30;
    ic.ca_bundle = a->cfg.imgc_ca_bundle[0] ? a->cfg.imgc_ca_bundle : NULL;
    ic.glance_url = a->cfg.glance_url[0] ? a->cfg.glance_url : NULL;
    ic.glance_token = a->cfg.glance_token[0] ? a->cfg.glance_token : NULL;
    ic.max_parallel = (int)a->cfg.imgc_max_parallel;
    ic.stall_timeout_s = (int)a->cfg.imgc_stall_timeout_s;
    ic.retries = a->cfg.imgc_retries ? (int)a->cfg.imgc_retries : -1;
    ic.allowed_networks = a->cfg.imgc_allowed_networks;
    ic.pull_failed = on_image_pull_failed;
    return imgcache_new(a->loop, store_db(a->store), &ic, &a->imgcache, err);
}

/* The host's networks (net-plug), the metadata lookup and service. */
static int build_networking(struct agent *a, struct agent_error *err)
{
    /* the filter table checked every second: put back after a flush ruleset or a firewall reload */
    struct netplug_config npc = {.antispoof = true, .check_ms = 1000, .host_firewall = a->cfg.np_host_firewall,
                                 .md_address = a->cfg.md_address, .md_port = (uint16_t)a->cfg.md_port};
    struct np_error ne = {0};
    struct netmap_deps nd;
    int r;

    if ((r = netplug_new(&npc, &a->np, &ne)) < 0) {
        /* without networks configured, the agent runs without guest networking */
        if (a->cfg.n_networks)
            return agent_error_set(err, -r, "internal", "network", "cannot set up net-plug: %s", ne.msg);
        log_warn("net-plug unavailable; guest networking off", "error=%s", ne.msg);
        a->np = NULL;
    }
    for (size_t i = 0; a->np && i < a->cfg.n_networks; i++) {
        const struct net_config *n = &a->cfg.networks[i];
        char gw[40] = "";
        struct np_network nn = {
            .name = n->name, .type = (enum np_net_type)n->kind,
            .bridge = n->bridge && *n->bridge ? n->bridge : NULL, .parent = n->parent,
            .vlan_id = (int)n->vlan_id, .vni = (uint32_t)n->vni, .local = n->local, .remote = n->remote,
            .group = n->group, .port = (uint16_t)n->port, .mtu = (int)n->mtu,
            .metadata = n->metadata && a->cfg.md_enabled, .dhcp = n->dhcp,
        };
        for (size_t k = 0; k < n->n_dns; k++)
            nn.dns_gateway |= n->gw && n->dns_addr[k] == n->gw;
        if (n->gw) {
            net_format_ipv4(n->gw, gw);
            snprintf(gw + strlen(gw), sizeof(gw) - strlen(gw), "/%d", n->prefix);
            nn.gateway = gw;
        }
        if ((r = netplug_network_add(a->np, &nn, &ne)) < 0) {
            char field[96];
            snprintf(field, sizeof(field), "network.%s", n->name);
            return agent_error_set(err, -r, "invalid_config", field, "network %s: %s", n->name, ne.msg);
        }
    }
    if (a->np) {
        struct dhcpd_deps dd = {.store = a->store, .np = a->np, .networks = a->cfg.networks,
                                .n_networks = a->cfg.n_networks};
        struct dhcpd_config dc = {.state_dir = a->cfg.state_dir, .dnsmasq = a->cfg.dhcp_dnsmasq,
                                  .user = a->cfg.dhcp_user, .metadata = a->cfg.md_enabled};
        if ((r = dhcpd_new(a->loop, &dd, &dc, &a->dhcpd)) < 0)
            return agent_error_set(err, -r, "invalid_config", "dhcp", "cannot set up dhcp: %s", strerror(-r));
    }
    nd = (struct netmap_deps){.store = a->store, .np = a->np, .nets = a->cfg.networks,
                              .n_nets = a->cfg.n_networks,
                              .def = {.http_tokens = a->cfg.md_http_tokens, .hop_limit = (int)a->cfg.md_hop_limit}};
    if ((r = netmap_new(&nd, &a->netmap)) < 0)
        return agent_error_set(err, -r, "internal", NULL, "cannot set up: %s", strerror(-r));
    if (!a->cfg.md_enabled)
        return 0;
    if (a->cfg.n_networks && !(a->md_listening = calloc(a->cfg.n_networks, sizeof(bool))))
        return -ENOMEM;
    {
        struct md_service_config mc = {.rate = a->cfg.md_rate, .burst = (int)a->cfg.md_burst,
                                       .max_connections = (unsigned)a->cfg.md_max_connections,
                                       .max_per_network = (unsigned)a->cfg.md_max_per_network,
                                       .max_per_source = (unsigned)a->cfg.md_max_per_source};
        if ((r = md_service_new(a->loop, &mc, netmap_lookup, a->netmap, &a->md)) < 0)
            return agent_error_set(err, -r, "internal", NULL, "cannot set up the metadata service: %s",
                                   strerror(-r));
    }
    return 0;
}

/* The modules in dependency order: each gets the objects built before it.
 * 0, or -errno with err set. */
static int build(struct agent *a, const char *imgc_dir, struct agent_error *err)
{
    struct hv_config hvc = {.uri = a->cfg.libvirt_uri, .host_name = a->cfg.host_name,
                            .domain_type = !strcmp(a->cfg.hypervisor, "qemu") ? "qemu" : a->cfg.domain_type,
                            .workers = (unsigned)a->cfg.workers};
    struct events_config ec = {.host_name = a->cfg.host_name, .hypervisor = a->cfg.hypervisor,
                               .bus_brokers = a->cfg.bus_brokers, .bus_prefix = a->cfg.bus_prefix,
                               .bus_properties = a->cfg.bus_properties, .heartbeat_s = a->cfg.heartbeat_s,
                               .window_events = a->cfg.api_events_window,
                               .window_bytes = a->cfg.api_events_window_bytes};
    struct events_hooks eh = {.on_command = on_bus_command};
    struct ops_config oc = {.instances_dir = a->instances_dir, .local_image_dirs = a->cfg.local_image_dirs,
                            .stop_timeout_s = a->cfg.stop_timeout, .reboot_timeout_s = a->cfg.reboot_timeout,
                            .networks = a->cfg.networks, .n_networks = a->cfg.n_networks,
                            .availability_zone = a->cfg.md_availability_zone,
                            .config_drive = a->cfg.md_config_drive,
                            .config_drive_format = a->cfg.md_config_drive_format,
                            .xorriso = a->cfg.md_xorriso, .smbios_product = a->cfg.md_product,
                            .smbios_manufacturer = a->cfg.md_manufacturer,
                            .md_http_tokens = a->cfg.md_http_tokens, .md_hop_limit = (int)a->cfg.md_hop_limit,
                            .live_resize = a->cfg.live_resize, .max_vcpus = a->cfg.max_vcpus,
                            .max_memory_mb = a->cfg.max_memory_mb,
                            .resize_confirm_window_s = a->cfg.resize_confirm_window,
                            .resize_live_timeout_s = a->cfg.resize_live_timeout,
                            .host_name = a->cfg.host_name, .migration_uri = a->cfg.migration_uri,
                            .migration_stream_uri = a->cfg.migration_stream_uri, .image_dir = imgc_dir,
                            .migration_prepare_timeout_s = a->cfg.migration_prepare_timeout,
                            .migration_commit_timeout_s = a->cfg.migration_commit_timeout,
                            .migration_incoming_timeout_s = a->cfg.migration_incoming_timeout,
                            .migration_max_downtime_ms = a->cfg.migration_max_downtime,
                            .migration_completion_timeout_s = a->cfg.migration_completion_timeout,
                            .migration_postcopy = a->cfg.migration_postcopy,
                            .migration_bandwidth_mib_s = a->cfg.migration_bandwidth};
    struct ops_hooks oh = {.operation_finished = on_operation_finished, .hv_lost = on_hv_lost,
                           .claimed = on_claimed, .resize_claimed = on_resize_claimed, .send_peer = on_send_peer,
                           .ports_plugged = on_ports_plugged};
    int r;

    if ((r = host_new(a->store, &a->host)) < 0 || (r = metrics_new(&a->metrics)) < 0 ||
        (r = hv_new(a->loop, hv_driver_find(a->cfg.hypervisor), &hvc, on_hv_event, a, &a->hv)) < 0 ||
        (r = resources_new(&a->cfg, &a->res)) < 0)
        return agent_error_set(err, -r, "internal", NULL, "cannot set up: %s", strerror(-r));
    resources_set_disk_files(a->res, hv_supports(a->hv, HV_FEAT_DISK_FILES));
    {
        struct events_deps ed = {.store = a->store, .hv = a->hv, .res = a->res, .host = a->host,
                                 .metrics = a->metrics};
        if ((r = events_new(a->loop, &ed, &ec, &eh, a, &a->events)) < 0)
            return agent_error_set(err, -r, "internal", NULL, "cannot create the event outbox");
    }
    if ((r = build_imgcache(a, imgc_dir, err)) < 0 || (r = build_networking(a, err)) < 0)
        return r;
    if (a->cfg.instance_types[0])
        r = catalog_load(a->cfg.instance_types, &a->catalog, err);
    else
        r = catalog_builtin(&a->catalog);
    if (r < 0)
        return r;
    {
        struct ops_deps od = {.store = a->store, .hv = a->hv, .host = a->host, .res = a->res,
                              .imgcache = a->imgcache, .events = a->events, .metrics = a->metrics,
                              .np = a->np};
        struct commands_deps cd;
        oc.catalog = a->catalog;
        if ((r = ops_new(a->loop, &od, &oc, &oh, a, &a->ops)) < 0)
            return agent_error_set(err, -r, "internal", NULL, "cannot set up: %s", strerror(-r));
        cd = (struct commands_deps){.ops = a->ops, .store = a->store, .catalog = a->catalog,
                                    .events = a->events};
        if ((r = commands_new(&cd, &a->commands)) < 0)
            return agent_error_set(err, -r, "internal", NULL, "cannot set up: %s", strerror(-r));
    }
    {
        struct controller_deps ctd = {.store = a->store, .res = a->res, .hv = a->hv, .host = a->host,
                                      .events = a->events, .metrics = a->metrics};
        if ((r = controller_new(a->loop, &ctd, &a->cfg, &a->ctl, err)) < 0)
            return r;
        host_on_change(a->host, on_host_change, a);
    }
    {
        /* host disk figures: the state and the image cache directories */
        const char *dirs[] = {a->cfg.state_dir, imgc_dir, NULL};
        struct telemetry_config tc = {.interval_s = (unsigned)a->cfg.telemetry_interval_s,
                                      .host = a->cfg.host_name, .dirs = dirs,
                                      .libvirt_exporter_names = a->cfg.libvirt_exporter_names};
        struct telemetry_callbacks tcb = {.lookup = tm_lookup, .sizes = tm_sizes,
                                          .publish = tm_publish};
        if ((r = telemetry_new(a->loop, a->hv, &tc, &tcb, a, &a->telemetry, err)) < 0)
            return r;
    }
    {
        struct api_deps ad = {.store = a->store, .ops = a->ops, .host = a->host, .imgcache = a->imgcache,
                              .hv = a->hv, .res = a->res, .catalog = a->catalog, .ctl = a->ctl,
                              .events = a->events, .telemetry = a->telemetry, .metrics = a->metrics,
                              .networks = a->cfg.networks, .n_networks = a->cfg.n_networks, .np = a->np,
                              .md = a->md, .netmap = a->netmap, .dhcpd = a->dhcpd};
        struct api_config ac = {.socket = a->cfg.api_socket, .listen = a->cfg.api_listen,
                                .token = a->cfg.api_token, .metrics_listen = a->cfg.metrics_listen,
                                .header_timeout_s = a->cfg.api_header_timeout_s,
                                .request_timeout_s = a->cfg.api_request_timeout_s,
                                .per_address_limit = a->cfg.api_per_address_limit,
                                .max_connections = a->cfg.api_max_connections,
                                .host_name = a->cfg.host_name, .hypervisor = a->cfg.hypervisor,
                                .started_ms = a->started_ms};
        return api_new(a->loop, &ad, &ac, &a->api, err);
    }
}

/* What build() made, in the reverse order (each accepts NULL). */
static void release(struct agent *a)
{
    api_free(a->api);
    md_service_free(a->md);
    telemetry_free(a->telemetry);
    controller_free(a->ctl);
    commands_free(a->commands);
    ops_free(a->ops);
    netmap_free(a->netmap);
    dhcpd_free(a->dhcpd);
    netplug_free(a->np);
    free(a->md_listening);
    imgcache_free(a->imgcache);
    events_free(a->events);
    resources_free(a->res);
    hv_free(a->hv);
    metrics_free(a->metrics);
    host_free(a->host);
    catalog_free(a->catalog);
    store_free(a->store);
}

static void start_handles(struct agent *a)
{
    uv_timer_init(a->loop, &a->reconnect_timer);
    a->reconnect_timer.data = a;
    uv_timer_init(a->loop, &a->purge_timer);
    a->purge_timer.data = a;
    uv_timer_start(&a->purge_timer, on_purge, 60 * 1000, 10 * 60 * 1000);
    uv_signal_init(a->loop, &a->sig_term);
    uv_signal_init(a->loop, &a->sig_int);
    uv_signal_init(a->loop, &a->sig_hup);
    a->sig_term.data = a->sig_int.data = a->sig_hup.data = a;
    uv_signal_start(&a->sig_term, on_signal, SIGTERM);
    uv_signal_start(&a->sig_int, on_signal, SIGINT);
    uv_signal_start(&a->sig_hup, on_signal, SIGHUP);
}

int main(int argc, char **argv)
{
    struct agent a = {0};
    struct agent_error err = {0};
    char path[4200], threads[16], imgc_dir[4200];
    enum log_level lvl;
    int r, lock_fd = -1;

    signal(SIGPIPE, SIG_IGN);
    /* worker threads would each get a malloc arena; two serve them well */
    mallopt(M_ARENA_MAX, 2);
    config_init_defaults(&a.cfg);
    r = config_from_args(&a.cfg, argc, argv, &err);
    if (r == 1) {
        config_release(&a.cfg);
        return 0;
    }
    if (r < 0 || config_finish(&a.cfg, &err) < 0) {
        fprintf(stderr, "compute-agent: %s\n", err.message);
        config_release(&a.cfg);
        return 2;
    }
    log_level_parse(a.cfg.log_level, &lvl);
    log_level_current = lvl;
    a.started_ms = now_wall_ms();
    snprintf(threads, sizeof(threads), "%lld", (long long)a.cfg.workers);
    setenv("UV_THREADPOOL_SIZE", threads, 0);
    a.loop = uv_default_loop();

    snprintf(a.instances_dir, sizeof(a.instances_dir), "%s/instances", a.cfg.state_dir);
    /* the lock before anything that touches the directory's contents */
    if (make_dir(a.cfg.state_dir, &err) < 0 || (lock_fd = lock_state_dir(a.cfg.state_dir, &err)) < 0 ||
        make_dir(a.instances_dir, &err) < 0)
        goto fail;
    raise_nofile();
    snprintf(path, sizeof(path), "%s/agent.db", a.cfg.state_dir);
    if (store_open(path, !strcmp(a.cfg.store_sync, "full"), &a.store, &err) < 0)
        goto fail;
    if (a.cfg.imgc_dir[0])
        strscpy(imgc_dir, a.cfg.imgc_dir, sizeof(imgc_dir));
    else
        snprintf(imgc_dir, sizeof(imgc_dir), "%s/images", a.cfg.state_dir);
    if (build(&a, imgc_dir, &err) < 0)
        goto fail;
    start_handles(&a);
    /* DHCP for the guests still running on bridges that exist, from the
     * store's ports, without waiting for the hypervisor (each reconcile
     * refreshes it) */
    dhcpd_refresh(a.dhcpd, NULL);

    log_info("compute-agent starting", "version=%s state_dir=%s hypervisor=%s uri=%s", CA_VERSION,
             a.cfg.state_dir, a.cfg.hypervisor, hv_uri(a.hv));
    start_connect(&a);
    uv_run(a.loop, UV_RUN_DEFAULT);

    /* every handle but the hypervisor's async is closed; close it too */
    hv_free(a.hv);
    a.hv = NULL;
    uv_run(a.loop, UV_RUN_DEFAULT);
    /* what shutdown_agent() freed is NULL; the rest goes now */
    release(&a);
    r = uv_loop_close(a.loop);
    if (r < 0)
        log_warn("loop closed with handles open", "error=%s", uv_strerror(r));
    log_info("compute-agent stopped", NULL);
    config_release(&a.cfg);
    close(lock_fd);
    return 0;
fail:
    log_error("cannot start", "field=%s error=%s", err.field[0] ? err.field : "-", err.message);
    release(&a);
    config_release(&a.cfg);
    if (lock_fd >= 0)
        close(lock_fd);
    return 1;
}
