/* bus/readback.c: read this host's events back from the events topic
 * (bus-readback.h). Runs on a thread of its own: every librdkafka call here
 * blocks, with a deadline. */
#include "agent/bus-readback.h"

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"

#define READBACK_DEFAULT_TIMEOUT_MS 30000

/* Two owners: the loop side (until its uv_async is closed) and the reading
 * thread (until it has finished); the last to let go frees it. The thread
 * is detached and not libuv's pool: a blocked librdkafka call (a broker
 * that went away mid-request waits out socket.timeout.ms) must not hold the
 * loop open at shutdown. */
struct bus_readback {
    uv_async_t async;             /* the thread's "done", on the loop */
    atomic_int refs;
    pthread_mutex_t lock;
    bool abandoned;               /* cancelled: no done(), no async_send */
    atomic_bool cancelled;        /* bus_readback_cancel(): stop soon */
    bus_readback_cb done;
    void *opaque;
    char *bootstrap, *host, *topic;
    char **props;
    int64_t *from;
    size_t n_from;
    int timeout_ms;
    struct bus_readback_result res;
    size_t cap_ids;
};

static void readback_free(struct bus_readback *rb)
{
    for (size_t i = 0; rb->props && rb->props[i]; i++)
        free(rb->props[i]);
    free(rb->props);
    for (size_t i = 0; i < rb->res.n_ids; i++)
        free(rb->res.event_ids[i]);
    free(rb->res.event_ids);
    free(rb->res.ends);
    free(rb->from);
    free(rb->bootstrap);
    free(rb->host);
    free(rb->topic);
    free(rb);
}

static int fail(struct bus_readback *rb, int errnum, const char *what, const char *detail)
{
    rb->res.err = -errnum;
    if (snprintf(rb->res.message, sizeof(rb->res.message), "%s: %s", what, detail) >=
        (int)sizeof(rb->res.message))
        rb->res.message[sizeof(rb->res.message) - 1] = '\0'; /* cut: still says what */
    return -errnum;
}

static int64_t mono_ms(void)
{
    return (int64_t)(now_mono_ns() / 1000000);
}

static int64_t left_ms(int64_t deadline)
{
    int64_t l = deadline - mono_ms();

    return l > 0 ? l : 0;
}

/* The wait for one blocking call: short, so a cancel is seen soon; 0 when
 * the reading must stop (cancelled, or the deadline passed). */
static int step_ms(struct bus_readback *rb, int64_t deadline)
{
    int64_t l = left_ms(deadline);

    if (atomic_load(&rb->cancelled))
        return 0;
    return (int)(l < 1000 ? l : 1000);
}

/* One message: keep its event id if this host sent it. */
static void take(struct bus_readback *rb, const rd_kafka_message_t *m)
{
    json_t *j = json_loadb(m->payload, m->len, 0, NULL);
    const char *host = json_string_value(json_object_get(j, "host"));
    const char *id = json_string_value(json_object_get(j, "event_id"));

    rb->res.messages++;
    if (host && id && !strcmp(host, rb->host)) {
        if (rb->res.n_ids == rb->cap_ids) {
            size_t ncap = rb->cap_ids ? rb->cap_ids * 2 : 64;
            char **n = realloc(rb->res.event_ids, ncap * sizeof(*n));
            if (!n)
                goto out;
            rb->res.event_ids = n;
            rb->cap_ids = ncap;
        }
        if ((rb->res.event_ids[rb->res.n_ids] = strdup(id)))
            rb->res.n_ids++;
    }
out:
    json_decref(j);
}

