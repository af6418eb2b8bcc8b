/* test_prom.c: common/prom.c, the Prometheus text writer: family lines, label
 * escaping (backslash, double quote, newline; nothing else), series with and
 * without labels, value formats, histograms. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "common/prom.h"
#include "common/util.h"

struct out {
    char *text;
    size_t len;
    FILE *f;
};

static void out_open(struct out *o)
{
    o->text = NULL;
    o->len = 0;
    o->f = open_memstream(&o->text, &o->len);
    assert_non_null(o->f);
}

/* Closes the stream and checks what was written. */
static void out_expect(struct out *o, const char *want)
{
    assert_int_equal(fclose(o->f), 0);
    assert_string_equal(o->text, want);
    free(o->text);
}

static void test_family_and_series(void **state)
{
    struct out o;
    const struct prom_label l[] = {{"a", "x"}, {"b", NULL}};

    (void)state;
    out_open(&o);
    prom_family(o.f, "m_total", "counter", "things counted");
    prom_series(o.f, "m_total", NULL, 0);
    prom_u64(o.f, 18446744073709551615ull);
    prom_series(o.f, "m_total", l, ARRAY_SIZE(l));
    prom_double(o.f, 0.1);
    prom_series(o.f, "m_total", l, 1);
    prom_double(o.f, 1.0 / 3);
    out_expect(&o, "# HELP m_total things counted\n# TYPE m_total counter\n"
                   "m_total 18446744073709551615\n"
                   "m_total{a=\"x\",b=\"\"} 0.1\n"
                   "m_total{a=\"x\"} 0.333333333\n");
}

static void test_label_escaping(void **state)
{
    struct out o;
    const struct prom_label l[] = {{"name", "a\\b\"c\nd{e},f=g\th\xc3\xa9"}};

    (void)state;
    out_open(&o);
    prom_series(o.f, "m", l, 1);
    prom_u64(o.f, 1);
    out_expect(&o, "m{name=\"a\\\\b\\\"c\\nd{e},f=g\th\xc3\xa9\"} 1\n");
}

static void test_histogram(void **state)
{
    struct out o;
    const double bounds[] = {0.5, 1, 2.5};
    const uint64_t buckets[] = {1, 0, 2, 1};
    const struct prom_label l[] = {{"r", "ok"}};

    (void)state;
    out_open(&o);
    prom_histogram(o.f, "d", l, 1, bounds, ARRAY_SIZE(bounds), buckets, 7.25, 4);
    prom_histogram(o.f, "e", NULL, 0, bounds, 1, buckets, 0, 1);
    out_expect(&o, "d_bucket{r=\"ok\",le=\"0.5\"} 1\n"
                   "d_bucket{r=\"ok\",le=\"1\"} 1\n"
                   "d_bucket{r=\"ok\",le=\"2.5\"} 3\n"
                   "d_bucket{r=\"ok\",le=\"+Inf\"} 4\n"
                   "d_sum{r=\"ok\"} 7.25\n"
                   "d_count{r=\"ok\"} 4\n"
                   "e_bucket{le=\"0.5\"} 1\n"
                   "e_bucket{le=\"+Inf\"} 1\n"
                   "e_sum 0\n"
                   "e_count 1\n");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_family_and_series),
        cmocka_unit_test(test_label_escaping),
        cmocka_unit_test(test_histogram),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
