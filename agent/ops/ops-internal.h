/* ops-internal.h: INTERNAL to agent/ops/ (and tests/unit/test_ops.c). The
 * operation engine's objects and the table every operation type fills.
 *
 * In memory an operation's type, step and state are enums; the strings
 * ("launch", "claimed", "running", ...) exist only where the store and the
 * JSON answers need them (op_*_name(), op_*_parse()), and are the strings
 * the store always had, so existing state directories load unchanged.
 *
 * Who does what:
 *   engine.c     runs, jobs (queue and return), the journal, finish, park and
 *                resume, crash points, waits for events, the public calls
 *                that are not an operation type's
 *   jobs.c       the worker side: each job kind's hypervisor calls, the
 *                guest's files, the one place that builds the hv_guest
 *   launch.c     ops_launch and the launch type
 *   power.c      ops_action (shared by every action) and start/stop/reboot
 *   terminate.c  the terminate type
 *   reconcile.c  ops_reconcile: domains against instances, adoption, resume
 * Loop thread only, except the job bodies in jobs.c (worker threads; they
 * read only the job and the engine's immutable parts). */
#ifndef CA_AGENT_OPS_INTERNAL_H
#define CA_AGENT_OPS_INTERNAL_H

#include "agent/log.h"
#include "agent/migration.h"
#include "agent/ops.h"
#include "image-cache/imgcache.h"

enum op_kind {
    OP_LAUNCH,
    OP_START,
    OP_STOP,
    OP_REBOOT,
    OP_TERMINATE,
    OP_RESIZE,         /* issue 12: resize.c */
    OP_CONFIRM_RESIZE,
    OP_REVERT_RESIZE,
    OP_MIGRATE,        /* issue 13: migrate.c, the source's side */
    OP_MIGRATE_IN,     /* issue 13: migrate.c, the target's side */
    OP_KIND_COUNT
};

/* Every journaled step of every type (each type lists its own). */
enum op_step {
    STEP_NONE,      /* not a step (end of a list; a record without one) */
    STEP_CLAIMED,   /* launch: instance and resources recorded */
    STEP_IMAGE,     /* launch: the image cache has the image, pinned */
    STEP_PORTS,     /* launch: every port plugged (netplug), before the define */
    STEP_CONFIG_DRIVE, /* launch: config.iso written (when asked) */
    STEP_DEFINED,   /* launch: the domain is defined */
    STEP_STARTED,   /* launch: the domain was started (with the result) */
    STEP_REQUESTED, /* actions: accepted */
    STEP_DESTROYED, /* terminate: the domain is off */
    STEP_UNPLUGGED, /* terminate: its ports unplugged */
    STEP_UNDEFINED, /* terminate: the domain is gone (with the result) */
    STEP_APPLIED,   /* resize (live): the new size given to the domain, live and defined */
    STEP_POWERED_OFF, /* resize (cold), revert: the domain is off */
    STEP_DISK,      /* resize (cold): the disk grown to the new disk_gb */
    STEP_ROLLBACK,  /* resize: failed; the old flavor is the target again */
    STEP_PREPARED,  /* migrate: the target is ready (its answer recorded); migrate_in: claim,
                     * image, ports and disk ready, answered */
    STEP_MIGRATING, /* migrate: the hypervisor's migration began */
    STEP_MOVED,     /* migrate: the guest runs on the target */
    STEP_COUNT,
};

enum op_state { OPS_PENDING, OPS_RUNNING, OPS_SUCCEEDED, OPS_FAILED };

const char *op_step_name(enum op_step s);     /* "" for STEP_NONE */
int op_step_parse(const char *s, enum op_step *ret); /* 0 or -EINVAL */
const char *op_state_name(enum op_state s);
int op_state_parse(const char *s, enum op_state *ret);

