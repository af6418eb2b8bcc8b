/* placement.h: keeps this host's resource provider in OpenStack Placement in
 * step with what the agent knows: the provider itself (found by uuid or name,
 * else created), its inventories (VCPU, MEMORY_MB, DISK_GB), its traits
 * (hypervisor, CPU features, COMPUTE_STATUS_DISABLED), and a usage check that
 * compares Placement's allocations with the instances running here.
 *
 * Everything runs on one libuv loop and never blocks it: the setters only
 * record the desired state and return; one background pipeline sends what
 * differs from what Placement last acknowledged, one request at a time, and
 * reports through callbacks. An idle client sends nothing. Generation
 * conflicts (409 placement.concurrent_update) are retried with jitter up to
 * a bound; transient failures (connect errors, 5xx) back off exponentially
 * with jitter and resume by themselves when the controller is back.
 *
 * Not thread-safe: call everything from the loop's thread. */
#ifndef CA_SCHEDULER_CLIENT_PLACEMENT_H
#define CA_SCHEDULER_CLIENT_PLACEMENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct agent_error;
struct placement;

/* The microversion this client asks for, and the oldest it can work with
 * (1.26: POST returns the provider, error codes in bodies, reserved may
 * equal total). */
#define PLACEMENT_MICROVERSION_WANT "1.39"
#define PLACEMENT_MICROVERSION_MIN "1.26"

enum placement_auth {
    /* No authentication service; cfg->token, if set, is sent as X-Auth-Token
     * (Placement's noauth2 strategy wants "admin"). */
    PLACEMENT_AUTH_NONE = 0,
    /* A static token (cfg->token, required) sent as X-Auth-Token. */
    PLACEMENT_AUTH_TOKEN,
    /* Keystone v3 password authentication (POST /v3/auth/tokens, project
     * scope). The token is cached, renewed a minute before it expires, and
     * renewed once when Placement answers 401. */
    PLACEMENT_AUTH_KEYSTONE,
};

struct placement_keystone_config {
    const char *auth_url;            /* "https://ks:5000" or "https://ks:5000/v3" */
    const char *username;
    const char *password;
    const char *project_name;
    const char *user_domain_name;    /* NULL: "Default" */
    const char *project_domain_name; /* NULL: "Default" */
};

/* Strings are copied by placement_new(); the config can be freed after. */
struct placement_config {
    const char *url;                 /* Placement endpoint, "http://ctl:8778" */
    enum placement_auth auth;
    const char *token;               /* see enum placement_auth */
    struct placement_keystone_config keystone; /* for PLACEMENT_AUTH_KEYSTONE */
    const char *ca_bundle;           /* PEM file for https; NULL: system CAs */
    const char *provider_name;       /* NULL: the host name */
    /* The provider uuid the agent stored, or NULL/"": find the provider by
     * name (adopting its uuid) or create one. Either way the uuid in use is
     * reported through on_provider, to be stored. */
    const char *provider_uuid;
    unsigned conflict_retries;       /* 409 concurrent_update retries; 0: 8 */
    unsigned backoff_initial_ms;     /* first transient retry delay; 0: 500 */
    unsigned backoff_max_ms;         /* cap for transient retries; 0: 60000 */
    unsigned timeout_ms;             /* whole request; 0: 30000 */
};

/* One inventory record. Values as Placement defines them: total >= 1 (a
 * total of 0 means "none" and the class is left out), reserved >= 0,
 * 1 <= min_unit <= max_unit, step_size >= 1, allocation_ratio > 0. */
struct placement_inventory {
    const char *resource_class;      /* "VCPU", "MEMORY_MB", "DISK_GB", "CUSTOM_..." */
    int64_t total;
    int64_t reserved;
    int64_t min_unit;
    int64_t max_unit;
    int64_t step_size;
    double allocation_ratio;
};

/* Result of a usage check. Both lists are sorted; the strings are borrowed
 * for the duration of the callback. Nothing is ever deleted: what to do
 * about drift is the agent's (or an operator's) decision. */
struct placement_drift {
    /* Consumers holding allocations against this provider that do not run here. */
    const char *const *only_in_placement;
    size_t n_only_in_placement;
    /* Instances running here without an allocation against this provider. */
    const char *const *only_here;
    size_t n_only_here;
};

/* All optional. Called on the loop thread, never from inside the API call
 * that caused them. placement_free() may be called from any of them. */
