/*
 * events.c: `computectl events [--follow] [--instance ID] [--type T] [--after SEQ]`:
 * the agent's recent events (GET /v1/events), one line each (with --json: the
 * answer's event objects, one compact JSON object a line); --follow long-polls
 * for more until interrupted, resuming from the last seq seen (also across an
 * agent restart: transport errors and 5xx answers are retried with backoff).
 */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli-internal.h"

#define EVENTS_FOLLOW_WAIT_S 20L

static const char *str_or_dash(const json_t *v) {
        return json_is_string(v) && json_string_value(v)[0] ? json_string_value(v) : "-";
}

int ctl_format_event_line(const json_t *ev, char **ret) {
        const json_t *m = json_object_get(ev, "message");
        const char *type = str_or_dash(json_object_get(m, "event"));
        char detail[256] = "";
        char *line;
        int n;

        if (!strncmp(type, "instance.", 9)) {
                const json_t *i = json_object_get(m, "instance");
                snprintf(detail, sizeof(detail), "name=%s task_state=%s", str_or_dash(json_object_get(i, "name")),
                         str_or_dash(json_object_get(i, "task_state")));
        } else if (!strncmp(type, "operation.", 10)) {
                const json_t *o = json_object_get(m, "operation");
                snprintf(detail, sizeof(detail), "operation=%s type=%s", str_or_dash(json_object_get(o, "id")),
                         str_or_dash(json_object_get(o, "type")));
        } else if (!strcmp(type, "command.rejected")) {
                const json_t *e = json_object_get(m, "error");
                snprintf(detail, sizeof(detail), "code=%s field=%s", str_or_dash(json_object_get(e, "code")),
                         str_or_dash(json_object_get(e, "field")));
        }
        n = asprintf(&line, "%lld  %s  %s  %s%s%s\n", (long long)json_integer_value(json_object_get(ev, "seq")),
                     str_or_dash(json_object_get(m, "timestamp")), type, str_or_dash(json_object_get(m, "instance_id")),
                     detail[0] ? "  " : "", detail);
        if (n < 0)
                return -ENOMEM;
        /* a terminal shows it: no control character but the final newline */
        for (char *p = line; p[0] && p[1]; p++)
                if ((unsigned char)*p < 0x20 || *p == 0x7f)
                        *p = '?';
        *ret = line;
        return 0;
}

/* One GET; *after moves on. 0 done, 1 retry later (already said), or a CTL_EXIT_* + 10. */
static int events_page(struct ctl_ctx *ctx, const struct ctl_args *args, long long *after, bool have_after,
                       long wait_s, bool *quiet_retry) {
        const char *inst = args->value[CTL_OPT_INSTANCE], *type = args->value[CTL_OPT_EVENT_TYPE];
        struct ctl_response resp = {};
        struct ctl_error e = {};
        _cleanup_ctl_free_ char *path = NULL, *line = NULL;
        json_t *evs, *ev;
        size_t i;
        int r;

        char afterq[32] = "";

        if (have_after)
                snprintf(afterq, sizeof(afterq), "&after=%lld", *after);
        if (asprintf(&path, "/v1/events?limit=1000&wait=%ld%s%s%s%s%s", wait_s, afterq, inst ? "&instance=" : "",
                     inst ? inst : "", type ? "&type=" : "", type ? type : "") < 0) {
                path = NULL;
                return 10 + CTL_EXIT_FAILURE;
        }
        r = ctl_client_request(ctx->client, "GET", path, NULL, NULL, &resp, &e);
        if (r < 0 || resp.status >= 500) {
                if (!*quiet_retry) {
                        if (r < 0)
                                fprintf(ctx->err, "error: %s\n", r == -ENOMEM ? "out of memory" : e.message);
                        else if (ctl_format_api_error(resp.status, resp.body, resp.raw, &line) == 0)
                                fprintf(ctx->err, "%s\n", line);
                        *quiet_retry = true;
                }
                ctl_response_release(&resp);
                return r == -ENOMEM ? 10 + CTL_EXIT_FAILURE : 1;
        }
        *quiet_retry = false;
        if (resp.status != 200 || !json_is_object(resp.body)) {
                if (ctl_format_api_error(resp.status, resp.body, resp.raw, &line) == 0)
                        fprintf(ctx->err, "%s\n", line);
                else
                        fprintf(ctx->err, "error: HTTP %ld\n", resp.status);
                ctl_response_release(&resp);
                return 10 + CTL_EXIT_FAILURE;
        }
        if (json_is_true(json_object_get(resp.body, "truncated")))
                fprintf(ctx->err, "warning: events %lld to %lld were dropped from the agent's window before they were read\n",
                        have_after ? *after + 1 : 1LL,
                        (long long)json_integer_value(json_object_get(resp.body, "first_seq")) - 1);
        evs = json_object_get(resp.body, "events");
        json_array_foreach(evs, i, ev) {
                if (ctx->cfg.json) {
                        json_dumpf(ev, ctx->out, JSON_COMPACT | JSON_PRESERVE_ORDER);
                        fputc('\n', ctx->out);
                } else {
                        _cleanup_ctl_free_ char *text = NULL;
                        if (ctl_format_event_line(ev, &text) == 0)
                                fputs(text, ctx->out);
                }
        }
        fflush(ctx->out);
        if (json_is_integer(json_object_get(resp.body, "next_after")))
                *after = json_integer_value(json_object_get(resp.body, "next_after"));
        r = json_array_size(evs) >= 1000 ? 2 : 0; /* a full page: more at once */
        ctl_response_release(&resp);
        return r;
}

