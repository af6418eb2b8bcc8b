/* test_telemetry_qemu.c: against a REAL QEMU guest (TCG): the telemetry module
 * on a real libvirt connection samples the project's tiny test guest while it
 * boots and reads its disk, then across a restart of the domain.
 *
 * Needs CA_LIBVIRT_URI (e.g. qemu:///system) and CA_GUEST_DIR (vmlinuz,
 * initrd.gz, disk.raw from tests/env/build-guest.sh); exits 77 (SKIP) with the
 * reason when either is missing. The domain is named ca-telemtest-<random>,
 * boots by direct kernel boot with a qcow2 overlay of disk.raw as virtio vda,
 * a virtio NIC on QEMU's user network (no host setup) and its serial console
 * in a file; only that domain is destroyed and undefined at the end.
 *
 * Asserts: the guest prints "COMPUTE-AGENT-GUEST: booted"; cpu (ns) grows;
 * cpu_util stays within 0..100 (ceilometer's normalisation, so within
 * 0..100*vcpus); disk.device.read.bytes of vda moves; every rate is >= 0;
 * after destroy+start (new domain id, counters from zero) the first round
 * has no rate at all and none is negative; /metrics text passes promtool.
 * Waits run the loop until a condition or a deadline; no fixed sleeps. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "agent/hypervisor/hv.h"
#include "agent/telemetry.h"

extern char **environ;

#define EC2_ID "i-0feedfacecafe0001"
#define BOOT_DEADLINE_MS 120000
#define PHASE_DEADLINE_MS 90000

struct round {
    int id;            /* libvirt domain id seen in this round */
    bool has_util;
    double cpu_util;
    bool has_cpu;
    double cpu_ns;
    double rd_bytes;   /* vda, NAN if absent */
    bool any_rate;     /* some .rate / _util sample present */
    int negative;      /* samples with a value < 0 */
};

struct ctx {
    uv_loop_t loop;
    struct hv *hv;
    struct telemetry *t;
    char dir[64];
    char uuid[37];
    char name[64];
    char log_path[128];
    bool defined;

    struct round rounds[256];
    size_t n_rounds;
    int round_errors;
    struct agent_error last_err;

    /* what the loop waits for */
    bool (*cond)(struct ctx *c);
    bool timed_out;
    uv_timer_t poll, deadline;
};

static int lookup(void *opaque, const char *uuid, char ec2_id[EC2_ID_LEN + 1], char *name,
                  size_t name_size)
{
    struct ctx *c = opaque;

    if (strcmp(uuid, c->uuid))
        return -ENOENT;
    strscpy(ec2_id, EC2_ID, EC2_ID_LEN + 1);
    strscpy(name, c->name, name_size);
    return 0;
}

static int publish(void *opaque, const char *key, const char *json, size_t len)
{
    struct ctx *c = opaque;
    json_error_t e;
    json_t *j, *sm;
    struct round r = {.rd_bytes = NAN};
    const struct telemetry_domain *d;
    size_t k;

    if (strcmp(key, c->uuid) || c->n_rounds == ARRAY_SIZE(c->rounds))
        return 0;
    j = json_loadb(json, len, 0, &e);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "ec2_id")), EC2_ID);
    d = telemetry_domain_find(c->t, c->uuid);
    assert_non_null(d);
    r.id = d->s.id;
    json_array_foreach(json_object_get(j, "samples"), k, sm) {
        const char *m = json_string_value(json_object_get(sm, "meter"));
        const char *dev = json_string_value(json_object_get(sm, "device"));
        double v = json_number_value(json_object_get(sm, "value"));

        assert_string_equal(json_string_value(json_object_get(sm, "instance_id")), c->uuid);
        if (v < 0) {
            r.negative++;
            print_message("negative sample %s = %g\n", m, v);
        }
        if (!strcmp(m, "cpu_util")) {
            r.has_util = true;
            r.cpu_util = v;
        } else if (!strcmp(m, "cpu")) {
            r.has_cpu = true;
            r.cpu_ns = v;
        } else if (!strcmp(m, "disk.device.read.bytes") && dev && !strcmp(dev, "vda")) {
            r.rd_bytes = v;
        }
        if (strstr(m, ".rate") || strstr(m, "_util"))
            r.any_rate = true;
    }
    json_decref(j);
    c->rounds[c->n_rounds++] = r;
    return 0;
}