struct placement_callbacks {
    /* The provider is known to exist in Placement under this uuid: first
     * time it is confirmed, and whenever it changes (adopted by name,
     * re-created). Store it. */
    void (*on_provider)(struct placement *p, const char *uuid, void *opaque);
    /* Placement holds everything that was asked for (after work was done). */
    void (*on_synced)(struct placement *p, void *opaque);
    /* Something failed. err->code: "unavailable" (controller unreachable or
     * 5xx; retried with backoff), "conflict" (generation conflicts beyond the
     * bound; retried with backoff), "unauthorized", "unsupported"
     * (microversion), "rejected" (Placement refused the data; not retried
     * until it changes), "invalid" (bad answer). err->field names the part:
     * "provider", "inventories", "traits", "auth", "version", "usage". */
    void (*on_error)(struct placement *p, const struct agent_error *err, void *opaque);
    /* A usage check found drift (also passed to that check's callback). */
    void (*on_usage_drift)(struct placement *p, const struct placement_drift *drift,
                           void *opaque);
    /* An allocation write (placement_put_allocation) or removal
     * (placement_delete_allocation) ended: status 0 (Placement holds it /
     * holds none: a 404 counts as removed), or -EPROTO with err when
     * Placement refused it for good (not enough capacity, bad data; not
     * retried). Transient failures and consumer generation conflicts are
     * retried, with backoff, and never reported here. */
    void (*on_allocation)(struct placement *p, const char *consumer, bool removed, int status,
                          const struct agent_error *err, void *opaque);
};

struct placement_stats {
    uint64_t requests;        /* HTTP requests sent (Placement and Keystone) */
    uint64_t ok;              /* answered 2xx */
    uint64_t conflict;        /* answered 409 */
    uint64_t error;           /* transport failures and every other status */
    uint64_t auth_requests;   /* Keystone token requests (part of requests) */
    uint64_t syncs;           /* times the desired state was reached */
    bool synced;              /* Placement holds the desired state now */
    bool reachable;           /* the last request got an HTTP answer */
    char microversion[8];     /* negotiated, "" before the first answer */
};

/* Create a client on loop and start registering at once (in the background).
 * cb and its functions may be NULL; opaque is passed to every callback.
 * Returns 0 and *ret, or -EINVAL (bad config: missing url or credentials,
 * bad uuid, control characters in a token), -ENOMEM. */
int placement_new(uv_loop_t *loop, const struct placement_config *cfg,
                  const struct placement_callbacks *cb, void *opaque,
                  struct placement **ret);

/* Stop everything: the request in flight is abandoned, no callback fires
 * any more (a pending usage check's callback included). Memory is released
 * once the loop runs the close callbacks. Accepts NULL. */
void placement_free(struct placement *p);

/* The desired inventories, replacing the previous set (copied). Classes this
 * client was never given are left as they are in Placement, except VCPU,
 * MEMORY_MB and DISK_GB which it always owns. Sends nothing when equal to
 * the current desired state. 0, or -EINVAL (bad record, duplicate class),
 * -ENOMEM. */
int placement_set_inventory(struct placement *p, const struct placement_inventory inv[],
                            size_t n);

/* The desired traits (standard names or CUSTOM_*, copied; custom ones are
 * created in Placement first). COMPUTE_STATUS_DISABLED is not accepted here:
 * it follows placement_set_disabled(). The provider's other traits are
 * kept, except those this client manages: HW_CPU_X86_*,
 * CUSTOM_HYPERVISOR_*, COMPUTE_STATUS_DISABLED, and any given here before.
 * 0, or -EINVAL (bad name), -ENOMEM. */
int placement_set_traits(struct placement *p, const char *const traits[], size_t n);

/* Add (true) or remove (false) COMPUTE_STATUS_DISABLED. */
void placement_set_disabled(struct placement *p, bool disabled);

/* Forget what Placement acknowledged and compare again (a few GETs, writes
 * only if something differs). For a rare periodic reconciliation. */
void placement_resync(struct placement *p);

/* Called once per placement_check_usage() call: status 0 with drift (the
 * lists may be empty), or -errno with err (controller unreachable, provider
 * gone, ...) and drift NULL. */
typedef void (*placement_usage_cb)(struct placement *p, int status,
                                   const struct placement_drift *drift,
                                   const struct agent_error *err, void *opaque);

