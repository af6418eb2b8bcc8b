/*
 * format.c: computectl's text output: aligned tables, key: value blocks and the
 * error line, built from the agent's JSON answers. Pure: nothing here does I/O
 * but ctl_table_print().
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE             /* asprintf, open_memstream, reallocarray */
#endif
#include <errno.h>
#include <string.h>

#include "cli-internal.h"

struct ctl_table {
        size_t ncols;           /* cells per row */
        char **headers;         /* ncols strings, or NULL: no header line */
        bool *right;            /* ncols flags: right-aligned column */
        char **cells;           /* nrows * ncols strings, row-major */
        size_t nrows;           /* rows added */
        size_t cap_rows;        /* rows allocated in cells */
};

/* Copy of s with terminal control characters (C0, DEL, C1 in UTF-8) replaced by '?'. */
static char *sanitize(const char *s) {
        size_t len = strlen(s), j = 0;
        char *out = malloc(len + 1);

        if (!out)
                return NULL;
        for (size_t i = 0; i < len; i++) {
                unsigned char c = (unsigned char) s[i];

                if (c < 0x20 || c == 0x7f)
                        out[j++] = '?';
                else if (c == 0xc2 && i + 1 < len &&
                         (unsigned char) s[i + 1] >= 0x80 && (unsigned char) s[i + 1] <= 0x9f) {
                        out[j++] = '?';
                        i++;
                } else
                        out[j++] = (char) c;
        }
        out[j] = '\0';
        return out;
}

/* Width in characters: UTF-8 continuation bytes do not count. */
static size_t text_width(const char *s) {
        size_t w = 0;

        for (; *s; s++)
                if (((unsigned char) *s & 0xc0) != 0x80)
                        w++;
        return w;
}

int ctl_table_new(size_t ncols, const char *const *headers, const bool *right_align,
                  struct ctl_table **ret) {
        struct ctl_table *t;

        if (ncols == 0)
                return -EINVAL;
        t = calloc(1, sizeof(*t));
        if (!t)
                return -ENOMEM;
        t->ncols = ncols;
        t->right = calloc(ncols, sizeof(bool));
        if (!t->right)
                goto fail;
        if (right_align)
                memcpy(t->right, right_align, ncols * sizeof(bool));
        if (headers) {
                t->headers = calloc(ncols, sizeof(char *));
                if (!t->headers)
                        goto fail;
                for (size_t i = 0; i < ncols; i++) {
                        t->headers[i] = sanitize(headers[i] ? headers[i] : "");
                        if (!t->headers[i])
                                goto fail;
                }
        }
        *ret = t;
        return 0;
fail:
        ctl_table_free(t);
        return -ENOMEM;
}

struct ctl_table *ctl_table_free(struct ctl_table *t) {
        if (!t)
                return NULL;
        if (t->headers)
                for (size_t i = 0; i < t->ncols; i++)
                        free(t->headers[i]);
        for (size_t i = 0; i < t->nrows * t->ncols; i++)
                free(t->cells[i]);
        free(t->headers);
        free(t->right);
        free(t->cells);
        free(t);
        return NULL;
}

int ctl_table_add_row(struct ctl_table *t, const char *const *cells) {
        char **row;

        if (t->nrows == t->cap_rows) {
                size_t cap = t->cap_rows ? t->cap_rows * 2 : 8;
                char **n = reallocarray(t->cells, cap * t->ncols, sizeof(char *));

                if (!n)
                        return -ENOMEM;
                t->cells = n;
                t->cap_rows = cap;
        }
        row = t->cells + t->nrows * t->ncols;
        for (size_t i = 0; i < t->ncols; i++) {
                row[i] = sanitize(cells[i] ? cells[i] : "-");
                if (!row[i]) {
                        while (i > 0)
                                free(row[--i]);
                        return -ENOMEM;
                }
        }
        t->nrows++;
        return 0;
}

