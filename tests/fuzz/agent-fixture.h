/* agent-fixture.h: for the harnesses of the agent's request parsers (REST
 * actions, bus commands): a struct agent with a real store (SQLite, empty,
 * in memory: nothing is left behind however the harness ends), the built-in
 * catalogue and a real operations engine, and the host disabled, so that
 * what the parsers accept is refused by the engine before anything is
 * journaled or the hypervisor is asked (there is none). Nothing is written:
 * each input sees the same state. */
#ifndef CA_TESTS_FUZZ_AGENT_FIXTURE_H
#define CA_TESTS_FUZZ_AGENT_FIXTURE_H

#include <stdlib.h>
#include <string.h>

#include "agent/agent.h"
#include "agent/ops.h"

/* main.c's functions, which the modules call back: never reached here (no
 * operation starts), so reaching one is a failure. */
void agent_operation_finished(struct agent *a, const struct op_record *rec,
                              const struct instance *inst)
{
    (void)a, (void)rec, (void)inst;
    abort();
}

void agent_schedule_reconnect(struct agent *a)
{
    (void)a;
    abort();
}

static struct agent fixture;

static struct agent *fixture_agent(void)
{
    struct agent_error err;

    if (fixture.store)
        return &fixture;
    if (store_open(":memory:", false, &fixture.store, &err) < 0 || catalog_builtin(&fixture.catalog) < 0 ||
        ops_new(&fixture, &fixture.ops) < 0)
        abort();
    fixture.disabled = true;
    fixture.ready = true;
    return &fixture;
}

static void fixture_free(void)
{
    if (!fixture.store)
        return;
    ops_free(fixture.ops);
    store_free(fixture.store);
    catalog_free(fixture.catalog);
    memset(&fixture, 0, sizeof(fixture));
}

#endif
