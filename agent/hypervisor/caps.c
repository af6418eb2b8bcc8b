/* caps.c: libvirt's capabilities XML (virConnectGetCapabilities) into
 * struct hv_host_info: the host's UUID, CPU (arch, model, vendor, the
 * features beyond the model), NUMA cells, and the guest kinds it offers (os
 * type, arch, domain types). Parsed as outside input: no network, no
 * entities, no DTD; unknown elements are ignored. */
#include <libxml/parser.h>
#include <libxml/tree.h>
#include <stdlib.h>
#include <string.h>

#include "agent/hypervisor/hv-internal.h"

#define CAPS_MAX (16 << 20)
#define CAPS_MAX_FEATURES 1024
#define CAPS_MAX_CELLS 1024
#define CAPS_MAX_GUESTS 64

static bool is_elem(const xmlNode *n, const char *name)
{
    return n->type == XML_ELEMENT_NODE && strcmp((const char *)n->name, name) == 0;
}

static xmlNode *child(const xmlNode *parent, const char *name)
{
    for (xmlNode *c = parent ? parent->children : NULL; c; c = c->next)
        if (is_elem(c, name))
            return c;
    return NULL;
}

/* The text of parent's first <name> child into buf (truncated); "" if none. */
static void child_text(const xmlNode *parent, const char *name, char *buf, size_t size)
{
    xmlNode *c = child(parent, name);
    xmlChar *t = c ? xmlNodeGetContent(c) : NULL;

    buf[0] = '\0';
    if (t)
        strscpy(buf, (const char *)t, size);
    xmlFree(t);
}

static void prop(const xmlNode *n, const char *name, char *buf, size_t size)
{
    xmlChar *v = xmlGetProp(n, BAD_CAST name);

    buf[0] = '\0';
    if (v)
        strscpy(buf, (const char *)v, size);
    xmlFree(v);
}

static int64_t prop_int(const xmlNode *n, const char *name, int64_t dflt)
{
    char buf[32];
    int64_t v;

    prop(n, name, buf, sizeof(buf));
    return buf[0] && parse_int64(buf, INT64_MIN, INT64_MAX, &v) == 0 ? v : dflt;
}

static int add_feature(struct hv_host_info *ret, const xmlNode *f)
{
    char name[64], policy[16];
    char **v;

    prop(f, "name", name, sizeof(name));
    prop(f, "policy", policy, sizeof(policy));
    if (!name[0] || !strcmp(policy, "disable") || !strcmp(policy, "forbid"))
        return 0;
    if (ret->n_cpu_features >= CAPS_MAX_FEATURES)
        return 0;
    v = realloc(ret->cpu_features, (ret->n_cpu_features + 1) * sizeof(*v));
    if (!v)
        return -ENOMEM;
    ret->cpu_features = v;
    if (!(v[ret->n_cpu_features] = strdup(name)))
        return -ENOMEM;
    ret->n_cpu_features++;
    return 0;
}

static int parse_cpu(const xmlNode *cpu, struct hv_host_info *ret)
{
    child_text(cpu, "arch", ret->arch, sizeof(ret->arch));
    child_text(cpu, "model", ret->cpu_name, sizeof(ret->cpu_name));
    child_text(cpu, "vendor", ret->cpu_vendor, sizeof(ret->cpu_vendor));
    for (xmlNode *c = cpu->children; c; c = c->next)
        if (is_elem(c, "feature") && add_feature(ret, c) < 0)
            return -ENOMEM;
    return 0;
}

/* memory in KiB (libvirt's unit here) or with a unit attribute */
static int64_t cell_memory_mb(const xmlNode *mem)
{
    char unit[8];
    xmlChar *t = xmlNodeGetContent(mem);
    int64_t v = 0;

    if (t && parse_int64((const char *)t, 0, INT64_MAX, &v) < 0)
        v = 0;
    xmlFree(t);
    prop(mem, "unit", unit, sizeof(unit));
    if (!unit[0] || !strcmp(unit, "KiB"))
        return v / 1024;
    if (!strcmp(unit, "MiB"))
        return v;
    if (!strcmp(unit, "GiB"))
        return v * 1024;
    return v / (1024 * 1024); /* bytes */
}

