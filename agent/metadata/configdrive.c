/* configdrive.c: the config drive, an ISO 9660 image with the content the
 * metadata service serves: "config-2" (openstack/<each version>/...,
 * ec2/{2009-04-04,latest}/meta-data.json and user-data, as nova writes it)
 * or NoCloud "cidata" (meta-data, user-data, network-config v2; JSON, which
 * YAML reads). Files go to a temp dir beside the image, xorriso (argv, no
 * shell) writes ISO.tmp, fsync, a rename puts it in place, fsync of the
 * directory; a failure removes everything it made, and a build first removes
 * what a crashed one left (ISO.tmp, ISO.d.XXXXXX). */
#define _XOPEN_SOURCE 700
#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "agent/metadata/md-internal.h"

extern char **environ;

#define XORRISO_TIMEOUT_MS 60000

static int write_file(const char *dir, const char *rel, const void *data, size_t len, struct agent_error *err)
{
    char path[PATH_MAX];
    const char *p = data;
    int fd;

    if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, rel) >= sizeof(path))
        return agent_error_set(err, ENAMETOOLONG, "internal", NULL, "config drive path too long");
    /* parents */
    for (char *s = path + strlen(dir) + 1; (s = strchr(s, '/')); s++) {
        *s = '\0';
        if (mkdir(path, 0755) < 0 && errno != EEXIST) {
            int e = errno;
            return agent_error_set(err, e, "internal", NULL, "cannot make %s: %s", path, strerror(e));
        }
        *s = '/';
    }
    fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) {
        int e = errno;
        return agent_error_set(err, e, "internal", NULL, "cannot write %s: %s", path, strerror(e));
    }
    while (len) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            int e = n < 0 ? errno : EIO;
            close(fd);
            return agent_error_set(err, e, "internal", NULL, "cannot write %s: %s", path, strerror(e));
        }
        p += n;
        len -= (size_t)n;
    }
    if (close(fd) < 0) {
        int e = errno;
        return agent_error_set(err, e, "internal", NULL, "cannot write %s: %s", path, strerror(e));
    }
    return 0;
}

static int write_json(const char *dir, const char *rel, json_t *doc, struct agent_error *err)
{
    char *text = doc ? json_dumps(doc, JSON_INDENT(2) | JSON_SORT_KEYS) : NULL;
    int r;

    json_decref(doc);
    if (!text)
        return agent_error_set(err, ENOMEM, "internal", NULL, "out of memory");
    r = write_file(dir, rel, text, strlen(text), err);
    free(text);
    return r;
}

static int write_user_data(const char *dir, const char *rel, const struct md_instance *m, struct agent_error *err)
{
    return write_file(dir, rel, m->user_data ? (const char *)m->user_data : "", m->user_data ? m->user_data_len : 0,
                      err);
}

static int config2_files(const struct md_instance *m, const char *dir, struct agent_error *err)
{
    static const char *const ec2v[] = {"2009-04-04", "latest"};
    char rel[128];
    int r;

    for (size_t i = 0; i < md_os_n_versions; i++) {
        const char *v = md_os_versions[i], *names[8];
        size_t n = md_os_files(m, v, names);
        for (size_t j = 0; j < n; j++) {
            snprintf(rel, sizeof(rel), "openstack/%s/%s", v, names[j]);
            if (!strcmp(names[j], "meta_data.json"))
                r = write_json(dir, rel, md_os_meta_data(m, v), err);
            else if (!strcmp(names[j], "network_data.json"))
                r = write_json(dir, rel, md_os_network_data(m), err);
            else if (!strcmp(names[j], "user_data"))
                r = write_user_data(dir, rel, m, err);
            else
                r = write_json(dir, rel, md_os_vendor_data(), err);
            if (r < 0)
                return r;
        }
    }
    for (size_t i = 0; i < ARRAY_SIZE(ec2v); i++) {
        snprintf(rel, sizeof(rel), "ec2/%s/meta-data.json", ec2v[i]);
        if ((r = write_json(dir, rel, md_ec2_meta_json(m), err)) < 0)
            return r;
        snprintf(rel, sizeof(rel), "ec2/%s/user-data", ec2v[i]);
        if (m->has_user_data && (r = write_user_data(dir, rel, m, err)) < 0)
            return r;
    }
    return 0;
}

