/* Unit tests: base64, EC2 ids, the instance-type catalogue (the launch
 * body's checks are test_request.c's). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "agent/instance.h"

static struct catalog *cat;

static int setup(void **state)
{
    (void)state;
    return catalog_builtin(&cat);
}

static int teardown(void **state)
{
    (void)state;
    catalog_free(cat);
    return 0;
}

static void test_base64(void **state)
{
    uint8_t out[16];
    (void)state;
    assert_int_equal(base64_decode("aGVsbG8=", out, sizeof(out)), 5);
    assert_memory_equal(out, "hello", 5);
    assert_int_equal(base64_decode("", out, sizeof(out)), 0);
    assert_int_equal(base64_decode("aGVsbG8", out, sizeof(out)), -EINVAL);
    assert_int_equal(base64_decode("aG=sbG8=", out, sizeof(out)), -EINVAL);
    assert_int_equal(base64_decode("a===", out, sizeof(out)), -EINVAL);
    assert_int_equal(base64_decode("aGVs\nbG8=", NULL, 0), -EINVAL);
}

static void test_ec2_id(void **state)
{
    char id[EC2_ID_LEN + 1], id2[EC2_ID_LEN + 1];
    (void)state;
    assert_int_equal(ec2_id_generate(id), 0);
    assert_true(ec2_id_is_valid(id));
    assert_int_equal(strlen(id), 19);
    assert_int_equal(ec2_id_generate(id2), 0);
    assert_string_not_equal(id, id2);
    assert_false(ec2_id_is_valid("i-0123456789ABCDEF0"));
    assert_false(ec2_id_is_valid("i-0123"));
    assert_false(ec2_id_is_valid("x-0123456789abcdef0"));
}

static void test_catalog_file(void **state)
{
    struct catalog *c = NULL;
    struct agent_error err;
    char path[] = "/tmp/ca-cat-XXXXXX";
    int fd = mkstemp(path);
    FILE *f = fdopen(fd, "w");

    (void)state;
    fputs("# types\n[x1.small]\nvcpus = 3\nmemory_mb = 700\ndisk_gb = 9\n", f);
    fclose(f);
    assert_int_equal(catalog_load(path, &c, &err), 0);
    assert_non_null(catalog_find(c, "x1.small"));
    assert_int_equal(catalog_find(c, "x1.small")->vcpus, 3);
    assert_null(catalog_find(c, "t3.micro"));
    catalog_free(c);
    f = fopen(path, "w");
    fputs("[x1.small]\nvcpus = lots\n", f);
    fclose(f);
    assert_int_not_equal(catalog_load(path, &c, &err), 0);
    assert_non_null(strstr(err.message, ":2:"));
    unlink(path);
    assert_non_null(catalog_find(cat, "t3.micro"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_base64),
        cmocka_unit_test(test_ec2_id),
        cmocka_unit_test(test_catalog_file),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
