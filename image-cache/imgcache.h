/* imgcache.h: the host's guest-image cache.
 *
 * Brings guest images to the host once (plain HTTP(S) URLs with an expected
 * digest, or OpenStack Glance v2), proves they are what was asked for (the
 * digest is computed while the bytes stream to disk), shares one copy among
 * every guest that boots from it (single flight: concurrent requests for one
 * image share one download), gives each guest a qcow2 overlay on the shared
 * base, and keeps the cache under a size budget by evicting least recently
 * used images that no guest uses.
 *
 * Threading: every function here runs on the thread of the loop given to
 * imgcache_new() (the agent's loop), except imgcache_qcow2_overlay_write(),
 * which touches no cache state and may run on any thread. Nothing blocks the
 * loop for long: transfers run through libcurl's multi-socket interface on
 * the loop, and disk writes, hashing, fsync and `qemu-img info` run on the
 * libuv thread pool.
 *
 * On disk, under cfg->dir:
 *   images/<algo>-<hex>   verified bases, read-only, content-addressed
 *   tmp/<id>.part         downloads in progress (removed at start)
 * In SQLite (the agent's handle): tables `images` and `image_users`.
 *
 * Error codes put in struct agent_error by this module:
 *   invalid_field, missing_field, unknown_field   bad request (field set)
 *   not_found            no such image id
 *   conflict             delete refused while in use or downloading
 *   source_not_found     the URL or Glance answered 404
 *   download_failed      network or HTTP failure after retries
 *   digest_mismatch      the bytes do not match (message has both digests)
 *   source_forbidden     the URL or a redirect leads to an address refused
 *                        (loopback, link-local/metadata; see allowed_networks)
 *   insufficient_resources  does not fit in the budget or on the disk (also a
 *                        body of unknown length, stopped once it passes that)
 *   image_not_active     Glance image not in status "active"
 *   unsupported_format   not raw or qcow2
 *   unsafe_image         qcow2 with a backing file, external data file,
 *                        encryption, or marked corrupt
 *   image_too_large      virtual size over cfg->max_virtual_size
 *   glance_error         Glance metadata unusable
 *   internal             anything else (message says what)
 *
 * Messages and answers show URLs without their credentials (url_redact()).
 */
#ifndef CA_IMAGE_CACHE_IMGCACHE_H
#define CA_IMAGE_CACHE_IMGCACHE_H

#include <jansson.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "common/util.h"

struct imgcache;

/* Image ids are canonical UUIDs. */
#define IMGCACHE_ID_LEN 37

/* Configuration. Strings are copied by imgcache_new(). A zero field takes the
 * default named after it. */
struct imgcache_config {
    const char *dir;           /* cache directory, created if missing (required) */
    uint64_t budget_bytes;     /* size budget for cached images; 0: use budget_percent */
    int budget_percent;        /* budget as % of dir's filesystem; 0 (and budget_bytes 0):
                                * no budget, only the free space on disk limits */
    int64_t max_unused_age_s;  /* evict images unused this long; 0: never by age */
    uint64_t max_virtual_size; /* refuse images whose virtual size exceeds this; 0: 1 TiB */
    const char *ca_bundle;     /* PEM CA bundle for https; NULL: system default */
    int max_redirects;         /* 0: 5; negative: do not follow redirects */
    int max_parallel;          /* downloads at once, more wait their turn; 0: 4 */
    int stall_timeout_s;       /* a try with no byte for this long ends (and is retried); 0: 30 */
    int retries;               /* retries after transient failures; 0: 3; negative: none */
    const char *glance_url;    /* Glance endpoint root, e.g. http://glance:9292; NULL: none */
    const char *glance_token;  /* sent as X-Auth-Token to Glance; NULL: none */
    int retry_delay_ms;        /* first backoff delay, doubled per retry (cap 30 s); 0: 1000 */
    int evict_interval_s;      /* how often eviction runs on a timer; 0: 300 */
    const char *qemu_img;      /* qemu-img binary; NULL: /usr/bin/qemu-img */
    /* Networks image URLs (and their redirects) may reach although refused by
     * default (loopback, link-local and the metadata address): CIDRs separated
     * by commas or spaces, IPv4 or IPv6; NULL or "": none. Checked on the
     * address of every connection. The Glance endpoint is operator
     * configuration and is not checked (Glance downloads never follow
     * redirects). A bad list fails imgcache_new() naming
     * image_cache.allowed_networks. */
    const char *allowed_networks;
    /* Called once per failed pull (not per waiter), on the loop thread,
     * before the waiters' callbacks; not for pulls cancelled by
     * imgcache_free(). source is the URL without credentials, or
     * "glance:<id>". May be NULL. This is where the caller logs. */
    void (*pull_failed)(const char *image_id, const char *source,
                        const struct agent_error *err, void *opaque);
    void *pull_failed_opaque;
};

