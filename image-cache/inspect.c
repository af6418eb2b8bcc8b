/* inspect.c: what an image file really is, asked of `qemu-img info` (the
 * format is probed from the bytes, never taken from a request), and whether
 * it is safe to give to a hypervisor. Blocking: runs on the thread pool.
 *
 * qemu-img runs from an argv vector with a clean environment, stdin from
 * /dev/null, under prlimit (1 GiB address space, 30 s CPU) when prlimit is
 * installed, as nova does against crafted images, and is killed after 60 s. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* pipe2 */
#endif
#include "image-cache/imgcache-internal.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>

#define PRLIMIT "/usr/bin/prlimit"
#define OUT_MAX (256 * 1024)
#define ERR_MAX 2048
#define TIMEOUT_MS 60000

/* qemu-img with args (after the program, NULL-terminated, at most 8). */
static int spawn_qemu_img(const char *qemu_img, const char *const args[], int out_fd, int err_fd,
                               pid_t *pid)
{
    const char *argv[16];
    char *const envp[] = {"LC_ALL=C", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", NULL};
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    sigset_t none, all;
    size_t n = 0;
    int r;

    if (access(PRLIMIT, X_OK) == 0) {
        argv[n++] = PRLIMIT;
        argv[n++] = "--as=1073741824";
        argv[n++] = "--cpu=30";
        argv[n++] = "--";
    }
    argv[n++] = qemu_img;
    for (size_t i = 0; args[i] && n < ARRAY_SIZE(argv) - 1; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, out_fd, 1);
    posix_spawn_file_actions_adddup2(&fa, err_fd, 2);
    posix_spawnattr_init(&attr);
    sigemptyset(&none);
    sigfillset(&all);
    sigdelset(&all, SIGKILL);
    sigdelset(&all, SIGSTOP);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &all);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    r = posix_spawn(pid, argv[0], &fa, &attr, (char *const *)argv, envp);
    posix_spawnattr_destroy(&attr);
    posix_spawn_file_actions_destroy(&fa);
    return -r;
}

