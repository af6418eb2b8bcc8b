/* bench-resize-test: live resizes per second through the agent's REST API on
 * libvirt's test driver (issue 12), beside raw libvirt doing the same calls in
 * the same run. N resizes (default 1000) alternate 1 <-> 2 vCPUs and 256 <->
 * 512 MiB, spread over INST instances (default 8) by THREADS clients (default
 * 4): each client owns INST/THREADS instances and goes round them, so a few
 * resizes are in flight at once, at most one per instance. Each agent resize
 * is POST /v1/instances/ID/actions {"action":"resize","flavor":{..},"mode":
 * "live"} and a long-poll of its operation until it succeeded. The raw
 * baseline: the same number of test:///default domains (the same headroom:
 * <vcpu current='1'>4</vcpu>, 2048 MiB <memory>, 256 MiB <currentMemory>),
 * the same clients; each resize is a lookup by UUID then
 * virDomainSetVcpusFlags LIVE, CONFIG and virDomainSetMemoryFlags LIVE,
 * CONFIG (the target's baseline), and again with LIVE|CONFIG in one call each
 * (what the agent sends; shown too). Target: agent >= 0.5x raw.
 * Usage: bench-resize-test BUILD_DIR [N] [INST] [THREADS] */
#include <curl/curl.h>
#include <jansson.h>
#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/bench/bench-util.h"

#define MAXI 256

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(double *v, int n, double p)
{
    qsort(v, (size_t)n, sizeof(double), cmp_double);
    return v[(int)(p * (n - 1))];
}

struct client {
    const char *sock;       /* agent: its API socket; raw: NULL */
    int full;               /* raw: + metadata and the size read back */
    char (*ids)[40];        /* the instances' (domains') UUIDs */
    int *big;               /* per instance: 1 while it has the larger size */
    int ifrom, ito;         /* the instances this client owns */
    int from, to;           /* the resizes it does (indexes into lat) */
    double *lat;
    int failures;
};

static const unsigned vcpus[2] = {2, 1};
static const unsigned mem_mb[2] = {512, 256};

/* The k-th resize of a client's instance: up on even k, down on odd. */
static const char full_meta[] = "<size vcpus='2' memory_mb='512'/>";

static int raw_resize(virConnectPtr conn, const char *uuid, int up, int full)
{
    virDomainPtr dom = virDomainLookupByUUIDString(conn, uuid);
    int r = -1;
    unsigned v = vcpus[!up];
    unsigned long kib = mem_mb[!up] * 1024UL;

    if (!dom)
        return -1;
    r = (virDomainSetVcpusFlags(dom, v, VIR_DOMAIN_AFFECT_LIVE) < 0 ||
         virDomainSetVcpusFlags(dom, v, VIR_DOMAIN_AFFECT_CONFIG) < 0 ||
         virDomainSetMemoryFlags(dom, kib, VIR_DOMAIN_AFFECT_LIVE) < 0 ||
         virDomainSetMemoryFlags(dom, kib, VIR_DOMAIN_AFFECT_CONFIG) < 0)
            ? -1 : 0;
    if (!r && full) {
        /* the rest of the agent's libvirt work: its metadata, the size read back */
        virDomainInfo info;
        r = (virDomainSetMetadata(dom, VIR_DOMAIN_METADATA_ELEMENT, full_meta, "ca", "urn:bench:resize",
                                  VIR_DOMAIN_AFFECT_LIVE | VIR_DOMAIN_AFFECT_CONFIG) < 0 ||
             virDomainGetInfo(dom, &info) < 0 || virDomainGetVcpusFlags(dom, VIR_DOMAIN_AFFECT_LIVE) < 0)
                ? -1 : 0;
    }
    virDomainFree(dom);
    return r;
}

