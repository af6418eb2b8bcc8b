/* Unit tests: agent/metadata's IMDSv2 tokens (made, checked, bound to the
 * instance, expired, tampered, non-canonical), the TTL header, the request
 * handler (404 nobody, 403 disabled, PUT semantics, 401 where required or
 * for a bad token, 405), the token bucket, the config drive (what is left
 * after a failure), and the service on a real loop over loopback: one
 * lookup per connection, 503 when throttled, a request head deadline, the
 * counters, and every handle closed at the end. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent/metadata/md-internal.h"

static const struct md_token_key key = {.key = "0123456789abcdef0123456789abcdef", .len = 32};
static const char *U1 = "6a6a6a6a-0000-4000-8000-000000000001", *U2 = "6a6a6a6a-0000-4000-8000-000000000002";

static struct md_instance *inst(const char *uuid)
{
    struct md_instance *m = md_instance_new();

    assert_non_null(m);
    strscpy(m->uuid, uuid, sizeof(m->uuid));
    strscpy(m->ec2_id, "i-0000000000000a001", sizeof(m->ec2_id));
    m->hostname = strdup("vm1");
    return m;
}

static void test_token(void **state)
{
    char tok[MD_TOKEN_LEN + 1], bad[MD_TOKEN_LEN + 1];
    struct md_token_key other = key;

    (void)state;
    assert_int_equal(md_token_make(&key, U1, 1000, 60, tok), 0);
    assert_int_equal(strlen(tok), MD_TOKEN_LEN);
    assert_true(md_token_check(&key, U1, 1000, tok, MD_TOKEN_LEN));
    assert_true(md_token_check(&key, U1, 1059, tok, MD_TOKEN_LEN));
    assert_false(md_token_check(&key, U1, 1060, tok, MD_TOKEN_LEN)); /* expired */
    assert_false(md_token_check(&key, U2, 1000, tok, MD_TOKEN_LEN)); /* another instance */
    other.key[0] ^= 1;
    assert_false(md_token_check(&other, U1, 1000, tok, MD_TOKEN_LEN)); /* another key (restart) */
    assert_false(md_token_check(&key, U1, 1000, tok, MD_TOKEN_LEN - 1));
    assert_false(md_token_check(&key, U1, 1000, NULL, 0));
    for (size_t i = 0; i < MD_TOKEN_LEN; i++) {
        memcpy(bad, tok, sizeof(tok));
        bad[i] = bad[i] == 'A' ? 'B' : 'A';
        assert_false(md_token_check(&key, U1, 1000, bad, MD_TOKEN_LEN));
    }
    /* (the last character's low 4 bits are padding: changing them is refused too, above) */
    /* an expiry beyond the longest TTL is refused even with a good MAC */
    assert_int_equal(md_token_make(&key, U1, 1000, MD_TOKEN_TTL_MAX * 2, tok), 0);
    assert_false(md_token_check(&key, U1, 1000, tok, MD_TOKEN_LEN));
}

static void test_ttl_parse(void **state)
{
    int t = 0;

    (void)state;
    assert_int_equal(md_token_ttl_parse("1", 1, &t), 0);
    assert_int_equal(t, 1);
    assert_int_equal(md_token_ttl_parse("21600", 5, &t), 0);
    assert_int_equal(t, 21600);
    assert_int_equal(md_token_ttl_parse("21601", 5, &t), -EINVAL);
    assert_int_equal(md_token_ttl_parse("0", 1, &t), -EINVAL);
    assert_int_equal(md_token_ttl_parse("", 0, &t), -EINVAL);
    assert_int_equal(md_token_ttl_parse("-1", 2, &t), -EINVAL);
    assert_int_equal(md_token_ttl_parse("60 ", 3, &t), -EINVAL);
    assert_int_equal(md_token_ttl_parse("0000060", 7, &t), -EINVAL);
    assert_int_equal(md_token_ttl_parse("6\0000", 3, &t), -EINVAL);
}

