/* domxml.c: domain XML through libxml2's xmlTextWriter (every value is
 * escaped by the writer), and our <metadata> element read back with libxml2's
 * parser, so an instance's identity can be recovered from libvirt alone. */
#include <libxml/parser.h>
#include <libxml/tree.h>
#include <libxml/xmlwriter.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/hypervisor/hv-internal.h"

#define W(call)                                                                \
    do {                                                                       \
        if ((call) < 0)                                                        \
            goto fail;                                                         \
    } while (0)

static int attr_int(xmlTextWriterPtr w, const char *name, int64_t v)
{
    return xmlTextWriterWriteFormatAttribute(w, BAD_CAST name, "%lld", (long long)v);
}

static int text_elem(xmlTextWriterPtr w, const char *name, const char *text)
{
    return xmlTextWriterWriteElement(w, BAD_CAST name, BAD_CAST text);
}

static int write_metadata(xmlTextWriterPtr w, const struct instance *inst)
{
    const struct boot_source *b = &inst->boot;

    if (xmlTextWriterStartElement(w, BAD_CAST "metadata") < 0 ||
        xmlTextWriterStartElementNS(w, BAD_CAST CA_XMLNS_PREFIX, BAD_CAST "instance",
                                    BAD_CAST CA_XMLNS_URI) < 0 ||
        xmlTextWriterWriteElementNS(w, BAD_CAST CA_XMLNS_PREFIX, BAD_CAST "uuid", NULL,
                                    BAD_CAST inst->uuid) < 0 ||
        xmlTextWriterWriteElementNS(w, BAD_CAST CA_XMLNS_PREFIX, BAD_CAST "ec2-id", NULL,
                                    BAD_CAST inst->ec2_id) < 0 ||
        xmlTextWriterWriteElementNS(w, BAD_CAST CA_XMLNS_PREFIX, BAD_CAST "name", NULL,
                                    BAD_CAST inst->name) < 0)
        return -1;
    if (xmlTextWriterStartElementNS(w, BAD_CAST CA_XMLNS_PREFIX, BAD_CAST "flavor", NULL) < 0 ||
        attr_int(w, "vcpus", inst->flavor.vcpus) < 0 ||
        attr_int(w, "memory_mb", inst->flavor.memory_mb) < 0 ||
        attr_int(w, "disk_gb", inst->flavor.disk_gb) < 0 ||
        (inst->instance_type &&
         xmlTextWriterWriteAttribute(w, BAD_CAST "type", BAD_CAST inst->instance_type) < 0) ||
        xmlTextWriterEndElement(w) < 0)
        return -1;
    if (b->kind == BOOT_KERNEL) {
        if (xmlTextWriterStartElementNS(w, BAD_CAST CA_XMLNS_PREFIX, BAD_CAST "kernel", NULL) < 0 ||
            xmlTextWriterWriteAttribute(w, BAD_CAST "path", BAD_CAST b->kernel) < 0 ||
            (b->initrd && xmlTextWriterWriteAttribute(w, BAD_CAST "initrd", BAD_CAST b->initrd) < 0) ||
            (b->cmdline && xmlTextWriterWriteAttribute(w, BAD_CAST "cmdline", BAD_CAST b->cmdline) < 0) ||
            xmlTextWriterEndElement(w) < 0)
            return -1;
    }
    if (boot_source_has_image(b)) {
        if (xmlTextWriterStartElementNS(w, BAD_CAST CA_XMLNS_PREFIX, BAD_CAST "image", NULL) < 0 ||
            (b->image_path && xmlTextWriterWriteAttribute(w, BAD_CAST "path", BAD_CAST b->image_path) < 0) ||
            (b->image_id && xmlTextWriterWriteAttribute(w, BAD_CAST "id", BAD_CAST b->image_id) < 0) ||
            (b->image_url && xmlTextWriterWriteAttribute(w, BAD_CAST "url", BAD_CAST b->image_url) < 0) ||
            (b->image_digest && xmlTextWriterWriteAttribute(w, BAD_CAST "digest", BAD_CAST b->image_digest) < 0) ||
            (b->image_glance_id && xmlTextWriterWriteAttribute(w, BAD_CAST "glance_id", BAD_CAST b->image_glance_id) < 0) ||
            xmlTextWriterEndElement(w) < 0)
            return -1;
    }
    if (xmlTextWriterEndElement(w) < 0 || xmlTextWriterEndElement(w) < 0)
        return -1;
    return 0;
}

static int write_file_chardev(xmlTextWriterPtr w, const char *elem, const char *path,
                              const char *target_type)
{
    if (xmlTextWriterStartElement(w, BAD_CAST elem) < 0 ||
        xmlTextWriterWriteAttribute(w, BAD_CAST "type", BAD_CAST "file") < 0 ||
        xmlTextWriterStartElement(w, BAD_CAST "source") < 0 ||
        xmlTextWriterWriteAttribute(w, BAD_CAST "path", BAD_CAST path) < 0 ||
        xmlTextWriterEndElement(w) < 0 || xmlTextWriterStartElement(w, BAD_CAST "target") < 0 ||
        (target_type && xmlTextWriterWriteAttribute(w, BAD_CAST "type", BAD_CAST target_type) < 0) ||
        xmlTextWriterWriteAttribute(w, BAD_CAST "port", BAD_CAST "0") < 0 ||
        xmlTextWriterEndElement(w) < 0 || xmlTextWriterEndElement(w) < 0)
        return -1;
    return 0;
}

