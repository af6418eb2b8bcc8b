/*
 * Unit tests for computectl (cli/): option parsing, request bodies, user-data
 * encoding and limit, id classification, table and object formatting, wait
 * predicates, and whole commands against a tiny HTTP agent on a unix socket
 * served from a thread of this test (canned answers, real libcurl).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>
#include <curl/curl.h>

#include "cli/cli-internal.h"

#define UUID_A "0b7c5e1e-8d0c-4c1a-9f57-1f1a2b3c4d5e"
#define UUID_OP "7f000000-0000-4000-8000-000000000001"
#define EC2_A "i-0123456789abcdef0"

/* ------------------------------------------------------------------ helpers */

static char *no_env(const char *name) {
        (void) name;
        return NULL;
}

static const char *fake_env_socket, *fake_env_url, *fake_env_token;

static char *fake_env(const char *name) {
        if (strcmp(name, "COMPUTE_AGENT_SOCKET") == 0)
                return (char *) fake_env_socket;
        if (strcmp(name, "COMPUTE_AGENT_URL") == 0)
                return (char *) fake_env_url;
        if (strcmp(name, "COMPUTE_AGENT_TOKEN") == 0)
                return (char *) fake_env_token;
        return NULL;
}

static int argv_count(char *const *argv) {
        int n = 0;

        while (argv[n])
                n++;
        return n;
}

/* Parses a command line the way ctl_main() does: globals, then the command's tables. */
static int parse_like_main(char *const *argv, struct ctl_args *args, struct ctl_error *e) {
        const struct ctl_option *const globals[] = { ctl_global_options, NULL };
        const struct ctl_command *cmd;
        int argc = argv_count(argv), r;

        *args = (struct ctl_args) {};
        r = ctl_args_parse(args, globals, argc, argv, 1, true, e);
        if (r < 0)
                return r;
        assert_true(args->next < argc);
        cmd = ctl_command_find(argv[args->next]);
        assert_non_null(cmd);
        {
                static const struct ctl_option none[] = { {} };
                const struct ctl_option *const tables[] = {
                        cmd->options ? cmd->options : none, ctl_global_options, NULL,
                };

                return ctl_args_parse(args, tables, argc, argv, args->next + 1, false, e);
        }
}

/* Builds a launch body from a command line; returns the builder's result. */
static int launch_body_of(char *const *argv, json_t **ret, struct ctl_error *e) {
        struct ctl_args args;
        int r = parse_like_main(argv, &args, e);

        if (r < 0)
                return r;
        return ctl_launch_body(&args, ret, e);
}

static void assert_json_equal_text(const json_t *v, const char *expected_json) {
        json_auto_t *want = json_loads(expected_json, 0, NULL);

        assert_non_null(want);
        if (!json_equal((json_t *) v, want)) {
                char *got = json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS);

                print_error("got      %s\nexpected %s\n", got, expected_json);
                free(got);
                fail();
        }
}

static char *tmpfile_with(size_t len, char fill) {
        char *path = strdup("/tmp/test_cli_XXXXXX");
        char *buf = malloc(len + 1);
        int fd;

        assert_non_null(path);
        assert_non_null(buf);
        memset(buf, fill, len);
        fd = mkstemp(path);
        assert_true(fd >= 0);
        assert_int_equal(write(fd, buf, len), (ssize_t) len);
        close(fd);
        free(buf);
        return path;
}

/* ------------------------------------------------------------------ args.c */

static void test_args_global_stops_at_command(void **state) {
        char *argv[] = { "computectl", "--json", "--socket", "/s", "--timeout=2.5", "list", "--url", "x", NULL };
        const struct ctl_option *const globals[] = { ctl_global_options, NULL };
        struct ctl_args args = {};
        struct ctl_error e = {};

        (void) state;
        assert_int_equal(ctl_args_parse(&args, globals, 8, argv, 1, true, &e), 0);
        assert_int_equal(args.next, 5);
        assert_string_equal(args.value[CTL_OPT_JSON], "");
        assert_string_equal(args.value[CTL_OPT_SOCKET], "/s");
        assert_string_equal(args.value[CTL_OPT_TIMEOUT], "2.5");
        assert_null(args.value[CTL_OPT_URL]);
        assert_int_equal(args.n_positional, 0);
}

static void test_args_permutes_and_last_wins(void **state) {
        char *argv[] = { "computectl", "launch", "--type", "a", "web", "--image=/i", "--type", "b",
                         "--json", "--wait", NULL };
        struct ctl_args args;
        struct ctl_error e = {};

        (void) state;
        assert_int_equal(parse_like_main(argv, &args, &e), 0);
        assert_int_equal(args.n_positional, 1);
        assert_string_equal(args.positional[0], "web");
        assert_string_equal(args.value[CTL_OPT_TYPE], "b");
        assert_string_equal(args.value[CTL_OPT_IMAGE], "/i");
        assert_non_null(args.value[CTL_OPT_JSON]);      /* a global option after the command */
        assert_non_null(args.value[CTL_OPT_WAIT]);
}

static void test_args_double_dash_and_dash(void **state) {
        char *argv[] = { "computectl", "launch", "-", "--", "--name-with-dashes", NULL };
        struct ctl_args args;
        struct ctl_error e = {};

        (void) state;
        assert_int_equal(parse_like_main(argv, &args, &e), 0);
        assert_int_equal(args.n_positional, 2);
        assert_string_equal(args.positional[0], "-");
        assert_string_equal(args.positional[1], "--name-with-dashes");
}

static void test_args_errors(void **state) {
        struct ctl_args args;
        struct ctl_error e = {};
        char *unknown[] = { "computectl", "list", "--bogus", NULL };
        char *missing[] = { "computectl", "launch", "x", "--type", NULL };
        char *flag_value[] = { "computectl", "list", "--json=yes", NULL };
        char *short_unknown[] = { "computectl", "list", "-x", NULL };
        char *not_for_cmd[] = { "computectl", "start", EC2_A, "--force", NULL };
        char *many[] = { "computectl", "list", "1", "2", "3", "4", "5", "6", "7", "8", "9", NULL };
        char *help[] = { "computectl", "list", "-h", NULL };

        (void) state;
        assert_int_equal(parse_like_main(unknown, &args, &e), -EINVAL);
        assert_string_equal(e.message, "unknown option --bogus");
        assert_int_equal(parse_like_main(missing, &args, &e), -EINVAL);
        assert_string_equal(e.message, "option --type needs a value (T)");
        assert_int_equal(parse_like_main(flag_value, &args, &e), -EINVAL);
        assert_string_equal(e.message, "option --json takes no value");
        assert_int_equal(parse_like_main(short_unknown, &args, &e), -EINVAL);
        assert_int_equal(parse_like_main(not_for_cmd, &args, &e), -EINVAL);
        assert_string_equal(e.message, "unknown option --force");
        assert_int_equal(parse_like_main(many, &args, &e), -EINVAL);
        assert_int_equal(parse_like_main(help, &args, &e), 0);
        assert_non_null(args.value[CTL_OPT_HELP]);
}

/* `wait --timeout` is the wait's own deadline, not the global per-request limit. */
static void test_args_command_option_shadows_global(void **state) {
        char *argv[] = { "computectl", "--timeout", "5", "wait", UUID_A, "--timeout", "60", NULL };
        struct ctl_args args;
        struct ctl_error e = {};

        (void) state;
        assert_int_equal(parse_like_main(argv, &args, &e), 0);
        assert_string_equal(args.value[CTL_OPT_TIMEOUT], "5");
        assert_string_equal(args.value[CTL_OPT_WAIT_FOR_TIMEOUT], "60");
}

static void test_parse_numbers(void **state) {
        uint64_t u;
        long ms;

        (void) state;
        assert_int_equal(ctl_parse_uint("0", 10, &u), 0);
        assert_int_equal(u, 0);
        assert_int_equal(ctl_parse_uint("4194304", UINT32_MAX, &u), 0);
        assert_int_equal(u, 4194304);
        assert_int_equal(ctl_parse_uint("11", 10, &u), -ERANGE);
        assert_int_equal(ctl_parse_uint("99999999999999999999999", UINT64_MAX, &u), -ERANGE);
        assert_int_equal(ctl_parse_uint("-1", 10, &u), -EINVAL);
        assert_int_equal(ctl_parse_uint("+1", 10, &u), -EINVAL);
        assert_int_equal(ctl_parse_uint(" 1", 10, &u), -EINVAL);
        assert_int_equal(ctl_parse_uint("1k", 10, &u), -EINVAL);
        assert_int_equal(ctl_parse_uint("", 10, &u), -EINVAL);

        assert_int_equal(ctl_parse_seconds("2", &ms), 0);
        assert_int_equal(ms, 2000);
        assert_int_equal(ctl_parse_seconds("0.25", &ms), 0);
        assert_int_equal(ms, 250);
        assert_int_equal(ctl_parse_seconds(".5", &ms), 0);
        assert_int_equal(ms, 500);
        assert_int_equal(ctl_parse_seconds("0", &ms), 0);
        assert_int_equal(ms, 0);
        assert_int_equal(ctl_parse_seconds("-1", &ms), -EINVAL);
        assert_int_equal(ctl_parse_seconds("inf", &ms), -EINVAL);
        assert_int_equal(ctl_parse_seconds("nan", &ms), -EINVAL);
        assert_int_equal(ctl_parse_seconds("0x10", &ms), -EINVAL);
        assert_int_equal(ctl_parse_seconds("5s", &ms), -EINVAL);
        assert_int_equal(ctl_parse_seconds("", &ms), -EINVAL);
        assert_int_equal(ctl_parse_seconds("1e300", &ms), -ERANGE);
}

static void test_config(void **state) {
        struct ctl_config cfg;
        struct ctl_error e = {};
        struct ctl_args args = {};

        (void) state;
        /* defaults */
        assert_int_equal(ctl_config_load(&cfg, &args, no_env, &e), 0);
        assert_string_equal(cfg.socket_path, CTL_DEFAULT_SOCKET);
        assert_null(cfg.url);
        assert_null(cfg.token);
        assert_false(cfg.json);
        assert_int_equal(cfg.timeout_ms, CTL_DEFAULT_TIMEOUT_MS);

        /* environment */
        fake_env_socket = "/env.sock";
        fake_env_url = "http://127.0.0.1:8780";
        fake_env_token = "envtoken";
        assert_int_equal(ctl_config_load(&cfg, &args, fake_env, &e), 0);
        assert_string_equal(cfg.url, "http://127.0.0.1:8780");
        assert_string_equal(cfg.token, "envtoken");

        /* --socket on the command line beats COMPUTE_AGENT_URL; flags beat env */
        args.value[CTL_OPT_SOCKET] = "/flag.sock";
        args.value[CTL_OPT_TOKEN] = "flagtoken";
        args.value[CTL_OPT_JSON] = "";
        args.value[CTL_OPT_TIMEOUT] = "0";
        assert_int_equal(ctl_config_load(&cfg, &args, fake_env, &e), 0);
        assert_null(cfg.url);
        assert_string_equal(cfg.socket_path, "/flag.sock");
        assert_string_equal(cfg.token, "flagtoken");
        assert_true(cfg.json);
        assert_int_equal(cfg.timeout_ms, 0);

        /* errors leave cfg alone */
        cfg.timeout_ms = 42;
        args.value[CTL_OPT_URL] = "http://h";
        assert_int_equal(ctl_config_load(&cfg, &args, fake_env, &e), -EINVAL);
        assert_string_equal(e.message, "--socket and --url exclude each other");
        args.value[CTL_OPT_SOCKET] = NULL;
        args.value[CTL_OPT_URL] = "ftp://h";
        assert_int_equal(ctl_config_load(&cfg, &args, fake_env, &e), -EINVAL);
        args.value[CTL_OPT_URL] = "https://h";
        args.value[CTL_OPT_TIMEOUT] = "soon";
        assert_int_equal(ctl_config_load(&cfg, &args, fake_env, &e), -EINVAL);
        args.value[CTL_OPT_TIMEOUT] = NULL;
        args.value[CTL_OPT_TOKEN] = "bad\r\ntoken";
        assert_int_equal(ctl_config_load(&cfg, &args, fake_env, &e), -EINVAL);
        assert_int_equal(cfg.timeout_ms, 42);

        fake_env_socket = fake_env_url = fake_env_token = NULL;
}

/* ------------------------------------------------------------------ request.c */

static void test_id_classify(void **state) {
        (void) state;
        assert_int_equal(ctl_id_classify(UUID_A), CTL_ID_UUID);
        assert_int_equal(ctl_id_classify("0B7C5E1E-8D0C-4C1A-9F57-1F1A2B3C4D5E"), CTL_ID_UUID);
        assert_int_equal(ctl_id_classify(EC2_A), CTL_ID_EC2);
        assert_int_equal(ctl_id_classify("i-0123456789abcdef"), CTL_ID_INVALID);     /* 16 hex */
        assert_int_equal(ctl_id_classify("i-0123456789abcdef01"), CTL_ID_INVALID);   /* 18 hex */
        assert_int_equal(ctl_id_classify("i-0123456789abcdefg"), CTL_ID_INVALID);
        assert_int_equal(ctl_id_classify("0b7c5e1e-8d0c-4c1a-9f57-1f1a2b3c4d5"), CTL_ID_INVALID);
        assert_int_equal(ctl_id_classify("0b7c5e1e08d0c-4c1a-9f57-1f1a2b3c4d5e"), CTL_ID_INVALID);
        assert_int_equal(ctl_id_classify("0b7c5e1e-8d0c-4c1a-9f57-1f1a2b3c4d5z"), CTL_ID_INVALID);
        assert_int_equal(ctl_id_classify("../../v1/host"), CTL_ID_INVALID);
        assert_int_equal(ctl_id_classify("web1"), CTL_ID_INVALID);
        assert_int_equal(ctl_id_classify(""), CTL_ID_INVALID);
        assert_int_equal(ctl_id_classify(NULL), CTL_ID_INVALID);
}

