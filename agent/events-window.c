/* events-window.c: see events-window.h. */
#include "agent/events-window.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "agent/events.h"
#include "agent/log.h"
#include "common/util.h"

struct evwin {
    sqlite3 *db;
    int64_t max_events, max_bytes;
    int64_t rows, bytes;      /* in the table (an upper bound after a rollback) */
    sqlite3_stmt *add, *cut_count, *cut_bytes, *del, *stats, *last, *read, *min;
};

static int prep(sqlite3 *db, const char *sql, sqlite3_stmt **st)
{
    return sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, st, NULL) == SQLITE_OK ? 0 : -1;
}

/* rows and bytes as the table holds them */
static void recount(struct evwin *w)
{
    if (sqlite3_step(w->stats) == SQLITE_ROW) {
        w->rows = sqlite3_column_int64(w->stats, 0);
        w->bytes = sqlite3_column_int64(w->stats, 1);
    }
    sqlite3_reset(w->stats);
}

static int trim(struct evwin *w);

struct evwin *evwin_new(sqlite3 *db, int64_t max_events, int64_t max_bytes)
{
    struct evwin *w = calloc(1, sizeof(*w));

    if (!w)
        return NULL;
    w->db = db;
    w->max_events = max_events > 0 ? max_events : 1000;
    w->max_bytes = max_bytes > 0 ? max_bytes : 4 << 20;
    if (prep(db, "INSERT INTO event_log (seq, key, instance_id, type, payload, created_ms)"
                 " VALUES (?1, ?2, ?3, ?4, ?5, ?6)", &w->add) < 0 ||
        /* the newest seq beyond the count: it and all before it go */
        prep(db, "SELECT seq FROM event_log ORDER BY seq DESC LIMIT 1 OFFSET ?1", &w->cut_count) < 0 ||
        /* the newest seq at which the bytes, summed from the newest, pass the bound */
        prep(db, "SELECT seq FROM (SELECT seq, sum(length(CAST(payload AS BLOB))) OVER (ORDER BY seq DESC)"
                 " AS tot FROM event_log) WHERE tot > ?1 ORDER BY seq DESC LIMIT 1", &w->cut_bytes) < 0 ||
        prep(db, "DELETE FROM event_log WHERE seq <= ?1", &w->del) < 0 ||
        prep(db, "SELECT count(*), CAST(total(length(CAST(payload AS BLOB))) AS INTEGER) FROM event_log",
             &w->stats) < 0 ||
        prep(db, "SELECT seq FROM sqlite_sequence WHERE name = 'outbox'", &w->last) < 0 ||
        prep(db, "SELECT min(seq) FROM event_log", &w->min) < 0 ||
        prep(db, "SELECT seq, key, payload FROM event_log WHERE seq > ?1"
                 " AND (?2 IS NULL OR instance_id = ?2 OR json_extract(payload, '$.ec2_id') = ?2)"
                 " AND (?3 IS NULL OR type GLOB ?3) ORDER BY seq LIMIT ?4", &w->read) < 0) {
        log_error("cannot prepare the event window's statements", "error=%s", sqlite3_errmsg(db));
        evwin_free(w);
        return NULL;
    }
    recount(w);
    /* the window may have shrunk since the last run */
    if ((w->rows > w->max_events || w->bytes > w->max_bytes) && trim(w) < 0)
        log_warn("cannot trim the event window", "error=%s", sqlite3_errmsg(db));
    return w;
}

void evwin_free(struct evwin *w)
{
    if (!w)
        return;
    sqlite3_finalize(w->add);
    sqlite3_finalize(w->cut_count);
    sqlite3_finalize(w->cut_bytes);
    sqlite3_finalize(w->del);
    sqlite3_finalize(w->stats);
    sqlite3_finalize(w->last);
    sqlite3_finalize(w->min);
    sqlite3_finalize(w->read);
    free(w);
}

/* The seq st (one integer parameter bound to v) answers, or 0. */
static int64_t cut_at(sqlite3_stmt *st, int64_t v)
{
    int64_t seq = 0;

    sqlite3_bind_int64(st, 1, v);
    if (sqlite3_step(st) == SQLITE_ROW)
        seq = sqlite3_column_int64(st, 0);
    sqlite3_reset(st);
    return seq;
}

