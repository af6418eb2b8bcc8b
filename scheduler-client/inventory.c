/* inventory.c: inventory sets, their JSON form and their comparison (see
 * placement-internal.h). A set is what one PUT .../inventories carries. */
#include "scheduler-client/placement-internal.h"

#include <float.h>
#include <math.h>

#include "common/util.h"

#define INV_INT_MAX 2147483647LL /* Placement's db_const.MAX_INT */

bool placement_name_valid(const char *s)
{
    size_t n = 0;

    if (!s)
        return false;
    for (; s[n]; n++) {
        char c = s[n];
        if (!((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_'))
            return false;
        if (n >= PLACEMENT_NAME_MAX)
            return false;
    }
    return n > 0;
}

static int item_cmp(const void *a, const void *b)
{
    const struct placement_inv_item *x = a, *y = b;
    return strcmp(x->rc, y->rc);
}

static bool item_valid(const struct placement_inv_item *it)
{
    return it->total >= 1 && it->total <= INV_INT_MAX && it->reserved >= 0 &&
           it->reserved <= it->total && it->min_unit >= 1 && it->min_unit <= INV_INT_MAX &&
           it->max_unit >= it->min_unit && it->max_unit <= INV_INT_MAX && it->step_size >= 1 &&
           it->step_size <= INV_INT_MAX && isfinite(it->allocation_ratio) &&
           it->allocation_ratio > 0 && it->allocation_ratio <= FLT_MAX;
}

/* Sort and reject duplicates. */
static int items_finish(struct placement_inv_item *items, size_t n)
{
    if (n == 0)
        return 0;
    qsort(items, n, sizeof(*items), item_cmp);
    for (size_t i = 1; i < n; i++)
        if (strcmp(items[i - 1].rc, items[i].rc) == 0)
            return -EINVAL;
    return 0;
}

int placement_inv_set_build(const struct placement_inventory inv[], size_t n,
                            struct placement_inv_set *ret)
{
    _cleanup_free_ struct placement_inv_item *items = NULL;
    size_t k = 0;
    int r;

    if (n && !inv)
        return -EINVAL;
    if (n) {
        items = calloc(n, sizeof(*items));
        if (!items)
            return -ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        struct placement_inv_item *it = &items[k];

        if (!placement_name_valid(inv[i].resource_class))
            return -EINVAL;
        if (inv[i].total == 0)
            continue; /* Placement cannot hold an empty inventory: none */
        strscpy(it->rc, inv[i].resource_class, sizeof(it->rc));
        it->total = inv[i].total;
        it->reserved = inv[i].reserved;
        it->min_unit = inv[i].min_unit;
        it->max_unit = inv[i].max_unit;
        it->step_size = inv[i].step_size;
        it->allocation_ratio = inv[i].allocation_ratio;
        if (!item_valid(it))
            return -EINVAL;
        k++;
    }
    r = items_finish(items, k);
    if (r < 0)
        return r;
    ret->items = k ? TAKE_PTR(items) : NULL;
    ret->n = k;
    return 0;
}

static int json_int_field(const json_t *o, const char *key, int64_t def, int64_t *ret)
{
    const json_t *v = json_object_get(o, key);

    if (!v) {
        *ret = def;
        return 0;
    }
    if (!json_is_integer(v))
        return -EINVAL;
    *ret = json_integer_value(v);
    return 0;
}

int placement_inv_set_from_json(const json_t *inventories, struct placement_inv_set *ret)
{
    _cleanup_free_ struct placement_inv_item *items = NULL;
    const char *rc;
    json_t *o;
    size_t n = 0;
    int r;

    if (!json_is_object(inventories))
        return -EINVAL;
    if (json_object_size(inventories)) {
        items = calloc(json_object_size(inventories), sizeof(*items));
        if (!items)
            return -ENOMEM;
    }
    json_object_foreach((json_t *)inventories, rc, o) {
        struct placement_inv_item *it = &items[n];
        const json_t *ratio;

        if (!json_is_object(o) || !placement_name_valid(rc))
            return -EINVAL;
        strscpy(it->rc, rc, sizeof(it->rc));
        if (json_int_field(o, "total", 0, &it->total) < 0 ||
            json_int_field(o, "reserved", 0, &it->reserved) < 0 ||
            json_int_field(o, "min_unit", 1, &it->min_unit) < 0 ||
            json_int_field(o, "max_unit", INV_INT_MAX, &it->max_unit) < 0 ||
            json_int_field(o, "step_size", 1, &it->step_size) < 0)
            return -EINVAL;
        ratio = json_object_get(o, "allocation_ratio");
        if (ratio && !json_is_number(ratio))
            return -EINVAL;
        it->allocation_ratio = ratio ? json_number_value(ratio) : 1.0;
        n++;
    }
    r = items_finish(items, n);
    if (r < 0)
        return r;
    ret->items = n ? TAKE_PTR(items) : NULL;
    ret->n = n;
    return 0;
}

json_t *placement_inv_set_to_json(const struct placement_inv_set *set)
{
    json_t *all = json_object();

    if (!all)
        return NULL;
    for (size_t i = 0; i < set->n; i++) {
        const struct placement_inv_item *it = &set->items[i];
        json_t *o = json_pack("{sI sI sI sI sI sf}", "total", (json_int_t)it->total,
                              "reserved", (json_int_t)it->reserved, "min_unit",
                              (json_int_t)it->min_unit, "max_unit", (json_int_t)it->max_unit,
                              "step_size", (json_int_t)it->step_size, "allocation_ratio",
                              it->allocation_ratio);
        if (!o || json_object_set_new(all, it->rc, o) < 0) {
            json_decref(all);
            return NULL;
        }
    }
    return all;
}

static bool ratio_equal(double a, double b)
{
    double scale = fmax(fabs(a), fabs(b));
    return fabs(a - b) <= 1e-6 * (scale > 1.0 ? scale : 1.0);
}

bool placement_inv_set_equal(const struct placement_inv_set *a, const struct placement_inv_set *b)
{
    if (a->n != b->n)
        return false;
    for (size_t i = 0; i < a->n; i++) {
        const struct placement_inv_item *x = &a->items[i], *y = &b->items[i];
        if (strcmp(x->rc, y->rc) != 0 || x->total != y->total || x->reserved != y->reserved ||
            x->min_unit != y->min_unit || x->max_unit != y->max_unit ||
            x->step_size != y->step_size || !ratio_equal(x->allocation_ratio, y->allocation_ratio))
            return false;
    }
    return true;
}

int placement_inv_set_merge(const struct placement_inv_set *remote,
                            const struct placement_inv_set *desired,
                            const struct placement_strset *managed,
                            struct placement_inv_set *ret)
{
    _cleanup_free_ struct placement_inv_item *items = NULL;
    size_t n = 0;

    if (remote->n + desired->n) {
        items = calloc(remote->n + desired->n, sizeof(*items));
        if (!items)
            return -ENOMEM;
    }
    for (size_t i = 0; i < remote->n; i++)
        if (!placement_strset_has(managed, remote->items[i].rc) &&
            !placement_inv_set_has(desired, remote->items[i].rc))
            items[n++] = remote->items[i];
    for (size_t i = 0; i < desired->n; i++)
        items[n++] = desired->items[i];
    if (n)
        qsort(items, n, sizeof(*items), item_cmp);
    ret->items = n ? TAKE_PTR(items) : NULL;
    ret->n = n;
    return 0;
}

bool placement_inv_set_has(const struct placement_inv_set *set, const char *rc)
{
    for (size_t i = 0; i < set->n; i++)
        if (strcmp(set->items[i].rc, rc) == 0)
            return true;
    return false;
}

int placement_inv_set_copy(struct placement_inv_set *dst, const struct placement_inv_set *src)
{
    struct placement_inv_item *items = NULL;

    if (src->n) {
        items = malloc(src->n * sizeof(*items));
        if (!items)
            return -ENOMEM;
        memcpy(items, src->items, src->n * sizeof(*items));
    }
    placement_inv_set_clear(dst);
    dst->items = items;
    dst->n = src->n;
    return 0;
}

void placement_inv_set_clear(struct placement_inv_set *set)
{
    free(set->items);
    set->items = NULL;
    set->n = 0;
}