static void test_base64(void **state) {
        static const struct {
                const char *in, *out;
        } vectors[] = {         /* RFC 4648 section 10 */
                { "", "" }, { "f", "Zg==" }, { "fo", "Zm8=" }, { "foo", "Zm9v" },
                { "foob", "Zm9vYg==" }, { "fooba", "Zm9vYmE=" }, { "foobar", "Zm9vYmFy" },
        };
        static const unsigned char bin[] = { 0x00, 0xff, 0xfe, 0x80, 0x3e, 0x3f };
        char *s;

        (void) state;
        for (size_t i = 0; i < sizeof(vectors) / sizeof(vectors[0]); i++) {
                assert_int_equal(ctl_base64_encode(vectors[i].in, strlen(vectors[i].in), &s), 0);
                assert_string_equal(s, vectors[i].out);
                free(s);
        }
        assert_int_equal(ctl_base64_encode(bin, sizeof(bin), &s), 0);
        assert_string_equal(s, "AP/+gD4/");
        free(s);
}

/* console.c's decoder: the RFC vectors back, binary bytes, malformed input refused. */
static void test_base64_decode(void **state) {
        static const char *const plain[] = { "", "f", "fo", "foo", "foob", "fooba", "foobar" };
        static const char *const bad[] = { "Zg=", "Z===", "Zm=v", "=Zg=", "Zg==Zg==", "Zm9v!A==", "Zm9", "Zm 9" };
        unsigned char *d;
        size_t n;
        char *s;

        (void) state;
        for (size_t i = 0; i < sizeof(plain) / sizeof(plain[0]); i++) {
                assert_int_equal(ctl_base64_encode(plain[i], strlen(plain[i]), &s), 0);
                assert_int_equal(ctl_base64_decode(s, &d, &n), 0);
                assert_int_equal(n, strlen(plain[i]));
                assert_memory_equal(d, plain[i], n);
                free(d);
                free(s);
        }
        assert_int_equal(ctl_base64_decode("AP/+gD4/", &d, &n), 0);
        assert_int_equal(n, 6);
        assert_memory_equal(d, "\x00\xff\xfe\x80\x3e\x3f", 6);
        free(d);
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
                assert_int_equal(ctl_base64_decode(bad[i], &d, &n), -EINVAL);
}

static void test_user_data_limit(void **state) {
        char *at_limit = tmpfile_with(CTL_USER_DATA_MAX, 'a');
        char *over = tmpfile_with(CTL_USER_DATA_MAX + 1, 'a');
        char *empty = tmpfile_with(0, 'a');
        char *argv[] = { "computectl", "launch", "web", "--type", "t3.micro", "--image", "/i",
                         "--user-data-file", at_limit, NULL };
        json_t *body = NULL;
        struct ctl_error e = {};
        char *data = NULL;
        size_t len = 0;
        const char *ud;

        (void) state;
        /* exactly 16384 bytes: accepted, base64 of 16384 bytes is 21848 characters */
        assert_int_equal(launch_body_of(argv, &body, &e), 0);
        ud = json_string_value(json_object_get(body, "user_data"));
        assert_non_null(ud);
        assert_int_equal(strlen(ud), 21848);
        assert_memory_equal(ud, "YWFh", 4);
        json_decref(body);
        body = NULL;

        /* one byte more: refused with a message naming the file and the limit */
        argv[8] = over;
        assert_int_equal(launch_body_of(argv, &body, &e), -EFBIG);
        assert_null(body);
        assert_non_null(strstr(e.message, over));
        assert_non_null(strstr(e.message, "16384 bytes"));

        /* the reader alone, also for a too-large file */
        assert_int_equal(ctl_file_read_limited(over, CTL_USER_DATA_MAX, &data, &len, &e), -EFBIG);
        assert_null(data);
        assert_int_equal(ctl_file_read_limited(empty, CTL_USER_DATA_MAX, &data, &len, &e), 0);
        assert_int_equal(len, 0);
        free(data);

        /* an empty file is empty user data */
        argv[8] = empty;
        assert_int_equal(launch_body_of(argv, &body, &e), 0);
        assert_string_equal(json_string_value(json_object_get(body, "user_data")), "");
        json_decref(body);

        /* a missing file */
        argv[8] = "/nonexistent/user-data";
        assert_int_equal(launch_body_of(argv, &body, &e), -ENOENT);
        assert_non_null(strstr(e.message, "/nonexistent/user-data"));

        unlink(at_limit);
        unlink(over);
        unlink(empty);
        free(at_limit);
        free(over);
        free(empty);
}

static void test_launch_body_type_image(void **state) {
        char *argv[] = { "computectl", "launch", "web 1", "--type", "t3.micro", "--image",
                         "/var/lib/images/disk.raw", "--request-id", "req-1", NULL };
        json_auto_t *body = NULL;
        struct ctl_error e = {};

        (void) state;
        assert_int_equal(launch_body_of(argv, &body, &e), 0);
        assert_json_equal_text(body, "{\"name\":\"web 1\",\"instance_type\":\"t3.micro\","
                                     "\"image\":{\"path\":\"/var/lib/images/disk.raw\"},"
                                     "\"request_id\":\"req-1\"}");
}

static void test_launch_body_flavor_kernel(void **state) {
        char *argv[] = { "computectl", "launch", "--vcpus", "2", "--memory", "1024", "--disk", "0",
                         "--kernel", "/k/vmlinuz", "--initrd", "/k/initrd.gz", "--cmdline",
                         "console=ttyS0 quiet", "tiny", NULL };
        char *no_disk[] = { "computectl", "launch", "t", "--vcpus", "1", "--memory", "64",
                            "--kernel", "/k", NULL };
        json_auto_t *body = NULL, *body2 = NULL;
        struct ctl_error e = {};

        (void) state;
        assert_int_equal(launch_body_of(argv, &body, &e), 0);
        assert_json_equal_text(body, "{\"name\":\"tiny\",\"flavor\":{\"vcpus\":2,\"memory_mb\":1024,"
                                     "\"disk_gb\":0},\"kernel\":{\"path\":\"/k/vmlinuz\","
                                     "\"initrd\":\"/k/initrd.gz\",\"cmdline\":\"console=ttyS0 quiet\"}}");
        assert_int_equal(launch_body_of(no_disk, &body2, &e), 0);
        assert_json_equal_text(body2, "{\"name\":\"t\",\"flavor\":{\"vcpus\":1,\"memory_mb\":64},"
                                      "\"kernel\":{\"path\":\"/k\"}}");
}

/* --image takes a path or a cache id; --image-url with --digest; --glance-id; any with --kernel. */
static void test_launch_body_image_sources(void **state) {
        static const struct {
                const char *args[8];
                const char *body;
        } cases[] = {
                { { "--image", UUID_A }, "{\"name\":\"n\",\"instance_type\":\"t\",\"image\":{\"id\":\"" UUID_A "\"}}" },
                { { "--image-url", "https://h/i.qcow2", "--digest", "sha256:ab" },
                  "{\"name\":\"n\",\"instance_type\":\"t\",\"image\":{\"url\":\"https://h/i.qcow2\",\"digest\":\"sha256:ab\"}}" },
                { { "--glance-id", UUID_OP }, "{\"name\":\"n\",\"instance_type\":\"t\",\"image\":{\"glance_id\":\"" UUID_OP "\"}}" },
                { { "--image", "/d.raw", "--kernel", "/k", "--cmdline", "root=/dev/vda" },
                  "{\"name\":\"n\",\"instance_type\":\"t\",\"image\":{\"path\":\"/d.raw\"},"
                  "\"kernel\":{\"path\":\"/k\",\"cmdline\":\"root=/dev/vda\"}}" },
                { { "--glance-id", UUID_OP, "--kernel", "/k", "--initrd", "/i" },
                  "{\"name\":\"n\",\"instance_type\":\"t\",\"image\":{\"glance_id\":\"" UUID_OP "\"},"
                  "\"kernel\":{\"path\":\"/k\",\"initrd\":\"/i\"}}" },
        };

        (void) state;
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                char *argv[16] = { "computectl", "launch", "n", "--type", "t" };
                json_auto_t *body = NULL;
                struct ctl_error e = {};
                size_t n = 5;

                for (size_t j = 0; j < 8 && cases[i].args[j]; j++)
                        argv[n++] = (char *) cases[i].args[j];
                argv[n] = NULL;
                if (launch_body_of(argv, &body, &e) != 0) {
                        print_error("case %zu: %s\n", i, e.message);
                        fail();
                }
                assert_json_equal_text(body, cases[i].body);
        }
}

static void test_launch_body_usage_errors(void **state) {
        static const struct {
                const char *args[8];
                const char *message;    /* substring */
        } cases[] = {
                { { "--type", "t", "--image", "/i" }, "NAME" },
                { { "n", "--image", "/i" }, "--type T, or --vcpus N and --memory MB" },
                { { "n", "--vcpus", "1", "--image", "/i" }, "--vcpus N and --memory MB" },
                { { "n", "--type", "t", "--disk", "1", "--image", "/i" }, "not both" },
                { { "n", "--type", "t" }, "--image PATH|ID, --image-url URL --digest D, --glance-id ID, or --kernel PATH" },
                { { "n", "--type", "t", "--image", "/i", "--glance-id", "g" }, "one of --image, --image-url or --glance-id" },
                { { "n", "--type", "t", "--image", "/i", "--cmdline", "x" }, "go with --kernel" },
                { { "n", "--type", "t", "--image", "disk.raw" }, "not an absolute path or a cached image id" },
                { { "n", "--type", "t", "--image", "http://x/i" }, "use --image-url URL --digest D" },
                { { "n", "--type", "t", "--image-url", "http://x/i" }, "needs --digest" },
                { { "n", "--type", "t", "--image", "/i", "--digest", "sha256:00" }, "--digest goes with --image-url" },
                { { "n", "--type", "t", "--image-url", "ftp://x/i", "--digest", "sha256:00" }, "not an http:// or https:// URL" },
                { { "n", "--vcpus", "two", "--memory", "1", "--image", "/i" }, "--vcpus: 'two'" },
                { { "n", "--vcpus", "1", "--memory", "-5", "--image", "/i" }, "--memory: '-5' is not a whole number of MB" },
                { { "n", "--type", "", "--image", "/i" }, "empty instance type" },
                { { "n", "--type", "t", "--image", "/i", "--request-id", "" }, "--request-id" },
                { { "\xff\xfe", "--type", "t", "--image", "/i" }, "UTF-8" },
        };

        (void) state;
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                char *argv[12] = { "computectl", "launch" };
                json_t *body = NULL;
                struct ctl_error e = {};
                size_t n = 2;

                for (size_t j = 0; j < 8 && cases[i].args[j]; j++)
                        argv[n++] = (char *) cases[i].args[j];
                argv[n] = NULL;
                assert_int_equal(launch_body_of(argv, &body, &e), -EINVAL);
                assert_null(body);
                if (!strstr(e.message, cases[i].message)) {
                        print_error("case %zu: message '%s' lacks '%s'\n", i, e.message, cases[i].message);
                        fail();
                }
        }
}


#define KEY_ED "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGh1bnRlcjI="

static void test_args_repeatable(void **state) {
        char *argv[] = { "computectl", "launch", "n", "--meta", "a=1", "--network", "n1",
                         "--meta=b=2", "--network", "n2,mtu=1400", "--type", "x", "--type", "y", NULL };
        struct ctl_args args;
        struct ctl_error e = {};

        (void) state;
        assert_int_equal(parse_like_main(argv, &args, &e), 0);
        assert_string_equal(ctl_args_nth(&args, CTL_OPT_NETWORK, 0), "n1");
        assert_string_equal(ctl_args_nth(&args, CTL_OPT_NETWORK, 1), "n2,mtu=1400");
        assert_null(ctl_args_nth(&args, CTL_OPT_NETWORK, 2));
        assert_string_equal(ctl_args_nth(&args, CTL_OPT_META, 0), "a=1");
        assert_string_equal(ctl_args_nth(&args, CTL_OPT_META, 1), "b=2");
        assert_null(ctl_args_nth(&args, CTL_OPT_KEY, 0));
        assert_null(ctl_args_nth(&args, CTL_OPT_TYPE, 0));      /* not repeatable: */
        assert_string_equal(args.value[CTL_OPT_TYPE], "y");     /* the last one wins */
}

static void test_args_optional_value(void **state) {
        char *bare[] = { "computectl", "launch", "--config-drive", "n", NULL };
        char *valued[] = { "computectl", "launch", "n", "--config-drive=nocloud", NULL };
        struct ctl_args args;
        struct ctl_error e = {};

        (void) state;
        assert_int_equal(parse_like_main(bare, &args, &e), 0);
        assert_string_equal(args.value[CTL_OPT_CONFIG_DRIVE], "");
        assert_int_equal(args.n_positional, 1);         /* "n" is not taken as the value */
        assert_string_equal(args.positional[0], "n");
        assert_int_equal(parse_like_main(valued, &args, &e), 0);
        assert_string_equal(args.value[CTL_OPT_CONFIG_DRIVE], "nocloud");
}