static void render_line(FILE *f, const struct ctl_table *t, char *const *line, const size_t *width) {
        for (size_t c = 0; c < t->ncols; c++) {
                size_t pad = width[c] - text_width(line[c]);
                bool last = c + 1 == t->ncols;

                if (c > 0)
                        fputs("  ", f);
                if (t->right[c])
                        fprintf(f, "%*s", (int) pad, "");
                fputs(line[c], f);
                if (!t->right[c] && !last)
                        fprintf(f, "%*s", (int) pad, "");
        }
        fputc('\n', f);
}

int ctl_table_render(const struct ctl_table *t, char **ret) {
        _cleanup_ctl_free_ size_t *width = NULL;
        _cleanup_ctl_free_ char *buf = NULL;
        size_t size = 0;
        FILE *f;

        width = calloc(t->ncols, sizeof(size_t));
        if (!width)
                return -ENOMEM;
        for (size_t c = 0; c < t->ncols; c++) {
                if (t->headers)
                        width[c] = text_width(t->headers[c]);
                for (size_t r = 0; r < t->nrows; r++) {
                        size_t w = text_width(t->cells[r * t->ncols + c]);

                        if (w > width[c])
                                width[c] = w;
                }
        }

        f = open_memstream(&buf, &size);
        if (!f)
                return -ENOMEM;
        if (t->headers)
                render_line(f, t, t->headers, width);
        for (size_t r = 0; r < t->nrows; r++)
                render_line(f, t, t->cells + r * t->ncols, width);
        if (fclose(f) != 0)
                return -ENOMEM;
        if (!buf)
                return -ENOMEM;
        *ret = TAKE_PTR(buf);
        return 0;
}

int ctl_table_print(const struct ctl_table *t, FILE *f) {
        _cleanup_ctl_free_ char *s = NULL;
        int r = ctl_table_render(t, &s);

        if (r < 0)
                return r;
        if (fputs(s, f) == EOF)
                return -EIO;
        return 0;
}

int ctl_json_cell(const json_t *v, char **ret) {
        char *s = NULL;

        switch (v ? json_typeof(v) : JSON_NULL) {
        case JSON_STRING:
                s = strdup(json_string_value(v));
                break;
        case JSON_INTEGER:
                if (asprintf(&s, "%" JSON_INTEGER_FORMAT, json_integer_value(v)) < 0)
                        s = NULL;
                break;
        case JSON_REAL: {
                double d = json_real_value(v);

                /* "16.0", not "16": a ratio should look like one */
                if (asprintf(&s, d > -1e15 && d < 1e15 && d == (double) (long long) d ? "%.1f" : "%g", d) < 0)
                        s = NULL;
                break;
        }
        case JSON_TRUE:
                s = strdup("yes");
                break;
        case JSON_FALSE:
                s = strdup("no");
                break;
        default:
                s = strdup("-");
                break;
        }
        if (!s)
                return -ENOMEM;
        *ret = s;
        return 0;
}

/* Adds a row whose cells are the ctl_json_cell() texts of n values (n <= 16). */
static int add_json_row(struct ctl_table *t, const json_t *const *values, size_t n) {
        char *cells[16] = {};
        int r = 0;

        if (n > 16 || n != t->ncols)
                return -EINVAL;
        for (size_t i = 0; i < n && r == 0; i++)
                r = ctl_json_cell(values[i], &cells[i]);
        if (r == 0)
                r = ctl_table_add_row(t, (const char *const *) cells);
        for (size_t i = 0; i < n; i++)
                free(cells[i]);
        return r;
}

/* Adds a "label:" / value row to a two-column key-value table. */
static int add_kv(struct ctl_table *t, const char *label, const json_t *value) {
        _cleanup_ctl_free_ char *key = NULL, *val = NULL;
        int r;

        if (asprintf(&key, "%s:", label) < 0)
                return -ENOMEM;
        r = ctl_json_cell(value, &val);
        if (r < 0)
                return r;
        return ctl_table_add_row(t, (const char *const[]) { key, val });
}

