/* migrate.c: live migration through libvirt (issue 13). One blocking
 * virDomainMigrateToURI3 in peer-to-peer mode, run by the caller on the
 * long-job thread (hv_submit_long): the source's libvirtd talks to the
 * target's (p->dest_uri) itself, the domain ends persistent on the target and
 * undefined on the source. The destination XML is the domain's migratable
 * XML with the guest's file paths rewritten by prefix (the target's paths
 * may differ); the disks named in p->disks are copied incrementally
 * (NON_SHARED_INC: the target already has the backing files and empty
 * overlays, as migrate_in's prepare makes them). job_info, job_abort and
 * post-copy are libvirt-common.c's. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <libxml/parser.h>
#include <libxml/tree.h>

#include "agent/hypervisor/hv-internal.h"

/* ---- the destination XML's paths ---- */

static size_t map_len(const char *const *map)
{
    size_t n = 0;

    while (map && map[n])
        n++;
    return n;
}

/* path rewritten by the first whole-component prefix in map; NULL if none
 * matches (or -ENOMEM: *oom set). */
static char *mapped(const char *path, const char *const *map, bool *oom)
{
    for (size_t i = 0; map && map[i] && map[i + 1]; i += 2) {
        const char *from = map[i], *to = map[i + 1];
        size_t fl = strlen(from);
        char *r;

        if (!fl || strncmp(path, from, fl))
            continue;
        if (from[fl - 1] != '/' && path[fl] && path[fl] != '/')
            continue; /* /a/b is not a prefix of /a/bc */
        if (!(r = malloc(strlen(to) + strlen(path + fl) + 1))) {
            *oom = true;
            return NULL;
        }
        strcpy(r, to);
        strcat(r, path + fl);
        return r;
    }
    return NULL;
}

static bool named(xmlNodePtr n, const char *name)
{
    return n->type == XML_ELEMENT_NODE && !strcmp((const char *)n->name, name);
}

static int rewrite_attr(xmlNodePtr n, const char *attr, const char *const *map)
{
    xmlChar *v = xmlGetProp(n, BAD_CAST attr);
    bool oom = false;
    char *r;

    if (!v)
        return 0;
    r = mapped((const char *)v, map, &oom);
    xmlFree(v);
    if (oom)
        return -ENOMEM;
    if (r && !xmlSetProp(n, BAD_CAST attr, BAD_CAST r)) {
        free(r);
        return -ENOMEM;
    }
    free(r);
    return 0;
}

static int rewrite_text(xmlNodePtr n, const char *const *map)
{
    xmlChar *v = xmlNodeGetContent(n);
    bool oom = false;
    char *r;

    if (!v)
        return 0;
    r = mapped((const char *)v, map, &oom);
    xmlFree(v);
    if (oom)
        return -ENOMEM;
    if (r) {
        xmlChar *enc = xmlEncodeSpecialChars(n->doc, BAD_CAST r);
        free(r);
        if (!enc)
            return -ENOMEM;
        xmlNodeSetContent(n, enc);
        xmlFree(enc);
    }
    return 0;
}

/* Every <source file=|path=> and <log file=> below n (disks, backing
 * chains, serials, consoles), and <os>'s file elements. */
static int walk(xmlNodePtr n, const char *const *map, unsigned depth)
{
    int r = 0;

    if (depth > 64)
        return -EINVAL; /* libvirt nests far less; a hostile document does not recurse us away */
    for (xmlNodePtr c = n->children; c && !r; c = c->next) {
        if (c->type != XML_ELEMENT_NODE)
            continue;
        if (named(c, "source"))
            r = rewrite_attr(c, "file", map) ?: rewrite_attr(c, "path", map);
        else if (named(c, "log"))
            r = rewrite_attr(c, "file", map);
        else if (named(n, "os") && (named(c, "kernel") || named(c, "initrd") ||
                                    named(c, "loader") || named(c, "nvram")))
            r = rewrite_text(c, map);
        if (!r)
            r = walk(c, map, depth + 1);
    }
    return r;
}

int hv_migrate_rewrite_paths(const char *xml, const char *const *map, char **ret,
                             struct agent_error *err)
{
    xmlDocPtr doc;
    xmlNodePtr root;
    xmlChar *out = NULL;
    int len = 0, r;