static void test_launch_body_guest_fields(void **state) {
        char key_path[] = "/tmp/ca-test-cli-key-XXXXXX";
        int fd = mkstemp(key_path);
        char at_key[64];
        char *argv[] = { "computectl", "launch", "g", "--type", "t", "--image", "/i",
                         "--network", "n1", "--network", "n2,mac=02:CA:FE:00:00:01,ip=10.0.0.5,mtu=1400",
                         "--key", "k1=" KEY_ED " u@h", "--key", at_key,
                         "--meta", "role=web", "--meta", "empty=", "--meta", "eq=a=b",
                         "--hostname", "vm-1", "--az", "az1", "--http-tokens", "required",
                         "--http-endpoint", "enabled", "--hop-limit", "2", "--config-drive", NULL };
        char *nocloud[] = { "computectl", "launch", "g", "--type", "t", "--image", "/i",
                            "--config-drive=nocloud", NULL };
        json_auto_t *body = NULL, *body2 = NULL;
        struct ctl_error e = {};

        (void) state;
        assert_true(fd >= 0);
        assert_true(write(fd, KEY_ED " file@h\n\n", strlen(KEY_ED) + 9) > 0);
        close(fd);
        snprintf(at_key, sizeof(at_key), "k2=@%s", key_path);
        assert_int_equal(launch_body_of(argv, &body, &e), 0);
        assert_json_equal_text(body, "{\"name\":\"g\",\"instance_type\":\"t\",\"image\":{\"path\":\"/i\"},"
                "\"interfaces\":[{\"network\":\"n1\"},{\"network\":\"n2\",\"mac\":\"02:CA:FE:00:00:01\","
                "\"ip\":\"10.0.0.5\",\"mtu\":1400}],"
                "\"public_keys\":{\"k1\":\"" KEY_ED " u@h\",\"k2\":\"" KEY_ED " file@h\"},"
                "\"metadata\":{\"role\":\"web\",\"empty\":\"\",\"eq\":\"a=b\"},"
                "\"hostname\":\"vm-1\",\"availability_zone\":\"az1\","
                "\"metadata_options\":{\"http_tokens\":\"required\",\"http_endpoint\":\"enabled\","
                "\"http_put_response_hop_limit\":2},\"config_drive\":true}");
        assert_int_equal(launch_body_of(nocloud, &body2, &e), 0);
        assert_json_equal_text(body2, "{\"name\":\"g\",\"instance_type\":\"t\",\"image\":{\"path\":\"/i\"},"
                "\"config_drive\":true,\"config_drive_format\":\"nocloud\"}");
        unlink(key_path);
}

static void test_launch_body_guest_errors(void **state) {
        static const struct {
                const char *args[4];
                const char *message;    /* substring */
        } cases[] = {
                { { "--network", "n1,foo=1" }, "--network: unknown option 'foo'" },
                { { "--network", "" }, "--network: '' names no network" },
                { { "--network", "mac=02:00:00:00:00:01" }, "--network: 'mac=02:00:00:00:00:01' names no network first" },
                { { "--network", "n1,mac=zz" }, "--network: mac=zz is not a MAC address" },
                { { "--network", "n1,mac=02:00:00:00:00:0g" }, "--network: mac=" },
                { { "--network", "n1,ip=10.0.0.256" }, "--network: ip=10.0.0.256 is not an IPv4" },
                { { "--network", "n1,ip=10.0.0.05" }, "--network: ip=10.0.0.05" },
                { { "--network", "n1,ip=10.0.0" }, "--network: ip=10.0.0 " },
                { { "--network", "n1,mtu=67" }, "--network: mtu=67 is not a whole number from 68 to 65535" },
                { { "--network", "n1,mtu=70000" }, "--network: mtu=70000" },
                { { "--network", "n1,mtu=" }, "--network: mtu= needs a value" },
                { { "--network", "n1,ip=10.0.0.1,ip=10.0.0.2" }, "--network: ip= given twice" },
                { { "--network", "n1,,mtu=1400" }, "--network: empty option in 'n1,,mtu=1400'" },
                { { "--network", "n1," }, "--network: empty option" },
                { { "--key", "nokey" }, "--key: 'nokey' is not NAME=KEY or NAME=@FILE" },
                { { "--key", "=" KEY_ED }, "--key: '=" },
                { { "--key", "k=" }, "--key k: empty value" },
                { { "--key", "k=@/nonexistent/key.pub" }, "--key k: cannot open '/nonexistent/key.pub'" },
                { { "--key", "k=a", "--key", "k=b" }, "--key: 'k' given twice" },
                { { "--meta", "novalue" }, "--meta: 'novalue' is not NAME=VALUE" },
                { { "--meta", "a=1", "--meta", "a=2" }, "--meta: 'a' given twice" },
                { { "--meta", "k=\xff" }, "--meta: 'k=\xff' is not valid UTF-8" },
                { { "--hostname", "" }, "--hostname: empty" },
                { { "--az", "" }, "--az: empty" },
                { { "--http-tokens", "sometimes" }, "--http-tokens: 'sometimes' is not optional or required" },
                { { "--http-endpoint", "on" }, "--http-endpoint: 'on' is not enabled or disabled" },
                { { "--hop-limit", "0" }, "--hop-limit: '0' is not a whole number from 1 to 64" },
                { { "--hop-limit", "65" }, "--hop-limit: '65'" },
                { { "--config-drive=iso" }, "--config-drive: 'iso' is not config-2 or nocloud" },
        };

        (void) state;
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                char *argv[16] = { "computectl", "launch", "n", "--type", "t", "--image", "/i" };
                json_t *body = NULL;
                struct ctl_error e = {};
                size_t n = 7;

                for (size_t j = 0; j < 4 && cases[i].args[j]; j++)
                        argv[n++] = (char *) cases[i].args[j];
                argv[n] = NULL;
                assert_int_not_equal(launch_body_of(argv, &body, &e), 0);
                assert_null(body);
                if (!strstr(e.message, cases[i].message)) {
                        print_error("case %zu: message '%s' lacks '%s'\n", i, e.message, cases[i].message);
                        fail();
                }
        }
}

static void test_launch_body_key_file_errors(void **state) {
        char two[] = "/tmp/ca-test-cli-key2-XXXXXX", empty[] = "/tmp/ca-test-cli-key3-XXXXXX";
        int fd_two = mkstemp(two), fd_empty = mkstemp(empty);
        char arg_two[64], arg_empty[64];
        char *argv[] = { "computectl", "launch", "n", "--type", "t", "--image", "/i", "--key", arg_two, NULL };
        json_t *body = NULL;
        struct ctl_error e = {};

        (void) state;
        assert_true(fd_two >= 0 && fd_empty >= 0);
        assert_true(write(fd_two, KEY_ED " a\n" KEY_ED " b\n", 2 * strlen(KEY_ED) + 6) > 0);
        assert_true(write(fd_empty, "\n \n", 3) == 3);
        close(fd_two);
        close(fd_empty);
        snprintf(arg_two, sizeof(arg_two), "two=@%s", two);
        snprintf(arg_empty, sizeof(arg_empty), "e=@%s", empty);
        assert_int_equal(launch_body_of(argv, &body, &e), -EINVAL);
        assert_non_null(strstr(e.message, "more than one line"));
        argv[8] = arg_empty;
        assert_int_equal(launch_body_of(argv, &body, &e), -EINVAL);
        assert_non_null(strstr(e.message, "--key e: "));
        assert_non_null(strstr(e.message, "is empty"));
        assert_null(body);
        unlink(two);
        unlink(empty);
}

static void test_action_body(void **state) {
        char *stop_force[] = { "computectl", "stop", EC2_A, "--force", "--request-id", "r2", NULL };
        char *stop_timeout[] = { "computectl", "stop", EC2_A, "--stop-timeout", "30", NULL };
        char *stop_both[] = { "computectl", "stop", EC2_A, "--force", "--stop-timeout", "30", NULL };
        char *stop_bad[] = { "computectl", "stop", EC2_A, "--stop-timeout", "1.5", NULL };
        char *start[] = { "computectl", "start", EC2_A, NULL };
        char *reboot_ctl[] = { "computectl", "reboot", EC2_A, "--request-id", "a\nb", NULL };
        struct ctl_args args;
        struct ctl_error e = {};
        json_t *body = NULL;

        (void) state;
        assert_int_equal(parse_like_main(stop_force, &args, &e), 0);
        assert_int_equal(ctl_action_body("stop", &args, &body, &e), 0);
        assert_json_equal_text(body, "{\"action\":\"stop\",\"request_id\":\"r2\",\"force\":true}");
        json_decref(body);

        assert_int_equal(parse_like_main(stop_timeout, &args, &e), 0);
        assert_int_equal(ctl_action_body("stop", &args, &body, &e), 0);
        assert_json_equal_text(body, "{\"action\":\"stop\",\"timeout\":30}");
        json_decref(body);

        assert_int_equal(parse_like_main(start, &args, &e), 0);
        assert_int_equal(ctl_action_body("start", &args, &body, &e), 0);
        assert_json_equal_text(body, "{\"action\":\"start\"}");
        json_decref(body);
        body = NULL;

        assert_int_equal(parse_like_main(stop_both, &args, &e), 0);
        assert_int_equal(ctl_action_body("stop", &args, &body, &e), -EINVAL);
        assert_int_equal(parse_like_main(stop_bad, &args, &e), 0);
        assert_int_equal(ctl_action_body("stop", &args, &body, &e), -EINVAL);
        assert_int_equal(parse_like_main(reboot_ctl, &args, &e), 0);
        assert_int_equal(ctl_action_body("reboot", &args, &body, &e), -EINVAL);
        assert_null(body);
}

/* Builds a resize body from a command line; returns the builder's result. */
static int resize_body_of(char *const *argv, json_t **ret, struct ctl_error *e) {
        struct ctl_args args;
        int r = parse_like_main(argv, &args, e);

        if (r < 0)
                return r;
        return ctl_resize_body(&args, ret, e);
}

static void test_resize_body(void **state) {
        char *type[] = { "computectl", "resize", EC2_A, "--type", "m5.large", NULL };
        char *live[] = { "computectl", "resize", EC2_A, "--vcpus", "2", "--memory", "2048", "--live",
                         "--request-id", "rz-1", NULL };
        char *cold[] = { "computectl", "resize", UUID_A, "--cold", "--vcpus", "4", "--memory", "4096",
                         "--disk", "40", "--stop-timeout", "20", "--wait", NULL };
        char *confirm[] = { "computectl", "confirm-resize", EC2_A, "--request-id", "c-1", NULL };
        char *revert[] = { "computectl", "revert-resize", EC2_A, NULL };
        struct ctl_args args;
        struct ctl_error e = {};
        json_t *body = NULL;

        (void) state;
        assert_int_equal(resize_body_of(type, &body, &e), 0);
        assert_json_equal_text(body, "{\"action\":\"resize\",\"instance_type\":\"m5.large\"}");
        json_decref(body);

        assert_int_equal(resize_body_of(live, &body, &e), 0);
        assert_json_equal_text(body, "{\"action\":\"resize\",\"flavor\":{\"vcpus\":2,\"memory_mb\":2048},"
                                     "\"mode\":\"live\",\"request_id\":\"rz-1\"}");
        json_decref(body);

        assert_int_equal(resize_body_of(cold, &body, &e), 0);
        assert_json_equal_text(body, "{\"action\":\"resize\",\"flavor\":{\"vcpus\":4,\"memory_mb\":4096,"
                                     "\"disk_gb\":40},\"mode\":\"cold\",\"timeout\":20}");
        json_decref(body);

        /* confirm and revert: the action alone (and a request id) */
        assert_int_equal(parse_like_main(confirm, &args, &e), 0);
        assert_int_equal(ctl_action_body("confirm_resize", &args, &body, &e), 0);
        assert_json_equal_text(body, "{\"action\":\"confirm_resize\",\"request_id\":\"c-1\"}");
        json_decref(body);
        assert_int_equal(parse_like_main(revert, &args, &e), 0);
        assert_int_equal(ctl_action_body("revert_resize", &args, &body, &e), 0);
        assert_json_equal_text(body, "{\"action\":\"revert_resize\"}");
        json_decref(body);
}

static void test_resize_body_usage_errors(void **state) {
        static const struct {
                const char *args[8];
                const char *message;    /* substring */
        } cases[] = {
                { { NULL }, "resize needs --type T, or --vcpus N and --memory MB" },
                { { "--live" }, "resize needs --type T" },
                { { "--type", "m5.large", "--vcpus", "2" }, "give either --type or --vcpus/--memory/--disk, not both" },
                { { "--type", "m5.large", "--disk", "50" }, "not both" },
                { { "--vcpus", "2" }, "--vcpus needs --memory too" },
                { { "--memory", "2048" }, "--memory needs --vcpus too" },
                { { "--disk", "40" }, "--disk needs --vcpus too" },
                { { "--type", "m5.large", "--live", "--cold" }, "--live and --cold exclude each other" },
                { { "--type", "m5.large", "--live", "--stop-timeout", "5" }, "--stop-timeout" },
                { { "--vcpus", "two", "--memory", "1" }, "--vcpus: 'two' is not a whole number" },
                { { "--vcpus", "1", "--memory", "-5" }, "--memory: '-5' is not a whole number of MB" },
                { { "--vcpus", "1", "--memory", "64", "--disk", "1.5" }, "--disk: '1.5' is not a whole number of GB" },
                { { "--type", "" }, "--type: empty instance type" },
                { { "--type", "t", "--request-id", "" }, "--request-id" },
                { { "--type", "t", "--cold", "--stop-timeout", "x" }, "--stop-timeout: 'x'" },
        };

        (void) state;
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                char *argv[12] = { "computectl", "resize", EC2_A };
                json_t *body = NULL;
                struct ctl_error e = {};
                size_t n = 3;

                for (size_t j = 0; j < 8 && cases[i].args[j]; j++)
                        argv[n++] = (char *) cases[i].args[j];
                argv[n] = NULL;
                assert_int_equal(resize_body_of(argv, &body, &e), -EINVAL);
                assert_null(body);
                if (!strstr(e.message, cases[i].message)) {
                        print_error("case %zu: message '%s' lacks '%s'\n", i, e.message, cases[i].message);
                        fail();
                }
        }
}

