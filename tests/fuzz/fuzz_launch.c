/* fuzz_launch: the launch body from untrusted bytes through the same steps
 * the API takes (JSON parse, launch_spec_parse, instance JSON, domain XML):
 * it must never crash, leak, or accept a spec that breaks its invariants.
 * Built as a libFuzzer target with `make fuzz` (clang); built by default as a
 * runner over files: fuzz_launch FILE... (the corpus in tests/fuzz/corpus/). */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/guest.h"
#include "agent/hypervisor/hv-internal.h"
#include "agent/instance.h"
#include "agent/ops/ops-internal.h"
#include "agent/request.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct catalog *cat;
static uv_loop_t loop;
static struct hv *kvm; /* never connected: the kvm driver's XML only */

static void kvm_setup(void)
{
    struct hv_config cfg = {.domain_type = "qemu", .workers = 1};

    if (uv_loop_init(&loop) < 0 || hv_new(&loop, &hv_driver_kvm, &cfg, NULL, NULL, &kvm) < 0)
        abort();
    hv_set_domain_type(kvm, "qemu", "fuzz");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct launch_spec spec;
    struct agent_error err;
    json_t *j;

    if (!cat && catalog_builtin(&cat) < 0)
        abort();
    if (!kvm)
        kvm_setup();
    j = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, NULL);
    if (!j)
        return 0;
    if (launch_spec_parse(j, cat, &spec, &err) == 0) {
        struct instance inst = {0};
        struct guest g;
        char *xml = NULL;
        json_t *shown;

        /* invariants of an accepted spec */
        if (!spec.name || !*spec.name || strlen(spec.name) > INSTANCE_NAME_MAX)
            abort();
        if (spec.flavor.vcpus < 1 || spec.flavor.vcpus > 256 || spec.flavor.memory_mb < 16)
            abort();
        if (spec.boot.kind == BOOT_KERNEL && (!spec.boot.kernel || spec.boot.kernel[0] != '/'))
            abort();
        if (spec.user_data && base64_decode(spec.user_data, NULL, 0) > USER_DATA_MAX)
            abort();
        /* issue 10: interfaces, names, keys and metadata within their bounds */
        if (spec.n_ifaces > IFACE_MAX || (spec.hostname && !hostname_is_valid(spec.hostname)))
            abort();
        for (size_t i = 0; i < spec.n_ifaces; i++)
            if (!spec.ifaces[i].network[0] || (spec.ifaces[i].mac[0] && request_mac_parse(spec.ifaces[i].mac, NULL, NULL)) ||
                (spec.ifaces[i].mtu && (spec.ifaces[i].mtu < 68 || spec.ifaces[i].mtu > 65535)))
                abort();
        if ((spec.metadata && json_object_size(spec.metadata) > METADATA_ITEMS_MAX) ||
            (spec.public_keys && json_object_size(spec.public_keys) > PUBLIC_KEYS_MAX))
            abort();
        strscpy(inst.uuid, "0d8f7a34-8a47-4a59-9d3a-2b1e8c9b0f11", sizeof(inst.uuid));
        strscpy(inst.ec2_id, "i-0123456789abcdef0", sizeof(inst.ec2_id));
        strscpy(inst.state, "pending", sizeof(inst.state));
        inst.name = spec.name;
        inst.flavor = spec.flavor;
        inst.boot = spec.boot;
        inst.console_log = "/c.log";
        shown = instance_to_json(&inst);
        if (!shown)
            abort();
        json_decref(shown);
        /* the XML writer escapes everything: the metadata reads back the same name */
        if (hv_domain_xml(kvm, guest_describe(&inst, NULL, &g), &xml, &err) == 0) {
            char *m = strstr(xml, "<ca:instance"), *e = m ? strstr(m, "</ca:instance>") : NULL;
            struct instance back;
            struct hv_meta meta = {0};
            struct hv_owner own;
            if (!m || !e)
                abort();
            m = strndup(m, (size_t)(e - m) + strlen("</ca:instance>"));
            /* read back as adoption does: the layer's fields, the agent's instance */
            if (hv_meta_parse(m, &meta, &own, &err) != 0 ||
                ops_instance_from_meta(&meta, inst.uuid, &back, &err) != 0 || strcmp(back.name, spec.name) != 0)
                abort();
            hv_meta_release(&meta);
            instance_release(&back);
            free(m);
            free(xml);
        }
        launch_spec_release(&spec);
    } else if (!err.code[0]) {
        abort(); /* a refusal always says why */
    }
    json_decref(j);
    return 0;
}

#ifndef FUZZING_ENGINE
int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        FILE *f = fopen(argv[i], "rb");
        static uint8_t buf[1 << 20];
        size_t n;

        if (!f) {
            perror(argv[i]);
            return 1;
        }
        n = fread(buf, 1, sizeof(buf), f);
        fclose(f);
        LLVMFuzzerTestOneInput(buf, n);
    }
    catalog_free(cat);
    if (kvm) {
        hv_free(kvm);
        uv_run(&loop, UV_RUN_DEFAULT);
        uv_loop_close(&loop);
    }
    printf("fuzz_launch: %d inputs, no crash\n", argc - 1);
    return 0;
}
#endif
