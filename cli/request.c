/*
 * request.c: what computectl sends: id classification, the JSON bodies built from
 * the command line, and the base64 user data.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE             /* asprintf, open_memstream, reallocarray */
#endif
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli-internal.h"

static bool is_hex(char c) {
        return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

enum ctl_id_kind ctl_id_classify(const char *id) {
        size_t len;

        if (!id)
                return CTL_ID_INVALID;
        len = strlen(id);

        if (len == 36) {
                for (size_t i = 0; i < len; i++) {
                        bool dash = i == 8 || i == 13 || i == 18 || i == 23;

                        if (dash ? id[i] != '-' : !is_hex(id[i]))
                                return CTL_ID_INVALID;
                }
                return CTL_ID_UUID;
        }
        if (len == 19 && id[0] == 'i' && id[1] == '-') {
                for (size_t i = 2; i < len; i++)
                        if (!is_hex(id[i]))
                                return CTL_ID_INVALID;
                return CTL_ID_EC2;
        }
        return CTL_ID_INVALID;
}

int ctl_base64_encode(const void *data, size_t len, char **ret) {
        static const char alphabet[] =
                "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        const unsigned char *in = data;
        char *out, *p;

        if (len > (SIZE_MAX - 1) / 4 * 3 - 2)
                return -ENOMEM;
        out = malloc((len + 2) / 3 * 4 + 1);
        if (!out)
                return -ENOMEM;

        p = out;
        for (size_t i = 0; i < len; i += 3) {
                size_t n = len - i < 3 ? len - i : 3;
                uint32_t v = (uint32_t) in[i] << 16;

                if (n > 1)
                        v |= (uint32_t) in[i + 1] << 8;
                if (n > 2)
                        v |= in[i + 2];
                *p++ = alphabet[(v >> 18) & 0x3f];
                *p++ = alphabet[(v >> 12) & 0x3f];
                *p++ = n > 1 ? alphabet[(v >> 6) & 0x3f] : '=';
                *p++ = n > 2 ? alphabet[v & 0x3f] : '=';
        }
        *p = '\0';
        *ret = out;
        return 0;
}

static void fd_closep(int *fd) {
        if (*fd > STDERR_FILENO)
                close(*fd);
}

int ctl_file_read_limited(const char *path, size_t max, char **ret_data, size_t *ret_len,
                          struct ctl_error *err) {
        _cleanup_(fd_closep) int fd = -1;
        _cleanup_ctl_free_ char *buf = NULL;
        struct stat st;
        size_t len = 0;

        if (strcmp(path, "-") == 0)
                fd = STDIN_FILENO;
        else {
                fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
                if (fd < 0) {
                        int r = -errno;

                        ctl_error_set(err, "cannot open '%s': %s", path, strerror(-r));
                        return r;
                }
        }
        if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && (uintmax_t) st.st_size > max) {
                ctl_error_set(err, "'%s' is %jd bytes; the limit is %zu bytes",
                              path, (intmax_t) st.st_size, max);
                return -EFBIG;
        }

        buf = malloc(max + 2);
        if (!buf)
                return -ENOMEM;
        /* read one byte past max to notice pipes and files that grew */
        while (len <= max) {
                ssize_t n = read(fd, buf + len, max + 1 - len);

                if (n < 0) {
                        int r = -errno;

                        if (r == -EINTR)
                                continue;
                        ctl_error_set(err, "cannot read '%s': %s", path, strerror(-r));
                        return r;
                }
                if (n == 0)
                        break;
                len += (size_t) n;
        }
        if (len > max) {
                ctl_error_set(err, "'%s' is larger than %zu bytes", path, max);
                return -EFBIG;
        }
        buf[len] = '\0';
        *ret_data = TAKE_PTR(buf);
        *ret_len = len;
        return 0;
}

/* Sets obj[key] to a new string; -EINVAL if s is not UTF-8, -ENOMEM otherwise. */
static int set_string(json_t *obj, const char *key, const char *s, const char *what,
                      struct ctl_error *err) {
        json_t *v = json_string(s);

        if (!v) {
                ctl_error_set(err, "%s is not valid UTF-8", what);
                return -EINVAL;
        }
        if (json_object_set_new(obj, key, v) < 0)
                return -ENOMEM;
        return 0;
}

