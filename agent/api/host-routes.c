/* host-routes.c: the host's routes: GET /v1/host, POST /v1/host/disable and
 * /v1/host/enable (host.h keeps the state), GET /healthz, and the text of
 * GET /metrics (server.c sends it: it is not JSON). Named so as not to be
 * taken for agent/host.c, the host module itself. */
#include <stdio.h>
#include <stdlib.h>

#include "agent/api/api-internal.h"
#include "agent/bus.h"
#include "agent/controller.h"
#include "agent/dhcpd.h"
#include "agent/events.h"
#include "agent/host.h"
#include "agent/hypervisor/hv.h"
#include "agent/config.h"
#include "agent/metadata.h"
#include "agent/metrics.h"
#include "agent/netmap.h"
#include "net-plug/netplug.h"
#include "agent/ops.h"
#include "agent/resources.h"
#include "agent/telemetry.h"

int api_healthz(const struct api_call *call, json_t **reply)
{
    bool ready = host_ready(call->deps->host);

    *reply = json_pack("{s:s}", "status", ready ? "ok" : "starting");
    return ready ? 200 : 503;
}

int api_host_show(const struct api_call *call, json_t **reply)
{
    const struct api_deps *d = call->deps;
    const char *provider = controller_provider_uuid(d->ctl);
    json_t *o = json_object();

    json_object_set_new(o, "hostname", json_string(call->cfg->host_name));
    json_object_set_new(o, "hypervisor", json_string(call->cfg->hypervisor));
    json_object_set_new(o, "domain_type", json_string(hv_domain_type(d->hv)));
    json_object_set_new(o, "domain_type_reason", json_string(hv_domain_type_reason(d->hv)));
    json_object_set_new(o, "libvirt_uri", json_string(hv_uri(d->hv)));
    json_object_set_new(o, "version", json_string(CA_VERSION));
    json_object_set_new(o, "state", json_string(host_disabled(d->host) ? "disabled" : "enabled"));
    json_object_set_new(o, "provider_uuid", provider ? json_string(provider) : json_null());
    json_object_set_new(o, "placement", controller_to_json(d->ctl));
    json_object_set_new(o, "bus", events_bus_json(d->events));
    json_object_set_new(o, "libvirt", json_pack("{s:b}", "connected", hv_connected(d->hv)));
    /* issue 12: what the driver can resize (cold: any driver, guest stopped) */
    json_object_set_new(o, "resize",
                        json_pack("{s:b, s:b, s:b}", "live_vcpus", hv_supports(d->hv, HV_FEAT_VCPU_HOTPLUG),
                                  "live_memory", hv_supports(d->hv, HV_FEAT_MEM_HOTPLUG), "cold", 1));
    json_object_set_new(o, "operations_in_flight", json_integer(ops_in_flight(d->ops)));
    json_object_set_new(o, "uptime_s", json_integer((now_wall_ms() - call->cfg->started_ms) / 1000));
    resources_to_json(d->res, d->store, o);
    *reply = o;
    return 200;
}

static int set_disabled(const struct api_call *call, bool disabled, json_t **reply)
{
    struct agent_error e;

    if (host_set_disabled(call->deps->host, disabled, &e) < 0)
        return api_fail(reply, &e);
    return api_host_show(call, reply);
}

int api_host_disable(const struct api_call *call, json_t **reply)
{
    return set_disabled(call, true, reply);
}

int api_host_enable(const struct api_call *call, json_t **reply)
{
    return set_disabled(call, false, reply);
}

int api_networks_list(const struct api_call *call, json_t **reply)
{
    const struct api_deps *d = call->deps;
    json_t *list = json_array();

    for (size_t i = 0; i < d->n_networks; i++) {
        const struct net_config *n = &d->networks[i];
        char bridge[16] = "", gw[16];
        json_t *dns = json_array(), *o;
        for (size_t k = 0; k < n->n_dns; k++) {
            char a[16];
            net_format_ipv4(n->dns_addr[k], a);
            json_array_append_new(dns, json_string(a));
        }
        if (!d->np || netplug_network_bridge(d->np, n->name, bridge) < 0)
            strscpy(bridge, n->bridge && *n->bridge ? n->bridge : "", sizeof(bridge));
        if (n->gw)
            net_format_ipv4(n->gw, gw);
        o = json_pack("{s:s, s:s, s:s, s:o, s:o, s:o, s:o, s:b, s:b}", "name", n->name, "type", n->type,
                      "bridge", bridge, "cidr", n->cidr && *n->cidr ? json_string(n->cidr) : json_null(),
                      "gateway", n->gw ? json_string(gw) : json_null(), "dns", dns, "mtu",
                      n->mtu ? json_integer(n->mtu) : json_null(), "dhcp", n->dhcp, "metadata", n->metadata);
        if (n->range_lo)
            json_object_set_new(o, "ip_range", json_string(n->ip_range));
        if (n->dhcp && d->dhcpd)
            json_object_set_new(o, "dhcp_server", dhcpd_network_json(d->dhcpd, n->name));
        if (n->kind == NET_VLAN)
            json_object_set_new(o, "vlan_id", json_integer(n->vlan_id));
        if (n->kind == NET_VLAN || (n->kind == NET_VXLAN && n->parent))
            json_object_set_new(o, "parent", json_string(n->parent));
        if (n->kind == NET_VXLAN) {
            json_object_set_new(o, "vni", json_integer(n->vni));
            json_object_set_new(o, "port", json_integer(n->port ? n->port : 4789));
            if (n->local)
                json_object_set_new(o, "local", json_string(n->local));
            if (n->remote)
                json_object_set_new(o, "remote", json_string(n->remote));
            if (n->group)
                json_object_set_new(o, "group", json_string(n->group));
        }
        json_array_append_new(list, o);
    }
    *reply = json_pack("{s:o}", "networks", list);
    return 200;
}

int api_metrics_text(const struct api_deps *deps, char **text, size_t *len)
{
    struct bus *bus = events_bus(deps->events);
    FILE *f;

    *text = NULL;
    *len = 0;
    if (!(f = open_memstream(text, len)))
        return -ENOMEM;
    if (bus) {
        struct bus_stats bs;
        bus_stats(bus, &bs);
        metrics_bus_update(deps->metrics, &bs);
    }
    metrics_set_up(deps->metrics, deps->hv && hv_connected(deps->hv), controller_reachable(deps->ctl));
    metrics_render_prometheus(deps->metrics, f);
    if (deps->telemetry)
        telemetry_render_prometheus(deps->telemetry, f);
    if (deps->md) {
        md_service_metrics(deps->md, f);
        if (deps->netmap)
            netmap_metrics(deps->netmap, f);
    }
    if (fclose(f) != 0) {
        free(*text);
        *text = NULL;
        return -EIO;
    }
    return 0;
}
