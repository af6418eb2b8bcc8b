/* test_imgcache.c: unit tests of image-cache/: digests, URL and request
 * checks, qemu-img answers judged, the qcow2 overlay writer (byte for byte
 * against qemu-img), the SQLite index, the eviction order (with a pinned
 * image), and single flight against a small HTTP server on the test's own
 * loop. The real-nginx cases are in tests/component/test_imgcache.c. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* strcasestr */
#endif
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "image-cache/imgcache-internal.h"

extern char **environ;

/* ---- loop helpers ---- */

static void tick_cb(uv_timer_t *t)
{
    (void)t;
}

/* Run the loop until *counter reaches target (at most 60 s). A 10 ms tick
 * keeps UV_RUN_ONCE from sleeping until the cache's eviction timer. */
static void wait_for(uv_loop_t *loop, const int *counter, int target)
{
    uv_timer_t tick;
    uint64_t deadline = now_mono_ns() + 60ull * 1000000000ull;

    uv_timer_init(loop, &tick);
    uv_timer_start(&tick, tick_cb, 10, 10);
    while (*counter < target && now_mono_ns() < deadline)
        uv_run(loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&tick, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
    assert_true(*counter >= target);
}

/* ---- digests ---- */

static void test_digest_parse(void **state)
{
    struct imgcache_digest d;
    char buf[IMGCACHE_DIGEST_MAX];
    char s512[7 + 129] = "sha512:";

    (void)state;
    assert_int_equal(imgcache_digest_parse(
                         "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855", &d),
                     0);
    assert_int_equal(d.algo, IMGCACHE_ALGO_SHA256);
    imgcache_digest_format(&d, buf, sizeof(buf));
    assert_string_equal(buf, "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    for (int i = 0; i < 128; i++)
        s512[7 + i] = "0123456789abcdef"[i % 16];
    s512[7 + 128] = '\0';
    assert_int_equal(imgcache_digest_parse(s512, &d), 0);
    assert_int_equal(d.algo, IMGCACHE_ALGO_SHA512);

    assert_int_equal(imgcache_digest_parse(NULL, &d), -EINVAL);
    assert_int_equal(imgcache_digest_parse("", &d), -EINVAL);
    assert_int_equal(imgcache_digest_parse("sha256", &d), -EINVAL);
    assert_int_equal(imgcache_digest_parse("sha256:", &d), -EINVAL);
    assert_int_equal(imgcache_digest_parse("sha256:abc", &d), -EINVAL);
    assert_int_equal(imgcache_digest_parse(
                         "sha256:g3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", &d),
                     -EINVAL);
    assert_int_equal(imgcache_digest_parse(
                         "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b8550", &d),
                     -EINVAL);
    assert_int_equal(imgcache_digest_parse("md5:d41d8cd98f00b204e9800998ecf8427e", &d), -EINVAL);
    assert_int_equal(imgcache_digest_parse("sha1:da39a3ee5e6b4b0d3255bfef95601890afd80709", &d),
                     -EINVAL);
    s512[3] = '2'; /* "sha212:" */
    assert_int_equal(imgcache_digest_parse(s512, &d), -EINVAL);
}

/* ---- URLs and requests ---- */

static void test_url_schemes(void **state)
{
    struct agent_error err;
    static const char *const good[] = {
        "http://example.com/a.img", "https://example.com:8443/x?y=1", "HTTP://EXAMPLE.COM/a",
        "http://127.0.0.1:8080/", "https://[::1]/img",
    };
    static const char *const bad[] = {
        "file:///etc/passwd", "gopher://example.com/_x", "ftp://example.com/a", "dict://x/",
        "ldap://x/", "scp://x/a", "javascript:alert(1)", "example.com/a.img", "http://",
        "http:///path", "http://exa mple.com/", "http://example.com/\r\nX: y", "", "//example.com/a",
        "data:,hello",
    };

    (void)state;
    for (size_t i = 0; i < ARRAY_SIZE(good); i++)
        assert_int_equal(imgcache_url_check(good[i], "url", &err), 0);
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        memset(&err, 0, sizeof(err));
        assert_int_equal(imgcache_url_check(bad[i], "url", &err), -EINVAL);
        assert_string_equal(err.code, "invalid_field");
        assert_string_equal(err.field, "url");
    }
    imgcache_url_check("gopher://example.com/", "image.url", &err);
    assert_non_null(strstr(err.message, "gopher"));
}

static const char *const SHA_EMPTY =
    "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

static void test_request_from_json(void **state)
{
    struct imgcache_request req;
    struct agent_error err;
    json_t *o;

    (void)state;
    o = json_pack("{s:s,s:s}", "url", "https://x/a.img", "digest", SHA_EMPTY);
    assert_int_equal(imgcache_request_from_json(o, "image", &req, &err), 0);
    assert_string_equal(req.url, "https://x/a.img");
    assert_null(req.glance_id);
    json_decref(o);

    o = json_pack("{s:s}", "url", "https://x/a.img");
    assert_int_equal(imgcache_request_from_json(o, "image", &req, &err), -EINVAL);
    assert_string_equal(err.code, "missing_field");
    assert_string_equal(err.field, "image.digest");
    json_decref(o);

    o = json_pack("{s:s,s:s}", "url", "file:///etc/passwd", "digest", SHA_EMPTY);
    assert_int_equal(imgcache_request_from_json(o, "", &req, &err), -EINVAL);
    assert_string_equal(err.field, "url");
    json_decref(o);

    o = json_pack("{s:s,s:s}", "url", "https://x/a", "digest", "md5:d41d8cd98f00b204e9800998ecf8427e");
    assert_int_equal(imgcache_request_from_json(o, "image", &req, &err), -EINVAL);
    assert_string_equal(err.field, "image.digest");
    json_decref(o);

    o = json_pack("{s:s,s:s}", "glance_id", "0b7a9c5e-8a43-4b5c-9a3f-3c1c6a0f9e11", "url", "https://x/");
    assert_int_equal(imgcache_request_from_json(o, "image", &req, &err), -EINVAL);
    json_decref(o);

    o = json_pack("{s:s}", "glance_id", "../../etc/passwd");
    assert_int_equal(imgcache_request_from_json(o, "image", &req, &err), -EINVAL);
    assert_string_equal(err.field, "image.glance_id");
    json_decref(o);

    o = json_pack("{s:s,s:i}", "glance_id", "0b7a9c5e-8a43-4b5c-9a3f-3c1c6a0f9e11", "size", 3);
    assert_int_equal(imgcache_request_from_json(o, "image", &req, &err), -EINVAL);
    assert_string_equal(err.code, "unknown_field");
    assert_string_equal(err.field, "image.size");
    json_decref(o);

    o = json_pack("{s:i}", "url", 3);
    assert_int_equal(imgcache_request_from_json(o, "image", &req, &err), -EINVAL);
    assert_string_equal(err.field, "image.url");
    json_decref(o);

    o = json_pack("{}");
    assert_int_equal(imgcache_request_from_json(o, "image", &req, &err), -EINVAL);
    assert_string_equal(err.code, "missing_field");
    json_decref(o);

    o = json_pack("{s:s}", "id", "0b7a9c5e-8a43-4b5c-9a3f-3c1c6a0f9e11");
    assert_int_equal(imgcache_request_from_json(o, "image", &req, &err), 0);
    assert_string_equal(req.id, "0b7a9c5e-8a43-4b5c-9a3f-3c1c6a0f9e11");
    json_decref(o);
}

static void test_transient(void **state)
{
    (void)state;
    assert_true(imgcache_http_status_transient(503));
    assert_true(imgcache_http_status_transient(429));
    assert_false(imgcache_http_status_transient(404));
    assert_false(imgcache_http_status_transient(403));
    assert_false(imgcache_http_status_transient(501));
    assert_true(imgcache_curl_transient(CURLE_PARTIAL_FILE));
    assert_true(imgcache_curl_transient(CURLE_OPERATION_TIMEDOUT));
    assert_false(imgcache_curl_transient(CURLE_UNSUPPORTED_PROTOCOL));
    assert_false(imgcache_curl_transient(CURLE_TOO_MANY_REDIRECTS));
}

/* ---- Glance metadata ---- */

static void test_glance_parse(void **state)
{
    struct imgcache_glance_meta m;
    struct agent_error err;
    const char *active =
        "{\"status\":\"active\",\"size\":1000000,\"checksum\":\"49F1E7D5CC26AB6DFD9D58C80A41B6D4\","
        "\"os_hash_algo\":\"sha512\",\"os_hash_value\":\"5bfe5be65a89caa3e1e1ab8cf912f241616ad5a62c9"
        "e08dac346d750d24969516ce8d3691db271c4f2415d9b41608ce5ec09df0ee6f87ff762e282d70e0b7590\"}";
    const char *md5only = "{\"status\":\"active\",\"size\":null,\"checksum\":\"49f1e7d5cc26ab6dfd9d58c80a41b6d4\","
                          "\"os_hash_algo\":null,\"os_hash_value\":null}";
    const char *other_algo = "{\"status\":\"active\",\"os_hash_algo\":\"sha3_256\",\"os_hash_value\":\"ab\"}";
    const char *bad_hash = "{\"status\":\"active\",\"os_hash_algo\":\"sha256\",\"os_hash_value\":\"xyz\"}";

    (void)state;
    assert_int_equal(imgcache_glance_parse(active, strlen(active), &m, &err), 0);
    assert_string_equal(m.status, "active");
    assert_int_equal(m.size, 1000000);
    assert_int_equal(m.algo, IMGCACHE_ALGO_SHA512);
    assert_int_equal(strlen(m.hash_hex), 128);
    assert_string_equal(m.md5_hex, "49f1e7d5cc26ab6dfd9d58c80a41b6d4");
    assert_int_equal(imgcache_glance_parse(md5only, strlen(md5only), &m, &err), 0);
    assert_int_equal(m.algo, IMGCACHE_ALGO_NONE);
    assert_int_equal(m.size, 0);
    assert_string_equal(m.md5_hex, "49f1e7d5cc26ab6dfd9d58c80a41b6d4");
    assert_int_equal(imgcache_glance_parse(other_algo, strlen(other_algo), &m, &err), 0);
    assert_int_equal(m.algo, IMGCACHE_ALGO_NONE);
    assert_int_equal(imgcache_glance_parse(bad_hash, strlen(bad_hash), &m, &err), -EINVAL);
    assert_int_equal(imgcache_glance_parse("{\"size\":3}", 10, &m, &err), -EINVAL);
    assert_int_equal(imgcache_glance_parse("nope", 4, &m, &err), -EINVAL);
    assert_string_equal(err.code, "glance_error");
}

/* ---- qemu-img answers ---- */

static void test_inspect_judge(void **state)
{
    struct imgcache_inspect out;
    struct agent_error err;
    const char *raw = "{\"virtual-size\":104857600,\"filename\":\"x\",\"format\":\"raw\"}";
    const char *qcow2 = "{\"virtual-size\":1073741824,\"format\":\"qcow2\",\"format-specific\":"
                        "{\"type\":\"qcow2\",\"data\":{\"compat\":\"1.1\",\"corrupt\":false}}}";
    const char *backing = "{\"virtual-size\":1048576,\"format\":\"qcow2\",\"backing-filename\":"
                          "\"/etc/passwd\",\"full-backing-filename\":\"/etc/passwd\"}";
    const char *datafile = "{\"virtual-size\":1048576,\"format\":\"qcow2\",\"format-specific\":"
                           "{\"type\":\"qcow2\",\"data\":{\"data-file\":\"/etc/shadow\"}}}";
    const char *vmdk = "{\"virtual-size\":1048576,\"format\":\"vmdk\"}";
    const char *corrupt = "{\"virtual-size\":1048576,\"format\":\"qcow2\",\"format-specific\":"
                          "{\"type\":\"qcow2\",\"data\":{\"corrupt\":true}}}";
    const char *encrypted = "{\"virtual-size\":1048576,\"format\":\"qcow2\",\"encrypted\":true}";

    (void)state;
    assert_int_equal(imgcache_inspect_judge(raw, strlen(raw), 1ull << 30, &out, &err), 0);
    assert_string_equal(out.format, "raw");
    assert_int_equal(out.virtual_size, 104857600);
    assert_int_equal(imgcache_inspect_judge(qcow2, strlen(qcow2), 1ull << 30, &out, &err), 0);
    assert_string_equal(out.format, "qcow2");
    assert_int_equal(imgcache_inspect_judge(qcow2, strlen(qcow2), (1ull << 30) - 1, &out, &err), -EFBIG);
    assert_string_equal(err.code, "image_too_large");
    assert_int_equal(imgcache_inspect_judge(backing, strlen(backing), 1ull << 30, &out, &err), -EPERM);
    assert_string_equal(err.code, "unsafe_image");
    assert_non_null(strstr(err.message, "/etc/passwd"));
    assert_int_equal(imgcache_inspect_judge(datafile, strlen(datafile), 1ull << 30, &out, &err), -EPERM);
    assert_non_null(strstr(err.message, "data file"));
    assert_int_equal(imgcache_inspect_judge(vmdk, strlen(vmdk), 1ull << 30, &out, &err), -EINVAL);
    assert_string_equal(err.code, "unsupported_format");
    assert_int_equal(imgcache_inspect_judge(corrupt, strlen(corrupt), 1ull << 30, &out, &err), -EINVAL);
    assert_int_equal(imgcache_inspect_judge(encrypted, strlen(encrypted), 1ull << 30, &out, &err), -EPERM);
    assert_int_equal(imgcache_inspect_judge("[]", 2, 1ull << 30, &out, &err), -EINVAL);
}

/* ---- overlays against qemu-img ---- */

static int run(char *const argv[])
{
    pid_t pid;
    int st;
    posix_spawn_file_actions_t fa;

    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    if (posix_spawn(&pid, argv[0], &fa, NULL, argv, environ) != 0) {
        posix_spawn_file_actions_destroy(&fa);
        return -1;
    }
    posix_spawn_file_actions_destroy(&fa);
    waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static unsigned char *slurp(const char *path, size_t *len)
{
    struct stat st;
    unsigned char *buf;
    int fd = open(path, O_RDONLY);

    if (fd < 0 || fstat(fd, &st) < 0)
        return NULL;
    buf = calloc(1, (size_t)st.st_size + 1);
    if (buf && read(fd, buf, (size_t)st.st_size) != st.st_size) {
        free(buf);
        buf = NULL;
    }
    close(fd);
    *len = (size_t)st.st_size;
    return buf;
}

static void compare_with_qemu_img(const char *dir, const char *base_fmt, const char *size)
{
    char base[256], ours[256], theirs[256];
    uint64_t bytes;
    struct agent_error err;
    size_t la, lb;
    unsigned char *a, *b;
    int64_t v;

    snprintf(base, sizeof(base), "%s/base.%s", dir, base_fmt);
    snprintf(ours, sizeof(ours), "%s/ours-%s-%s.qcow2", dir, base_fmt, size);
    snprintf(theirs, sizeof(theirs), "%s/theirs-%s-%s.qcow2", dir, base_fmt, size);
    {
        char *argv[] = {"/usr/bin/qemu-img", "create", "-q", "-f", "qcow2", "-F", (char *)base_fmt,
                        "-b", base, theirs, (char *)size, NULL};
        assert_int_equal(run(argv), 0);
    }
    assert_int_equal(parse_int64(size, 1, INT64_MAX, &v), 0);
    bytes = (uint64_t)v;
    assert_int_equal(imgcache_qcow2_overlay_write(ours, base, base_fmt, bytes, &err), 0);
    a = slurp(ours, &la);
    b = slurp(theirs, &lb);
    assert_non_null(a);
    assert_non_null(b);
    assert_int_equal(la, lb);
    assert_memory_equal(a, b, la);
    free(a);
    free(b);
    {
        char *argv[] = {"/usr/bin/qemu-img", "check", "-q", ours, NULL};
        assert_int_equal(run(argv), 0);
    }
    /* refuses to overwrite */
    assert_int_equal(imgcache_qcow2_overlay_write(ours, base, base_fmt, bytes, &err), -EEXIST);
}

/* issue 11: a blank qcow2 (a kernel-only launch's ephemeral disk), byte for
 * byte what qemu-img makes without a backing file */
static void test_blank_matches_qemu_img(void **state)
{
    char dir[] = "/tmp/imgcache-blank-XXXXXX", ours[300], theirs[300];
    struct agent_error err;
    size_t la, lb;
    unsigned char *a, *b;

    (void)state;
    if (access("/usr/bin/qemu-img", X_OK) != 0)
        skip();
    assert_non_null(mkdtemp(dir));
    snprintf(ours, sizeof(ours), "%s/ours.qcow2", dir);
    snprintf(theirs, sizeof(theirs), "%s/theirs.qcow2", dir);
    {
        char *argv[] = {"/usr/bin/qemu-img", "create", "-q", "-f", "qcow2", theirs, "2147483648", NULL};
        assert_int_equal(run(argv), 0);
    }
    assert_int_equal(imgcache_qcow2_overlay_write(ours, NULL, NULL, 2ull << 30, &err), 0);
    a = slurp(ours, &la);
    b = slurp(theirs, &lb);
    assert_non_null(a);
    assert_non_null(b);
    assert_int_equal(la, lb);
    assert_memory_equal(a, b, la);
    free(a);
    free(b);
    {
        char *argv[] = {"/usr/bin/qemu-img", "check", "-q", ours, NULL};
        assert_int_equal(run(argv), 0);
    }
    unlink(ours);
    unlink(theirs);
    rmdir(dir);
}

static void test_overlay_matches_qemu_img(void **state)
{
    char dir[] = "/tmp/imgcache-ovl-XXXXXX";
    char path[300];
    struct agent_error err;

    (void)state;
    if (access("/usr/bin/qemu-img", X_OK) != 0)
        skip();
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/base.raw", dir);
    assert_int_equal(truncate(path, 0) == 0 || errno == ENOENT, 1);
    {
        int fd = open(path, O_CREAT | O_WRONLY, 0644);
        assert_true(fd >= 0);
        assert_int_equal(ftruncate(fd, 100 << 20), 0);
        close(fd);
    }
    snprintf(path, sizeof(path), "%s/base.qcow2", dir);
    {
        char *argv[] = {"/usr/bin/qemu-img", "create", "-q", "-f", "qcow2", path, "1G", NULL};
        assert_int_equal(run(argv), 0);
    }
    compare_with_qemu_img(dir, "raw", "104857600");
    compare_with_qemu_img(dir, "raw", "10737418240");
    compare_with_qemu_img(dir, "raw", "70368744177664"); /* 64 TiB: L1 spans 16 clusters */
    compare_with_qemu_img(dir, "qcow2", "1073741824");
    compare_with_qemu_img(dir, "qcow2", "21474836480");
    compare_with_qemu_img(dir, "raw", "104858000"); /* rounded up to 512 as qemu-img does */

    snprintf(path, sizeof(path), "%s/x.qcow2", dir);
    assert_int_equal(imgcache_qcow2_overlay_write(path, "relative/base", "raw", 1 << 20, &err), -EINVAL);
    assert_int_equal(imgcache_qcow2_overlay_write(path, "/x/base", "vmdk", 1 << 20, &err), -EINVAL);
    assert_int_equal(imgcache_qcow2_overlay_write(path, "/x/base", "raw", 0, &err), -EINVAL);
    {
        char *argv[] = {"/bin/rm", "-rf", dir, NULL};
        run(argv);
    }
}

/* ---- the index ---- */

static sqlite3 *open_memdb(void)
{
    sqlite3 *db = NULL;

    assert_int_equal(sqlite3_open(":memory:", &db), SQLITE_OK);
    assert_int_equal(imgcache_index_init(db), 0);
    assert_int_equal(imgcache_index_init(db), 0); /* idempotent */
    return db;
}

static void make_row(struct imgcache_row *r, const char *id, const char *digest, int64_t size,
                     int64_t last_used)
{
    memset(r, 0, sizeof(*r));
    strscpy(r->id, id, sizeof(r->id));
    strscpy(r->digest, digest, sizeof(r->digest));
    r->state = IMGCACHE_CACHED;
    strscpy(r->format, "raw", sizeof(r->format));
    r->size = size;
    r->virtual_size = size;
    r->created_at = last_used;
    r->last_used_at = last_used;
}

static void test_index(void **state)
{
    sqlite3 *db = open_memdb();
    struct imgcache_row r, g;
    struct imgcache_victim *v = NULL;
    size_t n = 0;
    uint64_t bytes;
    json_t *users;

    (void)state;
    make_row(&r, "00000000-0000-4000-8000-000000000001", "sha256:aa", 100, 1000);
    r.url = "http://x/1";
    assert_int_equal(imgcache_index_insert(db, &r), 0);
    make_row(&r, "00000000-0000-4000-8000-000000000002", "sha256:bb", 200, 2000);
    assert_int_equal(imgcache_index_insert(db, &r), 0);
    make_row(&r, "00000000-0000-4000-8000-000000000003", "sha256:bb", 1, 1); /* same digest */
    assert_int_equal(imgcache_index_insert(db, &r), -EEXIST);
    make_row(&r, "00000000-0000-4000-8000-000000000004", "", 0, 3000);
    r.state = IMGCACHE_DOWNLOADING;
    r.size = -1;
    strscpy(r.glance_id, "0b7a9c5e-8a43-4b5c-9a3f-3c1c6a0f9e11", sizeof(r.glance_id));
    assert_int_equal(imgcache_index_insert(db, &r), 0);
    make_row(&r, "00000000-0000-4000-8000-000000000005", "", 0, 4000); /* NULL digests coexist */
    r.state = IMGCACHE_FAILED;
    assert_int_equal(imgcache_index_insert(db, &r), 0);

    assert_int_equal(imgcache_index_get(db, "00000000-0000-4000-8000-000000000001", &g), 0);
    assert_string_equal(g.url, "http://x/1");
    assert_int_equal(g.size, 100);
    assert_int_equal(g.state, IMGCACHE_CACHED);
    imgcache_row_clear(&g);
    assert_int_equal(imgcache_index_get(db, "nope", &g), -ENOENT);
    assert_int_equal(imgcache_index_find_digest(db, "sha256:bb", &g), 0);
    assert_string_equal(g.id, "00000000-0000-4000-8000-000000000002");
    imgcache_row_clear(&g);
    assert_int_equal(imgcache_index_find_glance(db, "0b7a9c5e-8a43-4b5c-9a3f-3c1c6a0f9e11", &g), 0);
    assert_int_equal(g.state, IMGCACHE_DOWNLOADING);
    assert_int_equal(g.size, -1);
    assert_string_equal(g.digest, "");
    g.state = IMGCACHE_CACHED;
    g.size = 50;
    strscpy(g.digest, "sha512:cc", sizeof(g.digest));
    assert_int_equal(imgcache_index_update(db, &g), 0);
    imgcache_row_clear(&g);

    assert_int_equal(imgcache_index_cached_bytes(db, &bytes), 0);
    assert_int_equal(bytes, 350);

    assert_int_equal(imgcache_index_user_add(db, "00000000-0000-4000-8000-000000000001", "vm-a"), 0);
    assert_int_equal(imgcache_index_user_add(db, "00000000-0000-4000-8000-000000000001", "vm-a"), 0);
    assert_int_equal(imgcache_index_user_add(db, "00000000-0000-4000-8000-000000000001", "vm-b"), 0);
    assert_int_equal(imgcache_index_user_count(db, "00000000-0000-4000-8000-000000000001"), 2);
    users = imgcache_index_users(db, "00000000-0000-4000-8000-000000000001");
    assert_int_equal(json_array_size(users), 2);
    json_decref(users);

    /* victims: cached and unpinned, least recently used first */
    assert_int_equal(imgcache_index_victims(db, &v, &n), 0);
    assert_int_equal(n, 2);
    assert_string_equal(v[0].id, "00000000-0000-4000-8000-000000000002");
    assert_string_equal(v[1].id, "00000000-0000-4000-8000-000000000004");
    free(v);

    assert_int_equal(imgcache_index_user_remove(db, "00000000-0000-4000-8000-000000000001", "vm-a", 9000), 1);
    assert_int_equal(imgcache_index_user_remove(db, NULL, "vm-b", 9000), 1);
    assert_int_equal(imgcache_index_user_remove(db, NULL, "vm-b", 9000), 0);
    assert_int_equal(imgcache_index_get(db, "00000000-0000-4000-8000-000000000001", &g), 0);
    assert_int_equal(g.last_used_at, 9000); /* release counts as use */
    imgcache_row_clear(&g);
    assert_int_equal(imgcache_index_victims(db, &v, &n), 0);
    assert_int_equal(n, 3);
    assert_string_equal(v[2].id, "00000000-0000-4000-8000-000000000001");
    free(v);

    assert_int_equal(imgcache_index_delete(db, "00000000-0000-4000-8000-000000000002"), 0);
    assert_int_equal(imgcache_index_get(db, "00000000-0000-4000-8000-000000000002", &g), -ENOENT);
    sqlite3_close(db);
}

/* ---- eviction ---- */

static void test_evict_plan(void **state)
{
    struct imgcache_victim v[3] = {
        {"a", 100, 1000}, {"b", 200, 2000}, {"c", 300, 3000},
    };
    bool chosen[3];

    (void)state;
    /* fits already */
    assert_int_equal(imgcache_evict_plan(v, 3, 600, 1000, UINT64_MAX, 100, 0, chosen), 0);
    /* needs 250: a (100) then b (200) */
    assert_int_equal(imgcache_evict_plan(v, 3, 600, 1000, UINT64_MAX, 650, 0, chosen), 2);
    assert_true(chosen[0] && chosen[1] && !chosen[2]);
    /* the disk, not the budget, is short */
    assert_int_equal(imgcache_evict_plan(v, 3, 600, UINT64_MAX, 50, 120, 0, chosen), 1);
    assert_true(chosen[0] && !chosen[1]);
    /* age: b and a are older than 2500, c is not */
    assert_int_equal(imgcache_evict_plan(v, 3, 600, UINT64_MAX, UINT64_MAX, 0, 2500, chosen), 2);
    assert_true(chosen[0] && chosen[1] && !chosen[2]);
    /* impossible: pinned bytes (not candidates) fill the budget */
    assert_int_equal(imgcache_evict_plan(v, 3, 1600, 1000, UINT64_MAX, 10, 0, chosen), -ENOSPC);
    assert_int_equal(imgcache_evict_plan(v, 0, 0, 100, UINT64_MAX, 101, 0, chosen), -ENOSPC);
}

static void write_file(const char *path, size_t size)
{
    int fd = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0444);

    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, (off_t)size), 0);
    close(fd);
}

