/* test_placement.c: the Placement client's parts that need no server: CPU
 * features -> traits, inventory validation/diffing/merging
 * (what decides that nothing needs sending), trait merging, backoff and
 * jitter, microversion choice, Keystone pieces, usage drift; and, with a
 * loopback port nobody listens on, that a down controller never blocks the
 * caller, is retried with backoff, and that everything closes cleanly.
 * The real-Placement tests are in tests/component/test_placement.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "common/util.h"
#include "agent/controller.h"
#include "agent/instance.h"
#include "agent/store.h"
#include "scheduler-client/placement-internal.h"
#include "scheduler-client/placement.h"

/* The enabled features of a Skylake host's CPU beyond its model, as the
 * hypervisor layer parses them from libvirt's capabilities (test_hv.c reads
 * the document itself: tests/unit/data/caps-skylake.xml). */
static const char *const skylake_features[] = {
    "ds", "acpi", "ss", "ht", "monitor", "vmx", "est", "osxsave", "tsc_adjust", "clflushopt",
    "intel-pt", "md-clear", "stibp", "ssbd", "xsaves", "pdpe1gb", "invtsc",
};

/* virConnectBaselineHypervisorCPU(..., EXPAND_FEATURES) style: every
 * enabled feature of the model. */
static const char *const expanded_features[] = {
    "sse4.2", "sse4.1", "ssse3", "pni", "pclmuldq", "fma", "avx2", "aes", "bmi1", "x2apic",
};

static void test_traits_from_cpu(void **state)
{
    static const char *const want[] = {
        "CUSTOM_HYPERVISOR_KVM",     "HW_CPU_X86_INTEL_MD_CLEAR", "HW_CPU_X86_INTEL_SSBD",
        "HW_CPU_X86_PDPE1GB",        "HW_CPU_X86_STIBP",          "HW_CPU_X86_VMX",
    };
    char **traits = NULL;
    size_t n = 0;
    struct agent_error err;

    (void)state;
    assert_int_equal(placement_traits_from_cpu("x86_64", skylake_features,
                                               ARRAY_SIZE(skylake_features), "kvm", &traits, &n,
                                               &err),
                     0);
    assert_int_equal(n, ARRAY_SIZE(want));
    for (size_t i = 0; i < n; i++) /* sorted, exactly these */
        assert_string_equal(traits[i], want[i]);
    placement_traits_free(traits, n);
}

static void test_traits_from_expanded_cpu(void **state)
{
    static const char *const want[] = {
        "CUSTOM_HYPERVISOR_QEMU", "HW_CPU_X86_AESNI", "HW_CPU_X86_AVX2",  "HW_CPU_X86_BMI",
        "HW_CPU_X86_CLMUL",       "HW_CPU_X86_FMA3",  "HW_CPU_X86_SSE3",  "HW_CPU_X86_SSE41",
        "HW_CPU_X86_SSE42",       "HW_CPU_X86_SSSE3",
    };
    char **traits = NULL;
    size_t n = 0;

    (void)state;
    assert_int_equal(placement_traits_from_cpu(NULL, expanded_features,
                                               ARRAY_SIZE(expanded_features), "QEMU", &traits, &n,
                                               NULL),
                     0);
    assert_int_equal(n, ARRAY_SIZE(want));
    for (size_t i = 0; i < n; i++)
        assert_string_equal(traits[i], want[i]);
    placement_traits_free(traits, n);
}

static void test_traits_from_cpu_errors(void **state)
{
    static const char *const aes[] = {"aes"};
    char **traits = NULL;
    size_t n = 0;
    struct agent_error err;

    (void)state;
    assert_int_equal(placement_traits_from_cpu("x86_64", NULL, 1, NULL, &traits, &n, &err), -EINVAL);
    assert_string_equal(err.code, "invalid");
    assert_int_equal(placement_traits_from_cpu("x86_64", skylake_features, 1, "bhyve", &traits,
                                               &n, &err),
                     -EINVAL);
    assert_string_equal(err.field, "hypervisor");
    /* no CPU features at all: the hypervisor's trait only, no error */
    assert_int_equal(placement_traits_from_cpu("x86_64", NULL, 0, "xen", &traits, &n, &err), 0);
    assert_int_equal(n, 1);
    assert_string_equal(traits[0], "CUSTOM_HYPERVISOR_XEN");
    placement_traits_free(traits, n);
    assert_int_equal(placement_traits_from_cpu("x86_64", NULL, 0, NULL, &traits, &n, &err), 0);
    assert_int_equal(n, 0);
    placement_traits_free(traits, n);
    /* x86's trait names are not another arch's */
    assert_int_equal(placement_traits_from_cpu("aarch64", aes, 1, "kvm", &traits, &n, &err), 0);
    assert_int_equal(n, 1);
    assert_string_equal(traits[0], "CUSTOM_HYPERVISOR_KVM");
    placement_traits_free(traits, n);
    placement_traits_free(NULL, 0);
}

static void test_cpu_feature_aliases(void **state)
{
    (void)state;
    /* libvirt spelling and /proc/cpuinfo spelling */
    assert_string_equal(placement_cpu_feature_trait("sse4.2"), "HW_CPU_X86_SSE42");
    assert_string_equal(placement_cpu_feature_trait("sse4_2"), "HW_CPU_X86_SSE42");
    assert_string_equal(placement_cpu_feature_trait("sse4_1"), "HW_CPU_X86_SSE41");
    assert_string_equal(placement_cpu_feature_trait("pni"), "HW_CPU_X86_SSE3");
    assert_string_equal(placement_cpu_feature_trait("sse3"), "HW_CPU_X86_SSE3");
    assert_string_equal(placement_cpu_feature_trait("pclmulqdq"), "HW_CPU_X86_CLMUL");
    assert_string_equal(placement_cpu_feature_trait("aes"), "HW_CPU_X86_AESNI");
    assert_string_equal(placement_cpu_feature_trait("avx2"), "HW_CPU_X86_AVX2");
    assert_string_equal(placement_cpu_feature_trait("vmx"), "HW_CPU_X86_VMX");
    assert_string_equal(placement_cpu_feature_trait("svm"), "HW_CPU_X86_SVM");
    assert_string_equal(placement_cpu_feature_trait("sha-ni"), "HW_CPU_X86_SHA");
    assert_string_equal(placement_cpu_feature_trait("avx512-vpopcntdq"),
                        "HW_CPU_X86_AVX512VPOPCNTDQ");
    assert_null(placement_cpu_feature_trait("x2apic"));
    assert_null(placement_cpu_feature_trait("SSE4.2"));
}

/* ---- inventories ---- */

static const struct placement_inventory host_inv[] = {
    {.resource_class = "VCPU", .total = 8, .reserved = 0, .min_unit = 1, .max_unit = 8,
     .step_size = 1, .allocation_ratio = 16.0},
    {.resource_class = "MEMORY_MB", .total = 16384, .reserved = 512, .min_unit = 1,
     .max_unit = 16384, .step_size = 1, .allocation_ratio = 1.5},
    {.resource_class = "DISK_GB", .total = 100, .reserved = 1, .min_unit = 1, .max_unit = 100,
     .step_size = 1, .allocation_ratio = 1.1},
};

