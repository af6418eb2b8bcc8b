/*
 * http.c: computectl's HTTP client: one libcurl easy handle (kept, so polling
 * reuses the connection) speaking JSON to the agent over its unix socket or TCP.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE             /* asprintf */
#endif
#include <errno.h>
#include <string.h>

#include <curl/curl.h>

#include "cli-internal.h"

#define CTL_RESPONSE_MAX (16u * 1024 * 1024)    /* larger answers are refused */

struct ctl_client {
        CURL *curl;                     /* reused between requests */
        char *base_url;                 /* "http://localhost" on the socket, else --url without trailing '/' */
        char *socket_path;              /* NULL over TCP */
        char *auth_header;              /* "Authorization: Bearer ..." or NULL */
        char *endpoint;                 /* for messages: "unix:PATH" or the URL */
        long timeout_ms;                /* per request, 0 = none */
        char errbuf[CURL_ERROR_SIZE];   /* libcurl's message for the last failure */
};

/* The body being received. */
struct body_buffer {
        char *data;
        size_t len, cap;
        bool too_large;
};

static void body_buffer_release(struct body_buffer *b) {
        free(b->data);
}

static void curl_slist_freep(struct curl_slist **l) {
        curl_slist_free_all(*l);
}

void ctl_response_release(struct ctl_response *r) {
        json_decref(r->body);
        free(r->raw);
        *r = (struct ctl_response) {};
}

int ctl_client_new(const struct ctl_config *cfg, struct ctl_client **ret, struct ctl_error *err) {
        _cleanup_ctl_client_ struct ctl_client *c = NULL;
        int n;

        c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        c->timeout_ms = cfg->timeout_ms;

        if (cfg->url) {
                size_t len = strlen(cfg->url);

                while (len > 0 && cfg->url[len - 1] == '/')
                        len--;
                c->base_url = strndup(cfg->url, len);
                c->endpoint = strdup(cfg->url);
        } else {
                c->base_url = strdup("http://localhost");
                c->socket_path = strdup(cfg->socket_path);
                n = asprintf(&c->endpoint, "unix:%s", cfg->socket_path);
                if (n < 0)
                        c->endpoint = NULL;
        }
        if (!c->base_url || !c->endpoint || (!cfg->url && !c->socket_path))
                return -ENOMEM;
        if (cfg->token && asprintf(&c->auth_header, "Authorization: Bearer %s", cfg->token) < 0) {
                c->auth_header = NULL;
                return -ENOMEM;
        }

        c->curl = curl_easy_init();
        if (!c->curl) {
                ctl_error_set(err, "cannot initialize libcurl");
                return -EIO;
        }
        *ret = TAKE_PTR(c);
        return 0;
}

struct ctl_client *ctl_client_free(struct ctl_client *c) {
        if (!c)
                return NULL;
        if (c->curl)
                curl_easy_cleanup(c->curl);
        free(c->base_url);
        free(c->socket_path);
        free(c->auth_header);
        free(c->endpoint);
        free(c);
        return NULL;
}

const char *ctl_client_endpoint(const struct ctl_client *c) {
        return c->endpoint;
}

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *userdata) {
        struct body_buffer *b = userdata;
        size_t n = size * nmemb;

        if (n > CTL_RESPONSE_MAX - b->len) {
                b->too_large = true;
                return 0;       /* makes libcurl fail with CURLE_WRITE_ERROR */
        }
        if (b->len + n + 1 > b->cap) {
                size_t cap = b->cap ? b->cap : 4096;
                char *d;

                while (cap < b->len + n + 1)
                        cap *= 2;
                d = realloc(b->data, cap);
                if (!d)
                        return 0;
                b->data = d;
                b->cap = cap;
        }
        memcpy(b->data + b->len, ptr, n);
        b->len += n;
        b->data[b->len] = '\0';
        return n;
}

/* Translates a libcurl failure, once, into -errno and a message. */
static int transport_error(struct ctl_client *c, CURLcode code, const struct body_buffer *b,
                           struct ctl_error *err) {
        const char *detail = c->errbuf[0] ? c->errbuf : curl_easy_strerror(code);

        switch (code) {
        case CURLE_OPERATION_TIMEDOUT:
                ctl_error_set(err, "request to %s timed out (%s)", c->endpoint, detail);
                return -ETIMEDOUT;
        case CURLE_COULDNT_CONNECT:
        case CURLE_COULDNT_RESOLVE_HOST: {
                long os_errno = 0;

                /* "localhost port 80" in libcurl's text would mislead on the unix socket */
                curl_easy_getinfo(c->curl, CURLINFO_OS_ERRNO, &os_errno);
                if (os_errno > 0 && os_errno < INT32_MAX) {
                        ctl_error_set(err, "cannot reach compute-agent at %s: %s", c->endpoint,
                                      strerror((int) os_errno));
                        return os_errno == ENOENT ? -ENOENT : -ECONNREFUSED;
                }
                ctl_error_set(err, "cannot reach compute-agent at %s: %s", c->endpoint, detail);
                return -ECONNREFUSED;
        }
        case CURLE_WRITE_ERROR:
                if (b->too_large) {
                        ctl_error_set(err, "answer from %s is larger than %u bytes", c->endpoint,
                                      CTL_RESPONSE_MAX);
                        return -EFBIG;
                }
                ctl_error_set(err, "out of memory reading the answer from %s", c->endpoint);
                return -ENOMEM;
        default:
                ctl_error_set(err, "request to %s failed: %s", c->endpoint, detail);
                return -EIO;
        }
}

