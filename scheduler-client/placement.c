/* placement.c: the Placement client object and its pipeline (see
 * placement.h).
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
#include "scheduler-client/placement.h"

#include <curl/curl.h>
#include <jansson.h>
#include <stdarg.h>

#include "common/httpuv.h"
#include "common/util.h"
#include "scheduler-client/placement-internal.h"

#define DEFAULT_CONFLICT_RETRIES 8
#define DEFAULT_BACKOFF_INITIAL_MS 500
#define DEFAULT_BACKOFF_MAX_MS 60000
#define DEFAULT_TIMEOUT_MS 30000
#define CONFLICT_JITTER_INITIAL_MS 50
#define CONFLICT_JITTER_MAX_MS 2000
#define TOKEN_RENEW_MARGIN_MS 60000
#define TOKEN_DEFAULT_LIFE_MS (10 * 60 * 1000) /* when expires_at is unreadable */
#define NAME_MAX_LEN 200                        /* Placement's provider name limit */

enum provider_step {
    PROVIDER_GET,    /* GET /resource_providers/{uuid} */
    PROVIDER_FIND,   /* GET /resource_providers?name= */
    PROVIDER_CREATE, /* POST /resource_providers */
    PROVIDER_RENAME, /* PUT /resource_providers/{uuid} */
};

struct placement;
typedef void (*answer_fn)(struct placement *p, struct placement_request *r);

struct usage_check {
    placement_usage_cb cb;          /* called once */
    void *opaque;                   /* for cb */
    struct placement_strset local;  /* consumers running here */
};

struct placement {
    uv_loop_t *loop;                 /* borrowed */
    struct httpuv *http;             /* owned; freed after the timer closes */
    uv_timer_t timer;                /* deferred starts and retry waits */
    struct placement_callbacks cb;   /* copy of the caller's callbacks */
    void *opaque;                    /* for every callback */

    /* configuration (owned copies) */
    char *url;                       /* Placement endpoint without trailing '/' */
    enum placement_auth auth;        /* how requests authenticate */
    char *static_token;              /* X-Auth-Token for NONE/TOKEN, or NULL */
    char *ks_url;                    /* Keystone tokens URL (KEYSTONE) */
    char *ks_body;                   /* Keystone request body (KEYSTONE) */
    char *ca_bundle;                 /* CA file, or NULL */
    char *name;                      /* provider name */
    unsigned conflict_retries;       /* bound on consecutive 409 retries */
    unsigned backoff_initial_ms;     /* first transient retry delay */
    unsigned backoff_max_ms;         /* transient retry delay cap */
    unsigned timeout_ms;             /* per request */

    /* session */
    char microversion[8];            /* negotiated; "" = ask GET / first */
    char *token;                     /* Keystone token, or NULL */
    uint64_t token_renew_ns;         /* monotonic time to renew the token */
    bool auth_retried;               /* a 401 already renewed the token */

    /* provider */
    char uuid[37];                   /* in use (maybe not confirmed), or "" */
    char reported_uuid[37];          /* last passed to on_provider */
    bool provider_ok;                /* confirmed to exist in Placement */
    enum provider_step provider_step; /* next provider request */
    bool rename_tried;               /* renamed (or tried) this session */
    int64_t generation;              /* provider generation last seen */

    /* inventories */
    struct placement_inv_set inv_desired; /* from the resource tracker */
    bool inv_desired_set;            /* placement_set_inventory() was called */
    uint64_t inv_ver;                /* bumped when inv_desired changes */
    uint64_t inv_acked_ver;          /* version Placement holds */
    uint64_t inv_failed_ver;         /* version Placement rejected */
    uint64_t inv_put_ver;            /* version of the PUT in flight */
    struct placement_strset inv_managed; /* classes this client owns */
    bool inv_remote_known;           /* inv_remote is current */
    struct placement_inv_set inv_remote; /* what Placement holds */
    struct placement_inv_set inv_target; /* what the PUT in flight sends */

    /* traits */
    struct placement_strset traits_given; /* last placement_set_traits() */
    struct placement_strset traits_ever;  /* every trait given so far */
    bool traits_given_set;           /* placement_set_traits() was called */
    bool disabled;                   /* COMPUTE_STATUS_DISABLED wanted */
    bool traits_desired_set;         /* set_traits or set_disabled was called */
    uint64_t traits_ver;             /* bumped when the desired traits change */
    uint64_t traits_acked_ver;       /* version Placement holds */
    uint64_t traits_failed_ver;      /* version Placement rejected */
    uint64_t traits_put_ver;         /* version of the PUT in flight */
    bool traits_remote_known;        /* traits_remote is current */
    bool traits_retried_400;         /* re-created custom traits after a 400 */
    struct placement_strset traits_remote;  /* what Placement holds */
    struct placement_strset traits_target;  /* what the PUT in flight sends */
    struct placement_strset custom_created; /* CUSTOM_* known to exist */
    char trait_creating[PLACEMENT_NAME_MAX + 1]; /* PUT /traits/{this} in flight */

