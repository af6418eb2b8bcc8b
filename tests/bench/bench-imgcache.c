/* bench-imgcache.c: the image cache's figures, in one run, each beside its
 * baseline and target (issue 3):
 *   1. pull a 1 GiB image from nginx on loopback with digest checking,
 *      beside `curl -o` of the same file to the same disk (ratio >= 0.9);
 *      the pull includes SHA-256 of every byte, fsync, `qemu-img info`,
 *      and the rename into the cache, i.e. everything until the image is
 *      usable;
 *   2. 32 concurrent acquires of one image: downloads counted in nginx's
 *      access log (target 1);
 *   3. overlay creation for a 100 MiB and a 10 GiB base (target < 20 ms
 *      each), beside spawning `qemu-img create` for the same overlay.
 *
 * Usage: bench-imgcache [--size-mb N] [--rounds N] [--dir DIR]
 * nginx is started by this program (tests/lib/imgcache-nginx.h) and
 * stopped at the end. Exit status 0 when it ran, whatever the figures;
 * 77 if nginx, curl or qemu-img is missing. */
#include "image-cache/imgcache-internal.h"
#include "tests/lib/imgcache-nginx.h"

static double now_s(void)
{
    return (double)now_mono_ns() / 1e9;
}

static int run_quiet(char *const argv[])
{
    posix_spawn_file_actions_t fa;
    pid_t pid;
    int st, r;

    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    r = posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (r != 0)
        return -1;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void rm_rf(const char *p)
{
    char *argv[] = {"rm", "-rf", (char *)p, NULL};
    run_quiet(argv);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(*v), cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

struct done {
    uv_loop_t *loop;
    int want;
    int calls;
    int failures;
    char message[600];
};

static void on_done(int status, const struct imgcache_image_info *info,
                    const struct agent_error *err, void *opaque)
{
    struct done *d = opaque;

    (void)info;
    if (++d->calls == d->want)
        uv_stop(d->loop);
    if (status < 0) {
        d->failures++;
        snprintf(d->message, sizeof(d->message), "%s: %s", err->code, err->message);
    }
}

/* One cache on a fresh directory; acquire url n times at once; time until
 * all callbacks came. Returns seconds, or -1. */
static double pull(const char *cache_dir, const char *url, const char *digest, int n,
                   struct done *d)
{
    uv_loop_t loop;
    sqlite3 *db;
    struct imgcache *c;
    struct imgcache_config cfg = {.dir = cache_dir, .allowed_networks = "127.0.0.0/8"};
    struct imgcache_request req = {.url = url, .digest = digest};
    struct agent_error err;
    double t0, t1;

    memset(d, 0, sizeof(*d));
    uv_loop_init(&loop);
    d->loop = &loop;
    d->want = n;
    sqlite3_open(":memory:", &db);
    if (imgcache_new(&loop, db, &cfg, &c, &err) < 0) {
        fprintf(stderr, "imgcache_new: %s\n", err.message);
        return -1;
    }
    t0 = now_s();
    for (int i = 0; i < n; i++) {
        char user[40];
        snprintf(user, sizeof(user), "00000000-0000-4000-8000-%012u", (unsigned)i);
        if (imgcache_acquire(c, &req, user, on_done, d, NULL, &err) < 0) {
            fprintf(stderr, "acquire: %s\n", err.message);
            return -1;
        }
    }
    uv_run(&loop, UV_RUN_DEFAULT); /* on_done stops it */
    t1 = now_s();
    imgcache_free(c);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    sqlite3_close(db);
    return d->failures ? -1 : t1 - t0;
}

static double curl_o(const char *url, const char *out)
{
    char *argv[] = {"curl", "-s", "-f", "-o", (char *)out, (char *)url, NULL};
    double t0 = now_s();

    if (run_quiet(argv) != 0)
        return -1;
    return now_s() - t0;
}

static int sha256_file(const char *path, char *out, size_t size)
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned char *buf = malloc(1 << 20), d[32];
    char hex[65];
    ssize_t n;
    int fd = open(path, O_RDONLY);

    if (fd < 0 || !buf || !ctx)
        return -1;
    EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
    while ((n = read(fd, buf, 1 << 20)) > 0)
        EVP_DigestUpdate(ctx, buf, (size_t)n);
    close(fd);
    EVP_DigestFinal_ex(ctx, d, NULL);
    EVP_MD_CTX_free(ctx);
    free(buf);
    imgcache_hex(d, 32, hex);
    snprintf(out, size, "sha256:%s", hex);
    return 0;
}

/* Overlay timings: ours (median of rounds) and qemu-img create's. */
static void bench_overlay(const char *dir, const char *label, uint64_t base_size, int rounds,
                          double *ours_ms, double *qemu_ms)
{
    char base[PATH_MAX], ovl[PATH_MAX + 32], size[32];
    double *a = calloc((size_t)rounds, sizeof(double)), *b = calloc((size_t)rounds, sizeof(double));
    struct agent_error err;
    int fd;

    snprintf(base, sizeof(base), "%s/base-%s.raw", dir, label);
    fd = open(base, O_CREAT | O_WRONLY | O_TRUNC, 0444);
    if (fd < 0 || ftruncate(fd, (off_t)base_size) < 0)
        perror(base);
    close(fd);
    snprintf(size, sizeof(size), "%llu", (unsigned long long)(20ull << 30));
    for (int i = 0; i < rounds; i++) {
        double t0;

        snprintf(ovl, sizeof(ovl), "%s/ours-%s-%d.qcow2", dir, label, i);
        t0 = now_s();
        if (imgcache_qcow2_overlay_write(ovl, base, "raw", 20ull << 30, &err) < 0)
            fprintf(stderr, "overlay: %s\n", err.message);
        a[i] = (now_s() - t0) * 1e3;
        snprintf(ovl, sizeof(ovl), "%s/qemu-%s-%d.qcow2", dir, label, i);
        {
            char *argv[] = {"qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", base,
                            ovl, size, NULL};
            t0 = now_s();
            run_quiet(argv);
            b[i] = (now_s() - t0) * 1e3;
        }
    }
    *ours_ms = median(a, rounds);
    *qemu_ms = median(b, rounds);
    free(a);
    free(b);
}

int main(int argc, char **argv)
{
    struct test_nginx ngx;
    char why[256], work[PATH_MAX] = "", path[PATH_MAX + 64], url[256], digest[IMGCACHE_DIGEST_MAX];
    char cache[PATH_MAX + 64], out[PATH_MAX + 64];
    long size_mb = 1024;
    int rounds = 3;
    double *ours, *theirs, *wire, bytes;
    struct done d;
    int gets_before, downloads;
    double ovl_small, ovl_small_q, ovl_big, ovl_big_q, t;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--size-mb") == 0 && i + 1 < argc)
            size_mb = strtol(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--rounds") == 0 && i + 1 < argc)
            rounds = (int)strtol(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--dir") == 0 && i + 1 < argc)
            strscpy(work, argv[++i], sizeof(work));
        else {
            fprintf(stderr, "usage: %s [--size-mb N] [--rounds N] [--dir DIR]\n", argv[0]);
            return 2;
        }
    }
    if (size_mb < 1 || rounds < 1)
        return 2;
    if (access("/usr/bin/qemu-img", X_OK) != 0 || access("/usr/bin/curl", X_OK) != 0) {
        printf("SKIP: bench-imgcache needs qemu-img and curl\n");
        return 77;
    }
    if (test_nginx_start(&ngx, 0, why, sizeof(why)) < 0) {
        printf("SKIP: %s\n", why);
        test_nginx_stop(&ngx);
        return 77;
    }
    if (!work[0]) {
        snprintf(work, sizeof(work), "/var/tmp/bench-imgcache-XXXXXX");
        if (!mkdtemp(work)) {
            perror("mkdtemp");
            return 1;
        }
    }
    printf("bench-imgcache: nginx %s on loopback, work dir %s\n", ngx.url, work);

    /* 1. one large image, pulled with verification, beside curl -o */
    printf("preparing a %ld MiB image ...\n", size_mb);
    test_nginx_put_random(&ngx, "big.raw", (size_t)size_mb << 20, 42);
    snprintf(path, sizeof(path), "%s/big.raw", ngx.root);
    sha256_file(path, digest, sizeof(digest)); /* also warms nginx's page cache */
    snprintf(url, sizeof(url), "%s/big.raw", ngx.url);
    bytes = (double)((uint64_t)size_mb << 20);
    ours = calloc((size_t)rounds, sizeof(double));
    theirs = calloc((size_t)rounds, sizeof(double));
    wire = calloc((size_t)rounds, sizeof(double));
    snprintf(out, sizeof(out), "%s/curl.img", work);
    snprintf(cache, sizeof(cache), "%s/cache", work);
    for (int i = 0; i < rounds; i++) {
        unlink(out);
        t = curl_o(url, out);
        theirs[i] = t > 0 ? bytes / t / 1e6 : 0;
        unlink(out);
        rm_rf(cache);
        t = pull(cache, url, digest, 1, &d);
        if (t < 0)
            fprintf(stderr, "pull failed: %s\n", d.message);
        ours[i] = t > 0 ? bytes / t / 1e6 : 0;
        rm_rf(cache);
        t = curl_o(url, "/dev/null");
        wire[i] = t > 0 ? bytes / t / 1e6 : 0;
        printf("  round %d: imgcache %.0f MB/s, curl -o %.0f MB/s, curl -o /dev/null %.0f MB/s\n",
               i + 1, ours[i], theirs[i], wire[i]);
    }
    {
        double o = median(ours, rounds), c = median(theirs, rounds);
        printf("pull %ld MiB, sha256-verified, fsync, inspected: %7.0f MB/s   "
               "baseline curl -o: %7.0f MB/s   ratio %.2f (target >= 0.90) %s\n",
               size_mb, o, c, c > 0 ? o / c : 0, c > 0 && o / c >= 0.9 ? "ok" : "MISSED");
        printf("  (for reference: the same transfer into /dev/null, no disk, no digest: %.0f MB/s)\n",
               median(wire, rounds));
    }
    free(ours);
    free(theirs);
    free(wire);

    /* 2. 32 concurrent acquires of one image */
    test_nginx_put_random(&ngx, "shared.raw", 64u << 20, 7);
    snprintf(path, sizeof(path), "%s/shared.raw", ngx.root);
    sha256_file(path, digest, sizeof(digest));
    snprintf(url, sizeof(url), "%s/shared.raw", ngx.url);
    gets_before = test_nginx_count(&ngx, "/shared.raw");
    t = pull(cache, url, digest, 32, &d);
    downloads = test_nginx_count(&ngx, "/shared.raw") - gets_before;
    rm_rf(cache);
    printf("32 concurrent acquires of a 64 MiB image: %d download(s), %d/32 succeeded, %.0f ms   "
           "target 1 download %s\n",
           downloads, d.calls - d.failures, t * 1e3, downloads == 1 && !d.failures ? "ok" : "MISSED");

    /* 3. overlays */
    bench_overlay(work, "100M", 100ull << 20, 20, &ovl_small, &ovl_small_q);
    bench_overlay(work, "10G", 10ull << 30, 20, &ovl_big, &ovl_big_q);
    printf("overlay on a 100 MiB base (20 GiB disk, fsync'd): %6.2f ms   baseline qemu-img create: "
           "%6.2f ms   target < 20 ms %s\n",
           ovl_small, ovl_small_q, ovl_small < 20 ? "ok" : "MISSED");
    printf("overlay on a 10 GiB base  (20 GiB disk, fsync'd): %6.2f ms   baseline qemu-img create: "
           "%6.2f ms   target < 20 ms %s\n",
           ovl_big, ovl_big_q, ovl_big < 20 ? "ok" : "MISSED");

    test_nginx_stop(&ngx);
    rm_rf(work);
    return 0;
}