static int handle(const struct md_instance *m, const char *method, const char *path, const char *tok,
                  const char *ttl, bool xff, struct md_reply *rp)
{
    struct md_request rq = {.method = method, .path = path, .token = tok, .token_len = tok ? strlen(tok) : 0,
                            .ttl = ttl, .ttl_len = ttl ? strlen(ttl) : 0, .forwarded = xff, .now_s = 5000};

    assert_int_equal(md_handle(m, &key, &rq, rp), 0);
    return rp->a.status;
}

static int status(const struct md_instance *m, const char *method, const char *path, const char *tok,
                  const char *ttl, bool xff)
{
    struct md_reply rp;
    int s = handle(m, method, path, tok, ttl, xff, &rp);

    md_answer_release(&rp.a);
    return s;
}

static void test_handle(void **state)
{
    struct md_instance *a = inst(U1), *b = inst(U2);
    struct md_reply rp;
    char tok[MD_TOKEN_LEN + 1];

    (void)state;
    assert_int_equal(status(NULL, "GET", "/latest/meta-data/", NULL, NULL, false), 404);
    assert_int_equal(status(NULL, "PUT", "/latest/api/token", NULL, "60", false), 404);
    assert_int_equal(status(a, "GET", "/latest/meta-data/instance-id", NULL, NULL, false), 200);
    assert_int_equal(status(a, "HEAD", "/latest/meta-data/instance-id", NULL, NULL, false), 200);
    assert_int_equal(status(a, "POST", "/latest/meta-data/instance-id", NULL, NULL, false), 405);
    assert_int_equal(status(a, "DELETE", "/latest/api/token", NULL, NULL, false), 405);
    assert_int_equal(status(a, "GET", "/latest/api/token", NULL, NULL, false), 405);
    assert_int_equal(status(a, "PUT", "/latest/meta-data/", NULL, "60", false), 405);
    /* the PUT */
    assert_int_equal(status(a, "PUT", "/latest/api/token", NULL, NULL, false), 400);
    assert_int_equal(status(a, "PUT", "/latest/api/token", NULL, "0", false), 400);
    assert_int_equal(status(a, "PUT", "/latest/api/token", NULL, "21601", false), 400);
    assert_int_equal(status(a, "PUT", "/latest/api/token", NULL, "60", true), 403);
    assert_int_equal(status(a, "PUT", "/2021-03-23/api/token", NULL, "60", false), 403);
    assert_int_equal(status(a, "PUT", "/2009-04-04/api/token/", NULL, "60", false), 403);
    assert_int_equal(handle(a, "PUT", "/latest/api/token", NULL, "21600", false, &rp), 200);
    assert_true(rp.token_put);
    assert_int_equal(rp.ttl_s, 21600);
    assert_int_equal(rp.a.len, MD_TOKEN_LEN);
    strscpy(tok, rp.a.body, sizeof(tok));
    md_answer_release(&rp.a);
    /* optional: no token is fine, a bad one is not */
    assert_int_equal(status(a, "GET", "/latest/meta-data/instance-id", tok, NULL, false), 200);
    assert_int_equal(status(a, "GET", "/latest/meta-data/instance-id", "nonsense", NULL, false), 401);
    assert_int_equal(status(b, "GET", "/latest/meta-data/instance-id", tok, NULL, false), 401);
    /* required */
    a->http_tokens = MD_TOKENS_REQUIRED;
    assert_int_equal(status(a, "GET", "/latest/meta-data/instance-id", NULL, NULL, false), 401);
    assert_int_equal(status(a, "GET", "/openstack/latest/meta_data.json", NULL, NULL, false), 401);
    assert_int_equal(status(a, "GET", "/latest/meta-data/instance-id", tok, NULL, false), 200);
    assert_int_equal(status(a, "PUT", "/latest/api/token", NULL, "60", false), 200);
    /* disabled */
    a->endpoint_enabled = false;
    assert_int_equal(status(a, "GET", "/", tok, NULL, false), 403);
    assert_int_equal(status(a, "PUT", "/latest/api/token", NULL, "60", false), 403);
    md_instance_free(a);
    md_instance_free(b);
}

