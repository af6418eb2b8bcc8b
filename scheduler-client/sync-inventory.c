/* sync-inventory.c: inventories: GET once, then PUT when the merged target
 * (ours replaced, classes we do not manage kept) differs from what Placement
 * holds. */
#include "scheduler-client/placement-private.h"

bool placement_inv_pending(const struct placement *p)
{
    return p->inv_desired_set && p->inv_acked_ver != p->inv_ver &&
           p->inv_failed_ver != p->inv_ver;
}

void placement_on_inv_get(struct placement *p, struct placement_request *r)
{
    json_t *body;
    struct placement_inv_set remote = {0};

    if (r->status == 404) {
        placement_provider_lost(p);
        return;
    }
    body = placement_request_json(r);
    if (r->status != 200 ||
        placement_inv_set_from_json(json_object_get(body, "inventories"), &remote) < 0) {
        json_decref(body);
        placement_unexpected(p, r, "inventories");
        return;
    }
    placement_read_generation(p, body, "resource_provider_generation");
    json_decref(body);
    placement_inv_set_clear(&p->inv_remote);
    p->inv_remote = remote;
    p->inv_remote_known = true;
}

void placement_on_inv_put(struct placement *p, struct placement_request *r)
{
    json_t *body;
    char code[64], what[512];

    if (r->status == 404) {
        placement_provider_lost(p);
        return;
    }
    if (r->status == 409) {
        placement_request_error_code(r, code, sizeof(code));
        if (strcmp(code, "placement.concurrent_update") == 0) {
            p->inv_remote_known = false;
            placement_conflict_retry(p, "inventories");
            return;
        }
    }
    if (r->status != 200) {
        /* e.g. placement.inventory.inuse: shrinking below what is allocated */
        placement_describe(r, what, sizeof(what));
        p->inv_failed_ver = p->inv_put_ver;
        p->inv_remote_known = false;
        placement_emit_error(p, "rejected", "inventories", "%s", what);
        return;
    }
    body = placement_request_json(r);
    placement_wrote_generation(p, body, "resource_provider_generation");
    json_decref(body);
    p->conflicts = 0;
    if (placement_inv_set_copy(&p->inv_remote, &p->inv_target) < 0)
        p->inv_remote_known = false;
    p->inv_acked_ver = p->inv_put_ver;
}

/* Returns true when a request was sent (or a wait scheduled). */
bool placement_sync_inventory(struct placement *p)
{
    struct placement_inv_set target = {0};
    json_t *body;
    char path[128];

    if (!p->inv_remote_known) {
        snprintf(path, sizeof(path), "/resource_providers/%s/inventories", p->uuid);
        placement_send_request(p, "GET", path, NULL, NULL, "inventories", placement_on_inv_get, true);
        return true;
    }
    if (placement_inv_set_merge(&p->inv_remote, &p->inv_desired, &p->inv_managed, &target) < 0) {
        placement_retry_later(p, "unavailable", "inventories", "out of memory");
        return true;
    }
    if (placement_inv_set_equal(&target, &p->inv_remote)) {
        placement_inv_set_clear(&target);
        p->inv_acked_ver = p->inv_ver;
        return false;
    }
    placement_inv_set_clear(&p->inv_target);
    p->inv_target = target;
    p->inv_put_ver = p->inv_ver;
    body = json_pack("{s:I s:o}", "resource_provider_generation", (json_int_t)p->generation,
                     "inventories", placement_inv_set_to_json(&target));
    snprintf(path, sizeof(path), "/resource_providers/%s/inventories", p->uuid);
    placement_send_json(p, "PUT", path, body, "inventories", placement_on_inv_put);
    json_decref(body);
    return true;
}
