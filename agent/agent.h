/* agent.h: the one object main() builds: the loop and every module, each
 * built with the objects it uses and wired to the others by main.c. Only
 * main.c includes this header: no module sees struct agent. No other global
 * state but the log level. */
#ifndef CA_AGENT_AGENT_H
#define CA_AGENT_AGENT_H

#include <stdbool.h>
#include <uv.h>

#include "agent/config.h"

struct api;
struct catalog;
struct commands;
struct controller;
struct events;
struct host;
struct hv;
struct imgcache;
struct metrics;
struct ops;
struct resources;
struct store;
struct telemetry;
struct netplug;
struct netmap;
struct md_service;

struct agent {
    uv_loop_t *loop;            /* the one event loop (borrowed from main) */
    struct agent_config cfg;    /* configuration in force */
    struct store *store;        /* SQLite state */
    struct host *host;          /* enabled/disabled, ready */
    struct catalog *catalog;    /* instance types */
    struct hv *hv;              /* hypervisor connection */
    struct resources *res;      /* resource tracker */
    struct ops *ops;            /* operations engine */
    struct api *api;            /* REST API servers */
    struct controller *ctl;     /* Placement registration (may be inactive) */
    struct events *events;      /* outbox and bus */
    struct commands *commands;  /* bus commands -> ops */
    struct telemetry *telemetry;/* guest and host use, sampled in bulk */
    struct metrics *metrics;    /* the agent's own health (Prometheus) */
    struct imgcache *imgcache;  /* guest images: pull, verify, share, evict */
    struct netplug *np;         /* guest ports on the host's networks */
    struct netmap *netmap;      /* metadata requests -> instances */
    struct dhcpd *dhcpd;        /* dnsmasq of the dhcp networks; NULL without net-plug */
    struct md_service *md;      /* the metadata service (NULL: metadata.enabled false) */
    bool *md_listening;         /* per cfg.networks[i]: the service listens on its bridge */

    uv_signal_t sig_term;       /* SIGTERM: stop cleanly, guests keep running */
    uv_signal_t sig_int;        /* SIGINT: same */
    uv_signal_t sig_hup;        /* SIGHUP: reload what can be reloaded */
    uv_timer_t reconnect_timer; /* libvirt reconnect with backoff */
    uv_timer_t purge_timer;     /* terminated instances forgotten after an hour */
    uint64_t reconnect_delay_ms;/* next backoff delay */
    bool connecting;            /* a connect job is in flight */
    bool stopping;              /* shutdown started */
    int64_t started_ms;
    char instances_dir[4096];   /* STATE_DIR/instances */
};

#endif
