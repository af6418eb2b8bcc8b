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

/*
 * "instance_type" or "flavor" from --type | --vcpus --memory [--disk] (launch and
 * resize). neither: the message when no sizing option is given.
 */
static int sizing(json_t *body, const struct ctl_args *a, const char *neither, struct ctl_error *err) {
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
        if (!flavor) {
                ctl_error_set(err, "%s", neither);
                return -EINVAL;
        }
        if (!a->value[CTL_OPT_VCPUS] || !a->value[CTL_OPT_MEMORY]) {
                ctl_error_set(err, "--%s needs --%s too: give --vcpus N and --memory MB (and optionally --disk GB)",
                              a->value[CTL_OPT_VCPUS] ? "vcpus" : a->value[CTL_OPT_MEMORY] ? "memory" : "disk",
                              a->value[CTL_OPT_VCPUS] ? "memory" : "vcpus");
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

/*
 * "image" from --image PATH|ID, --image-url URL --digest D or --glance-id ID (one of
 * them); "kernel" from --kernel PATH [--initrd PATH] [--cmdline STR]. A kernel may
 * come with an image (the image is then the guest's disk), as the API takes it.
 */
static int launch_image(json_t *body, const struct ctl_args *a, struct ctl_error *err) {
        const char *image = a->value[CTL_OPT_IMAGE], *url = a->value[CTL_OPT_IMAGE_URL];
        const char *glance = a->value[CTL_OPT_GLANCE_ID], *digest = a->value[CTL_OPT_DIGEST];
        json_auto_t *b = NULL;
        int r;

        if (!!image + !!url + !!glance > 1) {
                ctl_error_set(err, "give one of --image, --image-url or --glance-id");
                return -EINVAL;
        }
        if (digest && !url) {
                ctl_error_set(err, "--digest goes with --image-url");
                return -EINVAL;
        }
        if (url && !digest) {
                ctl_error_set(err, "--image-url needs --digest sha256:HEX (or sha512:HEX)");
                return -EINVAL;
        }
        if (!image && !url && !glance)
                return 0;
        b = json_object();
        if (!b)
                return -ENOMEM;
        if (image && image[0] == '/')
                r = set_string(b, "path", image, "--image", err);
        else if (image && ctl_id_classify(image) == CTL_ID_UUID)
                r = set_string(b, "id", image, "--image", err);
        else if (image) {
                ctl_error_set(err, "--image: '%s' is not an absolute path or a cached image id (a UUID)%s",
                              image, strstr(image, "://") ? "; for a URL use --image-url URL --digest D" : "");
                return -EINVAL;
        } else if (glance) {
                if (glance[0] == '\0') {
                        ctl_error_set(err, "--glance-id: empty id");
                        return -EINVAL;
                }
                r = set_string(b, "glance_id", glance, "--glance-id", err);
        } else {
                if (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0) {
                        ctl_error_set(err, "--image-url: '%s' is not an http:// or https:// URL", url);
                        return -EINVAL;
                }
                r = set_string(b, "url", url, "--image-url", err);
                if (r == 0)
                        r = set_string(b, "digest", digest, "--digest", err);
        }
        if (r < 0)
                return r;
        return json_object_set(body, "image", b) < 0 ? -ENOMEM : 0;
}

static int launch_boot(json_t *body, const struct ctl_args *a, struct ctl_error *err) {
        const char *kernel = a->value[CTL_OPT_KERNEL];
        json_auto_t *k = NULL;
        int r;

        if (!kernel && !a->value[CTL_OPT_IMAGE] && !a->value[CTL_OPT_IMAGE_URL] && !a->value[CTL_OPT_GLANCE_ID]) {
                ctl_error_set(err, "give --image PATH|ID, --image-url URL --digest D, --glance-id ID, "
                                   "or --kernel PATH (with optional --initrd and --cmdline)");
                return -EINVAL;
        }
        if (!kernel && (a->value[CTL_OPT_INITRD] || a->value[CTL_OPT_CMDLINE])) {
                ctl_error_set(err, "--initrd and --cmdline go with --kernel");
                return -EINVAL;
        }
        r = launch_image(body, a, err);
        if (r < 0 || !kernel)
                return r;

        k = json_object();
        if (!k)
                return -ENOMEM;
        r = set_string(k, "path", kernel, "--kernel", err);
        if (r < 0)
                return r;
        if (a->value[CTL_OPT_INITRD]) {
                r = set_string(k, "initrd", a->value[CTL_OPT_INITRD], "--initrd", err);
                if (r < 0)
                        return r;
        }
        if (a->value[CTL_OPT_CMDLINE]) {
                r = set_string(k, "cmdline", a->value[CTL_OPT_CMDLINE], "--cmdline", err);
                if (r < 0)
                        return r;
        }
        return json_object_set(body, "kernel", k) < 0 ? -ENOMEM : 0;
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

/* ---- the guest fields of a launch (networks, keys, metadata) ---- */

#define CTL_PUBLIC_KEY_MAX 16384        /* bytes of one key, as the agent enforces */

/* "aa:bb:cc:dd:ee:ff", hex digits in either case. */
static bool mac_shape_ok(const char *s) {
        if (strlen(s) != 17)
                return false;
        for (size_t i = 0; i < 17; i++)
                if (i % 3 == 2 ? s[i] != ':' : !is_hex(s[i]))
                        return false;
        return true;
}

/* A dotted quad without leading zeros, spaces or signs. */
static bool ipv4_shape_ok(const char *s) {
        for (int part = 0; part < 4; part++) {
                unsigned v = 0;
                size_t n = 0;

                for (; s[n] >= '0' && s[n] <= '9'; n++) {
                        v = v * 10 + (unsigned) (s[n] - '0');
                        if (n >= 3 || v > 255)
                                return false;
                }
                if (n == 0 || (n > 1 && s[0] == '0'))
                        return false;
                s += n;
                if (part < 3 && *s++ != '.')
                        return false;
        }
        return *s == '\0';
}

int ctl_network_spec_parse(const char *s, json_t **ret, struct ctl_error *err) {
        _cleanup_ctl_free_ char *copy = strdup(s);
        json_auto_t *o = NULL;
        char *rest = copy, *name, *item;
        int r;

        if (!copy)
                return -ENOMEM;
        if (s[0] == '\0' || s[0] == ',') {
                ctl_error_set(err, "--network: '%s' names no network (NET[,mac=MAC][,ip=IP][,mtu=N])", s);
                return -EINVAL;
        }
        o = json_object();
        if (!o)
                return -ENOMEM;
        name = strsep(&rest, ",");
        if (strchr(name, '=')) {
                ctl_error_set(err, "--network: '%s' names no network first (NET[,mac=MAC][,ip=IP][,mtu=N])", s);
                return -EINVAL;
        }
        r = set_string(o, "network", name, "--network", err);
        if (r < 0)
                return r;
        while ((item = strsep(&rest, ","))) {
                char *eq = strchr(item, '=');
                const char *key = item, *value = eq ? eq + 1 : NULL;

                if (item[0] == '\0') {
                        ctl_error_set(err, "--network: empty option in '%s'", s);
                        return -EINVAL;
                }
                if (eq)
                        *eq = '\0';
                if (strcmp(key, "mac") != 0 && strcmp(key, "ip") != 0 && strcmp(key, "mtu") != 0) {
                        ctl_error_set(err, "--network: unknown option '%s' (mac=, ip= or mtu=)", key);
                        return -EINVAL;
                }
                if (!value || !*value) {
                        ctl_error_set(err, "--network: %s= needs a value", key);
                        return -EINVAL;
                }
                if (json_object_get(o, key)) {
                        ctl_error_set(err, "--network: %s= given twice for network '%s'", key, name);
                        return -EINVAL;
                }
                if (strcmp(key, "mtu") == 0) {
                        uint64_t mtu;

                        if (ctl_parse_uint(value, 65535, &mtu) < 0 || mtu < 68) {
                                ctl_error_set(err, "--network: mtu=%s is not a whole number from 68 to 65535", value);
                                return -EINVAL;
                        }
                        if (json_object_set_new(o, "mtu", json_integer((json_int_t) mtu)) < 0)
                                return -ENOMEM;
                        continue;
                }
                if (strcmp(key, "mac") == 0 && !mac_shape_ok(value)) {
                        ctl_error_set(err, "--network: mac=%s is not a MAC address aa:bb:cc:dd:ee:ff", value);
                        return -EINVAL;
                }
                if (strcmp(key, "ip") == 0 && !ipv4_shape_ok(value)) {
                        ctl_error_set(err, "--network: ip=%s is not an IPv4 address a.b.c.d", value);
                        return -EINVAL;
                }
                r = set_string(o, key, value, "--network", err);
                if (r < 0)
                        return r;
        }
        *ret = TAKE_PTR(o);
        return 0;
}

/* "interfaces" from every --network, in command line order. */
static int launch_networks(json_t *body, const struct ctl_args *a, struct ctl_error *err) {
        json_auto_t *list = NULL;
        const char *v;

        if (!ctl_args_nth(a, CTL_OPT_NETWORK, 0))
                return 0;
        list = json_array();
        if (!list)
                return -ENOMEM;
        for (size_t i = 0; (v = ctl_args_nth(a, CTL_OPT_NETWORK, i)); i++) {
                json_t *iface = NULL;
                int r = ctl_network_spec_parse(v, &iface, err);

                if (r < 0)
                        return r;
                if (json_array_append_new(list, iface) < 0)
                        return -ENOMEM;
        }
        return json_object_set(body, "interfaces", list) < 0 ? -ENOMEM : 0;
}

/* The key of --key NAME=@FILE: one OpenSSH public key line, trailing blanks cut. */
static int key_file_read(const char *name, const char *path, char **ret, struct ctl_error *err) {
        _cleanup_ctl_free_ char *data = NULL;
        size_t len;
        int r;

        r = ctl_file_read_limited(path, CTL_PUBLIC_KEY_MAX, &data, &len, err);
        if (r == -EFBIG) {
                ctl_error_set(err, "--key %s: '%s' is larger than %d bytes, the agent's limit for a key",
                              name, path, CTL_PUBLIC_KEY_MAX);
                return r;
        }
        if (r < 0) {
                if (err) {
                        struct ctl_error inner = *err;

                        ctl_error_set(err, "--key %s: %s", name, inner.message);
                }
                return r;
        }
        if (memchr(data, '\0', len)) {
                ctl_error_set(err, "--key %s: '%s' is not a text file", name, path);
                return -EINVAL;
        }
        while (len > 0 && strchr(" \t\r\n", data[len - 1]))
                data[--len] = '\0';
        if (len == 0) {
                ctl_error_set(err, "--key %s: '%s' is empty", name, path);
                return -EINVAL;
        }
        if (strchr(data, '\n')) {
                ctl_error_set(err, "--key %s: '%s' holds more than one line; give one public key per --key",
                              name, path);
                return -EINVAL;
        }
        *ret = TAKE_PTR(data);
        return 0;
}

/*
 * A string map from a repeatable NAME=VALUE option (--key, --meta): names must be
 * non-empty and not repeat. With files, a value "@PATH" is read as a key file.
 */
static int launch_map(json_t *body, const char *field, const struct ctl_args *a,
                      enum ctl_opt_key key, const char *flag, bool files, bool empty_value_ok,
                      struct ctl_error *err) {
        json_auto_t *map = NULL;
        const char *v;

        if (!ctl_args_nth(a, key, 0))
                return 0;
        map = json_object();
        if (!map)
                return -ENOMEM;
        for (size_t i = 0; (v = ctl_args_nth(a, key, i)); i++) {
                _cleanup_ctl_free_ char *name = NULL, *file_value = NULL;
                const char *eq = strchr(v, '='), *value;
                bool name_ok;
                json_t *js;
                int r;

                if (!eq || eq == v) {
                        ctl_error_set(err, "%s: '%s' is not NAME=%s", flag, v, files ? "KEY or NAME=@FILE" : "VALUE");
                        return -EINVAL;
                }
                name = strndup(v, (size_t) (eq - v));
                if (!name)
                        return -ENOMEM;
                value = eq + 1;
                if (json_object_get(map, name)) {
                        ctl_error_set(err, "%s: '%s' given twice", flag, name);
                        return -EINVAL;
                }
                if (files && value[0] == '@') {
                        r = key_file_read(name, value + 1, &file_value, err);
                        if (r < 0)
                                return r;
                        value = file_value;
                }
                if (!empty_value_ok && value[0] == '\0') {
                        ctl_error_set(err, "%s %s: empty value", flag, name);
                        return -EINVAL;
                }
                js = json_string(name);         /* only the check: names must be UTF-8 too */
                name_ok = js != NULL;
                json_decref(js);
                js = name_ok ? json_string(value) : NULL;
                if (!js) {
                        ctl_error_set(err, "%s: '%s' is not valid UTF-8", flag, v);
                        return -EINVAL;
                }
                if (json_object_set_new(map, name, js) < 0)
                        return -ENOMEM;
        }
        return json_object_set(body, field, map) < 0 ? -ENOMEM : 0;
}

/* Checks that v is one of the two words; names the flag otherwise. */
static int one_of(const char *flag, const char *v, const char *a, const char *b, struct ctl_error *err) {
        if (strcmp(v, a) == 0 || strcmp(v, b) == 0)
                return 0;
        ctl_error_set(err, "%s: '%s' is not %s or %s", flag, v, a, b);
        return -EINVAL;
}

/* "metadata_options" from --http-tokens, --http-endpoint, --hop-limit. */
static int launch_md_options(json_t *body, const struct ctl_args *a, struct ctl_error *err) {
        const char *tokens = a->value[CTL_OPT_HTTP_TOKENS], *endpoint = a->value[CTL_OPT_HTTP_ENDPOINT];
        const char *hops = a->value[CTL_OPT_HOP_LIMIT];
        json_auto_t *o = NULL;
        uint64_t n;
        int r;

        if (!tokens && !endpoint && !hops)
                return 0;
        o = json_object();
        if (!o)
                return -ENOMEM;
        if (tokens) {
                r = one_of("--http-tokens", tokens, "optional", "required", err);
                if (r < 0)
                        return r;
                if (json_object_set_new(o, "http_tokens", json_string(tokens)) < 0)
                        return -ENOMEM;
        }
        if (endpoint) {
                r = one_of("--http-endpoint", endpoint, "enabled", "disabled", err);
                if (r < 0)
                        return r;
                if (json_object_set_new(o, "http_endpoint", json_string(endpoint)) < 0)
                        return -ENOMEM;
        }
        if (hops) {
                if (ctl_parse_uint(hops, 64, &n) < 0 || n < 1) {
                        ctl_error_set(err, "--hop-limit: '%s' is not a whole number from 1 to 64", hops);
                        return -EINVAL;
                }
                if (json_object_set_new(o, "http_put_response_hop_limit", json_integer((json_int_t) n)) < 0)
                        return -ENOMEM;
        }
        return json_object_set(body, "metadata_options", o) < 0 ? -ENOMEM : 0;
}

/* interfaces, public_keys, metadata, hostname, availability_zone, metadata_options,
 * config_drive and config_drive_format. */
static int launch_guest(json_t *body, const struct ctl_args *a, struct ctl_error *err) {
        const char *drive = a->value[CTL_OPT_CONFIG_DRIVE];
        int r;

        r = launch_networks(body, a, err);
        if (r < 0)
                return r;
        r = launch_map(body, "public_keys", a, CTL_OPT_KEY, "--key", true, false, err);
        if (r < 0)
                return r;
        r = launch_map(body, "metadata", a, CTL_OPT_META, "--meta", false, true, err);
        if (r < 0)
                return r;
        if (a->value[CTL_OPT_HOSTNAME]) {
                if (a->value[CTL_OPT_HOSTNAME][0] == '\0') {
                        ctl_error_set(err, "--hostname: empty host name");
                        return -EINVAL;
                }
                r = set_string(body, "hostname", a->value[CTL_OPT_HOSTNAME], "--hostname", err);
                if (r < 0)
                        return r;
        }
        if (a->value[CTL_OPT_AZ]) {
                if (a->value[CTL_OPT_AZ][0] == '\0') {
                        ctl_error_set(err, "--az: empty availability zone");
                        return -EINVAL;
                }
                r = set_string(body, "availability_zone", a->value[CTL_OPT_AZ], "--az", err);
                if (r < 0)
                        return r;
        }
        r = launch_md_options(body, a, err);
        if (r < 0)
                return r;
        if (drive) {
                if (drive[0] && one_of("--config-drive", drive, "config-2", "nocloud", err) < 0)
                        return -EINVAL;
                if (json_object_set_new(body, "config_drive", json_true()) < 0)
                        return -ENOMEM;
                if (drive[0] && json_object_set_new(body, "config_drive_format", json_string(drive)) < 0)
                        return -ENOMEM;
        }
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
        r = sizing(body, args, "give --type T, or --vcpus N and --memory MB (and optionally --disk GB)", err);
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
        r = launch_guest(body, args, err);
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

        *ret = TAKE_PTR(body);
        return 0;
}

/* "request_id" from --request-id, if given. */
static int set_request_id(json_t *body, const struct ctl_args *args, struct ctl_error *err) {
        int r;

        if (!args->value[CTL_OPT_REQUEST_ID])
                return 0;
        r = ctl_request_id_check(args->value[CTL_OPT_REQUEST_ID], err);
        if (r < 0)
                return r;
        return set_string(body, "request_id", args->value[CTL_OPT_REQUEST_ID], "--request-id", err);
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
        r = set_request_id(body, args, err);
        if (r < 0)
                return r;

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

int ctl_resize_body(const struct ctl_args *args, json_t **ret, struct ctl_error *err) {
        const char *live = args->value[CTL_OPT_LIVE], *cold = args->value[CTL_OPT_COLD];
        json_auto_t *body = NULL;
        int r;

        if (live && cold) {
                ctl_error_set(err, "--live and --cold exclude each other (give neither to let the agent choose)");
                return -EINVAL;
        }
        if (live && args->value[CTL_OPT_STOP_TIMEOUT]) {
                ctl_error_set(err, "--stop-timeout is the graceful shutdown of a cold resize; it excludes --live");
                return -EINVAL;
        }
        body = json_object();
        if (!body)
                return -ENOMEM;
        r = set_string(body, "action", "resize", "action", err);
        if (r < 0)
                return r;
        r = sizing(body, args, "resize needs --type T, or --vcpus N and --memory MB (and optionally --disk GB)",
                   err);
        if (r < 0)
                return r;
        /* no flag: "auto" is the agent's default, so the body leaves it out */
        if ((live || cold) && json_object_set_new(body, "mode", json_string(live ? "live" : "cold")) < 0)
                return -ENOMEM;
        r = set_request_id(body, args, err);
        if (r < 0)
                return r;
        r = set_uint_option(body, "timeout", args, CTL_OPT_STOP_TIMEOUT, "stop-timeout", "seconds", err);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(body);
        return 0;
}

/* Appends "&key=" (or "?key=" first) and value percent-encoded (RFC 3986 unreserved kept). */
static int query_append(FILE *f, bool *first, const char *key, const char *value) {
        fprintf(f, "%c%s=", *first ? '?' : '&', key);
        *first = false;
        for (const unsigned char *p = (const unsigned char *) value; *p; p++) {
                if ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
                    strchr("-._~", *p))
                        fputc(*p, f);
                else
                        fprintf(f, "%%%02X", *p);
        }
        return ferror(f) ? -ENOMEM : 0;
}

int ctl_list_path(const struct ctl_args *args, char **ret, struct ctl_error *err) {
        const char *state = args->value[CTL_OPT_STATE], *name = args->value[CTL_OPT_NAME];
        _cleanup_ctl_fclose_ FILE *f = NULL;
        char *buf = NULL;
        size_t len = 0;
        bool first = true;
        int r = 0;

        if (state && !ctl_instance_state_valid(state)) {
                ctl_error_set(err, "--state: '%s' is not one of pending, running, stopping, stopped, "
                                   "shutting-down, terminated, error, resized", state);
                return -EINVAL;
        }
        if (name && name[0] == '\0') {
                ctl_error_set(err, "--name: empty name");
                return -EINVAL;
        }
        f = open_memstream(&buf, &len);
        if (!f)
                return -ENOMEM;
        fputs("/v1/instances", f);
        if (state)
                r = query_append(f, &first, "state", state);
        if (r == 0 && name)
                r = query_append(f, &first, "name", name);
        if (fclose(TAKE_PTR(f)) != 0 || r < 0) {
                free(buf);
                return -ENOMEM;
        }
        *ret = buf;
        return 0;
}
