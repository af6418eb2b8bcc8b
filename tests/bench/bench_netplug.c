/* bench_netplug: plug + unplug of N taps (default 100) through net-plug, beside
 * `ip tuntap add` + `ip link del` of the same N taps, in the same run, inside a
 * network namespace of its own (unshared at start: nothing reaches the host).
 *
 *   build-dev/tests/bench_netplug [BUILD_DIR] [-n N]     (as root)
 *
 * A netplug plug is the whole job (tap, MAC, alias, nft filter entries, MTU,
 * master, up); the `ip` baseline only makes and deletes the taps (2 processes
 * per tap), and a second baseline also puts them in the bridge and up
 * (`ip link set ... master ... up`, 3 processes per tap). Prints interfaces/s
 * and the ratio netplug / baseline (target >= 1x). Not root: prints SKIP, exits 0. */
#include <arpa/inet.h>
#include <sched.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/util.h"
#include "net-plug/netplug-internal.h"

extern char **environ;

static double now_s(void) { return (double)now_mono_ns() / 1e9; }

static int run(const char *const *argv)
{
    pid_t pid;
    int st;

    if (posix_spawnp(&pid, argv[0], NULL, NULL, (char *const *)argv, environ) != 0)
        return -1;
    while (waitpid(pid, &st, 0) < 0)
        ;
    return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -1;
}

static int check(int r, const struct np_error *e, const char *what)
{
    if (r < 0) {
        fprintf(stderr, "bench_netplug: %s: %d %s\n", what, r, e->msg);
        exit(1);
    }
    return r;
}

/* plug N, then unplug N; returns the seconds, and the two halves */
static double netplug_round(bool antispoof, const char *net, const char *bridge, int n, double *tplug,
                            double *tunplug, double *tdrained)
{
    struct netplug_config cfg = {.nft_table = "bench_ca", .antispoof = antispoof, .ovs_vsctl = NULL};
    struct netplug *np;
    struct np_error e = {0};
    char dev[16];
    double t0, t1, t2;

    check(netplug_new(&cfg, &np, &e), &e, "netplug_new");
    struct np_network nw = {.name = net, .type = NP_NET_BRIDGE, .bridge = bridge, .gateway = "10.123.0.1/16"};
    check(netplug_network_add(np, &nw, &e), &e, "network_add");
    /* a first port makes the bridge and the table: not counted */
    struct np_port w = {.network = net, .dev = "tapwarm", .kind = NP_PORT_TAP,
                        .mac = {0x52, 0x54, 0x00, 0xee, 0xee, 0xee}, .ipv4 = inet_addr("10.123.255.254"),
                        .owner = "warm"};
    check(netplug_plug(np, &w, &e), &e, "plug warm");
    t0 = now_s();
    for (int i = 0; i < n; i++) {
        snprintf(dev, sizeof(dev), "tapb%d", i);
        struct np_port p = {.network = net, .dev = dev, .kind = NP_PORT_TAP,
                            .mac = {0x52, 0x54, 0x00, 0x00, (uint8_t)(i >> 8), (uint8_t)i},
                            .ipv4 = htonl(0x0a7b0000u + (uint32_t)i + 2), .owner = "6a6a6a6a-0000-4000-8000-0000000000b1"};
        check(netplug_plug(np, &p, &e), &e, "plug");
    }
    t1 = now_s();
    for (int i = 0; i < n; i++) {
        snprintf(dev, sizeof(dev), "tapb%d", i);
        check(netplug_unplug(np, dev, &e), &e, "unplug");
    }
    t2 = now_s();
    check(netplug_unplug(np, "tapwarm", &e), &e, "unplug warm"); /* and the bridge */
    netplug_free(np); /* waits for the kernel's clean-up of the deleted taps */
    *tdrained = now_s() - t0;
    *tplug = t1 - t0;
    *tunplug = t2 - t1;
    return t2 - t0;
}

