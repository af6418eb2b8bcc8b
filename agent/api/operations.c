/* operations.c: GET /v1/operations/{id}, and its long-poll
 * (?wait=SECONDS): the request is suspended in MHD until the operation
 * ends (api_operation_done()) or the wait passes, then answered. */
#include <microhttpd.h>
#include <stdlib.h>
#include <string.h>

#include "agent/api/api-internal.h"
#include "agent/ops.h"

#define API_MAX_WAIT_S 300

/* A request suspended until its operation ends or its deadline passes. */
struct waiter {
    struct api *api;
    struct api_server *srv;   /* the server of the connection */
    struct MHD_Connection *conn;
    struct conn *k;           /* its deadline tracking (may be NULL) */
    struct request *req;
    char op_id[37];
    uv_timer_t timer;         /* the deadline */
    struct waiter *prev, *next;
};

int api_operation_show(const struct api_call *call, json_t **reply)
{
    const char *id = call->param[0];
    struct op_record op;
    json_t *p;

    if (store_op_get(call->deps->store, id, &op) < 0)
        return api_fail_with(reply, "not_found", "id", "no such operation");
    *reply = op_record_to_json(&op);
    p = ops_progress(call->deps->ops, id);
    json_object_set_new(*reply, "progress", p ? p : json_null());
    op_record_release(&op);
    return 200;
}

static void on_waiter_closed(uv_handle_t *h)
{
    free(h->data);
}

/* Answer a suspended request and let MHD run it again. */
static void waiter_resume(struct waiter *w, int status, json_t *reply)
{
    struct api *api = w->api;

    if (w->prev)
        w->prev->next = w->next;
    else
        api->waiters = w->next;
    if (w->next)
        w->next->prev = w->prev;
    w->req->status = status;
    w->req->reply = reply;
    if (w->k && w->k->phase == CONN_SUSPENDED) {
        /* the answer must go out within a request deadline of its own */
        w->k->phase = CONN_REQUEST;
        w->k->since_ms = uv_now(api->loop);
    }
    MHD_resume_connection(w->conn);
    /* MHD serves a resumed connection on its next run: make that now */
    if (!api->stopping)
        api_server_kick(w->srv);
    uv_timer_stop(&w->timer);
    uv_close((uv_handle_t *)&w->timer, on_waiter_closed);
}

static void on_wait_deadline(uv_timer_t *t)
{
    struct waiter *w = t->data;
    struct op_record op;
    json_t *reply;
    int status;

    if (store_op_get(w->api->deps.store, w->op_id, &op) == 0) {
        reply = op_record_to_json(&op);
        op_record_release(&op);
        status = 200;
    } else {
        status = api_fail_with(&reply, "not_found", "id", "no such operation");
    }
    waiter_resume(w, status, reply);
}

void api_operation_done(struct api *api, const struct op_record *rec)
{
    struct waiter *w, *next;

    if (!api)
        return;
    for (w = api->waiters; w; w = next) {
        next = w->next;
        if (!strcmp(w->op_id, rec->id))
            waiter_resume(w, 200, op_record_to_json(rec));
    }
}

void api_waiters_flush(struct api *api)
{
    while (api->waiters)
        on_wait_deadline(&api->waiters->timer);
}

void api_waiters_forget_conn(struct api *api, const struct conn *k)
{
    for (struct waiter *w = api->waiters; w; w = w->next)
        if (w->k == k)
            w->k = NULL;
}

int api_wait_maybe(struct api_server *srv, struct MHD_Connection *c, struct request *req, const char *id,
                   const char *wait, json_t **reply, int *status)
{
    struct api *api = srv->api;
    struct op_record op;
    struct waiter *w;
    int64_t secs;
    bool finished;

    if (parse_int64(wait, 0, API_MAX_WAIT_S, &secs) < 0) {
        *status = api_fail_with(reply, "invalid_field", "wait", "query 'wait' must be seconds from 0 to 300");
        return -1;
    }
    if (secs == 0 || !uuid_is_valid(id) || store_op_get(api->deps.store, id, &op) < 0)
        return 0;
    finished = strcmp(op.state, "pending") && strcmp(op.state, "running");
    op_record_release(&op);
    if (finished || api->stopping)
        return 0;
    w = calloc(1, sizeof(*w));
    if (!w)
        return 0;
    w->api = api;
    w->srv = srv;
    w->conn = c;
    w->k = api_conn_of(c);
    w->req = req;
    strscpy(w->op_id, id, sizeof(w->op_id));
    uv_timer_init(api->loop, &w->timer);
    w->timer.data = w;
    uv_timer_start(&w->timer, on_wait_deadline, (uint64_t)secs * 1000, 0);
    w->next = api->waiters;
    if (api->waiters)
        api->waiters->prev = w;
    api->waiters = w;
    if (w->k)
        w->k->phase = CONN_SUSPENDED; /* its wait bounds it, not the request deadline */
    MHD_suspend_connection(c);
    return 1;
}
