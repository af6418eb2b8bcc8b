/* console.c: GET /v1/instances/{id}/console: the guest's serial console log
 * (what libvirt appends from the pty, <log append="on"/>), like EC2's
 * GetConsoleOutput: the latest bytes, base64 in JSON so any byte survives.
 *
 *   ?tail_bytes=N  at most N bytes (1..CONSOLE_MAX_BYTES, default 64 KiB):
 *                  the last N of the log, or with offset the first N from it
 *   ?offset=O      from byte O of the log (a follower passes the previous
 *                  answer's next_offset); an O past the end (the log was
 *                  replaced) answers the tail, which the caller sees as an
 *                  offset other than the one it asked for
 *
 * The file is the one the agent put in the instance's directory (the
 * store's console_log, never a caller's path), opened without following a
 * symlink in its last component (O_NOFOLLOW, the directory too), and read
 * only if it is a regular file. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "agent/api/api-internal.h"
#include "agent/store.h"

#define CONSOLE_DEFAULT_BYTES (64 * 1024)
#define CONSOLE_MAX_BYTES (1024 * 1024)

/* A decimal in [lo, hi], nothing else; false otherwise. */
static bool parse_bound(const char *s, unsigned long long lo, unsigned long long hi, unsigned long long *out)
{
    unsigned long long v = 0;

    if (!s || !*s || strlen(s) > 19)
        return false;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9')
            return false;
        v = v * 10 + (unsigned)(*p - '0');
    }
    if (v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

static char *base64_encode(const unsigned char *in, size_t n)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *out = malloc((n + 2) / 3 * 4 + 1), *o = out;

    if (!out)
        return NULL;
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)in[i] << 16 | (i + 1 < n ? (unsigned)in[i + 1] << 8 : 0) |
                     (i + 2 < n ? in[i + 2] : 0);
        *o++ = tab[v >> 18 & 63];
        *o++ = tab[v >> 12 & 63];
        *o++ = i + 1 < n ? tab[v >> 6 & 63] : '=';
        *o++ = i + 2 < n ? tab[v & 63] : '=';
    }
    *o = '\0';
    return out;
}

/* The log at path, opened read-only: its directory and then the file, each
 * without following a symlink. fd, -ENOENT when there is no log yet, or
 * another -errno (-ELOOP for a symlink, -EINVAL for a non-regular file). */
static int open_log(const char *path, struct stat *st)
{
    const char *slash = strrchr(path, '/');
    char dir[4096];
    int dfd, fd;

    if (!slash || slash == path || (size_t)(slash - path) >= sizeof(dir) || !slash[1])
        return -EINVAL;
    memcpy(dir, path, (size_t)(slash - path));
    dir[slash - path] = '\0';
    dfd = open(dir, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dfd < 0)
        return -errno;
    fd = openat(dfd, slash + 1, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
    if (fd < 0)
        fd = -errno;
    close(dfd);
    if (fd < 0)
        return fd;
    if (fstat(fd, st) < 0 || !S_ISREG(st->st_mode)) {
        close(fd);
        return -EINVAL;
    }
    return fd;
}

static json_t *answer(const struct instance *inst, unsigned long long start, const unsigned char *buf,
                      size_t n, const struct stat *st)
{
    char *b64 = base64_encode(buf, n);
    char ts[32] = "";
    struct tm tm;

    if (!b64)
        return NULL;
    if (st && gmtime_r(&st->st_mtim.tv_sec, &tm))
        strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%SZ", &tm);
    json_t *j = json_pack("{s:s, s:s?, s:s, s:s, s:I, s:I, s:I, s:I, s:o}", "instance_id", inst->uuid,
                          "ec2_instance_id", inst->ec2_id[0] ? inst->ec2_id : NULL, "output", b64,
                          "encoding", "base64", "offset", (json_int_t)start, "length", (json_int_t)n,
                          "next_offset", (json_int_t)(start + n), "size",
                          (json_int_t)(st ? st->st_size : 0), "timestamp", ts[0] ? json_string(ts) : json_null());
    free(b64);
    return j;
}

int api_instance_console(const struct api_call *call, json_t **reply)
{
    char tbuf[32], obuf[32];
    const char *ts = api_call_arg(call, "tail_bytes", tbuf, sizeof(tbuf));
    const char *os = api_call_arg(call, "offset", obuf, sizeof(obuf));
    unsigned long long want = CONSOLE_DEFAULT_BYTES, off = 0, size, start;
    unsigned char *buf = NULL;
    struct instance inst;
    struct stat st;
    ssize_t got = 0;
    int fd, status = 200;

    if (ts && !parse_bound(ts, 1, CONSOLE_MAX_BYTES, &want))
        return api_fail_with(reply, "invalid_field", "tail_bytes",
                             "field 'tail_bytes': a whole number of bytes from 1 to 1048576");
    if (os && !parse_bound(os, 0, (1ULL << 53) - 1, &off))
        return api_fail_with(reply, "invalid_field", "offset",
                             "field 'offset': a whole number of bytes from 0 (the log's start)");
    if (store_instance_get(call->deps->store, call->param[0], &inst) < 0)
        return api_fail_with(reply, "not_found", "id", "no such instance");
    if (!inst.console_log) {
        instance_release(&inst);
        return api_fail_with(reply, "not_found", NULL, "this instance keeps no console log (its hypervisor driver has none)");
    }
    fd = open_log(inst.console_log, &st);
    if (fd == -ENOENT) { /* not started yet: an empty log */
        *reply = answer(&inst, 0, NULL, 0, NULL);
        goto done;
    }
    if (fd < 0) {
        status = api_fail_with(reply, "internal", NULL, "the console log cannot be opened");
        goto done;
    }
    size = (unsigned long long)st.st_size;
    start = os && off <= size ? off : size > want ? size - want : 0;
    if (size - start < want)
        want = size - start;
    if (want && !(buf = malloc(want)))
        got = -1;
    while (buf && (size_t)got < want) {
        ssize_t r = pread(fd, buf + got, want - (size_t)got, (off_t)(start + (size_t)got));
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            if (r < 0)
                got = -1;
            break; /* shorter than fstat said: what there is */
        }
        got += r;
    }
    close(fd);
    if (got < 0) {
        status = api_fail_with(reply, "internal", NULL, "the console log cannot be read");
        goto done;
    }
    *reply = answer(&inst, start, buf, (size_t)got, &st);
done:
    if (status == 200 && !*reply)
        status = api_fail_with(reply, "internal", NULL, "out of memory");
    free(buf);
    instance_release(&inst);
    return status;
}
