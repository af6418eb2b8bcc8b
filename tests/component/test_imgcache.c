/* tests/component/test_imgcache.c: the image cache against real servers on
 * loopback, started by this test: Debian's nginx (tests/lib/
 * imgcache-nginx.h) and, when installed, Debian's real glance-api (noauth,
 * SQLite, file store). A case whose server is missing is skipped with the
 * reason printed. Every case uses a fresh cache directory, a SQLite file in
 * WAL mode (as the agent's store), and ends with uv_loop_close() == 0.
 *
 * nginx listens on loopback, which a cache refuses by default: every case
 * allows 127.0.0.0/8 unless it says otherwise (allowed_networks "" is the
 * default). The cut-and-resume case uses real nginx too: the transfer runs through
 * nginx's limit_rate, and the test SIGKILLs nginx's worker half-way (the
 * master starts a new one); the cache resumes with a Range request. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <sys/mount.h>
#include <sys/statvfs.h>

#include "image-cache/imgcache-internal.h"
#include "tests/lib/imgcache-nginx.h"

#define SLOW_RATE (3 << 20) /* bytes/s for /slow/ */

static struct test_nginx ngx;
static bool have_nginx, have_qemu_img;
static char why_no_nginx[256];

/* ---- files served ---- */

struct served {
    const char *name;
    size_t size;
    char sha256[IMGCACHE_DIGEST_MAX];
    char sha512[IMGCACHE_DIGEST_MAX];
};

static struct served files[] = {
    {"small.raw", (3u << 20) + 5, "", ""},
    {"concur.raw", 8u << 20, "", ""},
    {"mismatch.raw", 1u << 20, "", ""},
    {"cut.raw", 8u << 20, "", ""},
    {"crash.raw", 12u << 20, "", ""},
    {"evA.raw", 1u << 20, "", ""},
    {"evB.raw", 1u << 20, "", ""},
    {"evC.raw", 1u << 20, "", ""},
    {"evD.raw", 1u << 20, "", ""},
    {"evE.raw", 1u << 20, "", ""},
    {"big.raw", 24u << 20, "", ""},
    {"mid.raw", 12u << 20, "", ""},
    {"good.qcow2", 0, "", ""},
    {"evil-backing.qcow2", 0, "", ""},
    {"evil-datafile.qcow2", 0, "", ""},
};

static struct served *served(const char *name)
{
    for (size_t i = 0; i < ARRAY_SIZE(files); i++)
        if (strcmp(files[i].name, name) == 0)
            return &files[i];
    fail_msg("no served file %s", name);
    return NULL;
}

static void file_digest(const char *path, const EVP_MD *md, const char *algo, char *out, size_t size)
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned char buf[65536], d[EVP_MAX_MD_SIZE];
    char hex[2 * EVP_MAX_MD_SIZE + 1];
    unsigned len;
    ssize_t n;
    int fd = open(path, O_RDONLY);

    assert_true(fd >= 0);
    EVP_DigestInit_ex(ctx, md, NULL);
    while ((n = read(fd, buf, sizeof(buf))) > 0)
        EVP_DigestUpdate(ctx, buf, (size_t)n);
    close(fd);
    EVP_DigestFinal_ex(ctx, d, &len);
    EVP_MD_CTX_free(ctx);
    imgcache_hex(d, len, hex);
    snprintf(out, size, "%s:%s", algo, hex);
}

