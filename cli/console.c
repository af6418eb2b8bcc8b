/*
 * console.c: `computectl console ID [--tail N] [--follow] | --attach [--connect URI]`.
 *
 * The log comes from the agent's API (GET /v1/instances/{id}/console, base64
 * in JSON), written to stdout as the bytes the guest sent. --follow then asks
 * for what follows the last answer's next_offset, polling (100 ms doubling to
 * 1 s while nothing new arrives) until interrupted; a restarting agent (no
 * answer, 503) is waited for, an instance gone (404) ends it.
 *
 * --attach is interactive: the guest's serial pty through libvirt's stream
 * API (virDomainOpenConsole), so it talks to libvirt itself, not the agent:
 * at the URI given with --connect, else the one the agent reports in GET
 * /v1/host (libvirt_uri; computectl runs on the agent's host). The terminal
 * is in raw mode while attached and restored on every way out; ^] (0x1d)
 * detaches, as in virsh console.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

#include "cli-internal.h"

#define CONSOLE_ESCAPE 0x1d     /* ^] */
#define FOLLOW_CHUNK 1048576    /* the agent's tail_bytes bound */

static int b64_value(int ch) {
        if (ch >= 'A' && ch <= 'Z')
                return ch - 'A';
        if (ch >= 'a' && ch <= 'z')
                return ch - 'a' + 26;
        if (ch >= '0' && ch <= '9')
                return ch - '0' + 52;
        if (ch == '+')
                return 62;
        if (ch == '/')
                return 63;
        return -1;
}

/*
 * Decodes padded base64 (RFC 4648) into a new buffer *ret of *ret_len bytes
 * (caller frees). Returns 0, -EINVAL for malformed input or -ENOMEM.
 */
int ctl_base64_decode(const char *in, unsigned char **ret, size_t *ret_len) {
        size_t n = strlen(in), o = 0;
        unsigned char *out;

        if (n % 4)
                return -EINVAL;
        out = malloc(n / 4 * 3 + 1);
        if (!out)
                return -ENOMEM;
        for (size_t i = 0; i < n; i += 4) {
                int v[4];
                for (int k = 0; k < 4; k++) {
                        v[k] = in[i + k] == '=' && i + 4 == n && k >= 2 ? 0 : b64_value((unsigned char) in[i + k]);
                        if (v[k] < 0 || (k == 2 && in[i + 2] == '=' && in[i + 3] != '=')) {
                                free(out);
                                return -EINVAL;
                        }
                }
                unsigned w = (unsigned) v[0] << 18 | (unsigned) v[1] << 12 | (unsigned) v[2] << 6 | (unsigned) v[3];
                out[o++] = (unsigned char) (w >> 16);
                if (in[i + 2] != '=')
                        out[o++] = (unsigned char) (w >> 8);
                if (in[i + 3] != '=')
                        out[o++] = (unsigned char) w;
        }
        *ret = out;
        *ret_len = o;
        return 0;
}

/* ---------------- the log ---------------- */

/*
 * One GET of the console; 0 with *resp (a JSON object, caller releases), 1 when
 * worth retrying while following (no answer, 503), or a CTL_EXIT_* failure
 * (printed, negated: -CTL_EXIT_FAILURE).
 */
static int console_get(struct ctl_ctx *ctx, const char *path, bool quiet_retry, struct ctl_response *resp) {
        struct ctl_error e = {};
        _cleanup_ctl_free_ char *line = NULL;
        int r = ctl_client_request(ctx->client, "GET", path, NULL, NULL, resp, &e);

        if (r < 0) {
                if (quiet_retry && r != -ENOMEM)
                        return 1;
                fprintf(ctx->err, "error: %s\n", r == -ENOMEM ? "out of memory" : e.message);
                return r == -ETIMEDOUT ? -CTL_EXIT_TIMEOUT : -CTL_EXIT_FAILURE;
        }
        if (resp->status == 200 && json_is_object(resp->body))
                return 0;
        if (quiet_retry && resp->status == 503) {
                ctl_response_release(resp);
                return 1;
        }
        if (ctl_format_api_error(resp->status, resp->body, resp->raw, &line) == 0)
                fprintf(ctx->err, "%s\n", line);
        else
                fprintf(ctx->err, "error: HTTP %ld\n", resp->status);
        ctl_response_release(resp);
        return -CTL_EXIT_FAILURE;
}