static void on_round(void *opaque, int err, const struct agent_error *e)
{
    struct ctx *c = opaque;

    if (err < 0) {
        c->round_errors++;
        c->last_err = *e;
    }
    if (c->cond && c->cond(c))
        uv_stop(&c->loop);
}

static void on_poll(uv_timer_t *tm)
{
    struct ctx *c = tm->data;

    if (c->cond && c->cond(c))
        uv_stop(&c->loop);
}

static void on_deadline(uv_timer_t *tm)
{
    struct ctx *c = tm->data;

    c->timed_out = true;
    uv_stop(&c->loop);
}

/* Run the loop until cond holds or deadline_ms passes; true if it held. */
static bool wait_for(struct ctx *c, bool (*cond)(struct ctx *), uint64_t deadline_ms)
{
    c->cond = cond;
    c->timed_out = false;
    if (cond(c))
        return true;
    uv_timer_start(&c->poll, on_poll, 100, 100);
    uv_timer_start(&c->deadline, on_deadline, deadline_ms, 0);
    while (!cond(c) && !c->timed_out)
        uv_run(&c->loop, UV_RUN_DEFAULT);
    uv_timer_stop(&c->poll);
    uv_timer_stop(&c->deadline);
    c->cond = NULL;
    return cond(c);
}

/* ---- helpers ---- */

static int run(char *const argv[])
{
    pid_t pid;
    int status;

    if (posix_spawnp(&pid, argv[0], NULL, NULL, argv, environ) != 0)
        return -1;
    if (waitpid(pid, &status, 0) != pid)
        return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static bool file_has(const char *path, const char *needle)
{
    _cleanup_fclose_ FILE *f = fopen(path, "re");
    char line[512];

    while (f && fgets(line, sizeof(line), f))
        if (strstr(line, needle))
            return true;
    return false;
}

/* Append s with XML's five special characters escaped. */
static void xml_put(FILE *f, const char *s)
{
    for (; *s; s++) {
        switch (*s) {
        case '&': fputs("&amp;", f); break;
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '"': fputs("&quot;", f); break;
        case '\'': fputs("&apos;", f); break;
        default: fputc(*s, f);
        }
    }
}

static char *domain_xml(const struct ctx *c, const char *guest)
{
    char *xml = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&xml, &len);
    char path[4096];

    assert_non_null(f);
    fprintf(f, "<domain type='qemu'><name>%s</name><uuid>%s</uuid>"
               "<memory unit='KiB'>131072</memory><vcpu>1</vcpu>"
               "<os><type arch='x86_64'>hvm</type><kernel>", c->name, c->uuid);
    snprintf(path, sizeof(path), "%s/vmlinuz", guest);
    xml_put(f, path);
    fputs("</kernel><initrd>", f);
    snprintf(path, sizeof(path), "%s/initrd.gz", guest);
    xml_put(f, path);
    fputs("</initrd><cmdline>console=ttyS0 panic=-1 quiet</cmdline></os>"
          "<features><acpi/></features><on_reboot>restart</on_reboot>"
          "<devices><disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
          "<source file='", f);
    snprintf(path, sizeof(path), "%s/disk.qcow2", c->dir);
    xml_put(f, path);
    fputs("'/><target dev='vda' bus='virtio'/></disk>"
          "<interface type='user'><model type='virtio'/></interface>"
          "<serial type='file'><source path='", f);
    xml_put(f, c->log_path);
    fputs("'/><target port='0'/></serial>"
          "<memballoon model='virtio'><stats period='1'/></memballoon>"
          "</devices></domain>", f);
    fclose(f);
    return xml;
}

/* ---- conditions ---- */

static bool booted(struct ctx *c) { return file_has(c->log_path, "COMPUTE-AGENT-GUEST: booted"); }

static bool phase1_done(struct ctx *c)
{
    size_t util = 0;
    bool disk = false;

    for (size_t i = 0; i < c->n_rounds; i++) {
        util += c->rounds[i].has_util;
        disk = disk || (!isnan(c->rounds[i].rd_bytes) && c->rounds[i].rd_bytes > 0);
    }
    return booted(c) && util >= 3 && disk;
}

static size_t restart_from; /* first round index after the restart was asked */

