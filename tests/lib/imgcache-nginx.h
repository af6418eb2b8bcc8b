/* imgcache-nginx.h: a private nginx on loopback for the image-cache tests
 * and benchmark (tests/component/test_imgcache.c,
 * tests/bench/bench-imgcache.c). Header-only so both can include it.
 *
 * Starts Debian's nginx with its own config under a temporary directory,
 * non-daemon, as a child of the test; stops it by pid. The access log has
 * one line per request: "METHOD URI STATUS RANGE BYTES". Locations:
 *   /           the root directory (sendfile)
 *   /slow/      the same files at `slow_rate` bytes/s per connection
 *   /redir/X    302 to /X;  /redir-file: 302 to file:///etc/passwd
 *   /loop       redirects to itself forever
 *   /to-lo2/X   302 to http://127.0.0.2:PORT/X (nginx listens there too)
 *   /to-v6/X    302 to http://[::1]:PORT/X (nothing listens there) */
#ifndef CA_TESTS_IMGCACHE_NGINX_H
#define CA_TESTS_IMGCACHE_NGINX_H

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

struct test_nginx {
    char dir[64];         /* temp dir: conf, logs, root/ */
    char root[80];
    char access_log[96];
    char url[64];         /* http://127.0.0.1:PORT */
    int port;
    pid_t pid;
};

static inline const char *test_nginx_binary(void)
{
    static const char *const candidates[] = {"/usr/sbin/nginx", "/usr/bin/nginx"};
    for (size_t i = 0; i < sizeof(candidates) / sizeof(candidates[0]); i++)
        if (access(candidates[i], X_OK) == 0)
            return candidates[i];
    return NULL;
}

static inline int test_free_port(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET};
    socklen_t len = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), port = -1;

    if (fd < 0)
        return -1;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    close(fd);
    return port;
}

static inline bool test_port_answers(int port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    bool ok;

    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ok = fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
    if (fd >= 0)
        close(fd);
    return ok;
}

static inline void test_sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* Start nginx. slow_rate: bytes per second for /slow/. 0, or -errno with
 * why[] explaining (e.g. nginx not installed). */
static inline int test_nginx_start(struct test_nginx *n, long slow_rate, char *why, size_t whylen)
{
    const char *bin = test_nginx_binary();
    char conf[96];
    FILE *f;
    char *argv[8];
    int i;

    memset(n, 0, sizeof(*n));
    n->pid = -1;
    if (!bin) {
        snprintf(why, whylen, "nginx is not installed (apt-get install nginx)");
        return -ENOENT;
    }
    snprintf(n->dir, sizeof(n->dir), "/tmp/ca-nginx-XXXXXX");
    if (!mkdtemp(n->dir)) {
        snprintf(why, whylen, "mkdtemp: %s", strerror(errno));
        return -errno;
    }
    /* workers run as nobody when the master is root: let them read */
    chmod(n->dir, 0755);
    snprintf(n->root, sizeof(n->root), "%s/root", n->dir);
    mkdir(n->root, 0755);
    snprintf(n->access_log, sizeof(n->access_log), "%s/access.log", n->dir);
    n->port = test_free_port();
    if (n->port < 0) {
        snprintf(why, whylen, "no free port");
        return -EADDRINUSE;
    }
    snprintf(n->url, sizeof(n->url), "http://127.0.0.1:%d", n->port);
    snprintf(conf, sizeof(conf), "%s/nginx.conf", n->dir);
    f = fopen(conf, "w");
    if (!f) {
        snprintf(why, whylen, "writing %s: %s", conf, strerror(errno));
        return -errno;
    }
    fprintf(f,
            "worker_processes 1;\n"
            "pid %s/nginx.pid;\n"
            "error_log %s/error.log;\n"
            "events { worker_connections 512; }\n"
            "http {\n"
            "  log_format ca '$request_method $uri $status $http_range $body_bytes_sent';\n"
            "  access_log %s ca;\n"
            "  default_type application/octet-stream;\n"
            "  client_body_temp_path %s/tmp-body; proxy_temp_path %s/tmp-proxy;\n"
            "  fastcgi_temp_path %s/tmp-fcgi; uwsgi_temp_path %s/tmp-uwsgi;\n"
            "  scgi_temp_path %s/tmp-scgi;\n"
            "  sendfile on; tcp_nopush on; keepalive_timeout 5;\n"
            "  server {\n"
            "    listen 127.0.0.1:%d;\n"
            "    listen 127.0.0.2:%d;\n"
            "    root %s;\n"
            "    location /slow/ { alias %s/; limit_rate %ld; }\n"
            "    location /redir/ { rewrite ^/redir/(.*)$ /$1 redirect; }\n"
            "    location = /redir-file { return 302 file:///etc/passwd; }\n"
            "    location = /loop { return 302 /loop; }\n"
            "    location /to-lo2/ { rewrite ^/to-lo2/(.*)$ http://127.0.0.2:%d/$1 redirect; }\n"
            "    location /to-v6/ { rewrite ^/to-v6/(.*)$ http://[::1]:%d/$1 redirect; }\n"
            "  }\n"
            "}\n",
            n->dir, n->dir, n->access_log, n->dir, n->dir, n->dir, n->dir, n->dir, n->port,
            n->port, n->root, n->root, slow_rate > 0 ? slow_rate : 1048576L, n->port, n->port);
    fclose(f);
    i = 0;
    argv[i++] = (char *)bin;
    argv[i++] = "-c";
    argv[i++] = conf;
    argv[i++] = "-p";
    argv[i++] = n->dir;
    argv[i++] = "-g";
    argv[i++] = "daemon off;";
    argv[i] = NULL;
    if ((i = posix_spawn(&n->pid, bin, NULL, NULL, argv, environ)) != 0) {
        snprintf(why, whylen, "cannot run %s: %s", bin, strerror(i));
        n->pid = -1;
        return -i;
    }
    for (i = 0; i < 100; i++) { /* 5 s */
        int st;
        if (test_port_answers(n->port))
            return 0;
        if (waitpid(n->pid, &st, WNOHANG) == n->pid) {
            snprintf(why, whylen, "nginx exited at start (see %s/error.log)", n->dir);
            n->pid = -1;
            return -EIO;
        }
        test_sleep_ms(50);
    }
    snprintf(why, whylen, "nginx did not answer on port %d", n->port);
    return -ETIMEDOUT;
}

