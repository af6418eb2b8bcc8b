/* commands.c: see commands.h. */
#include "agent/commands.h"
#include "agent/request.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "agent/bus.h"
#include "agent/events.h"
#include "agent/log.h"
#include "agent/migration.h"
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

int commands_handle(struct commands *c, const char *payload, size_t len, char **request_id,
                    char **instance_id, struct agent_error *err)
{
    struct command_request cr;
    json_error_t jerr;
    json_t *j, *answer = NULL;
    int r;

    *request_id = *instance_id = NULL;
    j = json_loadb(payload, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
    if (!j)
        return agent_error_set(err, EINVAL, "invalid_json", NULL, "malformed JSON at line %d column %d: %s",
                               jerr.line, jerr.column, jerr.text);
    /* pick up ids first so a rejection can name them */
    if (json_is_string(json_object_get(j, "request_id")))
        *request_id = strdup(json_string_value(json_object_get(j, "request_id")));
    if (json_is_string(json_object_get(j, "instance_id")))
        *instance_id = strdup(json_string_value(json_object_get(j, "instance_id")));
    /* another agent's word about a migration (issue 13): its own parser */
    if (mig_is_peer_op(json_string_value(json_object_get(j, "op")))) {
        struct mig_msg m;
        if ((r = mig_msg_parse(j, &m, err)) == 0) {
            r = ops_migration_message(c->d.ops, &m, err);
            mig_msg_release(&m);
        }
        goto out;
    }
    /* the same parser as the REST API's (request.c), with the bus's names */
    if ((r = request_command_parse(j, c->d.catalog, &cr, err)) < 0)
        goto out;
    if (cr.launch) {
        r = ops_launch(c->d.ops, &cr.spec, &answer, err);
    } else {
        struct action_opts opts = {.request_id = cr.action.request_id, .timeout_s = cr.action.timeout_s,
                                   .force = cr.action.force, .flavor = &cr.action.flavor,
                                   .instance_type = cr.action.instance_type, .mode = cr.action.mode,
                                   .target = cr.action.target, .max_downtime_ms = cr.action.max_downtime_ms,
                                   .completion_timeout_s = cr.action.completion_timeout_s,
                                   .postcopy = cr.action.postcopy};
        r = ops_action(c->d.ops, cr.instance_id, request_action_name(cr.action.action), &opts, &answer, err);
    }
    if (r < 0)
        request_field_for_command(err, cr.launch); /* the command's names, not the REST API's */
    request_command_release(&cr);
out:
    json_decref(answer);
    json_decref(j);
    return r < 0 ? r : 0; /* 202: journaled (or a replay of the first) */
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