/* Eviction through the cache: LRU order, the pinned image stays. */
static void test_evict_pinned(void **state)
{
    char dir[] = "/tmp/imgcache-evict-XXXXXX";
    struct imgcache_config cfg = {.budget_bytes = 3000};
    struct imgcache *c = NULL;
    struct agent_error err;
    uv_loop_t loop;
    sqlite3 *db = open_memdb();
    const char *ids[4] = {"00000000-0000-4000-8000-00000000000a", "00000000-0000-4000-8000-00000000000b",
                          "00000000-0000-4000-8000-00000000000c", "00000000-0000-4000-8000-00000000000d"};
    char path[4][300], digest[IMGCACHE_DIGEST_MAX];
    json_t *o;

    (void)state;
    assert_non_null(mkdtemp(dir));
    cfg.dir = dir;
    uv_loop_init(&loop);
    assert_int_equal(imgcache_new(&loop, db, &cfg, &c, &err), 0);
    for (int i = 0; i < 4; i++) {
        struct imgcache_row r;

        snprintf(digest, sizeof(digest), "sha256:%064d", i);
        snprintf(path[i], sizeof(path[i]), "%s/images/sha256-%064d", dir, i);
        write_file(path[i], 1000);
        make_row(&r, ids[i], digest, 1000, 1000 + i); /* a is the least recently used */
        r.path = path[i];
        if (i < 3)
            assert_int_equal(imgcache_index_insert(db, &r), 0);
    }
    assert_int_equal(imgcache_index_user_add(db, ids[0], "vm-a"), 0); /* a pinned */

    /* 1000 more bytes: b (the oldest unpinned) goes, a stays */
    assert_int_equal(imgcache_evict(c, 1000), 1);
    assert_int_equal(access(path[0], F_OK), 0);
    assert_int_equal(access(path[1], F_OK), -1);
    assert_int_equal(access(path[2], F_OK), 0);
    assert_null(imgcache_get(c, ids[1]));
    o = imgcache_get(c, ids[0]);
    assert_int_equal(json_array_size(json_object_get(o, "in_use_by")), 1);
    json_decref(o);

    /* the pinned image can be deleted by nobody */
    assert_int_equal(imgcache_delete(c, ids[0], &err), -EBUSY);
    assert_string_equal(err.code, "conflict");
    assert_non_null(strstr(err.message, "vm-a"));
    /* 3000 more cannot fit while a is pinned: -ENOSPC, nothing evicted */
    assert_int_equal(imgcache_evict(c, 3000), -ENOSPC);
    assert_int_equal(access(path[2], F_OK), 0);
    /* unpinned, a can go */
    assert_int_equal(imgcache_release(c, ids[0], "vm-a"), 1);
    assert_int_equal(imgcache_evict(c, 3000), 2);
    assert_int_equal(access(path[0], F_OK), -1);

    imgcache_free(c);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
    sqlite3_close(db);
    {
        char *argv[] = {"/bin/rm", "-rf", dir, NULL};
        run(argv);
    }
}

