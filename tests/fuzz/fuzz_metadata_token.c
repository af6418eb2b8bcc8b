/* fuzz_metadata_token: the IMDSv2 headers a guest sends, from untrusted
 * bytes: X-aws-ec2-metadata-token through md_token_check() (never a crash;
 * accepted only if it is the very token md_token_make() gives for that
 * instance and expiry) and X-aws-ec2-metadata-token-ttl-seconds through
 * md_token_ttl_parse() (accepted only as plain decimal 1..21600). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "agent/metadata/md-internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const struct md_token_key key = {.key = "fuzz-key-fuzz-key-fuzz-key-fuzz!", .len = 32};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *uuid = "6a6a6a6a-0000-4000-8000-000000000001";
    const char *s = (const char *)data;
    int64_t now = 1000000;
    int ttl = 0;

    if (md_token_check(&key, uuid, now, s, size)) {
        /* then it is canonical: re-made from its expiry it is the same string */
        bool found = false;
        for (int t = 1; t <= MD_TOKEN_TTL_MAX && !found; t++) {
            char tok[MD_TOKEN_LEN + 1];
            if (md_token_make(&key, uuid, now, t, tok) < 0)
                abort();
            found = size == MD_TOKEN_LEN && !memcmp(tok, s, size);
        }
        if (!found || md_token_check(&key, "6a6a6a6a-0000-4000-8000-000000000002", now, s, size))
            abort();
    }
    if (md_token_ttl_parse(s, size, &ttl) == 0) {
        if (ttl < 1 || ttl > MD_TOKEN_TTL_MAX || size > 5)
            abort();
        for (size_t i = 0; i < size; i++)
            if (s[i] < '0' || s[i] > '9')
                abort();
    }
    return 0;
}

static void fuzz_done(void) {}

#include "tests/fuzz/replay.h"