/* Stop our nginx (by pid) and remove its directory. */
static inline void test_nginx_stop(struct test_nginx *n)
{
    char *argv[] = {"rm", "-rf", n->dir, NULL};
    pid_t rm;
    int st;

    if (n->pid > 0) {
        kill(n->pid, SIGTERM);
        for (int i = 0; i < 100 && waitpid(n->pid, &st, WNOHANG) == 0; i++)
            test_sleep_ms(50);
        if (kill(n->pid, 0) == 0) {
            kill(n->pid, SIGKILL);
            waitpid(n->pid, &st, 0);
        }
        n->pid = -1;
    }
    if (n->dir[0] && posix_spawnp(&rm, "rm", NULL, NULL, argv, environ) == 0)
        waitpid(rm, &st, 0);
}

/* Lines of the access log whose METHOD and URI match (GET + uri). */
static inline int test_nginx_count(const struct test_nginx *n, const char *uri)
{
    FILE *f = fopen(n->access_log, "r");
    char line[1024], want[512];
    size_t wl;
    int count = 0;

    if (!f)
        return 0;
    snprintf(want, sizeof(want), "GET %s ", uri);
    wl = strlen(want);
    while (fgets(line, sizeof(line), f))
        if (strncmp(line, want, wl) == 0)
            count++;
    fclose(f);
    return count;
}

/* Does some access-log line for uri have this status and a Range header? */
static inline bool test_nginx_logged_range(const struct test_nginx *n, const char *uri,
                                           int status)
{
    FILE *f = fopen(n->access_log, "r");
    char line[1024], want[512];
    bool found = false;

    if (!f)
        return false;
    snprintf(want, sizeof(want), "GET %s %d bytes=", uri, status);
    while (fgets(line, sizeof(line), f))
        if (strncmp(line, want, strlen(want)) == 0)
            found = true;
    fclose(f);
    return found;
}

/* The pid of nginx's (single) worker: a child of the master. */
static inline pid_t test_nginx_worker(const struct test_nginx *n)
{
    DIR *d = opendir("/proc");
    struct dirent *de;
    pid_t found = -1;

    if (!d)
        return -1;
    while ((de = readdir(d))) {
        char path[300], buf[512], *p;
        FILE *f;
        int ppid;

        if (de->d_name[0] < '0' || de->d_name[0] > '9')
            continue;
        snprintf(path, sizeof(path), "/proc/%s/stat", de->d_name);
        f = fopen(path, "r");
        if (!f)
            continue;
        p = fgets(buf, sizeof(buf), f);
        fclose(f);
        if (!p || !(p = strrchr(buf, ')')))
            continue;
        if (sscanf(p + 1, " %*c %d", &ppid) == 1 && ppid == n->pid) {
            found = (pid_t)strtol(de->d_name, NULL, 10);
            break;
        }
    }
    closedir(d);
    return found;
}

/* Write len pseudo-random bytes (seeded) to root/name. */
static inline int test_nginx_put_random(const struct test_nginx *n, const char *name,
                                        size_t len, uint32_t seed)
{
    char path[PATH_MAX + 300];
    unsigned char buf[65536];
    uint64_t x = seed * 2654435761u + 1;
    int fd;

    snprintf(path, sizeof(path), "%s/%s", n->root, name);
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return -errno;
    while (len > 0) {
        size_t k = len < sizeof(buf) ? len : sizeof(buf);
        for (size_t i = 0; i < k; i += 8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            memcpy(buf + i, &x, k - i < 8 ? k - i : 8);
        }
        if (write(fd, buf, k) != (ssize_t)k) {
            close(fd);
            return -EIO;
        }
        len -= k;
    }
    close(fd);
    return 0;
}

#endif