static int run_argv(char *const argv[], bool quiet)
{
    posix_spawn_file_actions_t fa;
    pid_t pid;
    int st, r;

    posix_spawn_file_actions_init(&fa);
    if (quiet) {
        posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
        posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    }
    r = posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (r != 0)
        return -1;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void rm_rf(const char *path)
{
    char *argv[] = {"rm", "-rf", (char *)path, NULL};
    run_argv(argv, true);
}

static int group_setup(void **state)
{
    char p[PATH_MAX + 300], q[PATH_MAX + 300];

    (void)state;
    have_qemu_img = access("/usr/bin/qemu-img", X_OK) == 0;
    if (test_nginx_start(&ngx, SLOW_RATE, why_no_nginx, sizeof(why_no_nginx)) < 0) {
        test_nginx_stop(&ngx);
        return 0;
    }
    have_nginx = true;
    for (size_t i = 0; i < ARRAY_SIZE(files); i++)
        if (files[i].size)
            assert_int_equal(test_nginx_put_random(&ngx, files[i].name, files[i].size, (uint32_t)i + 1), 0);
    if (have_qemu_img) {
        snprintf(p, sizeof(p), "%s/small.raw", ngx.root);
        snprintf(q, sizeof(q), "%s/good.qcow2", ngx.root);
        {
            char *argv[] = {"qemu-img", "convert", "-f", "raw", "-O", "qcow2", p, q, NULL};
            assert_int_equal(run_argv(argv, true), 0);
        }
        snprintf(q, sizeof(q), "%s/evil-backing.qcow2", ngx.root);
        {
            char *argv[] = {"qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b",
                            "/etc/passwd", q, "1M", NULL};
            assert_int_equal(run_argv(argv, true), 0);
        }
        snprintf(p, sizeof(p), "data_file=%s/datafile.raw,data_file_raw=on", ngx.dir);
        snprintf(q, sizeof(q), "%s/evil-datafile.qcow2", ngx.root);
        {
            char *argv[] = {"qemu-img", "create", "-q", "-f", "qcow2", "-o", p, q, "1M", NULL};
            assert_int_equal(run_argv(argv, true), 0);
        }
    }
    for (size_t i = 0; i < ARRAY_SIZE(files); i++) {
        snprintf(p, sizeof(p), "%s/%s", ngx.root, files[i].name);
        if (access(p, R_OK) != 0)
            continue;
        file_digest(p, EVP_sha256(), "sha256", files[i].sha256, sizeof(files[i].sha256));
        file_digest(p, EVP_sha512(), "sha512", files[i].sha512, sizeof(files[i].sha512));
    }
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    if (have_nginx)
        test_nginx_stop(&ngx);
    return 0;
}

/* ---- a cache per case ---- */

struct env {
    uv_loop_t loop;
    sqlite3 *db;
    struct imgcache *c;
    char dir[64];      /* holds db and (unless elsewhere) the cache */
    char cache_dir[PATH_MAX];
    char db_path[PATH_MAX];
    struct imgcache_config cfg;
};

struct result {
    int calls;
    int status;
    struct agent_error err;
    char id[IMGCACHE_ID_LEN];
    char path[PATH_MAX];
    char format[16];
    char digest[IMGCACHE_DIGEST_MAX];
    uint64_t size, virtual_size;
};

static void need_servers(void)
{
    if (!have_nginx) {
        print_message("SKIP: %s\n", why_no_nginx);
        skip();
    }
    if (!have_qemu_img) {
        print_message("SKIP: qemu-img is not installed (apt-get install qemu-utils)\n");
        skip();
    }
}

/* A cache in cache_dir (NULL: under a new temp dir) on store db_path
 * (NULL: a new one in the temp dir). */
static void env_open_at(struct env *e, const char *cache_dir, const char *db_path,
                        const struct imgcache_config *over)
{
    struct agent_error err;

    memset(e, 0, sizeof(*e));
    snprintf(e->dir, sizeof(e->dir), "/tmp/imgcache-it-XXXXXX");
    assert_non_null(mkdtemp(e->dir));
    if (db_path)
        strscpy(e->db_path, db_path, sizeof(e->db_path));
    else
        snprintf(e->db_path, sizeof(e->db_path), "%s/store.sqlite", e->dir);
    if (cache_dir)
        strscpy(e->cache_dir, cache_dir, sizeof(e->cache_dir));
    else
        snprintf(e->cache_dir, sizeof(e->cache_dir), "%s/cache", e->dir);
    if (over)
        e->cfg = *over;
    e->cfg.dir = e->cache_dir;
    if (!e->cfg.retry_delay_ms)
        e->cfg.retry_delay_ms = 100;
    if (!e->cfg.allowed_networks)
        e->cfg.allowed_networks = "127.0.0.0/8";
    assert_int_equal(uv_loop_init(&e->loop), 0);
    assert_int_equal(sqlite3_open(e->db_path, &e->db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(e->db, "PRAGMA journal_mode=WAL", NULL, NULL, NULL), SQLITE_OK);
    assert_int_equal(imgcache_new(&e->loop, e->db, &e->cfg, &e->c, &err), 0);
}

static void env_open(struct env *e, const struct imgcache_config *over)
{
    env_open_at(e, NULL, NULL, over);
}

/* Close the cache and the loop (all handles closed), keep the files. */
static void env_stop(struct env *e)
{
    imgcache_free(e->c);
    e->c = NULL;
    uv_run(&e->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&e->loop), 0);
    sqlite3_close(e->db);
    e->db = NULL;
}

static void env_close(struct env *e)
{
    if (e->c)
        env_stop(e);
    rm_rf(e->dir);
}

static int completions; /* every callback, all cases */

static void on_done(int status, const struct imgcache_image_info *info,
                    const struct agent_error *err, void *opaque)
{
    struct result *r = opaque;

    completions++;
    r->calls++;
    r->status = status;
    if (status == 0) {
        strscpy(r->id, info->id, sizeof(r->id));
        strscpy(r->path, info->path, sizeof(r->path));
        strscpy(r->format, info->format, sizeof(r->format));
        strscpy(r->digest, info->digest, sizeof(r->digest));
        r->size = info->size;
        r->virtual_size = info->virtual_size;
    } else {
        r->err = *err;
    }
}

typedef void (*tick_hook)(struct env *e, void *arg);

struct ticker {
    uv_timer_t t;
    struct env *e;
    tick_hook hook;
    void *arg;
};

static void on_tick(uv_timer_t *t)
{
    struct ticker *tk = t->data;

    if (tk->hook)
        tk->hook(tk->e, tk->arg);
}

/* Run until *counter >= target, calling hook every 20 ms; at most limit_s. */
static void run_until(struct env *e, const int *counter, int target, int limit_s, tick_hook hook,
                      void *arg)
{
    struct ticker tk = {.e = e, .hook = hook, .arg = arg};
    uint64_t deadline = now_mono_ns() + (uint64_t)limit_s * 1000000000ull;

    uv_timer_init(&e->loop, &tk.t);
    tk.t.data = &tk;
    uv_timer_start(&tk.t, on_tick, 20, 20);
    while (*counter < target && now_mono_ns() < deadline)
        uv_run(&e->loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&tk.t, NULL);
    uv_run(&e->loop, UV_RUN_NOWAIT);
    if (*counter < target)
        fail_msg("timed out after %d s", limit_s);
}

static char *url_of(const char *path)
{
    static char buf[4][256];
    static int i;

    i = (i + 1) % 4;
    snprintf(buf[i], sizeof(buf[i]), "%s%s", ngx.url, path);
    return buf[i];
}

/* Acquire url with digest and wait for the result. */
static int acquire_wait(struct env *e, const char *url, const char *digest, const char *user,
                        struct result *res)
{
    struct imgcache_request req = {.url = url, .digest = digest};
    struct agent_error err;
    int r;

    memset(res, 0, sizeof(*res));
    r = imgcache_acquire(e->c, &req, user, on_done, res, NULL, &err);
    if (r < 0) {
        res->status = r;
        res->err = err;
        return r;
    }
    run_until(e, &res->calls, 1, 60, NULL, NULL);
    return res->status;
}

static int count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    int n = 0;

    if (!d)
        return -1;
    while ((de = readdir(d)))
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
            n++;
    closedir(d);
    return n;
}

