/* errors.c: the one map from an error code (struct agent_error's code, as
 * every module sets it) to the HTTP status, and the one error body, for
 * every route (the image cache's routes included: their codes map here as
 * the agent's do). */
#include <string.h>

#include "agent/api/api-internal.h"

static const struct {
    const char *code;
    int status;
} status_map[] = {
    {"invalid_json", 400},
    {"invalid_field", 400},
    {"missing_field", 400},
    {"unknown_field", 400},
    {"unauthorized", 401},
    {"not_found", 404},
    {"method_not_allowed", 405},
    {"conflict", 409},
    {"insufficient_resources", 409},
    {"payload_too_large", 413},
    {"unsupported_media_type", 415},
    {"not_supported", 501},
    {"unavailable", 503},
};

json_t *api_error_body(const struct agent_error *e)
{
    return json_pack("{s:{s:s, s:s, s:o}}", "error", "code", e->code, "message", e->message, "field",
                     e->field[0] ? json_string(e->field) : json_null());
}

int api_status_of(const struct agent_error *e)
{
    for (size_t i = 0; i < ARRAY_SIZE(status_map); i++)
        if (!strcmp(e->code, status_map[i].code))
            return status_map[i].status;
    return 500;
}

int api_fail(json_t **reply, const struct agent_error *e)
{
    *reply = api_error_body(e);
    return api_status_of(e);
}

int api_fail_with(json_t **reply, const char *code, const char *field, const char *msg)
{
    struct agent_error e;

    agent_error_set(&e, EINVAL, code, field, "%s", msg);
    return api_fail(reply, &e);
}
