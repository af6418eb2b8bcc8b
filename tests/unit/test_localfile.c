/* Unit tests: local guest files resolved inside hypervisor.local_image_dirs
 * (component boundaries, symlinks in and out, non-regular files, sizes) and
 * the setting's start-up check. Everything lives in a scratch directory. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent/localfile.h"

static char root[PATH_MAX]; /* resolved scratch directory */
static char img[PATH_MAX + 8], img2[PATH_MAX + 8];

static const char *at(const char *rel)
{
    static char bufs[4][PATH_MAX + 64];
    static int n;
    char *b = bufs[n++ % 4];

    snprintf(b, sizeof(bufs[0]), "%s/%s", root, rel);
    return b;
}

static void put(const char *rel, size_t size)
{
    FILE *f = fopen(at(rel), "w");

    assert_non_null(f);
    if (size)
        assert_int_equal(ftruncate(fileno(f), (off_t)size), 0);
    fclose(f);
}

static int setup(void **state)
{
    char tmpl[] = "/tmp/ca-localfile-XXXXXX";

    (void)state;
    if (!mkdtemp(tmpl) || !realpath(tmpl, root))
        return -1;
    snprintf(img, sizeof(img), "%s/img", root);
    snprintf(img2, sizeof(img2), "%s/img2", root);
    if (mkdir(img, 0755) < 0 || mkdir(img2, 0755) < 0 || mkdir(at("img/sub"), 0755) < 0)
        return -1;
    put("img/a.raw", 4096);
    put("img/sub/b.raw", 0);
    put("img/big", 2048);
    put("img2/x.raw", 4096);
    if (symlink("a.raw", at("img/in.raw")) < 0 || symlink("../img2/x.raw", at("img/out.raw")) < 0 ||
        symlink("/dev/null", at("img/null.raw")) < 0 || symlink("img", at("imglink")) < 0 ||
        symlink("sub", at("img/sublink")) < 0 || mkfifo(at("img/fifo"), 0600) < 0)
        return -1;
    return 0;
}

static int teardown(void **state)
{
    static const char *const files[] = {"img/a.raw", "img/sub/b.raw", "img/big", "img2/x.raw",
                                        "img/in.raw", "img/out.raw", "img/null.raw", "imglink",
                                        "img/sublink", "img/fifo"};

    (void)state;
    for (size_t i = 0; i < ARRAY_SIZE(files); i++)
        unlink(at(files[i]));
    rmdir(at("img/sub"));
    rmdir(img);
    rmdir(img2);
    rmdir(root);
    return 0;
}

/* Resolve; on success check and free the result against want (NULL: the path itself). */
static int resolve(const char *dirs, const char *path, uint64_t max, const char *want,
                   struct agent_error *err)
{
    char *out = NULL;
    int r;

    memset(err, 0, sizeof(*err));
    r = localfile_resolve(dirs, path, "image.path", max, &out, err);
    if (r == 0) {
        assert_non_null(out);
        assert_string_equal(out, want ? want : path);
        free(out);
    } else {
        assert_null(out);
        assert_string_equal(err->code, "invalid_field");
        assert_string_equal(err->field, "image.path");
        assert_non_null(strstr(err->message, "image.path"));
    }
    return r;
}

static void test_no_dirs(void **state)
{
    struct agent_error err;

    (void)state;
    assert_int_equal(resolve("", at("img/a.raw"), UINT64_MAX, NULL, &err), -EPERM);
    assert_non_null(strstr(err.message, LOCALFILE_SETTING));
    assert_int_equal(resolve(NULL, at("img/a.raw"), UINT64_MAX, NULL, &err), -EPERM);
}