/* Read both pipes to EOF (or the deadline). */
static int collect(int out_fd, int err_fd, char *out, size_t out_cap, size_t *out_len, char *errb,
                         size_t err_cap, size_t *err_len)
{
    struct pollfd p[2] = {{.fd = out_fd, .events = POLLIN}, {.fd = err_fd, .events = POLLIN}};
    uint64_t deadline = now_mono_ns() + (uint64_t)TIMEOUT_MS * 1000000ull;
    int open_fds = 2;

    while (open_fds > 0) {
        uint64_t now = now_mono_ns();
        int n;

        if (now >= deadline)
            return -ETIMEDOUT;
        n = poll(p, 2, (int)((deadline - now) / 1000000ull) + 1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        for (int i = 0; i < 2; i++) {
            char scratch[4096];
            char *buf = i == 0 ? out : errb;
            size_t *len = i == 0 ? out_len : err_len;
            size_t cap = i == 0 ? out_cap : err_cap;
            ssize_t got;

            if (p[i].fd < 0 || !(p[i].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            if (*len < cap - 1)
                got = read(p[i].fd, buf + *len, cap - 1 - *len);
            else
                got = read(p[i].fd, scratch, sizeof(scratch)); /* drop the excess */
            if (got < 0 && errno == EINTR)
                continue;
            if (got <= 0) {
                p[i].fd = -1;
                open_fds--;
                continue;
            }
            if (*len < cap - 1) {
                *len += (size_t)got;
                buf[*len] = '\0';
            }
        }
    }
    return 0;
}

/* Run qemu-img with args, its stdout into out (cap out_cap) and stderr into
 * errb (cap err_cap, trailing newlines cut), then reap it: 0 with *wstatus
 * (it ran), -ETIMEDOUT (killed after TIMEOUT_MS; err untouched), or -errno
 * with err (pipe, spawn, read). */
static int run_qemu_img(const char *qemu_img, const char *const args[], char *out, size_t out_cap,
                        size_t *out_len, char *errb, size_t err_cap, int *wstatus, struct agent_error *err)
{
    int op[2] = {-1, -1}, ep[2] = {-1, -1};
    size_t elen = 0, n;
    pid_t pid;
    int r;

    *wstatus = 0;
    if (pipe2(op, O_CLOEXEC) < 0 || pipe2(ep, O_CLOEXEC) < 0) {
        r = agent_error_set(err, errno, "internal", NULL, "pipe: %s", strerror(errno));
        goto out;
    }
    if ((r = spawn_qemu_img(qemu_img, args, op[1], ep[1], &pid)) < 0) {
        agent_error_set(err, -r, "internal", NULL, "cannot run %s: %s", qemu_img, strerror(-r));
        goto out;
    }
    close(op[1]);
    close(ep[1]);
    op[1] = ep[1] = -1;
    r = collect(op[0], ep[0], out, out_cap, out_len, errb, err_cap, &elen);
    if (r < 0)
        kill(pid, SIGKILL);
    while (waitpid(pid, wstatus, 0) < 0 && errno == EINTR)
        ;
    if (r < 0 && r != -ETIMEDOUT)
        agent_error_set(err, -r, "internal", NULL, "reading qemu-img's answer: %s", strerror(-r));
    n = strlen(errb);
    while (n > 0 && (errb[n - 1] == '\n' || errb[n - 1] == '\r'))
        errb[--n] = '\0';
out:
    for (int i = 0; i < 2; i++) {
        if (op[i] >= 0)
            close(op[i]);
        if (ep[i] >= 0)
            close(ep[i]);
    }
    return r;
}

int imgcache_inspect_file(const char *qemu_img, const char *path, uint64_t max_virtual_size,
                          struct imgcache_inspect *out, struct agent_error *err)
{
    _cleanup_free_ char *obuf = malloc(OUT_MAX);
    const char *const args[] = {"info", "--output=json", path, NULL};
    char ebuf[ERR_MAX] = "";
    size_t olen = 0;
    int r, wstatus;
    struct stat st;

    if (!obuf)
        return agent_error_set(err, ENOMEM, "internal", NULL, "out of memory");
    obuf[0] = '\0';
    r = run_qemu_img(qemu_img, args, obuf, OUT_MAX, &olen, ebuf, sizeof(ebuf), &wstatus, err);
    if (r == -ETIMEDOUT)
        return agent_error_set(err, ETIMEDOUT, "unsafe_image", NULL,
                               "qemu-img info took longer than %d s on the image", TIMEOUT_MS / 1000);
    if (r < 0)
        return r;
    if (!WIFEXITED(wstatus) || WEXITSTATUS(wstatus) != 0)
        return agent_error_set(err, EINVAL, "unsupported_format", NULL,
                               "qemu-img info failed on the image (%s%d): %s",
                               WIFEXITED(wstatus) ? "exit " : "signal ",
                               WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : WTERMSIG(wstatus), ebuf);
    if ((r = imgcache_inspect_judge(obuf, olen, max_virtual_size, out, err)) < 0)
        return r;
    if (stat(path, &st) < 0)
        return agent_error_set(err, errno, "internal", NULL, "stat %s: %s", path, strerror(errno));
    out->actual_size = (uint64_t)st.st_size;
    return 0;
}

int imgcache_inspect_judge(const char *json, size_t len, uint64_t max_virtual_size,
                           struct imgcache_inspect *out, struct agent_error *err)
{
    json_error_t jerr;
    json_t *root = json_loadb(json, len, 0, &jerr);
    json_t *fmt, *vs, *fs, *data, *v;
    const char *format;
    int r = 0;

    if (!json_is_object(root)) {
        r = agent_error_set(err, EINVAL, "internal", NULL, "qemu-img info answered no JSON object");
        goto out;
    }
    fmt = json_object_get(root, "format");
    vs = json_object_get(root, "virtual-size");
    if (!json_is_string(fmt) || !json_is_integer(vs) || json_integer_value(vs) < 0) {
        r = agent_error_set(err, EINVAL, "internal", NULL,
                            "qemu-img info gave no format or virtual size");
        goto out;
    }
    format = json_string_value(fmt);
    if (strcmp(format, "raw") != 0 && strcmp(format, "qcow2") != 0) {
        r = agent_error_set(err, EINVAL, "unsupported_format", NULL,
                            "image format is %.32s; only raw and qcow2 are accepted", format);
        goto out;
    }
    v = json_object_get(root, "backing-filename");
    if (!v)
        v = json_object_get(root, "full-backing-filename");
    if (v) {
        r = agent_error_set(err, EPERM, "unsafe_image", NULL,
                            "qcow2 image has a backing file (%.200s): refused, it could make "
                            "the hypervisor read host files",
                            json_is_string(v) ? json_string_value(v) : "?");
        goto out;
    }
    if (json_is_true(json_object_get(root, "encrypted"))) {
        r = agent_error_set(err, EPERM, "unsafe_image", NULL, "encrypted images are refused");
        goto out;
    }
    fs = json_object_get(root, "format-specific");
    data = json_object_get(fs, "data");
    if (strcmp(format, "qcow2") == 0 && json_is_object(data)) {
        v = json_object_get(data, "data-file");
        if (v) {
            r = agent_error_set(err, EPERM, "unsafe_image", NULL,
                                "qcow2 image has an external data file (%.200s): refused, it "
                                "could make the hypervisor read host files",
                                json_is_string(v) ? json_string_value(v) : "?");
            goto out;
        }
        if (json_is_true(json_object_get(data, "corrupt"))) {
            r = agent_error_set(err, EINVAL, "unsafe_image", NULL, "qcow2 image is marked corrupt");
            goto out;
        }
        if (json_object_get(data, "encrypt")) {
            r = agent_error_set(err, EPERM, "unsafe_image", NULL, "encrypted images are refused");
            goto out;
        }
    }
    if ((uint64_t)json_integer_value(vs) > max_virtual_size) {
        r = agent_error_set(err, EFBIG, "image_too_large", NULL,
                            "image virtual size %lld bytes exceeds the %llu allowed",
                            (long long)json_integer_value(vs),
                            (unsigned long long)max_virtual_size);
        goto out;
    }
    strscpy(out->format, format, sizeof(out->format));
    out->virtual_size = (uint64_t)json_integer_value(vs);
    out->actual_size = 0;
out:
    json_decref(root);
    return r;
}

/* ---- growing a guest's disk (issue 12) ---- */

/* The virtual size in a qcow2 header (bytes 24-31, big-endian), the file
 * being one the agent wrote (the guest writes inside the image, never its
 * header). 0 or -errno. */
static int qcow2_virtual_size(const char *path, uint64_t *size)
{
    unsigned char h[32];
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    ssize_t n;

    if (fd < 0)
        return -errno;
    n = pread(fd, h, sizeof(h), 0);
    close(fd);
    if (n != (ssize_t)sizeof(h) || memcmp(h, "QFI\xfb", 4) != 0)
        return -EINVAL;
    *size = 0;
    for (int i = 24; i < 32; i++)
        *size = (*size << 8) | h[i];
    return 0;
}

int imgcache_qcow2_grow(const char *qemu_img, const char *path, uint64_t size_bytes, struct agent_error *err)
{
    char size[32], ebuf[ERR_MAX] = "", obuf[ERR_MAX] = "";
    const char *const args[] = {"resize", "-f", "qcow2", path, size, NULL};
    size_t olen = 0;
    uint64_t now = 0;
    int r, wstatus;

    if (!qemu_img)
        qemu_img = "/usr/bin/qemu-img";
    if ((r = qcow2_virtual_size(path, &now)) < 0)
        return agent_error_set(err, -r, "internal", "flavor.disk_gb", "cannot read the disk %s: %s", path,
                               r == -EINVAL ? "not a qcow2 file" : strerror(-r));
    if (now >= size_bytes)
        return 0; /* already that size (a resumed resize) or larger: never shrunk */
    snprintf(size, sizeof(size), "%llu", (unsigned long long)size_bytes);
    r = run_qemu_img(qemu_img, args, obuf, sizeof(obuf), &olen, ebuf, sizeof(ebuf), &wstatus, err);
    if (r == -ETIMEDOUT)
        return agent_error_set(err, ETIMEDOUT, "internal", "flavor.disk_gb",
                               "qemu-img resize took longer than %d s", TIMEOUT_MS / 1000);
    if (r < 0)
        return r;
    if (!WIFEXITED(wstatus) || WEXITSTATUS(wstatus) != 0)
        return agent_error_set(err, EIO, "internal", "flavor.disk_gb", "qemu-img resize failed: %s", ebuf);
    return 0;
}
