/* usage.c: the usage check: allocations Placement holds against this
 * provider compared with the consumers running here (drift both ways,
 * nothing deleted). */
#include "scheduler-client/placement-private.h"

/* Finish the pending usage check. */
static bool check_complete(struct placement *p, int status, const struct placement_drift *drift,
                           const struct agent_error *err)
{
    struct usage_check *c = TAKE_PTR(p->check);

    if (!c)
        return !p->closing;
    if (drift && (drift->n_only_here || drift->n_only_in_placement) && p->cb.on_usage_drift &&
        !p->closing)
        p->cb.on_usage_drift(p, drift, p->opaque);
    if (!p->closing)
        c->cb(p, status, drift, err, c->opaque);
    placement_strset_clear(&c->local);
    free(c);
    return !p->closing;
}

bool placement_check_fail(struct placement *p, int status, const char *code, const char *msg)
{
    struct agent_error err;

    if (!p->check)
        return !p->closing;
    agent_error_set(&err, -status, code, "usage", "usage check: %s", msg);
    return check_complete(p, status, NULL, &err);
}

void placement_on_usage(struct placement *p, struct placement_request *r)
{
    struct placement_strset only_placement = {0}, only_here = {0};
    struct placement_drift drift;
    json_t *body;
    char what[512];
    int e;

    if (r->status == 404) {
        placement_provider_lost(p); /* the check runs again once it is re-created */
        return;
    }
    if (r->status != 200) {
        placement_describe(r, what, sizeof(what));
        placement_check_fail(p, -EPROTO, "rejected", what);
        return;
    }
    body = placement_request_json(r);
    e = placement_drift_compute(json_object_get(body, "allocations"), &p->check->local,
                                &only_placement, &only_here);
    json_decref(body);
    if (e < 0) {
        placement_check_fail(p, e, "invalid", e == -ENOMEM ? "out of memory" : "unreadable allocations");
    } else {
        drift = (struct placement_drift){
            .only_in_placement = (const char *const *)only_placement.v,
            .n_only_in_placement = only_placement.n,
            .only_here = (const char *const *)only_here.v,
            .n_only_here = only_here.n,
        };
        check_complete(p, 0, &drift, NULL);
    }
    placement_strset_clear(&only_placement);
    placement_strset_clear(&only_here);
}
