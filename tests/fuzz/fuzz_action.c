/* fuzz_action: POST /v1/instances/{id}[/actions][?query] from untrusted
 * bytes through api_route() (the router's path match, the id check, the
 * action body through request.c: JSON, fields, request id) and the ?wait=
 * number parser: never a crash or leak; every answer is a JSON object, and
 * a refusal (4xx) names its code.
 *
 * Input: "PATH\nBODY"; PATH follows "/v1/instances/" (so an empty one is
 * POST /v1/instances, a launch). The agent is agent-fixture.h's: nothing is
 * ever accepted for real, the engine refuses after the parsers. */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "agent/api.h"
#include "common/util.h"
#include "tests/fuzz/agent-fixture.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The value of ?wait= (as MHD would hand it, without percent-decoding). */
static void check_wait(const char *query)
{
    const char *w = strstr(query, "wait=");
    char value[64];
    int64_t secs = -1;
    size_t n;

    if (!w)
        return;
    w += 5;
    n = strcspn(w, "&");
    if (n >= sizeof(value))
        n = sizeof(value) - 1;
    memcpy(value, w, n);
    value[n] = '\0';
    if (parse_int64(value, 0, 300, &secs) == 0 && (secs < 0 || secs > 300))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fixture *fx = fixture_get();
    const uint8_t *nl = memchr(data, '\n', size);
    size_t plen = nl ? (size_t)(nl - data) : size;
    const char *body = nl ? (const char *)nl + 1 : NULL;
    size_t blen = nl ? size - plen - 1 : 0;
    char *url, *q, *idem = NULL;
    json_t *reply = NULL;
    int status;

    if (memchr(data, '\0', plen))
        return 0; /* MHD hands a NUL-terminated URL */
    if (asprintf(&url, "/v1/instances/%.*s", (int)plen, (const char *)data) < 0)
        abort();
    if ((q = strchr(url, '?')))
        check_wait(q + 1);
    if (blen > 2 && body[0] == 'K' && body[1] == ':') {
        /* "K:key\n" first: an Idempotency-Key header */
        const char *e = memchr(body, '\n', blen);
        if (e) {
            idem = strndup(body + 2, (size_t)(e - body) - 2);
            blen -= (size_t)(e - body) + 1;
            body = e + 1;
        }
    }
    status = api_route(&fx->api_deps, &fx->api_cfg, "POST", url, body, blen, idem, &reply);
    if (!json_is_object(reply) || status < 200 || status > 599)
        abort();
    if (status >= 400 && !json_is_object(json_object_get(reply, "error")))
        abort();
    json_decref(reply);
    free(idem);
    free(url);
    return 0;
}

static void fuzz_done(void)
{
    fixture_free();
}

#include "tests/fuzz/replay.h"