static int count_dir(struct env *e, const char *sub)
{
    char p[PATH_MAX + 16];

    snprintf(p, sizeof(p), "%s/%s", e->cache_dir, sub);
    return count_entries(p);
}

static const char *state_of(struct env *e, const char *id)
{
    static char s[32];
    json_t *o = imgcache_get(e->c, id);

    if (!o)
        return "absent";
    strscpy(s, json_string_value(json_object_get(o, "state")), sizeof(s));
    json_decref(o);
    return s;
}

/* qemu-img's JSON about a file. */
static json_t *qemu_img_info(const char *path)
{
    char out[] = "/tmp/imgcache-qi-XXXXXX";
    int fd = mkstemp(out), st;
    posix_spawn_file_actions_t fa;
    char *argv[] = {"qemu-img", "info", "--output=json", "-U", (char *)path, NULL};
    pid_t pid;
    json_t *j;

    assert_true(fd >= 0);
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fd, 1);
    assert_int_equal(posix_spawnp(&pid, "qemu-img", &fa, NULL, argv, environ), 0);
    posix_spawn_file_actions_destroy(&fa);
    waitpid(pid, &st, 0);
    close(fd);
    j = json_load_file(out, 0, NULL);
    unlink(out);
    return j;
}

/* ---- cases ---- */

static void test_miss_then_hit(void **state)
{
    struct env e;
    struct result r1, r2;
    struct agent_error err;
    char ovl[PATH_MAX + 16];
    json_t *info;
    struct stat st;

    (void)state;
    need_servers();
    env_open(&e, NULL);
    assert_int_equal(acquire_wait(&e, url_of("/small.raw"), served("small.raw")->sha256, "vm-1", &r1), 0);
    assert_int_equal(test_nginx_count(&ngx, "/small.raw"), 1);
    assert_string_equal(r1.format, "raw");
    assert_string_equal(r1.digest, served("small.raw")->sha256);
    assert_int_equal(r1.size, served("small.raw")->size);
    assert_int_equal(stat(r1.path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0444);
    assert_int_equal(count_dir(&e, "tmp"), 0);

    /* hit: same entry, no request to the server */
    assert_int_equal(acquire_wait(&e, url_of("/small.raw"), served("small.raw")->sha256, "vm-2", &r2), 0);
    assert_string_equal(r2.id, r1.id);
    assert_int_equal(test_nginx_count(&ngx, "/small.raw"), 1);

    /* the overlay: backed by the base, format explicit, grown to 10 GiB */
    snprintf(ovl, sizeof(ovl), "%s/vm-1.qcow2", e.dir);
    assert_int_equal(imgcache_overlay_create(e.c, r1.id, ovl, 10ull << 30, &err), 0);
    info = qemu_img_info(ovl);
    assert_non_null(info);
    assert_string_equal(json_string_value(json_object_get(info, "format")), "qcow2");
    assert_int_equal(json_integer_value(json_object_get(info, "virtual-size")), 10ll << 30);
    assert_string_equal(json_string_value(json_object_get(info, "backing-filename")), r1.path);
    assert_string_equal(json_string_value(json_object_get(info, "backing-filename-format")), "raw");
    json_decref(info);
    {
        /* the guest sees the base's bytes, then zeros */
        char *argv[] = {"qemu-img", "compare", "-q", "-f", "raw", "-F", "qcow2", r1.path, ovl, NULL};
        assert_int_equal(run_argv(argv, true), 0);
    }
    snprintf(ovl, sizeof(ovl), "%s/small.qcow2", e.dir);
    assert_int_equal(imgcache_overlay_create(e.c, r1.id, ovl, 1 << 20, &err), -EINVAL);
    assert_string_equal(err.field, "flavor.disk_gb");
    assert_int_equal(imgcache_overlay_create(e.c, r1.id, ovl, 0, &err), 0); /* 0: base size */

    /* a qcow2 base: detected as such, overlay says so */
    assert_int_equal(acquire_wait(&e, url_of("/good.qcow2"), served("good.qcow2")->sha512, NULL, &r2), 0);
    assert_string_equal(r2.format, "qcow2");
    assert_int_equal(r2.virtual_size, served("small.raw")->size + 512 - 5);
    snprintf(ovl, sizeof(ovl), "%s/vm-q.qcow2", e.dir);
    assert_int_equal(imgcache_overlay_create(e.c, r2.id, ovl, 1ull << 30, &err), 0);
    info = qemu_img_info(ovl);
    assert_string_equal(json_string_value(json_object_get(info, "backing-filename-format")), "qcow2");
    json_decref(info);
    env_close(&e);
}

static void test_concurrent_32(void **state)
{
    struct env e;
    struct result res[32];
    int done = completions;
    struct agent_error err;
    struct imgcache_request req;

    (void)state;
    need_servers();
    env_open(&e, NULL);
    req = (struct imgcache_request){.url = url_of("/concur.raw"), .digest = served("concur.raw")->sha256};
    memset(res, 0, sizeof(res));
    for (int i = 0; i < 32; i++) {
        char user[40];
        snprintf(user, sizeof(user), "00000000-0000-4000-8000-0000000000%02u", (unsigned)i % 100u);
        assert_int_equal(imgcache_acquire(e.c, &req, user, on_done, &res[i], NULL, &err), 0);
    }
    run_until(&e, &completions, done + 32, 60, NULL, NULL);
    for (int i = 0; i < 32; i++) {
        assert_int_equal(res[i].status, 0);
        assert_string_equal(res[i].id, res[0].id);
    }
    assert_int_equal(test_nginx_count(&ngx, "/concur.raw"), 1);
    {
        json_t *o = imgcache_get(e.c, res[0].id);
        assert_int_equal(json_array_size(json_object_get(o, "in_use_by")), 32);
        json_decref(o);
    }
    env_close(&e);
}

static void test_digest_mismatch(void **state)
{
    struct env e;
    struct result r;
    json_t *o;

    (void)state;
    need_servers();
    env_open(&e, NULL);
    /* the digest of another file */
    assert_int_equal(acquire_wait(&e, url_of("/mismatch.raw"), served("small.raw")->sha256, "vm-1", &r),
                     -EBADMSG);
    assert_string_equal(r.err.code, "digest_mismatch");
    assert_non_null(strstr(r.err.message, served("small.raw")->sha256));
    assert_non_null(strstr(r.err.message, served("mismatch.raw")->sha256));
    print_message("    error: %s\n", r.err.message);
    assert_int_equal(count_dir(&e, "tmp"), 0);
    assert_int_equal(count_dir(&e, "images"), 0);
    o = imgcache_list(e.c);
    assert_int_equal(json_array_size(o), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(o, 0), "state")), "failed");
    assert_int_equal(json_array_size(json_object_get(json_array_get(o, 0), "in_use_by")), 0);
    json_decref(o);
    /* the right sha512 is accepted */
    assert_int_equal(acquire_wait(&e, url_of("/mismatch.raw"), served("mismatch.raw")->sha512, NULL, &r), 0);
    assert_string_equal(r.digest, served("mismatch.raw")->sha512);
    env_close(&e);
}