static void test_ratelimit(void **state)
{
    struct md_ratelimit *rl;
    int ok = 0;

    (void)state;
    assert_int_equal(md_ratelimit_new(10, 5, &rl), 0);
    for (int i = 0; i < 10; i++)
        ok += md_ratelimit_take(rl, 1, 0x0a000005, 1000);
    assert_int_equal(ok, 5);                                  /* the burst */
    assert_true(md_ratelimit_take(rl, 2, 0x0a000005, 1000));  /* another network: its own bucket */
    assert_true(md_ratelimit_take(rl, 1, 0x0a000006, 1000));  /* another source */
    assert_false(md_ratelimit_take(rl, 1, 0x0a000005, 1050)); /* half a token */
    assert_true(md_ratelimit_take(rl, 1, 0x0a000005, 1100));  /* one after 100 ms at 10/s */
    assert_false(md_ratelimit_take(rl, 1, 0x0a000005, 1100));
    ok = 0;
    for (int i = 0; i < 10; i++)
        ok += md_ratelimit_take(rl, 1, 0x0a000005, 100000); /* refilled to the burst, no more */
    assert_int_equal(ok, 5);
    /* many sources: the table stays bounded and each new one starts full */
    for (uint32_t s = 0; s < 100000; s++)
        assert_true(md_ratelimit_take(rl, 3, s, 200000));
    md_ratelimit_free(rl);
}

/* ---- the config drive ---- */

static char scratch[PATH_MAX];

static size_t entries(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    size_t n = 0;

    assert_non_null(d);
    while ((e = readdir(d)))
        n += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
    closedir(d);
    return n;
}

/* A crashed build's leftovers beside iso (two temp dirs, one holding a
 * user-data file, and ISO.tmp), age_s old. */
static void leftovers(const char *iso, int age_s)
{
    const char *dirs[] = {".d.Ab12Cd", ".d.zz99ZZ"};
    struct timespec ts[2];
    char p[PATH_MAX + 64];

    clock_gettime(CLOCK_REALTIME, &ts[0]);
    ts[0].tv_sec -= age_s;
    ts[1] = ts[0];
    for (size_t i = 0; i < ARRAY_SIZE(dirs); i++) {
        snprintf(p, sizeof(p), "%s%s", iso, dirs[i]);
        assert_int_equal(mkdir(p, 0700), 0);
        if (i == 0) {
            char f[PATH_MAX + 96];
            snprintf(f, sizeof(f), "%s/user-data", p);
            close(open(f, O_CREAT | O_WRONLY | O_CLOEXEC, 0600));
        }
        assert_int_equal(utimensat(AT_FDCWD, p, ts, 0), 0);
    }
    snprintf(p, sizeof(p), "%s.tmp", iso);
    close(open(p, O_CREAT | O_WRONLY | O_CLOEXEC, 0600));
    assert_int_equal(utimensat(AT_FDCWD, p, ts, 0), 0);
}

