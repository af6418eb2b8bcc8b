/* metrics.h: the agent's own health, for Prometheus: operations by type and
 * result with duration histograms, image cache hits, misses and bytes, bus
 * delivery lag and errors, Placement sync results. The agent layer calls the
 * setters where things happen; a scrape renders the text format (0.0.4).
 * Every name starts with compute_agent_. Guests' figures are telemetry.h's.
 *
 * Threads: loop thread only (no locking). No function here fails but
 * metrics_new() and metrics_render_prometheus(). */
#ifndef CA_AGENT_METRICS_H
#define CA_AGENT_METRICS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

struct bus_stats;
struct metrics;

/* A new registry (*ret owned by the caller, metrics_free()). 0 or -ENOMEM. */
int metrics_new(struct metrics **ret);
/* Accepts NULL; returns NULL. */
struct metrics *metrics_free(struct metrics *m);

/* An operation ended: type "launch", "start", "stop", "reboot", "terminate"
 * (any short [a-z_] name), result "succeeded" or "failed", seconds from
 * accepted to finished. Past 64 distinct (type, result) pairs, new pairs are
 * counted under type "other". */
void metrics_op_finished(struct metrics *m, const char *type, const char *result, double seconds);

/* Image cache: a request served from the cache, one that had to fetch, bytes
 * fetched, and the cache's current size on disk. */
void metrics_imgcache_hit(struct metrics *m);
void metrics_imgcache_miss(struct metrics *m);
void metrics_imgcache_fetched(struct metrics *m, uint64_t bytes);
void metrics_imgcache_set_size(struct metrics *m, uint64_t bytes);

/* Bus: a snapshot of bus_stats() (copied; call it before rendering, or
 * whenever), and client-level errors as on_error reports them. */
void metrics_bus_update(struct metrics *m, const struct bus_stats *s);
void metrics_bus_error(struct metrics *m, bool fatal);

/* A Placement sync ended: result "ok", "conflict" (stale generation) or
 * "error" (any short [a-z_] name), seconds it took. */
void metrics_placement_sync(struct metrics *m, const char *result, double seconds);

/* Issue 11: an instance found without its allocation ("missing"), an
 * allocation "written" or "removed" by the agent, or one Placement
 * "refused". m may be NULL. */
void metrics_placement_allocation(struct metrics *m, const char *what);

/* Write every family in the Prometheus text format. 0 or -EIO. */
/* Connection states, set before rendering: libvirt connected, Placement
 * answering (placement: 1, 0, or -1 when no Placement is configured: no
 * compute_agent_placement_up series then). */
void metrics_set_up(struct metrics *m, bool libvirt_up, int placement_up);

int metrics_render_prometheus(const struct metrics *m, FILE *out);

#endif
