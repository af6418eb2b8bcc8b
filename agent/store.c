/* store.c: see store.h. Prepared statements are kept for the life of the
 * store; instance boot sources (and, since issue 10, their extra launch data)
 * are stored as JSON text. Over 900 lines: the instances, their ports and the
 * IP allocator, the journal and the meta table are one set of statements on
 * one handle, with the migrations that make them; the ports cannot move to a
 * file of their own without a cycle (reading an instance reads its ports).
 * Sections: schema, open/close, transactions, ports, instances, operations,
 * meta. */
#include "agent/store.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <stdlib.h>
#include <string.h>

#include "common/sqlite.h"
#include "image-cache/imgcache.h"

enum stmt_id {
    ST_INST_INSERT,
    ST_INST_UPDATE,
    ST_INST_GET,
    ST_INST_ALL,
    ST_INST_LIVE,
    ST_ALLOCATED,
    ST_OP_INSERT,
    ST_OP_UPDATE,
    ST_OP_GET,
    ST_OP_BY_REQUEST,
    ST_OP_ACTIVE,
    ST_OP_UNFINISHED,
    ST_META_GET,
    ST_META_SET,
    ST_PORT_INSERT,
    ST_PORT_OF,
    ST_PORT_IPS,
    ST_PORT_BY_MAC,
    ST_PORT_BY_IP,
    ST_PORT_STATE,
    ST_PORT_DELETE,
    ST_PORT_LIVE,
    ST_COUNT
};

/* The statements below are built by joining column lists; clang's check for
 * a missing comma between array elements does not apply to them. */
#ifdef __clang__
#pragma clang diagnostic ignored "-Wstring-concatenation"
#endif

#define INST_COLS                                                                      \
    "uuid, ec2_id, name, state, task_state, vcpus, memory_mb, disk_gb, instance_type, " \
    "boot, user_data, console_log, disk_path, fault, created_ms, updated_ms, extra"
#define PORT_COLS "port_id, instance_uuid, idx, network, mac, ip, device, mtu, state"
#define OP_COLS                                                                        \
    "id, type, instance_uuid, request_id, state, step, error_code, error_message, "   \
    "created_ms, updated_ms, result"

/* The old flavor's figure of a pending resize, else 0. */
#define RZ(f)                                                                                  \
    "CASE WHEN json_valid(extra) AND json_extract(extra, '$.resize.pending') "                 \
    "THEN COALESCE(json_extract(extra, '$.resize.old_flavor." f "'), 0) ELSE 0 END"

static const char *const stmt_sql[ST_COUNT] = {
    [ST_INST_INSERT] = "INSERT INTO instances (" INST_COLS ") VALUES "
                       "(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16,?17)",
    [ST_INST_UPDATE] = "UPDATE instances SET ec2_id=?2, name=?3, state=?4, task_state=?5, "
                       "vcpus=?6, memory_mb=?7, disk_gb=?8, instance_type=?9, boot=?10, "
                       "user_data=?11, console_log=?12, disk_path=?13, fault=?14, "
                       "created_ms=?15, updated_ms=?16, extra=?17 WHERE uuid=?1",
    [ST_INST_GET] = "SELECT " INST_COLS " FROM instances WHERE uuid=?1 OR ec2_id=?1",
    [ST_INST_ALL] = "SELECT " INST_COLS " FROM instances ORDER BY created_ms, uuid",
    [ST_INST_LIVE] = "SELECT " INST_COLS " FROM instances WHERE state NOT IN ('terminated','migrated') "
                     "ORDER BY created_ms, uuid",
    /* a pending resize claims the larger of its two flavors, class by class
     * (issue 12: extra's $.resize, agent/instance.c) */
    [ST_ALLOCATED] = "SELECT COALESCE(SUM(MAX(vcpus, " RZ("vcpus") ")),0), "
                     "COALESCE(SUM(MAX(memory_mb, " RZ("memory_mb") ")),0), "
                     "COALESCE(SUM(MAX(disk_gb, " RZ("disk_gb") ")),0), COUNT(*) FROM instances "
                     "WHERE state NOT IN ('terminated','error','migrated')",
    [ST_OP_INSERT] = "INSERT INTO operations (" OP_COLS ") VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11)",
    [ST_OP_UPDATE] = "UPDATE operations SET type=?2, instance_uuid=?3, request_id=?4, state=?5, "
                     "step=?6, error_code=?7, error_message=?8, created_ms=?9, updated_ms=?10, "
                     "result=?11 WHERE id=?1",
    [ST_OP_GET] = "SELECT " OP_COLS " FROM operations WHERE id=?1",
    [ST_OP_BY_REQUEST] = "SELECT " OP_COLS " FROM operations WHERE request_id=?1",
    [ST_OP_ACTIVE] = "SELECT " OP_COLS " FROM operations WHERE instance_uuid=?1 AND "
                     "state IN ('pending','running') ORDER BY created_ms LIMIT 1",
    [ST_OP_UNFINISHED] = "SELECT " OP_COLS " FROM operations WHERE state IN ('pending','running') "
                         "ORDER BY created_ms, id",
    [ST_META_GET] = "SELECT value FROM meta WHERE key=?1",
    [ST_META_SET] = "INSERT INTO meta (key, value) VALUES (?1, ?2) "
                    "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
    [ST_PORT_INSERT] = "INSERT INTO ports (" PORT_COLS ") VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9)",
    [ST_PORT_OF] = "SELECT " PORT_COLS " FROM ports WHERE instance_uuid=?1 ORDER BY idx",
    [ST_PORT_IPS] = "SELECT ip FROM ports WHERE network=?1 AND ip IS NOT NULL",
    [ST_PORT_BY_MAC] = "SELECT instance_uuid FROM ports WHERE mac=?1",
    [ST_PORT_BY_IP] = "SELECT " PORT_COLS " FROM ports WHERE network=?1 AND ip=?2",
    [ST_PORT_STATE] = "UPDATE ports SET state=?2 WHERE port_id=?1",
    [ST_PORT_DELETE] = "DELETE FROM ports WHERE instance_uuid=?1",
    [ST_PORT_LIVE] = "SELECT p.port_id, p.instance_uuid, p.idx, p.network, p.mac, p.ip, p.device, p.mtu, "
                     "p.state FROM ports p JOIN instances i ON i.uuid = p.instance_uuid WHERE "
                     "p.state <> 'unplugged' AND i.state NOT IN ('terminated','error','migrated') "
                     "ORDER BY p.instance_uuid, p.idx",
};

