/* events-routes.c: GET /v1/events?after=SEQ&wait=S&instance=ID&type=T&limit=N,
 * the window of recent events (events.h, events_window_read()): what the
 * outbox sends to the bus, the same JSON, each with its sequence number.
 * A long-poll like GET /v1/operations/{id}?wait=: when nothing matches
 * after SEQ the request is suspended in MHD until a commit adds a matching
 * event (events_watch()) or the wait passes; then answered with what there
 * is (perhaps nothing) and the next `after`. A caller whose `after` fell
 * out of the window gets the oldest kept events with "truncated": true
 * (200, not 410: it loses nothing more by going on from next_after). */
#include <microhttpd.h>
#include <stdlib.h>
#include <string.h>

#include "agent/api/api-internal.h"
#include "agent/events.h"
#include "agent/log.h"

#define EVENTS_MAX_WAIT_S 300
#define EVENTS_LIMIT_DEFAULT 500
#define EVENTS_LIMIT_MAX 1000
#define EVENTS_TYPE_MAX 64

/* A request suspended until an event it asks for comes, or its deadline. */
struct ev_waiter {
    struct api *api;
    struct api_server *srv;
    struct MHD_Connection *conn;
    struct conn *k;           /* its deadline tracking (may be NULL) */
    struct request *req;
    struct events_query q;    /* strings point into the two below */
    char instance[40];
    char type[EVENTS_TYPE_MAX + 1];
    uv_timer_t timer;
    struct ev_waiter *prev, *next;
};

static bool type_ok(const char *s)
{
    size_t n = strlen(s);

    if (!n || n > EVENTS_TYPE_MAX)
        return false;
    return strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789._*") == n;
}

int api_events_parse(const struct api_events_args *a, struct events_query *q, int64_t *wait_s, json_t **reply)
{
    int64_t v;

    *q = (struct events_query){.after = -1, .limit = EVENTS_LIMIT_DEFAULT};
    *wait_s = 0;
    if (a->unknown)
        return api_fail_with(reply, "invalid_field", a->unknown,
                             "unknown query parameter (known: after, wait, instance, type, limit)");
    if (a->duplicate)
        return api_fail_with(reply, "invalid_field", a->duplicate, "query parameter given twice");
    if (a->after) {
        if (parse_int64(a->after, 0, INT64_MAX, &v) < 0)
            return api_fail_with(reply, "invalid_field", "after", "query 'after' must be a sequence number (0 or more)");
        q->after = v;
    }
    if (a->wait && parse_int64(a->wait, 0, EVENTS_MAX_WAIT_S, wait_s) < 0)
        return api_fail_with(reply, "invalid_field", "wait", "query 'wait' must be seconds from 0 to 300");
    if (a->limit) {
        if (parse_int64(a->limit, 1, EVENTS_LIMIT_MAX, &v) < 0)
            return api_fail_with(reply, "invalid_field", "limit", "query 'limit' must be from 1 to 1000");
        q->limit = v;
    }
    if (a->instance) {
        if (!uuid_is_valid(a->instance) && !ec2_id_is_valid(a->instance))
            return api_fail_with(reply, "invalid_field", "instance",
                                 "query 'instance' must be an instance UUID or i- followed by 17 hex digits");
        q->instance = a->instance;
    }
    if (a->type) {
        if (!type_ok(a->type))
            return api_fail_with(reply, "invalid_field", "type",
                                 "query 'type' must be an event name such as instance.running (\"*\" matches any part)");
        q->type = a->type;
    }
    return 0;
}

/* The page for q into *reply: its status; *n the events in it. */
static int page(struct events *ev, const struct events_query *q, json_t **reply, int *n)
{
    int r = events_window_read(ev, q, reply);

    *n = 0;
    if (r == -ERANGE)
        return api_fail_with(reply, "invalid_field", "after", "query 'after' is beyond the newest event");
    if (r == -ENOTSUP)
        return api_fail_with(reply, "not_supported", NULL, "this agent keeps no events");
    if (r < 0)
        return api_fail_with(reply, "internal", NULL, "cannot read the events");
    *n = r;
    return 200;
}

