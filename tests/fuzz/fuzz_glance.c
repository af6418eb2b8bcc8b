/* fuzz_glance: a Glance v2 GET /v2/images/{id} answer from untrusted bytes
 * through imgcache_glance_parse(): never a crash or leak; an accepted answer
 * has a status string (judged by the caller: only "active" is fetched), and
 * a hash only of the length its algorithm gives. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "image-cache/imgcache-internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct imgcache_glance_meta m;
    struct agent_error err = {0};

    memset(&m, 0x5a, sizeof(m));
    if (imgcache_glance_parse((const char *)data, size, &m, &err) == 0) {
        if (!memchr(m.status, '\0', sizeof(m.status)))
            abort();
        if (m.algo != IMGCACHE_ALGO_NONE && strlen(m.hash_hex) != imgcache_algo_hex_len(m.algo))
            abort();
        if (!memchr(m.md5_hex, '\0', sizeof(m.md5_hex)) || (m.md5_hex[0] && strlen(m.md5_hex) != 32))
            abort();
    } else if (!err.code[0]) {
        abort(); /* a refusal always says why */
    }
    return 0;
}

static void fuzz_done(void) {}

#include "tests/fuzz/replay.h"
