/* resources.h: the resource tracker: what the host has (from libvirt and
 * the state directory's filesystem), what is reserved, the allocation ratios,
 * and what instances hold. Refuses a launch that does not fit. */
#ifndef CA_AGENT_RESOURCES_H
#define CA_AGENT_RESOURCES_H

#include <jansson.h>

#include "agent/config.h"
#include "agent/hypervisor/hv.h"
#include "agent/store.h"

struct resources;

int resources_new(const struct agent_config *cfg, struct resources **ret);
void resources_free(struct resources *r);

/* The size in GiB of the filesystem holding path, or -errno. Blocking
 * (statvfs): call it off the loop. */
int64_t resources_disk_gb(const char *path);

/* Record the host's figures (after each connect): CPUs and memory from
 * libvirt, disk_gb from resources_disk_gb() (ignored if negative). */
void resources_set_host(struct resources *r, const struct hv_host_info *info, int64_t disk_gb);
bool resources_known(const struct resources *r);

/* Whether the driver makes guests' disks (HV_FEAT_DISK_FILES; the test
 * driver does not): when not, a flavor's disk_gb is kept as asked but counted
 * as 0 everywhere (checks, GET /v1/host, the allocation written to
 * Placement): what is not there is not counted (issue 11). Default: makes. */
void resources_set_disk_files(struct resources *r, bool makes_disks);
/* f's disk_gb as counted: 0 when the driver makes no disks. */
int64_t resources_disk_of(const struct resources *r, const struct flavor *f);

/* What domains of other agents (or of unknown owner) on this libvirt hold,
 * from their metadata at the last reconcile: counted as used by
 * resources_check() and shown as "foreign" in resources_to_json(). */
void resources_set_foreign(struct resources *r, const struct flavor *sum, int64_t domains);

/* 0 if want fits beside what the store says is allocated; else
 * -ENOSPC with err naming the flavor field that does not fit. */
int resources_check(const struct resources *r, struct store *s, const struct flavor *want,
                    struct agent_error *err);

/* capacity, reserved, allocation_ratios, allocated, foreign, free (after
 * allocated and foreign), instances into obj. */
int resources_to_json(const struct resources *r, struct store *s, json_t *obj);

/* The host's totals as read (before ratios and reservations). */
void resources_totals(const struct resources *r, int64_t *cpus, int64_t *memory_mb, int64_t *disk_gb);

/* Usable totals after ratios and reservations. */
void resources_usable(const struct resources *r, struct flavor *out);

#endif
