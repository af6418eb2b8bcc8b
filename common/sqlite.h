/* sqlite.h: what every module that keeps tables in SQLite shares: column and
 * bind helpers, SQLite result codes as -errno, a schema registry with numbered
 * migrations, and a WAL checkpointer that runs off the loop.
 *
 * ---- Schema versions ----
 * Each module that owns tables describes them as a struct sqlite_schema: a
 * name and an ordered list of migrations; migration i takes the module's
 * tables from version i to i + 1. sqlite_schema_migrate() brings a database
 * up to date:
 *   - PRAGMA user_version is the version of the layout this registry keeps in
 *     the file (CA_SQLITE_LAYOUT): 0 for a file from before the registry, 1
 *     since. The table schema_versions(module, version, updated_ms) holds one
 *     row per module: the number of its migrations applied to this file.
 *   - A file whose user_version, or one of whose modules, is newer than this
 *     build knows is refused (-EPROTO), with the file, the module and both
 *     versions in the message, before anything is written.
 *   - Each migration runs in its own transaction (BEGIN IMMEDIATE) together
 *     with the update of its module's row: a migration that fails leaves the
 *     file exactly as it was before it (the earlier ones stay applied, the
 *     file is at a version every build since understands).
 *   - A migration never loses data: after it runs, inside its transaction,
 *     every table that was there must still be there with every column it
 *     had and at least as many rows, or the migration is rolled back and
 *     refused. (To change a column's type, rebuild the table under the same
 *     name with the same columns.) The check counts rows: it costs one pass
 *     over each table per migration, at open.
 *   - A migration may not end its transaction: BEGIN, COMMIT and ROLLBACK
 *     are refused (SQLite's authorizer); savepoints are fine. It cannot
 *     switch foreign_keys (SQLite ignores that inside a transaction).
 *   - The first migration of each module that predates the registry creates
 *     its tables with CREATE TABLE IF NOT EXISTS, exactly as they were made
 *     before: on a file from before the registry it finds them and only
 *     records version 1; on a new file it creates them.
 *
 * Why a version row per module rather than one number for the file: the
 * tables in the agent's file belong to modules that do not know each other
 * (the agent's store, its outbox, the image cache, which is a library below
 * the agent and whose tests open it alone on a bare database). With one
 * number, every module's migrations would have to be numbered in one global
 * list that each of them would have to know, and two branches that each add
 * a migration would collide on a number. With a row each, a module appends
 * to its own list and can be migrated alone (the image cache's tests) or with
 * the others (the agent's store_open migrates every table of its file before
 * anything uses it). user_version still guards the file as a whole.
 *
 * ---- Threads and locks ----
 * A connection (sqlite3 *) is used by one thread at a time (opened
 * SQLITE_OPEN_NOMUTEX): the helpers below run on the caller's thread and take
 * no lock of their own. The checkpointer has its own connection and thread;
 * see sqlite_checkpointer_start().
 */
#ifndef CA_COMMON_SQLITE_H
#define CA_COMMON_SQLITE_H

#include <sqlite3.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/util.h"

/* ---- results, columns, bindings ---- */

/* A SQLite result code (primary or extended) as 0 (OK, DONE, ROW) or -errno:
 * -EBUSY (BUSY, LOCKED: another connection holds the lock), -EEXIST
 * (CONSTRAINT), -ENOMEM, -ENOSPC (FULL), -EACCES (READONLY, PERM), -EIO. */
int sqlite_errno(int rc);

/* Column i of the current row as a new string (free it), or NULL when the
 * column is NULL or out of memory. */
char *sqlite_col_dup(sqlite3_stmt *st, int i);
/* Column i into dst (size bytes, truncated, always terminated); "" for NULL. */
void sqlite_col_copy(sqlite3_stmt *st, int i, char *dst, size_t size);
/* Column i as an integer, or if_null when the column is NULL. */
int64_t sqlite_col_int_or(sqlite3_stmt *st, int i, int64_t if_null);

