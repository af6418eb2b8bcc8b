/* ratelimit.c: a token bucket per source (listener scope + IPv4 address),
 * in a fixed table (4-way sets): memory stays bounded whatever the sources;
 * a source evicted from a full set starts again with a full bucket, which a
 * flood of many sources can use to dodge the limit only as far as the
 * connection cap allows. */
#include <stdlib.h>

#include "agent/metadata/md-internal.h"

#define SETS 1024
#define WAYS 4

struct bucket {
    uint32_t scope, addr;
    bool used;
    double tokens;
    uint64_t at_ms;           /* when tokens was last brought up to date */
};

struct md_ratelimit {
    double rate;              /* tokens per second */
    double burst;
    struct bucket b[SETS][WAYS];
};

int md_ratelimit_new(double rate, int burst, struct md_ratelimit **out)
{
    struct md_ratelimit *rl = calloc(1, sizeof(*rl));

    if (!rl)
        return -ENOMEM;
    rl->rate = rate > 0 ? rate : 50;
    rl->burst = burst > 0 ? burst : 100;
    *out = rl;
    return 0;
}

static uint32_t hash(uint32_t scope, uint32_t addr)
{
    uint32_t h = addr * 2654435761u ^ scope * 2246822519u;

    return (h ^ h >> 15) % SETS;
}

bool md_ratelimit_take(struct md_ratelimit *rl, uint32_t scope, uint32_t addr, uint64_t now_ms)
{
    struct bucket *set = rl->b[hash(scope, addr)], *b = NULL, *oldest = &set[0];

    for (int i = 0; i < WAYS; i++) {
        if (set[i].used && set[i].scope == scope && set[i].addr == addr) {
            b = &set[i];
            break;
        }
        if (!set[i].used || (oldest->used && set[i].at_ms < oldest->at_ms))
            oldest = &set[i];
    }
    if (!b) {
        b = oldest;
        *b = (struct bucket){.scope = scope, .addr = addr, .used = true, .tokens = rl->burst, .at_ms = now_ms};
    }
    if (now_ms > b->at_ms) {
        b->tokens += (double)(now_ms - b->at_ms) * rl->rate / 1000.0;
        if (b->tokens > rl->burst)
            b->tokens = rl->burst;
        b->at_ms = now_ms;
    }
    if (b->tokens < 1.0)
        return false;
    b->tokens -= 1.0;
    return true;
}

void md_ratelimit_free(struct md_ratelimit *rl)
{
    free(rl);
}
