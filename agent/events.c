/* events.c: see events.h. */
#include "agent/events.h"

#include <stdlib.h>
#include <string.h>

#include "agent/bus.h"
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
};

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
    db = store_db(e->d.store);
    if (sqlite3_exec(db,
                     "CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY AUTOINCREMENT,"
                     " key TEXT, payload TEXT NOT NULL, created_ms INTEGER NOT NULL)",
                     NULL, NULL, NULL) != SQLITE_OK ||
        sqlite3_prepare_v3(db, "INSERT INTO outbox (key, payload, created_ms) VALUES (?1, ?2, ?3)", -1,
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
    *ret = e;
    return 0;
}

static int outbox_add(struct events *e, const char *key, json_t *payload)
{
    char *text = json_dumps(payload, JSON_COMPACT);
    int rc;

    json_decref(payload);
    if (!e || !text) {
        free(text);
        return e ? -ENOMEM : 0;
    }
    sqlite3_bind_text(e->add, 1, key, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(e->add, 2, text, -1, free);
    sqlite3_bind_int64(e->add, 3, now_wall_ms());
    rc = sqlite3_step(e->add);
    sqlite3_reset(e->add);
    sqlite3_clear_bindings(e->add);
    return rc == SQLITE_DONE ? 0 : -EIO;
}

static json_t *event_base(struct events *e, const char *event, const struct instance *inst,
                          const char *request_id)
{
    char ts[32];

    format_rfc3339_ms(now_wall_ms(), ts);
    return json_pack("{s:s, s:o, s:o, s:s, s:o, s:s}", "event", event, "instance_id",
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

void events_flush(struct events *e)
{
    sqlite3_stmt *st;

    if (!e || !e->bus)
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

static void delete_rows(struct events *e, const int64_t *ids, size_t n)
{
    struct store *s = e->d.store;
    bool tx = store_begin(s) == 0;

    for (size_t i = 0; i < n; i++) {
        sqlite3_bind_int64(e->del, 1, ids[i]);
        sqlite3_step(e->del);
        sqlite3_reset(e->del);
    }
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
    uv_timer_start(&e->heartbeat, on_heartbeat, 1000, (uint64_t)e->cfg.heartbeat_s * 1000);
    events_flush(e); /* what a previous run left unacknowledged */
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
    sqlite3_finalize(e->add);
    sqlite3_finalize(e->next);
    sqlite3_finalize(e->del);
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
