/* request.c: one HTTP exchange with Placement or Keystone, set up for
 * httpuv (see placement-internal.h): headers, body, bounded response
 * buffer, the X-Subject-Token header, and reading error bodies. */
#include "scheduler-client/placement-internal.h"

#include <ctype.h>
#include <strings.h>

#include "common/httpuv.h"
#include "common/util.h"

#define RESPONSE_MAX (32u << 20) /* allocations of a busy host fit easily */

static size_t on_body(char *data, size_t size, size_t nmemb, void *userp)
{
    struct placement_request *r = userp;
    size_t n = size * nmemb;

    if (n > RESPONSE_MAX - r->resp_len)
        return 0; /* CURLE_WRITE_ERROR */
    if (r->resp_len + n + 1 > r->resp_cap) {
        size_t cap = r->resp_cap ? r->resp_cap : 4096;
        char *p;
        while (cap < r->resp_len + n + 1)
            cap *= 2;
        p = realloc(r->resp, cap);
        if (!p)
            return 0;
        r->resp = p;
        r->resp_cap = cap;
    }
    memcpy(r->resp + r->resp_len, data, n);
    r->resp_len += n;
    r->resp[r->resp_len] = '\0';
    return n;
}

static size_t on_header(char *data, size_t size, size_t nmemb, void *userp)
{
    static const char name[] = "X-Subject-Token:";
    struct placement_request *r = userp;
    size_t n = size * nmemb, len;
    const char *v;

    if (n <= sizeof(name) - 1 || strncasecmp(data, name, sizeof(name) - 1) != 0)
        return n;
    v = data + sizeof(name) - 1;
    len = n - (sizeof(name) - 1);
    while (len && (*v == ' ' || *v == '\t')) {
        v++;
        len--;
    }
    while (len && isspace((unsigned char)v[len - 1]))
        len--;
    free(r->subject_token);
    r->subject_token = strndup(v, len);
    return r->subject_token ? n : 0;
}

/* Header values come from config or Keystone: refuse anything that could
 * split a header. */
static bool header_value_ok(const char *v)
{
    for (; *v; v++)
        if (*v == '\r' || *v == '\n')
            return false;
    return true;
}

static int add_header(struct placement_request *r, const char *name, const char *value)
{
    char line[4096];
    struct curl_slist *l;

    if (!header_value_ok(value))
        return -EINVAL;
    if (snprintf(line, sizeof(line), "%s: %s", name, value) >= (int)sizeof(line))
        return -EINVAL;
    l = curl_slist_append(r->headers, line);
    if (!l)
        return -ENOMEM;
    r->headers = l;
    return 0;
}

static int add_line(struct placement_request *r, const char *line)
{
    struct curl_slist *l = curl_slist_append(r->headers, line);

    if (!l)
        return -ENOMEM;
    r->headers = l;
    return 0;
}

int placement_request_new(const char *method, const char *url, const char *body,
                          const struct placement_request_opts *opts,
                          struct placement_request **ret)
{
    struct placement_request *r = calloc(1, sizeof(*r));
    char mv[64];
    int e = 0;

    if (!r)
        return -ENOMEM;
    e = add_line(r, "Accept: application/json");
    if (!e)
        e = add_line(r, "Expect:"); /* no 100-continue: HTTP/1.0 servers never answer it */
    if (!e && body)
        e = add_line(r, "Content-Type: application/json");
    if (!e && opts->token)
        e = add_header(r, "X-Auth-Token", opts->token);
    if (!e && opts->microversion) {
        snprintf(mv, sizeof(mv), "placement %s", opts->microversion);
        e = add_header(r, "OpenStack-API-Version", mv);
    }
    if (!e && body) {
        r->body = strdup(body);
        if (!r->body)
            e = -ENOMEM;
    }
    if (e) {
        placement_request_free(r);
        return e;
    }
    {
        /* Placement's status codes are read, not failed on; no redirects. */
        const struct httpuv_easy_opts eo = {
            .url = url,
            .user_agent = "compute-agent",
            .connect_timeout_ms = (long)(opts->timeout_ms < 10000 ? opts->timeout_ms : 10000),
            .timeout_ms = (long)opts->timeout_ms,
            .max_redirects = -1,
            .ca_bundle = opts->ca_bundle,
            .headers = r->headers,
            .on_body = on_body,
            .body_data = r,
            .on_header = on_header,
            .header_data = r,
            .errbuf = r->errbuf,
        };
        e = httpuv_easy_new(&eo, &r->easy);
        if (e) {
            placement_request_free(r);
            return e;
        }
    }
    if (strcmp(method, "GET") != 0) {
        curl_easy_setopt(r->easy, CURLOPT_CUSTOMREQUEST, method);
        curl_easy_setopt(r->easy, CURLOPT_POSTFIELDS, r->body ? r->body : "");
        curl_easy_setopt(r->easy, CURLOPT_POSTFIELDSIZE, (long)(r->body ? strlen(r->body) : 0));
    }
    *ret = r;
    return 0;
}

void placement_request_finish(struct placement_request *r, CURLcode result)
{
    r->result = result;
    r->status = 0;
    if (result == CURLE_OK)
        curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &r->status);
}

void placement_request_free(struct placement_request *r)
{
    if (!r)
        return;
    if (r->easy)
        curl_easy_cleanup(r->easy);
    curl_slist_free_all(r->headers);
    free(r->body);
    free(r->resp);
    free(r->subject_token);
    free(r);
}

json_t *placement_request_json(const struct placement_request *r)
{
    if (!r->resp)
        return NULL;
    return json_loadb(r->resp, r->resp_len, JSON_REJECT_DUPLICATES, NULL);
}

/* errors[0].<key> as a string, or NULL. */
static const char *error_field(const json_t *body, const char *key)
{
    return json_string_value(
        json_object_get(json_array_get(json_object_get(body, "errors"), 0), key));
}

void placement_request_error_code(const struct placement_request *r, char *buf, size_t size)
{
    json_t *body = placement_request_json(r);
    const char *code = error_field(body, "code");

    strscpy(buf, code ? code : "", size);
    json_decref(body);
}

void placement_request_describe(const struct placement_request *r, char *buf, size_t size)
{
    json_t *body;
    const char *detail;
    size_t i, o = 0;

    if (r->result != CURLE_OK) {
        snprintf(buf, size, "%s", r->errbuf[0] ? r->errbuf : curl_easy_strerror(r->result));
        return;
    }
    body = placement_request_json(r);
    detail = error_field(body, "detail");
    if (!detail)
        detail = json_string_value(json_object_get(body, "message"));
    if (!detail)
        detail = json_string_value(json_object_get(json_object_get(body, "error"), "message"));
    /* Placement's details are multi-line with padding: fold to one line. */
    for (i = 0; detail && detail[i] && o + 1 < size; i++) {
        char c = detail[i];
        if (c == '\n' || c == '\r' || c == '\t')
            c = ' ';
        if (c == ' ' && (o == 0 || buf[o - 1] == ' '))
            continue;
        buf[o++] = c;
    }
    while (o > 0 && buf[o - 1] == ' ')
        o--;
    if (size)
        buf[o] = '\0';
    if (o == 0)
        snprintf(buf, size, "HTTP %ld", r->status);
    json_decref(body);
}
