/* hv_resize_probe: the hypervisor layer's live resize on a real libvirtd (issue 12).
 *
 *   hv_resize_probe URI GUEST_DIR WORK_DIR
 *
 * Driven by tests/integration/test_hv_live_resize_qemu.py, one command a line on stdin,
 * one answer a line on stdout ("CA-RESIZE: ok ..." or "CA-RESIZE: err ERRNO MESSAGE"),
 * so the test can time each call and watch the guest's serial log in between:
 *   define NAME VCPUS MAX_VCPUS MEM_MIB MAX_MEM_MIB
 *            the test guest (GUEST_DIR's vmlinuz, initrd.gz, cmdline, a copy of disk.raw
 *            in WORK_DIR as its root disk, serial log WORK_DIR/serial.log) defined through
 *            hv_domain_xml/hv_define with that headroom, and started; answers its UUID
 *   vcpus N  hv_set_vcpus(N, HV_LIVE|HV_CONFIG)
 *   mem MIB  hv_set_memory(MIB, HV_LIVE|HV_CONFIG)
 *   size     hv_get_size: vcpus= max_vcpus= memory_mib= requested_mib= max_memory_mib=
 *            live_vcpus= live_memory=
 *   meta TEXT  hv_set_metadata(HV_LIVE|HV_CONFIG) with <ca:flavor>TEXT</ca:flavor>, then
 *            hv_list's reading of it back: answers the flavor text and owner host
 *   features  the driver's vcpu_hotplug, memory_hotplug, vcpu_unplug
 *   destroy  hv_destroy + hv_undefine
 * Every answer carries ms=<the call's wall time>. Exit 0 at EOF. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "agent/hypervisor/hv.h"
#include "common/util.h"

static struct hv *hv;
static char uuid[37];
static char name[128];
static char kernel[4096], initrd[4096], cmdline[1024], disk[4096], serial[4096];

static double now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void answer_err(int r, const struct agent_error *err, double ms)
{
    printf("CA-RESIZE: err %d ms=%.1f %s\n", -r, ms, err->message);
}

static int read_file(const char *path, char *buf, size_t n)
{
    FILE *f = fopen(path, "re");
    size_t got;

    if (!f)
        return -1;
    got = fread(buf, 1, n - 1, f);
    buf[got] = '\0';
    fclose(f);
    return 0;
}

static int copy_file(const char *from, const char *to)
{
    FILE *a = fopen(from, "rbe"), *b = a ? fopen(to, "wbe") : NULL;
    char buf[65536];
    size_t n;
    int r = a && b ? 0 : -1;

    while (r == 0 && (n = fread(buf, 1, sizeof(buf), a)) > 0)
        if (fwrite(buf, 1, n, b) != n)
            r = -1;
    if (a)
        fclose(a);
    if (b && fclose(b) != 0)
        r = -1;
    return r;
}

static void guest_of(struct hv_guest *g, struct hv_disk *d, struct hv_meta_item *items, const char *flavor,
                     unsigned v, unsigned maxv, uint64_t mem, uint64_t maxmem)
{
    memset(g, 0, sizeof(*g));
    strscpy(g->uuid, uuid, sizeof(g->uuid));
    g->name = name;
    g->vcpus = v;
    g->max_vcpus = maxv;
    g->memory_mib = mem;
    g->max_memory_mib = maxmem;
    g->boot = (struct hv_boot){.kind = HV_BOOT_KERNEL, .kernel = kernel, .initrd = initrd, .cmdline = cmdline};
    *d = (struct hv_disk){.role = HV_DISK_ROOT, .path = disk, .format = "raw"};
    g->disks = d;
    g->n_disks = 1;
    g->console_log = serial;
    items[0] = (struct hv_meta_item){.name = "uuid", .text = uuid};
    items[1] = (struct hv_meta_item){.name = "flavor", .text = flavor};
    g->meta = items;
    g->n_meta = 2;
}

static unsigned cur_v, cur_maxv;
static uint64_t cur_mem, cur_maxmem;

static void cmd_define(const char *args)
{
    struct hv_guest g;
    struct hv_disk d;
    struct hv_meta_item items[2];
    struct agent_error err = {0};
    char *xml = NULL;
    double t0 = now_ms();
    int r;

    if (sscanf(args, "%127s %u %u %llu %llu", name, &cur_v, &cur_maxv, (unsigned long long *)&cur_mem,
               (unsigned long long *)&cur_maxmem) != 5) {
        printf("CA-RESIZE: err %d ms=0 usage: define NAME VCPUS MAX_VCPUS MEM MAX_MEM\n", EINVAL);
        return;
    }
    uuid_generate_str(uuid);
    guest_of(&g, &d, items, "boot", cur_v, cur_maxv, cur_mem, cur_maxmem);
    r = hv_domain_xml(hv, &g, &xml, &err);
    if (r == 0)
        r = hv_define(hv, xml, &err);
    free(xml);
    if (r == 0)
        r = hv_start(hv, uuid, &err);
    if (r < 0)
        answer_err(r, &err, now_ms() - t0);
    else
        printf("CA-RESIZE: ok ms=%.1f uuid=%s\n", now_ms() - t0, uuid);
}

static void cmd_size(void)
{
    struct hv_size s;
    struct agent_error err = {0};
    double t0 = now_ms();
    int r = hv_get_size(hv, uuid, &s, &err);

    if (r < 0) {
        answer_err(r, &err, now_ms() - t0);
        return;
    }
    printf("CA-RESIZE: ok ms=%.1f vcpus=%u max_vcpus=%u memory_mib=%llu requested_mib=%llu "
           "max_memory_mib=%llu live_vcpus=%d live_memory=%d\n",
           now_ms() - t0, s.vcpus, s.max_vcpus, (unsigned long long)s.memory_mib,
           (unsigned long long)s.requested_mib, (unsigned long long)s.max_memory_mib, s.live_vcpus,
           s.live_memory);
}

static void cmd_meta(const char *text)
{
    struct hv_guest g;
    struct hv_disk d;
    struct hv_meta_item items[2];
    struct agent_error err = {0};
    struct hv_domain *doms = NULL;
    size_t n = 0;
    double t0 = now_ms();
    int r;

    guest_of(&g, &d, items, text, cur_v, cur_maxv, cur_mem, cur_maxmem);
    r = hv_set_metadata(hv, &g, HV_LIVE | HV_CONFIG, &err);
    if (r < 0) {
        answer_err(r, &err, now_ms() - t0);
        return;
    }
    t0 = now_ms() - t0;
    if ((r = hv_list(hv, &doms, &n, &err)) < 0) {
        answer_err(r, &err, t0);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        const struct hv_meta_entry *e;
        if (strcmp(doms[i].uuid, uuid) != 0)
            continue;
        e = doms[i].has_meta ? hv_meta_get(&doms[i].meta, "flavor", NULL) : NULL;
        printf("CA-RESIZE: ok ms=%.1f flavor=%s host=%s\n", t0, e ? e->text : "(none)",
               doms[i].owner.host[0] ? doms[i].owner.host : "(none)");
        hv_domain_list_free(doms, n);
        return;
    }
    hv_domain_list_free(doms, n);
    printf("CA-RESIZE: err %d ms=%.1f the domain is not listed\n", ENOENT, t0);
}

int main(int argc, char **argv)
{
    uv_loop_t loop;
    const struct hv_driver *drv;
    struct hv_config cfg = {.domain_type = "auto", .host_name = "resize-probe", .workers = 1};
    struct agent_error err = {0};
    char line[1024], gd[4096];
    int r;

    if (argc != 4) {
        fprintf(stderr, "usage: %s URI GUEST_DIR WORK_DIR\n", argv[0]);
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    drv = hv_driver_find(strncmp(argv[1], "test:", 5) == 0 ? "test" : "kvm");
    cfg.uri = argv[1];
    snprintf(kernel, sizeof(kernel), "%s/vmlinuz", argv[2]);
    snprintf(initrd, sizeof(initrd), "%s/initrd.gz", argv[2]);
    snprintf(gd, sizeof(gd), "%s/cmdline", argv[2]);
    if (read_file(gd, cmdline, sizeof(cmdline)) < 0)
        strscpy(cmdline, "console=ttyS0 panic=-1 quiet", sizeof(cmdline));
    snprintf(gd, sizeof(gd), "%s/disk.raw", argv[2]);
    snprintf(disk, sizeof(disk), "%s/disk.raw", argv[3]);
    snprintf(serial, sizeof(serial), "%s/serial.log", argv[3]);
    if (copy_file(gd, disk) < 0) {
        fprintf(stderr, "cannot copy %s to %s: %s\n", gd, disk, strerror(errno));
        return 2;
    }
    if (uv_loop_init(&loop) != 0 || hv_new(&loop, drv, &cfg, NULL, NULL, &hv) < 0) {
        fprintf(stderr, "cannot make the hypervisor layer\n");
        return 2;
    }
    if ((r = hv_connect(hv, &err)) < 0) {
        fprintf(stderr, "cannot connect to %s: %s\n", argv[1], err.message);
        hv_free(hv);
        uv_run(&loop, UV_RUN_DEFAULT);
        return 2;
    }
    printf("CA-RESIZE: ready driver=%s domain_type=%s\n", hv_driver_name(hv), hv_domain_type(hv));
    while (fgets(line, sizeof(line), stdin)) {
        char *arg;
        double t0 = now_ms();
        unsigned long long v;
        line[strcspn(line, "\r\n")] = '\0';
        arg = strchr(line, ' ');
        arg = arg ? arg + 1 : line + strlen(line);
        memset(&err, 0, sizeof(err));
        if (!strncmp(line, "define ", 7)) {
            cmd_define(arg);
        } else if (!strncmp(line, "vcpus ", 6) && sscanf(arg, "%llu", &v) == 1) {
            r = hv_set_vcpus(hv, uuid, (unsigned)v, HV_LIVE | HV_CONFIG, &err);
            if (r < 0)
                answer_err(r, &err, now_ms() - t0);
            else
                printf("CA-RESIZE: ok ms=%.1f\n", now_ms() - t0);
        } else if (!strncmp(line, "mem ", 4) && sscanf(arg, "%llu", &v) == 1) {
            r = hv_set_memory(hv, uuid, v, HV_LIVE | HV_CONFIG, &err);
            if (r < 0)
                answer_err(r, &err, now_ms() - t0);
            else
                printf("CA-RESIZE: ok ms=%.1f\n", now_ms() - t0);
        } else if (!strcmp(line, "size")) {
            cmd_size();
        } else if (!strncmp(line, "meta ", 5)) {
            cmd_meta(arg);
        } else if (!strcmp(line, "features")) {
            printf("CA-RESIZE: ok ms=0 vcpu_hotplug=%d memory_hotplug=%d vcpu_unplug=%d\n",
                   hv_supports(hv, HV_FEAT_VCPU_HOTPLUG), hv_supports(hv, HV_FEAT_MEM_HOTPLUG),
                   hv_supports(hv, HV_FEAT_VCPU_UNPLUG));
        } else if (!strcmp(line, "destroy")) {
            r = hv_destroy(hv, uuid, &err);
            if (r == 0)
                r = hv_undefine(hv, uuid, &err);
            if (r < 0)
                answer_err(r, &err, now_ms() - t0);
            else
                printf("CA-RESIZE: ok ms=%.1f\n", now_ms() - t0);
        } else {
            printf("CA-RESIZE: err %d ms=0 unknown command: %s\n", EINVAL, line);
        }
    }
    hv_free(hv);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    return 0;
}
