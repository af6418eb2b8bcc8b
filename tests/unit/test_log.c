/* Unit tests: the logger quotes and escapes every value, so no value can end a
 * line, start a field or forge another event; numbers are printed as given. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "agent/instance.h"
#include "agent/log.h"

static char out[4096];

static const char *fmt(const char *fields, ...) __attribute__((format(printf, 1, 2)));
static const char *fmt(const char *fields, ...)
{
    va_list ap;
    const char *p;

    va_start(ap, fields);
    log_vformat(out, sizeof(out), LOG_INFO, "m", fields, ap);
    va_end(ap);
    /* skip "ts=... level=info msg="m" " */
    p = strstr(out, "msg=\"m\"");
    assert_non_null(p);
    p += strlen("msg=\"m\"");
    return *p == ' ' ? p + 1 : p;
}

static void test_plain_tokens_stay_bare(void **state)
{
    (void)state;
    assert_string_equal(fmt("a=%s b=%s", "abc", "x-1_2.3/4:5"), "a=abc b=x-1_2.3/4:5");
    assert_string_equal(fmt("n=%d u=%u z=%zu ll=%lld llu=%llu x=%x", -3, 4u, (size_t)5, -6LL, 7ULL, 255),
                        "n=-3 u=4 z=5 ll=-6 llu=7 x=ff");
    assert_string_equal(fmt("pct=%d%%", 50), "pct=50%");
    assert_string_equal(fmt("p=%.3s", "abcdef"), "p=abc");
    assert_string_equal(fmt("w=%5d", 42), "w=   42");
    assert_string_equal(fmt("s=%s", (char *)NULL), "s=(null)");
    assert_string_equal(fmt("c=%c", 'q'), "c=q");
}

static void test_values_needing_quotes(void **state)
{
    (void)state;
    assert_string_equal(fmt("a=%s", ""), "a=\"\"");
    assert_string_equal(fmt("a=%s", "two words"), "a=\"two words\"");
    assert_string_equal(fmt("a=%s", "k=v"), "a=\"k=v\"");
    assert_string_equal(fmt("a=%s", "say \"hi\"\\"), "a=\"say \\\"hi\\\"\\\\\"");
    assert_string_equal(fmt("a=%s", "caf\xc3\xa9"), "a=\"caf\xc3\xa9\"");
}

static void test_forged_lines_are_escaped(void **state)
{
    const char *r;

    (void)state;
    r = fmt("path=%s", "/v1/x\n" "ts=2026 level=error msg=\"forged\"");
    assert_null(strchr(r, '\n'));
    assert_string_equal(r, "path=\"/v1/x\\x0ats=2026 level=error msg=\\\"forged\\\"\"");
    r = fmt("id=%s", "a\r\x1b[31mred\x07\x7f");
    assert_string_equal(r, "id=\"a\\x0d\\x1b[31mred\\x07\\x7f\"");
    /* C1 control U+0085 (next line), RLO U+202E, LINE SEPARATOR U+2028 */
    r = fmt("n=%s", "x\xc2\x85y\xe2\x80\xaez\xe2\x80\xa8");
    assert_string_equal(r, "n=\"x\\xc2\\x85y\\xe2\\x80\\xaez\\xe2\\x80\\xa8\"");
    /* not UTF-8: every stray byte escaped */
    r = fmt("n=%s", "\xff\xc3(");
    assert_string_equal(r, "n=\"\\xff\\xc3(\"");
    /* nothing but the literal format can make a field */
    r = fmt("a=%s b=%s", "1 level=error", "2");
    assert_string_equal(r, "a=\"1 level=error\" b=2");
}

static void test_truncation_keeps_terminated(void **state)
{
    char big[8192];
    char buf[64];
    va_list ap;

    (void)state;
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    assert_true(strlen(fmt("big=%s", big)) < sizeof(out));
    (void)ap;
    assert_string_equal(log_quote("a b", buf, sizeof(buf)), "\"a b\"");
    assert_string_equal(log_quote("ab", buf, sizeof(buf)), "ab");
    assert_string_equal(log_quote("abcdef", buf, 4), "abc");
}

static void test_request_id_rule(void **state)
{
    struct agent_error err;
    char long_id[200];

    (void)state;
    assert_int_equal(request_id_check("req-1 ok", 8, "request_id", &err), 0);
    assert_int_equal(request_id_check("", 0, "request_id", &err), -EINVAL);
    assert_string_equal(err.field, "request_id");
    /* dup\0A and dup\0B must not collide as "dup" */
    assert_int_equal(request_id_check("dup\0A", 5, "request_id", &err), -EINVAL);
    assert_int_equal(request_id_check("a\nb", 3, "request_id", &err), -EINVAL);
    assert_int_equal(request_id_check("a\x1b", 2, "request_id", &err), -EINVAL);
    assert_int_equal(request_id_check("caf\xc3\xa9", 5, "request_id", &err), -EINVAL);
    memset(long_id, 'x', 129);
    long_id[129] = '\0';
    assert_int_equal(request_id_check(long_id, 129, "Idempotency-Key", &err), -EINVAL);
    assert_string_equal(err.field, "Idempotency-Key");
    assert_int_equal(request_id_check(long_id, 128, "request_id", &err), -EINVAL); /* len != strlen */
    long_id[128] = '\0';
    assert_int_equal(request_id_check(long_id, 128, "request_id", &err), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plain_tokens_stay_bare),
        cmocka_unit_test(test_values_needing_quotes),
        cmocka_unit_test(test_forged_lines_are_escaped),
        cmocka_unit_test(test_truncation_keeps_terminated),
        cmocka_unit_test(test_request_id_rule),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
