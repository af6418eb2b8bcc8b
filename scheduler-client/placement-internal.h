/* placement-internal.h: INTERNAL to scheduler-client/ and its tests. Not an
 * API: the pieces the client object (placement.c, pipeline.c, ...) is built
 * from (sorted string sets, inventory sets and their diff, trait rules,
 * backoff, microversions, Keystone bodies, one HTTP exchange), exposed so
 * tests can check them without a server. */
#ifndef CA_SCHEDULER_CLIENT_PLACEMENT_INTERNAL_H
#define CA_SCHEDULER_CLIENT_PLACEMENT_INTERNAL_H

#include <curl/curl.h>
#include <jansson.h>

#include "scheduler-client/placement.h"

/* ---- strset.c: a sorted set of strings (owned copies) ---- */
struct placement_strset {
    char **v;  /* sorted, unique, each malloc'd */
    size_t n;  /* entries */
};

/* Insert a copy of s (no-op if present). 0 or -ENOMEM. */
int placement_strset_add(struct placement_strset *set, const char *s);
void placement_strset_remove(struct placement_strset *set, const char *s);
bool placement_strset_has(const struct placement_strset *set, const char *s);
bool placement_strset_equal(const struct placement_strset *a, const struct placement_strset *b);
/* Replace *dst with a copy of src. 0 or -ENOMEM (dst unchanged). */
int placement_strset_copy(struct placement_strset *dst, const struct placement_strset *src);
void placement_strset_clear(struct placement_strset *set);

/* ---- inventory.c: inventory sets ---- */
#define PLACEMENT_NAME_MAX 255 /* resource class and trait names */

struct placement_inv_item {
    char rc[PLACEMENT_NAME_MAX + 1];
    int64_t total, reserved, min_unit, max_unit, step_size;
    double allocation_ratio;
};

struct placement_inv_set {
    struct placement_inv_item *items; /* sorted by rc, unique; malloc'd */
    size_t n;
};

/* [A-Z0-9_]{1,255}: what Placement accepts as a resource class or trait. */
bool placement_name_valid(const char *s);
/* Validate and normalize caller records: totals of 0 dropped, sorted.
 * 0, -EINVAL (bad value, duplicate class), -ENOMEM. *ret written on success. */
int placement_inv_set_build(const struct placement_inventory inv[], size_t n,
                            struct placement_inv_set *ret);
/* From Placement's "inventories" object (missing fields take Placement's
 * defaults). 0, -EINVAL, -ENOMEM. */
int placement_inv_set_from_json(const json_t *inventories, struct placement_inv_set *ret);
/* Placement's "inventories" object; new reference or NULL. */
json_t *placement_inv_set_to_json(const struct placement_inv_set *set);
/* Same classes with the same values (allocation ratios within 1e-6 relative:
 * Placement may store them as single-precision floats). */
bool placement_inv_set_equal(const struct placement_inv_set *a, const struct placement_inv_set *b);
/* What to PUT: remote's classes not in managed, then desired. 0 or -ENOMEM. */
int placement_inv_set_merge(const struct placement_inv_set *remote,
                            const struct placement_inv_set *desired,
                            const struct placement_strset *managed,
                            struct placement_inv_set *ret);
bool placement_inv_set_has(const struct placement_inv_set *set, const char *rc);
/* Replace *dst with a copy of src. 0 or -ENOMEM (dst unchanged). */
int placement_inv_set_copy(struct placement_inv_set *dst, const struct placement_inv_set *src);
void placement_inv_set_clear(struct placement_inv_set *set);

/* ---- traits.c ---- */
#define PLACEMENT_TRAIT_DISABLED "COMPUTE_STATUS_DISABLED"
/* Managed by this client: COMPUTE_STATUS_DISABLED always; once traits were
 * given (given not NULL: every trait given so far), also HW_CPU_X86_*,
 * CUSTOM_HYPERVISOR_* and those in given. */
bool placement_trait_managed(const char *name, const struct placement_strset *given);
/* remote minus the managed ones, plus desired (into *ret, replaced).
 * 0 or -ENOMEM. */
int placement_traits_merge(const struct placement_strset *remote,
                           const struct placement_strset *desired,
                           const struct placement_strset *given,
                           struct placement_strset *ret);