enum job_kind {
    JOB_DEFINE,   /* prepare files, build XML, define */
    JOB_START,
    JOB_SHUTDOWN, /* graceful; reports the power state after */
    JOB_DESTROY,
    JOB_REBOOT,
    JOB_RESET,
    JOB_UNDEFINE, /* undefine and remove the guest's disk */
    JOB_POWER,
    JOB_CLEANUP,  /* destroy + undefine, errors ignored (rollback) */
    JOB_LIST,     /* reconcile: every domain */
    JOB_SYNC,     /* reconcile, after adoption: netplug_sync of the live ports */
    JOB_PLUG,     /* netplug_plug each port of the instance (idempotent) */
    JOB_CONFIG_DRIVE, /* md_drive_build to STATE_DIR/instances/<uuid>/config.iso */
    JOB_UNPLUG,   /* netplug_unplug each port (absent: fine) */
    JOB_GROW,     /* resize: grow the disk overlay to the flavor's disk_gb (never shrinks) */
    JOB_LIVE,     /* resize: vCPUs, memory and our metadata to the flavor, live and defined */
    JOB_SIZE,     /* resize: the domain's size now (hv_get_size) */
    JOB_MIGRATE,  /* migrate (long-job thread): hv_migrate, then where the domain is */
    JOB_MIGRATE_CHECK, /* migrate resumed (long-job thread): wait out a job, then where the domain is */
    JOB_META,     /* our metadata (owner: this host) on the domain, live and defined */
    JOB_MIG_DISK, /* migrate_in: the guest's directory, its overlay on the base, its console log */
    JOB_MIG_RELEASE, /* migrate, moved: its ports unplugged, its disk removed (the domain is gone) */
    JOB_MIG_IN_CLEANUP, /* migrate_in rolled back: an incoming (paused or off) domain removed, never a
                         * running one; disk and ports */
};

enum wait_kind { WAIT_NONE, WAIT_STOPPED, WAIT_REBOOTED, WAIT_PEER };

struct op_run;
struct job;

/* One operation type. Filled with designated initializers in its file. */
struct op_type {
    enum op_kind kind;
    const char *name;             /* the store's and the API's "type" */
    const enum op_step *steps;    /* journaled steps in order, STEP_NONE-terminated */
    /* ops_action: the instance state needed (NULL: any but terminated),
     * the task shown and the state set while it runs */
    const char *need_state, *task_state, *new_state;
    /* the instance state before the operation, for a run resumed after a
     * restart (where a failure goes back to) */
    const char *resume_prev_state;
    /* Do the work after the last journaled step (loop thread). */
    void (*advance)(struct op_run *r);
    /* A worker job of this run returned; the engine has already handled a
     * lost connection (parked), a finished or stopping run, and a rollback
     * ending. */
    void (*job_done)(struct op_run *r, const struct job *j);
    /* ops_action: check the request against the instance (r->inst, the
     * store's) and set r->inst to what the operation records when it is
     * accepted; -errno with err: refused, nothing changed. NULL: none. */
    int (*prepare)(struct op_run *r, const struct action_opts *opts, struct agent_error *err);
    /* The wait for a stop (WAIT_STOPPED) ended with the domain off. NULL:
     * the operation ends, the instance stopped (stop). */
    void (*stopped)(struct op_run *r);
};

extern const struct op_type op_type_launch, op_type_start, op_type_stop, op_type_reboot,
    op_type_terminate, op_type_resize, op_type_confirm_resize, op_type_revert_resize, op_type_migrate,
    op_type_migrate_in;
/* By the store's name; NULL if none. */
const struct op_type *op_type_find(const char *name);

