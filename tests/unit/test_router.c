/* Unit tests for agent/api/router.c (and errors.c, and the handlers as the
 * router reaches them): every route with its methods, 404 for unknown paths
 * and malformed ids (naming "id"), 405 for a known path with another
 * method, path parameters, trailing slashes, queries, and what a path
 * percent-decoded once by MHD may hold (never decoded again here). The
 * images routes run on a real image cache; the instance routes on
 * agent-fixture.h's engine (host disabled: nothing is ever carried out). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent/api/api-internal.h"
#include "agent/host.h"
#include "image-cache/imgcache.h"
#include "tests/fuzz/agent-fixture.h"

#define UUID "0d8f7a34-8a47-4a59-9d3a-2b1e8c9b0f11"
#define EC2 "i-0123456789abcdef0"
#define SHA_EMPTY "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
#define FLAVOR "\"flavor\":{\"vcpus\":1,\"memory_mb\":128}"

static struct api_deps deps;
static const struct api_config cfg = {.host_name = "unit", .hypervisor = "test", .started_ms = 0};

static int setup(void **state)
{
    struct fixture *fx = fixture_get();

    (void)state;
    deps.store = fx->store;
    deps.ops = fx->ops;
    deps.catalog = fx->catalog;
    return host_new(fx->store, &deps.host);
}

static int teardown(void **state)
{
    (void)state;
    host_free(deps.host);
    fixture_free();
    return 0;
}

/* Route; check the status, and for an error its code and field ("" none). */
static json_t *call(const char *method, const char *url, const char *body, const char *idem, int status,
                    const char *code, const char *field)
{
    json_t *reply = NULL, *e;
    int st = api_route(&deps, &cfg, method, url, body, body ? strlen(body) : 0, idem, &reply);

    if (st != status)
        fail_msg("%s %s: status %d, expected %d (%s)", method, url, st, status,
                 json_string_value(json_object_get(json_object_get(reply, "error"), "message")));
    assert_true(json_is_object(reply));
    e = json_object_get(reply, "error");
    if (code) {
        assert_non_null(e);
        assert_string_equal(json_string_value(json_object_get(e, "code")), code);
        if (field && *field)
            assert_string_equal(json_string_value(json_object_get(e, "field")), field);
        else
            assert_true(json_is_null(json_object_get(e, "field")));
        assert_non_null(json_string_value(json_object_get(e, "message")));
    }
    return reply;
}

static void expect(const char *method, const char *url, const char *body, int status, const char *code,
                   const char *field)
{
    json_decref(call(method, url, body, NULL, status, code, field));
}

static void test_errors_map(void **state)
{
    static const struct {
        const char *code;
        int status;
    } cases[] = {
        {"invalid_json", 400}, {"invalid_field", 400}, {"missing_field", 400}, {"unknown_field", 400},
        {"unauthorized", 401}, {"not_found", 404}, {"method_not_allowed", 405}, {"conflict", 409},
        {"insufficient_resources", 409}, {"payload_too_large", 413}, {"unsupported_media_type", 415},
        {"not_supported", 501}, {"unavailable", 503}, {"internal", 500}, {"digest_mismatch", 500},
        {"source_not_found", 500}, {"", 500},
    };
    struct agent_error e;
    json_t *body;

    (void)state;
    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        agent_error_set(&e, EINVAL, cases[i].code, NULL, "x");
        assert_int_equal(api_status_of(&e), cases[i].status);
    }
    agent_error_set(&e, EBUSY, "conflict", "image.id", "in use by %s", "someone");
    assert_int_equal(api_fail(&body, &e), 409);
    assert_string_equal(json_string_value(json_object_get(json_object_get(body, "error"), "field")), "image.id");
    assert_string_equal(json_string_value(json_object_get(json_object_get(body, "error"), "message")),
                        "in use by someone");
    assert_int_equal(json_object_size(body), 1);
    assert_int_equal(json_object_size(json_object_get(body, "error")), 3);
    json_decref(body);
}

