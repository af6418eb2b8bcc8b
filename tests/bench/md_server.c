/* md_server: the metadata service (agent/metadata) on a loop of its own, for
 * the cloud-init integration test and the metadata benchmark. Instances
 * come from a JSON fixture; the lookup accepts a peer only when its address
 * is the IPv4 of one of an instance's interfaces on the network that
 * accepted the connection (a fixed stand-in for the agent's tap + MAC + IP
 * check).
 *
 * usage: md_server --fixture FILE [--listen ADDR] [--port N] [--network NAME]
 *                  [--bind-dev DEV] [--rate R] [--burst B] [--metrics FILE]
 *                  [--ready FILE]
 *        md_server --fixture FILE --drive ISO [--drive-kind config-2|nocloud]
 * Fixture: {"instances": [{"uuid", "ec2_id", "name", "hostname",
 *   "availability_zone", "instance_type", "image_id", "project_id", "arch",
 *   "launch_index", "keys": {name: key}, "meta": {k: v}, "user_data",
 *   "http_tokens", "hop_limit", "endpoint": bool, "interfaces": [{"mac",
 *   "ip", "prefix", "gateway", "dns": [], "mtu", "network", "port_id"}]}]}
 * SIGUSR1 writes the Prometheus text to --metrics; SIGTERM/SIGINT stop. */
#include <arpa/inet.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "agent/metadata.h"

struct fixture {
    struct md_instance **inst;
    size_t n;
};

static char *dup_str(json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s ? strdup(s) : NULL;
}

static void copy_to(char *dst, size_t size, json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    strscpy(dst, s ? s : "", size);
}

static struct md_instance *instance_of(json_t *j)
{
    struct md_instance *m = md_instance_new();
    json_t *keys = json_object_get(j, "keys"), *meta = json_object_get(j, "meta"),
           *ifs = json_object_get(j, "interfaces"), *v;
    const char *k, *ud = json_string_value(json_object_get(j, "user_data"));
    size_t i;

    if (!m)
        return NULL;
    copy_to(m->uuid, sizeof(m->uuid), j, "uuid");
    copy_to(m->ec2_id, sizeof(m->ec2_id), j, "ec2_id");
    m->name = dup_str(j, "name");
    m->hostname = dup_str(j, "hostname");
    m->availability_zone = dup_str(j, "availability_zone");
    m->instance_type = dup_str(j, "instance_type");
    m->image_id = dup_str(j, "image_id");
    m->project_id = dup_str(j, "project_id");
    m->arch = dup_str(j, "arch");
    m->launch_index = (int)json_integer_value(json_object_get(j, "launch_index"));
    m->created_ms = now_wall_ms();
    m->keys = calloc(json_object_size(keys) + 1, sizeof(*m->keys));
    json_object_foreach(keys, k, v) {
        m->keys[m->n_keys].name = strdup(k);
        m->keys[m->n_keys].type = strdup("ssh");
        m->keys[m->n_keys].data = strdup(json_string_value(v) ? json_string_value(v) : "");
        m->n_keys++;
    }
    m->meta = calloc(json_object_size(meta) + 1, sizeof(*m->meta));
    json_object_foreach(meta, k, v) {
        m->meta[m->n_meta].key = strdup(k);
        m->meta[m->n_meta].value = strdup(json_string_value(v) ? json_string_value(v) : "");
        m->n_meta++;
    }
    if (ud) {
        m->user_data = (uint8_t *)strdup(ud);
        m->user_data_len = strlen(ud);
        m->has_user_data = true;
    }
    m->ifaces = calloc(json_array_size(ifs) + 1, sizeof(*m->ifaces));
    json_array_foreach(ifs, i, v) {
        struct md_iface *f = &m->ifaces[m->n_ifaces++];
        json_t *dns = json_object_get(v, "dns"), *d;
        size_t n;
        copy_to(f->mac, sizeof(f->mac), v, "mac");
        copy_to(f->ipv4, sizeof(f->ipv4), v, "ip");
        copy_to(f->gateway, sizeof(f->gateway), v, "gateway");
        copy_to(f->network, sizeof(f->network), v, "network");
        copy_to(f->port_id, sizeof(f->port_id), v, "port_id");
        f->prefix = json_object_get(v, "prefix") ? (int)json_integer_value(json_object_get(v, "prefix")) : 24;
        f->mtu = (int)json_integer_value(json_object_get(v, "mtu"));
        f->device_number = (int)i;
        f->dns = calloc(json_array_size(dns) + 1, sizeof(char *));
        json_array_foreach(dns, n, d) f->dns[f->n_dns++] = strdup(json_string_value(d) ? json_string_value(d) : "");
    }
    v = json_object_get(j, "http_tokens");
    m->http_tokens = v && !strcmp(json_string_value(v) ? json_string_value(v) : "", "required") ? MD_TOKENS_REQUIRED
                                                                                               : MD_TOKENS_OPTIONAL;
    m->hop_limit = json_object_get(j, "hop_limit") ? (int)json_integer_value(json_object_get(j, "hop_limit")) : 1;
    m->endpoint_enabled = !json_is_false(json_object_get(j, "endpoint"));
    return m;
}

