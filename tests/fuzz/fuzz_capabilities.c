/* fuzz_capabilities: libvirt capabilities XML from untrusted bytes through
 * the hypervisor layer's parser (hv_caps_parse()) and on to the traits
 * reported to Placement (placement_traits_from_cpu()): never a crash or
 * leak; every trait it returns is one Placement accepts. The first byte
 * picks the hypervisor named. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "agent/hypervisor/hv.h"
#include "common/util.h"
#include "scheduler-client/placement-internal.h"
#include "scheduler-client/placement.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const hvs[] = {NULL, "kvm", "qemu", "xen", "bogus"};
    struct agent_error err = {0};
    char **traits = NULL, *xml;
    size_t n = 0;
    struct hv_host_info host;

    if (size < 1)
        return 0;
    xml = strndup((const char *)data + 1, size - 1);
    if (!xml)
        abort();
    if (hv_caps_parse(xml, &host, &err) < 0) {
        if (!err.code[0])
            abort();
        free(xml);
        return 0;
    }
    if (placement_traits_from_cpu(host.arch, (const char *const *)host.cpu_features,
                                  host.n_cpu_features, hvs[data[0] % 5], &traits, &n, &err) == 0) {
        for (size_t i = 0; i < n; i++)
            if (!placement_name_valid(traits[i]))
                abort();
        placement_traits_free(traits, n);
    } else if (!err.code[0]) {
        abort();
    }
    hv_host_info_release(&host);
    free(xml);
    return 0;
}

static void fuzz_done(void) {}

#include "tests/fuzz/replay.h"
