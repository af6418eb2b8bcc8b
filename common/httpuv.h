/* httpuv.h: libcurl's multi-socket interface driven by a libuv loop, so many
 * transfers run at once and none blocks the loop (curl's multi-uv.c model).
 *
 * Usage: build a CURL easy handle as usual, then httpuv_add() it with a
 * completion callback. The callback fires once, on the loop thread, when the
 * transfer ends (any CURLcode); the easy handle is then already removed from
 * the multi handle and belongs to the caller again (free or reuse it). */
#ifndef CA_COMMON_HTTPUV_H
#define CA_COMMON_HTTPUV_H

#include <curl/curl.h>
#include <uv.h>

struct httpuv;

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
