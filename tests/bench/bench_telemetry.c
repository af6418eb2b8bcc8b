/* bench_telemetry: the agent-side cost of telemetry.
 *
 *   bench_telemetry BUILD_DIR
 *       what `make bench` runs: hands over to tests/bench/bench_telemetry.sh
 *       (1000-domain test:/// node file, this driver beside
 *       prometheus-libvirt-exporter, figures and ratios).
 *   bench_telemetry run URI INTERVAL_S WALL_S
 *       runs the telemetry module (hv + telemetry, the agent's code) on URI,
 *       sampling every INTERVAL_S for WALL_S seconds of wall time; every
 *       round is published (JSON built, handed to a counting sink) and
 *       scraped once (Prometheus text rendered into memory). Prints one line
 *       RESULT key=value ... with the process's CPU time and RSS.
 *
 * With a test:/// URI libvirt's test driver runs inside this process, so the
 * CPU figures include libvirt's side too (as they do for the exporter). */
#include <inttypes.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "agent/hypervisor/hv.h"
#include "agent/telemetry.h"

struct bench {
    uv_loop_t *loop;
    struct hv *hv;
    struct telemetry *t;
    uv_timer_t stop;
    uint64_t messages, bytes;
    uint64_t rounds, errors;
    double render_cpu_s;      /* loop thread CPU spent rendering scrapes */
    double ingest_cpu_s;      /* loop thread CPU from round end to round end: rates + JSON */
    size_t scrape_bytes, series, instances;
    long rss_first_kb;        /* after the first round */
    char last_error[256];
};

static double cpu_s(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double proc_cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

/* A field of /proc/self/status in kB ("VmRSS", "VmHWM"). */
static long status_kb(const char *key)
{
    _cleanup_fclose_ FILE *f = fopen("/proc/self/status", "re");
    char line[256];
    size_t kl = strlen(key);

    while (f && fgets(line, sizeof(line), f))
        if (!strncmp(line, key, kl) && line[kl] == ':')
            return strtol(line + kl + 1, NULL, 10);
    return -1;
}

static int publish(void *opaque, const char *key, const char *json, size_t len)
{
    struct bench *b = opaque;
    (void)key;
    (void)json;
    b->messages++;
    b->bytes += len;
    return 0;
}

/* One scrape: render into memory, count series and distinct instances. */
static void scrape(struct bench *b)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    double c0 = cpu_s(CLOCK_THREAD_CPUTIME_ID);
    size_t series = 0, inst = 0;

    if (!f)
        return;
    telemetry_render_prometheus(b->t, f);
    fclose(f);
    b->render_cpu_s += cpu_s(CLOCK_THREAD_CPUTIME_ID) - c0;
    for (char *p = text; p && *p;) {
        char *nl = strchr(p, '\n');
        if (*p != '#') {
            series++;
            if (!strncmp(p, "compute_agent_instance_power_state{", 35))
                inst++;
        }
        p = nl ? nl + 1 : NULL;
    }
    b->scrape_bytes = len;
    b->series = series;
    b->instances = inst;
    free(text);
}

static void on_round(void *opaque, int err, const struct agent_error *e)
{
    struct bench *b = opaque;

    if (err < 0) {
        b->errors++;
        strscpy(b->last_error, e->message, sizeof(b->last_error));
        return;
    }
    b->rounds++;
    if (b->rounds == 1)
        b->rss_first_kb = status_kb("VmRSS");
    scrape(b);
}

static void free_hv(void *opaque)
{
    struct bench *b = opaque;
    hv_free(b->hv); /* telemetry no longer uses it */
    b->hv = NULL;
}

static void on_stop(uv_timer_t *tm)
{
    struct bench *b = tm->data;
    telemetry_free(b->t);
    b->t = NULL;
    uv_close((uv_handle_t *)&b->stop, NULL);
}

