/* imgcache-private.h: PRIVATE to the cache object's files: imgcache.c (the
 * object, acquire/release, overlays, startup consistency, start and stop),
 * flight.c (single-flight fetches: waiters, the slot queue, Glance metadata,
 * the fetch's callbacks), install.c (inspect and move into place, on the
 * thread pool), evict.c (eviction: the plan and applying it), answers.c (the
 * JSON answers: get, list, delete, progress). What the other image-cache
 * files and the tests share is imgcache-internal.h. Loop thread only, except
 * struct install's work on the thread pool. */
#ifndef CA_IMAGE_CACHE_PRIVATE_H
#define CA_IMAGE_CACHE_PRIVATE_H

#include "common/list.h"
#include "image-cache/imgcache-internal.h"

#define DEFAULT_MAX_VSIZE (1ull << 40)
#define ROOM_STEP (16ull << 20) /* room asked at a time for a body of unknown length */
#define USER_MAX 64

struct waiter {
    struct list_node link;    /* in flight.waiters or imgcache.ready */
    imgcache_done_cb cb;
    void *opaque;
    char id[IMGCACHE_ID_LEN]; /* for cache hits: the image to report */
};

struct flight {
    struct imgcache *c;
    struct list_node link;          /* in c->flights */
    struct list_node qlink;         /* in c->queue while waiting for a slot */
    char id[IMGCACHE_ID_LEN];       /* the index row */
    struct list_node waiters;       /* waiter.link: callbacks to call at the end */
    bool started;                   /* holds one of max_parallel slots */
    char *url;                      /* image bytes (for Glance: the /file URL) */
    char glance_id[IMGCACHE_ID_LEN]; /* "" unless from Glance */
    struct imgcache_digest expect;  /* algo NONE: unknown (Glance md5-only) */
    char md5_expect[33];            /* Glance checksum, "" if none */
    uint64_t expected_size;         /* 0: unknown */
    uint64_t reserved;              /* bytes counted in c->reserved */
    struct imgcache_glance_req *meta;
    struct imgcache_fetch *fetch;
    char *tmp_path;
    struct install *install;        /* install work in flight, or NULL */
};

struct install {
    uv_work_t req;
    struct imgcache *c;
    struct flight *fl;              /* NULL once the cache is being freed */
    char *qemu_img, *tmp_path, *final_path, *images_dir, *tmp_dir;
    uint64_t max_virtual_size;
    struct imgcache_inspect info;
    int status;
    struct agent_error err;
};

struct imgcache {
    uv_loop_t *loop;               /* the agent's loop (borrowed) */
    sqlite3 *db;                   /* the agent's store (borrowed) */
    struct httpuv *http;           /* transfers (owned) */
    char *dir, *images_dir, *tmp_dir; /* absolute paths */
    char *ca_bundle, *glance_url, *glance_token, *qemu_img;
    uint64_t budget_bytes;
    int budget_percent;
    int64_t max_unused_age_ms;
    uint64_t max_virtual_size;
    int max_redirects, max_parallel, stall_timeout_s, retries, retry_delay_ms;
    int evict_interval_s;
    struct imgcache_net *allowed;  /* image_cache.allowed_networks */
    size_t n_allowed;
    void (*pull_failed)(const char *, const char *, const struct agent_error *, void *);
    void *pull_failed_opaque;
    struct list_node flights;      /* flight.link: every flight, running or queued */
    struct list_node queue;        /* flight.qlink: waiting for a slot, oldest first */
    int running;                   /* flights holding a slot */
    uint64_t reserved;             /* expected bytes of fetches in flight */
    struct list_node ready;        /* waiter.link: cache hits to report next turn */
    uv_timer_t defer_timer;        /* reports cache hits */
    uv_timer_t evict_timer;        /* periodic eviction */
    int pending;                   /* open handles + install work, while freeing */
    bool freeing;
};

/* ---- imgcache.c ---- */

/* "a/b", malloc'd (the caller frees it), or NULL. */
char *imgcache_path_join(const char *a, const char *b);
/* fsync a directory (after a rename into it). 0 or -errno. */
int imgcache_fsync_dir(const char *path);
/* The public view of an index row (borrows r's strings). */
void imgcache_info_from_row(const struct imgcache_row *r, struct imgcache_image_info *info);
/* Is a cached row's file there with the recorded size? */
bool imgcache_base_file_ok(const struct imgcache_row *r);
/* Set (or with NULLs clear) the row's error code and message. */
void imgcache_row_set_error(struct imgcache_row *r, const char *code, const char *message);
/* While freeing: release the memory once the last handle and work are done. */
void imgcache_maybe_free_cache(struct imgcache *c);

/* ---- evict.c ---- */

/* Delete an image's file and its index row. 0 or -errno. */
int imgcache_remove_image(struct imgcache *c, const struct imgcache_row *r);
/* The periodic eviction (evict_timer's callback). */
void imgcache_on_evict_timer(uv_timer_t *t);

/* ---- flight.c ---- */

/* The flight fetching index row id, or NULL. */
struct flight *imgcache_flight_find(struct imgcache *c, const char *id);
/* Call and free every waiter of list (a list no callback can reach). */
void imgcache_call_waiters(struct list_node *list, int status,
                           const struct imgcache_image_info *info, const struct agent_error *err);
/* A cache hit: cb is called from the loop's next turn (never inside acquire). */
int imgcache_add_ready(struct imgcache *c, const char *id, imgcache_done_cb cb, void *opaque);
/* One more callback for fl's end. 0 or -ENOMEM. */
int imgcache_flight_add_waiter(struct flight *fl, imgcache_done_cb cb, void *opaque);
/* Take fl off the cache's lists and give back its slot and reservation. */
void imgcache_flight_unlink(struct flight *fl);
/* Free fl (unlinked) and what it owns. */
void imgcache_flight_destroy(struct flight *fl);
/* End a flight: unlink it, then call its waiters (which may acquire again). */
void imgcache_flight_end(struct flight *fl, int status, const struct imgcache_image_info *info,
                         const struct agent_error *err);
/* Mark fl's row failed, drop its pins, end it with status and err. */
void imgcache_flight_fail(struct flight *fl, int status, const struct agent_error *err);
/* A new flight for row r (state already "downloading"), with its first
 * waiter: from Glance (via_glance) or from r->url with expect. */
int imgcache_flight_new(struct imgcache *c, const struct imgcache_row *r, bool via_glance,
                        const struct imgcache_digest *expect, imgcache_done_cb cb, void *opaque);

/* ---- install.c ---- */

/* The file is complete with digest d: inspect it and move it into place on
 * the thread pool; the flight ends when that is done. */
void imgcache_install_start(struct flight *fl, const struct imgcache_digest *d);

#endif
