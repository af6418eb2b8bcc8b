/* log.c: see log.h. */
#include "agent/log.h"

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
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

/* A bounded line being written; overflow truncates silently (the newline is
 * added by the caller, always). */
struct line {
    char *buf;
    size_t size, len; /* len < size always */
};

static void put_mem(struct line *l, const char *s, size_t n)
{
    if (l->len + 1 >= l->size)
        return;
    if (n > l->size - 1 - l->len)
        n = l->size - 1 - l->len;
    memcpy(l->buf + l->len, s, n);
    l->len += n;
    l->buf[l->len] = '\0';
}

static void put_ch(struct line *l, char c)
{
    put_mem(l, &c, 1);
}

static void put_hex(struct line *l, unsigned char c)
{
    static const char hex[] = "0123456789abcdef";
    char e[4] = {'\\', 'x', hex[c >> 4], hex[c & 15]};
    put_mem(l, e, sizeof(e));
}

/* Length of the valid UTF-8 sequence at p (n bytes left), or 0 when it is
 * not one (overlong forms, surrogates and values above U+10FFFF included).
 * *cp receives the code point. */
static size_t utf8_seq(const unsigned char *p, size_t n, uint32_t *cp)
{
    size_t len;
    uint32_t c, min;

    if (p[0] < 0x80) {
        *cp = p[0];
        return 1;
    } else if ((p[0] & 0xe0) == 0xc0) {
        len = 2, c = p[0] & 0x1f, min = 0x80;
    } else if ((p[0] & 0xf0) == 0xe0) {
        len = 3, c = p[0] & 0x0f, min = 0x800;
    } else if ((p[0] & 0xf8) == 0xf0) {
        len = 4, c = p[0] & 0x07, min = 0x10000;
    } else {
        return 0;
    }
    if (len > n)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        c = (c << 6) | (p[i] & 0x3f);
    }
    if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
        return 0;
    *cp = c;
    return len;
}

bool log_unsafe_codepoint(uint32_t c)
{
    return c < 0x20 || c == 0x7f ||
           (c >= 0x80 && c <= 0x9f) ||      /* C1 controls */
           c == 0x061c ||                   /* arabic letter mark */
           c == 0x200e || c == 0x200f ||    /* LRM, RLM */
           (c >= 0x2028 && c <= 0x202e) ||  /* line/paragraph separators, bidi embeddings and overrides */
           (c >= 0x2066 && c <= 0x2069) ||  /* bidi isolates */
           c == 0xfeff;                     /* BOM / zero-width no-break space */
}

/* Does the value need quotes to stay one token of one line? */
static bool needs_quotes(const unsigned char *s, size_t n)
{
    if (n == 0)
        return true;
    for (size_t i = 0; i < n; i++)
        if (s[i] <= 0x20 || s[i] >= 0x7f || s[i] == '"' || s[i] == '=' || s[i] == '\\')
            return true;
    return false;
}

/* Append a value: as is when it is a plain token, else in double quotes with
 * '"' and '\' escaped and every control character, C1 control, bidi control
 * and byte that is not valid UTF-8 written as \xNN (per byte). */
static void put_value(struct line *l, const char *value, size_t n)
{
    const unsigned char *s = (const unsigned char *)value;

    if (!needs_quotes(s, n)) {
        put_mem(l, value, n);
        return;
    }
    put_ch(l, '"');
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t k = utf8_seq(s + i, n - i, &cp);
        if (k == 0 || log_unsafe_codepoint(cp)) {
            for (size_t j = 0; j < (k ? k : 1); j++)
                put_hex(l, s[i + j]);
            i += k ? k : 1;
        } else if (cp == '"' || cp == '\\') {
            put_ch(l, '\\');
            put_ch(l, (char)cp);
            i++;
        } else {
            put_mem(l, value + i, k);
            i += k;
        }
    }
    put_ch(l, '"');
}

const char *log_quote(const char *value, char *buf, unsigned size)
{
    struct line l = {buf, size, 0};

    if (!size)
        return buf;
    buf[0] = '\0';
    put_value(&l, value ? value : "", value ? strlen(value) : 0);
    return buf;
}

/* Format `fields` (a printf format of literal "key=" text and conversions)
 * into l, every %s value going through put_value(). Supported conversions:
 * d i u x X o c s p and %%, with flags, width, precision (also *) and the
 * length modifiers hh h l ll z j t. Anything else ends the formatting: the
 * format strings are the agent's own and checked by the compiler. */
