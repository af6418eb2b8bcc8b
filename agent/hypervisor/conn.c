/* conn.c: struct hv (a connection through one driver), what connect learns
 * about the host (set under the connection's lock), libvirt's event thread
 * and the hand-over of events to the loop. The table's entry points are in
 * table.c, the libvirt calls the drivers share in libvirt-common.c, the
 * layer's worker threads in workers.c. */
#include <libvirt/virterror.h>
#include <stdlib.h>
#include <string.h>

#include "agent/hypervisor/hv-internal.h"
#include "common/list.h"

/* An event on its way from libvirt's event thread to the loop. */
struct event_node {
    struct hv_event ev;
    struct list_node link; /* in hv->events */
};

struct hv {
    const struct hv_driver *drv;  /* the driver table (static) */
    char *uri;                    /* libvirt URI in use */
    char cfg_domain_type[8];      /* auto|kvm|qemu from config */
    struct hv_workers *workers;   /* libvirt worker threads + long-job thread */

    /* what connect learned; written under lock, read under lock */
    const char *domain_type;      /* what probe decided (static string) */
    const char *domain_type_reason; /* why (static string) */
    unsigned features;            /* the driver's, less what probe cleared */
    char guest_arch[16];          /* the host's arch (capabilities) */
    struct hv_owner self;         /* this host in metadata (host_uuid from caps) */

    pthread_mutex_t lock;         /* guards the above, conn, callback ids, the event queue */
    virConnectPtr conn;           /* current connection or NULL */
    int cb_lifecycle;             /* libvirt callback ids, -1 when none */
    int cb_reboot;

    uv_async_t async;             /* wakes the loop for queued events */
    struct list_node events;      /* struct event_node waiting for the loop, oldest first */
    hv_event_cb cb;               /* the agent's event handler (loop thread) */
    void *opaque;

    pthread_t event_thread;       /* runs virEventRunDefaultImpl() */
    bool event_thread_started;
    volatile bool quit;           /* tells the event thread to stop */
    int wake_timer;               /* libvirt timeout used to wake that thread */
};

/* ---- errors ---- */

static void silence_libvirt(void *opaque, virErrorPtr e)
{
    (void)opaque;
    (void)e; /* errors are read where they happen and reported once */
}

int hv_libvirt_error(struct agent_error *err, const char *what)
{
    virErrorPtr e = virGetLastError();
    int code = e ? e->code : VIR_ERR_INTERNAL_ERROR;
    int errnum;
    const char *ecode = "hypervisor";

    /* the connection's own layers failing (a socket closed, recv failed) */
    if (e && (e->domain == VIR_FROM_RPC || e->domain == VIR_FROM_REMOTE) &&
        (code == VIR_ERR_SYSTEM_ERROR || code == VIR_ERR_INTERNAL_ERROR))
        code = VIR_ERR_NO_CONNECT;
    switch (code) {
    case VIR_ERR_NO_DOMAIN:
        errnum = ENOENT;
        ecode = "not_found";
        break;
    case VIR_ERR_NO_SUPPORT:
    case VIR_ERR_ARGUMENT_UNSUPPORTED:
        errnum = ENOTSUP;
        ecode = "not_supported";
        break;
    case VIR_ERR_OPERATION_INVALID:
        errnum = EINVAL;
        ecode = "conflict";
        break;
    case VIR_ERR_SYSTEM_ERROR:
        /* an errno from the guest's side (above: not the connection's): a
         * missing disk ("Cannot access storage file") is no reason to wait */
        errnum = EIO;
        break;
    case VIR_ERR_NO_CONNECT:
    case VIR_ERR_INVALID_CONN:
    case VIR_ERR_RPC:
        errnum = ENOTCONN;
        ecode = "unavailable";
        break;
    case VIR_ERR_OPERATION_TIMEOUT:
        errnum = ETIMEDOUT;
        break;
    default:
        errnum = EIO;
    }
    agent_error_set(err, errnum, ecode, NULL, "%s: %s", what,
                    e && e->message ? e->message : "unknown libvirt error");
    virResetLastError();
    return -errnum;
}

/* ---- events ---- */

static void queue_event(struct hv *hv, const struct hv_event *ev)
{
    struct event_node *n = calloc(1, sizeof(*n));

    if (!n)
        return; /* a lost event is healed by the next reconcile */
    n->ev = *ev;
    pthread_mutex_lock(&hv->lock);
    list_add_tail(&hv->events, &n->link);
    pthread_mutex_unlock(&hv->lock);
    uv_async_send(&hv->async);
}