static void test_drive(void **state)
{
    struct md_instance *m = inst(U1);
    struct agent_error err = {0};
    char iso[PATH_MAX + 16];
    struct stat st;

    (void)state;
    snprintf(scratch, sizeof(scratch), "/tmp/h-b-unit-XXXXXX");
    assert_non_null(mkdtemp(scratch));
    snprintf(iso, sizeof(iso), "%s/cd.iso", scratch);
    /* a failing xorriso, a missing one: nothing left */
    assert_true(md_drive_build(m, MD_DRIVE_CONFIG2, iso, "/bin/false", &err) < 0);
    assert_non_null(strstr(err.message, "xorriso failed"));
    assert_int_equal(entries(scratch), 0);
    assert_true(md_drive_build(m, MD_DRIVE_NOCLOUD, iso, "/nonexistent/xorriso", &err) < 0);
    assert_int_equal(entries(scratch), 0);
    assert_true(md_drive_build(m, MD_DRIVE_CONFIG2, "/nonexistent-dir/cd.iso", NULL, &err) < 0);
    /* what a build that crashed left (its temp dir holds user-data, a
     * half-written .tmp): the next build removes it, failing or not */
    leftovers(iso, 0);
    assert_int_equal(entries(scratch), 3);
    assert_true(md_drive_build(m, MD_DRIVE_CONFIG2, iso, "/bin/false", &err) < 0);
    assert_int_equal(entries(scratch), 0);
    if (access("/usr/bin/xorriso", X_OK) == 0) {
        leftovers(iso, 0);
        assert_int_equal(md_drive_build(m, MD_DRIVE_CONFIG2, iso, "/usr/bin/xorriso", &err), 0);
        assert_int_equal(stat(iso, &st), 0);
        assert_true(st.st_size > 16 * 2048);
        assert_int_equal(entries(scratch), 1); /* the image only: no temp dir, no .tmp */
    }
    /* the reconcile's sweep: only what is older than a build can take */
    leftovers(iso, 0);
    assert_int_equal(md_drive_leftovers_remove(iso, 300), 0);
    assert_int_equal(md_drive_leftovers_remove(iso, 0), 3);
    leftovers(iso, 600);
    assert_int_equal(md_drive_leftovers_remove(iso, 300), 3);
    {
        /* another image's leftovers are not this one's */
        char other[PATH_MAX + 32];
        snprintf(other, sizeof(other), "%s/cd.iso2.tmp", scratch);
        close(open(other, O_CREAT | O_WRONLY | O_CLOEXEC, 0600));
        assert_int_equal(md_drive_leftovers_remove(iso, 0), 0);
        unlink(other);
    }
    /* terminate: the image and everything of its builds */
    leftovers(iso, 0);
    close(open(iso, O_CREAT | O_WRONLY | O_CLOEXEC, 0600));
    assert_int_equal(md_drive_remove(iso), 0);
    assert_int_equal(entries(scratch), 0);
    assert_int_equal(md_drive_remove(iso), 0); /* nothing there: fine */
    rmdir(scratch);
    md_instance_free(m);
}

/* ---- the service on a loop ---- */

struct world {
    uv_loop_t loop;
    struct md_service *svc;
    struct md_instance *m;
    int lookups;
    int port;
    uv_async_t done;
    void (*client)(struct world *w);
    char out[16384];
    size_t len;
    double took_s;
};

static int lookup_found(struct world *w, const char *network, const struct sockaddr_in *peer,
                        struct md_instance **out)
{
    if (strcmp(network, "t1") || peer->sin_addr.s_addr != htonl(INADDR_LOOPBACK))
        return -ENOENT;
    *out = md_instance_ref(w->m);
    return 0;
}

static int lookup(void *opaque, const char *network, const struct sockaddr_in *peer, struct md_instance **out)
{
    struct world *w = opaque;

    w->lookups++;
    return lookup_found(w, network, peer, out);
}

static int dial(int port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    /* (on the client thread: cmocka's asserts belong to the test's thread) */
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0)
        abort();
    return fd;
}

/* Sends req, reads until the server closes (at most 5 s). */
static void exchange(struct world *w, const char *req)
{
    int fd = dial(w->port);
    struct timespec t0, t1;

    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (send(fd, req, strlen(req), MSG_NOSIGNAL) != (ssize_t)strlen(req))
        abort();
    w->len = 0;
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        ssize_t n;
        if (poll(&p, 1, 5000) != 1)
            break;
        n = recv(fd, w->out + w->len, sizeof(w->out) - 1 - w->len, 0);
        if (n <= 0)
            break;
        w->len += (size_t)n;
    }
    w->out[w->len] = '\0';
    clock_gettime(CLOCK_MONOTONIC, &t1);
    w->took_s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    close(fd);
}

static void *client_main(void *arg)
{
    struct world *w = arg;

    w->client(w);
    uv_async_send(&w->done);
    return NULL;
}

static void on_done(uv_async_t *a)
{
    uv_stop(a->loop);
}

static void run_world(struct world *w, const struct md_service_config *cfg, void (*client)(struct world *))
{
    pthread_t t;

    assert_int_equal(uv_loop_init(&w->loop), 0);
    w->m = inst(U1);
    assert_int_equal(md_service_new(&w->loop, cfg, lookup, w, &w->svc), 0);
    assert_int_equal(md_service_listen(w->svc, "t1", NULL, "127.0.0.1", 0), 0);
    w->port = md_service_port(w->svc, "t1");
    assert_true(w->port > 0);
    assert_int_equal(md_service_port(w->svc, "t2"), -ENOENT);
    uv_async_init(&w->loop, &w->done, on_done);
    w->client = client;
    assert_int_equal(pthread_create(&t, NULL, client_main, w), 0);
    uv_run(&w->loop, UV_RUN_DEFAULT);
    pthread_join(t, NULL);
}