/* ---- schema ----
 * Append a migration to change a table; never edit one that has shipped (a
 * file that has it applied will not run it again). Version 1 of each is the
 * table as every agent before the registry made it. */

static const char store_v1[] =
    "CREATE TABLE IF NOT EXISTS instances ("
    " uuid TEXT PRIMARY KEY, ec2_id TEXT NOT NULL UNIQUE, name TEXT NOT NULL,"
    " state TEXT NOT NULL, task_state TEXT NOT NULL DEFAULT '',"
    " vcpus INTEGER NOT NULL, memory_mb INTEGER NOT NULL, disk_gb INTEGER NOT NULL,"
    " instance_type TEXT, boot TEXT NOT NULL, user_data TEXT, console_log TEXT,"
    " disk_path TEXT, fault TEXT, created_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS operations ("
    " id TEXT PRIMARY KEY, type TEXT NOT NULL, instance_uuid TEXT NOT NULL,"
    " request_id TEXT UNIQUE, state TEXT NOT NULL, step TEXT NOT NULL DEFAULT '',"
    " error_code TEXT NOT NULL DEFAULT '', error_message TEXT,"
    " created_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL);"
    "CREATE INDEX IF NOT EXISTS operations_instance ON operations(instance_uuid, state);"
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);";

/* Issue 10: an instance's extra launch data (JSON text: hostname,
 * availability zone, config drive, public keys, metadata, metadata options)
 * and its interfaces. A port's MAC and device are unique on the host, its IP
 * unique in its network; rows go with their instance. */
static const char store_v2[] =
    "ALTER TABLE instances ADD COLUMN extra TEXT;"
    "CREATE TABLE ports ("
    " port_id TEXT PRIMARY KEY,"
    " instance_uuid TEXT NOT NULL REFERENCES instances(uuid) ON DELETE CASCADE,"
    " idx INTEGER NOT NULL, network TEXT NOT NULL, mac TEXT NOT NULL UNIQUE, ip TEXT,"
    " device TEXT NOT NULL UNIQUE, mtu INTEGER NOT NULL DEFAULT 0,"
    " state TEXT NOT NULL DEFAULT 'reserved',"
    " UNIQUE(instance_uuid, idx), UNIQUE(network, ip));";

/* Issue 12: an operation's result (JSON text: a resize's outcome, what the
 * guest reached), NULL for none. */
static const char store_v3[] = "ALTER TABLE operations ADD COLUMN result TEXT;";

static const struct sqlite_migration store_steps[] = {
    {.what = "instances, operations and meta", .sql = store_v1},
    {.what = "instances.extra and the ports table", .sql = store_v2},
    {.what = "operations.result", .sql = store_v3},
};

/* The events outbox: rows written in the same transaction as the state
 * change they report, deleted once the bus has them (agent/events.c). */
