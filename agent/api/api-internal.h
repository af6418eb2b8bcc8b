/* api-internal.h: INTERNAL to agent/api/ (and its unit tests): the server's
 * objects, the handler signature, and what the route files share. The
 * public API is agent/api.h. */
#ifndef CA_AGENT_API_INTERNAL_H
#define CA_AGENT_API_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "agent/api.h"

struct MHD_Connection;
struct MHD_Daemon;

/* ---- errors.c: the one error code -> HTTP status map and error body ---- */

/* {"error": {"code", "message", "field" (null when none)}} (new reference). */
json_t *api_error_body(const struct agent_error *e);
/* The HTTP status for e->code; 500 for a code not in the map. */
int api_status_of(const struct agent_error *e);
/* *reply = the error body of e; returns its status. */
int api_fail(json_t **reply, const struct agent_error *e);
/* The same for a code, field (may be NULL) and message given here. */
int api_fail_with(json_t **reply, const char *code, const char *field, const char *msg);

/* ---- router.c: method + path -> handler ---- */

#define API_MAX_PARAMS 2

/* One request as a handler sees it. Everything borrowed for the call. */
struct api_call {
    const struct api_deps *deps;
    const struct api_config *cfg;
    const char *method;       /* "GET" (also for HEAD), "POST", "DELETE" */
    const char *param[API_MAX_PARAMS]; /* the path's {parameters}, in order */
    const char *body;         /* may be NULL */
    size_t len;
    const char *idem;         /* Idempotency-Key header, may be NULL */
    struct MHD_Connection *mhd; /* the server's connection, NULL through api_route() */
    const char *query;        /* what followed "?" in api_route()'s url, NULL if nothing */
};

/* The query argument name: MHD's (decoded once) when the call came through
 * a server, else from call->query (not decoded: for tests and fuzzing,
 * copied into buf, truncated to size). NULL when absent; "" for "?name"
 * without "=" and for a value holding a NUL byte (%00), so that parsers
 * refuse them; borrowed. */
const char *api_call_arg(const struct api_call *call, const char *name, char *buf, size_t size);
/* api_route() for a request a server received on connection c. */
int api_route_conn(struct MHD_Connection *c, const struct api_deps *deps, const struct api_config *cfg,
                   const char *method, const char *url, const char *body, size_t len, const char *idem,
                   json_t **reply);

/* Returns the HTTP status and sets *reply (new reference). */
typedef int (*api_handler)(const struct api_call *call, json_t **reply);

/* ---- the handlers (one file per resource) ---- */

/* host-routes.c */
int api_healthz(const struct api_call *call, json_t **reply);
int api_host_show(const struct api_call *call, json_t **reply);
int api_host_enable(const struct api_call *call, json_t **reply);
int api_host_disable(const struct api_call *call, json_t **reply);
/* GET /v1/networks (the [network NAME] sections) */
int api_networks_list(const struct api_call *call, json_t **reply);
/* GET /metrics: the Prometheus text (agent health, then guests') into a
 * new malloc'ed *text of *len bytes (free() it). 0 or -ENOMEM/-EIO. */
int api_metrics_text(const struct api_deps *deps, char **text, size_t *len);

/* instances.c */
int api_instances_list(const struct api_call *call, json_t **reply);
int api_instances_launch(const struct api_call *call, json_t **reply);
int api_instance_show(const struct api_call *call, json_t **reply);
int api_instance_terminate(const struct api_call *call, json_t **reply);
int api_instance_action(const struct api_call *call, json_t **reply);

/* console.c: GET /v1/instances/{id}/console?tail_bytes=N&offset=O */
int api_instance_console(const struct api_call *call, json_t **reply);

/* operations.c */
int api_operation_show(const struct api_call *call, json_t **reply);

/* events-routes.c: GET /v1/events (through api_route(): no query, so the
 * oldest kept events, no wait) */
int api_events_list(const struct api_call *call, json_t **reply);

/* images.c */
int api_images_list(const struct api_call *call, json_t **reply);
int api_images_create(const struct api_call *call, json_t **reply);
int api_image_show(const struct api_call *call, json_t **reply);
int api_image_delete(const struct api_call *call, json_t **reply);

/* A request body as a JSON object (request_json_object()); on failure
 * *reply is the error and its status is returned, else 0. */
int api_body_object(const struct api_call *call, json_t **out, json_t **reply);

/* ---- server.c and operations.c: the servers, connections, long-polls ---- */

struct conn;
struct waiter;
struct ev_waiter;
struct ev_stream;

struct api_server {
    struct api *api;          /* back pointer */
    struct MHD_Daemon *mhd;   /* the server (owned) */
    uv_poll_t poll;           /* MHD's epoll fd */
    uv_timer_t timer;         /* MHD's connection timeouts; an immediate re-run */
    uv_timer_t sweep;         /* the request deadlines (and a periodic run) */
    struct conn *conns;       /* open connections, for their deadlines (newest first) */
    unsigned fresh;           /* how many of them are still to be checked for a hang-up */
    const char *name;         /* the listener's config key, for the log */
    bool tcp;                 /* needs the bearer token */
    bool metrics_only;        /* serves GET /metrics and nothing else */
    bool open;                /* handles initialized */
    bool closed_in_run;       /* a connection closed during this MHD_run */
};

