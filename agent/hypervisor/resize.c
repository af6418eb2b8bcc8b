/* resize.c: the live-resize entries every libvirt-backed driver can share
 * (issue 12): a domain's size read from its XML (hv_lv_get_size), memory
 * through the kvm headroom's virtio-mem device and the balloon
 * (hv_lv_set_memory_vmem; kvm.c says what was measured), and our <metadata>
 * rewritten in place (hv_lv_set_metadata). */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libxml/parser.h>
#include <libxml/tree.h>

#include "agent/hypervisor/hv-internal.h"

/* ---- the domain's size from its XML ---- */

static const xmlChar *prop(xmlNodePtr n, const char *name, xmlChar **keep)
{
    *keep = xmlGetProp(n, BAD_CAST name);
    return *keep;
}

static bool is(xmlNodePtr n, const char *name)
{
    return n && n->type == XML_ELEMENT_NODE && !strcmp((const char *)n->name, name);
}

static xmlNodePtr child(xmlNodePtr n, const char *name)
{
    for (xmlNodePtr c = n ? n->children : NULL; c; c = c->next)
        if (is(c, name))
            return c;
    return NULL;
}

static bool prop_is(xmlNodePtr n, const char *name, const char *value)
{
    xmlChar *v = xmlGetProp(n, BAD_CAST name);
    bool r = v && !strcmp((const char *)v, value);

    xmlFree(v);
    return r;
}

/* An unsigned number in text; false if none. */
static bool num(const xmlChar *text, uint64_t *ret)
{
    char *end;
    unsigned long long v;

    if (!text)
        return false;
    while (*text == ' ' || *text == '\n' || *text == '\t')
        text++;
    if (*text < '0' || *text > '9')
        return false;
    errno = 0;
    v = strtoull((const char *)text, &end, 10);
    if (errno)
        return false;
    while (*end == ' ' || *end == '\n' || *end == '\t')
        end++;
    if (*end)
        return false;
    *ret = v;
    return true;
}

/* A libvirt scaled size: text in unit (NULL: KiB) -> KiB; false if not one. */
static bool scaled(const xmlChar *text, const xmlChar *unit, uint64_t *ret)
{
    static const struct {
        const char *unit;
        uint64_t mul; /* bytes */
    } units[] = {
        {"b", 1},           {"bytes", 1},        {"KB", 1000},           {"k", 1024},
        {"KiB", 1024},      {"MB", 1000000},     {"M", 1024 * 1024},     {"MiB", 1024 * 1024},
        {"GB", 1000000000}, {"G", 1024ull << 20}, {"GiB", 1024ull << 20}, {"TiB", 1024ull << 30},
        {"T", 1024ull << 30},
    };
    uint64_t v, mul = 1024;
    bool ok = !unit;

    if (!num(text, &v))
        return false;
    for (size_t i = 0; unit && i < ARRAY_SIZE(units); i++)
        if (!strcmp((const char *)unit, units[i].unit)) {
            mul = units[i].mul;
            ok = true;
            break;
        }
    if (!ok || (v && mul > UINT64_MAX / v))
        return false;
    *ret = v * mul / 1024;
    return true;
}

/* An element's scaled text (unit=); false if absent or not a size. */
static bool size_kib(xmlNodePtr n, uint64_t *ret)
{
    xmlChar *text, *unit;
    bool ok;

    if (!n)
        return false;
    text = xmlNodeGetContent(n);
    unit = xmlGetProp(n, BAD_CAST "unit");
    ok = scaled(text, unit, ret);
    xmlFree(text);
    xmlFree(unit);
    return ok;
}

/* An attribute's scaled value with the element's unit= (a NUMA cell's memory). */
static bool attr_kib(xmlNodePtr n, const char *name, uint64_t *ret)
{
    xmlChar *v = xmlGetProp(n, BAD_CAST name), *unit = xmlGetProp(n, BAD_CAST "unit");
    bool ok = v && scaled(v, unit, ret);

    xmlFree(v);
    xmlFree(unit);
    return ok;
}

