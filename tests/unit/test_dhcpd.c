/* tests/unit/test_dhcpd.c: the pure pieces of the dnsmasq supervisor
 * (agent/dhcpd-internal.h): the restart backoff, how a stale dnsmasq is
 * recognised from /proc/PID/cmdline, the SigCgt check that gates SIGHUP, the
 * pid file; and the supervisor on a loop with a stand-in dnsmasq (a shell
 * script that records SIGHUP and SIGTERM) on "lo": started, SIGHUP only once
 * it catches it, restarted after a kill with the backoff, stopped and reaped,
 * every handle closed; a missing program reported. The supervisor with a
 * real dnsmasq and guests is tests/integration/test_net_dhcp_qemu.py. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <signal.h>
#include <string.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "agent/dhcpd-internal.h"
#include "agent/dhcpd.h"
#include "agent/store.h"
#include "common/util.h"
#include "net-plug/netplug.h"

static void test_backoff(void **state)
{
    uint64_t d = 0, seen[8];

    (void)state;
    for (int i = 0; i < 8; i++)
        seen[i] = d = dhcpd_backoff_next(d);
    assert_int_equal(seen[0], 1000);
    assert_int_equal(seen[1], 2000);
    assert_int_equal(seen[2], 4000);
    assert_int_equal(seen[3], 8000);
    assert_int_equal(seen[4], 16000);
    assert_int_equal(seen[5], 30000);
    assert_int_equal(seen[6], 30000);
    assert_int_equal(seen[7], 30000);
    assert_int_equal(dhcpd_backoff_next(999), 1000);
    assert_int_equal(dhcpd_backoff_next(UINT64_MAX), 30000);
}

#define CMD(lit) lit, sizeof(lit) - 1 /* keeps the NULs inside the literal */

static void test_cmdline(void **state)
{
    const char *arg = "--pid-file=/var/lib/ca/dhcp/n1/dnsmasq.pid";

    (void)state;
    assert_true(dhcpd_cmdline_ours(CMD("/usr/sbin/dnsmasq\0--keep-in-foreground\0"
                                       "--pid-file=/var/lib/ca/dhcp/n1/dnsmasq.pid\0"), arg));
    assert_true(dhcpd_cmdline_ours(CMD("dnsmasq\0--pid-file=/var/lib/ca/dhcp/n1/dnsmasq.pid"), arg));
    /* another network's, another program's, a prefix or a longer path */
    assert_false(dhcpd_cmdline_ours(CMD("/usr/sbin/dnsmasq\0--pid-file=/var/lib/ca/dhcp/n2/dnsmasq.pid\0"), arg));
    assert_false(dhcpd_cmdline_ours(CMD("/bin/sh\0dnsmasq\0--pid-file=/var/lib/ca/dhcp/n1/dnsmasq.pid\0"), arg));
    assert_false(dhcpd_cmdline_ours(CMD("/usr/sbin/dnsmasqx\0--pid-file=/var/lib/ca/dhcp/n1/dnsmasq.pid\0"), arg));
    assert_false(dhcpd_cmdline_ours(CMD("/usr/sbin/dnsmasq\0--pid-file=/var/lib/ca/dhcp/n1/dnsmasq.pid.x\0"), arg));
    assert_false(dhcpd_cmdline_ours(CMD("/usr/sbin/dnsmasq\0--pid-file=/var/lib/ca/dhcp/n1\0"), arg));
    /* the pid file path as argv[0] alone is not enough */
    assert_false(dhcpd_cmdline_ours(CMD("--pid-file=/var/lib/ca/dhcp/n1/dnsmasq.pid\0"), arg));
    assert_false(dhcpd_cmdline_ours("", 0, arg));
    assert_false(dhcpd_cmdline_ours(CMD("dnsmasq\0"), ""));
    /* a kernel thread or a process that rewrote its title: no NUL at all */
    assert_false(dhcpd_cmdline_ours(CMD("dnsmasq --pid-file=/var/lib/ca/dhcp/n1/dnsmasq.pid"), arg));
}

static void test_status(void **state)
{
    (void)state;
    /* SIGHUP is bit 0, SIGTERM (15) bit 14 */
    const char *st = "Name:\tdnsmasq\nSigBlk:\t0000000000000000\nSigIgn:\t0000000000001000\n"
                     "SigCgt:\t0000000000014003\nCapInh:\t0000000000000000\n";
    assert_true(dhcpd_status_catches(st, SIGHUP));
    assert_true(dhcpd_status_catches(st, SIGINT));
    assert_true(dhcpd_status_catches(st, SIGTERM));
    assert_false(dhcpd_status_catches(st, SIGUSR1));
    assert_false(dhcpd_status_catches("Name:\tx\nSigCgt:\t0000000000000000\n", SIGHUP));
    assert_false(dhcpd_status_catches("Name:\tx\n", SIGHUP));
    assert_false(dhcpd_status_catches("Name:\tx\nSigCgt:\tzz\n", SIGHUP));
    assert_false(dhcpd_status_catches("Name:\tx\nSigCgt:\t1 trailing\n", SIGHUP));
    assert_true(dhcpd_status_catches("SigCgt:\t1", SIGHUP));
    assert_false(dhcpd_status_catches(st, 0));
    assert_false(dhcpd_status_catches(st, 65));
    /* "SigCgt" must start a line: not a name that holds it */
    assert_false(dhcpd_status_catches("Name:\tSigCgt:\t1\n", SIGHUP));
}

