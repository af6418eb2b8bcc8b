/* index.c: the cache's index in the agent's SQLite store.
 *
 * images:      one row per image (id, digest, source, state, format, sizes,
 *              base path, timestamps, last error)
 * image_users: which instances use which image (a pin: never evicted)
 *
 * All calls run on the loop thread, on the agent's connection. The tables
 * are the "images" module of common/sqlite.h's schema registry: the agent's
 * store migrates them with its own at open (imgcache_schema), and
 * imgcache_index_init() does for a database nobody else migrated. */
#include "common/sqlite.h"
#include "image-cache/imgcache-internal.h"

/* Append a migration to change a table; never edit one that has shipped. */
static const char images_v1[] =
    "CREATE TABLE IF NOT EXISTS images ("
    " id TEXT PRIMARY KEY NOT NULL,"
    " digest TEXT,"            /* 'sha256:hex' | 'sha512:hex', NULL until known */
    " url TEXT,"               /* source URL, or NULL */
    " glance_id TEXT,"         /* Glance image id, or NULL */
    " state TEXT NOT NULL,"    /* downloading | cached | failed */
    " format TEXT,"            /* raw | qcow2 once inspected */
    " size INTEGER,"           /* bytes on disk */
    " virtual_size INTEGER,"
    " path TEXT,"              /* base file */
    " created_at INTEGER NOT NULL," /* ms since the epoch */
    " last_used_at INTEGER NOT NULL,"
    " error_code TEXT,"
    " error_message TEXT);"
    "CREATE UNIQUE INDEX IF NOT EXISTS images_digest ON images(digest);"
    "CREATE INDEX IF NOT EXISTS images_glance_id ON images(glance_id);"
    "CREATE TABLE IF NOT EXISTS image_users ("
    " image_id TEXT NOT NULL,"
    " user_id TEXT NOT NULL,"  /* instance UUID */
    " since INTEGER NOT NULL,"
    " PRIMARY KEY (image_id, user_id));";

static const struct sqlite_migration index_steps[] = {
    {.what = "images and image_users", .sql = images_v1},
};

const struct sqlite_schema imgcache_schema = {"images", index_steps, ARRAY_SIZE(index_steps)};

#define ROW_COLUMNS                                                            \
    "id, digest, url, glance_id, state, format, size, virtual_size, path, "   \
    "created_at, last_used_at, error_code, error_message"

static const char *const state_names[] = {"downloading", "cached", "failed"};

const char *imgcache_state_name(enum imgcache_state s)
{
    return (unsigned)s < ARRAY_SIZE(state_names) ? state_names[s] : "failed";
}

static enum imgcache_state state_from_name(const char *s)
{
    for (size_t i = 0; i < ARRAY_SIZE(state_names); i++)
        if (s && strcmp(s, state_names[i]) == 0)
            return (enum imgcache_state)i;
    return IMGCACHE_FAILED;
}

void imgcache_row_clear(struct imgcache_row *r)
{
    free(r->url);
    free(r->path);
    free(r->error_message);
    r->url = r->path = r->error_message = NULL;
}

int imgcache_index_init(sqlite3 *db)
{
    const struct sqlite_schema *const s = &imgcache_schema;

    return sqlite_schema_migrate(db, &s, 1, NULL);
}

static int bind_row(sqlite3_stmt *s, const struct imgcache_row *r)
{
    int rc = SQLITE_OK;

    if (rc == SQLITE_OK) rc = sqlite3_bind_text(s, 1, r->id, -1, SQLITE_TRANSIENT);
    if (rc == SQLITE_OK) rc = sqlite_bind_text_nonempty(s, 2, r->digest);
    if (rc == SQLITE_OK) rc = sqlite_bind_text_nonempty(s, 3, r->url);
    if (rc == SQLITE_OK) rc = sqlite_bind_text_nonempty(s, 4, r->glance_id);
    if (rc == SQLITE_OK) rc = sqlite3_bind_text(s, 5, imgcache_state_name(r->state), -1, SQLITE_STATIC);
    if (rc == SQLITE_OK) rc = sqlite_bind_text_nonempty(s, 6, r->format);
    if (rc == SQLITE_OK) rc = sqlite_bind_int_nonneg(s, 7, r->size);
    if (rc == SQLITE_OK) rc = sqlite_bind_int_nonneg(s, 8, r->virtual_size);
    if (rc == SQLITE_OK) rc = sqlite_bind_text_nonempty(s, 9, r->path);
    if (rc == SQLITE_OK) rc = sqlite3_bind_int64(s, 10, r->created_at);
    if (rc == SQLITE_OK) rc = sqlite3_bind_int64(s, 11, r->last_used_at);
    if (rc == SQLITE_OK) rc = sqlite_bind_text_nonempty(s, 12, r->error_code);
    if (rc == SQLITE_OK) rc = sqlite_bind_text_nonempty(s, 13, r->error_message);
    return rc == SQLITE_OK ? 0 : -EIO;
}