static void test_not_found(void **state)
{
    char long_path[700];

    (void)state;
    expect("GET", "/v1/nothing-here", NULL, 404, "not_found", "");
    expect("GET", "/v2/instances", NULL, 404, "not_found", "");
    expect("GET", "/", NULL, 404, "not_found", "");
    expect("GET", "", NULL, 404, "not_found", "");
    expect("GET", "v1/instances", NULL, 404, "not_found", "");
    expect("GET", "/V1/instances", NULL, 404, "not_found", "");
    expect("GET", "/v1/instancesx", NULL, 404, "not_found", "");
    expect("GET", "/v1/host/x", NULL, 404, "not_found", "");
    expect("GET", "/v1//instances", NULL, 404, "not_found", "");
    expect("GET", "/v1/instances//actions", NULL, 404, "not_found", "");
    expect("GET", "/v1/instances/" UUID "/actions/x", NULL, 404, "not_found", "");
    expect("GET", "/v1/instances/" UUID "/console/x", NULL, 404, "not_found", "");
    expect("GET", "/a/b/c/d/e/f/g/h/i/j", NULL, 404, "not_found", "");
    expect("PUT", "/v1/nothing-here", "{}", 404, "not_found", "");
    memset(long_path, 'a', sizeof(long_path) - 1);
    long_path[0] = '/';
    long_path[sizeof(long_path) - 1] = '\0';
    expect("GET", long_path, NULL, 404, "not_found", "");
}

static void test_methods(void **state)
{
    (void)state;
    expect("PUT", "/v1/host", "{}", 405, "method_not_allowed", "");
    expect("POST", "/v1/host", "{}", 405, "method_not_allowed", "");
    expect("GET", "/v1/host/disable", NULL, 405, "method_not_allowed", "");
    expect("DELETE", "/v1/host/enable", NULL, 405, "method_not_allowed", "");
    expect("POST", "/healthz", NULL, 405, "method_not_allowed", "");
    expect("PATCH", "/v1/instances", "{}", 405, "method_not_allowed", "");
    expect("DELETE", "/v1/instances", NULL, 405, "method_not_allowed", "");
    expect("POST", "/v1/instances/" UUID, "{}", 405, "method_not_allowed", "");
    expect("PUT", "/v1/instances/" EC2, "{}", 405, "method_not_allowed", "");
    expect("GET", "/v1/instances/" UUID "/actions", NULL, 405, "method_not_allowed", "");
    expect("DELETE", "/v1/instances/" UUID "/actions", NULL, 405, "method_not_allowed", "");
    expect("POST", "/v1/operations/" UUID, "{}", 405, "method_not_allowed", "");
    expect("PUT", "/v1/images", "{}", 405, "method_not_allowed", "");
    expect("POST", "/v1/images/" UUID, "{}", 405, "method_not_allowed", "");
    expect("OPTIONS", "/v1/instances", NULL, 405, "method_not_allowed", "");
    expect("get", "/v1/instances", NULL, 405, "method_not_allowed", ""); /* methods are case-sensitive */
}

static void test_routes(void **state)
{
    json_t *r;

    (void)state;
    /* healthz follows host_ready() */
    r = call("GET", "/healthz", NULL, NULL, 503, NULL, NULL);
    assert_string_equal(json_string_value(json_object_get(r, "status")), "starting");
    json_decref(r);
    host_set_ready(deps.host);
    r = call("HEAD", "/healthz", NULL, NULL, 200, NULL, NULL);
    assert_string_equal(json_string_value(json_object_get(r, "status")), "ok");
    json_decref(r);

    r = call("GET", "/v1/instances", NULL, NULL, 200, NULL, NULL);
    assert_true(json_is_array(json_object_get(r, "instances")));
    json_decref(r);
    expect("HEAD", "/v1/instances", NULL, 200, NULL, NULL);
    /* the handler's own 404s name the id */
    expect("GET", "/v1/instances/" UUID, NULL, 404, "not_found", "id");
    expect("GET", "/v1/instances/" EC2, NULL, 404, "not_found", "id");
    expect("DELETE", "/v1/instances/" UUID, NULL, 404, "not_found", "id");
    expect("POST", "/v1/instances/" UUID "/actions", "{\"action\":\"stop\"}", 404, "not_found", "id");
    expect("GET", "/v1/operations/" UUID, NULL, 404, "not_found", "id");
    /* a valid launch reaches the engine, which refuses: the host is disabled */
    expect("POST", "/v1/instances", "{\"name\":\"a\"," FLAVOR ",\"image\":{\"path\":\"/i.qcow2\"}}", 409,
           "conflict", "");
    /* bodies are parsed by request.c, their errors named */
    expect("POST", "/v1/instances", NULL, 400, "invalid_json", "");
    expect("POST", "/v1/instances", "[]", 400, "invalid_json", "");
    expect("POST", "/v1/instances", "{\"name\":\"a\"}", 400, "missing_field", "flavor");
    expect("POST", "/v1/instances/" UUID "/actions", "{\"action\":\"fly\"}", 400, "invalid_field", "action");
    expect("POST", "/v1/instances/" UUID "/actions", "{\"action\":\"stop\",\"timeout\":-1}", 400,
           "invalid_field", "timeout");
    expect("POST", "/v1/instances/" UUID "/actions", "{\"action\":\"stop\",\"x\":1}", 400, "unknown_field", "x");
    json_decref(call("DELETE", "/v1/instances/" UUID, NULL, "bad\x01key", 400, "invalid_field", "request_id"));
    json_decref(call("POST", "/v1/instances", "{\"request_id\":\"a\"}", "b", 400, "invalid_field", "request_id"));
    /* no image cache here */
    expect("GET", "/v1/images", NULL, 501, "not_supported", "");
    expect("GET", "/v1/images/" UUID, NULL, 501, "not_supported", "");
}