static const struct sqlite_migration outbox_steps[] = {
    {.what = "outbox",
     .sql = "CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY AUTOINCREMENT,"
            " key TEXT, payload TEXT NOT NULL, created_ms INTEGER NOT NULL)"},
    /* what GET /v1/events serves: each outbox row's copy (seq = its outbox
     * id, never reused: AUTOINCREMENT), kept for a bounded window after the
     * bus has it */
    {.what = "event_log",
     .sql = "CREATE TABLE IF NOT EXISTS event_log (seq INTEGER PRIMARY KEY, key TEXT, instance_id TEXT,"
            " type TEXT NOT NULL, payload TEXT NOT NULL, created_ms INTEGER NOT NULL);"
            "CREATE INDEX IF NOT EXISTS event_log_instance ON event_log (instance_id, seq);"},
};

static const struct sqlite_schema store_schema = {"store", store_steps, ARRAY_SIZE(store_steps)};
static const struct sqlite_schema outbox_schema = {"outbox", outbox_steps,
                                                   ARRAY_SIZE(outbox_steps)};
static const struct sqlite_schema *const file_schemas[] = {&store_schema, &outbox_schema,
                                                           &imgcache_schema};

const struct sqlite_schema *const *store_schemas(size_t *n)
{
    *n = ARRAY_SIZE(file_schemas);
    return file_schemas;
}

struct store {
    sqlite3 *db;               /* the loop's connection (owned) */
    sqlite3_stmt *st[ST_COUNT];/* prepared statements (owned) */
    int tx_depth;              /* nesting of store_begin() */
    bool tx_failed;            /* an inner step failed: outermost rolls back */
    struct sqlite_checkpointer *ckpt; /* WAL checkpoints on their thread; NULL in memory */
};

/* WAL checkpoints: once the WAL has this many pages (SQLite's own default
 * for autocheckpoint), or this long after a commit. */
#define STORE_CHECKPOINT_PAGES 1000
#define STORE_CHECKPOINT_MS 10000

/* The store holds user-data and identities: owner-only, whatever the umask or
 * an older version left. SQLite creates -wal and -shm with the database
 * file's mode; ones left from before are fixed here too. */
static int store_restrict_mode(const char *path, struct agent_error *err)
{
    static const char *const suffix[] = {"", "-wal", "-shm", "-journal"};
    char p[PATH_MAX];

    for (size_t i = 0; i < ARRAY_SIZE(suffix); i++) {
        int fd;
        struct stat st;
        if (snprintf(p, sizeof(p), "%s%s", path, suffix[i]) >= (int)sizeof(p))
            return agent_error_set(err, ENAMETOOLONG, "invalid_config", "agent.state_dir",
                                   "store path too long");
        fd = open(p, O_RDWR | O_CLOEXEC | O_NOCTTY | (i == 0 ? O_CREAT : 0), 0600);
        if (fd < 0) {
            if (errno == ENOENT && i > 0)
                continue;
            return agent_error_set(err, errno, "store", "agent.state_dir", "cannot open %s: %s", p,
                                   strerror(errno));
        }
        if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) ||
            ((st.st_mode & 077) && fchmod(fd, st.st_mode & 0700) < 0)) {
            int e = S_ISREG(st.st_mode) ? errno : EINVAL;
            close(fd);
            return agent_error_set(err, e, "store", "agent.state_dir",
                                   "cannot make %s owner-only: %s", p,
                                   e == EINVAL ? "not a regular file" : strerror(e));
        }
        close(fd);
    }
    return 0;
}

static int on_wal_commit(void *opaque, sqlite3 *db, const char *name, int pages)
{
    struct store *s = opaque;

    (void)db;
    (void)name;
    sqlite_checkpointer_note(s->ckpt, pages);
    return SQLITE_OK;
}

/* The loop's connection never checkpoints: its commits tell the
 * checkpointer's thread how big the WAL is. */
static int store_checkpoints_start(struct store *s, const char *path, struct agent_error *err)
{
    int r = sqlite_checkpointer_start(path, STORE_CHECKPOINT_PAGES, STORE_CHECKPOINT_MS, &s->ckpt);

    if (r < 0)
        return agent_error_set(err, -r, "store", "agent.state_dir",
                               "cannot start the checkpointer of %s: %s", path, strerror(-r));
    sqlite3_wal_autocheckpoint(s->db, 0);
    sqlite3_wal_hook(s->db, on_wal_commit, s);
    return 0;
}