    *ret = NULL;
    if (map_len(map) % 2)
        return agent_error_set(err, EINVAL, "invalid_field", "path_map", "path map with an odd count");
    if (!xml || strlen(xml) > (64u << 20))
        return agent_error_set(err, EINVAL, "hypervisor", NULL, "no domain XML to rewrite");
    doc = xmlReadMemory(xml, (int)strlen(xml), "domain.xml", NULL,
                        XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
    root = doc ? xmlDocGetRootElement(doc) : NULL;
    if (!root || !named(root, "domain")) {
        xmlFreeDoc(doc);
        return agent_error_set(err, EINVAL, "hypervisor", NULL, "the domain XML does not parse");
    }
    r = walk(root, map, 0);
    if (!r) {
        xmlDocDumpMemory(doc, &out, &len);
        if (!out || !(*ret = strndup((const char *)out, (size_t)len)))
            r = -ENOMEM;
    }
    xmlFree(out);
    xmlFreeDoc(doc);
    if (r == -ENOMEM)
        return agent_error_set(err, ENOMEM, "internal", NULL, "out of memory rewriting the domain XML");
    if (r)
        return agent_error_set(err, -r, "hypervisor", NULL, "the domain XML nests too deep");
    return 0;
}

/* ---- the migration ---- */

/* The domain's migratable XML (inactive: the persistent one) with p's map. */
static int dest_xml(virDomainPtr dom, const struct hv_migrate_params *p, bool inactive,
                    char **ret, struct agent_error *err)
{
    unsigned f = VIR_DOMAIN_XML_MIGRATABLE | VIR_DOMAIN_XML_SECURE |
                 (inactive ? VIR_DOMAIN_XML_INACTIVE : 0);
    char *xml = virDomainGetXMLDesc(dom, f);
    int r;

    if (!xml)
        return hv_libvirt_error(err, "cannot read the domain's migratable XML");
    r = hv_migrate_rewrite_paths(xml, p->path_map, ret, err);
    free(xml);
    return r;
}

int hv_lv_migrate(struct hv *hv, const char *uuid, const struct hv_migrate_params *p,
                  unsigned flags, struct agent_error *err)
{
    virConnectPtr conn;
    virDomainPtr dom;
    virTypedParameterPtr params = NULL;
    int n = 0, max = 0, r;
    char *live = NULL, *persist = NULL;
    unsigned long lf = VIR_MIGRATE_PEER2PEER | VIR_MIGRATE_PERSIST_DEST |
                       VIR_MIGRATE_UNDEFINE_SOURCE;

    if (!p || !p->dest_uri || !*p->dest_uri)
        return agent_error_set(err, EINVAL, "invalid_field", "target", "no target URI to migrate to");
    if ((r = hv_lv_lookup(hv, uuid, &conn, &dom, err)) < 0)
        return r;
    if (flags & HV_MIGRATE_LIVE)
        lf |= VIR_MIGRATE_LIVE;
    if (flags & HV_MIGRATE_POSTCOPY)
        lf |= VIR_MIGRATE_POSTCOPY;
    if (flags & HV_MIGRATE_AUTO_CONVERGE)
        lf |= VIR_MIGRATE_AUTO_CONVERGE;
    if (p->disks && p->disks[0])
        lf |= VIR_MIGRATE_NON_SHARED_INC;

    if (p->dest_xml) {
        if (!(live = strdup(p->dest_xml)))
            r = agent_error_set(err, ENOMEM, "internal", NULL, "out of memory");
    } else {
        r = dest_xml(dom, p, false, &live, err);
    }
    if (!r)
        r = dest_xml(dom, p, true, &persist, err);
    if (r)
        goto out;
    if (virTypedParamsAddString(&params, &n, &max, VIR_MIGRATE_PARAM_DEST_XML, live) < 0 ||
        virTypedParamsAddString(&params, &n, &max, VIR_MIGRATE_PARAM_PERSIST_XML, persist) < 0 ||
        (p->migrate_uri && *p->migrate_uri &&
         virTypedParamsAddString(&params, &n, &max, VIR_MIGRATE_PARAM_URI, p->migrate_uri) < 0) ||
        (p->bandwidth_mib_s &&
         virTypedParamsAddULLong(&params, &n, &max, VIR_MIGRATE_PARAM_BANDWIDTH,
                                 p->bandwidth_mib_s) < 0)) {
        r = hv_libvirt_error(err, "cannot build the migration's parameters");
        goto out;
    }
    for (size_t i = 0; p->disks && p->disks[i]; i++)
        if (virTypedParamsAddString(&params, &n, &max, VIR_MIGRATE_PARAM_MIGRATE_DISKS,
                                    p->disks[i]) < 0) {
            r = hv_libvirt_error(err, "cannot build the migration's parameters");
            goto out;
        }
    /* set before the job starts: libvirt keeps it for the migration and
     * restores QEMU's own value after it */
    if (p->max_downtime_ms && virDomainMigrateSetMaxDowntime(dom, p->max_downtime_ms, 0) < 0) {
        r = hv_libvirt_error(err, "cannot set the migration's maximum downtime");
        goto out;
    }
    if (virDomainMigrateToURI3(dom, p->dest_uri, params, (unsigned)n, lf) < 0) {
        virErrorPtr e = virGetLastError();

        if (e && e->code == VIR_ERR_OPERATION_ABORTED)
            r = agent_error_set(err, ECANCELED, "cancelled", NULL, "%s",
                                e->message ? e->message : "the migration was aborted");
        else
            r = hv_libvirt_error(err, "the migration failed");
    }
out:
    virTypedParamsFree(params, n);
    free(live);
    free(persist);
    hv_lv_release(conn, dom);
    return r;
}

int hv_lv_migrate_set_max_downtime(struct hv *hv, const char *uuid, uint64_t ms, unsigned flags,
                                   struct agent_error *err)
{
    virConnectPtr conn;
    virDomainPtr dom;
    int r = hv_lv_lookup(hv, uuid, &conn, &dom, err);

    (void)flags;
    if (r < 0)
        return r;
    if (virDomainMigrateSetMaxDowntime(dom, ms, 0) < 0)
        r = hv_libvirt_error(err, "cannot set the migration's maximum downtime");
    hv_lv_release(conn, dom);
    return r;
}
