/* Unit tests for agent/request.c: every field error of a launch body, an
 * action body and a bus command named (code and field path), bad types,
 * unknown fields, limits; the request id rule and its header; the JSON
 * document checks; the renaming of the engine's field names for the bus. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/request.h"

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

static json_t *parse(const char *text)
{
    json_error_t jerr;
    json_t *j = json_loads(text, JSON_ALLOW_NUL, &jerr);

    if (!j)
        fail_msg("bad test JSON %s: %s", text, jerr.text);
    return j;
}

static void expect_err(int r, const struct agent_error *err, const char *code, const char *field,
                       const char *text)
{
    if (r == 0)
        fail_msg("expected %s on %s for %s", code, field, text);
    assert_int_equal(r, -EINVAL);
    assert_string_equal(err->code, code);
    assert_string_equal(err->field, field);
}

/* ---- launch bodies ---- */

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

static void test_launch_valid(void **state)
{
    (void)state;
    expect_parse("{\"name\":\"a\"," F "," K "}", NULL, NULL);
    expect_parse("{\"name\":\"a<b&\\\"c'\"," F "," K "}", NULL, NULL);
    expect_parse("{\"name\":\"a\",\"instance_type\":\"t3.micro\",\"image\":{\"path\":\"/i.qcow2\"}}", NULL, NULL);
    expect_parse("{\"name\":\"a\"," F "," K ",\"image\":{\"path\":\"/disk.raw\"}}", NULL, NULL);
    expect_parse("{\"name\":\"a\"," F ",\"kernel\":{\"path\":\"/k\",\"initrd\":\"/i\",\"cmdline\":\"console=ttyS0\"},"
                 "\"user_data\":\"aGVsbG8=\",\"request_id\":\"r-1\"}", NULL, NULL);    /* issue 11: the controller's instance UUID and the allocation's owner */
    expect_parse("{\"name\":\"a\"," F "," K ",\"id\":\"0b6f3c1e-2d4a-4e5f-9a8b-7c6d5e4f3a2b\","
                 "\"project_id\":\"p1\",\"user_id\":\"u1\"}", NULL, NULL);
    expect_parse("{\"name\":\"a\"," F "," K ",\"id\":null}", NULL, NULL);
}

static void test_launch_id(void **state)
{
    struct launch_spec spec;
    struct agent_error err = {0};
    json_t *j = json_loads("{\"name\":\"a\"," F "," K ",\"id\":\"0B6F3C1E-2D4A-4E5F-9A8B-7C6D5E4F3A2B\","
                           "\"project_id\":\"proj\"}", 0, NULL);

    (void)state;
    assert_non_null(j);
    assert_int_equal(launch_spec_parse(j, cat, &spec, &err), 0);
    assert_string_equal(spec.id, "0b6f3c1e-2d4a-4e5f-9a8b-7c6d5e4f3a2b");
    assert_string_equal(spec.project_id, "proj");
    assert_null(spec.user_id);
    launch_spec_release(&spec);
    json_decref(j);
    expect_parse("{\"name\":\"a\"," F "," K ",\"id\":\"not-a-uuid\"}", "invalid_field", "id");
    expect_parse("{\"name\":\"a\"," F "," K ",\"id\":\"0b6f3c1e2d4a4e5f9a8b7c6d5e4f3a2b\"}", "invalid_field", "id");
    expect_parse("{\"name\":\"a\"," F "," K ",\"id\":\"0b6f3c1e-2d4a-4e5f-9a8b-7c6d5e4f3a2g\"}", "invalid_field", "id");
    expect_parse("{\"name\":\"a\"," F "," K ",\"id\":\"0b6f3c1e-2d4a-4e5f-9a8b-7c6d5e4f3a2b\\u0000\"}", "invalid_field", "id");
    expect_parse("{\"name\":\"a\"," F "," K ",\"id\":5}", "invalid_field", "id");
    expect_parse("{\"name\":\"a\"," F "," K ",\"project_id\":\"\"}", "invalid_field", "project_id");
    expect_parse("{\"name\":\"a\"," F "," K ",\"project_id\":7}", "invalid_field", "project_id");
    expect_parse("{\"name\":\"a\"," F "," K ",\"user_id\":\"a\\nb\"}", "invalid_field", "user_id");
}

static void test_launch_invalid(void **state)
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

/* ---- issue 10: interfaces, keys, metadata, options ---- */

#define LB "\"name\":\"a\"," F "," K

