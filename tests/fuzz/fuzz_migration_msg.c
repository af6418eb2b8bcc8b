/* fuzz_migration_msg: another agent's migration message (issue 13, a
 * command on P compute.<host> whose op is migration_*) from untrusted bytes
 * through mig_msg_parse(): never a crash or leak; a refusal names its code
 * and is UTF-8; what is accepted goes out again through mig_msg_to_json()
 * and parses back to the same JSON (the sender's and the receiver's view
 * of a message agree). */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "agent/migration.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *j = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, NULL);
    struct agent_error err = {0};
    struct mig_msg m, back;
    json_t *out, *again;

    if (!j)
        return 0;
    if (mig_msg_parse(j, &m, &err) < 0) {
        json_t *ev = json_pack("{s:s, s:s, s:s}", "code", err.code, "field", err.field, "message", err.message);
        if (!err.code[0] || !ev)
            abort();
        json_decref(ev);
        json_decref(j);
        return 0;
    }
    out = mig_msg_to_json(&m);
    if (!out || mig_msg_parse(out, &back, &err) < 0)
        abort();
    again = mig_msg_to_json(&back);
    if (!again || !json_equal(out, again))
        abort();
    json_decref(again);
    json_decref(out);
    mig_msg_release(&back);
    mig_msg_release(&m);
    json_decref(j);
    return 0;
}
static void fuzz_done(void) {}
#include "tests/fuzz/replay.h"
