/* pipeline.c: the Placement client's pipeline (see placement.h), with its
 * scheduling, failure paths, sending, version discovery and Keystone.
 *
 * One pipeline, one request in flight at a time. advance() looks at what is
 * known and what is wanted and sends the first request still needed:
 *   version (GET /) -> Keystone token -> provider (GET by uuid, find by name,
 *   create, rename) -> inventories (GET once, PUT when the merged target
 *   differs) -> traits (GET once, PUT /traits/CUSTOM_* for new custom ones,
 *   PUT the merged set) -> usage check (GET allocations).
 * Each answer updates the state and calls advance() again; when nothing is
 * left the pipeline stops and sends nothing until a setter changes the
 * desired state. Retry waits (conflict jitter, transient backoff) and
 * deferred starts all go through one uv_timer, so nothing runs re-entrantly
 * from inside an API call. */
#include "scheduler-client/placement-private.h"

#include <stdarg.h>

static void advance(struct placement *p);
static void on_http_done(CURL *easy, CURLcode result, void *opaque);

static uint32_t random_u32(void)
{
    uint32_t v = 0;

    if (random_bytes(&v, sizeof(v)) < 0)
        v = (uint32_t)now_mono_ns();
    return v;
}

bool placement_emit_error(struct placement *p, const char *code, const char *field,
                          const char *fmt, ...)
{
    struct agent_error err;
    va_list ap;

    if (p->closing)
        return false;
    if (!p->cb.on_error)
        return true;
    strscpy(err.code, code, sizeof(err.code));
    strscpy(err.field, field ? field : "", sizeof(err.field));
    va_start(ap, fmt);
    vsnprintf(err.message, sizeof(err.message), fmt, ap);
    va_end(ap);
    p->cb.on_error(p, &err, p->opaque);
    return !p->closing;
}

static void on_timer(uv_timer_t *t)
{
    struct placement *p = t->data;

    p->timer_armed = false;
    advance(p);
}

static void schedule(struct placement *p, uint64_t ms)
{
    if (p->closing)
        return;
    uv_timer_start(&p->timer, on_timer, ms, 0);
    p->timer_armed = true;
}

/* Something changed: run the pipeline soon, unless it is busy or waiting
 * out a retry delay (it looks at the new state when it continues). */
void placement_kick(struct placement *p)
{
    p->stalled = false;
    p->auth_retried = false; /* a stall on 401 may renew the token again */
    if (!p->closing && !p->inflight && !p->timer_armed)
        schedule(p, 0);
}

/* Controller unreachable, 5xx, too many conflicts: wait and start over
 * from version discovery (the controller may have been upgraded). */
void placement_retry_later(struct placement *p, const char *code, const char *field,
                           const char *what)
{
    uint64_t delay;

    p->attempt++;
    p->microversion[0] = '\0';
    p->stats.synced = false;
    delay = placement_backoff_ms(p->attempt, p->backoff_initial_ms, p->backoff_max_ms,
                                 random_u32());
    schedule(p, delay);
    if (!placement_check_fail(p, -EAGAIN, "unavailable", what))
        return;
    placement_emit_error(p, code, field, "%s (attempt %u, next in %llu ms)", what, p->attempt,
               (unsigned long long)delay);
}

/* A failure retrying cannot fix: stop until the caller changes something. */
static void stall(struct placement *p, const char *code, const char *field, const char *what)
{
    p->stalled = true;
    p->stats.synced = false;
    if (!placement_check_fail(p, -EPROTO, code, what))
        return;
    placement_emit_error(p, code, field, "%s", what);
}

/* The provider is gone (404): find or re-create it, then resend everything. */
void placement_provider_lost(struct placement *p)
{
    p->provider_ok = false;
    p->provider_step = PROVIDER_FIND;
    p->inv_remote_known = false;
    p->traits_remote_known = false;
    p->inv_acked_ver = 0;
    p->traits_acked_ver = 0;
}

/* 409 placement.concurrent_update (or a create race): re-read, retry soon
 * with jitter; past the bound, back off like a transient failure. */
void placement_conflict_retry(struct placement *p, const char *field)
{
    /* someone else wrote: whatever we cached about the provider is stale */
    p->inv_remote_known = false;
    p->traits_remote_known = false;
    p->conflicts++;
    if (p->conflicts > p->conflict_retries) {
        char what[128];
        snprintf(what, sizeof(what), "%u generation conflicts in a row", p->conflicts - 1);
        p->conflicts = 0;
        placement_retry_later(p, "conflict", field, what);
        return;
    }
    schedule(p, placement_jitter_ms(p->conflicts, CONFLICT_JITTER_INITIAL_MS,
                                    CONFLICT_JITTER_MAX_MS, random_u32()));
}

