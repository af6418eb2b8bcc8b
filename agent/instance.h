/* instance.h: what an instance is (identity, flavor, boot source, state), a
 * launch as the operations engine takes it (struct launch_spec), and how an
 * instance is shown. Requests are parsed into these in agent/request.h. */
#ifndef CA_AGENT_INSTANCE_H
#define CA_AGENT_INSTANCE_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/util.h"

#define INSTANCE_NAME_MAX 63
#define USER_DATA_MAX 16384 /* decoded bytes, as on EC2 */
#define EC2_ID_LEN 19       /* "i-" + 17 hex digits */

/* Guest networking and metadata (issue 10): the bounds of a launch's fields,
 * close to nova's. */
#define IFACE_MAX 8             /* interfaces per instance */
#define HOSTNAME_MAX 253        /* RFC 1123: labels of 1-63, 253 in all */
#define AZ_MAX 255
#define KEY_NAME_MAX 255        /* public_keys names (nova: key pair names) */
#define PUBLIC_KEY_MAX 16384    /* one OpenSSH public key, bytes */
#define PUBLIC_KEYS_MAX 32      /* keys per instance */
#define METADATA_ITEMS_MAX 128  /* nova's metadata_items quota */
#define METADATA_KEY_MAX 255
#define METADATA_VALUE_MAX 255
#define PORT_DEV_MAX 15         /* IFNAMSIZ - 1 */

/* One interface of an instance: a row of the store's ports table, reserved
 * with the instance (its MAC and IP unique on the host). */
struct port {
    char port_id[37];           /* minted per interface */
    int index;                  /* 0.. in launch order */
    char network[64];           /* [network NAME] */
    char mac[18];               /* lowercase aa:bb:cc:dd:ee:ff */
    char ip[16];                /* IPv4, "" when the network has no cidr */
    char device[PORT_DEV_MAX + 1]; /* host device: "tap" + port id, 14 characters */
    int mtu;                    /* 0: the network's */
    char state[12];             /* reserved|plugged|unplugged */
};

/* What a launch asks of one interface; "" / 0 where the agent chooses. */
struct launch_iface {
    char network[64];
    char mac[18];
    char ip[16];
    int mtu;
};

/* metadata_options; "" / 0 where the configuration's default applies. */
struct md_options {
    char http_tokens[12];       /* optional|required */
    char http_endpoint[12];     /* enabled|disabled */
    int hop_limit;              /* http_put_response_hop_limit 1..64 */
};

struct flavor {
    int64_t vcpus;
    int64_t memory_mb;
    int64_t disk_gb;
};

/* A resize (issue 12), from its acceptance until it is settled: a live one
 * until it ends, a cold one until confirm_resize, revert_resize or its
 * rollback. While pending the instance claims, class by class, the larger
 * of flavor (the new one) and old_flavor. */
struct resize_info {
    bool pending;
    char mode[8];              /* "live" | "cold" */
    struct flavor old_flavor;  /* the flavor before the resize */
    char *old_instance_type;   /* its type, NULL when it was given directly */
    bool power_on;             /* cold: the guest ran before (start it after) */
    bool reverting;            /* the target is old_flavor's swap: a revert_resize or
                                * the rollback of a failed resize runs */
    int64_t resized_ms;        /* cold: when it reached "resized" (auto-confirm), 0 before */
    /* The Placement consumer holding the old flavor's allocation during a cold
     * resize (nova's migration consumer). Kept after the resize is settled,
     * until the next one, so a restart can remove an allocation a crash left
     * behind; "" if none. */
    char migration_uuid[37];
};

/* A migration between hosts (issue 13), on either side, from its
 * acceptance (source) or prepare (target) until it is settled. The
 * instance's state says where it stands: on the source it keeps its state
 * (task "migrating") until the guest runs on the target, then "migrated"
 * (kept for history, holding nothing); on the target it is "migrating"
 * (claimed, ports and disk ready, no guest yet) until the guest runs there,
 * and "migrated" if the migration failed (it holds nothing). A cold one
 * waits on the target in "resized" (task verify_resize) until confirm or
 * revert; the source's copy waits in "migrated" (task verify_resize) with
 * its domain defined and off. */