static int agent_resize(CURL *c, const char *id, int up)
{
    char url[256], body[256], wurl[256];
    long st;
    json_t *j, *w;
    const char *op, *state;
    int ok;

    snprintf(url, sizeof(url), "http://localhost/v1/instances/%s/actions", id);
    snprintf(body, sizeof(body),
             "{\"action\":\"resize\",\"flavor\":{\"vcpus\":%u,\"memory_mb\":%u},\"mode\":\"live\"}",
             vcpus[!up], mem_mb[!up]);
    j = bench_call(c, "POST", url, body, &st);
    if (!j || st != 202) {
        if (j) {
            char *s = json_dumps(j, JSON_COMPACT);
            fprintf(stderr, "resize %s -> %ld %s\n", id, st, s ? s : "?");
            free(s);
        }
        json_decref(j);
        return -1;
    }
    op = json_string_value(json_object_get(json_object_get(j, "operation"), "id"));
    snprintf(wurl, sizeof(wurl), "http://localhost/v1/operations/%s?wait=60", op ? op : "none");
    json_decref(j);
    w = bench_call(c, "GET", wurl, NULL, &st);
    state = json_string_value(json_object_get(w, "state"));
    ok = st == 200 && state && !strcmp(state, "succeeded");
    if (!ok) {
        char *s = w ? json_dumps(w, JSON_COMPACT) : NULL;
        fprintf(stderr, "resize %s: operation %ld %s\n", id, st, s ? s : "?");
        free(s);
    }
    json_decref(w);
    return ok ? 0 : -1;
}

static void *client_main(void *arg)
{
    struct client *cl = arg;
    CURL *c = NULL;
    virConnectPtr conn = NULL;
    int ninst = cl->ito - cl->ifrom;

    if (cl->sock) {
        c = curl_easy_init();
        curl_easy_setopt(c, CURLOPT_UNIX_SOCKET_PATH, cl->sock);
    } else if (!(conn = virConnectOpen("test:///default"))) {
        cl->failures = cl->to - cl->from;
        return NULL;
    }
    for (int k = cl->from; k < cl->to; k++) {
        int i = cl->ifrom + (k - cl->from) % ninst, up = !cl->big[i];
        double s = bench_now();
        int r = c ? agent_resize(c, cl->ids[i], up) : raw_resize(conn, cl->ids[i], up, cl->full);
        cl->lat[k] = bench_now() - s;
        if (r < 0)
            cl->failures++;
        else
            cl->big[i] = up;
    }
    if (c)
        curl_easy_cleanup(c);
    if (conn)
        virConnectClose(conn);
    return NULL;
}

/* All n resizes by threads clients; resizes/s, failures added to *fails. */
static double drive(const char *sock, int full, char (*ids)[40], int *big, int ninst, int n, int threads,
                    double *lat, int *fails)
{
    pthread_t th[64];
    struct client cl[64];
    double t0 = bench_now();

    for (int t = 0; t < threads; t++) {
        cl[t] = (struct client){.sock = sock, .full = full, .ids = ids, .big = big,
                                .ifrom = ninst * t / threads, .ito = ninst * (t + 1) / threads,
                                .from = n * t / threads, .to = n * (t + 1) / threads, .lat = lat};
        pthread_create(&th[t], NULL, client_main, &cl[t]);
    }
    for (int t = 0; t < threads; t++) {
        pthread_join(th[t], NULL);
        *fails += cl[t].failures;
    }
    return n / (bench_now() - t0);
}

static void raw_domains(virConnectPtr conn, int ninst, char (*ids)[40], virDomainPtr *doms)
{
    char xml[1024];

    for (int i = 0; i < ninst; i++) {
        snprintf(xml, sizeof(xml),
                 "<domain type='test'><name>raw-resize-%d</name>"
                 "<memory unit='MiB'>2048</memory><currentMemory unit='MiB'>256</currentMemory>"
                 "<vcpu placement='static' current='1'>4</vcpu>"
                 "<os><type arch='x86_64'>hvm</type><kernel>/bench/vmlinuz</kernel></os>"
                 "<devices><memballoon model='virtio'/></devices></domain>", i);
        doms[i] = virDomainDefineXML(conn, xml);
        if (!doms[i] || virDomainCreate(doms[i]) < 0 || virDomainGetUUIDString(doms[i], ids[i]) < 0) {
            fprintf(stderr, "raw libvirt: define/start failed at %d: %s\n", i, virGetLastErrorMessage());
            exit(1);
        }
    }
}