static void test_params(void **state)
{
    (void)state;
    /* malformed ids: the resource does not exist, before the method is looked at */
    expect("GET", "/v1/instances/not-an-id", NULL, 404, "not_found", "id");
    expect("PUT", "/v1/instances/not-an-id", NULL, 404, "not_found", "id");
    expect("POST", "/v1/instances/not-an-id/actions", "{}", 404, "not_found", "id");
    expect("GET", "/v1/instances/I-0123456789ABCDEF0", NULL, 404, "not_found", "id");
    expect("GET", "/v1/instances/" UUID "0", NULL, 404, "not_found", "id");
    expect("GET", "/v1/operations/zzz", NULL, 404, "not_found", "id");
    expect("GET", "/v1/operations/" EC2, NULL, 404, "not_found", "id"); /* an instance's id */
    expect("GET", "/v1/images/nope", NULL, 404, "not_found", "id");
    expect("DELETE", "/v1/images/" EC2, NULL, 404, "not_found", "id");
}

/* What MHD hands after its one percent-decoding pass, and raw escapes that
 * reach here only double-encoded: nothing is decoded a second time. */
static void test_decoded_paths(void **state)
{
    json_t *r;

    (void)state;
    /* "%2F" was a "/": the path has one more segment */
    expect("POST", "/v1/instances/" UUID "/actions", "{\"action\":\"start\"}", 404, "not_found", "id");
    expect("GET", "/v1/instances/a/b", NULL, 404, "not_found", "");
    /* "%252F" arrives as "%2F": part of the id, which then is no id */
    expect("POST", "/v1/instances/" UUID "%2Factions", "{}", 404, "not_found", "id");
    expect("GET", "/v1/instances/%30d8f7a34-8a47-4a59-9d3a-2b1e8c9b0f11", NULL, 404, "not_found", "id");
    expect("GET", "/v1/%69nstances", NULL, 404, "not_found", "");
    /* dot segments are not resolved */
    expect("GET", "/v1/instances/..", NULL, 404, "not_found", "id");
    expect("GET", "/v1/instances/../host", NULL, 404, "not_found", "");
    expect("GET", "/v1/./host", NULL, 404, "not_found", "");
    /* control bytes, spaces, non-ASCII: an id with them is no id */
    expect("GET", "/v1/instances/abc\nts=1 level=error", NULL, 404, "not_found", "id");
    expect("GET", "/v1/instances/ " UUID, NULL, 404, "not_found", "id");
    expect("GET", "/v1/instances/\xc3\xa9", NULL, 404, "not_found", "id");
    expect("GET", "/v1/host\t", NULL, 404, "not_found", "");
    /* a decoded NUL ends the string MHD hands over: what is before it is the path */
    expect("GET", "/v1/instances\0/x", NULL, 200, NULL, NULL);
    /* trailing slashes, and a query (api_route's callers may pass one) */
    r = call("GET", "/v1/instances/", NULL, NULL, 200, NULL, NULL);
    json_decref(r);
    expect("GET", "/v1/instances///", NULL, 200, NULL, NULL);
    expect("GET", "/v1/instances?limit=1", NULL, 200, NULL, NULL);
    expect("GET", "/v1/instances/?", NULL, 200, NULL, NULL);
    expect("GET", "/v1/operations/" UUID "?wait=5", NULL, 404, "not_found", "id");
    expect("GET", "/v1/instances/" UUID "/?x", NULL, 404, "not_found", "id");
}

static int remove_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