struct migration_info {
    bool pending;
    char id[37];                /* the migration's id (both sides) */
    char role[8];               /* "source" | "target" */
    char mode[8];               /* "live" | "cold" */
    char peer[65];              /* the other host */
    bool power_on;              /* the guest ran when it began */
    int64_t max_downtime_ms;    /* live: the switch-over bound asked (0: configured) */
    int64_t completion_timeout_s; /* live: 0 configured, -1 none */
    char postcopy[8];           /* live: never|auto|always ("" configured) */
    char peer_uri[256];         /* source, once prepared: the target's libvirt URI */
    char peer_migrate_uri[256]; /* source: QEMU's stream address ("" libvirt's) */
    char peer_instances_dir[1024]; /* source: the target's instances directory */
    char peer_image_dir[1024];  /* source: the target's directory of the base image */
    int64_t deadline_ms;        /* target: when a silent source is given up (0: none) */
};

/* BOOT_IMAGE: the guest boots from its disk (the image). BOOT_KERNEL: direct
 * kernel boot; an image, if also given, is then the guest's disk. */
enum boot_kind { BOOT_IMAGE, BOOT_KERNEL };

struct boot_source {
    enum boot_kind kind;
    char *image_path;   /* BOOT_IMAGE: a local qcow2/raw file (see localfile.h) */
    char *image_id;     /* BOOT_IMAGE: a cached image id (image cache) */
    char *image_url;    /* BOOT_IMAGE: a URL to pull (image cache) */
    char *image_digest; /* with image_url: "sha256:HEX" / "sha512:HEX" */
    char *image_glance_id; /* BOOT_IMAGE: an OpenStack Glance image (image cache) */
    char *kernel;       /* BOOT_KERNEL: kernel path */
    char *initrd;       /* BOOT_KERNEL: optional initrd path */
    char *cmdline;      /* BOOT_KERNEL: optional command line */
};

/* One instance as the store keeps it. Strings are owned. */
struct instance {
    char uuid[37];
    char ec2_id[EC2_ID_LEN + 1];
    char *name;
    char state[16];       /* pending|running|stopping|stopped|shutting-down|terminated|error */
    char task_state[24];  /* "" when no operation runs */
    struct flavor flavor;
    char *instance_type;  /* NULL when the flavor was given directly */
    struct boot_source boot;
    char *user_data;      /* base64 as given, NULL if none */
    char *console_log;    /* serial console log file */
    char *disk_path;      /* the guest's disk (overlay or the image path) */
    char *fault;          /* why it is in error, NULL otherwise */
    int64_t created_ms;
    int64_t updated_ms;
    /* guest networking and metadata (issue 10) */
    char *hostname;       /* RFC 1123 */
    char *availability_zone;
    bool config_drive;
    char config_drive_format[12]; /* config-2|nocloud */
    json_t *public_keys;  /* {name: key} (owned reference) or NULL */
    json_t *metadata;     /* {key: value} (owned reference) or NULL */
    struct md_options md_opts;
    struct port *ports;   /* its interfaces, by index (owned) */
    size_t n_ports;
    /* issue 11: the owner Placement's allocation names ("": configured default) */
    char project_id[256];
    char user_id[256];
    /* issue 12: the domain's live-resize ceilings as defined (0: the flavor's,
     * no headroom: a domain defined before live resize existed) */
    int64_t max_vcpus;
    int64_t max_memory_mb;
    struct resize_info resize;
    struct migration_info mig; /* issue 13 */
};

/* The instance holds nothing on this host (terminated, or migrated away). */
bool instance_is_gone(const struct instance *inst);

