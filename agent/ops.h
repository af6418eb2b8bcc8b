/* ops.h: every operation on an instance (launch, start, stop, reboot,
 * terminate) as a journaled state machine. Each step is committed to the
 * store before the agent acts on it, so a restart resumes or rolls back what
 * a crash interrupted. Blocking hypervisor calls run on worker threads; the
 * engine itself runs on the loop (every call here: loop thread only).
 *
 * The engine borrows the objects in struct ops_deps (they outlive it) and
 * tells its owner what it cannot settle itself through struct ops_hooks. */
#ifndef CA_AGENT_OPS_H
#define CA_AGENT_OPS_H

#include <jansson.h>
#include <stdbool.h>
#include <uv.h>

#include "agent/hypervisor/hv.h"
#include "agent/instance.h"
#include "agent/store.h"

struct ops;
struct events;
struct host;
struct imgcache;
struct metrics;
struct resources;

/* Borrowed; each must outlive the engine. */
struct ops_deps {
    struct store *store;       /* journal and instances (required) */
    struct hv *hv;             /* the hypervisor connection (required) */
    struct host *host;         /* enabled/ready: launches refused otherwise (required) */
    struct resources *res;     /* launch admission, foreign use (required) */
    struct imgcache *imgcache; /* images; NULL: launches by image reference refused */
    struct events *events;     /* outbox; NULL: no events recorded */
    struct metrics *metrics;   /* NULL: none counted */
};

/* Strings borrowed (must outlive the engine). */
struct ops_config {
    const char *instances_dir;    /* STATE_DIR/instances: each guest's files */
    const char *local_image_dirs; /* DIR[:DIR...] local files may come from; "" none */
    int64_t stop_timeout_s;       /* graceful stop, unless the request says */
    int64_t reboot_timeout_s;     /* graceful reboot, unless the request says */
    const char *crash_at;         /* "type:step" to SIGKILL at (tests); NULL: none */
};

/* Called on the loop thread; any may be NULL. */
struct ops_hooks {
    /* An operation ended (succeeded or failed); inst is the instance as it
     * is now. Both borrowed for the call. */
    void (*operation_finished)(void *opaque, const struct op_record *rec, const struct instance *inst);
    /* The hypervisor connection was lost: reconnect (then ops_reconcile). */
    void (*hv_lost)(void *opaque);
};

/* A new engine in *ret (ops_free()); 0 or -ENOMEM. cfg->crash_at is also
 * read from COMPUTE_AGENT_CRASH_AT when cfg leaves it NULL. */
int ops_new(uv_loop_t *loop, const struct ops_deps *deps, const struct ops_config *cfg,
            const struct ops_hooks *hooks, void *opaque, struct ops **ret);
/* Stop: no new work; runs are parked as they are (their journal rows stay,
 * nothing is rolled back, so the next start resumes them) and released as
 * their worker jobs or image waits return (keep running the loop until it
 * has nothing left). */
void ops_stop(struct ops *o);
/* Forget in-flight work (their journal rows stay for the next start).
 * Accepts NULL. */
void ops_free(struct ops *o);
/* SIGHUP: new default graceful timeouts for operations accepted from now. */
void ops_set_timeouts(struct ops *o, int64_t stop_timeout_s, int64_t reboot_timeout_s);

/* Each returns an HTTP status (202 accepted, or 200/202 for a repeated
 * request id) with *answer set to {"instance", "operation"} (new
 * reference), or -errno with err filled (code, field, message); then
 * nothing was changed. ops_launch() refuses local files (image.path,
 * kernel.path, kernel.initrd) outside hypervisor.local_image_dirs or not
 * regular files (invalid_field naming the field) and records the paths
 * they resolve to. */
int ops_launch(struct ops *o, const struct launch_spec *spec, json_t **answer,
               struct agent_error *err);
struct action_opts {
    const char *request_id; /* NULL if none */
    int64_t timeout_s;      /* stop/reboot: graceful timeout, <0: configured */
    bool force;             /* stop: skip the graceful part; reboot: hard */
};
int ops_action(struct ops *o, const char *id, const char *action, const struct action_opts *opts,
               json_t **answer, struct agent_error *err);

/* A hypervisor event (loop thread). */
void ops_on_hv_event(struct ops *o, const struct hv_event *ev);

/* Reconcile every domain the hypervisor has with every instance the store
 * knows, then resume interrupted operations. Called after each connect.
 * Returns 0 and calls done (not NULL) exactly once when finished, result 0
 * or -errno; or returns -errno at once (busy: -EBUSY, stopping: -ECANCELED)
 * and never calls it. */
int ops_reconcile(struct ops *o, void (*done)(void *opaque, int result), void *opaque);

/* Progress of an operation in flight, if it has some to show (a launch
 * downloading its image: {"image_id", "bytes_done", "bytes_total",
 * "rate_bps"}); new reference or NULL. */
json_t *ops_progress(struct ops *o, const char *op_id);

/* Operations in flight. */
unsigned ops_in_flight(const struct ops *o);

#endif
