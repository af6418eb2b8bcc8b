/* sqlite.c: see sqlite.h. */
#include "common/sqlite.h"

#include <pthread.h>
#include <time.h>

/* ---- results, columns, bindings ---- */

int sqlite_errno(int rc)
{
    switch (rc & 0xff) {
    case SQLITE_OK:
    case SQLITE_DONE:
    case SQLITE_ROW:
        return 0;
    case SQLITE_NOMEM:
        return -ENOMEM;
    case SQLITE_FULL:
        return -ENOSPC;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return -EBUSY;
    case SQLITE_CONSTRAINT:
        return -EEXIST;
    case SQLITE_READONLY:
    case SQLITE_PERM:
        return -EACCES;
    default:
        return -EIO;
    }
}

char *sqlite_col_dup(sqlite3_stmt *st, int i)
{
    const unsigned char *t = sqlite3_column_text(st, i);
    return t ? strdup((const char *)t) : NULL;
}

void sqlite_col_copy(sqlite3_stmt *st, int i, char *dst, size_t size)
{
    const unsigned char *t = sqlite3_column_text(st, i);
    strscpy(dst, t ? (const char *)t : "", size);
}

int64_t sqlite_col_int_or(sqlite3_stmt *st, int i, int64_t if_null)
{
    return sqlite3_column_type(st, i) == SQLITE_NULL ? if_null : sqlite3_column_int64(st, i);
}

int sqlite_bind_text(sqlite3_stmt *st, int i, const char *v)
{
    return v ? sqlite3_bind_text(st, i, v, -1, SQLITE_TRANSIENT) : sqlite3_bind_null(st, i);
}

int sqlite_bind_text_nonempty(sqlite3_stmt *st, int i, const char *v)
{
    return sqlite_bind_text(st, i, v && *v ? v : NULL);
}

int sqlite_bind_int_nonneg(sqlite3_stmt *st, int i, int64_t v)
{
    return v < 0 ? sqlite3_bind_null(st, i) : sqlite3_bind_int64(st, i, v);
}

int sqlite_step_done(sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);

    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return sqlite_errno(rc);
}

/* ---- schema registry ---- */

static const char *file_of(sqlite3 *db)
{
    const char *f = sqlite3_db_filename(db, "main");
    return f && *f ? f : ":memory:";
}

static int exec(sqlite3 *db, const char *sql)
{
    return sqlite_errno(sqlite3_exec(db, sql, NULL, NULL, NULL));
}

/* The first column of the first row of sql (with ?1 = arg if arg), or
 * if_none when there is no row. */
static int query_int(sqlite3 *db, const char *sql, const char *arg, int64_t if_none, int64_t *v)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);

    if (rc == SQLITE_OK && arg)
        rc = sqlite3_bind_text(st, 1, arg, -1, SQLITE_TRANSIENT);
    if (rc != SQLITE_OK)
        return sqlite_errno(rc);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        *v = sqlite3_column_int64(st, 0);
    else if (rc == SQLITE_DONE)
        *v = if_none;
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : sqlite_errno(rc);
}

int sqlite_schema_version(sqlite3 *db, const char *module, int *version)
{
    int64_t have, v;
    int r = query_int(db, "SELECT COUNT(*) FROM sqlite_master WHERE type='table' AND "
                          "name='schema_versions'", NULL, 0, &have);

    if (r == 0 && have)
        r = query_int(db, "SELECT version FROM schema_versions WHERE module=?1", module, 0, &v);
    if (r < 0)
        return r;
    *version = have ? (int)v : 0;
    return 0;
}

static int version_set(sqlite3 *db, const char *module, int version)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, "INSERT INTO schema_versions (module, version, updated_ms) "
                                    "VALUES (?1, ?2, ?3) ON CONFLICT(module) DO UPDATE SET "
                                    "version=excluded.version, updated_ms=excluded.updated_ms",
                                -1, &st, NULL);

    if (rc != SQLITE_OK)
        return sqlite_errno(rc);
    sqlite3_bind_text(st, 1, module, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 2, version);
    sqlite3_bind_int64(st, 3, now_wall_ms());
    return sqlite_step_done(st);
}

/* What a table holds, to check that a migration lost nothing. cols is every
 * column name between '\n's ("\na\nb\n"). */
struct table_shape {
    char *name;
    char *cols;
    int64_t rows;
};

static void shapes_free(struct table_shape *t, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(t[i].name);
        free(t[i].cols);
    }
    free(t);
}

