/* events.c: see events.h. Longer than the house's ~600 lines on purpose:
 * the outbox, its delivery and the readback after a start (which rows Kafka
 * already holds, where the next readback starts) share one object and one
 * transaction discipline; split, they would call each other both ways. */
#include "agent/events.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "agent/bus.h"
#include "agent/bus-readback.h"
#include "agent/events-window.h"
#include "agent/host.h"
#include "agent/log.h"
#include "agent/metrics.h"
#include "agent/resources.h"

struct events {
    uv_loop_t *loop;
    struct events_deps d;     /* borrowed */
    struct events_config cfg; /* strings borrowed */
    struct events_hooks hooks;
    void *opaque;             /* for the hooks */
    struct bus *bus;          /* NULL when stopped */
    sqlite3_stmt *add;        /* INSERT into outbox */
    sqlite3_stmt *next;       /* the rows not yet handed to the bus */
    sqlite3_stmt *del;        /* DELETE an acknowledged row */
    int64_t sent_upto;        /* rows up to this id are with the bus */
    uint64_t in_flight;       /* handed to the bus, not yet acknowledged */
    bool backlog;             /* the bus's queue was full: flush again on a delivery */
    int64_t *acked;           /* acknowledged rows waiting for one DELETE transaction */
    size_t n_acked, cap_acked;
    uv_timer_t ack_timer;     /* deletes them on the next loop turn */
    bool ack_timer_open;
    uv_timer_t heartbeat;
    bool heartbeat_open;
    char **props;             /* extra librdkafka properties (owned) */

    /* Exactly once across crashes (bus-readback.h): until the events topic
     * has been read back after a start, nothing is sent. */
    bool reading;             /* a readback is running or waits for a retry */
    struct bus_readback *readback; /* the running one, or NULL */
    unsigned read_attempts;
    uv_timer_t read_timer;    /* next readback attempt */
    bool read_timer_open;
    int64_t *read_from;       /* per partition: after our last acknowledged event */
    size_t n_read_from;
    bool read_from_dirty;     /* raised since last written to the store */
    bool read_from_known;     /* a record exists (else: a new store) */
    bool crash_on_ack;        /* COMPUTE_AGENT_CRASH_AT=events:acked (tests) */

    struct evwin *win;        /* the window GET /v1/events serves */
    void (*watch)(void *opaque, int64_t last); /* told after commits that added events */
    void *watch_opaque;
    int64_t watched_upto;     /* the watcher was told up to this seq */
};

#define READ_FROM_KEY "events.read_from"
#define READBACK_ATTEMPTS 4   /* then send anyway, at least once */

int events_new(uv_loop_t *loop, const struct events_deps *deps, const struct events_config *cfg,
               const struct events_hooks *hooks, void *opaque, struct events **ret)
{
    struct events *e = calloc(1, sizeof(*e));
    sqlite3 *db;

    if (!e)
        return -ENOMEM;
    e->loop = loop;
    e->d = *deps;
    e->cfg = *cfg;
    if (hooks)
        e->hooks = *hooks;
    e->opaque = opaque;
    e->crash_on_ack = getenv("COMPUTE_AGENT_CRASH_AT") && !strcmp(getenv("COMPUTE_AGENT_CRASH_AT"), "events:acked");
    db = store_db(e->d.store);
    /* the outbox table is the store's (a migration of its "outbox" module) */
    if (sqlite3_prepare_v3(db, "INSERT INTO outbox (key, payload, created_ms) VALUES (?1, ?2, ?3)", -1,
                           SQLITE_PREPARE_PERSISTENT, &e->add, NULL) != SQLITE_OK ||
        sqlite3_prepare_v3(db, "SELECT id, key, payload FROM outbox WHERE id > ?1 ORDER BY id LIMIT 1000", -1,
                           SQLITE_PREPARE_PERSISTENT, &e->next, NULL) != SQLITE_OK ||
        sqlite3_prepare_v3(db, "DELETE FROM outbox WHERE id = ?1", -1, SQLITE_PREPARE_PERSISTENT, &e->del,
                           NULL) != SQLITE_OK) {
        sqlite3_finalize(e->add);
        sqlite3_finalize(e->next);
        free(e);
        return -EIO;
    }
    e->win = evwin_new(db, cfg->window_events, cfg->window_bytes);
    if (!e->win) {
        sqlite3_finalize(e->add);
        sqlite3_finalize(e->next);
        sqlite3_finalize(e->del);
        free(e);
        return -EIO;
    }
    *ret = e;
    return 0;
}

