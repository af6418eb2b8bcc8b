/* Unit tests of the hypervisor layer: the driver registry and each driver's
 * feature bits, the -ENOTSUP answers of missing entries, the hot-plug
 * entries on libvirt's test:///default, the domain XML element writers (and
 * every driver's document against libvirt's schema with virt-xml-validate,
 * when installed), the capabilities parser (a real `virsh capabilities` of
 * the private libvirtd, libvirt's test driver, a Xen sample) and the
 * layer's worker threads. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "agent/guest.h"
#include "agent/hypervisor/hv-internal.h"
#include "scheduler-client/placement.h"

extern char **environ;

#define DATA "tests/unit/data/"

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "re");
    char *buf;
    long n;

    if (!f)
        fail_msg("cannot open %s (tests run from the source tree)", path);
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = calloc(1, (size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    return buf;
}

/* ---- a loop with a deadline ---- */

struct deadline {
    uv_timer_t timer;
    bool expired;
};

static void on_deadline(uv_timer_t *t)
{
    ((struct deadline *)t->data)->expired = true;
}

/* Run loop until *count reaches want or 10 s pass. */
static void run_until(uv_loop_t *loop, const int *count, int want)
{
    struct deadline d = {.expired = false};

    uv_timer_init(loop, &d.timer);
    d.timer.data = &d;
    uv_timer_start(&d.timer, on_deadline, 10000, 0);
    while (*count < want && !d.expired)
        uv_run(loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&d.timer, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
    if (*count < want)
        fail_msg("deadline: %d of %d", *count, want);
}

static struct hv *hv_for(uv_loop_t *loop, const struct hv_driver *drv, unsigned workers)
{
    struct hv_config cfg = {.domain_type = "auto", .host_name = "node-1", .workers = workers};
    struct hv *hv = NULL;

    assert_int_equal(hv_new(loop, drv, &cfg, NULL, NULL, &hv), 0);
    return hv;
}

static void hv_done(uv_loop_t *loop, struct hv *hv)
{
    hv_free(hv);
    uv_run(loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(loop), 0);
}

/* ---- the registry and the features ---- */

static void test_registry(void **state)
{
    (void)state;
    assert_ptr_equal(hv_driver_find("kvm"), &hv_driver_kvm);
    assert_ptr_equal(hv_driver_find("qemu"), &hv_driver_kvm);
    assert_ptr_equal(hv_driver_find("xen"), &hv_driver_xen);
    assert_ptr_equal(hv_driver_find("test"), &hv_driver_test);
    assert_null(hv_driver_find("vmware"));
    assert_null(hv_driver_find(""));
    assert_null(hv_driver_find(NULL));
    assert_string_equal(hv_driver_xen.default_uri, "xen:///system");
    assert_string_equal(hv_driver_kvm.default_uri, "qemu:///system");
    assert_string_equal(hv_driver_test.default_uri, "test:///default");
}

static void test_features(void **state)
{
    static const struct {
        const struct hv_driver *drv;
        enum hv_feature f;
        bool on;
    } want[] = {
        {&hv_driver_kvm, HV_FEAT_DISK_FILES, true},    {&hv_driver_kvm, HV_FEAT_REBOOT_EVENT, true},
        {&hv_driver_kvm, HV_FEAT_RESET, true},         {&hv_driver_kvm, HV_FEAT_VCPU_HOTPLUG, true},
        {&hv_driver_kvm, HV_FEAT_MEM_HOTPLUG, true},   {&hv_driver_kvm, HV_FEAT_NIC_HOTPLUG, true},
        {&hv_driver_kvm, HV_FEAT_JOB_STATS, true},     {&hv_driver_kvm, HV_FEAT_LIVE_MIGRATE, true},
        {&hv_driver_kvm, HV_FEAT_POSTCOPY, true},     {&hv_driver_kvm, HV_FEAT_ROOTFS_DIR, false},
        {&hv_driver_xen, HV_FEAT_DISK_FILES, true},    {&hv_driver_xen, HV_FEAT_REBOOT_EVENT, true},
        {&hv_driver_xen, HV_FEAT_RESET, true},         {&hv_driver_xen, HV_FEAT_VCPU_HOTPLUG, false},
        {&hv_driver_xen, HV_FEAT_MEM_HOTPLUG, false},  {&hv_driver_xen, HV_FEAT_LIVE_MIGRATE, false},
        {&hv_driver_test, HV_FEAT_DISK_FILES, false},  {&hv_driver_test, HV_FEAT_REBOOT_EVENT, false},
        {&hv_driver_test, HV_FEAT_RESET, false},       {&hv_driver_test, HV_FEAT_VCPU_HOTPLUG, true},
        {&hv_driver_test, HV_FEAT_MEM_HOTPLUG, true},  {&hv_driver_test, HV_FEAT_NIC_HOTPLUG, false},
        {&hv_driver_test, HV_FEAT_LIVE_MIGRATE, false},
    };
    uv_loop_t loop;

    (void)state;
    assert_int_equal(uv_loop_init(&loop), 0);
    for (size_t i = 0; i < ARRAY_SIZE(want); i++) {
        struct hv *hv = hv_for(&loop, want[i].drv, 1);
        if (hv_supports(hv, want[i].f) != want[i].on)
            fail_msg("%s %s: want %d", want[i].drv->name, hv_feature_name(want[i].f), want[i].on);
        assert_false(hv_supports(hv, HV_FEAT__COUNT));
        assert_false(hv_supports(hv, (enum hv_feature)99));
        hv_free(hv);
        uv_run(&loop, UV_RUN_DEFAULT);
    }
    assert_string_equal(hv_feature_name(HV_FEAT_VCPU_HOTPLUG), "vcpu_hotplug");
    assert_string_equal(hv_feature_name(HV_FEAT__COUNT), "?");
    /* a probe may take a feature away on this host */
    {
        struct hv *hv = hv_for(&loop, &hv_driver_kvm, 1);
        hv_clear_features(hv, HV_FEAT_BIT(HV_FEAT_MEM_HOTPLUG));
        assert_false(hv_supports(hv, HV_FEAT_MEM_HOTPLUG));
        assert_true(hv_supports(hv, HV_FEAT_VCPU_HOTPLUG));
        hv_done(&loop, hv);
    }
}

static void expect_enotsup(int r, const struct agent_error *err, const char *drv, const char *what)
{
    assert_int_equal(r, -ENOTSUP);
    assert_string_equal(err->code, "not_supported");
    if (!strstr(err->message, drv) || !strstr(err->message, what))
        fail_msg("message does not name %s and %s: %s", drv, what, err->message);
}

static void test_enotsup(void **state)
{
    uv_loop_t loop;
    struct hv *t, *k, *x;
    struct agent_error err;
    struct hv_job_info ji;
    struct hv_nic nic = {.mac = "52:54:00:00:00:01", .bridge = "br0"};
    struct hv_device dev = {.kind = HV_DEVICE_NIC, .nic = &nic};
    struct hv_migrate_params mp = {.dest_uri = "qemu+tcp://b/system"};
    const char *u = "0d8f7a34-8a47-4a59-9d3a-2b1e8c9b0f11";

    (void)state;
    assert_int_equal(uv_loop_init(&loop), 0);
    t = hv_for(&loop, &hv_driver_test, 1);
    k = hv_for(&loop, &hv_driver_kvm, 1);
    x = hv_for(&loop, &hv_driver_xen, 1);
    /* answered before any connection is needed */
    expect_enotsup(hv_reset(t, u, &err), &err, "test", "reset");
    expect_enotsup(hv_attach_device(t, u, &dev, HV_LIVE, &err), &err, "test", "attach_device");
    expect_enotsup(hv_detach_device(t, u, &dev, HV_LIVE, &err), &err, "test", "detach_device");
    expect_enotsup(hv_job_info(t, u, &ji, &err), &err, "test", "job_info");
    expect_enotsup(hv_job_abort(t, u, &err), &err, "test", "job_abort");
    expect_enotsup(hv_migrate(t, u, &mp, HV_MIGRATE_LIVE, &err), &err, "test", "migrate");
    expect_enotsup(hv_migrate_set_max_downtime(t, u, 300, &err), &err, "test", "migrate_set_max_downtime");
    expect_enotsup(hv_migrate(x, u, &mp, 0, &err), &err, "xen", "migrate");
    expect_enotsup(hv_migrate_postcopy(x, u, &err), &err, "xen", "migrate_postcopy");
    expect_enotsup(hv_migrate_postcopy(t, u, &err), &err, "test", "migrate_postcopy");
    /* entries a driver has need the connection */
    assert_int_equal(hv_set_vcpus(k, u, 2, HV_LIVE, &err), -ENOTCONN);
    assert_int_equal(hv_job_abort(k, u, &err), -ENOTCONN);
    assert_int_equal(hv_migrate_postcopy(k, u, &err), -ENOTCONN);
    assert_int_equal(hv_migrate(k, u, &mp, HV_MIGRATE_LIVE, &err), -ENOTCONN);
    assert_int_equal(hv_migrate_set_max_downtime(k, u, 300, &err), -ENOTCONN);
    hv_free(t);
    hv_free(k);
    hv_done(&loop, x);
}

/* ---- on test:///default ---- */

static void make(struct instance *i, const char *uuid)
{
    memset(i, 0, sizeof(*i));
    strscpy(i->uuid, uuid, sizeof(i->uuid));
    strscpy(i->ec2_id, "i-00000000000000ab1", sizeof(i->ec2_id));
    i->name = strdup("hot <plug>");
    i->flavor = (struct flavor){2, 512, 1};
    i->boot.kind = BOOT_KERNEL;
    i->boot.kernel = strdup("/k/vmlinuz");
}

static unsigned vcpus_now(struct hv *hv, const char *uuid, unsigned flags)
{
    virConnectPtr c;
    virDomainPtr d;
    int n;

    assert_int_equal(hv_conn_get(hv, &c, NULL), 0);
    d = virDomainLookupByUUIDString(c, uuid);
    assert_non_null(d);
    n = virDomainGetVcpusFlags(d, (int)flags);
    virDomainFree(d);
    virConnectClose(c);
    assert_true(n > 0);
    return (unsigned)n;
}

static uint64_t memory_now_mib(struct hv *hv, const char *uuid)
{
    virConnectPtr c;
    virDomainPtr d;
    virDomainInfo info;

    assert_int_equal(hv_conn_get(hv, &c, NULL), 0);
    d = virDomainLookupByUUIDString(c, uuid);
    assert_non_null(d);
    assert_int_equal(virDomainGetInfo(d, &info), 0);
    virDomainFree(d);
    virConnectClose(c);
    return info.memory / 1024;
}

static void test_test_driver_live(void **state)
{
    const char *u = "6a1f3c52-0b6e-4d5a-9f59-1c7f2b3e4d01";
    uv_loop_t loop;
    struct hv *hv;
    struct agent_error err;
    struct instance inst;
    struct guest gs;
    struct hv_guest g;
    struct hv_host_info info;
    char *xml = NULL, arch[16];

    (void)state;
    assert_int_equal(uv_loop_init(&loop), 0);
    hv = hv_for(&loop, &hv_driver_test, 2);
    if (hv_connect(hv, &err) < 0)
        fail_msg("connect: %s", err.message);
    assert_string_equal(hv_domain_type(hv), "test");
    hv_guest_arch(hv, arch);
    assert_string_equal(arch, "i686"); /* what the test driver's host says */
    assert_int_equal(hv_host_info(hv, &info, &err), 0);
    assert_int_equal(info.cpus, 16);
    assert_string_equal(info.arch, "i686");
    assert_int_equal(info.n_cells, 2);
    assert_true(hv_caps_offers(&info, "hvm", "i686", "test"));
    hv_host_info_release(&info);

    make(&inst, u);
    g = *guest_describe(&inst, NULL, &gs);
    g.max_vcpus = 4;          /* headroom, as resize will ask */
    g.max_memory_mib = 1024;
    assert_int_equal(hv_domain_xml(hv, &g, &xml, &err), 0);
    assert_non_null(strstr(xml, "<vcpu placement=\"static\" current=\"2\">4</vcpu>"));
    assert_non_null(strstr(xml, "<currentMemory unit=\"MiB\">512</currentMemory>"));
    assert_non_null(strstr(xml, "<ca:host name=\"node-1\"/>")); /* the test driver has no host UUID */
    assert_int_equal(hv_define(hv, xml, &err), 0);
    free(xml);
    assert_int_equal(hv_start(hv, u, &err), 0);
    assert_int_equal(vcpus_now(hv, u, VIR_DOMAIN_AFFECT_LIVE), 2);
    assert_int_equal(vcpus_now(hv, u, VIR_DOMAIN_AFFECT_LIVE | VIR_DOMAIN_VCPU_MAXIMUM), 4);

    if (hv_set_vcpus(hv, u, 3, HV_LIVE, &err) < 0)
        fail_msg("set_vcpus: %s", err.message);
    assert_int_equal(vcpus_now(hv, u, VIR_DOMAIN_AFFECT_LIVE), 3);
    /* beyond the maximum: libvirt refuses, we say so */
    assert_true(hv_set_vcpus(hv, u, 8, HV_LIVE, &err) < 0);
    assert_true(err.message[0] != '\0');
    if (hv_set_memory(hv, u, 768, HV_LIVE, &err) < 0)
        fail_msg("set_memory: %s", err.message);
    assert_int_equal(memory_now_mib(hv, u), 768);
    assert_int_equal(hv_set_vcpus(hv, "00000000-0000-0000-0000-000000000000", 1, HV_LIVE, &err),
                     -ENOENT);
    /* issue 12: the size read back, both ways live, ceilings refused, metadata rewritten */
    {
        struct hv_size sz;
        struct hv_domain *doms = NULL;
        size_t n = 0;
        const struct hv_meta_item items[] = {{.name = "flavor", .text = "m5.large"}};
        struct hv_guest mg = g;
        bool seen = false;
        assert_int_equal(hv_get_size(hv, u, &sz, &err), 0);
        assert_int_equal(sz.vcpus, 3);
        assert_int_equal(sz.max_vcpus, 4);
        assert_int_equal(sz.memory_mib, 768);
        assert_int_equal(sz.max_memory_mib, 1024);
        assert_true(sz.live_vcpus && sz.live_memory);
        assert_true(hv_supports(hv, HV_FEAT_VCPU_UNPLUG));
        if (hv_set_vcpus(hv, u, 1, HV_LIVE | HV_CONFIG, &err) < 0)
            fail_msg("set_vcpus down: %s", err.message);
        if (hv_set_memory(hv, u, 256, HV_LIVE | HV_CONFIG, &err) < 0) /* one call each for the test driver */
            fail_msg("set_memory LIVE|CONFIG: %s", err.message);
        assert_int_equal(hv_get_size(hv, u, &sz, &err), 0);
        assert_int_equal(sz.vcpus, 1);
        assert_int_equal(sz.memory_mib, 256);
        assert_int_equal(hv_set_memory(hv, u, 2048, HV_LIVE, &err), -ERANGE);
        assert_string_equal(err.field, "memory_mb");
        assert_int_equal(hv_set_vcpus(hv, u, 5, HV_LIVE, &err), -ERANGE);
        assert_string_equal(err.field, "vcpus");
        assert_int_equal(hv_get_size(hv, u, &sz, &err), 0);
        assert_true(sz.vcpus == 1 && sz.memory_mib == 256); /* nothing changed */
        mg.meta = items;
        mg.n_meta = 1;
        if (hv_set_metadata(hv, &mg, HV_LIVE | HV_CONFIG, &err) < 0)
            fail_msg("set_metadata: %s", err.message);
        assert_int_equal(hv_list(hv, &doms, &n, &err), 0);
        for (size_t k = 0; k < n; k++) {
            const struct hv_meta_entry *e;
            if (strcmp(doms[k].uuid, u) != 0)
                continue;
            assert_true(doms[k].has_meta);
            e = hv_meta_get(&doms[k].meta, "flavor", NULL);
            assert_non_null(e);
            assert_string_equal(e->text, "m5.large");
            assert_null(hv_meta_get(&doms[k].meta, "uuid", NULL)); /* replaced, not merged */
            assert_string_equal(doms[k].owner.host, "node-1");
            seen = true;
        }
        hv_domain_list_free(doms, n);
        assert_true(seen);
        assert_int_equal(hv_get_size(hv, "00000000-0000-0000-0000-000000000000", &sz, &err), -ENOENT);
    }

    assert_int_equal(hv_destroy(hv, u, &err), 0);
    assert_int_equal(hv_undefine(hv, u, &err), 0);
    instance_release(&inst);
    hv_done(&loop, hv);
}

/* ---- element writers ---- */

static char *one(int (*fn)(struct domxml *, const void *), const void *arg)
{
    struct domxml d = {0};
    char *xml = NULL;
    int failed = domxml_begin(&d, NULL) || fn(&d, arg);

    assert_int_equal(domxml_end(&d, failed, &xml, NULL), 0);
    return xml;
}

static int w_disk(struct domxml *d, const void *a) { return domxml_disk(d, a, "vdb", "virtio"); }
static int w_cdrom(struct domxml *d, const void *a) { return domxml_cdrom(d, a, "hdc", "ide"); }
static int w_nic(struct domxml *d, const void *a) { return domxml_nic(d, a, "virtio"); }
static int w_fs(struct domxml *d, const void *a) { return domxml_filesystem(d, a, "/", true); }
static int w_console(struct domxml *d, const void *a) { return domxml_console(d, a, "serial"); }
static int w_vcpu(struct domxml *d, const void *a) { (void)a; return domxml_vcpu(d, 2, 8); }
static int w_vcpu_same(struct domxml *d, const void *a) { (void)a; return domxml_vcpu(d, 2, 2); }
static int w_mem(struct domxml *d, const void *a) { (void)a; return domxml_memory(d, 512, 2048); }
static int w_meta(struct domxml *d, const void *a) { return domxml_metadata(d, a); }
static int w_os(struct domxml *d, const void *a)
{
    const struct domxml_os os = {.type = "exe"};
    return domxml_os(d, &os, a);
}

static void expect_has(const char *xml, const char *s)
{
    if (!strstr(xml, s))
        fail_msg("missing %s in:\n%s", s, xml);
}

static void test_element_writers(void **state)
{
    const struct hv_disk eph = {.role = HV_DISK_EPHEMERAL, .path = "/s/eph&1.raw"};
    const struct hv_disk cfg = {.role = HV_DISK_CONFIG, .path = "/s/config.iso", .format = "raw"};
    const struct hv_nic br = {.mac = "52:54:00:aa:bb:cc", .bridge = "br-<x>", .mtu = 1450};
    const struct hv_nic tap = {.tap = "tap7", .model = "e1000"};
    const struct hv_boot init = {.kind = HV_BOOT_INIT, .init = "/sbin/init"};
    const struct hv_owner own = {"node-1", ""};
    const struct hv_meta_item items[] = {
        {.name = "uuid", .text = "u"},
        {.name = "flavor", .attrs = {{"vcpus", "2"}, {"type", NULL}, {"disk_gb", "1"}}},
    };
    const struct hv_guest g = {.meta = items, .n_meta = 2, .owner = &own};
    char *x, buf[8];

    (void)state;
    x = one(w_disk, &eph);
    expect_has(x, "<disk type=\"file\" device=\"disk\">");
    expect_has(x, "<driver name=\"qemu\" type=\"raw\"/>");
    expect_has(x, "<source file=\"/s/eph&amp;1.raw\"/>");
    expect_has(x, "<target dev=\"vdb\" bus=\"virtio\"/>");
    assert_null(strstr(x, "readonly"));
    free(x);
    x = one(w_cdrom, &cfg);
    expect_has(x, "device=\"cdrom\"");
    expect_has(x, "<target dev=\"hdc\" bus=\"ide\"/>");
    expect_has(x, "<readonly/>");
    free(x);
    x = one(w_nic, &br);
    expect_has(x, "<interface type=\"bridge\">");
    expect_has(x, "<mac address=\"52:54:00:aa:bb:cc\"/>");
    expect_has(x, "<source bridge=\"br-&lt;x&gt;\"/>");
    expect_has(x, "<model type=\"virtio\"/>");
    expect_has(x, "<mtu size=\"1450\"/>");
    free(x);
    x = one(w_nic, &tap);
    expect_has(x, "<interface type=\"ethernet\">");
    expect_has(x, "<target dev=\"tap7\" managed=\"no\"/>");
    expect_has(x, "<model type=\"e1000\"/>");
    assert_null(strstr(x, "<mac"));
    assert_null(strstr(x, "<mtu"));
    free(x);
    x = one(w_fs, "/var/lib/rootfs/u");
    expect_has(x, "<filesystem type=\"mount\" accessmode=\"passthrough\">");
    expect_has(x, "<source dir=\"/var/lib/rootfs/u\"/>");
    expect_has(x, "<target dir=\"/\"/>");
    expect_has(x, "<readonly/>");
    free(x);
    x = one(w_console, "/s/console.log");
    /* a pty (virsh console), logged once, by the serial port the console aliases */
    expect_has(x, "<serial type=\"pty\">\n <log file=\"/s/console.log\" append=\"on\"/>\n <target port=\"0\"/>");
    expect_has(x, "<console type=\"pty\">\n <target type=\"serial\" port=\"0\"/>");
    free(x);
    x = one(w_vcpu, NULL);
    expect_has(x, "<vcpu placement=\"static\" current=\"2\">8</vcpu>");
    free(x);
    x = one(w_vcpu_same, NULL);
    expect_has(x, "<vcpu placement=\"static\">2</vcpu>");
    free(x);
    x = one(w_mem, NULL);
    expect_has(x, "<memory unit=\"MiB\">2048</memory>");
    expect_has(x, "<currentMemory unit=\"MiB\">512</currentMemory>");
    free(x);
    x = one(w_meta, &g);
    expect_has(x, "<ca:instance xmlns:ca=\"" CA_XMLNS_URI "\">");
    expect_has(x, "<ca:uuid>u</ca:uuid>");
    expect_has(x, "<ca:flavor vcpus=\"2\" disk_gb=\"1\"/>"); /* NULL values left out */
    expect_has(x, "<ca:host name=\"node-1\"/>");
    free(x);
    x = one(w_os, &init);
    expect_has(x, "<type>exe</type>");
    expect_has(x, "<init>/sbin/init</init>");
    free(x);
    assert_int_equal(domxml_disk_name("vd", 0, buf), 0);
    assert_string_equal(buf, "vda");
    assert_int_equal(domxml_disk_name("xvd", 25, buf), 0);
    assert_string_equal(buf, "xvdz");
    assert_int_equal(domxml_disk_name("vd", 26, buf), 0);
    assert_string_equal(buf, "vdaa");
    assert_int_equal(domxml_disk_name("vd", 26 + 26 * 26, buf), -1);
}

/* virt-xml-validate FILE domain: 1 valid, 0 invalid, -1 not installed. */
static int validate(const char *xml, const char *what)
{
    char path[] = "/tmp/test_hv-XXXXXX";
    char *argv[] = {"virt-xml-validate", path, (char *)what, NULL};
    posix_spawn_file_actions_t fa;
    int fd = mkstemp(path), st = 0;
    pid_t pid;
    size_t n = strlen(xml);

    assert_true(fd >= 0);
    assert_int_equal(write(fd, xml, n), (ssize_t)n);
    close(fd);
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    if (posix_spawnp(&pid, "virt-xml-validate", &fa, NULL, argv, environ) != 0) {
        posix_spawn_file_actions_destroy(&fa);
        unlink(path);
        return -1;
    }
    posix_spawn_file_actions_destroy(&fa);
    assert_int_equal(waitpid(pid, &st, 0), pid);
    unlink(path);
    if (WIFEXITED(st) && WEXITSTATUS(st) == 127)
        return -1;
    return WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

/* A guest with everything today's drivers write: root and ephemeral disks,
 * a config drive, two NICs, a console log, headroom. */
static void full_guest(struct instance *inst, struct guest *gs, struct hv_guest *g, bool kernel)
{
    static const struct hv_nic nics[] = {
        {.mac = "52:54:00:12:34:56", .bridge = "br0", .mtu = 1500},
        {.mac = "52:54:00:12:34:57", .tap = "tap1"},
    };

    make(inst, "3b0e1f2a-5c6d-4e7f-8a9b-0c1d2e3f4a5b");
    if (!kernel) {
        inst->boot.kind = BOOT_IMAGE;
        inst->boot.image_path = strdup("/images/base.qcow2");
    }
    inst->disk_path = strdup("/s/disk.qcow2");
    inst->console_log = strdup("/s/console.log");
    *g = *guest_describe(inst, "qcow2", gs);
    gs->disks[g->n_disks++] = (struct hv_disk){.role = HV_DISK_EPHEMERAL, .path = "/s/eph.raw"};
    gs->disks[g->n_disks++] = (struct hv_disk){.role = HV_DISK_CONFIG, .path = "/s/config.iso"};
    g->disks = gs->disks;
    g->nics = nics;
    g->n_nics = ARRAY_SIZE(nics);
    g->max_vcpus = 4;
    g->max_memory_mib = 2048;
}

static void test_schema(void **state)
{
    static const struct {
        const struct hv_driver *drv;
        const char *type;
        bool kernel;
        const char *expect; /* a string the document must hold */
    } docs[] = {
        {&hv_driver_kvm, "kvm", false, "<target dev=\"hdc\" bus=\"ide\"/>"},
        {&hv_driver_kvm, "qemu", true, "<target dev=\"vdb\" bus=\"virtio\"/>"},
        {&hv_driver_xen, "xen", false, "<memballoon model=\"xen\"/>"},
        {&hv_driver_xen, "xen", true, "<target dev=\"xvdc\" bus=\"xen\"/>"}, /* PV config drive */
        {&hv_driver_test, "test", false, "<memballoon model=\"none\"/>"},
    };
    uv_loop_t loop;
    int checked = 0;

    (void)state;
    assert_int_equal(uv_loop_init(&loop), 0);
    for (size_t i = 0; i < ARRAY_SIZE(docs); i++) {
        struct hv *hv = hv_for(&loop, docs[i].drv, 1);
        struct instance inst;
        struct guest gs;
        struct hv_guest g;
        struct agent_error err;
        char *xml = NULL;
        int v;

        hv_set_domain_type(hv, docs[i].type, "unit test");
        full_guest(&inst, &gs, &g, docs[i].kernel);
        assert_int_equal(hv_domain_xml(hv, &g, &xml, &err), 0);
        expect_has(xml, docs[i].expect);
        expect_has(xml, "<interface type=\"ethernet\">");
        if (docs[i].drv == &hv_driver_xen)
            assert_null(strstr(xml, "virtio")); /* libxl refuses virtio devices */
        v = validate(xml, "domain");
        if (v == 0)
            fail_msg("%s XML does not validate:\n%s", docs[i].drv->name, xml);
        checked += v == 1;
        free(xml);
        instance_release(&inst);
        hv_free(hv);
        uv_run(&loop, UV_RUN_DEFAULT);
    }
    {
        /* a container document from the same writers (the LXC driver to come) */
        const struct hv_boot init = {.kind = HV_BOOT_INIT, .init = "/sbin/init"};
        const struct domxml_os os = {.type = "exe", .arch = "x86_64"};
        const struct hv_guest g = {.uuid = "3b0e1f2a-5c6d-4e7f-8a9b-0c1d2e3f4a5c", .name = "c1",
                                   .vcpus = 1, .memory_mib = 128};
        struct domxml d = {0};
        char *xml = NULL;
        int failed = domxml_begin(&d, "lxc") || domxml_identity(&d, &g) ||
                     domxml_memory(&d, 128, 128) || domxml_vcpu(&d, 1, 1) ||
                     domxml_os(&d, &os, &init) || domxml_start(&d, "devices") ||
                     domxml_filesystem(&d, "/s/rootfs", "/", false) ||
                     domxml_console(&d, "/s/console.log", "lxc") || domxml_close(&d);
        assert_int_equal(domxml_end(&d, failed, &xml, NULL), 0);
        if (validate(xml, "domain") == 0)
            fail_msg("container XML does not validate:\n%s", xml);
        free(xml);
    }
    if (!checked)
        print_message("virt-xml-validate not installed: documents not checked against the schema\n");
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* ---- the device XML for attach/detach ---- */

static void test_device_xml(void **state)
{
    const struct hv_nic nic = {.mac = "52:54:00:00:00:09", .bridge = "br0"};
    const struct hv_disk disk = {.role = HV_DISK_EPHEMERAL, .path = "/s/e.raw"};
    const struct hv_device dn = {.kind = HV_DEVICE_NIC, .nic = &nic};
    const struct hv_device dd = {.kind = HV_DEVICE_DISK, .disk = &disk, .disk_index = 1};
    const struct hv_device none = {.kind = HV_DEVICE_DISK};
    uv_loop_t loop;
    struct hv *hv;
    struct agent_error err;
    char *xml = NULL;

    (void)state;
    assert_int_equal(uv_loop_init(&loop), 0);
    hv = hv_for(&loop, &hv_driver_kvm, 1);
    assert_int_equal(hv_device_xml(hv, &dn, &xml, &err), 0);
    expect_has(xml, "<interface type=\"bridge\">");
    expect_has(xml, "<model type=\"virtio\"/>");
    assert_null(strstr(xml, "<domain"));
    free(xml);
    assert_int_equal(hv_device_xml(hv, &dd, &xml, &err), 0);
    expect_has(xml, "<target dev=\"vdb\" bus=\"virtio\"/>");
    free(xml);
    assert_int_equal(hv_device_xml(hv, &none, &xml, &err), -EINVAL);
    hv_done(&loop, hv);
}

/* ---- capabilities ---- */

static bool has_feature(const struct hv_host_info *h, const char *name)
{
    for (size_t i = 0; i < h->n_cpu_features; i++)
        if (!strcmp(h->cpu_features[i], name))
            return true;
    return false;
}

static void test_caps_qemu(void **state)
{
    char *xml = slurp(DATA "caps-qemu-x86_64.xml");
    struct hv_host_info h;
    struct agent_error err;

    (void)state;
    assert_int_equal(hv_caps_parse(xml, &h, &err), 0);
    assert_string_equal(h.arch, "x86_64");
    assert_string_equal(h.cpu_name, "kvm64");
    assert_string_equal(h.cpu_vendor, "AMD");
    assert_string_equal(h.host_uuid, "f0890abe-ec77-4c00-b5d2-e013991a3af1");
    assert_int_equal(h.n_cpu_features, 69);
    assert_true(has_feature(&h, "sse4.2"));
    assert_true(has_feature(&h, "avx2"));
    assert_true(has_feature(&h, "virt-ssbd"));
    assert_int_equal(h.n_cells, 1);
    assert_int_equal(h.cells[0].id, 0);
    assert_int_equal(h.cells[0].memory_mb, 5727992 / 1024);
    assert_int_equal(h.cells[0].cpus, 2);
    assert_int_equal(h.n_guests, 2);
    assert_true(hv_caps_offers(&h, "hvm", "x86_64", "kvm"));
    assert_true(hv_caps_offers(&h, "hvm", "i686", "qemu"));
    assert_true(hv_caps_offers(&h, "hvm", NULL, NULL));
    assert_false(hv_caps_offers(&h, "hvm", "aarch64", NULL));
    assert_false(hv_caps_offers(&h, "xen", "x86_64", NULL));
    assert_false(hv_caps_offers(&h, "hvm", "x86_64", "xen"));
    {
        /* and the traits Placement gets from them */
        char **traits = NULL;
        size_t n = 0;
        assert_int_equal(placement_traits_from_cpu(h.arch, (const char *const *)h.cpu_features,
                                                   h.n_cpu_features, "qemu", &traits, &n, &err),
                         0);
        assert_true(n > 20);
        assert_string_equal(traits[0], "CUSTOM_HYPERVISOR_QEMU");
        placement_traits_free(traits, n);
    }
    hv_host_info_release(&h);
    hv_host_info_release(&h); /* zeroed: again is harmless */
    free(xml);
}

static void test_caps_test_and_xen(void **state)
{
    char *xml = slurp(DATA "caps-test.xml");
    struct hv_host_info h;

    (void)state;
    assert_int_equal(hv_caps_parse(xml, &h, NULL), 0);
    assert_string_equal(h.arch, "i686");
    assert_string_equal(h.host_uuid, ""); /* the test driver has none */
    assert_int_equal(h.n_cpu_features, 0);
    assert_int_equal(h.n_cells, 2);
    assert_int_equal(h.cells[1].id, 1);
    assert_int_equal(h.cells[1].memory_mb, 4096);
    assert_int_equal(h.cells[1].cpus, 8);
    assert_true(hv_caps_offers(&h, "hvm", "i686", "test"));
    assert_true(hv_caps_offers(&h, "xen", "i686", "test"));
    hv_host_info_release(&h);
    free(xml);

    /* captured from libxl on the nested Xen 4.17 host (the file's head) */
    xml = slurp(DATA "caps-xen.xml");
    assert_int_equal(hv_caps_parse(xml, &h, NULL), 0);
    assert_string_equal(h.arch, "x86_64");
    assert_string_equal(h.host_uuid, ""); /* libxl reports none */
    assert_string_equal(h.cpu_name, "nx-qemu64-nosep");
    assert_int_equal(h.n_cpu_features, 5);
    assert_true(has_feature(&h, "svm"));
    assert_true(has_feature(&h, "cmp_legacy"));
    assert_false(has_feature(&h, "pae")); /* <features><pae/> is not a CPU feature */
    assert_int_equal(h.n_guests, 5);
    assert_true(hv_caps_offers(&h, "xen", "x86_64", "xen"));
    assert_true(hv_caps_offers(&h, "hvm", "x86_64", "xen"));
    assert_true(hv_caps_offers(&h, "xenpvh", "x86_64", "xen"));
    assert_true(hv_caps_offers(&h, "hvm", "i686", "xen"));
    assert_false(hv_caps_offers(&h, "xen", "i686", "xen")); /* PV: 64-bit only here */
    assert_false(hv_caps_offers(&h, "hvm", "x86_64", "kvm"));
    assert_int_equal(h.n_cells, 1);
    assert_int_equal(h.cells[0].memory_mb, 5120);
    assert_int_equal(h.cells[0].cpus, 2);
    hv_host_info_release(&h);
    free(xml);
}

static void test_caps_skylake_traits(void **state)
{
    static const char *const want[] = {
        "CUSTOM_HYPERVISOR_KVM",     "HW_CPU_X86_INTEL_MD_CLEAR", "HW_CPU_X86_INTEL_SSBD",
        "HW_CPU_X86_PDPE1GB",        "HW_CPU_X86_STIBP",          "HW_CPU_X86_VMX",
    };
    char *xml = slurp(DATA "caps-skylake.xml");
    struct hv_host_info h;
    char **traits = NULL;
    size_t n = 0;

    (void)state;
    assert_int_equal(hv_caps_parse(xml, &h, NULL), 0);
    assert_int_equal(h.n_cpu_features, 17);
    assert_false(has_feature(&h, "avx512f")); /* the <guest> decoy does not count */
    assert_int_equal(placement_traits_from_cpu(h.arch, (const char *const *)h.cpu_features,
                                               h.n_cpu_features, "kvm", &traits, &n, NULL),
                     0);
    assert_int_equal(n, ARRAY_SIZE(want));
    for (size_t i = 0; i < n; i++)
        assert_string_equal(traits[i], want[i]);
    placement_traits_free(traits, n);
    hv_host_info_release(&h);
    free(xml);
}

static void test_caps_refused(void **state)
{
    struct hv_host_info h;
    struct agent_error err;

    (void)state;
    assert_int_equal(hv_caps_parse(NULL, &h, &err), -EINVAL);
    assert_int_equal(hv_caps_parse("not xml", &h, &err), -EINVAL);
    assert_int_equal(hv_caps_parse("<capabilities><host>", &h, &err), -EINVAL);
    assert_int_equal(hv_caps_parse("<domain/>", &h, &err), -EINVAL);
    assert_string_equal(err.field, "capabilities");
    assert_int_equal(hv_caps_parse("<!DOCTYPE capabilities [<!ENTITY e \"x\">]><capabilities/>", &h,
                                   &err),
                     -EINVAL);
    /* disabled and forbidden features are not the host's */
    assert_int_equal(hv_caps_parse("<capabilities><host><cpu><arch>x86_64</arch>"
                                   "<feature name='aes'/><feature policy='disable' name='avx'/>"
                                   "<feature policy='forbid' name='svm'/><feature/>"
                                   "</cpu></host></capabilities>",
                                   &h, &err),
                     0);
    assert_int_equal(h.n_cpu_features, 1);
    assert_string_equal(h.cpu_features[0], "aes");
    hv_host_info_release(&h);
    /* an empty document is a host we know nothing about */
    assert_int_equal(hv_caps_parse("<capabilities/>", &h, &err), 0);
    assert_string_equal(h.arch, "");
    assert_int_equal(h.n_guests, 0);
    hv_host_info_release(&h);
}

/* ---- the worker threads ---- */

struct pool_ctx {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool release;       /* lets a blocked job go */
    int started;        /* work functions entered (any thread) */
    int ran;            /* work functions run (any thread) */
    int done;           /* done callbacks (loop) */
    int cancelled;      /* of which -ECANCELED */
    int per_job[64];    /* done calls per job */
    pthread_t loop_thread;
};

struct pool_job {
    struct pool_ctx *c;
    int id;
    bool block;
};

static void work_fn(struct hv *hv, void *arg)
{
    struct pool_job *j = arg;

    (void)hv;
    pthread_mutex_lock(&j->c->lock);
    assert_false(pthread_equal(pthread_self(), j->c->loop_thread));
    j->c->started++;
    pthread_cond_broadcast(&j->c->cond);
    while (j->block && !j->c->release)
        pthread_cond_wait(&j->c->cond, &j->c->lock);
    j->c->ran++;
    pthread_mutex_unlock(&j->c->lock);
}

static void done_fn(struct hv *hv, void *arg, int status)
{
    struct pool_job *j = arg;

    (void)hv;
    assert_true(pthread_equal(pthread_self(), j->c->loop_thread));
    assert_true(status == 0 || status == -ECANCELED);
    j->c->done++;
    j->c->cancelled += status == -ECANCELED;
    j->c->per_job[j->id]++;
}

static void let_go(struct pool_ctx *c)
{
    pthread_mutex_lock(&c->lock);
    c->release = true;
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->lock);
}

static void ctx_init(struct pool_ctx *c, struct pool_job *jobs, int n)
{
    memset(c, 0, sizeof(*c));
    pthread_mutex_init(&c->lock, NULL);
    pthread_cond_init(&c->cond, NULL);
    c->loop_thread = pthread_self();
    for (int i = 0; i < n; i++)
        jobs[i] = (struct pool_job){.c = c, .id = i};
}

/* issue 13: the destination XML's guest paths rewritten by prefix */
static void test_migrate_rewrite_paths(void **state)
{
    static const char xml[] =
        "<domain type='qemu'><name>g</name><os><type>hvm</type>"
        "<kernel>/srv/a/boot/k</kernel><initrd>/srv/ab/i</initrd></os><devices>"
        "<disk type='file' device='disk'><source file='/srv/a/g/disk.qcow2'/>"
        "<backingStore type='file'><source file='/srv/a/base/b.qcow2'/></backingStore>"
        "<target dev='vda'/></disk>"
        "<serial type='file'><source path='/srv/a/g/console.log'/><log file='/srv/a/g/l&amp;og'/></serial>"
        "<disk type='file'><source file='/other/x'/></disk></devices></domain>";
    const char *map[] = {"/srv/a", "/data/b", "/other/", "/o2/", NULL};
    const char *odd[] = {"/srv/a", NULL};
    struct agent_error err = {0};
    char *out = NULL;

    (void)state;
    assert_int_equal(hv_migrate_rewrite_paths(xml, map, &out, &err), 0);
    assert_non_null(strstr(out, "<source file=\"/data/b/g/disk.qcow2\"/>"));
    assert_non_null(strstr(out, "<source file=\"/data/b/base/b.qcow2\"/>"));
    assert_non_null(strstr(out, "<source path=\"/data/b/g/console.log\"/>"));
    assert_non_null(strstr(out, "<log file=\"/data/b/g/l&amp;og\"/>"));
    assert_non_null(strstr(out, "<kernel>/data/b/boot/k</kernel>"));
    assert_non_null(strstr(out, "<initrd>/srv/ab/i</initrd>")); /* not a whole-component prefix */
    assert_non_null(strstr(out, "<source file=\"/o2/x\"/>"));
    assert_null(strstr(out, "/srv/a/"));
    free(out);
    /* no map: the same document */
    assert_int_equal(hv_migrate_rewrite_paths(xml, NULL, &out, &err), 0);
    assert_non_null(strstr(out, "/srv/a/g/disk.qcow2"));
    free(out);
    assert_int_equal(hv_migrate_rewrite_paths(xml, odd, &out, &err), -EINVAL);
    assert_null(out);
    assert_int_equal(hv_migrate_rewrite_paths("<domain", map, &out, &err), -EINVAL);
    assert_int_equal(hv_migrate_rewrite_paths("<network/>", map, &out, &err), -EINVAL);
    assert_null(out);
}

static void test_workers_each_once(void **state)
{
    struct pool_ctx c;
    struct pool_job jobs[40];
    uv_loop_t loop;
    struct hv *hv;

    (void)state;
    ctx_init(&c, jobs, 40);
    assert_int_equal(uv_loop_init(&loop), 0);
    hv = hv_for(&loop, &hv_driver_test, 3);
    for (int i = 0; i < 40; i++)
        assert_int_equal(i % 10 ? hv_submit(hv, work_fn, done_fn, &jobs[i])
                                : hv_submit_long(hv, work_fn, done_fn, &jobs[i]),
                         0);
    run_until(&loop, &c.done, 40);
    assert_int_equal(c.ran, 40);
    assert_int_equal(c.cancelled, 0);
    for (int i = 0; i < 40; i++)
        assert_int_equal(c.per_job[i], 1);
    assert_int_equal(hv_submit(hv, NULL, done_fn, &jobs[0]), -EINVAL);
    hv_done(&loop, hv);
}

/* A long job holds the long-job thread, never the workers. */
static void test_workers_long_job_apart(void **state)
{
    struct pool_ctx c;
    struct pool_job jobs[6];
    uv_loop_t loop;
    struct hv *hv;

    (void)state;
    ctx_init(&c, jobs, 6);
    assert_int_equal(uv_loop_init(&loop), 0);
    hv = hv_for(&loop, &hv_driver_test, 1);
    jobs[0].block = true;
    assert_int_equal(hv_submit_long(hv, work_fn, done_fn, &jobs[0]), 0);
    for (int i = 1; i < 6; i++)
        assert_int_equal(hv_submit(hv, work_fn, done_fn, &jobs[i]), 0);
    run_until(&loop, &c.done, 5); /* the one worker serves them all */
    assert_int_equal(c.per_job[0], 0);
    let_go(&c);
    run_until(&loop, &c.done, 6);
    assert_int_equal(c.per_job[0], 1);
    hv_done(&loop, hv);
}

/* After stop: queued work is cancelled (its callback once, -ECANCELED),
 * running work finishes (0), new work is refused and never called back. */
static void test_workers_stop(void **state)
{
    struct pool_ctx c;
    struct pool_job jobs[8];
    uv_loop_t loop;
    struct hv *hv;

    (void)state;
    ctx_init(&c, jobs, 8);
    assert_int_equal(uv_loop_init(&loop), 0);
    hv = hv_for(&loop, &hv_driver_test, 1);
    jobs[0].block = true;
    assert_int_equal(hv_submit(hv, work_fn, done_fn, &jobs[0]), 0);
    /* wait (with a deadline) until the one worker holds job 0: the rest
     * then stays queued */
    {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += 10;
        pthread_mutex_lock(&c.lock);
        while (c.started == 0 && pthread_cond_timedwait(&c.cond, &c.lock, &until) == 0)
            ;
        assert_int_equal(c.started, 1);
        pthread_mutex_unlock(&c.lock);
    }
    for (int i = 1; i < 6; i++)
        assert_int_equal(hv_submit(hv, work_fn, done_fn, &jobs[i]), 0);
    hv_stop(hv);
    assert_int_equal(hv_submit(hv, work_fn, done_fn, &jobs[6]), -ESHUTDOWN);
    assert_int_equal(hv_submit_long(hv, work_fn, done_fn, &jobs[7]), -ESHUTDOWN);
    let_go(&c);
    run_until(&loop, &c.done, 6);
    for (int i = 0; i < 6; i++)
        assert_int_equal(c.per_job[i], 1);
    assert_int_equal(c.per_job[6], 0);
    assert_int_equal(c.per_job[7], 0);
    assert_int_equal(c.ran, 1);       /* job 0, which was running */
    assert_int_equal(c.cancelled, 5); /* the queued ones */
    hv_stop(hv); /* idempotent */
    hv_done(&loop, hv);
}

/* hv_free delivers what is still pending, before it returns. */
static void test_workers_free_delivers(void **state)
{
    struct pool_ctx c;
    struct pool_job jobs[10];
    uv_loop_t loop;
    struct hv *hv;

    (void)state;
    ctx_init(&c, jobs, 10);
    assert_int_equal(uv_loop_init(&loop), 0);
    hv = hv_for(&loop, &hv_driver_test, 2);
    for (int i = 0; i < 10; i++)
        assert_int_equal(hv_submit(hv, work_fn, done_fn, &jobs[i]), 0);
    hv_free(hv); /* without running the loop first */
    assert_int_equal(c.done, 10);
    for (int i = 0; i < 10; i++)
        assert_int_equal(c.per_job[i], 1);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_registry),
        cmocka_unit_test(test_features),
        cmocka_unit_test(test_enotsup),
        cmocka_unit_test(test_test_driver_live),
        cmocka_unit_test(test_element_writers),
        cmocka_unit_test(test_schema),
        cmocka_unit_test(test_device_xml),
        cmocka_unit_test(test_caps_qemu),
        cmocka_unit_test(test_caps_test_and_xen),
        cmocka_unit_test(test_caps_skylake_traits),
        cmocka_unit_test(test_caps_refused),
        cmocka_unit_test(test_migrate_rewrite_paths),
        cmocka_unit_test(test_workers_each_once),
        cmocka_unit_test(test_workers_long_job_apart),
        cmocka_unit_test(test_workers_stop),
        cmocka_unit_test(test_workers_free_delivers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