/* Compare the allocations Placement holds against this provider
 * (GET /resource_providers/{uuid}/allocations) with the consumers (instance
 * uuids) running here, copied. Runs after any pending sync work; a
 * transient failure completes it with an error rather than waiting.
 * 0 (cb will fire), or -EBUSY (a check is pending), -EINVAL, -ENOMEM (cb
 * never fires). */
int placement_check_usage(struct placement *p, const char *const consumer_uuids[], size_t n,
                          placement_usage_cb cb, void *opaque);

/* One consumer's allocation against this provider (PUT /allocations/{c}). */
struct placement_allocation {
    int64_t vcpus, memory_mb, disk_gb; /* 0: that class left out */
    const char *project_id;            /* required by Placement (1.8+) */
    const char *user_id;
    /* 1.38+: NULL is "INSTANCE"; a resize's migration consumer "MIGRATION"
     * (nova's); [A-Z0-9_]{1,255} */
    const char *consumer_type;
};

/* Write consumer's allocation against this provider (replacing what it
 * holds, so a repeat never doubles it): consumer_generation from a GET
 * when Placement answers 409 placement.concurrent_update, consumer_type
 * (a->consumer_type, default INSTANCE) at microversion 1.38+. Queued; one
 * request at a time after the provider's own sync; a newer put or delete
 * for the same consumer (or a move that includes it) replaces a queued one. 0, -EINVAL (bad uuid, no project/user, nothing to
 * allocate), -ENOMEM. on_allocation reports the end. */
int placement_put_allocation(struct placement *p, const char *consumer,
                             const struct placement_allocation *a);

/* Remove consumer's allocations (DELETE /allocations/{c}; 404 is done).
 * Queued as placement_put_allocation(). 0, -EINVAL, -ENOMEM. */
int placement_delete_allocation(struct placement *p, const char *consumer);

/* Move allocations between two consumers in one request, as nova does for
 * a resize or a migration (POST /allocations, microversion 1.28+: both
 * consumers, each with its consumer_generation, change together or not at
 * all): afterwards from holds from_alloc (NULL: nothing; its project, user
 * and type then come from to_alloc and what Placement has) and to holds
 * to_alloc, against this provider. Both consumers are read first (GET, for
 * their generations); when they already hold what is asked (a move that
 * landed before a lost answer or a restart: in particular an empty source
 * and a target holding to_alloc) nothing is written. A 409
 * placement.concurrent_update reads both again and resends, a bounded
 * number of times in a row before backing off like a transient failure;
 * so a repeat never doubles and a failure never loses an allocation.
 * Queued like placement_put_allocation(); a newer put, removal or move
 * replaces queued ones whose consumers it all covers (a move replaces a
 * put of either consumer; a put does not replace a move). on_allocation
 * fires once per consumer, from first (removed: from_alloc was NULL).
 * 0, -EINVAL (bad or equal uuids, no project/user, nothing for to, a bad
 * consumer_type), -ENOMEM. */
int placement_move_allocations(struct placement *p, const char *from, const char *to,
                               const struct placement_allocation *from_alloc,
                               const struct placement_allocation *to_alloc);

/* Allocation writes, removals and moves queued (the one in flight included). */
size_t placement_allocations_pending(const struct placement *p);

/* The provider uuid in use, or NULL before it is known. Borrowed: valid
 * until the next loop iteration. */
const char *placement_provider_uuid(const struct placement *p);

/* Counters for telemetry. */
void placement_stats(const struct placement *p, struct placement_stats *ret);

/* Map a host's CPU features to standard traits: every feature name (libvirt's
 * or /proc/cpuinfo's spelling: sse4.2 and sse4_2) that has an HW_CPU_X86_*
 * trait, on an x86 arch ("x86_64", "i686"; NULL or "" counts as x86), plus
 * CUSTOM_HYPERVISOR_KVM|QEMU|XEN for hypervisor "kvm"|"qemu"|"xen" (any
 * case; NULL: none). features are the enabled ones (the hypervisor layer
 * drops policy disable/forbid). On success *ret is a sorted array of
 * *ret_n strings, freed with placement_traits_free(). Returns 0, -EINVAL
 * with err (unknown hypervisor), -ENOMEM. */
int placement_traits_from_cpu(const char *arch, const char *const features[], size_t n_features,
                              const char *hypervisor, char ***ret, size_t *ret_n,
                              struct agent_error *err);

/* Free what placement_traits_from_cpu() returned. Accepts NULL. */
void placement_traits_free(char **traits, size_t n);

#endif
