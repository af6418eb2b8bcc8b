/* test_list.c: common/list.h: order of add_tail/add_head, deleting (twice, and
 * a zeroed node), the safe walk that frees, splicing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdlib.h>

#include "common/list.h"

struct item {
    int v;
    struct list_node link;
};

/* The values on head, in order, into out (at most n); their count. */
static size_t values(struct list_node *head, int *out, size_t n)
{
    struct item *it;
    size_t k = 0;

    list_for_each_entry(it, head, link)
        if (k < n)
            out[k++] = it->v;
    return k;
}

static void test_order_and_del(void **state)
{
    struct list_node head;
    struct item a = {.v = 1}, b = {.v = 2}, c = {.v = 3};
    int got[4];

    (void)state;
    list_init(&head);
    assert_true(list_empty(&head));
    assert_null(list_first_entry_or_null(&head, struct item, link));
    assert_false(list_linked(&a.link)); /* zeroed */
    list_del(&a.link);                  /* harmless on a zeroed node */
    list_add_tail(&head, &b.link);
    list_add_tail(&head, &c.link);
    list_add_head(&head, &a.link);
    assert_int_equal(values(&head, got, 4), 3);
    assert_int_equal(got[0], 1);
    assert_int_equal(got[1], 2);
    assert_int_equal(got[2], 3);
    assert_true(list_linked(&b.link));
    list_del(&b.link);
    list_del(&b.link); /* twice */
    assert_false(list_linked(&b.link));
    assert_int_equal(values(&head, got, 4), 2);
    assert_int_equal(got[0], 1);
    assert_int_equal(got[1], 3);
    assert_ptr_equal(list_first_entry_or_null(&head, struct item, link), &a);
}

static void test_safe_walk_and_splice(void **state)
{
    struct list_node a, b;
    struct item *it, *tmp;
    int got[8];

    (void)state;
    list_init(&a);
    list_init(&b);
    for (int i = 0; i < 6; i++) {
        it = calloc(1, sizeof(*it));
        assert_non_null(it);
        it->v = i;
        list_add_tail(i < 3 ? &a : &b, &it->link);
    }
    list_splice_tail(&a, &b);
    assert_true(list_empty(&b));
    list_splice_tail(&a, &b); /* empty: nothing moves */
    assert_int_equal(values(&a, got, 8), 6);
    for (int i = 0; i < 6; i++)
        assert_int_equal(got[i], i);
    list_for_each_entry_safe(it, tmp, &a, link) {
        if (it->v % 2 == 0) {
            list_del(&it->link);
            free(it);
        }
    }
    assert_int_equal(values(&a, got, 8), 3);
    assert_int_equal(got[0], 1);
    assert_int_equal(got[2], 5);
    list_splice_tail(&b, &a);
    list_for_each_entry_safe(it, tmp, &b, link) {
        list_del(&it->link);
        free(it);
    }
    assert_true(list_empty(&b));
    assert_true(list_empty(&a));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_order_and_del),
        cmocka_unit_test(test_safe_walk_and_splice),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
