/* metadata.h: the node's instance metadata service (EC2 IMDS v1/v2 and
 * OpenStack layouts, answered on 169.254.169.254 of each network), and the
 * config drive (ISO 9660 "config-2" or NoCloud "cidata") holding the same
 * content.
 *
 * The service never decides who is asking by itself: the caller gives a
 * lookup (network the connection arrived on + its peer address -> instance)
 * and the service calls it once per connection. What an instance looks like
 * to its guest is a struct md_instance the caller builds.
 *
 * Threads: md_render() and md_drive_build() are pure (md_drive_build() runs
 * xorriso and waits for it: call it off the loop). The service runs on the
 * loop given to md_service_new() and every md_service_* call is made there.
 * md_instance_ref()/md_instance_free() are atomic and may be called from any
 * thread. */
#ifndef CA_AGENT_METADATA_H
#define CA_AGENT_METADATA_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <uv.h>

#include "common/util.h"

struct md_cache;

struct md_key {
    char *name;               /* key pair name */
    char *type;               /* "ssh" */
    char *data;               /* "ssh-ed25519 AAAA... user@host" */
};

struct md_kv {
    char *key;
    char *value;
};

struct md_iface {
    char mac[18];             /* "52:54:00:12:34:56" */
    char ipv4[16];            /* "" none */
    int prefix;               /* 0..32 */
    char gateway[16];         /* "" none */
    char **dns;               /* IPv4 resolvers, owned */
    size_t n_dns;
    int mtu;                  /* 0: unknown */
    char network[64];         /* the host network's name */
    char port_id[37];         /* the port's uuid ("" none) */
    int device_number;        /* 0.. in launch order */
};

enum md_tokens { MD_TOKENS_OPTIONAL, MD_TOKENS_REQUIRED };

/* One instance as its metadata shows it. All pointers owned; heap allocated
 * (calloc() it or md_instance_new()), released with md_instance_free(). */
struct md_instance {
    char uuid[37];
    char ec2_id[20];          /* "i-0123456789abcdef0" */
    char *name, *hostname, *availability_zone, *instance_type, *image_id, *project_id, *arch;
    int launch_index;
    int64_t created_ms;       /* wall clock, ms */
    struct md_key *keys;
    size_t n_keys;
    struct md_kv *meta;
    size_t n_meta;
    uint8_t *user_data;
    size_t user_data_len;
    bool has_user_data;
    struct md_iface *ifaces;
    size_t n_ifaces;
    enum md_tokens http_tokens;
    int hop_limit;            /* 1..64: IP TTL of the token PUT's answer */
    bool endpoint_enabled;    /* false: every request gets 403 */
    unsigned refs_;           /* private: references beyond the first (0 from calloc) */
    struct md_cache *cache_;  /* private: what the service rendered for it (freed with it) */
};

/* A zeroed instance holding one reference (hop_limit 1, endpoint enabled),
 * or NULL when memory runs out. */
struct md_instance *md_instance_new(void);
/* Drops one reference; the last one frees m and everything it owns.
 * Accepts NULL. */
void md_instance_free(struct md_instance *m);
/* Takes one more reference; returns m. */
struct md_instance *md_instance_ref(struct md_instance *m);

/* One answer: status, a static content type, body (owned: release it). */
struct md_answer {
    int status;
    const char *content_type;
    char *body;
    size_t len;
};

/* The answer to GET path (no query string, no token logic) for m: EC2 ("/",
 * "/latest", "/<dated>", meta-data/..., user-data, dynamic/...) and
 * OpenStack ("/openstack", "/openstack/<version>/..."). 404 answers are
 * answers (return 0); -ENOMEM when memory runs out (*out untouched). */
int md_render(const struct md_instance *m, const char *path, struct md_answer *out);
/* Frees a->body; accepts a zeroed or released answer. */
void md_answer_release(struct md_answer *a);

enum md_drive_kind { MD_DRIVE_CONFIG2, MD_DRIVE_NOCLOUD };

/* Writes the config drive of m to iso_path: the files in a temp dir next to
 * iso_path, then `xorriso -as mkisofs -V config-2|cidata -J -R -o
 * iso_path.tmp DIR` (argv; xorriso NULL = "xorriso" from PATH), fsync, then
 * rename and fsync of the directory. Nothing is left behind on failure. Blocks until xorriso ends (bounded to
 * 60 s). 0, or -errno with err filled. */
