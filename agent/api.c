/* api.c: see api.h. */
#include "agent/api.h"

#include <microhttpd.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <netdb.h>
#include <unistd.h>

#include "agent/controller.h"
#include "agent/events.h"
#include "agent/host.h"
#include "agent/bus.h"
#include "agent/log.h"
#include "agent/metrics.h"
#include "agent/telemetry.h"
#include "image-cache/imgcache.h"
#include "agent/ops.h"
#include "agent/resources.h"

struct conn;

/* What the handlers use: the objects (borrowed) and the settings. */
struct api_ctx {
    uv_loop_t *loop;
    const struct agent_config *cfg;
    int64_t started_ms;
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
};

static void ctx_init(struct api_ctx *a, uv_loop_t *loop, const struct api_deps *d, const struct api_config *cfg)
{
    *a = (struct api_ctx){.loop = loop, .cfg = cfg->agent, .started_ms = cfg->started_ms, .store = d->store,
                          .ops = d->ops, .host = d->host, .imgcache = d->imgcache, .hv = d->hv, .res = d->res,
                          .catalog = d->catalog, .ctl = d->ctl, .events = d->events,
                          .telemetry = d->telemetry, .metrics = d->metrics};
}

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

struct waiter;

struct api {
    struct api_ctx ctx;
    struct api_ctx *a;        /* &ctx */
    bool stopping;            /* api_free() under way */
    struct api_server unix_srv;
    struct api_server tcp_srv;
    struct api_server metrics_srv; /* /metrics only, for scrapers (no token) */
    struct waiter *waiters;   /* suspended long-polls */
    int pending_closes;       /* handles whose close callback is due */
    bool socket_bound;        /* api.socket is ours to remove at exit */
    dev_t socket_dev;         /* ... and is this inode */
    ino_t socket_ino;
};

struct request {
    char *body;               /* accumulated upload */
    size_t len;
    bool too_big;             /* over API_MAX_BODY: answer 413 */
    json_t *reply;            /* a long-poll's answer, ready after resume */
    int status;
};

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

#define API_MAX_WAIT_S 300

/* ---- replies ---- */

static json_t *error_body(const struct agent_error *e)
{
    return json_pack("{s:{s:s, s:s, s:o}}", "error", "code", e->code, "message", e->message, "field",
                     e->field[0] ? json_string(e->field) : json_null());
}

static int status_of(const struct agent_error *e)
{
    static const struct {
        const char *code;
        int status;
    } map[] = {
        {"invalid_json", 400},  {"invalid_field", 400},      {"missing_field", 400},
        {"unknown_field", 400}, {"unauthorized", 401},        {"not_found", 404},
        {"method_not_allowed", 405}, {"conflict", 409},       {"insufficient_resources", 409},
        {"payload_too_large", 413}, {"unsupported_media_type", 415}, {"not_supported", 501},
        {"unavailable", 503},
    };
    for (size_t i = 0; i < ARRAY_SIZE(map); i++)
        if (!strcmp(e->code, map[i].code))
            return map[i].status;
    return 500;
}

static int fail(json_t **reply, const struct agent_error *e)
{
    *reply = error_body(e);
    return status_of(e);
}

static int fail_with(json_t **reply, const char *code, const char *field, const char *msg)
{
    struct agent_error e;
    agent_error_set(&e, EINVAL, code, field, "%s", msg);
    return fail(reply, &e);
}

/* ---- handlers ---- */

static int get_host(struct api_ctx *a, json_t **reply)
{
    json_t *o = json_object();

    json_object_set_new(o, "hostname", json_string(a->cfg->host_name));
    json_object_set_new(o, "hypervisor", json_string(a->cfg->hypervisor));
    json_object_set_new(o, "domain_type", json_string(hv_domain_type(a->hv)));
    json_object_set_new(o, "domain_type_reason", json_string(hv_domain_type_reason(a->hv)));
    json_object_set_new(o, "libvirt_uri", json_string(hv_uri(a->hv)));
    json_object_set_new(o, "version", json_string(CA_VERSION));
    json_object_set_new(o, "state", json_string(host_disabled(a->host) ? "disabled" : "enabled"));
    json_object_set_new(o, "provider_uuid", controller_provider_uuid(a->ctl)
                                                ? json_string(controller_provider_uuid(a->ctl))
                                                : json_null());
    json_object_set_new(o, "placement", controller_to_json(a->ctl));
    json_object_set_new(o, "bus", events_bus_json(a->events));
    json_object_set_new(o, "libvirt", json_pack("{s:b}", "connected", hv_connected(a->hv)));
    json_object_set_new(o, "operations_in_flight", json_integer(ops_in_flight(a->ops)));
    json_object_set_new(o, "uptime_s", json_integer((now_wall_ms() - a->started_ms) / 1000));
    resources_to_json(a->res, a->store, o);
    *reply = o;
    return 200;
}

static int collect(const struct instance *inst, void *opaque)
{
    json_array_append_new(opaque, instance_to_json(inst));
    return 0;
}

