/* imgcache-internal.h: what the files of image-cache/ share with each other
 * and with the unit tests. Not part of the public API (imgcache.h is). */
#ifndef CA_IMAGE_CACHE_INTERNAL_H
#define CA_IMAGE_CACHE_INTERNAL_H

#include <curl/curl.h>
#include <openssl/evp.h>

#include "common/httpuv.h"
#include "image-cache/imgcache.h"

/* ---- digest.c: digests named "algo:hex" ---- */

enum imgcache_algo {
    IMGCACHE_ALGO_NONE = 0,
    IMGCACHE_ALGO_SHA256,
    IMGCACHE_ALGO_SHA512,
    IMGCACHE_ALGO_MD5, /* only as Glance's secondary "checksum" */
};

#define IMGCACHE_DIGEST_MAX (7 + 128 + 1) /* "sha512:" + 128 hex + NUL */

struct imgcache_digest {
    enum imgcache_algo algo;
    char hex[129]; /* lower-case */
};

/* Parse "sha256:HEX" or "sha512:HEX" (hex of the exact length, any case;
 * stored lower-case). 0 or -EINVAL. */
int imgcache_digest_parse(const char *s, struct imgcache_digest *d);
/* "algo:hex" into buf (IMGCACHE_DIGEST_MAX bytes). */
void imgcache_digest_format(const struct imgcache_digest *d, char *buf, size_t size);
/* "sha256", "sha512", "md5". */
const char *imgcache_algo_name(enum imgcache_algo a);
/* The algorithm named (as Glance's os_hash_algo), or NONE. */
enum imgcache_algo imgcache_algo_from_name(const char *name);
/* Hex digest length of an algorithm (0 for NONE). */
size_t imgcache_algo_hex_len(enum imgcache_algo a);
const EVP_MD *imgcache_algo_md(enum imgcache_algo a);
/* Lower-case hex of len bytes into out (2*len+1 bytes). */
void imgcache_hex(const unsigned char *in, size_t len, char *out);

/* ---- source.c: request checks ---- */

/* Is url an absolute http:// or https:// URL with a host, at most 4096
 * characters? 0, or -EINVAL with err (field names the field). */
int imgcache_url_check(const char *url, const char *field, struct agent_error *err);

/* Check a request (exactly one source; url with a valid digest; glance_id a
 * UUID; id a UUID). prefix as in imgcache_request_from_json(). 0 or -EINVAL. */
int imgcache_request_check(const struct imgcache_request *req, const char *prefix,
                           struct agent_error *err);

/* Networks: which addresses image downloads may connect to. Refused by
 * default: loopback (127.0.0.0/8, ::1), link-local (169.254.0.0/16, the
 * metadata address, and fe80::/10), 0.0.0.0/8 and ::, also in their
 * IPv4-mapped IPv6 forms (::ffff:127.0.0.1); everything else (private
 * RFC 1918 ranges included) is allowed. An allow-list entry overrides. */
struct imgcache_net {
    int family;              /* AF_INET or AF_INET6 */
    unsigned char addr[16];  /* network bytes (4 used for AF_INET), host bits zero */
    unsigned prefix;         /* prefix length */
};

/* Parse a comma- or space-separated list of CIDRs ("127.0.0.0/8, ::1/128";
 * a bare address is one host) into a new array (*nets, free() it; NULL when
 * empty). field names the setting in err. 0 or -EINVAL / -ENOMEM. */
int imgcache_nets_parse(const char *spec, const char *field, struct imgcache_net **nets,
                        size_t *n, struct agent_error *err);

/* May a download connect to this address (family AF_INET or AF_INET6, addr
 * its 4 or 16 bytes)? true, or false with why ("127.0.0.1 is a loopback
 * address") set. */
bool imgcache_addr_allowed(const struct imgcache_net *allowed, size_t n, int family,
                           const void *addr, char *why, size_t whylen);
/* The same for an address in text (as libcurl reports it). Unparsable
 * text is refused. */
bool imgcache_addr_text_allowed(const struct imgcache_net *allowed, size_t n, const char *ip,
                                char *why, size_t whylen);

/* ---- fetch.c: one download to a file ---- */

struct imgcache_fetch;

struct imgcache_fetch_opts {
    const char *url;          /* http(s) URL (checked by the caller) */
    const char *auth_token;   /* X-Auth-Token header value, or NULL */
    const char *ca_bundle;    /* or NULL */
    int max_redirects;        /* < 0: redirects are errors */
    int stall_timeout_s;      /* > 0 */
    int retries;              /* >= 0 */
    int retry_delay_ms;       /* > 0 */
    const char *path;         /* file to create (must not exist) */
    enum imgcache_algo algo;  /* digest to compute (SHA256 or SHA512) */
    bool md5_too;             /* also compute MD5 (Glance checksum) */
    uint64_t expected_size;   /* bytes expected in total, 0: unknown */
    uint64_t max_size;        /* fail beyond this many bytes, 0: no bound */
    bool check_peer;          /* refuse connections to forbidden addresses (below) */
    const struct imgcache_net *allowed; /* allow-list over the defaults (borrowed) */
    size_t n_allowed;
    /* For a body of unknown length: called before the received bytes pass
     * what was granted so far, with need (the bytes they are about to
     * reach). Return 0 with *granted >= need to go on, or -errno with err
     * filled to fail the fetch with that error. NULL: no bound. */
    int (*room_cb)(uint64_t need, uint64_t *granted, struct agent_error *err, void *opaque);
};

