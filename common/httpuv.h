/* httpuv.h: libcurl's multi-socket interface driven by a libuv loop, so many
 * transfers run at once and none blocks the loop (curl's multi-uv.c model).
 *
 * Usage: build a CURL easy handle as usual, then httpuv_add() it with a
 * completion callback. The callback fires once, on the loop thread, when the
 * transfer ends (any CURLcode); the easy handle is then already removed from
 * the multi handle and belongs to the caller again (free or reuse it).
 *
 * httpuv_easy_new() builds such a handle with the options every client here
 * shares (no signals, http and https only, user agent, timeouts, redirect
 * policy, CA bundle, headers, body and header callbacks); a caller then sets
 * what is its own (resume offset, method and body, socket checks). */
#ifndef CA_COMMON_HTTPUV_H
#define CA_COMMON_HTTPUV_H

#include <curl/curl.h>
#include <stdbool.h>
#include <uv.h>

struct httpuv;

/* What httpuv_easy_new() sets. Strings are copied by libcurl; headers and
 * errbuf are borrowed and must outlive the handle. Zero means "not set"
 * (libcurl's default) for every number but max_redirects. */
struct httpuv_easy_opts {
    const char *url;                /* required */
    const char *user_agent;         /* required */
    long connect_timeout_ms;        /* connection phase */
    long timeout_ms;                /* the whole transfer */
    long low_speed_time_s;          /* abort after this long under 1 byte/s */
    int max_redirects;              /* < 0: none followed; else up to this many,
                                       to http and https only */
    bool fail_on_error;             /* an HTTP status >= 400 ends the transfer */
    bool tcp_keepalive;
    long buffer_size;               /* receive buffer (CURLOPT_BUFFERSIZE) */
    const char *ca_bundle;          /* CA file, NULL for the system's */
    struct curl_slist *headers;     /* request headers, or NULL */
    curl_write_callback on_body;    /* body bytes, with body_data */
    void *body_data;
    curl_write_callback on_header;  /* header lines, with header_data; or NULL */
    void *header_data;
    char *errbuf;                   /* CURL_ERROR_SIZE bytes, or NULL */
};

/* A new easy handle set up as o says. 0 and *ret (the caller's: free it with
 * curl_easy_cleanup()), -ENOMEM, or -EINVAL when libcurl refuses an option
 * (*ret untouched). */
int httpuv_easy_new(const struct httpuv_easy_opts *o, CURL **ret);

typedef void (*httpuv_done_cb)(CURL *easy, CURLcode result, void *opaque);

/* Create a driver on loop. 0 and *ret set, or -errno. */
int httpuv_new(uv_loop_t *loop, struct httpuv **ret);

/* Start easy. On success the driver holds it until cb fires (or until
 * httpuv_cancel()); on failure (-errno) cb never fires. */
int httpuv_add(struct httpuv *h, CURL *easy, httpuv_done_cb cb, void *opaque);

/* Stop a running transfer; its cb does not fire. The caller owns easy again. */
int httpuv_cancel(struct httpuv *h, CURL *easy);

/* Number of transfers in flight. */
unsigned httpuv_active(const struct httpuv *h);

/* Cancel everything (no callbacks) and close the libuv handles; the memory is
 * released once the loop has run the close callbacks. Accepts NULL. */
void httpuv_free(struct httpuv *h);

#endif
