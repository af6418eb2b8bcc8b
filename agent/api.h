/* api.h: the agent's REST API (HTTP/1.1 through libmicrohttpd, driven by
 * the libuv loop through MHD's epoll fd: no thread, no hand-written parser).
 * On a unix socket always; on TCP only when configured, then every request
 * needs "Authorization: Bearer <token>". Each connection has deadlines of
 * its own (api.header_timeout for a request head, api.request_timeout for a
 * whole request; a long-poll is bounded by its wait), and on TCP at most
 * api.per_address_limit connections come from one address.
 *
 * The files (agent/api/): server.c (MHD on the loop, auth, body cap,
 * limits, deadlines), listen.c (the sockets), router.c (method + path -> handler), instances.c,
 * operations.c (with the long-poll waiters), images.c, host-routes.c
 * (/v1/host, /healthz, /metrics), errors.c (error code -> HTTP status and
 * the error body). Bodies are parsed by agent/request.h. Loop thread only. */
#ifndef CA_AGENT_API_H
#define CA_AGENT_API_H

#include <jansson.h>
#include <stdint.h>
#include <uv.h>

#include "agent/store.h"
#include "common/util.h"

#define API_MAX_BODY (64 * 1024)

struct api;
struct catalog;
struct controller;
struct dhcpd;
struct events;
struct host;
struct hv;
struct imgcache;
struct metrics;
struct ops;
struct resources;
struct telemetry;

/* What the API uses, all borrowed (they outlive the api). imgcache,
 * telemetry and ctl may be NULL (their routes then say not_supported or
 * leave their part out); the others are required by the routes that use
 * them (api_route() on a fixture may leave out what its routes never
 * reach). */
struct net_config;
struct netplug;
struct md_service;
struct netmap;

struct api_deps {
    struct store *store;
    struct ops *ops;
    struct host *host;
    struct imgcache *imgcache;
    struct hv *hv;
    struct resources *res;
    struct catalog *catalog;
    struct controller *ctl;
    struct events *events;
    struct telemetry *telemetry;
    struct metrics *metrics;
    /* issue 10; NULL/0: none */
    const struct net_config *networks; /* [network NAME] sections (borrowed) */
    size_t n_networks;
    struct netplug *np;               /* the networks' bridges as they are */
    struct md_service *md;            /* its answers counted on /metrics */
    struct netmap *netmap;            /* its lookups counted on /metrics */
    struct dhcpd *dhcpd;              /* the networks' DHCP servers (GET /v1/networks) */
};

/* The settings it serves by (strings borrowed, they outlive the api). */
struct api_config {
    const char *socket;         /* api.socket: unix socket path (required) */
    const char *listen;         /* api.listen: HOST:PORT for TCP; NULL/"": none */
    const char *token;          /* api.token: the bearer token TCP requires */
    const char *metrics_listen; /* telemetry.metrics_listen: GET /metrics only; NULL/"": none */
    int64_t header_timeout_s;   /* api.header_timeout */
    int64_t request_timeout_s;  /* api.request_timeout */
    int64_t per_address_limit;  /* api.per_address_limit (TCP) */
    int64_t max_connections;    /* api.max_connections, per listener */
    const char *host_name;      /* shown by GET /v1/host */
    const char *hypervisor;     /* shown by GET /v1/host */
    int64_t started_ms;         /* wall clock the agent started (uptime_s) */
};

/* Start serving on loop. 0 and *ret (api_free() it), or -errno with err
 * naming the setting at fault; then nothing is left open. deps and cfg
 * are copied (what they point to is borrowed). */
int api_new(uv_loop_t *loop, const struct api_deps *deps, const struct api_config *cfg,
            struct api **ret, struct agent_error *err);
/* Stop serving: suspended long-polls are answered, the listeners closed
 * (memory goes with the close callbacks: keep running the loop). Accepts
 * NULL. */
void api_free(struct api *api);

/* An operation ended: answer the requests long-polling it
 * (GET /v1/operations/{id}?wait=SECONDS). rec is borrowed. */
void api_operation_done(struct api *api, const struct op_record *rec);

/* Route one request without a server (for tests and fuzzing): method, the
 * path as MHD hands it (percent-decoded once, by MHD; not decoded again
 * here), a "?query" after it gives the query arguments (not decoded), body (may be NULL), the
 * Idempotency-Key header (may be NULL). Returns the status and sets *reply
 * (new reference, a JSON object; an empty one for 204). */
int api_route(const struct api_deps *deps, const struct api_config *cfg, const char *method,
              const char *url, const char *body, size_t len, const char *idempotency_key,
              json_t **reply);

#endif
