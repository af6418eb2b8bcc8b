/* handle.c: one metadata request to one answer, with no I/O: the endpoint
 * switch, the IMDSv2 PUT (TTL 1..21600 else 400; X-Forwarded-For 403; a
 * dated path 403), the token check (a token given must be good; none given
 * is 401 where tokens are required), then md_render(). */
#include <string.h>

#include "agent/metadata/md-internal.h"

static int text(struct md_reply *out, int status, const char *msg)
{
    return md_answer_text(&out->a, status, msg);
}

/* "/<version>/api/token" (with an optional trailing '/'): 1 for latest, 2
 * for a dated version, 0 for anything else. */
static int token_path(const char *path)
{
    const char *v, *e;
    size_t vlen;

    if (path[0] != '/')
        return 0;
    v = path + 1;
    if (!(e = strchr(v, '/')))
        return 0;
    vlen = (size_t)(e - v);
    if (strcmp(e, "/api/token") && strcmp(e, "/api/token/"))
        return 0;
    if (vlen == 6 && !memcmp(v, "latest", 6))
        return 1;
    return md_ec2_version_known(v, vlen) ? 2 : 0;
}

static int put_token(const struct md_instance *m, const struct md_token_key *key, const struct md_request *rq,
                     struct md_reply *out)
{
    char tok[MD_TOKEN_LEN + 1];
    int ttl, r;

    if (rq->forwarded)
        return text(out, 403, "Forbidden");
    if (!rq->ttl || md_token_ttl_parse(rq->ttl, rq->ttl_len, &ttl) < 0)
        return text(out, 400, "Bad Request");
    if (md_token_make(key, m->uuid, rq->now_s, ttl, tok) < 0)
        return text(out, 500, "Internal Server Error");
    r = text(out, 200, tok);
    if (r == 0) {
        out->token_put = true;
        out->ttl_s = ttl;
    }
    return r;
}

int md_handle(const struct md_instance *m, const struct md_token_key *key, const struct md_request *rq,
              struct md_reply *out)
{
    bool get = !strcmp(rq->method, "GET") || !strcmp(rq->method, "HEAD");
    int tp = token_path(rq->path);

    memset(out, 0, sizeof(*out));
    if (!m)
        return text(out, 404, "Not Found");
    if (!m->endpoint_enabled)
        return text(out, 403, "Forbidden");
    if (!strcmp(rq->method, "PUT")) {
        if (tp == 1)
            return put_token(m, key, rq, out);
        if (tp == 2)
            return text(out, 403, "Forbidden"); /* a version-pinned token path, "intended" */
        return text(out, 405, "Method Not Allowed");
    }
    if (!get)
        return text(out, 405, "Method Not Allowed");
    if (tp) {
        out->allow_put = true;
        return text(out, 405, "Method Not Allowed");
    }
    /* a token given is checked even where tokens are optional (then it is v2) */
    if (rq->token ? !md_token_check(key, m->uuid, rq->now_s, rq->token, rq->token_len)
                  : m->http_tokens == MD_TOKENS_REQUIRED)
        return text(out, 401, "Unauthorized");
    return md_render_cached(m, rq->path, rq->cache, &out->a);
}