/* Adds label: obj[key] for each key, labels being the JSON keys. */
static int add_kv_fields(struct ctl_table *t, const json_t *obj, const char *const *keys) {
        for (size_t i = 0; keys[i]; i++) {
                int r = add_kv(t, keys[i], json_object_get(obj, keys[i]));

                if (r < 0)
                        return r;
        }
        return 0;
}

static int kv_table_new(struct ctl_table **ret) {
        return ctl_table_new(2, NULL, NULL, ret);
}

int ctl_format_instance_list(const json_t *body, char **ret) {
        static const char *const headers[] = {
                "ID", "EC2 ID", "NAME", "STATE", "TASK", "VCPUS", "MEM_MB", "DISK_GB",
        };
        static const bool right[] = { false, false, false, false, false, true, true, true };
        _cleanup_ctl_table_ struct ctl_table *t = NULL;
        const json_t *list = json_object_get(body, "instances");
        const json_t *inst;
        size_t i;
        int r;

        if (!json_is_array(list))
                return -EBADMSG;
        r = ctl_table_new(8, headers, right, &t);
        if (r < 0)
                return r;
        json_array_foreach(list, i, inst) {
                const json_t *flavor = json_object_get(inst, "flavor");
                const json_t *values[] = {
                        json_object_get(inst, "id"),
                        json_object_get(inst, "ec2_id"),
                        json_object_get(inst, "name"),
                        json_object_get(inst, "state"),
                        json_object_get(inst, "task_state"),
                        json_object_get(flavor, "vcpus"),
                        json_object_get(flavor, "memory_mb"),
                        json_object_get(flavor, "disk_gb"),
                };

                r = add_json_row(t, values, 8);
                if (r < 0)
                        return r;
        }
        return ctl_table_render(t, ret);
}

/* The boot lines: image: PATH, or kernel:/initrd:/cmdline:. */
static int add_boot(struct ctl_table *t, const json_t *boot) {
        const json_t *image = json_object_get(boot, "image");
        const json_t *kernel = json_object_get(boot, "kernel");
        int r;

        if (image)
                return add_kv(t, "image", json_object_get(image, "path"));
        if (kernel) {
                r = add_kv(t, "kernel", json_object_get(kernel, "path"));
                if (r < 0)
                        return r;
                r = add_kv(t, "initrd", json_object_get(kernel, "initrd"));
                if (r < 0)
                        return r;
                return add_kv(t, "cmdline", json_object_get(kernel, "cmdline"));
        }
        return add_kv(t, "boot", NULL);
}

/* "a=1, b=2" of an object of scalars, "-" when empty or not an object. New reference. */
static json_t *object_text(const json_t *o) {
        _cleanup_ctl_free_ char *buf = NULL;
        size_t size = 0;
        const char *key;
        json_t *v;
        bool first = true;
        FILE *f;

        if (!json_is_object(o) || json_object_size(o) == 0)
                return json_string("-");
        f = open_memstream(&buf, &size);
        if (!f)
                return NULL;
        json_object_foreach((json_t *) o, key, v) {
                _cleanup_ctl_free_ char *cell = NULL;

                if (ctl_json_cell(v, &cell) < 0)
                        break;
                fprintf(f, "%s%s=%s", first ? "" : ", ", key, cell);
                first = false;
        }
        if (fclose(f) != 0 || !buf)
                return NULL;
        return json_string(buf);
}

/* "a, b" of an array of scalars, "-" when empty or not an array. New reference. */
static json_t *array_text(const json_t *a) {
        _cleanup_ctl_free_ char *buf = NULL;
        size_t size = 0, i;
        json_t *v;
        FILE *f;

        if (!json_is_array(a) || json_array_size(a) == 0)
                return json_string("-");
        f = open_memstream(&buf, &size);
        if (!f)
                return NULL;
        json_array_foreach(a, i, v) {
                _cleanup_ctl_free_ char *cell = NULL;

                if (ctl_json_cell(v, &cell) < 0)
                        break;
                fprintf(f, "%s%s", i ? ", " : "", cell);
        }
        if (fclose(f) != 0 || !buf)
                return NULL;
        return json_string(buf);
}