static int list_instances(struct api_ctx *a, json_t **reply)
{
    json_t *arr = json_array();
    struct agent_error e;

    if (store_instance_foreach(a->store, true, collect, arr) < 0) {
        json_decref(arr);
        agent_error_set(&e, EIO, "internal", NULL, "cannot read the store");
        return fail(reply, &e);
    }
    *reply = json_pack("{s:o}", "instances", arr);
    return 200;
}

static int show_instance(struct api_ctx *a, const char *id, json_t **reply)
{
    struct instance inst;

    if (store_instance_get(a->store, id, &inst) < 0)
        return fail_with(reply, "not_found", "id", "no such instance");
    *reply = instance_to_json(&inst);
    instance_release(&inst);
    return 200;
}

static int show_operation(struct api_ctx *a, const char *id, json_t **reply)
{
    struct op_record op;

    if (store_op_get(a->store, id, &op) < 0)
        return fail_with(reply, "not_found", "id", "no such operation");
    *reply = op_record_to_json(&op);
    {
        json_t *p = ops_progress(a->ops, id);
        json_object_set_new(*reply, "progress", p ? p : json_null());
    }
    op_record_release(&op);
    return 200;
}

static int parse_body(const char *body, size_t len, json_t **out, json_t **reply)
{
    json_error_t jerr;
    char msg[300];

    if (!body || !len)
        return fail_with(reply, "invalid_json", NULL, "a JSON body is required");
    *out = json_loadb(body, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
    if (!*out) {
        snprintf(msg, sizeof(msg), "malformed JSON at line %d column %d: %s", jerr.line, jerr.column,
                 jerr.text);
        return fail_with(reply, "invalid_json", NULL, msg);
    }
    if (!json_is_object(*out)) {
        json_decref(*out);
        *out = NULL;
        return fail_with(reply, "invalid_json", NULL, "the body must be a JSON object");
    }
    return 0;
}

/* The request id: body field and Idempotency-Key header must agree; both
 * follow request_id_check(). */
static int request_id_of(json_t *body, const char *header, const char **out, json_t **reply)
{
    json_t *v = body ? json_object_get(body, "request_id") : NULL;
    struct agent_error e;

    *out = header;
    if (header && request_id_check(header, strlen(header), "Idempotency-Key", &e) < 0) {
        strscpy(e.field, "request_id", sizeof(e.field));
        return fail(reply, &e);
    }
    if (v && !json_is_null(v)) {
        if (request_id_check(json_string_value(v), json_string_length(v), "request_id", &e) < 0)
            return fail(reply, &e);
        if (header && strcmp(header, json_string_value(v)) != 0)
            return fail_with(reply, "invalid_field", "request_id", "field 'request_id' differs from the Idempotency-Key header");
        *out = json_string_value(v);
    }
    return 0;
}

static int launch(struct api_ctx *a, const char *body, size_t len, const char *idem, json_t **reply)
{
    json_t *j = NULL;
    struct launch_spec spec;
    struct agent_error e;
    const char *rid;
    int status;

    if ((status = parse_body(body, len, &j, reply)) > 0)
        return status;
    if ((status = request_id_of(j, idem, &rid, reply)) > 0)
        goto out;
    if (launch_spec_parse(j, a->catalog, &spec, &e) < 0) {
        status = fail(reply, &e);
        goto out;
    }
    if (rid && !spec.request_id)
        spec.request_id = strdup(rid);
    status = ops_launch(a->ops, &spec, reply, &e);
    if (status < 0)
        status = fail(reply, &e);
    launch_spec_release(&spec);
out:
    json_decref(j);
    return status;
}

static int action(struct api_ctx *a, const char *id, const char *body, size_t len, const char *idem,
                  json_t **reply)
{
    static const char *const allowed[] = {"action", "request_id", "timeout", "force", NULL};
    struct action_opts opts = {.timeout_s = -1};
    const char *key, *act;
    struct agent_error e;
    json_t *j = NULL, *v;
    int status;

    if ((status = parse_body(body, len, &j, reply)) > 0)
        return status;
    json_object_foreach(j, key, v) {
        bool ok = false;
        for (size_t i = 0; allowed[i]; i++)
            ok |= !strcmp(key, allowed[i]);
        if (!ok) {
            char msg[200];
            snprintf(msg, sizeof(msg), "unknown field '%.100s'", key);
            status = fail_with(reply, "unknown_field", key, msg);
            goto out;
        }
    }
    v = json_object_get(j, "action");
    if (!v) {
        status = fail_with(reply, "missing_field", "action", "field 'action' is required");
        goto out;
    }
    act = json_string_value(v);
    if (!act || (strcmp(act, "start") && strcmp(act, "stop") && strcmp(act, "reboot"))) {
        status = fail_with(reply, "invalid_field", "action", "field 'action' must be start, stop or reboot");
        goto out;
    }
    if ((v = json_object_get(j, "timeout"))) {
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > 3600) {
            status = fail_with(reply, "invalid_field", "timeout", "field 'timeout' must be an integer from 0 to 3600");
            goto out;
        }
        opts.timeout_s = json_integer_value(v);
    }
    if ((v = json_object_get(j, "force"))) {
        if (!json_is_boolean(v)) {
            status = fail_with(reply, "invalid_field", "force", "field 'force' must be a boolean");
            goto out;
        }
        opts.force = json_is_true(v);
    }
    if ((status = request_id_of(j, idem, &opts.request_id, reply)) > 0)
        goto out;
    status = ops_action(a->ops, id, act, &opts, reply, &e);
    if (status < 0)
        status = fail(reply, &e);
out:
    json_decref(j);
    return status;
}

