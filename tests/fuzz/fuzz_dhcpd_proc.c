/* fuzz_dhcpd_proc: what the dnsmasq supervisor reads about other processes
 * (agent/dhcpd-internal.h), from untrusted bytes: a /proc/PID/cmdline through
 * dhcpd_cmdline_ours() (true only with argv[0] named dnsmasq and the exact
 * pid file argument), a /proc/PID/status through dhcpd_status_catches(), a
 * pid file through dhcpd_pidfile_parse() (1..INT32_MAX only). Never a crash. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>

#include "agent/dhcpd-internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char arg[] = "--pid-file=/s/dhcp/n1/dnsmasq.pid";
    char *text = malloc(size + 1);
    int pid = 0;

    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    if (dhcpd_cmdline_ours((const char *)data, size, arg)) {
        /* then the bytes hold the argument, NUL-delimited, after a dnsmasq argv[0] */
        if (!memmem(data, size, arg, sizeof(arg) - 1) || size < 7 + 1 + sizeof(arg) - 1)
            abort();
    }
    (void)dhcpd_status_catches(text, SIGHUP);
    if (dhcpd_pidfile_parse(text, &pid) == 0 && pid < 1)
        abort();
    free(text);
    return 0;
}

static void fuzz_done(void) {}
#include "tests/fuzz/replay.h"
