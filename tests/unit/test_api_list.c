/* Unit tests for GET /v1/instances?state=S&name=N (agent/api/instances.c):
 * the filters each and together, exact matches only, and 400 naming the
 * query argument for a bad value. Instances are put in agent-fixture.h's
 * in-memory store directly; the request goes through api_route() (the query
 * as api_route() takes it: not decoded). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/api/api-internal.h"
#include "agent/store.h"
#include "common/util.h"
#include "tests/fuzz/agent-fixture.h"

static void put(const char *name, const char *state)
{
    struct instance i;

    memset(&i, 0, sizeof(i));
    uuid_generate_str(i.uuid);
    ec2_id_generate(i.ec2_id);
    i.name = strdup(name);
    strscpy(i.state, state, sizeof(i.state));
    i.flavor = (struct flavor){1, 128, 0};
    i.boot.kind = BOOT_KERNEL;
    i.boot.kernel = strdup("/k");
    i.created_ms = i.updated_ms = now_wall_ms();
    assert_int_equal(store_instance_insert(fixture_get()->store, &i), 0);
    instance_release(&i);
}

static int cmp_item(const void *a, const void *b)
{
    return strcmp(a, b);
}

/* The names listed for url, sorted, joined by ','; or the error field for a 400. */
static char *names(const char *url, int want_status)
{
    struct fixture *fx = fixture_get();
    json_t *reply = NULL, *inst;
    char *out = calloc(1, 1024);
    size_t i;
    int st = api_route(&fx->api_deps, &fx->api_cfg, "GET", url, NULL, 0, NULL, &reply);

    assert_non_null(out);
    if (st != want_status)
        fail_msg("GET %s: %d, expected %d", url, st, want_status);
    if (st != 200) {
        snprintf(out, 1024, "%s", json_string_value(json_object_get(json_object_get(reply, "error"), "field")));
        json_decref(reply);
        return out;
    }
    {
        char items[16][64];
        size_t n = 0;

        json_array_foreach(json_object_get(reply, "instances"), i, inst) {
            assert_true(n < 16);
            snprintf(items[n++], sizeof(items[0]), "%s:%s", json_string_value(json_object_get(inst, "name")),
                     json_string_value(json_object_get(inst, "state")));
        }
        qsort(items, n, sizeof(items[0]), cmp_item);
        for (i = 0; i < n; i++) {
            strcat(out, i ? "," : "");
            strcat(out, items[i]);
        }
    }
    json_decref(reply);
    return out;
}

static void check(const char *url, int status, const char *want)
{
    char *got = names(url, status);

    if (strcmp(got, want))
        fail_msg("GET %s: '%s', expected '%s'", url, got, want);
    free(got);
}

static void test_filters(void **state)
{
    (void)state;
    put("web", "running");
    put("web", "stopped");
    put("db", "running");
    put("old", "terminated");

    check("/v1/instances?state=stopped", 200, "web:stopped");
    check("/v1/instances?name=db", 200, "db:running");
    check("/v1/instances?state=running&name=web", 200, "web:running");
    check("/v1/instances?state=running", 200, "db:running,web:running");
    check("/v1/instances?name=web&state=error", 200, "");
    check("/v1/instances?name=we", 200, "");            /* exact, not a prefix */
    check("/v1/instances?state=terminated", 200, "old:terminated");
    check("/v1/instances?other=1", 200, "db:running,old:terminated,web:running,web:stopped");
}

static void test_bad_values(void **state)
{
    char url[400];

    (void)state;
    check("/v1/instances?state=up", 400, "state");
    check("/v1/instances?state=", 400, "state");
    check("/v1/instances?state=RUNNING", 400, "state");
    check("/v1/instances?name=", 400, "name");
    check("/v1/instances?state", 400, "state"); /* "?state" alone: no value */
    check("/v1/instances?name&state=running", 400, "name");
    snprintf(url, sizeof(url), "/v1/instances?name=%0300d", 0);
    check(url, 400, "name");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_filters),
        cmocka_unit_test(test_bad_values),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);

    fixture_free();
    return rc;
}
