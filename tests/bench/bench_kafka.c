/* bench_kafka: launch+terminate round trips through Kafka, driven by a C
 * librdkafka client (commands produced to compute.<host>, instance.running
 * and instance.terminated events consumed from compute.events), beside the
 * same round trips through the REST API (202, then the operation
 * long-polled) in the same run, against one agent on the test driver with
 * its embedded mock cluster. Usage: bench_kafka BUILD_DIR [N] */
#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <stdint.h>

#include "tests/bench/bench-util.h"

static rd_kafka_t *make_client(rd_kafka_type_t type, const char *bs, const char *group)
{
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();

    rd_kafka_conf_set(conf, "bootstrap.servers", bs, err, sizeof(err));
    if (type == RD_KAFKA_PRODUCER) {
        rd_kafka_conf_set(conf, "linger.ms", "1", err, sizeof(err));
    } else {
        rd_kafka_conf_set(conf, "group.id", group, err, sizeof(err));
        rd_kafka_conf_set(conf, "auto.offset.reset", "latest", err, sizeof(err));
        rd_kafka_conf_set(conf, "enable.auto.commit", "false", err, sizeof(err));
        rd_kafka_conf_set(conf, "session.timeout.ms", "6000", err, sizeof(err));
        rd_kafka_conf_set(conf, "heartbeat.interval.ms", "500", err, sizeof(err));
        rd_kafka_conf_set(conf, "fetch.wait.max.ms", "5", err, sizeof(err));
    }
    rd_kafka_t *rk = rd_kafka_new(type, conf, err, sizeof(err));
    if (!rk) {
        fprintf(stderr, "rd_kafka_new: %s\n", err);
        exit(1);
    }
    if (type == RD_KAFKA_CONSUMER)
        rd_kafka_poll_set_consumer(rk);
    return rk;
}

/* Consume until `want` events named `event` whose request_id starts with
 * tag; collect their instance ids (if ids). Returns how many arrived. */
static int collect(rd_kafka_t *c, const char *event, const char *tag, int want, char (*ids)[40], double deadline)
{
    int got = 0;
    char ev[64], rid[64];

    snprintf(ev, sizeof(ev), "\"event\":\"%s\"", event);
    snprintf(rid, sizeof(rid), "\"request_id\":\"%s", tag);
    while (got < want && bench_now() < deadline) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(c, 100);
        if (!m)
            continue;
        if (!m->err && m->len && memmem(m->payload, m->len, ev, strlen(ev)) &&
            memmem(m->payload, m->len, rid, strlen(rid))) {
            if (ids) {
                json_t *j = json_loadb(m->payload, m->len, 0, NULL);
                snprintf(ids[got], 40, "%s", json_string_value(json_object_get(j, "instance_id")));
                json_decref(j);
            }
            got++;
        }
        rd_kafka_message_destroy(m);
    }
    return got;
}

struct rest_client {
    const char *sock;
    const char *body;         /* the launch body */
    int n;
    int done;
};

static void *rest_main(void *arg)
{
    struct rest_client *rc = arg;
    CURL *c = curl_easy_init();
    char url[256];
    long st;

    curl_easy_setopt(c, CURLOPT_UNIX_SOCKET_PATH, rc->sock);
    for (int i = 0; i < rc->n; i++) {
        json_t *r = bench_call(c, "POST", "http://localhost/v1/instances", rc->body, &st), *w;
        const char *id = json_string_value(json_object_get(json_object_get(r, "instance"), "id"));
        const char *op = json_string_value(json_object_get(json_object_get(r, "operation"), "id"));
        char iid[40];
        if (st != 202 || !id || !op) {
            json_decref(r);
            continue;
        }
        snprintf(iid, sizeof(iid), "%s", id);
        snprintf(url, sizeof(url), "http://localhost/v1/operations/%s?wait=60", op);
        json_decref(r);
        json_decref(bench_call(c, "GET", url, NULL, &st));
        snprintf(url, sizeof(url), "http://localhost/v1/instances/%s", iid);
        r = bench_call(c, "DELETE", url, NULL, &st);
        op = json_string_value(json_object_get(json_object_get(r, "operation"), "id"));
        if (op) {
            snprintf(url, sizeof(url), "http://localhost/v1/operations/%s?wait=60", op);
            w = bench_call(c, "GET", url, NULL, &st);
            if (w && !strcmp(json_string_value(json_object_get(w, "state")) ?: "", "succeeded"))
                rc->done++;
            json_decref(w);
        }
        json_decref(r);
    }
    curl_easy_cleanup(c);
    return NULL;
}

