/* host.c: enabled/disabled and ready (host.h). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "agent/host.h"
#include "agent/log.h"

struct host {
    struct store *st;
    bool disabled;
    bool ready;
    host_change_cb cb;
    void *opaque;
};

int host_new(struct store *st, struct host **ret)
{
    struct host *h = calloc(1, sizeof(*h));
    char *v = NULL;

    if (!h)
        return -ENOMEM;
    h->st = st;
    if (store_meta_get(st, "host.disabled", &v) == 0)
        h->disabled = v && !strcmp(v, "1");
    free(v);
    *ret = h;
    return 0;
}

void host_free(struct host *h)
{
    free(h);
}

bool host_disabled(const struct host *h)
{
    return h->disabled;
}

bool host_ready(const struct host *h)
{
    return h->ready;
}

void host_set_ready(struct host *h)
{
    h->ready = true;
}

int host_set_disabled(struct host *h, bool disabled, struct agent_error *err)
{
    int r = store_meta_set(h->st, "host.disabled", disabled ? "1" : "0");

    if (r < 0)
        return store_error(r, err, "cannot record the host's state");
    if (h->disabled == disabled)
        return 0;
    h->disabled = disabled;
    log_info(disabled ? "host disabled: launches refused" : "host enabled", NULL);
    if (h->cb)
        h->cb(h->opaque, disabled);
    return 0;
}

void host_on_change(struct host *h, host_change_cb cb, void *opaque)
{
    h->cb = cb;
    h->opaque = opaque;
}