static int setup_request(struct ctl_client *c, const char *method, const char *url,
                         const char *payload, struct curl_slist *headers, struct body_buffer *b) {
        CURLcode rc = CURLE_OK;

        /* reset drops the previous request's options but keeps the open connection */
        curl_easy_reset(c->curl);
        c->errbuf[0] = '\0';

#define SET(opt, val)                                                   \
        do {                                                            \
                if (rc == CURLE_OK)                                     \
                        rc = curl_easy_setopt(c->curl, opt, val);       \
        } while (0)

        SET(CURLOPT_URL, url);
        if (c->socket_path)
                SET(CURLOPT_UNIX_SOCKET_PATH, c->socket_path);
#if LIBCURL_VERSION_NUM >= 0x075500
        SET(CURLOPT_PROTOCOLS_STR, "http,https");
#else
        SET(CURLOPT_PROTOCOLS, (long) (CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
        SET(CURLOPT_ERRORBUFFER, c->errbuf);
        SET(CURLOPT_NOSIGNAL, 1L);
        SET(CURLOPT_TIMEOUT_MS, c->timeout_ms);
        SET(CURLOPT_CONNECTTIMEOUT_MS, c->timeout_ms > 0 && c->timeout_ms < 10000 ? c->timeout_ms : 10000L);
        SET(CURLOPT_HTTPHEADER, headers);
        SET(CURLOPT_WRITEFUNCTION, on_body);
        SET(CURLOPT_WRITEDATA, b);
        SET(CURLOPT_USERAGENT, "computectl/" CTL_VERSION);
        if (payload) {
                SET(CURLOPT_POSTFIELDS, payload);
                SET(CURLOPT_POSTFIELDSIZE, (long) strlen(payload));
        }
        if (strcmp(method, "GET") == 0)
                SET(CURLOPT_HTTPGET, 1L);
        else if (strcmp(method, "POST") != 0 || !payload)
                SET(CURLOPT_CUSTOMREQUEST, method);
#undef SET
        return rc == CURLE_OK ? 0 : -EINVAL;
}

static int build_headers(const struct ctl_client *c, bool has_body, const char *idempotency_key,
                         struct curl_slist **ret) {
        _cleanup_(curl_slist_freep) struct curl_slist *h = NULL;
        _cleanup_ctl_free_ char *key_header = NULL;
        const char *lines[5];
        size_t n = 0;

        lines[n++] = "Accept: application/json";
        lines[n++] = "Expect:";         /* no 100-continue round trip for user data bodies */
        if (has_body)
                lines[n++] = "Content-Type: application/json";
        if (c->auth_header)
                lines[n++] = c->auth_header;
        if (idempotency_key) {
                if (asprintf(&key_header, "Idempotency-Key: %s", idempotency_key) < 0) {
                        key_header = NULL;
                        return -ENOMEM;
                }
                lines[n++] = key_header;
        }
        for (size_t i = 0; i < n; i++) {
                struct curl_slist *l = curl_slist_append(h, lines[i]);

                if (!l)
                        return -ENOMEM;
                h = l;
        }
        *ret = TAKE_PTR(h);
        return 0;
}

int ctl_client_request(struct ctl_client *c, const char *method, const char *path,
                       const json_t *body, const char *idempotency_key,
                       struct ctl_response *ret, struct ctl_error *err) {
        _cleanup_(curl_slist_freep) struct curl_slist *headers = NULL;
        _cleanup_(body_buffer_release) struct body_buffer b = {};
        _cleanup_ctl_free_ char *url = NULL, *payload = NULL;
        CURLcode code;
        long status = 0;
        int r;

        *ret = (struct ctl_response) {};

        if (asprintf(&url, "%s%s", c->base_url, path) < 0) {
                url = NULL;
                return -ENOMEM;
        }
        if (body) {
                payload = json_dumps(body, JSON_COMPACT);
                if (!payload)
                        return -ENOMEM;
        }
        r = build_headers(c, body != NULL, idempotency_key, &headers);
        if (r < 0)
                return r;
        r = setup_request(c, method, url, payload, headers, &b);
        if (r < 0) {
                ctl_error_set(err, "cannot set up the request for %s", url);
                return r;
        }

        code = curl_easy_perform(c->curl);
        /* the handle outlives this call: drop pointers to our locals */
        curl_easy_setopt(c->curl, CURLOPT_HTTPHEADER, NULL);
        if (code != CURLE_OK)
                return transport_error(c, code, &b, err);
        curl_easy_getinfo(c->curl, CURLINFO_RESPONSE_CODE, &status);

        ret->status = status;
        ret->raw = b.data ? TAKE_PTR(b.data) : strdup("");
        if (!ret->raw) {
                ret->status = 0;
                return -ENOMEM;
        }
        if (b.len > 0)
                ret->body = json_loadb(ret->raw, b.len, JSON_DECODE_ANY, NULL);
        return 0;
}