static void test_launch_guest_valid(void **state)
{
    json_t *j = parse("{" LB ",\"interfaces\":[{\"network\":\"n1\",\"mac\":\"FA:16:3E:00:00:01\","
                      "\"ip\":\"10.0.0.5\",\"mtu\":1450},{\"network\":\"n2\"}],"
                      "\"public_keys\":{\"mykey\":\"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI user@host\"},"
                      "\"metadata\":{\"role\":\"web\",\"empty\":\"\"},\"availability_zone\":\"az1\","
                      "\"hostname\":\"vm-1.example.org\",\"metadata_options\":{\"http_tokens\":\"required\","
                      "\"http_endpoint\":\"enabled\",\"http_put_response_hop_limit\":2},"
                      "\"config_drive\":true,\"config_drive_format\":\"nocloud\"}");
    struct launch_spec spec;
    struct agent_error err = {0};

    (void)state;
    assert_int_equal(launch_spec_parse(j, cat, &spec, &err), 0);
    assert_int_equal(spec.n_ifaces, 2);
    assert_string_equal(spec.ifaces[0].mac, "fa:16:3e:00:00:01"); /* lowercased */
    assert_string_equal(spec.ifaces[0].ip, "10.0.0.5");
    assert_int_equal(spec.ifaces[0].mtu, 1450);
    assert_string_equal(spec.ifaces[1].network, "n2");
    assert_string_equal(spec.ifaces[1].mac, "");
    assert_string_equal(spec.hostname, "vm-1.example.org");
    assert_string_equal(spec.availability_zone, "az1");
    assert_string_equal(spec.md_opts.http_tokens, "required");
    assert_int_equal(spec.md_opts.hop_limit, 2);
    assert_int_equal(spec.config_drive, 1);
    assert_string_equal(spec.config_drive_format, "nocloud");
    assert_int_equal(json_object_size(spec.metadata), 2);
    assert_non_null(json_object_get(spec.public_keys, "mykey"));
    launch_spec_release(&spec);
    json_decref(j);
    expect_parse("{" LB ",\"interfaces\":[]}", NULL, NULL);
    expect_parse("{" LB ",\"config_drive\":false}", NULL, NULL);
}

static char *repeat(char c, size_t n)
{
    char *s = malloc(n + 1);
    memset(s, c, n);
    s[n] = '\0';
    return s;
}

/* head + arg + tail as one body */
static void expect_fmt(const char *code, const char *field, const char *head, const char *arg, const char *tail)
{
    size_t n = strlen(head) + strlen(arg) + strlen(tail) + 1;
    char *text = malloc(n);
    snprintf(text, n, "%s%s%s", head, arg, tail);
    expect_parse(text, code, field);
    free(text);
}

