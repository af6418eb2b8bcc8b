/* listen.c: the API's listening sockets: the unix socket (a stale one left
 * by a crashed agent is replaced, anything else at its path is an error),
 * TCP from api.listen and telemetry.metrics_listen (HOST:PORT, [v6]:PORT),
 * and how many connections each listener may hold. */
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "agent/api/api-internal.h"

/* Remove what is at api.socket only if it is a socket nobody serves on (a
 * previous agent's, left by a crash); anything else stays and is an error. */
static int unix_remove_stale(const struct sockaddr_un *sa, struct agent_error *err)
{
    struct stat st;
    int fd, r;

    if (lstat(sa->sun_path, &st) < 0)
        return errno == ENOENT ? 0
                               : agent_error_set(err, errno, "invalid_config", "api.socket", "cannot stat %s: %s",
                                                 sa->sun_path, strerror(errno));
    if (!S_ISSOCK(st.st_mode))
        return agent_error_set(err, EEXIST, "invalid_config", "api.socket",
                               "%s exists and is not a socket; not removing it", sa->sun_path);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return agent_error_set(err, errno, "internal", "api.socket", "socket: %s", strerror(errno));
    r = connect(fd, (const struct sockaddr *)sa, sizeof(*sa)) == 0 ? 0 : errno;
    close(fd);
    if (r != ECONNREFUSED && r != ENOENT)
        return agent_error_set(err, EADDRINUSE, "invalid_config", "api.socket",
                               "%s is in use by another process; not removing it", sa->sun_path);
    if (unlink(sa->sun_path) < 0 && errno != ENOENT)
        return agent_error_set(err, errno, "invalid_config", "api.socket", "cannot remove the stale %s: %s",
                               sa->sun_path, strerror(errno));
    return 0;
}

int api_unix_listen(struct api *api, const char *path, struct agent_error *err)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    struct stat st;
    int fd, r;

    if (strscpy(sa.sun_path, path, sizeof(sa.sun_path)) < 0)
        return agent_error_set(err, ENAMETOOLONG, "invalid_config", "api.socket",
                               "socket path too long: %s", path);
    if ((r = unix_remove_stale(&sa, err)) < 0)
        return r;
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return agent_error_set(err, errno, "invalid_config", "api.socket", "socket: %s", strerror(errno));
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        int e = errno;
        close(fd);
        return agent_error_set(err, e, "invalid_config", "api.socket", "cannot listen on %s: %s", path,
                               strerror(e));
    }
    if (lstat(path, &st) == 0) {
        api->socket_bound = true;
        api->socket_dev = st.st_dev;
        api->socket_ino = st.st_ino;
    }
    if (chmod(path, 0660) < 0 || listen(fd, 512) < 0) {
        int e = errno;
        close(fd);
        return agent_error_set(err, e, "invalid_config", "api.socket", "cannot listen on %s: %s", path,
                               strerror(e));
    }
    return fd;
}

int api_tcp_listen(const char *hostport, struct agent_error *err)
{
    char host[256];
    const char *colon = strrchr(hostport, ':');
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
    struct addrinfo *res = NULL;
    int fd = -1, one = 1, rc;

    if (!colon || colon == hostport || (size_t)(colon - hostport) >= sizeof(host))
        return agent_error_set(err, EINVAL, "invalid_config", "api.listen",
                               "api.listen '%s' must be HOST:PORT", hostport);
    memcpy(host, hostport, (size_t)(colon - hostport));
    host[colon - hostport] = '\0';
    if (host[0] == '[' && host[strlen(host) - 1] == ']') {
        memmove(host, host + 1, strlen(host));
        host[strlen(host) - 1] = '\0';
    }
    rc = getaddrinfo(host, colon + 1, &hints, &res);
    if (rc != 0)
        return agent_error_set(err, EINVAL, "invalid_config", "api.listen", "api.listen '%s': %s",
                               hostport, gai_strerror(rc));
    fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd >= 0) {
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, 512) < 0) {
            rc = errno;
            close(fd);
            fd = -1;
            errno = rc;
        }
    }
    freeaddrinfo(res);
    if (fd < 0)
        return agent_error_set(err, errno, "invalid_config", "api.listen", "cannot listen on %s: %s",
                               hostport, strerror(errno));
    return fd;
}

/* Connections at once per listener: api.max_connections, within the
 * open-file limit (kept clear of what the rest of the agent needs). */
unsigned api_connection_limit(const struct api_config *cfg, unsigned listeners)
{
    struct rlimit rl;
    uint64_t limit = (uint64_t)cfg->max_connections, budget;

    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
        budget = rl.rlim_cur > 512 ? (rl.rlim_cur - 256) / listeners : 64;
        if (limit > budget)
            limit = budget;
    }
    return (unsigned)limit;
}
