/* sync-traits.c: traits: GET once, create the CUSTOM_* ones Placement lacks,
 * PUT the merged set (operator traits kept, COMPUTE_STATUS_DISABLED as set). */
#include "scheduler-client/placement-private.h"

bool placement_traits_pending(const struct placement *p)
{
    return p->traits_desired_set && p->traits_acked_ver != p->traits_ver &&
           p->traits_failed_ver != p->traits_ver;
}

void placement_on_traits_get(struct placement *p, struct placement_request *r)
{
    json_t *body;
    const json_t *list, *t;
    struct placement_strset remote = {0};
    size_t i;

    if (r->status == 404) {
        placement_provider_lost(p);
        return;
    }
    body = placement_request_json(r);
    list = json_object_get(body, "traits");
    if (r->status != 200 || !json_is_array(list)) {
        json_decref(body);
        placement_unexpected(p, r, "traits");
        return;
    }
    json_array_foreach(list, i, t) {
        if (!json_is_string(t) || placement_strset_add(&remote, json_string_value(t)) < 0) {
            placement_strset_clear(&remote);
            json_decref(body);
            placement_unexpected(p, r, "traits");
            return;
        }
    }
    placement_read_generation(p, body, "resource_provider_generation");
    json_decref(body);
    placement_strset_clear(&p->traits_remote);
    p->traits_remote = remote;
    p->traits_remote_known = true;
    /* custom traits on the provider exist by definition */
    for (i = 0; i < remote.n; i++)
        if (strncmp(remote.v[i], "CUSTOM_", 7) == 0)
            placement_strset_add(&p->custom_created, remote.v[i]);
}

static void traits_reject(struct placement *p, struct placement_request *r)
{
    char what[512];

    placement_describe(r, what, sizeof(what));
    p->traits_failed_ver = p->traits_ver;
    p->traits_remote_known = false;
    placement_emit_error(p, "rejected", "traits", "%s", what);
}

void placement_on_trait_create(struct placement *p, struct placement_request *r)
{
    if (r->status / 100 != 2) { /* 201 created, 204 existed */
        traits_reject(p, r);
        return;
    }
    placement_strset_add(&p->custom_created, p->trait_creating);
}

void placement_on_traits_put(struct placement *p, struct placement_request *r)
{
    json_t *body;
    char code[64];

    if (r->status == 404) {
        placement_provider_lost(p);
        return;
    }
    if (r->status == 409) {
        placement_request_error_code(r, code, sizeof(code));
        if (strcmp(code, "placement.concurrent_update") == 0) {
            p->traits_remote_known = false;
            placement_conflict_retry(p, "traits");
            return;
        }
    }
    if (r->status == 400 && !p->traits_retried_400) {
        /* "No such trait": a custom trait was deleted behind our back;
         * create them all again, once. */
        p->traits_retried_400 = true;
        placement_strset_clear(&p->custom_created);
        p->traits_remote_known = false;
        return;
    }
    if (r->status != 200) {
        traits_reject(p, r);
        return;
    }
    body = placement_request_json(r);
    placement_wrote_generation(p, body, "resource_provider_generation");
    json_decref(body);
    p->conflicts = 0;
    p->traits_retried_400 = false;
    if (placement_strset_copy(&p->traits_remote, &p->traits_target) < 0)
        p->traits_remote_known = false;
    p->traits_acked_ver = p->traits_put_ver;
}

static int traits_desired(const struct placement *p, struct placement_strset *ret)
{
    int e = placement_strset_copy(ret, &p->traits_given);

    if (e == 0 && p->disabled)
        e = placement_strset_add(ret, PLACEMENT_TRAIT_DISABLED);
    return e;
}

bool placement_sync_traits(struct placement *p)
{
    struct placement_strset desired = {0}, target = {0};
    json_t *body, *list;
    char path[PLACEMENT_NAME_MAX + 64];

    if (!p->traits_remote_known) {
        snprintf(path, sizeof(path), "/resource_providers/%s/traits", p->uuid);
        placement_send_request(p, "GET", path, NULL, NULL, "traits", placement_on_traits_get, true);
        return true;
    }
    if (traits_desired(p, &desired) < 0 ||
        placement_traits_merge(&p->traits_remote, &desired,
                               p->traits_given_set ? &p->traits_ever : NULL, &target) < 0) {
        placement_strset_clear(&desired);
        placement_retry_later(p, "unavailable", "traits", "out of memory");
        return true;
    }
    placement_strset_clear(&desired);
    if (placement_strset_equal(&target, &p->traits_remote)) {
        placement_strset_clear(&target);
        p->traits_acked_ver = p->traits_ver;
        return false;
    }
    for (size_t i = 0; i < target.n; i++) {
        if (strncmp(target.v[i], "CUSTOM_", 7) != 0 ||
            placement_strset_has(&p->custom_created, target.v[i]))
            continue;
        strscpy(p->trait_creating, target.v[i], sizeof(p->trait_creating));
        placement_strset_clear(&target);
        snprintf(path, sizeof(path), "/traits/%s", p->trait_creating);
        placement_send_request(p, "PUT", path, NULL, "", "traits", placement_on_trait_create, true);
        return true;
    }
    list = json_array();
    for (size_t i = 0; list && i < target.n; i++)
        json_array_append_new(list, json_string(target.v[i]));
    body = json_pack("{s:I s:o}", "resource_provider_generation", (json_int_t)p->generation,
                     "traits", list);
    placement_strset_clear(&p->traits_target);
    p->traits_target = target;
    p->traits_put_ver = p->traits_ver;
    snprintf(path, sizeof(path), "/resource_providers/%s/traits", p->uuid);
    placement_send_json(p, "PUT", path, body, "traits", placement_on_traits_put);
    json_decref(body);
    return true;
}
