/*
 * args.c: computectl's option parser (no getopt: no global state, and the
 * subcommand tables can be layered over the global one), number parsing and the
 * global configuration.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE             /* asprintf, open_memstream, reallocarray */
#endif
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <string.h>

#include "cli-internal.h"

const struct ctl_option ctl_global_options[] = {
        { .name = "socket", .key = CTL_OPT_SOCKET, .arg = "PATH",
          .help = "the agent's unix socket (env COMPUTE_AGENT_SOCKET)\n"
                  "default " CTL_DEFAULT_SOCKET },
        { .name = "url", .key = CTL_OPT_URL, .arg = "URL",
          .help = "reach the agent over TCP instead (env COMPUTE_AGENT_URL)\n"
                  "e.g. http://127.0.0.1:8780" },
        { .name = "token", .key = CTL_OPT_TOKEN, .arg = "TOKEN",
          .help = "bearer token for TCP (env COMPUTE_AGENT_TOKEN)" },
        { .name = "json", .key = CTL_OPT_JSON,
          .help = "print the agent's JSON answer instead of tables" },
        { .name = "timeout", .key = CTL_OPT_TIMEOUT, .arg = "SECONDS",
          .help = "limit for each HTTP request (default 30, 0 = none)\n"
                  "(before the command when it has its own --timeout)" },
        { .name = "help", .short_name = 'h', .key = CTL_OPT_HELP,
          .help = "show help (after a command: that command's help)" },
        { .name = "version", .key = CTL_OPT_VERSION,
          .help = "print the version" },
        {},
};

void ctl_error_set(struct ctl_error *err, const char *fmt, ...) {
        va_list ap;

        if (!err)
                return;
        va_start(ap, fmt);
        vsnprintf(err->message, sizeof(err->message), fmt, ap);
        va_end(ap);
}

static const struct ctl_option *option_find_long(const struct ctl_option *const *tables,
                                                 const char *name, size_t name_len) {
        for (size_t t = 0; tables[t]; t++)
                for (const struct ctl_option *o = tables[t]; o->name; o++)
                        if (strlen(o->name) == name_len && strncmp(o->name, name, name_len) == 0)
                                return o;
        return NULL;
}

static const struct ctl_option *option_find_short(const struct ctl_option *const *tables, char c) {
        for (size_t t = 0; tables[t]; t++)
                for (const struct ctl_option *o = tables[t]; o->name; o++)
                        if (o->short_name && o->short_name == c)
                                return o;
        return NULL;
}

static int positional_add(struct ctl_args *args, const char *arg, struct ctl_error *err) {
        if (args->n_positional >= CTL_ARGS_MAX_POSITIONAL) {
                ctl_error_set(err, "too many arguments (at '%s')", arg);
                return -EINVAL;
        }
        args->positional[args->n_positional++] = arg;
        return 0;
}

/* Stores a value of option o: value[] always (the last one wins), the list too for repeatables. */
static int value_set(struct ctl_args *args, const struct ctl_option *o, const char *value,
                     struct ctl_error *err) {
        if (o->repeat) {
                if (args->n_repeated >= CTL_ARGS_MAX_REPEATED) {
                        ctl_error_set(err, "--%s: too many values (at most %d repeated options in all)",
                                      o->name, CTL_ARGS_MAX_REPEATED);
                        return -EINVAL;
                }
                args->repeated[args->n_repeated].key = o->key;
                args->repeated[args->n_repeated].value = value;
                args->n_repeated++;
        }
        args->value[o->key] = value;
        return 0;
}

const char *ctl_args_nth(const struct ctl_args *args, enum ctl_opt_key key, size_t n) {
        for (size_t i = 0; i < args->n_repeated; i++)
                if (args->repeated[i].key == key && n-- == 0)
                        return args->repeated[i].value;
        return NULL;
}

/* Handles argv[*i], a "--name[=value]" option; may consume argv[*i + 1]. */
static int parse_long(struct ctl_args *args, const struct ctl_option *const *tables,
                      int argc, char *const *argv, int *i, struct ctl_error *err) {
        const char *name = argv[*i] + 2;
        const char *eq = strchr(name, '=');
        size_t name_len = eq ? (size_t) (eq - name) : strlen(name);
        const struct ctl_option *o = option_find_long(tables, name, name_len);

        if (!o) {
                ctl_error_set(err, "unknown option --%.*s", (int) name_len, name);
                return -EINVAL;
        }
        if (!o->arg) {
                if (eq) {
                        ctl_error_set(err, "option --%s takes no value", o->name);
                        return -EINVAL;
                }
                return value_set(args, o, "", err);
        }
        if (eq)
                return value_set(args, o, eq + 1, err);
        if (o->optional_value)
                return value_set(args, o, "", err);
        if (*i + 1 >= argc) {
                ctl_error_set(err, "option --%s needs a value (%s)", o->name, o->arg);
                return -EINVAL;
        }
        *i += 1;
        return value_set(args, o, argv[*i], err);
}

