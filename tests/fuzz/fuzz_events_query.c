/* fuzz_events_query: GET /v1/events's query from untrusted bytes: split
 * on '&' and '=' as MHD hands the parameters (decoded, NUL-terminated),
 * collected (api_events_arg), checked (api_events_parse) and, when
 * accepted, run against a small event window (events_window_read() on an
 * in-memory store holding a few events, window of 3): never a crash or
 * leak; a refusal is a 400 naming a field; an accepted page is an object
 * whose events are in seq order, after `after`, at most `limit`, and whose
 * next_after is not behind `after`. */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "agent/api/api-internal.h"
#include "agent/events.h"
#include "agent/store.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct store *store;
static struct events *ev;
static uv_loop_t loop;

static void setup(void)
{
    struct agent_error err;
    struct events_deps d = {0};
    struct events_config cfg = {.host_name = "fuzz-host", .hypervisor = "test", .bus_brokers = "",
                                .bus_prefix = "", .bus_properties = "", .heartbeat_s = 5, .window_events = 3};
    const char *here[] = {"8d6c1b3c-7b1e-4a57-9d2f-3f7d1f0a2b11"};

    if (uv_loop_init(&loop) < 0 || store_open(":memory:", false, &store, &err) < 0)
        abort();
    d.store = store;
    if (events_new(&loop, &d, &cfg, NULL, NULL, &ev) < 0)
        abort();
    for (int i = 0; i < 5; i++)
        if (events_usage_drift(ev, "prov", NULL, 0, here, 1) < 0)
            abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct api_events_args a = {0};
    struct events_query q;
    json_t *reply = NULL, *evs, *e;
    int64_t wait_s, prev;
    char *buf, *save = NULL;
    size_t i;
    int status;

    if (!ev)
        setup();
    if (memchr(data, '\0', size))
        return 0;
    buf = strndup((const char *)data, size);
    if (!buf)
        abort();
    for (char *kv = strtok_r(buf, "&", &save); kv; kv = strtok_r(NULL, "&", &save)) {
        char *eq = strchr(kv, '=');
        if (eq)
            *eq++ = '\0';
        api_events_arg(&a, kv, eq);
    }
    status = api_events_parse(&a, &q, &wait_s, &reply);
    if (status) {
        if (status != 400 || !json_is_string(json_object_get(json_object_get(reply, "error"), "field")))
            abort();
        goto out;
    }
    if (wait_s < 0 || wait_s > 300 || q.limit < 1 || q.limit > 1000)
        abort();
    status = events_window_read(ev, &q, &reply);
    if (status == -ERANGE)
        goto out;
    if (status < 0 || !json_is_object(reply))
        abort();
    evs = json_object_get(reply, "events");
    prev = q.after;
    json_array_foreach(evs, i, e) {
        int64_t seq = json_integer_value(json_object_get(e, "seq"));
        if (seq <= prev || !json_is_object(json_object_get(e, "message")))
            abort();
        prev = seq;
    }
    if ((int64_t)json_array_size(evs) > q.limit || json_integer_value(json_object_get(reply, "next_after")) < prev)
        abort();
out:
    json_decref(reply);
    free(buf);
    return 0;
}

static void fuzz_done(void)
{
    events_free(ev);
    store_free(store);
    if (ev)
        uv_loop_close(&loop);
    ev = NULL;
}

#include "tests/fuzz/replay.h"