void placement_describe(const struct placement_request *r, char *buf, size_t size)
{
    char detail[384];
    const char *url = NULL;
    const char *method = NULL;

    curl_easy_getinfo(r->easy, CURLINFO_EFFECTIVE_URL, &url);
    curl_easy_getinfo(r->easy, CURLINFO_EFFECTIVE_METHOD, &method);
    placement_request_describe(r, detail, sizeof(detail));
    if (r->status)
        snprintf(buf, size, "%s %s: %ld: %s", method ? method : "?", url ? url : "?",
                 r->status, detail);
    else
        snprintf(buf, size, "%s %s: %s", method ? method : "?", url ? url : "?", detail);
}

/* Any answer not handled specifically: a permanent refusal of this step. */
void placement_unexpected(struct placement *p, struct placement_request *r, const char *field)
{
    char what[512];

    placement_describe(r, what, sizeof(what));
    stall(p, "rejected", field, what);
}

static const char *request_token(const struct placement *p)
{
    return p->auth == PLACEMENT_AUTH_KEYSTONE ? p->token : p->static_token;
}

/* Start a request to url (absolute) or to p->url + path. On failure to
 * build or start it, back off as for a transient failure. */
void placement_send_request(struct placement *p, const char *method, const char *path,
                            const char *url, const char *body, const char *field,
                            answer_fn on_answer, bool is_work)
{
    struct placement_request_opts opts = {
        .token = url ? NULL : request_token(p),
        .microversion = (url || !p->microversion[0]) ? NULL : p->microversion,
        .ca_bundle = p->ca_bundle,
        .timeout_ms = p->timeout_ms,
    };
    _cleanup_free_ char *full = NULL;
    struct placement_request *r = NULL;
    int e;

    if (!url) {
        if (asprintf(&full, "%s%s", p->url, path) < 0) {
            full = NULL;
            placement_retry_later(p, "unavailable", field, "out of memory");
            return;
        }
        url = full;
    }
    e = placement_request_new(method, url, body, &opts, &r);
    if (e >= 0) {
        e = httpuv_add(p->http, r->easy, on_http_done, p);
        if (e < 0)
            placement_request_free(r);
    }
    if (e < 0) {
        placement_retry_later(p, "unavailable", field, strerror(-e));
        return;
    }
    p->inflight = r;
    p->on_answer = on_answer;
    p->inflight_field = field;
    p->inflight_is_auth = on_answer == placement_on_token;
    p->stats.requests++;
    if (is_work)
        p->worked = true;
}

void placement_send_json(struct placement *p, const char *method, const char *path, json_t *body,
                         const char *field, answer_fn on_answer)
{
    _cleanup_free_ char *s = body ? json_dumps(body, JSON_COMPACT) : NULL;

    if (!s) {
        placement_retry_later(p, "unavailable", field, "out of memory");
        return;
    }
    placement_send_request(p, method, path, NULL, s, field, on_answer, true);
}

/* Take the provider generation from an answer. A read showing a
 * generation other than the last one seen means someone else changed the
 * provider: every cached view of it is stale, not just the one being read
 * (the caller marks that one fresh after this). */
void placement_read_generation(struct placement *p, const json_t *body, const char *key)
{
    const json_t *g = json_object_get(body, key);

    if (!json_is_integer(g))
        return;
    if (json_integer_value(g) != p->generation) {
        p->inv_remote_known = false;
        p->traits_remote_known = false;
    }
    p->generation = json_integer_value(g);
}

/* The generation after our own successful write. */
void placement_wrote_generation(struct placement *p, const json_t *body, const char *key)
{
    const json_t *g = json_object_get(body, key);

    if (json_is_integer(g))
        p->generation = json_integer_value(g);
}

void placement_on_version(struct placement *p, struct placement_request *r)
{
    json_t *body;
    const json_t *v;
    char what[256];
    int e;

    if (r->status != 200) {
        placement_unexpected(p, r, "version");
        return;
    }
    body = placement_request_json(r);
    v = json_array_get(json_object_get(body, "versions"), 0);
    e = placement_microversion_pick(json_string_value(json_object_get(v, "min_version")),
                                    json_string_value(json_object_get(v, "max_version")),
                                    p->microversion);
    if (e < 0) {
        p->microversion[0] = '\0';
        if (e == -ENOTSUP)
            snprintf(what, sizeof(what),
                     "Placement offers microversions %s to %s; this agent needs %s or later",
                     json_string_value(json_object_get(v, "min_version")) ?: "?",
                     json_string_value(json_object_get(v, "max_version")) ?: "?",
                     PLACEMENT_MICROVERSION_MIN);
        else
            snprintf(what, sizeof(what), "%s/ does not answer like Placement (no versions)",
                     p->url);
        json_decref(body);
        stall(p, e == -ENOTSUP ? "unsupported" : "invalid", "version", what);
        return;
    }
    strscpy(p->stats.microversion, p->microversion, sizeof(p->stats.microversion));
    json_decref(body);
}

