/* guest.c: see guest.h. The metadata items are the ones today's domains
 * carry (uuid, ec2-id, name, flavor, kernel, image): the reader in
 * agent/hypervisor/metadata.c accepts them in any order. */
#include "agent/guest.h"

#include <stdio.h>
#include <string.h>

static void describe_meta(const struct instance *inst, struct guest *g)
{
    const struct boot_source *b = &inst->boot;
    struct hv_meta_item *m = g->meta;
    size_t n = 0;

    snprintf(g->vcpus, sizeof(g->vcpus), "%lld", (long long)inst->flavor.vcpus);
    snprintf(g->memory_mb, sizeof(g->memory_mb), "%lld", (long long)inst->flavor.memory_mb);
    snprintf(g->disk_gb, sizeof(g->disk_gb), "%lld", (long long)inst->flavor.disk_gb);
    snprintf(g->max_vcpus, sizeof(g->max_vcpus), "%lld", (long long)inst->max_vcpus);
    snprintf(g->max_memory_mb, sizeof(g->max_memory_mb), "%lld", (long long)inst->max_memory_mb);
    m[n++] = (struct hv_meta_item){.name = "uuid", .text = inst->uuid};
    m[n++] = (struct hv_meta_item){.name = "ec2-id", .text = inst->ec2_id};
    m[n++] = (struct hv_meta_item){.name = "name", .text = inst->name};
    m[n++] = (struct hv_meta_item){
        .name = "flavor",
        .attrs = {{"vcpus", g->vcpus}, {"memory_mb", g->memory_mb}, {"disk_gb", g->disk_gb},
                  {"type", inst->instance_type},
                  /* issue 12: the headroom the domain was defined with (adoption keeps it) */
                  {"max_vcpus", inst->max_vcpus ? g->max_vcpus : NULL},
                  {"max_memory_mb", inst->max_memory_mb ? g->max_memory_mb : NULL}},
    };
    if (b->kind == BOOT_KERNEL)
        m[n++] = (struct hv_meta_item){
            .name = "kernel",
            .attrs = {{"path", b->kernel}, {"initrd", b->initrd}, {"cmdline", b->cmdline}},
        };
    if (boot_source_has_image(b))
        m[n++] = (struct hv_meta_item){
            .name = "image",
            .attrs = {{"path", b->image_path}, {"id", b->image_id}, {"url", b->image_url},
                      {"digest", b->image_digest}, {"glance_id", b->image_glance_id}},
        };
    /* the interfaces (issue 10): an adopted instance keeps its MACs and IPs */
    for (size_t i = 0; i < inst->n_ports && i < IFACE_MAX && n < GUEST_MAX_META; i++) {
        const struct port *p = &inst->ports[i];
        snprintf(g->port_index[i], sizeof(g->port_index[i]), "%d", p->index);
        snprintf(g->port_mtu[i], sizeof(g->port_mtu[i]), "%d", p->mtu);
        m[n++] = (struct hv_meta_item){
            .name = "port",
            .attrs = {{"id", p->port_id}, {"index", g->port_index[i]}, {"network", p->network},
                      {"mac", p->mac}, {"ip", p->ip[0] ? p->ip : NULL}, {"device", p->device},
                      {"mtu", p->mtu ? g->port_mtu[i] : NULL}},
        };
    }
    g->hv.meta = m;
    g->hv.n_meta = n;
}

const struct hv_guest *guest_describe(const struct instance *inst, const char *disk_format,
                                      struct guest *g)
{
    const struct boot_source *b = &inst->boot;
    struct hv_guest *h = &g->hv;

    memset(g, 0, sizeof(*g));
    strscpy(h->uuid, inst->uuid, sizeof(h->uuid));
    h->name = inst->ec2_id;
    h->title = inst->name;
    /* the headroom a live resize grows into (issue 12), never below the
     * flavor; none (the flavor's) for a domain defined without */
    h->vcpus = h->max_vcpus = (unsigned)inst->flavor.vcpus;
    h->memory_mib = h->max_memory_mib = (uint64_t)inst->flavor.memory_mb;
    if (inst->max_vcpus > inst->flavor.vcpus)
        h->max_vcpus = (unsigned)inst->max_vcpus;
    if (inst->max_memory_mb > inst->flavor.memory_mb)
        h->max_memory_mib = (uint64_t)inst->max_memory_mb;
    if (b->kind == BOOT_KERNEL)
        h->boot = (struct hv_boot){.kind = HV_BOOT_KERNEL, .kernel = b->kernel,
                                   .initrd = b->initrd, .cmdline = b->cmdline};
    else
        h->boot = (struct hv_boot){.kind = HV_BOOT_DISK};
    if (inst->disk_path) {
        g->disks[h->n_disks++] = (struct hv_disk){
            .role = HV_DISK_ROOT, .path = inst->disk_path, .format = disk_format};
    }
    h->disks = g->disks;
    h->console_log = inst->console_log;
    describe_meta(inst, g);
    return h;
}

void guest_describe_net(const struct instance *inst, const struct guest_env *env, struct guest *g)
{
    struct hv_guest *h = &g->hv;

    for (size_t i = 0; i < inst->n_ports && i < IFACE_MAX; i++) {
        const struct port *p = &inst->ports[i];
        struct hv_nic *n = &g->nics[h->n_nics++];
        int mtu = p->mtu;
        for (size_t k = 0; !mtu && env && k < env->n_nets; k++)
            if (!strcmp(env->nets[k].name, p->network))
                mtu = (int)env->nets[k].mtu;
        memset(n, 0, sizeof(*n));
        strscpy(n->mac, p->mac, sizeof(n->mac));
        n->tap = p->device;
        n->model = "virtio";
        n->mtu = (unsigned)mtu;
    }
    h->nics = g->nics;
    if (env && env->smbios_product) {
        g->sysinfo = (struct hv_sysinfo){.manufacturer = env->smbios_manufacturer,
                                         .product = env->smbios_product,
                                         .serial = inst->uuid,
                                         .uuid = inst->uuid,
                                         .family = "Virtual Machine"};
        h->sysinfo = &g->sysinfo;
    }
    if (inst->config_drive && env && env->config_drive_path && h->n_disks < GUEST_MAX_DISKS) {
        g->disks[h->n_disks++] = (struct hv_disk){
            .role = HV_DISK_CONFIG, .path = env->config_drive_path, .format = "raw", .readonly = true};
        h->disks = g->disks;
    }
}