static void test_not_found(void **state)
{
    struct env e;
    struct result r;
    int before = test_nginx_count(&ngx, "/nope.raw");

    (void)state;
    need_servers();
    env_open(&e, NULL);
    assert_int_equal(acquire_wait(&e, url_of("/nope.raw"), served("small.raw")->sha256, NULL, &r), -ENOENT);
    assert_string_equal(r.err.code, "source_not_found");
    assert_non_null(strstr(r.err.message, "404"));
    assert_int_equal(test_nginx_count(&ngx, "/nope.raw") - before, 1); /* not retried */
    assert_int_equal(count_dir(&e, "tmp"), 0);
    env_close(&e);
}

struct cut_state {
    const char *id;
    bool killed;
    uint64_t at;
};

static void cut_hook(struct env *e, void *arg)
{
    struct cut_state *cs = arg;
    struct imgcache_progress p;

    if (cs->killed || imgcache_progress(e->c, cs->id, &p) < 0)
        return;
    if (p.bytes_done >= (3u << 20)) {
        pid_t w = test_nginx_worker(&ngx);
        assert_true(w > 0);
        kill(w, SIGKILL); /* the connection drops half-way; the master forks a new worker */
        cs->killed = true;
        cs->at = p.bytes_done;
    }
}

static void test_cut_and_resume(void **state)
{
    struct env e;
    struct result r = {0};
    struct agent_error err;
    char id[IMGCACHE_ID_LEN];
    struct imgcache_request req;
    struct cut_state cs = {.id = id};

    (void)state;
    need_servers();
    env_open(&e, NULL);
    req = (struct imgcache_request){.url = url_of("/slow/cut.raw"), .digest = served("cut.raw")->sha256};
    assert_int_equal(imgcache_acquire(e.c, &req, "vm-1", on_done, &r, id, &err), 0);
    run_until(&e, &r.calls, 1, 60, cut_hook, &cs);
    assert_true(cs.killed);
    if (r.status != 0)
        fail_msg("%s: %s", r.err.code, r.err.message);
    assert_string_equal(r.digest, served("cut.raw")->sha256);
    /* the second request asked for the rest only, and got 206 */
    assert_true(test_nginx_logged_range(&ngx, "/slow/cut.raw", 206));
    print_message("    cut at %llu bytes, resumed with Range\n", (unsigned long long)cs.at);
    assert_int_equal(count_dir(&e, "tmp"), 0);
    env_close(&e);
}

struct fill_state {
    const char *id;
    const char *filler;
    bool filled;
};