static void on_async(uv_async_t *async)
{
    struct hv *hv = async->data;
    struct list_node batch;
    struct event_node *n, *tmp;

    /* take the whole queue under the lock, deliver outside it */
    list_init(&batch);
    pthread_mutex_lock(&hv->lock);
    list_splice_tail(&batch, &hv->events);
    pthread_mutex_unlock(&hv->lock);
    list_for_each_entry_safe(n, tmp, &batch, link) {
        list_del(&n->link);
        if (hv->cb)
            hv->cb(&n->ev, hv->opaque);
        free(n);
    }
}

static int on_lifecycle(virConnectPtr conn, virDomainPtr dom, int event, int detail, void *opaque)
{
    struct hv_event ev = {.detail = detail};

    (void)conn;
    switch (event) {
    case VIR_DOMAIN_EVENT_STARTED:
        ev.type = HV_EVENT_STARTED;
        break;
    case VIR_DOMAIN_EVENT_STOPPED:
        ev.type = detail == VIR_DOMAIN_EVENT_STOPPED_CRASHED ? HV_EVENT_CRASHED : HV_EVENT_STOPPED;
        break;
    case VIR_DOMAIN_EVENT_CRASHED:
        ev.type = HV_EVENT_CRASHED;
        break;
    case VIR_DOMAIN_EVENT_SUSPENDED:
        ev.type = HV_EVENT_SUSPENDED;
        break;
    case VIR_DOMAIN_EVENT_RESUMED:
        ev.type = HV_EVENT_RESUMED;
        break;
    case VIR_DOMAIN_EVENT_UNDEFINED:
        ev.type = HV_EVENT_UNDEFINED;
        break;
    case VIR_DOMAIN_EVENT_DEFINED:
        ev.type = HV_EVENT_DEFINED;
        break;
    default:
        return 0;
    }
    virDomainGetUUIDString(dom, ev.uuid);
    queue_event(opaque, &ev);
    return 0;
}

static void on_reboot(virConnectPtr conn, virDomainPtr dom, void *opaque)
{
    struct hv_event ev = {.type = HV_EVENT_REBOOTED};

    (void)conn;
    virDomainGetUUIDString(dom, ev.uuid);
    queue_event(opaque, &ev);
}

static void on_close(virConnectPtr conn, int reason, void *opaque)
{
    struct hv *hv = opaque;
    struct hv_event ev = {.type = HV_EVENT_DISCONNECTED, .detail = reason};

    pthread_mutex_lock(&hv->lock);
    if (hv->conn == conn) {
        /* the callbacks die with the connection; drop our reference */
        hv->conn = NULL;
        hv->cb_lifecycle = hv->cb_reboot = -1;
        pthread_mutex_unlock(&hv->lock);
        virConnectClose(conn);
    } else {
        pthread_mutex_unlock(&hv->lock);
    }
    queue_event(hv, &ev);
}

static void on_wake(int timer, void *opaque)
{
    (void)timer;
    (void)opaque;
}

static void *event_thread_main(void *arg)
{
    struct hv *hv = arg;

    while (!hv->quit)
        if (virEventRunDefaultImpl() < 0)
            break;
    return NULL;
}

/* ---- life ---- */

static pthread_once_t libvirt_once = PTHREAD_ONCE_INIT;
static void libvirt_global_init(void)
{
    virInitialize();
    virSetErrorFunc(NULL, silence_libvirt);
    virEventRegisterDefaultImpl();
}

static void on_async_closed(uv_handle_t *h);

