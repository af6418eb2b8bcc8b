/* fuzz_domain_size: a domain's XML as libvirt's virDomainGetXMLDesc() hands it
 * (anyone with libvirt access can define what it says) through the hypervisor
 * layer's size reader, hv_size_from_xml() (hv_get_size, and hv_set_memory's
 * virtio-mem element): never a crash or leak; what it accepts is within its
 * own ceilings, and the virtio-mem element it writes back parses again. The
 * first byte: bit 0 the live document, bit 1 ask for the element. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <libxml/parser.h>

#include "agent/hypervisor/hv-internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct hv_size s;
    struct hv_size_parts p;
    char *xml, *vmem = NULL;
    int r;

    if (size < 1)
        return 0;
    xml = strndup((const char *)data + 1, size - 1);
    if (!xml)
        abort();
    r = hv_size_from_xml(xml, data[0] & 1, &s, &p, 4096, data[0] & 2 ? &vmem : NULL);
    if (r == 0) {
        if (s.vcpus > s.max_vcpus || p.balloon_kib > p.boot_kib)
            abort();
        if (vmem) {
            xmlDocPtr d = xmlReadMemory(vmem, (int)strlen(vmem), "vmem.xml", NULL,
                                        XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
            if (!d || !p.vmem)
                abort();
            xmlFreeDoc(d);
        }
    } else if (r != -EINVAL && r != -ENOMEM) {
        abort();
    }
    free(vmem);
    free(xml);
    return 0;
}

static void fuzz_done(void) {}

#include "tests/fuzz/replay.h"
