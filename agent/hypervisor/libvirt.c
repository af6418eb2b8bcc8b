/* libvirt.c: struct hv (a connection through one driver), libvirt's event
 * thread, the hand-over of events to the loop, and the libvirt calls the
 * drivers share. */
#include <libvirt/virterror.h>
#include <stdlib.h>
#include <string.h>

#include "agent/hypervisor/hv-internal.h"

struct event_node {
    struct hv_event ev;
    struct event_node *next;
};

struct hv {
    const struct hv_driver *drv;  /* the driver table (static) */
    char *uri;                    /* libvirt URI in use */
    char cfg_domain_type[8];      /* auto|kvm|qemu from config */
    char domain_type[8];          /* what probe decided */
    char domain_type_reason[160]; /* why */
    struct hv_owner self;         /* this host in metadata; host_uuid under lock */

    pthread_mutex_t lock;         /* guards conn, callback ids, the event queue */
    virConnectPtr conn;           /* current connection or NULL */
    int cb_lifecycle;             /* libvirt callback ids, -1 when none */
    int cb_reboot;

    uv_async_t async;             /* wakes the loop for queued events */
    struct event_node *q_head;    /* events waiting for the loop */
    struct event_node *q_tail;
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
    if (hv->q_tail)
        hv->q_tail->next = n;
    else
        hv->q_head = n;
    hv->q_tail = n;
    pthread_mutex_unlock(&hv->lock);
    uv_async_send(&hv->async);
}