static void test_launch_guest_invalid(void **state)
{
    char *s;

    (void)state;
    /* interfaces */
    expect_parse("{" LB ",\"interfaces\":{}}", "invalid_field", "interfaces");
    expect_parse("{" LB ",\"interfaces\":[1]}", "invalid_field", "interfaces[0]");
    expect_parse("{" LB ",\"interfaces\":[{}]}", "missing_field", "interfaces[0].network");
    expect_parse("{" LB ",\"interfaces\":[{\"network\":\"n1\",\"vlan\":3}]}", "unknown_field", "interfaces[0].vlan");
    expect_parse("{" LB ",\"interfaces\":[{\"network\":\"\"}]}", "invalid_field", "interfaces[0].network");
    expect_parse("{" LB ",\"interfaces\":[{\"network\":5}]}", "invalid_field", "interfaces[0].network");
    expect_parse("{" LB ",\"interfaces\":[{\"network\":\"n\"},{\"network\":\"n\",\"mac\":\"zz:16:3e:00:00:01\"}]}",
                 "invalid_field", "interfaces[1].mac");
    expect_parse("{" LB ",\"interfaces\":[{\"network\":\"n\",\"mac\":\"01:00:5e:00:00:01\"}]}", "invalid_field",
                 "interfaces[0].mac"); /* multicast */
    expect_parse("{" LB ",\"interfaces\":[{\"network\":\"n\",\"mac\":\"ff:ff:ff:ff:ff:ff\"}]}", "invalid_field",
                 "interfaces[0].mac");
    expect_parse("{" LB ",\"interfaces\":[{\"network\":\"n\",\"mac\":\"00:00:00:00:00:00\"}]}", "invalid_field",
                 "interfaces[0].mac");
    expect_parse("{" LB ",\"interfaces\":[{\"network\":\"n\",\"mac\":\"FE:16:3e:00:00:01\"}]}", "invalid_field",
                 "interfaces[0].mac"); /* the host ends' pattern */
    expect_parse("{" LB ",\"interfaces\":[{\"network\":\"n\",\"mac\":\"fa:16:3e:00:00:1\"}]}", "invalid_field",
                 "interfaces[0].mac");
    expect_parse("{" LB ",\"interfaces\":[{\"network\":\"n\",\"mac\":\"fa-16-3e-00-00-01\"}]}", "invalid_field",
                 "interfaces[0].mac");
    expect_parse("{" LB ",\"interfaces\":[{\"network\":\"n\",\"mac\":\"fa:16:3e:00:00:01\"},"
                 "{\"network\":\"m\",\"mac\":\"FA:16:3E:00:00:01\"}]}", "invalid_field", "interfaces[1].mac");
    expect_parse("{" LB ",\"interfaces\":[{\"network\":\"n\",\"ip\":\"10.0.0.300\"}]}", "invalid_field",
                 "interfaces[0].ip");
    expect_parse("{" LB ",\"interfaces\":[{\"network\":\"n\",\"ip\":\"010.0.0.3\"}]}", "invalid_field",
                 "interfaces[0].ip");
    expect_parse("{" LB ",\"interfaces\":[{\"network\":\"n\",\"ip\":\"10.0.0.3 \"}]}", "invalid_field",
                 "interfaces[0].ip");
    expect_parse("{" LB ",\"interfaces\":[{\"network\":\"n\",\"ip\":\"10.0.0.3\"},{\"network\":\"n\","
                 "\"ip\":\"10.0.0.3\"}]}", "invalid_field", "interfaces[1].ip");
    expect_parse("{" LB ",\"interfaces\":[{\"network\":\"n\",\"ip\":\"10.0.0.3\"},{\"network\":\"m\","
                 "\"ip\":\"10.0.0.3\"}]}", NULL, NULL); /* another network */
    expect_parse("{" LB ",\"interfaces\":[{\"network\":\"n\",\"mtu\":67}]}", "invalid_field", "interfaces[0].mtu");
    expect_parse("{" LB ",\"interfaces\":[{\"network\":\"n\",\"mtu\":65536}]}", "invalid_field", "interfaces[0].mtu");
    expect_parse("{" LB ",\"interfaces\":[{\"network\":\"n\",\"mtu\":\"1500\"}]}", "invalid_field", "interfaces[0].mtu");
    expect_parse("{" LB ",\"interfaces\":[{\"network\":\"a\"},{\"network\":\"a\"},{\"network\":\"a\"},"
                 "{\"network\":\"a\"},{\"network\":\"a\"},{\"network\":\"a\"},{\"network\":\"a\"},"
                 "{\"network\":\"a\"},{\"network\":\"a\"}]}", "invalid_field", "interfaces");
    /* public keys */
    expect_parse("{" LB ",\"public_keys\":[]}", "invalid_field", "public_keys");
    expect_parse("{" LB ",\"public_keys\":{\"mykey\":\"not a key\"}}", "invalid_field", "public_keys.mykey");
    expect_parse("{" LB ",\"public_keys\":{\"mykey\":5}}", "invalid_field", "public_keys.mykey");
    expect_parse("{" LB ",\"public_keys\":{\"mykey\":\"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI\\nx\"}}", "invalid_field",
                 "public_keys.mykey");
    expect_parse("{" LB ",\"public_keys\":{\"\":\"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI\"}}", "invalid_field",
                 "public_keys");
    s = repeat('A', PUBLIC_KEY_MAX);
    expect_fmt("invalid_field", "public_keys.mykey", "{" LB ",\"public_keys\":{\"mykey\":\"ssh-rsa ", s, "\"}}");
    free(s);
    s = repeat('k', KEY_NAME_MAX + 1);
    {
        char field[96];
        snprintf(field, sizeof(field), "public_keys.%s", s);
        expect_fmt("invalid_field", field, "{" LB ",\"public_keys\":{\"", s, "\":\"ssh-rsa AAAAAAAAAAAAAAAAAAAA\"}}");
    }
    free(s);
    /* metadata */
    expect_parse("{" LB ",\"metadata\":\"x\"}", "invalid_field", "metadata");
    expect_parse("{" LB ",\"metadata\":{\"role\":1}}", "invalid_field", "metadata.role");
    expect_parse("{" LB ",\"metadata\":{\"role\":\"a\\u0007\"}}", "invalid_field", "metadata.role");
    s = repeat('v', METADATA_VALUE_MAX + 1);
    expect_fmt("invalid_field", "metadata.role", "{" LB ",\"metadata\":{\"role\":\"", s, "\"}}");
    free(s);
    {
        /* 129 items */
        char *text = malloc(8192);
        size_t n = (size_t)snprintf(text, 8192, "{" LB ",\"metadata\":{");
        for (int i = 0; i <= METADATA_ITEMS_MAX; i++)
            n += (size_t)snprintf(text + n, 8192 - n, "%s\"k%d\":\"v\"", i ? "," : "", i);
        snprintf(text + n, 8192 - n, "}}");
        expect_parse(text, "invalid_field", "metadata");
        free(text);
    }
    /* the rest */
    expect_parse("{" LB ",\"availability_zone\":\"\"}", "invalid_field", "availability_zone");
    expect_parse("{" LB ",\"availability_zone\":3}", "invalid_field", "availability_zone");
    expect_parse("{" LB ",\"hostname\":\"bad_host\"}", "invalid_field", "hostname");
    expect_parse("{" LB ",\"hostname\":\"-vm\"}", "invalid_field", "hostname");
    expect_parse("{" LB ",\"hostname\":\"vm-\"}", "invalid_field", "hostname");
    expect_parse("{" LB ",\"hostname\":\"a..b\"}", "invalid_field", "hostname");
    s = repeat('h', 64);
    expect_fmt("invalid_field", "hostname", "{" LB ",\"hostname\":\"", s, "\"}");
    free(s);
    expect_parse("{" LB ",\"metadata_options\":{\"http_tokens\":\"maybe\"}}", "invalid_field",
                 "metadata_options.http_tokens");
    expect_parse("{" LB ",\"metadata_options\":{\"http_endpoint\":\"on\"}}", "invalid_field",
                 "metadata_options.http_endpoint");
    expect_parse("{" LB ",\"metadata_options\":{\"http_put_response_hop_limit\":65}}", "invalid_field",
                 "metadata_options.http_put_response_hop_limit");
    expect_parse("{" LB ",\"metadata_options\":{\"http_put_response_hop_limit\":0}}", "invalid_field",
                 "metadata_options.http_put_response_hop_limit");
    expect_parse("{" LB ",\"metadata_options\":{\"tags\":1}}", "unknown_field", "metadata_options.tags");
    expect_parse("{" LB ",\"metadata_options\":[]}", "invalid_field", "metadata_options");
    expect_parse("{" LB ",\"config_drive\":\"yes\"}", "invalid_field", "config_drive");
    expect_parse("{" LB ",\"config_drive_format\":\"iso9660\"}", "invalid_field", "config_drive_format");
}

