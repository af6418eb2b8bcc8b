/* consume.c: the command consumer: partitions and the commands handed out
 * from each, offsets committed in order, rebalances, leaving the group. */
#include "agent/bus/bus-private.h"

static void bus_offset_commit_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                                 rd_kafka_topic_partition_list_t *offsets,
                                 void *opaque)
{
    struct bus_client *c = opaque;
    struct bus *bus = c->bus;

    (void)rk;
    if (err == RD_KAFKA_RESP_ERR__NO_OFFSET)
        return;
    if (err == RD_KAFKA_RESP_ERR_NO_ERROR && offsets) {
        for (int i = 0; i < offsets->cnt; i++) {
            if (offsets->elems[i].err) {
                err = offsets->elems[i].err;
                break;
            }
        }
    }
    if (err) {
        bus->stats.commit_errors++;
        bus_report_error(bus, c->kind, err, false, "offset commit failed");
        return;
    }
    bus->stats.commits_done++;
}

/* Forget the commands of the partitions in list (all when list is NULL):
 * their offsets must no longer be committed by us. The commands stay valid
 * until the agent hands them back. */
void bus_parts_orphan(struct bus *bus,
                      const rd_kafka_topic_partition_list_t *list)
{
    struct bus_part *p, *ptmp;

    list_for_each_entry_safe(p, ptmp, &bus->parts, link) {
        struct bus_cmd *cmd, *ctmp;
        bool hit = !list;

        for (int i = 0; list && i < list->cnt; i++)
            if (list->elems[i].partition == p->partition &&
                strcmp(list->elems[i].topic, bus->topics[BUS_TOPIC_COMMANDS]) == 0)
                hit = true;
        if (!hit)
            continue;
        list_for_each_entry_safe(cmd, ctmp, &p->cmds, plink) {
            cmd->part = NULL;
            list_del(&cmd->plink);
        }
        list_del(&p->link);
        free(p);
    }
}

static void bus_rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                             rd_kafka_topic_partition_list_t *parts,
                             void *opaque)
{
    struct bus_client *c = opaque;
    struct bus *bus = c->bus;
    bool coop = strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE") == 0;
    rd_kafka_error_t *error = NULL;
    rd_kafka_resp_err_t e = RD_KAFKA_RESP_ERR_NO_ERROR;

    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        if (coop)
            error = rd_kafka_incremental_assign(rk, parts);
        else
            e = rd_kafka_assign(rk, parts);
    } else {
        bus_parts_orphan(bus, coop ? parts : NULL);
        if (coop)
            error = rd_kafka_incremental_unassign(rk, parts);
        else
            e = rd_kafka_assign(rk, NULL);
    }
    if (error) {
        e = rd_kafka_error_code(error);
        rd_kafka_error_destroy(error);
    }
    if (e)
        bus_report_error(bus, c->kind, e, false, "partition assignment failed");
}

static void bus_cmd_free(struct bus *bus, struct bus_cmd *cmd)
{
    (void)bus;
    list_del(&cmd->plink);
    list_del(&cmd->link);
    rd_kafka_message_destroy(cmd->rkm);
    free(cmd);
}

static struct bus_part *bus_part_get(struct bus *bus, int32_t partition)
{
    struct bus_part *p;

    list_for_each_entry(p, &bus->parts, link)
        if (p->partition == partition)
            return p;
    p = calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    p->partition = partition;
    list_init(&p->cmds);
    list_add_head(&bus->parts, &p->link);
    return p;
}