/* Startup: temp leftovers removed, downloads cut by a crash marked failed,
 * entries without a file marked failed, files without an entry removed. */
static void test_startup_consistency(void **state)
{
    char dir[] = "/tmp/imgcache-start-XXXXXX";
    struct imgcache_config cfg = {0};
    struct imgcache *c = NULL;
    struct agent_error err;
    uv_loop_t loop;
    sqlite3 *db = open_memdb();
    char p[400], keep[400];
    struct imgcache_row r, g;

    (void)state;
    assert_non_null(mkdtemp(dir));
    cfg.dir = dir;
    snprintf(p, sizeof(p), "%s/tmp", dir);
    mkdir(p, 0700);
    snprintf(p, sizeof(p), "%s/images", dir);
    mkdir(p, 0755);
    snprintf(p, sizeof(p), "%s/tmp/00000000-0000-4000-8000-000000000001.part", dir);
    write_file(p, 10);
    snprintf(p, sizeof(p), "%s/images/sha256-orphan", dir);
    write_file(p, 10);
    snprintf(keep, sizeof(keep), "%s/images/sha256-%064d", dir, 7);
    write_file(keep, 10);

    make_row(&r, "00000000-0000-4000-8000-000000000001", "", -1, 1);
    r.state = IMGCACHE_DOWNLOADING;
    r.url = "http://x/a";
    assert_int_equal(imgcache_index_insert(db, &r), 0);
    make_row(&r, "00000000-0000-4000-8000-000000000002", "sha256:missing", 10, 1);
    r.path = "/nonexistent/file";
    assert_int_equal(imgcache_index_insert(db, &r), 0);
    snprintf(p, sizeof(p), "sha256:%064d", 7);
    make_row(&r, "00000000-0000-4000-8000-000000000003", p, 10, 1);
    r.path = keep;
    assert_int_equal(imgcache_index_insert(db, &r), 0);

    uv_loop_init(&loop);
    assert_int_equal(imgcache_new(&loop, db, &cfg, &c, &err), 0);
    snprintf(p, sizeof(p), "%s/tmp/00000000-0000-4000-8000-000000000001.part", dir);
    assert_int_equal(access(p, F_OK), -1);
    snprintf(p, sizeof(p), "%s/images/sha256-orphan", dir);
    assert_int_equal(access(p, F_OK), -1);
    assert_int_equal(access(keep, F_OK), 0);
    assert_int_equal(imgcache_index_get(db, "00000000-0000-4000-8000-000000000001", &g), 0);
    assert_int_equal(g.state, IMGCACHE_FAILED);
    assert_non_null(strstr(g.error_message, "interrupted"));
    imgcache_row_clear(&g);
    assert_int_equal(imgcache_index_get(db, "00000000-0000-4000-8000-000000000002", &g), 0);
    assert_int_equal(g.state, IMGCACHE_FAILED);
    imgcache_row_clear(&g);
    assert_int_equal(imgcache_index_get(db, "00000000-0000-4000-8000-000000000003", &g), 0);
    assert_int_equal(g.state, IMGCACHE_CACHED);
    imgcache_row_clear(&g);

    imgcache_free(c);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
    sqlite3_close(db);
    {
        char *argv[] = {"/bin/rm", "-rf", dir, NULL};
        run(argv);
    }
}