/* label: text of value with text() (object_text or array_text). */
static int add_kv_text(struct ctl_table *t, const char *label, const json_t *value,
                       json_t *(*text)(const json_t *v)) {
        json_auto_t *s = text(value);

        if (!s)
                return -ENOMEM;
        return add_kv(t, label, s);
}

/* The guest fields of an Instance (issue 10), when the answer has them. */
static int add_guest_fields(struct ctl_table *t, const json_t *inst) {
        static const char *const keys[] = { "hostname", "availability_zone", "config_drive", NULL };
        int r;

        if (!json_object_get(inst, "interfaces"))
                return 0;       /* an agent from before networking */
        r = add_kv_fields(t, inst, keys);
        if (r < 0)
                return r;
        r = add_kv_text(t, "key_names", json_object_get(inst, "key_names"), array_text);
        if (r < 0)
                return r;
        r = add_kv_text(t, "metadata", json_object_get(inst, "metadata"), object_text);
        if (r < 0)
                return r;
        return add_kv_text(t, "metadata_options", json_object_get(inst, "metadata_options"), object_text);
}

/*
 * Issue 12: the live-resize ceilings and the resize block of an Instance, when
 * the answer has them (an agent from before resize has neither). The block is
 * "resize: -" when no resize is pending, else its fields as resize.KEY lines.
 */
static int add_resize_fields(struct ctl_table *t, const json_t *inst) {
        static const char *const ceilings[] = { "max_vcpus", "max_memory_mb", NULL };
        static const char *const keys[] = { "mode", "pending", "old_instance_type", "resized_at", NULL };
        const json_t *rz = json_object_get(inst, "resize");
        int r;

        if (json_object_get(inst, "max_vcpus")) {
                r = add_kv_fields(t, inst, ceilings);
                if (r < 0)
                        return r;
        }
        if (!rz)
                return 0;
        if (!json_is_object(rz))
                return add_kv(t, "resize", NULL);
        for (size_t i = 0; keys[i]; i++) {
                _cleanup_ctl_free_ char *label = NULL;

                if (asprintf(&label, "resize.%s", keys[i]) < 0)
                        return -ENOMEM;
                r = add_kv(t, label, json_object_get(rz, keys[i]));
                if (r < 0)
                        return r;
        }
        return add_kv_text(t, "resize.old_flavor", json_object_get(rz, "old_flavor"), object_text);
}

/*
 * An operation's "result" (a resize's outcome) on one line: the outcome, then
 * "; KEY: VALUE" for each other field (objects as "a=1, b=2"). NULL (*ret) when
 * the operation has none. New reference.
 */
static int result_text(const json_t *result, json_t **ret) {
        _cleanup_ctl_free_ char *buf = NULL;
        const char *outcome = json_string_value(json_object_get(result, "outcome"));
        size_t size = 0;
        const char *key;
        json_t *v;
        FILE *f;

        *ret = NULL;
        if (!json_is_object(result))
                return 0;
        f = open_memstream(&buf, &size);
        if (!f)
                return -ENOMEM;
        fputs(outcome ? outcome : "-", f);
        json_object_foreach((json_t *) result, key, v) {
                _cleanup_ctl_free_ char *cell = NULL;
                json_auto_t *obj = NULL;

                if (strcmp(key, "outcome") == 0)
                        continue;
                if (json_is_object(v)) {
                        obj = object_text(v);
                        if (!obj)
                                break;
                }
                if (ctl_json_cell(obj ? obj : v, &cell) < 0)
                        break;
                fprintf(f, "; %s: %s", key, cell);
        }
        if (fclose(f) != 0 || !buf)
                return -ENOMEM;
        *ret = json_string(buf);
        return *ret ? 0 : -ENOMEM;
}