int domxml_build(const struct hv_guest *g, const struct domxml_opts *o, char **xml,
                 struct agent_error *err)
{
    const struct instance *inst = g->inst;
    const struct boot_source *b = &inst->boot;
    xmlBufferPtr buf = xmlBufferCreate();
    xmlTextWriterPtr w = buf ? xmlNewTextWriterMemory(buf, 0) : NULL;

    if (!w)
        goto fail;
    xmlTextWriterSetIndent(w, 1);
    W(xmlTextWriterStartElement(w, BAD_CAST "domain"));
    W(xmlTextWriterWriteAttribute(w, BAD_CAST "type", BAD_CAST o->domain_type));
    W(text_elem(w, "name", inst->ec2_id));
    W(text_elem(w, "uuid", inst->uuid));
    W(text_elem(w, "title", inst->name));
    W(write_metadata(w, inst));
    W(xmlTextWriterStartElement(w, BAD_CAST "memory"));
    W(xmlTextWriterWriteAttribute(w, BAD_CAST "unit", BAD_CAST "MiB"));
    W(xmlTextWriterWriteFormatString(w, "%lld", (long long)inst->flavor.memory_mb));
    W(xmlTextWriterEndElement(w));
    W(xmlTextWriterStartElement(w, BAD_CAST "vcpu"));
    W(xmlTextWriterWriteAttribute(w, BAD_CAST "placement", BAD_CAST "static"));
    W(xmlTextWriterWriteFormatString(w, "%lld", (long long)inst->flavor.vcpus));
    W(xmlTextWriterEndElement(w));

    W(xmlTextWriterStartElement(w, BAD_CAST "os"));
    W(xmlTextWriterStartElement(w, BAD_CAST "type"));
    if (o->os == DOMXML_OS_XEN_PV) {
        W(xmlTextWriterWriteString(w, BAD_CAST "xen"));
    } else {
        W(xmlTextWriterWriteAttribute(w, BAD_CAST "arch", BAD_CAST "x86_64"));
        if (o->machine)
            W(xmlTextWriterWriteAttribute(w, BAD_CAST "machine", BAD_CAST o->machine));
        W(xmlTextWriterWriteString(w, BAD_CAST "hvm"));
    }
    W(xmlTextWriterEndElement(w));
    if (b->kind == BOOT_KERNEL) {
        W(text_elem(w, "kernel", b->kernel));
        if (b->initrd)
            W(text_elem(w, "initrd", b->initrd));
        if (b->cmdline)
            W(text_elem(w, "cmdline", b->cmdline));
    } else if (o->os == DOMXML_OS_HVM) {
        W(xmlTextWriterStartElement(w, BAD_CAST "boot"));
        W(xmlTextWriterWriteAttribute(w, BAD_CAST "dev", BAD_CAST "hd"));
        W(xmlTextWriterEndElement(w));
    }
    W(xmlTextWriterEndElement(w)); /* os */
    if (o->os == DOMXML_OS_HVM) {
        W(xmlTextWriterStartElement(w, BAD_CAST "features"));
        W(xmlTextWriterWriteElement(w, BAD_CAST "acpi", NULL));
        W(xmlTextWriterWriteElement(w, BAD_CAST "apic", NULL));
        W(xmlTextWriterEndElement(w));
    }
    W(text_elem(w, "on_poweroff", "destroy"));
    W(text_elem(w, "on_reboot", "restart"));
    W(text_elem(w, "on_crash", "destroy"));