/* What to acquire: exactly one of id, url (with digest), or glance_id.
 * Strings are borrowed for the duration of the call. */
struct imgcache_request {
    const char *id;        /* an image already known to the cache */
    const char *url;       /* http or https URL of the image bytes */
    const char *digest;    /* with url: "sha256:HEX" or "sha512:HEX" */
    const char *glance_id; /* a Glance v2 image id (UUID) */
};

/* A cached image as handed to a done callback; valid during the call only. */
struct imgcache_image_info {
    const char *id;         /* image id */
    const char *path;       /* absolute path of the read-only base file */
    const char *format;     /* "raw" or "qcow2" (detected, never from the request) */
    const char *digest;     /* "sha256:hex" or "sha512:hex" */
    uint64_t size;          /* bytes on disk */
    uint64_t virtual_size;  /* bytes the guest sees */
};

/* Called once per successful imgcache_acquire(), on the loop thread, never
 * from within imgcache_acquire() itself. status 0: info is set, err NULL.
 * status < 0: info NULL, err says why; -ECANCELED if imgcache_free() ran first
 * (then from within imgcache_free()). Do not call imgcache_free() from it. */
typedef void (*imgcache_done_cb)(int status, const struct imgcache_image_info *info,
                                 const struct agent_error *err, void *opaque);

/* The cache's tables (images, image_users) and their migrations, for the
 * owner of the database to migrate with its own (common/sqlite.h); the
 * agent's store_open() does. */
struct sqlite_schema;
extern const struct sqlite_schema imgcache_schema;

/* Create the cache on loop, using db (borrowed; the agent owns it and must
 * keep it open until imgcache_free()). Creates the tables if missing, removes
 * download leftovers, checks the index against the files (cached entries
 * whose file is missing become "failed"; files no entry names are removed),
 * and starts the eviction timer. 0 and *ret set, or -errno with err filled. */
int imgcache_new(uv_loop_t *loop, sqlite3 *db, const struct imgcache_config *cfg,
                 struct imgcache **ret, struct agent_error *err);

/* Stop every download (their callbacks get -ECANCELED), close the handles.
 * Memory is released once the loop has run the close callbacks and any
 * thread-pool work in flight, so keep running the loop after this (as with
 * uv_close()). Accepts NULL. */
void imgcache_free(struct imgcache *c);

/* Parse an image reference object: {"id"} | {"url","digest"} | {"glance_id"}.
 * Strings in *req are borrowed from obj. field_prefix ("image" for a launch
 * body, "" for POST /v1/images) prefixes the field named in err. 0 or -EINVAL. */
int imgcache_request_from_json(const json_t *obj, const char *field_prefix,
                               struct imgcache_request *req, struct agent_error *err);

/* Get an image onto the host. If user (an instance UUID; NULL for a
 * pre-cache) is given, the image is pinned for it at once: never evicted or
 * deleted until imgcache_release(). A cached image completes at once
 * (cb deferred to the next loop turn); an image being downloaded gets cb
 * added to that download; else a download starts. cb may be NULL.
 * image_id (may be NULL) receives the id of the entry (to follow progress
 * with imgcache_get()); the id in cb's info is the one to keep (they differ
 * only when a Glance image turns out to be content already cached under
 * another entry, which then absorbs this one). If the image fails, user's
 * pin on it is dropped. Returns 0 (cb will fire exactly once), or -errno
 * with err filled and cb never called: -EINVAL bad request, -ENOENT unknown
 * id, -ENOTSUP glance_id without a configured Glance. */
