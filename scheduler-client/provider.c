/* provider.c: the resource provider: GET by uuid, find by name, create,
 * rename; adopting one found by name. */
#include "scheduler-client/placement-private.h"

static void provider_confirmed(struct placement *p)
{
    p->provider_ok = true;
    p->conflicts = 0;
    p->inv_remote_known = false;
    p->traits_remote_known = false;
    p->inv_acked_ver = 0;
    p->traits_acked_ver = 0;
    if (strcmp(p->reported_uuid, p->uuid) != 0) {
        strscpy(p->reported_uuid, p->uuid, sizeof(p->reported_uuid));
        if (p->cb.on_provider)
            p->cb.on_provider(p, p->uuid, p->opaque);
    }
}

/* A provider object from Placement: take its uuid and generation. */
static bool provider_take(struct placement *p, const json_t *rp)
{
    const char *uuid = json_string_value(json_object_get(rp, "uuid"));

    if (!uuid_is_valid(uuid))
        return false;
    strscpy(p->uuid, uuid, sizeof(p->uuid));
    placement_read_generation(p, rp, "generation");
    return true;
}

void placement_on_provider_get(struct placement *p, struct placement_request *r)
{
    json_t *body;
    const char *name;

    if (r->status == 404) {
        p->provider_step = PROVIDER_FIND;
        return;
    }
    if (r->status != 200) {
        placement_unexpected(p, r, "provider");
        return;
    }
    body = placement_request_json(r);
    placement_read_generation(p, body, "generation");
    name = json_string_value(json_object_get(body, "name"));
    if (name && strcmp(name, p->name) != 0 && !p->rename_tried) {
        p->provider_step = PROVIDER_RENAME;
    } else {
        provider_confirmed(p);
    }
    json_decref(body);
}

void placement_on_provider_find(struct placement *p, struct placement_request *r)
{
    json_t *body;
    const json_t *rp;

    if (r->status != 200) {
        placement_unexpected(p, r, "provider");
        return;
    }
    body = placement_request_json(r);
    rp = json_array_get(json_object_get(body, "resource_providers"), 0);
    if (rp && provider_take(p, rp)) {
        provider_confirmed(p); /* names are unique: adopt it */
    } else if (rp) {
        json_decref(body);
        placement_unexpected(p, r, "provider");
        return;
    } else {
        if (!p->uuid[0] && uuid_generate_str(p->uuid) < 0) {
            json_decref(body);
            placement_retry_later(p, "unavailable", "provider", "no random numbers for a uuid");
            return;
        }
        p->provider_step = PROVIDER_CREATE;
    }
    json_decref(body);
}

void placement_on_provider_create(struct placement *p, struct placement_request *r)
{
    json_t *body;

    if (r->status == 409) {
        /* Someone created it (a provider with our uuid or our name) since
         * we looked: look again. */
        p->provider_step = PROVIDER_GET;
        placement_conflict_retry(p, "provider");
        return;
    }
    if (r->status != 200 && r->status != 201) {
        placement_unexpected(p, r, "provider");
        return;
    }
    body = placement_request_json(r);
    p->generation = 0;
    placement_wrote_generation(p, body, "generation");
    json_decref(body);
    p->rename_tried = true;
    provider_confirmed(p);
}

void placement_on_provider_rename(struct placement *p, struct placement_request *r)
{
    json_t *body;
    char what[512];

    p->rename_tried = true;
    if (r->status == 404) {
        placement_provider_lost(p);
        return;
    }
    if (r->status != 200) {
        /* Most likely another provider has the name. Keep going under the
         * uuid: registration matters more than the label. */
        placement_describe(r, what, sizeof(what));
        p->provider_step = PROVIDER_GET;
        provider_confirmed(p);
        placement_emit_error(p, "rejected", "provider", "%s", what);
        return;
    }
    body = placement_request_json(r);
    placement_wrote_generation(p, body, "generation");
    json_decref(body);
    provider_confirmed(p);
}

void placement_send_provider(struct placement *p)
{
    char path[128];
    _cleanup_free_ char *escaped = NULL;
    _cleanup_free_ char *q = NULL;
    json_t *body;

    if (!p->uuid[0] && p->provider_step != PROVIDER_FIND)
        p->provider_step = PROVIDER_FIND;
    switch (p->provider_step) {
    case PROVIDER_GET:
        snprintf(path, sizeof(path), "/resource_providers/%s", p->uuid);
        placement_send_request(p, "GET", path, NULL, NULL, "provider", placement_on_provider_get, true);
        return;
    case PROVIDER_FIND:
        escaped = curl_easy_escape(NULL, p->name, 0);
        if (!escaped || asprintf(&q, "/resource_providers?name=%s", escaped) < 0) {
            q = NULL;
            placement_retry_later(p, "unavailable", "provider", "out of memory");
            return;
        }
        placement_send_request(p, "GET", q, NULL, NULL, "provider", placement_on_provider_find, true);
        return;
    case PROVIDER_CREATE:
        body = json_pack("{s:s s:s}", "name", p->name, "uuid", p->uuid);
        placement_send_json(p, "POST", "/resource_providers", body, "provider", placement_on_provider_create);
        json_decref(body);
        return;
    case PROVIDER_RENAME:
        snprintf(path, sizeof(path), "/resource_providers/%s", p->uuid);
        body = json_pack("{s:s}", "name", p->name);
        placement_send_json(p, "PUT", path, body, "provider", placement_on_provider_rename);
        json_decref(body);
        return;
    }
}