static void on_async(uv_async_t *async)
{
    struct hv *hv = async->data;
    struct event_node *n;

    pthread_mutex_lock(&hv->lock);
    n = hv->q_head;
    hv->q_head = hv->q_tail = NULL;
    pthread_mutex_unlock(&hv->lock);
    while (n) {
        struct event_node *next = n->next;
        if (hv->cb)
            hv->cb(&n->ev, hv->opaque);
        free(n);
        n = next;
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

int hv_new(uv_loop_t *loop, const struct hv_driver *drv, const struct hv_config *cfg,
           hv_event_cb cb, void *opaque, struct hv **ret)
{
    struct hv *hv = calloc(1, sizeof(*hv));

    if (!hv)
        return -ENOMEM;
    pthread_once(&libvirt_once, libvirt_global_init);
    hv->drv = drv;
    hv->uri = strdup(cfg->uri && *cfg->uri ? cfg->uri : drv->default_uri);
    strscpy(hv->cfg_domain_type, cfg->domain_type ? cfg->domain_type : "auto",
            sizeof(hv->cfg_domain_type));
    strscpy(hv->self.host, cfg->host_name ? cfg->host_name : "", sizeof(hv->self.host));
    hv->cb_lifecycle = hv->cb_reboot = -1;
    hv->cb = cb;
    hv->opaque = opaque;
    hv->wake_timer = -1;
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
    struct event_node *n = hv->q_head;

    while (n) {
        struct event_node *next = n->next;
        free(n);
        n = next;
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
    {
        /* libvirt's host UUID, recorded as the owner beside the host name */
        char *caps = virConnectGetCapabilities(conn), uuid[37];
        if (!caps)
            virResetLastError();
        domxml_caps_host_uuid(caps, uuid);
        free(caps);
        pthread_mutex_lock(&hv->lock);
        strscpy(hv->self.host_uuid, uuid, sizeof(hv->self.host_uuid));
        pthread_mutex_unlock(&hv->lock);
    }
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

const struct hv_driver *hv_driver(const struct hv *hv) { return hv->drv; }
const char *hv_uri(const struct hv *hv) { return hv->uri; }
const char *hv_domain_type(const struct hv *hv) { return hv->domain_type; }
const char *hv_domain_type_reason(const struct hv *hv) { return hv->domain_type_reason; }
const char *hv_config_domain_type(const struct hv *hv) { return hv->cfg_domain_type; }

void hv_owner_self(struct hv *hv, struct hv_owner *ret)
{
    pthread_mutex_lock(&hv->lock);
    *ret = hv->self;
    pthread_mutex_unlock(&hv->lock);
}

void hv_set_domain_type(struct hv *hv, const char *type, const char *reason)
{
    strscpy(hv->domain_type, type, sizeof(hv->domain_type));
    strscpy(hv->domain_type_reason, reason, sizeof(hv->domain_type_reason));
}

const char *hv_power_name(enum hv_power p)
{
    static const char *const names[] = {"nostate", "running", "paused", "shutdown", "shutoff", "crashed"};
    return (unsigned)p < ARRAY_SIZE(names) ? names[p] : "nostate";
}

/* ---- the table's entry points ---- */

#define HV_CALL(hv, op, err, ...)                                                       \
    ((hv)->drv->op ? (hv)->drv->op((hv), __VA_ARGS__, (err))                            \
                   : agent_error_set((err), ENOTSUP, "not_supported", NULL,             \
                                     "the %s driver does not support " #op,            \
                                     (hv)->drv->name))

int hv_domain_xml(struct hv *hv, const struct hv_guest *g, char **xml, struct agent_error *err)
{
    struct hv_guest mine = *g;
    struct hv_owner self;

    hv_owner_self(hv, &self);
    mine.owner = &self;
    return HV_CALL(hv, domain_xml, err, &mine, xml);
}
int hv_define(struct hv *hv, const char *xml, struct agent_error *err)
{ return HV_CALL(hv, define, err, xml); }
int hv_start(struct hv *hv, const char *uuid, struct agent_error *err)
{ return HV_CALL(hv, start, err, uuid); }
int hv_shutdown(struct hv *hv, const char *uuid, struct agent_error *err)
{ return HV_CALL(hv, shutdown, err, uuid); }
int hv_destroy(struct hv *hv, const char *uuid, struct agent_error *err)
{ return HV_CALL(hv, destroy, err, uuid); }
int hv_reboot(struct hv *hv, const char *uuid, struct agent_error *err)
{ return HV_CALL(hv, reboot, err, uuid); }
int hv_reset(struct hv *hv, const char *uuid, struct agent_error *err)
{ return HV_CALL(hv, reset, err, uuid); }
int hv_undefine(struct hv *hv, const char *uuid, struct agent_error *err)
{ return HV_CALL(hv, undefine, err, uuid); }
int hv_power(struct hv *hv, const char *uuid, enum hv_power *ret, struct agent_error *err)
{ return HV_CALL(hv, power, err, uuid, ret); }
int hv_list(struct hv *hv, struct hv_domain **ret, size_t *n, struct agent_error *err)
{ return HV_CALL(hv, list, err, ret, n); }
int hv_host_info(struct hv *hv, struct hv_host_info *ret, struct agent_error *err)
{ return HV_CALL(hv, host_info, err, ret); }

void hv_host_info_release(struct hv_host_info *info)
{
    free(info->capabilities);
    info->capabilities = NULL;
}

void hv_domain_list_free(struct hv_domain *doms, size_t n)
{
    for (size_t i = 0; i < n; i++)
        instance_release(&doms[i].ident);
    free(doms);
}

const struct hv_driver *hv_driver_find(const char *name)
{
    if (!strcmp(name, "kvm") || !strcmp(name, "qemu"))
        return &hv_driver_kvm;
    if (!strcmp(name, "xen"))
        return &hv_driver_xen;
    if (!strcmp(name, "test"))
        return &hv_driver_test;
    return NULL;
}

/* ---- shared libvirt implementations ---- */

/* Look a domain up by UUID on the current connection. */
static int lookup(struct hv *hv, const char *uuid, virConnectPtr *conn, virDomainPtr *dom,
                  struct agent_error *err)
{
    int r = hv_conn_get(hv, conn, err);

    if (r < 0)
        return r;
    *dom = virDomainLookupByUUIDString(*conn, uuid);
    if (!*dom) {
        r = hv_libvirt_error(err, "no such domain");
        virConnectClose(*conn);
        return r;
    }
    return 0;
}

static void release(virConnectPtr conn, virDomainPtr dom)
{
    if (dom)
        virDomainFree(dom);
    if (conn)
        virConnectClose(conn);
}

int hv_lv_define(struct hv *hv, const char *xml, struct agent_error *err)
{
    virConnectPtr conn;
    virDomainPtr dom;
    int r = hv_conn_get(hv, &conn, err);

    if (r < 0)
        return r;
    /* libvirt parses the XML strictly either way; schema validation (RNG) would
     * cost ~10 ms a define */
    dom = virDomainDefineXMLFlags(conn, xml, 0);
    r = dom ? 0 : hv_libvirt_error(err, "cannot define the domain");
    release(conn, dom);
    return r;
}

/* Run one domain call; map "already in that state" to success where the
 * caller asks (idempotent steps: a resumed operation may repeat them). */
static int domain_call(struct hv *hv, const char *uuid, int (*fn)(virDomainPtr), const char *what,
                       int ok_if_code, struct agent_error *err)
{
    virConnectPtr conn;
    virDomainPtr dom;
    int r = lookup(hv, uuid, &conn, &dom, err);

    if (r < 0)
        return r;
    if (fn(dom) < 0) {
        virErrorPtr e = virGetLastError();
        if (ok_if_code && e && e->code == ok_if_code) {
            virResetLastError();
            r = 0;
        } else {
            r = hv_libvirt_error(err, what);
        }
    }
    release(conn, dom);
    return r;
}

static int call_create(virDomainPtr d) { return virDomainCreate(d); }
static int call_shutdown(virDomainPtr d) { return virDomainShutdown(d); }
static int call_resume(virDomainPtr d) { return virDomainResume(d); }
static int call_destroy(virDomainPtr d) { return virDomainDestroy(d); }
static int call_reboot(virDomainPtr d) { return virDomainReboot(d, 0); }
static int call_reset(virDomainPtr d) { return virDomainReset(d, 0); }
static int call_undefine(virDomainPtr d)
{
    /* the widest clean-up first; drivers without some flags (test, older
     * libxl) refuse them, so fall back to what every driver takes */
    static const unsigned int tries[] = {
        VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA |
            VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA | VIR_DOMAIN_UNDEFINE_NVRAM,
        VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA,
        0,
    };
    for (size_t i = 0; i < ARRAY_SIZE(tries); i++) {
        virErrorPtr e;
        if (virDomainUndefineFlags(d, tries[i]) == 0)
            return 0;
        e = virGetLastError();
        if (!e || (e->code != VIR_ERR_INVALID_ARG && e->code != VIR_ERR_NO_SUPPORT &&
                   e->code != VIR_ERR_ARGUMENT_UNSUPPORTED))
            return -1;
    }
    return -1;
}

int hv_lv_start(struct hv *hv, const char *uuid, struct agent_error *err)
{
    int r = domain_call(hv, uuid, call_create, "cannot start the domain", VIR_ERR_OPERATION_INVALID, err);
    enum hv_power p;
    struct agent_error ignored;

    /* already running is what we wanted (a start resumed after a crash);
     * QEMU says so with VIR_ERR_OPERATION_INVALID, the test driver with an
     * internal error: ask the state rather than trust the code */
    if (r < 0 && r != -ENOTCONN && r != -ENOENT && hv_power(hv, uuid, &p, &ignored) == 0 &&
        p == HV_POWER_RUNNING)
        return 0;
    /* Paused: a start that libvirtd did not finish (it starts QEMU with its
     * CPUs stopped and resumes them last; killed in between, it comes back
     * to a paused domain). The agent never pauses a guest, so finish it. */
    if (r == 0 && hv_power(hv, uuid, &p, &ignored) == 0 && p == HV_POWER_PAUSED)
        r = domain_call(hv, uuid, call_resume, "cannot resume the half-started domain", 0, err);
    return r;
}
int hv_lv_shutdown(struct hv *hv, const char *uuid, struct agent_error *err)
{ return domain_call(hv, uuid, call_shutdown, "cannot shut the domain down", 0, err); }
int hv_lv_destroy(struct hv *hv, const char *uuid, struct agent_error *err)
{ return domain_call(hv, uuid, call_destroy, "cannot stop the domain", VIR_ERR_OPERATION_INVALID, err); }
int hv_lv_reboot(struct hv *hv, const char *uuid, struct agent_error *err)
{ return domain_call(hv, uuid, call_reboot, "cannot reboot the domain", 0, err); }
int hv_lv_reset(struct hv *hv, const char *uuid, struct agent_error *err)
{ return domain_call(hv, uuid, call_reset, "cannot reset the domain", 0, err); }
int hv_lv_undefine(struct hv *hv, const char *uuid, struct agent_error *err)
{
    int r = domain_call(hv, uuid, call_undefine, "cannot undefine the domain", 0, err);
    return r == -ENOENT ? 0 : r; /* already gone is what we wanted */
}

enum hv_power hv_power_from_libvirt(int st)
{
    switch (st) {
    case VIR_DOMAIN_RUNNING:
    case VIR_DOMAIN_BLOCKED:
        return HV_POWER_RUNNING;
    case VIR_DOMAIN_PAUSED:
    case VIR_DOMAIN_PMSUSPENDED:
        return HV_POWER_PAUSED;
    case VIR_DOMAIN_SHUTDOWN:
        return HV_POWER_SHUTDOWN;
    case VIR_DOMAIN_SHUTOFF:
        return HV_POWER_SHUTOFF;
    case VIR_DOMAIN_CRASHED:
        return HV_POWER_CRASHED;
    default:
        return HV_POWER_NOSTATE;
    }
}

int hv_lv_power(struct hv *hv, const char *uuid, enum hv_power *ret, struct agent_error *err)
{
    virConnectPtr conn;
    virDomainPtr dom;
    int st, reason, r = lookup(hv, uuid, &conn, &dom, err);

    if (r < 0)
        return r;
    if (virDomainGetState(dom, &st, &reason, 0) < 0)
        r = hv_libvirt_error(err, "cannot read the domain state");
    else
        *ret = hv_power_from_libvirt(st);
    release(conn, dom);
    return r;
}

int hv_lv_list(struct hv *hv, struct hv_domain **ret, size_t *n, struct agent_error *err)
{
    virConnectPtr conn;
    virDomainPtr *doms = NULL;
    struct hv_domain *out;
    int count, r = hv_conn_get(hv, &conn, err);

    if (r < 0)
        return r;
    count = virConnectListAllDomains(conn, &doms, 0);
    if (count < 0) {
        r = hv_libvirt_error(err, "cannot list domains");
        virConnectClose(conn);
        return r;
    }
    out = calloc((size_t)count + 1, sizeof(*out));
    for (int i = 0; i < count; i++) {
        int st, reason;
        char *meta;
        if (out) {
            struct hv_domain *d = &out[i];
            virDomainGetUUIDString(doms[i], d->uuid);
            strscpy(d->name, virDomainGetName(doms[i]), sizeof(d->name));
            d->power = virDomainGetState(doms[i], &st, &reason, 0) == 0 ? hv_power_from_libvirt(st) : HV_POWER_NOSTATE;
            meta = virDomainGetMetadata(doms[i], VIR_DOMAIN_METADATA_ELEMENT, CA_XMLNS_URI, 0);
            if (meta) {
                struct agent_error perr = {0};
                d->ours = domxml_parse_metadata(meta, &d->ident, &d->owner, &perr) == 0;
                if (d->ours && strcmp(d->ident.uuid, d->uuid) != 0) {
                    d->ours = false;
                    instance_release(&d->ident);
                    snprintf(perr.message, sizeof(perr.message),
                             "metadata: uuid does not match the domain's");
                }
                if (!d->ours)
                    strscpy(d->meta_error, perr.message, sizeof(d->meta_error));
                free(meta);
            } else {
                virResetLastError();
            }
        }
        virDomainFree(doms[i]);
    }
    free(doms);
    virConnectClose(conn);
    if (!out)
        return -ENOMEM;
    *ret = out;
    *n = (size_t)count;
    return 0;
}

int hv_lv_host_info(struct hv *hv, struct hv_host_info *ret, struct agent_error *err)
{
    virConnectPtr conn;
    virNodeInfo info;
    int r = hv_conn_get(hv, &conn, err);

    if (r < 0)
        return r;
    memset(ret, 0, sizeof(*ret));
    if (virNodeGetInfo(conn, &info) < 0) {
        r = hv_libvirt_error(err, "cannot read the host's resources");
    } else {
        ret->cpus = info.cpus;
        ret->memory_mb = (int64_t)(info.memory / 1024);
        strscpy(ret->cpu_model, info.model, sizeof(ret->cpu_model));
        ret->capabilities = virConnectGetCapabilities(conn);
        if (!ret->capabilities)
            virResetLastError();
    }
    virConnectClose(conn);
    return r;
}