static int terminate(struct api_ctx *a, const char *id, const char *idem, json_t **reply)
{
    struct action_opts opts = {.timeout_s = -1, .request_id = idem};
    struct agent_error e;
    const char *rid;
    int status;

    if ((status = request_id_of(NULL, idem, &rid, reply)) > 0)
        return status;
    status = ops_action(a->ops, id, "terminate", &opts, reply, &e);
    return status < 0 ? fail(reply, &e) : status;
}

static bool id_ok(const char *id)
{
    return uuid_is_valid(id) || ec2_id_is_valid(id);
}

static int route(struct api_ctx *a, const char *method, const char *url, const char *body, size_t len,
                 const char *idem, json_t **reply)
{
    char path[512], id[64];
    const char *rest;
    bool get = !strcmp(method, "GET") || !strcmp(method, "HEAD");
    bool post = !strcmp(method, "POST");
    bool del = !strcmp(method, "DELETE");
    size_t n = strcspn(url, "?");

    if (n >= sizeof(path))
        return fail_with(reply, "not_found", NULL, "no such resource");
    memcpy(path, url, n);
    path[n] = '\0';
    while (n > 1 && path[n - 1] == '/')
        path[--n] = '\0';

    if (!strcmp(path, "/healthz")) {
        if (!get)
            goto not_allowed;
        *reply = json_pack("{s:s}", "status", host_ready(a->host) ? "ok" : "starting");
        return host_ready(a->host) ? 200 : 503;
    }
    if (!strcmp(path, "/v1/host")) {
        if (!get)
            goto not_allowed;
        return get_host(a, reply);
    }
    if (!strcmp(path, "/v1/host/disable") || !strcmp(path, "/v1/host/enable")) {
        struct agent_error e;
        if (!post)
            goto not_allowed;
        if (host_set_disabled(a->host, !strcmp(path, "/v1/host/disable"), &e) < 0) {
            agent_error_set(&e, EIO, "internal", NULL, "cannot record the host state");
            return fail(reply, &e);
        }
        return get_host(a, reply);
    }
    if (!strcmp(path, "/v1/instances")) {
        if (get)
            return list_instances(a, reply);
        if (post)
            return launch(a, body, len, idem, reply);
        goto not_allowed;
    }
    if (!strncmp(path, "/v1/instances/", 14)) {
        rest = path + 14;
        n = strcspn(rest, "/");
        if (n == 0 || n >= sizeof(id))
            return fail_with(reply, "not_found", "id", "no such instance");
        memcpy(id, rest, n);
        id[n] = '\0';
        if (!id_ok(id))
            return fail_with(reply, "not_found", "id", "no such instance (ids are UUIDs or i- followed by 17 hex digits)");
        rest += n;
        if (!*rest) {
            if (get)
                return show_instance(a, id, reply);
            if (del)
                return terminate(a, id, idem, reply);
            goto not_allowed;
        }
        if (!strcmp(rest, "/actions")) {
            if (post)
                return action(a, id, body, len, idem, reply);
            goto not_allowed;
        }
        return fail_with(reply, "not_found", NULL, "no such resource");
    }
    if (!strcmp(path, "/v1/images")) {
        if (!a->imgcache)
            return fail_with(reply, "not_supported", NULL, "the image cache is not running");
        if (get)
            return imgcache_api_list(a->imgcache, reply);
        if (post) {
            json_t *j = NULL;
            int status = parse_body(body, len, &j, reply);
            if (status > 0)
                return status;
            status = imgcache_api_create(a->imgcache, j, reply);
            json_decref(j);
            return status;
        }
        goto not_allowed;
    }
    if (!strncmp(path, "/v1/images/", 11)) {
        if (!a->imgcache)
            return fail_with(reply, "not_supported", NULL, "the image cache is not running");
        if (!uuid_is_valid(path + 11))
            return fail_with(reply, "not_found", "id", "no such image");
        if (get)
            return imgcache_api_get(a->imgcache, path + 11, reply);
        if (del) {
            int status = imgcache_api_delete(a->imgcache, path + 11, reply);
            if (!*reply) /* 204 */
                *reply = json_object();
            return status;
        }
        goto not_allowed;
    }
    if (!strncmp(path, "/v1/operations/", 15)) {
        if (!get)
            goto not_allowed;
        if (!uuid_is_valid(path + 15))
            return fail_with(reply, "not_found", "id", "no such operation");
        return show_operation(a, path + 15, reply);
    }
    return fail_with(reply, "not_found", NULL, "no such resource");
not_allowed:
    return fail_with(reply, "method_not_allowed", NULL, "method not allowed on this resource");
}

/* ---- MHD glue ---- */

/* "Authorization: Bearer TOKEN": the scheme in any case (RFC 7235), one or
 * more spaces, then exactly the token: the value's full length (MHD keeps
 * bytes after an embedded NUL), compared in constant time. */