static bool phase2_done(struct ctx *c)
{
    size_t after = 0;
    int id0 = restart_from ? c->rounds[restart_from - 1].id : -1;

    for (size_t i = restart_from; i < c->n_rounds; i++)
        after += c->rounds[i].id != id0 && c->rounds[i].has_util;
    return after >= 2;
}

/* ---- fixture ---- */

static int setup(void **state)
{
    static struct ctx c;
    const char *uri = getenv("CA_LIBVIRT_URI");
    struct hv_config hc = {.uri = uri, .domain_type = "qemu"};
    uint8_t rnd[4];
    struct agent_error e;

    memset(&c, 0, sizeof(c));
    uv_loop_init(&c.loop);
    uv_timer_init(&c.loop, &c.poll);
    uv_timer_init(&c.loop, &c.deadline);
    c.poll.data = c.deadline.data = &c;
    assert_int_equal(random_bytes(rnd, sizeof(rnd)), 0);
    snprintf(c.name, sizeof(c.name), "ca-telemtest-%02x%02x%02x%02x", rnd[0], rnd[1], rnd[2], rnd[3]);
    assert_int_equal(uuid_generate_str(c.uuid), 0);
    strscpy(c.dir, "/tmp/ca-telemtest-XXXXXX", sizeof(c.dir));
    assert_non_null(mkdtemp(c.dir));
    chmod(c.dir, 0755);
    snprintf(c.log_path, sizeof(c.log_path), "%s/console.log", c.dir);
    assert_int_equal(hv_new(&c.loop, &hv_driver_kvm, &hc, NULL, NULL, &c.hv), 0);
    if (hv_connect(c.hv, &e) < 0)
        fail_msg("cannot connect to %s: %s", uri, e.message);
    *state = &c;
    return 0;
}

static void close_cb(uv_handle_t *h) { (void)h; }

static bool telemetry_gone;
static void on_closed(void *opaque)
{
    (void)opaque;
    telemetry_gone = true;
}
static bool closed(struct ctx *c) { (void)c; return telemetry_gone; }

static int teardown(void **state)
{
    struct ctx *c = *state;
    char path[160];

    if (c->defined) {
        hv_destroy(c->hv, c->uuid, NULL); /* only our own domain */
        hv_undefine(c->hv, c->uuid, NULL);
    }
    if (c->t) {
        telemetry_free(c->t);
        c->t = NULL;
        assert_true(wait_for(c, closed, 30000)); /* the sample in flight came back */
    }
    hv_free(c->hv);
    uv_close((uv_handle_t *)&c->poll, close_cb);
    uv_close((uv_handle_t *)&c->deadline, close_cb);
    assert_int_equal(uv_run(&c->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&c->loop), 0);
    snprintf(path, sizeof(path), "%s/disk.qcow2", c->dir);
    unlink(path);
    unlink(c->log_path);
    rmdir(c->dir);
    return 0;
}

/* ---- the test ---- */

