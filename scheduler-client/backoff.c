/* backoff.c: retry delays (see placement-internal.h). */
#include "scheduler-client/placement-internal.h"

/* min(max_ms, initial_ms * 2^(attempt-1)) without overflowing. */
static uint64_t backoff_base(unsigned attempt, unsigned initial_ms, unsigned max_ms)
{
    uint64_t b = initial_ms ? initial_ms : 1;

    if (max_ms < b)
        return max_ms;
    for (unsigned i = 1; i < attempt && b < max_ms; i++)
        b *= 2;
    return b < max_ms ? b : max_ms;
}

uint64_t placement_backoff_ms(unsigned attempt, unsigned initial_ms, unsigned max_ms,
                              uint32_t rnd)
{
    uint64_t b = backoff_base(attempt, initial_ms, max_ms);

    return b / 2 + rnd % (b - b / 2 + 1);
}

uint64_t placement_jitter_ms(unsigned attempt, unsigned initial_ms, unsigned max_ms,
                             uint32_t rnd)
{
    uint64_t b = backoff_base(attempt, initial_ms, max_ms);

    return rnd % (b + 1);
}
