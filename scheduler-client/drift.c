/* drift.c: the usage check's comparison (see placement-internal.h). */
#include "scheduler-client/placement-internal.h"

#include "common/util.h"

int placement_drift_compute(const json_t *allocations, const struct placement_strset *local,
                            struct placement_strset *only_in_placement,
                            struct placement_strset *only_here)
{
    const char *consumer;
    json_t *v;
    int r;

    placement_strset_clear(only_in_placement);
    placement_strset_clear(only_here);
    if (!json_is_object(allocations))
        return -EINVAL;
    json_object_foreach((json_t *)allocations, consumer, v) {
        if (placement_strset_has(local, consumer))
            continue;
        r = placement_strset_add(only_in_placement, consumer);
        if (r < 0)
            return r;
    }
    for (size_t i = 0; i < local->n; i++) {
        if (json_object_get(allocations, local->v[i]))
            continue;
        r = placement_strset_add(only_here, local->v[i]);
        if (r < 0)
            return r;
    }
    return 0;
}