static void test_pidfile(void **state)
{
    int pid = -1;

    (void)state;
    assert_int_equal(dhcpd_pidfile_parse("1234\n", &pid), 0);
    assert_int_equal(pid, 1234);
    assert_int_equal(dhcpd_pidfile_parse("99", &pid), 0);
    assert_int_equal(pid, 99);
    pid = 7;
    assert_int_equal(dhcpd_pidfile_parse("", &pid), -EINVAL);
    assert_int_equal(dhcpd_pidfile_parse("\n", &pid), -EINVAL);
    assert_int_equal(dhcpd_pidfile_parse("0\n", &pid), -EINVAL);
    assert_int_equal(dhcpd_pidfile_parse("-5\n", &pid), -EINVAL);
    assert_int_equal(dhcpd_pidfile_parse("12 34\n", &pid), -EINVAL);
    assert_int_equal(dhcpd_pidfile_parse("12\n\n", &pid), -EINVAL);
    assert_int_equal(dhcpd_pidfile_parse("99999999999\n", &pid), -EINVAL);
    assert_int_equal(dhcpd_pidfile_parse("0x10\n", &pid), -EINVAL);
    assert_int_equal(pid, 7); /* written only on success */
}

/* ---- the supervisor on a loop, with a stand-in dnsmasq ---- */

static char tmp[64];

static const char fake_script[] =
    "#!/bin/sh\n"
    "for a; do case $a in --pid-file=*) echo $$ > \"${a#--pid-file=}\";; esac; done\n"
    "sleep 0.2\n" /* a SIGHUP before the trap would end it: the supervisor must wait */
    "trap 'echo hup >> \"$CA_FAKE_OUT\"' HUP\n"
    "trap 'echo term >> \"$CA_FAKE_OUT\"; exit 0' TERM\n"
    "echo \"fake dnsmasq $$ started\" >&2\n"
    "while :; do sleep 0.02; done\n";

struct fixture {
    uv_loop_t loop;
    struct store *store;
    struct netplug *np;
    struct dhcpd *d;
    struct net_config net;
    char out[128];
};

static void tick(uv_timer_t *t)
{
    (void)t;
}

