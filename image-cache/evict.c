/* evict.c: which cached images leave, and in what order.
 *
 * Only images no instance uses are candidates (index.c lists them, least
 * recently used first). Those unused for longer than the maximum age go in
 * any case; then, least recently used first, as many as it takes for the
 * bytes wanted to fit both under the budget and in the free disk space. */
#include "image-cache/imgcache-internal.h"

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