static void end_world(struct world *w)
{
    assert_int_equal(md_service_unlisten(w->svc, "t1"), 0);
    assert_int_equal(md_service_unlisten(w->svc, "t1"), -ENOENT);
    md_service_free(w->svc);
    uv_close((uv_handle_t *)&w->done, NULL);
    uv_run(&w->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&w->loop), 0);
    md_instance_free(w->m);
}

static size_t count_of(const char *s, const char *what)
{
    size_t n = 0;

    for (const char *p = s; (p = strstr(p, what)); p += strlen(what))
        n++;
    return n;
}

static void keepalive_client(struct world *w)
{
    exchange(w, "GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: x\r\n\r\n"
                "PUT /latest/api/token HTTP/1.1\r\nHost: x\r\nX-aws-ec2-metadata-token-ttl-seconds: 30\r\n"
                "Content-Length: 0\r\n\r\n"
                "GET /openstack/latest/meta_data.json HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 10.9.9.9\r\n"
                "Connection: close\r\n\r\n");
}

static void test_service_lookup_once(void **state)
{
    struct world *w = calloc(1, sizeof(*w));
    struct md_service_config cfg = {.rate = 1000, .burst = 1000};
    char *text = NULL;
    size_t len = 0;
    FILE *f;

    (void)state;
    run_world(w, &cfg, keepalive_client);
    assert_int_equal(count_of(w->out, "HTTP/1.1 200"), 3);
    assert_non_null(strstr(w->out, "i-0000000000000a001"));
    assert_non_null(strstr(w->out, "X-aws-ec2-metadata-token-ttl-seconds: 30"));
    assert_non_null(strstr(w->out, U1)); /* XFF on a GET: ignored, the connection's instance answers */
    assert_int_equal(w->lookups, 1);     /* once per connection */
    f = open_memstream(&text, &len);
    assert_int_equal(md_service_metrics(w->svc, f), 0);
    fclose(f);
    assert_non_null(strstr(text, "compute_agent_metadata_requests_total{code=\"200\"} 3\n"));
    assert_non_null(strstr(text, "compute_agent_metadata_tokens_issued_total 1\n"));
    free(text);
    end_world(w);
    free(w);
}

