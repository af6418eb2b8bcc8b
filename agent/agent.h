/* agent.h: the one object main() builds: the loop and every module, passed
 * to what needs it. No other global state but the log level. */
#ifndef CA_AGENT_AGENT_H
#define CA_AGENT_AGENT_H

#include <stdbool.h>
#include <uv.h>

#include "agent/config.h"
#include "agent/hypervisor/hv.h"
#include "agent/instance.h"
#include "agent/store.h"

struct resources;
struct ops;
struct api;
struct controller;
struct events;
struct telemetry;
struct metrics;
struct imgcache;
struct host;

struct agent {
    uv_loop_t *loop;            /* the one event loop (borrowed from main) */
    struct agent_config cfg;    /* configuration in force */
    struct store *store;        /* SQLite state */
    struct catalog *catalog;    /* instance types */
    struct hv *hv;              /* hypervisor connection */
    struct resources *res;      /* resource tracker */
    struct ops *ops;            /* operations engine */
    struct api *api;            /* REST API servers */
    struct controller *ctl;     /* Placement registration (may be inactive) */
    struct events *events;      /* outbox and bus */
    struct telemetry *telemetry;/* guest and host use, sampled in bulk */
    struct metrics *metrics;    /* the agent's own health (Prometheus) */
    struct imgcache *imgcache;  /* guest images: pull, verify, share, evict */
    struct host *host;          /* enabled/disabled and ready (host.h) */
    bool disabled;              /* host disabled by the operator (kept in the store) */

    uv_signal_t sig_term;       /* SIGTERM: stop cleanly, guests keep running */
    uv_signal_t sig_int;        /* SIGINT: same */
    uv_signal_t sig_hup;        /* SIGHUP: reload what can be reloaded */
    uv_timer_t reconnect_timer; /* libvirt reconnect with backoff */
    uint64_t reconnect_delay_ms;/* next backoff delay */
    bool connecting;            /* a connect job is in flight */
    bool ready;                 /* first reconcile done, READY=1 sent */
    bool stopping;              /* shutdown started */
    int64_t started_ms;
    char instances_dir[4096];   /* STATE_DIR/instances */
};

/* An operation ended (succeeded or failed); inst is the instance as it is
 * now. Called by the operations engine on the loop thread; tells the API's
 * waiters (and later the bus). */
void agent_operation_finished(struct agent *a, const struct op_record *rec,
                              const struct instance *inst);

/* Disable or enable the host (kept in the store, told to Placement). */
int agent_set_disabled(struct agent *a, bool disabled);

/* Ask for a (re)connect to the hypervisor after the current backoff. */
void agent_schedule_reconnect(struct agent *a);

#endif