/* Bind v (copied) to parameter i; NULL binds NULL. SQLite's result code. */
int sqlite_bind_text(sqlite3_stmt *st, int i, const char *v);
/* Same, but "" binds NULL too (for columns where empty means unknown). */
int sqlite_bind_text_nonempty(sqlite3_stmt *st, int i, const char *v);
/* Bind v, or NULL when v < 0 (for sizes that are -1 while unknown). */
int sqlite_bind_int_nonneg(sqlite3_stmt *st, int i, int64_t v);

/* Step a statement that returns no rows, then reset it and clear its
 * bindings (so a kept statement is ready again). 0 or sqlite_errno(). */
int sqlite_step_done(sqlite3_stmt *st);

/* For _cleanup_stmt_: finalize a statement (NULL is fine). */
static inline void sqlite_finalizep(sqlite3_stmt **st)
{
    sqlite3_finalize(*st);
}
#define _cleanup_stmt_ _cleanup_(sqlite_finalizep)

/* ---- schema registry ---- */

/* The layout version kept in PRAGMA user_version (see the head comment). */
#define CA_SQLITE_LAYOUT 1

/* One migration: SQL (one or more statements) or a function. run() returns 0
 * or -errno and may leave a message in sqlite3_errmsg(db). */
struct sqlite_migration {
    const char *what;                 /* for messages: "add instances.nics" */
    const char *sql;                  /* run with sqlite3_exec(), or NULL */
    int (*run)(sqlite3 *db);          /* used when sql is NULL */
};

/* A module's tables: its row name in schema_versions and its migrations. */
struct sqlite_schema {
    const char *module;               /* "store", "outbox", "images" */
    const struct sqlite_migration *steps;
    size_t n_steps;                   /* = the module's current version */
};

/* Bring db to the current version of every schema in schemas[0..n), in that
 * order (see the head comment). The file is named in messages by
 * sqlite3_db_filename(). Call it outside any transaction, on the thread that
 * uses db. 0, or -errno with err filled (code "store"): -EPROTO for a file
 * newer than this build, else what failed. */
int sqlite_schema_migrate(sqlite3 *db, const struct sqlite_schema *const *schemas, size_t n,
                          struct agent_error *err);

/* The version of module in db: 0 if none of its migrations was applied. 0 and
 * *version, or -errno. */
int sqlite_schema_version(sqlite3 *db, const char *module, int *version);

/* ---- WAL checkpoints off the loop ----
 * A thread with its own connection to the file that runs PASSIVE checkpoints:
 * after the loop's connection says the WAL has grown past `pages` pages
 * (sqlite_checkpointer_note(), from a sqlite3_wal_hook()), or every
 * interval_ms while a commit happened since the last checkpoint.
 * Locks: the checkpointer's mutex guards its pages/dirty/stop fields; the
 * loop holds it for a few instructions (note, stop), the thread holds it only
 * while it waits on its condition variable, and neither holds it across a
 * SQLite call. A PASSIVE checkpoint takes SQLite's checkpoint lock, never the
 * write lock, and never waits: the loop's reads and writes go on while it
 * copies the WAL into the database and fsyncs it; it copies up to the oldest
 * open read snapshot. The loop connection should run with
 * sqlite3_wal_autocheckpoint(db, 0) so that it never checkpoints itself. */
struct sqlite_checkpointer;

/* Start the thread on the database at path (a WAL-mode file). 0 and *ret, or
 * -errno (the file cannot be opened, no thread). */
int sqlite_checkpointer_start(const char *path, int pages, unsigned interval_ms,
                              struct sqlite_checkpointer **ret);
/* From the loop connection's WAL hook: a commit left the WAL at pages pages.
 * Wakes the thread when pages reaches the threshold. Never blocks on SQLite. */
void sqlite_checkpointer_note(struct sqlite_checkpointer *c, int pages);
/* How many checkpoints the thread has completed (any thread may ask). */
uint64_t sqlite_checkpointer_runs(struct sqlite_checkpointer *c);
/* Stop the thread (waits for a checkpoint under way to end), close its
 * connection, free c. Accepts NULL. */
void sqlite_checkpointer_stop(struct sqlite_checkpointer *c);

#endif
