/* glance.c: OpenStack Glance v2 image metadata (GET /v2/images/{id}).
 *
 * What the cache uses from the answer: status (only "active" images are
 * pulled), size, os_hash_algo + os_hash_value (the digest that names the
 * content, when sha256 or sha512), and checksum (MD5, kept only as a second
 * check when no such hash is given). The image bytes themselves come from
 * GET /v2/images/{id}/file through fetch.c. Requests carry X-Auth-Token and
 * do not follow redirects, so the token never goes to another host.
 * The endpoint is operator configuration, so its address is not held to
 * image_cache.allowed_networks (Glance often runs on the same private
 * network or host); what Glance could hand out (image locations, redirects)
 * is never followed, so no URL from Glance reaches an address unchecked. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* asprintf */
#endif
#include "image-cache/imgcache-internal.h"

#include <ctype.h>
#include <stdio.h>

#define META_MAX (1024 * 1024) /* largest metadata answer accepted */

static bool is_hex(const char *s, size_t len)
{
    if (strlen(s) != len)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!isxdigit((unsigned char)s[i]))
            return false;
    return true;
}

static void lower(char *s)
{
    for (; *s; s++)
        *s = (char)tolower((unsigned char)*s);
}

int imgcache_glance_parse(const char *body, size_t len, struct imgcache_glance_meta *m,
                          struct agent_error *err)
{
    json_error_t jerr;
    json_t *root = json_loadb(body, len, 0, &jerr);
    json_t *v;
    struct imgcache_glance_meta out = {0};
    int r = 0;

    if (!root)
        return agent_error_set(err, EINVAL, "glance_error", NULL,
                               "Glance answered invalid JSON: %s", jerr.text);
    if (!json_is_object(root)) {
        r = agent_error_set(err, EINVAL, "glance_error", NULL, "Glance answered a non-object");
        goto out;
    }
    v = json_object_get(root, "status");
    if (!json_is_string(v) || strscpy(out.status, json_string_value(v), sizeof(out.status)) < 0) {
        r = agent_error_set(err, EINVAL, "glance_error", NULL, "Glance image has no status");
        goto out;
    }
    v = json_object_get(root, "size");
    if (json_is_integer(v) && json_integer_value(v) > 0)
        out.size = (uint64_t)json_integer_value(v);
    v = json_object_get(root, "os_hash_algo");
    if (json_is_string(v)) {
        enum imgcache_algo a = imgcache_algo_from_name(json_string_value(v));
        json_t *hv = json_object_get(root, "os_hash_value");

        if ((a == IMGCACHE_ALGO_SHA256 || a == IMGCACHE_ALGO_SHA512) && json_is_string(hv)) {
            if (!is_hex(json_string_value(hv), imgcache_algo_hex_len(a))) {
                r = agent_error_set(err, EINVAL, "glance_error", NULL,
                                    "Glance os_hash_value is not a %s digest",
                                    imgcache_algo_name(a));
                goto out;
            }
            out.algo = a;
            strscpy(out.hash_hex, json_string_value(hv), sizeof(out.hash_hex));
            lower(out.hash_hex);
        }
    }
    v = json_object_get(root, "checksum");
    if (json_is_string(v)) {
        if (!is_hex(json_string_value(v), 32)) {
            r = agent_error_set(err, EINVAL, "glance_error", NULL,
                                "Glance checksum is not an MD5 digest");
            goto out;
        }
        strscpy(out.md5_hex, json_string_value(v), sizeof(out.md5_hex));
        lower(out.md5_hex);
    }
    *m = out;
out:
    json_decref(root);
    return r;
}

char *imgcache_glance_file_url(const char *base, const char *glance_id)
{
    char *url;

    if (asprintf(&url, "%s/v2/images/%s/file", base, glance_id) < 0)
        return NULL;
    return url;
}

struct imgcache_glance_req {
    uv_loop_t *loop;
    struct httpuv *http;
    CURL *easy;
    struct curl_slist *headers;
    char *url;
    char *shown_url;      /* url without credentials, for messages */
    char errbuf[CURL_ERROR_SIZE];
    char *body;           /* answer so far */
    size_t len;
    bool too_big;
    int retries, retries_used, retry_delay_ms;
    uv_timer_t timer;     /* backoff between tries */
    bool in_transfer;
    bool done;            /* cb called or freed */
    imgcache_glance_cb cb;
    void *opaque;
};

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    struct imgcache_glance_req *r = userdata;
    size_t n = size * nmemb;
    char *nb;

    if (r->len + n > META_MAX) {
        r->too_big = true;
        return 0;
    }
    nb = realloc(r->body, r->len + n + 1);
    if (!nb)
        return 0;
    r->body = nb;
    memcpy(r->body + r->len, ptr, n);
    r->len += n;
    r->body[r->len] = '\0';
    return n;
}

static void glance_try(struct imgcache_glance_req *r);

static void on_retry_timer(uv_timer_t *t)
{
    glance_try(t->data);
}

static void finish(struct imgcache_glance_req *r, int status,
                   const struct imgcache_glance_meta *m, const struct agent_error *err)
{
    r->done = true;
    r->cb(status, m, err, r->opaque);
}