/* -EEXIST for a constraint, -EIO for any other failure. */
static int step_done(sqlite3_stmt *s)
{
    int r = sqlite_step_done(s);

    return r == 0 || r == -EEXIST ? r : -EIO;
}

int imgcache_index_insert(sqlite3 *db, const struct imgcache_row *r)
{
    _cleanup_stmt_ sqlite3_stmt *s = NULL;

    if (sqlite3_prepare_v2(db, "INSERT INTO images (" ROW_COLUMNS ") VALUES "
                               "(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13)",
                           -1, &s, NULL) != SQLITE_OK ||
        bind_row(s, r) < 0)
        return -EIO;
    return step_done(s);
}

int imgcache_index_update(sqlite3 *db, const struct imgcache_row *r)
{
    _cleanup_stmt_ sqlite3_stmt *s = NULL;

    if (sqlite3_prepare_v2(db, "UPDATE images SET digest=?2, url=?3, glance_id=?4, state=?5, "
                               "format=?6, size=?7, virtual_size=?8, path=?9, created_at=?10, "
                               "last_used_at=?11, error_code=?12, error_message=?13 WHERE id=?1",
                           -1, &s, NULL) != SQLITE_OK ||
        bind_row(s, r) < 0)
        return -EIO;
    return step_done(s);
}


static int read_row(sqlite3_stmt *s, struct imgcache_row *r)
{
    struct imgcache_row out = {0};

    sqlite_col_copy(s, 0, out.id, sizeof(out.id));
    sqlite_col_copy(s, 1, out.digest, sizeof(out.digest));
    out.url = sqlite_col_dup(s, 2);
    sqlite_col_copy(s, 3, out.glance_id, sizeof(out.glance_id));
    out.state = state_from_name((const char *)sqlite3_column_text(s, 4));
    sqlite_col_copy(s, 5, out.format, sizeof(out.format));
    out.size = sqlite_col_int_or(s, 6, -1);
    out.virtual_size = sqlite_col_int_or(s, 7, -1);
    out.path = sqlite_col_dup(s, 8);
    out.created_at = sqlite3_column_int64(s, 9);
    out.last_used_at = sqlite3_column_int64(s, 10);
    sqlite_col_copy(s, 11, out.error_code, sizeof(out.error_code));
    out.error_message = sqlite_col_dup(s, 12);
    *r = out;
    return 0;
}

static int get_by(sqlite3 *db, const char *column_sql, const char *value, struct imgcache_row *r)
{
    _cleanup_stmt_ sqlite3_stmt *s = NULL;
    int rc;

    if (sqlite3_prepare_v2(db, column_sql, -1, &s, NULL) != SQLITE_OK ||
        sqlite3_bind_text(s, 1, value, -1, SQLITE_TRANSIENT) != SQLITE_OK)
        return -EIO;
    rc = sqlite3_step(s);
    if (rc == SQLITE_DONE)
        return -ENOENT;
    if (rc != SQLITE_ROW)
        return -EIO;
    return read_row(s, r);
}

int imgcache_index_get(sqlite3 *db, const char *id, struct imgcache_row *r)
{
    return get_by(db, "SELECT " ROW_COLUMNS " FROM images WHERE id=?1", id, r);
}

int imgcache_index_find_digest(sqlite3 *db, const char *digest, struct imgcache_row *r)
{
    return get_by(db, "SELECT " ROW_COLUMNS " FROM images WHERE digest=?1", digest, r);
}

int imgcache_index_find_glance(sqlite3 *db, const char *glance_id, struct imgcache_row *r)
{
    /* a cached row first, then one in flight, then the newest */
    return get_by(db,
                  "SELECT " ROW_COLUMNS " FROM images WHERE glance_id=?1 ORDER BY "
                  "CASE state WHEN 'cached' THEN 0 WHEN 'downloading' THEN 1 ELSE 2 END, "
                  "created_at DESC LIMIT 1",
                  glance_id, r);
}

