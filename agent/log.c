/* log.c: see log.h. */
#include "agent/log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "common/util.h"

enum log_level log_level_current = LOG_INFO;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

int log_level_parse(const char *s, enum log_level *ret)
{
    for (unsigned i = 0; i < ARRAY_SIZE(level_names); i++) {
        if (s && strcmp(s, level_names[i]) == 0) {
            *ret = (enum log_level)i;
            return 0;
        }
    }
    if (s && strcmp(s, "warning") == 0) {
        *ret = LOG_WARN;
        return 0;
    }
    return -EINVAL;
}

const char *log_quote(const char *value, char *buf, unsigned size)
{
    unsigned o = 0;

    if (size < 3) {
        if (size)
            buf[0] = '\0';
        return buf;
    }
    buf[o++] = '"';
    for (const unsigned char *p = (const unsigned char *)(value ? value : "");
         *p && o + 6 < size; p++) {
        if (*p == '"' || *p == '\\') {
            buf[o++] = '\\';
            buf[o++] = (char)*p;
        } else if (*p < 0x20 || *p == 0x7f) {
            o += (unsigned)snprintf(buf + o, size - o, "\\x%02x", *p);
        } else {
            buf[o++] = (char)*p;
        }
    }
    buf[o++] = '"';
    buf[o] = '\0';
    return buf;
}

void log_event(enum log_level lvl, const char *msg, const char *fields, ...)
{
    char ts[32], qmsg[1024], line[4096];
    int n;

    if (lvl < log_level_current)
        return;
    format_rfc3339_ms(now_wall_ms(), ts);
    n = snprintf(line, sizeof(line), "ts=%s level=%s msg=%s", ts, level_names[lvl],
                 log_quote(msg, qmsg, sizeof(qmsg)));
    if (fields && n > 0 && (size_t)n < sizeof(line) - 2) {
        va_list ap;
        line[n++] = ' ';
        va_start(ap, fields);
        vsnprintf(line + n, sizeof(line) - (size_t)n, fields, ap);
        va_end(ap);
    }
    /* one write per line so concurrent writers never interleave a line */
    n = (int)strnlen(line, sizeof(line) - 2);
    line[n++] = '\n';
    (void)!write(STDERR_FILENO, line, (size_t)n);
}