static void test_inventory_build(void **state)
{
    struct placement_inv_set set = {0};
    struct placement_inventory inv[3];

    (void)state;
    assert_int_equal(placement_inv_set_build(host_inv, 3, &set), 0);
    assert_int_equal(set.n, 3);
    /* sorted by class */
    assert_string_equal(set.items[0].rc, "DISK_GB");
    assert_string_equal(set.items[1].rc, "MEMORY_MB");
    assert_string_equal(set.items[2].rc, "VCPU");
    assert_int_equal(set.items[1].reserved, 512);
    placement_inv_set_clear(&set);

    /* a total of 0 means none: left out */
    memcpy(inv, host_inv, sizeof(inv));
    inv[2].total = 0;
    assert_int_equal(placement_inv_set_build(inv, 3, &set), 0);
    assert_int_equal(set.n, 2);
    placement_inv_set_clear(&set);
    assert_int_equal(placement_inv_set_build(NULL, 0, &set), 0);
    assert_int_equal(set.n, 0);

    /* what Placement would refuse is refused here */
    memcpy(inv, host_inv, sizeof(inv));
    inv[1].reserved = inv[1].total + 1;
    assert_int_equal(placement_inv_set_build(inv, 3, &set), -EINVAL);
    memcpy(inv, host_inv, sizeof(inv));
    inv[0].min_unit = 9;
    assert_int_equal(placement_inv_set_build(inv, 3, &set), -EINVAL);
    memcpy(inv, host_inv, sizeof(inv));
    inv[0].step_size = 0;
    assert_int_equal(placement_inv_set_build(inv, 3, &set), -EINVAL);
    memcpy(inv, host_inv, sizeof(inv));
    inv[0].allocation_ratio = 0;
    assert_int_equal(placement_inv_set_build(inv, 3, &set), -EINVAL);
    memcpy(inv, host_inv, sizeof(inv));
    inv[0].total = -1;
    assert_int_equal(placement_inv_set_build(inv, 3, &set), -EINVAL);
    memcpy(inv, host_inv, sizeof(inv));
    inv[0].resource_class = "vcpu";
    assert_int_equal(placement_inv_set_build(inv, 3, &set), -EINVAL);
    memcpy(inv, host_inv, sizeof(inv));
    inv[2].resource_class = "VCPU"; /* duplicate */
    assert_int_equal(placement_inv_set_build(inv, 3, &set), -EINVAL);
    memcpy(inv, host_inv, sizeof(inv));
    inv[1].reserved = inv[1].total; /* allowed since 1.26 */
    assert_int_equal(placement_inv_set_build(inv, 3, &set), 0);
    placement_inv_set_clear(&set);
}

static void test_inventory_diff(void **state)
{
    struct placement_inventory shuffled[3] = {host_inv[2], host_inv[0], host_inv[1]};
    struct placement_inv_set a = {0}, b = {0}, remote = {0};
    json_t *json;

    (void)state;
    assert_int_equal(placement_inv_set_build(host_inv, 3, &a), 0);
    /* order does not matter */
    assert_int_equal(placement_inv_set_build(shuffled, 3, &b), 0);
    assert_true(placement_inv_set_equal(&a, &b));
    placement_inv_set_clear(&b);

    /* every field counts */
    for (int field = 0; field < 6; field++) {
        memcpy(shuffled, host_inv, sizeof(shuffled));
        switch (field) {
        case 0: shuffled[1].total++; break;
        case 1: shuffled[1].reserved++; break;
        case 2: shuffled[1].min_unit++; break;
        case 3: shuffled[1].max_unit--; break;
        case 4: shuffled[1].step_size++; break;
        case 5: shuffled[1].allocation_ratio = 1.0; break;
        }
        assert_int_equal(placement_inv_set_build(shuffled, 3, &b), 0);
        assert_false(placement_inv_set_equal(&a, &b));
        placement_inv_set_clear(&b);
    }
    /* a class more or less counts */
    assert_int_equal(placement_inv_set_build(host_inv, 2, &b), 0);
    assert_false(placement_inv_set_equal(&a, &b));
    placement_inv_set_clear(&b);

    /* what Placement answers reads back equal, even a ratio stored as a
     * single-precision float (1.1 -> 1.100000023841858) */
    json = json_loads("{\"DISK_GB\": {\"total\": 100, \"reserved\": 1, \"min_unit\": 1,"
                      " \"max_unit\": 100, \"step_size\": 1, \"allocation_ratio\": 1.100000023841858},"
                      " \"MEMORY_MB\": {\"total\": 16384, \"reserved\": 512, \"min_unit\": 1,"
                      " \"max_unit\": 16384, \"step_size\": 1, \"allocation_ratio\": 1.5},"
                      " \"VCPU\": {\"total\": 8, \"reserved\": 0, \"min_unit\": 1,"
                      " \"max_unit\": 8, \"step_size\": 1, \"allocation_ratio\": 16.0}}",
                      0, NULL);
    assert_non_null(json);
    assert_int_equal(placement_inv_set_from_json(json, &remote), 0);
    json_decref(json);
    assert_true(placement_inv_set_equal(&a, &remote));

    /* and our JSON reads back as the same set */
    json = placement_inv_set_to_json(&a);
    assert_non_null(json);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(json, "MEMORY_MB"),
                                                        "reserved")),
                     512);
    assert_int_equal(placement_inv_set_from_json(json, &b), 0);
    json_decref(json);
    assert_true(placement_inv_set_equal(&a, &b));
    placement_inv_set_clear(&b);

    /* missing fields take Placement's defaults; bad types are refused */
    json = json_loads("{\"VCPU\": {\"total\": 4}}", 0, NULL);
    assert_int_equal(placement_inv_set_from_json(json, &b), 0);
    json_decref(json);
    assert_int_equal(b.items[0].min_unit, 1);
    assert_int_equal(b.items[0].step_size, 1);
    assert_int_equal(b.items[0].max_unit, 2147483647);
    assert_true(b.items[0].allocation_ratio == 1.0);
    placement_inv_set_clear(&b);
    json = json_loads("{\"VCPU\": {\"total\": \"4\"}}", 0, NULL);
    assert_int_equal(placement_inv_set_from_json(json, &b), -EINVAL);
    json_decref(json);
    assert_int_equal(placement_inv_set_from_json(NULL, &b), -EINVAL);

    placement_inv_set_clear(&a);
    placement_inv_set_clear(&remote);
}

static void test_inventory_merge(void **state)
{
    struct placement_strset managed = {0};
    struct placement_inv_set desired = {0}, remote = {0}, target = {0};
    json_t *json;

    (void)state;
    placement_strset_add(&managed, "VCPU");
    placement_strset_add(&managed, "MEMORY_MB");
    placement_strset_add(&managed, "DISK_GB");
    assert_int_equal(placement_inv_set_build(host_inv, 2, &desired), 0); /* no DISK_GB */
    /* Placement holds an operator's custom class and a stale DISK_GB */
    json = json_loads("{\"CUSTOM_FPGA\": {\"total\": 2}, \"DISK_GB\": {\"total\": 50},"
                      " \"VCPU\": {\"total\": 4}}",
                      0, NULL);
    assert_int_equal(placement_inv_set_from_json(json, &remote), 0);
    json_decref(json);
    assert_int_equal(placement_inv_set_merge(&remote, &desired, &managed, &target), 0);
    assert_int_equal(target.n, 3);
    assert_string_equal(target.items[0].rc, "CUSTOM_FPGA"); /* kept */
    assert_string_equal(target.items[1].rc, "MEMORY_MB");
    assert_string_equal(target.items[2].rc, "VCPU");
    assert_int_equal(target.items[2].total, 8); /* ours wins */
    assert_false(placement_inv_set_equal(&target, &remote));
    placement_inv_set_clear(&remote);

    /* once Placement holds the target, merging again changes nothing: no PUT */
    assert_int_equal(placement_inv_set_copy(&remote, &target), 0);
    placement_inv_set_clear(&target);
    assert_int_equal(placement_inv_set_merge(&remote, &desired, &managed, &target), 0);
    assert_true(placement_inv_set_equal(&target, &remote));

    placement_inv_set_clear(&target);
    placement_inv_set_clear(&remote);
    placement_inv_set_clear(&desired);
    placement_strset_clear(&managed);
}

/* ---- traits ---- */

static void strset_of(struct placement_strset *set, const char *const *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        assert_int_equal(placement_strset_add(set, v[i]), 0);
}

