/* fuzz_metadata_request: one metadata service request from a guest
 * (method, path, the IMDSv2 and X-Forwarded-For headers) through
 * md_handle() and md_render() for a fixed instance: never a crash or leak;
 * the invariants hold: nobody known -> 404; endpoint off -> 403; tokens
 * required and no good token -> never 200; a PUT with XFF never yields a
 * token; every 200 listing's entries are non-empty lines.
 *
 * Input: a flags byte (bit 0 tokens required, 1 endpoint disabled, 2 nobody
 * known, 3 no user-data, 4 send a valid token), then "METHOD PATH\n", then
 * header lines "Name: value\n" (the three the service reads). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "agent/metadata/md-internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct md_instance *fixture(uint8_t flags)
{
    struct md_instance *m = md_instance_new();

    if (!m)
        abort();
    strscpy(m->uuid, "6a6a6a6a-0000-4000-8000-000000000001", sizeof(m->uuid));
    strscpy(m->ec2_id, "i-0000000000000a001", sizeof(m->ec2_id));
    m->hostname = strdup("vm1");
    m->keys = calloc(1, sizeof(*m->keys));
    m->keys[0].name = strdup("k");
    m->keys[0].type = strdup("ssh");
    m->keys[0].data = strdup("ssh-ed25519 AAAA k@h");
    m->n_keys = 1;
    m->ifaces = calloc(1, sizeof(*m->ifaces));
    strscpy(m->ifaces[0].mac, "52:54:00:00:00:01", sizeof(m->ifaces[0].mac));
    strscpy(m->ifaces[0].ipv4, "10.0.0.5", sizeof(m->ifaces[0].ipv4));
    m->ifaces[0].prefix = 24;
    m->n_ifaces = 1;
    if (!(flags & 8)) {
        m->user_data = (uint8_t *)strdup("#cloud-config\n");
        m->user_data_len = 14;
        m->has_user_data = true;
    }
    m->http_tokens = flags & 1 ? MD_TOKENS_REQUIRED : MD_TOKENS_OPTIONAL;
    m->endpoint_enabled = !(flags & 2);
    return m;
}

static const struct md_token_key key = {.key = "fuzz-key-fuzz-key-fuzz-key-fuzz!", .len = 32};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text, *line, *rest, *sp, tok[MD_TOKEN_LEN + 1];
    struct md_request rq = {.now_s = 100000};
    struct md_instance *m;
    struct md_reply rp;
    uint8_t flags;
    bool good_token = false;

    if (size < 1)
        return 0;
    flags = data[0];
    text = strndup((const char *)data + 1, size - 1);
    if (!text)
        abort();
    rest = text;
    line = strsep(&rest, "\n");
    sp = strchr(line, ' ');
    if (!sp) {
        free(text);
        return 0;
    }
    *sp = '\0';
    rq.method = line;
    rq.path = sp + 1;
    while (rest && (line = strsep(&rest, "\n"))) {
        char *colon = strchr(line, ':'), *v;
        if (!colon)
            continue;
        *colon = '\0';
        v = colon + 1;
        while (*v == ' ')
            v++;
        if (!strcasecmp(line, "X-aws-ec2-metadata-token")) {
            rq.token = v;
            rq.token_len = strlen(v);
        } else if (!strcasecmp(line, "X-aws-ec2-metadata-token-ttl-seconds")) {
            rq.ttl = v;
            rq.ttl_len = strlen(v);
        } else if (!strcasecmp(line, "X-Forwarded-For")) {
            rq.forwarded = true;
        }
    }
    m = flags & 4 ? NULL : fixture(flags);
    if (m && (flags & 16)) {
        if (md_token_make(&key, m->uuid, rq.now_s, 60, tok) < 0)
            abort();
        rq.token = tok;
        rq.token_len = MD_TOKEN_LEN;
        good_token = true;
    } else if (m && rq.token) {
        good_token = md_token_check(&key, m->uuid, rq.now_s, rq.token, rq.token_len);
    }
    if (md_handle(m, &key, &rq, &rp) < 0)
        abort(); /* only -ENOMEM, which does not happen here */
    if (!rp.a.body)
        abort();
    if (!m && rp.a.status != 404)
        abort();
    if (m && !m->endpoint_enabled && rp.a.status != 403)
        abort();
    if (m && m->endpoint_enabled && rp.a.status == 200 && strcmp(rq.method, "PUT") &&
        (rq.token ? !good_token : m->http_tokens == MD_TOKENS_REQUIRED))
        abort();
    if (rp.token_put && (rq.forwarded || rp.a.status != 200 || rp.a.len != MD_TOKEN_LEN ||
                         !md_token_check(&key, m->uuid, rq.now_s, rp.a.body, rp.a.len)))
        abort();
    if (rp.a.status == 200 && !strcmp(rp.a.content_type, "text/plain") && !rp.token_put &&
        (strstr(rp.a.body, "\n\n") || (rp.a.len && (rp.a.body[0] == '\n' || rp.a.body[rp.a.len - 1] == '\n'))))
        abort();
    md_answer_release(&rp.a);
    md_instance_free(m);
    free(text);
    return 0;
}

static void fuzz_done(void) {}

#include "tests/fuzz/replay.h"
