/* api.c: the /v1/images REST handlers, as functions the agent's HTTP layer
 * calls with the parsed body; each returns the HTTP status and a new JSON
 * body in the agent's error shape on failure. */
#include "image-cache/imgcache-internal.h"

static json_t *error_body(const char *code, const char *message, const char *field)
{
    return json_pack("{s:{s:s,s:s,s:o}}", "error", "code", code, "message", message, "field",
                     field && *field ? json_string(field) : json_null());
}

static int status_for(int r, const struct agent_error *err)
{
    if (strcmp(err->code, "not_supported") == 0)
        return 501;
    switch (-r) {
    case EINVAL:
        return 400;
    case ENOENT:
        return 404;
    case EBUSY:
        return 409;
    case ECANCELED:
        return 503;
    default:
        return 500;
    }
}

int imgcache_api_list(struct imgcache *c, json_t **body)
{
    json_t *images = imgcache_list(c);

    if (!images) {
        *body = error_body("internal", "image index unreadable", NULL);
        return 500;
    }
    *body = json_pack("{s:o}", "images", images);
    return 200;
}

int imgcache_api_get(struct imgcache *c, const char *id, json_t **body)
{
    json_t *image = imgcache_get(c, id);

    if (!image) {
        *body = error_body("not_found", "no such image", NULL);
        return 404;
    }
    *body = image;
    return 200;
}

int imgcache_api_create(struct imgcache *c, const json_t *request, json_t **body)
{
    struct imgcache_request req;
    struct agent_error err = {0};
    char id[IMGCACHE_ID_LEN];
    json_t *image;
    int r;

    if (!json_is_object(request)) {
        *body = error_body("invalid_json", "the body must be a JSON object", NULL);
        return 400;
    }
    /* pre-caching names a source; an id names what is already here */
    if (json_object_get(request, "id")) {
        *body = error_body("unknown_field", "give url and digest, or glance_id", "id");
        return 400;
    }
    if (imgcache_request_from_json(request, "", &req, &err) < 0) {
        *body = error_body(err.code, err.message, err.field);
        return 400;
    }
    r = imgcache_acquire(c, &req, NULL, NULL, NULL, id, &err);
    if (r < 0) {
        /* acquire names fields as in a launch body ("image.url"); here they are top level */
        const char *field = strncmp(err.field, "image.", 6) == 0 ? err.field + 6 : err.field;
        *body = error_body(err.code, err.message, field);
        return status_for(r, &err);
    }
    image = imgcache_get(c, id);
    if (!image) {
        *body = error_body("internal", "the image vanished from the index", NULL);
        return 500;
    }
    *body = image;
    return strcmp(json_string_value(json_object_get(image, "state")), "cached") == 0 ? 200 : 202;
}

int imgcache_api_delete(struct imgcache *c, const char *id, json_t **body)
{
    struct agent_error err = {0};
    int r = imgcache_delete(c, id, &err);

    if (r < 0) {
        *body = error_body(err.code, err.message, NULL);
        return status_for(r, &err);
    }
    *body = NULL;
    return 204;
}
