/* commands.c: see commands.h. */
#include "agent/commands.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "agent/bus.h"
#include "agent/events.h"
#include "agent/log.h"
#include "agent/ops.h"
#include "agent/store.h"

struct commands {
    struct commands_deps d; /* borrowed */
};

int commands_new(const struct commands_deps *deps, struct commands **ret)
{
    struct commands *c = calloc(1, sizeof(*c));

    if (!c)
        return -ENOMEM;
    c->d = *deps;
    *ret = c;
    return 0;
}

void commands_free(struct commands *c)
{
    free(c);
}

static int fail(struct agent_error *err, const char *code, const char *field, const char *msg)
{
    return agent_error_set(err, EINVAL, code, field, "%s", msg);
}

int commands_handle(struct commands *c, const char *payload, size_t len, char **request_id,
                    char **instance_id, struct agent_error *err)
{
    static const char *const allowed[] = {"op", "request_id", "instance_id", "instance", "timeout", "force", NULL};
    json_error_t jerr;
    json_t *j, *v, *answer = NULL;
    const char *op, *key, *rid;
    int r = 0;

    *request_id = *instance_id = NULL;
    j = json_loadb(payload, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
    if (!j) {
        agent_error_set(err, EINVAL, "invalid_json", NULL, "malformed JSON at line %d column %d: %s", jerr.line,
                        jerr.column, jerr.text);
        return -EINVAL;
    }
    if (!json_is_object(j)) {
        r = fail(err, "invalid_json", NULL, "a command is a JSON object");
        goto out;
    }
    /* pick up ids first so a rejection can name them */
    if (json_is_string(json_object_get(j, "request_id")))
        *request_id = strdup(json_string_value(json_object_get(j, "request_id")));
    if (json_is_string(json_object_get(j, "instance_id")))
        *instance_id = strdup(json_string_value(json_object_get(j, "instance_id")));
    json_object_foreach(j, key, v) {
        bool ok = false;
        for (size_t i = 0; allowed[i]; i++)
            ok |= !strcmp(key, allowed[i]);
        if (!ok) {
            agent_error_set(err, EINVAL, "unknown_field", key, "unknown field '%.100s'", key);
            r = -EINVAL;
            goto out;
        }
    }
    v = json_object_get(j, "op");
    if (!v) {
        r = fail(err, "missing_field", "op", "field 'op' is required");
        goto out;
    }
    op = json_string_value(v);
    if (!op || (strcmp(op, "launch") && strcmp(op, "start") && strcmp(op, "stop") && strcmp(op, "reboot") &&
                strcmp(op, "terminate"))) {
        r = fail(err, "invalid_field", "op", "field 'op' must be launch, start, stop, reboot or terminate");
        goto out;
    }
    v = json_object_get(j, "request_id");
    if (!v) {
        r = fail(err, "missing_field", "request_id", "field 'request_id' is required on the bus");
        goto out;
    }
    rid = json_string_value(v);
    if ((r = request_id_check(rid, json_string_length(v), "request_id", err)) < 0)
        goto out;
    if (!strcmp(op, "launch")) {
        struct launch_spec spec;
        json_t *inst = json_object_get(j, "instance");
        if (json_object_get(j, "instance_id")) {
            r = fail(err, "invalid_field", "instance_id", "a launch takes no 'instance_id'");
            goto out;
        }
        if (!inst) {
            r = fail(err, "missing_field", "instance", "field 'instance' (the launch body) is required");
            goto out;
        }
        if (!json_is_object(inst)) {
            r = fail(err, "invalid_field", "instance", "field 'instance' must be an object");
            goto out;
        }
        if ((r = launch_spec_parse(inst, c->d.catalog, &spec, err)) < 0) {
            char field[sizeof(err->field) + 16];
            snprintf(field, sizeof(field), "instance%s%s", err->field[0] ? "." : "", err->field);
            strscpy(err->field, field, sizeof(err->field));
            utf8_scrub(err->field); /* cut short: it goes into the rejection event */
            goto out;
        }
        if (spec.request_id && strcmp(spec.request_id, rid)) {
            launch_spec_release(&spec);
            r = fail(err, "invalid_field", "instance.request_id", "instance.request_id differs from request_id");
            goto out;
        }
        free(spec.request_id);
        spec.request_id = strdup(rid);
        r = ops_launch(c->d.ops, &spec, &answer, err);
        launch_spec_release(&spec);
        if (r < 0 && err->field[0] && strcmp(err->field, "request_id")) {
            /* the launch body is the command's "instance" */
            char field[sizeof(err->field) + 16];
            snprintf(field, sizeof(field), "instance.%s", err->field);
            strscpy(err->field, field, sizeof(err->field));
            utf8_scrub(err->field);
        }
    } else {
        struct action_opts opts = {.request_id = rid, .timeout_s = -1};
        const char *id = json_string_value(json_object_get(j, "instance_id"));
        if (json_object_get(j, "instance")) {
            r = fail(err, "invalid_field", "instance", "only a launch takes 'instance'");
            goto out;
        }
        if (!id) {
            r = fail(err, json_object_get(j, "instance_id") ? "invalid_field" : "missing_field", "instance_id",
                     "field 'instance_id' (a UUID or an i- id) is required");
            goto out;
        }
        if ((v = json_object_get(j, "timeout"))) {
            if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > 3600) {
                r = fail(err, "invalid_field", "timeout", "field 'timeout' must be an integer from 0 to 3600");
                goto out;
            }
            opts.timeout_s = json_integer_value(v);
        }
        if ((v = json_object_get(j, "force"))) {
            if (!json_is_boolean(v)) {
                r = fail(err, "invalid_field", "force", "field 'force' must be a boolean");
                goto out;
            }
            opts.force = json_is_true(v);
        }
        r = ops_action(c->d.ops, id, op, &opts, &answer, err);
        /* name the command's fields, not the REST API's */
        if (r < 0 && !strcmp(err->field, "id"))
            strscpy(err->field, "instance_id", sizeof(err->field));
        else if (r < 0 && !strcmp(err->field, "action"))
            strscpy(err->field, "op", sizeof(err->field));
    }
    if (r > 0)
        r = 0; /* 202: journaled (or a replay of the first) */
out:
    json_decref(answer);
    json_decref(j);
    return r < 0 ? r : 0;
}