static int exec_id(sqlite3 *db, const char *sql, const char *id)
{
    _cleanup_stmt_ sqlite3_stmt *s = NULL;

    if (sqlite3_prepare_v2(db, sql, -1, &s, NULL) != SQLITE_OK ||
        sqlite3_bind_text(s, 1, id, -1, SQLITE_TRANSIENT) != SQLITE_OK)
        return -EIO;
    return step_done(s);
}

int imgcache_index_delete(sqlite3 *db, const char *id)
{
    int r = exec_id(db, "DELETE FROM image_users WHERE image_id=?1", id);
    if (r < 0)
        return r;
    return exec_id(db, "DELETE FROM images WHERE id=?1", id);
}

int imgcache_index_touch(sqlite3 *db, const char *id, int64_t when_ms)
{
    _cleanup_stmt_ sqlite3_stmt *s = NULL;

    if (sqlite3_prepare_v2(db, "UPDATE images SET last_used_at=?2 WHERE id=?1", -1, &s, NULL) !=
            SQLITE_OK ||
        sqlite3_bind_text(s, 1, id, -1, SQLITE_TRANSIENT) != SQLITE_OK ||
        sqlite3_bind_int64(s, 2, when_ms) != SQLITE_OK)
        return -EIO;
    return step_done(s);
}

int imgcache_index_ids(sqlite3 *db, char (**ids)[IMGCACHE_ID_LEN], size_t *n)
{
    _cleanup_stmt_ sqlite3_stmt *s = NULL;
    char(*v)[IMGCACHE_ID_LEN] = NULL;
    size_t count = 0, cap = 0;
    int rc;

    if (sqlite3_prepare_v2(db, "SELECT id FROM images ORDER BY created_at, id", -1, &s, NULL) !=
        SQLITE_OK)
        return -EIO;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        if (count == cap) {
            size_t ncap = cap ? cap * 2 : 16;
            void *nv = realloc(v, ncap * sizeof(*v));
            if (!nv) {
                free(v);
                return -ENOMEM;
            }
            v = nv;
            cap = ncap;
        }
        sqlite_col_copy(s, 0, v[count], IMGCACHE_ID_LEN);
        count++;
    }
    if (rc != SQLITE_DONE) {
        free(v);
        return -EIO;
    }
    *ids = v;
    *n = count;
    return 0;
}

int imgcache_index_user_add(sqlite3 *db, const char *id, const char *user)
{
    _cleanup_stmt_ sqlite3_stmt *s = NULL;

    if (sqlite3_prepare_v2(db, "INSERT OR IGNORE INTO image_users (image_id, user_id, since) "
                               "VALUES (?1, ?2, ?3)",
                           -1, &s, NULL) != SQLITE_OK ||
        sqlite3_bind_text(s, 1, id, -1, SQLITE_TRANSIENT) != SQLITE_OK ||
        sqlite3_bind_text(s, 2, user, -1, SQLITE_TRANSIENT) != SQLITE_OK ||
        sqlite3_bind_int64(s, 3, now_wall_ms()) != SQLITE_OK)
        return -EIO;
    return step_done(s);
}

int imgcache_index_user_remove(sqlite3 *db, const char *id, const char *user, int64_t now_ms)
{
    _cleanup_stmt_ sqlite3_stmt *t = NULL, *d = NULL;
    int n;

    /* stamp the images first, while the pins still say which */
    if (sqlite3_prepare_v2(db, "UPDATE images SET last_used_at=?3 WHERE id IN (SELECT image_id "
                               "FROM image_users WHERE user_id=?2 AND (?1 IS NULL OR image_id=?1))",
                           -1, &t, NULL) != SQLITE_OK ||
        sqlite_bind_text(t, 1, id) != SQLITE_OK ||
        sqlite3_bind_text(t, 2, user, -1, SQLITE_TRANSIENT) != SQLITE_OK ||
        sqlite3_bind_int64(t, 3, now_ms) != SQLITE_OK || step_done(t) < 0)
        return -EIO;
    if (sqlite3_prepare_v2(db, "DELETE FROM image_users WHERE user_id=?2 AND "
                               "(?1 IS NULL OR image_id=?1)",
                           -1, &d, NULL) != SQLITE_OK ||
        sqlite_bind_text(d, 1, id) != SQLITE_OK ||
        sqlite3_bind_text(d, 2, user, -1, SQLITE_TRANSIENT) != SQLITE_OK || step_done(d) < 0)
        return -EIO;
    n = sqlite3_changes(db);
    return n;
}

