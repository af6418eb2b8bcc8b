/* Unit tests: the SQLite store: instances, the operations journal, request
 * ids, allocation sums, and what survives a reopen; the schema registry
 * (numbered migrations, refusal of newer files, nothing lost, a failed
 * migration changes nothing), the upgrade of a state directory written
 * before the registry (tests/fixtures/state-v0), the busy path and the WAL
 * checkpointer's thread. */
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

#include <jansson.h>
#include <time.h>

#include "agent/store.h"
#include "common/sqlite.h"

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

/* ---- schema registry ---- */

static sqlite3 *raw_open(const char *p)
{
    sqlite3 *db = NULL;

    assert_int_equal(sqlite3_open_v2(p, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL),
                     SQLITE_OK);
    return db;
}

static int64_t raw_int(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st;
    int64_t v;

    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

static void raw_exec(sqlite3 *db, const char *sql)
{
    char *msg = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);

    if (rc != SQLITE_OK)
        fail_msg("%s: %s", sql, msg);
}

static void remove_db(const char *p)
{
    char x[200];

    unlink(p);
    snprintf(x, sizeof(x), "%s-wal", p);
    unlink(x);
    snprintf(x, sizeof(x), "%s-shm", p);
    unlink(x);
}

/* v3: fill the new column from the old one (a migration in C). */
static int fill_b(sqlite3 *db)
{
    return sqlite3_exec(db, "UPDATE t1 SET b = 'x' || a", NULL, NULL, NULL) == SQLITE_OK ? 0 : -EIO;
}

static const struct sqlite_migration t_steps[] = {
    {.what = "t1", .sql = "CREATE TABLE t1 (a INTEGER); INSERT INTO t1 VALUES (1), (2), (3)"},
    {.what = "t1.b", .sql = "ALTER TABLE t1 ADD COLUMN b TEXT"},
    {.what = "fill t1.b", .run = fill_b},
};

static int migrate_one(sqlite3 *db, const char *module, const struct sqlite_migration *steps,
                       size_t n, struct agent_error *err)
{
    const struct sqlite_schema sc = {module, steps, n};
    const struct sqlite_schema *const list[] = {&sc};

    return sqlite_schema_migrate(db, list, 1, err);
}

static int version_of(sqlite3 *db, const char *module)
{
    int v = -1;

    assert_int_equal(sqlite_schema_version(db, module, &v), 0);
    return v;
}

/* Numbered migrations, one module at a time, each applied once. */
static void test_migrations(void **state)
{
    char p[160];
    struct agent_error err;
    sqlite3 *db;

    (void)state;
    snprintf(p, sizeof(p), "%s/migrate.db", dir);
    db = raw_open(p);
    assert_int_equal(raw_int(db, "PRAGMA user_version"), 0);
    assert_int_equal(version_of(db, "t"), 0);
    assert_int_equal(migrate_one(db, "t", t_steps, 1, &err), 0);
    assert_int_equal(raw_int(db, "PRAGMA user_version"), CA_SQLITE_LAYOUT);
    assert_int_equal(version_of(db, "t"), 1);
    /* a newer build appends two */
    assert_int_equal(migrate_one(db, "t", t_steps, 3, &err), 0);
    assert_int_equal(version_of(db, "t"), 3);
    assert_int_equal(raw_int(db, "SELECT COUNT(*) FROM t1 WHERE b = 'x' || a"), 3);
    /* applied once: running them again changes nothing */
    raw_exec(db, "UPDATE t1 SET b = 'kept'");
    assert_int_equal(migrate_one(db, "t", t_steps, 3, &err), 0);
    assert_int_equal(raw_int(db, "SELECT COUNT(*) FROM t1 WHERE b = 'kept'"), 3);
    /* another module in the same file has its own version */
    assert_int_equal(migrate_one(db, "other", t_steps + 1, 0, &err), 0);
    assert_int_equal(version_of(db, "other"), 0);
    assert_int_equal(version_of(db, "t"), 3);
    sqlite3_close(db);
    remove_db(p);
}