void commands_on_message(void *opaque, const struct bus_message *msg)
{
    struct commands *c = opaque;
    struct agent_error err = {0};
    char *rid = NULL, *iid = NULL;
    int r;

    if (msg->oversized) {
        agent_error_set(&err, EMSGSIZE, "payload_too_large", NULL, "command of %zu bytes refused (too large)",
                        msg->len);
        r = -EMSGSIZE;
    } else if (!msg->payload) {
        agent_error_set(&err, EINVAL, "invalid_json", NULL, "an empty (null) message is not a command");
        r = -EINVAL;
    } else {
        r = commands_handle(c, msg->payload, msg->len, &rid, &iid, &err);
    }
    /* Every command is answered and committed once: a command the host
     * cannot take now (hypervisor away, host disabled) is rejected with that
     * reason, so the controller can place it elsewhere or retry; holding it
     * back would hold back every later offset of the partition. */
    if (r < 0) {
        log_info("bus command rejected", "request_id=%s partition=%d offset=%lld code=%s field=%s message=%s",
                 rid ? rid : "-", (int)msg->partition, (long long)msg->offset, err.code,
                 err.field[0] ? err.field : "-", err.message);
        if (iid && ec2_id_is_valid(iid)) {
            /* key the event by the instance's UUID, like its other events */
            struct instance inst;
            if (store_instance_get(c->d.store, iid, &inst) == 0) {
                free(iid);
                iid = strdup(inst.uuid);
                instance_release(&inst);
            }
        }
        if (events_command_rejected(c->d.events, rid, iid, &err, msg->partition, msg->offset) == 0)
            events_flush(c->d.events);
    }
    bus_command_commit(events_bus(c->d.events), msg);
    free(rid);
    free(iid);
}
