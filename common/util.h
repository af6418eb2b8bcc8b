/* util.h: small helpers shared by every module: cleanup attributes, ownership
 * transfer, error values that carry a message and the field at fault. */
#ifndef CA_COMMON_UTIL_H
#define CA_COMMON_UTIL_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* Hand a pointer over: returns it and clears the variable, so a _cleanup_
 * attribute on that variable no longer frees it. */
#define TAKE_PTR(p)                                                            \
    ({                                                                         \
        __typeof__(p) _took = (p);                                             \
        (p) = NULL;                                                            \
        _took;                                                                 \
    })

static inline void freep(void *p) { free(*(void **)p); }
static inline void closep(int *fd)
{
    if (*fd >= 0)
        close(*fd);
}
static inline void fclosep(FILE **f)
{
    if (*f)
        fclose(*f);
}
#define _cleanup_(f) __attribute__((cleanup(f)))
#define _cleanup_free_ _cleanup_(freep)
#define _cleanup_close_ _cleanup_(closep)
#define _cleanup_fclose_ _cleanup_(fclosep)

/* An error a user must read: a stable code ("invalid_field", "not_found"...),
 * a message, and the request field at fault (JSON path) when there is one.
 * Filled by the function that fails; the caller decides whether to log it. */
struct agent_error {
    char code[32];
    char field[96];
    char message[512];
};

/* Fill *err (if not NULL) and return -errnum (errnum given positive).
 * field may be NULL. */
int agent_error_set(struct agent_error *err, int errnum, const char *code,
                    const char *field, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* Replace, in place, every byte not part of a valid UTF-8 sequence by '?'
 * (what JSON strings need). agent_error_set() does it to what it fills. */
void utf8_scrub(char *s);

/* Bounded string copy that always terminates; returns -ENAMETOOLONG if cut. */
int strscpy(char *dst, const char *src, size_t size);

/* Parse a decimal integer strictly (whole string, range-checked). */
int parse_int64(const char *s, int64_t min, int64_t max, int64_t *ret);

/* Monotonic clock in nanoseconds. */
uint64_t now_mono_ns(void);
/* Wall clock in milliseconds since the epoch. */
int64_t now_wall_ms(void);
/* RFC 3339 UTC with milliseconds ("2026-11-23T20:10:11.123Z") into buf[32]. */
void format_rfc3339_ms(int64_t ms, char buf[32]);

/* Random bytes from getrandom(); 0 or -errno. */
int random_bytes(void *buf, size_t len);
/* A new random (version 4) UUID in canonical form into buf[37]. */
int uuid_generate_str(char buf[37]);
bool uuid_is_valid(const char *s);

/* A copy of url fit to show (API answers, errors, logs): userinfo
 * ("user:pass@") becomes "***@", and the values of query parameters whose
 * name suggests a credential (sig, signature, token, key, secret, password,
 * credential, auth: X-Amz-Signature, access_token...) become "***".
 * Newly allocated (free it); NULL if url is NULL or memory runs out. */
char *url_redact(const char *url);

#endif