/* Launch ninst instances through the agent (1 vCPU, 256 MiB, no disk); ids out. */
static int agent_instances(const char *sock, const char *dir, int ninst, char (*ids)[40])
{
    CURL *c = curl_easy_init();
    char kernel[512], body[1024], wurl[256];
    int fails = 0;

    curl_easy_setopt(c, CURLOPT_UNIX_SOCKET_PATH, sock);
    bench_kernel_path(dir, kernel, sizeof(kernel));
    for (int i = 0; i < ninst; i++) {
        long st;
        json_t *j, *w;
        const char *op, *state;

        snprintf(body, sizeof(body),
                 "{\"name\":\"bench-resize-%d\",\"flavor\":{\"vcpus\":1,\"memory_mb\":256,\"disk_gb\":0},"
                 "\"kernel\":{\"path\":\"%s\"}}", i, kernel);
        j = bench_call(c, "POST", "http://localhost/v1/instances", body, &st);
        if (!j || st != 202) {
            fails++;
            json_decref(j);
            continue;
        }
        snprintf(ids[i], 40, "%s", json_string_value(json_object_get(json_object_get(j, "instance"), "id")));
        op = json_string_value(json_object_get(json_object_get(j, "operation"), "id"));
        snprintf(wurl, sizeof(wurl), "http://localhost/v1/operations/%s?wait=60", op ? op : "none");
        json_decref(j);
        w = bench_call(c, "GET", wurl, NULL, &st);
        state = json_string_value(json_object_get(w, "state"));
        if (st != 200 || !state || strcmp(state, "succeeded"))
            fails++;
        json_decref(w);
    }
    curl_easy_cleanup(c);
    return fails;
}

