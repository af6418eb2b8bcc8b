/* fuzz_boot: the boot column of the store (JSON written by
 * boot_source_to_json(), read back by the store; a damaged or edited
 * database can hold anything) through json_loads() as the store reads it
 * and boot_source_from_json(): never a crash or leak, and what it accepts
 * writes back out. */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "agent/instance.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = strndup((const char *)data, size); /* a TEXT column */
    struct boot_source b;
    json_t *j;

    if (!text)
        abort();
    j = json_loads(text, 0, NULL);
    free(text);
    if (!j)
        return 0;
    if (boot_source_from_json(j, &b) == 0) {
        json_t *back = boot_source_to_json(&b);
        if (!back)
            abort();
        json_decref(back);
        if (b.kind == BOOT_KERNEL ? !b.kernel : !boot_source_has_image(&b))
            abort();
    }
    boot_source_release(&b); /* filled even when refused */
    json_decref(j);
    return 0;
}

static void fuzz_done(void) {}

#include "tests/fuzz/replay.h"
