/* libvirt-common.c: the libvirt calls every libvirt-backed driver shares
 * (hv_lv_*, put in the tables with HV_LIBVIRT_COMMON_OPS and by name). Each
 * takes a reference to the connection, looks the domain up by UUID, makes
 * one call and translates libvirt's error once (hv_libvirt_error). */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "agent/hypervisor/hv-internal.h"
#include "agent/hypervisor/stats.h"

int hv_lv_lookup(struct hv *hv, const char *uuid, virConnectPtr *conn, virDomainPtr *dom,
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

void hv_lv_release(virConnectPtr conn, virDomainPtr dom)
{
    if (dom)
        virDomainFree(dom);
    if (conn)
        virConnectClose(conn);
}

int hv_lv_define(struct hv *hv, const char *xml, unsigned flags, struct agent_error *err)
{
    virConnectPtr conn;
    virDomainPtr dom;
    int r = hv_conn_get(hv, &conn, err);

    (void)flags; /* none defined yet */
    if (r < 0)
        return r;
    /* libvirt parses the XML strictly either way; schema validation (RNG) would
     * cost ~10 ms a define */
    dom = virDomainDefineXMLFlags(conn, xml, 0);
    r = dom ? 0 : hv_libvirt_error(err, "cannot define the domain");
    hv_lv_release(conn, dom);
    return r;
}

/* Run one domain call; map "already in that state" to success where the
 * caller asks (idempotent steps: a resumed operation may repeat them). */
static int domain_call(struct hv *hv, const char *uuid, int (*fn)(virDomainPtr), const char *what,
                       int ok_if_code, struct agent_error *err)
{
    virConnectPtr conn;
    virDomainPtr dom;
    int r = hv_lv_lookup(hv, uuid, &conn, &dom, err);

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
    hv_lv_release(conn, dom);
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

int hv_lv_start(struct hv *hv, const char *uuid, unsigned flags, struct agent_error *err)
{
    int r = domain_call(hv, uuid, call_create, "cannot start the domain", VIR_ERR_OPERATION_INVALID, err);
    enum hv_power p;
    struct agent_error ignored;

    (void)flags;
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
/* The flags of these entries are all HV_CURRENT for now (none defined). */
int hv_lv_shutdown(struct hv *hv, const char *uuid, unsigned flags, struct agent_error *err)
{
    (void)flags;
    return domain_call(hv, uuid, call_shutdown, "cannot shut the domain down", 0, err);
}

int hv_lv_destroy(struct hv *hv, const char *uuid, unsigned flags, struct agent_error *err)
{
    (void)flags;
    return domain_call(hv, uuid, call_destroy, "cannot stop the domain", VIR_ERR_OPERATION_INVALID,
                       err);
}

int hv_lv_reboot(struct hv *hv, const char *uuid, unsigned flags, struct agent_error *err)
{
    (void)flags;
    return domain_call(hv, uuid, call_reboot, "cannot reboot the domain", 0, err);
}

int hv_lv_reset(struct hv *hv, const char *uuid, unsigned flags, struct agent_error *err)
{
    (void)flags;
    return domain_call(hv, uuid, call_reset, "cannot reset the domain", 0, err);
}

int hv_lv_undefine(struct hv *hv, const char *uuid, unsigned flags, struct agent_error *err)
{
    int r;

    (void)flags;
    r = domain_call(hv, uuid, call_undefine, "cannot undefine the domain", 0, err);
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

int hv_lv_power(struct hv *hv, const char *uuid, enum hv_power *ret, unsigned flags,
                struct agent_error *err)
{
    virConnectPtr conn;
    virDomainPtr dom;
    int st, reason, r = hv_lv_lookup(hv, uuid, &conn, &dom, err);

    (void)flags;
    if (r < 0)
        return r;
    if (virDomainGetState(dom, &st, &reason, 0) < 0)
        r = hv_libvirt_error(err, "cannot read the domain state");
    else
        *ret = hv_power_from_libvirt(st);
    hv_lv_release(conn, dom);
    return r;
}

int hv_lv_list(struct hv *hv, struct hv_domain **ret, size_t *n, unsigned flags,
               struct agent_error *err)
{
    virConnectPtr conn;
    virDomainPtr *doms = NULL;
    struct hv_domain *out;
    int count, r = hv_conn_get(hv, &conn, err);

    (void)flags;
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
                d->has_meta = hv_meta_parse(meta, &d->meta, &d->owner, &perr) == 0;
                if (!d->has_meta)
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

int hv_lv_host_info(struct hv *hv, struct hv_host_info *ret, unsigned flags,
                    struct agent_error *err)
{
    virConnectPtr conn;
    virNodeInfo info;
    char *caps;
    int r = hv_conn_get(hv, &conn, err);

    (void)flags;
    memset(ret, 0, sizeof(*ret));
    if (r < 0)
        return r;
    if (virNodeGetInfo(conn, &info) < 0) {
        r = hv_libvirt_error(err, "cannot read the host's resources");
        virConnectClose(conn);
        return r;
    }
    /* the capabilities only add detail: without them the host still has
     * its CPUs and memory */
    caps = virConnectGetCapabilities(conn);
    if (!caps)
        virResetLastError();
    else if (hv_caps_parse(caps, ret, NULL) < 0)
        memset(ret, 0, sizeof(*ret));
    free(caps);
    ret->cpus = info.cpus;
    ret->memory_mb = (int64_t)(hv_memory_total_kb(info.memory) / 1024); /* one figure: see stats.c */
    strscpy(ret->cpu_model, info.model, sizeof(ret->cpu_model));
    virConnectClose(conn);
    return 0;
}

/* ---- hot-plug ---- */

unsigned hv_lv_affect(unsigned flags)
{
    return (flags & HV_LIVE ? VIR_DOMAIN_AFFECT_LIVE : 0) |
           (flags & HV_CONFIG ? VIR_DOMAIN_AFFECT_CONFIG : 0);
}

int hv_lv_set_vcpus(struct hv *hv, const char *uuid, unsigned n, unsigned flags,
                    struct agent_error *err)
{
    virConnectPtr conn;
    virDomainPtr dom;
    unsigned lf = hv_lv_affect(flags) | (flags & HV_VCPU_MAXIMUM ? VIR_DOMAIN_VCPU_MAXIMUM : 0);
    int r = hv_lv_lookup(hv, uuid, &conn, &dom, err);

    if (r < 0)
        return r;
    if (!(flags & HV_VCPU_MAXIMUM)) {
        /* the ceiling and (live) the count now, to answer clearly */
        unsigned which = flags & HV_LIVE ? VIR_DOMAIN_AFFECT_LIVE : hv_lv_affect(flags);
        int max = virDomainGetVcpusFlags(dom, which | VIR_DOMAIN_VCPU_MAXIMUM);
        int now = flags & HV_LIVE ? virDomainGetVcpusFlags(dom, VIR_DOMAIN_AFFECT_LIVE) : -1;
        if (max < 0 || (flags & HV_LIVE && now < 0))
            virResetLastError(); /* e.g. not running: libvirt's own answer below */
        if (max > 0 && n > (unsigned)max)
            r = agent_error_set(err, ERANGE, "invalid_field", "vcpus",
                                "%u vCPUs is above the domain's ceiling of %d (a cold resize can raise it)",
                                n, max);
        else if (now > 0 && n < (unsigned)now && !hv_supports(hv, HV_FEAT_VCPU_UNPLUG))
            r = agent_error_set(err, ENOTSUP, "not_supported", "vcpus",
                                "the %s driver cannot remove vCPUs from a running domain (%d -> %u): "
                                "a cold resize can",
                                hv_driver_name(hv), now, n);
        if (r < 0) {
            hv_lv_release(conn, dom);
            return r;
        }
    }
    if (virDomainSetVcpusFlags(dom, n, lf) < 0)
        r = hv_libvirt_error(err, "cannot set the domain's vCPUs");
    hv_lv_release(conn, dom);
    return r;
}

int hv_lv_set_memory(struct hv *hv, const char *uuid, uint64_t mib, unsigned flags,
                     struct agent_error *err)
{
    virConnectPtr conn;
    virDomainPtr dom;
    unsigned lf = hv_lv_affect(flags) | (flags & HV_MEM_MAXIMUM ? VIR_DOMAIN_MEM_MAXIMUM : 0);
    int r;

    if (mib > (uint64_t)(ULONG_MAX / 1024))
        return agent_error_set(err, EINVAL, "invalid_field", "memory_mb", "memory too large");
    if ((r = hv_lv_lookup(hv, uuid, &conn, &dom, err)) < 0)
        return r;
    if (!(flags & HV_MEM_MAXIMUM)) {
        unsigned long max = virDomainGetMaxMemory(dom); /* KiB; 0 on error */
        if (!max)
            virResetLastError();
        if (max && mib * 1024 > max) {
            r = agent_error_set(err, ERANGE, "invalid_field", "memory_mb",
                                "%llu MiB is above the domain's memory ceiling of %lu MiB (a cold resize "
                                "can raise it)",
                                (unsigned long long)mib, max / 1024);
            hv_lv_release(conn, dom);
            return r;
        }
    }
    if (virDomainSetMemoryFlags(dom, (unsigned long)(mib * 1024), lf) < 0)
        r = hv_libvirt_error(err, "cannot set the domain's memory");
    hv_lv_release(conn, dom);
    return r;
}

/* Attach or detach: the same lookup, call and error around one libvirt entry. */
static int device_call(struct hv *hv, const char *uuid, const char *xml, unsigned flags,
                       int (*fn)(virDomainPtr, const char *, unsigned int), const char *what,
                       struct agent_error *err)
{
    virConnectPtr conn;
    virDomainPtr dom;
    int r = hv_lv_lookup(hv, uuid, &conn, &dom, err);

    if (r < 0)
        return r;
    if (fn(dom, xml, hv_lv_affect(flags)) < 0)
        r = hv_libvirt_error(err, what);
    hv_lv_release(conn, dom);
    return r;
}

int hv_lv_attach_device(struct hv *hv, const char *uuid, const char *xml, unsigned flags,
                        struct agent_error *err)
{
    return device_call(hv, uuid, xml, flags, virDomainAttachDeviceFlags, "cannot attach the device", err);
}

int hv_lv_detach_device(struct hv *hv, const char *uuid, const char *xml, unsigned flags,
                        struct agent_error *err)
{
    return device_call(hv, uuid, xml, flags, virDomainDetachDeviceFlags, "cannot detach the device", err);
}

/* ---- jobs ---- */

static bool param_ull(const virTypedParameter *params, int n, const char *name, uint64_t *v)
{
    unsigned long long x;

    if (virTypedParamsGetULLong((virTypedParameterPtr)params, n, name, &x) != 1)
        return false;
    *v = x;
    return true;
}

void hv_job_info_from_params(int type, const virTypedParameter *params, int n,
                             struct hv_job_info *ret)
{
    uint64_t v;

    memset(ret, 0, sizeof(*ret));
    switch (type) {
    case VIR_DOMAIN_JOB_BOUNDED: ret->type = HV_JOB_BOUNDED; break;
    case VIR_DOMAIN_JOB_UNBOUNDED: ret->type = HV_JOB_UNBOUNDED; break;
    case VIR_DOMAIN_JOB_COMPLETED: ret->type = HV_JOB_COMPLETED; break;
    case VIR_DOMAIN_JOB_FAILED: ret->type = HV_JOB_FAILED; break;
    case VIR_DOMAIN_JOB_CANCELLED: ret->type = HV_JOB_CANCELLED; break;
    default: ret->type = HV_JOB_NONE;
    }
    if (param_ull(params, n, VIR_DOMAIN_JOB_TIME_ELAPSED, &v))
        ret->elapsed_ms = v;
    ret->has_data = param_ull(params, n, VIR_DOMAIN_JOB_DATA_TOTAL, &ret->data_total);
    param_ull(params, n, VIR_DOMAIN_JOB_DATA_PROCESSED, &ret->data_processed);
    param_ull(params, n, VIR_DOMAIN_JOB_DATA_REMAINING, &ret->data_remaining);
    ret->has_memory = param_ull(params, n, VIR_DOMAIN_JOB_MEMORY_TOTAL, &ret->mem_total);
    param_ull(params, n, VIR_DOMAIN_JOB_MEMORY_PROCESSED, &ret->mem_processed);
    param_ull(params, n, VIR_DOMAIN_JOB_MEMORY_REMAINING, &ret->mem_remaining);
    param_ull(params, n, VIR_DOMAIN_JOB_MEMORY_DIRTY_RATE, &ret->mem_dirty_rate);
    param_ull(params, n, VIR_DOMAIN_JOB_MEMORY_ITERATION, &ret->mem_iteration);
    ret->has_downtime = param_ull(params, n, VIR_DOMAIN_JOB_DOWNTIME, &ret->downtime_ms);
    ret->has_disk = param_ull(params, n, VIR_DOMAIN_JOB_DISK_TOTAL, &ret->disk_total);
    param_ull(params, n, VIR_DOMAIN_JOB_DISK_PROCESSED, &ret->disk_processed);
    param_ull(params, n, VIR_DOMAIN_JOB_DISK_REMAINING, &ret->disk_remaining);
}

int hv_lv_job_info(struct hv *hv, const char *uuid, struct hv_job_info *ret, unsigned flags,
                   struct agent_error *err)
{
    virConnectPtr conn;
    virDomainPtr dom;
    virTypedParameterPtr params = NULL;
    int type, n = 0, r = hv_lv_lookup(hv, uuid, &conn, &dom, err);

    (void)flags;
    if (r < 0)
        return r;
    if (virDomainGetJobStats(dom, &type, &params, &n, 0) < 0) {
        r = hv_libvirt_error(err, "cannot read the domain's job");
    } else {
        hv_job_info_from_params(type, params, n, ret);
        virTypedParamsFree(params, n);
    }
    hv_lv_release(conn, dom);
    return r;
}

static int call_abort(virDomainPtr d) { return virDomainAbortJob(d); }
static int call_postcopy(virDomainPtr d) { return virDomainMigrateStartPostCopy(d, 0); }

int hv_lv_job_abort(struct hv *hv, const char *uuid, unsigned flags, struct agent_error *err)
{
    (void)flags;
    return domain_call(hv, uuid, call_abort, "cannot abort the domain's job", 0, err);
}

int hv_lv_migrate_postcopy(struct hv *hv, const char *uuid, unsigned flags,
                           struct agent_error *err)
{
    (void)flags;
    return domain_call(hv, uuid, call_postcopy, "cannot switch the migration to post-copy", 0, err);
}