/* A validated launch request. */
struct launch_spec {
    char id[37];          /* the instance UUID the controller chose (lowercase), "": minted here */
    char *name;
    struct flavor flavor;
    char *instance_type;
    struct boot_source boot;
    char *user_data;      /* base64 text, validated */
    char *request_id;
    struct launch_iface *ifaces; /* owned */
    size_t n_ifaces;
    json_t *public_keys;  /* validated {name: key}, owned reference, or NULL */
    json_t *metadata;     /* validated {key: value}, owned reference, or NULL */
    char *hostname;       /* NULL: from the name, else the EC2 id */
    char *availability_zone; /* NULL: metadata.availability_zone */
    struct md_options md_opts;
    int config_drive;     /* -1: metadata.config_drive; 0; 1 */
    char config_drive_format[12]; /* "": metadata.config_drive_format */
    char *project_id;     /* NULL: [placement] default_project_id */
    char *user_id;        /* NULL: [placement] default_user_id */
};

struct catalog;

/* Frees what spec holds and zeroes it (launch_spec_parse() fills it). */
void launch_spec_release(struct launch_spec *spec);

/* The instance's JSON answer (new reference). */
json_t *instance_to_json(const struct instance *inst);

/* An operation's JSON answer (new reference): {"id", "type",
 * "instance_id", "request_id", "state", "step", "error", "created_at",
 * "updated_at"} (struct op_record: agent/store.h). */
struct op_record;
json_t *op_record_to_json(const struct op_record *op);

/* Boot source to/from the JSON stored and shown ("boot" object). */
json_t *boot_source_to_json(const struct boot_source *b);
int boot_source_from_json(const json_t *j, struct boot_source *b);
void boot_source_release(struct boot_source *b);
bool boot_source_has_image(const struct boot_source *b);
/* The image comes through the image cache (id, url or glance_id). */
bool boot_source_uses_cache(const struct boot_source *b);

/* The instance's extra launch data (hostname, availability zone, config
 * drive, public keys, metadata, metadata options) as the JSON text the store
 * keeps, and back (unknown or missing members left at their zero). */
char *instance_extra_to_text(const struct instance *inst);
int instance_extra_from_text(const char *text, struct instance *inst);
/* The interfaces as shown: [{"network","mac","ip","mtu","device","port_id","state"}]. */
json_t *instance_ports_to_json(const struct instance *inst);
/* An RFC 1123 host name (labels of 1-63 letters, digits and '-', not at
 * either end; 253 in all). */
bool hostname_is_valid(const char *s);

void instance_release(struct instance *inst);
/* Deep copy; 0 or -ENOMEM. */
int instance_copy(struct instance *dst, const struct instance *src);

/* "i-" followed by 17 random lowercase hex digits into buf[20]. */
int ec2_id_generate(char buf[EC2_ID_LEN + 1]);
bool ec2_id_is_valid(const char *s);

/* Strict base64 (RFC 4648, padding required); returns the decoded length or
 * -EINVAL. out may be NULL to only validate and measure. */
ssize_t base64_decode(const char *in, uint8_t *out, size_t outsize);

/* The instance-type catalogue. */
int catalog_load(const char *path, struct catalog **ret, struct agent_error *err);
/* The built-in catalogue (EC2-like names). */
int catalog_builtin(struct catalog **ret);
const struct flavor *catalog_find(const struct catalog *cat, const char *name);
/* The largest vCPU count and memory among the types that fit a host of cpus
 * and memory_mb (<= 0: no bound), each on its own; zero if none fits. */
void catalog_ceiling(const struct catalog *cat, int64_t cpus, int64_t memory_mb, struct flavor *out);
void catalog_free(struct catalog *cat);

/* The request parsers (launch_spec_parse(), request_id_check(), ...), for
 * the files that reach them through this header today (agent/commands.c):
 * request.h includes this header first, so the order is safe. */
#include "agent/request.h"

#endif
