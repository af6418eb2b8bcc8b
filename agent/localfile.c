/* localfile.c: see localfile.h. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "agent/localfile.h"

#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

/* path lies strictly beneath dir (dir's length n, without trailing '/'),
 * on a component boundary. */
static bool beneath(const char *dir, size_t n, const char *path)
{
    while (n > 0 && dir[n - 1] == '/')
        n--;
    if (strncmp(path, dir, n) != 0 || path[n] != '/')
        return false;
    while (path[n] == '/')
        n++;
    return path[n] != '\0';
}

/* No ".", ".." or empty-name games: each component is a plain name. */
static bool normalized(const char *path)
{
    const char *p = path;

    if (p[0] != '/')
        return false;
    while (*p) {
        const char *c = p + 1, *e = strchrnul(c, '/');
        size_t len = (size_t)(e - c);
        if ((len == 1 && c[0] == '.') || (len == 2 && c[0] == '.' && c[1] == '.'))
            return false;
        p = e;
    }
    return true;
}

/* The next entry of a colon-separated list into buf; false at the end. */
static bool next_dir(const char **list, char *buf, size_t size)
{
    const char *s = *list, *e;

    if (!s || !*s)
        return false;
    e = strchrnul(s, ':');
    if ((size_t)(e - s) >= size)
        buf[0] = '\0'; /* too long: matches nothing */
    else {
        memcpy(buf, s, (size_t)(e - s));
        buf[e - s] = '\0';
    }
    *list = *e ? e + 1 : e;
    return true;
}

/* Is path (lexically) inside a listed directory, as written or resolved?
 * With real set, compare with the directories' resolved paths only. */
static bool in_listed_dir(const char *dirs, const char *path, bool real)
{
    char dir[PATH_MAX], rdir[PATH_MAX];

    while (next_dir(&dirs, dir, sizeof(dir))) {
        if (dir[0] != '/')
            continue;
        if (!real && beneath(dir, strlen(dir), path))
            return true;
        if (realpath(dir, rdir) && beneath(rdir, strlen(rdir), path))
            return true;
    }
    return false;
}

/* Open without following a symlink anywhere on the way (the path is already
 * symlink-free, so one appearing now is a swap); O_PATH: no device opened. */
static int open_nofollow(const char *path)
{
    struct open_how how = {.flags = O_PATH | O_CLOEXEC,
                           .resolve = RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS};
    long fd = syscall(SYS_openat2, AT_FDCWD, path, &how, sizeof(how));

    if (fd < 0 && (errno == ENOSYS || errno == EPERM)) /* old kernel or seccomp */
        fd = open(path, O_PATH | O_NOFOLLOW | O_CLOEXEC);
    return (int)fd;
}

int localfile_resolve(const char *dirs, const char *path, const char *field, uint64_t max_size,
                      char **resolved, struct agent_error *err)
{
    char real[PATH_MAX];
    _cleanup_close_ int fd = -1;
    struct stat st;
    char *out;

    if (!dirs || !*dirs)
        return agent_error_set(err, EPERM, "invalid_field", field,
                               "field '%s': local files are refused on this host (%s lists no "
                               "directory)", field, LOCALFILE_SETTING);
    if (!normalized(path))
        return agent_error_set(err, EINVAL, "invalid_field", field,
                               "field '%s' must be an absolute, normalized path", field);
    if (!in_listed_dir(dirs, path, false))
        return agent_error_set(err, EPERM, "invalid_field", field,
                               "field '%s': %s is not inside a directory listed in %s", field,
                               path, LOCALFILE_SETTING);
    if (!realpath(path, real))
        return agent_error_set(err, errno, "invalid_field", field, "field '%s': %s: %s", field,
                               path, strerror(errno));
    if (!in_listed_dir(dirs, real, true))
        return agent_error_set(err, EPERM, "invalid_field", field,
                               "field '%s': %s leads out of the directories listed in %s",
                               field, path, LOCALFILE_SETTING);
    fd = open_nofollow(real);
    if (fd < 0)
        return agent_error_set(err, errno, "invalid_field", field, "field '%s': %s: %s", field,
                               path, errno == ELOOP ? "changed while it was checked" : strerror(errno));
    if (fstat(fd, &st) < 0)
        return agent_error_set(err, errno, "invalid_field", field, "field '%s': %s: %s", field,
                               path, strerror(errno));
    if (!S_ISREG(st.st_mode))
        return agent_error_set(err, EINVAL, "invalid_field", field,
                               "field '%s': %s is not a regular file", field, path);
    if ((uint64_t)st.st_size > max_size)
        return agent_error_set(err, EFBIG, "invalid_field", field,
                               "field '%s': %s is %lld bytes, more than the %llu allowed", field,
                               path, (long long)st.st_size, (unsigned long long)max_size);
    if (!(out = strdup(real)))
        return agent_error_set(err, ENOMEM, "internal", NULL, "out of memory");
    *resolved = out;
    return 0;
}

int localfile_dirs_check(const char *dirs, struct agent_error *err)
{
    const char *s = dirs;
    char dir[PATH_MAX];

    if (!dirs || !*dirs)
        return 0;
    while (*s) {
        const char *e = strchrnul(s, ':');
        if (e == s || s[0] != '/')
            return agent_error_set(err, EINVAL, "invalid_config", LOCALFILE_SETTING,
                                   "%s: every entry must be an absolute directory (got '%.*s')",
                                   LOCALFILE_SETTING, (int)(e - s), s);
        if ((size_t)(e - s) >= sizeof(dir))
            return agent_error_set(err, ENAMETOOLONG, "invalid_config", LOCALFILE_SETTING,
                                   "%s: an entry is too long", LOCALFILE_SETTING);
        s = *e ? e + 1 : e;
        if (*e && !*s)
            return agent_error_set(err, EINVAL, "invalid_config", LOCALFILE_SETTING,
                                   "%s: empty entry at the end", LOCALFILE_SETTING);
    }
    return 0;
}