/* The resize commands' option tables: confirm/revert take no sizing, resize no --force. */
static void test_resize_options(void **state) {
        char *confirm_vcpus[] = { "computectl", "confirm-resize", EC2_A, "--vcpus", "2", NULL };
        char *revert_live[] = { "computectl", "revert-resize", EC2_A, "--live", NULL };
        char *resize_force[] = { "computectl", "resize", EC2_A, "--type", "t", "--force", NULL };
        char *resize_eq[] = { "computectl", "resize", EC2_A, "--vcpus=3", "--memory=96", "--json", NULL };
        struct ctl_args args;
        struct ctl_error e = {};
        json_t *body = NULL;

        (void) state;
        assert_int_equal(parse_like_main(confirm_vcpus, &args, &e), -EINVAL);
        assert_non_null(strstr(e.message, "unknown option --vcpus"));
        assert_int_equal(parse_like_main(revert_live, &args, &e), -EINVAL);
        assert_non_null(strstr(e.message, "unknown option --live"));
        assert_int_equal(parse_like_main(resize_force, &args, &e), -EINVAL);
        assert_non_null(strstr(e.message, "unknown option --force"));
        assert_int_equal(parse_like_main(resize_eq, &args, &e), 0);
        assert_non_null(args.value[CTL_OPT_JSON]);
        assert_int_equal(ctl_resize_body(&args, &body, &e), 0);
        assert_json_equal_text(body, "{\"action\":\"resize\",\"flavor\":{\"vcpus\":3,\"memory_mb\":96}}");
        json_decref(body);
}

/* ------------------------------------------------------------------ format.c */

static void test_table_alignment(void **state) {
        static const char *const headers[] = { "ID", "NAME", "VCPUS" };
        static const bool right[] = { false, false, true };
        _cleanup_ctl_table_ struct ctl_table *t = NULL;
        _cleanup_ctl_free_ char *s = NULL;

        (void) state;
        assert_int_equal(ctl_table_new(3, headers, right, &t), 0);
        assert_int_equal(ctl_table_add_row(t, (const char *const[]) { "a", "longer-name", "2" }), 0);
        assert_int_equal(ctl_table_add_row(t, (const char *const[]) { "bbbb", NULL, "128" }), 0);
        assert_int_equal(ctl_table_render(t, &s), 0);
        assert_string_equal(s,
                            "ID    NAME         VCPUS\n"
                            "a     longer-name      2\n"
                            "bbbb  -              128\n");
}

static void test_table_last_column_unpadded(void **state) {
        _cleanup_ctl_table_ struct ctl_table *t = NULL;
        _cleanup_ctl_free_ char *s = NULL;

        (void) state;
        assert_int_equal(ctl_table_new(2, NULL, NULL, &t), 0);
        assert_int_equal(ctl_table_add_row(t, (const char *const[]) { "id:", "x" }), 0);
        assert_int_equal(ctl_table_add_row(t, (const char *const[]) { "name:", "a long value" }), 0);
        assert_int_equal(ctl_table_add_row(t, (const char *const[]) { "vcpus:", "1" }), 0);
        assert_int_equal(ctl_table_render(t, &s), 0);
        assert_string_equal(s, "id:     x\nname:   a long value\nvcpus:  1\n");
}

static void test_table_sanitize_and_utf8(void **state) {
        static const char *const headers[] = { "NAME", "X" };
        _cleanup_ctl_table_ struct ctl_table *t = NULL;
        _cleanup_ctl_free_ char *s = NULL;

        (void) state;
        assert_int_equal(ctl_table_new(2, headers, NULL, &t), 0);
        /* "wéb" is 3 characters; ESC, newline and a C1 control become '?' */
        assert_int_equal(ctl_table_add_row(t, (const char *const[]) { "w\xc3\xa9" "b", "1" }), 0);
        assert_int_equal(ctl_table_add_row(t, (const char *const[]) { "\x1b[2Jx\ny\xc2\x9b", "2" }), 0);
        assert_int_equal(ctl_table_render(t, &s), 0);
        assert_string_equal(s,
                            "NAME      X\n"
                            "w\xc3\xa9" "b       1\n"
                            "?[2Jx?y?  2\n");
}

static void test_json_cell(void **state) {
        static const struct {
                const char *json;       /* NULL: a missing value */
                const char *text;
        } cases[] = {
                { "\"abc\"", "abc" }, { "42", "42" }, { "-7", "-7" }, { "1.5", "1.5" },
                { "16.0", "16.0" }, { "true", "yes" }, { "false", "no" }, { "null", "-" },
                { "[1]", "-" }, { "{}", "-" }, { NULL, "-" },
        };

        (void) state;
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                json_auto_t *v = cases[i].json ? json_loads(cases[i].json, JSON_DECODE_ANY, NULL) : NULL;
                char *s = NULL;

                assert_true(!cases[i].json || v);
                assert_int_equal(ctl_json_cell(v, &s), 0);
                assert_string_equal(s, cases[i].text);
                free(s);
        }
}

#define INSTANCE_RUNNING                                                                        \
        "{\"id\":\"" UUID_A "\",\"ec2_id\":\"" EC2_A "\",\"name\":\"web1\",\"state\":\"running\","   \
        "\"task_state\":null,\"flavor\":{\"vcpus\":2,\"memory_mb\":2048,\"disk_gb\":20},"          \
        "\"instance_type\":\"t3.small\",\"boot\":{\"image\":{\"path\":\"/img/disk.raw\"}},"         \
        "\"has_user_data\":true,\"console_log\":\"/var/log/c.log\","                              \
        "\"created_at\":\"2024-01-01T00:00:00Z\",\"updated_at\":\"2024-01-01T00:00:01Z\",\"fault\":null}"

#define INSTANCE_PENDING                                                                        \
        "{\"id\":\"" UUID_A "\",\"ec2_id\":\"" EC2_A "\",\"name\":\"web1\",\"state\":\"pending\","   \
        "\"task_state\":\"launching\",\"flavor\":{\"vcpus\":2,\"memory_mb\":2048,\"disk_gb\":20}}"

#define OPERATION(state, error)                                                                 \
        "{\"id\":\"" UUID_OP "\",\"type\":\"launch\",\"instance_id\":\"" UUID_A "\","              \
        "\"request_id\":null,\"state\":\"" state "\",\"step\":\"defined\",\"error\":" error ","    \
        "\"created_at\":\"2024-01-01T00:00:00Z\",\"updated_at\":\"2024-01-01T00:00:02Z\"}"

static void test_format_instance_list(void **state) {
        json_auto_t *body = json_loads("{\"instances\":[" INSTANCE_RUNNING "," INSTANCE_PENDING "]}", 0, NULL);
        json_auto_t *empty = json_loads("{\"instances\":[]}", 0, NULL);
        json_auto_t *bad = json_loads("{\"instances\":{}}", 0, NULL);
        _cleanup_ctl_free_ char *s = NULL, *s2 = NULL;

        (void) state;
        assert_non_null(body);
        assert_int_equal(ctl_format_instance_list(body, &s), 0);
        assert_string_equal(s,
                "ID                                    EC2 ID               NAME  STATE    TASK       VCPUS  MEM_MB  DISK_GB\n"
                UUID_A "  " EC2_A "  web1  running  -              2    2048       20\n"
                UUID_A "  " EC2_A "  web1  pending  launching      2    2048       20\n");
        assert_int_equal(ctl_format_instance_list(empty, &s2), 0);
        assert_string_equal(s2, "ID  EC2 ID  NAME  STATE  TASK  VCPUS  MEM_MB  DISK_GB\n");
        assert_int_equal(ctl_format_instance_list(bad, &s), -EBADMSG);
}

static void test_format_instance_show(void **state) {
        json_auto_t *inst = json_loads(INSTANCE_RUNNING, 0, NULL);
        json_auto_t *kernel = json_loads("{\"id\":\"x\",\"state\":\"error\",\"fault\":\"disk gone\","
                                         "\"boot\":{\"kernel\":{\"path\":\"/k\",\"initrd\":null,"
                                         "\"cmdline\":\"quiet\"}}}", 0, NULL);
        _cleanup_ctl_free_ char *s = NULL, *s2 = NULL;

        (void) state;
        assert_int_equal(ctl_format_instance(inst, &s), 0);
        assert_string_equal(s,
                "id:             " UUID_A "\n"
                "ec2_id:         " EC2_A "\n"
                "name:           web1\n"
                "state:          running\n"
                "task_state:     -\n"
                "instance_type:  t3.small\n"
                "vcpus:          2\n"
                "memory_mb:      2048\n"
                "disk_gb:        20\n"
                "image:          /img/disk.raw\n"
                "has_user_data:  yes\n"
                "console_log:    /var/log/c.log\n"
                "created_at:     2024-01-01T00:00:00Z\n"
                "updated_at:     2024-01-01T00:00:01Z\n"
                "fault:          -\n");
        assert_int_equal(ctl_format_instance(kernel, &s2), 0);
        assert_non_null(strstr(s2, "kernel:         /k\ninitrd:         -\ncmdline:        quiet\n"));
        assert_non_null(strstr(s2, "fault:          disk gone\n"));
}


static void test_format_instance_ports(void **state) {
        json_auto_t *inst = json_loads(
                "{\"id\":\"x\",\"state\":\"running\",\"boot\":{\"image\":{\"path\":\"/i\"}},"
                "\"interfaces\":[{\"network\":\"n1\",\"mac\":\"fa:16:3e:00:00:01\",\"ip\":\"10.77.0.2\","
                "\"mtu\":null,\"device\":\"tapabc\",\"port_id\":\"p\",\"state\":\"plugged\"},"
                "{\"network\":\"flat\",\"mac\":\"02:ca:fe:00:00:01\",\"ip\":null,\"mtu\":1400,"
                "\"device\":\"tapdef\",\"port_id\":\"q\",\"state\":\"plugged\"}],"
                "\"hostname\":\"vm-a\",\"availability_zone\":null,\"config_drive\":true,"
                "\"metadata\":{\"role\":\"web\",\"tier\":\"1\"},\"key_names\":[\"k1\",\"k2\"],"
                "\"metadata_options\":{\"http_tokens\":\"required\"}}", 0, NULL);
        json_auto_t *none = json_loads("{\"id\":\"x\",\"interfaces\":[],\"metadata\":{},\"key_names\":[],"
                                       "\"metadata_options\":{}}", 0, NULL);
        _cleanup_ctl_free_ char *s = NULL, *s2 = NULL;

        (void) state;
        assert_int_equal(ctl_format_instance(inst, &s), 0);
        assert_non_null(strstr(s, "hostname:           vm-a\n"));
        assert_non_null(strstr(s, "availability_zone:  -\n"));
        assert_non_null(strstr(s, "config_drive:       yes\n"));
        assert_non_null(strstr(s, "key_names:          k1, k2\n"));
        assert_non_null(strstr(s, "metadata:           role=web, tier=1\n"));
        assert_non_null(strstr(s, "metadata_options:   http_tokens=required\n"));
        assert_non_null(strstr(s,
                "\nNETWORK  MAC                IP          MTU  DEVICE  STATE\n"
                "n1       fa:16:3e:00:00:01  10.77.0.2     -  tapabc  plugged\n"
                "flat     02:ca:fe:00:00:01  -          1400  tapdef  plugged\n"));
        assert_int_equal(ctl_format_instance(none, &s2), 0);
        assert_null(strstr(s2, "NETWORK"));
        assert_non_null(strstr(s2, "key_names:          -\n"));
        assert_non_null(strstr(s2, "metadata:           -\n"));
}

static void test_format_network_list(void **state) {
        json_auto_t *body = json_loads(
                "{\"networks\":[{\"name\":\"n1\",\"type\":\"bridge\",\"bridge\":\"cacbr1\","
                "\"cidr\":\"10.77.0.0/24\",\"gateway\":\"10.77.0.1\",\"dns\":[\"10.77.0.1\",\"9.9.9.9\"],"
                "\"mtu\":1450,\"dhcp\":true,\"metadata\":true},"
                "{\"name\":\"v\",\"type\":\"vxlan\",\"bridge\":\"\",\"cidr\":null,\"gateway\":null,"
                "\"dns\":[],\"mtu\":null,\"dhcp\":false,\"metadata\":false,\"vni\":4242,\"port\":4789}]}",
                0, NULL);
        json_auto_t *empty = json_loads("{\"networks\":[]}", 0, NULL);
        json_auto_t *bad = json_loads("{\"nets\":[]}", 0, NULL);
        _cleanup_ctl_free_ char *s = NULL, *s2 = NULL;

        (void) state;
        assert_int_equal(ctl_format_network_list(body, &s), 0);
        assert_string_equal(s,
                "NAME  TYPE    BRIDGE  CIDR          GATEWAY    DNS                  MTU  DHCP  METADATA  DETAILS\n"
                "n1    bridge  cacbr1  10.77.0.0/24  10.77.0.1  10.77.0.1, 9.9.9.9  1450  yes   yes       -\n"
                "v     vxlan   -       -             -          -                      -  no    no        vni=4242, port=4789\n");
        assert_int_equal(ctl_format_network_list(empty, &s2), 0);
        assert_string_equal(s2, "NAME  TYPE  BRIDGE  CIDR  GATEWAY  DNS  MTU  DHCP  METADATA  DETAILS\n");
        assert_int_equal(ctl_format_network_list(bad, &s), -EBADMSG);
}