static double ip_round(int n, bool attach, double *tadd, double *tdel)
{
    char dev[16];
    double t0 = now_s(), t1;

    for (int i = 0; i < n; i++) {
        snprintf(dev, sizeof(dev), "tapi%d", i);
        const char *add[] = {"ip", "tuntap", "add", "dev", dev, "mode", "tap", "vnet_hdr", NULL};
        const char *set[] = {"ip", "link", "set", "dev", dev, "master", "cab-ipbr", "up", NULL};
        if (run(add) < 0 || (attach && run(set) < 0)) {
            fprintf(stderr, "bench_netplug: ip failed for %s\n", dev);
            exit(1);
        }
    }
    t1 = now_s();
    for (int i = 0; i < n; i++) {
        snprintf(dev, sizeof(dev), "tapi%d", i);
        const char *del[] = {"ip", "link", "del", "dev", dev, NULL};
        if (run(del) < 0) {
            fprintf(stderr, "bench_netplug: ip link del %s failed\n", dev);
            exit(1);
        }
    }
    *tadd = t1 - t0;
    *tdel = now_s() - t1;
    return now_s() - t0;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

#define ROUNDS 3
struct fig {
    double total[ROUNDS], a[ROUNDS], b[ROUNDS], drained[ROUNDS];
};

static double median(double *v)
{
    qsort(v, ROUNDS, sizeof(*v), cmp_d);
    return v[ROUNDS / 2];
}

int main(int argc, char **argv)
{
    int n = 100;

    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "-n") == 0 && i + 1 < argc) {
            int64_t v;
            if (parse_int64(argv[++i], 1, 4096, &v) < 0) {
                fprintf(stderr, "bench_netplug: -n: not an integer in [1, 4096]: %s\n", argv[i]);
                return 2;
            }
            n = (int)v;
        }
    if (geteuid() != 0 || unshare(CLONE_NEWNET) != 0) {
        printf("bench_netplug: SKIP (needs root and a network namespace of its own)\n");
        return 0;
    }
    const char *lo[] = {"ip", "link", "set", "lo", "up", NULL};
    const char *br[] = {"ip", "link", "add", "cab-ipbr", "type", "bridge", NULL};
    const char *brup[] = {"ip", "link", "set", "cab-ipbr", "up", NULL};
    if (run(lo) < 0 || run(br) < 0 || run(brup) < 0) {
        printf("bench_netplug: SKIP (`ip` not usable here)\n");
        return 0;
    }
    /* interleaved rounds, medians: the machine is shared and noisy */
    struct fig fnp, fnp0, fip, fip2;
    for (int r = 0; r < ROUNDS; r++) {
        fnp.total[r] = netplug_round(true, "bench", "cab-bench", n, &fnp.a[r], &fnp.b[r], &fnp.drained[r]);
        fip.total[r] = ip_round(n, false, &fip.a[r], &fip.b[r]);
        fnp0.total[r] = netplug_round(false, "bench0", "cab-bench0", n, &fnp0.a[r], &fnp0.b[r], &fnp0.drained[r]);
        fip2.total[r] = ip_round(n, true, &fip2.a[r], &fip2.b[r]);
    }
    double t_np = median(fnp.total), t_np0 = median(fnp0.total), t_ip = median(fip.total),
           t_ip2 = median(fip2.total);
    double r_np = n / t_np, r_np0 = n / t_np0, r_ip = n / t_ip, r_ip2 = n / t_ip2;

    printf("bench_netplug: %d taps, plug + unplug each, one network namespace, median of %d interleaved rounds\n",
           n, ROUNDS);
    printf("  netplug (tap+filter+master+up):      %7.1f interfaces/s  (plug %.2f ms, unplug %.2f ms each)\n",
           r_np, median(fnp.a) * 1e3 / n, median(fnp.b) * 1e3 / n);
    printf("  netplug, until the kernel's background clean-up of the deleted taps is over: %.1f interfaces/s\n",
           n / median(fnp.drained));
    printf("  netplug, antispoof off:              %7.1f interfaces/s  (plug %.2f ms, unplug %.2f ms each)\n",
           r_np0, median(fnp0.a) * 1e3 / n, median(fnp0.b) * 1e3 / n);
    printf("  ip tuntap add + ip link del:         %7.1f interfaces/s  (add %.2f ms, del %.2f ms each)\n", r_ip,
           median(fip.a) * 1e3 / n, median(fip.b) * 1e3 / n);
    printf("  ip tuntap add + set master up + del: %7.1f interfaces/s  (add+set %.2f ms, del %.2f ms each)\n",
           r_ip2, median(fip2.a) * 1e3 / n, median(fip2.b) * 1e3 / n);
    printf("  ratio netplug / (ip tuntap add + ip link del): %.2fx (target >= 1x)\n", r_np / r_ip);
    printf("  ratio netplug / (ip add + master up + del):    %.2fx\n", r_np / r_ip2);
    printf("  ratio netplug incl. clean-up / (ip tuntap add + ip link del): %.2fx\n", n / median(fnp.drained) / r_ip);
    return 0;
}