/* Sets obj[key] to the integer value of option opt, if given. */
static int set_uint_option(json_t *obj, const char *key, const struct ctl_args *args,
                           enum ctl_opt_key opt, const char *opt_name, const char *unit,
                           struct ctl_error *err) {
        const char *s = args->value[opt];
        uint64_t v;

        if (!s)
                return 0;
        if (ctl_parse_uint(s, INT32_MAX, &v) < 0) {
                ctl_error_set(err, "--%s: '%s' is not a whole number%s%s", opt_name, s,
                              unit ? " of " : "", unit ? unit : "");
                return -EINVAL;
        }
        if (json_object_set_new(obj, key, json_integer((json_int_t) v)) < 0)
                return -ENOMEM;
        return 0;
}

int ctl_request_id_check(const char *id, struct ctl_error *err) {
        size_t len = strlen(id);

        if (len == 0 || len > 128) {
                ctl_error_set(err, "--request-id: must be 1 to 128 characters");
                return -EINVAL;
        }
        for (size_t i = 0; i < len; i++)
                if (id[i] < 0x20 || id[i] > 0x7e) {
                        ctl_error_set(err, "--request-id: only printable ASCII characters are allowed");
                        return -EINVAL;
                }
        return 0;
}

/* "instance_type" or "flavor" from --type | --vcpus --memory [--disk]. */
static int launch_sizing(json_t *body, const struct ctl_args *a, struct ctl_error *err) {
        bool flavor = a->value[CTL_OPT_VCPUS] || a->value[CTL_OPT_MEMORY] || a->value[CTL_OPT_DISK];
        json_auto_t *f = NULL;
        int r;

        if (a->value[CTL_OPT_TYPE] && flavor) {
                ctl_error_set(err, "give either --type or --vcpus/--memory/--disk, not both");
                return -EINVAL;
        }
        if (a->value[CTL_OPT_TYPE]) {
                if (a->value[CTL_OPT_TYPE][0] == '\0') {
                        ctl_error_set(err, "--type: empty instance type");
                        return -EINVAL;
                }
                return set_string(body, "instance_type", a->value[CTL_OPT_TYPE], "--type", err);
        }
        if (!a->value[CTL_OPT_VCPUS] || !a->value[CTL_OPT_MEMORY]) {
                ctl_error_set(err, "give --type T, or --vcpus N and --memory MB (and optionally --disk GB)");
                return -EINVAL;
        }

        f = json_object();
        if (!f)
                return -ENOMEM;
        r = set_uint_option(f, "vcpus", a, CTL_OPT_VCPUS, "vcpus", NULL, err);
        if (r < 0)
                return r;
        r = set_uint_option(f, "memory_mb", a, CTL_OPT_MEMORY, "memory", "MB", err);
        if (r < 0)
                return r;
        r = set_uint_option(f, "disk_gb", a, CTL_OPT_DISK, "disk", "GB", err);
        if (r < 0)
                return r;
        if (json_object_set(body, "flavor", f) < 0)
                return -ENOMEM;
        return 0;
}

/* "image" or "kernel" from --image PATH | --kernel PATH [--initrd PATH] [--cmdline STR]. */
static int launch_boot(json_t *body, const struct ctl_args *a, struct ctl_error *err) {
        const char *image = a->value[CTL_OPT_IMAGE], *kernel = a->value[CTL_OPT_KERNEL];
        json_auto_t *b = NULL;
        int r;

        if (image && kernel) {
                ctl_error_set(err, "give either --image or --kernel, not both");
                return -EINVAL;
        }
        if (!image && !kernel) {
                ctl_error_set(err, "give --image PATH, or --kernel PATH (with optional --initrd and --cmdline)");
                return -EINVAL;
        }
        if (image && (a->value[CTL_OPT_INITRD] || a->value[CTL_OPT_CMDLINE])) {
                ctl_error_set(err, "--initrd and --cmdline go with --kernel, not --image");
                return -EINVAL;
        }

        b = json_object();
        if (!b)
                return -ENOMEM;
        r = set_string(b, "path", image ? image : kernel, image ? "--image" : "--kernel", err);
        if (r < 0)
                return r;
        if (kernel && a->value[CTL_OPT_INITRD]) {
                r = set_string(b, "initrd", a->value[CTL_OPT_INITRD], "--initrd", err);
                if (r < 0)
                        return r;
        }
        if (kernel && a->value[CTL_OPT_CMDLINE]) {
                r = set_string(b, "cmdline", a->value[CTL_OPT_CMDLINE], "--cmdline", err);
                if (r < 0)
                        return r;
        }
        if (json_object_set(body, image ? "image" : "kernel", b) < 0)
                return -ENOMEM;
        return 0;
}