static void test_inside_and_outside(void **state)
{
    struct agent_error err;
    char dirs[3 * PATH_MAX];

    (void)state;
    assert_int_equal(resolve(img, at("img/a.raw"), UINT64_MAX, NULL, &err), 0);
    assert_int_equal(resolve(img, at("img/sub/b.raw"), UINT64_MAX, NULL, &err), 0);
    /* a trailing slash on the listed directory changes nothing */
    snprintf(dirs, sizeof(dirs), "%s/", img);
    assert_int_equal(resolve(dirs, at("img/a.raw"), UINT64_MAX, NULL, &err), 0);
    /* outside: a host file, the sibling sharing the prefix, the directory itself */
    assert_int_equal(resolve(img, "/etc/shadow", UINT64_MAX, NULL, &err), -EPERM);
    assert_non_null(strstr(err.message, LOCALFILE_SETTING));
    assert_int_equal(resolve(img, at("img2/x.raw"), UINT64_MAX, NULL, &err), -EPERM);
    assert_int_equal(resolve(img, img, UINT64_MAX, NULL, &err), -EPERM);
    assert_int_equal(resolve(img, at("img/"), UINT64_MAX, NULL, &err), -EPERM);
    /* not normalized */
    assert_int_equal(resolve(img, at("img/../img2/x.raw"), UINT64_MAX, NULL, &err), -EINVAL);
    assert_int_equal(resolve(img, at("img/.."), UINT64_MAX, NULL, &err), -EINVAL);
    assert_int_equal(resolve(img, at("img/./a.raw"), UINT64_MAX, NULL, &err), -EINVAL);
    assert_int_equal(resolve(img, "img/a.raw", UINT64_MAX, NULL, &err), -EINVAL);
    /* missing inside */
    assert_int_equal(resolve(img, at("img/missing"), UINT64_MAX, NULL, &err), -ENOENT);
    /* a second listed directory matches */
    snprintf(dirs, sizeof(dirs), "/nonexistent:%s", img2);
    assert_int_equal(resolve(dirs, at("img2/x.raw"), UINT64_MAX, NULL, &err), 0);
    assert_int_equal(resolve(dirs, at("img/a.raw"), UINT64_MAX, NULL, &err), -EPERM);
}

static void test_symlinks(void **state)
{
    struct agent_error err;
    char dirs[3 * PATH_MAX];

    (void)state;
    /* inside -> inside: the resolved file is handed on */
    assert_int_equal(resolve(img, at("img/in.raw"), UINT64_MAX, at("img/a.raw"), &err), 0);
    assert_int_equal(resolve(img, at("img/sublink/b.raw"), UINT64_MAX, at("img/sub/b.raw"), &err), 0);
    /* inside -> out */
    assert_int_equal(resolve(img, at("img/out.raw"), UINT64_MAX, NULL, &err), -EPERM);
    assert_non_null(strstr(err.message, "leads out"));
    assert_int_equal(resolve(img, at("img/null.raw"), UINT64_MAX, NULL, &err), -EPERM);
    /* ... unless the target's directory is listed too: then it must still be a regular file */
    snprintf(dirs, sizeof(dirs), "%s:%s", img, img2);
    assert_int_equal(resolve(dirs, at("img/out.raw"), UINT64_MAX, at("img2/x.raw"), &err), 0);
    snprintf(dirs, sizeof(dirs), "%s:/dev", img);
    assert_int_equal(resolve(dirs, at("img/null.raw"), UINT64_MAX, NULL, &err), -EINVAL);
    /* the listed directory is a symlink: paths through it or its target both work */
    snprintf(dirs, sizeof(dirs), "%s", at("imglink"));
    assert_int_equal(resolve(dirs, at("imglink/a.raw"), UINT64_MAX, at("img/a.raw"), &err), 0);
    assert_int_equal(resolve(dirs, at("img/a.raw"), UINT64_MAX, NULL, &err), 0);
}

static void test_not_regular_and_size(void **state)
{
    struct agent_error err;

    (void)state;
    assert_int_equal(resolve(img, at("img/fifo"), UINT64_MAX, NULL, &err), -EINVAL);
    assert_non_null(strstr(err.message, "not a regular file"));
    assert_int_equal(resolve(img, at("img/sub"), UINT64_MAX, NULL, &err), -EINVAL);
    assert_int_equal(resolve("/dev", "/dev/null", UINT64_MAX, NULL, &err), -EINVAL);
    assert_int_equal(resolve(img, at("img/big"), 2048, NULL, &err), 0);
    assert_int_equal(resolve(img, at("img/big"), 2047, NULL, &err), -EFBIG);
}

static void test_dirs_check(void **state)
{
    struct agent_error err;

    (void)state;
    assert_int_equal(localfile_dirs_check("", &err), 0);
    assert_int_equal(localfile_dirs_check(NULL, &err), 0);
    assert_int_equal(localfile_dirs_check("/srv/img", &err), 0);
    assert_int_equal(localfile_dirs_check("/srv/img:/var/lib/guests/", &err), 0);
    assert_int_equal(localfile_dirs_check("srv/img", &err), -EINVAL);
    assert_string_equal(err.field, LOCALFILE_SETTING);
    assert_int_equal(localfile_dirs_check("/a::/b", &err), -EINVAL);
    assert_int_equal(localfile_dirs_check(":/a", &err), -EINVAL);
    assert_int_equal(localfile_dirs_check("/a:", &err), -EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_no_dirs),
        cmocka_unit_test(test_inside_and_outside),
        cmocka_unit_test(test_symlinks),
        cmocka_unit_test(test_not_regular_and_size),
        cmocka_unit_test(test_dirs_check),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