static void test_traits_merge(void **state)
{
    static const char *const remote_v[] = {
        "CUSTOM_OPERATOR_MARK", "HW_CPU_X86_SSE42", "COMPUTE_STATUS_DISABLED",
        "CUSTOM_HYPERVISOR_XEN", "CUSTOM_OLD_AGENT_TRAIT", "COMPUTE_NET_VIF_MODEL_VIRTIO",
    };
    static const char *const desired_v[] = {"HW_CPU_X86_AVX2", "CUSTOM_HYPERVISOR_KVM"};
    static const char *const given_v[] = {"HW_CPU_X86_AVX2", "CUSTOM_HYPERVISOR_KVM",
                                          "CUSTOM_OLD_AGENT_TRAIT"};
    struct placement_strset remote = {0}, desired = {0}, given = {0}, out = {0};

    (void)state;
    strset_of(&remote, remote_v, ARRAY_SIZE(remote_v));
    strset_of(&desired, desired_v, ARRAY_SIZE(desired_v));
    strset_of(&given, given_v, ARRAY_SIZE(given_v));
    assert_int_equal(placement_traits_merge(&remote, &desired, &given, &out), 0);
    /* the operator's traits stay; ours are replaced */
    assert_int_equal(out.n, 4);
    assert_string_equal(out.v[0], "COMPUTE_NET_VIF_MODEL_VIRTIO");
    assert_string_equal(out.v[1], "CUSTOM_HYPERVISOR_KVM");
    assert_string_equal(out.v[2], "CUSTOM_OPERATOR_MARK");
    assert_string_equal(out.v[3], "HW_CPU_X86_AVX2");

    /* before any traits were given, only COMPUTE_STATUS_DISABLED is ours */
    placement_strset_clear(&desired);
    assert_int_equal(placement_traits_merge(&remote, &desired, NULL, &out), 0);
    assert_int_equal(out.n, ARRAY_SIZE(remote_v) - 1);
    assert_false(placement_strset_has(&out, "COMPUTE_STATUS_DISABLED"));
    assert_true(placement_strset_has(&out, "HW_CPU_X86_SSE42"));

    placement_strset_clear(&remote);
    placement_strset_clear(&given);
    placement_strset_clear(&out);
}

static void test_strset(void **state)
{
    struct placement_strset a = {0}, b = {0};

    (void)state;
    placement_strset_add(&a, "b");
    placement_strset_add(&a, "a");
    placement_strset_add(&a, "c");
    placement_strset_add(&a, "a");
    assert_int_equal(a.n, 3);
    assert_string_equal(a.v[0], "a");
    assert_string_equal(a.v[2], "c");
    assert_int_equal(placement_strset_copy(&b, &a), 0);
    assert_true(placement_strset_equal(&a, &b));
    placement_strset_remove(&b, "b");
    placement_strset_remove(&b, "zz");
    assert_false(placement_strset_equal(&a, &b));
    assert_false(placement_strset_has(&b, "b"));
    assert_true(placement_strset_has(&b, "c"));
    placement_strset_clear(&a);
    placement_strset_clear(&b);
}

static void test_names(void **state)
{
    char long_name[300];

    (void)state;
    assert_true(placement_name_valid("CUSTOM_HYPERVISOR_KVM"));
    assert_true(placement_name_valid("HW_CPU_X86_SSE42"));
    assert_false(placement_name_valid(""));
    assert_false(placement_name_valid(NULL));
    assert_false(placement_name_valid("custom_lower"));
    assert_false(placement_name_valid("CUSTOM/../X"));
    memset(long_name, 'A', sizeof(long_name));
    long_name[255] = '\0';
    assert_true(placement_name_valid(long_name));
    long_name[255] = 'A';
    long_name[256] = '\0';
    assert_false(placement_name_valid(long_name));
}

/* ---- backoff ---- */

static void test_backoff(void **state)
{
    (void)state;
    /* equal jitter: [b/2, b], b doubling from 500 ms to the 60 s cap */
    assert_int_equal(placement_backoff_ms(1, 500, 60000, 0), 250);
    assert_int_equal(placement_backoff_ms(1, 500, 60000, UINT32_MAX), 250 + UINT32_MAX % 251);
    assert_int_equal(placement_backoff_ms(2, 500, 60000, 0), 500);
    assert_int_equal(placement_backoff_ms(3, 500, 60000, 0), 1000);
    assert_int_equal(placement_backoff_ms(8, 500, 60000, 0), 30000);
    assert_int_equal(placement_backoff_ms(9, 500, 60000, 0), 30000); /* b capped at 60000 */
    assert_int_equal(placement_backoff_ms(9, 500, 60000, 30000), 60000);
    assert_int_equal(placement_backoff_ms(1000000, 500, 60000, 0), 30000); /* no overflow */
    for (uint32_t rnd = 0; rnd < 100000; rnd += 997) {
        for (unsigned attempt = 1; attempt < 40; attempt++) {
            uint64_t d = placement_backoff_ms(attempt, 500, 60000, rnd * 7919u);
            uint64_t b = 500ull << (attempt - 1 < 20 ? attempt - 1 : 20);
            if (b > 60000)
                b = 60000;
            assert_true(d >= b / 2 && d <= b);
        }
    }
    /* initial above the cap: the cap */
    assert_true(placement_backoff_ms(1, 5000, 1000, 0) <= 1000);
    /* full jitter for conflicts: [0, b] */
    assert_int_equal(placement_jitter_ms(1, 50, 2000, 0), 0);
    assert_int_equal(placement_jitter_ms(1, 50, 2000, 50), 50);
    assert_int_equal(placement_jitter_ms(1, 50, 2000, 51), 0);
    assert_true(placement_jitter_ms(30, 50, 2000, UINT32_MAX) <= 2000);
}

/* ---- microversions ---- */

static void test_microversion(void **state)
{
    char mv[8];
    int a, b;

    (void)state;
    assert_int_equal(placement_microversion_parse("1.39", &a, &b), 0);
    assert_int_equal(a, 1);
    assert_int_equal(b, 39);
    assert_int_equal(placement_microversion_parse("1", &a, &b), -EINVAL);
    assert_int_equal(placement_microversion_parse("1.x", &a, &b), -EINVAL);
    assert_int_equal(placement_microversion_parse(NULL, &a, &b), -EINVAL);

    assert_int_equal(placement_microversion_pick("1.0", "1.39", mv), 0);
    assert_string_equal(mv, "1.39");
    assert_int_equal(placement_microversion_pick("1.0", "1.45", mv), 0); /* newer server */
    assert_string_equal(mv, "1.39");
    assert_int_equal(placement_microversion_pick("1.0", "1.30", mv), 0); /* older server */
    assert_string_equal(mv, "1.30");
    assert_int_equal(placement_microversion_pick("1.0", "1.26", mv), 0);
    assert_string_equal(mv, "1.26");
    assert_int_equal(placement_microversion_pick("1.0", "1.20", mv), -ENOTSUP);
    assert_int_equal(placement_microversion_pick("1.40", "1.50", mv), -ENOTSUP);
    assert_int_equal(placement_microversion_pick(NULL, "1.39", mv), 0);
    assert_int_equal(placement_microversion_pick("1.0", NULL, mv), -EINVAL);
    assert_int_equal(placement_microversion_pick("1.0", "2", mv), -EINVAL);
}

/* ---- Keystone ---- */

static void test_keystone(void **state)
{
    struct placement_keystone_config k = {
        .auth_url = "http://ks:5000",
        .username = "agent",
        .password = "p\"w",
        .project_name = "service",
    };
    char *s;
    json_t *body;
    int64_t ms;

    (void)state;
    s = placement_keystone_tokens_url("http://ks:5000");
    assert_string_equal(s, "http://ks:5000/v3/auth/tokens?nocatalog");
    free(s);
    s = placement_keystone_tokens_url("http://ks/identity/v3/");
    assert_string_equal(s, "http://ks/identity/v3/auth/tokens?nocatalog");
    free(s);

    s = placement_keystone_body(&k);
    assert_non_null(s);
    body = json_loads(s, 0, NULL);
    free(s);
    assert_non_null(body);
    {
        json_t *auth = json_object_get(body, "auth");
        json_t *user = json_object_get(
            json_object_get(json_object_get(auth, "identity"), "password"), "user");
        json_t *project = json_object_get(json_object_get(auth, "scope"), "project");
        assert_string_equal(json_string_value(json_array_get(
                                json_object_get(json_object_get(auth, "identity"), "methods"), 0)),
                            "password");
        assert_string_equal(json_string_value(json_object_get(user, "name")), "agent");
        assert_string_equal(json_string_value(json_object_get(user, "password")), "p\"w");
        assert_string_equal(
            json_string_value(json_object_get(json_object_get(user, "domain"), "name")), "Default");
        assert_string_equal(json_string_value(json_object_get(project, "name")), "service");
        assert_string_equal(
            json_string_value(json_object_get(json_object_get(project, "domain"), "name")),
            "Default");
    }
    json_decref(body);
    k.password = NULL;
    assert_null(placement_keystone_body(&k));

    body = json_loads("{\"token\": {\"expires_at\": \"2026-11-23T21:10:11.000000Z\"}}", 0, NULL);
    assert_int_equal(placement_keystone_expiry(body, &ms), 0);
    assert_true(ms == 1795468211000LL);
    json_decref(body);
    body = json_loads("{\"token\": {\"expires_at\": \"soon\"}}", 0, NULL);
    assert_int_equal(placement_keystone_expiry(body, &ms), -EINVAL);
    json_decref(body);
}