struct op_run {
    struct ops *ops;
    const struct op_type *type;
    enum op_step step;        /* the step reached (journaled unless a write failed) */
    enum op_step journaled;   /* the last step the store has */
    enum op_state state;
    struct op_record rec;     /* the journal row (id, request id, error, times; the
                               * type, step and state strings are written from the
                               * enums when it is journaled) */
    struct instance inst;     /* the instance as last written */
    struct op_run *prev, *next;
    enum wait_kind wait;      /* an event the operation waits for */
    uv_timer_t timer;         /* graceful timeout */
    bool job_running;         /* a worker job (or the image cache) holds this run */
    bool done;                /* finished; freed when no job holds it */
    bool parked;              /* waiting for the hypervisor (or the store) to come back */
    bool failing;             /* rolling back before failing */
    bool force;               /* stop/reboot without the graceful part */
    int64_t timeout_s;        /* graceful timeout */
    char prev_state[16];      /* instance state before the operation */
    char emitted[16];         /* instance state last sent as an event */
    struct agent_error fail;  /* why it fails (when failing) */
    char *base_path;          /* the cached base image (image cache launches) */
    char cache_id[IMGCACHE_ID_LEN]; /* the cache entry being acquired, "" if none */
    char base_format[8];      /* its format, detected by the cache */
    uint64_t base_vsize;      /* its virtual size */
    /* resize (issue 12) */
    char finish_task[24];     /* the task state ops_finish leaves ("" none) */
    json_t *result;           /* the operation's result, recorded when it ends (owned) */
    int64_t live_deadline_ms; /* a live resize waits for the guest until then */
    uv_timer_t poll;          /* and reads its size again on this timer */
    int closed;               /* timers closed (it is freed after both) */
    /* migration (issue 13) */
    json_t *progress;         /* the last job figures (owned; NULL: none yet) */
    int64_t progress_sent_ms; /* when migration.progress was last sent */
    bool abort_asked;         /* abort_migration: abort the job / give up */
};

struct job {
    uv_work_t work;
    struct ops *ops;
    struct op_run *run;       /* NULL for JOB_LIST */
    enum job_kind kind;
    int result;
    struct agent_error err;
    enum hv_power power;
    char uuid[37];            /* the guest's (copied: the worker reads no run) */
    bool terminating;         /* JOB_DESTROY of a terminate: gone already is fine */
    struct hv_domain *doms;   /* JOB_LIST */
    size_t ndoms;
    int64_t list_ms;          /* JOB_LIST: when the snapshot was taken */
    struct instance inst;     /* a copy for the worker (JOB_DEFINE, PLUG, UNPLUG, CONFIG_DRIVE, CLEANUP) */
    struct port *keep;        /* JOB_SYNC: the ports netplug_sync keeps (owned) */
    char (*keep_owner)[37];   /* their instances */
    size_t n_keep;
    char *base_path;          /* JOB_DEFINE: cached base (copied from the run) or resolved local image */
    char base_format[8];      /* its format, as its inspection found it */
    uint64_t base_vsize;
    void (*list_done)(void *opaque, int result); /* JOB_LIST */
    void *list_opaque;
    struct hv_size size;      /* JOB_SIZE */
    int here;                 /* JOB_MIGRATE(_CHECK): the domain is active here 1, gone 0, unknown -1 */
};

struct ops {
    uv_loop_t *loop;
    struct ops_deps d;        /* borrowed objects */
    struct ops_config cfg;    /* strings borrowed */
    struct ops_hooks hooks;
    void *opaque;             /* for the hooks */
    struct op_run *runs;      /* operations in flight */
    unsigned n_runs;
    bool reconciling;
    bool stopping;            /* ops_stop(): no new work, drain jobs */
    uv_timer_t *confirm_timer; /* resize: the auto-confirm sweep (owned; NULL: none) */
};

/* ---- engine.c ---- */
void ops_set_str(char **dst, const char *src);
void ops_log(enum log_level lvl, const char *msg, const struct op_run *r, const char *extra);
void ops_crash_point(struct ops *o, const struct op_run *r);
const char *ops_state_of_power(enum hv_power p);
void ops_instance_dir(const struct ops *o, const char *uuid, char *buf, size_t size);
/* The driver's abilities (one place each). */
bool ops_hv_disk_files(const struct ops *o);
bool ops_hv_reboot_event(const struct ops *o);
bool ops_hv_can_reset(const struct ops *o);

/* ---- reconcile.c ---- */
/* Our metadata's fields as read back by the hypervisor layer -> an
 * instance's identity (uuid, ec2_id, name, flavor, instance_type, boot),
 * every field checked with a launch request's bounds and, when dom_uuid is
 * given, the uuid equal to the domain's. 0 and *ret filled (release with
 * instance_release), or -EINVAL with err naming the field (nothing kept). */
int ops_instance_from_meta(const struct hv_meta *m, const char *dom_uuid, struct instance *ret,
                           struct agent_error *err);

