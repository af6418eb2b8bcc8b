/* fuzz_metadata: a domain's <metadata> element, as virDomainGetMetadata()
 * returns it, from untrusted bytes (anyone with libvirt access can rewrite
 * it) through domxml_parse_metadata(): never a crash or leak; what it
 * accepts has a valid UUID, EC2 id and a name. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "agent/hypervisor/hv-internal.h"
#include "agent/instance.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *xml = strndup((const char *)data, size);
    struct instance inst;
    struct hv_owner owner;
    struct agent_error err;

    if (!xml)
        abort();
    if (domxml_parse_metadata(xml, &inst, &owner, &err) == 0) {
        if (!uuid_is_valid(inst.uuid) || !ec2_id_is_valid(inst.ec2_id) || !inst.name ||
            strnlen(owner.host, sizeof(owner.host)) == sizeof(owner.host) ||
            strnlen(owner.host_uuid, sizeof(owner.host_uuid)) == sizeof(owner.host_uuid))
            abort();
        instance_release(&inst);
    }
    free(xml);
    return 0;
}

static void fuzz_done(void) {}

#include "tests/fuzz/replay.h"
