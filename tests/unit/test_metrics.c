/* Unit tests: the agent's health registry: operation counters and duration
 * histograms (cumulative buckets, _sum, _count), label hygiene, the bound on
 * distinct series, image cache, bus and Placement families, and the whole
 * text checked by `promtool check metrics` when installed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "agent/bus.h"
#include "agent/metrics.h"
#include "common/util.h"

extern char **environ;

static char *render(const struct metrics *m)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);

    assert_non_null(f);
    assert_int_equal(metrics_render_prometheus(m, f), 0);
    fclose(f);
    return text;
}

/* `promtool check metrics` on text: its exit status, -1 if missing. */
static int promtool_check(const char *text, char *out, size_t out_size)
{
    const char *tool = "/usr/bin/promtool";
    char *argv[] = {(char *)"promtool", (char *)"check", (char *)"metrics", NULL};
    int in[2], res[2], status;
    posix_spawn_file_actions_t fa;
    pid_t pid;
    size_t got = 0, len = strlen(text);
    ssize_t r;

    if (access(tool, X_OK) != 0)
        return -1;
    assert_int_equal(pipe2(in, O_CLOEXEC), 0);
    assert_int_equal(pipe2(res, O_CLOEXEC), 0);
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, in[0], 0);
    posix_spawn_file_actions_adddup2(&fa, res[1], 1);
    posix_spawn_file_actions_adddup2(&fa, res[1], 2);
    assert_int_equal(posix_spawn(&pid, tool, &fa, NULL, argv, environ), 0);
    posix_spawn_file_actions_destroy(&fa);
    close(in[0]);
    close(res[1]);
    for (size_t off = 0; off < len; off += (size_t)r) {
        r = write(in[1], text + off, len - off);
        assert_true(r > 0);
    }
    close(in[1]);
    while (got + 1 < out_size && (r = read(res[0], out + got, out_size - got - 1)) > 0)
        got += (size_t)r;
    out[got] = '\0';
    close(res[0]);
    assert_int_equal(waitpid(pid, &status, 0), pid);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

static void check_promtool(const char *text)
{
    char out[4096];
    int rc = promtool_check(text, out, sizeof(out));

    if (rc < 0)
        print_message("SKIP promtool check: /usr/bin/promtool missing (Debian package prometheus)\n");
    else if (rc != 0)
        fail_msg("promtool check metrics failed (%d): %s\n%s", rc, out, text);
}

static void test_empty(void **state)
{
    struct metrics *m = NULL;
    char *text;

    (void)state;
    assert_int_equal(metrics_new(&m), 0);
    text = render(m);
    assert_non_null(strstr(text, "# TYPE compute_agent_operations_total counter\n"));
    assert_non_null(strstr(text, "# TYPE compute_agent_operation_duration_seconds histogram\n"));
    assert_non_null(strstr(text, "compute_agent_image_cache_hits_total 0\n"));
    assert_non_null(strstr(text, "compute_agent_bus_up 0\n"));
    assert_non_null(strstr(text, "compute_agent_libvirt_up 0\n"));
    assert_null(strstr(text, "compute_agent_placement_up 0")); /* no Placement: no series */
    check_promtool(text);
    free(text);
    metrics_set_up(m, true, 0);
    text = render(m);
    assert_non_null(strstr(text, "compute_agent_libvirt_up 1\n"));
    assert_non_null(strstr(text, "compute_agent_placement_up 0\n"));
    check_promtool(text);
    free(text);
    metrics_set_up(m, false, 1);
    text = render(m);
    assert_non_null(strstr(text, "compute_agent_libvirt_up 0\n"));
    assert_non_null(strstr(text, "compute_agent_placement_up 1\n"));
    free(text);
    assert_null(metrics_free(m));
    assert_null(metrics_free(NULL));
}