int hv_new(uv_loop_t *loop, const struct hv_driver *drv, const struct hv_config *cfg,
           hv_event_cb cb, void *opaque, struct hv **ret)
{
    struct hv *hv = calloc(1, sizeof(*hv));
    int r;

    if (!hv)
        return -ENOMEM;
    pthread_once(&libvirt_once, libvirt_global_init);
    hv->drv = drv;
    hv->uri = strdup(cfg->uri && *cfg->uri ? cfg->uri : drv->default_uri);
    strscpy(hv->cfg_domain_type, cfg->domain_type ? cfg->domain_type : "auto",
            sizeof(hv->cfg_domain_type));
    strscpy(hv->self.host, cfg->host_name ? cfg->host_name : "", sizeof(hv->self.host));
    hv->domain_type = hv->domain_type_reason = "";
    hv->features = drv->features;
    strscpy(hv->guest_arch, "x86_64", sizeof(hv->guest_arch));
    hv->cb_lifecycle = hv->cb_reboot = -1;
    hv->cb = cb;
    hv->opaque = opaque;
    hv->wake_timer = -1;
    list_init(&hv->events);
    pthread_mutex_init(&hv->lock, NULL);
    if (!hv->uri || uv_async_init(loop, &hv->async, on_async) < 0) {
        free(hv->uri);
        pthread_mutex_destroy(&hv->lock);
        free(hv);
        return -ENOMEM;
    }
    hv->async.data = hv;
    /* events never keep the loop alive on their own: main() runs the loop
     * until the API and timers are closed, then frees the hv */
    uv_unref((uv_handle_t *)&hv->async);
    if ((r = hv_workers_new(loop, hv, cfg->workers ? cfg->workers : 4, &hv->workers)) < 0) {
        uv_close((uv_handle_t *)&hv->async, on_async_closed);
        return r;
    }
    /* a disabled timer the stop path can arm to wake the event thread */
    hv->wake_timer = virEventAddTimeout(-1, on_wake, hv, NULL);
    if (pthread_create(&hv->event_thread, NULL, event_thread_main, hv) == 0)
        hv->event_thread_started = true;
    *ret = hv;
    return 0;
}

static void on_async_closed(uv_handle_t *h)
{
    struct hv *hv = h->data;
    struct event_node *n, *tmp;

    /* the event thread is joined: nothing queues any more */
    list_for_each_entry_safe(n, tmp, &hv->events, link) {
        list_del(&n->link);
        free(n);
    }
    pthread_mutex_destroy(&hv->lock);
    free(hv->uri);
    free(hv);
}

void hv_free(struct hv *hv)
{
    virConnectPtr conn;

    if (!hv)
        return;
    /* no new work; queued work cancelled, running work finishes while the
     * connection and the event thread (keepalive) are still there */
    hv_workers_stop(hv->workers);
    hv_workers_free(hv->workers);
    hv->workers = NULL;
    pthread_mutex_lock(&hv->lock);
    conn = hv->conn;
    hv->conn = NULL;
    pthread_mutex_unlock(&hv->lock);
    if (conn) {
        if (hv->cb_lifecycle >= 0)
            virConnectDomainEventDeregisterAny(conn, hv->cb_lifecycle);
        if (hv->cb_reboot >= 0)
            virConnectDomainEventDeregisterAny(conn, hv->cb_reboot);
        virConnectUnregisterCloseCallback(conn, on_close);
        virConnectClose(conn);
    }
    if (hv->event_thread_started) {
        hv->quit = true;
        virEventUpdateTimeout(hv->wake_timer, 0);
        pthread_join(hv->event_thread, NULL);
    }
    if (hv->wake_timer >= 0)
        virEventRemoveTimeout(hv->wake_timer);
    hv->cb = NULL;
    uv_close((uv_handle_t *)&hv->async, on_async_closed);
}

/* What the capabilities say about this host: its UUID (the owner recorded
 * in metadata) and its arch (the guests'). Kept as they were if libvirt
 * does not answer. */
static void learn_host(struct hv *hv)
{
    virConnectPtr conn;
    struct hv_host_info info;
    char *caps;

    /* a reference of our own: the close callback may drop the hv's */
    if (hv_conn_get(hv, &conn, NULL) < 0)
        return;
    caps = virConnectGetCapabilities(conn);
    virConnectClose(conn);
    if (!caps) {
        virResetLastError();
        return;
    }
    if (hv_caps_parse(caps, &info, NULL) == 0) {
        pthread_mutex_lock(&hv->lock);
        strscpy(hv->self.host_uuid, info.host_uuid, sizeof(hv->self.host_uuid));
        if (info.arch[0])
            strscpy(hv->guest_arch, info.arch, sizeof(hv->guest_arch));
        pthread_mutex_unlock(&hv->lock);
        hv_host_info_release(&info);
    }
    free(caps);
}

int hv_connect(struct hv *hv, struct agent_error *err)
{
    virConnectPtr conn, old;
    int r;

    conn = virConnectOpen(hv->uri);
    if (!conn)
        return hv_libvirt_error(err, "cannot connect to the hypervisor");
    if (virConnectRegisterCloseCallback(conn, on_close, hv, NULL) < 0) {
        r = hv_libvirt_error(err, "cannot watch the hypervisor connection");
        virConnectClose(conn);
        return r;
    }
    pthread_mutex_lock(&hv->lock);
    old = hv->conn;
    hv->conn = conn;
    hv->cb_lifecycle = virConnectDomainEventRegisterAny(
        conn, NULL, VIR_DOMAIN_EVENT_ID_LIFECYCLE, VIR_DOMAIN_EVENT_CALLBACK(on_lifecycle), hv, NULL);
    hv->cb_reboot = virConnectDomainEventRegisterAny(
        conn, NULL, VIR_DOMAIN_EVENT_ID_REBOOT, VIR_DOMAIN_EVENT_CALLBACK(on_reboot), hv, NULL);
    r = hv->cb_lifecycle < 0 ? -EIO : 0;
    pthread_mutex_unlock(&hv->lock);
    if (old) {
        virConnectUnregisterCloseCallback(old, on_close);
        virConnectClose(old);
    }
    if (r < 0)
        return hv_libvirt_error(err, "cannot subscribe to domain events");
    learn_host(hv);
    return hv->drv->probe ? hv->drv->probe(hv, err) : 0;
}

