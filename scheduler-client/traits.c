/* traits.c: which traits this client owns, how they merge with the ones
 * already on the provider, and CPU feature names -> os-traits names. The
 * features come parsed (the hypervisor layer reads libvirt's capabilities:
 * agent/hypervisor/caps.c). */
#include "scheduler-client/placement-internal.h"

#include <strings.h>

#include "common/util.h"

/* libvirt's cpu_map feature names (x86_features.xml), the /proc/cpuinfo
 * spelling where it differs, and their os-traits 2.x names. Features without
 * a standard trait are left out. */
static const struct {
    const char *feature;
    const char *trait;
} cpu_traits[] = {
    {"3dnow", "HW_CPU_X86_3DNOW"},
    {"abm", "HW_CPU_X86_ABM"},
    {"aes", "HW_CPU_X86_AESNI"},
    {"amd-no-ssb", "HW_CPU_X86_AMD_NO_SSB"},
    {"amd-ssbd", "HW_CPU_X86_AMD_SSBD"},
    {"avx", "HW_CPU_X86_AVX"},
    {"avx2", "HW_CPU_X86_AVX2"},
    {"avx512-vpopcntdq", "HW_CPU_X86_AVX512VPOPCNTDQ"},
    {"avx512_vpopcntdq", "HW_CPU_X86_AVX512VPOPCNTDQ"},
    {"avx512bitalg", "HW_CPU_X86_AVX512BITALG"},
    {"avx512_bitalg", "HW_CPU_X86_AVX512BITALG"},
    {"avx512bw", "HW_CPU_X86_AVX512BW"},
    {"avx512cd", "HW_CPU_X86_AVX512CD"},
    {"avx512dq", "HW_CPU_X86_AVX512DQ"},
    {"avx512er", "HW_CPU_X86_AVX512ER"},
    {"avx512f", "HW_CPU_X86_AVX512F"},
    {"avx512ifma", "HW_CPU_X86_AVX512IFMA"},
    {"avx512pf", "HW_CPU_X86_AVX512PF"},
    {"avx512vbmi", "HW_CPU_X86_AVX512VBMI"},
    {"avx512vbmi2", "HW_CPU_X86_AVX512VBMI2"},
    {"avx512_vbmi2", "HW_CPU_X86_AVX512VBMI2"},
    {"avx512vl", "HW_CPU_X86_AVX512VL"},
    {"avx512vnni", "HW_CPU_X86_AVX512VNNI"},
    {"avx512_vnni", "HW_CPU_X86_AVX512VNNI"},
    {"bmi1", "HW_CPU_X86_BMI"},
    {"bmi2", "HW_CPU_X86_BMI2"},
    {"f16c", "HW_CPU_X86_F16C"},
    {"fma", "HW_CPU_X86_FMA3"},
    {"fma4", "HW_CPU_X86_FMA4"},
    {"gfni", "HW_CPU_X86_AVX512GFNI"},
    {"ibpb", "HW_CPU_X86_AMD_IBPB"},
    {"md-clear", "HW_CPU_X86_INTEL_MD_CLEAR"},
    {"md_clear", "HW_CPU_X86_INTEL_MD_CLEAR"},
    {"mmx", "HW_CPU_X86_MMX"},
    {"mpx", "HW_CPU_X86_MPX"},
    {"pcid", "HW_CPU_X86_INTEL_PCID"},
    {"pclmuldq", "HW_CPU_X86_CLMUL"},
    {"pclmulqdq", "HW_CPU_X86_CLMUL"},
    {"pdpe1gb", "HW_CPU_X86_PDPE1GB"},
    {"pni", "HW_CPU_X86_SSE3"},
    {"sha-ni", "HW_CPU_X86_SHA"},
    {"sha_ni", "HW_CPU_X86_SHA"},
    {"spec-ctrl", "HW_CPU_X86_INTEL_SPEC_CTRL"},
    {"ssbd", "HW_CPU_X86_INTEL_SSBD"},
    {"sse", "HW_CPU_X86_SSE"},
    {"sse2", "HW_CPU_X86_SSE2"},
    {"sse3", "HW_CPU_X86_SSE3"},
    {"sse4.1", "HW_CPU_X86_SSE41"},
    {"sse4_1", "HW_CPU_X86_SSE41"},
    {"sse4-1", "HW_CPU_X86_SSE41"},
    {"sse4.2", "HW_CPU_X86_SSE42"},
    {"sse4_2", "HW_CPU_X86_SSE42"},
    {"sse4-2", "HW_CPU_X86_SSE42"},
    {"sse4a", "HW_CPU_X86_SSE4A"},
    {"ssse3", "HW_CPU_X86_SSSE3"},
    {"stibp", "HW_CPU_X86_STIBP"},
    {"svm", "HW_CPU_X86_SVM"},
    {"tbm", "HW_CPU_X86_TBM"},
    {"vaes", "HW_CPU_X86_AVX512VAES"},
    {"virt-ssbd", "HW_CPU_X86_AMD_VIRT_SSBD"},
    {"vmx", "HW_CPU_X86_VMX"},
    {"vpclmulqdq", "HW_CPU_X86_AVX512VPCLMULQDQ"},
    {"xop", "HW_CPU_X86_XOP"},
};