static bool token_ok(struct MHD_Connection *c, const char *token)
{
    const char *v = NULL;
    size_t vlen = 0, tl = strlen(token), i = 6;
    unsigned char diff = 0;

    if (MHD_lookup_connection_value_n(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION,
                                      strlen(MHD_HTTP_HEADER_AUTHORIZATION), &v, &vlen) != MHD_YES ||
        !v || vlen < 7 || strncasecmp(v, "Bearer", 6) != 0 || v[6] != ' ')
        return false;
    while (i < vlen && v[i] == ' ')
        i++;
    v += i;
    vlen -= i;
    if (vlen != tl)
        return false;
    for (i = 0; i < tl; i++)
        diff |= (unsigned char)token[i] ^ (unsigned char)v[i];
    return diff == 0;
}

static const char *skip_ows(const char *p)
{
    while (*p == ' ' || *p == '\t')
        p++;
    return p;
}

/* Content-Type names JSON: the media type application/json exactly (any
 * case), then only parameters; a charset, if given, is utf-8. */
static bool json_media_type(const char *v)
{
    const char *p = skip_ows(v);

    if (strncasecmp(p, "application/json", 16) != 0)
        return false;
    p = skip_ows(p + 16);
    while (*p == ';') {
        const char *name = p = skip_ows(p + 1), *val;
        size_t nlen, vlen;
        while (*p && *p != '=' && *p != ';' && *p != ' ' && *p != '\t' && *p != '"')
            p++;
        nlen = (size_t)(p - name);
        if (!nlen || *p != '=')
            return false;
        val = ++p;
        if (*p == '"') {
            val = ++p;
            while (*p && *p != '"' && *p != '\\')
                p++;
            if (*p != '"')
                return false;
            vlen = (size_t)(p++ - val);
        } else {
            while (*p && *p != ';' && *p != ' ' && *p != '\t' && *p != '"')
                p++;
            vlen = (size_t)(p - val);
        }
        if (!vlen)
            return false;
        if (nlen == 7 && !strncasecmp(name, "charset", 7) &&
            !(vlen == 5 && !strncasecmp(val, "utf-8", 5)))
            return false;
        p = skip_ows(p);
    }
    return *p == '\0';
}

static enum MHD_Result send_json(struct MHD_Connection *c, int status, json_t *body)
{
    char *text;

    if (status == MHD_HTTP_NO_CONTENT) {
        struct MHD_Response *empty = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
        enum MHD_Result r = empty ? MHD_queue_response(c, (unsigned)status, empty) : MHD_NO;
        json_decref(body);
        if (empty)
            MHD_destroy_response(empty);
        return r;
    }
    text = json_dumps(body, JSON_COMPACT);
    size_t len = text ? strlen(text) : 0;
    struct MHD_Response *resp;
    enum MHD_Result r;

    json_decref(body);
    if (!text)
        return MHD_NO;
    text[len] = '\0';
    resp = MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(text);
        return MHD_NO;
    }
    MHD_add_response_header(resp, "Content-Type", "application/json");
    r = MHD_queue_response(c, (unsigned)status, resp);
    MHD_destroy_response(resp);
    return r;
}

int api_route(const struct api_deps *deps, const struct api_config *cfg, const char *method, const char *url,
              const char *body, size_t len, const char *idempotency_key, json_t **reply)
{
    struct api_ctx a;

    ctx_init(&a, NULL, deps, cfg);
    return route(&a, method, url, body, len, idempotency_key, reply);
}

static void on_timer(uv_timer_t *t);

/* GET /metrics: the Prometheus text format, from the last sample and the
 * agent's counters; never calls libvirt. */
static enum MHD_Result send_metrics(struct api_ctx *a, struct MHD_Connection *c)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    struct bus *bus = events_bus(a->events);
    struct MHD_Response *resp;
    enum MHD_Result r;

    if (!f)
        return MHD_NO;
    if (bus) {
        struct bus_stats bs;
        bus_stats(bus, &bs);
        metrics_bus_update(a->metrics, &bs);
    }
    metrics_render_prometheus(a->metrics, f);
    if (a->telemetry)
        telemetry_render_prometheus(a->telemetry, f);
    fclose(f);
    resp = MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(text);
        return MHD_NO;
    }
    MHD_add_response_header(resp, "Content-Type", "text/plain; version=0.0.4; charset=utf-8");
    r = MHD_queue_response(c, MHD_HTTP_OK, resp);
    MHD_destroy_response(resp);
    return r;
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
        w->k->since_ms = uv_now(api->a->loop);
    }
    MHD_resume_connection(w->conn);
    /* MHD serves a resumed connection on its next run: make that now */
    if (!api->stopping)
        uv_timer_start(&w->srv->timer, on_timer, 0, 0);
    uv_timer_stop(&w->timer);
    uv_close((uv_handle_t *)&w->timer, on_waiter_closed);
}

static struct conn *conn_of(struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);

    return ci ? ci->socket_context : NULL;
}

static void on_wait_deadline(uv_timer_t *t)
{
    struct waiter *w = t->data;
    struct op_record op;
    json_t *reply;
    int status;

    if (store_op_get(w->api->a->store, w->op_id, &op) == 0) {
        reply = op_record_to_json(&op);
        op_record_release(&op);
        status = 200;
    } else {
        status = fail_with(&reply, "not_found", "id", "no such operation");
    }
    waiter_resume(w, status, reply);
}