/* ---- a small HTTP server on the test's own loop ---- */

/* What the server answers for one path. */
struct route {
    const char *path;
    int status;                /* 200 or 404 */
    const unsigned char *body;
    size_t len;
    size_t stall_after;        /* first request: send this much, then go silent */
    int hits;
    long last_range;           /* start of the last Range asked, -1 if none */
    bool no_ranges;            /* ignore Range: always 200 and everything */
    bool chunked;              /* no Content-Length: chunked transfer encoding */
};

struct mini_server {
    uv_tcp_t tcp;
    int port;
    int gets;                  /* requests served */
    struct route *routes;
    size_t nroutes;
    int open_conns;
};

struct mini_conn {
    uv_tcp_t tcp;
    struct mini_server *s;
    char req[4096];
    size_t rlen;
    uv_write_t w;
    char head[256];
    bool answered;
    bool keep_open;            /* stalled: wait for the client to go */
    char *chunked;             /* the chunked body, when the route is chunked */
};

static void conn_closed(uv_handle_t *h)
{
    struct mini_conn *cn = h->data;
    cn->s->open_conns--;
    free(cn->chunked);
    free(cn);
}

static void conn_written(uv_write_t *w, int status)
{
    struct mini_conn *cn = w->data;
    (void)status;
    if (!cn->keep_open && !uv_is_closing((uv_handle_t *)&cn->tcp))
        uv_close((uv_handle_t *)&cn->tcp, conn_closed);
}

static void conn_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    struct mini_conn *cn = h->data;
    static char scratch[4096];
    (void)hint;
    if (cn->answered) { /* only to see the client leave */
        buf->base = scratch;
        buf->len = sizeof(scratch);
        return;
    }
    buf->base = cn->req + cn->rlen;
    buf->len = sizeof(cn->req) - 1 - cn->rlen;
}

static void mini_answer(struct mini_conn *cn, uv_stream_t *st)
{
    struct mini_server *s = cn->s;
    struct route *rt = NULL;
    char path[512] = "";
    const char *range;
    long from = -1;
    size_t off = 0, n;
    uv_buf_t out[2];
    int nbufs = 1;

    sscanf(cn->req, "GET %511s ", path);
    for (size_t i = 0; i < s->nroutes; i++)
        if (strcmp(s->routes[i].path, path) == 0)
            rt = &s->routes[i];
    s->gets++;
    range = strcasestr(cn->req, "\nRange: bytes=");
    if (range)
        from = strtol(range + strlen("\nRange: bytes="), NULL, 10);
    if (!rt || rt->status != 200) {
        snprintf(cn->head, sizeof(cn->head),
                 "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        if (rt)
            rt->hits++;
    } else {
        rt->hits++;
        rt->last_range = from;
        if (rt->chunked) {
            /* 64 KiB chunks, each "HEX\r\n" data "\r\n", then "0\r\n\r\n" */
            size_t pieces = rt->len / 65536 + 2, o = 0;
            char *b = malloc(rt->len + pieces * 16 + 8);

            assert_non_null(b);
            for (size_t at = 0; at < rt->len; at += 65536) {
                size_t k = rt->len - at < 65536 ? rt->len - at : 65536;
                o += (size_t)snprintf(b + o, 16, "%zx\r\n", k);
                memcpy(b + o, rt->body + at, k);
                o += k;
                memcpy(b + o, "\r\n", 2);
                o += 2;
            }
            memcpy(b + o, "0\r\n\r\n", 5);
            o += 5;
            cn->chunked = b;
            snprintf(cn->head, sizeof(cn->head),
                     "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n");
            out[0] = uv_buf_init(cn->head, (unsigned)strlen(cn->head));
            out[1] = uv_buf_init(b, (unsigned)o);
            cn->w.data = cn;
            uv_write(&cn->w, st, out, 2, conn_written);
            return;
        }
        if (from > 0 && (size_t)from < rt->len && !rt->no_ranges) {
            off = (size_t)from;
            snprintf(cn->head, sizeof(cn->head),
                     "HTTP/1.1 206 Partial Content\r\nContent-Length: %zu\r\nContent-Range: "
                     "bytes %zu-%zu/%zu\r\nConnection: close\r\n\r\n",
                     rt->len - off, off, rt->len - 1, rt->len);
        } else {
            snprintf(cn->head, sizeof(cn->head),
                     "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\nAccept-Ranges: bytes\r\n"
                     "Connection: close\r\n\r\n", rt->len);
        }
        n = rt->len - off;
        if (rt->stall_after && rt->hits == 1) {
            n = rt->stall_after;
            cn->keep_open = true;
        }
        out[1] = uv_buf_init((char *)rt->body + off, (unsigned)n);
        nbufs = 2;
    }
    out[0] = uv_buf_init(cn->head, (unsigned)strlen(cn->head));
    cn->w.data = cn;
    uv_write(&cn->w, st, out, (unsigned)nbufs, conn_written);
}

static void conn_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    struct mini_conn *cn = st->data;
    (void)buf;

    if (nread < 0) {
        if (!uv_is_closing((uv_handle_t *)st))
            uv_close((uv_handle_t *)st, conn_closed);
        return;
    }
    if (cn->answered)
        return;
    cn->rlen += (size_t)nread;
    cn->req[cn->rlen] = '\0';
    if (!strstr(cn->req, "\r\n\r\n"))
        return;
    cn->answered = true;
    mini_answer(cn, st);
}

static void on_conn(uv_stream_t *server, int status)
{
    struct mini_server *s = server->data;
    struct mini_conn *cn = calloc(1, sizeof(*cn));

    assert_int_equal(status, 0);
    cn->s = s;
    uv_tcp_init(server->loop, &cn->tcp);
    cn->tcp.data = cn;
    s->open_conns++;
    assert_int_equal(uv_accept(server, (uv_stream_t *)&cn->tcp), 0);
    uv_read_start((uv_stream_t *)&cn->tcp, conn_alloc, conn_read);
}