/* The NETWORK / MAC / IP / MTU / DEVICE / STATE table of an Instance's interfaces. */
static int instance_ports(const json_t *ifaces, char **ret) {
        static const char *const headers[] = { "NETWORK", "MAC", "IP", "MTU", "DEVICE", "STATE" };
        static const bool right[] = { false, false, false, true, false, false };
        _cleanup_ctl_table_ struct ctl_table *t = NULL;
        const json_t *p;
        size_t i;
        int r;

        r = ctl_table_new(6, headers, right, &t);
        if (r < 0)
                return r;
        json_array_foreach(ifaces, i, p) {
                const json_t *values[] = {
                        json_object_get(p, "network"), json_object_get(p, "mac"),
                        json_object_get(p, "ip"), json_object_get(p, "mtu"),
                        json_object_get(p, "device"), json_object_get(p, "state"),
                };

                r = add_json_row(t, values, 6);
                if (r < 0)
                        return r;
        }
        return ctl_table_render(t, ret);
}

int ctl_format_instance(const json_t *inst, char **ret) {
        static const char *const head[] = {
                "id", "ec2_id", "name", "state", "task_state", "instance_type", NULL,
        };
        static const char *const flavor_keys[] = { "vcpus", "memory_mb", "disk_gb", NULL };
        static const char *const tail[] = {
                "has_user_data", "console_log", "created_at", "updated_at", "fault", NULL,
        };
        _cleanup_ctl_table_ struct ctl_table *t = NULL;
        _cleanup_ctl_free_ char *summary = NULL, *ports = NULL;
        const json_t *ifaces = json_object_get(inst, "interfaces");
        char *text;
        int r;

        if (!json_is_object(inst))
                return -EBADMSG;
        r = kv_table_new(&t);
        if (r < 0)
                return r;
        r = add_kv_fields(t, inst, head);
        if (r < 0)
                return r;
        r = add_kv_fields(t, json_object_get(inst, "flavor"), flavor_keys);
        if (r < 0)
                return r;
        r = add_resize_fields(t, inst);
        if (r < 0)
                return r;
        r = add_boot(t, json_object_get(inst, "boot"));
        if (r < 0)
                return r;
        r = add_kv_fields(t, inst, tail);
        if (r < 0)
                return r;
        r = add_guest_fields(t, inst);
        if (r < 0)
                return r;
        if (!json_is_array(ifaces) || json_array_size(ifaces) == 0)
                return ctl_table_render(t, ret);
        r = ctl_table_render(t, &summary);
        if (r < 0)
                return r;
        r = instance_ports(ifaces, &ports);
        if (r < 0)
                return r;
        if (asprintf(&text, "%s\n%s", summary, ports) < 0)
                return -ENOMEM;
        *ret = text;
        return 0;
}

int ctl_format_network_list(const json_t *body, char **ret) {
        static const char *const headers[] = {
                "NAME", "TYPE", "BRIDGE", "CIDR", "GATEWAY", "DNS", "MTU", "DHCP", "METADATA", "DETAILS",
        };
        static const char *const shown[] = {
                "name", "type", "bridge", "cidr", "gateway", "dns", "mtu", "dhcp", "metadata", NULL,
        };
        static const bool right[] = { false, false, false, false, false, false, true, false, false, false };
        _cleanup_ctl_table_ struct ctl_table *t = NULL;
        const json_t *list = json_object_get(body, "networks");
        const json_t *net;
        size_t i;
        int r;

        if (!json_is_array(list))
                return -EBADMSG;
        r = ctl_table_new(10, headers, right, &t);
        if (r < 0)
                return r;
        json_array_foreach(list, i, net) {
                json_auto_t *dns = NULL, *details = NULL, *rest = NULL;
                const json_t *bridge = json_object_get(net, "bridge");

                if (!json_is_object(net))
                        return -EBADMSG;
                /* whatever else the API gives (vlan_id, parent, vni, port, local, remote, group) */
                rest = json_deep_copy(net);
                if (!rest)
                        return -ENOMEM;
                for (size_t k = 0; shown[k]; k++)
                        json_object_del(rest, shown[k]);
                dns = array_text(json_object_get(net, "dns"));
                details = object_text(rest);
                if (!dns || !details)
                        return -ENOMEM;
                {
                        const json_t *values[] = {
                                json_object_get(net, "name"), json_object_get(net, "type"),
                                json_string_length(bridge) ? bridge : NULL,
                                json_object_get(net, "cidr"), json_object_get(net, "gateway"), dns,
                                json_object_get(net, "mtu"), json_object_get(net, "dhcp"),
                                json_object_get(net, "metadata"), details,
                        };

                        r = add_json_row(t, values, 10);
                        if (r < 0)
                                return r;
                }
        }
        return ctl_table_render(t, ret);
}