static void test_format_host(void **state) {
        json_auto_t *host = json_loads(
                "{\"hostname\":\"node1\",\"hypervisor\":\"kvm\",\"domain_type\":\"kvm\","
                "\"libvirt_uri\":\"qemu:///system\",\"version\":\"0.1.0\",\"state\":\"enabled\","
                "\"libvirt\":{\"connected\":true},"
                "\"capacity\":{\"vcpus\":8,\"memory_mb\":16384,\"disk_gb\":100},"
                "\"reserved\":{\"memory_mb\":512,\"disk_gb\":10},"
                "\"allocation_ratios\":{\"vcpu\":16.0,\"memory\":1.5,\"disk\":1.0},"
                "\"allocated\":{\"vcpus\":2,\"memory_mb\":1024,\"disk_gb\":20},"
                "\"free\":{\"vcpus\":126,\"memory_mb\":22752,\"disk_gb\":70},\"instances\":1}", 0, NULL);
        _cleanup_ctl_free_ char *s = NULL;

        (void) state;
        assert_non_null(host);
        assert_int_equal(ctl_format_host(host, &s), 0);
        assert_string_equal(s,
                "hostname:           node1\n"
                "hypervisor:         kvm\n"
                "domain_type:        kvm\n"
                "libvirt_uri:        qemu:///system\n"
                "libvirt_connected:  yes\n"
                "version:            0.1.0\n"
                "state:              enabled\n"
                "instances:          1\n"
                "\n"
                "RESOURCE   CAPACITY  RESERVED  RATIO  ALLOCATED   FREE\n"
                "vcpus             8         -   16.0          2    126\n"
                "memory_mb     16384       512    1.5       1024  22752\n"
                "disk_gb         100        10    1.0         20     70\n");
}

static void test_format_operation_and_accepted(void **state) {
        json_auto_t *op = json_loads(OPERATION("failed", "{\"code\":\"internal\",\"message\":\"boom\"}"), 0, NULL);
        json_auto_t *inst = json_loads(INSTANCE_PENDING, 0, NULL);
        _cleanup_ctl_free_ char *s = NULL, *s2 = NULL, *s3 = NULL;

        (void) state;
        assert_int_equal(ctl_format_operation(op, &s), 0);
        assert_string_equal(s,
                "id:           " UUID_OP "\n"
                "type:         launch\n"
                "instance_id:  " UUID_A "\n"
                "request_id:   -\n"
                "state:        failed\n"
                "step:         defined\n"
                "error:        internal: boom\n"
                "created_at:   2024-01-01T00:00:00Z\n"
                "updated_at:   2024-01-01T00:00:02Z\n");
        assert_int_equal(ctl_format_accepted(inst, op, &s2), 0);
        assert_string_equal(s2,
                "instance:         " UUID_A "\n"
                "ec2_id:           " EC2_A "\n"
                "name:             web1\n"
                "state:            pending\n"
                "task_state:       launching\n"
                "operation:        " UUID_OP "\n"
                "operation_type:   launch\n"
                "operation_state:  failed\n"
                "operation_error:  internal: boom\n");
        /* the instance gone (terminated): its id comes from the operation */
        assert_int_equal(ctl_format_accepted(NULL, op, &s3), 0);
        assert_true(strncmp(s3, "instance:         " UUID_A "\noperation:", 18 + 36 + 11) == 0);
}

static void test_format_api_error(void **state) {
        json_auto_t *with_field = json_loads("{\"error\":{\"code\":\"invalid_field\",\"message\":"
                                             "\"vcpus must be 1..256\",\"field\":\"flavor.vcpus\"}}", 0, NULL);
        json_auto_t *no_field = json_loads("{\"error\":{\"code\":\"not_found\",\"message\":"
                                           "\"no such instance\",\"field\":null}}", 0, NULL);
        json_auto_t *other = json_loads("{\"status\":\"weird\"}", 0, NULL);
        char *s;

        (void) state;
        assert_int_equal(ctl_format_api_error(400, with_field, NULL, &s), 0);
        assert_string_equal(s, "error: invalid_field: vcpus must be 1..256 (field: flavor.vcpus)");
        free(s);
        assert_int_equal(ctl_format_api_error(404, no_field, NULL, &s), 0);
        assert_string_equal(s, "error: not_found: no such instance");
        free(s);
        assert_int_equal(ctl_format_api_error(502, NULL, "\n<html>Bad\x1b gateway</html>\nmore", &s), 0);
        assert_string_equal(s, "error: HTTP 502: <html>Bad? gateway</html>");
        free(s);
        assert_int_equal(ctl_format_api_error(500, other, "", &s), 0);
        assert_string_equal(s, "error: HTTP 500");
        free(s);
}

#define RESIZE_BLOCK                                                                            \
        "\"max_vcpus\":8,\"max_memory_mb\":8192,\"resize\":{\"pending\":true,\"mode\":\"cold\","   \
        "\"old_flavor\":{\"vcpus\":1,\"memory_mb\":512,\"disk_gb\":10},"                           \
        "\"old_instance_type\":\"t3.micro\",\"resized_at\":\"2024-01-01T00:00:05Z\"}"

#define INSTANCE_RESIZED                                                                        \
        "{\"id\":\"" UUID_A "\",\"ec2_id\":\"" EC2_A "\",\"name\":\"web1\",\"state\":\"resized\","   \
        "\"task_state\":\"verify_resize\",\"flavor\":{\"vcpus\":2,\"memory_mb\":2048,\"disk_gb\":20}," \
        "\"instance_type\":null,\"boot\":{\"image\":{\"path\":\"/img/disk.raw\"}}," RESIZE_BLOCK "}"

#define OPERATION_RESIZE(state, result)                                                         \
        "{\"id\":\"" UUID_OP "\",\"type\":\"resize\",\"instance_id\":\"" UUID_A "\","              \
        "\"request_id\":null,\"state\":\"" state "\",\"step\":\"defined\",\"error\":null,"         \
        "\"created_at\":\"2024-01-01T00:00:00Z\",\"updated_at\":\"2024-01-01T00:00:02Z\""          \
        result "}"

#define RESULT_PARTIAL                                                                          \
        ",\"result\":{\"outcome\":\"partial\",\"requested\":{\"vcpus\":4,\"memory_mb\":4096},"      \
        "\"seen\":{\"vcpus\":2,\"memory_mb\":4096}}"

static void test_format_resize(void **state) {
        json_auto_t *inst = json_loads(INSTANCE_RESIZED, 0, NULL);
        json_auto_t *none = json_loads("{\"id\":\"x\",\"state\":\"running\",\"max_vcpus\":null,"
                                       "\"max_memory_mb\":null,\"resize\":null}", 0, NULL);
        json_auto_t *old = json_loads(INSTANCE_RUNNING, 0, NULL);
        json_auto_t *op = json_loads(OPERATION_RESIZE("succeeded", RESULT_PARTIAL), 0, NULL);
        json_auto_t *revert = json_loads(OPERATION_RESIZE("succeeded",
                ",\"result\":{\"outcome\":\"reverted\",\"disk_note\":\"the disk keeps its grown size\"}"), 0, NULL);
        json_auto_t *plain = json_loads(OPERATION("succeeded", "null"), 0, NULL);
        _cleanup_ctl_free_ char *s = NULL, *s2 = NULL, *s3 = NULL, *s4 = NULL, *s5 = NULL, *s6 = NULL,
                                *s7 = NULL;

        (void) state;
        assert_non_null(inst);
        assert_non_null(op);
        assert_int_equal(ctl_format_instance(inst, &s), 0);
        assert_string_equal(s,
                "id:                        " UUID_A "\n"
                "ec2_id:                    " EC2_A "\n"
                "name:                      web1\n"
                "state:                     resized\n"
                "task_state:                verify_resize\n"
                "instance_type:             -\n"
                "vcpus:                     2\n"
                "memory_mb:                 2048\n"
                "disk_gb:                   20\n"
                "max_vcpus:                 8\n"
                "max_memory_mb:             8192\n"
                "resize.mode:               cold\n"
                "resize.pending:            yes\n"
                "resize.old_instance_type:  t3.micro\n"
                "resize.resized_at:         2024-01-01T00:00:05Z\n"
                "resize.old_flavor:         vcpus=1, memory_mb=512, disk_gb=10\n"
                "image:                     /img/disk.raw\n"
                "has_user_data:             -\n"
                "console_log:               -\n"
                "created_at:                -\n"
                "updated_at:                -\n"
                "fault:                     -\n");
        /* no resize pending, no headroom */
        assert_int_equal(ctl_format_instance(none, &s2), 0);
        assert_non_null(strstr(s2, "max_vcpus:      -\nmax_memory_mb:  -\nresize:         -\n"));
        /* an agent from before resize: no lines for it */
        assert_int_equal(ctl_format_instance(old, &s3), 0);
        assert_null(strstr(s3, "resize"));
        assert_null(strstr(s3, "max_vcpus"));

        assert_int_equal(ctl_format_operation(op, &s4), 0);
        assert_non_null(strstr(s4, "type:         resize\n"));
        assert_non_null(strstr(s4, "error:        -\n"
                                   "result:       partial; requested: vcpus=4, memory_mb=4096; "
                                   "seen: vcpus=2, memory_mb=4096\n"
                                   "created_at:"));
        assert_int_equal(ctl_format_accepted(inst, revert, &s5), 0);
        assert_non_null(strstr(s5, "state:             resized\n"));
        assert_non_null(strstr(s5, "operation_result:  reverted; disk_note: the disk keeps its grown size\n"));
        /* operations without a result: no line */
        assert_int_equal(ctl_format_operation(plain, &s6), 0);
        assert_null(strstr(s6, "result"));
        assert_int_equal(ctl_format_accepted(NULL, plain, &s7), 0);
        assert_null(strstr(s7, "result"));
}

/* ------------------------------------------------------------------ wait.c */

static enum ctl_progress inst_progress(const char *json, const char *want) {
        json_auto_t *v = json_loads(json, 0, NULL);

        assert_non_null(v);
        return ctl_instance_progress(v, want);
}

static void test_progress(void **state) {
        json_auto_t *ok = json_loads(OPERATION("succeeded", "null"), 0, NULL);
        json_auto_t *bad = json_loads(OPERATION("failed", "null"), 0, NULL);
        json_auto_t *run = json_loads(OPERATION("running", "null"), 0, NULL);

        (void) state;
        assert_int_equal(ctl_operation_progress(ok), CTL_PROGRESS_DONE);
        assert_int_equal(ctl_operation_progress(bad), CTL_PROGRESS_FAILED);
        assert_int_equal(ctl_operation_progress(run), CTL_PROGRESS_PENDING);
        assert_int_equal(ctl_operation_progress(NULL), CTL_PROGRESS_PENDING);

        /* default: settled = not pending and no task */
        assert_int_equal(inst_progress("{\"state\":\"pending\",\"task_state\":\"launching\"}", NULL), CTL_PROGRESS_PENDING);
        assert_int_equal(inst_progress("{\"state\":\"pending\",\"task_state\":null}", NULL), CTL_PROGRESS_PENDING);
        assert_int_equal(inst_progress("{\"state\":\"running\",\"task_state\":\"rebooting\"}", NULL), CTL_PROGRESS_PENDING);
        assert_int_equal(inst_progress("{\"state\":\"running\",\"task_state\":null}", NULL), CTL_PROGRESS_DONE);
        assert_int_equal(inst_progress("{\"state\":\"stopped\"}", NULL), CTL_PROGRESS_DONE);
        assert_int_equal(inst_progress("{\"state\":\"error\",\"task_state\":null}", NULL), CTL_PROGRESS_FAILED);
        /* a wanted state */
        assert_int_equal(inst_progress("{\"state\":\"running\",\"task_state\":null}", "running"), CTL_PROGRESS_DONE);
        assert_int_equal(inst_progress("{\"state\":\"running\",\"task_state\":\"stopping\"}", "stopped"), CTL_PROGRESS_PENDING);
        assert_int_equal(inst_progress("{\"state\":\"running\",\"task_state\":\"rebooting\"}", "running"), CTL_PROGRESS_PENDING);
        assert_int_equal(inst_progress("{\"state\":\"stopping\",\"task_state\":\"stopping\"}", "stopping"), CTL_PROGRESS_DONE);
        assert_int_equal(inst_progress("{\"state\":\"error\",\"task_state\":null}", "running"), CTL_PROGRESS_FAILED);
        assert_int_equal(inst_progress("{\"state\":\"error\",\"task_state\":null}", "error"), CTL_PROGRESS_DONE);
        assert_int_equal(inst_progress("{\"state\":\"terminated\",\"task_state\":null}", "running"), CTL_PROGRESS_FAILED);
        assert_int_equal(inst_progress("{\"state\":\"terminated\",\"task_state\":null}", "terminated"), CTL_PROGRESS_DONE);
        assert_int_equal(inst_progress("{}", NULL), CTL_PROGRESS_PENDING);

        /* a cold resize waiting for confirm or revert is settled; resizing is not */
        assert_int_equal(inst_progress("{\"state\":\"resized\",\"task_state\":\"verify_resize\"}", NULL), CTL_PROGRESS_DONE);
        assert_int_equal(inst_progress("{\"state\":\"resized\",\"task_state\":\"verify_resize\"}", "resized"), CTL_PROGRESS_DONE);
        assert_int_equal(inst_progress("{\"state\":\"running\",\"task_state\":\"resizing\"}", NULL), CTL_PROGRESS_PENDING);
        assert_int_equal(inst_progress("{\"state\":\"running\",\"task_state\":\"resize_prep\"}", "resized"), CTL_PROGRESS_PENDING);
        assert_int_equal(inst_progress("{\"state\":\"resized\",\"task_state\":\"resize_confirming\"}", "running"), CTL_PROGRESS_PENDING);
        assert_true(ctl_instance_state_valid("resized"));
        assert_true(ctl_instance_state_valid("shutting-down"));
        assert_false(ctl_instance_state_valid("shutting_down"));
        assert_false(ctl_instance_state_valid(NULL));
}

static void test_backoff(void **state) {
        long ms = CTL_POLL_FIRST_MS, seq[6];

        (void) state;
        for (size_t i = 0; i < 6; i++) {
                seq[i] = ms;
                ms = ctl_backoff_next(ms);
        }
        assert_int_equal(seq[0], 100);
        assert_int_equal(seq[1], 200);
        assert_int_equal(seq[2], 400);
        assert_int_equal(seq[3], 800);
        assert_int_equal(seq[4], 1000);
        assert_int_equal(seq[5], 1000);
        assert_int_equal(ctl_backoff_next(0), CTL_POLL_FIRST_MS);
}