/* Learn the partitions and their ends; then read [start, end) of each. */
static int read_topic(struct bus_readback *rb, rd_kafka_t *rk, int64_t deadline)
{
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, rb->topic, NULL);
    rd_kafka_topic_partition_list_t *asg = NULL;
    rd_kafka_resp_err_t e;
    int64_t *pos = NULL;
    size_t n, open = 0;
    int r = 0;

    if (!rkt)
        return fail(rb, ENOMEM, "topic handle", rd_kafka_err2str(rd_kafka_last_error()));
    do
        e = rd_kafka_metadata(rk, 0, rkt, &md, step_ms(rb, deadline) ?: 1);
    while (e == RD_KAFKA_RESP_ERR__TIMED_OUT && step_ms(rb, deadline));
    if (e) {
        r = fail(rb, EAGAIN, "metadata", rd_kafka_err2str(e));
        goto out;
    }
    if (md->topic_cnt != 1 || md->topics[0].err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) {
        rb->res.n_parts = 0; /* no topic yet: nothing was ever sent to it */
        goto out;
    }
    if (md->topics[0].err) {
        r = fail(rb, EAGAIN, "metadata", rd_kafka_err2str(md->topics[0].err));
        goto out;
    }
    n = (size_t)md->topics[0].partition_cnt;
    rb->res.ends = calloc(n ? n : 1, sizeof(*rb->res.ends));
    pos = calloc(n ? n : 1, sizeof(*pos));
    asg = rd_kafka_topic_partition_list_new((int)(n ? n : 1));
    if (!rb->res.ends || !pos || !asg) {
        r = fail(rb, ENOMEM, "readback", "out of memory");
        goto out;
    }
    rb->res.n_parts = n;
    for (size_t p = 0; p < n; p++) {
        int64_t lo, hi, start;

        do
            e = rd_kafka_query_watermark_offsets(rk, rb->topic, (int32_t)p, &lo, &hi, step_ms(rb, deadline) ?: 1);
        while (e == RD_KAFKA_RESP_ERR__TIMED_OUT && step_ms(rb, deadline));
        if (e) {
            r = fail(rb, EAGAIN, "watermarks", rd_kafka_err2str(e));
            goto out;
        }
        rb->res.ends[p] = hi;
        if (!rb->from)
            continue; /* nothing recorded: only the ends are wanted */
        start = p < rb->n_from && rb->from[p] >= 0 ? rb->from[p] : lo;
        if (start < lo)
            start = lo;
        if (start >= hi)
            continue;
        pos[p] = start;
        rd_kafka_topic_partition_list_add(asg, rb->topic, (int32_t)p)->offset = start;
        open++;
    }
    if (!open)
        goto out;
    e = rd_kafka_assign(rk, asg);
    if (e) {
        r = fail(rb, EIO, "assign", rd_kafka_err2str(e));
        goto out;
    }
    while (open) {
        rd_kafka_message_t *m;
        int l = step_ms(rb, deadline);

        if (!l) {
            r = fail(rb, atomic_load(&rb->cancelled) ? ECANCELED : ETIMEDOUT, "reading the events topic back",
                     atomic_load(&rb->cancelled) ? "cancelled" : "deadline passed");
            break;
        }
        m = rd_kafka_consumer_poll(rk, l < 200 ? l : 200);
        if (!m)
            continue;
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF || !m->err) {
            size_t p = (size_t)m->partition;

            if (!m->err)
                take(rb, m);
            if (p < n && pos[p] < rb->res.ends[p]) {
                pos[p] = m->err ? m->offset : m->offset + 1;
                if (pos[p] >= rb->res.ends[p])
                    open--;
            }
        } else if (m->err != RD_KAFKA_RESP_ERR__TRANSPORT && m->err != RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN) {
            r = fail(rb, EIO, "reading the events topic back", rd_kafka_message_errstr(m));
            rd_kafka_message_destroy(m);
            break;
        }
        rd_kafka_message_destroy(m);
    }
out:
    if (asg)
        rd_kafka_topic_partition_list_destroy(asg);
    free(pos);
    if (md)
        rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(rkt);
    return r;
}

/* librdkafka's own lines would go to stderr, outside the agent's log format;
 * what matters comes back in the result instead. */
static void quiet_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    (void)rk;
    (void)level;
    (void)fac;
    (void)buf;
}

static void readback_unref(struct bus_readback *rb)
{
    if (atomic_fetch_sub(&rb->refs, 1) == 1) {
        pthread_mutex_destroy(&rb->lock);
        readback_free(rb);
    }
}

static void readback_run(struct bus_readback *rb)
{
    struct agent_error err = {0};
    rd_kafka_conf_t *conf = NULL;
    int64_t deadline = mono_ms() + rb->timeout_ms;
    char errstr[256];
    rd_kafka_t *rk;

    if (bus_reader_conf_new(rb->bootstrap, rb->host, (const char *const *)rb->props, &conf, &err) < 0) {
        fail(rb, EINVAL, "consumer configuration", err.message);
        return;
    }
    rd_kafka_conf_set_log_cb(conf, quiet_log);
    rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        fail(rb, EIO, "consumer", errstr);
        return;
    }
    rd_kafka_poll_set_consumer(rk);
    read_topic(rb, rk, deadline);
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
}