static void test_command_guest_fields(void **state)
{
    json_t *j = parse("{\"op\":\"launch\",\"request_id\":\"r1\",\"instance\":{" LB ",\"interfaces\":"
                      "[{\"network\":\"n\"},{\"network\":\"n\",\"ip\":\"1.2.3\"}]}}");
    struct command_request c;
    struct agent_error err = {0};

    (void)state;
    expect_err(request_command_parse(j, cat, &c, &err), &err, "invalid_field", "instance.interfaces[1].ip", "bus");
    json_decref(j);
    strscpy(err.field, "interfaces[1].mac", sizeof(err.field));
    request_field_for_command(&err, true);
    assert_string_equal(err.field, "instance.interfaces[1].mac");
}

static void test_hostname(void **state)
{
    (void)state;
    assert_true(hostname_is_valid("vm1"));
    assert_true(hostname_is_valid("a.b-c.d"));
    assert_true(hostname_is_valid("1abc"));
    assert_false(hostname_is_valid(""));
    assert_false(hostname_is_valid("a."));
    assert_false(hostname_is_valid(".a"));
    assert_false(hostname_is_valid("a_b"));
    assert_false(hostname_is_valid("a-.b"));
}

static void test_launch_user_data_limit(void **state)
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

/* ---- JSON documents ---- */

static void test_json_object(void **state)
{
    struct agent_error err = {0};
    json_t *j = NULL;

    (void)state;
    assert_int_equal(request_json_object("{\"a\":1}", 7, &j, &err), 0);
    assert_true(json_is_object(j));
    json_decref(j);
    expect_err(request_json_object(NULL, 0, &j, &err), &err, "invalid_json", "", "no body");
    assert_null(j);
    expect_err(request_json_object("", 0, &j, &err), &err, "invalid_json", "", "empty");
    expect_err(request_json_object("[1]", 3, &j, &err), &err, "invalid_json", "", "an array");
    expect_err(request_json_object("{\"a\":1,\"a\":2}", 13, &j, &err), &err, "invalid_json", "", "duplicate key");
    expect_err(request_json_object("{\"a\":", 5, &j, &err), &err, "invalid_json", "", "cut short");
    assert_non_null(strstr(err.message, "line 1"));
    /* the length is the document's: bytes after it are not read */
    assert_int_equal(request_json_object("{}garbage", 2, &j, &err), 0);
    json_decref(j);
}