static void fill_hook(struct env *e, void *arg)
{
    struct fill_state *fs = arg;
    struct imgcache_progress p;
    char buf[65536] = {1};
    int fd;

    if (fs->filled || imgcache_progress(e->c, fs->id, &p) < 0 || p.bytes_done < (1u << 20))
        return;
    fs->filled = true;
    fd = open(fs->filler, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    while (write(fd, buf, sizeof(buf)) > 0)
        ;
    close(fd);
}

static void test_disk_full(void **state)
{
    char mnt[] = "/tmp/imgcache-tmpfs-XXXXXX", cache[PATH_MAX], filler[PATH_MAX];
    struct env e;
    struct result r = {0};
    struct agent_error err;
    struct imgcache_request req;
    char id[IMGCACHE_ID_LEN];
    struct fill_state fs = {.id = id};

    (void)state;
    need_servers();
    assert_non_null(mkdtemp(mnt));
    if (geteuid() != 0 || mount("tmpfs", mnt, "tmpfs", 0, "size=16m") < 0) {
        print_message("SKIP: cannot mount a tmpfs (needs root): %s\n", strerror(errno));
        rmdir(mnt);
        skip();
    }
    snprintf(cache, sizeof(cache), "%s/cache", mnt);
    snprintf(filler, sizeof(filler), "%s/filler", mnt);
    fs.filler = filler;
    env_open_at(&e, cache, NULL, NULL);

    /* larger than the disk: refused once its size is known, nothing written */
    assert_int_equal(acquire_wait(&e, url_of("/big.raw"), served("big.raw")->sha256, NULL, &r), -ENOSPC);
    assert_string_equal(r.err.code, "insufficient_resources");
    print_message("    early: %s\n", r.err.message);
    assert_int_equal(count_dir(&e, "tmp"), 0);

    /* fits when it starts, then the disk fills up under it */
    req = (struct imgcache_request){.url = url_of("/slow/mid.raw"), .digest = served("mid.raw")->sha256};
    memset(&r, 0, sizeof(r));
    assert_int_equal(imgcache_acquire(e.c, &req, NULL, on_done, &r, id, &err), 0);
    run_until(&e, &r.calls, 1, 60, fill_hook, &fs);
    assert_true(fs.filled);
    assert_int_equal(r.status, -ENOSPC);
    assert_string_equal(r.err.code, "insufficient_resources");
    assert_non_null(strstr(r.err.message, "no space left"));
    print_message("    mid-way: %s\n", r.err.message);
    assert_int_equal(count_dir(&e, "tmp"), 0);    /* nothing partial left */
    assert_int_equal(count_dir(&e, "images"), 0);
    assert_string_equal(state_of(&e, id), "failed");

    env_stop(&e);
    unlink(filler);
    assert_int_equal(umount(mnt), 0);
    rmdir(mnt);
    rm_rf(e.dir);
}

static void test_eviction_pinned(void **state)
{
    struct env e;
    struct imgcache_config cfg = {.budget_bytes = (3u << 20) + (1u << 19)}; /* 3.5 MiB */
    struct result a, b, c, d, x;

    (void)state;
    need_servers();
    env_open(&e, &cfg);
    assert_int_equal(acquire_wait(&e, url_of("/evA.raw"), served("evA.raw")->sha256, "vm-a", &a), 0);
    test_sleep_ms(5);
    assert_int_equal(acquire_wait(&e, url_of("/evB.raw"), served("evB.raw")->sha256, NULL, &b), 0);
    test_sleep_ms(5);
    assert_int_equal(acquire_wait(&e, url_of("/evC.raw"), served("evC.raw")->sha256, NULL, &c), 0);
    test_sleep_ms(5);
    /* A is the least recently used, but pinned: B goes */
    assert_int_equal(acquire_wait(&e, url_of("/evD.raw"), served("evD.raw")->sha256, NULL, &d), 0);
    assert_string_equal(state_of(&e, a.id), "cached");
    assert_string_equal(state_of(&e, b.id), "absent");
    assert_int_equal(access(b.path, F_OK), -1);
    assert_string_equal(state_of(&e, c.id), "cached");
    assert_string_equal(state_of(&e, d.id), "cached");
    assert_int_equal(access(a.path, F_OK), 0);
    test_sleep_ms(5);
    /* released, A counts as used now: C is next */
    assert_int_equal(imgcache_release(e.c, a.id, "vm-a"), 1);
    test_sleep_ms(5);
    assert_int_equal(acquire_wait(&e, url_of("/evE.raw"), served("evE.raw")->sha256, NULL, &x), 0);
    assert_string_equal(state_of(&e, c.id), "absent");
    assert_string_equal(state_of(&e, a.id), "cached");
    assert_string_equal(state_of(&e, d.id), "cached");
    /* too large for the budget with everything pinned */
    assert_int_equal(imgcache_release(e.c, NULL, "nobody"), 0);
    env_close(&e);
}

static void test_crash_during_download(void **state)
{
    struct env e;
    char dir[] = "/tmp/imgcache-crash-XXXXXX", cache[PATH_MAX], db[PATH_MAX], tmp[PATH_MAX + 8];
    pid_t child;
    int st;
    struct result r;
    json_t *list;

    (void)state;
    need_servers();
    assert_non_null(mkdtemp(dir));
    snprintf(cache, sizeof(cache), "%s/cache", dir);
    snprintf(db, sizeof(db), "%s/store.sqlite", dir);
    snprintf(tmp, sizeof(tmp), "%s/tmp", cache);
    child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        /* the agent: downloads slowly until killed */
        uv_loop_t loop;
        sqlite3 *h;
        struct imgcache *c;
        struct imgcache_config cfg = {.dir = cache, .allowed_networks = "127.0.0.0/8"};
        struct imgcache_request req = {.url = url_of("/slow/crash.raw"),
                                       .digest = served("crash.raw")->sha256};
        struct agent_error err;

        uv_loop_init(&loop);
        if (sqlite3_open(db, &h) != SQLITE_OK ||
            sqlite3_exec(h, "PRAGMA journal_mode=WAL", NULL, NULL, NULL) != SQLITE_OK ||
            imgcache_new(&loop, h, &cfg, &c, &err) < 0 ||
            imgcache_acquire(c, &req, "vm-1", NULL, NULL, NULL, &err) < 0)
            _exit(3);
        uv_run(&loop, UV_RUN_DEFAULT);
        _exit(4);
    }
    /* kill -9 once a few MiB are on disk */
    for (int i = 0; i < 500; i++) {
        DIR *d = opendir(tmp);
        struct dirent *de;
        bool enough = false;

        while (d && (de = readdir(d))) {
            struct stat s;
            if (fstatat(dirfd(d), de->d_name, &s, 0) == 0 && S_ISREG(s.st_mode) &&
                s.st_size >= (2 << 20))
                enough = true;
        }
        if (d)
            closedir(d);
        if (enough)
            break;
        test_sleep_ms(20);
    }
    assert_int_equal(count_entries(tmp), 1);
    kill(child, SIGKILL);
    assert_int_equal(waitpid(child, &st, 0), child);
    assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);

    /* restart on the same directory and store */
    env_open_at(&e, cache, db, NULL);
    assert_int_equal(count_dir(&e, "tmp"), 0);    /* leftovers removed */
    assert_int_equal(count_dir(&e, "images"), 0); /* no half image looks whole */
    list = imgcache_list(e.c);
    assert_int_equal(json_array_size(list), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(list, 0), "state")), "failed");
    assert_non_null(strstr(json_string_value(json_object_get(
                               json_object_get(json_array_get(list, 0), "error"), "message")),
                           "interrupted"));
    json_decref(list);
    /* and it can be fetched again */
    assert_int_equal(acquire_wait(&e, url_of("/crash.raw"), served("crash.raw")->sha256, "vm-1", &r), 0);
    assert_string_equal(state_of(&e, r.id), "cached");
    env_close(&e);
    rm_rf(dir);
}

