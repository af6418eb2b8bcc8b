/* Unit tests: launch validation (every bad field named), base64, EC2 ids,
 * the instance-type catalogue. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "agent/instance.h"

static struct catalog *cat;

static int setup(void **state)
{
    (void)state;
    return catalog_builtin(&cat);
}

static int teardown(void **state)
{
    (void)state;
    catalog_free(cat);
    return 0;
}

/* Parse text; expect failure with code and field, or success (code NULL). */
static void expect_parse(const char *text, const char *code, const char *field)
{
    json_error_t jerr;
    json_t *j = json_loads(text, JSON_ALLOW_NUL, &jerr);
    struct launch_spec spec;
    struct agent_error err = {0};
    int r;

    assert_non_null(j);
    r = launch_spec_parse(j, cat, &spec, &err);
    json_decref(j);
    if (!code) {
        if (r != 0)
            fail_msg("expected success for %s, got %s: %s", text, err.code, err.message);
        launch_spec_release(&spec);
        return;
    }
    if (r == 0)
        fail_msg("expected %s on %s for %s", code, field, text);
    assert_string_equal(err.code, code);
    assert_string_equal(err.field, field);
}

#define K "\"kernel\":{\"path\":\"/boot/vmlinuz\"}"
#define F "\"flavor\":{\"vcpus\":1,\"memory_mb\":128,\"disk_gb\":1}"

static void test_valid(void **state)
{
    (void)state;
    expect_parse("{\"name\":\"a\"," F "," K "}", NULL, NULL);
    expect_parse("{\"name\":\"a<b&\\\"c'\"," F "," K "}", NULL, NULL);
    expect_parse("{\"name\":\"a\",\"instance_type\":\"t3.micro\",\"image\":{\"path\":\"/i.qcow2\"}}", NULL, NULL);
    expect_parse("{\"name\":\"a\"," F "," K ",\"image\":{\"path\":\"/disk.raw\"}}", NULL, NULL);
    expect_parse("{\"name\":\"a\"," F ",\"kernel\":{\"path\":\"/k\",\"initrd\":\"/i\",\"cmdline\":\"console=ttyS0\"},"
                 "\"user_data\":\"aGVsbG8=\",\"request_id\":\"r-1\"}", NULL, NULL);
}

static void test_invalid(void **state)
{
    (void)state;
    expect_parse("{" F "," K "}", "missing_field", "name");
    expect_parse("{\"name\":\"\"," F "," K "}", "invalid_field", "name");
    expect_parse("{\"name\":\"a\\u0001b\"," F "," K "}", "invalid_field", "name");
    expect_parse("{\"name\":\"a\\nb\"," F "," K "}", "invalid_field", "name");
    expect_parse("{\"name\":\"a\\u0000b\"," F "," K "}", "invalid_field", "name");
    expect_parse("{\"name\":\"0123456789012345678901234567890123456789012345678901234567890123\"," F "," K "}",
                 "invalid_field", "name");
    expect_parse("{\"name\":\"a\"," K "}", "missing_field", "flavor");
    expect_parse("{\"name\":\"a\",\"flavor\":{\"vcpus\":\"1\",\"memory_mb\":128}," K "}", "invalid_field", "flavor.vcpus");
    expect_parse("{\"name\":\"a\",\"flavor\":{\"vcpus\":-1,\"memory_mb\":128}," K "}", "invalid_field", "flavor.vcpus");
    expect_parse("{\"name\":\"a\",\"flavor\":{\"vcpus\":1,\"memory_mb\":1000000000000}," K "}", "invalid_field", "flavor.memory_mb");
    expect_parse("{\"name\":\"a\",\"flavor\":{\"vcpus\":1,\"memory_mb\":128,\"disk_gb\":-5}," K "}", "invalid_field", "flavor.disk_gb");
    expect_parse("{\"name\":\"a\",\"flavor\":{\"vcpus\":1,\"memory_mb\":128.5}," K "}", "invalid_field", "flavor.memory_mb");
    expect_parse("{\"name\":\"a\",\"flavor\":{\"vcpus\":1}," K "}", "missing_field", "flavor.memory_mb");
    expect_parse("{\"name\":\"a\",\"flavor\":{\"vcpus\":1,\"memory_mb\":128,\"gpu\":1}," K "}", "unknown_field", "flavor.gpu");
    expect_parse("{\"name\":\"a\"," F ",\"instance_type\":\"t3.micro\"," K "}", "invalid_field", "instance_type");
    expect_parse("{\"name\":\"a\",\"instance_type\":\"z9.huge\"," K "}", "invalid_field", "instance_type");
    expect_parse("{\"name\":\"a\"," F "}", "missing_field", "image");
    expect_parse("{\"name\":\"a\"," F ",\"image\":{\"path\":\"relative.qcow2\"}}", "invalid_field", "image.path");
    expect_parse("{\"name\":\"a\"," F ",\"image\":{\"path\":\"/a/../etc/shadow\"}}", "invalid_field", "image.path");
    expect_parse("{\"name\":\"a\"," F ",\"image\":{\"path\":\"/a\",\"id\":\"x\"}}", "invalid_field", "image");
    expect_parse("{\"name\":\"a\"," F ",\"image\":{\"url\":\"http://x/y\"}}", "missing_field", "image.digest");
    expect_parse("{\"name\":\"a\"," F "," K ",\"image\":{\"path\":\"rel\"}}", "invalid_field", "image.path");
    expect_parse("{\"name\":\"a\"," F ",\"kernel\":{\"initrd\":\"/i\"}}", "missing_field", "kernel.path");
    expect_parse("{\"name\":\"a\"," F "," K ",\"user_data\":\"not base64!\"}", "invalid_field", "user_data");
    expect_parse("{\"name\":\"a\"," F "," K ",\"user_data\":5}", "invalid_field", "user_data");
    expect_parse("{\"name\":\"a\"," F "," K ",\"colour\":\"red\"}", "unknown_field", "colour");
    expect_parse("[1,2]", "invalid_field", "");
    /* C1 controls, bidi overrides and isolates, line separators: refused like C0 */
    expect_parse("{\"name\":\"a\\u0085b\"," F "," K "}", "invalid_field", "name");
    expect_parse("{\"name\":\"evil\\u202etxt\"," F "," K "}", "invalid_field", "name");
    expect_parse("{\"name\":\"a\\u2066b\"," F "," K "}", "invalid_field", "name");
    expect_parse("{\"name\":\"a\\u2028b\"," F "," K "}", "invalid_field", "name");
    expect_parse("{\"name\":\"a\\u200fb\"," F "," K "}", "invalid_field", "name");
    expect_parse("{\"name\":\"caf\\u00e9 \\u6771\\ud83d\\ude00\"," F "," K "}", NULL, NULL);
    /* one request-id rule: printable ASCII, no NUL */
    expect_parse("{\"name\":\"a\"," F "," K ",\"request_id\":\"dup\\u0000A\"}", "invalid_field", "request_id");
    expect_parse("{\"name\":\"a\"," F "," K ",\"request_id\":\"r\\u001b\"}", "invalid_field", "request_id");
    expect_parse("{\"name\":\"a\"," F "," K ",\"request_id\":7}", "invalid_field", "request_id");
}