/* A failing or data-losing migration is rolled back whole and named. */
static void test_migration_failures(void **state)
{
    static const struct {
        const char *sql, *says;
        int rc;
    } bad[] = {
        {"ALTER TABLE t1 ADD COLUMN c TEXT; INSERT INTO nowhere VALUES (1)",
         "no such table: nowhere", -EIO},
        {"CREATE TABLE t2 (x); DROP TABLE t1", "drops table t1", -EPERM},
        {"ALTER TABLE t1 ADD COLUMN c TEXT; DELETE FROM t1 WHERE a = 2",
         "deletes 1 of the 3 rows of t1", -EPERM},
        {"ALTER TABLE t1 DROP COLUMN b", "drops column t1.b", -EPERM},
        {"CREATE TABLE t2 (x); COMMIT", "not authorized", -EIO}, /* it may not end its transaction */
    };
    struct sqlite_migration steps[4];
    struct agent_error err;
    char p[160];
    sqlite3 *db;

    (void)state;
    snprintf(p, sizeof(p), "%s/fail.db", dir);
    db = raw_open(p);
    assert_int_equal(migrate_one(db, "t", t_steps, 3, &err), 0);
    memcpy(steps, t_steps, sizeof(t_steps));
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        steps[3] = (struct sqlite_migration){.what = "bad", .sql = bad[i].sql};
        assert_int_equal(migrate_one(db, "t", steps, 4, &err), bad[i].rc);
        if (!strstr(err.message, bad[i].says) || !strstr(err.message, p) ||
            !strstr(err.message, "the t tables from version 3 to 4 (bad)") ||
            !strstr(err.message, "left at version 3"))
            fail_msg("step %zu: %s", i, err.message);
        assert_string_equal(err.code, "store");
        /* the file is as it was */
        assert_true(sqlite3_get_autocommit(db));
        assert_int_equal(version_of(db, "t"), 3);
        assert_int_equal(raw_int(db, "SELECT COUNT(*) FROM t1"), 3);
        assert_int_equal(raw_int(db, "SELECT COUNT(*) FROM pragma_table_info('t1')"), 2);
        assert_int_equal(raw_int(db, "SELECT COUNT(*) FROM sqlite_master WHERE name='t2'"), 0);
    }
    /* a table rebuilt under its name with its columns and rows is no loss */
    steps[3] = (struct sqlite_migration){
        .what = "rebuild t1",
        .sql = "CREATE TABLE t1_new (a INTEGER NOT NULL, b TEXT, c TEXT DEFAULT '');"
               "INSERT INTO t1_new (a, b) SELECT a, b FROM t1; DROP TABLE t1;"
               "ALTER TABLE t1_new RENAME TO t1"};
    assert_int_equal(migrate_one(db, "t", steps, 4, &err), 0);
    assert_int_equal(version_of(db, "t"), 4);
    assert_int_equal(raw_int(db, "SELECT COUNT(*) FROM t1 WHERE c = ''"), 3);
    sqlite3_close(db);
    remove_db(p);
}

/* A file from a newer build is refused before anything is written, naming
 * the file and both versions. */
static void test_refuse_newer(void **state)
{
    char p[160];
    struct store *s;
    struct agent_error err;
    sqlite3 *db;

    (void)state;
    snprintf(p, sizeof(p), "%s/newer.db", dir);
    assert_int_equal(store_open(p, false, &s, &err), 0);
    store_free(s);
    /* the layout */
    db = raw_open(p);
    raw_exec(db, "PRAGMA user_version = 7");
    sqlite3_close(db);
    assert_int_equal(store_open(p, false, &s, &err), -EPROTO);
    if (!strstr(err.message, p) ||
        !strstr(err.message, "layout version 7 is newer than this build's (1)"))
        fail_msg("%s", err.message);
    assert_string_equal(err.field, "agent.state_dir");
    db = raw_open(p);
    assert_int_equal(raw_int(db, "PRAGMA user_version"), 7);
    /* one module */
    raw_exec(db, "PRAGMA user_version = 1;"
                 "UPDATE schema_versions SET version = 9 WHERE module = 'outbox'");
    sqlite3_close(db);
    assert_int_equal(store_open(p, false, &s, &err), -EPROTO);
    if (!strstr(err.message, p) ||
        !strstr(err.message, "the outbox tables are at schema version 9, newer than this "
                             "build's (2)"))
        fail_msg("%s", err.message);
    db = raw_open(p);
    assert_int_equal(version_of(db, "outbox"), 9);
    sqlite3_close(db);
    remove_db(p);
}

/* ---- the fixture: a state directory written before the registry ---- */