int hv_size_from_xml(const char *xml, bool live, struct hv_size *ret, struct hv_size_parts *parts,
                     uint64_t req_kib, char **vmem_xml)
{
    xmlDocPtr doc;
    xmlNodePtr root, n, devs, vmem = NULL;
    uint64_t v, memory = 0, maxmem = 0, cur = 0, cells = 0, vsize = 0, vreq = 0, vcur = 0, boot, balloon;
    bool has_cur = false, has_cells = false, has_vcur = false, hot = false, test;
    xmlChar *keep = NULL;

    memset(ret, 0, sizeof(*ret));
    if (vmem_xml)
        *vmem_xml = NULL;
    if (!xml || strlen(xml) > INT_MAX)
        return -EINVAL;
    doc = xmlReadMemory(xml, (int)strlen(xml), "domain.xml", NULL,
                        XML_PARSE_NONET | XML_PARSE_NOBLANKS | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
    root = doc ? xmlDocGetRootElement(doc) : NULL;
    if (!is(root, "domain")) {
        xmlFreeDoc(doc);
        return -EINVAL;
    }
    test = prop(root, "type", &keep) && !strcmp((const char *)keep, "test");
    xmlFree(keep);

    if ((n = child(root, "vcpu"))) {
        xmlChar *t = xmlNodeGetContent(n);
        if (num(t, &v) && v <= UINT_MAX)
            ret->max_vcpus = (unsigned)v;
        xmlFree(t);
        ret->vcpus = ret->max_vcpus;
        if (prop(n, "current", &keep) && num(keep, &v) && v <= ret->max_vcpus)
            ret->vcpus = (unsigned)v;
        xmlFree(keep);
    }
    for (n = child(child(root, "vcpus"), "vcpu"); n; n = n->next)
        if (is(n, "vcpu") && prop_is(n, "hotpluggable", "yes"))
            hot = true;

    size_kib(child(root, "memory"), &memory);
    size_kib(child(root, "maxMemory"), &maxmem);
    has_cur = size_kib(child(root, "currentMemory"), &cur);
    for (n = child(child(child(root, "cpu"), "numa"), "cell"); n; n = n->next)
        if (is(n, "cell") && attr_kib(n, "memory", &v)) {
            cells += v;
            has_cells = true;
        }
    devs = child(root, "devices");
    for (n = devs ? devs->children : NULL; n && !vmem; n = n->next)
        if (is(n, "memory") && prop_is(n, "model", "virtio-mem"))
            vmem = n;
    if (vmem) {
        xmlNodePtr t = child(vmem, "target");
        size_kib(child(t, "size"), &vsize);
        size_kib(child(t, "requested"), &vreq);
        has_vcur = size_kib(child(t, "current"), &vcur);
    }
    if (!has_vcur)
        vcur = vreq; /* a stopped domain boots with what was requested */

    boot = has_cells ? cells : (memory > vsize ? memory - vsize : memory);
    /* libvirt's live <currentMemory> is the balloon plus virtio-mem's
     * <current>; the persistent one is the balloon's target alone */
    balloon = has_cur ? cur : boot;
    if (live && vmem)
        balloon = balloon > vcur ? balloon - vcur : 0;
    if (balloon > boot)
        balloon = boot;
    ret->memory_mib = (balloon + (vmem ? vcur : 0)) / 1024;
    ret->requested_mib = (balloon + (vmem ? vreq : 0)) / 1024;
    ret->max_memory_mib = (maxmem ? maxmem : memory) / 1024;
    ret->live_vcpus = ret->max_vcpus > 1 && (hot || test);
    ret->live_memory = vmem != NULL || test;
    if (parts)
        *parts = (struct hv_size_parts){.boot_kib = boot, .balloon_kib = balloon, .vmem = vmem != NULL,
                                        .vmem_req_kib = vreq, .vmem_cur_kib = vcur};

    if (vmem && vmem_xml) {
        xmlNodePtr t = child(vmem, "target"), r = child(t, "requested"), c = child(t, "current");
        xmlBufferPtr buf = xmlBufferCreate();
        char text[32];
        snprintf(text, sizeof(text), "%llu", (unsigned long long)req_kib);
        if (c) {
            xmlUnlinkNode(c);
            xmlFreeNode(c);
        }
        if (!r)
            r = xmlNewChild(t, NULL, BAD_CAST "requested", NULL);
        if (r && buf) {
            xmlNodeSetContent(r, BAD_CAST text);
            xmlSetProp(r, BAD_CAST "unit", BAD_CAST "KiB");
            if (xmlNodeDump(buf, doc, vmem, 0, 0) > 0)
                *vmem_xml = strdup((const char *)xmlBufferContent(buf));
        }
        xmlBufferFree(buf);
        if (!*vmem_xml) {
            xmlFreeDoc(doc);
            return -ENOMEM;
        }
    }
    xmlFreeDoc(doc);
    return 0;
}

/* ---- the entries ---- */

/* The domain's XML and whether it is the live one: the running domain's
 * unless only HV_CONFIG is asked for (or it is not running). */
static int size_of(virDomainPtr dom, unsigned flags, struct hv_size *ret, struct hv_size_parts *parts,
                   uint64_t req_kib, char **vmem_xml, bool *live_ret, struct agent_error *err)
{
    int active = virDomainIsActive(dom);
    bool live = active == 1 && (flags & HV_LIVE || !(flags & HV_CONFIG));
    char *xml;
    int r;

    if (active < 0)
        return hv_libvirt_error(err, "cannot read the domain's state");
    xml = virDomainGetXMLDesc(dom, live ? 0 : VIR_DOMAIN_XML_INACTIVE);
    if (!xml)
        return hv_libvirt_error(err, "cannot read the domain's XML");
    r = hv_size_from_xml(xml, live, ret, parts, req_kib, vmem_xml);
    free(xml);
    if (live_ret)
        *live_ret = live;
    if (r == -EINVAL)
        return agent_error_set(err, EIO, "hypervisor", NULL, "libvirt's domain XML has no <domain>");
    if (r < 0)
        return agent_error_set(err, -r, "internal", NULL, "cannot read the domain's size");
    return 0;
}

/* The balloon now, asked of the hypervisor (libvirt's live <currentMemory>
 * follows QEMU's BALLOON_CHANGE events, which QEMU sends at most once a
 * second); false where the driver has no such figure. */
static bool balloon_now(virDomainPtr dom, uint64_t *kib)
{
    virDomainMemoryStatStruct st[VIR_DOMAIN_MEMORY_STAT_NR];
    int n = virDomainMemoryStats(dom, st, VIR_DOMAIN_MEMORY_STAT_NR, 0);

    if (n < 0)
        virResetLastError();
    for (int i = 0; i < n; i++)
        if (st[i].tag == VIR_DOMAIN_MEMORY_STAT_ACTUAL_BALLOON) {
            *kib = st[i].val;
            return true;
        }
    return false;
}

int hv_lv_get_size(struct hv *hv, const char *uuid, struct hv_size *ret, unsigned flags,
                   struct agent_error *err)
{
    virConnectPtr conn;
    virDomainPtr dom;
    struct hv_size_parts p, cfg;
    struct hv_size cs;
    uint64_t now, target;
    bool live = false;
    int r = hv_lv_lookup(hv, uuid, &conn, &dom, err);

    (void)flags;
    if (r < 0)
        return r;
    r = size_of(dom, HV_CURRENT, ret, &p, 0, NULL, &live, err);
    if (r == 0 && live) {
        /* the balloon as QEMU has it now, and its target as the persistent
         * definition keeps it (hv_set_memory writes LIVE|CONFIG) */
        now = p.balloon_kib;
        if (balloon_now(dom, &now) && now > p.boot_kib)
            now = p.boot_kib;
        target = now;
        if (virDomainIsPersistent(dom) == 1 && size_of(dom, HV_CONFIG, &cs, &cfg, 0, NULL, NULL, NULL) == 0)
            target = cfg.balloon_kib;
        else
            virResetLastError();
        ret->memory_mib = (now + (p.vmem ? p.vmem_cur_kib : 0)) / 1024;
        ret->requested_mib = (target + (p.vmem ? p.vmem_req_kib : 0)) / 1024;
    }
    hv_lv_release(conn, dom);
    return r;
}

static int set_balloon(virDomainPtr dom, uint64_t kib, unsigned flags, struct agent_error *err)
{
    if (kib > ULONG_MAX)
        return agent_error_set(err, EINVAL, "invalid_field", "memory_mb", "memory too large");
    if (virDomainSetMemoryFlags(dom, (unsigned long)kib, hv_lv_affect(flags)) < 0)
        return hv_libvirt_error(err, "cannot set the domain's memory (balloon)");
    return 0;
}

static int set_vmem(virDomainPtr dom, const char *xml, unsigned flags, struct agent_error *err)
{
    if (virDomainUpdateDeviceFlags(dom, xml, hv_lv_affect(flags)) < 0)
        return hv_libvirt_error(err, "cannot set the domain's memory (virtio-mem)");
    return 0;
}

int hv_lv_set_memory_vmem(struct hv *hv, const char *uuid, uint64_t mib, unsigned flags,
                          struct agent_error *err)
{
    virConnectPtr conn;
    virDomainPtr dom;
    struct hv_size sz;
    struct hv_size_parts parts;
    uint64_t boot, want, req;
    char *vmem = NULL;
    int r;

    if (flags & HV_MEM_MAXIMUM)
        return hv_lv_set_memory(hv, uuid, mib, flags, err);
    if (mib > UINT64_MAX / 1024 / 2)
        return agent_error_set(err, EINVAL, "invalid_field", "memory_mb", "memory too large");
    want = mib * 1024;
    if ((r = hv_lv_lookup(hv, uuid, &conn, &dom, err)) < 0)
        return r;
    /* the element to send back is the one the definition we change holds
     * (libvirt finds it by its address, QEMU by its alias) */
    r = size_of(dom, flags, &sz, &parts, 0, &vmem, NULL, err);
    boot = parts.boot_kib;
    if (r == 0 && !vmem) {
        hv_lv_release(conn, dom);
        return hv_lv_set_memory(hv, uuid, mib, flags, err); /* no virtio-mem: the balloon */
    }
    if (r == 0 && mib > sz.max_memory_mib)
        r = agent_error_set(err, ERANGE, "invalid_field", "memory_mb",
                            "%llu MiB is above the domain's memory ceiling of %llu MiB (a cold resize "
                            "can raise it)",
                            (unsigned long long)mib, (unsigned long long)sz.max_memory_mib);
    free(vmem);
    vmem = NULL;
    if (r == 0) {
        const uint64_t blk = DOMXML_VMEM_BLOCK_MIB * 1024;
        req = want > boot ? (want - boot + blk - 1) / blk * blk : 0;
        r = size_of(dom, flags, &sz, &parts, req, &vmem, NULL, err);
        if (r == 0 && !vmem)
            r = agent_error_set(err, EIO, "hypervisor", NULL, "the domain's virtio-mem device is gone");
    }
    /* up: the balloon back to all of the boot memory, then virtio-mem;
     * down: virtio-mem first, then the balloon below the boot memory */
    if (r == 0 && want >= boot) {
        r = set_balloon(dom, boot, flags, err);
        if (r == 0)
            r = set_vmem(dom, vmem, flags, err);
    } else if (r == 0) {
        r = set_vmem(dom, vmem, flags, err);
        if (r == 0)
            r = set_balloon(dom, want, flags, err);
    }
    free(vmem);
    hv_lv_release(conn, dom);
    return r;
}

int hv_lv_set_metadata(struct hv *hv, const struct hv_guest *g, unsigned flags,
                       struct agent_error *err)
{
    virConnectPtr conn;
    virDomainPtr dom;
    char *xml = NULL;
    int r = domxml_metadata_element(g, &xml, err);

    if (r < 0)
        return r;
    if ((r = hv_lv_lookup(hv, g->uuid, &conn, &dom, err)) == 0) {
        if (virDomainSetMetadata(dom, VIR_DOMAIN_METADATA_ELEMENT, xml, CA_XMLNS_PREFIX, CA_XMLNS_URI,
                                 hv_lv_affect(flags)) < 0)
            r = hv_libvirt_error(err, "cannot write the domain's metadata");
        hv_lv_release(conn, dom);
    }
    free(xml);
    return r;
}
