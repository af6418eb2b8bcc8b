/* openstack.c: the OpenStack layout (nova's metadata API as cloud-init's
 * OpenStack datasource and ConfigDriveReader read it): "/openstack" lists
 * the versions, "/openstack/<v>/" its files: meta_data.json, user_data
 * (only when there is one), vendor_data.json, network_data.json,
 * vendor_data2.json, each from the version nova added it in. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/metadata/md-internal.h"

const char *const md_os_versions[] = {
    "2012-08-10", "2013-04-04", "2013-10-17", "2015-10-15", "2016-06-30",
    "2016-10-06", "2017-02-22", "2018-08-27", "2020-10-14", "latest",
};
const size_t md_os_n_versions = ARRAY_SIZE(md_os_versions);

static bool version_known(const char *v, size_t len)
{
    for (size_t i = 0; i < md_os_n_versions; i++)
        if (strlen(md_os_versions[i]) == len && !memcmp(md_os_versions[i], v, len))
            return true;
    return false;
}

/* Is version v (known) at least since ("latest" is newest)? */
static bool since(const char *v, const char *since_v)
{
    return !strcmp(v, "latest") || strcmp(v, since_v) >= 0;
}

static const char *or_default(const char *s, const char *d)
{
    return s && s[0] ? s : d;
}

static char *random_seed(void)
{
    uint8_t raw[512];
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *out = malloc(4 * ((sizeof(raw) + 2) / 3) + 1), *o = out;
    size_t i;

    if (!out || random_bytes(raw, sizeof(raw)) < 0) {
        free(out);
        return NULL;
    }
    for (i = 0; i + 3 <= sizeof(raw); i += 3) {
        uint32_t v = (uint32_t)raw[i] << 16 | (uint32_t)raw[i + 1] << 8 | raw[i + 2];
        *o++ = b64[v >> 18 & 63];
        *o++ = b64[v >> 12 & 63];
        *o++ = b64[v >> 6 & 63];
        *o++ = b64[v & 63];
    }
    if (i < sizeof(raw)) { /* 512 = 3 * 170 + 2 */
        uint32_t v = (uint32_t)raw[i] << 16 | (uint32_t)(i + 1 < sizeof(raw) ? raw[i + 1] : 0) << 8;
        *o++ = b64[v >> 18 & 63];
        *o++ = b64[v >> 12 & 63];
        *o++ = i + 1 < sizeof(raw) ? b64[v >> 6 & 63] : '=';
        *o++ = '=';
    }
    *o = '\0';
    return out;
}

json_t *md_os_meta_data(const struct md_instance *m, const char *version)
{
    json_t *doc, *pk = json_object(), *keys = json_array(), *meta = json_object();
    const char *host = or_default(m->hostname, or_default(m->name, m->uuid));

    if (!pk || !keys || !meta)
        goto fail;
    for (size_t i = 0; i < m->n_keys; i++) {
        const struct md_key *k = &m->keys[i];
        const char *name = or_default(k->name, "key");
        if (json_object_set_new(pk, name, json_string(k->data ? k->data : "")) < 0 ||
            json_array_append_new(keys, json_pack("{s:s, s:s, s:s}", "name", name, "type",
                                                  or_default(k->type, "ssh"), "data", k->data ? k->data : "")) < 0)
            goto fail;
    }
    for (size_t i = 0; i < m->n_meta; i++)
        if (json_object_set_new(meta, m->meta[i].key, json_string(m->meta[i].value ? m->meta[i].value : "")) < 0)
            goto fail;
    doc = json_pack("{s:s, s:s, s:s, s:s, s:i, s:o, s:o, s:o}", "uuid", m->uuid, "name",
                    or_default(m->name, host), "hostname", host, "availability_zone",
                    or_default(m->availability_zone, "nova"), "launch_index", m->launch_index, "public_keys", pk,
                    "keys", keys, "meta", meta);
    if (!doc)
        return NULL;
    if (since(version, "2013-04-04")) {
        char *seed = random_seed();
        if (!seed || json_object_set_new(doc, "random_seed", json_string(seed)) < 0) {
            free(seed);
            json_decref(doc);
            return NULL;
        }
        free(seed);
    }
    if (since(version, "2015-10-15") && m->project_id && m->project_id[0] &&
        json_object_set_new(doc, "project_id", json_string(m->project_id)) < 0) {
        json_decref(doc);
        return NULL;
    }
    if (since(version, "2016-06-30") && json_object_set_new(doc, "devices", json_array()) < 0) {
        json_decref(doc);
        return NULL;
    }
    return doc;
fail:
    json_decref(pk);
    json_decref(keys);
    json_decref(meta);
    return NULL;
}

static bool add_dns(json_t *list, const char *addr)
{
    size_t i;
    json_t *v;

    json_array_foreach(list, i, v)
        if (!strcmp(json_string_value(json_object_get(v, "address")), addr))
            return true;
    return json_array_append_new(list, json_pack("{s:s, s:s}", "type", "dns", "address", addr)) == 0;
}

