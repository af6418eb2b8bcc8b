/* tests/unit/test_netplug_dhcp.c: what net-plug/dhcp.c gives dnsmasq, exactly:
 * the argv vector, the options file, the hosts file, and the errors that name
 * the field. Pure (files in a temp directory; nothing run). The real dnsmasq
 * answering through a filtered port is in tests/component/test_netplug.c. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <sys/stat.h>

#include "common/util.h"
#include "net-plug/dhcp.h"

static char dir[64];

static uint32_t ip4(const char *s)
{
    struct in_addr a;
    assert_int_equal(inet_pton(AF_INET, s, &a), 1);
    return a.s_addr;
}

static char *slurp(const char *name)
{
    static char buf[4096];
    char p[128];
    ssize_t n;
    int fd;

    snprintf(p, sizeof(p), "%s/%s", dir, name);
    fd = open(p, O_RDONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    assert_true(n >= 0);
    buf[n] = '\0';
    return buf;
}

static struct netplug_dhcp_config cfg(void)
{
    static uint32_t dns[2];
    dns[0] = ip4("10.0.0.1");
    dns[1] = ip4("1.1.1.1");
    return (struct netplug_dhcp_config){.network = "n1", .interface = "cabr-n1", .dir = dir,
                                        .gateway = ip4("10.0.0.1"), .prefix = 24, .dns = dns, .n_dns = 2,
                                        .mtu = 1450, .metadata_route = true, .lease_secs = 0,
                                        .dnsmasq = NULL, .user = "nobody"};
}

static void test_argv(void **state)
{
    struct netplug_dhcp_config c = cfg();
    struct np_error e = {0};
    char **argv = NULL, joined[2048] = "";
    (void)state;

    assert_int_equal(netplug_dhcp_argv(&c, &argv, &e), 0);
    for (char **a = argv; *a; a++) {
        strncat(joined, *a, sizeof(joined) - strlen(joined) - 2);
        strncat(joined, " ", sizeof(joined) - strlen(joined) - 1);
    }
    char want[1024];
    snprintf(want, sizeof(want),
             "dnsmasq --keep-in-foreground --conf-file=/dev/null --port=0 --no-resolv --no-hosts "
             "--bind-interfaces --interface=cabr-n1 --except-interface=lo "
             "--dhcp-range=10.0.0.0,static,255.255.255.0,86400 --dhcp-hostsfile=%s/hosts "
             "--dhcp-optsfile=%s/opts --dhcp-leasefile=%s/leases --pid-file=%s/dnsmasq.pid "
             "--dhcp-authoritative --dhcp-no-override --log-facility=- --user=nobody ",
             dir, dir, dir, dir);
    assert_string_equal(joined, want);
    netplug_dhcp_argv_free(argv);
    netplug_dhcp_argv_free(NULL);
}

static void test_opts(void **state)
{
    struct netplug_dhcp_config c = cfg();
    struct np_error e = {0};
    (void)state;

    assert_int_equal(netplug_dhcp_write_opts(&c, &e), 0);
    assert_string_equal(slurp("opts"), "# written by compute-agent for network n1\n"
                                       "option:router,10.0.0.1\n"
                                       "option:dns-server,10.0.0.1,1.1.1.1\n"
                                       "option:mtu,1450\n"
                                       "option:classless-static-route,169.254.169.254/32,10.0.0.1,"
                                       "0.0.0.0/0,10.0.0.1\n");
    c.n_dns = 0;
    c.mtu = 0;
    c.metadata_route = false;
    assert_int_equal(netplug_dhcp_write_opts(&c, &e), 0);
    assert_string_equal(slurp("opts"), "# written by compute-agent for network n1\noption:router,10.0.0.1\n");
}

static void test_hosts(void **state)
{
    struct netplug_dhcp_config c = cfg();
    struct np_error e = {0};
    struct netplug_dhcp_host h[2] = {
        {.mac = {0x52, 0x54, 0x00, 0xaa, 0xbb, 0x01}, .ipv4 = ip4("10.0.0.5"), .hostname = "vm-1"},
        {.mac = {0x52, 0x54, 0x00, 0xaa, 0xbb, 0x02}, .ipv4 = ip4("10.0.0.6"), .hostname = NULL},
    };
    (void)state;

    assert_int_equal(netplug_dhcp_write_hosts(&c, h, 2, &e), 0);
    assert_string_equal(slurp("hosts"), "# written by compute-agent for network n1\n"
                                        "52:54:00:aa:bb:01,10.0.0.5,vm-1\n"
                                        "52:54:00:aa:bb:02,10.0.0.6\n");
    assert_int_equal(netplug_dhcp_write_hosts(&c, h, 0, &e), 0);
    assert_string_equal(slurp("hosts"), "# written by compute-agent for network n1\n");

    /* refused: the file stays as it was */
    h[1].ipv4 = ip4("10.0.0.5");
    assert_int_equal(netplug_dhcp_write_hosts(&c, h, 2, &e), -EINVAL);
    assert_string_equal(e.msg, "network n1: hosts[1].ip: the same as hosts[0]'s");
    h[1].ipv4 = ip4("10.0.0.255");
    assert_int_equal(netplug_dhcp_write_hosts(&c, h, 2, &e), -EINVAL);
    assert_string_equal(e.msg, "network n1: hosts[1].ip: not a host address of the network's cidr (or the gateway)");
    h[1].ipv4 = ip4("10.0.0.6");
    h[1].mac[0] = 0x01;
    assert_int_equal(netplug_dhcp_write_hosts(&c, h, 2, &e), -EINVAL);
    assert_string_equal(e.msg, "network n1: hosts[1].mac: not a unicast MAC address");
    h[1].mac[0] = 0x52;
    h[0].hostname = "-bad";
    assert_int_equal(netplug_dhcp_write_hosts(&c, h, 2, &e), -EINVAL);
    assert_string_equal(e.msg, "network n1: hosts[0].hostname: 1..63 of [A-Za-z0-9-]");
    assert_string_equal(slurp("hosts"), "# written by compute-agent for network n1\n");
}

