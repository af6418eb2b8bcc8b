/* md-internal.h: INTERNAL to agent/metadata/ (and its unit tests and fuzz
 * harnesses): the listing tree, the renderers, the IMDSv2 tokens, the rate
 * limiter and the pure request handler. The public API is agent/metadata.h. */
#ifndef CA_AGENT_METADATA_INTERNAL_H
#define CA_AGENT_METADATA_INTERNAL_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "agent/metadata.h"

/* ---- tree.c: a metadata tree, walked like EC2's and rendered as listings ---- */

/* A node is a directory (children, a listing when asked) or a leaf (bytes). */
struct md_node {
    char *name;               /* path component; "" for the root */
    char *list_name;          /* what the parent's listing shows (NULL: name, + "/" on a directory) */
    bool dir;
    char *data;               /* leaf bytes (owned) */
    size_t len;
    const char *content_type; /* leaf type (static); NULL: text/plain */
    struct md_node *child;    /* first child, in listing order */
    struct md_node *next;     /* next sibling */
};

struct md_node *md_node_dir(struct md_node *parent, const char *name);
/* A leaf with a copy of len bytes of data (a string when len == (size_t)-1). */
struct md_node *md_node_leaf(struct md_node *parent, const char *name, const char *data, size_t len);
struct md_node *md_node_leaff(struct md_node *parent, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void md_node_free(struct md_node *n);
/* Walks rel ("a/b/c", "a/b/", "") from n: a leaf answers its bytes, a
 * directory its listing (one entry a line, "name/" for a directory). A path
 * ending in "/" that names a leaf is 404. 0 (out set, maybe 404) or -ENOMEM. */
int md_node_answer(const struct md_node *n, const char *rel, struct md_answer *out);

/* Static answers. */
int md_answer_text(struct md_answer *out, int status, const char *text);
int md_answer_bytes(struct md_answer *out, int status, const char *ctype, const void *data, size_t len);
int md_answer_json(struct md_answer *out, json_t *doc /* stolen */);

/* ---- ec2.c ---- */

/* Is version an EC2 version we serve ("latest", "2009-04-04"...)? */
bool md_ec2_version_known(const char *v, size_t len);
/* The tree under /<version>/ (meta-data/, user-data, dynamic/). NULL: -ENOMEM. */
struct md_node *md_ec2_tree(const struct md_instance *m);
/* tree: a cache for m's tree (built into *tree when NULL; the caller frees
 * it with md_node_free()), or NULL to build one for this call. */
int md_ec2_render(const struct md_instance *m, const char *path, struct md_node **tree, struct md_answer *out);

/* The bytes render caches may keep: in all (used, shared by every cache
 * charging it; atomic) and per instance. Refcounted: the service holds one
 * reference, each cache charging it another (an instance may outlive the
 * service that served it). */
struct md_budget {
    size_t used;              /* atomic */
    size_t total, per_instance;
    unsigned refs;            /* atomic; the last md_budget_unref() frees it */
};
struct md_budget *md_budget_new(size_t total, size_t per_instance);
struct md_budget *md_budget_ref(struct md_budget *b);
void md_budget_unref(struct md_budget *b);

/* What was rendered for an instance (which does not change while it is
 * served): the EC2 tree, and each OpenStack document answered 200 (leaves
 * named by their path; never listed). Zeroed = empty and unbounded; with a
 * budget, only what fits in it is kept (the rest rendered per request). */
struct md_cache {
    struct md_node *ec2;
    struct md_node *docs;
    size_t bytes;             /* charged to budget */
    struct md_budget *budget; /* a reference, or NULL: no bound */
};
void md_cache_clear(struct md_cache *c); /* also gives its bytes and budget back */
/* md_render() through cache (NULL: none). */
int md_render_cached(const struct md_instance *m, const char *path, struct md_cache *cache, struct md_answer *out);
/* m's own cache, shared by every connection serving m (made on first use,
 * charging budget; freed with m). Loop thread. NULL: out of memory. */
struct md_cache *md_instance_cache(struct md_instance *m, struct md_budget *budget);
/* The instance identity document (new reference). */
json_t *md_ec2_identity(const struct md_instance *m);
/* The meta-data tree as one JSON object (the config drive's meta-data.json). */
json_t *md_ec2_meta_json(const struct md_instance *m);
/* The primary interface (lowest device_number) or NULL. */
const struct md_iface *md_primary_iface(const struct md_instance *m);
/* "10.0.0.0/24" from ipv4 and prefix into buf[19]; false if ipv4 is not one. */
bool md_ipv4_cidr(const char *ipv4, int prefix, char buf[19]);
bool md_ipv4_netmask(int prefix, char buf[16]);

/* ---- openstack.c ---- */

extern const char *const md_os_versions[];
extern const size_t md_os_n_versions;
json_t *md_os_meta_data(const struct md_instance *m, const char *version);
json_t *md_os_network_data(const struct md_instance *m);
json_t *md_os_vendor_data(void);
int md_os_render(const struct md_instance *m, const char *path, struct md_answer *out);
/* The file names /openstack/<version>/ lists for m, NULL-terminated. */
size_t md_os_files(const struct md_instance *m, const char *version, const char *names[8]);

/* ---- token.c: IMDSv2 session tokens, stateless ---- */

#define MD_TOKEN_KEY_LEN 32
#define MD_TOKEN_TTL_MAX 21600
#define MD_TOKEN_LEN 54       /* base64url of 8 bytes expiry + 32 bytes HMAC */

struct md_token_key {
    uint8_t key[64];
    size_t len;
};

/* A token for uuid valid until now_s + ttl_s into buf[MD_TOKEN_LEN + 1]. 0 or -EIO. */
int md_token_make(const struct md_token_key *k, const char *uuid, int64_t now_s, int ttl_s, char *buf);
/* Is tok (len bytes, untrusted) a token of uuid not yet expired at now_s? */
bool md_token_check(const struct md_token_key *k, const char *uuid, int64_t now_s, const char *tok, size_t len);
/* X-aws-ec2-metadata-token-ttl-seconds: 1..21600 (decimal, nothing else). -EINVAL. */
int md_token_ttl_parse(const char *s, size_t len, int *ttl_s);

/* ---- ratelimit.c: token bucket per source ---- */

struct md_ratelimit;
int md_ratelimit_new(double rate, int burst, struct md_ratelimit **out);
/* May a request from (scope, addr) go at now_ms? Takes one token if so. */
bool md_ratelimit_take(struct md_ratelimit *rl, uint32_t scope, uint32_t addr, uint64_t now_ms);
void md_ratelimit_free(struct md_ratelimit *rl);

/* ---- handle.c: one request -> one answer, no I/O ---- */

struct md_request {
    const char *method;       /* "GET", "HEAD", "PUT"... */
    const char *path;         /* URL path, no query string */
    const char *token;        /* X-aws-ec2-metadata-token value or NULL */
    size_t token_len;
    const char *ttl;          /* X-aws-ec2-metadata-token-ttl-seconds value or NULL */
    size_t ttl_len;
    bool forwarded;           /* an X-Forwarded-For header is present */
    int64_t now_s;            /* wall clock */
    struct md_cache *cache;   /* the instance's render cache, or NULL */
};

struct md_reply {
    struct md_answer a;
    bool token_put;           /* a token's answer: send with IP_TTL = hop_limit */
    int ttl_s;                /* its TTL (echoed in a header) */
    bool allow_put;           /* a 405's Allow header names PUT */
};

/* The answer to rq from instance m (NULL: nobody known: 404). 0 or -ENOMEM. */
int md_handle(const struct md_instance *m, const struct md_token_key *key, const struct md_request *rq,
              struct md_reply *out);

#endif