/* Writes the answer's bytes to out; *next = its next_offset. 0 or -EBADMSG/-ENOMEM/-EIO. */
static int console_emit(FILE *out, const json_t *body, size_t *got, uint64_t *next) {
        const char *b64 = json_string_value(json_object_get(body, "output"));
        const json_t *no = json_object_get(body, "next_offset");
        _cleanup_ctl_free_ unsigned char *bytes = NULL;
        size_t n = 0;
        int r;

        if (!b64 || !json_is_integer(no) || json_integer_value(no) < 0)
                return -EBADMSG;
        r = ctl_base64_decode(b64, &bytes, &n);
        if (r < 0)
                return r == -EINVAL ? -EBADMSG : r;
        if ((n && fwrite(bytes, 1, n, out) != n) || fflush(out) != 0)
                return -EIO;
        *got = n;
        *next = (uint64_t) json_integer_value(no);
        return 0;
}

static volatile sig_atomic_t follow_stop;

static void on_stop_signal(int sig) {
        (void) sig;
        follow_stop = 1;
}

static int console_log(struct ctl_ctx *ctx, const char *id, const char *tail, bool follow) {
        char path[256];
        uint64_t next = 0;
        long delay = CTL_POLL_FIRST_MS;
        bool first = true;

        if (tail)
                snprintf(path, sizeof(path), "/v1/instances/%s/console?tail_bytes=%s", id, tail);
        else
                snprintf(path, sizeof(path), "/v1/instances/%s/console", id);
        if (follow) {
                struct sigaction sa = { .sa_handler = on_stop_signal };
                sigaction(SIGINT, &sa, NULL);
                sigaction(SIGTERM, &sa, NULL);
        }
        while (!follow_stop) {
                struct ctl_response resp = {};
                size_t n = 0;
                int r = console_get(ctx, path, follow && !first, &resp);
                bool retry = r == 1;

                if (r < 0)
                        return -r;
                if (r == 0) {
                        if (ctx->cfg.json) {
                                const json_t *no = json_object_get(resp.body, "next_offset");
                                json_dumpf(resp.body, ctx->out, JSON_COMPACT | JSON_PRESERVE_ORDER);
                                fputc('\n', ctx->out);
                                r = fflush(ctx->out) ? -EIO : json_is_integer(no) ? 0 : -EBADMSG;
                                next = r ? 0 : (uint64_t) json_integer_value(no);
                                n = (size_t) json_integer_value(json_object_get(resp.body, "length"));
                        } else {
                                r = console_emit(ctx->out, resp.body, &n, &next);
                        }
                        ctl_response_release(&resp);
                        if (r < 0) {
                                fprintf(ctx->err, "error: %s\n", r == -EIO ? "cannot write the output"
                                        : "unexpected answer from the agent (use --json to see it)");
                                return CTL_EXIT_FAILURE;
                        }
                        first = false;
                }
                if (!follow)
                        return CTL_EXIT_OK;
                if (!first)
                        snprintf(path, sizeof(path), "/v1/instances/%s/console?offset=%llu&tail_bytes=%d", id,
                                 (unsigned long long) next, FOLLOW_CHUNK);
                delay = n ? CTL_POLL_FIRST_MS : ctl_backoff_next(delay);
                if (!n || retry)
                        poll(NULL, 0, (int) delay); /* nothing new: wait a little before asking again */
        }
        return CTL_EXIT_OK;
}

/* ---------------- --attach ---------------- */

struct attach {
        virStreamPtr st;
        int stdin_watch;
        unsigned char pending[4096];    /* typed, not yet taken by the stream */
        size_t n_pending;
        bool quit;
        bool failed;
};

static void quiet_libvirt(void *opaque, virErrorPtr err) {
        (void) opaque, (void) err;      /* errors are read with virGetLastErrorMessage() */
}

static void attach_update(struct attach *a) {
        virStreamEventUpdateCallback(a->st, VIR_STREAM_EVENT_READABLE | VIR_STREAM_EVENT_HANGUP |
                                     VIR_STREAM_EVENT_ERROR | (a->n_pending ? VIR_STREAM_EVENT_WRITABLE : 0));
        virEventUpdateHandle(a->stdin_watch, a->n_pending ? 0 : VIR_EVENT_HANDLE_READABLE);
}