int md_drive_build(const struct md_instance *m, enum md_drive_kind kind, const char *iso_path,
                   const char *xorriso, struct agent_error *err);
/* What a build of iso_path interrupted by a crash leaves: iso_path.tmp and
 * iso_path.d.XXXXXX (which holds user-data), removed when at least min_age_s
 * old (0: whatever their age; md_drive_build() does that first). The number
 * removed, or -errno. Blocking. */
int md_drive_leftovers_remove(const char *iso_path, int min_age_s);
/* iso_path and its leftovers (terminate, rollback). 0 (also when there was
 * none) or -errno. */
int md_drive_remove(const char *iso_path);

/* The instance on network whose guest is peer: 0 and *out (a reference the
 * service drops), or -errno with *out untouched (-ENOENT: nobody; the
 * service answers 404 to everything on that connection and counts it; any
 * other error is transient: that request is answered 503 with Retry-After
 * and the next one on the connection is looked up again).
 * Called on the loop, at most once per connection, on its first request:
 * it should be quick (it blocks the loop). */
typedef int (*md_lookup_fn)(void *opaque, const char *network, const struct sockaddr_in *peer,
                            struct md_instance **out);

struct md_service_config {
    double rate;                  /* requests per second per source address; <= 0: 50 */
    int burst;                    /* bucket size; <= 0: 100 */
    const uint8_t *token_key;     /* IMDSv2 token HMAC key (copied); NULL: random per process */
    size_t token_key_len;
    unsigned max_connections;     /* 0: 1024 */
    unsigned max_per_network;     /* open connections of one network; 0: max_connections / 4 */
    unsigned max_per_source;      /* of one (network, source address); 0: 64 */
    unsigned header_timeout_s;    /* a request head within; 0: 10 */
    unsigned idle_timeout_s;      /* keep-alive idle; 0: 30 */
    size_t cache_bytes;           /* rendered documents kept, all instances; 0: 64 MiB */
    size_t cache_instance_bytes;  /* ... of one instance; 0: 16 MiB (the rest rendered per request) */
};

struct md_service;

/* A service on loop (listening nowhere yet); cfg may be NULL (defaults).
 * 0 and *out, -EINVAL (no loop or lookup), or -errno. */
int md_service_new(uv_loop_t *loop, const struct md_service_config *cfg, md_lookup_fn lookup, void *opaque,
                   struct md_service **out);
/* Listens on addr:port (IPv4; NULL: 169.254.169.254; port 0: any) for
 * network (SO_BINDTODEVICE bind_dev when not NULL; IP_FREEBIND so the
 * address may come later). Repeatable: one socket per call, several per
 * network allowed. 0, -EINVAL (bad argument) or -errno. */
int md_service_listen(struct md_service *s, const char *network, const char *bind_dev, const char *addr,
                      int port);
/* A socket bound to a device is bound to it by its index: a device deleted
 * (the last port of an agent-made bridge left) and made again under the
 * same name is another device, which that socket never hears. This checks
 * network's sockets (NULL: every network's) against their devices now: a
 * socket whose device went is closed (the listener kept, down), one whose
 * device is back or was remade is opened again on the same address and
 * port. The service also does this by itself every second; call it when a
 * device may just have been made (a plug) not to wait for that. The number
 * of sockets opened again, or -ENOENT (no listener of network), -ENOMEM. */
int md_service_refresh(struct md_service *s, const char *network);
/* Closes network's listening sockets (open connections finish). 0 or -ENOENT. */
int md_service_unlisten(struct md_service *s, const char *network);
/* The Prometheus text of the service's counters, written to f (prom.h). 0 or
 * -EIO when f reports an error. */
int md_service_metrics(struct md_service *s, FILE *f);
/* The port the first socket of network listens on (for tests using port 0),
 * or -ENOENT. */
int md_service_port(struct md_service *s, const char *network);
/* Stops everything; memory goes once the loop ran the close callbacks.
 * Accepts NULL. */
void md_service_free(struct md_service *s);

#endif