static void test_real_guest(void **state)
{
    struct ctx *c = *state;
    const char *guest = getenv("CA_GUEST_DIR");
    char base[4096], overlay[160];
    char *img[] = {"qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", base, overlay, NULL};
    _cleanup_free_ char *xml = NULL;
    struct agent_error e;
    struct telemetry_config cfg = {.interval_s = 1, .host = "telemtest-host",
                                   .dirs = (const char *const[]){"/tmp", NULL}};
    struct telemetry_callbacks cb = {.lookup = lookup, .publish = publish, .on_round = on_round,
                                     .on_closed = on_closed};
    double first_cpu = NAN, last_cpu = NAN;
    size_t n1;
    char *text = NULL;
    size_t len = 0;
    FILE *f;

    snprintf(base, sizeof(base), "%s/disk.raw", guest);
    snprintf(overlay, sizeof(overlay), "%s/disk.qcow2", c->dir);
    assert_int_equal(run(img), 0);
    xml = domain_xml(c, guest);
    if (hv_define(c->hv, xml, &e) < 0)
        fail_msg("define: %s", e.message);
    c->defined = true;
    if (hv_start(c->hv, c->uuid, &e) < 0)
        fail_msg("start: %s", e.message);

    assert_int_equal(telemetry_new(&c->loop, c->hv, &cfg, &cb, c, &c->t, &e), 0);
    if (!wait_for(c, phase1_done, BOOT_DEADLINE_MS))
        fail_msg("phase 1 not reached in time: booted=%d rounds=%zu round_errors=%d (%s)",
                 booted(c), c->n_rounds, c->round_errors, c->last_err.message);
    n1 = c->n_rounds;
    for (size_t i = 0; i < n1; i++) {
        const struct round *r = &c->rounds[i];
        assert_int_equal(r->negative, 0);
        assert_true(r->has_cpu);
        if (isnan(first_cpu))
            first_cpu = r->cpu_ns;
        last_cpu = r->cpu_ns;
        if (r->has_util && (r->cpu_util < 0 || r->cpu_util > 100.0))
            fail_msg("cpu_util %g out of 0..100", r->cpu_util);
        print_message("round %zu: id %d cpu %.0f ns util %s%.1f vda read %.0f B\n", i, r->id,
                      r->cpu_ns, r->has_util ? "" : "(none) ", r->has_util ? r->cpu_util : 0.0,
                      r->rd_bytes);
    }
    assert_true(last_cpu > first_cpu); /* CPU time grows while it runs */

    /* /metrics from real figures parses. */
    f = open_memstream(&text, &len);
    assert_int_equal(telemetry_render_prometheus(c->t, f), 0);
    fclose(f);
    assert_non_null(strstr(text, "compute_agent_instance_disk_read_bytes_total{instance_uuid=\""));
    assert_non_null(strstr(text, "ec2_id=\"" EC2_ID "\""));
    if (access("/usr/bin/promtool", X_OK) == 0) {
        char tmp[160];
        char *pt[] = {"promtool", "check", "metrics", NULL};
        int fd, saved = dup(0);
        snprintf(tmp, sizeof(tmp), "%s/metrics.txt", c->dir);
        fd = open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        assert_true(fd >= 0);
        assert_int_equal(write(fd, text, len), (ssize_t)len);
        lseek(fd, 0, SEEK_SET);
        dup2(fd, 0);
        assert_int_equal(run(pt), 0);
        dup2(saved, 0);
        close(saved);
        close(fd);
        unlink(tmp);
    } else {
        print_message("SKIP promtool check: /usr/bin/promtool missing\n");
    }
    free(text);

    /* Restart: the counters start again from zero under a new domain id. */
    if (hv_destroy(c->hv, c->uuid, &e) < 0)
        fail_msg("destroy: %s", e.message);
    if (hv_start(c->hv, c->uuid, &e) < 0)
        fail_msg("start again: %s", e.message);
    restart_from = c->n_rounds;
    if (!wait_for(c, phase2_done, PHASE_DEADLINE_MS))
        fail_msg("no rates after the restart in time (rounds %zu)", c->n_rounds);
    {
        int old_id = c->rounds[restart_from - 1].id;
        bool first_new = true;
        for (size_t i = restart_from; i < c->n_rounds; i++) {
            const struct round *r = &c->rounds[i];
            print_message("after restart %zu: id %d cpu %.0f util %s%.1f\n", i, r->id, r->cpu_ns,
                          r->has_util ? "" : "(none) ", r->has_util ? r->cpu_util : 0.0);
            assert_int_equal(r->negative, 0);
            if (r->has_util)
                assert_true(r->cpu_util >= 0 && r->cpu_util <= 100.0);
            if (r->id != old_id && first_new) {
                assert_false(r->any_rate); /* no rate across a restart */
                first_new = false;
            }
        }
        assert_false(first_new);
    }
}

int main(void)
{
    const char *uri = getenv("CA_LIBVIRT_URI");
    const char *guest = getenv("CA_GUEST_DIR");
    char p[4096];
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_real_guest, setup, teardown),
    };

    if (!uri || !*uri) {
        printf("SKIP: CA_LIBVIRT_URI is not set (needs a real qemu:///system libvirtd)\n");
        return 77;
    }
    snprintf(p, sizeof(p), "%s/disk.raw", guest ? guest : "");
    if (!guest || !*guest || access(p, R_OK) != 0) {
        printf("SKIP: CA_GUEST_DIR is not set or has no disk.raw (tests/env/build-guest.sh)\n");
        return 77;
    }
    return cmocka_run_group_tests(tests, NULL, NULL);
}