static int outbox_add(struct events *e, const char *key, json_t *payload)
{
    char *text = json_dumps(payload, JSON_COMPACT);
    int rc;

    if (!e || !text || !payload) {
        json_decref(payload);
        free(text);
        return e ? -ENOMEM : 0;
    }
    sqlite3_bind_text(e->add, 1, key, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(e->add, 2, text, -1, SQLITE_STATIC);
    sqlite3_bind_int64(e->add, 3, now_wall_ms());
    rc = sqlite3_step(e->add);
    sqlite3_reset(e->add);
    sqlite3_clear_bindings(e->add);
    /* its copy for GET /v1/events, in the same transaction */
    if (rc == SQLITE_DONE && evwin_add(e->win, sqlite3_last_insert_rowid(store_db(e->d.store)), key, payload, text) < 0)
        rc = SQLITE_ERROR;
    json_decref(payload);
    free(text);
    return rc == SQLITE_DONE ? 0 : -EIO;
}

int events_window_read(struct events *e, const struct events_query *q, json_t **page)
{
    return e ? evwin_read(e->win, q, page) : -ENOTSUP;
}

int64_t events_last_seq(struct events *e)
{
    return e ? evwin_last(e->win) : 0;
}

void events_watch(struct events *e, void (*cb)(void *opaque, int64_t last), void *opaque)
{
    if (!e)
        return;
    e->watch = cb;
    e->watch_opaque = opaque;
    e->watched_upto = evwin_last(e->win);
}

/* After a commit: tell the watcher when it added events. */
static void watch_tell(struct events *e)
{
    int64_t last;

    if (!e->watch)
        return;
    last = evwin_last(e->win);
    if (last > e->watched_upto) {
        e->watched_upto = last;
        e->watch(e->watch_opaque, last);
    }
}

static json_t *event_base(struct events *e, const char *event, const struct instance *inst,
                          const char *request_id)
{
    char ts[32];
    char id[37];

    format_rfc3339_ms(now_wall_ms(), ts);
    if (uuid_generate_str(id) < 0)
        return NULL;
    /* event_id: minted once with the outbox row, so a resend carries the
     * same one (consumers and the readback recognise it) */
    return json_pack("{s:s, s:s, s:o, s:o, s:s, s:o, s:s}", "event", event, "event_id", id, "instance_id",
                     inst ? json_string(inst->uuid) : json_null(), "ec2_id",
                     inst ? json_string(inst->ec2_id) : json_null(), "host", e->cfg.host_name,
                     "request_id", request_id ? json_string(request_id) : json_null(), "timestamp", ts);
}

int events_instance(struct events *e, const struct instance *inst, const char *request_id)
{
    char name[48];
    json_t *j;

    if (!e)
        return 0;
    snprintf(name, sizeof(name), "instance.%s", inst->state);
    j = event_base(e, name, inst, request_id);
    json_object_set_new(j, "instance", instance_to_json(inst));
    return outbox_add(e, inst->uuid, j);
}

int events_operation(struct events *e, const struct op_record *rec, const struct instance *inst)
{
    char name[48];
    json_t *j;

    if (!e)
        return 0;
    snprintf(name, sizeof(name), "operation.%s", rec->state);
    j = event_base(e, name, inst, rec->request_id);
    json_object_set_new(j, "operation", op_record_to_json(rec));
    return outbox_add(e, inst->uuid, j);
}

int events_command_rejected(struct events *e, const char *request_id, const char *instance_id,
                            const struct agent_error *err, int32_t partition, int64_t offset)
{
    json_t *j;

    if (!e)
        return 0;
    j = event_base(e, "command.rejected", NULL, request_id);
    if (instance_id)
        json_object_set_new(j, "instance_id", json_string(instance_id));
    json_object_set_new(j, "error", json_pack("{s:s, s:s, s:o}", "code", err->code, "message", err->message,
                                              "field", err->field[0] ? json_string(err->field) : json_null()));
    json_object_set_new(j, "command", json_pack("{s:i, s:I}", "partition", partition, "offset", (json_int_t)offset));
    return outbox_add(e, instance_id ? instance_id : e->cfg.host_name, j);
}

int events_usage_drift(struct events *e, const char *provider_uuid, const char *const only_in_placement[],
                       size_t n_in_placement, const char *const only_here[], size_t n_here)
{
    json_t *j, *in, *here;
    int r;

    if (!e)
        return 0;
    j = event_base(e, "placement.usage_drift", NULL, NULL);
    in = json_array();
    here = json_array();
    for (size_t i = 0; i < n_in_placement; i++)
        json_array_append_new(in, json_string(only_in_placement[i]));
    for (size_t i = 0; i < n_here; i++)
        json_array_append_new(here, json_string(only_here[i]));
    json_object_set_new(j, "provider_uuid", provider_uuid ? json_string(provider_uuid) : json_null());
    json_object_set_new(j, "only_in_placement", in);
    json_object_set_new(j, "only_here", here);
    r = outbox_add(e, e->cfg.host_name, j);
    if (r == 0)
        events_flush(e);
    return r;
}

int events_migration(struct events *e, const char *event, const struct instance *inst, const char *request_id,
                     json_t *fields)
{
    json_t *j;
    int r;

    if (!e) {
        json_decref(fields);
        return 0;
    }
    j = event_base(e, event, inst, request_id);
    if (j && fields)
        json_object_update(j, fields);
    json_decref(fields);
    r = outbox_add(e, inst->uuid, j);
    if (r == 0)
        events_flush(e);
    return r;
}

void events_flush(struct events *e)
{
    sqlite3_stmt *st;

    if (e)
        watch_tell(e);
    if (!e || !e->bus || e->reading)
        return;
    st = e->next;
    sqlite3_bind_int64(st, 1, e->sent_upto);
    while (sqlite3_step(st) == SQLITE_ROW) {
        int64_t id = sqlite3_column_int64(st, 0);
        const char *key = (const char *)sqlite3_column_text(st, 1);
        const char *payload = (const char *)sqlite3_column_text(st, 2);
        int r = bus_publish_event(e->bus, key, payload, strlen(payload), id);
        if (r < 0) {
            e->backlog = r == -ENOBUFS;
            if (r != -ENOBUFS)
                log_warn("cannot publish an event; it stays in the outbox", "outbox_id=%lld error=%s",
                         (long long)id, strerror(-r));
            break; /* keep order: the rest waits for the next flush */
        }
        e->sent_upto = id;
        e->in_flight++;
    }
    sqlite3_reset(st);
}

/* {"topic": T, "offsets": [..]}: where the next readback starts. */
static int read_from_save(struct events *e)
{
    json_t *offs = json_array(), *j;
    char *text;
    int r;

    for (size_t p = 0; p < e->n_read_from; p++)
        json_array_append_new(offs, json_integer(e->read_from[p]));
    j = json_pack("{s:s, s:o}", "topic", e->bus ? bus_topic(e->bus, BUS_TOPIC_EVENTS) : "", "offsets", offs);
    text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    r = text ? store_meta_set(e->d.store, READ_FROM_KEY, text) : -ENOMEM;
    free(text);
    if (r == 0)
        e->read_from_dirty = false;
    return r;
}

/* The record for topic, if there is one for it. */
static void read_from_load(struct events *e, const char *topic)
{
    char *text = NULL;
    json_t *j, *offs;
    size_t i;
    json_t *v;

    free(e->read_from);
    e->read_from = NULL;
    e->n_read_from = 0;
    e->read_from_known = false;
    if (store_meta_get(e->d.store, READ_FROM_KEY, &text) < 0)
        return;
    j = json_loads(text, 0, NULL);
    free(text);
    offs = json_object_get(j, "offsets");
    if (json_is_string(json_object_get(j, "topic")) && !strcmp(json_string_value(json_object_get(j, "topic")), topic) &&
        json_is_array(offs) && (e->read_from = calloc(json_array_size(offs) + 1, sizeof(*e->read_from)))) {
        json_array_foreach(offs, i, v)
            e->read_from[i] = json_is_integer(v) ? json_integer_value(v) : -1;
        e->n_read_from = json_array_size(offs);
        e->read_from_known = true;
    }
    json_decref(j);
}

/* An acknowledged event sits at offset of partition: the next readback can
 * start after it (kept in memory, written with the deletes). */
static void read_from_raise(struct events *e, int32_t partition, int64_t offset)
{
    size_t p = (size_t)partition;

    if (partition < 0)
        return;
    if (p >= e->n_read_from) {
        int64_t *n = realloc(e->read_from, (p + 1) * sizeof(*n));
        if (!n)
            return;
        for (size_t i = e->n_read_from; i <= p; i++)
            n[i] = -1;
        e->read_from = n;
        e->n_read_from = p + 1;
    }
    if (offset + 1 > e->read_from[p]) {
        e->read_from[p] = offset + 1;
        e->read_from_dirty = true;
    }
}

static void delete_rows(struct events *e, const int64_t *ids, size_t n)
{
    struct store *s = e->d.store;
    bool tx = store_begin(s) == 0;

    for (size_t i = 0; i < n; i++) {
        sqlite3_bind_int64(e->del, 1, ids[i]);
        sqlite3_step(e->del);
        sqlite3_reset(e->del);
    }
    /* in the same transaction: a row deleted is never behind the record */
    if (e->read_from_dirty && e->read_from_known)
        read_from_save(e);
    if (tx && store_commit(s) < 0)
        log_warn("cannot delete acknowledged events; they will be sent again", "count=%zu", n);
}

static void delete_acked(struct events *e)
{
    if (e->n_acked)
        delete_rows(e, e->acked, e->n_acked);
    e->n_acked = 0;
}

static void on_ack_timer(uv_timer_t *t)
{
    delete_acked(t->data);
}

static void on_event_delivered(void *opaque, int64_t id, int err)
{
    struct events *e = opaque;

    e->in_flight--;
    if (!err && e->crash_on_ack) {
        /* Kafka holds the event, the outbox row is still there */
        log_warn("crash point reached: killing the agent", "point=events:acked outbox_id=%lld", (long long)id);
        raise(SIGKILL);
    }
    if (e->backlog) {
        e->backlog = false;
        events_flush(e); /* room in the queue again */
    }
    if (err && err != -EMSGSIZE && err != -EINVAL) {
        /* not acknowledged: the row stays and is sent again at the next
         * start (rewinding now would duplicate rows still in flight) */
        if (err != -ECANCELED)
            log_warn("event not delivered; kept in the outbox for the next start", "outbox_id=%lld error=%s",
                     (long long)id, strerror(-err));
        return;
    }
    if (err)
        log_error("event refused by the broker; dropped", "outbox_id=%lld error=%s", (long long)id,
                  strerror(-err));
    if (e->n_acked == e->cap_acked) {
        size_t ncap = e->cap_acked ? e->cap_acked * 2 : 256;
        int64_t *n = realloc(e->acked, ncap * sizeof(*n));
        if (!n) {
            delete_rows(e, &id, 1);
            return;
        }
        e->acked = n;
        e->cap_acked = ncap;
    }
    e->acked[e->n_acked++] = id;
    /* acknowledgements come in bursts: one transaction for the burst */
    if (e->ack_timer_open && !uv_is_active((uv_handle_t *)&e->ack_timer))
        uv_timer_start(&e->ack_timer, on_ack_timer, 0, 0);
    else if (!e->ack_timer_open)
        delete_acked(e);
}

static void on_event_placed(void *opaque, int64_t id, int32_t partition, int64_t offset)
{
    (void)id;
    read_from_raise(opaque, partition, offset);
}

static void on_bus_state(void *opaque, bool up)
{
    struct events *e = opaque;

    log_info(up ? "bus connected" : "bus unreachable; events wait in the outbox", NULL);
    if (up)
        events_flush(e);
}

static void on_bus_error(void *opaque, int err, bool fatal, const char *reason)
{
    struct events *e = opaque;

    if (e->d.metrics)
        metrics_bus_error(e->d.metrics, fatal);
    log_event(fatal ? LOG_ERROR : LOG_WARN, "bus error", "error=%s fatal=%s reason=%s", strerror(-err),
              fatal ? "yes" : "no", reason);
}

static json_t *heartbeat_json(struct events *e)
{
    char ts[32];
    json_t *j = json_object();

    format_rfc3339_ms(now_wall_ms(), ts);
    json_object_set_new(j, "host", json_string(e->cfg.host_name));
    json_object_set_new(j, "timestamp", json_string(ts));
    json_object_set_new(j, "hypervisor", json_string(e->cfg.hypervisor));
    json_object_set_new(j, "domain_type", json_string(hv_domain_type(e->d.hv)));
    json_object_set_new(j, "state", json_string(host_disabled(e->d.host) ? "disabled" : "enabled"));
    json_object_set_new(j, "version", json_string(CA_VERSION));
    json_object_set_new(j, "libvirt_connected", json_boolean(hv_connected(e->d.hv)));
    resources_to_json(e->d.res, e->d.store, j);
    return j;
}

static void on_heartbeat(uv_timer_t *t)
{
    struct events *e = t->data;
    json_t *j;
    char *text;

    if (!e->bus || !host_ready(e->d.host))
        return;
    j = heartbeat_json(e);
    text = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (text)
        bus_publish_heartbeat(e->bus, text, strlen(text));
    free(text);
}

static void start_readback(struct events *e);

/* Delete the outbox rows whose event is on the topic already; record the
 * ends as where the next readback starts. One transaction. */
static int drop_delivered(struct events *e, const struct bus_readback_result *res, size_t *dropped)
{
    struct store *s = e->d.store;
    sqlite3_stmt *st;
    int r = store_begin(s);

    *dropped = 0;
    if (r < 0)
        return r;
    if (res->n_ids && sqlite3_prepare_v2(store_db(s), "SELECT id, payload FROM outbox ORDER BY id", -1, &st,
                                         NULL) == SQLITE_OK) {
        while (sqlite3_step(st) == SQLITE_ROW) {
            const char *payload = (const char *)sqlite3_column_text(st, 1);
            json_t *j = payload ? json_loads(payload, 0, NULL) : NULL;
            const char *id = json_string_value(json_object_get(j, "event_id"));

            if (id && bus_readback_has(res, id)) {
                sqlite3_bind_int64(e->del, 1, sqlite3_column_int64(st, 0));
                sqlite3_step(e->del);
                sqlite3_reset(e->del);
                (*dropped)++;
            }
            json_decref(j);
        }
        sqlite3_finalize(st);
    }
    free(e->read_from);
    e->read_from = NULL;
    e->n_read_from = 0;
    if (res->n_parts && (e->read_from = malloc(res->n_parts * sizeof(*e->read_from)))) {
        memcpy(e->read_from, res->ends, res->n_parts * sizeof(*e->read_from));
        e->n_read_from = res->n_parts;
    }
    e->read_from_known = true;
    r = read_from_save(e);
    if (r < 0) {
        store_rollback(s);
        return r;
    }
    return store_commit(s);
}

static void on_read_timer(uv_timer_t *t)
{
    start_readback(t->data);
}

static void readback_give_up(struct events *e, const char *why)
{
    log_warn("cannot read the events topic back; events left by the last run may be sent twice",
             "attempts=%u error=%s", e->read_attempts, why);
    e->reading = false;
    events_flush(e);
}

static void readback_retry(struct events *e, const char *why)
{
    if (e->read_attempts >= READBACK_ATTEMPTS || !e->read_timer_open) {
        readback_give_up(e, why);
        return;
    }
    log_info("events topic not read back yet; retrying", "attempt=%u error=%s", e->read_attempts, why);
    uv_timer_start(&e->read_timer, on_read_timer, 2000ull << (e->read_attempts - 1), 0);
}

static void on_readback(void *opaque, const struct bus_readback_result *res)
{
    struct events *e = opaque;
    size_t dropped;
    int r;

    e->readback = NULL;
    if (!e->bus) { /* stopped meanwhile */
        e->reading = false;
        return;
    }
    if (res->err) {
        readback_retry(e, res->message);
        return;
    }
    r = drop_delivered(e, res, &dropped);
    if (r < 0) {
        readback_retry(e, strerror(-r));
        return;
    }
    log_info("events topic read back", "messages=%llu ours=%zu already_delivered=%zu partitions=%zu",
             (unsigned long long)res->messages, res->n_ids, dropped, res->n_parts);
    e->reading = false;
    events_flush(e);
}

/* Read back what the last run may have delivered without knowing it. */
static void start_readback(struct events *e)
{
    struct agent_error err = {0};
    struct bus_readback_config rc = {
        .bootstrap = bus_bootstrap_servers(e->bus),
        .host = e->cfg.host_name,
        .topic = bus_topic(e->bus, BUS_TOPIC_EVENTS),
        .properties = (const char *const *)e->props,
    };
    static const int64_t none;

    e->reading = true;
    e->read_attempts++;
    read_from_load(e, rc.topic);
    if (e->read_from_known) {
        /* an empty record still means "known": read every partition from its start */
        rc.from = e->read_from ? e->read_from : &none;
        rc.n_from = e->n_read_from;
    }
    if (bus_readback_start(e->loop, &rc, on_readback, e, &e->readback, &err) < 0)
        readback_retry(e, err.message);
}

/* "k=v,k=v" -> NULL-terminated array (empty items skipped). */
static char **split_props(const char *s)
{
    size_t n = 1;
    char **v;

    for (const char *p = s; *p; p++)
        n += *p == ',';
    v = calloc(n + 1, sizeof(*v));
    if (!v)
        return NULL;
    n = 0;
    while (*s) {
        size_t len = strcspn(s, ",");
        if (len)
            v[n++] = strndup(s, len);
        s += len;
        if (*s == ',')
            s++;
    }
    return v;
}

/* The bus's command callback: handed to the owner's hook, or committed
 * unread when there is none (a command no one takes must not block). */
static void on_command(void *opaque, const struct bus_message *msg)
{
    struct events *e = opaque;

    if (e->hooks.on_command)
        e->hooks.on_command(e->opaque, msg);
    else
        bus_command_commit(e->bus, msg);
}

int events_start(struct events *e, struct agent_error *err)
{
    struct bus_config bc = {0};
    static const struct bus_callbacks cb = {
        .on_command = on_command,
        .on_event_delivered = on_event_delivered,
        .on_event_placed = on_event_placed,
        .on_state = on_bus_state,
        .on_error = on_bus_error,
    };
    int r;

    if (e->cfg.bus_properties && e->cfg.bus_properties[0] && !(e->props = split_props(e->cfg.bus_properties)))
        return -ENOMEM;
    bc.brokers = e->cfg.bus_brokers;
    bc.topic_prefix = e->cfg.bus_prefix;
    bc.host = e->cfg.host_name;
    bc.properties = (const char *const *)e->props;
    r = bus_new(e->loop, &bc, &cb, e, &e->bus, err);
    if (r < 0)
        return r;
    log_info("bus started", "bootstrap_servers=%s mock=%s commands=%s events=%s", bus_bootstrap_servers(e->bus),
             e->cfg.bus_brokers[0] ? "no" : "yes", bus_topic(e->bus, BUS_TOPIC_COMMANDS),
             bus_topic(e->bus, BUS_TOPIC_EVENTS));
    uv_timer_init(e->loop, &e->heartbeat);
    e->heartbeat.data = e;
    e->heartbeat_open = true;
    uv_timer_init(e->loop, &e->ack_timer);
    e->ack_timer.data = e;
    e->ack_timer_open = true;
    uv_timer_init(e->loop, &e->read_timer);
    e->read_timer.data = e;
    e->read_timer_open = true;
    uv_timer_start(&e->heartbeat, on_heartbeat, 1000, (uint64_t)e->cfg.heartbeat_s * 1000);
    /* what a previous run left unacknowledged goes once the topic is read back */
    e->read_attempts = 0;
    start_readback(e);
    return 0;
}

struct bus *events_bus(struct events *e)
{
    return e ? e->bus : NULL;
}

void events_stop(struct events *e)
{
    if (!e)
        return;
    if (e->heartbeat_open) {
        uv_close((uv_handle_t *)&e->heartbeat, NULL);
        e->heartbeat_open = false;
    }
    bus_readback_cancel(e->readback); /* its callback will not run */
    e->readback = NULL;
    e->reading = false;
    if (e->read_timer_open) {
        uv_close((uv_handle_t *)&e->read_timer, NULL);
        e->read_timer_open = false;
    }
    if (e->ack_timer_open) {
        /* bus_free() below reports the last deliveries: delete them at once */
        uv_close((uv_handle_t *)&e->ack_timer, NULL);
        e->ack_timer_open = false;
    }
    delete_acked(e);
    if (e->bus) {
        struct bus *b = e->bus;
        e->bus = NULL;
        bus_free(b);
    }
    delete_acked(e);
}

void events_free(struct events *e)
{
    if (!e)
        return;
    delete_acked(e);
    free(e->acked);
    free(e->read_from);
    sqlite3_finalize(e->add);
    sqlite3_finalize(e->next);
    sqlite3_finalize(e->del);
    evwin_free(e->win);
    for (size_t i = 0; e->props && e->props[i]; i++)
        free(e->props[i]);
    free(e->props);
    free(e);
}

json_t *events_bus_json(struct events *e)
{    int64_t pending = 0;
    sqlite3_stmt *st;

    if (!e || !e->bus)
        return json_null();
    if (sqlite3_prepare_v2(store_db(e->d.store), "SELECT COUNT(*) FROM outbox", -1, &st, NULL) == SQLITE_OK) {
        if (sqlite3_step(st) == SQLITE_ROW)
            pending = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
    }
    return json_pack("{s:s, s:b, s:s, s:s, s:{s:s, s:s, s:s, s:s}, s:{s:I}}", "bootstrap_servers",
                     bus_bootstrap_servers(e->bus), "up", bus_is_up(e->bus), "prefix", e->cfg.bus_prefix,
                     "group_id", bus_group_id(e->bus), "topics", "commands",
                     bus_topic(e->bus, BUS_TOPIC_COMMANDS), "events", bus_topic(e->bus, BUS_TOPIC_EVENTS),
                     "heartbeat", bus_topic(e->bus, BUS_TOPIC_HEARTBEAT), "telemetry",
                     bus_topic(e->bus, BUS_TOPIC_TELEMETRY), "outbox", "pending", (json_int_t)pending);
}