/* Told the total size once it is known (Content-Length or expected_size),
 * before any byte is written. Return 0 to go on, or -errno with err filled
 * to fail the fetch with that error. */
typedef int (*imgcache_fetch_size_cb)(uint64_t total, struct agent_error *err, void *opaque);

/* Called once when the fetch ends. status 0: the file is complete, fsynced
 * and closed, imgcache_fetch_hex() has the digests. status < 0: the file
 * was removed, err says why. The fetch stays valid until imgcache_fetch_free(). */
typedef void (*imgcache_fetch_done_cb)(struct imgcache_fetch *f, int status,
                                       const struct agent_error *err, void *opaque);

struct imgcache_progress {
    uint64_t bytes_done;
    uint64_t bytes_total; /* 0: unknown */
    uint64_t rate_bps;
};

/* Start downloading. 0 and *ret set (done_cb fires later), or -errno with
 * err filled (the file is not left behind, no callback). size_cb may be NULL. */
int imgcache_fetch_start(uv_loop_t *loop, struct httpuv *http,
                         const struct imgcache_fetch_opts *o,
                         imgcache_fetch_size_cb size_cb, imgcache_fetch_done_cb done_cb,
                         void *opaque, struct imgcache_fetch **ret, struct agent_error *err);
void imgcache_fetch_progress(const struct imgcache_fetch *f, struct imgcache_progress *p);
/* Hex digest of algo (the primary one, or MD5 if md5_too) after success. */
const char *imgcache_fetch_hex(const struct imgcache_fetch *f, enum imgcache_algo algo);
/* Number of HTTP requests this fetch made (first try, resumes, retries). */
unsigned imgcache_fetch_attempts(const struct imgcache_fetch *f);
/* Stop (if running; done_cb will not fire), remove the file unless the
 * fetch succeeded, and free once thread-pool work in flight has ended.
 * Accepts NULL. */
void imgcache_fetch_free(struct imgcache_fetch *f);

/* Is an HTTP status worth retrying (408, 425, 429, 5xx but 501/505)? */
bool imgcache_http_status_transient(long status);
/* Is a curl result worth retrying (connection, timeouts, cuts)? */
bool imgcache_curl_transient(CURLcode rc);

/* ---- glance.c: Glance v2 metadata ---- */

struct imgcache_glance_meta {
    char status[32];
    uint64_t size;            /* 0 if unknown */
    enum imgcache_algo algo;  /* os_hash_algo when sha256/sha512, else NONE */
    char hash_hex[129];       /* os_hash_value when algo is set */
    char md5_hex[33];         /* checksum, "" if none */
};

/* Parse a GET /v2/images/{id} answer. 0 or -EINVAL with err. */
int imgcache_glance_parse(const char *body, size_t len, struct imgcache_glance_meta *m,
                          struct agent_error *err);

struct imgcache_glance_req;
typedef void (*imgcache_glance_cb)(int status, const struct imgcache_glance_meta *m,
                                   const struct agent_error *err, void *opaque);
/* GET {base}/v2/images/{id} (with retries on transient failures). cb fires
 * once unless imgcache_glance_req_free() comes first. 0 or -errno. */
int imgcache_glance_get(uv_loop_t *loop, struct httpuv *http, const char *base,
                        const char *token, const char *glance_id, const char *ca_bundle,
                        int retries, int retry_delay_ms, int stall_timeout_s,
                        imgcache_glance_cb cb, void *opaque,
                        struct imgcache_glance_req **ret);
void imgcache_glance_req_free(struct imgcache_glance_req *r);
/* "{base}/v2/images/{id}/file" (newly allocated), base without trailing '/'. */
char *imgcache_glance_file_url(const char *base, const char *glance_id);

/* ---- inspect.c: what is in a file (blocking: call off the loop) ---- */

struct imgcache_inspect {
    char format[16];        /* "raw" or "qcow2" */
    uint64_t virtual_size;
    uint64_t actual_size;   /* file size in bytes */
};

/* Run `qemu-img info --output=json PATH` (argv vector, under prlimit when
 * available, killed after 60 s) and judge the answer with
 * imgcache_inspect_judge(). 0 or -errno with err. */
int imgcache_inspect_file(const char *qemu_img, const char *path, uint64_t max_virtual_size,
                          struct imgcache_inspect *out, struct agent_error *err);
