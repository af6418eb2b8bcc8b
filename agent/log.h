/* log.h: one line per event, key=value fields, to stderr.
 *   ts=2026-11-23T20:10:11.123Z level=info msg="instance launched" instance=... op=...
 * The log level is the one piece of global mutable state in the agent. */
#ifndef CA_AGENT_LOG_H
#define CA_AGENT_LOG_H

#include <stdbool.h>

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };

extern enum log_level log_level_current;

/* "debug"|"info"|"warn"|"error" -> level; -EINVAL on anything else. */
int log_level_parse(const char *s, enum log_level *ret);

/* Write one line: msg is quoted; fields is a printf format for further
 * "key=value" pairs (values with spaces or quotes must go through
 * log_quote()). fields may be NULL. */
void log_event(enum log_level lvl, const char *msg, const char *fields, ...)
    __attribute__((format(printf, 3, 4)));

/* Quote a value for a key=value field into buf (always terminated); returns
 * buf. Control characters are escaped so one event stays one line. */
const char *log_quote(const char *value, char *buf, unsigned size);

#define log_debug(...) do { if (log_level_current <= LOG_DEBUG) log_event(LOG_DEBUG, __VA_ARGS__); } while (0)
#define log_info(...) log_event(LOG_INFO, __VA_ARGS__)
#define log_warn(...) log_event(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_event(LOG_ERROR, __VA_ARGS__)

#endif
