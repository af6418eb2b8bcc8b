/* fuzz_metadata: a domain's <metadata> element, as virDomainGetMetadata()
 * returns it, from untrusted bytes (anyone with libvirt access can rewrite
 * it) through hv_meta_parse() (the hypervisor layer reads the fields) and
 * ops_instance_from_meta() (the agent checks them, as adoption does): never
 * a crash or leak; what both accept has a valid UUID, EC2 id and a name. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "agent/hypervisor/hv-internal.h"
#include "agent/instance.h"
#include "agent/ops/ops-internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *xml = strndup((const char *)data, size);
    struct instance inst;
    struct hv_meta meta = {0};
    struct hv_owner owner;
    struct agent_error err;
    int r;

    if (!xml)
        abort();
    r = hv_meta_parse(xml, &meta, &owner, &err);
    if (r == 0) {
        for (size_t i = 0; i < meta.n; i++)
            if (!meta.items[i].name || !meta.items[i].text)
                abort();
        r = ops_instance_from_meta(&meta, NULL, &inst, &err);
        hv_meta_release(&meta);
    }
    if (r == 0) {
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