const struct ctl_option ctl_events_options[] = {
        { .name = "follow", .short_name = 'f', .key = CTL_OPT_FOLLOW,
          .help = "keep waiting for new events (until interrupted), resuming after the last one seen" },
        { .name = "instance", .key = CTL_OPT_INSTANCE, .arg = "ID", .help = "only this instance's events (UUID or i-...)" },
        { .name = "type", .key = CTL_OPT_EVENT_TYPE, .arg = "T",
          .help = "only events named T (e.g. instance.running; \"*\" matches any part: instance.*)" },
        { .name = "after", .key = CTL_OPT_AFTER, .arg = "SEQ", .help = "only events after sequence number SEQ" },
        {},
};

int ctl_cmd_events(struct ctl_ctx *ctx, const struct ctl_args *args) {
        const char *inst = args->value[CTL_OPT_INSTANCE], *type = args->value[CTL_OPT_EVENT_TYPE];
        const char *after_s = args->value[CTL_OPT_AFTER];
        bool follow = args->value[CTL_OPT_FOLLOW] != NULL, have_after = after_s != NULL, quiet = false;
        long long after = 0;
        long wait_s = EVENTS_FOLLOW_WAIT_S, interval = CTL_POLL_FIRST_MS;
        uint64_t v;

        if (inst && ctl_id_classify(inst) == CTL_ID_INVALID) {
                fprintf(ctx->err, "computectl: --instance '%s' is not an instance id (UUID or i-xxxxxxxxxxxxxxxxx)\n"
                        "Try 'computectl events --help'.\n", inst);
                return CTL_EXIT_USAGE;
        }
        if (type && (!type[0] || strspn(type, "abcdefghijklmnopqrstuvwxyz0123456789._*") != strlen(type))) {
                fprintf(ctx->err, "computectl: --type '%s' is not an event name (e.g. instance.running, instance.*)\n"
                        "Try 'computectl events --help'.\n", type);
                return CTL_EXIT_USAGE;
        }
        if (have_after) {
                if (ctl_parse_uint(after_s, INT64_MAX, &v) < 0) {
                        fprintf(ctx->err, "computectl: --after '%s' is not a sequence number\n"
                                "Try 'computectl events --help'.\n", after_s);
                        return CTL_EXIT_USAGE;
                }
                after = (long long)v;
        }
        /* the long-poll must end before the per-request timeout */
        if (ctx->cfg.timeout_ms > 0 && ctx->cfg.timeout_ms / 1000 - 5 < wait_s)
                wait_s = ctx->cfg.timeout_ms / 1000 > 10 ? ctx->cfg.timeout_ms / 1000 - 5 : ctx->cfg.timeout_ms / 2000;
        for (;;) {
                int r = events_page(ctx, args, &after, have_after, follow ? wait_s : 0, &quiet);
                if (r >= 10)
                        return r - 10;
                if (r == 1 && !follow)
                        return CTL_EXIT_FAILURE;
                if (r == 1) {
                        usleep((useconds_t)interval * 1000);
                        interval = ctl_backoff_next(interval);
                        continue;
                }
                interval = CTL_POLL_FIRST_MS;
                have_after = true; /* from now on: after what was seen */
                if (r == 0 && !follow)
                        return CTL_EXIT_OK;
        }
}