int store_open(const char *path, bool sync_full, struct store **ret, struct agent_error *err)
{
    struct store *s;
    int rc, r;

    if (strcmp(path, ":memory:") != 0 && (rc = store_restrict_mode(path, err)) < 0)
        return rc;
    if (!(s = calloc(1, sizeof(*s))))
        return -ENOMEM;
    rc = sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                         NULL);
    if (rc != SQLITE_OK)
        goto fail;
    sqlite3_busy_timeout(s->db, STORE_BUSY_TIMEOUT_MS);
    rc = sqlite3_exec(s->db, "PRAGMA journal_mode=WAL;", NULL, NULL, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(s->db, sync_full ? "PRAGMA synchronous=FULL;" : "PRAGMA synchronous=NORMAL;",
                          NULL, NULL, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(s->db, "PRAGMA foreign_keys=ON;", NULL, NULL, NULL);
    if (rc != SQLITE_OK)
        goto fail;
    if ((r = sqlite_schema_migrate(s->db, file_schemas, ARRAY_SIZE(file_schemas), err)) < 0) {
        if (err)
            strscpy(err->field, "agent.state_dir", sizeof(err->field));
        store_free(s);
        return r;
    }
    for (int i = 0; rc == SQLITE_OK && i < ST_COUNT; i++)
        rc = sqlite3_prepare_v3(s->db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &s->st[i], NULL);
    if (rc != SQLITE_OK)
        goto fail;
    if (strcmp(path, ":memory:") != 0 && (r = store_checkpoints_start(s, path, err)) < 0) {
        store_free(s);
        return r;
    }
    *ret = s;
    return 0;
fail:
    {
        int e = sqlite_errno(rc);
        agent_error_set(err, -e, "store", "agent.state_dir", "cannot open store %s: %s", path,
                        s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc));
        store_free(s);
        return e;
    }
}

void store_free(struct store *s)
{
    if (!s)
        return;
    /* the thread first: the last connection to close checkpoints the rest */
    sqlite_checkpointer_stop(s->ckpt);
    for (int i = 0; i < ST_COUNT; i++)
        sqlite3_finalize(s->st[i]);
    sqlite3_close(s->db);
    free(s);
}

sqlite3 *store_db(struct store *s)
{
    return s->db;
}

uint64_t store_checkpoints(struct store *s)
{
    return s->ckpt ? sqlite_checkpointer_runs(s->ckpt) : 0;
}

int store_error(int rc, struct agent_error *err, const char *what)
{
    if (rc == -EBUSY)
        return agent_error_set(err, EBUSY, "unavailable", NULL, "store busy: %s; retry", what);
    return agent_error_set(err, -rc, "internal", NULL, "%s: %s", what, strerror(-rc));
}

int store_begin(struct store *s)
{
    if (s->tx_depth == 0) {
        int r = sqlite_errno(sqlite3_exec(s->db, "BEGIN IMMEDIATE", NULL, NULL, NULL));
        if (r < 0)
            return r; /* no transaction: nothing to commit or roll back */
        s->tx_failed = false;
    }
    s->tx_depth++;
    return 0;
}

int store_commit(struct store *s)
{
    if (s->tx_depth == 0)
        return -EINVAL;
    if (--s->tx_depth > 0)
        return 0;
    if (s->tx_failed) {
        sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
        return -EIO;
    }
    int r = sqlite_errno(sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL));
    if (r < 0)
        sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    return r;
}

void store_rollback(struct store *s)
{
    if (s->tx_depth == 0)
        return; /* after a store_begin() that failed */
    if (--s->tx_depth > 0) {
        s->tx_failed = true;
        return;
    }
    sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
}

/* Run a write statement to completion and reset it: -ENOENT if it changed
 * no row. */
static int step_done(struct store *s, sqlite3_stmt *st)
{
    int r = sqlite_step_done(st);

    if (r == 0 && sqlite3_changes(s->db) == 0)
        r = -ENOENT;
    return r;
}


static int bind_instance(sqlite3_stmt *st, const struct instance *inst)
{
    json_t *boot = boot_source_to_json(&inst->boot);
    char *boot_text = boot ? json_dumps(boot, JSON_COMPACT) : NULL;

    json_decref(boot);
    if (!boot_text)
        return -ENOMEM;
    sqlite_bind_text(st, 1, inst->uuid);
    sqlite_bind_text(st, 2, inst->ec2_id);
    sqlite_bind_text(st, 3, inst->name);
    sqlite_bind_text(st, 4, inst->state);
    sqlite_bind_text(st, 5, inst->task_state);
    sqlite3_bind_int64(st, 6, inst->flavor.vcpus);
    sqlite3_bind_int64(st, 7, inst->flavor.memory_mb);
    sqlite3_bind_int64(st, 8, inst->flavor.disk_gb);
    sqlite_bind_text(st, 9, inst->instance_type);
    sqlite3_bind_text(st, 10, boot_text, -1, free);
    sqlite_bind_text(st, 11, inst->user_data);
    sqlite_bind_text(st, 12, inst->console_log);
    sqlite_bind_text(st, 13, inst->disk_path);
    sqlite_bind_text(st, 14, inst->fault);
    sqlite3_bind_int64(st, 15, inst->created_ms);
    sqlite3_bind_int64(st, 16, inst->updated_ms);
    {
        char *extra = instance_extra_to_text(inst);
        if (!extra)
            return -ENOMEM;
        sqlite3_bind_text(st, 17, extra, -1, free);
    }
    return 0;
}

