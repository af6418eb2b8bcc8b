/* guest.h: an instance as the hypervisor layer sees it. guest_describe()
 * turns the agent's struct instance into a struct hv_guest (plain data, no
 * agent types): identity, vCPUs and memory with their maxima, the boot
 * source, the disks, the console log, and our metadata (the identity that
 * lets an agent adopt the domain back from libvirt alone:
 * agent/hypervisor/metadata.c reads it). */
#ifndef CA_AGENT_GUEST_H
#define CA_AGENT_GUEST_H

#include "agent/hypervisor/hv.h"
#include "agent/instance.h"

#define GUEST_MAX_DISKS 4
#define GUEST_MAX_META 8

/* The storage a description lives in (on the caller's stack). Its strings
 * are borrowed from the instance, except the numbers written here. */
struct guest {
    struct hv_guest hv;
    struct hv_disk disks[GUEST_MAX_DISKS];
    struct hv_meta_item meta[GUEST_MAX_META];
    char vcpus[24], memory_mb[24], disk_gb[24]; /* flavor attributes */
};

/* Describe inst in *g and return &g->hv. disk_format is the root disk's
 * format ("qcow2", "raw"; NULL: raw). The result borrows from inst and g:
 * valid while both are. No allocation, cannot fail. */
const struct hv_guest *guest_describe(const struct instance *inst, const char *disk_format,
                                      struct guest *g);

#endif
