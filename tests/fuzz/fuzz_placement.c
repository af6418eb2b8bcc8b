/* fuzz_placement: answers of Placement (and of Keystone, for the token)
 * from untrusted bytes, through the client's own answer handling
 * (placement_feed_answer(): the same code an HTTP answer reaches): never a
 * crash or leak, whatever the sequence of answers.
 *
 * Input: the first byte picks the setup (bit 0: a stored provider uuid,
 * bit 1: Keystone auth); then records of one byte naming the step (enum
 * placement_step, modulo), one byte picking the HTTP status, and the body
 * up to the next NUL byte. Each input starts from a new client with desired
 * inventories and traits, a usage check, an allocation move (issue 12),
 * write and removal pending. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "common/util.h"
#include "scheduler-client/placement-internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uv_loop_t loop;
static bool loop_ready;

static void on_usage(struct placement *p, int status, const struct placement_drift *drift,
                     const struct agent_error *err, void *opaque)
{
    (void)p;
    (void)opaque;
    if (status == 0 && !drift)
        abort();
    if (status < 0 && (!err || !err->code[0]))
        abort();
    for (size_t i = 0; drift && i < drift->n_only_in_placement; i++)
        if (!drift->only_in_placement[i])
            abort();
}

static void on_allocation(struct placement *p, const char *consumer, bool removed, int status,
                          const struct agent_error *err, void *opaque)
{
    (void)p;
    (void)removed;
    (void)opaque;
    if (!consumer || strlen(consumer) != 36 || (status < 0 && (!err || !err->code[0])))
        abort();
}

static void on_error(struct placement *p, const struct agent_error *err, void *opaque)
{
    (void)p;
    (void)opaque;
    if (!err->code[0] || !err->field[0])
        abort(); /* every failure names its code and part */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const long statuses[] = {200, 201, 204, 400, 404, 409, 401, 500, 0, 429, 403, 302};
    static const char *const local[] = {"3e1c4a8e-6b0f-4d6e-9a6c-1f1b2a3c4d5e",
                                        "0d8f7a34-8a47-4a59-9d3a-2b1e8c9b0f11"};
    static const char *const traits[] = {"HW_CPU_X86_AVX2", "CUSTOM_FUZZ", "COMPUTE_NODE"};
    const struct placement_inventory inv[] = {
        {"VCPU", 16, 0, 1, 16, 1, 4.0},
        {"MEMORY_MB", 32768, 512, 1, 32768, 1, 1.0},
        {"DISK_GB", 500, 0, 1, 500, 1, 1.0},
    };
    const struct placement_callbacks cb = {.on_error = on_error, .on_allocation = on_allocation};
    const struct placement_allocation alloc = {.vcpus = 1, .memory_mb = 64, .project_id = "p", .user_id = "u"};
    static const char moved[] = "7a1e2b3c-4d5e-4f60-8a7b-9c0d1e2f3a4b"; /* a move's target */
    struct placement_config cfg = {
        .url = "http://127.0.0.1:9/placement",
        .provider_name = "fuzz-host",
        .keystone = {.auth_url = "http://127.0.0.1:9/identity", .username = "u",
                     .password = "p", .project_name = "service"},
    };
    struct placement *p;
    size_t i;

    if (size < 1)
        return 0;
    if (!loop_ready) {
        if (uv_loop_init(&loop) < 0)
            abort();
        loop_ready = true;
    }
    if (data[0] & 1)
        cfg.provider_uuid = "5C3E7A0B-1F2D-4E5A-8B6C-7D8E9F0A1B2C";
    cfg.auth = data[0] & 2 ? PLACEMENT_AUTH_KEYSTONE : PLACEMENT_AUTH_TOKEN;
    cfg.token = "admin";
    if (placement_new(&loop, &cfg, &cb, NULL, &p) < 0 ||
        placement_set_inventory(p, inv, ARRAY_SIZE(inv)) < 0 ||
        placement_set_traits(p, traits, ARRAY_SIZE(traits)) < 0 ||
        placement_check_usage(p, local, ARRAY_SIZE(local), on_usage, NULL) < 0 ||
        placement_move_allocations(p, local[1], moved, NULL, &alloc) < 0 ||
        placement_put_allocation(p, local[0], &alloc) < 0 || placement_delete_allocation(p, local[1]) < 0)
        abort();
    for (i = 1; i + 2 <= size;) {
        enum placement_step step = (enum placement_step)(data[i] % PLACEMENT_STEP_COUNT);
        long status = statuses[data[i + 1] % ARRAY_SIZE(statuses)];
        const uint8_t *body = data + i + 2, *end = memchr(body, '\0', size - i - 2);
        size_t len = end ? (size_t)(end - body) : size - i - 2;
        int e = placement_feed_answer(p, step, status, (const char *)body, len,
                                      step == PLACEMENT_STEP_TOKEN ? "gAAAAABfuzz" : NULL);

        if (e < 0 && e != -EINVAL)
            abort();
        i += 2 + len + 1;
    }
    placement_free(p);
    while (uv_run(&loop, UV_RUN_NOWAIT))
        ;
    return 0;
}

static void fuzz_done(void)
{
    if (loop_ready && uv_loop_close(&loop) != 0)
        abort(); /* every handle closed */
}

#include "tests/fuzz/replay.h"
