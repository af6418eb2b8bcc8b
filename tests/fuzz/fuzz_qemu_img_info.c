/* fuzz_qemu_img_info: `qemu-img info --output=json` output from untrusted
 * bytes (a hostile image can steer what qemu-img prints) through
 * imgcache_inspect_judge(): never a crash or leak; what it accepts is raw
 * or qcow2 within the bound. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "image-cache/imgcache-internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_VIRTUAL (UINT64_C(1) << 40)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct imgcache_inspect out;
    struct agent_error err = {0};

    memset(&out, 0, sizeof(out));
    if (imgcache_inspect_judge((const char *)data, size, MAX_VIRTUAL, &out, &err) == 0) {
        if (strcmp(out.format, "raw") != 0 && strcmp(out.format, "qcow2") != 0)
            abort();
        if (out.virtual_size > MAX_VIRTUAL)
            abort();
    } else if (!err.code[0]) {
        abort();
    }
    return 0;
}

static void fuzz_done(void) {}

#include "tests/fuzz/replay.h"
