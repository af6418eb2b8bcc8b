/* microversion.c: Placement microversion parsing and choice. */
#include "scheduler-client/placement-internal.h"

#include "common/util.h"

int placement_microversion_parse(const char *s, int *major, int *minor)
{
    char buf[16];
    char *dot;
    int64_t a, b;

    if (!s || strscpy(buf, s, sizeof(buf)) < 0)
        return -EINVAL;
    dot = strchr(buf, '.');
    if (!dot)
        return -EINVAL;
    *dot = '\0';
    if (parse_int64(buf, 0, 999, &a) < 0 || parse_int64(dot + 1, 0, 999, &b) < 0)
        return -EINVAL;
    *major = (int)a;
    *minor = (int)b;
    return 0;
}

static int mv_cmp(int a1, int a2, int b1, int b2)
{
    if (a1 != b1)
        return a1 < b1 ? -1 : 1;
    return a2 < b2 ? -1 : a2 > b2;
}

int placement_microversion_pick(const char *server_min, const char *server_max, char out[8])
{
    int smin1, smin2, smax1, smax2, want1, want2, need1, need2, use1, use2;

    if (placement_microversion_parse(server_max, &smax1, &smax2) < 0)
        return -EINVAL;
    if (!server_min || placement_microversion_parse(server_min, &smin1, &smin2) < 0) {
        smin1 = 1; /* absent: assume the oldest */
        smin2 = 0;
    }
    placement_microversion_parse(PLACEMENT_MICROVERSION_WANT, &want1, &want2);
    placement_microversion_parse(PLACEMENT_MICROVERSION_MIN, &need1, &need2);
    use1 = want1;
    use2 = want2;
    if (mv_cmp(smax1, smax2, want1, want2) < 0) {
        use1 = smax1;
        use2 = smax2;
    }
    if (mv_cmp(use1, use2, need1, need2) < 0 || mv_cmp(use1, use2, smin1, smin2) < 0)
        return -ENOTSUP;
    snprintf(out, 8, "%d.%d", use1, use2);
    return 0;
}
