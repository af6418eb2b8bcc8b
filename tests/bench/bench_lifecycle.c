/* bench_lifecycle: 1000 instances launched and terminated through the
 * agent's REST API (test driver), beside the same 1000 define+start+destroy
 * done directly with the libvirt API in the same run.
 * Prints instances/s, per-launch latency p50/p99 (agent: POST until the
 * operation succeeded, waited by long-poll; raw: define+start) with the
 * agent's added latency, and the agent's RSS with 1000 instances running.
 * Usage: bench_lifecycle BUILD_DIR [N] [CLIENT_THREADS] */
#include <curl/curl.h>
#include <jansson.h>
#include <libvirt/libvirt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tests/bench/bench-util.h"

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

/* VmRSS (all resident pages, shared libraries included) or RssAnon (the
 * process's own memory) from /proc. */
static long status_kb(pid_t pid, const char *key)
{
    char path[64], line[256];
    long kb = -1;
    size_t kl = strlen(key);
    FILE *f;

    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    f = fopen(path, "re");
    while (f && fgets(line, sizeof(line), f))
        if (!strncmp(line, key, kl))
            kb = strtol(line + kl, NULL, 10);
    if (f)
        fclose(f);
    return kb;
}

static long rss_kb(pid_t pid) { return status_kb(pid, "VmRSS:"); }
static long anon_kb(pid_t pid) { return status_kb(pid, "RssAnon:"); }

/* ---- raw libvirt baseline ---- */

static void raw_libvirt(int n, double *lat, double *rate, double *term_rate, long *rss_growth)
{
    virConnectPtr conn = virConnectOpen("test:///default");
    virDomainPtr *doms = calloc((size_t)n, sizeof(*doms));
    char xml[1024];
    long rss0 = anon_kb(getpid());
    double t0 = bench_now(), t1;

    for (int i = 0; i < n; i++) {
        double s = bench_now();
        snprintf(xml, sizeof(xml),
                 "<domain type='test'><name>raw-%d</name><memory unit='MiB'>64</memory>"
                 "<vcpu>1</vcpu><os><type arch='x86_64'>hvm</type><kernel>/bench/vmlinuz</kernel></os>"
                 "<devices><memballoon model='none'/></devices></domain>", i);
        doms[i] = virDomainDefineXML(conn, xml);
        if (!doms[i] || virDomainCreate(doms[i]) < 0) {
            fprintf(stderr, "raw libvirt failed at %d\n", i);
            exit(1);
        }
        lat[i] = bench_now() - s;
    }
    t1 = bench_now();
    *rate = n / (t1 - t0);
    *rss_growth = anon_kb(getpid()) - rss0;
    t0 = bench_now();
    for (int i = 0; i < n; i++) {
        virDomainDestroy(doms[i]);
        virDomainUndefine(doms[i]);
        virDomainFree(doms[i]);
    }
    *term_rate = n / (bench_now() - t0);
    free(doms);
    virConnectClose(conn);
}

/* ---- through the agent ---- */

struct client {
    const char *sock;
    const char *body;         /* the launch body */
    int from, to;             /* instance indexes this thread handles */
    double *lat;              /* per launch */
    char (*ids)[40];          /* instance ids out */
    int failures;
    int terminate;            /* 0 launch, 1 terminate */
};

/* One operation: send it, then long-poll it until it ends. */
static int run_op(CURL *c, const char *method, const char *url, const char *body, char *id_out)
{
    char wurl[256];
    long st;
    json_t *j = bench_call(c, method, url, body, &st), *w;
    const char *op, *state;
    int ok;

    if (!j || st != 202) {
        json_decref(j);
        return -1;
    }
    if (id_out)
        snprintf(id_out, 40, "%s", json_string_value(json_object_get(json_object_get(j, "instance"), "id")));
    op = json_string_value(json_object_get(json_object_get(j, "operation"), "id"));
    snprintf(wurl, sizeof(wurl), "http://localhost/v1/operations/%s?wait=60", op);
    json_decref(j);
    w = bench_call(c, "GET", wurl, NULL, &st);
    state = json_string_value(json_object_get(w, "state"));
    ok = st == 200 && state && !strcmp(state, "succeeded");
    json_decref(w);
    return ok ? 0 : -1;
}

static void *client_main(void *arg)
{
    struct client *cl = arg;
    CURL *c = curl_easy_init();
    char url[256];

    curl_easy_setopt(c, CURLOPT_UNIX_SOCKET_PATH, cl->sock);
    for (int i = cl->from; i < cl->to; i++) {
        double s = bench_now();
        if (cl->terminate) {
            snprintf(url, sizeof(url), "http://localhost/v1/instances/%s", cl->ids[i]);
            if (run_op(c, "DELETE", url, NULL, NULL) < 0)
                cl->failures++;
        } else {
            if (run_op(c, "POST", "http://localhost/v1/instances", cl->body, cl->ids[i]) < 0)
                cl->failures++;
        }
        cl->lat[i] = bench_now() - s;
    }
    curl_easy_cleanup(c);
    return NULL;
}

/* The launch body, naming the stand-in kernel bench_start_agent() made. */
static char launch_body[1024];

static double drive(const char *sock, int n, int threads, double *lat, char (*ids)[40], int terminate,
                    int *failures)
{
    pthread_t th[64];
    struct client cl[64];
    double t0 = bench_now();

    *failures = 0;
    for (int t = 0; t < threads; t++) {
        cl[t] = (struct client){.sock = sock, .body = launch_body, .from = n * t / threads, .to = n * (t + 1) / threads,
                                .lat = lat, .ids = ids, .terminate = terminate};
        pthread_create(&th[t], NULL, client_main, &cl[t]);
    }
    for (int t = 0; t < threads; t++) {
        pthread_join(th[t], NULL);
        *failures += cl[t].failures;
    }
    return n / (bench_now() - t0);
}