static void test_config_errors(void **state)
{
    struct np_error e = {0};
    char **argv = NULL;
    (void)state;

    struct netplug_dhcp_config c = cfg();
    c.prefix = 31;
    assert_int_equal(netplug_dhcp_argv(&c, &argv, &e), -EINVAL);
    assert_string_equal(e.msg, "network n1: cidr: prefix not in 1..30 for dhcp");
    c = cfg();
    c.gateway = 0;
    assert_int_equal(netplug_dhcp_write_opts(&c, &e), -EINVAL);
    assert_string_equal(e.msg, "network n1: gateway: required for dhcp");
    c = cfg();
    c.dir = "relative";
    assert_int_equal(netplug_dhcp_write_opts(&c, &e), -EINVAL);
    assert_string_equal(e.msg, "network n1: dhcp: state directory: not an absolute path");
    c = cfg();
    c.dir = "/nonexistent-caa/x";
    assert_int_equal(netplug_dhcp_write_opts(&c, &e), -ENOENT);
    assert_null(argv);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_argv),
        cmocka_unit_test(test_opts),
        cmocka_unit_test(test_hosts),
        cmocka_unit_test(test_config_errors),
    };
    int rc;

    strscpy(dir, "/tmp/caa-dhcpunit-XXXXXX", sizeof(dir));
    if (!mkdtemp(dir))
        return 1;
    rc = cmocka_run_group_tests(tests, NULL, NULL);
    const char *files[] = {"hosts", "opts"};
    for (size_t i = 0; i < ARRAY_SIZE(files); i++) {
        char p[128];
        snprintf(p, sizeof(p), "%s/%s", dir, files[i]);
        unlink(p);
    }
    rmdir(dir);
    return rc;
}