/* ---- usage drift ---- */

static void test_drift(void **state)
{
    static const char *const local_v[] = {
        "aaaaaaaa-0000-4000-8000-000000000001", /* in both */
        "aaaaaaaa-0000-4000-8000-000000000002", /* only here */
    };
    struct placement_strset local = {0}, only_placement = {0}, only_here = {0};
    json_t *allocs;

    (void)state;
    strset_of(&local, local_v, ARRAY_SIZE(local_v));
    allocs = json_loads("{\"aaaaaaaa-0000-4000-8000-000000000001\": {\"resources\": {\"VCPU\": 1}},"
                        " \"bbbbbbbb-0000-4000-8000-000000000009\": {\"resources\": {\"VCPU\": 2}}}",
                        0, NULL);
    assert_int_equal(placement_drift_compute(allocs, &local, &only_placement, &only_here), 0);
    assert_int_equal(only_placement.n, 1);
    assert_string_equal(only_placement.v[0], "bbbbbbbb-0000-4000-8000-000000000009");
    assert_int_equal(only_here.n, 1);
    assert_string_equal(only_here.v[0], local_v[1]);
    json_decref(allocs);
    assert_int_equal(placement_drift_compute(NULL, &local, &only_placement, &only_here), -EINVAL);
    placement_strset_clear(&local);
    placement_strset_clear(&only_placement);
    placement_strset_clear(&only_here);
}

/* ---- the client object, with nobody listening ---- */

struct down_ctx {
    unsigned errors;          /* on_error calls */
    char last_code[32];       /* their code */
    char last_field[96];      /* their field */
    unsigned synced;          /* on_synced calls */
    int check_status;         /* usage check result */
    bool check_done;
};

static void down_on_error(struct placement *p, const struct agent_error *err, void *opaque)
{
    struct down_ctx *c = opaque;

    (void)p;
    c->errors++;
    strscpy(c->last_code, err->code, sizeof(c->last_code));
    strscpy(c->last_field, err->field, sizeof(c->last_field));
}

static void down_on_synced(struct placement *p, void *opaque)
{
    (void)p;
    ((struct down_ctx *)opaque)->synced++;
}

static void down_on_check(struct placement *p, int status, const struct placement_drift *drift,
                          const struct agent_error *err, void *opaque)
{
    struct down_ctx *c = opaque;

    (void)p;
    assert_null(drift);
    assert_non_null(err);
    c->check_status = status;
    c->check_done = true;
}

/* A loopback port with no listener: connections are refused at once. */
static int closed_port(void)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM, 0), port;

    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    port = ntohs(sa.sin_port);
    close(fd);
    return port;
}

static void on_deadline(uv_timer_t *t)
{
    (void)t;
}

static void free_on_error(struct placement *p, const struct agent_error *err, void *opaque)
{
    (void)err;
    (*(unsigned *)opaque)++;
    placement_free(p);
}

