/* instances.c: /v1/instances (list, launch), /v1/instances/{id} (show,
 * terminate), /v1/instances/{id}/actions (start, stop, reboot). Bodies are
 * parsed by request.h; the work is the operations engine's (ops.h). */
#include <stdlib.h>
#include <string.h>

#include "agent/api/api-internal.h"
#include "agent/ops.h"
#include "agent/request.h"

/* GET /v1/instances?state=S&name=N: the filters (each optional, exact match). */
struct list_filter {
    const char *state, *name;
    json_t *arr;
};

static int collect(const struct instance *inst, void *opaque)
{
    struct list_filter *f = opaque;

    if (f->state && strcmp(inst->state, f->state))
        return 0;
    if (f->name && (!inst->name || strcmp(inst->name, f->name)))
        return 0;
    json_array_append_new(f->arr, instance_to_json(inst));
    return 0;
}

static bool list_state_ok(const char *s)
{
    static const char *const states[] = {"pending", "running", "stopping", "stopped",
                                         "shutting-down", "terminated", "error", "resized",
                                         "migrating", "migrated"};

    for (size_t i = 0; i < ARRAY_SIZE(states); i++)
        if (!strcmp(s, states[i]))
            return true;
    return false;
}

int api_instances_list(const struct api_call *call, json_t **reply)
{
    char sbuf[32], nbuf[512];
    struct list_filter f = {.state = api_call_arg(call, "state", sbuf, sizeof(sbuf)),
                            .name = api_call_arg(call, "name", nbuf, sizeof(nbuf))};
    json_t *arr;
    struct agent_error e;

    if (f.state && !list_state_ok(f.state))
        return api_fail_with(reply, "invalid_field", "state",
                             "query argument 'state' must be one of pending, running, stopping, stopped, "
                             "shutting-down, terminated, error");
    if (f.name && (!f.name[0] || strlen(f.name) > 255))
        return api_fail_with(reply, "invalid_field", "name", "query argument 'name' must be 1 to 255 bytes");
    f.arr = arr = json_array();
    if (store_instance_foreach(call->deps->store, true, collect, &f) < 0) {
        json_decref(arr);
        agent_error_set(&e, EIO, "internal", NULL, "cannot read the store");
        return api_fail(reply, &e);
    }
    *reply = json_pack("{s:o}", "instances", arr);
    return 200;
}

int api_instance_show(const struct api_call *call, json_t **reply)
{
    struct instance inst;

    if (store_instance_get(call->deps->store, call->param[0], &inst) < 0)
        return api_fail_with(reply, "not_found", "id", "no such instance");
    *reply = instance_to_json(&inst);
    instance_release(&inst);
    return 200;
}

int api_instances_launch(const struct api_call *call, json_t **reply)
{
    struct launch_spec spec;
    struct agent_error e;
    const char *rid;
    json_t *j = NULL;
    int status;

    if ((status = api_body_object(call, &j, reply)) > 0)
        return status;
    if (request_id_resolve(j, call->idem, &rid, &e) < 0 ||
        launch_spec_parse(j, call->deps->catalog, &spec, &e) < 0) {
        json_decref(j);
        return api_fail(reply, &e);
    }
    if (rid && !spec.request_id && !(spec.request_id = strdup(rid))) {
        agent_error_set(&e, ENOMEM, "internal", NULL, "out of memory");
        status = -ENOMEM;
    } else {
        status = ops_launch(call->deps->ops, &spec, reply, &e);
    }
    if (status < 0)
        status = api_fail(reply, &e);
    launch_spec_release(&spec);
    json_decref(j);
    return status;
}

static int act(const struct api_call *call, const struct action_request *ar, json_t **reply)
{
    struct action_opts opts = {.request_id = ar->request_id, .timeout_s = ar->timeout_s, .force = ar->force,
                               .flavor = &ar->flavor, .instance_type = ar->instance_type, .mode = ar->mode,
                               .target = ar->target, .max_downtime_ms = ar->max_downtime_ms,
                               .completion_timeout_s = ar->completion_timeout_s, .postcopy = ar->postcopy};
    struct agent_error e;
    int status = ops_action(call->deps->ops, call->param[0], request_action_name(ar->action), &opts, reply, &e);

    return status < 0 ? api_fail(reply, &e) : status;
}

int api_instance_action(const struct api_call *call, json_t **reply)
{
    struct action_request ar;
    struct agent_error e;
    json_t *j = NULL;
    int status;

    if ((status = api_body_object(call, &j, reply)) > 0)
        return status;
    if (request_action_parse(j, call->idem, call->deps->catalog, &ar, &e) < 0)
        status = api_fail(reply, &e);
    else
        status = act(call, &ar, reply);
    json_decref(j);
    return status;
}

int api_instance_terminate(const struct api_call *call, json_t **reply)
{
    struct action_request ar = {.action = REQUEST_TERMINATE, .timeout_s = -1};
    struct agent_error e;

    if (request_id_resolve(NULL, call->idem, &ar.request_id, &e) < 0)
        return api_fail(reply, &e);
    return act(call, &ar, reply);
}