void api_operation_done(struct api *api, const struct op_record *rec)
{
    struct waiter *w = api->waiters, *next;

    for (; w; w = next) {
        next = w->next;
        if (!strcmp(w->op_id, rec->id))
            waiter_resume(w, 200, op_record_to_json(rec));
    }
}

/* GET /v1/operations/{id}?wait=S: 1 if suspended until the operation ends
 * (or S seconds pass), 0 to answer now, -1 with *reply set on bad input. */
static int maybe_wait(struct api_server *srv, struct MHD_Connection *c, struct request *req,
                      const char *id, const char *wait, json_t **reply, int *status)
{
    struct api *api = srv->api;
    struct op_record op;
    struct waiter *w;
    int64_t secs;
    bool finished;

    if (parse_int64(wait, 0, API_MAX_WAIT_S, &secs) < 0) {
        *status = fail_with(reply, "invalid_field", "wait", "query 'wait' must be seconds from 0 to 300");
        return -1;
    }
    if (secs == 0 || !uuid_is_valid(id) || store_op_get(api->a->store, id, &op) < 0)
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
    w->k = conn_of(c);
    w->req = req;
    strscpy(w->op_id, id, sizeof(w->op_id));
    uv_timer_init(api->a->loop, &w->timer);
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

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls)
{
    struct api_server *srv = cls;
    struct api_ctx *a = srv->api->a;
    struct request *req = *con_cls;
    json_t *reply = NULL;
    const char *ctype, *idem;
    uint64_t t0;
    int status;

    (void)version;
    if (!req) {
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
        int64_t clen;
        struct conn *k = conn_of(c);
        req = calloc(1, sizeof(*req));
        if (!req)
            return MHD_NO;
        if (k && k->phase == CONN_HEAD)
            k->phase = CONN_REQUEST; /* the head is in: the request deadline runs on */
        if (cl && parse_int64(cl, 0, INT64_MAX, &clen) == 0 && clen > API_MAX_BODY)
            req->too_big = true;
        *con_cls = req;
        return MHD_YES;
    }
    if (*upload_size) {
        if (!req->too_big && req->len + *upload_size <= API_MAX_BODY) {
            char *nb = realloc(req->body, req->len + *upload_size + 1);
            if (!nb)
                return MHD_NO;
            memcpy(nb + req->len, upload, *upload_size);
            req->body = nb;
            req->len += *upload_size;
            req->body[req->len] = '\0';
        } else {
            req->too_big = true;
        }
        *upload_size = 0;
        return MHD_YES;
    }
    if (req->reply) {
        /* a resumed long-poll */
        json_t *r = req->reply;
        req->reply = NULL;
        return send_json(c, req->status, r);
    }
    t0 = now_mono_ns();
    if (srv->tcp && !token_ok(c, a->cfg->api_token)) {
        status = fail_with(&reply, "unauthorized", NULL, "a valid bearer token is required");
        goto send;
    }
    if (req->too_big) {
        status = fail_with(&reply, "payload_too_large", NULL, "the body is larger than 64 KiB");
        goto send;
    }
    ctype = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Type");
    if (req->len && ctype && !json_media_type(ctype)) {
        status = fail_with(&reply, "unsupported_media_type", NULL, "the body must be application/json");
        goto send;
    }
    if (!strcmp(url, "/metrics") && (!strcmp(method, "GET") || !strcmp(method, "HEAD")))
        return send_metrics(a, c);
    if (srv->metrics_only) {
        status = fail_with(&reply, "not_found", NULL, "this listener serves GET /metrics only");
        goto send;
    }
    idem = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Idempotency-Key");
    if (!strcmp(method, "GET") && !strncmp(url, "/v1/operations/", 15)) {
        const char *w = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "wait");
        if (w) {
            int r = maybe_wait(srv, c, req, url + 15, w, &reply, &status);
            if (r == 1)
                return MHD_YES; /* suspended */
            if (r < 0)
                goto send;
        }
    }
    status = route(a, method, url, req->body, req->len, idem, &reply);
send:
    if (status >= 400) {
        json_t *e = json_object_get(reply, "error");
        log_info("request refused", "method=%s path=%s status=%d code=%s field=%s message=%s", method, url,
                 status, json_string_value(json_object_get(e, "code")),
                 json_is_string(json_object_get(e, "field")) ? json_string_value(json_object_get(e, "field")) : "-",
                 json_string_value(json_object_get(e, "message")));
    } else {
        log_debug("request", "method=%s path=%s status=%d us=%llu", method, url, status,
                  (unsigned long long)((now_mono_ns() - t0) / 1000));
    }
    return send_json(c, status, reply);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    struct request *req = *con_cls;
    struct conn *k = conn_of(c);

    (void)toe;
    if (req) {
        json_decref(req->reply);
        free(req->body);
        free(req);
        *con_cls = NULL;
    }
    if (k && k->phase != CONN_CUT) {
        /* kept alive: the next request head is due within header_timeout */
        struct api_server *srv = cls;
        k->phase = CONN_HEAD;
        k->since_ms = uv_now(srv->api->a->loop);
    }
}