static void test_malicious_qcow2(void **state)
{
    struct env e;
    struct result r;

    (void)state;
    need_servers();
    env_open(&e, NULL);
    assert_int_equal(acquire_wait(&e, url_of("/evil-backing.qcow2"),
                                  served("evil-backing.qcow2")->sha256, "vm-1", &r), -EPERM);
    assert_string_equal(r.err.code, "unsafe_image");
    assert_non_null(strstr(r.err.message, "/etc/passwd"));
    print_message("    backing file: %s\n", r.err.message);
    assert_int_equal(acquire_wait(&e, url_of("/evil-datafile.qcow2"),
                                  served("evil-datafile.qcow2")->sha256, NULL, &r), -EPERM);
    assert_string_equal(r.err.code, "unsafe_image");
    assert_non_null(strstr(r.err.message, "data file"));
    print_message("    data file: %s\n", r.err.message);
    assert_int_equal(count_dir(&e, "images"), 0);
    assert_int_equal(count_dir(&e, "tmp"), 0);
    env_close(&e);
}

static void test_forbidden_schemes(void **state)
{
    struct env e;
    struct result r;
    char gopher[128];

    (void)state;
    need_servers();
    env_open(&e, NULL);
    assert_int_equal(acquire_wait(&e, "file:///etc/passwd", served("small.raw")->sha256, NULL, &r), -EINVAL);
    assert_string_equal(r.err.field, "image.url");
    print_message("    file://: %s\n", r.err.message);
    snprintf(gopher, sizeof(gopher), "gopher://127.0.0.1:%d/_GET%%20/small.raw", ngx.port);
    assert_int_equal(acquire_wait(&e, gopher, served("small.raw")->sha256, NULL, &r), -EINVAL);
    print_message("    gopher://: %s\n", r.err.message);
    /* a redirect cannot smuggle one in either */
    assert_int_equal(acquire_wait(&e, url_of("/redir-file"), served("small.raw")->sha256, NULL, &r), -EPERM);
    assert_string_equal(r.err.code, "download_failed");
    print_message("    redirect to file://: %s\n", r.err.message);
    assert_int_equal(acquire_wait(&e, url_of("/loop"), served("small.raw")->sha256, NULL, &r), -EIO);
    print_message("    redirect loop: %s\n", r.err.message);
    /* an honest redirect is followed */
    assert_int_equal(acquire_wait(&e, url_of("/redir/small.raw"), served("small.raw")->sha256, NULL, &r), 0);
    env_close(&e);
}

/* Loopback is refused by default, and a redirect from an allowed origin to
 * a forbidden address is refused on the redirect's connection. */
