/* localfile.h: guest files the host already has (a launch's image.path,
 * kernel.path and kernel.initrd). The hypervisor opens them as root, so they
 * come only from the directories the operator lists in
 * hypervisor.local_image_dirs, and only as regular files. */
#ifndef CA_AGENT_LOCALFILE_H
#define CA_AGENT_LOCALFILE_H

#include <stdint.h>

#include "common/util.h"

/* The name of the setting, as errors give it. */
#define LOCALFILE_SETTING "hypervisor.local_image_dirs"

/* Largest kernel or initrd accepted (an image's size is the inspection's). */
#define LOCALFILE_BOOT_MAX (1ull << 30)

/* Resolve path, the value of request field `field` ("image.path", ...),
 * against dirs, a colon-separated list of absolute directories ("" or NULL:
 * none, every path refused).
 *
 * The path must be absolute with no "." or ".." component and lie inside one
 * of the directories as written (or as the directory itself resolves); once
 * every symlink is resolved (realpath) it must still lie strictly inside one
 * of the directories' own resolved paths, compared on whole components
 * (/srv/img2/x is not inside /srv/img). The resolved path is then opened
 * without following any symlink (openat2 RESOLVE_NO_SYMLINKS, else
 * O_NOFOLLOW) and must be a regular file of at most max_size bytes (no
 * device, FIFO, socket or directory); nothing is read from it.
 *
 * On success returns 0 and sets *resolved to the symlink-free path, a new
 * string the caller frees, which is the one to hand on (so a later symlink
 * swap of the path as given redirects nothing). On failure returns -errno,
 * *resolved untouched, and err (code invalid_field, field `field`) says why;
 * refusals for lack of a listed directory name LOCALFILE_SETTING. Blocking
 * only as far as a few stat calls are. */
int localfile_resolve(const char *dirs, const char *path, const char *field, uint64_t max_size,
                      char **resolved, struct agent_error *err);

/* Check dirs (the setting's value) at start-up: every entry absolute and not
 * empty. 0 or -EINVAL with err naming LOCALFILE_SETTING. */
int localfile_dirs_check(const char *dirs, struct agent_error *err);

#endif
