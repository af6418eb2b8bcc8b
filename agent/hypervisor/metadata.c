/* metadata.c: our <metadata> element read back from libvirt. Outside input
 * (anyone with libvirt access can rewrite it): no DTD, no network, at most
 * 64 KiB, our namespace only. The layer reads the document's shape only: the
 * children of <instance> as plain names, texts and attributes (struct
 * hv_meta), and the owner (<host>, which the layer writes itself). What the
 * other fields mean and whether they are valid is the agent's
 * (ops_instance_from_meta() in agent/ops/reconcile.c). The writer is
 * domxml_metadata() in domxml.c. */
#include <libxml/parser.h>
#include <libxml/tree.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/hypervisor/hv-internal.h"

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

/* ---- the owner: <host name= uuid=> ---- */

static int host_attr(xmlNodePtr n, const char *name, size_t maxlen, bool required, char **out,
                     struct agent_error *err)
{
    xmlChar *v = xmlGetNoNsProp(n, BAD_CAST name);
    bool ok;

    *out = NULL;
    if (!v)
        return required ? agent_error_set(err, EINVAL, "invalid_field", name,
                                          "metadata host: attribute %s missing", name)
                        : 0;
    ok = *v && clean_text((const char *)v, maxlen);
    if (ok)
        *out = strdup((const char *)v);
    xmlFree(v);
    if (!ok)
        return agent_error_set(err, EINVAL, "invalid_field", name, "metadata host: invalid %s", name);
    return *out ? 0 : -ENOMEM;
}

static int meta_host(xmlNodePtr n, struct hv_owner *own, struct agent_error *err)
{
    char *name = NULL, *uuid = NULL;
    int r;

    if ((r = host_attr(n, "name", sizeof(own->host) - 1, true, &name, err)) < 0 ||
        (r = host_attr(n, "uuid", 36, false, &uuid, err)) < 0)
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

/* ---- every other child, as plain strings ---- */

static int entry_read(xmlNodePtr n, struct hv_meta_entry *e)
{
    xmlChar *t;
    size_t na = 0;

    for (xmlAttrPtr a = n->properties; a; a = a->next)
        na += !a->ns; /* unqualified attributes only, as the writer makes them */
    e->name = strdup((const char *)n->name);
    t = xmlNodeGetContent(n);
    e->text = strdup(t ? (const char *)t : "");
    xmlFree(t);
    if (na && !(e->attrs = calloc(na, sizeof(*e->attrs))))
        return -ENOMEM;
    for (xmlAttrPtr a = n->properties; a; a = a->next) {
        xmlChar *v;

        if (a->ns)
            continue;
        v = xmlNodeListGetString(n->doc, a->children, 1);
        e->attrs[e->n_attrs].key = strdup((const char *)a->name);
        e->attrs[e->n_attrs].value = strdup(v ? (const char *)v : "");
        xmlFree(v);
        if (!e->attrs[e->n_attrs].key || !e->attrs[e->n_attrs].value) {
            free(e->attrs[e->n_attrs].key);
            free(e->attrs[e->n_attrs].value);
            return -ENOMEM;
        }
        e->n_attrs++;
    }
    return e->name && e->text ? 0 : -ENOMEM;
}

static int meta_read(xmlNodePtr root, struct hv_meta *m, struct hv_owner *own, struct agent_error *err)
{
    size_t cap = 0;
    bool host_seen = false;
    int r;

    for (xmlNodePtr n = root->children; n; n = n->next)
        cap += n->type == XML_ELEMENT_NODE && ns_ok(n->ns);
    if (cap && !(m->items = calloc(cap, sizeof(*m->items))))
        return -ENOMEM;
    for (xmlNodePtr n = root->children; n; n = n->next) {
        if (n->type != XML_ELEMENT_NODE || !ns_ok(n->ns))
            continue;
        if (strcmp((const char *)n->name, "host") == 0) {
            if (host_seen)
                return agent_error_set(err, EINVAL, "invalid_field", "host", "metadata: host given twice");
            host_seen = true;
            if ((r = meta_host(n, own, err)) < 0)
                return r;
            continue;
        }
        r = entry_read(n, &m->items[m->n++]);
        if (r < 0)
            return agent_error_set(err, -r, "internal", NULL, "metadata: out of memory");
    }
    return 0;
}

int hv_meta_parse(const char *xml, struct hv_meta *meta, struct hv_owner *owner, struct agent_error *err)
{
    struct hv_meta m = {0};
    struct hv_owner own = {{0}, {0}};
    size_t len = strlen(xml);
    xmlDocPtr doc;
    xmlNodePtr root;
    int r;

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
    r = meta_read(root, &m, &own, err);
    xmlFreeDoc(doc);
    if (r < 0) {
        hv_meta_release(&m);
        return r;
    }
    *meta = m;
    *owner = own;
    return 0;
}

const struct hv_meta_entry *hv_meta_get(const struct hv_meta *m, const char *name, size_t *count)
{
    const struct hv_meta_entry *first = NULL;
    size_t n = 0;

    for (size_t i = 0; i < m->n; i++)
        if (strcmp(m->items[i].name, name) == 0) {
            if (!first)
                first = &m->items[i];
            n++;
        }
    if (count)
        *count = n;
    return first;
}

const char *hv_meta_attr(const struct hv_meta_entry *e, const char *key)
{
    for (size_t i = 0; e && i < e->n_attrs; i++)
        if (strcmp(e->attrs[i].key, key) == 0)
            return e->attrs[i].value;
    return NULL;
}

void hv_meta_release(struct hv_meta *m)
{
    for (size_t i = 0; m && i < m->n; i++) {
        for (size_t k = 0; k < m->items[i].n_attrs; k++) {
            free(m->items[i].attrs[k].key);
            free(m->items[i].attrs[k].value);
        }
        free(m->items[i].attrs);
        free(m->items[i].name);
        free(m->items[i].text);
    }
    if (m) {
        free(m->items);
        m->items = NULL;
        m->n = 0;
    }
}
