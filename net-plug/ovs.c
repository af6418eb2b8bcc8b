/* ovs.c: Open vSwitch networks through ovs-vsctl, run by argv (posix_spawn),
 * never through a shell, with its own --timeout so that a call is bounded.
 * Only where ovs-vsctl is installed; otherwise an 'ovs' plug fails with
 * -ENOTSUP and says so. Called with np->lock held. */
#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "common/util.h"
#include "net-plug/netplug-internal.h"

extern char **environ;

static bool executable(const char *path)
{
    struct stat st;

    return stat(path, &st) == 0 && S_ISREG(st.st_mode) && access(path, X_OK) == 0;
}

int np_ovs_find(struct netplug *np, const char *configured)
{
    const char *path = getenv("PATH");
    char cand[256];

    np->ovs_vsctl[0] = '\0';
    if (configured) {
        if (strchr(configured, '/')) {
            if (executable(configured))
                strscpy(np->ovs_vsctl, configured, sizeof(np->ovs_vsctl));
            return np->ovs_vsctl[0] ? 0 : -ENOENT;
        }
    } else {
        configured = "ovs-vsctl";
    }
    if (!path || !*path)
        path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    while (*path) {
        size_t n = strcspn(path, ":");
        if (n > 0 && snprintf(cand, sizeof(cand), "%.*s/%s", (int)n, path, configured) < (int)sizeof(cand) &&
            executable(cand)) {
            strscpy(np->ovs_vsctl, cand, sizeof(np->ovs_vsctl));
            return 0;
        }
        path += n;
        if (*path == ':')
            path++;
    }
    return -ENOENT;
}

/* argv[0] is replaced by the resolved path; stderr's first line goes in err. */
int np_ovs_run(struct netplug *np, const char *const *argv, struct np_error *err)
{
    posix_spawn_file_actions_t fa;
    char *args[32];
    char out[256] = "";
    int pipefd[2], status, r;
    size_t n = 0, len = 0;
    pid_t pid;

    if (!np->ovs_vsctl[0])
        return np_fail(err, ENOTSUP, "ovs: ovs-vsctl is not installed");
    args[n++] = np->ovs_vsctl;
    for (size_t i = 1; argv[i] && n < ARRAY_SIZE(args) - 1; i++)
        args[n++] = (char *)argv[i];
    args[n] = NULL;
    if (pipe2(pipefd, O_CLOEXEC) < 0)
        return np_fail(err, errno, "ovs: pipe: %s", strerror(errno));
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, pipefd[1], 1);
    posix_spawn_file_actions_adddup2(&fa, pipefd[1], 2);
    r = posix_spawn(&pid, np->ovs_vsctl, &fa, NULL, args, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(pipefd[1]);
    if (r != 0) {
        close(pipefd[0]);
        return np_fail(err, r, "ovs: cannot run %s: %s", np->ovs_vsctl, strerror(r));
    }
    for (;;) {
        ssize_t k = read(pipefd[0], out + len, sizeof(out) - 1 - len);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            break;
        len += (size_t)k;
        if (len >= sizeof(out) - 1) {
            char sink[512];
            while (read(pipefd[0], sink, sizeof(sink)) > 0)
                ;
            break;
        }
    }
    out[len] = '\0';
    close(pipefd[0]);
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            return np_fail(err, errno, "ovs: waitpid: %s", strerror(errno));
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        return 0;
    out[strcspn(out, "\n")] = '\0';
    return np_fail(err, EIO, "ovs: %s %s failed: %s", argv[0], argv[1] ? argv[1] : "", out);
}
