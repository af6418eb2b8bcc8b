/*
 * dispatch.c: from argv to a command: global options, the command name, the
 * command's options (global ones are accepted after the command too), help.
 */
#include <string.h>
#include <unistd.h>

#include "cli-internal.h"

static const struct ctl_option no_options[] = { {} };

/* Option lines; a '\n' in a help text continues under it. Skips names found in shadow. */
static void print_options(FILE *f, const struct ctl_option *opts, const struct ctl_option *shadow) {
        for (const struct ctl_option *o = opts; o->name; o++) {
                const char *h = o->help ? o->help : "";
                const char *sep = o->arg ? (o->optional_value ? "[=" : " ") : "";
                const char *end = o->arg && o->optional_value ? "]" : "";
                bool shadowed = false;
                char left[64];

                for (const struct ctl_option *s = shadow; s && s->name; s++)
                        shadowed = shadowed || strcmp(s->name, o->name) == 0;
                if (shadowed)
                        continue;
                if (o->short_name)
                        snprintf(left, sizeof(left), "-%c, --%s%s%s%s", o->short_name, o->name,
                                 sep, o->arg ? o->arg : "", end);
                else
                        snprintf(left, sizeof(left), "--%s%s%s%s", o->name, sep,
                                 o->arg ? o->arg : "", end);
                if (strlen(left) > 22)  /* a long option: its help starts on the next line */
                        fprintf(f, "  %s\n%25s", left, "");
                else
                        fprintf(f, "  %-22s ", left);
                for (; *h; h++) {
                        fputc(*h, f);
                        if (*h == '\n')
                                fprintf(f, "%25s", "");
                }
                fputc('\n', f);
        }
}

/* "  NAME USAGE" with the usage's continuation lines aligned after the name. */
static void print_synopsis(FILE *f, const char *prefix, const struct ctl_command *cmd) {
        size_t indent = strlen(prefix) + strlen(cmd->name) + 1;
        const char *u = cmd->usage ? cmd->usage : "";

        fprintf(f, "%s%s", prefix, cmd->name);
        if (*u)
                fputc(' ', f);
        for (; *u; u++) {
                fputc(*u, f);
                if (*u == '\n')
                        fprintf(f, "%*s", (int) indent, "");
        }
        fputc('\n', f);
}

void ctl_print_help(FILE *f) {
        fputs("Usage: computectl [OPTIONS] COMMAND [ARGS...]\n"
              "\n"
              "Operator command line for compute-agent; speaks its REST API over the\n"
              "agent's unix socket (default) or TCP (--url).\n"
              "\n"
              "Options (also accepted after the command):\n", f);
        print_options(f, ctl_global_options, NULL);
        fputs("\nCommands:\n", f);
        for (const struct ctl_command *c = ctl_commands; c->name; c++) {
                print_synopsis(f, "  ", c);
                fprintf(f, "      %s\n", c->summary ? c->summary : "");
        }
        fputs("\n"
              "Exit status: 0 success, 1 API error or failed operation, 2 usage error, 3 timeout.\n"
              "Run 'computectl COMMAND --help' for a command's options.\n", f);
}

void ctl_print_command_help(FILE *f, const struct ctl_command *cmd) {
        print_synopsis(f, "Usage: computectl [OPTIONS] ", cmd);
        fprintf(f, "\n%s\n", cmd->summary ? cmd->summary : "");
        if (cmd->options && cmd->options[0].name) {
                fputs("\nOptions:\n", f);
                print_options(f, cmd->options, NULL);
        }
        fputs("\nGlobal options:\n", f);
        print_options(f, ctl_global_options, cmd->options);
}

static int usage_fail(FILE *err, const char *command, const char *message) {
        fprintf(err, "computectl: %s\nTry 'computectl%s%s --help'.\n", message,
                command ? " " : "", command ? command : "");
        return CTL_EXIT_USAGE;
}

int ctl_main(int argc, char *const *argv, FILE *out, FILE *err,
             char *(*getenv_fn)(const char *name)) {
        const struct ctl_option *const global_tables[] = { ctl_global_options, NULL };
        _cleanup_ctl_client_ struct ctl_client *client = NULL;
        const struct ctl_command *cmd;
        struct ctl_args args = {};
        struct ctl_error e = {};
        struct ctl_ctx ctx = { .out = out, .err = err, .err_tty = fileno(err) >= 0 && isatty(fileno(err)) };
        int r;

        r = ctl_args_parse(&args, global_tables, argc, argv, 1, true, &e);
        if (r < 0)
                return usage_fail(err, NULL, e.message);
        if (args.value[CTL_OPT_VERSION]) {
                fprintf(out, "computectl %s\n", CTL_VERSION);
                return CTL_EXIT_OK;
        }
        if (args.next >= argc) {
                if (args.value[CTL_OPT_HELP]) {
                        ctl_print_help(out);
                        return CTL_EXIT_OK;
                }
                return usage_fail(err, NULL, "no command given");
        }

        cmd = ctl_command_find(argv[args.next]);
        if (!cmd) {
                snprintf(e.message, sizeof(e.message), "unknown command '%s'", argv[args.next]);
                return usage_fail(err, NULL, e.message);
        }
        {
                const struct ctl_option *const cmd_tables[] = {
                        cmd->options ? cmd->options : no_options, ctl_global_options, NULL,
                };

                r = ctl_args_parse(&args, cmd_tables, argc, argv, args.next + 1, false, &e);
                if (r < 0)
                        return usage_fail(err, cmd->name, e.message);
        }
        if (args.value[CTL_OPT_HELP]) {
                ctl_print_command_help(out, cmd);
                return CTL_EXIT_OK;
        }
        if (args.n_positional < cmd->min_args || args.n_positional > cmd->max_args) {
                fprintf(err, "computectl: wrong number of arguments; usage:\n");
                print_synopsis(err, "  computectl ", cmd);
                return CTL_EXIT_USAGE;
        }

        r = ctl_config_load(&ctx.cfg, &args, getenv_fn, &e);
        if (r < 0)
                return usage_fail(err, cmd->name, e.message);
        r = ctl_client_new(&ctx.cfg, &client, &e);
        if (r < 0) {
                fprintf(err, "error: %s\n", e.message[0] ? e.message : "out of memory");
                return CTL_EXIT_FAILURE;
        }
        ctx.client = client;
        return cmd->run(&ctx, &args);
}