static int read_instance(sqlite3_stmt *st, struct instance *inst)
{
    json_t *boot;

    memset(inst, 0, sizeof(*inst));
    sqlite_col_copy(st, 0, inst->uuid, sizeof(inst->uuid));
    sqlite_col_copy(st, 1, inst->ec2_id, sizeof(inst->ec2_id));
    inst->name = sqlite_col_dup(st, 2);
    sqlite_col_copy(st, 3, inst->state, sizeof(inst->state));
    sqlite_col_copy(st, 4, inst->task_state, sizeof(inst->task_state));
    inst->flavor.vcpus = sqlite3_column_int64(st, 5);
    inst->flavor.memory_mb = sqlite3_column_int64(st, 6);
    inst->flavor.disk_gb = sqlite3_column_int64(st, 7);
    inst->instance_type = sqlite_col_dup(st, 8);
    boot = json_loads((const char *)sqlite3_column_text(st, 9), 0, NULL);
    if (boot)
        boot_source_from_json(boot, &inst->boot);
    json_decref(boot);
    inst->user_data = sqlite_col_dup(st, 10);
    inst->console_log = sqlite_col_dup(st, 11);
    inst->disk_path = sqlite_col_dup(st, 12);
    inst->fault = sqlite_col_dup(st, 13);
    inst->created_ms = sqlite3_column_int64(st, 14);
    inst->updated_ms = sqlite3_column_int64(st, 15);
    instance_extra_from_text((const char *)sqlite3_column_text(st, 16), inst);
    if (!inst->name) {
        instance_release(inst);
        return -ENOMEM;
    }
    return 0;
}

/* ---- ports ---- */

static void bind_port(sqlite3_stmt *st, const char *uuid, const struct port *p)
{
    sqlite_bind_text(st, 1, p->port_id);
    sqlite_bind_text(st, 2, uuid);
    sqlite3_bind_int64(st, 3, p->index);
    sqlite_bind_text(st, 4, p->network);
    sqlite_bind_text(st, 5, p->mac);
    sqlite_bind_text(st, 6, p->ip[0] ? p->ip : NULL);
    sqlite_bind_text(st, 7, p->device);
    sqlite3_bind_int64(st, 8, p->mtu);
    sqlite_bind_text(st, 9, p->state[0] ? p->state : "reserved");
}

static void read_port(sqlite3_stmt *st, struct port *p, char owner[37])
{
    memset(p, 0, sizeof(*p));
    sqlite_col_copy(st, 0, p->port_id, sizeof(p->port_id));
    if (owner)
        sqlite_col_copy(st, 1, owner, 37);
    p->index = (int)sqlite3_column_int64(st, 2);
    sqlite_col_copy(st, 3, p->network, sizeof(p->network));
    sqlite_col_copy(st, 4, p->mac, sizeof(p->mac));
    if (sqlite3_column_type(st, 5) != SQLITE_NULL)
        sqlite_col_copy(st, 5, p->ip, sizeof(p->ip));
    sqlite_col_copy(st, 6, p->device, sizeof(p->device));
    p->mtu = (int)sqlite3_column_int64(st, 7);
    sqlite_col_copy(st, 8, p->state, sizeof(p->state));
}

/* The ports of a query (its first parameter bound already) into an array. */
static int ports_collect(sqlite3_stmt *st, struct port **out, char (**owners)[37], size_t *n)
{
    struct port *rows = NULL;
    char (*own)[37] = NULL;
    size_t cap = 0;
    int rc, r = 0;

    *n = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (*n == cap) {
            size_t ncap = cap ? cap * 2 : 4;
            struct port *nr = realloc(rows, ncap * sizeof(*nr));
            char (*no)[37] = owners ? realloc(own, ncap * sizeof(*no)) : NULL;
            if (nr)
                rows = nr;
            if (no)
                own = no;
            if (!nr || (owners && !no)) {
                r = -ENOMEM;
                break;
            }
            cap = ncap;
        }
        read_port(st, &rows[*n], owners ? own[*n] : NULL);
        (*n)++;
    }
    if (r == 0 && rc != SQLITE_DONE)
        r = sqlite_errno(rc);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    if (r < 0) {
        free(rows);
        free(own);
        *n = 0;
        return r;
    }
    *out = rows;
    if (owners)
        *owners = own;
    return 0;
}

static int ports_load(struct store *s, struct instance *inst)
{
    sqlite3_stmt *st = s->st[ST_PORT_OF];

    free(inst->ports);
    inst->ports = NULL;
    sqlite_bind_text(st, 1, inst->uuid);
    return ports_collect(st, &inst->ports, NULL, &inst->n_ports);
}

int store_ports_live(struct store *s, struct port **ports, char (**owners)[37], size_t *n)
{
    *ports = NULL;
    *owners = NULL;
    return ports_collect(s->st[ST_PORT_LIVE], ports, owners, n);
}

