/* fuzz_config: the agent's INI configuration file from untrusted bytes
 * through config_load_file() and config_finish(): never a crash or leak,
 * and a refusal always names the key or the file. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "agent/config.h"
#include "tests/fuzz/memfile.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct agent_config cfg;
    struct agent_error err = {0};
    int r;

    memset(&cfg, 0, sizeof(cfg));
    if (config_init_defaults(&cfg) < 0)
        abort();
    r = config_load_file(&cfg, memfile_path(data, size), &err);
    if (r == 0) {
        memset(&err, 0, sizeof(err));
        r = config_finish(&cfg, &err);
    }
    if (r < 0 && r != -ENOMEM && !err.field[0])
        abort(); /* a refusal names what is wrong */
    if (r == 0 && (cfg.state_dir[0] != '/' || !cfg.api_socket[0] || !cfg.host_name))
        abort();
    config_release(&cfg);
    return 0;
}

static void fuzz_done(void) {}

#include "tests/fuzz/replay.h"