/* The HW_CPU_X86_* trait for a libvirt or /proc/cpuinfo feature name, or NULL. */
const char *placement_cpu_feature_trait(const char *feature);

/* ---- backoff.c ---- */
/* Delay before transient retry number attempt (1, 2, ...): "equal jitter",
 * uniformly in [b/2, b] with b = min(max_ms, initial_ms * 2^(attempt-1)).
 * rnd is a random number (a parameter so tests can pin it). */
uint64_t placement_backoff_ms(unsigned attempt, unsigned initial_ms, unsigned max_ms,
                              uint32_t rnd);
/* Delay before conflict retry number attempt: "full jitter", uniformly in
 * [0, b] with b as above, so competing writers spread out. */
uint64_t placement_jitter_ms(unsigned attempt, unsigned initial_ms, unsigned max_ms,
                             uint32_t rnd);

/* ---- microversion.c ---- */
/* "1.39" -> 1, 39. 0 or -EINVAL. */
int placement_microversion_parse(const char *s, int *major, int *minor);
/* Choose min(PLACEMENT_MICROVERSION_WANT, server_max) into out; -ENOTSUP if
 * that is below PLACEMENT_MICROVERSION_MIN or below server_min, -EINVAL if
 * unparsable. */
int placement_microversion_pick(const char *server_min, const char *server_max, char out[8]);

/* ---- keystone.c ---- */
/* "<auth_url>/v3/auth/tokens?nocatalog" whether or not auth_url ends in /v3.
 * malloc'd, or NULL. */
char *placement_keystone_tokens_url(const char *auth_url);
/* The password-method, project-scoped request body; malloc'd, or NULL. */
char *placement_keystone_body(const struct placement_keystone_config *k);
/* Read token.expires_at ("2026-11-23T21:10:11.000000Z") from the response
 * body into milliseconds since the epoch. 0 or -EINVAL. */
int placement_keystone_expiry(const json_t *body, int64_t *ret_ms);

/* ---- drift.c ---- */
/* Compare an "allocations" object (consumer uuid -> ...) with the local
 * consumers. Fills two sets (cleared first). 0, -EINVAL, -ENOMEM. */
int placement_drift_compute(const json_t *allocations, const struct placement_strset *local,
                            struct placement_strset *only_in_placement,
                            struct placement_strset *only_here);

/* ---- allocations.c ---- */
/* The body of PUT /allocations/{consumer} at microversion mv ("1.39"):
 * consumer_generation (gen, or null when have_gen is false) from 1.28,
 * consumer_type INSTANCE from 1.38. New reference or NULL. */
json_t *placement_allocation_body(const char *provider, const char *mv, int64_t vcpus,
                                  int64_t memory_mb, int64_t disk_gb, const char *project_id,
                                  const char *user_id, bool have_gen, int64_t gen);

/* One consumer in an allocation body: what it should hold against this
 * provider (all zero: nothing) and, from a read, its generation. */
struct placement_alloc_side {
    char consumer[37];                 /* lower-case uuid */
    int64_t vcpus, memory_mb, disk_gb; /* 0: that class left out */
    char *project_id, *user_id;        /* owned here; borrowed by the body builders */
    char *consumer_type;               /* 1.38+; NULL: "INSTANCE" */
    bool have_gen;                     /* gen read (false: the consumer does not exist) */
    int64_t gen;
    bool holds_none;                   /* the read found no allocation at all */
    bool holds_wanted;                 /* the read found exactly the wanted one */
};

/* The body of POST /allocations at microversion mv (1.28+): one entry per
 * side, keyed by its consumer: its resources against provider (all zero:
 * "allocations": {}), project_id, user_id, consumer_generation (gen, or
 * null when have_gen is false), consumer_type from 1.38. New reference or
 * NULL (also below 1.28, where a move cannot be made safe). */
json_t *placement_move_body(const char *provider, const char *mv, const struct placement_alloc_side sides[],
                            size_t n);

/* Read the answer of GET /allocations/{consumer} into side: have_gen/gen,
 * holds_none, holds_wanted (exactly side's resources against provider, on
 * no other provider), and the consumer_type when side has none. 0, -EINVAL
 * (not an allocations object), -ENOMEM. */