/* MHD_OPTION_NOTIFY_CONNECTION: track each connection for its deadlines. */
static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                          enum MHD_ConnectionNotificationCode code)
{
    struct api_server *srv = cls;
    struct conn *k = *socket_context;

    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
        if (!ci)
            return;
        k = calloc(1, sizeof(*k));
        if (!k) {
            shutdown(ci->connect_fd, SHUT_RDWR); /* no deadline to keep: no connection */
            return;
        }
        k->fd = ci->connect_fd;
        k->phase = CONN_HEAD;
        k->fresh = true;
        srv->fresh++;
        k->since_ms = uv_now(srv->api->a->loop);
        k->next = srv->conns;
        if (srv->conns)
            srv->conns->prev = k;
        srv->conns = k;
        *socket_context = k;
        return;
    }
    /* MHD_CONNECTION_NOTIFY_CLOSED */
    srv->closed_in_run = true;
    if (!k)
        return;
    if (k->fresh)
        srv->fresh--;
    if (k->prev)
        k->prev->next = k->next;
    else
        srv->conns = k->next;
    if (k->next)
        k->next->prev = k->prev;
    for (struct waiter *w = srv->api->waiters; w; w = w->next)
        if (w->k == k)
            w->k = NULL;
    free(k);
    *socket_context = NULL;
}

static void on_timer(uv_timer_t *t);

/* 1 if a connection still waiting for its request head can never send
 * one: its client has hung up and MHD has read every byte it sent. MHD
 * (edge-triggered epoll) misses a hang-up that came with the data before
 * the accept, and would keep such a connection to its deadline; a queue of
 * them behind the connection limit would then keep everyone out. 0 if
 * alive, -1 if MHD has bytes still to read (ask again later). */
static int head_abandoned(const struct conn *k)
{
    struct pollfd p = {.fd = k->fd, .events = POLLIN | POLLRDHUP};
    int unread = 0;

    if (poll(&p, 1, 0) != 1 || !(p.revents & (POLLRDHUP | POLLHUP | POLLERR)))
        return 0;
    if (ioctl(k->fd, FIONREAD, &unread) < 0 || unread > 0)
        return -1;
    return 1;
}

static void conn_cut(struct conn *k)
{
    k->phase = CONN_CUT;
    shutdown(k->fd, SHUT_RDWR);
}

/* The connections accepted in the last run: cut those abandoned already. */
static bool check_fresh(struct api_server *srv)
{
    bool cut = false;

    for (struct conn *k = srv->conns; k && srv->fresh; k = k->next) {
        int r;
        if (!k->fresh)
            continue;
        r = k->phase == CONN_HEAD ? head_abandoned(k) : 0;
        if (r < 0)
            continue;
        if (r > 0) {
            conn_cut(k);
            cut = true;
        }
        k->fresh = false;
        srv->fresh--;
    }
    return cut;
}

/* Run MHD, then re-arm the timer MHD asks for.
 *
 * At its connection limit (or after accept() failed with EMFILE) MHD takes
 * its listen socket out of its epoll set, and puts it back only at the
 * start of a later MHD_run(), once a connection has gone. Connections that
 * close during a run (clients hanging up, MHD's timeouts, our deadlines)
 * make that room at the run's end; if nothing else wakes the loop, no
 * later run comes: the listen socket never returns to the set, nothing is
 * accepted again and the accept queue stays full. So a run in which a
 * connection closed is followed by another at once. */
static void drive(struct api_server *srv)
{
    MHD_UNSIGNED_LONG_LONG timeout;

    srv->closed_in_run = false;
    MHD_run(srv->mhd);
    if (srv->fresh && check_fresh(srv))
        srv->closed_in_run = true;
    if (srv->closed_in_run)
        uv_timer_start(&srv->timer, on_timer, 0, 0);
    else if (MHD_get_timeout(srv->mhd, &timeout) == MHD_YES)
        uv_timer_start(&srv->timer, on_timer, timeout, 0);
    else
        uv_timer_stop(&srv->timer);
}

#define SWEEP_MS 250

/* Shut down the connections past their deadline; run MHD (which also
 * keeps a missed wake-up from lasting). */
static void on_sweep(uv_timer_t *t)
{
    struct api_server *srv = t->data;
    const struct agent_config *cfg = srv->api->a->cfg;
    uint64_t now = uv_now(srv->api->a->loop);
    unsigned head = 0, request = 0;

    for (struct conn *k = srv->conns; k; k = k->next) {
        bool late = (k->phase == CONN_HEAD && now - k->since_ms >= (uint64_t)cfg->api_header_timeout_s * 1000) ||
                    (k->phase == CONN_REQUEST && now - k->since_ms >= (uint64_t)cfg->api_request_timeout_s * 1000);
        if (!late) {
            if (k->phase == CONN_HEAD && head_abandoned(k) > 0)
                conn_cut(k);
            continue;
        }
        if (k->phase == CONN_HEAD)
            head++;
        else
            request++;
        conn_cut(k);
    }
    if (head || request)
        log_info("connections closed at their deadline", "listener=%s without_request_head=%u request_too_long=%u",
                 srv->name, head, request);
    drive(srv);
}

