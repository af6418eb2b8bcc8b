/* Unit tests: configuration defaults, file, flags over the file, and errors
 * that name the key. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/config.h"

static char *write_tmp(const char *text)
{
    static char path[64];
    int fd;
    FILE *f;

    strscpy(path, "/tmp/ca-conf-XXXXXX", sizeof(path));
    fd = mkstemp(path);
    f = fdopen(fd, "w");
    fputs(text, f);
    fclose(f);
    return path;
}

static void test_defaults(void **state)
{
    struct agent_config c;
    struct agent_error err;

    (void)state;
    assert_int_equal(config_init_defaults(&c), 0);
    assert_int_equal(config_finish(&c, &err), 0);
    assert_string_equal(c.hypervisor, "kvm");
    assert_string_equal(c.api_socket, "/var/lib/compute-agent/api.sock");
    assert_int_equal(c.stop_timeout, 60);
    assert_string_equal(c.local_image_dirs, ""); /* no local guest files by default */
    assert_true(c.cpu_allocation_ratio == 16.0);
    config_release(&c);
}

static void test_file_and_flags(void **state)
{
    struct agent_config c;
    struct agent_error err;
    char *path = write_tmp("[agent]\nstate_dir = /srv/ca\n[hypervisor]\ndriver = xen\n"
                           "stop_timeout = 5\n[resources]\nram_allocation_ratio = 1.5\n");
    char *argv[] = {"compute-agent", "--config", path, "--hypervisor", "test",
                    "--api-socket", "/run/ca.sock", "--local-image-dirs", "/srv/img:/srv/k", NULL};

    (void)state;
    config_init_defaults(&c);
    assert_int_equal(config_from_args(&c, 9, argv, &err), 0);
    assert_int_equal(config_finish(&c, &err), 0);
    assert_string_equal(c.state_dir, "/srv/ca");
    assert_string_equal(c.hypervisor, "test"); /* flag wins over file */
    assert_string_equal(c.api_socket, "/run/ca.sock");
    assert_string_equal(c.local_image_dirs, "/srv/img:/srv/k");
    assert_int_equal(c.stop_timeout, 5);
    assert_true(c.ram_allocation_ratio == 1.5);
    config_release(&c);
    unlink(path);
}

static char last_error_message[512];

static void expect_error(const char *text, const char *field)
{
    struct agent_config c;
    struct agent_error err = {0};
    char *path = write_tmp(text);
    int r;

    config_init_defaults(&c);
    r = config_load_file(&c, path, &err);
    if (r == 0)
        r = config_finish(&c, &err);
    assert_true(r < 0);
    strscpy(last_error_message, err.message, sizeof(last_error_message));
    assert_string_equal(err.field, field);
    config_release(&c);
    unlink(path);
}

static void test_errors(void **state)
{
    struct agent_config c;
    struct agent_error err;
    char *bad_flag[] = {"compute-agent", "--no-such-flag", NULL};

    (void)state;
    expect_error("[agent]\nnope = 1\n", "nope");
    expect_error("[hypervisor]\nstop_timeout = -3\n", "hypervisor.stop_timeout");
    expect_error("[hypervisor]\nstop_timeout = 10s\n", "hypervisor.stop_timeout");
    expect_error("[resources]\ncpu_allocation_ratio = nan\n", "resources.cpu_allocation_ratio");
    expect_error("[hypervisor]\ndriver = vmware\n", "hypervisor.driver");
    expect_error("[api]\nlisten = 127.0.0.1:8780\n", "api.token");
    expect_error("[api]\ntoken = 0123456789abcde\n", "api.token");          /* 15 bytes */
    expect_error("[api]\ntoken = 0123456789 abcdef\n", "api.token");        /* a space */
    expect_error("[api]\ntoken_file = /nonexistent/token\n", "api.token_file");
    expect_error("[api]\ntoken = 0123456789abcdef\ntoken_file = /etc/hostname\n", "api.token_file");
    expect_error("[api]\nheader_timeout = 0\n", "api.header_timeout");
    expect_error("[api]\nmax_connections = 1\n", "api.max_connections");
    expect_error("[agent]\nstate_dir = relative\n", "agent.state_dir");
    expect_error("[hypervisor]\nlocal_image_dirs = /srv/img:images\n", "hypervisor.local_image_dirs");
    expect_error("key = value\n", "config");
    /* a key set twice in one file, in one section or in a repeated one */
    expect_error("[hypervisor]\nstop_timeout = 10\nstop_timeout = 20\n", "hypervisor.stop_timeout");
    expect_error("[hypervisor]\nstop_timeout = 10\n[agent]\n[hypervisor]\nstop_timeout = 10\n",
                 "hypervisor.stop_timeout");
    {
        /* a line over 4095 bytes is refused with file:line, never split
         * into a second line whose tail is read as a key */
        static char text[16384];
        char *p = text;
        p += snprintf(p, 64, "[agent]\nhost_name = ");
        memset(p, 'a', 5000);
        p += 5000;
        p += snprintf(p, 64, "\nlog_level = debug\n");
        expect_error(text, "config");
        assert_non_null(strstr(last_error_message, ":2: line longer than 4095 bytes"));
        /* 4095 bytes is fine */
        p = text;
        p += snprintf(p, 64, "[agent]\nhost_name = ");
        memset(p, 'b', 4095 - strlen("host_name = "));
        p += 4095 - strlen("host_name = ");
        p += snprintf(p, 4, "\n");
        config_init_defaults(&c);
        assert_int_equal(config_load_file(&c, write_tmp(text), &err), 0);
        assert_int_equal(strlen(c.host_name), 4095 - strlen("host_name = "));
        config_release(&c);
    }
    config_init_defaults(&c);
    assert_true(config_from_args(&c, 2, bad_flag, &err) < 0);
    config_release(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_file_and_flags),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
