/* mock_kafka: a standalone librdkafka mock cluster (one broker) for tests.
 *
 *   mock_kafka [-p PARTITIONS] BOOTSTRAP_FILE [TOPIC[:PARTITIONS]...]
 *
 * Starts librdkafka's mock cluster with one broker (id 1) on loopback,
 * creates the TOPICs given (PARTITIONS each, default -p, itself default 1;
 * other topics are created on first use as the mock does), then prints the
 * bootstrap servers ("127.0.0.1:PORT") as one line on stdout and writes the
 * same line to BOOTSTRAP_FILE (written to a temporary file and renamed, so a
 * reader never sees half of it).
 *
 * Signals (handled synchronously through a signalfd; they are blocked in
 * every thread, librdkafka's included, so none runs a handler):
 *   SIGUSR1  the broker goes down (rd_kafka_mock_broker_set_down): its
 *            connections are closed and new ones refused
 *   SIGUSR2  the broker comes back up (rd_kafka_mock_broker_set_up)
 *   SIGTERM, SIGINT  destroy the cluster and exit 0
 * Each change is confirmed by one line on stdout ("broker 1 down",
 * "broker 1 up", "exiting"), flushed at once, so a test can wait for it.
 * Exit status: 0 after SIGTERM/SIGINT, 2 on bad usage, 1 on failure.
 */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#define BROKER_ID 1

static void usage(FILE *f)
{
    fprintf(f, "usage: mock_kafka [-p PARTITIONS] BOOTSTRAP_FILE [TOPIC[:PARTITIONS]...]\n"
               "  SIGUSR1: broker down, SIGUSR2: broker up, SIGTERM: exit\n");
}

static int parse_count(const char *s, int *out)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < 1 || v > 10000)
        return -1;
    *out = (int)v;
    return 0;
}

/* Write line + "\n" to path through path.tmp and rename(). */
static int write_file(const char *path, const char *line)
{
    char tmp[PATH_MAX];
    FILE *f;
    int ok;

    if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= sizeof(tmp)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    f = fopen(tmp, "w");
    if (!f)
        return -1;
    ok = fprintf(f, "%s\n", line) >= 0;
    ok &= fflush(f) == 0;
    ok &= fsync(fileno(f)) == 0;
    ok &= fclose(f) == 0;
    if (!ok || rename(tmp, path) < 0) {
        int e = errno;
        unlink(tmp);
        errno = e;
        return -1;
    }
    return 0;
}

static void say(const char *line)
{
    printf("%s\n", line);
    fflush(stdout);
}

static void log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    (void)rk;
    /* The handle that owns the cluster has no bootstrap servers of its own
     * and says so; that is expected here. */
    if (strstr(buf, "bootstrap.servers"))
        return;
    fprintf(stderr, "mock_kafka: rdkafka %d %s: %s\n", level, fac, buf);
}

static int create_topic(rd_kafka_mock_cluster_t *mc, const char *arg, int def_parts)
{
    char name[256];
    const char *colon = strrchr(arg, ':');
    int parts = def_parts;
    size_t len = colon ? (size_t)(colon - arg) : strlen(arg);
    rd_kafka_resp_err_t e;

    if (colon && parse_count(colon + 1, &parts) < 0) {
        fprintf(stderr, "mock_kafka: bad partition count in '%s'\n", arg);
        return -1;
    }
    if (len == 0 || len >= sizeof(name)) {
        fprintf(stderr, "mock_kafka: bad topic name in '%s'\n", arg);
        return -1;
    }
    memcpy(name, arg, len);
    name[len] = '\0';
    e = rd_kafka_mock_topic_create(mc, name, parts, 1);
    if (e) {
        fprintf(stderr, "mock_kafka: cannot create topic %s: %s\n", name, rd_kafka_err2str(e));
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    char errstr[512];
    const char *bootstrap_file, *bs;
    rd_kafka_conf_t *conf;
    rd_kafka_t *rk = NULL;
    rd_kafka_mock_cluster_t *mc = NULL;
    sigset_t mask;
    int def_parts = 1, opt, sfd = -1, rc = 1;

    while ((opt = getopt(argc, argv, "hp:")) != -1) {
        switch (opt) {
        case 'p':
            if (parse_count(optarg, &def_parts) < 0) {
                fprintf(stderr, "mock_kafka: bad -p '%s'\n", optarg);
                return 2;
            }
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind >= argc) {
        usage(stderr);
        return 2;
    }
    bootstrap_file = argv[optind++];

    /* Block the signals before any thread exists: librdkafka's threads
     * inherit the mask, so the signals are only ever read from sfd. */
    sigemptyset(&mask);
    sigaddset(&mask, SIGUSR1);
    sigaddset(&mask, SIGUSR2);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0) {
        perror("mock_kafka: sigprocmask");
        return 1;
    }
    sfd = signalfd(-1, &mask, SFD_CLOEXEC);
    if (sfd < 0) {
        perror("mock_kafka: signalfd");
        return 1;
    }

    conf = rd_kafka_conf_new();
    rd_kafka_conf_set_log_cb(conf, log_cb);
    if (rd_kafka_conf_set(conf, "client.id", "mock_kafka", errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK) {
        fprintf(stderr, "mock_kafka: %s\n", errstr);
        rd_kafka_conf_destroy(conf);
        goto out;
    }
    rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (!rk) {
        fprintf(stderr, "mock_kafka: rd_kafka_new: %s\n", errstr);
        rd_kafka_conf_destroy(conf);
        goto out;
    }
    mc = rd_kafka_mock_cluster_new(rk, 1);
    if (!mc) {
        fprintf(stderr, "mock_kafka: cannot create the mock cluster\n");
        goto out;
    }
    for (int i = optind; i < argc; i++)
        if (create_topic(mc, argv[i], def_parts) < 0)
            goto out;
    bs = rd_kafka_mock_cluster_bootstraps(mc);
    if (!bs || !*bs) {
        fprintf(stderr, "mock_kafka: the mock cluster has no bootstrap address\n");
        goto out;
    }
    if (write_file(bootstrap_file, bs) < 0) {
        fprintf(stderr, "mock_kafka: cannot write %s: %s\n", bootstrap_file, strerror(errno));
        goto out;
    }
    say(bs);

    for (;;) {
        struct signalfd_siginfo si;
        ssize_t n = read(sfd, &si, sizeof(si));
        rd_kafka_resp_err_t e;

        if (n < 0 && errno == EINTR)
            continue;
        if (n != (ssize_t)sizeof(si)) {
            fprintf(stderr, "mock_kafka: signalfd read: %s\n", n < 0 ? strerror(errno) : "short read");
            goto out;
        }
        switch (si.ssi_signo) {
        case SIGUSR1:
            e = rd_kafka_mock_broker_set_down(mc, BROKER_ID);
            if (e)
                fprintf(stderr, "mock_kafka: broker down: %s\n", rd_kafka_err2str(e));
            else
                say("broker 1 down");
            break;
        case SIGUSR2:
            e = rd_kafka_mock_broker_set_up(mc, BROKER_ID);
            if (e)
                fprintf(stderr, "mock_kafka: broker up: %s\n", rd_kafka_err2str(e));
            else
                say("broker 1 up");
            break;
        case SIGTERM:
        case SIGINT:
            say("exiting");
            rc = 0;
            goto out;
        default:
            break;
        }
    }

out:
    if (mc)
        rd_kafka_mock_cluster_destroy(mc);
    if (rk)
        rd_kafka_destroy(rk);
    if (sfd >= 0)
        close(sfd);
    return rc;
}