struct op_run *ops_find_run(struct ops *o, const char *uuid);
/* A new run of type t (in o->runs), step STEP_NONE; NULL on ENOMEM. */
struct op_run *ops_run_new(struct ops *o, const struct op_type *t);
/* A run whose creation failed before anything was journaled. */
void ops_run_discard(struct op_run *r);
void ops_run_release(struct op_run *r);
/* The run's record (id, type, request id, first step) for a new operation. */
void ops_run_init_record(struct op_run *r, const char *request_id, enum op_step first);
/* Journal a new operation (its instance row inserted or updated, the
 * instance event if its state changed), answer, and advance it. 202 or
 * -errno with err (nothing recorded; the run discarded). */
int ops_run_accept(struct op_run *r, bool new_instance, json_t **answer, struct agent_error *err);
/* A repeated request id: 202 with the first answer, 0 if new, -errno. */
int ops_replay(struct ops *o, const char *request_id, const char *type, json_t **answer,
               struct agent_error *err);
/* Record step and its instance row; 0, or -errno: the write failed, the
 * run is parked at its last recorded step and must not act. */
int ops_journal_step(struct op_run *r, enum op_step step);
/* End the operation: record the result and the instance's new state
 * (inst_state NULL: unchanged). A failed write parks the run instead. */
void ops_finish(struct op_run *r, const char *inst_state, const struct agent_error *failure);
void ops_queue_job(struct op_run *r, enum job_kind kind);
/* Queue a JOB_LIST or JOB_SYNC job (reconcile.c fills it; j->kind JOB_SYNC
 * stays, anything else becomes JOB_LIST); 0 or the uv error. */
int ops_queue_list(struct ops *o, struct job *j);
/* Wait (bounded by the run's timeout) for a stop or reboot event. */
void ops_start_wait(struct op_run *r, enum wait_kind w);
/* Run advance again (after a reconnect or a resume). */
void ops_run_advance(struct op_run *r);
void ops_update_instance_state(struct ops *o, const char *uuid, const char *state, const char *fault);

/* ---- jobs.c (worker threads) ---- */
void ops_job_work(uv_work_t *w);
void ops_remove_disk(const struct ops *o, const char *uuid);
/* STATE_DIR/instances/<uuid>/config.iso into buf ("" if it does not fit). */
void ops_config_drive_path(const struct ops *o, const char *uuid, char *buf, size_t size);
/* A port as net-plug takes it (strings borrowed from p, owner, o's config). */
struct np_port;
void ops_np_port(const struct ops *o, const struct port *p, const char *owner, struct np_port *out);

/* ---- reconcile.c ---- */
void ops_reconcile_after(struct job *j);
/* The JOB_SYNC of a reconcile returned: resume the operations. */
void ops_reconcile_synced(struct job *j);

/* ---- resize.c ---- */
/* The headroom ceilings a new guest gets (hypervisor.live_resize,
 * max_vcpus, max_memory_mb, the catalogue's largest type that fits the
 * host), never below its flavor; 0, 0 when the driver cannot hot-plug. */
void ops_headroom(const struct ops *o, const struct flavor *f, int64_t *max_vcpus, int64_t *max_memory_mb);
/* Auto-confirm resized instances past resize_confirm_window (a timer). */
void ops_resize_sweep_start(struct ops *o);
void ops_resize_sweep_stop(struct ops *o);

/* ---- migrate.c ---- */
/* ops_action's abort_migration: 202 with the migrate operation, or -errno. */
int ops_migrate_abort(struct ops *o, struct instance *inst, json_t **answer, struct agent_error *err);
/* The message of a run's instance for its peer. */
void ops_migration_send(struct op_run *r, enum mig_kind kind, enum mig_action action, bool ok,
                        const struct agent_error *e);

/* ---- launch.c ---- */
/* Roll a failed launch back (domain and disk), then fail it. */
void ops_launch_fail(struct op_run *r, const struct agent_error *e);
/* The run's image from the image cache, pinned for its instance; then
 * ops_run_advance (r->base_path set), or ops_launch_fail. */
void ops_acquire_image(struct op_run *r);
/* [network NAME] of the configuration; NULL if none. */
const struct net_config *ops_network_of(const struct ops *o, const char *name);
/* migrate.c: a migrate_in's rollback (JOB_CLEANUP) returned. */
void ops_migrate_in_rolled_back(struct op_run *r);

#endif