/* ---- request ids ---- */

static void test_request_id(void **state)
{
    struct agent_error err = {0};
    char big[REQUEST_ID_MAX + 2];
    const char *rid;
    json_t *b;

    (void)state;
    assert_int_equal(request_id_check("r-1", 3, "request_id", &err), 0);
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    expect_err(request_id_check(big, strlen(big), "request_id", &err), &err, "invalid_field", "request_id", "129");
    big[REQUEST_ID_MAX] = '\0';
    assert_int_equal(request_id_check(big, REQUEST_ID_MAX, "request_id", &err), 0);
    expect_err(request_id_check("", 0, "request_id", &err), &err, "invalid_field", "request_id", "empty");
    expect_err(request_id_check(NULL, 0, "request_id", &err), &err, "invalid_field", "request_id", "NULL");
    expect_err(request_id_check("a\0b", 3, "request_id", &err), &err, "invalid_field", "request_id", "NUL");
    expect_err(request_id_check("a\x7f", 2, "request_id", &err), &err, "invalid_field", "request_id", "DEL");
    expect_err(request_id_check("\xc3\xa9", 2, "request_id", &err), &err, "invalid_field", "request_id", "UTF-8");

    /* header and body field */
    assert_int_equal(request_id_resolve(NULL, NULL, &rid, &err), 0);
    assert_null(rid);
    assert_int_equal(request_id_resolve(NULL, "h-1", &rid, &err), 0);
    assert_string_equal(rid, "h-1");
    b = parse("{\"request_id\":\"b-1\"}");
    assert_int_equal(request_id_resolve(b, NULL, &rid, &err), 0);
    assert_string_equal(rid, "b-1");
    assert_int_equal(request_id_resolve(b, "b-1", &rid, &err), 0);
    expect_err(request_id_resolve(b, "other", &rid, &err), &err, "invalid_field", "request_id", "differs");
    expect_err(request_id_resolve(b, "bad\x01", &rid, &err), &err, "invalid_field", "request_id", "bad header");
    assert_non_null(strstr(err.message, "Idempotency-Key"));
    json_decref(b);
    b = parse("{\"request_id\":null}");
    assert_int_equal(request_id_resolve(b, "h", &rid, &err), 0);
    assert_string_equal(rid, "h");
    json_decref(b);
    b = parse("{\"request_id\":42}");
    expect_err(request_id_resolve(b, NULL, &rid, &err), &err, "invalid_field", "request_id", "a number");
    json_decref(b);
}

/* ---- actions ---- */

static void expect_action(const char *text, const char *idem, const char *code, const char *field)
{
    json_t *j = parse(text);
    struct action_request a;
    struct agent_error err = {0};
    int r = request_action_parse(j, idem, NULL, &a, &err);

    if (!code && r != 0)
        fail_msg("expected success for %s, got %s on %s: %s", text, err.code, err.field, err.message);
    if (code)
        expect_err(r, &err, code, field, text);
    json_decref(j);
}

static void test_action_valid(void **state)
{
    struct agent_error err = {0};
    struct action_request a;
    json_t *j;

    (void)state;
    j = parse("{\"action\":\"stop\",\"timeout\":30,\"force\":true,\"request_id\":\"r-9\"}");
    assert_int_equal(request_action_parse(j, NULL, NULL, &a, &err), 0);
    assert_int_equal(a.action, REQUEST_STOP);
    assert_string_equal(request_action_name(a.action), "stop");
    assert_int_equal(a.timeout_s, 30);
    assert_true(a.force);
    assert_string_equal(a.request_id, "r-9");
    json_decref(j);
    j = parse("{\"action\":\"reboot\"}");
    assert_int_equal(request_action_parse(j, "k-1", NULL, &a, &err), 0);
    assert_int_equal(a.action, REQUEST_REBOOT);
    assert_int_equal(a.timeout_s, -1); /* the configured one */
    assert_false(a.force);
    assert_string_equal(a.request_id, "k-1");
    json_decref(j);
    expect_action("{\"action\":\"start\"}", NULL, NULL, NULL);
    expect_action("{\"action\":\"stop\",\"timeout\":0}", NULL, NULL, NULL);
    expect_action("{\"action\":\"stop\",\"timeout\":3600}", NULL, NULL, NULL);
    expect_action("{\"action\":\"stop\",\"force\":false,\"request_id\":null}", NULL, NULL, NULL);
    assert_string_equal(request_action_name(REQUEST_TERMINATE), "terminate");
    /* issue 13 */
    j = parse("{\"action\":\"migrate\",\"target\":\"host-b\",\"max_downtime_ms\":300,"
              "\"completion_timeout_s\":0,\"postcopy\":\"auto\"}");
    assert_int_equal(request_action_parse(j, NULL, NULL, &a, &err), 0);
    assert_int_equal(a.action, REQUEST_MIGRATE);
    assert_string_equal(a.target, "host-b");
    assert_null(a.mode); /* live */
    assert_int_equal(a.max_downtime_ms, 300);
    assert_int_equal(a.completion_timeout_s, -1); /* none, as asked */
    assert_string_equal(a.postcopy, "auto");
    json_decref(j);
    j = parse("{\"action\":\"migrate\",\"target\":\"h.example-1\",\"mode\":\"cold\"}");
    assert_int_equal(request_action_parse(j, NULL, NULL, &a, &err), 0);
    assert_string_equal(a.mode, "cold");
    assert_int_equal(a.completion_timeout_s, 0); /* configured */
    json_decref(j);
    expect_action("{\"action\":\"abort_migration\"}", NULL, NULL, NULL);
    assert_string_equal(request_action_name(REQUEST_ABORT_MIGRATION), "abort_migration");
}