int imgcache_acquire(struct imgcache *c, const struct imgcache_request *req,
                     const char *user, imgcache_done_cb cb, void *opaque,
                     char image_id[IMGCACHE_ID_LEN], struct agent_error *err);

/* Unpin image_id for user (image_id NULL: every image user holds). Marks the
 * images as used now. Returns the number of pins removed (0 if none). */
int imgcache_release(struct imgcache *c, const char *image_id, const char *user);

/* Make a qcow2 overlay at overlay_path (must not exist) backed by cached image
 * image_id, with the base's format written explicitly, and a virtual size of
 * size_bytes (0: the base's size; less than the base's virtual size is
 * refused). Writes a few KiB whatever the base's size. 0 or -errno with err. */
int imgcache_overlay_create(struct imgcache *c, const char *image_id,
                            const char *overlay_path, uint64_t size_bytes,
                            struct agent_error *err);

/* The same, from a base path and format (e.g. from imgcache_image_info);
 * touches no cache state, safe on any thread. size_bytes must be given.
 * base_path NULL (base_format ignored): a blank qcow2 of size_bytes with no
 * backing file (a kernel-only launch's ephemeral disk). */
int imgcache_qcow2_overlay_write(const char *overlay_path, const char *base_path,
                                 const char *base_format, uint64_t size_bytes,
                                 struct agent_error *err);

/* Grow the qcow2 disk at path (one the agent wrote: a guest's overlay or
 * ephemeral disk) to size_bytes with `qemu-img resize` (argv vector, clean
 * environment, under prlimit when installed); already that size or larger:
 * nothing done (a disk is never shrunk). The guest must be off. 0 or -errno
 * with err. Blocking; any thread. qemu_img NULL: /usr/bin/qemu-img. */
int imgcache_qcow2_grow(const char *qemu_img, const char *path, uint64_t size_bytes, struct agent_error *err);

/* Judge a file the host already has (a launch's local image.path) exactly as
 * a downloaded image is judged: `qemu-img info` (the cache's binary) decides
 * the format, raw or qcow2 only, no backing file, no external data file, no
 * encryption, not corrupt, virtual size within the cache's limit. On success
 * returns 0 with format ("raw" or "qcow2") and *virtual_size set; else -errno
 * with err (unsupported_format, unsafe_image, image_too_large, internal).
 * Blocking (spawns qemu-img, up to 60 s): call off the loop; reads only
 * settings fixed at imgcache_new(), so it is safe on any thread. */
int imgcache_file_inspect(const struct imgcache *c, const char *path, char format[16],
                          uint64_t *virtual_size, struct agent_error *err);

/* All images as a new JSON array of image answers (see imgcache_get()). */
json_t *imgcache_list(struct imgcache *c);

/* One image answer as a new JSON object, or NULL if id is unknown:
 * {"id","digest","size","format","state":"downloading|cached|failed",
 *  "in_use_by":[user...],"source":{"url"}|{"glance_id"},"virtual_size",
 *  (the url without credentials: url_redact())
 *  "created_at","last_used_at","error":{"code","message"}|null,
 *  "progress":{"bytes_done","bytes_total","rate_bps"}|null (while downloading)}.
 * Unknown numbers and strings are null. */
json_t *imgcache_get(struct imgcache *c, const char *id);

/* Remove a cached or failed image and its file. -ENOENT unknown, -EBUSY in
 * use or downloading (err says by whom). */
int imgcache_delete(struct imgcache *c, const char *id, struct agent_error *err);

/* Evict unused images, least recently used first, until needed_bytes more
 * fit in the budget and on the disk; also evicts unused images older than
 * max_unused_age_s. Returns the number evicted, or -ENOSPC if room could not
 * be made (images in use are never evicted). */
int imgcache_evict(struct imgcache *c, uint64_t needed_bytes);

#endif
