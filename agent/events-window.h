/* events-window.h: INTERNAL to agent/events.c: the window of recent events
 * GET /v1/events serves (events.h's events_window_read() is its face).
 * Every outbox row is copied, in the transaction that writes it, into the
 * event_log table under the row's id (AUTOINCREMENT: increasing, never
 * reused, kept across restarts), and the oldest copies are dropped beyond
 * N events or B bytes of JSON. Loop thread only. */
#ifndef CA_AGENT_EVENTS_WINDOW_H
#define CA_AGENT_EVENTS_WINDOW_H

#include <jansson.h>
#include <sqlite3.h>
#include <stdint.h>

struct events_query;
struct evwin;

/* On db (whose store made event_log); max_events, max_bytes > 0. NULL on
 * failure. */
struct evwin *evwin_new(sqlite3 *db, int64_t max_events, int64_t max_bytes);
void evwin_free(struct evwin *w);
/* Keep the outbox row seq (payload: its JSON, text: the same dumped), then
 * drop what is beyond the window. Inside the caller's transaction. 0 or
 * -EIO. */
int evwin_add(struct evwin *w, int64_t seq, const char *key, const json_t *payload, const char *text);
/* See events_window_read() and events_last_seq(). */
int evwin_read(struct evwin *w, const struct events_query *q, json_t **page);
int64_t evwin_last(struct evwin *w);

#endif
