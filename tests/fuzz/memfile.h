/* memfile.h: for harnesses of parsers that read a file by path (the INI
 * config, the instance-type catalogue): the input in a memfd, named by its
 * /proc/self/fd path, so the parser under test opens and reads a real file. */
#ifndef CA_TESTS_FUZZ_MEMFILE_H
#define CA_TESTS_FUZZ_MEMFILE_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

/* The path of a file holding exactly data[0..size) (the same memfd each
 * call; static storage). Aborts on failure: the harness cannot go on. */
static const char *memfile_path(const uint8_t *data, size_t size)
{
    static int fd = -1;
    static char path[64];

    if (fd < 0) {
        fd = memfd_create("fuzz-input", MFD_CLOEXEC);
        if (fd < 0)
            abort();
        snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    }
    if (ftruncate(fd, 0) < 0 || (size && pwrite(fd, data, size, 0) != (ssize_t)size))
        abort();
    return path;
}

#endif