json_t *md_os_network_data(const struct md_instance *m)
{
    json_t *links = json_array(), *nets = json_array(), *svcs = json_array();

    if (!links || !nets || !svcs)
        goto fail;
    for (size_t i = 0; i < m->n_ifaces; i++) {
        const struct md_iface *f = &m->ifaces[i];
        char id[32], netid[32], mask[16];
        json_t *net, *routes = json_array(), *ns = json_array();

        snprintf(id, sizeof(id), "interface%zu", i);
        snprintf(netid, sizeof(netid), "network%zu", i);
        if (!routes || !ns ||
            json_array_append_new(links, json_pack("{s:s, s:s?, s:s, s:o, s:s}", "id", id, "vif_id",
                                                   f->port_id[0] ? f->port_id : NULL, "type", "phy", "mtu",
                                                   f->mtu > 0 ? json_integer(f->mtu) : json_null(),
                                                   "ethernet_mac_address", f->mac)) < 0) {
            json_decref(routes);
            json_decref(ns);
            goto fail;
        }
        for (size_t j = 0; j < f->n_dns; j++)
            if (!add_dns(ns, f->dns[j]) || !add_dns(svcs, f->dns[j])) {
                json_decref(routes);
                json_decref(ns);
                goto fail;
            }
        if (f->ipv4[0] && md_ipv4_netmask(f->prefix, mask)) {
            if (f->gateway[0] && json_array_append_new(routes, json_pack("{s:s, s:s, s:s}", "network", "0.0.0.0",
                                                                         "netmask", "0.0.0.0", "gateway",
                                                                         f->gateway)) < 0) {
                json_decref(routes);
                json_decref(ns);
                goto fail;
            }
            net = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:o, s:o}", "id", netid, "type", "ipv4", "link", id,
                            "network_id", f->network[0] ? f->network : netid, "ip_address", f->ipv4, "netmask",
                            mask, "routes", routes, "services", ns);
        } else {
            json_decref(routes);
            net = json_pack("{s:s, s:s, s:s, s:s, s:o}", "id", netid, "type", "ipv4_dhcp", "link", id,
                            "network_id", f->network[0] ? f->network : netid, "services", ns);
        }
        if (json_array_append_new(nets, net) < 0)
            goto fail;
    }
    return json_pack("{s:o, s:o, s:o}", "links", links, "networks", nets, "services", svcs);
fail:
    json_decref(links);
    json_decref(nets);
    json_decref(svcs);
    return NULL;
}

json_t *md_os_vendor_data(void)
{
    return json_object();
}

size_t md_os_files(const struct md_instance *m, const char *version, const char *names[8])
{
    size_t n = 0;

    names[n++] = "meta_data.json";
    if (m->has_user_data)
        names[n++] = "user_data";
    if (since(version, "2013-10-17"))
        names[n++] = "vendor_data.json";
    if (since(version, "2015-10-15"))
        names[n++] = "network_data.json";
    if (since(version, "2016-10-06"))
        names[n++] = "vendor_data2.json";
    names[n] = NULL;
    return n;
}

static int list(struct md_answer *out, const char *const *names, size_t n)
{
    char buf[512];
    size_t len = 0;

    for (size_t i = 0; i < n; i++)
        len += (size_t)snprintf(buf + len, sizeof(buf) - len, "%s%s", i ? "\n" : "", names[i]);
    return md_answer_text(out, 200, buf);
}

int md_os_render(const struct md_instance *m, const char *path, struct md_answer *out)
{
    const char *p = path + 10, *file; /* after "/openstack" */
    const char *names[8];
    char version[16];
    size_t vlen, n;

    if (!strcmp(p, "") || !strcmp(p, "/"))
        return list(out, md_os_versions, md_os_n_versions);
    p++;
    file = strchr(p, '/');
    vlen = file ? (size_t)(file - p) : strlen(p);
    if (!version_known(p, vlen))
        return md_answer_text(out, 404, "Not Found");
    memcpy(version, p, vlen);
    version[vlen] = '\0';
    n = md_os_files(m, version, names);
    if (!file || !file[1])
        return list(out, names, n);
    file++;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(file, names[i]))
            continue;
        if (!strcmp(file, "meta_data.json"))
            return md_answer_json(out, md_os_meta_data(m, version));
        if (!strcmp(file, "network_data.json"))
            return md_answer_json(out, md_os_network_data(m));
        if (!strcmp(file, "user_data"))
            return md_answer_bytes(out, 200, "application/octet-stream", m->user_data ? m->user_data : (uint8_t *)"",
                                   m->user_data ? m->user_data_len : 0);
        return md_answer_json(out, md_os_vendor_data());
    }
    return md_answer_text(out, 404, "Not Found");
}
