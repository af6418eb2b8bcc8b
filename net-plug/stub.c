/* stub.c: STUB (helper C). Stand-ins for helper A's net-plug library so the
 * agent builds and its own paths can be tested; the lead drops this file at
 * merge. Networks are recorded (names and bridges); plugging answers
 * -ENOTSUP, unless CA_NETPLUG_STUB_OK=1 (tests of the agent's own paths: then
 * plug and sync pretend to succeed and touch nothing); unplug succeeds. */
#include "net-plug/netplug.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STUB_NETS 64

struct netplug {
    char names[STUB_NETS][64];
    char bridges[STUB_NETS][16];
    size_t n;
};

static int stub_err(struct np_error *err, int code, const char *what)
{
    if (err) {
        err->code = code;
        snprintf(err->msg, sizeof(err->msg), "net-plug is not built in (stub): %s", what);
    }
    return code;
}

int netplug_new(const struct netplug_config *cfg, struct netplug **out, struct np_error *err)
{
    (void)cfg;
    (void)err;
    *out = calloc(1, sizeof(**out));
    return *out ? 0 : -ENOMEM;
}

int netplug_network_add(struct netplug *np, const struct np_network *net, struct np_error *err)
{
    if (np->n == STUB_NETS)
        return stub_err(err, -ENOSPC, "too many networks");
    snprintf(np->names[np->n], sizeof(np->names[0]), "%s", net->name);
    if (net->bridge)
        snprintf(np->bridges[np->n], sizeof(np->bridges[0]), "%s", net->bridge);
    else
        snprintf(np->bridges[np->n], sizeof(np->bridges[0]), "cabr-%.10s", net->name);
    np->n++;
    return 0;
}

static bool pretend(void)
{
    const char *v = getenv("CA_NETPLUG_STUB_OK");
    return v && !strcmp(v, "1");
}

int netplug_plug(struct netplug *np, const struct np_port *p, struct np_error *err)
{
    (void)np;
    (void)p;
    return pretend() ? 0 : stub_err(err, -ENOTSUP, "cannot plug a port");
}

int netplug_unplug(struct netplug *np, const char *dev, struct np_error *err)
{
    (void)np;
    (void)dev;
    (void)err;
    return 0; /* nothing was plugged */
}

int netplug_sync(struct netplug *np, const struct np_port *keep, size_t n, struct np_error *err)
{
    (void)np;
    (void)keep;
    return n && !pretend() ? stub_err(err, -ENOTSUP, "cannot re-plug ports") : 0;
}

bool netplug_port_filtered(struct netplug *np, const char *dev)
{
    (void)np;
    (void)dev;
    return false;
}

int netplug_peer(struct netplug *np, const char *network, uint32_t src_ipv4, uint8_t mac[6],
                 char dev[16])
{
    (void)np;
    (void)network;
    (void)src_ipv4;
    (void)mac;
    (void)dev;
    return -ENOTSUP;
}

int netplug_network_bridge(struct netplug *np, const char *network, char bridge[16])
{
    for (size_t i = 0; i < np->n; i++)
        if (!strcmp(np->names[i], network)) {
            memcpy(bridge, np->bridges[i], 16);
            return 0;
        }
    return -ENOENT;
}

void netplug_free(struct netplug *np)
{
    free(np);
}