static void on_timer(uv_timer_t *t)
{
    drive(t->data);
}

static void on_poll(uv_poll_t *p, int status, int events)
{
    (void)status;
    (void)events;
    drive(p->data);
}

/* Remove what is at api.socket only if it is a socket nobody serves on (a
 * previous agent's, left by a crash); anything else stays and is an error. */
static int unix_remove_stale(const struct sockaddr_un *sa, struct agent_error *err)
{
    struct stat st;
    int fd, r;

    if (lstat(sa->sun_path, &st) < 0)
        return errno == ENOENT ? 0
                               : agent_error_set(err, errno, "invalid_config", "api.socket", "cannot stat %s: %s",
                                                 sa->sun_path, strerror(errno));
    if (!S_ISSOCK(st.st_mode))
        return agent_error_set(err, EEXIST, "invalid_config", "api.socket",
                               "%s exists and is not a socket; not removing it", sa->sun_path);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return agent_error_set(err, errno, "internal", "api.socket", "socket: %s", strerror(errno));
    r = connect(fd, (const struct sockaddr *)sa, sizeof(*sa)) == 0 ? 0 : errno;
    close(fd);
    if (r != ECONNREFUSED && r != ENOENT)
        return agent_error_set(err, EADDRINUSE, "invalid_config", "api.socket",
                               "%s is in use by another process; not removing it", sa->sun_path);
    if (unlink(sa->sun_path) < 0 && errno != ENOENT)
        return agent_error_set(err, errno, "invalid_config", "api.socket", "cannot remove the stale %s: %s",
                               sa->sun_path, strerror(errno));
    return 0;
}

static int unix_listen(struct api *api, const char *path, struct agent_error *err)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    struct stat st;
    int fd, r;

    if (strscpy(sa.sun_path, path, sizeof(sa.sun_path)) < 0)
        return agent_error_set(err, ENAMETOOLONG, "invalid_config", "api.socket",
                               "socket path too long: %s", path);
    if ((r = unix_remove_stale(&sa, err)) < 0)
        return r;
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return agent_error_set(err, errno, "invalid_config", "api.socket", "socket: %s", strerror(errno));
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        int e = errno;
        close(fd);
        return agent_error_set(err, e, "invalid_config", "api.socket", "cannot listen on %s: %s", path,
                               strerror(e));
    }
    if (lstat(path, &st) == 0) {
        api->socket_bound = true;
        api->socket_dev = st.st_dev;
        api->socket_ino = st.st_ino;
    }
    if (chmod(path, 0660) < 0 || listen(fd, 512) < 0) {
        int e = errno;
        close(fd);
        return agent_error_set(err, e, "invalid_config", "api.socket", "cannot listen on %s: %s", path,
                               strerror(e));
    }
    return fd;
}

static int tcp_listen(const char *hostport, struct agent_error *err)
{
    char host[256];
    const char *colon = strrchr(hostport, ':');
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
    struct addrinfo *res = NULL;
    int fd = -1, one = 1, rc;

    if (!colon || colon == hostport || (size_t)(colon - hostport) >= sizeof(host))
        return agent_error_set(err, EINVAL, "invalid_config", "api.listen",
                               "api.listen '%s' must be HOST:PORT", hostport);
    memcpy(host, hostport, (size_t)(colon - hostport));
    host[colon - hostport] = '\0';
    if (host[0] == '[' && host[strlen(host) - 1] == ']') {
        memmove(host, host + 1, strlen(host));
        host[strlen(host) - 1] = '\0';
    }
    rc = getaddrinfo(host, colon + 1, &hints, &res);
    if (rc != 0)
        return agent_error_set(err, EINVAL, "invalid_config", "api.listen", "api.listen '%s': %s",
                               hostport, gai_strerror(rc));
    fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd >= 0) {
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, 512) < 0) {
            rc = errno;
            close(fd);
            fd = -1;
            errno = rc;
        }
    }
    freeaddrinfo(res);
    if (fd < 0)
        return agent_error_set(err, errno, "invalid_config", "api.listen", "cannot listen on %s: %s",
                               hostport, strerror(errno));
    return fd;
}

static void server_stop(struct api_server *srv);

/* Connections at once per listener: api.max_connections, within the
 * open-file limit (kept clear of what the rest of the agent needs). */
static unsigned connection_limit(const struct agent_config *cfg, unsigned listeners)
{
    struct rlimit rl;
    uint64_t limit = (uint64_t)cfg->api_max_connections, budget;

    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
        budget = rl.rlim_cur > 512 ? (rl.rlim_cur - 256) / listeners : 64;
        if (limit > budget)
            limit = budget;
    }
    return (unsigned)limit;
}