/* Takes m. */
void bus_consumer_message(struct bus *bus, rd_kafka_message_t *m)
{
    struct bus_client *c = &bus->clients[BUS_CLIENT_CONSUMER];
    rd_kafka_timestamp_type_t tstype;
    struct bus_part *part;
    struct bus_cmd *cmd;
    size_t klen;

    if (m->err) {
        if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
            bus_report_error(bus, c->kind, m->err, false,
                             rd_kafka_message_errstr(m));
        rd_kafka_message_destroy(m);
        return;
    }
    if (!c->up) {
        c->up = true;
        bus_state_update(bus);
    }
    klen = m->key ? m->key_len : 0;
    part = bus_part_get(bus, m->partition);
    cmd = part ? calloc(1, sizeof(*cmd) + klen + 1) : NULL;
    if (!cmd) {
        /* Not handed out, not committed: it comes back with the next
         * consumer, which the agent makes after this fatal error. */
        rd_kafka_message_destroy(m);
        bus_report_error(bus, c->kind, RD_KAFKA_RESP_ERR__CRIT_SYS_RESOURCE,
                         true, "out of memory for a command");
        return;
    }
    cmd->rkm = m;
    cmd->part = part;
    if (m->key) {
        memcpy(cmd->key, m->key, klen);
        cmd->msg.key = cmd->key;
        cmd->msg.key_len = klen;
    }
    cmd->msg.len = m->len;
    cmd->msg.oversized = m->len > bus->max_command_bytes;
    cmd->msg.payload = cmd->msg.oversized ? NULL : m->payload;
    cmd->msg.topic = bus->topics[BUS_TOPIC_COMMANDS];
    cmd->msg.partition = m->partition;
    cmd->msg.offset = m->offset;
    cmd->msg.timestamp_ms = rd_kafka_message_timestamp(m, &tstype);

    list_add_tail(&part->cmds, &cmd->plink);
    list_add_head(&bus->cmds, &cmd->link);

    bus->stats.commands_received++;
    if (cmd->msg.oversized)
        bus->stats.commands_oversized++;
    bus->cb.on_command(bus->opaque, &cmd->msg);
}

int bus_command_commit(struct bus *bus, const struct bus_message *msg)
{
    struct bus_cmd *cmd = (struct bus_cmd *)msg;
    struct bus_part *part;
    struct bus_cmd *h;
    rd_kafka_topic_partition_list_t *list;
    rd_kafka_resp_err_t e;
    int64_t next = -1;

    if (!bus || !msg)
        return -EINVAL;
    if (bus->closing)
        return -ESHUTDOWN; /* bus_free() already released every command */
    part = cmd->part;
    if (!part) {
        bus_cmd_free(bus, cmd);
        return -ESTALE;
    }
    cmd->done = true;
    while ((h = list_first_entry_or_null(&part->cmds, struct bus_cmd, plink)) && h->done) {
        next = h->msg.offset + 1;
        bus_cmd_free(bus, h);
    }
    if (next < 0)
        return 0; /* an earlier command of this partition is still open */

    list = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(list, bus->topics[BUS_TOPIC_COMMANDS],
                                      part->partition)
        ->offset = next;
    e = rd_kafka_commit(bus->clients[BUS_CLIENT_CONSUMER].rk, list, 1);
    rd_kafka_topic_partition_list_destroy(list);
    if (e) {
        bus->stats.commit_errors++;
        return bus_errno(e);
    }
    return 0;
}

int bus_start_consumer(struct bus *bus, const struct bus_config *cfg,
                       struct agent_error *err)
{
    _cleanup_(rd_kafka_conf_destroyp) rd_kafka_conf_t *conf = NULL;
    rd_kafka_topic_partition_list_t *topics;
    rd_kafka_resp_err_t e;
    int r;

