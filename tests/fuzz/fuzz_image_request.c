/* fuzz_image_request: the image request body (POST /v1/images, and the
 * "image" object of a launch) from untrusted bytes, parsed as the API does
 * (JSON, then imgcache_request_from_json()): never a crash or leak; an
 * accepted request names exactly one source. */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "image-cache/imgcache.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(const json_t *j, const char *prefix)
{
    struct imgcache_request req;
    struct agent_error err = {0};

    if (imgcache_request_from_json(j, prefix, &req, &err) == 0) {
        int sources = !!req.id + !!req.url + !!req.glance_id;
        if (sources != 1 || (req.url && !req.digest))
            abort();
    } else if (!err.code[0]) {
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *j = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, NULL);

    if (!j)
        return 0;
    check(j, "");
    check(j, "image");
    json_decref(j);
    return 0;
}

static void fuzz_done(void) {}

#include "tests/fuzz/replay.h"
