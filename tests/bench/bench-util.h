/* bench-util.h: what the C benchmarks share (header only; for tests/bench/). */
#ifndef CA_BENCH_UTIL_H
#define CA_BENCH_UTIL_H

#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static inline double bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

struct bench_buf {
    char *p;
    size_t n;
};

static inline size_t bench_on_data(char *d, size_t sz, size_t nm, void *u)
{
    struct bench_buf *b = u;
    char *np = realloc(b->p, b->n + sz * nm + 1);
    if (!np)
        return 0;
    memcpy(np + b->n, d, sz * nm);
    b->p = np;
    b->n += sz * nm;
    b->p[b->n] = '\0';
    return sz * nm;
}

/* One HTTP call on the agent's unix socket (c set up with the socket);
 * returns the parsed JSON body (new reference) or NULL, *status set. */
static inline json_t *bench_call(CURL *c, const char *method, const char *url, const char *body, long *status)
{
    struct bench_buf b = {0};
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    json_t *j;

    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_HTTPGET, body ? 0L : 1L);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, bench_on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    *status = 0;
    if (curl_easy_perform(c) == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
    curl_slist_free_all(h);
    j = b.p ? json_loads(b.p, 0, NULL) : NULL;
    free(b.p);
    return j;
}

/* Start BUILD/compute-agent on the test driver in dir (ratios high enough
 * for thousands of small guests), extra args appended; wait until /healthz
 * answers (bounded). The socket path goes to sock. */
/* The stand-in kernel the benches launch with: DIR/guest/vmlinuz, made by
 * bench_start_agent() in the directory it lists in local_image_dirs. */
static inline void bench_kernel_path(const char *dir, char *buf, size_t size)
{
    snprintf(buf, size, "%s/guest/vmlinuz", dir);
}

/* bench_start_agent with extra lines for the [hypervisor] section (NULL: none). */
static inline pid_t bench_start_agent_hv(const char *build, const char *dir, char *sock, size_t socksize,
                                         const char *host, const char *hv_extra)
{
    char conf[512], bin[512], log[512], kernel[512];
    FILE *f;
    pid_t pid;

    snprintf(conf, sizeof(conf), "%s/guest", dir);
    bench_kernel_path(dir, kernel, sizeof(kernel));
    if ((mkdir(conf, 0755) < 0 && errno != EEXIST) || !(f = fopen(kernel, "w")))
        exit(1);
    fputs("not a kernel: the test driver never reads it\n", f);
    fclose(f);
    snprintf(conf, sizeof(conf), "%s/bench.conf", dir);
    f = fopen(conf, "w");
    if (!f)
        exit(1);
    fprintf(f, "[resources]\ncpu_allocation_ratio = 1000\nram_allocation_ratio = 1000\n"
               "[agent]\nlog_level = warn\n[hypervisor]\nlocal_image_dirs = %s/guest\n%s", dir,
            hv_extra ? hv_extra : "");
    fclose(f);
    snprintf(sock, socksize, "%s/api.sock", dir);
    snprintf(bin, sizeof(bin), "%s/compute-agent", build);
    snprintf(log, sizeof(log), "%s/agent.log", dir);
    pid = fork();
    if (pid == 0) {
        if (!freopen(log, "w", stderr))
            _exit(127);
        execl(bin, bin, "--config", conf, "--state-dir", dir, "--hypervisor", "test", "--host-name", host,
              (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 500; i++) {
        CURL *c = curl_easy_init();
        long st = 0;
        json_t *j;
        curl_easy_setopt(c, CURLOPT_UNIX_SOCKET_PATH, sock);
        j = bench_call(c, "GET", "http://localhost/healthz", NULL, &st);
        json_decref(j);
        curl_easy_cleanup(c);
        if (st == 200)
            return pid;
        usleep(20000); /* polling the agent's start-up, not an event wait */
    }
    fprintf(stderr, "agent did not become ready\n");
    kill(pid, SIGKILL);
    exit(1);
}

static inline pid_t bench_start_agent(const char *build, const char *dir, char *sock, size_t socksize,
                                      const char *host)
{
    return bench_start_agent_hv(build, dir, sock, socksize, host, NULL);
}

#endif