static void test_action_invalid(void **state)
{
    (void)state;
    expect_action("{}", NULL, "missing_field", "action");
    expect_action("{\"timeout\":5}", NULL, "missing_field", "action");
    expect_action("{\"action\":\"explode\"}", NULL, "invalid_field", "action");
    expect_action("{\"action\":\"terminate\"}", NULL, "invalid_field", "action"); /* that is DELETE */
    expect_action("{\"action\":\"STOP\"}", NULL, "invalid_field", "action");
    expect_action("{\"action\":7}", NULL, "invalid_field", "action");
    expect_action("{\"action\":null}", NULL, "invalid_field", "action");
    expect_action("{\"action\":\"stop\",\"timeout\":-1}", NULL, "invalid_field", "timeout");
    expect_action("{\"action\":\"stop\",\"timeout\":3601}", NULL, "invalid_field", "timeout");
    expect_action("{\"action\":\"stop\",\"timeout\":1.5}", NULL, "invalid_field", "timeout");
    expect_action("{\"action\":\"stop\",\"timeout\":\"30\"}", NULL, "invalid_field", "timeout");
    expect_action("{\"action\":\"stop\",\"force\":1}", NULL, "invalid_field", "force");
    expect_action("{\"action\":\"stop\",\"force\":\"yes\"}", NULL, "invalid_field", "force");
    expect_action("{\"action\":\"stop\",\"timeout_s\":5}", NULL, "unknown_field", "timeout_s");
    expect_action("{\"action\":\"stop\",\"instance_id\":\"x\"}", NULL, "unknown_field", "instance_id");
    expect_action("{\"action\":\"stop\",\"request_id\":\"\"}", NULL, "invalid_field", "request_id");
    expect_action("{\"action\":\"stop\",\"request_id\":\"a\"}", "b", "invalid_field", "request_id");
    expect_action("{\"action\":\"stop\"}", "", "invalid_field", "request_id");
    /* unknown fields are refused before the rest is looked at */
    expect_action("{\"zzz\":1,\"action\":\"explode\"}", NULL, "unknown_field", "zzz");
}

/* ---- bus commands ---- */

#define L "\"instance\":{\"name\":\"a\"," F "," K "}"

static void expect_command(const char *text, const char *code, const char *field)
{
    json_t *j = parse(text);
    struct command_request c;
    struct agent_error err = {0};
    int r = request_command_parse(j, cat, &c, &err);

    if (!code) {
        if (r != 0)
            fail_msg("expected success for %s, got %s on %s: %s", text, err.code, err.field, err.message);
        request_command_release(&c);
    } else {
        expect_err(r, &err, code, field, text);
    }
    json_decref(j);
}