    W(xmlTextWriterStartElement(w, BAD_CAST "devices"));
    if (g->disk_path) {
        W(xmlTextWriterStartElement(w, BAD_CAST "disk"));
        W(xmlTextWriterWriteAttribute(w, BAD_CAST "type", BAD_CAST "file"));
        W(xmlTextWriterWriteAttribute(w, BAD_CAST "device", BAD_CAST "disk"));
        W(xmlTextWriterStartElement(w, BAD_CAST "driver"));
        W(xmlTextWriterWriteAttribute(w, BAD_CAST "name",
                                      BAD_CAST(strcmp(o->domain_type, "xen") ? "qemu" : "qemu")));
        W(xmlTextWriterWriteAttribute(w, BAD_CAST "type", BAD_CAST(g->disk_format ? g->disk_format : "raw")));
        W(xmlTextWriterEndElement(w));
        W(xmlTextWriterStartElement(w, BAD_CAST "source"));
        W(xmlTextWriterWriteAttribute(w, BAD_CAST "file", BAD_CAST g->disk_path));
        W(xmlTextWriterEndElement(w));
        W(xmlTextWriterStartElement(w, BAD_CAST "target"));
        W(xmlTextWriterWriteAttribute(w, BAD_CAST "dev", BAD_CAST o->disk_dev));
        W(xmlTextWriterWriteAttribute(w, BAD_CAST "bus", BAD_CAST o->disk_bus));
        W(xmlTextWriterEndElement(w));
        W(xmlTextWriterEndElement(w));
    }
    if (o->serial_file && g->console_log) {
        W(write_file_chardev(w, "serial", g->console_log, NULL));
        W(write_file_chardev(w, "console", g->console_log, o->os == DOMXML_OS_XEN_PV ? "xen" : "serial"));
    }
    W(xmlTextWriterStartElement(w, BAD_CAST "memballoon"));
    W(xmlTextWriterWriteAttribute(w, BAD_CAST "model", BAD_CAST(o->balloon ? (o->os == DOMXML_OS_XEN_PV ? "xen" : "virtio") : "none")));
    W(xmlTextWriterEndElement(w));
    W(xmlTextWriterEndElement(w)); /* devices */
    W(xmlTextWriterEndElement(w)); /* domain */
    W(xmlTextWriterEndDocument(w));
    xmlFreeTextWriter(w);
    w = NULL;
    *xml = strdup((const char *)xmlBufferContent(buf));
    xmlBufferFree(buf);
    return *xml ? 0 : -ENOMEM;
fail:
    if (w)
        xmlFreeTextWriter(w);
    if (buf)
        xmlBufferFree(buf);
    return agent_error_set(err, ENOMEM, "internal", NULL, "cannot write the domain XML");
}

static char *prop_dup(xmlNodePtr n, const char *name)
{
    xmlChar *v = xmlGetProp(n, BAD_CAST name);
    char *r = v ? strdup((const char *)v) : NULL;
    xmlFree(v);
    return r;
}

/* Replace an owned string: an element given twice counts once (the last),
 * without leaking the first. */
static void set_owned(char **dst, char *v)
{
    free(*dst);
    *dst = v;
}

static int64_t prop_int(xmlNodePtr n, const char *name)
{
    char *v = prop_dup(n, name);
    int64_t r = 0;
    if (v)
        parse_int64(v, 0, INT64_MAX, &r);
    free(v);
    return r;
}

int domxml_parse_metadata(const char *xml, struct instance *ident)
{
    xmlDocPtr doc = xmlReadMemory(xml, (int)strlen(xml), "metadata.xml", NULL,
                                  XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
    xmlNodePtr root, n;

    memset(ident, 0, sizeof(*ident));
    if (!doc)
        return -EINVAL;
    root = xmlDocGetRootElement(doc);
    if (!root || strcmp((const char *)root->name, "instance") != 0 || !root->ns ||
        strcmp((const char *)root->ns->href, CA_XMLNS_URI) != 0) {
        xmlFreeDoc(doc);
        return -EINVAL;
    }
    for (n = root->children; n; n = n->next) {
        xmlChar *text;
        if (n->type != XML_ELEMENT_NODE)
            continue;
        text = xmlNodeGetContent(n);
        if (strcmp((const char *)n->name, "uuid") == 0)
            strscpy(ident->uuid, (const char *)text, sizeof(ident->uuid));
        else if (strcmp((const char *)n->name, "ec2-id") == 0)
            strscpy(ident->ec2_id, (const char *)text, sizeof(ident->ec2_id));
        else if (strcmp((const char *)n->name, "name") == 0)
            set_owned(&ident->name, strdup((const char *)text));
        else if (strcmp((const char *)n->name, "flavor") == 0) {
            ident->flavor.vcpus = prop_int(n, "vcpus");
            ident->flavor.memory_mb = prop_int(n, "memory_mb");
            ident->flavor.disk_gb = prop_int(n, "disk_gb");
            set_owned(&ident->instance_type, prop_dup(n, "type"));
        } else if (strcmp((const char *)n->name, "kernel") == 0) {
            ident->boot.kind = BOOT_KERNEL;
            set_owned(&ident->boot.kernel, prop_dup(n, "path"));
            set_owned(&ident->boot.initrd, prop_dup(n, "initrd"));
            set_owned(&ident->boot.cmdline, prop_dup(n, "cmdline"));
        } else if (strcmp((const char *)n->name, "image") == 0) {
            set_owned(&ident->boot.image_path, prop_dup(n, "path"));
            set_owned(&ident->boot.image_id, prop_dup(n, "id"));
            set_owned(&ident->boot.image_url, prop_dup(n, "url"));
            set_owned(&ident->boot.image_digest, prop_dup(n, "digest"));
            set_owned(&ident->boot.image_glance_id, prop_dup(n, "glance_id"));
        }
        xmlFree(text);
    }
    xmlFreeDoc(doc);
    if (!uuid_is_valid(ident->uuid) || !ec2_id_is_valid(ident->ec2_id) || !ident->name) {
        instance_release(ident);
        return -EINVAL;
    }
    return 0;
}