static void attach_flush(struct attach *a) {
        while (a->n_pending) {
                int r = virStreamSend(a->st, (const char *) a->pending, a->n_pending);
                if (r == -2)
                        break;
                if (r < 0) {
                        a->quit = a->failed = true;
                        return;
                }
                memmove(a->pending, a->pending + r, a->n_pending - (size_t) r);
                a->n_pending -= (size_t) r;
        }
        attach_update(a);
}

static void on_stream(virStreamPtr st, int events, void *opaque) {
        struct attach *a = opaque;
        char buf[4096];

        if (events & VIR_STREAM_EVENT_READABLE) {
                for (;;) {
                        int r = virStreamRecv(st, buf, sizeof(buf));
                        if (r == -2)
                                break;
                        if (r <= 0) {
                                a->quit = true;
                                a->failed = r < 0;
                                return;
                        }
                        for (int off = 0; off < r;) {
                                ssize_t w = write(STDOUT_FILENO, buf + off, (size_t) (r - off));
                                if (w < 0 && errno == EINTR)
                                        continue;
                                if (w <= 0) {
                                        a->quit = a->failed = true;
                                        return;
                                }
                                off += (int) w;
                        }
                }
        }
        if (events & VIR_STREAM_EVENT_WRITABLE)
                attach_flush(a);
        if (events & (VIR_STREAM_EVENT_HANGUP | VIR_STREAM_EVENT_ERROR))
                a->quit = true;
}

static void on_stdin(int watch, int fd, int events, void *opaque) {
        struct attach *a = opaque;
        unsigned char buf[sizeof(a->pending)];
        ssize_t n;

        (void) watch, (void) events;
        n = read(fd, buf, sizeof(buf) - a->n_pending);
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
                return;
        if (n <= 0) {   /* stdin closed: detach */
                a->quit = true;
                return;
        }
        for (ssize_t i = 0; i < n; i++) {
                if (buf[i] == CONSOLE_ESCAPE) {
                        n = i;
                        a->quit = true;
                        break;
                }
        }
        memcpy(a->pending + a->n_pending, buf, (size_t) n);
        a->n_pending += (size_t) n;
        attach_flush(a);
}

/* The instance's UUID and, without --connect, the agent's libvirt URI. */
static int attach_target(struct ctl_ctx *ctx, const char *id, const char *connect_uri, char uuid[37],
                         char **ret_uri) {
        struct ctl_response resp = {};
        char path[128];
        const char *v;
        int r;

        snprintf(path, sizeof(path), "/v1/instances/%s", id);
        r = console_get(ctx, path, false, &resp);
        if (r < 0)
                return -r;
        v = json_string_value(json_object_get(resp.body, "id"));
        if (!v || strlen(v) != 36) {
                ctl_response_release(&resp);
                fprintf(ctx->err, "error: unexpected answer from the agent (use --json to see it)\n");
                return CTL_EXIT_FAILURE;
        }
        memcpy(uuid, v, 37);
        ctl_response_release(&resp);
        if (connect_uri) {
                *ret_uri = strdup(connect_uri);
        } else {
                r = console_get(ctx, "/v1/host", false, &resp);
                if (r < 0)
                        return -r;
                v = json_string_value(json_object_get(resp.body, "libvirt_uri"));
                *ret_uri = v ? strdup(v) : NULL;
                ctl_response_release(&resp);
                if (!v) {
                        fprintf(ctx->err, "error: the agent reports no libvirt_uri; give --connect URI\n");
                        return CTL_EXIT_FAILURE;
                }
        }
        if (!*ret_uri) {
                fprintf(ctx->err, "error: out of memory\n");
                return CTL_EXIT_FAILURE;
        }
        return CTL_EXIT_OK;
}