static int trim(struct evwin *w)
{
    int64_t a = w->rows > w->max_events ? cut_at(w->cut_count, w->max_events) : 0;
    int64_t b = w->bytes > w->max_bytes ? cut_at(w->cut_bytes, w->max_bytes) : 0;
    int64_t upto = a > b ? a : b;
    int rc;

    if (upto > 0) {
        sqlite3_bind_int64(w->del, 1, upto);
        rc = sqlite3_step(w->del);
        sqlite3_reset(w->del);
        if (rc != SQLITE_DONE)
            return -EIO;
    }
    recount(w);
    return 0;
}

int evwin_add(struct evwin *w, int64_t seq, const char *key, const json_t *payload, const char *text)
{
    const char *inst = json_string_value(json_object_get(payload, "instance_id"));
    const char *type = json_string_value(json_object_get(payload, "event"));
    size_t len = strlen(text);
    int rc;

    sqlite3_bind_int64(w->add, 1, seq);
    sqlite3_bind_text(w->add, 2, key, -1, SQLITE_TRANSIENT);
    if (inst)
        sqlite3_bind_text(w->add, 3, inst, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(w->add, 4, type ? type : "", -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(w->add, 5, text, (int)len, SQLITE_TRANSIENT);
    sqlite3_bind_int64(w->add, 6, now_wall_ms());
    rc = sqlite3_step(w->add);
    sqlite3_reset(w->add);
    sqlite3_clear_bindings(w->add);
    if (rc != SQLITE_DONE)
        return -EIO;
    w->rows++;
    w->bytes += (int64_t)len;
    if (w->rows > w->max_events || w->bytes > w->max_bytes)
        return trim(w);
    return 0;
}

int64_t evwin_last(struct evwin *w)
{
    int64_t seq = 0;
    int rc = sqlite3_step(w->last);

    if (rc == SQLITE_ROW)
        seq = sqlite3_column_int64(w->last, 0);
    sqlite3_reset(w->last);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? seq : -EIO;
}

int evwin_read(struct evwin *w, const struct events_query *q, json_t **page)
{
    int64_t last = evwin_last(w), first, after = q->after, next, n = 0;
    json_t *list = json_array();
    int rc;

    if (last < 0 || !list) {
        json_decref(list);
        return last < 0 ? -EIO : -ENOMEM;
    }
    rc = sqlite3_step(w->min);
    first = rc == SQLITE_ROW && sqlite3_column_type(w->min, 0) != SQLITE_NULL ? sqlite3_column_int64(w->min, 0)
                                                                              : last + 1;
    sqlite3_reset(w->min);
    if (after < 0)
        after = first - 1; /* from the oldest kept */
    if (after > last) {
        json_decref(list);
        return -ERANGE;
    }
    next = after;
    sqlite3_bind_int64(w->read, 1, after);
    if (q->instance)
        sqlite3_bind_text(w->read, 2, q->instance, -1, SQLITE_STATIC);
    if (q->type)
        sqlite3_bind_text(w->read, 3, q->type, -1, SQLITE_STATIC);
    sqlite3_bind_int64(w->read, 4, q->limit);
    while ((rc = sqlite3_step(w->read)) == SQLITE_ROW) {
        const char *key = (const char *)sqlite3_column_text(w->read, 1);
        json_t *msg = json_loads((const char *)sqlite3_column_text(w->read, 2), 0, NULL);
        next = sqlite3_column_int64(w->read, 0);
        json_array_append_new(list, json_pack("{s:I, s:o, s:o}", "seq", (json_int_t)next, "key",
                                              key ? json_string(key) : json_null(), "message",
                                              msg ? msg : json_null()));
        n++;
    }
    sqlite3_reset(w->read);
    sqlite3_clear_bindings(w->read);
    if (rc != SQLITE_DONE) {
        json_decref(list);
        return -EIO;
    }
    /* a page not full: everything up to last was looked at */
    if (n < q->limit && last > next)
        next = last;
    *page = json_pack("{s:o, s:I, s:I, s:I, s:b}", "events", list, "next_after", (json_int_t)next, "first_seq",
                      (json_int_t)first, "last_seq", (json_int_t)last, "truncated", after < first - 1);
    return *page ? (int)n : -ENOMEM;
}