static void test_command_valid(void **state)
{
    struct agent_error err = {0};
    struct command_request c;
    json_t *j;

    (void)state;
    j = parse("{\"op\":\"launch\",\"request_id\":\"r-1\"," L "}");
    assert_int_equal(request_command_parse(j, cat, &c, &err), 0);
    assert_true(c.launch);
    assert_string_equal(c.spec.name, "a");
    assert_string_equal(c.spec.request_id, "r-1"); /* the command's */
    assert_null(c.instance_id);
    request_command_release(&c);
    json_decref(j);

    j = parse("{\"op\":\"stop\",\"request_id\":\"r-2\",\"instance_id\":\"i-0123456789abcdef0\","
              "\"timeout\":10,\"force\":true}");
    assert_int_equal(request_command_parse(j, cat, &c, &err), 0);
    assert_false(c.launch);
    assert_int_equal(c.action.action, REQUEST_STOP);
    assert_int_equal(c.action.timeout_s, 10);
    assert_true(c.action.force);
    assert_string_equal(c.action.request_id, "r-2");
    assert_string_equal(c.instance_id, "i-0123456789abcdef0");
    request_command_release(&c);
    json_decref(j);

    j = parse("{\"op\":\"terminate\",\"request_id\":\"r-3\",\"instance_id\":\"x\"}");
    assert_int_equal(request_command_parse(j, cat, &c, &err), 0);
    assert_int_equal(c.action.action, REQUEST_TERMINATE);
    assert_int_equal(c.action.timeout_s, -1);
    request_command_release(&c);
    json_decref(j);
    expect_command("{\"op\":\"launch\",\"request_id\":\"r\",\"instance\":{\"name\":\"a\"," F "," K
                   ",\"request_id\":\"r\"}}", NULL, NULL);
}

static void test_command_invalid(void **state)
{
    (void)state;
    expect_command("{\"op\":\"stop\",\"request_id\":\"r\",\"instance_id\":\"x\",\"colour\":1}", "unknown_field", "colour");
    expect_command("{\"request_id\":\"r\"}", "missing_field", "op");
    expect_command("{\"op\":\"teleport\",\"request_id\":\"r\"}", "invalid_field", "op");
    /* issue 13: a migrate names what it lacks, and only a migrate takes its fields */
    expect_command("{\"op\":\"migrate\",\"request_id\":\"r\",\"instance_id\":\"x\"}", "missing_field", "target");
    expect_command("{\"op\":\"migrate\",\"request_id\":\"r\",\"instance_id\":\"x\",\"target\":\"a b\"}",
                   "invalid_field", "target");
    expect_command("{\"op\":\"migrate\",\"request_id\":\"r\",\"instance_id\":\"x\",\"target\":\"h\","
                   "\"mode\":\"auto\"}", "invalid_field", "mode");
    expect_command("{\"op\":\"migrate\",\"request_id\":\"r\",\"instance_id\":\"x\",\"target\":\"h\","
                   "\"max_downtime_ms\":5}", "invalid_field", "max_downtime_ms");
    expect_command("{\"op\":\"migrate\",\"request_id\":\"r\",\"instance_id\":\"x\",\"target\":\"h\","
                   "\"completion_timeout_s\":-1}", "invalid_field", "completion_timeout_s");
    expect_command("{\"op\":\"migrate\",\"request_id\":\"r\",\"instance_id\":\"x\",\"target\":\"h\","
                   "\"postcopy\":\"sometimes\"}", "invalid_field", "postcopy");
    expect_command("{\"op\":\"migrate\",\"request_id\":\"r\",\"instance_id\":\"x\",\"target\":\"h\","
                   "\"mode\":\"cold\",\"postcopy\":\"auto\"}", "invalid_field", "postcopy");
    expect_command("{\"op\":\"stop\",\"request_id\":\"r\",\"instance_id\":\"x\",\"target\":\"h\"}",
                   "invalid_field", "target");
    expect_command("{\"op\":\"stop\",\"request_id\":\"r\",\"instance_id\":\"x\",\"mode\":\"live\"}",
                   "invalid_field", "mode");
    /* issue 12: a resize names what it lacks, and only a resize takes a flavor */
    expect_command("{\"op\":\"resize\",\"request_id\":\"r\",\"instance_id\":\"i-0123456789abcdef0\"}",
                   "missing_field", "flavor");
    expect_command("{\"op\":\"resize\",\"request_id\":\"r\",\"instance_id\":\"i-0123456789abcdef0\","
                   "\"flavor\":{\"vcpus\":2,\"memory_mb\":64},\"mode\":\"warp\"}",
                   "invalid_field", "mode");
    expect_command("{\"op\":\"stop\",\"request_id\":\"r\",\"instance_id\":\"i-0123456789abcdef0\","
                   "\"instance_type\":\"t3.micro\"}",
                   "invalid_field", "instance_type");
    expect_command("{\"op\":5,\"request_id\":\"r\"}", "invalid_field", "op");
    expect_command("{\"op\":\"stop\",\"instance_id\":\"x\"}", "missing_field", "request_id");
    expect_command("{\"op\":\"stop\",\"request_id\":3,\"instance_id\":\"x\"}", "invalid_field", "request_id");
    expect_command("{\"op\":\"stop\",\"request_id\":\"r\\u0000\",\"instance_id\":\"x\"}", "invalid_field", "request_id");
    /* launch */
    expect_command("{\"op\":\"launch\",\"request_id\":\"r\",\"instance_id\":\"x\"," L "}", "invalid_field", "instance_id");
    expect_command("{\"op\":\"launch\",\"request_id\":\"r\"}", "missing_field", "instance");
    expect_command("{\"op\":\"launch\",\"request_id\":\"r\",\"instance\":[]}", "invalid_field", "instance");
    expect_command("{\"op\":\"launch\",\"request_id\":\"r\",\"instance\":{" F "," K "}}", "missing_field", "instance.name");
    expect_command("{\"op\":\"launch\",\"request_id\":\"r\",\"instance\":{\"name\":\"a\","
                   "\"flavor\":{\"vcpus\":0,\"memory_mb\":128}," K "}}", "invalid_field", "instance.flavor.vcpus");
    expect_command("{\"op\":\"launch\",\"request_id\":\"r\",\"instance\":{\"name\":\"a\"," F ","
                   "\"kernel\":{\"path\":\"k\"}}}", "invalid_field", "instance.kernel.path");
    expect_command("{\"op\":\"launch\",\"request_id\":\"r\",\"instance\":{\"name\":\"a\"," F "," K ",\"request_id\":7}}",
                   "invalid_field", "instance.request_id");
    expect_command("{\"op\":\"launch\",\"request_id\":\"r\",\"instance\":{\"name\":\"a\"," F "," K ",\"request_id\":\"q\"}}",
                   "invalid_field", "instance.request_id");
    /* actions */
    expect_command("{\"op\":\"stop\",\"request_id\":\"r\",\"instance_id\":\"x\"," L "}", "invalid_field", "instance");
    expect_command("{\"op\":\"stop\",\"request_id\":\"r\"}", "missing_field", "instance_id");
    expect_command("{\"op\":\"stop\",\"request_id\":\"r\",\"instance_id\":5}", "invalid_field", "instance_id");
    expect_command("{\"op\":\"stop\",\"request_id\":\"r\",\"instance_id\":\"x\",\"timeout\":4000}", "invalid_field", "timeout");
    expect_command("{\"op\":\"reboot\",\"request_id\":\"r\",\"instance_id\":\"x\",\"force\":\"no\"}", "invalid_field", "force");
    {
        json_t *j = parse("[]");
        struct command_request c;
        struct agent_error err = {0};
        expect_err(request_command_parse(j, cat, &c, &err), &err, "invalid_json", "", "an array");
        json_decref(j);
    }
}