static void throttled_client(struct world *w)
{
    exchange(w, "GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n"
                "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
}

static void test_service_throttle(void **state)
{
    struct world *w = calloc(1, sizeof(*w));
    struct md_service_config cfg = {.rate = 0.001, .burst = 2};

    (void)state;
    run_world(w, &cfg, throttled_client);
    assert_int_equal(count_of(w->out, "HTTP/1.1 200"), 2);
    assert_int_equal(count_of(w->out, "HTTP/1.1 503"), 1);
    assert_non_null(strstr(w->out, "Retry-After: 1"));
    end_world(w);
    free(w);
}

static void slow_client(struct world *w)
{
    exchange(w, "GET /latest/meta-data/ HTTP/1.1\r\nHost: x\r\n"); /* never ends its head */
}

static void test_service_head_deadline(void **state)
{
    struct world *w = calloc(1, sizeof(*w));
    struct md_service_config cfg = {.header_timeout_s = 1};

    (void)state;
    run_world(w, &cfg, slow_client);
    assert_int_equal(w->len, 0);
    assert_true(w->took_s >= 0.9 && w->took_s < 3.0); /* cut at the deadline, not at poll's 5 s */
    end_world(w);
    free(w);
}

static void crowd_client(struct world *w)
{
    int a = dial(w->port), b = dial(w->port);

    /* a third connection beyond max_connections is closed at once, the first
     * two (idle, within their head deadline) stay */
    exchange(w, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    close(a);
    close(b);
}

static void test_service_connection_cap(void **state)
{
    struct world *w = calloc(1, sizeof(*w));
    struct md_service_config cfg = {.max_connections = 2, .header_timeout_s = 30};
    char *text = NULL;
    size_t len = 0;
    FILE *f;

    (void)state;
    run_world(w, &cfg, crowd_client);
    assert_int_equal(w->len, 0);
    assert_true(w->took_s < 2.0);
    f = open_memstream(&text, &len);
    md_service_metrics(w->svc, f);
    fclose(f);
    assert_non_null(strstr(text, "compute_agent_metadata_connections_refused_total 1\n"));
    free(text);
    end_world(w);
    free(w);
}

static int port2;
static char first[16384];

static void two_networks_client(struct world *w)
{
    int p1 = w->port;

    exchange(w, "GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    memcpy(first, w->out, w->len + 1);
    w->port = port2;
    exchange(w, "GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    w->port = p1;
}

static void test_service_two_networks(void **state)
{
    struct world *w = calloc(1, sizeof(*w));
    pthread_t t;

    (void)state;
    assert_int_equal(uv_loop_init(&w->loop), 0);
    w->m = inst(U1);
    assert_int_equal(md_service_new(&w->loop, NULL, lookup, w, &w->svc), 0);
    assert_int_equal(md_service_listen(w->svc, "t1", NULL, "127.0.0.1", 0), 0);
    assert_int_equal(md_service_listen(w->svc, "t2", NULL, "127.0.0.1", 0), 0);
    w->port = md_service_port(w->svc, "t1");
    port2 = md_service_port(w->svc, "t2");
    assert_true(port2 > 0 && port2 != w->port);
    uv_async_init(&w->loop, &w->done, on_done);
    w->client = two_networks_client;
    assert_int_equal(pthread_create(&t, NULL, client_main, w), 0);
    uv_run(&w->loop, UV_RUN_DEFAULT);
    pthread_join(t, NULL);
    /* t1's socket: the instance; t2's (the same peer address): nobody */
    assert_non_null(strstr(first, "HTTP/1.1 200"));
    assert_non_null(strstr(w->out, "HTTP/1.1 404"));
    assert_int_equal(w->lookups, 2);
    assert_int_equal(md_service_unlisten(w->svc, "t2"), 0);
    end_world(w);
    free(w);
}

/* A connection from src (127.0.0.x) to port, one keep-alive request: true
 * when it is answered (kept), false when closed at once (refused at
 * accept). fd left open in *out when kept. Client thread. */
static bool kept(int port, const char *src, int *out)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)}, me = {.sin_family = AF_INET};
    static const char req[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct pollfd p = {.fd = fd, .events = POLLIN};
    char buf[512];

    if (fd < 0 || inet_pton(AF_INET, src, &me.sin_addr) != 1 || bind(fd, (struct sockaddr *)&me, sizeof(me)) ||
        connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0)
        abort();
    send(fd, req, sizeof(req) - 1, MSG_NOSIGNAL); /* (a refused one may be closed already) */
    if (poll(&p, 1, 5000) != 1 || recv(fd, buf, sizeof(buf), 0) <= 0) {
        close(fd);
        return false;
    }
    *out = fd;
    return true;
}

static bool caps_ok;
static int caps_retries; /* refused while the server had not seen the close */

static void caps_client(struct world *w)
{
    int fds[8], n = 0;
    bool ok = true;

    /* per (network, source) 2: a third from 127.0.0.1 on t1 is refused */
    ok &= kept(w->port, "127.0.0.1", &fds[n]) && ++n;
    ok &= kept(w->port, "127.0.0.1", &fds[n]) && ++n;
    ok &= !kept(w->port, "127.0.0.1", &fds[n]);
    /* per network 3: another source fills t1, a third one is refused */
    ok &= kept(w->port, "127.0.0.2", &fds[n]) && ++n;
    ok &= !kept(w->port, "127.0.0.3", &fds[n]);
    /* the same address on t2 (overlapping CIDRs) is another source, and t1
     * full does not fill t2 */
    ok &= kept(port2, "127.0.0.1", &fds[n]) && ++n;
    ok &= kept(port2, "127.0.0.1", &fds[n]) && ++n;
    ok &= !kept(port2, "127.0.0.1", &fds[n]);
    /* a slot frees with its connection */
    close(fds[0]);
    {
        struct timespec d = {0, 0};
        bool again = false;
        for (int i = 0; i < 100 && !again; i++) {
            again = kept(w->port, "127.0.0.1", &fds[0]);
            if (!again) {
                caps_retries++;
                d.tv_nsec = 10 * 1000 * 1000; /* the server may not have seen the close yet */
                nanosleep(&d, NULL);
            }
        }
        ok &= again;
    }
    caps_ok = ok;
    for (int i = 0; i < n; i++)
        close(fds[i]);
}

static void test_service_connection_caps(void **state)
{
    struct world *w = calloc(1, sizeof(*w));
    struct md_service_config cfg = {.rate = 1000, .burst = 1000, .max_connections = 100, .max_per_network = 3,
                                    .max_per_source = 2, .header_timeout_s = 30};
    pthread_t t;
    char *text = NULL;
    size_t len = 0;
    FILE *f;

    (void)state;
    assert_int_equal(uv_loop_init(&w->loop), 0);
    w->m = inst(U1);
    assert_int_equal(md_service_new(&w->loop, &cfg, lookup, w, &w->svc), 0);
    assert_int_equal(md_service_listen(w->svc, "t1", NULL, "127.0.0.1", 0), 0);
    assert_int_equal(md_service_listen(w->svc, "t2", NULL, "127.0.0.1", 0), 0);
    w->port = md_service_port(w->svc, "t1");
    port2 = md_service_port(w->svc, "t2");
    uv_async_init(&w->loop, &w->done, on_done);
    w->client = caps_client;
    assert_int_equal(pthread_create(&t, NULL, client_main, w), 0);
    uv_run(&w->loop, UV_RUN_DEFAULT);
    pthread_join(t, NULL);
    assert_true(caps_ok);
    f = open_memstream(&text, &len);
    md_service_metrics(w->svc, f);
    fclose(f);
    {
        char want[96];
        snprintf(want, sizeof(want), "compute_agent_metadata_connections_refused_total %d\n", 3 + caps_retries);
        assert_non_null(strstr(text, want));
    }
    free(text);
    assert_int_equal(md_service_unlisten(w->svc, "t2"), 0);
    end_world(w);
    free(w);
}

static void stranger_client(struct world *w)
{
    exchange(w, "GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
}

static int lookup_nobody(void *opaque, const char *network, const struct sockaddr_in *peer, struct md_instance **out)
{
    (void)network;
    (void)peer;
    (void)out;
    ((struct world *)opaque)->lookups++;
    return -ENOENT;
}

static void test_service_nobody(void **state)
{
    struct world *w = calloc(1, sizeof(*w));
    pthread_t t;
    char *text = NULL;
    size_t len = 0;
    FILE *f;

    (void)state;
    assert_int_equal(uv_loop_init(&w->loop), 0);
    w->m = inst(U1);
    assert_int_equal(md_service_new(&w->loop, NULL, lookup_nobody, w, &w->svc), 0);
    assert_int_equal(md_service_listen(w->svc, "t1", NULL, "127.0.0.1", 0), 0);
    assert_int_equal(md_service_listen(w->svc, "bad", NULL, "not-an-ip", 0), -EINVAL);
    w->port = md_service_port(w->svc, "t1");
    uv_async_init(&w->loop, &w->done, on_done);
    w->client = stranger_client;
    assert_int_equal(pthread_create(&t, NULL, client_main, w), 0);
    uv_run(&w->loop, UV_RUN_DEFAULT);
    pthread_join(t, NULL);
    assert_non_null(strstr(w->out, "HTTP/1.1 404"));
    assert_null(strstr(w->out, "i-0000000000000a001"));
    f = open_memstream(&text, &len);
    md_service_metrics(w->svc, f);
    fclose(f);
    assert_non_null(strstr(text, "compute_agent_metadata_lookup_failures_total 1\n"));
    assert_non_null(strstr(text, "compute_agent_metadata_requests_total{code=\"404\"} 1\n"));
    free(text);
    end_world(w);
    free(w);
}

/* A lookup that fails transiently (as a neighbour dump interrupted by a
 * change, NLE_DUMP_INTR -> -EINTR, or -ENOMEM) the first time, then finds
 * the instance. */
static int flaky_errno;

static int lookup_flaky(void *opaque, const char *network, const struct sockaddr_in *peer, struct md_instance **out)
{
    struct world *w = opaque;

    if (w->lookups++ == 0)
        return flaky_errno;
    return lookup_found(w, network, peer, out);
}

static void two_gets_client(struct world *w)
{
    exchange(w, "GET /openstack/latest/meta_data.json HTTP/1.1\r\nHost: x\r\n\r\n"
                "GET /openstack/latest/meta_data.json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
}

static void flaky_world(struct world *w, int err)
{
    pthread_t t;
    struct md_service_config cfg = {.rate = 1000, .burst = 1000};

    flaky_errno = err;
    assert_int_equal(uv_loop_init(&w->loop), 0);
    w->m = inst(U1);
    assert_int_equal(md_service_new(&w->loop, &cfg, lookup_flaky, w, &w->svc), 0);
    assert_int_equal(md_service_listen(w->svc, "t1", NULL, "127.0.0.1", 0), 0);
    w->port = md_service_port(w->svc, "t1");
    uv_async_init(&w->loop, &w->done, on_done);
    w->client = two_gets_client;
    assert_int_equal(pthread_create(&t, NULL, client_main, w), 0);
    uv_run(&w->loop, UV_RUN_DEFAULT);
    pthread_join(t, NULL);
}

/* Only -ENOENT is "not yours" (404, kept for the connection); any other
 * lookup error is a 503 with Retry-After, not kept: the next request on the
 * same connection is looked up again and served. */
static void test_service_lookup_transient(void **state)
{
    static const int errs[] = {-EINTR, -ENOMEM, -EBUSY};

    (void)state;
    for (size_t i = 0; i < ARRAY_SIZE(errs); i++) {
        struct world *w = calloc(1, sizeof(*w));
        char *text = NULL, *second;
        size_t len = 0;
        FILE *f;

        flaky_world(w, errs[i]);
        assert_true(!strncmp(w->out, "HTTP/1.1 503", 12));
        assert_non_null(strstr(w->out, "Retry-After: 1\r\n"));
        assert_non_null(second = strstr(w->out + 12, "HTTP/1.1 "));
        assert_true(!strncmp(second, "HTTP/1.1 200", 12));
        assert_non_null(strstr(second, U1));
        assert_int_equal(w->lookups, 2);
        f = open_memstream(&text, &len);
        assert_int_equal(md_service_metrics(w->svc, f), 0);
        fclose(f);
        assert_non_null(strstr(text, "compute_agent_metadata_lookup_errors_total 1\n"));
        assert_non_null(strstr(text, "compute_agent_metadata_lookup_failures_total 0\n"));
        assert_non_null(strstr(text, "compute_agent_metadata_requests_total{code=\"503\"} 1\n"));
        assert_non_null(strstr(text, "compute_agent_metadata_requests_total{code=\"200\"} 1\n"));
        free(text);
        end_world(w);
        free(w);
    }
    /* -ENOENT: 404 for both, one lookup */
    {
        struct world *w = calloc(1, sizeof(*w));
        char *second;

        flaky_world(w, -ENOENT);
        assert_true(!strncmp(w->out, "HTTP/1.1 404", 12));
        assert_non_null(second = strstr(w->out + 12, "HTTP/1.1 "));
        assert_true(!strncmp(second, "HTTP/1.1 404", 12));
        assert_int_equal(w->lookups, 1);
        end_world(w);
        free(w);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_token),
        cmocka_unit_test(test_ttl_parse),
        cmocka_unit_test(test_handle),
        cmocka_unit_test(test_ratelimit),
        cmocka_unit_test(test_drive),
        cmocka_unit_test(test_service_lookup_once),
        cmocka_unit_test(test_service_throttle),
        cmocka_unit_test(test_service_head_deadline),
        cmocka_unit_test(test_service_nobody),
        cmocka_unit_test(test_service_lookup_transient),
        cmocka_unit_test(test_service_connection_cap),
        cmocka_unit_test(test_service_two_networks),
        cmocka_unit_test(test_service_connection_caps),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