static void *readback_thread(void *arg)
{
    struct bus_readback *rb = arg;

    readback_run(rb);
    pthread_mutex_lock(&rb->lock);
    if (!rb->abandoned)
        uv_async_send(&rb->async);
    pthread_mutex_unlock(&rb->lock);
    readback_unref(rb);
    return NULL;
}

static void on_closed(uv_handle_t *h)
{
    readback_unref(h->data);
}

static void on_done(uv_async_t *a)
{
    struct bus_readback *rb = a->data;

    pthread_mutex_lock(&rb->lock);
    rb->abandoned = true; /* once */
    pthread_mutex_unlock(&rb->lock);
    rb->done(rb->opaque, &rb->res);
    uv_close((uv_handle_t *)&rb->async, on_closed);
}

static char **copy_props(const char *const *props)
{
    size_t n = 0;
    char **v;

    while (props && props[n])
        n++;
    v = calloc(n + 1, sizeof(*v));
    for (size_t i = 0; v && i < n; i++) {
        if (!(v[i] = strdup(props[i]))) {
            while (i--)
                free(v[i]);
            free(v);
            return NULL;
        }
    }
    return v;
}

int bus_readback_start(uv_loop_t *loop, const struct bus_readback_config *cfg,
                       bus_readback_cb done, void *opaque, struct bus_readback **handle,
                       struct agent_error *err)
{
    struct bus_readback *rb = calloc(1, sizeof(*rb));

    if (!rb)
        return agent_error_set(err, ENOMEM, "internal", NULL, "out of memory");
    rb->done = done;
    rb->opaque = opaque;
    rb->timeout_ms = cfg->timeout_ms > 0 ? cfg->timeout_ms : READBACK_DEFAULT_TIMEOUT_MS;
    rb->bootstrap = strdup(cfg->bootstrap);
    rb->host = strdup(cfg->host);
    rb->topic = strdup(cfg->topic);
    rb->props = copy_props(cfg->properties);
    if (cfg->from) {
        rb->n_from = cfg->n_from;
        rb->from = malloc((cfg->n_from ? cfg->n_from : 1) * sizeof(*rb->from));
        if (rb->from && cfg->n_from)
            memcpy(rb->from, cfg->from, cfg->n_from * sizeof(*rb->from));
    }
    if (!rb->bootstrap || !rb->host || !rb->topic || !rb->props || (cfg->from && !rb->from)) {
        readback_free(rb);
        return agent_error_set(err, ENOMEM, "internal", NULL, "out of memory");
    }
    pthread_mutex_init(&rb->lock, NULL);
    if (uv_async_init(loop, &rb->async, on_done) < 0) {
        pthread_mutex_destroy(&rb->lock);
        readback_free(rb);
        return agent_error_set(err, EAGAIN, "internal", NULL, "cannot start the events readback");
    }
    rb->async.data = rb;
    atomic_store(&rb->refs, 2);
    {
        pthread_attr_t at;
        pthread_t t;
        int r;

        pthread_attr_init(&at);
        pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
        r = pthread_create(&t, &at, readback_thread, rb);
        pthread_attr_destroy(&at);
        if (r) {
            atomic_store(&rb->refs, 1);
            rb->abandoned = true;
            uv_close((uv_handle_t *)&rb->async, on_closed);
            return agent_error_set(err, r, "internal", NULL, "cannot start the events readback: %s",
                                   strerror(r));
        }
    }
    if (handle)
        *handle = rb;
    return 0;
}

void bus_readback_cancel(struct bus_readback *rb)
{
    bool was;

    if (!rb)
        return;
    atomic_store(&rb->cancelled, true);
    pthread_mutex_lock(&rb->lock);
    was = rb->abandoned;
    rb->abandoned = true;
    pthread_mutex_unlock(&rb->lock);
    if (!was) /* done() has not run: it never will; the thread finishes alone */
        uv_close((uv_handle_t *)&rb->async, on_closed);
}

bool bus_readback_has(const struct bus_readback_result *res, const char *id)
{
    for (size_t i = 0; i < res->n_ids; i++)
        if (!strcmp(res->event_ids[i], id))
            return true;
    return false;
}
