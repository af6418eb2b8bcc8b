/* evict.c: which cached images leave, and in what order.
 *
 * Only images no instance uses are candidates (index.c lists them, least
 * recently used first). Those unused for longer than the maximum age go in
 * any case; then, least recently used first, as many as it takes for the
 * bytes wanted to fit both under the budget and in the free disk space.
 * imgcache_evict_plan() decides (pure, unit-tested); imgcache_evict() reads
 * the index and the disk, asks it, and removes what it chose. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* asprintf */
#endif
#include "image-cache/imgcache-private.h"

#include <stdio.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

static uint64_t add_sat(uint64_t a, uint64_t b)
{
    return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

static bool fits(uint64_t used, uint64_t budget, uint64_t free_bytes, uint64_t needed)
{
    return needed <= budget && used <= budget - needed && needed <= free_bytes;
}

int imgcache_evict_plan(const struct imgcache_victim *v, size_t n, uint64_t used,
                        uint64_t budget, uint64_t free_bytes, uint64_t needed,
                        int64_t age_cutoff_ms, bool *chosen)
{
    int count = 0;

    for (size_t i = 0; i < n; i++) {
        uint64_t size = v[i].size > 0 ? (uint64_t)v[i].size : 0;

        chosen[i] = age_cutoff_ms > 0 && v[i].last_used_at < age_cutoff_ms;
        if (chosen[i]) {
            used = used > size ? used - size : 0;
            free_bytes = add_sat(free_bytes, size);
            count++;
        }
    }
    for (size_t i = 0; i < n && !fits(used, budget, free_bytes, needed); i++) {
        uint64_t size = v[i].size > 0 ? (uint64_t)v[i].size : 0;

        if (chosen[i])
            continue;
        chosen[i] = true;
        used = used > size ? used - size : 0;
        free_bytes = add_sat(free_bytes, size);
        count++;
    }
    return fits(used, budget, free_bytes, needed) ? count : -ENOSPC;
}

/* ---- applying the plan ---- */

uint64_t imgcache_budget(struct imgcache *c)
{
    struct statvfs vfs;

    if (c->budget_bytes)
        return c->budget_bytes;
    if (c->budget_percent > 0 && statvfs(c->dir, &vfs) == 0)
        return (uint64_t)vfs.f_blocks * vfs.f_frsize / 100 * (uint64_t)c->budget_percent;
    return UINT64_MAX;
}

const char *imgcache_dir(const struct imgcache *c)
{
    return c->dir;
}

int imgcache_remove_image(struct imgcache *c, const struct imgcache_row *r)
{
    if (r->path && r->state == IMGCACHE_CACHED && unlink(r->path) < 0 && errno != ENOENT)
        return -errno;
    return imgcache_index_delete(c->db, r->id);
}

static int evict_apply(struct imgcache *c, const struct imgcache_victim *v, size_t n,
                       const bool *chosen)
{
    int count = 0;

    for (size_t i = 0; i < n; i++) {
        struct imgcache_row r;

        if (!chosen[i] || imgcache_flight_find(c, v[i].id))
            continue;
        if (imgcache_index_get(c->db, v[i].id, &r) < 0)
            continue;
        if (imgcache_remove_image(c, &r) == 0)
            count++;
        imgcache_row_clear(&r);
    }
    return count;
}

int imgcache_evict(struct imgcache *c, uint64_t needed_bytes)
{
    _cleanup_free_ struct imgcache_victim *v = NULL;
    _cleanup_free_ bool *chosen = NULL;
    uint64_t used = 0, free_bytes = UINT64_MAX, in_flight_left = 0;
    int64_t cutoff = c->max_unused_age_ms > 0 ? now_wall_ms() - c->max_unused_age_ms : 0;
    struct statvfs vfs;
    size_t n = 0;
    int r, plan;

    if ((r = imgcache_index_cached_bytes(c->db, &used)) < 0 ||
        (r = imgcache_index_victims(c->db, &v, &n)) < 0)
        return r;
    used += c->reserved;
    /* the disk must also hold what downloads in flight still have to write */
    struct flight *fl;

    list_for_each_entry(fl, &c->flights, link) {
        struct imgcache_progress p;
        if (fl->fetch && fl->reserved) {
            imgcache_fetch_progress(fl->fetch, &p);
            in_flight_left += fl->reserved > p.bytes_done ? fl->reserved - p.bytes_done : 0;
        }
    }
    if (statvfs(c->dir, &vfs) == 0) {
        free_bytes = (uint64_t)vfs.f_bavail * vfs.f_frsize;
        free_bytes = free_bytes > in_flight_left ? free_bytes - in_flight_left : 0;
    }
    chosen = calloc(n ? n : 1, sizeof(*chosen));
    if (!chosen)
        return -ENOMEM;
    plan = imgcache_evict_plan(v, n, used, imgcache_budget(c), free_bytes, needed_bytes, cutoff,
                               chosen);
    if (plan == -ENOSPC && needed_bytes > 0) {
        /* no room for the newcomer: evict only what age and budget demand */
        imgcache_evict_plan(v, n, used, imgcache_budget(c), UINT64_MAX, 0, cutoff, chosen);
        evict_apply(c, v, n, chosen);
        return -ENOSPC;
    }
    r = evict_apply(c, v, n, chosen);
    return plan < 0 ? plan : r;
}

void imgcache_on_evict_timer(uv_timer_t *t)
{
    imgcache_evict(t->data, 0);
}