static int run(const char *uri, unsigned interval, unsigned wall)
{
    uv_loop_t loop;
    struct bench b = {.loop = &loop};
    struct hv_config hc = {.uri = uri};
    struct agent_error e;
    const struct hv_driver *drv = !strncmp(uri, "test:", 5) ? &hv_driver_test : &hv_driver_kvm;
    struct telemetry_config cfg = {.interval_s = interval, .host = "bench-host",
                                   .dirs = (const char *const[]){"/", NULL},
                                   .include_foreign = true};
    struct telemetry_callbacks cb = {.publish = publish, .on_round = on_round,
                                     .on_closed = free_hv};
    double cpu0, cpu_connect, wall0, wall1, loop_cpu0;
    long rss0;

    uv_loop_init(&loop);
    cpu0 = proc_cpu_s();
    if (hv_new(&loop, drv, &hc, NULL, NULL, &b.hv) < 0 || hv_connect(b.hv, &e) < 0) {
        fprintf(stderr, "bench_telemetry: cannot connect to %s\n", uri);
        return 1;
    }
    cpu_connect = proc_cpu_s() - cpu0;
    rss0 = status_kb("VmRSS");
    uv_update_time(&loop); /* the connect took a while */
    loop_cpu0 = cpu_s(CLOCK_THREAD_CPUTIME_ID);
    cpu0 = proc_cpu_s();
    wall0 = cpu_s(CLOCK_MONOTONIC);
    if (telemetry_new(&loop, b.hv, &cfg, &cb, &b, &b.t, &e) < 0) {
        fprintf(stderr, "bench_telemetry: %s\n", e.message);
        return 1;
    }
    uv_timer_init(&loop, &b.stop);
    b.stop.data = &b;
    /* Stop just before the next tick so the last round is counted whole. */
    uv_timer_start(&b.stop, on_stop, (uint64_t)wall * 1000 - 50, 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    wall1 = cpu_s(CLOCK_MONOTONIC);
    {
        double cpu = proc_cpu_s() - cpu0;
        double loop_cpu = cpu_s(CLOCK_THREAD_CPUTIME_ID) - loop_cpu0;
        printf("RESULT side=agent interval_s=%u wall_s=%.1f rounds=%" PRIu64 " errors=%" PRIu64
               " domains=%zu cpu_s=%.3f cpu_per_round_ms=%.2f loop_cpu_s=%.3f"
               " render_ms_per_scrape=%.2f scrape_bytes=%zu series=%zu"
               " messages=%" PRIu64 " json_bytes=%" PRIu64 " rss_before_kb=%ld"
               " rss_first_round_kb=%ld rss_end_kb=%ld hwm_kb=%ld connect_cpu_s=%.3f%s%s\n",
               interval, wall1 - wall0, b.rounds, b.errors, b.instances, cpu,
               b.rounds ? cpu / (double)b.rounds * 1000 : 0, loop_cpu,
               b.rounds ? b.render_cpu_s / (double)b.rounds * 1000 : 0, b.scrape_bytes, b.series,
               b.messages, b.bytes, rss0, b.rss_first_kb, status_kb("VmRSS"), status_kb("VmHWM"),
               cpu_connect, b.errors ? " last_error=" : "", b.errors ? b.last_error : "");
    }
    uv_loop_close(&loop);
    return b.rounds ? 0 : 1;
}

int main(int argc, char **argv)
{
    if (argc == 5 && !strcmp(argv[1], "run")) {
        int64_t interval, wall;
        if (parse_int64(argv[3], 1, 3600, &interval) < 0 || parse_int64(argv[4], 1, 86400, &wall) < 0) {
            fprintf(stderr, "bench_telemetry: bad INTERVAL_S or WALL_S\n");
            return 2;
        }
        return run(argv[2], (unsigned)interval, (unsigned)wall);
    }
    if (argc == 2) {
        /* make bench: the script sits next to this file in the source tree
         * (make runs from the top of it). */
        char src[] = __FILE__;
        char script[4096];
        snprintf(script, sizeof(script), "%s/bench_telemetry.sh", dirname(src));
        if (access(script, R_OK) != 0) {
            printf("bench_telemetry: SKIP: %s not found (run from the source tree)\n", script);
            return 0;
        }
        execl("/bin/bash", "bash", script, argv[1], (char *)NULL);
        perror("bench_telemetry: bash");
        return 1;
    }
    fprintf(stderr, "usage: %s BUILD_DIR | run URI INTERVAL_S WALL_S\n", argv[0]);
    return 2;
}
