/* fuzz_catalog: the instance-type catalogue (INI, agent.instance_types)
 * from untrusted bytes through catalog_load(): never a crash or leak;
 * every type found in an accepted catalogue (looked up by the names of the
 * input's section lines) has vcpus, memory and disk within bounds. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "agent/instance.h"
#include "tests/fuzz/memfile.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct agent_error err = {0};
    struct catalog *cat = NULL;

    if (catalog_load(memfile_path(data, size), &cat, &err) == 0) {
        char *text = strndup((const char *)data, size), *rest = text, *line;
        if (!text)
            abort();
        while ((line = strsep(&rest, "\n"))) {
            char *close = strrchr(line, ']');
            const struct flavor *f;
            if (line[0] != '[' || !close)
                continue;
            *close = '\0';
            f = catalog_find(cat, line + 1);
            if (f && (f->vcpus < 1 || f->vcpus > 256 || f->memory_mb < 16 || f->disk_gb < 0 ||
                      f->disk_gb > 65536))
                abort();
        }
        free(text);
        catalog_free(cat);
    } else if (!err.code[0]) {
        abort();
    }
    return 0;
}

static void fuzz_done(void) {}

#include "tests/fuzz/replay.h"
