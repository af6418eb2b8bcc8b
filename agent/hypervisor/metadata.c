/* metadata.c: our <metadata> element read back from libvirt (outside
 * input: checked like a launch request), so an instance's identity can be
 * recovered from libvirt alone. The writer is domxml_metadata() in
 * domxml.c. */
#include <libxml/parser.h>
#include <libxml/tree.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/hypervisor/hv-internal.h"

/* ---- reading our metadata back: outside input ---- */

#define META_MAX (64 * 1024) /* far more than we ever write */

/* Our element or attribute namespace: ours, or none (libvirt 9.0 returns the
 * element it found by our URI without the declaration). */
static bool ns_ok(const xmlNs *ns)
{
    return !ns || (ns->href && strcmp((const char *)ns->href, CA_XMLNS_URI) == 0);
}

static bool clean_text(const char *s, size_t maxlen)
{
    size_t n = 0;

    for (const unsigned char *p = (const unsigned char *)s; *p; p++, n++)
        if (*p < 0x20 || *p == 0x7f)
            return false;
    return n <= maxlen;
}

static bool clean_path(const char *s)
{
    return clean_text(s, 4096) && s[0] == '/' && !strstr(s, "/../") && !strstr(s, "/./");
}

/* Attribute name of n into *out (NULL if absent). -EINVAL with err if present
 * but empty, too long, with control characters, or (path) not an absolute,
 * normalized path. */
static int meta_attr(xmlNodePtr n, const char *name, size_t maxlen, bool path, bool required,
                     char **out, struct agent_error *err)
{
    xmlChar *v = xmlGetNoNsProp(n, BAD_CAST name);
    const char *s = (const char *)v;
    bool ok;

    *out = NULL;
    if (!v)
        return required ? agent_error_set(err, EINVAL, "invalid_field", name,
                                          "metadata %s: attribute %s missing", n->name, name)
                        : 0;
    ok = *s && (path ? clean_path(s) : clean_text(s, maxlen));
    if (ok)
        *out = strdup(s);
    xmlFree(v);
    if (!ok)
        return agent_error_set(err, EINVAL, "invalid_field", name, "metadata %s: invalid %s",
                               n->name, name);
    return *out ? 0 : -ENOMEM;
}

static int meta_int(xmlNodePtr n, const char *name, int64_t min, int64_t max, int64_t *out,
                    struct agent_error *err)
{
    char *v = NULL;
    int r = meta_attr(n, name, 32, false, true, &v, err);

    if (r == 0 && parse_int64(v, min, max, out) < 0)
        r = agent_error_set(err, EINVAL, "invalid_field", name,
                            "metadata flavor: %s must be an integer from %lld to %lld", name,
                            (long long)min, (long long)max);
    free(v);
    return r;
}

/* The bounds are a launch request's (instance.c). */
static int meta_flavor(xmlNodePtr n, struct instance *id, struct agent_error *err)
{
    int r;

    if ((r = meta_int(n, "vcpus", 1, 256, &id->flavor.vcpus, err)) < 0 ||
        (r = meta_int(n, "memory_mb", 16, 4194304, &id->flavor.memory_mb, err)) < 0 ||
        (r = meta_int(n, "disk_gb", 0, 65536, &id->flavor.disk_gb, err)) < 0)
        return r;
    return meta_attr(n, "type", 64, false, false, &id->instance_type, err);
}

static int meta_kernel(xmlNodePtr n, struct boot_source *b, struct agent_error *err)
{
    int r;

    b->kind = BOOT_KERNEL;
    if ((r = meta_attr(n, "path", 0, true, true, &b->kernel, err)) < 0 ||
        (r = meta_attr(n, "initrd", 0, true, false, &b->initrd, err)) < 0)
        return r;
    return meta_attr(n, "cmdline", 2048, false, false, &b->cmdline, err);
}

/* An image as the store keeps it: one of path, url (with its digest) or
 * glance_id, and the cache's id once the cache resolved it. */
static int meta_image(xmlNodePtr n, struct boot_source *b, struct agent_error *err)
{
    int r;

    if ((r = meta_attr(n, "path", 0, true, false, &b->image_path, err)) < 0 ||
        (r = meta_attr(n, "id", 200, false, false, &b->image_id, err)) < 0 ||
        (r = meta_attr(n, "url", 4096, false, false, &b->image_url, err)) < 0 ||
        (r = meta_attr(n, "digest", 200, false, false, &b->image_digest, err)) < 0 ||
        (r = meta_attr(n, "glance_id", 64, false, false, &b->image_glance_id, err)) < 0)
        return r;
    if (!!b->image_path + !!b->image_url + !!b->image_glance_id > 1 ||
        (b->image_path && b->image_id) || (b->image_digest && !b->image_url) ||
        !boot_source_has_image(b))
        return agent_error_set(err, EINVAL, "invalid_field", "image",
                               "metadata image: inconsistent path/id/url/digest/glance_id");
    return 0;
}