/* One connection, tracked for the deadlines MHD does not keep: MHD's own
 * timeout is an idle timeout, which a client sending a byte now and then
 * never meets. At a deadline the socket is shut down; MHD then reads EOF
 * and closes the connection itself. */
enum conn_phase {
    CONN_HEAD,                /* waiting for a request head: header_timeout */
    CONN_REQUEST,             /* head read, body or answer under way: request_timeout */
    CONN_SUSPENDED,           /* a long-poll: bounded by its own wait */
    CONN_CUT,                 /* shut down at a deadline, MHD to close it */
};

struct conn {
    int fd;                   /* MHD's socket (borrowed) */
    enum conn_phase phase;
    bool fresh;               /* accepted, not yet checked for a client gone before it */
    uint64_t since_ms;        /* loop time the request began (or the long-poll resumed) */
    struct conn *prev, *next;
};

struct api {
    uv_loop_t *loop;
    struct api_deps deps;
    struct api_config cfg;
    struct api_server unix_srv;
    struct api_server tcp_srv;
    struct api_server metrics_srv; /* /metrics only, for scrapers (no token) */
    struct waiter *waiters;   /* suspended long-polls */
    struct ev_waiter *ev_waiters; /* suspended GET /v1/events long-polls */
    struct ev_stream *ev_streams; /* GET /v1/events as text/event-stream */
    int pending_closes;       /* handles whose close callback is due */
    bool stopping;            /* api_free() has begun */
    bool socket_bound;        /* api.socket is ours to remove at exit */
    dev_t socket_dev;         /* ... and is this inode */
    ino_t socket_ino;
};

/* One request's state across MHD's calls. */
struct request {
    char *body;               /* accumulated upload */
    size_t len;
    bool too_big;             /* over API_MAX_BODY: answer 413 */
    json_t *reply;            /* a long-poll's answer, ready after resume */
    int status;
};

/* listen.c: api.socket bound and listening (the inode noted in api for
 * api_free()), or a TCP HOST:PORT; the fd, or -errno with err naming the
 * setting. */
int api_unix_listen(struct api *api, const char *path, struct agent_error *err);
int api_tcp_listen(const char *hostport, struct agent_error *err);
/* listen.c: connections at once per listener: api.max_connections, within
 * the open-file limit shared by that many listeners. */
unsigned api_connection_limit(const struct api_config *cfg, unsigned listeners);

/* server.c: the connection's deadline tracking (may be NULL). */
struct conn *api_conn_of(struct MHD_Connection *c);
/* server.c: have MHD run srv again on the next loop turn. */
void api_server_kick(struct api_server *srv);

/* operations.c: GET /v1/operations/{id}?wait=S: 1 if the request was
 * suspended until the operation ends (or S seconds pass), 0 to answer it
 * now, -1 with *reply and *status set on a bad wait value. */
int api_wait_maybe(struct api_server *srv, struct MHD_Connection *c, struct request *req,
                   const char *id, const char *wait, json_t **reply, int *status);
/* operations.c: answer every suspended long-poll now (at stop). */
void api_waiters_flush(struct api *api);
/* operations.c: a connection closed: forget it in the waiters. */
void api_waiters_forget_conn(struct api *api, const struct conn *k);

/* events-routes.c: GET /v1/events's query parameters as given (borrowed;
 * NULL: absent, "" for "?after" without a value), the first unknown one
 * and the first given twice. */
struct events_query;
struct api_events_args {
    const char *after, *wait, *instance, *type, *limit;
    const char *unknown;
    const char *duplicate;
    char unknown_buf[64];
};
/* One query parameter (as MHD hands it: decoded; value NULL without "=")
 * into a. */
void api_events_arg(struct api_events_args *a, const char *key, const char *value);
/* The query and wait of a; 0, or the 400's status with *reply naming the
 * parameter. */
int api_events_parse(const struct api_events_args *a, struct events_query *q, int64_t *wait_s,
                     json_t **reply);
/* GET /v1/events with its query: 1 if suspended (a long-poll), else 0
 * with *reply and *status. */
int api_events_get(struct api_server *srv, struct MHD_Connection *c, struct request *req, json_t **reply,
                   int *status);
/* Watch the events (at start); answer every suspended events long-poll
 * now and stop watching (at stop); a connection closed. */
void api_events_start(struct api *api);
void api_events_flush(struct api *api);
void api_events_forget_conn(struct api *api, const struct conn *k);
/* events-routes.c: GET /v1/events with Accept: text/event-stream: 1 when
 * the stream is queued, -1 when MHD refused it (close the connection),
 * 0 with *reply and *status for a refusal. */
int api_events_stream(struct api_server *srv, struct MHD_Connection *c, json_t **reply, int *status);
/* Resume every stream (a commit added events); end: they end (at stop). */
void api_events_streams_wake(struct api *api, bool end);

#endif