static void mini_start(uv_loop_t *loop, struct mini_server *s)
{
    struct sockaddr_in a;
    struct sockaddr_storage got;
    int len = sizeof(got);

    uv_ip4_addr("127.0.0.1", 0, &a);
    uv_tcp_init(loop, &s->tcp);
    s->tcp.data = s;
    assert_int_equal(uv_tcp_bind(&s->tcp, (struct sockaddr *)&a, 0), 0);
    assert_int_equal(uv_listen((uv_stream_t *)&s->tcp, 128, on_conn), 0);
    uv_tcp_getsockname(&s->tcp, (struct sockaddr *)&got, &len);
    s->port = ntohs(((struct sockaddr_in *)&got)->sin_port);
}

static unsigned char *make_body(size_t len, unsigned seed)
{
    unsigned char *b = malloc(len);

    for (size_t i = 0; i < len; i++)
        b[i] = (unsigned char)(i * 7 + (i >> 11) + seed * 131);
    return b;
}

static void body_digest(const unsigned char *b, size_t len, const EVP_MD *md, const char *name,
                        char *out, size_t size)
{
    unsigned char d[EVP_MAX_MD_SIZE];
    char hex[2 * EVP_MAX_MD_SIZE + 1];
    unsigned n;

    EVP_Digest(b, len, d, &n, md, NULL);
    imgcache_hex(d, n, hex);
    if (name)
        snprintf(out, size, "%s:%s", name, hex);
    else
        strscpy(out, hex, size);
}

struct flight_result {
    int calls;
    int ok;
    char first_id[IMGCACHE_ID_LEN];
    bool same_id;
    char format[16];
    uint64_t size;
    char path[512];
};

static void on_acquired(int status, const struct imgcache_image_info *info,
                        const struct agent_error *err, void *opaque)
{
    struct flight_result *res = opaque;

    (void)err;
    res->calls++;
    if (status == 0) {
        res->ok++;
        if (!res->first_id[0]) {
            strscpy(res->first_id, info->id, sizeof(res->first_id));
            strscpy(res->format, info->format, sizeof(res->format));
            strscpy(res->path, info->path, sizeof(res->path));
            res->size = info->size;
            res->same_id = true;
        } else if (strcmp(res->first_id, info->id) != 0) {
            res->same_id = false;
        }
    }
}

