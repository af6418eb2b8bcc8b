/* watch.c: the filter watch: a thread of the handle's that, every check_ms,
 * compares the kernel's anti-spoofing table with the records and puts back
 * what someone else removed (an `nft flush ruleset`, a firewall reload). */
#include <pthread.h>
#include <sched.h>
#include <string.h>
#include <time.h>

#include "net-plug/netplug-internal.h"

int netplug_filter_check(struct netplug *np, struct np_error *err)
{
    int r = 0;

    pthread_mutex_lock(&np->lock);
    if (np->antispoof && np->loaded && (r = np_filter_check(np, err)) == 1)
        np->repairs++;
    pthread_mutex_unlock(&np->lock);
    return r;
}

uint64_t netplug_filter_repairs(struct netplug *np)
{
    uint64_t n;

    pthread_mutex_lock(&np->lock);
    n = np->repairs;
    pthread_mutex_unlock(&np->lock);
    return n;
}

static void *watch_thread(void *arg)
{
    struct netplug *np = arg;
    struct timespec ts;

    /* the handle's sockets are bound to its namespace already; libnftables may
     * open one lazily: let it be there too */
    if (np->netns_fd >= 0 && setns(np->netns_fd, CLONE_NEWNET) < 0)
        return NULL;
    pthread_mutex_lock(&np->watch_lock);
    while (!np->watch_stop) {
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_sec += np->check_ms / 1000;
        ts.tv_nsec += (long)(np->check_ms % 1000) * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        while (!np->watch_stop && pthread_cond_timedwait(&np->watch_cond, &np->watch_lock, &ts) == 0)
            ;
        if (np->watch_stop)
            break;
        pthread_mutex_unlock(&np->watch_lock);
        netplug_filter_check(np, NULL);
        pthread_mutex_lock(&np->watch_lock);
    }
    pthread_mutex_unlock(&np->watch_lock);
    return NULL;
}

void np_watch_init(struct netplug *np)
{
    pthread_condattr_t ca;

    pthread_mutex_init(&np->watch_lock, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&np->watch_cond, &ca);
    pthread_condattr_destroy(&ca);
}

int np_watch_start(struct netplug *np, unsigned check_ms, struct np_error *err)
{
    int r;

    np->check_ms = check_ms;
    if ((r = -pthread_create(&np->watch, NULL, watch_thread, np)) < 0)
        return np_fail(err, r, "netplug: cannot start the filter watch: %s", strerror(-r));
    np->watch_running = true;
    return 0;
}

void np_watch_stop(struct netplug *np)
{
    if (!np->watch_running)
        return;
    pthread_mutex_lock(&np->watch_lock);
    np->watch_stop = true;
    pthread_cond_broadcast(&np->watch_cond);
    pthread_mutex_unlock(&np->watch_lock);
    pthread_join(np->watch, NULL);
    np->watch_running = false;
}

void np_watch_destroy(struct netplug *np)
{
    pthread_mutex_destroy(&np->watch_lock);
    pthread_cond_destroy(&np->watch_cond);
}
