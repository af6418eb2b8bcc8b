/* placement-private.h: PRIVATE to the Placement client object's files:
 * placement.c (the object, configuration, the public setters), pipeline.c
 * (one request at a time: scheduling, retries, failure paths, sending,
 * version discovery, Keystone, advance()), provider.c (find, create, rename
 * the resource provider), sync-inventory.c, sync-traits.c (bring Placement to
 * the wanted inventories and traits), usage.c (the usage check). The pure
 * pieces they use (and tests check) are in placement-internal.h. Loop thread
 * only. */
#ifndef CA_SCHEDULER_CLIENT_PLACEMENT_PRIVATE_H
#define CA_SCHEDULER_CLIENT_PLACEMENT_PRIVATE_H

#include <curl/curl.h>
#include <jansson.h>

#include "common/httpuv.h"
#include "common/util.h"
#include "scheduler-client/placement-internal.h"
#include "scheduler-client/placement.h"

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

/* What a queued allocation op sends. */
enum alloc_kind {
    ALLOC_PUT,    /* PUT /allocations/{c}: write one consumer */
    ALLOC_DELETE, /* DELETE /allocations/{c}: remove one consumer's */
    ALLOC_MOVE,   /* POST /allocations: write two consumers at once */
};

/* A queued allocation write (put), removal or move. */
struct alloc_op {
    enum alloc_kind kind;
    /* [0]: the consumer (a move's source); [1]: a move's target. A removal
     * has only the consumer uuid; a move's emptied source all zero
     * resources. Strings owned. */
    struct placement_alloc_side side[2];
    bool need_gen;                  /* put: a 409: GET the consumer's generation first */
    unsigned reads;                 /* move: sides read (GET) since the last start; 2: POST */
    bool posted;                    /* move: a POST is out or its answer was lost */
    unsigned conflicts;             /* consecutive 409s for this op */
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
    struct alloc_op *allocs;         /* FIFO of allocation work (head first) */
    size_t n_allocs, cap_allocs;

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

/* ---- pipeline.c ---- */

/* Report an error to on_error; false when the callee freed p. */
bool placement_emit_error(struct placement *p, const char *code, const char *field,
                          const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/* Something changed: run the pipeline soon, unless it is busy or waiting
 * out a retry delay (it looks at the new state when it continues). */
void placement_kick(struct placement *p);
/* Controller unreachable, 5xx, too many conflicts: wait and start over
 * from version discovery (the controller may have been upgraded). */
void placement_retry_later(struct placement *p, const char *code, const char *field,
                           const char *what);
/* The provider is gone (404): find or re-create it, then resend everything. */
void placement_provider_lost(struct placement *p);
/* 409 placement.concurrent_update (or a create race): re-read, retry soon
 * with jitter; past the bound, back off like a transient failure. */
void placement_conflict_retry(struct placement *p, const char *field);
/* "METHOD url: status/curl error" of a finished request, for messages. */
void placement_describe(const struct placement_request *r, char *buf, size_t size);
/* Any answer not handled specifically: a permanent refusal of this step. */
void placement_unexpected(struct placement *p, struct placement_request *r, const char *field);
/* Start a request to url (absolute) or to p->url + path. On failure to
 * build or start it, back off as for a transient failure. */
void placement_send_request(struct placement *p, const char *method, const char *path,
                            const char *url, const char *body, const char *field,
                            answer_fn on_answer, bool is_work);
/* placement_send_request() with body serialised (body borrowed). */
void placement_send_json(struct placement *p, const char *method, const char *path, json_t *body,
                         const char *field, answer_fn on_answer);
/* Take the provider generation from a read answer (a foreign change makes
 * every cached view stale). */
void placement_read_generation(struct placement *p, const json_t *body, const char *key);
/* The generation after our own successful write. */
void placement_wrote_generation(struct placement *p, const json_t *body, const char *key);
/* A finished request (result and status set): count it, handle what every
 * step handles alike (transient failures, 401), hand the rest to on_answer. */
void placement_take_answer(struct placement *p, struct placement_request *r, answer_fn on_answer,
                           CURLcode result);

/* Answer handlers (answer_fn, also driven by the fuzz harness through
 * placement_feed_answer()): each reads r's status and body and moves the
 * pipeline on. */
void placement_on_version(struct placement *p, struct placement_request *r);
void placement_on_token(struct placement *p, struct placement_request *r);
void placement_on_provider_get(struct placement *p, struct placement_request *r);
void placement_on_provider_find(struct placement *p, struct placement_request *r);
void placement_on_provider_create(struct placement *p, struct placement_request *r);
void placement_on_provider_rename(struct placement *p, struct placement_request *r);
void placement_on_inv_get(struct placement *p, struct placement_request *r);
void placement_on_inv_put(struct placement *p, struct placement_request *r);
void placement_on_traits_get(struct placement *p, struct placement_request *r);
void placement_on_trait_create(struct placement *p, struct placement_request *r);
void placement_on_traits_put(struct placement *p, struct placement_request *r);
void placement_on_usage(struct placement *p, struct placement_request *r);
void placement_on_alloc_put(struct placement *p, struct placement_request *r);
void placement_on_alloc_get(struct placement *p, struct placement_request *r);
void placement_on_alloc_delete(struct placement *p, struct placement_request *r);
void placement_on_move_get(struct placement *p, struct placement_request *r);
void placement_on_move_post(struct placement *p, struct placement_request *r);

/* ---- provider.c ---- */

/* Send the next provider request (p->provider_step). */
void placement_send_provider(struct placement *p);

/* ---- sync-inventory.c, sync-traits.c ---- */

/* Work left: the wanted version is neither held nor rejected by Placement. */
bool placement_inv_pending(const struct placement *p);
bool placement_traits_pending(const struct placement *p);
/* Send the next request towards the wanted state; true when a request was
 * sent (or a wait scheduled), false when there is nothing to do. */
bool placement_sync_inventory(struct placement *p);
bool placement_sync_traits(struct placement *p);

/* ---- allocations.c ---- */

/* Send the head of the allocation queue; false when it is empty. */
bool placement_sync_allocations(struct placement *p);
/* Release the queue (placement_free's close). */
void placement_allocs_clear(struct placement *p);

/* ---- usage.c ---- */

/* Fail the pending usage check (if any) with status; false when p was freed. */
bool placement_check_fail(struct placement *p, int status, const char *code, const char *msg);

#endif
