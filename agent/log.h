/* log.h: one line per event, key=value fields, to stderr.
 *   ts=2026-11-23T20:10:11.123Z level=info msg="instance launched" instance=... op=...
 * Every value is the logger's to quote: a value that is not a plain token
 * (empty, or holding a space, '"', '=', '\', a control character or any byte
 * outside printable ASCII) is written in double quotes, with '"' and '\'
 * backslash-escaped and control characters (C0, DEL, C1), bidi controls,
 * line separators and bytes that are not valid UTF-8 written as \xNN. So no
 * value, whatever a client put in it, can end a line, start a field or fake
 * another event. The log level is the one piece of global mutable state in
 * the agent. */
#ifndef CA_AGENT_LOG_H
#define CA_AGENT_LOG_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };

extern enum log_level log_level_current;

/* "debug"|"info"|"warn"|"error" -> level; -EINVAL on anything else. */
int log_level_parse(const char *s, enum log_level *ret);

/* Write one line: msg is quoted; fields is a printf format of literal
 * "key=" text and conversions for further "key=value" pairs. Every %s value
 * is quoted and escaped as above: write `key=%s`, never `key=\"%s\"`.
 * Conversions: d i u x X o c s p %%, flags, width, precision, hh h l ll z j t.
 * fields may be NULL. */
void log_event(enum log_level lvl, const char *msg, const char *fields, ...)
    __attribute__((format(printf, 3, 4)));

/* log_event()'s formatting into buf (always terminated, truncated to size),
 * without the newline; for tests. */
void log_vformat(char *buf, size_t size, enum log_level lvl, const char *msg, const char *fields,
                 va_list ap);

/* Quote a value the way log_event() does into buf (always terminated);
 * returns buf. */
const char *log_quote(const char *value, char *buf, unsigned size);

/* A code point no value written to a log or accepted in a name may hold:
 * C0 and C1 controls, DEL, bidi embeddings/overrides/isolates and marks,
 * line and paragraph separators, the BOM. */
bool log_unsafe_codepoint(uint32_t c);

#define log_debug(...) do { if (log_level_current <= LOG_DEBUG) log_event(LOG_DEBUG, __VA_ARGS__); } while (0)
#define log_info(...) log_event(LOG_INFO, __VA_ARGS__)
#define log_warn(...) log_event(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_event(LOG_ERROR, __VA_ARGS__)

#endif
