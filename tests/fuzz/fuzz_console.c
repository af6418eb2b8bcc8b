/* fuzz_console: GET /v1/instances/{id}/console?QUERY from untrusted bytes
 * through api_route(): the query scan (api_call_arg()), the tail_bytes and
 * offset bounds, and the read of a real log (a fixed file with every byte
 * value, in a temporary directory made once). Never a crash or leak; a
 * 200 holds base64 of at most tail_bytes bytes of the log, from an offset
 * within it; a 400 names tail_bytes or offset.
 *
 * Input: "Q" then the query for the instance with a log, "U" then the
 * query for an unknown instance (404 unless a parameter is refused first). */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent/api.h"
#include "agent/store.h"
#include "common/util.h"
#include "tests/fuzz/agent-fixture.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define LOG_SIZE 700 /* every byte value, then some */

static char dir[] = "/tmp/fuzz-console-XXXXXX";
static char logp[128], idir[96];
static struct instance inst;
static bool made;

static void make_instance(struct fixture *fx)
{
    FILE *f;

    if (!mkdtemp(dir))
        abort();
    memset(&inst, 0, sizeof(inst));
    strscpy(inst.uuid, "5e0c2a1b-3d4f-4a6b-8c7d-9e0f1a2b3c4d", sizeof(inst.uuid));
    strscpy(inst.ec2_id, "i-00000000000000001", sizeof(inst.ec2_id));
    inst.name = strdup("fuzz");
    strscpy(inst.state, "running", sizeof(inst.state));
    inst.flavor = (struct flavor){1, 128, 0};
    inst.boot.kind = BOOT_KERNEL;
    inst.boot.kernel = strdup("/k");
    snprintf(idir, sizeof(idir), "%s/%s", dir, inst.uuid);
    snprintf(logp, sizeof(logp), "%s/console.log", idir);
    inst.console_log = strdup(logp);
    if (mkdir(idir, 0700) < 0 || !(f = fopen(logp, "w")))
        abort();
    for (int i = 0; i < LOG_SIZE; i++)
        fputc(i & 0xff, f);
    fclose(f);
    if (store_instance_insert(fx->store, &inst) < 0)
        abort();
    made = true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fixture *fx = fixture_get();
    const char *id = "00000000-0000-4000-8000-000000000000";
    json_t *reply = NULL, *e;
    char *url;
    int status;

    if (!made)
        make_instance(fx);
    if (!size || memchr(data, '\0', size))
        return 0;
    if (data[0] == 'Q')
        id = inst.uuid;
    if (asprintf(&url, "/v1/instances/%s/console?%.*s", id, (int)size - 1, (const char *)data + 1) < 0)
        abort();
    status = api_route(&fx->api_deps, &fx->api_cfg, "GET", url, NULL, 0, NULL, &reply);
    if (!json_is_object(reply))
        abort();
    e = json_object_get(reply, "error");
    if (status == 200) {
        const char *b64 = json_string_value(json_object_get(reply, "output"));
        json_int_t off = json_integer_value(json_object_get(reply, "offset"));
        ssize_t n = b64 ? base64_decode(b64, NULL, 0) : -1;
        if (id != inst.uuid || n < 0 || off < 0 || off + n > LOG_SIZE || n > 1048576 ||
            json_integer_value(json_object_get(reply, "length")) != n ||
            json_integer_value(json_object_get(reply, "size")) != LOG_SIZE)
            abort();
    } else if (status == 400) {
        const char *field = json_string_value(json_object_get(e, "field"));
        if (!field || (strcmp(field, "tail_bytes") && strcmp(field, "offset")))
            abort();
    } else if (status != 404 || id == inst.uuid) {
        abort();
    }
    json_decref(reply);
    free(url);
    return 0;
}

static void fuzz_done(void)
{
    if (made) {
        unlink(logp);
        rmdir(idir);
        rmdir(dir);
        instance_release(&inst);
    }
    fixture_free();
}

#include "tests/fuzz/replay.h"