/* Judge qemu-img's JSON: only raw and qcow2; no backing file, no external
 * data file, no encryption, not corrupt; virtual size within the bound. */
int imgcache_inspect_judge(const char *json, size_t len, uint64_t max_virtual_size,
                           struct imgcache_inspect *out, struct agent_error *err);

/* ---- index.c: the SQLite index ---- */

enum imgcache_state {
    IMGCACHE_DOWNLOADING = 0,
    IMGCACHE_CACHED,
    IMGCACHE_FAILED,
};
const char *imgcache_state_name(enum imgcache_state s);

struct imgcache_row {
    char id[IMGCACHE_ID_LEN];
    char digest[IMGCACHE_DIGEST_MAX]; /* "" while unknown */
    char *url;                        /* source URL, or NULL */
    char glance_id[IMGCACHE_ID_LEN];  /* "" unless from Glance */
    enum imgcache_state state;
    char format[16];                  /* "" while unknown */
    int64_t size;                     /* -1 while unknown */
    int64_t virtual_size;             /* -1 while unknown */
    char *path;                       /* base file, or NULL */
    int64_t created_at;               /* ms since the epoch */
    int64_t last_used_at;             /* ms since the epoch */
    char error_code[32];              /* "" unless failed */
    char *error_message;              /* or NULL */
};
void imgcache_row_clear(struct imgcache_row *r);

int imgcache_index_init(sqlite3 *db);
int imgcache_index_insert(sqlite3 *db, const struct imgcache_row *r);
/* Write every column of r (by id). */
int imgcache_index_update(sqlite3 *db, const struct imgcache_row *r);
/* 0 and *r filled (clear it after), -ENOENT, or -EIO. */
int imgcache_index_get(sqlite3 *db, const char *id, struct imgcache_row *r);
int imgcache_index_find_digest(sqlite3 *db, const char *digest, struct imgcache_row *r);
int imgcache_index_find_glance(sqlite3 *db, const char *glance_id, struct imgcache_row *r);
int imgcache_index_delete(sqlite3 *db, const char *id);
int imgcache_index_touch(sqlite3 *db, const char *id, int64_t when_ms);
/* Ids of every row, oldest first: *ids is a malloc'd array of n strings. */
int imgcache_index_ids(sqlite3 *db, char (**ids)[IMGCACHE_ID_LEN], size_t *n);
int imgcache_index_user_add(sqlite3 *db, const char *id, const char *user);
/* Pins removed (image id NULL: all of user's); ids of touched images are
 * stamped last_used_at = now. */
int imgcache_index_user_remove(sqlite3 *db, const char *id, const char *user, int64_t now_ms);
int imgcache_index_user_move(sqlite3 *db, const char *from_id, const char *to_id);
int imgcache_index_users_clear(sqlite3 *db, const char *id);
/* Users of id as a new JSON array of strings (NULL on error). */
json_t *imgcache_index_users(sqlite3 *db, const char *id);
int imgcache_index_user_count(sqlite3 *db, const char *id);
/* Sum of sizes of cached rows. */
int imgcache_index_cached_bytes(sqlite3 *db, uint64_t *bytes);

/* An eviction candidate: a cached image no user pins. */
struct imgcache_victim {
    char id[IMGCACHE_ID_LEN];
    int64_t size;
    int64_t last_used_at;
};
/* Cached, unpinned images, least recently used first (ties: oldest). */
int imgcache_index_victims(sqlite3 *db, struct imgcache_victim **v, size_t *n);

/* ---- evict.c: which images go ---- */

/* Choose victims (in the given LRU order) so that used + needed fits under
 * budget and needed fits in free_bytes (each eviction frees its size), and
 * every victim last used before age_cutoff_ms (0: none) goes anyway.
 * Marks chosen[i]; returns the count, or -ENOSPC if room cannot be made
 * (chosen is then still the best effort). Pure function, for tests. */
int imgcache_evict_plan(const struct imgcache_victim *v, size_t n, uint64_t used,
                        uint64_t budget, uint64_t free_bytes, uint64_t needed,
                        int64_t age_cutoff_ms, bool *chosen);

/* ---- overlay.c ---- */

/* Bytes of a qcow2 overlay header for these parameters (for tests). */
int imgcache_qcow2_overlay_header(const char *base_path, const char *base_format,
                                  uint64_t size_bytes, unsigned char *buf, size_t bufsize,
                                  uint64_t *file_size);

/* ---- the cache object (imgcache.c, evict.c, answers.c), for api.c and the tests ---- */

/* Effective budget in bytes (UINT64_MAX when none). */
uint64_t imgcache_budget(struct imgcache *c);
/* Progress of a download in flight: 0, or -ENOENT if none for id. */
int imgcache_progress(struct imgcache *c, const char *id, struct imgcache_progress *p);
/* The cache's directory (absolute). */
const char *imgcache_dir(const struct imgcache *c);

#endif