int main(int argc, char **argv)
{
    const char *build = argc > 1 ? argv[1] : "build";
    int n = argc > 2 ? (int)strtol(argv[2], NULL, 10) : 1000;
    int threads = argc > 3 ? (int)strtol(argv[3], NULL, 10) : 8;
    double *raw_lat = calloc((size_t)n, sizeof(double)), *lat1 = calloc((size_t)n, sizeof(double));
    double *latn = calloc((size_t)n, sizeof(double)), *tlat = calloc((size_t)n, sizeof(double));
    char (*ids)[40] = calloc((size_t)n, sizeof(*ids));
    double raw_rate, raw_term, seq_rate, par_rate, term_rate, seq_term;
    long raw_rss, rss_idle, rss_full, anon_idle, anon_full;
    char dir[] = "/tmp/ca-bench-XXXXXX", sock[600], kernel[512];
    int fails, fails_total = 0, half = n / 2;
    pid_t agent;

    if (threads < 1 || threads > 64 || n < 10)
        return 2;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    raw_libvirt(n, raw_lat, &raw_rate, &raw_term, &raw_rss);
    mkdtemp(dir);
    agent = bench_start_agent(build, dir, sock, sizeof(sock), "bench-lifecycle");
    bench_kernel_path(dir, kernel, sizeof(kernel));
    snprintf(launch_body, sizeof(launch_body),
             "{\"name\":\"bench\",\"flavor\":{\"vcpus\":1,\"memory_mb\":64,\"disk_gb\":0},"
             "\"kernel\":{\"path\":\"%s\"}}", kernel);
    rss_idle = rss_kb(agent);
    anon_idle = anon_kb(agent);
    /* half launched one at a time (latency), half with concurrent clients (rate) */
    seq_rate = drive(sock, half, 1, lat1, ids, 0, &fails);
    fails_total += fails;
    par_rate = drive(sock, n - half, threads, latn, ids + half, 0, &fails);
    fails_total += fails;
    rss_full = rss_kb(agent);
    anon_full = anon_kb(agent);
    seq_term = drive(sock, half, 1, tlat, ids, 1, &fails);
    fails_total += fails;
    term_rate = drive(sock, n - half, threads, tlat + half, ids + half, 1, &fails);
    fails_total += fails;
    kill(agent, SIGTERM);
    waitpid(agent, NULL, 0);

    double r50 = pct(raw_lat, n, 0.5) * 1e3, r99 = pct(raw_lat, n, 0.99) * 1e3;
    double a50 = pct(lat1, half, 0.5) * 1e3, a99 = pct(lat1, half, 0.99) * 1e3;
    double p50 = pct(latn, n - half, 0.5) * 1e3, p99 = pct(latn, n - half, 0.99) * 1e3;
    printf("== bench_lifecycle: %d instances, test driver (libvirt %s) ==\n", n, "test:///default");
    printf("%-44s %12s %12s %8s\n", "figure", "agent", "raw libvirt", "ratio");
    printf("%-44s %12.0f %12.0f %8.2f\n", "launches/s, 1 client (POST -> running)", seq_rate, raw_rate, seq_rate / raw_rate);
    printf("%-44s %12.0f %12.0f %8.2f\n", "launches/s, concurrent clients", par_rate, raw_rate, par_rate / raw_rate);
    printf("%-44s %12.0f %12.0f %8.2f\n", "terminates/s, 1 client", seq_term, raw_term, seq_term / raw_term);
    printf("%-44s %12.0f %12.0f %8.2f\n", "terminates/s, concurrent clients", term_rate, raw_term, term_rate / raw_term);
    printf("%-44s %12.3f %12.3f %8.2f\n", "launch latency p50 ms, 1 client", a50, r50, a50 / r50);
    printf("%-44s %12.3f %12.3f %8.2f\n", "launch latency p99 ms, 1 client", a99, r99, a99 / r99);
    printf("%-44s %12.3f %12s\n", "added latency p50 ms (agent - raw)", a50 - r50, "-");
    printf("%-44s %12.3f %12s\n", "added latency p99 ms (agent - raw)", a99 - r99, "-");
    printf("%-44s %12.3f %12s\n", "launch latency p50 ms, concurrent", p50, "-");
    printf("%-44s %12.3f %12s\n", "launch latency p99 ms, concurrent", p99, "-");
    printf("%-44s %12.1f %12s\n", "agent RSS MB, idle (all pages)", rss_idle / 1024.0, "-");
    printf("%-44s %12.1f %12s\n", "agent RSS MB, instances running (all pages)", rss_full / 1024.0, "-");
    printf("%-44s %12.1f %12s\n", "agent private RSS MB, idle", anon_idle / 1024.0, "-");
    printf("%-44s %12.1f %12.1f\n", "private RSS MB, instances running", anon_full / 1024.0, raw_rss / 1024.0);
    printf("  (raw column: what %d test-driver domains add to a plain libvirt client; the test\n"
           "   driver lives inside the agent's process, so the agent's figure includes it)\n", n);
    printf("targets: >= 500 launches/s, added p50 < 1 ms, RSS < 20 MB with %d instances\n", n);
    printf("failures: %d\n", fails_total);
    printf("concurrent clients: %d; agent log: %s/agent.log\n", threads, dir);
    return fails_total ? 1 : 0;
}
