/* placement.c: the Placement client object (see placement.h): configuration,
 * life cycle and the setters that say what is wanted; the pipeline that
 * brings Placement there is in pipeline.c and the files it names. */
#include "scheduler-client/placement-private.h"

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
    placement_allocs_clear(p);
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
    placement_kick(p); /* register right away, from the loop */
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
    placement_kick(p);
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
    placement_kick(p);
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
    placement_kick(p);
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
    placement_kick(p);
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
    placement_kick(p);
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

int placement_feed_answer(struct placement *p, enum placement_step step, long status,
                          const char *body, size_t len, const char *subject_token)
{
    static const struct {
        answer_fn fn;
        const char *field;
    } steps[PLACEMENT_STEP_COUNT] = {
        [PLACEMENT_STEP_VERSION] = {placement_on_version, "version"},
        [PLACEMENT_STEP_TOKEN] = {placement_on_token, "auth"},
        [PLACEMENT_STEP_PROVIDER_GET] = {placement_on_provider_get, "provider"},
        [PLACEMENT_STEP_PROVIDER_FIND] = {placement_on_provider_find, "provider"},
        [PLACEMENT_STEP_PROVIDER_CREATE] = {placement_on_provider_create, "provider"},
        [PLACEMENT_STEP_PROVIDER_RENAME] = {placement_on_provider_rename, "provider"},
        [PLACEMENT_STEP_INV_GET] = {placement_on_inv_get, "inventories"},
        [PLACEMENT_STEP_INV_PUT] = {placement_on_inv_put, "inventories"},
        [PLACEMENT_STEP_TRAITS_GET] = {placement_on_traits_get, "traits"},
        [PLACEMENT_STEP_TRAIT_CREATE] = {placement_on_trait_create, "traits"},
        [PLACEMENT_STEP_TRAITS_PUT] = {placement_on_traits_put, "traits"},
        [PLACEMENT_STEP_USAGE] = {placement_on_usage, "usage"},
        [PLACEMENT_STEP_ALLOC_PUT] = {placement_on_alloc_put, "allocations"},
        [PLACEMENT_STEP_ALLOC_GET] = {placement_on_alloc_get, "allocations"},
        [PLACEMENT_STEP_ALLOC_DELETE] = {placement_on_alloc_delete, "allocations"},
        [PLACEMENT_STEP_MOVE_GET] = {placement_on_move_get, "allocations"},
        [PLACEMENT_STEP_MOVE_POST] = {placement_on_move_post, "allocations"},
    };
    const struct placement_request_opts o = {.timeout_ms = 1000};
    CURLcode result = status ? CURLE_OK : CURLE_COULDNT_CONNECT;
    struct placement_request *r;
    int e;

    if (!p || (unsigned)step >= PLACEMENT_STEP_COUNT || p->closing || p->inflight ||
        (step == PLACEMENT_STEP_USAGE && !p->check) ||
        (step >= PLACEMENT_STEP_ALLOC_PUT && step <= PLACEMENT_STEP_MOVE_POST && !p->n_allocs))
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
    placement_take_answer(p, r, steps[step].fn, result);
    placement_request_free(r);
    return 0;
}
