/* fuzz_migrate_xml: a domain's migratable XML as virDomainGetXMLDesc() gives
 * it (anyone with libvirt access can define what it says) through the path
 * rewrite of the migration's destination XML, hv_migrate_rewrite_paths():
 * never a crash or leak, and what it writes parses again. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <libxml/parser.h>

#include "agent/hypervisor/hv-internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const map[] = {"/var/lib/ca/instances", "/srv/ca/instances", "/", "/x/", NULL};
    struct agent_error err = {0};
    char *xml, *out = NULL;
    int r;

    xml = strndup((const char *)data, size);
    if (!xml)
        abort();
    r = hv_migrate_rewrite_paths(xml, map, &out, &err);
    if (r == 0) {
        xmlDocPtr d = xmlReadMemory(out, (int)strlen(out), "out.xml", NULL,
                                    XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
        if (!d)
            abort();
        xmlFreeDoc(d);
    } else if ((r != -EINVAL && r != -ENOMEM) || out) {
        abort();
    }
    free(out);
    free(xml);
    return 0;
}

static void fuzz_done(void) {}

#include "tests/fuzz/replay.h"