static int parse_cells(const xmlNode *cells, struct hv_host_info *ret)
{
    for (xmlNode *c = cells ? cells->children : NULL; c; c = c->next) {
        struct hv_numa_cell *v, *cell;
        xmlNode *mem, *cpus;

        if (!is_elem(c, "cell") || ret->n_cells >= CAPS_MAX_CELLS)
            continue;
        v = realloc(ret->cells, (ret->n_cells + 1) * sizeof(*v));
        if (!v)
            return -ENOMEM;
        ret->cells = v;
        cell = &v[ret->n_cells++];
        cell->id = (int)prop_int(c, "id", (int64_t)ret->n_cells - 1);
        cell->memory_mb = (mem = child(c, "memory")) ? cell_memory_mb(mem) : 0;
        cell->cpus = (cpus = child(c, "cpus")) ? (unsigned)prop_int(cpus, "num", 0) : 0;
    }
    return 0;
}

static int parse_guest(const xmlNode *g, struct hv_host_info *ret)
{
    struct hv_guest_caps *v, *gc;
    xmlNode *arch = child(g, "arch");
    size_t k = 0;

    if (ret->n_guests >= CAPS_MAX_GUESTS)
        return 0;
    v = realloc(ret->guests, (ret->n_guests + 1) * sizeof(*v));
    if (!v)
        return -ENOMEM;
    ret->guests = v;
    gc = memset(&v[ret->n_guests++], 0, sizeof(*gc));
    child_text(g, "os_type", gc->os_type, sizeof(gc->os_type));
    if (arch)
        prop(arch, "name", gc->arch, sizeof(gc->arch));
    for (xmlNode *c = arch ? arch->children : NULL; c && k < HV_DOMAIN_TYPES; c = c->next)
        if (is_elem(c, "domain"))
            prop(c, "type", gc->domain_types[k++], sizeof(gc->domain_types[0]));
    return 0;
}

static int parse_doc(const xmlNode *root, struct hv_host_info *ret)
{
    xmlNode *host = child(root, "host"), *cpu;
    char uuid[64];
    int r = 0;

    child_text(host, "uuid", uuid, sizeof(uuid));
    if (uuid_is_valid(uuid))
        strscpy(ret->host_uuid, uuid, sizeof(ret->host_uuid));
    if ((cpu = child(host, "cpu")) && (r = parse_cpu(cpu, ret)) < 0)
        return r;
    if ((r = parse_cells(child(child(host, "topology"), "cells"), ret)) < 0)
        return r;
    for (xmlNode *c = root->children; c && r == 0; c = c->next)
        if (is_elem(c, "guest"))
            r = parse_guest(c, ret);
    return r;
}

int hv_caps_parse(const char *xml, struct hv_host_info *ret, struct agent_error *err)
{
    xmlDocPtr doc;
    xmlNode *root;
    struct hv_host_info info;
    int r;

    memset(&info, 0, sizeof(info));
    memset(ret, 0, sizeof(*ret));
    if (!xml)
        return agent_error_set(err, EINVAL, "invalid", "capabilities", "no capabilities");
    doc = xmlReadMemory(xml, (int)strnlen(xml, CAPS_MAX), "capabilities.xml", NULL,
                        XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
    root = doc ? xmlDocGetRootElement(doc) : NULL;
    if (!root || doc->intSubset || !is_elem(root, "capabilities")) {
        xmlFreeDoc(doc);
        return agent_error_set(err, EINVAL, "invalid", "capabilities",
                               "not a libvirt <capabilities> document");
    }
    r = parse_doc(root, &info);
    xmlFreeDoc(doc);
    if (r < 0) {
        hv_host_info_release(&info);
        return agent_error_set(err, -r, "internal", NULL, "out of memory");
    }
    *ret = info;
    return 0;
}

bool hv_caps_offers(const struct hv_host_info *info, const char *os_type, const char *arch,
                    const char *dt)
{
    for (size_t i = 0; i < info->n_guests; i++) {
        const struct hv_guest_caps *g = &info->guests[i];
        if (strcmp(g->os_type, os_type) || (arch && strcmp(g->arch, arch)))
            continue;
        if (!dt)
            return true;
        for (size_t k = 0; k < HV_DOMAIN_TYPES && g->domain_types[k][0]; k++)
            if (!strcmp(g->domain_types[k], dt))
                return true;
    }
    return false;
}

void hv_host_info_release(struct hv_host_info *info)
{
    for (size_t i = 0; i < info->n_cpu_features; i++)
        free(info->cpu_features[i]);
    free(info->cpu_features);
    free(info->cells);
    free(info->guests);
    memset(info, 0, sizeof(*info));
}

void domxml_caps_host_uuid(const char *caps, char buf[37])
{
    struct hv_host_info info;

    buf[0] = '\0';
    if (hv_caps_parse(caps, &info, NULL) == 0) {
        strscpy(buf, info.host_uuid, 37);
        hv_host_info_release(&info);
    }
}
