/* agent-fixture.h: for the harnesses of the agent's request parsers (REST
 * actions, bus commands): the objects the parsers use, with a real store
 * (SQLite, empty, in memory: nothing is left behind however the harness
 * ends), the built-in catalogue, a real operations engine and the host
 * disabled, so that what the parsers accept is refused by the engine before
 * anything is journaled or the hypervisor is asked (there is none). Nothing
 * is written past the setup: each input sees the same state. */
#ifndef CA_TESTS_FUZZ_AGENT_FIXTURE_H
#define CA_TESTS_FUZZ_AGENT_FIXTURE_H

#include <stdlib.h>
#include <string.h>

#include "agent/api.h"
#include "agent/commands.h"
#include "agent/config.h"
#include "agent/host.h"
#include "agent/ops.h"

struct fixture {
    struct agent_config cfg;
    struct store *store;
    struct catalog *catalog;
    struct host *host;
    struct ops *ops;
    struct commands *commands;
    struct api_deps api_deps;
    struct api_config api_cfg;
};

static struct fixture fixture;

/* ops hooks: never reached here (no operation starts), so reaching one is
 * a failure. */
static void fixture_finished(void *opaque, const struct op_record *rec, const struct instance *inst)
{
    (void)opaque, (void)rec, (void)inst;
    abort();
}

static void fixture_hv_lost(void *opaque)
{
    (void)opaque;
    abort();
}

static struct fixture *fixture_get(void)
{
    static const struct ops_hooks hooks = {.operation_finished = fixture_finished, .hv_lost = fixture_hv_lost};
    struct ops_config oc = {.instances_dir = "/nonexistent", .local_image_dirs = ""};
    struct agent_error err;
    struct ops_deps od;
    struct commands_deps cd;

    if (fixture.store)
        return &fixture;
    config_init_defaults(&fixture.cfg);
    if (store_open(":memory:", false, &fixture.store, &err) < 0 || catalog_builtin(&fixture.catalog) < 0 ||
        host_new(fixture.store, &fixture.host) < 0 || host_set_disabled(fixture.host, true, &err) < 0)
        abort();
    host_set_ready(fixture.host);
    od = (struct ops_deps){.store = fixture.store, .host = fixture.host};
    if (ops_new(uv_default_loop(), &od, &oc, &hooks, NULL, &fixture.ops) < 0)
        abort();
    cd = (struct commands_deps){.ops = fixture.ops, .store = fixture.store, .catalog = fixture.catalog};
    if (commands_new(&cd, &fixture.commands) < 0)
        abort();
    fixture.api_deps = (struct api_deps){.store = fixture.store, .ops = fixture.ops, .host = fixture.host,
                                         .catalog = fixture.catalog};
    fixture.api_cfg = (struct api_config){.host_name = "fuzz", .hypervisor = "test"};
    return &fixture;
}

static void fixture_free(void)
{
    if (!fixture.store)
        return;
    commands_free(fixture.commands);
    ops_free(fixture.ops);
    host_free(fixture.host);
    store_free(fixture.store);
    catalog_free(fixture.catalog);
    config_release(&fixture.cfg);
    memset(&fixture, 0, sizeof(fixture));
}

#endif