int main(int argc, char **argv)
{
    const char *build = argc > 1 ? argv[1] : "build";
    int n = argc > 2 ? (int)strtol(argv[2], NULL, 10) : 1000;
    char dir[] = "/tmp/ca-bench-kafka-XXXXXX", sock[600], tag[64], body[1024], kernel[512];
    char launch[1024];
    char (*ids)[40] = calloc((size_t)n, sizeof(*ids));
    double t0, t1, t2, rest_s;
    int running, terminated, rest_done = 0;
    struct rest_client rc[8];
    pthread_t th[8];
    rd_kafka_t *p, *c;
    rd_kafka_topic_partition_list_t *topics;
    const char *bs;
    json_t *host;
    long st;
    pid_t agent;
    CURL *cu;

    if (n < 8 || !ids || !mkdtemp(dir))
        return 2;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    agent = bench_start_agent(build, dir, sock, sizeof(sock), "bench-kafka");
    bench_kernel_path(dir, kernel, sizeof(kernel));
    snprintf(launch, sizeof(launch),
             "{\"name\":\"b\",\"flavor\":{\"vcpus\":1,\"memory_mb\":64,\"disk_gb\":0},"
             "\"kernel\":{\"path\":\"%s\"}}", kernel);
    cu = curl_easy_init();
    curl_easy_setopt(cu, CURLOPT_UNIX_SOCKET_PATH, sock);
    host = bench_call(cu, "GET", "http://localhost/v1/host", NULL, &st);
    bs = json_string_value(json_object_get(json_object_get(host, "bus"), "bootstrap_servers"));
    if (!bs) {
        fprintf(stderr, "no bus in GET /v1/host\n");
        kill(agent, SIGKILL);
        return 1;
    }
    p = make_client(RD_KAFKA_PRODUCER, bs, NULL);
    c = make_client(RD_KAFKA_CONSUMER, bs, "bench-kafka-events");
    topics = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(topics, "compute.events", RD_KAFKA_PARTITION_UA);
    rd_kafka_subscribe(c, topics);
    rd_kafka_topic_partition_list_destroy(topics);
    /* join the group and reach the end of the topic before timing */
    for (double end = bench_now() + 15; bench_now() < end;) {
        rd_kafka_topic_partition_list_t *a = NULL;
        rd_kafka_message_t *m = rd_kafka_consumer_poll(c, 100);
        if (m)
            rd_kafka_message_destroy(m);
        if (rd_kafka_assignment(c, &a) == 0 && a && a->cnt > 0) {
            rd_kafka_topic_partition_list_destroy(a);
            break;
        }
        if (a)
            rd_kafka_topic_partition_list_destroy(a);
    }
    snprintf(tag, sizeof(tag), "kb-%ld", (long)time(NULL));
    t0 = bench_now();
    for (int i = 0; i < n; i++) {
        int len = snprintf(body, sizeof(body),
                           "{\"op\":\"launch\",\"request_id\":\"%s-l%d\",\"instance\":%s}", tag, i, launch);
        while (rd_kafka_producev(p, RD_KAFKA_V_TOPIC("compute.bench-kafka"), RD_KAFKA_V_VALUE(body, (size_t)len),
                                 RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END) != 0)
            rd_kafka_poll(p, 10);
        rd_kafka_poll(p, 0);
    }
    rd_kafka_flush(p, 10000);
    running = collect(c, "instance.running", tag, n, ids, bench_now() + 120);
    t1 = bench_now();
    for (int i = 0; i < running; i++) {
        int len = snprintf(body, sizeof(body), "{\"op\":\"terminate\",\"request_id\":\"%s-t%d\",\"instance_id\":\"%s\"}",
                           tag, i, ids[i]);
        while (rd_kafka_producev(p, RD_KAFKA_V_TOPIC("compute.bench-kafka"), RD_KAFKA_V_VALUE(body, (size_t)len),
                                 RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END) != 0)
            rd_kafka_poll(p, 10);
        rd_kafka_poll(p, 0);
    }
    rd_kafka_flush(p, 10000);
    terminated = collect(c, "instance.terminated", tag, running, NULL, bench_now() + 120);
    t2 = bench_now();
    rd_kafka_consumer_close(c);
    rd_kafka_destroy(c);
    rd_kafka_destroy(p);

    /* the same through REST, 8 clients */
    rest_s = bench_now();
    for (int t = 0; t < 8; t++) {
        rc[t] = (struct rest_client){.sock = sock, .body = launch, .n = n / 8 + (t < n % 8)};
        pthread_create(&th[t], NULL, rest_main, &rc[t]);
    }
    for (int t = 0; t < 8; t++) {
        pthread_join(th[t], NULL);
        rest_done += rc[t].done;
    }
    rest_s = bench_now() - rest_s;
    json_decref(host);
    curl_easy_cleanup(cu);
    kill(agent, SIGTERM);
    waitpid(agent, NULL, 0);

    printf("== bench_kafka: %d launch+terminate round trips, test driver, embedded mock cluster ==\n", n);
    printf("%-46s %8s %9s %9s\n", "path", "done", "seconds", "per s");
    printf("%-46s %8d %9.2f %9.0f\n", "Kafka: commands in, events out (C client)", terminated, t2 - t0,
           terminated / (t2 - t0));
    printf("%-46s %8d %9.2f %9.0f\n", "  launches alone (instance.running)", running, t1 - t0, running / (t1 - t0));
    printf("%-46s %8d %9.2f %9.0f\n", "REST: 202 + long-poll, 8 clients", rest_done, rest_s, rest_done / rest_s);
    printf("%-46s %8s %9s %9.2f\n", "ratio Kafka / REST", "", "", (terminated / (t2 - t0)) / (rest_done / rest_s));
    printf("target: >= 500 round trips/s through Kafka\n");
    return terminated == n && rest_done == n ? 0 : 1;
}
