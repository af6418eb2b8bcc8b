/* images.c: /v1/images (list, pre-cache) and /v1/images/{id} (show,
 * delete), on the image cache's C API (imgcache.h). Errors go through the
 * agent's one status map (errors.c), like every other route. */
#include <string.h>

#include "agent/api/api-internal.h"
#include "image-cache/imgcache.h"

static int no_cache(json_t **reply)
{
    return api_fail_with(reply, "not_supported", NULL, "the image cache is not running");
}

int api_images_list(const struct api_call *call, json_t **reply)
{
    json_t *images;

    if (!call->deps->imgcache)
        return no_cache(reply);
    if (!(images = imgcache_list(call->deps->imgcache)))
        return api_fail_with(reply, "internal", NULL, "image index unreadable");
    *reply = json_pack("{s:o}", "images", images);
    return 200;
}

int api_image_show(const struct api_call *call, json_t **reply)
{
    json_t *image;

    if (!call->deps->imgcache)
        return no_cache(reply);
    if (!(image = imgcache_get(call->deps->imgcache, call->param[0])))
        return api_fail_with(reply, "not_found", NULL, "no such image");
    *reply = image;
    return 200;
}

/* Pre-cache: {"url", "digest"} or {"glance_id"}. 200 if cached already,
 * 202 while it downloads (follow it with GET /v1/images/{id}). */
static int create(struct imgcache *c, const json_t *body, json_t **reply)
{
    struct imgcache_request req;
    struct agent_error err = {0};
    char id[IMGCACHE_ID_LEN];
    json_t *image;

    /* pre-caching names a source; an id names what is already here */
    if (json_object_get(body, "id"))
        return api_fail_with(reply, "unknown_field", "id", "give url and digest, or glance_id");
    if (imgcache_request_from_json(body, "", &req, &err) < 0)
        return api_fail(reply, &err);
    if (imgcache_acquire(c, &req, NULL, NULL, NULL, id, &err) < 0) {
        /* acquire names fields as in a launch body ("image.url"); here they are top level */
        if (!strncmp(err.field, "image.", 6))
            memmove(err.field, err.field + 6, strlen(err.field + 6) + 1);
        return api_fail(reply, &err);
    }
    if (!(image = imgcache_get(c, id)))
        return api_fail_with(reply, "internal", NULL, "the image vanished from the index");
    *reply = image;
    return strcmp(json_string_value(json_object_get(image, "state")), "cached") == 0 ? 200 : 202;
}

int api_images_create(const struct api_call *call, json_t **reply)
{
    json_t *j = NULL;
    int status;

    if (!call->deps->imgcache)
        return no_cache(reply);
    if ((status = api_body_object(call, &j, reply)) > 0)
        return status;
    status = create(call->deps->imgcache, j, reply);
    json_decref(j);
    return status;
}

int api_image_delete(const struct api_call *call, json_t **reply)
{
    struct agent_error err = {0};

    if (!call->deps->imgcache)
        return no_cache(reply);
    if (imgcache_delete(call->deps->imgcache, call->param[0], &err) < 0) {
        err.field[0] = '\0'; /* the id is the path's */
        return api_fail(reply, &err);
    }
    *reply = json_object();
    return 204;
}