static json_t *nocloud_network(const struct md_instance *m)
{
    json_t *eths = json_object();

    for (size_t i = 0; eths && i < m->n_ifaces; i++) {
        const struct md_iface *f = &m->ifaces[i];
        char name[32], addr[24];
        json_t *e = json_pack("{s:{s:s}}", "match", "macaddress", f->mac);

        snprintf(name, sizeof(name), "nic%d", f->device_number);
        if (!e) {
            json_decref(eths);
            return NULL;
        }
        if (f->ipv4[0]) {
            snprintf(addr, sizeof(addr), "%s/%d", f->ipv4, f->prefix);
            json_object_set_new(e, "addresses", json_pack("[s]", addr));
            if (f->gateway[0])
                json_object_set_new(e, "routes", json_pack("[{s:s, s:s}]", "to", "0.0.0.0/0", "via", f->gateway));
        } else {
            json_object_set_new(e, "dhcp4", json_true());
        }
        if (f->n_dns) {
            json_t *ns = json_array();
            for (size_t j = 0; j < f->n_dns; j++)
                json_array_append_new(ns, json_string(f->dns[j]));
            json_object_set_new(e, "nameservers", json_pack("{s:o}", "addresses", ns));
        }
        if (f->mtu > 0)
            json_object_set_new(e, "mtu", json_integer(f->mtu));
        json_object_set_new(eths, name, e);
    }
    return eths ? json_pack("{s:i, s:o}", "version", 2, "ethernets", eths) : NULL;
}

static int nocloud_files(const struct md_instance *m, const char *dir, struct agent_error *err)
{
    const char *host = m->hostname && m->hostname[0] ? m->hostname : (m->name ? m->name : m->uuid);
    json_t *keys = json_array(), *md;
    int r;

    for (size_t i = 0; keys && i < m->n_keys; i++)
        json_array_append_new(keys, json_string(m->keys[i].data ? m->keys[i].data : ""));
    md = json_pack("{s:s, s:s, s:o}", "instance-id", m->uuid, "local-hostname", host, "public-keys", keys);
    if ((r = write_json(dir, "meta-data", md, err)) < 0 || (r = write_user_data(dir, "user-data", m, err)) < 0)
        return r;
    return write_json(dir, "network-config", nocloud_network(m), err);
}

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    remove(p);
    return 0;
}

static void rm_tree(const char *dir)
{
    nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* Runs argv, its stderr into msg; 0 when it exits 0 within the deadline. */
static int run_xorriso(char *const argv[], char *msg, size_t msg_size)
{
    posix_spawn_file_actions_t fa;
    int pipefd[2], r, status = 0;
    size_t got = 0;
    pid_t pid;
    uint64_t deadline = now_mono_ns() / 1000000 + XORRISO_TIMEOUT_MS;

    msg[0] = '\0';
    if (pipe2(pipefd, O_CLOEXEC) < 0)
        return -errno;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, pipefd[1], 2);
    r = strchr(argv[0], '/') ? posix_spawn(&pid, argv[0], &fa, NULL, argv, environ)
                             : posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(pipefd[1]);
    if (r != 0) {
        close(pipefd[0]);
        return -r;
    }
    for (;;) {
        struct pollfd p = {.fd = pipefd[0], .events = POLLIN};
        int64_t left = (int64_t)(deadline - now_mono_ns() / 1000000);
        char buf[512];
        ssize_t n;

        if (left <= 0) {
            kill(pid, SIGKILL);
            r = -ETIMEDOUT;
            break;
        }
        if (poll(&p, 1, (int)left) < 0 && errno != EINTR) {
            kill(pid, SIGKILL);
            r = -errno;
            break;
        }
        if (!p.revents)
            continue;
        n = read(pipefd[0], buf, sizeof(buf));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        if (got + 1 < msg_size) {
            size_t take = (size_t)n < msg_size - got - 1 ? (size_t)n : msg_size - got - 1;
            memcpy(msg + got, buf, take);
            got += take;
            msg[got] = '\0';
        }
    }
    close(pipefd[0]);
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (r < 0)
        return r;
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -EIO;
}

/* The directory of path ("." when it names none). 0 or -ENAMETOOLONG. */
static int parent_of(const char *path, char *buf, size_t size)
{
    const char *slash = strrchr(path, '/');
    int n = !slash ? snprintf(buf, size, ".")
            : slash == path ? snprintf(buf, size, "/")
                            : snprintf(buf, size, "%.*s", (int)(slash - path), path);

    return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : 0;
}

