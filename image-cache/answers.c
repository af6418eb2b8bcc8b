/* answers.c: the image cache's JSON answers (an image, the list, progress)
 * and deleting an image. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* asprintf */
#endif
#include "image-cache/imgcache-private.h"

#include <jansson.h>
#include <stdio.h>

int imgcache_progress(struct imgcache *c, const char *id, struct imgcache_progress *p)
{
    struct flight *fl = imgcache_flight_find(c, id);

    if (!fl)
        return -ENOENT;
    if (fl->fetch) {
        imgcache_fetch_progress(fl->fetch, p);
    } else {
        p->bytes_done = fl->install ? fl->expected_size : 0;
        p->bytes_total = fl->expected_size;
        p->rate_bps = 0;
    }
    return 0;
}

static json_t *json_time_or_null(int64_t ms)
{
    char buf[32];

    if (ms <= 0)
        return json_null();
    format_rfc3339_ms(ms, buf);
    return json_string(buf);
}

static json_t *json_str_or_null(const char *s)
{
    return s && *s ? json_string(s) : json_null();
}

static json_t *json_int_or_null(int64_t v)
{
    return v < 0 ? json_null() : json_integer(v);
}

json_t *imgcache_get(struct imgcache *c, const char *id)
{
    struct imgcache_row r;
    struct imgcache_progress p;
    json_t *o, *users, *source, *progress = json_null(), *error = json_null();

    if (!id || imgcache_index_get(c->db, id, &r) < 0)
        return NULL;
    users = imgcache_index_users(c->db, r.id);
    if (r.glance_id[0])
        source = json_pack("{s:s}", "glance_id", r.glance_id);
    else {
        _cleanup_free_ char *shown = url_redact(r.url);
        source = json_pack("{s:s?}", "url", shown);
    }
    if (r.state == IMGCACHE_DOWNLOADING && imgcache_progress(c, r.id, &p) == 0) {
        json_decref(progress);
        progress = json_pack("{s:I,s:o,s:I}", "bytes_done", (json_int_t)p.bytes_done,
                             "bytes_total",
                             p.bytes_total ? json_integer((json_int_t)p.bytes_total) : json_null(),
                             "rate_bps", (json_int_t)p.rate_bps);
    }
    if (r.state == IMGCACHE_FAILED && r.error_code[0]) {
        json_decref(error);
        error = json_pack("{s:s,s:s}", "code", r.error_code, "message",
                          r.error_message ? r.error_message : "");
    }
    o = json_pack("{s:s,s:o,s:o,s:o,s:s,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o}", "id", r.id,
                  "digest", json_str_or_null(r.digest), "size", json_int_or_null(r.size),
                  "format", json_str_or_null(r.format), "state", imgcache_state_name(r.state),
                  "in_use_by", users ? users : json_array(), "source",
                  source ? source : json_null(), "virtual_size",
                  json_int_or_null(r.virtual_size), "created_at",
                  json_time_or_null(r.created_at), "last_used_at",
                  json_time_or_null(r.last_used_at), "error", error ? error : json_null(),
                  "progress", progress ? progress : json_null(), "path",
                  json_str_or_null(r.state == IMGCACHE_CACHED ? r.path : NULL));
    imgcache_row_clear(&r);
    return o;
}

json_t *imgcache_list(struct imgcache *c)
{
    char(*ids)[IMGCACHE_ID_LEN] = NULL;
    size_t n = 0;
    json_t *a = json_array();

    if (!a || imgcache_index_ids(c->db, &ids, &n) < 0) {
        json_decref(a);
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *o = imgcache_get(c, ids[i]);
        if (o)
            json_array_append_new(a, o);
    }
    free(ids);
    return a;
}

int imgcache_delete(struct imgcache *c, const char *id, struct agent_error *err)
{
    struct imgcache_row r;
    int n, rc;

    if (!id || imgcache_index_get(c->db, id, &r) < 0)
        return agent_error_set(err, ENOENT, "not_found", NULL, "no image %s in the cache",
                               id ? id : "");
    if (r.state == IMGCACHE_DOWNLOADING || imgcache_flight_find(c, r.id)) {
        imgcache_row_clear(&r);
        return agent_error_set(err, EBUSY, "conflict", NULL, "image %s is being downloaded", id);
    }
    n = imgcache_index_user_count(c->db, r.id);
    if (n != 0) {
        json_t *users = imgcache_index_users(c->db, r.id);
        _cleanup_free_ char *list = users ? json_dumps(users, JSON_COMPACT) : NULL;
        json_decref(users);
        imgcache_row_clear(&r);
        return agent_error_set(err, EBUSY, "conflict", NULL, "image %s is in use by %s", id,
                               list ? list : "instances");
    }
    rc = imgcache_remove_image(c, &r);
    imgcache_row_clear(&r);
    if (rc < 0)
        return agent_error_set(err, -rc, "internal", NULL, "removing image %s: %s", id,
                               strerror(-rc));
    return 0;
}