static int shape_fill(sqlite3 *db, struct table_shape *t)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    char *sql = sqlite3_mprintf("SELECT COUNT(*) FROM \"%w\"", t->name);
    int64_t rows;
    int r;

    if (!sql)
        return -ENOMEM;
    r = query_int(db, sql, NULL, 0, &rows);
    sqlite3_free(sql);
    if (r < 0)
        return r;
    t->rows = rows;
    if ((r = sqlite3_prepare_v2(db, "SELECT '\n' || group_concat(name, '\n') || '\n' FROM "
                                    "pragma_table_xinfo(?1)", -1, &st, NULL)) != SQLITE_OK ||
        (r = sqlite3_bind_text(st, 1, t->name, -1, SQLITE_STATIC)) != SQLITE_OK ||
        (r = sqlite3_step(st)) != SQLITE_ROW)
        return sqlite_errno(r);
    t->cols = sqlite_col_dup(st, 0);
    return t->cols ? 0 : -ENOMEM;
}

/* Every table but SQLite's own, with its columns and row count. */
static int shapes_read(sqlite3 *db, struct table_shape **out, size_t *n_out)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    struct table_shape *t = NULL;
    size_t n = 0;
    int rc, r = 0;

    rc = sqlite3_prepare_v2(db, "SELECT name FROM sqlite_master WHERE type='table' AND "
                                "name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name",
                            -1, &st, NULL);
    if (rc != SQLITE_OK)
        return sqlite_errno(rc);
    while (r == 0 && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        struct table_shape *nt = realloc(t, (n + 1) * sizeof(*t));
        if (!nt) {
            r = -ENOMEM;
            break;
        }
        t = nt;
        t[n] = (struct table_shape){.name = sqlite_col_dup(st, 0)};
        r = t[n].name ? 0 : -ENOMEM;
        n++;
    }
    if (r == 0 && rc != SQLITE_DONE)
        r = sqlite_errno(rc);
    for (size_t i = 0; r == 0 && i < n; i++)
        r = shape_fill(db, &t[i]);
    if (r < 0) {
        shapes_free(t, n);
        return r;
    }
    *out = t;
    *n_out = n;
    return 0;
}

/* 0 if every table, column and row of before is still there; else -EPERM
 * and what was lost in why. */
static int shapes_check(sqlite3 *db, const struct table_shape *before, size_t n, char *why,
                        size_t size)
{
    for (size_t i = 0; i < n; i++) {
        struct table_shape now = {.name = before[i].name};
        int64_t exists;
        int r = query_int(db, "SELECT COUNT(*) FROM sqlite_master WHERE type='table' AND name=?1",
                          before[i].name, 0, &exists);

        if (r < 0)
            return r;
        if (!exists) {
            snprintf(why, size, "it drops table %s", before[i].name);
            return -EPERM;
        }
        if ((r = shape_fill(db, &now)) < 0)
            return r;
        for (const char *c = before[i].cols + 1; r == 0 && *c; c = strchr(c, '\n') + 1) {
            size_t len = strcspn(c, "\n");
            char key[256];
            if (len + 3 > sizeof(key))
                continue;
            snprintf(key, sizeof(key), "\n%.*s\n", (int)len, c);
            if (!strstr(now.cols, key)) {
                snprintf(why, size, "it drops column %s.%.*s", before[i].name, (int)len, c);
                r = -EPERM;
            }
        }
        free(now.cols);
        if (r == 0 && now.rows < before[i].rows) {
            snprintf(why, size, "it deletes %lld of the %lld rows of %s",
                     (long long)(before[i].rows - now.rows), (long long)before[i].rows,
                     before[i].name);
            r = -EPERM;
        }
        if (r < 0)
            return r;
    }
    return 0;
}

/* A migration runs inside the transaction that records its version: it may
 * not end it (BEGIN, COMMIT, ROLLBACK are refused; savepoints are fine). */
static int deny_transactions(void *opaque, int action, const char *a, const char *b,
                             const char *c, const char *d)
{
    (void)opaque, (void)a, (void)b, (void)c, (void)d;
    return action == SQLITE_TRANSACTION ? SQLITE_DENY : SQLITE_OK;
}

/* Run a migration and check it inside the caller's transaction. why: the
 * reason on failure. */