void placement_on_token(struct placement *p, struct placement_request *r)
{
    json_t *body;
    int64_t expires_ms, life_ms;
    char what[512];

    if ((r->status != 201 && r->status != 200) || !r->subject_token || !r->subject_token[0]) {
        placement_describe(r, what, sizeof(what));
        stall(p, "unauthorized", "auth", what);
        return;
    }
    free(p->token);
    p->token = TAKE_PTR(r->subject_token);
    body = placement_request_json(r);
    if (placement_keystone_expiry(body, &expires_ms) == 0)
        life_ms = expires_ms - now_wall_ms();
    else
        life_ms = TOKEN_DEFAULT_LIFE_MS;
    json_decref(body);
    /* renew a minute early; a short-lived token at half its life */
    life_ms = life_ms > 2 * TOKEN_RENEW_MARGIN_MS ? life_ms - TOKEN_RENEW_MARGIN_MS : life_ms / 2;
    if (life_ms < 0)
        life_ms = 0;
    p->token_renew_ns = now_mono_ns() + (uint64_t)life_ms * 1000000ull;
}

static bool token_needed(const struct placement *p)
{
    return p->auth == PLACEMENT_AUTH_KEYSTONE &&
           (!p->token || now_mono_ns() >= p->token_renew_ns);
}

/* A finished request (result and status set): count it, handle what every
 * step handles alike (transient failures, 401), hand the rest to on_answer.
 * p->inflight_field and p->inflight_is_auth describe it. */
void placement_take_answer(struct placement *p, struct placement_request *r, answer_fn on_answer,
                           CURLcode result)
{
    const char *field = p->inflight_field;
    char what[512];

    if (r->status >= 200 && r->status < 300)
        p->stats.ok++;
    else if (r->status == 409)
        p->stats.conflict++;
    else
        p->stats.error++;
    p->stats.reachable = r->status != 0;
    if (result != CURLE_OK || r->status >= 500 || r->status == 429 || r->status == 408) {
        placement_describe(r, what, sizeof(what));
        placement_retry_later(p, "unavailable", field, what);
    } else if (r->status == 401 && !p->inflight_is_auth) {
        if (p->auth == PLACEMENT_AUTH_KEYSTONE && !p->auth_retried) {
            p->auth_retried = true; /* renew the token, redo the same step */
            free(p->token);
            p->token = NULL;
        } else {
            placement_describe(r, what, sizeof(what));
            stall(p, "unauthorized", field, what);
        }
    } else {
        if (r->status >= 200 && r->status < 300) {
            p->attempt = 0;
            if (!p->inflight_is_auth)
                p->auth_retried = false;
        }
        on_answer(p, r);
    }
}

static void on_http_done(CURL *easy, CURLcode result, void *opaque)
{
    struct placement *p = opaque;
    struct placement_request *r = TAKE_PTR(p->inflight);

    (void)easy;
    placement_request_finish(r, result);
    placement_take_answer(p, r, p->on_answer, result);
    placement_request_free(r);
    advance(p);
}

static bool all_acked(const struct placement *p)
{
    return p->provider_ok && (!p->inv_desired_set || p->inv_acked_ver == p->inv_ver) &&
           (!p->traits_desired_set || p->traits_acked_ver == p->traits_ver);
}

static void advance(struct placement *p)
{
    char path[128];

    for (;;) {
        if (p->closing || p->inflight || p->timer_armed || p->stalled)
            return;
        /* nothing wanted: say nothing, not even to check the version */
        if (p->provider_ok && !placement_inv_pending(p) && !placement_traits_pending(p) && !p->check &&
            !p->n_allocs)
            break;
        if (!p->microversion[0]) {
            placement_send_request(p, "GET", "/", NULL, NULL, "version", placement_on_version, false);
            return;
        }
        if (token_needed(p)) {
            p->stats.auth_requests++;
            placement_send_request(p, "POST", NULL, p->ks_url, p->ks_body, "auth", placement_on_token, false);
            return;
        }
        if (!p->provider_ok) {
            placement_send_provider(p);
            return;
        }
        if (placement_inv_pending(p)) {
            if (placement_sync_inventory(p))
                return;
            continue;
        }
        if (placement_traits_pending(p)) {
            if (placement_sync_traits(p))
                return;
            continue;
        }
        if (p->n_allocs) {
            if (placement_sync_allocations(p))
                return;
            continue;
        }
        if (p->check) {
            snprintf(path, sizeof(path), "/resource_providers/%s/allocations", p->uuid);
            placement_send_request(p, "GET", path, NULL, NULL, "usage", placement_on_usage, false);
            return;
        }
        break;
    }
    p->stats.synced = all_acked(p);
    if (p->stats.synced && p->worked) {
        p->worked = false;
        p->stats.syncs++;
        if (p->cb.on_synced)
            p->cb.on_synced(p, p->opaque);
    }
}