static void copy_file(const char *from, const char *to)
{
    char buf[65536];
    ssize_t n;
    int in = open(from, O_RDONLY), out;

    if (in < 0)
        fail_msg("cannot open %s (run from the source tree or set CA_SRCDIR)", from);
    out = open(to, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(out >= 0);
    while ((n = read(in, buf, sizeof(buf))) > 0)
        assert_int_equal(write(out, buf, (size_t)n), n);
    assert_int_equal(n, 0);
    close(in);
    close(out);
}

/* Every row of table as rows.json has it, column by column. */
static void check_table(sqlite3 *db, const char *table, json_t *rows)
{
    char sql[128];
    sqlite3_stmt *st;
    size_t i = 0;

    snprintf(sql, sizeof(sql), "SELECT * FROM %s ORDER BY rowid", table);
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    while (sqlite3_step(st) == SQLITE_ROW) {
        json_t *want = json_array_get(rows, i++);
        const char *col;
        json_t *v;

        if (!want)
            fail_msg("%s: more rows than before", table);
        json_object_foreach(want, col, v) {
            int c;
            for (c = 0; c < sqlite3_column_count(st); c++)
                if (!strcmp(sqlite3_column_name(st, c), col))
                    break;
            if (c == sqlite3_column_count(st))
                fail_msg("%s.%s is gone", table, col);
            if (json_is_null(v))
                assert_int_equal(sqlite3_column_type(st, c), SQLITE_NULL);
            else if (json_is_integer(v))
                assert_true(sqlite3_column_type(st, c) == SQLITE_INTEGER &&
                            sqlite3_column_int64(st, c) == json_integer_value(v));
            else if (!json_is_string(v) || sqlite3_column_type(st, c) != SQLITE_TEXT ||
                     strcmp((const char *)sqlite3_column_text(st, c), json_string_value(v)))
                fail_msg("%s row %zu: %s changed", table, i, col);
        }
    }
    sqlite3_finalize(st);
    if (i != json_array_size(rows))
        fail_msg("%s: %zu rows, %zu before", table, i, json_array_size(rows));
}

static void check_versions_current(sqlite3 *db)
{
    size_t n;
    const struct sqlite_schema *const *sc = store_schemas(&n);

    assert_int_equal(raw_int(db, "PRAGMA user_version"), CA_SQLITE_LAYOUT);
    assert_int_equal(n, 3);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(version_of(db, sc[i]->module), (int)sc[i]->n_steps);
}

static int count_inst(const struct instance *inst, void *opaque)
{
    (void)inst;
    (*(int *)opaque)++;
    return 0;
}

static void test_fixture_upgrade(void **state)
{
    const char *src = getenv("CA_SRCDIR") ? getenv("CA_SRCDIR") : ".";
    char from[512], p[160];
    struct store *s;
    struct agent_error err;
    json_error_t jerr;
    json_t *rows, *v;
    const char *table;
    int n = 0;

    (void)state;
    snprintf(from, sizeof(from), "%s/tests/fixtures/state-v0/rows.json", src);
    if (!(rows = json_load_file(from, 0, &jerr)))
        fail_msg("%s: %s", from, jerr.text);
    assert_int_equal(json_integer_value(json_object_get(rows, "user_version")), 0);
    snprintf(from, sizeof(from), "%s/tests/fixtures/state-v0/agent.db", src);
    snprintf(p, sizeof(p), "%s/fixture.db", dir);
    copy_file(from, p);
    for (int round = 0; round < 2; round++) { /* the upgrade, then a plain reopen */
        sqlite3 *db;
        if (store_open(p, false, &s, &err) < 0)
            fail_msg("%s", err.message);
        db = store_db(s);
        check_versions_current(db);
        json_object_foreach(rows, table, v) {
            if (json_is_array(v))
                check_table(db, table, v);
        }
        store_free(s);
    }
    /* and the store reads them */
    assert_int_equal(store_open(p, false, &s, &err), 0);
    assert_int_equal(store_instance_foreach(s, true, count_inst, &n), 0);
    assert_int_equal(n, (int)json_array_size(json_object_get(rows, "instances")));
    {
        size_t i;
        json_t *r;
        json_array_foreach(json_object_get(rows, "operations"), i, r) {
            struct op_record op;
            assert_int_equal(store_op_get(s, json_string_value(json_object_get(r, "id")), &op), 0);
            assert_string_equal(op.state, json_string_value(json_object_get(r, "state")));
            op_record_release(&op);
        }
        json_array_foreach(json_object_get(rows, "instances"), i, r) {
            struct instance inst;
            const char *ec2 = json_string_value(json_object_get(r, "ec2_id"));
            assert_int_equal(store_instance_get(s, ec2, &inst), 0);
            assert_string_equal(inst.name, json_string_value(json_object_get(r, "name")));
            instance_release(&inst);
        }
    }
    {
        char *val = NULL;
        assert_int_equal(store_meta_get(s, "host.disabled", &val), 0);
        assert_string_equal(val, "0");
        free(val);
    }
    store_free(s);
    json_decref(rows);
    remove_db(p);
}

/* ---- the loop is never frozen ---- */

static int64_t mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Another connection holds the write lock: writes answer -EBUSY at once
 * (not after seconds), reads go on, store_begin() opens nothing, and all is
 * well once the lock is gone. */
static void test_busy(void **state)
{
    char p[160];
    struct store *s;
    struct agent_error err;
    struct instance a, got;
    sqlite3 *other;
    int64_t t0;

    (void)state;
    snprintf(p, sizeof(p), "%s/busy.db", dir);
    assert_int_equal(store_open(p, false, &s, &err), 0);
    make_instance(&a, "busy", "running", 1);
    assert_int_equal(store_instance_insert(s, &a), 0);
    other = raw_open(p);
    raw_exec(other, "BEGIN IMMEDIATE");
    t0 = mono_ms();
    assert_int_equal(store_begin(s), -EBUSY);
    store_rollback(s); /* as callers do after a failed begin: nothing */
    assert_int_equal(store_instance_update(s, &a), -EBUSY);
    assert_int_equal(store_meta_set(s, "k", "v"), -EBUSY);
    assert_true(mono_ms() - t0 < 20 * STORE_BUSY_TIMEOUT_MS);
    assert_int_equal(store_instance_get(s, a.uuid, &got), 0); /* WAL: readers do not wait */
    instance_release(&got);
    assert_int_equal(store_error(-EBUSY, &err, "cannot record the launch"), -EBUSY);
    assert_string_equal(err.code, "unavailable");
    assert_string_equal(err.message, "store busy: cannot record the launch; retry");
    assert_int_equal(store_error(-EIO, &err, "cannot record the launch"), -EIO);
    assert_string_equal(err.code, "internal");
    raw_exec(other, "ROLLBACK");
    /* a real transaction again: its commit is seen by the other connection */
    assert_int_equal(store_begin(s), 0);
    assert_int_equal(store_meta_set(s, "k", "v"), 0);
    assert_int_equal(store_commit(s), 0);
    assert_int_equal(raw_int(other, "SELECT COUNT(*) FROM meta WHERE key='k'"), 1);
    sqlite3_close(other);
    store_free(s);
    instance_release(&a);
    remove_db(p);
}

/* The loop's connection never checkpoints; the thread does, once the WAL
 * passes its threshold, while the loop goes on writing. */
static void test_checkpoints(void **state)
{
    char p[160];
    struct store *s;
    struct agent_error err;
    char *big = malloc(64 * 1024 + 1);
    int64_t deadline;

    (void)state;
    snprintf(p, sizeof(p), "%s/ckpt.db", dir);
    assert_non_null(big);
    memset(big, 'u', 64 * 1024);
    big[64 * 1024] = '\0';
    assert_int_equal(store_open(p, false, &s, &err), 0);
    assert_int_equal(raw_int(store_db(s), "PRAGMA wal_autocheckpoint"), 0);
    assert_int_equal(store_checkpoints(s), 0);
    for (int i = 0; i < 80; i++) { /* ~5 MiB: past 1000 pages */
        struct instance a;
        make_instance(&a, "ckpt", "running", 1);
        a.user_data = strdup(big);
        assert_int_equal(store_instance_insert(s, &a), 0);
        instance_release(&a);
    }
    deadline = mono_ms() + 10000;
    while (store_checkpoints(s) == 0 && mono_ms() < deadline)
        usleep(10 * 1000);
    assert_true(store_checkpoints(s) >= 1);
    assert_int_equal(store_instance_foreach(s, true, count_inst, &(int){0}), 0);
    store_free(s);
    free(big);
    remove_db(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_instances),
        cmocka_unit_test(test_operations),
        cmocka_unit_test(test_open_error),
        cmocka_unit_test(test_files_are_private),
        cmocka_unit_test(test_migrations),
        cmocka_unit_test(test_migration_failures),
        cmocka_unit_test(test_refuse_newer),
        cmocka_unit_test(test_fixture_upgrade),
        cmocka_unit_test(test_busy),
        cmocka_unit_test(test_checkpoints),
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
