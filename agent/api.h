/* api.h: the agent's REST API (HTTP/1.1 through libmicrohttpd, driven by
 * the libuv loop through MHD's epoll fd: no thread, no hand-written parser).
 * On a unix socket always; on TCP only when configured, then every request
 * needs "Authorization: Bearer <token>". Each connection has deadlines of
 * its own (api.header_timeout for a request head, api.request_timeout for a
 * whole request; a long-poll is bounded by its wait), and on TCP at most
 * api.per_address_limit connections come from one address. */
#ifndef CA_AGENT_API_H
#define CA_AGENT_API_H

#include <jansson.h>
#include <stdint.h>
#include <uv.h>

#include "agent/config.h"
#include "agent/store.h"

#define API_MAX_BODY (64 * 1024)

struct api;
struct catalog;
struct controller;
struct events;
struct host;
struct hv;
struct imgcache;
struct metrics;
struct ops;
struct resources;
struct telemetry;

/* The objects the API serves (borrowed; each must outlive the API). */
struct api_deps {
    struct store *store;
    struct ops *ops;
    struct host *host;
    struct imgcache *imgcache;   /* NULL: /v1/images answers not_supported */
    struct hv *hv;
    struct resources *res;
    struct catalog *catalog;
    struct controller *ctl;      /* may be inactive (no Placement) */
    struct events *events;       /* NULL: no bus shown */
    struct telemetry *telemetry; /* NULL: no guest figures on /metrics */
    struct metrics *metrics;
};

struct api_config {
    const struct agent_config *agent; /* borrowed: sockets, token, limits, timeouts, host */
    int64_t started_ms;               /* wall clock at start (uptime) */
};

/* Start serving. 0, or -errno with err naming the setting at fault. */
int api_new(uv_loop_t *loop, const struct api_deps *deps, const struct api_config *cfg, struct api **ret,
            struct agent_error *err);
/* Stop serving and close the handles (memory goes with the close
 * callbacks). Accepts NULL. */
void api_free(struct api *api);

/* An operation ended: answer the requests long-polling it
 * (GET /v1/operations/{id}?wait=SECONDS). */
void api_operation_done(struct api *api, const struct op_record *rec);

/* Route one request (exposed for tests and fuzzing): method, path with
 * query, body (may be NULL), the Idempotency-Key header (may be NULL).
 * Returns the status and sets *reply (new reference). */
int api_route(const struct api_deps *deps, const struct api_config *cfg, const char *method, const char *url, const char *body, size_t len,
              const char *idempotency_key, json_t **reply);

#endif
