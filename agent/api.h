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

#include "agent/agent.h"

#define API_MAX_BODY (64 * 1024)

/* Start serving. 0, or -errno with err naming the setting at fault. */
int api_new(struct agent *a, struct api **ret, struct agent_error *err);
/* Stop serving and close the handles (memory goes with the close
 * callbacks). Accepts NULL. */
void api_free(struct api *api);

/* An operation ended: answer the requests long-polling it
 * (GET /v1/operations/{id}?wait=SECONDS). */
void api_operation_done(struct api *api, const struct op_record *rec);

/* Route one request (exposed for tests and fuzzing): method, path with
 * query, body (may be NULL), the Idempotency-Key header (may be NULL).
 * Returns the status and sets *reply (new reference). */
int api_route(struct agent *a, const char *method, const char *url, const char *body, size_t len,
              const char *idempotency_key, json_t **reply);

#endif