bool hv_connected(struct hv *hv)
{
    bool c;

    pthread_mutex_lock(&hv->lock);
    c = hv->conn != NULL;
    pthread_mutex_unlock(&hv->lock);
    return c;
}

int hv_conn_get(struct hv *hv, virConnectPtr *ret, struct agent_error *err)
{
    pthread_mutex_lock(&hv->lock);
    *ret = hv->conn;
    if (*ret)
        virConnectRef(*ret);
    pthread_mutex_unlock(&hv->lock);
    if (!*ret)
        return agent_error_set(err, ENOTCONN, "unavailable", NULL,
                               "the hypervisor connection is down");
    return 0;
}

/* The lock guards what connect writes; the getters take a const hv. */
static pthread_mutex_t *lock_of(const struct hv *hv)
{
    return (pthread_mutex_t *)&hv->lock;
}

const struct hv_driver *hv_driver(const struct hv *hv) { return hv->drv; }
const char *hv_driver_name(const struct hv *hv) { return hv->drv->name; }
const char *hv_uri(const struct hv *hv) { return hv->uri; }
const char *hv_config_domain_type(const struct hv *hv) { return hv->cfg_domain_type; }

const char *hv_domain_type(const struct hv *hv)
{
    const char *t;

    pthread_mutex_lock(lock_of(hv));
    t = hv->domain_type;
    pthread_mutex_unlock(lock_of(hv));
    return t;
}

const char *hv_domain_type_reason(const struct hv *hv)
{
    const char *t;

    pthread_mutex_lock(lock_of(hv));
    t = hv->domain_type_reason;
    pthread_mutex_unlock(lock_of(hv));
    return t;
}

void hv_set_domain_type(struct hv *hv, const char *type, const char *reason)
{
    pthread_mutex_lock(&hv->lock);
    hv->domain_type = type;
    hv->domain_type_reason = reason;
    pthread_mutex_unlock(&hv->lock);
}

bool hv_supports(const struct hv *hv, enum hv_feature f)
{
    bool on;

    if ((unsigned)f >= HV_FEAT__COUNT)
        return false;
    pthread_mutex_lock(lock_of(hv));
    on = (hv->features & HV_FEAT_BIT(f)) != 0;
    pthread_mutex_unlock(lock_of(hv));
    return on;
}

void hv_clear_features(struct hv *hv, unsigned bits)
{
    pthread_mutex_lock(&hv->lock);
    hv->features &= ~bits;
    pthread_mutex_unlock(&hv->lock);
}

void hv_guest_arch(struct hv *hv, char buf[16])
{
    pthread_mutex_lock(&hv->lock);
    strscpy(buf, hv->guest_arch, 16);
    pthread_mutex_unlock(&hv->lock);
}

void hv_owner_self(struct hv *hv, struct hv_owner *ret)
{
    pthread_mutex_lock(&hv->lock);
    *ret = hv->self;
    pthread_mutex_unlock(&hv->lock);
}

/* ---- the layer's threads ---- */

int hv_submit(struct hv *hv, hv_work_fn work, hv_done_fn done, void *arg)
{
    return hv->workers ? hv_workers_submit(hv->workers, false, work, done, arg) : -ESHUTDOWN;
}

int hv_submit_long(struct hv *hv, hv_work_fn work, hv_done_fn done, void *arg)
{
    return hv->workers ? hv_workers_submit(hv->workers, true, work, done, arg) : -ESHUTDOWN;
}

void hv_stop(struct hv *hv)
{
    if (hv)
        hv_workers_stop(hv->workers);
}

const char *hv_power_name(enum hv_power p)
{
    static const char *const names[] = {"nostate", "running", "paused", "shutdown", "shutoff", "crashed"};
    return (unsigned)p < ARRAY_SIZE(names) ? names[p] : "nostate";
}