/* Run the loop until pred holds or ms pass (a timer wakes it). */
static bool run_until(struct fixture *f, bool (*pred)(struct fixture *), int ms)
{
    uv_timer_t t;
    uint64_t end = now_mono_ns() / 1000000 + (uint64_t)ms;
    bool ok;

    uv_timer_init(&f->loop, &t);
    uv_timer_start(&t, tick, 10, 10);
    while (!(ok = pred(f)) && now_mono_ns() / 1000000 < end)
        uv_run(&f->loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(&f->loop, UV_RUN_NOWAIT);
    return ok;
}

static json_int_t state_pid(struct fixture *f)
{
    json_t *j = dhcpd_network_json(f->d, "t1");
    json_int_t pid = 0;

    assert_non_null(j);
    if (json_is_true(json_object_get(j, "running")))
        pid = json_integer_value(json_object_get(j, "pid"));
    json_decref(j);
    return pid;
}

static bool is_running(struct fixture *f)
{
    return state_pid(f) > 0;
}

static json_int_t first_pid;
static bool is_running_again(struct fixture *f)
{
    json_int_t p = state_pid(f);
    return p > 0 && p != first_pid;
}

static bool count_of(struct fixture *f, const char *word, int want)
{
    char line[64];
    int n = 0;
    FILE *fp = fopen(f->out, "r");

    if (!fp)
        return want == 0;
    while (fgets(line, sizeof(line), fp))
        n += !strncmp(line, word, strlen(word));
    fclose(fp);
    return n >= want;
}

static bool one_hup(struct fixture *f)
{
    return count_of(f, "hup", 1);
}

static bool two_hups(struct fixture *f)
{
    return count_of(f, "hup", 2);
}

static void fixture_up(struct fixture *f, const char *program)
{
    struct agent_error err = {0};
    struct np_error ne = {0};
    char path[128];

    memset(f, 0, sizeof(*f));
    assert_int_equal(uv_loop_init(&f->loop), 0);
    snprintf(path, sizeof(path), "%s/agent.db", tmp);
    assert_int_equal(store_open(path, false, &f->store, &err), 0);
    assert_int_equal(netplug_new(NULL, &f->np, &ne), 0);
    assert_int_equal(netplug_network_add(f->np, &(struct np_network){.name = "t1", .type = NP_NET_BRIDGE,
                                                                      .bridge = "lo"}, &ne), 0);
    f->net = (struct net_config){.name = "t1", .dhcp = true, .prefix = 24, .mask = 0xffffff00u,
                                 .net = 0x7f000000u, .gw = 0x7f000001u};
    snprintf(f->out, sizeof(f->out), "%s/fake.out", tmp);
    unlink(f->out);
    setenv("CA_FAKE_OUT", f->out, 1);
    struct dhcpd_deps dd = {.store = f->store, .np = f->np, .networks = &f->net, .n_networks = 1};
    struct dhcpd_config dc = {.state_dir = tmp, .dnsmasq = program, .user = ""};
    assert_int_equal(dhcpd_new(&f->loop, &dd, &dc, &f->d), 0);
}

static void fixture_down(struct fixture *f)
{
    dhcpd_stop(f->d);
    /* returns once every handle has closed (dnsmasq gets SIGKILL after 5 s) */
    uv_run(&f->loop, UV_RUN_DEFAULT);
    dhcpd_free(f->d);
    netplug_free(f->np);
    store_free(f->store);
    assert_int_equal(uv_loop_close(&f->loop), 0);
}

static void test_supervise(void **state)
{
    struct fixture f;
    char prog[128], dir[128];
    struct stat st;
    FILE *fp;

    (void)state;
    snprintf(prog, sizeof(prog), "%s/bin", tmp);
    mkdir(prog, 0700);
    snprintf(prog, sizeof(prog), "%s/bin/dnsmasq", tmp);
    assert_non_null(fp = fopen(prog, "w"));
    fputs(fake_script, fp);
    fclose(fp);
    chmod(prog, 0755);

    fixture_up(&f, prog);
    snprintf(dir, sizeof(dir), "%s/dhcp/t1", tmp);
    assert_int_equal(stat(dir, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0700);
    assert_int_equal(state_pid(&f), 0);

    /* started; a second refresh at once: the SIGHUP waits for the trap */
    dhcpd_refresh(f.d, NULL);
    dhcpd_refresh(f.d, "t1");
    dhcpd_refresh(f.d, "other"); /* not a dhcp network: nothing */
    assert_true(run_until(&f, is_running, 5000));
    first_pid = state_pid(&f);
    assert_true(run_until(&f, one_hup, 5000));
    assert_int_equal(state_pid(&f), first_pid); /* the SIGHUP did not end it */
    snprintf(dir, sizeof(dir), "%s/dhcp/t1/hosts", tmp);
    assert_int_equal(stat(dir, &st), 0);

    /* killed: restarted after the backoff (1 s) */
    uint64_t t0 = now_mono_ns() / 1000000;
    kill((pid_t)first_pid, SIGKILL);
    assert_true(run_until(&f, is_running_again, 10000));
    assert_true(now_mono_ns() / 1000000 - t0 >= DHCPD_BACKOFF_MIN_MS - 50);
    json_t *j = dhcpd_network_json(f.d, "t1");
    assert_int_equal(json_integer_value(json_object_get(j, "restarts")), 1);
    json_decref(j);

    /* the new one reloads too (once it catches SIGHUP) */
    dhcpd_refresh(f.d, "t1");
    assert_true(run_until(&f, two_hups, 5000));

    /* stopped: SIGTERM, reaped, every handle closed */
    json_int_t last = state_pid(&f);
    fixture_down(&f);
    assert_true(count_of(&f, "term", 1));
    assert_int_equal(kill((pid_t)last, 0), -1);
}

static void test_missing_program(void **state)
{
    struct fixture f;
    json_t *j;

    (void)state;
    fixture_up(&f, "/nonexistent/dnsmasq");
    dhcpd_refresh(f.d, NULL);
    j = dhcpd_network_json(f.d, "t1");
    assert_false(json_is_true(json_object_get(j, "running")));
    assert_true(json_is_null(json_object_get(j, "pid")));
    assert_non_null(strstr(json_string_value(json_object_get(j, "error")), "/nonexistent/dnsmasq"));
    json_decref(j);
    assert_null(dhcpd_network_json(f.d, "t2"));
    fixture_down(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_backoff),
        cmocka_unit_test(test_cmdline),
        cmocka_unit_test(test_status),
        cmocka_unit_test(test_pidfile),
        cmocka_unit_test(test_supervise),
        cmocka_unit_test(test_missing_program),
    };
    char cmd[128];
    int rc;

    strscpy(tmp, "/tmp/caa-dhcpd-XXXXXX", sizeof(tmp));
    if (!mkdtemp(tmp))
        return 1;
    rc = cmocka_run_group_tests(tests, NULL, NULL);
    snprintf(cmd, sizeof(cmd), "%s", tmp);
    if (strncmp(cmd, "/tmp/caa-dhcpd-", 15) == 0) {
        const char *names[] = {"dhcp/t1/hosts", "dhcp/t1/opts", "dhcp/t1/dnsmasq.pid", "dhcp/t1/.hosts.tmp",
                               "dhcp/t1/.opts.tmp", "bin/dnsmasq", "fake.out", "agent.db", "agent.db-wal",
                               "agent.db-shm", "dhcp/t1", "dhcp", "bin", ""};
        for (size_t i = 0; i < ARRAY_SIZE(names); i++) {
            snprintf(cmd, sizeof(cmd), "%s/%s", tmp, names[i]);
            if (unlink(cmd) < 0)
                rmdir(cmd);
        }
    }
    return rc;
}
