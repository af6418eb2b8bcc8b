/* tests/unit/test_dhcpd.c: the pure pieces of the dnsmasq supervisor
 * (agent/dhcpd-internal.h): the restart backoff, how a stale dnsmasq is
 * recognised from /proc/PID/cmdline, the SigCgt check that gates SIGHUP, the
 * pid file. The supervisor with a real dnsmasq and guests is
 * tests/integration/test_net_dhcp_qemu.py. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <signal.h>
#include <string.h>

#include "agent/dhcpd-internal.h"

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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_backoff),
        cmocka_unit_test(test_cmdline),
        cmocka_unit_test(test_status),
        cmocka_unit_test(test_pidfile),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