static void put_fields(struct line *l, const char *fmt, va_list ap)
{
    const char *p = fmt;

    while (*p) {
        const char *start;
        char spec[32];
        int width = -1, prec = -1, lenmod = 0; /* 1 h, 2 hh, 3 l, 4 ll, 5 z, 6 j, 7 t */
        size_t sn;

        if (*p != '%') {
            const char *q = strchr(p, '%');
            size_t n = q ? (size_t)(q - p) : strlen(p);
            put_mem(l, p, n);
            p += n;
            continue;
        }
        start = p++;
        if (*p == '%') {
            put_ch(l, '%');
            p++;
            continue;
        }
        while (*p && strchr("-+ #0", *p))
            p++;
        if (*p == '*') {
            width = va_arg(ap, int);
            p++;
        } else {
            while (*p >= '0' && *p <= '9')
                p++;
        }
        if (*p == '.') {
            p++;
            if (*p == '*') {
                prec = va_arg(ap, int);
                p++;
            } else {
                prec = 0;
                while (*p >= '0' && *p <= '9')
                    prec = prec * 10 + (*p++ - '0');
            }
        }
        if (*p == 'h') {
            lenmod = p[1] == 'h' ? 2 : 1;
            p += lenmod;
        } else if (*p == 'l') {
            lenmod = p[1] == 'l' ? 4 : 3;
            p += lenmod == 4 ? 2 : 1;
        } else if (*p == 'z') {
            lenmod = 5, p++;
        } else if (*p == 'j') {
            lenmod = 6, p++;
        } else if (*p == 't') {
            lenmod = 7, p++;
        }
        if (!*p || strchr("diuxXocsp", *p) == NULL)
            return;
        if (*p == 's') {
            const char *s = va_arg(ap, const char *);
            size_t n;
            if (!s)
                s = "(null)";
            n = prec >= 0 ? strnlen(s, (size_t)prec) : strlen(s);
            put_value(l, s, n);
            p++;
            continue;
        }
        /* a numeric conversion: rebuild it without '*' and print it alone
         * (spec is a copy of part of the caller's literal, checked format) */
        sn = (size_t)(p + 1 - start);
        if (sn >= sizeof(spec) || memchr(start, '*', sn))
            return;
        memcpy(spec, start, sn);
        spec[sn] = '\0';
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
        {
            char num[64];
            int k = 0;
            (void)width;
            switch (*p) {
            case 'c': {
                char c = (char)va_arg(ap, int);
                put_value(l, &c, 1);
                break;
            }
            case 'p':
                k = snprintf(num, sizeof(num), "%p", va_arg(ap, void *));
                break;
            case 'd':
            case 'i':
                switch (lenmod) {
                case 3: k = snprintf(num, sizeof(num), spec, va_arg(ap, long)); break;
                case 4: k = snprintf(num, sizeof(num), spec, va_arg(ap, long long)); break;
                case 5: k = snprintf(num, sizeof(num), spec, va_arg(ap, ssize_t)); break;
                case 6: k = snprintf(num, sizeof(num), spec, va_arg(ap, intmax_t)); break;
                case 7: k = snprintf(num, sizeof(num), spec, va_arg(ap, ptrdiff_t)); break;
                default: k = snprintf(num, sizeof(num), spec, va_arg(ap, int)); break;
                }
                break;
            default: /* u x X o */
                switch (lenmod) {
                case 3: k = snprintf(num, sizeof(num), spec, va_arg(ap, unsigned long)); break;
                case 4: k = snprintf(num, sizeof(num), spec, va_arg(ap, unsigned long long)); break;
                case 5: k = snprintf(num, sizeof(num), spec, va_arg(ap, size_t)); break;
                case 6: k = snprintf(num, sizeof(num), spec, va_arg(ap, uintmax_t)); break;
                case 7: k = snprintf(num, sizeof(num), spec, va_arg(ap, ptrdiff_t)); break;
                default: k = snprintf(num, sizeof(num), spec, va_arg(ap, unsigned)); break;
                }
                break;
            }
            if (k > 0)
                put_mem(l, num, (size_t)k < sizeof(num) ? (size_t)k : sizeof(num) - 1);
        }
#pragma GCC diagnostic pop
        p++;
    }
}

void log_vformat(char *buf, size_t size, enum log_level lvl, const char *msg, const char *fields,
                 va_list ap)
{
    char ts[32];
    struct line l = {buf, size, 0};

    if (!size)
        return;
    buf[0] = '\0';
    format_rfc3339_ms(now_wall_ms(), ts);
    put_mem(&l, "ts=", 3);
    put_mem(&l, ts, strlen(ts));
    put_mem(&l, " level=", 7);
    put_mem(&l, level_names[lvl], strlen(level_names[lvl]));
    /* msg keeps its quotes always, as before */
    put_mem(&l, " msg=", 5);
    {
        const char *m = msg ? msg : "";
        size_t before = l.len;
        put_value(&l, m, strlen(m));
        if (l.buf[before] != '"') { /* a plain token: quote it anyway */
            l.len = before;
            l.buf[before] = '\0';
            put_ch(&l, '"');
            put_mem(&l, m, strlen(m));
            put_ch(&l, '"');
        }
    }
    if (fields && *fields) {
        put_ch(&l, ' ');
        put_fields(&l, fields, ap);
    }
}

void log_event(enum log_level lvl, const char *msg, const char *fields, ...)
{
    char line[4096];
    size_t n;
    va_list ap;

    if (lvl < log_level_current)
        return;
    va_start(ap, fields);
    log_vformat(line, sizeof(line) - 1, lvl, msg, fields, ap);
    va_end(ap);
    /* one write per line so concurrent writers never interleave a line */
    n = strlen(line);
    line[n++] = '\n';
    (void)!write(STDERR_FILENO, line, n);
}