static void test_forbidden_targets(void **state)
{
    struct env e;
    struct result r;
    struct imgcache_config none = {.allowed_networks = ""};
    struct imgcache_config one = {.allowed_networks = "127.0.0.1/32"};
    int before = test_nginx_count(&ngx, "/small.raw");

    (void)state;
    need_servers();
    /* the default: nginx on 127.0.0.1 is out of reach, nothing is asked */
    env_open(&e, &none);
    assert_int_equal(acquire_wait(&e, url_of("/small.raw"), served("small.raw")->sha256, "vm-1", &r),
                     -EACCES);
    assert_string_equal(r.err.code, "source_forbidden");
    assert_non_null(strstr(r.err.message, "loopback"));
    print_message("    default: %s\n", r.err.message);
    assert_int_equal(test_nginx_count(&ngx, "/small.raw"), before);
    assert_int_equal(count_dir(&e, "tmp"), 0);
    assert_int_equal(count_dir(&e, "images"), 0);
    env_close(&e);

    /* 127.0.0.1 allowed, 127.0.0.2 not: the redirect is refused */
    env_open(&e, &one);
    assert_int_equal(acquire_wait(&e, url_of("/to-lo2/small.raw"), served("small.raw")->sha256, NULL, &r),
                     -EACCES);
    assert_string_equal(r.err.code, "source_forbidden");
    assert_non_null(strstr(r.err.message, "127.0.0.2 is a loopback address"));
    assert_non_null(strstr(r.err.message, "redirected to http://127.0.0.2:"));
    print_message("    redirect: %s\n", r.err.message);
    assert_int_equal(acquire_wait(&e, url_of("/to-v6/small.raw"), served("small.raw")->sha256, NULL, &r),
                     -EACCES);
    assert_non_null(strstr(r.err.message, "::1 is the IPv6 loopback address"));
    print_message("    redirect: %s\n", r.err.message);
    assert_int_equal(test_nginx_count(&ngx, "/small.raw"), before); /* the target never asked */
    assert_int_equal(count_dir(&e, "tmp"), 0);
    assert_int_equal(count_dir(&e, "images"), 0);
    env_close(&e);

    /* the same redirect with 127.0.0.0/8 allowed: followed, the image comes */
    env_open(&e, NULL);
    assert_int_equal(acquire_wait(&e, url_of("/to-lo2/small.raw"), served("small.raw")->sha256, NULL, &r),
                     0);
    assert_int_equal(test_nginx_count(&ngx, "/small.raw"), before + 1);
    env_close(&e);
}

/* ---- Glance: Debian's real glance-api, noauth ---- */

struct glance {
    char dir[64];
    char url[64];
    pid_t pid;
};

static size_t sink(char *p, size_t s, size_t n, void *ud)
{
    json_t **out = ud;
    (void)p;
    if (out && !*out)
        *out = json_loadb(p, s * n, 0, NULL);
    return s * n;
}

/* One blocking HTTP call (test side only). Returns the status. */
static long http_call(const char *method, const char *url, const char *ctype, const void *body,
                      size_t len, json_t **answer)
{
    CURL *h = curl_easy_init();
    struct curl_slist *hd = NULL;
    long code = 0;
    char ct[128];

    if (ctype) {
        snprintf(ct, sizeof(ct), "Content-Type: %s", ctype);
        hd = curl_slist_append(hd, ct);
    }
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hd);
    if (body) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    }
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, sink);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, answer);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, 60L);
    if (curl_easy_perform(h) == CURLE_OK)
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
    curl_slist_free_all(hd);
    curl_easy_cleanup(h);
    return code;
}