/* ------------------------------------------------------------------ commands.c / dispatch.c */

static void test_command_table(void **state) {
        (void) state;
        for (const struct ctl_command *c = ctl_commands; c->name; c++) {
                assert_non_null(c->run);
                assert_non_null(c->usage);
                assert_non_null(c->summary);
                assert_true(c->min_args <= c->max_args);
                assert_true(c->max_args <= CTL_ARGS_MAX_POSITIONAL);
                assert_ptr_equal(ctl_command_find(c->name), c);
                for (const struct ctl_option *o = c->options; o && o->name; o++) {
                        assert_true(o->key > CTL_OPT_NONE && o->key < _CTL_OPT_MAX);
                        for (const struct ctl_option *p = o + 1; p->name; p++) {
                                assert_true(strcmp(o->name, p->name) != 0);
                                assert_true(o->key != p->key);
                        }
                }
        }
        for (const char *const *n = (const char *const[]) { "host", "list", "show", "launch", "start",
                                                              "stop", "reboot", "terminate", "wait",
                                                              "operation", "networks", "console", "resize",
                                                              "confirm-resize", "revert-resize", NULL }; *n; n++)
                assert_non_null(ctl_command_find(*n));
        assert_null(ctl_command_find("frobnicate"));
}

struct run_result {
        int rc;
        char *out;
        char *err;
};

static void run_ctl(struct run_result *res, char *const *argv) {
        size_t out_len = 0, err_len = 0;
        FILE *out, *err;

        *res = (struct run_result) {};
        out = open_memstream(&res->out, &out_len);
        err = open_memstream(&res->err, &err_len);
        assert_non_null(out);
        assert_non_null(err);
        res->rc = ctl_main(argv_count(argv), argv, out, err, no_env);
        fclose(out);
        fclose(err);
}

static void run_result_release(struct run_result *res) {
        free(res->out);
        free(res->err);
}

static void test_main_usage(void **state) {
        struct run_result res;
        char *none[] = { "computectl", NULL };
        char *unknown[] = { "computectl", "frob", NULL };
        char *version[] = { "computectl", "--version", NULL };
        char *help[] = { "computectl", "--help", NULL };
        char *cmd_help[] = { "computectl", "launch", "--help", NULL };
        char *help_cmd[] = { "computectl", "help", "wait", NULL };
        char *extra[] = { "computectl", "list", "extra", NULL };
        char *missing[] = { "computectl", "show", NULL };
        char *bad_id[] = { "computectl", "--socket", "/nonexistent.sock", "show", "web1", NULL };
        char *bad_op[] = { "computectl", "--socket", "/nonexistent.sock", "operation", EC2_A, NULL };
        char *bad_state[] = { "computectl", "--socket", "/nonexistent.sock", "wait", EC2_A, "--state", "up", NULL };
        char *both[] = { "computectl", "--socket", "/a", "--url", "http://b", "list", NULL };

        (void) state;
        run_ctl(&res, none);
        assert_int_equal(res.rc, CTL_EXIT_USAGE);
        assert_non_null(strstr(res.err, "no command given"));
        run_result_release(&res);

        run_ctl(&res, unknown);
        assert_int_equal(res.rc, CTL_EXIT_USAGE);
        assert_non_null(strstr(res.err, "unknown command 'frob'"));
        run_result_release(&res);

        run_ctl(&res, version);
        assert_int_equal(res.rc, CTL_EXIT_OK);
        assert_string_equal(res.out, "computectl " CTL_VERSION "\n");
        run_result_release(&res);

        run_ctl(&res, help);
        assert_int_equal(res.rc, CTL_EXIT_OK);
        for (const struct ctl_command *c = ctl_commands; c->name; c++) {
                char line[64];

                snprintf(line, sizeof(line), "\n  %s", c->name);
                assert_non_null(strstr(res.out, line));
        }
        assert_non_null(strstr(res.out, "3 timeout"));
        run_result_release(&res);

        run_ctl(&res, cmd_help);
        assert_int_equal(res.rc, CTL_EXIT_OK);
        assert_non_null(strstr(res.out, "--user-data-file FILE"));
        assert_non_null(strstr(res.out, "Global options:"));
        run_result_release(&res);

        run_ctl(&res, help_cmd);
        assert_int_equal(res.rc, CTL_EXIT_OK);
        assert_non_null(strstr(res.out, "--state STATE"));
        run_result_release(&res);

        run_ctl(&res, extra);
        assert_int_equal(res.rc, CTL_EXIT_USAGE);
        run_result_release(&res);

        run_ctl(&res, missing);
        assert_int_equal(res.rc, CTL_EXIT_USAGE);
        run_result_release(&res);

        run_ctl(&res, bad_id);
        assert_int_equal(res.rc, CTL_EXIT_USAGE);
        assert_non_null(strstr(res.err, "'web1' is not an instance id"));
        run_result_release(&res);

        run_ctl(&res, bad_op);
        assert_int_equal(res.rc, CTL_EXIT_USAGE);
        run_result_release(&res);

        run_ctl(&res, bad_state);
        assert_int_equal(res.rc, CTL_EXIT_USAGE);
        run_result_release(&res);

        run_ctl(&res, both);
        assert_int_equal(res.rc, CTL_EXIT_USAGE);
        run_result_release(&res);
}

/* ------------------------------------------------------------------ a tiny agent on a unix socket */

/* One canned answer; served `times` times (0 = always) to requests matching method and path. */
struct route {
        const char *method;
        const char *path;
        int status;
        const char *body;
        int times;
};

struct seen_request {
        char method[16];
        char path[256];
        char headers[2048];
        char body[32768];
};

#define FAKE_MAX_CONN 8
#define FAKE_MAX_SEEN 64

struct fake_agent {
        char dir[64];                           /* private temporary directory */
        char sock[100];                         /* dir/api.sock; fits sun_path */
        int listen_fd;
        int wake[2];                            /* a byte on wake[1] stops the thread */
        pthread_t thread;
        const struct route *routes;             /* NULL-method-terminated */
        int served[32];                         /* per route */
        pthread_mutex_t lock;                   /* guards seen */
        struct seen_request seen[FAKE_MAX_SEEN];
        size_t n_seen;
};

struct fake_conn {
        int fd;                 /* -1 = free slot */
        char buf[65536];
        size_t len;
};

static const struct route *fake_route(struct fake_agent *fa, const char *method, const char *path) {
        for (size_t i = 0; fa->routes[i].method; i++) {
                const struct route *r = &fa->routes[i];

                if (strcmp(r->method, method) != 0 || strcmp(r->path, path) != 0)
                        continue;
                if (r->times && fa->served[i] >= r->times)
                        continue;
                fa->served[i]++;
                return r;
        }
        return NULL;
}

static void write_all(int fd, const char *s, size_t len) {
        while (len > 0) {
                ssize_t n = write(fd, s, len);

                if (n <= 0)
                        return;
                s += n;
                len -= (size_t) n;
        }
}

/* Serves the complete requests in c->buf. Returns false when the connection must close. */
static bool fake_serve(struct fake_agent *fa, struct fake_conn *c) {
        for (;;) {
                char *end, *cl, method[16] = "", path[256] = "", head[512];
                size_t head_len, body_len = 0;
                const struct route *route;
                const char *body = "{\"error\":{\"code\":\"not_found\",\"message\":\"no route\",\"field\":null}}";
                int status = 404, n;

                c->buf[c->len] = '\0';
                end = strstr(c->buf, "\r\n\r\n");
                if (!end)
                        return true;
                head_len = (size_t) (end - c->buf) + 4;
                cl = strcasestr(c->buf, "\r\ncontent-length:");
                if (cl && cl < end)
                        body_len = strtoul(cl + 17, NULL, 10);
                if (head_len + body_len > sizeof(c->buf) - 1)
                        return false;
                if (c->len < head_len + body_len)
                        return true;
                if (sscanf(c->buf, "%15s %255s", method, path) != 2)
                        return false;

                pthread_mutex_lock(&fa->lock);
                if (fa->n_seen < FAKE_MAX_SEEN) {
                        struct seen_request *s = &fa->seen[fa->n_seen++];

                        snprintf(s->method, sizeof(s->method), "%s", method);
                        snprintf(s->path, sizeof(s->path), "%s", path);
                        snprintf(s->headers, sizeof(s->headers), "%.*s", (int) head_len, c->buf);
                        snprintf(s->body, sizeof(s->body), "%.*s", (int) body_len, c->buf + head_len);
                }
                route = fake_route(fa, method, path);
                pthread_mutex_unlock(&fa->lock);
                if (route) {
                        status = route->status;
                        body = route->body;
                }

                n = snprintf(head, sizeof(head),
                             "HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
                             status, strlen(body));
                write_all(c->fd, head, (size_t) n);
                write_all(c->fd, body, strlen(body));

                memmove(c->buf, c->buf + head_len + body_len, c->len - head_len - body_len);
                c->len -= head_len + body_len;
        }
}

static void *fake_thread(void *userdata) {
        struct fake_agent *fa = userdata;
        static struct fake_conn conns[FAKE_MAX_CONN];

        for (size_t i = 0; i < FAKE_MAX_CONN; i++)
                conns[i].fd = -1;
        for (;;) {
                struct pollfd pfd[FAKE_MAX_CONN + 2] = {
                        { .fd = fa->wake[0], .events = POLLIN },
                        { .fd = fa->listen_fd, .events = POLLIN },
                };

                for (size_t i = 0; i < FAKE_MAX_CONN; i++)
                        pfd[i + 2] = (struct pollfd) { .fd = conns[i].fd, .events = POLLIN };
                if (poll(pfd, FAKE_MAX_CONN + 2, -1) < 0)
                        continue;
                if (pfd[0].revents)
                        break;
                if (pfd[1].revents & POLLIN) {
                        int fd = accept4(fa->listen_fd, NULL, NULL, SOCK_CLOEXEC);

                        for (size_t i = 0; fd >= 0 && i < FAKE_MAX_CONN; i++)
                                if (conns[i].fd < 0) {
                                        conns[i].fd = fd;
                                        conns[i].len = 0;
                                        fd = -1;
                                }
                        if (fd >= 0)
                                close(fd);
                }
                for (size_t i = 0; i < FAKE_MAX_CONN; i++) {
                        struct fake_conn *c = &conns[i];
                        ssize_t n;

                        if (c->fd < 0 || !pfd[i + 2].revents)
                                continue;
                        n = read(c->fd, c->buf + c->len, sizeof(c->buf) - 1 - c->len);
                        if (n > 0) {
                                c->len += (size_t) n;
                                if (fake_serve(fa, c))
                                        continue;
                        }
                        close(c->fd);
                        c->fd = -1;
                }
        }
        for (size_t i = 0; i < FAKE_MAX_CONN; i++)
                if (conns[i].fd >= 0)
                        close(conns[i].fd);
        return NULL;
}

static struct fake_agent *fake_agent_start(const struct route *routes) {
        struct fake_agent *fa = calloc(1, sizeof(*fa));
        struct sockaddr_un sa = { .sun_family = AF_UNIX };

        assert_non_null(fa);
        fa->routes = routes;
        snprintf(fa->dir, sizeof(fa->dir), "/tmp/test_cli_agent_XXXXXX");
        assert_non_null(mkdtemp(fa->dir));
        snprintf(fa->sock, sizeof(fa->sock), "%s/api.sock", fa->dir);
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", fa->sock);
        fa->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        assert_true(fa->listen_fd >= 0);
        assert_int_equal(bind(fa->listen_fd, (struct sockaddr *) &sa, sizeof(sa)), 0);
        assert_int_equal(listen(fa->listen_fd, 8), 0);
        assert_int_equal(pipe2(fa->wake, O_CLOEXEC), 0);
        pthread_mutex_init(&fa->lock, NULL);
        assert_int_equal(pthread_create(&fa->thread, NULL, fake_thread, fa), 0);
        return fa;
}

static void fake_agent_stop(struct fake_agent *fa) {
        write_all(fa->wake[1], "x", 1);
        pthread_join(fa->thread, NULL);
        close(fa->wake[0]);
        close(fa->wake[1]);
        close(fa->listen_fd);
        unlink(fa->sock);
        rmdir(fa->dir);
        pthread_mutex_destroy(&fa->lock);
        free(fa);
}

static size_t fake_count(struct fake_agent *fa, const char *method, const char *path) {
        size_t n = 0;

        for (size_t i = 0; i < fa->n_seen; i++)
                if (strcmp(fa->seen[i].method, method) == 0 && strcmp(fa->seen[i].path, path) == 0)
                        n++;
        return n;
}

static const struct seen_request *fake_find(struct fake_agent *fa, const char *method, const char *path) {
        for (size_t i = 0; i < fa->n_seen; i++)
                if (strcmp(fa->seen[i].method, method) == 0 && strcmp(fa->seen[i].path, path) == 0)
                        return &fa->seen[i];
        return NULL;
}

static void test_agent_show_with_token(void **state) {
        static const struct route routes[] = {
                { "GET", "/v1/instances/" EC2_A, 200, INSTANCE_RUNNING, 0 },
                {},
        };
        struct fake_agent *fa = fake_agent_start(routes);
        char *argv[] = { "computectl", "--socket", fa->sock, "show", EC2_A, "--token", "tok", NULL };
        const struct seen_request *rq;
        struct run_result res;

        (void) state;
        run_ctl(&res, argv);
        assert_int_equal(res.rc, CTL_EXIT_OK);
        assert_non_null(strstr(res.out, "name:           web1\n"));
        assert_string_equal(res.err, "");
        rq = fake_find(fa, "GET", "/v1/instances/" EC2_A);
        assert_non_null(rq);
        assert_non_null(strstr(rq->headers, "\r\nAuthorization: Bearer tok\r\n"));
        assert_non_null(strstr(rq->headers, "\r\nHost: localhost\r\n"));
        run_result_release(&res);
        fake_agent_stop(fa);
}