/* "code: message" of an {"code","message"} object, NULL (prints "-") when absent. */
static int error_text(const json_t *error, json_t **ret) {
        const char *code = json_string_value(json_object_get(error, "code"));
        const char *message = json_string_value(json_object_get(error, "message"));

        if (!code && !message) {
                *ret = NULL;
                return 0;
        }
        *ret = json_sprintf("%s: %s", code ? code : "error", message ? message : "");
        return *ret ? 0 : -ENOMEM;
}

int ctl_format_operation(const json_t *op, char **ret) {
        static const char *const head[] = {
                "id", "type", "instance_id", "request_id", "state", "step", NULL,
        };
        static const char *const tail[] = { "created_at", "updated_at", NULL };
        _cleanup_ctl_table_ struct ctl_table *t = NULL;
        json_auto_t *error = NULL, *result = NULL;
        int r;

        if (!json_is_object(op))
                return -EBADMSG;
        r = kv_table_new(&t);
        if (r < 0)
                return r;
        r = add_kv_fields(t, op, head);
        if (r < 0)
                return r;
        r = error_text(json_object_get(op, "error"), &error);
        if (r < 0)
                return r;
        r = add_kv(t, "error", error);
        if (r < 0)
                return r;
        r = result_text(json_object_get(op, "result"), &result);
        if (r < 0)
                return r;
        if (result) {
                r = add_kv(t, "result", result);
                if (r < 0)
                        return r;
        }
        r = add_kv_fields(t, op, tail);
        if (r < 0)
                return r;
        return ctl_table_render(t, ret);
}

/* The RESOURCE / CAPACITY / RESERVED / RATIO / ALLOCATED / FREE table. */
static int host_resources(const json_t *host, char **ret) {
        static const char *const headers[] = {
                "RESOURCE", "CAPACITY", "RESERVED", "RATIO", "ALLOCATED", "FREE",
        };
        static const bool right[] = { false, true, true, true, true, true };
        static const struct {
                const char *key;        /* in capacity, reserved, allocated, free */
                const char *ratio;      /* in allocation_ratios */
        } rows[] = {
                { "vcpus", "vcpu" },
                { "memory_mb", "memory" },
                { "disk_gb", "disk" },
        };
        _cleanup_ctl_table_ struct ctl_table *t = NULL;
        int r;

        r = ctl_table_new(6, headers, right, &t);
        if (r < 0)
                return r;
        for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
                json_auto_t *name = json_string(rows[i].key);
                const json_t *values[] = {
                        name,
                        json_object_get(json_object_get(host, "capacity"), rows[i].key),
                        json_object_get(json_object_get(host, "reserved"), rows[i].key),
                        json_object_get(json_object_get(host, "allocation_ratios"), rows[i].ratio),
                        json_object_get(json_object_get(host, "allocated"), rows[i].key),
                        json_object_get(json_object_get(host, "free"), rows[i].key),
                };

                r = add_json_row(t, values, 6);
                if (r < 0)
                        return r;
        }
        return ctl_table_render(t, ret);
}

