/* ops.h: every operation on an instance (launch, start, stop, reboot,
 * terminate) as a journaled state machine. Each step is committed to the
 * store before the agent acts on it, so a restart resumes or rolls back what
 * a crash interrupted. Blocking hypervisor calls run on worker threads; the
 * engine itself runs on the loop. */
#ifndef CA_AGENT_OPS_H
#define CA_AGENT_OPS_H

#include <jansson.h>

#include "agent/agent.h"

int ops_new(struct agent *a, struct ops **ret);
/* Stop: no new work; runs are released as their worker jobs return (keep
 * running the loop until it has nothing left). Their journal rows stay, so
 * the next start resumes them. */
void ops_stop(struct ops *o);
/* Forget in-flight work (their journal rows stay for the next start). */
void ops_free(struct ops *o);

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

/* The operation's JSON answer (new reference). */
json_t *op_record_to_json(const struct op_record *op);

/* A hypervisor event (loop thread). */
void ops_on_hv_event(struct ops *o, const struct hv_event *ev);

/* Reconcile every domain the hypervisor has with every instance the store
 * knows, then resume interrupted operations. Called after each connect;
 * done_cb (may be NULL) runs when it is finished. */
void ops_reconcile(struct ops *o, void (*done_cb)(struct agent *a, int result));

/* Progress of an operation in flight, if it has some to show (a launch
 * downloading its image: {"image_id", "bytes_done", "bytes_total",
 * "rate_bps"}); new reference or NULL. */
json_t *ops_progress(struct ops *o, const char *op_id);

/* Operations in flight. */
unsigned ops_in_flight(const struct ops *o);

#endif
