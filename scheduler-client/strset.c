/* strset.c: sorted sets of strings (see placement-internal.h). Sets here are
 * small (traits, consumers on one host): binary search plus memmove. */
#include "scheduler-client/placement-internal.h"

#include "common/util.h"

/* Index of s, or of where it would go; *found tells which. */
static size_t strset_find(const struct placement_strset *set, const char *s, bool *found)
{
    size_t lo = 0, hi = set->n;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(set->v[mid], s);
        if (c == 0) {
            *found = true;
            return mid;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = false;
    return lo;
}

int placement_strset_add(struct placement_strset *set, const char *s)
{
    bool found;
    size_t at = strset_find(set, s, &found);
    char **v;
    char *copy;

    if (found)
        return 0;
    copy = strdup(s);
    if (!copy)
        return -ENOMEM;
    v = realloc(set->v, (set->n + 1) * sizeof(*v));
    if (!v) {
        free(copy);
        return -ENOMEM;
    }
    memmove(v + at + 1, v + at, (set->n - at) * sizeof(*v));
    v[at] = copy;
    set->v = v;
    set->n++;
    return 0;
}

void placement_strset_remove(struct placement_strset *set, const char *s)
{
    bool found;
    size_t at = strset_find(set, s, &found);

    if (!found)
        return;
    free(set->v[at]);
    memmove(set->v + at, set->v + at + 1, (set->n - at - 1) * sizeof(*set->v));
    set->n--;
}

bool placement_strset_has(const struct placement_strset *set, const char *s)
{
    bool found;

    strset_find(set, s, &found);
    return found;
}

bool placement_strset_equal(const struct placement_strset *a, const struct placement_strset *b)
{
    if (a->n != b->n)
        return false;
    for (size_t i = 0; i < a->n; i++)
        if (strcmp(a->v[i], b->v[i]) != 0)
            return false;
    return true;
}

int placement_strset_copy(struct placement_strset *dst, const struct placement_strset *src)
{
    struct placement_strset tmp = {0};

    if (src->n) {
        tmp.v = calloc(src->n, sizeof(*tmp.v));
        if (!tmp.v)
            return -ENOMEM;
        for (; tmp.n < src->n; tmp.n++) {
            tmp.v[tmp.n] = strdup(src->v[tmp.n]);
            if (!tmp.v[tmp.n]) {
                placement_strset_clear(&tmp);
                return -ENOMEM;
            }
        }
    }
    placement_strset_clear(dst);
    *dst = tmp;
    return 0;
}

void placement_strset_clear(struct placement_strset *set)
{
    for (size_t i = 0; i < set->n; i++)
        free(set->v[i]);
    free(set->v);
    set->v = NULL;
    set->n = 0;
}