int ctl_format_host(const json_t *host, char **ret) {
        static const char *const keys[] = {
                "hostname", "hypervisor", "domain_type", "libvirt_uri", NULL,
        };
        static const char *const keys2[] = { "version", "state", "instances", NULL };
        _cleanup_ctl_table_ struct ctl_table *t = NULL;
        _cleanup_ctl_free_ char *summary = NULL, *resources = NULL;
        char *text;
        int r;

        if (!json_is_object(host))
                return -EBADMSG;
        r = kv_table_new(&t);
        if (r < 0)
                return r;
        r = add_kv_fields(t, host, keys);
        if (r < 0)
                return r;
        r = add_kv(t, "libvirt_connected",
                   json_object_get(json_object_get(host, "libvirt"), "connected"));
        if (r < 0)
                return r;
        r = add_kv_fields(t, host, keys2);
        if (r < 0)
                return r;
        r = ctl_table_render(t, &summary);
        if (r < 0)
                return r;
        r = host_resources(host, &resources);
        if (r < 0)
                return r;
        if (asprintf(&text, "%s\n%s", summary, resources) < 0)
                return -ENOMEM;
        *ret = text;
        return 0;
}

int ctl_format_accepted(const json_t *inst, const json_t *op, char **ret) {
        static const char *const inst_keys[] = { "ec2_id", "name", "state", "task_state", NULL };
        _cleanup_ctl_table_ struct ctl_table *t = NULL;
        json_auto_t *error = NULL, *result = NULL;
        int r;

        r = kv_table_new(&t);
        if (r < 0)
                return r;
        if (inst) {
                r = add_kv(t, "instance", json_object_get(inst, "id"));
                if (r < 0)
                        return r;
                r = add_kv_fields(t, inst, inst_keys);
                if (r < 0)
                        return r;
        } else if (op) {
                r = add_kv(t, "instance", json_object_get(op, "instance_id"));
                if (r < 0)
                        return r;
        }
        if (op) {
                r = add_kv(t, "operation", json_object_get(op, "id"));
                if (r < 0)
                        return r;
                r = add_kv(t, "operation_type", json_object_get(op, "type"));
                if (r < 0)
                        return r;
                r = add_kv(t, "operation_state", json_object_get(op, "state"));
                if (r < 0)
                        return r;
                r = error_text(json_object_get(op, "error"), &error);
                if (r < 0)
                        return r;
                if (error) {
                        r = add_kv(t, "operation_error", error);
                        if (r < 0)
                                return r;
                }
                r = result_text(json_object_get(op, "result"), &result);
                if (r < 0)
                        return r;
                if (result) {
                        r = add_kv(t, "operation_result", result);
                        if (r < 0)
                                return r;
                }
        }
        return ctl_table_render(t, ret);
}

/* First line of raw, at most 200 bytes, control characters replaced. */
static char *raw_excerpt(const char *raw) {
        _cleanup_ctl_free_ char *line = NULL;
        size_t len;

        if (!raw)
                return NULL;
        while (*raw == ' ' || *raw == '\t' || *raw == '\r' || *raw == '\n')
                raw++;
        len = strcspn(raw, "\r\n");
        if (len == 0)
                return NULL;
        line = strndup(raw, len > 200 ? 200 : len);
        if (!line)
                return NULL;
        return sanitize(line);
}

int ctl_format_api_error(long status, const json_t *body, const char *raw, char **ret) {
        const json_t *error = json_object_get(body, "error");
        const char *code = json_string_value(json_object_get(error, "code"));
        const char *message = json_string_value(json_object_get(error, "message"));
        const char *field = json_string_value(json_object_get(error, "field"));
        _cleanup_ctl_free_ char *text = NULL, *excerpt = NULL;
        int n;

        if (code) {
                if (field)
                        n = asprintf(&text, "error: %s: %s (field: %s)", code,
                                     message ? message : "", field);
                else
                        n = asprintf(&text, "error: %s: %s", code, message ? message : "");
        } else {
                excerpt = raw_excerpt(raw);
                if (excerpt)
                        n = asprintf(&text, "error: HTTP %ld: %s", status, excerpt);
                else
                        n = asprintf(&text, "error: HTTP %ld", status);
        }
        if (n < 0)
                return -ENOMEM;
        *ret = sanitize(text);
        return *ret ? 0 : -ENOMEM;
}