int main(int argc, char **argv)
{
    const char *build = argc > 1 ? argv[1] : "build";
    int n = argc > 2 ? (int)strtol(argv[2], NULL, 10) : 1000;
    int ninst = argc > 3 ? (int)strtol(argv[3], NULL, 10) : 8;
    int threads = argc > 4 ? (int)strtol(argv[4], NULL, 10) : 4;
    int n1 = n / 5 < 2 * ninst ? 2 * ninst : n / 5; /* one client: the latency alone */
    double *lat_a = calloc((size_t)n, sizeof(double)), *lat_r = calloc((size_t)n, sizeof(double));
    double *lat_f = calloc((size_t)n, sizeof(double)), *lat_a1 = calloc((size_t)n1, sizeof(double));
    double *lat_r1 = calloc((size_t)n1, sizeof(double));
    char (*ids)[40] = calloc(MAXI, sizeof(*ids)), (*rids)[40] = calloc(MAXI, sizeof(*rids));
    virDomainPtr doms[MAXI];
    int big[MAXI] = {0}, rbig[MAXI] = {0};
    char dir[] = "/tmp/ca-bench-rsz-XXXXXX", sock[600];
    double rate_a, rate_r, rate_f, rate_a1, rate_r1;
    int fails = 0, rfails = 0;
    virConnectPtr conn;
    pid_t agent;

    n -= n % 2;
    if (threads < 1 || threads > 64 || ninst < threads || ninst > MAXI || n < 2 * ninst || !mkdtemp(dir))
        return 2;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    /* the raw baseline first, in this process (test:///default is one per process) */
    if (!(conn = virConnectOpen("test:///default"))) {
        printf("bench-resize-test: SKIP (cannot open test:///default: %s)\n", virGetLastErrorMessage());
        return 77;
    }
    raw_domains(conn, ninst, rids, doms);
    rate_r = drive(NULL, 0, rids, rbig, ninst, n, threads, lat_r, &rfails);
    rate_f = drive(NULL, 1, rids, rbig, ninst, n, threads, lat_f, &rfails);
    rate_r1 = drive(NULL, 0, rids, rbig, ninst, n1, 1, lat_r1, &rfails);
    for (int i = 0; i < ninst; i++) {
        virDomainDestroy(doms[i]);
        virDomainUndefine(doms[i]);
        virDomainFree(doms[i]);
    }
    virConnectClose(conn);

    agent = bench_start_agent_hv(build, dir, sock, sizeof(sock), "bench-resize",
                                 "max_vcpus = 4\nmax_memory_mb = 2048\nresize_live_timeout = 10\n");
    fails += agent_instances(sock, dir, ninst, ids);
    if (fails) {
        fprintf(stderr, "bench-resize-test: %d launches failed; agent log %s/agent.log\n", fails, dir);
        kill(agent, SIGTERM);
        waitpid(agent, NULL, 0);
        return 1;
    }
    drive(sock, 0, ids, big, ninst, 2 * ninst, threads, lat_a, &fails); /* warm, not counted */
    rate_a = drive(sock, 0, ids, big, ninst, n, threads, lat_a, &fails);
    rate_a1 = drive(sock, 0, ids, big, ninst, n1, 1, lat_a1, &fails);
    kill(agent, SIGTERM);
    waitpid(agent, NULL, 0);

    double a50 = pct(lat_a, n, 0.5) * 1e3, a99 = pct(lat_a, n, 0.99) * 1e3;
    double r50 = pct(lat_r, n, 0.5) * 1e3, r99 = pct(lat_r, n, 0.99) * 1e3;
    double f50 = pct(lat_f, n, 0.5) * 1e3;
    double b50 = pct(lat_a1, n1, 0.5) * 1e3, s50 = pct(lat_r1, n1, 0.5) * 1e3;
    printf("== bench-resize-test: %d live resizes (1<->2 vCPUs, 256<->512 MiB), %d instances, %d clients, "
           "test:///default ==\n", n, ninst, threads);
    printf("%-56s %10s %10s %9s\n", "figure", "agent", "raw", "ratio");
    printf("%-56s %10.0f %10.0f %9.4f\n", "resizes/s (raw: SetVcpus+SetMemory LIVE then CONFIG)", rate_a, rate_r,
           rate_a / rate_r);
    printf("%-56s %10.0f %10.0f %9.4f\n", "resizes/s (raw: + metadata + size read, all it calls)", rate_a, rate_f,
           rate_a / rate_f);
    printf("%-56s %10.0f %10.0f %9.4f\n", "resizes/s, 1 client", rate_a1, rate_r1, rate_a1 / rate_r1);
    printf("%-56s %10.3f %10.3f %9.1f\n", "latency p50 ms", a50, r50, a50 / r50);
    printf("%-56s %10.3f %10.3f %9.1f\n", "latency p99 ms", a99, r99, a99 / r99);
    printf("%-56s %10.3f %10.3f %9.1f\n", "latency p50 ms (raw: all it calls)", a50, f50, a50 / f50);
    printf("%-56s %10.3f %10.3f %9.1f\n", "latency p50 ms, 1 client", b50, s50, b50 / s50);
    printf("target: agent resizes/s >= 0.5x raw: %s\n", rate_a >= 0.5 * rate_r ? "met" : "MISSED");
    printf("  (agent: POST .../actions resize mode=live, then a long-poll of the operation until it succeeded:\n"
           "   HTTP, the journal, the store and the claims, a libvirt job, the size read back; raw: the calls\n"
           "   alone on the in-process test driver, no I/O)\n");
    free(lat_a);
    free(lat_r);
    free(lat_f);
    free(lat_a1);
    free(lat_r1);
    free(ids);
    free(rids);
    curl_global_cleanup();
    if (fails || rfails) {
        printf("failures: agent %d, raw %d; agent log: %s/agent.log\n", fails, rfails, dir);
        return 1;
    }
    snprintf(sock, sizeof(sock), "rm -rf '%s'", dir);
    return system(sock) ? 1 : 0;
}