/* Handles argv[*i], a "-x" option (flags only, one letter). */
static int parse_short(struct ctl_args *args, const struct ctl_option *const *tables,
                       char *const *argv, int i, struct ctl_error *err) {
        const char *arg = argv[i];
        const struct ctl_option *o = arg[2] == '\0' ? option_find_short(tables, arg[1]) : NULL;

        if (!o || o->arg) {
                ctl_error_set(err, "unknown option %s", arg);
                return -EINVAL;
        }
        return value_set(args, o, "", err);
}

int ctl_args_parse(struct ctl_args *args, const struct ctl_option *const *tables,
                   int argc, char *const *argv, int start, bool stop_at_positional,
                   struct ctl_error *err) {
        int i, r;

        for (i = start; i < argc; i++) {
                const char *arg = argv[i];

                if (strcmp(arg, "--") == 0) {
                        if (stop_at_positional) {
                                i++;
                                break;
                        }
                        for (i++; i < argc; i++) {
                                r = positional_add(args, argv[i], err);
                                if (r < 0)
                                        return r;
                        }
                        break;
                }
                if (arg[0] == '-' && arg[1] == '-')
                        r = parse_long(args, tables, argc, argv, &i, err);
                else if (arg[0] == '-' && arg[1] != '\0')
                        r = parse_short(args, tables, argv, i, err);
                else if (stop_at_positional)
                        break;
                else
                        r = positional_add(args, arg, err);
                if (r < 0)
                        return r;
        }
        args->next = i;
        return 0;
}

int ctl_parse_uint(const char *s, uint64_t max, uint64_t *ret) {
        unsigned long long v;
        char *end;

        if (!s || *s < '0' || *s > '9')
                return -EINVAL;
        errno = 0;
        v = strtoull(s, &end, 10);
        if (*end != '\0')
                return -EINVAL;
        if (errno == ERANGE || v > max)
                return -ERANGE;
        *ret = v;
        return 0;
}

int ctl_parse_seconds(const char *s, long *ret_ms) {
        double v;
        char *end;

        /* digits first: rejects "", " 1", "-1", "+1", "inf", "nan", "0x10" leading forms */
        if (!s || ((*s < '0' || *s > '9') && *s != '.'))
                return -EINVAL;
        if (strpbrk(s, "xXpP"))
                return -EINVAL;
        errno = 0;
        v = strtod(s, &end);
        if (end == s || *end != '\0')
                return -EINVAL;
        if (errno == ERANGE || !isfinite(v) || v > 31536000.0)   /* a year is plenty */
                return -ERANGE;
        *ret_ms = (long) (v * 1000.0 + 0.5);      /* v >= 0: rounds to nearest; no libm */
        return 0;
}

/* Empty environment values count as unset. */
static const char *env_get(char *(*getenv_fn)(const char *name), const char *name) {
        const char *v = getenv_fn ? getenv_fn(name) : NULL;

        return v && *v ? v : NULL;
}

int ctl_config_load(struct ctl_config *cfg, const struct ctl_args *args,
                    char *(*getenv_fn)(const char *name), struct ctl_error *err) {
        struct ctl_config c = {
                .socket_path = CTL_DEFAULT_SOCKET,
                .timeout_ms = CTL_DEFAULT_TIMEOUT_MS,
        };
        const char *env_socket = env_get(getenv_fn, "COMPUTE_AGENT_SOCKET");
        const char *env_url = env_get(getenv_fn, "COMPUTE_AGENT_URL");
        const char *v;

        if (args->value[CTL_OPT_SOCKET] && args->value[CTL_OPT_URL]) {
                ctl_error_set(err, "--socket and --url exclude each other");
                return -EINVAL;
        }
        if (env_socket)
                c.socket_path = env_socket;
        if (env_url && !args->value[CTL_OPT_SOCKET])
                c.url = env_url;
        if (args->value[CTL_OPT_SOCKET])
                c.socket_path = args->value[CTL_OPT_SOCKET];
        if (args->value[CTL_OPT_URL])
                c.url = args->value[CTL_OPT_URL];

        if (!c.url && c.socket_path[0] == '\0') {
                ctl_error_set(err, "--socket: empty path");
                return -EINVAL;
        }
        if (c.url && strncmp(c.url, "http://", 7) != 0 && strncmp(c.url, "https://", 8) != 0) {
                ctl_error_set(err, "--url: '%s' is not an http:// or https:// URL", c.url);
                return -EINVAL;
        }

        c.token = args->value[CTL_OPT_TOKEN] ? args->value[CTL_OPT_TOKEN]
                                              : env_get(getenv_fn, "COMPUTE_AGENT_TOKEN");
        if (c.token)
                for (const char *p = c.token; *p; p++)
                        if ((unsigned char) *p < 0x20 || *p == 0x7f) {
                                ctl_error_set(err, "--token: control characters are not allowed");
                                return -EINVAL;
                        }

        c.json = args->value[CTL_OPT_JSON] != NULL;

        v = args->value[CTL_OPT_TIMEOUT];
        if (v && ctl_parse_seconds(v, &c.timeout_ms) < 0) {
                ctl_error_set(err, "--timeout: '%s' is not a number of seconds", v);
                return -EINVAL;
        }

        *cfg = c;
        return 0;
}