static int step_run(sqlite3 *db, const struct sqlite_migration *m, char *why, size_t size)
{
    struct table_shape *before = NULL;
    size_t n = 0;
    int r = shapes_read(db, &before, &n);

    if (r < 0) {
        snprintf(why, size, "reading the tables: %s", sqlite3_errmsg(db));
        return r;
    }
    sqlite3_set_authorizer(db, deny_transactions, NULL);
    r = m->sql ? exec(db, m->sql) : m->run(db);
    sqlite3_set_authorizer(db, NULL, NULL);
    if (r < 0)
        snprintf(why, size, "%s", sqlite3_errcode(db) != SQLITE_OK ? sqlite3_errmsg(db)
                                                                     : strerror(-r));
    else if (sqlite3_get_autocommit(db)) {
        snprintf(why, size, "it ended its transaction");
        r = -EINVAL;
    } else {
        r = shapes_check(db, before, n, why, size);
    }
    shapes_free(before, n);
    return r;
}

/* Migration `from` of sc (version from -> from + 1), in one transaction. */
static int step_apply(sqlite3 *db, const struct sqlite_schema *sc, int from,
                      struct agent_error *err)
{
    const struct sqlite_migration *m = &sc->steps[from];
    char why[400] = "";
    int r = exec(db, "BEGIN IMMEDIATE");

    if (r < 0) {
        snprintf(why, sizeof(why), "cannot begin: %s", sqlite3_errmsg(db));
    } else if ((r = step_run(db, m, why, sizeof(why))) == 0) {
        if ((r = version_set(db, sc->module, from + 1)) < 0)
            snprintf(why, sizeof(why), "recording the version: %s", sqlite3_errmsg(db));
        else if ((r = exec(db, "COMMIT")) < 0)
            snprintf(why, sizeof(why), "cannot commit: %s", sqlite3_errmsg(db));
    }
    if (r < 0 && !sqlite3_get_autocommit(db))
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    if (r < 0)
        return agent_error_set(err, -r, "store", NULL,
                               "%s: migrating the %s tables from version %d to %d (%s) failed: "
                               "%s; the file is left at version %d",
                               file_of(db), sc->module, from, from + 1, m->what, why, from);
    return 0;
}

/* user_version 0 -> 1: the table of module versions. */
static int layout_upgrade(sqlite3 *db, struct agent_error *err)
{
    int r = exec(db, "BEGIN IMMEDIATE");

    if (r == 0)
        r = exec(db, "CREATE TABLE IF NOT EXISTS schema_versions (module TEXT PRIMARY KEY,"
                     " version INTEGER NOT NULL, updated_ms INTEGER NOT NULL);"
                     "PRAGMA user_version = 1;");
    if (r == 0)
        r = exec(db, "COMMIT");
    if (r < 0) {
        agent_error_set(err, -r, "store", NULL, "%s: cannot record schema versions: %s",
                        file_of(db), sqlite3_errmsg(db));
        if (!sqlite3_get_autocommit(db))
            sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    }
    return r;
}

/* Refuse a file from a newer build before anything is written. */
static int check_not_newer(sqlite3 *db, int64_t layout, const struct sqlite_schema *const *schemas,
                           size_t n, struct agent_error *err)
{
    if (layout > CA_SQLITE_LAYOUT)
        return agent_error_set(err, EPROTO, "store", NULL,
                               "%s: schema layout version %lld is newer than this build's (%d): "
                               "the file was written by a newer compute-agent; refusing to open it",
                               file_of(db), (long long)layout, CA_SQLITE_LAYOUT);
    for (size_t i = 0; i < n; i++) {
        int v, r = sqlite_schema_version(db, schemas[i]->module, &v);
        if (r < 0)
            return agent_error_set(err, -r, "store", NULL, "%s: cannot read schema versions: %s",
                                   file_of(db), sqlite3_errmsg(db));
        if (v < 0 || (size_t)v > schemas[i]->n_steps)
            return agent_error_set(err, EPROTO, "store", NULL,
                                   "%s: the %s tables are at schema version %d, newer than this "
                                   "build's (%zu): the file was written by a newer "
                                   "compute-agent; refusing to open it",
                                   file_of(db), schemas[i]->module, v, schemas[i]->n_steps);
    }
    return 0;
}

int sqlite_schema_migrate(sqlite3 *db, const struct sqlite_schema *const *schemas, size_t n,
                          struct agent_error *err)
{
    int64_t layout;
    int r = query_int(db, "PRAGMA user_version", NULL, 0, &layout);