static int server_start(struct api *api, struct api_server *srv, int fd, bool tcp, const char *name,
                        unsigned limit, struct agent_error *err)
{
    const union MHD_DaemonInfo *info;
    /* per client address, on TCP (MHD counts none on a unix socket) */
    unsigned per_ip = tcp || srv->metrics_only ? (unsigned)api->a->cfg->api_per_address_limit : 0;

    srv->api = api;
    srv->tcp = tcp;
    srv->name = name;
    srv->mhd = MHD_start_daemon(MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME, 0, NULL, NULL, on_request, srv,
                                MHD_OPTION_LISTEN_SOCKET, fd, MHD_OPTION_NOTIFY_COMPLETED, on_completed,
                                srv, MHD_OPTION_NOTIFY_CONNECTION, on_connection, srv,
                                MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)60,
                                MHD_OPTION_CONNECTION_LIMIT, limit,
                                MHD_OPTION_PER_IP_CONNECTION_LIMIT, per_ip,
                                MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(128 * 1024), MHD_OPTION_END);
    if (!srv->mhd) {
        close(fd);
        return agent_error_set(err, EIO, "internal", tcp ? "api.listen" : "api.socket",
                               "cannot start the HTTP server");
    }
    info = MHD_get_daemon_info(srv->mhd, MHD_DAEMON_INFO_EPOLL_FD);
    if (!info || uv_poll_init(api->a->loop, &srv->poll, info->epoll_fd) < 0) {
        MHD_stop_daemon(srv->mhd);
        srv->mhd = NULL;
        return agent_error_set(err, EIO, "internal", NULL, "cannot watch the HTTP server");
    }
    uv_timer_init(api->a->loop, &srv->timer);
    uv_timer_init(api->a->loop, &srv->sweep);
    srv->poll.data = srv;
    srv->timer.data = srv;
    srv->sweep.data = srv;
    srv->open = true;
    uv_poll_start(&srv->poll, UV_READABLE, on_poll);
    uv_timer_start(&srv->sweep, on_sweep, SWEEP_MS, SWEEP_MS);
    drive(srv);
    return 0;
}

int api_new(uv_loop_t *loop, const struct api_deps *deps, const struct api_config *cfg, struct api **ret,
            struct agent_error *err)
{
    struct api *api = calloc(1, sizeof(*api));
    const struct api_ctx *a = &api->ctx;
    unsigned limit;
    int fd, r = 0;

    if (!api)
        return -ENOMEM;
    ctx_init(&api->ctx, loop, deps, cfg);
    api->a = &api->ctx;
    limit = connection_limit(a->cfg, 1 + !!a->cfg->api_listen[0] + !!a->cfg->metrics_listen[0]);
    if (limit < a->cfg->api_max_connections)
        log_warn("the open-file limit caps api.max_connections", "max_connections=%u", limit);
    fd = unix_listen(api, a->cfg->api_socket, err);
    if (fd < 0 || (r = server_start(api, &api->unix_srv, fd, false, "api.socket", limit, err)) < 0) {
        api_free(api);
        return fd < 0 ? fd : r;
    }
    if (a->cfg->api_listen[0]) {
        fd = tcp_listen(a->cfg->api_listen, err);
        if (fd < 0 || (r = server_start(api, &api->tcp_srv, fd, true, "api.listen", limit, err)) < 0) {
            api_free(api);
            return fd < 0 ? fd : r;
        }
    }
    if (a->cfg->metrics_listen[0]) {
        fd = tcp_listen(a->cfg->metrics_listen, err);
        if (fd >= 0)
            api->metrics_srv.metrics_only = true;
        if (fd < 0 ||
            (r = server_start(api, &api->metrics_srv, fd, false, "telemetry.metrics_listen", limit, err)) < 0) {
            if (err)
                strscpy(err->field, "telemetry.metrics_listen", sizeof(err->field));
            api_free(api);
            return fd < 0 ? fd : r;
        }
    }
    *ret = api;
    return 0;
}

static void on_closed(uv_handle_t *h)
{
    struct api_server *srv = h->data;
    struct api *api = srv->api;

    if (--api->pending_closes == 0)
        free(api);
}

static void server_stop(struct api_server *srv)
{
    if (srv->mhd) {
        if (srv->open) {
            uv_poll_stop(&srv->poll);
            srv->api->pending_closes += 3;
            uv_close((uv_handle_t *)&srv->poll, on_closed);
            uv_close((uv_handle_t *)&srv->timer, on_closed);
            uv_close((uv_handle_t *)&srv->sweep, on_closed);
        }
        MHD_stop_daemon(srv->mhd);
        srv->mhd = NULL;
    }
}

void api_free(struct api *api)
{
    if (!api)
        return;
    api->stopping = true;
    /* MHD needs every suspended connection resumed before it stops */
    while (api->waiters)
        on_wait_deadline(&api->waiters->timer);
    if (api->unix_srv.mhd)
        MHD_run(api->unix_srv.mhd);
    if (api->tcp_srv.mhd)
        MHD_run(api->tcp_srv.mhd);
    server_stop(&api->metrics_srv);
    if (api->socket_bound) {
        /* ours only if it is still the inode bound (not a successor's) */
        struct stat st;
        if (lstat(api->a->cfg->api_socket, &st) == 0 && S_ISSOCK(st.st_mode) && st.st_dev == api->socket_dev &&
            st.st_ino == api->socket_ino)
            unlink(api->a->cfg->api_socket);
    }
    server_stop(&api->unix_srv);
    server_stop(&api->tcp_srv);
    if (api->pending_closes == 0)
        free(api);
}