static void test_user_data_limit(void **state)
{
    char *b64, *body;
    size_t raw = USER_DATA_MAX + 3, len = 4 * ((raw + 2) / 3);

    (void)state;
    b64 = malloc(len + 1);
    memset(b64, 'A', len);
    b64[len] = '\0';
    body = malloc(len + 200);
    snprintf(body, len + 200, "{\"name\":\"a\"," F "," K ",\"user_data\":\"%s\"}", b64);
    expect_parse(body, "invalid_field", "user_data");
    /* exactly 16 KiB decoded is fine */
    len = 4 * ((USER_DATA_MAX + 2) / 3);
    b64[len] = '\0';
    b64[len - 1] = '='; /* 16384 = 3 * 5461 + 1: the last quantum is "AA==" */
    b64[len - 2] = '=';
    snprintf(body, len + 200, "{\"name\":\"a\"," F "," K ",\"user_data\":\"%s\"}", b64);
    expect_parse(body, NULL, NULL);
    free(b64);
    free(body);
}

static void test_base64(void **state)
{
    uint8_t out[16];
    (void)state;
    assert_int_equal(base64_decode("aGVsbG8=", out, sizeof(out)), 5);
    assert_memory_equal(out, "hello", 5);
    assert_int_equal(base64_decode("", out, sizeof(out)), 0);
    assert_int_equal(base64_decode("aGVsbG8", out, sizeof(out)), -EINVAL);
    assert_int_equal(base64_decode("aG=sbG8=", out, sizeof(out)), -EINVAL);
    assert_int_equal(base64_decode("a===", out, sizeof(out)), -EINVAL);
    assert_int_equal(base64_decode("aGVs\nbG8=", NULL, 0), -EINVAL);
}

static void test_ec2_id(void **state)
{
    char id[EC2_ID_LEN + 1], id2[EC2_ID_LEN + 1];
    (void)state;
    assert_int_equal(ec2_id_generate(id), 0);
    assert_true(ec2_id_is_valid(id));
    assert_int_equal(strlen(id), 19);
    assert_int_equal(ec2_id_generate(id2), 0);
    assert_string_not_equal(id, id2);
    assert_false(ec2_id_is_valid("i-0123456789ABCDEF0"));
    assert_false(ec2_id_is_valid("i-0123"));
    assert_false(ec2_id_is_valid("x-0123456789abcdef0"));
}

static void test_catalog_file(void **state)
{
    struct catalog *c = NULL;
    struct agent_error err;
    char path[] = "/tmp/ca-cat-XXXXXX";
    int fd = mkstemp(path);
    FILE *f = fdopen(fd, "w");

    (void)state;
    fputs("# types\n[x1.small]\nvcpus = 3\nmemory_mb = 700\ndisk_gb = 9\n", f);
    fclose(f);
    assert_int_equal(catalog_load(path, &c, &err), 0);
    assert_non_null(catalog_find(c, "x1.small"));
    assert_int_equal(catalog_find(c, "x1.small")->vcpus, 3);
    assert_null(catalog_find(c, "t3.micro"));
    catalog_free(c);
    f = fopen(path, "w");
    fputs("[x1.small]\nvcpus = lots\n", f);
    fclose(f);
    assert_int_not_equal(catalog_load(path, &c, &err), 0);
    assert_non_null(strstr(err.message, ":2:"));
    unlink(path);
    assert_non_null(catalog_find(cat, "t3.micro"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid),      cmocka_unit_test(test_invalid),
        cmocka_unit_test(test_user_data_limit), cmocka_unit_test(test_base64),
        cmocka_unit_test(test_ec2_id),     cmocka_unit_test(test_catalog_file),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
