/* Unit tests: the SQLite store: instances, the operations journal, request
 * ids, allocation sums, and what survives a reopen. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent/store.h"

static char dir[] = "/tmp/ca-store-XXXXXX";
static char path[128];

static void make_instance(struct instance *i, const char *name, const char *state, int64_t vcpus)
{
    memset(i, 0, sizeof(*i));
    uuid_generate_str(i->uuid);
    ec2_id_generate(i->ec2_id);
    i->name = strdup(name);
    strscpy(i->state, state, sizeof(i->state));
    i->flavor = (struct flavor){vcpus, 256, 2};
    i->boot.kind = BOOT_KERNEL;
    i->boot.kernel = strdup("/k");
    i->boot.cmdline = strdup("console=ttyS0 <&>");
    i->created_ms = i->updated_ms = now_wall_ms();
}

static void test_instances(void **state)
{
    struct store *s;
    struct agent_error err;
    struct instance a, b, got;
    struct flavor sum;
    int64_t count;

    (void)state;
    assert_int_equal(store_open(path, false, &s, &err), 0);
    make_instance(&a, "web \"1\" <x>", "running", 2);
    make_instance(&b, "db", "terminated", 4);
    assert_int_equal(store_instance_insert(s, &a), 0);
    assert_int_equal(store_instance_insert(s, &b), 0);
    assert_int_equal(store_instance_insert(s, &a), -EEXIST);
    assert_int_equal(store_instance_get(s, a.ec2_id, &got), 0);
    assert_string_equal(got.uuid, a.uuid);
    assert_string_equal(got.name, "web \"1\" <x>");
    assert_string_equal(got.boot.cmdline, "console=ttyS0 <&>");
    instance_release(&got);
    assert_int_equal(store_instance_get(s, "i-00000000000000000", &got), -ENOENT);
    assert_int_equal(store_allocated(s, &sum, &count), 0);
    assert_int_equal(sum.vcpus, 2); /* terminated holds nothing */
    assert_int_equal(count, 1);
    strscpy(a.state, "stopped", sizeof(a.state));
    assert_int_equal(store_instance_update(s, &a), 0);
    store_free(s);
    /* reopen: what was committed is there */
    assert_int_equal(store_open(path, true, &s, &err), 0);
    assert_int_equal(store_instance_get(s, a.uuid, &got), 0);
    assert_string_equal(got.state, "stopped");
    instance_release(&got);
    assert_int_equal(store_purge_terminated(s, now_wall_ms() + 1), 1);
    assert_int_equal(store_instance_get(s, b.uuid, &got), -ENOENT);
    store_free(s);
    instance_release(&a);
    instance_release(&b);
}

static int count_cb(const struct op_record *op, void *opaque)
{
    (void)op;
    (*(int *)opaque)++;
    return 0;
}

static void test_operations(void **state)
{
    struct store *s;
    struct agent_error err;
    struct op_record op = {0}, dup = {0}, got;
    int n = 0;

    (void)state;
    assert_int_equal(store_open(path, false, &s, &err), 0);
    uuid_generate_str(op.id);
    strscpy(op.type, "launch", sizeof(op.type));
    uuid_generate_str(op.instance_uuid);
    op.request_id = strdup("req-1");
    strscpy(op.state, "running", sizeof(op.state));
    strscpy(op.step, "claimed", sizeof(op.step));
    assert_int_equal(store_begin(s), 0);
    assert_int_equal(store_op_insert(s, &op), 0);
    assert_int_equal(store_commit(s), 0);
    /* a second operation with the same request id is refused */
    dup = op;
    uuid_generate_str(dup.id);
    assert_int_equal(store_op_insert(s, &dup), -EEXIST);
    assert_int_equal(store_op_find_request(s, "req-1", &got), 0);
    assert_string_equal(got.id, op.id);
    op_record_release(&got);
    assert_int_equal(store_op_active_for(s, op.instance_uuid, &got), 0);
    op_record_release(&got);
    assert_int_equal(store_op_foreach_unfinished(s, count_cb, &n), 0);
    assert_int_equal(n, 1);
    strscpy(op.state, "succeeded", sizeof(op.state));
    assert_int_equal(store_op_update(s, &op), 0);
    assert_int_equal(store_op_active_for(s, op.instance_uuid, &got), -ENOENT);
    /* a rolled-back transaction leaves nothing */
    assert_int_equal(store_begin(s), 0);
    uuid_generate_str(dup.id);
    dup.request_id = NULL;
    assert_int_equal(store_op_insert(s, &dup), 0);
    store_rollback(s);
    assert_int_equal(store_op_get(s, dup.id, &got), -ENOENT);
    /* meta */
    assert_int_equal(store_meta_set(s, "provider_uuid", "abc"), 0);
    {
        char *v = NULL;
        assert_int_equal(store_meta_get(s, "provider_uuid", &v), 0);
        assert_string_equal(v, "abc");
        free(v);
        assert_int_equal(store_meta_get(s, "nothing", &v), -ENOENT);
    }
    op_record_release(&op);
    store_free(s);
}

static void test_open_error(void **state)
{
    struct store *s;
    struct agent_error err;

    (void)state;
    assert_true(store_open("/nonexistent-dir/x/agent.db", false, &s, &err) < 0);
    assert_string_equal(err.field, "agent.state_dir");
}

/* The store is owner-only even when the files were there before with 0644
 * (an older agent, an operator's copy) or the umask is 022. */
static void test_files_are_private(void **state)
{
    char p2[160], wal[170], shm[170];
    struct store *s;
    struct agent_error err;
    struct stat st;
    int fd;

    (void)state;
    snprintf(p2, sizeof(p2), "%s/private.db", dir);
    snprintf(wal, sizeof(wal), "%s-wal", p2);
    snprintf(shm, sizeof(shm), "%s-shm", p2);
    umask(022);
    /* fresh */
    assert_int_equal(store_open(p2, false, &s, &err), 0);
    assert_int_equal(stat(p2, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    store_free(s);
    /* left world-readable from before, with its -wal and -shm */
    assert_int_equal(chmod(p2, 0644), 0);
    fd = open(wal, O_CREAT | O_WRONLY, 0644);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(chmod(wal, 0644), 0);
    assert_int_equal(store_open(p2, false, &s, &err), 0);
    assert_int_equal(stat(p2, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(stat(wal, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    if (stat(shm, &st) == 0)
        assert_int_equal(st.st_mode & 0777, 0600);
    store_free(s);
    unlink(p2);
    unlink(wal);
    unlink(shm);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_instances),
        cmocka_unit_test(test_operations),
        cmocka_unit_test(test_open_error),
        cmocka_unit_test(test_files_are_private),
    };
    int r;

    if (!mkdtemp(dir))
        return 1;
    snprintf(path, sizeof(path), "%s/agent.db", dir);
    r = cmocka_run_group_tests(tests, NULL, NULL);
    unlink(path);
    snprintf(path, sizeof(path), "%s/agent.db-wal", dir);
    unlink(path);
    snprintf(path, sizeof(path), "%s/agent.db-shm", dir);
    unlink(path);
    rmdir(dir);
    return r;
}