static void test_single_flight_local(void **state)
{
    char dir[] = "/tmp/imgcache-sf-XXXXXX";
    struct imgcache_config cfg = {.retry_delay_ms = 50, .allowed_networks = "127.0.0.0/8"};
    struct imgcache *c = NULL;
    struct agent_error err;
    struct mini_server srv = {0};
    struct flight_result res = {0};
    uv_loop_t loop;
    sqlite3 *db = open_memdb();
    char url[128], digest[IMGCACHE_DIGEST_MAX], id[IMGCACHE_ID_LEN], id2[IMGCACHE_ID_LEN];
    struct route route = {0};
    unsigned char *body;
    struct imgcache_request req;
    json_t *o;

    (void)state;
    if (access("/usr/bin/qemu-img", X_OK) != 0)
        skip(); /* the install step runs qemu-img info */
    route.path = "/disk.raw";
    route.status = 200;
    route.len = (5u << 20) + 12345; /* several chunks and a tail */
    route.body = body = make_body(route.len, 0);
    srv.routes = &route;
    srv.nroutes = 1;
    body_digest(body, route.len, EVP_sha256(), "sha256", digest, sizeof(digest));

    assert_non_null(mkdtemp(dir));
    cfg.dir = dir;
    uv_loop_init(&loop);
    mini_start(&loop, &srv);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/disk.raw", srv.port);
    assert_int_equal(imgcache_new(&loop, db, &cfg, &c, &err), 0);

    req = (struct imgcache_request){.url = url, .digest = digest};
    for (int i = 0; i < 32; i++) {
        char user[16];
        snprintf(user, sizeof(user), "vm-%d", i % 4);
        assert_int_equal(imgcache_acquire(c, &req, i % 8 == 0 ? user : NULL, on_acquired, &res,
                                          i == 0 ? id : NULL, &err), 0);
    }
    /* visible while in flight */
    o = imgcache_get(c, id);
    assert_string_equal(json_string_value(json_object_get(o, "state")), "downloading");
    assert_true(json_is_object(json_object_get(o, "progress")));
    json_decref(o);
    assert_int_equal(imgcache_delete(c, id, &err), -EBUSY);

    wait_for(&loop, &res.calls, 32);
    assert_int_equal(res.ok, 32);
    assert_true(res.same_id);
    assert_string_equal(res.first_id, id);
    assert_int_equal(srv.gets, 1); /* one download for 32 requests */
    assert_string_equal(res.format, "raw");
    assert_int_equal(res.size, route.len);
    assert_int_equal(access(res.path, R_OK), 0);

    o = imgcache_get(c, id);
    assert_string_equal(json_string_value(json_object_get(o, "state")), "cached");
    assert_string_equal(json_string_value(json_object_get(o, "digest")), digest);
    assert_string_equal(json_string_value(json_object_get(o, "format")), "raw");
    assert_int_equal(json_integer_value(json_object_get(o, "size")), route.len);
    assert_int_equal(json_array_size(json_object_get(o, "in_use_by")), 1); /* vm-0 */
    assert_true(json_is_null(json_object_get(o, "progress")));
    json_decref(o);

    /* a hit: no second GET, callback deferred to the loop */
    res = (struct flight_result){0};
    assert_int_equal(imgcache_acquire(c, &req, "vm-9", on_acquired, &res, id2, &err), 0);
    assert_int_equal(res.calls, 0);
    assert_string_equal(id2, id);
    wait_for(&loop, &res.calls, 1);
    assert_int_equal(res.ok, 1);
    assert_int_equal(srv.gets, 1);
    /* by id too */
    res = (struct flight_result){0};
    req = (struct imgcache_request){.id = id};
    assert_int_equal(imgcache_acquire(c, &req, NULL, on_acquired, &res, NULL, &err), 0);
    wait_for(&loop, &res.calls, 1);
    assert_int_equal(res.ok, 1);
    assert_int_equal(srv.gets, 1);

    /* forbidden schemes never reach the network */
    req = (struct imgcache_request){.url = "file:///etc/passwd", .digest = digest};
    assert_int_equal(imgcache_acquire(c, &req, NULL, on_acquired, &res, NULL, &err), -EINVAL);
    assert_string_equal(err.field, "image.url");
    req = (struct imgcache_request){.url = "gopher://127.0.0.1/1", .digest = digest};
    assert_int_equal(imgcache_acquire(c, &req, NULL, on_acquired, &res, NULL, &err), -EINVAL);
    req = (struct imgcache_request){.id = "00000000-0000-4000-8000-00000000dead"};
    assert_int_equal(imgcache_acquire(c, &req, NULL, on_acquired, &res, NULL, &err), -ENOENT);
    assert_string_equal(err.code, "not_found");
    req = (struct imgcache_request){.glance_id = "0b7a9c5e-8a43-4b5c-9a3f-3c1c6a0f9e11"};
    assert_int_equal(imgcache_acquire(c, &req, NULL, on_acquired, &res, NULL, &err), -ENOTSUP);

    /* still pinned by vm-0 and vm-9 */
    assert_int_equal(imgcache_delete(c, id, &err), -EBUSY);
    assert_int_equal(imgcache_release(c, NULL, "vm-0"), 1);
    assert_int_equal(imgcache_release(c, id, "vm-9"), 1);
    assert_int_equal(imgcache_delete(c, id, &err), 0);
    assert_int_equal(access(res.path, F_OK), -1);

    imgcache_free(c);
    uv_close((uv_handle_t *)&srv.tcp, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
    sqlite3_close(db);
    free(body);
    {
        char *argv[] = {"/bin/rm", "-rf", dir, NULL};
        run(argv);
    }
}

/* A server that goes silent half-way: the stall timeout fires, the next
 * try asks for the rest with Range and gets it. */
static void test_stall_then_resume(void **state)
{
    char dir[] = "/tmp/imgcache-stall-XXXXXX";
    struct imgcache_config cfg = {.retry_delay_ms = 20, .stall_timeout_s = 1,
                                  .allowed_networks = "127.0.0.0/8"};
    struct imgcache *c = NULL;
    struct agent_error err;
    struct mini_server srv = {0};
    struct flight_result res = {0};
    struct route route = {.path = "/stall.raw", .status = 200, .last_range = -1};
    uv_loop_t loop;
    sqlite3 *db = open_memdb();
    char url[128], digest[IMGCACHE_DIGEST_MAX];
    unsigned char *body;
    struct imgcache_request req;

    (void)state;
    if (access("/usr/bin/qemu-img", X_OK) != 0)
        skip();
    route.len = 3u << 20;
    route.body = body = make_body(route.len, 5);
    route.stall_after = (1u << 20) + 777;
    srv.routes = &route;
    srv.nroutes = 1;
    body_digest(body, route.len, EVP_sha512(), "sha512", digest, sizeof(digest));
    assert_non_null(mkdtemp(dir));
    cfg.dir = dir;
    uv_loop_init(&loop);
    mini_start(&loop, &srv);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/stall.raw", srv.port);
    assert_int_equal(imgcache_new(&loop, db, &cfg, &c, &err), 0);
    req = (struct imgcache_request){.url = url, .digest = digest};
    assert_int_equal(imgcache_acquire(c, &req, NULL, on_acquired, &res, NULL, &err), 0);
    wait_for(&loop, &res.calls, 1);
    assert_int_equal(res.ok, 1);
    assert_int_equal(route.hits, 2);
    assert_int_equal(route.last_range, (long)route.stall_after);

    /* a server that ignores Range: the cache starts over from byte 0 */
    imgcache_delete(c, res.first_id, &err);
    route.hits = 0;
    route.no_ranges = true;
    res = (struct flight_result){0};
    assert_int_equal(imgcache_acquire(c, &req, NULL, on_acquired, &res, NULL, &err), 0);
    wait_for(&loop, &res.calls, 1);
    assert_int_equal(res.ok, 1); /* the digest still matches */
    assert_int_equal(route.hits, 3); /* stalled, refused to resume, whole again */

    imgcache_free(c);
    uv_close((uv_handle_t *)&srv.tcp, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(srv.open_conns, 0);
    assert_int_equal(uv_loop_close(&loop), 0);
    sqlite3_close(db);
    free(body);
    {
        char *argv[] = {"/bin/rm", "-rf", dir, NULL};
        run(argv);
    }
}

struct last_error {
    int calls;
    int status;
    struct agent_error err;
    char id[IMGCACHE_ID_LEN];
    char digest[IMGCACHE_DIGEST_MAX];
};

static void on_result(int status, const struct imgcache_image_info *info,
                      const struct agent_error *err, void *opaque)
{
    struct last_error *le = opaque;

    le->calls++;
    le->status = status;
    if (status == 0) {
        strscpy(le->id, info->id, sizeof(le->id));
        strscpy(le->digest, info->digest, sizeof(le->digest));
    } else {
        le->err = *err;
    }
}

/* A Glance (the documented v2 API, served by the test) whose images carry
 * only the legacy MD5 "checksum": the cache names the content by its own
 * SHA-256, checks the MD5 on the side, and shares entries by content. */
static void test_glance_md5_only(void **state)
{
    char dir[] = "/tmp/imgcache-gmd5-XXXXXX";
    /* no allowed_networks: the Glance endpoint (on loopback here) is trusted
     * configuration, its metadata and /file are fetched all the same */
    struct imgcache_config cfg = {.retry_delay_ms = 20, .glance_token = "t0k"};
    struct imgcache *c = NULL;
    struct agent_error err;
    struct mini_server srv = {0};
    const char *g1 = "11111111-1111-4111-8111-111111111111";
    const char *g2 = "22222222-2222-4222-8222-222222222222";
    const char *g3 = "33333333-3333-4333-8333-333333333333";
    struct route routes[7];
    char meta1[512], meta2[512], meta3[512], md5[33], sha[IMGCACHE_DIGEST_MAX], glance[64],
        url[128];
    unsigned char *body;
    size_t len = (2u << 20) + 3;
    struct last_error a = {0}, b = {0}, x = {0}, m = {0};
    struct imgcache_request req;
    uv_loop_t loop;
    sqlite3 *db = open_memdb();

    (void)state;
    if (access("/usr/bin/qemu-img", X_OK) != 0)
        skip();
    body = make_body(len, 9);
    body_digest(body, len, EVP_md5(), NULL, md5, sizeof(md5));
    body_digest(body, len, EVP_sha256(), "sha256", sha, sizeof(sha));
    snprintf(meta1, sizeof(meta1), "{\"id\":\"%s\",\"status\":\"active\",\"size\":%zu,"
             "\"checksum\":\"%s\",\"os_hash_algo\":null,\"os_hash_value\":null}", g1, len, md5);
    snprintf(meta2, sizeof(meta2), "{\"id\":\"%s\",\"status\":\"active\",\"size\":%zu,"
             "\"checksum\":\"%s\"}", g2, len, md5);
    snprintf(meta3, sizeof(meta3), "{\"id\":\"%s\",\"status\":\"active\",\"size\":%zu,"
             "\"checksum\":\"00000000000000000000000000000000\"}", g3, len);
    memset(routes, 0, sizeof(routes));
    routes[0] = (struct route){"/v2/images/11111111-1111-4111-8111-111111111111", 200,
                               (unsigned char *)meta1, strlen(meta1), 0, 0, -1, false, false};
    routes[1] = (struct route){"/v2/images/11111111-1111-4111-8111-111111111111/file", 200, body,
                               len, 0, 0, -1, false, false};
    routes[2] = (struct route){"/v2/images/22222222-2222-4222-8222-222222222222", 200,
                               (unsigned char *)meta2, strlen(meta2), 0, 0, -1, false, false};
    routes[3] = (struct route){"/v2/images/22222222-2222-4222-8222-222222222222/file", 200, body,
                               len, 0, 0, -1, false, false};
    routes[4] = (struct route){"/v2/images/33333333-3333-4333-8333-333333333333", 200,
                               (unsigned char *)meta3, strlen(meta3), 0, 0, -1, false, false};
    routes[5] = (struct route){"/v2/images/33333333-3333-4333-8333-333333333333/file", 200, body,
                               len, 0, 0, -1, false, false};
    routes[6] = (struct route){"/same.raw", 200, body, len, 0, 0, -1, false, false};
    srv.routes = routes;
    srv.nroutes = ARRAY_SIZE(routes);

    assert_non_null(mkdtemp(dir));
    cfg.dir = dir;
    uv_loop_init(&loop);
    mini_start(&loop, &srv);
    snprintf(glance, sizeof(glance), "http://127.0.0.1:%d/", srv.port); /* trailing / is fine */
    cfg.glance_url = glance;
    assert_int_equal(imgcache_new(&loop, db, &cfg, &c, &err), 0);

    req = (struct imgcache_request){.glance_id = g1};
    assert_int_equal(imgcache_acquire(c, &req, "vm-1", on_result, &a, NULL, &err), 0);
    wait_for(&loop, &a.calls, 1);
    assert_int_equal(a.status, 0);
    assert_string_equal(a.digest, sha); /* named by our SHA-256 */
    assert_int_equal(routes[0].hits, 1);
    assert_int_equal(routes[1].hits, 1);

    /* the same bytes by URL: the same entry, no download */
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/same.raw", srv.port);
    req = (struct imgcache_request){.url = url, .digest = sha};
    assert_int_equal(imgcache_acquire(c, &req, NULL, on_result, &x, NULL, &err), 0);
    wait_for(&loop, &x.calls, 1);
    assert_string_equal(x.id, a.id);
    assert_int_equal(routes[6].hits, 0);

    /* another Glance image with the same bytes merges into the entry */
    req = (struct imgcache_request){.glance_id = g2};
    assert_int_equal(imgcache_acquire(c, &req, "vm-2", on_result, &b, NULL, &err), 0);
    wait_for(&loop, &b.calls, 1);
    assert_int_equal(b.status, 0);
    assert_string_equal(b.id, a.id);
    {
        json_t *list = imgcache_list(c), *o = imgcache_get(c, a.id);
        assert_int_equal(json_array_size(list), 1);
        assert_int_equal(json_array_size(json_object_get(o, "in_use_by")), 2);
        json_decref(list);
        json_decref(o);
    }

    /* a wrong MD5 fails, with both checksums */
    req = (struct imgcache_request){.glance_id = g3};
    assert_int_equal(imgcache_acquire(c, &req, NULL, on_result, &m, NULL, &err), 0);
    wait_for(&loop, &m.calls, 1);
    assert_int_equal(m.status, -EBADMSG);
    assert_string_equal(m.err.code, "digest_mismatch");
    assert_non_null(strstr(m.err.message, md5));

    imgcache_free(c);
    uv_close((uv_handle_t *)&srv.tcp, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
    sqlite3_close(db);
    free(body);
    {
        char *argv[] = {"/bin/rm", "-rf", dir, NULL};
        run(argv);
    }
}

/* A download that cannot even start still reports through the callback,
 * after imgcache_acquire() has returned, never inside it. */
static void test_start_failure_is_deferred(void **state)
{
    char dir[] = "/tmp/imgcache-defer-XXXXXX", tmp[64];
    struct imgcache_config cfg = {0};
    struct imgcache *c = NULL;
    struct agent_error err;
    struct last_error le = {0};
    struct imgcache_request req = {.url = "http://127.0.0.1:1/x.img", .digest = SHA_EMPTY};
    uv_loop_t loop;
    sqlite3 *db = open_memdb();

    (void)state;
    assert_non_null(mkdtemp(dir));
    cfg.dir = dir;
    uv_loop_init(&loop);
    assert_int_equal(imgcache_new(&loop, db, &cfg, &c, &err), 0);
    snprintf(tmp, sizeof(tmp), "%s/tmp", dir);
    assert_int_equal(rmdir(tmp), 0); /* the temp file cannot be created */
    assert_int_equal(imgcache_acquire(c, &req, "vm-1", on_result, &le, NULL, &err), 0);
    assert_int_equal(le.calls, 0);
    wait_for(&loop, &le.calls, 1);
    assert_true(le.status < 0);
    assert_string_equal(le.err.code, "internal");
    assert_non_null(strstr(le.err.message, ".part"));

    imgcache_free(c);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
    sqlite3_close(db);
    {
        char *argv[] = {"/bin/rm", "-rf", dir, NULL};
        run(argv);
    }
}

/* Images unused for longer than the maximum age go on the next pass. */
static void test_evict_by_age(void **state)
{
    char dir[] = "/tmp/imgcache-age-XXXXXX";
    struct imgcache_config cfg = {.max_unused_age_s = 3600};
    struct imgcache *c = NULL;
    struct agent_error err;
    uv_loop_t loop;
    sqlite3 *db = open_memdb();
    const char *old_id = "00000000-0000-4000-8000-0000000000a1";
    const char *new_id = "00000000-0000-4000-8000-0000000000a2";
    const char *pin_id = "00000000-0000-4000-8000-0000000000a3";
    char p1[300], p2[300], p3[300];
    struct imgcache_row r;
    int64_t now = now_wall_ms();

    (void)state;
    assert_non_null(mkdtemp(dir));
    cfg.dir = dir;
    uv_loop_init(&loop);
    assert_int_equal(imgcache_new(&loop, db, &cfg, &c, &err), 0);
    snprintf(p1, sizeof(p1), "%s/images/sha256-a1", dir);
    snprintf(p2, sizeof(p2), "%s/images/sha256-a2", dir);
    snprintf(p3, sizeof(p3), "%s/images/sha256-a3", dir);
    write_file(p1, 10);
    write_file(p2, 10);
    write_file(p3, 10);
    make_row(&r, old_id, "sha256:a1", 10, now - 7200 * 1000);
    r.path = p1;
    assert_int_equal(imgcache_index_insert(db, &r), 0);
    make_row(&r, new_id, "sha256:a2", 10, now - 60 * 1000);
    r.path = p2;
    assert_int_equal(imgcache_index_insert(db, &r), 0);
    make_row(&r, pin_id, "sha256:a3", 10, now - 9000 * 1000);
    r.path = p3;
    assert_int_equal(imgcache_index_insert(db, &r), 0);
    assert_int_equal(imgcache_index_user_add(db, pin_id, "vm-old"), 0);

    assert_int_equal(imgcache_evict(c, 0), 1);
    assert_int_equal(access(p1, F_OK), -1);
    assert_int_equal(access(p2, F_OK), 0);
    assert_int_equal(access(p3, F_OK), 0); /* old, but in use */

    imgcache_free(c);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
    sqlite3_close(db);
    {
        char *argv[] = {"/bin/rm", "-rf", dir, NULL};
        run(argv);
    }
}

/* ---- REST handlers ---- */

/* ---- URLs shown without credentials ---- */

static void expect_redacted(const char *url, const char *want)
{
    char *got = url_redact(url);

    assert_non_null(got);
    assert_string_equal(got, want);
    free(got);
}

static void test_url_redact(void **state)
{
    (void)state;
    expect_redacted("http://user:secret@host:8080/p?x=1", "http://***@host:8080/p?x=1");
    expect_redacted("http://a@b@host/x", "http://***@host/x");
    expect_redacted("http://host/a@b", "http://host/a@b"); /* '@' in the path only */
    expect_redacted("http://host/p", "http://host/p");
    expect_redacted("https://s3/b/k?X-Amz-Algorithm=AWS4&X-Amz-Credential=AK%2F1&X-Amz-Date=1"
                    "&X-Amz-Signature=abc&token=&x=2#frag",
                    "https://s3/b/k?X-Amz-Algorithm=AWS4&X-Amz-Credential=***&X-Amz-Date=1"
                    "&X-Amz-Signature=***&token=***&x=2#frag");
    expect_redacted("http://u:p@h/x?access_token=t0k", "http://***@h/x?access_token=***");
    expect_redacted("http://h/x#y?token=1", "http://h/x#y?token=1"); /* '?' in the fragment */
    expect_redacted("http://h/x?flag&sig", "http://h/x?flag&sig");  /* no value, nothing to hide */
    assert_null(url_redact(NULL));
}

/* ---- networks downloads may reach ---- */

static void expect_addr(const struct imgcache_net *nets, size_t n, const char *ip, bool ok,
                        const char *why_has)
{
    char why[160] = "";
    bool got = imgcache_addr_text_allowed(nets, n, ip, why, sizeof(why));

    if (got != ok)
        fail_msg("%s: %s, expected %s (%s)", ip, got ? "allowed" : "refused",
                 ok ? "allowed" : "refused", why);
    if (why_has && !strstr(why, why_has))
        fail_msg("%s: reason '%s' lacks '%s'", ip, why, why_has);
}

static void test_networks(void **state)
{
    struct imgcache_net *nets = NULL;
    struct agent_error err;
    size_t n = 99;

    (void)state;
    /* the defaults: loopback, link-local (metadata), this-host, unspecified */
    expect_addr(NULL, 0, "127.0.0.1", false, "loopback");
    expect_addr(NULL, 0, "127.255.0.9", false, "loopback");
    expect_addr(NULL, 0, "169.254.169.254", false, "link-local");
    expect_addr(NULL, 0, "0.0.0.0", false, "0.0.0.0/8");
    expect_addr(NULL, 0, "::1", false, "loopback");
    expect_addr(NULL, 0, "::", false, "unspecified");
    expect_addr(NULL, 0, "fe80::1", false, "link-local");
    expect_addr(NULL, 0, "fe80::1%eth0", false, "link-local");
    expect_addr(NULL, 0, "febf::1", false, "link-local");
    expect_addr(NULL, 0, "::ffff:127.0.0.1", false, "loopback");
    expect_addr(NULL, 0, "::ffff:169.254.169.254", false, "link-local");
    expect_addr(NULL, 0, "not-an-ip", false, "not understood");
    /* private clouds serve images from private addresses */
    expect_addr(NULL, 0, "10.0.0.1", true, NULL);
    expect_addr(NULL, 0, "172.16.5.4", true, NULL);
    expect_addr(NULL, 0, "192.168.1.1", true, NULL);
    expect_addr(NULL, 0, "169.253.255.255", true, NULL);
    expect_addr(NULL, 0, "128.0.0.1", true, NULL);
    expect_addr(NULL, 0, "fd00::1", true, NULL);
    expect_addr(NULL, 0, "fec0::1", true, NULL);
    expect_addr(NULL, 0, "2001:db8::1", true, NULL);
    expect_addr(NULL, 0, "::ffff:10.0.0.1", true, NULL);

    /* the allow-list */
    assert_int_equal(imgcache_nets_parse("127.0.0.0/8, 169.254.169.254 ,,fe80::/64\t10.1.2.3/24",
                                         "image_cache.allowed_networks", &nets, &n, &err), 0);
    assert_int_equal(n, 4);
    assert_int_equal(nets[3].prefix, 24);
    assert_int_equal(nets[3].addr[3], 0); /* host bits dropped */
    expect_addr(nets, n, "127.0.0.1", true, NULL);
    expect_addr(nets, n, "::ffff:127.0.0.2", true, NULL);
    expect_addr(nets, n, "::1", false, "loopback");
    expect_addr(nets, n, "169.254.169.254", true, NULL);
    expect_addr(nets, n, "169.254.169.253", false, "link-local");
    expect_addr(nets, n, "fe80::1", true, NULL);
    expect_addr(nets, n, "fe80:0:0:1::1", false, "link-local");
    free(nets);

    nets = (void *)1;
    assert_int_equal(imgcache_nets_parse("", "f", &nets, &n, &err), 0);
    assert_int_equal(n, 0);
    assert_null(nets);
    assert_int_equal(imgcache_nets_parse(NULL, "f", &nets, &n, &err), 0);
    assert_int_equal(n, 0);

    /* bad lists name the setting and the entry */
    assert_int_equal(imgcache_nets_parse("127.0.0.0/33", "image_cache.allowed_networks", &nets, &n,
                                         &err), -EINVAL);
    assert_string_equal(err.field, "image_cache.allowed_networks");
    assert_non_null(strstr(err.message, "127.0.0.0/33"));
    assert_int_equal(imgcache_nets_parse("10.0.0.0/8 localhost", "image_cache.allowed_networks",
                                         &nets, &n, &err), -EINVAL);
    assert_non_null(strstr(err.message, "localhost"));
    assert_int_equal(imgcache_nets_parse("::1/129", "x", &nets, &n, &err), -EINVAL);
    assert_int_equal(imgcache_nets_parse("10.0.0.0/", "x", &nets, &n, &err), -EINVAL);
    assert_int_equal(imgcache_nets_parse("10.0.0.0/8x", "x", &nets, &n, &err), -EINVAL);
}

/* ---- what a cache refuses to fetch, and how much ---- */

struct failed_pulls {
    int calls;
    char image[IMGCACHE_ID_LEN];
    char source[512];
    struct agent_error err;
};

static void on_pull_failed(const char *image_id, const char *source, const struct agent_error *err,
                           void *opaque)
{
    struct failed_pulls *fp = opaque;

    fp->calls++;
    strscpy(fp->image, image_id, sizeof(fp->image));
    strscpy(fp->source, source, sizeof(fp->source));
    fp->err = *err;
}

struct fail_result {
    int calls;
    int status;
    struct agent_error err;
};

static void on_fetch_result(int status, const struct imgcache_image_info *info,
                            const struct agent_error *err, void *opaque)
{
    struct fail_result *r = opaque;

    (void)info;
    r->calls++;
    r->status = status;
    if (err)
        r->err = *err;
}

static int count_files(const char *dir, const char *sub)
{
    char p[PATH_MAX];
    DIR *d;
    struct dirent *de;
    int n = 0;

    snprintf(p, sizeof(p), "%s/%s", dir, sub);
    d = opendir(p);
    assert_non_null(d);
    while ((de = readdir(d)))
        n += de->d_name[0] != '.';
    closedir(d);
    return n;
}

/* Acquire url and wait; returns the status. */
static int fetch_wait(uv_loop_t *loop, struct imgcache *c, const char *url, const char *digest,
                      const char *user, struct fail_result *r, char id[IMGCACHE_ID_LEN])
{
    struct imgcache_request req = {.url = url, .digest = digest};
    struct agent_error err;
    int rc;

    memset(r, 0, sizeof(*r));
    rc = imgcache_acquire(c, &req, user, on_fetch_result, r, id, &err);
    if (rc < 0)
        fail_msg("acquire %s: %s", url, err.message);
    wait_for(loop, &r->calls, 1);
    return r->status;
}

/* A cache with the default networks: loopback and link-local targets are
 * refused before any connection, reported once, and leave nothing. */
static void test_forbidden_by_default(void **state)
{
    char dir[] = "/tmp/imgcache-forbid-XXXXXX";
    struct failed_pulls fp = {0};
    struct imgcache_config cfg = {.retry_delay_ms = 20, .pull_failed = on_pull_failed,
                                  .pull_failed_opaque = &fp};
    struct imgcache *c = NULL;
    struct agent_error err;
    struct mini_server srv = {0};
    struct route route = {.path = "/disk.raw", .status = 200, .len = 4096};
    struct fail_result r1, r2;
    uv_loop_t loop;
    sqlite3 *db = open_memdb();
    char url[160], digest[IMGCACHE_DIGEST_MAX], id[IMGCACHE_ID_LEN], id2[IMGCACHE_ID_LEN];
    unsigned char *body = make_body(route.len, 3);
    struct imgcache_request req;
    json_t *o;
    /* the metadata address, IPv6 loopback, a name for loopback, 0.0.0.0, IPv4-mapped */
    static const char *const others[] = {"169.254.169.254", "[::1]", "localhost", "0.0.0.0",
                                         "[::ffff:127.0.0.1]"};

    (void)state;
    route.body = body;
    srv.routes = &route;
    srv.nroutes = 1;
    body_digest(body, route.len, EVP_sha256(), "sha256", digest, sizeof(digest));
    assert_non_null(mkdtemp(dir));
    cfg.dir = dir;
    uv_loop_init(&loop);
    mini_start(&loop, &srv);
    assert_int_equal(imgcache_new(&loop, db, &cfg, &c, &err), 0);

    /* two launches share the pull: both fail, the failure is told once */
    snprintf(url, sizeof(url), "http://user:secret@127.0.0.1:%d/disk.raw", srv.port);
    req = (struct imgcache_request){.url = url, .digest = digest};
    memset(&r1, 0, sizeof(r1));
    memset(&r2, 0, sizeof(r2));
    assert_int_equal(imgcache_acquire(c, &req, "vm-1", on_fetch_result, &r1, id, &err), 0);
    assert_int_equal(imgcache_acquire(c, &req, "vm-2", on_fetch_result, &r2, id2, &err), 0);
    assert_string_equal(id, id2);
    wait_for(&loop, &r2.calls, 1);
    wait_for(&loop, &r1.calls, 1);
    assert_int_equal(r1.status, -EACCES);
    assert_int_equal(r2.status, -EACCES);
    assert_string_equal(r1.err.code, "source_forbidden");
    print_message("    %s\n", r1.err.message);
    assert_non_null(strstr(r1.err.message, "127.0.0.1 is a loopback address"));
    assert_non_null(strstr(r1.err.message, "image_cache.allowed_networks"));
    assert_null(strstr(r1.err.message, "secret"));
    assert_int_equal(fp.calls, 1);
    assert_string_equal(fp.image, id);
    assert_string_equal(fp.err.code, "source_forbidden");
    assert_null(strstr(fp.source, "secret"));
    assert_non_null(strstr(fp.source, "***@127.0.0.1"));
    assert_int_equal(srv.gets, 0); /* refused before connecting */
    assert_int_equal(count_files(dir, "tmp"), 0);
    assert_int_equal(count_files(dir, "images"), 0);
    o = imgcache_get(c, id);
    assert_string_equal(json_string_value(json_object_get(o, "state")), "failed");
    assert_int_equal(json_array_size(json_object_get(o, "in_use_by")), 0);
    {
        char want[160];
        snprintf(want, sizeof(want), "http://***@127.0.0.1:%d/disk.raw", srv.port);
        assert_string_equal(json_string_value(json_object_get(json_object_get(o, "source"), "url")),
                            want);
    }
    {
        char *dump = json_dumps(o, 0);
        assert_null(strstr(dump, "secret"));
        free(dump);
    }
    json_decref(o);

    for (size_t i = 0; i < ARRAY_SIZE(others); i++) {
        struct fail_result r;

        snprintf(url, sizeof(url), "http://%s:%d/disk.raw", others[i], srv.port);
        assert_int_equal(fetch_wait(&loop, c, url, digest, NULL, &r, id), -EACCES);
        assert_string_equal(r.err.code, "source_forbidden");
        print_message("    %s\n", r.err.message);
    }
    assert_int_equal(fp.calls, 1 + (int)ARRAY_SIZE(others));
    assert_int_equal(srv.gets, 0);
    assert_int_equal(count_files(dir, "tmp"), 0);

    imgcache_free(c);
    uv_close((uv_handle_t *)&srv.tcp, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
    sqlite3_close(db);
    free(body);
    {
        char *argv[] = {"/bin/rm", "-rf", dir, NULL};
        run(argv);
    }
}

/* Bodies of unknown length (chunked) are held to the budget as they come:
 * stopped once past what images in use leave of it, unused images evicted
 * to make room; a known Content-Length over the budget is refused at once. */
static void test_unknown_length_budget(void **state)
{
    char dir[] = "/tmp/imgcache-chunk-XXXXXX";
    struct imgcache_config cfg = {.retry_delay_ms = 20, .allowed_networks = "127.0.0.1/32",
                                  .budget_bytes = 4u << 20};
    struct imgcache *c = NULL;
    struct agent_error err;
    struct mini_server srv = {0};
    struct route routes[] = {
        {.path = "/small.raw", .status = 200, .len = 1u << 20, .chunked = true},
        {.path = "/big.raw", .status = 200, .len = (6u << 20) + 1, .chunked = true},
        {.path = "/mid.raw", .status = 200, .len = (3u << 20) + (1u << 19), .chunked = true},
        {.path = "/known.raw", .status = 200, .len = 6u << 20},
    };
    char digests[4][IMGCACHE_DIGEST_MAX], url[160], id[IMGCACHE_ID_LEN], small_id[IMGCACHE_ID_LEN];
    unsigned char *bodies[4];
    struct fail_result r;
    unsigned long long passed = 0, budget = 0, held = 0;
    uv_loop_t loop;
    sqlite3 *db = open_memdb();
    json_t *o;

    (void)state;
    if (access("/usr/bin/qemu-img", X_OK) != 0)
        skip(); /* the install step runs qemu-img info */
    for (int i = 0; i < 4; i++) {
        routes[i].body = bodies[i] = make_body(routes[i].len, (unsigned)i + 7);
        body_digest(bodies[i], routes[i].len, EVP_sha256(), "sha256", digests[i],
                    sizeof(digests[i]));
    }
    srv.routes = routes;
    srv.nroutes = ARRAY_SIZE(routes);
    assert_non_null(mkdtemp(dir));
    cfg.dir = dir;
    uv_loop_init(&loop);
    mini_start(&loop, &srv);
    assert_int_equal(imgcache_new(&loop, db, &cfg, &c, &err), 0);

    /* chunked and within the budget: fine; pinned, it holds 1 MiB of it */
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/small.raw", srv.port);
    assert_int_equal(fetch_wait(&loop, c, url, digests[0], "vm-1", &r, small_id), 0);

    /* chunked, 6 MiB: stopped past the 3 MiB left, nothing kept */
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/big.raw", srv.port);
    assert_int_equal(fetch_wait(&loop, c, url, digests[1], NULL, &r, id), -ENOSPC);
    assert_string_equal(r.err.code, "insufficient_resources");
    print_message("    chunked: %s\n", r.err.message);
    assert_non_null(strstr(r.err.message, "/big.raw"));
    assert_int_equal(sscanf(strstr(r.err.message, "passed "), "passed %llu bytes", &passed), 1);
    assert_int_equal(sscanf(strstr(r.err.message, "budget of "), "budget of %llu bytes", &budget), 1);
    assert_int_equal(sscanf(strstr(r.err.message, "allows: "), "allows: %llu bytes", &held), 1);
    assert_int_equal(budget, 4u << 20);
    assert_int_equal(held, 1u << 20);
    assert_true(passed > (3u << 20) && passed <= (3u << 20) + (1u << 20)); /* stopped at once */
    assert_int_equal(count_files(dir, "tmp"), 0);
    assert_int_equal(count_files(dir, "images"), 1);
    assert_string_equal(json_string_value(json_object_get(o = imgcache_get(c, id), "state")), "failed");
    json_decref(o);

    /* Content-Length over the budget: refused before a byte is written */
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/known.raw", srv.port);
    assert_int_equal(fetch_wait(&loop, c, url, digests[3], NULL, &r, id), -ENOSPC);
    assert_string_equal(r.err.code, "insufficient_resources");
    print_message("    Content-Length: %s\n", r.err.message);
    assert_non_null(strstr(r.err.message, "6291456 bytes"));
    assert_non_null(strstr(r.err.message, "4194304 bytes"));
    assert_int_equal(count_files(dir, "tmp"), 0);

    /* once released, the small image may go to make room for 3.5 MiB */
    assert_int_equal(imgcache_release(c, small_id, "vm-1"), 1);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/mid.raw", srv.port);
    assert_int_equal(fetch_wait(&loop, c, url, digests[2], NULL, &r, id), 0);
    assert_null(o = imgcache_get(c, small_id)); /* evicted */
    assert_int_equal(count_files(dir, "images"), 1);

    imgcache_free(c);
    uv_close((uv_handle_t *)&srv.tcp, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
    sqlite3_close(db);
    for (int i = 0; i < 4; i++)
        free(bodies[i]);
    {
        char *argv[] = {"/bin/rm", "-rf", dir, NULL};
        run(argv);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_digest_parse),
        cmocka_unit_test(test_url_schemes),
        cmocka_unit_test(test_request_from_json),
        cmocka_unit_test(test_transient),
        cmocka_unit_test(test_glance_parse),
        cmocka_unit_test(test_inspect_judge),
        cmocka_unit_test(test_overlay_matches_qemu_img),
        cmocka_unit_test(test_blank_matches_qemu_img),
        cmocka_unit_test(test_index),
        cmocka_unit_test(test_evict_plan),
        cmocka_unit_test(test_evict_pinned),
        cmocka_unit_test(test_startup_consistency),
        cmocka_unit_test(test_single_flight_local),
        cmocka_unit_test(test_stall_then_resume),
        cmocka_unit_test(test_glance_md5_only),
        cmocka_unit_test(test_evict_by_age),
        cmocka_unit_test(test_start_failure_is_deferred),
        cmocka_unit_test(test_url_redact),
        cmocka_unit_test(test_networks),
        cmocka_unit_test(test_forbidden_by_default),
        cmocka_unit_test(test_unknown_length_budget),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