int api_events_list(const struct api_call *call, json_t **reply)
{
    struct api_events_args a = {0};
    struct events_query q;
    int64_t wait_s;
    int status = api_events_parse(&a, &q, &wait_s, reply), n;

    return status ? status : page(call->deps->events, &q, reply, &n);
}

static void on_waiter_closed(uv_handle_t *h)
{
    free(h->data);
}

static void waiter_resume(struct ev_waiter *w, int status, json_t *reply)
{
    struct api *api = w->api;

    if (w->prev)
        w->prev->next = w->next;
    else
        api->ev_waiters = w->next;
    if (w->next)
        w->next->prev = w->prev;
    w->req->status = status;
    w->req->reply = reply;
    if (w->k && w->k->phase == CONN_SUSPENDED) {
        w->k->phase = CONN_REQUEST;
        w->k->since_ms = uv_now(api->loop);
    }
    MHD_resume_connection(w->conn);
    if (!api->stopping)
        api_server_kick(w->srv);
    uv_timer_stop(&w->timer);
    uv_close((uv_handle_t *)&w->timer, on_waiter_closed);
}

static void on_deadline(uv_timer_t *t)
{
    struct ev_waiter *w = t->data;
    json_t *reply = NULL;
    int n, status = page(w->api->deps.events, &w->q, &reply, &n);

    waiter_resume(w, status, reply);
}

/* events_watch(): a commit added events up to last */
static void on_events_added(void *opaque, int64_t last)
{
    struct api *api = opaque;
    struct ev_waiter *w, *next;

    (void)last;
    api_events_streams_wake(api, false);
    for (w = api->ev_waiters; w; w = next) {
        json_t *reply = NULL;
        int n, status;
        next = w->next;
        status = page(api->deps.events, &w->q, &reply, &n);
        if (status != 200 || n > 0)
            waiter_resume(w, status, reply);
        else
            json_decref(reply);
    }
}

void api_events_start(struct api *api)
{
    events_watch(api->deps.events, on_events_added, api);
}

void api_events_flush(struct api *api)
{
    events_watch(api->deps.events, NULL, NULL);
    api_events_streams_wake(api, true);
    while (api->ev_waiters)
        on_deadline(&api->ev_waiters->timer);
}

void api_events_forget_conn(struct api *api, const struct conn *k)
{
    for (struct ev_waiter *w = api->ev_waiters; w; w = w->next)
        if (w->k == k)
            w->k = NULL;
}

void api_events_arg(struct api_events_args *a, const char *key, const char *value)
{
    static const char *const names[] = {"after", "wait", "instance", "type", "limit"};
    const char **slot[] = {&a->after, &a->wait, &a->instance, &a->type, &a->limit};

    for (size_t i = 0; i < ARRAY_SIZE(names); i++) {
        if (strcmp(key, names[i]))
            continue;
        if (*slot[i] && !a->duplicate)
            a->duplicate = names[i];
        *slot[i] = value ? value : "";
        return;
    }
    if (!a->unknown) {
        /* named in the error: kept short (the error body escapes it) */
        strscpy(a->unknown_buf, key, sizeof(a->unknown_buf));
        a->unknown = a->unknown_buf;
    }
}

static enum MHD_Result on_arg(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
    (void)kind;
    api_events_arg(cls, key, value);
    return MHD_YES;
}