static void test_operations(void **state)
{
    struct metrics *m = NULL;
    char *text;

    (void)state;
    assert_int_equal(metrics_new(&m), 0);
    metrics_op_finished(m, "launch", "succeeded", 0.7);
    metrics_op_finished(m, "launch", "succeeded", 3.0);
    metrics_op_finished(m, "launch", "failed", 1000.0);
    metrics_op_finished(m, "stop", "succeeded", -1); /* clock oddity: counted as 0 */
    metrics_op_finished(m, "sto\"p\n{}", "succeeded", 0.01); /* hostile label */
    text = render(m);
    assert_non_null(strstr(text, "compute_agent_operations_total{type=\"launch\",result=\"succeeded\"} 2\n"));
    assert_non_null(strstr(text, "compute_agent_operations_total{type=\"launch\",result=\"failed\"} 1\n"));
    assert_non_null(strstr(text, "compute_agent_operation_duration_seconds_bucket{type=\"launch\",result=\"succeeded\",le=\"0.5\"} 0\n"));
    assert_non_null(strstr(text, "compute_agent_operation_duration_seconds_bucket{type=\"launch\",result=\"succeeded\",le=\"1\"} 1\n"));
    assert_non_null(strstr(text, "compute_agent_operation_duration_seconds_bucket{type=\"launch\",result=\"succeeded\",le=\"5\"} 2\n"));
    assert_non_null(strstr(text, "compute_agent_operation_duration_seconds_bucket{type=\"launch\",result=\"succeeded\",le=\"+Inf\"} 2\n"));
    assert_non_null(strstr(text, "compute_agent_operation_duration_seconds_sum{type=\"launch\",result=\"succeeded\"} 3.7\n"));
    assert_non_null(strstr(text, "compute_agent_operation_duration_seconds_count{type=\"launch\",result=\"succeeded\"} 2\n"));
    assert_non_null(strstr(text, "compute_agent_operation_duration_seconds_bucket{type=\"launch\",result=\"failed\",le=\"300\"} 0\n"));
    assert_non_null(strstr(text, "compute_agent_operation_duration_seconds_bucket{type=\"launch\",result=\"failed\",le=\"+Inf\"} 1\n"));
    assert_non_null(strstr(text, "compute_agent_operation_duration_seconds_bucket{type=\"stop\",result=\"succeeded\",le=\"0.05\"} 1\n"));
    assert_non_null(strstr(text, "type=\"sto_p___\""));
    check_promtool(text);
    free(text);

    /* A flood of distinct types ends in "other", never unbounded. */
    for (int i = 0; i < 200; i++) {
        char t[16];
        snprintf(t, sizeof(t), "t%d", i);
        metrics_op_finished(m, t, "succeeded", 1);
    }
    text = render(m);
    assert_non_null(strstr(text, "compute_agent_operations_total{type=\"other\",result=\"succeeded\"}"));
    assert_null(strstr(text, "type=\"t150\""));
    check_promtool(text);
    free(text);
    metrics_free(m);
}

static void test_cache_bus_placement(void **state)
{
    struct metrics *m = NULL;
    struct bus_stats bs;
    char *text;

    (void)state;
    assert_int_equal(metrics_new(&m), 0);
    metrics_imgcache_hit(m);
    metrics_imgcache_hit(m);
    metrics_imgcache_miss(m);
    metrics_imgcache_fetched(m, 1 << 20);
    metrics_imgcache_set_size(m, 5 << 20);
    memset(&bs, 0, sizeof(bs));
    bs.events.produced = 10;
    bs.events.delivered = 8;
    bs.events.lag_ms_sum = 80;
    bs.events.lag_ms_last = 12;
    bs.events.lag_ms_max = 30;
    bs.telemetry.dropped = 5;
    bs.client_errors = 2;
    bs.up = true;
    metrics_bus_update(m, &bs);
    metrics_bus_error(m, false);
    metrics_bus_error(m, true);
    metrics_placement_sync(m, "ok", 0.2);
    metrics_placement_sync(m, "conflict", 0.1);
    metrics_placement_sync(m, "ok", 0.3);
    text = render(m);
    assert_non_null(strstr(text, "compute_agent_image_cache_hits_total 2\n"));
    assert_non_null(strstr(text, "compute_agent_image_cache_misses_total 1\n"));
    assert_non_null(strstr(text, "compute_agent_image_cache_fetched_bytes_total 1048576\n"));
    assert_non_null(strstr(text, "compute_agent_image_cache_size_bytes 5242880\n"));
    assert_non_null(strstr(text, "compute_agent_bus_messages_delivered_total{stream=\"events\"} 8\n"));
    assert_non_null(strstr(text, "compute_agent_bus_messages_dropped_total{stream=\"telemetry\"} 5\n"));
    assert_non_null(strstr(text, "compute_agent_bus_delivery_lag_avg_seconds{stream=\"events\"} 0.01\n"));
    assert_non_null(strstr(text, "compute_agent_bus_delivery_lag_max_seconds{stream=\"events\"} 0.03\n"));
    assert_non_null(strstr(text, "compute_agent_bus_up 1\n"));
    assert_non_null(strstr(text, "compute_agent_bus_client_errors_total 2\n"));
    assert_non_null(strstr(text, "compute_agent_bus_fatal_errors_total 1\n"));
    assert_non_null(strstr(text, "compute_agent_placement_syncs_total{result=\"ok\"} 2\n"));
    assert_non_null(strstr(text, "compute_agent_placement_syncs_total{result=\"conflict\"} 1\n"));
    assert_non_null(strstr(text, "compute_agent_placement_sync_duration_seconds_count{result=\"ok\"} 2\n"));
    assert_null(strstr(text, "compute_agent_placement_last_success_timestamp_seconds 0\n"));
    check_promtool(text);
    free(text);
    metrics_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty),
        cmocka_unit_test(test_operations),
        cmocka_unit_test(test_cache_bus_placement),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