static int lookup(void *opaque, const char *network, const struct sockaddr_in *peer, struct md_instance **out)
{
    struct fixture *fx = opaque;
    char ip[16];

    if (!inet_ntop(AF_INET, &peer->sin_addr, ip, sizeof(ip)))
        return -ENOENT;
    for (size_t i = 0; i < fx->n; i++)
        for (size_t j = 0; j < fx->inst[i]->n_ifaces; j++) {
            const struct md_iface *f = &fx->inst[i]->ifaces[j];
            if (!strcmp(f->ipv4, ip) && !strcmp(f->network, network)) {
                *out = md_instance_ref(fx->inst[i]);
                return 0;
            }
        }
    return -ENOENT;
}

static struct md_service *svc;
static const char *metrics_path;

static void on_signal(uv_signal_t *h, int signum)
{
    if (signum == SIGUSR1) {
        FILE *f = metrics_path ? fopen(metrics_path, "w") : NULL;
        if (f) {
            md_service_metrics(svc, f);
            fclose(f);
        }
        return;
    }
    uv_stop(h->loop);
}

static void on_close_walk(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

int main(int argc, char **argv)
{
    const char *fixture = NULL, *addr = "169.254.169.254", *network = "n1", *dev = NULL, *drive = NULL,
               *kind = "config-2", *ready = NULL;
    struct md_service_config cfg = {.rate = 50, .burst = 100};
    struct fixture fx = {0};
    json_error_t jerr;
    json_t *doc, *list, *v;
    uv_loop_t loop;
    uv_signal_t sig[3];
    int port = 80, r;
    size_t i;

    for (int a = 1; a + 1 < argc; a += 2) {
        const char *o = argv[a], *val = argv[a + 1];
        if (!strcmp(o, "--fixture"))
            fixture = val;
        else if (!strcmp(o, "--listen"))
            addr = val;
        else if (!strcmp(o, "--port"))
            port = (int)strtol(val, NULL, 10);
        else if (!strcmp(o, "--network"))
            network = val;
        else if (!strcmp(o, "--bind-dev"))
            dev = val;
        else if (!strcmp(o, "--rate"))
            cfg.rate = strtod(val, NULL);
        else if (!strcmp(o, "--burst"))
            cfg.burst = (int)strtol(val, NULL, 10);
        else if (!strcmp(o, "--metrics"))
            metrics_path = val;
        else if (!strcmp(o, "--ready"))
            ready = val;
        else if (!strcmp(o, "--drive"))
            drive = val;
        else if (!strcmp(o, "--drive-kind"))
            kind = val;
        else {
            fprintf(stderr, "md_server: unknown option %s\n", o);
            return 2;
        }
    }
    if (!fixture) {
        fprintf(stderr, "usage: md_server --fixture FILE [...]\n");
        return 2;
    }
    doc = json_load_file(fixture, 0, &jerr);
    list = json_object_get(doc, "instances");
    if (!json_is_array(list)) {
        fprintf(stderr, "md_server: %s: %s\n", fixture, doc ? "no \"instances\" list" : jerr.text);
        return 2;
    }
    fx.inst = calloc(json_array_size(list) + 1, sizeof(*fx.inst));
    json_array_foreach(list, i, v) fx.inst[fx.n++] = instance_of(v);
    json_decref(doc);
    if (drive) {
        struct agent_error err = {0};
        r = md_drive_build(fx.inst[0], !strcmp(kind, "nocloud") ? MD_DRIVE_NOCLOUD : MD_DRIVE_CONFIG2, drive, NULL,
                           &err);
        if (r < 0)
            fprintf(stderr, "md_server: %s\n", err.message);
    } else {
        uv_loop_init(&loop);
        if ((r = md_service_new(&loop, &cfg, lookup, &fx, &svc)) < 0 ||
            (r = md_service_listen(svc, network, dev, addr, port)) < 0) {
            fprintf(stderr, "md_server: cannot listen on %s:%d: %s\n", addr, port, strerror(-r));
            return 1;
        }
        for (int s = 0; s < 3; s++) {
            uv_signal_init(&loop, &sig[s]);
            uv_signal_start(&sig[s], on_signal, s == 0 ? SIGTERM : s == 1 ? SIGINT : SIGUSR1);
        }
        if (ready) {
            FILE *f = fopen(ready, "w");
            if (f) {
                fprintf(f, "%d\n", md_service_port(svc, network));
                fclose(f);
            }
        }
        fprintf(stderr, "md_server: listening on %s:%d (network %s)\n", addr, md_service_port(svc, network),
                network);
        uv_run(&loop, UV_RUN_DEFAULT);
        md_service_free(svc);
        uv_walk(&loop, on_close_walk, NULL);
        uv_run(&loop, UV_RUN_DEFAULT);
        r = uv_loop_close(&loop) == 0 ? 0 : -EBUSY;
    }
    for (i = 0; i < fx.n; i++)
        md_instance_free(fx.inst[i]);
    free(fx.inst);
    return r < 0 ? 1 : 0;
}