static int console_attach(struct ctl_ctx *ctx, const char *id, const char *connect_uri) {
        _cleanup_ctl_free_ char *uri = NULL;
        struct attach a = { .stdin_watch = -1 };
        struct termios saved, raw;
        bool tty = isatty(STDIN_FILENO) == 1, restored = true;
        virConnectPtr conn = NULL;
        virDomainPtr dom = NULL;
        char uuid[37];
        int exit_code;

        exit_code = attach_target(ctx, id, connect_uri, uuid, &uri);
        if (exit_code != CTL_EXIT_OK)
                return exit_code;
        virSetErrorFunc(NULL, quiet_libvirt);
        exit_code = CTL_EXIT_FAILURE;
        if (virEventRegisterDefaultImpl() < 0 || !(conn = virConnectOpen(uri))) {
                fprintf(ctx->err, "error: cannot connect to libvirt at %s: %s\n", uri, virGetLastErrorMessage());
                return CTL_EXIT_FAILURE;
        }
        if (!(dom = virDomainLookupByUUIDString(conn, uuid))) {
                fprintf(ctx->err, "error: no libvirt domain %s at %s: %s\n", uuid, uri, virGetLastErrorMessage());
                goto close_conn;
        }
        if (!(a.st = virStreamNew(conn, VIR_STREAM_NONBLOCK)) || virDomainOpenConsole(dom, NULL, a.st, 0) < 0) {
                fprintf(ctx->err, "error: cannot open the console of %s: %s\n", id, virGetLastErrorMessage());
                goto free_stream;
        }
        if (virStreamEventAddCallback(a.st, VIR_STREAM_EVENT_READABLE | VIR_STREAM_EVENT_HANGUP |
                                      VIR_STREAM_EVENT_ERROR, on_stream, &a, NULL) < 0 ||
            (a.stdin_watch = virEventAddHandle(STDIN_FILENO, VIR_EVENT_HANDLE_READABLE, on_stdin, &a, NULL)) < 0) {
                fprintf(ctx->err, "error: cannot watch the console: %s\n", virGetLastErrorMessage());
                goto abort_stream;
        }
        fprintf(ctx->err, "Connected to %s (%s)\nEscape character is ^] (Ctrl + ])\n", id, uuid);
        fflush(ctx->err);
        if (tty && tcgetattr(STDIN_FILENO, &saved) == 0) {
                raw = saved;
                cfmakeraw(&raw);
                restored = tcsetattr(STDIN_FILENO, TCSAFLUSH, &raw) != 0;
        }
        while (!a.quit && virEventRunDefaultImpl() == 0)
                ;
        if (!restored)
                tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved);
        fputs(a.failed ? "\nconsole: the stream failed\n" : "\n", ctx->err);
        exit_code = a.failed ? CTL_EXIT_FAILURE : CTL_EXIT_OK;
abort_stream:
        if (a.stdin_watch >= 0)
                virEventRemoveHandle(a.stdin_watch);
        virStreamEventRemoveCallback(a.st);
        virStreamAbort(a.st);
free_stream:
        if (a.st)
                virStreamFree(a.st);
        virDomainFree(dom);
close_conn:
        virConnectClose(conn);
        return exit_code;
}

int ctl_cmd_console(struct ctl_ctx *ctx, const struct ctl_args *args) {
        const char *id = args->positional[0], *tail = args->value[CTL_OPT_TAIL];
        bool follow = args->value[CTL_OPT_FOLLOW], attach = args->value[CTL_OPT_ATTACH];
        uint64_t n;

        if (ctl_id_classify(id) == CTL_ID_INVALID) {
                fprintf(ctx->err, "computectl: '%s' is not an instance id (a UUID, or i- and 17 hex digits)\n"
                        "Try 'computectl console --help'.\n", id);
                return CTL_EXIT_USAGE;
        }
        if (tail && (ctl_parse_uint(tail, FOLLOW_CHUNK, &n) < 0 || n == 0)) {
                fprintf(ctx->err, "computectl: --tail: '%s' is not a number of bytes from 1 to %d\n"
                        "Try 'computectl console --help'.\n", tail, FOLLOW_CHUNK);
                return CTL_EXIT_USAGE;
        }
        if (attach && (tail || follow)) {
                fprintf(ctx->err, "computectl: --attach does not go with --tail or --follow\n"
                        "Try 'computectl console --help'.\n");
                return CTL_EXIT_USAGE;
        }
        if (!attach && args->value[CTL_OPT_CONNECT]) {
                fprintf(ctx->err, "computectl: --connect is for --attach\nTry 'computectl console --help'.\n");
                return CTL_EXIT_USAGE;
        }
        if (attach)
                return console_attach(ctx, id, args->value[CTL_OPT_CONNECT]);
        return console_log(ctx, id, tail, follow);
}
