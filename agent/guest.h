/* guest.h: an instance as the hypervisor layer sees it. guest_describe()
 * turns the agent's struct instance into a struct hv_guest (plain data, no
 * agent types): identity, vCPUs and memory with their maxima, the boot
 * source, the disks, the console log, and our metadata (the identity that
 * lets an agent adopt the domain back from libvirt alone:
 * agent/hypervisor/metadata.c reads it). */
#ifndef CA_AGENT_GUEST_H
#define CA_AGENT_GUEST_H

#include "agent/config.h"
#include "agent/hypervisor/hv.h"
#include "agent/instance.h"

#define GUEST_MAX_DISKS 4
#define GUEST_MAX_META (8 + IFACE_MAX) /* + one <port> per interface */

/* The storage a description lives in (on the caller's stack). Its strings
 * are borrowed from the instance, except the numbers written here. */
struct guest {
    struct hv_guest hv;
    struct hv_disk disks[GUEST_MAX_DISKS];
    struct hv_meta_item meta[GUEST_MAX_META];
    char vcpus[24], memory_mb[24], disk_gb[24]; /* flavor attributes */
    char max_vcpus[24], max_memory_mb[24];     /* its headroom (issue 12) */
    struct hv_nic nics[IFACE_MAX];
    char port_index[IFACE_MAX][8], port_mtu[IFACE_MAX][8]; /* <port> attributes */
    struct hv_sysinfo sysinfo;
};

/* What the guest's networking and metadata take from the host (issue 10). */
struct guest_env {
    const char *smbios_manufacturer; /* metadata.manufacturer */
    const char *smbios_product;      /* metadata.product ("OpenStack Nova") */
    const char *config_drive_path;   /* the ISO when inst->config_drive, else NULL */
    const struct net_config *nets;   /* for each NIC's MTU when the port has none */
    size_t n_nets;
};

/* Describe inst in *g and return &g->hv. disk_format is the root disk's
 * format ("qcow2", "raw"; NULL: raw). The result borrows from inst and g:
 * valid while both are. No allocation, cannot fail. */
const struct hv_guest *guest_describe(const struct instance *inst, const char *disk_format,
                                      struct guest *g);

/* Add to a description made by guest_describe(): one NIC per port (its
 * device as an existing tap: type ethernet, managed no; MAC; virtio; MTU),
 * the SMBIOS system (manufacturer, product, serial = uuid = the instance's,
 * family "Virtual Machine") and the config drive as a read-only cdrom. */
void guest_describe_net(const struct instance *inst, const struct guest_env *env, struct guest *g);

#endif