    struct usage_check *check;       /* pending usage check, or NULL */

    /* pipeline */
    struct placement_request *inflight; /* the request in flight, or NULL */
    answer_fn on_answer;             /* its handler */
    const char *inflight_field;      /* its part, for errors */
    bool inflight_is_auth;           /* it is the Keystone request */
    bool timer_armed;                /* a start or retry wait is pending */
    bool stalled;                    /* stopped on a permanent failure */
    bool closing;                    /* placement_free() was called */
    bool worked;                     /* sync work done since the last on_synced */
    unsigned attempt;                /* consecutive transient failures */
    unsigned conflicts;              /* consecutive generation conflicts */
    struct placement_stats stats;    /* counters */
};

static void advance(struct placement *p);

static uint32_t random_u32(void)
{
    uint32_t v = 0;

    if (random_bytes(&v, sizeof(v)) < 0)
        v = (uint32_t)now_mono_ns();
    return v;
}

/* ---- callbacks (each returns false when the callee freed p) ---- */

static bool emit_error(struct placement *p, const char *code, const char *field,
                       const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static bool emit_error(struct placement *p, const char *code, const char *field,
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

static bool check_fail(struct placement *p, int status, const char *code, const char *msg)
{
    struct agent_error err;

    if (!p->check)
        return !p->closing;
    agent_error_set(&err, -status, code, "usage", "usage check: %s", msg);
    return check_complete(p, status, NULL, &err);
}

/* ---- scheduling ---- */

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
static void kick(struct placement *p)
{
    p->stalled = false;
    p->auth_retried = false; /* a stall on 401 may renew the token again */
    if (!p->closing && !p->inflight && !p->timer_armed)
        schedule(p, 0);
}

/* ---- failure paths ---- */

/* Controller unreachable, 5xx, too many conflicts: wait and start over
 * from version discovery (the controller may have been upgraded). */
static void retry_later(struct placement *p, const char *code, const char *field,
                        const char *what)
{
    uint64_t delay;

    p->attempt++;
    p->microversion[0] = '\0';
    p->stats.synced = false;
    delay = placement_backoff_ms(p->attempt, p->backoff_initial_ms, p->backoff_max_ms,
                                 random_u32());
    schedule(p, delay);
    if (!check_fail(p, -EAGAIN, "unavailable", what))
        return;
    emit_error(p, code, field, "%s (attempt %u, next in %llu ms)", what, p->attempt,
               (unsigned long long)delay);
}

/* A failure retrying cannot fix: stop until the caller changes something. */
static void stall(struct placement *p, const char *code, const char *field, const char *what)
{
    p->stalled = true;
    p->stats.synced = false;
    if (!check_fail(p, -EPROTO, code, what))
        return;
    emit_error(p, code, field, "%s", what);
}

/* The provider is gone (404): find or re-create it, then resend everything. */
static void provider_lost(struct placement *p)
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
static void conflict_retry(struct placement *p, const char *field)
{
    /* someone else wrote: whatever we cached about the provider is stale */
    p->inv_remote_known = false;
    p->traits_remote_known = false;
    p->conflicts++;
    if (p->conflicts > p->conflict_retries) {
        char what[128];
        snprintf(what, sizeof(what), "%u generation conflicts in a row", p->conflicts - 1);
        p->conflicts = 0;
        retry_later(p, "conflict", field, what);
        return;
    }
    schedule(p, placement_jitter_ms(p->conflicts, CONFLICT_JITTER_INITIAL_MS,
                                    CONFLICT_JITTER_MAX_MS, random_u32()));
}

static void describe(const struct placement_request *r, char *buf, size_t size)
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
static void unexpected(struct placement *p, struct placement_request *r, const char *field)
{
    char what[512];

    describe(r, what, sizeof(what));
    stall(p, "rejected", field, what);
}

/* ---- sending ---- */

static void on_http_done(CURL *easy, CURLcode result, void *opaque);
static void on_token(struct placement *p, struct placement_request *r);

static const char *request_token(const struct placement *p)
{
    return p->auth == PLACEMENT_AUTH_KEYSTONE ? p->token : p->static_token;
}

/* Start a request to url (absolute) or to p->url + path. On failure to
 * build or start it, back off as for a transient failure. */
static void send_request(struct placement *p, const char *method, const char *path,
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
            retry_later(p, "unavailable", field, "out of memory");
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
        retry_later(p, "unavailable", field, strerror(-e));
        return;
    }
    p->inflight = r;
    p->on_answer = on_answer;
    p->inflight_field = field;
    p->inflight_is_auth = on_answer == on_token;
    p->stats.requests++;
    if (is_work)
        p->worked = true;
}

static void send_json(struct placement *p, const char *method, const char *path, json_t *body,
                      const char *field, answer_fn on_answer)
{
    _cleanup_free_ char *s = body ? json_dumps(body, JSON_COMPACT) : NULL;

    if (!s) {
        retry_later(p, "unavailable", field, "out of memory");
        return;
    }
    send_request(p, method, path, NULL, s, field, on_answer, true);
}

/* Take the provider generation from an answer. A read showing a
 * generation other than the last one seen means someone else changed the
 * provider: every cached view of it is stale, not just the one being read
 * (the caller marks that one fresh after this). */
static void read_generation(struct placement *p, const json_t *body, const char *key)
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
static void wrote_generation(struct placement *p, const json_t *body, const char *key)
{
    const json_t *g = json_object_get(body, key);

    if (json_is_integer(g))
        p->generation = json_integer_value(g);
}

/* ---- version ---- */

static void on_version(struct placement *p, struct placement_request *r)
{
    json_t *body;
    const json_t *v;
    char what[256];
    int e;

    if (r->status != 200) {
        unexpected(p, r, "version");
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

/* ---- Keystone ---- */

static void on_token(struct placement *p, struct placement_request *r)
{
    json_t *body;
    int64_t expires_ms, life_ms;
    char what[512];

    if ((r->status != 201 && r->status != 200) || !r->subject_token || !r->subject_token[0]) {
        describe(r, what, sizeof(what));
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

/* ---- provider ---- */

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
    read_generation(p, rp, "generation");
    return true;
}

static void on_provider_get(struct placement *p, struct placement_request *r)
{
    json_t *body;
    const char *name;

    if (r->status == 404) {
        p->provider_step = PROVIDER_FIND;
        return;
    }
    if (r->status != 200) {
        unexpected(p, r, "provider");
        return;
    }
    body = placement_request_json(r);
    read_generation(p, body, "generation");
    name = json_string_value(json_object_get(body, "name"));
    if (name && strcmp(name, p->name) != 0 && !p->rename_tried) {
        p->provider_step = PROVIDER_RENAME;
    } else {
        provider_confirmed(p);
    }
    json_decref(body);
}

static void on_provider_find(struct placement *p, struct placement_request *r)
{
    json_t *body;
    const json_t *rp;

    if (r->status != 200) {
        unexpected(p, r, "provider");
        return;
    }
    body = placement_request_json(r);
    rp = json_array_get(json_object_get(body, "resource_providers"), 0);
    if (rp && provider_take(p, rp)) {
        provider_confirmed(p); /* names are unique: adopt it */
    } else if (rp) {
        json_decref(body);
        unexpected(p, r, "provider");
        return;
    } else {
        if (!p->uuid[0] && uuid_generate_str(p->uuid) < 0) {
            json_decref(body);
            retry_later(p, "unavailable", "provider", "no random numbers for a uuid");
            return;
        }
        p->provider_step = PROVIDER_CREATE;
    }
    json_decref(body);
}

static void on_provider_create(struct placement *p, struct placement_request *r)
{
    json_t *body;

    if (r->status == 409) {
        /* Someone created it (a provider with our uuid or our name) since
         * we looked: look again. */
        p->provider_step = PROVIDER_GET;
        conflict_retry(p, "provider");
        return;
    }
    if (r->status != 200 && r->status != 201) {
        unexpected(p, r, "provider");
        return;
    }
    body = placement_request_json(r);
    p->generation = 0;
    wrote_generation(p, body, "generation");
    json_decref(body);
    p->rename_tried = true;
    provider_confirmed(p);
}

static void on_provider_rename(struct placement *p, struct placement_request *r)
{
    json_t *body;
    char what[512];

    p->rename_tried = true;
    if (r->status == 404) {
        provider_lost(p);
        return;
    }
    if (r->status != 200) {
        /* Most likely another provider has the name. Keep going under the
         * uuid: registration matters more than the label. */
        describe(r, what, sizeof(what));
        p->provider_step = PROVIDER_GET;
        provider_confirmed(p);
        emit_error(p, "rejected", "provider", "%s", what);
        return;
    }
    body = placement_request_json(r);
    wrote_generation(p, body, "generation");
    json_decref(body);
    provider_confirmed(p);
}

static void send_provider(struct placement *p)
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
        send_request(p, "GET", path, NULL, NULL, "provider", on_provider_get, true);
        return;
    case PROVIDER_FIND:
        escaped = curl_easy_escape(NULL, p->name, 0);
        if (!escaped || asprintf(&q, "/resource_providers?name=%s", escaped) < 0) {
            q = NULL;
            retry_later(p, "unavailable", "provider", "out of memory");
            return;
        }
        send_request(p, "GET", q, NULL, NULL, "provider", on_provider_find, true);
        return;
    case PROVIDER_CREATE:
        body = json_pack("{s:s s:s}", "name", p->name, "uuid", p->uuid);
        send_json(p, "POST", "/resource_providers", body, "provider", on_provider_create);
        json_decref(body);
        return;
    case PROVIDER_RENAME:
        snprintf(path, sizeof(path), "/resource_providers/%s", p->uuid);
        body = json_pack("{s:s}", "name", p->name);
        send_json(p, "PUT", path, body, "provider", on_provider_rename);
        json_decref(body);
        return;
    }
}

/* ---- inventories ---- */

static bool inv_pending(const struct placement *p)
{
    return p->inv_desired_set && p->inv_acked_ver != p->inv_ver &&
           p->inv_failed_ver != p->inv_ver;
}

static void on_inv_get(struct placement *p, struct placement_request *r)
{
    json_t *body;
    struct placement_inv_set remote = {0};

    if (r->status == 404) {
        provider_lost(p);
        return;
    }
    body = placement_request_json(r);
    if (r->status != 200 ||
        placement_inv_set_from_json(json_object_get(body, "inventories"), &remote) < 0) {
        json_decref(body);
        unexpected(p, r, "inventories");
        return;
    }
    read_generation(p, body, "resource_provider_generation");
    json_decref(body);
    placement_inv_set_clear(&p->inv_remote);
    p->inv_remote = remote;
    p->inv_remote_known = true;
}

static void on_inv_put(struct placement *p, struct placement_request *r)
{
    json_t *body;
    char code[64], what[512];

    if (r->status == 404) {
        provider_lost(p);
        return;
    }
    if (r->status == 409) {
        placement_request_error_code(r, code, sizeof(code));
        if (strcmp(code, "placement.concurrent_update") == 0) {
            p->inv_remote_known = false;
            conflict_retry(p, "inventories");
            return;
        }
    }
    if (r->status != 200) {
        /* e.g. placement.inventory.inuse: shrinking below what is allocated */
        describe(r, what, sizeof(what));
        p->inv_failed_ver = p->inv_put_ver;
        p->inv_remote_known = false;
        emit_error(p, "rejected", "inventories", "%s", what);
        return;
    }
    body = placement_request_json(r);
    wrote_generation(p, body, "resource_provider_generation");
    json_decref(body);
    p->conflicts = 0;
    if (placement_inv_set_copy(&p->inv_remote, &p->inv_target) < 0)
        p->inv_remote_known = false;
    p->inv_acked_ver = p->inv_put_ver;
}

/* Returns true when a request was sent (or a wait scheduled). */
static bool sync_inventory(struct placement *p)
{
    struct placement_inv_set target = {0};
    json_t *body;
    char path[128];

    if (!p->inv_remote_known) {
        snprintf(path, sizeof(path), "/resource_providers/%s/inventories", p->uuid);
        send_request(p, "GET", path, NULL, NULL, "inventories", on_inv_get, true);
        return true;
    }
    if (placement_inv_set_merge(&p->inv_remote, &p->inv_desired, &p->inv_managed, &target) < 0) {
        retry_later(p, "unavailable", "inventories", "out of memory");
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
    send_json(p, "PUT", path, body, "inventories", on_inv_put);
    json_decref(body);
    return true;
}

/* ---- traits ---- */

static bool traits_pending(const struct placement *p)
{
    return p->traits_desired_set && p->traits_acked_ver != p->traits_ver &&
           p->traits_failed_ver != p->traits_ver;
}

static void on_traits_get(struct placement *p, struct placement_request *r)
{
    json_t *body;
    const json_t *list, *t;
    struct placement_strset remote = {0};
    size_t i;

    if (r->status == 404) {
        provider_lost(p);
        return;
    }
    body = placement_request_json(r);
    list = json_object_get(body, "traits");
    if (r->status != 200 || !json_is_array(list)) {
        json_decref(body);
        unexpected(p, r, "traits");
        return;
    }
    json_array_foreach(list, i, t) {
        if (!json_is_string(t) || placement_strset_add(&remote, json_string_value(t)) < 0) {
            placement_strset_clear(&remote);
            json_decref(body);
            unexpected(p, r, "traits");
            return;
        }
    }
    read_generation(p, body, "resource_provider_generation");
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

    describe(r, what, sizeof(what));
    p->traits_failed_ver = p->traits_ver;
    p->traits_remote_known = false;
    emit_error(p, "rejected", "traits", "%s", what);
}

static void on_trait_create(struct placement *p, struct placement_request *r)
{
    if (r->status / 100 != 2) { /* 201 created, 204 existed */
        traits_reject(p, r);
        return;
    }
    placement_strset_add(&p->custom_created, p->trait_creating);
}

static void on_traits_put(struct placement *p, struct placement_request *r)
{
    json_t *body;
    char code[64];

    if (r->status == 404) {
        provider_lost(p);
        return;
    }
    if (r->status == 409) {
        placement_request_error_code(r, code, sizeof(code));
        if (strcmp(code, "placement.concurrent_update") == 0) {
            p->traits_remote_known = false;
            conflict_retry(p, "traits");
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
    wrote_generation(p, body, "resource_provider_generation");
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

static bool sync_traits(struct placement *p)
{
    struct placement_strset desired = {0}, target = {0};
    json_t *body, *list;
    char path[PLACEMENT_NAME_MAX + 64];

    if (!p->traits_remote_known) {
        snprintf(path, sizeof(path), "/resource_providers/%s/traits", p->uuid);
        send_request(p, "GET", path, NULL, NULL, "traits", on_traits_get, true);
        return true;
    }
    if (traits_desired(p, &desired) < 0 ||
        placement_traits_merge(&p->traits_remote, &desired,
                               p->traits_given_set ? &p->traits_ever : NULL, &target) < 0) {
        placement_strset_clear(&desired);
        retry_later(p, "unavailable", "traits", "out of memory");
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
        send_request(p, "PUT", path, NULL, "", "traits", on_trait_create, true);
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
    send_json(p, "PUT", path, body, "traits", on_traits_put);
    json_decref(body);
    return true;
}

/* ---- usage check ---- */

static void on_usage(struct placement *p, struct placement_request *r)
{
    struct placement_strset only_placement = {0}, only_here = {0};
    struct placement_drift drift;
    json_t *body;
    char what[512];
    int e;

    if (r->status == 404) {
        provider_lost(p); /* the check runs again once it is re-created */
        return;
    }
    if (r->status != 200) {
        describe(r, what, sizeof(what));
        check_fail(p, -EPROTO, "rejected", what);
        return;
    }
    body = placement_request_json(r);
    e = placement_drift_compute(json_object_get(body, "allocations"), &p->check->local,
                                &only_placement, &only_here);
    json_decref(body);
    if (e < 0) {
        check_fail(p, e, "invalid", e == -ENOMEM ? "out of memory" : "unreadable allocations");
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

/* ---- the pipeline ---- */

/* A finished request (result and status set): count it, handle what every
 * step handles alike (transient failures, 401), hand the rest to on_answer.
 * p->inflight_field and p->inflight_is_auth describe it. */
static void take_answer(struct placement *p, struct placement_request *r, answer_fn on_answer,
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
        describe(r, what, sizeof(what));
        retry_later(p, "unavailable", field, what);
    } else if (r->status == 401 && !p->inflight_is_auth) {
        if (p->auth == PLACEMENT_AUTH_KEYSTONE && !p->auth_retried) {
            p->auth_retried = true; /* renew the token, redo the same step */
            free(p->token);
            p->token = NULL;
        } else {
            describe(r, what, sizeof(what));
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
    take_answer(p, r, p->on_answer, result);
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
        if (p->provider_ok && !inv_pending(p) && !traits_pending(p) && !p->check)
            break;
        if (!p->microversion[0]) {
            send_request(p, "GET", "/", NULL, NULL, "version", on_version, false);
            return;
        }
        if (token_needed(p)) {
            p->stats.auth_requests++;
            send_request(p, "POST", NULL, p->ks_url, p->ks_body, "auth", on_token, false);
            return;
        }
        if (!p->provider_ok) {
            send_provider(p);
            return;
        }
        if (inv_pending(p)) {
            if (sync_inventory(p))
                return;
            continue;
        }
        if (traits_pending(p)) {
            if (sync_traits(p))
                return;
            continue;
        }
        if (p->check) {
            snprintf(path, sizeof(path), "/resource_providers/%s/allocations", p->uuid);
            send_request(p, "GET", path, NULL, NULL, "usage", on_usage, false);
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

/* ---- public API ---- */

static int dup_opt(const char *s, char **ret)
{
    *ret = NULL;
    if (!s)
        return 0;
    *ret = strdup(s);
    return *ret ? 0 : -ENOMEM;
}

static bool text_ok(const char *s, size_t max)
{
    size_t n = 0;

    if (!s)
        return false;
    for (; s[n]; n++)
        if ((unsigned char)s[n] < 0x20 || s[n] == 0x7f || n >= max)
            return false;
    return n > 0;
}

static int config_check(const struct placement_config *cfg)
{
    const struct placement_keystone_config *k = &cfg->keystone;

    if (!cfg->url || (strncmp(cfg->url, "http://", 7) != 0 && strncmp(cfg->url, "https://", 8) != 0))
        return -EINVAL;
    if (cfg->provider_uuid && cfg->provider_uuid[0] && !uuid_is_valid(cfg->provider_uuid))
        return -EINVAL;
    if (cfg->provider_name && !text_ok(cfg->provider_name, NAME_MAX_LEN))
        return -EINVAL;
    if (cfg->token && !text_ok(cfg->token, 4096))
        return -EINVAL;
    switch (cfg->auth) {
    case PLACEMENT_AUTH_NONE:
        return 0;
    case PLACEMENT_AUTH_TOKEN:
        return cfg->token ? 0 : -EINVAL;
    case PLACEMENT_AUTH_KEYSTONE:
        if (!k->auth_url || !k->username || !k->password || !k->project_name)
            return -EINVAL;
        return 0;
    }
    return -EINVAL;
}

static void on_closed(uv_handle_t *h)
{
    struct placement *p = h->data;

    httpuv_free(p->http);
    free(p->url);
    free(p->static_token);
    free(p->ks_url);
    if (p->ks_body) {
        explicit_bzero(p->ks_body, strlen(p->ks_body)); /* holds the password */
        free(p->ks_body);
    }
    free(p->ca_bundle);
    free(p->name);
    free(p->token);
    placement_inv_set_clear(&p->inv_desired);
    placement_inv_set_clear(&p->inv_remote);
    placement_inv_set_clear(&p->inv_target);
    placement_strset_clear(&p->inv_managed);
    placement_strset_clear(&p->traits_given);
    placement_strset_clear(&p->traits_ever);
    placement_strset_clear(&p->traits_remote);
    placement_strset_clear(&p->traits_target);
    placement_strset_clear(&p->custom_created);
    if (p->check) {
        placement_strset_clear(&p->check->local);
        free(p->check);
    }
    free(p);
}

/* Free a placement_new() in progress: no handles started yet but the timer. */
static void placement_freep(struct placement **pp)
{
    if (*pp)
        placement_free(*pp);
}

int placement_new(uv_loop_t *loop, const struct placement_config *cfg,
                  const struct placement_callbacks *cb, void *opaque, struct placement **ret)
{
    _cleanup_(placement_freep) struct placement *p = NULL;
    char host[256];
    size_t n;
    int e;

    if (!loop || !cfg || !ret)
        return -EINVAL;
    e = config_check(cfg);
    if (e < 0)
        return e;
    p = calloc(1, sizeof(*p));
    if (!p)
        return -ENOMEM;
    p->loop = loop;
    uv_timer_init(loop, &p->timer);
    p->timer.data = p;
    if (cb)
        p->cb = *cb;
    p->opaque = opaque;
    p->auth = cfg->auth;
    p->conflict_retries = cfg->conflict_retries ? cfg->conflict_retries : DEFAULT_CONFLICT_RETRIES;
    p->backoff_initial_ms = cfg->backoff_initial_ms ? cfg->backoff_initial_ms
                                                    : DEFAULT_BACKOFF_INITIAL_MS;
    p->backoff_max_ms = cfg->backoff_max_ms ? cfg->backoff_max_ms : DEFAULT_BACKOFF_MAX_MS;
    p->timeout_ms = cfg->timeout_ms ? cfg->timeout_ms : DEFAULT_TIMEOUT_MS;
    e = httpuv_new(loop, &p->http);
    if (e < 0)
        return e;
    if (dup_opt(cfg->url, &p->url) < 0 || dup_opt(cfg->token, &p->static_token) < 0 ||
        dup_opt(cfg->ca_bundle, &p->ca_bundle) < 0)
        return -ENOMEM;
    n = strlen(p->url);
    while (n > 0 && p->url[n - 1] == '/')
        p->url[--n] = '\0';
    if (cfg->provider_name) {
        e = dup_opt(cfg->provider_name, &p->name);
    } else {
        if (gethostname(host, sizeof(host)) < 0)
            return -errno;
        host[sizeof(host) - 1] = '\0';
        if (!text_ok(host, NAME_MAX_LEN))
            return -EINVAL;
        e = dup_opt(host, &p->name);
    }
    if (e < 0)
        return e;
    if (p->auth == PLACEMENT_AUTH_KEYSTONE) {
        p->ks_url = placement_keystone_tokens_url(cfg->keystone.auth_url);
        p->ks_body = placement_keystone_body(&cfg->keystone);
        if (!p->ks_url || !p->ks_body)
            return -ENOMEM;
    }
    if (cfg->provider_uuid && cfg->provider_uuid[0]) {
        strscpy(p->uuid, cfg->provider_uuid, sizeof(p->uuid));
        for (char *c = p->uuid; *c; c++) /* Placement answers in lower case */
            if (*c >= 'A' && *c <= 'F')
                *c = (char)(*c - 'A' + 'a');
        p->provider_step = PROVIDER_GET;
    } else {
        p->provider_step = PROVIDER_FIND;
    }
    if (placement_strset_add(&p->inv_managed, "VCPU") < 0 ||
        placement_strset_add(&p->inv_managed, "MEMORY_MB") < 0 ||
        placement_strset_add(&p->inv_managed, "DISK_GB") < 0)
        return -ENOMEM;
    kick(p); /* register right away, from the loop */
    *ret = TAKE_PTR(p);
    return 0;
}

void placement_free(struct placement *p)
{
    if (!p || p->closing)
        return;
    p->closing = true;
    if (p->inflight) {
        if (p->http)
            httpuv_cancel(p->http, p->inflight->easy);
        placement_request_free(TAKE_PTR(p->inflight));
    }
    uv_timer_stop(&p->timer);
    /* httpuv and the memory go in the close callback: placement_free() may
     * be running inside an httpuv completion. */
    uv_close((uv_handle_t *)&p->timer, on_closed);
}

int placement_set_inventory(struct placement *p, const struct placement_inventory inv[],
                            size_t n)
{
    struct placement_inv_set set = {0};
    int e;

    if (!p)
        return -EINVAL;
    e = placement_inv_set_build(inv, n, &set);
    if (e < 0)
        return e;
    for (size_t i = 0; i < n; i++) {
        e = placement_strset_add(&p->inv_managed, inv[i].resource_class);
        if (e < 0) {
            placement_inv_set_clear(&set);
            return e;
        }
    }
    if (p->inv_desired_set && placement_inv_set_equal(&set, &p->inv_desired)) {
        placement_inv_set_clear(&set);
        return 0;
    }
    placement_inv_set_clear(&p->inv_desired);
    p->inv_desired = set;
    p->inv_desired_set = true;
    p->inv_ver++;
    p->stats.synced = false;
    kick(p);
    return 0;
}

int placement_set_traits(struct placement *p, const char *const traits[], size_t n)
{
    struct placement_strset set = {0};
    int e = 0;

    if (!p || (n && !traits))
        return -EINVAL;
    for (size_t i = 0; i < n && e == 0; i++) {
        if (!placement_name_valid(traits[i]) || strcmp(traits[i], PLACEMENT_TRAIT_DISABLED) == 0)
            e = -EINVAL;
        else
            e = placement_strset_add(&set, traits[i]);
    }
    for (size_t i = 0; i < set.n && e == 0; i++)
        e = placement_strset_add(&p->traits_ever, set.v[i]);
    if (e < 0) {
        placement_strset_clear(&set);
        return e;
    }
    if (p->traits_given_set && placement_strset_equal(&set, &p->traits_given)) {
        placement_strset_clear(&set);
        return 0;
    }
    placement_strset_clear(&p->traits_given);
    p->traits_given = set;
    p->traits_given_set = true;
    p->traits_desired_set = true;
    p->traits_ver++;
    p->stats.synced = false;
    kick(p);
    return 0;
}

void placement_set_disabled(struct placement *p, bool disabled)
{
    if (!p || (p->traits_desired_set && p->disabled == disabled))
        return;
    p->disabled = disabled;
    p->traits_desired_set = true;
    p->traits_ver++;
    p->stats.synced = false;
    kick(p);
}

void placement_resync(struct placement *p)
{
    if (!p)
        return;
    p->provider_ok = false;
    p->provider_step = p->uuid[0] ? PROVIDER_GET : PROVIDER_FIND;
    p->inv_remote_known = false;
    p->traits_remote_known = false;
    p->inv_acked_ver = p->inv_failed_ver = 0;
    p->traits_acked_ver = p->traits_failed_ver = 0;
    kick(p);
}

int placement_check_usage(struct placement *p, const char *const consumer_uuids[], size_t n,
                          placement_usage_cb cb, void *opaque)
{
    struct usage_check *c;
    char lower[37];
    int e = 0;

    if (!p || !cb || (n && !consumer_uuids))
        return -EINVAL;
    if (p->check)
        return -EBUSY;
    for (size_t i = 0; i < n; i++)
        if (!uuid_is_valid(consumer_uuids[i]))
            return -EINVAL;
    c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    for (size_t i = 0; i < n && e == 0; i++) {
        strscpy(lower, consumer_uuids[i], sizeof(lower));
        for (char *ch = lower; *ch; ch++)
            if (*ch >= 'A' && *ch <= 'F')
                *ch = (char)(*ch - 'A' + 'a');
        e = placement_strset_add(&c->local, lower);
    }
    if (e < 0) {
        placement_strset_clear(&c->local);
        free(c);
        return e;
    }
    c->cb = cb;
    c->opaque = opaque;
    p->check = c;
    kick(p);
    return 0;
}

const char *placement_provider_uuid(const struct placement *p)
{
    return p && p->provider_ok ? p->uuid : (p && p->reported_uuid[0] ? p->reported_uuid : NULL);
}

void placement_stats(const struct placement *p, struct placement_stats *ret)
{
    *ret = p->stats;
}

/* ---- for the fuzz harness (placement-internal.h) ---- */

int placement_feed_answer(struct placement *p, enum placement_step step, long status,
                          const char *body, size_t len, const char *subject_token)
{
    static const struct {
        answer_fn fn;
        const char *field;
    } steps[PLACEMENT_STEP_COUNT] = {
        [PLACEMENT_STEP_VERSION] = {on_version, "version"},
        [PLACEMENT_STEP_TOKEN] = {on_token, "auth"},
        [PLACEMENT_STEP_PROVIDER_GET] = {on_provider_get, "provider"},
        [PLACEMENT_STEP_PROVIDER_FIND] = {on_provider_find, "provider"},
        [PLACEMENT_STEP_PROVIDER_CREATE] = {on_provider_create, "provider"},
        [PLACEMENT_STEP_PROVIDER_RENAME] = {on_provider_rename, "provider"},
        [PLACEMENT_STEP_INV_GET] = {on_inv_get, "inventories"},
        [PLACEMENT_STEP_INV_PUT] = {on_inv_put, "inventories"},
        [PLACEMENT_STEP_TRAITS_GET] = {on_traits_get, "traits"},
        [PLACEMENT_STEP_TRAIT_CREATE] = {on_trait_create, "traits"},
        [PLACEMENT_STEP_TRAITS_PUT] = {on_traits_put, "traits"},
        [PLACEMENT_STEP_USAGE] = {on_usage, "usage"},
    };
    const struct placement_request_opts o = {.timeout_ms = 1000};
    CURLcode result = status ? CURLE_OK : CURLE_COULDNT_CONNECT;
    struct placement_request *r;
    int e;

    if (!p || (unsigned)step >= PLACEMENT_STEP_COUNT || p->closing || p->inflight ||
        (step == PLACEMENT_STEP_USAGE && !p->check))
        return -EINVAL; /* no such request could be in flight */
    e = placement_request_new("GET", p->url, NULL, &o, &r);
    if (e < 0)
        return e;
    r->resp = malloc(len + 1);
    if (!r->resp || (subject_token && !(r->subject_token = strdup(subject_token)))) {
        placement_request_free(r);
        return -ENOMEM;
    }
    if (len)
        memcpy(r->resp, body, len);
    r->resp[len] = '\0';
    r->resp_len = len;
    r->resp_cap = len + 1;
    r->result = result;
    r->status = status;
    p->inflight_field = steps[step].field;
    p->inflight_is_auth = step == PLACEMENT_STEP_TOKEN;
    take_answer(p, r, steps[step].fn, result);
    placement_request_free(r);
    return 0;
}