static int meta_host(xmlNodePtr n, struct hv_owner *own, struct agent_error *err)
{
    char *name = NULL, *uuid = NULL;
    int r;

    if ((r = meta_attr(n, "name", sizeof(own->host) - 1, false, true, &name, err)) < 0 ||
        (r = meta_attr(n, "uuid", 36, false, false, &uuid, err)) < 0)
        goto out;
    if (uuid && !uuid_is_valid(uuid)) {
        r = agent_error_set(err, EINVAL, "invalid_field", "host.uuid", "metadata host: invalid uuid");
        goto out;
    }
    strscpy(own->host, name, sizeof(own->host));
    strscpy(own->host_uuid, uuid ? uuid : "", sizeof(own->host_uuid));
out:
    free(name);
    free(uuid);
    return r;
}

static bool mac_ok(const char *s)
{
    if (strlen(s) != 17)
        return false;
    for (int i = 0; i < 17; i++) {
        char c = s[i];
        if (i % 3 == 2 ? c != ':' : !((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return false;
    }
    return true;
}

static bool ipv4_ok(const char *s)
{
    unsigned a, b, c, d;
    char tail, norm[16];

    if (sscanf(s, "%3u.%3u.%3u.%3u%c", &a, &b, &c, &d, &tail) != 4 || a > 255 || b > 255 || c > 255 ||
        d > 255)
        return false;
    snprintf(norm, sizeof(norm), "%u.%u.%u.%u", a, b, c, d);
    return !strcmp(norm, s);
}

/* One interface (issue 10): <port id= index= network= mac= ip= device= mtu=>,
 * appended to id->ports (at most IFACE_MAX, indexes unique). */
static int meta_port(xmlNodePtr n, struct instance *id, struct agent_error *err)
{
    char *pid = NULL, *net = NULL, *mac = NULL, *ip = NULL, *dev = NULL;
    int64_t index = 0, mtu = 0;
    struct port *p, *np;
    int r;

    if (id->n_ports >= IFACE_MAX)
        return agent_error_set(err, EINVAL, "invalid_field", "port", "metadata: more than %d ports", IFACE_MAX);
    if ((r = meta_attr(n, "id", 36, false, true, &pid, err)) < 0 ||
        (r = meta_int(n, "index", 0, IFACE_MAX - 1, &index, err)) < 0 ||
        (r = meta_attr(n, "network", 63, false, true, &net, err)) < 0 ||
        (r = meta_attr(n, "mac", 17, false, true, &mac, err)) < 0 ||
        (r = meta_attr(n, "ip", 15, false, false, &ip, err)) < 0 ||
        (r = meta_attr(n, "device", PORT_DEV_MAX, false, true, &dev, err)) < 0 ||
        (xmlHasProp(n, BAD_CAST "mtu") && (r = meta_int(n, "mtu", 68, 65535, &mtu, err)) < 0))
        goto out;
    if (!uuid_is_valid(pid) || !mac_ok(mac) || (ip && !ipv4_ok(ip))) {
        r = agent_error_set(err, EINVAL, "invalid_field", "port", "metadata port: invalid id, mac or ip");
        goto out;
    }
    for (size_t i = 0; i < id->n_ports; i++)
        if (id->ports[i].index == (int)index) {
            r = agent_error_set(err, EINVAL, "invalid_field", "port", "metadata port: index %lld twice",
                                (long long)index);
            goto out;
        }
    if (!(np = realloc(id->ports, (id->n_ports + 1) * sizeof(*np)))) {
        r = -ENOMEM;
        goto out;
    }
    id->ports = np;
    p = &np[id->n_ports++];
    memset(p, 0, sizeof(*p));
    strscpy(p->port_id, pid, sizeof(p->port_id));
    p->index = (int)index;
    strscpy(p->network, net, sizeof(p->network));
    strscpy(p->mac, mac, sizeof(p->mac));
    strscpy(p->ip, ip ? ip : "", sizeof(p->ip));
    strscpy(p->device, dev, sizeof(p->device));
    p->mtu = (int)mtu;
    strscpy(p->state, "plugged", sizeof(p->state));
out:
    free(pid);
    free(net);
    free(mac);
    free(ip);
    free(dev);
    return r;
}

/* One text child (uuid, ec2-id, name). */
static int meta_text(xmlNodePtr n, char **out, struct agent_error *err)
{
    xmlChar *t = xmlNodeGetContent(n);
    bool ok = t && *t && clean_text((const char *)t, INSTANCE_NAME_MAX);

    *out = ok ? strdup((const char *)t) : NULL;
    xmlFree(t);
    if (!ok)
        return agent_error_set(err, EINVAL, "invalid_field", (const char *)n->name,
                               "metadata: invalid %s", n->name);
    return *out ? 0 : -ENOMEM;
}

static int meta_child(xmlNodePtr n, struct instance *id, struct hv_owner *own, unsigned *seen,
                      struct agent_error *err)
{
    static const char *const names[] = {"uuid", "ec2-id", "name", "host", "flavor", "kernel", "image"};
    const char *nm = (const char *)n->name;
    char *text = NULL;
    unsigned k;
    int r = 0;

    if (!strcmp(nm, "port"))
        return meta_port(n, id, err); /* repeated: one per interface */
    for (k = 0; k < sizeof(names) / sizeof(names[0]) && strcmp(nm, names[k]); k++)
        ;
    if (k == sizeof(names) / sizeof(names[0]))
        return 0; /* a newer writer's field: not needed to adopt */
    if (*seen & (1u << k))
        return agent_error_set(err, EINVAL, "invalid_field", nm, "metadata: %s given twice", nm);
    *seen |= 1u << k;
    switch (k) {
    case 0:
    case 1:
        if ((r = meta_text(n, &text, err)) < 0)
            return r;
        if (k == 0 ? !uuid_is_valid(text) : !ec2_id_is_valid(text))
            r = agent_error_set(err, EINVAL, "invalid_field", nm, "metadata: invalid %s", nm);
        else
            strscpy(k == 0 ? id->uuid : id->ec2_id, text, k == 0 ? sizeof(id->uuid) : sizeof(id->ec2_id));
        free(text);
        return r;
    case 2:
        return meta_text(n, &id->name, err);
    case 3:
        return meta_host(n, own, err);
    case 4:
        return meta_flavor(n, id, err);
    case 5:
        return meta_kernel(n, &id->boot, err);
    default:
        return meta_image(n, &id->boot, err);
    }
}

int domxml_parse_metadata(const char *xml, struct instance *ident, struct hv_owner *owner,
                          struct agent_error *err)
{
    struct instance id = {0};
    struct hv_owner own = {{0}, {0}};
    size_t len = strlen(xml);
    xmlDocPtr doc = NULL;
    xmlNodePtr root, n;
    unsigned seen = 0;
    int r = 0;

    if (len > META_MAX)
        return agent_error_set(err, EINVAL, "invalid_field", NULL, "metadata: %zu bytes, too large", len);
    /* no network, no entity substitution, no DTD loading: the defaults but NONET */
    doc = xmlReadMemory(xml, (int)len, "metadata.xml", NULL,
                        XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
    if (!doc)
        return agent_error_set(err, EINVAL, "invalid_field", NULL, "metadata: not well-formed XML");
    if (doc->intSubset || doc->extSubset) { /* libvirt never hands one back */
        xmlFreeDoc(doc);
        return agent_error_set(err, EINVAL, "invalid_field", NULL, "metadata: a DTD is not accepted");
    }
    root = xmlDocGetRootElement(doc);
    if (!root || strcmp((const char *)root->name, "instance") != 0 || !ns_ok(root->ns)) {
        xmlFreeDoc(doc);
        return agent_error_set(err, EINVAL, "invalid_field", NULL,
                               "metadata: not a compute-agent <instance> element");
    }
    for (n = root->children; n && r == 0; n = n->next)
        if (n->type == XML_ELEMENT_NODE && ns_ok(n->ns))
            r = meta_child(n, &id, &own, &seen, err);
    xmlFreeDoc(doc);
    if (r == 0) {
        if (!id.uuid[0] || !id.ec2_id[0] || !id.name)
            r = agent_error_set(err, EINVAL, "missing_field", NULL, "metadata: uuid, ec2-id or name missing");
        else if (!(seen & (1u << 4)))
            r = agent_error_set(err, EINVAL, "missing_field", "flavor", "metadata: flavor missing");
        else if (!(seen & (3u << 5)))
            r = agent_error_set(err, EINVAL, "missing_field", "image", "metadata: no boot source (kernel or image)");
    }
    if (r < 0) {
        instance_release(&id);
        return r;
    }
    *ident = id;
    *owner = own;
    return 0;
}