/* computectl console: the log's bytes as they are (decoded), the query, usage errors. */
static void test_agent_console(void **state) {
        static const struct route routes[] = {
                { "GET", "/v1/instances/" EC2_A "/console?tail_bytes=5", 200,
                  "{\"output\":\"aGVsbG8=\",\"encoding\":\"base64\",\"offset\":7,\"length\":5,"
                  "\"next_offset\":12,\"size\":12}", 0 },
                { "GET", "/v1/instances/" EC2_A "/console", 200, "{\"output\":\"!!\",\"next_offset\":2}", 0 },
                {},
        };
        struct fake_agent *fa = fake_agent_start(routes);
        char *tail[] = { "computectl", "--socket", fa->sock, "console", EC2_A, "--tail", "5", NULL };
        char *bad_answer[] = { "computectl", "--socket", fa->sock, "console", EC2_A, NULL };
        char *const usage[][9] = {
                { "computectl", "--socket", fa->sock, "console", EC2_A, "--tail", "0", NULL },
                { "computectl", "--socket", fa->sock, "console", EC2_A, "--tail", "1048577", NULL },
                { "computectl", "--socket", fa->sock, "console", EC2_A, "--tail", "x", NULL },
                { "computectl", "--socket", fa->sock, "console", EC2_A, "--attach", "--follow", NULL },
                { "computectl", "--socket", fa->sock, "console", EC2_A, "--attach", "--tail", "3", NULL },
                { "computectl", "--socket", fa->sock, "console", EC2_A, "--connect", "qemu:///system", NULL },
                { "computectl", "--socket", fa->sock, "console", "web1", NULL },
        };
        struct run_result res;

        (void) state;
        run_ctl(&res, tail);
        assert_int_equal(res.rc, CTL_EXIT_OK);
        assert_string_equal(res.out, "hello");
        assert_string_equal(res.err, "");
        run_result_release(&res);
        run_ctl(&res, bad_answer);
        assert_int_equal(res.rc, CTL_EXIT_FAILURE);
        assert_non_null(strstr(res.err, "unexpected answer"));
        run_result_release(&res);
        for (size_t i = 0; i < sizeof(usage) / sizeof(usage[0]); i++) {
                run_ctl(&res, usage[i]);
                assert_int_equal(res.rc, CTL_EXIT_USAGE);
                assert_string_equal(res.out, "");
                run_result_release(&res);
        }
        assert_int_equal(fake_count(fa, "GET", "/v1/instances/" EC2_A "/console?tail_bytes=5"), 1);
        fake_agent_stop(fa);
}

#define ACCEPTED_LAUNCH "{\"instance\":" INSTANCE_PENDING ",\"operation\":" OPERATION("pending", "null") "}"

static void test_agent_launch_wait(void **state) {
        static const struct route routes[] = {
                { "POST", "/v1/instances", 202, ACCEPTED_LAUNCH, 0 },
                { "GET", "/v1/operations/" UUID_OP, 200, OPERATION("running", "null"), 2 },
                { "GET", "/v1/operations/" UUID_OP, 200, OPERATION("succeeded", "null"), 0 },
                { "GET", "/v1/instances/" UUID_A, 200, INSTANCE_RUNNING, 0 },
                {},
        };
        struct fake_agent *fa = fake_agent_start(routes);
        char *ud = tmpfile_with(3, 'z');
        char *argv[] = { "computectl", "--socket", fa->sock, "launch", "web1", "--type", "t3.small",
                         "--image", "/img/disk.raw", "--user-data-file", ud, "--request-id", "r-9",
                         "--wait", NULL };
        const struct seen_request *rq;
        json_auto_t *sent = NULL;
        struct run_result res;

        (void) state;
        run_ctl(&res, argv);
        assert_int_equal(res.rc, CTL_EXIT_OK);
        assert_string_equal(res.err, "");
        assert_non_null(strstr(res.out, "state:            running\n"));
        assert_non_null(strstr(res.out, "operation_state:  succeeded\n"));
        assert_int_equal(fake_count(fa, "GET", "/v1/operations/" UUID_OP), 3);

        rq = fake_find(fa, "POST", "/v1/instances");
        assert_non_null(rq);
        assert_non_null(strstr(rq->headers, "\r\nContent-Type: application/json\r\n"));
        sent = json_loads(rq->body, 0, NULL);
        assert_json_equal_text(sent, "{\"name\":\"web1\",\"instance_type\":\"t3.small\","
                                     "\"image\":{\"path\":\"/img/disk.raw\"},\"user_data\":\"enp6\","
                                     "\"request_id\":\"r-9\"}");
        run_result_release(&res);
        unlink(ud);
        free(ud);
        fake_agent_stop(fa);
}

static void test_agent_launch_wait_failed_json(void **state) {
        static const struct route routes[] = {
                { "POST", "/v1/instances", 202, ACCEPTED_LAUNCH, 0 },
                { "GET", "/v1/operations/" UUID_OP, 200,
                  OPERATION("failed", "{\"code\":\"insufficient_resources\",\"message\":\"no memory\"}"), 0 },
                { "GET", "/v1/instances/" UUID_A, 200, INSTANCE_PENDING, 0 },
                {},
        };
        struct fake_agent *fa = fake_agent_start(routes);
        char *argv[] = { "computectl", "--json", "--socket", fa->sock, "launch", "web1", "--vcpus", "1",
                         "--memory", "64", "--kernel", "/k", "--wait-timeout", "5", NULL };
        json_auto_t *out = NULL;
        struct run_result res;

        (void) state;
        run_ctl(&res, argv);
        assert_int_equal(res.rc, CTL_EXIT_FAILURE);
        assert_string_equal(res.err, "error: operation " UUID_OP " (launch) failed: "
                                     "insufficient_resources: no memory\n");
        out = json_loads(res.out, 0, NULL);
        assert_non_null(out);
        assert_string_equal(json_string_value(json_object_get(json_object_get(out, "operation"), "state")),
                            "failed");
        assert_string_equal(json_string_value(json_object_get(json_object_get(out, "instance"), "id")),
                            UUID_A);
        run_result_release(&res);
        fake_agent_stop(fa);
}

static void test_agent_api_error(void **state) {
        static const struct route routes[] = {
                { "POST", "/v1/instances/" EC2_A "/actions", 409,
                  "{\"error\":{\"code\":\"conflict\",\"message\":\"instance is running\",\"field\":null}}", 0 },
                { "POST", "/v1/instances", 400,
                  "{\"error\":{\"code\":\"invalid_field\",\"message\":\"too many\",\"field\":\"flavor.vcpus\"}}", 0 },
                {},
        };
        struct fake_agent *fa = fake_agent_start(routes);
        char *start[] = { "computectl", "--socket", fa->sock, "start", EC2_A, "--json", NULL };
        char *launch[] = { "computectl", "--socket", fa->sock, "launch", "x", "--vcpus", "999",
                           "--memory", "64", "--image", "/i", NULL };
        json_auto_t *out = NULL, *sent = NULL;
        struct run_result res;

        (void) state;
        run_ctl(&res, start);
        assert_int_equal(res.rc, CTL_EXIT_FAILURE);
        assert_string_equal(res.err, "error: conflict: instance is running\n");
        out = json_loads(res.out, 0, NULL);     /* --json: the error body on stdout too */
        assert_non_null(out);
        assert_non_null(json_object_get(out, "error"));
        sent = json_loads(fake_find(fa, "POST", "/v1/instances/" EC2_A "/actions")->body, 0, NULL);
        assert_json_equal_text(sent, "{\"action\":\"start\"}");
        run_result_release(&res);

        run_ctl(&res, launch);
        assert_int_equal(res.rc, CTL_EXIT_FAILURE);
        assert_string_equal(res.err, "error: invalid_field: too many (field: flavor.vcpus)\n");
        assert_string_equal(res.out, "");
        run_result_release(&res);
        fake_agent_stop(fa);
}

static void test_agent_wait(void **state) {
        static const struct route routes[] = {
                /* UUID_OP: an operation stuck running */
                { "GET", "/v1/operations/" UUID_OP, 200, OPERATION("running", "null"), 0 },
                /* UUID_A: not an operation, an instance that settles after two polls */
                { "GET", "/v1/instances/" UUID_A, 200, INSTANCE_PENDING, 3 },
                { "GET", "/v1/instances/" UUID_A, 200, INSTANCE_RUNNING, 0 },
                {},
        };
        struct fake_agent *fa = fake_agent_start(routes);
        char *op[] = { "computectl", "--socket", fa->sock, "wait", UUID_OP, "--timeout", "0.3", NULL };
        char *inst[] = { "computectl", "--socket", fa->sock, "wait", UUID_A, NULL };
        char *state_stopped[] = { "computectl", "--socket", fa->sock, "wait", UUID_A, "--state",
                                  "stopped", "--timeout", "0.2", NULL };
        struct run_result res;

        (void) state;
        run_ctl(&res, op);
        assert_int_equal(res.rc, CTL_EXIT_TIMEOUT);
        assert_non_null(strstr(res.err, "error: timed out after 0.3 s waiting for operation " UUID_OP
                                        " (state: running, step: defined)"));
        run_result_release(&res);

        run_ctl(&res, inst);
        assert_int_equal(res.rc, CTL_EXIT_OK);
        assert_string_equal(res.out, "instance " UUID_A ": running\n");
        assert_int_equal(fake_count(fa, "GET", "/v1/operations/" UUID_A), 1);
        run_result_release(&res);

        /* --state: straight to the instance; running is not stopped: time out */
        run_ctl(&res, state_stopped);
        assert_int_equal(res.rc, CTL_EXIT_TIMEOUT);
        assert_int_equal(fake_count(fa, "GET", "/v1/operations/" UUID_A), 1);
        run_result_release(&res);
        fake_agent_stop(fa);
}

static void test_agent_terminate(void **state) {
        static const struct route routes[] = {
                { "DELETE", "/v1/instances/" UUID_A, 202,
                  "{\"instance\":" INSTANCE_RUNNING ",\"operation\":" OPERATION("pending", "null") "}", 0 },
                { "GET", "/v1/operations/" UUID_OP, 200, OPERATION("succeeded", "null"), 0 },
                /* GET /v1/instances/UUID_A: no route, 404: the instance is gone */
                {},
        };
        struct fake_agent *fa = fake_agent_start(routes);
        char *argv[] = { "computectl", "--socket", fa->sock, "terminate", UUID_A, "--request-id", "k-1",
                         "--wait", NULL };
        const struct seen_request *rq;
        struct run_result res;

        (void) state;
        run_ctl(&res, argv);
        assert_int_equal(res.rc, CTL_EXIT_OK);
        rq = fake_find(fa, "DELETE", "/v1/instances/" UUID_A);
        assert_non_null(rq);
        assert_non_null(strstr(rq->headers, "\r\nIdempotency-Key: k-1\r\n"));
        assert_string_equal(rq->body, "");
        assert_true(strncmp(res.out, "instance:         " UUID_A "\noperation:", 18 + 36 + 11) == 0);
        assert_non_null(strstr(res.out, "operation_state:  succeeded\n"));
        run_result_release(&res);
        fake_agent_stop(fa);
}

/* DELETE /v1/images/ID answers 204 No Content: that is success, exit 0. */
static void test_agent_image_delete_204(void **state) {
        static const struct route routes[] = {
                { "DELETE", "/v1/images/" UUID_A, 204, "", 0 },
                {},
        };
        struct fake_agent *fa = fake_agent_start(routes);
        char *argv[] = { "computectl", "--socket", fa->sock, "image", "delete", UUID_A, NULL };
        char *json_argv[] = { "computectl", "--json", "--socket", fa->sock, "image", "delete", UUID_A, NULL };
        char *gone[] = { "computectl", "--socket", fa->sock, "image", "delete", UUID_OP, NULL };
        struct run_result res;

        (void) state;
        run_ctl(&res, argv);
        assert_int_equal(res.rc, CTL_EXIT_OK);
        assert_string_equal(res.out, "deleted " UUID_A "\n");
        assert_string_equal(res.err, "");
        run_result_release(&res);
        run_ctl(&res, json_argv);
        assert_int_equal(res.rc, CTL_EXIT_OK);
        assert_string_equal(res.err, "");
        run_result_release(&res);
        run_ctl(&res, gone);            /* no route: 404 */
        assert_int_equal(res.rc, CTL_EXIT_FAILURE);
        run_result_release(&res);
        assert_int_equal(fake_count(fa, "DELETE", "/v1/images/" UUID_A), 2);
        fake_agent_stop(fa);
}

/* list --state --name become query arguments (percent-encoded); a bad state is a usage error. */
static void test_agent_list_filters(void **state) {
        static const struct route routes[] = {
                { "GET", "/v1/instances?state=running&name=web%201%2Fa", 200,
                  "{\"instances\":[" INSTANCE_RUNNING "]}", 0 },
                { "GET", "/v1/instances?name=x", 200, "{\"instances\":[]}", 0 },
                {},
        };
        struct fake_agent *fa = fake_agent_start(routes);
        char *both[] = { "computectl", "--socket", fa->sock, "list", "--state", "running", "--name", "web 1/a", NULL };
        char *name[] = { "computectl", "--socket", fa->sock, "list", "--name", "x", NULL };
        char *bad[] = { "computectl", "--socket", fa->sock, "list", "--state", "up", NULL };
        struct run_result res;

        (void) state;
        run_ctl(&res, both);
        assert_int_equal(res.rc, CTL_EXIT_OK);
        assert_non_null(strstr(res.out, "web1"));
        run_result_release(&res);
        run_ctl(&res, name);
        assert_int_equal(res.rc, CTL_EXIT_OK);
        run_result_release(&res);
        run_ctl(&res, bad);
        assert_int_equal(res.rc, CTL_EXIT_USAGE);
        assert_non_null(strstr(res.err, "--state: 'up'"));
        run_result_release(&res);
        assert_int_equal(fa->n_seen, 2);
        fake_agent_stop(fa);
}