static void test_images(void **state)
{
    char dir[] = "/tmp/api-images-XXXXXX";
    struct imgcache_config ic = {.retry_delay_ms = 20, .allowed_networks = "127.0.0.0/8"};
    struct agent_error err;
    uv_loop_t loop;
    char id[IMGCACHE_ID_LEN], url[64];
    json_t *r, *img;
    uint64_t deadline;

    (void)state;
    assert_non_null(mkdtemp(dir));
    ic.dir = dir;
    uv_loop_init(&loop);
    assert_int_equal(imgcache_new(&loop, store_db(deps.store), &ic, &deps.imgcache, &err), 0);

    r = call("GET", "/v1/images", NULL, NULL, 200, NULL, NULL);
    assert_int_equal(json_array_size(json_object_get(r, "images")), 0);
    json_decref(r);
    expect("GET", "/v1/images/" UUID, NULL, 404, "not_found", "");
    expect("DELETE", "/v1/images/" UUID, NULL, 404, "not_found", "");
    expect("POST", "/v1/images", "{\"url\":\"file:///etc/passwd\",\"digest\":\"" SHA_EMPTY "\"}", 400,
           "invalid_field", "url");
    expect("POST", "/v1/images", "{\"id\":\"" UUID "\"}", 400, "unknown_field", "id");
    expect("POST", "/v1/images", "{\"glance_id\":\"0b7a9c5e-8a43-4b5c-9a3f-3c1c6a0f9e11\"}", 501,
           "not_supported", "glance_id");
    expect("POST", "/v1/images", "\"x\"", 400, "invalid_json", "");
    expect("POST", "/v1/images", "{\"url\":\"http://127.0.0.1:1/x\"}", 400, "missing_field", "digest");

    /* a download to nowhere: 202 now, failed later */
    r = call("POST", "/v1/images", "{\"url\":\"http://127.0.0.1:1/none.img\",\"digest\":\"" SHA_EMPTY "\"}", NULL,
             202, NULL, NULL);
    assert_string_equal(json_string_value(json_object_get(r, "state")), "downloading");
    strscpy(id, json_string_value(json_object_get(r, "id")), sizeof(id));
    json_decref(r);
    snprintf(url, sizeof(url), "/v1/images/%s", id);
    deadline = uv_now(&loop) + 30000;
    for (;;) {
        img = call("GET", url, NULL, NULL, 200, NULL, NULL);
        if (strcmp(json_string_value(json_object_get(img, "state")), "downloading"))
            break;
        json_decref(img);
        if (uv_now(&loop) > deadline)
            fail_msg("the download did not fail within 30 s");
        usleep(5000);
        uv_run(&loop, UV_RUN_NOWAIT);
        uv_update_time(&loop);
    }
    assert_string_equal(json_string_value(json_object_get(img, "state")), "failed");
    json_decref(img);
    r = call("DELETE", url, NULL, NULL, 204, NULL, NULL);
    assert_int_equal(json_object_size(r), 0);
    json_decref(r);
    expect("GET", url, NULL, 404, "not_found", "");

    imgcache_free(deps.imgcache);
    deps.imgcache = NULL;
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
    assert_int_equal(nftw(dir, remove_one, 8, FTW_DEPTH | FTW_PHYS), 0);
}

/* The decoded output of a console answer: want (n bytes) from offset, of a log of size. */
static void expect_output(json_t *r, const void *want, size_t n, long long offset, long long size)
{
    const char *b64 = json_string_value(json_object_get(r, "output"));
    uint8_t out[256];
    ssize_t got;

    assert_non_null(b64);
    got = base64_decode(b64, out, sizeof(out));
    assert_int_equal(got, (ssize_t)n);
    assert_memory_equal(out, want, n);
    assert_int_equal(json_integer_value(json_object_get(r, "offset")), offset);
    assert_int_equal(json_integer_value(json_object_get(r, "length")), (long long)n);
    assert_int_equal(json_integer_value(json_object_get(r, "next_offset")), offset + (long long)n);
    assert_int_equal(json_integer_value(json_object_get(r, "size")), size);
    assert_string_equal(json_string_value(json_object_get(r, "encoding")), "base64");
    json_decref(r);
}

/* GET /v1/instances/{id}/console: the tail, tail_bytes and offset and their
 * bounds, binary bytes, no log yet, no console at all, a symlink refused. */
