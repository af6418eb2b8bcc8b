/* fuzz_command: a command from the bus (P compute.<host>) from untrusted
 * bytes through commands_handle(): the JSON, its fields, the launch body
 * inside, the ids. Never a crash or leak; every refusal names its code, and
 * its code, field and message are UTF-8 (they go into the command.rejected
 * event, JSON). The
 * agent is agent-fixture.h's (host disabled, empty store), so no command
 * can be journaled: a 0 here would mean one was. It also holds
 * request_command_parse() to the same refusals (same_as_request_parser()). */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "agent/commands.h"
#include "agent/migration.h"
#include "agent/request.h"
#include "tests/fuzz/agent-fixture.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* request_command_parse() (request.c, what commands.c is to call) refuses
 * exactly what commands_handle() refuses before the engine, with the same
 * code and field; what it accepts, only the engine refuses. */
static void same_as_request_parser(const struct catalog *cat, const uint8_t *data, size_t size,
                                   const struct agent_error *handled)
{
    json_t *j = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, NULL);
    struct command_request c;
    struct agent_error err = {0};

    if (!j)
        return;
    if (mig_is_peer_op(json_string_value(json_object_get(j, "op")))) {
        json_decref(j); /* another agent's message: migration.c's parser (fuzz_migration_msg) */
        return;
    }
    if (request_command_parse(j, cat, &c, &err) < 0) {
        if (strcmp(err.code, handled->code) || strcmp(err.field, handled->field))
            abort();
    } else {
        if (!strcmp(handled->code, "invalid_json") || !strcmp(handled->code, "missing_field") ||
            !strcmp(handled->code, "unknown_field") || !strcmp(handled->code, "invalid_field"))
            abort();
        request_command_release(&c);
    }
    json_decref(j);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fixture *fx = fixture_get();
    struct agent_error err = {0};
    char *rid = NULL, *iid = NULL;

    json_t *ev;

    if (commands_handle(fx->commands, (const char *)data, size, &rid, &iid, &err) == 0 || !err.code[0])
        abort();
    same_as_request_parser(fx->catalog, data, size, &err);
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
