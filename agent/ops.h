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

#include "agent/config.h"
#include "agent/hypervisor/hv.h"
#include "agent/instance.h"
#include "agent/store.h"

struct ops;
struct events;
struct host;
struct imgcache;
struct metrics;
struct resources;
struct netplug;

/* Borrowed; each must outlive the engine. */
struct ops_deps {
    struct store *store;       /* journal and instances (required) */
    struct hv *hv;             /* the hypervisor connection (required) */
    struct host *host;         /* enabled/ready: launches refused otherwise (required) */
    struct resources *res;     /* launch admission, foreign use (required) */
    struct imgcache *imgcache; /* images; NULL: launches by image reference refused */
    struct events *events;     /* outbox; NULL: no events recorded */
    struct metrics *metrics;   /* NULL: none counted */
    struct netplug *np;        /* guest ports; NULL: launches with interfaces refused */
};

/* Strings borrowed (must outlive the engine). */
struct ops_config {
    const char *instances_dir;    /* STATE_DIR/instances: each guest's files */
    const char *local_image_dirs; /* DIR[:DIR...] local files may come from; "" none */
    int64_t stop_timeout_s;       /* graceful stop, unless the request says */
    int64_t reboot_timeout_s;     /* graceful reboot, unless the request says */
    const char *crash_at;         /* "type:step" to SIGKILL at (tests); NULL: none */
    /* guest networking and metadata (issue 10); NULL/0: none, the defaults */
    const struct net_config *networks; /* [network NAME] sections */
    size_t n_networks;
    const char *availability_zone;     /* default of a launch's availability_zone */
    bool config_drive;                 /* default of a launch's config_drive */
    const char *config_drive_format;   /* config-2|nocloud, default of the launch's */
    const char *xorriso;               /* for config drives */
    const char *smbios_product, *smbios_manufacturer; /* the guests' SMBIOS system */
    const char *md_http_tokens;        /* metadata.http_tokens (the config drive's copy) */
    int md_hop_limit;
    /* resize (issue 12) */
    bool live_resize;                  /* new guests get hot-plug headroom */
    int64_t max_vcpus, max_memory_mb;  /* its ceilings; 0: from the catalogue */
    const struct catalog *catalog;     /* instance types (the auto ceilings); NULL: none */
    int64_t resize_confirm_window_s;   /* auto-confirm after; 0: never */
    int64_t resize_live_timeout_s;     /* a live change may take this long to reach the guest */
    const char *qemu_img;              /* grows disks; NULL: /usr/bin/qemu-img */
    /* migration (issue 13); host_name NULL: migrations refused */
    const char *host_name;             /* this host, as the bus names it */
    const char *migration_uri;         /* the libvirt URI a source reaches this host's libvirtd by */
    const char *migration_stream_uri;  /* where QEMU's stream comes in ("" libvirt's choice) */
    const char *image_dir;             /* the image cache's directory ("" none) */
    int64_t migration_prepare_timeout_s; /* a target's answer waited for */
    int64_t migration_commit_timeout_s;  /* the target's word after the switch-over */
    int64_t migration_max_downtime_ms;   /* default of a migration's max_downtime_ms */
    int64_t migration_completion_timeout_s; /* per GiB of memory and disk; 0: none */
    const char *migration_postcopy;      /* never|auto|always, default of a migration's */
    int64_t migration_bandwidth_mib_s;   /* 0: unlimited */
    int64_t migration_incoming_timeout_s; /* a target gives a silent source up after */
};

/* Called on the loop thread; any may be NULL. */
struct ops_hooks {
    /* An operation ended (succeeded or failed); inst is the instance as it
     * is now. Both borrowed for the call. */
    void (*operation_finished)(void *opaque, const struct op_record *rec, const struct instance *inst);
    /* The hypervisor connection was lost: reconnect (then ops_reconcile). */
    void (*hv_lost)(void *opaque);
    /* The ports of inst were plugged (their networks' bridges exist now). */
    void (*ports_plugged)(void *opaque, const struct instance *inst);
    /* A launch was accepted: inst (new, in the store) holds its resources. */
    void (*claimed)(void *opaque, const struct instance *inst);
    /* Issue 12: a cold resize was accepted: inst->flavor is the new flavor,
     * inst->resize the old one and its migration consumer (Placement: move
     * the old allocation onto it, the new one onto the instance). A live
     * resize, confirm_resize and revert_resize are told through
     * operation_finished (rec->type "resize" with inst->resize.mode "live",
     * "confirm_resize", "revert_resize"; a cold resize that failed and rolled
     * back: "resize", failed, inst->flavor the old one again). */
    void (*resize_claimed)(void *opaque, const struct instance *inst);
    /* Issue 13: send a migration message (json, borrowed) to the agent of
     * host (its compute.<host> topic). 0 if it was handed to the bus,
     * -errno else (the sender's deadline covers a lost message). */
    int (*send_peer)(void *opaque, const char *host, const char *key, json_t *msg);
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
/* A launch's interfaces against the host (ops_launch() runs it): each
 * interface's network configured, its MTU within 68..the network's, a given
 * IP inside the network's cidr, not its network, broadcast or gateway
 * address and held by no port, a given MAC held by no port; then a MAC
 * generated where none was given (fa:16:3e:xx:xx:xx, locally administered
 * like nova's, unique on the host) and the lowest free IP taken where none
 * was. *ports (n_ifaces, caller frees) in state "reserved"; -errno with err
 * naming interfaces[i].<field>. The store's UNIQUE constraints make the
 * insert of the instance refuse any collision. */
int ops_ports_reserve(struct ops *o, const struct launch_spec *spec, struct port **ports,
                      struct agent_error *err);
struct action_opts {
    const char *request_id; /* NULL if none */
    int64_t timeout_s;      /* stop/reboot/resize: graceful timeout, <0: configured */
    bool force;             /* stop: skip the graceful part; reboot: hard */
    /* resize (issue 12): the new flavor (validated), its type (NULL: given
     * directly) and the mode ("auto", "live", "cold"; NULL: auto) */
    const struct flavor *flavor;
    const char *instance_type;
    const char *mode;
    /* migrate (issue 13): struct action_request's fields (request.h) */
    const char *target;
    int64_t max_downtime_ms;
    int64_t completion_timeout_s;
    const char *postcopy;
};
int ops_action(struct ops *o, const char *id, const char *action, const struct action_opts *opts,
               json_t **answer, struct agent_error *err);

/* Issue 13: a migration message from a peer agent (commands.c parsed
 * it). The work it asks is journaled; a repeat is harmless. 0, or -errno
 * with err (the message is refused; nothing changed). */
struct mig_msg;
int ops_migration_message(struct ops *o, const struct mig_msg *m, struct agent_error *err);

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