int store_port_mac_owner(struct store *s, const char *mac, char owner[37])
{
    sqlite3_stmt *st = s->st[ST_PORT_BY_MAC];
    int rc;

    sqlite_bind_text(st, 1, mac);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        sqlite_col_copy(st, 0, owner, 37);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return rc == SQLITE_ROW ? 0 : rc == SQLITE_DONE ? -ENOENT : sqlite_errno(rc);
}

int store_port_by_ip(struct store *s, const char *network, const char *ip, struct port *p, char owner[37])
{
    sqlite3_stmt *st = s->st[ST_PORT_BY_IP];
    int rc;

    sqlite_bind_text(st, 1, network);
    sqlite_bind_text(st, 2, ip);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        read_port(st, p, owner);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return rc == SQLITE_ROW ? 0 : rc == SQLITE_DONE ? -ENOENT : sqlite_errno(rc);
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

int ip_lowest_free(const struct ip_pool *pool, uint32_t *taken, size_t n, uint32_t *out)
{
    uint32_t net = pool->net, mask = pool->mask, gw = pool->gw;
    uint32_t bcast = net | ~mask, cand = net + 1, last = bcast - 1;
    size_t i = 0;

    if (!mask || mask == ~UINT32_C(0) || mask == ~UINT32_C(1))
        return -ENOSPC; /* no host addresses (/31, /32) or no cidr */
    if (pool->lo || pool->hi) {
        if ((pool->lo & mask) != net || (pool->hi & mask) != net || pool->lo > pool->hi)
            return -ENOSPC; /* a range outside the cidr holds nothing (config refuses it) */
        if (pool->lo > cand)
            cand = pool->lo;
        if (pool->hi < last)
            last = pool->hi;
    }
    if (n)
        qsort(taken, n, sizeof(*taken), cmp_u32);
    for (; cand <= last && cand < bcast; cand++) {
        while (i < n && taken[i] < cand)
            i++;
        if (cand == gw || (i < n && taken[i] == cand))
            continue;
        *out = cand;
        return 0;
    }
    return -ENOSPC;
}

static int parse_quad(const char *s, uint32_t *out)
{
    unsigned a, b, c, d;
    char tail;

    if (sscanf(s, "%3u.%3u.%3u.%3u%c", &a, &b, &c, &d, &tail) != 4 || a > 255 || b > 255 || c > 255 ||
        d > 255)
        return -EINVAL;
    *out = a << 24 | b << 16 | c << 8 | d;
    return 0;
}

int store_ip_allocate(struct store *s, const char *network, const struct ip_pool *pool, uint32_t *out)
{
    return store_ip_allocate_except(s, network, pool, NULL, 0, out);
}

int store_ip_allocate_except(struct store *s, const char *network, const struct ip_pool *pool,
                             const uint32_t *except, size_t n_except, uint32_t *out)
{
    sqlite3_stmt *st = s->st[ST_PORT_IPS];
    uint32_t *taken = NULL;
    size_t n = 0, cap = 0;
    int rc, r = 0;

    for (size_t i = 0; i < n_except; i++) {
        if (!except[i])
            continue;
        if (n == cap) {
            size_t ncap = cap ? cap * 2 : 64;
            uint32_t *nt = realloc(taken, ncap * sizeof(*nt));
            if (!nt) {
                free(taken);
                return -ENOMEM;
            }
            taken = nt;
            cap = ncap;
        }
        taken[n++] = except[i];
    }

    sqlite_bind_text(st, 1, network);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        uint32_t a;
        if (parse_quad((const char *)sqlite3_column_text(st, 0), &a) < 0)
            continue;
        if (n == cap) {
            size_t ncap = cap ? cap * 2 : 64;
            uint32_t *nt = realloc(taken, ncap * sizeof(*nt));
            if (!nt) {
                r = -ENOMEM;
                break;
            }
            taken = nt;
            cap = ncap;
        }
        taken[n++] = a;
    }
    if (r == 0 && rc != SQLITE_DONE)
        r = sqlite_errno(rc);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    if (r == 0)
        r = ip_lowest_free(pool, taken, n, out);
    free(taken);
    return r;
}

int store_ports_release(struct store *s, const char *instance_uuid)
{
    sqlite3_stmt *st = s->st[ST_PORT_DELETE];
    int r;

    sqlite_bind_text(st, 1, instance_uuid);
    r = sqlite_step_done(st);
    sqlite3_clear_bindings(st);
    return r;
}

int store_instance_insert(struct store *s, const struct instance *inst)
{
    int r = bind_instance(s->st[ST_INST_INSERT], inst);

    if (r < 0 || (r = step_done(s, s->st[ST_INST_INSERT])) < 0)
        return r;
    for (size_t i = 0; i < inst->n_ports; i++) {
        bind_port(s->st[ST_PORT_INSERT], inst->uuid, &inst->ports[i]);
        if ((r = step_done(s, s->st[ST_PORT_INSERT])) < 0)
            return r;
    }
    return 0;
}

