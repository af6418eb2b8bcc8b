/* dhcpd-internal.h: INTERNAL to agent/dhcpd.c and tests/unit/test_dhcpd.c.
 * The pure pieces of the supervisor. */
#ifndef CA_AGENT_DHCPD_INTERNAL_H
#define CA_AGENT_DHCPD_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DHCPD_BACKOFF_MIN_MS 1000
#define DHCPD_BACKOFF_MAX_MS 30000
#define DHCPD_STABLE_MS 30000 /* a dnsmasq that ran this long restarts after the minimum again */

/* The delay after prev (0: the first restart): 1 s doubling, at most 30 s. */
uint64_t dhcpd_backoff_next(uint64_t prev);

/* True when a /proc/PID/cmdline (NUL-separated arguments, len bytes) is our
 * dnsmasq: argv[0]'s last component is "dnsmasq" and one argument is exactly
 * pidfile_arg ("--pid-file=DIR/dnsmasq.pid"). */
bool dhcpd_cmdline_ours(const char *cmdline, size_t len, const char *pidfile_arg);

/* True when a /proc/PID/status text says the process catches signal sig
 * (its SigCgt mask); false when it does not or the text has no mask. */
bool dhcpd_status_catches(const char *status, int sig);

/* A pid file's text: 0 with *pid (1..INT32_MAX, optional trailing newline),
 * -EINVAL otherwise. */
int dhcpd_pidfile_parse(const char *text, int *pid);

#endif