int placement_alloc_side_read(struct placement_alloc_side *side, const char *provider, const json_t *body);

/* ---- request.c: one HTTP exchange ---- */
struct placement_request_opts {
    const char *token;        /* X-Auth-Token, or NULL */
    const char *microversion; /* OpenStack-API-Version: placement X, or NULL */
    const char *ca_bundle;    /* CURLOPT_CAINFO, or NULL */
    unsigned timeout_ms;      /* whole exchange */
};

struct placement_request {
    CURL *easy;                  /* owned */
    struct curl_slist *headers;  /* owned */
    char *body;                  /* request body (owned), or NULL */
    char *resp;                  /* response body, NUL-terminated (owned) */
    size_t resp_len;             /* bytes in resp */
    size_t resp_cap;             /* allocated for resp */
    char *subject_token;         /* X-Subject-Token answered, or NULL */
    long status;                 /* HTTP status, 0 if none */
    CURLcode result;             /* transfer result */
    char errbuf[CURL_ERROR_SIZE]; /* curl's message for result */
};

/* Build a request (not started). method "GET", "PUT", "POST"; body copied
 * (NULL: none). 0 and *ret, or -ENOMEM/-EINVAL. */
int placement_request_new(const char *method, const char *url, const char *body,
                          const struct placement_request_opts *opts,
                          struct placement_request **ret);
/* Fill status after the transfer ended with result. */
void placement_request_finish(struct placement_request *r, CURLcode result);
void placement_request_free(struct placement_request *r);
/* The response parsed as JSON: new reference, or NULL. */
json_t *placement_request_json(const struct placement_request *r);
/* errors[0].code of a Placement error body into buf ("" if none). */
void placement_request_error_code(const struct placement_request *r, char *buf, size_t size);
/* A one-line human description: curl's error or errors[0].detail. */
void placement_request_describe(const struct placement_request *r, char *buf, size_t size);

/* ---- placement.c: FOR THE FUZZ HARNESS ONLY ---- */
/* The steps of the pipeline, each with its answer handler. */
enum placement_step {
    PLACEMENT_STEP_VERSION,         /* GET / */
    PLACEMENT_STEP_TOKEN,           /* POST Keystone /v3/auth/tokens */
    PLACEMENT_STEP_PROVIDER_GET,    /* GET /resource_providers/{uuid} */
    PLACEMENT_STEP_PROVIDER_FIND,   /* GET /resource_providers?name= */
    PLACEMENT_STEP_PROVIDER_CREATE, /* POST /resource_providers */
    PLACEMENT_STEP_PROVIDER_RENAME, /* PUT /resource_providers/{uuid} */
    PLACEMENT_STEP_INV_GET,         /* GET .../inventories */
    PLACEMENT_STEP_INV_PUT,         /* PUT .../inventories */
    PLACEMENT_STEP_TRAITS_GET,      /* GET .../traits */
    PLACEMENT_STEP_TRAIT_CREATE,    /* PUT /traits/CUSTOM_... */
    PLACEMENT_STEP_TRAITS_PUT,      /* PUT .../traits */
    PLACEMENT_STEP_USAGE,           /* GET .../allocations */
    PLACEMENT_STEP_ALLOC_PUT,       /* PUT /allocations/{consumer} */
    PLACEMENT_STEP_ALLOC_GET,       /* GET /allocations/{consumer} */
    PLACEMENT_STEP_ALLOC_DELETE,    /* DELETE /allocations/{consumer} */
    PLACEMENT_STEP_MOVE_GET,        /* GET /allocations/{consumer} before a move */
    PLACEMENT_STEP_MOVE_POST,       /* POST /allocations (a move) */
    PLACEMENT_STEP_COUNT
};
/* Hand p an answer to step as if it had come over HTTP (status 0: the
 * transfer failed), with body (len bytes, copied) and X-Subject-Token
 * (NULL: none): it goes through the same handling as a real one, but
 * nothing is sent afterwards. 0, or -EINVAL when no such request could be
 * in flight (a usage answer without a pending check), -ENOMEM. */
int placement_feed_answer(struct placement *p, enum placement_step step, long status,
                          const char *body, size_t len, const char *subject_token);

#endif