static void test_field_for_command(void **state)
{
    struct agent_error e = {0};

    (void)state;
    strscpy(e.field, "id", sizeof(e.field));
    request_field_for_command(&e, false);
    assert_string_equal(e.field, "instance_id");
    strscpy(e.field, "action", sizeof(e.field));
    request_field_for_command(&e, false);
    assert_string_equal(e.field, "op");
    strscpy(e.field, "force", sizeof(e.field));
    request_field_for_command(&e, false);
    assert_string_equal(e.field, "force");
    strscpy(e.field, "image.path", sizeof(e.field));
    request_field_for_command(&e, true);
    assert_string_equal(e.field, "instance.image.path");
    strscpy(e.field, "request_id", sizeof(e.field));
    request_field_for_command(&e, true);
    assert_string_equal(e.field, "request_id");
    e.field[0] = '\0';
    request_field_for_command(&e, true);
    assert_string_equal(e.field, "");
    /* a long path is cut, and stays valid UTF-8 */
    memset(e.field, 'a', sizeof(e.field) - 3);
    e.field[sizeof(e.field) - 3] = '\xc3';
    e.field[sizeof(e.field) - 2] = '\xa9';
    e.field[sizeof(e.field) - 1] = '\0';
    request_field_for_command(&e, true);
    assert_int_equal(strlen(e.field), sizeof(e.field) - 1);
    assert_memory_equal(e.field, "instance.", 9);
    request_field_for_command(NULL, true); /* no error to rename */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_launch_valid),
        cmocka_unit_test(test_launch_invalid),
        cmocka_unit_test(test_launch_id),
        cmocka_unit_test(test_launch_user_data_limit),
        cmocka_unit_test(test_launch_guest_valid),
        cmocka_unit_test(test_launch_guest_invalid),
        cmocka_unit_test(test_command_guest_fields),
        cmocka_unit_test(test_hostname),
        cmocka_unit_test(test_json_object),
        cmocka_unit_test(test_request_id),
        cmocka_unit_test(test_action_valid),
        cmocka_unit_test(test_action_invalid),
        cmocka_unit_test(test_command_valid),
        cmocka_unit_test(test_command_invalid),
        cmocka_unit_test(test_field_for_command),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