int store_instance_upsert(struct store *s, const struct instance *inst, bool exists)
{
    int r;

    if (!exists)
        return store_instance_insert(s, inst);
    if ((r = store_ports_release(s, inst->uuid)) < 0 && r != -ENOENT)
        return r;
    if ((r = bind_instance(s->st[ST_INST_UPDATE], inst)) < 0 || (r = step_done(s, s->st[ST_INST_UPDATE])) < 0)
        return r;
    for (size_t i = 0; i < inst->n_ports; i++) {
        bind_port(s->st[ST_PORT_INSERT], inst->uuid, &inst->ports[i]);
        if ((r = step_done(s, s->st[ST_PORT_INSERT])) < 0)
            return r;
    }
    return 0;
}

int store_instance_update(struct store *s, const struct instance *inst)
{
    int r = bind_instance(s->st[ST_INST_UPDATE], inst);

    if (r < 0 || (r = step_done(s, s->st[ST_INST_UPDATE])) < 0)
        return r;
    for (size_t i = 0; i < inst->n_ports; i++) {
        sqlite3_stmt *st = s->st[ST_PORT_STATE];
        sqlite_bind_text(st, 1, inst->ports[i].port_id);
        sqlite_bind_text(st, 2, inst->ports[i].state[0] ? inst->ports[i].state : "reserved");
        if ((r = sqlite_step_done(st)) < 0)
            return r;
    }
    return 0;
}

int store_instance_get(struct store *s, const char *id, struct instance *inst)
{
    sqlite3_stmt *st = s->st[ST_INST_GET];
    int rc, r;

    sqlite3_bind_text(st, 1, id, -1, SQLITE_TRANSIENT);
    rc = sqlite3_step(st);
    r = rc == SQLITE_ROW ? read_instance(st, inst) : rc == SQLITE_DONE ? -ENOENT : sqlite_errno(rc);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    if (r == 0 && (r = ports_load(s, inst)) < 0)
        instance_release(inst);
    return r;
}

int store_instance_foreach(struct store *s, bool with_terminated,
                           int (*cb)(const struct instance *inst, void *opaque), void *opaque)
{
    sqlite3_stmt *st = s->st[with_terminated ? ST_INST_ALL : ST_INST_LIVE];
    int rc, r = 0;

    /* rows are copied out first: cb may write to the store */
    struct instance *rows = NULL;
    size_t n = 0, cap = 0;

    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (n == cap) {
            size_t ncap = cap ? cap * 2 : 64;
            struct instance *nr = realloc(rows, ncap * sizeof(*nr));
            if (!nr) {
                r = -ENOMEM;
                break;
            }
            rows = nr;
            cap = ncap;
        }
        if ((r = read_instance(st, &rows[n])) < 0)
            break;
        n++;
    }
    if (r == 0 && rc != SQLITE_DONE)
        r = sqlite_errno(rc);
    sqlite3_reset(st);
    for (size_t i = 0; i < n; i++) {
        if (r == 0)
            r = ports_load(s, &rows[i]);
        if (r == 0 && cb(&rows[i], opaque))
            r = 1;
        instance_release(&rows[i]);
    }
    free(rows);
    return r < 0 ? r : 0;
}

int store_allocated(struct store *s, struct flavor *sum, int64_t *count)
{
    sqlite3_stmt *st = s->st[ST_ALLOCATED];
    int rc = sqlite3_step(st);

    if (rc == SQLITE_ROW) {
        sum->vcpus = sqlite3_column_int64(st, 0);
        sum->memory_mb = sqlite3_column_int64(st, 1);
        sum->disk_gb = sqlite3_column_int64(st, 2);
        if (count)
            *count = sqlite3_column_int64(st, 3);
    }
    sqlite3_reset(st);
    return rc == SQLITE_ROW ? 0 : sqlite_errno(rc);
}

int store_purge_terminated(struct store *s, int64_t before_ms)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(s->db,
                                "DELETE FROM operations WHERE instance_uuid IN (SELECT uuid FROM "
                                "instances WHERE state='terminated' AND updated_ms < ?1) AND "
                                "state NOT IN ('pending','running');"
                                , -1, &st, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, before_ms);
        rc = sqlite3_step(st);
        sqlite3_finalize(st);
    }
    if (rc != SQLITE_DONE)
        return sqlite_errno(rc);
    rc = sqlite3_prepare_v2(s->db, "DELETE FROM instances WHERE state='terminated' AND updated_ms < ?1",
                            -1, &st, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, before_ms);
        rc = sqlite3_step(st);
        sqlite3_finalize(st);
    }
    return rc == SQLITE_DONE ? sqlite3_changes(s->db) : sqlite_errno(rc);
}

/* ---- operations ---- */