static const struct {
    const char *name;
    const char *trait;
} hypervisor_traits[] = {
    {"kvm", "CUSTOM_HYPERVISOR_KVM"},
    {"qemu", "CUSTOM_HYPERVISOR_QEMU"},
    {"xen", "CUSTOM_HYPERVISOR_XEN"},
};

const char *placement_cpu_feature_trait(const char *feature)
{
    for (size_t i = 0; i < ARRAY_SIZE(cpu_traits); i++)
        if (strcmp(cpu_traits[i].feature, feature) == 0)
            return cpu_traits[i].trait;
    return NULL;
}

static bool has_prefix(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

bool placement_trait_managed(const char *name, const struct placement_strset *given)
{
    if (strcmp(name, PLACEMENT_TRAIT_DISABLED) == 0)
        return true;
    if (!given)
        return false;
    return has_prefix(name, "HW_CPU_X86_") || has_prefix(name, "CUSTOM_HYPERVISOR_") ||
           placement_strset_has(given, name);
}

int placement_traits_merge(const struct placement_strset *remote,
                           const struct placement_strset *desired,
                           const struct placement_strset *given,
                           struct placement_strset *ret)
{
    struct placement_strset out = {0};
    int r = 0;

    for (size_t i = 0; i < remote->n && r == 0; i++)
        if (!placement_trait_managed(remote->v[i], given))
            r = placement_strset_add(&out, remote->v[i]);
    for (size_t i = 0; i < desired->n && r == 0; i++)
        r = placement_strset_add(&out, desired->v[i]);
    if (r < 0) {
        placement_strset_clear(&out);
        return r;
    }
    placement_strset_clear(ret);
    *ret = out;
    return 0;
}

static void strset_clearp(struct placement_strset *set)
{
    placement_strset_clear(set);
}

/* The HW_CPU_X86_* names are x86's: another arch's features (which may
 * share a name, "aes" on aarch64) give none. Unknown arch: x86, as before
 * the host said. */
static bool arch_is_x86(const char *arch)
{
    return !arch || !*arch || !strcmp(arch, "x86_64") || !strcmp(arch, "i686");
}

int placement_traits_from_cpu(const char *arch, const char *const features[], size_t n_features,
                              const char *hypervisor, char ***ret, size_t *ret_n,
                              struct agent_error *err)
{
    _cleanup_(strset_clearp) struct placement_strset set = {0};

    if ((!features && n_features) || !ret || !ret_n)
        return agent_error_set(err, EINVAL, "invalid", NULL, "missing argument");
    if (hypervisor) {
        const char *trait = NULL;
        for (size_t i = 0; i < ARRAY_SIZE(hypervisor_traits); i++)
            if (strcasecmp(hypervisor_traits[i].name, hypervisor) == 0)
                trait = hypervisor_traits[i].trait;
        if (!trait)
            return agent_error_set(err, EINVAL, "invalid", "hypervisor",
                                   "unknown hypervisor '%.64s' (kvm, qemu, xen)", hypervisor);
        if (placement_strset_add(&set, trait) < 0)
            return -ENOMEM;
    }
    for (size_t i = 0; arch_is_x86(arch) && i < n_features; i++) {
        const char *trait = features[i] ? placement_cpu_feature_trait(features[i]) : NULL;
        if (trait && placement_strset_add(&set, trait) < 0)
            return -ENOMEM;
    }
    *ret = set.v;
    *ret_n = set.n;
    set.v = NULL;
    set.n = 0;
    return 0;
}

void placement_traits_free(char **traits, size_t n)
{
    struct placement_strset set = {.v = traits, .n = traits ? n : 0};

    placement_strset_clear(&set);
}