static int glance_start(struct glance *g, char *why, size_t whylen)
{
    char p[128], conf[128];
    FILE *f;
    int port = test_free_port();

    g->pid = -1;
    if (access("/usr/bin/glance-api", X_OK) != 0 || access("/usr/bin/glance-manage", X_OK) != 0) {
        snprintf(why, whylen, "glance-api is not installed (apt-get install glance-api)");
        return -ENOENT;
    }
    snprintf(g->dir, sizeof(g->dir), "/tmp/imgcache-glance-XXXXXX");
    if (!mkdtemp(g->dir))
        return -errno;
    snprintf(g->url, sizeof(g->url), "http://127.0.0.1:%d", port);
    snprintf(conf, sizeof(conf), "%s/glance-api.conf", g->dir);
    f = fopen(conf, "w");
    if (!f)
        return -errno;
    fprintf(f,
            "[DEFAULT]\nbind_host = 127.0.0.1\nbind_port = %d\nworkers = 1\n"
            "log_file = %s/glance-api.log\nenabled_backends = fs:file\n"
            "[database]\nconnection = sqlite:///%s/glance.sqlite\n"
            "[paste_deploy]\nflavor =\nconfig_file = /etc/glance/glance-api-paste.ini\n"
            "[glance_store]\ndefault_backend = fs\n"
            "[fs]\nfilesystem_store_datadir = %s/images\n"
            "[oslo_concurrency]\nlock_path = %s/lock\n"
            "[os_glance_staging_store]\nfilesystem_store_datadir = %s/staging\n"
            "[os_glance_tasks_store]\nfilesystem_store_datadir = %s/tasks\n",
            port, g->dir, g->dir, g->dir, g->dir, g->dir, g->dir);
    fclose(f);
    {
        char *argv[] = {"glance-manage", "--config-file", conf, "db_sync", NULL};
        if (run_argv(argv, true) != 0) {
            snprintf(why, whylen, "glance-manage db_sync failed");
            return -EIO;
        }
    }
    {
        char *argv[] = {"glance-api", "--config-file", conf, NULL};
        posix_spawn_file_actions_t fa;
        int r;

        snprintf(p, sizeof(p), "%s/stdout.log", g->dir);
        posix_spawn_file_actions_init(&fa);
        posix_spawn_file_actions_addopen(&fa, 1, p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        posix_spawn_file_actions_adddup2(&fa, 1, 2);
        r = posix_spawnp(&g->pid, "glance-api", &fa, NULL, argv, environ);
        posix_spawn_file_actions_destroy(&fa);
        if (r != 0) {
            g->pid = -1;
            snprintf(why, whylen, "cannot run glance-api: %s", strerror(r));
            return -r;
        }
    }
    snprintf(p, sizeof(p), "%s/v2/images", g->url);
    for (int i = 0; i < 600; i++) { /* 60 s */
        if (http_call("GET", p, NULL, NULL, 0, NULL) == 200)
            return 0;
        test_sleep_ms(100);
    }
    snprintf(why, whylen, "glance-api did not answer (see %s)", g->dir);
    return -ETIMEDOUT;
}

static void glance_stop(struct glance *g)
{
    int st;

    if (g->pid > 0) {
        kill(g->pid, SIGTERM);
        for (int i = 0; i < 100 && waitpid(g->pid, &st, WNOHANG) == 0; i++)
            test_sleep_ms(50);
        if (kill(g->pid, 0) == 0) {
            kill(g->pid, SIGKILL);
            waitpid(g->pid, &st, 0);
        }
    }
    if (g->dir[0])
        rm_rf(g->dir);
}

/* Create an image; upload data unless NULL. Returns its id (static). */
static const char *glance_create(struct glance *g, const void *data, size_t len)
{
    static char id[IMGCACHE_ID_LEN];
    char url[256];
    const char *body = "{\"name\":\"imgcache-test\",\"disk_format\":\"raw\",\"container_format\":\"bare\"}";
    json_t *a = NULL;

    snprintf(url, sizeof(url), "%s/v2/images", g->url);
    assert_int_equal(http_call("POST", url, "application/json", body, strlen(body), &a), 201);
    strscpy(id, json_string_value(json_object_get(a, "id")), sizeof(id));
    json_decref(a);
    if (data) {
        snprintf(url, sizeof(url), "%s/v2/images/%s/file", g->url, id);
        assert_int_equal(http_call("PUT", url, "application/octet-stream", data, len, NULL), 204);
    }
    return id;
}

static void test_glance(void **state)
{
    struct glance g = {0};
    char why[256], id_active[IMGCACHE_ID_LEN], id_queued[IMGCACHE_ID_LEN], p[PATH_MAX + 16];
    struct env e;
    struct imgcache_config cfg = {.glance_token = "test-token"};
    struct imgcache_request req;
    struct result r, r2;
    struct agent_error err;
    size_t len;
    unsigned char *data;
    int fd;

    (void)state;
    need_servers();
    if (glance_start(&g, why, sizeof(why)) < 0) {
        glance_stop(&g);
        print_message("SKIP: %s\n", why);
        skip();
    }
    print_message("    real glance-api (Debian) at %s, noauth\n", g.url);
    snprintf(p, sizeof(p), "%s/small.raw", ngx.root);
    len = served("small.raw")->size;
    data = malloc(len);
    fd = open(p, O_RDONLY);
    assert_int_equal(read(fd, data, len), (ssize_t)len);
    close(fd);
    strscpy(id_active, glance_create(&g, data, len), sizeof(id_active));
    strscpy(id_queued, glance_create(&g, NULL, 0), sizeof(id_queued));
    free(data);

    cfg.glance_url = g.url;
    env_open(&e, &cfg);
    req = (struct imgcache_request){.glance_id = id_active};
    memset(&r, 0, sizeof(r));
    assert_int_equal(imgcache_acquire(e.c, &req, "vm-g", on_done, &r, NULL, &err), 0);
    run_until(&e, &r.calls, 1, 60, NULL, NULL);
    if (r.status != 0)
        fail_msg("%s: %s", r.err.code, r.err.message);
    /* Glance names it by os_hash_algo (sha512 by default) */
    assert_string_equal(r.digest, served("small.raw")->sha512);
    assert_string_equal(r.format, "raw");
    /* a hit by glance id, and the same content by URL is the same entry */
    memset(&r2, 0, sizeof(r2));
    assert_int_equal(imgcache_acquire(e.c, &req, NULL, on_done, &r2, NULL, &err), 0);
    run_until(&e, &r2.calls, 1, 10, NULL, NULL);
    assert_string_equal(r2.id, r.id);
    assert_int_equal(acquire_wait(&e, url_of("/small.raw"), served("small.raw")->sha512, NULL, &r2), 0);
    assert_string_equal(r2.id, r.id);

    req = (struct imgcache_request){.glance_id = id_queued};
    memset(&r, 0, sizeof(r));
    assert_int_equal(imgcache_acquire(e.c, &req, NULL, on_done, &r, NULL, &err), 0);
    run_until(&e, &r.calls, 1, 60, NULL, NULL);
    assert_int_equal(r.status, -EAGAIN);
    assert_string_equal(r.err.code, "image_not_active");
    print_message("    queued image: %s\n", r.err.message);

    req = (struct imgcache_request){.glance_id = "0b7a9c5e-8a43-4b5c-9a3f-3c1c6a0f9e11"};
    memset(&r, 0, sizeof(r));
    assert_int_equal(imgcache_acquire(e.c, &req, NULL, on_done, &r, NULL, &err), 0);
    run_until(&e, &r.calls, 1, 60, NULL, NULL);
    assert_string_equal(r.err.code, "source_not_found");
    assert_int_equal(count_dir(&e, "tmp"), 0);
    env_close(&e);
    glance_stop(&g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_miss_then_hit),
        cmocka_unit_test(test_concurrent_32),
        cmocka_unit_test(test_digest_mismatch),
        cmocka_unit_test(test_not_found),
        cmocka_unit_test(test_cut_and_resume),
        cmocka_unit_test(test_disk_full),
        cmocka_unit_test(test_eviction_pinned),
        cmocka_unit_test(test_crash_during_download),
        cmocka_unit_test(test_malicious_qcow2),
        cmocka_unit_test(test_forbidden_schemes),
        cmocka_unit_test(test_forbidden_targets),
        cmocka_unit_test(test_glance),
    };

    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