static void bind_op(sqlite3_stmt *st, const struct op_record *op)
{
    sqlite_bind_text(st, 1, op->id);
    sqlite_bind_text(st, 2, op->type);
    sqlite_bind_text(st, 3, op->instance_uuid);
    sqlite_bind_text(st, 4, op->request_id);
    sqlite_bind_text(st, 5, op->state);
    sqlite_bind_text(st, 6, op->step);
    sqlite_bind_text(st, 7, op->error_code);
    sqlite_bind_text(st, 8, op->error_message);
    sqlite3_bind_int64(st, 9, op->created_ms);
    sqlite3_bind_int64(st, 10, op->updated_ms);
    sqlite_bind_text(st, 11, op->result);
}

static void read_op(sqlite3_stmt *st, struct op_record *op)
{
    memset(op, 0, sizeof(*op));
    sqlite_col_copy(st, 0, op->id, sizeof(op->id));
    sqlite_col_copy(st, 1, op->type, sizeof(op->type));
    sqlite_col_copy(st, 2, op->instance_uuid, sizeof(op->instance_uuid));
    op->request_id = sqlite_col_dup(st, 3);
    sqlite_col_copy(st, 4, op->state, sizeof(op->state));
    sqlite_col_copy(st, 5, op->step, sizeof(op->step));
    sqlite_col_copy(st, 6, op->error_code, sizeof(op->error_code));
    op->error_message = sqlite_col_dup(st, 7);
    op->created_ms = sqlite3_column_int64(st, 8);
    op->updated_ms = sqlite3_column_int64(st, 9);
    op->result = sqlite_col_dup(st, 10);
}

int store_op_insert(struct store *s, const struct op_record *op)
{
    bind_op(s->st[ST_OP_INSERT], op);
    return step_done(s, s->st[ST_OP_INSERT]);
}

int store_op_update(struct store *s, const struct op_record *op)
{
    bind_op(s->st[ST_OP_UPDATE], op);
    return step_done(s, s->st[ST_OP_UPDATE]);
}

static int op_query_one(sqlite3_stmt *st, const char *arg, struct op_record *op)
{
    int rc, r;

    sqlite3_bind_text(st, 1, arg, -1, SQLITE_TRANSIENT);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        read_op(st, op);
        r = 0;
    } else {
        r = rc == SQLITE_DONE ? -ENOENT : sqlite_errno(rc);
    }
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return r;
}

int store_op_get(struct store *s, const char *id, struct op_record *op)
{
    return op_query_one(s->st[ST_OP_GET], id, op);
}

int store_op_find_request(struct store *s, const char *request_id, struct op_record *op)
{
    return op_query_one(s->st[ST_OP_BY_REQUEST], request_id, op);
}

int store_op_active_for(struct store *s, const char *instance_uuid, struct op_record *op)
{
    return op_query_one(s->st[ST_OP_ACTIVE], instance_uuid, op);
}

int store_op_foreach_unfinished(struct store *s, int (*cb)(const struct op_record *op, void *opaque),
                                void *opaque)
{
    sqlite3_stmt *st = s->st[ST_OP_UNFINISHED];
    struct op_record *rows = NULL;
    size_t n = 0, cap = 0;
    int rc, r = 0;

    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (n == cap) {
            size_t ncap = cap ? cap * 2 : 16;
            struct op_record *nr = realloc(rows, ncap * sizeof(*nr));
            if (!nr) {
                r = -ENOMEM;
                break;
            }
            rows = nr;
            cap = ncap;
        }
        read_op(st, &rows[n++]);
    }
    if (r == 0 && rc != SQLITE_DONE)
        r = sqlite_errno(rc);
    sqlite3_reset(st);
    for (size_t i = 0; i < n; i++) {
        if (r == 0 && cb(&rows[i], opaque))
            r = 1;
        op_record_release(&rows[i]);
    }
    free(rows);
    return r < 0 ? r : 0;
}

void op_record_release(struct op_record *op)
{
    free(op->request_id);
    free(op->error_message);
    free(op->result);
    op->request_id = NULL;
    op->error_message = NULL;
    op->result = NULL;
}

/* ---- meta ---- */

int store_meta_get(struct store *s, const char *key, char **value)
{
    sqlite3_stmt *st = s->st[ST_META_GET];
    int rc, r;

    sqlite3_bind_text(st, 1, key, -1, SQLITE_TRANSIENT);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *value = sqlite_col_dup(st, 0);
        r = *value ? 0 : -ENOMEM;
    } else {
        r = rc == SQLITE_DONE ? -ENOENT : sqlite_errno(rc);
    }
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return r;
}

int store_meta_set(struct store *s, const char *key, const char *value)
{
    sqlite3_stmt *st = s->st[ST_META_SET];

    sqlite_bind_text(st, 1, key);
    sqlite_bind_text(st, 2, value);
    return step_done(s, st);
}
