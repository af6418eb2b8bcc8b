/* host-routes.c: the host's routes: GET /v1/host, POST /v1/host/disable and
 * /v1/host/enable (host.h keeps the state), GET /healthz, and the text of
 * GET /metrics (server.c sends it: it is not JSON). Named so as not to be
 * taken for agent/host.c, the host module itself. */
#include <stdio.h>
#include <stdlib.h>

#include "agent/api/api-internal.h"
#include "agent/bus.h"
#include "agent/controller.h"
#include "agent/events.h"
#include "agent/host.h"
#include "agent/hypervisor/hv.h"
#include "agent/metrics.h"
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
    metrics_render_prometheus(deps->metrics, f);
    if (deps->telemetry)
        telemetry_render_prometheus(deps->telemetry, f);
    if (fclose(f) != 0) {
        free(*text);
        *text = NULL;
        return -EIO;
    }
    return 0;
}