    if (r < 0)
        return agent_error_set(err, -r, "store", NULL, "%s: cannot read its version: %s",
                               file_of(db), sqlite3_errmsg(db));
    if ((r = check_not_newer(db, layout, schemas, n, err)) < 0)
        return r;
    if (layout < CA_SQLITE_LAYOUT && (r = layout_upgrade(db, err)) < 0)
        return r;
    for (size_t i = 0; i < n; i++) {
        int v;
        if ((r = sqlite_schema_version(db, schemas[i]->module, &v)) < 0)
            return agent_error_set(err, -r, "store", NULL, "%s: cannot read schema versions: %s",
                                   file_of(db), sqlite3_errmsg(db));
        for (; (size_t)v < schemas[i]->n_steps; v++)
            if ((r = step_apply(db, schemas[i], v, err)) < 0)
                return r;
    }
    return 0;
}

/* ---- checkpointer ---- */

struct sqlite_checkpointer {
    pthread_t thread;
    sqlite3 *db;              /* the thread's own connection (owned) */
    int pages;                /* checkpoint once the WAL has this many pages */
    unsigned interval_ms;     /* ... or this long after a commit */
    pthread_mutex_t lock;     /* guards the fields below */
    pthread_cond_t wake;
    bool due;                 /* the WAL passed `pages`: checkpoint now */
    bool dirty;               /* a commit since the last checkpoint */
    bool stop;
    uint64_t runs;            /* checkpoints completed */
};

static void deadline_after(struct timespec *ts, unsigned ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

static void *checkpointer_main(void *arg)
{
    struct sqlite_checkpointer *c = arg;
    struct timespec until;

    pthread_mutex_lock(&c->lock);
    while (!c->stop) {
        deadline_after(&until, c->interval_ms);
        while (!c->stop && !c->due &&
               pthread_cond_timedwait(&c->wake, &c->lock, &until) != ETIMEDOUT)
            ;
        if (c->stop || !(c->due || c->dirty))
            continue;
        c->due = c->dirty = false;
        pthread_mutex_unlock(&c->lock);
        /* PASSIVE: copies what no reader needs, waits for nobody; what it
         * could not copy is copied next time */
        int rc = sqlite3_wal_checkpoint_v2(c->db, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
        pthread_mutex_lock(&c->lock);
        if (rc == SQLITE_OK)
            c->runs++;
        else
            c->dirty = true;
    }
    pthread_mutex_unlock(&c->lock);
    return NULL;
}

int sqlite_checkpointer_start(const char *path, int pages, unsigned interval_ms,
                              struct sqlite_checkpointer **ret)
{
    struct sqlite_checkpointer *c = calloc(1, sizeof(*c));
    pthread_condattr_t ca;
    int rc;

    if (!c)
        return -ENOMEM;
    c->pages = pages > 0 ? pages : 1000;
    c->interval_ms = interval_ms ? interval_ms : 10000;
    rc = sqlite3_open_v2(path, &c->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        sqlite3_close(c->db);
        free(c);
        return sqlite_errno(rc);
    }
    sqlite3_busy_timeout(c->db, 1000);
    pthread_mutex_init(&c->lock, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&c->wake, &ca);
    pthread_condattr_destroy(&ca);
    if ((rc = pthread_create(&c->thread, NULL, checkpointer_main, c)) != 0) {
        pthread_cond_destroy(&c->wake);
        pthread_mutex_destroy(&c->lock);
        sqlite3_close(c->db);
        free(c);
        return -rc;
    }
    *ret = c;
    return 0;
}

void sqlite_checkpointer_note(struct sqlite_checkpointer *c, int pages)
{
    pthread_mutex_lock(&c->lock);
    c->dirty = true;
    if (pages >= c->pages && !c->due) {
        c->due = true;
        pthread_cond_signal(&c->wake);
    }
    pthread_mutex_unlock(&c->lock);
}

uint64_t sqlite_checkpointer_runs(struct sqlite_checkpointer *c)
{
    uint64_t n;

    pthread_mutex_lock(&c->lock);
    n = c->runs;
    pthread_mutex_unlock(&c->lock);
    return n;
}

void sqlite_checkpointer_stop(struct sqlite_checkpointer *c)
{
    if (!c)
        return;
    pthread_mutex_lock(&c->lock);
    c->stop = true;
    pthread_cond_signal(&c->wake);
    pthread_mutex_unlock(&c->lock);
    pthread_join(c->thread, NULL);
    pthread_cond_destroy(&c->wake);
    pthread_mutex_destroy(&c->lock);
    sqlite3_close(c->db);
    free(c);
}