int api_events_get(struct api_server *srv, struct MHD_Connection *c, struct request *req, json_t **reply,
                   int *status)
{
    struct api *api = srv->api;
    struct api_events_args a = {0};
    struct events_query q;
    struct ev_waiter *w;
    int64_t wait_s;
    int n;

    MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, on_arg, &a);
    *status = api_events_parse(&a, &q, &wait_s, reply);
    if (*status)
        return 0;
    *status = page(api->deps.events, &q, reply, &n);
    if (*status != 200 || n > 0 || wait_s == 0 || api->stopping)
        return 0;
    w = calloc(1, sizeof(*w));
    if (!w)
        return 0;
    json_decref(*reply);
    *reply = NULL;
    w->api = api;
    w->srv = srv;
    w->conn = c;
    w->k = api_conn_of(c);
    w->req = req;
    w->q = q;
    /* from the oldest kept: that is now a seq, so events dropped while
     * waiting are not reported lost */
    if (w->q.after < 0)
        w->q.after = events_last_seq(api->deps.events);
    if (q.instance) {
        strscpy(w->instance, q.instance, sizeof(w->instance));
        w->q.instance = w->instance;
    }
    if (q.type) {
        strscpy(w->type, q.type, sizeof(w->type));
        w->q.type = w->type;
    }
    uv_timer_init(api->loop, &w->timer);
    w->timer.data = w;
    uv_timer_start(&w->timer, on_deadline, (uint64_t)wait_s * 1000, 0);
    w->next = api->ev_waiters;
    if (api->ev_waiters)
        api->ev_waiters->prev = w;
    api->ev_waiters = w;
    if (w->k)
        w->k->phase = CONN_SUSPENDED;
    MHD_suspend_connection(c);
    log_debug("events long-poll parked", "after=%lld wait_s=%lld", (long long)w->q.after, (long long)wait_s);
    return 1;
}

/* ---- Accept: text/event-stream: the same events as server-sent events ----
 * "id: SEQ", "event: NAME", "data: {the bus JSON}" per event; a client
 * reconnecting with Last-Event-ID (or ?after=) goes on after it. The
 * response is MHD's callback kind: with nothing to send the reader
 * suspends the connection and returns 0; a commit that adds events (or the
 * keep-alive timer, a ": keep-alive" comment every 15 s) resumes it. A
 * reader behind the window gets an "event: truncated" first. */

#define SSE_KEEPALIVE_MS 15000

struct ev_stream {
    struct api *api;
    struct api_server *srv;
    struct MHD_Connection *conn;
    struct events_query q;    /* q.after moves on */
    char instance[40];
    char type[EVENTS_TYPE_MAX + 1];
    char *buf;                /* formatted, not yet handed to MHD */
    size_t len, off;
    bool suspended;
    bool keepalive;           /* the timer fired: send a comment */
    bool ended;               /* the API stops: end the stream */
    uv_timer_t timer;
    struct ev_stream *prev, *next;
};

static void stream_append(struct ev_stream *s, const char *text, size_t n)
{
    char *nb = realloc(s->buf, s->len + n);

    if (!nb)
        return;
    memcpy(nb + s->len, text, n);
    s->buf = nb;
    s->len += n;
}

/* What is new for s into its buffer. */
static void stream_fill(struct ev_stream *s)
{
    json_t *page = NULL, *e;
    size_t i;
    int r = events_window_read(s->api->deps.events, &s->q, &page);

    if (r < 0)
        return;
    if (json_is_true(json_object_get(page, "truncated"))) {
        char line[96];
        int n = snprintf(line, sizeof(line), "event: truncated\ndata: {\"first_seq\":%lld}\n\n",
                         (long long)json_integer_value(json_object_get(page, "first_seq")));
        stream_append(s, line, (size_t)n);
    }
    json_array_foreach(json_object_get(page, "events"), i, e) {
        const json_t *m = json_object_get(e, "message");
        char *data = json_dumps(m, JSON_COMPACT | JSON_PRESERVE_ORDER);
        char head[160];
        int n = snprintf(head, sizeof(head), "id: %lld\nevent: %s\ndata: ",
                         (long long)json_integer_value(json_object_get(e, "seq")),
                         json_is_string(json_object_get(m, "event")) ? json_string_value(json_object_get(m, "event"))
                                                                     : "message");
        if (data) {
            /* compact JSON has no newline: one data line */
            stream_append(s, head, (size_t)n);
            stream_append(s, data, strlen(data));
            stream_append(s, "\n\n", 2);
            free(data);
        }
    }
    s->q.after = json_integer_value(json_object_get(page, "next_after"));
    json_decref(page);
}

static void stream_resume(struct ev_stream *s)
{
    if (!s->suspended)
        return;
    s->suspended = false;
    MHD_resume_connection(s->conn);
    if (!s->api->stopping)
        api_server_kick(s->srv);
}

static void on_keepalive(uv_timer_t *t)
{
    struct ev_stream *s = t->data;

    s->keepalive = true;
    stream_resume(s);
}