static void test_console(void **state)
{
    static const char log[] = "boot one\n\x01\xff\0x"; /* a NUL, 0xff: binary-safe */
    const size_t len = sizeof(log) - 1;
    char dir[] = "/tmp/api-console-XXXXXX", idir[128], logp[160], url[160], u[200];
    struct instance a, b;
    FILE *f;

    (void)state;
    assert_non_null(mkdtemp(dir));
    memset(&a, 0, sizeof(a));
    uuid_generate_str(a.uuid);
    ec2_id_generate(a.ec2_id);
    a.name = strdup("console");
    strscpy(a.state, "running", sizeof(a.state));
    a.flavor = (struct flavor){1, 128, 0};
    a.boot.kind = BOOT_KERNEL;
    a.boot.kernel = strdup("/k");
    a.created_ms = a.updated_ms = 1;
    snprintf(idir, sizeof(idir), "%s/%s", dir, a.uuid);
    assert_int_equal(mkdir(idir, 0700), 0);
    snprintf(logp, sizeof(logp), "%s/console.log", idir);
    a.console_log = strdup(logp);
    assert_int_equal(instance_copy(&b, &a), 0);
    uuid_generate_str(b.uuid);
    ec2_id_generate(b.ec2_id);
    free(b.console_log);
    b.console_log = NULL; /* a driver without consoles */
    assert_int_equal(store_instance_insert(deps.store, &a), 0);
    assert_int_equal(store_instance_insert(deps.store, &b), 0);

    snprintf(url, sizeof(url), "/v1/instances/%s/console", a.uuid);
    expect_output(call("GET", url, NULL, NULL, 200, NULL, NULL), "", 0, 0, 0); /* not booted yet */
    assert_non_null(f = fopen(logp, "w"));
    assert_int_equal(fwrite(log, 1, len, f), len);
    fclose(f);
    expect_output(call("GET", url, NULL, NULL, 200, NULL, NULL), log, len, 0, (long long)len);
    snprintf(u, sizeof(u), "/v1/instances/%s/console?tail_bytes=4", a.ec2_id); /* by EC2 id too */
    expect_output(call("GET", u, NULL, NULL, 200, NULL, NULL), log + len - 4, 4, (long long)len - 4, (long long)len);
    snprintf(u, sizeof(u), "%s?offset=5&tail_bytes=3", url);
    expect_output(call("GET", u, NULL, NULL, 200, NULL, NULL), log + 5, 3, 5, (long long)len);
    snprintf(u, sizeof(u), "%s?offset=%zu", url, len); /* a follower at the end: nothing new */
    expect_output(call("GET", u, NULL, NULL, 200, NULL, NULL), "", 0, (long long)len, (long long)len);
    snprintf(u, sizeof(u), "%s?offset=999&tail_bytes=2", url); /* past the end: the tail */
    expect_output(call("GET", u, NULL, NULL, 200, NULL, NULL), log + len - 2, 2, (long long)len - 2, (long long)len);
    /* bad values: 400 naming the parameter */
    static const char *const bad_tail[] = {"0", "-1", "1048577", "abc", "", "1e3", " 5", "99999999999999999999"};
    for (size_t i = 0; i < ARRAY_SIZE(bad_tail); i++) {
        snprintf(u, sizeof(u), "%s?tail_bytes=%s", url, bad_tail[i]);
        expect("GET", u, NULL, 400, "invalid_field", "tail_bytes");
    }
    snprintf(u, sizeof(u), "%s?tail_bytes", url);
    expect("GET", u, NULL, 400, "invalid_field", "tail_bytes");
    snprintf(u, sizeof(u), "%s?offset=-3", url);
    expect("GET", u, NULL, 400, "invalid_field", "offset");
    snprintf(u, sizeof(u), "%s?tail_bytes=1048576", url); /* the bound itself */
    expect_output(call("GET", u, NULL, NULL, 200, NULL, NULL), log, len, 0, (long long)len);
    /* unknown instance, no console, POST */
    expect("GET", "/v1/instances/" UUID "/console", NULL, 404, "not_found", "id");
    snprintf(u, sizeof(u), "/v1/instances/%s/console", b.uuid);
    expect("GET", u, NULL, 404, "not_found", "");
    expect("POST", url, "{}", 405, "method_not_allowed", "");
    /* a symlink in the log's place is not followed */
    assert_int_equal(unlink(logp), 0);
    assert_int_equal(symlink("/etc/passwd", logp), 0);
    expect("GET", url, NULL, 500, "internal", "");
    assert_int_equal(unlink(logp), 0);
    assert_int_equal(mkfifo(logp, 0600), 0); /* nor a FIFO read (it would block) */
    expect("GET", url, NULL, 500, "internal", "");

    assert_int_equal(nftw(dir, remove_one, 8, FTW_DEPTH | FTW_PHYS), 0);
    instance_release(&a);
    instance_release(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_errors_map), cmocka_unit_test(test_not_found),
        cmocka_unit_test(test_methods),    cmocka_unit_test(test_routes),
        cmocka_unit_test(test_params),     cmocka_unit_test(test_decoded_paths),
        cmocka_unit_test(test_images),     cmocka_unit_test(test_console),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