int md_drive_leftovers_remove(const char *iso_path, int min_age_s)
{
    char dir[PATH_MAX], full[PATH_MAX];
    const char *slash = strrchr(iso_path, '/'), *base = slash ? slash + 1 : iso_path;
    size_t blen = strlen(base);
    time_t now = time(NULL);
    struct dirent *e;
    int n = 0, dfd;
    DIR *d;

    if (!blen || parent_of(iso_path, dir, sizeof(dir)) < 0)
        return -EINVAL;
    if (!(d = opendir(dir)))
        return errno == ENOENT ? 0 : -errno;
    dfd = dirfd(d);
    while ((e = readdir(d))) {
        const char *name = e->d_name;
        struct stat st;
        bool tmp = !strncmp(name, base, blen) && !strcmp(name + blen, ".tmp");
        bool tdir = !strncmp(name, base, blen) && !strncmp(name + blen, ".d.", 3) && strlen(name + blen + 3) == 6;
        if ((!tmp && !tdir) || fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
            continue;
        if (min_age_s > 0 && now - st.st_mtime < min_age_s)
            continue; /* maybe a build under way */
        if (tdir && S_ISDIR(st.st_mode)) {
            if ((size_t)snprintf(full, sizeof(full), "%s/%s", dir, name) >= sizeof(full))
                continue;
            rm_tree(full);
            n++;
        } else if (unlinkat(dfd, name, 0) == 0) {
            n++;
        }
    }
    closedir(d);
    return n;
}

int md_drive_remove(const char *iso_path)
{
    int r = 0;

    if (!iso_path || !iso_path[0])
        return -EINVAL;
    if (unlink(iso_path) < 0 && errno != ENOENT)
        r = -errno;
    md_drive_leftovers_remove(iso_path, 0);
    return r;
}

/* path's data on disk, then (dir) the directory entry naming it. */
static int fsync_path(const char *path, bool dir)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | (dir ? O_DIRECTORY : 0)), r = 0;

    if (fd < 0)
        return -errno;
    if (fsync(fd) < 0)
        r = -errno;
    close(fd);
    return r;
}

int md_drive_build(const struct md_instance *m, enum md_drive_kind kind, const char *iso_path, const char *xorriso,
                   struct agent_error *err)
{
    char dir[PATH_MAX], tmp[PATH_MAX], msg[512];
    const char *label = kind == MD_DRIVE_NOCLOUD ? "cidata" : "config-2";
    int r;

    if (!iso_path || !iso_path[0] || (size_t)snprintf(dir, sizeof(dir), "%s.d.XXXXXX", iso_path) >= sizeof(dir) ||
        (size_t)snprintf(tmp, sizeof(tmp), "%s.tmp", iso_path) >= sizeof(tmp))
        return agent_error_set(err, EINVAL, "internal", "config_drive", "bad config drive path");
    /* what a build that crashed left (its temp dir holds user-data) */
    md_drive_leftovers_remove(iso_path, 0);
    if (!mkdtemp(dir)) {
        int e = errno;
        return agent_error_set(err, e, "internal", "config_drive", "cannot make a temp dir for %s: %s", iso_path,
                               strerror(e));
    }
    r = kind == MD_DRIVE_NOCLOUD ? nocloud_files(m, dir, err) : config2_files(m, dir, err);
    if (r == 0) {
        char *argv[] = {(char *)(xorriso && xorriso[0] ? xorriso : "xorriso"), "-as", "mkisofs", "-quiet", "-V",
                        (char *)label, "-J", "-R", "-o", tmp, dir, NULL};
        unlink(tmp);
        r = run_xorriso(argv, msg, sizeof(msg));
        if (r < 0) {
            utf8_scrub(msg);
            agent_error_set(err, -r, "internal", "config_drive", "xorriso failed for %s: %s%s", iso_path,
                            r == -ETIMEDOUT ? "timed out" : r == -EIO ? "" : strerror(-r), r == -EIO ? msg : "");
        } else if ((r = fsync_path(tmp, false)) < 0) {
            agent_error_set(err, -r, "internal", "config_drive", "cannot sync %s: %s", tmp, strerror(-r));
        } else if (rename(tmp, iso_path) < 0) {
            r = -errno;
            agent_error_set(err, -r, "internal", "config_drive", "cannot rename %s: %s", tmp, strerror(-r));
        } else {
            /* the rename itself durable: a crash after it never leaves a
             * launch that thought its drive was there without one */
            char parent[PATH_MAX];
            if ((r = parent_of(iso_path, parent, sizeof(parent))) == 0 && (r = fsync_path(parent, true)) < 0)
                agent_error_set(err, -r, "internal", "config_drive", "cannot sync %s: %s", parent, strerror(-r));
            if (r < 0)
                unlink(iso_path);
        }
    }
    rm_tree(dir);
    if (r < 0)
        unlink(tmp);
    return r;
}
