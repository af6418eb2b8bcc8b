/* fetch-private.h: PRIVATE to fetch.c (the object, failure, finishing, the
 * public calls), fetch-chunks.c (2 MiB chunks hashed and written on the thread
 * pool) and fetch-transfer.c (attempts, resumption, retries, the stall
 * watchdog, the allowed_networks checks); see fetch.c's head comment. Loop
 * thread only, except the chunk work on the thread pool. */
#ifndef CA_IMAGE_CACHE_FETCH_PRIVATE_H
#define CA_IMAGE_CACHE_FETCH_PRIVATE_H

#include "common/list.h"
#include "image-cache/imgcache-internal.h"

#define CHUNK_SIZE (2u << 20)  /* bytes per chunk */
#define MAX_CHUNKS 8           /* chunks in flight before the transfer pauses */
#define MAX_WRITES 2           /* concurrent writes per fetch */
#define DIRECT_ALIGN 4096      /* O_DIRECT buffer/offset/length alignment */
#define RETRY_DELAY_CAP_MS 30000
#define RECV_BUFFER (512 * 1024)

struct chunk {
    struct imgcache_fetch *f;
    struct list_node hlink; /* in the hash queue or the free list */
    struct list_node wlink; /* in the write queue */
    unsigned char *buf;  /* CHUNK_SIZE bytes, DIRECT_ALIGN-aligned */
    size_t len;          /* bytes held */
    uint64_t off;        /* file offset of buf[0] */
    int refs;            /* hash and write still to happen */
    int werr;            /* result of the write (0 or -errno) */
    uv_work_t hash_req;
    uv_work_t write_req;
};

enum phase {
    PH_RUNNING,  /* a transfer runs, or waits for its retry */
    PH_FINISHING, /* all bytes received; draining, then fsync */
    PH_FAILING,  /* failed; draining, then remove and report */
    PH_DONE,     /* reported */
};

struct imgcache_fetch {
    uv_loop_t *loop;           /* the agent's loop (borrowed) */
    struct httpuv *http;       /* transfers driver (borrowed) */
    CURL *easy;                /* our transfer (owned) */
    struct curl_slist *headers;
    char errbuf[CURL_ERROR_SIZE];
    char *path;                /* the file being written */
    int fd;                    /* buffered writes (tail, unaligned) */
    int fd_direct;             /* O_DIRECT writes, or -1 if refused */
    bool file_kept;            /* success: the file stays */
    struct imgcache_fetch_opts o; /* copy; o.url and o.path point into ours */
    char *shown_url;           /* o.url without credentials, for messages */
    EVP_MD_CTX *md;            /* primary digest (used by one thread at a time) */
    EVP_MD_CTX *md5;           /* Glance checksum, or NULL */
    char hex[129];             /* results */
    char md5_hex[33];
    imgcache_fetch_size_cb size_cb;
    imgcache_fetch_done_cb done_cb;
    void *opaque;
    uv_timer_t timer;          /* stall watchdog during a transfer, else retry backoff */
    uint64_t last_byte_ns;     /* when the last body byte arrived (or the attempt began) */

    uint64_t received;         /* bytes accepted = offset of the next byte */
    uint64_t total;            /* expected total, 0 unknown */
    uint64_t granted;          /* unknown total: bytes room_cb made room for */
    bool refused;              /* this attempt met a forbidden address */
    char refused_why[160];     /* ... which, and why */
    bool size_told;            /* size_cb called */
    bool attempt_checked;      /* first body byte of this attempt seen */
    uint64_t attempt_start;    /* received when this attempt began */
    struct chunk *cur;         /* being filled */
    struct list_node hash_q;   /* chunk.hlink: full chunks to hash, in order */
    bool hashing;
    struct list_node write_q;  /* chunk.wlink: full chunks to write */
    int writing;
    struct list_node free_chunks; /* chunk.hlink: buffers to reuse */
    int nchunks;               /* chunks not on the free list */
    bool paused;               /* write callback returned PAUSE */
    bool in_transfer;          /* easy is in httpuv */
    bool retry_pending;        /* timer armed or waiting for a drain */
    bool restart_from_zero;    /* next attempt cannot resume */
    unsigned attempts;         /* HTTP requests made */
    int retries_used;
    enum phase phase;
    int status;                /* first failure */
    struct agent_error err;
    bool in_write;             /* inside on_write: no curl calls allowed */
    bool final_queued;         /* fsync work in flight */
    bool final_done;           /* ... and ended with final_status */
    uv_work_t final_req;
    int final_status;
    int refs;                  /* owner + open timer + work in flight */
    bool owner_freed;

    uint64_t sample_ns;        /* rate sampling */
    uint64_t sample_bytes;
    uint64_t rate_bps;
};

/* ---- fetch.c ---- */

/* Record the first failure and stop the transfer; the report waits for the
 * thread-pool work in flight (imgcache_fetch_move_on()). */
void imgcache_fetch_fail(struct imgcache_fetch *f, int errnum, const char *code, const char *fmt,
                         ...) __attribute__((format(printf, 4, 5)));
/* Move on once the work in flight allows: finish, fail, retry, or free. */
void imgcache_fetch_move_on(struct imgcache_fetch *f);

/* ---- fetch-chunks.c ---- */

/* A chunk for the bytes at file offset off (from the free list, or new);
 * NULL when out of memory. */
struct chunk *imgcache_fetch_chunk_get(struct imgcache_fetch *f, uint64_t off);
/* No chunk waits or is being hashed or written. */
bool imgcache_fetch_drained(const struct imgcache_fetch *f);
/* Queue the chunk being filled (full, or the tail at the end). */
void imgcache_fetch_queue_cur(struct imgcache_fetch *f);
/* Start the hash and writes the queues allow; resume a paused transfer when
 * the chunks in flight fell below the bound. */
void imgcache_fetch_kick(struct imgcache_fetch *f);

/* ---- fetch-transfer.c ---- */

/* Start the next attempt now (reset first when it cannot resume). */
void imgcache_fetch_retry_now(struct imgcache_fetch *f);
/* Start one HTTP attempt from the bytes received so far. 0 or -errno. */
int imgcache_fetch_attempt_start(struct imgcache_fetch *f);
/* The handle (common/httpuv.c's shared setup), then the allowed_networks
 * checks (before connecting and once connected). 0, -ENOMEM or -EINVAL. */
int imgcache_fetch_setup_easy(struct imgcache_fetch *f);

#endif