int imgcache_index_user_move(sqlite3 *db, const char *from_id, const char *to_id)
{
    _cleanup_stmt_ sqlite3_stmt *s = NULL;

    if (sqlite3_prepare_v2(db, "INSERT OR IGNORE INTO image_users (image_id, user_id, since) "
                               "SELECT ?2, user_id, since FROM image_users WHERE image_id=?1",
                           -1, &s, NULL) != SQLITE_OK ||
        sqlite3_bind_text(s, 1, from_id, -1, SQLITE_TRANSIENT) != SQLITE_OK ||
        sqlite3_bind_text(s, 2, to_id, -1, SQLITE_TRANSIENT) != SQLITE_OK || step_done(s) < 0)
        return -EIO;
    return imgcache_index_users_clear(db, from_id);
}

int imgcache_index_users_clear(sqlite3 *db, const char *id)
{
    return exec_id(db, "DELETE FROM image_users WHERE image_id=?1", id);
}

json_t *imgcache_index_users(sqlite3 *db, const char *id)
{
    _cleanup_stmt_ sqlite3_stmt *s = NULL;
    json_t *a = json_array();
    int rc;

    if (!a)
        return NULL;
    if (sqlite3_prepare_v2(db, "SELECT user_id FROM image_users WHERE image_id=?1 "
                               "ORDER BY since, user_id",
                           -1, &s, NULL) != SQLITE_OK ||
        sqlite3_bind_text(s, 1, id, -1, SQLITE_TRANSIENT) != SQLITE_OK) {
        json_decref(a);
        return NULL;
    }
    while ((rc = sqlite3_step(s)) == SQLITE_ROW)
        json_array_append_new(a, json_string((const char *)sqlite3_column_text(s, 0)));
    if (rc != SQLITE_DONE) {
        json_decref(a);
        return NULL;
    }
    return a;
}

int imgcache_index_user_count(sqlite3 *db, const char *id)
{
    _cleanup_stmt_ sqlite3_stmt *s = NULL;

    if (sqlite3_prepare_v2(db, "SELECT COUNT(*) FROM image_users WHERE image_id=?1", -1, &s,
                           NULL) != SQLITE_OK ||
        sqlite3_bind_text(s, 1, id, -1, SQLITE_TRANSIENT) != SQLITE_OK ||
        sqlite3_step(s) != SQLITE_ROW)
        return -EIO;
    return sqlite3_column_int(s, 0);
}

int imgcache_index_cached_bytes(sqlite3 *db, uint64_t *bytes)
{
    _cleanup_stmt_ sqlite3_stmt *s = NULL;

    if (sqlite3_prepare_v2(db, "SELECT COALESCE(SUM(size), 0) FROM images WHERE state='cached'",
                           -1, &s, NULL) != SQLITE_OK ||
        sqlite3_step(s) != SQLITE_ROW)
        return -EIO;
    *bytes = (uint64_t)sqlite3_column_int64(s, 0);
    return 0;
}

int imgcache_index_victims(sqlite3 *db, struct imgcache_victim **v, size_t *n)
{
    _cleanup_stmt_ sqlite3_stmt *s = NULL;
    struct imgcache_victim *out = NULL;
    size_t count = 0, cap = 0;
    int rc;

    if (sqlite3_prepare_v2(db, "SELECT id, COALESCE(size, 0), last_used_at FROM images "
                               "WHERE state='cached' AND id NOT IN "
                               "(SELECT image_id FROM image_users) "
                               "ORDER BY last_used_at, created_at, id",
                           -1, &s, NULL) != SQLITE_OK)
        return -EIO;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        if (count == cap) {
            size_t ncap = cap ? cap * 2 : 16;
            void *nv = realloc(out, ncap * sizeof(*out));
            if (!nv) {
                free(out);
                return -ENOMEM;
            }
            out = nv;
            cap = ncap;
        }
        sqlite_col_copy(s, 0, out[count].id, sizeof(out[count].id));
        out[count].size = sqlite3_column_int64(s, 1);
        out[count].last_used_at = sqlite3_column_int64(s, 2);
        count++;
    }
    if (rc != SQLITE_DONE) {
        free(out);
        return -EIO;
    }
    *v = out;
    *n = count;
    return 0;
}
