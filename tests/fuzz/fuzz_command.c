/* fuzz_command: a command from the bus (P compute.<host>) from untrusted
 * bytes through commands_handle(): the JSON, its fields, the launch body
 * inside, the ids. Never a crash or leak; every refusal names its code, and
 * its code, field and message are UTF-8 (they go into the command.rejected
 * event, JSON). The
 * agent is agent-fixture.h's (host disabled, empty store), so no command
 * can be journaled: a 0 here would mean one was. */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "agent/commands.h"
#include "tests/fuzz/agent-fixture.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fixture *fx = fixture_get();
    struct agent_error err = {0};
    char *rid = NULL, *iid = NULL;

    json_t *ev;

    if (commands_handle(fx->commands, (const char *)data, size, &rid, &iid, &err) == 0 || !err.code[0])
        abort();
    ev = json_pack("{s:s, s:s, s:s}", "code", err.code, "field", err.field, "message", err.message);
    if (!ev)
        abort();
    json_decref(ev);
    free(rid);
    free(iid);
    return 0;
}

static void fuzz_done(void)
{
    fixture_free();
}

#include "tests/fuzz/replay.h"