static void on_glance_done(CURL *easy, CURLcode rc, void *opaque)
{
    struct imgcache_glance_req *r = opaque;
    struct agent_error err = {0};
    struct imgcache_glance_meta m;
    long code = 0;
    bool transient;

    r->in_transfer = false;
    curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &code);
    if (rc == CURLE_OK && code == 200) {
        if (imgcache_glance_parse(r->body, r->len, &m, &err) < 0)
            finish(r, -EINVAL, NULL, &err);
        else
            finish(r, 0, &m, NULL);
        return;
    }
    transient = rc == CURLE_HTTP_RETURNED_ERROR ? imgcache_http_status_transient(code)
                                                : imgcache_curl_transient(rc);
    if (transient && r->retries_used < r->retries) {
        uint64_t delay = (uint64_t)r->retry_delay_ms << (r->retries_used < 16 ? r->retries_used : 16);
        r->retries_used++;
        uv_timer_start(&r->timer, on_retry_timer, delay > 30000 ? 30000 : delay, 0);
        return;
    }
    if (rc == CURLE_HTTP_RETURNED_ERROR && code == 404)
        agent_error_set(&err, ENOENT, "source_not_found", "glance_id",
                        "Glance has no image at %s", r->shown_url);
    else if (rc == CURLE_HTTP_RETURNED_ERROR || rc == CURLE_OK)
        agent_error_set(&err, EIO, "glance_error", NULL, "Glance answered HTTP %ld for %s",
                        code, r->shown_url);
    else if (r->too_big)
        agent_error_set(&err, EIO, "glance_error", NULL, "Glance answer larger than %d bytes",
                        META_MAX);
    else
        agent_error_set(&err, EIO, "glance_error", NULL, "%s: %s", r->shown_url,
                        r->errbuf[0] ? r->errbuf : curl_easy_strerror(rc));
    finish(r, -EIO, NULL, &err);
}

static void glance_try(struct imgcache_glance_req *r)
{
    struct agent_error err = {0};

    if (r->done)
        return;
    free(r->body);
    r->body = NULL;
    r->len = 0;
    r->errbuf[0] = '\0';
    if (httpuv_add(r->http, r->easy, on_glance_done, r) < 0) {
        agent_error_set(&err, EIO, "internal", NULL, "cannot start the Glance request");
        finish(r, -EIO, NULL, &err);
        return;
    }
    r->in_transfer = true;
}

int imgcache_glance_get(uv_loop_t *loop, struct httpuv *http, const char *base,
                        const char *token, const char *glance_id, const char *ca_bundle,
                        int retries, int retry_delay_ms, int stall_timeout_s,
                        imgcache_glance_cb cb, void *opaque, struct imgcache_glance_req **ret)
{
    struct imgcache_glance_req *r = calloc(1, sizeof(*r));
    struct httpuv_easy_opts eo = {
        .user_agent = "compute-agent-imgcache/1",
        .connect_timeout_ms = (long)stall_timeout_s * 1000,
        .timeout_ms = (long)stall_timeout_s * 2000,
        .max_redirects = -1,
        .fail_on_error = true,
        .ca_bundle = ca_bundle,
        .on_body = on_body,
        .errbuf = NULL,
    };
    int rc;

    if (!r)
        return -ENOMEM;
    r->loop = loop;
    r->http = http;
    r->retries = retries;
    r->retry_delay_ms = retry_delay_ms;
    r->cb = cb;
    r->opaque = opaque;
    if (asprintf(&r->url, "%s/v2/images/%s", base, glance_id) < 0) {
        free(r);
        return -ENOMEM;
    }
    r->shown_url = url_redact(r->url);
    r->headers = curl_slist_append(NULL, "Accept: application/json");
    if (token) {
        char *h;
        struct curl_slist *l;

        if (asprintf(&h, "X-Auth-Token: %s", token) < 0)
            h = NULL;
        l = h ? curl_slist_append(r->headers, h) : NULL;
        free(h);
        if (!l) {
            curl_slist_free_all(r->headers);
            r->headers = NULL;
        }
    }
    if (r->headers && r->shown_url) {
        eo.url = r->url;
        eo.headers = r->headers;
        eo.body_data = r;
        eo.errbuf = r->errbuf;
        rc = httpuv_easy_new(&eo, &r->easy);
    } else {
        rc = -ENOMEM;
    }
    if (rc == -ENOMEM) {
        curl_slist_free_all(r->headers);
        free(r->shown_url);
        free(r->url);
        free(r);
        return -ENOMEM;
    }
    uv_timer_init(loop, &r->timer);
    r->timer.data = r;
    if (rc < 0 || httpuv_add(http, r->easy, on_glance_done, r) < 0) {
        r->done = true;
        imgcache_glance_req_free(r);
        return -EINVAL;
    }
    r->in_transfer = true;
    *ret = r;
    return 0;
}

static void on_glance_timer_closed(uv_handle_t *h)
{
    struct imgcache_glance_req *r = h->data;

    curl_slist_free_all(r->headers);
    curl_easy_cleanup(r->easy);
    free(r->url);
    free(r->shown_url);
    free(r->body);
    free(r);
}

void imgcache_glance_req_free(struct imgcache_glance_req *r)
{
    if (!r)
        return;
    r->done = true;
    if (r->in_transfer) {
        httpuv_cancel(r->http, r->easy);
        r->in_transfer = false;
    }
    uv_close((uv_handle_t *)&r->timer, on_glance_timer_closed);
}