#define OPERATION_PROGRESS(done, total, rate)                                                   \
        "{\"id\":\"" UUID_OP "\",\"type\":\"launch\",\"instance_id\":\"" UUID_A "\","              \
        "\"request_id\":null,\"state\":\"running\",\"step\":\"image\",\"error\":null,"              \
        "\"created_at\":\"2024-01-01T00:00:00Z\",\"updated_at\":\"2024-01-01T00:00:02Z\","           \
        "\"progress\":{\"image_id\":\"" UUID_A "\",\"bytes_done\":" done ",\"bytes_total\":" total   \
        ",\"rate_bps\":" rate "}}"

/* A launch --wait that downloads: plain progress lines on stderr (not a terminal). */
static void test_agent_launch_progress_lines(void **state) {
        static const struct route routes[] = {
                { "POST", "/v1/instances", 202, ACCEPTED_LAUNCH, 0 },
                { "GET", "/v1/operations/" UUID_OP, 200, OPERATION_PROGRESS("1048576", "4194304", "1048576"), 1 },
                { "GET", "/v1/operations/" UUID_OP, 200, OPERATION("succeeded", "null"), 0 },
                { "GET", "/v1/instances/" UUID_A, 200, INSTANCE_RUNNING, 0 },
                {},
        };
        struct fake_agent *fa = fake_agent_start(routes);
        char *argv[] = { "computectl", "--socket", fa->sock, "launch", "web1", "--type", "t3.small",
                         "--image-url", "http://h/i.raw", "--digest", "sha256:00", "--wait", NULL };
        struct run_result res;

        (void) state;
        run_ctl(&res, argv);
        assert_int_equal(res.rc, CTL_EXIT_OK);
        assert_string_equal(res.err, "downloading: 25%, 1.0 MiB of 4.0 MiB, 1.0 MiB/s, ETA 0:03\n");
        assert_non_null(strstr(res.out, "operation_state:  succeeded\n"));
        run_result_release(&res);
        fake_agent_stop(fa);
}

#define IMAGE_JSON(state, progress)                                                             \
        "{\"id\":\"" UUID_A "\",\"state\":\"" state "\",\"format\":\"raw\",\"size\":null,"          \
        "\"digest\":\"sha256:00\",\"source\":{\"url\":\"http://h/i.raw\"},\"in_use_by\":[],"          \
        "\"progress\":" progress "}"

/* image pull --wait follows the image's own progress. */
static void test_agent_pull_progress_lines(void **state) {
        static const struct route routes[] = {
                { "POST", "/v1/images", 202, IMAGE_JSON("downloading", "null"), 0 },
                { "GET", "/v1/images/" UUID_A, 200,
                  IMAGE_JSON("downloading", "{\"bytes_done\":512,\"bytes_total\":null,\"rate_bps\":null}"), 1 },
                { "GET", "/v1/images/" UUID_A, 200, IMAGE_JSON("cached", "null"), 0 },
                {},
        };
        struct fake_agent *fa = fake_agent_start(routes);
        char *argv[] = { "computectl", "--socket", fa->sock, "image", "pull", "--source", "http://h/i.raw",
                         "--digest", "sha256:00", "--wait", NULL };
        struct run_result res;

        (void) state;
        run_ctl(&res, argv);
        assert_int_equal(res.rc, CTL_EXIT_OK);
        assert_string_equal(res.err, "downloading: 512 B (size unknown), rate unknown\n");
        assert_non_null(strstr(res.out, "cached"));
        run_result_release(&res);
        fake_agent_stop(fa);
}

/* The terminal form: bar, percentage, bytes, rate, ETA. */
static void test_progress_format(void **state) {
        char buf[160];

        (void) state;
        ctl_progress_format(buf, sizeof(buf), 512, 1024, 256, true);
        assert_string_equal(buf, "[############............]  50%  512 B / 1.0 KiB  256 B/s  ETA 0:02");
        ctl_progress_format(buf, sizeof(buf), 3 * 1048576LL, -1, -1, true);
        assert_string_equal(buf, "[????????????????????????]  3.0 MiB  -");
        ctl_progress_format(buf, sizeof(buf), 0, 10LL << 30, 1048576, false);
        assert_string_equal(buf, "downloading: 0%, 0 B of 10.0 GiB, 1.0 MiB/s, ETA 2:50:40");
        ctl_progress_format(buf, sizeof(buf), 2048, 2048, 0, false);
        assert_string_equal(buf, "downloading: 100%, 2.0 KiB of 2.0 KiB, rate unknown, ETA --:--");
        ctl_format_bytes(1536, buf, sizeof(buf));
        assert_string_equal(buf, "1.5 KiB");
}

#define ACCEPTED_RESIZE "{\"instance\":" INSTANCE_RUNNING ",\"operation\":" OPERATION_RESIZE("pending", "") "}"

static void test_agent_resize(void **state) {
        static const struct route routes[] = {
                { "POST", "/v1/instances/" EC2_A "/actions", 202, ACCEPTED_RESIZE, 0 },
                { "GET", "/v1/operations/" UUID_OP, 200, OPERATION_RESIZE("running", ""), 1 },
                { "GET", "/v1/operations/" UUID_OP, 200,
                  OPERATION_RESIZE("succeeded", ",\"result\":{\"outcome\":\"resized\"}"), 0 },
                { "GET", "/v1/instances/" UUID_A, 200, INSTANCE_RESIZED, 0 },
                {},
        };
        struct fake_agent *fa = fake_agent_start(routes);
        char *cold[] = { "computectl", "--socket", fa->sock, "resize", EC2_A, "--vcpus", "2", "--memory",
                         "2048", "--disk", "20", "--cold", "--wait", NULL };
        char *both[] = { "computectl", "--socket", fa->sock, "resize", EC2_A, "--type", "m5.large",
                         "--live", "--cold", NULL };
        char *json[] = { "computectl", "--json", "--socket", fa->sock, "confirm-resize", EC2_A, NULL };
        char *bad_id[] = { "computectl", "--socket", fa->sock, "revert-resize", "web1", NULL };
        json_auto_t *sent = NULL, *out = NULL;
        struct run_result res;

        (void) state;
        run_ctl(&res, cold);
        assert_int_equal(res.rc, CTL_EXIT_OK);
        assert_non_null(strstr(res.out, "state:             resized\n"));
        assert_non_null(strstr(res.out, "task_state:        verify_resize\n"));
        assert_non_null(strstr(res.out, "operation_type:    resize\n"));
        assert_non_null(strstr(res.out, "operation_result:  resized\n"));
        assert_non_null(strstr(res.err, "note: " UUID_A " waits in state resized: 'computectl confirm-resize "));
        sent = json_loads(fake_find(fa, "POST", "/v1/instances/" EC2_A "/actions")->body, 0, NULL);
        assert_json_equal_text(sent, "{\"action\":\"resize\",\"flavor\":{\"vcpus\":2,\"memory_mb\":2048,"
                                     "\"disk_gb\":20},\"mode\":\"cold\"}");
        run_result_release(&res);

        /* a usage error sends nothing */
        run_ctl(&res, both);
        assert_int_equal(res.rc, CTL_EXIT_USAGE);
        assert_non_null(strstr(res.err, "computectl: --live and --cold exclude each other"));
        assert_non_null(strstr(res.err, "Try 'computectl resize --help'."));
        assert_int_equal(fake_count(fa, "POST", "/v1/instances/" EC2_A "/actions"), 1);
        run_result_release(&res);

        run_ctl(&res, bad_id);
        assert_int_equal(res.rc, CTL_EXIT_USAGE);
        assert_non_null(strstr(res.err, "Try 'computectl revert-resize --help'."));
        run_result_release(&res);

        /* confirm-resize: the body is the action; --json prints the answer as it came */
        run_ctl(&res, json);
        assert_int_equal(res.rc, CTL_EXIT_OK);
        assert_int_equal(fake_count(fa, "POST", "/v1/instances/" EC2_A "/actions"), 2);
        out = json_loads(res.out, 0, NULL);
        assert_non_null(out);
        assert_string_equal(json_string_value(json_object_get(json_object_get(out, "operation"), "type")),
                            "resize");
        assert_string_equal(res.err, "");
        run_result_release(&res);
        {
                const struct seen_request *rq = NULL;

                pthread_mutex_lock(&fa->lock);
                for (size_t i = 0; i < fa->n_seen; i++)
                        if (strcmp(fa->seen[i].method, "POST") == 0)
                                rq = &fa->seen[i];
                pthread_mutex_unlock(&fa->lock);
                assert_non_null(rq);
                json_decref(sent);
                sent = json_loads(rq->body, 0, NULL);
                assert_json_equal_text(sent, "{\"action\":\"confirm_resize\"}");
        }
        fake_agent_stop(fa);
}

/* A live resize the guest took only in part: success, with a warning on stderr. */
static void test_agent_resize_partial(void **state) {
        static const struct route routes[] = {
                { "POST", "/v1/instances/" UUID_A "/actions", 202, ACCEPTED_RESIZE, 0 },
                { "GET", "/v1/operations/" UUID_OP, 200, OPERATION_RESIZE("succeeded", RESULT_PARTIAL), 0 },
                { "GET", "/v1/instances/" UUID_A, 200, INSTANCE_RUNNING, 0 },
                {},
        };
        struct fake_agent *fa = fake_agent_start(routes);
        char *argv[] = { "computectl", "--socket", fa->sock, "resize", UUID_A, "--vcpus", "4", "--memory",
                         "4096", "--live", "--wait-timeout", "5", NULL };
        struct run_result res;

        (void) state;
        run_ctl(&res, argv);
        assert_int_equal(res.rc, CTL_EXIT_OK);
        assert_non_null(strstr(res.out, "operation_result:  partial; requested: vcpus=4, memory_mb=4096; "
                                        "seen: vcpus=2, memory_mb=4096\n"));
        assert_non_null(strstr(res.err, "warning: the guest did not take the whole live resize in time"));
        assert_null(strstr(res.err, "note:"));
        run_result_release(&res);
        fake_agent_stop(fa);
}

static void test_agent_unreachable(void **state) {
        char *argv[] = { "computectl", "--socket", "/nonexistent/api.sock", "list", NULL };
        struct run_result res;

        (void) state;
        run_ctl(&res, argv);
        assert_int_equal(res.rc, CTL_EXIT_FAILURE);
        assert_non_null(strstr(res.err, "cannot reach compute-agent at unix:/nonexistent/api.sock"));
        run_result_release(&res);
}

static int group_setup(void **state) {
        (void) state;
        return curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK ? 0 : -1;
}

static int group_teardown(void **state) {
        (void) state;
        curl_global_cleanup();
        return 0;
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_args_global_stops_at_command),
                cmocka_unit_test(test_args_permutes_and_last_wins),
                cmocka_unit_test(test_args_double_dash_and_dash),
                cmocka_unit_test(test_args_errors),
                cmocka_unit_test(test_args_command_option_shadows_global),
                cmocka_unit_test(test_parse_numbers),
                cmocka_unit_test(test_config),
                cmocka_unit_test(test_id_classify),
                cmocka_unit_test(test_base64),
                cmocka_unit_test(test_base64_decode),
                cmocka_unit_test(test_user_data_limit),
                cmocka_unit_test(test_launch_body_type_image),
                cmocka_unit_test(test_launch_body_flavor_kernel),
                cmocka_unit_test(test_launch_body_usage_errors),
                cmocka_unit_test(test_args_repeatable),
                cmocka_unit_test(test_args_optional_value),
                cmocka_unit_test(test_launch_body_guest_fields),
                cmocka_unit_test(test_launch_body_guest_errors),
                cmocka_unit_test(test_launch_body_key_file_errors),
                cmocka_unit_test(test_action_body),
                cmocka_unit_test(test_table_alignment),
                cmocka_unit_test(test_table_last_column_unpadded),
                cmocka_unit_test(test_table_sanitize_and_utf8),
                cmocka_unit_test(test_json_cell),
                cmocka_unit_test(test_format_instance_list),
                cmocka_unit_test(test_format_instance_show),
                cmocka_unit_test(test_format_instance_ports),
                cmocka_unit_test(test_format_network_list),
                cmocka_unit_test(test_format_host),
                cmocka_unit_test(test_format_operation_and_accepted),
                cmocka_unit_test(test_format_api_error),
                cmocka_unit_test(test_progress),
                cmocka_unit_test(test_backoff),
                cmocka_unit_test(test_command_table),
                cmocka_unit_test(test_main_usage),
                cmocka_unit_test(test_agent_show_with_token),
                cmocka_unit_test(test_agent_console),
                cmocka_unit_test(test_agent_launch_wait),
                cmocka_unit_test(test_agent_launch_wait_failed_json),
                cmocka_unit_test(test_agent_api_error),
                cmocka_unit_test(test_agent_wait),
                cmocka_unit_test(test_agent_terminate),
                cmocka_unit_test(test_agent_unreachable),
                cmocka_unit_test(test_launch_body_image_sources),
                cmocka_unit_test(test_agent_image_delete_204),
                cmocka_unit_test(test_agent_list_filters),
                cmocka_unit_test(test_agent_launch_progress_lines),
                cmocka_unit_test(test_agent_pull_progress_lines),
                cmocka_unit_test(test_progress_format),
                cmocka_unit_test(test_resize_body),
                cmocka_unit_test(test_resize_body_usage_errors),
                cmocka_unit_test(test_resize_options),
                cmocka_unit_test(test_format_resize),
                cmocka_unit_test(test_agent_resize),
                cmocka_unit_test(test_agent_resize_partial),
        };

        return cmocka_run_group_tests_name("cli", tests, group_setup, group_teardown);
}