static int launch_user_data(json_t *body, const char *path, struct ctl_error *err) {
        _cleanup_ctl_free_ char *data = NULL, *b64 = NULL;
        size_t len;
        int r;

        r = ctl_file_read_limited(path, CTL_USER_DATA_MAX, &data, &len, err);
        if (r == -EFBIG) {
                ctl_error_set(err, "--user-data-file: '%s' is larger than %d bytes, the agent's limit for user data",
                              path, CTL_USER_DATA_MAX);
                return r;
        }
        if (r < 0)
                return r;       /* err says which file and why */
        r = ctl_base64_encode(data, len, &b64);
        if (r < 0)
                return r;
        if (json_object_set_new(body, "user_data", json_string(b64)) < 0)
                return -ENOMEM;
        return 0;
}

int ctl_launch_body(const struct ctl_args *args, json_t **ret, struct ctl_error *err) {
        json_auto_t *body = NULL;
        const char *name = args->n_positional > 0 ? args->positional[0] : NULL;
        int r;

        if (!name || name[0] == '\0') {
                ctl_error_set(err, "launch needs an instance NAME");
                return -EINVAL;
        }

        body = json_object();
        if (!body)
                return -ENOMEM;
        r = set_string(body, "name", name, "NAME", err);
        if (r < 0)
                return r;
        r = launch_sizing(body, args, err);
        if (r < 0)
                return r;
        r = launch_boot(body, args, err);
        if (r < 0)
                return r;
        if (args->value[CTL_OPT_USER_DATA_FILE]) {
                r = launch_user_data(body, args->value[CTL_OPT_USER_DATA_FILE], err);
                if (r < 0)
                        return r;
        }
        if (args->value[CTL_OPT_REQUEST_ID]) {
                r = ctl_request_id_check(args->value[CTL_OPT_REQUEST_ID], err);
                if (r < 0)
                        return r;
                r = set_string(body, "request_id", args->value[CTL_OPT_REQUEST_ID], "--request-id", err);
                if (r < 0)
                        return r;
        }

        *ret = TAKE_PTR(body);
        return 0;
}

int ctl_action_body(const char *action, const struct ctl_args *args, json_t **ret,
                    struct ctl_error *err) {
        json_auto_t *body = NULL;
        int r;

        body = json_object();
        if (!body)
                return -ENOMEM;
        r = set_string(body, "action", action, "action", err);
        if (r < 0)
                return r;

        if (args->value[CTL_OPT_REQUEST_ID]) {
                r = ctl_request_id_check(args->value[CTL_OPT_REQUEST_ID], err);
                if (r < 0)
                        return r;
                r = set_string(body, "request_id", args->value[CTL_OPT_REQUEST_ID], "--request-id", err);
                if (r < 0)
                        return r;
        }

        if (strcmp(action, "stop") == 0) {
                if (args->value[CTL_OPT_FORCE] && args->value[CTL_OPT_STOP_TIMEOUT]) {
                        ctl_error_set(err, "--force skips the graceful shutdown; it excludes --stop-timeout");
                        return -EINVAL;
                }
                if (args->value[CTL_OPT_FORCE] && json_object_set_new(body, "force", json_true()) < 0)
                        return -ENOMEM;
                r = set_uint_option(body, "timeout", args, CTL_OPT_STOP_TIMEOUT, "stop-timeout",
                                    "seconds", err);
                if (r < 0)
                        return r;
        }

        *ret = TAKE_PTR(body);
        return 0;
}