    r = bus_conf_new(bus, BUS_CLIENT_CONSUMER, &conf, err);
    if (r < 0)
        return r;
    /* session/heartbeat: short enough for librdkafka 2.0.2's mock cluster,
     * where a departed member lingers until its session times out. */
    if ((r = bus_conf_set(conf, "auto.offset.reset", "earliest", "bus", err)) < 0 ||
        (r = bus_conf_set(conf, "session.timeout.ms", "6000", "bus", err)) < 0 ||
        (r = bus_conf_set(conf, "heartbeat.interval.ms", "500", "bus", err)) < 0 ||
        (r = bus_conf_set(conf, "allow.auto.create.topics", "true", "bus", err)) < 0 ||
        (r = bus_conf_set_int(conf, "statistics.interval.ms",
                              cfg->state_interval_ms > 0
                                  ? cfg->state_interval_ms
                                  : BUS_DEFAULT_STATE_INTERVAL_MS,
                              err)) < 0)
        return r;
    /* librdkafka 2.0.2's mock broker answers a fetch only when its wait
     * expires, not when data arrives: keep a lone command's latency short
     * (a real broker answers on arrival, the default 500 ms is right). */
    if (bus->mock && (r = bus_conf_set(conf, "fetch.wait.max.ms", "100", "bus", err)) < 0)
        return r;
    r = bus_conf_apply_user(conf, BUS_CLIENT_CONSUMER, cfg->properties, err);
    if (r < 0)
        return r;
    /* Owned by the bus: offsets move only through bus_command_commit(). */
    if ((r = bus_conf_set(conf, "group.id", bus->group_id, "host", err)) < 0 ||
        (r = bus_conf_set(conf, "enable.auto.commit", "false", "bus", err)) < 0 ||
        (r = bus_conf_set(conf, "enable.auto.offset.store", "false", "bus", err)) < 0)
        return r;
    rd_kafka_conf_set_stats_cb(conf, bus_stats_cb);
    rd_kafka_conf_set_rebalance_cb(conf, bus_rebalance_cb);
    rd_kafka_conf_set_offset_commit_cb(conf, bus_offset_commit_cb);
    r = bus_client_start(bus, BUS_CLIENT_CONSUMER, TAKE_PTR(conf), err);
    if (r < 0)
        return r;

    topics = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(topics, bus->topics[BUS_TOPIC_COMMANDS],
                                      RD_KAFKA_PARTITION_UA);
    e = rd_kafka_subscribe(bus->clients[BUS_CLIENT_CONSUMER].rk, topics);
    rd_kafka_topic_partition_list_destroy(topics);
    if (e)
        return agent_error_set(err, -bus_errno(e), "internal", NULL,
                               "cannot subscribe to %s: %s",
                               bus->topics[BUS_TOPIC_COMMANDS],
                               rd_kafka_err2str(e));
    return 0;
}

void bus_consumer_close(struct bus *bus, int timeout_ms)
{
    struct bus_client *c = &bus->clients[BUS_CLIENT_CONSUMER];
    uint64_t deadline = now_mono_ns() + (uint64_t)timeout_ms * 1000000u;
    rd_kafka_queue_t *q;
    rd_kafka_error_t *error;
    bool closed = false;

    if (!c->rk)
        return;
    /* Messages must go before their consumer; their offsets stay
     * uncommitted and the commands come back to the next member. */
    bus_parts_orphan(bus, NULL);
    while (!list_empty(&bus->cmds))
        bus_cmd_free(bus, list_entry(bus->cmds.next, struct bus_cmd, link));
    bus_client_unhook(c);

    q = rd_kafka_queue_new(c->rk);
    error = rd_kafka_consumer_close_queue(c->rk, q);
    if (error) {
        rd_kafka_error_destroy(error);
    } else {
        /* Serve the close (rebalance callbacks, pending commit results)
         * until done or out of time. */
        while (!(closed = rd_kafka_consumer_closed(c->rk)) &&
               bus_remaining_ms(deadline) > 0) {
            int wait = bus_remaining_ms(deadline);
            rd_kafka_message_t *m =
                rd_kafka_consume_queue(q, wait < 100 ? wait : 100);

            if (m)
                rd_kafka_message_destroy(m);
        }
    }
    rd_kafka_queue_destroy(q);
    rd_kafka_destroy_flags(c->rk, closed ? 0 : RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    c->rk = NULL;
}