static void test_controller_down(void **state)
{
    uv_loop_t loop;
    uv_timer_t deadline;
    struct down_ctx ctx = {0};
    struct placement_callbacks cb = {.on_error = down_on_error, .on_synced = down_on_synced};
    struct placement *p = NULL;
    struct placement_stats st;
    char url[64];
    uint64_t t0, took_ns;
    const char *consumers[] = {"aaaaaaaa-0000-4000-8000-000000000001"};

    (void)state;
    snprintf(url, sizeof(url), "http://127.0.0.1:%d", closed_port());
    struct placement_config cfg = {
        .url = url, .token = "admin", .provider_name = "down-host",
        .backoff_initial_ms = 20, .backoff_max_ms = 80,
    };
    assert_int_equal(uv_loop_init(&loop), 0);
    uv_timer_init(&loop, &deadline);
    assert_int_equal(placement_new(&loop, &cfg, &cb, &ctx, &p), 0);

    /* the setters only record: they return at once and send nothing */
    t0 = now_mono_ns();
    assert_int_equal(placement_set_inventory(p, host_inv, 3), 0);
    placement_set_disabled(p, true);
    assert_int_equal(placement_check_usage(p, consumers, 1, down_on_check, &ctx), 0);
    assert_int_equal(placement_check_usage(p, consumers, 1, down_on_check, &ctx), -EBUSY);
    took_ns = now_mono_ns() - t0;
    assert_true(took_ns < 50ull * 1000000);
    placement_stats(p, &st);
    assert_int_equal(st.requests, 0);
    assert_int_equal(ctx.errors, 0); /* no callback from inside a call */

    /* errors come back through the loop, retried with backoff */
    uv_timer_start(&deadline, on_deadline, 10000, 0);
    while (ctx.errors < 4 && uv_is_active((uv_handle_t *)&deadline))
        uv_run(&loop, UV_RUN_ONCE);
    assert_true(ctx.errors >= 4);
    assert_string_equal(ctx.last_code, "unavailable");
    assert_string_equal(ctx.last_field, "version");
    assert_true(ctx.check_done); /* the check did not wait for the controller */
    assert_int_equal(ctx.check_status, -EAGAIN);
    assert_int_equal(ctx.synced, 0);
    placement_stats(p, &st);
    assert_true(st.requests >= 4);
    assert_int_equal(st.ok, 0);
    assert_true(st.error >= 4);
    assert_false(st.reachable);
    assert_false(st.synced);
    assert_null(placement_provider_uuid(p));

    placement_free(p);

    /* a usage check while the controller is down completes with an error
     * at the first failure instead of waiting; registration, still wanted,
     * keeps being retried */
    {
        struct placement_callbacks cb3 = {.on_error = down_on_error};
        struct down_ctx ctx3 = {0};
        struct placement *p3 = NULL;
        struct placement_stats st3;
        uint64_t sent;

        assert_int_equal(placement_new(&loop, &cfg, &cb3, &ctx3, &p3), 0);
        assert_int_equal(placement_check_usage(p3, consumers, 1, down_on_check, &ctx3), 0);
        uv_timer_start(&deadline, on_deadline, 10000, 0);
        while (!ctx3.check_done && uv_is_active((uv_handle_t *)&deadline))
            uv_run(&loop, UV_RUN_ONCE);
        assert_true(ctx3.check_done);
        /* registration is still wanted: it keeps retrying with backoff */
        placement_stats(p3, &st3);
        sent = st3.requests;
        uv_timer_start(&deadline, on_deadline, 300, 0);
        while (uv_is_active((uv_handle_t *)&deadline))
            uv_run(&loop, UV_RUN_ONCE);
        placement_stats(p3, &st3);
        assert_true(st3.requests > sent);
        placement_free(p3);
    }

    /* placement_free() from inside a callback: nothing fires after it */
    {
        struct placement_callbacks cb2 = {.on_error = free_on_error};
        unsigned freed = 0;
        struct placement *p2 = NULL;

        assert_int_equal(placement_new(&loop, &cfg, &cb2, &freed, &p2), 0);
        assert_int_equal(placement_set_inventory(p2, host_inv, 3), 0);
        uv_timer_start(&deadline, on_deadline, 10000, 0);
        while (freed < 1 && uv_is_active((uv_handle_t *)&deadline))
            uv_run(&loop, UV_RUN_ONCE);
        assert_int_equal(freed, 1);
        uv_timer_start(&deadline, on_deadline, 300, 0);
        while (uv_is_active((uv_handle_t *)&deadline))
            uv_run(&loop, UV_RUN_ONCE);
        assert_int_equal(freed, 1);
    }

    uv_close((uv_handle_t *)&deadline, NULL);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* ---- issue 11: allocations written and removed ---- */

struct alloc_ctx {
    int calls, last_status;
    bool last_removed;
    char last[37];
};

static void alloc_cb(struct placement *p, const char *consumer, bool removed, int status,
                     const struct agent_error *err, void *opaque)
{
    struct alloc_ctx *a = opaque;

    (void)p;
    a->calls++;
    a->last_status = status;
    a->last_removed = removed;
    strscpy(a->last, consumer, sizeof(a->last));
    if (status < 0)
        assert_non_null(err);
}

static void test_allocations(void **state)
{
    static const char c1[] = "aaaaaaaa-0000-4000-8000-000000000001";
    static const char c2[] = "aaaaaaaa-0000-4000-8000-000000000002";
    const struct placement_allocation a = {.vcpus = 2, .memory_mb = 512, .disk_gb = 0, .project_id = "p",
                                           .user_id = "u"};
    struct placement_allocation bad = a;
    struct placement_callbacks cb = {.on_allocation = alloc_cb};
    struct alloc_ctx ctx = {0};
    struct placement_config cfg = {.url = "http://127.0.0.1:9", .token = "admin", .provider_name = "h"};
    struct placement *p = NULL;
    uv_loop_t loop;
    json_t *b;
    const char *conflict = "{\"errors\":[{\"status\":409,\"code\":\"placement.concurrent_update\"}]}";
    const char *gen = "{\"allocations\":{},\"consumer_generation\":3}";

    (void)state;
    /* the body by microversion */
    b = placement_allocation_body("rp", "1.39", 2, 512, 0, "p", "u", false, 0);
    assert_non_null(b);
    assert_int_equal(json_integer_value(json_object_get(
                         json_object_get(json_object_get(json_object_get(b, "allocations"), "rp"), "resources"),
                         "MEMORY_MB")),
                     512);
    assert_null(json_object_get(json_object_get(json_object_get(json_object_get(b, "allocations"), "rp"),
                                                "resources"),
                                "DISK_GB"));
    assert_true(json_is_null(json_object_get(b, "consumer_generation")));
    assert_string_equal(json_string_value(json_object_get(b, "consumer_type")), "INSTANCE");
    assert_string_equal(json_string_value(json_object_get(b, "project_id")), "p");
    json_decref(b);
    b = placement_allocation_body("rp", "1.30", 1, 1, 1, "p", "u", true, 7);
    assert_int_equal(json_integer_value(json_object_get(b, "consumer_generation")), 7);
    assert_null(json_object_get(b, "consumer_type"));
    json_decref(b);
    b = placement_allocation_body("rp", "1.26", 1, 1, 1, "p", "u", true, 7);
    assert_null(json_object_get(b, "consumer_generation"));
    json_decref(b);

    assert_int_equal(uv_loop_init(&loop), 0);
    assert_int_equal(placement_new(&loop, &cfg, &cb, &ctx, &p), 0);
    /* refused: bad uuid, no owner, nothing to allocate */
    assert_int_equal(placement_put_allocation(p, "nope", &a), -EINVAL);
    bad.project_id = "";
    assert_int_equal(placement_put_allocation(p, c1, &bad), -EINVAL);
    bad = a;
    bad.vcpus = bad.memory_mb = 0;
    assert_int_equal(placement_put_allocation(p, c1, &bad), -EINVAL);
    assert_int_equal(placement_delete_allocation(p, "x"), -EINVAL);
    /* queued, one per consumer: a later delete replaces the put */
    assert_int_equal(placement_put_allocation(p, c1, &a), 0);
    assert_int_equal(placement_put_allocation(p, c2, &a), 0);
    assert_int_equal(placement_allocations_pending(p), 2);
    assert_int_equal(placement_delete_allocation(p, c2), 0);
    assert_int_equal(placement_allocations_pending(p), 2);
    /* a consumer generation conflict: read the generation, send again */
    assert_int_equal(placement_feed_answer(p, PLACEMENT_STEP_ALLOC_PUT, 409, conflict, strlen(conflict), NULL), 0);
    assert_int_equal(ctx.calls, 0);
    assert_int_equal(placement_allocations_pending(p), 2);
    assert_int_equal(placement_feed_answer(p, PLACEMENT_STEP_ALLOC_GET, 200, gen, strlen(gen), NULL), 0);
    assert_int_equal(ctx.calls, 0);
    /* a transient failure keeps it */
    assert_int_equal(placement_feed_answer(p, PLACEMENT_STEP_ALLOC_PUT, 503, "", 0, NULL), 0);
    assert_int_equal(placement_allocations_pending(p), 2);
    assert_int_equal(placement_feed_answer(p, PLACEMENT_STEP_ALLOC_PUT, 204, "", 0, NULL), 0);
    assert_int_equal(ctx.calls, 1);
    assert_int_equal(ctx.last_status, 0);
    assert_false(ctx.last_removed);
    assert_string_equal(ctx.last, c1);
    /* the removal: a 404 is done too */
    assert_int_equal(placement_feed_answer(p, PLACEMENT_STEP_ALLOC_DELETE, 404, "", 0, NULL), 0);
    assert_int_equal(ctx.calls, 2);
    assert_true(ctx.last_removed);
    assert_string_equal(ctx.last, c2);
    assert_int_equal(placement_allocations_pending(p), 0);
    assert_int_equal(placement_feed_answer(p, PLACEMENT_STEP_ALLOC_DELETE, 204, "", 0, NULL), -EINVAL);
    /* refused for good (no capacity): reported, dropped */
    assert_int_equal(placement_put_allocation(p, c1, &a), 0);
    {
        const char *full = "{\"errors\":[{\"code\":\"placement.undefined_code\"}]}";
        assert_int_equal(placement_feed_answer(p, PLACEMENT_STEP_ALLOC_PUT, 409, full, strlen(full), NULL), 0);
    }
    assert_int_equal(ctx.calls, 3);
    assert_int_equal(ctx.last_status, -EPROTO);
    assert_int_equal(placement_allocations_pending(p), 0);
    placement_free(p);
    while (uv_run(&loop, UV_RUN_NOWAIT))
        ;
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* ---- issue 12: allocations moved between two consumers (a resize) ---- */

static json_t *entry(json_t *body, const char *consumer)
{
    return json_object_get(body, consumer);
}

static void test_move_body(void **state)
{
    struct placement_alloc_side sides[2] = {0};
    json_t *b, *res;

    (void)state;
    strscpy(sides[0].consumer, "bbbbbbbb-0000-4000-8000-000000000001", 37);
    sides[0].project_id = (char *)"p";
    sides[0].user_id = (char *)"u";
    sides[0].consumer_type = (char *)"MIGRATION";
    sides[0].have_gen = true;
    sides[0].gen = 4;
    strscpy(sides[1].consumer, "bbbbbbbb-0000-4000-8000-000000000002", 37);
    sides[1].vcpus = 2;
    sides[1].memory_mb = 512;
    sides[1].project_id = (char *)"p";
    sides[1].user_id = (char *)"u";

    b = placement_move_body("rp", "1.39", sides, 2);
    assert_non_null(b);
    assert_int_equal(json_object_size(b), 2);
    /* the emptied source: no allocations, its generation, its type */
    assert_int_equal(json_object_size(json_object_get(entry(b, sides[0].consumer), "allocations")), 0);
    assert_int_equal(json_integer_value(json_object_get(entry(b, sides[0].consumer), "consumer_generation")), 4);
    assert_string_equal(json_string_value(json_object_get(entry(b, sides[0].consumer), "consumer_type")),
                        "MIGRATION");
    assert_string_equal(json_string_value(json_object_get(entry(b, sides[0].consumer), "project_id")), "p");
    /* the target: its resources against the provider, a new consumer */
    res = json_object_get(json_object_get(json_object_get(entry(b, sides[1].consumer), "allocations"), "rp"),
                          "resources");
    assert_int_equal(json_integer_value(json_object_get(res, "VCPU")), 2);
    assert_int_equal(json_integer_value(json_object_get(res, "MEMORY_MB")), 512);
    assert_null(json_object_get(res, "DISK_GB"));
    assert_true(json_is_null(json_object_get(entry(b, sides[1].consumer), "consumer_generation")));
    assert_string_equal(json_string_value(json_object_get(entry(b, sides[1].consumer), "consumer_type")),
                        "INSTANCE");
    json_decref(b);
    /* 1.28..1.37: generations, no types; before 1.28: no move at all */
    b = placement_move_body("rp", "1.30", sides, 2);
    assert_non_null(b);
    assert_null(json_object_get(entry(b, sides[0].consumer), "consumer_type"));
    assert_int_equal(json_integer_value(json_object_get(entry(b, sides[0].consumer), "consumer_generation")), 4);
    json_decref(b);
    assert_null(placement_move_body("rp", "1.27", sides, 2));
    assert_null(placement_move_body("rp", "", sides, 2));
}

static void test_move_side_read(void **state)
{
    struct placement_alloc_side s = {.vcpus = 2, .memory_mb = 512};
    struct placement_alloc_side empty = {0};
    json_t *b;

    (void)state;
    b = json_loads("{\"allocations\": {\"rp\": {\"generation\": 9, \"resources\": {\"VCPU\": 2, \"MEMORY_MB\": 512}}},"
                   " \"consumer_generation\": 5, \"consumer_type\": \"MIGRATION\", \"project_id\": \"p\"}",
                   0, NULL);
    assert_int_equal(placement_alloc_side_read(&s, "rp", b), 0);
    assert_true(s.have_gen);
    assert_int_equal(s.gen, 5);
    assert_false(s.holds_none);
    assert_true(s.holds_wanted);
    assert_string_equal(s.consumer_type, "MIGRATION"); /* taken: the side had none */
    assert_int_equal(placement_alloc_side_read(&empty, "rp", b), 0);
    assert_false(empty.holds_wanted); /* wants nothing, holds something */
    json_decref(b);
    free(s.consumer_type);
    s.consumer_type = NULL;
    free(empty.consumer_type);
    empty.consumer_type = NULL;
    /* more than wanted, another provider, another amount: not what is wanted */
    b = json_loads("{\"allocations\": {\"rp\": {\"resources\": {\"VCPU\": 2, \"MEMORY_MB\": 512, \"DISK_GB\": 1}}},"
                   " \"consumer_generation\": 1}", 0, NULL);
    assert_int_equal(placement_alloc_side_read(&s, "rp", b), 0);
    assert_false(s.holds_wanted);
    json_decref(b);
    b = json_loads("{\"allocations\": {\"rp\": {\"resources\": {\"VCPU\": 2, \"MEMORY_MB\": 512}},"
                   " \"other\": {\"resources\": {\"DISK_GB\": 1}}}, \"consumer_generation\": 1}", 0, NULL);
    assert_int_equal(placement_alloc_side_read(&s, "rp", b), 0);
    assert_false(s.holds_wanted);
    json_decref(b);
    b = json_loads("{\"allocations\": {\"rp\": {\"resources\": {\"VCPU\": 1, \"MEMORY_MB\": 512}}}}", 0, NULL);
    assert_int_equal(placement_alloc_side_read(&s, "rp", b), 0);
    assert_false(s.holds_wanted);
    json_decref(b);
    /* a consumer Placement does not know: no generation, nothing held */
    b = json_loads("{\"allocations\": {}}", 0, NULL);
    assert_int_equal(placement_alloc_side_read(&s, "rp", b), 0);
    assert_false(s.have_gen);
    assert_true(s.holds_none);
    assert_false(s.holds_wanted);
    assert_int_equal(placement_alloc_side_read(&empty, "rp", b), 0);
    assert_true(empty.holds_wanted);
    json_decref(b);
    b = json_loads("{\"allocations\": []}", 0, NULL);
    assert_int_equal(placement_alloc_side_read(&s, "rp", b), -EINVAL);
    json_decref(b);
    assert_null(s.consumer_type);
}

static void feed(struct placement *p, enum placement_step step, long status, const char *body)
{
    assert_int_equal(placement_feed_answer(p, step, status, body, strlen(body), NULL), 0);
}

static void test_move_allocations(void **state)
{
    static const char inst[] = "cccccccc-0000-4000-8000-000000000001";
    static const char mig[] = "cccccccc-0000-4000-8000-0000000000AA";
    static const char mig_lower[] = "cccccccc-0000-4000-8000-0000000000aa";
    const struct placement_allocation oldf = {.vcpus = 1, .memory_mb = 256, .project_id = "p", .user_id = "u",
                                              .consumer_type = "MIGRATION"};
    const struct placement_allocation newf = {.vcpus = 2, .memory_mb = 512, .disk_gb = 1, .project_id = "p",
                                              .user_id = "u"};
    struct placement_allocation bad = newf;
    struct placement_callbacks cb = {.on_allocation = alloc_cb};
    struct alloc_ctx ctx = {0};
    struct placement_config cfg = {.url = "http://127.0.0.1:9", .token = "admin", .provider_name = "h"};
    struct placement *p = NULL;
    uv_loop_t loop;
    const char *conflict = "{\"errors\":[{\"status\":409,\"code\":\"placement.concurrent_update\"}]}";
    const char *full = "{\"errors\":[{\"status\":409,\"code\":\"placement.undefined_code\"}]}";
    const char *none = "{\"allocations\":{}}";
    const char *held_old = "{\"allocations\":{\"\":{\"resources\":{\"VCPU\":1,\"MEMORY_MB\":256}}},"
                           "\"consumer_generation\":2}";
    const char *held_new = "{\"allocations\":{\"\":{\"resources\":{\"VCPU\":2,\"MEMORY_MB\":512,\"DISK_GB\":1}}},"
                           "\"consumer_generation\":3}";

    (void)state;
    assert_int_equal(uv_loop_init(&loop), 0);
    assert_int_equal(placement_new(&loop, &cfg, &cb, &ctx, &p), 0);
    /* refused: bad or equal uuids, nothing for the target, a bad type */
    assert_int_equal(placement_move_allocations(p, "x", mig, &newf, &oldf), -EINVAL);
    assert_int_equal(placement_move_allocations(p, inst, inst, &newf, &oldf), -EINVAL);
    assert_int_equal(placement_move_allocations(p, mig, mig_lower, NULL, &oldf), -EINVAL);
    assert_int_equal(placement_move_allocations(p, inst, mig, &newf, NULL), -EINVAL);
    bad.consumer_type = "migration";
    assert_int_equal(placement_move_allocations(p, inst, mig, &newf, &bad), -EINVAL);
    bad = newf;
    bad.user_id = NULL;
    assert_int_equal(placement_move_allocations(p, inst, mig, &bad, &oldf), -EINVAL);
    assert_int_equal(placement_allocations_pending(p), 0);

    /* the queue: a move replaces a put of either consumer; a put or a
     * removal of one consumer does not replace a move (it goes after it);
     * a move of the same two consumers replaces all of them */
    assert_int_equal(placement_put_allocation(p, inst, &oldf), 0);
    assert_int_equal(placement_move_allocations(p, inst, mig, &newf, &oldf), 0);
    assert_int_equal(placement_allocations_pending(p), 1);
    assert_int_equal(placement_put_allocation(p, inst, &newf), 0);
    assert_int_equal(placement_delete_allocation(p, mig), 0);
    assert_int_equal(placement_allocations_pending(p), 3);
    assert_int_equal(placement_move_allocations(p, mig, inst, NULL, &oldf), 0);
    assert_int_equal(placement_allocations_pending(p), 1);

    /* move back: read both, POST; a generation conflict reads both again */
    feed(p, PLACEMENT_STEP_MOVE_GET, 200, held_old); /* the migration consumer */
    feed(p, PLACEMENT_STEP_MOVE_GET, 200, held_new); /* the instance */
    assert_int_equal(ctx.calls, 0);
    feed(p, PLACEMENT_STEP_MOVE_POST, 409, conflict);
    assert_int_equal(ctx.calls, 0);
    assert_int_equal(placement_allocations_pending(p), 1);
    /* a POST answer never got (transfer failed): kept, retried later */
    feed(p, PLACEMENT_STEP_MOVE_GET, 200, held_old);
    feed(p, PLACEMENT_STEP_MOVE_GET, 200, held_new);
    feed(p, PLACEMENT_STEP_MOVE_POST, 0, "");
    feed(p, PLACEMENT_STEP_MOVE_POST, 503, "");
    assert_int_equal(ctx.calls, 0);
    assert_int_equal(placement_allocations_pending(p), 1);
    feed(p, PLACEMENT_STEP_MOVE_POST, 204, "");
    /* one report per consumer: the emptied source first */
    assert_int_equal(ctx.calls, 2);
    assert_int_equal(ctx.last_status, 0);
    assert_false(ctx.last_removed);
    assert_string_equal(ctx.last, inst);
    assert_int_equal(placement_allocations_pending(p), 0);
    assert_int_equal(placement_feed_answer(p, PLACEMENT_STEP_MOVE_POST, 204, "", 0, NULL), -EINVAL);

    /* both already hold what is wanted (an earlier move landed, its answer
     * was lost; or a restart writing it again): done without a POST.
     * The provider is not known in this test, so it is "" in the answers. */
    assert_int_equal(placement_move_allocations(p, inst, mig, &newf, &oldf), 0);
    feed(p, PLACEMENT_STEP_MOVE_GET, 200, held_new);
    assert_int_equal(ctx.calls, 2);
    feed(p, PLACEMENT_STEP_MOVE_GET, 200, held_old);
    assert_int_equal(ctx.calls, 4);
    assert_int_equal(ctx.last_status, 0);
    assert_string_equal(ctx.last, mig_lower);
    assert_int_equal(placement_allocations_pending(p), 0);
    /* an empty source and a target holding it: done too */
    assert_int_equal(placement_move_allocations(p, mig, inst, NULL, &newf), 0);
    feed(p, PLACEMENT_STEP_MOVE_GET, 200, none);
    feed(p, PLACEMENT_STEP_MOVE_GET, 200, held_new);
    assert_int_equal(ctx.calls, 6);
    assert_int_equal(placement_allocations_pending(p), 0);

    /* refused for good (capacity): reported for both, dropped */
    assert_int_equal(placement_move_allocations(p, inst, mig, &newf, &oldf), 0);
    feed(p, PLACEMENT_STEP_MOVE_GET, 200, none);
    feed(p, PLACEMENT_STEP_MOVE_GET, 200, none);
    feed(p, PLACEMENT_STEP_MOVE_POST, 409, full);
    assert_int_equal(ctx.calls, 8);
    assert_int_equal(ctx.last_status, -EPROTO);
    assert_int_equal(placement_allocations_pending(p), 0);
    /* an unreadable read refuses it too */
    assert_int_equal(placement_move_allocations(p, inst, mig, &newf, &oldf), 0);
    feed(p, PLACEMENT_STEP_MOVE_GET, 200, "[]");
    assert_int_equal(ctx.calls, 10);
    assert_int_equal(ctx.last_status, -EPROTO);
    /* conflicts beyond the bound back off (kept, not reported) */
    assert_int_equal(placement_move_allocations(p, inst, mig, &newf, &oldf), 0);
    for (unsigned i = 0; i < 12; i++) {
        feed(p, PLACEMENT_STEP_MOVE_GET, 200, none);
        feed(p, PLACEMENT_STEP_MOVE_GET, 200, none);
        feed(p, PLACEMENT_STEP_MOVE_POST, 409, conflict);
    }
    assert_int_equal(ctx.calls, 10);
    assert_int_equal(placement_allocations_pending(p), 1);
    placement_free(p);
    while (uv_run(&loop, UV_RUN_NOWAIT))
        ;
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* issue 12: what the controller asks of Placement at an operation's end
 * and at start */
static size_t plan_end(const char *type, const char *state, const struct instance *inst, bool agent,
                       enum controller_alloc_act out[CONTROLLER_ALLOC_ACTS_MAX])
{
    struct op_record rec = {0};

    strscpy(rec.type, type, sizeof(rec.type));
    strscpy(rec.state, state, sizeof(rec.state));
    return controller_plan_finished(&rec, inst, agent, out);
}

static void test_controller_plans(void **state)
{
    struct instance inst = {.flavor = {2, 512, 2}};
    enum controller_alloc_act a[CONTROLLER_ALLOC_ACTS_MAX];

    (void)state;
    strscpy(inst.uuid, "dddddddd-0000-4000-8000-000000000001", sizeof(inst.uuid));
    strscpy(inst.state, "running", sizeof(inst.state));

    /* scheduler mode: only a terminate's removal */
    assert_int_equal(plan_end("resize", "succeeded", &inst, false, a), 0);
    assert_int_equal(plan_end("revert_resize", "succeeded", &inst, false, a), 0);
    assert_int_equal(controller_plan_start(&inst, false, a), 0);

    /* live resize: the instance's allocation replaced, ended well or not */
    strscpy(inst.resize.mode, "live", sizeof(inst.resize.mode));
    assert_int_equal(plan_end("resize", "succeeded", &inst, true, a), 1);
    assert_int_equal(a[0], CONTROLLER_ALLOC_PUT);
    assert_int_equal(plan_end("resize", "failed", &inst, true, a), 1);
    assert_int_equal(a[0], CONTROLLER_ALLOC_PUT);

    /* cold resize: claimed (moved), waiting in resized */
    strscpy(inst.resize.mode, "cold", sizeof(inst.resize.mode));
    strscpy(inst.resize.migration_uuid, "dddddddd-0000-4000-8000-0000000000aa", sizeof(inst.resize.migration_uuid));
    inst.resize.old_flavor = (struct flavor){1, 256, 1};
    inst.resize.pending = true;
    strscpy(inst.state, "resized", sizeof(inst.state));
    assert_int_equal(plan_end("resize", "succeeded", &inst, true, a), 1);
    assert_int_equal(a[0], CONTROLLER_ALLOC_MOVE);
    /* a restart meanwhile writes the move again */
    assert_int_equal(controller_plan_start(&inst, true, a), 1);
    assert_int_equal(a[0], CONTROLLER_ALLOC_MOVE);
    assert_int_equal(controller_plan_start(&inst, false, a), 0);
    /* a live resize under way beside a settled cold one's migration uuid:
     * that consumer is not written again, it is removed */
    strscpy(inst.resize.mode, "live", sizeof(inst.resize.mode));
    assert_int_equal(controller_plan_start(&inst, true, a), 2);
    assert_int_equal(a[0], CONTROLLER_ALLOC_PUT);
    assert_int_equal(a[1], CONTROLLER_ALLOC_DELETE_MIGRATION);
    assert_true(controller_consumer_removable(NULL, &inst, true));
    strscpy(inst.resize.mode, "cold", sizeof(inst.resize.mode));
    /* confirm: the migration consumer removed; revert: moved back */
    inst.resize.pending = false;
    strscpy(inst.state, "running", sizeof(inst.state));
    assert_int_equal(plan_end("confirm_resize", "succeeded", &inst, true, a), 1);
    assert_int_equal(a[0], CONTROLLER_ALLOC_DELETE_MIGRATION);
    assert_int_equal(plan_end("revert_resize", "succeeded", &inst, true, a), 1);
    assert_int_equal(a[0], CONTROLLER_ALLOC_MOVE_BACK);
    assert_int_equal(plan_end("confirm_resize", "failed", &inst, true, a), 0);
    assert_int_equal(plan_end("revert_resize", "failed", &inst, true, a), 0);
    /* a cold resize that failed and rolled back: moved back */
    assert_int_equal(plan_end("resize", "failed", &inst, true, a), 1);
    assert_int_equal(a[0], CONTROLLER_ALLOC_MOVE_BACK);
    /* settled: a start writes the instance's and removes the migration
     * consumer's (a crash may have left it) */
    assert_int_equal(controller_plan_start(&inst, true, a), 2);
    assert_int_equal(a[0], CONTROLLER_ALLOC_PUT);
    assert_int_equal(a[1], CONTROLLER_ALLOC_DELETE_MIGRATION);
    /* ended in error: nothing held any more */
    strscpy(inst.state, "error", sizeof(inst.state));
    assert_int_equal(plan_end("resize", "failed", &inst, true, a), 2);
    assert_int_equal(a[0], CONTROLLER_ALLOC_DELETE);
    assert_int_equal(a[1], CONTROLLER_ALLOC_DELETE_MIGRATION);
    assert_int_equal(controller_plan_start(&inst, true, a), 2);
    assert_int_equal(a[0], CONTROLLER_ALLOC_DELETE);
    /* terminated: removed in every mode; the migration consumer with agent */
    strscpy(inst.state, "terminated", sizeof(inst.state));
    assert_int_equal(plan_end("terminate", "succeeded", &inst, false, a), 1);
    assert_int_equal(a[0], CONTROLLER_ALLOC_DELETE);
    assert_int_equal(plan_end("terminate", "succeeded", &inst, true, a), 2);
    assert_int_equal(a[1], CONTROLLER_ALLOC_DELETE_MIGRATION);
    assert_int_equal(controller_plan_start(&inst, false, a), 1);
    assert_int_equal(a[0], CONTROLLER_ALLOC_DELETE);
    /* a launch (issue 11) */
    memset(inst.resize.migration_uuid, 0, sizeof(inst.resize.migration_uuid));
    strscpy(inst.state, "error", sizeof(inst.state));
    assert_int_equal(plan_end("launch", "failed", &inst, true, a), 1);
    assert_int_equal(a[0], CONTROLLER_ALLOC_DELETE);
    assert_int_equal(plan_end("launch", "failed", &inst, false, a), 0);
    strscpy(inst.state, "running", sizeof(inst.state));
    assert_int_equal(plan_end("launch", "succeeded", &inst, true, a), 0);
    assert_int_equal(controller_plan_start(&inst, true, a), 1);
    assert_int_equal(a[0], CONTROLLER_ALLOC_PUT);
    /* confirm without a migration consumer: the instance's written */
    assert_int_equal(plan_end("confirm_resize", "succeeded", &inst, true, a), 1);
    assert_int_equal(a[0], CONTROLLER_ALLOC_PUT);
    assert_int_equal(plan_end("stop", "succeeded", &inst, true, a), 0);

    /* usage_heal = fix: what may be removed */
    assert_false(controller_consumer_removable(NULL, NULL, true)); /* a stranger */
    assert_false(controller_consumer_removable(&inst, NULL, true)); /* running here */
    strscpy(inst.state, "error", sizeof(inst.state));
    assert_true(controller_consumer_removable(&inst, NULL, true));
    assert_false(controller_consumer_removable(&inst, NULL, false));
    strscpy(inst.state, "terminated", sizeof(inst.state));
    assert_true(controller_consumer_removable(&inst, NULL, false));
    /* a migration consumer: kept while its cold resize is pending */
    strscpy(inst.resize.migration_uuid, "dddddddd-0000-4000-8000-0000000000aa", sizeof(inst.resize.migration_uuid));
    strscpy(inst.state, "resized", sizeof(inst.state));
    inst.resize.pending = true;
    assert_false(controller_consumer_removable(NULL, &inst, true));
    inst.resize.pending = false;
    assert_true(controller_consumer_removable(NULL, &inst, true));
    inst.resize.pending = true;
    strscpy(inst.state, "error", sizeof(inst.state));
    assert_true(controller_consumer_removable(NULL, &inst, false));
}

/* issue 11: the standard traits of a host (names checked against os-traits
 * in tests/integration/test_placement_usage.py) */
static void test_compute_traits(void **state)
{
    const char *t[COMPUTE_TRAITS_MAX];
    size_t n;
    bool seen_virtio_nic = false, seen_xen = false;

    (void)state;
    n = controller_compute_traits("x86_64", "kvm", false, true, t);
    assert_true(n <= COMPUTE_TRAITS_MAX);
    assert_string_equal(t[0], "COMPUTE_NODE");
    assert_string_equal(t[1], "COMPUTE_ARCH_X86_64");
    for (size_t i = 0; i < n; i++)
        seen_virtio_nic |= !strcmp(t[i], "COMPUTE_NET_VIF_MODEL_VIRTIO");
    assert_false(seen_virtio_nic); /* no networks: no NICs */
    n = controller_compute_traits("x86_64", "kvm", true, true, t);
    for (size_t i = 0; i < n; i++)
        seen_virtio_nic |= !strcmp(t[i], "COMPUTE_NET_VIF_MODEL_VIRTIO");
    assert_true(seen_virtio_nic);
    assert_string_equal(t[n - 1], "COMPUTE_NET_ATTACH_INTERFACE");
    n = controller_compute_traits("x86_64", "xen", true, false, t);
    seen_virtio_nic = false;
    for (size_t i = 0; i < n; i++) {
        seen_virtio_nic |= !strcmp(t[i], "COMPUTE_NET_VIF_MODEL_VIRTIO") || !strcmp(t[i], "COMPUTE_STORAGE_BUS_VIRTIO");
        seen_xen |= !strcmp(t[i], "COMPUTE_STORAGE_BUS_XEN");
        assert_true(placement_name_valid(t[i]));
    }
    assert_false(seen_virtio_nic);
    assert_true(seen_xen);
    n = controller_compute_traits("i686", "test", false, false, t);
    assert_string_equal(t[1], "COMPUTE_IMAGE_TYPE_QCOW2"); /* no arch trait for an arch os-traits lacks */
    n = controller_compute_traits("aarch64", "qemu", false, false, t);
    assert_string_equal(t[1], "COMPUTE_ARCH_AARCH64");
}

static void test_new_rejects_bad_config(void **state)
{
    uv_loop_t loop;
    struct placement *p = NULL;
    struct placement_config cfg = {.url = "http://127.0.0.1:1", .provider_name = "h"};
    const char *bad_traits[] = {"HW_CPU_X86_AVX2", "COMPUTE_STATUS_DISABLED"};
    const char *bad_uuid[] = {"not-a-uuid"};
    struct placement_inventory bad_inv = host_inv[0];

    (void)state;
    assert_int_equal(uv_loop_init(&loop), 0);
    cfg.url = NULL;
    assert_int_equal(placement_new(&loop, &cfg, NULL, NULL, &p), -EINVAL);
    cfg.url = "ftp://x";
    assert_int_equal(placement_new(&loop, &cfg, NULL, NULL, &p), -EINVAL);
    cfg.url = "http://127.0.0.1:1";
    cfg.provider_uuid = "1234";
    assert_int_equal(placement_new(&loop, &cfg, NULL, NULL, &p), -EINVAL);
    cfg.provider_uuid = NULL;
    cfg.token = "admin\r\nX-Evil: 1";
    assert_int_equal(placement_new(&loop, &cfg, NULL, NULL, &p), -EINVAL);
    cfg.token = NULL;
    cfg.auth = PLACEMENT_AUTH_TOKEN;
    assert_int_equal(placement_new(&loop, &cfg, NULL, NULL, &p), -EINVAL);
    cfg.auth = PLACEMENT_AUTH_KEYSTONE;
    cfg.keystone.auth_url = "http://ks:5000";
    cfg.keystone.username = "u";
    assert_int_equal(placement_new(&loop, &cfg, NULL, NULL, &p), -EINVAL);
    cfg.auth = PLACEMENT_AUTH_NONE;
    cfg.provider_name = "bad\nname";
    assert_int_equal(placement_new(&loop, &cfg, NULL, NULL, &p), -EINVAL);
    assert_null(p);

    /* a good one, then bad input to the setters; freed before it ever ran */
    cfg.provider_name = NULL; /* the host name */
    assert_int_equal(placement_new(&loop, &cfg, NULL, NULL, &p), 0);
    assert_int_equal(placement_set_traits(p, bad_traits, 2), -EINVAL);
    bad_inv.max_unit = 0;
    assert_int_equal(placement_set_inventory(p, &bad_inv, 1), -EINVAL);
    assert_int_equal(placement_check_usage(p, bad_uuid, 1, down_on_check, NULL), -EINVAL);
    placement_free(p);
    placement_free(NULL);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_traits_from_cpu),
        cmocka_unit_test(test_traits_from_expanded_cpu),
        cmocka_unit_test(test_traits_from_cpu_errors),
        cmocka_unit_test(test_cpu_feature_aliases),
        cmocka_unit_test(test_inventory_build),
        cmocka_unit_test(test_inventory_diff),
        cmocka_unit_test(test_inventory_merge),
        cmocka_unit_test(test_traits_merge),
        cmocka_unit_test(test_strset),
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_backoff),
        cmocka_unit_test(test_microversion),
        cmocka_unit_test(test_keystone),
        cmocka_unit_test(test_drift),
        cmocka_unit_test(test_controller_down),
        cmocka_unit_test(test_new_rejects_bad_config),
        cmocka_unit_test(test_allocations),
        cmocka_unit_test(test_move_body),
        cmocka_unit_test(test_move_side_read),
        cmocka_unit_test(test_move_allocations),
        cmocka_unit_test(test_controller_plans),
        cmocka_unit_test(test_compute_traits),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