static ssize_t stream_read(void *cls, uint64_t pos, char *out, size_t max)
{
    struct ev_stream *s = cls;
    size_t n;

    (void)pos;
    if (s->off == s->len) {
        s->off = s->len = 0;
        if (s->ended)
            return MHD_CONTENT_READER_END_OF_STREAM;
        stream_fill(s);
        if (!s->len && s->keepalive)
            stream_append(s, ": keep-alive\n\n", 14);
        s->keepalive = false;
    }
    if (s->off == s->len) {
        struct conn *k = api_conn_of(s->conn);
        /* nothing to say: wait for an event (its wait is the stream's) */
        if (k)
            k->phase = CONN_SUSPENDED;
        s->suspended = true;
        MHD_suspend_connection(s->conn);
        return 0;
    }
    n = s->len - s->off < max ? s->len - s->off : max;
    memcpy(out, s->buf + s->off, n);
    s->off += n;
    return (ssize_t)n;
}

static void on_stream_closed(uv_handle_t *h)
{
    struct ev_stream *s = h->data;

    free(s->buf);
    free(s);
}

/* MHD is done with the response (the connection closed or the stream ended). */
static void stream_free(void *cls)
{
    struct ev_stream *s = cls;
    struct api *api = s->api;

    if (s->prev)
        s->prev->next = s->next;
    else
        api->ev_streams = s->next;
    if (s->next)
        s->next->prev = s->prev;
    uv_timer_stop(&s->timer);
    uv_close((uv_handle_t *)&s->timer, on_stream_closed);
}

void api_events_streams_wake(struct api *api, bool end)
{
    for (struct ev_stream *s = api->ev_streams; s; s = s->next) {
        if (end)
            s->ended = true;
        stream_resume(s);
    }
}

int api_events_stream(struct api_server *srv, struct MHD_Connection *c, json_t **reply, int *status)
{
    struct api *api = srv->api;
    struct api_events_args a = {0};
    const char *last_id = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Last-Event-ID");
    struct MHD_Response *resp;
    struct ev_stream *s;
    struct events_query q;
    int64_t wait_s, v;
    int r;

    MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, on_arg, &a);
    *status = api_events_parse(&a, &q, &wait_s, reply);
    if (*status)
        return 0;
    if (last_id) {
        if (parse_int64(last_id, 0, INT64_MAX, &v) < 0) {
            *status = api_fail_with(reply, "invalid_field", "Last-Event-ID", "Last-Event-ID must be a sequence number");
            return 0;
        }
        q.after = v;
    }
    if (!api->deps.events) {
        *status = api_fail_with(reply, "not_supported", NULL, "this agent keeps no events");
        return 0;
    }
    if (q.after > events_last_seq(api->deps.events)) {
        *status = api_fail_with(reply, "invalid_field", last_id ? "Last-Event-ID" : "after",
                                "the sequence number is beyond the newest event");
        return 0;
    }
    s = calloc(1, sizeof(*s));
    if (!s) {
        *status = api_fail_with(reply, "internal", NULL, "out of memory");
        return 0;
    }
    s->api = api;
    s->srv = srv;
    s->conn = c;
    s->q = q;
    if (q.instance) {
        strscpy(s->instance, q.instance, sizeof(s->instance));
        s->q.instance = s->instance;
    }
    if (q.type) {
        strscpy(s->type, q.type, sizeof(s->type));
        s->q.type = s->type;
    }
    resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, stream_read, s, stream_free);
    if (!resp) {
        free(s);
        *status = api_fail_with(reply, "internal", NULL, "out of memory");
        return 0;
    }
    uv_timer_init(api->loop, &s->timer);
    s->timer.data = s;
    uv_timer_start(&s->timer, on_keepalive, SSE_KEEPALIVE_MS, SSE_KEEPALIVE_MS);
    s->next = api->ev_streams;
    if (api->ev_streams)
        api->ev_streams->prev = s;
    api->ev_streams = s;
    MHD_add_response_header(resp, "Content-Type", "text/event-stream");
    MHD_add_response_header(resp, "Cache-Control", "no-cache");
    r = MHD_queue_response(c, MHD_HTTP_OK, resp);
    MHD_destroy_response(resp);
    return r == MHD_YES ? 1 : -1;
}
