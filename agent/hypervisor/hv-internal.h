/* hv-internal.h: shared by the drivers in agent/hypervisor/ and the unit
 * tests only. Not part of the agent's API. */
#ifndef CA_AGENT_HV_INTERNAL_H
#define CA_AGENT_HV_INTERNAL_H

#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>
#include <pthread.h>

#include "agent/hypervisor/hv.h"

#define CA_XMLNS_URI "http://compute-agent.org/xmlns/instance/1.0"
#define CA_XMLNS_PREFIX "ca"

/* The connection as the drivers see it. */
struct hv_conn_ref {
    virConnectPtr conn; /* a reference the caller must virConnectClose() */
};

/* Take a reference to the current connection; -ENOTCONN if none. */
int hv_conn_get(struct hv *hv, virConnectPtr *ret, struct agent_error *err);
/* Set what probe decided. */
void hv_set_domain_type(struct hv *hv, const char *type, const char *reason);
const char *hv_config_domain_type(const struct hv *hv);

/* Translate the calling thread's last libvirt error into -errno + err. */
int hv_libvirt_error(struct agent_error *err, const char *what);

/* libvirt's virDomainState as our power state. */
enum hv_power hv_power_from_libvirt(int state);

/* Shared libvirt implementations the drivers put in their tables. */
int hv_lv_define(struct hv *hv, const char *xml, struct agent_error *err);
int hv_lv_start(struct hv *hv, const char *uuid, struct agent_error *err);
int hv_lv_shutdown(struct hv *hv, const char *uuid, struct agent_error *err);
int hv_lv_destroy(struct hv *hv, const char *uuid, struct agent_error *err);
int hv_lv_reboot(struct hv *hv, const char *uuid, struct agent_error *err);
int hv_lv_reset(struct hv *hv, const char *uuid, struct agent_error *err);
int hv_lv_undefine(struct hv *hv, const char *uuid, struct agent_error *err);
int hv_lv_power(struct hv *hv, const char *uuid, enum hv_power *ret, struct agent_error *err);
int hv_lv_list(struct hv *hv, struct hv_domain **ret, size_t *n, struct agent_error *err);
int hv_lv_host_info(struct hv *hv, struct hv_host_info *ret, struct agent_error *err);

/* The table entries every libvirt-backed driver shares (designated
 * initializers for a driver's table). reset is left to each driver: the test
 * driver has none. */
#define HV_LIBVIRT_COMMON_OPS                                                  \
    .define = hv_lv_define, .start = hv_lv_start, .shutdown = hv_lv_shutdown,   \
    .destroy = hv_lv_destroy, .reboot = hv_lv_reboot,                           \
    .undefine = hv_lv_undefine, .power = hv_lv_power, .list = hv_lv_list,       \
    .host_info = hv_lv_host_info

/* Domain XML (domxml.c). */
enum domxml_os { DOMXML_OS_HVM, DOMXML_OS_XEN_PV };
struct domxml_opts {
    const char *domain_type;  /* <domain type=...> */
    enum domxml_os os;        /* HVM or Xen PV */
    const char *machine;      /* HVM machine type or NULL */
    bool serial_file;         /* serial console to a log file */
    bool balloon;             /* virtio memory balloon */
    const char *disk_bus;     /* "virtio" or "xen" */
    const char *disk_dev;     /* "vda" or "xvda" */
};
int domxml_build(const struct hv_guest *g, const struct domxml_opts *o, char **xml,
                 struct agent_error *err);
/* Our <metadata> element, as virDomainGetMetadata returns it, -> ident and
 * owner. libvirt 9.0 hands the element back without its namespace
 * declaration (we asked for it by our namespace URI, so it is ours); an
 * element in any other namespace is refused. Every field is checked like
 * outside input (the bounds of a launch request). On success ident is
 * filled (release with instance_release) and owner too ("" members where
 * not recorded). On failure -EINVAL, err->message says which field, and
 * nothing is kept. */
int domxml_parse_metadata(const char *xml, struct instance *ident, struct hv_owner *owner,
                          struct agent_error *err);
/* The host UUID in a libvirt capabilities document into buf[37]; "" if none. */
void domxml_caps_host_uuid(const char *caps, char buf[37]);

#endif
